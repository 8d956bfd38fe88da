//! `xero-auth status`: what is stored for a profile, and when it lapses. Never a secret.

use clap::Args;
use serde_json::json;

use super::{Context, format_span, format_time};
use crate::error::{Error, Result};
use crate::store::client_secret_account;

#[derive(Debug, Args)]
/// Arguments of `xero-auth status` (none besides the global ones).
pub struct StatusArgs {}

/// Prints the profile's status; exits 3 when no token set is stored.
pub async fn run(_args: StatusArgs, ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    let profile = session.profile();
    let store = session.store();
    let secret_stored = store
        .get(&client_secret_account(&profile.name))
        .await?
        .is_some();
    let set = session.stored_token_set().await?;
    let now = session.now();

    if ctx.json {
        let tokens = set.as_ref().map(|s| {
            json!({
                "access_token_expires_at": s.expires_at,
                "access_token_valid": s.access_valid_for(now, 0),
                "refresh_token_stored": s.refresh_token.is_some(),
                "refresh_token_obtained_at": s.obtained_at,
                "refresh_token_lapses_at": s.refresh_lapses_at(),
                "scopes": s.scopes,
            })
        });
        ctx.write_json(&json!({
            "profile": profile.name,
            "client_id": profile.client_id,
            "client_secret_stored": secret_stored,
            "store": store.describe(),
            "token_endpoint": profile.endpoints.token.as_str(),
            "default_tenant": profile.default_tenant,
            "tokens": tokens,
        }))?;
    } else {
        let mut text = String::new();
        let mut line = |k: &str, v: String| text.push_str(&format!("{k:<15} {v}\n"));
        line("profile:", profile.name.clone());
        line(
            "client id:",
            profile
                .client_id
                .clone()
                .unwrap_or_else(|| "(none: run `xero-auth client set`)".into()),
        );
        line(
            "client secret:",
            if secret_stored {
                "stored".into()
            } else {
                "none (PKCE app)".into()
            },
        );
        line("store:", store.describe());
        line("token endpoint:", profile.endpoints.token.to_string());
        match &set {
            None => line("tokens:", "none stored".into()),
            Some(s) => {
                line(
                    "access token:",
                    match s.expires_at {
                        Some(at) if s.access_token.is_some() && at > now => {
                            format!(
                                "valid until {} (in {})",
                                format_time(at),
                                format_span(at - now)
                            )
                        }
                        Some(at) if s.access_token.is_some() => {
                            format!(
                                "expired {} ({}); refreshed on next use",
                                format_time(at),
                                format_span(at - now)
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
                    } else if lapses > now {
                        format!(
                            "obtained {} ({} old), lapses {} unless used",
                            format_time(s.obtained_at),
                            format_span(now - s.obtained_at),
                            format_time(lapses)
                        )
                    } else {
                        format!("lapsed {}: run `xero-auth login`", format_time(lapses))
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
            }
        }
        line(
            "default tenant:",
            profile
                .default_tenant
                .clone()
                .unwrap_or_else(|| "(none)".into()),
        );
        ctx.write_out(text.as_bytes())?;
    }
    match set {
        Some(_) => Ok(()),
        None => Err(Error::NothingStored {
            profile: profile.name.clone(),
            what: "token set",
            hint: "run `xero-auth login`, or `xero-auth import FILE` to move a token file into the keychain",
        }),
    }
}
