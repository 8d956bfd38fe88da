//! Import, token and refresh against the fake Xero and the real Secret Service.

use crate::support;

use std::time::Duration;

use support::*;

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn imported_classic_file_serves_token_with_zero_requests() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "import-serves");
    env.set_client(&fake);
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(60));

    env.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .success();
    let out = env.ok(&["token"]).stdout;

    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{}\n", tokens.access_token)
    );
    assert_eq!(
        fake.count(Counter::TokenRequests),
        0,
        "a valid stored token needs no request"
    );
    assert!(file.exists(), "without --remove the file stays");
    let header = env.ok(&["token", "--header"]).stdout;
    assert_eq!(
        String::from_utf8(header).unwrap(),
        format!("Authorization: Bearer {}\n", tokens.access_token)
    );
    let json = env.ok(&["token", "--json"]).stdout;
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["access_token"], tokens.access_token.as_str());
    assert_eq!(json["token_type"], "Bearer");
    assert!(json["expires_at"].as_i64().unwrap() > 0);
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}

#[test]
fn import_remove_deletes_the_file_once_the_keychain_holds_the_tokens() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "import-remove");
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(60));

    env.cmd(&["import", "--remove", file.to_str().unwrap()])
        .assert()
        .success()
        .stderr(predicates::str::contains("deleted"));

    assert!(!file.exists());
    assert_eq!(env.stored_refresh_token(), tokens.refresh_token);
    // libsecret's own tool sees the same entry.
    let via_secret_tool = env
        .secret_tool_lookup(&format!("{}/token-set", env.profile))
        .expect("secret-tool finds the entry");
    assert!(via_secret_tool.contains(&tokens.refresh_token));
}

/// `--remove` on a symbolic link used to delete the link, leave the plaintext file it pointed
/// to, and say the tokens were "now only in the keychain". It is refused before anything is
/// stored, naming the file the link points to; without `--remove` the link imports as before.
#[test]
fn import_remove_of_a_symbolic_link_is_refused_naming_the_target_and_changes_nothing() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "import-link");
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let target = env.write_token_file(&tokens, Duration::from_secs(60));
    let link = env.dir.path().join("tokens-link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    env.cmd(&["import", "--remove", link.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("symbolic link"))
        .stderr(predicates::str::contains(target.to_str().unwrap()))
        .stderr(predicates::str::contains("Nothing was stored or deleted"));
    assert!(target.exists() && link.symlink_metadata().is_ok());
    assert!(env.stored_raw().is_none(), "nothing stored");

    env.ok(&["import", link.to_str().unwrap()]);
    assert_eq!(env.stored_refresh_token(), tokens.refresh_token);
}

/// A file with a second name (a hard link) keeps its tokens under that name when one is
/// deleted: `--remove` refuses rather than claim the tokens are gone from disk.
#[test]
fn import_remove_of_a_file_with_another_name_is_refused() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "import-hardlink");
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(60));
    let other = env.dir.path().join("backup-name.json");
    std::fs::hard_link(&file, &other).unwrap();

    env.cmd(&["import", "--remove", file.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("2 names"))
        .stderr(predicates::str::contains("Nothing was stored or deleted"));
    assert!(file.exists() && other.exists());
    assert!(env.stored_raw().is_none(), "nothing stored");
}

#[test]
fn import_refuses_to_replace_a_stored_token_set_without_force() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "import-replace");
    let first = env.import_fresh(&fake, Duration::from_secs(60));
    let second = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&second, Duration::from_secs(60));

    env.cmd(&["import", "--remove", file.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--force"));
    assert_eq!(env.stored_refresh_token(), first.refresh_token);
    assert!(file.exists());

    env.cmd(&["import", "--force", file.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(env.stored_refresh_token(), second.refresh_token);
}

#[test]
fn day_old_file_is_an_expired_access_token_and_token_refreshes_once() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = imported_profile(&fake, "day-old", DAY);

    let status = env.ok(&["status", "--json"]).stdout;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["tokens"]["access_token_valid"], false);

    let out = env.ok(&["token"]).stdout;
    let printed = String::from_utf8(out).unwrap();
    assert_ne!(
        printed.trim(),
        tokens.access_token,
        "the day-old access token must not be served"
    );
    assert!(fake.access_token_valid(printed.trim()));
    assert_eq!(fake.count(Counter::Refresh), 1);

    // The new set was stored before it was printed: the next call is served from the keychain.
    let again = env.ok(&["token"]).stdout;
    assert_eq!(String::from_utf8(again).unwrap(), printed);
    assert_eq!(fake.count(Counter::Refresh), 1);
}

#[test]
fn refresh_rotates_and_old_token_works_only_inside_the_grace_window() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, old) = imported_profile(&fake, "rotate", Duration::from_secs(60));

    env.cmd(&["refresh"])
        .assert()
        .success()
        .stdout(predicates::str::contains("refreshed"));

    let new_rt = env.stored_refresh_token();
    assert_ne!(new_rt, old.refresh_token);
    assert_eq!(
        fake.refresh_token_status(&new_rt),
        RefreshTokenStatus::Active
    );
    assert_eq!(
        fake.refresh_token_status(&old.refresh_token),
        RefreshTokenStatus::UsedInGrace
    );
    let via_secret_tool = env
        .secret_tool_lookup(&format!("{}/token-set", env.profile))
        .unwrap();
    assert!(via_secret_tool.contains(&new_rt) && !via_secret_tool.contains(&old.refresh_token));

    // Inside the grace window, another copy of the old token still refreshes...
    let copy = TestEnv::new(&fake, "rotate-copy");
    copy.set_client(&fake);
    let file = copy.write_token_file(&old, Duration::from_secs(60));
    copy.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .success();
    copy.cmd(&["refresh"]).assert().success();

    // ...and past it, Xero answers invalid_grant: exit 4, nothing deleted.
    fake.advance_clock(Duration::from_secs(31 * 60));
    let late = TestEnv::new(&fake, "rotate-late");
    late.set_client(&fake);
    let file = late.write_token_file(&old, Duration::from_secs(60));
    late.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .success();
    let before = late.stored_raw();
    late.cmd(&["refresh"])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("invalid_grant"))
        .stderr(predicates::str::contains("login"));
    assert_eq!(late.stored_raw(), before, "invalid_grant deletes nothing");
    assert_eq!(
        fake.refresh_token_status(&old.refresh_token),
        RefreshTokenStatus::Spent
    );
}

#[test]
fn sixteen_concurrent_token_calls_make_one_refresh() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "storm16", DAY);
    // Slow the refresh down so that all sixteen are waiting while it runs.
    fake.push_fault(Target::Token, Fault::Delay(Duration::from_millis(300)));

    let children: Vec<_> = (0..16)
        .map(|_| {
            env.std_cmd(&["token"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();

    for out in &outputs {
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let first = &outputs[0].stdout;
    assert!(
        outputs.iter().all(|o| &o.stdout == first),
        "all print the same token"
    );
    assert!(fake.access_token_valid(String::from_utf8_lossy(first).trim()));
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "exactly one refresh request"
    );
}

#[test]
fn public_pkce_client_refreshes_with_client_id_in_the_body() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "public");
    fake.add_client("PUBLICAPP0001", None);
    env.cmd(&["client", "set", "--client-id", "PUBLICAPP0001", "--public"])
        .assert()
        .success();
    let tokens = fake.issue_tokens("PUBLICAPP0001", SCOPE);
    let file = env.write_token_file(&tokens, DAY);
    env.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .success();

    env.cmd(&["refresh"]).assert().success();

    let refreshes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.grant_type.as_deref() == Some("refresh_token"))
        .collect();
    assert_eq!(refreshes.len(), 1);
    assert_eq!(
        refreshes[0].client_auth,
        fake_xero::ClientAuth::PublicClientId
    );
}

#[test]
fn status_shows_lifetimes_and_no_secret() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = imported_profile(&fake, "status", Duration::from_secs(600));

    let out = env.ok(&["status"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        CLIENT_ID,
        "Secret Service",
        "valid until",
        "lapses",
        "offline_access",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    for secret in [CLIENT_SECRET, &tokens.refresh_token, &tokens.access_token] {
        assert!(!text.contains(secret));
    }
    let json = env.ok(&["status", "--json"]).stdout;
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["client_id"], CLIENT_ID);
    assert_eq!(json["client_secret_stored"], true);
    let lapses = json["tokens"]["refresh_token_lapses_at"].as_i64().unwrap();
    let obtained = json["tokens"]["refresh_token_obtained_at"]
        .as_i64()
        .unwrap();
    assert_eq!(lapses - obtained, 60 * 86_400);
}

#[test]
fn nothing_stored_is_exit_3() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "nothing");
    env.cmd(&["token"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains("import"));
    env.cmd(&["status"]).assert().code(3);
    env.cmd(&["client", "show"]).assert().code(3);
}

#[test]
fn refresh_without_client_id_is_exit_3_and_keeps_tokens() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "no-client");
    env.import_fresh(&fake, DAY);
    let before = env.stored_raw();
    env.cmd(&["token"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains("client set"));
    assert_eq!(env.stored_raw(), before);
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}

#[test]
fn client_show_and_remove() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "client");
    env.set_client(&fake);
    let shown = env.ok(&["client", "show", "--json"]).stdout;
    let shown: serde_json::Value = serde_json::from_slice(&shown).unwrap();
    assert_eq!(shown["client_id"], CLIENT_ID);
    assert_eq!(shown["client_secret_stored"], true);
    assert!(
        env.secret_tool_lookup(&format!("{}/client-secret", env.profile))
            .is_some()
    );

    env.cmd(&["client", "remove"]).assert().success();
    assert!(
        env.secret_tool_lookup(&format!("{}/client-secret", env.profile))
            .is_none()
    );
    env.cmd(&["client", "show"]).assert().code(3);
}

#[test]
fn client_secret_from_stdin_is_trimmed_and_stored() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "stdin");
    env.cmd(&["client", "set", "--client-id", CLIENT_ID, "--secret-stdin"])
        .write_stdin(format!("{CLIENT_SECRET}\n"))
        .assert()
        .success();
    assert_eq!(
        env.secret_tool_lookup(&format!("{}/client-secret", env.profile))
            .as_deref(),
        Some(CLIENT_SECRET)
    );
}

#[test]
fn plain_http_endpoint_off_loopback_is_refused_before_any_request() {
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "plain-http");
    env.set_env(
        "XERO_AUTH_TOKEN_URL",
        "http://identity.example.com/connect/token",
    );
    env.cmd(&["status"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("XERO_AUTH_TOKEN_URL"))
        .stderr(predicates::str::contains("https://"));
}

/// With the environment's proxy variables set and one endpoint off loopback (the authorize URL
/// stays Xero's), every loopback endpoint is still reached directly: the refresh (Basic
/// credential, refresh token), the API call (bearer token) and the revocation never cross the
/// proxy, where they would travel in cleartext. The proxy here is a listener that must see
/// nothing.
#[test]
fn loopback_endpoints_never_go_through_the_environment_proxy() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _) = imported_profile(&fake, "proxy", DAY);
    let proxy = Tripwire::start();
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        env.set_env(var, &format!("http://{}", proxy.authority()));
    }
    // Whatever the machine running the tests says: no exceptions.
    env.set_env("NO_PROXY", "");
    env.set_env("no_proxy", "");
    env.set_env(
        "XERO_AUTH_AUTHORIZE_URL",
        "https://login.xero.com/identity/connect/authorize",
    );

    env.ok(&["token"]);
    env.ok(&["api", "connections"]);
    env.ok(&["tenants"]);
    env.ok(&["logout"]);

    assert_eq!(proxy.seen(), Vec::<String>::new(), "the proxy saw nothing");
    assert_eq!(fake.count(Counter::Refresh), 1);
    assert_eq!(fake.count(Counter::Revocation), 1);
}

#[test]
fn import_into_a_profile_without_a_client_id_warns_that_refresh_needs_one() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "import-no-client");
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(60));

    let out = env.ok(&["import", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: profile '{}' has no client id, so `refresh` will fail",
            env.profile
        )) && stderr.contains(&format!(
            "`xero-auth client set --client-id ID --profile {}`",
            env.profile
        )),
        "{stderr}"
    );
    // The import itself stands: the token is served while it is valid.
    let out = env.ok(&["token"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        tokens.access_token
    );

    // With a client id there is nothing to warn about.
    let other = TestEnv::new(&fake, "import-with-client");
    other.set_client(&fake);
    let file = other.write_token_file(&fake.issue_tokens(CLIENT_ID, SCOPE), Duration::ZERO);
    let out = other.ok(&["import", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
}

// ------------------------------------------------------- tenant, stdin, wrapped sets, shared chains

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `exec` printing the XERO_TENANT_ID it was given (empty when none).
const PRINT_TENANT: &[&str] = &["exec", "--", "sh", "-c", "printf %s \"$XERO_TENANT_ID\""];

#[test]
fn import_keeps_the_only_organisation_as_the_default_tenant() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "import-tenant", Duration::from_secs(60));
    let out = env.ok(&["config", "get", "default_tenant"]);
    assert_eq!(
        text(&out.stdout),
        format!("{}\n", fake_xero::DEFAULT_TENANT_ID)
    );

    // Said when it happens, by name.
    let env2 = TestEnv::new(&fake, "import-tenant-said");
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env2.write_token_file(&tokens, Duration::from_secs(60));
    env2.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .success()
        .stderr(predicates::str::contains(format!(
            "default tenant is now {} ({})",
            fake_xero::DEFAULT_TENANT_NAME,
            fake_xero::DEFAULT_TENANT_ID
        )));
}

#[test]
fn status_names_the_default_tenant_as_last_listed_without_a_request() {
    require_keychain!();
    let fake = FakeXero::start();
    // The import lists the connections to adopt the only organisation: its name is kept.
    let (env, _) = imported_profile(&fake, "status-tenant-name", Duration::from_secs(60));
    let before = fake.count(Counter::TokenRequests) + fake.count(Counter::Connections);
    let out = env.ok(&["status"]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!(
            "default tenant: {} ({})",
            fake_xero::DEFAULT_TENANT_NAME,
            fake_xero::DEFAULT_TENANT_ID
        )),
        "{shown}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&env.ok(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["default_tenant"], fake_xero::DEFAULT_TENANT_ID);
    assert_eq!(json["default_tenant_name"], fake_xero::DEFAULT_TENANT_NAME);
    assert_eq!(
        fake.count(Counter::TokenRequests) + fake.count(Counter::Connections),
        before,
        "status asks Xero nothing"
    );

    // A tenant never listed: its id alone, no guess.
    let other = "0b7c3a8e-1d2f-4e5a-9b6c-7d8e9f0a1b2c";
    env.ok(&["config", "set", "default_tenant", other]);
    let shown = text(&env.ok(&["status"]).stdout);
    assert!(
        shown.contains(&format!("default tenant: {other}\n")),
        "{shown}"
    );
}

#[test]
fn exec_after_importing_an_expired_token_takes_the_only_organisation() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "import-old-tenant");
    env.set_client(&fake);
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, DAY);
    env.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .success()
        .stderr(predicates::str::contains("no default tenant yet"));
    assert_eq!(
        fake.count(Counter::TokenRequests),
        0,
        "an import never refreshes"
    );

    let out = env.ok(PRINT_TENANT);
    assert_eq!(text(&out.stdout), fake_xero::DEFAULT_TENANT_ID);
    // One sentence, not one broken by a run of spaces where the source line wrapped.
    assert!(
        text(&out.stderr).contains("default tenant is now")
            && text(&out.stderr).contains("the only organisation the app reaches")
            && !text(&out.stderr).contains("  "),
        "{}",
        text(&out.stderr)
    );
    // Kept: the next command asks no one.
    let before = fake.count(Counter::Connections);
    assert_eq!(
        text(&env.ok(PRINT_TENANT).stdout),
        fake_xero::DEFAULT_TENANT_ID
    );
    assert_eq!(fake.count(Counter::Connections), before);
}

#[test]
fn exec_warns_and_api_refuses_without_a_tenant_when_several_organisations() {
    require_keychain!();
    let fake = FakeXero::start();
    fake.add_tenant(
        "0b7c3a8e-1d2f-4e5a-9b6c-7d8e9f0a1b2c",
        "Acme Ltd",
        "ORGANISATION",
    );
    let (env, _) = imported_profile(&fake, "import-two-orgs", DAY);

    let out = env.ok(PRINT_TENANT);
    assert_eq!(text(&out.stdout), "", "no tenant is guessed");
    let err = text(&out.stderr);
    assert!(
        err.contains("runs without XERO_TENANT_ID")
            && err.contains("Acme Ltd")
            && !err.contains("  "),
        "{err}"
    );
    assert!(err.contains("tenants use ID|NAME --profile"), "{err}");

    let out = env
        .cmd(&["api", "api.xro/2.0/Organisation"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("2 organisations"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fake.count(Counter::Api), 0);
}

#[test]
fn import_from_stdin_stores_the_set_without_a_file() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "import-stdin");
    env.set_client(&fake);
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let body = serde_json::json!({
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": now() + 1200,
        "token_type": "",
    });
    env.cmd(&["import", "-"])
        .write_stdin(body.to_string())
        .assert()
        .success()
        .stderr(predicates::str::contains("from standard input"));
    assert_eq!(env.stored_refresh_token(), tokens.refresh_token);
    assert_eq!(
        text(&env.ok(&["token"]).stdout),
        format!("{}\n", tokens.access_token)
    );

    // --remove has nothing to delete: refused before anything is stored.
    env.wipe_keychain();
    let out = env
        .cmd(&["import", "-", "--remove"])
        .write_stdin(body.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("drop --remove"),
        "{}",
        text(&out.stderr)
    );
    assert!(env.stored().is_none());
}

#[test]
fn wrapped_token_file_is_imported() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "import-wrapped");
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let path = env.dir.path().join("state.json");
    let body = serde_json::json!({
        "token": {
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "expires_in": 1800,
            "token_type": "Bearer",
        },
        "tenant_id": "x",
    });
    std::fs::write(&path, body.to_string()).unwrap();
    env.ok(&["import", path.to_str().unwrap()]);
    assert_eq!(env.stored_refresh_token(), tokens.refresh_token);
}

#[test]
fn importing_one_file_into_two_profiles_warns_of_the_shared_chain() {
    use xero_auth::store::SecretStore;
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "import-twice", DAY);
    let file = env.dir.path().join("xero-access-token.json");
    let other = format!("{}-b", env.profile);
    let out = env
        .cmd(&["import", file.to_str().unwrap(), "--profile", &other])
        .output()
        .unwrap();
    let _ = xero_auth::store::Keychain::new(xero_auth::config::StoreKind::SecretService)
        .delete(&xero_auth::store::token_set_account(&other));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("profile '{}' holds the same tokens", env.profile))
            && err.contains("share one token chain")
            && err.contains(&format!("logout --keep-remote --profile {}", env.profile)),
        "{err}"
    );
}

// ------------------------------------------------------------------------ what a run says

/// A retry that then succeeds is progress, said only with -v, as a sentence (no padded level,
/// no key=value fields); a 429 wait is said without -v, since the command would seem to hang.
#[test]
fn retries_are_said_with_v_only_and_as_plain_sentences() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "retry-lines", DAY);

    fake.push_fault(Target::Token, Fault::ServerError);
    let quiet = env.ok(&["refresh"]);
    let err = text(&quiet.stderr);
    assert!(
        !err.contains("trying again") && !err.contains("WARN"),
        "{err}"
    );

    fake.push_fault(Target::Token, Fault::ServerError);
    let told = env.ok(&["-v", "refresh"]);
    let err = text(&told.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("trying again"))
        .unwrap_or_else(|| panic!("-v says the retry: {err}"));
    assert!(line.starts_with("info: "), "{line}");
    assert!(line.contains("(attempt 2 of"), "{line}");
    assert!(
        !line.contains("attempt=") && !line.contains("endpoint="),
        "{line}"
    );

    fake.push_fault(
        Target::Api,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    let waited = env.ok(&["api", "api.xro/2.0/Organisation"]);
    let err = text(&waited.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("429"))
        .unwrap_or_else(|| panic!("the wait is said: {err}"));
    assert!(
        line.starts_with("warning: ") && line.contains("waiting 1 s"),
        "{line}"
    );
}

#[test]
fn token_with_v_says_a_stored_token_was_handed_out() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "token-v", Duration::from_secs(60));
    let out = env.ok(&["-v", "token"]);
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("info: ") && l.contains("as stored, no request needed")),
        "{err}"
    );
    assert!(
        text(&env.ok(&["token"]).stderr).is_empty(),
        "quiet without -v"
    );
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}
