//! A tiny blocking HTTP/1.1 client over std's TcpStream, for talking to the fake.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use fake_xero::FakeXero;
use serde_json::Value;

/// A response as received (body up to EOF, whatever Content-Length said).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` of an OAuth error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Sends raw bytes and reads the whole answer.
pub fn raw(port: u16, request: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Parses a raw response.
pub fn parse(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// One request; `Err` when the connection failed or no HTTP response came back.
pub fn try_request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Resp> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let answer = raw(port, &bytes, timeout)?;
    parse(&answer).ok_or_else(|| io::Error::other("no HTTP response"))
}

pub fn request(
    fx: &FakeXero,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_request(
        fx.port(),
        method,
        target,
        headers,
        body,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// How a token request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Basic(&'a str, &'a str),
    Post(&'a str, &'a str),
    Public(&'a str),
    Nothing,
}

/// The request bytes of a token-endpoint-style POST.
pub fn oauth_request(port: u16, path: &str, auth: Auth, params: &[(&str, &str)]) -> Vec<u8> {
    let mut params: Vec<(&str, &str)> = params.to_vec();
    let mut extra = String::new();
    match auth {
        Auth::Basic(id, secret) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            extra = format!("Authorization: Basic {b64}\r\n");
        }
        Auth::Post(id, secret) => {
            params.push(("client_id", id));
            params.push(("client_secret", secret));
        }
        Auth::Public(id) => params.push(("client_id", id)),
        Auth::Nothing => {}
    }
    let body = form(&params);
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn try_post_form(
    fx: &FakeXero,
    path: &str,
    auth: Auth,
    params: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<Resp> {
    let answer = raw(
        fx.port(),
        &oauth_request(fx.port(), path, auth, params),
        timeout,
    )?;
    parse(&answer).ok_or_else(|| io::Error::other("no HTTP response"))
}

pub fn token(fx: &FakeXero, auth: Auth, params: &[(&str, &str)]) -> Resp {
    try_post_form(fx, "/connect/token", auth, params, Duration::from_secs(10))
        .expect("token request")
}

pub fn refresh(fx: &FakeXero, auth: Auth, refresh_token: &str) -> Resp {
    token(
        fx,
        auth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// GET /connections with a bearer token.
pub fn connections(fx: &FakeXero, access: &str) -> Resp {
    let auth = bearer(access);
    request(fx, "GET", "/connections", &[("Authorization", &auth)], b"")
}

/// An API call with a bearer token and optional tenant.
pub fn api(fx: &FakeXero, method: &str, path: &str, access: &str, tenant: Option<&str>) -> Resp {
    let auth = bearer(access);
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(t) = tenant {
        headers.push(("Xero-Tenant-Id", t));
    }
    request(fx, method, path, &headers, b"")
}

/// A started fake with a confidential app `conf`/`s3cret` and a public app `pub`.
pub fn fake() -> FakeXero {
    let fx = FakeXero::start();
    fx.add_client(CONF, Some(SECRET));
    fx.add_client(PUBLIC, None);
    fx
}

/// Client ids shaped like Xero's (32 uppercase hex characters).
pub const CONF: &str = "91E5715B1199038080D6D0296EBC1648";
pub const SECRET: &str = "xK3-9f_QwErTyUiOpAsDfGhJkLzXcVbNm12345678901234";
pub const PUBLIC: &str = "5F1D2C3B4A5968778695A4B3C2D1E0F9";
pub const SCOPE: &str = "openid profile email accounting.transactions offline_access";
