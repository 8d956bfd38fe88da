//! The resolver: a profile's values from `config.toml`, then the environment's overrides, then
//! the defaults, each checked, and a message that names where a refused value came from.

use std::path::PathBuf;
use std::time::Duration;

use toml_edit::{Item, Table};
use url::Url;

use super::{
    Config, DEFAULT_FILE_UNLOCK_TTL, DEFAULT_FILE_WORK_FACTOR, DEFAULT_REDIRECT_URI,
    DEFAULT_VAULT_MOUNT, DEFAULT_VAULT_PREFIX, ENDPOINTS, Endpoints, FILE_WORK_FACTORS,
    LIMITS_TABLE, McpGuard, Profile, RateLimits, StoreKind, VaultSettings, parse_endpoint, shown,
    validate_profile_name, vault_path,
};
use crate::error::{Error, Result};
use crate::plans::Plan;

/// The environment's override of endpoint variable `env_key`, if any. Each variable names one
/// endpoint of Xero's (or a stand-in's) and nothing else: `exec --server` gives its command
/// its own endpoint under other names (`XERO_AUTH_ENDPOINT`), so a `xero-auth` the command runs
/// takes `XERO_AUTH_TOKEN_URL` as the user set it.
fn endpoint_override(env: &dyn Fn(&str) -> Option<String>, env_key: &str) -> Option<String> {
    env(env_key).filter(|v| !v.is_empty())
}

impl Config {
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

        let endpoint = |(key, env_key, default): (&str, &str, &str)| -> Result<Url> {
            let (value, source) = match endpoint_override(env, env_key) {
                Some(v) => (v, format!("environment variable {env_key}")),
                None => match get_str(key)? {
                    Some(v) => (
                        v,
                        format!("`profiles.{name}.{key}` in {}", self.path().display()),
                    ),
                    None => (default.to_string(), "default".to_string()),
                },
            };
            parse_endpoint(&value).map_err(|why| Error::InvalidInput(format!("{source}: {why}")))
        };
        // In ENDPOINTS' order, so the first endpoint refused is the one named.
        let [authorize, token, revocation, connections, api] = ENDPOINTS.map(endpoint);
        let (authorize, token, revocation) = (authorize?, token?, revocation?);
        let (connections, api) = (connections?, api?);

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

        let plan = match get_str("plan")?.filter(|s| !s.is_empty()) {
            None => None,
            Some(v) => Some(Plan::parse(&v).map_err(|why| {
                self.error(
                    &["profiles", name, "plan"],
                    &format!("`profiles.{name}.plan`: {why}"),
                )
            })?),
        };

        let notify = match table.and_then(|t| t.get("notify")) {
            None => true,
            Some(item) => bool_setting(item).ok_or_else(|| {
                self.error(
                    &["profiles", name, "notify"],
                    &format!("`profiles.{name}.notify` must be true or false"),
                )
            })?,
        };

        let tool_patterns = |key: &str| -> Result<Vec<String>> {
            match table.and_then(|t| t.get(key)) {
                None => Ok(Vec::new()),
                Some(item) => parse_scopes(item).ok_or_else(|| {
                    self.error(
                        &["profiles", name, key],
                        &format!(
                            "`profiles.{name}.{key}` must be a space-separated string or an array of strings (tool name patterns)"
                        ),
                    )
                }),
            }
        };
        let mcp_guard = McpGuard {
            read_only: match table.and_then(|t| t.get("mcp_read_only")) {
                None => false,
                Some(item) => bool_setting(item).ok_or_else(|| {
                        self.error(
                            &["profiles", name, "mcp_read_only"],
                            &format!("`profiles.{name}.mcp_read_only` must be true or false"),
                        )
                    })?,
            },
            allow_tools: {
                let allow = tool_patterns("mcp_allow_tools")?;
                // An empty allow list would allow every tool (no allow rule): whoever wrote it
                // meant the opposite, so it is refused rather than read open.
                if allow.is_empty() && table.and_then(|t| t.get("mcp_allow_tools")).is_some() {
                    return Err(self.error(
                        &["profiles", name, "mcp_allow_tools"],
                        &format!(
                            "`profiles.{name}.mcp_allow_tools` is empty, which would allow every tool: list the tools to allow, remove the key, or use mcp_read_only / mcp_deny_tools"
                        ),
                    ));
                }
                allow
            },
            deny_tools: tool_patterns("mcp_deny_tools")?,
        };

        let redirect_uri = get_str("redirect_uri")?.unwrap_or_else(|| DEFAULT_REDIRECT_URI.into());
        Ok(Profile {
            name: name.to_string(),
            client_id: get_str("client_id")?.filter(|s| !s.is_empty()),
            scopes,
            redirect_uri,
            default_tenant: get_str("default_tenant")?.filter(|s| !s.is_empty()),
            plan,
            notify,
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
            mcp_guard,
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
}

fn parse_scopes(item: &Item) -> Option<Vec<String>> {
    if let Some(s) = item.as_str() {
        return Some(s.split_whitespace().map(String::from).collect());
    }
    let array = item.as_array()?;
    array.iter().map(|v| v.as_str().map(String::from)).collect()
}

/// A true/false setting: a TOML boolean, or the string `config set` writes.
fn bool_setting(item: &Item) -> Option<bool> {
    item.as_bool().or_else(|| match item.as_str() {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::testing::{env, load};
    use super::*;

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
    fn the_mcp_guard_rails_read_as_a_flag_and_pattern_lists() {
        let (_dir, config) = load(
            "[profiles.default]\nmcp_read_only = true\nmcp_allow_tools = \"list-* get-*\"\nmcp_deny_tools = [\"list-payroll-*\"]\n",
        );
        let p = config.profile("default", &env(&[])).unwrap();
        assert!(p.mcp_guard.read_only);
        assert_eq!(p.mcp_guard.allow_tools, ["list-*", "get-*"]);
        assert_eq!(p.mcp_guard.deny_tools, ["list-payroll-*"]);
        assert_eq!(p.value_of("mcp_allow_tools").as_deref(), Some("list-* get-*"));
        // As `config set` writes it.
        let (_dir, config) = load("[profiles.default]\nmcp_read_only = \"false\"\n");
        let p = config.profile("default", &env(&[])).unwrap();
        assert_eq!(p.mcp_guard, McpGuard::default());
        for bad in ["mcp_read_only = \"yes\"", "mcp_deny_tools = 3", "mcp_allow_tools = [1]"] {
            let (_dir, config) = load(&format!("[profiles.default]\n{bad}\n"));
            let err = config.profile("default", &env(&[])).unwrap_err();
            assert!(err.to_string().contains("profiles.default.mcp_"), "{bad}: {err}");
        }
        // An empty allow list would allow everything: refused, not read open.
        for empty in ["mcp_allow_tools = \"\"", "mcp_allow_tools = []"] {
            let (_dir, config) = load(&format!("[profiles.default]\n{empty}\n"));
            let err = config.profile("default", &env(&[])).unwrap_err();
            assert!(err.to_string().contains("would allow every tool"), "{empty}: {err}");
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

