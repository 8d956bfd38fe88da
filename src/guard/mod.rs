//! The refresh protocol's guard: the profile's local lock and, on a store shared by many
//! machines, its lease in the store, held as one thing.
//!
//! It is the one way to take the lock, and every command that writes a profile's secrets
//! writes under it: the refresh ([`RefreshGuard::acquire`]), login, import, logout, `client set`
//! and `client remove`, `unlock`'s re-encryption ([`RefreshGuard::for_writing`]) and a move
//! between stores (one guard per store under one [`ProfileLock`]). The lock itself
//! ([`RefreshLock`]) can be taken by this module only, so a new command cannot skip the guard.
//! See ARCHITECTURE.md, The refresh protocol.
//!
//! What it promises:
//! - **One acquire.** The local lock first (it queues this machine's processes), then the lease
//!   (it queues the machines), with one wait loop that asks the caller, between attempts, whether
//!   the work was done elsewhere meanwhile ([`RefreshGuard::acquire`]; a write has nothing to
//!   ask).
//! - **Held until every store call under it has ended.** Calls go through
//!   [`RefreshGuard::store`], a handle whose every call keeps the lock file open and the lease
//!   held until the call's thread has finished: a write that timed out on this side but is still
//!   on its way to the store, or one whose caller gave up, cannot land after another process or
//!   machine has taken over. While the lease is held it is renewed in the background (every third
//!   of its time to live) and by the explicit steps ([`RefreshGuard::renew`]); it is freed when
//!   the guard and the last call are gone.
//! - **Long enough to outlive its holder.** A process that ends while a write is out cannot
//!   renew any more: the lease's time to live while a refresh is out
//!   ([`RefreshGuard::note_refresh_sent`]) covers one request to Xero and every write attempt
//!   after it, with a margin, so that it runs out only after such a write has ended.
//! - **The unsaved-refresh note, one value.** When a refresh was sent and its answer not saved,
//!   the time it was sent is written to the lease first (another machine may be next) and then
//!   to the lock file; [`RefreshGuard::saved`] clears both (a refresh saved, or a login or an
//!   import storing a new set: a note left in either place would make the new set's next
//!   failure look like a spent token). A request whose answer was lost
//!   under the guard is recorded ([`RefreshGuard::note_answer_lost`]), so that a definite answer
//!   to a later attempt cannot clear the note of one Xero may have carried out.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Paths;
use crate::error::{Error, Result};
use crate::store::{LeaseAttempt, LeaseGuard, Store};

mod lock;

pub use lock::RefreshLock;
/// `doctor`'s check of where the lock files are.
#[cfg(feature = "cli")]
pub use lock::untrusted_lock_filesystem;

/// How long the guard waits for the local lock, and then for the lease.
pub const GUARD_WAIT: Duration = Duration::from_secs(60);

/// What [`RefreshGuard::acquire`]'s check reads, and whether that settles the need.
pub type Check<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(T, bool)>> + Send + 'a>>;

/// What [`RefreshGuard::acquire`] came to.
pub enum Acquired<T> {
    /// The caller's check found the work done while waiting: what it found.
    Settled(T),
    /// The guard, and what the caller's check read under it.
    Held(RefreshGuard, T),
}

/// What the wait loop's check read: work still to do (`Open`), or done elsewhere (`Settled`).
enum Read<T, S> {
    Open(T),
    Settled(S),
}

/// What the wait loop came to.
enum Outcome<T, S> {
    Settled(S),
    Held(RefreshGuard, T),
}

/// Who waits: a refresh (its crash points, and quiet waits: a storm has many waiters) or a
/// command that writes (a wait is worth a line).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Refresh,
    Write,
}

/// The profile's refresh lock and, on a shared store, its lease. See the module documentation.
pub struct RefreshGuard {
    held: Arc<Held>,
    /// The store, through a handle that keeps `held` alive while any call made through it runs.
    store: Store,
    /// Whether a request sent under the guard got no answer saying it failed: Xero may have
    /// carried it out.
    answer_lost: std::sync::atomic::AtomicBool,
}

/// What lives as long as the guard or any store call made under it.
struct Held {
    lock: RefreshLock,
    /// Set once the lease is taken.
    lease: std::sync::OnceLock<Lease>,
    profile: String,
}

/// A lease being kept.
struct Lease {
    /// The store, plain: lease calls do not hold the guard themselves.
    store: Store,
    /// `None` once lost (another process took it after it expired) or freed. Writes of the
    /// lease are serialised through this lock: each is conditional on the version before it.
    state: tokio::sync::Mutex<Option<LeaseGuard>>,
    /// Where the release runs when the last holder is gone.
    runtime: tokio::runtime::Handle,
}

/// A profile's local lock alone, before any lease: what a move holds from its start, to read
/// its plan, and then turns into one guard per store ([`ProfileLock::guard`]).
pub struct ProfileLock {
    lock: RefreshLock,
    profile: String,
}

impl ProfileLock {
    /// Takes `profile`'s local lock, waiting at most [`GUARD_WAIT`].
    pub async fn take(paths: &Paths, profile: &str) -> Result<Self> {
        Ok(ProfileLock {
            lock: RefreshLock::acquire(paths, profile, GUARD_WAIT).await?,
            profile: profile.to_string(),
        })
    }

    /// A guard of `store` under this lock: the lock, shared (held while this value or any guard
    /// made from it lives), and, when `store` is shared by many machines, its lease for
    /// `lease_ttl` (zero: the store's own), taken through the guard's one wait loop.
    pub async fn guard(&self, store: &Store, lease_ttl: Duration) -> Result<RefreshGuard> {
        let held = Held {
            lock: self.lock.share(),
            lease: std::sync::OnceLock::new(),
            profile: self.profile.clone(),
        };
        let nothing_to_check = |_: Store| std::future::ready(Ok(Read::<(), Infallible>::Open(())));
        match take_lease(held, store, lease_ttl, Mode::Write, nothing_to_check).await? {
            Outcome::Held(guard, ()) => Ok(guard),
            Outcome::Settled(never) => match never {},
        }
    }
}

impl RefreshGuard {
    /// Takes `profile`'s local lock (waiting at most [`GUARD_WAIT`]) and, when `store` is shared
    /// by many machines, its lease, waiting while another process holds it. `check` runs under
    /// the lock, between attempts at the lease, and once more under the lease: it returns what it
    /// read and whether that already settles the caller's need (another process did the work),
    /// which ends the wait and frees what was taken.
    pub async fn acquire<'a, T>(
        paths: &Paths,
        profile: &str,
        store: &Store,
        mut check: impl FnMut(Store) -> Check<'a, T>,
    ) -> Result<Acquired<T>> {
        let lock = RefreshLock::acquire(paths, profile, GUARD_WAIT).await?;
        crate::failpoints::crash_point("refresh-lock-taken");
        let held = Held {
            lock,
            lease: std::sync::OnceLock::new(),
            profile: profile.to_string(),
        };
        let check = |store: Store| {
            let read = check(store);
            async move {
                let (read, settled) = read.await?;
                Ok(match settled {
                    true => Read::Settled(read),
                    false => Read::Open(read),
                })
            }
        };
        Ok(
            match take_lease(held, store, Duration::ZERO, Mode::Refresh, check).await? {
                Outcome::Settled(read) => Acquired::Settled(read),
                Outcome::Held(guard, read) => Acquired::Held(guard, read),
            },
        )
    }

    /// The guard of a command that writes `profile`'s secrets in `store`: its lock and, on a
    /// store shared by many machines, its lease, with nothing to check. Write through
    /// [`RefreshGuard::store`], then [`RefreshGuard::saved`] after writing a token set (login,
    /// import), else [`RefreshGuard::end`].
    pub async fn for_writing(paths: &Paths, profile: &str, store: &Store) -> Result<Self> {
        ProfileLock::take(paths, profile)
            .await?
            .guard(store, Duration::ZERO)
            .await
    }

    /// Keeps `lease`, just taken: renewed in the background from now on, freed with the guard.
    fn keep(&self, lease: LeaseGuard, store: &Store) {
        let kept = Lease {
            store: store.clone(),
            state: tokio::sync::Mutex::new(Some(lease)),
            runtime: tokio::runtime::Handle::current(),
        };
        if self.held.lease.set(kept).is_ok() {
            keep_renewing(Arc::downgrade(&self.held));
        }
    }

    /// The store, through a handle whose every call keeps this guard's lock and lease until the
    /// call has finished, past its timeout and past the guard itself.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether a store shared by many machines is guarded by a lease too.
    #[cfg(test)]
    pub fn is_shared(&self) -> bool {
        self.held.lease.get().is_some()
    }

    /// When an earlier holder, on this machine or (through the lease) another, sent a refresh
    /// whose answer it never saved: the earliest such time.
    pub async fn unsaved_refresh_sent_at(&self) -> Option<i64> {
        let shared = match self.held.lease.get() {
            Some(lease) => lease
                .state
                .lock()
                .await
                .as_ref()
                .and_then(|l| l.unsaved_refresh_sent_at),
            None => None,
        };
        [self.held.lock.unsaved_refresh_sent_at(), shared]
            .into_iter()
            .flatten()
            .min()
    }

    /// Notes, before a refresh request is sent, the time of the first unsent-and-unsaved refresh
    /// (`sent_at`): in the lease first (renewing it, for `ttl` from now: long enough for the
    /// request and every write after it), then in the lock file. An error means the lease was
    /// lost, or could not be written: then nothing may be sent.
    pub async fn note_refresh_sent(&self, sent_at: i64, ttl: Duration) -> Result<()> {
        if let Some(lease) = self.held.lease.get() {
            let mut state = lease.state.lock().await;
            let mut held = state.take().ok_or_else(|| self.lease_lost())?;
            held.unsaved_refresh_sent_at = Some(sent_at);
            held.ttl = held.ttl.max(ttl);
            *state = lease.store.update_lease(held, false).await?;
            if state.is_none() {
                return Err(self.lease_lost());
            }
        }
        self.held.lock.note_refresh_sent(sent_at);
        Ok(())
    }

    /// Records that a request sent under the guard got no answer saying it failed (a timeout or
    /// a reset after sending, an answer cut short): Xero may have carried it out.
    pub fn note_answer_lost(&self) {
        self.answer_lost
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a request sent under the guard may have been carried out by Xero
    /// ([`RefreshGuard::note_answer_lost`]).
    pub fn answer_lost(&self) -> bool {
        self.answer_lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Renews the lease now, for its whole time to live (before a retry of the request, and
    /// after Xero answered, before the write). An error means it was lost or could not be
    /// written; without a lease, nothing to do.
    pub async fn renew(&self) -> Result<()> {
        match self.held.lease.get() {
            Some(lease) => lease.renew(&self.held.profile).await,
            None => Ok(()),
        }
    }

    /// The error for a lease lost before anything was sent.
    pub fn lease_lost(&self) -> Error {
        Error::Temporary {
            what: format!("profile '{}''s refresh", self.held.profile),
            cause: "its refresh lease expired and another process took it before this one \
                    could refresh; nothing was sent"
                .into(),
            hint: Some("if it keeps happening, raise vault_lease_ttl".into()),
        }
    }

    /// Clears the note of an unsaved refresh, in the lock file and in the lease: a set was
    /// saved, or no refresh sent was carried out. Then [`RefreshGuard::end`].
    pub async fn saved(self) {
        self.clear_notes().await;
        self.end().await;
    }

    /// Clears the note of an unsaved refresh, in the lock file and in the lease, keeping the
    /// guard: a set kept in memory was saved, and a refresh may follow under the same guard.
    pub async fn clear_notes(&self) {
        self.held.lock.note_saved();
        if let Some(lease) = self.held.lease.get()
            && let Some(held) = lease.state.lock().await.as_mut()
        {
            held.unsaved_refresh_sent_at = None;
        }
    }

    /// Lets the guard go: the lock and the lease are freed now when no store call made under the
    /// guard is still running, else when the last one ends (or, for the lease, when it expires,
    /// if this process ends first).
    pub async fn end(self) {
        let RefreshGuard {
            mut held, store, ..
        } = self;
        let running = store.has_unfinished_calls();
        drop(store);
        if running {
            // The last call to end drops the guard's state, which frees the lease (`Drop`).
            return;
        }
        // The background renewal may hold the state for the moment of a renewal.
        for _ in 0..200 {
            match Arc::try_unwrap(held) {
                Ok(mut last) => {
                    if let Some((store, lease, _)) = last.lease_to_free() {
                        free(store, lease, last.profile.clone()).await;
                    }
                    return;
                }
                Err(shared) => {
                    held = shared;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// The one wait loop: with `held`'s lock taken, runs `check` and, while it does not settle,
/// tries `store`'s lease (for `ttl`; zero: the store's own) until it is taken, the store turns
/// out not to be shared, or the wait is over. A holder that ended with a refresh out leaves its
/// lease for as long as that refresh's write could take: waiting that long, rather than giving
/// up first, is what recovers.
async fn take_lease<T, S, F, Fut>(
    held: Held,
    store: &Store,
    ttl: Duration,
    mode: Mode,
    mut check: F,
) -> Result<Outcome<T, S>>
where
    F: FnMut(Store) -> Fut,
    Fut: Future<Output = Result<Read<T, S>>>,
{
    let profile = held.profile.clone();
    let held = Arc::new(held);
    let guard = RefreshGuard {
        store: store.holding(held.clone()),
        held,
        answer_lost: std::sync::atomic::AtomicBool::new(false),
    };
    let read = match check(guard.store.clone()).await? {
        Read::Settled(read) => return Ok(Outcome::Settled(read)),
        Read::Open(read) => read,
    };
    if mode == Mode::Refresh {
        crate::failpoints::crash_point("refresh-set-read");
    }
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    let mut wait = None;
    loop {
        let (holder, left) = match store.try_lease(&profile, ttl).await? {
            LeaseAttempt::NotShared => return Ok(Outcome::Held(guard, read)),
            LeaseAttempt::Taken(lease) => {
                if mode == Mode::Refresh {
                    crate::failpoints::crash_point("refresh-lease-taken");
                }
                guard.keep(lease, store);
                // Read again under the lease: another machine may have done the work.
                return Ok(match check(guard.store.clone()).await? {
                    Read::Settled(read) => Outcome::Settled(read),
                    Read::Open(read) => Outcome::Held(guard, read),
                });
            }
            LeaseAttempt::Held { holder, left } => (holder, left),
        };
        let wait = *wait.get_or_insert_with(|| {
            let wait = GUARD_WAIT.max(started.elapsed() + left + Duration::from_secs(1));
            if mode == Mode::Write {
                tracing::warn!(
                    "profile '{profile}''s lease in {} is held by {holder}: waiting up to {} s",
                    store.describe(),
                    wait.as_secs()
                );
            }
            wait
        });
        if started.elapsed() >= wait {
            // Busy, not broken: exit 6 like the local lock's timeout, so that a script that
            // retries on 6 retries this too.
            return Err(Error::Temporary {
                what: format!(
                    "waiting for profile '{profile}''s refresh lease in {}",
                    store.describe()
                ),
                cause: format!("{holder} has held it for more than {} s", wait.as_secs()),
                hint: Some(format!(
                    "a holder that stopped leaves the lease, which expires within {} s",
                    left.as_secs().max(1)
                )),
            });
        }
        tracing::debug!(profile, %holder, "waiting for the refresh lease");
        tokio::time::sleep(pause.min(left.max(Duration::from_millis(50)))).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(1));
        if let Read::Settled(read) = check(guard.store.clone()).await? {
            return Ok(Outcome::Settled(read));
        }
    }
}

impl Lease {
    async fn renew(&self, profile: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        let held = state.take().ok_or_else(|| lost(profile))?;
        *state = self.store.update_lease(held, false).await?;
        match state.is_some() {
            true => Ok(()),
            false => Err(lost(profile)),
        }
    }
}

fn lost(profile: &str) -> Error {
    Error::Temporary {
        what: format!("profile '{profile}''s refresh lease"),
        cause: "it expired and another process took it".into(),
        hint: Some("if it keeps happening, raise vault_lease_ttl".into()),
    }
}

/// Renews the lease every third of its time to live for as long as its holder lives.
fn keep_renewing(held: std::sync::Weak<Held>) {
    let Some(first) = held.upgrade() else { return };
    let Some(lease) = first.lease.get() else {
        return;
    };
    let runtime = lease.runtime.clone();
    drop(first);
    runtime.spawn(async move {
        loop {
            let period = {
                let Some(held) = held.upgrade() else { return };
                let Some(lease) = held.lease.get() else {
                    return;
                };
                let ttl = match lease.state.lock().await.as_ref() {
                    Some(state) => state.ttl,
                    None => return,
                };
                (ttl / 3).max(Duration::from_millis(200))
            };
            tokio::time::sleep(period).await;
            let Some(held) = held.upgrade() else { return };
            if let Some(lease) = held.lease.get()
                && let Err(e) = lease.renew(&held.profile).await
            {
                tracing::warn!(profile = %held.profile, "renewing the refresh lease failed: {e}");
            }
        }
    });
}

impl Held {
    /// The lease to free, with the note of a refresh sent and never saved if there is one (the
    /// earliest: this machine's, in the lock file, or an earlier holder's), for the next holder
    /// on any machine; `None` when there is none to free.
    fn lease_to_free(&mut self) -> Option<(Store, LeaseGuard, tokio::runtime::Handle)> {
        let lease = self.lease.get_mut()?;
        let mut state = lease.state.get_mut().take()?;
        state.unsaved_refresh_sent_at = [
            self.lock.unsaved_refresh_sent_at(),
            state.unsaved_refresh_sent_at,
        ]
        .into_iter()
        .flatten()
        .min();
        Some((lease.store.clone(), state, lease.runtime.clone()))
    }
}

/// Frees `lease`. Best effort: a lease that cannot be freed expires on its own.
async fn free(store: Store, lease: LeaseGuard, profile: String) {
    match store.update_lease(lease, true).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            tracing::warn!(%profile, "the refresh lease expired and was taken by another process before it was freed")
        }
        Err(e) => tracing::warn!(%profile, "freeing the refresh lease failed: {e}"),
    }
}

impl Drop for Held {
    /// The last holder is gone (the guard, and every store call made under it) without
    /// [`RefreshGuard::end`] freeing the lease: it is freed from here, on the runtime. A process
    /// that ends first leaves it to expire.
    fn drop(&mut self) {
        if let Some((store, lease, runtime)) = self.lease_to_free() {
            runtime.spawn(free(store, lease, self.profile.clone()));
        }
    }
}

/// For the crate's tests: what only the guard may do with the lock, asked from outside it.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Whether another process could take `profile`'s lock within `wait`.
    pub async fn lock_is_free(paths: &Paths, profile: &str, wait: Duration) -> bool {
        RefreshLock::acquire(paths, profile, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn paths(dir: &std::path::Path) -> Paths {
        Paths {
            config_dir: dir.join("config"),
            state_dir: dir.join("state"),
            data_dir: dir.join("data"),
        }
    }

    fn store(memory: &Arc<MemoryStore>) -> Store {
        Store::new(memory.clone(), Duration::from_secs(5))
    }

    /// The commands' files under `dir`, recursively.
    fn rust_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// Taking the lock is this module's alone (its constructor is private to it: a compile
    /// error elsewhere); what this test adds is that a command that writes a profile's secrets,
    /// or hands a store to what writes them, names the guard: a new command that writes without
    /// it fails here.
    #[test]
    fn every_command_that_writes_a_profiles_secrets_takes_the_guard() {
        let writes = [
            ".set(&",
            ".delete(&",
            "set_unless_changed(",
            "split::save(",
            "split::delete(",
            "store_token_set(",
            "delete_token_set(",
            "secrets.write(",
            ".upgrade_profile(",
        ];
        let mut files = Vec::new();
        rust_files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli"),
            &mut files,
        );
        let mut checked = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // A command's unit tests write to the memory store they set up: not a command.
            let text = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or_default();
            let Some(write) = writes.iter().find(|w| text.contains(*w)) else {
                continue;
            };
            checked += 1;
            assert!(
                text.contains("RefreshGuard") || text.contains("ProfileLock"),
                "{} writes ({write}) without the guard: take RefreshGuard::for_writing and \
                 write through its store()",
                file.display()
            );
        }
        assert!(
            checked >= 6,
            "the commands that write were found ({checked})"
        );
    }

    #[tokio::test]
    async fn a_writers_guard_holds_the_lock_and_a_shared_stores_lease_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let shared = Arc::new(MemoryStore::with_leases());
        let guard = RefreshGuard::for_writing(&paths, "p", &store(&shared))
            .await
            .unwrap();
        assert!(guard.is_shared());
        assert_eq!(shared.leases_held(), 1);
        assert!(!testing::lock_is_free(&paths, "p", Duration::from_millis(50)).await);
        guard.end().await;
        assert_eq!(shared.leases_held(), 0);
        assert!(testing::lock_is_free(&paths, "p", Duration::ZERO).await);

        let local = Arc::new(MemoryStore::default());
        let guard = RefreshGuard::for_writing(&paths, "p", &store(&local))
            .await
            .unwrap();
        assert!(!guard.is_shared(), "the default: no lease");
        guard.end().await;
    }

    #[tokio::test]
    async fn a_moves_guards_share_one_lock_and_take_a_lease_in_each_shared_store() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let (one, two) = (
            Arc::new(MemoryStore::with_leases()),
            Arc::new(MemoryStore::with_leases()),
        );
        let lock = ProfileLock::take(&paths, "p").await.unwrap();
        let source = lock.guard(&store(&one), Duration::from_secs(60)).await;
        let dest = lock.guard(&store(&two), Duration::from_secs(60)).await;
        let (source, dest) = (source.unwrap(), dest.unwrap());
        assert_eq!((one.leases_held(), two.leases_held()), (1, 1));
        drop(lock);
        assert!(
            !testing::lock_is_free(&paths, "p", Duration::from_millis(50)).await,
            "the guards keep the lock"
        );
        dest.end().await;
        source.end().await;
        assert_eq!((one.leases_held(), two.leases_held()), (0, 0));
        assert!(testing::lock_is_free(&paths, "p", Duration::ZERO).await);
    }
}
