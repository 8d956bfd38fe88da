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
//!
//! `core` decides all of that without I/O, from what `message` reads of each line;
//! `driver` reads and writes, runs the servers and keeps time for it.

mod core;
mod driver;
mod guard;
mod message;
mod pin;

use std::ffi::OsString;

use clap::Args;

use super::Context;
use crate::config::McpGuard;
use crate::error::Result;
use crate::session::DEFAULT_MARGIN_SECS;

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
    /// Pass only the server's tools that read: `tools/list` lists only those, and a call of any
    /// other is answered with an error and never reaches the server. Also on with the profile's
    /// `mcp_read_only = true`.
    #[arg(long)]
    pub read_only: bool,
    /// Pass only the tools whose name matches PATTERN (`*`: any characters, `?`: one); give it
    /// again for more. Adds to the profile's `mcp_allow_tools`.
    #[arg(long = "allow-tool", value_name = "PATTERN")]
    pub allow_tools: Vec<String>,
    /// Refuse the tools whose name matches PATTERN, whatever else allows them; give it again
    /// for more. Adds to the profile's `mcp_deny_tools`.
    #[arg(long = "deny-tool", value_name = "PATTERN")]
    pub deny_tools: Vec<String>,
    /// The organisation the server must work on (a tenant id, or its name): the server is
    /// started, and started again after each rotation, only while it is the one Xero's server
    /// will use; else the bridge refuses and says how to make it so. Without it, the profile's
    /// default tenant when several organisations are connected.
    #[arg(long, value_name = "NAME|ID")]
    pub tenant: Option<String>,
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
        || name.as_bytes().first().is_some_and(u8::is_ascii_digit)
    {
        return Err(
            "an environment variable name is letters, digits and '_', not starting with a digit"
                .into(),
        );
    }
    Ok(name.to_string())
}

/// The guard rails the command line and the profile's configuration ask for, added up: either
/// can turn read-only on, and their patterns count alike (see [`guard`] for how they combine).
fn guard_rails(args: &McpArgs, config: &McpGuard) -> guard::Guard {
    let patterns = |cli: &[String], config: &[String]| {
        let from_cli = cli
            .iter()
            .map(|t| guard::Pattern::new(t, guard::Source::CommandLine));
        let from_config = config
            .iter()
            .map(|t| guard::Pattern::new(t, guard::Source::Config));
        from_cli.chain(from_config).collect()
    };
    guard::Guard {
        read_only: args.read_only || config.read_only,
        allow: patterns(&args.allow_tools, &config.allow_tools),
        deny: patterns(&args.deny_tools, &config.deny_tools),
    }
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
    let server = driver::ServerCommand {
        command: &args.command,
        env_name: &args.env_name,
        tenant: args.tenant.as_deref(),
    };
    let settings = self::core::Settings {
        min_valid: args.min_valid as i64,
        check_every: std::time::Duration::from_secs(args.check_every),
        guard: guard_rails(&args, &session.profile().mcp_guard),
        profile: session.profile().name.clone(),
    };
    let status = driver::run(&session, server, settings).await?;
    crate::cli::notify::finish();
    // A set the store would not take is lost with this process: one more try at storing it.
    session.save_unsaved().await;
    ctx.set_exit_status(status);
    Ok(())
}
