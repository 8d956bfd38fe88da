//! `xero-auth unlock`, `xero-auth lock` and `xero-auth store passphrase`: the encrypted-file store's
//! key, kept in the kernel between commands (Linux), forgotten, and its passphrase changed.
//!
//! They act on the file store of the data folder, whichever store the selected profile uses:
//! there is one per data folder, shared by its profiles. The selected profile gives the
//! settings (`file_unlock_ttl`, `file_work_factor`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::{Context, format_span};
use crate::error::{Error, Result};
use crate::guard::RefreshGuard;
use crate::store::file::{CacheState, FileStore};
use crate::store::{Store, StoreFailure, file_store};

/// Arguments of `xero-auth unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {}

/// Arguments of `xero-auth lock`.
#[derive(Debug, Args)]
pub struct LockArgs {}

/// Arguments of `xero-auth store passphrase`.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// Read the new passphrase from the first line of this file (yours alone, mode 0600 or
    /// 0400) instead of asking for it twice on the terminal.
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
}

/// Unlocks the file store once (asking for the passphrase unless its key is kept already), keeps
/// the key in the kernel, and re-encrypts files written before the store had a key, each profile
/// under its refresh lock. Fails when the key cannot be kept: commands would go on asking.
pub async fn run_unlock(_args: UnlockArgs, ctx: &Context) -> Result<()> {
    let store = file_store_of(ctx)?;
    let kept = blocking(&store, |s| s.unlock()).await?;
    upgrade_every_profile(&store, ctx).await?;
    let root = store.root().display().to_string();
    match store.cache_state() {
        CacheState::Unlocked(left) if kept => {
            let left = left
                .map(|d| format!(" (about {} left now)", format_span(d.as_secs() as i64)))
                .unwrap_or_default();
            eprintln!(
                "unlocked the file store in {root}: its key is kept in the kernel until {} \
                 unused{left}; `xero-auth lock` forgets it now",
                format_span(ctx.profile()?.file_unlock_ttl.as_secs() as i64)
            );
            Ok(())
        }
        CacheState::Off | CacheState::KeptWhileOff(_) => Err(Error::InvalidInput(format!(
            "the passphrase opens the file store in {root}, but file_unlock_ttl is 0, so its key \
             is never kept: each command asks for the passphrase again. Set a time in seconds \
             ({}) to keep it",
            crate::hint::command(&ctx.profile_name, "config set file_unlock_ttl 900")
        ))),
        CacheState::Unavailable(why) => Err(Error::StoreUnavailable {
            store: store.describe_root(),
            cause: format!("the passphrase opens the store, but its key cannot be kept: {why}"),
            fix: "each command will need the passphrase (XERO_AUTH_PASSPHRASE, \
                  XERO_AUTH_PASSPHRASE_FILE or the terminal); see docs/headless-linux.md"
                .into(),
        }),
        other => Err(Error::StoreUnavailable {
            store: store.describe_root(),
            cause: format!("the key was given to the kernel, which does not show it ({other:?})"),
            fix: "run `xero-auth unlock` again; `xero-auth doctor` checks the kernel keyring"
                .into(),
        }),
    }
}

/// Forgets the kept key now. Succeeds when there was none too: locked is what was asked for.
pub async fn run_lock(_args: LockArgs, ctx: &Context) -> Result<()> {
    let store = file_store_of(ctx)?;
    let forgot = blocking(&store, |s| s.lock()).await?;
    let root = store.root().display();
    if forgot {
        eprintln!("locked the file store in {root}: its key is no longer kept");
    } else {
        eprintln!("the file store in {root} was not unlocked: no key was kept");
    }
    Ok(())
}

/// Changes the file store's passphrase: the current one must open the store's key file, which
/// alone is encrypted again, atomically.
pub async fn run_passphrase(args: PassphraseArgs, ctx: &Context) -> Result<()> {
    let store = file_store_of(ctx)?;
    // The current passphrase first; then every file still encrypted to it is re-encrypted to
    // the store's key (each profile under its refresh lock), or it would open with neither
    // passphrase afterwards.
    blocking(&store, |s| s.prove_passphrase().map(drop)).await?;
    upgrade_every_profile(&store, ctx).await?;
    let file = args.new_passphrase_file;
    blocking(&store, move |s| {
        let new = crate::store::file::new_passphrase(s.root(), file.as_deref())?;
        s.change_passphrase(new)
    })
    .await?;
    eprintln!(
        "changed the passphrase of the file store in {}: give the new one from now on \
         (XERO_AUTH_PASSPHRASE, XERO_AUTH_PASSPHRASE_FILE, the systemd credential, the terminal)",
        store.root().display()
    );
    Ok(())
}

/// Re-encrypts to the store's key every profile's files still encrypted to the passphrase, each
/// under that profile's guard (so no refresh of it is overwritten by an older copy).
async fn upgrade_every_profile(store: &Arc<FileStore>, ctx: &Context) -> Result<()> {
    // What the guard is taken on: the file store, on this machine alone, has no lease.
    let guarded = Store::new(store.clone(), ctx.profile()?.store_timeout);
    for profile in store.profiles() {
        let guard = RefreshGuard::for_writing(&ctx.paths, &profile, &guarded).await?;
        let upgraded = blocking(store, move |s| s.upgrade_profile(&profile)).await;
        guard.end().await;
        upgraded?;
    }
    Ok(())
}

/// The data folder's file store, with the selected profile's settings.
fn file_store_of(ctx: &Context) -> Result<Arc<FileStore>> {
    let profile = ctx.profile()?;
    Ok(Arc::new(file_store(&profile, &ctx.paths)))
}

/// Runs `f` on the file store, untimed, on a blocking thread whose stack is wiped afterwards
/// (it handles the passphrase and the key).
async fn blocking<T: Send + 'static>(
    store: &Arc<FileStore>,
    f: impl FnOnce(&FileStore) -> Result<T, StoreFailure> + Send + 'static,
) -> Result<T> {
    let inner = store.clone();
    crate::store::untimed(store.describe_root(), move || f(&inner)).await
}
