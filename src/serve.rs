//! A loopback HTTP/1.1 listener for the commands that serve programs on this machine (the
//! token endpoint of `exec --server`; the login's redirect listener is the same kind of thing).
//!
//! It binds loopback addresses only and answers loopback peers only, reads one request head per
//! connection (bounded in size and time) into a wiping buffer, since a head can carry a key, and
//! writes one answer with `Connection: close`. Nothing here knows what the requests mean.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::secret::Zeroizing;

/// The largest request head accepted; a client of these endpoints sends a few hundred bytes.
pub const MAX_HEAD: usize = 8192;
/// How long a connection may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `ip` is a loopback address (an IPv4-mapped IPv6 loopback address counts).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A TCP listener on a loopback address.
pub struct LoopbackListener {
    inner: TcpListener,
}

impl LoopbackListener {
    /// Listens on `addr` (port 0: a free one), which must be a loopback address: anything else
    /// would offer the endpoint to the network.
    pub async fn bind(addr: SocketAddr) -> Result<Self> {
        if !is_loopback(addr.ip()) {
            return Err(Error::InvalidInput(format!(
                "refusing to listen on {addr}: only loopback addresses (127.0.0.1, ::1) are allowed, \
                 so that no other machine can reach the endpoint"
            )));
        }
        let inner = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io("cannot listen on", addr.to_string(), e))?;
        Ok(LoopbackListener { inner })
    }

    /// The address it listens on (with the port chosen).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The next connection from a loopback peer. Connections from anywhere else (which only a
    /// misrouted packet could make) are closed unanswered; errors of single connections are
    /// skipped.
    pub async fn accept(&self) -> (TcpStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) if is_loopback(peer.ip()) => return (stream, peer),
                Ok((_, peer)) => {
                    tracing::warn!(%peer, "refused a connection from a non-loopback peer")
                }
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    // Out of file descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Why no request head could be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed the connection, sent nothing in time, or the read failed.
    Gone,
    /// The head is larger than [`MAX_HEAD`].
    TooLarge,
    /// The request line is not `METHOD TARGET HTTP/1.x`.
    Malformed,
}

/// One request head, kept in the wiping buffer it was read into.
pub struct RequestHead {
    buf: Zeroizing<Vec<u8>>,
    /// Length of the request line (without its CRLF).
    line_len: usize,
    /// Where the method ends and the target starts and ends, within the request line.
    method_end: usize,
    target: (usize, usize),
}

impl RequestHead {
    /// Reads a request head (up to the blank line) from `stream`, within [`HEAD_TIMEOUT`].
    pub async fn read(stream: &mut TcpStream) -> Result<RequestHead, HeadError> {
        let mut buf = Zeroizing::new(vec![0u8; MAX_HEAD]);
        let mut len = 0;
        let read = tokio::time::timeout(HEAD_TIMEOUT, async {
            loop {
                if let Some(end) = find(&buf[..len], b"\r\n\r\n") {
                    return Ok(end + 4);
                }
                if len == buf.len() {
                    return Err(HeadError::TooLarge);
                }
                match stream.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => return Err(HeadError::Gone),
                    Ok(n) => len += n,
                }
            }
        })
        .await
        .map_err(|_| HeadError::Gone)??;
        // Truncating never reallocates; a body sent after the head is ignored (and wiped).
        buf.truncate(read);
        Self::parse(buf)
    }

    fn parse(buf: Zeroizing<Vec<u8>>) -> Result<RequestHead, HeadError> {
        let line_len = find(&buf, b"\r\n").ok_or(HeadError::Malformed)?;
        let line = &buf[..line_len];
        let mut spaces = line.iter().enumerate().filter(|(_, b)| **b == b' ');
        let (method_end, _) = spaces.next().ok_or(HeadError::Malformed)?;
        let (target_end, _) = spaces.next().ok_or(HeadError::Malformed)?;
        let version = &line[target_end + 1..];
        if spaces.next().is_some()
            || method_end == 0
            || target_end == method_end + 1
            || !version.starts_with(b"HTTP/1.")
            || std::str::from_utf8(&line[..target_end]).is_err()
        {
            return Err(HeadError::Malformed);
        }
        Ok(RequestHead {
            line_len,
            method_end,
            target: (method_end + 1, target_end),
            buf,
        })
    }

    /// `GET`, `POST`…
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.method_end]).expect("checked when parsed")
    }

    /// The request target as sent (`/token?min_valid=600`).
    pub fn target(&self) -> &str {
        std::str::from_utf8(&self.buf[self.target.0..self.target.1]).expect("checked when parsed")
    }

    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The value of query parameter `name` (percent-decoded), if the target has it.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let (_, query) = self.target().split_once('?')?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The value of header `name` (case-insensitive; surrounding blanks trimmed), if present.
    /// It borrows the wiping buffer: a header can carry a key.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.buf[self.line_len + 2..]
            .split(|b| *b == b'\n')
            .filter_map(|line| {
                let colon = line.iter().position(|b| *b == b':')?;
                Some((&line[..colon], &line[colon + 1..]))
            })
            .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value.trim_ascii())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The reason phrase of the statuses these endpoints use.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Writes one answer and closes the connection. The head and body go out in one write from one
/// wiping buffer sized up front, since the body may be a token. Write errors are ignored: the
/// peer has gone, and there is no one left to tell.
pub async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = Zeroizing::new(Vec::with_capacity(head.len() + body.len()));
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn head(text: &str) -> Result<RequestHead, HeadError> {
        RequestHead::parse(Zeroizing::new(text.as_bytes().to_vec()))
    }

    #[test]
    fn only_loopback_addresses_count_as_loopback() {
        assert!(is_loopback(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(is_loopback(IpAddr::V4(Ipv4Addr::new(127, 3, 2, 1))));
        assert!(is_loopback(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!is_loopback(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert!(!is_loopback(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2))));
        assert!(!is_loopback(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    }

    #[tokio::test]
    async fn binding_anything_but_loopback_is_refused_with_a_reason() {
        for addr in ["0.0.0.0:0", "[::]:0", "192.168.1.2:0", "10.0.0.1:8080"] {
            let err = match LoopbackListener::bind(addr.parse().unwrap()).await {
                Ok(_) => panic!("{addr} was bound"),
                Err(e) => e,
            };
            let message = err.to_string();
            assert!(
                message.contains("only loopback addresses") && message.contains(addr),
                "{message}"
            );
        }
        let listener = LoopbackListener::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert!(listener.local_addr().ip().is_loopback());
        assert_ne!(listener.local_addr().port(), 0);
    }

    #[test]
    fn request_heads_are_parsed() {
        let h = head(
            "GET /token?min_valid=600&x=%41 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Xero-Auth-Key:  k3y \r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method(), "GET");
        assert_eq!(h.target(), "/token?min_valid=600&x=%41");
        assert_eq!(h.path(), "/token");
        assert_eq!(h.query_param("min_valid").as_deref(), Some("600"));
        assert_eq!(h.query_param("x").as_deref(), Some("A"));
        assert_eq!(h.query_param("y"), None);
        assert_eq!(h.header("x-xero-auth-key"), Some(&b"k3y"[..]));
        assert_eq!(h.header("host"), Some(&b"127.0.0.1"[..]));
        assert_eq!(h.header("missing"), None);
    }

    #[test]
    fn malformed_request_lines_are_refused() {
        for bad in [
            "GET\r\n\r\n",
            "GET /token\r\n\r\n",
            " /token HTTP/1.1\r\n\r\n",
            "GET  HTTP/1.1\r\n\r\n",
            "GET /token HTTP/1.1 extra\r\n\r\n",
            "GET /token SPDY/3\r\n\r\n",
        ] {
            assert_eq!(head(bad).err(), Some(HeadError::Malformed), "{bad:?}");
        }
    }
}
