//! The refresh protocol's guard: the profile's local lock and, on a store shared by many
//! machines, its lease in the store, held as one thing.
//!
//! What it promises:
//! - **One acquire.** The local lock first (it queues this machine's processes), then the lease
//!   (it queues the machines), with one wait loop that asks the caller, between attempts, whether
//!   the work was done elsewhere meanwhile ([`RefreshGuard::acquire`]).
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
//!   to the lock file; [`RefreshGuard::saved`] clears both. A request whose answer was lost
//!   under the guard is recorded ([`RefreshGuard::note_answer_lost`]), so that a definite answer
//!   to a later attempt cannot clear the note of one Xero may have carried out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Paths;
use crate::error::{Error, Result};
use crate::lock::RefreshLock;
use crate::store::{LeaseAttempt, LeaseGuard, Store};

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
        let held = Arc::new(Held {
            lock,
            lease: std::sync::OnceLock::new(),
            profile: profile.to_string(),
        });
        let guard = RefreshGuard {
            store: store.holding(held.clone()),
            held,
            answer_lost: std::sync::atomic::AtomicBool::new(false),
        };
        let (read, settled) = check(guard.store.clone()).await?;
        crate::failpoints::crash_point("refresh-set-read");
        if settled {
            return Ok(Acquired::Settled(read));
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        // A holder that ended with a refresh out leaves its lease for as long as that refresh's
        // write could take: waiting that long, rather than giving up first, is what recovers.
        let mut wait = None;
        loop {
            let (holder, left) = match store.try_lease(profile, Duration::ZERO).await? {
                LeaseAttempt::NotShared => return Ok(Acquired::Held(guard, read)),
                LeaseAttempt::Taken(lease) => {
                    crate::failpoints::crash_point("refresh-lease-taken");
                    guard.keep(lease, store);
                    // Read again under the lease: another machine may have refreshed.
                    let (read, settled) = check(guard.store.clone()).await?;
                    if settled {
                        return Ok(Acquired::Settled(read));
                    }
                    return Ok(Acquired::Held(guard, read));
                }
                LeaseAttempt::Held { holder, left } => (holder, left),
            };
            let wait = *wait.get_or_insert_with(|| {
                GUARD_WAIT.max(started.elapsed() + left + Duration::from_secs(1))
            });
            if started.elapsed() >= wait {
                // Busy, not broken: exit 6 like the local lock's timeout, so that a script
                // that retries on 6 retries this too.
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
            let (read, settled) = check(guard.store.clone()).await?;
            if settled {
                return Ok(Acquired::Settled(read));
            }
        }
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

    /// The local lock (for the writes that take no lease: login, import).
    pub fn lock(&self) -> &RefreshLock {
        &self.held.lock
    }

    /// Whether a store shared by many machines is guarded by a lease too.
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
