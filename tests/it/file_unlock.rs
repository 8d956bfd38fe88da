//! The encrypted-file store unlocked once: its key kept in the kernel's keyring between commands
//! (Linux keyutils), through the real binary. Unlocked once, `token` needs no passphrase and no
//! terminal; after `lock`, or once `file_unlock_ttl` has passed unused, it asks again; a key kept
//! for another store is never used; the key is in the kernel with possessor-only permissions and
//! in no file; stores written before the store had a key are upgraded, crash-safe.
//!
//! Each test joins a new anonymous session keyring first (what `keyctl session -` does): the
//! commands it starts inherit it and find the persistent keyring through it, as a cron job's
//! commands do, and `keyctl` run by the test sees what they see. Where the kernel refuses
//! keyutils altogether the tests say why and skip (a property of the kernel, not of the set-up).

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use support::processes::*;
use support::*;
use xero_auth::secret::SecretString;
use xero_auth::store::file::CacheState;
use xero_auth::store::unlock_cache::KeyCache;
use xero_auth::store::{FileStore, SecretStore};

const PASSPHRASE: &str = "Quiet-heron-73-ledger";
const DAY: Duration = Duration::from_secs(86_400);

macro_rules! keyring_or_skip {
    () => {
        if let Err(why) = join_new_session_keyring() {
            eprintln!("skipped: the kernel key retention service is not usable here: {why}");
            return;
        }
    };
}

/// A test environment on the file store, the passphrase given, the key kept `ttl` seconds.
fn unlock_env(fake: &FakeXero, name: &str, ttl: &str) -> TestEnv {
    let mut env = TestEnv::new(fake, name);
    env.set_env("XERO_AUTH_STORE", "file");
    env.set_env("XERO_AUTH_PASSPHRASE", PASSPHRASE);
    env.set_env("XERO_AUTH_FILE_WORK_FACTOR", "10");
    env.set_env("XERO_AUTH_FILE_UNLOCK_TTL", ttl);
    env
}

fn secrets_dir(env: &TestEnv) -> PathBuf {
    env.dir.path().join("data/xero-auth/secrets")
}

fn cache_of(env: &TestEnv) -> KeyCache {
    KeyCache::new(&secrets_dir(env), Duration::from_secs(60))
}

/// `keyctl ARGS…` in this test's session keyring: its stdout, or `None` when it failed.
fn keyctl(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("keyctl")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The id of the key kept for `env`'s store, as `keyctl` finds it from the session keyring.
fn kept_key_id(env: &TestEnv) -> Option<String> {
    keyctl(&["get_persistent", "@s"])?;
    keyctl(&["search", "@s", "user", cache_of(env).description()])
}

/// A profile on the file store with a client and an imported token set (imported `age` ago),
/// the store unlocked by those commands.
fn stored_profile(
    fake: &FakeXero,
    name: &str,
    ttl: &str,
    age: Duration,
) -> (TestEnv, IssuedTokens) {
    let env = unlock_env(fake, name, ttl);
    env.set_client(fake);
    let tokens = env.import_fresh(fake, age);
    (env, tokens)
}

fn without_passphrase(env: &mut TestEnv) {
    env.set_env("XERO_AUTH_PASSPHRASE", "");
}

fn assert_asks_for_the_passphrase(env: &TestEnv, what: &str) {
    let out = env.cmd(&["token"]).assert().code(5).get_output().clone();
    let err = stderr_text(&out);
    assert!(
        err.contains("needs its passphrase") && err.contains("XERO_AUTH_PASSPHRASE"),
        "{what}: {err}"
    );
    assert!(!err.contains("damaged"), "{what}: {err}");
}

#[test]
fn unlocked_once_token_needs_no_passphrase_until_lock() {
    keyring_or_skip!();
    let fake = FakeXero::start();
    let (mut env, _) = stored_profile(&fake, "unlock-once", "900", Duration::from_secs(60));
    without_passphrase(&mut env);

    // No passphrase in the environment, no terminal: served from the kept key.
    let first = stdout_text(&env.ok(&["token"])).trim().to_string();
    for _ in 0..3 {
        assert_eq!(stdout_text(&env.ok(&["token"])).trim(), first);
    }
    assert!(fake.access_token_valid(&first));
    let status = stdout_text(&env.ok(&["status"]));
    assert!(
        status.contains("file store:") && status.contains("unlocked"),
        "{status}"
    );

    // A refresh writes the new set with the kept key: no passphrase either.
    env.ok(&["refresh"]);
    assert_eq!(fake.count(Counter::Refresh), 1);

    let out = env.ok(&["lock"]);
    assert!(
        stderr_text(&out).contains("locked the file store"),
        "{}",
        stderr_text(&out)
    );
    assert_eq!(kept_key_id(&env), None, "forgotten in the kernel");
    assert_asks_for_the_passphrase(&env, "after lock");
    let status = env.cmd(&["status"]).assert().code(5);
    drop(status);

    // `unlock` with the passphrase keeps it again.
    env.set_env("XERO_AUTH_PASSPHRASE", PASSPHRASE);
    let out = env.ok(&["unlock"]);
    assert!(
        stderr_text(&out).contains("unlocked the file store"),
        "{}",
        stderr_text(&out)
    );
    without_passphrase(&mut env);
    env.ok(&["token"]);
    // A second `lock` finds nothing kept, and says so without failing.
    env.ok(&["lock"]);
    let out = env.ok(&["lock"]);
    assert!(
        stderr_text(&out).contains("was not unlocked"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn the_key_is_forgotten_once_the_ttl_has_passed_unused() {
    keyring_or_skip!();
    let fake = FakeXero::start();
    let (mut env, _) = stored_profile(&fake, "unlock-ttl", "4", Duration::from_secs(60));
    without_passphrase(&mut env);
    env.ok(&["token"]);
    // Each use restarts the timeout: used every second for five seconds (longer than the TTL),
    // still kept.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1000));
        env.ok(&["token"]);
    }
    std::thread::sleep(Duration::from_millis(6000));
    assert_asks_for_the_passphrase(&env, "after the ttl");
}

#[test]
fn without_a_ttl_the_key_is_never_kept() {
    keyring_or_skip!();
    let fake = FakeXero::start();
    let (mut env, _) = stored_profile(&fake, "unlock-off", "0", Duration::from_secs(60));
    assert_eq!(kept_key_id(&env), None);
    let err = stderr_text(&env.cmd(&["unlock"]).assert().code(1).get_output().clone());
    assert!(err.contains("file_unlock_ttl is 0"), "{err}");
    without_passphrase(&mut env);
    assert_asks_for_the_passphrase(&env, "ttl 0");
}

/// A key kept under a TTL, and then the TTL set to 0: the next command that reads the store
/// forgets it rather than leaving it readable for what remained of the old TTL, and `status`
/// says that none is kept because none is.
#[test]
fn a_ttl_set_to_zero_forgets_a_key_kept_before() {
    keyring_or_skip!();
    let fake = FakeXero::start();
    let (mut env, _) = stored_profile(&fake, "unlock-to-zero", "900", Duration::from_secs(60));
    assert!(kept_key_id(&env).is_some(), "kept under the TTL of 900 s");

    env.set_env("XERO_AUTH_FILE_UNLOCK_TTL", "0");
    let token = stdout_text(&env.ok(&["token"])).trim().to_string();
    assert!(fake.access_token_valid(&token));
    assert_eq!(
        kept_key_id(&env),
        None,
        "forgotten by the first command at TTL 0"
    );
    let status = stdout_text(&env.ok(&["status"]));
    assert!(status.contains("never kept"), "{status}");
    let json: serde_json::Value =
        serde_json::from_slice(&env.ok(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["file_store_key"]["kept"], false, "{json}");

    // Kept again under a TTL; at TTL 0 without the passphrase, the kept key is not used but
    // forgotten, and the command asks for the passphrase.
    env.set_env("XERO_AUTH_FILE_UNLOCK_TTL", "900");
    env.ok(&["unlock"]);
    assert!(kept_key_id(&env).is_some());
    env.set_env("XERO_AUTH_FILE_UNLOCK_TTL", "0");
    without_passphrase(&mut env);
    assert_asks_for_the_passphrase(&env, "ttl set to 0");
    assert_eq!(kept_key_id(&env), None);

    // Before anything reads the store, what is said at TTL 0 is what the kernel holds.
    KeyCache::new(&secrets_dir(&env), Duration::from_secs(900))
        .put(b"a key kept under a TTL")
        .unwrap();
    let off = KeyCache::new(&secrets_dir(&env), Duration::ZERO);
    let state = off.state();
    assert!(
        matches!(state, CacheState::KeptWhileOff(Some(_))),
        "{state:?}"
    );
    assert!(state.describe().contains("still in the kernel"));
    assert!(off.get().is_none());
    assert_eq!(kept_key_id(&env), None);
    assert_eq!(off.state(), CacheState::Off);
}

#[test]
fn a_key_kept_for_another_store_is_never_used() {
    keyring_or_skip!();
    let fake = FakeXero::start();
    let (mut a, _) = stored_profile(&fake, "unlock-a", "900", Duration::from_secs(60));
    assert!(kept_key_id(&a).is_some());

    // A second data folder with another passphrase: A's key does not open it.
    let mut b = unlock_env(&fake, "unlock-b", "0");
    b.set_env("XERO_AUTH_PASSPHRASE", "another-Passphrase-9");
    b.set_client(&fake);
    b.import_fresh(&fake, Duration::from_secs(60));
    b.set_env("XERO_AUTH_FILE_UNLOCK_TTL", "900");
    without_passphrase(&mut b);
    assert_asks_for_the_passphrase(&b, "another folder");

    // A's folder made again with another passphrase, its key not kept (a TTL of 0 forgets the
    // old one too), and the old store's key put back under the folder's name: it belongs to
    // the old store, is not used, and is forgotten.
    let old_key = KeyCache::new(&secrets_dir(&a), Duration::from_secs(900))
        .get()
        .expect("the old store's key is kept");
    std::fs::remove_dir_all(secrets_dir(&a)).unwrap();
    a.set_env("XERO_AUTH_FILE_UNLOCK_TTL", "0");
    a.set_env("XERO_AUTH_PASSPHRASE", "a-New-passphrase-4");
    a.set_client(&fake);
    a.import_fresh(&fake, Duration::from_secs(60));
    KeyCache::new(&secrets_dir(&a), Duration::from_secs(900))
        .put(&old_key)
        .unwrap();
    assert!(
        kept_key_id(&a).is_some(),
        "the old store's key is kept again"
    );
    a.set_env("XERO_AUTH_FILE_UNLOCK_TTL", "900");
    without_passphrase(&mut a);
    assert_asks_for_the_passphrase(&a, "a folder made again");
    assert_eq!(kept_key_id(&a), None, "the old store's key was forgotten");
}

#[test]
fn the_key_is_in_the_kernel_for_its_possessor_alone_and_in_no_file() {
    keyring_or_skip!();
    if keyctl(&["--version"]).is_none() {
        assert!(
            std::env::var_os("XERO_AUTH_TEST_REQUIRE_KEYCHAIN").is_none(),
            "keyctl (package keyutils) is missing; scripts/test installs it"
        );
        eprintln!("skipped: keyctl (package keyutils) is not installed");
        return;
    }
    let fake = FakeXero::start();
    let (env, _) = stored_profile(&fake, "unlock-kernel", "900", Duration::from_secs(60));
    let id = kept_key_id(&env).expect("the key is kept");
    // "user;UID;GID;PERM;DESCRIPTION": the possessor may do all, the user only see it.
    let described = keyctl(&["rdescribe", &id]).unwrap();
    let fields: Vec<&str> = described.splitn(5, ';').collect();
    assert_eq!(fields[0], "user", "{described}");
    assert_eq!(fields[3], "3f010000", "{described}");
    assert_eq!(fields[4], cache_of(&env).description());

    // It is the store's key: the identity whose recipient the store's files are encrypted to.
    let identity = keyctl(&["pipe", &id]).unwrap();
    assert!(
        identity.starts_with("AGE-SECRET-KEY-1"),
        "not an age identity"
    );
    let recipient = std::fs::read_to_string(secrets_dir(&env).join(".store-recipient")).unwrap();
    let parsed: age::x25519::Identity = identity.parse().unwrap();
    assert_eq!(parsed.to_public().to_string(), recipient.trim());

    // Never in any file of the test's home, config, state, data or cache folders.
    assert_eq!(
        files_containing(env.dir.path(), &identity),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(env.dir.path(), PASSPHRASE),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn sixteen_tokens_at_once_after_unlock_make_one_refresh() {
    keyring_or_skip!();
    let fake = FakeXero::start();
    let (mut env, _) = stored_profile(&fake, "unlock-storm", "900", DAY);
    without_passphrase(&mut env);
    let children: Vec<_> = (0..16)
        .map(|_| Running::spawn(env.std_cmd(&["token"])))
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.finish(Duration::from_secs(60)))
        .collect();
    let tokens: std::collections::BTreeSet<String> = outs
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{}", stderr_text(o));
            stdout_text(o).trim().to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "every process got the same token");
    assert_eq!(fake.count(Counter::Refresh), 1);
}

/// Rewrites every file of `env`'s store as stores wrote them before they had a key (each
/// encrypted to the passphrase itself), and removes the key files.
fn make_legacy(env: &TestEnv) {
    let root = secrets_dir(env);
    let reader = FileStore::new(
        root.clone(),
        10,
        Box::new(|_| Ok(SecretString::from(PASSPHRASE))),
    );
    for kind in ["token-set", "client-secret"] {
        let plain = reader
            .get(&format!("{}/{kind}", env.profile))
            .unwrap()
            .unwrap();
        let mut recipient = age::scrypt::Recipient::new(SecretString::from(PASSPHRASE));
        recipient.set_work_factor(10);
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut sealed = Vec::new();
        let mut writer = encryptor.wrap_output(&mut sealed).unwrap();
        std::io::Write::write_all(&mut writer, &plain).unwrap();
        writer.finish().unwrap();
        std::fs::write(root.join(&env.profile).join(format!("{kind}.age")), sealed).unwrap();
    }
    std::fs::remove_file(root.join(".store-identity.age")).unwrap();
    std::fs::remove_file(root.join(".store-recipient")).unwrap();
}

fn is_legacy(env: &TestEnv, kind: &str) -> bool {
    let sealed = std::fs::read(
        secrets_dir(env)
            .join(&env.profile)
            .join(format!("{kind}.age")),
    )
    .unwrap();
    sealed.starts_with(b"age-encryption.org/v1\n-> scrypt ")
}

#[test]
fn an_older_store_is_upgraded_by_a_write_and_survives_a_crash_at_every_point() {
    keyring_or_skip!();
    let fake = FakeXero::start();
    for point in [
        "file-store-recipient-written",
        "file-store-key-written",
        "file-store-file-upgraded",
        "file-store-written",
    ] {
        let (env, _) = stored_profile(&fake, "unlock-upgrade", "0", DAY);
        make_legacy(&env);
        assert!(is_legacy(&env, "token-set") && is_legacy(&env, "client-secret"));
        // Read as it is.
        let valid_before = fake.count(Counter::Refresh);
        env.ok(&["status"]);

        // The refresh's write upgrades the store; a crash at `point` on the way.
        run_to_crash(env.std_cmd(&["refresh"]), point);
        // Whatever the crash left, the store opens and recovers (grace window) with the
        // passphrase, and the next write completes the upgrade.
        let token = stdout_text(&env.ok(&["token"])).trim().to_string();
        assert!(fake.access_token_valid(&token), "{point}");
        assert!(fake.count(Counter::Refresh) > valid_before, "{point}");
        env.ok(&["refresh"]);
        assert!(!is_legacy(&env, "token-set"), "{point}");
        assert!(!is_legacy(&env, "client-secret"), "{point}");
        assert!(
            secrets_dir(&env).join(".store-identity.age").exists(),
            "{point}"
        );
        assert!(fake.access_token_valid(stdout_text(&env.ok(&["token"])).trim()));
    }
}

#[test]
fn a_new_passphrase_from_a_file_rewrites_the_key_file_alone() {
    keyring_or_skip!();
    let fake = FakeXero::start();
    let (mut env, _) = stored_profile(&fake, "unlock-pass", "0", Duration::from_secs(60));
    let token_file = secrets_dir(&env).join(&env.profile).join("token-set.age");
    let before = std::fs::read(&token_file).unwrap();

    // No terminal and no file: says how to give it, changes nothing.
    let err = stderr_text(
        &env.cmd(&["store", "passphrase"])
            .assert()
            .code(1)
            .get_output()
            .clone(),
    );
    assert!(err.contains("--new-passphrase-file"), "{err}");

    let new_file = env.dir.path().join("new-passphrase");
    std::fs::write(&new_file, "Brand-new-passphrase-62\n").unwrap();
    std::fs::set_permissions(
        &new_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // A wrong current passphrase changes nothing.
    env.set_env("XERO_AUTH_PASSPHRASE", "not-the-passphrase");
    let err = stderr_text(
        &env.cmd(&[
            "store",
            "passphrase",
            "--new-passphrase-file",
            new_file.to_str().unwrap(),
        ])
        .assert()
        .code(5)
        .get_output()
        .clone(),
    );
    assert!(err.contains("passphrase does not open"), "{err}");

    env.set_env("XERO_AUTH_PASSPHRASE", PASSPHRASE);
    env.ok(&[
        "store",
        "passphrase",
        "--new-passphrase-file",
        new_file.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&token_file).unwrap(),
        before,
        "the secrets' files are untouched"
    );
    env.cmd(&["token"]).assert().code(5);
    env.set_env("XERO_AUTH_PASSPHRASE", "Brand-new-passphrase-62");
    assert!(fake.access_token_valid(stdout_text(&env.ok(&["token"])).trim()));
}

/// Changing the passphrase of a store written by an earlier version re-encrypts its files to
/// the store's key first: none is left that only the old passphrase opens.
#[test]
fn a_new_passphrase_for_an_older_store_leaves_no_file_on_the_old_one() {
    keyring_or_skip!();
    let fake = FakeXero::start();
    let (mut env, _) = stored_profile(&fake, "unlock-pass-old", "0", Duration::from_secs(60));
    make_legacy(&env);
    let new_file = env.dir.path().join("new-passphrase");
    std::fs::write(&new_file, "Another-new-passphrase-17\n").unwrap();
    std::fs::set_permissions(
        &new_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    env.ok(&[
        "store",
        "passphrase",
        "--new-passphrase-file",
        new_file.to_str().unwrap(),
    ]);
    assert!(!is_legacy(&env, "token-set") && !is_legacy(&env, "client-secret"));
    env.set_env("XERO_AUTH_PASSPHRASE", "Another-new-passphrase-17");
    assert!(fake.access_token_valid(stdout_text(&env.ok(&["token"])).trim()));
    env.ok(&["refresh"]);
}

/// The timeout column of `/proc/keys` for the key whose decimal id `keyctl` printed: `perm`
/// for a key that never expires.
fn proc_keys_timeout(id: &str) -> String {
    let hex = format!("{:08x}", id.parse::<u32>().expect("a key id"));
    let keys = std::fs::read_to_string("/proc/keys").expect("/proc/keys");
    let line = keys
        .lines()
        .find(|l| l.starts_with(&hex))
        .unwrap_or_else(|| panic!("key {hex} is not in /proc/keys:\n{keys}"));
    line.split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string()
}

/// A process killed while it gives the key to the kernel leaves no key in the user's keyrings
/// without its timeout and permissions: the key is built in a keyring of that process alone,
/// which dies with it, and linked where other commands find it only once it is settled.
#[test]
fn a_crash_while_keeping_the_key_leaves_no_key_without_its_timeout() {
    keyring_or_skip!();
    require_failpoints!();
    if keyctl(&["--version"]).is_none() {
        assert!(
            std::env::var_os("XERO_AUTH_TEST_REQUIRE_KEYCHAIN").is_none(),
            "keyctl (package keyutils) is missing; scripts/test installs it"
        );
        eprintln!("skipped: keyctl (package keyutils) is not installed");
        return;
    }
    let fake = FakeXero::start();
    let (env, _) = stored_profile(&fake, "unlock-crash", "900", Duration::from_secs(60));
    for point in ["kernel-key-added", "kernel-key-settled"] {
        env.ok(&["lock"]);
        assert_eq!(kept_key_id(&env), None, "{point}: locked first");
        run_to_crash(env.std_cmd(&["unlock"]), point);
        if let Some(id) = kept_key_id(&env) {
            let timeout = proc_keys_timeout(&id);
            assert_ne!(timeout, "perm", "{point}: a key is kept with no expiry");
            let described = keyctl(&["rdescribe", &id]).unwrap_or_default();
            assert_eq!(
                described.split(';').nth(3),
                Some("3f010000"),
                "{point}: {described}"
            );
        }
    }
    // Nothing was lost: unlocking again keeps the key, with its timeout.
    env.ok(&["unlock"]);
    let id = kept_key_id(&env).expect("the key is kept");
    assert_ne!(proc_keys_timeout(&id), "perm");
}
