//! The platform keychains, through the keyring-rs project's store crates (`keyring-core`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keyring_core::{CredentialStore, Entry, Error as KeyringError};
use zeroize::Zeroize;

use super::{SERVICE, SecretStore, StoreFailure};
use crate::config::StoreKind;
use crate::secret::Zeroizing;

/// The most bytes one Windows Credential Manager entry holds: `CRED_MAX_CREDENTIAL_BLOB_SIZE`
/// (5 × 512) in `wincred.h`. windows-native-keyring-store refuses a longer secret
/// (`Error::TooLong`) instead of writing it, so a token set is cut to fit (see
/// [`super::split`]).
pub const CREDENTIAL_MANAGER_MAX_SECRET_LEN: usize = 2560;

/// A platform keychain. Connects on first use (for the Secret Service: opens the D-Bus session
/// and the encrypted transfer session) and reuses the connection for later calls.
pub struct Keychain {
    kind: StoreKind,
    opened: Mutex<Option<Arc<CredentialStore>>>,
}

impl Keychain {
    /// A keychain of `kind`; nothing is contacted yet.
    pub fn new(kind: StoreKind) -> Self {
        Keychain {
            kind,
            opened: Mutex::new(None),
        }
    }

    fn open(&self) -> Result<Arc<CredentialStore>, StoreFailure> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = opened.as_ref() {
            return Ok(store.clone());
        }
        let store = open_platform_store(self.kind).map_err(|e| self.failure(e))?;
        *opened = Some(store.clone());
        Ok(store)
    }

    fn entry(&self, account: &str, label: Option<&str>) -> Result<Entry, StoreFailure> {
        let store = self.open()?;
        let result = match (self.kind, label) {
            // The Secret Service shows a label in Seahorse / KeePassXC: make it say what it is.
            (StoreKind::SecretService, Some(label)) => {
                let mods = HashMap::from([("label", label)]);
                Entry::new_in_store_with_modifiers(&store, SERVICE, account, &mods)
            }
            _ => Entry::new_in_store(&store, SERVICE, account),
        };
        result.map_err(|e| self.failure(e))
    }

    /// Turns a keyring error into a message with a fix. Variants that carry the stored bytes
    /// have them wiped here, so they go no further.
    fn failure(&self, err: KeyringError) -> StoreFailure {
        let cause = match err {
            KeyringError::BadEncoding(mut bytes) | KeyringError::BadDataFormat(mut bytes, _) => {
                bytes.zeroize();
                return StoreFailure {
                    cause: "the keychain returned data in an unexpected format".into(),
                    fix: "remove the entry with the platform's keychain tool and store it again"
                        .into(),
                };
            }
            KeyringError::Ambiguous(entries) => {
                return StoreFailure {
                    cause: format!(
                        "{} keychain items match one entry of service '{SERVICE}'",
                        entries.len()
                    ),
                    fix: format!(
                        "remove the duplicates, e.g. `secret-tool search --all service {SERVICE}` \
                         then `secret-tool clear service {SERVICE} username ACCOUNT`"
                    ),
                };
            }
            KeyringError::NoStorageAccess(e) => {
                if let Some(diagnosed) = self.diagnosis() {
                    return diagnosed;
                }
                return StoreFailure {
                    cause: format!("the keychain is locked or refused access ({e})"),
                    fix: self.unlock_fix().into(),
                };
            }
            other => other.to_string(),
        };
        if let Some(diagnosed) = self.diagnosis() {
            return diagnosed;
        }
        StoreFailure {
            cause,
            fix: self.unavailable_fix().into(),
        }
    }

    /// For the Secret Service, what the session bus says went wrong (no bus, no service, no
    /// default keyring, a locked one), which the keyring crate's error does not tell apart;
    /// `None` when the bus finds nothing wrong, or for another store.
    fn diagnosis(&self) -> Option<StoreFailure> {
        #[cfg(target_os = "linux")]
        if self.kind == StoreKind::SecretService {
            let (bus, runtime_dir) = super::secret_service::bus_from_env();
            return super::secret_service::diagnose(bus.as_deref(), runtime_dir.as_deref()).err();
        }
        None
    }

    fn unlock_fix(&self) -> &'static str {
        match self.kind {
            StoreKind::SecretService => {
                "unlock the login keyring (log in to the desktop session, or on a headless machine \
                 `echo -n PASSWORD | gnome-keyring-daemon --replace --unlock --components=secrets`), \
                 then run the command again"
            }
            StoreKind::Keychain => {
                "unlock the login keychain (`security unlock-keychain`) and allow xero-auth access"
            }
            StoreKind::CredentialManager => {
                "log in to the Windows account that owns the credentials"
            }
            StoreKind::Keyutils => {
                "check that the session keyring belongs to this user (`keyctl show @s`)"
            }
            StoreKind::File | StoreKind::Vault => {
                "this store is not a keychain: see `xero-auth doctor`"
            }
        }
    }

    fn unavailable_fix(&self) -> &'static str {
        match self.kind {
            StoreKind::SecretService => {
                "no Secret Service answered on the session D-Bus. On a desktop, enable GNOME Keyring, \
                 KWallet or KeePassXC's Secret Service integration; on a headless machine or over SSH \
                 start one in a D-Bus session (see docs/headless-linux.md), or choose another store for \
                 this profile: store = \"file\" (files encrypted with a passphrase) or \
                 store = \"keyutils\" (kernel memory, forgotten at reboot). xero-auth never falls \
                 back to a plaintext file"
            }
            StoreKind::Keychain => "check the login keychain with Keychain Access",
            StoreKind::CredentialManager => "check Credential Manager (Control Panel)",
            StoreKind::Keyutils => {
                "the kernel key retention service is not usable here (containers may forbid it); \
                 use store = \"secret-service\", or store = \"file\" (encrypted files, see \
                 docs/headless-linux.md)"
            }
            StoreKind::File | StoreKind::Vault => {
                "this store is not a keychain: see `xero-auth doctor`"
            }
        }
    }
}

impl SecretStore for Keychain {
    fn describe(&self) -> String {
        match self.kind {
            StoreKind::SecretService => "Secret Service (D-Bus org.freedesktop.secrets)".into(),
            StoreKind::Keychain => "macOS Keychain".into(),
            StoreKind::CredentialManager => "Windows Credential Manager".into(),
            StoreKind::Keyutils => "Linux kernel keyutils (forgotten at reboot)".into(),
            StoreKind::File => "encrypted files (not a keychain)".into(),
            StoreKind::Vault => "OpenBao / Vault (not a keychain)".into(),
        }
    }

    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreFailure> {
        match self.entry(account, None)?.get_secret() {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(KeyringError::NoEntry) => Ok(None),
            Err(e) => Err(self.failure(e)),
        }
    }

    fn set(&self, account: &str, label: &str, secret: &[u8]) -> Result<(), StoreFailure> {
        self.entry(account, Some(label))?
            .set_secret(secret)
            .map_err(|e| self.failure(e))
    }

    fn delete(&self, account: &str) -> Result<bool, StoreFailure> {
        match self.entry(account, None)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(KeyringError::NoEntry) => Ok(false),
            Err(e) => Err(self.failure(e)),
        }
    }

    fn max_secret_len(&self) -> Option<usize> {
        // The Secret Service, the macOS Keychain and keyutils hold far more than a token set.
        (self.kind == StoreKind::CredentialManager).then_some(CREDENTIAL_MANAGER_MAX_SECRET_LEN)
    }

    fn contains(&self, account: &str) -> Result<bool, StoreFailure> {
        // Finds the item without asking for its secret (Secret Service: a search; keyutils: a
        // keyring search), so the value never crosses D-Bus or enters this process.
        match self.entry(account, None)?.get_credential() {
            Ok(_) => Ok(true),
            Err(KeyringError::NoEntry) => Ok(false),
            Err(e) => Err(self.failure(e)),
        }
    }
}

fn open_platform_store(kind: StoreKind) -> keyring_core::Result<Arc<CredentialStore>> {
    let not_here = || {
        Err(KeyringError::NotSupportedByStore(format!(
            "the store '{}' does not exist on this operating system",
            kind.name()
        )))
    };
    match kind {
        #[cfg(target_os = "linux")]
        StoreKind::SecretService => {
            Ok(zbus_secret_service_keyring_store::Store::new()? as Arc<CredentialStore>)
        }
        #[cfg(target_os = "linux")]
        StoreKind::Keyutils => {
            Ok(linux_keyutils_keyring_store::Store::new()? as Arc<CredentialStore>)
        }
        #[cfg(target_os = "macos")]
        StoreKind::Keychain => {
            Ok(apple_native_keyring_store::keychain::Store::new()? as Arc<CredentialStore>)
        }
        #[cfg(target_os = "windows")]
        StoreKind::CredentialManager => {
            Ok(windows_native_keyring_store::Store::new()? as Arc<CredentialStore>)
        }
        #[allow(unreachable_patterns)]
        _ => not_here(),
    }
}
