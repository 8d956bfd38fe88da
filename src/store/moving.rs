//! What moving a profile from one store to another (`xero-auth store move`) carries, and the note
//! that lets a move cut short at any step be finished by running it again.
//!
//! A move copies, reads back, switches the profile's `store` in `config.toml`, and only then
//! deletes the source's entries. Until the switch the profile works from the source, after it
//! from the destination; the [`PendingMove`] note, written before the first copy and removed
//! after the last delete, tells a second run which of the two it is finishing: copying again
//! (the source is still the profile's store, and what the destination holds is the first run's
//! copy) or deleting what is left in the source. A move refused before anything is copied leaves
//! no note, and `store move --abort` removes one to give a move up. The note holds store names, a
//! time and the user's word on deleting a shared source's entries, never a secret.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{Paths, StoreKind};
use crate::private_fs::{self, FileKind};

/// The largest note of a move read: a note is under 100 bytes.
const MAX_NOTE: usize = 4096;
use crate::error::{Error, Result};
use crate::secret::{ExposeSecret, Zeroizing};
use crate::store::{Store, client_secret_account, split};
use crate::token_set::TokenSet;

/// A profile's secrets as one store holds them: the token set (all its entries) and the client
/// secret, each when there is one.
pub struct ProfileSecrets {
    /// The token set, its access token included when the store still has it.
    pub token_set: Option<TokenSet>,
    /// The app's client secret, as stored (PKCE apps have none).
    pub client_secret: Option<Zeroizing<Vec<u8>>>,
}

impl ProfileSecrets {
    /// Reads `profile`'s secrets from `store`.
    pub async fn read(store: &Store, profile: &str) -> Result<Self> {
        let token_set = split::load(store, profile).await?;
        let client_secret = store.get(&client_secret_account(profile)).await?;
        Ok(ProfileSecrets {
            token_set,
            client_secret,
        })
    }

    /// Nothing stored at all.
    pub fn is_empty(&self) -> bool {
        self.token_set.is_none() && self.client_secret.is_none()
    }

    /// Whether `other` holds what this holds: the same refresh token (the one secret that cannot
    /// be had again without a login) and the same client secret, or neither.
    pub fn same_as(&self, other: &ProfileSecrets) -> bool {
        self.same_refresh_token(other) && self.same_client_secret(other)
    }

    /// Whether writing `replacement` over what this holds would lose something: a token set or
    /// a client secret that `replacement` does not hold as well. What is absent here is never
    /// lost.
    pub fn would_lose_to(&self, replacement: &ProfileSecrets) -> bool {
        (self.token_set.is_some() && !self.same_refresh_token(replacement))
            || (self.client_secret.is_some() && !self.same_client_secret(replacement))
    }

    fn same_refresh_token(&self, other: &ProfileSecrets) -> bool {
        match (&self.token_set, &other.token_set) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.refresh_token.as_ref().map(|r| r.expose_secret())
                    == b.refresh_token.as_ref().map(|r| r.expose_secret())
            }
            _ => false,
        }
    }

    fn same_client_secret(&self, other: &ProfileSecrets) -> bool {
        self.client_secret.as_deref() == other.client_secret.as_deref()
    }

    /// Writes these secrets to `store` for `profile`, so that it holds exactly them: the client
    /// secret first (deleted there when there is none here), then the token set, the refresh
    /// token in one write as always.
    pub async fn write(&self, store: &Store, profile: &str) -> Result<()> {
        let account = client_secret_account(profile);
        match &self.client_secret {
            Some(secret) => {
                let label = format!("xero-auth client secret ({profile})");
                store.set(&account, &label, secret.clone()).await?;
            }
            None => {
                store.delete(&account).await?;
            }
        }
        match &self.token_set {
            Some(set) => {
                let label = format!("xero-auth token set ({profile})");
                split::save(store, profile, &label, set).await
            }
            None => split::delete(store, profile).await.map(|_| ()),
        }
    }
}

/// A move that was started and not finished: written before anything is copied, removed once
/// the source's entries are gone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PendingMove {
    /// The store the profile was moved from (its name in `config.toml`).
    pub from: String,
    /// The store it was moved to.
    pub to: String,
    /// When the move started (Unix seconds).
    pub started_at: i64,
    /// The user agreed to delete the profile's entries from a source that other machines share
    /// (`--remove-shared`): a second run finishes the move without being told again.
    #[serde(default)]
    pub remove_shared: bool,
}

impl PendingMove {
    /// The folder of the notes.
    fn folder(paths: &Paths) -> PathBuf {
        paths.state_dir.join("moves")
    }

    /// The note of `profile`.
    pub fn path(paths: &Paths, profile: &str) -> PathBuf {
        Self::folder(paths).join(format!("{profile}.json"))
    }

    /// A note for a move of `from` to `to` starting at `now`.
    pub fn new(from: StoreKind, to: StoreKind, now: i64) -> Self {
        PendingMove {
            from: from.name().to_string(),
            to: to.name().to_string(),
            started_at: now,
            remove_shared: false,
        }
    }

    /// The note of an unfinished move of `profile`, if there is one.
    pub fn read(paths: &Paths, profile: &str) -> Result<Option<Self>> {
        match Self::read_to_give_up(paths, profile)? {
            None => Ok(None),
            Some(Some(note)) => Ok(Some(note)),
            Some(None) => Err(damaged(&Self::path(paths, profile), profile)),
        }
    }

    /// The note of `profile`'s move as `store move --abort` sees it: `Some(None)` for a note that
    /// is there but damaged (giving the move up removes it all the same).
    pub fn read_to_give_up(paths: &Paths, profile: &str) -> Result<Option<Option<Self>>> {
        let path = Self::path(paths, profile);
        let Some(bytes) = private_fs::read_file(
            &path,
            FileKind::Own,
            MAX_NOTE,
            "if you did not make it so, remove the note and run the move again",
        )?
        else {
            return Ok(None);
        };
        let note = serde_json::from_slice::<PendingMove>(&bytes)
            .ok()
            .filter(|note| note.moved_from().is_some() && note.moved_to().is_some());
        Ok(Some(note))
    }

    /// Writes the note, atomically: a run that dies leaves the note whole or none.
    pub fn write(&self, paths: &Paths, profile: &str) -> Result<()> {
        let path = Self::path(paths, profile);
        private_fs::private_folder_in(&paths.state_dir, &Self::folder(paths))?;
        let text = serde_json::json!({
            "from": self.from,
            "to": self.to,
            "started_at": self.started_at,
            "remove_shared": self.remove_shared,
        })
        .to_string();
        private_fs::replace_file(&path, text.as_bytes())
            .map_err(|e| Error::io("cannot write the note of a move", &path, e))
    }

    /// Removes the note of `profile`'s move: it is finished.
    pub fn remove(paths: &Paths, profile: &str) -> Result<()> {
        let path = Self::path(paths, profile);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("cannot remove the note of a move", &path, e))
            }
            _ => Ok(()),
        }
    }

    /// What the note means, and the command that finishes the move, for messages.
    pub fn finish_hint(&self, profile: &str) -> String {
        format!(
            "a move of profile '{profile}' from {} to {} was cut short ({}): {} finishes it",
            self.from,
            self.to,
            crate::time::format_time(self.started_at),
            crate::hint::command(profile, &format!("store move --to {}", self.to)),
        )
    }

    /// The store moved from.
    pub fn moved_from(&self) -> Option<StoreKind> {
        StoreKind::parse(&self.from)
    }

    /// The store moved to.
    pub fn moved_to(&self) -> Option<StoreKind> {
        StoreKind::parse(&self.to)
    }
}

fn damaged(path: &Path, profile: &str) -> Error {
    Error::InvalidInput(format!(
        "the note of an unfinished move, {}, is damaged (it names the two stores of a move that \
         was cut short; it holds no secret). Nothing was done. Check which store holds the \
         profile's tokens ({}, `xero-auth doctor`), then give the move up with {}",
        path.display(),
        crate::hint::command(profile, "status"),
        crate::hint::command(profile, "store move --abort"),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::secret::secret_from_str;
    use crate::store::memory::MemoryStore;
    use crate::store::{CREDENTIAL_MANAGER_MAX_SECRET_LEN, token_set_account};

    fn set(refresh: &str, access_len: usize) -> TokenSet {
        TokenSet {
 audit_key: None,
            refresh_token: Some(secret_from_str(refresh)),
            access_token: Some(secret_from_str(&"a".repeat(access_len))),
            expires_at: Some(1_700_001_800),
            token_type: "Bearer".into(),
            scopes: vec!["offline_access".into()],
            obtained_at: 1_700_000_000,
        }
    }

    fn store(memory: &Arc<MemoryStore>) -> Store {
        Store::new(memory.clone(), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_split_set_and_the_client_secret_move_whole_between_stores_of_any_limit() {
        let limited = Arc::new(MemoryStore::with_limit(CREDENTIAL_MANAGER_MAX_SECRET_LEN));
        let unlimited = Arc::new(MemoryStore::default());
        let secrets = ProfileSecrets {
            token_set: Some(set("rt-1", 6000)),
            client_secret: Some(Zeroizing::new(b"cs-1".to_vec())),
        };
        secrets.write(&store(&limited), "p").await.unwrap();
        assert!(limited.accounts().len() > 3, "{:?}", limited.accounts());

        let read = ProfileSecrets::read(&store(&limited), "p").await.unwrap();
        assert!(read.same_as(&secrets));
        read.write(&store(&unlimited), "p").await.unwrap();
        let moved = ProfileSecrets::read(&store(&unlimited), "p").await.unwrap();
        assert!(moved.same_as(&secrets));
        assert!(
            moved
                .token_set
                .unwrap()
                .same_tokens(secrets.token_set.as_ref().unwrap()),
            "the access token came along"
        );
        assert_eq!(
            unlimited.accounts(),
            vec![client_secret_account("p"), token_set_account("p")]
        );
    }

    #[tokio::test]
    async fn writing_leaves_the_destination_with_exactly_the_source_secrets() {
        let memory = Arc::new(MemoryStore::default());
        let old = ProfileSecrets {
            token_set: Some(set("rt-old", 10)),
            client_secret: Some(Zeroizing::new(b"cs-old".to_vec())),
        };
        old.write(&store(&memory), "p").await.unwrap();
        let pkce = ProfileSecrets {
            token_set: Some(set("rt-new", 10)),
            client_secret: None,
        };
        assert!(!pkce.same_as(&old));
        pkce.write(&store(&memory), "p").await.unwrap();
        let back = ProfileSecrets::read(&store(&memory), "p").await.unwrap();
        assert!(back.same_as(&pkce));
        assert!(
            back.client_secret.is_none(),
            "the old client secret is gone"
        );
    }

    #[test]
    fn the_note_round_trips_and_a_damaged_one_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: dir.path().join("config"),
            state_dir: dir.path().join("state"),
            data_dir: dir.path().join("data"),
        };
        assert_eq!(PendingMove::read(&paths, "p").unwrap(), None);
        let note = PendingMove::new(StoreKind::SecretService, StoreKind::File, 5);
        note.write(&paths, "p").unwrap();
        assert_eq!(PendingMove::read(&paths, "p").unwrap(), Some(note));
        PendingMove::remove(&paths, "p").unwrap();
        PendingMove::remove(&paths, "p").unwrap();
        assert_eq!(PendingMove::read(&paths, "p").unwrap(), None);

        std::fs::write(
            PendingMove::path(&paths, "p"),
            br#"{"from":"plaintext","to":"file","started_at":1}"#,
        )
        .unwrap();
        let err = PendingMove::read(&paths, "p").unwrap_err().to_string();
        assert!(
            err.contains("is damaged") && err.contains("p.json"),
            "{err}"
        );
    }
}
