//! A real OpenBao server for the vault-store tests: `bao server -dev` on 127.0.0.1 (in memory,
//! unsealed, with a root token of the test's choosing), installed by scripts/install-openbao and
//! started by scripts/openbao-dev, as memcheck and the bench start theirs.
//! Tests talk to it through the binary and, to set it up and to read back what is stored,
//! through its HTTP API here (plain HTTP/1.1 on a loopback socket, independent of our client).
//!
//! When `bao` cannot be installed the tests say why and skip, unless
//! `XERO_AUTH_REQUIRE_OPENBAO=1` (CI), where that is a failure ([`require_openbao!`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The root token every test server is started with.
pub const ROOT_TOKEN: &str = "test-root-token-8f2c1d";

/// The `bao` binary (scripts/install-openbao installs it once and prints its path).
pub fn bao_binary() -> Result<PathBuf, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-openbao");
    let out = Command::new(script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run scripts/install-openbao ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/install-openbao failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Returns early from a test when OpenBao cannot be installed, unless the test script asked for
/// it (XERO_AUTH_REQUIRE_OPENBAO=1), where that is a failure. Evaluates to the `bao` path.
#[macro_export]
macro_rules! require_openbao {
    () => {
        match support::openbao::bao_binary() {
            Ok(path) => path,
            Err(why) => {
                if std::env::var("XERO_AUTH_REQUIRE_OPENBAO").as_deref() == Ok("1") {
                    panic!("OpenBao is required here but could not be installed: {why}");
                }
                eprintln!("skipped: no OpenBao ({why})");
                return;
            }
        }
    };
}

/// One `bao server -dev` on a free loopback port, started by scripts/openbao-dev (the one place
/// that knows how), which also stops it should this test process die without dropping it.
pub struct OpenBao {
    bin: PathBuf,
    /// The server's process id, until it is stopped.
    pid: Option<i32>,
    pub port: u16,
    /// `http://127.0.0.1:PORT` (or `https://` with TLS).
    pub addr: String,
    dir: tempfile::TempDir,
    /// With `-dev-tls`: the CA the server's certificate is signed by.
    pub ca_file: Option<PathBuf>,
    log: PathBuf,
}

impl OpenBao {
    /// Starts a plain-HTTP dev server and waits until it answers.
    pub fn start(bin: &Path) -> OpenBao {
        Self::start_with(bin, false)
    }

    /// Starts a dev server with TLS (`-dev-tls`: a CA and a certificate of its own, for
    /// 127.0.0.1), and waits until it answers.
    pub fn start_tls(bin: &Path) -> OpenBao {
        Self::start_with(bin, true)
    }

    fn start_with(bin: &Path, tls: bool) -> OpenBao {
        let dir = tempfile::Builder::new()
            .prefix("openbao")
            .tempdir()
            .unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/openbao-dev");
        let mut cmd = Command::new(script);
        cmd.arg("--bao")
            .arg(bin)
            .arg("--dir")
            .arg(dir.path())
            .args(["--token", ROOT_TOKEN])
            .args(["--die-with", &std::process::id().to_string()]);
        if tls {
            cmd.arg("--tls");
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("scripts/openbao-dev runs");
        assert!(
            out.status.success(),
            "OpenBao did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).expect("scripts/openbao-dev's JSON");
        let text = |key: &str| got[key].as_str().map(str::to_string);
        OpenBao {
            bin: bin.to_path_buf(),
            pid: got["pid"].as_i64().map(|pid| pid as i32),
            port: got["port"].as_u64().expect("a port") as u16,
            addr: text("addr").expect("an address"),
            ca_file: text("ca_file").map(PathBuf::from),
            log: PathBuf::from(text("log").expect("a log")),
            dir,
        }
    }

    /// Runs the `bao` CLI against this server with the root token.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env("HOME", self.dir.path());
        if let Some(ca) = &self.ca_file {
            cmd.env("BAO_CACERT", ca);
        }
        cmd.output().expect("bao runs")
    }

    /// The `bao` binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// One request to the HTTP API (plain HTTP only); `(status, JSON body or Null)`.
    pub fn try_api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        assert!(self.ca_file.is_none(), "the raw API is plain HTTP only");
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} /v1/{path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if let Some(token) = token {
            request.push_str(&format!("X-Vault-Token: {token}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes())?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let payload = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(payload)
        } else {
            payload.to_string()
        };
        Ok((
            status,
            serde_json::from_str(&payload).unwrap_or(Value::Null),
        ))
    }

    /// [`OpenBao::try_api`] with the root token, which must answer.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.try_api(method, path, Some(ROOT_TOKEN), body)
            .expect("OpenBao answers")
    }

    /// The `value` field of entry `secret/data/PATH` and its version, read as root.
    pub fn kv_get(&self, path: &str) -> Option<(String, u64)> {
        let (status, body) = self.api("GET", &format!("secret/data/{path}"), None);
        if status != 200 {
            return None;
        }
        Some((
            body["data"]["data"]["value"].as_str()?.to_string(),
            body["data"]["metadata"]["version"].as_u64().unwrap_or(0),
        ))
    }

    /// The fields of entry `secret/data/PATH`, read as root.
    pub fn kv_fields(&self, path: &str) -> Option<Value> {
        let (status, body) = self.api("GET", &format!("secret/data/{path}"), None);
        (status == 200).then(|| body["data"]["data"].clone())
    }

    /// Writes `value` to `secret/data/PATH` as root, with check-and-set `cas` when given;
    /// returns the status.
    pub fn kv_put(&self, path: &str, value: &str, cas: Option<u64>) -> (u16, Value) {
        self.kv_put_fields(path, json!({ "value": value }), cas)
    }

    /// Writes `fields` to `secret/data/PATH` as root, with check-and-set `cas` when given.
    pub fn kv_put_fields(&self, path: &str, fields: Value, cas: Option<u64>) -> (u16, Value) {
        let mut body = json!({ "data": fields });
        if let Some(cas) = cas {
            body["options"] = json!({ "cas": cas });
        }
        self.api("POST", &format!("secret/data/{path}"), Some(&body))
    }

    /// The current version of `secret/data/PATH` (0 when it never existed).
    pub fn kv_version(&self, path: &str) -> u64 {
        let (_, body) = self.api("GET", &format!("secret/metadata/{path}"), None);
        body["data"]["current_version"].as_u64().unwrap_or(0)
    }

    /// Writes ACL policy `name`.
    pub fn write_policy(&self, name: &str, hcl: &str) {
        let (status, body) = self.api(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(&json!({ "policy": hcl })),
        );
        assert!(
            status == 204 || status == 200,
            "policy {name}: {status} {body}"
        );
    }

    /// A new token with `policies` (and without the default policy's extras).
    pub fn create_token(&self, policies: &[&str]) -> String {
        let (status, body) = self.api(
            "POST",
            "auth/token/create",
            Some(&json!({ "policies": policies, "ttl": "1h" })),
        );
        assert_eq!(status, 200, "token create: {body}");
        body["auth"]["client_token"].as_str().unwrap().to_string()
    }

    pub fn revoke_token(&self, token: &str) {
        let (status, body) = self.api(
            "POST",
            "auth/token/revoke",
            Some(&json!({ "token": token })),
        );
        assert!(status == 204 || status == 200, "revoke: {status} {body}");
    }

    /// Enables AppRole and creates role `name` with `policies`; returns its role id and a new
    /// secret id.
    pub fn approle(&self, name: &str, policies: &[&str]) -> (String, String) {
        let _ = self.api(
            "POST",
            "sys/auth/approle",
            Some(&json!({ "type": "approle" })),
        );
        let (status, body) = self.api(
            "POST",
            &format!("auth/approle/role/{name}"),
            Some(&json!({ "token_policies": policies, "token_ttl": "10m" })),
        );
        assert!(status == 204 || status == 200, "role: {status} {body}");
        let (_, body) = self.api("GET", &format!("auth/approle/role/{name}/role-id"), None);
        let role_id = body["data"]["role_id"].as_str().unwrap().to_string();
        let (_, body) = self.api(
            "POST",
            &format!("auth/approle/role/{name}/secret-id"),
            Some(&json!({})),
        );
        let secret_id = body["data"]["secret_id"].as_str().unwrap().to_string();
        (role_id, secret_id)
    }

    /// Creates namespace `name`, with a KV version 2 engine at `secret` inside it.
    pub fn namespace(&self, name: &str) {
        let (status, body) = self.api("POST", &format!("sys/namespaces/{name}"), Some(&json!({})));
        assert!(status == 200 || status == 204, "namespace: {status} {body}");
    }

    pub fn seal(&self) {
        let (status, body) = self.api("PUT", "sys/seal", None);
        assert!(status == 204 || status == 200, "seal: {status} {body}");
    }

    /// Unseals with the key the dev server printed at start-up.
    pub fn unseal(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let key = log
            .lines()
            .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
            .unwrap_or_else(|| panic!("no unseal key in the server's output:\n{log}"))
            .trim()
            .to_string();
        let (status, body) = self
            .try_api("PUT", "sys/unseal", None, Some(&json!({ "key": key })))
            .unwrap();
        assert_eq!(status, 200, "unseal: {body}");
        assert_eq!(body["sealed"], false);
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel, nothing answers.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT), with everything it stored.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        let pid = self.pid.expect("a running server");
        // SAFETY: a plain kill(2) of the server this struct started (its keeper reaps it, so
        // the pid stays the server's until this struct stops it).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Stops the server (SIGKILL) and waits until it is gone; what it stored is gone too (dev
    /// servers keep it in memory).
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: as in `signal`; a frozen server is let go on first, then killed.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
            let started = Instant::now();
            // SAFETY: signal 0 only asks whether the process still exists.
            while unsafe { libc::kill(pid, 0) } == 0 && started.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    out
}
