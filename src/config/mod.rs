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
//!
//! Three parts: this module is the model (the folders, the stores, the endpoints, a resolved
//! [`Profile`] and the rules its values follow), `file` reads, edits and saves
//! `config.toml` keeping the user's comments, and `resolve` turns the file, the environment
//! and the defaults into a [`Profile`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::error::{Error, Result};
use crate::plans::Plan;

mod file;
mod resolve;

pub use crate::names::{APP_NAME, DEFAULT_PROFILE};
pub use file::Config;
/// "Did you mean …?" for the command line's words.
#[cfg(feature = "cli")]
pub use file::closest;

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
    pub(crate) fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
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
    pub(crate) fn file_store_dir(&self) -> PathBuf {
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
#[non_exhaustive]
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
    pub(crate) fn platform_default() -> Self {
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
    pub(crate) const ALL: [StoreKind; 6] = [
        StoreKind::SecretService,
        StoreKind::Keychain,
        StoreKind::CredentialManager,
        StoreKind::Keyutils,
        StoreKind::File,
        StoreKind::Vault,
    ];

    /// Whether this build has the store: each keychain on its own operating system, the file
    /// and vault stores everywhere.
    pub fn built_in(self) -> bool {
        match self {
            StoreKind::SecretService | StoreKind::Keyutils => cfg!(target_os = "linux"),
            StoreKind::Keychain => cfg!(target_os = "macos"),
            StoreKind::CredentialManager => cfg!(target_os = "windows"),
            StoreKind::File | StoreKind::Vault => true,
        }
    }

    /// The store named `s` (as in `config.toml`).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        StoreKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// The five URLs the tool talks to. Defaults are Xero's.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
const SETTING_KEYS: [&str; 22] = [
    "client_id",
    "scopes",
    "plan",
    "notify",
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
    "mcp_read_only",
    "mcp_allow_tools",
    "mcp_deny_tools",
];

/// Every key a `[profiles.NAME]` table may hold: what [`Config::profile`] reads, what
/// `xero-auth config set` accepts, and what the unknown-key warning compares with.
pub fn profile_keys() -> impl Iterator<Item = &'static str> {
    SETTING_KEYS
        .into_iter()
        .chain(ENDPOINTS.iter().map(|(key, _, _)| *key))
}

/// One profile, resolved: config values with environment overrides and defaults applied.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// The app's Xero plan (`plan`), when the user set it: `tenants` compares the connected
    /// organisations with its limit.
    pub plan: Option<Plan>,
    /// Whether a desktop notification may tell the person when only they can fix a problem
    /// (`notify`, true unless set to false).
    pub notify: bool,
    /// Which secret store holds the profile's secrets.
    pub store: StoreKind,
    /// The endpoints.
    pub endpoints: Endpoints,
    /// Timeout of one HTTP request.
    pub http_timeout: Duration,
    /// Timeout of one keychain call.
    pub store_timeout: Duration,
    /// The file store's scrypt work factor (log2 of N) for new files
    /// (18 unless the profile says otherwise).
    pub file_work_factor: u8,
    /// How long the file store's unlocked key is kept in the kernel after its last use
    /// (`file_unlock_ttl`, 15 minutes unless the profile says otherwise); zero: never kept.
    pub file_unlock_ttl: Duration,
    /// Xero's API limits, kept before sending (`[profiles.NAME.limits]`).
    pub rate_limits: RateLimits,
    /// Where the vault store is and how to sign in to it (`vault_*`; used by `store = "vault"`).
    pub vault: VaultSettings,
    /// The guard rails of `xero-auth mcp` (`mcp_*`), which its command line adds to.
    pub mcp_guard: McpGuard,
}

/// The profile's guard rails for the MCP bridge (`mcp_read_only`, `mcp_allow_tools`,
/// `mcp_deny_tools`): which of the MCP server's tools the client may see and call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct McpGuard {
    /// Pass only the tools that read.
    pub read_only: bool,
    /// Tool name patterns: with any, a tool must match one.
    pub allow_tools: Vec<String>,
    /// Tool name patterns: a tool that matches one is refused.
    pub deny_tools: Vec<String>,
}

/// The vault store's settings (`vault_*` keys, each overridden by `XERO_AUTH_VAULT_*`). No
/// credential is among them: the Vault token and AppRole secret id come from the environment or
/// files (see `store::vault`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VaultSettings {
    /// The server (`vault_addr`, else `VAULT_ADDR`, else `BAO_ADDR`); `https://`, or `http://`
    /// on loopback. The Vault token is sent to this origin only.
    pub addr: Option<Url>,
    /// Where the source of `addr` is named in messages.
    pub addr_source: String,
    /// The KV version 2 engine's mount path (`secret`): '/'-separated names of letters, digits,
    /// '-', '_' or '.', none of them empty, '.' or '..'.
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
#[non_exhaustive]
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
    pub(crate) fn value_of(&self, key: &str) -> Option<String> {
        let secs = |d: Duration| d.as_secs_f64().to_string();
        let e = &self.endpoints;
        match key {
            "client_id" => self.client_id.clone(),
            "scopes" => (!self.scopes.is_empty()).then(|| self.scopes.join(" ")),
            "redirect_uri" => Some(self.redirect_uri.clone()),
            "default_tenant" => self.default_tenant.clone(),
            "plan" => self.plan.map(|p| p.name().to_string()),
            "notify" => Some(self.notify.to_string()),
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
            "mcp_read_only" => Some(self.mcp_guard.read_only.to_string()),
            "mcp_allow_tools" => {
                (!self.mcp_guard.allow_tools.is_empty()).then(|| self.mcp_guard.allow_tools.join(" "))
            }
            "mcp_deny_tools" => {
                (!self.mcp_guard.deny_tools.is_empty()).then(|| self.mcp_guard.deny_tools.join(" "))
            }
            "authorize_url" => Some(e.authorize.to_string()),
            "token_url" => Some(e.token.to_string()),
            "revocation_url" => Some(e.revocation.to_string()),
            "connections_url" => Some(e.connections.to_string()),
            "api_url" => Some(e.api.to_string()),
            _ => None,
        }
    }
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

/// What the tests of the three parts share: a configuration file and an environment.
#[cfg(test)]
mod testing {
    use std::collections::HashMap;

    use super::Config;

    pub(super) fn load(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        (dir, config)
    }

    pub(super) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{env, load};
    use super::*;

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
}
