//! The desktop's own prompt: a locked login keyring on a real desktop stack. Xvfb is the
//! display, a D-Bus session of the test's own carries GNOME Keyring, and GNOME Keyring shows its
//! real unlock dialog (gcr-prompter) when `xero-auth token` reads a locked item. The dialog is
//! found and answered with xdotool, as a person would: typed password, or Escape. A screenshot of
//! the dialog is kept under `target/tmp/test-output/desktop/` (not committed).
//!
//! Needs Xvfb, xdotool, xwd and GNOME Keyring's prompter (scripts/test installs them); without
//! them the test says why and skips, unless XERO_AUTH_REQUIRE_DESKTOP=1 (CI), where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fake_xero::FakeXero;

use crate::support::TestEnv;

/// The login keyring's password in the test's own keyring.
const KEYRING_PASSWORD: &str = "desktop-test-keyring-password";
/// gcr-prompter's window title for the login keyring.
const DIALOG: &str = "Unlock Login Keyring";
const PROMPTER: &str = "/usr/libexec/gcr-prompter";

/// Why the desktop stack cannot run here, if it cannot.
fn missing() -> Option<String> {
    let mut missing: Vec<&str> = [
        "Xvfb",
        "xdotool",
        "xwd",
        "dbus-daemon",
        "dbus-send",
        "gnome-keyring-daemon",
    ]
    .into_iter()
    .filter(|tool| which(tool).is_none())
    .collect();
    if !Path::new(PROMPTER).exists() {
        missing.push(PROMPTER);
    }
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed (Debian: xvfb xdotool x11-apps dbus gnome-keyring gcr)",
            missing.join(", ")
        )
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
}

macro_rules! require_desktop {
    () => {
        if let Some(why) = missing() {
            if std::env::var("XERO_AUTH_REQUIRE_DESKTOP").as_deref() == Ok("1") {
                panic!("the desktop stack is required here: {why}");
            }
            eprintln!("skipped: {why}; run scripts/test to install them");
            return;
        }
    };
}

/// Xvfb, a D-Bus session on it, and GNOME Keyring in that session with its login keyring
/// created and unlocked; all of it ends with the value.
struct Desktop {
    xvfb: Child,
    bus: Child,
    display: String,
    address: String,
    /// GNOME Keyring's files (its XDG_DATA_HOME).
    _data: tempfile::TempDir,
}

impl Desktop {
    fn start() -> Desktop {
        // Xvfb picks a free display and writes its number on stdout (-displayfd 1).
        let mut xvfb = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "1024x768x24",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let display = format!(":{}", first_line(&mut xvfb));
        let data = tempfile::tempdir().unwrap();
        // The session bus starts the prompter on demand with its own environment: the display.
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .env("DISPLAY", &display)
            .env("XDG_DATA_HOME", data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon starts");
        let address = first_line(&mut bus);
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--components=secrets", "--daemonize", "--unlock"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("DISPLAY", &display)
            .env("XDG_DATA_HOME", data.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon starts");
        {
            use std::io::Write;
            let mut stdin = keyring.stdin.take().unwrap();
            stdin.write_all(KEYRING_PASSWORD.as_bytes()).unwrap();
        }
        assert!(keyring.wait().unwrap().success(), "gnome-keyring-daemon");
        Desktop {
            xvfb,
            bus,
            display,
            address,
            _data: data,
        }
    }

    /// `env`'s commands use this desktop's session and display.
    fn adopt(&self, env: &mut TestEnv) {
        env.set_env("DBUS_SESSION_BUS_ADDRESS", &self.address);
        env.set_env("DISPLAY", &self.display);
    }

    /// Locks the login keyring over D-Bus, as a screen lock or `secret-tool lock` would.
    fn lock(&self) {
        let out = self
            .command("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.secrets",
                "/org/freedesktop/secrets",
                "org.freedesktop.Secret.Service.Lock",
                "array:objpath:/org/freedesktop/secrets/collection/login",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lock: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("DISPLAY", &self.display);
        cmd
    }

    /// The window id of the unlock dialog, once it is shown (at most 30 s).
    fn dialog(&self) -> Option<String> {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let out = self
                .command("xdotool")
                .args(["search", "--name", DIALOG])
                .output()
                .unwrap();
            if let Some(id) = String::from_utf8_lossy(&out.stdout).lines().next() {
                return Some(id.trim().to_string());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// A screenshot of the whole screen (X window dump) into `path`.
    fn screenshot(&self, path: &Path) {
        let status = self
            .command("xwd")
            .args(["-root", "-silent", "-out"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "xwd");
    }

    /// Focuses window `id` and presses `keys` (xdotool key names), after typing `text`.
    fn answer(&self, id: &str, text: Option<&str>, key: &str) {
        let run = |args: &[&str]| {
            let status = self.command("xdotool").args(args).status().unwrap();
            assert!(status.success(), "xdotool {args:?}");
        };
        run(&["windowfocus", "--sync", id]);
        if let Some(text) = text {
            run(&["type", "--delay", "20", text]);
        }
        run(&["key", key]);
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        // GNOME Keyring and the prompter end with their bus.
        for child in [&mut self.bus, &mut self.xvfb] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

/// Where the screenshots go: the build's folder for tests' files, never the repository's.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-output/desktop");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `xero-auth token` while the keyring is locked: started, its dialog found (a screenshot taken)
/// and answered; what it printed.
fn token_through_the_dialog(
    desk: &Desktop,
    env: &TestEnv,
    shot: &str,
    text: Option<&str>,
    key: &str,
) -> Output {
    desk.lock();
    let child = env
        .std_cmd(&["token"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Some(id) = desk.dialog() else {
        let out = child.wait_with_output().unwrap();
        panic!(
            "no unlock dialog appeared; xero-auth: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let path = output_dir().join(shot);
    desk.screenshot(&path);
    assert!(std::fs::metadata(&path).unwrap().len() > 0, "{path:?}");
    desk.answer(&id, text, key);
    child.wait_with_output().unwrap()
}

#[test]
fn a_locked_keyring_shows_the_desktops_unlock_dialog_and_the_command_goes_on() {
    require_desktop!();
    let desk = Desktop::start();
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "desktop-unlock");
    desk.adopt(&mut env);
    env.set_client(&fake);
    let tokens = env.import_fresh(&fake, Duration::from_secs(60));
    assert_eq!(
        String::from_utf8_lossy(&env.ok(&["token"]).stdout).trim(),
        tokens.access_token,
        "unlocked: the token, no dialog"
    );

    // Locked, the password typed into the dialog: the token, and no request to Xero beyond.
    let out = token_through_the_dialog(
        &desk,
        &env,
        "unlock-dialog.xwd",
        Some(KEYRING_PASSWORD),
        "Return",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        tokens.access_token,
        "{stderr}"
    );

    // Locked, the dialog dismissed: exit 5, today's message, nothing printed on stdout.
    let out = token_through_the_dialog(&desk, &env, "dismissed-dialog.xwd", None, "Escape");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("locked"), "{stderr}");
    assert!(!stderr.contains(&tokens.access_token) && !stderr.contains(KEYRING_PASSWORD));
}
