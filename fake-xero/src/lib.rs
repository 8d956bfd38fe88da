//! A fake of Xero's identity service and API for `xero-auth`'s tests and demo.
//!
//! It behaves like Xero (single-use refresh tokens with a 30-minute grace window, 60-day
//! unused expiry, 30-minute access tokens, PKCE S256, revocation that removes the
//! connections, the API's 401/403 bodies…) rather than answering whatever a test
//! wants, and it counts every request it gets. Faults (delays, resets, 5xx, 429, HTML,
//! truncated JSON) can be injected per endpoint, and Xero's API limits can be enforced
//! ([`FakeXero::set_minute_limit`], [`FakeXero::set_limits`]: per minute, per day, per app,
//! requests in progress; the "minute" can be shortened for tests).
//!
//! The accounting API is echoed rather than implemented, except `GET …/Organisation`
//! and `GET`/`POST`/`PUT …/Contacts`, which keeps what is posted per tenant.
//!
//! The server is a small hand-written HTTP/1.1 server (one request per connection,
//! `Connection: close`) on its own thread and tokio runtime, listening on 127.0.0.1
//! only. Time comes from the fake's own clock (system time plus an offset that
//! [`FakeXero::advance_clock`] moves forward).
//!
//! ```no_run
//! let xero = fake_xero::FakeXero::start();
//! xero.add_client("CLIENT", Some("SECRET"));
//! let tokens = xero.issue_tokens("CLIENT", "openid offline_access accounting.transactions");
//! // … point the program under test at xero.token_url() …
//! # let _ = tokens;
//! ```

#![warn(missing_docs)]

mod http;
mod routes;
mod sha256;
mod state;
mod util;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use routes::{Shared, lock};
use state::{Client, State};

pub use sha256::pkce_s256;

/// The tenant id of the default tenant.
pub const DEFAULT_TENANT_ID: &str = "f4c6a0a3-2e1d-4b5c-9a8f-7e6d5c4b3a21";
/// The connection id of the default tenant.
pub const DEFAULT_CONNECTION_ID: &str = "e1eede29-f875-4a5d-8470-17f6a29a88b1";
/// The name of the default tenant.
pub const DEFAULT_TENANT_NAME: &str = "Demo Company (NZ)";

/// A running fake. Dropping it stops the server and waits for its thread.
pub struct FakeXero {
    shared: Shared,
    port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Tokens as a user authorisation would return them.
#[derive(Clone, Debug)]
pub struct IssuedTokens {
    /// A JWT-looking access token, valid 30 minutes (or what
    /// [`FakeXero::set_access_token_secs`] set).
    pub access_token: String,
    /// 64 hex characters; empty when the scope lacks `offline_access`.
    pub refresh_token: String,
    /// A JWT-looking id token; empty when the scope lacks `openid`.
    pub id_token: String,
    /// Seconds the access token lives (1800, or what [`FakeXero::set_access_token_secs`] set).
    pub expires_in: u64,
    /// The granted scopes, space-separated.
    pub scope: String,
}

/// One connection (an organisation the user authorised the app for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// The connection id (what `DELETE /connections/{id}` takes).
    pub id: String,
    /// The authorisation event that created the connection.
    pub auth_event_id: String,
    /// The organisation's id (what `Xero-Tenant-Id` takes).
    pub tenant_id: String,
    /// The organisation's name.
    pub tenant_name: String,
    /// `ORGANISATION`, `PRACTICEMANAGER`, `PRACTICE`…
    pub tenant_type: String,
    /// When the connection was made (`2019-07-09T23:40:30.1833130`).
    pub created_date_utc: String,
    /// When the connection was last updated.
    pub updated_date_utc: String,
}

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `POST /connect/token`.
    Token,
    /// `POST /connect/revocation`.
    Revocation,
    /// `/connections` and `/connections/{id}`.
    Connections,
    /// `/api.xro/2.0/…`.
    Api,
    /// Every request except the `/_fake/…` control routes.
    Any,
}

/// A misbehaviour to inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Sleep, then answer normally (a client with a shorter timeout sees a timeout;
    /// the server still does the work afterwards).
    Delay(Duration),
    /// Read the request, then drop the connection with RST before processing it.
    Reset,
    /// Process the request (e.g. rotate the refresh token!), then RST without
    /// answering: the lost-response case Xero's refresh grace window exists for.
    ResetAfterProcessing,
    /// 500 with a small HTML body; the request is not processed.
    ServerError,
    /// 429 with `Retry-After` and `X-MinLimit-Remaining: 0`; not processed.
    TooManyRequests {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// 200 `text/html` login-page-like body, as a captive portal or proxy would
    /// send; not processed.
    Html,
    /// Process the request, then send 200 `application/json` with the Content-Length
    /// of the full body but only its first half, and close.
    TruncatedJson,
    /// 401 `AuthenticationUnsuccessful` whatever the token, as Xero answers when an app's
    /// access was withdrawn; not processed. With a persistent fault on the API this makes
    /// every retry fail, which is how a client's "refresh once, retry once" is tested.
    Unauthorized,
    /// 400 with the OAuth error `error` (`unauthorized_client`, `invalid_request`, …), as the
    /// token endpoint answers a request it refuses; not processed.
    OAuthError(&'static str),
}

/// What [`FakeXero::count`] can count. Every request that reached the endpoint counts,
/// including ones answered with a fault or an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Every request to the token endpoint, any grant.
    TokenRequests,
    /// Token requests with `grant_type=refresh_token`.
    Refresh,
    /// Token requests with `grant_type=authorization_code`.
    AuthorizationCode,
    /// Token requests with `grant_type=client_credentials`.
    ClientCredentials,
    /// Requests to the revocation endpoint.
    Revocation,
    /// Requests to `/connections` (any method, with or without an id).
    Connections,
    /// Requests to `/api.xro/2.0/…`.
    Api,
    /// Requests to the authorize endpoint.
    Authorize,
}

impl Counter {
    /// All counters, in a fixed order.
    pub const ALL: [Counter; 8] = [
        Counter::TokenRequests,
        Counter::Refresh,
        Counter::AuthorizationCode,
        Counter::ClientCredentials,
        Counter::Revocation,
        Counter::Connections,
        Counter::Api,
        Counter::Authorize,
    ];

    /// The snake_case name used by the `/_fake/counts` control route.
    pub fn name(self) -> &'static str {
        match self {
            Counter::TokenRequests => "token_requests",
            Counter::Refresh => "refresh",
            Counter::AuthorizationCode => "authorization_code",
            Counter::ClientCredentials => "client_credentials",
            Counter::Revocation => "revocation",
            Counter::Connections => "connections",
            Counter::Api => "api",
            Counter::Authorize => "authorize",
        }
    }
}

/// How a request authenticated its client (as sent, not whether it was right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic base64(client_id:client_secret)`.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
    /// Only `client_id` in the form body (a public PKCE app).
    PublicClientId,
    /// Nothing.
    None,
}

/// One request the fake received (control routes excluded).
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// `GET`, `POST`…
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, possibly empty.
    pub query: String,
    /// The form's `grant_type`, for token requests.
    pub grant_type: Option<String>,
    /// How the client authenticated.
    pub client_auth: ClientAuth,
    /// Whether an `Authorization: Bearer` header was sent.
    pub has_bearer: bool,
    /// The status the client was sent; `None` if the connection was reset (or the
    /// answer is still being prepared).
    pub status: Option<u16>,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
    /// The `Xero-Tenant-Id` header, as sent.
    pub tenant: Option<String>,
    /// The `Content-Type` header, as sent.
    pub content_type: Option<String>,
}

/// Where a refresh token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshTokenStatus {
    /// Never issued by this fake.
    Unknown,
    /// Issued, not used, not expired.
    Active,
    /// Used, and still inside the 30-minute grace window: it can be retried.
    UsedInGrace,
    /// Used, and the grace window is over.
    Spent,
    /// Unused for 60 days.
    Expired,
    /// Its family was revoked.
    Revoked,
}

/// What the fake "user" answers on the consent screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthorizeDecision {
    /// Click "Allow access": redirect with a code.
    #[default]
    Approve,
    /// Click "Cancel": redirect with `error=access_denied`.
    Deny,
}

impl FakeXero {
    /// Starts on 127.0.0.1 with a free port. Panics if it cannot listen.
    pub fn start() -> FakeXero {
        FakeXero::start_on(0).expect("fake-xero: cannot listen on 127.0.0.1")
    }

    /// Starts on 127.0.0.1:`port` (0 for a free one).
    pub fn start_on(port: u16) -> std::io::Result<FakeXero> {
        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared: Shared = std::sync::Arc::new(std::sync::Mutex::new(State::new(port)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server_state = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-xero:{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("fake-xero: listener into tokio");
                    routes::serve(listener, server_state, rx).await;
                });
                // Dropping the runtime here cancels connections still in flight.
            })?;
        Ok(FakeXero {
            shared,
            port,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The authorize endpoint (Xero: `https://login.xero.com/identity/connect/authorize`).
    pub fn authorize_url(&self) -> String {
        format!("{}/identity/connect/authorize", self.base_url())
    }

    /// The token endpoint (Xero: `https://identity.xero.com/connect/token`).
    pub fn token_url(&self) -> String {
        format!("{}/connect/token", self.base_url())
    }

    /// The revocation endpoint (Xero: `https://identity.xero.com/connect/revocation`).
    pub fn revocation_url(&self) -> String {
        format!("{}/connect/revocation", self.base_url())
    }

    /// The connections endpoint (Xero: `https://api.xero.com/connections`).
    pub fn connections_url(&self) -> String {
        format!("{}/connections", self.base_url())
    }

    /// The API base, `base_url() + "/"` (Xero: `https://api.xero.com/`); the
    /// accounting API is under `api.xro/2.0/`.
    pub fn api_url(&self) -> String {
        format!("{}/", self.base_url())
    }

    /// Registers an app. `None`: a public (PKCE) app; `Some`: a confidential one.
    /// Registering an id again replaces its secret.
    pub fn add_client(&self, client_id: &str, secret: Option<&str>) {
        let mut st = self.state();
        let redirect_uris = st
            .clients
            .remove(client_id)
            .map(|c| c.redirect_uris)
            .unwrap_or_default();
        st.clients.insert(
            client_id.to_string(),
            Client {
                secret: secret.map(str::to_string),
                redirect_uris,
                granular_only: false,
            },
        );
    }

    /// Registers an app as Xero creates them from 2 March 2026 (custom connections from 29 April
    /// 2026): it takes only granular scopes. A broad scope (`accounting.transactions`,
    /// `.transactions.read`, `accounting.reports.read`) is refused at the authorize step (Xero's
    /// error page, "unauthorized_client : Invalid scope for client", no redirect), at the code
    /// exchange and in the client-credentials grant (`invalid_scope`).
    pub fn add_granular_only_client(&self, client_id: &str, secret: Option<&str>) {
        self.add_client(client_id, secret);
        if let Some(c) = self.state().clients.get_mut(client_id) {
            c.granular_only = true;
        }
    }

    /// Makes a registered app granular-only (`true`) or not, as Xero does to older apps: codes
    /// already issued for broad scopes are then refused at the exchange. Panics if the client is
    /// unknown.
    pub fn set_granular_only(&self, client_id: &str, granular_only: bool) {
        let mut st = self.state();
        let client = st
            .clients
            .get_mut(client_id)
            .expect("fake-xero: set_granular_only for an unknown client; add_client first");
        client.granular_only = granular_only;
    }

    /// Restricts an app's redirect URIs to exactly these (Xero requires registered
    /// URIs). Without this call, any https URI or http URI on localhost / 127.0.0.1 /
    /// [::1] is accepted. Panics if the client is unknown.
    pub fn set_redirect_uris(&self, client_id: &str, uris: &[&str]) {
        let mut st = self.state();
        let client = st
            .clients
            .get_mut(client_id)
            .expect("fake-xero: set_redirect_uris for an unknown client; add_client first");
        client.redirect_uris = uris.iter().map(|u| u.to_string()).collect();
    }

    /// Every user-grant token response the fake has minted (login, refresh, `issue_tokens`),
    /// oldest first, as JSON bodies: the exact secrets clients were handed. Also served at
    /// `GET /_fake/issued`.
    pub fn issued(&self) -> Vec<serde_json::Value> {
        self.state().issued.clone()
    }

    /// Tokens as if the user had just authorised `client_id` for `scope`: a fresh
    /// refresh-token family. Connections removed by an earlier revocation come back.
    /// Panics if the client is unknown.
    pub fn issue_tokens(&self, client_id: &str, scope: &str) -> IssuedTokens {
        let mut st = self.state();
        assert!(
            st.clients.contains_key(client_id),
            "fake-xero: issue_tokens for unknown client {client_id:?}; add_client first"
        );
        state::issued(&st.new_family(client_id, scope))
    }

    /// Adds a connection to an organisation (a fresh connection id).
    pub fn add_tenant(&self, tenant_id: &str, name: &str, tenant_type: &str) {
        self.state().add_tenant(tenant_id, name, tenant_type);
    }

    /// Sets when the connection to `tenant_id` was last updated, as `/connections` says
    /// (`updatedDateUtc`), to order the connections as a test needs.
    pub fn set_tenant_updated(&self, tenant_id: &str, updated_date_utc: &str) {
        let mut st = self.state();
        for t in st.tenants.iter_mut().filter(|t| t.tenant_id == tenant_id) {
            t.updated_date_utc = updated_date_utc.to_string();
        }
    }

    /// Removes every connection, the default one included.
    pub fn clear_tenants(&self) {
        self.state().clear_tenants();
    }

    /// The current connections.
    pub fn tenants(&self) -> Vec<crate::Tenant> {
        self.state().tenants.clone()
    }

    /// The fake's clock, unix seconds (system time plus the advanced offset).
    pub fn now(&self) -> u64 {
        self.state().now()
    }

    /// Moves the fake's clock forward: expires access tokens, ends grace windows,
    /// ages refresh tokens and codes.
    pub fn advance_clock(&self, d: Duration) {
        self.state().advance_clock(d);
    }

    /// Queues a one-shot fault for `target`: the next request to it gets it (FIFO;
    /// one-shot faults go before persistent ones, a specific target before `Any`).
    pub fn push_fault(&self, target: Target, fault: Fault) {
        self.state().push_fault(target, fault);
    }

    /// Sets (or with `None` clears) a fault applied to every request to `target`.
    pub fn set_persistent_fault(&self, target: Target, fault: Option<Fault>) {
        self.state().set_persistent_fault(target, fault);
    }

    /// How many requests of this kind reached the fake.
    pub fn count(&self, what: Counter) -> usize {
        self.state().count(what)
    }

    /// Every request received so far (control routes excluded), in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// `(method, path, status)` of every `/api.xro/2.0/…` request so far, in arrival
    /// order; the path has no query, and the status is 0 when no answer was sent (a
    /// reset connection). The same as filtering [`FakeXero::requests`].
    pub fn api_requests_with_status(&self) -> Vec<(String, String, u16)> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path.starts_with("/api.xro/2.0/"))
            .map(|r| (r.method.clone(), r.path.clone(), r.status.unwrap_or(0)))
            .collect()
    }

    /// The exact body bytes of the most recent `/api.xro/2.0/…` request, whatever its
    /// method, path or answer (a `GET` has an empty body; so has a request refused
    /// with 413, whose body was not read). `None` before the first API request.
    pub fn last_api_body(&self) -> Option<Vec<u8>> {
        self.state().last_api_body.clone()
    }

    /// The bodies of the `POST`/`PUT /api.xro/2.0/Contacts` requests that the API
    /// accepted for `tenant_id` (matched case-insensitively), exactly as received, in
    /// order. Requests answered 401, 403 or 429 stored nothing.
    pub fn posted_contacts(&self, tenant_id: &str) -> Vec<Vec<u8>> {
        self.state()
            .posted_contacts(&tenant_id.trim().to_ascii_lowercase())
            .to_vec()
    }

    /// Enforces (`Some(limit)`) or stops enforcing (`None`) Xero's per-minute API
    /// limit. Per tenant, in a sliding 60-second window of the fake's clock (or the window
    /// [`FakeXero::set_limits`] sets), only
    /// `limit` calls to `/api.xro/2.0/…` go through; the others get 429 with
    /// `Retry-After: retry_after_secs`, `X-Rate-Limit-Problem: minute` and
    /// `X-MinLimit-Remaining: 0`, and are not processed. While a limit is set,
    /// `X-MinLimit-Remaining` counts down from `limit`.
    ///
    /// - The windows start empty at each call: the next `limit` calls per tenant pass.
    /// - A refused call takes no place in the window, so a tenant is free again 60 s
    ///   (of the fake's clock: [`FakeXero::advance_clock`] gets there at once) after
    ///   the calls that filled it. `Retry-After` is `retry_after_secs` regardless.
    /// - Tokens and tenants are checked first: a 401 or 403 wins over a 429, and takes
    ///   no place in the window. `/connections` and the identity endpoints are never
    ///   limited.
    /// - Refused calls still count in [`Counter::Api`] and in [`FakeXero::requests`]
    ///   (status 429).
    pub fn set_minute_limit(&self, limit: Option<usize>, retry_after_secs: u64) {
        self.state().set_minute_limit(limit, retry_after_secs);
    }

    /// Enforces Xero's other API limits (`None`: not enforced, the default), and sets the
    /// length of Xero's "minute" for every minute limit (60 s; a test can shorten it so that
    /// minute-limit tests take seconds). Every window starts empty.
    ///
    /// - `app_minute`: calls per window across tenants; beyond it 429 with
    ///   `X-Rate-Limit-Problem: appminute` and `Retry-After` until the oldest call leaves.
    /// - `day`: calls per tenant in a rolling 24 hours of the fake's clock; beyond it 429
    ///   with `X-Rate-Limit-Problem: day` and `Retry-After` until the oldest call is a day old.
    /// - `concurrent`: API requests in progress per tenant, from arrival to the end of the
    ///   answer (a [`Fault::Delay`] keeps a request in progress); beyond it 429 with
    ///   `X-Rate-Limit-Problem: concurrent` and `Retry-After: 1`, at once, not processed.
    ///
    /// Refused calls take no place in any window; the `X-…Limit-Remaining` headers report
    /// what is left of each enforced limit. The most requests ever in progress at once is
    /// counted whether or not a limit is set ([`FakeXero::max_in_progress`]).
    pub fn set_limits(
        &self,
        app_minute: Option<usize>,
        day: Option<usize>,
        window: Duration,
        concurrent: Option<usize>,
    ) {
        self.state().set_limits(app_minute, day, window, concurrent);
    }

    /// The most `/api.xro/2.0/…` requests ever in progress at once for one tenant.
    pub fn max_in_progress(&self) -> usize {
        self.state().max_in_progress
    }

    /// Makes every access token issued so far expired now, without moving the clock:
    /// the API and `/connections` answer 401 `TokenExpired: token expired at …` to
    /// them, although their `exp` claim says otherwise. Refresh tokens (and their grace
    /// windows) are untouched, and tokens issued afterwards live their 30 minutes.
    pub fn expire_access_tokens(&self) {
        self.state().expire_access_tokens();
    }

    /// Makes the API refuse every access token issued so far, before its expiry: the API and
    /// `/connections` answer them 401 `AuthenticationUnsuccessful`, Xero's answer for a token it
    /// does not accept (revoked, or from a clock that disagrees). Their `exp` claims are
    /// unchanged; tokens issued afterwards are accepted.
    pub fn refuse_access_tokens(&self) {
        self.state().refuse_access_tokens();
    }

    /// Makes every access token minted from now on live `secs` seconds (`expires_in` and the
    /// `exp` claim say so), instead of Xero's 1800: expiry tests then need no clock tricks.
    pub fn set_access_token_secs(&self, secs: u64) {
        self.state().access_token_secs = secs;
    }

    /// Where `refresh_token` stands now.
    pub fn refresh_token_status(&self, refresh_token: &str) -> RefreshTokenStatus {
        self.state().refresh_status(refresh_token)
    }

    /// Whether the API would accept this access token now (issued here, not expired).
    /// Access tokens are JWTs that Xero cannot revoke: a revocation does not make
    /// them invalid, but it removes the connections, so the API answers 403.
    pub fn access_token_valid(&self, access_token: &str) -> bool {
        matches!(
            self.state().check_access(access_token),
            state::AccessCheck::Valid { .. }
        )
    }

    /// Whether a retry inside the grace window returns the same pair as the first use
    /// (`true`) or a fresh pair (`false`, the default). Xero does not document which.
    pub fn set_grace_returns_same_pair(&self, same: bool) {
        self.state().grace_same_pair = same;
    }

    /// Makes API routes require their scope, as Xero does: a token without the scope of the
    /// area (`accounting.contacts` for `Contacts`, its `.read` twin for a `GET`, or the broad
    /// scope that covered it) gets 401 with `Detail` `AuthorizationUnsuccessful` and
    /// `WWW-Authenticate: Bearer error="insufficient_scope"` (what Xero's developer forum reports
    /// for a missing scope; unconfirmed in Xero's own documentation). Off by default: the older
    /// tests call routes with whatever scopes their tokens have.
    pub fn set_require_scopes(&self, on: bool) {
        self.state().require_scopes = on;
    }

    /// Makes every access token minted from now on exactly `len` bytes long (`None`: the
    /// usual size, some 1 KB), still JWT-shaped: header and claims as usual, a longer random
    /// signature. Real Xero tokens run to 1.2–1.6 KB, more with many granular scopes; this is
    /// how a test reaches a store's per-entry limit.
    pub fn set_access_token_len(&self, len: Option<usize>) {
        self.state().access_token_len = len;
    }

    /// What the fake user answers at the authorize endpoint.
    pub fn set_authorize_decision(&self, d: AuthorizeDecision) {
        self.state().decision = d;
    }
}

impl Drop for FakeXero {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
