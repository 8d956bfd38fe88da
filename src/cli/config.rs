//! `xero-auth config set|get|unset|path`: a profile's settings in `config.toml`, without editing
//! TOML by hand.
//!
//! `set` edits the document in place (comments, order and other profiles survive) and checks the
//! result with the code every command reads the file with, so what `set` accepts, the commands
//! accept.

use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use serde_json::json;

use super::Context;
use crate::config::{Config, profile_keys};
use crate::error::{Error, Result};

#[derive(Debug, Subcommand)]
#[command(after_help = "Examples:
  xero-auth config set store file                     # the encrypted-file store for this profile
  xero-auth config set --profile imp http_timeout 10  # another profile
  xero-auth config get token_url                      # the value in effect
  xero-auth config unset store                        # back to the default
  xero-auth config list                               # what config.toml sets for the profile")]
/// What `xero-auth config` does.
pub enum ConfigCommand {
    /// Set KEY of the profile (--profile) to VALUE in config.toml, keeping comments and the rest.
    Set {
        /// The setting (docs/configuration.md lists them).
        #[arg(value_parser = PossibleValuesParser::new(profile_keys()))]
        key: String,
        /// Its value: a number for the timeouts and the work factor, else the text itself
        /// (scopes: space-separated).
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Print KEY's value in effect for the profile: from config.toml, an environment variable,
    /// or the default (exit 1 when it has none).
    Get {
        /// The setting.
        #[arg(value_parser = PossibleValuesParser::new(profile_keys()))]
        key: String,
    },
    /// Remove KEY from the profile in config.toml (its default applies again). Any key, so a
    /// mistyped one can be removed too.
    Unset {
        /// The key to remove.
        key: String,
    },
    /// Print what config.toml sets for the profile, `KEY = VALUE` a line (--json: an object);
    /// the defaults and environment variables in effect are `config get KEY`'s.
    List,
    /// Print the path of config.toml (XERO_AUTH_CONFIG_DIR moves it).
    Path,
}

/// Runs `config set|get|unset|path` for the selected profile.
pub async fn run(cmd: ConfigCommand, ctx: &Context) -> Result<()> {
    let profile = &ctx.profile_name;
    match cmd {
        ConfigCommand::Path => {
            ctx.write_out(format!("{}\n", ctx.paths.config_file().display()).as_bytes())
        }
        ConfigCommand::List => {
            let settings = ctx.config.raw_settings(profile);
            if ctx.json {
                let object: serde_json::Map<_, _> = settings
                    .iter()
                    .map(|(k, v)| (k.clone(), toml_to_json(v)))
                    .collect();
                return ctx.write_json(&json!({ "profile": profile, "settings": object }));
            }
            if settings.is_empty() {
                eprintln!(
                    "profile '{profile}' sets nothing in {} (every key has its default; {} sets \
                     one)",
                    ctx.config.path().display(),
                    crate::hint::command(profile, "config set KEY VALUE")
                );
            }
            let text: String = settings
                .iter()
                .map(|(k, v)| format!("{k} = {}\n", v.to_string().trim()))
                .collect();
            ctx.write_out(text.as_bytes())
        }
        ConfigCommand::Set { key, value } => {
            let mut config = Config::load(ctx.config.path())?;
            config.set_checked(profile, &key, &value)?;
            config.save()?;
            eprintln!(
                "profile '{profile}': {key} set in {}",
                config.path().display()
            );
            Ok(())
        }
        ConfigCommand::Unset { key } => {
            let mut config = Config::load(ctx.config.path())?;
            if config.remove(profile, &key)? {
                config.save()?;
                let gone = if config.has_profile(profile) {
                    ""
                } else {
                    " (it set nothing else: its table went too)"
                };
                eprintln!(
                    "profile '{profile}': {key} removed from {}{gone}",
                    config.path().display()
                );
            } else {
                eprintln!(
                    "profile '{profile}': {key} was not set in {}",
                    config.path().display()
                );
            }
            Ok(())
        }
        ConfigCommand::Get { key } => {
            let value = ctx.profile()?.value_of(&key);
            if ctx.json {
                return ctx.write_json(&json!({
                    "profile": profile,
                    "key": key,
                    "value": value,
                    "in_config_toml": ctx.config.raw_value(profile, &key).map(toml_to_json),
                }));
            }
            match value {
                Some(value) => ctx.write_out(format!("{value}\n").as_bytes()),
                None => Err(Error::InvalidInput(format!(
                    "{key} is not set for profile '{profile}' ({} sets it)",
                    crate::hint::command(profile, &format!("config set {key} VALUE"))
                ))),
            }
        }
    }
}

/// A TOML value as JSON, for `config get --json` (strings, numbers, booleans, arrays; anything
/// else as its TOML text).
fn toml_to_json(value: &toml_edit::Value) -> serde_json::Value {
    use toml_edit::Value as T;
    match value {
        T::String(s) => json!(s.value()),
        T::Integer(i) => json!(i.value()),
        T::Float(f) => json!(f.value()),
        T::Boolean(b) => json!(b.value()),
        T::Array(a) => a.iter().map(toml_to_json).collect(),
        other => json!(other.to_string().trim()),
    }
}
