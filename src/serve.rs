//! A loopback HTTP/1.1 listener for the commands that serve programs on this machine (the
//! token endpoint of `exec --server`; the login's redirect listener is the same kind of thing).
//!
//! It binds loopback addresses only and answers loopback peers only, and on Linux only peers
//! whose socket belongs to the user running xero-auth ([`peer`]); it reads one request head per
//! connection (bounded in size and time) into a wiping buffer, since a head can carry a key, and
//! writes one answer with `Connection: close`. Nothing here knows what the requests mean.
//!
//! A loopback port is open to every local user, so the listener is built not to be starved:
//! another user's connections are closed as soon as they are accepted, connections that are
//! still waiting for their head are capped ([`HeadWaiters`]) and given little time, and the
//! long-running commands raise their open-file limit ([`open_files`]).

pub mod open_files;
pub mod peer;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::secret::Zeroizing;

/// The largest request head accepted; a client of these endpoints sends a few hundred bytes.
pub const MAX_HEAD: usize = 8192;
/// How long a connection may take to send its request head. Its clients are programs on this
/// machine that send the head as soon as they connect: they need milliseconds.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How many connections may be waiting for their head at once; see [`HeadWaiters`].
pub const MAX_HEAD_WAITERS: usize = 32;
/// How many times the peer's socket is looked up before the connection is refused. On loopback
/// the connecting socket is established before ours is accepted, so the first lookup finds it;
/// the others cover a kernel that shows it late, without a wait that a flood could multiply.
const PEER_LOOKUPS: usize = 3;

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
    /// The user id whose connections are served, where the platform has one.
    uid: Option<u32>,
    /// Whether a refusal or an unknown owner was logged already (once each per listener: a
    /// flood must not flood the log too).
    told_refused: AtomicBool,
    told_unknown: AtomicBool,
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
        Ok(LoopbackListener {
            inner,
            uid: peer::current_uid(),
            told_refused: AtomicBool::new(false),
            told_unknown: AtomicBool::new(false),
        })
    }

    /// The address it listens on (with the port chosen).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The next connection from a loopback peer of this user. Connections from anywhere else
    /// (which only a misrouted packet could make) and, on Linux, from another user's process are
    /// closed unanswered at once; errors of single connections are skipped.
    pub async fn accept(&self) -> (TcpStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) if is_loopback(peer.ip()) => {
                    if self.peer_is_ours(&stream, peer) {
                        return (stream, peer);
                    }
                    // A reset rather than a close: nothing of the refused connection lingers
                    // here (no TIME_WAIT), however many of them arrive.
                    let _ = stream.set_zero_linger();
                }
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

impl LoopbackListener {
    /// Whether the socket at the other end of `stream` belongs to the user running xero-auth.
    /// Another user's, or one that is no longer there, is refused (failing closed). Where the
    /// platform cannot tell, the connection is served: the endpoint's key still guards what it
    /// hands out, and the cap on idle connections keeps it answering.
    fn peer_is_ours(&self, stream: &TcpStream, peer: SocketAddr) -> bool {
        let Some(uid) = self.uid else {
            return true;
        };
        let Ok(local) = stream.local_addr() else {
            return false;
        };
        let mut owner = peer::Owner::NotFound;
        for _ in 0..PEER_LOOKUPS {
            owner = peer::owner(local, peer);
            if owner != peer::Owner::NotFound {
                break;
            }
        }
        match owner {
            peer::Owner::Uid(theirs) if theirs == uid => true,
            peer::Owner::Unknown => {
                if !self.told_unknown.swap(true, Ordering::Relaxed) {
                    tracing::debug!(
                        "cannot tell which user a connection comes from here; serving every local peer that shows the key"
                    );
                }
                true
            }
            other => {
                if !self.told_refused.swap(true, Ordering::Relaxed) {
                    let who = match other {
                        peer::Owner::Uid(theirs) => format!("user id {theirs}"),
                        _ => "a socket that could not be found".to_string(),
                    };
                    tracing::warn!(
                        %peer,
                        "refused a connection from {who}: the endpoint serves only user id {uid} \
                         (further refusals are not logged)"
                    );
                }
                false
            }
        }
    }
}

/// The connections waiting for their request head, capped at [`MAX_HEAD_WAITERS`].
///
/// A connection counts only once it has to wait: a client that sent its head as it connected
/// (every ordinary HTTP client) is read at once and never counted. Past the cap the oldest
/// waiter is dropped, not the newcomer: idle connections piled up by someone else then cannot
/// keep out a client that connects after them, and a waiter only loses its place after 32
/// newer connections have also stalled. 32 is far above what a program waiting on its own
/// requests has open at once; each waiter holds one [`MAX_HEAD`] buffer, so the cap also
/// bounds that memory.
#[derive(Default)]
pub struct HeadWaiters {
    queue: Mutex<WaitQueue>,
}

#[derive(Default)]
struct WaitQueue {
    next_id: u64,
    /// Oldest first; dropping a sender tells its waiter to give up.
    waiting: VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>,
}

/// A connection's place among the [`HeadWaiters`]; leaving it (drop) frees the place.
struct WaitPlace<'a> {
    waiters: &'a HeadWaiters,
    id: u64,
}

impl HeadWaiters {
    fn queue(&self) -> std::sync::MutexGuard<'_, WaitQueue> {
        // The queue stays consistent whatever a panicking holder did: every change is one call.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place, dropping the oldest waiter if the queue is full. The receiver resolves
    /// when this place is taken away.
    fn enter(&self) -> (WaitPlace<'_>, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut queue = self.queue();
        while queue.waiting.len() >= MAX_HEAD_WAITERS {
            queue.waiting.pop_front();
        }
        let id = queue.next_id;
        queue.next_id = queue.next_id.wrapping_add(1);
        queue.waiting.push_back((id, tx));
        (WaitPlace { waiters: self, id }, rx)
    }

    /// How many connections are waiting now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue().waiting.len()
    }

    /// Whether no connection is waiting.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for WaitPlace<'_> {
    fn drop(&mut self) {
        self.waiters
            .queue()
            .waiting
            .retain(|(id, _)| *id != self.id);
    }
}

/// Why no request head could be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed the connection, sent nothing in time, the read failed, or newer
    /// connections took its place among the [`HeadWaiters`].
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
    /// Reads a request head (up to the blank line) from `stream`: what has arrived already at
    /// once, and the rest within [`HEAD_TIMEOUT`] as one of the `waiters`.
    pub async fn read(
        stream: &mut TcpStream,
        waiters: &HeadWaiters,
    ) -> Result<RequestHead, HeadError> {
        let mut buf = Zeroizing::new(vec![0u8; MAX_HEAD]);
        let mut len = 0;
        // What is there already, read straight from the socket: the runtime learns that a new
        // socket is readable only on its next turn, and a head that has arrived must not wait
        // in the queue for that.
        loop {
            if let Some(end) = head_end(&buf, len)? {
                return Self::parse(truncated(buf, end));
            }
            let Some(free) = buf.get_mut(len..) else {
                return Err(HeadError::TooLarge);
            };
            match std::io::Read::read(&mut &*socket2::SockRef::from(&*stream), free) {
                Ok(0) => return Err(HeadError::Gone),
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(HeadError::Gone),
            }
        }
        let (_place, mut evicted) = waiters.enter();
        let read = tokio::time::timeout(HEAD_TIMEOUT, async {
            loop {
                if let Some(end) = head_end(&buf, len)? {
                    return Ok(end);
                }
                let Some(free) = buf.get_mut(len..) else {
                    return Err(HeadError::TooLarge);
                };
                tokio::select! {
                    // Data that is there wins over an eviction that arrives at the same time.
                    biased;
                    n = stream.read(free) => match n {
                        Ok(0) | Err(_) => return Err(HeadError::Gone),
                        Ok(n) => len += n,
                    },
                    _ = &mut evicted => return Err(HeadError::Gone),
                }
            }
        })
        .await
        .map_err(|_| HeadError::Gone)??;
        Self::parse(truncated(buf, read))
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

/// Where the head in `buf[..len]` ends (after its blank line), if it is complete; too large if
/// the buffer is full without one.
fn head_end(buf: &[u8], len: usize) -> Result<Option<usize>, HeadError> {
    let filled = buf.get(..len).ok_or(HeadError::TooLarge)?;
    match find(filled, b"\r\n\r\n") {
        Some(end) => Ok(Some(end + 4)),
        None if len >= buf.len() => Err(HeadError::TooLarge),
        None => Ok(None),
    }
}

/// The buffer cut to the head: truncating never reallocates; a body sent after the head is
/// ignored (and wiped).
fn truncated(mut buf: Zeroizing<Vec<u8>>, len: usize) -> Zeroizing<Vec<u8>> {
    buf.truncate(len);
    buf
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

    /// A listener, and `n` clients connected to it with their accepted ends.
    async fn pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (server, _) = listener.accept().await.unwrap();
            out.push((client, server));
        }
        out
    }

    #[tokio::test]
    async fn a_head_that_has_arrived_is_read_without_taking_a_place() {
        let waiters = HeadWaiters::default();
        let mut conns = pairs(1).await;
        let (client, server) = &mut conns[0];
        client
            .write_all(b"GET /token HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Let the bytes cross loopback; the runtime has not seen the socket readable yet.
        std::thread::sleep(Duration::from_millis(20));
        let (_holder, _rx) = waiters.enter();
        let before = waiters.len();
        let head = RequestHead::read(server, &waiters).await.unwrap();
        assert_eq!(head.path(), "/token");
        assert_eq!(waiters.len(), before);
    }

    #[tokio::test]
    async fn past_the_cap_the_oldest_idle_connection_is_dropped_not_the_newest() {
        let waiters = std::sync::Arc::new(HeadWaiters::default());
        let mut conns = pairs(MAX_HEAD_WAITERS + 1).await;
        let mut tasks = Vec::new();
        let mut clients = Vec::new();
        let (mut last_client, last_server) = conns.pop().unwrap();
        // 32 idle connections, each waiting in turn (oldest first).
        for (i, (client, mut server)) in conns.drain(..).enumerate() {
            clients.push(client);
            let w = waiters.clone();
            tasks.push(tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let r = RequestHead::read(&mut server, &w).await.err();
                (i, r, started.elapsed())
            }));
            while waiters.len() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(waiters.len(), MAX_HEAD_WAITERS);
        // A newcomer that is slow to send: it takes a place, the oldest waiter goes.
        let w = waiters.clone();
        let newest = tokio::spawn(async move {
            let mut server = last_server;
            RequestHead::read(&mut server, &w)
                .await
                .map(|h| h.path().to_string())
        });
        let (first, err, waited) = tasks.remove(0).await.unwrap();
        assert_eq!((first, err), (0, Some(HeadError::Gone)));
        assert!(
            waited < Duration::from_secs(1),
            "dropped at once, not timed out"
        );
        assert_eq!(waiters.len(), MAX_HEAD_WAITERS);
        last_client
            .write_all(b"GET /token HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(newest.await.unwrap().unwrap(), "/token");
        // The others give up after HEAD_TIMEOUT and free their places.
        for task in tasks {
            let (_, err, waited) = task.await.unwrap();
            assert_eq!(err, Some(HeadError::Gone));
            assert!(
                waited >= HEAD_TIMEOUT - Duration::from_millis(100),
                "{waited:?}"
            );
        }
        assert!(waiters.is_empty());
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
