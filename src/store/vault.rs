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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;

use super::{LeaseAttempt, LeaseGuard, SecretStore, SharedStore, StoreFailure, Written};
use crate::config::{Profile, VaultSettings};
use crate::private_fs::{self, FileKind};
use crate::secret::{ExposeSecret, SecretString, Zeroizing};

/// The variables that may hold a Vault token, first found wins.
const TOKEN_VARS: [&str; 2] = ["VAULT_TOKEN", "BAO_TOKEN"];
/// The variable that may hold AppRole's secret id.
const SECRET_ID_VAR: &str = "VAULT_SECRET_ID";
/// The data field each entry keeps its secret in.
const FIELD: &str = "value";
/// The largest answer read from Vault: entries are a few KB.
const MAX_ANSWER: usize = 1 << 20;

/// The largest file of a secret or certificates read for the store: a CA bundle is a few hundred KB.
const MAX_NAMED_FILE: usize = 4 << 20;

/// Reads `path` (`what`, for messages) through the one file check ([`private_fs`]): a file
/// another user could change (or, for a secret, read) is refused (exit 1) naming it; a file that
/// cannot be read is an unusable store (exit 5) with `fix`.
fn read_named(
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
fn given(name: &'static str) -> Option<SecretString> {
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
fn token_file() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".vault-token"))
}

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

    /// The settings this store uses.
    pub fn settings(&self) -> &VaultSettings {
        &self.settings
    }

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

    fn client(&self) -> Result<&reqwest::Client, StoreFailure> {
        self.client
            .get_or_init(|| {
                let mut builder = crate::http::client_builder(self.http_timeout);
                if let Some(path) = &self.settings.cacert {
                    let pem = read_named(
                        path,
                        FileKind::Named,
                        "the CA file",
                        "point vault_cacert / VAULT_CACERT at a PEM file of the CA certificates \
                         that signed the server's certificate",
                    )?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .ok()
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| StoreFailure {
                            cause: format!(
                                "the CA file {} holds no PEM certificate",
                                path.display()
                            ),
                            fix: "give a PEM file (-----BEGIN CERTIFICATE-----)".into(),
                        })?;
                    // As the Vault CLI does: the given CAs only, not the system's as well.
                    builder = builder.tls_certs_only(certs);
                }
                builder.build().map_err(|e| StoreFailure {
                    cause: format!(
                        "cannot set up HTTPS ({})",
                        crate::http::describe_transport(&e)
                    ),
                    fix: "check vault_cacert / VAULT_CACERT".into(),
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `MOUNT/data/PREFIX/ACCOUNT` (or `metadata`) as path segments.
    fn entry_path(&self, kind: &str, account: &str) -> Result<Vec<String>, StoreFailure> {
        let bad =
            || StoreFailure::mistyped(format!("'{account}' is not an entry name this store uses"));
        let mut segments: Vec<String> = self.settings.mount.split('/').map(String::from).collect();
        segments.push(kind.into());
        segments.extend(self.settings.prefix.split('/').map(String::from));
        for part in account.split('/') {
            crate::config::vault_path("entry", part).map_err(|_| bad())?;
            segments.push(part.into());
        }
        Ok(segments)
    }

    /// What messages call an entry: `MOUNT/data/PREFIX/ACCOUNT`, as a policy names it.
    fn shown_path(segments: &[String]) -> String {
        segments.join("/")
    }

    fn url(&self, segments: &[String]) -> Result<url::Url, StoreFailure> {
        let mut url = self.addr()?.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| StoreFailure {
                cause: "vault_addr cannot carry a path".into(),
                fix: "give the server's address, e.g. https://vault.example.com:8200".into(),
            })?;
            path.clear().push("v1");
            for segment in segments {
                path.push(segment);
            }
        }
        Ok(url)
    }

    /// Runs a request to its end from this blocking thread (see the module documentation).
    fn block<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreFailure>>,
    ) -> Result<T, StoreFailure> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(fut),
            // A program calling the store outside any runtime: one of its own for the call.
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreFailure {
                    cause: format!("cannot start an async runtime for the vault store ({e})"),
                    fix: "run the command again".into(),
                })?
                .block_on(fut),
        }
    }

    /// Sends one request; `token` adds `X-Vault-Token`. Transport failures become a failure with
    /// a cause and a fix; any status comes back as it is.
    async fn send(
        &self,
        method: reqwest::Method,
        segments: &[String],
        body: Option<Zeroizing<Vec<u8>>>,
        token: Option<&SecretString>,
    ) -> Result<Answer, StoreFailure> {
        let url = self.url(segments)?;
        let mut request = self.client()?.request(method, url);
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(token.expose_secret())
                .map_err(|_| StoreFailure {
                    cause: "the Vault token has characters a header cannot carry".into(),
                    fix: "sign in again (`bao login` / `vault login`) or set VAULT_TOKEN to the token as Vault printed it".into(),
                })?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(namespace) = &self.settings.namespace {
            request = request.header("X-Vault-Namespace", namespace.as_str());
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(crate::secret::zeroizing_bytes(body));
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let body = crate::http::read_body(response, MAX_ANSWER)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::Transport(e) => self.transport(&e),
                crate::http::BodyError::TooLarge => StoreFailure {
                    cause: format!(
                        "{} answered with more than {MAX_ANSWER} bytes",
                        self.where_()
                    ),
                    fix: "check that vault_addr names a Vault or OpenBao server".into(),
                },
            })?;
        Ok(Answer { status, date, body })
    }

    fn transport(&self, e: &reqwest::Error) -> StoreFailure {
        if e.is_timeout() {
            return StoreFailure {
                cause: format!(
                    "{} does not answer ({})",
                    self.where_(),
                    crate::http::describe_transport(e)
                ),
                fix: self.hang_fix(),
            };
        }
        let cause = format!(
            "cannot reach {} ({})",
            self.where_(),
            crate::http::describe_transport(e)
        );
        let lower = cause.to_ascii_lowercase();
        let fix = if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
        {
            "the server's certificate is not trusted: set vault_cacert (or VAULT_CACERT) to the PEM \
             file of the CA that signed it, and check that vault_addr's host name is the one in it"
        } else if lower.contains("refused") || lower.contains("dns") || lower.contains("resolve") {
            "check that the server runs and that vault_addr (or VAULT_ADDR) names it, then run the \
             command again; nothing stored was changed"
        } else {
            "check the network path to the server and run the command again; nothing stored was \
             changed"
        };
        StoreFailure {
            cause,
            fix: fix.into(),
        }
    }

    /// The token to send: signs in on first use.
    fn token(&self) -> Result<SecretString, StoreFailure> {
        let mut held = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = held.as_ref() {
            return Ok(token.clone());
        }
        let token = self.sign_in()?;
        *held = Some(token.clone());
        Ok(token)
    }

    fn sign_in(&self) -> Result<SecretString, StoreFailure> {
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
    fn approle_login(&self) -> Result<SecretString, StoreFailure> {
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

    /// A request with the token, and the failure for the statuses every call treats alike.
    fn call(
        &self,
        method: reqwest::Method,
        segments: &[String],
        body: Option<Zeroizing<Vec<u8>>>,
        capability: &str,
    ) -> Result<Answer, StoreFailure> {
        let mut signed_in_again = false;
        loop {
            let token = self.token()?;
            let answer =
                self.block(self.send(method.clone(), segments, body.clone(), Some(&token)))?;
            match answer.status {
                // A process that runs for hours (`mcp`, `exec --server`) outlives an AppRole
                // token's `token_ttl`, or a `bao login` replaces the token file: a token that is
                // no longer valid is dropped and the process signs in again, once. A 403 means
                // nothing was done, so the call can be made again.
                403 if !signed_in_again
                    && matches!(
                        self.auth_method(),
                        AuthMethod::AppRole(_) | AuthMethod::TokenFile(_)
                    )
                    && !self.token_valid(&token) =>
                {
                    signed_in_again = true;
                    self.token.lock().unwrap_or_else(|p| p.into_inner()).take();
                    tracing::info!("the Vault token is no longer valid; signing in again");
                }
                403 => return Err(self.denied(&token, segments, capability)),
                503 | 501 => return Err(self.sealed_or_down(&answer)),
                _ => return Ok(answer),
            }
        }
    }

    /// Whether the server still takes `token` (`auth/token/lookup-self`); a lookup that fails
    /// for another reason counts as valid, so that only a refused token is replaced.
    fn token_valid(&self, token: &SecretString) -> bool {
        let lookup: Vec<String> = ["auth", "token", "lookup-self"].map(String::from).to_vec();
        self.block(self.send(reqwest::Method::GET, &lookup, None, Some(token)))
            .map_or(true, |a| a.status == 200)
    }

    /// A 403: the token is no longer valid, or the policy lacks `capability` on the path.
    fn denied(&self, token: &SecretString, segments: &[String], capability: &str) -> StoreFailure {
        let path = Self::shown_path(segments);
        if !self.token_valid(token) {
            return StoreFailure {
                cause: format!(
                    "{} refused the token: it is expired, revoked or from another server{}",
                    self.where_(),
                    self.namespace_note()
                ),
                fix: format!(
                    "sign in again ({}) and run the command again; nothing stored was changed",
                    match self.auth_method() {
                        AuthMethod::AppRole(_) =>
                            "check the AppRole's token_ttl and secret id".into(),
                        AuthMethod::TokenVariable(var) => {
                            format!("the token came from {var}: replace it")
                        }
                        AuthMethod::TokenFile(path) => format!(
                            "the token came from {}: sign in again to replace it",
                            path.display()
                        ),
                        AuthMethod::None => "no token was found: give one".into(),
                    }
                ),
            };
        }
        StoreFailure {
            cause: format!(
                "{} denied '{capability}' on {path}: the token's policy does not grant it{}",
                self.where_(),
                self.namespace_note()
            ),
            fix: format!(
                "add `path \"{path}\" {{ capabilities = [\"{capability}\"] }}` (see docs/teams.md \
                 for the whole policy) to the token's policy, or use a token that has it"
            ),
        }
    }

    fn namespace_note(&self) -> String {
        match &self.settings.namespace {
            Some(ns) => format!(" (namespace '{ns}')"),
            None => String::new(),
        }
    }

    fn sealed_or_down(&self, answer: &Answer) -> StoreFailure {
        let errors = answer.errors().join("; ");
        if errors.to_ascii_lowercase().contains("sealed") {
            return StoreFailure {
                cause: format!("{} is sealed", self.where_()),
                fix: "ask its operators to unseal it (`bao operator unseal` / `vault operator \
                      unseal`), then run the command again; nothing stored was changed"
                    .into(),
            };
        }
        StoreFailure {
            cause: format!(
                "{} is not available (HTTP {}{}{})",
                self.where_(),
                answer.status,
                if errors.is_empty() { "" } else { ": " },
                errors
            ),
            fix: "check `bao status` / `vault status` and run the command again; nothing stored \
                  was changed"
                .into(),
        }
    }

    /// Any other status a call did not expect.
    fn unexpected(&self, what: &str, segments: &[String], answer: &Answer) -> StoreFailure {
        let errors = answer.errors().join("; ");
        let lower = errors.to_ascii_lowercase();
        let fix = if lower.contains("namespace") {
            "check vault_namespace (or VAULT_NAMESPACE): the namespace must exist on the server"
                .to_string()
        } else if lower.contains("no handler for route") || lower.contains("unsupported path") {
            format!(
                "no KV version 2 engine is mounted at '{}': check vault_mount, or enable one \
                 (`bao secrets enable -path={} kv-v2`)",
                self.settings.mount, self.settings.mount
            )
        } else {
            "run `xero-auth doctor`; nothing stored was changed".into()
        };
        StoreFailure {
            cause: format!(
                "{} answered HTTP {} to a {what} of {}{}{}{}",
                self.where_(),
                answer.status,
                Self::shown_path(segments),
                self.namespace_note(),
                if errors.is_empty() { "" } else { ": " },
                errors
            ),
            fix,
        }
    }

    /// Reads an entry: its live version's fields, or none.
    fn read_entry(&self, account: &str) -> Result<Entry, StoreFailure> {
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
            created: metadata.and_then(|m| parse_rfc3339(&m.created_time)),
            date: answer.date,
        })
    }

    /// Writes `fields` to an entry, on condition that its version is still `cas` (when given).
    /// Returns the new version, or `None` when another writer changed the entry first.
    fn write_entry(
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

    fn remember(&self, account: &str, version: u64) {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_string(), version);
    }

    fn remembered(&self, account: &str) -> Option<u64> {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .copied()
    }

    /// Who this process is, for a lease: host, process id and a random part.
    fn holder() -> String {
        format!(
            "{}/{}/{}",
            host_name(),
            std::process::id(),
            crate::secret::random_urlsafe(6)
        )
    }

    fn lease_fields(lease: &LeaseGuard, state: &str) -> serde_json::Value {
        serde_json::json!({
            "holder": lease.holder,
            "state": state,
            "ttl_secs": lease.ttl.as_secs().max(1),
            "unsaved_refresh_sent_at": lease.unsaved_refresh_sent_at,
        })
    }

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
                self.entry_path("data", &super::token_set_account(profile))?,
                &["read", "create", "update"],
            ),
            (
                self.entry_path("data", &super::client_secret_account(profile))?,
                &["read", "create", "update"],
            ),
            (
                self.entry_path("data", &lease_account(profile))?,
                &["read", "create", "update"],
            ),
            (
                self.entry_path("metadata", &super::token_set_account(profile))?,
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

    /// The lease entry of `profile` as it is now: who holds it and for how much longer (on the
    /// server's clock), if anyone.
    pub fn lease_state(&self, profile: &str) -> Result<Option<(String, Duration)>, StoreFailure> {
        let entry = self.read_entry(&lease_account(profile))?;
        Ok(held_by(&entry))
    }
}

/// The lease entry's account.
fn lease_account(profile: &str) -> String {
    format!("{profile}/refresh-lease")
}

/// Who holds the lease `entry` holds and for how much longer, judged on the server's clock: the
/// entry's `created_time` against the `Date` of the answer that read it.
fn held_by(entry: &Entry) -> Option<(String, Duration)> {
    let fields = entry.fields.as_ref()?;
    if fields.get("state").and_then(|v| v.as_str()) != Some("held") {
        return None;
    }
    let ttl = fields.get("ttl_secs").and_then(|v| v.as_i64()).unwrap_or(0);
    let holder = fields
        .get("holder")
        .and_then(|v| v.as_str())
        .unwrap_or("someone")
        .to_string();
    // Without the server's times (a proxy that drops `Date`), the lease is not taken to be free:
    // this machine's clock stands in for the server's, and a missing creation time counts as
    // just written.
    let now = entry.date.unwrap_or_else(|| {
        use crate::session::Clock as _;
        crate::session::SystemClock.now()
    });
    let created = entry.created.unwrap_or(now);
    let left = created.saturating_add(ttl).saturating_sub(now);
    (left > 0).then(|| (holder, Duration::from_secs(left as u64)))
}

/// The lease note an entry carries over from an earlier holder.
fn unsaved_note(entry: &Entry) -> Option<i64> {
    entry
        .fields
        .as_ref()?
        .get("unsaved_refresh_sent_at")?
        .as_i64()
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

/// This machine's name, for the lease's holder.
fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        if ok {
            let name = buf.split(|&b| b == 0).next().unwrap_or_default();
            if let Ok(name) = std::str::from_utf8(name)
                && !name.is_empty()
            {
                return name.to_string();
            }
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown-host".into())
}

/// Unix seconds of an RFC 3339 time as Vault writes them (`2026-11-30T13:18:38.575474195Z`).
fn parse_rfc3339(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()?;
    time.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// Unix seconds of an HTTP `Date` (`Mon, 30 Nov 2026 13:18:38 GMT`, RFC 9110's IMF-fixdate).
fn parse_http_date(text: &str) -> Option<i64> {
    let mut parts = text.split_whitespace().skip(1);
    let day: i64 = parts.next()?.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| Some(*m) == parts.clone().next())? as i64
        + 1;
    parts.next();
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_and_vault_times_read_as_unix_seconds() {
        assert_eq!(
            parse_http_date("Mon, 30 Nov 2026 13:18:38 GMT"),
            Some(1_796_044_718)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(
            parse_rfc3339("2026-11-30T13:18:38.575474195Z"),
            Some(1_796_044_718)
        );
    }

    #[test]
    fn a_lease_is_judged_on_the_servers_clock() {
        let entry = |state: &str, created: i64, now: i64| Entry {
            fields: Some(HashMap::from([
                ("state".to_string(), serde_json::json!(state)),
                ("ttl_secs".to_string(), serde_json::json!(30)),
                ("holder".to_string(), serde_json::json!("ci-1/42/abc")),
            ])),
            version: 3,
            created: Some(created),
            date: Some(now),
        };
        assert_eq!(
            held_by(&entry("held", 1000, 1010)),
            Some(("ci-1/42/abc".to_string(), Duration::from_secs(20)))
        );
        assert_eq!(held_by(&entry("held", 1000, 1030)), None, "expired");
        let mut undated = entry("held", 1000, 1010);
        undated.date = None;
        undated.created = None;
        assert_eq!(
            held_by(&undated).map(|(_, left)| left),
            Some(Duration::from_secs(30)),
            "no Date from the server: held, never free"
        );
        assert_eq!(held_by(&entry("free", 1000, 1010)), None, "released");
    }

    /// Seen before the fix: `vault_secret_id_file` was read whatever its mode, while the
    /// passphrase file was checked.
    #[cfg(unix)]
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
