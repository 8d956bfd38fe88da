//! `xero-auth profiles [remove NAME]`: the profiles `config.toml` has.
//!
//! Names only, one a line, so that scripts and shell completion (`--profile <TAB>`) can use the
//! list as it is; on a terminal the selected profile is marked (`* NAME`, as `git branch` marks
//! the current branch); `--json` adds what each profile is set to. Listing reads `config.toml`
//! and nothing else: no keychain call, so it is instant and never asks for a passphrase.

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use serde_json::json;

use super::Context;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::{client_secret_account, token_set_account};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth profiles                       # default, then every other profile, one a line
  xero-auth profiles --json                # with each one's client id, store and default tenant
  xero-auth --profile NAME status          # what is stored for one of them
  xero-auth profiles remove old            # its settings, once nothing is stored for it")]
/// Arguments of `xero-auth profiles`.
pub struct ProfilesArgs {
    #[command(subcommand)]
    /// `remove NAME`, or nothing to list.
    pub action: Option<ProfilesAction>,
}

#[derive(Debug, Subcommand)]
/// What `profiles` can do besides listing.
pub enum ProfilesAction {
    /// Remove a profile's settings from config.toml. Refused while its store holds a token set
    /// or a client secret for it: `logout` and `client remove` delete those first.
    Remove {
        /// The profile.
        name: String,
    },
}

/// Lists the profiles (or, with `--json`, an array of objects), or removes one.
pub async fn run(args: ProfilesArgs, ctx: &Context) -> Result<()> {
    if let Some(ProfilesAction::Remove { name }) = args.action {
        return remove(ctx, &name).await;
    }
    let names = ctx.config.profile_names();
    if names.is_empty() && !ctx.json {
        eprintln!(
            "no profiles in {}: create one with `xero-auth client set --client-id ID`",
            ctx.config.path().display()
        );
    }
    if !ctx.json {
        let marked = std::io::stdout().is_terminal();
        let text: String = names
            .iter()
            .map(|n| match (marked, *n == ctx.profile_name) {
                (false, _) => format!("{n}\n"),
                (true, true) => format!("* {n}\n"),
                (true, false) => format!("  {n}\n"),
            })
            .collect();
        return ctx.write_out(text.as_bytes());
    }
    let list: Vec<_> = names
        .iter()
        .map(|name| {
            let selected = *name == ctx.profile_name;
            // A profile with a bad value is still listed, with what is wrong with it.
            match ctx.config.profile(name, &*ctx.env) {
                Ok(p) => json!({
                    "name": name,
                    "selected": selected,
                    "client_id": p.client_id,
                    "store": p.store.name(),
                    "default_tenant": p.default_tenant,
                }),
                Err(e) => json!({
                    "name": name,
                    "selected": selected,
                    "error": e.to_string(),
                }),
            }
        })
        .collect();
    ctx.write_json(&serde_json::Value::Array(list))
}

/// Removes `name`'s table from config.toml once its store holds nothing for it: the settings
/// are what says where its secrets are, so they go last.
async fn remove(ctx: &Context, name: &str) -> Result<()> {
    if !ctx.config.has_profile(name) {
        return Err(Error::InvalidInput(format!(
            "config.toml ({}) has no profile '{name}'; the profiles: {}",
            ctx.config.path().display(),
            ctx.config.profile_names().join(", ")
        )));
    }
    let profile = ctx.config.profile(name, &*ctx.env)?;
    let store = ctx.store(&profile);
    let mut held = Vec::new();
    if store.get(&token_set_account(name)).await?.is_some() {
        held.push(format!(
            "a token set ({} deletes it)",
            crate::hint::command(name, "logout")
        ));
    }
    if store.get(&client_secret_account(name)).await?.is_some() {
        held.push(format!(
            "a client secret ({} deletes it)",
            crate::hint::command(name, "client remove")
        ));
    }
    if !held.is_empty() {
        return Err(Error::InvalidInput(format!(
            "profile '{name}' still has {} in {}; removing its settings would leave them there, \
             unreachable. Nothing was changed",
            held.join(" and "),
            store.describe()
        )));
    }
    let mut config = Config::load(ctx.config.path())?;
    config.remove_profile(name)?;
    config.save()?;
    eprintln!("profile '{name}' removed from {}", config.path().display());
    Ok(())
}
