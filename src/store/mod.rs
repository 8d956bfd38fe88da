//! Where secrets live: one small [`SecretStore`] trait (get / set / delete of one named secret),
//! the keychain behind it, and an async facade that keeps every keychain call off the runtime.
//!
//! Everything above this module is store-agnostic. There is no plaintext fallback: when the
//! store cannot be used the caller gets [`Error::StoreUnavailable`] with the cause and the fix.

pub mod file;
mod keychain;
#[cfg(test)]
pub(crate) mod memory;
pub mod moving;
#[cfg(target_os = "linux")]
pub mod secret_service;
pub mod split;
#[cfg(target_os = "linux")]
pub use file::unlock_cache;
pub mod vault;

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

pub use file::FileStore;
#[cfg(test)]
pub use keychain::CREDENTIAL_MANAGER_MAX_SECRET_LEN;
pub use keychain::Keychain;
pub use vault::VaultStore;

use crate::config::{Paths, Profile, StoreKind};
use crate::error::{Error, Result};
use crate::secret::Zeroizing;
use crate::stack::scrubbed;

/// The keychain service name every entry is filed under.
pub const SERVICE: &str = "xero-auth";

/// What a store can report when it fails. Never holds a secret.
#[derive(Debug, Clone)]
pub struct StoreFailure {
    /// What went wrong, in the store's words.
    pub cause: String,
    /// What the user can do about it; empty for a typing mistake ([`StoreFailure::mistyped`]).
    pub fix: String,
}

impl StoreFailure {
    /// What a person typed for the store could not be used (a new passphrase confirmed
    /// differently): nothing is wrong with the store, so commands report `message` as it is,
    /// as bad input (exit 1), not as an unavailable store (exit 5).
    pub fn mistyped(message: impl Into<String>) -> Self {
        StoreFailure {
            cause: message.into(),
            fix: String::new(),
        }
    }
}

/// A place that keeps named secrets: the key-value core every store has. Calls block; use
/// [`Store`] from async code.
///
/// Small on purpose (a new store writes `describe`, `get`, `set` and `delete`); what only some
/// stores are is reached through them rather than defaulted here, so a store cannot half-have it:
///
/// - a store that several machines share (check-and-set, the refresh lease) is a
///   [`SharedStore`], reached with [`SecretStore::shared`];
/// - a store that may ask a person something, and keeps in this process what it learned, is an
///   [`Interactive`] store, reached with [`SecretStore::interactive`].
///
/// What every store has an answer to stays here, defaulted to the keychains' answer: whether an
/// entry exists, how big one may be, what to do when a call hangs. What a command adds around a
/// store (a notice after its first write, a per-entry limit in tests) is an option of [`Store`],
/// not a wrapper, so no method has to be forwarded by hand.
pub trait SecretStore: Send + Sync {
    /// A name for messages: which store this is.
    fn describe(&self) -> String;
    /// The secret filed under `account`, or `None` when there is none.
    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreFailure>;
    /// Files `secret` under `account` in one write, replacing what was there.
    fn set(&self, account: &str, label: &str, secret: &[u8]) -> Result<(), StoreFailure>;
    /// Deletes the secret under `account`; `false` when there was none.
    fn delete(&self, account: &str) -> Result<bool, StoreFailure>;
    /// Whether a secret is filed under `account`. Stores that can tell without handing the secret
    /// over (`xero-auth doctor` asks only this) override the default, which reads it and drops it.
    fn contains(&self, account: &str) -> Result<bool, StoreFailure> {
        self.get(account).map(|secret| secret.is_some())
    }
    /// The most bytes one secret may have here, when the store has a limit (Windows Credential
    /// Manager does); `None` when it has none worth knowing of.
    fn max_secret_len(&self) -> Option<usize> {
        None
    }
    /// What to do when a call gets no answer within the store's timeout. The default speaks of
    /// a keychain's unlock prompt or daemon.
    fn hang_fix(&self) -> String {
        "the keychain may be waiting for an unlock prompt nobody sees, or its daemon hangs: \
         unlock it (or restart it) and run the command again; XERO_AUTH_STORE_TIMEOUT sets the wait"
            .into()
    }
    /// This store as one that several machines share, when it is; `None`, the default, for a
    /// store on one machine (where the refresh lock is enough).
    fn shared(&self) -> Option<&dyn SharedStore> {
        None
    }
    /// This store as one that may ask a person something, when it is; `None`, the default.
    fn interactive(&self) -> Option<&dyn Interactive> {
        None
    }
}

/// What a store that several machines share adds to the key-value core (the vault store): writes
/// that see another machine's, and the refresh lease that makes one refresh across machines
/// (ARCHITECTURE.md, The refresh protocol). Reached with [`SecretStore::shared`].
pub trait SharedStore: Send + Sync {
    /// Files `secret` under `account` unless another writer changed it since this process read
    /// it: [`Written::Changed`] then, and nothing written.
    fn set_unless_changed(
        &self,
        account: &str,
        label: &str,
        secret: &[u8],
    ) -> Result<Written, StoreFailure>;

    /// Where `profile`'s entries are, as messages name them (other machines may be using them);
    /// `None` when this store's entries are seen by this machine alone (it has leases only).
    fn shared_entries(&self, profile: &str) -> Option<String>;

    /// One attempt at `profile`'s refresh lease, so that one machine refreshes at a time (`ttl`:
    /// how long it is held unless renewed; zero for the store's own setting).
    fn try_lease(&self, profile: &str, ttl: Duration) -> Result<LeaseAttempt, StoreFailure>;

    /// Writes `lease` again as it now is (renewing it, with its note), or frees it when
    /// `release`; `None` when the lease was no longer this process's (it expired and another
    /// machine took it).
    fn update_lease(
        &self,
        lease: LeaseGuard,
        release: bool,
    ) -> Result<Option<LeaseGuard>, StoreFailure>;
}

/// What a store that may ask a person something adds (the file store, for its passphrase).
/// Reached with [`SecretStore::interactive`].
pub trait Interactive: Send + Sync {
    /// Asks what the next call on `account` needs from a person, if anything. [`Store`] calls it
    /// before the call, outside the call's timeout (a prompt may take a minute).
    fn prepare(&self, write: bool, account: &str) -> Result<(), StoreFailure>;

    /// Forgets what this process keeps of the store's secrets (what it asked for, decrypted and
    /// wrote), so that the next read asks the store itself. Used where a read must prove what is
    /// at rest: `import`'s read-back before it deletes the plaintext file.
    fn forget_cached(&self);
}

/// What a conditional write did ([`SharedStore::set_unless_changed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The secret was written.
    Stored,
    /// Another writer changed the entry since it was read: nothing was written.
    Changed,
}

/// A refresh lease this process holds in a shared store (see [`SharedStore::try_lease`]). It
/// ends when freed, or at its expiry on the store's clock if its holder dies.
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    /// The profile whose refreshes it serialises.
    pub profile: String,
    /// Who holds it: host, process id and a random part.
    pub holder: String,
    /// The version of the lease entry this process last wrote (its check-and-set).
    pub version: u64,
    /// How long it is held after each write.
    pub ttl: Duration,
    /// When an earlier holder (on any machine) sent a refresh it never saved, if one did: the
    /// shared counterpart of [`RefreshLock::unsaved_refresh_sent_at`](crate::guard::RefreshLock).
    pub unsaved_refresh_sent_at: Option<i64>,
}

/// What one attempt at a refresh lease found.
#[derive(Debug)]
pub enum LeaseAttempt {
    /// The store is not shared between machines: no lease is needed.
    NotShared,
    /// Taken.
    Taken(LeaseGuard),
    /// Another process holds it, for at most `left` more (on the store's clock).
    Held {
        /// Who, as the lease names them.
        holder: String,
        /// How long at most.
        left: Duration,
    },
}

/// The keychain account that holds a profile's token set.
pub fn token_set_account(profile: &str) -> String {
    format!("{profile}/token-set")
}

/// The keychain account that holds part `index` of a profile's access token, on a store whose
/// entries are too small for the whole token set (see [`split`]).
pub fn access_token_part_account(profile: &str, index: u32) -> String {
    format!("{profile}/access-token/{index}")
}

/// The keychain account that holds a profile's client secret.
pub fn client_secret_account(profile: &str) -> String {
    format!("{profile}/client-secret")
}

/// The async face of a [`SecretStore`]: each call runs on a blocking thread, with a timeout,
/// so a keychain that waits on an unlock prompt or a dead D-Bus peer cannot hang the runtime.
///
/// A timeout stops the waiting, not the call: the thread goes on until the keychain answers.
/// What must last as long as the call — the profile's refresh lock, so that a late write cannot
/// land after another process took the lock — is given to [`Store::holding`].
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn SecretStore>,
    timeout: Duration,
    /// Kept alive by each call made through this handle until the call's thread has finished.
    held: Option<Arc<dyn Any + Send + Sync>>,
    /// Calls made through this handle (or its clones) whose thread has not finished.
    running: Arc<AtomicUsize>,
    /// The most bytes one secret may have, when set by [`Store::entry_limit`] rather than by
    /// the store.
    entry_limit: Option<usize>,
    /// Said once after the first write that succeeds ([`Store::after_first_write`]).
    first_write: Option<Arc<FirstWrite>>,
}

/// What a handle says once, after the first write through it (or its clones) succeeds.
struct FirstWrite {
    done: Once,
    say: Box<dyn Fn() + Send + Sync>,
}

impl FirstWrite {
    fn written(&self) {
        self.done.call_once(|| (self.say)());
    }
}

/// Counts a call as running until the blocking thread drops it.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("store", &self.inner.describe())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Store {
    /// Wraps a store; each call gives up after `timeout`.
    pub fn new(inner: Arc<dyn SecretStore>, timeout: Duration) -> Self {
        Store {
            inner,
            timeout,
            held: None,
            running: Arc::new(AtomicUsize::new(0)),
            entry_limit: None,
            first_write: None,
        }
    }

    /// The same store, with `say` called once, after the first write through this handle (or
    /// its clones) succeeds; reads and deletes say nothing. (Kernel keyutils forgets at reboot:
    /// the command-line tool says so.)
    pub fn after_first_write(self, say: impl Fn() + Send + Sync + 'static) -> Self {
        Store {
            first_write: Some(Arc::new(FirstWrite {
                done: Once::new(),
                say: Box::new(say),
            })),
            ..self
        }
    }

    /// The same store, refusing secrets over `limit` bytes and reporting that limit as its own,
    /// as Windows Credential Manager does: how the tests put the split layout ([`split`]) on a
    /// store without a limit.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn entry_limit(self, limit: usize) -> Self {
        Store {
            entry_limit: Some(limit),
            ..self
        }
    }

    /// The same store, through a handle whose every call keeps `held` alive until the call's
    /// thread has finished — after its timeout, and after its caller stopped waiting for it.
    pub fn holding(&self, held: Arc<dyn Any + Send + Sync>) -> Self {
        Store {
            held: Some(held),
            running: Arc::new(AtomicUsize::new(0)),
            ..self.clone()
        }
    }

    /// Whether a call made through this handle has not finished yet: one that timed out may
    /// still complete. Starting another write beside it would only queue behind it.
    pub fn has_unfinished_calls(&self) -> bool {
        self.running.load(Ordering::SeqCst) > 0
    }

    /// The platform keychain of `kind`. Nothing is contacted until the first call.
    pub fn keychain(kind: StoreKind, timeout: Duration) -> Self {
        Store::new(Arc::new(Keychain::new(kind)), timeout)
    }

    /// The store `profile` names: its keychain, or the encrypted-file store in `paths`' data
    /// folder with the passphrase from `XERO_AUTH_PASSPHRASE` or the terminal.
    pub fn for_profile(profile: &Profile, paths: &Paths) -> Self {
        match profile.store {
            StoreKind::File => {
                Store::new(Arc::new(file_store(profile, paths)), profile.store_timeout)
            }
            StoreKind::Vault => {
                Store::new(Arc::new(VaultStore::new(profile)), profile.store_timeout)
            }
            kind => Store::keychain(kind, profile.store_timeout),
        }
    }

    /// Which store this is, for messages.
    pub fn describe(&self) -> String {
        self.inner.describe()
    }

    /// The most bytes one secret may have in this store (see [`SecretStore::max_secret_len`]).
    /// Asks no keychain.
    pub fn max_secret_len(&self) -> Option<usize> {
        self.entry_limit.or_else(|| self.inner.max_secret_len())
    }

    /// See [`Interactive::forget_cached`]; nothing for a store that keeps nothing.
    pub fn forget_cached(&self) {
        if let Some(store) = self.inner.interactive() {
            store.forget_cached();
        }
    }

    /// See [`SharedStore::shared_entries`]; `None` for a store on one machine. Asks no store.
    pub fn shared_entries(&self, profile: &str) -> Option<String> {
        self.inner.shared()?.shared_entries(profile)
    }

    /// Reads the secret filed under `account`.
    pub async fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        self.prepare(false, account).await?;
        let account = account.to_string();
        self.run("read", move |s| s.get(&account)).await
    }

    /// Files `secret` under `account` in one write.
    pub async fn set(&self, account: &str, label: &str, secret: Zeroizing<Vec<u8>>) -> Result<()> {
        self.prepare(true, account).await?;
        self.within_limit(secret.len())?;
        let account = account.to_string();
        let label = label.to_string();
        let first_write = self.first_write.clone();
        self.run("write", move |s| {
            s.set(&account, &label, &secret)?;
            if let Some(first) = first_write {
                first.written();
            }
            Ok(())
        })
        .await
    }

    /// Asks now what a write of `account` will need from a person, if anything (see
    /// [`Interactive::prepare`]); a later write asks nothing more.
    pub async fn prepare_write(&self, account: &str) -> Result<()> {
        self.prepare(true, account).await
    }

    /// Files `secret` under `account` unless another writer changed it since this process read
    /// it (see [`SharedStore::set_unless_changed`]). Only a store that several machines share
    /// can tell; any other writes as [`Store::set`] does.
    pub async fn set_unless_changed(
        &self,
        account: &str,
        label: &str,
        secret: Zeroizing<Vec<u8>>,
    ) -> Result<Written> {
        self.prepare(true, account).await?;
        self.within_limit(secret.len())?;
        let account = account.to_string();
        let label = label.to_string();
        let first_write = self.first_write.clone();
        self.run("write", move |s| {
            let written = match s.shared() {
                Some(shared) => shared.set_unless_changed(&account, &label, &secret)?,
                None => s.set(&account, &label, &secret).map(|()| Written::Stored)?,
            };
            if let (Written::Stored, Some(first)) = (written, first_write) {
                first.written();
            }
            Ok(written)
        })
        .await
    }

    /// One attempt at `profile`'s lease for `ttl` (zero: the store's own setting; see
    /// [`SharedStore::try_lease`]); [`LeaseAttempt::NotShared`] for a store on one machine.
    pub async fn try_lease(&self, profile: &str, ttl: Duration) -> Result<LeaseAttempt> {
        if self.inner.shared().is_none() {
            return Ok(LeaseAttempt::NotShared);
        }
        let profile = profile.to_string();
        self.run("lease", move |s| match s.shared() {
            Some(shared) => shared.try_lease(&profile, ttl),
            None => Ok(LeaseAttempt::NotShared),
        })
        .await
    }

    /// Renews or frees `lease` (see [`SharedStore::update_lease`]); a store on one machine keeps
    /// no lease, so there it is handed back as it was.
    pub async fn update_lease(
        &self,
        lease: LeaseGuard,
        release: bool,
    ) -> Result<Option<LeaseGuard>> {
        if self.inner.shared().is_none() {
            return Ok(Some(lease));
        }
        self.run("lease", move |s| match s.shared() {
            Some(shared) => shared.update_lease(lease, release),
            None => Ok(Some(lease)),
        })
        .await
    }

    /// Deletes the secret filed under `account`.
    pub async fn delete(&self, account: &str) -> Result<bool> {
        let account = account.to_string();
        self.run("delete", move |s| s.delete(&account)).await
    }

    /// Whether a secret is filed under `account` (see [`SecretStore::contains`]).
    pub async fn contains(&self, account: &str) -> Result<bool> {
        let account = account.to_string();
        self.run("lookup", move |s| s.contains(&account)).await
    }

    /// Lets an interactive store ask its person first (a passphrase prompt may take a minute:
    /// it is not held to the store's timeout). A no-op for the keychains.
    async fn prepare(&self, write: bool, account: &str) -> Result<()> {
        if self.inner.interactive().is_none() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let account = account.to_string();
        untimed(self.inner.describe(), move || match inner.interactive() {
            Some(store) => store.prepare(write, &account),
            None => Ok(()),
        })
        .await
    }

    /// Refuses, before any call, a secret longer than [`Store::entry_limit`] allows.
    fn within_limit(&self, len: usize) -> Result<()> {
        split::refuse_over_limit(len, self.entry_limit).map_err(|f| self.unavailable(f))
    }

    /// A store's failure as the error commands return (exit 5).
    fn unavailable(&self, failure: StoreFailure) -> Error {
        failure_to_error(self.inner.describe(), failure)
    }

    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&dyn SecretStore) -> Result<T, StoreFailure> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        let held = self.held.clone();
        let running = Running::start(&self.running);
        let task = tokio::task::spawn_blocking(move || {
            // Released when the call is over, however long after its caller stopped waiting.
            let _held = held;
            let _running = running;
            // The call's frames (the store's decryption, the D-Bus client's message handling)
            // may leave the secret on this thread's stack: wiped before the thread takes other
            // work.
            scrubbed(|| f(inner.as_ref()))
        });
        let outcome = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(join)) => Err(StoreFailure {
                cause: format!("the store {op} call failed unexpectedly ({join})"),
                fix: "run the command again; if it keeps failing, run `xero-auth doctor`".into(),
            }),
            Err(_) => Err(StoreFailure {
                cause: format!(
                    "no answer to a {op} within {} s",
                    self.timeout.as_secs_f32()
                ),
                fix: self.inner.hang_fix(),
            }),
        };
        outcome.map_err(|f| self.unavailable(f))
    }
}

/// Runs `f`, a store call that may ask a person something (a passphrase prompt may take a minute,
/// so it is not held to the store's timeout), on a blocking thread whose stack is wiped
/// afterwards; its failure becomes the error commands return for the store described as `store`.
pub async fn untimed<T: Send + 'static>(
    store: String,
    f: impl FnOnce() -> Result<T, StoreFailure> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || scrubbed(f))
        .await
        .unwrap_or_else(|join| {
            Err(StoreFailure {
                cause: format!("the store call failed unexpectedly ({join})"),
                fix: "run the command again".into(),
            })
        })
        .map_err(|f| failure_to_error(store, f))
}

/// A failure of the store described as `store`, as the error commands return: exit 5, or exit 1
/// for what a person mistyped ([`StoreFailure::mistyped`]).
pub fn failure_to_error(store: String, failure: StoreFailure) -> Error {
    if failure.fix.is_empty() {
        return Error::InvalidInput(failure.cause);
    }
    Error::StoreUnavailable {
        store,
        cause: failure.cause,
        fix: failure.fix,
    }
}

/// The encrypted-file store of `profile`, in `paths`' data folder.
pub fn file_store(profile: &Profile, paths: &Paths) -> FileStore {
    let root = paths.file_store_dir();
    FileStore::new(
        root.clone(),
        profile.file_work_factor,
        file::env_or_terminal(root),
    )
    .with_unlock_cache(profile.file_unlock_ttl)
    .asking_again_on_a_terminal()
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::*;

    /// A store with leases whose calls hang while its writes are held, and which says so in its
    /// own words.
    struct Slow(Arc<MemoryStore>);

    impl SecretStore for Slow {
        fn describe(&self) -> String {
            "slow".into()
        }
        fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreFailure> {
            self.0.get(account)
        }
        fn set(&self, account: &str, label: &str, secret: &[u8]) -> Result<(), StoreFailure> {
            self.0.set(account, label, secret)
        }
        fn delete(&self, account: &str) -> Result<bool, StoreFailure> {
            self.0.delete(account)
        }
        fn hang_fix(&self) -> String {
            "the slow store's own fix".into()
        }
        fn shared(&self) -> Option<&dyn SharedStore> {
            self.0.shared()
        }
    }

    /// The options of a handle (a per-entry limit, a notice after the first write) keep what the
    /// store is: its words when a call hangs, its lease. (The wrappers they replace forwarded
    /// each method by hand and missed `hang_fix` and `set_unless_changed`.)
    #[tokio::test]
    async fn a_handle_with_options_keeps_the_stores_hang_fix_and_lease() {
        let memory = Arc::new(MemoryStore::with_leases());
        let store = Store::new(Arc::new(Slow(memory.clone())), Duration::from_millis(200))
            .entry_limit(64)
            .after_first_write(|| {});
        assert_eq!(store.max_secret_len(), Some(64));
        assert!(matches!(
            store.try_lease("p", Duration::ZERO).await.unwrap(),
            LeaseAttempt::Taken(_)
        ));
        let held = memory.hold_writes();
        let err = store
            .set_unless_changed("p/token-set", "label", Zeroizing::new(b"set".to_vec()))
            .await
            .unwrap_err()
            .to_string();
        drop(held);
        assert!(err.contains("the slow store's own fix"), "{err}");
        let err = store
            .set("p/token-set", "label", Zeroizing::new(vec![b'x'; 65]))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("64-byte limit"), "{err}");
    }
}
