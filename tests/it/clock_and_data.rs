//! Clock and data edge cases end to end: token files whose lifetimes are zero, negative,
//! absent or huge, expiry times in the past or the far future, scopes as a string or an array
//! with unknown extra fields, and a system clock set back between two runs.

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::processes::*;
use support::*;
use xero_auth::config::StoreKind;
use xero_auth::store::{Keychain, SecretStore, token_set_account};

const YEAR: i64 = 365 * 86_400;
/// How old the token files are.
const AGE: i64 = 60;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Writes `body` as a token file dated `AGE` seconds ago; returns its path and that date.
fn token_file(env: &TestEnv, body: &Value) -> (PathBuf, i64) {
    let path = env.dir.path().join("tokens.json");
    std::fs::write(&path, serde_json::to_vec(body).unwrap()).unwrap();
    let modified = now() - AGE;
    set_mtime(&path, UNIX_EPOCH + Duration::from_secs(modified as u64));
    (path, modified)
}

/// A fresh profile with `fields` merged into the classic token file of newly issued tokens,
/// imported. Returns the env, the tokens and the file's date.
fn import_with(fake: &FakeXero, name: &str, fields: Value) -> (TestEnv, IssuedTokens, i64) {
    let env = TestEnv::new(fake, name);
    env.set_client(fake);
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let mut body = json!({
        "id_token": tokens.id_token,
        "access_token": tokens.access_token,
        "token_type": "Bearer",
        "refresh_token": tokens.refresh_token,
        "scope": tokens.scope,
    });
    for (k, v) in fields.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    let (path, modified) = token_file(&env, &body);
    env.ok(&["import", path.to_str().unwrap()]);
    (env, tokens, modified)
}

fn status_json(env: &TestEnv) -> Value {
    serde_json::from_slice(&env.ok(&["status", "--json"]).stdout).unwrap()
}

/// `token` prints a valid token; returns whether it had to refresh for it.
fn token_refreshed(env: &TestEnv, fake: &FakeXero) -> bool {
    let before = fake.count(Counter::Refresh);
    let out = env.ok(&["token"]);
    assert!(fake.access_token_valid(stdout_text(&out).trim()));
    fake.count(Counter::Refresh) > before
}

#[test]
fn lifetimes_that_are_zero_negative_or_absent_mean_refresh_on_first_use() {
    require_keychain!();
    let fake = FakeXero::start();
    // (name, fields, the expected expiry given the file's date)
    type Case = (&'static str, Value, fn(i64) -> Option<i64>);
    let cases: [Case; 4] = [
        ("lt-zero", json!({"expires_in": 0}), Some),
        ("lt-negative", json!({"expires_in": -5}), Some),
        // Neither expires_in nor expires_at: the access token is not kept at all.
        ("lt-absent", json!({"expires_in": null}), |_| None),
        ("lt-past", json!({"expires_at": 1_700_000_000}), |_| {
            Some(1_700_000_000)
        }),
    ];
    for (name, fields, expected_expiry) in cases {
        let (env, _, modified) = import_with(&fake, name, fields);
        let status = status_json(&env);
        let tokens = &status["tokens"];
        assert_eq!(tokens["access_token_valid"], false, "{name}");
        assert_eq!(
            tokens["access_token_expires_at"].as_i64(),
            expected_expiry(modified),
            "{name}"
        );
        let text = stdout_text(&env.ok(&["status"]));
        assert!(text.contains("refreshed on next use"), "{name}:\n{text}");
        assert!(
            token_refreshed(&env, &fake),
            "{name}: refreshed on first use"
        );
        assert!(!token_refreshed(&env, &fake), "{name}: and only then");
    }
}

#[test]
fn huge_lifetimes_and_far_future_expiry_times_are_capped_at_a_year() {
    require_keychain!();
    let fake = FakeXero::start();
    for (name, fields) in [
        ("cap-1e12", json!({"expires_in": 1e12})),
        ("cap-year-5000", json!({"expires_at": 95_617_584_000_i64})),
        (
            "cap-millis",
            json!({"expires_at": 9_007_199_254_740_993_000_i64}),
        ),
        ("cap-beyond-i64", json!({"expires_at": 1e300})),
    ] {
        let (env, tokens, modified) = import_with(&fake, name, fields);
        let status = status_json(&env);
        assert_eq!(
            status["tokens"]["access_token_expires_at"].as_i64(),
            Some(modified + YEAR),
            "{name}: capped a year after the file's date"
        );
        let text = stdout_text(&env.ok(&["status"]));
        assert!(text.contains("valid until"), "{name}:\n{text}");
        // Within the cap the file's token is served as it is...
        let out = env.ok(&["token"]);
        assert_eq!(stdout_text(&out).trim(), tokens.access_token, "{name}");
        // ...and the 401 rule still replaces it when Xero says it expired.
        fake.expire_access_tokens();
        env.ok(&["api", "connections"]);
        let after = env.stored().unwrap();
        assert_ne!(
            after["access_token"],
            tokens.access_token.as_str(),
            "{name}"
        );
    }
}

#[test]
fn scopes_as_a_string_or_an_array_and_unknown_fields_import_and_refresh() {
    require_keychain!();
    let fake = FakeXero::start();
    let extra = json!({
        "expires_in": 1800,
        "refresh_token_expires_in": 5_184_000,
        "session_state": {"nested": [1, 2, {"x": null}]},
        "not_before_policy": 0,
    });
    for (name, scope) in [
        (
            "scope-array",
            json!(["openid", "profile", " email ", "offline_access"]),
        ),
        (
            "scope-string",
            json!("openid  profile\temail offline_access "),
        ),
    ] {
        let mut fields = extra.clone();
        fields["scope"] = scope;
        let (env, _, _) = import_with(&fake, name, fields);
        let status = status_json(&env);
        assert_eq!(
            status["tokens"]["scopes"],
            json!(["openid", "profile", "email", "offline_access"]),
            "{name}"
        );
        env.ok(&["refresh"]);
        assert_eq!(
            fake.refresh_token_status(&env.stored_refresh_token()),
            RefreshTokenStatus::Active
        );
    }
}

/// Rewrites the stored set's times as a run on a clock `ahead` seconds later would have
/// written them right after a refresh.
fn store_times_from_a_later_clock(env: &TestEnv, ahead: i64) {
    let mut set = env.stored().expect("a token set is stored");
    set["obtained_at"] = json!(now() + ahead);
    set["expires_at"] = json!(now() + ahead + 1800);
    Keychain::new(StoreKind::SecretService)
        .set(
            &token_set_account(&env.profile),
            &format!("xero-auth token set ({})", env.profile),
            &serde_json::to_vec(&set).unwrap(),
        )
        .unwrap();
}

#[test]
fn a_clock_set_back_between_runs_shows_no_nonsense_and_token_refreshes() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _, _) = import_with(&fake, "clock-back", json!({"expires_in": 1800}));
    // The last run stored its set when the clock said two hours later than it says now.
    store_times_from_a_later_clock(&env, 7200);

    let text = stdout_text(&env.ok(&["status"]));
    assert!(
        text.contains("set back"),
        "status says what is odd:\n{text}"
    );
    assert!(
        !text.contains(" ago old") && !text.contains("(in 2 h"),
        "no negative age, no 2.5-hour lifetime:\n{text}"
    );
    let status = status_json(&env);
    assert_eq!(status["tokens"]["clock_set_back"], true);
    assert_eq!(status["tokens"]["access_token_valid"], false);

    // The expiry was computed on the later clock: not trusted, refreshed.
    assert!(token_refreshed(&env, &fake));
    let status = status_json(&env);
    assert_eq!(status["tokens"]["clock_set_back"], false);
    assert_eq!(status["tokens"]["access_token_valid"], true);
    let obtained = status["tokens"]["refresh_token_obtained_at"]
        .as_i64()
        .unwrap();
    assert!(
        (now() - obtained).abs() < 60,
        "re-based on the clock as it is"
    );
    assert!(!token_refreshed(&env, &fake), "and then served as usual");
    let text = stdout_text(&env.ok(&["status"]));
    assert!(!text.contains("set back"), "{text}");
}

#[test]
fn a_few_seconds_of_clock_adjustment_is_not_a_clock_set_back() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _, _) = import_with(&fake, "clock-skew", json!({"expires_in": 1800}));
    store_times_from_a_later_clock(&env, 20);
    assert_eq!(status_json(&env)["tokens"]["clock_set_back"], false);
    assert!(!token_refreshed(&env, &fake));
}

#[test]
fn absurd_stored_times_are_shown_without_a_crash() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _, _) = import_with(&fake, "absurd", json!({"expires_in": 1800}));
    for (expires_at, obtained_at) in [(i64::MAX, 0), (i64::MIN, 1), (0, i64::MAX)] {
        let mut set = env.stored().unwrap();
        set["expires_at"] = json!(expires_at);
        set["obtained_at"] = json!(obtained_at);
        Keychain::new(StoreKind::SecretService)
            .set(
                &token_set_account(&env.profile),
                "absurd",
                &serde_json::to_vec(&set).unwrap(),
            )
            .unwrap();
        let out = env.ok(&["status"]);
        assert!(stdout_text(&out).contains("access token:"));
        env.ok(&["status", "--json"]);
    }
}
