//! `xero-auth status`: what is stored for a profile, and when it lapses. Never a secret.

use clap::Args;
use serde_json::json;

use super::{Context, format_span, format_time};
use crate::error::Result;
use crate::limits::TenantBudget;
use crate::store::client_secret_account;
use crate::store::file::CacheState;
use crate::store::moving::PendingMove;
use crate::token_set::TokenSet;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth status
  xero-auth status --json | jq .tokens.refresh_token_lapses_at
  xero-auth status --profile imp")]
/// Arguments of `xero-auth status` (none besides the global ones).
pub struct StatusArgs {}

/// Prints the profile's status; exits 3 when no token set is stored.
pub async fn run(_args: StatusArgs, ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    let profile = session.profile();
    let store = session.store();
    // Looked up, not read: no secret crosses D-Bus, and the file store asks no passphrase.
    let looked_up = async {
        let secret_stored = store
            .contains(&client_secret_account(&profile.name))
            .await?;
        Ok::<_, crate::error::Error>((secret_stored, session.stored_token_set().await?))
    }
    .await;
    let (secret_stored, set) = match looked_up {
        Ok(found) => found,
        Err(err) => return Err(without_the_store(ctx, profile, &store.describe(), err)?),
    };
    // A profile config.toml does not name, with nothing stored either, is most likely a typo:
    // no report of an empty profile, only the error (which then names the profiles there are).
    if set.is_none() && !secret_stored && !ctx.config.has_profile(&profile.name) {
        return Err(session.no_token_set());
    }
    let now = session.now();
    let keep_alive = set
        .as_ref()
        .and_then(|s| keep_alive_warning(&profile.name, s, now));
    if let Some(warning) = &keep_alive {
        eprintln!("warning: {warning}");
    }

    let vault = vault_status(profile).await;
    let budgets = crate::limits::Limiter::last_seen(session.paths(), profile);
    // After the read above, which may have unlocked the store and kept its key.
    let file_key = (profile.store == crate::config::StoreKind::File
        && ctx.store_override.is_none())
    .then(|| crate::store::file_store(profile, &ctx.paths).cache_state());
    // A move cut short: the profile works, and the other store still holds a copy until the
    // move is run again.
    let unfinished_move = PendingMove::read(session.paths(), &profile.name)?;
    // The default tenant's name as Xero last listed it (`tenants`, `login`, `exec`): no request.
    let tenant_name = profile
        .default_tenant
        .as_deref()
        .and_then(|id| super::tenants::known_name(session.paths(), &profile.name, id));
    if ctx.json {
        let tokens = set.as_ref().map(|s| {
            json!({
                "access_token_expires_at": s.expires_at,
                "access_token_valid": s.access_valid_for(now, 0),
                "clock_set_back": s.clock_set_back(now),
                "refresh_token_stored": s.refresh_token.is_some(),
                "refresh_token_obtained_at": s.obtained_at,
                "refresh_token_lapses_at": s.refresh_lapses_at(),
                "refresh_token_warning": keep_alive,
                "scopes": s.scopes,
                "access_token_scopes": s.access_token_scopes(),
                "deprecated_scopes": crate::scopes::deprecated(s.scopes.iter().map(String::as_str))
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>(),
            })
        });
        ctx.write_json(&json!({
            "profile": profile.name,
            "client_id": profile.client_id,
            "client_secret_stored": secret_stored,
            "store": store.describe(),
            "token_endpoint": profile.endpoints.token.as_str(),
            "default_tenant": profile.default_tenant,
            "default_tenant_name": tenant_name,
            "tokens": tokens,
            "api_budgets": budgets_json(&budgets),
            "file_store_key": file_key.as_ref().map(|state| json!({
                "kept": matches!(state, CacheState::Unlocked(_) | CacheState::KeptWhileOff(_)),
                "forgotten_in_secs": match state {
                    CacheState::Unlocked(left) | CacheState::KeptWhileOff(left) => {
                        left.map(|d| d.as_secs())
                    }
                    _ => None,
                },
                "state": state.describe(),
            })),
            "unfinished_move": unfinished_move.as_ref().map(|m| json!({
                "from": m.from,
                "to": m.to,
                "started_at": m.started_at,
            })),
            "vault": vault.as_ref().map(|v| &v.json),
            "audit_log": audit_log_text(&ctx.paths),
        }))?;
    } else {
        let mut text = String::new();
        let mut line = |k: &str, v: String| text.push_str(&format!("{k:<15} {v}\n"));
        line("profile:", profile.name.clone());
        line(
            "client id:",
            profile.client_id.clone().unwrap_or_else(|| {
                format!(
                    "(none: run {})",
                    crate::hint::command(&profile.name, "client set --client-id ID")
                )
            }),
        );
        line(
            "client secret:",
            super::client::secret_text(profile, secret_stored, &store.describe()),
        );
        line("store:", store.describe());
        line("audit log:", audit_log_text(&ctx.paths));
        if let Some(state) = &file_key {
            line("file store:", state.describe());
        }
        if let Some(note) = &unfinished_move {
            line("unfinished:", note.finish_hint(&profile.name));
        }
        for (key, value) in vault.iter().flat_map(|v| &v.lines) {
            line(key, value.clone());
        }
        line("token endpoint:", profile.endpoints.token.to_string());
        match &set {
            None => line("tokens:", "none stored".into()),
            Some(s) => {
                // Stored on a clock later than this one: ages and remaining times computed now
                // would be negative or too long, so none are shown.
                let set_back = s.clock_set_back(now);
                line(
                    "access token:",
                    match s.expires_at {
                        Some(at) if s.access_token.is_some() && set_back => format!(
                            "stored as valid until {}, but the system clock was set back since it \
                             was stored, so that cannot be trusted; refreshed on next use",
                            format_time(at)
                        ),
                        Some(at) if s.access_token.is_some() && at > now => {
                            format!(
                                "valid until {} (in {})",
                                format_time(at),
                                format_span(at.saturating_sub(now))
                            )
                        }
                        Some(at) if s.access_token.is_some() => {
                            format!(
                                "expired {} ({}); refreshed on next use",
                                format_time(at),
                                format_span(at.saturating_sub(now))
                            )
                        }
                        _ => "none cached; refreshed on next use".into(),
                    },
                );
                let lapses = s.refresh_lapses_at();
                line(
                    "refresh token:",
                    if s.refresh_token.is_none() {
                        "none (client credentials)".into()
                    } else if set_back {
                        format!(
                            "obtained {} by the clock of the time — later than this machine's clock \
                             says it is now (was the clock set back?); lapses {} unless used",
                            format_time(s.obtained_at),
                            format_time(lapses)
                        )
                    } else if lapses > now {
                        format!(
                            "obtained {} ({} old), lapses {} unless used",
                            format_time(s.obtained_at),
                            format_span(now.saturating_sub(s.obtained_at).max(0)),
                            format_time(lapses)
                        )
                    } else {
                        format!(
                            "lapsed {}: run {}",
                            format_time(lapses),
                            crate::hint::command(&profile.name, "login")
                        )
                    },
                );
                line(
                    "scopes:",
                    if s.scopes.is_empty() {
                        "(unknown)".into()
                    } else {
                        s.scopes.join(" ")
                    },
                );
                let deprecated =
                    crate::scopes::deprecated(s.scopes.iter().map(String::as_str));
                if !deprecated.is_empty() {
                    let names: Vec<&str> = deprecated.iter().map(|d| d.name).collect();
                    line(
                        "",
                        format!(
                            "{} {} deprecated (apps created from {} cannot have {}); {} shows \
                             the granular login",
                            names.join(", "),
                            if names.len() == 1 { "is" } else { "are" },
                            crate::scopes::DEPRECATION.new_apps_from,
                            if names.len() == 1 { "it" } else { "them" },
                            crate::hint::command(&profile.name, "scopes")
                        ),
                    );
                }
            }
        }
        line("default tenant:", tenant_text(profile, tenant_name.clone()));
        for budget in &budgets {
            line("api budget:", budget_text(budget, now));
        }
        ctx.write_out(text.as_bytes())?;
    }
    match set {
        Some(_) => Ok(()),
        None => Err(session.no_token_set()),
    }
}

/// What `status` knows without the store — the profile, its client id, the store and its
/// state, the token endpoint, the default tenant — printed when the store cannot be read (locked,
/// unavailable), before the error; `--json` carries the error in an `error` object. Returns the
/// error, for the command to end with (its exit code, on stderr as every command's).
fn without_the_store(
    ctx: &Context,
    profile: &crate::config::Profile,
    store: &str,
    err: crate::error::Error,
) -> Result<crate::error::Error> {
    let code = err.exit_code() as i32;
    let tenant_name = profile
        .default_tenant
        .as_deref()
        .and_then(|id| super::tenants::known_name(&ctx.paths, &profile.name, id));
    if ctx.json {
        ctx.write_json(&json!({
            "profile": profile.name,
            "client_id": profile.client_id,
            "client_secret_stored": null,
            "store": store,
            "store_usable": false,
            "token_endpoint": profile.endpoints.token.as_str(),
            "default_tenant": profile.default_tenant,
            "default_tenant_name": tenant_name,
            "tokens": null,
            "error": { "exit_code": code, "message": err.to_string() },
        }))?;
    } else {
        let mut text = String::new();
        let mut line = |k: &str, v: String| text.push_str(&format!("{k:<15} {v}\n"));
        line("profile:", profile.name.clone());
        line(
            "client id:",
            profile.client_id.clone().unwrap_or_else(|| "(none)".into()),
        );
        line(
            "store:",
            format!("{store}: UNAVAILABLE (exit {code}, below)"),
        );
        line("client secret:", "unknown: the store cannot be read".into());
        line("tokens:", "unknown: the store cannot be read".into());
        line("token endpoint:", profile.endpoints.token.to_string());
        line("default tenant:", tenant_text(profile, tenant_name));
        ctx.write_out(text.as_bytes())?;
    }
    Ok(err)
}

/// The default tenant as `status` shows it: its name (as Xero last listed it) and id.
fn tenant_text(profile: &crate::config::Profile, name: Option<String>) -> String {
    match (&profile.default_tenant, name) {
        (Some(id), Some(name)) => format!("{name} ({id})"),
        (Some(id), None) => id.clone(),
        (None, _) => "(none)".into(),
    }
}

/// The API budgets Xero last reported, per tenant (`status --json`).
fn budgets_json(budgets: &[TenantBudget]) -> serde_json::Value {
    budgets
        .iter()
        .map(|b| {
            let seen = b.seen.as_ref();
            json!({
                "tenant": b.tenant,
                "minute_remaining": seen.and_then(|s| s.minute),
                "day_remaining": seen.and_then(|s| s.day),
                "app_minute_remaining": seen.and_then(|s| s.app_minute),
                "seen_at": seen.map(|s| s.at),
                "day_limit_until": b.day_stop_until,
            })
        })
        .collect()
}

/// One tenant's last-seen API budget as a line of `status`.
fn budget_text(b: &TenantBudget, now: i64) -> String {
    let number = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
    let mut text = match &b.seen {
        Some(s) => format!(
            "tenant {}: {} calls left this minute, {} today, as Xero said {} ({} ago)",
            b.tenant,
            number(s.minute),
            number(s.day),
            format_time(s.at),
            format_span(now.saturating_sub(s.at).max(0))
        ),
        None => format!("tenant {}", b.tenant),
    };
    if let Some(until) = b.day_stop_until.filter(|&u| u > now) {
        text.push_str(&format!(
            "; daily limit reached, calls accepted again from {}",
            format_time(until)
        ));
    }
    text
}

/// A refresh token older than this gets a warning from `status`: two weeks before it lapses
/// (60 days unused), so a weekly job or a person has time to act.
pub const KEEP_ALIVE_WARNING_AGE_SECS: i64 = 45 * 86_400;

/// The keep-alive warning for `set`, if its refresh token is older than 45 days (or lapsed).
/// None for sets without a refresh token, and when the clock was set back since the set was
/// stored (its age cannot be told then).
pub fn keep_alive_warning(profile: &str, set: &TokenSet, now: i64) -> Option<String> {
    set.refresh_token.as_ref()?;
    let age = now.checked_sub(set.obtained_at)?;
    if set.clock_set_back(now) || age <= KEEP_ALIVE_WARNING_AGE_SECS {
        return None;
    }
    let lapses = set.refresh_lapses_at();
    Some(if lapses > now {
        format!(
            "profile '{profile}': the refresh token is {} old and lapses {} (in {}) unless used: \
             run {} now, and schedule {} (docs/keep-alive.md)",
            format_span(age),
            format_time(lapses),
            format_span(lapses - now),
            crate::hint::command(profile, "refresh"),
            crate::hint::command(profile, "refresh --if-older-than 7"),
        )
    } else {
        format!(
            "profile '{profile}': the refresh token is {} old: Xero forgets a refresh token \
             unused for 60 days, so it most likely lapsed {}; authorise again with {}",
            format_span(age),
            format_time(lapses),
            crate::hint::command(profile, "login")
        )
    })
}

/// What `status` shows of the vault store: where, how this process signs in, and the refresh
/// lease (never the token).
struct VaultStatus {
    json: serde_json::Value,
    lines: Vec<(&'static str, String)>,
}

/// The vault store's part of `status`, for a profile that uses it.
async fn vault_status(profile: &crate::config::Profile) -> Option<VaultStatus> {
    if profile.store != crate::config::StoreKind::Vault {
        return None;
    }
    let store = crate::store::VaultStore::new(profile);
    let name = profile.name.clone();
    let wait = profile.store_timeout;
    let (auth, lease) = tokio::time::timeout(
        wait,
        tokio::task::spawn_blocking(move || {
            crate::stack::scrubbed(|| (store.auth_method(), store.lease_state(&name)))
        }),
    )
    .await
    .ok()?
    .ok()?;
    let v = &profile.vault;
    let (lease_text, lease_json) = match lease {
        Ok(None) => ("none held".to_string(), json!(null)),
        Ok(Some((holder, left))) => (
            format!("held by {holder} for {} s more", left.as_secs()),
            json!({ "holder": holder, "expires_in_secs": left.as_secs() }),
        ),
        Err(failure) => (
            format!("unknown: {} ({})", failure.cause, failure.fix),
            json!({ "error": failure.cause }),
        ),
    };
    let addr = v
        .addr
        .as_ref()
        .map(|a| a.as_str().trim_end_matches('/').to_string());
    Some(VaultStatus {
        json: json!({
            "addr": addr,
            "mount": v.mount,
            "prefix": v.prefix,
            "namespace": v.namespace,
            "auth": auth.to_string(),
            "lease": lease_json,
        }),
        lines: vec![
            (
                "vault:",
                format!(
                    "{} (mount {}, entries {}/{}/){}",
                    addr.unwrap_or_else(|| "(no vault_addr)".into()),
                    v.mount,
                    v.prefix,
                    profile.name,
                    v.namespace
                        .as_ref()
                        .map(|n| format!(", namespace {n}"))
                        .unwrap_or_default()
                ),
            ),
            ("vault auth:", auth.to_string()),
            ("refresh lease:", lease_text),
        ],
    })
}

/// Where the audit log is, or that it is off.
fn audit_log_text(paths: &crate::config::Paths) -> String {
    if crate::audit::is_off() {
        "off (XERO_AUTH_AUDIT=off)".into()
    } else {
        crate::audit::path(paths).display().to_string()
    }
}
