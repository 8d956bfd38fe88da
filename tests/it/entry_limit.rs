//! A store with Windows Credential Manager's 2,560-byte limit per entry, played by the real
//! Secret Service behind the test-only limit (`XERO_AUTH_TEST_ENTRY_LIMIT`, failpoints builds):
//! long access tokens go to entries of their own, the refresh token never leaves its one entry.

use crate::support;

use std::process::Command as StdCommand;
use std::time::Duration;

use support::processes::stdout_text;
use support::*;
use xero_auth::config::StoreKind;
use xero_auth::store::{Keychain, SecretStore, access_token_part_account, token_set_account};

const LIMIT: usize = 2560;

/// A profile whose commands see the 2,560-byte limit; its part entries are wiped at the end too.
struct Limited(TestEnv);

impl Limited {
    fn new(fake: &FakeXero, name: &str) -> Self {
        let mut env = TestEnv::new(fake, name);
        env.set_env("XERO_AUTH_TEST_ENTRY_LIMIT", &LIMIT.to_string());
        env.set_client(fake);
        Limited(env)
    }

    /// The raw part entries, from `/0` up to the first missing one.
    fn parts(&self) -> Vec<Vec<u8>> {
        let keychain = Keychain::new(StoreKind::SecretService);
        (0..)
            .map_while(|i| {
                keychain
                    .get(&access_token_part_account(&self.0.profile, i))
                    .expect("keychain readable")
                    .map(|z| z.to_vec())
            })
            .collect()
    }

    /// Every keychain item of this profile's token set, as libsecret's own tool lists them
    /// (usernames; the client secret left out).
    fn accounts_by_secret_tool(&self) -> Vec<String> {
        let out = StdCommand::new("secret-tool")
            .args(["search", "--all", "service", "xero-auth"])
            .output()
            .expect("secret-tool runs");
        let mine = format!("{}/", self.0.profile);
        let mut accounts: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .chain(String::from_utf8_lossy(&out.stdout).lines())
            .filter_map(|l| l.strip_prefix("attribute.username = "))
            .filter(|a| a.starts_with(&mine) && !a.ends_with("/client-secret"))
            .map(String::from)
            .collect();
        accounts.sort();
        accounts
    }

    /// Checks what the keychain holds: the core entry and its parts all within the limit, the
    /// core naming exactly the parts there are, holding the refresh token and no access token.
    /// Returns the number of parts.
    fn assert_split_within_limit(&self) -> usize {
        let core_raw = self.0.stored_raw().expect("a token set is stored");
        assert!(
            core_raw.len() <= LIMIT,
            "core entry of {} bytes",
            core_raw.len()
        );
        let core: serde_json::Value = serde_json::from_slice(&core_raw).unwrap();
        assert_eq!(core["version"], 2, "{core}");
        assert!(core.get("access_token").is_none());
        assert!(
            core["refresh_token"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        let parts = self.parts();
        assert_eq!(
            core["access_token_parts"]["count"].as_u64(),
            Some(parts.len() as u64)
        );
        assert!(parts.len() >= 2, "{} parts", parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert!(part.len() <= LIMIT, "part {i} of {} bytes", part.len());
        }
        let mut expected: Vec<String> = (0..parts.len() as u32)
            .map(|i| access_token_part_account(&self.0.profile, i))
            .collect();
        expected.push(token_set_account(&self.0.profile));
        expected.sort();
        assert_eq!(self.accounts_by_secret_tool(), expected);
        parts.len()
    }

    fn token(&self) -> String {
        stdout_text(&self.0.ok(&["token"])).trim().to_string()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let keychain = Keychain::new(StoreKind::SecretService);
        for i in 0..8 {
            let _ = keychain.delete(&access_token_part_account(&self.0.profile, i));
        }
    }
}

/// A fake that issues 2,600-byte access tokens, and a limited profile that imported a fresh set
/// of them (so split into parts).
fn imported_long_tokens(name: &str) -> (FakeXero, Limited, IssuedTokens) {
    let fake = FakeXero::start();
    fake.set_access_token_len(Some(2600));
    let env = Limited::new(&fake, name);
    let tokens = env.0.import_fresh(&fake, Duration::from_secs(60));
    (fake, env, tokens)
}

/// The access token of the latest token response the fake minted.
fn latest_access_token(fake: &FakeXero) -> String {
    fake.issued().last().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn long_access_tokens_round_trip_import_token_refresh_logout_within_2560_bytes() {
    require_keychain!();
    let (fake, env, tokens) = imported_long_tokens("el-round-trip");
    assert_eq!(tokens.access_token.len(), 2600);
    assert_eq!(env.assert_split_within_limit(), 2);
    assert_eq!(env.0.stored_refresh_token(), tokens.refresh_token);

    // `token` gathers the parts: the whole token, no request.
    let requests = fake.requests().len();
    assert_eq!(env.token(), tokens.access_token);
    assert_eq!(
        fake.requests().len(),
        requests,
        "a valid cached token needs no request"
    );

    // `refresh` rotates; the new, longer token is cut again and served as a whole.
    fake.set_access_token_len(Some(3000));
    env.0.ok(&["refresh"]);
    assert_eq!(fake.count(Counter::Refresh), 1);
    let rotated = env.0.stored_refresh_token();
    assert_ne!(rotated, tokens.refresh_token);
    assert_eq!(
        fake.refresh_token_status(&tokens.refresh_token),
        RefreshTokenStatus::UsedInGrace
    );
    assert_eq!(env.assert_split_within_limit(), 2);
    let requests = fake.requests().len();
    let served = env.token();
    assert_eq!(served.len(), 3000);
    assert_eq!(served, latest_access_token(&fake));
    assert!(fake.access_token_valid(&served));
    assert_eq!(fake.requests().len(), requests);

    // A token short enough for one entry goes back to the one-entry format, parts swept.
    fake.set_access_token_len(Some(1500));
    env.0.ok(&["refresh"]);
    let core: serde_json::Value = env.0.stored().unwrap();
    assert_eq!(core["version"], 1, "{core}");
    assert_eq!(core["access_token"].as_str().unwrap().len(), 1500);
    assert!(env.parts().is_empty());
    assert_eq!(
        env.accounts_by_secret_tool(),
        vec![token_set_account(&env.0.profile)]
    );
    assert_eq!(env.token(), latest_access_token(&fake));

    // And back to parts; then logout leaves nothing of the token set.
    fake.set_access_token_len(Some(2600));
    env.0.ok(&["refresh"]);
    env.assert_split_within_limit();
    let last_refresh_token = env.0.stored_refresh_token();
    env.0.ok(&["logout"]);
    assert_eq!(
        fake.refresh_token_status(&last_refresh_token),
        RefreshTokenStatus::Revoked
    );
    assert!(env.0.stored_raw().is_none());
    assert!(env.parts().is_empty());
    assert_eq!(env.accounts_by_secret_tool(), Vec::<String>::new());
}

#[test]
fn a_set_whose_parts_were_deleted_behind_its_back_refreshes_once() {
    require_keychain!();
    let (fake, env, tokens) = imported_long_tokens("el-parts-gone");
    env.assert_split_within_limit();
    let status = StdCommand::new("secret-tool")
        .args([
            "clear",
            "service",
            "xero-auth",
            "username",
            &access_token_part_account(&env.0.profile, 1),
        ])
        .status()
        .unwrap();
    assert!(status.success());

    let served = env.token();
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "no cached token: one refresh"
    );
    assert_ne!(served, tokens.access_token);
    assert_eq!(served, latest_access_token(&fake));
    assert!(fake.access_token_valid(&served));
    assert_ne!(env.0.stored_refresh_token(), tokens.refresh_token);
    env.assert_split_within_limit();

    assert_eq!(env.token(), served);
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "cached again: no second refresh"
    );
}

#[test]
fn a_crash_between_the_parts_and_the_core_keeps_the_refresh_token_and_the_next_token_refreshes() {
    require_keychain!();
    let (fake, env, tokens) = imported_long_tokens("el-crash");
    let core_before = env.0.stored_raw().unwrap();

    // The refresh is answered, the new parts written, and the process dies before the core.
    let out = env
        .0
        .cmd(&["refresh"])
        .env("FAILPOINTS", "token-parts-stored=return")
        .assert()
        .failure()
        .get_output()
        .clone();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGABRT),
        "died at the crash point"
    );
    assert_eq!(fake.count(Counter::Refresh), 1);
    assert!(!stdout_text(&out).contains(&tokens.refresh_token));
    assert_eq!(
        env.0.stored_raw().unwrap(),
        core_before,
        "the core is untouched"
    );
    assert_eq!(env.parts().len(), 2, "the new parts are there, and stale");

    // The old refresh token (in Xero's grace window) is still what the keychain offers; the
    // parts no longer match it, so `token` refreshes once instead of failing or serving them.
    let served = env.token();
    assert_eq!(fake.count(Counter::Refresh), 2);
    assert_eq!(served, latest_access_token(&fake));
    assert!(fake.access_token_valid(&served));
    env.assert_split_within_limit();
    let status: serde_json::Value =
        serde_json::from_slice(&env.0.ok(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["tokens"]["access_token_valid"], true, "{status}");
    assert_eq!(fake.count(Counter::Refresh), 2);
}

#[test]
fn without_a_limit_a_long_access_token_stays_in_the_one_entry_of_format_1() {
    require_keychain!();
    let fake = FakeXero::start();
    fake.set_access_token_len(Some(3000));
    let (env, tokens) = imported_profile(&fake, "el-no-limit", Duration::from_secs(60));
    let core = env.stored().unwrap();
    assert_eq!(core["version"], 1);
    assert_eq!(core["access_token"], tokens.access_token.as_str());
    assert!(
        Keychain::new(StoreKind::SecretService)
            .get(&access_token_part_account(&env.profile, 0))
            .unwrap()
            .is_none()
    );
    assert_eq!(stdout_text(&env.ok(&["token"])).trim(), tokens.access_token);
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}
