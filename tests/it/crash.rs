//! Nothing is lost when a process dies at any step of the refresh protocol, of login's code
//! exchange, or of import: a process is crashed at each crash point (`std::process::abort()`:
//! no unwinding, no destructors — see src/failpoints.rs), then a fresh `xero-auth` run, with
//! no user action, ends with a valid access token and a stored refresh token Xero accepts.
//!
//! Where recovery rests on Xero's 30-minute grace window (the request reached Xero, the answer
//! was never saved), a second test moves the fake's clock past the window and checks that the
//! tool says what happened and what to do, instead of failing obscurely.

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::processes::*;
use support::*;

/// A token file this old has an expired access token: once imported, the next `token`
/// refreshes.
const DAY: Duration = Duration::from_secs(86_400);
/// Past Xero's 30-minute grace window.
const PAST_GRACE: Duration = Duration::from_secs(31 * 60);

/// `xero-auth token` succeeds and prints an access token the fake accepts, and the refresh
/// token stored afterwards is one the fake accepts too. Returns the printed token.
fn assert_token_works(env: &TestEnv, fake: &FakeXero) -> String {
    let out = env.cmd(&["token"]).assert().success().get_output().clone();
    let token = stdout_text(&out).trim().to_string();
    assert!(
        fake.access_token_valid(&token),
        "the printed access token is valid"
    );
    let stored = env.stored_refresh_token();
    assert_eq!(
        fake.refresh_token_status(&stored),
        RefreshTokenStatus::Active,
        "the stored refresh token is usable"
    );
    token
}

// ------------------------------------------------------------------ the refresh protocol

/// Crashes `token` at `point` of a refresh that has not reached Xero yet: nothing was sent, so
/// nothing changed anywhere, and the next `token` simply refreshes.
fn crash_before_the_request(name: &str, point: &str) {
    let fake = FakeXero::start();
    let (env, imported) = imported_profile(&fake, name, DAY);
    let before = env.stored_raw();

    let out = run_to_crash(env.std_cmd(&["token"]), point);

    assert!(out.stdout.is_empty(), "no token printed by the crashed run");
    assert_eq!(fake.count(Counter::Refresh), 0, "no request was sent");
    assert_eq!(env.stored_raw(), before, "the stored set is untouched");
    assert_eq!(
        fake.refresh_token_status(&imported.refresh_token),
        RefreshTokenStatus::Active
    );

    // The lock the crashed process held went with it: the next run is not kept waiting.
    let started = Instant::now();
    assert_token_works(&env, &fake);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(fake.count(Counter::Refresh), 1);
}

#[test]
fn crash_with_the_lock_taken_loses_nothing() {
    require_keychain!();
    require_failpoints!();
    crash_before_the_request("c-lock", "refresh-lock-taken");
}

#[test]
fn crash_after_the_set_was_read_loses_nothing() {
    require_keychain!();
    require_failpoints!();
    crash_before_the_request("c-read", "refresh-set-read");
}

/// Crashes `token` at `point`, after Xero rotated the refresh token but before the new one
/// was saved: the keychain still holds the old one, which Xero now only accepts inside the
/// grace window.
fn crash_after_xero_rotated(fake: &FakeXero, name: &str, point: &str) -> (TestEnv, IssuedTokens) {
    let (env, imported) = imported_profile(fake, name, DAY);
    let before = env.stored_raw();

    let out = run_to_crash(env.std_cmd(&["token"]), point);

    assert!(out.stdout.is_empty(), "no token printed by the crashed run");
    assert_eq!(fake.count(Counter::Refresh), 1, "the request reached Xero");
    assert_eq!(
        fake.refresh_token_status(&imported.refresh_token),
        RefreshTokenStatus::UsedInGrace,
        "Xero rotated the refresh token"
    );
    assert_eq!(
        env.stored_raw(),
        before,
        "the crashed run wrote nothing: the old set is still stored"
    );
    (env, imported)
}

/// Within the grace window the stored (old) refresh token is retried and the next run ends
/// with new, valid tokens, without the user doing anything.
fn recovers_within_the_grace_window(name: &str, point: &str) {
    let fake = FakeXero::start();
    let (env, imported) = crash_after_xero_rotated(&fake, name, point);

    assert_token_works(&env, &fake);

    assert_eq!(fake.count(Counter::Refresh), 2);
    assert_ne!(env.stored_refresh_token(), imported.refresh_token);
}

#[test]
fn crash_after_the_request_was_sent_recovers_through_the_grace_window() {
    require_keychain!();
    require_failpoints!();
    recovers_within_the_grace_window("c-sent", "token-request-sent");
}

#[test]
fn crash_after_the_answer_was_parsed_recovers_through_the_grace_window() {
    require_keychain!();
    require_failpoints!();
    recovers_within_the_grace_window("c-parsed", "refresh-response-parsed");
}

/// Past the grace window Xero refuses the old refresh token: the next run exits 4, says that
/// an earlier run's refresh was never saved and that the window is over, names
/// `xero-auth login`, and deletes nothing.
fn past_the_grace_window_says_what_happened(name: &str, point: &str) -> (FakeXero, TestEnv) {
    let fake = FakeXero::start();
    let (env, _) = crash_after_xero_rotated(&fake, name, point);
    let before = env.stored_raw();
    fake.advance_clock(PAST_GRACE);

    let out = env.cmd(&["token"]).assert().code(4).get_output().clone();

    let stderr = stderr_text(&out);
    for expected in [
        "invalid_grant",
        "An earlier xero-auth run sent a refresh at",
        "ended before it saved Xero's answer",
        "30 minutes",
        "Nothing was deleted",
        "xero-auth login",
    ] {
        assert!(
            stderr.contains(expected),
            "stderr lacks {expected:?}:\n{stderr}"
        );
    }
    assert!(out.stdout.is_empty());
    assert_eq!(env.stored_raw(), before, "invalid_grant deletes nothing");
    (fake, env)
}

#[test]
fn crash_after_the_request_was_sent_then_past_the_grace_window_is_exit_4_and_says_why() {
    require_keychain!();
    require_failpoints!();
    let (fake, env) = past_the_grace_window_says_what_happened("c-sent-late", "token-request-sent");

    // What the message says to do works: a new login, then a valid token.
    let login = login_by_paste(&env, &fake, None);
    assert_eq!(
        login.status.code(),
        Some(0),
        "login: {}",
        stderr_text(&login)
    );
    assert_token_works(&env, &fake);
}

#[test]
fn crash_after_the_answer_was_parsed_then_past_the_grace_window_is_exit_4_and_says_why() {
    require_keychain!();
    require_failpoints!();
    past_the_grace_window_says_what_happened("c-parsed-late", "refresh-response-parsed");
}

#[test]
fn crash_after_the_refresh_was_stored_serves_the_new_token_without_a_request() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    let (env, imported) = imported_profile(&fake, "c-stored", DAY);

    run_to_crash(env.std_cmd(&["token"]), "refresh-stored");

    assert_eq!(fake.count(Counter::Refresh), 1);
    let stored = env.stored().expect("a set is stored");
    assert_ne!(stored["refresh_token"], imported.refresh_token.as_str());
    let token = assert_token_works(&env, &fake);
    assert_eq!(
        token,
        stored["access_token"].as_str().unwrap(),
        "the stored token is served"
    );
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "the saved set needed no new request"
    );
}

// ------------------------------------------------------------------ login

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// The user approves at the fake's authorize endpoint (a GET on 127.0.0.1): the `Location`
/// it redirects the browser to, with the code and the state.
fn approve(authorize_url: &str) -> String {
    let url = url::Url::parse(authorize_url).expect("a URL");
    assert_eq!(url.host_str(), Some("127.0.0.1"), "only 127.0.0.1: {url}");
    let port = url.port().expect("a port");
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(5),
    )
    .expect("connect to the fake");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let target = &authorize_url[url.origin().ascii_serialization().len()..];
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("the fake answers");
    assert!(answer.starts_with("HTTP/1.1 302"), "a redirect: {answer}");
    answer
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .expect("a Location header")
}

/// `xero-auth login --no-browser`, completed the way a user over SSH does: approve in a
/// browser elsewhere, paste the address it was sent to. With `crash_at`, that crash point is
/// armed. Returns how the login ended.
fn login_by_paste(env: &TestEnv, fake: &FakeXero, crash_at: Option<&str>) -> Output {
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let mut cmd = env.std_cmd(&[
        "login",
        "--no-browser",
        "--redirect-uri",
        &redirect,
        "--timeout",
        "60",
    ]);
    if let Some(point) = crash_at {
        cmd.env("FAILPOINTS", format!("{point}=return"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("login starts");
    let mut stdin = child.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(line);
        }
        all
    });
    let mut stdout = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let prefix = format!("{}?", fake.authorize_url());
    let authorize_url = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(wait)
            .expect("login prints the authorize URL");
        if line.trim().starts_with(&prefix) {
            break line.trim().to_string();
        }
    };
    let location = approve(&authorize_url);
    assert!(location.starts_with(&redirect), "{location}");
    writeln!(stdin, "{location}").expect("paste into login");

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("login did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(stdin);
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap().into_bytes(),
    }
}

/// A login crashed at `point` (after the code was exchanged, before anything was written):
/// nothing is stored, and the next login — with a new code, as a code is single use — works.
fn login_crash_stores_nothing(name: &str, point: &str) {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, name);
    env.set_client(&fake);

    let crashed = login_by_paste(&env, &fake, Some(point));

    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        crashed.status.signal(),
        Some(SIGABRT),
        "login crashed at {point}: {}",
        stderr_text(&crashed)
    );
    assert_eq!(
        fake.count(Counter::AuthorizationCode),
        1,
        "the code was exchanged"
    );
    assert_eq!(env.stored_raw(), None, "nothing half-stored");
    env.cmd(&["token"]).assert().code(3);

    let login = login_by_paste(&env, &fake, None);
    assert_eq!(
        login.status.code(),
        Some(0),
        "the next login: {}",
        stderr_text(&login)
    );
    assert_eq!(fake.count(Counter::AuthorizationCode), 2, "with a new code");
    assert_token_works(&env, &fake);
    assert_eq!(
        fake.count(Counter::Refresh),
        0,
        "the fresh login's token needed no refresh"
    );
}

#[test]
fn crash_after_the_code_exchange_was_sent_stores_nothing_and_the_next_login_works() {
    require_keychain!();
    require_failpoints!();
    login_crash_stores_nothing("c-login-sent", "token-request-sent");
}

#[test]
fn crash_after_the_code_was_exchanged_stores_nothing_and_the_next_login_works() {
    require_keychain!();
    require_failpoints!();
    login_crash_stores_nothing("c-login-exchanged", "login-code-exchanged");
}

#[test]
fn crash_after_login_stored_the_set_keeps_it() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "c-login-stored");
    env.set_client(&fake);

    let crashed = login_by_paste(&env, &fake, Some("login-stored"));

    use std::os::unix::process::ExitStatusExt;
    assert_eq!(crashed.status.signal(), Some(SIGABRT));
    let token = assert_token_works(&env, &fake);
    assert_eq!(
        token,
        env.stored().unwrap()["access_token"].as_str().unwrap()
    );
    assert_eq!(fake.count(Counter::Refresh), 0);
}

// ------------------------------------------------------------------ import

/// `import --remove` crashed at `point`: the token file is still there, and running the same
/// import again succeeds (and only then removes the file).
fn import_crash_keeps_the_file(name: &str, point: &str, written: bool) {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, name);
    env.set_client(&fake);
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(60));
    let file_arg = file.to_str().unwrap();

    run_to_crash(env.std_cmd(&["import", "--remove", file_arg]), point);

    assert!(file.exists(), "the token file was not removed");
    match written {
        false => assert_eq!(env.stored_raw(), None, "nothing was written"),
        true => assert_eq!(env.stored_refresh_token(), tokens.refresh_token),
    }

    env.cmd(&["import", "--remove", file_arg])
        .assert()
        .success()
        .stderr(predicates::str::contains("deleted"));
    assert!(!file.exists());
    assert_eq!(env.stored_refresh_token(), tokens.refresh_token);
    let token = assert_token_works(&env, &fake);
    assert_eq!(token, tokens.access_token, "the imported token is served");
}

#[test]
fn crash_before_import_writes_keeps_the_file_and_a_rerun_imports() {
    require_keychain!();
    require_failpoints!();
    import_crash_keeps_the_file("c-import-checked", "import-checked", false);
}

#[test]
fn crash_after_import_wrote_keeps_the_file_and_a_rerun_imports() {
    require_keychain!();
    require_failpoints!();
    import_crash_keeps_the_file("c-import-stored", "import-stored", true);
}
