//! Xero's own MCP server (`@xeroapi/xero-mcp-server`, installed by scripts/install-mcp-server)
//! under `xero-auth mcp`, driven as an MCP client would: `initialize`, `tools/list`, a rotation
//! of the tokens, `tools/list` again. Its tools call api.xero.com, which tests never reach, so
//! none is called.
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

/// The installed server's entry point, or why there is none.
fn xero_mcp_server() -> Result<PathBuf, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-mcp-server");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

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
    let entry = match xero_mcp_server() {
        Ok(entry) => entry,
        Err(why) => {
            if std::env::var("XERO_AUTH_REQUIRE_MCP_SERVER").as_deref() == Ok("1") {
                panic!("Xero's MCP server is required here but could not be installed: {why}");
            }
            eprintln!("skipped: Xero's MCP server is not available ({why})");
            return;
        }
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
