//! The encrypted-file store (`store = "file"`, `--store file`), through the real binary: round
//! trip, wrong passphrase, no passphrase, crashes in the middle of a write, concurrent writers,
//! and that the passphrase reaches no child process and no output.
//!
//! These tests need no keychain: the file store is what machines without one use. Files are
//! written with the lowest work factor (XERO_AUTH_FILE_WORK_FACTOR=10) to keep the suite fast,
//! except in the test that checks age's default.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use support::processes::*;
use support::*;
use xero_auth::secret::SecretString;
use xero_auth::store::{FileStore, SecretStore};

const PASSPHRASE: &str = "tidy-Otter-41-lantern";
const DAY: Duration = Duration::from_secs(86_400);

/// A test environment whose commands use the file store with `PASSPHRASE`.
fn file_env(fake: &FakeXero, name: &str) -> TestEnv {
    let mut env = TestEnv::new(fake, name);
    env.set_env("XERO_AUTH_STORE", "file");
    env.set_env("XERO_AUTH_PASSPHRASE", PASSPHRASE);
    env.set_env("XERO_AUTH_FILE_WORK_FACTOR", "10");
    // Each command unlocks the store itself, so that what these tests say of the passphrase is
    // what happens; keeping the key between commands is tests/it/file_unlock.rs's.
    env.set_env("XERO_AUTH_FILE_UNLOCK_TTL", "0");
    env
}

fn secrets_dir(env: &TestEnv) -> PathBuf {
    env.dir.path().join("data/xero-auth/secrets")
}

fn token_set_file(env: &TestEnv) -> PathBuf {
    secrets_dir(env).join(&env.profile).join("token-set.age")
}

/// The store's key, encrypted with the passphrase.
fn key_file(env: &TestEnv) -> PathBuf {
    secrets_dir(env).join(".store-identity.age")
}

fn client_secret_file(env: &TestEnv) -> PathBuf {
    secrets_dir(env)
        .join(&env.profile)
        .join("client-secret.age")
}

/// Decrypts one of the store's files through the library, as a separate reader would.
fn read_back(env: &TestEnv, kind: &str) -> Option<Vec<u8>> {
    let store = FileStore::new(
        secrets_dir(env),
        10,
        Box::new(|_| Ok(SecretString::from(PASSPHRASE))),
    );
    store
        .get(&format!("{}/{kind}", env.profile))
        .expect("the file store opens with the passphrase")
        .map(|z| z.to_vec())
}

/// The refresh token the file store holds is one the fake accepts.
fn assert_stored_refresh_token_is_active(env: &TestEnv, fake: &FakeXero) {
    let stored = stored_set(env)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        fake.refresh_token_status(&stored),
        RefreshTokenStatus::Active
    );
}

fn stored_set(env: &TestEnv) -> serde_json::Value {
    serde_json::from_slice(&read_back(env, "token-set").expect("a token set is stored")).unwrap()
}

/// A profile on the file store with a client and a day-old token file imported (the access
/// token has expired, so the next `token` refreshes).
fn expired_profile(fake: &FakeXero, name: &str) -> (TestEnv, IssuedTokens) {
    let env = file_env(fake, name);
    env.set_client(fake);
    let tokens = env.import_fresh(fake, DAY);
    (env, tokens)
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn round_trip_client_import_token_refresh_and_nothing_in_the_clear() {
    let fake = FakeXero::start();
    let (env, imported) = expired_profile(&fake, "fs-round");

    // Both secrets are age files to the store's key, which is encrypted with the passphrase;
    // all 0600 in 0700 folders; the keychain got nothing.
    for file in [token_set_file(&env), client_secret_file(&env)] {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n-> X25519 "),
            "{}",
            file.display()
        );
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let key_file = key_file(&env);
    assert!(
        std::fs::read(&key_file)
            .unwrap()
            .starts_with(b"age-encryption.org/v1\n-> scrypt ")
    );
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&secrets_dir(&env)), 0o700);
    assert_eq!(mode(&secrets_dir(&env).join(&env.profile)), 0o700);
    assert_eq!(
        read_back(&env, "client-secret").unwrap(),
        CLIENT_SECRET.as_bytes()
    );
    assert_eq!(
        stored_set(&env)["refresh_token"],
        imported.refresh_token.as_str()
    );
    assert!(
        env.secret_tool_lookup(&format!("{}/token-set", env.profile))
            .is_none()
    );

    // `token` refreshes once (the imported access token is a day old) and says nothing secret.
    let out = env.ok(&["token"]);
    let token = stdout_text(&out).trim().to_string();
    assert!(fake.access_token_valid(&token));
    assert_eq!(fake.count(Counter::Refresh), 1);
    let rotated = stored_set(&env)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        rotated, imported.refresh_token,
        "the rotated refresh token was stored"
    );
    assert_eq!(
        fake.refresh_token_status(&rotated),
        RefreshTokenStatus::Active
    );

    // A second `token` uses the stored access token: no request.
    let again = env.ok(&["token"]);
    assert_eq!(stdout_text(&again).trim(), token);
    assert_eq!(fake.count(Counter::Refresh), 1);

    // `refresh` rotates again; `status` names the store and no secret.
    env.ok(&["refresh"]);
    assert_eq!(fake.count(Counter::Refresh), 2);
    let status = env.ok(&["status"]);
    let status_text = format!("{}{}", stdout_text(&status), stderr_text(&status));
    assert!(status_text.contains("encrypted files in"), "{status_text}");

    // No secret in the clear anywhere under the test's folders, and none printed by -vvv.
    let verbose = env
        .cmd(&["refresh", "-vvv"])
        .env("RUST_LOG", "trace")
        .assert()
        .success();
    let printed = format!(
        "{}{}",
        stdout_text(verbose.get_output()),
        stderr_text(verbose.get_output())
    );
    for secret in every_issued_secret(&fake)
        .into_iter()
        .chain([CLIENT_SECRET.to_string(), PASSPHRASE.to_string()])
    {
        // (The imported token file itself sits beside these folders and is the user's.)
        for sub in ["home", "config", "state", "cache", "data"] {
            let hits = files_containing(&env.dir.path().join(sub), &secret);
            assert!(hits.is_empty(), "a secret in {hits:?}");
        }
        assert!(!printed.contains(&secret), "a secret in the output");
    }
}

#[test]
fn the_store_is_chosen_in_the_profile_or_by_flag_never_silently() {
    let fake = FakeXero::start();
    let mut env = file_env(&fake, "fs-choose");
    env.set_env("XERO_AUTH_STORE", "");
    // `--store file` on the command line.
    env.cmd(&["--store", "file", "client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .assert()
        .success();
    assert!(client_secret_file(&env).exists());
    // `store = "file"` in the profile: `client set` kept the file's other keys.
    let config = env.dir.path().join("config/xero-auth/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}store = \"file\"\n")).unwrap();
    let shown = env.ok(&["client", "show"]);
    assert!(
        stdout_text(&shown).contains("encrypted files in"),
        "{}",
        stdout_text(&shown)
    );
    // An unknown store is a usage error that lists the real ones.
    let bad = env
        .cmd(&["--store", "plaintext", "status"])
        .assert()
        .code(2);
    assert!(stderr_text(bad.get_output()).contains("file"));
}

#[test]
fn a_wrong_passphrase_is_exit_5_and_nothing_is_overwritten_or_sent() {
    let fake = FakeXero::start();
    let (mut env, _imported) = expired_profile(&fake, "fs-wrong");
    let set_before = std::fs::read(token_set_file(&env)).unwrap();
    let secret_before = std::fs::read(client_secret_file(&env)).unwrap();
    env.set_env("XERO_AUTH_PASSPHRASE", "not-the-passphrase");

    let other = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&other, Duration::ZERO);
    for args in [
        vec!["token"],
        vec!["refresh"],
        vec!["import", "--force", file.to_str().unwrap()],
        vec!["logout", "--keep-remote"],
    ] {
        let out = env.cmd(&args).assert().code(5).get_output().clone();
        let err = stderr_text(&out);
        assert!(
            err.contains("passphrase does not open") && err.contains("XERO_AUTH_PASSPHRASE"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("not-the-passphrase"),
            "the passphrase is never printed"
        );
    }
    let out = env
        .cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", "cs-another-secret-entirely")
        .assert()
        .code(5)
        .get_output()
        .clone();
    assert!(
        stderr_text(&out).contains("nothing was written"),
        "{}",
        stderr_text(&out)
    );

    assert_eq!(fake.count(Counter::Refresh), 0, "no refresh was sent");
    assert_eq!(std::fs::read(token_set_file(&env)).unwrap(), set_before);
    assert_eq!(
        std::fs::read(client_secret_file(&env)).unwrap(),
        secret_before
    );
    assert!(file.exists(), "the token file was not removed");

    // With the right passphrase everything still works.
    env.set_env("XERO_AUTH_PASSPHRASE", PASSPHRASE);
    let out = env.ok(&["token"]);
    assert!(fake.access_token_valid(stdout_text(&out).trim()));
}

/// Files set aside as damaged in the profile's folder of the store.
fn set_aside_files(env: &TestEnv) -> Vec<String> {
    std::fs::read_dir(secrets_dir(env).join(&env.profile))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".damaged-"))
        .collect()
}

/// `client set` writes without reading first, so it reaches a damaged file of the store.
#[test]
fn a_damaged_file_is_replaced_only_under_a_passphrase_another_file_confirms() {
    let fake = FakeXero::start();
    let (mut env, _imported) = expired_profile(&fake, "fs-damaged");
    let damaged = client_secret_file(&env);
    std::fs::write(&damaged, b"not an age file").unwrap();
    let client_set = |env: &TestEnv, code: i32| {
        let out = env
            .cmd(&["client", "set", "--client-id", CLIENT_ID])
            .env("XERO_CLIENT_SECRET", "cs-the-new-secret")
            .assert()
            .code(code)
            .get_output()
            .clone();
        stderr_text(&out)
    };

    // A passphrase that is not the store's: the store's key file says so.
    env.set_env("XERO_AUTH_PASSPHRASE", "not-the-passphrase");
    let err = client_set(&env, 5);
    assert!(
        err.contains("passphrase does not open") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(std::fs::read(&damaged).unwrap(), b"not an age file");
    assert!(set_aside_files(&env).is_empty());

    // With no key file, and no other file to confirm any passphrase (the token set's needs
    // the key), nothing is written either.
    let witness = key_file(&env);
    let kept = std::fs::read(&witness).unwrap();
    std::fs::remove_file(&witness).unwrap();
    for passphrase in [PASSPHRASE, "not-the-passphrase"] {
        env.set_env("XERO_AUTH_PASSPHRASE", passphrase);
        let err = client_set(&env, 5);
        assert!(
            err.contains("is damaged")
                && err.contains("no other file of the store opens with this passphrase")
                && err.contains("restore the damaged file"),
            "{err}"
        );
        assert_eq!(std::fs::read(&damaged).unwrap(), b"not an age file");
        assert!(set_aside_files(&env).is_empty());
    }

    // The store's passphrase, confirmed by the key file: the damaged file is kept aside
    // and replaced, and one passphrase opens the whole store.
    std::fs::write(&witness, kept).unwrap();
    env.set_env("XERO_AUTH_PASSPHRASE", PASSPHRASE);
    client_set(&env, 0);
    assert_eq!(set_aside_files(&env).len(), 1);
    assert_eq!(
        read_back(&env, "client-secret").unwrap(),
        b"cs-the-new-secret"
    );
    assert!(stored_set(&env)["refresh_token"].is_string());
}

#[test]
fn without_a_passphrase_or_a_terminal_it_says_what_to_set_and_writes_nothing() {
    let fake = FakeXero::start();
    let mut env = file_env(&fake, "fs-none");
    env.set_env("XERO_AUTH_PASSPHRASE", "");
    let out = env
        .cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .assert()
        .code(5)
        .get_output()
        .clone();
    let err = stderr_text(&out);
    assert!(
        err.contains("needs its passphrase") && err.contains("set XERO_AUTH_PASSPHRASE"),
        "{err}"
    );
    assert!(!client_secret_file(&env).exists(), "nothing was written");
    // Reading an empty store needs no passphrase: nothing stored is exit 3, not 5.
    env.cmd(&["token"]).assert().code(3);
}

/// Cron jobs and services give the passphrase in a file: `XERO_AUTH_PASSPHRASE_FILE`, or
/// systemd's credential `xero-auth-passphrase` in `$CREDENTIALS_DIRECTORY`. A file other users
/// can read is refused before anything is opened or written.
#[test]
fn the_passphrase_comes_from_a_file_or_a_systemd_credential_readable_by_the_user_alone() {
    let fake = FakeXero::start();
    let (mut env, tokens) = expired_profile(&fake, "fs-pfile");
    env.set_env("XERO_AUTH_PASSPHRASE", "");
    let before = std::fs::read(token_set_file(&env)).unwrap();

    let file = env.dir.path().join("passphrase");
    std::fs::write(&file, format!("{PASSPHRASE}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.set_env("XERO_AUTH_PASSPHRASE_FILE", file.to_str().unwrap());
    let out = env.cmd(&["token"]).assert().code(5).get_output().clone();
    let err = stderr_text(&out);
    assert!(err.contains("other users can read it (mode 0644)"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert!(
        !err.contains(PASSPHRASE),
        "the passphrase is never quoted: {err}"
    );
    assert_eq!(fake.count(Counter::Refresh), 0, "nothing sent");
    assert_eq!(std::fs::read(token_set_file(&env)).unwrap(), before);

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.ok(&["token"]);
    let first = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(
        first, tokens.access_token,
        "the expired token was refreshed"
    );
    assert!(fake.access_token_valid(&first));

    // systemd: LoadCredential=xero-auth-passphrase:… puts a 0400 file in CREDENTIALS_DIRECTORY.
    env.set_env("XERO_AUTH_PASSPHRASE_FILE", "");
    let credentials = env.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let credential = credentials.join("xero-auth-passphrase");
    std::fs::write(&credential, PASSPHRASE).unwrap();
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o400)).unwrap();
    env.set_env("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap());
    env.ok(&["refresh"]);
    assert_stored_refresh_token_is_active(&env, &fake);
    let doctor = env.cmd(&["doctor"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&doctor.stdout)
            .contains("the passphrase in the systemd credential xero-auth-passphrase opens them"),
        "{}",
        String::from_utf8_lossy(&doctor.stdout)
    );

    // A wrong one in the file is a wrong passphrase like any other: exit 5, nothing written.
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&credential, "not-the-passphrase\n").unwrap();
    let stored = std::fs::read(token_set_file(&env)).unwrap();
    env.cmd(&["refresh"]).assert().code(5);
    assert_eq!(std::fs::read(token_set_file(&env)).unwrap(), stored);
}

/// Crashes `refresh` at `point` of writing the new token set: the old file stays whole and
/// readable, and the next `token` recovers through Xero's grace window.
fn crash_while_writing(name: &str, point: &str) {
    let fake = FakeXero::start();
    let (env, imported) = expired_profile(&fake, name);
    let before = std::fs::read(token_set_file(&env)).unwrap();

    run_to_crash(env.std_cmd(&["refresh"]), point);
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "the refresh reached the fake"
    );
    assert_eq!(
        std::fs::read(token_set_file(&env)).unwrap(),
        before,
        "the old file is intact"
    );
    assert_eq!(
        stored_set(&env)["refresh_token"],
        imported.refresh_token.as_str()
    );
    let leftovers = |env: &TestEnv| {
        std::fs::read_dir(secrets_dir(env).join(&env.profile))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count()
    };
    assert_eq!(
        leftovers(&env),
        1,
        "the crashed writer left its temporary file"
    );

    let out = env.ok(&["token"]);
    assert!(fake.access_token_valid(stdout_text(&out).trim()));
    assert_stored_refresh_token_is_active(&env, &fake);
    assert_eq!(leftovers(&env), 0, "the next write removed it");
}

/// `import --remove` deletes the plaintext file only once the store holds the tokens, checked
/// by reading them back. That read-back used to be answered from the process's own cache of
/// what it had just written, keyed by the file's inode, size and time, so a file damaged on disk
/// in place (same inode, size and time) passed the check and the plaintext file was deleted,
/// leaving the tokens nowhere. It now decrypts the file from disk.
#[test]
fn import_reads_the_file_back_from_disk_before_removing_the_token_file() {
    require_failpoints!();
    let fake = FakeXero::start();
    let env = file_env(&fake, "fs-read-back");
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let plain = env.write_token_file(&tokens, Duration::from_secs(60));
    let stored = token_set_file(&env);

    let mut cmd = env.std_cmd(&["import", "--remove", plain.to_str().unwrap()]);
    // Hold the import between its write and its read-back.
    cmd.env("FAILPOINTS", "import-stored=sleep(3000)");
    let import = Running::spawn(cmd);
    wait_until(Duration::from_secs(20), "the store file", || {
        stored.exists()
    });
    std::thread::sleep(Duration::from_millis(500));

    // Damage one byte in place, and give the file its time back: inode, size and time as they
    // were, the contents not.
    let modified = std::fs::metadata(&stored).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&stored)
            .unwrap();
        file.seek(SeekFrom::Start(last as u64)).unwrap();
        file.write_all(&bytes[last..]).unwrap();
        file.set_modified(modified).unwrap();
    }

    let out = import.finish(Duration::from_secs(30));
    let stderr = stderr_text(&out);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("damaged") && stderr.contains("was not deleted"),
        "{stderr}"
    );
    assert!(plain.exists(), "the plaintext token file is kept");
}

#[test]
fn a_crash_half_way_through_writing_the_file_leaves_the_old_one() {
    crash_while_writing("fs-crash-half", "file-store-writing");
}

#[test]
fn a_crash_between_writing_and_renaming_leaves_the_old_one() {
    crash_while_writing("fs-crash-rename", "file-store-written");
}

#[test]
fn concurrent_writers_leave_one_whole_file_and_make_one_refresh() {
    let fake = FakeXero::start();
    let (env, _imported) = expired_profile(&fake, "fs-storm");

    // 12 `token` on an expired access token: one refresh, one answer for all.
    let runs: Vec<Running> = (0..12)
        .map(|_| Running::spawn(env.std_cmd(&["token"])))
        .collect();
    let tokens: Vec<String> = runs
        .into_iter()
        .map(|r| {
            let out = r.finish(Duration::from_secs(120));
            assert!(out.status.success(), "{}", stderr_text(&out));
            stdout_text(&out).trim().to_string()
        })
        .collect();
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "one refresh for twelve processes"
    );
    assert!(tokens.iter().all(|t| t == &tokens[0]));

    // Imports of six different token files racing six `refresh` and four `client set`:
    // every one succeeds, and what is left is one whole file holding one of the written sets.
    let mut runs = Vec::new();
    let mut files = Vec::new();
    for i in 0..6 {
        let issued = fake.issue_tokens(CLIENT_ID, SCOPE);
        let path = env.dir.path().join(format!("tokens-{i}.json"));
        std::fs::rename(env.write_token_file(&issued, Duration::ZERO), &path).unwrap();
        files.push(issued);
        runs.push(Running::spawn(env.std_cmd(&[
            "import",
            "--force",
            path.to_str().unwrap(),
        ])));
        runs.push(Running::spawn(env.std_cmd(&["refresh"])));
    }
    for _ in 0..4 {
        let mut cmd = env.std_cmd(&["client", "set", "--client-id", CLIENT_ID]);
        cmd.env("XERO_CLIENT_SECRET", CLIENT_SECRET);
        runs.push(Running::spawn(cmd));
    }
    for run in runs {
        let out = run.finish(Duration::from_secs(120));
        assert!(out.status.success(), "{}", stderr_text(&out));
    }
    assert_stored_refresh_token_is_active(&env, &fake);
    assert_eq!(
        read_back(&env, "client-secret").unwrap(),
        CLIENT_SECRET.as_bytes()
    );
    let names: Vec<String> = std::fs::read_dir(secrets_dir(&env).join(&env.profile))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "two files, no leftovers: {names:?}");
    let out = env.ok(&["token"]);
    assert!(fake.access_token_valid(stdout_text(&out).trim()));
}

#[test]
fn exec_children_never_see_the_passphrase() {
    let fake = FakeXero::start();
    let (env, _imported) = expired_profile(&fake, "fs-exec");
    let out = env.ok(&[
        "exec",
        "--",
        "sh",
        "-c",
        "env; cat /proc/$$/environ | tr '\\0' '\\n'",
    ]);
    let seen = stdout_text(&out);
    assert!(
        seen.contains("XERO_ACCESS_TOKEN="),
        "the child got its token"
    );
    assert!(
        !seen.contains(PASSPHRASE),
        "the passphrase reached the child"
    );
    assert!(
        !seen.contains("XERO_AUTH_PASSPHRASE"),
        "the variable reached the child"
    );
}

#[test]
fn the_default_work_factor_is_2_to_the_18() {
    let fake = FakeXero::start();
    let mut env = file_env(&fake, "fs-default");
    env.set_env("XERO_AUTH_FILE_WORK_FACTOR", "");
    env.set_client(&fake);
    // The passphrase guards the store's key: its file has the work factor.
    let sealed = std::fs::read(key_file(&env)).unwrap();
    let header = String::from_utf8_lossy(&sealed[..80]).into_owned();
    // "-> scrypt SALT LOG_N" in age's header.
    let log_n: u8 = header
        .lines()
        .nth(1)
        .and_then(|line| line.split(' ').nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no work factor in {header:?}"));
    assert_eq!(log_n, 18, "the default work factor");
    assert_eq!(
        read_back(&env, "client-secret").unwrap(),
        CLIENT_SECRET.as_bytes()
    );
}

#[test]
fn doctor_checks_the_file_store_and_whether_the_passphrase_opens_it() {
    let fake = FakeXero::start();
    let (env, _imported) = expired_profile(&fake, "fs-doctor");
    // Doctor reads the profiles as configured: name the store there.
    let config = env.dir.path().join("config/xero-auth/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}store = \"file\"\n")).unwrap();
    let doctor = |passphrase: &str| {
        let mut cmd = env.std_cmd(&["doctor", "--json"]);
        cmd.env_remove("XERO_AUTH_STORE")
            .env("XERO_AUTH_PASSPHRASE", passphrase);
        let out = cmd.output().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            !stdout_text(&out).contains(PASSPHRASE),
            "the passphrase is never printed"
        );
        (out.status.code().unwrap(), json)
    };
    let file_store = |json: &serde_json::Value| {
        json["stores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["store"] == "file")
            .cloned()
            .expect("the file store is listed")
    };

    let (code, json) = doctor(PASSPHRASE);
    assert_eq!(code, 0, "{json:#}");
    let store = file_store(&json);
    assert_eq!(store["usable"], true);
    assert!(
        store["detail"]
            .as_str()
            .unwrap()
            .contains("2 files; the passphrase in XERO_AUTH_PASSPHRASE opens them"),
        "{store:#}"
    );
    assert_eq!(store["used_by"][0], env.profile.as_str());
    let me = json["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == env.profile.as_str())
        .unwrap()
        .clone();
    assert_eq!(me["store"], "file");
    assert_eq!(me["token_set_stored"], true);
    assert_eq!(me["client_secret_stored"], true);

    let (code, json) = doctor("not-the-passphrase");
    assert_eq!(code, 5, "{json:#}");
    assert!(
        file_store(&json)["detail"]
            .as_str()
            .unwrap()
            .contains("passphrase does not open"),
        "{json:#}"
    );

    let (code, json) = doctor("");
    assert_eq!(code, 5, "{json:#}");
    let store = file_store(&json);
    assert!(
        store["detail"]
            .as_str()
            .unwrap()
            .contains("no XERO_AUTH_PASSPHRASE"),
        "{store:#}"
    );
    assert!(
        store["fix"]
            .as_str()
            .unwrap()
            .contains("set XERO_AUTH_PASSPHRASE"),
        "{store:#}"
    );

    // doctor never writes: not even the store's public recipient file when it is missing
    // (the next command that unlocks the store writes it again).
    let recipient = secrets_dir(&env).join(".store-recipient");
    std::fs::remove_file(&recipient).unwrap();
    let (code, json) = doctor(PASSPHRASE);
    assert!(
        file_store(&json)["detail"]
            .as_str()
            .unwrap()
            .contains("opens them"),
        "{code} {json:#}"
    );
    assert!(!recipient.exists(), "doctor wrote the recipient file");
    env.ok(&["token"]);
    assert!(
        recipient.exists(),
        "a command that unlocks the store writes it again"
    );

    // Other users reading the folder is a problem too.
    std::fs::set_permissions(secrets_dir(&env), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, json) = doctor(PASSPHRASE);
    assert_eq!(code, 5, "{json:#}");
    assert!(
        file_store(&json)["detail"]
            .as_str()
            .unwrap()
            .contains("can be read by other users")
    );
}

/// The passphrase leaves the process's environment block at start-up: a `client set` held
/// alive after its write shows neither the value in /proc/PID/environ nor the variable to the
/// children it could start.
#[test]
fn the_passphrase_is_wiped_from_the_running_process_environment() {
    let fake = FakeXero::start();
    let env = file_env(&fake, "fs-environ");
    let mut cmd = env.std_cmd(&["client", "set", "--client-id", CLIENT_ID]);
    cmd.env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .env("FAILPOINTS", "client-secret-stored=sleep(3000)");
    let running = Running::spawn(cmd);
    let pid = running.pid();
    wait_until(Duration::from_secs(20), "the secret to be written", || {
        client_secret_file(&env).exists()
    });
    let environ = std::fs::read(format!("/proc/{pid}/environ"));
    let out = running.finish(Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr_text(&out));
    match environ {
        Ok(environ) => {
            let has = |needle: &str| {
                environ
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            };
            assert!(has("XERO_CLIENT_SECRET="), "the environment block was read");
            assert!(
                !has(PASSPHRASE),
                "the passphrase is still in the environment block"
            );
        }
        // Only root reads another process's environ once it is not dumpable.
        Err(e) if unsafe { libc::geteuid() } != 0 => {
            eprintln!("skipped the environ check: {e} (not root)")
        }
        Err(e) => panic!("cannot read /proc/{pid}/environ as root: {e}"),
    }
}

/// `xero-auth ARGS` running on a terminal (`script` gives it a pseudo-terminal), with what the
/// terminal has shown so far. The test types lines as a person would, once what it waits for
/// has appeared.
struct Terminal {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    shown: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// How much of `shown` the test has already waited past.
    seen: usize,
}

impl Terminal {
    fn start(env: &TestEnv, args: &str) -> Terminal {
        use std::io::Read;
        use std::process::Stdio;
        let base = env.std_cmd(&[]);
        let mut cmd = std::process::Command::new("script");
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.env_remove("XERO_AUTH_PASSPHRASE")
            .args([
                "-qfec",
                &format!("{} {args}", env!("CARGO_BIN_EXE_xero-auth")),
                "/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("script(1) runs (package bsdutils)");
        let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = shown.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            stdin: child.stdin.take(),
            child,
            shown,
            reader: Some(reader),
            seen: 0,
        }
    }

    /// Everything the terminal has shown.
    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.shown.lock().unwrap()).into_owned()
    }

    /// Waits until one of `texts` appears after what was already waited past; returns which (its
    /// index) and the rest of the line it is on, from it.
    fn wait_for_any(&mut self, texts: &[&str]) -> (usize, String) {
        let find = |haystack: &[u8], needle: &[u8]| {
            haystack.windows(needle.len()).position(|w| w == needle)
        };
        let seen = self.seen;
        let mut found = None;
        wait_until(Duration::from_secs(60), &format!("{texts:?}"), || {
            let shown = self.shown.lock().unwrap();
            found = texts
                .iter()
                .enumerate()
                .filter_map(|(i, t)| find(&shown[seen..], t.as_bytes()).map(|at| (seen + at, i)))
                .min();
            found.is_some()
        });
        let (at, i) = found.expect("waited until found");
        self.seen = at + texts[i].len();
        let shown = self.shown.lock().unwrap();
        let line = String::from_utf8_lossy(&shown[at..]);
        (i, line.lines().next().unwrap_or("").to_string())
    }

    /// Types `line` and Enter.
    fn type_line(&mut self, line: &str) {
        use std::io::Write;
        // A prompt is printed just before the terminal's echo is switched off.
        std::thread::sleep(Duration::from_millis(300));
        let stdin = self.stdin.as_mut().expect("the terminal is open");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the command to end; returns its exit code and all the terminal showed.
    fn finish(mut self) -> (i32, String) {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the command on the terminal did not end:\n{}", self.shown());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.reader.take().unwrap().join().unwrap();
        (status, self.shown())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `xero-auth ARGS` on a terminal and types each line once the prompt before it has
/// appeared. Returns the exit code and all the terminal showed.
fn on_a_terminal(env: &TestEnv, args: &str, dialogue: &[(&str, &str)]) -> (i32, String) {
    let mut terminal = Terminal::start(env, args);
    for (prompt, line) in dialogue {
        terminal.wait_for_any(&[prompt]);
        terminal.type_line(line);
    }
    terminal.finish()
}

#[test]
fn on_a_terminal_a_mistyped_passphrase_is_asked_for_again_twice() {
    let fake = FakeXero::start();
    let env = file_env(&fake, "fs-tty-retry");
    // The store exists (its passphrase given in the environment).
    env.cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .assert()
        .success();
    let set = format!("client set --client-id {CLIENT_ID}");
    let asked = "Passphrase of the xero-auth file store";

    // One typing mistake: said, asked again, and the command goes on.
    let mut terminal = Terminal::start(&env, &set);
    terminal.wait_for_any(&["Client secret (input hidden): "]);
    terminal.type_line("another-secret");
    terminal.wait_for_any(&[asked]);
    terminal.type_line("tidy-Otter-41-lanterm");
    terminal.wait_for_any(&["try again (2 tries left)"]);
    terminal.wait_for_any(&[asked]);
    terminal.type_line(PASSPHRASE);
    let (code, shown) = terminal.finish();
    assert_eq!(code, 0, "{shown}");
    assert_eq!(read_back(&env, "client-secret").unwrap(), b"another-secret");

    // Three wrong ones: the wrong-passphrase failure (exit 5), nothing written.
    let mut terminal = Terminal::start(&env, &set);
    terminal.wait_for_any(&["Client secret (input hidden): "]);
    terminal.type_line(CLIENT_SECRET);
    for (typed, then) in [
        ("wrong-1", Some("try again (2 tries left)")),
        ("wrong-2", Some("try again (1 try left)")),
        ("wrong-3", None),
    ] {
        terminal.wait_for_any(&[asked]);
        terminal.type_line(typed);
        if let Some(then) = then {
            terminal.wait_for_any(&[then]);
        }
    }
    let (code, shown) = terminal.finish();
    assert_eq!(code, 5, "{shown}");
    assert!(shown.contains("a wrong passphrase"), "{shown}");
    assert_eq!(shown.matches(asked).count(), 3, "{shown}");
    assert_eq!(read_back(&env, "client-secret").unwrap(), b"another-secret");
}

#[test]
fn on_a_terminal_the_passphrase_is_asked_without_echo_twice_for_a_new_store() {
    let fake = FakeXero::start();
    let env = file_env(&fake, "fs-tty");
    let (code, shown) = on_a_terminal(
        &env,
        &format!("client set --client-id {CLIENT_ID}"),
        &[
            ("Client secret (input hidden): ", CLIENT_SECRET),
            ("New passphrase for the xero-auth file store", PASSPHRASE),
            ("The same passphrase again: ", PASSPHRASE),
        ],
    );
    assert_eq!(code, 0, "{shown}");
    assert!(
        !shown.contains(PASSPHRASE),
        "the passphrase was echoed: {shown}"
    );
    assert!(
        !shown.contains(CLIENT_SECRET),
        "the secret was echoed: {shown}"
    );
    assert_eq!(
        read_back(&env, "client-secret").unwrap(),
        CLIENT_SECRET.as_bytes()
    );

    // An existing store asks once; `client show` asks nothing (it only looks the file up);
    // two different answers for a new store write nothing.
    let (code, shown) = on_a_terminal(
        &env,
        &format!("client set --client-id {CLIENT_ID}"),
        &[
            ("Client secret (input hidden): ", CLIENT_SECRET),
            ("Passphrase of the xero-auth file store", PASSPHRASE),
        ],
    );
    assert_eq!(code, 0, "{shown}");
    let (code, shown) = on_a_terminal(&env, "client show", &[]);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("client secret: stored in encrypted files"),
        "{shown}"
    );
    assert!(!shown.contains("Passphrase"), "{shown}");
    let other = file_env(&fake, "fs-tty-differ");
    let (code, shown) = on_a_terminal(
        &other,
        &format!("client set --client-id {CLIENT_ID}"),
        &[
            ("Client secret (input hidden): ", CLIENT_SECRET),
            ("New passphrase for the xero-auth file store", PASSPHRASE),
            ("The same passphrase again: ", "something else"),
        ],
    );
    // A typing mistake, said as one: exit 1, not "the store is unavailable" (exit 5).
    assert_eq!(code, 1, "{shown}");
    assert!(
        shown.contains("xero-auth: the two passphrases differ; nothing was written"),
        "{shown}"
    );
    assert!(!shown.contains("unavailable"), "{shown}");
    assert!(!client_secret_file(&other).exists());
}

/// A public (PKCE-only) app: registered at the fake without a secret.
const PUBLIC_CLIENT_ID: &str = "0A1B2C3D4E5F60718293A4B5C6D7E8F9";

/// What a `login --no-browser` on a terminal did.
struct TerminalLogin {
    code: i32,
    shown: String,
    /// What the person did, in order: "passphrase" or "browser".
    steps: Vec<&'static str>,
}

/// `login --no-browser` on a terminal: the person types `typed` at each of `prompts` and plays
/// the browser once the URL appears, in whatever order the two come.
fn login_on_a_terminal(
    env: &TestEnv,
    fake: &FakeXero,
    prompts: &[&str],
    typed: &str,
) -> TerminalLogin {
    use support::browser::{callback, consent, free_port};
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let mut terminal = Terminal::start(
        env,
        &format!("login --no-browser --redirect-uri {redirect}"),
    );
    let url_start = format!("{}?", fake.authorize_url());
    let mut prompts = prompts.iter();
    let mut prompt = prompts.next();
    let mut steps = Vec::new();
    while prompt.is_some() || !steps.contains(&"browser") {
        let mut awaited: Vec<&str> = prompt.into_iter().copied().collect();
        if !steps.contains(&"browser") {
            awaited.push(&url_start);
        }
        let (which, line) = terminal.wait_for_any(&awaited);
        if awaited[which] == url_start {
            let url = line.split_whitespace().next().unwrap();
            let page = callback(consent(url).as_str());
            assert_eq!(page.status, 200, "{page:?}");
            steps.push("browser");
        } else {
            terminal.type_line(typed);
            prompt = prompts.next();
            steps.push("passphrase");
        }
    }
    let (code, shown) = terminal.finish();
    TerminalLogin { code, shown, steps }
}

/// A login that worked: exit 0, the passphrase asked before the browser was sent anywhere and
/// never echoed, and the stored refresh token is the one the fake issued last, alive.
fn assert_logged_in(login: &TerminalLogin, fake: &FakeXero, env: &TestEnv, passphrases: usize) {
    assert_eq!(login.code, 0, "{}", login.shown);
    let mut expected = vec!["passphrase"; passphrases];
    expected.push("browser");
    assert_eq!(login.steps, expected, "{}", login.shown);
    assert!(login.shown.contains("logged in"), "{}", login.shown);
    assert!(!login.shown.contains(PASSPHRASE), "echoed: {}", login.shown);
    let stored = stored_set(env)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let issued = fake.issued();
    assert_eq!(
        issued.last().unwrap()["refresh_token"].as_str(),
        Some(stored.as_str())
    );
    assert_eq!(
        fake.refresh_token_status(&stored),
        RefreshTokenStatus::Active
    );
}

/// The documented headless set-up: `login --no-browser` in a terminal, file store. The
/// passphrase is asked before the flow starts, so the reader of pasted redirect URLs never
/// competes with the prompt for the terminal, and Xero's tokens are never issued before the
/// store can take them.
#[test]
fn login_without_a_browser_on_a_terminal_with_a_pkce_app_keeps_the_tokens() {
    let fake = FakeXero::start();
    let env = file_env(&fake, "fs-login-pkce");
    fake.add_client(PUBLIC_CLIENT_ID, None);
    env.ok(&["client", "set", "--client-id", PUBLIC_CLIENT_ID, "--public"]);
    assert!(
        !secrets_dir(&env).join(&env.profile).exists(),
        "a new store"
    );

    // First run: a new store, the passphrase asked twice.
    let first = login_on_a_terminal(
        &env,
        &fake,
        &[
            "New passphrase for the xero-auth file store",
            "The same passphrase again: ",
        ],
        PASSPHRASE,
    );
    assert_logged_in(&first, &fake, &env, 2);

    // Again, on the existing store: asked once.
    let again = login_on_a_terminal(
        &env,
        &fake,
        &["Passphrase of the xero-auth file store"],
        PASSPHRASE,
    );
    assert_logged_in(&again, &fake, &env, 1);

    // A wrong passphrase ends the login before any browser is sent anywhere: no code is
    // exchanged for tokens that could not be stored, and the stored set is untouched.
    let before = std::fs::read(token_set_file(&env)).unwrap();
    let exchanges = fake.count(Counter::TokenRequests);
    let mut terminal = Terminal::start(&env, "login --no-browser");
    for _ in 0..3 {
        terminal.wait_for_any(&["Passphrase of the xero-auth file store"]);
        terminal.type_line("not-the-passphrase");
    }
    let (code, shown) = terminal.finish();
    assert_eq!(code, 5, "{shown}");
    assert!(shown.contains("passphrase does not open"), "{shown}");
    assert!(!shown.contains("Open this URL"), "{shown}");
    assert_eq!(fake.count(Counter::TokenRequests), exchanges);
    assert_eq!(std::fs::read(token_set_file(&env)).unwrap(), before);
}

#[test]
fn login_without_a_browser_on_a_terminal_with_a_confidential_app_keeps_the_tokens() {
    let fake = FakeXero::start();
    let env = file_env(&fake, "fs-login-secret");
    env.set_client(&fake);
    let login = login_on_a_terminal(
        &env,
        &fake,
        &["Passphrase of the xero-auth file store"],
        PASSPHRASE,
    );
    assert_logged_in(&login, &fake, &env, 1);
}
