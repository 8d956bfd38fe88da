//! What the file store says when it fails: the cause, and what the user can do.

use super::*;

/// [`FileStore::path_of`] builds `ROOT/PROFILE/KIND.age`, so a path without a folder or a name
/// is a mistake of this program's, reported rather than a panic.
pub(super) fn not_a_store_file(path: &Path) -> StoreFailure {
    StoreFailure {
        cause: format!("{} is not a file of the store", path.display()),
        fix: "run the command again; if it keeps failing, report it as a bug".into(),
    }
}

pub(super) fn wrong_passphrase(path: &Path, writing: bool) -> StoreFailure {
    let nothing = if writing { "; nothing was written" } else { "" };
    StoreFailure {
        cause: format!(
            "the passphrase does not open {} (a wrong passphrase{nothing})",
            path.display()
        ),
        fix: format!(
            "give the passphrase the store was created with, in {PASSPHRASE_ENV} or at the prompt; \
             a forgotten passphrase cannot be recovered: remove the folder and log in again"
        ),
    }
}

pub(super) fn damaged(path: &Path, why: &str) -> StoreFailure {
    StoreFailure {
        cause: format!(
            "{} is damaged or not an xero-auth file ({why})",
            path.display()
        ),
        fix: "restore it from a backup, or remove it and store the secret again \
              (`xero-auth login`, `import` or `client set`)"
            .into(),
    }
}

pub(super) fn io_failure(what: &str, path: &Path, e: &std::io::Error) -> StoreFailure {
    StoreFailure {
        cause: format!("{what} {}: {e}", path.display()),
        fix: "check the folder's owner and permissions and the free space, or point \
              XERO_AUTH_DATA_DIR at a writable folder"
            .into(),
    }
}
