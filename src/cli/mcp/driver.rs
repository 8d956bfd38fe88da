//! The bridge's I/O around [`Core`]: it reads the client's lines and the servers', runs the
//! servers, fetches tokens, passes on stop signals, keeps time, and does what the core says.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::core::{Action, Core, Event, Fresh, Settings};
use super::pin;
use crate::child::{self, StopSignals};
use crate::error::{Error, Result};
use crate::secret::ExposeSecret;
use crate::session::Session;
use crate::token_set::TokenSet;

/// How long a server replaced by a new one, or left by its client, has to end after its stdin
/// was closed, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A signal does not wake the driver by itself: with no server to pass it on to, it looks for
/// one this often.
const SIGNAL_LOOK: Duration = Duration::from_millis(250);

/// How to start the MCP server.
pub(super) struct ServerCommand<'a> {
    /// Its program and arguments.
    pub command: &'a [OsString],
    /// The environment variable that carries the bearer token to it.
    pub env_name: &'a str,
    /// `--tenant`: the organisation it must work on.
    pub tenant: Option<&'a str>,
}

/// Runs the bridge until it ends; returns the status to end with. Fails before anything starts
/// when there is no usable token or the first server cannot start.
pub(super) async fn run(
    session: &Session,
    server: ServerCommand<'_>,
    settings: Settings,
) -> Result<i32> {
    let set = session.valid_token_set(settings.min_valid).await?;
    check_organisation(session, &set, server.tenant).await?;
    let (events, mut inbox) = mpsc::unbounded_channel();
    let mut driver = Driver {
        session,
        server_command: server,
        margin: settings.min_valid,
        signals: StopSignals::install()?,
        events,
        out: tokio::io::stdout(),
        server: None,
    };
    let (mut core, start) = Core::new(settings, driver.fresh(set), Instant::now());
    if let Action::Start { generation, token } = start {
        driver.start(generation, &token)?;
        drop(token);
        if let Some(status) = driver.feed(&mut core, Event::Started(generation)).await {
            return Ok(status);
        }
    }
    read_client(driver.events.clone());
    Ok(driver.run(&mut core, &mut inbox).await)
}

/// The running server's handles.
struct Server {
    generation: u64,
    /// Lines for its stdin; dropping the sender closes it.
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Kills it.
    kill: Option<oneshot::Sender<()>>,
}

struct Driver<'a> {
    session: &'a Session,
    server_command: ServerCommand<'a>,
    /// Tokens handed to servers stay valid at least this long (`--min-valid`).
    margin: i64,
    signals: StopSignals,
    /// Where the reading tasks send what they read, and the server's end.
    events: mpsc::UnboundedSender<Event<TokenSet>>,
    out: tokio::io::Stdout,
    server: Option<Server>,
}

impl Driver<'_> {
    async fn run(
        &mut self,
        core: &mut Core<TokenSet>,
        inbox: &mut mpsc::UnboundedReceiver<Event<TokenSet>>,
    ) -> i32 {
        loop {
            if let Some(signal) = self.signals.received()
                && let Some(status) = self.feed(core, Event::StopSignal(signal)).await
            {
                return status;
            }
            let wake = core.next_wake();
            let event = tokio::select! {
                // The driver keeps a sender: the inbox does not close.
                event = inbox.recv() => event.unwrap_or(Event::Abort(1)),
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    Event::Tick
                }
                _ = tokio::time::sleep(SIGNAL_LOOK), if !core.has_server() => continue,
            };
            if let Event::ServerExited { generation, .. } = event
                && core.is_running(generation)
            {
                // A stop signal was passed on to this server, and may be why it ended: the core
                // hears of it first, so that the end does not count as a crash.
                self.signals.supervise(None);
                if let Some(signal) = self.signals.received()
                    && let Some(status) = self.feed(core, Event::StopSignal(signal)).await
                {
                    return status;
                }
            }
            if let Some(status) = self.feed(core, event).await {
                return status;
            }
        }
    }

    /// Hands `event` to the core and does what it says, handing it what that brings (a token,
    /// a started server, a closed stdout) in turn. The status to end with, once the core says.
    async fn feed(&mut self, core: &mut Core<TokenSet>, event: Event<TokenSet>) -> Option<i32> {
        let mut todo: VecDeque<Action<TokenSet>> = core.on(event, Instant::now()).into();
        while let Some(action) = todo.pop_front() {
            let answer = match action {
                Action::ToClient(line) => self.send_to_client(&line).await,
                Action::ToServer(line) => {
                    if let Some(stdin) = self.server.as_ref().and_then(|s| s.stdin.as_ref()) {
                        let _ = stdin.send(line);
                    }
                    None
                }
                Action::FetchToken => Some(self.fetch_token().await),
                Action::Start { generation, token } => {
                    let started = self.start(generation, &token);
                    drop(token);
                    Some(match started {
                        Ok(()) => Event::Started(generation),
                        Err(err) => Event::StartFailed {
                            message: err.to_string(),
                            code: err.exit_code() as i32,
                        },
                    })
                }
                Action::CloseInput(generation) => {
                    if let Some(server) = self.server.as_mut()
                        && server.generation == generation
                    {
                        close_input(server);
                    }
                    None
                }
                Action::Retire(generation) => {
                    if let Some(mut server) = self.server.take_if(|s| s.generation == generation) {
                        close_input(&mut server);
                    }
                    self.signals.supervise(None);
                    None
                }
                Action::Kill(generation) => {
                    if let Some(kill) = self
                        .server
                        .take_if(|s| s.generation == generation)
                        .and_then(|mut s| s.kill.take())
                    {
                        let _ = kill.send(());
                    }
                    self.signals.supervise(None);
                    None
                }
                Action::LookForRotation => Some(Event::Stored(self.stored_digest().await)),
                Action::Say(text) => {
                    eprintln!("{text}");
                    None
                }
                Action::Info(text) => {
                    tracing::info!("{text}");
                    None
                }
                Action::Debug(text) => {
                    tracing::debug!("{text}");
                    None
                }
                Action::ToolCall {
                    tool,
                    status,
                    rule,
                    duration,
                } => {
                    let event = self
                        .session
                        .audit_event("mcp-tool")
                        .with_opt("tool", tool)
                        .with("status", status)
                        .with_opt("rule", rule)
                        .with_opt("duration_ms", duration.map(|d| d.as_millis() as u64));
                    self.session.record(event);
                    None
                }
                Action::Exit(status) => return Some(status),
            };
            if let Some(event) = answer {
                todo.extend(core.on(event, Instant::now()));
            }
        }
        None
    }

    /// A fresh token for the next server, checked against the organisation it must work on:
    /// [`Event::Token`], or [`Event::StartFailed`] when that check refuses (no new server, and
    /// the running one goes too: Xero's server looks at `/connections` again at every call).
    async fn fetch_token(&self) -> Event<TokenSet> {
        let set = match self.session.valid_token_set(self.margin).await {
            Ok(set) => set,
            Err(err) => {
                // The bridge keeps its server and tries again later; the person is told when
                // only they can fix it (see `notify`).
                crate::cli::notify::on_error(self.session, &err);
                return Event::Token(Err(err.to_string()));
            }
        };
        match check_organisation(self.session, &set, self.server_command.tenant).await {
            Ok(()) => Event::Token(Ok(self.fresh(set))),
            // Xero could not be asked: tried again later, as for a token.
            Err(err @ Error::Temporary { .. }) => Event::Token(Err(err.to_string())),
            Err(err) => Event::StartFailed {
                message: err.to_string(),
                code: err.exit_code() as i32,
            },
        }
    }

    /// What the core is told of a fresh token set.
    fn fresh(&self, set: TokenSet) -> Fresh<TokenSet> {
        let now = self.session.now();
        Fresh {
            digest: set
                .access_token
                .as_ref()
                .map(|token| digest(token.expose_secret())),
            valid_for: set.expires_at.unwrap_or(now) - now,
            scopes: set.granted_scopes(),
            token: set,
        }
    }

    /// Starts server number `generation` with `set`'s access token.
    fn start(&mut self, generation: u64, set: &TokenSet) -> Result<()> {
        let token = set.require_access_token(&self.session.profile().name)?;
        // clap requires a command; a library caller may build the arguments by hand.
        let Some((program, rest)) = self.server_command.command.split_first() else {
            return Err(Error::InvalidInput(
                "give the MCP server's command: `xero-auth mcp -- CMD [ARGS…]`".into(),
            ));
        };
        let mut command = std::process::Command::new(program);
        command
            .args(rest)
            .env(self.server_command.env_name, token.expose_secret())
            // With a client id and secret, Xero's server would run a custom connection of its
            // own instead of using the bearer token.
            .env_remove("XERO_CLIENT_ID")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        child::without_secrets(&mut command, self.session.profile().store);
        let mut process = child::spawn(command)?;
        self.signals.supervise(process.id());

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
                if events.send(Event::ServerLine(generation, line)).is_err() {
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
            let code = status.map(child::exit_code).unwrap_or(1);
            let _ = events.send(Event::ServerExited { generation, code });
        });
        self.server = Some(Server {
            generation,
            stdin: Some(stdin_tx),
            kill: Some(kill_tx),
        });
        Ok(())
    }

    /// Writes `line` to the client; [`Event::ClientGone`] when that fails.
    async fn send_to_client(&mut self, line: &[u8]) -> Option<Event<TokenSet>> {
        let written = async {
            self.out.write_all(line).await?;
            self.out.write_all(b"\n").await?;
            self.out.flush().await
        }
        .await;
        written.is_err().then_some(Event::ClientGone)
    }

    /// The digest of the stored access token when it is good to use: another process may have
    /// refreshed, or logged in again.
    async fn stored_digest(&self) -> Option<Vec<u8>> {
        match self.session.stored_token_set().await {
            Ok(Some(set)) => set
                .access_token
                .as_ref()
                .filter(|_| set.access_valid_for(self.session.now(), self.margin))
                .map(|token| digest(token.expose_secret())),
            Ok(None) => None,
            Err(err) => {
                tracing::debug!("looking for rotated tokens failed: {err}");
                None
            }
        }
    }
}

/// Lists `/connections` with `set`'s access token and checks that Xero's MCP server, given it,
/// would work on the organisation chosen (see [`pin`]); the error says why not and what to do.
async fn check_organisation(session: &Session, set: &TokenSet, tenant: Option<&str>) -> Result<()> {
    let profile = session.profile();
    let token = set.require_access_token(&profile.name)?;
    let connections = crate::xero::connections(
        session.http().await?,
        &profile.name,
        &profile.endpoints.connections,
        token.expose_secret(),
    )
    .await?;
    match pin::check(&connections, tenant, profile.default_tenant.as_deref(), &profile.name) {
        Ok(Some(organisation)) => {
            tracing::debug!(
                "the MCP server works on {} ({})",
                organisation.tenant_name,
                organisation.tenant_id
            );
            Ok(())
        }
        Ok(None) => {
            eprintln!(
                "xero-auth mcp: no organisation is connected to the app: the MCP server's calls \
                 will fail until one is (run {} and allow access to one)",
                crate::hint::command(&profile.name, "login")
            );
            Ok(())
        }
        Err(why) => Err(Error::InvalidInput(why)),
    }
}

/// Closes the server's stdin and kills it if it has not ended after a grace time.
fn close_input(server: &mut Server) {
    server.stdin.take();
    if let Some(kill) = server.kill.take() {
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            let _ = kill.send(());
        });
    }
}

/// Reads the client's lines (stdin) into `events` until it closes.
fn read_client(events: mpsc::UnboundedSender<Event<TokenSet>>) {
    tokio::spawn(async move {
        let mut stdin = BufReader::new(tokio::io::stdin());
        while let Some(line) = read_line(&mut stdin).await {
            if events.send(Event::Client(line)).is_err() {
                return;
            }
        }
        let _ = events.send(Event::ClientClosed);
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

fn digest(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

