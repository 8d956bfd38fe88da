//! `xero-auth tenants [use|disconnect ID|NAME]`: the organisations the app is connected to, the
//! profile's default one, and removing one's connection.

use clap::{Args, Subcommand};

use super::Context;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::plans::{Plan, Standing};
use crate::secret::ExposeSecret;
use crate::session::{DEFAULT_MARGIN_SECS, Session};
use crate::xero::Connection;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth tenants                                # the connected organisations; * is the default
  xero-auth tenants use \"Demo Company (NZ)\"        # by name (any case) or id
  xero-auth tenants --plan starter                 # and how near the plan's limit they are
  xero-auth tenants disconnect \"Old Ltd\" --yes     # remove one organisation's connection")]
/// Arguments of `xero-auth tenants`.
pub struct TenantsArgs {
    #[command(subcommand)]
    /// `use ID|NAME`, or nothing to list.
    pub action: Option<TenantsAction>,
    /// The app's Xero plan (starter, core, plus, advanced, enterprise), to compare the connected
    /// organisations with its limit; overrides the profile's `plan`.
    #[arg(long, value_name = "PLAN", value_parser = parse_plan)]
    pub plan: Option<Plan>,
}

fn parse_plan(text: &str) -> std::result::Result<Plan, String> {
    Plan::parse(text)
}

#[derive(Debug, Subcommand)]
/// What `tenants` can do besides listing.
pub enum TenantsAction {
    /// Make a tenant the profile's default for `api` and `exec` (by tenant id or name).
    Use {
        /// A tenant id, or an organisation's name (case-insensitive).
        tenant: String,
    },
    /// Remove one organisation's connection to the app at Xero (DELETE /connections/ID): every
    /// token of the app loses it, and it frees a slot of the app's plan.
    Disconnect {
        /// A tenant id, or an organisation's name (case-insensitive; refused when several match).
        tenant: String,
        /// Do not ask for confirmation (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

/// Lists the connections, or sets the default tenant.
pub async fn run(args: TenantsArgs, ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    let connections = connections_of(&session).await?;
    let default = session.profile().default_tenant.as_deref();
    let plan = args.plan.or(session.profile().plan);

    match args.action {
        None if ctx.json => {
            // Each connection as Xero lists it, and whether it is the profile's default tenant
            // (the `*` of the text listing).
            let listed: Vec<serde_json::Value> = connections
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "id": c.id,
                        "tenantId": c.tenant_id,
                        "tenantType": c.tenant_type,
                        "tenantName": c.tenant_name,
                        "default": Some(c.tenant_id.as_str()) == default,
                    })
                })
                .collect();
            tell_plan_standing(ctx, plan, connections.len());
            ctx.write_json(&serde_json::Value::Array(listed))
        }
        None => {
            let mut text = String::new();
            for c in &connections {
                let mark = if Some(c.tenant_id.as_str()) == default {
                    "*"
                } else {
                    " "
                };
                text.push_str(&format!(
                    "{mark} {}\t{}\t{}\n",
                    c.tenant_name, c.tenant_id, c.tenant_type
                ));
            }
            if connections.is_empty() {
                eprintln!(
                    "no organisation is connected to the app: run {} and allow access to one",
                    crate::hint::command(&ctx.profile_name, "login")
                );
            }
            tell_plan_standing(ctx, plan, connections.len());
            ctx.write_out(text.as_bytes())
        }
        Some(TenantsAction::Disconnect { tenant, yes }) => {
            disconnect(ctx, &session, &connections, &tenant, yes).await
        }
        Some(TenantsAction::Use { tenant }) => {
            let chosen = find(&connections, &tenant)?;
            set_default_tenant(ctx, &session.profile().name, &chosen.tenant_id)?;
            eprintln!(
                "profile '{}': default tenant is now {} ({})",
                session.profile().name,
                chosen.tenant_name,
                chosen.tenant_id
            );
            Ok(())
        }
    }
}

/// On stderr: how many organisations the token reaches and, with a plan, how that stands
/// against the plan's limit — a warning near it or at it. The token's count is a lower bound of
/// the app's: other users' organisations count too (see `plans`).
fn tell_plan_standing(ctx: &Context, plan: Option<Plan>, count: usize) {
    let orgs = |n: usize| match n {
        1 => "1 organisation".to_string(),
        n => format!("{n} organisations"),
    };
    let Some(plan) = plan else {
        if count > 0 {
            eprintln!(
                "this token reaches {}; to compare with the app's plan (starter, core, plus, advanced or enterprise), set it: {}",
                orgs(count),
                crate::hint::command(&ctx.profile_name, "config set plan PLAN")
            );
        }
        return;
    };
    let name = plan.name();
    let disconnect = crate::hint::command(&ctx.profile_name, "tenants disconnect NAME");
    match plan.standing(count) {
        Standing::Unlimited => {
            eprintln!("this token reaches {}; the {name} plan has no connection limit", orgs(count))
        }
        Standing::Within { limit } => eprintln!(
            "this token reaches {} of the {name} plan's {limit} (other users' organisations count too)",
            orgs(count)
        ),
        Standing::Near { limit } => eprintln!(
            "warning: this token alone reaches {} of the {name} plan's {limit}; at {limit}, Xero lets no other organisation connect (other users' organisations count too). Free a connection with {disconnect}, or move the app to a larger plan in Xero's developer portal",
            orgs(count)
        ),
        Standing::AtLimit { limit } => eprintln!(
            "warning: this token alone reaches {}: the {name} plan allows {limit}, so Xero lets no other organisation connect. Free a connection with {disconnect}, or move the app to a larger plan in Xero's developer portal",
            orgs(count)
        ),
    }
}

/// `tenants disconnect`: asks (unless `yes`), removes the connection at Xero, then updates the
/// kept tenant names and, when it was the default tenant, the profile's `default_tenant`.
async fn disconnect(
    ctx: &Context,
    session: &Session,
    connections: &[Connection],
    wanted: &str,
    yes: bool,
) -> Result<()> {
    let chosen = find(connections, wanted)?;
    let profile = &session.profile().name;
    let what = format!("{} ({})", chosen.tenant_name, chosen.tenant_id);
    if !yes {
        if !ctx.stdin_is_terminal {
            return Err(Error::InvalidInput(format!(
                "disconnecting {what} removes it for every token of the app; nothing was done: \
                 confirm with {}",
                crate::hint::command(profile, &format!("tenants disconnect {} --yes", chosen.tenant_id))
            )));
        }
        eprint!("Disconnect {what} from the app, for every token of it? Type yes: ");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line).ok();
        if line.trim() != "yes" {
            return Err(Error::InvalidInput(format!("{what} was not disconnected")));
        }
    }
    let set = session.valid_token_set(DEFAULT_MARGIN_SECS).await?;
    let token = set.require_access_token(profile)?;
    crate::xero::disconnect(
        session.http().await?,
        profile,
        &session.profile().endpoints.connections,
        token.expose_secret(),
        &chosen.id,
    )
    .await?;
    let rest: Vec<Connection> = connections
        .iter()
        .filter(|c| c.id != chosen.id)
        .cloned()
        .collect();
    remember_names(session.paths(), profile, &rest);
    eprintln!("disconnected {what}");
    let was_default = session
        .profile()
        .default_tenant
        .as_deref()
        .is_some_and(|d| d.eq_ignore_ascii_case(&chosen.tenant_id));
    if was_default {
        let mut config = Config::load(ctx.config.path())?;
        config.remove(profile, "default_tenant")?;
        config.save()?;
        eprintln!(
            "it was profile '{profile}''s default tenant: choose another with {}",
            crate::hint::command(profile, "tenants use ID|NAME")
        );
    }
    Ok(())
}

/// `session` addressing the tenant `wanted` names — an id as it is, or a connected
/// organisation's name (any case), looked up with one `/connections` request — or the profile's
/// default tenant when `wanted` is `None`.
pub async fn with_tenant_named(session: Session, wanted: Option<&str>) -> Result<Session> {
    let Some(wanted) = wanted else {
        return Ok(session);
    };
    if looks_like_id(wanted) {
        return Ok(session.with_tenant(Some(wanted.to_string())));
    }
    let connections = connections_of(&session).await?;
    let id = find(&connections, wanted)?.tenant_id.clone();
    Ok(session.with_tenant(Some(id)))
}

/// `session` addressing a tenant: the one it already has (`--tenant`, the profile's default),
/// or — when it has none and the app reaches exactly one organisation — that one, kept as the
/// profile's default (as `login` does) and said on stderr. With none or several, or when the
/// connections cannot be listed, the session comes back without a tenant, with the reason and
/// what to do for the caller to say: `exec` warns and runs, `api` refuses a call that needs one.
pub async fn or_the_only_one(ctx: &Context, session: Session) -> (Session, Option<String>) {
    if session.tenant().is_some() {
        return (session, None);
    }
    let profile = session.profile().name.clone();
    let choose = crate::hint::command(&profile, "tenants use ID|NAME");
    let connections = match connections_of(&session).await {
        Ok(c) => c,
        Err(e) => {
            return (
                session,
                Some(format!(
                    "profile '{profile}' has no default tenant, and the connected organisations \
                     could not be listed ({e}); choose one with {choose}"
                )),
            );
        }
    };
    match connections.as_slice() {
        [only] => {
            adopt_only_tenant(ctx, &profile, only);
            (session.with_tenant(Some(only.tenant_id.clone())), None)
        }
        [] => (
            session,
            Some(format!(
                "no organisation is connected to the app of profile '{profile}': run {} and \
                 allow access to one",
                crate::hint::command(&profile, "login")
            )),
        ),
        several => (
            session,
            Some(format!(
                "profile '{profile}' has no default tenant and the app reaches {} organisations \
                 ({}); choose one with {choose}, or pass --tenant ID|NAME",
                several.len(),
                several
                    .iter()
                    .map(|c| c.tenant_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
    }
}

/// Keeps `only`, the one organisation the profile reaches, as its default tenant, and says so.
/// A config.toml that cannot be written costs only the keeping: the tenant is used this time.
pub fn adopt_only_tenant(ctx: &Context, profile: &str, only: &Connection) {
    match set_default_tenant(ctx, profile, &only.tenant_id) {
        Ok(()) => eprintln!(
            "profile '{profile}': default tenant is now {} ({}), the only organisation the app \
             reaches (kept in config.toml; {} changes it)",
            only.tenant_name,
            only.tenant_id,
            crate::hint::command(profile, "tenants use ID|NAME")
        ),
        Err(e) => eprintln!(
            "warning: using {} ({}), the only organisation the app reaches, but it could not be \
             kept as profile '{profile}''s default tenant: {e}",
            only.tenant_name, only.tenant_id
        ),
    }
}

/// The organisations connected to the profile's app, asked with a valid access token. Their
/// names are kept for `status` ([`remember_names`]).
pub async fn connections_of(session: &Session) -> Result<Vec<Connection>> {
    let set = session.valid_token_set(DEFAULT_MARGIN_SECS).await?;
    let token = set.require_access_token(&session.profile().name)?;
    let connections = crate::xero::connections(
        session.http().await?,
        &session.profile().name,
        &session.profile().endpoints.connections,
        token.expose_secret(),
    )
    .await?;
    remember_names(session.paths(), &session.profile().name, &connections);
    Ok(connections)
}

/// The most bytes a kept list of tenant names may have (a few hundred organisations).
const MAX_NAMES_FILE: usize = 256 << 10;

/// The tenant names of a profile as Xero last listed them (`tenants/PROFILE.json` in the state
/// folder): ids and names only, so that `status` can name the default tenant without a request.
#[derive(serde::Serialize, serde::Deserialize)]
struct KnownNames {
    /// Tenant id and name, as listed.
    tenants: Vec<(String, String)>,
}

fn names_file(paths: &crate::config::Paths, profile: &str) -> std::path::PathBuf {
    paths
        .state_dir
        .join("tenants")
        .join(format!("{profile}.json"))
}

/// Keeps the names of `connections` for `status`. Only a cache: a failure to write it costs the
/// name in `status` and is logged, never the command.
pub fn remember_names(paths: &crate::config::Paths, profile: &str, connections: &[Connection]) {
    let path = names_file(paths, profile);
    let known = KnownNames {
        tenants: connections
            .iter()
            .map(|c| (c.tenant_id.clone(), c.tenant_name.clone()))
            .collect(),
    };
    let written = serde_json::to_vec(&known)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            let dir = path.parent().unwrap_or(&paths.state_dir);
            crate::private_fs::private_folder_in(&paths.state_dir, dir)
                .map_err(|e| e.to_string())?;
            crate::private_fs::replace_cache_file(&path, &bytes).map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), "the tenant names were not kept: {e}");
    }
}

/// The name Xero last gave tenant `id` of `profile`, when a listing of its connections was kept.
pub fn known_name(paths: &crate::config::Paths, profile: &str, id: &str) -> Option<String> {
    let path = names_file(paths, profile);
    let bytes =
        crate::private_fs::read_file(&path, crate::private_fs::FileKind::Own, MAX_NAMES_FILE, "")
            .ok()??;
    let known: KnownNames = serde_json::from_slice(&bytes).ok()?;
    known
        .tenants
        .into_iter()
        .find(|(tenant, _)| tenant.eq_ignore_ascii_case(id.trim()))
        .map(|(_, name)| name)
        .filter(|name| !name.is_empty())
}

/// Xero's tenant ids are UUIDs: 36 characters of hex digits and four dashes.
fn looks_like_id(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        })
}

fn find<'a>(connections: &'a [Connection], wanted: &str) -> Result<&'a Connection> {
    if let Some(c) = connections
        .iter()
        .find(|c| c.tenant_id.eq_ignore_ascii_case(wanted))
    {
        return Ok(c);
    }
    let by_name: Vec<_> = connections
        .iter()
        .filter(|c| c.tenant_name.eq_ignore_ascii_case(wanted))
        .collect();
    match by_name.as_slice() {
        [one] => Ok(one),
        [] | [_, _, ..] => {
            let known = connections
                .iter()
                .map(|c| format!("{} ({})", c.tenant_name, c.tenant_id))
                .collect::<Vec<_>>()
                .join(", ");
            let why = if by_name.is_empty() {
                "matches no connected tenant"
            } else {
                "names several tenants; use the id"
            };
            Err(Error::InvalidInput(format!(
                "'{wanted}' {why}; connected: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known
                }
            )))
        }
    }
}

/// Writes `default_tenant` into the profile's configuration (tenant ids are not secret).
pub fn set_default_tenant(ctx: &Context, profile: &str, tenant_id: &str) -> Result<()> {
    let mut config = Config::load(ctx.config.path())?;
    config.set(profile, "default_tenant", tenant_id)?;
    config.save()
}
