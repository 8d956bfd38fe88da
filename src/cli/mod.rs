//! The command-line interface: one file per command, each with its clap arguments and one
//! `run` function that takes what it depends on from a [`Context`].

pub mod api;
pub mod client;
pub mod completions;
pub mod config;
pub mod doctor;
pub mod exec;
pub mod import;
pub mod keyutils_notice;
pub mod log;
pub mod login;
pub mod logout;
pub mod man;
pub mod mcp;
pub mod notify;
pub mod process;
pub mod profiles;
pub mod refresh;
pub mod scopes;
pub mod status;
pub mod store;
pub mod tenants;
pub mod token;
pub mod unlock;

use std::io::Write;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_PROFILE, Paths, Profile};
use crate::error::{Error, Result};
use crate::session::{Clock, Session, SystemClock};
use crate::store::Store;
// The commands format times through `super::`; the functions live below, in `crate::time`.
pub use crate::time::{format_span, format_time};

/// The heading the options every command takes are listed under, after the command's own.
const GLOBAL: &str = "Global options";

/// `-V`: the version and the commit it was built from (`unknown` outside a git checkout).
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("{} ({})", env!("CARGO_PKG_VERSION"), env!("XERO_AUTH_COMMIT"))
});

/// `--version`: the version, the commit, and the secret stores this build has.
static LONG_VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let stores: Vec<&str> = crate::config::StoreKind::ALL
        .into_iter()
        .filter(|kind| kind.built_in())
        .map(|kind| kind.name())
        .collect();
    format!(
        "{}\ncommit: {}\nstores: {}",
        env!("CARGO_PKG_VERSION"),
        env!("XERO_AUTH_COMMIT"),
        stores.join(", ")
    )
});

/// Keeps a Xero app's client secret and OAuth 2.0 tokens in the operating system's keychain,
/// refreshes them safely, and hands valid access tokens to scripts and programs.
#[derive(Debug, Parser)]
#[command(name = "xero-auth", version = VERSION.as_str(), long_version = LONG_VERSION.as_str(),
          about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// Profile to use: one app and its tokens.
    #[arg(long, global = true, env = "XERO_AUTH_PROFILE", default_value = DEFAULT_PROFILE,
          help_heading = GLOBAL)]
    pub profile: String,

    /// Secret store for this run instead of the profile's `store` (also XERO_AUTH_STORE).
    #[arg(long, global = true, value_name = "STORE", help_heading = GLOBAL, value_parser = [
        "secret-service", "keychain", "credential-manager", "keyutils", "file", "vault",
    ])]
    pub store: Option<String>,

    /// Print data as JSON (status, token, refresh, tenants, profiles, client show, config get,
    /// doctor; the other commands print no data and ignore it).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// Say more on stderr (-v info, -vv debug, -vvv trace). Secrets are never logged.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,

    #[command(subcommand)]
    /// The command to run.
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store, show or remove the app's client id and secret.
    #[command(subcommand)]
    Client(client::ClientCommand),
    /// Authorise the app in the browser (PKCE) and store the tokens; or a custom connection.
    Login(login::LoginArgs),
    /// Move a plaintext token file into the keychain.
    Import(import::ImportArgs),
    /// Refresh the tokens now (keeps the 60-day refresh token alive).
    Refresh(refresh::RefreshArgs),
    /// Print a valid access token, refreshing first only when it is about to expire.
    Token(token::TokenArgs),
    /// Show the profile, its client, store and token lifetimes (never a secret).
    Status(status::StatusArgs),
    /// Show the audit log: who took a token, what refreshed, logged in or called the API.
    Log(log::LogArgs),
    /// Call the Xero API with the access token and tenant header (401 → one refresh, one retry).
    Api(api::ApiArgs),
    /// Run a command with XERO_ACCESS_TOKEN and XERO_TENANT_ID in its environment.
    Exec(exec::ExecArgs),
    /// Run an MCP server with a bearer token in its environment, restarting it with a fresh
    /// token before the old one expires, invisibly to the MCP client.
    Mcp(mcp::McpArgs),
    /// List the connected organisations, or choose the default one.
    Tenants(tenants::TenantsArgs),
    /// The scopes the stored token set was granted, which Xero is retiring, and what a call
    /// needs (`scopes for PATH [METHOD]`).
    Scopes(scopes::ScopesArgs),
    /// Revoke the refresh token at Xero and delete the profile's tokens.
    Logout(logout::LogoutArgs),
    /// Check the secret stores, folders, clock and endpoints, and say what to do (never a secret).
    Doctor(doctor::DoctorArgs),
    /// Move the profile's secrets to another store (crash-safe: run it again to finish).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// List the profiles in config.toml (names, one a line; --json for details).
    Profiles(profiles::ProfilesArgs),
    /// Set, show or remove a profile's settings in config.toml, or print its path.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish), or install one.
    Completions(completions::CompletionsArgs),
    /// Print a man page (roff), list them, write them all into a folder, or install them.
    Man(man::ManArgs),
    /// Unlock the encrypted-file store once and keep its key in the kernel (Linux) for
    /// file_unlock_ttl after its last use, so later commands need no passphrase.
    Unlock(unlock::UnlockArgs),
    /// Forget the file store's kept key now: the next command asks for the passphrase.
    Lock(unlock::LockArgs),
}

/// Looks up an environment variable (the process's, or a test's map).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What commands depend on: configuration, the store, the clock, the output stream.
pub struct Context {
    /// Where the tool keeps its files.
    pub paths: Paths,
    /// The loaded `config.toml`.
    pub config: Config,
    /// The selected profile's name.
    pub profile_name: String,
    /// `--json` was given.
    pub json: bool,
    /// Environment lookups.
    pub env: EnvLookup,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// A store to use instead of the profile's keychain (unit tests).
    pub store_override: Option<Store>,
    /// Stores to use instead of the keychain or file store of a kind (unit tests of a command
    /// that uses two stores: `store move`); before `store_override`.
    pub stores_by_kind: Vec<(crate::config::StoreKind, Store)>,
    /// Where data goes (stdout).
    pub stdout: Mutex<Box<dyn Write + Send>>,
    /// Whether stdin is a terminal (prompts are only offered there).
    pub stdin_is_terminal: bool,
    /// The status the process ends with when the command succeeds: 0, or for a command that
    /// runs a program and outlives it (`exec --server`, `mcp`), the program's.
    pub exit_status: std::sync::atomic::AtomicI32,
}

impl Context {
    /// The real context: process environment, platform folders, system clock, real stdout.
    pub fn from_process(cli: &Cli) -> Result<Self> {
        use std::io::IsTerminal;
        // `--store` wins over XERO_AUTH_STORE, which wins over the profile's `store`.
        let store = cli.store.clone();
        let env: EnvLookup = Box::new(move |key| match (key, &store) {
            ("XERO_AUTH_STORE", Some(store)) => Some(store.clone()),
            _ => std::env::var(key).ok(),
        });
        let paths = Paths::from_env(&*env)?;
        // These need no configuration: a broken config.toml must not stop them (`config path`
        // is how one finds the file to mend).
        let config = match cli.command {
            Command::Completions(_)
            | Command::Man(_)
            | Command::Config(config::ConfigCommand::Path) => {
                Config::from_str(&paths.config_file(), "")?
            }
            // doctor changes nothing, and reports a file the check refuses rather than stop.
            Command::Doctor(_) => Config::load_unchanged(&paths.config_file())?,
            _ => Config::load(&paths.config_file())?,
        };
        for warning in config.warnings() {
            eprintln!("warning: {warning}");
        }
        Ok(Context {
            paths,
            config,
            profile_name: cli.profile.clone(),
            json: cli.json,
            env,
            clock: Arc::new(SystemClock),
            store_override: None,
            stores_by_kind: Vec::new(),
            stdout: Mutex::new(Box::new(std::io::stdout())),
            stdin_is_terminal: std::io::stdin().is_terminal(),
            exit_status: Default::default(),
        })
    }

    /// The selected profile, resolved.
    pub fn profile(&self) -> Result<Profile> {
        self.config.profile(&self.profile_name, &*self.env)
    }

    /// The store of `profile`.
    pub fn store(&self, profile: &Profile) -> Store {
        let by_kind = self
            .stores_by_kind
            .iter()
            .find(|(k, _)| *k == profile.store);
        by_kind
            .map(|(_, store)| store.clone())
            .or_else(|| self.store_override.clone())
            .unwrap_or_else(|| keyutils_notice::profile_store(profile, &self.paths))
    }

    /// A session for the selected profile.
    pub fn session(&self) -> Result<Session> {
        let profile = self.profile()?;
        let store = self.store(&profile);
        Ok(Session::new(
            profile,
            self.paths.clone(),
            store,
            self.clock.clone(),
        ))
    }

    /// `err`, or — when it says nothing is stored for the selected profile and `config.toml`
    /// does not name that profile either — the likelier truth: a mistyped `--profile`, with the
    /// profiles there are. Only ever on the way out of a command that failed anyway, so a working
    /// profile costs nothing and a profile that lives only in the keychain still works.
    pub fn unknown_profile_or(&self, err: Error) -> Error {
        match &err {
            Error::NothingStored { profile, .. }
                if *profile == self.profile_name && !self.config.has_profile(profile) =>
            {
                let known = self.config.profile_names();
                let suggestion = crate::config::closest(profile, known.iter().map(String::as_str))
                    .map(String::from);
                Error::UnknownProfile {
                    profile: profile.clone(),
                    config: self.config.path().to_path_buf(),
                    known,
                    suggestion,
                }
            }
            _ => err,
        }
    }

    /// The warning for a command that stored secrets in `store` given with `--store`, when the
    /// profile's own `store` is another: `--store` is not remembered (a one-off, like every
    /// global flag), so the next command without it would look in the other store and find
    /// nothing (exit 3) or an unavailable store (exit 5). None when the stores agree.
    pub fn store_for_this_run_only(&self, store: &str) -> Option<String> {
        let without_flag = |key: &str| match key {
            "XERO_AUTH_STORE" => None,
            _ => (self.env)(key),
        };
        let configured = self
            .config
            .profile(&self.profile_name, &without_flag)
            .ok()?;
        let usual = configured.store.name();
        (usual != store).then(|| {
            format!(
                "warning: --store {store} was for this run only: profile '{}' otherwise uses \
                 {usual} (its `store` in config.toml), where commands without \
                 --store will not find what was just stored. To keep {store} for this profile, \
                 run {}",
                self.profile_name,
                crate::hint::command(&self.profile_name, &format!("config set store {store}"))
            )
        })
    }

    /// Writes data to stdout in one call and flushes. A closed pipe (`| head`) is a normal end.
    pub fn write_out(&self, bytes: &[u8]) -> Result<()> {
        let mut out = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
        match out.write_all(bytes).and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(Error::io("cannot write to", "stdout", e)),
        }
    }

    /// Makes the process end with `status` (a child's) when the command succeeds.
    pub fn set_exit_status(&self, status: i32) {
        self.exit_status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// Writes a JSON value and a newline to stdout (never used for secrets).
    pub fn write_json(&self, value: &serde_json::Value) -> Result<()> {
        let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
        text.push('\n');
        self.write_out(text.as_bytes())
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli, ctx: &Context) -> Result<()> {
    // `doctor` reports each profile's state itself; its exit is its first problem's.
    let doctor = matches!(cli.command, Command::Doctor(_));
    // The commands that store something: what they stored is where later commands must look.
    let stores = matches!(
        cli.command,
        Command::Client(client::ClientCommand::Set(_)) | Command::Login(_) | Command::Import(_)
    );
    let audited = audited(&cli.command);
    crate::audit::set_via(audited.unwrap_or_else(|| via(&cli.command)));
    let started = std::time::Instant::now();
    let result = match cli.command {
        Command::Log(args) => log::run(args, ctx).await,
        Command::Client(cmd) => client::run(cmd, ctx).await,
        Command::Login(args) => login::run(args, ctx).await,
        Command::Import(args) => import::run(args, ctx).await,
        Command::Refresh(args) => refresh::run(args, ctx).await,
        Command::Token(args) => token::run(args, ctx).await,
        Command::Status(args) => status::run(args, ctx).await,
        Command::Tenants(args) => tenants::run(args, ctx).await,
        Command::Scopes(args) => scopes::run(args, ctx).await,
        Command::Api(args) => api::run(args, ctx, cli.verbose > 0).await,
        Command::Exec(args) => exec::run(args, ctx).await,
        Command::Mcp(args) => mcp::run(args, ctx).await,
        Command::Logout(args) => logout::run(args, ctx).await,
        Command::Doctor(args) => doctor::run(args, ctx).await,
        Command::Store(cmd) => store::run(cmd, ctx).await,
        Command::Profiles(args) => profiles::run(args, ctx).await,
        Command::Config(cmd) => config::run(cmd, ctx).await,
        Command::Completions(args) => completions::run(args, ctx).await,
        Command::Man(args) => man::run(args, ctx).await,
        Command::Unlock(args) => unlock::run_unlock(args, ctx).await,
        Command::Lock(args) => unlock::run_lock(args, ctx).await,
    };
    if let Some(name) = audited.filter(|name| *name != "token") {
        let exit = match &result {
            Ok(()) => ctx
                .exit_status
                .load(std::sync::atomic::Ordering::SeqCst),
            Err(e) => e.exit_code() as i32,
        };
        // The profile's store kind and default tenant as configured now (after a `store move`,
        // the store moved to).
        let profile = ctx.profile().ok();
        crate::audit::Event::new(name, &ctx.profile_name, None)
            .with_opt("store", profile.as_ref().map(|p| p.store.name()))
            .with_opt(
                "tenant",
                profile.as_ref().and_then(|p| p.default_tenant.clone()),
            )
            .with("duration_ms", started.elapsed().as_millis() as u64)
            .outcome(exit)
            .record(&ctx.paths, ctx.clock.now());
    }
    if let (Ok(()), true, Some(store)) = (&result, stores, &cli.store)
        && let Some(warning) = ctx.store_for_this_run_only(store)
    {
        eprintln!("{warning}");
    }
    match result {
        Err(err) if !doctor => Err(ctx.unknown_profile_or(err)),
        other => other,
    }
}

/// The audit log's name for a command that touches a secret or spends a token; `None` for the
/// others. `token` is named for the lines its session writes, and writes none of its own.
fn audited(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Client(client::ClientCommand::Set(_)) => "client-set",
        Command::Client(client::ClientCommand::Remove) => "client-remove",
        Command::Login(_) => "login",
        Command::Import(_) => "import",
        Command::Refresh(_) => "refresh-command",
        Command::Token(_) => "token",
        Command::Api(_) => "api",
        Command::Exec(_) => "exec",
        Command::Mcp(_) => "mcp",
        Command::Logout(_) => "logout",
        Command::Store(store::StoreCommand::Move(_)) => "store-move",
        Command::Unlock(_) => "unlock",
        Command::Lock(_) => "lock",
        _ => return None,
    })
}

/// The `via` of the audit log's lines for a command without lines of its own (its session's
/// may have some: `tenants` reads a token to list the organisations).
fn via(command: &Command) -> &'static str {
    match command {
        Command::Status(_) => "status",
        Command::Tenants(_) => "tenants",
        Command::Scopes(_) => "scopes",
        Command::Doctor(_) => "doctor",
        Command::Store(_) => "store",
        Command::Client(_) => "client",
        Command::Profiles(_) => "profiles",
        Command::Config(_) => "config",
        _ => "xero-auth",
    }
}

/// Standard input as a file read directly: not through the standard library's process-wide
/// stdin buffer, which lives until exit and would keep a copy of whatever passed through it (a
/// secret, a pasted redirect URL and its code).
#[cfg(unix)]
fn unbuffered_stdin() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 0 is open for the life of the process; ManuallyDrop keeps it open after use.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) })
}

#[cfg(test)]
pub(crate) mod testing {
    //! A context for unit tests: memory store, fixed clock, captured stdout.
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::collections::HashMap;
    use std::time::Duration;

    pub struct FixedClock(pub i64);
    impl Clock for FixedClock {
        fn now(&self) -> i64 {
            self.0
        }
    }

    #[derive(Clone, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Captured {
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    pub struct TestContext {
        pub ctx: Context,
        pub store: Arc<MemoryStore>,
        pub out: Captured,
        pub dir: tempfile::TempDir,
    }

    pub fn context(now: i64, env: HashMap<String, String>, config: &str) -> TestContext {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: dir.path().join("config"),
            state_dir: dir.path().join("state"),
            data_dir: dir.path().join("data"),
        };
        std::fs::create_dir_all(&paths.config_dir).unwrap();
        std::fs::write(paths.config_file(), config).unwrap();
        let store = Arc::new(MemoryStore::default());
        let out = Captured::default();
        let ctx = Context {
            config: Config::load(&paths.config_file()).unwrap(),
            paths,
            profile_name: "default".into(),
            json: false,
            env: Box::new(move |k| env.get(k).cloned()),
            clock: Arc::new(FixedClock(now)),
            store_override: Some(Store::new(store.clone(), Duration::from_secs(5))),
            stores_by_kind: Vec::new(),
            stdout: Mutex::new(Box::new(out.clone())),
            stdin_is_terminal: false,
            exit_status: Default::default(),
        };
        TestContext {
            ctx,
            store,
            out,
            dir,
        }
    }
}
