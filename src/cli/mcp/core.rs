//! The bridge's state machine, without I/O: [`Core::on`] takes what happened ([`Event`]) and
//! returns what to do ([`Action`]); the driver (`super::driver`) reads the client, runs the
//! server, fetches tokens and keeps time, and hands each of those to the core as an event.
//!
//! The core never waits: the time is given with each event, and [`Core::next_wake`] says when
//! the driver is to come back with [`Event::Tick`]. It is generic over the token `T` it hands
//! to [`Action::Start`], so unit tests drive it with plain strings.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;

use super::guard::{Annotations, Guard};
use super::message::{self as mcp, Id, Message};

/// The method that calls a tool (`params.name`).
const TOOLS_CALL: &str = "tools/call";
/// JSON-RPC's "invalid params", which MCP answers a call of an unknown tool with: the client is
/// told the tool is not there for it, and why.
const REFUSED_CODE: i64 = -32602;
/// JSON-RPC's "parse error".
const PARSE_ERROR: i64 = -32700;

/// How long a restart waits for the requests in flight to be answered.
const QUIET_WAIT: Duration = Duration::from_secs(30);
/// How long a new server may take to answer the replayed `initialize`.
const INIT_WAIT: Duration = Duration::from_secs(30);
/// A server that ends sooner than this after it started counts as failing to start…
const QUICK_END: Duration = Duration::from_secs(10);
/// …and after this many such ends in a row the bridge gives up.
const MAX_QUICK_ENDS: u32 = 5;
/// The longest pause between two starts of a failing server.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long to wait before trying again when no fresh token could be had.
const TOKEN_RETRY: Duration = Duration::from_secs(30);

/// A fresh token for a server, as the driver fetched it.
#[derive(Debug)]
pub struct Fresh<T> {
    /// What [`Action::Start`] hands back to the driver.
    pub token: T,
    /// SHA-256 of the access token (none when the set has none): enough to see that the stored
    /// one changed, without keeping the token.
    pub digest: Option<Vec<u8>>,
    /// Seconds until the access token expires.
    pub valid_for: i64,
    /// The scope names the set was granted (and the access token claims): what a tool refused
    /// for want of a scope is compared with.
    pub scopes: Vec<String>,
}

/// What happened.
#[derive(Debug)]
pub enum Event<T> {
    /// A line from the client (no line end; never blank).
    Client(Vec<u8>),
    /// The client closed its stdin.
    ClientClosed,
    /// Writing to the client failed: its stdout is closed.
    ClientGone,
    /// A line from server number `.0`.
    ServerLine(u64, Vec<u8>),
    /// Server number `generation` ended with exit status `code`.
    ServerExited {
        /// Which server.
        generation: u64,
        /// Its exit status (128 + the signal that ended it).
        code: i32,
    },
    /// A stop signal came (given again and again once it came: it does not go away).
    StopSignal(i32),
    /// The answer to [`Action::FetchToken`]: a fresh token, or why there is none.
    Token(Result<Fresh<T>, String>),
    /// [`Action::Start`] started server number `.0`.
    Started(u64),
    /// [`Action::Start`] failed: what went wrong and the exit status to end with.
    StartFailed {
        /// The error, for the user.
        message: String,
        /// Its exit code.
        code: i32,
    },
    /// The answer to [`Action::LookForRotation`]: the digest of the stored access token when
    /// it is valid for the margin.
    Stored(Option<Vec<u8>>),
    /// The time given with the event has come ([`Core::next_wake`]).
    Tick,
    /// The bridge must end now with this status (its inputs are gone).
    Abort(i32),
}

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<T> {
    /// Write this line (and a line end) to the client.
    ToClient(Vec<u8>),
    /// Write this line (and a line end) to the running server.
    ToServer(Vec<u8>),
    /// Fetch a fresh token and answer with [`Event::Token`].
    FetchToken,
    /// Start server number `generation` with `token` and pass on signals to it; answer with
    /// [`Event::Started`] or [`Event::StartFailed`].
    Start {
        /// Its number, for its lines and its end.
        generation: u64,
        /// Its token.
        token: T,
    },
    /// Close the server's stdin (the transport's way to say "stop") and kill it if it has not
    /// ended after a grace time. It stays the running one.
    CloseInput(u64),
    /// As `CloseInput`, and it is no longer the running one: signals are not passed on to it,
    /// and its later lines and end are ignored.
    Retire(u64),
    /// Kill the server now; signals are no longer passed on to it.
    Kill(u64),
    /// Read the stored token set and answer with [`Event::Stored`].
    LookForRotation,
    /// Tell the user on stderr.
    Say(String),
    /// Log at info level.
    Info(String),
    /// Log at debug level.
    Debug(&'static str),
    /// Write a tool call to the audit log: its name (never its arguments), how it ended, and
    /// how long the server took.
    ToolCall {
        /// The tool's name as the client gave it (`None`: it gave none).
        tool: Option<String>,
        /// `ok` or `error` (the server's answer), or `refused` (by the guard rails).
        status: &'static str,
        /// The guard rail's rule that refused it.
        rule: Option<&'static str>,
        /// From the call to the server's answer.
        duration: Option<Duration>,
    },
    /// End the bridge with this status.
    Exit(i32),
}

/// What the core needs to know of the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A server is replaced when its token expires within this many seconds.
    pub min_valid: i64,
    /// How often to look whether another process rotated the tokens.
    pub check_every: Duration,
    /// Which tools the client may see and call.
    pub guard: Guard,
    /// The profile's name, for the commands messages suggest.
    pub profile: String,
}

/// The requests in flight between the client and the running server, both ways: when the
/// server is quiet, and where a line of the client goes.
#[derive(Debug, Default)]
struct Exchanges {
    /// Ids of the client's requests the running server has not answered.
    client_requests: HashSet<Id>,
    /// Ids of the running server's requests the client has not answered.
    server_requests: HashSet<Id>,
}

/// Where a line of the client goes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// To the running server, now.
    Forward,
    /// Kept for the next server, in order.
    Hold,
    /// Nowhere: an answer to a request the running server never made (its server was replaced,
    /// or ended).
    Drop,
}

impl Exchanges {
    /// Whether nothing is in flight either way.
    fn is_quiet(&self) -> bool {
        self.client_requests.is_empty() && self.server_requests.is_empty()
    }

    /// Where a client line holding `messages` goes, noting what it starts or ends. While
    /// `holding` (a restart is due, or no server runs), new requests and notifications wait for
    /// the next server, but a line that only carries on the running server's exchanges — answers
    /// to its requests, cancellations of requests it has, progress on its requests — goes to it
    /// now: the server may be waiting for exactly that before it answers, and the next server
    /// never heard of them.
    fn route_client(&mut self, messages: &[Message], holding: bool) -> Route {
        if holding && !messages.iter().all(|m| self.carries_on(m)) {
            return Route::Hold;
        }
        let mut forward = false;
        for message in messages {
            match message {
                Message::Request { id, .. } => {
                    self.client_requests.insert(id.clone());
                    forward = true;
                }
                Message::Notification { cancelled, .. } => {
                    if let Some(id) = cancelled {
                        // A withdrawn request may never be answered: it no longer keeps the
                        // server busy.
                        self.client_requests.remove(id);
                    }
                    forward = true;
                }
                // An answer to a request the running server never made (one made by a server
                // since replaced): the running one would take it for an answer of its own.
                Message::Response { id } => forward |= self.server_requests.remove(id),
                Message::Other => forward = true,
            }
        }
        if forward { Route::Forward } else { Route::Drop }
    }

    /// Whether `message` belongs to an exchange the running server has open (an answer to a
    /// request it never made counts too: it is dropped, not held).
    fn carries_on(&self, message: &Message) -> bool {
        match message {
            Message::Response { .. } => true,
            Message::Notification {
                cancelled: Some(id),
                ..
            } => self.client_requests.contains(id),
            Message::Notification { method, .. } => {
                method == mcp::PROGRESS && !self.server_requests.is_empty()
            }
            Message::Request { .. } | Message::Other => false,
        }
    }

    /// Notes what a line of the server starts or ends.
    fn note_server_line(&mut self, messages: &[Message]) {
        for message in messages {
            match message {
                Message::Response { id } => {
                    self.client_requests.remove(id);
                }
                Message::Request { id, .. } => {
                    self.server_requests.insert(id.clone());
                }
                Message::Notification { .. } | Message::Other => {}
            }
        }
    }

    /// Forgets everything in flight (the server goes): the client's requests left unanswered
    /// and the server's, each in id order.
    fn take_all(&mut self) -> (Vec<Id>, Vec<Id>) {
        let mut client: Vec<Id> = self.client_requests.drain().collect();
        let mut server: Vec<Id> = self.server_requests.drain().collect();
        client.sort();
        server.sort();
        (client, server)
    }
}

/// The server running now.
#[derive(Debug)]
struct Running {
    /// Its number: output and ends of servers no longer running are ignored.
    generation: u64,
    /// Whether its stdin is still open.
    input_open: bool,
    started: Instant,
    /// SHA-256 of the access token it was given.
    token_digest: Option<Vec<u8>>,
}

/// A restart that was asked for.
#[derive(Debug)]
struct Restart {
    why: String,
    /// Not before this moment (backoff after a failure).
    not_before: Instant,
    /// The requests in flight have until then to be answered.
    quiet_by: Instant,
}

/// Where a start of a server is.
#[derive(Debug)]
enum Phase {
    /// No start under way.
    Idle,
    /// Waiting for [`Event::Token`].
    Fetching,
    /// Waiting for [`Event::Started`] of server `generation`; `why` is the restart's reason
    /// (none for the first server).
    Starting {
        generation: u64,
        digest: Option<Vec<u8>>,
        valid_for: i64,
        why: Option<String>,
    },
    /// The new server has the client's `initialize` (request `id`) and has until `deadline` to
    /// answer it.
    Initializing {
        id: Id,
        deadline: Instant,
        why: String,
    },
}

/// The bridge's state.
#[derive(Debug)]
pub struct Core<T> {
    settings: Settings,
    child: Option<Running>,
    /// Servers started so far.
    generation: u64,
    phase: Phase,
    /// The client's `initialize` request (the line as sent) and its id.
    init: Option<(Vec<u8>, Id)>,
    /// The client's `notifications/initialized` line.
    initialized: Option<Vec<u8>>,
    /// What is in flight between the client and the running server.
    exchanges: Exchanges,
    /// Client lines held while a restart is due.
    held: VecDeque<Vec<u8>>,
    restart: Option<Restart>,
    /// When the server's token comes within the margin of its expiry.
    rotate_at: Instant,
    /// When to look next whether another process rotated the tokens.
    next_poll: Instant,
    /// Servers in a row that ended soon after starting.
    quick_ends: u32,
    /// The client went, or a stop signal came: start no server again.
    stopping: bool,
    /// The stop signal that came, if any.
    signal: Option<i32>,
    /// The status to end with, once known.
    finished: Option<i32>,
    /// [`Action::Exit`] was given.
    ended: bool,
    /// The annotations of the tools the servers listed (`None`: listed without any), by name:
    /// what the guard decides a `tools/call` by.
    listed_tools: HashMap<String, Option<Annotations>>,
    /// The client's `tools/call` requests in flight, by id: their tool names and when they
    /// went to the server, for the audit log ([`Action::ToolCall`]) and to tell a refused one's
    /// missing scope ([`Core::tell_missing_scope`]).
    tool_calls: HashMap<Id, (String, Instant)>,
    /// The time of the event being handled.
    now: Instant,
    /// The scope names of the latest fresh token.
    granted: Vec<String>,
    /// The tools whose missing scope was told (once each).
    told_scopes: HashSet<String>,
    actions: Vec<Action<T>>,
}

/// At most this many `tools/call` requests are remembered in flight (a client that never gets
/// answers cannot grow the map without bound).
const MAX_TOOL_CALLS: usize = 1024;

impl<T> Core<T> {
    /// The bridge before its first server: [`Action::Start`] of server 1 with `fresh`'s token.
    pub fn new(settings: Settings, fresh: Fresh<T>, now: Instant) -> (Self, Action<T>) {
        let core = Core {
            child: None,
            generation: 1,
            phase: Phase::Starting {
                generation: 1,
                digest: fresh.digest,
                valid_for: fresh.valid_for,
                why: None,
            },
            init: None,
            initialized: None,
            exchanges: Exchanges::default(),
            held: VecDeque::new(),
            restart: None,
            rotate_at: now,
            next_poll: now + settings.check_every,
            settings,
            quick_ends: 0,
            stopping: false,
            signal: None,
            finished: None,
            ended: false,
            listed_tools: HashMap::new(),
            tool_calls: HashMap::new(),
            now,
            granted: fresh.scopes,
            told_scopes: HashSet::new(),
            actions: Vec::new(),
        };
        let start = Action::Start {
            generation: 1,
            token: fresh.token,
        };
        (core, start)
    }

    /// What to do after `event`, which happened at `now`.
    pub fn on(&mut self, event: Event<T>, now: Instant) -> Vec<Action<T>> {
        self.now = now;
        match event {
            Event::Client(line) => self.on_client(line),
            Event::ClientClosed => {
                self.actions.push(Action::Debug(
                    "the client closed stdin: stopping the server",
                ));
                self.stop();
                if self.child.is_none() {
                    self.finished.get_or_insert(0);
                }
            }
            Event::ClientGone => {
                if !self.stopping {
                    self.actions.push(Action::Debug(
                        "the client's stdout is closed: stopping the server",
                    ));
                    self.stop();
                }
            }
            Event::ServerLine(generation, line) if self.is_running(generation) => {
                self.on_server_line(line);
            }
            Event::ServerExited { generation, code } if self.is_running(generation) => {
                self.on_server_exit(code, now);
            }
            // Output and ends of servers already replaced.
            Event::ServerLine(..) | Event::ServerExited { .. } => {}
            Event::StopSignal(signal) => self.on_signal(signal),
            Event::Token(fresh) if matches!(self.phase, Phase::Fetching) => {
                self.phase = Phase::Idle;
                match fresh {
                    Ok(fresh) => self.on_token(fresh, now),
                    Err(why) => self.no_token(&why, now),
                }
            }
            Event::Started(generation) => self.on_started(generation, now),
            Event::StartFailed { message, code } => {
                self.phase = Phase::Idle;
                // No server is started again, and a running one (the check before its
                // replacement refused) is stopped now: it would go on working on whatever the
                // check refused.
                if let Some(old) = self.child.take() {
                    self.end_exchanges(
                        &format!("xero-auth mcp: {message}"),
                        &format!("xero-auth mcp: {message}"),
                    );
                    self.actions.push(Action::Kill(old.generation));
                }
                self.say(format!(
                    "xero-auth mcp: cannot start the MCP server again: {message}"
                ));
                self.answer_held(&format!("xero-auth mcp: {message}"));
                self.finished = Some(code);
            }
            Event::Stored(digest) => {
                let rotated = match (&self.child, digest) {
                    (Some(running), Some(stored)) => running.token_digest.as_ref() != Some(&stored),
                    _ => false,
                };
                if rotated && self.watching() {
                    self.ask_restart(
                        "another process rotated the tokens".into(),
                        Duration::ZERO,
                        now,
                    );
                }
            }
            Event::Tick => self.on_tick(now),
            Event::Abort(status) => {
                self.finished = Some(status);
            }
            Event::Token(_) => {}
        }
        self.settle(now);
        std::mem::take(&mut self.actions)
    }

    /// When to come back with [`Event::Tick`], if the core waits for a time.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        if let Phase::Initializing { deadline, .. } = self.phase {
            return Some(deadline);
        }
        if let Some(r) = &self.restart {
            return Some(if self.exchanges.is_quiet() {
                r.not_before
            } else {
                r.quiet_by.max(r.not_before)
            });
        }
        self.watching().then(|| self.rotate_at.min(self.next_poll))
    }

    /// Whether a server runs (the driver looks for stop signals on its own when none does:
    /// none is passed on to wake it).
    pub fn has_server(&self) -> bool {
        self.child.is_some()
    }

    /// Whether server number `generation` is the one running.
    pub fn is_running(&self, generation: u64) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| c.generation == generation)
    }

    /// Whether the running server's token is watched: it runs, and no restart is due.
    fn watching(&self) -> bool {
        self.restart.is_none() && self.child.is_some() && !self.stopping
    }

    /// Ends the bridge once its status is known, else starts a restart that is due.
    fn settle(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if let Some(signal) = self.signal
            && self.child.is_none()
        {
            self.finished.get_or_insert(128 + signal);
        }
        if let Some(status) = self.finished {
            self.answer_all_waiting("the bridge is ending");
            self.actions.push(Action::Exit(status));
            self.ended = true;
            return;
        }
        if matches!(self.phase, Phase::Idle) && self.restart_due(now) {
            self.phase = Phase::Fetching;
            self.actions.push(Action::FetchToken);
        }
    }

    fn restart_due(&self, now: Instant) -> bool {
        !self.stopping
            && self.restart.as_ref().is_some_and(|r| {
                now >= r.not_before && (self.exchanges.is_quiet() || now >= r.quiet_by)
            })
    }

    fn on_tick(&mut self, now: Instant) {
        if let Phase::Initializing { deadline, .. } = self.phase
            && now >= deadline
        {
            self.phase = Phase::Idle;
            // A failed start: that server goes (killed at once), a new one is due.
            let what = format!(
                "the new MCP server did not answer `initialize` within {} s",
                INIT_WAIT.as_secs()
            );
            let message = format!("xero-auth mcp: {what}");
            self.end_exchanges(&message, &message);
            let lived = self.child.take().map(|c| {
                self.actions.push(Action::Kill(c.generation));
                now.saturating_duration_since(c.started)
            });
            self.after_server_end(what, lived.unwrap_or_default(), 1, now);
            return;
        }
        if !self.watching() {
            return;
        }
        if now >= self.rotate_at {
            self.ask_restart(
                "its token comes within the margin of expiry".into(),
                Duration::ZERO,
                now,
            );
        } else if now >= self.next_poll {
            self.next_poll = now + self.settings.check_every;
            self.actions.push(Action::LookForRotation);
        }
    }

    /// A line from the client: to the server, held while a restart is due (unless it carries
    /// on the running server's exchanges), or dropped.
    fn on_client(&mut self, line: Vec<u8>) {
        let Some(line) = self.guard_client_line(line) else {
            return;
        };
        let holding = self.restart.is_some() || self.child.is_none();
        let messages = mcp::classify(&line);
        match self.exchanges.route_client(&messages, holding) {
            Route::Hold => self.held.push_back(line),
            Route::Drop => self.actions.push(Action::Debug(
                "dropped the client's answer to a request of a server no longer running",
            )),
            Route::Forward => {
                for message in messages {
                    match message {
                        Message::Request { id, method } if method == mcp::INITIALIZE => {
                            self.init = Some((line.clone(), id));
                        }
                        Message::Notification { method, .. } if method == mcp::INITIALIZED => {
                            self.initialized = Some(line.clone());
                        }
                        _ => {}
                    }
                }
                self.remember_tool_calls(&line);
                self.send_to_server(line);
            }
        }
    }

    /// Notes the `tools/call` requests of a client line that goes to the server.
    fn remember_tool_calls(&mut self, line: &[u8]) {
        for (id, tool) in mcp::tool_calls(line) {
            if self.tool_calls.len() < MAX_TOOL_CALLS {
                self.tool_calls.insert(id, (tool, self.now));
            }
        }
    }

    /// The server's answers to tool calls: each goes to the audit log (its name, `ok` or
    /// `error`, the time the server took), and one Xero refused may name a missing scope.
    fn on_tool_results(&mut self, line: &[u8]) {
        if self.tool_calls.is_empty() {
            return;
        }
        for outcome in mcp::outcomes(line) {
            let Some((tool, started)) = self.tool_calls.remove(&outcome.id) else {
                continue;
            };
            if outcome.refused_by_xero {
                self.tell_missing_scope(&tool);
            }
            self.actions.push(Action::ToolCall {
                tool: Some(tool),
                status: if outcome.is_error { "error" } else { "ok" },
                rule: None,
                duration: Some(self.now.saturating_duration_since(started)),
            });
        }
    }

    /// Xero's MCP server answers a call Xero refused (401, 403) with a tool error, whatever the
    /// reason. When the token has none of the scopes the tool's call needs (the table of
    /// `crate::scopes`), that is the reason: say so once per tool, with the login that adds the
    /// narrowest one. Scope names only, never a token.
    fn tell_missing_scope(&mut self, tool: &str) {
        if self.told_scopes.contains(tool) {
            return;
        }
        let Some((method, path, needed)) = crate::scopes::needed_for_tool(tool) else {
            return;
        };
        if needed.is_empty() || crate::scopes::grants(&self.granted, &needed) {
            return;
        }
        let Some(best) = crate::scopes::narrowest(&needed, method) else {
            return;
        };
        let names: Vec<&str> = needed.iter().map(|s| s.name).collect();
        let granted = if self.granted.is_empty() {
            "no scopes".to_string()
        } else {
            self.granted.join(" ")
        };
        self.told_scopes.insert(tool.to_string());
        self.say(format!(
            "xero-auth mcp: Xero refused the tool {tool} ({method} {path}): it needs {} and \
             the token was granted {granted}; {} adds it (with the profile's other scopes), \
             and the bridge's next rotation or a restart uses it",
            names.join(" or "),
            crate::hint::command(
                &self.settings.profile,
                &format!("login --scope {}", best.name)
            )
        ));
    }

    /// A line of the running server: to the client, unless it is the new server's answer to
    /// the replayed `initialize` (the client had its answer from the first server).
    fn on_server_line(&mut self, line: Vec<u8>) {
        let Some(line) = self.guard_server_line(line) else {
            return;
        };
        let messages = mcp::classify(&line);
        if let Phase::Initializing { id, why, .. } = &self.phase
            && messages
                .iter()
                .any(|m| matches!(m, Message::Response { id: got } if got == id))
        {
            let why = why.clone();
            self.phase = Phase::Idle;
            if let Some(line) = self.initialized.clone() {
                self.send_to_server(line);
            }
            self.restarted(&why);
            return;
        }
        self.exchanges.note_server_line(&messages);
        self.on_tool_results(&line);
        self.actions.push(Action::ToClient(line));
    }

    /// Stops the bridge at a stop signal (it was passed on to the server, which is about to
    /// end, or has: its end must not count as a crash).
    fn on_signal(&mut self, signal: i32) {
        self.signal = Some(signal);
        if !self.stopping {
            self.info(format!(
                "stop signal {signal}: the server ends, and is not started again"
            ));
            self.stop();
        }
    }

    fn on_server_exit(&mut self, code: i32, now: Instant) {
        let lived = self
            .child
            .take()
            .map(|c| now.saturating_duration_since(c.started))
            .unwrap_or_default();
        // A replayed `initialize` that will not be answered.
        self.phase = Phase::Idle;
        if self.stopping {
            self.finished = Some(code);
            return;
        }
        let what = format!("the MCP server ended (exit status {code})");
        self.end_exchanges(
            &format!(
                "xero-auth mcp: {what} before answering; it is being started again — send the request again"
            ),
            &format!("xero-auth mcp: {what} before this request was answered"),
        );
        self.after_server_end(what, lived, code, now);
    }

    /// Counts an end of the server (it crashed, or a new one failed to start) and asks for a
    /// restart after a backoff, or gives up after too many quick ends in a row.
    fn after_server_end(&mut self, what: String, lived: Duration, code: i32, now: Instant) {
        self.quick_ends = if lived < QUICK_END {
            self.quick_ends + 1
        } else {
            1
        };
        if self.quick_ends >= MAX_QUICK_ENDS {
            self.say(format!(
                "xero-auth mcp: {what}, the {MAX_QUICK_ENDS}th time in a row within {} s of starting; giving up",
                QUICK_END.as_secs()
            ));
            self.finished = Some(code);
            return;
        }
        let backoff = (Duration::from_secs(1) * 2u32.pow(self.quick_ends - 1)).min(MAX_BACKOFF);
        self.say(format!(
            "xero-auth mcp: {what}; starting it again in {} s",
            backoff.as_secs()
        ));
        self.ask_restart(what, backoff, now);
    }

    fn ask_restart(&mut self, why: String, after: Duration, now: Instant) {
        self.info(format!("restart of the MCP server due: {why}"));
        self.restart = Some(Restart {
            why,
            not_before: now + after,
            quiet_by: now + after + QUIET_WAIT,
        });
    }

    /// No fresh token for the restart: the running server keeps the one it has, or, with none
    /// running, the held requests are answered; either way it is tried again later.
    fn no_token(&mut self, err: &str, now: Instant) {
        self.say(format!(
            "xero-auth mcp: no fresh token for the MCP server ({err}); trying again in {} s",
            TOKEN_RETRY.as_secs()
        ));
        if self.child.is_some() {
            self.restart = None;
            self.rotate_at = now + TOKEN_RETRY;
            self.release_held();
        } else {
            self.answer_held(&format!(
                "xero-auth mcp: the MCP server is not running: no fresh token ({err})"
            ));
            if let Some(r) = self.restart.as_mut() {
                r.not_before = now + TOKEN_RETRY;
                r.quiet_by = now + TOKEN_RETRY;
            }
        }
    }

    /// A fresh token for the restart: the running server goes and a new one is started with it,
    /// unless it is the token the running server has.
    fn on_token(&mut self, fresh: Fresh<T>, now: Instant) {
        self.granted.clone_from(&fresh.scopes);
        let same_token = match (&self.child, &fresh.digest) {
            (Some(running), Some(digest)) => running.token_digest.as_ref() == Some(digest),
            _ => false,
        };
        if same_token {
            // The token it has is still the best there is (another process's refresh came
            // between): nothing to do until it comes within the margin.
            self.restart = None;
            self.schedule_rotation(fresh.valid_for, now);
            self.release_held();
            return;
        }
        let why = self
            .restart
            .as_ref()
            .map(|r| r.why.clone())
            .unwrap_or_default();
        self.end_exchanges(
            &format!(
                "xero-auth mcp: the MCP server was restarted with a fresh Xero token ({why}) before it answered this request (it was still busy after {} s); send the request again",
                QUIET_WAIT.as_secs()
            ),
            &format!(
                "xero-auth mcp: the MCP server that asked was replaced by one with a fresh Xero token ({why}) before this request was answered (it was still open after {} s)",
                QUIET_WAIT.as_secs()
            ),
        );
        if let Some(old) = self.child.take() {
            self.actions.push(Action::Retire(old.generation));
        }
        self.generation += 1;
        self.phase = Phase::Starting {
            generation: self.generation,
            digest: fresh.digest,
            valid_for: fresh.valid_for,
            why: Some(why),
        };
        self.actions.push(Action::Start {
            generation: self.generation,
            token: fresh.token,
        });
    }

    /// Server `generation` runs: a new one is sent the client's `initialize` (its answer is
    /// awaited before the held lines go), the first one just runs.
    fn on_started(&mut self, generation: u64, now: Instant) {
        let Phase::Starting {
            generation: expected,
            ..
        } = self.phase
        else {
            return;
        };
        if generation != expected {
            return;
        }
        let Phase::Starting {
            digest,
            valid_for,
            why,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        self.schedule_rotation(valid_for, now);
        self.child = Some(Running {
            generation,
            input_open: true,
            started: now,
            token_digest: digest,
        });
        if self.stopping {
            // The client went while it started.
            self.stop();
            return;
        }
        let Some(why) = why else {
            return;
        };
        match self.init.clone() {
            Some((line, id)) => {
                self.send_to_server(line);
                self.phase = Phase::Initializing {
                    id,
                    deadline: now + INIT_WAIT,
                    why,
                };
            }
            None => self.restarted(&why),
        }
    }

    /// The new server is ready: the restart is done and the held lines go to it.
    fn restarted(&mut self, why: &str) {
        self.info(format!(
            "started a new MCP server with a fresh token ({why})"
        ));
        self.restart = None;
        self.release_held();
    }

    /// Renews the server's token when it comes within the margin (`valid_for`: seconds it has
    /// left): one second late rather than early, so that the refresh protocol (which keeps
    /// tokens valid for more than the margin) then replaces it.
    fn schedule_rotation(&mut self, valid_for: i64, now: Instant) {
        let left = valid_for - self.settings.min_valid;
        self.rotate_at = now + Duration::from_secs(left.max(0) as u64 + 1);
    }

    /// Starts no server again, and asks the running one to end (stdin closed, then killed).
    fn stop(&mut self) {
        self.stopping = true;
        self.restart = None;
        if !matches!(self.phase, Phase::Starting { .. }) {
            self.phase = Phase::Idle;
        }
        if let Some(child) = self.child.as_mut()
            && child.input_open
        {
            child.input_open = false;
            self.actions.push(Action::CloseInput(child.generation));
        }
    }

    fn release_held(&mut self) {
        while let Some(line) = self.held.pop_front() {
            self.on_client(line);
            if self.restart.is_some() || self.child.is_none() {
                break;
            }
        }
    }

    fn send_to_server(&mut self, line: Vec<u8>) {
        if self.child.as_ref().is_some_and(|c| c.input_open) {
            self.actions.push(Action::ToServer(line));
        }
    }

    /// Ends what is in flight with the server that goes: the client's requests it has not
    /// answered get an error saying `answer`; its own requests the client has not answered are
    /// withdrawn from the client with `notifications/cancelled` saying `reason`, so that the
    /// client stops (an elicitation form, a sampling request) and does not answer a server that
    /// is no longer there.
    fn end_exchanges(&mut self, answer: &str, reason: &str) {
        // Their answers will not come from the server that goes: to the audit log as such.
        let now = self.now;
        for (_, (tool, started)) in self.tool_calls.drain() {
            self.actions.push(Action::ToolCall {
                tool: Some(tool),
                status: "no-answer",
                rule: None,
                duration: Some(now.saturating_duration_since(started)),
            });
        }
        let (client_requests, server_requests) = self.exchanges.take_all();
        for id in client_requests {
            self.actions
                .push(Action::ToClient(mcp::error_response(&id, answer)));
        }
        for id in server_requests {
            self.actions
                .push(Action::ToClient(mcp::cancelled_notification(&id, reason)));
        }
    }

    /// Answers the held requests (and drops the held notifications and responses).
    fn answer_held(&mut self, message: &str) {
        let held: Vec<Vec<u8>> = self.held.drain(..).collect();
        for line in held {
            for m in mcp::classify(&line) {
                if let Message::Request { id, .. } = m {
                    self.actions
                        .push(Action::ToClient(mcp::error_response(&id, message)));
                }
            }
        }
    }

    fn answer_all_waiting(&mut self, why: &str) {
        let message = format!("xero-auth mcp: {why} before the MCP server answered");
        self.end_exchanges(&message, &format!("xero-auth mcp: {why}"));
        self.answer_held(&message);
    }

    /// Applies the guard rails to a line of the client: answers each `tools/call` they refuse
    /// (none of it reaches a server) and returns what is left to pass on, if anything. Without
    /// rails the line is passed on as it is.
    ///
    /// With rails, a line the bridge cannot read as JSON is refused too (answered with a parse
    /// error): the server might read it otherwise (invalid UTF-8, a lone surrogate) and find a
    /// call in it that the bridge never saw.
    fn guard_client_line(&mut self, line: Vec<u8>) -> Option<Vec<u8>> {
        if !self.settings.guard.is_active() {
            return Some(line);
        }
        let Ok(value) = serde_json::from_slice::<Value>(&line) else {
            self.actions.push(Action::ToClient(mcp::error_response_with(
                &Value::Null,
                PARSE_ERROR,
                "xero-auth mcp: a message that is not valid JSON is not passed on while guard \
                 rails are on (--read-only, --allow-tool, --deny-tool)",
                Value::Null,
            )));
            return None;
        };
        match value {
            Value::Array(items) => {
                let count = items.len();
                let kept: Vec<Value> = items
                    .into_iter()
                    .filter(|item| self.admit_client_message(item))
                    .collect();
                if kept.len() == count {
                    Some(line)
                } else if kept.is_empty() {
                    None
                } else {
                    Some(mcp::to_line(&Value::Array(kept)))
                }
            }
            value => self.admit_client_message(&value).then_some(line),
        }
    }

    /// Whether one message of the client may reach the server: anything but a `tools/call` the
    /// guard rails refuse, which is answered here instead (a refused notification is dropped).
    fn admit_client_message(&mut self, message: &Value) -> bool {
        if message.get("method").and_then(Value::as_str) != Some(TOOLS_CALL) {
            return true;
        }
        let id = message.get("id");
        let name = message
            .get("params")
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str);
        let refusal = match name {
            Some(name) => {
                let annotations = self.listed_tools.get(name).copied().flatten();
                self.settings.guard.check(name, annotations).err()
            }
            None => Some(super::guard::Refusal {
                rule: "no-name",
                message: "xero-auth mcp: a tools/call without a tool name is refused while \
                          guard rails are on"
                    .into(),
            }),
        };
        // Where the audit log records a tool call: its name, and whether it went to the server
        // or which rule refused it.
        // (A call that passes is recorded when the server answers it.)
        if let Some(refusal) = &refusal {
            self.actions.push(Action::ToolCall {
                tool: name.map(str::to_string),
                status: "refused",
                rule: Some(refusal.rule),
                duration: None,
            });
        }
        let Some(refusal) = refusal else {
            self.actions.push(Action::Debug("a tool call passed the guard rails"));
            return true;
        };
        self.actions
            .push(Action::Debug("a tool call was refused by the guard rails"));
        if let Some(id) = id {
            self.actions.push(Action::ToClient(mcp::error_response_with(
                id,
                REFUSED_CODE,
                &refusal.message,
                serde_json::json!({"rule": refusal.rule, "tool": name}),
            )));
        }
        false
    }

    /// Applies the guard rails to a line of the running server: each `tools/list` answer in it
    /// loses the tools they refuse (the tools' annotations are kept for the calls). Lines without
    /// one pass as they are. With rails, a line the bridge cannot read as JSON is dropped
    /// (it could be a list the client reads and the bridge cannot filter).
    fn guard_server_line(&mut self, line: Vec<u8>) -> Option<Vec<u8>> {
        if !self.settings.guard.is_active() {
            return Some(line);
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(&line) else {
            self.say(
                "xero-auth mcp: dropped a line of the MCP server that is not valid JSON \
                 (guard rails are on)"
                    .into(),
            );
            return None;
        };
        let mut filtered = false;
        match &mut value {
            Value::Array(items) => {
                for item in items {
                    filtered |= self.filter_tool_list(item);
                }
            }
            item => filtered = self.filter_tool_list(item),
        }
        Some(if filtered { mcp::to_line(&value) } else { line })
    }

    /// Removes from a `tools/list` result (a response whose `result.tools` is a list) the tools
    /// the guard rails refuse; whether it was one. Every server's lists are filtered: a new
    /// server (a restart, a rotation) is listed through here as the first was.
    fn filter_tool_list(&mut self, message: &mut Value) -> bool {
        if message.get("method").is_some() {
            return false;
        }
        let Some(tools) = message
            .get_mut("result")
            .and_then(|r| r.get_mut("tools"))
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        let guard = &self.settings.guard;
        let listed = &mut self.listed_tools;
        tools.retain(|tool| {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                return false;
            };
            let annotations = Annotations::of(tool);
            listed.insert(name.to_string(), annotations);
            guard.check(name, annotations).is_ok()
        });
        true
    }

    fn say(&mut self, text: String) {
        self.actions.push(Action::Say(text));
    }

    fn info(&mut self, text: String) {
        self.actions.push(Action::Info(text));
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn route(exchanges: &mut Exchanges, line: &str, holding: bool) -> Route {
        exchanges.route_client(&mcp::classify(line.as_bytes()), holding)
    }

    /// The running server has the client's request 1 in flight and has asked the client
    /// `roots/list` ("s-1") before it answers it.
    fn asked_while_busy() -> Exchanges {
        let mut exchanges = Exchanges::default();
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#;
        assert_eq!(route(&mut exchanges, call, false), Route::Forward);
        exchanges.note_server_line(&mcp::classify(
            br#"{"jsonrpc":"2.0","id":"s-1","method":"roots/list"}"#,
        ));
        assert!(!exchanges.is_quiet());
        exchanges
    }

    #[test]
    fn while_holding_answers_and_cancellations_reach_the_running_server() {
        let mut exchanges = asked_while_busy();
        let answer = r#"{"jsonrpc":"2.0","id":"s-1","result":{"roots":[]}}"#;
        assert_eq!(route(&mut exchanges, answer, true), Route::Forward);
        let cancel =
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;
        assert_eq!(route(&mut exchanges, cancel, true), Route::Forward);
        assert!(exchanges.is_quiet(), "{exchanges:?}");
    }

    #[test]
    fn while_holding_new_requests_and_notifications_wait() {
        let mut exchanges = asked_while_busy();
        for line in [
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
            // A cancellation of a request the server does not have (one held, say).
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#,
            // A batch with an answer and a new request: the answer waits with the request.
            r#"[{"jsonrpc":"2.0","id":"s-1","result":{}},{"jsonrpc":"2.0","id":4,"method":"ping"}]"#,
            "not json",
        ] {
            assert_eq!(route(&mut exchanges, line, true), Route::Hold, "{line}");
        }
        assert!(exchanges.server_requests.contains("\"s-1\""));
        assert_eq!(
            exchanges.client_requests.len(),
            1,
            "held requests are not in flight"
        );
    }

    #[test]
    fn progress_on_the_servers_request_goes_to_it_while_holding() {
        let mut exchanges = asked_while_busy();
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}"#;
        assert_eq!(route(&mut exchanges, progress, true), Route::Forward);
        let mut idle = Exchanges::default();
        assert_eq!(route(&mut idle, progress, true), Route::Hold);
        assert_eq!(route(&mut idle, progress, false), Route::Forward);
    }

    #[test]
    fn an_answer_to_a_request_of_a_server_that_went_is_dropped() {
        let mut exchanges = asked_while_busy();
        let (client, server) = exchanges.take_all();
        assert_eq!(
            (client, server),
            (vec!["1".to_string()], vec!["\"s-1\"".to_string()])
        );
        let late = r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#;
        assert_eq!(route(&mut exchanges, late, true), Route::Drop);
        assert_eq!(route(&mut exchanges, late, false), Route::Drop);
    }

    #[test]
    fn the_server_is_quiet_once_both_ways_are_answered() {
        let mut exchanges = asked_while_busy();
        exchanges.note_server_line(&mcp::classify(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
        assert!(!exchanges.is_quiet(), "its own question is still open");
        let answer = r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#;
        assert_eq!(route(&mut exchanges, answer, false), Route::Forward);
        assert!(exchanges.is_quiet());
    }

    // The state machine, driven as the driver would.

    type Actions = Vec<Action<&'static str>>;

    const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#;
    const INIT_ANSWER: &str = r#"{"jsonrpc":"2.0","id":0,"result":{}}"#;
    const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn fresh(token: &'static str, valid_for: i64) -> Fresh<&'static str> {
        Fresh {
            token,
            digest: Some(token.as_bytes().to_vec()),
            valid_for,
            scopes: vec!["openid".into(), "accounting.contacts.read".into()],
        }
    }

    /// A bridge whose first server runs with token "t1", valid for 1800 s with a margin of
    /// 300 s: its rotation is due at `t0` + 1501 s.
    fn running(t0: Instant) -> Core<&'static str> {
        running_with(t0, Guard::default())
    }

    fn running_with(t0: Instant, guard: Guard) -> Core<&'static str> {
        let settings = Settings {
            min_valid: 300,
            check_every: secs(60),
            guard,
            profile: "default".into(),
        };
        let (mut core, start) = Core::new(settings, fresh("t1", 1800), t0);
        assert_eq!(
            start,
            Action::Start {
                generation: 1,
                token: "t1"
            }
        );
        assert_eq!(core.on(Event::Started(1), t0), vec![]);
        core
    }

    fn client(core: &mut Core<&'static str>, line: &str, now: Instant) -> Actions {
        core.on(Event::Client(line.as_bytes().to_vec()), now)
    }

    fn server(core: &mut Core<&'static str>, generation: u64, line: &str, now: Instant) -> Actions {
        core.on(Event::ServerLine(generation, line.as_bytes().to_vec()), now)
    }

    fn to_server(line: &str) -> Action<&'static str> {
        Action::ToServer(line.as_bytes().to_vec())
    }

    /// The JSON of the lines for the client.
    fn for_client(actions: &Actions) -> Vec<serde_json::Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ToClient(line) => serde_json::from_slice(line).ok(),
                _ => None,
            })
            .collect()
    }

    /// A bridge that has opened its MCP session with server 1.
    fn opened(t0: Instant) -> Core<&'static str> {
        let mut core = running(t0);
        assert_eq!(client(&mut core, INIT, t0), vec![to_server(INIT)]);
        assert_eq!(
            server(&mut core, 1, INIT_ANSWER, t0),
            vec![Action::ToClient(INIT_ANSWER.as_bytes().to_vec())]
        );
        assert_eq!(
            client(&mut core, INITIALIZED, t0),
            vec![to_server(INITIALIZED)]
        );
        core
    }

    /// Server 1 replaced by server 2 (token "t2") at `at`, up to its `initialize` being sent.
    fn rotate(core: &mut Core<&'static str>, at: Instant) -> Actions {
        let due = core.on(Event::Tick, at);
        assert_eq!(due.last(), Some(&Action::FetchToken), "{due:?}");
        let mut actions = core.on(Event::Token(Ok(fresh("t2", 1800))), at);
        assert_eq!(
            actions.split_off(actions.len() - 2),
            vec![
                Action::Retire(1),
                Action::Start {
                    generation: 2,
                    token: "t2"
                }
            ]
        );
        actions.extend(core.on(Event::Started(2), at));
        actions
    }

    #[test]
    fn initialize_is_replayed_to_a_new_server_and_its_answer_swallowed() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let at = t0 + secs(1501);
        assert_eq!(
            core.next_wake(),
            Some(t0 + secs(60)),
            "the first look for a rotation"
        );
        assert_eq!(rotate(&mut core, at), vec![to_server(INIT)]);
        let done = server(&mut core, 2, INIT_ANSWER, at);
        assert!(
            for_client(&done).is_empty(),
            "the client had its answer: {done:?}"
        );
        assert_eq!(done.first(), Some(&to_server(INITIALIZED)));
        // Lines of the server that went reach no one.
        assert_eq!(
            server(&mut core, 1, r#"{"jsonrpc":"2.0","method":"x"}"#, at),
            vec![]
        );
        // The next rotation is due when the new token comes within the margin.
        assert_eq!(
            core.on(Event::Tick, at + secs(1501)).last(),
            Some(&Action::FetchToken)
        );
    }

    #[test]
    fn requests_during_a_restart_are_held_and_reach_the_new_server_in_order() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let at = t0 + secs(1501);
        assert_eq!(core.on(Event::Tick, at).last(), Some(&Action::FetchToken));
        let first = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
        let second = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call"}"#;
        assert_eq!(client(&mut core, first, at), vec![]);
        assert_eq!(client(&mut core, second, at), vec![]);
        let _ = core.on(Event::Token(Ok(fresh("t2", 1800))), at);
        assert_eq!(core.on(Event::Started(2), at), vec![to_server(INIT)]);
        // Still held while the new server has not answered `initialize`.
        let third = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;
        assert_eq!(client(&mut core, third, at), vec![]);
        let done = server(&mut core, 2, INIT_ANSWER, at);
        let sent: Vec<_> = done
            .into_iter()
            .filter(|a| matches!(a, Action::ToServer(_)))
            .collect();
        assert_eq!(
            sent,
            vec![
                to_server(INITIALIZED),
                to_server(first),
                to_server(second),
                to_server(third)
            ]
        );
    }

    #[test]
    fn a_restart_waits_for_the_request_in_flight_and_then_answers_it_with_an_error() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let call = r#"{"jsonrpc":"2.0","id":"c-1","method":"tools/call"}"#;
        assert_eq!(client(&mut core, call, t0), vec![to_server(call)]);
        let at = t0 + secs(1501);
        let due = core.on(Event::Tick, at);
        assert!(
            !due.contains(&Action::FetchToken),
            "the request is in flight: {due:?}"
        );
        assert_eq!(core.next_wake(), Some(at + QUIET_WAIT));
        let replaced = rotate(&mut core, at + QUIET_WAIT);
        let answers = for_client(&replaced);
        assert_eq!(answers.len(), 1, "{replaced:?}");
        assert_eq!(answers[0]["id"], "c-1", "the id as the client sent it");
        assert!(
            answers[0]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("restarted with a fresh Xero token")),
            "{answers:?}"
        );
    }

    #[test]
    fn a_cancelled_request_no_longer_holds_up_a_restart() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#;
        let _ = client(&mut core, call, t0);
        let at = t0 + secs(1501);
        let _ = core.on(Event::Tick, at);
        let cancel =
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;
        assert_eq!(
            client(&mut core, cancel, at),
            vec![to_server(cancel), Action::FetchToken],
            "the cancellation reaches the running server, and the restart goes ahead"
        );
    }

    #[test]
    fn a_server_that_dies_answers_for_its_requests_and_withdraws_its_questions() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        // The number 7 and the string "7" are two requests.
        let number = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#;
        let string = r#"{"jsonrpc":"2.0","id":"7","method":"tools/call"}"#;
        let _ = client(&mut core, number, t0);
        let _ = client(&mut core, string, t0);
        let _ = server(&mut core, 1, r#"{"jsonrpc":"2.0","id":7,"result":{}}"#, t0);
        let question = r#"{"jsonrpc":"2.0","id":"s-1","method":"roots/list"}"#;
        let _ = server(&mut core, 1, question, t0);
        let at = t0 + secs(100);
        let ended = core.on(
            Event::ServerExited {
                generation: 1,
                code: 3,
            },
            at,
        );
        let lines = for_client(&ended);
        assert_eq!(lines.len(), 2, "{ended:?}");
        assert_eq!(lines[0]["id"], "7");
        assert!(
            lines[0]["error"]["message"].as_str().is_some_and(
                |m| m.contains("the MCP server ended (exit status 3) before answering")
            )
        );
        assert_eq!(lines[1]["method"], "notifications/cancelled");
        assert_eq!(lines[1]["params"]["requestId"], "s-1");
        assert!(ended.contains(&Action::Say(
            "xero-auth mcp: the MCP server ended (exit status 3); starting it again in 1 s".into()
        )));
        // A late answer to the question reaches no server.
        let late = r#"{"jsonrpc":"2.0","id":"s-1","result":{"roots":[]}}"#;
        assert!(matches!(
            client(&mut core, late, at)[..],
            [Action::Debug(_)]
        ));
        assert_eq!(core.next_wake(), Some(at + secs(1)));
        assert_eq!(core.on(Event::Tick, at + secs(1)), vec![Action::FetchToken]);
        // The same token does not stop a new server when none runs.
        let start = core.on(Event::Token(Ok(fresh("t1", 1700))), at + secs(1));
        assert_eq!(
            start,
            vec![Action::Start {
                generation: 2,
                token: "t1"
            }]
        );
    }

    #[test]
    fn malformed_lines_pass_through_and_wait_like_any_other_during_a_restart() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        assert_eq!(
            client(&mut core, "not json", t0),
            vec![to_server("not json")]
        );
        assert_eq!(
            server(&mut core, 1, "{broken", t0),
            vec![Action::ToClient(b"{broken".to_vec())]
        );
        let at = t0 + secs(1501);
        let _ = core.on(Event::Tick, at);
        assert_eq!(client(&mut core, "[1,2", at), vec![]);
        let _ = core.on(Event::Token(Ok(fresh("t2", 1800))), at);
        let _ = core.on(Event::Started(2), at);
        assert!(server(&mut core, 2, INIT_ANSWER, at).contains(&to_server("[1,2")));
    }

    #[test]
    fn another_process_rotating_the_tokens_brings_a_new_server() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let at = t0 + secs(60);
        assert_eq!(core.on(Event::Tick, at), vec![Action::LookForRotation]);
        assert_eq!(core.on(Event::Stored(Some(b"t1".to_vec())), at), vec![]);
        assert_eq!(core.on(Event::Stored(None), at), vec![]);
        assert_eq!(core.next_wake(), Some(at + secs(60)));
        let rotated = core.on(Event::Stored(Some(b"t2".to_vec())), at);
        assert_eq!(rotated.last(), Some(&Action::FetchToken), "{rotated:?}");
    }

    #[test]
    fn a_server_that_keeps_ending_at_once_ends_the_bridge_after_five_tries() {
        let t0 = Instant::now();
        let mut core = running(t0);
        let mut now = t0;
        for (generation, backoff) in [(1, 1), (2, 2), (3, 4), (4, 8)] {
            let ended = core.on(
                Event::ServerExited {
                    generation,
                    code: 9,
                },
                now,
            );
            assert!(
                ended.contains(&Action::Say(format!(
                    "xero-auth mcp: the MCP server ended (exit status 9); starting it again in {backoff} s"
                ))),
                "{ended:?}"
            );
            now += secs(backoff);
            assert_eq!(core.on(Event::Tick, now), vec![Action::FetchToken]);
            let _ = core.on(Event::Token(Ok(fresh("t1", 1800))), now);
            let started = core.on(Event::Started(generation + 1), now);
            assert!(matches!(started[..], [Action::Info(_)]), "{started:?}");
        }
        let last = core.on(
            Event::ServerExited {
                generation: 5,
                code: 9,
            },
            now,
        );
        assert!(matches!(last.last(), Some(Action::Exit(9))), "{last:?}");
        assert!(matches!(&last[0], Action::Say(m) if m.contains("giving up")));
        assert_eq!(core.next_wake(), None);
    }

    #[test]
    fn a_client_that_goes_stops_the_server_and_the_bridge_ends_with_its_status() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#;
        let _ = client(&mut core, call, t0);
        let closed = core.on(Event::ClientClosed, t0);
        assert_eq!(closed.last(), Some(&Action::CloseInput(1)));
        let ended = core.on(
            Event::ServerExited {
                generation: 1,
                code: 0,
            },
            t0 + secs(1),
        );
        assert_eq!(ended.last(), Some(&Action::Exit(0)));
        assert!(
            for_client(&ended)[0]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("the bridge is ending")),
            "{ended:?}"
        );
    }

    #[test]
    fn a_stop_signal_between_servers_ends_the_bridge_without_a_new_one() {
        let t0 = Instant::now();
        let mut core = running(t0);
        let _ = core.on(
            Event::ServerExited {
                generation: 1,
                code: 3,
            },
            t0 + secs(20),
        );
        let ended = core.on(Event::StopSignal(15), t0 + secs(20));
        assert_eq!(ended.last(), Some(&Action::Exit(143)));
        assert!(!ended.contains(&Action::FetchToken));
    }

    #[test]
    fn a_new_server_that_does_not_answer_initialize_is_killed_and_tried_again() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let at = t0 + secs(1501);
        let _ = rotate(&mut core, at);
        assert_eq!(core.next_wake(), Some(at + INIT_WAIT));
        let failed = core.on(Event::Tick, at + INIT_WAIT);
        assert_eq!(failed.first(), Some(&Action::Kill(2)), "{failed:?}");
        assert!(failed.iter().any(|a| matches!(a, Action::Say(m)
            if m.contains("did not answer `initialize` within 30 s; starting it again in 1 s"))));
        assert_eq!(
            core.on(Event::Tick, at + INIT_WAIT + secs(1)),
            vec![Action::FetchToken]
        );
    }

    #[test]
    fn without_a_fresh_token_and_no_server_held_requests_are_answered() {
        let t0 = Instant::now();
        let mut core = running(t0);
        let _ = core.on(
            Event::ServerExited {
                generation: 1,
                code: 3,
            },
            t0 + secs(20),
        );
        let call = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call"}"#;
        assert_eq!(client(&mut core, call, t0 + secs(20)), vec![]);
        let _ = core.on(Event::Tick, t0 + secs(21));
        let failed = core.on(
            Event::Token(Err("the keychain is locked".into())),
            t0 + secs(21),
        );
        let answers = for_client(&failed);
        assert_eq!(answers[0]["id"], 4);
        assert!(answers[0]["error"]["message"].as_str().is_some_and(|m| m
            .contains("not running: no fresh token (the keychain is locked)")));
        assert_eq!(core.next_wake(), Some(t0 + secs(21) + TOKEN_RETRY));
    }

    #[test]
    fn without_a_fresh_token_the_running_server_keeps_its_own_and_it_is_tried_again_later() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let at = t0 + secs(1501);
        let _ = core.on(Event::Tick, at);
        let held = r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#;
        assert_eq!(client(&mut core, held, at), vec![]);
        let failed = core.on(Event::Token(Err("Xero is down".into())), at);
        assert_eq!(
            failed,
            vec![
                Action::Say(
                    "xero-auth mcp: no fresh token for the MCP server (Xero is down); trying again in 30 s"
                        .into()
                ),
                to_server(held),
            ],
            "no server is retired, and the held request goes to the running one"
        );
        let _ = server(&mut core, 1, r#"{"jsonrpc":"2.0","id":9,"result":{}}"#, at);
        assert_eq!(
            core.on(Event::Tick, at + TOKEN_RETRY).last(),
            Some(&Action::FetchToken)
        );
    }

    // The guard rails.

    fn read_only() -> Guard {
        Guard {
            read_only: true,
            ..Guard::default()
        }
    }

    /// A `tools/list` answer of Xero's server (no annotations) and of a server with some.
    const TOOLS: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"list-contacts","inputSchema":{}},{"name":"create-contact","inputSchema":{}},{"name":"search","annotations":{"readOnlyHint":true}},{"name":"get-report","annotations":{"destructiveHint":true}},{"inputSchema":{}}]}}"#;

    fn listed_names(actions: &Actions) -> Vec<String> {
        for_client(actions)
            .iter()
            .filter_map(|m| m["result"]["tools"].as_array().cloned())
            .flatten()
            .map(|t| t["name"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    #[test]
    fn read_only_lists_only_the_tools_that_read_after_every_restart() {
        let t0 = Instant::now();
        let mut core = running_with(t0, read_only());
        let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
        assert_eq!(client(&mut core, list, t0), vec![to_server(list)]);
        let listed = server(&mut core, 1, TOOLS, t0);
        assert_eq!(listed_names(&listed), ["list-contacts", "search"]);
        // The same from the server of the next generation.
        let _ = client(&mut core, INIT, t0);
        let _ = server(&mut core, 1, INIT_ANSWER, t0);
        let at = t0 + secs(1501);
        let _ = rotate(&mut core, at);
        let _ = server(&mut core, 2, INIT_ANSWER, at);
        let _ = client(&mut core, list, at);
        let again = server(&mut core, 2, TOOLS, at);
        assert_eq!(listed_names(&again), ["list-contacts", "search"]);
        // Other answers pass byte for byte.
        let other = r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]} }"#;
        assert_eq!(
            server(&mut core, 2, other, at),
            vec![Action::ToClient(other.as_bytes().to_vec())]
        );
    }

    #[test]
    fn a_refused_call_is_answered_by_the_bridge_and_never_reaches_the_server() {
        let t0 = Instant::now();
        let mut core = running_with(t0, read_only());
        let _ = client(&mut core, r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, t0);
        let _ = server(&mut core, 1, TOOLS, t0);
        let call = r#"{"jsonrpc":"2.0","id":"c","method":"tools/call","params":{"name":"create-contact","arguments":{"name":"x"}}}"#;
        let refused = client(&mut core, call, t0);
        assert!(
            !refused.iter().any(|a| matches!(a, Action::ToServer(_))),
            "{refused:?}"
        );
        let answer = &for_client(&refused)[0];
        assert_eq!(answer["id"], "c");
        assert_eq!(answer["error"]["code"], REFUSED_CODE);
        assert_eq!(answer["error"]["data"]["rule"], "read-only");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("'create-contact' is refused")
                    && m.contains("read-only")),
            "{answer}"
        );
        // By the annotations the server gave, whatever the name says.
        let destructive =
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-report"}}"#;
        let answered = client(&mut core, destructive, t0);
        assert!(
            !answered.iter().any(|a| matches!(a, Action::ToServer(_))),
            "{answered:?}"
        );
        for passes in [
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"search"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list-contacts"}}"#,
            r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#,
        ] {
            assert!(client(&mut core, passes, t0).contains(&to_server(passes)), "{passes}");
        }
        // Escapes and batches do not hide a call.
        let escaped = r#"{"jsonrpc":"2.0","id":9,"method":"tools\/call","params":{"name":"create\u002dcontact"}}"#;
        assert!(!client(&mut core, escaped, t0).iter().any(|a| matches!(a, Action::ToServer(_))));
        let batch = r#"[{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"delete-timesheet"}},{"jsonrpc":"2.0","id":11,"method":"ping"}]"#;
        let split = client(&mut core, batch, t0);
        assert!(
            split.contains(&to_server(r#"[{"id":11,"jsonrpc":"2.0","method":"ping"}]"#)),
            "{split:?}"
        );
        assert_eq!(for_client(&split)[0]["id"], 10);
        // Nor does a line the bridge cannot read, or a call without a name.
        for unreadable in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"tools/call\",\"params\":{\"name\":\"create-contact\",\"x\":\"\xff\"}}"[..],
            br#"{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"\ud800"}}"#,
            br#"{"jsonrpc":"2.0","id":14,"method":"tools/call","params":{}}"#,
        ] {
            let answered = core.on(Event::Client(unreadable.to_vec()), t0);
            assert!(
                !answered.iter().any(|a| matches!(a, Action::ToServer(_))),
                "{answered:?}"
            );
            assert!(for_client(&answered)[0]["error"].is_object(), "{answered:?}");
        }
    }

    fn tool_calls(actions: &Actions) -> Vec<(Option<String>, &'static str, Option<Duration>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ToolCall {
                    tool,
                    status,
                    duration,
                    ..
                } => Some((tool.clone(), *status, *duration)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_tool_call_goes_to_the_audit_log_with_its_end_and_time_and_no_arguments() {
        let t0 = Instant::now();
        let mut core = running_with(t0, read_only());
        let _ = client(&mut core, r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, t0);
        let _ = server(&mut core, 1, TOOLS, t0);
        let refused = client(
            &mut core,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"create-contact","arguments":{"name":"Secret"}}}"#,
            t0,
        );
        assert_eq!(
            tool_calls(&refused),
            [(Some("create-contact".into()), "refused", None)]
        );
        let call = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"list-contacts"}}"#;
        assert!(tool_calls(&client(&mut core, call, t0)).is_empty(), "recorded at its answer");
        let answered = server(
            &mut core,
            1,
            r#"{"jsonrpc":"2.0","id":4,"result":{"isError":true,"content":[]}}"#,
            t0 + secs(2),
        );
        assert_eq!(
            tool_calls(&answered),
            [(Some("list-contacts".into()), "error", Some(secs(2)))]
        );
        // And without guard rails.
        let mut open = opened(t0);
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create-contact"}}"#;
        let _ = client(&mut open, call, t0);
        let answered = server(&mut open, 1, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#, t0);
        assert_eq!(
            tool_calls(&answered),
            [(Some("create-contact".into()), "ok", Some(Duration::ZERO))]
        );
    }

    #[test]
    fn without_guard_rails_lines_are_not_looked_into() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create-contact"}}"#;
        assert_eq!(client(&mut core, call, t0), vec![to_server(call)]);
        assert_eq!(
            listed_names(&server(&mut core, 1, TOOLS, t0)).len(),
            5,
            "the nameless tool is listed too"
        );
    }

    #[test]
    fn a_refused_check_before_a_rotation_stops_the_running_server_and_the_bridge() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        let call = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"list-invoices"}}"#;
        let _ = client(&mut core, call, t0);
        let _ = core.on(Event::Tick, t0 + secs(1501));
        let at = t0 + secs(1501) + QUIET_WAIT;
        assert_eq!(core.on(Event::Tick, at).last(), Some(&Action::FetchToken));
        let refused = core.on(
            Event::StartFailed {
                message: "Xero's MCP server would work on Beta Ltd".into(),
                code: 1,
            },
            at,
        );
        assert!(refused.contains(&Action::Kill(1)), "{refused:?}");
        assert_eq!(refused.last(), Some(&Action::Exit(1)));
        let answers = for_client(&refused);
        assert_eq!(answers[0]["id"], 4);
        assert!(
            answers[0]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("would work on Beta Ltd")),
            "{answers:?}"
        );
    }

    fn said(actions: &Actions) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Say(text) => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    fn call(id: u32, tool: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
    }

    /// Xero's MCP server's answer to a call Xero refused with 401.
    fn refused(id: u32) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"isError":true,"content":[{{"type":"text","text":"Error listing: Authentication failed. Please check your Xero credentials."}}]}}}}"#
        )
    }

    #[test]
    fn a_tool_xero_refused_for_want_of_a_scope_is_told_once_with_the_login() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        // The token was granted accounting.contacts.read, not invoices.
        client(&mut core, &call(7, "list-invoices"), t0);
        let answered = server(&mut core, 1, &refused(7), t0);
        let told = said(&answered);
        assert_eq!(told.len(), 1, "{answered:?}");
        assert!(
            told[0].contains("refused the tool list-invoices (GET /api.xro/2.0/Invoices)"),
            "{told:?}"
        );
        assert!(told[0].contains("accounting.invoices.read"), "{told:?}");
        assert!(
            told[0].contains("`xero-auth login --scope accounting.invoices.read`"),
            "{told:?}"
        );
        assert!(told[0].contains("granted openid accounting.contacts.read"), "{told:?}");
        // The answer still reaches the client, as the server gave it.
        assert_eq!(for_client(&answered).len(), 1);
        // Once per tool.
        client(&mut core, &call(8, "list-invoices"), t0);
        assert!(said(&server(&mut core, 1, &refused(8), t0)).is_empty());
        // A tool whose scope the token has: refused for another reason, nothing said.
        client(&mut core, &call(9, "list-contacts"), t0);
        assert!(said(&server(&mut core, 1, &refused(9), t0)).is_empty());
        // A success, and a tool the table does not know: nothing.
        client(&mut core, &call(10, "list-quotes"), t0);
        let ok = r#"{"jsonrpc":"2.0","id":10,"result":{"content":[{"type":"text","text":"403 quotes"}]}}"#;
        assert!(said(&server(&mut core, 1, ok, t0)).is_empty());
        client(&mut core, &call(11, "make-coffee"), t0);
        assert!(said(&server(&mut core, 1, &refused(11), t0)).is_empty());
        assert!(core.tool_calls.is_empty(), "answered calls are forgotten");
    }

    #[test]
    fn a_tool_call_the_server_never_answers_goes_to_the_audit_log_when_it_ends() {
        let t0 = Instant::now();
        let mut core = opened(t0);
        client(&mut core, &call(21, "list-contacts"), t0);
        let ended = core.on(
            Event::ServerExited {
                generation: 1,
                code: 1,
            },
            t0 + secs(2),
        );
        assert!(
            ended.iter().any(|a| matches!(
                a,
                Action::ToolCall { tool: Some(t), status: "no-answer", duration: Some(d), .. }
                    if t == "list-contacts" && *d == secs(2)
            )),
            "{ended:?}"
        );
        assert!(core.tool_calls.is_empty());
    }
}
