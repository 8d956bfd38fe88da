//! The vault store's KV version 2 entries: a read that remembers each entry's version, and a
//! write on condition that the version is still the one read (check-and-set).

use super::{Entry, Metadata, Read, StoreFailure, VaultStore, WriteAnswer, json_body};

impl VaultStore {
    /// Reads an entry: its live version's fields, or none.
    pub(super) fn read_entry(&self, account: &str) -> Result<Entry, StoreFailure> {
        let segments = self.entry_path("data", account)?;
        let answer = self.call(reqwest::Method::GET, &segments, None, "read")?;
        let unreadable = || StoreFailure {
            cause: format!(
                "{} answered a read of {} with something that is not a KV version 2 entry",
                self.where_(),
                Self::shown_path(&segments)
            ),
            fix: format!(
                "check that '{}' is a KV version 2 engine (`bao secrets list -detailed`)",
                self.settings.mount
            ),
        };
        match answer.status {
            200 | 404 => {}
            _ => return Err(self.unexpected("read", &segments, &answer)),
        }
        // A 404 with errors is a missing mount or namespace, not a missing entry.
        if answer.status == 404 && !answer.errors().is_empty() {
            return Err(self.unexpected("read", &segments, &answer));
        }
        let read: Read = match serde_json::from_slice(&answer.body) {
            Ok(read) => read,
            Err(_) if answer.status == 404 => Read { data: None },
            Err(_) => return Err(unreadable()),
        };
        let (fields, metadata) = match read.data {
            None if answer.status == 404 => (None, None),
            None => return Err(unreadable()),
            Some(data) => (data.data, data.metadata),
        };
        let version = metadata.as_ref().map_or(0, |m| m.version);
        let live =
            answer.status == 200 && metadata.as_ref().is_none_or(|m| m.deletion_time.is_empty());
        Ok(Entry {
            fields: if live { fields } else { None },
            version,
            created: metadata.and_then(|m| crate::time::parse_rfc3339(&m.created_time)),
            date: answer.date,
        })
    }

    /// Writes `fields` to an entry, on condition that its version is still `cas` (when given).
    /// Returns the new version, or `None` when another writer changed the entry first.
    pub(super) fn write_entry(
        &self,
        account: &str,
        fields: serde_json::Value,
        cas: Option<u64>,
    ) -> Result<Option<Metadata>, StoreFailure> {
        let segments = self.entry_path("data", account)?;
        let request = match cas {
            Some(cas) => serde_json::json!({ "data": fields, "options": { "cas": cas } }),
            None => serde_json::json!({ "data": fields }),
        };
        let body = json_body(&request);
        drop(request);
        let capability = match cas {
            Some(0) => "create",
            _ => "update",
        };
        let answer = self.call(reqwest::Method::POST, &segments, Some(body), capability)?;
        match answer.status {
            200 | 204 => {
                let written: WriteAnswer =
                    serde_json::from_slice(&answer.body).map_err(|_| StoreFailure {
                        cause: format!(
                            "{} did not say which version of {} it wrote",
                            self.where_(),
                            Self::shown_path(&segments)
                        ),
                        fix: format!(
                            "check that '{}' is a KV version 2 engine",
                            self.settings.mount
                        ),
                    })?;
                Ok(Some(written.data))
            }
            400 if answer.errors().iter().any(|e| e.contains("check-and-set")) => Ok(None),
            _ => Err(self.unexpected("write", &segments, &answer)),
        }
    }

    pub(super) fn remember(&self, account: &str, version: u64) {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_string(), version);
    }

    pub(super) fn remembered(&self, account: &str) -> Option<u64> {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .copied()
    }
}
