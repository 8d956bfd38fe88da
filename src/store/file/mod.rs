//! The encrypted-file store (`store = "file"`): for machines with no keychain — servers,
//! containers, CI — and only when a profile names it. Never a fallback.
//!
//! The format and the cryptography are [age](https://age-encryption.org)'s, not ours:
//! - the store's **key** is an age X25519 identity, kept in `SECRETS/.store-identity.age`,
//!   encrypted with the passphrase (age's scrypt recipient, at the profile's work factor); its
//!   public recipient is beside it in `SECRETS/.store-recipient` (not secret);
//! - each secret is one age file encrypted to that recipient:
//!   `SECRETS/PROFILE/token-set.age` and `…/client-secret.age`, files `0600` in `0700` folders.
//!
//! So one passphrase opens the whole store at the cost of one scrypt run (a second and 256 MB at
//! the default work factor), and every file after that costs an X25519 decryption. The unlocked
//! key is kept in the kernel for `file_unlock_ttl` ([`self::unlock_cache`], Linux), so later
//! commands need neither the passphrase nor the scrypt run; it is checked against the store's
//! recipient before use. The passphrase comes from `XERO_AUTH_PASSPHRASE`, a file, a systemd
//! credential or a no-echo prompt on the terminal, once per process.
//!
//! Stores written before the key existed have each file encrypted to the passphrase itself.
//! They are read as they are; a write that has the passphrase creates the key (recipient first,
//! then the key file, each written atomically) and re-encrypts the files of the profile it writes
//! — that profile's writers hold its refresh lock, so nothing is rewritten under another
//! process's refresh. A crash at any point leaves every file readable with the passphrase: old
//! files as before, new ones through the key file.
//!
//! A write is a new temporary file in the same folder, written, flushed to disk (`fsync`), then
//! renamed over the old file and the folder flushed: a crash at any point leaves either the old
//! file or the new one, never half of one. Writers of a profile hold its refresh lock (see
//! `session.rs`), so two processes never interleave their writes either; the store-wide files
//! (the key) are written under a lock of the store's own (`SECRETS/.store.lock`). A write needs
//! the unlocked key, and a wrong passphrase unlocks nothing: it overwrites nothing.
//!
//! Decrypting a file still costs something, so a process keeps what it decrypted, keyed by the
//! file's identity (device, inode, size, modification time): re-reading an unchanged file — the
//! refresh protocol does it under the lock — costs nothing, while a file another process replaced
//! (a rename makes a new inode) is read again. A file changed in place with its time put back
//! would not be noticed, which is why `import` forgets the cache before its read-back
//! ([`super::Interactive::forget_cached`]): the check that allows deleting the plaintext token
//! file decrypts what is on disk.

mod cache_state;
mod check;
mod failures;
mod io;
mod keys;
mod passphrase;
#[cfg(target_os = "linux")]
pub mod unlock_cache;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use age::secrecy::SecretString;

use super::{Interactive, SecretStore, StoreFailure};
use crate::config::{FILE_WORK_FACTORS, validate_profile_name};
use crate::error::Error;
use crate::failpoints::crash_point;
use crate::private_fs::{self, FileKind};
use crate::secret::{ExposeSecret, Zeroizing};

pub use cache_state::CacheState;
pub use check::check;
use failures::*;
use io::*;
use keys::*;
use passphrase::given_passphrase;
pub use passphrase::{
    PASSPHRASE_CREDENTIAL, PASSPHRASE_ENV, PASSPHRASE_FILE_ENV, env_or_terminal, forget_passphrase,
    new_passphrase, take_passphrase_from_env,
};

/// The largest file the store reads: a token set is a few kilobytes.
const MAX_FILE_LEN: u64 = 1 << 20;

/// The store's key, encrypted with the passphrase. Profile names cannot begin with '.', so the
/// store's own files never meet a profile's folder.
pub const IDENTITY_FILE: &str = ".store-identity.age";
/// The key's public recipient: what every file of the store is encrypted to.
pub const RECIPIENT_FILE: &str = ".store-recipient";
/// Held while the key files are created or re-encrypted.
const STORE_LOCK_FILE: &str = ".store.lock";

/// Where a passphrase comes from. `new_store` is true when the store has no file yet, so a
/// prompt asks twice.
pub type PassphraseSource = Box<dyn Fn(bool) -> Result<SecretString, StoreFailure> + Send + Sync>;

/// Secrets in age files under one folder.
pub struct FileStore {
    root: PathBuf,
    work_factor: u8,
    source: PassphraseSource,
    passphrase: Mutex<Option<SecretString>>,
    /// The store's key, once unlocked (from the kernel's cache or with the passphrase).
    identity: Mutex<Option<age::x25519::Identity>>,
    #[cfg(target_os = "linux")]
    cache: Option<self::unlock_cache::KeyCache>,
    /// Whether a missing or altered recipient file is written again when the key is unlocked
    /// (not for `doctor`, which never writes).
    repairs: bool,
    /// Whether a passphrase typed on the terminal that does not open the store is asked for
    /// again ([`FileStore::asking_again_on_a_terminal`]).
    asks_again: bool,
    opened: Mutex<HashMap<PathBuf, Opened>>,
}

/// How many times a passphrase is asked for on a terminal before a wrong one ends the command.
const TYPED_TRIES: u8 = 3;

/// A file this process decrypted (or wrote), and which version of it.
type Opened = (FileId, Zeroizing<Vec<u8>>);

/// What tells one version of a file from another without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        FileId {
            #[cfg(unix)]
            dev: meta.dev(),
            #[cfg(unix)]
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// Why a file did not open.
enum OpenError {
    /// The passphrase is not the one the file was written with.
    WrongPassphrase,
    /// The file is not an age passphrase file, or it was altered or cut short.
    Damaged(String),
    /// Anything else (I/O, a work factor above what we accept).
    Other(StoreFailure),
}

impl OpenError {
    /// What a read of `path` reports.
    fn into_failure(self, path: &Path) -> StoreFailure {
        match self {
            OpenError::WrongPassphrase => wrong_passphrase(path, false),
            OpenError::Damaged(why) => damaged(path, &why),
            OpenError::Other(failure) => failure,
        }
    }
}

impl FileStore {
    /// A store in `root` (the data folder's `secrets`). New files get scrypt work factor
    /// `work_factor` (log2 of N; see [`crate::config::DEFAULT_FILE_WORK_FACTOR`]).
    pub fn new(root: PathBuf, work_factor: u8, source: PassphraseSource) -> Self {
        FileStore {
            root,
            work_factor,
            source,
            passphrase: Mutex::new(None),
            identity: Mutex::new(None),
            #[cfg(target_os = "linux")]
            cache: None,
            repairs: true,
            asks_again: false,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// A passphrase typed on the terminal that does not open the store is asked for again, up
    /// to `TYPED_TRIES` times in all (a typing mistake should not end the command). One given
    /// without asking (a variable, a file) is tried once: asking again would get the same.
    pub fn asking_again_on_a_terminal(self) -> Self {
        FileStore {
            asks_again: true,
            ..self
        }
    }

    /// Keeps the unlocked key in the kernel for `ttl` since its last use (zero: never), where the
    /// platform can (Linux); see [`self::unlock_cache`].
    pub fn with_unlock_cache(self, ttl: std::time::Duration) -> Self {
        #[cfg(target_os = "linux")]
        return FileStore {
            cache: Some(self::unlock_cache::KeyCache::new(&self.root, ttl)),
            ..self
        };
        #[cfg(not(target_os = "linux"))]
        {
            let _ = ttl;
            self
        }
    }

    /// Whether the store's key is kept between commands, and for how long.
    pub fn cache_state(&self) -> CacheState {
        #[cfg(target_os = "linux")]
        if let Some(cache) = &self.cache {
            return cache.state();
        }
        CacheState::Unavailable(
            "this platform has no kernel key service xero-auth can keep the key in".into(),
        )
    }

    /// Forgets the key the kernel keeps for this store (`xero-auth lock`); `false` when none was
    /// kept. This process's own copy goes too.
    pub fn lock(&self) -> Result<bool, StoreFailure> {
        self.identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        #[cfg(target_os = "linux")]
        if let Some(cache) = &self.cache {
            return cache.forget().map_err(|cause| StoreFailure {
                cause,
                fix: "run `xero-auth lock` again; `keyctl purge user` removes every user key"
                    .into(),
            });
        }
        Ok(false)
    }

    /// Unlocks the store now (`xero-auth unlock`): asks for the passphrase unless the key is
    /// already kept, and keeps it. A store without a key yet gets one first. Returns whether
    /// the key was kept in the kernel.
    pub fn unlock(&self) -> Result<bool, StoreFailure> {
        if self.is_empty() {
            return Err(StoreFailure::mistyped(format!(
                "the file store in {} holds nothing yet: there is nothing to unlock; its \
                 first write (`xero-auth client set`, `login` or `import`) creates it",
                self.root.display()
            )));
        }
        self.give_key_if_missing()?;
        self.unlocked_identity()?;
        Ok(matches!(self.cache_state(), CacheState::Unlocked(_)))
    }

    /// Keeps what this process wrote to `path` as what it would read back.
    fn remember(&self, path: &Path, plain: &[u8]) {
        if let Ok(meta) = std::fs::metadata(path) {
            self.opened
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    path.to_path_buf(),
                    (FileId::of(&meta), Zeroizing::new(plain.to_vec())),
                );
        }
    }

    /// The store's files still encrypted to the passphrase (written before it had a key).
    fn legacy_files(&self) -> Vec<PathBuf> {
        store_files(&self.root)
            .into_iter()
            .filter(|f| is_legacy(f))
            .collect()
    }

    /// The folder the store keeps its files in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Which store this is, for messages.
    pub fn describe_root(&self) -> String {
        format!("encrypted files in {}", self.root.display())
    }

    /// The file that holds `account` (`PROFILE/token-set` → `PROFILE/token-set.age`).
    pub fn path_of(&self, account: &str) -> Result<PathBuf, StoreFailure> {
        let bad = || StoreFailure {
            cause: format!(
                "'{}' cannot name a file of the store",
                account.escape_debug()
            ),
            fix: "use a plain profile name (letters, digits, '-', '_', '.')".into(),
        };
        let (profile, kind) = account.split_once('/').ok_or_else(bad)?;
        validate_profile_name(profile).map_err(|_| bad())?;
        let plain = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !kind.split('/').all(plain) {
            return Err(bad());
        }
        // Kinds have no '.', so `access-token/0` → `access-token.0.age` cannot meet another kind.
        Ok(self
            .root
            .join(profile)
            .join(format!("{}.age", kind.replace('/', "."))))
    }

    /// Whether the store holds no file yet (not even its key).
    pub fn is_empty(&self) -> bool {
        store_files(&self.root).is_empty() && !self.identity_path().exists()
    }

    /// Re-encrypts to the store's key the files of `profile` still encrypted to the passphrase
    /// (`xero-auth unlock`, which holds the profile's refresh lock). Needs the key, and the
    /// passphrase for those files.
    pub fn upgrade_profile(&self, profile: &str) -> Result<(), StoreFailure> {
        validate_profile_name(profile).map_err(|e| StoreFailure::mistyped(e.to_string()))?;
        let Some(identity) = self.unlocked_identity()? else {
            return Ok(());
        };
        self.upgrade_folder(
            &self.root.join(profile),
            Path::new(""),
            &identity.to_public(),
        )
    }

    /// The profiles that have a folder in the store.
    pub fn profiles(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_profile_name(n).is_ok())
            .collect();
        names.sort();
        names
    }

    /// The passphrase, asked for once per process.
    fn passphrase(&self) -> Result<SecretString, StoreFailure> {
        let mut held = self.passphrase.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(passphrase) = held.as_ref() {
            return Ok(passphrase.clone());
        }
        let passphrase = (self.source)(self.is_empty())?;
        if passphrase.expose_secret().is_empty() {
            return Err(StoreFailure {
                cause: "the file store's passphrase is empty".into(),
                fix: format!(
                    "an empty passphrase protects nothing: give one in {PASSPHRASE_ENV} or at the prompt"
                ),
            });
        }
        *held = Some(passphrase.clone());
        Ok(passphrase)
    }

    /// Reads and decrypts `path`; `None` when there is no such file.
    fn open(&self, path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, OpenError> {
        let (id, sealed) = match read_file(path, |id| self.kept(path, id))? {
            Found::Missing => return Ok(None),
            Found::Kept(plain) => return Ok(Some(plain)),
            Found::Sealed(id, sealed) => (id, sealed),
        };
        let plain = match Sealed::of(&sealed)? {
            Sealed::Passphrase => self.decrypt_with_passphrase(&sealed)?,
            Sealed::Key => {
                let identity = self
                    .unlocked_identity()
                    .map_err(OpenError::Other)?
                    .ok_or_else(|| {
                        OpenError::Damaged(format!(
                            "it is encrypted to a key, and the store has no key file \
                             {IDENTITY_FILE}"
                        ))
                    })?;
                decrypt(&sealed, Key::Identity(&identity)).map_err(|e| match e {
                    OpenError::WrongPassphrase => OpenError::Damaged(
                        "it is encrypted to another key than this store's".into(),
                    ),
                    other => other,
                })?
            }
        };
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), (id, plain.clone()));
        Ok(Some(plain))
    }

    /// What this process already decrypted of `path`, if the file is still that version.
    fn kept(&self, path: &Path, id: &FileId) -> Option<Zeroizing<Vec<u8>>> {
        let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let (known, plain) = opened.get(path)?;
        (known == id).then(|| plain.clone())
    }

    /// Why `path` is damaged, if it is, as far as this process can tell without asking for
    /// anything: a file still encrypted to the passphrase is only opened when the process holds
    /// the passphrase.
    fn damage_of(&self, path: &Path) -> Option<String> {
        let sealed = match read_sealed(path) {
            Ok(sealed) => sealed,
            Err(OpenError::Damaged(why)) if path.exists() => return Some(why),
            Err(_) => return None,
        };
        match Sealed::of(&sealed) {
            Err(OpenError::Damaged(why)) => Some(why),
            Ok(Sealed::Passphrase) if !self.holds_passphrase() => None,
            _ => match self.open(path) {
                Err(OpenError::Damaged(why)) => Some(why),
                _ => None,
            },
        }
    }
}

impl SecretStore for FileStore {
    fn describe(&self) -> String {
        self.describe_root()
    }

    fn interactive(&self) -> Option<&dyn Interactive> {
        Some(self)
    }

    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreFailure> {
        let path = self.path_of(account)?;
        self.open(&path).map_err(|e| e.into_failure(&path))
    }

    fn set(&self, account: &str, _label: &str, secret: &[u8]) -> Result<(), StoreFailure> {
        let path = self.path_of(account)?;
        let dir = path.parent().ok_or_else(|| not_a_store_file(&path))?;
        self.prepare_folders(dir)?;
        let recipient = self.key_for_writing(&path)?;
        let sealed = encrypt(secret, &recipient)?;
        self.replace(&path, &sealed)?;
        // What this process wrote is what it would read back: keep it, keyed by the new file.
        self.remember(&path, secret);
        Ok(())
    }

    fn delete(&self, account: &str) -> Result<bool, StoreFailure> {
        let path = self.path_of(account)?;
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&path);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    sync_folder(dir);
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_failure("cannot delete", &path, &e)),
        }
    }

    fn contains(&self, account: &str) -> Result<bool, StoreFailure> {
        // Existence only: no passphrase, no decryption.
        Ok(self.path_of(account)?.is_file())
    }
}

impl Interactive for FileStore {
    fn prepare(&self, write: bool, account: &str) -> Result<(), StoreFailure> {
        let path = self.path_of(account)?;
        if write {
            // Checked now, not at the write: a wrong passphrase is found before a login
            // exchanges its code. (The key or the decryption is kept, so the write costs no
            // more.)
            if self.unlock_identity(true, true)?.is_none() {
                self.passphrase()?;
                self.vouch_for_passphrase(&path)?;
            }
        } else if let Ok(sealed) = read_sealed(&path) {
            match Sealed::of(&sealed) {
                Ok(Sealed::Key) => {
                    self.unlocked_identity()?;
                }
                Ok(Sealed::Passphrase) => {
                    self.passphrase()?;
                }
                // Reported by the read itself.
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn forget_cached(&self) {
        // The wiping buffers are dropped, so their plaintext goes with them.
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_in(dir: &Path, passphrase: &'static str) -> FileStore {
        FileStore::new(
            dir.join("secrets"),
            FILE_WORK_FACTORS.0,
            Box::new(move |_| Ok(SecretString::from(passphrase))),
        )
    }

    #[test]
    fn a_secret_round_trips_through_an_age_file_only_the_passphrase_opens() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), "correct horse");
        assert!(store.get("work/token-set").unwrap().is_none());
        store
            .set("work/token-set", "label", b"{\"refresh\":\"rt-1\"}")
            .unwrap();

        let path = dir.path().join("secrets/work/token-set.age");
        let sealed = std::fs::read(&path).unwrap();
        assert!(
            sealed.starts_with(b"age-encryption.org/v1\n-> X25519 "),
            "an age file to the store's key"
        );
        let key_file = std::fs::read(dir.path().join("secrets").join(IDENTITY_FILE)).unwrap();
        assert!(
            key_file.starts_with(b"age-encryption.org/v1\n-> scrypt "),
            "the key is encrypted with the passphrase"
        );
        assert!(!key_file.windows(15).any(|w| w == b"AGE-SECRET-KEY-"));
        assert!(
            !sealed.windows(4).any(|w| w == b"rt-1"),
            "nothing in the clear"
        );

        // A fresh process (no cache) reads it back with the passphrase.
        let again = store_in(dir.path(), "correct horse");
        assert_eq!(
            &*again.get("work/token-set").unwrap().unwrap(),
            b"{\"refresh\":\"rt-1\"}"
        );
        assert!(again.contains("work/token-set").unwrap());
        assert!(!again.contains("work/client-secret").unwrap());
    }

    #[test]
    #[cfg(unix)]
    fn files_are_0600_in_0700_folders_even_when_the_folder_was_loosened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), "pw");
        std::fs::create_dir_all(dir.path().join("secrets/work")).unwrap();
        std::fs::set_permissions(
            dir.path().join("secrets"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        store.set("work/client-secret", "label", b"cs").unwrap();
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("secrets"), 0o700);
        assert_eq!(mode("secrets/work"), 0o700);
        assert_eq!(mode("secrets/work/client-secret.age"), 0o600);
    }

    #[test]
    fn a_wrong_passphrase_reads_nothing_and_overwrites_nothing() {
        let dir = tempfile::tempdir().unwrap();
        store_in(dir.path(), "right")
            .set("work/token-set", "l", b"old")
            .unwrap();
        let path = dir.path().join("secrets/work/token-set.age");
        let before = std::fs::read(&path).unwrap();

        let wrong = store_in(dir.path(), "wrong");
        let err = wrong.get("work/token-set").unwrap_err();
        assert!(
            err.cause.contains("passphrase does not open"),
            "{}",
            err.cause
        );
        let err = wrong.set("work/token-set", "l", b"new").unwrap_err();
        assert!(err.cause.contains("nothing was written"), "{}", err.cause);
        // A new file of the same store is refused too: one passphrase for the whole store.
        let err = wrong.set("work/client-secret", "l", b"cs").unwrap_err();
        assert!(
            err.cause.contains("passphrase does not open"),
            "{}",
            err.cause
        );
        assert!(!dir.path().join("secrets/work/client-secret.age").exists());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file is untouched"
        );
        assert_eq!(
            &*store_in(dir.path(), "right")
                .get("work/token-set")
                .unwrap()
                .unwrap(),
            b"old"
        );
    }

    #[test]
    fn a_damaged_file_is_reported_and_set_aside_when_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), "pw");
        store.set("work/token-set", "l", b"old").unwrap();
        // The other file that vouches for the passphrase when the damaged one is replaced.
        store.set("work/client-secret", "l", b"cs").unwrap();
        let path = dir.path().join("secrets/work/token-set.age");
        let mut sealed = std::fs::read(&path).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        std::fs::write(&path, &sealed).unwrap();

        let fresh = store_in(dir.path(), "pw");
        let err = fresh.get("work/token-set").unwrap_err();
        assert!(err.cause.contains("damaged"), "{}", err.cause);
        std::fs::write(&path, b"plain text").unwrap();
        let err = fresh.get("work/token-set").unwrap_err();
        assert!(err.cause.contains("damaged"), "{}", err.cause);

        fresh.set("work/token-set", "l", b"new").unwrap();
        assert_eq!(
            &*store_in(dir.path(), "pw")
                .get("work/token-set")
                .unwrap()
                .unwrap(),
            b"new"
        );
        let aside: Vec<_> = std::fs::read_dir(dir.path().join("secrets/work"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "the damaged file is kept aside");
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), b"plain text");
    }

    /// A file as stores wrote them before they had a key: encrypted to the passphrase.
    fn write_legacy(dir: &Path, account: &str, passphrase: &str, plain: &[u8]) {
        let path = dir.join("secrets").join(format!("{account}.age"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut recipient = age::scrypt::Recipient::new(SecretString::from(passphrase));
        recipient.set_work_factor(FILE_WORK_FACTORS.0);
        std::fs::write(&path, seal(plain, &recipient).unwrap()).unwrap();
    }

    fn is_legacy(dir: &Path, account: &str) -> bool {
        let sealed = std::fs::read(dir.join("secrets").join(format!("{account}.age"))).unwrap();
        Sealed::of(&sealed).ok() == Some(Sealed::Passphrase)
    }

    #[test]
    fn with_every_file_damaged_no_passphrase_is_taken_and_nothing_is_written() {
        // An older store (no key file), its only file damaged: nothing vouches.
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path(), "work/token-set", "pw", b"old");
        let path = dir.path().join("secrets/work/token-set.age");
        std::fs::write(&path, b"plain text").unwrap();
        for passphrase in ["pw", "another"] {
            let store = store_in(dir.path(), passphrase);
            for account in ["work/token-set", "work/client-secret"] {
                let err = store.set(account, "l", b"new").unwrap_err();
                assert!(
                    err.cause.contains("damaged")
                        && err.cause.contains("no other file of the store opens")
                        && err.cause.contains("nothing was written"),
                    "{account}: {}",
                    err.cause
                );
                assert!(err.fix.contains("restore"), "{}", err.fix);
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"plain text");
        let names: Vec<String> = std::fs::read_dir(dir.path().join("secrets/work"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["token-set.age"], "nothing set aside, nothing added");
        assert!(!dir.path().join("secrets").join(IDENTITY_FILE).exists());
    }

    #[test]
    fn with_the_key_file_damaged_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        store_in(dir.path(), "pw")
            .set("work/token-set", "l", b"old")
            .unwrap();
        let key = dir.path().join("secrets").join(IDENTITY_FILE);
        std::fs::write(&key, b"plain text").unwrap();
        let path = dir.path().join("secrets/work/token-set.age");
        let before = std::fs::read(&path).unwrap();
        for passphrase in ["pw", "another"] {
            let store = store_in(dir.path(), passphrase);
            let err = store.set("work/token-set", "l", b"new").unwrap_err();
            assert!(
                err.cause.contains("damaged") && err.cause.contains(IDENTITY_FILE),
                "{}",
                err.cause
            );
            assert!(store.get("work/token-set").is_err());
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn an_older_store_is_read_as_it_is_and_a_write_upgrades_its_profile_only() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path(), "work/token-set", "pw", b"set");
        write_legacy(dir.path(), "work/client-secret", "pw", b"cs");
        write_legacy(dir.path(), "home/token-set", "pw", b"home");

        // Read as it is: no key is made by a read.
        let reader = store_in(dir.path(), "pw");
        assert_eq!(&*reader.get("work/token-set").unwrap().unwrap(), b"set");
        assert!(!dir.path().join("secrets").join(IDENTITY_FILE).exists());

        // A wrong passphrase upgrades nothing and writes nothing.
        let wrong = store_in(dir.path(), "nope");
        assert!(wrong.set("work/token-set", "l", b"x").is_err());
        assert!(!dir.path().join("secrets").join(IDENTITY_FILE).exists());
        assert!(is_legacy(dir.path(), "work/client-secret"));

        let writer = store_in(dir.path(), "pw");
        writer.set("work/token-set", "l", b"set-2").unwrap();
        assert!(dir.path().join("secrets").join(IDENTITY_FILE).exists());
        assert!(!is_legacy(dir.path(), "work/token-set"));
        assert!(
            !is_legacy(dir.path(), "work/client-secret"),
            "the profile's other file is upgraded with it"
        );
        assert!(
            is_legacy(dir.path(), "home/token-set"),
            "another profile's files wait for a write under that profile's lock"
        );

        let fresh = store_in(dir.path(), "pw");
        assert_eq!(&*fresh.get("work/token-set").unwrap().unwrap(), b"set-2");
        assert_eq!(&*fresh.get("work/client-secret").unwrap().unwrap(), b"cs");
        assert_eq!(&*fresh.get("home/token-set").unwrap().unwrap(), b"home");
        fresh.upgrade_profile("home").unwrap();
        assert!(!is_legacy(dir.path(), "home/token-set"));
        assert_eq!(
            &*store_in(dir.path(), "pw")
                .get("home/token-set")
                .unwrap()
                .unwrap(),
            b"home"
        );
    }

    #[test]
    fn a_new_passphrase_rewrites_the_key_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), "old-pw");
        store.set("work/token-set", "l", b"set").unwrap();
        let path = dir.path().join("secrets/work/token-set.age");
        let before = std::fs::read(&path).unwrap();

        // The current passphrase must open the key: a wrong one changes nothing.
        let wrong = store_in(dir.path(), "not-it");
        let err = wrong
            .change_passphrase(SecretString::from("new-pw"))
            .unwrap_err();
        assert!(
            err.cause.contains("passphrase does not open"),
            "{}",
            err.cause
        );
        assert_eq!(
            &*store_in(dir.path(), "old-pw")
                .get("work/token-set")
                .unwrap()
                .unwrap(),
            b"set"
        );

        store_in(dir.path(), "old-pw")
            .change_passphrase(SecretString::from("new-pw"))
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before, "secrets untouched");
        assert!(
            store_in(dir.path(), "old-pw")
                .get("work/token-set")
                .is_err()
        );
        assert_eq!(
            &*store_in(dir.path(), "new-pw")
                .get("work/token-set")
                .unwrap()
                .unwrap(),
            b"set"
        );
    }

    #[test]
    fn a_file_replaced_by_another_process_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let one = store_in(dir.path(), "pw");
        let two = store_in(dir.path(), "pw");
        one.set("work/token-set", "l", b"first").unwrap();
        assert_eq!(&*two.get("work/token-set").unwrap().unwrap(), b"first");
        one.set("work/token-set", "l", b"second").unwrap();
        assert_eq!(&*two.get("work/token-set").unwrap().unwrap(), b"second");
        assert!(one.delete("work/token-set").unwrap());
        assert!(two.get("work/token-set").unwrap().is_none());
        assert!(!one.delete("work/token-set").unwrap());
    }

    #[test]
    fn leftover_temporary_files_are_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), "pw");
        store.set("work/token-set", "l", b"one").unwrap();
        let leftover = dir
            .path()
            .join("secrets/work/.token-set.age.999-0000abcd.tmp");
        std::fs::write(&leftover, b"half a file").unwrap();
        assert_eq!(
            &*store_in(dir.path(), "pw")
                .get("work/token-set")
                .unwrap()
                .unwrap(),
            b"one"
        );
        store.set("work/token-set", "l", b"two").unwrap();
        assert!(!leftover.exists());
    }

    #[test]
    fn accounts_map_to_plain_file_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), "pw");
        let root = dir.path().join("secrets");
        assert_eq!(
            store.path_of("work/token-set").unwrap(),
            root.join("work/token-set.age")
        );
        assert_eq!(
            store.path_of("a.b/access-token/0").unwrap(),
            root.join("a.b/access-token.0.age")
        );
        for bad in [
            "../x/token-set",
            "work/../../etc",
            "work",
            ".hidden/token-set",
            "work/Token",
            "/token-set",
            "work/a.b",
        ] {
            assert!(store.path_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_passphrase_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), "");
        let err = store.set("work/token-set", "l", b"x").unwrap_err();
        assert!(err.cause.contains("empty"), "{}", err.cause);
        assert!(store.is_empty());
    }
}
