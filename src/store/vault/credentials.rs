//! Where the vault store's credentials come from: the token variables and AppRole's secret id
//! (taken from the environment at start-up), the secret id file, the CLI's token file; and the
//! sign-in that turns them into the token each request sends.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

use super::{StoreFailure, VaultStore, json_body, unreachable_auth};
use crate::private_fs::{self, FileKind};
use crate::secret::{ExposeSecret, SecretString, Zeroizing};

/// The variables that may hold a Vault token, first found wins.
pub(super) const TOKEN_VARS: [&str; 2] = ["VAULT_TOKEN", "BAO_TOKEN"];
/// The variable that may hold AppRole's secret id.
pub(super) const SECRET_ID_VAR: &str = "VAULT_SECRET_ID";
/// The largest file of a secret or certificates read for the store: a CA bundle is a few hundred KB.
pub(super) const MAX_NAMED_FILE: usize = 4 << 20;

/// Reads `path` (`what`, for messages) through the one file check ([`private_fs`]): a file
/// another user could change (or, for a secret, read) is refused (exit 1) naming it; a file that
/// cannot be read is an unusable store (exit 5) with `fix`.
pub(super) fn read_named(
    path: &Path,
    kind: FileKind,
    what: &str,
    fix: &str,
) -> Result<Zeroizing<Vec<u8>>, StoreFailure> {
    let unreadable = |why: String| StoreFailure {
        cause: format!("cannot read {what} {} ({why})", path.display()),
        fix: fix.into(),
    };
    match private_fs::read_file(path, kind, MAX_NAMED_FILE, fix) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(unreadable("it does not exist".into())),
        Err(e @ crate::error::Error::Untrusted { .. }) => {
            Err(StoreFailure::mistyped(e.to_string()))
        }
        Err(e) => Err(unreadable(e.to_string())),
    }
}

/// The credentials [`take_credentials_from_env`] took at start-up, by variable name.
static TAKEN: Mutex<Vec<(&'static str, SecretString)>> = Mutex::new(Vec::new());

/// For the command-line tool, first thing in `main`: moves `VAULT_TOKEN`, `BAO_TOKEN` and
/// `VAULT_SECRET_ID` out of the environment into memory that is wiped, wipes the variables'
/// bytes in the environment block and removes them, so that no child process (`exec`'s command,
/// the browser `login` opens) inherits them.
///
/// # Safety
/// Changes the process environment: call it before any other thread exists.
pub unsafe fn take_credentials_from_env() {
    for name in TOKEN_VARS.into_iter().chain([SECRET_ID_VAR]) {
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        let value = Zeroizing::new(value.into_string().unwrap_or_default());
        if !value.trim().is_empty() {
            TAKEN
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((name, SecretString::from(value.trim())));
        }
        crate::hardening::wipe_env_value(name);
        // SAFETY: the caller guarantees no other thread reads or writes the environment.
        unsafe { std::env::remove_var(name) };
    }
}

/// Puts what [`take_credentials_from_env`] took into `command`'s environment: for the child of a
/// profile that does not use the vault store, to which they are the caller's own variables.
pub fn give_back_credentials(command: &mut std::process::Command) {
    for (name, value) in TAKEN.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        command.env(name, value.expose_secret());
    }
}

/// Wipes what [`take_credentials_from_env`] took: a static is never dropped, so the tool calls
/// this before it exits.
pub fn forget_credentials() {
    TAKEN.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// The value of credential variable `name`: what was taken at start-up, else the environment (a
/// program linking the library).
pub(super) fn given(name: &'static str) -> Option<SecretString> {
    let taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, value)) = taken.iter().find(|(n, _)| *n == name) {
        return Some(value.clone());
    }
    drop(taken);
    let value = Zeroizing::new(std::env::var(name).ok()?);
    (!value.trim().is_empty()).then(|| SecretString::from(value.trim()))
}

/// How this process signs in to Vault, for `status` and `doctor` (never the credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// A token from this variable.
    TokenVariable(&'static str),
    /// AppRole login with `vault_role_id`; the secret id from this source.
    AppRole(String),
    /// The CLI's token file.
    TokenFile(PathBuf),
    /// Nothing to sign in with.
    None,
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMethod::TokenVariable(var) => write!(f, "token from {var}"),
            AuthMethod::AppRole(source) => write!(f, "AppRole (secret id from {source})"),
            AuthMethod::TokenFile(path) => write!(f, "token file {}", path.display()),
            AuthMethod::None => f.write_str("none"),
        }
    }
}

/// The CLI's token file: `~/.vault-token` (what `vault login` and `bao login` write).
pub(super) fn token_file() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".vault-token"))
}

impl VaultStore {
    /// How this process would sign in (the first source that has something), without signing in.
    pub fn auth_method(&self) -> AuthMethod {
        if let Some(var) = TOKEN_VARS.into_iter().find(|v| given(v).is_some()) {
            return AuthMethod::TokenVariable(var);
        }
        if self.settings.role_id.is_some() {
            let source = match (&self.settings.secret_id_file, given(SECRET_ID_VAR)) {
                (_, Some(_)) => SECRET_ID_VAR.to_string(),
                (Some(file), None) => file.display().to_string(),
                (None, None) => "nowhere: set VAULT_SECRET_ID or vault_secret_id_file".into(),
            };
            return AuthMethod::AppRole(source);
        }
        match token_file() {
            Some(path) if path.is_file() => AuthMethod::TokenFile(path),
            _ => AuthMethod::None,
        }
    }

    /// The token to send: signs in on first use.
    pub(super) fn token(&self) -> Result<SecretString, StoreFailure> {
        let mut held = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = held.as_ref() {
            return Ok(token.clone());
        }
        let token = self.sign_in()?;
        *held = Some(token.clone());
        Ok(token)
    }

    pub(super) fn sign_in(&self) -> Result<SecretString, StoreFailure> {
        match self.auth_method() {
            AuthMethod::TokenVariable(var) => given(var).ok_or_else(unreachable_auth),
            AuthMethod::AppRole(_) => self.approle_login(),
            AuthMethod::TokenFile(path) => {
                // Written by the Vault CLI (0600); whether others may read it is the CLI's
                // business, but no one else may change it: a token of theirs would send this
                // profile's secrets to their Vault.
                let bytes = read_named(
                    &path,
                    FileKind::Named,
                    "the Vault token file",
                    "sign in again with `bao login` / `vault login`, or set VAULT_TOKEN",
                )?;
                let text = std::str::from_utf8(&bytes).map_err(|_| StoreFailure {
                    cause: format!("the Vault token file {} is not text", path.display()),
                    fix: "sign in again with `bao login` / `vault login`".into(),
                })?;
                Ok(SecretString::from(text.trim()))
            }
            AuthMethod::None => Err(StoreFailure {
                cause: format!("there is nothing to sign in to {} with", self.where_()),
                fix: "set VAULT_TOKEN (or BAO_TOKEN), sign in with `bao login` / `vault login` \
                      (which writes ~/.vault-token), or give the profile an AppRole \
                      (vault_role_id, and the secret id in VAULT_SECRET_ID or vault_secret_id_file)"
                    .into(),
            }),
        }
    }

    /// `auth/approle/login` with the profile's role id and the secret id.
    pub(super) fn approle_login(&self) -> Result<SecretString, StoreFailure> {
        let role_id = self.settings.role_id.clone().unwrap_or_default();
        let secret_id = match (given(SECRET_ID_VAR), &self.settings.secret_id_file) {
            (Some(id), _) => id,
            (None, Some(path)) => {
                let bytes = read_named(
                    path,
                    FileKind::Secret,
                    "the AppRole secret id file",
                    "check vault_secret_id_file (a file only you can read: `chmod 600`), or set \
                     VAULT_SECRET_ID",
                )?;
                let text = std::str::from_utf8(&bytes).map_err(|_| StoreFailure {
                    cause: format!("the AppRole secret id file {} is not text", path.display()),
                    fix: "write the secret id as Vault printed it".into(),
                })?;
                SecretString::from(text.trim())
            }
            (None, None) => {
                return Err(StoreFailure {
                    cause: "AppRole is configured (vault_role_id) but there is no secret id".into(),
                    fix: "set VAULT_SECRET_ID, or vault_secret_id_file to a file only this user can read".into(),
                });
            }
        };
        let body = json_body(&serde_json::json!({
            "role_id": role_id,
            "secret_id": secret_id.expose_secret(),
        }));
        drop(secret_id);
        let segments: Vec<String> = ["auth", "approle", "login"].map(String::from).to_vec();
        let answer = self.block(self.send(reqwest::Method::POST, &segments, Some(body), None))?;
        if answer.status != 200 {
            let errors = answer.errors().join("; ");
            return Err(StoreFailure {
                cause: format!(
                    "AppRole login at {} was refused (HTTP {}{}{})",
                    self.where_(),
                    answer.status,
                    if errors.is_empty() { "" } else { ": " },
                    errors
                ),
                fix: "check vault_role_id and the secret id (it may have expired or been used up: \
                      create a new one with `bao write -f auth/approle/role/ROLE/secret-id`), and \
                      that AppRole is enabled at auth/approle"
                    .into(),
            });
        }
        #[derive(Deserialize)]
        struct Login {
            auth: LoginAuth,
        }
        #[derive(Deserialize)]
        struct LoginAuth {
            client_token: String,
        }
        let login: Login = serde_json::from_slice(&answer.body).map_err(|_| StoreFailure {
            cause: format!(
                "{} answered the AppRole login without a token",
                self.where_()
            ),
            fix: "check that vault_addr names a Vault or OpenBao server".into(),
        })?;
        // Into the wiped type at once; the parser's own buffers are wiped when freed (the
        // zeroing allocator), as for every answer.
        Ok(SecretString::from(login.auth.client_token))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Seen before the fix: `vault_secret_id_file` was read whatever its mode, while the
    /// passphrase file was checked.
    #[test]
    fn a_secret_id_file_others_can_read_is_refused_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret-id");
        std::fs::write(&path, "s-1d\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let failure = read_named(&path, FileKind::Secret, "the AppRole secret id file", "fix")
            .err()
            .unwrap();
        assert!(failure.fix.is_empty(), "exit 1, not an unusable store");
        assert!(failure.cause.contains(&path.display().to_string()));
        assert!(
            failure
                .cause
                .contains("other users can read it (mode 0644)")
        );
        assert!(!failure.cause.contains("s-1d"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            &**read_named(&path, FileKind::Secret, "the file", "fix").unwrap(),
            b"s-1d\n"
        );
    }
}
