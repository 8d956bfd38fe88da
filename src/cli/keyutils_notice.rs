//! The warning a command prints when it writes to Linux kernel keyutils: that store forgets.
//!
//! keyutils is only used when a profile names it (`store = "keyutils"` or
//! `XERO_AUTH_STORE=keyutils`), but naming it once in a config file is easy to forget, and what it
//! costs shows only after a reboot, when the tokens are gone and someone has to log in again. So
//! every command that writes a secret there says so on stderr, once per process.

use crate::config::{Paths, Profile, StoreKind};
#[cfg(test)]
use crate::secret::Zeroizing;
use crate::store::Store;

/// Where the kernel keeps the idle lifetime of the persistent keyring, in seconds.
const PERSISTENT_KEYRING_EXPIRY: &str = "/proc/sys/kernel/keys/persistent_keyring_expiry";

/// The store the command-line tool uses for `profile`: its store, saying once after its first
/// write that it forgets when that is kernel keyutils (and, in test builds only, with the
/// per-entry limit of [`crate::store::split::limit_for_tests`]).
pub fn profile_store(profile: &Profile, paths: &Paths) -> Store {
    crate::store::split::limit_for_tests(unlimited_store(profile, paths))
}

fn unlimited_store(profile: &Profile, paths: &Paths) -> Store {
    let store = Store::for_profile(profile, paths);
    if profile.store != StoreKind::Keyutils {
        return store;
    }
    let notice = keyutils_warning(&profile.name, persistent_keyring_expiry());
    warn_on_write(store, notice, |line| eprintln!("{line}"))
}

/// `store`, with `notice` shown (stderr in the tool, a buffer in tests) once, after the first
/// write that succeeds. Reads and deletes pass through silently.
pub fn warn_on_write(
    store: Store,
    notice: String,
    show: impl Fn(&str) + Send + Sync + 'static,
) -> Store {
    store.after_first_write(move || show(&notice))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn wrapped(memory: Arc<MemoryStore>) -> (Store, Arc<Mutex<Vec<String>>>) {
        let shown = Arc::new(Mutex::new(Vec::new()));
        let sink = shown.clone();
        let store = warn_on_write(
            Store::new(memory, Duration::from_secs(5)),
            keyutils_warning("work", Some(259_200)),
            move |line| sink.lock().unwrap().push(line.to_string()),
        );
        (store, shown)
    }

    fn secret(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(bytes.to_vec())
    }

    #[tokio::test]
    async fn a_write_is_followed_by_one_warning_and_reads_by_none() {
        let memory = Arc::new(MemoryStore::default());
        let (store, shown) = wrapped(memory.clone());
        assert!(store.get("work/token-set").await.unwrap().is_none());
        assert!(shown.lock().unwrap().is_empty(), "a read warns nobody");

        store
            .set("work/token-set", "label", secret(b"set"))
            .await
            .unwrap();
        store
            .clone()
            .set("work/client-secret", "label", secret(b"secret"))
            .await
            .unwrap();

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

    #[tokio::test]
    async fn a_failed_write_warns_nobody() {
        let memory = Arc::new(MemoryStore::default());
        let (store, shown) = wrapped(memory.clone());
        memory.fail_writes(true);
        assert!(
            store
                .set("work/token-set", "label", secret(b"set"))
                .await
                .is_err()
        );
        assert!(shown.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_conditional_write_warns_too() {
        let (store, shown) = wrapped(Arc::new(MemoryStore::with_leases()));
        store
            .set_unless_changed("work/token-set", "label", secret(b"set"))
            .await
            .unwrap();
        assert_eq!(shown.lock().unwrap().len(), 1);
    }
}
