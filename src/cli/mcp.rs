//! `xero-auth mcp -- CMD…`: a stdio bridge between an MCP client and an MCP server (CMD) that
//! takes a bearer token in its environment, such as Xero's own (`XERO_CLIENT_BEARER_TOKEN`).
//!
//! Messages pass through unchanged. Before the server's token comes within the margin of its
//! expiry, or when another process rotated the tokens, the bridge starts a new server with a
//! fresh token at a quiet moment: it waits (bounded) until no request is in flight either way,
//! holds the client's new requests and notifications meanwhile (while its answers to the
//! server's requests, and its cancellations of requests in flight, still reach the server that
//! has them), starts the new server, replays the client's `initialize` request and
//! `notifications/initialized`, swallows the replayed `initialize` result and releases what it
//! held. A server that ends on its own is started again the same way, with backoff. Requests a
//! server can no longer answer get a JSON-RPC error that says what happened; requests of a
//! server that went are withdrawn from the client with `notifications/cancelled`.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Context;
use crate::child::{self, StopSignals};
use crate::error::{Error, Result};
use crate::mcp::{self, Id, Message};
use crate::secret::ExposeSecret;
use crate::session::{DEFAULT_MARGIN_SECS, Session};
use crate::token_set::TokenSet;

/// How long a restart waits for the requests in flight to be answered.
const QUIET_WAIT: Duration = Duration::from_secs(30);
/// How long a new server may take to answer the replayed `initialize`.
const INIT_WAIT: Duration = Duration::from_secs(30);
/// How long a server replaced by a new one, or left by its client, has to end after its stdin
/// was closed, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A server that ends sooner than this after it started counts as failing to start…
const QUICK_END: Duration = Duration::from_secs(10);
/// …and after this many such ends in a row the bridge gives up.
const MAX_QUICK_ENDS: u32 = 5;
/// The longest pause between two starts of a failing server.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long to wait before trying again when no fresh token could be had.
const TOKEN_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
/// Arguments of `xero-auth mcp`.
pub struct McpArgs {
    /// The environment variable that carries the bearer token to the server.
    #[arg(long, value_name = "NAME", default_value = "XERO_CLIENT_BEARER_TOKEN",
          value_parser = parse_env_name)]
    pub env_name: String,
    /// Start the server again with a fresh token when its token expires within this many
    /// seconds: 0 to 1500 (an access token lasts 30 minutes, 1800 s).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MARGIN_SECS as u64,
          value_parser = clap::value_parser!(u64).range(0..=1500))]
    pub min_valid: u64,
    /// How often to look whether another process rotated the tokens (`xero-auth refresh` from
    /// cron, a new `login`).
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub check_every: u64,
    /// The MCP server's command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

fn parse_env_name(name: &str) -> std::result::Result<String, String> {
    if name.is_empty()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || name.as_bytes()[0].is_ascii_digit()
    {
        return Err(
            "an environment variable name is letters, digits and '_', not starting with a digit"
                .into(),
        );
    }
    Ok(name.to_string())
}

/// Runs the bridge until the client goes or a stop signal ends the server; ends with the
/// server's status.
pub async fn run(args: McpArgs, ctx: &Context) -> Result<()> {
    // A bridge runs for hours and restarts its server: a low soft open-file limit is not left
    // to run out (the server gets the caller's limit back).
    crate::serve::open_files::raise_to_hard_limit();
    // A long-running command: a refreshed set the store would not take is kept and served
    // (and its write retried), rather than thrown away with its live refresh token.
    let session = ctx.session()?.with_margin(args.min_valid).serving_unsaved();
    // Fail before anything starts when there is no usable token.
    let set = session.valid_token_set(args.min_valid as i64).await?;
    let (events, mut inbox) = mpsc::unbounded_channel();
    let mut bridge = Bridge {
        session: &session,
        args: &args,
        signals: StopSignals::install()?,
        events,
        out: tokio::io::stdout(),
        child: None,
        generation: 0,
        init: None,
        initialized: None,
        exchanges: Exchanges::default(),
        held: VecDeque::new(),
        restart: None,
        rotate_at: Instant::now(),
        quick_ends: 0,
        stopping: false,
        finished: None,
    };
    bridge.start_child(&set)?;
    drop(set);
    read_client(bridge.events.clone());
    let status = bridge.run(&mut inbox).await;
    // A set the store would not take is lost with this process: one more try at storing it.
    session.save_unsaved().await;
    ctx.set_exit_status(status);
    Ok(())
}

/// What happens around the bridge.
enum Event {
    /// A line from the client; `None` when its stdin closed.
    Client(Option<Vec<u8>>),
    /// A line from server number `.0`.
    ChildLine(u64, Vec<u8>),
    /// Server number `.0` ended.
    ChildExited(u64, std::io::Result<ExitStatus>),
}

/// The server running now.
struct Running {
    /// Its number: output and ends of servers no longer running are ignored.
    generation: u64,
    /// Lines for its stdin; dropping the sender closes it.
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Kills it.
    kill: Option<oneshot::Sender<()>>,
    started: Instant,
    /// SHA-256 of the access token it was given: enough to see that the stored one changed,
    /// without keeping the token.
    token_digest: Vec<u8>,
}

/// The requests in flight between the client and the running server, both ways: when the
/// server is quiet, and where a line of the client goes. No I/O.
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

/// A restart that was asked for.
struct Restart {
    why: String,
    /// Not before this moment (backoff after a failure).
    not_before: Instant,
    /// The requests in flight have until then to be answered.
    quiet_by: Instant,
}

struct Bridge<'a> {
    session: &'a Session,
    args: &'a McpArgs,
    signals: StopSignals,
    events: mpsc::UnboundedSender<Event>,
    out: tokio::io::Stdout,
    child: Option<Running>,
    /// Servers started so far.
    generation: u64,
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
    /// Servers in a row that ended soon after starting.
    quick_ends: u32,
    /// The client went, or a stop signal came: start no server again.
    stopping: bool,
    /// The status to end with, once known.
    finished: Option<i32>,
}

/// Reads the client's lines (stdin) into `events` until it closes.
fn read_client(events: mpsc::UnboundedSender<Event>) {
    tokio::spawn(async move {
        let mut stdin = BufReader::new(tokio::io::stdin());
        loop {
            match read_line(&mut stdin).await {
                Some(line) => {
                    if events.send(Event::Client(Some(line))).is_err() {
                        return;
                    }
                }
                None => {
                    let _ = events.send(Event::Client(None));
                    return;
                }
            }
        }
    });
}

/// The next non-blank line without its line end; `None` at the end of the input.
async fn read_line(reader: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> Option<Vec<u8>> {
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {
                while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    line.pop();
                }
                if !line.trim_ascii().is_empty() {
                    return Some(line);
                }
            }
        }
    }
}

impl Bridge<'_> {
    /// Starts a server with `set`'s access token.
    fn start_child(&mut self, set: &TokenSet) -> Result<()> {
        let token = set.require_access_token(&self.session.profile().name)?;
        // clap requires a command; a library caller may build the arguments by hand.
        let Some((program, rest)) = self.args.command.split_first() else {
            return Err(Error::InvalidInput(
                "give the MCP server's command: `xero-auth mcp -- CMD [ARGS…]`".into(),
            ));
        };
        let mut command = std::process::Command::new(program);
        command
            .args(rest)
            .env(&self.args.env_name, token.expose_secret())
            // With a client id and secret, Xero's server would run a custom connection of its
            // own instead of using the bearer token.
            .env_remove("XERO_CLIENT_ID")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        child::without_secrets(&mut command, self.session.profile().store);
        let mut process = child::spawn(command)?;
        self.signals.supervise(process.id());
        self.generation += 1;
        let generation = self.generation;

        let (stdin_tx, mut stdin_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let mut stdin = process.stdin.take().expect("stdin is piped");
        tokio::spawn(async move {
            while let Some(mut line) = stdin_rx.recv().await {
                line.push(b'\n');
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            // Dropping `stdin` closes the server's input: the transport's way to say "stop".
        });
        let mut stdout = BufReader::new(process.stdout.take().expect("stdout is piped"));
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Some(line) = read_line(&mut stdout).await {
                if events.send(Event::ChildLine(generation, line)).is_err() {
                    return;
                }
            }
        });
        let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
        let events = self.events.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = process.wait() => status,
                Ok(()) = &mut kill_rx => {
                    let _ = process.start_kill();
                    process.wait().await
                }
            };
            let _ = events.send(Event::ChildExited(generation, status));
        });

        self.schedule_rotation(set);
        self.child = Some(Running {
            generation,
            stdin: Some(stdin_tx),
            kill: Some(kill_tx),
            started: Instant::now(),
            token_digest: digest(token.expose_secret()),
        });
        Ok(())
    }

    /// Renews the server's token when `set`'s access token comes within the margin: one second
    /// late rather than early, so that the refresh protocol (which keeps tokens valid for more
    /// than the margin) then replaces it.
    fn schedule_rotation(&mut self, set: &TokenSet) {
        let now = self.session.now();
        let left = set.expires_at.unwrap_or(now) - now - self.args.min_valid as i64;
        self.rotate_at = Instant::now() + Duration::from_secs(left.max(0) as u64 + 1);
    }

    async fn run(&mut self, inbox: &mut mpsc::UnboundedReceiver<Event>) -> i32 {
        let mut poll = tokio::time::interval(Duration::from_secs(self.args.check_every));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            if let Some(signal) = self.note_stop_signal()
                && self.child.is_none()
            {
                self.finished.get_or_insert(128 + signal);
            }
            if let Some(status) = self.finished {
                self.answer_all_waiting("the bridge is ending").await;
                return status;
            }
            if self.restart_due() {
                self.restart(inbox).await;
                continue;
            }
            let wake = self.restart.as_ref().map(|r| {
                if self.exchanges.is_quiet() {
                    r.not_before
                } else {
                    r.quiet_by.max(r.not_before)
                }
            });
            let watching = self.restart.is_none() && self.child.is_some() && !self.stopping;
            tokio::select! {
                event = inbox.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => self.finished = Some(1),
                },
                _ = tokio::time::sleep_until(self.rotate_at), if watching => {
                    self.ask_restart("its token comes within the margin of expiry".into(), Duration::ZERO);
                }
                _ = poll.tick(), if watching => {
                    if self.rotated_elsewhere().await {
                        self.ask_restart("another process rotated the tokens".into(), Duration::ZERO);
                    }
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                // A signal does not wake this loop by itself: check for one now and then.
                _ = tokio::time::sleep(Duration::from_millis(250)), if self.child.is_none() => {}
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Client(Some(line)) => self.on_client(line),
            Event::Client(None) => {
                tracing::debug!("the client closed stdin: stopping the server");
                self.stop();
                if self.child.is_none() {
                    self.finished.get_or_insert(0);
                }
            }
            Event::ChildLine(generation, line) if self.is_running(generation) => {
                self.on_child_line(line).await;
            }
            Event::ChildExited(generation, status) if self.is_running(generation) => {
                self.on_child_exit(status).await;
            }
            // Output and ends of servers already replaced.
            Event::ChildLine(..) | Event::ChildExited(..) => {}
        }
    }

    /// Whether server number `generation` is the one running.
    fn is_running(&self, generation: u64) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| c.generation == generation)
    }

    /// A line from the client: to the server, held while a restart is due (unless it carries
    /// on the running server's exchanges), or dropped.
    fn on_client(&mut self, line: Vec<u8>) {
        let holding = self.restart.is_some() || self.child.is_none();
        let messages = mcp::classify(&line);
        match self.exchanges.route_client(&messages, holding) {
            Route::Hold => self.held.push_back(line),
            Route::Drop => tracing::debug!(
                "dropped the client's answer to a request of a server no longer running"
            ),
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
                self.send_to_server(line);
            }
        }
    }

    async fn on_child_line(&mut self, line: Vec<u8>) {
        self.exchanges.note_server_line(&mcp::classify(&line));
        self.send_to_client(&line).await;
    }

    /// Stops the bridge when a stop signal came (it was passed on to the server, which is about
    /// to end, or has: its end must not count as a crash). Returns the signal, if any.
    fn note_stop_signal(&mut self) -> Option<i32> {
        let signal = self.signals.received()?;
        if !self.stopping {
            tracing::info!(
                signal,
                "stop signal: the server ends, and is not started again"
            );
            self.stop();
        }
        Some(signal)
    }

    async fn on_child_exit(&mut self, status: std::io::Result<ExitStatus>) {
        let code = status.map(child::exit_code).unwrap_or(1);
        let lived = self
            .child
            .take()
            .map(|c| c.started.elapsed())
            .unwrap_or_default();
        self.signals.supervise(None);
        self.note_stop_signal();
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
        )
        .await;
        self.after_server_end(what, lived, code);
    }

    /// Counts an end of the server (it crashed, or a new one failed to start) and asks for a
    /// restart after a backoff, or gives up after too many quick ends in a row.
    fn after_server_end(&mut self, what: String, lived: Duration, code: i32) {
        self.quick_ends = if lived < QUICK_END {
            self.quick_ends + 1
        } else {
            1
        };
        if self.quick_ends >= MAX_QUICK_ENDS {
            eprintln!(
                "xero-auth mcp: {what}, the {MAX_QUICK_ENDS}th time in a row within {} s of starting; giving up",
                QUICK_END.as_secs()
            );
            self.finished = Some(code);
            return;
        }
        let backoff = (Duration::from_secs(1) * 2u32.pow(self.quick_ends - 1)).min(MAX_BACKOFF);
        eprintln!(
            "xero-auth mcp: {what}; starting it again in {} s",
            backoff.as_secs()
        );
        self.ask_restart(what, backoff);
    }

    fn ask_restart(&mut self, why: String, after: Duration) {
        let now = Instant::now();
        tracing::info!("restart of the MCP server due: {why}");
        self.restart = Some(Restart {
            why,
            not_before: now + after,
            quiet_by: now + after + QUIET_WAIT,
        });
    }

    fn restart_due(&self) -> bool {
        let now = Instant::now();
        !self.stopping
            && self.restart.as_ref().is_some_and(|r| {
                now >= r.not_before && (self.exchanges.is_quiet() || now >= r.quiet_by)
            })
    }

    /// Replaces the server (if any) with one that has a fresh token, replays the session's
    /// opening and releases the held lines.
    async fn restart(&mut self, inbox: &mut mpsc::UnboundedReceiver<Event>) {
        let why = self
            .restart
            .as_ref()
            .map(|r| r.why.clone())
            .unwrap_or_default();
        let set = match self
            .session
            .valid_token_set(self.args.min_valid as i64)
            .await
        {
            Ok(set) => set,
            Err(err) => {
                eprintln!(
                    "xero-auth mcp: no fresh token for the MCP server ({err}); trying again in {} s",
                    TOKEN_RETRY.as_secs()
                );
                if self.child.is_some() {
                    // The server keeps the token it has; try again later.
                    self.restart = None;
                    self.rotate_at = Instant::now() + TOKEN_RETRY;
                    self.release_held();
                } else {
                    self.answer_held(&format!(
                        "xero-auth mcp: the MCP server is not running: no fresh token ({err})"
                    ))
                    .await;
                    let when = Instant::now() + TOKEN_RETRY;
                    if let Some(r) = self.restart.as_mut() {
                        r.not_before = when;
                        r.quiet_by = when;
                    }
                }
                return;
            }
        };
        // A set without an access token cannot be the running server's; `start_child` below
        // turns it into an error.
        let same_token = match (&self.child, set.access_token.as_ref()) {
            (Some(running), Some(token)) => running.token_digest == digest(token.expose_secret()),
            _ => false,
        };
        if same_token {
            // The token it has is still the best there is (another process's refresh came
            // between): nothing to do until it comes within the margin.
            self.restart = None;
            self.schedule_rotation(&set);
            self.release_held();
            return;
        }
        self.end_exchanges(
            &format!(
                "xero-auth mcp: the MCP server was restarted with a fresh Xero token ({why}) before it answered this request (it was still busy after {} s); send the request again",
                QUIET_WAIT.as_secs()
            ),
            &format!(
                "xero-auth mcp: the MCP server that asked was replaced by one with a fresh Xero token ({why}) before this request was answered (it was still open after {} s)",
                QUIET_WAIT.as_secs()
            ),
        )
        .await;
        self.retire_child();
        if let Err(err) = self.start_child(&set) {
            drop(set);
            eprintln!("xero-auth mcp: cannot start the MCP server again: {err}");
            self.answer_held(&format!("xero-auth mcp: {err}")).await;
            self.finished = Some(err.exit_code() as i32);
            return;
        }
        drop(set);
        if !self.replay_opening(inbox).await {
            return;
        }
        tracing::info!("started a new MCP server with a fresh token ({why})");
        self.restart = None;
        self.release_held();
    }

    /// Sends the client's `initialize` to the new server and swallows its result, then sends
    /// `notifications/initialized`. False when the new server did not get that far (it ended,
    /// or did not answer in time; a restart is then due again).
    async fn replay_opening(&mut self, inbox: &mut mpsc::UnboundedReceiver<Event>) -> bool {
        let Some((line, id)) = self.init.clone() else {
            return true;
        };
        let generation = self.generation;
        self.send_to_server(line);
        let deadline = Instant::now() + INIT_WAIT;
        loop {
            let event = tokio::select! {
                event = inbox.recv() => event,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            match event {
                Some(Event::ChildLine(g, line)) if g == generation => {
                    let answered = mcp::classify(&line)
                        .iter()
                        .any(|m| matches!(m, Message::Response { id: got } if *got == id));
                    if answered {
                        break;
                    }
                    self.on_child_line(line).await;
                }
                // Held, unless it answers the new server (which may ask the client something,
                // `ping`, before it answers `initialize`).
                Some(Event::Client(Some(line))) => self.on_client(line),
                Some(event @ Event::Client(None)) => {
                    self.on_event(event).await;
                    return false;
                }
                Some(Event::ChildExited(g, status)) if g == generation => {
                    self.on_child_exit(status).await;
                    return false;
                }
                Some(_) => {}
                None => {
                    // A failed start: that server goes (killed at once), a new one is due.
                    let what = format!(
                        "the new MCP server did not answer `initialize` within {} s",
                        INIT_WAIT.as_secs()
                    );
                    let message = format!("xero-auth mcp: {what}");
                    self.end_exchanges(&message, &message).await;
                    let lived = self.child.as_ref().map(|c| c.started.elapsed());
                    if let Some(kill) = self.child.take().and_then(|mut c| c.kill.take()) {
                        let _ = kill.send(());
                    }
                    self.signals.supervise(None);
                    self.after_server_end(what, lived.unwrap_or_default(), 1);
                    return false;
                }
            }
        }
        if let Some(line) = self.initialized.clone() {
            self.send_to_server(line);
        }
        true
    }

    /// Closes the running server's stdin and kills it if it has not ended after a grace time.
    /// Its later output and end are ignored.
    fn retire_child(&mut self) {
        if let Some(mut old) = self.child.take() {
            old.stdin.take();
            if let Some(kill) = old.kill.take() {
                tokio::spawn(async move {
                    tokio::time::sleep(STOP_GRACE).await;
                    let _ = kill.send(());
                });
            }
        }
        self.signals.supervise(None);
    }

    /// Starts no server again, and asks the running one to end (stdin closed, then killed).
    fn stop(&mut self) {
        self.stopping = true;
        self.restart = None;
        if let Some(child) = self.child.as_mut() {
            child.stdin.take();
            if let Some(kill) = child.kill.take() {
                tokio::spawn(async move {
                    tokio::time::sleep(STOP_GRACE).await;
                    let _ = kill.send(());
                });
            }
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
        if let Some(stdin) = self.child.as_ref().and_then(|c| c.stdin.as_ref()) {
            let _ = stdin.send(line);
        }
    }

    async fn send_to_client(&mut self, line: &[u8]) {
        let written = async {
            self.out.write_all(line).await?;
            self.out.write_all(b"\n").await?;
            self.out.flush().await
        }
        .await;
        if written.is_err() && !self.stopping {
            tracing::debug!("the client's stdout is closed: stopping the server");
            self.stop();
        }
    }

    /// Ends what is in flight with the server that goes: the client's requests it has not
    /// answered get an error saying `answer`; its own requests the client has not answered are
    /// withdrawn from the client with `notifications/cancelled` saying `reason`, so that the
    /// client stops (an elicitation form, a sampling request) and does not answer a server that
    /// is no longer there.
    async fn end_exchanges(&mut self, answer: &str, reason: &str) {
        let (client_requests, server_requests) = self.exchanges.take_all();
        for id in client_requests {
            self.send_to_client(&mcp::error_response(&id, answer)).await;
        }
        for id in server_requests {
            self.send_to_client(&mcp::cancelled_notification(&id, reason))
                .await;
        }
    }

    /// Answers the held requests (and drops the held notifications and responses).
    async fn answer_held(&mut self, message: &str) {
        let held: Vec<Vec<u8>> = self.held.drain(..).collect();
        for line in held {
            for m in mcp::classify(&line) {
                if let Message::Request { id, .. } = m {
                    self.send_to_client(&mcp::error_response(&id, message))
                        .await;
                }
            }
        }
    }

    async fn answer_all_waiting(&mut self, why: &str) {
        let message = format!("xero-auth mcp: {why} before the MCP server answered");
        self.end_exchanges(&message, &format!("xero-auth mcp: {why}"))
            .await;
        self.answer_held(&message).await;
    }

    /// Whether the stored access token is no longer the running server's and is good to use
    /// (another process refreshed, or logged in again).
    async fn rotated_elsewhere(&self) -> bool {
        let Some(running) = &self.child else {
            return false;
        };
        match self.session.stored_token_set().await {
            Ok(Some(set)) => set.access_token.as_ref().is_some_and(|token| {
                digest(token.expose_secret()) != running.token_digest
                    && set.access_valid_for(self.session.now(), self.args.min_valid as i64)
            }),
            Ok(None) => false,
            Err(err) => {
                tracing::debug!("looking for rotated tokens failed: {err}");
                false
            }
        }
    }
}

fn digest(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
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
}
