//! The HTTP client, built only when a command needs the network (the cached-token path never
//! builds one), and bodies read into zeroizing buffers.

use std::time::Duration;

use crate::config::{Profile, is_loopback};
use crate::secret::Zeroizing;

/// A response body is refused past this size: token responses are a few KB.
pub const MAX_BODY: usize = 1 << 20;

/// A client for `profile`'s endpoints: rustls, no redirects (a redirect could carry a
/// secret-bearing request elsewhere), no connection pool (a connection that carried a secret is
/// closed), and the environment's proxy for every URL except loopback ones.
///
/// The loopback rule is per request, not per profile: before, the proxy was skipped only when
/// all five endpoints were loopback, so a profile with one endpoint elsewhere sent its loopback
/// requests — the Basic credential, the refresh token, the bearer token — through the proxy in
/// plain HTTP. A loopback URL now never goes through a proxy, and plain `http://` is accepted
/// only for loopback URLs ([`crate::config::parse_endpoint`]), so credentials never cross a
/// network unencrypted.
pub fn client(profile: &Profile) -> reqwest::Result<reqwest::Client> {
    client_builder(profile.http_timeout).build()
}

/// What [`client`] builds, before it is built: for a client that adds its own trust (the vault
/// store's CA file) to the same rules.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    // reqwest is built without a default crypto provider so that we choose ring (smaller and
    // faster to build than aws-lc); install it once. An error means one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!("xero-auth/", env!("CARGO_PKG_VERSION")));
    with_environment_proxies(builder, &|key| std::env::var(key).ok())
}

/// `builder` with the environment's proxies instead of reqwest's own reading of them, which
/// would proxy loopback URLs too.
fn with_environment_proxies(
    builder: reqwest::ClientBuilder,
    env: &dyn Fn(&str) -> Option<String>,
) -> reqwest::ClientBuilder {
    environment_proxies(env)
        .into_iter()
        .fold(builder.no_proxy(), |builder, proxy| builder.proxy(proxy))
}

/// Where each scheme's proxy is looked up, first found wins (curl's variables, as reqwest reads
/// them).
const PROXY_VARIABLES: [(&str, [&str; 4]); 2] = [
    (
        "https",
        ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"],
    ),
    (
        "http",
        ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"],
    ),
];

/// The hosts [`is_loopback`] accepts, in `NO_PROXY`'s syntax: never proxied, whatever
/// `NO_PROXY` says.
const LOOPBACK_HOSTS: &str = "localhost, 127.0.0.0/8, ::1";

/// The variable whose proxy a request to `url` goes through, if any (for messages: never its
/// value). None for a loopback URL, whatever the environment says.
pub fn proxy_variable(
    url: &url::Url,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<&'static str> {
    if is_loopback(url) || env("REQUEST_METHOD").is_some() {
        return None;
    }
    let (_, names) = PROXY_VARIABLES
        .iter()
        .find(|(scheme, _)| *scheme == url.scheme())?;
    names
        .iter()
        .copied()
        .find(|name| env(name).is_some_and(|v| !v.is_empty()))
}

/// The environment's proxies, each with the loopback hosts added to its exceptions. Like curl
/// and reqwest, a CGI program (`REQUEST_METHOD` set) ignores them: there a request can set
/// `HTTP_PROXY` ("httpoxy").
fn environment_proxies(env: &dyn Fn(&str) -> Option<String>) -> Vec<reqwest::Proxy> {
    if env("REQUEST_METHOD").is_some() {
        return Vec::new();
    }
    let first = |names: &[&str]| names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()));
    let exceptions = match first(&["NO_PROXY", "no_proxy"]) {
        Some(theirs) => format!("{LOOPBACK_HOSTS}, {theirs}"),
        None => LOOPBACK_HOSTS.to_string(),
    };
    let mut proxies = Vec::new();
    for (scheme, names) in PROXY_VARIABLES {
        let Some(target) = first(&names) else {
            continue;
        };
        let proxy = match scheme {
            "https" => reqwest::Proxy::https(target.as_str()),
            _ => reqwest::Proxy::http(target.as_str()),
        };
        match proxy {
            Ok(proxy) => {
                proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&exceptions)));
            }
            // reqwest ignores a variable it cannot read, too; say so rather than guess.
            Err(_) => tracing::warn!(
                "the {scheme} proxy variable is not a URL; {scheme}:// requests go direct"
            ),
        }
    }
    proxies
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{Read, Write};

    /// A listener standing in for a proxy: answers each request 200 and records its first line.
    fn proxy() -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut head = [0u8; 1024];
                let n = stream.read(&mut head).unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..n]);
                let _ = tx.send(line.lines().next().unwrap_or("").to_string());
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        (url, rx)
    }

    fn client_with(env: &HashMap<&str, String>) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        with_environment_proxies(reqwest::Client::builder(), &|k| env.get(k).cloned())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn the_environment_proxy_carries_other_hosts_but_never_loopback_ones() {
        let (proxy_url, seen) = proxy();
        let env = HashMap::from([("HTTP_PROXY", proxy_url.clone())]);
        let client = client_with(&env);

        // Another host goes through the proxy (which answers for it: nothing leaves 127.0.0.1).
        let response = client
            .get("http://xero-auth-test.invalid/x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            seen.recv().unwrap(),
            "GET http://xero-auth-test.invalid/x HTTP/1.1"
        );

        // A loopback URL goes direct: here to a port where nothing listens.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        for url in [
            format!("http://127.0.0.1:{port}/x"),
            format!("http://localhost:{port}/x"),
            format!("http://[::1]:{port}/x"),
        ] {
            let err = client.get(&url).send().await.unwrap_err();
            assert!(err.is_connect(), "{url}: {err}");
        }
        assert!(
            seen.try_recv().is_err(),
            "the proxy saw no loopback request"
        );
    }

    #[test]
    fn the_proxy_variable_is_named_for_other_hosts_only() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let xero = url::Url::parse("https://identity.xero.com/connect/token").unwrap();
        let local = url::Url::parse("http://127.0.0.1:8080/connect/token").unwrap();
        let set = env(&[
            ("https_proxy", "http://proxy:3128"),
            ("HTTP_PROXY", "http://p:1"),
        ]);
        assert_eq!(proxy_variable(&xero, &set), Some("https_proxy"));
        assert_eq!(proxy_variable(&local, &set), None);
        let cgi = env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("REQUEST_METHOD", "GET"),
        ]);
        assert_eq!(proxy_variable(&xero, &cgi), None);
        let empty = env(&[("HTTPS_PROXY", ""), ("ALL_PROXY", "http://proxy:3128")]);
        assert_eq!(proxy_variable(&xero, &empty), Some("ALL_PROXY"));
    }
}
