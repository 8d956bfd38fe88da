//! An in-memory store for unit tests only: never compiled into the tool.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{SecretStore, StoreFailure};
use crate::secret::Zeroizing;

/// Secrets in a map, with a switch that makes writes fail.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
    fail_writes: Mutex<bool>,
}

impl MemoryStore {
    pub fn fail_writes(&self, fail: bool) {
        *self.fail_writes.lock().unwrap() = fail;
    }

    pub fn raw(&self, account: &str) -> Option<Vec<u8>> {
        self.entries
            .lock()
            .unwrap()
            .get(account)
            .map(|v| v.to_vec())
    }
}

impl SecretStore for MemoryStore {
    fn describe(&self) -> String {
        "memory (tests)".into()
    }

    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreFailure> {
        Ok(self.entries.lock().unwrap().get(account).cloned())
    }

    fn set(&self, account: &str, _label: &str, secret: &[u8]) -> Result<(), StoreFailure> {
        if *self.fail_writes.lock().unwrap() {
            return Err(StoreFailure {
                cause: "writes switched off".into(),
                fix: "switch them on".into(),
            });
        }
        self.entries
            .lock()
            .unwrap()
            .insert(account.to_string(), Zeroizing::new(secret.to_vec()));
        Ok(())
    }

    fn delete(&self, account: &str) -> Result<bool, StoreFailure> {
        Ok(self.entries.lock().unwrap().remove(account).is_some())
    }
}
