//! `xero-auth import FILE [--remove]`: move a plaintext token file into the keychain.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{Context, format_time};
use crate::config::StoreKind;
use crate::error::{Error, Result};
use crate::failpoints::crash_point;
use crate::guard::RefreshGuard;
use crate::import::{read_token_file, read_token_stream};
use crate::secret::ExposeSecret;
use crate::session::{DEFAULT_MARGIN_SECS, Session};
use crate::token_set::TokenSet;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth import qa_data/tokens/xero-access-token.json --remove
  xero-auth import tokens.json --force             # replace a stored set
  xoauth token myapp | xero-auth import -          # from a pipe: no plaintext file")]
/// Arguments of `xero-auth import`.
pub struct ImportArgs {
    /// The token file: the JSON token response Xero's example programs save, or an SDK token set
    /// (also wrapped as `{"token": {…}}`); `-` reads it from standard input.
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
    let from_stdin = args.file.as_os_str() == "-";
    if from_stdin && args.remove {
        return Err(Error::InvalidInput(
            "--remove deletes a token file, and `-` reads standard input, which has none to \
             delete: drop --remove"
                .into(),
        ));
    }
    let imported = if from_stdin {
        read_stdin(ctx.clock.now())?
    } else {
        read_token_file(&args.file)?
    };
    let source = if from_stdin {
        "the token set from standard input".to_string()
    } else {
        args.file.display().to_string()
    };
    // What `--remove` will delete is settled before anything is stored.
    let to_remove = if args.remove {
        Some(removable(&args.file, &ctx.profile_name)?)
    } else {
        None
    };
    let session = ctx.session()?;
    let profile = session.profile().name.clone();

    // Under the profile's guard: a refresh running meanwhile, here or on another machine
    // sharing the store, must not be overwritten by the import, nor the import by it.
    let guard = RefreshGuard::for_writing(&ctx.paths, &profile, session.store()).await?;
    let replaced = replace_set(&args, &session, &imported, &source, &guard).await;
    guard.end().await;
    replaced?;

    let expiry = match imported.expires_at {
        Some(at) if at > session.now() => format!("access token valid until {}", format_time(at)),
        Some(at) => format!(
            "access token expired {} (refreshed on first use)",
            format_time(at)
        ),
        None => "no usable access token (refreshed on first use)".into(),
    };
    eprintln!(
        "imported {source} into profile '{profile}' ({}): {expiry}; refresh token lapses {} unless used",
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
    let store = session.store().describe();
    warn_of_shared_chain(ctx, &profile, &imported).await;
    if session.profile().default_tenant.is_none() {
        default_tenant_after_import(ctx, session, &imported).await;
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
            "deleted {} (its tokens are now only in {store}; backups or copies of it still hold \
             them)",
            args.file.display(),
        );
    }
    Ok(())
}

/// Stores `imported` under `guard` unless the profile has another set (and no `--force`), then
/// reads it back: the keychain, not this process's memory, must hold it.
async fn replace_set(
    args: &ImportArgs,
    session: &Session,
    imported: &TokenSet,
    source: &str,
    guard: &RefreshGuard,
) -> Result<()> {
    let profile = &session.profile().name;
    match session.stored_token_set().await {
        Ok(None) => {}
        Ok(Some(existing)) if existing.same_tokens(imported) || args.force => {}
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
    session.store_token_set(imported, guard).await?;
    // A new set: the notes of an unsaved refresh of the old one go (the lease's as it is freed).
    guard.clear_notes().await;
    crash_point("import-stored");

    // Read back before touching the file: the keychain, not our memory, must hold the token —
    // nor a cache of what this process wrote (the file store keeps one).
    session.store().forget_cached();
    let kept = |e: Error| match e {
        Error::StoreUnavailable { store, cause, fix } => Error::StoreUnavailable {
            store,
            cause: format!("reading the token set back failed: {cause}"),
            fix: format!("{fix}; {source} was not deleted"),
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
                "{source} was not deleted; run {}",
                crate::hint::command(profile, "doctor")
            ),
        });
    }
    Ok(())
}

/// The token set piped in on standard input, read past the standard library's buffer (which
/// would keep a copy of the tokens until exit).
fn read_stdin(now: i64) -> Result<TokenSet> {
    #[cfg(unix)]
    {
        let mut stdin = super::unbuffered_stdin();
        read_token_stream(&mut *stdin, now)
    }
    #[cfg(not(unix))]
    read_token_stream(&mut std::io::stdin(), now)
}

/// Warns when another profile holds the refresh token just imported: the two now share one
/// token chain, and the first to refresh leaves the other a token Xero stops taking 30 minutes
/// later. Only profiles kept in a store of the same kind on this machine are read (a keychain
/// read each, no prompt, no network); a failure to read one is not this command's concern.
async fn warn_of_shared_chain(ctx: &Context, profile: &str, imported: &TokenSet) {
    let Some(imported_token) = imported.refresh_token.as_ref() else {
        return;
    };
    let Ok(own) = ctx.profile() else { return };
    if matches!(own.store, StoreKind::File | StoreKind::Vault) {
        return;
    }
    let mut sharing = Vec::new();
    for name in ctx.config.profile_names() {
        if name == profile {
            continue;
        }
        let Ok(other) = ctx.config.profile(&name, &*ctx.env) else {
            continue;
        };
        if other.store != own.store {
            continue;
        }
        let store = ctx.store(&other);
        let session = Session::new(other, ctx.paths.clone(), store, ctx.clock.clone());
        if let Ok(Some(set)) = session.stored_token_set().await
            && set
                .refresh_token
                .as_ref()
                .is_some_and(|t| t.expose_secret() == imported_token.expose_secret())
        {
            sharing.push(name);
        }
    }
    for other in sharing {
        eprintln!(
            "warning: profile '{other}' holds the same tokens: the two profiles now share one \
             token chain, and the first to refresh leaves the other with a refresh token Xero \
             stops taking 30 minutes later (exit 4, invalid_grant). Keep one: drop the other's \
             copy with {} (without revoking, which would end both)",
            crate::hint::command(&other, "logout --keep-remote")
        );
    }
}

/// After an import into a profile without a default tenant: when the imported access token is
/// still valid, asks which organisations it reaches, and keeps the only one as the default (as
/// `login` does); otherwise says how the tenant will be chosen. Never refreshes (an import
/// changes nothing at Xero), and a failure costs only the note.
async fn default_tenant_after_import(ctx: &Context, session: Session, imported: &TokenSet) {
    let profile = session.profile().name.clone();
    let usable = imported
        .expires_at
        .is_some_and(|at| at > session.now() + DEFAULT_MARGIN_SECS);
    if usable {
        if let (_, Some(why)) = super::tenants::or_the_only_one(ctx, session).await {
            eprintln!("note: {why}");
        }
    } else {
        eprintln!(
            "note: profile '{profile}' has no default tenant yet: the first `exec` or `api` \
             takes the only organisation the app reaches (or run {} to choose one)",
            crate::hint::command(&profile, "tenants use ID|NAME")
        );
    }
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
