//! `xero-auth profiles`: the profiles `config.toml` has.
//!
//! Names only, one a line, so that scripts and shell completion (`--profile <TAB>`) can use the
//! list as it is; `--json` adds what each profile is set to. It reads `config.toml` and nothing
//! else: no keychain call, so it is instant and never asks for a passphrase.

use clap::Args;
use serde_json::json;

use super::Context;
use crate::error::Result;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth profiles                       # default, then every other profile, one a line
  xero-auth profiles --json                # with each one's client id, store and default tenant
  xero-auth --profile NAME status          # what is stored for one of them")]
/// Arguments of `xero-auth profiles` (none besides the global ones).
pub struct ProfilesArgs {}

/// Prints the profile names (or, with `--json`, an array of objects).
pub async fn run(_args: ProfilesArgs, ctx: &Context) -> Result<()> {
    let names = ctx.config.profile_names();
    if names.is_empty() && !ctx.json {
        eprintln!(
            "no profiles in {}: create one with `xero-auth client set --client-id ID`",
            ctx.config.path().display()
        );
    }
    if !ctx.json {
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
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
