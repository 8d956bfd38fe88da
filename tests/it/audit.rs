//! The audit log (docs/security.md, "The audit log"): what each event records, that no secret
//! and no piece of one is ever in it, that many processes at once leave whole lines, that a log
//! that cannot be written never fails a command, rotation, and `log`'s filters.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::*;

const FRESH: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// The state folder the commands of `env` use, set explicitly so the test knows where the log is.
fn with_state_dir(env: &mut TestEnv) -> PathBuf {
    let dir = env.dir.path().join("state").join("xa");
    env.set_env("XERO_AUTH_STATE_DIR", dir.to_str().unwrap());
    dir
}

fn lines(dir: &std::path::Path, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a line is not whole JSON ({e}): {l}"))
        })
        .collect()
}

fn events<'a>(all: &'a [Value], name: &str) -> Vec<&'a Value> {
    all.iter().filter(|l| l["event"] == name).collect()
}

/// The keyed fingerprint of `secret` under the audit key stored with `env`'s token set.
fn fingerprint(env: &TestEnv, secret: &str) -> String {
    use base64::Engine as _;
    let stored = env.stored().expect("a token set is stored");
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(
            stored["audit_key"]
                .as_str()
                .expect("the set has an audit key"),
        )
        .unwrap();
    xero_auth::audit::fingerprint(&key, secret)
}

/// Every secret is absent from `log`, and so is every 32-byte piece of it.
fn assert_no_secret(log: &str, secrets: &[&str]) {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!log.contains(secret), "a whole secret is in the audit log");
        let bytes = secret.as_bytes();
        for start in 0..bytes.len().saturating_sub(31) {
            let piece = &bytes[start..start + 32];
            assert!(
                !log.as_bytes().windows(32).any(|w| w == piece),
                "32 bytes of a secret (from byte {start}) are in the audit log"
            );
        }
    }
}

#[test]
fn events_carry_who_asked_and_fingerprints_and_never_a_secret() {
    require_keychain!();
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "audit-fields");
    let dir = with_state_dir(&mut env);
    env.set_client(&fake);
    let imported = env.import_fresh(&fake, DAY);
    env.cmd(&["tenants", "use", fake_xero::DEFAULT_TENANT_ID])
        .assert()
        .success();
    // Expired: this `token` refreshes, spending the imported refresh token.
    let token = String::from_utf8(env.ok(&["token"]).stdout).unwrap();
    let refreshed_access = env.stored_access_token();
    let refreshed_refresh = env.stored_refresh_token();
    assert_eq!(token.trim(), refreshed_access);
    env.ok(&["api", "api.xro/2.0/Contacts?where=Name%3D%22Secretive%22"]);
    env.ok(&["exec", "--", "true"]);

    let all = lines(&dir, "audit.log");
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert_no_secret(
        &text,
        &[
            &imported.access_token,
            &imported.refresh_token,
            &imported.id_token,
            &refreshed_access,
            &refreshed_refresh,
            CLIENT_SECRET,
        ],
    );
    assert!(!text.contains("Secretive"), "a query value reached the log");

    // Every line: time, profile, how, and who asked (this process's child and its parent).
    for line in &all {
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        assert_eq!(line["profile"], env.profile.as_str(), "{line}");
        assert!(line["via"].is_string(), "{line}");
        let who = &line["requester"];
        assert!(who["pid"].as_u64().unwrap() > 0, "{line}");
        assert!(
            who["exe"].as_str().unwrap().ends_with("xero-auth"),
            "{line}"
        );
        assert!(
            who["cmdline"].as_str().unwrap().contains("xero-auth"),
            "{line}"
        );
        assert_eq!(who["parent"]["pid"], std::process::id(), "{line}");
    }
    for (event, via) in [("client-set", "client-set"), ("import", "import")] {
        let found = events(&all, event);
        assert_eq!(found.len(), 1, "one {event} line");
        assert_eq!(found[0]["via"], via);
        assert_eq!(found[0]["outcome"], "ok");
        assert_eq!(found[0]["exit"], 0);
        assert_eq!(found[0]["store"], "secret-service");
    }

    // The refresh: sent with the imported refresh token, saved with the new one; the lines
    // match by fingerprint, and the token handed out is the one the refresh saved.
    let refresh = events(&all, "refresh");
    let steps: Vec<_> = refresh
        .iter()
        .map(|l| l["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["sent", "saved"]);
    let spent = fingerprint(&env, &imported.refresh_token);
    assert_eq!(refresh[0]["refresh_fp"], spent.as_str());
    assert_eq!(refresh[1]["spent_fp"], spent.as_str());
    assert_eq!(
        refresh[1]["refresh_fp"],
        fingerprint(&env, &refreshed_refresh).as_str()
    );
    let access_fp = fingerprint(&env, &refreshed_access);
    assert_eq!(refresh[1]["access_fp"], access_fp.as_str());
    assert!(
        refresh[1]["store"]
            .as_str()
            .unwrap()
            .contains("Secret Service")
    );

    let handed: Vec<_> = events(&all, "token");
    assert!(handed.len() >= 3, "token, api and exec each took a token");
    assert!(handed.iter().all(|l| l["access_fp"] == access_fp.as_str()));
    assert_eq!(handed[0]["via"], "tenants", "`tenants use` took the first");
    let by_token = handed.iter().find(|l| l["via"] == "token").unwrap();
    assert_eq!(by_token["tenant"], fake_xero::DEFAULT_TENANT_ID);
    assert_eq!(by_token["outcome"], "ok");

    // `tenants use` listed the connections; `api` made the call.
    let api: Vec<_> = events(&all, "api-call")
        .into_iter()
        .filter(|l| l["via"] == "api")
        .collect();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0]["method"], "GET");
    assert_eq!(api[0]["path"], "/api.xro/2.0/Contacts");
    assert_eq!(api[0]["status"], 200);
    assert_eq!(api[0]["tenant"], fake_xero::DEFAULT_TENANT_ID);
    assert!(api[0]["duration_ms"].is_u64());
    assert_eq!(events(&all, "api").len(), 1, "the command's own line");
    let exec = events(&all, "exec");
    assert_eq!(exec.len(), 1);
    assert_eq!(exec[0]["outcome"], "started");

    // `status` says where the log is.
    let status = env.ok(&["status", "--json"]).stdout;
    let status: Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["audit_log"], dir.join("audit.log").to_str().unwrap());
}

#[test]
fn sixty_four_processes_at_once_leave_whole_lines() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _) = ready_profile(&fake, "audit-many", FRESH);
    let dir = with_state_dir(&mut env);
    // Long command lines make long lines (cut to 512 bytes each): more to tear.
    let filler = "x".repeat(3000);
    let children: Vec<_> = (0..64)
        .map(|_| {
            env.std_cmd(&["exec", "--", "true", &filler])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = lines(&dir, "audit.log");
    assert_eq!(events(&all, "exec").len(), 64);
    assert_eq!(events(&all, "token").len(), 64);
    let pids: std::collections::HashSet<_> = events(&all, "exec")
        .iter()
        .map(|l| l["requester"]["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 64);
    for line in &all {
        let cmdline = line["requester"]["cmdline"].as_str().unwrap();
        assert!(cmdline.len() <= 512 && cmdline.starts_with(env!("CARGO_BIN_EXE_xero-auth")));
    }
}

#[test]
fn a_log_that_cannot_be_written_warns_once_and_the_command_goes_on() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, tokens) = ready_profile(&fake, "audit-unwritable", FRESH);
    let dir = with_state_dir(&mut env);
    // A folder where the log should be: no write can succeed (root included).
    std::fs::create_dir_all(dir.join("audit.log")).unwrap();
    let out = env.ok(&["api", "api.xro/2.0/Organisation"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("the audit log was not written").count(),
        1,
        "one warning for the token, the call and the command's lines: {stderr}"
    );
    let out = env.ok(&["token"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", tokens.access_token)
    );
}

#[test]
fn the_log_is_rotated_past_its_size_and_log_reads_both_files() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _) = ready_profile(&fake, "audit-rotate", FRESH);
    let dir = with_state_dir(&mut env);
    env.set_env("XERO_AUTH_AUDIT_MAX_BYTES", "4096");
    for _ in 0..12 {
        env.ok(&["token"]);
    }
    let size = std::fs::metadata(dir.join("audit.log")).unwrap().len();
    assert!(size <= 4096, "the log is {size} bytes, past its maximum");
    let rotated = lines(&dir, "audit.log.1");
    assert!(!rotated.is_empty(), "the log was rotated");
    let current = lines(&dir, "audit.log");
    let shown = env.ok(&["log", "--json"]).stdout;
    assert_eq!(
        String::from_utf8(shown).unwrap().lines().count(),
        rotated.len() + current.len()
    );
}

#[test]
fn log_filters_by_event_profile_and_time() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _) = ready_profile(&fake, "audit-filter", FRESH);
    let dir = with_state_dir(&mut env);
    env.ok(&["token"]);
    // No such profile: exit 3, and a line says so.
    env.cmd(&["token", "--profile", "another"]).assert().code(3);
    // An old line, as an earlier run would have left it.
    let old = serde_json::json!({"time": "2000-01-01T00:00:00Z", "event": "token",
                                 "profile": env.profile, "via": "token"});
    let mut text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    text.insert_str(0, &format!("{old}\n"));
    std::fs::write(dir.join("audit.log"), text).unwrap();

    let json = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["log", "--json"];
        all.extend_from_slice(args);
        String::from_utf8(env.ok(&all).stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let tokens = json(&["--event", "token"]);
    assert_eq!(
        tokens.len(),
        2,
        "this profile's two token lines: {tokens:?}"
    );
    assert!(tokens.iter().all(|l| l["profile"] == env.profile.as_str()));
    assert_eq!(json(&["--event", "token", "--since", "1h"]).len(), 1);
    assert!(json(&["--event", "nothing"]).is_empty());
    let every = json(&["--all-profiles", "--event", "token"]);
    assert_eq!(every.len(), 3);
    assert_eq!(every[2]["profile"], "another");
    assert_eq!(every[2]["exit"], 3);

    let table = String::from_utf8(env.ok(&["log", "--event", "token"]).stdout).unwrap();
    assert!(table.starts_with("TIME"), "{table}");
    assert_eq!(table.lines().count(), 3);
    env.cmd(&["log", "--since", "soon"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("30m, 1h or 2days"));
}

#[test]
fn an_exec_server_fetch_names_the_fetching_process() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _) = ready_profile(&fake, "audit-server", FRESH);
    let dir = with_state_dir(&mut env);
    let script = format!(
        "{}/tests/it/support/token_client.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut server = support::driven::Driven::spawn(
        env.std_cmd(&["exec", "--server", "--", "python3", &script]),
    );
    server.send("GET ");
    let answer = server.recv(Duration::from_secs(60));
    assert_eq!(answer["status"], 200, "{answer}");
    let bridge = server.pid();
    let child = support::driven::children_of(bridge)[0];
    server.send("EXIT 0");
    let (status, _, stderr) = server.finish(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");

    let all = lines(&dir, "audit.log");
    let fetches = events(&all, "server-fetch");
    assert_eq!(fetches.len(), 1, "{all:?}");
    assert_eq!(fetches[0]["outcome"], "ok");
    assert_eq!(fetches[0]["via"], "exec");
    let who = &fetches[0]["requester"];
    assert_eq!(
        who["pid"], child,
        "the fetching process, not xero-auth: {who}"
    );
    assert!(
        who["cmdline"].as_str().unwrap().contains("token_client.py"),
        "{who}"
    );
    assert_eq!(who["parent"]["pid"], bridge);
    let command = events(&all, "exec");
    assert_eq!(command.len(), 1, "exec --server's own line at its end");
    assert_eq!(command[0]["exit"], 0);
}

#[test]
fn log_reads_no_file_planted_as_a_link_in_the_state_folder() {
    require_keychain!();
    let fake = FakeXero::start();
    let (mut env, _) = ready_profile(&fake, "audit-link", FRESH);
    let dir = with_state_dir(&mut env);
    env.ok(&["token"]);
    // Someone else's link where the rotated log would be: `log` refuses it, naming it, instead
    // of showing what it points at.
    let planted = env.dir.path().join("planted.json");
    std::fs::write(
        &planted,
        format!("{{\"event\":\"token\",\"profile\":\"{}\",\"time\":\"2099-01-01T00:00:00Z\",\"planted\":true}}\n", env.profile),
    )
    .unwrap();
    let link = dir.join("audit.log.1");
    std::os::unix::fs::symlink(&planted, &link).unwrap();
    // Made by another user (who could point it anywhere); tests run as root in CI, which may
    // give a link away. Elsewhere the check of a link's owner cannot be staged.
    if std::os::unix::fs::lchown(&link, Some(12_345), None).is_err() {
        eprintln!("skipped: cannot give a link to another user here (not root)");
        return;
    }
    let out = env
        .cmd(&["log", "--json"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit.log.1"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("planted"));
}
