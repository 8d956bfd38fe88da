//! No secret in output or on disk; an unreachable keychain is exit 5 with no fallback; bad
//! token files leave everything untouched.

use crate::support;

use std::time::Duration;

use support::*;

#[test]
fn unreachable_keychain_is_exit_5_and_no_secret_lands_on_disk() {
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "no-bus");
    fake.add_client(CLIENT_ID, Some(CLIENT_SECRET));
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    // The token file lives outside the folders searched below.
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("tokens.json");
    std::fs::copy(
        env.write_token_file(&tokens, Duration::from_secs(60)),
        &file,
    )
    .unwrap();
    std::fs::remove_file(env.dir.path().join("xero-access-token.json")).unwrap();

    env.set_env(
        "DBUS_SESSION_BUS_ADDRESS",
        "unix:path=/nonexistent/xero-auth-test-bus",
    );
    env.set_env(
        "XDG_RUNTIME_DIR",
        env.dir.path().join("home").to_str().unwrap(),
    );

    env.cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .assert()
        .code(5)
        .stderr(predicates::str::contains("Secret Service"))
        .stderr(predicates::str::contains("headless"));
    env.cmd(&["import", "--remove", file.to_str().unwrap()])
        .assert()
        .code(5);
    assert!(
        file.exists(),
        "the token file is kept when the keychain cannot take it"
    );
    env.cmd(&["token"]).assert().code(5);
    env.cmd(&["refresh"]).assert().code(5);
    env.cmd(&["status"]).assert().code(5);

    for secret in [
        CLIENT_SECRET,
        &tokens.refresh_token,
        &tokens.access_token,
        &tokens.id_token,
    ] {
        let hits = files_containing(env.dir.path(), secret);
        assert!(hits.is_empty(), "a secret was written to {hits:?}");
    }
}

#[test]
fn no_secret_in_any_output_even_at_trace_level() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "trace");
    fake.add_client(CLIENT_ID, Some(CLIENT_SECRET));
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(86_400));

    let mut transcript: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut run = |args: &[&str], secret_env: bool| {
        let mut cmd = env.cmd(args);
        cmd.env("RUST_LOG", "trace");
        if secret_env {
            cmd.env("XERO_CLIENT_SECRET", CLIENT_SECRET);
        }
        let out = cmd.arg("-vvv").output().unwrap();
        transcript.push((args.join(" "), out.stdout, out.stderr));
    };
    run(&["client", "set", "--client-id", CLIENT_ID], true);
    run(&["client", "show"], false);
    run(&["import", file.to_str().unwrap()], false);
    run(&["status"], false);
    run(&["status", "--json"], false);
    run(&["scopes"], false);
    run(&["scopes", "--json"], false);
    run(&["scopes", "for", "Invoices", "POST"], false);
    run(&["token"], false); // refreshes: the day-old access token expired
    run(&["refresh"], false);
    run(&["refresh", "--json"], false);
    run(&["token", "--json"], false);
    fake.set_persistent_fault(Target::Token, Some(Fault::ServerError));
    run(&["refresh"], false);
    fake.set_persistent_fault(Target::Token, None);
    fake.add_client(CLIENT_ID, Some("rotated-secret-value"));
    run(&["refresh"], false);

    let new_rt = env.stored_refresh_token();
    let stored = env.stored().unwrap();
    let new_at = stored["access_token"].as_str().unwrap().to_string();
    let secrets = [
        ("client secret", CLIENT_SECRET.to_string()),
        ("Basic credential", basic_credential()),
        ("imported refresh token", tokens.refresh_token.clone()),
        ("imported access token", tokens.access_token.clone()),
        ("id token", tokens.id_token.clone()),
        ("new refresh token", new_rt),
        ("new access token", new_at.clone()),
    ];
    let mut saw_trace_output = false;
    for (cmd, stdout, stderr) in &transcript {
        saw_trace_output |= !stderr.is_empty();
        for (what, secret) in &secrets {
            let in_stderr = String::from_utf8_lossy(stderr).contains(secret.as_str());
            assert!(!in_stderr, "{what} appeared on stderr of `{cmd}`");
            let allowed_on_stdout = cmd.starts_with("token") && what.contains("access token");
            let in_stdout = String::from_utf8_lossy(stdout).contains(secret.as_str());
            assert!(
                allowed_on_stdout || !in_stdout,
                "{what} appeared on stdout of `{cmd}`"
            );
        }
    }
    assert!(saw_trace_output, "trace logging produced output to check");
    // And `token` did print the access token it exists to print.
    assert!(
        transcript
            .iter()
            .any(|(cmd, stdout, _)| cmd == "token --json"
                && String::from_utf8_lossy(stdout).contains(&new_at))
    );
}

/// "Logs record only this tool's own events": at `-vvv`, and with `RUST_LOG=trace`, every log
/// line's target is one of xero-auth's own modules. The HTTP client (hyper-util) and the D-Bus
/// client (zbus) log through `tracing` too, and their events used to appear from `-vv` on.
#[test]
fn trace_output_holds_only_this_tools_own_events() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "own-events", Duration::from_secs(86_400));
    fake.expire_access_tokens();
    let mut events = 0;
    for (args, rust_log) in [
        (&["-vvv", "refresh"][..], None),
        (&["-vvv", "api", "api.xro/2.0/Organisation"], None),
        (&["-vvv", "tenants"], None),
        (&["status"], Some("trace")),
        (&["-vv", "token"], Some("trace,xero_auth=trace")),
    ] {
        let mut cmd = env.cmd(args);
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}");
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            let mut words = line.split_whitespace();
            if !matches!(
                words.next(),
                Some("trace:" | "debug:" | "info:" | "warning:" | "error:")
            ) {
                continue;
            }
            events += 1;
            let target = words.next().unwrap_or("");
            assert!(
                target.starts_with("xero_auth:") || target.starts_with("xero_auth::"),
                "{args:?} logged another crate's event: {line}"
            );
        }
    }
    // The refresh logs what it does (the request, the stored result).
    assert!(
        events >= 2,
        "the runs logged events of their own ({events})"
    );
}

/// Each bad file gets exit 1 and a message naming the problem; the file and the keychain stay.
#[test]
fn bad_token_files_leave_file_and_keychain_untouched() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "bad-files");
    let good = env.import_fresh(&fake, Duration::from_secs(60));
    let before = env.stored_raw();
    let dir = env.dir.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not-json.json",
            b"refresh_token=abc".to_vec(),
            "is not JSON",
        ),
        (
            "no-refresh.json",
            br#"{"access_token":"eyJ.a.b","expires_in":1800}"#.to_vec(),
            "has no refresh_token",
        ),
        (
            "wrong-type.json",
            br#"{"refresh_token":12345,"expires_in":1800}"#.to_vec(),
            "refresh_token is not a string",
        ),
        (
            "wrong-expiry.json",
            br#"{"refresh_token":"abc","expires_in":"soon"}"#.to_vec(),
            "expires_in is not a number",
        ),
        ("array.json", b"[]".to_vec(), "not a JSON object"),
        (
            "big.json",
            vec![b' '; 10 * 1024 * 1024],
            "a token file is a few KB",
        ),
    ];
    for (name, contents, expected) in &cases {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        env.cmd(&["import", "--remove", "--force", path.to_str().unwrap()])
            .assert()
            .code(1)
            .stderr(predicates::str::contains(*expected))
            .stderr(predicates::str::contains("left untouched"));
        assert_eq!(&std::fs::read(&path).unwrap(), contents, "{name} changed");
        assert_eq!(env.stored_raw(), before, "{name} changed the keychain");
    }

    // A folder, and a path that cannot be opened (a symlink loop; root can read any file mode).
    env.cmd(&["import", "--remove", "--force", dir.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("is a folder"));
    assert!(dir.is_dir());
    let looped = dir.join("loop.json");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    env.cmd(&["import", "--remove", "--force", looped.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("cannot be opened"));
    assert!(looped.symlink_metadata().is_ok());
    assert_eq!(env.stored_raw(), before);
    assert_eq!(env.stored_refresh_token(), good.refresh_token);
}

#[test]
fn unreadable_file_is_refused_when_permissions_apply() {
    require_keychain!();
    use std::os::unix::fs::PermissionsExt;
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "unreadable");
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(60));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&file).is_ok() {
        eprintln!(
            "skipped: running as root, file modes do not stop reads (covered by the symlink-loop case)"
        );
        return;
    }
    env.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("cannot be opened"));
    assert!(env.stored_raw().is_none());
}

/// Writes a token set straight into the profile's keychain entry, as a tampering process or a
/// damaged keyring would leave it.
fn store_raw_set(env: &TestEnv, set: &serde_json::Value) {
    use xero_auth::store::{Keychain, SecretStore, token_set_account};
    Keychain::new(xero_auth::config::StoreKind::SecretService)
        .set(
            &token_set_account(&env.profile),
            "tampered",
            &serde_json::to_vec(set).unwrap(),
        )
        .unwrap();
}

/// An entry whose access token holds a control character (which no header may carry) used to
/// panic in `api` (exit 101). A stored access token is a cache: one that cannot be used is
/// treated as absent, and the next use refreshes.
#[test]
fn a_stored_access_token_with_control_characters_is_refreshed_not_a_panic() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "tampered-at", Duration::from_secs(30));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    store_raw_set(
        &env,
        &serde_json::json!({
            "version": 1,
            "refresh_token": tokens.refresh_token,
            "access_token": "eyJ\u{1}\r\ninjected: yes",
            "expires_at": now + 1500,
            "obtained_at": now,
            "scope": SCOPE,
        }),
    );

    env.cmd(&["api", "api.xro/2.0/Organisation"])
        .assert()
        .success()
        .stdout(predicates::str::contains(fake_xero::DEFAULT_TENANT_NAME));

    assert_eq!(fake.count(Counter::Refresh), 1, "refreshed once");
    let stored = env.stored().unwrap();
    let access = stored["access_token"].as_str().unwrap();
    assert!(fake.access_token_valid(access), "a clean token is stored");
    // `token` prints it as it is now: a usable token.
    let out = env.ok(&["token"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), access);
}

/// A refresh token with whitespace or control characters is refused when read, naming the
/// field: nothing is sent to Xero with it, and the entry is left as it is.
#[test]
fn a_stored_refresh_token_with_control_characters_is_refused_when_read() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "tampered-rt", Duration::from_secs(86_400));
    let set = serde_json::json!({
        "version": 1,
        "refresh_token": "rt\u{0}\nsecret-value",
        "obtained_at": 1_800_000_000,
    });
    store_raw_set(&env, &set);
    let before = env.stored_raw().unwrap();
    let requests_before = fake.count(Counter::TokenRequests);

    for args in [
        &["token"][..],
        &["refresh"],
        &["api", "api.xro/2.0/Organisation"],
    ] {
        let out = env.cmd(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("damaged") && stderr.contains("refresh_token"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("secret-value"), "{stderr}");
    }
    assert_eq!(
        fake.count(Counter::TokenRequests),
        requests_before,
        "nothing was sent with it"
    );
    assert_eq!(
        env.stored_raw().unwrap(),
        before,
        "the entry is left as it is"
    );
}
