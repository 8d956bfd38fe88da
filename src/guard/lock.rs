//! The profile's cross-process refresh lock: an exclusive lock on a file in the state folder.
//!
//! The lock is what makes N processes make one refresh, so what could make it stop excluding is
//! refused rather than worked around, by [`crate::private_fs`]'s one check:
//! - the state folder and its `locks` folder must be the user's alone: a loose one of the user's
//!   is tightened to `0700`, one that another user owns or can write is refused (another user
//!   could hold the lock for ever, or put a link where the lock file is opened);
//! - the lock file is opened without following a symbolic link, and must be a plain file of
//!   the user's: the in-flight note below is written into it;
//! - a relative state folder is refused at start-up ([`crate::config::Paths::from_env`]).
//!
//! Where the lock cannot be trusted for reasons this process cannot see (a network or user-space
//! file system, [`untrusted_lock_filesystem`]), `xero-auth doctor` says so.
//!
//! Only the guard ([`crate::guard`]) takes the lock: every other module reaches it through a
//! [`crate::guard::RefreshGuard`], which takes the lease too where the store has one. A store
//! call started under the guard keeps the lock until the call has finished: a keychain write
//! that outlives its timeout, or a library caller that gives up on a refresh, must not let
//! another process rotate the tokens while an older set may still land.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Paths;
use crate::error::{Error, Result};
use crate::private_fs;

/// The profile's cross-process refresh lock. The operating system releases it when the last
/// handle on the file closes: when this value, every value sharing it (the guards of a move)
/// and every store call started under it are gone, or when the process ends, however it ends.
/// Taken only by the guard (its constructor is the guard module's).
///
/// While a refresh is in flight the file also records when its request was sent (Unix seconds;
/// never a secret): a process that dies before saving Xero's answer leaves that note behind,
/// so a later `invalid_grant` can say what happened instead of guessing.
pub struct RefreshLock {
    file: Arc<File>,
}

/// What the lock file says while a refresh request is unanswered or unsaved.
const IN_FLIGHT_NOTE: &str = "refresh request sent at ";

impl RefreshLock {
    /// The folder of the profiles' lock files.
    pub fn folder(paths: &Paths) -> PathBuf {
        paths.state_dir.join("locks")
    }

    /// The lock file of `profile`.
    pub(super) fn path(paths: &Paths, profile: &str) -> PathBuf {
        Self::folder(paths).join(format!("{profile}.lock"))
    }

    /// Waits at most `max_wait` for the lock.
    pub(super) async fn acquire(paths: &Paths, profile: &str, max_wait: Duration) -> Result<Self> {
        let path = Self::path(paths, profile);
        private_fs::private_folder_in(&paths.state_dir, &Self::folder(paths))?;
        let file = private_fs::open_lock_file(&path)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(RefreshLock {
                        file: Arc::new(file),
                    });
                }
                Err(TryLockError::WouldBlock) => {
                    if started.elapsed() >= max_wait {
                        return Err(Error::LockTimeout {
                            profile: profile.to_string(),
                            path,
                            secs: max_wait.as_secs(),
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(Error::io("cannot lock the lock file", &path, e));
                }
            }
        }
    }

    /// The same lock, held until this value and the original are both gone: the guards of a
    /// move (one per store) share one.
    pub(super) fn share(&self) -> RefreshLock {
        RefreshLock {
            file: self.file.clone(),
        }
    }

    /// When an earlier holder sent a refresh request whose answer it never saved (it died, or
    /// the keychain refused the write), if one did.
    pub(super) fn unsaved_refresh_sent_at(&self) -> Option<i64> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = &*self.file;
        let mut text = String::new();
        file.seek(SeekFrom::Start(0)).ok()?;
        file.take(128).read_to_string(&mut text).ok()?;
        text.trim().strip_prefix(IN_FLIGHT_NOTE)?.parse().ok()
    }

    /// Notes that a refresh request is about to be sent (or, after an unsaved one, that one's
    /// time). Best effort: the note only improves a later message, so a failure to write it is
    /// ignored.
    pub(super) fn note_refresh_sent(&self, sent_at: i64) {
        self.rewrite(&format!("{IN_FLIGHT_NOTE}{sent_at}\n"));
    }

    /// Clears the note: a token set was saved (by a refresh, a login or an import).
    pub(super) fn note_saved(&self) {
        self.rewrite("");
    }

    fn rewrite(&self, text: &str) {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = &*self.file;
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()));
    }
}

/// Why the lock may not exclude other processes when its file is in `dir`, if it is on a file
/// system whose locks cannot be trusted: a network file system (NFS mounted `nolock` keeps locks
/// on each machine only; others emulate or drop them) or a user-space one (FUSE), where whether
/// `flock` works is up to the server or the daemon. `None` elsewhere, and where the type cannot
/// be found (other systems than Linux).
pub fn untrusted_lock_filesystem(dir: &Path) -> Option<String> {
    // The tests' stand-in for a network file system: `FAILPOINTS='lock-filesystem=return(NFS)'`.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("lock-filesystem", |name| name);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statfs is all zeroes before the call, which fills it.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a statfs to fill.
        if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
            return None;
        }
        // The magic numbers of linux/magic.h (f_type's width differs between targets).
        let name = match fs.f_type as u32 {
            0x6969 => "NFS",
            0x517b => "SMB",
            0xff53_4d42 => "CIFS",
            0xfe53_4d42 => "SMB2",
            0x6573_5546 => "FUSE",
            0x0102_1997 => "9P",
            0x5346_414f => "AFS",
            0x786f_4256 => "VirtualBox shared folder",
            _ => return None,
        };
        Some(name.to_string())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            config_dir: dir.join("config"),
            state_dir: dir.join("state"),
            data_dir: dir.join("data"),
        }
    }

    #[test]
    fn a_local_folder_is_a_file_system_whose_locks_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        // The test's temporary folder is on a local disk or a tmpfs.
        assert_eq!(untrusted_lock_filesystem(dir.path()), None);
    }

    #[tokio::test]
    async fn the_lock_excludes_a_second_holder_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let first = RefreshLock::acquire(&paths, "p", Duration::ZERO)
            .await
            .unwrap();
        let err = RefreshLock::acquire(&paths, "p", Duration::from_millis(50))
            .await
            .err()
            .expect("the second waits and gives up");
        assert_eq!(err.exit_code() as u8, 6, "{err}");
        drop(first);
        RefreshLock::acquire(&paths, "p", Duration::ZERO)
            .await
            .unwrap();
    }
}
