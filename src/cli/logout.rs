//! `xero-auth logout`: revoke the refresh token at Xero, then delete the profile's token set.

use clap::Args;

use super::Context;
use crate::error::{Error, Rejection, Result};
use crate::secret::ExposeSecret;
use crate::session::{LOCK_WAIT, RefreshLock};

#[derive(Debug, Args)]
/// Arguments of `xero-auth logout`.
pub struct LogoutArgs {
    /// Delete the local tokens without revoking them at Xero.
    #[arg(long)]
    pub keep_remote: bool,
    /// Delete the local tokens even when the revocation fails.
    #[arg(long)]
    pub force: bool,
}

/// Revokes, then deletes. A failed revocation keeps the local secrets (exit 6 or 4) unless
/// `--force`: deleting them would leave a live refresh token nobody can revoke any more.
pub async fn run(args: LogoutArgs, ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    let name = session.profile().name.clone();
    let lock = RefreshLock::acquire(&ctx.paths, &name, LOCK_WAIT).await?;
    // Nothing stored is what logging out leads to: a second `logout` (or one after `client
    // remove` and a fresh start) has reached its goal, so it says so and succeeds, and a
    // script that logs out "to be sure" does not fail.
    let Some(set) = session.stored_token_set().await? else {
        // Unless the profile is not configured either: then it is most likely mistyped, and
        // the error names the profiles there are.
        if !ctx.config.has_profile(&name) {
            return Err(session.no_token_set());
        }
        eprintln!(
            "profile '{name}' is already logged out: no token set is stored in {}",
            session.store().describe()
        );
        return Ok(());
    };

    match (&set.refresh_token, args.keep_remote) {
        (Some(refresh_token), false) => {
            let revoked = match session.app_credentials().await {
                Ok(app) => session.revoke(&app, refresh_token.expose_secret()).await,
                Err(e) => Err(e),
            };
            match revoked {
                Ok(()) => eprintln!(
                    "revoked the refresh token at {} (Xero also removes the app's connections)",
                    session.profile().endpoints.revocation
                ),
                // Already dead at Xero: nothing left to revoke.
                Err(Error::ReauthRequired {
                    rejection: Rejection::Grant,
                    ..
                }) => {
                    eprintln!("the refresh token was already invalid at Xero")
                }
                // Two lines: the failure's own message says what it kept, which --force
                // then overrides; on one line the two read as a contradiction.
                Err(e) if args.force => eprintln!(
                    "warning: revocation failed: {e}\n--force: deleting the local tokens of profile '{name}' anyway"
                ),
                Err(e) => {
                    eprintln!(
                        "the local tokens of profile '{name}' were kept; use --force to delete them anyway"
                    );
                    return Err(e);
                }
            }
        }
        (Some(_), true) => eprintln!(
            "not revoking at Xero (--keep-remote): the refresh token stays valid there until it lapses"
        ),
        (None, _) => {}
    }
    session.delete_token_set(&lock).await?;
    eprintln!(
        "logged out: deleted the token set of profile '{name}' from {} (the client id and secret are kept; {} deletes them)",
        session.store().describe(),
        crate::hint::command(&name, "client remove")
    );
    Ok(())
}
