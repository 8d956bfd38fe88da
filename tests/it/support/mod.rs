//! Shared set-up for the integration tests: a private home for each test, the real binary
//! pointed at an in-process fake Xero, and direct access to the real keychain.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod driven;
#[macro_use]
pub mod openbao;
#[macro_use]
pub mod processes;

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::{Duration, SystemTime};

pub use fake_xero::{Counter, FakeXero, Fault, IssuedTokens, RefreshTokenStatus, Target};
use xero_auth::config::StoreKind;
use xero_auth::store::{Keychain, SecretStore, client_secret_account, token_set_account};

pub const CLIENT_ID: &str = "7F1C6A1B2C3D4E5F60718293A4B5C6D7";
pub const CLIENT_SECRET: &str = "cs-Jq8vT2mZp4Lw9Xr6Nd3Hk7Yb5Fg1Sc0Ue";
pub const SCOPE: &str = "openid profile email accounting.transactions offline_access";

/// Whether the Secret Service answers. Tests that need it call [`require_keychain!`].
pub fn keychain_reachable() -> Result<(), String> {
    let keychain = Keychain::new(StoreKind::SecretService);
    keychain
        .get("probe/does-not-exist")
        .map(|_| ())
        .map_err(|f| f.cause)
}

/// Returns early from a test when no Secret Service is reachable, unless the test script asked
/// for the real keychain (XERO_AUTH_TEST_REQUIRE_KEYCHAIN=1), where that is a failure.
#[macro_export]
macro_rules! require_keychain {
    () => {
        if let Err(why) = support::keychain_reachable() {
            if std::env::var("XERO_AUTH_TEST_REQUIRE_KEYCHAIN").as_deref() == Ok("1") {
                panic!("the Secret Service is required here but unreachable: {why}");
            }
            eprintln!("skipped: no Secret Service ({why}); run scripts/test for the real keychain");
            return;
        }
    };
}

/// One test's world: a temporary home, a unique profile, the fake's URLs.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub profile: String,
    pub base_url: String,
    pub token_url: String,
    extra: Vec<(String, String)>,
}

impl TestEnv {
    pub fn new(fake: &FakeXero, name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("xero-auth-test")
            .tempdir()
            .unwrap();
        for sub in ["home", "config", "state", "cache", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let env = TestEnv {
            dir,
            profile: format!("t-{name}-{}", std::process::id()),
            base_url: fake.base_url(),
            token_url: fake.token_url(),
            extra: Vec::new(),
        };
        env.wipe_keychain();
        // The app exists at the fake from the start; `set_client` also stores it locally.
        fake.add_client(CLIENT_ID, Some(CLIENT_SECRET));
        env
    }

    /// Adds or replaces an environment variable for every command of this test.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra.retain(|(k, _)| k != key);
        self.extra.push((key.to_string(), value.to_string()));
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The binary with this test's environment: private folders, the fake's endpoints.
    pub fn std_cmd(&self, args: &[&str]) -> StdCommand {
        let mut cmd = StdCommand::new(env!("CARGO_BIN_EXE_xero-auth"));
        let root = self.dir.path();
        cmd.args(args)
            .env_remove("XERO_CLIENT_SECRET")
            .env_remove("RUST_LOG")
            .env_remove("XERO_AUTH_CONFIG_DIR")
            .env_remove("XERO_AUTH_STATE_DIR")
            .env("HOME", root.join("home"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_STATE_HOME", root.join("state"))
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XERO_AUTH_PROFILE", &self.profile)
            .env("XERO_AUTH_TOKEN_URL", &self.token_url)
            .env(
                "XERO_AUTH_AUTHORIZE_URL",
                format!("{}/identity/connect/authorize", self.base_url),
            )
            .env(
                "XERO_AUTH_REVOCATION_URL",
                format!("{}/connect/revocation", self.base_url),
            )
            .env(
                "XERO_AUTH_CONNECTIONS_URL",
                format!("{}/connections", self.base_url),
            )
            .env("XERO_AUTH_API_URL", format!("{}/", self.base_url))
            .env("XERO_AUTH_HTTP_TIMEOUT", "2")
            .env("XERO_AUTH_STORE_TIMEOUT", "20");
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.std_cmd(args))
    }

    /// Runs a command that must succeed, and returns what it printed.
    pub fn ok(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).assert().success().get_output().clone()
    }

    /// Registers the app at the fake and stores it with `client set`.
    pub fn set_client(&self, fake: &FakeXero) {
        fake.add_client(CLIENT_ID, Some(CLIENT_SECRET));
        self.cmd(&["client", "set", "--client-id", CLIENT_ID])
            .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
            .assert()
            .success();
    }

    /// Writes the classic token file (as Xero's example programs save it), dated `age` ago.
    pub fn write_token_file(&self, tokens: &IssuedTokens, age: Duration) -> PathBuf {
        let path = self.dir.path().join("xero-access-token.json");
        let body = serde_json::json!({
            "id_token": tokens.id_token,
            "access_token": tokens.access_token,
            "expires_in": tokens.expires_in,
            "token_type": "Bearer",
            "refresh_token": tokens.refresh_token,
            "scope": tokens.scope,
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
        set_mtime(&path, SystemTime::now() - age);
        path
    }

    /// Issues tokens at the fake and imports them: `age` ago (a day-old file has an expired
    /// access token).
    pub fn import_fresh(&self, fake: &FakeXero, age: Duration) -> IssuedTokens {
        let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
        let file = self.write_token_file(&tokens, age);
        self.cmd(&["import", file.to_str().unwrap()])
            .assert()
            .success();
        tokens
    }

    /// The token set's raw bytes, read from the real keychain.
    pub fn stored_raw(&self) -> Option<Vec<u8>> {
        Keychain::new(StoreKind::SecretService)
            .get(&token_set_account(&self.profile))
            .expect("keychain readable")
            .map(|z| z.to_vec())
    }

    /// The stored token set as JSON.
    pub fn stored(&self) -> Option<serde_json::Value> {
        self.stored_raw()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    /// Rewrites the stored set's access-token expiry (Unix seconds), straight in the keychain, as
    /// time passing would: `now() - 60` makes it expired.
    pub fn set_stored_expiry(&self, expires_at: i64) {
        let mut set = self.stored().expect("a token set is stored");
        set["expires_at"] = serde_json::Value::from(expires_at);
        Keychain::new(StoreKind::SecretService)
            .set(
                &token_set_account(&self.profile),
                &format!("xero-auth token set ({})", self.profile),
                &serde_json::to_vec(&set).unwrap(),
            )
            .expect("keychain writable");
    }

    /// The stored access token.
    pub fn stored_access_token(&self) -> String {
        self.stored().expect("a token set is stored")["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn stored_refresh_token(&self) -> String {
        self.stored().expect("a token set is stored")["refresh_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// What `secret-tool` (libsecret, independent of our code) finds for an account.
    pub fn secret_tool_lookup(&self, account: &str) -> Option<String> {
        let out = StdCommand::new("secret-tool")
            .args(["lookup", "service", "xero-auth", "username", account])
            .output()
            .expect("secret-tool runs");
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    }

    pub fn wipe_keychain(&self) {
        let keychain = Keychain::new(StoreKind::SecretService);
        for account in [
            token_set_account(&self.profile),
            client_secret_account(&self.profile),
        ] {
            let _ = keychain.delete(&account);
        }
    }
}

/// A profile with the app stored (`client set`) and a token file dated `age` ago imported
/// (a day-old file has an expired access token). Returns the test's environment and the
/// tokens the fake issued.
pub fn imported_profile(fake: &FakeXero, name: &str, age: Duration) -> (TestEnv, IssuedTokens) {
    let env = TestEnv::new(fake, name);
    env.set_client(fake);
    let tokens = env.import_fresh(fake, age);
    (env, tokens)
}

/// An [`imported_profile`] with the fake's tenant chosen as the default (`tenants use`): ready
/// for `api`, `exec` and `token --env`.
pub fn ready_profile(fake: &FakeXero, name: &str, age: Duration) -> (TestEnv, IssuedTokens) {
    let (env, tokens) = imported_profile(fake, name, age);
    env.cmd(&["tenants", "use", fake_xero::DEFAULT_TENANT_ID])
        .assert()
        .success();
    (env, tokens)
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.wipe_keychain();
    }
}

/// Runs one of the project's install scripts (`scripts/NAME`: Xero's MCP server, the SDKs),
/// which installs into a cache folder once and prints the path of what it installed; that path,
/// or the script's own reason why there is none.
pub fn installed_by(name: &str) -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let out = StdCommand::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A token URL on a port of 127.0.0.1 nothing listens on: every connection is refused, nothing
/// is sent.
pub fn closed_token_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/connect/token")
}

pub fn set_mtime(path: &Path, when: SystemTime) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(when).unwrap();
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Every file under `root` whose bytes contain `needle`.
pub fn files_containing(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                hits.push(path);
            }
        }
    }
    hits
}

/// The Basic credential our client id and secret make, as it would appear on the wire.
pub fn basic_credential() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
}

/// A listener on 127.0.0.1 that no request may reach: it accepts every connection, records what
/// arrives (up to the end of the headers), and answers 401, which would make a client that sent
/// a token there refresh and send it again. Tests assert it saw nothing.
pub struct Tripwire {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Tripwire {
    pub fn start() -> Tripwire {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&byte[..n]),
                    }
                }
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Tripwire { port, seen }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What reached it: each connection's request head (empty when nothing was sent).
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Joins a new anonymous session keyring, as `keyctl session -` does. Credentials belong to the
/// calling thread, so this test's thread and the processes it starts use it; other tests' threads
/// do not. `Err` when the kernel refuses (no keyutils, a seccomp filter forbidding keyctl).
#[cfg(target_os = "linux")]
pub fn join_new_session_keyring() -> Result<(), String> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) takes no pointer but the null name.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if id < 0 {
        return Err(format!(
            "keyctl(KEYCTL_JOIN_SESSION_KEYRING) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
