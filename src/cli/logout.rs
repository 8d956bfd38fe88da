//! `xero-auth logout`: revoke the refresh token at Xero, then delete the profile's token set.

use clap::Args;

use std::io::BufRead;

use super::Context;
use crate::error::{Error, Rejection, Result};
use crate::guard::RefreshGuard;
use crate::secret::ExposeSecret;
use crate::session::Session;
use crate::store::client_secret_account;

#[derive(Debug, Args)]
/// Arguments of `xero-auth logout`.
pub struct LogoutArgs {
    /// Delete the local tokens without revoking them at Xero.
    #[arg(long)]
    pub keep_remote: bool,
    /// Delete the local tokens even when the revocation fails.
    #[arg(long)]
    pub force: bool,
    /// Revoke without asking when other profiles use the same app (they lose their
    /// organisations too). Without a terminal, such a logout is refused unless --yes is given.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Revokes, then deletes. A failed revocation keeps the local secrets (exit 6 or 4) unless
/// `--force`: deleting them would leave a live refresh token nobody can revoke any more.
pub async fn run(args: LogoutArgs, ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    let name = session.profile().name.clone();
    // Asked before the lock is taken: a person thinking about the question must not hold up
    // other processes' refreshes of this profile. A lookup, no secret read.
    if !args.keep_remote
        && session
            .store()
            .contains(&crate::store::token_set_account(&name))
            .await?
    {
        confirm_cutting_off_others(&args, ctx, &session)?;
    }
    let guard = RefreshGuard::for_writing(&ctx.paths, &name, session.store()).await?;
    let outcome = log_out(&args, ctx, &session, &guard).await;
    guard.end().await;
    outcome
}

/// Revokes (unless `--keep-remote`) and deletes the profile's token set, under `guard`.
async fn log_out(
    args: &LogoutArgs,
    ctx: &Context,
    session: &Session,
    guard: &RefreshGuard,
) -> Result<()> {
    let name = session.profile().name.clone();
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
                // Revoking needs the client id: after `client remove` there is none.
                Err(Error::NothingStored {
                    what: "client id", ..
                }) => Err(Error::NothingStored {
                    profile: name.clone(),
                    what: "client id",
                    hint: format!(
                        "its token set cannot be revoked at Xero without it. Put the client \
                             back with {} and run {} again, or delete the tokens here without \
                             revoking them with {}",
                        crate::hint::command(&name, "client set --client-id ID"),
                        crate::hint::command(&name, "logout"),
                        crate::hint::command(&name, "logout --keep-remote")
                    ),
                }),
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
    session.delete_token_set(guard).await?;
    // What is said to be kept is what there is: after `client remove`, nothing is.
    let secret_stored = session
        .store()
        .contains(&client_secret_account(&name))
        .await
        .unwrap_or(false);
    let kept = match (session.profile().client_id.is_some(), secret_stored) {
        (true, true) => Some("the client id and secret are kept"),
        (true, false) => Some("the client id is kept"),
        (false, true) => Some("the client secret is kept"),
        (false, false) => None,
    };
    let store = session.store().describe();
    match kept {
        Some(kept) => eprintln!(
            "logged out: deleted the token set of profile '{name}' from {store} ({kept}; {} deletes {})",
            crate::hint::command(&name, "client remove"),
            if kept.contains(" and ") { "them" } else { "it" }
        ),
        None => eprintln!("logged out: deleted the token set of profile '{name}' from {store}"),
    }
    Ok(())
}

/// The other profiles of this configuration with the same client id as `session`'s: revoking
/// one login removes every connection of that Xero user to the app, so theirs go too when the
/// same person authorised them.
fn same_app_profiles(ctx: &Context, session: &Session) -> Vec<String> {
    let Some(client_id) = session.profile().client_id.as_deref() else {
        return Vec::new();
    };
    ctx.config
        .profile_names()
        .into_iter()
        .filter(|other| *other != session.profile().name)
        .filter(|other| {
            ctx.config
                .raw_value(other, "client_id")
                .and_then(|v| v.as_str())
                .is_some_and(|id| id.trim() == client_id)
        })
        .collect()
}

/// Before a revocation that would cut off other profiles of the same app: says which, then asks
/// on a terminal; without one, refuses unless `--yes` — a script must neither hang on a question
/// nor take other profiles' organisations away unasked. Nothing has been changed when it refuses.
fn confirm_cutting_off_others(args: &LogoutArgs, ctx: &Context, session: &Session) -> Result<()> {
    let others = same_app_profiles(ctx, session);
    if others.is_empty() {
        return Ok(());
    }
    let name = &session.profile().name;
    let listed = others
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "warning: revoking the login of profile '{name}' makes Xero remove every connection of \
         that Xero user to the app (client id {}): profile{} {listed}, with the same client id, \
         will reach no organisation any more if the same user authorised {} — {} then",
        session.profile().client_id.as_deref().unwrap_or_default(),
        if others.len() > 1 { "s" } else { "" },
        if others.len() > 1 { "them" } else { "it" },
        others
            .iter()
            .map(|p| format!("{} again", crate::hint::command(p, "login")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if args.yes {
        return Ok(());
    }
    let keep_remote = crate::hint::command(name, "logout --keep-remote");
    if !ctx.stdin_is_terminal {
        return Err(Error::InvalidInput(format!(
            "not logged out: revoking would cut off {listed} too, and no terminal is here to confirm. \
             Nothing was changed. Pass --yes to revoke anyway, or run {keep_remote} to delete this \
             profile's tokens here without revoking them at Xero"
        )));
    }
    eprint!("Revoke anyway? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).ok();
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "not logged out: nothing was changed ({keep_remote} deletes this profile's tokens here \
         without revoking them at Xero)"
    )))
}
