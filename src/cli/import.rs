//! `xero-auth import FILE [--remove]`: move a plaintext token file into the keychain.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::{Context, format_time};
use crate::error::{Error, Result};
use crate::failpoints::crash_point;
use crate::import::read_token_file;
use crate::secret::ExposeSecret;
use crate::session::RefreshLock;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth import qa_data/tokens/xero-access-token.json --remove
  xero-auth import tokens.json --force             # replace a stored set")]
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
    // What `--remove` will delete is settled before anything is stored.
    let to_remove = if args.remove {
        Some(removable(&args.file, &ctx.profile_name)?)
    } else {
        None
    };
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

    // Read back before touching the file: the keychain, not our memory, must hold the token —
    // nor a cache of what this process wrote (the file store keeps one).
    session.store().forget_cached();
    let kept = |e: Error| match e {
        Error::StoreUnavailable { store, cause, fix } => Error::StoreUnavailable {
            store,
            cause: format!("reading the token set back failed: {cause}"),
            fix: format!("{fix}; the token file {} was kept", args.file.display()),
        },
        other => other,
    };
    let back = session.stored_token_set().await.map_err(kept)?;
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
    if let Some(checked) = to_remove {
        // The name must still be the file that was read: one replaced meanwhile is not deleted.
        if removable(&args.file, &profile).ok() != Some(checked) {
            return Err(Error::InvalidInput(format!(
                "imported, but {} changed while it was being imported (replaced, or turned into a \
                 link); it was not deleted: check it, and delete it yourself",
                args.file.display()
            )));
        }
        std::fs::remove_file(&args.file)
            .map_err(|e| Error::io("imported, but cannot delete the token file", &args.file, e))?;
        eprintln!(
            "deleted {} (its tokens are now only in {}; backups or copies of it still hold them)",
            args.file.display(),
            session.store().describe()
        );
    }
    Ok(())
}

/// Which file a name is: device and inode where the platform has them.
#[derive(Debug, PartialEq, Eq)]
struct FileIdentity {
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
}

/// Checks that deleting `path` deletes the token file: `path` must be the file itself, under its
/// only name. A symbolic link is refused (deleting it leaves the file that holds the tokens,
/// named in the message), and so is a file with other names (hard links), which keep its tokens
/// when one name is deleted. Called before anything is stored, and again just before deleting.
/// `profile` is the profile imported into: the command the refusal suggests names it.
fn removable(path: &Path, profile: &str) -> Result<FileIdentity> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| Error::io("cannot examine the token file", path, e))?;
    let refuse = |why: String, instead: &str| {
        Error::InvalidInput(format!(
            "{} {why}. Nothing was stored or deleted. {instead}",
            path.display()
        ))
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(path)
            .or_else(|_| std::fs::read_link(path))
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "a file that cannot be resolved".into());
        return Err(refuse(
            format!(
                "is a symbolic link to {target}: --remove would delete the link and leave the \
                 tokens in {target}"
            ),
            &format!(
                "Run {} to import and delete the file itself",
                crate::hint::command(profile, &format!("import {target} --remove"))
            ),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.is_file() && meta.nlink() > 1 {
            return Err(refuse(
                format!(
                    "has {} names (hard links): deleting this one would leave its tokens under \
                     the others",
                    meta.nlink()
                ),
                "Import it without --remove, then delete every name of the file yourself",
            ));
        }
        Ok(FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
    #[cfg(not(unix))]
    Ok(FileIdentity {})
}
