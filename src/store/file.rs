//! The encrypted-file store (`store = "file"`): for machines with no keychain — servers,
//! containers, CI — and only when a profile names it. Never a fallback.
//!
//! Each secret is one [age](https://age-encryption.org) file encrypted to a passphrase (age's
//! scrypt recipient), so the format and the cryptography are age's, not ours:
//! `DATA/xero-auth/secrets/PROFILE/token-set.age` and `…/client-secret.age`, files `0600` in
//! `0700` folders. The passphrase comes from `XERO_AUTH_PASSPHRASE` or a no-echo prompt on the
//! terminal, once per process; one passphrase opens every file of the store.
//!
//! A write is a new temporary file in the same folder, written, flushed to disk (`fsync`), then
//! renamed over the old file and the folder flushed: a crash at any point leaves either the old
//! file or the new one, never half of one. Writers of a profile hold its refresh lock (see
//! `session.rs`), so two processes never interleave their writes either. Before replacing a
//! file, the passphrase is checked against it (or against another file of the store when it is
//! new): a wrong passphrase overwrites nothing.
//!
//! Decrypting costs one scrypt run (about a second at the default work factor): a process
//! keeps what it decrypted, keyed by the file's identity (device, inode, size, modification
//! time), so re-reading an unchanged file — the refresh protocol does it under the lock — costs
//! nothing, while a file another process replaced (a rename makes a new inode) is read again.
//! A file changed in place with its time put back would not be noticed, which is why `import`
//! forgets the cache before its read-back ([`super::SecretStore::forget_cached`]): the check
//! that allows deleting the plaintext token file decrypts what is on disk.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use age::secrecy::SecretString;

use super::{SecretStore, StoreFailure};
use crate::config::{FILE_WORK_FACTORS, validate_profile_name};
use crate::failpoints::crash_point;
use crate::secret::{ExposeSecret, Zeroizing};

/// The environment variable that carries the passphrase.
pub const PASSPHRASE_ENV: &str = "XERO_AUTH_PASSPHRASE";
/// A file whose first line is the passphrase (a secret manager's mount, a root-owned `0400`
/// file for a cron job); read when [`PASSPHRASE_ENV`] is not set.
pub const PASSPHRASE_FILE_ENV: &str = "XERO_AUTH_PASSPHRASE_FILE";
/// The name of the passphrase among systemd's credentials (`LoadCredential=xero-auth-passphrase:…`,
/// found in `$CREDENTIALS_DIRECTORY`); read when neither variable above is set.
pub const PASSPHRASE_CREDENTIAL: &str = "xero-auth-passphrase";
/// The longest passphrase file read.
const MAX_PASSPHRASE_FILE: usize = 4096;

/// The largest file the store reads: a token set is a few kilobytes.
const MAX_FILE_LEN: u64 = 1 << 20;

/// Where a passphrase comes from. `new_store` is true when the store has no file yet, so a
/// prompt asks twice.
pub type PassphraseSource = Box<dyn Fn(bool) -> Result<SecretString, StoreFailure> + Send + Sync>;

/// Secrets in age files under one folder.
pub struct FileStore {
    root: PathBuf,
    work_factor: u8,
    source: PassphraseSource,
    passphrase: Mutex<Option<SecretString>>,
    opened: Mutex<HashMap<PathBuf, Opened>>,
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
    let mut files = Vec::new();
    let Ok(profiles) = std::fs::read_dir(root) else {
        return files;
    };
    for profile in profiles.flatten() {
        let Ok(entries) = std::fs::read_dir(profile.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".age") && !name.starts_with('.') && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
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
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// The folder the store keeps its files in.
    pub fn root(&self) -> &Path {
        &self.root
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

    /// Whether the store holds no file yet.
    pub fn is_empty(&self) -> bool {
        store_files(&self.root).is_empty()
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
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OpenError::Other(io_failure("cannot open", path, &e))),
        };
        let meta = file
            .metadata()
            .map_err(|e| OpenError::Other(io_failure("cannot read", path, &e)))?;
        if !meta.is_file() {
            return Err(OpenError::Damaged("it is not a file".into()));
        }
        let id = FileId::of(&meta);
        if let Some((known, plain)) = self
            .opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            && *known == id
        {
            return Ok(Some(plain.clone()));
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
        let passphrase = self.passphrase().map_err(OpenError::Other)?;
        let plain = decrypt(&sealed, passphrase)?;
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), (id, plain.clone()));
        Ok(Some(plain))
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
        let Some(why) = self.vouch_for_passphrase(path)? else {
            return Ok(());
        };
        let aside = path.with_extension(format!("age.damaged-{}", unix_now()));
        tracing::warn!(
            "{} is damaged ({why}); moved to {} and replaced",
            path.display(),
            aside.display()
        );
        std::fs::rename(path, &aside).map_err(|e| io_failure("cannot move", path, &e))
    }

    fn encrypt(&self, secret: &[u8]) -> Result<Vec<u8>, StoreFailure> {
        let mut recipient = age::scrypt::Recipient::new(self.passphrase()?);
        recipient.set_work_factor(self.work_factor);
        let failed = |e: &dyn std::fmt::Display| StoreFailure {
            cause: format!("encrypting failed ({e})"),
            fix: "run the command again; if it keeps failing, report it".into(),
        };
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| failed(&e))?;
        // The ciphertext is not secret; age's own buffer for the plaintext chunk is freed
        // through the wiping allocator.
        let mut sealed = Vec::with_capacity(secret.len() + 256);
        let mut writer = encryptor.wrap_output(&mut sealed).map_err(|e| failed(&e))?;
        writer.write_all(secret).map_err(|e| failed(&e))?;
        writer.finish().map_err(|e| failed(&e))?;
        Ok(sealed)
    }

    /// Creates the store's folders `0700` (and tightens them if someone loosened them; refuses
    /// them when another user owns them or can write them).
    fn prepare_folders(&self, dir: &Path) -> Result<(), StoreFailure> {
        crate::config::create_private_dir(dir)
            .and_then(|()| crate::config::secure_private_dir(&self.root))
            .map_err(|e| StoreFailure {
                cause: e.to_string(),
                fix: "make the data folder yours and writable, or point XERO_AUTH_DATA_DIR at \
                      one that is"
                    .into(),
            })
    }

    /// Writes `sealed` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
    fn replace(&self, path: &Path, sealed: &[u8]) -> Result<(), StoreFailure> {
        let dir = path.parent().expect("store files live in a profile folder");
        let name = path
            .file_name()
            .expect("store files have a name")
            .to_string_lossy()
            .into_owned();
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
        format!("encrypted files in {}", self.root.display())
    }

    fn interactive(&self) -> bool {
        true
    }

    fn prepare(&self, write: bool, account: &str) -> Result<(), StoreFailure> {
        let path = self.path_of(account)?;
        if write {
            // Checked now, not at the write: a wrong passphrase is found before a login
            // exchanges its code. (The decryption is kept, so the write costs no more.)
            self.passphrase()?;
            self.vouch_for_passphrase(&path)?;
        } else if path.exists() {
            self.passphrase()?;
        }
        Ok(())
    }

    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreFailure> {
        let path = self.path_of(account)?;
        self.open(&path).map_err(|e| e.into_failure(&path))
    }

    fn set(&self, account: &str, _label: &str, secret: &[u8]) -> Result<(), StoreFailure> {
        let path = self.path_of(account)?;
        let dir = path.parent().expect("store files live in a profile folder");
        self.prepare_folders(dir)?;
        self.check_passphrase_before_writing(&path)?;
        let sealed = self.encrypt(secret)?;
        self.replace(&path, &sealed)?;
        // What this process wrote is what it would read back: keep it, keyed by the new file.
        if let Ok(meta) = std::fs::metadata(&path) {
            self.opened
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path, (FileId::of(&meta), Zeroizing::new(secret.to_vec())));
        }
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

    fn forget_cached(&self) {
        // The wiping buffers are dropped, so their plaintext goes with them.
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Decrypts an age passphrase file into a wiping buffer allocated once.
fn decrypt(sealed: &[u8], passphrase: SecretString) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let damaged = |e: &dyn std::fmt::Display| OpenError::Damaged(e.to_string());
    let decryptor = age::Decryptor::new_buffered(sealed).map_err(|e| damaged(&e))?;
    if !decryptor.is_scrypt() {
        return Err(OpenError::Damaged(
            "it is an age file, but not one encrypted to a passphrase".into(),
        ));
    }
    let mut identity = age::scrypt::Identity::new(passphrase);
    identity.set_max_work_factor(FILE_WORK_FACTORS.1);
    let mut reader = match decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)) {
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
    #[cfg(unix)]
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
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

/// What `xero-auth doctor` reports about the store in `root`: its files and their permissions,
/// where the passphrase would come from, and — when `XERO_AUTH_PASSPHRASE` gives it — whether it
/// opens the store. Never prompts, never writes.
pub fn check(root: &Path) -> Result<String, StoreFailure> {
    let files = store_files(root);
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
    let Some((passphrase, source)) = given_passphrase()? else {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            return Ok(format!(
                "{count}; the passphrase is asked for on the terminal"
            ));
        }
        return Err(StoreFailure {
            cause: format!(
                "{count}; no {PASSPHRASE_ENV}, no {PASSPHRASE_FILE_ENV}, no systemd credential \
                 and no terminal to ask for the passphrase on"
            ),
            fix: format!(
                "set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV} for the commands that use the \
                 file store (from a secret manager or the CI's secret variables), or give a \
                 systemd unit LoadCredential={PASSPHRASE_CREDENTIAL}:FILE"
            ),
        });
    };
    let Some(first) = files.first() else {
        return Ok(format!(
            "{count}; the passphrase in {source} becomes the store's at the first write"
        ));
    };
    let with = FileStore::new(
        root.to_path_buf(),
        FILE_WORK_FACTORS.0,
        Box::new(move |_| Ok(passphrase.clone())),
    );
    with.open(first)
        .map(|_| format!("{count}; the passphrase in {source} opens them"))
        .map_err(|e| e.into_failure(first))
}

/// The passphrase `XERO_AUTH_PASSPHRASE` held at start-up, taken by [`take_passphrase_from_env`].
static TAKEN: Mutex<Option<SecretString>> = Mutex::new(None);

/// For the command-line tool, first thing in `main`: moves `XERO_AUTH_PASSPHRASE` out of the
/// environment into memory that is wiped, wipes the variable's bytes in the environment block
/// and removes the variable, so no child process (`exec`'s command, the browser `login` opens)
/// inherits it.
///
/// # Safety
/// Changes the process environment: call it before any other thread exists.
pub unsafe fn take_passphrase_from_env() {
    let Some(value) = std::env::var_os(PASSPHRASE_ENV) else {
        return;
    };
    let value = Zeroizing::new(value.into_string().unwrap_or_default());
    if !value.is_empty() {
        *TAKEN.lock().unwrap_or_else(|p| p.into_inner()) = Some(SecretString::from(value.as_str()));
    }
    crate::hardening::wipe_env_value(PASSPHRASE_ENV);
    // SAFETY: the caller guarantees no other thread reads or writes the environment.
    unsafe { std::env::remove_var(PASSPHRASE_ENV) };
}

/// Wipes the passphrase [`take_passphrase_from_env`] took: a static is never dropped, so the
/// tool calls this before it exits.
pub fn forget_passphrase() {
    TAKEN.lock().unwrap_or_else(|p| p.into_inner()).take();
}

/// Where the tool gets the passphrase: what [`take_passphrase_from_env`] took, else
/// `XERO_AUTH_PASSPHRASE` (a program linking the library), else a no-echo prompt when stderr is
/// a terminal (asked twice for a new store), else an error that says what to set.
pub fn env_or_terminal(root: PathBuf) -> PassphraseSource {
    Box::new(move |new_store| {
        if let Some((given, _)) = given_passphrase()? {
            return Ok(given);
        }
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Err(StoreFailure {
                cause: format!(
                    "the file store ({}) needs its passphrase, and there is no terminal to ask on",
                    root.display()
                ),
                fix: format!(
                    "set {PASSPHRASE_ENV} in the environment (from a secret manager or the CI's \
                     secret variables, never on a command line), or {PASSPHRASE_FILE_ENV} to a \
                     file only you can read, or give a systemd unit \
                     LoadCredential={PASSPHRASE_CREDENTIAL}:FILE; or run the command in a terminal"
                ),
            });
        }
        prompt(&root, new_store)
    })
}

/// The passphrase given without asking anyone, and where it came from (for messages): what
/// [`take_passphrase_from_env`] took, else `XERO_AUTH_PASSPHRASE` (a program linking the
/// library), else the file `XERO_AUTH_PASSPHRASE_FILE` names, else systemd's credential
/// `xero-auth-passphrase`.
fn given_passphrase() -> Result<Option<(SecretString, String)>, StoreFailure> {
    if let Some(taken) = TAKEN.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return Ok(Some((taken.clone(), PASSPHRASE_ENV.into())));
    }
    if let Some(value) = std::env::var_os(PASSPHRASE_ENV).filter(|v| !v.is_empty()) {
        let value = Zeroizing::new(value.into_string().map_err(|_| StoreFailure {
            cause: format!("{PASSPHRASE_ENV} is not valid UTF-8"),
            fix: "give the passphrase as UTF-8 text".into(),
        })?);
        return Ok(Some((
            SecretString::from(value.as_str()),
            PASSPHRASE_ENV.into(),
        )));
    }
    if let Some(path) = std::env::var_os(PASSPHRASE_FILE_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        let passphrase = passphrase_from_file(&path, PASSPHRASE_FILE_ENV)?;
        return Ok(Some((
            passphrase,
            format!("{PASSPHRASE_FILE_ENV} ({})", path.display()),
        )));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|v| !v.is_empty()) {
        let path = Path::new(&dir).join(PASSPHRASE_CREDENTIAL);
        if path.exists() {
            let passphrase = passphrase_from_file(&path, "the systemd credential")?;
            return Ok(Some((
                passphrase,
                format!("the systemd credential {PASSPHRASE_CREDENTIAL}"),
            )));
        }
    }
    Ok(None)
}

/// The first line of `path` (without its line ending), read into wiping memory. Refused when
/// the file is not a regular file of the user's or others may read it (the passphrase would be
/// theirs too), when it is empty, too long or not UTF-8; `what` names where the path came from.
fn passphrase_from_file(path: &Path, what: &str) -> Result<SecretString, StoreFailure> {
    let refuse = |cause: String, fix: &str| StoreFailure {
        cause: format!("{what}: {} {cause}", path.display()),
        fix: fix.into(),
    };
    let meta = std::fs::metadata(path).map_err(|e| {
        refuse(
            format!("cannot be read ({e})"),
            "give the path of a file that holds the passphrase",
        )
    })?;
    if !meta.is_file() {
        return Err(refuse(
            "is not a file".into(),
            "give the path of a file that holds the passphrase",
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.mode() & 0o077 != 0 {
            return Err(refuse(
                format!(
                    "can be read by other users (mode {:04o}); it was not used",
                    meta.mode() & 0o7777
                ),
                &format!("`chmod 600 {}` (or 400)", path.display()),
            ));
        }
    }
    let mut file = std::fs::File::open(path).map_err(|e| {
        refuse(
            format!("cannot be read ({e})"),
            "give the path of a file that holds the passphrase",
        )
    })?;
    let bytes = crate::secret::read_bounded(&mut file, MAX_PASSPHRASE_FILE)
        .map_err(|e| refuse(format!("cannot be read ({e})"), "check the file"))?
        .ok_or_else(|| {
            refuse(
                format!("is longer than {MAX_PASSPHRASE_FILE} bytes"),
                "put the passphrase alone on the file's first line",
            )
        })?;
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let text = std::str::from_utf8(first).map_err(|_| {
        refuse(
            "is not UTF-8 text".into(),
            "give the passphrase as UTF-8 text",
        )
    })?;
    if text.is_empty() {
        return Err(refuse(
            "has no passphrase on its first line".into(),
            "put the passphrase alone on the file's first line",
        ));
    }
    Ok(SecretString::from(text))
}

fn prompt(root: &Path, new_store: bool) -> Result<SecretString, StoreFailure> {
    let read = |text: &str| {
        rpassword::prompt_password(text)
            .map(Zeroizing::new)
            .map_err(|e| StoreFailure {
                cause: format!("cannot read the passphrase from the terminal ({e})"),
                fix: format!("set {PASSPHRASE_ENV} instead"),
            })
    };
    if !new_store {
        let typed = read(&format!(
            "Passphrase of the xero-auth file store ({}): ",
            root.display()
        ))?;
        return Ok(SecretString::from(typed.as_str()));
    }
    let first = read(&format!(
        "New passphrase for the xero-auth file store ({}): ",
        root.display()
    ))?;
    let again = read("The same passphrase again: ")?;
    if *first != *again {
        return Err(StoreFailure::mistyped(
            "the two passphrases differ; nothing was written: run the command again and type \
             the same new passphrase twice",
        ));
    }
    Ok(SecretString::from(first.as_str()))
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
            sealed.starts_with(b"age-encryption.org/v1\n-> scrypt "),
            "an age scrypt file"
        );
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

    #[test]
    fn with_every_file_damaged_no_passphrase_is_taken_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        store_in(dir.path(), "pw")
            .set("work/token-set", "l", b"old")
            .unwrap();
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
