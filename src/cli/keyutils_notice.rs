//! The warning a command prints when it writes to Linux kernel keyutils: that store forgets.
//!
//! keyutils is only used when a profile names it (`store = "keyutils"` or
//! `XERO_AUTH_STORE=keyutils`), but naming it once in a config file is easy to forget, and what it
//! costs shows only after a reboot, when the tokens are gone and someone has to log in again. So
//! every command that writes a secret there says so on stderr, once per process.

use std::sync::{Arc, Once};

use crate::config::{Paths, Profile, StoreKind};
use crate::secret::Zeroizing;
use crate::store::{Keychain, SecretStore, Store, StoreFailure};

/// Where the kernel keeps the idle lifetime of the persistent keyring, in seconds.
const PERSISTENT_KEYRING_EXPIRY: &str = "/proc/sys/kernel/keys/persistent_keyring_expiry";

/// The store the command-line tool uses for `profile`: its store, wrapped in [`WarnOnWrite`]
/// when that is kernel keyutils (and, in test builds only, in the per-entry limit of
/// [`crate::store::split::limit_for_tests`]).
pub fn profile_store(profile: &Profile, paths: &Paths) -> Store {
    crate::store::split::limit_for_tests(unlimited_store(profile, paths))
}

fn unlimited_store(profile: &Profile, paths: &Paths) -> Store {
    if profile.store != StoreKind::Keyutils {
        return Store::for_profile(profile, paths);
    }
    let notice = keyutils_warning(&profile.name, persistent_keyring_expiry());
    let store = WarnOnWrite::new(
        Arc::new(Keychain::new(profile.store)),
        notice,
        Box::new(|line| eprintln!("{line}")),
    );
    Store::new(Arc::new(store), profile.store_timeout)
}

/// The idle lifetime of the kernel's persistent keyring, when the kernel says it.
pub fn persistent_keyring_expiry() -> Option<u64> {
    std::fs::read_to_string(PERSISTENT_KEYRING_EXPIRY)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The one-line warning for a write of `profile`'s secrets to keyutils.
pub fn keyutils_warning(profile: &str, persistent_expiry_secs: Option<u64>) -> String {
    let idle = match persistent_expiry_secs {
        Some(secs) => format!(
            " (and {} after xero-auth last ran, once no login session holds them)",
            super::format_span(secs as i64)
        ),
        None => String::new(),
    };
    format!(
        "warning: profile '{profile}' keeps its secrets in Linux kernel keyutils: kept in kernel \
         memory, forgotten at reboot{idle}; log in again after a reboot, or use \
         store = \"secret-service\" to keep them on disk, encrypted"
    )
}

/// A store that says, once, what happens to what is written to it. Reads and deletes pass
/// through silently; the notice follows the first successful write.
pub struct WarnOnWrite {
    inner: Arc<dyn SecretStore>,
    notice: String,
    show: Box<dyn Fn(&str) + Send + Sync>,
    shown: Once,
}

impl WarnOnWrite {
    /// Wraps `inner`; `show` prints `notice` (stderr in the tool, a buffer in tests).
    pub fn new(
        inner: Arc<dyn SecretStore>,
        notice: String,
        show: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Self {
        WarnOnWrite {
            inner,
            notice,
            show,
            shown: Once::new(),
        }
    }
}

impl SecretStore for WarnOnWrite {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreFailure> {
        self.inner.get(account)
    }

    fn set(&self, account: &str, label: &str, secret: &[u8]) -> Result<(), StoreFailure> {
        self.inner.set(account, label, secret)?;
        self.shown.call_once(|| (self.show)(&self.notice));
        Ok(())
    }

    fn delete(&self, account: &str) -> Result<bool, StoreFailure> {
        self.inner.delete(account)
    }

    fn contains(&self, account: &str) -> Result<bool, StoreFailure> {
        self.inner.contains(account)
    }

    fn interactive(&self) -> bool {
        self.inner.interactive()
    }

    fn prepare(&self, write: bool, account: &str) -> Result<(), StoreFailure> {
        self.inner.prepare(write, account)
    }

    fn max_secret_len(&self) -> Option<usize> {
        self.inner.max_secret_len()
    }

    fn forget_cached(&self) {
        self.inner.forget_cached();
    }

    fn shared_entries(&self, profile: &str) -> Option<String> {
        self.inner.shared_entries(profile)
    }

    fn try_lease(
        &self,
        profile: &str,
        ttl: std::time::Duration,
    ) -> std::result::Result<crate::store::LeaseAttempt, crate::store::StoreFailure> {
        self.inner.try_lease(profile, ttl)
    }

    fn update_lease(
        &self,
        lease: crate::store::LeaseGuard,
        release: bool,
    ) -> std::result::Result<Option<crate::store::LeaseGuard>, crate::store::StoreFailure> {
        self.inner.update_lease(lease, release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::sync::Mutex;

    fn wrapped() -> (WarnOnWrite, Arc<MemoryStore>, Arc<Mutex<Vec<String>>>) {
        let memory = Arc::new(MemoryStore::default());
        let shown = Arc::new(Mutex::new(Vec::new()));
        let sink = shown.clone();
        let store = WarnOnWrite::new(
            memory.clone(),
            keyutils_warning("work", Some(259_200)),
            Box::new(move |line| sink.lock().unwrap().push(line.to_string())),
        );
        (store, memory, shown)
    }

    #[test]
    fn a_write_is_followed_by_one_warning_and_reads_by_none() {
        let (store, memory, shown) = wrapped();
        assert!(store.get("work/token-set").unwrap().is_none());
        assert!(shown.lock().unwrap().is_empty(), "a read warns nobody");

        store.set("work/token-set", "label", b"set").unwrap();
        store.set("work/client-secret", "label", b"secret").unwrap();

        let shown = shown.lock().unwrap();
        assert_eq!(shown.len(), 1, "once per process: {shown:?}");
        assert!(
            shown[0].contains("kept in kernel memory, forgotten at reboot")
                && shown[0].contains("profile 'work'")
                && shown[0].contains("3 days after"),
            "{}",
            shown[0]
        );
        assert_eq!(memory.raw("work/token-set").unwrap(), b"set");
    }

    #[test]
    fn a_failed_write_warns_nobody() {
        let (store, memory, shown) = wrapped();
        memory.fail_writes(true);
        assert!(store.set("work/token-set", "label", b"set").is_err());
        assert!(shown.lock().unwrap().is_empty());
    }
}
