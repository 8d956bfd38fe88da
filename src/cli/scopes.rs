//! `xero-auth scopes`: the scopes the stored token set was granted, which of them Xero is
//! retiring and the login that asks for their granular equivalents; `scopes for PATH [METHOD]`:
//! the scopes a call needs and whether the stored set has one; `scopes --all`: Xero's scopes as
//! the tool knows them (`crate::scopes`). Never a token: only scope names and expiry.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Context;
use crate::error::Result;
use crate::scopes::{self, Access, Kind, Scope};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth scopes                                  # what the stored token set was granted
  xero-auth scopes for /api.xro/2.0/Invoices POST   # what a call needs, and whether it is granted
  xero-auth scopes for Reports/BalanceSheet
  xero-auth scopes --all --json")]
#[command(args_conflicts_with_subcommands = true)]
/// Arguments of `xero-auth scopes`.
pub struct ScopesArgs {
    /// List every scope the tool knows (and the shorthands `login --scope` takes) instead.
    #[arg(long)]
    pub all: bool,
    #[command(subcommand)]
    pub command: Option<ScopesCommand>,
}

/// `scopes for`.
#[derive(Debug, Subcommand)]
pub enum ScopesCommand {
    /// The scopes a call needs (any one of them), and whether the stored token set has one.
    For {
        /// The API path: /api.xro/2.0/Invoices, or Invoices for the accounting API.
        path: String,
        /// The HTTP method: GET needs a read or a write scope, any other a write scope.
        #[arg(default_value = "GET")]
        method: String,
    },
}

/// Runs `scopes`.
pub async fn run(args: ScopesArgs, ctx: &Context) -> Result<()> {
    match args.command {
        Some(ScopesCommand::For { path, method }) => needed(ctx, &path, &method).await,
        None if args.all => all(ctx),
        None => granted(ctx).await,
    }
}

fn kind_text(s: &Scope) -> &'static str {
    match s.kind {
        Kind::Deprecated => "broad, deprecated",
        Kind::Granular => "granular",
        Kind::Unchanged => "unchanged",
    }
}

fn access_text(s: &Scope) -> &'static str {
    match s.access {
        Access::Read => "read",
        Access::Write => "read and write",
        Access::Identity => "identity",
    }
}

fn scope_json(s: &Scope) -> Value {
    json!({
        "name": s.name,
        "kind": match s.kind {
            Kind::Deprecated => "deprecated",
            Kind::Granular => "granular",
            Kind::Unchanged => "unchanged",
        },
        "access": match s.access {
            Access::Read => "read",
            Access::Write => "write",
            Access::Identity => "identity",
        },
        "area": s.area,
        "paths": s.paths,
        "replaced_by": s.replaced_by,
        "confirmed_by_xero": s.confirmed,
    })
}

fn describe(name: &str) -> String {
    match scopes::find(name) {
        Some(s) => format!(
            "{name:<42} {}, {} ({}){}",
            s.area,
            access_text(s),
            kind_text(s),
            if s.confirmed {
                ""
            } else {
                "; not in a list Xero publishes"
            }
        ),
        None => format!("{name:<42} not a scope xero-auth knows"),
    }
}

/// The stored set's scopes, the access token's own where they differ, and the way off the
/// deprecated ones.
async fn granted(ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    let Some(set) = session.stored_token_set().await? else {
        return Err(session.no_token_set());
    };
    let profile = &session.profile().name;
    let claimed = set.access_token_scopes();
    let differs = claimed.as_ref().is_some_and(|c| {
        let mut a = c.clone();
        let mut b = set.scopes.clone();
        a.sort();
        b.sort();
        a != b
    });
    let all_names: Vec<&str> = set
        .scopes
        .iter()
        .chain(claimed.iter().flatten())
        .map(String::as_str)
        .collect();
    let deprecated = scopes::deprecated(all_names.iter().copied());
    let mut deduped: Vec<&Scope> = Vec::new();
    for d in deprecated {
        if !deduped.iter().any(|x| x.name == d.name) {
            deduped.push(d);
        }
    }
    let granular: Vec<String> = scopes::granular_equivalent(set.scopes.iter().map(String::as_str))
        .into_iter()
        .filter(|s| s != "offline_access")
        .collect();
    let login = (!deduped.is_empty()).then(|| {
        crate::hint::command(profile, &format!("login --scope \"{}\"", granular.join(" ")))
    });
    let d = &scopes::DEPRECATION;
    if ctx.json {
        return ctx.write_json(&json!({
            "profile": profile,
            "granted": set.scopes,
            "access_token_scopes": claimed,
            "access_token_scopes_differ": differs,
            "access_token_expires_at": set.expires_at,
            "deprecated": deduped.iter().map(|s| json!({
                "name": s.name,
                "replaced_by": s.replaced_by,
                "new_apps_from": d.new_apps_from,
                "custom_connections_from": d.custom_connections_from,
                "existing_apps_until": d.existing_apps_until,
            })).collect::<Vec<_>>(),
            "granular_equivalent": (!deduped.is_empty()).then_some(&granular),
            "granular_login": login.as_deref().map(|c| c.trim_matches('`')),
        }));
    }
    let mut text = format!("profile '{profile}' was granted:\n");
    if set.scopes.is_empty() {
        text.push_str("  (unknown: Xero's answer named no scopes)\n");
    }
    for name in &set.scopes {
        text.push_str(&format!("  {}\n", describe(name)));
    }
    if differs {
        text.push_str("the access token itself carries:\n");
        for name in claimed.iter().flatten() {
            text.push_str(&format!("  {}\n", describe(name)));
        }
    }
    if let Some(login) = &login {
        text.push_str(&format!("\n{}.\n", scopes::retiring(&deduped)));
        for s in &deduped {
            text.push_str(&format!("  {} → {}\n", s.name, s.replaced_by.join(" ")));
        }
        text.push_str(&format!(
            "ask for the granular equivalents: {login}\n(an existing token never gains scopes: \
             each organisation consents again in the browser; Xero keeps granted scopes until \
             the app is disconnected, so {} first drops the broad ones)\n",
            crate::hint::command(profile, "logout")
        ));
    }
    ctx.write_out(text.as_bytes())
}

/// The scopes a call needs, and whether the stored set (if any) has one of them.
async fn needed(ctx: &Context, path: &str, method: &str) -> Result<()> {
    let method = method.to_ascii_uppercase();
    let needed = scopes::needed_for(path, &method);
    let session = ctx.session()?;
    // What the call needs is worth saying even when the store cannot be read now.
    let stored = match session.stored_token_set().await {
        Ok(set) => set,
        Err(e) => {
            eprintln!("note: the stored token set could not be read ({e}); not compared");
            None
        }
    };
    let granted = stored
        .as_ref()
        .map(|set| scopes::grants(&set.scopes, &needed));
    let best = scopes::narrowest(&needed, &method);
    let profile = &session.profile().name;
    // Journals are the one API a plan gates (see `plans`).
    let needs_advanced = needed.iter().any(|s| s.name == "accounting.journals.read");
    if ctx.json {
        return ctx.write_json(&json!({
            "path": path,
            "method": method,
            "any_of": needed.iter().copied().map(scope_json).collect::<Vec<_>>(),
            "granted": granted,
            "needs_plan": needs_advanced.then_some("advanced"),
        }));
    }
    let mut text = String::new();
    if needed.is_empty() {
        text.push_str(&format!(
            "{method} {path}: no scope xero-auth knows opens it (the path is not in its table, \
             or the method is not allowed there)\n"
        ));
    } else {
        text.push_str(&format!("{method} {path} needs one of:\n"));
        for s in &needed {
            text.push_str(&format!("  {}\n", describe(s.name)));
        }
    }
    match (granted, best) {
        (None, _) => text.push_str("no token set is stored: nothing to compare\n"),
        (Some(true), _) if !needed.is_empty() => {
            text.push_str("the stored token set has one of them\n");
        }
        (Some(true), _) => {}
        (Some(false), Some(best)) => text.push_str(&format!(
            "the stored token set has none of them: ask with {}\n",
            crate::hint::command(profile, &format!("login --scope {}", best.name))
        )),
        (Some(false), None) => text.push_str("the stored token set has none of them\n"),
    }
    if needs_advanced {
        text.push_str("Xero opens Journals only to apps on its Advanced plan or above");
        match session.profile().plan {
            Some(plan) if !plan.has_journals() => text.push_str(&format!(
                ": the profile's plan is {}, so Xero will refuse this call\n",
                plan.name()
            )),
            _ => text.push('\n'),
        }
    }
    ctx.write_out(text.as_bytes())
}

/// The whole table and the shorthands.
fn all(ctx: &Context) -> Result<()> {
    if ctx.json {
        return ctx.write_json(&json!({
            "scopes": scopes::SCOPES.iter().map(scope_json).collect::<Vec<_>>(),
            "shorthands": scopes::SHORTHANDS.iter().map(|s| json!({
                "name": s.name,
                "means": s.means,
                "about": s.about,
            })).collect::<Vec<_>>(),
        }));
    }
    let mut text = String::new();
    for s in scopes::SCOPES {
        text.push_str(&describe(s.name));
        text.push('\n');
    }
    text.push_str("\nshorthands for login --scope:\n");
    for s in scopes::SHORTHANDS {
        text.push_str(&format!("  {:<20} {}\n", s.name, s.about));
    }
    ctx.write_out(text.as_bytes())
}
