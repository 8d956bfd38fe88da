//! Linux kernel keyutils as a named store (`XERO_AUTH_STORE=keyutils`): a round trip through the
//! real kernel keyrings, with the warning every write prints.
//!
//! The test gives itself, and the commands it starts, a new anonymous session keyring first —
//! what `keyctl session -` does — so nothing lands in the developer's own session keyring, and so
//! the test does not depend on the session keyring it happened to inherit (a process without one
//! of its own borrows the user-session keyring, through which keyutils cannot write). Where the
//! kernel refuses even that (no keyutils in the kernel, a seccomp filter forbidding keyctl), the
//! test says why and skips: whether keyutils works is a property of the kernel, not of the test
//! set-up, so it skips even under XERO_AUTH_TEST_REQUIRE_KEYCHAIN.

use crate::support;

use std::time::Duration;

use support::*;
use xero_auth::config::StoreKind;
use xero_auth::store::{Keychain, SecretStore, client_secret_account, token_set_account};

const WARNING: &str = "kept in kernel memory, forgotten at reboot";

/// Whether keyutils can keep a secret here: a write, a read back and a delete of a throw-away
/// entry, through the same store code the tool uses.
fn keyutils_usable() -> Result<(), String> {
    join_new_session_keyring()?;
    let keyutils = Keychain::new(StoreKind::Keyutils);
    let probe = format!("probe-{}/keyutils-test", std::process::id());
    keyutils
        .set(&probe, "probe", b"probe")
        .map_err(|f| format!("a write was refused: {}", f.cause))?;
    let back = keyutils
        .get(&probe)
        .map_err(|f| format!("a read was refused: {}", f.cause))?;
    let _ = keyutils.delete(&probe);
    match back.as_deref().map(|b| b.as_slice()) {
        Some(b"probe") => Ok(()),
        _ => Err("what was written did not read back".into()),
    }
}

/// Deletes the profile's keyutils entries however the test ends (they would otherwise stay in
/// the persistent keyring for days).
struct KeyutilsCleanup(String);

impl Drop for KeyutilsCleanup {
    fn drop(&mut self) {
        let keyutils = Keychain::new(StoreKind::Keyutils);
        let _ = keyutils.delete(&token_set_account(&self.0));
        let _ = keyutils.delete(&client_secret_account(&self.0));
    }
}

#[test]
fn keyutils_round_trip_warns_on_every_writing_command() {
    if let Err(why) = keyutils_usable() {
        eprintln!("skipped: Linux kernel keyutils is not usable here: {why}");
        return;
    }
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "keyutils");
    env.set_env("XERO_AUTH_STORE", "keyutils");
    let _cleanup = KeyutilsCleanup(env.profile.clone());
    let keyutils = Keychain::new(StoreKind::Keyutils);

    // client set writes the secret: warned.
    let set = env
        .cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&set.stderr);
    assert!(set.status.success(), "{stderr}");
    assert!(
        stderr.contains(WARNING) && stderr.contains(&format!("profile '{}'", env.profile)),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches(WARNING).count(),
        1,
        "one warning per command: {stderr}"
    );
    let secret = keyutils
        .get(&client_secret_account(&env.profile))
        .expect("the kernel answers")
        .expect("the client secret is in keyutils");
    assert_eq!(&secret[..], CLIENT_SECRET.as_bytes());

    // import writes the token set: warned; the file goes only once the kernel holds the tokens.
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(86_400));
    let import = env
        .cmd(&["import", "--remove", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&import.stderr);
    assert!(import.status.success(), "{stderr}");
    assert!(stderr.contains(WARNING), "{stderr}");
    assert!(!file.exists());

    // Reading commands do not warn.
    let status = env.cmd(&["status"]).output().unwrap();
    assert!(status.status.success());
    assert!(!String::from_utf8_lossy(&status.stderr).contains(WARNING));

    // token refreshes (the day-old access token is expired) and stores the new set: warned.
    let token = env.cmd(&["token"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&token.stderr);
    assert!(token.status.success(), "{stderr}");
    assert!(stderr.contains(WARNING), "{stderr}");
    let printed = String::from_utf8(token.stdout).unwrap();
    assert!(fake.access_token_valid(printed.trim()));
    assert_eq!(fake.count(Counter::Refresh), 1);

    // The kernel holds the rotated set; the Secret Service got nothing (no fallback).
    let stored = keyutils
        .get(&token_set_account(&env.profile))
        .expect("the kernel answers")
        .expect("the token set is in keyutils");
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    let rotated = stored["refresh_token"].as_str().unwrap();
    assert_ne!(rotated, tokens.refresh_token);
    assert_eq!(
        fake.refresh_token_status(rotated),
        RefreshTokenStatus::Active
    );
    if keychain_reachable().is_ok() {
        assert!(
            env.stored_raw().is_none(),
            "nothing went to the Secret Service"
        );
    }

    // The next token comes from the kernel, with no request and no write (no warning).
    let again = env.cmd(&["token"]).output().unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), printed);
    assert!(!String::from_utf8_lossy(&again.stderr).contains(WARNING));
    assert_eq!(fake.count(Counter::TokenRequests), 1);

    // logout deletes from the kernel.
    env.cmd(&["logout"]).assert().success();
    assert!(
        keyutils
            .get(&token_set_account(&env.profile))
            .unwrap()
            .is_none()
    );
}
