//! `xero-auth mcp`: the stdio bridge that keeps an MCP server's bearer token fresh, driven as an
//! MCP client would drive it, with a small MCP server of the tests' own
//! (tests/it/support/mcp_server.py) that reports the token it was given through a tool call.

use crate::support;

use std::collections::VecDeque;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::driven::{Driven, children_of, environ_of, holds};
use support::*;

const FRESH: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(60);

/// An MCP client on the bridge's stdin/stdout that remembers everything it was sent.
struct Client {
    bridge: Driven,
    /// Every message received, in order.
    seen: Vec<Value>,
    /// Messages received while waiting for another one, not yet looked at.
    unread: VecDeque<Value>,
}

impl Client {
    fn start(env: &TestEnv, options: &[&str]) -> Client {
        Self::start_command(env, options, &["python3", &server_script()])
    }

    fn start_command(env: &TestEnv, options: &[&str], command: &[&str]) -> Client {
        let mut args = vec!["mcp"];
        args.extend_from_slice(options);
        args.push("--");
        args.extend_from_slice(command);
        let mut cmd = env.std_cmd(&args);
        cmd.env("XERO_CLIENT_SECRET", CLIENT_SECRET)
            .env("XERO_CLIENT_ID", CLIENT_ID);
        Client {
            bridge: Driven::spawn(cmd),
            seen: Vec::new(),
            unread: VecDeque::new(),
        }
    }

    fn send(&mut self, message: Value) {
        self.bridge.send_json(&message);
    }

    /// The first message `wanted` that the client has not looked at yet, waiting for it up to
    /// `within`; the others received meanwhile stay unread.
    fn next(&mut self, what: &str, within: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(at) = self.unread.iter().position(&wanted) {
            return self.unread.remove(at).unwrap();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self
                .bridge
                .try_recv(left)
                .unwrap_or_else(|| panic!("no {what} within {within:?}; seen {:?}", self.seen));
            self.seen.push(message.clone());
            if wanted(&message) {
                return message;
            }
            self.unread.push_back(message);
        }
    }

    /// The response to request `id` (messages before it are remembered too).
    fn response(&mut self, id: &Value) -> Value {
        self.next(&format!("response to {id}"), WAIT, |m| {
            m.get("id") == Some(id) && m.get("method").is_none()
        })
    }

    /// The server's next request to the client with this method.
    fn server_request(&mut self, method: &str) -> Value {
        self.next(&format!("`{method}` request"), WAIT, |m| {
            m["method"] == method && m.get("id").is_some()
        })
    }

    fn request(&mut self, id: Value, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(&id)
    }

    /// `initialize` and `notifications/initialized`, as every MCP client opens a session.
    fn initialize(&mut self) -> Value {
        let answer = self.request(
            json!(0),
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test-client", "version": "1"}}),
        );
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        answer
    }

    /// Calls tool `whoami`; what the server reported.
    fn whoami(&mut self, id: i64, tag: &str) -> Value {
        let answer = self.request(
            json!(id),
            "tools/call",
            json!({"name": "whoami", "arguments": {"tag": tag}}),
        );
        tool_text(&answer)
    }

    /// How many `initialize` results the client was sent.
    fn initialize_results(&self) -> usize {
        self.seen
            .iter()
            .filter(|m| m["result"]["serverInfo"].is_object())
            .count()
    }

    /// Calls `whoami` until the server's pid is no longer `old_pid`.
    fn whoami_until_restarted(&mut self, first_id: i64, old_pid: &Value) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut id = first_id;
        loop {
            let me = self.whoami(id, "poll");
            if &me["pid"] != old_pid {
                return me;
            }
            assert!(Instant::now() < deadline, "the server was not restarted");
            std::thread::sleep(Duration::from_millis(200));
            id += 1;
        }
    }
}

fn server_script() -> String {
    format!(
        "{}/tests/it/support/mcp_server.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The JSON a tool put in its text content.
fn tool_text(answer: &Value) -> Value {
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a tool result: {answer}"));
    serde_json::from_str(text).unwrap()
}

#[test]
fn tool_calls_before_and_after_a_rotation_see_different_valid_tokens_and_one_initialize() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "mcp-rotate", FRESH);
    // The token comes within the 5-minute margin 8 seconds after the bridge starts (time enough
    // for a slow start not to find it within the margin already).
    env.set_stored_expiry(now() + 300 + 8);
    let mut client = Client::start(&env, &[]);
    let init = client.initialize();
    assert_eq!(init["result"]["serverInfo"]["name"], "token-echo");

    let before = client.whoami(1, "before");
    assert_eq!(before["token"], tokens.access_token.as_str());
    let after = client.whoami_until_restarted(2, &before["pid"]);

    let new_token = after["token"].as_str().unwrap();
    assert_ne!(new_token, tokens.access_token);
    assert!(fake.access_token_valid(&tokens.access_token));
    assert!(fake.access_token_valid(new_token));
    assert_eq!(env.stored_access_token(), new_token);
    assert_eq!(fake.count(Counter::Refresh), 1);
    // The new server was opened with the client's own initialize, and told it is initialized.
    assert_eq!(after["initialize_count"], 1);
    assert_eq!(after["initialized"], true);
    assert_eq!(
        client.initialize_results(),
        1,
        "the client never saw the restart"
    );
    assert!(
        client.seen.iter().all(|m| m.get("error").is_none()),
        "{:?}",
        client.seen
    );

    client.bridge.close_stdin();
    let (status, _, stderr) = client.bridge.finish(WAIT);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("token-echo server started"),
        "the server's stderr is passed on"
    );
    for secret in [
        new_token,
        &tokens.access_token,
        &tokens.refresh_token,
        CLIENT_SECRET,
    ] {
        assert!(!stderr.contains(secret), "a secret on stderr: {stderr}");
    }
}

#[test]
fn tokens_rotated_by_another_process_reach_a_new_server() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "mcp-rotated", FRESH);
    let mut client = Client::start(&env, &["--check-every", "1"]);
    client.initialize();
    let before = client.whoami(1, "before");
    assert_eq!(before["token"], tokens.access_token.as_str());

    env.ok(&["refresh"]);
    let rotated = env.stored_access_token();
    let after = client.whoami_until_restarted(2, &before["pid"]);
    assert_eq!(after["token"], rotated.as_str());
    assert_eq!(
        fake.count(Counter::Refresh),
        1,
        "the bridge made no refresh of its own"
    );
    assert_eq!(client.initialize_results(), 1);
    client.bridge.close_stdin();
    client.bridge.finish(WAIT);
}

#[test]
fn a_request_in_flight_is_answered_before_the_restart_and_held_ones_keep_their_order() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "mcp-held", FRESH);
    let mut client = Client::start(&env, &["-v", "--check-every", "1"]);
    client.initialize();
    let first = client.whoami(1, "first");

    // A call that takes 8 seconds is in flight when the tokens rotate.
    client.send(json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                       "params": {"name": "slow", "arguments": {"seconds": 8}}}));
    env.ok(&["refresh"]);
    // Once the bridge has seen the rotation (it says so with -v), it holds what comes next.
    client
        .bridge
        .wait_for_stderr("another process rotated the tokens", WAIT);
    for id in 11..=15 {
        client.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                           "params": {"name": "whoami", "arguments": {"tag": format!("held-{id}")}}}));
    }
    client.send(json!({"jsonrpc": "2.0", "id": 16, "method": "ping"}));

    let slow = client.response(&json!(10));
    assert_eq!(
        tool_text(&slow)["pid"],
        first["pid"],
        "the old server finished its work"
    );
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    while ids.len() < 6 {
        let message = client.bridge.recv(WAIT);
        client.seen.push(message.clone());
        ids.push(message["id"].as_i64().unwrap());
        if message["id"] != 16 {
            let me = tool_text(&message);
            assert_ne!(
                me["pid"], first["pid"],
                "held requests go to the new server"
            );
            assert_eq!(me["token"], env.stored_access_token().as_str());
            assert_eq!(me["tag"], format!("held-{}", message["id"]));
            seqs.push(me["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(
        ids,
        vec![11, 12, 13, 14, 15, 16],
        "held messages keep their order"
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(client.initialize_results(), 1);
    assert!(
        client.seen.iter().all(|m| m.get("error").is_none()),
        "{:?}",
        client.seen
    );
    client.bridge.close_stdin();
    client.bridge.finish(WAIT);
}

#[test]
fn a_crashed_server_is_started_again_and_its_request_gets_an_error() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "mcp-crash", FRESH);
    let mut client = Client::start(&env, &[]);
    client.initialize();
    let before = client.whoami(1, "before");

    let crashed = client.request(json!("c-1"), "tools/call", json!({"name": "crash"}));
    let message = crashed["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{crashed}"));
    assert!(
        message.contains("ended (exit status 3)") && message.contains("send the request again"),
        "{message}"
    );

    let after = client.whoami(2, "after");
    assert_ne!(after["pid"], before["pid"]);
    assert_eq!(
        after["token"],
        tokens.access_token.as_str(),
        "still valid: no refresh"
    );
    assert_eq!(after["initialized"], true, "the opening was replayed");
    assert_eq!(fake.count(Counter::Refresh), 0);
    assert_eq!(client.initialize_results(), 1);
    client.bridge.close_stdin();
    let (status, _, stderr) = client.bridge.finish(WAIT);
    assert!(status.success());
    assert!(stderr.contains("starting it again"), "{stderr}");
}

#[test]
fn a_server_that_keeps_ending_at_once_ends_the_bridge_with_its_status() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "mcp-failing", FRESH);
    let mut client = Client::start_command(&env, &[], &["sh", "-c", "exit 9"]);
    // The client stays (stdin open): the bridge gives up on its own.
    support::processes::wait_until(Duration::from_secs(90), "the bridge to give up", || {
        client.bridge.child.try_wait().unwrap().is_some()
    });
    let (status, _, stderr) = client.bridge.finish(WAIT);
    assert_eq!(status.code(), Some(9), "{stderr}");
    assert!(stderr.contains("giving up"), "{stderr}");
}

#[test]
fn the_server_gets_the_bearer_token_and_no_client_id_secret_or_refresh_token() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "mcp-environ", FRESH);
    let mut client = Client::start(&env, &[]);
    client.initialize();
    let me = client.whoami(1, "env");
    assert_eq!(me["token"], tokens.access_token.as_str());
    assert_eq!(me["client_id_present"], false);
    assert_eq!(me["client_secret_present"], false);

    let pid = me["pid"].as_u64().unwrap() as u32;
    assert_eq!(children_of(client.bridge.pid()), vec![pid]);
    let environ = environ_of(pid).expect("the server's environment is readable");
    assert!(holds(
        &environ,
        &format!("XERO_CLIENT_BEARER_TOKEN={}", tokens.access_token)
    ));
    for secret in [CLIENT_SECRET, &tokens.refresh_token, &basic_credential()] {
        assert!(
            !holds(&environ, secret),
            "a secret in the server's environment"
        );
    }
    client.bridge.close_stdin();
    client.bridge.finish(WAIT);

    // Another variable for other servers.
    let script = server_script();
    let mut client = Client::start_command(
        &env,
        &["--env-name", "MY_TOKEN"],
        &["python3", &script, "MY_TOKEN"],
    );
    client.initialize();
    assert_eq!(
        client.whoami(1, "env")["token"],
        tokens.access_token.as_str()
    );
    client.bridge.close_stdin();
    client.bridge.finish(WAIT);

    env.cmd(&["mcp", "--env-name", "BAD=NAME", "--", "true"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("environment variable name"));
}

#[test]
fn messages_pass_through_byte_for_byte() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "mcp-bytes", FRESH);
    let mut client = Client::start(&env, &[]);
    client.initialize();
    let line = r#"{ "jsonrpc" : "2.0", "id" : "x-1" ,"method":"tools/call","params":{"name":"whoami","arguments":{"tag":"Grüße ✓ \u00e9"}}}"#;
    client.bridge.send(line);
    let answer = client.response(&json!("x-1"));
    assert_eq!(tool_text(&answer)["raw"], line);
    client.bridge.close_stdin();
    client.bridge.finish(WAIT);
}

#[test]
fn a_stop_signal_ends_server_and_bridge_without_a_restart() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "mcp-signal", FRESH);
    let mut client = Client::start(&env, &[]);
    client.initialize();
    let me = client.whoami(1, "x");
    Command::new("kill")
        .args(["-TERM", &client.bridge.pid().to_string()])
        .status()
        .unwrap();
    let (status, _, stderr) = client.bridge.finish(WAIT);
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "the server's status: {stderr}"
    );
    assert!(!stderr.contains("starting it again"), "{stderr}");
    let pid = me["pid"].as_u64().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the server is gone"
    );
}

/// The client's roots, as it answers the server's `roots/list`.
fn roots_answer(question: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": question["id"],
           "result": {"roots": [{"uri": "file:///books", "name": "books"}]}})
}

#[test]
fn the_clients_answer_to_the_servers_question_reaches_it_while_a_restart_is_due() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "mcp-roots", FRESH);
    let mut client = Client::start(&env, &["-v", "--check-every", "1"]);
    client.initialize();
    let first = client.whoami(1, "first");

    // The server asks the client for its roots 4 s into the call, and answers the call only
    // once it has them; the tokens rotate meanwhile.
    client.send(json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                       "params": {"name": "roots", "arguments": {"after": 4}}}));
    env.ok(&["refresh"]);
    client
        .bridge
        .wait_for_stderr("another process rotated the tokens", WAIT);
    let due = Instant::now();
    // The server's question reaches the client while the restart waits, and so does the
    // client's answer the server.
    let question = client.server_request("roots/list");
    client.send(roots_answer(&question));
    client.send(json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                       "params": {"name": "whoami", "arguments": {"tag": "held"}}}));

    let call = client.response(&json!(10));
    let call = tool_text(&call);
    assert_eq!(
        call["pid"], first["pid"],
        "the old server answered its call"
    );
    assert_eq!(call["roots"]["roots"][0]["uri"], "file:///books");
    assert!(
        due.elapsed() < Duration::from_secs(20),
        "the call waited for the restart's time limit: {:?}",
        due.elapsed()
    );
    let held = tool_text(&client.response(&json!(11)));
    assert_ne!(
        held["pid"], first["pid"],
        "the held call goes to the new server"
    );
    assert_eq!(held["token"], env.stored_access_token().as_str());
    assert_eq!(
        held["stray"],
        json!([]),
        "the new server got no answer it never asked for"
    );
    assert_eq!(client.initialize_results(), 1);
    assert!(
        client.seen.iter().all(|m| m.get("error").is_none()),
        "{:?}",
        client.seen
    );
    client.bridge.close_stdin();
    client.bridge.finish(WAIT);
}

#[test]
fn a_cancellation_reaches_the_server_running_the_request_while_a_restart_is_due() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "mcp-cancel", FRESH);
    let mut client = Client::start(&env, &["-v", "--check-every", "1"]);
    client.initialize();
    let first = client.whoami(1, "first");

    client.send(json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                       "params": {"name": "slow", "arguments": {"seconds": 15}}}));
    env.ok(&["refresh"]);
    client
        .bridge
        .wait_for_stderr("another process rotated the tokens", WAIT);
    let due = Instant::now();
    client.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                       "params": {"requestId": 10, "reason": "the user gave up"}}),
    );
    client.send(json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                       "params": {"name": "whoami", "arguments": {"tag": "after"}}}));

    let after = tool_text(&client.response(&json!(11)));
    assert_ne!(after["pid"], first["pid"]);
    assert_eq!(
        after["cancelled"],
        json!([]),
        "the new server never had the request"
    );
    assert!(
        due.elapsed() < Duration::from_secs(10),
        "the restart waited for a withdrawn request: {:?}",
        due.elapsed()
    );
    client.bridge.close_stdin();
    let (_, rest, stderr) = client.bridge.finish(WAIT);
    assert!(
        stderr.contains(&format!(
            "token-echo server {}: request 10 cancelled",
            first["pid"]
        )),
        "the old server was told: {stderr}"
    );
    let rest: Vec<Value> = rest
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        client.seen.iter().chain(&rest).all(|m| m["id"] != 10),
        "a withdrawn request gets no answer: {:?} {rest:?}",
        client.seen
    );
}

#[test]
fn a_crashed_servers_question_is_withdrawn_and_a_late_answer_reaches_no_other_server() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "mcp-crash-question", FRESH);
    let mut client = Client::start(&env, &[]);
    client.initialize();
    let first = client.whoami(1, "first");

    client.send(json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
                       "params": {"name": "roots", "arguments": {"after": 0}}}));
    let question = client.server_request("roots/list");
    let crashed = client.request(json!(11), "tools/call", json!({"name": "crash"}));
    assert!(crashed["error"].is_object(), "{crashed}");
    let withdrawn = client.next("notifications/cancelled", Duration::from_secs(10), |m| {
        m["method"] == "notifications/cancelled"
    });
    assert_eq!(withdrawn["params"]["requestId"], question["id"]);
    let reason = withdrawn["params"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("ended (exit status 3)"), "{withdrawn}");
    assert!(client.response(&json!(10))["error"].is_object());

    // The client answers anyway, late; the next server never asked.
    client.send(roots_answer(&question));
    let after = client.whoami(12, "after");
    assert_ne!(after["pid"], first["pid"]);
    assert_eq!(
        after["stray"],
        json!([]),
        "the answer reached a server that never asked"
    );
    client.bridge.close_stdin();
    client.bridge.finish(WAIT);
}

#[test]
fn allow_and_deny_patterns_from_the_config_and_the_command_line_add_up_and_deny_wins() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _tokens) = ready_profile(&fake, "mcp-patterns", FRESH);
    env.ok(&["config", "set", "mcp_deny_tools", "crash"]);
    env.ok(&["config", "set", "mcp_allow_tools", "whoami cr*"]);
    let mut client = Client::start(&env, &["--allow-tool", "s?o*"]);
    client.initialize();
    let listed = client.request(json!(1), "tools/list", json!({}));
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {listed}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["whoami", "slow"], "{listed}");

    for (id, tool, rule, names_it) in [
        (
            2,
            "crash",
            "deny-tool",
            "'crash' (mcp_deny_tools in the profile's configuration)",
        ),
        (3, "roots", "allow-tool", "'s?o*' (--allow-tool)"),
    ] {
        let refused = client.request(json!(id), "tools/call", json!({"name": tool}));
        assert_eq!(refused["error"]["code"], -32602, "{refused}");
        assert_eq!(refused["error"]["data"]["rule"], rule, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(names_it)),
            "{refused}"
        );
    }
    // The refused calls never reached the server: this is the first call it counts, and it
    // did not crash.
    assert_eq!(client.whoami(4, "after")["seq"], 1);
    let (status, _, stderr) = client.bridge.finish(WAIT);
    assert!(status.success(), "{stderr}");
}
