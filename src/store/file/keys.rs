//! The file store's key hierarchy: one age X25519 identity per store, kept encrypted with the
//! passphrase beside its public recipient; every file sealed to that recipient (or, in a store
//! written before the key existed, to the passphrase itself); unlocking, creating and
//! re-encrypting the key, and the upgrade of an older store's files.

use super::*;

impl FileStore {
    /// Decrypts `sealed` with the passphrase; when it is wrong and was typed on the terminal,
    /// says so and asks again (up to [`TYPED_TRIES`] in all).
    pub(super) fn decrypt_with_passphrase(
        &self,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
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

    pub(super) fn identity_path(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    pub(super) fn recipient_path(&self) -> PathBuf {
        self.root.join(RECIPIENT_FILE)
    }

    /// The recipient the store's files are encrypted to, as its file says.
    pub(super) fn stored_recipient(&self) -> Option<String> {
        let bytes =
            private_fs::read_file(&self.recipient_path(), FileKind::Own, 256, "").ok()??;
        Some(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    /// The store's key: this process's copy, else the kernel's (checked against the store's
    /// recipient), else the key file decrypted with the passphrase (one scrypt run), then kept.
    /// `None` for a store written before it had a key.
    pub(super) fn unlocked_identity(&self) -> Result<Option<age::x25519::Identity>, StoreFailure> {
        self.unlock_identity(true, false)
    }

    /// [`FileStore::unlocked_identity`], with or without the kernel's copy; `writing` makes a
    /// wrong passphrase's message say that nothing was written.
    pub(super) fn unlock_identity(
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
    pub(super) fn create_identity(&self) -> Result<age::x25519::Identity, StoreFailure> {
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
    pub(super) fn holds_passphrase(&self) -> bool {
        self.passphrase
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Keeps the unlocked `identity` in the kernel, where the store keeps it at all. Best effort:
    /// a key that cannot be kept only means the next command unlocks the store again.
    pub(super) fn keep_in_kernel(&self, identity: &age::x25519::Identity) {
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
    pub(super) fn give_key_if_missing(&self) -> Result<(), StoreFailure> {
        if !self.identity_path().exists() {
            self.vouch_for_passphrase(&self.identity_path())?;
            self.create_identity()?;
        }
        Ok(())
    }

    /// The store's own lock (`SECRETS/.store.lock`), held while its key files change.
    pub(super) fn lock_store(&self) -> Result<std::fs::File, StoreFailure> {
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
    pub(super) fn key_for_writing(
        &self,
        path: &Path,
    ) -> Result<age::x25519::Recipient, StoreFailure> {
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
    pub(super) fn upgrade_folder(
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

    /// Checks that the passphrase opens the store before `path` is written: one passphrase for
    /// the whole store, so some file of it must vouch for the passphrase — the file about to be
    /// replaced, else any other. A store with no file yet takes the passphrase given now. When
    /// files exist but none can vouch (every one damaged), nothing is written: a new file
    /// under an unchecked passphrase would split the store between two passphrases. Returns
    /// why `path` itself is damaged, when it is (it can be replaced, now that another file has
    /// vouched).
    pub(super) fn vouch_for_passphrase(&self, path: &Path) -> Result<Option<String>, StoreFailure> {
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
    pub(super) fn check_passphrase_before_writing(&self, path: &Path) -> Result<(), StoreFailure> {
        match self.vouch_for_passphrase(path)? {
            Some(why) => self.set_aside(path, &why),
            None => Ok(()),
        }
    }

    /// `secret` encrypted to the passphrase at the store's work factor: the key file.
    pub(super) fn encrypt_to_passphrase(&self, secret: &[u8]) -> Result<Vec<u8>, StoreFailure> {
        let mut recipient = age::scrypt::Recipient::new(self.passphrase()?);
        recipient.set_work_factor(self.work_factor);
        seal(secret, &recipient)
    }
}

/// How a file of the store is encrypted: its age header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sealed {
    /// To the passphrase (scrypt): a file written before the store had a key.
    Passphrase,
    /// To the store's key.
    Key,
}

impl Sealed {
    pub(super) fn of(sealed: &[u8]) -> Result<Self, OpenError> {
        let decryptor =
            age::Decryptor::new_buffered(sealed).map_err(|e| OpenError::Damaged(e.to_string()))?;
        Ok(if decryptor.is_scrypt() {
            Sealed::Passphrase
        } else {
            Sealed::Key
        })
    }
}

/// What opens a file of the store.
pub(super) enum Key<'a> {
    /// The passphrase (scrypt): the key file, and files written before the store had a key.
    Passphrase(SecretString),
    /// The store's key.
    Identity(&'a age::x25519::Identity),
}

/// Decrypts an age file into a wiping buffer allocated once. A key that does not open it is
/// [`OpenError::WrongPassphrase`].
pub(super) fn decrypt(sealed: &[u8], key: Key<'_>) -> Result<Zeroizing<Vec<u8>>, OpenError> {
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
pub(super) fn encrypt(
    secret: &[u8],
    recipient: &age::x25519::Recipient,
) -> Result<Vec<u8>, StoreFailure> {
    seal(secret, recipient)
}

/// `secret` as an age file to `recipient`.
pub(super) fn seal(secret: &[u8], recipient: &dyn age::Recipient) -> Result<Vec<u8>, StoreFailure> {
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
pub(super) fn parse_identity(plain: &[u8]) -> Option<age::x25519::Identity> {
    let text = std::str::from_utf8(plain).ok()?;
    text.trim().parse().ok()
}
