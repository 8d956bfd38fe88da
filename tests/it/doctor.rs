//! `xero-auth doctor` against the fake Xero and the real Secret Service: what it reports, the
//! exit status it ends with, and what it never does (send a credential, print a secret).

use crate::support;

use std::time::Duration;

use fake_xero::ClientAuth;
use support::*;

/// A bus address nothing listens on.
const NO_BUS: &str = "unix:path=/nonexistent/xero-auth-test/bus";

/// The report's entry for the store `name` in `doctor --json`.
fn store_report(json: &serde_json::Value, name: &str) -> serde_json::Value {
    json["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["store"] == name)
        .unwrap_or_else(|| panic!("no '{name}' store in {json:#}"))
        .clone()
}

/// `started`, or `None` when `what` could not be started: the test then skips, saying why —
/// unless the test script asked for the real keychain (XERO_AUTH_TEST_REQUIRE_KEYCHAIN=1),
/// where that is a failure.
fn or_skip<T>(started: Result<T, String>, what: &str) -> Option<T> {
    match started {
        Ok(it) => Some(it),
        Err(why) if std::env::var("XERO_AUTH_TEST_REQUIRE_KEYCHAIN").as_deref() == Ok("1") => {
            panic!("{what} is required here: {why}")
        }
        Err(why) => {
            eprintln!("skipped: cannot start {what} ({why})");
            None
        }
    }
}

/// Runs `doctor` (and `doctor --json`) and returns (exit code, stdout, stderr, parsed JSON).
fn doctor(env: &TestEnv, extra_env: &[(&str, &str)]) -> (i32, String, String, serde_json::Value) {
    doctor_with(env, &[], extra_env)
}

/// As [`doctor`], with `args` after `doctor`.
fn doctor_with(
    env: &TestEnv,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> (i32, String, String, serde_json::Value) {
    let run = |json: bool| {
        let mut all = vec!["doctor"];
        all.extend_from_slice(args);
        if json {
            all.push("--json");
        }
        let mut cmd = env.std_cmd(&all);
        cmd.env_remove("XERO_AUTH_STORE");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().expect("the binary runs")
    };
    let text = run(false);
    let json = run(true);
    let code = text.status.code().expect("exited");
    assert_eq!(
        json.status.code(),
        Some(code),
        "--json ends with the same status"
    );
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}): {:?}", json.stdout));
    assert_eq!(parsed["exit_code"], code, "{parsed:#}");
    assert_eq!(parsed["ok"], code == 0, "{parsed:#}");
    if code != 0 {
        assert_eq!(parsed["problems"][0]["exit_code"], code, "{parsed:#}");
    }
    (
        code,
        String::from_utf8(text.stdout).unwrap(),
        String::from_utf8(text.stderr).unwrap(),
        parsed,
    )
}

/// A profile's table that sets something (an empty table is a leftover, like no table at all).
const SET_UP: &str = "store = \"secret-service\"\n";

/// Writes a `config.toml` with the test's profile, and `settings` (TOML lines) in its table:
/// a profile set up, as against a fresh install.
fn configure(env: &TestEnv, settings: &str) {
    let path = env.dir.path().join("config/xero-auth/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("[profiles.{}]\n{settings}", env.profile)).unwrap();
}

/// The report's line for `label` (its first column) in the section of the test's profile.
fn profile_line<'a>(stdout: &'a str, env: &TestEnv, label: &str) -> &'a str {
    let section = stdout
        .split_once(&format!("profile '{}'", env.profile))
        .unwrap_or_else(|| panic!("no section for the profile:\n{stdout}"))
        .1;
    section
        .lines()
        .find(|l| l.get(2..17).map(str::trim_end) == Some(label))
        .unwrap_or_else(|| panic!("no '{label}' line:\n{stdout}"))
}

#[test]
fn healthy_profile_is_exit_0_with_lines_for_store_files_and_endpoints() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "doctor-healthy", Duration::from_secs(60));

    let (code, stdout, stderr, json) = doctor(&env, &[]);

    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "verdict: profile '{}' can be used (exit 0)",
            env.profile
        )),
        "{stdout}"
    );
    let store_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("secret-service"))
        .expect("a line for the Secret Service");
    assert!(
        store_line.contains("usable") && store_line.contains("default keyring unlocked"),
        "{store_line}"
    );
    assert!(profile_line(&stdout, &env, "store").contains("secret-service: usable"));
    assert!(profile_line(&stdout, &env, "client id").contains(CLIENT_ID));
    assert!(profile_line(&stdout, &env, "client secret").contains("stored"));
    assert!(profile_line(&stdout, &env, "token set").contains("stored"));
    let config = env.dir.path().join("config/xero-auth/config.toml");
    let config_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("config ") && l.contains("config.toml"))
        .expect("a line for the config file");
    assert!(
        config_line.contains(config.to_str().unwrap()) && config_line.contains("exists, writable"),
        "{config_line}"
    );
    let token_line = profile_line(&stdout, &env, "token");
    assert!(
        token_line.contains(&env.token_url) && token_line.contains("reachable (HTTP 200"),
        "{token_line}"
    );

    let me = json["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == env.profile.as_str())
        .expect("the profile in --json");
    assert_eq!(me["selected"], true);
    assert_eq!(me["store"], "secret-service");
    assert_eq!(me["store_usable"], true);
    assert_eq!(me["client_secret_stored"], true);
    assert_eq!(me["token_set_stored"], true);
    assert_eq!(json["endpoints"][0]["reachable"], true);
    assert_eq!(json["endpoints"][0]["http_status"], 200);
    assert_eq!(json["clock"]["plausible"], true);
}

#[test]
fn doctor_sends_no_credential_and_no_token_request() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "doctor-no-credential", Duration::from_secs(60));
    let before = fake.requests().len();

    let (code, ..) = doctor(&env, &[]);

    assert_eq!(code, 0);
    let requests = fake.requests();
    let made = &requests[before..];
    assert!(!made.is_empty(), "the endpoints were probed");
    for r in made {
        assert_eq!(r.method, "GET", "{r:?}");
        assert!(!r.has_bearer, "no access token sent: {r:?}");
        assert_eq!(
            r.client_auth,
            ClientAuth::None,
            "no client credential sent: {r:?}"
        );
    }
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}

#[test]
fn no_secret_reaches_the_output_even_at_trace_level() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = imported_profile(&fake, "doctor-no-secret", Duration::from_secs(60));

    let (code, stdout, stderr, json) = doctor(&env, &[("RUST_LOG", "trace")]);
    let traced = env.cmd(&["doctor", "-vvv"]).output().unwrap();

    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let everything = format!(
        "{stdout}{stderr}{json}{}{}",
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&traced.stderr)
    );
    for secret in [
        CLIENT_SECRET,
        tokens.access_token.as_str(),
        tokens.refresh_token.as_str(),
        basic_credential().as_str(),
    ] {
        assert!(!everything.contains(secret), "a secret was printed");
    }
}

#[test]
fn no_session_bus_is_exit_5_naming_the_bus_address_and_the_fix() {
    // Needs no keychain: the point is that there is none.
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-no-bus");
    configure(&env, SET_UP);

    let (code, stdout, stderr, json) = doctor(&env, &[("DBUS_SESSION_BUS_ADDRESS", NO_BUS)]);

    assert_eq!(code, 5, "{stdout}\n{stderr}");
    let named = format!("DBUS_SESSION_BUS_ADDRESS={NO_BUS}");
    let problem = stdout
        .split_once("problems\n")
        .expect("a problems section")
        .1;
    assert!(
        problem.contains("[exit 5]")
            && problem.contains(&named)
            && problem.contains(&format!("used by profile '{}'", env.profile)),
        "{problem}"
    );
    assert!(
        problem.contains("what to do:")
            && problem.contains("dbus-run-session")
            && problem.contains("docs/headless-linux.md"),
        "{problem}"
    );
    // The command's own error says the same on stderr.
    assert!(
        stderr.contains(&named) && stderr.contains("what to do"),
        "{stderr}"
    );
    assert!(profile_line(&stdout, &env, "token set").contains("not checked"));
    let ss = store_report(&json, "secret-service");
    assert_eq!(ss["usable"], false);
    assert!(ss["detail"].as_str().unwrap().contains(&named), "{ss}");
    assert!(
        ss["fix"].as_str().unwrap().contains("dbus-run-session"),
        "{ss}"
    );
}

#[test]
fn nothing_stored_is_exit_3_with_what_to_run() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-nothing");
    configure(&env, SET_UP);

    let (code, stdout, stderr, json) = doctor(&env, &[]);

    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(profile_line(&stdout, &env, "store").contains("usable"));
    assert!(profile_line(&stdout, &env, "client id").contains("xero-auth client set"));
    assert!(profile_line(&stdout, &env, "token set").contains("xero-auth login"));
    assert!(
        stderr.contains(&format!("profile '{}' has no", env.profile)),
        "{stderr}"
    );
    let whats: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["what"].as_str().unwrap())
        .collect();
    assert!(
        whats.iter().any(|w| w.contains("no client id"))
            && whats.iter().any(|w| w.contains("no token set")),
        "{whats:?}"
    );
}

#[test]
fn token_endpoint_on_a_closed_port_is_exit_6() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _) = imported_profile(&fake, "doctor-down", Duration::from_secs(60));
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down = format!("http://127.0.0.1:{closed}/connect/token");
    env.set_env("XERO_AUTH_TOKEN_URL", &down);

    let (code, stdout, stderr, json) = doctor(&env, &[]);

    assert_eq!(code, 6, "{stdout}\n{stderr}");
    let token_line = profile_line(&stdout, &env, "token");
    assert!(
        token_line.contains(&down) && token_line.contains("UNREACHABLE"),
        "{token_line}"
    );
    // The other endpoints are on the fake, and answer.
    assert!(profile_line(&stdout, &env, "api").contains("reachable (HTTP"));
    let problem = &json["problems"][0];
    assert!(
        problem["what"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{closed}")),
        "{problem}"
    );
    assert!(
        problem["fix"]
            .as_str()
            .unwrap()
            .contains("XERO_AUTH_TOKEN_URL"),
        "{problem}"
    );
    assert_eq!(fake.count(Counter::TokenRequests), 0);
}

#[test]
fn a_clock_ten_minutes_off_a_servers_date_is_a_warning_only() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "doctor-clock", Duration::from_secs(60));
    fake.advance_clock(Duration::from_secs(600));

    let (code, stdout, stderr, json) = doctor(&env, &[]);

    assert_eq!(
        code, 0,
        "a skewed clock alone leaves every profile usable: {stdout}\n{stderr}"
    );
    let warnings = stdout
        .split_once("warnings\n")
        .expect("a warnings section")
        .1;
    assert!(
        warnings.contains("the system clock is 10 min behind")
            && warnings.contains(&fake.base_url())
            && warnings.contains("time synchronisation"),
        "{warnings}"
    );
    let skew = json["clock"]["skew_secs"].as_i64().unwrap();
    assert!((-605..=-595).contains(&skew), "{skew}");
}

/// A D-Bus session and a GNOME Keyring of this test's own, so that locking the keyring cannot
/// disturb the other tests' one. Both processes are killed when it is dropped.
#[cfg(target_os = "linux")]
struct PrivateKeyring {
    address: String,
    bus: std::process::Child,
    keyring: std::process::Child,
    _dir: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl PrivateKeyring {
    fn start() -> Result<Self, String> {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let run = dir.path().join("run");
        std::fs::create_dir(&run).map_err(|e| e.to_string())?;
        {
            use std::os::unix::fs::PermissionsExt;
            // GNOME Keyring keeps its control socket there only in a private folder.
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| e.to_string())?;
        }
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("dbus-daemon: {e}"))?;
        let mut address = String::new();
        std::io::BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut address)
            .map_err(|e| e.to_string())?;
        let address = address.trim().to_string();
        let keyring = Command::new("gnome-keyring-daemon")
            .args(["--components=secrets", "--foreground", "--unlock"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_RUNTIME_DIR", &run)
            .env("HOME", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut keyring = match keyring {
            Ok(k) => k,
            Err(e) => {
                let _ = bus.kill();
                let _ = bus.wait();
                return Err(format!("gnome-keyring-daemon: {e}"));
            }
        };
        let mut stdin = keyring.stdin.take().unwrap();
        let _ = stdin.write_all(b"private-test-password");
        drop(stdin);
        let this = PrivateKeyring {
            address,
            bus,
            keyring,
            _dir: dir,
        };
        this.wait_for_the_default_keyring()?;
        Ok(this)
    }

    fn connection(&self) -> zbus::Result<zbus::blocking::Connection> {
        zbus::blocking::connection::Builder::address(self.address.as_str())?.build()
    }

    fn default_collection(&self) -> zbus::Result<zbus::zvariant::OwnedObjectPath> {
        self.connection()?
            .call_method(
                Some("org.freedesktop.secrets"),
                "/org/freedesktop/secrets",
                Some("org.freedesktop.Secret.Service"),
                "ReadAlias",
                &("default",),
            )?
            .body()
            .deserialize()
    }

    fn locked(&self) -> zbus::Result<bool> {
        let path = self.default_collection()?;
        let conn = self.connection()?;
        let collection = zbus::blocking::Proxy::new(
            &conn,
            "org.freedesktop.secrets",
            path,
            "org.freedesktop.Secret.Collection",
        )?;
        collection.get_property("Locked")
    }

    /// Whether our daemon has taken the Secret Service's name. Asked without calling the
    /// service, which would make D-Bus start another, locked, daemon of its own.
    fn owned(&self) -> bool {
        let Ok(conn) = self.connection() else {
            return false;
        };
        let Ok(dbus) = zbus::blocking::fdo::DBusProxy::new(&conn) else {
            return false;
        };
        dbus.name_has_owner("org.freedesktop.secrets".try_into().unwrap())
            .unwrap_or(false)
    }

    /// Waits until the daemon has created and unlocked its login keyring.
    fn wait_for_the_default_keyring(&self) -> Result<(), String> {
        let started = std::time::Instant::now();
        loop {
            let state = if self.owned() {
                self.locked()
            } else {
                Ok(true)
            };
            if let Ok(false) = state {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "the private keyring is not unlocked after 10 s ({state:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Locks the default keyring (Secret Service `Lock`, which needs no prompt).
    fn lock(&self) {
        let path = self.default_collection().expect("the default keyring");
        let conn = self.connection().unwrap();
        conn.call_method(
            Some("org.freedesktop.secrets"),
            "/org/freedesktop/secrets",
            Some("org.freedesktop.Secret.Service"),
            "Lock",
            &(vec![path],),
        )
        .expect("the keyring locks");
    }
}

#[cfg(target_os = "linux")]
impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        for child in [&mut self.keyring, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_locked_keyring_is_exit_5_saying_it_is_locked_and_how_to_unlock_it() {
    let Some(keyring) = or_skip(
        PrivateKeyring::start(),
        "a private D-Bus session with GNOME Keyring",
    ) else {
        return;
    };
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-locked");
    configure(&env, SET_UP);

    // Unlocked, the store is usable (the profile just has nothing stored yet: exit 3).
    let (code, stdout, ..) = doctor(&env, &[("DBUS_SESSION_BUS_ADDRESS", &keyring.address)]);
    assert_eq!(code, 3, "{stdout}");
    keyring.lock();
    let (code, stdout, stderr, json) =
        doctor(&env, &[("DBUS_SESSION_BUS_ADDRESS", &keyring.address)]);

    assert_eq!(code, 5, "{stdout}\n{stderr}");
    let problem = json["problems"][0]["what"].as_str().unwrap();
    assert!(
        problem.contains("default keyring") && problem.contains("is locked"),
        "{problem}"
    );
    assert!(
        json["problems"][0]["fix"]
            .as_str()
            .unwrap()
            .contains("--unlock"),
        "{json}"
    );
    assert!(profile_line(&stdout, &env, "token set").contains("not checked"));
}

/// A private session bus that can start no service: no `<servicedir>`, so nothing is activatable.
struct BareBus {
    daemon: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl BareBus {
    fn start() -> Result<Self, String> {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path().display()
            ),
        )
        .unwrap();
        let mut daemon = std::process::Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("dbus-daemon does not start: {e}"))?;
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let address = line.trim().to_string();
        if !address.starts_with("unix:") {
            let _ = daemon.kill();
            return Err(format!("dbus-daemon printed no address: {line:?}"));
        }
        Ok(BareBus {
            daemon,
            address,
            _dir: dir,
        })
    }
}

impl Drop for BareBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn a_bus_with_no_secret_service_is_exit_5_saying_nothing_provides_one() {
    // Needs no keychain: the bus is there, the Secret Service is not, and none can be started.
    let Some(bus) = or_skip(BareBus::start(), "a private D-Bus session") else {
        return;
    };
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-bare-bus");
    configure(&env, SET_UP);

    let (code, stdout, stderr, json) =
        doctor(&env, &[("DBUS_SESSION_BUS_ADDRESS", bus.address.as_str())]);

    assert_eq!(code, 5, "{stdout}\n{stderr}");
    let ss = store_report(&json, "secret-service");
    assert_eq!(ss["usable"], false);
    let detail = ss["detail"].as_str().unwrap();
    assert!(
        detail.contains("no Secret Service (org.freedesktop.secrets)")
            && detail.contains("D-Bus cannot start one")
            && detail.contains(&bus.address),
        "{detail}"
    );
    let fix = ss["fix"].as_str().unwrap();
    assert!(
        fix.contains("gnome-keyring-daemon") && fix.contains("store = \"file\""),
        "{fix}"
    );
    assert_eq!(json["problems"][0]["exit_code"], 5, "{json:#}");
}

#[test]
fn a_fresh_install_is_exit_0_saying_what_to_run_first() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-fresh");

    let (code, stdout, stderr, json) = doctor(&env, &[]);

    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "nothing set up yet: run `xero-auth client set --client-id ID --profile {}`",
            env.profile
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("problems\n"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(
        json["problems"].as_array().map(Vec::len),
        Some(0),
        "{json:#}"
    );
}

#[test]
fn a_fresh_install_without_its_keychain_is_exit_0_with_a_warning() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-fresh-no-bus");

    let (code, stdout, stderr, _) = doctor(&env, &[("DBUS_SESSION_BUS_ADDRESS", NO_BUS)]);

    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let warnings = stdout
        .split_once("warnings\n")
        .unwrap_or_else(|| panic!("a warnings section:\n{stdout}"))
        .1;
    assert!(
        warnings.contains("secret-service")
            && warnings.contains("dbus-run-session")
            && warnings.contains("client set"),
        "{warnings}"
    );
    assert!(stdout.contains("nothing set up yet"), "{stdout}");
}

#[test]
fn an_unavailable_store_no_profile_uses_is_not_a_problem() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-unused-store");
    configure(&env, "store = \"file\"\n");

    let (code, stdout, stderr, json) = doctor(
        &env,
        &[
            ("DBUS_SESSION_BUS_ADDRESS", NO_BUS),
            ("XERO_AUTH_PASSPHRASE", "tidy-Otter-41-lantern"),
        ],
    );

    // Nothing is stored for the profile (exit 3); the missing Secret Service is no problem of it.
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    let problems = stdout.split_once("problems\n").expect("problems").1;
    assert!(!problems.contains("secret-service"), "{problems}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("secret-service"))
        .unwrap_or_else(|| panic!("no secret-service line:\n{stdout}"));
    assert!(
        line.contains("unavailable") && line.contains("not used by any profile"),
        "{line}"
    );
    assert_eq!(store_report(&json, "secret-service")["usable"], false);
}

/// A private session bus with the system's service files, so D-Bus could start GNOME Keyring
/// for `org.freedesktop.secrets` (as a headless login's bus can); whatever it starts gets a
/// folder of this test's own. The bus, and any keyring found on it, are stopped when dropped.
#[cfg(target_os = "linux")]
struct ActivatingBus {
    address: String,
    bus: std::process::Child,
    dir: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl ActivatingBus {
    fn start() -> Result<Self, String> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let run = dir.path().join("run");
        std::fs::create_dir(&run).map_err(|e| e.to_string())?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| e.to_string())?;
        }
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_RUNTIME_DIR", &run)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("dbus-daemon: {e}"))?;
        let mut address = String::new();
        std::io::BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut address)
            .map_err(|e| e.to_string())?;
        let this = ActivatingBus {
            address: address.trim().to_string(),
            bus,
            dir,
        };
        let activatable = this
            .dbus()
            .and_then(|d| Ok(d.list_activatable_names()?))
            .map_err(|e| e.to_string())?;
        if !activatable
            .iter()
            .any(|n| n.as_str() == "org.freedesktop.secrets")
        {
            return Err("no service file starts org.freedesktop.secrets here".into());
        }
        Ok(this)
    }

    fn dbus(&self) -> zbus::Result<zbus::blocking::fdo::DBusProxy<'static>> {
        let conn = zbus::blocking::connection::Builder::address(self.address.as_str())?.build()?;
        zbus::blocking::fdo::DBusProxy::new(&conn)
    }

    /// The process that owns the Secret Service's name, if one does (asked of the bus only).
    fn secret_service_pid(&self) -> Option<u32> {
        let dbus = self.dbus().ok()?;
        let name: zbus::names::BusName = "org.freedesktop.secrets".try_into().unwrap();
        dbus.get_connection_unix_process_id(name).ok()
    }

    /// `gnome-keyring-daemon ARGS` on this bus, in this test's folders, with `stdin`.
    fn keyring_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("gnome-keyring-daemon");
        cmd.args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    }

    /// Waits until something owns the Secret Service's name.
    fn wait_for_the_service(&self) -> Result<(), String> {
        let started = std::time::Instant::now();
        while self.secret_service_pid().is_none() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err("the keyring took no name on the bus within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
impl Drop for ActivatingBus {
    fn drop(&mut self) {
        // The keyring a test (or a bug) started on this bus: by its process id, from the bus.
        if let Some(pid) = self.secret_service_pid() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn doctor_does_not_start_a_secret_service_that_d_bus_could_start() {
    let Some(bus) = or_skip(
        ActivatingBus::start(),
        "a private D-Bus session that can start GNOME Keyring",
    ) else {
        return;
    };
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-no-activation");
    configure(&env, SET_UP);

    let (code, stdout, stderr, json) =
        doctor(&env, &[("DBUS_SESSION_BUS_ADDRESS", bus.address.as_str())]);

    assert_eq!(
        bus.secret_service_pid(),
        None,
        "doctor started a Secret Service:\n{stdout}"
    );
    assert_eq!(code, 5, "{stdout}\n{stderr}");
    let ss = store_report(&json, "secret-service");
    let detail = ss["detail"].as_str().unwrap();
    assert!(
        detail.contains("no Secret Service is running")
            && detail.contains("D-Bus would start one")
            && detail.contains(&bus.address),
        "{detail}"
    );
    assert!(
        ss["fix"].as_str().unwrap().contains("--daemonize --unlock"),
        "{ss:#}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_secret_service_without_a_default_keyring_is_told_from_no_service_with_a_fix_that_works() {
    let Some(bus) = or_skip(
        ActivatingBus::start(),
        "a private D-Bus session that can start GNOME Keyring",
    ) else {
        return;
    };
    // A daemon started without a password has no 'login' keyring: the state D-Bus activation
    // leaves on a headless session.
    let daemon = bus
        .keyring_cmd(&["--foreground", "--components=secrets"])
        .stdin(std::process::Stdio::null())
        .spawn();
    let Some(mut daemon) = or_skip(daemon.map_err(|e| e.to_string()), "gnome-keyring-daemon")
    else {
        return;
    };
    bus.wait_for_the_service().unwrap();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-no-collection");
    configure(&env, SET_UP);
    let on_bus = [("DBUS_SESSION_BUS_ADDRESS", bus.address.as_str())];

    let (code, stdout, stderr, json) = doctor(&env, &on_bus);
    assert_eq!(code, 5, "{stdout}\n{stderr}");
    let ss = store_report(&json, "secret-service");
    let detail = ss["detail"].as_str().unwrap();
    assert!(
        detail.contains("a Secret Service answered")
            && detail.contains("no default keyring (collection)"),
        "{detail}"
    );
    let fix = ss["fix"].as_str().unwrap();
    assert!(fix.contains("--replace --unlock"), "{fix}");
    // A command says the same, not "locked" nor "no Secret Service answered".
    let out = env
        .std_cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .env_remove("XERO_AUTH_STORE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("no default keyring") && !stderr.contains("locked or refused"),
        "{stderr}"
    );

    // The fix given works from this state.
    let mut unlock = bus
        .keyring_cmd(&["--replace", "--unlock", "--components=secrets"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        unlock
            .stdin
            .take()
            .unwrap()
            .write_all(b"test-keyring-password")
            .unwrap();
    }
    assert!(unlock.wait().unwrap().success());
    let _ = daemon.wait(); // replaced: it ends
    let started = std::time::Instant::now();
    loop {
        let out = env
            .std_cmd(&["client", "set", "--client-id", CLIENT_ID])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
            .env_remove("XERO_AUTH_STORE")
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Appends TOML to the test's config.toml.
fn add_to_config(env: &TestEnv, toml: &str) {
    let path = env.dir.path().join("config/xero-auth/config.toml");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(toml);
    std::fs::write(path, text).unwrap();
}

#[test]
fn doctor_checks_the_selected_profile_and_all_of_them_with_all() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "doctor-scope", Duration::from_secs(60));
    // Another profile with nothing stored, and a table `config unset` left empty.
    add_to_config(
        &env,
        "\n[profiles.doctor-scope-other]\nclient_id = \"other-app\"\n\n[profiles.doctor-scope-leftover]\n",
    );

    // The selected profile can be used: the other one's state is no reason to fail.
    let (code, stdout, stderr, json) = doctor(&env, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stdout.contains("profile 'doctor-scope-other'"), "{stdout}");
    let others = stdout.split_once("other profiles\n").expect("a note").1;
    assert!(
        others.contains("'doctor-scope-other'") && others.contains("doctor --all"),
        "{others}"
    );
    assert_eq!(json["profiles"].as_array().unwrap().len(), 1, "{json:#}");

    // --all checks every profile: the other one has nothing stored (exit 3); the empty
    // leftover table is no problem.
    let (code, stdout, stderr, json) = doctor_with(&env, &["--all"], &[]);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    let problems: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["what"].as_str().unwrap())
        .collect();
    assert!(
        problems.iter().all(|p| p.contains("'doctor-scope-other'")),
        "{problems:?}"
    );
    // The same endpoints are listed once, under the first profile that uses them.
    assert_eq!(stdout.matches(&env.token_url).count(), 1, "{stdout}");
    assert!(
        stdout.contains(&format!("the same as profile '{}'", env.profile)),
        "{stdout}"
    );

    // Selected, a leftover is a profile with nothing stored, as `status` would say (exit 3)...
    let (code, ..) = doctor_with(&env, &["--profile", "doctor-scope-leftover"], &[]);
    assert_eq!(code, 3);
}

#[test]
fn an_unavailable_store_is_described_once_however_many_profiles_use_it() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-said-once");
    configure(&env, "client_id = \"app\"\n");
    add_to_config(
        &env,
        "\n[profiles.doctor-said-once-b]\nclient_id = \"app\"\n\n[profiles.doctor-said-once-c]\nclient_id = \"app\"\n",
    );

    let (code, stdout, stderr, _) =
        doctor_with(&env, &["--all"], &[("DBUS_SESSION_BUS_ADDRESS", NO_BUS)]);

    assert_eq!(code, 5, "{stdout}\n{stderr}");
    // The stores section, and the problem: once each.
    assert_eq!(
        stdout
            .matches("cannot connect to the session D-Bus")
            .count(),
        2,
        "{stdout}"
    );
    assert!(
        profile_line(&stdout, &env, "store").contains("see its line above"),
        "{stdout}"
    );
}

#[test]
fn an_empty_leftover_table_alone_is_a_fresh_install_not_exit_3() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "doctor-leftover");
    configure(&env, "");

    let (code, stdout, stderr, _) = doctor(&env, &[]);

    // ...but alone in config.toml, with nothing stored, it is where a fresh install is.
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("nothing set up yet"), "{stdout}");
}
