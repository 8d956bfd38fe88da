//! The one check of every file and folder that decides where secrets go or what is stored
//! (src/private_fs.rs), through the binary: a configuration another user could have written is
//! refused before anything is sent, a loose folder of the user's is tightened, links planted in
//! the state folder are never written through, and `doctor` reports each file and folder.
//!
//! The cases with another user need root (to give a file to `nobody`): CI runs as root; elsewhere
//! they are skipped, saying so (and fail under CI=true).

use crate::support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

/// `nobody`'s user id on Debian.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns early (or fails under CI) when the test cannot act as another user.
macro_rules! require_root {
    () => {
        if !is_root() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("this test gives files to another user and must run as root under CI");
            }
            eprintln!("skipped: giving a file to another user needs root");
            return;
        }
    };
}

fn config_dir(env: &TestEnv) -> PathBuf {
    env.dir.path().join("config").join("xero-auth")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A `config.toml` whose profile sends its token requests to `tripwire`.
fn hostile_config(env: &TestEnv, tripwire: &Tripwire) -> String {
    format!(
        "[profiles.{}]\nclient_id = \"{CLIENT_ID}\"\ntoken_url = \"http://{}/connect/token\"\n",
        env.profile,
        tripwire.authority()
    )
}

/// Seen before the fix: with the config folder at 0777 another user replaced `config.toml` with
/// one whose `token_url` pointed at their listener, and `refresh` sent it the client id and
/// secret (Basic) and the refresh token.
#[test]
fn a_config_file_another_user_wrote_is_refused_before_anything_is_sent() {
    require_keychain!();
    require_root!();
    let fake = FakeXero::start();
    let (mut env, _tokens) = ready_profile(&fake, "fs-hostile", Duration::from_secs(60));
    // The endpoint must come from the file, as it would for a user who sets none.
    env.set_env("XERO_AUTH_TOKEN_URL", "");
    let tripwire = Tripwire::start();
    let dir = config_dir(&env);
    let file = dir.join("config.toml");
    chmod(&dir, 0o777);
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, hostile_config(&env, &tripwire)).unwrap();
    std::os::unix::fs::chown(&file, Some(NOBODY), Some(NOBODY)).unwrap();

    let out = env.cmd(&["refresh"]).assert().code(1).get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("belongs to user id {NOBODY}")),
        "{err}"
    );
    assert!(tripwire.seen().is_empty(), "sent: {:?}", tripwire.seen());
    assert!(!err.contains(CLIENT_SECRET), "{err}");
    // The folder was the user's: it is tightened all the same.
    assert_eq!(mode(&dir), 0o700);
    // `token`, `api` and `status` refuse it too; nothing reaches the listener.
    for args in [
        &["token"][..],
        &["api", "api.xro/2.0/Organisation"],
        &["status"],
    ] {
        env.cmd(args).assert().code(1);
    }
    assert!(tripwire.seen().is_empty(), "sent: {:?}", tripwire.seen());

    // `doctor` names the file and why.
    let out = env.cmd(&["doctor", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["what"] == "config")
        .unwrap()
        .clone();
    assert_eq!(row["trust"], "refused", "{row:#}");
    assert!(
        row["trust_detail"]
            .as_str()
            .unwrap()
            .contains("belongs to user id")
    );
}

/// A file of the user's that every user can change may already hold someone else's endpoints:
/// refused (exit 1), naming it and the fix; nothing is sent.
#[test]
fn a_config_file_others_can_change_is_refused() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _tokens) = ready_profile(&fake, "fs-loose", Duration::from_secs(60));
    env.set_env("XERO_AUTH_TOKEN_URL", "");
    let tripwire = Tripwire::start();
    let file = config_dir(&env).join("config.toml");
    std::fs::write(&file, hostile_config(&env, &tripwire)).unwrap();
    chmod(&file, 0o666);
    let out = env.cmd(&["refresh"]).assert().code(1).get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other users can change it (mode 0666)"),
        "{err}"
    );
    assert!(err.contains("chmod go-w"), "{err}");
    assert!(tripwire.seen().is_empty(), "sent: {:?}", tripwire.seen());
}

/// A folder above the configuration that every user can write lets them swap the whole folder:
/// refused, and not changed (it is not xero-auth's).
#[test]
fn a_folder_above_that_others_can_write_is_refused_and_left_alone() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "fs-above");
    let above = env.dir.path().join("config");
    chmod(&above, 0o777);
    let out = env.cmd(&["status"]).assert().code(1).get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&above.display().to_string()), "{err}");
    assert!(err.contains("every user can write in it"), "{err}");
    assert_eq!(mode(&above), 0o777, "not xero-auth's to change");
    chmod(&above, 0o755);
}

/// A loose folder of the user's is made 0700, and the command goes on.
#[test]
fn loose_folders_of_the_users_are_tightened_and_used() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _tokens) = ready_profile(&fake, "fs-tighten", Duration::from_secs(60));
    let config = config_dir(&env);
    let state = env.dir.path().join("state").join("xero-auth");
    chmod(&config, 0o777);
    chmod(&state, 0o755);
    env.ok(&["refresh"]);
    assert_eq!(mode(&config), 0o700);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(fake.count(Counter::Refresh), 1);
}

/// Seen before the fix: the rate-limit ledger's temporary file was opened with `File::create`,
/// which followed a link planted at its name and overwrote the link's target (a user's
/// `~/.bashrc`). The state folder is now the user's alone, and no link is written through.
#[test]
fn a_link_planted_in_the_limits_folder_is_never_written_through() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _tokens) = ready_profile(&fake, "fs-ledger", Duration::from_secs(60));
    env.ok(&["api", "api.xro/2.0/Organisation"]);
    let limits = env
        .dir
        .path()
        .join("state/xero-auth/limits")
        .join(CLIENT_ID);
    let victim = env.dir.path().join("home/.bashrc");
    std::fs::write(&victim, "export KEEP=1\n").unwrap();
    for name in ["ledger.json.tmp", "ledger.json"] {
        let _ = std::fs::remove_file(limits.join(name));
        std::os::unix::fs::symlink(&victim, limits.join(name)).unwrap();
    }
    env.ok(&["api", "api.xro/2.0/Organisation"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "export KEEP=1\n");
    let ledger = limits.join("ledger.json");
    assert!(!std::fs::symlink_metadata(&ledger).unwrap().is_symlink());
}

/// A secret id file or passphrase file another user could read or change is refused, naming it.
#[test]
fn a_passphrase_file_of_another_user_is_refused() {
    require_root!();
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "fs-pass");
    env.set_env("XERO_AUTH_STORE", "file");
    env.set_env("XERO_AUTH_PASSPHRASE", "");
    let file = env.dir.path().join("passphrase");
    std::fs::write(&file, "correct horse\n").unwrap();
    chmod(&file, 0o600);
    std::os::unix::fs::chown(&file, Some(NOBODY), Some(NOBODY)).unwrap();
    env.set_env("XERO_AUTH_PASSPHRASE_FILE", file.to_str().unwrap());
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let token_file = env.write_token_file(&tokens, Duration::from_secs(60));
    let out = env
        .cmd(&["import", token_file.to_str().unwrap()])
        .assert()
        .code(5)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("belongs to user id {NOBODY}")),
        "{err}"
    );
    assert!(!err.contains("correct horse"), "{err}");
}

/// `doctor` reports every folder and file of the check, each with what it found.
#[test]
fn doctor_reports_each_file_and_folder_of_the_check() {
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "fs-doctor");
    let pass = env.dir.path().join("pass");
    std::fs::write(&pass, "p\n").unwrap();
    chmod(&pass, 0o644);
    env.set_env("XERO_AUTH_PASSPHRASE_FILE", pass.to_str().unwrap());
    env.ok(&["config", "set", "client_id", CLIENT_ID]);
    chmod(&config_dir(&env), 0o755);
    let out = env.cmd(&["doctor", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["files"].as_array().unwrap();
    let row = |what: &str| {
        rows.iter()
            .find(|f| f["what"] == what)
            .unwrap_or_else(|| panic!("no row {what}: {report:#}"))
            .clone()
    };
    for what in [
        "config folder",
        "config",
        "state",
        "locks",
        "rate limits",
        "moves",
        "data",
        "file store",
        "passphrase file",
    ] {
        row(what);
    }
    assert_eq!(row("config folder")["trust"], "open to others");
    assert_eq!(row("config")["trust"], "private");
    assert_eq!(row("passphrase file")["trust"], "refused");
    assert!(
        row("passphrase file")["trust_detail"]
            .as_str()
            .unwrap()
            .contains("other users can read it")
    );
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    // doctor changes nothing.
    assert_eq!(mode(&config_dir(&env)), 0o755);
}
