//! The pieces of the authorization-code flow for a workstation (RFC 8252, RFC 7636): PKCE,
//! the authorize URL, the loopback redirect listener and the parsing of what comes back to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use url::Url;

use crate::error::{Error, Result};
use crate::secret::Zeroizing;

/// A PKCE pair: the verifier stays here, the S256 challenge goes in the authorize URL.
pub struct Pkce {
    /// The code verifier, sent with the code exchange.
    pub verifier: Zeroizing<String>,
    /// The S256 challenge, sent in the authorize URL.
    pub challenge: String,
}

impl Pkce {
    /// A fresh pair: 32 random bytes make a 43-character verifier (RFC 7636, section 4.1).
    pub fn new() -> Self {
        Self::from_verifier(crate::secret::random_urlsafe(32))
    }

    /// The pair for a given verifier.
    pub fn from_verifier(verifier: String) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
        Pkce {
            challenge: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()),
            verifier: Zeroizing::new(verifier),
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the browser is sent back to: a loopback address, a port and a path.
#[derive(Debug, Clone)]
pub struct RedirectTarget {
    /// The URI exactly as registered at Xero (sent in the authorize request and the exchange).
    pub uri: String,
    /// The address the listener binds: never anything but loopback.
    pub bind: SocketAddr,
    /// The path the callback must use.
    pub path: String,
}

/// Checks a redirect URI for a loopback listener: `http://localhost|127.0.0.1|[::1]:PORT/path`.
pub fn parse_redirect_uri(uri: &str) -> Result<RedirectTarget> {
    let bad = |why: &str| {
        Error::InvalidInput(format!(
            "redirect URI '{uri}' {why}; use a loopback URI registered for the app, e.g. http://localhost:8742/callback"
        ))
    };
    let url = Url::parse(uri).map_err(|_| bad("is not a URL"))?;
    if url.scheme() != "http" {
        return Err(bad("must use http:// (the listener runs on this machine)"));
    }
    let ip = match url.host() {
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        Some(url::Host::Ipv4(ip)) if ip.is_loopback() => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) if ip == Ipv6Addr::LOCALHOST => IpAddr::V6(ip),
        _ => return Err(bad("is not on localhost, 127.0.0.1 or [::1]")),
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    Ok(RedirectTarget {
        uri: uri.to_string(),
        bind: SocketAddr::new(ip, port),
        path: url.path().to_string(),
    })
}

/// The authorize URL the browser opens.
pub fn authorize_url(
    endpoint: &Url,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    state: &str,
    challenge: &str,
) -> Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", state)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    url
}

/// What one request to the redirect listener (or one pasted redirect URL) said.
#[derive(Debug, PartialEq)]
pub enum Callback {
    /// The authorization code: the login can go on.
    Code(Zeroizing<String>),
    /// Xero (or the user) refused: `error=…` with our state. Ends the login.
    Refused {
        /// The OAuth error code.
        error: String,
        /// Its description, if any.
        description: Option<String>,
    },
    /// Not ours, or not usable; the listener keeps waiting.
    Ignored {
        /// The HTTP status the listener answers with.
        status: u16,
        /// Why it was ignored.
        why: &'static str,
    },
}

/// Classifies a request target (`/callback?code=…&state=…`) against the expected path and
/// state. Only a request on the right path with our `state` can end the login.
pub fn parse_callback(target: &str, expected_path: &str, expected_state: &str) -> Callback {
    let Ok(url) = Url::parse("http://loopback.invalid").and_then(|base| base.join(target)) else {
        return Callback::Ignored {
            status: 400,
            why: "a malformed request",
        };
    };
    if url.path() != expected_path {
        return Callback::Ignored {
            status: 404,
            why: "not the redirect path",
        };
    }
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in url.query_pairs() {
        match &*k {
            "code" => code = Some(Zeroizing::new(v.into_owned())),
            "state" => state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    // The state is the defence against a forged callback: compare without an early exit.
    let state_ok = state
        .is_some_and(|s| crate::secret::constant_time_eq(s.as_bytes(), expected_state.as_bytes()));
    if !state_ok {
        return Callback::Ignored {
            status: 400,
            why: "the state does not match this login",
        };
    }
    if let Some(error) = error {
        let clean = |s: String| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
        };
        return Callback::Refused {
            error: clean(error),
            description: description.map(clean),
        };
    }
    match code {
        Some(code) if !code.is_empty() => Callback::Code(code),
        _ => Callback::Ignored {
            status: 400,
            why: "the callback has no code",
        },
    }
}

/// Binds the loopback listener, with a message that names the port when it is taken.
pub async fn bind(target: &RedirectTarget) -> Result<TcpListener> {
    TcpListener::bind(target.bind).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            Error::InvalidInput(format!(
                "port {} on {} is already in use, so the login cannot receive Xero's redirect to {}. \
                 Stop the program using it, or choose another redirect URI registered for the app \
                 with --redirect-uri (or redirect_uri in the profile)",
                target.bind.port(),
                target.bind.ip(),
                target.uri
            ))
        } else {
            Error::io("cannot listen for the redirect on", target.bind.to_string(), e)
        }
    })
}

const PAGE_OK: &str = "<!doctype html><meta charset=utf-8><title>xero-auth</title>\
<body style=\"font-family:sans-serif;margin:3em\"><h1>Logged in</h1>\
<p>xero-auth received the authorisation. You can close this tab.</p>";

fn page(status: u16, title: &str, text: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = if status == 200 {
        PAGE_OK.to_string()
    } else {
        format!(
            "<!doctype html><meta charset=utf-8><title>xero-auth</title>\
             <body style=\"font-family:sans-serif;margin:3em\"><h1>{}</h1><p>{}</p>",
            esc(title),
            esc(text)
        )
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Error",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Answers one connection to the listener and reports what it carried.
async fn serve_one(
    mut stream: TcpStream,
    path: String,
    state: String,
    outcomes: mpsc::Sender<Callback>,
) {
    let mut buf = Zeroizing::new(vec![0u8; 8192]);
    let mut len = 0;
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => len += n,
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let outcome = if method == "GET" {
        parse_callback(target, &path, &state)
    } else {
        Callback::Ignored {
            status: 404,
            why: "not a GET of the redirect path",
        }
    };
    let response = match &outcome {
        Callback::Code(_) => page(200, "", ""),
        Callback::Refused { error, description } => page(
            400,
            "Login refused",
            &format!(
                "Xero answered: {error}{}. Return to the terminal.",
                description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        ),
        Callback::Ignored { status, why } => page(*status, "Not the expected redirect", why),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    if !matches!(outcome, Callback::Ignored { .. }) {
        let _ = outcomes.send(outcome).await;
    }
}

/// Where a pasted redirect URL may come from, and what the end of that input means.
pub struct Pasted {
    /// The lines read from stdin; closed at its end (EOF).
    pub lines: mpsc::Receiver<String>,
    /// Whether the end of stdin ends the login (`--no-browser`: the redirect was to come back by
    /// paste) rather than only the pasting (a browser that did not open: the person may still
    /// open the URL on this machine, and its redirect reach the listener).
    pub end_ends_login: bool,
}

/// Waits for the authorization code: from the loopback listener, or from a redirect URL pasted
/// on `pasted` (for SSH sessions where the browser runs elsewhere). Stray requests are answered
/// and ignored; a refusal or the timeout ends the wait, and so does the end of stdin when
/// [`Pasted::end_ends_login`]. The listener is closed on return. `profile` is the profile
/// logging in: the messages that say to log in again name it.
pub async fn wait_for_code(
    profile: &str,
    listener: TcpListener,
    target: &RedirectTarget,
    state: &str,
    timeout: Duration,
    pasted: Option<Pasted>,
) -> Result<Zeroizing<String>> {
    let end_ends_login = pasted.as_ref().is_some_and(|p| p.end_ends_login);
    let mut pasted = pasted.map(|p| p.lines);
    let (tx, mut rx) = mpsc::channel(4);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    tracing::debug!(%peer, "redirect listener: connection");
                    tokio::spawn(serve_one(stream, target.path.clone(), state.to_string(), tx.clone()));
                }
            }
            Some(outcome) = rx.recv() => return finish(profile, outcome),
            line = async { pasted.as_mut()?.recv().await }, if pasted.is_some() => {
                let Some(line) = line else {
                    pasted = None;
                    if end_ends_login {
                        return Err(Error::InvalidInput(format!(
                            "login stopped: stdin ended before a redirect URL was pasted, and \
                             with --no-browser the redirect comes back by paste. Run {} in a \
                             terminal (or keep stdin open), then paste the address the browser \
                             was sent to",
                            crate::hint::command(profile, "login --no-browser")
                        )));
                    }
                    eprintln!(
                        "stdin ended: nothing can be pasted any more; still waiting for the \
                         browser's redirect to {} (Ctrl-C stops)",
                        target.uri
                    );
                    continue;
                };
                let line = Zeroizing::new(line);
                match parse_callback(pasted_target(&line), &target.path, state) {
                    Callback::Ignored { why, .. } => {
                        eprintln!("that is not the redirect URL of this login ({why}); paste the whole address the browser was sent to");
                    }
                    outcome => return finish(profile, outcome),
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::InvalidInput(format!(
                    "login timed out: no callback within {} s; run {} again (--timeout sets the wait)",
                    timeout.as_secs(),
                    crate::hint::command(profile, "login")
                )));
            }
        }
    }
}

/// The request target (`/path?query`) of a redirect URL pasted by the user; empty when the
/// line is not an absolute URL with a path.
pub fn pasted_target(line: &str) -> &str {
    line.trim()
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("")
}

fn finish(profile: &str, outcome: Callback) -> Result<Zeroizing<String>> {
    match outcome {
        Callback::Code(code) => Ok(code),
        Callback::Refused { error, description } => Err(Error::OAuth {
            endpoint: "the authorize endpoint".into(),
            code: error,
            description: Some(description.unwrap_or_else(|| {
                format!(
                    "the authorisation was not granted; run {} again",
                    crate::hint::command(profile, "login")
                )
            })),
        }),
        Callback::Ignored { .. } => unreachable!("ignored callbacks do not end the wait"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        let p = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(p.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let fresh = Pkce::new();
        assert_eq!(fresh.verifier.len(), 43);
        assert_ne!(fresh.verifier.as_str(), Pkce::new().verifier.as_str());
    }

    #[test]
    fn redirect_uris_must_be_loopback() {
        let t = parse_redirect_uri("http://localhost:8742/callback").unwrap();
        assert_eq!(t.bind, "127.0.0.1:8742".parse().unwrap());
        assert_eq!(t.path, "/callback");
        assert_eq!(
            parse_redirect_uri("http://[::1]:9/cb").unwrap().bind,
            "[::1]:9".parse().unwrap()
        );
        for bad in [
            "https://localhost:1/cb",
            "http://example.com:1/cb",
            "http://0.0.0.0:1/cb",
            "http://localhost:1/cb?x=1",
        ] {
            assert!(parse_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn callbacks_are_classified() {
        let code = parse_callback("/cb?code=abc&state=S1", "/cb", "S1");
        assert_eq!(code, Callback::Code(Zeroizing::new("abc".into())));
        assert!(matches!(
            parse_callback("/cb?code=abc&state=S2", "/cb", "S1"),
            Callback::Ignored { status: 400, .. }
        ));
        assert!(matches!(
            parse_callback("/cb?code=abc", "/cb", "S1"),
            Callback::Ignored { status: 400, .. }
        ));
        assert!(matches!(
            parse_callback("/favicon.ico", "/cb", "S1"),
            Callback::Ignored { status: 404, .. }
        ));
        assert!(matches!(
            parse_callback("/cb?state=S1", "/cb", "S1"),
            Callback::Ignored { status: 400, .. }
        ));
        assert_eq!(
            parse_callback("/cb?error=access_denied&state=S1", "/cb", "S1"),
            Callback::Refused {
                error: "access_denied".into(),
                description: None
            }
        );
        // An error without our state could be anyone's: it does not end the login.
        assert!(matches!(
            parse_callback("/cb?error=access_denied", "/cb", "S1"),
            Callback::Ignored { .. }
        ));
    }

    #[test]
    fn authorize_url_carries_pkce_and_state() {
        let url = authorize_url(
            &Url::parse("https://login.xero.com/identity/connect/authorize").unwrap(),
            "CID",
            "http://localhost:8742/callback",
            &["openid".into(), "offline_access".into()],
            "st",
            "ch",
        );
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["scope"], "openid offline_access");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "http://localhost:8742/callback");
    }
}
