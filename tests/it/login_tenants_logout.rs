//! `login` (browser flow through the loopback listener, a pasted redirect URL, client
//! credentials), `tenants` and `logout`, against the fake Xero and the real Secret Service.
//!
//! The tests play the browser themselves: a GET of the authorize URL at the fake (which answers
//! 302 to the redirect URI), then a GET of that `Location` on the login's listener. They only
//! ever connect to 127.0.0.1.

use crate::support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fake_xero::{AuthorizeDecision, ClientAuth, DEFAULT_TENANT_ID, DEFAULT_TENANT_NAME};
use serde_json::Value;
use support::browser::*;
use support::*;
use url::Url;
use xero_auth::config::StoreKind;
use xero_auth::store::{Keychain, SecretStore, token_set_account};

/// A public (PKCE-only) app: registered at the fake without a secret.
const PUBLIC_CLIENT_ID: &str = "0A1B2C3D4E5F60718293A4B5C6D7E8F9";

/// Two more organisations for the several-tenants tests.
const ACME_ID: &str = "9b2f6c4e-1a3d-4e5f-8a7b-6c5d4e3f2a10";
const ACME_NAME: &str = "Acme Widgets Ltd";
const SMITH_ID: &str = "3c7d9e1f-5b2a-4c6d-9e8f-1a2b3c4d5e6f";
const SMITH_NAME: &str = "Smith & Partners";

/// How long a login may take to finish once it has what it needs.
const FINISH: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ small helpers

fn redirect_uri(port: u16) -> String {
    format!("http://127.0.0.1:{port}/callback")
}

fn query_param(url: &Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `location` with another path and exactly these query parameters.
fn variant(location: &Url, path: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = location.clone();
    url.set_path(path);
    url.set_query(None);
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }
    url.to_string()
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What must never show up in the output of login / logout: the client secret, its Basic
/// credential, and the tokens stored for the profile (when there are any).
fn secrets_of(env: &TestEnv) -> Vec<String> {
    let mut secrets = vec![CLIENT_SECRET.to_string(), basic_credential()];
    if let Some(stored) = env.stored() {
        for key in ["access_token", "refresh_token", "id_token"] {
            if let Some(s) = stored.get(key).and_then(Value::as_str)
                && !s.is_empty()
            {
                secrets.push(s.to_string());
            }
        }
    }
    secrets
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            !text.contains(secret.as_str()),
            "{what} shows a secret (starting {:?}):\n{text}",
            &secret[..secret.len().min(6)]
        );
    }
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `xero-auth status --json`, which must succeed.
fn status_json(env: &TestEnv) -> Value {
    let out = env.ok(&["status", "--json"]);
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

/// `xero-auth token --json`, which must succeed.
fn token_json(env: &TestEnv) -> Value {
    let out = env.ok(&["token", "--json"]);
    serde_json::from_slice(&out.stdout).expect("token --json prints JSON")
}

/// `xero-auth token`, which must succeed; the printed token, trimmed.
fn token(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let out = env.cmd(&all).assert().success().get_output().clone();
    stdout_of(&out).trim().to_string()
}

/// Rewrites the stored token set's `expires_at` straight in the keychain.
fn set_stored_expiry(env: &TestEnv, expires_at: i64) {
    let mut set = env.stored().expect("a token set is stored");
    set["expires_at"] = Value::from(expires_at);
    let bytes = serde_json::to_vec(&set).unwrap();
    Keychain::new(StoreKind::SecretService)
        .set(
            &token_set_account(&env.profile),
            &format!("xero-auth token set ({})", env.profile),
            &bytes,
        )
        .expect("keychain writable");
}

/// Imports a fresh token set issued to `client_id` (which must be registered at the fake).
fn import_for(env: &TestEnv, fake: &FakeXero, client_id: &str) -> IssuedTokens {
    let tokens = fake.issue_tokens(client_id, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(60));
    env.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .success();
    tokens
}

/// Stores a public (PKCE-only) app for the profile: registered at the fake with no secret.
fn set_public_client(env: &TestEnv, fake: &FakeXero) {
    fake.add_client(PUBLIC_CLIENT_ID, None);
    env.cmd(&["client", "set", "--client-id", PUBLIC_CLIENT_ID, "--public"])
        .assert()
        .success();
}

// ------------------------------------------------------------------ a running `login`

/// A `xero-auth login` child with piped stdin, stdout and stderr; stderr is read line by line
/// in a thread. Dropping it kills the child if it is still running.
struct Login {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    stdout: Option<JoinHandle<String>>,
    seen: String,
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Login {
    fn start(env: &TestEnv, args: &[&str]) -> Login {
        let mut child = env
            .std_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xero-auth starts");
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let mut reader = BufReader::new(err);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        all.push_str(&line);
                        let _ = tx.send(line.trim_end_matches(['\r', '\n']).to_string());
                    }
                }
            }
            all
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = out.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        });
        Login {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
            stdout: Some(stdout),
            seen: String::new(),
        }
    }

    /// `login --no-browser --redirect-uri REDIRECT` plus `extra`.
    fn browser(env: &TestEnv, redirect: &str, extra: &[&str]) -> Login {
        let mut args = vec!["login", "--no-browser", "--redirect-uri", redirect];
        args.extend_from_slice(extra);
        Login::start(env, &args)
    }

    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = self.lines.recv_timeout(wait).ok()?;
        self.seen.push_str(&line);
        self.seen.push('\n');
        Some(line)
    }

    /// Waits for `Open this URL in a browser:` and returns the authorize URL on the next line.
    fn authorize_url(&mut self, fake: &FakeXero) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let prefix = format!("{}?", fake.authorize_url());
        let mut header_seen = false;
        loop {
            let Some(line) = self.next_line(deadline) else {
                let running = self.is_running();
                panic!(
                    "no authorize URL on stderr (login still running: {running}); stderr so far:\n{}",
                    self.seen
                );
            };
            if !header_seen {
                header_seen = line.contains("Open this URL in a browser:");
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let url = line.trim();
            assert!(
                url.starts_with(&prefix) && !url.contains(char::is_whitespace),
                "the line after 'Open this URL in a browser:' holds only the authorize URL \
                 (starting {prefix}), got {line:?}"
            );
            return url.to_string();
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Writes one line to the login's stdin.
    fn paste(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to the login's stdin");
    }

    /// Waits (polling, up to `within`) for the child to exit; kills it and fails otherwise.
    fn finish(mut self, within: Duration) -> Finished {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        drop(self.stdin.take());
        let stderr = self.stderr.take().unwrap().join().unwrap();
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let Some(status) = status else {
            panic!("xero-auth login did not exit within {within:?}; stderr:\n{stderr}");
        };
        Finished {
            code: status.code(),
            stdout,
            stderr,
        }
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A whole successful browser login on a free port: URL, consent, callback, exit 0.
fn complete_login(env: &TestEnv, fake: &FakeXero, extra: &[&str]) -> Finished {
    let redirect = redirect_uri(free_port());
    let mut login = Login::browser(env, &redirect, extra);
    let url = login.authorize_url(fake);
    let location = consent(&url);
    assert!(location.as_str().starts_with(&redirect), "{location}");
    let page = callback(location.as_str());
    assert_eq!(page.status, 200, "the valid callback: {page:?}");
    assert!(
        page.body.contains("You can close this tab"),
        "the success page: {}",
        page.body
    );
    let done = login.finish(FINISH);
    assert_eq!(
        done.code,
        Some(0),
        "login exit code; stderr:\n{}",
        done.stderr
    );
    assert!(
        done.stderr.to_lowercase().contains("logged in"),
        "stderr says 'logged in':\n{}",
        done.stderr
    );
    done
}

/// The one `authorization_code` token request the fake got.
fn the_code_exchange(fake: &FakeXero) -> fake_xero::RequestRecord {
    let exchanges: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.grant_type.as_deref() == Some("authorization_code"))
        .collect();
    assert_eq!(exchanges.len(), 1, "one code exchange: {exchanges:?}");
    exchanges.into_iter().next().unwrap()
}

// ------------------------------------------------------------------ login: end to end

#[test]
fn login_confidential_client_uses_basic_auth_and_stores_a_refreshable_set() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-conf");
    env.set_client(&fake);
    let redirect = redirect_uri(free_port());

    let mut login = Login::browser(&env, &redirect, &["--scope", "accounting.contacts"]);
    let url = Url::parse(&login.authorize_url(&fake)).unwrap();
    let q = |k: &str| query_param(&url, k);
    assert_eq!(q("response_type").as_deref(), Some("code"), "{url}");
    assert_eq!(q("client_id").as_deref(), Some(CLIENT_ID), "{url}");
    assert_eq!(
        q("redirect_uri").as_deref(),
        Some(redirect.as_str()),
        "{url}"
    );
    let scope = q("scope").expect("a scope parameter");
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    assert!(
        scopes.contains(&"offline_access") && scopes.contains(&"accounting.contacts"),
        "scope has offline_access and the --scope: {scope:?}"
    );
    assert!(
        q("state").is_some_and(|s| s.len() >= 16),
        "an unguessable state: {url}"
    );
    let challenge = q("code_challenge").expect("a code_challenge");
    assert!(
        challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "an S256 challenge is 43 base64url characters: {challenge:?}"
    );
    assert_eq!(q("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(fake.count(Counter::TokenRequests), 0);
    assert!(env.stored().is_none(), "nothing stored before the callback");

    let location = consent(url.as_str());
    let page = callback(location.as_str());
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("You can close this tab"),
        "{}",
        page.body
    );
    let done = login.finish(FINISH);
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);
    assert!(
        done.stderr.to_lowercase().contains("logged in"),
        "{}",
        done.stderr
    );

    let exchange = the_code_exchange(&fake);
    assert_eq!(exchange.client_auth, ClientAuth::Basic);
    assert_eq!(exchange.status, Some(200));
    let stored = env.stored().expect("a token set is stored after login");
    let rt = stored["refresh_token"]
        .as_str()
        .expect("the stored set has a refresh_token")
        .to_string();
    assert_eq!(fake.refresh_token_status(&rt), RefreshTokenStatus::Active);
    let secrets = secrets_of(&env);
    assert_no_secret("login stderr", &done.stderr, &secrets);
    assert_no_secret("login stdout", &done.stdout, &secrets);

    let access = token(&env, &[]);
    assert!(
        fake.access_token_valid(&access),
        "token prints a live token"
    );
    assert_eq!(Some(access.as_str()), stored["access_token"].as_str());
    assert_eq!(fake.count(Counter::Refresh), 0);

    env.cmd(&["refresh"]).assert().success();
    let new_rt = env.stored_refresh_token();
    assert_ne!(new_rt, rt, "refresh rotates the stored refresh token");
    assert_eq!(
        fake.refresh_token_status(&new_rt),
        RefreshTokenStatus::Active
    );
    assert_eq!(fake.count(Counter::Refresh), 1);
    let refresh = fake
        .requests()
        .into_iter()
        .find(|r| r.grant_type.as_deref() == Some("refresh_token"))
        .unwrap();
    assert_eq!(refresh.client_auth, ClientAuth::Basic);
}

#[test]
fn login_with_a_public_client_uses_pkce_and_sends_only_the_client_id() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-pkce");
    set_public_client(&env, &fake);

    let redirect = redirect_uri(free_port());
    let mut login = Login::browser(&env, &redirect, &[]);
    let url = Url::parse(&login.authorize_url(&fake)).unwrap();
    assert_eq!(
        query_param(&url, "client_id").as_deref(),
        Some(PUBLIC_CLIENT_ID)
    );
    assert_eq!(
        query_param(&url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let location = consent(url.as_str());
    let page = callback(location.as_str());
    assert_eq!(page.status, 200, "{page:?}");
    let done = login.finish(FINISH);
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);

    let exchange = the_code_exchange(&fake);
    assert_eq!(exchange.client_auth, ClientAuth::PublicClientId);
    assert_eq!(exchange.status, Some(200));
    let rt = env.stored_refresh_token();
    let secrets = secrets_of(&env);
    assert_no_secret("login stderr", &done.stderr, &secrets);
    assert_no_secret("login stdout", &done.stdout, &secrets);

    let access = token(&env, &[]);
    assert!(fake.access_token_valid(&access));
    env.cmd(&["refresh"]).assert().success();
    let new_rt = env.stored_refresh_token();
    assert_ne!(new_rt, rt, "refresh rotates the stored refresh token");
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.path == "/connect/token")
            .all(|r| r.client_auth == ClientAuth::PublicClientId),
        "a public app never sends a secret: {:?}",
        fake.requests()
    );
}

/// The scopes the authorize URL of a running login asks for.
fn scopes_asked(url: &str) -> Vec<String> {
    let url = Url::parse(url).unwrap();
    query_param(&url, "scope")
        .expect("a scope parameter")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Runs one browser login with `extra` arguments to the end; returns the scopes its authorize
/// URL asked for and what it printed on stderr.
fn login_asking(env: &TestEnv, fake: &FakeXero, extra: &[&str]) -> (Vec<String>, String) {
    let redirect = redirect_uri(free_port());
    let mut login = Login::browser(env, &redirect, extra);
    let url = login.authorize_url(fake);
    let page = callback(consent(&url).as_str());
    assert_eq!(page.status, 200, "{page:?}");
    let done = login.finish(FINISH);
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);
    (scopes_asked(&url), done.stderr)
}

#[test]
fn a_login_without_scope_asks_again_for_the_scopes_of_the_last_one() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-keeps-scopes");
    env.set_client(&fake);

    let (asked, stderr) = login_asking(&env, &fake, &["--scope", "accounting.contacts openid"]);
    assert!(
        asked.contains(&"accounting.contacts".to_string()) && asked.contains(&"openid".to_string()),
        "{asked:?}"
    );
    assert!(
        stderr.contains("kept the scopes in profile")
            && stderr.contains(&format!("`xero-auth login --profile {}`", env.profile)),
        "the login says the profile keeps its scopes, and which login asks for them: {stderr}"
    );
    let config =
        std::fs::read_to_string(env.dir.path().join("config/xero-auth/config.toml")).unwrap();
    assert!(config.contains("accounting.contacts"), "{config}");

    // The login every "authorise again" message shows asks for them again, offline_access too.
    let (asked, _) = login_asking(&env, &fake, &[]);
    for scope in ["accounting.contacts", "openid", "offline_access"] {
        assert!(
            asked.contains(&scope.to_string()),
            "{scope} not asked again: {asked:?}"
        );
    }
    let status = status_json(&env).to_string();
    assert!(status.contains("accounting.contacts"), "{status}");

    // A token set that came with scopes of its own (imported, or from an older login that did
    // not keep them in the profile): a plain login asks for those too.
    let imported = TestEnv::new(&fake, "login-imported-scopes");
    imported.set_client(&fake);
    imported.import_fresh(&fake, Duration::from_secs(60));
    let (asked, _) = login_asking(&imported, &fake, &[]);
    for scope in SCOPE.split_whitespace() {
        assert!(
            asked.contains(&scope.to_string()),
            "{scope} not asked: {asked:?}"
        );
    }
}

// ------------------------------------------------------------------ login: the listener

/// Starts a login, sends each bad callback (which must get `expected_status` and leave the
/// login waiting with nothing stored), then the valid one, which must complete the login.
fn bad_callbacks_then_valid(name: &str, expected_status: u16, bad: impl Fn(&Url) -> Vec<String>) {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, name);
    env.set_client(&fake);
    let redirect = redirect_uri(free_port());
    let mut login = Login::browser(&env, &redirect, &[]);
    let url = login.authorize_url(&fake);
    let location = consent(&url);

    for bad_url in bad(&location) {
        let resp = callback(&bad_url);
        assert_eq!(resp.status, expected_status, "GET {bad_url}: {resp:?}");
        assert!(
            login.is_running(),
            "the login keeps waiting after GET {bad_url}"
        );
        assert!(env.stored().is_none(), "nothing stored after GET {bad_url}");
        assert_eq!(
            fake.count(Counter::AuthorizationCode),
            0,
            "no code exchange after GET {bad_url}"
        );
    }

    let page = callback(location.as_str());
    assert_eq!(
        page.status, 200,
        "the valid callback after the bad ones: {page:?}"
    );
    assert!(
        page.body.contains("You can close this tab"),
        "{}",
        page.body
    );
    let done = login.finish(FINISH);
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);
    assert_eq!(fake.count(Counter::AuthorizationCode), 1);
    assert!(env.stored_refresh_token().len() > 10);
}

#[test]
fn callback_with_a_wrong_state_gets_400_and_the_login_keeps_waiting() {
    require_keychain!();
    bad_callbacks_then_valid("cb-state", 400, |location| {
        let code = query_param(location, "code").unwrap();
        vec![
            variant(
                location,
                "/callback",
                &[("code", &code), ("state", "forged-state-0123456789abcdef")],
            ),
            variant(location, "/callback", &[("code", &code)]),
        ]
    });
}

#[test]
fn callback_without_a_code_gets_400_and_the_login_keeps_waiting() {
    require_keychain!();
    bad_callbacks_then_valid("cb-nocode", 400, |location| {
        let state = query_param(location, "state").unwrap();
        vec![variant(location, "/callback", &[("state", &state)])]
    });
}

#[test]
fn request_on_another_path_gets_404_and_the_login_keeps_waiting() {
    require_keychain!();
    bad_callbacks_then_valid("cb-path", 404, |location| {
        let code = query_param(location, "code").unwrap();
        let state = query_param(location, "state").unwrap();
        vec![
            variant(location, "/favicon.ico", &[]),
            variant(location, "/other", &[("code", &code), ("state", &state)]),
        ]
    });
}

#[test]
fn access_denied_ends_the_login_with_exit_1_and_stores_nothing() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "cb-denied");
    env.set_client(&fake);
    fake.set_authorize_decision(AuthorizeDecision::Deny);
    let redirect = redirect_uri(free_port());
    let mut login = Login::browser(&env, &redirect, &[]);
    let url = login.authorize_url(&fake);
    let location = consent(&url);
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );

    let page = callback(location.as_str());
    assert!(
        page.body.contains("access_denied"),
        "the page shows the error: {page:?}"
    );
    let done = login.finish(FINISH);
    assert_eq!(done.code, Some(1), "stderr:\n{}", done.stderr);
    assert!(done.stderr.contains("access_denied"), "{}", done.stderr);
    assert!(env.stored().is_none(), "nothing stored after a denial");
    assert_eq!(fake.count(Counter::TokenRequests), 0);
    assert_no_secret("login stderr", &done.stderr, &secrets_of(&env));
}

#[test]
fn listener_is_closed_after_the_successful_callback() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "cb-oneshot");
    env.set_client(&fake);
    let port = free_port();
    let redirect = redirect_uri(port);
    let mut login = Login::browser(&env, &redirect, &[]);
    let url = login.authorize_url(&fake);
    let location = consent(&url);
    assert_eq!(callback(location.as_str()).status, 200);
    let done = login.finish(FINISH);
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);

    // A second connection (the same callback, replayed) is refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match http_get(location.as_str()) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "port {port} still answers after the login: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert_eq!(fake.count(Counter::AuthorizationCode), 1);
}

/// LISTEN sockets on `port` from /proc/net/tcp and /proc/net/tcp6, as (file, hex address).
fn listen_sockets(port: u16) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 || fields[3] != "0A" {
                continue;
            }
            let Some((addr, hex_port)) = fields[1].rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(hex_port, 16) == Ok(port) {
                found.push((file, addr.to_string()));
            }
        }
    }
    found
}

#[test]
fn listener_binds_loopback_only() {
    require_keychain!();
    assert!(
        std::path::Path::new("/proc/net/tcp").exists(),
        "this test reads /proc/net/tcp"
    );
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "cb-loopback");
    env.set_client(&fake);
    let port = free_port();
    let redirect = redirect_uri(port);
    let mut login = Login::browser(&env, &redirect, &[]);
    let url = login.authorize_url(&fake);

    let deadline = Instant::now() + Duration::from_secs(10);
    let sockets = loop {
        let sockets = listen_sockets(port);
        if !sockets.is_empty() {
            break sockets;
        }
        assert!(
            Instant::now() < deadline && login.is_running(),
            "no LISTEN socket on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    const LOOPBACK: [&str; 3] = [
        "0100007F",                         // 127.0.0.1 (tcp)
        "00000000000000000000000001000000", // ::1 (tcp6)
        "0000000000000000FFFF00000100007F", // ::ffff:127.0.0.1 (tcp6)
    ];
    for (file, addr) in &sockets {
        assert!(
            LOOPBACK.contains(&addr.as_str()),
            "{file} has a LISTEN socket on port {port} at {addr}, not loopback: {sockets:?}"
        );
    }

    // And the login still completes.
    let location = consent(&url);
    assert_eq!(callback(location.as_str()).status, 200);
    let done = login.finish(FINISH);
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);
}

#[test]
fn pasted_redirect_url_on_stdin_completes_the_login() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "cb-paste");
    env.set_client(&fake);
    let redirect = redirect_uri(free_port());
    let mut login = Login::browser(&env, &redirect, &[]);
    let url = login.authorize_url(&fake);
    let location = consent(&url);

    login.paste(location.as_str());
    let done = login.finish(FINISH);
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);
    assert!(
        done.stderr.to_lowercase().contains("logged in"),
        "{}",
        done.stderr
    );
    assert_eq!(the_code_exchange(&fake).status, Some(200));
    let rt = env.stored_refresh_token();
    assert_eq!(fake.refresh_token_status(&rt), RefreshTokenStatus::Active);
    assert!(fake.access_token_valid(&token(&env, &[])));
    let secrets = secrets_of(&env);
    assert_no_secret("login stderr", &done.stderr, &secrets);
    assert_no_secret("login stdout", &done.stdout, &secrets);
}

#[test]
fn redirect_port_in_use_fails_at_once_naming_the_port_and_the_option() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "cb-inuse");
    env.set_client(&fake);
    let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = holder.local_addr().unwrap().port();

    let login = Login::browser(&env, &redirect_uri(port), &[]);
    // "At once": well before any login timeout.
    let done = login.finish(Duration::from_secs(15));
    assert_eq!(done.code, Some(1), "stderr:\n{}", done.stderr);
    assert!(
        done.stderr.contains(&port.to_string()),
        "stderr names port {port}:\n{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("--redirect-uri"),
        "stderr points at --redirect-uri:\n{}",
        done.stderr
    );
    assert!(env.stored().is_none());
    assert_eq!(fake.count(Counter::TokenRequests), 0);
    drop(holder);
}

#[test]
fn login_without_a_callback_times_out_with_exit_1_and_stores_nothing() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "cb-timeout");
    env.set_client(&fake);
    let redirect = redirect_uri(free_port());
    let mut login = Login::browser(&env, &redirect, &["--timeout", "2"]);
    let _url = login.authorize_url(&fake);

    let done = login.finish(Duration::from_secs(30));
    assert_eq!(done.code, Some(1), "stderr:\n{}", done.stderr);
    let lower = done.stderr.to_lowercase();
    assert!(
        lower.contains("timed out") || lower.contains("no callback"),
        "stderr says it timed out:\n{}",
        done.stderr
    );
    assert!(env.stored().is_none());
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}

// ------------------------------------------------------------------ login: tenants

#[test]
fn login_with_one_tenant_makes_it_the_default() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-1tenant");
    env.set_client(&fake);
    let done = complete_login(&env, &fake, &[]);
    assert!(
        fake.count(Counter::Connections) >= 1,
        "login asks /connections"
    );
    assert_eq!(status_json(&env)["default_tenant"], DEFAULT_TENANT_ID);
    assert_eq!(token_json(&env)["tenant_id"], DEFAULT_TENANT_ID);
    assert_no_secret("login stderr", &done.stderr, &secrets_of(&env));
}

#[test]
fn login_with_several_tenants_lists_them_and_chooses_none_without_a_tty() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-ntenants");
    env.set_client(&fake);
    fake.add_tenant(ACME_ID, ACME_NAME, "ORGANISATION");
    let done = complete_login(&env, &fake, &[]);
    assert!(
        fake.count(Counter::Connections) >= 1,
        "login asks /connections"
    );
    for (id, name) in [
        (DEFAULT_TENANT_ID, DEFAULT_TENANT_NAME),
        (ACME_ID, ACME_NAME),
    ] {
        assert!(
            done.stderr.contains(id) || done.stderr.contains(name),
            "stderr lists tenant {name} ({id}):\n{}",
            done.stderr
        );
    }
    assert!(
        done.stderr.contains("xero-auth tenants use"),
        "stderr says how to choose:\n{}",
        done.stderr
    );
    assert!(
        status_json(&env)["default_tenant"].is_null(),
        "no default tenant chosen"
    );
    assert_no_secret("login stderr", &done.stderr, &secrets_of(&env));
}

// ------------------------------------------------------------------ login: client credentials

#[test]
fn client_credentials_login_stores_no_refresh_token_and_reissues_the_access_token() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-cc");
    env.set_client(&fake);

    let out = env.ok(&["login", "--client-credentials"]);
    let stored = env.stored().expect("a token set is stored");
    assert!(
        stored.get("refresh_token").is_none_or(Value::is_null),
        "no refresh token for client credentials: keys {:?}",
        stored.as_object().map(|o| o.keys().collect::<Vec<_>>())
    );
    let first = stored["access_token"]
        .as_str()
        .expect("an access token")
        .to_string();
    assert!(fake.access_token_valid(&first));
    assert_eq!(fake.count(Counter::ClientCredentials), 1);
    assert_eq!(fake.count(Counter::Authorize), 0);
    assert_eq!(fake.count(Counter::AuthorizationCode), 0);
    let cc = fake
        .requests()
        .into_iter()
        .find(|r| r.grant_type.as_deref() == Some("client_credentials"))
        .unwrap();
    assert_eq!(cc.client_auth, ClientAuth::Basic);
    let secrets = secrets_of(&env);
    assert_no_secret("login stderr", &stderr_of(&out), &secrets);
    assert_no_secret("login stdout", &stdout_of(&out), &secrets);
    assert!(!stderr_of(&out).contains("Open this URL"));

    // Served from the keychain while valid, even with a 1500 s margin (it has ~1800 s).
    assert_eq!(token(&env, &[]), first);
    assert_eq!(token(&env, &["--min-valid", "1500"]), first);
    assert_eq!(fake.count(Counter::TokenRequests), 1);

    // `refresh` gets a new access token the same way; still no refresh token.
    env.cmd(&["refresh"]).assert().success();
    assert_eq!(fake.count(Counter::ClientCredentials), 2);
    assert_eq!(fake.count(Counter::Refresh), 0);
    let stored = env.stored().unwrap();
    assert!(stored.get("refresh_token").is_none_or(Value::is_null));
    let second = stored["access_token"].as_str().unwrap().to_string();
    assert_ne!(second, first, "refresh stores a new access token");
    assert!(fake.access_token_valid(&second));

    // Expired in the store: `token` asks for a new one by itself.
    set_stored_expiry(&env, now_unix() - 10);
    let third = token(&env, &[]);
    assert_ne!(third, second, "an expired access token is not served");
    assert!(fake.access_token_valid(&third));
    assert_eq!(fake.count(Counter::ClientCredentials), 3);
    assert_eq!(fake.count(Counter::Refresh), 0);
    let stored = env.stored().unwrap();
    assert_eq!(stored["access_token"], third.as_str());
    assert!(stored.get("refresh_token").is_none_or(Value::is_null));
}

/// A client-credentials set has no refresh token: `refresh` must not give it a lapse date
/// (`status` already says "none (client credentials)").
#[test]
fn refresh_of_a_client_credentials_set_claims_no_refresh_token() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "refresh-cc");
    env.set_client(&fake);
    env.ok(&["login", "--client-credentials"]);

    let out = env.ok(&["refresh"]);
    let line = stdout_of(&out);
    assert!(line.contains("access token valid until"), "{line}");
    assert!(
        !line.contains("lapses"),
        "no refresh token to lapse: {line}"
    );
    assert!(line.contains("no refresh token"), "{line}");

    let out = env.ok(&["refresh", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["refreshed"], true);
    assert!(json["refresh_token_lapses_at"].is_null(), "{json}");
    assert_eq!(fake.count(Counter::ClientCredentials), 3);
}

#[test]
fn client_credentials_login_is_refused_for_a_public_client() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-cc-public");
    set_public_client(&env, &fake);
    let out = env
        .cmd(&["login", "--client-credentials"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "client credentials need a client secret; stderr:\n{}",
        stderr_of(&out)
    );
    assert!(env.stored().is_none());
}

// ------------------------------------------------------------------ tenants

#[test]
fn tenants_lists_the_single_connection_as_text_and_json() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "tenants-1", Duration::from_secs(60));

    let out = env.ok(&["tenants"]);
    let text = stdout_of(&out);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(DEFAULT_TENANT_ID))
        .collect();
    assert_eq!(lines.len(), 1, "one line for the tenant:\n{text}");
    assert!(
        lines[0].contains(DEFAULT_TENANT_NAME) && lines[0].contains("ORGANISATION"),
        "the line has name, id and type: {:?}",
        lines[0]
    );

    let out = env.ok(&["tenants", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("tenants --json prints JSON");
    let list = json.as_array().expect("a JSON array");
    assert_eq!(list.len(), 1, "{json}");
    assert_eq!(list[0]["tenantId"], DEFAULT_TENANT_ID);
    assert_eq!(list[0]["tenantName"], DEFAULT_TENANT_NAME);
    assert_eq!(list[0]["tenantType"], "ORGANISATION");
    assert!(fake.count(Counter::Connections) >= 2);
}

#[test]
fn tenants_use_sets_the_default_by_exact_name_any_case_or_by_id_and_refuses_unknown_ones() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "tenants-n");
    env.set_client(&fake);
    fake.add_tenant(ACME_ID, ACME_NAME, "ORGANISATION");
    fake.add_tenant(SMITH_ID, SMITH_NAME, "PRACTICE");
    env.import_fresh(&fake, Duration::from_secs(60));
    let all = [
        (DEFAULT_TENANT_ID, DEFAULT_TENANT_NAME, "ORGANISATION"),
        (ACME_ID, ACME_NAME, "ORGANISATION"),
        (SMITH_ID, SMITH_NAME, "PRACTICE"),
    ];

    let out = env.ok(&["tenants"]);
    let text = stdout_of(&out);
    for (id, name, kind) in all {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(id)).collect();
        assert_eq!(lines.len(), 1, "one line for {name}:\n{text}");
        assert!(
            lines[0].contains(name) && lines[0].contains(kind),
            "name, id and type on one line: {:?}",
            lines[0]
        );
    }
    let out = env.ok(&["tenants", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("tenants --json prints JSON");
    let list = json.as_array().expect("a JSON array");
    assert_eq!(list.len(), 3, "{json}");
    for (id, name, kind) in all {
        assert!(
            list.iter()
                .any(|t| t["tenantId"] == id && t["tenantName"] == name && t["tenantType"] == kind),
            "{name} in {json}"
        );
    }

    env.cmd(&["tenants", "use", &ACME_NAME.to_uppercase()])
        .assert()
        .success();
    assert_eq!(status_json(&env)["default_tenant"], ACME_ID);

    env.cmd(&["tenants", "use", SMITH_ID]).assert().success();
    assert_eq!(status_json(&env)["default_tenant"], SMITH_ID);
    assert_eq!(token_json(&env)["tenant_id"], SMITH_ID);

    for unknown in ["Nonexistent Org", "Acme"] {
        let out = env
            .cmd(&["tenants", "use", unknown])
            .assert()
            .code(1)
            .get_output()
            .clone();
        let stderr = stderr_of(&out);
        for (id, name, _) in all {
            assert!(
                stderr.contains(id) || stderr.contains(name),
                "`tenants use {unknown}` lists {name}:\n{stderr}"
            );
        }
        assert_eq!(
            status_json(&env)["default_tenant"],
            SMITH_ID,
            "an unknown tenant changes nothing"
        );
    }
}

// ------------------------------------------------------------------ logout

#[test]
fn logout_revokes_the_refresh_token_and_deletes_the_token_set() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = imported_profile(&fake, "logout", Duration::from_secs(60));
    let secrets = secrets_of(&env);

    let out = env.ok(&["logout"]);
    assert_no_secret("logout stderr", &stderr_of(&out), &secrets);
    assert_no_secret("logout stdout", &stdout_of(&out), &secrets);
    assert_eq!(fake.count(Counter::Revocation), 1);
    let revocation = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/connect/revocation")
        .unwrap();
    assert_eq!(revocation.client_auth, ClientAuth::Basic);
    assert_eq!(revocation.status, Some(200));
    assert_eq!(
        fake.refresh_token_status(&tokens.refresh_token),
        RefreshTokenStatus::Revoked
    );
    assert!(env.stored().is_none(), "the token set is deleted");
    assert!(
        env.secret_tool_lookup(&format!("{}/token-set", env.profile))
            .is_none(),
        "secret-tool finds no token set"
    );
    env.cmd(&["token"]).assert().code(3);

    // A second logout has nothing to do, and says so: exit 0, no request.
    let out = env.ok(&["logout"]);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!("profile '{}' is already logged out", env.profile)),
        "{stderr}"
    );
    assert!(!stderr.contains("run `xero-auth login"), "{stderr}");
    assert_eq!(fake.count(Counter::Revocation), 1);

    // Xero no longer honours the refresh token, wherever a copy of it lives.
    let copy = TestEnv::new(&fake, "logout-copy");
    copy.set_client(&fake);
    let file = copy.write_token_file(&tokens, Duration::from_secs(86_400));
    copy.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .success();
    copy.cmd(&["refresh"])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("invalid_grant"));
}

#[test]
fn logout_names_the_other_profiles_of_the_app_and_a_403_there_then_says_to_log_in() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "logout-siblings", Duration::from_secs(60));
    // A second profile of the same app in the same config, authorised separately.
    let other = format!("{}-b", env.profile);
    let wipe = || {
        let keychain = Keychain::new(StoreKind::SecretService);
        let _ = keychain.delete(&token_set_account(&other));
        let _ = keychain.delete(&xero_auth::store::client_secret_account(&other));
    };
    wipe();
    let on_other = |args: &[&str]| {
        let mut all = vec!["--profile", other.as_str()];
        all.extend_from_slice(args);
        env.cmd(&all)
    };
    on_other(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .assert()
        .success();
    let file = env.write_token_file(
        &fake.issue_tokens(CLIENT_ID, SCOPE),
        Duration::from_secs(60),
    );
    on_other(&["import", file.to_str().unwrap()])
        .assert()
        .success();
    on_other(&["tenants", "use", DEFAULT_TENANT_ID])
        .assert()
        .success();
    on_other(&["api", "api.xro/2.0/Organisation"])
        .assert()
        .success();

    // No terminal, no --yes: refused before anything is revoked or deleted, naming the other
    // profile and the ways on.
    let before = env.stored_raw();
    let out = env.cmd(&["logout"]).write_stdin("").output().unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("'{other}'"))
            && stderr.contains("--yes")
            && stderr.contains(&format!("logout --keep-remote --profile {}`", env.profile)),
        "{stderr}"
    );
    assert_eq!(fake.count(Counter::Revocation), 0);
    assert_eq!(env.stored_raw(), before, "nothing deleted");

    let out = env.ok(&["logout", "--yes"]);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!("'{other}'"))
            && stderr.contains(&format!("`xero-auth login --profile {other}`")),
        "the warning names the other profile and its login: {stderr}"
    );
    assert_eq!(fake.count(Counter::Revocation), 1);
    assert!(env.stored().is_none());

    // The other profile's token still works, but reaches no organisation: its 403 says so.
    let out = on_other(&["api", "api.xro/2.0/Organisation"])
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    wipe();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("no organisation is connected")
            && stderr.contains(&format!("`xero-auth login --profile {other}`"))
            && !stderr.contains("check the tenant id"),
        "{stderr}"
    );
}

#[test]
fn logout_of_a_public_client_revokes_with_the_client_id_only() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "logout-pkce");
    set_public_client(&env, &fake);
    let tokens = import_for(&env, &fake, PUBLIC_CLIENT_ID);

    env.cmd(&["logout"]).assert().success();
    let revocation = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/connect/revocation")
        .expect("a revocation request");
    assert_eq!(revocation.client_auth, ClientAuth::PublicClientId);
    assert_eq!(
        fake.refresh_token_status(&tokens.refresh_token),
        RefreshTokenStatus::Revoked
    );
    assert!(env.stored().is_none());
}

#[test]
fn logout_keep_remote_deletes_the_token_set_without_revoking() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = imported_profile(&fake, "logout-keep", Duration::from_secs(60));
    let secrets = secrets_of(&env);

    let out = env.ok(&["logout", "--keep-remote"]);
    assert_no_secret("logout stderr", &stderr_of(&out), &secrets);
    assert_eq!(fake.count(Counter::Revocation), 0);
    assert_eq!(
        fake.refresh_token_status(&tokens.refresh_token),
        RefreshTokenStatus::Active
    );
    assert!(env.stored().is_none());
    env.cmd(&["token"]).assert().code(3);
}

/// How the revocation endpoint is made unusable.
#[derive(Clone, Copy)]
enum Down {
    ServerError,
    ClosedPort,
}

/// Imports tokens, breaks the revocation endpoint, runs `logout` (with `--force` or not).
/// Without it: exit 6 and the token set byte-for-byte as before. With it: exit 0, deleted.
fn logout_while_down(name: &str, down: Down, force: bool) {
    let fake = FakeXero::start();
    let (mut env, tokens) = imported_profile(&fake, name, Duration::from_secs(60));
    let before = env.stored_raw().expect("imported");
    let secrets = secrets_of(&env);
    match down {
        Down::ServerError => {
            fake.set_persistent_fault(Target::Revocation, Some(Fault::ServerError));
        }
        Down::ClosedPort => {
            let url = format!("http://127.0.0.1:{}/connect/revocation", free_port());
            env.set_env("XERO_AUTH_REVOCATION_URL", &url);
        }
    }

    let args: &[&str] = if force {
        &["logout", "--force"]
    } else {
        &["logout"]
    };
    let out = env.cmd(args).output().unwrap();
    let stderr = stderr_of(&out);
    assert_no_secret("logout stderr", &stderr, &secrets);
    assert_no_secret("logout stdout", &stdout_of(&out), &secrets);
    if force {
        assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
        assert!(env.stored().is_none(), "--force deletes the token set");
        // What failed, and what --force does about it, each on a line of its own.
        let anyway = stderr
            .lines()
            .find(|l| l.contains("anyway"))
            .unwrap_or_else(|| panic!("no word of --force in:\n{stderr}"));
        assert!(
            anyway.starts_with("--force:") && !anyway.contains("Nothing was deleted"),
            "{stderr}"
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning: revocation failed")),
            "{stderr}"
        );
        env.cmd(&["token"]).assert().code(3);
    } else {
        assert_eq!(out.status.code(), Some(6), "stderr:\n{stderr}");
        assert_eq!(
            env.stored_raw().as_deref(),
            Some(before.as_slice()),
            "the token set is kept byte for byte"
        );
    }
    if matches!(down, Down::ServerError) {
        assert!(fake.count(Counter::Revocation) >= 1, "revocation was tried");
    } else {
        assert_eq!(fake.count(Counter::Revocation), 0);
    }
    assert_eq!(
        fake.refresh_token_status(&tokens.refresh_token),
        RefreshTokenStatus::Active,
        "nothing was revoked"
    );
}

#[test]
fn logout_while_revocation_answers_500_is_exit_6_and_keeps_the_token_set() {
    require_keychain!();
    logout_while_down("logout-500", Down::ServerError, false);
}

#[test]
fn logout_while_revocation_is_unreachable_is_exit_6_and_keeps_the_token_set() {
    require_keychain!();
    logout_while_down("logout-closed", Down::ClosedPort, false);
}

#[test]
fn logout_force_while_revocation_answers_500_deletes_the_token_set() {
    require_keychain!();
    logout_while_down("logout-500-force", Down::ServerError, true);
}

#[test]
fn logout_force_while_revocation_is_unreachable_deletes_the_token_set() {
    require_keychain!();
    logout_while_down("logout-closed-force", Down::ClosedPort, true);
}

#[test]
fn client_remove_deletes_the_client_secret() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "client-remove");
    env.set_client(&fake);
    let account = format!("{}/client-secret", env.profile);
    assert_eq!(
        env.secret_tool_lookup(&account).as_deref(),
        Some(CLIENT_SECRET),
        "client set stored the secret"
    );
    env.cmd(&["client", "remove"]).assert().success();
    assert!(env.secret_tool_lookup(&account).is_none());
}

// ------------------------------------------------------------------ no secret in output

#[test]
fn verbose_login_and_logout_print_no_secret() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "verbose");
    env.set_client(&fake);

    let done = complete_login(&env, &fake, &["-vvv"]);
    let secrets = secrets_of(&env);
    assert!(secrets.len() >= 4, "tokens stored after login");
    assert_no_secret("login -vvv stderr", &done.stderr, &secrets);
    assert_no_secret("login -vvv stdout", &done.stdout, &secrets);

    let out = env.ok(&["-vvv", "logout"]);
    assert_no_secret("logout -vvv stderr", &stderr_of(&out), &secrets);
    assert_no_secret("logout -vvv stdout", &stdout_of(&out), &secrets);
    assert_eq!(fake.count(Counter::Revocation), 1);

    let out = env.ok(&["-vvv", "login", "--client-credentials"]);
    let mut secrets = secrets;
    secrets.extend(secrets_of(&env));
    assert_no_secret(
        "login --client-credentials -vvv stderr",
        &stderr_of(&out),
        &secrets,
    );
    assert_no_secret(
        "login --client-credentials -vvv stdout",
        &stdout_of(&out),
        &secrets,
    );
}

#[test]
fn tenants_json_marks_the_default_tenant() {
    require_keychain!();
    let fake = FakeXero::start();
    fake.add_tenant(
        "0b1c2d3e-0000-4000-8000-000000000002",
        "Second Org",
        "ORGANISATION",
    );
    let (env, _) = ready_profile(&fake, "tenants-json-default", Duration::from_secs(60));

    let out = env.ok(&["tenants", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for c in listed {
        assert_eq!(
            c["default"],
            c["tenantId"] == DEFAULT_TENANT_ID,
            "{listed:?}"
        );
    }
}

#[test]
fn status_ends_the_same_with_and_without_json_when_nothing_is_stored() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "status-json-empty");
    env.ok(&["config", "set", "client_id", CLIENT_ID]);

    let text = env
        .cmd(&["status", "--store", "keyutils"])
        .output()
        .unwrap();
    let json = env
        .cmd(&["status", "--json", "--store", "keyutils"])
        .output()
        .unwrap();

    assert_eq!(text.status.code(), Some(3), "{}", stderr_of(&text));
    assert_eq!(json.status.code(), Some(3), "{}", stderr_of(&json));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["tokens"], Value::Null, "{report}");
}

#[test]
fn status_with_an_unavailable_store_shows_what_is_known_then_the_error() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "status-no-store");
    env.ok(&["config", "set", "client_id", CLIENT_ID]);
    env.ok(&["config", "set", "default_tenant", DEFAULT_TENANT_ID]);
    let no_bus = "unix:path=/nonexistent/xero-auth-test/bus";
    let run = |args: &[&str]| {
        env.std_cmd(args)
            .env_remove("XERO_AUTH_STORE")
            .env("DBUS_SESSION_BUS_ADDRESS", no_bus)
            .output()
            .unwrap()
    };

    let out = run(&["status"]);
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{}", stderr_of(&out));
    for known in [
        format!("profile:        {}", env.profile),
        format!("client id:      {CLIENT_ID}"),
        "Secret Service".to_string(),
        "UNAVAILABLE".to_string(),
        format!("default tenant: {DEFAULT_TENANT_ID}"),
    ] {
        assert!(stdout.contains(&known), "no {known:?} in:\n{stdout}");
    }
    assert!(
        stderr_of(&out).contains("unavailable"),
        "{}",
        stderr_of(&out)
    );

    let out = run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(5));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["client_id"], CLIENT_ID, "{report}");
    assert_eq!(report["default_tenant"], DEFAULT_TENANT_ID, "{report}");
    assert_eq!(report["store_usable"], false, "{report}");
    assert_eq!(report["error"]["exit_code"], 5, "{report}");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session D-Bus"),
        "{report}"
    );
}

// ------------------------------------------------------------------ login: scopes

/// The scopes of the `login --scope "..."` command a message shows, and whether it is a
/// client-credentials login.
fn suggested_login(stderr: &str) -> (String, bool) {
    let line = stderr
        .lines()
        .find(|l| l.contains("`xero-auth login") && l.contains("--scope \""))
        .unwrap_or_else(|| panic!("no login command in:\n{stderr}"));
    let start = line.find("--scope \"").unwrap() + "--scope \"".len();
    let end = start + line[start..].find('"').unwrap();
    (
        line[start..end].to_string(),
        line.contains("login --client-credentials"),
    )
}

#[test]
fn a_granular_only_app_refuses_a_broad_scope_and_the_login_says_what_works() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-granular-only");
    env.set_client(&fake);
    fake.add_granular_only_client(CLIENT_ID, Some(CLIENT_SECRET));
    let asked = "openid accounting.transactions accounting.contacts";

    // At the authorize step Xero shows its error page and never redirects: the login has said
    // before the browser opened what to ask for instead.
    let redirect = redirect_uri(free_port());
    let mut login = Login::browser(&env, &redirect, &["--scope", asked, "--timeout", "30"]);
    let url = login.authorize_url(&fake);
    let page = http_get(&url).unwrap();
    assert_eq!(page.status, 400, "{page:?}");
    assert!(
        page.body.contains("Invalid scope for client"),
        "{}",
        page.body
    );
    assert!(
        login
            .seen
            .contains("accounting.transactions is a broad scope")
            && login.seen.contains("2 March 2026")
            && login.seen.contains("29 April 2026"),
        "the note before the browser:\n{}",
        login.seen
    );
    let (before, _) = suggested_login(&login.seen);
    drop(login);

    // At the token endpoint (the app became granular-only after the consent): the error names
    // what was asked, the rule, and the command.
    fake.set_granular_only(CLIENT_ID, false);
    let redirect = redirect_uri(free_port());
    let mut login = Login::browser(&env, &redirect, &["--scope", asked]);
    let url = login.authorize_url(&fake);
    let location = consent(&url);
    fake.set_granular_only(CLIENT_ID, true);
    callback(location.as_str());
    let done = login.finish(FINISH);
    assert_eq!(done.code, Some(1), "stderr:\n{}", done.stderr);
    assert!(env.stored().is_none(), "nothing stored after a refusal");
    for part in [
        "invalid_scope",
        "asked for the scopes: openid accounting.transactions accounting.contacts offline_access",
        "apps created from 2 March 2026 (custom connections from 29 April 2026)",
        "September 2027",
    ] {
        assert!(done.stderr.contains(part), "{part:?} in:\n{}", done.stderr);
    }
    let (granular, cc) = suggested_login(&done.stderr);
    assert!(!cc);
    assert_eq!(granular, before, "the same command before and after");
    assert_eq!(
        granular,
        "openid accounting.invoices accounting.payments accounting.banktransactions \
         accounting.manualjournals accounting.classicexpenses accounting.contacts"
    );
    assert_no_secret("login stderr", &done.stderr, &secrets_of(&env));

    // The command it shows works.
    let (asked, _) = login_asking(&env, &fake, &["--scope", &granular]);
    assert!(
        !asked.iter().any(|s| s == "accounting.transactions"),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|s| s == "accounting.invoices"),
        "{asked:?}"
    );
}

#[test]
fn a_typo_in_a_scope_is_caught_before_the_browser_opens() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-scope-typo");
    env.set_client(&fake);
    let out = env
        .cmd(&[
            "login",
            "--no-browser",
            "--scope",
            "openid accounting.invoice",
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("'accounting.invoice' (did you mean 'accounting.invoices'?)"),
        "{stderr}"
    );
    assert!(!stderr.contains("Open this URL"), "{stderr}");
    assert_eq!(fake.count(Counter::Authorize), 0);
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}

#[test]
fn scope_shorthands_expand_and_unknown_names_are_sent_with_a_warning() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "login-scope-shorthand");
    env.set_client(&fake);
    let (asked, stderr) = login_asking(
        &env,
        &fake,
        &["--scope", "accounting.read accounting.einvoicing"],
    );
    assert!(!asked.iter().any(|s| s == "accounting.read"), "{asked:?}");
    for scope in [
        "accounting.invoices.read",
        "accounting.contacts.read",
        "accounting.reports.profitandloss.read",
        "accounting.einvoicing",
        "offline_access",
    ] {
        assert!(asked.iter().any(|s| s == scope), "{scope} in {asked:?}");
    }
    assert!(
        !asked.iter().any(|s| s == "accounting.journals.read"),
        "{asked:?}"
    );
    assert!(
        stderr.contains("warning: 'accounting.einvoicing' is not a scope xero-auth knows")
            && stderr.contains("the closest known is 'accounting.invoices'"),
        "{stderr}"
    );
}

#[test]
fn a_custom_connection_refused_a_broad_scope_is_told_the_granular_command() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "cc-granular-only");
    env.set_client(&fake);
    fake.add_granular_only_client(CLIENT_ID, Some(CLIENT_SECRET));
    let out = env
        .cmd(&[
            "login",
            "--client-credentials",
            "--scope",
            "accounting.transactions accounting.reports.read",
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("invalid_scope")
            && stderr.contains("Client credentials scope validation failed")
            && stderr.contains("accounting.transactions, accounting.reports.read are broad scopes"),
        "{stderr}"
    );
    let (granular, cc) = suggested_login(&stderr);
    assert!(cc, "{stderr}");
    assert!(!granular.contains("offline_access") && !granular.contains("openid"));
    env.ok(&["login", "--client-credentials", "--scope", &granular]);
    let status = status_json(&env).to_string();
    assert!(
        status.contains("accounting.reports.balancesheet.read"),
        "{status}"
    );
}

#[test]
fn tenants_disconnect_removes_the_connection_at_xero_and_the_default_tenant() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "tenants-disconnect", Duration::from_secs(60));
    fake.add_tenant(ACME_ID, ACME_NAME, "ORGANISATION");
    fake.add_tenant(SMITH_ID, ACME_NAME, "ORGANISATION");

    // No terminal and no --yes: nothing is done.
    let out = env
        .cmd(&["tenants", "disconnect", DEFAULT_TENANT_NAME])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(stderr_of(&out).contains("--yes"), "{}", stderr_of(&out));
    // A name several organisations share is refused.
    let out = env
        .cmd(&["tenants", "disconnect", ACME_NAME, "--yes"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).contains("names several tenants"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(fake.tenants().len(), 3, "nothing removed yet");

    let out = env.ok(&["tenants", "disconnect", DEFAULT_TENANT_NAME, "--yes"]);
    assert!(
        stderr_of(&out).contains("disconnected"),
        "{}",
        stderr_of(&out)
    );
    let left: Vec<String> = fake.tenants().into_iter().map(|t| t.tenant_id).collect();
    assert_eq!(left, [ACME_ID, SMITH_ID], "removed at the fake");
    assert_eq!(
        status_json(&env)["default_tenant"],
        Value::Null,
        "the default went"
    );
    let listed = stdout_of(&env.ok(&["tenants"]));
    assert!(
        !listed.contains(DEFAULT_TENANT_ID) && listed.contains(ACME_ID),
        "{listed}"
    );

    // By id, and a connection that is gone already.
    env.ok(&["tenants", "disconnect", SMITH_ID, "--yes"]);
    assert_eq!(fake.tenants().len(), 1);
    env.cmd(&["tenants", "disconnect", SMITH_ID, "--yes"])
        .assert()
        .code(1);
}

#[test]
fn tenants_counts_the_organisations_and_warns_near_the_plans_limit() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "tenants-plan", Duration::from_secs(60));
    fake.add_tenant(ACME_ID, ACME_NAME, "ORGANISATION");
    fake.add_tenant(SMITH_ID, "Smith & Co", "ORGANISATION");

    // No plan: the count, and how to set one.
    let err = stderr_of(&env.ok(&["tenants"]));
    assert!(err.contains("this token reaches 3 organisations"), "{err}");
    assert!(err.contains("config set plan PLAN"), "{err}");
    assert!(!err.contains("warning"), "{err}");

    // Starter allows 5: 3 is within.
    let err = stderr_of(&env.ok(&["tenants", "--plan", "starter"]));
    assert!(
        err.contains("3 organisations of the starter plan's 5"),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");

    // The profile's plan, and a fourth organisation: 80 %, a warning naming the way out.
    env.ok(&["config", "set", "plan", "Starter"]);
    fake.add_tenant(
        "4a3a8f8e-1111-4e5e-9b6f-0c1d2e3f4a5b",
        "Fourth Ltd",
        "ORGANISATION",
    );
    let err = stderr_of(&env.ok(&["tenants"]));
    assert!(
        err.contains("warning: this token alone reaches 4 organisations of the starter plan's 5"),
        "{err}"
    );
    assert!(err.contains("tenants disconnect NAME"), "{err}");
    // The JSON listing stays an array (the count is its length); the warning goes to stderr.
    let out = env.ok(&["tenants", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(4));
    assert!(stderr_of(&out).contains("warning"), "{}", stderr_of(&out));

    // At the limit.
    fake.add_tenant(
        "5b4b9f9f-2222-4f6f-8c7a-1d2e3f4a5b6c",
        "Fifth Ltd",
        "ORGANISATION",
    );
    let err = stderr_of(&env.ok(&["tenants"]));
    assert!(
        err.contains("the starter plan allows 5, so Xero lets no other organisation connect"),
        "{err}"
    );
    // --plan overrides the profile's.
    let err = stderr_of(&env.ok(&["tenants", "--plan", "core"]));
    assert!(
        err.contains("5 organisations of the core plan's 50") && !err.contains("warning"),
        "{err}"
    );
    let err = stderr_of(&env.ok(&["tenants", "--plan", "enterprise"]));
    assert!(err.contains("no connection limit"), "{err}");

    // A plan Xero does not have: named, with the ones it has; nothing listed.
    let out = env
        .cmd(&["tenants", "--plan", "premium"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).contains("starter, core, plus, advanced, enterprise"),
        "{}",
        stderr_of(&out)
    );
    // `config set` refuses it, naming the plans, and keeps the plan that was set.
    let out = env
        .cmd(&["config", "set", "plan", "gold"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(
        err.contains(".plan`: 'gold' is not one of Xero's plans"),
        "{err}"
    );
    assert!(
        err.contains("starter, core, plus, advanced, enterprise"),
        "{err}"
    );
    let out = stdout_of(&env.ok(&["config", "get", "plan"]));
    assert_eq!(out.trim(), "starter");

    // Journals: `scopes for` says which plan opens them, and that this one does not.
    env.ok(&["config", "set", "plan", "core"]);
    let out = stdout_of(&env.ok(&["scopes", "for", "/api.xro/2.0/Journals"]));
    assert!(
        out.contains("Advanced plan or above: the profile's plan is core"),
        "{out}"
    );
}
