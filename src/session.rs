//! A profile's session: reading and writing its token set, and the refresh protocol.
//!
//! The protocol (DESIGN.md, "The refresh protocol"):
//! 1. take the profile's cross-process lock (bounded wait);
//! 2. re-read the token set: another process may have refreshed while we waited;
//! 3. POST the refresh; on timeout, connection error, 5xx, 429 or an unreadable answer the
//!    stored set is untouched and the same refresh token is retried (Xero's 30-minute grace);
//! 4. write the new set to the keychain **before** anything sees the new access token;
//! 5. a response without `refresh_token` keeps the old one; `invalid_grant` deletes nothing;
//! 6. release the lock (and the lease) once every store call made under them has ended.
//!
//! Steps 1 and 6 are [`RefreshGuard`]'s: one guard for the lock, the lease and the
//! unsaved-refresh notes.
//!
//! On a store shared by many machines (the vault store) the lock queues this machine's
//! processes only; after it, a **lease** taken in the store queues the machines (others wait
//! for the set to change or the lease to expire, judged on the store's clock), the set is read
//! again under it, and step 4's write is conditional on the version read: a conflict means
//! another machine stored a newer set, which is used. The lease carries the time of a refresh
//! sent and never saved, as the lock file does on one machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::config::{Paths, Profile};
use crate::error::{Error, Result};
use crate::failpoints::crash_point;
use crate::guard::{Acquired, RefreshGuard};
use crate::limits::{Answer, Limiter};
use crate::oauth::{self, AppCredentials, TokenError, TokenResponse};
use crate::secret::{ExposeSecret, FormBody, parse_secret_input};
use crate::store::{Store, Written, client_secret_account, split};
use crate::token_set::TokenSet;

/// The default margin: a token that expires within 5 minutes is refreshed first.
pub const DEFAULT_MARGIN_SECS: i64 = 300;

/// How many times one refresh is attempted before giving up with exit 6.
const REFRESH_ATTEMPTS: u32 = 3;
/// How many times a refreshed set's write is attempted before giving up with exit 5.
const STORE_WRITE_ATTEMPTS: u32 = 3;
/// The longest `Retry-After` honoured inside one command.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long to wait for another process's refresh before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The time, injectable for tests.
pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// What a refresh did.
#[derive(Debug)]
pub struct Refreshed {
    /// The token set now stored.
    pub token_set: TokenSet,
    /// True when this call made the request; false when the stored set was already good
    /// (another process refreshed while we waited for the lock).
    pub requested: bool,
}

/// One profile's tokens and the flows around them.
pub struct Session {
    profile: Profile,
    paths: Paths,
    store: Store,
    clock: Arc<dyn Clock>,
    http: OnceCell<reqwest::Client>,
    /// Serialises refreshes inside this process, so many tasks make one request.
    local: tokio::sync::Mutex<()>,
    margin_secs: i64,
    tenant: Option<String>,
    max_wait: Duration,
    /// Xero's limits, kept before sending; `None` when the program keeps them itself.
    limiter: Option<Limiter>,
    /// A newer set Xero issued that the store would not take (see [`Session::serving_unsaved`]).
    unsaved: std::sync::Mutex<Option<Unsaved>>,
    /// Whether an unsaved set's access token is handed out.
    serve_unsaved: bool,
    /// Whether stderr was told of an unsaved set.
    told_unsaved: std::sync::atomic::AtomicBool,
    /// Whether stderr was told that the rate-limit ledger could not be written.
    told_ledger: std::sync::atomic::AtomicBool,
}

impl Session {
    /// A session for `profile`, keeping secrets in `store`.
    pub fn new(profile: Profile, paths: Paths, store: Store, clock: Arc<dyn Clock>) -> Self {
        let limiter = Limiter::for_profile(&profile, &paths);
        Session {
            limiter,
            tenant: profile.default_tenant.clone(),
            profile,
            paths,
            store,
            clock,
            http: OnceCell::new(),
            local: tokio::sync::Mutex::new(()),
            margin_secs: DEFAULT_MARGIN_SECS,
            max_wait: Duration::from_secs(60),
            unsaved: std::sync::Mutex::new(None),
            serve_unsaved: false,
            told_unsaved: std::sync::atomic::AtomicBool::new(false),
            told_ledger: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A session for the named profile as the command-line tool sees it: `config.toml` in the
    /// platform folder (or `XERO_AUTH_CONFIG_DIR`), environment overrides, the profile's store
    /// (for `store = "file"`, the passphrase comes from `XERO_AUTH_PASSPHRASE` or the terminal).
    pub fn from_profile(name: &str) -> Result<Self> {
        let env = |key: &str| std::env::var(key).ok();
        let paths = Paths::from_env(&env)?;
        let config = crate::config::Config::load(&paths.config_file())?;
        let profile = config.profile(name, &env)?;
        let store = crate::store::split::limit_for_tests(Store::for_profile(&profile, &paths));
        Ok(Session::new(profile, paths, store, Arc::new(SystemClock)))
    }

    /// Access tokens handed out stay valid for at least this many seconds (default 300).
    pub fn with_margin(mut self, secs: u64) -> Self {
        self.margin_secs = secs.min(1500) as i64;
        self
    }

    /// The tenant [`Session::send`] addresses (default: the profile's default tenant).
    pub fn with_tenant(mut self, tenant: Option<String>) -> Self {
        if tenant.is_some() {
            self.tenant = tenant;
        }
        self
    }

    /// The longest total wait [`Session::send`] spends on `Retry-After` (default 60 s).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        // At most a year: the deadline is computed from it (`--max-wait` takes any number).
        self.max_wait = max_wait.min(Duration::from_secs(365 * 86_400));
        self
    }

    /// For a long-running command that hands tokens out (`exec --server`, `mcp`): when Xero
    /// issued a new set and the store would not take it, the set is kept in this process's
    /// memory and its access token handed out (Xero has already rotated the refresh token, so
    /// the stored one is spent but for its 30-minute grace window); every later refresh or token
    /// request starts from it and retries the write first. Without it, such a refresh fails with
    /// exit 5 (the set is still kept for the next refresh in this process).
    pub fn serving_unsaved(mut self) -> Self {
        self.serve_unsaved = true;
        self
    }

    /// Whether this process holds a newer token set that the store has not taken yet (see
    /// [`Session::serving_unsaved`]).
    pub fn has_unsaved_token_set(&self) -> bool {
        self.unsaved_lock().is_some()
    }

    /// For a long-running command about to end: one more attempt (under the guard) at storing a
    /// token set kept unsaved, which this process's end would otherwise lose (after Xero's
    /// grace window the stored refresh token no longer works). Says on stderr whether it was
    /// saved. Nothing to do, and no request, when no set is unsaved.
    pub async fn save_unsaved(&self) {
        if !self.serve_unsaved || !self.has_unsaved_token_set() {
            return;
        }
        // Any set is "valid enough": the protocol's unsaved branch writes the kept set first,
        // and a set it serves is never refreshed here.
        let _ = self.refresh_with(Need::ValidFor(i64::MIN)).await;
        if self.has_unsaved_token_set() {
            tracing::warn!(
                "profile '{}': Xero's newest token set could not be saved in {} before this command ended; the stored refresh token stays usable for 30 minutes after it was refreshed: fix the store and run `{}` within that time",
                self.profile.name,
                self.store.describe(),
                crate::hint::command(&self.profile.name, "refresh")
            );
        }
    }

    /// Sends without keeping Xero's limits (concurrency, per-minute budgets): for a program
    /// that does its own limiting. `Retry-After` on a 429 is still honoured.
    pub fn without_rate_limits(mut self) -> Self {
        self.limiter = None;
        self
    }

    /// The tenant requests are sent to, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// An access token valid for at least the margin, refreshed through the refresh protocol
    /// when needed (one refresh for any number of concurrent callers, in this process and others).
    pub async fn access_token(&self) -> Result<crate::secret::AccessToken> {
        let set = self.valid_token_set(self.margin_secs).await?;
        set.into_access_token(&self.profile.name)
    }

    /// Sends `request` with `Authorization: Bearer …`, `Xero-Tenant-Id` (unless the request
    /// sets it) and `Accept: application/json`. On a 401 it refreshes once (through the refresh
    /// protocol) and retries once; a second 401 is returned as it is, never retried again.
    ///
    /// Xero's limits are kept before sending ([`crate::limits`]): at most N requests in
    /// progress per tenant and the per-minute budgets, shared with every process of the user;
    /// waiting for them counts in the session's `max_wait`. A 429 for the minute, app-minute
    /// or concurrency limit waits `Retry-After` (within `max_wait`, else [`Error::Temporary`]
    /// without waiting) and retries once; a 429 for the day limit is [`Error::DayLimit`] at
    /// once, without a retry.
    ///
    /// The request body must be replayable (bytes, not a stream).
    ///
    /// What it guarantees, whoever built the request: the access token goes only to the origin
    /// (scheme, host, port) of the profile's `api_url` or `connections_url`, and never to a URL
    /// with a user name or password in it — anything else is refused with
    /// [`Error::InvalidInput`] before the token is even read
    /// ([`crate::xero::check_bearer_target`]; reqwest itself moves a URL's user info into an
    /// `Authorization` header when the request is built, which the bearer then replaces). The request is sent with the session's own client
    /// ([`Session::http`]), not the one that built it: no redirects followed, no pooled
    /// connection, and no proxy for a loopback URL ([`crate::http::client`]).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderName, HeaderValue};
        let (_, built) = request.build_split();
        let template = built.map_err(|e| {
            Error::InvalidInput(format!(
                "invalid request: {}",
                crate::http::describe_transport(&e)
            ))
        })?;
        crate::xero::check_bearer_target(&self.profile.endpoints, template.url()).map_err(
            |why| {
                Error::InvalidInput(format!(
                    "refusing to send the access token: the request {why}"
                ))
            },
        )?;
        let client = self.http().await?;
        let mut used = self.valid_token_set(self.margin_secs).await?;
        let mut refreshed = false;
        let mut retried_429 = false;
        // `max_wait` is at most a year (with_max_wait), so this cannot overflow.
        let deadline = Instant::now() + self.max_wait;
        loop {
            let mut req = template.try_clone().ok_or_else(|| {
                Error::InvalidInput(
                    "the request body is a stream and cannot be sent again; give it as bytes"
                        .into(),
                )
            })?;
            let token = used.require_access_token(&self.profile.name)?;
            let headers = req.headers_mut();
            headers.insert(
                AUTHORIZATION,
                crate::xero::bearer(&self.profile.name, token.expose_secret())?,
            );
            if !headers.contains_key(ACCEPT) {
                headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
            }
            let tenant_header = HeaderName::from_static("xero-tenant-id");
            if let Some(tenant) = &self.tenant
                && !headers.contains_key(&tenant_header)
            {
                let value = HeaderValue::from_str(tenant).map_err(|_| {
                    Error::InvalidInput(format!("'{tenant}' is not a valid tenant id"))
                })?;
                headers.insert(tenant_header, value);
            }
            let url = req.url().clone();
            let method = req.method().clone();
            let tenant = req
                .headers()
                .get("xero-tenant-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let permit = match &self.limiter {
                Some(limiter) => Some(limiter.admit(tenant.as_deref(), deadline).await?),
                None => None,
            };
            let response = client.execute(req).await.map_err(|e| Error::Temporary {
                what: format!("{method} {}", crate::config::shown(&url)),
                cause: crate::http::describe_transport(&e),
                hint: None,
            })?;
            let answer = Answer::new(response.status().as_u16(), response.headers());
            // The call was made (it may have created something at Xero): a ledger that cannot
            // be written only costs the next calls their pacing, and must not turn the answer
            // into an error that a script would retry into a duplicate.
            if let Some(permit) = permit
                && let Err(e) = permit.answered(&answer)
                && !self
                    .told_ledger
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                tracing::warn!(
                    "the answer to {method} {} came back, but the rate-limit ledger could not be updated ({e}); calls are paced without it until it can",
                    crate::config::shown(&url)
                );
            }
            match response.status().as_u16() {
                401 if !refreshed => {
                    tracing::info!(%url, "401 from the API: refreshing once and retrying");
                    refreshed = true;
                    used = self.refresh_with(Need::NewerThan(used)).await?.token_set;
                }
                429 if answer.is_day_limit() => {
                    let after = answer.retry_after.unwrap_or(Duration::from_secs(86_400));
                    return Err(Error::DayLimit {
                        tenant: tenant.unwrap_or_default(),
                        per_day: self.profile.rate_limits.per_day,
                        resets_at: self
                            .now()
                            .saturating_add(i64::try_from(after.as_secs()).unwrap_or(i64::MAX)),
                    });
                }
                429 => {
                    let retry_after = answer.retry_after.unwrap_or(Duration::from_secs(1));
                    let problem = answer.problem.as_deref().unwrap_or("unnamed");
                    let refuse = |why: String| Error::Temporary {
                        what: format!("{method} {}", crate::config::shown(&url)),
                        cause: format!(
                            "HTTP 429 Too Many Requests ({problem} limit), Retry-After {} s",
                            retry_after.as_secs()
                        ),
                        hint: Some(why),
                    };
                    if retried_429 {
                        return Err(refuse(
                            "Xero refused the retry too; other programs of this app are using its limits".into(),
                        ));
                    }
                    // Checked: Retry-After is the server's number, up to u64::MAX seconds.
                    if Instant::now()
                        .checked_add(retry_after)
                        .is_none_or(|then| then > deadline)
                    {
                        return Err(refuse(format!(
                            "waiting longer than {} s in all was not allowed (--max-wait)",
                            self.max_wait.as_secs()
                        )));
                    }
                    // Said without -v: the command would otherwise seem to hang.
                    tracing::warn!(
                        "Xero's {problem} limit was reached at {url} (429): waiting {} s, then \
                         trying once more",
                        retry_after.as_secs()
                    );
                    tokio::time::sleep(retry_after).await;
                    retried_429 = true;
                }
                _ => return Ok(response),
            }
        }
    }

    /// The profile this session serves.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The store holding this profile's secrets.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current time, from the session's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The HTTP client, built on first use only.
    pub async fn http(&self) -> Result<&reqwest::Client> {
        self.http
            .get_or_try_init(|| async {
                crate::http::client(&self.profile).map_err(|e| {
                    Error::InvalidInput(format!(
                        "cannot set up HTTPS: {}",
                        crate::http::describe_transport(&e)
                    ))
                })
            })
            .await
    }

    /// The stored token set, if any. On a store with a per-entry limit its access token may come
    /// from entries of its own ([`crate::store::split`]); when those cannot be used the set comes
    /// back without one, and the next use refreshes.
    pub async fn stored_token_set(&self) -> Result<Option<TokenSet>> {
        split::load(&self.store, &self.profile.name).await
    }

    /// The stored token set, or exit 3 when there is none.
    pub async fn require_token_set(&self) -> Result<TokenSet> {
        self.stored_token_set()
            .await?
            .ok_or_else(|| self.no_token_set())
    }

    /// Exit 3 unless a token set is stored, found by a lookup that reads no secret (and asks the
    /// file store for no passphrase): for a command that would otherwise stop at something else
    /// first — `api` at a missing tenant — when nothing it could do would work without tokens.
    pub async fn require_token_set_stored(&self) -> Result<()> {
        let account = crate::store::token_set_account(&self.profile.name);
        match self.store.contains(&account).await? {
            true => Ok(()),
            false => Err(self.no_token_set()),
        }
    }

    /// The error for a profile with no token set stored (exit 3).
    ///
    /// On a store that several machines share, the set may have been there and gone: another
    /// machine moved the profile out of it or logged out. The message names where it was looked
    /// for, and that a login here connects every machine that shares it.
    pub fn no_token_set(&self) -> Error {
        let name = &self.profile.name;
        let login = crate::hint::command(name, "login");
        let import = crate::hint::command(name, "import FILE");
        let hint = match self.store.shared_entries(name) {
            Some(entries) => format!(
                "nothing is stored under {entries}, which every machine using the profile \
                 shares. If it worked before, another machine may have moved the profile out of \
                 it (a store move) or logged it out: ask whoever manages the \
                 connection. To connect it again for every machine that shares it, run {login} \
                 or {import} here"
            ),
            None => format!("run {login}, or {import} to move a token file into its store"),
        };
        Error::NothingStored {
            profile: name.clone(),
            what: "token set",
            hint,
        }
    }

    /// Writes `set` under the profile's `guard` (held until the write has finished, even if this
    /// call is given up on): the refresh token always in one keychain write. On a store with a
    /// per-entry limit a set too large for one entry has its access token written first, in
    /// entries of its own ([`crate::store::split`]).
    pub async fn store_token_set(&self, set: &TokenSet, guard: &RefreshGuard) -> Result<()> {
        self.save_token_set(guard.store(), set).await
    }

    async fn save_token_set(&self, held: &Store, set: &TokenSet) -> Result<()> {
        let label = format!("xero-auth token set ({})", self.profile.name);
        split::save(held, &self.profile.name, &label, set).await
    }

    /// Asks the store now for what writing the token set will need from a person (the file
    /// store's passphrase, checked against the store), so that nobody is asked after Xero has
    /// issued tokens that cannot wait: `login` calls it before its flow starts.
    pub async fn prepare_to_store(&self) -> Result<()> {
        self.store
            .prepare_write(&crate::store::token_set_account(&self.profile.name))
            .await
    }

    /// The app's credentials: the client id from the config, the secret from the keychain
    /// (none for PKCE apps).
    pub async fn app_credentials(&self) -> Result<AppCredentials> {
        let client_id = self
            .profile
            .client_id
            .clone()
            .ok_or_else(|| Error::NothingStored {
                profile: self.profile.name.clone(),
                what: "client id",
                hint: format!(
                    "run {} with the id from developer.xero.com",
                    crate::hint::command(&self.profile.name, "client set --client-id ID"),
                ),
            })?;
        let client_secret = match self
            .store
            .get(&client_secret_account(&self.profile.name))
            .await?
        {
            None => None,
            Some(bytes) => Some(parse_secret_input(&bytes, "stored client secret").map_err(
                |why| Error::StoredFormat {
                    profile: self.profile.name.clone(),
                    message: format!(
                        "client secret is unusable ({why}); run {} again",
                        crate::hint::command(&self.profile.name, "client set --client-id ID")
                    ),
                },
            )?),
        };
        Ok(AppCredentials {
            client_id,
            client_secret,
        })
    }

    /// A token set whose access token stays valid for more than `margin_secs`, refreshing
    /// through the protocol only when the stored one does not. Makes no request otherwise.
    pub async fn valid_token_set(&self, margin_secs: i64) -> Result<TokenSet> {
        let stored = self.require_token_set().await?;
        // A set kept unsaved is newer than the stored one: the protocol retries its write.
        if !self.has_unsaved_token_set() && stored.access_valid_for(self.now(), margin_secs) {
            return Ok(stored);
        }
        Ok(self
            .refresh_with(Need::ValidFor(margin_secs))
            .await?
            .token_set)
    }

    /// Refreshes now, whatever the access token's expiry: `xero-auth refresh`. When another
    /// process refreshes while this one waits for the lock, its result is used instead of a
    /// second request.
    pub async fn force_refresh(&self) -> Result<Refreshed> {
        let seen = self.require_token_set().await?;
        self.refresh_with(Need::NewerThan(seen)).await
    }

    async fn refresh_with(&self, need: Need) -> Result<Refreshed> {
        let _local = self.local.lock().await;
        let name = &self.profile.name;
        let need = &need;
        let acquired = RefreshGuard::acquire(&self.paths, name, &self.store, |store| {
            Box::pin(async move {
                let current = self.current_set(&store).await?;
                let done = self.done_elsewhere(need, &current.set) && current.unsaved.is_none();
                Ok((current, done))
            })
        })
        .await?;
        let (guard, current) = match acquired {
            Acquired::Settled(current) => {
                tracing::debug!(profile = %name, "token set already refreshed by another process");
                return Ok(Refreshed {
                    token_set: current.set,
                    requested: false,
                });
            }
            Acquired::Held(guard, current) => (guard, current),
        };
        let Current { set, unsaved } = current;
        let Some(from) = unsaved else {
            let stored = copy_set(&set);
            return self.refresh_locked(set, stored, guard).await;
        };
        // A newer set this process could not store: its write is retried first.
        match self.store_refreshed(guard.store(), &set).await {
            Ok(Written::Changed) => {
                // Another machine stored a set since this one was read: it is newer, and used.
                self.unsaved_lock().take();
                tracing::warn!(profile = %name, "the refreshed token set this process kept in memory was replaced in the store by another machine; using the stored one");
                guard.saved().await;
                Ok(Refreshed {
                    token_set: self.require_token_set().await?,
                    requested: false,
                })
            }
            Ok(Written::Stored) => {
                self.unsaved_lock().take();
                // Both notes: the lease's too, or the next holder would take this saved refresh
                // for one never saved.
                guard.clear_notes().await;
                tracing::warn!(profile = %name, "the refreshed token set this process kept in memory is saved in {} now", self.store.describe());
                if self.done_elsewhere(need, &set) {
                    guard.saved().await;
                    return Ok(Refreshed {
                        token_set: set,
                        requested: false,
                    });
                }
                let stored = copy_set(&set);
                self.refresh_locked(set, stored, guard).await
            }
            Err(e) => {
                tracing::debug!(profile = %name, "the token set is still unsaved: {e}");
                if self.serve_unsaved && self.done_elsewhere(need, &set) {
                    guard.end().await;
                    return Ok(Refreshed {
                        token_set: set,
                        requested: false,
                    });
                }
                // Its refresh token is the live one: the next refresh starts from it, and the
                // store still holds `from` (what a newer unsaved set replaces).
                self.refresh_locked(set, from, guard).await
            }
        }
    }

    /// The set to refresh from, read through `store` under the lock: the stored one, or a newer
    /// one this process could not store while the stored one is still the set it replaced.
    async fn current_set(&self, store: &Store) -> Result<Current> {
        let stored = split::load(store, &self.profile.name)
            .await?
            .ok_or_else(|| self.no_token_set())?;
        let mut unsaved = self.unsaved_lock();
        match unsaved.as_ref() {
            Some(kept) if stored.same_tokens(&kept.from) => Ok(Current {
                set: copy_set(&kept.set),
                unsaved: Some(copy_set(&kept.from)),
            }),
            Some(_) => {
                // Another process stored a set since: it was refreshed from the live refresh
                // token (inside Xero's grace window) or replaced by a login; it wins.
                unsaved.take();
                tracing::warn!(profile = %self.profile.name, "the refreshed token set this process kept in memory was replaced in the store by another process; using the stored one");
                Ok(Current {
                    set: stored,
                    unsaved: None,
                })
            }
            None => Ok(Current {
                set: stored,
                unsaved: None,
            }),
        }
    }

    fn unsaved_lock(&self) -> std::sync::MutexGuard<'_, Option<Unsaved>> {
        self.unsaved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `current`, found under the lock, already meets `need`.
    fn done_elsewhere(&self, need: &Need, current: &TokenSet) -> bool {
        match need {
            Need::ValidFor(margin) => current.access_valid_for(self.now(), *margin),
            // Newer, and usable: a set replaced by one without an access token (an import of
            // a file without an expiry) still needs this refresh.
            Need::NewerThan(seen) => {
                !current.same_tokens(seen) && current.access_valid_for(self.now(), self.margin_secs)
            }
        }
    }

    /// How long the refresh lease must last, from the moment a request is sent, if its holder
    /// cannot renew it any more (it ended): one request to Xero and every attempt at the write
    /// after it (a write that outlived its timeout may still be on its way), and a margin.
    fn sending_lease_ttl(&self) -> Duration {
        self.profile.http_timeout
            + self.profile.store_timeout * STORE_WRITE_ATTEMPTS
            + Duration::from_secs(10)
    }

    /// Steps 3 to 5 of the protocol, under the guard (the lock, and the lease on a shared
    /// store), for `current` as read there.
    ///
    /// `stored` is the set the store holds now (`current` itself, unless `current` is a newer set
    /// this process could not store): a set this refresh cannot store is kept as replacing it.
    async fn refresh_locked(
        &self,
        current: TokenSet,
        stored: TokenSet,
        guard: RefreshGuard,
    ) -> Result<Refreshed> {
        let app = match self.app_credentials().await {
            Ok(app) => app,
            Err(e) => {
                guard.end().await;
                return Err(e);
            }
        };
        // Keep the earliest unsaved send: Xero's grace window runs from the token's first use.
        // On a shared store an earlier holder may have been another machine.
        let unsaved_before = guard.unsaved_refresh_sent_at().await;
        let first_sent = unsaved_before.unwrap_or_else(|| self.now());
        // Into the lease first (renewing it for as long as the request and the writes may take),
        // then the lock file: a lease that could not be written sent nothing.
        if let Err(e) = guard
            .note_refresh_sent(first_sent, self.sending_lease_ttl())
            .await
        {
            guard.end().await;
            return Err(e);
        }
        let rotating = current.refresh_token.is_some();
        let posted = self.post_refresh(&app, &current, &guard).await;
        let response = match posted {
            Ok(response) => response,
            Err(e) => {
                let failed = RefreshFailure {
                    rotating,
                    unsaved_before,
                    first_sent,
                };
                return Err(self.refresh_failed(e, failed, guard).await);
            }
        };
        crash_point("refresh-response-parsed");
        // Xero answered: the lease is renewed before the write, for its whole time, so that a
        // slow answer cannot leave the write without it. A lease lost here does not stop the
        // write: it is conditional on the set read (check-and-set), so it cannot replace a set
        // another machine stored meanwhile.
        if let Err(e) = guard.renew().await {
            tracing::warn!(profile = %self.profile.name, "renewing the refresh lease after Xero answered failed: {e}");
        }

        let from = stored;
        let new_set = current.after_refresh(response, self.now());
        let stored = match self.store_refreshed(guard.store(), &new_set).await {
            Ok(stored) => stored,
            Err(e) => {
                // The note of the unsaved refresh stays, in the lock file and in the lease.
                guard.end().await;
                return self.keep_unsaved(from, new_set, e);
            }
        };
        self.unsaved_lock().take();
        guard.saved().await;
        crash_point("refresh-stored");
        let Written::Changed = stored else {
            tracing::info!(profile = %self.profile.name, "refreshed and stored the token set");
            return Ok(Refreshed {
                token_set: new_set,
                requested: true,
            });
        };
        // Another machine wrote a newer set since this one read it (check-and-set refused this
        // write): that set is the one kept, and the one used. Its refresh token is the store's.
        tracing::warn!(profile = %self.profile.name, "the token set was replaced by another machine during this refresh; using the newer set");
        Ok(Refreshed {
            token_set: self.require_token_set().await?,
            requested: true,
        })
    }

    /// Ends `guard` after a refresh that brought no tokens, and turns `error` into what it means
    /// for the stored refresh token.
    ///
    /// The note of an unsaved refresh is kept only while a refresh with the stored token may have
    /// been carried out: this run's, when an attempt's answer was lost (a timeout or a reset
    /// after sending, an answer cut short, a gateway's 502 or 504), or an earlier run's, noted
    /// before this one. Every other failure proves this run's requests spent nothing: a
    /// connection never opened, an answer that says the request was not done (429, 408, another
    /// 5xx), or an error answer from the token endpoint (`invalid_client`, `invalid_grant`, any
    /// OAuth error or other 4xx: Xero refused the request, it did not rotate the token). Then,
    /// with no earlier note, the note this run wrote is cleared, so that a later failure is not
    /// reported as a refresh that "may have reached Xero".
    async fn refresh_failed(
        &self,
        error: Error,
        failed: RefreshFailure,
        guard: RefreshGuard,
    ) -> Error {
        let RefreshFailure {
            rotating,
            unsaved_before,
            first_sent,
        } = failed;
        if guard.answer_lost() || unsaved_before.is_some() {
            guard.end().await;
        } else {
            guard.saved().await;
        }
        match error {
            // A refresh that may have reached Xero leaves the stored refresh token usable only
            // inside the grace window from its first use: the message says until when, rather
            // than that the stored tokens "stay usable".
            Error::Unconfirmed { what, cause, .. } if rotating => Error::Unconfirmed {
                profile: self.profile.name.clone(),
                what,
                cause,
                first_sent: Some(first_sent),
            },
            // This run's request certainly did nothing, but an earlier run's may have.
            Error::Temporary { what, cause, .. } if rotating && unsaved_before.is_some() => {
                Error::Unconfirmed {
                    profile: self.profile.name.clone(),
                    what,
                    cause,
                    first_sent: Some(first_sent),
                }
            }
            // The stored refresh token was refused, and an earlier run had sent a refresh it
            // never saved: that run most likely spent the token, and the grace window in which
            // it could be retried is over. Say so, rather than guess.
            Error::ReauthRequired {
                profile,
                rejection: rejection @ crate::error::Rejection::Grant,
                endpoint,
                description,
                unsaved_refresh_at: None,
            } => Error::ReauthRequired {
                profile,
                rejection,
                endpoint,
                description,
                unsaved_refresh_at: unsaved_before,
            },
            other => other,
        }
    }

    /// Xero issued `new_set` for `from`, and the store would not take it: it is kept in this
    /// process's memory (its refresh token is the live one), the next refresh starts from it and
    /// retries the write first. Said once on stderr. A long-running command that serves tokens
    /// ([`Session::serving_unsaved`]) gets the set; others get the write's error (exit 5).
    fn keep_unsaved(&self, from: TokenSet, new_set: TokenSet, error: Error) -> Result<Refreshed> {
        let token_set = self.serve_unsaved.then(|| copy_set(&new_set));
        *self.unsaved_lock() = Some(Unsaved { from, set: new_set });
        if self.serve_unsaved
            && !self
                .told_unsaved
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!(
                "profile '{}': Xero's new token set could not be saved in {} ({error}); it is kept in this process's memory only, its access token is used, and the write is retried at the next token request. If this process ends first, the stored refresh token stays usable for 30 minutes after the refresh",
                self.profile.name,
                self.store.describe()
            );
        }
        match token_set {
            Some(token_set) => Ok(Refreshed {
                token_set,
                requested: true,
            }),
            None => Err(error),
        }
    }

    /// Asks the token endpoint for new tokens for `current`: the refresh grant, or for a
    /// client-credentials connection (no refresh token) the client-credentials grant again.
    async fn post_refresh(
        &self,
        app: &AppCredentials,
        current: &TokenSet,
        guard: &RefreshGuard,
    ) -> Result<TokenResponse> {
        let url = &self.profile.endpoints.token;
        match &current.refresh_token {
            Some(refresh_token) => {
                let refresh_token = refresh_token.expose_secret();
                self.with_retries_under(
                    Some(guard),
                    &format!("refreshing profile '{}'", self.profile.name),
                    url,
                    |http| {
                        let form = FormBody::with_capacity(64 + 3 * refresh_token.len())
                            .field("grant_type", "refresh_token")
                            .field("refresh_token", refresh_token);
                        oauth::request_tokens(http, url, app, form)
                    },
                )
                .await
            }
            None => {
                self.client_credentials(app, &current.scopes, Some(guard))
                    .await
            }
        }
    }

    /// The client-credentials grant (Xero custom connections): a new access token, no refresh
    /// token.
    pub async fn post_client_credentials(
        &self,
        app: &AppCredentials,
        scopes: &[String],
    ) -> Result<TokenResponse> {
        self.client_credentials(app, scopes, None).await
    }

    async fn client_credentials(
        &self,
        app: &AppCredentials,
        scopes: &[String],
        guard: Option<&RefreshGuard>,
    ) -> Result<TokenResponse> {
        if app.client_secret.is_none() {
            return Err(Error::NothingStored {
                profile: self.profile.name.clone(),
                what: "client secret",
                hint: format!(
                    "custom connections need the app's secret: run {}",
                    crate::hint::command(&self.profile.name, "client set --client-id ID"),
                ),
            });
        }
        let url = &self.profile.endpoints.token;
        let scope = scopes.join(" ");
        self.with_retries_under(
            guard,
            &format!(
                "requesting a client-credentials token for profile '{}'",
                self.profile.name
            ),
            url,
            |http| {
                let form = FormBody::with_capacity(64 + 3 * scope.len())
                    .field("grant_type", "client_credentials");
                let form = if scope.is_empty() {
                    form
                } else {
                    form.field("scope", &scope)
                };
                oauth::request_tokens(http, url, app, form)
            },
        )
        .await
    }

    /// Exchanges an authorization code (one attempt: a code is single use, so a retry after a
    /// lost answer could only be refused).
    pub async fn exchange_code(
        &self,
        app: &AppCredentials,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse> {
        let http = self.http().await?;
        let url = &self.profile.endpoints.token;
        let form =
            FormBody::with_capacity(128 + 3 * (code.len() + verifier.len() + redirect_uri.len()))
                .field("grant_type", "authorization_code")
                .field("code", code)
                .field("redirect_uri", redirect_uri)
                .field("code_verifier", verifier);
        let endpoint = url.to_string();
        match oauth::request_tokens(http, url, app, form).await {
            Ok(response) => Ok(response),
            Err(TokenError::Temporary { cause, .. }) => Err(Error::Temporary {
                what: format!("exchanging the authorization code at {endpoint}"),
                cause,
                hint: Some(format!(
                    "run {} again",
                    crate::hint::command(&self.profile.name, "login")
                )),
            }),
            Err(TokenError::Rejected {
                rejection: crate::error::Rejection::Grant,
                description,
            }) => Err(Error::OAuth {
                endpoint,
                code: "invalid_grant".into(),
                description: Some(description.unwrap_or_else(|| {
                    format!(
                        "the authorization code was refused (expired, already used, or the redirect URI or PKCE verifier did not match); run {} again",
                        crate::hint::command(&self.profile.name, "login")
                    )
                })),
            }),
            Err(TokenError::Rejected {
                rejection,
                description,
            }) => Err(Error::ReauthRequired {
                profile: self.profile.name.clone(),
                rejection,
                endpoint,
                description,
                unsaved_refresh_at: None,
            }),
            Err(TokenError::OAuth { code, description }) => Err(Error::OAuth {
                endpoint,
                code,
                description,
            }),
            Err(TokenError::Http { status, summary }) => Err(Error::Http {
                endpoint,
                status,
                summary,
            }),
        }
    }

    /// Deletes the profile's token set under the profile's `guard` (access-token entries first,
    /// if any); `false` when there was none.
    pub async fn delete_token_set(&self, guard: &RefreshGuard) -> Result<bool> {
        split::delete(guard.store(), &self.profile.name).await
    }

    /// The paths this session uses (lock files).
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Revokes the refresh token at Xero (RFC 7009), retrying temporary failures.
    pub async fn revoke(&self, app: &AppCredentials, refresh_token: &str) -> Result<()> {
        let url = &self.profile.endpoints.revocation;
        self.with_retries(
            &format!(
                "revoking the refresh token of profile '{}'",
                self.profile.name
            ),
            url,
            |http| oauth::revoke(http, url, app, refresh_token),
        )
        .await
    }

    /// Runs one OAuth request to `url`, retrying temporary failures with bounded backoff and a
    /// bounded `Retry-After`, and turns the final failure into the error of the exit-code table.
    /// Nothing stored is touched here. `send` makes one attempt (with a fresh body).
    pub async fn with_retries<'a, T, Fut>(
        &'a self,
        what: &str,
        url: &url::Url,
        send: impl Fn(&'a reqwest::Client) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = std::result::Result<T, TokenError>>,
    {
        self.with_retries_under(None, what, url, send).await
    }

    /// [`Session::with_retries`], under `guard` when a refresh is sent: its lease is renewed
    /// before each retry.
    async fn with_retries_under<'a, T, Fut>(
        &'a self,
        guard: Option<&RefreshGuard>,
        what: &str,
        url: &url::Url,
        send: impl Fn(&'a reqwest::Client) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = std::result::Result<T, TokenError>>,
    {
        let http = self.http().await?;
        let endpoint = url.to_string();
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 1;
        // Whether any attempt may have been carried out: then the last failure cannot say
        // that nothing happened at Xero.
        let mut any_lost = false;
        loop {
            tracing::debug!(%endpoint, attempt, "{what}");
            match send(http).await {
                Ok(answer) => return Ok(answer),
                Err(TokenError::Temporary {
                    cause,
                    retry_after,
                    answer_lost,
                }) => {
                    any_lost |= answer_lost;
                    if let (true, Some(guard)) = (answer_lost, guard) {
                        guard.note_answer_lost();
                    }
                    let wait = retry_after.unwrap_or(backoff);
                    if attempt >= REFRESH_ATTEMPTS || wait > MAX_RETRY_AFTER {
                        if any_lost {
                            return Err(Error::Unconfirmed {
                                profile: self.profile.name.clone(),
                                what: format!("{what} at {endpoint}"),
                                cause: format!("{cause}; {attempt} attempts"),
                                first_sent: None,
                            });
                        }
                        let hint = match retry_after {
                            Some(w) => format!("Xero asked to wait {} s", w.as_secs()),
                            None => "the stored tokens were kept and stay usable".into(),
                        };
                        return Err(Error::Temporary {
                            what: format!("{what} at {endpoint}"),
                            cause: format!("{cause}; {attempt} attempts"),
                            hint: Some(hint),
                        });
                    }
                    // Progress, not a problem: the outcome is what the command reports.
                    tracing::info!(
                        "{what} at {endpoint} failed ({cause}); trying again in {} ms \
                         (attempt {} of {REFRESH_ATTEMPTS})",
                        wait.as_millis(),
                        attempt + 1
                    );
                    tokio::time::sleep(wait).await;
                    // Under a shared store's refresh lease, it is renewed before each retry; a
                    // lease that can no longer be held stops the retries (another machine may
                    // be about to refresh).
                    let renewed = match guard {
                        Some(guard) => guard.renew().await,
                        None => Ok(()),
                    };
                    if let Err(e) = renewed {
                        if any_lost {
                            return Err(Error::Unconfirmed {
                                profile: self.profile.name.clone(),
                                what: format!("{what} at {endpoint}"),
                                cause: format!("{cause}; then the refresh lease was lost: {e}"),
                                first_sent: None,
                            });
                        }
                        return Err(e);
                    }
                    backoff *= 3;
                    attempt += 1;
                }
                Err(TokenError::Rejected {
                    rejection,
                    description,
                }) => {
                    return Err(Error::ReauthRequired {
                        profile: self.profile.name.clone(),
                        rejection,
                        endpoint,
                        description,
                        unsaved_refresh_at: None,
                    });
                }
                Err(TokenError::OAuth { code, description }) => {
                    return Err(Error::OAuth {
                        endpoint,
                        code,
                        description,
                    });
                }
                Err(TokenError::Http { status, summary }) => {
                    return Err(Error::Http {
                        endpoint,
                        status,
                        summary,
                    });
                }
            }
        }
    }

    /// Writes a freshly issued set, retrying the write: Xero has already rotated the refresh
    /// token, so this write is what keeps the user logged in. A write that did not answer in
    /// time is not retried: it may still land, and holds `lock` until it has.
    ///
    /// On a store shared by many machines the write is conditional on the set being the one read
    /// under the lock: [`Written::Changed`] when another machine wrote a newer one.
    async fn store_refreshed(&self, held: &Store, set: &TokenSet) -> Result<Written> {
        let label = format!("xero-auth token set ({})", self.profile.name);
        let mut last = None;
        for attempt in 1..=STORE_WRITE_ATTEMPTS {
            let written = if crate::failpoints::refused("refresh-write-refused") {
                Err(Error::StoreUnavailable {
                    store: self.store.describe(),
                    cause: "the write was refused (failure point)".into(),
                    fix: "none: a test".into(),
                })
            } else {
                split::save_unless_changed(held, &self.profile.name, &label, set).await
            };
            match written {
                Ok(written) => return Ok(written),
                Err(e) => {
                    tracing::warn!(attempt, "writing the refreshed token set failed: {e}");
                    last = Some(e);
                    if held.has_unfinished_calls() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        let cause = match last {
            Some(Error::StoreUnavailable { cause, .. }) => cause,
            Some(other) => other.to_string(),
            None => "unknown".into(),
        };
        Err(Error::StoreWriteFailed {
            profile: self.profile.name.clone(),
            store: self.store.describe(),
            cause,
        })
    }
}

/// What [`Session::refresh_failed`] needs to know of the refresh that failed.
struct RefreshFailure {
    /// Whether the request carried a refresh token (Xero rotates it).
    rotating: bool,
    /// When an earlier run sent a refresh whose answer it never saved, if one did.
    unsaved_before: Option<i64>,
    /// The earliest unsaved send: that earlier run's, or this one's.
    first_sent: i64,
}

/// The set a refresh starts from, as read under the guard.
struct Current {
    /// The stored set, or the newer one this process keeps unsaved.
    set: TokenSet,
    /// With an unsaved set: the stored set it was refreshed from.
    unsaved: Option<TokenSet>,
}

/// A set Xero issued that the store would not take, kept in memory until it does.
struct Unsaved {
    /// The stored set it was refreshed from: while the store still holds it, this one is newer.
    from: TokenSet,
    /// The new set; its refresh token is the live one.
    set: TokenSet,
}

/// A copy of `set` (each token in a wiped buffer of its own).
fn copy_set(set: &TokenSet) -> TokenSet {
    TokenSet {
        refresh_token: set.refresh_token.clone(),
        access_token: set.access_token.clone(),
        expires_at: set.expires_at,
        token_type: set.token_type.clone(),
        scopes: set.scopes.clone(),
        obtained_at: set.obtained_at,
    }
}

/// What a refresh must achieve; decides whether the set found after taking the lock will do.
enum Need {
    /// An access token valid for more than this many seconds.
    ValidFor(i64),
    /// Tokens other than these, with an access token valid beyond the margin (a forced refresh,
    /// or a 401).
    NewerThan(TokenSet),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::{TestContext, context};
    use crate::secret::{Zeroizing, secret_from_str};
    use crate::store::memory::HeldWrites;
    use fake_xero::{Counter, FakeXero};
    use std::collections::HashMap;

    const NOW: i64 = 1_800_000_000;

    /// Writes `set` as the commands do: under the profile's guard.
    async fn store(session: &Session, set: &TokenSet) {
        let guard = guard_of(session).await;
        session.store_token_set(set, &guard).await.unwrap();
        guard.end().await;
    }

    /// The profile's guard, as a command that writes takes it.
    async fn guard_of(session: &Session) -> RefreshGuard {
        RefreshGuard::for_writing(session.paths(), &session.profile().name, session.store())
            .await
            .unwrap()
    }

    /// The note of an unsaved refresh, read under the profile's guard.
    async fn unsaved_note(session: &Session) -> Option<i64> {
        let guard = guard_of(session).await;
        let note = guard.unsaved_refresh_sent_at().await;
        guard.end().await;
        note
    }

    /// A context whose profile talks to `fake`, with a client and an expired token set stored.
    async fn with_expired_set(fake: &FakeXero) -> (TestContext, String) {
        fake.add_client("APP1", Some("app-secret"));
        let issued = fake.issue_tokens("APP1", "openid offline_access");
        let env = HashMap::from([
            ("XERO_AUTH_TOKEN_URL".to_string(), fake.token_url()),
            ("XERO_AUTH_HTTP_TIMEOUT".to_string(), "2".to_string()),
        ]);
        let t = context(NOW, env, "[profiles.default]\nclient_id = \"APP1\"\n");
        let session = t.ctx.session().unwrap();
        session
            .store()
            .set(
                "default/client-secret",
                "x",
                Zeroizing::new(b"app-secret".to_vec()),
            )
            .await
            .unwrap();
        let set = TokenSet {
            refresh_token: Some(secret_from_str(&issued.refresh_token)),
            access_token: Some(secret_from_str(&issued.access_token)),
            expires_at: Some(NOW - 10),
            token_type: "Bearer".into(),
            scopes: vec![],
            obtained_at: NOW - 86_400,
        };
        store(&session, &set).await;
        (t, issued.refresh_token)
    }

    #[tokio::test]
    async fn failed_keychain_write_after_refresh_is_exit_5_and_keeps_the_old_set() {
        let fake = FakeXero::start();
        let (t, old_rt) = with_expired_set(&fake).await;
        let before = t.store.raw("default/token-set").unwrap();
        t.store.fail_writes(true);

        let err = t
            .ctx
            .session()
            .unwrap()
            .valid_token_set(300)
            .await
            .unwrap_err();

        assert_eq!(err.exit_code() as u8, 5);
        let message = err.to_string();
        assert!(
            message.contains("30 minutes") && message.contains("xero-auth refresh"),
            "{message}"
        );
        assert!(!message.contains(&old_rt));
        assert_eq!(t.store.raw("default/token-set").unwrap(), before);
        assert_eq!(fake.count(Counter::Refresh), 1);
    }

    /// A POST went out and Xero answered; then the rate-limit ledger could not be written (its
    /// temporary file's name taken by a folder): the answer still comes back, so a script does
    /// not retry the call into a duplicate.
    #[tokio::test]
    async fn an_answered_call_comes_back_when_the_rate_limit_ledger_cannot_be_written() {
        let fake = FakeXero::start();
        let (mut t, _) = with_expired_set(&fake).await;
        let api = fake.api_url();
        let token_url = fake.token_url();
        t.ctx.env = Box::new(move |k| match k {
            "XERO_AUTH_API_URL" => Some(api.clone()),
            "XERO_AUTH_TOKEN_URL" => Some(token_url.clone()),
            _ => None,
        });
        fake.add_tenant("tenant-1", "Org", "ORGANISATION");
        let session = t
            .ctx
            .session()
            .unwrap()
            .with_tenant(Some("tenant-1".into()));
        let url = session
            .profile()
            .endpoints
            .api
            .join("api.xro/2.0/Organisation")
            .unwrap();
        // Refreshed first, so that only the call is in flight below.
        session.valid_token_set(300).await.unwrap();
        fake.push_fault(
            fake_xero::Target::Api,
            fake_xero::Fault::Delay(Duration::from_millis(800)),
        );
        let limits = t.ctx.paths.state_dir.join("limits");
        let request = session.http().await.unwrap().post(url).body("{}");
        let call = session.send(request);
        let spoil = async {
            while fake.count(Counter::Api) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for app in std::fs::read_dir(&limits).unwrap() {
                std::fs::create_dir(app.unwrap().path().join("ledger.json.tmp")).unwrap();
            }
        };
        let (response, ()) = tokio::join!(call, spoil);

        let response = response.expect("the answer, not an error");
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(fake.count(Counter::Api), 1, "sent once");
    }

    /// A listener that records whether anything connected to it.
    fn stray_listener() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/steal", listener.local_addr().unwrap());
        (listener, url)
    }

    #[tokio::test]
    async fn send_refuses_a_request_off_the_api_origin_whoever_built_it() {
        let fake = FakeXero::start();
        let (mut t, _) = with_expired_set(&fake).await;
        let api = fake.api_url();
        let base = fake.base_url();
        let port = fake.port();
        t.ctx.env = Box::new(move |k| match k {
            "XERO_AUTH_API_URL" => Some(api.clone()),
            "XERO_AUTH_CONNECTIONS_URL" => Some(format!("{base}/connections")),
            "XERO_AUTH_TOKEN_URL" => Some(format!("{base}/connect/token")),
            _ => None,
        });
        let session = t.ctx.session().unwrap();
        let (stray, stray_url) = stray_listener();
        // The caller's own client would follow redirects; the session's does not matter here:
        // nothing may be sent at all.
        let theirs = reqwest::Client::new();
        for url in [
            stray_url.clone(),
            format!("https://127.0.0.1:{port}/api.xro/2.0/Organisation"),
        ] {
            let err = session.send(theirs.get(&url)).await.unwrap_err();
            assert_eq!(err.exit_code() as u8, 1, "{url}: {err}");
            let message = err.to_string();
            assert!(
                message.contains(&format!("the API origin http://127.0.0.1:{port}"))
                    && !message.contains("pw"),
                "{url}: {message}"
            );
        }
        assert!(
            matches!(stray.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "nothing connected to the other port"
        );
        assert_eq!(fake.count(Counter::TokenRequests), 0, "not even a refresh");
        assert_eq!(fake.count(Counter::Api), 0);
    }

    /// `api` got a 401 while another process replaced the set with one that has no access
    /// token (`import --force` of a file without an expiry): the set found under the lock is
    /// newer, but has nothing to send, so it is refreshed rather than handed back (where
    /// `send` used to `expect` an access token and panic).
    #[tokio::test]
    async fn a_newer_set_without_an_access_token_is_refreshed_not_handed_back() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        let seen = session.require_token_set().await.unwrap();
        let imported = fake.issue_tokens("APP1", "openid offline_access");
        let guard = guard_of(&session).await;
        session
            .store_token_set(
                &TokenSet {
                    refresh_token: Some(secret_from_str(&imported.refresh_token)),
                    access_token: None,
                    expires_at: None,
                    token_type: "Bearer".into(),
                    scopes: vec![],
                    obtained_at: NOW,
                },
                &guard,
            )
            .await
            .unwrap();
        guard.end().await;

        let refreshed = session.refresh_with(Need::NewerThan(seen)).await.unwrap();

        assert!(refreshed.requested, "a refresh was made");
        let token = refreshed.token_set.require_access_token("default").unwrap();
        assert!(fake.access_token_valid(token.expose_secret()));
        assert_eq!(fake.count(Counter::Refresh), 1);
    }

    #[tokio::test]
    async fn an_unsaved_refresh_is_named_when_the_token_is_refused_after_the_grace_window() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        t.store.fail_writes(true);
        let err = session.valid_token_set(300).await.unwrap_err();
        assert_eq!(err.exit_code() as u8, 5);
        assert_eq!(unsaved_note(&session).await, Some(NOW), "the note stays");

        // The store is back, but only after Xero's grace window, and for another process (this
        // one would start from the set it kept in memory).
        t.store.fail_writes(false);
        fake.advance_clock(Duration::from_secs(31 * 60));
        let err = t
            .ctx
            .session()
            .unwrap()
            .valid_token_set(300)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code() as u8, 4);
        let message = err.to_string();
        assert!(
            message.contains("An earlier xero-auth run sent a refresh at 2027-01-15T08:00:00Z")
                && message.contains("30 minutes")
                && message.contains("xero-auth login"),
            "{message}"
        );
    }

    /// A long-running command's refresh whose write failed: the new set is served from memory,
    /// the next request saves it first, and the spent refresh token is never sent again.
    #[tokio::test]
    async fn an_unsaved_set_is_served_and_saved_at_the_next_request_without_a_second_refresh() {
        let fake = FakeXero::start();
        let (t, old_rt) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap().serving_unsaved();
        t.store.fail_writes(true);
        let served = session.valid_token_set(300).await.unwrap();
        let token = served.require_access_token("default").unwrap();
        assert!(fake.access_token_valid(token.expose_secret()));
        assert!(session.has_unsaved_token_set());
        let stored = session.require_token_set().await.unwrap();
        assert_eq!(stored.refresh_token.unwrap().expose_secret(), old_rt);

        // Still failing: served again from memory, no request.
        let again = session.valid_token_set(300).await.unwrap();
        assert!(again.same_tokens(&served));
        assert_eq!(fake.count(Counter::Refresh), 1);

        t.store.fail_writes(false);
        let saved = session.valid_token_set(300).await.unwrap();
        assert!(saved.same_tokens(&served));
        assert!(!session.has_unsaved_token_set());
        let stored = session.require_token_set().await.unwrap();
        assert!(stored.same_tokens(&served), "the newer set is stored");
        assert_eq!(fake.count(Counter::Refresh), 1, "no second refresh");
        assert_eq!(unsaved_note(&session).await, None, "the note is cleared");
    }

    /// Without serving (a one-shot command or a library caller), the failed write is exit 5, but
    /// the next refresh in the same process starts from the set kept in memory: the spent refresh
    /// token is not sent again.
    #[tokio::test]
    async fn the_next_refresh_starts_from_the_unsaved_set() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        t.store.fail_writes(true);
        assert_eq!(
            session.valid_token_set(300).await.unwrap_err().exit_code() as u8,
            5
        );
        let issued = fake.issued();
        let live = issued.last().unwrap()["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        t.store.fail_writes(false);
        let set = session.valid_token_set(300).await.unwrap();
        assert_eq!(
            fake.count(Counter::Refresh),
            1,
            "saved, not refreshed again"
        );
        assert_eq!(set.refresh_token.unwrap().expose_secret(), live);
        let stored = session.require_token_set().await.unwrap();
        assert_eq!(stored.refresh_token.unwrap().expose_secret(), live);
    }

    /// Found in review: a second refresh of an unsaved set, whose write failed too, recorded the
    /// first unsaved set as what the store held; the next request then threw the newest set away
    /// and refreshed the stored (long spent) token again.
    #[tokio::test]
    async fn two_unsaved_refreshes_in_a_row_keep_the_newest_set_and_save_it() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        t.store.fail_writes(true);
        assert_eq!(
            session.valid_token_set(300).await.unwrap_err().exit_code() as u8,
            5
        );
        assert_eq!(
            session.force_refresh().await.unwrap_err().exit_code() as u8,
            5
        );
        assert_eq!(fake.count(Counter::Refresh), 2);
        let live = fake.issued().last().unwrap()["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        t.store.fail_writes(false);
        let set = session.valid_token_set(300).await.unwrap();
        assert_eq!(
            fake.count(Counter::Refresh),
            2,
            "saved, not refreshed again"
        );
        assert_eq!(set.refresh_token.unwrap().expose_secret(), live);
        let stored = session.require_token_set().await.unwrap();
        assert_eq!(stored.refresh_token.unwrap().expose_secret(), live);
    }

    #[tokio::test]
    async fn a_saved_refresh_clears_the_note() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        session.valid_token_set(300).await.unwrap();
        assert_eq!(unsaved_note(&session).await, None);
    }

    /// The context's profile, with a store whose calls time out after `timeout`.
    fn session_with_timeout(t: &TestContext, timeout: Duration) -> Session {
        Session::new(
            t.ctx.profile().unwrap(),
            t.ctx.paths.clone(),
            Store::new(t.store.clone(), timeout),
            t.ctx.clock.clone(),
        )
    }

    /// Whether another refresher could take the profile's lock now.
    async fn lock_is_free(t: &TestContext) -> bool {
        crate::guard::testing::lock_is_free(&t.ctx.paths, "default", Duration::from_millis(200))
            .await
    }

    /// Lets the held write finish and waits until the lock is free; true when it became free.
    async fn release_writes_and_wait_for_the_lock(held: HeldWrites, t: &TestContext) -> bool {
        drop(held);
        crate::guard::testing::lock_is_free(&t.ctx.paths, "default", Duration::from_secs(10)).await
    }

    #[tokio::test]
    async fn a_write_that_outlives_its_timeout_is_exit_5_and_keeps_the_lock_until_it_ends() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = session_with_timeout(&t, Duration::from_millis(300));
        let writes = t.store.writes().len();
        let held = t.store.hold_writes();

        let err = session.valid_token_set(300).await.unwrap_err();

        assert_eq!(err.exit_code() as u8, 5, "{err}");
        let message = err.to_string();
        assert!(
            message.contains("no answer to a write within 0.3 s")
                && message.contains("stays usable for 30 minutes"),
            "{message}"
        );
        assert_eq!(
            t.store.writes().len(),
            writes + 1,
            "a write still running is not retried beside itself"
        );
        assert!(
            !lock_is_free(&t).await,
            "the lock is held while the write may still land"
        );
        assert!(release_writes_and_wait_for_the_lock(held, &t).await);
        assert_eq!(fake.count(Counter::Refresh), 1);
    }

    #[tokio::test]
    async fn a_refresh_its_caller_gave_up_on_keeps_the_lock_until_its_write_ends() {
        let fake = FakeXero::start();
        let (t, old_rt) = with_expired_set(&fake).await;
        let session = session_with_timeout(&t, Duration::from_secs(30));
        let writes = t.store.writes().len();
        let held = t.store.hold_writes();

        // A library caller that stops waiting once the write has started (a timeout of its
        // own, a cancelled task): its future is dropped in the middle of the refresh.
        let mut call = Box::pin(session.access_token());
        tokio::select! {
            _ = &mut call => panic!("the access token came back although the write is held"),
            _ = async {
                while t.store.writes().len() == writes {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => {}
        }
        drop(call);

        assert!(
            !lock_is_free(&t).await,
            "a second refresher got the lock while the first one's write may still land"
        );
        assert!(release_writes_and_wait_for_the_lock(held, &t).await);
        // The write landed, before anyone else could refresh.
        let stored = session.require_token_set().await.unwrap();
        assert_ne!(stored.refresh_token.unwrap().expose_secret(), old_rt);
        assert_eq!(fake.count(Counter::Refresh), 1);
    }

    #[tokio::test]
    async fn many_tasks_in_one_process_make_one_refresh() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = Arc::new(t.ctx.session().unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = session.clone();
                tokio::spawn(async move { s.valid_token_set(300).await.map(|set| set.expires_at) })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(fake.count(Counter::Refresh), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_tasks_asking_for_an_access_token_make_one_refresh() {
        let fake = FakeXero::start();
        let (t, old_rt) = with_expired_set(&fake).await;
        let session = Arc::new(t.ctx.session().unwrap());
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let s = session.clone();
                tokio::spawn(async move {
                    s.access_token()
                        .await
                        .map(|token| token.expose_secret().to_string())
                })
            })
            .collect();
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.push(task.await.unwrap().unwrap());
        }
        assert_eq!(fake.count(Counter::Refresh), 1);
        assert!(
            tokens.iter().all(|t| t == &tokens[0]),
            "every task got the same token"
        );
        assert!(fake.access_token_valid(&tokens[0]));
        let stored = session.require_token_set().await.unwrap();
        assert_ne!(stored.refresh_token.unwrap().expose_secret(), old_rt);
    }

    #[tokio::test]
    async fn token_command_serves_a_valid_token_without_any_request() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        let mut set = session.require_token_set().await.unwrap();
        set.access_token = Some(secret_from_str("eyJ.valid.token"));
        set.expires_at = Some(NOW + 1000);
        store(&session, &set).await;

        crate::cli::token::run(
            crate::cli::token::TokenArgs {
                header: true,
                env: false,
                min_valid: 300,
            },
            &t.ctx,
        )
        .await
        .unwrap();

        assert_eq!(t.out.text(), "Authorization: Bearer eyJ.valid.token\n");
        assert_eq!(fake.count(Counter::TokenRequests), 0);
        let _ = &t.dir;
    }
}
