//! `xero-auth store move --to STORE`: a profile's token set and client secret moved between the
//! Secret Service and the encrypted-file store, both ways, through the real binary. A process
//! crashed at every step of the move (`std::process::abort()`, see src/failpoints.rs) leaves a
//! profile that still gives a token, from one store or the other, and running the command again
//! finishes the move with nothing lost. No secret reaches the output.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use support::processes::*;
use support::*;
use xero_auth::config::StoreKind;
use xero_auth::secret::SecretString;
use xero_auth::store::{
    FileStore, Keychain, SecretStore, access_token_part_account, client_secret_account,
    token_set_account,
};

const PASSPHRASE: &str = "quiet-Heron-58-harbour";
const DAY: Duration = Duration::from_secs(86_400);
const KEYCHAIN: &str = "secret-service";
const FILE: &str = "file";

/// Every crash point of a move, in the order the move passes them.
const POINTS: [&str; 6] = [
    "store-move-noted",
    "store-move-copied",
    "store-move-verified",
    "store-move-switched",
    "store-move-token-set-deleted",
    "store-move-source-deleted",
];

/// Where `point` is in [`POINTS`]: from 3 on, config.toml names the destination.
fn step(point: &str) -> usize {
    POINTS
        .iter()
        .position(|p| *p == point)
        .expect("a point of the move")
}

/// A test environment where the file store opens with `PASSPHRASE`; which store the profile
/// uses is config.toml's `store`, as a move leaves it (no XERO_AUTH_STORE).
fn move_env(fake: &FakeXero, name: &str) -> TestEnv {
    let mut env = TestEnv::new(fake, name);
    env.set_env("XERO_AUTH_PASSPHRASE", PASSPHRASE);
    env.set_env("XERO_AUTH_FILE_WORK_FACTOR", "10");
    env
}

/// A profile on `store` with the app's client secret and a day-old token file imported (so the
/// next `token` refreshes, rotating the refresh token).
fn profile_on(fake: &FakeXero, name: &str, store: &str) -> (TestEnv, IssuedTokens) {
    let env = move_env(fake, name);
    env.ok(&["config", "set", "store", store]);
    env.set_client(fake);
    let tokens = env.import_fresh(fake, DAY);
    (env, tokens)
}

fn file_store(env: &TestEnv) -> FileStore {
    FileStore::new(
        env.dir.path().join("data/xero-auth/secrets"),
        10,
        Box::new(|_| Ok(SecretString::from(PASSPHRASE))),
    )
}

/// The raw secret `account` of the profile in `store`, read by the library as another program
/// would.
fn raw(env: &TestEnv, store: &str, kind: &str) -> Option<Vec<u8>> {
    let account = format!("{}/{kind}", env.profile);
    let read = match store {
        FILE => file_store(env).get(&account),
        _ => Keychain::new(StoreKind::SecretService).get(&account),
    };
    read.expect("the store is readable").map(|z| z.to_vec())
}

/// The refresh token `store` holds for the profile, if it holds a token set.
fn refresh_token_in(env: &TestEnv, store: &str) -> Option<String> {
    raw(env, store, "token-set").map(|bytes| {
        let set: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        set["refresh_token"].as_str().unwrap().to_string()
    })
}

/// config.toml's `store` for the profile.
fn configured_store(env: &TestEnv) -> String {
    stdout_text(&env.ok(&["config", "get", "store"]))
        .trim()
        .to_string()
}

fn note(env: &TestEnv) -> PathBuf {
    env.dir
        .path()
        .join("state/xero-auth/moves")
        .join(format!("{}.json", env.profile))
}

/// `token` gives an access token the fake accepts. Returns it.
fn assert_token_works(env: &TestEnv, fake: &FakeXero) -> String {
    let token = stdout_text(&env.ok(&["token"])).trim().to_string();
    assert!(fake.access_token_valid(&token), "a valid access token");
    token
}

/// The move is complete: `to` holds the client secret and a refresh token the fake accepts,
/// `from` holds nothing of the profile, config.toml names `to`, no note is left, and `status`
/// names the store.
fn assert_moved(env: &TestEnv, fake: &FakeXero, from: &str, to: &str) {
    let refresh_token = refresh_token_in(env, to).expect("the destination holds the token set");
    assert_eq!(
        fake.refresh_token_status(&refresh_token),
        RefreshTokenStatus::Active,
        "the moved refresh token is the live one"
    );
    assert_eq!(
        raw(env, to, "client-secret").as_deref(),
        Some(CLIENT_SECRET.as_bytes())
    );
    assert_eq!(
        raw(env, from, "token-set"),
        None,
        "the source's set is gone"
    );
    assert_eq!(
        raw(env, from, "client-secret"),
        None,
        "the source's secret is gone"
    );
    assert_eq!(configured_store(env), to);
    assert!(!note(env).exists(), "the note of the move is removed");
    let status = stdout_text(&env.ok(&["status"]));
    assert!(!status.contains("unfinished"), "{status}");
    let shown = match to {
        FILE => "encrypted files in",
        _ => "Secret Service",
    };
    assert!(status.contains(shown), "{status}");
}

/// Runs `xero-auth ARGS`, which must end with `code` and print no secret; returns its stderr.
fn refused(env: &TestEnv, fake: &FakeXero, args: &[&str], code: i32) -> String {
    let out = env.cmd(args).assert().code(code).get_output().clone();
    assert_no_secret_in(fake, &out);
    stderr_text(&out)
}

/// Neither output holds any secret the test knows of.
fn assert_no_secret_in(fake: &FakeXero, out: &std::process::Output) {
    let printed = format!("{}{}", stdout_text(out), stderr_text(out));
    assert!(
        !printed.contains("   "),
        "a message with a run of spaces:\n{printed}"
    );
    for secret in every_issued_secret(fake)
        .into_iter()
        .chain([CLIENT_SECRET.to_string(), PASSPHRASE.to_string()])
    {
        assert!(
            !printed.contains(&secret),
            "a secret in the output:\n{printed}"
        );
    }
}

#[test]
fn a_profile_moves_from_the_keychain_to_the_file_store_and_back_without_a_secret_in_the_output() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, imported) = profile_on(&fake, "sm-round", KEYCHAIN);

    let out = env.ok(&["store", "move", "--to", FILE, "-vvv"]);
    assert_no_secret_in(&fake, &out);
    assert!(stdout_text(&out).is_empty(), "no data on stdout");
    let said = stderr_text(&out);
    assert!(
        said.contains("moved the token set and client secret") && said.contains("store = \"file\""),
        "{said}"
    );
    assert_eq!(
        refresh_token_in(&env, FILE).as_deref(),
        Some(imported.refresh_token.as_str())
    );
    assert_eq!(
        env.secret_tool_lookup(&token_set_account(&env.profile)),
        None
    );
    assert_eq!(
        env.secret_tool_lookup(&client_secret_account(&env.profile)),
        None
    );
    assert_moved(&env, &fake, KEYCHAIN, FILE);

    // It works from there: the day-old access token is refreshed, in the file store.
    assert_token_works(&env, &fake);
    assert_eq!(fake.count(Counter::Refresh), 1);
    assert_moved(&env, &fake, KEYCHAIN, FILE);

    let back = env.ok(&["store", "move", "--to", KEYCHAIN]);
    assert_no_secret_in(&fake, &back);
    assert_moved(&env, &fake, FILE, KEYCHAIN);
    assert_token_works(&env, &fake);
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "the moved access token is used"
    );
}

#[test]
fn a_set_split_over_several_entries_moves_whole_and_leaves_no_part_behind() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    fake.set_access_token_len(Some(2600));
    let mut env = move_env(&fake, "sm-split");
    // Credential Manager's limit, played by the Secret Service and the file store alike.
    env.set_env("XERO_AUTH_TEST_ENTRY_LIMIT", "2560");
    env.ok(&["config", "set", "store", KEYCHAIN]);
    env.set_client(&fake);
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, Duration::from_secs(60));
    env.ok(&["import", file.to_str().unwrap()]);
    let part = |store: &str, i| raw(&env, store, &format!("access-token/{i}"));
    assert!(part(KEYCHAIN, 1).is_some(), "the access token is in parts");

    env.ok(&["store", "move", "--to", FILE]);
    assert_moved(&env, &fake, KEYCHAIN, FILE);
    for i in 0..4 {
        assert_eq!(part(KEYCHAIN, i), None, "part {i} left in the keychain");
    }
    assert!(part(FILE, 1).is_some());
    // The access token came along whole: served without a refresh.
    assert_eq!(assert_token_works(&env, &fake), tokens.access_token);
    assert_eq!(fake.count(Counter::Refresh), 0);

    env.ok(&["store", "move", "--to", KEYCHAIN]);
    assert_moved(&env, &fake, FILE, KEYCHAIN);
    assert_eq!(part(FILE, 0), None);
    assert_eq!(assert_token_works(&env, &fake), tokens.access_token);
    for i in 0..4 {
        let _ = Keychain::new(StoreKind::SecretService)
            .delete(&access_token_part_account(&env.profile, i));
    }
}

#[test]
fn a_move_is_refused_with_a_reason_when_there_is_nothing_to_move_or_it_would_lose_something() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, imported) = profile_on(&fake, "sm-refuse", KEYCHAIN);

    // Already there.
    let said = refused(&env, &fake, &["store", "move", "--to", KEYCHAIN], 1);
    assert!(
        said.contains("already keeps its secrets in secret-service"),
        "{said}"
    );

    // Into the store config.toml names already, from one named for this run only: a second
    // run could not tell whether config.toml had been switched.
    let said = refused(
        &env,
        &fake,
        &["--store", FILE, "store", "move", "--to", KEYCHAIN],
        1,
    );
    assert!(said.contains("config set store file"), "{said}");
    assert!(!note(&env).exists());

    // The file store already holds another token set for the profile: kept, unless --force.
    let other = fake.issue_tokens(CLIENT_ID, SCOPE);
    let other_file = env.write_token_file(&other, Duration::from_secs(60));
    env.ok(&["import", "--store", FILE, other_file.to_str().unwrap()]);
    let said = refused(&env, &fake, &["store", "move", "--to", FILE], 1);
    assert!(
        said.contains("already holds a token set") && said.contains("--force"),
        "{said}"
    );
    assert_eq!(
        refresh_token_in(&env, FILE).as_deref(),
        Some(other.refresh_token.as_str())
    );
    assert_eq!(
        refresh_token_in(&env, KEYCHAIN).as_deref(),
        Some(imported.refresh_token.as_str())
    );
    assert_eq!(configured_store(&env), KEYCHAIN);
    assert!(!note(&env).exists());

    let forced = env.ok(&["store", "move", "--to", FILE, "--force"]);
    assert_no_secret_in(&fake, &forced);
    assert_moved(&env, &fake, KEYCHAIN, FILE);
    assert_eq!(
        refresh_token_in(&env, FILE).as_deref(),
        Some(imported.refresh_token.as_str())
    );

    // Nothing stored: exit 3, and nothing changes.
    env.ok(&["logout", "--keep-remote"]);
    env.ok(&["client", "remove"]);
    let said = refused(&env, &fake, &["store", "move", "--to", KEYCHAIN], 3);
    assert!(said.contains("holds nothing to move"), "{said}");
    assert_eq!(configured_store(&env), FILE);
}

/// Crashes `store move --to TO` of a profile on `from` at `point`; then the profile still gives
/// a valid token (refreshing, since its access token is a day old: the set rotates in whichever
/// store the profile uses now); a move to another store is refused until this one is finished;
/// and running the same move again finishes it with the live refresh token in `to`.
fn crash_and_finish(name: &str, from: &str, to: &str, point: &str) {
    let fake = FakeXero::start();
    let (env, _) = profile_on(&fake, name, from);

    let crashed = run_to_crash(env.std_cmd(&["store", "move", "--to", to]), point);
    assert_no_secret_in(&fake, &crashed);
    assert!(note(&env).exists(), "{point}: the note of the move is left");

    assert_token_works(&env, &fake);
    assert_eq!(fake.count(Counter::Refresh), 1, "{point}");
    // `status` says where the profile is now, and that the move is unfinished.
    let status = stdout_text(&env.ok(&["status"]));
    let now_in = match (step(point) >= 3, to) {
        (true, FILE) | (false, KEYCHAIN) => "encrypted files in",
        _ => "Secret Service",
    };
    assert!(
        status.contains(now_in)
            && status.contains("was cut short")
            && status.contains(&format!("store move --to {to}")),
        "{point}: {status}"
    );

    let said = refused(&env, &fake, &["store", "move", "--to", "keyutils"], 1);
    assert!(said.contains("was cut short"), "{point}: {said}");
    // Before the switch the move may be given up with --abort; after it, it is finished.
    assert_eq!(
        said.contains("store move --abort"),
        step(point) < 3,
        "{point}: {said}"
    );

    let finished = env.ok(&["store", "move", "--to", to]);
    assert_no_secret_in(&fake, &finished);
    assert_moved(&env, &fake, from, to);
    assert_token_works(&env, &fake);
    assert_eq!(fake.count(Counter::Refresh), 1, "{point}: nothing was lost");
}

#[test]
fn a_move_to_the_file_store_crashed_at_any_step_keeps_working_and_a_rerun_finishes_it() {
    require_keychain!();
    require_failpoints!();
    for (i, point) in POINTS.iter().enumerate() {
        crash_and_finish(&format!("sm-crash-kf{i}"), KEYCHAIN, FILE, point);
    }
}

#[test]
fn a_move_to_the_keychain_crashed_at_any_step_keeps_working_and_a_rerun_finishes_it() {
    require_keychain!();
    require_failpoints!();
    for (i, point) in POINTS.iter().enumerate() {
        crash_and_finish(&format!("sm-crash-fk{i}"), FILE, KEYCHAIN, point);
    }
}

#[test]
fn a_move_cut_short_is_not_finished_after_config_toml_was_set_to_a_third_store() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    let (env, imported) = profile_on(&fake, "sm-third", KEYCHAIN);
    run_to_crash(
        env.std_cmd(&["store", "move", "--to", FILE]),
        "store-move-copied",
    );
    env.ok(&["config", "set", "store", "keyutils"]);

    let said = refused(&env, &fake, &["store", "move", "--to", FILE], 1);
    assert!(
        said.contains("neither of the two") && said.contains("status --store secret-service"),
        "{said}"
    );
    assert_eq!(
        refresh_token_in(&env, KEYCHAIN).as_deref(),
        Some(imported.refresh_token.as_str()),
        "nothing was deleted"
    );

    env.ok(&["config", "set", "store", KEYCHAIN]);
    env.ok(&["store", "move", "--to", FILE]);
    assert_moved(&env, &fake, KEYCHAIN, FILE);
}

/// Writes into `store` a token set for the profile as another machine sharing that store would
/// after a refresh: another refresh token, obtained a minute later than the one there.
fn refreshed_elsewhere(env: &TestEnv, fake: &FakeXero, store: &str) -> String {
    let mut set: serde_json::Value =
        serde_json::from_slice(&raw(env, store, "token-set").unwrap()).unwrap();
    let newer = fake.issue_tokens(CLIENT_ID, SCOPE);
    set["refresh_token"] = serde_json::Value::from(newer.refresh_token.as_str());
    set["obtained_at"] = serde_json::Value::from(set["obtained_at"].as_i64().unwrap() + 60);
    let bytes = serde_json::to_vec(&set).unwrap();
    let account = token_set_account(&env.profile);
    match store {
        FILE => file_store(env).set(&account, "t", &bytes),
        _ => Keychain::new(StoreKind::SecretService).set(&account, "t", &bytes),
    }
    .unwrap();
    newer.refresh_token
}

/// A move's second run deletes the source only while it holds what was moved (or older): a set
/// refreshed there after the switch, by a machine still using it, is kept.
#[test]
fn a_source_refreshed_after_the_switch_is_not_deleted_by_a_second_run() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    let (env, _) = profile_on(&fake, "sm-newer-source", KEYCHAIN);
    run_to_crash(
        env.std_cmd(&["store", "move", "--to", FILE]),
        "store-move-switched",
    );
    let newer = refreshed_elsewhere(&env, &fake, KEYCHAIN);
    let said = refused(&env, &fake, &["store", "move", "--to", FILE], 1);
    assert!(
        said.contains("holds other secrets") && said.contains("nothing was deleted"),
        "{said}"
    );
    assert_eq!(
        refresh_token_in(&env, KEYCHAIN).as_deref(),
        Some(newer.as_str())
    );
}

/// A second run of a move cut short after the copy does not overwrite a set refreshed in the
/// destination since (by a machine sharing it), unless told to with --force.
#[test]
fn a_copy_refreshed_in_the_destination_is_not_overwritten_by_a_second_run() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    let (env, imported) = profile_on(&fake, "sm-newer-dest", KEYCHAIN);
    run_to_crash(
        env.std_cmd(&["store", "move", "--to", FILE]),
        "store-move-copied",
    );
    let newer = refreshed_elsewhere(&env, &fake, FILE);
    let said = refused(&env, &fake, &["store", "move", "--to", FILE], 1);
    assert!(said.contains("already holds"), "{said}");
    assert_eq!(
        refresh_token_in(&env, FILE).as_deref(),
        Some(newer.as_str())
    );
    assert_eq!(
        refresh_token_in(&env, KEYCHAIN).as_deref(),
        Some(imported.refresh_token.as_str())
    );
    env.ok(&["store", "move", "--to", FILE, "--force"]);
    assert_eq!(
        refresh_token_in(&env, FILE).as_deref(),
        Some(imported.refresh_token.as_str())
    );
}

/// A move the destination refuses before anything is copied (the file store with no passphrase
/// to be had) has not begun: no note is left, and the next move, to any store, is not refused
/// for one.
#[test]
fn a_move_refused_before_anything_is_copied_leaves_no_note() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, imported) = profile_on(&fake, "sm-no-note", KEYCHAIN);
    env.set_env("XERO_AUTH_PASSPHRASE", "");

    let said = refused(&env, &fake, &["store", "move", "--to", FILE], 5);
    assert!(
        said.contains("passphrase") && said.contains("nothing was deleted"),
        "{said}"
    );
    assert!(
        !note(&env).exists(),
        "a move that never began leaves no note"
    );
    assert_eq!(configured_store(&env), KEYCHAIN);
    assert_eq!(
        refresh_token_in(&env, KEYCHAIN).as_deref(),
        Some(imported.refresh_token.as_str())
    );
    let status = stdout_text(&env.ok(&["status"]));
    assert!(!status.contains("unfinished"), "{status}");

    env.set_env("XERO_AUTH_PASSPHRASE", PASSPHRASE);
    env.ok(&["store", "move", "--to", FILE]);
    assert_moved(&env, &fake, KEYCHAIN, FILE);
}

/// `store move --abort` gives up a move cut short: it removes the note and says so, copies and
/// deletes nothing (the destination's copy stays), and the profile goes on from the store
/// config.toml names. With no move to give up it says so and changes nothing.
#[test]
fn abort_gives_up_a_move_cut_short_and_deletes_nothing() {
    require_keychain!();
    require_failpoints!();
    let fake = FakeXero::start();
    let (env, imported) = profile_on(&fake, "sm-abort", KEYCHAIN);

    let said = stderr_text(&env.ok(&["store", "move", "--abort"]));
    assert!(said.contains("nothing to give up"), "{said}");

    // Cut short before the switch: the profile is whole in the keychain.
    run_to_crash(
        env.std_cmd(&["store", "move", "--to", FILE]),
        "store-move-copied",
    );
    assert!(note(&env).exists());
    let out = env.ok(&["store", "move", "--abort"]);
    assert_no_secret_in(&fake, &out);
    let said = stderr_text(&out);
    assert!(
        said.contains("gave up the move")
            && said.contains("changed no store")
            && said.contains("uses secret-service")
            && said.contains("status --store file"),
        "{said}"
    );
    assert!(!note(&env).exists(), "the note is removed");
    assert_eq!(configured_store(&env), KEYCHAIN);
    assert_eq!(
        refresh_token_in(&env, FILE).as_deref(),
        Some(imported.refresh_token.as_str()),
        "the destination's copy is not deleted unasked"
    );
    let status = stdout_text(&env.ok(&["status"]));
    assert!(!status.contains("unfinished"), "{status}");
    assert_token_works(&env, &fake);

    // Cut short after the switch: the profile goes on from the file store, and the keychain's
    // old entries stay.
    env.ok(&["store", "move", "--to", FILE, "--force"]);
    run_to_crash(
        env.std_cmd(&["store", "move", "--to", KEYCHAIN]),
        "store-move-switched",
    );
    let said = stderr_text(&env.ok(&["store", "move", "--abort"]));
    assert!(
        said.contains("uses secret-service") && said.contains("old entries in file"),
        "{said}"
    );
    assert!(!note(&env).exists());
    assert_eq!(configured_store(&env), KEYCHAIN);
    assert!(
        refresh_token_in(&env, FILE).is_some(),
        "nothing was deleted"
    );
    assert_token_works(&env, &fake);
}
