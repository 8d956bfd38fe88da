//! Processes for the crash, storm and store-fault tests: running the binary with a deadline,
//! crash points, and a private D-Bus session with its own GNOME Keyring that a test may lock,
//! break or kill without touching the session the other tests share.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// SIGABRT on Linux: how a process stopped at a crash point (`std::process::abort()`) ends.
pub const SIGABRT: i32 = 6;
/// SIGKILL on Linux.
pub const SIGKILL: i32 = 9;

/// Returns early from a test when the binary was built without the crash points, unless the
/// test script asked for the full suite (XERO_AUTH_TEST_REQUIRE_KEYCHAIN=1), where that is a
/// failure: a crash test that cannot crash would pass without proving anything.
#[macro_export]
macro_rules! require_failpoints {
    () => {
        if !cfg!(feature = "failpoints") {
            if std::env::var("XERO_AUTH_TEST_REQUIRE_KEYCHAIN").as_deref() == Ok("1") {
                panic!("this test needs the crash points: cargo test --features failpoints");
            }
            eprintln!("skipped: built without --features failpoints");
            return;
        }
    };
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child whose stdout and stderr are collected by threads, so that it never blocks on a full
/// pipe while the test polls it.
pub struct Running {
    pub child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

impl Running {
    /// Spawns `cmd` with stdin closed and stdout/stderr collected.
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command starts");
        let stdout = Some(drain(child.stdout.take().unwrap()));
        let stderr = Some(drain(child.stderr.take().unwrap()));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends SIGKILL (`kill -9`) to this child.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL the child");
    }

    /// Waits (polling) for the child to end; kills it and fails the test after `within`.
    pub fn finish(mut self, within: Duration) -> Output {
        let status = wait_or_fail(&mut self.child, within, &mut self.stderr);
        Output {
            status,
            stdout: self.stdout.take().unwrap().join().unwrap_or_default(),
            stderr: self.stderr.take().unwrap().join().unwrap_or_default(),
        }
    }
}

/// Waits (polling) for `child` to end; after `within`, kills it and fails the test, showing its
/// stderr (collected by `stderr`).
pub fn wait_or_fail(
    child: &mut Child,
    within: Duration,
    stderr: &mut Option<JoinHandle<Vec<u8>>>,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            kill_and_fail(
                child,
                stderr,
                &format!("the command did not end within {within:?}"),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills `child` and fails the test with `what` and the child's stderr.
pub fn kill_and_fail(child: &mut Child, stderr: &mut Option<JoinHandle<Vec<u8>>>, what: &str) -> ! {
    let _ = child.kill();
    let _ = child.wait();
    let stderr = stderr
        .take()
        .and_then(|s| s.join().ok())
        .unwrap_or_default();
    panic!("{what}; stderr:\n{}", String::from_utf8_lossy(&stderr));
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `cmd` with the crash point `point` armed to abort the process there (`return` is this
/// project's "crash now", see src/failpoints.rs). Runs it and checks that it really died at
/// the point (SIGABRT) rather than finishing: otherwise the test would prove nothing.
pub fn run_to_crash(mut cmd: Command, point: &str) -> Output {
    cmd.env("FAILPOINTS", format!("{point}=return"));
    let out = Running::spawn(cmd).finish(Duration::from_secs(60));
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "the process should have crashed at {point}, but ended with {:?}; stderr:\n{}",
        out.status,
        stderr_text(&out)
    );
    out
}

/// Every token the fake issued (access, refresh and id tokens of every user grant).
pub fn every_issued_secret(fake: &fake_xero::FakeXero) -> Vec<String> {
    let mut secrets = Vec::new();
    for response in fake.issued() {
        for key in ["access_token", "refresh_token", "id_token"] {
            if let Some(s) = response.get(key).and_then(|v| v.as_str())
                && !s.is_empty()
            {
                secrets.push(s.to_string());
            }
        }
    }
    secrets
}

/// Whether process `pid` has `path` open (Linux: its /proc/PID/fd links).
pub fn has_file_open(pid: u32, path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    entries
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

/// Runs a small helper program to completion (dbus-send, secret-tool…), with `envs`.
fn helper(program: &str, args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"));
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let running = Running {
        stdout: Some(drain(child.stdout.take().unwrap())),
        stderr: Some(drain(child.stderr.take().unwrap())),
        child,
    };
    running.finish(Duration::from_secs(30))
}

/// A D-Bus session bus and a GNOME Keyring of its own, with its files under `root`.
///
/// `dbus-daemon --session --nofork` is started directly rather than through
/// `dbus-run-session`, so that the test knows the bus daemon's process id and can kill it (the
/// bus is the same kind `dbus-run-session` starts). The bus daemon and the keyring run with
/// this session's own `XDG_DATA_HOME` (the keyring files) and `XDG_RUNTIME_DIR` (the keyring's
/// control socket), so nothing reaches, or is reached by, the session the other tests share;
/// a keyring started by D-Bus activation would inherit the same folders.
pub struct PrivateKeyring {
    root: PathBuf,
    bus: Option<Child>,
    /// The session bus address, for `DBUS_SESSION_BUS_ADDRESS`.
    pub address: String,
    keyring_pids: Vec<u32>,
}

/// The password of every private keyring.
const PASSWORD: &str = "pw";
/// The default collection GNOME Keyring creates and unlocks with `--unlock`.
const LOGIN_COLLECTION: &str = "/org/freedesktop/secrets/collection/login";

impl PrivateKeyring {
    /// Starts the bus and an unlocked keyring (password `pw`), and waits until the keyring
    /// answers on the bus.
    pub fn start(root: &Path) -> PrivateKeyring {
        let (data, run) = (root.join("data"), root.join("run"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nosyslog", "--print-address=1"])
            .env("XDG_DATA_HOME", &data)
            .env("XDG_RUNTIME_DIR", &run)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon starts");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut address)
            .expect("dbus-daemon prints its address");
        let address = address.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon address: {address:?}"
        );
        let mut keyring = PrivateKeyring {
            root: root.to_path_buf(),
            bus: Some(bus),
            address,
            keyring_pids: Vec::new(),
        };
        keyring.start_keyring();
        keyring
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS", self.address.clone()),
            (
                "XDG_DATA_HOME",
                self.root.join("data").to_string_lossy().into_owned(),
            ),
            (
                "XDG_RUNTIME_DIR",
                self.root.join("run").to_string_lossy().into_owned(),
            ),
        ]
    }

    fn helper(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let envs = self.envs();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        helper(program, args, &envs, stdin)
    }

    fn dbus_call(&self, dest: &str, path: &str, method: &str, args: &[&str]) -> Output {
        let dest = format!("--dest={dest}");
        let mut all = vec!["--session", &dest, "--print-reply", path, method];
        all.extend_from_slice(args);
        self.helper("dbus-send", &all, None)
    }

    /// Whether a Secret Service owns its name on this bus (asking does not activate one).
    pub fn keyring_answers(&self) -> bool {
        let out = self.dbus_call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            &["string:org.freedesktop.secrets"],
        );
        stdout_text(&out).contains("boolean true")
    }

    /// The process id of the Secret Service on this bus.
    pub fn keyring_pid(&self) -> Option<u32> {
        let out = self.dbus_call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetConnectionUnixProcessID",
            &["string:org.freedesktop.secrets"],
        );
        stdout_text(&out)
            .split_whitespace()
            .skip_while(|w| *w != "uint32")
            .nth(1)
            .and_then(|pid| pid.parse().ok())
    }

    fn start_keyring(&mut self) {
        let out = self.helper(
            "gnome-keyring-daemon",
            &["--components=secrets", "--daemonize", "--unlock"],
            Some(PASSWORD),
        );
        assert!(
            out.status.success(),
            "gnome-keyring-daemon: {}",
            stderr_text(&out)
        );
        wait_until(
            Duration::from_secs(20),
            "the private keyring on the bus",
            || self.keyring_answers(),
        );
        let pid = self.keyring_pid().expect("the keyring's process id");
        self.keyring_pids.push(pid);
    }

    /// Locks the default collection, as a screen lock or `secret-tool lock` would.
    pub fn lock(&self) {
        let out = self.dbus_call(
            "org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.Lock",
            &[&format!("array:objpath:{LOGIN_COLLECTION}")],
        );
        assert!(
            stdout_text(&out).contains(LOGIN_COLLECTION),
            "the collection was locked: {}{}",
            stdout_text(&out),
            stderr_text(&out)
        );
    }

    /// Ends the keyring daemon (SIGKILL), leaving the bus running.
    pub fn kill_keyring(&mut self) {
        let pid = self.keyring_pid().expect("a keyring runs");
        kill_pid(pid, "KILL");
        self.keyring_pids.retain(|p| *p != pid);
        wait_until(
            Duration::from_secs(10),
            "the keyring to leave the bus",
            || !self.keyring_answers(),
        );
    }

    /// Ends the bus daemon (SIGKILL): every connection to it breaks.
    pub fn kill_bus(&mut self) {
        if let Some(mut bus) = self.bus.take() {
            bus.kill().expect("SIGKILL dbus-daemon");
            bus.wait().expect("dbus-daemon reaped");
        }
    }

    /// Unlocks the keyring the way xero-auth's message tells a headless user to:
    /// `echo -n PASSWORD | gnome-keyring-daemon --replace --unlock --components=secrets` — a new
    /// daemon takes over the bus name from the running (locked, or missing) one and reads its
    /// items back from its files, unlocked.
    pub fn restart_unlocked(&mut self) {
        let old = self.keyring_pid();
        let out = self.helper(
            "gnome-keyring-daemon",
            &[
                "--replace",
                "--unlock",
                "--components=secrets",
                "--daemonize",
            ],
            Some(PASSWORD),
        );
        assert!(
            out.status.success(),
            "gnome-keyring-daemon --replace: {}",
            stderr_text(&out)
        );
        let mut new = None;
        wait_until(
            Duration::from_secs(20),
            "the new keyring daemon on the bus",
            || {
                new = self.keyring_pid().filter(|pid| Some(*pid) != old);
                new.is_some()
            },
        );
        self.keyring_pids.retain(|p| Some(*p) != old);
        if let Some(old) = old {
            kill_if_keyring(old); // it was replaced; make sure it is gone
        }
        self.keyring_pids.extend(new);
    }

    /// What `secret-tool` (libsecret) finds for an account of service `xero-auth`.
    pub fn lookup(&self, account: &str) -> Option<String> {
        let out = self.helper(
            "secret-tool",
            &["lookup", "service", "xero-auth", "username", account],
            None,
        );
        out.status.success().then(|| stdout_text(&out))
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        // The keyring daemons this session started (or D-Bus activated), by id; then the bus.
        if self.bus.is_some()
            && let Some(pid) = self.keyring_pid()
        {
            self.keyring_pids.push(pid);
        }
        for pid in std::mem::take(&mut self.keyring_pids) {
            kill_if_keyring(pid);
        }
        self.kill_bus();
    }
}

/// SIGKILL to `pid` if it is still a keyring daemon (not a process that got its id since).
fn kill_if_keyring(pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains("gnome-keyring-daemon") {
        kill_pid(pid, "KILL");
    }
}

/// `kill -SIGNAL PID`, for a process this test started.
pub fn kill_pid(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
