//! Xero's API limits, kept by every process of the user together, before Xero has to say no.
//!
//! Xero allows each app, per connected organisation (tenant), 5 requests in progress, 60 per
//! minute and 5,000 per rolling day, and 10,000 per minute across organisations. Every request
//! a [`crate::session::Session`] sends first takes a [`Permit`] here:
//!
//! - **Concurrency**: one of N *slot* files per (app, tenant) in the state folder, held with an
//!   exclusive file lock while the request is in progress. The operating system drops the lock
//!   when the process ends, however it ends, so a killed process never keeps a slot.
//! - **Per-minute budgets**: a small ledger per app (`ledger.json`, under `ledger.lock`, written
//!   whole and renamed into place) holds, per tenant, the times of the requests of the last
//!   window and, for the app, counts in 60 buckets of the window. A request whose budget is
//!   spent waits until the oldest request in the window leaves it. A request's time is first
//!   its send time (a reservation) and then, once answered, its answer time: Xero received it
//!   between the two, so counting from the answer never lets a later request reach Xero before
//!   the earlier one left Xero's window.
//! - **Learning**: Xero's `X-MinLimit-Remaining` / `X-AppMinLimit-Remaining` say how much of
//!   the minute other programs of the same app used; when Xero counts more than the ledger,
//!   the difference is added as requests made now, so the next calls wait instead of meeting
//!   a 429. `X-DayLimit-Remaining` is kept for `status`, and a 429 for the day limit stops
//!   every later call to that tenant until Xero's `Retry-After` has passed.
//!
//! Nothing here is a secret: the files hold tenant ids, times and counts.

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::config::{Paths, Profile, RateLimits};
use crate::error::{Error, Result};
use crate::private_fs::{self, FileKind};

/// Buckets the app's window is counted in: a bucket counts as a whole until its end has left
/// the window, so a request may wait up to one bucket (1 s of Xero's minute) longer than it
/// strictly must; in exchange the ledger stays small whatever the app's limit.
const APP_BUCKETS: u64 = 60;
/// What the ledger remembers of a tenant after its last request: `status` shows the last-seen
/// budgets, a day-limit stop lasts at most a day.
const FORGET_AFTER_SECS: i64 = 2 * 86_400;
/// The largest ledger read: one of Xero's Advanced plan's 10,000 tenants each at its minute limit
/// is a few MB.
const MAX_LEDGER: usize = 64 << 20;
/// How long recording an answer waits for the ledger, blocking its thread (it is called from
/// synchronous code): the request was sent; a ledger busy for longer costs only the record.
const ANSWER_LEDGER_WAIT: Duration = Duration::from_millis(100);
/// The longest a request waits for the ledger before going on without it (within `--max-wait`).
const ADMIT_LEDGER_WAIT: Duration = Duration::from_secs(5);

/// What one answer of the API says about the limits (Xero sends these headers on every answer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<Duration>,
    /// `X-Rate-Limit-Problem` (lower case): `minute`, `day`, `appminute`, `concurrent`.
    pub problem: Option<String>,
    /// `X-MinLimit-Remaining`.
    pub minute_remaining: Option<u64>,
    /// `X-DayLimit-Remaining`.
    pub day_remaining: Option<u64>,
    /// `X-AppMinLimit-Remaining`.
    pub app_minute_remaining: Option<u64>,
}

/// The longest `Retry-After` believed: a week.
const MAX_RETRY_AFTER_SECS: u64 = 7 * 86_400;

impl Answer {
    /// Reads the limit headers of an answer.
    pub fn new(status: u16, headers: &HeaderMap) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
        Answer {
            status,
            // Capped: the number is the server's, and every wait and time computed from it must
            // stay in range (2^64-1 seconds overflowed the ledger's arithmetic: a panic). Xero's
            // longest, the day limit's, is under a day.
            retry_after: number("retry-after")
                .map(|secs| Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS))),
            problem: text("x-rate-limit-problem").map(str::to_ascii_lowercase),
            minute_remaining: number("x-minlimit-remaining"),
            day_remaining: number("x-daylimit-remaining"),
            app_minute_remaining: number("x-appminlimit-remaining"),
        }
    }

    /// A 429 for the day limit: retrying before `Retry-After` cannot succeed.
    pub fn is_day_limit(&self) -> bool {
        self.status == 429 && self.problem.as_deref() == Some("day")
    }
}

/// The budgets last seen in Xero's answers for one tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// When (Unix seconds).
    pub at: i64,
    /// `X-MinLimit-Remaining`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minute: Option<u64>,
    /// `X-DayLimit-Remaining`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u64>,
    /// `X-AppMinLimit-Remaining`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_minute: Option<u64>,
}

/// One tenant's line of the ledger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TenantLedger {
    /// Times (Unix milliseconds) of the requests in the current window: sent, or answered.
    #[serde(default)]
    sent: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<Seen>,
    /// Until when (Unix seconds) Xero refuses calls for the day limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    day_stop_until: Option<i64>,
}

/// The shared state of one app.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    /// The window the times were counted for, in milliseconds; another window starts afresh.
    #[serde(default)]
    window_ms: u64,
    /// The app's requests per bucket: (bucket number, count).
    #[serde(default)]
    app: Vec<(u64, u64)>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantLedger>,
}

/// The budgets last seen for each tenant of an app, for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantBudget {
    /// The tenant id (lower case).
    pub tenant: String,
    /// What Xero's last answer said.
    pub seen: Option<Seen>,
    /// Until when the day limit stops calls (Unix seconds), if it does.
    pub day_stop_until: Option<i64>,
}

/// Keeps one app's limits for the requests of this process, together with every other process
/// of the user.
pub struct Limiter {
    dir: PathBuf,
    /// The state folder `dir` is in (made private before anything is made in it).
    state_dir: PathBuf,
    /// Whether the folders from `state_dir` down to `dir` passed the check in this process.
    folders_checked: AtomicBool,
    limits: RateLimits,
    /// The ledger's lock file, opened once per process. A file lock is held by an open file,
    /// not a thread, so tasks of this process take turns through the mutex first.
    ledger_lock: Mutex<Option<File>>,
}

/// The right to send one request: a concurrency slot (held until the permit is dropped) and a
/// place in the minute budgets.
pub struct Permit<'a> {
    limiter: &'a Limiter,
    tenant: Option<String>,
    _slot: Option<File>,
    reserved_ms: u64,
}

/// Why a request may not be sent now.
enum Wait {
    /// For this long (a budget is spent).
    For(Duration, &'static str),
    /// Not today: the day limit stops calls until then (Unix seconds).
    DayStop(i64),
}

impl Limiter {
    /// The limiter of `app` (its client id) with these limits; state under the state folder.
    pub fn new(paths: &Paths, app: &str, limits: RateLimits) -> Self {
        Limiter {
            dir: Self::dir(paths, app),
            state_dir: paths.state_dir.clone(),
            folders_checked: AtomicBool::new(false),
            limits,
            ledger_lock: Mutex::new(None),
        }
    }

    /// The limiter of the profile's app, or `None` when the profile turned limits off.
    pub fn for_profile(profile: &Profile, paths: &Paths) -> Option<Self> {
        profile
            .rate_limits
            .enabled
            .then(|| Limiter::new(paths, app_of(profile), profile.rate_limits.clone()))
    }

    /// The folder of `app`'s limit state.
    fn dir(paths: &Paths, app: &str) -> PathBuf {
        paths.state_dir.join("limits").join(file_name(app))
    }

    /// Waits (until `deadline` at most) for a concurrency slot and a place in the minute
    /// budgets of `tenant` and of the app. Past the deadline it fails with exit 6 without
    /// waiting; a tenant stopped by the day limit fails at once with [`Error::DayLimit`].
    pub async fn admit(&self, tenant: Option<&str>, deadline: Instant) -> Result<Permit<'_>> {
        let tenant = tenant.map(|t| file_name(&t.trim().to_ascii_lowercase()));
        let mut slot = None;
        let mut pause = Duration::from_millis(2);
        let mut told = false;
        loop {
            if slot.is_none()
                && let Some(t) = &tenant
            {
                slot = self.try_slot(t)?;
                if slot.is_none() {
                    if !told {
                        tracing::info!(
                            tenant = %t,
                            "{} requests to this tenant are in progress (Xero's limit): waiting for one to end",
                            self.limits.concurrent
                        );
                        told = true;
                    }
                    self.sleep_until_deadline(pause, deadline, tenant.as_deref(), "a request slot")
                        .await?;
                    pause = (pause * 2).min(Duration::from_millis(25));
                    continue;
                }
            }
            let reserved = self.reserve_waiting(tenant.as_deref(), deadline).await?;
            match reserved {
                Ok(reserved_ms) => {
                    return Ok(Permit {
                        limiter: self,
                        tenant,
                        _slot: slot,
                        reserved_ms,
                    });
                }
                Err(Wait::DayStop(until)) => {
                    return Err(Error::DayLimit {
                        tenant: tenant.unwrap_or_default(),
                        per_day: self.limits.per_day,
                        resets_at: until,
                    });
                }
                Err(Wait::For(wait, which)) => {
                    tracing::info!(
                        tenant = tenant.as_deref().unwrap_or("-"),
                        "the {which} budget is spent: waiting {} ms",
                        wait.as_millis()
                    );
                    self.sleep_until_deadline(wait, deadline, tenant.as_deref(), which)
                        .await?;
                }
            }
        }
    }

    /// A place in the budgets ([`Limiter::reserve`]) through the ledger, waiting for another
    /// process's hold on it without blocking this thread (at most [`ADMIT_LEDGER_WAIT`], and not
    /// past `deadline`); past that, going on without the ledger ([`Limiter::skip_ledger`]).
    async fn reserve_waiting(
        &self,
        tenant: Option<&str>,
        deadline: Instant,
    ) -> Result<std::result::Result<u64, Wait>> {
        let until = Instant::now()
            + ADMIT_LEDGER_WAIT.min(deadline.saturating_duration_since(Instant::now()));
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(reserved) = self.with_ledger(Duration::ZERO, |ledger, now_ms| {
                self.reserve(ledger, tenant, now_ms)
            })? {
                return Ok(reserved);
            }
            if Instant::now() >= until {
                self.skip_ledger();
                return Ok(Ok(now_ms()));
            }
            tokio::time::sleep(pause.min(until.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Sleeps `wait`, or fails at once when that would pass the deadline.
    async fn sleep_until_deadline(
        &self,
        wait: Duration,
        deadline: Instant,
        tenant: Option<&str>,
        what: &str,
    ) -> Result<()> {
        if Instant::now()
            .checked_add(wait)
            .is_none_or(|end| end > deadline)
        {
            return Err(Error::Temporary {
                what: format!(
                    "calling the Xero API for tenant {}",
                    tenant.unwrap_or("(none)")
                ),
                cause: format!(
                    "{what} of Xero's limits ({} in progress, {} a minute per tenant, {} a minute per app) was not free in time",
                    self.limits.concurrent, self.limits.per_minute, self.limits.app_per_minute
                ),
                hint: Some(
                    "waiting longer was not allowed (--max-wait); other programs of this app are using the budget"
                        .into(),
                ),
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// One free slot of `tenant`, locked, or `None` when all are in use.
    fn try_slot(&self, tenant: &str) -> Result<Option<File>> {
        let dir = self.dir.join(tenant);
        for i in 0..self.limits.concurrent {
            let path = dir.join(format!("slot-{i}"));
            let file = self.open_in_folder(&path)?;
            match file.try_lock() {
                Ok(()) => return Ok(Some(file)),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(Error::io("cannot lock the request slot", &path, e));
                }
            }
        }
        Ok(None)
    }

    /// Takes a place in the budgets now, or says how long to wait for one.
    fn reserve(
        &self,
        ledger: &mut Ledger,
        tenant: Option<&str>,
        now_ms: u64,
    ) -> std::result::Result<u64, Wait> {
        let window = self.window_ms();
        if let Some(t) = tenant.and_then(|t| ledger.tenants.get(t)) {
            if let Some(until) = t.day_stop_until
                && until.saturating_mul(1000) > now_ms as i64
            {
                return Err(Wait::DayStop(until));
            }
            // At least one: a Profile built by hand could say 0, which would index past the end.
            let per_minute = (self.limits.per_minute as usize).max(1);
            if t.sent.len() >= per_minute {
                // `sent` is sorted and pruned: the request that must leave the window first.
                let oldest = t.sent[t.sent.len() - per_minute];
                return Err(Wait::For(
                    // Saturating: the ledger is a file another process (or a person) may have
                    // written nonsense into; a wait is then clamped, never a panic.
                    Duration::from_millis(oldest.saturating_add(window).saturating_sub(now_ms)),
                    "per-minute (tenant)",
                ));
            }
        }
        let app_used: u64 = ledger
            .app
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
        if app_used >= self.limits.app_per_minute as u64 {
            let mut left = app_used;
            let mut until = now_ms + 1;
            for (bucket, n) in &ledger.app {
                left = left.saturating_sub(*n);
                until = self.bucket_end(*bucket).saturating_add(window);
                if left < self.limits.app_per_minute as u64 {
                    break;
                }
            }
            return Err(Wait::For(
                Duration::from_millis(until.saturating_sub(now_ms).max(1)),
                "per-minute (app)",
            ));
        }
        if let Some(t) = tenant {
            insert_sorted(
                &mut ledger.tenants.entry(t.to_string()).or_default().sent,
                now_ms,
            );
        }
        self.add_to_app(ledger, now_ms, 1);
        Ok(now_ms)
    }

    fn window_ms(&self) -> u64 {
        (self.limits.window.as_millis() as u64).max(1)
    }

    fn bucket_len(&self) -> u64 {
        (self.window_ms() / APP_BUCKETS).max(1)
    }

    fn bucket_end(&self, bucket: u64) -> u64 {
        bucket.saturating_add(1).saturating_mul(self.bucket_len())
    }

    fn add_to_app(&self, ledger: &mut Ledger, at_ms: u64, n: u64) {
        let bucket = at_ms / self.bucket_len();
        match ledger.app.iter_mut().find(|(b, _)| *b == bucket) {
            Some((_, count)) => *count += n,
            None => {
                ledger.app.push((bucket, n));
                ledger.app.sort_unstable();
            }
        }
    }

    /// Forgets what has left the window (and tenants not heard of for two days).
    fn prune(&self, ledger: &mut Ledger, now_ms: u64) {
        let window = self.window_ms();
        if ledger.window_ms != window {
            ledger.window_ms = window;
            ledger.app.clear();
            for t in ledger.tenants.values_mut() {
                t.sent.clear();
            }
        }
        ledger
            .app
            .retain(|(bucket, _)| self.bucket_end(*bucket).saturating_add(window) > now_ms);
        let now_secs = (now_ms / 1000) as i64;
        ledger.tenants.retain(|_, t| {
            t.sent.retain(|&at| at.saturating_add(window) > now_ms);
            if t.day_stop_until.is_some_and(|until| until <= now_secs) {
                t.day_stop_until = None;
            }
            !t.sent.is_empty()
                || t.day_stop_until.is_some()
                || t.seen
                    .as_ref()
                    .is_some_and(|s| s.at.saturating_add(FORGET_AFTER_SECS) > now_secs)
        });
    }

    /// Runs `f` on the ledger under its lock, pruned, and writes the result back; `Ok(None)` when
    /// the lock was not free within `wait` (another process holds it: a stuck one, or a flood).
    /// The wait is bounded so that no other process can hang a call: past it, the caller goes on
    /// without the ledger ([`Limiter::skip_ledger`]).
    fn with_ledger<T>(
        &self,
        wait: Duration,
        f: impl FnOnce(&mut Ledger, u64) -> T,
    ) -> Result<Option<T>> {
        let lock_path = self.dir.join("ledger.lock");
        let mut guard = self.ledger_lock.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.open_in_folder(&lock_path)?);
        }
        let Some(lock) = guard.as_ref() else {
            return Ok(None);
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if started.elapsed() < wait => {
                    // Short and bounded: the ledger is held for microseconds by a live process.
                    std::thread::sleep(pause.min(wait.saturating_sub(started.elapsed())));
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => {
                    return Err(Error::io(
                        "cannot lock the rate-limit ledger",
                        &lock_path,
                        e,
                    ));
                }
            }
        }
        let result = (|| {
            let mut ledger = self.read_ledger();
            let now_ms = now_ms();
            self.prune(&mut ledger, now_ms);
            let out = f(&mut ledger, now_ms);
            self.write_ledger(&ledger)?;
            Ok(Some(out))
        })();
        let _ = lock.unlock();
        result
    }

    /// Says once per process that the ledger was busy past its wait and this call goes on
    /// without it: Xero still enforces its limits (a 429 is waited out), only the sharing of
    /// budgets between processes is lost for this call.
    fn skip_ledger(&self) {
        static TOLD: AtomicBool = AtomicBool::new(false);
        if !TOLD.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %self.dir.join("ledger.lock").display(),
                "the rate-limit ledger stayed locked by another process; going on without it (Xero's own limits still apply)"
            );
        }
    }

    /// Opens (creating it, and its folders under the state folder, private) a file that is only
    /// ever locked.
    fn open_in_folder(&self, path: &Path) -> Result<File> {
        // Once per limiter: the state folder down to the app's folder. A tenant's folder is
        // made on first use, inside the app's (already checked) one.
        if !self.folders_checked.load(Ordering::Relaxed) {
            private_fs::private_folder_in(&self.state_dir, &self.dir)?;
            self.folders_checked.store(true, Ordering::Relaxed);
        }
        match private_fs::open_lock_file(path) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                if let Some(folder) = path.parent() {
                    private_fs::private_folder_in(&self.dir, folder)?;
                }
                private_fs::open_lock_file(path)
            }
            opened => opened,
        }
    }

    fn ledger_path(&self) -> PathBuf {
        self.dir.join("ledger.json")
    }

    /// The ledger, or an empty one when there is none or it cannot be read: it only holds
    /// counts, and starting afresh at worst meets one 429 that Xero's answer then corrects.
    fn read_ledger(&self) -> Ledger {
        read_ledger_at(&self.ledger_path())
    }

    fn write_ledger(&self, ledger: &Ledger) -> Result<()> {
        let path = self.ledger_path();
        let bytes = serde_json::to_vec(ledger).expect("the ledger serialises");
        private_fs::replace_cache_file(&path, &bytes)
            .map_err(|e| Error::io("cannot write the rate-limit ledger", &path, e))
    }

    /// The budgets last seen per tenant of the profile's app (for `status`); empty when none
    /// were seen.
    pub fn last_seen(paths: &Paths, profile: &Profile) -> Vec<TenantBudget> {
        let ledger = read_ledger_at(&Self::dir(paths, app_of(profile)).join("ledger.json"));
        ledger
            .tenants
            .into_iter()
            .filter(|(_, t)| t.seen.is_some() || t.day_stop_until.is_some())
            .map(|(tenant, t)| TenantBudget {
                tenant,
                seen: t.seen,
                day_stop_until: t.day_stop_until,
            })
            .collect()
    }
}

impl Permit<'_> {
    /// Records Xero's answer: the request's time becomes its answer time, the budgets Xero
    /// reports correct the ledger (other programs of the app spend them too), and a day-limit
    /// 429 stops this tenant's calls until `Retry-After` has passed. Drops the slot.
    pub fn answered(self, answer: &Answer) -> Result<()> {
        let limiter = self.limiter;
        let limits = &limiter.limits;
        let window = limiter.window_ms();
        let recorded = limiter.with_ledger(ANSWER_LEDGER_WAIT, |ledger, now_ms| {
            // The reservation becomes the answer's time.
            let bucket = self.reserved_ms / limiter.bucket_len();
            if let Some((_, n)) = ledger.app.iter_mut().find(|(b, _)| *b == bucket) {
                *n = n.saturating_sub(1);
            }
            ledger.app.retain(|(_, n)| *n > 0);
            limiter.add_to_app(ledger, now_ms, 1);
            // Where learnt requests go: made now, or on a 429 so that they leave the window
            // when Xero said calls are accepted again.
            let learnt_at = match (answer.status, answer.retry_after) {
                (429, Some(after)) => now_ms
                    .saturating_add(after.as_millis() as u64)
                    .saturating_sub(window),
                _ => now_ms,
            };
            if let Some(remaining) = answer.app_minute_remaining {
                let used: u64 = ledger.app.iter().map(|(_, n)| n).sum();
                let xero_used = (limits.app_per_minute as u64).saturating_sub(remaining);
                if xero_used > used {
                    limiter.add_to_app(ledger, learnt_at, xero_used - used);
                }
            }
            let Some(tenant) = &self.tenant else { return };
            let t = ledger.tenants.entry(tenant.clone()).or_default();
            if let Some(pos) = t.sent.iter().position(|&at| at == self.reserved_ms) {
                t.sent.remove(pos);
            }
            insert_sorted(&mut t.sent, now_ms);
            if answer.minute_remaining.is_some()
                || answer.day_remaining.is_some()
                || answer.app_minute_remaining.is_some()
            {
                t.seen = Some(Seen {
                    at: (now_ms / 1000) as i64,
                    minute: answer.minute_remaining,
                    day: answer.day_remaining,
                    app_minute: answer.app_minute_remaining,
                });
            }
            if answer.is_day_limit() {
                let after = answer.retry_after.unwrap_or(Duration::from_secs(86_400));
                t.day_stop_until =
                    Some((now_ms.saturating_add(after.as_millis() as u64) / 1000) as i64);
            }
            let concurrent_only = answer.problem.as_deref() == Some("concurrent");
            if let Some(remaining) = answer.minute_remaining
                && !concurrent_only
            {
                let used = t.sent.len() as u64;
                let xero_used = (limits.per_minute as u64).saturating_sub(remaining);
                for _ in used..xero_used {
                    insert_sorted(&mut t.sent, learnt_at);
                }
            }
        })?;
        if recorded.is_none() {
            limiter.skip_ledger();
        }
        Ok(())
    }
}

/// Limits are Xero's per app: the client id names the app (the profile, for a profile that
/// has none yet).
fn app_of(profile: &Profile) -> &str {
    profile.client_id.as_deref().unwrap_or(&profile.name)
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn insert_sorted(times: &mut Vec<u64>, at: u64) {
    let pos = times.partition_point(|&t| t <= at);
    times.insert(pos, at);
}

/// The ledger at `path`, or an empty one when there is none or it cannot be used. A ledger that
/// fails the file check (a link, another user's file) is not read, and said so.
fn read_ledger_at(path: &Path) -> Ledger {
    match private_fs::read_file(path, FileKind::Own, MAX_LEDGER, "") {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "the rate-limit ledger is unreadable ({e}); starting afresh");
            Ledger::default()
        }),
        Ok(None) => Ledger::default(),
        Err(e) => {
            tracing::warn!("the rate-limit ledger was not read: {e}");
            Ledger::default()
        }
    }
}

/// A client id or tenant id as a file name: letters, digits, `-` and `_` kept, anything else
/// (a `/`, a `..`) replaced, at most 64 characters. Tenant ids are UUIDs and client ids are
/// hex, so real ids pass unchanged.
fn file_name(id: &str) -> String {
    let name: String = id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() { "_".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(dir: &Path, limits: RateLimits) -> Limiter {
        let paths = Paths {
            config_dir: dir.join("config"),
            state_dir: dir.join("state"),
            data_dir: dir.join("data"),
        };
        Limiter::new(&paths, "APP", limits)
    }

    fn answer(
        status: u16,
        minute: Option<u64>,
        retry_after: Option<u64>,
        problem: Option<&str>,
    ) -> Answer {
        Answer {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            problem: problem.map(String::from),
            minute_remaining: minute,
            day_remaining: Some(4000),
            app_minute_remaining: None,
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    /// The ledger is a file any process of the user can write: nonsense in it (times at the end
    /// of time, counts that overflow when added) clamps a wait or stops a call, never panics.
    #[tokio::test]
    async fn a_ledger_full_of_nonsense_is_no_panic() {
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(dir.path(), RateLimits::default());
        std::fs::create_dir_all(&l.dir).unwrap();
        let huge: Vec<u64> = vec![u64::MAX - 5; 100];
        let ledger = serde_json::json!({
            "window_ms": 60_000,
            "app": [[u64::MAX, u64::MAX], [u64::MAX - 1, u64::MAX]],
            "tenants": {
                "t1": { "sent": [], "day_stop_until": i64::MAX },
                "t2": { "sent": huge },
            },
        });
        std::fs::write(l.ledger_path(), ledger.to_string()).unwrap();
        for tenant in ["t1", "t2", "t3"] {
            let near = Instant::now() + Duration::from_millis(50);
            let outcome = l.admit(Some(tenant), near).await;
            assert!(
                outcome.is_err(),
                "{tenant}: a spent or stopped budget is refused"
            );
        }
    }

    #[test]
    fn ids_become_plain_file_names() {
        assert_eq!(file_name("f4c6a0a3-2e1d"), "f4c6a0a3-2e1d");
        assert_eq!(file_name("../x/y"), "___x_y");
        assert_eq!(file_name(""), "_");
    }

    #[tokio::test]
    async fn a_spent_minute_budget_waits_and_past_max_wait_fails_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RateLimits {
            per_minute: 2,
            window: Duration::from_millis(400),
            ..RateLimits::default()
        };
        let l = limiter(dir.path(), limits);
        let started = Instant::now();
        for _ in 0..3 {
            let p = l.admit(Some("T1"), far()).await.unwrap();
            p.answered(&answer(200, None, None, None)).unwrap();
        }
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "the third waited"
        );
        // Another tenant has a budget of its own.
        let started = Instant::now();
        l.admit(Some("t2"), far()).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
        // The tenant id's case does not matter; a deadline too near fails at once.
        l.admit(Some("t1"), far())
            .await
            .unwrap()
            .answered(&answer(200, None, None, None))
            .unwrap();
        let started = Instant::now();
        let err = l
            .admit(Some("t1"), Instant::now() + Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        assert_eq!(err.exit_code() as u8, 6);
        assert!(err.to_string().contains("--max-wait"), "{err}");
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn slots_are_held_until_the_permit_ends() {
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(
            dir.path(),
            RateLimits {
                concurrent: 2,
                ..RateLimits::default()
            },
        );
        let a = l.admit(Some("t"), far()).await.unwrap();
        let _b = l.admit(Some("t"), far()).await.unwrap();
        let err = l
            .admit(Some("t"), Instant::now() + Duration::from_millis(100))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("request slot"), "{err}");
        a.answered(&answer(200, None, None, None)).unwrap();
        l.admit(Some("t"), Instant::now() + Duration::from_millis(100))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn budgets_reported_by_xero_are_learnt() {
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(
            dir.path(),
            RateLimits {
                per_minute: 5,
                window: Duration::from_millis(500),
                ..RateLimits::default()
            },
        );
        // Xero says 0 left after our first call: others used 4 of the 5.
        l.admit(Some("t"), far())
            .await
            .unwrap()
            .answered(&answer(200, Some(0), None, None))
            .unwrap();
        let started = Instant::now();
        l.admit(Some("t"), far()).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
        let ledger = read_ledger_at(&l.ledger_path());
        let seen: Vec<_> = ledger
            .tenants
            .iter()
            .filter(|(_, t)| t.seen.is_some())
            .collect();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "t");
        assert_eq!(seen[0].1.seen.as_ref().unwrap().day, Some(4000));
    }

    #[tokio::test]
    async fn a_day_limit_stops_later_calls_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(dir.path(), RateLimits::default());
        l.admit(Some("t"), far())
            .await
            .unwrap()
            .answered(&answer(429, Some(10), Some(3600), Some("day")))
            .unwrap();
        let err = l.admit(Some("t"), far()).await.err().unwrap();
        match err {
            Error::DayLimit {
                tenant,
                per_day,
                resets_at,
            } => {
                assert_eq!((tenant.as_str(), per_day), ("t", 5000));
                let now = (now_ms() / 1000) as i64;
                assert!((now + 3590..=now + 3601).contains(&resets_at));
            }
            other => panic!("{other}"),
        }
        // Other tenants are not stopped.
        l.admit(Some("u"), far()).await.unwrap();
    }

    #[test]
    fn an_unreadable_ledger_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(dir.path(), RateLimits::default());
        std::fs::create_dir_all(&l.dir).unwrap();
        std::fs::write(l.ledger_path(), b"{not json").unwrap();
        let n = l
            .with_ledger(Duration::ZERO, |ledger, _| ledger.tenants.len())
            .unwrap();
        assert_eq!(n, Some(0));
    }

    /// Seen before the fix: `ledger.json.tmp` was opened with `File::create`, which followed a
    /// link planted at that name and truncated its target.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_link_planted_at_a_ledger_file_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(dir.path(), RateLimits::default());
        std::fs::create_dir_all(&l.dir).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        for name in ["ledger.json.tmp", "ledger.json"] {
            std::os::unix::fs::symlink(&victim, l.dir.join(name)).unwrap();
        }
        let permit = l.admit(Some("t"), far()).await.unwrap();
        permit.answered(&Answer::default()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        let ledger = l.dir.join("ledger.json");
        assert!(!std::fs::symlink_metadata(&ledger).unwrap().is_symlink());
        assert!(std::fs::read_to_string(&ledger).unwrap().contains("\"t\""));
    }

    /// Seen before the fix: another process holding the ledger's lock hung every call until it
    /// was killed. Now the call goes on without the ledger after a bounded wait.
    #[tokio::test]
    async fn a_ledger_held_by_another_process_does_not_hang_a_call() {
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(dir.path(), RateLimits::default());
        // Taken once so that the folder and the lock file exist.
        l.admit(Some("t"), far()).await.unwrap();
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(l.dir.join("ledger.lock"))
            .unwrap();
        other.lock().unwrap();
        let started = Instant::now();
        let deadline = Instant::now() + Duration::from_millis(300);
        let permit = l.admit(Some("t"), deadline).await.unwrap();
        permit.answered(&Answer::default()).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_loose_state_folder_is_tightened_before_limits_are_kept_in_it() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(dir.path(), RateLimits::default());
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        l.with_ledger(Duration::ZERO, |_, _| ()).unwrap();
        assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&l.dir).unwrap().mode() & 0o777, 0o700);
    }
}
