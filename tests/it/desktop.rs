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
    /// GNOME Keyring's files (its XDG_DATA_HOME) and sockets (XDG_RUNTIME_DIR).
    _data: tempfile::TempDir,
    /// One desktop at a time: the tests' desktops would otherwise share a keyring daemon
    /// found through the runtime folder, and the display's focus.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_DESKTOP: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Desktop {
    fn start() -> Desktop {
        let one_at_a_time = ONE_DESKTOP.lock().unwrap_or_else(|e| e.into_inner());
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
        let runtime = data.path().join("runtime");
        std::fs::create_dir_all(&runtime).unwrap();
        std::fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        // The session bus starts the prompter on demand with its own environment: the display.
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .env("DISPLAY", &display)
            .env("XDG_DATA_HOME", data.path())
            .env("XDG_RUNTIME_DIR", &runtime)
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
            .env("XDG_RUNTIME_DIR", &runtime)
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
            _one_at_a_time: one_at_a_time,
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
                .args(["search", "--onlyvisible", "--name", DIALOG])
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

    /// Focuses window `id` and presses `key` (an xdotool key name), after typing `text`. The
    /// focus is tried again for a while: a dialog just mapped may not take it yet.
    fn answer(&self, id: &str, text: Option<&str>, key: &str) {
        let run = |args: &[&str]| {
            self.command("xdotool")
                .args(args)
                .status()
                .unwrap()
                .success()
        };
        let end = Instant::now() + Duration::from_secs(15);
        while !run(&["windowfocus", "--sync", id]) {
            assert!(
                Instant::now() < end,
                "xdotool could not focus the dialog {id}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(text) = text {
            assert!(run(&["type", "--delay", "20", text]), "xdotool type");
        }
        assert!(run(&["key", key]), "xdotool key {key}");
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
    // The prompter (gcr-prompter) of this dialog, to end once it is answered.
    let prompter = desk
        .command("xdotool")
        .args(["getwindowpid", &id])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        });
    desk.answer(&id, text, key);
    let out = child.wait_with_output().unwrap();
    // A prompter lingers a while and shows the next prompt in the same window, which then may
    // not take the focus again under load: each dialog of the test gets a prompter of its own.
    if let Some(pid) = prompter {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let end = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    out
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

/// `dbus-monitor` on the desktop's bus, keeping every `Notify` call's text.
struct NotifyWatch {
    child: Child,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl NotifyWatch {
    fn start(desk: &Desktop) -> NotifyWatch {
        let mut child = desk
            .command("dbus-monitor")
            .args([
                "--address",
                &desk.address,
                "type='method_call',interface='org.freedesktop.Notifications',member='Notify'",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-monitor starts");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let keep = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                keep.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        // dbus-monitor is listening once it has said so (its first signal, NameAcquired).
        let end = Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        NotifyWatch { child, seen }
    }

    /// How many `Notify` calls were seen, after a moment for the last to arrive.
    fn calls(&self) -> (usize, String) {
        std::thread::sleep(Duration::from_millis(500));
        let seen = self.seen.lock().unwrap().clone();
        (seen.matches("member=Notify").count(), seen)
    }
}

impl Drop for NotifyWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_problem_only_the_person_can_fix_is_a_desktop_notification_once_a_day() {
    require_desktop!();
    if which("dunst").is_none() || which("dbus-monitor").is_none() {
        if std::env::var("XERO_AUTH_REQUIRE_DESKTOP").as_deref() == Ok("1") {
            panic!("dunst and dbus-monitor are required here");
        }
        eprintln!("skipped: dunst or dbus-monitor not installed (Debian: dunst dbus-bin)");
        return;
    }
    let desk = Desktop::start();
    let watch = NotifyWatch::start(&desk);
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "desktop-notify");
    desk.adopt(&mut env);
    env.set_client(&fake);
    let tokens = env.import_fresh(&fake, Duration::from_secs(86_400));
    // 61 days on, Xero has forgotten the refresh token: only a new login helps.
    fake.advance_clock(Duration::from_secs(61 * 86_400));

    // A refresh nobody watches (stderr is a pipe, as under a timer): exit 4 and one
    // notification, to a real notification daemon (dunst, started by the bus on the display).
    let out = env.cmd(&["refresh"]).assert().code(4).get_output().clone();
    let (count, seen) = watch.calls();
    assert_eq!(count, 1, "{seen}");
    assert!(
        seen.contains(&format!(
            "profile '{}' must be authorised again",
            env.profile
        )),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("xero-auth login --profile {}", env.profile)),
        "{seen}"
    );
    for secret in [
        &tokens.access_token,
        &tokens.refresh_token,
        &crate::support::CLIENT_SECRET.to_string(),
    ] {
        assert!(
            !seen.contains(secret.as_str()),
            "a secret in the notification"
        );
    }
    let shown = desk
        .command("dunstctl")
        .args(["count", "displayed"])
        .output();
    if let Ok(shown) = shown {
        let n = String::from_utf8_lossy(&shown.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or(0);
        let history = desk
            .command("dunstctl")
            .args(["count", "history"])
            .output()
            .unwrap();
        let h = String::from_utf8_lossy(&history.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or(0);
        assert!(
            n + h >= 1,
            "dunst has no notification: {n} shown, {h} in history"
        );
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_grant"));

    // The same problem again within the day: nothing more.
    env.cmd(&["refresh"]).assert().code(4);
    assert_eq!(watch.calls().0, 1, "once a day");

    // The long-running `exec --server`: started while the token is valid, its endpoint's
    // fetch fails later (the access token expired, the refresh token is gone) and tells too.
    // The day's quiet is per problem and profile: forget the first.
    let state = env.dir.path().join("state/xero-auth/notified.json");
    std::fs::remove_file(&state).unwrap();
    let mut env2 = TestEnv::new(&fake, "desktop-notify-srv");
    desk.adopt(&mut env2);
    env2.set_client(&fake);
    // Valid for 1200 s more: enough for the start, not for a fetch asking for 1500.
    env2.import_fresh(&fake, Duration::from_secs(600));
    fake.advance_clock(Duration::from_secs(61 * 86_400));
    let go = env2.dir.path().join("go");
    let fetch = "import os,sys,time,urllib.request,urllib.error\n\
                 while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n\
                 r=urllib.request.Request(os.environ['XERO_AUTH_ENDPOINT']+'?min_valid=1500',headers={'X-Xero-Auth-Key':os.environ['XERO_AUTH_ENDPOINT_KEY']})\n\
                 try: urllib.request.urlopen(r)\n\
                 except urllib.error.HTTPError as e: raise SystemExit(e.code//100)\n";
    let server = env2
        .std_cmd(&[
            "exec",
            "--server",
            "--",
            "python3",
            "-c",
            fetch,
            go.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Started and serving (its start-up read is over); the fake has forgotten the refresh token
    // (its clock moved on 61 days).
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&go, b"").unwrap();
    let out = server.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (count, seen) = watch.calls();
    assert_eq!(count, 2, "{seen}");
    assert!(
        seen.contains(&format!(
            "profile '{}' must be authorised again",
            env2.profile
        )),
        "{seen}"
    );

    // Turned off in the profile: nothing.
    // (the first problem's record went above: only the setting keeps this quiet)
    env.ok(&["config", "set", "notify", "false"]);
    env.cmd(&["refresh"]).assert().code(4);
    assert_eq!(watch.calls().0, 2, "notify = false");
    env.ok(&["config", "set", "notify", "true"]);

    // No session bus (so no keychain either: exit 5, a problem worth telling): nothing can be
    // sent, and the command ends at once with its own message only.
    let started = Instant::now();
    let out = env
        .cmd(&["refresh"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .assert()
        .code(5)
        .get_output()
        .clone();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("notif"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(watch.calls().0, 2);
}
