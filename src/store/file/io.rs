//! The file store's files on disk: where they are, how they are read (through the one file
//! check), and how one is replaced atomically (a new temporary file, flushed, renamed over the
//! old one, the folder flushed), with the crash points the tests stop a write at.

use super::*;

impl FileStore {
    /// Moves the damaged file `path` aside (`NAME.damaged-UNIXTIME`) before it is replaced.
    pub(super) fn set_aside(&self, path: &Path, why: &str) -> Result<(), StoreFailure> {
        let aside = path.with_extension(format!("age.damaged-{}", crate::time::unix_now()));
        tracing::warn!(
            "{} is damaged ({why}); moved to {} and replaced",
            path.display(),
            aside.display()
        );
        std::fs::rename(path, &aside).map_err(|e| io_failure("cannot move", path, &e))
    }

    /// Creates the store's folders `0700` (and tightens them if someone loosened them; refuses
    /// them when another user owns them or can write them).
    pub(super) fn prepare_folders(&self, dir: &Path) -> Result<(), StoreFailure> {
        let data = self.root.parent().unwrap_or(&self.root);
        private_fs::private_folder_in(data, dir).map_err(|e| match e {
            // Another user's, or open to them: refused as such (exit 1), not as a store that
            // does not answer.
            e @ Error::Untrusted { .. } => StoreFailure::mistyped(e.to_string()),
            other => StoreFailure {
                cause: other.to_string(),
                fix: "make the data folder yours and writable, or point XERO_AUTH_DATA_DIR at \
                      one that is"
                    .into(),
            },
        })
    }

    /// Writes `sealed` to `path` atomically (temporary file, fsync, rename, fsync of the
    /// folder), removing what a write cut short left first: the store's writes are serialised by
    /// the profile's guard.
    pub(super) fn replace(&self, path: &Path, sealed: &[u8]) -> Result<(), StoreFailure> {
        let points = private_fs::WritePoints {
            half_written: "file-store-writing",
            synced: "file-store-written",
        };
        private_fs::replace_locked_file(path, sealed, &points)
            .map_err(|e| io_failure("cannot replace", path, &e))
    }
}

/// Every `.age` file of the store in `root`, in a stable order.
pub(super) fn store_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|profile| profile_files(&profile.path()))
        .collect();
    files.sort();
    files
}

/// The `.age` files of one profile's folder `dir` (not the temporary ones), in a stable order.
pub(super) fn profile_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".age") && !name.starts_with('.') && entry.path().is_file()
        })
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}

/// Whether `path` is a file still encrypted to the passphrase (written before the store had a
/// key).
pub(super) fn is_legacy(path: &Path) -> bool {
    read_sealed(path)
        .ok()
        .and_then(|sealed| Sealed::of(&sealed).ok())
        == Some(Sealed::Passphrase)
}

/// What reading a file of the store found.
pub(super) enum Found {
    Missing,
    /// What the process already decrypted of this version of the file.
    Kept(Zeroizing<Vec<u8>>),
    /// The file's version and its bytes.
    Sealed(FileId, Vec<u8>),
}

/// Reads `path` unless `kept` has it already, refusing what is not a file or far too long.
pub(super) fn read_file(
    path: &Path,
    kept: impl FnOnce(&FileId) -> Option<Zeroizing<Vec<u8>>>,
) -> Result<Found, OpenError> {
    // The folders first: a file in a folder another user can write may be theirs.
    if let Some(dir) = path.parent() {
        checked_folders(dir).map_err(OpenError::Other)?;
    }
    let mut file = match private_fs::open_file(path, FileKind::Own, STORE_FILE_FIX) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(Found::Missing),
        Err(e) => return Err(OpenError::Other(StoreFailure::mistyped(e.to_string()))),
    };
    let meta = file
        .metadata()
        .map_err(|e| OpenError::Other(io_failure("cannot read", path, &e)))?;
    if !meta.is_file() {
        return Err(OpenError::Damaged("it is not a file".into()));
    }
    let id = FileId::of(&meta);
    if let Some(plain) = kept(&id) {
        return Ok(Found::Kept(plain));
    }
    if meta.len() > MAX_FILE_LEN {
        return Err(OpenError::Damaged(format!(
            "it is {} bytes long, far more than a secret of the store",
            meta.len()
        )));
    }
    let mut sealed = Vec::with_capacity(meta.len() as usize + 1);
    (&mut file)
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut sealed)
        .map_err(|e| OpenError::Other(io_failure("cannot read", path, &e)))?;
    Ok(Found::Sealed(id, sealed))
}

/// What to do about a file of the store that fails [`private_fs`]'s check.
pub(super) const STORE_FILE_FIX: &str = "if you did not make it so, another user may have put it there: \
                              remove it (and log in again) or `chmod go-w` it";

/// Checks `dir`, the folder of a file about to be read: the user's alone (a loose one is
/// tightened), and no folder above it that another user can change (refused, not changed: the
/// first write tightens the store's own folders, [`FileStore::prepare_folders`]). Refused folders
/// are exit 1, naming them.
pub(super) fn checked_folders(dir: &Path) -> Result<(), StoreFailure> {
    private_fs::existing_private_folder(dir)
        .map(|_| ())
        .map_err(|e| StoreFailure::mistyped(e.to_string()))
}

/// The bytes of `path` (not secret: age ciphertext).
pub(super) fn read_sealed(path: &Path) -> Result<Vec<u8>, OpenError> {
    match read_file(path, |_| None)? {
        Found::Sealed(_, sealed) => Ok(sealed),
        _ => Err(OpenError::Damaged("it does not exist".into())),
    }
}

/// Flushes a folder's entries (the rename) to disk. Best effort: not every platform can.
pub(super) fn sync_folder(dir: &Path) {
    private_fs::sync_folder(dir);
}
