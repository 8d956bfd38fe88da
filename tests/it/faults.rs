//! Every way a refresh can fail leaves the stored token set byte-for-byte unchanged, with the
//! exit code of the table.

use crate::support;

use std::time::Duration;

use support::*;

const DAY: Duration = Duration::from_secs(86_400);

/// Imports a day-old token file (expired access token), breaks the token endpoint with
/// `fault`, runs `token`, and checks the exit code and that the keychain entry did not change.
fn assert_fault_keeps_tokens(
    name: &str,
    fault: Option<Fault>,
    expected_code: i32,
    stderr_has: &str,
) {
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, name, DAY);
    let before = env.stored_raw().expect("imported");
    fake.set_persistent_fault(Target::Token, fault);

    let out = env
        .cmd(&["token"])
        .assert()
        .code(expected_code)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(stderr_has),
        "stderr lacks {stderr_has:?}:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "no token printed on failure");
    assert_eq!(
        env.stored_raw().expect("still stored"),
        before,
        "stored set unchanged"
    );
}

#[test]
fn timeout_is_exit_6_and_keeps_tokens() {
    require_keychain!();
    assert_fault_keeps_tokens(
        "f-timeout",
        Some(Fault::Delay(Duration::from_secs(5))),
        6,
        "timed out",
    );
}

#[test]
fn connection_reset_is_exit_6_and_keeps_tokens() {
    require_keychain!();
    assert_fault_keeps_tokens("f-reset", Some(Fault::Reset), 6, "run the command again");
}

#[test]
fn reset_after_processing_is_exit_6_and_keeps_tokens() {
    require_keychain!();
    // Xero rotated the token but the answer was lost: the old one stays stored, and stays
    // usable for 30 minutes (the grace window), as the next test run shows.
    assert_fault_keeps_tokens(
        "f-reset-after",
        Some(Fault::ResetAfterProcessing),
        6,
        "run the command again",
    );
}

#[test]
fn server_error_is_exit_6_and_keeps_tokens() {
    require_keychain!();
    assert_fault_keeps_tokens("f-500", Some(Fault::ServerError), 6, "HTTP 500");
}

#[test]
fn too_many_requests_is_exit_6_and_keeps_tokens() {
    require_keychain!();
    assert_fault_keeps_tokens(
        "f-429",
        Some(Fault::TooManyRequests {
            retry_after_secs: 1,
        }),
        6,
        "429",
    );
}

#[test]
fn html_body_is_exit_6_and_keeps_tokens() {
    require_keychain!();
    assert_fault_keeps_tokens("f-html", Some(Fault::Html), 6, "not a JSON token response");
}

#[test]
fn truncated_json_is_exit_6_and_keeps_tokens() {
    require_keychain!();
    assert_fault_keeps_tokens(
        "f-truncated",
        Some(Fault::TruncatedJson),
        6,
        "run the command again",
    );
}

#[test]
fn connection_refused_is_exit_6_and_keeps_tokens() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _) = imported_profile(&fake, "f-refused", DAY);
    let before = env.stored_raw();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.set_env(
        "XERO_AUTH_TOKEN_URL",
        &format!("http://127.0.0.1:{port}/connect/token"),
    );
    env.cmd(&["token"])
        .assert()
        .code(6)
        .stderr(predicates::str::contains("could not connect"));
    assert_eq!(env.stored_raw(), before);
}

#[test]
fn invalid_grant_is_exit_4_and_deletes_nothing() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "f-grant", DAY);
    let before = env.stored_raw();
    // 60 days and a bit later the refresh token has lapsed at Xero.
    fake.advance_clock(Duration::from_secs(61 * 86_400));
    env.cmd(&["token"])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("invalid_grant"))
        .stderr(predicates::str::contains("Nothing was deleted"));
    assert_eq!(env.stored_raw(), before);
}

#[test]
fn invalid_client_is_exit_4_and_deletes_nothing() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "f-client", DAY);
    let before = env.stored_raw();
    // The app's secret was rotated at developer.xero.com: ours is now wrong.
    fake.add_client(CLIENT_ID, Some("a-new-secret-nobody-stored"));
    env.cmd(&["refresh"])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("invalid_client"));
    assert_eq!(env.stored_raw(), before);
}

/// `refresh` on `env` (exit 4, nothing changed); its stderr.
fn refused_client(env: &TestEnv) -> String {
    let before = env.stored_raw();
    let out = env.cmd(&["refresh"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert_eq!(env.stored_raw(), before);
    stderr
}

#[test]
fn invalid_client_says_which_kind_of_app_the_stored_client_was_sent_as() {
    require_keychain!();
    let fake = FakeXero::start();

    // A secret is stored, but the app at Xero is a PKCE app (no secret).
    let (env, _) = imported_profile(&fake, "f-client-public", DAY);
    fake.add_client(CLIENT_ID, None);
    let stderr = refused_client(&env);
    assert!(
        stderr.contains("a client secret is stored for this profile")
            && stderr.contains(&format!(
                "`xero-auth client set --client-id ID --public --profile {}`",
                env.profile
            )),
        "{stderr}"
    );

    // No secret is stored, but the app at Xero has one (a web app).
    let (env, _) = imported_profile(&fake, "f-client-secretless", DAY);
    env.ok(&["client", "set", "--client-id", CLIENT_ID, "--public"]);
    fake.add_client(CLIENT_ID, Some(CLIENT_SECRET));
    let stderr = refused_client(&env);
    assert!(
        stderr.contains("no client secret is stored for this profile")
            && stderr.contains(&format!(
                "`xero-auth client set --client-id ID --profile {}`",
                env.profile
            ))
            && stderr.contains("with the app's secret"),
        "{stderr}"
    );
}

#[test]
fn a_lost_answer_is_recovered_through_the_grace_window() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, old) = imported_profile(&fake, "f-recover", DAY);
    // Xero rotates, the answer is lost once; the retry with the same token succeeds.
    fake.push_fault(Target::Token, Fault::ResetAfterProcessing);
    let out = env.ok(&["token"]).stdout;
    assert!(fake.access_token_valid(String::from_utf8(out).unwrap().trim()));
    let stored = env.stored_refresh_token();
    assert_ne!(stored, old.refresh_token);
    assert_eq!(
        fake.refresh_token_status(&stored),
        RefreshTokenStatus::Active
    );
    assert_eq!(fake.count(Counter::Refresh), 2);
}

#[test]
fn one_temporary_failure_is_retried_within_the_command() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "f-retry", DAY);
    fake.push_fault(Target::Token, Fault::ServerError);
    fake.push_fault(
        Target::Token,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    env.cmd(&["token"]).assert().success();
    assert_eq!(fake.count(Counter::Refresh), 3);
}

/// The time in "usable only until TIME" on `stderr`, in Unix seconds.
fn usable_until(stderr: &str) -> Option<u64> {
    let (_, rest) = stderr.split_once("usable only until ")?;
    let time = humantime::parse_rfc3339(rest.get(..20)?).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `token`, which must fail with exit 6 saying the stored refresh token is usable until 30
/// minutes after `first_sent` (Unix seconds, give or take the run's own seconds); returns stderr.
fn token_names_the_window_from(env: &TestEnv, first_sent: u64) -> String {
    let out = env.cmd(&["token"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    let until = usable_until(&stderr).unwrap_or_else(|| panic!("no time in: {stderr}"));
    assert!(
        (first_sent + 1800..=first_sent + 1800 + 5).contains(&until),
        "30 minutes after the first send ({first_sent}), not {until}: {stderr}"
    );
    stderr
}

/// Runs `token` with the token endpoint broken by `fault` after the request was sent: Xero may
/// have rotated the refresh token, so the stored one is good for 30 minutes at most. The message
/// must say until when (30 minutes after the first send), and tell cron users to retry within
/// that window — not that the stored tokens "stay usable". Returns the test's environment.
fn assert_lost_answer_names_the_window(name: &str, fault: Fault) -> (FakeXero, TestEnv) {
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, name, DAY);
    let before = env.stored_raw();
    fake.set_persistent_fault(Target::Token, Some(fault));

    let started = unix_now();
    let stderr = token_names_the_window_from(&env, started);
    assert!(
        stderr.contains("30 minutes") && stderr.contains("cron") && stderr.contains("again"),
        "{stderr}"
    );
    assert!(!stderr.contains("kept and stay usable"), "{stderr}");
    assert_eq!(env.stored_raw(), before, "stored set unchanged");
    (fake, env)
}

#[test]
fn a_timeout_after_sending_says_until_when_the_stored_token_is_usable() {
    require_keychain!();
    assert_lost_answer_names_the_window("w-timeout", Fault::Delay(Duration::from_secs(3)));
}

#[test]
fn a_reset_before_the_answer_says_until_when_the_stored_token_is_usable() {
    require_keychain!();
    assert_lost_answer_names_the_window("w-reset", Fault::ResetAfterProcessing);
}

#[test]
fn an_answer_cut_short_says_until_when_the_stored_token_is_usable() {
    require_keychain!();
    assert_lost_answer_names_the_window("w-truncated", Fault::TruncatedJson);
}

#[test]
fn a_2xx_that_is_not_a_token_response_says_until_when_the_stored_token_is_usable() {
    require_keychain!();
    assert_lost_answer_names_the_window("w-html", Fault::Html);
}

/// After a run whose answer was lost, a later run that fails plainly (a 500) still names the
/// window of the first send: the stored token may already be spent.
#[test]
fn a_later_plain_failure_still_names_the_window_of_an_unsaved_refresh() {
    require_keychain!();
    let started = unix_now();
    let (fake, env) = assert_lost_answer_names_the_window("w-later", Fault::ResetAfterProcessing);
    fake.set_persistent_fault(Target::Token, Some(Fault::ServerError));
    token_names_the_window_from(&env, started);
}

/// Failures that say the request was not carried out (a 500, a refused connection) keep the
/// plain message: the stored tokens stay usable, no window to race.
#[test]
fn a_failure_before_anything_was_carried_out_says_the_tokens_stay_usable() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "w-500", DAY);
    fake.set_persistent_fault(Target::Token, Some(Fault::ServerError));
    let out = env.cmd(&["token"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("kept and stay usable"), "{stderr}");
    assert!(usable_until(&stderr).is_none(), "{stderr}");
}

/// `token` with every connection to the token endpoint refused; its exit code and stderr.
fn token_with_connection_refused(env: &TestEnv) -> (Option<i32>, String) {
    let out = env
        .cmd(&["token"])
        .env("XERO_AUTH_TOKEN_URL", closed_token_url())
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "no token printed on failure");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Found in use: after a refresh answered `invalid_client` (a definite answer: Xero refused the
/// client before it looked at the refresh token) and the secret fixed, a refresh whose
/// connection was refused warned that the stored refresh token "may have reached Xero" and was
/// usable only for 30 minutes. Neither request spent it: the failure is a plain temporary one.
#[test]
fn a_refused_connection_after_invalid_client_is_a_plain_temporary_failure() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "f-client-then-down", DAY);
    let before = env.stored_raw();
    // The app's secret was rotated at developer.xero.com: the stored one is refused.
    let rotated = "cs-rotated-at-developer-xero-com-0123456789";
    fake.add_client(CLIENT_ID, Some(rotated));
    refused_client(&env);
    // The user stores the new secret; then the network is down.
    env.cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", rotated)
        .assert()
        .success();
    let (code, stderr) = token_with_connection_refused(&env);
    assert_eq!(code, Some(6), "{stderr}");
    assert!(stderr.contains("kept and stay usable"), "{stderr}");
    assert!(!stderr.contains("may have reached"), "{stderr}");
    assert!(usable_until(&stderr).is_none(), "{stderr}");
    assert_eq!(env.stored_raw(), before, "stored set unchanged");
    // And the tokens were indeed still good.
    env.ok(&["token"]);
}

/// An `invalid_grant` refuses a token this run did not spend (it was dead already): a later
/// `invalid_grant` must not blame "an earlier run" that "sent a refresh and ended before it
/// saved Xero's answer".
#[test]
fn a_second_invalid_grant_does_not_blame_the_first_refusal() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "f-grant-twice", DAY);
    // Unused for 61 days: the refresh token expired.
    fake.advance_clock(Duration::from_secs(61 * 86_400));
    for run in ["first", "second"] {
        let out = env.cmd(&["token"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(4), "{run}: {stderr}");
        assert!(stderr.contains("invalid_grant"), "{run}: {stderr}");
        assert!(
            !stderr.contains("An earlier xero-auth run"),
            "{run}: {stderr}"
        );
    }
}

/// The reverse: a refresh whose answer was lost (it timed out after sending) may have rotated
/// the token, and a definite refusal or a refused connection afterwards does not undo that: the
/// window of the first send is still named.
#[test]
fn a_lost_answer_is_remembered_through_later_refusals_and_refused_connections() {
    require_keychain!();
    let started = unix_now();
    let (fake, env) =
        assert_lost_answer_names_the_window("w-lost-then", Fault::Delay(Duration::from_secs(3)));
    fake.set_persistent_fault(Target::Token, None);
    // Then the client is refused (exit 4): the earlier send is still unsaved.
    fake.add_client(
        CLIENT_ID,
        Some("cs-rotated-at-developer-xero-com-0123456789"),
    );
    refused_client(&env);
    let (code, stderr) = token_with_connection_refused(&env);
    assert_eq!(code, Some(6), "{stderr}");
    let until = usable_until(&stderr).unwrap_or_else(|| panic!("no time in: {stderr}"));
    assert!(
        (started + 1800..=started + 1800 + 5).contains(&until),
        "30 minutes after the first send ({started}), not {until}: {stderr}"
    );
}

/// Any error answer from the token endpoint says the refresh was refused, not carried out: an
/// OAuth error (`unauthorized_client`) or a 4xx that is not OAuth. A refused connection after
/// it is a plain temporary failure.
#[test]
fn a_refused_connection_after_any_error_answer_is_a_plain_temporary_failure() {
    require_keychain!();
    let fake = FakeXero::start();
    for (name, fault) in [
        (
            "f-oauth-then-down",
            Fault::OAuthError("unauthorized_client"),
        ),
        ("f-401-then-down", Fault::Unauthorized),
    ] {
        let (env, _) = imported_profile(&fake, name, DAY);
        fake.set_persistent_fault(Target::Token, Some(fault.clone()));
        let out = env.cmd(&["token"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(out.status.code(), Some(0), "{fault:?}: {stderr}");
        assert!(!stderr.contains("may have reached"), "{fault:?}: {stderr}");
        fake.set_persistent_fault(Target::Token, None);
        let (code, stderr) = token_with_connection_refused(&env);
        assert_eq!(code, Some(6), "{fault:?}: {stderr}");
        assert!(
            stderr.contains("kept and stay usable"),
            "{fault:?}: {stderr}"
        );
        assert!(!stderr.contains("may have reached"), "{fault:?}: {stderr}");
    }
}

/// Within one run: an attempt whose answer was lost (Xero carried it out, rotating the token),
/// then a retry refused with an OAuth error. The refusal does not undo the first attempt: a
/// refused connection afterwards still names the window of that first send.
#[test]
fn a_refusal_after_a_lost_attempt_keeps_the_window_of_the_lost_one() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "f-lost-then-refused", DAY);
    // Longer than the command's 2 s timeout: the fake refreshes after the client gave up.
    fake.push_fault(Target::Token, Fault::Delay(Duration::from_secs(3)));
    fake.push_fault(Target::Token, Fault::OAuthError("invalid_request"));
    let started = unix_now();
    let out = env.cmd(&["token"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("invalid_request"), "{stderr}");
    assert_eq!(fake.count(Counter::Refresh), 2, "{stderr}");
    let (code, stderr) = token_with_connection_refused(&env);
    assert_eq!(code, Some(6), "{stderr}");
    let until = usable_until(&stderr).unwrap_or_else(|| panic!("no time in: {stderr}"));
    assert!(
        (started + 1800..=started + 1800 + 5).contains(&until),
        "30 minutes after the first send ({started}), not {until}: {stderr}"
    );
}
