//! `xero-auth import FILE [--remove]`: move a plaintext token file into the keychain.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{Context, format_time};
use crate::error::{Error, Result};
use crate::failpoints::crash_point;
use crate::import::read_token_file;
use crate::secret::ExposeSecret;
use crate::session::RefreshLock;

#[derive(Debug, Args)]
/// Arguments of `xero-auth import`.
pub struct ImportArgs {
    /// The token file: the JSON token response Xero's example programs save, or an SDK token set.
    pub file: PathBuf,
    /// Delete the file once the keychain holds its tokens (checked by reading them back).
    #[arg(long)]
    pub remove: bool,
    /// Replace a token set the profile already has.
    #[arg(long)]
    pub force: bool,
}

/// Reads the file, stores its token set, reads it back, and only then deletes the file.
pub async fn run(args: ImportArgs, ctx: &Context) -> Result<()> {
    let imported = read_token_file(&args.file)?;
    let session = ctx.session()?;
    let profile = session.profile().name.clone();

    // Hold the refresh lock: a refresh running meanwhile must not be overwritten by the import,
    // nor the import by it.
    let lock = RefreshLock::acquire(&ctx.paths, &profile, Duration::from_secs(60)).await?;
    match session.stored_token_set().await {
        Ok(None) => {}
        Ok(Some(existing)) if existing.same_tokens(&imported) || args.force => {}
        Ok(Some(existing)) => {
            return Err(Error::InvalidInput(format!(
                "profile '{profile}' already has a token set in {} (refresh token obtained {}); importing would replace it. \
                 Nothing was changed. Use --force to replace it, or --profile NAME to import into another profile",
                session.store().describe(),
                format_time(existing.obtained_at)
            )));
        }
        Err(e @ Error::StoredFormat { .. }) if !args.force => {
            return Err(Error::InvalidInput(format!(
                "{e}; use --force to replace it with the file's tokens"
            )));
        }
        Err(Error::StoredFormat { .. }) => {}
        Err(e) => return Err(e),
    }

    crash_point("import-checked");
    session.store_token_set(&imported, &lock).await?;
    lock.note_saved();
    crash_point("import-stored");

    // Read back before touching the file: the keychain, not our memory, must hold the token.
    let back = session.stored_token_set().await?;
    let matches = back.as_ref().is_some_and(|b| {
        b.refresh_token.as_ref().map(|t| t.expose_secret())
            == imported.refresh_token.as_ref().map(|t| t.expose_secret())
    });
    if !matches {
        return Err(Error::StoreUnavailable {
            store: session.store().describe(),
            cause: "the token set read back from the keychain differs from the one written".into(),
            fix: format!(
                "the file {} was kept; run `xero-auth doctor`",
                args.file.display()
            ),
        });
    }

    let expiry = match imported.expires_at {
        Some(at) if at > session.now() => format!("access token valid until {}", format_time(at)),
        Some(at) => format!(
            "access token expired {} (refreshed on first use)",
            format_time(at)
        ),
        None => "no usable access token (refreshed on first use)".into(),
    };
    eprintln!(
        "imported {} into profile '{profile}' ({}): {expiry}; refresh token lapses {} unless used",
        args.file.display(),
        session.store().describe(),
        format_time(imported.refresh_lapses_at())
    );
    // A token file carries no client id, yet every refresh needs one: said now, while the
    // user is setting up, rather than by a `refresh` (exit 3) once the access token expires.
    if session.profile().client_id.is_none() {
        eprintln!(
            "warning: profile '{profile}' has no client id, so `refresh` will fail (and `token` \
             once this access token expires): run {} with the id of the app that issued these \
             tokens",
            crate::hint::command(&profile, "client set --client-id ID")
        );
    }
    if args.remove {
        std::fs::remove_file(&args.file)
            .map_err(|e| Error::io("imported, but cannot delete the token file", &args.file, e))?;
        eprintln!(
            "deleted {} (its tokens are now only in the keychain; backups or copies of it still hold them)",
            args.file.display()
        );
    }
    Ok(())
}
