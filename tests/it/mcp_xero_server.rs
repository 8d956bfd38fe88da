//! Xero's own MCP server (`@xeroapi/xero-mcp-server`, installed by scripts/install-mcp-server)
//! under `xero-auth mcp`, driven as an MCP client would: `initialize`, `tools/list`, a rotation
//! of the tokens, `tools/list` again; the guard rails (`--read-only`, `--tenant`). Its tools call
//! api.xero.com, which tests never reach: where one is called, the server's HTTPS goes to a
//! proxy of the test's on 127.0.0.1 that notes where it was to go and hangs up.
//!
//! Without node/npm, or when the install fails, the test says why and skips; with
//! `XERO_AUTH_REQUIRE_MCP_SERVER=1` (CI) that is a failure instead.

use crate::support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::driven::{Driven, children_of, environ_of, holds};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Reads messages until the response to `id`; counts the `initialize` results seen on the way.
fn response(bridge: &mut Driven, id: i64, initialize_results: &mut usize) -> Value {
    loop {
        let message = bridge.recv(WAIT);
        if message["result"]["serverInfo"].is_object() {
            *initialize_results += 1;
        }
        if message["id"] == id && message.get("method").is_none() {
            return message;
        }
    }
}

/// The installed server, or `None` after saying why the test is skipped.
fn installed_or_skip() -> Option<PathBuf> {
    match crate::support::installed_by("install-mcp-server") {
        Ok(entry) => Some(entry),
        Err(why) => {
            if std::env::var("XERO_AUTH_REQUIRE_MCP_SERVER").as_deref() == Ok("1") {
                panic!("Xero's MCP server is required here but could not be installed: {why}");
            }
            eprintln!("skipped: Xero's MCP server is not available ({why})");
            None
        }
    }
}

fn tool_count(answer: &Value) -> usize {
    answer["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {answer}"))
        .len()
}

/// The bridge's child whose environment holds `token`, once there is one.
fn server_with(bridge_pid: u32, token: &str) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = children_of(bridge_pid).into_iter().find(|pid| {
            environ_of(*pid)
                .is_some_and(|e| holds(&e, &format!("XERO_CLIENT_BEARER_TOKEN={token}")))
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no server with the token");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn xeros_mcp_server_keeps_working_across_a_rotation() {
    require_keychain!();
    let Some(entry) = installed_or_skip() else {
        return;
    };
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "mcp-xero", Duration::from_secs(30));
    let mut cmd = env.std_cmd(&["mcp", "--check-every", "1", "--", "node"]);
    cmd.arg(&entry)
        // Xero's server reads a .env file in its working folder: one without any.
        .current_dir(env.dir.path())
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .env("XERO_CLIENT_ID", CLIENT_ID);
    let mut bridge = Driven::spawn(cmd);
    let mut initialize_results = 0;

    bridge.send_json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test-client", "version": "1"}}}));
    let init = response(&mut bridge, 1, &mut initialize_results);
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    bridge.send_json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    bridge.send_json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let tools = tool_count(&response(&mut bridge, 2, &mut initialize_results));
    assert!(
        tools >= 24,
        "Xero's server lists dozens of tools, not {tools}"
    );
    let first = server_with(bridge.pid(), &tokens.access_token);

    env.ok(&["refresh"]);
    let rotated = env.stored_access_token();
    assert_ne!(rotated, tokens.access_token);
    let second = server_with(bridge.pid(), &rotated);
    assert_ne!(second, first);
    let environ = environ_of(second).unwrap();
    for secret in [
        CLIENT_SECRET,
        &tokens.refresh_token,
        &env.stored_refresh_token(),
    ] {
        assert!(
            !holds(&environ, secret),
            "a secret in the server's environment"
        );
    }
    assert!(!holds(&environ, "XERO_CLIENT_ID="));

    bridge.send_json(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}));
    let again = response(&mut bridge, 3, &mut initialize_results);
    assert!(again.get("error").is_none(), "{again}");
    assert_eq!(tool_count(&again), tools);
    assert_eq!(
        initialize_results, 1,
        "the client saw one initialize result"
    );

    bridge.close_stdin();
    let (status, _, stderr) = bridge.finish(WAIT);
    assert!(status.success(), "{stderr}");
    for secret in [rotated.as_str(), &tokens.access_token, CLIENT_SECRET] {
        assert!(!stderr.contains(secret), "a secret on stderr");
    }
}

/// An HTTPS proxy on 127.0.0.1 that goes nowhere: it keeps the first line of each request
/// (`CONNECT api.xero.com:443 HTTP/1.1`) and answers 502, so the server's calls to Xero fail at
/// once and never leave the machine.
struct DeadEndProxy {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl DeadEndProxy {
    fn start() -> DeadEndProxy {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                noted.lock().unwrap().push(line.trim().to_string());
                let _ = (&stream).write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        DeadEndProxy { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The bridge around Xero's server started through `sh`, which first writes `started` to
/// `marker` and copies every line the server reads to `input` (what reached it, for the test
/// to look at).
fn bridge_command(
    env: &TestEnv,
    options: &[&str],
    entry: &std::path::Path,
    marker: &std::path::Path,
    input: &std::path::Path,
) -> Command {
    let mut args = vec!["mcp"];
    args.extend_from_slice(options);
    args.extend_from_slice(&[
        "--",
        "sh",
        "-c",
        "echo started > \"$0\"; tee -a \"$1\" | node \"$2\"",
    ]);
    let mut cmd = env.std_cmd(&args);
    cmd.arg(marker)
        .arg(input)
        .arg(entry)
        .current_dir(env.dir.path())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    cmd
}

fn initialize(bridge: &mut Driven) {
    let mut results = 0;
    bridge.send_json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test-client", "version": "1"}}}));
    let init = response(bridge, 1, &mut results);
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    bridge.send_json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
}

#[test]
fn read_only_lists_no_write_tool_and_refuses_one_before_the_server_sees_it() {
    require_keychain!();
    let Some(entry) = installed_or_skip() else {
        return;
    };
    let fake = FakeXero::start();
    let (env, _tokens) = ready_profile(&fake, "mcp-read-only", Duration::from_secs(30));
    let proxy = DeadEndProxy::start();
    let (marker, input) = (env.dir.path().join("started"), env.dir.path().join("input"));
    let mut cmd = bridge_command(&env, &["--read-only"], &entry, &marker, &input);
    cmd.env("HTTPS_PROXY", &proxy.url)
        .env("https_proxy", &proxy.url);
    let mut bridge = Driven::spawn(cmd);
    initialize(&mut bridge);
    let mut ignored = 0;

    bridge.send_json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let listed = response(&mut bridge, 2, &mut ignored);
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {listed}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.len() >= 24,
        "Xero's server has dozens of read tools: {names:?}"
    );
    assert!(
        names.contains(&"list-contacts") && names.contains(&"get-timesheet"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("list-") || n.starts_with("get-")),
        "a tool that writes is listed: {names:?}"
    );

    bridge.send_json(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "create-contact", "arguments": {"name": "Refused Ltd"}}}));
    let refused = response(&mut bridge, 3, &mut ignored);
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert_eq!(refused["error"]["data"]["rule"], "read-only", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("read-only")),
        "{refused}"
    );

    // A read goes to the server, which calls Xero (through the proxy, which hangs up) and
    // answers itself.
    bridge.send_json(&json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "list-contacts", "arguments": {}}}));
    let read = response(&mut bridge, 4, &mut ignored);
    assert!(
        read.get("error").is_none(),
        "the server answers the call: {read}"
    );
    assert!(read["result"]["content"].is_array(), "{read}");
    assert!(
        proxy
            .seen()
            .iter()
            .any(|l| l.starts_with("CONNECT api.xero.com:443")),
        "the server called Xero: {:?}",
        proxy.seen()
    );

    bridge.close_stdin();
    let (status, _, stderr) = bridge.finish(WAIT);
    assert!(status.success(), "{stderr}");
    let reached = std::fs::read_to_string(&input).unwrap();
    assert!(reached.contains("list-contacts"), "{reached}");
    assert!(
        !reached.contains("create-contact") && !reached.contains("Refused Ltd"),
        "the refused call reached the server: {reached}"
    );
}

#[test]
fn pinning_refuses_a_server_that_would_work_on_another_organisation() {
    require_keychain!();
    let Some(entry) = installed_or_skip() else {
        return;
    };
    let fake = FakeXero::start();
    let (env, _tokens) = ready_profile(&fake, "mcp-pinned", Duration::from_secs(30));
    fake.add_tenant(
        "0b7d6a64-bb40-4bde-a45f-0c5bb6cf6a6e",
        "Other Org",
        "ORGANISATION",
    );
    // Xero's server takes the connection updated last: Other Org.
    fake.set_tenant_updated(fake_xero::DEFAULT_TENANT_ID, "2026-01-05T10:00:00.1000000");
    fake.set_tenant_updated(
        "0b7d6a64-bb40-4bde-a45f-0c5bb6cf6a6e",
        "2026-03-01T09:00:00.5550000",
    );
    let (marker, input) = (env.dir.path().join("started"), env.dir.path().join("input"));

    // Chosen on the command line, and as the profile's default tenant (ready_profile's).
    for options in [&["--tenant", "demo company (nz)"][..], &[]] {
        let cmd = bridge_command(&env, options, &entry, &marker, &input);
        let (status, _, stderr) = Driven::spawn(cmd).finish(WAIT);
        assert_eq!(status.code(), Some(1), "{options:?}: {stderr}");
        assert!(
            stderr.contains("would work on Other Org (0b7d6a64-bb40-4bde-a45f-0c5bb6cf6a6e), not on Demo Company (NZ)")
                && stderr.contains("tenants disconnect"),
            "{options:?}: {stderr}"
        );
        assert!(!marker.exists(), "the server was started");
    }

    // The organisation Xero's server takes: it starts; once another connection is updated
    // later, the rotation's check refuses and the running server is stopped.
    let mut cmd = bridge_command(
        &env,
        &["--tenant", "Other Org", "--check-every", "1"],
        &entry,
        &marker,
        &input,
    );
    let proxy = DeadEndProxy::start();
    cmd.env("HTTPS_PROXY", &proxy.url);
    let mut bridge = Driven::spawn(cmd);
    initialize(&mut bridge);
    assert!(marker.exists());
    fake.set_tenant_updated(fake_xero::DEFAULT_TENANT_ID, "2026-04-01T00:00:00.0000000");
    env.ok(&["refresh"]);
    bridge.wait_for_stderr("cannot start the MCP server again", WAIT);
    let (status, _, stderr) = bridge.finish(WAIT);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot start the MCP server again")
            && stderr.contains("would work on Demo Company (NZ)"),
        "{stderr}"
    );
}
