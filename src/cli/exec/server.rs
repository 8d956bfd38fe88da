//! `xero-auth exec --server -- CMD…`: run CMD as `exec` does, and while it runs answer
//! `GET $XERO_AUTH_ENDPOINT` (on 127.0.0.1, a random port) with a fresh access token for
//! whoever shows `XERO_AUTH_ENDPOINT_KEY` — in practice CMD and the programs it starts.
//!
//! Tokens come from the one refresh protocol ([`Session::valid_token_set`]), so any number of
//! children polling at once make one refresh. The endpoint never answers with the refresh token
//! or the client secret, and logs nothing secret.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::child::{self, StopSignals};
use crate::cli::token::TokenJson;
use crate::error::{Error, ExitCode, Result};
use crate::secret::{ExposeSecret, SecretString, Zeroizing, constant_time_eq};
use crate::serve::{HeadError, HeadWaiters, LoopbackListener, RequestHead, respond};
use crate::session::Session;
use crate::token_set::RefusedToken;

/// The child's variable with the endpoint's URL. Not `XERO_AUTH_TOKEN_URL`: that one names the
/// identity server's token endpoint, for a `xero-auth` the child runs as for any other.
const URL_ENV: &str = "XERO_AUTH_ENDPOINT";
/// The child's variable with the key the endpoint asks for.
const KEY_ENV: &str = "XERO_AUTH_ENDPOINT_KEY";
/// The key's name before the endpoint had names of its own. The child never gets it: a program
/// written for the old names then stops at the missing key, rather than sending a key to the
/// URL that `XERO_AUTH_TOKEN_URL` names now (the identity server's, when the user set it).
const RETIRED_KEY_ENV: &str = "XERO_AUTH_TOKEN_KEY";
/// The header that carries the key.
const KEY_HEADER: &str = "X-Xero-Auth-Key";
/// The endpoint's path.
const PATH: &str = "/token";
/// Token fetches running at once; more wait for a place.
const MAX_FETCHES: usize = 256;
/// How long, after the child ended, a refresh that is under way may take to finish (it must not
/// be cut between Xero's answer and the keychain write).
const FINISH_WAIT: Duration = Duration::from_secs(120);

/// Runs `command` (CMD with the token and tenant already in its environment, from
/// `session`) with the endpoint, and returns its exit status once it has ended. `margin`:
/// every token handed out stays valid at least this long (`--min-valid`).
pub(super) async fn run(session: Session, mut command: Command, margin: i64) -> Result<i32> {
    let session = Arc::new(session);
    // 32 random bytes: 43 URL-safe characters.
    let key = SecretString::from(crate::secret::random_urlsafe(32));
    let listener = LoopbackListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let url = format!("http://{}{PATH}", listener.local_addr());
    command
        .env(URL_ENV, &url)
        .env(KEY_ENV, key.expose_secret())
        .env_remove(RETIRED_KEY_ENV);
    let signals = StopSignals::install()?;
    let mut child = child::spawn(command)?;
    signals.supervise(child.id());
    tracing::info!(%url, "token endpoint listening for the command");

    let endpoint = Arc::new(Endpoint {
        session,
        key,
        margin,
        fetches: Arc::new(Semaphore::new(MAX_FETCHES)),
        heads: HeadWaiters::default(),
        replacement: std::sync::Mutex::default(),
    });
    let mut connections = tokio::task::JoinSet::new();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            (stream, _) = listener.accept() => {
                connections.spawn(endpoint.clone().answer(stream));
            }
            // Answered connections are reaped as they finish, or they would pile up.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    };
    // The endpoint goes with the command: no new connection, none left open.
    drop(listener);
    connections.abort_all();
    endpoint.finish_fetches().await;
    crate::cli::notify::finish();
    // A set the store would not take is lost with this process: one more try at storing it.
    endpoint.session.save_unsaved().await;
    let status = status.map_err(|e| Error::io("cannot wait for", "the command", e))?;
    Ok(child::exit_code(status))
}

/// A replacement refused within this many seconds of being obtained is handed out again rather
/// than replaced: at most one refresh a minute when Xero refuses every call whatever the token.
const REPLACEMENT_QUIET_SECS: i64 = 60;

/// What the endpoint needs to answer.
struct Endpoint {
    session: Arc<Session>,
    key: SecretString,
    /// Every token handed out stays valid at least this long (`--min-valid`).
    margin: i64,
    /// Places for token fetches; all of them free again means no refresh is under way.
    fetches: Arc<Semaphore>,
    /// The connections still waiting for their request head.
    heads: HeadWaiters,
    /// The `access_token_id` of the last token handed out in place of a refused one, and
    /// whether its own refusal was told: a replacement refused too means Xero refuses the call,
    /// not the token (see [`Endpoint::tell_refused_replacement`]).
    replacement: std::sync::Mutex<Replacement>,
}

/// See [`Endpoint::replacement`].
#[derive(Default)]
struct Replacement {
    /// The replacement's `access_token_id`.
    id: Option<String>,
    /// The scope names its set was granted (no secret).
    scopes: String,
    /// When it was obtained (Unix seconds).
    at: i64,
    /// Whether its refusal was told.
    told: bool,
}

impl Endpoint {
    /// Answers one connection.
    async fn answer(self: Arc<Self>, mut stream: TcpStream) {
        let head = match RequestHead::read(&mut stream, &self.heads).await {
            Ok(head) => head,
            Err(HeadError::Gone) => return,
            Err(HeadError::TooLarge) => {
                return self
                    .refuse(&mut stream, 431, "the request head is too large")
                    .await;
            }
            Err(HeadError::Malformed) => {
                return self.refuse(&mut stream, 400, "not an HTTP/1 request").await;
            }
        };
        if head.path() != PATH {
            return self
                .refuse(&mut stream, 404, "the token endpoint is GET /token")
                .await;
        }
        if head.method() != "GET" {
            return self
                .refuse(&mut stream, 405, "the token endpoint answers GET only")
                .await;
        }
        let key_ok = head
            .header(KEY_HEADER)
            .is_some_and(|given| constant_time_eq(given, self.key.expose_secret().as_bytes()));
        if !key_ok {
            tracing::warn!("token endpoint: a request without the right key was refused");
            return self
                .refuse(
                    &mut stream,
                    403,
                    "send the header X-Xero-Auth-Key with the value of XERO_AUTH_ENDPOINT_KEY",
                )
                .await;
        }
        let margin = match head.query_param("min_valid") {
            None => self.margin,
            Some(v) => match v.parse::<i64>() {
                Ok(secs) if (0..=1500).contains(&secs) => secs.max(self.margin),
                _ => {
                    return self
                        .refuse(
                            &mut stream,
                            400,
                            "min_valid must be a number of seconds from 0 to 1500",
                        )
                        .await;
                }
            },
        };
        // `refused=ID`: Xero answered 401 to the token with this id (never the token itself).
        let refused = match head.query_param("refused") {
            None => None,
            Some(id) => match RefusedToken::parse(&id) {
                Some(refused) => Some(refused),
                None => {
                    return self
                        .refuse(
                            &mut stream,
                            400,
                            "refused must be the refused token's access_token_id (16 to 64 hex digits of its SHA-256)",
                        )
                        .await;
                }
            },
        };
        drop(head);
        // Who asked, for the audit log: the process holding the other end of the connection.
        let asker = match (stream.local_addr(), stream.peer_addr()) {
            (Ok(local), Ok(peer)) => crate::serve::peer::pid_of(local, peer),
            _ => None,
        };
        let fetched = self.clone().fetch(margin, refused).await;
        let event = self.session.audit_event("server-fetch");
        let event = match asker {
            Some(pid) => event.asked_by(pid),
            None => event.with("requester", serde_json::Value::Null),
        };
        self.session.record(event.outcome(match &fetched {
            Ok(_) => 0,
            Err(e) => e.exit_code() as i32,
        }));
        match fetched {
            Ok(body) => {
                tracing::debug!("token endpoint: handed out an access token");
                respond(&mut stream, 200, "application/json", &[], &body).await;
            }
            Err(err) => {
                // The same message the command line would print (never a secret), once here
                // for the person watching and once to the program that asked.
                tracing::warn!("token endpoint: {err}");
                crate::cli::notify::on_error(&self.session, &err);
                let (status, retry) = match err.exit_code() {
                    ExitCode::StoreUnavailable | ExitCode::Temporary => (503, true),
                    _ => (500, false),
                };
                let body = serde_json::to_vec(&serde_json::json!({
                    "error": error_name(err.exit_code()),
                    "message": err.to_string(),
                }))
                .expect("JSON to memory");
                let headers: &[(&str, &str)] = if retry { &[("Retry-After", "5")] } else { &[] };
                respond(&mut stream, status, "application/json", headers, &body).await;
            }
        }
    }

    /// A token valid for more than `margin` seconds (and not the `refused` one), as the answer's
    /// JSON. The work runs in a
    /// task of its own that holds a place in `fetches`: a refresh is never cut short because the
    /// connection that asked went away or the command ended.
    async fn fetch(
        self: Arc<Self>,
        margin: i64,
        refused: Option<RefusedToken>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let permit = self
            .fetches
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let work = tokio::spawn(async move {
            let _permit = permit;
            let set = match &refused {
                // The replacement refused too, and lately: another refresh would not help and
                // a program retrying every call would spend one each. The stored token again.
                Some(refused) if self.refused_replacement(refused) => {
                    self.session.valid_token_set(margin).await?
                }
                Some(refused) => {
                    let before = self.session.now();
                    let set = self.session.token_set_replacing(refused, margin).await?;
                    // Only a set refreshed for this refusal (here or by another process
                    // meanwhile) is a replacement; a late refusal of an old token gets the
                    // stored one, which nobody refused yet.
                    if set.obtained_at >= before
                        && let Ok(mut r) = self.replacement.lock()
                        && r.id != set.access_token_id()
                    {
                        *r = Replacement {
                            id: set.access_token_id(),
                            scopes: set.scopes.join(" "),
                            at: set.obtained_at,
                            told: false,
                        };
                    }
                    set
                }
                None => self.session.valid_token_set(margin).await?,
            };
            let token = set
                .require_access_token(&self.session.profile().name)?
                .expose_secret();
            let doc = TokenJson::new(&set, token, &self.session);
            // One buffer, sized up front (no reallocation leaves a copy of the token behind).
            let mut body = Zeroizing::new(Vec::with_capacity(token.len() + 256));
            serde_json::to_writer(&mut *body, &doc).expect("JSON to memory");
            Ok(body)
        });
        work.await
            .map_err(|e| Error::InvalidInput(format!("the token fetch failed: {e}")))?
    }

    /// The endpoint cannot see the program's calls, but it can tell one case: the token it handed
    /// out in place of a refused one is refused too. Then a new token will not help: Xero refuses
    /// the call itself, most often for a scope the token lacks. Said once per replacement, with
    /// the scope names the set was granted (never a token). True when that replacement is less
    /// than [`REPLACEMENT_QUIET_SECS`] old: then it is not replaced again.
    fn refused_replacement(&self, refused: &RefusedToken) -> bool {
        let Ok(mut r) = self.replacement.lock() else {
            return false;
        };
        let refused_again = r.id.as_deref().is_some_and(|id| refused.is(id));
        if !refused_again {
            return false;
        }
        let recent = self.session.now().saturating_sub(r.at) < REPLACEMENT_QUIET_SECS;
        if r.told {
            return recent;
        }
        r.told = true;
        let profile = &self.session.profile().name;
        tracing::warn!(
            "token endpoint: the token handed out after a refusal was refused too: Xero refuses \
             the call, not the token — most often it needs a scope the token lacks (it was \
             granted: {}). {} names the scopes a call needs and whether this token has them",
            if r.scopes.is_empty() { "no scopes" } else { &r.scopes },
            crate::hint::command(profile, "scopes for PATH [METHOD]")
        );
        recent
    }

    /// Waits (bounded) until no token fetch is under way.
    async fn finish_fetches(&self) {
        let all = self.fetches.acquire_many(MAX_FETCHES as u32);
        if tokio::time::timeout(FINISH_WAIT, all).await.is_err() {
            tracing::warn!("a token refresh was still under way when the endpoint stopped");
        }
    }

    async fn refuse(&self, stream: &mut TcpStream, status: u16, message: &str) {
        let body = serde_json::to_vec(&serde_json::json!({
            "error": match status {
                403 => "forbidden",
                404 => "not_found",
                405 => "method_not_allowed",
                _ => "bad_request",
            },
            "message": message,
        }))
        .expect("JSON to memory");
        let allow: &[(&str, &str)] = if status == 405 {
            &[("Allow", "GET")]
        } else {
            &[]
        };
        respond(stream, status, "application/json", allow, &body).await;
    }
}

/// A name for each exit code, for the `error` field of a failed answer.
fn error_name(code: ExitCode) -> &'static str {
    match code {
        ExitCode::NothingStored => "nothing_stored",
        ExitCode::ReauthRequired => "reauthorisation_needed",
        ExitCode::StoreUnavailable => "store_unavailable",
        ExitCode::Temporary => "temporarily_unavailable",
        _ => "failed",
    }
}
