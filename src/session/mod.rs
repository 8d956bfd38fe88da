//! A profile's session: its token set, read and written, and the flows around it.
//!
//! - this module: the [`Session`] type, building it, and reading what it keeps;
//! - `send`: [`Session::send`], a call to Xero's API with the access token, inside Xero's limits,
//!   retried once after a 401 or a 429;
//! - `grants`: requests to Xero's token and revocation endpoints, and their retries;
//! - `refresh`: the refresh protocol (ARCHITECTURE.md, The refresh protocol), step by step in
//!   that module's documentation.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::config::{Paths, Profile};
use crate::error::{Error, Result};
use crate::limits::Limiter;
use crate::oauth::AppCredentials;
use crate::secret::{ExposeSecret, parse_secret_input};
use crate::store::{Store, client_secret_account, split};
use crate::token_set::TokenSet;

mod grants;
mod refresh;
mod send;
#[cfg(test)]
mod testing;

use crate::guard::RefreshGuard;
pub use crate::time::{Clock, SystemClock};
pub use refresh::Refreshed;
use refresh::Unsaved;

/// The default margin: a token that expires within 5 minutes is refreshed first.
pub const DEFAULT_MARGIN_SECS: i64 = 300;

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
    pub(crate) fn new(profile: Profile, paths: Paths, store: Store, clock: Arc<dyn Clock>) -> Self {
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
    pub(crate) fn serving_unsaved(mut self) -> Self {
        self.serve_unsaved = true;
        self
    }

    /// Whether this process holds a newer token set that the store has not taken yet (see
    /// [`Session::serving_unsaved`]).
    pub(crate) fn has_unsaved_token_set(&self) -> bool {
        self.unsaved_lock().is_some()
    }

    fn unsaved_lock(&self) -> std::sync::MutexGuard<'_, Option<Unsaved>> {
        self.unsaved.lock().unwrap_or_else(|p| p.into_inner())
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

    /// An audit-log event about this session's profile, store and tenant.
    pub(crate) fn audit_event(&self, name: &str) -> crate::audit::Event {
        crate::audit::Event::new(name, &self.profile.name, Some(&self.store.describe()))
            .with_opt("tenant", self.tenant.clone())
    }

    /// Writes `event` to the audit log (never fails).
    pub(crate) fn record(&self, event: crate::audit::Event) {
        event.record(&self.paths, self.now());
    }

    /// The keyed fingerprints of `set`'s access and refresh tokens (none without its key).
    pub(crate) fn fingerprints(&self, set: &TokenSet) -> (Option<String>, Option<String>) {
        let Some(key) = set.audit_key.as_ref() else {
            return (None, None);
        };
        let fp = |t: &crate::secret::SecretString| crate::audit::fingerprint(key.as_slice(), t.expose_secret());
        (
            set.access_token.as_ref().map(fp),
            set.refresh_token.as_ref().map(fp),
        )
    }

    /// Records a token handed out (or the failure to get one).
    pub(crate) fn record_handed_out(&self, result: &Result<TokenSet>) {
        let event = self.audit_event("token");
        let event = match result {
            Ok(set) => event
                .with_opt("access_fp", self.fingerprints(set).0)
                .outcome(0),
            Err(e) => event.outcome(e.exit_code() as i32),
        };
        self.record(event);
    }

    /// The profile this session serves.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The store holding this profile's secrets.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The current time, from the session's clock.
    pub(crate) fn now(&self) -> i64 {
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
    pub(crate) async fn stored_token_set(&self) -> Result<Option<TokenSet>> {
        split::load(&self.store, &self.profile.name).await
    }

    /// The stored token set, or exit 3 when there is none.
    pub(crate) async fn require_token_set(&self) -> Result<TokenSet> {
        self.stored_token_set()
            .await?
            .ok_or_else(|| self.no_token_set())
    }

    /// Exit 3 unless a token set is stored, found by a lookup that reads no secret (and asks the
    /// file store for no passphrase): for a command that would otherwise stop at something else
    /// first — `api` at a missing tenant — when nothing it could do would work without tokens.
    pub(crate) async fn require_token_set_stored(&self) -> Result<()> {
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
    pub(crate) fn no_token_set(&self) -> Error {
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
    pub(crate) async fn store_token_set(&self, set: &TokenSet, guard: &RefreshGuard) -> Result<()> {
        self.save_token_set(guard.store(), set).await
    }

    async fn save_token_set(&self, held: &Store, set: &TokenSet) -> Result<()> {
        let label = format!("xero-auth token set ({})", self.profile.name);
        split::save(held, &self.profile.name, &label, set).await
    }

    /// Asks the store now for what writing the token set will need from a person (the file
    /// store's passphrase, checked against the store), so that nobody is asked after Xero has
    /// issued tokens that cannot wait: `login` calls it before its flow starts.
    pub(crate) async fn prepare_to_store(&self) -> Result<()> {
        self.store
            .prepare_write(&crate::store::token_set_account(&self.profile.name))
            .await
    }

    /// The app's credentials: the client id from the config, the secret from the keychain
    /// (none for PKCE apps).
    pub(crate) async fn app_credentials(&self) -> Result<AppCredentials> {
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

    /// Deletes the profile's token set under the profile's `guard` (access-token entries first,
    /// if any); `false` when there was none.
    pub(crate) async fn delete_token_set(&self, guard: &RefreshGuard) -> Result<bool> {
        split::delete(guard.store(), &self.profile.name).await
    }

    /// The paths this session uses (lock files).
    pub fn paths(&self) -> &Paths {
        &self.paths
    }
}
