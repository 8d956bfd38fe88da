//! The keychain failing under the tool: an entry deleted between runs, a locked collection,
//! the D-Bus daemon or the keyring daemon gone between the read and the write of a refresh,
//! and an entry written by a newer format version.
//!
//! The tests that lock or kill something run in a private D-Bus session with a GNOME Keyring
//! of their own ([`PrivateKeyring`]), so the session the other tests share is never touched.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use support::processes::*;
use support::*;
use xero_auth::config::StoreKind;
use xero_auth::store::{Keychain, SecretStore, token_set_account};

const DAY: Duration = Duration::from_secs(86_400);

/// A test env whose commands use a private keyring, with the client stored and a day-old
/// token file imported (and removed: no copy of any token stays in a file).
fn private_profile(fake: &FakeXero, name: &str) -> (TestEnv, PrivateKeyring, IssuedTokens) {
    let mut env = TestEnv::new(fake, name);
    let keyring = PrivateKeyring::start(&env.dir.path().join("keyring"));
    env.set_env("DBUS_SESSION_BUS_ADDRESS", &keyring.address);
    env.set_client(fake);
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, DAY);
    env.ok(&["import", "--remove", file.to_str().unwrap()]);
    (env, keyring, tokens)
}

fn token_set_entry(env: &TestEnv) -> String {
    format!("{}/token-set", env.profile)
}

#[test]
fn an_entry_deleted_between_runs_is_exit_3_naming_login_and_import() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "sf-deleted", DAY);

    // Someone removes the entry (Seahorse, `secret-tool clear`) between two runs.
    assert!(
        Keychain::new(StoreKind::SecretService)
            .delete(&token_set_account(&env.profile))
            .unwrap()
    );

    for command in [
        &["token"][..],
        &["refresh"],
        &["status"],
        &["api", "connections"],
    ] {
        let out = env.cmd(command).assert().code(3).get_output().clone();
        let stderr = stderr_text(&out);
        assert!(
            stderr.contains("xero-auth login") && stderr.contains("xero-auth import"),
            "`{}` names login and import:\n{stderr}",
            command.join(" ")
        );
    }
    assert_eq!(fake.count(Counter::TokenRequests), 0);
    assert_eq!(env.stored_raw(), None, "nothing was recreated");
}

#[test]
fn a_locked_keychain_is_exit_5_says_unlock_and_nothing_is_written() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, mut keyring, _) = private_profile(&fake, "sf-locked");
    let before = keyring.lookup(&token_set_entry(&env)).expect("imported");
    keyring.lock();

    let out = env.cmd(&["token"]).assert().code(5).get_output().clone();
    let stderr = stderr_text(&out);
    assert!(
        stderr.contains("locked") && stderr.contains("unlock"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        fake.count(Counter::TokenRequests),
        0,
        "nothing requested, nothing to lose"
    );

    // A write is refused the same way, and import keeps its file.
    let other = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&other, DAY);
    env.cmd(&["import", "--force", "--remove", file.to_str().unwrap()])
        .assert()
        .code(5)
        .stderr(predicates::str::contains("unlock"));
    assert!(file.exists(), "the token file is kept");

    // Unlocked again (what the message says to do): the entry is as it was, and works.
    keyring.restart_unlocked();
    assert_eq!(
        keyring.lookup(&token_set_entry(&env)),
        Some(before),
        "nothing was written"
    );
    let out = env.ok(&["token"]);
    assert!(fake.access_token_valid(stdout_text(&out).trim()));
}

/// Runs a refresh that stops after Xero answered (the new tokens parsed, not yet written) for
/// a few seconds; `break_store` then takes the keychain away. Returns the run's output.
fn break_the_store_between_read_and_write(
    env: &TestEnv,
    fake: &FakeXero,
    break_store: impl FnOnce(),
) -> std::process::Output {
    let mut cmd = env.std_cmd(&["token"]);
    cmd.env("FAILPOINTS", "refresh-response-parsed=sleep(5000)")
        .current_dir(env.home());
    let run = Running::spawn(cmd);
    wait_until(
        Duration::from_secs(20),
        "Xero's answer to the refresh",
        || {
            fake.requests()
                .iter()
                .any(|r| r.grant_type.as_deref() == Some("refresh_token") && r.status == Some(200))
        },
    );
    break_store();
    run.finish(Duration::from_secs(120))
}

/// Exit 5, the message says the previous refresh token stays usable for 30 minutes and how
/// to retry, no secret on stdout/stderr, and none of the tokens Xero issued is in any file
/// under the test's home, config, state, cache and keyring folders.
fn assert_store_write_failure_reported(env: &TestEnv, fake: &FakeXero, out: &std::process::Output) {
    let stderr = stderr_text(out);
    eprintln!("what the user saw:\n{stderr}");
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    for expected in [
        "could not be saved",
        "stays usable for 30 minutes",
        "xero-auth refresh",
    ] {
        assert!(stderr.contains(expected), "lacks {expected:?}:\n{stderr}");
    }
    assert!(out.stdout.is_empty());
    let mut secrets = every_issued_secret(fake);
    secrets.push(CLIENT_SECRET.to_string());
    assert!(secrets.len() >= 4, "the imported set and the refreshed one");
    for secret in &secrets {
        assert!(!stderr.contains(secret.as_str()), "a secret on stderr");
        let files = files_containing(env.dir.path(), secret);
        assert!(files.is_empty(), "a secret written to {files:?}");
    }
}

#[test]
fn the_bus_gone_between_read_and_write_is_exit_5_and_the_old_token_stays_usable() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    let (mut env, mut keyring, imported) = private_profile(&fake, "sf-bus-gone");

    let out = break_the_store_between_read_and_write(&env, &fake, || keyring.kill_bus());

    assert_store_write_failure_reported(&env, &fake, &out);
    assert_eq!(
        fake.refresh_token_status(&imported.refresh_token),
        RefreshTokenStatus::UsedInGrace
    );

    // The session comes back (a new login, a restarted bus): the keychain still holds the
    // old set, and inside the grace window it refreshes.
    let root: PathBuf = env.dir.path().join("keyring");
    drop(keyring);
    let keyring = PrivateKeyring::start(&root);
    env.set_env("DBUS_SESSION_BUS_ADDRESS", &keyring.address);
    let out = env.ok(&["token"]);
    assert!(fake.access_token_valid(stdout_text(&out).trim()));
    let stored = keyring.lookup(&token_set_entry(&env)).expect("stored");
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        fake.refresh_token_status(stored["refresh_token"].as_str().unwrap()),
        RefreshTokenStatus::Active
    );
}

#[test]
fn the_keyring_daemon_gone_between_read_and_write_is_exit_5_and_the_old_token_stays_usable() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    let (env, mut keyring, imported) = private_profile(&fake, "sf-keyring-gone");

    // The bus stays; the keyring daemon dies. (D-Bus may start a new one on the next call:
    // it comes up locked, with no password to unlock it, so the write is refused all the same.)
    let out = break_the_store_between_read_and_write(&env, &fake, || keyring.kill_keyring());

    assert_store_write_failure_reported(&env, &fake, &out);
    assert_eq!(
        fake.refresh_token_status(&imported.refresh_token),
        RefreshTokenStatus::UsedInGrace
    );
    keyring.restart_unlocked();
    let out = env.ok(&["token"]);
    assert!(fake.access_token_valid(stdout_text(&out).trim()));
}

#[test]
fn an_entry_from_a_newer_version_is_refused_left_alone_and_import_force_replaces_it() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "sf-newer", DAY);
    let newer =
        br#"{"version":3,"refresh_token":"rt-from-the-future","vault":{"kind":"split"},"obtained_at":1}"#;
    Keychain::new(StoreKind::SecretService)
        .set(&token_set_account(&env.profile), "newer", newer)
        .unwrap();

    for command in [&["token"][..], &["refresh"], &["status"], &["logout"]] {
        let out = env.cmd(command).assert().code(1).get_output().clone();
        let stderr = stderr_text(&out);
        assert!(
            stderr.contains("newer xero-auth")
                && stderr.contains("left as it is")
                && stderr.contains("import FILE --force"),
            "`{}`:\n{stderr}",
            command.join(" ")
        );
        assert!(!stderr.contains("rt-from-the-future"));
        assert_eq!(env.stored_raw().as_deref(), Some(&newer[..]), "unchanged");
    }
    assert_eq!(fake.count(Counter::TokenRequests), 0);
    assert_eq!(fake.count(Counter::Revocation), 0);

    // import refuses to replace it without --force...
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(60));
    env.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--force"));
    assert_eq!(env.stored_raw().as_deref(), Some(&newer[..]));

    // ...and with it, replaces it: the documented way out.
    env.ok(&["import", "--force", file.to_str().unwrap()]);
    assert_eq!(env.stored_refresh_token(), tokens.refresh_token);
    let out = env.ok(&["token"]);
    assert_eq!(stdout_text(&out).trim(), tokens.access_token);
}

#[test]
fn a_process_in_a_private_keyring_session_ends_cleanly() {
    // The harness itself: a private session answers, and its keyring is not the shared one.
    require_keychain!();
    let fake = FakeXero::start();
    let (env, keyring, _) = private_profile(&fake, "sf-private");
    assert!(keyring.lookup(&token_set_entry(&env)).is_some());
    assert_eq!(
        env.stored_raw(),
        None,
        "the shared session does not see the private keyring's entry"
    );
    let pid = keyring.keyring_pid().expect("a keyring daemon");
    drop(keyring);
    wait_until(Duration::from_secs(10), "the keyring daemon to end", || {
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty())
    });
}
