//! An in-memory store for unit tests only: never compiled into the tool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{SecretStore, StoreFailure};
use crate::secret::Zeroizing;

/// Lets held writes go when dropped (see [`MemoryStore::hold_writes`]).
#[must_use]
pub struct HeldWrites(Arc<MemoryStore>);

impl Drop for HeldWrites {
    fn drop(&mut self) {
        let (held, changed) = &self.0.writes_held;
        *held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        changed.notify_all();
    }
}

/// Secrets in a map, with switches that make writes fail, and an optional per-entry size limit
/// enforced the way Windows Credential Manager enforces its own.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
    fail_writes: Mutex<bool>,
    fail_calls_to: Mutex<Option<String>>,
    calls: std::sync::atomic::AtomicUsize,
    limit: Option<usize>,
    /// Every write attempted: (account, length in bytes), refused ones included.
    writes: Mutex<Vec<(String, usize)>>,
    /// While true, a write (once recorded in `writes`) waits until it is false again: a keychain
    /// stuck on an unlock prompt.
    writes_held: (Mutex<bool>, std::sync::Condvar),
    /// With `Some`, the store has leases (as a store machines share does): how many are held.
    leases: Option<Arc<std::sync::atomic::AtomicUsize>>,
    /// Calls answered while a lease was held.
    calls_under_lease: std::sync::atomic::AtomicUsize,
}

impl MemoryStore {
    /// A store that refuses secrets longer than `limit` bytes and reports the limit.
    pub fn with_limit(limit: usize) -> Self {
        MemoryStore {
            limit: Some(limit),
            ..MemoryStore::default()
        }
    }

    /// A store with leases, as a store machines share has: see [`MemoryStore::leases_held`].
    pub fn with_leases() -> Self {
        MemoryStore {
            leases: Some(Arc::default()),
            ..MemoryStore::default()
        }
    }

    /// How many leases are held now.
    pub fn leases_held(&self) -> usize {
        self.leases
            .as_ref()
            .map_or(0, |l| l.load(std::sync::atomic::Ordering::SeqCst))
    }

    pub fn fail_writes(&self, fail: bool) {
        *self.fail_writes.lock().unwrap() = fail;
    }

    /// Holds every write from now on until the returned guard is dropped. (A guard, so that a
    /// test failing while a write is held ends instead of waiting for it for ever: its runtime
    /// waits for the blocking thread.)
    pub fn hold_writes(self: &Arc<Self>) -> HeldWrites {
        *self.writes_held.0.lock().unwrap() = true;
        HeldWrites(self.clone())
    }

    /// Makes every call on `account` (only) fail as an unavailable store does, or none with `None`.
    pub fn fail_calls_to(&self, account: Option<&str>) {
        *self.fail_calls_to.lock().unwrap() = account.map(String::from);
    }

    /// How many calls (get, set, delete) the store has answered or refused.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many calls (get, set, delete) were made while a lease was held.
    pub fn calls_under_lease(&self) -> usize {
        self.calls_under_lease
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn call(&self, account: &str) -> Result<(), StoreFailure> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.leases_held() > 0 {
            self.calls_under_lease
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if self.fail_calls_to.lock().unwrap().as_deref() == Some(account) {
            return Err(StoreFailure {
                cause: format!("calls on {account} switched off"),
                fix: "switch them on".into(),
            });
        }
        Ok(())
    }

    pub fn raw(&self, account: &str) -> Option<Vec<u8>> {
        self.entries
            .lock()
            .unwrap()
            .get(account)
            .map(|v| v.to_vec())
    }

    /// The accounts that hold a secret, sorted.
    pub fn accounts(&self) -> Vec<String> {
        let mut accounts: Vec<String> = self.entries.lock().unwrap().keys().cloned().collect();
        accounts.sort();
        accounts
    }

    /// Every write attempted so far: (account, length in bytes).
    pub fn writes(&self) -> Vec<(String, usize)> {
        self.writes.lock().unwrap().clone()
    }
}

impl SecretStore for MemoryStore {
    fn describe(&self) -> String {
        "memory (tests)".into()
    }

    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreFailure> {
        self.call(account)?;
        Ok(self.entries.lock().unwrap().get(account).cloned())
    }

    fn set(&self, account: &str, _label: &str, secret: &[u8]) -> Result<(), StoreFailure> {
        self.writes
            .lock()
            .unwrap()
            .push((account.to_string(), secret.len()));
        let (held, changed) = &self.writes_held;
        drop(
            changed
                .wait_while(held.lock().unwrap(), |held| *held)
                .unwrap(),
        );
        self.call(account)?;
        if *self.fail_writes.lock().unwrap() {
            return Err(StoreFailure {
                cause: "writes switched off".into(),
                fix: "switch them on".into(),
            });
        }
        super::split::refuse_over_limit(secret.len(), self.limit)?;
        self.entries
            .lock()
            .unwrap()
            .insert(account.to_string(), Zeroizing::new(secret.to_vec()));
        Ok(())
    }

    fn delete(&self, account: &str) -> Result<bool, StoreFailure> {
        self.call(account)?;
        Ok(self.entries.lock().unwrap().remove(account).is_some())
    }

    fn max_secret_len(&self) -> Option<usize> {
        self.limit
    }

    fn shared(&self) -> Option<&dyn super::SharedStore> {
        self.leases
            .is_some()
            .then_some(self as &dyn super::SharedStore)
    }
}

/// With leases ([`MemoryStore::with_leases`]), a store whose leases are taken as a shared
/// store's are; its entries stay this process's own.
impl super::SharedStore for MemoryStore {
    fn set_unless_changed(
        &self,
        account: &str,
        label: &str,
        secret: &[u8],
    ) -> Result<super::Written, StoreFailure> {
        self.set(account, label, secret)
            .map(|()| super::Written::Stored)
    }

    fn shared_entries(&self, _profile: &str) -> Option<String> {
        None
    }

    fn try_lease(
        &self,
        profile: &str,
        ttl: std::time::Duration,
    ) -> Result<super::LeaseAttempt, StoreFailure> {
        let Some(count) = &self.leases else {
            return Ok(super::LeaseAttempt::NotShared);
        };
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(super::LeaseAttempt::Taken(super::LeaseGuard {
            profile: profile.to_string(),
            holder: "memory".into(),
            version: 0,
            ttl,
            unsaved_refresh_sent_at: None,
        }))
    }

    fn update_lease(
        &self,
        lease: super::LeaseGuard,
        release: bool,
    ) -> Result<Option<super::LeaseGuard>, StoreFailure> {
        if release && let Some(count) = &self.leases {
            count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(Some(lease))
    }
}
