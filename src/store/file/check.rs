//! What `xero-auth doctor` reports of the file store: its files and their permissions, where
//! the passphrase would come from, and whether it opens the store.

use super::passphrase::given_passphrase;
use super::*;

/// What `xero-auth doctor` reports about the store in `root`: its files and their permissions,
/// where the passphrase would come from, and — when `XERO_AUTH_PASSPHRASE` gives it — whether it
/// opens the store. Never prompts, never writes.
pub fn check(root: &Path, unlock_ttl: std::time::Duration) -> Result<String, StoreFailure> {
    let files = store_files(root);
    let cache = FileStore::new(
        root.to_path_buf(),
        FILE_WORK_FACTORS.0,
        Box::new(|_| Err(StoreFailure::mistyped("not asked"))),
    )
    .with_unlock_cache(unlock_ttl)
    .cache_state();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let loose = |path: &Path| {
            std::fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o077 != 0)
                .unwrap_or(false)
        };
        if let Some(open) = std::iter::once(root.to_path_buf())
            .chain(
                files
                    .iter()
                    .filter_map(|f| f.parent().map(Path::to_path_buf)),
            )
            .chain(files.iter().cloned())
            .find(|p| loose(p))
        {
            return Err(StoreFailure {
                cause: format!("{} can be read by other users", open.display()),
                fix: format!(
                    "`chmod -R go-rwx {}` (the next write also restores 0700 folders)",
                    root.display()
                ),
            });
        }
    }
    let count = match files.len() {
        0 => "no file yet".to_string(),
        1 => "1 file".to_string(),
        n => format!("{n} files"),
    };
    let has_key = root.join(IDENTITY_FILE).exists();
    if has_key && !files.is_empty() && matches!(cache, CacheState::Unlocked(_)) {
        return Ok(format!("{count}; {}", cache.describe()));
    }
    let Some((passphrase, source)) = given_passphrase()? else {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            return Ok(format!(
                "{count}; the passphrase is asked for on the terminal"
            ));
        }
        // Unlocking once would do where the key can be kept.
        let unlock = match (&cache, has_key || files.is_empty()) {
            (CacheState::Locked, true) => {
                "run `xero-auth unlock` once on a terminal (it keeps the store's key in the \
                 kernel for file_unlock_ttl, and commands then need no passphrase); or "
            }
            _ => "",
        };
        return Err(StoreFailure {
            cause: format!(
                "{count}; no {PASSPHRASE_ENV}, no {PASSPHRASE_FILE_ENV}, no systemd credential \
                 and no terminal to ask for the passphrase on; {}",
                cache.describe()
            ),
            fix: format!(
                "{unlock}set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV} for the commands that use \
                 the file store (from a secret manager or the CI's secret variables), or give a \
                 systemd unit LoadCredential={PASSPHRASE_CREDENTIAL}:FILE"
            ),
        });
    };
    let Some(first) = files.first() else {
        return Ok(format!(
            "{count}; the passphrase in {source} becomes the store's at the first write"
        ));
    };
    let mut with = FileStore::new(
        root.to_path_buf(),
        FILE_WORK_FACTORS.0,
        Box::new(move |_| Ok(passphrase.clone())),
    );
    with.repairs = false;
    with.open(first)
        .map(|_| {
            format!(
                "{count}; the passphrase in {source} opens them; {}",
                cache.describe()
            )
        })
        .map_err(|e| e.into_failure(first))
}
