//! Playing the browser in login tests: a tiny HTTP/1.1 client that only ever talks to
//! 127.0.0.1, the user's consent at the fake's authorize endpoint, and the redirect to the
//! login's listener.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use url::Url;

/// A port nobody listens on right now: bind 127.0.0.1:0, take the port, drop the listener.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A response's status, headers and raw body bytes.
type Head<'a> = (u16, Vec<(String, String)>, &'a [u8]);

/// Status, headers and the raw body bytes, once the head is complete.
fn split_head(raw: &[u8]) -> Option<Head<'_>> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some((status, headers, &raw[end + 4..]))
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    })
}

fn content_length(headers: &[(String, String)]) -> Option<usize> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
}

/// Whether a whole response has arrived (for servers that do not close after answering).
fn response_complete(raw: &[u8]) -> bool {
    let Some((_, headers, body)) = split_head(raw) else {
        return false;
    };
    if is_chunked(&headers) {
        body.ends_with(b"0\r\n\r\n")
    } else if let Some(len) = content_length(&headers) {
        body.len() >= len
    } else {
        false
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(body, b"\r\n") {
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(body.len());
        out.extend_from_slice(&body[start..end]);
        body = &body[(end + 2).min(body.len())..];
    }
    out
}

/// One HTTP/1.1 GET to 127.0.0.1 with `Connection: close`; redirects are not followed.
pub fn http_get(url: &str) -> std::io::Result<HttpResponse> {
    let parsed = Url::parse(url).unwrap_or_else(|e| panic!("not a URL ({e}): {url}"));
    assert_eq!(parsed.scheme(), "http", "plain http only: {url}");
    assert_eq!(
        parsed.host_str(),
        Some("127.0.0.1"),
        "the tests only talk to 127.0.0.1, not to {url}"
    );
    let port = parsed.port().expect("an explicit port");
    let mut target = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(5),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: xero-auth-tests\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if response_complete(&raw) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A reset after the answer was sent: keep what arrived.
            Err(_) if !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    let Some((status, headers, body)) = split_head(&raw) else {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ),
        ));
    };
    let mut body = if is_chunked(&headers) {
        dechunk(body)
    } else {
        body.to_vec()
    };
    if let Some(len) = content_length(&headers) {
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// GET on the login's listener; retries while the port refuses connections (the listener may
/// be a moment behind the URL on stderr), up to a deadline.
pub fn callback(url: &str) -> HttpResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get(url) {
            Ok(resp) => return resp,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("GET {url} on the login's listener failed: {e}"),
        }
    }
}

/// The user approves (or denies) at the fake's authorize endpoint: returns the `Location` it
/// redirects to.
pub fn consent(authorize_url: &str) -> Url {
    let resp = http_get(authorize_url).expect("the fake answers the authorize request");
    assert_eq!(
        resp.status, 302,
        "the fake redirects back to the app: {resp:?}"
    );
    Url::parse(resp.header("location").expect("a Location header")).expect("a URL in Location")
}
