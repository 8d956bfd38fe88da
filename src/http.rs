//! The HTTP client, built only when a command needs the network (the cached-token path never
//! builds one), and bodies read into zeroizing buffers.

use std::time::Duration;

use crate::config::{Profile, is_loopback};
use crate::secret::Zeroizing;

/// A response body is refused past this size: token responses are a few KB.
pub const MAX_BODY: usize = 1 << 20;

/// A client for `profile`'s endpoints: rustls, no redirects (a redirect could carry a
/// secret-bearing request elsewhere), no connection pool (a connection that carried a secret is
/// closed), and no proxy for loopback endpoints.
pub fn client(profile: &Profile) -> reqwest::Result<reqwest::Client> {
    // reqwest is built without a default crypto provider so that we choose ring (smaller and
    // faster to build than aws-lc); install it once. An error means one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let e = &profile.endpoints;
    let all_loopback = [
        &e.authorize,
        &e.token,
        &e.revocation,
        &e.connections,
        &e.api,
    ]
    .into_iter()
    .all(is_loopback);
    let mut builder = reqwest::Client::builder()
        .timeout(profile.http_timeout)
        .connect_timeout(profile.http_timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!("xero-auth/", env!("CARGO_PKG_VERSION")));
    if all_loopback {
        builder = builder.no_proxy();
    }
    builder.build()
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Transport failure (timeout, reset) while reading.
    Transport(reqwest::Error),
    /// Longer than the limit.
    TooLarge,
}

/// Reads the body into a zeroizing buffer, at most `max` bytes. Chunks are copied into one
/// buffer sized from `Content-Length` when the server gives it, so it rarely grows.
pub async fn read_body(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    let hint = response
        .content_length()
        .unwrap_or(8 * 1024)
        .min(max as u64) as usize;
    let mut buf = Zeroizing::new(Vec::with_capacity(hint));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if buf.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        if buf.len() + chunk.len() > buf.capacity() {
            // Grow by hand: the old buffer is wiped, not freed with its contents.
            let mut bigger = Zeroizing::new(Vec::with_capacity((buf.len() + chunk.len()) * 2));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A URL as messages show it: without user info and query, which may carry credentials or data.
pub fn shown(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

/// A short description of a transport error for messages: the kind and the endpoint, never a
/// URL query (reqwest's own `Display` can include the URL).
pub fn describe_transport(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "connection broke while reading the answer"
    } else if err.is_request() {
        "connection broke while sending the request"
    } else {
        "network error"
    };
    // The innermost source names the cause (e.g. "Connection refused"); none of them carries a
    // header or a body.
    let mut source: &dyn std::error::Error = err;
    while let Some(inner) = source.source() {
        source = inner;
    }
    let root = source.to_string();
    if root.is_empty() || std::ptr::eq(source, err as &dyn std::error::Error) {
        kind.to_string()
    } else {
        format!("{kind}: {root}")
    }
}
