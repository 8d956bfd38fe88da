//! What `xero-auth doctor` reports of the vault store: the server's seal status, the sign-in,
//! the token's capabilities on a profile's entries, and the refresh lease.

use serde::Deserialize;

use super::lease::lease_account;
use super::{Answer, StoreFailure, VaultStore, json_body};
use crate::secret::Zeroizing;
use crate::store::{client_secret_account, token_set_account};

impl VaultStore {
    /// What `xero-auth doctor` reports of this store for `profile`: the server's seal status,
    /// the sign-in, whether the token's policy grants what the tool needs on the profile's
    /// entries (`sys/capabilities-self`), and the refresh lease. An error says what fails and
    /// what to do.
    pub fn check(&self, profile: &str) -> Result<String, StoreFailure> {
        let seal: Vec<String> = ["sys", "seal-status"].map(String::from).to_vec();
        let answer = self.block(self.send(reqwest::Method::GET, &seal, None, None))?;
        #[derive(Deserialize)]
        struct Seal {
            sealed: bool,
            #[serde(default)]
            version: String,
        }
        let status: Seal = serde_json::from_slice(&answer.body).map_err(|_| StoreFailure {
            cause: format!(
                "{} did not answer sys/seal-status (HTTP {})",
                self.where_(),
                answer.status
            ),
            fix: "check that vault_addr names a Vault or OpenBao server".into(),
        })?;
        if status.sealed {
            return Err(self.sealed_or_down(&Answer {
                status: 503,
                date: None,
                body: Zeroizing::new(br#"{"errors":["Vault is sealed"]}"#.to_vec()),
            }));
        }
        let token = self.token()?;
        let needed: Vec<(Vec<String>, &[&str])> = vec![
            (
                self.entry_path("data", &token_set_account(profile))?,
                &["read", "create", "update"],
            ),
            (
                self.entry_path("data", &client_secret_account(profile))?,
                &["read", "create", "update"],
            ),
            (
                self.entry_path("data", &lease_account(profile))?,
                &["read", "create", "update"],
            ),
            (
                self.entry_path("metadata", &token_set_account(profile))?,
                &["delete"],
            ),
        ];
        let paths: Vec<String> = needed.iter().map(|(p, _)| Self::shown_path(p)).collect();
        let body = json_body(&serde_json::json!({ "paths": paths }));
        let caps: Vec<String> = ["sys", "capabilities-self"].map(String::from).to_vec();
        let answer =
            self.block(self.send(reqwest::Method::POST, &caps, Some(body), Some(&token)))?;
        if answer.status == 403 {
            return Err(self.denied(&token, &caps, "update"));
        }
        if answer.status != 200 {
            return Err(self.unexpected("capabilities check", &caps, &answer));
        }
        let granted: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        for (path, wanted) in needed.iter().map(|(p, w)| (Self::shown_path(p), *w)) {
            let has: Vec<&str> = granted
                .get("data")
                .and_then(|d| d.get(&path))
                .or_else(|| granted.get(&path))
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
                .unwrap_or_default();
            if has.contains(&"root") {
                continue;
            }
            if let Some(missing) = wanted.iter().find(|c| !has.contains(c)) {
                return Err(StoreFailure {
                    cause: format!(
                        "the token ({}) lacks '{missing}' on {path}{}",
                        self.auth_method(),
                        self.namespace_note()
                    ),
                    fix: format!(
                        "grant it in the token's policy: `path \"{path}\" {{ capabilities = \
                         [\"{}\"] }}` (docs/teams.md has the whole policy)",
                        wanted.join("\", \"")
                    ),
                });
            }
        }
        let lease = match self.lease_state(profile)? {
            Some((holder, left)) => format!(
                "refresh lease held by {holder} for {} s more",
                left.as_secs()
            ),
            None => "no refresh lease held".into(),
        };
        Ok(format!(
            "unsealed{}, signed in with {}, the token can read and write {}/{}/{profile}/*; {lease}",
            if status.version.is_empty() {
                String::new()
            } else {
                format!(" (version {})", status.version)
            },
            self.auth_method(),
            self.settings.mount,
            self.settings.prefix
        ))
    }
}
