//! Storms: 64 processes mixing `token`, `refresh`, `status` and `api` against one profile
//! while its access token expires under them. Zero failures, one refresh per expiry, no lock
//! left behind; and a process killed (SIGKILL) while it holds the lock does not block the next.

use crate::support;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use fake_xero::DEFAULT_TENANT_ID;
use serde_json::Value;
use support::processes::*;
use support::*;

/// Processes per wave, a quarter of each kind.
const PROCESSES: usize = 64;
const KINDS: [&[&str]; 4] = [
    &["token"],
    &["refresh", "--json"],
    &["status"],
    &["api", "api.xro/2.0/Organisation"],
];

/// The profile's lock file: `$XDG_STATE_HOME/xero-auth/locks/PROFILE.lock`.
fn lock_path(env: &TestEnv) -> PathBuf {
    env.dir
        .path()
        .join("state/xero-auth/locks")
        .join(format!("{}.lock", env.profile))
}

fn open_lock(env: &TestEnv) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(lock_path(env))
        .expect("the lock file exists")
}

/// One wave's outputs, by kind (the index in [`KINDS`]).
struct Wave {
    outputs: Vec<(usize, Output)>,
}

impl Wave {
    fn of_kind(&self, kind: usize) -> impl Iterator<Item = &Output> {
        self.outputs
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, o)| o)
    }

    /// How many `refresh` processes say they made the request themselves.
    fn refreshes_reported(&self) -> usize {
        self.of_kind(1)
            .map(|o| serde_json::from_slice::<Value>(&o.stdout).expect("refresh --json"))
            .inspect(|v| assert_eq!(v["refreshed"], true))
            .filter(|v| v["by_this_process"] == true)
            .count()
    }
}

/// Runs 64 processes at once. With `gated`, the test holds the profile's lock while they
/// start, and lets go only once every process that needs the lock has read the (expired) set
/// and opened the lock file to wait for it: all of them then race for the lock at the same
/// moment, the worst case, independent of how the scheduler happened to start them.
fn wave(env: &TestEnv, gated: bool) -> Wave {
    let gate = gated.then(|| {
        let file = open_lock(env);
        file.lock().expect("the test takes the profile's lock");
        file
    });
    let mut running: Vec<(usize, Running)> = (0..PROCESSES)
        .map(|i| {
            let kind = i % KINDS.len();
            (kind, Running::spawn(env.std_cmd(KINDS[kind])))
        })
        .collect();
    if let Some(gate) = gate {
        let lock = std::fs::canonicalize(lock_path(env)).unwrap();
        // `status` never takes the lock; every other process opens the lock file only after
        // it has read the stored set, right before it waits for the lock.
        wait_until(
            Duration::from_secs(40),
            "every token/refresh/api process to wait for the lock",
            || {
                running
                    .iter()
                    .filter(|(kind, _)| *kind != 2)
                    .all(|(_, r)| has_file_open(r.pid(), &lock))
            },
        );
        for (kind, r) in running.iter_mut() {
            if *kind != 2 {
                assert!(r.is_running(), "a process waiting for the lock ended early");
            }
        }
        drop(gate);
    }
    let outputs = running
        .drain(..)
        .map(|(kind, r)| (kind, r.finish(Duration::from_secs(120))))
        .collect();
    Wave { outputs }
}

/// Every process of the wave exited 0; every token printed and every API answer is good.
fn assert_no_failure(fake: &FakeXero, wave: &Wave) {
    for (kind, out) in &wave.outputs {
        assert_eq!(
            out.status.code(),
            Some(0),
            "`xero-auth {}` failed: {}",
            KINDS[*kind].join(" "),
            stderr_text(out)
        );
    }
    for out in wave.of_kind(0) {
        assert!(fake.access_token_valid(stdout_text(out).trim()));
    }
    for out in wave.of_kind(3) {
        let body: Value = serde_json::from_slice(&out.stdout).expect("the API's JSON");
        assert_eq!(
            body["Organisations"][0]["OrganisationID"],
            DEFAULT_TENANT_ID
        );
    }
    for out in wave.of_kind(2) {
        assert!(stdout_text(out).contains("access token:"));
    }
}

#[test]
fn sixty_four_mixed_processes_make_one_refresh_per_expiry_and_leave_no_lock() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "storm64", Duration::from_secs(60));
    let per_kind = PROCESSES / KINDS.len();

    // Wave 1, gated: all 48 lock users hold the expired set when the lock comes free. Exactly
    // one refresh: the first to get the lock refreshes (whatever its kind); every later
    // `token`/`api` finds a set valid for 30 minutes, and every later `refresh` finds a set
    // other than the one it read before waiting, and uses it (Need::NewerThan).
    env.set_stored_expiry(now() - 60);
    let first = wave(&env, true);
    assert_no_failure(&fake, &first);
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "one refresh for 64 processes"
    );
    assert!(first.refreshes_reported() <= 1);
    let tokens: Vec<_> = first.of_kind(0).map(|o| o.stdout.clone()).collect();
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "every `token` printed the one new access token"
    );

    // Wave 2, free-running: the processes start and race as the scheduler lets them. A
    // `token`/`api` process makes a request only when the set it finds under the lock expires
    // within the margin, which after the wave's first refresh it never does: at most one
    // request from them. A `refresh` makes one exactly when it finds under the lock the same
    // set it read before waiting (it started after the last refresh was stored), and reports
    // it (`by_this_process`). So the wave's requests are the refreshes the `refresh` processes
    // report, plus at most one.
    env.set_stored_expiry(now() - 60);
    let before = fake.count(Counter::Refresh);
    let second = wave(&env, false);
    assert_no_failure(&fake, &second);
    let requests = fake.count(Counter::Refresh) - before;
    let reported = second.refreshes_reported();
    assert!(
        reported <= requests && requests <= reported + 1,
        "{requests} refresh requests, {reported} reported by `refresh` processes"
    );
    assert!(requests >= 1, "the expired token was refreshed");
    eprintln!(
        "storm: wave 1 (gated) 1 refresh request for {PROCESSES} processes; wave 2 (free) \
         {requests} requests, {reported} of them by `refresh` processes"
    );

    // Every API call went through on the first try: no 401 retry, no lost token.
    let api = fake.api_requests_with_status();
    assert_eq!(api.len(), 2 * per_kind);
    assert!(api.iter().all(|(_, _, status)| *status == 200), "{api:?}");

    // No lock left behind: free at once, and `token` answers promptly from the stored set.
    open_lock(&env)
        .try_lock()
        .expect("nobody holds the lock after the storm");
    let started = Instant::now();
    let out = env.ok(&["token"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(fake.access_token_valid(stdout_text(&out).trim()));
    assert_eq!(
        fake.refresh_token_status(&env.stored_refresh_token()),
        RefreshTokenStatus::Active
    );
}

#[test]
fn a_process_killed_while_holding_the_lock_does_not_block_the_next() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "storm-kill9", Duration::from_secs(86_400));

    // A refresh that takes the lock and stops there for good (`pause`)...
    let mut cmd = env.std_cmd(&["token"]);
    cmd.env("FAILPOINTS", "refresh-lock-taken=pause");
    let mut holder = Running::spawn(cmd);
    wait_until(
        Duration::from_secs(20),
        "the process to hold the lock",
        || matches!(open_lock_if_any(&env), Some(Err(TryLockError::WouldBlock))),
    );

    // ...is killed with SIGKILL: no destructor, no exit handler runs.
    holder.kill_9();
    let out = holder.finish(Duration::from_secs(10));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(SIGKILL));
    assert_eq!(fake.count(Counter::Refresh), 0);

    // The kernel released its lock: the next run refreshes at once (a stale lock would keep
    // it waiting 60 s, then exit 6).
    let started = Instant::now();
    let out = env.ok(&["token"]);
    let took = started.elapsed();
    eprintln!("after the lock holder was killed, the next token took {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the next token took {took:?}"
    );
    assert!(fake.access_token_valid(stdout_text(&out).trim()));
    assert_eq!(fake.count(Counter::Refresh), 1);
    assert_eq!(
        fake.refresh_token_status(&env.stored_refresh_token()),
        RefreshTokenStatus::Active
    );
}

/// Tries the lock once (and lets go at once if it got it); `None` before the file exists.
fn open_lock_if_any(env: &TestEnv) -> Option<Result<(), TryLockError>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(lock_path(env))
        .ok()?;
    Some(file.try_lock())
}
