//! The vault store (`store = "vault"`): a profile's secrets in a KV version 2 engine of OpenBao or
//! HashiCorp Vault (one HTTP API), shared by every machine that signs in to it.
//!
//! Each secret is one entry `MOUNT/data/PREFIX/ACCOUNT` (`xero-auth/default/token-set`,
//! `xero-auth/default/client-secret`) whose field `value` holds the same text a keychain entry
//! holds. Beside them, `PREFIX/PROFILE/refresh-lease` is the refresh lease that makes one refresh
//! across machines (see [`LeaseGuard`] and `Session::refresh_with`).
//!
//! - **Check-and-set.** The store remembers the version of each entry it read; a write of that
//!   entry is conditional on it (`options.cas`), so a writer that read an older set can never
//!   replace a newer one. The refresh protocol asks for the conflict
//!   ([`SharedStore::set_unless_changed`]) and uses the newer set; other writes report it.
//! - **Authentication.** `VAULT_TOKEN` / `BAO_TOKEN`, else AppRole when `vault_role_id` is set
//!   (the secret id from `VAULT_SECRET_ID` or `vault_secret_id_file`), else the CLI's token file
//!   `~/.vault-token`. The token and the secret id leave the environment at start-up
//!   ([`take_credentials_from_env`]) and live in wiped buffers; no message carries them.
//! - **Where the token goes.** Only to `vault_addr`'s origin: every URL is built from it with the
//!   path's parts percent-encoded one by one (from names checked by
//!   [`crate::config::vault_path`] and [`crate::config::validate_profile_name`]), and the client
//!   follows no redirect.
//!
//! The [`SecretStore`] calls are blocking and run on the runtime's blocking threads
//! ([`super::Store`]). Each one runs its request with `Handle::block_on` on the current runtime:
//! the runtime's own thread, waiting for the call, drives the connection, so the store reuses the
//! tool's HTTP client set-up ([`crate::http::client_builder`]) instead of a second HTTP stack with
//! a thread of its own (what `reqwest::blocking` would start).
//!
//! By idea: where the credentials come from ([`credentials`]), the HTTP requests and their
//! failures ([`http`]), the KV entries with check-and-set ([`kv`]), the refresh lease ([`lease`]),
//! and `xero-auth doctor`'s check ([`check`]). This file holds the store and its two faces.

mod check;
mod credentials;
mod http;
mod kv;
mod lease;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;

use lease::{held_by, lease_account, unsaved_note};

pub use credentials::{
    AuthMethod, forget_credentials, give_back_credentials, take_credentials_from_env,
};

use super::{LeaseAttempt, LeaseGuard, SecretStore, SharedStore, StoreFailure, Written};
use crate::config::{Profile, VaultSettings};
use crate::secret::{SecretString, Zeroizing};

/// The data field each entry keeps its secret in.
const FIELD: &str = "value";
/// The largest answer read from Vault: entries are a few KB.
const MAX_ANSWER: usize = 1 << 20;

/// A profile's secrets in a KV version 2 engine of OpenBao or HashiCorp Vault.
pub struct VaultStore {
    settings: VaultSettings,
    http_timeout: Duration,
    client: OnceLock<Result<reqwest::Client, StoreFailure>>,
    /// The token this process signed in with, once it has.
    token: Mutex<Option<SecretString>>,
    /// The version of each entry as last read or written by this process (0: there was none).
    versions: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultStore")
            .field("addr", &self.settings.addr.as_ref().map(|a| a.to_string()))
            .field("mount", &self.settings.mount)
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

/// What one request to Vault answered.
struct Answer {
    status: u16,
    /// The server's clock (`Date`), Unix seconds.
    date: Option<i64>,
    body: Zeroizing<Vec<u8>>,
}

impl Answer {
    /// Vault's own error strings (never a secret: they name paths and policies).
    fn errors(&self) -> Vec<String> {
        #[derive(Deserialize)]
        struct Errors {
            #[serde(default)]
            errors: Vec<String>,
        }
        serde_json::from_slice::<Errors>(&self.body)
            .map(|e| e.errors)
            .unwrap_or_default()
    }
}

/// An entry as `GET MOUNT/data/PATH` returns it.
#[derive(Deserialize)]
struct Read {
    data: Option<ReadData>,
}

#[derive(Deserialize)]
struct ReadData {
    data: Option<HashMap<String, serde_json::Value>>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    version: u64,
    #[serde(default)]
    created_time: String,
    #[serde(default)]
    deletion_time: String,
}

/// What `POST MOUNT/data/PATH` returns.
#[derive(Deserialize)]
struct WriteAnswer {
    data: Metadata,
}

/// One entry read: its fields (none when there is no live version) and its version.
struct Entry {
    fields: Option<HashMap<String, serde_json::Value>>,
    version: u64,
    created: Option<i64>,
    date: Option<i64>,
}

impl VaultStore {
    /// The vault store `profile`'s settings name. Nothing is contacted until the first call.
    pub fn new(profile: &Profile) -> Self {
        VaultStore {
            settings: profile.vault.clone(),
            http_timeout: profile.http_timeout,
            client: OnceLock::new(),
            token: Mutex::new(None),
            versions: Mutex::new(HashMap::new()),
        }
    }

    fn addr(&self) -> Result<&url::Url, StoreFailure> {
        self.settings.addr.as_ref().ok_or_else(|| StoreFailure {
            cause: "no Vault server is configured for the vault store".into(),
            fix: "set `vault_addr` (`xero-auth config set vault_addr https://vault.example.com:8200`) \
                  or VAULT_ADDR / BAO_ADDR"
                .into(),
        })
    }

    /// Where messages say the server is.
    fn where_(&self) -> String {
        match &self.settings.addr {
            Some(addr) => format!("Vault at {}", addr.as_str().trim_end_matches('/')),
            None => "Vault".into(),
        }
    }
}

/// A JSON body in a wiped buffer.
fn json_body(value: &serde_json::Value) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, value);
    buf
}

fn unreachable_auth() -> StoreFailure {
    StoreFailure {
        cause: "the Vault token variable was emptied while the command ran".into(),
        fix: "run the command again".into(),
    }
}

impl SecretStore for VaultStore {
    fn describe(&self) -> String {
        match &self.settings.addr {
            Some(addr) => format!(
                "vault store ({}, {}/{})",
                addr.as_str().trim_end_matches('/'),
                self.settings.mount,
                self.settings.prefix
            ),
            None => "vault store (no vault_addr)".into(),
        }
    }

    fn shared(&self) -> Option<&dyn SharedStore> {
        Some(self)
    }

    fn hang_fix(&self) -> String {
        format!(
            "{} does not answer: check that it runs and that the network path to it works, then \
             run the command again; nothing stored was changed (XERO_AUTH_STORE_TIMEOUT sets the \
             wait)",
            self.where_()
        )
    }

    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreFailure> {
        let mut entry = self.read_entry(account)?;
        self.remember(account, entry.version);
        let Some(mut fields) = entry.fields.take() else {
            return Ok(None);
        };
        match fields.remove(FIELD) {
            Some(serde_json::Value::String(text)) => {
                let text = Zeroizing::new(text);
                Ok(Some(Zeroizing::new(text.as_bytes().to_vec())))
            }
            _ => Err(StoreFailure {
                cause: format!(
                    "the entry for '{account}' in {} has no text field '{FIELD}'",
                    self.where_()
                ),
                fix: "it was not written by xero-auth: remove it (`bao kv metadata delete`) and \
                      store the secret again"
                    .into(),
            }),
        }
    }

    fn set(&self, account: &str, label: &str, secret: &[u8]) -> Result<(), StoreFailure> {
        match self.set_unless_changed(account, label, secret)? {
            Written::Stored => Ok(()),
            Written::Changed => Err(StoreFailure {
                cause: format!(
                    "'{account}' in {} was changed by another machine since this command read it",
                    self.where_()
                ),
                fix: "run the command again: it will see the newer entry".into(),
            }),
        }
    }

    fn delete(&self, account: &str) -> Result<bool, StoreFailure> {
        let entry = self.read_entry(account)?;
        if entry.version == 0 {
            return Ok(false);
        }
        // Every version goes, not only the latest: old versions hold spent refresh tokens.
        let segments = self.entry_path("metadata", account)?;
        let answer = self.call(reqwest::Method::DELETE, &segments, None, "delete")?;
        match answer.status {
            200 | 204 => {
                self.remember(account, 0);
                Ok(entry.fields.is_some())
            }
            _ => Err(self.unexpected("delete", &segments, &answer)),
        }
    }
}

impl SharedStore for VaultStore {
    fn shared_entries(&self, profile: &str) -> Option<String> {
        let folder = match self.entry_path("data", profile) {
            Ok(segments) => format!("{}/", Self::shown_path(&segments)),
            Err(_) => format!("the folder of profile '{profile}'"),
        };
        Some(format!(
            "{folder} in {}{}",
            self.where_(),
            self.namespace_note()
        ))
    }

    fn set_unless_changed(
        &self,
        account: &str,
        _label: &str,
        secret: &[u8],
    ) -> Result<Written, StoreFailure> {
        let text = std::str::from_utf8(secret).map_err(|_| {
            StoreFailure::mistyped("the vault store keeps text secrets only; this one is not UTF-8")
        })?;
        let fields = serde_json::json!({ FIELD: text });
        let written = self.write_entry(account, fields, self.remembered(account))?;
        match written {
            Some(metadata) => {
                self.remember(account, metadata.version);
                Ok(Written::Stored)
            }
            None => Ok(Written::Changed),
        }
    }

    fn try_lease(&self, profile: &str, ttl: Duration) -> Result<LeaseAttempt, StoreFailure> {
        let account = lease_account(profile);
        let entry = self.read_entry(&account)?;
        if let Some((holder, left)) = held_by(&entry) {
            return Ok(LeaseAttempt::Held { holder, left });
        }
        let mut lease = LeaseGuard {
            profile: profile.to_string(),
            holder: Self::holder(),
            version: entry.version,
            ttl: if ttl.is_zero() {
                self.settings.lease_ttl
            } else {
                ttl
            },
            unsaved_refresh_sent_at: unsaved_note(&entry),
        };
        match self.write_entry(
            &account,
            Self::lease_fields(&lease, "held"),
            Some(entry.version),
        )? {
            Some(metadata) => {
                lease.version = metadata.version;
                Ok(LeaseAttempt::Taken(lease))
            }
            // Another machine took it between the read and the write.
            None => Ok(LeaseAttempt::Held {
                holder: "another machine".into(),
                left: lease.ttl,
            }),
        }
    }

    fn update_lease(
        &self,
        mut lease: LeaseGuard,
        release: bool,
    ) -> Result<Option<LeaseGuard>, StoreFailure> {
        let account = lease_account(&lease.profile);
        let state = if release { "free" } else { "held" };
        match self.write_entry(
            &account,
            Self::lease_fields(&lease, state),
            Some(lease.version),
        )? {
            Some(metadata) => {
                lease.version = metadata.version;
                Ok(Some(lease))
            }
            None => Ok(None),
        }
    }
}
