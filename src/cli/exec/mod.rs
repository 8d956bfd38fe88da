//! `xero-auth exec -- CMD ARGS…`: run a program with a valid access token in its environment.
//! With `--server`, the program runs as a child and `server` answers it with fresh tokens
//! while it runs.

mod server;

use std::ffi::OsString;

use clap::Args;

use super::Context;
use crate::error::{Error, Result};
use crate::secret::ExposeSecret;
use crate::session::Session;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth exec -- python3 sync.py
  xero-auth exec --tenant \"Demo Company (NZ)\" -- ./report.sh
  xero-auth exec --server -- python3 long_sync.py   # fresh tokens for hours, from a loopback endpoint")]
/// Arguments of `xero-auth exec`.
pub struct ExecArgs {
    /// The tenant for XERO_TENANT_ID, by id or by name (default: the profile's default tenant).
    #[arg(long, value_name = "ID|NAME")]
    pub tenant: Option<String>,
    /// Refresh first when the token expires within this many seconds: 0 to 1500 (an access token
    /// lasts 30 minutes, 1800 s).
    #[arg(long, value_name = "SECS", default_value_t = crate::session::DEFAULT_MARGIN_SECS as u64,
          value_parser = clap::value_parser!(u64).range(0..=1500))]
    pub min_valid: u64,
    /// Also serve fresh tokens to the command while it runs, on 127.0.0.1 (XERO_AUTH_ENDPOINT,
    /// XERO_AUTH_ENDPOINT_KEY): for programs that outlive a 30-minute token.
    #[arg(long)]
    pub server: bool,
    /// The command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD",
        value_hint = clap::ValueHint::CommandWithArguments
    )]
    pub command: Vec<OsString>,
}

/// Runs CMD with `XERO_ACCESS_TOKEN` and `XERO_TENANT_ID` set, and never the refresh token or
/// the client secret. On Unix the command replaces this process (`exec`): signals, stdio and the
/// exit status are the command's own, and none of xero-auth's memory survives.
pub async fn run(args: ExecArgs, ctx: &Context) -> Result<()> {
    if args.server {
        // Every connection to the endpoint is a descriptor: a low soft limit must not let stray
        // connections stop it (the command gets the caller's limit back).
        crate::serve::open_files::raise_to_hard_limit();
    }
    let session = ctx.session()?.with_margin(args.min_valid);
    // With the endpoint this is a long-running command: a refreshed set the store would not
    // take is kept and served (and its write retried), rather than thrown away with its live
    // refresh token.
    let session = if args.server {
        session.serving_unsaved()
    } else {
        session
    };
    session.require_token_set_stored().await?;
    let session = super::tenants::with_tenant_named(session, args.tenant.as_deref()).await?;
    let session = with_tenant_or_warning(ctx, session).await;
    // Fail before anything starts when there is no usable token.
    let token = session.access_token().await?;
    let mut command = command_with_token(
        &args.command,
        &token,
        session.tenant(),
        session.profile().store,
    )?;
    drop(token);
    if args.server {
        let status = server::run(session, command, args.min_valid as i64).await?;
        ctx.set_exit_status(status);
        return Ok(());
    }
    // The command replaces this process, so its line is written now: the command's own end is
    // not seen (a command that cannot be started adds a line with the error).
    session.record(session.audit_event("exec").with("outcome", "started"));
    // The command replaces this process: it gets the caller's limits back here, where
    // `child::spawn` gives them to the commands of `exec --server` and `mcp`.
    crate::child::with_callers_limits(&mut command);
    let program = command.get_program().to_owned();
    let failed = |source: std::io::Error| crate::child::cannot_run(&program, source);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let failed_exec = command.exec();
        // Still this process: keep refusing core dumps while it reports the failure.
        crate::hardening::reapply_after_failed_exec();
        Err(failed(failed_exec))
    }
    #[cfg(not(unix))]
    {
        let status = command.status().map_err(failed)?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

/// `session` with a tenant when one can be had ([`super::tenants::or_the_only_one`]); else a
/// warning on stderr: most programs need XERO_TENANT_ID, and one that runs without it fails
/// later, with Xero's less helpful answer.
async fn with_tenant_or_warning(ctx: &Context, session: Session) -> Session {
    let (session, missing) = super::tenants::or_the_only_one(ctx, session).await;
    if let Some(why) = missing {
        eprintln!("warning: the command runs without XERO_TENANT_ID: {why}");
    }
    session
}

/// CMD (`command_line`: the program and its arguments) with `XERO_ACCESS_TOKEN` and
/// `XERO_TENANT_ID` (removed when there is no tenant) in its environment, and none of our
/// secrets.
fn command_with_token(
    command_line: &[OsString],
    token: &crate::secret::AccessToken,
    tenant: Option<&str>,
    store: crate::config::StoreKind,
) -> Result<std::process::Command> {
    // clap requires a command; a library caller may build the arguments by hand.
    let Some((program, rest)) = command_line.split_first() else {
        return Err(Error::InvalidInput(
            "give the command to run: `xero-auth exec -- CMD [ARGS…]`".into(),
        ));
    };
    let mut command = std::process::Command::new(program);
    command
        .args(rest)
        .env("XERO_ACCESS_TOKEN", token.expose_secret());
    crate::child::without_secrets(&mut command, store);
    match tenant {
        Some(tenant) => command.env("XERO_TENANT_ID", tenant),
        None => command.env_remove("XERO_TENANT_ID"),
    };
    Ok(command)
}
