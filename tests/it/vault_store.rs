//! The vault store against a real OpenBao server (`bao server -dev` on 127.0.0.1): the commands
//! on it, three machines (three homes: separate configs, state folders and local locks) sharing
//! one profile through it with one refresh per expiry, a lease holder crashing mid-refresh, the
//! server's faults, and check-and-set refusing a stale write.

use crate::support;

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::openbao::{OpenBao, ROOT_TOKEN};
use support::processes::*;
use support::*;

/// Processes per machine in a storm.
const PER_MACHINE: usize = 16;
/// Machines sharing the profile.
const MACHINES: usize = 3;
/// Xero's grace window for a used refresh token, and a little more.
const PAST_GRACE: Duration = Duration::from_secs(31 * 60);

/// The policy a person or runner needs: exactly the profile folder's entries (docs/teams.md).
const POLICY: &str = r#"
path "secret/data/xero-auth/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/xero-auth/*" { capabilities = ["delete"] }
"#;

/// A policy that can read but not write.
const READ_ONLY: &str = r#"
path "secret/data/xero-auth/*" { capabilities = ["read"] }
"#;

macro_rules! require_failpoints {
    () => {
        if !cfg!(feature = "failpoints") {
            eprintln!("skipped: needs --features failpoints");
            return;
        }
    };
}

/// One machine: its own home, config, state and locks, the vault store at `bao` with `token`,
/// the shared profile `profile`.
fn machine(fake: &FakeXero, bao: &OpenBao, profile: &str, index: usize, token: &str) -> TestEnv {
    let mut env = TestEnv::new(fake, &format!("{profile}-m{index}"));
    env.profile = profile.to_string();
    env.set_env("XERO_AUTH_STORE", "vault");
    env.set_env("XERO_AUTH_VAULT_ADDR", &bao.addr);
    env.set_env("VAULT_TOKEN", token);
    env.set_env("XERO_AUTH_VAULT_LEASE_TTL", "3");
    // A lease left by a holder that ended with a refresh out lasts http_timeout + 3 ×
    // store_timeout + 10 s: a short store timeout keeps the crash tests' wait short.
    env.set_env("XERO_AUTH_STORE_TIMEOUT", "2");
    env
}

/// Three machines on one fresh server; the first has the app and an imported day-old token file
/// (expired access token), which all three see.
fn three_machines(fake: &FakeXero, bao: &OpenBao, name: &str) -> (Vec<TestEnv>, IssuedTokens) {
    let profile = format!("v-{name}-{}", std::process::id());
    let machines: Vec<TestEnv> = (0..MACHINES)
        .map(|i| machine(fake, bao, &profile, i, ROOT_TOKEN))
        .collect();
    machines[0].set_client(fake);
    let tokens = machines[0].import_fresh(fake, Duration::from_secs(86_400));
    for m in &machines[1..] {
        m.cmd(&["config", "set", "client_id", CLIENT_ID])
            .assert()
            .success();
    }
    (machines, tokens)
}

/// The token set as stored in OpenBao (read through its API as root), and its version.
fn stored_set(bao: &OpenBao, profile: &str) -> (Value, u64) {
    let (text, version) = bao
        .kv_get(&format!("xero-auth/{profile}/token-set"))
        .expect("a token set in OpenBao");
    (serde_json::from_str(&text).unwrap(), version)
}

/// Rewrites the stored set's access-token expiry to a minute ago, straight in OpenBao, as time
/// passing would.
fn expire_stored(bao: &OpenBao, profile: &str) {
    let (mut set, version) = stored_set(bao, profile);
    set["expires_at"] = Value::from(now() - 60);
    let (status, body) = bao.kv_put(
        &format!("xero-auth/{profile}/token-set"),
        &set.to_string(),
        Some(version),
    );
    assert_eq!(status, 200, "{body}");
}

/// Runs `PER_MACHINE` processes of `kinds` (round robin) on every machine at once. With `gate`,
/// the test holds the profile's refresh lease while they start, and frees it once they have had
/// time to read the (expired) set and queue: all of them then race at the same moment, the worst
/// case, independent of how the scheduler happened to start them.
fn storm(
    machines: &[TestEnv],
    kinds: &[&[&str]],
    gate: Option<&OpenBao>,
) -> Vec<(&'static str, Output)> {
    let lease = format!("xero-auth/{}/refresh-lease", machines[0].profile);
    let hold = |state: &str| {
        let bao = gate.unwrap();
        let version = bao.kv_version(&lease);
        let fields = serde_json::json!({"holder": "the test", "state": state, "ttl_secs": 120});
        let (status, body) = bao.kv_put_fields(&lease, fields, Some(version));
        assert_eq!(status, 200, "{body}");
    };
    if gate.is_some() {
        hold("held");
    }
    let running: Vec<(&'static str, Running)> = machines
        .iter()
        .flat_map(|m| (0..PER_MACHINE).map(move |i| (m, i)))
        .map(|(m, i)| {
            let kind = kinds[i % kinds.len()];
            (kind_name(kind), Running::spawn(m.std_cmd(kind)))
        })
        .collect();
    if gate.is_some() {
        std::thread::sleep(Duration::from_secs(5));
        hold("free");
    }
    running
        .into_iter()
        .map(|(kind, r)| (kind, r.finish(Duration::from_secs(120))))
        .collect()
}

/// The command of a storm's process.
fn kind_name(args: &[&str]) -> &'static str {
    match args[0] {
        "token" => "token",
        "refresh" => "refresh",
        "api" => "api",
        _ => "status",
    }
}

#[test]
fn the_commands_work_on_the_vault_store_and_nothing_is_kept_on_local_disk() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (machines, imported) = three_machines(&fake, &bao, "basic");
    let m = &machines[0];
    let profile = &m.profile;

    // The same format as a keychain entry, in field `value`.
    let (set, version) = stored_set(&bao, profile);
    assert_eq!(set["refresh_token"], imported.refresh_token.as_str());
    let (secret, _) = bao
        .kv_get(&format!("xero-auth/{profile}/client-secret"))
        .expect("the client secret in OpenBao");
    assert_eq!(secret, CLIENT_SECRET);

    // Another machine gets a token: one refresh, written back with a new version.
    let out = machines[1].ok(&["token"]);
    let token = stdout_text(&out).trim().to_string();
    assert!(fake.access_token_valid(&token));
    assert_eq!(fake.count(Counter::Refresh), 1);
    let (set, after) = stored_set(&bao, profile);
    assert_eq!(set["access_token"], token.as_str());
    assert!(after > version);

    // A third one sees the cached token: no request.
    assert_eq!(stdout_text(&machines[2].ok(&["token"])).trim(), token);
    let out = machines[2].ok(&["refresh", "--json"]);
    let refreshed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refreshed["by_this_process"], true);
    assert_eq!(fake.count(Counter::Refresh), 2);

    let status = stdout_text(&m.ok(&["status"]));
    assert!(status.contains("vault"), "{status}");

    // Nothing secret in any machine's folders.
    let (set, _) = stored_set(&bao, profile);
    for m in &machines {
        for needle in [
            set["refresh_token"].as_str().unwrap(),
            set["access_token"].as_str().unwrap(),
            CLIENT_SECRET,
            ROOT_TOKEN,
        ] {
            assert!(
                files_containing(m.dir.path(), needle).is_empty(),
                "a secret on local disk"
            );
        }
    }

    // logout deletes the entry, every version of it.
    machines[1].ok(&["logout"]);
    assert!(
        bao.kv_get(&format!("xero-auth/{profile}/token-set"))
            .is_none()
    );
    let (status, _) = bao.api(
        "GET",
        &format!("secret/metadata/xero-auth/{profile}/token-set"),
        None,
    );
    assert_eq!(status, 404, "no old version is left");
    machines[2].cmd(&["token"]).assert().code(3);
}

#[test]
fn approle_signs_in_and_the_token_file_is_used_without_vault_token() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    bao.write_policy("xero-auth", POLICY);
    let (role_id, secret_id) = bao.approle("ci", &["xero-auth"]);
    let (machines, _) = three_machines(&fake, &bao, "approle");

    // A server: AppRole, the secret id from the environment, no VAULT_TOKEN.
    let mut server = machine(&fake, &bao, &machines[0].profile, 7, ROOT_TOKEN);
    server.set_env("VAULT_TOKEN", "");
    server.set_env("XERO_AUTH_VAULT_ROLE_ID", &role_id);
    server.set_env("VAULT_SECRET_ID", &secret_id);
    server
        .cmd(&["config", "set", "client_id", CLIENT_ID])
        .assert()
        .success();
    let token = stdout_text(&server.ok(&["token"])).trim().to_string();
    assert!(fake.access_token_valid(&token));

    // A person: the CLI's token file in their home.
    let mut person = machine(&fake, &bao, &machines[0].profile, 8, "");
    let personal = bao.create_token(&["xero-auth"]);
    std::fs::write(person.home().join(".vault-token"), &personal).unwrap();
    person
        .cmd(&["config", "set", "client_id", CLIENT_ID])
        .assert()
        .success();
    assert_eq!(stdout_text(&person.ok(&["token"])).trim(), token);
    person.set_env("XERO_AUTH_VAULT_ROLE_ID", "");

    // A secret id that is wrong: exit 5, says AppRole refused, never shows the id.
    server.set_env("VAULT_SECRET_ID", "00000000-0000-0000-0000-000000000000");
    let out = server
        .cmd(&["refresh"])
        .assert()
        .code(5)
        .get_output()
        .clone();
    let stderr = stderr_text(&out);
    assert!(stderr.contains("AppRole login"), "{stderr}");
    assert!(!stderr.contains(&secret_id) && !stderr.contains(&role_id));
}

/// 3 machines × 16 processes of `kinds` with the access token expired: one refresh at Xero,
/// every process exits 0, every token printed is the one stored.
fn one_refresh_across_machines(name: &str, kinds: &[&[&str]]) {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (mut machines, _) = three_machines(&fake, &bao, name);
    // 48 processes at once on a busy machine: the crash tests' short store timeout (2 s) is
    // not what this test is about, and a loaded OpenBao can take longer to answer one of them.
    for m in &mut machines {
        m.set_env("XERO_AUTH_STORE_TIMEOUT", "15");
    }
    for m in &machines {
        m.cmd(&["tenants", "use", fake_xero::DEFAULT_TENANT_ID])
            .assert()
            .success();
    }
    // `tenants use` refreshed: expire the access token again.
    expire_stored(&bao, &machines[0].profile);
    let refreshes_before = fake.count(Counter::Refresh);

    let outputs = storm(&machines, kinds, Some(&bao));

    for (_, out) in &outputs {
        assert!(
            out.status.success(),
            "a process failed: {}",
            stderr_text(out)
        );
    }
    assert_eq!(
        fake.count(Counter::Refresh) - refreshes_before,
        1,
        "one refresh for {} processes on {MACHINES} machines",
        outputs.len()
    );
    let (set, _) = stored_set(&bao, &machines[0].profile);
    let stored = set["access_token"].as_str().unwrap();
    assert!(fake.access_token_valid(stored));
    for (kind, out) in &outputs {
        let text = stdout_text(out);
        match *kind {
            "token" => assert_eq!(text.trim(), stored, "every token printed is the stored one"),
            "refresh" => {
                let json: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(json["refreshed"], true, "{text}");
            }
            "api" => assert!(text.contains("Organisations"), "{text}"),
            _ => {}
        }
    }
    assert_eq!(
        fake.count(Counter::Api),
        outputs.iter().filter(|(k, _)| *k == "api").count(),
        "every API call was accepted at once (no 401)"
    );
}

#[test]
fn three_machines_of_token_processes_make_one_refresh() {
    one_refresh_across_machines("storm-token", &[&["token"]]);
}

#[test]
fn three_machines_of_refresh_processes_make_one_refresh() {
    one_refresh_across_machines("storm-refresh", &[&["refresh", "--json"]]);
}

#[test]
fn three_machines_of_api_calls_make_one_refresh() {
    one_refresh_across_machines("storm-api", &[&["api", "api.xro/2.0/Organisation"]]);
}

#[test]
fn three_machines_of_mixed_commands_make_one_refresh() {
    one_refresh_across_machines(
        "storm-mix",
        &[
            &["token"],
            &["refresh", "--json"],
            &["api", "api.xro/2.0/Organisation"],
            &["status"],
        ],
    );
}

/// Machine 0 dies (abort) after Xero rotated the refresh token and before the write: the lease
/// stays with the time of the unsaved refresh in it, until it expires (46 s, see `machine`).
fn crash_a_lease_holder(fake: &FakeXero, bao: &OpenBao, name: &str) -> Vec<TestEnv> {
    let (machines, _) = three_machines(fake, bao, name);
    let out = machines[0]
        .cmd(&["token"])
        .env("FAILPOINTS", "refresh-response-parsed=return")
        .assert()
        .failure()
        .get_output()
        .clone();
    assert!(out.stdout.is_empty());
    assert_eq!(fake.count(Counter::Refresh), 1);
    let lease = bao
        .kv_fields(&format!("xero-auth/{}/refresh-lease", machines[0].profile))
        .expect("the lease is left behind");
    assert_eq!(lease["state"], "held");
    assert!(
        lease["unsaved_refresh_sent_at"].as_i64().is_some(),
        "{lease}"
    );
    machines
}

#[test]
fn a_crashed_lease_holder_is_recovered_by_another_machine_through_the_grace_window() {
    require_failpoints!();
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let machines = crash_a_lease_holder(&fake, &bao, "crash");
    let (before, _) = stored_set(&bao, &machines[0].profile);

    // Another machine waits for the lease to expire (46 s), takes it and refreshes with the
    // stored refresh token, which Xero still accepts.
    let out = machines[1].ok(&["token"]);
    let token = stdout_text(&out).trim().to_string();
    assert!(fake.access_token_valid(&token));
    assert_eq!(fake.count(Counter::Refresh), 2);
    let (after, _) = stored_set(&bao, &machines[0].profile);
    assert_ne!(after["refresh_token"], before["refresh_token"]);
    let lease = bao
        .kv_fields(&format!("xero-auth/{}/refresh-lease", machines[0].profile))
        .unwrap();
    assert_eq!(lease["state"], "free");
    assert!(lease["unsaved_refresh_sent_at"].is_null(), "{lease}");
}

#[test]
fn past_the_grace_window_another_machine_says_what_happened() {
    require_failpoints!();
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let machines = crash_a_lease_holder(&fake, &bao, "grace");
    let (before, _) = stored_set(&bao, &machines[0].profile);
    fake.advance_clock(PAST_GRACE);

    let out = machines[2]
        .cmd(&["token"])
        .assert()
        .code(4)
        .get_output()
        .clone();

    let stderr = stderr_text(&out);
    for expected in [
        "invalid_grant",
        "An earlier xero-auth run sent a refresh at",
        "30 minutes",
        "xero-auth login",
    ] {
        assert!(
            stderr.contains(expected),
            "stderr lacks {expected:?}:\n{stderr}"
        );
    }
    let (after, _) = stored_set(&bao, &machines[0].profile);
    assert_eq!(after, before, "nothing deleted");
}

/// A refresh refused with `invalid_client` spent nothing: the lease is freed without a note of an
/// unsaved refresh, and another machine whose connection is then refused, the secret fixed,
/// fails plainly rather than warning that the stored token "may have reached Xero".
#[test]
fn a_refused_client_leaves_no_note_in_the_lease() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (machines, _) = three_machines(&fake, &bao, "refused-client");
    let rotated = "cs-rotated-at-developer-xero-com-0123456789";
    fake.add_client(CLIENT_ID, Some(rotated));
    let out = machines[0]
        .cmd(&["token"])
        .assert()
        .code(4)
        .get_output()
        .clone();
    assert!(stderr_text(&out).contains("invalid_client"));
    let lease = bao
        .kv_fields(&format!("xero-auth/{}/refresh-lease", machines[0].profile))
        .expect("the lease was taken");
    assert_eq!(lease["state"], "free", "{lease}");
    assert!(lease["unsaved_refresh_sent_at"].is_null(), "{lease}");

    machines[0]
        .cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", rotated)
        .assert()
        .success();
    let out = machines[1]
        .cmd(&["token"])
        .env("XERO_AUTH_TOKEN_URL", closed_token_url())
        .assert()
        .code(6)
        .get_output()
        .clone();
    let stderr = stderr_text(&out);
    assert!(stderr.contains("kept and stay usable"), "{stderr}");
    assert!(!stderr.contains("may have reached"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// A login or an import stores a new set: the note of a refresh an earlier holder sent and
/// never saved is about the old set, and goes from the lease too, not only from the lock file.
/// Left there, it made the new set's next failure read as a refresh that "may have reached Xero".
#[test]
fn a_login_or_an_import_clears_the_leases_note_of_an_unsaved_refresh() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (machines, _) = three_machines(&fake, &bao, "stale-note");
    let lease = format!("xero-auth/{}/refresh-lease", machines[0].profile);
    // What a holder whose write failed leaves: a free lease with the time of its refresh.
    let leave_a_note = || {
        let fields = serde_json::json!({
            "holder": "another machine", "state": "free", "ttl_secs": 3,
            "unsaved_refresh_sent_at": now() - 60,
        });
        let (status, body) = bao.kv_put_fields(&lease, fields, Some(bao.kv_version(&lease)));
        assert_eq!(status, 200, "{body}");
    };
    let note = || bao.kv_fields(&lease).unwrap()["unsaved_refresh_sent_at"].clone();

    leave_a_note();
    let newer = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = machines[1].write_token_file(&newer, Duration::ZERO);
    machines[1].ok(&["import", "--force", file.to_str().unwrap()]);
    assert!(note().is_null(), "import: {}", note());
    let out = machines[2]
        .cmd(&["refresh"])
        .env("XERO_AUTH_TOKEN_URL", closed_token_url())
        .assert()
        .code(6)
        .get_output()
        .clone();
    let stderr = stderr_text(&out);
    assert!(stderr.contains("kept and stay usable"), "{stderr}");
    assert!(!stderr.contains("may have reached"), "{stderr}");

    leave_a_note();
    machines[0].ok(&["login", "--client-credentials"]);
    assert!(note().is_null(), "login: {}", note());
}

#[test]
fn a_stale_write_is_refused_and_the_newer_set_is_used() {
    require_failpoints!();
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (machines, _) = three_machines(&fake, &bao, "cas");
    let profile = machines[0].profile.clone();
    let (_, read_version) = stored_set(&bao, &profile);

    // Machine 0 reads the set and sends its refresh; before it writes, a writer that takes no
    // lease (one whose lease expired, or a tool beside xero-auth) stores a newer set.
    let slow = Running::spawn({
        let mut cmd = machines[0].std_cmd(&["token"]);
        cmd.env("FAILPOINTS", "token-request-sent=sleep(2500)");
        cmd
    });
    wait_until(Duration::from_secs(20), "the refresh was sent", || {
        fake.count(Counter::Refresh) == 1
    });
    let newer = fake.issue_tokens(CLIENT_ID, SCOPE);
    let (mut written, version) = stored_set(&bao, &profile);
    written["access_token"] = Value::from(newer.access_token.as_str());
    written["refresh_token"] = Value::from(newer.refresh_token.as_str());
    written["expires_at"] = Value::from(now() + 1800);
    let (status, body) = bao.kv_put(
        &format!("xero-auth/{profile}/token-set"),
        &written.to_string(),
        Some(version),
    );
    assert_eq!(status, 200, "{body}");

    let out = slow.finish(Duration::from_secs(60));

    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(
        stdout_text(&out).trim(),
        newer.access_token,
        "the newer set is used"
    );
    let (set, _) = stored_set(&bao, &profile);
    assert_eq!(
        set["refresh_token"],
        newer.refresh_token.as_str(),
        "and kept"
    );

    // A forged write on the version that was read is refused too, and changes nothing.
    let (status, body) = bao.kv_put(
        &format!("xero-auth/{profile}/token-set"),
        "{\"forged\":true}",
        Some(read_version),
    );
    assert_eq!(status, 400, "{body}");
    let (again, _) = stored_set(&bao, &profile);
    assert_eq!(again, set);
}

/// What every fault must leave: the documented exit code, a message naming the cause and a fix,
/// no secret in it, and the stored set as it was.
fn assert_store_failure(out: &Output, cause: &str, secrets: &[&str]) {
    assert_eq!(out.status.code(), Some(5), "{}", stderr_text(out));
    let stderr = stderr_text(out);
    assert!(stderr.contains(cause), "stderr lacks {cause:?}:\n{stderr}");
    for secret in secrets {
        assert!(
            !stderr.contains(secret),
            "a secret in the message:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_sealed_server_a_revoked_token_and_a_policy_without_write_are_exit_5_and_change_nothing() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    bao.write_policy("xero-auth", POLICY);
    bao.write_policy("read-only", READ_ONLY);
    let (mut machines, _) = three_machines(&fake, &bao, "faults");
    let profile = machines[0].profile.clone();
    let (before, _) = stored_set(&bao, &profile);

    // Sealed.
    bao.seal();
    let out = machines[1].cmd(&["token"]).output().unwrap();
    assert_store_failure(&out, "is sealed", &[ROOT_TOKEN]);
    assert!(stderr_text(&out).contains("operator unseal"));
    bao.unseal();
    assert_eq!(stored_set(&bao, &profile).0, before);

    // A token that was revoked.
    let revoked = bao.create_token(&["xero-auth"]);
    bao.revoke_token(&revoked);
    machines[1].set_env("VAULT_TOKEN", &revoked);
    let out = machines[1].cmd(&["token"]).output().unwrap();
    assert_store_failure(&out, "expired, revoked", &[&revoked]);
    assert!(
        stderr_text(&out).contains("the token came from VAULT_TOKEN: replace it"),
        "{}",
        stderr_text(&out)
    );

    // A policy that reads but cannot write: the refresh happens, the write is denied with the
    // path and the capability named.
    let reader = bao.create_token(&["read-only"]);
    machines[1].set_env("VAULT_TOKEN", &reader);
    let out = machines[1].cmd(&["token"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr_text(&out));
    let stderr = stderr_text(&out);
    assert!(
        stderr.contains("denied 'update' on secret/data/xero-auth/")
            || stderr.contains("denied 'create' on secret/data/xero-auth/"),
        "{stderr}"
    );
    assert!(!stderr.contains(&reader));
    assert_eq!(
        stored_set(&bao, &profile).0,
        before,
        "the stored set is unchanged"
    );

    // A namespace that does not exist.
    machines[2].set_env("XERO_AUTH_VAULT_NAMESPACE", "no-such-team");
    let out = machines[2].cmd(&["token"]).output().unwrap();
    assert_store_failure(&out, "no-such-team", &[ROOT_TOKEN]);
    assert!(stderr_text(&out).contains("vault_namespace"));

    // Nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    machines[2].set_env("XERO_AUTH_VAULT_NAMESPACE", "");
    machines[2].set_env("XERO_AUTH_VAULT_ADDR", &format!("http://127.0.0.1:{port}"));
    let out = machines[2].cmd(&["token"]).output().unwrap();
    assert_store_failure(&out, "cannot reach Vault", &[ROOT_TOKEN]);

    assert_eq!(stored_set(&bao, &profile).0, before);
}

#[test]
fn a_namespace_that_exists_holds_the_profile_apart() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    bao.namespace("team-a");
    let out = bao.cli(&["secrets", "enable", "-ns=team-a", "-path=secret", "kv-v2"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let mut m = machine(
        &fake,
        &bao,
        &format!("v-ns-{}", std::process::id()),
        0,
        ROOT_TOKEN,
    );
    m.set_env("XERO_AUTH_VAULT_NAMESPACE", "team-a");
    m.set_client(&fake);
    m.import_fresh(&fake, Duration::from_secs(86_400));
    assert!(
        bao.kv_get(&format!("xero-auth/{}/token-set", m.profile))
            .is_none(),
        "not in the root namespace"
    );
    let out = bao.cli(&[
        "kv",
        "get",
        "-ns=team-a",
        "-field=value",
        &format!("secret/xero-auth/{}/token-set", m.profile),
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(stdout_text(&out).contains("refresh_token"));
}

#[test]
fn a_server_that_stops_answering_mid_storm_is_exit_5_and_keeps_the_set() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (mut machines, _) = three_machines(&fake, &bao, "frozen");
    let profile = machines[0].profile.clone();
    let (before, version) = stored_set(&bao, &profile);
    for m in &mut machines {
        m.set_env("XERO_AUTH_STORE_TIMEOUT", "3");
    }

    bao.freeze();
    let outputs = storm(&machines, &[&["token"]], None);
    bao.thaw();

    for (_, out) in &outputs {
        assert_store_failure(out, "does not answer", &[ROOT_TOKEN]);
    }
    let (after, after_version) = stored_set(&bao, &profile);
    assert_eq!(after, before, "the stored set is unchanged");
    assert_eq!(after_version, version);
    assert_eq!(fake.count(Counter::Refresh), 0);
    // Once it answers again, the machines go on.
    assert!(fake.access_token_valid(stdout_text(&machines[1].ok(&["token"])).trim()));
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_before_the_token_is_sent() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start_tls(&bin);
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=another CA",
        ])
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(&other_ca)
        .output();
    let Some(_) = made.ok().filter(|o| o.status.success()) else {
        // scripts/test installs openssl: where OpenBao is required, so is this test.
        assert!(
            std::env::var("XERO_AUTH_REQUIRE_OPENBAO").as_deref() != Ok("1"),
            "no openssl to make a second CA (Debian package openssl)"
        );
        eprintln!("skipped: no openssl to make a second CA");
        return;
    };
    let mut m = machine(
        &fake,
        &bao,
        &format!("v-tls-{}", std::process::id()),
        0,
        ROOT_TOKEN,
    );

    // The right CA: works.
    m.set_env(
        "XERO_AUTH_VAULT_CACERT",
        bao.ca_file.as_ref().unwrap().to_str().unwrap(),
    );
    m.set_client(&fake);
    m.import_fresh(&fake, Duration::from_secs(86_400));

    // Another CA: refused, saying what to set.
    m.set_env("XERO_AUTH_VAULT_CACERT", other_ca.to_str().unwrap());
    let out = m.cmd(&["token"]).output().unwrap();
    assert_store_failure(&out, "cannot reach Vault", &[ROOT_TOKEN]);
    assert!(
        stderr_text(&out).contains("vault_cacert"),
        "{}",
        stderr_text(&out)
    );
    assert_eq!(fake.count(Counter::Refresh), 0);
}

#[test]
fn vault_settings_that_could_leave_the_profile_folder_are_refused() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "vault-paths");
    for (key, value) in [
        ("XERO_AUTH_VAULT_PREFIX", "../other-team"),
        ("XERO_AUTH_VAULT_PREFIX", "a//b"),
        ("XERO_AUTH_VAULT_MOUNT", "secret/"),
        ("XERO_AUTH_VAULT_PREFIX", "x%2F..%2Fy"),
        ("XERO_AUTH_VAULT_ADDR", "http://vault.example.com:8200"),
        ("XERO_AUTH_VAULT_ADDR", "https://127.0.0.1:8200/v1/evil"),
    ] {
        let out = env
            .cmd(&["token"])
            .env("XERO_AUTH_STORE", "vault")
            .env(key, value)
            .assert()
            .code(1)
            .get_output()
            .clone();
        assert!(
            stderr_text(&out).contains(key),
            "{key}={value}: {}",
            stderr_text(&out)
        );
    }
}

#[test]
fn status_and_doctor_show_the_server_the_sign_in_the_policy_and_the_lease() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    bao.write_policy("xero-auth", POLICY);
    bao.write_policy("read-only", READ_ONLY);
    let (mut machines, _) = three_machines(&fake, &bao, "doctor");
    let m = &mut machines[0];
    let profile = m.profile.clone();

    let status = stdout_text(&m.ok(&["status"]));
    for expected in [
        format!("{} (mount secret, entries xero-auth/{profile}/)", bao.addr),
        "token from VAULT_TOKEN".to_string(),
        "refresh lease:  none held".to_string(),
    ] {
        assert!(
            status.contains(&expected),
            "status lacks {expected:?}:\n{status}"
        );
    }
    // A lease someone holds is shown with its holder.
    let lease = format!("xero-auth/{profile}/refresh-lease");
    let fields = serde_json::json!({"holder": "ci-7/4242/x1", "state": "held", "ttl_secs": 60});
    bao.kv_put_fields(&lease, fields, None);
    let out = m.ok(&["status", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["vault"]["lease"]["holder"], "ci-7/4242/x1");
    assert_eq!(json["vault"]["auth"], "token from VAULT_TOKEN");

    let out = m.cmd(&["doctor"]).output().unwrap();
    let text = stdout_text(&out);
    assert!(
        text.contains("the token can read and write secret/xero-auth/")
            && text.contains("refresh lease held by ci-7/4242/x1"),
        "{text}"
    );
    assert!(!text.contains(ROOT_TOKEN));

    // A token that can only read: doctor names the path and the missing capability.
    let reader = bao.create_token(&["read-only"]);
    m.set_env("VAULT_TOKEN", &reader);
    let out = m.cmd(&["doctor"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stdout_text(&out));
    let text = format!("{}{}", stdout_text(&out), stderr_text(&out));
    assert!(
        text.contains(&format!(
            "lacks 'create' on secret/data/xero-auth/{profile}/token-set"
        )),
        "{text}"
    );
    assert!(!text.contains(&reader));

    // Sealed: doctor says so and what to do.
    bao.seal();
    let out = m.cmd(&["doctor"]).output().unwrap();
    let text = format!("{}{}", stdout_text(&out), stderr_text(&out));
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(
        text.contains("is sealed") && text.contains("operator unseal"),
        "{text}"
    );
    bao.unseal();
}

#[test]
fn the_vault_token_and_secret_id_are_not_passed_to_a_child_process() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (mut machines, _) = three_machines(&fake, &bao, "child-env");
    let m = &mut machines[1];
    m.set_env("BAO_TOKEN", "bao-token-should-not-pass-9d1e");
    m.set_env("VAULT_SECRET_ID", "secret-id-should-not-pass-4c2a");
    m.cmd(&["tenants", "use", fake_xero::DEFAULT_TENANT_ID])
        .assert()
        .success();

    let out = m.ok(&["exec", "--", "env"]);

    let env = stdout_text(&out);
    assert!(
        env.contains("XERO_ACCESS_TOKEN="),
        "the command ran with its token"
    );
    for secret in [
        ROOT_TOKEN,
        "bao-token-should-not-pass",
        "secret-id-should-not-pass",
    ] {
        assert!(!env.contains(secret), "{secret} reached the child:\n{env}");
    }
}

/// For a profile on another store the Vault variables are not xero-auth's credentials but the
/// caller's own, for the programs it runs (a `terraform` under `exec`): its child gets them.
#[test]
fn a_profile_on_another_store_passes_the_callers_vault_variables_on() {
    let fake = FakeXero::start();
    let (mut env, _) = ready_profile(&fake, "vault-vars-kept", Duration::from_secs(60));
    env.set_env("VAULT_TOKEN", "callers-own-vault-token-5b7e");
    env.set_env("VAULT_SECRET_ID", "callers-own-secret-id-0c3d");
    let out = stdout_text(&env.ok(&["exec", "--", "env"]));
    assert!(
        out.contains("VAULT_TOKEN=callers-own-vault-token-5b7e"),
        "{out}"
    );
    assert!(
        out.contains("VAULT_SECRET_ID=callers-own-secret-id-0c3d"),
        "{out}"
    );
    assert!(!out.contains(CLIENT_SECRET));
}

#[test]
fn a_redirect_from_the_server_is_not_followed_with_the_token() {
    let fake = FakeXero::start();
    // The "server" answers every request with a redirect to a second listener.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!("http://{}/v1/steal", elsewhere.local_addr().unwrap());
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", server.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in server.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = write!(
                stream,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let mut env = TestEnv::new(&fake, "vault-redirect");
    env.set_env("XERO_AUTH_STORE", "vault");
    env.set_env("XERO_AUTH_VAULT_ADDR", &addr);
    env.set_env("VAULT_TOKEN", "redirected-token-must-stay-7c1e");

    let out = env.cmd(&["token"]).output().unwrap();

    assert_store_failure(&out, "HTTP 307", &["redirected-token-must-stay"]);
    assert!(
        matches!(elsewhere.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the redirect's target was contacted"
    );
}

/// A person who logged in on a laptop moves the profile into the shared store in one command,
/// and back: copied, read back, switched in config.toml, deleted from the source; a crash after
/// the copy was read back is finished by running the command again. Out of the shared store
/// only with --remove-shared, after which another machine's commands name the Vault folder.
#[test]
fn a_profile_moves_from_the_keychain_into_vault_and_back() {
    require_failpoints!();
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (mut laptop, imported) = imported_profile(&fake, "vault-move", Duration::from_secs(60));
    laptop.set_env("XERO_AUTH_VAULT_ADDR", &bao.addr);
    laptop.set_env("VAULT_TOKEN", ROOT_TOKEN);
    let profile = laptop.profile.clone();
    let token_set = format!("xero-auth/{profile}/token-set");

    // Cut short once the copy in OpenBao was read back; the second run finishes the move.
    run_to_crash(
        laptop.std_cmd(&["store", "move", "--to", "vault"]),
        "store-move-verified",
    );
    assert!(laptop.stored_raw().is_some(), "the keychain still holds it");
    let out = laptop.ok(&["store", "move", "--to", "vault"]);
    for secret in [imported.refresh_token.as_str(), CLIENT_SECRET, ROOT_TOKEN] {
        assert!(!stdout_text(&out).contains(secret) && !stderr_text(&out).contains(secret));
    }
    let (set, _) = stored_set(&bao, &profile);
    assert_eq!(set["refresh_token"], imported.refresh_token.as_str());
    assert_eq!(
        bao.kv_get(&format!("xero-auth/{profile}/client-secret"))
            .map(|(s, _)| s)
            .as_deref(),
        Some(CLIENT_SECRET)
    );
    assert!(laptop.stored_raw().is_none(), "deleted from the keychain");
    assert_eq!(
        stdout_text(&laptop.ok(&["config", "get", "store"])).trim(),
        "vault"
    );

    // The laptop and another machine now share it.
    let first = stdout_text(&laptop.ok(&["token"])).trim().to_string();
    assert!(fake.access_token_valid(&first));
    let server = machine(&fake, &bao, &profile, 9, ROOT_TOKEN);
    server
        .cmd(&["config", "set", "client_id", CLIENT_ID])
        .assert()
        .success();
    assert_eq!(stdout_text(&server.ok(&["token"])).trim(), first);

    // Back out of the shared store: refused unless told to remove the shared entries, naming
    // them; the server goes on using them.
    let folder = format!("secret/data/xero-auth/{profile}/");
    let out = laptop
        .cmd(&["store", "move", "--to", "secret-service"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let said = stderr_text(&out);
    assert!(
        said.contains(&folder)
            && said.contains(&bao.addr)
            && said.contains("--remove-shared")
            && said.contains("Nothing was done"),
        "{said}"
    );
    assert!(bao.kv_get(&token_set).is_some(), "the shared entries stay");
    assert!(laptop.stored_raw().is_none(), "no copy in the keychain");
    assert_eq!(
        stdout_text(&laptop.ok(&["config", "get", "store"])).trim(),
        "vault"
    );
    assert_eq!(stdout_text(&server.ok(&["token"])).trim(), first);

    // With --remove-shared: the keychain holds it again, OpenBao nothing, and the server says
    // where it looked and what may have happened.
    let out = laptop.ok(&["store", "move", "--to", "secret-service", "--remove-shared"]);
    assert!(stderr_text(&out).contains(&folder), "{}", stderr_text(&out));
    assert!(bao.kv_get(&token_set).is_none(), "deleted from OpenBao");
    assert_eq!(
        laptop.stored().expect("the keychain holds it")["refresh_token"],
        imported.refresh_token.as_str()
    );
    assert!(fake.access_token_valid(stdout_text(&laptop.ok(&["token"])).trim()));
    assert_eq!(fake.count(Counter::Refresh), 0, "a move refreshes nothing");
    for args in [&["token"][..], &["status"][..]] {
        let out = server.cmd(args).assert().code(3).get_output().clone();
        let said = stderr_text(&out);
        assert!(
            said.contains(&folder)
                && said.contains(&bao.addr)
                && said.contains("another machine may have moved")
                && !said.contains("keychain"),
            "{args:?}: {said}"
        );
    }
}

/// A move out of the vault store takes the set, and with it the lease's note of a refresh sent
/// with it and never saved: the next failure on this machine still says the token may have
/// been spent, and until when it stays usable.
#[test]
fn a_move_out_of_vault_carries_the_leases_note_of_an_unsaved_refresh() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (mut laptop, _) = imported_profile(&fake, "vault-note-move", Duration::from_secs(60));
    laptop.set_env("XERO_AUTH_VAULT_ADDR", &bao.addr);
    laptop.set_env("VAULT_TOKEN", ROOT_TOKEN);
    laptop.ok(&["store", "move", "--to", "vault"]);
    let lease = format!("xero-auth/{}/refresh-lease", laptop.profile);
    let fields = serde_json::json!({
        "holder": "another machine", "state": "free", "ttl_secs": 3,
        "unsaved_refresh_sent_at": now() - 60,
    });
    let (status, body) = bao.kv_put_fields(&lease, fields, Some(bao.kv_version(&lease)));
    assert_eq!(status, 200, "{body}");

    laptop.ok(&["store", "move", "--to", "secret-service", "--remove-shared"]);
    let out = laptop
        .cmd(&["refresh"])
        .env("XERO_AUTH_TOKEN_URL", closed_token_url())
        .assert()
        .failure()
        .get_output()
        .clone();
    let stderr = stderr_text(&out);
    assert!(stderr.contains("may have reached Xero"), "{stderr}");
}

/// A holder whose refresh needs retries longer than the lease's TTL renews the lease before
/// each retry: another machine waits for its set instead of taking the lease and spending the
/// same refresh token again.
#[test]
fn a_slow_refresh_keeps_its_lease_and_other_machines_wait_for_its_set() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (machines, _) = three_machines(&fake, &bao, "slow");
    // Two refused attempts, then a slow answer: about 3.5 s in all, past the lease's 3 s.
    fake.push_fault(Target::Token, Fault::ServerError);
    fake.push_fault(Target::Token, Fault::ServerError);
    fake.push_fault(Target::Token, Fault::Delay(Duration::from_millis(1500)));
    let first = Running::spawn(machines[0].std_cmd(&["token"]));
    std::thread::sleep(Duration::from_millis(800));
    let second = Running::spawn(machines[1].std_cmd(&["token"]));
    let (first, second) = (
        first.finish(Duration::from_secs(60)),
        second.finish(Duration::from_secs(60)),
    );
    assert!(first.status.success(), "{}", stderr_text(&first));
    assert!(second.status.success(), "{}", stderr_text(&second));
    assert_eq!(
        stdout_text(&first),
        stdout_text(&second),
        "one token for both"
    );
    assert_eq!(
        fake.count(Counter::Refresh),
        3,
        "the holder's three attempts, and no refresh by the other machine"
    );
}

/// A loopback proxy in front of OpenBao that holds every write of a token set (`POST
/// …/data/…/token-set`) for `hold` before passing it on, whether or not its sender is still
/// waiting: a slow network path, or a server that answers late. Each connection carries one
/// request. Counts the writes it held.
struct HoldingProxy {
    addr: String,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HoldingProxy {
    fn start(upstream: u16, hold: Duration) -> HoldingProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let held = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = held.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 8192];
                    let head_end = loop {
                        let Ok(n) = client.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&request[..head_end]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while request.len() < head_end + length {
                        let Ok(n) = client.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    let first = head.lines().next().unwrap_or_default().to_string();
                    if first.starts_with("POST ") && first.contains("/token-set ") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(hold);
                    }
                    // One request per connection: the answer closes it.
                    let head = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                    let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                    server.write_all(head.as_bytes()).unwrap();
                    server.write_all(&request[head_end..]).unwrap();
                    let mut answer = Vec::new();
                    let _ = server.read_to_end(&mut answer);
                    let _ = client.write_all(&answer);
                });
            }
        });
        HoldingProxy { addr, held }
    }

    fn writes_held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A refresh whose write outlives the store's timeout (held on its way to the server) keeps
/// the lease until the write has ended, past the process's own end: a second machine asking
/// meanwhile waits and gets that set, and Xero sees one refresh for the rotation.
#[test]
fn a_write_held_past_the_store_timeout_keeps_the_lease_and_xero_sees_one_refresh() {
    let bin = require_openbao!();
    let fake = FakeXero::start();
    let bao = OpenBao::start(&bin);
    let (mut machines, _) = three_machines(&fake, &bao, "held-write");
    let profile = machines[0].profile.clone();
    let proxy = HoldingProxy::start(bao.port, Duration::from_secs(4));
    machines[0].set_env("XERO_AUTH_VAULT_ADDR", &proxy.addr);
    machines[0].set_env("XERO_AUTH_STORE_TIMEOUT", "1");
    // Xero is slow too: machine 1 starts while the request is out.
    fake.push_fault(Target::Token, Fault::Delay(Duration::from_millis(1500)));

    let first = Running::spawn(machines[0].std_cmd(&["token"]));
    wait_until(Duration::from_secs(20), "the refresh was sent", || {
        fake.count(Counter::Refresh) == 1
    });
    let second = Running::spawn(machines[1].std_cmd(&["token"]));
    let first = first.finish(Duration::from_secs(60));
    let second = second.finish(Duration::from_secs(90));

    assert_eq!(proxy.writes_held(), 1, "{}", stderr_text(&first));
    assert_eq!(first.status.code(), Some(5), "{}", stderr_text(&first));
    assert!(second.status.success(), "{}", stderr_text(&second));
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "one refresh for the rotation: machine 1 used the set whose write was held"
    );
    let token = stdout_text(&second).trim().to_string();
    assert!(fake.access_token_valid(&token));
    let (set, _) = stored_set(&bao, &profile);
    assert_eq!(set["access_token"], token.as_str());
}
