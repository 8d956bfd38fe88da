//! The binary's run: set the process up, parse the command line, run the command, turn an error
//! into a message on stderr and an exit status (the table in `error.rs`). `main.rs` holds only
//! the global allocator and a call to [`main`].

use std::time::Duration;

use clap::Parser;

use crate::cli::{self, Cli, Context};

/// Sets the process up, parses the command line, runs the command, and ends the process with
/// its status.
pub fn main() -> ! {
    // Before anything reads a secret: no core dumps, no ptrace by other users.
    #[cfg(feature = "hardening")]
    crate::hardening::harden_process();
    // Crash tests only (never in a release build): arm the points named in FAILPOINTS.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    // SAFETY: no other thread exists yet. The file store's passphrase leaves the environment
    // before anything could pass it on to a child process.
    unsafe { crate::store::file::take_passphrase_from_env() };
    // SAFETY: as above. The vault store's token and AppRole secret id, likewise.
    unsafe { crate::store::vault::take_credentials_from_env() };
    // SAFETY: no other thread exists yet. A process the kernel lends the user-session keyring
    // (cron, SSH without pam_keyinit) gets one of its own, through which it can keep the file
    // store's unlocked key in the persistent keyring (store/unlock_cache.rs).
    #[cfg(target_os = "linux")]
    unsafe {
        crate::store::unlock_cache::ensure_own_session_keyring()
    };
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let code = match run(cli) {
        Ok(status) => status,
        Err(err) => {
            eprintln!("xero-auth: {err}");
            err.exit_code() as i32
        }
    };
    crate::store::file::forget_passphrase();
    crate::store::vault::forget_credentials();
    // The command ran in frames below this one (the runtime polls its futures on this thread):
    // whatever they left on the stack goes before the process image does.
    crate::stack::wipe_unused();
    std::process::exit(code);
}

/// Builds a single-threaded runtime (a token helper runs one flow at a time; keychain calls get
/// their own blocking thread, which wipes its stack before it stops) and runs the command on it.
/// Returns the status to end with: 0, or the child's for a command that ran one.
fn run(cli: Cli) -> crate::Result<i32> {
    let runtime = crate::stack::runtime()
        .map_err(|e| crate::Error::io("cannot start the async runtime", "", e))?;
    let ctx = Context::from_process(&cli)?;
    let result = runtime.block_on(cli::run(cli, &ctx));
    // A keychain call that timed out may still be blocked in its thread: do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result.map(|()| ctx.exit_status.load(std::sync::atomic::Ordering::SeqCst))
}

/// Logs go to stderr: `-v` info, `-vv` debug, `-vvv` trace, or `RUST_LOG` (e.g. `xero_auth=debug`).
/// Only this crate's own events are recorded, and none of them carries a secret. The libraries
/// that log through `tracing` themselves (the HTTP client's hyper-util, the D-Bus client zbus)
/// are filtered out whatever the level or `RUST_LOG` asks: what they log was never reviewed for
/// secrets, and there is no bridge from the `log` crate either.
fn init_logging(verbose: u8) {
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    let default = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok());
    // Where an event comes from is worth seeing when everything is asked for.
    let with_target = verbose >= 3 || from_env.is_some();
    let filter = from_env
        .unwrap_or_else(|| Targets::new().with_default(default))
        .and(Targets::new().with_target("xero_auth", LevelFilter::TRACE));
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .event_format(PlainLine { with_target })
                .with_filter(filter),
        )
        .init();
}

/// A logged event as a line like the tool's other messages: `warning: what happened`, with
/// `info:`, `debug:` or `trace:` in front at those levels, and where it comes from after the
/// level when everything is asked for. No padding before the level, no timestamps (the caller's
/// log adds its own).
struct PlainLine {
    with_target: bool,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(writer, "{level}: ")?;
        if self.with_target {
            write!(writer, "{}: ", event.metadata().target())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
