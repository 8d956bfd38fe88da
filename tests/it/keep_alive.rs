//! Keeping the 60-day refresh token alive: `refresh --if-older-than DAYS` refreshes only an old
//! enough token (and otherwise makes no request at all), and `status` warns past 45 days.

use crate::support;

use std::time::Duration;

use support::*;

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn if_older_than_makes_no_request_for_a_young_refresh_token() {
    require_keychain!();
    let fake = FakeXero::start();
    // A day-old file: its access token has expired, but the refresh token is young.
    let (env, tokens) = imported_profile(&fake, "keepalive-young", DAY);

    let out = env.ok(&["refresh", "--if-older-than", "7"]);

    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(
        stdout.contains(&format!("profile '{}': refresh not needed", env.profile))
            && stdout.contains("not more than 7 days"),
        "{stdout}"
    );
    assert_eq!(fake.count(Counter::TokenRequests), 0, "no request");
    assert_eq!(env.stored_refresh_token(), tokens.refresh_token);

    let json = env
        .ok(&["refresh", "--if-older-than", "7", "--json"])
        .stdout;
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["refreshed"], false);
    assert!(json["refresh_token_lapses_at"].as_i64().unwrap() > 0);
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}

#[test]
fn if_older_than_refreshes_an_older_one_once() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = imported_profile(&fake, "keepalive-old", 8 * DAY);

    let out = env.ok(&["refresh", "--if-older-than", "7"]);

    assert!(
        String::from_utf8_lossy(&out.stdout).contains("refreshed"),
        "{out:?}"
    );
    assert_eq!(fake.count(Counter::Refresh), 1);
    let rotated = env.stored_refresh_token();
    assert_ne!(rotated, tokens.refresh_token);

    // The new refresh token is brand new: the weekly job's next run has nothing to do.
    let again = env.ok(&["refresh", "--if-older-than", "7"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("refresh not needed"));
    assert_eq!(fake.count(Counter::Refresh), 1);
    assert_eq!(env.stored_refresh_token(), rotated);
}

#[test]
fn status_warns_when_the_refresh_token_is_older_than_45_days() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "keepalive-status-old");
    env.import_fresh(&fake, 50 * DAY);

    let out = env.ok(&["status"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("warning: ")
            && stderr.contains("the refresh token is 50 days old")
            && stderr.contains("xero-auth refresh --if-older-than 7"),
        "{stderr}"
    );

    let json = env.ok(&["status", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let warning = value["tokens"]["refresh_token_warning"]
        .as_str()
        .expect("a warning field");
    assert!(warning.contains("50 days old"), "{warning}");
    assert!(String::from_utf8_lossy(&json.stderr).contains("50 days old"));
    assert_eq!(
        fake.count(Counter::TokenRequests),
        0,
        "status makes no request"
    );
}

#[test]
fn status_does_not_warn_about_a_young_refresh_token() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "keepalive-status-young");
    env.import_fresh(&fake, 44 * DAY);

    let out = env.ok(&["status"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = env.ok(&["status", "--json"]).stdout;
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert!(
        value["tokens"]["refresh_token_warning"].is_null(),
        "{value}"
    );
}

#[test]
fn if_older_than_takes_0_to_59_days() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "keepalive-range");
    env.cmd(&["refresh", "--if-older-than", "60"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("0..=59"));
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}
