//! `xero-auth refresh`: refresh now, through the refresh protocol.

use clap::Args;
use serde_json::json;

use super::{Context, format_time};
use crate::error::Result;

#[derive(Debug, Args)]
/// Arguments of `xero-auth refresh` (none).
pub struct RefreshArgs {}

/// Refreshes and prints a one-line summary (no secret).
pub async fn run(_args: RefreshArgs, ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    let refreshed = session.force_refresh().await?;
    let set = &refreshed.token_set;
    let expires_at = set.expires_at.unwrap_or(0);
    if ctx.json {
        return ctx.write_json(&json!({
            "profile": session.profile().name,
            "refreshed": true,
            "by_this_process": refreshed.requested,
            "expires_at": expires_at,
            "refresh_token_lapses_at": set.refresh_lapses_at(),
        }));
    }
    let who = if refreshed.requested {
        "refreshed"
    } else {
        "refreshed by another process meanwhile"
    };
    let line = format!(
        "profile '{}' {who}: access token valid until {}, refresh token lapses {} unless used\n",
        session.profile().name,
        format_time(expires_at),
        format_time(set.refresh_lapses_at())
    );
    ctx.write_out(line.as_bytes())
}
