//! `api`, `exec` and `token --env` against the fake Xero's API and the real keychain.

use crate::support;

use std::time::{Duration, Instant};

use fake_xero::{DEFAULT_TENANT_ID, DEFAULT_TENANT_NAME};
use predicates::prelude::PredicateBooleanExt;
use support::*;

const ORGANISATION: &str = "api.xro/2.0/Organisation";

/// How old the imported token file is: its access token has most of its 30 minutes left.
const FRESH: Duration = Duration::from_secs(30);

fn api_statuses(fake: &FakeXero) -> Vec<u16> {
    fake.api_requests_with_status()
        .into_iter()
        .map(|(_, _, s)| s)
        .collect()
}

#[test]
fn api_token_expired_at_xero_refreshes_once_and_retries_once() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-expired", FRESH);
    // Xero says the token expired although the stored expiry says otherwise (clock skew,
    // revoked session…): the tool must not trust its own clock over the server.
    fake.expire_access_tokens();

    let out = env.ok(&["api", ORGANISATION]);

    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["Organisations"][0]["Name"], DEFAULT_TENANT_NAME);
    assert_eq!(fake.count(Counter::Refresh), 1);
    assert_eq!(api_statuses(&fake), vec![401, 200]);
    let records = fake.requests();
    let api: Vec<_> = records
        .iter()
        .filter(|r| r.path.starts_with("/api.xro"))
        .collect();
    assert!(
        api.iter()
            .all(|r| r.tenant.as_deref() == Some(DEFAULT_TENANT_ID) && r.has_bearer)
    );
}

#[test]
fn api_two_401s_in_a_row_is_exit_4_after_one_refresh_and_no_loop() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-401x2", FRESH);
    fake.set_persistent_fault(Target::Api, Some(Fault::Unauthorized));

    env.cmd(&["api", ORGANISATION])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("AuthenticationUnsuccessful"))
        .stderr(predicates::str::contains("xero-auth login"));

    assert_eq!(fake.count(Counter::Refresh), 1);
    assert_eq!(
        fake.count(Counter::Api),
        2,
        "one request, one retry, nothing more"
    );
}

#[test]
fn api_waits_retry_after_on_429_and_succeeds() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-429", FRESH);
    fake.push_fault(
        Target::Api,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );

    let started = Instant::now();
    env.cmd(&["api", ORGANISATION])
        .assert()
        .success()
        .stdout(predicates::str::contains(DEFAULT_TENANT_NAME));

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited Retry-After"
    );
    assert_eq!(api_statuses(&fake), vec![429, 200]);
}

#[test]
fn api_retry_after_beyond_max_wait_is_exit_6_without_waiting() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-429-long", FRESH);
    fake.set_minute_limit(Some(0), 45);

    let started = Instant::now();
    env.cmd(&["api", ORGANISATION, "--max-wait", "5"])
        .assert()
        .code(6)
        .stderr(predicates::str::contains("429"))
        .stderr(predicates::str::contains("--max-wait"));

    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it did not wait 45 s"
    );
    assert_eq!(fake.count(Counter::Api), 1);
}

/// A `Retry-After` of 2^64-1 seconds (the server's number, not ours) used to overflow the wait
/// arithmetic and panic; it is a wait beyond `--max-wait` like any other.
#[test]
fn api_retry_after_of_u64_max_is_exit_6_not_a_panic() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-429-max", FRESH);
    // A --max-wait beyond any clock is a long wait, not an overflow.
    env.cmd(&["api", ORGANISATION, "--max-wait", "18446744073709551615"])
        .assert()
        .success();
    fake.push_fault(
        Target::Api,
        Fault::TooManyRequests {
            retry_after_secs: u64::MAX,
        },
    );
    env.cmd(&["api", ORGANISATION])
        .assert()
        .code(6)
        .stderr(predicates::str::contains("429"))
        .stderr(predicates::str::contains("--max-wait"));
}

#[test]
fn api_without_a_tenant_fails_before_any_request() {
    require_keychain!();
    let fake = FakeXero::start();
    // Two organisations: none is taken as the default (one would be, at the import).
    fake.add_tenant(
        "0b7c3a8e-1d2f-4e5a-9b6c-7d8e9f0a1b2c",
        "Acme Ltd",
        "ORGANISATION",
    );
    let (env, _) = imported_profile(&fake, "api-no-tenant", FRESH);

    env.cmd(&["api", ORGANISATION])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--tenant"))
        .stderr(predicates::str::contains("tenants use"));
    assert_eq!(fake.count(Counter::Api), 0);
    assert_eq!(fake.count(Counter::TokenRequests), 0);

    // /connections needs no tenant.
    env.cmd(&["api", "connections"])
        .assert()
        .success()
        .stdout(predicates::str::contains(DEFAULT_TENANT_ID));
}

/// Without tokens, a tenant would not help: `api` says what is missing first (exit 3), as
/// `exec` and `token` do, instead of asking for a tenant.
#[test]
fn api_without_tokens_says_so_before_asking_for_a_tenant() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "api-no-tokens");
    env.set_client(&fake);

    let out = env.cmd(&["api", ORGANISATION]).assert().code(3);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("no token set stored"), "{stderr}");
    assert!(stderr.contains("xero-auth login"), "{stderr}");
    assert!(!stderr.contains("tenant"), "{stderr}");
    assert_eq!(fake.count(Counter::Api), 0);
}

#[test]
fn api_with_a_wrong_tenant_surfaces_the_403() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-403", FRESH);

    env.cmd(&[
        "api",
        ORGANISATION,
        "--tenant",
        "00000000-0000-0000-0000-000000000000",
    ])
    .assert()
    .code(1)
    .stdout(predicates::str::contains("AuthenticationUnsuccessful"))
    .stderr(predicates::str::contains("403"))
    .stderr(predicates::str::contains(
        "00000000-0000-0000-0000-000000000000",
    ));
}

#[test]
fn api_post_data_from_file_and_stdin_is_sent_unchanged() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-post", FRESH);
    let body =
        "{\"Contacts\":[{\"Name\":\"Ngā Tāngata Ltd\",\"Notes\":\"line1\\nline2 \\\"q\\\"\"}]}\n";
    let file = env.dir.path().join("contact.json");
    std::fs::write(&file, body).unwrap();

    env.cmd(&[
        "api",
        "POST",
        "api.xro/2.0/Contacts",
        "--data",
        &format!("@{}", file.display()),
    ])
    .assert()
    .success();
    assert_eq!(fake.last_api_body().unwrap(), body.as_bytes());

    env.cmd(&["api", "POST", "api.xro/2.0/Contacts", "--data", "-"])
        .write_stdin(body)
        .assert()
        .success();
    assert_eq!(fake.last_api_body().unwrap(), body.as_bytes());
    let stored = fake.posted_contacts(DEFAULT_TENANT_ID);
    assert_eq!(
        stored,
        vec![body.as_bytes().to_vec(), body.as_bytes().to_vec()]
    );
    let content_types: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.content_type)
        .collect();
    assert!(
        content_types
            .iter()
            .all(|c| c.as_deref() == Some("application/json"))
    );

    // GET lists what was posted; --include shows the status line and the rate-limit headers.
    env.cmd(&["api", "api.xro/2.0/Contacts", "--include"])
        .assert()
        .success()
        .stdout(predicates::str::contains("200 OK"))
        .stdout(predicates::str::contains("x-minlimit-remaining"))
        .stdout(predicates::str::contains("Ngā Tāngata Ltd"));
}

#[test]
fn api_verbose_shows_the_rate_limit_headers() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-verbose", FRESH);
    env.cmd(&["-v", "api", ORGANISATION])
        .assert()
        .success()
        .stderr(predicates::str::contains("X-MinLimit-Remaining:"))
        .stderr(predicates::str::contains("X-DayLimit-Remaining:"));
}

#[test]
fn api_refuses_a_full_url_on_another_host() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-host", FRESH);
    env.cmd(&["api", "https://elsewhere.example/api.xro/2.0/Organisation"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("is not on the API origin"));
    assert_eq!(fake.count(Counter::Api), 0);
}

/// Every spelling that resolves off the API origin is refused before the token is read; a
/// second listener on another port stands where the token must never go. `Url::join` turns the
/// backslash, upper-case, leading-space and tab forms into URLs on another host, and userinfo,
/// another port or another scheme change the origin too.
#[test]
fn api_never_sends_the_token_off_the_api_origin_whatever_the_spelling() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-origin", FRESH);
    let trip = Tripwire::start();
    let other = trip.authority();
    let api = format!("http://127.0.0.1:{}", fake.port());
    let api_port = fake.port();
    let refused = [
        format!("\\\\{other}/steal"),
        format!("http:\\\\{other}/steal"),
        format!("\\/{other}/steal"),
        format!("HTTP://{other}/steal"),
        format!("Http://{other}/steal"),
        format!(" http://{other}/steal"),
        format!("\thttp://{other}/steal"),
        format!("ht\ttp://{other}/steal"),
        format!("http://{other}/steal"),
        format!("http://user@{other}/steal"),
        format!("http://user:pw@{other}/steal"),
        format!("http://user@127.0.0.1:{api_port}/{ORGANISATION}"),
        format!("http://127.0.0.1:{api_port}@{other}/steal"),
        format!("https://127.0.0.1:{api_port}/{ORGANISATION}"),
        format!("http://localhost:{api_port}/{ORGANISATION}"),
        format!("localhost:{}/steal", trip.port()),
        format!("https:{other}/steal"),
    ];
    for shape in &refused {
        let out = env.cmd(&["api", shape]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{shape:?}: {stderr}");
        assert!(
            stderr.contains(&format!("the API origin {api}"))
                && stderr.contains("sends the access token only"),
            "{shape:?} must be refused naming the allowed origin: {stderr}"
        );
        assert!(!stderr.contains("user:pw"), "no password quoted: {stderr}");
    }
    // Spellings that stay on the API origin are paths there (the fake answers 404 to them).
    for shape in [
        format!("//{other}/steal"),
        format!("/\\{other}/steal"),
        format!("{other}/steal"),
    ] {
        let out = env.cmd(&["api", &shape]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("404"), "{shape:?}: {stderr}");
    }
    assert_eq!(
        trip.seen(),
        Vec::<String>::new(),
        "nothing reached the other port"
    );
    assert_eq!(
        fake.count(Counter::TokenRequests),
        0,
        "and nothing was refreshed"
    );
}

#[test]
fn exec_passes_token_and_tenant_but_no_refresh_token_or_secret() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "exec-env", FRESH);

    let out = env
        .cmd(&["exec", "--", "sh", "-c", "env; exit 7"])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .env("SYNC_SETTING", "kept")
        .assert()
        .code(7)
        .get_output()
        .clone();

    let child_env = String::from_utf8(out.stdout).unwrap();
    assert!(child_env.contains(&format!("XERO_ACCESS_TOKEN={}\n", tokens.access_token)));
    assert!(child_env.contains(&format!("XERO_TENANT_ID={DEFAULT_TENANT_ID}\n")));
    // The rest of the environment is the child's too (README and scripting.md say so).
    assert!(child_env.contains("SYNC_SETTING=kept\n"), "{child_env}");
    assert!(
        !child_env.contains(&tokens.refresh_token),
        "no refresh token in the child"
    );
    assert!(
        !child_env.contains(CLIENT_SECRET),
        "no client secret in the child"
    );
    assert!(!child_env.contains(&basic_credential()));
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}

#[test]
fn exec_refreshes_first_when_the_token_expires_within_the_margin() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, old) = imported_profile(&fake, "exec-refresh", Duration::from_secs(86_400));

    let out = env.ok(&["exec", "--", "sh", "-c", "printf %s \"$XERO_ACCESS_TOKEN\""]);
    let token = String::from_utf8(out.stdout).unwrap();
    assert_ne!(token, old.access_token);
    assert!(fake.access_token_valid(&token));
    assert_eq!(fake.count(Counter::Refresh), 1);
}

/// Like a shell (and `env`): 127 when the program is not found, 126 when it is found but
/// cannot be run, so a script can tell either from the program's own exit 1.
#[test]
fn exec_of_a_missing_program_is_127_and_of_a_non_executable_one_126() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "exec-missing", FRESH);
    env.cmd(&["exec", "--", "no-such-program-xero-auth-test"])
        .assert()
        .code(127)
        .stderr(predicates::str::contains(
            "cannot run 'no-such-program-xero-auth-test'",
        ))
        .stderr(predicates::str::contains("not found"));

    let script = env.dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    let script = script.to_str().unwrap();
    env.cmd(&["exec", "--", script])
        .assert()
        .code(126)
        .stdout("")
        .stderr(predicates::str::contains(format!("cannot run '{script}'")));
    // A folder is found, and cannot be run either.
    let folder = env.dir.path().to_str().unwrap();
    env.cmd(&["exec", "--", folder]).assert().code(126);
}

#[test]
fn token_env_prints_export_lines_for_eval() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "token-env", FRESH);
    let out = env.ok(&["token", "--env"]).stdout;
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "export XERO_ACCESS_TOKEN='{}'\nexport XERO_TENANT_ID='{DEFAULT_TENANT_ID}'\n",
            tokens.access_token
        )
    );
}

/// `api` sends, Xero answers 401, and meanwhile `import --force` replaced the stored set with
/// one that has no access token (a file without `expires_in`): the refresh that follows must
/// make a new access token, not hand back the imported set (which used to panic: exit 101).
#[test]
fn api_401_while_an_import_replaced_the_set_refreshes_instead_of_panicking() {
    use support::processes::{Running, wait_until};
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _) = ready_profile(&fake, "api-401-import", FRESH);
    env.set_env("XERO_AUTH_HTTP_TIMEOUT", "20");
    fake.push_fault(Target::Api, Fault::Delay(Duration::from_secs(4)));
    let api = Running::spawn(env.std_cmd(&["api", ORGANISATION]));
    wait_until(Duration::from_secs(15), "the API request", || {
        fake.count(Counter::Api) == 1
    });

    let issued = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.dir.path().join("no-expiry.json");
    std::fs::write(
        &file,
        serde_json::json!({
            "access_token": issued.access_token,
            "refresh_token": issued.refresh_token,
            "token_type": "Bearer",
        })
        .to_string(),
    )
    .unwrap();
    env.ok(&["import", "--force", file.to_str().unwrap()]);
    fake.expire_access_tokens();

    let out = api.finish(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(DEFAULT_TENANT_NAME),
        "{stderr}"
    );
    assert_eq!(api_statuses(&fake), vec![401, 200]);
    assert_eq!(
        fake.refresh_token_status(&issued.refresh_token),
        RefreshTokenStatus::UsedInGrace,
        "the imported refresh token was the one refreshed"
    );
}

/// `--tenant` takes an organisation's name (any case) as `tenants use` does, looked up in the
/// connections; an id is used as it is, without a look-up.
#[test]
fn api_and_exec_take_a_tenant_by_name() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-tenant-name", FRESH);
    let lower = DEFAULT_TENANT_NAME.to_lowercase();

    env.cmd(&["api", ORGANISATION, "--tenant", &lower])
        .assert()
        .success();
    let sent: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/Organisation"))
        .map(|r| r.tenant)
        .collect();
    assert_eq!(sent, vec![Some(DEFAULT_TENANT_ID.to_string())]);

    env.cmd(&[
        "exec",
        "--tenant",
        DEFAULT_TENANT_NAME,
        "--",
        "sh",
        "-c",
        "printf %s \"$XERO_TENANT_ID\"",
    ])
    .assert()
    .success()
    .stdout(DEFAULT_TENANT_ID);

    let before = fake.requests().len();
    env.cmd(&["api", ORGANISATION, "--tenant", "Nobody Ltd"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "'Nobody Ltd' matches no connected tenant",
        ))
        .stderr(predicates::str::contains(DEFAULT_TENANT_NAME));
    let after: Vec<_> = fake.requests().into_iter().skip(before).collect();
    assert!(
        after.iter().all(|r| !r.path.contains("api.xro")),
        "no API call for an unknown name: {:?}",
        after.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

/// curl's and gh's `-X METHOD`; a lone method word is a usage mistake, not a path; a 404 on a
/// path without Xero's prefix says what the prefix is.
#[test]
fn api_method_flag_lone_method_and_404_hint() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "api-method", FRESH);

    env.cmd(&["api", "-X", "POST", "api.xro/2.0/Contacts", "--data", "{}"])
        .assert()
        .success();
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with("/Contacts"))
    );

    let before = fake.requests().len();
    env.cmd(&["api", "GET"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("'GET' is an HTTP method"))
        .stderr(predicates::str::contains("xero-auth api GET PATH"));
    env.cmd(&["api", "-X", "PUT", "POST", ORGANISATION])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("two methods"));
    assert_eq!(
        fake.requests().len(),
        before,
        "nothing sent for a usage mistake"
    );

    env.cmd(&["api", "Organisation"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("404"))
        .stderr(predicates::str::contains("paths start with api.xro/2.0/"));
    env.cmd(&["api", "payroll.xro/1.0/Nothing"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("404"))
        .stderr(predicates::str::contains("paths start with").not());
}
