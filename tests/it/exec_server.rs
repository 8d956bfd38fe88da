//! `exec --server`: the loopback token endpoint a command gets for as long as it runs, against
//! the fake Xero and the real keychain. The command is tests/it/support/token_client.py, which
//! fetches tokens when the test tells it to.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use fake_xero::DEFAULT_TENANT_ID;
use serde_json::Value;
use support::driven::{Driven, children_of, environ_of, holds};
use support::*;

/// How old the imported token file is: its access token has most of its 30 minutes left.
const FRESH: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(60);

fn client_script() -> String {
    format!(
        "{}/tests/it/support/token_client.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `xero-auth exec --server ARGS… -- python3 token_client.py`, started.
fn serve(env: &TestEnv, extra: &[&str]) -> Driven {
    let script = client_script();
    let mut args = vec!["exec", "--server"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "python3", &script]);
    Driven::spawn(env.std_cmd(&args))
}

/// One `GET` through the child; the answer's status and JSON body.
fn fetch(server: &mut Driven, query: &str) -> (u64, Value) {
    server.send(&format!("GET {query}"));
    let answer = server.recv(WAIT);
    let body = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap_or(Value::Null);
    (answer["status"].as_u64().unwrap(), body)
}

fn token_of(body: &Value) -> String {
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token in {body}"))
        .to_string()
}

#[test]
fn a_child_gets_a_valid_new_token_after_each_expiry_with_one_refresh_each() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "srv-expiry", FRESH);
    // At trace level, so that the check of stderr below covers every log line.
    let mut server = serve(&env, &["-vvv"]);

    let (status, body) = fetch(&mut server, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(token_of(&body), tokens.access_token);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["tenant_id"], DEFAULT_TENANT_ID);
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((1700..=1800).contains(&expires_in), "{body}");
    // Unix seconds, as in every JSON the tool prints; RFC 3339 under a name of its own.
    let expires_at = body["expires_at"].as_i64().unwrap();
    assert!((1700..=1800).contains(&(expires_at - now())), "{body}");
    let rfc3339 = body["expires_at_rfc3339"].as_str().unwrap();
    let parsed = humantime::parse_rfc3339(rfc3339).unwrap();
    assert_eq!(
        parsed
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
        expires_at,
        "{body}"
    );
    assert!(body.get("refresh_token").is_none());
    assert_eq!(fake.count(Counter::Refresh), 0);

    let mut previous = tokens.access_token.clone();
    for expiry in 1..=3 {
        env.set_stored_expiry(now() - 60);
        let (status, body) = fetch(&mut server, "");
        assert_eq!(status, 200, "{body}");
        let token = token_of(&body);
        assert_ne!(token, previous, "expiry {expiry}: a new token");
        assert!(fake.access_token_valid(&token), "expiry {expiry}");
        assert_eq!(
            fake.count(Counter::Refresh),
            expiry,
            "one refresh per expiry"
        );
        assert_eq!(env.stored_access_token(), token, "stored before handed out");
        // Until the next expiry the same token comes back, without a request.
        let (_, again) = fetch(&mut server, "");
        assert_eq!(token_of(&again), token);
        assert_eq!(fake.count(Counter::Refresh), expiry);
        previous = token;
    }

    server.send("EXIT 0");
    let (status, _, stderr) = server.finish(WAIT);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("token endpoint"), "trace output: {stderr}");
    for secret in support::processes::every_issued_secret(&fake)
        .iter()
        .map(String::as_str)
        .chain([CLIENT_SECRET, basic_credential().as_str()])
    {
        assert!(!stderr.contains(secret), "a secret in the log: {stderr}");
    }
}

#[test]
fn min_valid_asks_for_a_longer_margin() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "srv-min-valid", FRESH);
    // Ten minutes left: enough for the default 5-minute margin, not for 25 minutes.
    env.set_stored_expiry(now() + 600);
    let mut server = serve(&env, &[]);

    let (_, body) = fetch(&mut server, "");
    assert_eq!(token_of(&body), tokens.access_token);
    assert_eq!(fake.count(Counter::Refresh), 0);
    let (status, body) = fetch(&mut server, "?min_valid=1500");
    assert_eq!(status, 200, "{body}");
    assert_ne!(token_of(&body), tokens.access_token);
    assert!(body["expires_in"].as_i64().unwrap() > 1500);
    assert_eq!(fake.count(Counter::Refresh), 1);

    for bad in ["?min_valid=abc", "?min_valid=-1", "?min_valid=1501"] {
        let (status, body) = fetch(&mut server, bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("0 to 1500"),
            "{body}"
        );
    }
    assert_eq!(fake.count(Counter::Refresh), 1);
    server.send("EXIT 0");
    server.finish(WAIT);
}

#[test]
fn fifty_concurrent_fetches_make_one_refresh() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "srv-fifty", FRESH);
    let mut server = serve(&env, &[]);
    server.send("PID");
    server.recv(WAIT);
    env.set_stored_expiry(now() - 60);

    server.send("PAR 50");
    let answers = server.recv(WAIT);
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 50);
    let mut seen = std::collections::HashSet::new();
    for answer in answers {
        assert_eq!(answer["status"], 200, "{answer}");
        let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        seen.insert(token_of(&body));
    }
    assert_eq!(seen.len(), 1, "every fetch got the same token");
    let token = seen.into_iter().next().unwrap();
    assert_ne!(token, tokens.access_token);
    assert!(fake.access_token_valid(&token));
    assert_eq!(fake.count(Counter::Refresh), 1);
    server.send("EXIT 0");
    server.finish(WAIT);
}

#[test]
fn sixteen_concurrent_refusals_of_one_token_make_one_refresh() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "srv-refused", FRESH);
    let mut server = serve(&env, &[]);
    let (_, first) = fetch(&mut server, "");
    assert_eq!(token_of(&first), tokens.access_token);
    let id = first["access_token_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "{first}");
    assert!(
        !tokens.access_token.contains(&id),
        "an id, not a piece of the token"
    );
    // Valid for 30 minutes by its expiry, but the API refuses it from now on.
    fake.refuse_access_tokens();

    server.send(&format!("PAR 16 ?refused={id}"));
    let answers = server.recv(WAIT);
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 16);
    let mut seen = std::collections::HashSet::new();
    for answer in answers {
        assert_eq!(answer["status"], 200, "{answer}");
        let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        seen.insert(token_of(&body));
    }
    assert_eq!(seen.len(), 1, "every worker got the same new token");
    let token = seen.into_iter().next().unwrap();
    assert_ne!(token, tokens.access_token);
    assert!(fake.access_token_valid(&token));
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "one refresh for 16 refusals"
    );
    assert_eq!(env.stored_access_token(), token);

    // A refusal that arrives after the refresh names the old token: the newer one, no request.
    let (status, late) = fetch(&mut server, &format!("?refused={}", id.to_uppercase()));
    assert_eq!(status, 200, "{late}");
    assert_eq!(token_of(&late), token);
    assert_eq!(fake.count(Counter::Refresh), 1);
    // Not an id: 400, no token, nothing refreshed.
    for bad in ["?refused=xyz", "?refused=0123456789abcde", "?refused="] {
        let (status, body) = fetch(&mut server, bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.get("access_token").is_none());
    }
    assert_eq!(fake.count(Counter::Refresh), 1);
    server.send("EXIT 0");
    server.finish(WAIT);
}

#[test]
fn token_refused_gets_a_new_token_once_and_matches_the_endpoints_json() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "tok-refused", FRESH);
    let json = |args: &[&str]| -> Value { serde_json::from_slice(&env.ok(args).stdout).unwrap() };
    let first = json(&["token", "--json"]);
    assert_eq!(first["access_token"], tokens.access_token.as_str());
    let id = first["access_token_id"].as_str().unwrap().to_string();
    fake.refuse_access_tokens();

    let second = json(&["token", "--json", "--refused", &id]);
    assert_ne!(second["access_token"], first["access_token"]);
    assert!(fake.access_token_valid(second["access_token"].as_str().unwrap()));
    assert_ne!(second["access_token_id"], first["access_token_id"]);
    assert_eq!(fake.count(Counter::Refresh), 1);
    // The same refusal again (another script that saw the same 401): the newer token, no request.
    let third = json(&["token", "--json", "--refused", &id]);
    assert_eq!(third["access_token"], second["access_token"]);
    assert_eq!(fake.count(Counter::Refresh), 1);
    env.cmd(&["token", "--refused", "not-hex"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("16 to 64 hex digits"));

    // `token --json` and the endpoint give the same fields, of the same kinds.
    let mut server = serve(&env, &[]);
    let (_, endpoint) = fetch(&mut server, "");
    server.send("EXIT 0");
    server.finish(WAIT);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&third), keys(&endpoint), "{third} / {endpoint}");
    for (k, v) in third.as_object().unwrap() {
        let e = &endpoint[k];
        if k == "expires_in" {
            assert!(
                (v.as_i64().unwrap() - e.as_i64().unwrap()).abs() <= 5,
                "{k}"
            );
        } else {
            assert_eq!(v, e, "{k}");
        }
    }
    assert_eq!(endpoint["scope"], tokens.scope.as_str());
    assert_eq!(endpoint["tenant_id"], DEFAULT_TENANT_ID);
    assert!(endpoint.get("refresh_token").is_none());
}

#[test]
fn a_wrong_or_missing_key_another_path_or_method_gets_no_token() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "srv-refused", FRESH);
    let mut server = serve(&env, &[]);
    // The command runs (so the start-up's own token read is over) before the set expires: a
    // refresh at start-up under a loaded machine is not one of the refused requests'.
    server.send("RAW GET /token none");
    assert_eq!(server.recv(WAIT)["status"], 403);
    env.set_stored_expiry(now() - 60);

    for (request, status) in [
        ("RAW GET /token none", 403),
        ("RAW GET /token wrong", 403),
        ("RAW GET /token short", 403),
        ("RAW GET /other right", 404),
        ("RAW GET / right", 404),
        ("RAW POST /token right", 405),
        ("RAW DELETE /token right", 405),
    ] {
        server.send(request);
        let answer = server.recv(WAIT);
        assert_eq!(answer["status"], status, "{request}: {answer}");
        let body = answer["body"].as_str().unwrap();
        assert!(
            !body.contains("access_token") && !body.contains(&tokens.access_token),
            "{request}: {body}"
        );
        if status == 403 {
            assert!(body.contains("X-Xero-Auth-Key"), "{body}");
        }
    }
    // Refused requests reach nothing: no refresh was made for them.
    assert_eq!(fake.count(Counter::TokenRequests), 0);
    // The right key still works.
    server.send("RAW GET /token right");
    assert_eq!(server.recv(WAIT)["status"], 200);
    assert_eq!(fake.count(Counter::Refresh), 1);

    server.send("EXIT 0");
    let (_, _, stderr) = server.finish(WAIT);
    assert!(stderr.contains("without the right key"), "{stderr}");
}

#[test]
fn the_childs_exit_status_comes_back_and_the_endpoint_goes_with_it() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "srv-exit", FRESH);
    let mut server = serve(&env, &[]);
    server.send("RAW GET /token right");
    assert_eq!(server.recv(WAIT)["status"], 200);
    let pid = server.pid();
    let child = children_of(pid)[0];
    let port = std::fs::read(format!("/proc/{child}/environ"))
        .ok()
        .and_then(|e| {
            let text = String::from_utf8_lossy(&e).into_owned();
            text.split('\0')
                .find_map(|v| v.strip_prefix("XERO_AUTH_ENDPOINT=http://127.0.0.1:"))
                .and_then(|rest| rest.split('/').next())
                .and_then(|p| p.parse::<u16>().ok())
        })
        .expect("the child's environment names the endpoint");

    server.send("EXIT 7");
    let (status, _, stderr) = server.finish(WAIT);
    assert_eq!(status.code(), Some(7), "{stderr}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the endpoint is gone"
    );
}

/// A refresh the endpoint started is finished and stored even when the command ends (and its
/// connection goes) while Xero has not answered yet: cutting it short would lose the rotated
/// refresh token until the grace window saved it.
#[test]
fn a_refresh_under_way_when_the_child_ends_is_still_stored() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "srv-finish", FRESH);
    let mut server = serve(&env, &[]);
    env.set_stored_expiry(now() - 60);
    fake.push_fault(Target::Token, Fault::Delay(Duration::from_millis(1500)));

    server.send("ASYNC");
    server.recv(WAIT);
    support::processes::wait_until(WAIT, "the refresh to reach the fake", || {
        fake.count(Counter::Refresh) == 1
    });
    server.send("EXIT 0");
    let (status, _, stderr) = server.finish(WAIT);
    assert!(status.success(), "{stderr}");

    let stored = env.stored_refresh_token();
    assert_ne!(stored, tokens.refresh_token, "the new tokens were stored");
    assert_eq!(
        fake.refresh_token_status(&stored),
        RefreshTokenStatus::Active
    );
    assert_eq!(fake.count(Counter::Refresh), 1);
}

#[test]
fn stop_signals_are_passed_on_and_the_childs_status_comes_back() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "srv-signals", FRESH);
    for (signal, name) in [(2, "INT"), (15, "TERM"), (1, "HUP")] {
        let mut server = serve(&env, &[]);
        server.send("SIGNALS");
        assert_eq!(server.recv(WAIT)["catching"], true);
        let status = Command::new("kill")
            .args([&format!("-{name}"), &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            server.recv(WAIT)["signal"],
            signal,
            "the child got SIG{name}"
        );
        let (status, _, stderr) = server.finish(WAIT);
        assert_eq!(
            status.code(),
            Some(50 + signal),
            "SIG{name}: xero-auth ends with the child's status: {stderr}"
        );
    }

    // A child that a signal ends: 128 + N, as a shell reports it.
    let server = Driven::spawn(env.std_cmd(&["exec", "--server", "--", "sleep", "30"]));
    support::processes::wait_until(WAIT, "the child to start", || {
        !children_of(server.pid()).is_empty()
    });
    Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    let (status, _, _) = server.finish(WAIT);
    assert_eq!(status.code(), Some(128 + 15));
}

/// A stop signal that reaches xero-auth after the command was started but before its id is
/// known (held there by the `child-started` point) is passed on once it is, not lost: the
/// command would otherwise run to its end and xero-auth report its success.
#[test]
fn a_stop_signal_while_the_command_starts_is_passed_on_not_lost() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "srv-signal-start", FRESH);
    let mut cmd = env.std_cmd(&["exec", "--server", "--", "sleep", "30"]);
    cmd.env("FAILPOINTS", "child-started=sleep(1500)");
    let server = Driven::spawn(cmd);
    support::processes::wait_until(WAIT, "the child to start", || {
        !children_of(server.pid()).is_empty()
    });
    Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let (status, _, stderr) = server.finish(WAIT);
    assert_eq!(status.code(), Some(128 + 15), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the command did not run to its end"
    );
}

/// Ctrl-C on a terminal reaches the whole foreground process group: the command gets it, and
/// xero-auth, which gets it too, stays to end with the command's status instead of dying.
/// (That the kernel's signal is not also passed on cannot be seen reliably from the command: a
/// second SIGINT that arrives before the first was taken merges with it.)
#[test]
fn ctrl_c_on_a_terminal_reaches_the_child_and_xero_auth_ends_with_its_status() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "srv-ctrl-c", FRESH);
    // The wake-up fd gets one byte for every delivery.
    let child = "import os, signal, time\n\
                 r, w = os.pipe()\n\
                 os.set_blocking(r, False)\n\
                 os.set_blocking(w, False)\n\
                 signal.set_wakeup_fd(w)\n\
                 signal.signal(signal.SIGINT, lambda s, f: None)\n\
                 print('ready', flush=True)\n\
                 time.sleep(1)\n\
                 print('sigints=%d' % len(os.read(r, 100)), flush=True)\n\
                 raise SystemExit(7)\n";
    let pty = format!(
        "{}/tests/it/support/under_pty.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = env.std_cmd(&[]);
    let xero_auth = cmd.get_program().to_owned();
    cmd = {
        let mut wrapped = Command::new("python3");
        wrapped.arg(&pty).arg(xero_auth);
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    };
    cmd.args(["exec", "--server", "--", "python3", "-c", child]);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{text}");
    assert!(
        text.contains("sigints=1") || text.contains("sigints=2"),
        "{text}"
    );
}

#[test]
fn the_child_sees_the_access_token_and_key_and_no_other_secret() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "srv-environ", FRESH);
    let mut cmd = env.std_cmd(&["exec", "--server", "--", "python3", &client_script()]);
    cmd.env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .env("XERO_AUTH_PASSPHRASE", "a-passphrase-for-the-file-store");
    let mut server = Driven::spawn(cmd);
    server.send("PID");
    let pid = server.recv(WAIT)["pid"].as_u64().unwrap() as u32;
    assert_eq!(children_of(server.pid()), vec![pid]);

    let environ = environ_of(pid).expect("the child's environment is readable");
    assert!(holds(
        &environ,
        &format!("XERO_ACCESS_TOKEN={}", tokens.access_token)
    ));
    assert!(holds(
        &environ,
        &format!("XERO_TENANT_ID={DEFAULT_TENANT_ID}")
    ));
    assert!(holds(&environ, "XERO_AUTH_ENDPOINT=http://127.0.0.1:"));
    assert!(holds(&environ, "XERO_AUTH_ENDPOINT_KEY="));
    for secret in [
        CLIENT_SECRET,
        &tokens.refresh_token,
        &basic_credential(),
        "a-passphrase-for-the-file-store",
    ] {
        assert!(
            !holds(&environ, secret),
            "a secret is in the child's environment"
        );
    }
    let key = String::from_utf8_lossy(&environ)
        .split('\0')
        .find_map(|v| {
            v.strip_prefix("XERO_AUTH_ENDPOINT_KEY=")
                .map(str::to_string)
        })
        .unwrap();
    assert!(key.len() >= 43, "32 random bytes or more");
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "URL-safe: {key}"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
    assert!(!holds(&cmdline, &key) && !holds(&cmdline, &tokens.access_token));

    server.send("EXIT 0");
    let (_, _, stderr) = server.finish(WAIT);
    assert!(!stderr.contains(&key));
}

#[test]
fn a_missing_program_is_a_clear_error_before_anything_listens() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "srv-missing", FRESH);
    env.cmd(&["exec", "--server", "--", "no-such-program-xa"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("cannot run 'no-such-program-xa'"));
}

#[test]
fn the_endpoint_says_what_to_do_when_no_token_can_be_had() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "srv-no-set", FRESH);
    let mut server = serve(&env, &[]);
    server.send("PID");
    server.recv(WAIT);
    env.wipe_keychain();
    let (status, body) = fetch(&mut server, "");
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "nothing_stored");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("xero-auth login"),
        "{body}"
    );
    server.send("EXIT 0");
    let (status, _, stderr) = server.finish(WAIT);
    assert!(status.success());
    assert!(stderr.contains("no token set stored"), "{stderr}");
}

/// One meaning per name: the command finds its endpoint in XERO_AUTH_ENDPOINT and
/// XERO_AUTH_ENDPOINT_KEY, and XERO_AUTH_TOKEN_URL as the user set it (the identity server's
/// token endpoint), so a `xero-auth refresh` it runs goes where the user said, not to the
/// profile's token_url. Before, XERO_AUTH_TOKEN_URL named the endpoint in the command, and a
/// nested `xero-auth` ignored it.
#[test]
fn a_xero_auth_run_by_the_child_refreshes_at_the_token_url_the_user_set() {
    require_keychain!();
    let fake = FakeXero::start();
    // The profile names another identity server; the user's XERO_AUTH_TOKEN_URL (set by
    // TestEnv to `fake`'s) overrides it, inside the command as outside.
    let elsewhere = FakeXero::start();
    let (env, _) = ready_profile(&fake, "srv-nested", FRESH);
    let config = env.dir.path().join("config/xero-auth/config.toml");
    let mut doc: toml_edit::DocumentMut =
        std::fs::read_to_string(&config).unwrap().parse().unwrap();
    doc["profiles"][env.profile.as_str()]["token_url"] = toml_edit::value(elsewhere.token_url());
    std::fs::write(&config, doc.to_string()).unwrap();

    // The child shows its environment, then refreshes.
    let script = format!("env; exec {} refresh", env!("CARGO_BIN_EXE_xero-auth"));
    let mut cmd = env.cmd(&["exec", "--server", "--", "sh", "-c", &script]);
    // A key of the retired name in the caller's environment is not passed on.
    cmd.env("XERO_AUTH_TOKEN_KEY", "a-key-of-an-older-endpoint");
    let out = cmd.assert().success().get_output().clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("refreshed"), "{stdout}");
    assert_eq!(fake.count(Counter::Refresh), 1);
    assert_eq!(elsewhere.count(Counter::TokenRequests), 0);

    let lines: Vec<&str> = stdout.lines().collect();
    let value = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let endpoint = value("XERO_AUTH_ENDPOINT").expect("the command is given its endpoint");
    assert!(endpoint.starts_with("http://127.0.0.1:") && endpoint.ends_with("/token"));
    assert!(value("XERO_AUTH_ENDPOINT_KEY").is_some_and(|k| k.len() >= 43));
    assert_eq!(
        value("XERO_AUTH_TOKEN_URL"),
        Some(fake.token_url()),
        "the user's value, not the command's endpoint"
    );
    assert_eq!(value("XERO_AUTH_TOKEN_KEY"), None);
}

/// The store refuses the refreshed set's writes: the endpoint serves the new token from memory
/// and says so once; at the next fetch the write is retried and lands, and the spent refresh
/// token never reaches Xero again.
#[test]
fn a_refreshed_set_the_store_refused_is_served_and_saved_at_the_next_fetch() {
    require_keychain!();
    if !cfg!(feature = "failpoints") {
        eprintln!("skipped: needs --features failpoints");
        return;
    }
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "srv-unsaved", FRESH);
    let mut cmd = env.std_cmd(&["exec", "--server", "--", "python3", &client_script()]);
    // The refresh's three write attempts are refused; later writes go through.
    cmd.env("FAILPOINTS", "refresh-write-refused=3*return");
    let mut server = Driven::spawn(cmd);

    env.set_stored_expiry(now() - 60);
    let (status, body) = fetch(&mut server, "");
    assert_eq!(status, 200, "{body}");
    let token = token_of(&body);
    assert!(fake.access_token_valid(&token));
    assert_ne!(env.stored_access_token(), token, "not stored yet");
    server.wait_for_stderr("kept in this process's memory only", WAIT);

    let (status, body) = fetch(&mut server, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(token_of(&body), token);
    assert_eq!(env.stored_access_token(), token, "saved at the next fetch");
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "the spent token was not sent again"
    );

    server.send("EXIT 0");
    let (status, _, stderr) = server.finish(WAIT);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("is saved in"), "{stderr}");
}

/// Found in review: a set kept unsaved was lost when the command ended before its next fetch.
/// Now the end of `exec --server` makes one more attempt at storing it.
#[test]
fn a_set_kept_unsaved_is_saved_when_the_command_ends() {
    require_keychain!();
    if !cfg!(feature = "failpoints") {
        eprintln!("skipped: needs --features failpoints");
        return;
    }
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "srv-unsaved-end", FRESH);
    let mut cmd = env.std_cmd(&["exec", "--server", "--", "python3", &client_script()]);
    cmd.env("FAILPOINTS", "refresh-write-refused=3*return");
    let mut server = Driven::spawn(cmd);
    env.set_stored_expiry(now() - 60);
    let (status, body) = fetch(&mut server, "");
    assert_eq!(status, 200, "{body}");
    let token = token_of(&body);
    assert_ne!(env.stored_access_token(), token, "not stored yet");
    server.send("EXIT 0");
    let (status, _, stderr) = server.finish(WAIT);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        env.stored_access_token(),
        token,
        "saved as the command ended"
    );
    assert_eq!(fake.count(Counter::Refresh), 1);
}

/// Holds `N` idle connections to 127.0.0.1:`PORT` open, opening a new one for each that the
/// server closes, as fast as it can; prints `ready` once `N` have been opened.
const FLOOD: &str = r#"
import resource, selectors, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except (OSError, ValueError):
    pass
sel = selectors.DefaultSelector()
opened, told = 0, False
while True:
    while len(sel.get_map()) < n:
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            break
        sel.register(s, selectors.EVENT_READ)
        opened += 1
    if not told and opened >= n:
        print("ready", flush=True)
        told = True
    for key, _ in sel.select(timeout=0.05):
        try:
            data = key.fileobj.recv(1)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
"#;

/// `setpriv` arguments that run a program as user `nobody`, and a python3 that `nobody` can
/// run; or why not. Only root can switch users.
fn as_nobody() -> Result<(Vec<String>, String), String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root, so no other user can be simulated".into());
    }
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, "nobody"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let (Some(uid), Some(gid)) = (id("-u"), id("-g")) else {
        return Err("no user nobody".into());
    };
    let setpriv = vec![
        "setpriv".to_string(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".to_string(),
    ];
    // The python3 on PATH may live under root's home, out of nobody's reach.
    let on_path = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    for python in [
        on_path.as_str(),
        "/usr/bin/python3",
        "/usr/local/bin/python3",
    ] {
        let runs = !python.is_empty()
            && Command::new(&setpriv[0])
                .args(&setpriv[1..])
                .args([python, "-c", "pass"])
                .current_dir("/")
                .status()
                .is_ok_and(|s| s.success());
        if runs {
            return Ok((setpriv, python.to_string()));
        }
    }
    Err("setpriv (util-linux) or a python3 that user nobody can run is missing".into())
}

#[test]
fn another_users_idle_connections_do_not_stop_the_childs_fetches() {
    require_keychain!();
    let (setpriv, python) = match as_nobody() {
        Ok(found) => found,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("this test must run on CI, as root: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "srv-flood", FRESH);
    let script = client_script();
    let mut cmd = env.std_cmd(&["exec", "--server", "--", "python3", &script]);
    // The soft open-file limit many systems start a process with.
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: one async-signal-safe system call between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                limit.rlim_cur = limit.rlim_cur.min(1024);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                Ok(())
            });
        }
    }
    let mut server = Driven::spawn(cmd);
    server.send("URL");
    let url = server.recv(WAIT)["url"].as_str().unwrap().to_string();
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/token")
        .to_string();
    let (status, _) = fetch(&mut server, "");
    assert_eq!(status, 200);

    // More idle connections than a 1024-descriptor process can hold, from user nobody.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut flood = Command::new(&setpriv[0])
        .args(&setpriv[1..])
        .args([python.as_str(), "-c", FLOOD, &port, "1500"])
        .current_dir("/")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(flood.0.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready", "the flood did not start");

    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        let (status, body) = fetch(&mut server, "");
        let took = started.elapsed();
        assert_eq!(status, 200, "{body}");
        assert_eq!(token_of(&body), tokens.access_token);
        slowest = slowest.max(took);
    }
    drop(flood);
    // Before the fix a fetch failed (500) or waited for the flood to end; 3 s leaves room for a
    // loaded machine without letting a stalled endpoint pass.
    assert!(
        slowest < Duration::from_secs(3),
        "a fetch took {slowest:?} while another user held connections open"
    );

    server.send("EXIT 0");
    let (status, _, stderr) = server.finish(WAIT);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("refused a connection from user id"),
        "the refusal is logged once: {stderr}"
    );
}

#[test]
fn a_replacement_refused_too_is_logged_as_the_call_not_the_token() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "srv-refused-twice", FRESH);
    let mut server = serve(&env, &[]);
    let (_, first) = fetch(&mut server, "");
    let first_id = first["access_token_id"].as_str().unwrap().to_string();
    fake.refuse_access_tokens();
    // One refusal: a new token, and nothing to say.
    let (status, second) = fetch(&mut server, &format!("?refused={first_id}"));
    assert_eq!(status, 200, "{second}");
    let second_id = second["access_token_id"].as_str().unwrap().to_string();
    assert_ne!(second_id, first_id);
    // The same first refusal again (another worker): the same replacement, still nothing.
    fetch(&mut server, &format!("?refused={first_id}"));
    assert_eq!(fake.count(Counter::Refresh), 1);
    // The replacement refused too, twice: told once, and no second refresh (Xero refuses the
    // call, not the token: a program retrying each call would spend one refresh per call).
    let (_, again) = fetch(&mut server, &format!("?refused={second_id}"));
    let (_, third) = fetch(&mut server, &format!("?refused={}", &second_id[..16]));
    assert_eq!(token_of(&again), token_of(&second));
    assert_eq!(token_of(&third), token_of(&second));
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "one refresh for the first refusal only"
    );
    server.send("EXIT 0");
    let (status, _, stderr) = server.finish(WAIT);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("was refused too").count(),
        1,
        "told once: {stderr}"
    );
    assert!(
        stderr.contains(&format!("it was granted: {}", tokens.scope)),
        "{stderr}"
    );
    assert!(stderr.contains("scopes for PATH [METHOD]"), "{stderr}");
    for token in [&tokens.access_token, &tokens.refresh_token] {
        assert!(!stderr.contains(token.as_str()), "a token in the log");
    }
    for doc in [&second, &third] {
        assert!(!stderr.contains(&token_of(doc)), "a token in the log");
    }
}
