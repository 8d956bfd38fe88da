//! Everything the fake remembers, and the token rules of Xero's identity service.
//!
//! All of it sits behind one `std::sync::Mutex`; handlers take the lock, do their work
//! without awaiting, and release it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::util::{
    fake_jwt, fake_jwt_of_len, normalize_scope, random_hex, random_uuid, scope_has, xero_datetime,
};
use crate::{
    AuthorizeDecision, Counter, DEFAULT_CONNECTION_ID, DEFAULT_TENANT_ID, DEFAULT_TENANT_NAME,
    Fault, IssuedTokens, RefreshTokenStatus, RequestRecord, Target, Tenant,
};

/// Access tokens live 30 minutes.
pub const ACCESS_TOKEN_SECS: u64 = 30 * 60;
/// A used refresh token may be retried for 30 minutes (Xero's grace period).
pub const GRACE_SECS: u64 = 30 * 60;
/// An unused refresh token expires after 60 days.
pub const REFRESH_UNUSED_SECS: u64 = 60 * 24 * 60 * 60;
/// Authorization codes live 5 minutes.
pub const CODE_SECS: u64 = 5 * 60;
/// id_tokens live 5 minutes (as Xero's do).
const ID_TOKEN_SECS: u64 = 5 * 60;

/// The fake user every authorisation is made by.
const USER_ID: &str = "0b3d8f2a-6c1e-4f7a-9d5b-2e8c4a6f1b3d";
const USER_SUB: &str = "7a1f3c5e9b2d4f6a8c0e1b3d5f7a9c2e";

/// A registered app.
pub struct Client {
    /// `None`: a public (PKCE) app.
    pub secret: Option<String>,
    /// Empty: any http(s) redirect URI is accepted; otherwise exact match required.
    pub redirect_uris: Vec<String>,
    /// An app created on or after 2 March 2026 (a custom connection from 29 April 2026): only
    /// granular scopes; a broad one is refused at every step.
    pub granular_only: bool,
}

/// The broad scopes Xero retires in favour of granular ones; a granular-only app is refused them.
pub const BROAD_SCOPES: &[&str] = &[
    "accounting.transactions",
    "accounting.transactions.read",
    "accounting.reports.read",
];

/// The first broad scope in the space-separated `scope`, if the app takes only granular ones.
pub fn refused_broad_scope<'a>(client: &Client, scope: &'a str) -> Option<&'a str> {
    client
        .granular_only
        .then(|| scope.split_whitespace().find(|s| BROAD_SCOPES.contains(s)))
        .flatten()
}

/// One authorisation's chain of refresh tokens.
struct Family {
    client_id: String,
    scope: String,
    revoked: bool,
    session: String,
    auth_event_id: String,
}

struct RefreshEntry {
    family: usize,
    /// When it was issued; it expires 60 days later unless used.
    created: u64,
    /// When it was first exchanged.
    used_at: Option<u64>,
    /// The response to the first exchange, replayed on grace retries when
    /// `grace_same_pair` is on.
    first_response: Option<Value>,
}

struct AccessEntry {
    expires_at: u64,
    /// Refused before its expiry ([`crate::FakeXero::refuse_access_tokens`]): the API answers
    /// 401 `AuthenticationUnsuccessful`, as Xero does for a token it does not accept.
    refused: bool,
    /// The scopes it carries, space-separated (its `scope` claim).
    scope: String,
    /// Issued by `client_credentials` (a Custom Connection): no tenant header needed.
    client_credentials: bool,
}

/// An authorization code handed out by the authorize endpoint.
pub struct CodeEntry {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub challenge: Option<String>,
    pub created: u64,
    pub used: bool,
}

/// The fake's whole state.
pub struct State {
    pub port: u16,
    clock_offset: Duration,
    pub clients: HashMap<String, Client>,
    pub tenants: Vec<Tenant>,
    /// Tenants whose connection a revocation removed; a new authorisation of the same
    /// user reconnects them (as the user would tick the same organisations again).
    disconnected: Vec<Tenant>,
    families: Vec<Family>,
    refresh: HashMap<String, RefreshEntry>,
    access: HashMap<String, AccessEntry>,
    pub codes: HashMap<String, CodeEntry>,
    one_shot: HashMap<Target, VecDeque<Fault>>,
    persistent: HashMap<Target, Fault>,
    counts: HashMap<Counter, usize>,
    pub requests: Vec<RequestRecord>,
    pub grace_same_pair: bool,
    pub decision: AuthorizeDecision,
    /// (minute number, API calls in it) and (day number, calls in it), for the
    /// rate-limit headers.
    api_minute: (u64, usize),
    api_day: (u64, usize),
    /// The enforced per-tenant minute limit and the `Retry-After` of its 429s.
    minute_limit: Option<(usize, u64)>,
    /// Per tenant (lower-case tenant id), the fake-clock times (milliseconds) of the API
    /// calls let through, oldest first; a sliding window of `rate_window`.
    api_window: HashMap<String, VecDeque<u64>>,
    /// The length of Xero's "minute" (60 s unless a test shortens it).
    rate_window: Duration,
    /// The enforced per-app minute limit, and the app's calls in the window (ms).
    app_minute_limit: Option<usize>,
    app_window: VecDeque<u64>,
    /// The enforced per-tenant day limit, and per tenant the calls of the last 24 hours (ms).
    day_limit: Option<usize>,
    day_window: HashMap<String, VecDeque<u64>>,
    /// The enforced limit of API requests in progress per tenant.
    concurrent_limit: Option<usize>,
    /// API requests in progress per tenant (lower-case id, or the header as sent), and the
    /// most ever seen at once for one tenant.
    in_progress: HashMap<String, usize>,
    pub max_in_progress: usize,
    /// Per tenant (lower-case tenant id), the bodies of `POST`/`PUT …/Contacts`, as
    /// received, in order.
    contacts: HashMap<String, Vec<Vec<u8>>>,
    /// The body of the most recent API request.
    pub last_api_body: Option<Vec<u8>>,
    /// Every user-grant token response minted, oldest first (for tests that must know the
    /// exact secrets a client handled, e.g. to search a memory image for them).
    pub issued: Vec<Value>,
    /// When set, every access token minted is exactly this long (see
    /// [`crate::FakeXero::set_access_token_len`]).
    pub access_token_len: Option<usize>,
    /// Seconds an access token minted from now on lives ([`ACCESS_TOKEN_SECS`] unless a test
    /// set it, [`crate::FakeXero::set_access_token_secs`]).
    pub access_token_secs: u64,
    /// API routes refuse a token without their scope (see
    /// [`crate::FakeXero::set_require_scopes`]).
    pub require_scopes: bool,
}

/// How long a call stays in a tenant's day window (Xero's day is a rolling 24 hours).
const DAY_WINDOW_MS: u64 = 86_400_000;

/// The result of a token grant: the JSON body, or an OAuth error code for a 400.
pub type GrantResult = Result<Value, &'static str>;

/// What an access token is worth to the API.
pub enum AccessCheck {
    Unknown,
    Expired(u64),
    Valid { client_credentials: bool },
}

impl State {
    pub fn new(port: u16) -> State {
        let mut st = State {
            port,
            clock_offset: Duration::ZERO,
            clients: HashMap::new(),
            tenants: Vec::new(),
            disconnected: Vec::new(),
            families: Vec::new(),
            refresh: HashMap::new(),
            access: HashMap::new(),
            codes: HashMap::new(),
            one_shot: HashMap::new(),
            persistent: HashMap::new(),
            counts: HashMap::new(),
            requests: Vec::new(),
            grace_same_pair: false,
            decision: AuthorizeDecision::Approve,
            api_minute: (0, 0),
            api_day: (0, 0),
            minute_limit: None,
            api_window: HashMap::new(),
            rate_window: Duration::from_secs(60),
            app_minute_limit: None,
            app_window: VecDeque::new(),
            day_limit: None,
            day_window: HashMap::new(),
            concurrent_limit: None,
            in_progress: HashMap::new(),
            max_in_progress: 0,
            contacts: HashMap::new(),
            last_api_body: None,
            issued: Vec::new(),
            access_token_len: None,
            access_token_secs: ACCESS_TOKEN_SECS,
            require_scopes: false,
        };
        let created = xero_datetime(st.now());
        st.tenants.push(Tenant {
            id: DEFAULT_CONNECTION_ID.to_string(),
            auth_event_id: "d99ecdfe-00d3-4a22-8e0c-2c4f5a7b1e3d".to_string(),
            tenant_id: DEFAULT_TENANT_ID.to_string(),
            tenant_name: DEFAULT_TENANT_NAME.to_string(),
            tenant_type: "ORGANISATION".to_string(),
            created_date_utc: created.clone(),
            updated_date_utc: created,
        });
        st
    }

    /// The fake's clock in unix seconds.
    pub fn now(&self) -> u64 {
        (SystemTime::now() + self.clock_offset)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// The fake's clock in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        (SystemTime::now() + self.clock_offset)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    pub fn advance_clock(&mut self, d: Duration) {
        self.clock_offset += d;
    }

    pub fn bump(&mut self, c: Counter) {
        *self.counts.entry(c).or_default() += 1;
    }

    pub fn count(&self, c: Counter) -> usize {
        self.counts.get(&c).copied().unwrap_or(0)
    }

    pub fn push_fault(&mut self, t: Target, f: Fault) {
        self.one_shot.entry(t).or_default().push_back(f);
    }

    pub fn set_persistent_fault(&mut self, t: Target, f: Option<Fault>) {
        match f {
            Some(f) => self.persistent.insert(t, f),
            None => self.persistent.remove(&t),
        };
    }

    /// The fault for one request to `target` (`None` for routes without their own
    /// target, which only `Target::Any` faults reach). One-shot faults come before
    /// persistent ones, and a specific target before `Any`.
    pub fn take_fault(&mut self, target: Option<Target>) -> Option<Fault> {
        let targets: Vec<Target> = target.into_iter().chain([Target::Any]).collect();
        for t in &targets {
            if let Some(f) = self.one_shot.get_mut(t).and_then(VecDeque::pop_front) {
                return Some(f);
            }
        }
        targets.iter().find_map(|t| self.persistent.get(t).cloned())
    }

    /// Registers one API call for the rate-limit counters; returns the three
    /// `X-…Limit-Remaining` values (minute per tenant, day per tenant, minute per app).
    /// These counters only feed the headers; the limits enforced are the ones
    /// [`State::set_minute_limit`] and [`State::set_limits`] set (or a `Fault::TooManyRequests`).
    pub fn api_call(&mut self) -> (usize, usize, usize) {
        let now = self.now();
        let (minute, day) = (now / 60, now / 86_400);
        if self.api_minute.0 != minute {
            self.api_minute = (minute, 0);
        }
        if self.api_day.0 != day {
            self.api_day = (day, 0);
        }
        self.api_minute.1 += 1;
        self.api_day.1 += 1;
        self.limits()
    }

    /// The current `X-…Limit-Remaining` values without counting a call.
    pub fn limits(&self) -> (usize, usize, usize) {
        (
            60usize.saturating_sub(self.api_minute.1),
            5000usize.saturating_sub(self.api_day.1),
            10_000usize.saturating_sub(self.api_minute.1),
        )
    }

    /// Sets (`Some`) or clears the enforced per-tenant minute limit. The windows start
    /// empty either way, so a test's next `limit` calls per tenant go through whatever
    /// it did before.
    pub fn set_minute_limit(&mut self, limit: Option<usize>, retry_after_secs: u64) {
        self.minute_limit = limit.map(|l| (l, retry_after_secs));
        self.api_window.clear();
    }

    /// Sets the app's minute limit, the tenants' day limit, the length of the "minute"
    /// and the limit of requests in progress; every window starts empty.
    pub fn set_limits(
        &mut self,
        app_minute: Option<usize>,
        day: Option<usize>,
        window: Duration,
        concurrent: Option<usize>,
    ) {
        self.app_minute_limit = app_minute;
        self.day_limit = day;
        self.rate_window = window.max(Duration::from_millis(1));
        self.concurrent_limit = concurrent;
        self.api_window.clear();
        self.app_window.clear();
        self.day_window.clear();
    }

    fn window_ms(&self) -> u64 {
        self.rate_window.as_millis() as u64
    }

    /// Lets one call to `tenant` (lower-case id) through the day, app-minute and minute
    /// limits and records it, or returns the `Retry-After` seconds and the
    /// `X-Rate-Limit-Problem` of the 429 it gets instead. A refused call takes no place in
    /// any window: the tenant is free again a window after the calls that filled it,
    /// however often the client knocked meanwhile.
    pub fn admit(&mut self, tenant: &str) -> Result<(), (u64, &'static str)> {
        let now = self.now_ms();
        let window = self.window_ms();
        let prune = |w: &mut VecDeque<u64>, len: u64| {
            while w.front().is_some_and(|&t| t + len <= now) {
                w.pop_front();
            }
        };
        // Seconds until the oldest call leaves its window, at least 1.
        let wait = |oldest: u64, len: u64| (oldest + len - now).div_ceil(1000).max(1);
        if let Some(limit) = self.day_limit {
            let w = self.day_window.entry(tenant.to_string()).or_default();
            prune(w, DAY_WINDOW_MS);
            if w.len() >= limit {
                let after = w.front().map_or(86_400, |&t| wait(t, DAY_WINDOW_MS));
                return Err((after, "day"));
            }
        }
        if let Some(limit) = self.app_minute_limit {
            prune(&mut self.app_window, window);
            if self.app_window.len() >= limit {
                let after = self.app_window.front().map_or(1, |&t| wait(t, window));
                return Err((after, "appminute"));
            }
        }
        if let Some((limit, retry_after)) = self.minute_limit {
            let w = self.api_window.entry(tenant.to_string()).or_default();
            prune(w, window);
            if w.len() >= limit {
                return Err((retry_after, "minute"));
            }
        }
        // Only enforced limits keep windows (a fake serving a long benchmark keeps none).
        if self.minute_limit.is_some() {
            self.api_window
                .entry(tenant.to_string())
                .or_default()
                .push_back(now);
        }
        if self.app_minute_limit.is_some() {
            self.app_window.push_back(now);
        }
        if self.day_limit.is_some() {
            self.day_window
                .entry(tenant.to_string())
                .or_default()
                .push_back(now);
        }
        Ok(())
    }

    /// One more API request in progress for `tenant`; `false` (and not counted) when that
    /// would pass the concurrency limit.
    pub fn enter(&mut self, tenant: &str) -> bool {
        let n = self.in_progress.entry(tenant.to_string()).or_default();
        if self.concurrent_limit.is_some_and(|limit| *n >= limit) {
            return false;
        }
        *n += 1;
        self.max_in_progress = self.max_in_progress.max(*n);
        true
    }

    /// One API request of `tenant` answered (or abandoned).
    pub fn leave(&mut self, tenant: &str) {
        if let Some(n) = self.in_progress.get_mut(tenant) {
            *n = n.saturating_sub(1);
        }
    }

    /// The `X-…Limit-Remaining` values for a call to `tenant` (lower-case id, if known):
    /// [`State::limits`], except that each enforced limit reports what is left of its window.
    pub fn limits_for(&self, tenant: Option<&str>) -> (usize, usize, usize) {
        let (mut minute, mut day, mut app) = self.limits();
        let now = self.now_ms();
        let window = self.window_ms();
        let used = |w: Option<&VecDeque<u64>>, len: u64| {
            w.map_or(0, |w| w.iter().filter(|&&t| t + len > now).count())
        };
        if let Some((limit, _)) = self.minute_limit {
            minute =
                limit.saturating_sub(used(tenant.and_then(|t| self.api_window.get(t)), window));
        }
        if let Some(limit) = self.day_limit {
            day = limit.saturating_sub(used(
                tenant.and_then(|t| self.day_window.get(t)),
                DAY_WINDOW_MS,
            ));
        }
        if let Some(limit) = self.app_minute_limit {
            app = limit.saturating_sub(used(Some(&self.app_window), window));
        }
        (minute, day, app)
    }

    // ---- contacts ----

    /// Keeps the body of a `POST`/`PUT …/Contacts` to `tenant` (lower-case id).
    pub fn store_contacts(&mut self, tenant: &str, body: Vec<u8>) {
        self.contacts
            .entry(tenant.to_string())
            .or_default()
            .push(body);
    }

    /// The bodies posted to `tenant` (lower-case id), in order.
    pub fn posted_contacts(&self, tenant: &str) -> &[Vec<u8>] {
        self.contacts.get(tenant).map_or(&[], Vec::as_slice)
    }

    // ---- tenants ----

    pub fn add_tenant(&mut self, tenant_id: &str, name: &str, tenant_type: &str) {
        let created = xero_datetime(self.now());
        self.tenants.push(Tenant {
            id: random_uuid(),
            auth_event_id: random_uuid(),
            tenant_id: tenant_id.to_string(),
            tenant_name: name.to_string(),
            tenant_type: tenant_type.to_string(),
            created_date_utc: created.clone(),
            updated_date_utc: created,
        });
    }

    pub fn clear_tenants(&mut self) {
        self.tenants.clear();
        self.disconnected.clear();
    }

    /// Removes one connection by its id; false when there is none.
    pub fn remove_connection(&mut self, id: &str) -> bool {
        let Some(i) = self
            .tenants
            .iter()
            .position(|t| t.id.eq_ignore_ascii_case(id))
        else {
            return false;
        };
        let t = self.tenants.remove(i);
        self.disconnected.push(t);
        true
    }

    /// A new user authorisation: connections removed by a revocation come back (new
    /// connection ids, as Xero creates new connections).
    fn reconnect(&mut self, auth_event_id: &str) {
        let now = xero_datetime(self.now());
        for mut t in std::mem::take(&mut self.disconnected) {
            t.id = random_uuid();
            t.auth_event_id = auth_event_id.to_string();
            t.updated_date_utc = now.clone();
            self.tenants.push(t);
        }
    }

    /// The connection a request with `Xero-Tenant-Id: header` is for.
    pub fn tenant_for(&self, header: Option<&str>, client_credentials: bool) -> Option<&Tenant> {
        match header {
            Some(h) => self
                .tenants
                .iter()
                .find(|t| t.tenant_id.eq_ignore_ascii_case(h.trim())),
            // A Custom Connection is authorised to exactly one organisation, so Xero
            // does not need the header there.
            None if client_credentials => self.tenants.first(),
            None => None,
        }
    }

    // ---- tokens ----

    /// Mints an access token (and, for user grants, id_token) for `client_id`.
    fn mint_access(&mut self, client_id: &str, scope: &str, family: Option<usize>) -> String {
        let now = self.now();
        let exp = now + self.access_token_secs;
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        let claims = match family {
            Some(f) => {
                let fam = &self.families[f];
                json!({
                    "nbf": now,
                    "exp": exp,
                    "iat": now,
                    "iss": "https://identity.xero.com",
                    "aud": "https://identity.xero.com/resources",
                    "client_id": client_id,
                    "sub": USER_SUB,
                    "auth_time": now,
                    "xero_userid": USER_ID,
                    "global_session_id": fam.session,
                    "sid": fam.session,
                    "jti": random_hex(32).to_uppercase(),
                    "authentication_event_id": fam.auth_event_id,
                    "scope": scopes,
                    "amr": ["pwd"],
                })
            }
            None => json!({
                "nbf": now,
                "exp": exp,
                "iss": "https://identity.xero.com",
                "aud": "https://identity.xero.com/resources",
                "client_id": client_id,
                "jti": random_hex(32).to_uppercase(),
                "authentication_event_id": random_uuid(),
                "scope": scopes,
            }),
        };
        let token = match self.access_token_len {
            Some(len) => fake_jwt_of_len(claims, len),
            None => fake_jwt(claims),
        };
        self.access.insert(
            token.clone(),
            AccessEntry {
                expires_at: exp,
                refused: false,
                scope: normalize_scope(scope),
                client_credentials: family.is_none(),
            },
        );
        token
    }

    fn mint_id_token(&self, client_id: &str, family: usize) -> String {
        let now = self.now();
        fake_jwt(json!({
            "nbf": now,
            "exp": now + ID_TOKEN_SECS,
            "iss": "https://identity.xero.com",
            "aud": client_id,
            "iat": now,
            "at_hash": random_hex(22),
            "sid": self.families[family].session,
            "sub": USER_SUB,
            "auth_time": now,
            "xero_userid": USER_ID,
            "global_session_id": self.families[family].session,
            "preferred_username": "demo.user@example.com",
            "email": "demo.user@example.com",
            "given_name": "Demo",
            "family_name": "User",
            "name": "Demo User",
        }))
    }

    /// A token response for a user grant in `family`: access token, a new refresh token
    /// of the family when the scope has `offline_access`, an id_token with `openid`.
    fn token_response(&mut self, family: usize) -> Value {
        let client_id = self.families[family].client_id.clone();
        let scope = self.families[family].scope.clone();
        let mut body = serde_json::Map::new();
        if scope_has(&scope, "openid") {
            body.insert(
                "id_token".into(),
                self.mint_id_token(&client_id, family).into(),
            );
        }
        let access = self.mint_access(&client_id, &scope, Some(family));
        body.insert("access_token".into(), access.into());
        body.insert("expires_in".into(), self.access_token_secs.into());
        body.insert("token_type".into(), "Bearer".into());
        if scope_has(&scope, "offline_access") {
            let rt = random_hex(64);
            self.refresh.insert(
                rt.clone(),
                RefreshEntry {
                    family,
                    created: self.now(),
                    used_at: None,
                    first_response: None,
                },
            );
            body.insert("refresh_token".into(), rt.into());
        }
        body.insert("scope".into(), scope.into());
        let body = Value::Object(body);
        self.issued.push(body.clone());
        body
    }

    /// A new authorisation by the user: a new refresh-token family.
    pub fn new_family(&mut self, client_id: &str, scope: &str) -> Value {
        let auth_event_id = random_uuid();
        self.families.push(Family {
            client_id: client_id.to_string(),
            scope: normalize_scope(scope),
            revoked: false,
            session: random_hex(32),
            auth_event_id: auth_event_id.clone(),
        });
        self.reconnect(&auth_event_id);
        self.token_response(self.families.len() - 1)
    }

    /// `grant_type=refresh_token` for an authenticated `client_id`.
    pub fn refresh_grant(&mut self, client_id: &str, token: &str) -> GrantResult {
        let now = self.now();
        let Some(entry) = self.refresh.get(token) else {
            return Err("invalid_grant");
        };
        let (family, created, used_at) = (entry.family, entry.created, entry.used_at);
        let fam = &self.families[family];
        if fam.client_id != client_id || fam.revoked {
            return Err("invalid_grant");
        }
        match used_at {
            None if now >= created + REFRESH_UNUSED_SECS => Err("invalid_grant"),
            None => {
                // First use: rotate. The old token now only lives through the grace window.
                let resp = self.token_response(family);
                let entry = self.refresh.get_mut(token).expect("present");
                entry.used_at = Some(now);
                entry.first_response = Some(resp.clone());
                Ok(resp)
            }
            Some(t) if now < t + GRACE_SECS => {
                // A retry inside the grace window. Whether real Xero returns the same pair
                // or a fresh one is not documented; both are offered. A fresh pair leaves
                // the pair handed out earlier valid too.
                if self.grace_same_pair
                    && let Some(first) = self
                        .refresh
                        .get(token)
                        .and_then(|e| e.first_response.clone())
                {
                    return Ok(first);
                }
                Ok(self.token_response(family))
            }
            Some(_) => Err("invalid_grant"),
        }
    }

    /// `grant_type=client_credentials` (Custom Connections): an access token only.
    pub fn client_credentials_grant(&mut self, client_id: &str, scope: Option<&str>) -> Value {
        let granular_only = self.clients.get(client_id).is_some_and(|c| c.granular_only);
        let scope = normalize_scope(scope.unwrap_or(if granular_only {
            "accounting.invoices accounting.contacts accounting.settings"
        } else {
            "accounting.transactions accounting.contacts accounting.settings"
        }));
        let access = self.mint_access(client_id, &scope, None);
        json!({
            "access_token": access,
            "expires_in": self.access_token_secs,
            "token_type": "Bearer",
            "scope": scope,
        })
    }

    /// Revokes the family of `token` if it is a refresh token of `client_id`, and
    /// removes all the user's connections (as Xero's revocation does). Anything else
    /// (unknown token, an access token, another client's token) is silently ignored,
    /// and answered 200 all the same (RFC 7009).
    pub fn revoke(&mut self, client_id: &str, token: &str) {
        let Some(entry) = self.refresh.get(token) else {
            return;
        };
        let fam = &mut self.families[entry.family];
        if fam.client_id != client_id {
            return;
        }
        fam.revoked = true;
        self.disconnected.append(&mut self.tenants);
    }

    pub fn refresh_status(&self, token: &str) -> RefreshTokenStatus {
        let Some(entry) = self.refresh.get(token) else {
            return RefreshTokenStatus::Unknown;
        };
        let now = self.now();
        if self.families[entry.family].revoked {
            return RefreshTokenStatus::Revoked;
        }
        match entry.used_at {
            Some(t) if now < t + GRACE_SECS => RefreshTokenStatus::UsedInGrace,
            Some(_) => RefreshTokenStatus::Spent,
            None if now >= entry.created + REFRESH_UNUSED_SECS => RefreshTokenStatus::Expired,
            None => RefreshTokenStatus::Active,
        }
    }

    /// Makes every access token issued so far expired as of now, without moving the
    /// clock: refresh tokens, grace windows and tokens minted later are unaffected.
    pub fn expire_access_tokens(&mut self) {
        let now = self.now();
        for a in self.access.values_mut() {
            a.expires_at = a.expires_at.min(now);
        }
    }

    /// The scopes an access token carries, space-separated; `None` for a token never issued.
    pub fn access_scope(&self, token: &str) -> Option<&str> {
        self.access.get(token).map(|a| a.scope.as_str())
    }

    /// Makes every access token issued so far refused (see [`AccessEntry::refused`]).
    pub fn refuse_access_tokens(&mut self) {
        for a in self.access.values_mut() {
            a.refused = true;
        }
    }

    pub fn check_access(&self, token: &str) -> AccessCheck {
        match self.access.get(token) {
            None => AccessCheck::Unknown,
            Some(a) if a.refused => AccessCheck::Unknown,
            Some(a) if self.now() >= a.expires_at => AccessCheck::Expired(a.expires_at),
            Some(a) => AccessCheck::Valid {
                client_credentials: a.client_credentials,
            },
        }
    }
}

/// Converts a token response into the library's [`IssuedTokens`]; missing tokens
/// (no `offline_access`, no `openid`) become empty strings.
pub fn issued(v: &Value) -> IssuedTokens {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    IssuedTokens {
        access_token: s("access_token"),
        refresh_token: s("refresh_token"),
        id_token: s("id_token"),
        expires_in: v
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or_default(),
        scope: s("scope"),
    }
}

/// Whether a token with the space-separated `scope` may make a `method` call to `rest` (the
/// path after `/api.xro/2.0/`): Xero's scope for the area, its `.read` twin for `GET`, or the
/// broad scope that covered it before 2026. Areas not listed here need no scope.
pub fn scope_allows(scope: &str, rest: &str, method: &str) -> bool {
    let mut parts = rest.split('/').map(str::to_ascii_lowercase);
    let first = parts.next().unwrap_or_default();
    let second = parts.next().unwrap_or_default();
    let any: &[&str] = match first.as_str() {
        "contacts" | "contactgroups" => &["accounting.contacts"],
        "organisation" | "accounts" | "taxrates" | "currencies" | "trackingcategories"
        | "brandingthemes" | "users" => &["accounting.settings"],
        "invoices" | "creditnotes" | "quotes" | "purchaseorders" | "repeatinginvoices"
        | "linkedtransactions" => &["accounting.invoices", "accounting.transactions"],
        "payments" | "batchpayments" | "overpayments" | "prepayments" => {
            &["accounting.payments", "accounting.transactions"]
        }
        "banktransactions" | "banktransfers" => {
            &["accounting.banktransactions", "accounting.transactions"]
        }
        "manualjournals" => &["accounting.manualjournals", "accounting.transactions"],
        "items" => &["accounting.invoices", "accounting.settings"],
        "journals" => &["accounting.journals.read"],
        "reports" => match second.as_str() {
            "agedpayablesbycontact" | "agedreceivablesbycontact" => {
                &["accounting.reports.aged.read", "accounting.reports.read"]
            }
            "balancesheet" => &[
                "accounting.reports.balancesheet.read",
                "accounting.reports.read",
            ],
            "profitandloss" => &[
                "accounting.reports.profitandloss.read",
                "accounting.reports.read",
            ],
            "trialbalance" => &[
                "accounting.reports.trialbalance.read",
                "accounting.reports.read",
            ],
            _ => &["accounting.reports.read"],
        },
        _ => return true,
    };
    let reading = method == "GET";
    any.iter().any(|needed| {
        scope_has(scope, needed)
            || (reading
                && !needed.ends_with(".read")
                && scope_has(scope, &format!("{needed}.read")))
    })
}
