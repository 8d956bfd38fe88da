//! Where the refresh lock lives, through the real binary: folder variables that are relative
//! paths are refused (the lock would depend on the working folder), the state and lock folders
//! are the user's alone (tightened, or refused when another user owns or can write them), the
//! lock file is never a link, and `doctor` says where the lock cannot be trusted.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::processes::*;
use support::*;

const DAY: Duration = Duration::from_secs(86_400);

/// The state folder the test's commands use (`$XDG_STATE_HOME/xero-auth`).
fn state_dir(env: &TestEnv) -> PathBuf {
    env.dir.path().join("state/xero-auth")
}

fn lock_file(env: &TestEnv) -> PathBuf {
    state_dir(env)
        .join("locks")
        .join(format!("{}.lock", env.profile))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives `path` to the user `nobody`: only root can, so the test says it skipped otherwise.
fn give_to_nobody(path: &Path) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root can give a folder to another user");
        return false;
    }
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    true
}

/// `refresh` must be refused with exit 1, saying `says`; nothing is sent and the stored refresh
/// token is the one imported.
fn assert_refresh_refused(env: &TestEnv, fake: &FakeXero, imported: &IssuedTokens, says: &[&str]) {
    let out = env.cmd(&["refresh"]).assert().code(1).get_output().clone();
    let err = stderr_text(&out);
    for part in says {
        assert!(err.contains(part), "stderr lacks {part:?}:\n{err}");
    }
    assert_eq!(fake.count(Counter::Refresh), 0, "no refresh was sent");
    assert_eq!(env.stored_refresh_token(), imported.refresh_token);
}

#[test]
fn relative_folder_variables_are_refused_from_any_working_folder_and_nothing_is_sent() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, imported) = imported_profile(&fake, "lock-relative", DAY);
    let root = env.dir.path();
    for folder in ["a", "b"] {
        std::fs::create_dir(root.join(folder)).unwrap();
    }
    for (variable, value) in [
        ("XERO_AUTH_STATE_DIR", "relstate"),
        ("XERO_AUTH_CONFIG_DIR", "./relconfig"),
        ("XERO_AUTH_DATA_DIR", "reldata/x"),
    ] {
        for folder in ["a", "b"] {
            let out = env
                .cmd(&["refresh"])
                .current_dir(root.join(folder))
                .env(variable, value)
                .assert()
                .code(1)
                .get_output()
                .clone();
            let err = stderr_text(&out);
            assert!(
                err.contains(&format!("{variable}={value} is a relative path"))
                    && err.contains("two commands could refresh the same tokens at once")
                    && err.contains(&format!("give {variable} an absolute path")),
                "{err}"
            );
            let created: Vec<_> = std::fs::read_dir(root.join(folder)).unwrap().collect();
            assert!(created.is_empty(), "nothing created in {folder}/");
        }
    }
    assert_eq!(fake.count(Counter::Refresh), 0, "no refresh was sent");
    assert_eq!(env.stored_refresh_token(), imported.refresh_token);

    // A relative HOME is refused the same way when no variable names the folders.
    let out = env
        .cmd(&["refresh"])
        .current_dir(root.join("a"))
        .env("HOME", "home")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_DATA_HOME")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = stderr_text(&out);
    assert!(
        err.contains("is a relative path") && err.contains("set HOME to an absolute path"),
        "{err}"
    );

    // A relative XDG_STATE_HOME is ignored, as the XDG specification says: the lock is in
    // $HOME/.local/state, whatever folder the command starts in.
    env.cmd(&["refresh"])
        .current_dir(root.join("b"))
        .env("XDG_STATE_HOME", "relxdg")
        .assert()
        .success();
    assert!(!root.join("b/relxdg").exists());
    assert!(
        env.home()
            .join(format!(".local/state/xero-auth/locks/{}.lock", env.profile))
            .exists()
    );
    assert_eq!(fake.count(Counter::Refresh), 1);
}

#[test]
fn loose_state_and_lock_folders_of_yours_are_made_0700() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _imported) = imported_profile(&fake, "lock-loose", DAY);
    let locks = lock_file(&env).parent().unwrap().to_path_buf();
    chmod(&state_dir(&env), 0o777);
    chmod(&locks, 0o755);

    env.ok(&["refresh"]);

    assert_eq!(mode(&state_dir(&env)), 0o700);
    assert_eq!(mode(&locks), 0o700);
    assert_eq!(fake.count(Counter::Refresh), 1);
}

#[test]
fn a_lock_file_that_is_a_link_is_refused_and_what_it_points_to_is_untouched() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, imported) = imported_profile(&fake, "lock-link", DAY);
    let victim = env.dir.path().join("precious.txt");
    std::fs::write(
        &victim,
        b"a file of the user's that the lock must not rewrite\n",
    )
    .unwrap();
    let lock = lock_file(&env);
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&victim, &lock).unwrap();

    assert_refresh_refused(
        &env,
        &fake,
        &imported,
        &[
            &lock.display().to_string(),
            "is a symbolic link",
            "remove it",
        ],
    );
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"a file of the user's that the lock must not rewrite\n"
    );
    assert!(
        lock.is_symlink(),
        "the link is left for the user to look at"
    );

    // Removed as the message says, the next refresh works.
    std::fs::remove_file(&lock).unwrap();
    env.ok(&["refresh"]);
    assert_eq!(fake.count(Counter::Refresh), 1);
}

#[test]
fn a_state_folder_another_user_owns_is_refused_naming_the_variable() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, imported) = imported_profile(&fake, "lock-shared", DAY);
    let shared = env.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    if !give_to_nobody(&shared) {
        return;
    }
    env.set_env("XERO_AUTH_STATE_DIR", shared.to_str().unwrap());
    assert_refresh_refused(
        &env,
        &fake,
        &imported,
        &[
            &shared.display().to_string(),
            "belongs to user id 65534",
            "XERO_AUTH_STATE_DIR",
        ],
    );
    assert_eq!(mode(&shared), 0o777, "another user's folder is not changed");

    // The same for a lock folder, and a lock file, that another user owns in a folder of yours.
    let (env, imported) = imported_profile(&fake, "lock-shared-2", DAY);
    let lock = lock_file(&env);
    assert!(give_to_nobody(&lock));
    assert_refresh_refused(&env, &fake, &imported, &["belongs to user id 65534"]);
    let locks = lock.parent().unwrap();
    assert!(give_to_nobody(locks));
    assert_refresh_refused(&env, &fake, &imported, &["belongs to user id 65534"]);
}

/// Runs `doctor --json` and returns its exit code and report.
fn doctor(env: &TestEnv, extra_env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let mut cmd = env.std_cmd(&["doctor", "--json"]);
    cmd.env_remove("XERO_AUTH_STORE");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", stdout_text(&out)));
    (out.status.code().unwrap(), json)
}

/// The `what` of every entry in the report's `key` list.
fn whats(json: &serde_json::Value, key: &str) -> Vec<String> {
    json[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| format!("{} / {}", w["what"], w["fix"]))
        .collect()
}

#[test]
fn doctor_says_where_the_lock_cannot_be_trusted() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _imported) = imported_profile(&fake, "lock-doctor", DAY);

    let (code, json) = doctor(&env, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert!(
        !whats(&json, "warnings")
            .iter()
            .any(|w| w.contains("refresh lock")),
        "{json:#}"
    );

    // On a network file system (the failpoint stands in for statfs saying NFS).
    let (code, json) = doctor(&env, &[("FAILPOINTS", "lock-filesystem=return(NFS)")]);
    assert_eq!(code, 0, "a warning only: {json:#}");
    let warnings = whats(&json, "warnings");
    assert!(
        warnings.iter().any(|w| w.contains("is on NFS")
            && w.contains("nolock")
            && w.contains("XERO_AUTH_STATE_DIR")
            && w.contains("local disk")),
        "{warnings:#?}"
    );

    // A loose folder of yours: said, and left for the next command to tighten.
    chmod(&state_dir(&env), 0o775);
    let (code, json) = doctor(&env, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert!(
        whats(&json, "warnings")
            .iter()
            .any(|w| w.contains("open to other users (mode 0775)") && w.contains("0700")),
        "{json:#}"
    );
    assert_eq!(mode(&state_dir(&env)), 0o775, "doctor changes nothing");

    // Another user's folder: a problem (exit 1), as every command would refuse it.
    if give_to_nobody(&state_dir(&env)) {
        let (code, json) = doctor(&env, &[]);
        assert_eq!(code, 1, "{json:#}");
        assert!(
            whats(&json, "problems").iter().any(
                |p| p.contains("belongs to user id 65534") && p.contains("XERO_AUTH_STATE_DIR")
            ),
            "{json:#}"
        );
    }
}
