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
//! key is kept in the kernel for `file_unlock_ttl` ([`super::unlock_cache`], Linux), so later
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

mod check;
mod passphrase;

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

pub use check::check;
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
    cache: Option<super::unlock_cache::KeyCache>,
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

/// What `status` and `doctor` say about the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheState {
    /// The key is cached, and forgotten after this long unused (the kernel's rounding).
    Unlocked(Option<std::time::Duration>),
    /// No key is cached for this store.
    Locked,
    /// `file_unlock_ttl = 0`: the key is never kept.
    Off,
    /// `file_unlock_ttl = 0`, but a key kept under an earlier, longer TTL is still in the kernel
    /// (for about this long): the next command that reads the store forgets it.
    KeptWhileOff(Option<std::time::Duration>),
    /// The platform or this process cannot keep it, and why.
    Unavailable(String),
}

impl CacheState {
    /// The state in a few words, for `status` and `doctor`.
    pub fn describe(&self) -> String {
        match self {
            CacheState::Unlocked(Some(left)) => {
                use crate::session::Clock as _;
                let now = crate::session::SystemClock.now();
                let left = left.as_secs() as i64;
                format!(
                    "unlocked until about {} (in {}; each use extends it): its key is kept in \
                     the kernel (`xero-auth lock` forgets it now)",
                    crate::time::format_time(now.saturating_add(left)),
                    crate::time::format_span(left)
                )
            }
            CacheState::Unlocked(None) => {
                "unlocked: its key is kept in the kernel (`xero-auth lock` forgets it now)".into()
            }
            CacheState::Locked => "locked: the next command that reads it needs the passphrase \
                 (`xero-auth unlock` keeps the key for file_unlock_ttl)"
                .into(),
            CacheState::Off => {
                "its key is never kept (file_unlock_ttl = 0): every command needs the passphrase"
                    .into()
            }
            CacheState::KeptWhileOff(left) => {
                let left = left
                    .map(|d| {
                        format!(
                            " for about {}",
                            crate::time::format_span(d.as_secs() as i64)
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "file_unlock_ttl is 0, yet a key kept by an earlier unlock is still in the \
                     kernel{left}: the next command that reads the store forgets it \
                     (`xero-auth lock` does now)"
                )
            }
            CacheState::Unavailable(why) => {
                format!(
                    "its key cannot be kept between commands here ({why}): every command needs the passphrase"
                )
            }
        }
    }
}

/// How a file of the store is encrypted: its age header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sealed {
    /// To the passphrase (scrypt): a file written before the store had a key.
    Passphrase,
    /// To the store's key.
    Key,
}

impl Sealed {
    fn of(sealed: &[u8]) -> Result<Self, OpenError> {
        let decryptor =
            age::Decryptor::new_buffered(sealed).map_err(|e| OpenError::Damaged(e.to_string()))?;
        Ok(if decryptor.is_scrypt() {
            Sealed::Passphrase
        } else {
            Sealed::Key
        })
    }
}

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

/// Every `.age` file of the store in `root`, in a stable order.
fn store_files(root: &Path) -> Vec<PathBuf> {
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
fn profile_files(dir: &Path) -> Vec<PathBuf> {
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
fn is_legacy(path: &Path) -> bool {
    read_sealed(path)
        .ok()
        .and_then(|sealed| Sealed::of(&sealed).ok())
        == Some(Sealed::Passphrase)
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

    /// Decrypts `sealed` with the passphrase; when it is wrong and was typed on the terminal,
    /// says so and asks again (up to [`TYPED_TRIES`] in all).
    fn decrypt_with_passphrase(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let typed = self.asks_again
            && !self.holds_passphrase()
            && matches!(given_passphrase(), Ok(None))
            && {
                use std::io::IsTerminal;
                std::io::stderr().is_terminal()
            };
        let mut left = if typed { TYPED_TRIES - 1 } else { 0 };
        loop {
            let passphrase = self.passphrase().map_err(OpenError::Other)?;
            match decrypt(sealed, Key::Passphrase(passphrase)) {
                Err(OpenError::WrongPassphrase) if left > 0 => {
                    self.passphrase
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    eprintln!(
                        "that passphrase does not open the file store; try again ({left} {} left)",
                        if left == 1 { "try" } else { "tries" }
                    );
                    left -= 1;
                }
                other => return other,
            }
        }
    }

    /// Keeps the unlocked key in the kernel for `ttl` since its last use (zero: never), where the
    /// platform can (Linux); see [`super::unlock_cache`].
    pub fn with_unlock_cache(self, ttl: std::time::Duration) -> Self {
        #[cfg(target_os = "linux")]
        return FileStore {
            cache: Some(super::unlock_cache::KeyCache::new(&self.root, ttl)),
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

    fn identity_path(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    fn recipient_path(&self) -> PathBuf {
        self.root.join(RECIPIENT_FILE)
    }

    /// The recipient the store's files are encrypted to, as its file says.
    fn stored_recipient(&self) -> Option<String> {
        let bytes =
            private_fs::read_file(&self.recipient_path(), FileKind::Own, 256, "").ok()??;
        Some(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    /// The store's key: this process's copy, else the kernel's (checked against the store's
    /// recipient), else the key file decrypted with the passphrase (one scrypt run), then kept.
    /// `None` for a store written before it had a key.
    fn unlocked_identity(&self) -> Result<Option<age::x25519::Identity>, StoreFailure> {
        self.unlock_identity(true, false)
    }

    /// [`FileStore::unlocked_identity`], with or without the kernel's copy; `writing` makes a
    /// wrong passphrase's message say that nothing was written.
    fn unlock_identity(
        &self,
        use_cache: bool,
        writing: bool,
    ) -> Result<Option<age::x25519::Identity>, StoreFailure> {
        let mut held = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(identity) = held.as_ref() {
            return Ok(Some(identity.clone()));
        }
        let path = self.identity_path();
        if !path.exists() {
            return Ok(None);
        }
        let recipient = self.stored_recipient();
        #[cfg(not(target_os = "linux"))]
        let _ = use_cache;
        #[cfg(target_os = "linux")]
        if let Some(cache) = self.cache.as_ref().filter(|_| use_cache)
            && let Some(payload) = cache.get()
        {
            match parse_identity(&payload) {
                Some(identity)
                    if recipient.as_deref() == Some(identity.to_public().to_string().as_str()) =>
                {
                    *held = Some(identity.clone());
                    return Ok(Some(identity));
                }
                // Another store's key under this folder's name (the folder was made again with
                // another passphrase), or a damaged one: never used, and forgotten.
                _ => {
                    tracing::warn!("the kept key does not belong to this file store; forgotten");
                    let _ = cache.forget();
                }
            }
        }
        let sealed = read_sealed(&path).map_err(|e| e.into_failure(&path))?;
        let plain = self.decrypt_with_passphrase(&sealed).map_err(|e| match e {
            OpenError::WrongPassphrase => wrong_passphrase(&path, writing),
            other => other.into_failure(&path),
        })?;
        let identity = parse_identity(&plain)
            .ok_or_else(|| damaged(&path, "it opens, but does not hold an age identity"))?;
        let public = identity.to_public().to_string();
        if self.repairs && recipient.as_deref() != Some(public.as_str()) {
            // The recipient is derived from the key: a missing or altered copy is written again.
            tracing::warn!("{} was missing or altered; written again", RECIPIENT_FILE);
            self.replace(&self.recipient_path(), format!("{public}\n").as_bytes())?;
        }
        self.keep_in_kernel(&identity);
        *held = Some(identity.clone());
        Ok(Some(identity))
    }

    /// Gives the store its key, under the store's lock: a new identity, its recipient written
    /// first, then the key file encrypted with the passphrase. The caller has checked the
    /// passphrase against the store (or the store is new). Another process that created the key
    /// meanwhile wins: its key is unlocked instead.
    fn create_identity(&self) -> Result<age::x25519::Identity, StoreFailure> {
        self.prepare_folders(&self.root)?;
        let _store_lock = self.lock_store()?;
        if let Some(identity) = self.unlocked_identity()? {
            return Ok(identity);
        }
        let identity = age::x25519::Identity::generate();
        let public = identity.to_public().to_string();
        self.replace(&self.recipient_path(), format!("{public}\n").as_bytes())?;
        crash_point("file-store-recipient-written");
        let secret = identity.to_string();
        let sealed = self.encrypt_to_passphrase(secret.expose_secret().as_bytes())?;
        self.replace(&self.identity_path(), &sealed)?;
        crash_point("file-store-key-written");
        self.keep_in_kernel(&identity);
        *self.identity.lock().unwrap_or_else(|p| p.into_inner()) = Some(identity.clone());
        Ok(identity)
    }

    /// Whether this process holds the passphrase (it was given or typed, and used).
    fn holds_passphrase(&self) -> bool {
        self.passphrase
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Keeps the unlocked `identity` in the kernel, where the store keeps it at all. Best effort:
    /// a key that cannot be kept only means the next command unlocks the store again.
    fn keep_in_kernel(&self, identity: &age::x25519::Identity) {
        #[cfg(target_os = "linux")]
        if let Some(cache) = &self.cache
            && let Err(why) = cache.put(identity.to_string().expose_secret().as_bytes())
        {
            tracing::warn!("the unlocked key is not kept between commands: {why}");
        }
        #[cfg(not(target_os = "linux"))]
        let _ = identity;
    }

    /// Gives an older store (files but no key file) its key, once the passphrase given opens one
    /// of its files.
    fn give_key_if_missing(&self) -> Result<(), StoreFailure> {
        if !self.identity_path().exists() {
            self.vouch_for_passphrase(&self.identity_path())?;
            self.create_identity()?;
        }
        Ok(())
    }

    /// The store's own lock (`SECRETS/.store.lock`), held while its key files change.
    fn lock_store(&self) -> Result<std::fs::File, StoreFailure> {
        let path = self.root.join(STORE_LOCK_FILE);
        let file =
            private_fs::open_lock_file(&path).map_err(|e| StoreFailure::mistyped(e.to_string()))?;
        file.lock()
            .map_err(|e| io_failure("cannot lock", &path, &e))?;
        Ok(file)
    }

    /// The key a write encrypts to. A store that has one is unlocked (a wrong passphrase fails
    /// here, before anything is written), and, when this process holds the passphrase, the
    /// files of `path`'s profile still encrypted to it are re-encrypted to the key. A store
    /// without one gets one: a new store takes the passphrase given now, an older store's
    /// passphrase is first checked against its files.
    fn key_for_writing(&self, path: &Path) -> Result<age::x25519::Recipient, StoreFailure> {
        let identity = match self.unlock_identity(true, true)? {
            Some(identity) => {
                // The key vouches for the passphrase; a damaged file about to be replaced is
                // still kept aside, not destroyed.
                if let Some(why) = self.damage_of(path) {
                    self.set_aside(path, &why)?;
                }
                identity
            }
            None => {
                self.check_passphrase_before_writing(path)?;
                self.create_identity()?
            }
        };
        let recipient = identity.to_public();
        // Best effort: re-encrypting the profile's other files must never stand in the way of
        // this write (a freshly refreshed token set); they stay readable as they are.
        if self.holds_passphrase()
            && let Some(dir) = path.parent()
            && let Err(e) = self.upgrade_folder(dir, path, &recipient)
        {
            tracing::warn!(
                "re-encrypting {} to the store's key failed: {}",
                dir.display(),
                e.cause
            );
        }
        Ok(recipient)
    }

    /// Re-encrypts to the store's key every file in `dir` (one profile's) still encrypted to the
    /// passphrase, but `except` (about to be written anyway). One at a time, each atomically: a
    /// crash leaves each file in one format or the other, both readable. Damaged files are left
    /// as they are, for their own write to set aside.
    fn upgrade_folder(
        &self,
        dir: &Path,
        except: &Path,
        recipient: &age::x25519::Recipient,
    ) -> Result<(), StoreFailure> {
        for file in profile_files(dir) {
            if file == except || !is_legacy(&file) {
                continue;
            }
            let plain = match self.open(&file) {
                Ok(Some(plain)) => plain,
                Ok(None) | Err(OpenError::Damaged(_)) => continue,
                Err(e) => return Err(e.into_failure(&file)),
            };
            let resealed = encrypt(&plain, recipient)?;
            self.replace(&file, &resealed)?;
            self.remember(&file, &plain);
            crash_point("file-store-file-upgraded");
        }
        Ok(())
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

    /// Changes the passphrase (`xero-auth store passphrase`): the key file alone is encrypted
    /// again, with `new`, in one atomic replacement; the files encrypted to the key are not
    /// touched. The current passphrase must open the key file (a kept key is not enough: whoever
    /// changes the passphrase must know it). A store without a key gets one first.
    pub fn change_passphrase(&self, new: SecretString) -> Result<(), StoreFailure> {
        if new.expose_secret().is_empty() {
            return Err(StoreFailure::mistyped(
                "the new passphrase is empty: an empty passphrase protects nothing",
            ));
        }
        let identity = self.prove_passphrase()?;
        // A file still encrypted to the current passphrase would open with no passphrase any
        // more once it changes: every one must have been re-encrypted to the key first
        // (`xero-auth store passphrase` does it, each profile under its lock).
        if let Some(old) = self.legacy_files().first() {
            return Err(StoreFailure {
                cause: format!(
                    "{} is still encrypted to the current passphrase; the passphrase was not \
                     changed",
                    old.display()
                ),
                fix: "run `xero-auth unlock` (it re-encrypts such files to the store's key), then \
                      change the passphrase again"
                    .into(),
            });
        }
        let _store_lock = self.lock_store()?;
        let mut recipient = age::scrypt::Recipient::new(new.clone());
        recipient.set_work_factor(self.work_factor);
        let sealed = seal(identity.to_string().expose_secret().as_bytes(), &recipient)?;
        self.replace(&self.identity_path(), &sealed)?;
        *self.passphrase.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
        Ok(())
    }

    /// Unlocks the store with the passphrase itself, not with a kept key (whoever changes the
    /// passphrase must know it), giving an older store its key first; the passphrase is then
    /// held, so the files still encrypted to it can be re-encrypted
    /// ([`FileStore::upgrade_profile`]). Asks for the passphrase once per process.
    pub fn prove_passphrase(&self) -> Result<age::x25519::Identity, StoreFailure> {
        if self.holds_passphrase()
            && let Some(identity) = self
                .identity
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        {
            return Ok(identity);
        }
        if self.is_empty() {
            return Err(StoreFailure::mistyped(format!(
                "the file store in {} holds nothing yet: its first write asks for the passphrase \
                 it will have",
                self.root.display()
            )));
        }
        self.give_key_if_missing()?;
        self.identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.unlock_identity(false, true)?
            .ok_or_else(|| StoreFailure {
                cause: "the store has no key file".into(),
                fix: "run the command again".into(),
            })
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

    /// Checks that the passphrase opens the store before `path` is written: one passphrase for
    /// the whole store, so some file of it must vouch for the passphrase — the file about to be
    /// replaced, else any other. A store with no file yet takes the passphrase given now. When
    /// files exist but none can vouch (every one damaged), nothing is written: a new file
    /// under an unchecked passphrase would split the store between two passphrases. Returns
    /// why `path` itself is damaged, when it is (it can be replaced, now that another file has
    /// vouched).
    fn vouch_for_passphrase(&self, path: &Path) -> Result<Option<String>, StoreFailure> {
        let target_exists = path.exists();
        let mut witnesses: Vec<PathBuf> = store_files(&self.root)
            .into_iter()
            .filter(|f| f != path)
            .collect();
        if target_exists {
            witnesses.insert(0, path.to_path_buf());
        }
        let mut target_damaged = None;
        // The first damaged file and why: what the refusal names.
        let mut damage = None;
        for witness in witnesses {
            match self.open(&witness) {
                Ok(_) => return Ok(target_damaged),
                Err(OpenError::WrongPassphrase) => return Err(wrong_passphrase(&witness, true)),
                Err(OpenError::Damaged(why)) => {
                    if witness == path {
                        target_damaged = Some(why.clone());
                    }
                    damage.get_or_insert((witness, why));
                }
                Err(OpenError::Other(failure)) => return Err(failure),
            }
        }
        let Some((first, why)) = damage else {
            return Ok(None); // a new store: the passphrase given now becomes its passphrase
        };
        Err(StoreFailure {
            cause: format!(
                "{} is damaged or not an xero-auth file ({why}), and no other file of the store \
                 opens with this passphrase to confirm it is the store's; nothing was written, so \
                 that the store is never split between two passphrases",
                first.display()
            ),
            fix: format!(
                "restore the damaged file from a backup; or, if the store's passphrase is lost or \
                 its files are beyond repair, remove {} and store the secrets again \
                 (`xero-auth client set`, then `login` or `import`)",
                self.root.display()
            ),
        })
    }

    /// Checks the passphrase before a write ([`FileStore::vouch_for_passphrase`]); a damaged file
    /// about to be replaced is then moved aside (`NAME.damaged-UNIXTIME`), not destroyed.
    fn check_passphrase_before_writing(&self, path: &Path) -> Result<(), StoreFailure> {
        match self.vouch_for_passphrase(path)? {
            Some(why) => self.set_aside(path, &why),
            None => Ok(()),
        }
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

    /// Moves the damaged file `path` aside (`NAME.damaged-UNIXTIME`) before it is replaced.
    fn set_aside(&self, path: &Path, why: &str) -> Result<(), StoreFailure> {
        let aside = path.with_extension(format!("age.damaged-{}", unix_now()));
        tracing::warn!(
            "{} is damaged ({why}); moved to {} and replaced",
            path.display(),
            aside.display()
        );
        std::fs::rename(path, &aside).map_err(|e| io_failure("cannot move", path, &e))
    }

    /// `secret` encrypted to the passphrase at the store's work factor: the key file.
    fn encrypt_to_passphrase(&self, secret: &[u8]) -> Result<Vec<u8>, StoreFailure> {
        let mut recipient = age::scrypt::Recipient::new(self.passphrase()?);
        recipient.set_work_factor(self.work_factor);
        seal(secret, &recipient)
    }

    /// Creates the store's folders `0700` (and tightens them if someone loosened them; refuses
    /// them when another user owns them or can write them).
    fn prepare_folders(&self, dir: &Path) -> Result<(), StoreFailure> {
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

    /// Writes `sealed` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
    fn replace(&self, path: &Path, sealed: &[u8]) -> Result<(), StoreFailure> {
        let (dir, name) = match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => (dir, name.to_string_lossy().into_owned()),
            _ => return Err(not_a_store_file(path)),
        };
        remove_leftovers(dir, &name);
        let temp = dir.join(format!(
            ".{name}.{}-{:08x}.tmp",
            std::process::id(),
            rand_u32()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&temp)
            .map_err(|e| io_failure("cannot create", &temp, &e))?;
        let written = (|| {
            let (first, rest) = sealed.split_at(sealed.len() / 2);
            file.write_all(first)?;
            crash_point("file-store-writing");
            file.write_all(rest)?;
            file.sync_all()
        })();
        drop(file);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(io_failure("cannot write", &temp, &e));
        }
        crash_point("file-store-written");
        if let Err(e) = std::fs::rename(&temp, path) {
            let _ = std::fs::remove_file(&temp);
            return Err(io_failure("cannot replace", path, &e));
        }
        sync_folder(dir);
        Ok(())
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

/// What opens a file of the store.
enum Key<'a> {
    /// The passphrase (scrypt): the key file, and files written before the store had a key.
    Passphrase(SecretString),
    /// The store's key.
    Identity(&'a age::x25519::Identity),
}

/// Decrypts an age file into a wiping buffer allocated once. A key that does not open it is
/// [`OpenError::WrongPassphrase`].
fn decrypt(sealed: &[u8], key: Key<'_>) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let damaged = |e: &dyn std::fmt::Display| OpenError::Damaged(e.to_string());
    let decryptor = age::Decryptor::new_buffered(sealed).map_err(|e| damaged(&e))?;
    let scrypt_identity;
    let identity: &dyn age::Identity = match &key {
        Key::Passphrase(passphrase) => {
            if !decryptor.is_scrypt() {
                return Err(OpenError::Damaged(
                    "it is an age file, but not one encrypted to a passphrase".into(),
                ));
            }
            let mut scrypt = age::scrypt::Identity::new(passphrase.clone());
            scrypt.set_max_work_factor(FILE_WORK_FACTORS.1);
            scrypt_identity = scrypt;
            &scrypt_identity
        }
        Key::Identity(identity) => *identity,
    };
    let mut reader = match decryptor.decrypt(std::iter::once(identity)) {
        Ok(reader) => reader,
        Err(age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys) => {
            return Err(OpenError::WrongPassphrase);
        }
        Err(age::DecryptError::ExcessiveWork { required, .. }) => {
            return Err(OpenError::Other(StoreFailure {
                cause: format!(
                    "the file asks for scrypt work factor {required}, above the {} this tool accepts",
                    FILE_WORK_FACTORS.1
                ),
                fix: "it was not written by xero-auth: remove it and store the secret again".into(),
            }));
        }
        Err(e) => return Err(damaged(&e)),
    };
    // The plaintext is never longer than the ciphertext: no reallocation, no stray copy.
    let mut plain = Zeroizing::new(Vec::with_capacity(sealed.len()));
    reader
        .read_to_end(&mut plain)
        .map_err(|e| OpenError::Damaged(format!("its contents do not decrypt: {e}")))?;
    Ok(plain)
}

/// `secret` encrypted to the store's key.
fn encrypt(secret: &[u8], recipient: &age::x25519::Recipient) -> Result<Vec<u8>, StoreFailure> {
    seal(secret, recipient)
}

/// `secret` as an age file to `recipient`.
fn seal(secret: &[u8], recipient: &dyn age::Recipient) -> Result<Vec<u8>, StoreFailure> {
    let failed = |e: &dyn std::fmt::Display| StoreFailure {
        cause: format!("encrypting failed ({e})"),
        fix: "run the command again; if it keeps failing, report it".into(),
    };
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient)).map_err(|e| failed(&e))?;
    // The ciphertext is not secret; age's own buffer for the plaintext chunk is freed through
    // the wiping allocator.
    let mut sealed = Vec::with_capacity(secret.len() + 256);
    let mut writer = encryptor.wrap_output(&mut sealed).map_err(|e| failed(&e))?;
    writer.write_all(secret).map_err(|e| failed(&e))?;
    writer.finish().map_err(|e| failed(&e))?;
    Ok(sealed)
}

/// The store's key from what its key file (or the kernel) holds: `AGE-SECRET-KEY-1…`.
fn parse_identity(plain: &[u8]) -> Option<age::x25519::Identity> {
    let text = std::str::from_utf8(plain).ok()?;
    text.trim().parse().ok()
}

/// What reading a file of the store found.
enum Found {
    Missing,
    /// What the process already decrypted of this version of the file.
    Kept(Zeroizing<Vec<u8>>),
    /// The file's version and its bytes.
    Sealed(FileId, Vec<u8>),
}

/// Reads `path` unless `kept` has it already, refusing what is not a file or far too long.
fn read_file(
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
const STORE_FILE_FIX: &str = "if you did not make it so, another user may have put it there: \
                              remove it (and log in again) or `chmod go-w` it";

/// Checks `dir`, the folder of a file about to be read: the user's alone (a loose one is
/// tightened), and no folder above it that another user can change (refused, not changed: the
/// first write tightens the store's own folders, [`FileStore::prepare_folders`]). Refused folders
/// are exit 1, naming them.
fn checked_folders(dir: &Path) -> Result<(), StoreFailure> {
    private_fs::existing_private_folder(dir)
        .map(|_| ())
        .map_err(|e| StoreFailure::mistyped(e.to_string()))
}

/// [`FileStore::path_of`] builds `ROOT/PROFILE/KIND.age`, so a path without a folder or a name
/// is a mistake of this program's, reported rather than a panic.
fn not_a_store_file(path: &Path) -> StoreFailure {
    StoreFailure {
        cause: format!("{} is not a file of the store", path.display()),
        fix: "run the command again; if it keeps failing, report it as a bug".into(),
    }
}

/// The bytes of `path` (not secret: age ciphertext).
fn read_sealed(path: &Path) -> Result<Vec<u8>, OpenError> {
    match read_file(path, |_| None)? {
        Found::Sealed(_, sealed) => Ok(sealed),
        _ => Err(OpenError::Damaged("it does not exist".into())),
    }
}

fn wrong_passphrase(path: &Path, writing: bool) -> StoreFailure {
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

fn damaged(path: &Path, why: &str) -> StoreFailure {
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

fn io_failure(what: &str, path: &Path, e: &std::io::Error) -> StoreFailure {
    StoreFailure {
        cause: format!("{what} {}: {e}", path.display()),
        fix: "check the folder's owner and permissions and the free space, or point \
              XERO_AUTH_DATA_DIR at a writable folder"
            .into(),
    }
}

/// Removes temporary files a crashed writer of `name` left behind. The caller holds the
/// profile's lock, so no live writer of this file owns one.
fn remove_leftovers(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Flushes a folder's entries (the rename) to disk. Best effort: not every platform can.
fn sync_folder(dir: &Path) {
    private_fs::sync_folder(dir);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // A temporary name needs to be unlikely to clash, not unpredictable; fall back to the clock.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    }
    u32::from_le_bytes(bytes)
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
