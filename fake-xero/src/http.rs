//! A deliberately small HTTP/1.1 server side: one request per connection, then
//! `Connection: close`. Enough for reqwest, curl and browsers; no keep-alive,
//! no pipelining.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest accepted request body (Content-Length or decoded chunked); more is a 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest accepted request line + headers; more is a 400.
const MAX_HEAD: usize = 64 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query, still percent-encoded.
    pub path: String,
    /// The raw query string (after `?`), possibly empty.
    pub query: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bearer token of an `Authorization: Bearer …` header.
    pub fn bearer(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, rest) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|t| !t.is_empty())
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer went away or was silent too long: nothing to answer.
    Gone,
    /// Not HTTP we understand: answer 400 and close.
    Malformed(&'static str),
    /// Body over [`MAX_BODY`]: answer 413 and close. Carries the request without its
    /// body, so that it can still be counted.
    TooLarge(Box<Request>),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Gone
    }
}

/// A connection with a read buffer (bytes received but not consumed yet).
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; `Gone` at EOF.
    async fn fill(&mut self) -> Result<(), ReadError> {
        let mut tmp = [0u8; 16 * 1024];
        let n = self.stream.read(&mut tmp).await?;
        if n == 0 {
            return Err(ReadError::Gone);
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// Takes exactly `n` bytes.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// Takes one CRLF-terminated line (without the CRLF), at most `max` bytes.
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let mut line = self.take(i + 2).await?;
                line.truncate(i);
                return Ok(line);
            }
            if self.buf.len() > max {
                return Err(ReadError::Malformed("line too long"));
            }
            self.fill().await?;
        }
    }

    /// Reads one whole request, with a timeout.
    pub async fn read_request(&mut self) -> Result<Request, ReadError> {
        match tokio::time::timeout(READ_TIMEOUT, self.read_request_inner()).await {
            Ok(r) => r,
            Err(_) => Err(ReadError::Gone),
        }
    }

    async fn read_request_inner(&mut self) -> Result<Request, ReadError> {
        // Head: everything up to the blank line.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadError::Malformed("header section too large"));
            }
            match self.fill().await {
                Ok(()) => {}
                // Garbage followed by EOF is still worth a 400.
                Err(ReadError::Gone) if !self.buf.is_empty() => {
                    return Err(ReadError::Malformed("incomplete request head"));
                }
                Err(e) => return Err(e),
            }
        };
        let head = self.take(head_end + 4).await?;
        let head = std::str::from_utf8(&head[..head_end])
            .map_err(|_| ReadError::Malformed("request head is not UTF-8"))?;
        let mut lines = head.split("\r\n");

        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ReadError::Malformed("bad request line"));
        };
        if method.is_empty() || !method.bytes().all(is_token_char) {
            return Err(ReadError::Malformed("bad method"));
        }
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(ReadError::Malformed("unsupported HTTP version"));
        }
        if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ReadError::Malformed("bad request target"));
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));

        let mut headers = Vec::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(ReadError::Malformed("header line without a colon"));
            };
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(ReadError::Malformed("bad header name"));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }

        let mut req = Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers,
            body: Vec::new(),
        };

        let chunked = match req.header("transfer-encoding") {
            None => false,
            Some(te) if te.eq_ignore_ascii_case("chunked") => true,
            Some(_) => return Err(ReadError::Malformed("unsupported transfer-encoding")),
        };
        let mut lengths = req
            .headers
            .iter()
            .filter(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse::<usize>());
        let length = match lengths.next() {
            None => None,
            Some(Err(_)) => return Err(ReadError::Malformed("bad content-length")),
            Some(Ok(n)) => {
                if lengths.any(|other| other != Ok(n)) {
                    return Err(ReadError::Malformed("conflicting content-length"));
                }
                Some(n)
            }
        };
        if chunked && length.is_some() {
            return Err(ReadError::Malformed("both content-length and chunked"));
        }
        if length.is_some_and(|n| n > MAX_BODY) {
            return Err(ReadError::TooLarge(Box::new(req)));
        }
        if (chunked || length.is_some_and(|n| n > 0))
            && req
                .header("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }

        if chunked {
            req.body = match self.read_chunked().await {
                Ok(body) => body,
                Err(ReadError::TooLarge(_)) => return Err(ReadError::TooLarge(Box::new(req))),
                Err(e) => return Err(e),
            };
        } else if let Some(n) = length {
            req.body = self.take(n).await?;
        }
        Ok(req)
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.line(1024).await?;
            let line = std::str::from_utf8(&line)
                .map_err(|_| ReadError::Malformed("bad chunk size line"))?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| ReadError::Malformed("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the final blank line.
                while !self.line(MAX_HEAD).await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                // The caller fills in the request.
                return Err(ReadError::TooLarge(Box::new(Request {
                    method: String::new(),
                    path: String::new(),
                    query: String::new(),
                    headers: Vec::new(),
                    body: Vec::new(),
                })));
            }
            body.extend(self.take(size).await?);
            if !self.take(2).await?.eq(b"\r\n") {
                return Err(ReadError::Malformed("chunk not followed by CRLF"));
            }
        }
    }

    /// Writes a complete response, then closes our side gracefully (FIN).
    pub async fn respond(&mut self, resp: &Response, date: &str) {
        let mut bytes = resp.head(resp.body.len(), date);
        bytes.extend_from_slice(&resp.body);
        let _ = self.stream.write_all(&bytes).await;
        let _ = self.stream.shutdown().await;
    }

    /// Like [`Conn::respond`] for a request whose body we did not read (413, 400):
    /// after answering, swallow what the client is still sending for a moment, because
    /// closing a socket with unread input makes the kernel send RST, and the client
    /// might then lose the answer.
    pub async fn respond_and_drain(&mut self, resp: &Response, date: &str) {
        self.respond(resp, date).await;
        let drain = async {
            let mut tmp = [0u8; 16 * 1024];
            let mut total = 0usize;
            while let Ok(n) = self.stream.read(&mut tmp).await {
                total += n;
                if n == 0 || total > 4 * MAX_BODY {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }

    /// Sends the head of `resp` with the full Content-Length but only the first half of
    /// the body, then closes: the client sees the connection end mid-body.
    pub async fn respond_truncated(&mut self, resp: &Response, date: &str) {
        let mut bytes = resp.head(resp.body.len(), date);
        bytes.extend_from_slice(&resp.body[..resp.body.len() / 2]);
        let _ = self.stream.write_all(&bytes).await;
        let _ = self.stream.shutdown().await;
    }

    /// Drops the connection with a TCP RST instead of a FIN: `SO_LINGER` 0 makes the
    /// kernel discard the socket abruptly, so the client gets "connection reset by peer".
    pub fn reset(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }
}

/// An HTTP response to be written.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: serde_json::to_vec(value).expect("JSON serialises"),
        }
    }

    /// An HTML response.
    pub fn html(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Replaces (or adds) a header.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
    }

    /// Status line and headers, with `Content-Length: content_length`.
    fn head(&self, content_length: usize, date: &str) -> Vec<u8> {
        let mut s = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str(&format!(
            "Content-Length: {content_length}\r\nDate: {date}\r\nConnection: close\r\n\r\n"
        ));
        s.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
