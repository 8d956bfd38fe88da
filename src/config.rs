//! Profiles and endpoints: `config.toml` (no secrets), environment overrides, and the folders
//! the tool uses.
//!
//! ```toml
//! [profiles.default]
//! client_id = "7F1C…"
//! scopes = ["openid", "profile", "email", "accounting.invoices", "offline_access"]
//! redirect_uri = "http://localhost:8742/callback"
//! default_tenant = "a3f2…"
//! store = "secret-service"
//! token_url = "https://identity.xero.com/connect/token"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Document, DocumentMut, Item, Table, Value};
use url::Url;

use crate::error::{Error, Result};
use crate::private_fs::{self, FileKind};

/// The name the tool uses for its folders and its keychain service.
pub const APP_NAME: &str = "xero-auth";
/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";
/// The redirect URI Xero's own CLIs register; ours too unless the profile says otherwise.
pub const DEFAULT_REDIRECT_URI: &str = "http://localhost:8742/callback";

/// The scrypt work factors the file store accepts for new files (log2 of N): from 1 MiB of
/// memory per passphrase attempt (for tests and random machine passphrases) to 4 GiB.
pub const FILE_WORK_FACTORS: (u8, u8) = (10, 22);

/// The file store's default work factor: 2^18 (256 MiB, about a second of work), what age aims
/// at for a passphrase a person chose. Fixed rather than measured at run time as age's library
/// does, because a measurement on a loaded machine or in an unoptimised build gives a weaker
/// file for ever.
pub const DEFAULT_FILE_WORK_FACTOR: u8 = 18;
/// The largest `config.toml` read: a configuration of hundreds of profiles is a few hundred KB.
const MAX_CONFIG_FILE: usize = 16 << 20;
/// How long the file store's unlocked key is kept after its last use, by default: 15 minutes.
pub const DEFAULT_FILE_UNLOCK_TTL: Duration = Duration::from_secs(15 * 60);

/// Where the tool keeps its files. Only the encrypted-file store's folder holds secrets, and
/// only encrypted.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Folder of `config.toml`.
    pub config_dir: PathBuf,
    /// Folder of lock files.
    pub state_dir: PathBuf,
    /// Folder of the encrypted-file store (`store = "file"`); nothing else is kept there.
    pub data_dir: PathBuf,
}

impl Paths {
    /// The platform folders (`$XDG_CONFIG_HOME/xero-auth`, `$XDG_STATE_HOME/xero-auth`,
    /// `$XDG_DATA_HOME/xero-auth` on Linux), or `XERO_AUTH_CONFIG_DIR` / `XERO_AUTH_STATE_DIR` /
    /// `XERO_AUTH_DATA_DIR` when set.
    ///
    /// Every folder must be an absolute path. The refresh lock is a file in the state folder:
    /// a relative one would name a different lock file in each working folder, and two commands
    /// started in two folders would refresh the same single-use token at once. A relative
    /// variable is refused, naming it, rather than resolved against whatever folder this process
    /// happens to start in. (Relative `XDG_*` variables are ignored, as the XDG specification
    /// says; a relative `HOME` is refused like a relative variable.)
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let dirs = directories::ProjectDirs::from("", "", APP_NAME);
        // The variable when set, else the platform's folder.
        let folder = |key: &str, platform: fn(&directories::ProjectDirs) -> &Path| match env(key)
            .filter(|v| !v.is_empty())
        {
            Some(dir) if Path::new(&dir).is_absolute() => Ok(PathBuf::from(dir)),
            Some(dir) => Err(relative_folder(
                &format!("{key}={dir}"),
                &format!("give {key} an absolute path"),
            )),
            None => match dirs.as_ref().map(platform) {
                Some(dir) if dir.is_absolute() => Ok(dir.to_path_buf()),
                Some(dir) => Err(relative_folder(
                    &format!("the folder {} (made from HOME)", dir.display()),
                    &format!("set HOME to an absolute path, or {key} to one"),
                )),
                None => Err(no_home()),
            },
        };
        let config_dir = folder("XERO_AUTH_CONFIG_DIR", |d| d.config_dir())?;
        let state_dir = folder("XERO_AUTH_STATE_DIR", |d| {
            d.state_dir().unwrap_or_else(|| d.data_local_dir())
        })?;
        let data_dir = folder("XERO_AUTH_DATA_DIR", |d| d.data_dir())?;
        Ok(Paths {
            config_dir,
            state_dir,
            data_dir,
        })
    }

    /// The folder of the encrypted-file store.
    pub fn file_store_dir(&self) -> PathBuf {
        self.data_dir.join("secrets")
    }

    /// The configuration file.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }
}

fn relative_folder(what: &str, fix: &str) -> Error {
    Error::InvalidInput(format!(
        "{what} is a relative path: xero-auth's folders (and the refresh lock in the state \
         folder) would then depend on the folder each command starts in, and two commands could \
         refresh the same tokens at once. Nothing was done; {fix}"
    ))
}

fn no_home() -> Error {
    Error::InvalidInput(
        "cannot find a home folder for the configuration; set XERO_AUTH_CONFIG_DIR, XERO_AUTH_STATE_DIR and XERO_AUTH_DATA_DIR"
            .into(),
    )
}

/// Which secret store a profile uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The freedesktop Secret Service over D-Bus (GNOME Keyring, KWallet, KeePassXC).
    SecretService,
    /// The macOS login keychain.
    Keychain,
    /// Windows Credential Manager.
    CredentialManager,
    /// The Linux kernel key retention service: only when named, as it forgets on reboot.
    Keyutils,
    /// Files encrypted with a passphrase (age, scrypt) in the data folder: for machines with no
    /// keychain (servers, containers, CI), only when named.
    File,
    /// A KV version 2 engine of OpenBao or HashiCorp Vault that many machines share, only when
    /// named (`[profiles.NAME]`'s `vault_*` keys say where).
    Vault,
}

impl StoreKind {
    /// The platform's keychain.
    pub fn platform_default() -> Self {
        if cfg!(target_os = "macos") {
            StoreKind::Keychain
        } else if cfg!(target_os = "windows") {
            StoreKind::CredentialManager
        } else {
            StoreKind::SecretService
        }
    }

    /// The name used in `config.toml` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::SecretService => "secret-service",
            StoreKind::Keychain => "keychain",
            StoreKind::CredentialManager => "credential-manager",
            StoreKind::Keyutils => "keyutils",
            StoreKind::File => "file",
            StoreKind::Vault => "vault",
        }
    }

    /// Every store, in the order messages list them.
    pub const ALL: [StoreKind; 6] = [
        StoreKind::SecretService,
        StoreKind::Keychain,
        StoreKind::CredentialManager,
        StoreKind::Keyutils,
        StoreKind::File,
        StoreKind::Vault,
    ];

    /// The store named `s` (as in `config.toml`).
    pub fn parse(s: &str) -> Option<Self> {
        StoreKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// The five URLs the tool talks to. Defaults are Xero's.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Where the browser is sent to authorise.
    pub authorize: Url,
    /// The token endpoint.
    pub token: Url,
    /// The revocation endpoint (RFC 7009).
    pub revocation: Url,
    /// The connections (tenants) endpoint.
    pub connections: Url,
    /// The API base; paths are relative to it.
    pub api: Url,
}

/// Each endpoint: config key, environment variable, Xero's URL.
const ENDPOINTS: [(&str, &str, &str); 5] = [
    (
        "authorize_url",
        "XERO_AUTH_AUTHORIZE_URL",
        "https://login.xero.com/identity/connect/authorize",
    ),
    (
        "token_url",
        "XERO_AUTH_TOKEN_URL",
        "https://identity.xero.com/connect/token",
    ),
    (
        "revocation_url",
        "XERO_AUTH_REVOCATION_URL",
        "https://identity.xero.com/connect/revocation",
    ),
    (
        "connections_url",
        "XERO_AUTH_CONNECTIONS_URL",
        "https://api.xero.com/connections",
    ),
    ("api_url", "XERO_AUTH_API_URL", "https://api.xero.com/"),
];

/// The table inside a profile that holds its API limits (`[profiles.NAME.limits]`).
const LIMITS_TABLE: &str = "limits";

/// The keys of a `[profiles.NAME]` table besides the endpoints' (see [`profile_keys`]).
const SETTING_KEYS: [&str; 17] = [
    "client_id",
    "scopes",
    "redirect_uri",
    "default_tenant",
    "store",
    "file_work_factor",
    "file_unlock_ttl",
    "http_timeout",
    "store_timeout",
    "vault_addr",
    "vault_mount",
    "vault_prefix",
    "vault_namespace",
    "vault_cacert",
    "vault_role_id",
    "vault_secret_id_file",
    "vault_lease_ttl",
];

/// Every key a `[profiles.NAME]` table may hold: what [`Config::profile`] reads, what
/// `xero-auth config set` accepts, and what the unknown-key warning compares with.
pub fn profile_keys() -> impl Iterator<Item = &'static str> {
    SETTING_KEYS
        .into_iter()
        .chain(ENDPOINTS.iter().map(|(key, _, _)| *key))
}

/// The environment's override of endpoint variable `env_key`, if any. Each variable names one
/// endpoint of Xero's (or a stand-in's) and nothing else: `exec --server` gives its command
/// its own endpoint under other names (`XERO_AUTH_ENDPOINT`), so a `xero-auth` the command runs
/// takes `XERO_AUTH_TOKEN_URL` as the user set it.
fn endpoint_override(env: &dyn Fn(&str) -> Option<String>, env_key: &str) -> Option<String> {
    env(env_key).filter(|v| !v.is_empty())
}

/// One profile, resolved: config values with environment overrides and defaults applied.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The profile's name.
    pub name: String,
    /// The app's client id (from `client set`).
    pub client_id: Option<String>,
    /// Scopes requested at login (`offline_access` is always added).
    pub scopes: Vec<String>,
    /// The redirect URI registered for the app.
    pub redirect_uri: String,
    /// The tenant `api` and `exec` address by default.
    pub default_tenant: Option<String>,
    /// Which secret store holds the profile's secrets.
    pub store: StoreKind,
    /// The endpoints.
    pub endpoints: Endpoints,
    /// Timeout of one HTTP request.
    pub http_timeout: Duration,
    /// Timeout of one keychain call.
    pub store_timeout: Duration,
    /// The file store's scrypt work factor (log2 of N) for new files
    /// ([`DEFAULT_FILE_WORK_FACTOR`] unless the profile says otherwise).
    pub file_work_factor: u8,
    /// How long the file store's unlocked key is kept in the kernel after its last use
    /// (`file_unlock_ttl`, [`DEFAULT_FILE_UNLOCK_TTL`]); zero: never kept.
    pub file_unlock_ttl: Duration,
    /// Xero's API limits, kept before sending (`[profiles.NAME.limits]`).
    pub rate_limits: RateLimits,
    /// Where the vault store is and how to sign in to it (`vault_*`; used by `store = "vault"`).
    pub vault: VaultSettings,
}

/// The vault store's settings (`vault_*` keys, each overridden by `XERO_AUTH_VAULT_*`). No
/// credential is among them: the Vault token and AppRole secret id come from the environment or
/// files (see `store::vault`).
#[derive(Debug, Clone, PartialEq)]
pub struct VaultSettings {
    /// The server (`vault_addr`, else `VAULT_ADDR`, else `BAO_ADDR`); `https://`, or `http://`
    /// on loopback. The Vault token is sent to this origin only.
    pub addr: Option<Url>,
    /// Where the source of `addr` is named in messages.
    pub addr_source: String,
    /// The KV version 2 engine's mount path (`secret`), checked by [`vault_path`].
    pub mount: String,
    /// The folder of every profile's entries inside the mount (`xero-auth`).
    pub prefix: String,
    /// The Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`), else `VAULT_NAMESPACE`.
    pub namespace: Option<String>,
    /// A PEM file of the CA certificates to trust instead of the system's (`VAULT_CACERT`).
    pub cacert: Option<PathBuf>,
    /// AppRole's role id (not a secret on its own).
    pub role_id: Option<String>,
    /// A file holding AppRole's secret id (when `VAULT_SECRET_ID` is not set).
    pub secret_id_file: Option<PathBuf>,
    /// How long a refresh lease is held before other machines may take it (30 s).
    pub lease_ttl: Duration,
}

/// The defaults of the vault store's folders.
pub const DEFAULT_VAULT_MOUNT: &str = "secret";
/// See [`DEFAULT_VAULT_MOUNT`].
pub const DEFAULT_VAULT_PREFIX: &str = "xero-auth";

/// A `/`-separated path of Vault (a mount or a prefix) as it was configured, checked so that no
/// value can reach outside of it: segments of letters, digits, `-`, `_` and `.`, none empty
/// (no `//`, no leading or trailing `/`) and none `.` or `..`. `what` names the setting.
pub fn vault_path(what: &str, value: &str) -> std::result::Result<String, String> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if value.len() <= 256 && value.split('/').all(segment_ok) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{what} '{}' is not a Vault path this tool uses: give '/'-separated names of letters, \
             digits, '-', '_' or '.', without empty parts, '.' or '..' (e.g. 'secret' or 'teams/xero-auth')",
            value.escape_debug()
        ))
    }
}

/// Xero's API limits for one app, which every request sent through a session keeps before
/// Xero has to refuse it (`[profiles.NAME.limits]`; defaults are Xero's published limits,
/// which Xero raises for some partners).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// False for a program that does its own limiting (`enabled = false`, or
    /// `XERO_AUTH_LIMITS=off`).
    pub enabled: bool,
    /// Requests in progress at once per connected organisation (5).
    pub concurrent: u32,
    /// Requests per minute per organisation (60).
    pub per_minute: u32,
    /// Requests per rolling 24 hours per organisation (5,000).
    pub per_day: u32,
    /// Requests per minute for the app across organisations (10,000).
    pub app_per_minute: u32,
    /// The length of Xero's "minute". Always 60 s against Xero; a test server can use a short
    /// one (`window_secs`, `XERO_AUTH_LIMIT_WINDOW`) so that tests do not take minutes.
    pub window: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            enabled: true,
            concurrent: 5,
            per_minute: 60,
            per_day: 5_000,
            app_per_minute: 10_000,
            window: Duration::from_secs(60),
        }
    }
}

impl Profile {
    /// The value in effect for `key` (one of [`profile_keys`]), as `config.toml` would spell it;
    /// `None` when it has none (no client id, no default tenant, no scopes).
    pub fn value_of(&self, key: &str) -> Option<String> {
        let secs = |d: Duration| d.as_secs_f64().to_string();
        let e = &self.endpoints;
        match key {
            "client_id" => self.client_id.clone(),
            "scopes" => (!self.scopes.is_empty()).then(|| self.scopes.join(" ")),
            "redirect_uri" => Some(self.redirect_uri.clone()),
            "default_tenant" => self.default_tenant.clone(),
            "store" => Some(self.store.name().to_string()),
            "file_work_factor" => Some(self.file_work_factor.to_string()),
            "file_unlock_ttl" => Some(self.file_unlock_ttl.as_secs().to_string()),
            "http_timeout" => Some(secs(self.http_timeout)),
            "store_timeout" => Some(secs(self.store_timeout)),
            "vault_addr" => self.vault.addr.as_ref().map(Url::to_string),
            "vault_mount" => Some(self.vault.mount.clone()),
            "vault_prefix" => Some(self.vault.prefix.clone()),
            "vault_namespace" => self.vault.namespace.clone(),
            "vault_cacert" => self.vault.cacert.as_ref().map(|p| p.display().to_string()),
            "vault_role_id" => self.vault.role_id.clone(),
            "vault_secret_id_file" => self
                .vault
                .secret_id_file
                .as_ref()
                .map(|p| p.display().to_string()),
            "vault_lease_ttl" => Some(secs(self.vault.lease_ttl)),
            "authorize_url" => Some(e.authorize.to_string()),
            "token_url" => Some(e.token.to_string()),
            "revocation_url" => Some(e.revocation.to_string()),
            "connections_url" => Some(e.connections.to_string()),
            "api_url" => Some(e.api.to_string()),
            _ => None,
        }
    }
}

/// The configuration file, kept as a document so that writes preserve the user's comments.
#[derive(Debug)]
pub struct Config {
    path: PathBuf,
    doc: DocumentMut,
    /// The file as it was read, with the byte positions of its keys and tables, to say where a
    /// problem is (edits go to `doc`; this one is not changed).
    read: Document<String>,
    warnings: Vec<String>,
}

impl Config {
    /// Loads `config.toml`; a missing file is an empty configuration.
    ///
    /// The file decides where the client secret and the refresh token are sent (its endpoints),
    /// so it passes [`private_fs`]'s check first: its folder the user's alone (a loose one is
    /// tightened), no folder above it that another user can change, and the file itself the
    /// user's, changed by no one else. Anything else is refused (exit 1), naming it.
    pub fn load(path: &Path) -> Result<Self> {
        Config::load_as(path, FileKind::Own)
    }

    /// [`Config::load`] for `doctor`, which changes nothing: a loose folder is not tightened, and
    /// a file the check refuses reads as an empty configuration (`doctor` reports the refusal
    /// itself).
    pub fn load_unchanged(path: &Path) -> Result<Self> {
        match Config::load_as(path, FileKind::Named) {
            Err(Error::Untrusted { .. }) => Config::from_str(path, ""),
            other => other,
        }
    }

    fn load_as(path: &Path, kind: FileKind) -> Result<Self> {
        let bytes = private_fs::read_file(
            path,
            kind,
            MAX_CONFIG_FILE,
            "if you did not make it so, check that its endpoints are Xero's or yours, then \
             `chmod go-w` it (and `chmod 700` its folder); a file another user owns is theirs, not \
             yours: remove it",
        )?;
        let text = match bytes {
            Some(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| Error::Config {
                path: path.to_path_buf(),
                at: None,
                message: "not UTF-8 text".into(),
            })?,
            None => String::new(),
        };
        Config::from_str(path, &text)
    }

    /// Parses `text` as the configuration file at `path` (named in messages and used by
    /// [`Config::save`]; not read).
    pub fn from_str(path: &Path, text: &str) -> Result<Self> {
        let read = Document::parse(text.to_string()).map_err(|e| {
            let at = e.span().map(|span| line_and_column(text, span.start));
            // The line itself, as a compiler shows it: the position alone is hard to count to.
            let shown = at
                .and_then(|(line, _)| Some((line, text.lines().nth(line - 1)?)))
                .map(|(line, source)| format!("\n  {line} | {source}"))
                .unwrap_or_default();
            Error::Config {
                path: path.to_path_buf(),
                at,
                message: format!("not valid TOML: {}{shown}", e.message().trim_end()),
            }
        })?;
        let mut config = Config {
            path: path.to_path_buf(),
            doc: read.clone().into_mut(),
            read,
            warnings: Vec::new(),
        };
        config.warnings = config.unknown_keys();
        Ok(config)
    }

    /// What in the file is not read, said once each with the line and the name most likely
    /// meant (`scope` → `scopes`, `[profile.x]` → `[profiles.x]`). Only warnings: the file may
    /// have been written for a newer version, and everything else in it still works.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn unknown_keys(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut warn = |span: Option<std::ops::Range<usize>>, what: String| {
            let line = span
                .map(|s| format!(", line {}", line_and_column(self.read.raw(), s.start).0))
                .unwrap_or_default();
            found.push(format!("{}{line}: {what}", self.path.display()));
        };
        for (key, item) in self.read.as_table().iter() {
            let span = self.read.as_table().key(key).and_then(|k| k.span());
            if key == "profiles" {
                let Some(profiles) = item.as_table() else {
                    continue; // a type error, reported when profiles are read
                };
                for (name, profile) in profiles.iter() {
                    let Some(table) = profile.as_table() else {
                        continue;
                    };
                    for (k, _) in table.iter() {
                        // `[profiles.NAME.limits]` is a table of its own, read by `rate_limits`.
                        if k == LIMITS_TABLE || profile_keys().any(|known| known == k) {
                            continue;
                        }
                        let meant = closest(k, profile_keys())
                            .map(|m| format!(": did you mean `{m}`?"))
                            .unwrap_or_default();
                        let span = table.key(k).and_then(|k| k.span());
                        warn(
                            span,
                            format!("unknown key `{k}` in [profiles.{name}], ignored{meant}"),
                        );
                    }
                }
            } else if profile_keys().any(|known| known == key) {
                warn(
                    span,
                    format!(
                        "`{key}` is outside any [profiles.NAME] table, ignored: put it under \
                         [profiles.{DEFAULT_PROFILE}]"
                    ),
                );
            } else {
                let meant = closest(key, ["profiles"]);
                match item.as_table() {
                    // `[profile.default]`: name each table the way it was meant.
                    Some(table) if table.iter().next().is_some() => {
                        for (name, sub) in table.iter() {
                            let span = sub.as_table().and_then(Table::span).or(span.clone());
                            let hint = meant
                                .map(|m| format!(": did you mean [{m}.{name}]?"))
                                .unwrap_or_default();
                            warn(span, format!("unknown table [{key}.{name}], ignored{hint}"));
                        }
                    }
                    _ => {
                        let hint = meant
                            .map(|m| format!(": did you mean `{m}`?"))
                            .unwrap_or_default();
                        warn(span, format!("unknown key `{key}`, ignored{hint}"));
                    }
                }
            }
        }
        found
    }

    /// The file this configuration came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the profiles in the file. An empty table (`[profiles.NAME]` with no key left)
    /// sets nothing, and is no profile.
    pub fn profile_names(&self) -> Vec<String> {
        self.doc
            .get("profiles")
            .and_then(Item::as_table)
            .map(|t| {
                t.iter()
                    .filter(|(_, item)| item.as_table().is_none_or(|t| !t.is_empty()))
                    .map(|(k, _)| k.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `profiles.NAME.KEY` as written in the file, if it is a value.
    pub fn raw_value(&self, profile: &str, key: &str) -> Option<&Value> {
        self.doc
            .get("profiles")?
            .as_table()?
            .get(profile)?
            .as_table()?
            .get(key)?
            .as_value()
    }

    /// Whether `config.toml` has a `[profiles.NAME]` table.
    pub fn has_profile(&self, name: &str) -> bool {
        self.profile_names().iter().any(|n| n == name)
    }

    fn profile_table(&self, name: &str) -> Result<Option<&Table>> {
        let Some(profiles) = self.doc.get("profiles") else {
            return Ok(None);
        };
        let profiles = profiles.as_table().ok_or_else(|| {
            self.error(
                &["profiles"],
                "`profiles` must be a table of [profiles.NAME] tables",
            )
        })?;
        match profiles.get(name) {
            None => Ok(None),
            Some(item) => item.as_table().map(Some).ok_or_else(|| {
                self.error(
                    &["profiles", name],
                    &format!("`profiles.{name}` must be a table"),
                )
            }),
        }
    }

    /// `file_work_factor` / `XERO_AUTH_FILE_WORK_FACTOR`: log2 of scrypt's N for new files of
    /// the file store, 10 to 22 (1 MiB to 4 GiB of memory per attempt at the passphrase).
    fn file_work_factor(
        &self,
        name: &str,
        table: Option<&Table>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<u8> {
        let valid = |n: i64| (FILE_WORK_FACTORS.0 as i64..=FILE_WORK_FACTORS.1 as i64).contains(&n);
        let (lo, hi) = FILE_WORK_FACTORS;
        if let Some(v) = env("XERO_AUTH_FILE_WORK_FACTOR").filter(|v| !v.is_empty()) {
            return match v.trim().parse::<i64>() {
                Ok(n) if valid(n) => Ok(n as u8),
                _ => Err(Error::InvalidInput(format!(
                    "XERO_AUTH_FILE_WORK_FACTOR={v} is not a whole number from {lo} to {hi}"
                ))),
            };
        }
        match table.and_then(|t| t.get("file_work_factor")) {
            None => Ok(DEFAULT_FILE_WORK_FACTOR),
            Some(item) => match item.as_integer() {
                Some(n) if valid(n) => Ok(n as u8),
                _ => Err(self.error(
                    &["profiles", name, "file_work_factor"],
                    &format!(
                        "`profiles.{name}.file_work_factor` must be a whole number from {lo} to {hi}"
                    ),
                )),
            },
        }
    }

    /// `file_unlock_ttl` / `XERO_AUTH_FILE_UNLOCK_TTL`: whole seconds from 0 (never keep the
    /// file store's unlocked key) to a week.
    fn file_unlock_ttl(
        &self,
        name: &str,
        table: Option<&Table>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Duration> {
        const MAX: i64 = 7 * 86_400;
        let valid = |n: i64| (0..=MAX).contains(&n);
        if let Some(v) = env("XERO_AUTH_FILE_UNLOCK_TTL").filter(|v| !v.is_empty()) {
            return match v.trim().parse::<i64>() {
                Ok(n) if valid(n) => Ok(Duration::from_secs(n as u64)),
                _ => Err(Error::InvalidInput(format!(
                    "XERO_AUTH_FILE_UNLOCK_TTL={v} is not a whole number of seconds from 0 to {MAX}"
                ))),
            };
        }
        match table.and_then(|t| t.get("file_unlock_ttl")) {
            None => Ok(DEFAULT_FILE_UNLOCK_TTL),
            Some(item) => match item.as_integer() {
                Some(n) if valid(n) => Ok(Duration::from_secs(n as u64)),
                _ => Err(self.error(
                    &["profiles", name, "file_unlock_ttl"],
                    &format!(
                        "`profiles.{name}.file_unlock_ttl` must be a whole number of seconds from \
                         0 (never keep the key) to {MAX}"
                    ),
                )),
            },
        }
    }

    /// `[profiles.NAME.limits]`: `enabled`, `concurrent`, `per_minute`, `per_day`,
    /// `app_per_minute`, `window_secs`; `XERO_AUTH_LIMITS=off` and `XERO_AUTH_LIMIT_WINDOW`
    /// override the first and the last.
    fn rate_limits(
        &self,
        name: &str,
        table: Option<&Table>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RateLimits> {
        let mut limits = RateLimits::default();
        let limits_table = match table.and_then(|t| t.get(LIMITS_TABLE)) {
            None => None,
            Some(item) => Some(item.as_table_like().ok_or_else(|| {
                self.error(
                    &["profiles", name, "limits"],
                    &format!("`profiles.{name}.limits` must be a table"),
                )
            })?),
        };
        let key_error = |key: &str, what: &str| {
            self.error(
                &["profiles", name, "limits", key],
                &format!("`profiles.{name}.limits.{key}` must be {what}"),
            )
        };
        if let Some(t) = limits_table {
            if let Some(item) = t.get("enabled") {
                limits.enabled = item
                    .as_bool()
                    .ok_or_else(|| key_error("enabled", "true or false"))?;
            }
            for (key, field) in [
                ("concurrent", &mut limits.concurrent),
                ("per_minute", &mut limits.per_minute),
                ("per_day", &mut limits.per_day),
                ("app_per_minute", &mut limits.app_per_minute),
            ] {
                if let Some(item) = t.get(key) {
                    *field = item
                        .as_integer()
                        .filter(|n| (1..=10_000_000).contains(n))
                        .ok_or_else(|| key_error(key, "a whole number from 1 to 10000000"))?
                        as u32;
                }
            }
        }
        let window_range = |s: &f64| (0.1..=3600.0).contains(s);
        let window = match env("XERO_AUTH_LIMIT_WINDOW").filter(|v| !v.is_empty()) {
            Some(v) => Some(v.trim().parse::<f64>().ok().filter(window_range).ok_or_else(
                || {
                    Error::InvalidInput(format!(
                        "XERO_AUTH_LIMIT_WINDOW={v} is not a number of seconds between 0.1 and 3600"
                    ))
                },
            )?),
            None => match limits_table.and_then(|t| t.get("window_secs")) {
                None => None,
                Some(item) => Some(
                    item.as_integer()
                        .map(|i| i as f64)
                        .or_else(|| item.as_float())
                        .filter(window_range)
                        .ok_or_else(|| {
                            key_error("window_secs", "a number of seconds between 0.1 and 3600")
                        })?,
                ),
            },
        };
        if let Some(secs) = window {
            limits.window = Duration::from_secs_f64(secs);
        }
        match env("XERO_AUTH_LIMITS").filter(|v| !v.is_empty()).as_deref() {
            None => {}
            Some("off") => limits.enabled = false,
            Some("on") => limits.enabled = true,
            Some(v) => {
                return Err(Error::InvalidInput(format!(
                    "XERO_AUTH_LIMITS={v} is neither `on` nor `off`"
                )));
            }
        }
        Ok(limits)
    }

    /// A configuration error about the item at `keys` (placed in the file as it was read).
    fn error(&self, keys: &[&str], message: &str) -> Error {
        Error::Config {
            path: self.path.clone(),
            at: self.position(keys),
            message: message.to_string(),
        }
    }

    /// Line and column of the item at `keys` in the file as it was read: its key, or for a table
    /// its header.
    fn position(&self, keys: &[&str]) -> Option<(usize, usize)> {
        let (last, parents) = keys.split_last()?;
        let mut table = self.read.as_table();
        for key in parents {
            table = table.get(key)?.as_table()?;
        }
        let span = table
            .key(last)
            .and_then(|k| k.span())
            .or_else(|| table.get(last)?.as_table()?.span())?;
        Some(line_and_column(self.read.raw(), span.start))
    }

    /// Resolves profile `name`: the file's values, then the environment's overrides, then defaults.
    pub fn profile(&self, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Profile> {
        validate_profile_name(name)?;
        let table = self.profile_table(name)?;
        let get_str = |key: &str| -> Result<Option<String>> {
            match table.and_then(|t| t.get(key)) {
                None => Ok(None),
                Some(item) => item.as_str().map(|s| Some(s.to_string())).ok_or_else(|| {
                    self.error(
                        &["profiles", name, key],
                        &format!("`profiles.{name}.{key}` must be a string"),
                    )
                }),
            }
        };
        // A timeout shorter than a millisecond (say `1e-300`, which is 0 as a Duration) would
        // fail every request and keychain call at once: refused like a negative one.
        let in_range = |s: &f64| (0.001..86_400.0).contains(s);
        let get_secs = |key: &str, env_key: &str, default: u64| -> Result<Duration> {
            let from_env = env(env_key).filter(|v| !v.is_empty());
            let secs = match from_env {
                Some(v) => v.parse::<f64>().ok().filter(in_range).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "{env_key}={v} is not a number of seconds between 0.001 and 86400"
                    ))
                })?,
                None => match table.and_then(|t| t.get(key)) {
                    None => default as f64,
                    Some(item) => item
                        .as_integer()
                        .map(|i| i as f64)
                        .or_else(|| item.as_float())
                        .filter(in_range)
                        .ok_or_else(|| {
                            self.error(&["profiles", name, key], &format!(
                                "`profiles.{name}.{key}` must be a number of seconds between 0.001 and 86400"
                            ))
                        })?,
                },
            };
            Ok(Duration::from_secs_f64(secs))
        };

        let mut urls = Vec::with_capacity(ENDPOINTS.len());
        for (key, env_key, default) in ENDPOINTS {
            let (value, source) = match endpoint_override(env, env_key) {
                Some(v) => (v, format!("environment variable {env_key}")),
                None => match get_str(key)? {
                    Some(v) => (
                        v,
                        format!("`profiles.{name}.{key}` in {}", self.path.display()),
                    ),
                    None => (default.to_string(), "default".to_string()),
                },
            };
            urls.push(
                parse_endpoint(&value)
                    .map_err(|why| Error::InvalidInput(format!("{source}: {why}")))?,
            );
        }
        let [authorize, token, revocation, connections, api]: [Url; 5] =
            urls.try_into().expect("five endpoints");

        let scopes = match table.and_then(|t| t.get("scopes")) {
            None => Vec::new(),
            Some(item) => parse_scopes(item).ok_or_else(|| {
                self.error(
                    &["profiles", name, "scopes"],
                    &format!(
                        "`profiles.{name}.scopes` must be a space-separated string or an array of strings"
                    ),
                )
            })?,
        };

        let store = match env("XERO_AUTH_STORE").filter(|v| !v.is_empty()) {
            Some(v) => Some((v, "environment variable XERO_AUTH_STORE".to_string())),
            None => get_str("store")?.map(|v| (v, format!("`profiles.{name}.store`"))),
        };
        let store = match store {
            None => StoreKind::platform_default(),
            Some((v, source)) => StoreKind::parse(&v).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{source} names an unknown store '{v}': use secret-service, keychain, credential-manager, keyutils, file or vault"
                ))
            })?,
        };

        let redirect_uri = get_str("redirect_uri")?.unwrap_or_else(|| DEFAULT_REDIRECT_URI.into());
        Ok(Profile {
            name: name.to_string(),
            client_id: get_str("client_id")?.filter(|s| !s.is_empty()),
            scopes,
            redirect_uri,
            default_tenant: get_str("default_tenant")?.filter(|s| !s.is_empty()),
            store,
            endpoints: Endpoints {
                authorize,
                token,
                revocation,
                connections,
                api,
            },
            http_timeout: get_secs("http_timeout", "XERO_AUTH_HTTP_TIMEOUT", 30)?,
            store_timeout: get_secs("store_timeout", "XERO_AUTH_STORE_TIMEOUT", 30)?,
            file_work_factor: self.file_work_factor(name, table, env)?,
            file_unlock_ttl: self.file_unlock_ttl(name, table, env)?,
            rate_limits: self.rate_limits(name, table, env)?,
            vault: self.vault_settings(name, &get_str, &get_secs, env)?,
        })
    }

    /// The `vault_*` keys: `XERO_AUTH_VAULT_*` overrides the file, which overrides the Vault
    /// CLI's own variables (`VAULT_ADDR`, `BAO_ADDR`, `VAULT_NAMESPACE`, `VAULT_CACERT`), so
    /// that a machine already set up for the `vault` or `bao` command needs nothing more.
    fn vault_settings(
        &self,
        name: &str,
        get_str: &dyn Fn(&str) -> Result<Option<String>>,
        get_secs: &dyn Fn(&str, &str, u64) -> Result<Duration>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<VaultSettings> {
        // The first of: the XERO_AUTH_ variable, the file's key, the CLI's variables; with its
        // source for messages.
        let pick = |key: &str, cli_vars: &[&str]| -> Result<Option<(String, String)>> {
            let ours = format!("XERO_AUTH_{}", key.to_ascii_uppercase());
            if let Some(v) = env(&ours).filter(|v| !v.is_empty()) {
                return Ok(Some((v, format!("environment variable {ours}"))));
            }
            if let Some(v) = get_str(key)?.filter(|v| !v.is_empty()) {
                return Ok(Some((v, format!("`profiles.{name}.{key}`"))));
            }
            Ok(cli_vars.iter().find_map(|var| {
                env(var)
                    .filter(|v| !v.is_empty())
                    .map(|v| (v, format!("environment variable {var}")))
            }))
        };
        let (addr, addr_source) = match pick("vault_addr", &["VAULT_ADDR", "BAO_ADDR"])? {
            None => (None, String::new()),
            Some((v, source)) => {
                let url = parse_endpoint(&v)
                    .and_then(|url| match (url.path(), url.query(), url.fragment()) {
                        ("/" | "", None, None) => Ok(url),
                        _ => Err(format!(
                            "'{}' has a path, query or fragment; give the server's address only, e.g. https://vault.example.com:8200",
                            shown(&url)
                        )),
                    })
                    .map_err(|why| Error::InvalidInput(format!("{source}: {why}")))?;
                (Some(url), source)
            }
        };
        let folder = |key: &str, default: &str| -> Result<String> {
            let (value, source) = pick(key, &[])?.unwrap_or((default.into(), "default".into()));
            vault_path(key, &value).map_err(|why| Error::InvalidInput(format!("{source}: {why}")))
        };
        let namespace = match pick("vault_namespace", &["VAULT_NAMESPACE", "BAO_NAMESPACE"])? {
            None => None,
            Some((v, source)) => Some(
                vault_path("vault_namespace", v.trim_end_matches('/'))
                    .map_err(|why| Error::InvalidInput(format!("{source}: {why}")))?,
            ),
        };
        let path = |key: &str, cli_vars: &[&str]| -> Result<Option<PathBuf>> {
            Ok(pick(key, cli_vars)?.map(|(v, _)| PathBuf::from(v)))
        };
        Ok(VaultSettings {
            addr,
            addr_source,
            mount: folder("vault_mount", DEFAULT_VAULT_MOUNT)?,
            prefix: folder("vault_prefix", DEFAULT_VAULT_PREFIX)?,
            namespace,
            cacert: path("vault_cacert", &["VAULT_CACERT", "BAO_CACERT"])?,
            role_id: pick("vault_role_id", &[])?.map(|(v, _)| v),
            secret_id_file: path("vault_secret_id_file", &[])?,
            lease_ttl: get_secs("vault_lease_ttl", "XERO_AUTH_VAULT_LEASE_TTL", 30)?,
        })
    }

    /// Sets `profiles.NAME.KEY` (creating the profile), keeping everything else.
    pub fn set(&mut self, profile: &str, key: &str, value: impl Into<Value>) -> Result<()> {
        validate_profile_name(profile)?;
        self.profile_table(profile)?; // type-check what is there before changing it
        let profiles = self.doc.entry("profiles").or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        let table = profiles
            .as_table_mut()
            .expect("checked above")
            .entry(profile)
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .expect("checked above");
        let mut value = value.into();
        // A value replaced in place keeps what surrounds it: a comment after it, the line break.
        if let Some(old) = table.get(key).and_then(Item::as_value) {
            *value.decor_mut() = old.decor().clone();
        }
        table[key] = Item::Value(value);
        Ok(())
    }

    /// Sets `profiles.NAME.KEY` from text as a person types it (`xero-auth config set`): KEY
    /// must be one of [`profile_keys`], the text becomes the TOML type the key is read as when
    /// it parses as one, and the profile must then resolve — through the same code every command
    /// reads it with, environment aside — or nothing is changed and that code's message is the
    /// error.
    pub fn set_checked(&mut self, profile: &str, key: &str, text: &str) -> Result<()> {
        if !profile_keys().any(|k| k == key) {
            let meant = closest(key, profile_keys())
                .map(|m| format!("did you mean `{m}`? "))
                .unwrap_or_default();
            return Err(Error::InvalidInput(format!(
                "unknown key `{key}`: {meant}the keys are {}",
                profile_keys().collect::<Vec<_>>().join(", ")
            )));
        }
        let value = match key {
            "file_work_factor" | "file_unlock_ttl" => text.parse::<i64>().map(Value::from).ok(),
            "http_timeout" | "store_timeout" | "vault_lease_ttl" => {
                (text.parse::<i64>().map(Value::from).ok())
                    .or_else(|| text.parse::<f64>().ok().map(Value::from))
            }
            _ => None,
        }
        .unwrap_or_else(|| Value::from(text));
        let before = self.doc.clone();
        self.set(profile, key, value)?;
        let checked = self.checked(profile);
        if checked.is_err() {
            self.doc = before;
        }
        checked
    }

    /// Resolves `profile` from the document as it is now, without the environment's overrides,
    /// which would hide the file's values.
    fn checked(&self, profile: &str) -> Result<()> {
        // Positions stay the file's as read: an edited key is still on its line, a new one has
        // none.
        let edited = Config {
            path: self.path.clone(),
            read: self.read.clone(),
            doc: self.doc.clone(),
            warnings: Vec::new(),
        };
        edited.profile(profile, &|_| None).map(|_| ())
    }

    /// Removes `profiles.NAME.KEY`; true when it was there. A table left empty goes too: it
    /// would set nothing, yet read as a profile.
    pub fn remove(&mut self, profile: &str, key: &str) -> Result<bool> {
        self.profile_table(profile)?;
        let Some(profiles) = self.doc.get_mut("profiles").and_then(Item::as_table_mut) else {
            return Ok(false);
        };
        let Some(table) = profiles.get_mut(profile).and_then(Item::as_table_mut) else {
            return Ok(false);
        };
        let removed = table.remove(key).is_some();
        if removed && table.is_empty() {
            profiles.remove(profile);
        }
        Ok(removed)
    }

    /// Removes the `[profiles.NAME]` table; true when it was there.
    pub fn remove_profile(&mut self, profile: &str) -> Result<bool> {
        self.profile_table(profile)?;
        Ok(self
            .doc
            .get_mut("profiles")
            .and_then(Item::as_table_mut)
            .is_some_and(|p| p.remove(profile).is_some()))
    }

    /// The keys `config.toml` sets for `profile`, with their values as written (TOML).
    pub fn raw_settings(&self, profile: &str) -> Vec<(String, Value)> {
        self.doc
            .get("profiles")
            .and_then(Item::as_table)
            .and_then(|p| p.get(profile))
            .and_then(Item::as_table)
            .map(|t| {
                t.iter()
                    .filter_map(|(k, item)| Some((k.to_string(), item.as_value()?.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes the file atomically ([`private_fs::replace_file`]) in its folder, made the user's
    /// alone first.
    pub fn save(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        private_fs::private_folder(dir)?;
        private_fs::replace_file(&self.path, self.doc.to_string().as_bytes())
            .map_err(|e| Error::io("cannot write the configuration file", &self.path, e))
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    // The parser's offset, moved back to a character boundary: slicing elsewhere would panic.
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The candidate closest to `word` when it is close enough to be what was meant: a typo or two
/// away, or `word` cut short or run on (`scope` for `scopes`, `redirect` for `redirect_uri`).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(distance, c)| {
            *distance <= 2 || (word.len() >= 4 && (c.starts_with(word) || word.starts_with(c)))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Profile names become keychain account names and file names: keep them plain.
pub fn validate_profile_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid profile name '{}': use 1-64 letters, digits, '-', '_' or '.'",
            name.escape_debug()
        )))
    }
}

fn parse_scopes(item: &Item) -> Option<Vec<String>> {
    if let Some(s) = item.as_str() {
        return Some(s.split_whitespace().map(String::from).collect());
    }
    let array = item.as_array()?;
    array.iter().map(|v| v.as_str().map(String::from)).collect()
}

/// Accepts `https://` anywhere and `http://` only on a loopback host, and no user name or
/// password in the URL: an endpoint gets the app's own credentials (reqwest would turn user info
/// into a second `Authorization` header, and the URL itself is not kept as a secret).
pub fn parse_endpoint(value: &str) -> std::result::Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("'{value}' is not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "'{}' was given with a user name or password in it; endpoints take none \
             (xero-auth sends the app's credentials itself): remove them",
            shown(&url)
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "'{value}' uses plain http:// on a host that is not loopback; use https://"
        )),
        other => Err(format!("'{value}' has scheme '{other}'; use https://")),
    }
}

/// A URL as messages show it: without user info and query, which may carry credentials or data.
pub fn shown(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

/// True for `localhost`, 127.0.0.0/8 and ::1.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        (dir, config)
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_xeros_endpoints_and_the_platform_store() {
        let (_d, config) = load("");
        let p = config.profile("default", &env(&[])).unwrap();
        assert_eq!(
            p.endpoints.token.as_str(),
            "https://identity.xero.com/connect/token"
        );
        assert_eq!(p.endpoints.api.as_str(), "https://api.xero.com/");
        assert_eq!(p.redirect_uri, DEFAULT_REDIRECT_URI);
        assert_eq!(p.store, StoreKind::platform_default());
        assert!(p.client_id.is_none() && p.scopes.is_empty());
    }

    #[test]
    fn profile_values_and_env_overrides_apply_one_by_one() {
        let (_d, config) = load(
            r#"
[profiles.work]
client_id = "ABC"
scopes = "openid offline_access"
token_url = "http://127.0.0.1:9/token"
api_url = "https://api.example.test/"
store = "keyutils"
http_timeout = 5
"#,
        );
        let e = env(&[("XERO_AUTH_API_URL", "http://localhost:8080/")]);
        let p = config.profile("work", &e).unwrap();
        assert_eq!(p.client_id.as_deref(), Some("ABC"));
        assert_eq!(p.scopes, vec!["openid", "offline_access"]);
        assert_eq!(p.endpoints.token.as_str(), "http://127.0.0.1:9/token");
        assert_eq!(p.endpoints.api.as_str(), "http://localhost:8080/");
        assert_eq!(
            p.endpoints.revocation.as_str(),
            "https://identity.xero.com/connect/revocation"
        );
        assert_eq!(p.store, StoreKind::Keyutils);
        assert_eq!(p.http_timeout, Duration::from_secs(5));
    }

    #[test]
    fn the_token_url_variable_moves_the_identity_token_endpoint_whatever_else_is_set() {
        let (_d, config) =
            load("[profiles.default]\ntoken_url = \"http://127.0.0.1:9/connect/token\"\n");
        // Inside `exec --server`: the command's endpoint has names of its own, and a key of the
        // retired name changes nothing.
        let inside = env(&[
            ("XERO_AUTH_TOKEN_URL", "http://127.0.0.1:4321/connect/token"),
            ("XERO_AUTH_ENDPOINT", "http://127.0.0.1:5555/token"),
            ("XERO_AUTH_ENDPOINT_KEY", "k"),
            ("XERO_AUTH_TOKEN_KEY", "k"),
        ]);
        let p = config.profile("default", &inside).unwrap();
        assert_eq!(
            p.endpoints.token.as_str(),
            "http://127.0.0.1:4321/connect/token"
        );
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        assert!(parse_endpoint("http://127.0.0.1:1/x").is_ok());
        assert!(parse_endpoint("http://[::1]:1/x").is_ok());
        assert!(parse_endpoint("http://localhost/x").is_ok());
        assert!(
            parse_endpoint("http://identity.xero.com/x")
                .unwrap_err()
                .contains("https://")
        );
        assert!(parse_endpoint("http://127.0.0.1.evil.test/x").is_err());
        for with_user_info in [
            "https://user:s3cret@identity.xero.com/connect/token",
            "https://user@api.xero.com/",
            "http://:s3cret@127.0.0.1:1/x",
        ] {
            let err = parse_endpoint(with_user_info).unwrap_err();
            assert!(
                err.contains("user name or password") && !err.contains("s3cret"),
                "{err}"
            );
        }
        assert!(parse_endpoint("ftp://127.0.0.1/x").is_err());
        let (_d, config) = load("");
        let err = config
            .profile(
                "default",
                &env(&[("XERO_AUTH_TOKEN_URL", "http://10.0.0.1/token")]),
            )
            .unwrap_err();
        assert!(err.to_string().contains("XERO_AUTH_TOKEN_URL"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let (_d, config) = load("[profiles.default]\nscopes = 5\n");
        let err = config
            .profile("default", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("profiles.default.scopes"), "{err}");
        let (_d, config) = load("[profiles.default]\nstore = \"plaintext\"\n");
        let err = config
            .profile("default", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown store 'plaintext'"), "{err}");
    }

    #[test]
    fn set_keeps_comments_and_other_profiles() {
        let (_d, mut config) = load("# mine\n[profiles.other]\nclient_id = \"X\"\n");
        config.set("default", "client_id", "NEW").unwrap();
        config.save().unwrap();
        let text = std::fs::read_to_string(config.path()).unwrap();
        assert!(
            text.contains("# mine") && text.contains("client_id = \"X\"") && text.contains("NEW"),
            "{text}"
        );
        let again = Config::load(config.path()).unwrap();
        assert_eq!(
            again
                .profile("default", &env(&[]))
                .unwrap()
                .client_id
                .as_deref(),
            Some("NEW")
        );
        assert_eq!(again.profile_names(), vec!["other", "default"]);
    }

    /// The temporary file's name is predictable: a link planted under it must not make the save
    /// write through it, nor leave `config.toml` a link.
    #[test]
    #[cfg(unix)]
    fn saving_never_writes_through_a_link_at_the_temporary_name() {
        let (dir, mut config) = load("");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"not the configuration").unwrap();
        let tmp = dir
            .path()
            .join(format!(".config.toml.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        config.set("default", "client_id", "ABC").unwrap();
        config.save().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"not the configuration");
        let saved = config.path();
        assert!(!saved.is_symlink(), "config.toml is a file of its own");
        assert!(std::fs::read_to_string(saved).unwrap().contains("ABC"));
    }

    /// Found while writing the `config` fuzz target (fuzz/fuzz_targets/config.rs asserts a
    /// timeout is never zero): `1e-300` passed the "> 0" check and became a zero Duration.
    #[test]
    fn timeouts_below_a_millisecond_are_refused() {
        let (_dir, config) = load("[profiles.default]\nhttp_timeout = 1e-300\n");
        let err = config.profile("default", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("between 0.001 and 86400"), "{err}");
        let (_dir, config) = load("[profiles.default]\nstore_timeout = 0.001\n");
        let p = config.profile("default", &env(&[])).unwrap();
        assert_eq!(p.store_timeout, Duration::from_millis(1));
        let (_dir, config) = load("");
        let err = config
            .profile("default", &env(&[("XERO_AUTH_HTTP_TIMEOUT", "5e-10")]))
            .unwrap_err();
        assert!(err.to_string().contains("XERO_AUTH_HTTP_TIMEOUT"), "{err}");
    }

    #[test]
    fn the_closest_name_is_suggested_only_when_close() {
        let keys = || profile_keys();
        assert_eq!(closest("scope", keys()), Some("scopes"));
        assert_eq!(closest("client-id", keys()), Some("client_id"));
        assert_eq!(closest("redirect", keys()), Some("redirect_uri"));
        assert_eq!(closest("profile", ["profiles"]), Some("profiles"));
        assert_eq!(closest("flavour", keys()), None);
        assert_eq!(closest("prod", ["default", "imp"]), None);
    }

    /// The example in docs/configuration.md is read without a warning, and names every key the
    /// reader knows: the list of keys and the documentation cannot drift apart.
    #[test]
    fn the_documented_example_uses_every_key_and_only_known_ones() {
        let doc = include_str!("../docs/configuration.md");
        let example = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block in docs/configuration.md");
        let (_d, config) = load(example);
        assert_eq!(config.warnings(), &[] as &[String]);
        for key in profile_keys() {
            assert!(
                example.contains(&format!("\n{key} = ")),
                "docs/configuration.md's example lacks {key}"
            );
        }
    }

    #[test]
    fn set_checked_refuses_what_the_reader_refuses_and_changes_nothing() {
        let (_d, mut config) = load("[profiles.default]\nclient_id = \"A\" # mine\n");
        let before = config.doc.to_string();
        for (key, value) in [
            ("store", "plaintext"),
            ("file_work_factor", "9"),
            ("store_timeout", "0"),
            ("api_url", "ftp://127.0.0.1/"),
            ("scope", "openid"),
        ] {
            assert!(config.set_checked("default", key, value).is_err(), "{key}");
            assert_eq!(config.doc.to_string(), before, "{key}");
        }
        config.set_checked("default", "client_id", "B").unwrap();
        config
            .set_checked("default", "store_timeout", "2.5")
            .unwrap();
        config
            .set_checked("default", "file_work_factor", "12")
            .unwrap();
        assert_eq!(
            config.doc.to_string(),
            "[profiles.default]\nclient_id = \"B\" # mine\nstore_timeout = 2.5\nfile_work_factor = 12\n"
        );
        let p = config.profile("default", &env(&[])).unwrap();
        assert_eq!(p.value_of("store_timeout").as_deref(), Some("2.5"));
        assert_eq!(p.value_of("file_work_factor").as_deref(), Some("12"));
    }

    #[test]
    fn profile_names_are_plain() {
        assert!(validate_profile_name("work-2.nz_a").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(validate_profile_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vault_paths_cannot_leave_their_folder() {
        for good in ["secret", "teams/xero-auth", "kv-2", "a.b_c"] {
            assert_eq!(vault_path("vault_prefix", good).as_deref(), Ok(good));
        }
        for bad in [
            "", "/", "a/", "/a", "a//b", "..", "a/../b", ".", "a/./b", "a b", "a%2Fb", "a?b",
        ] {
            let err = vault_path("vault_prefix", bad).unwrap_err();
            assert!(err.contains("vault_prefix"), "{bad}: {err}");
        }
    }

    #[test]
    fn vault_settings_take_ours_then_the_file_then_the_cli_variables() {
        let (_dir, config) = load(
            "[profiles.default]\nstore = \"vault\"\nvault_addr = \"https://vault.example.com:8200\"\nvault_prefix = \"team/xero\"\n",
        );
        let env = HashMap::from([
            ("VAULT_ADDR", "https://other.example.com"),
            ("VAULT_NAMESPACE", "finance/"),
            ("XERO_AUTH_VAULT_MOUNT", "kv"),
        ]);
        let p = config
            .profile("default", &|k| env.get(k).map(|v| v.to_string()))
            .unwrap();
        assert_eq!(p.store, StoreKind::Vault);
        assert_eq!(
            p.vault.addr.as_ref().map(Url::as_str),
            Some("https://vault.example.com:8200/")
        );
        assert_eq!(p.vault.mount, "kv");
        assert_eq!(p.vault.prefix, "team/xero");
        assert_eq!(p.vault.namespace.as_deref(), Some("finance"));
        assert_eq!(p.vault.lease_ttl, Duration::from_secs(30));

        let (_dir, config) = load("[profiles.default]\n");
        let p = config
            .profile("default", &|k| {
                (k == "BAO_ADDR").then(|| "http://127.0.0.1:8200".into())
            })
            .unwrap();
        assert_eq!(p.vault.mount, DEFAULT_VAULT_MOUNT);
        assert_eq!(p.vault.addr_source, "environment variable BAO_ADDR");

        let err = config
            .profile("default", &|k| {
                (k == "VAULT_ADDR").then(|| "http://vault.example.com:8200".into())
            })
            .unwrap_err();
        assert!(err.to_string().contains("VAULT_ADDR"), "{err}");
    }
}
