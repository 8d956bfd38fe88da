//! `xero-auth refresh`: refresh now, through the refresh protocol.

use clap::Args;
use serde_json::json;

use super::{Context, format_span, format_time, notify};
use crate::error::Result;
use crate::token_set::TokenSet;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth refresh                                # refresh now
  xero-auth refresh --if-older-than 7              # weekly keep-alive job (docs/keep-alive.md)")]
/// Arguments of `xero-auth refresh`.
pub struct RefreshArgs {
    /// Refresh only when the stored refresh token is more than DAYS days old (0-59); otherwise
    /// say it is not needed and make no request. For scheduled keep-alive jobs.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=59))]
    pub if_older_than: Option<u32>,
}

/// Refreshes and prints a one-line summary (no secret). With `--if-older-than`, only when the
/// refresh token is old enough.
pub async fn run(args: RefreshArgs, ctx: &Context) -> Result<()> {
    let result = refresh(args, ctx).await;
    if let Err(err) = &result {
        tell_the_person(ctx, err).await;
    }
    result
}

/// A refresh nobody watches (its stderr is not a terminal: a timer's, a cron job's) that only
/// the person can fix, or one failing while the refresh token nears its lapse: a desktop
/// notification (see `notify`).
async fn tell_the_person(ctx: &Context, err: &crate::error::Error) {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        return;
    }
    let Ok(session) = ctx.session() else {
        return;
    };
    let now = session.now();
    let problem = match notify::Problem::of(err) {
        Some(problem) => Some(problem),
        None => match session.stored_token_set().await {
            Ok(Some(set)) if set.refresh_token.is_some() => {
                let days = (set.refresh_lapses_at() - now).div_euclid(86_400);
                (0..=notify::LAPSE_WARNING_DAYS)
                    .contains(&days)
                    .then_some(notify::Problem::LapsesSoon(days))
            }
            _ => None,
        },
    };
    if let Some(problem) = problem {
        notify::on_problem(&session, problem, notify::Wait::ForDelivery);
    }
}

async fn refresh(args: RefreshArgs, ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    if let Some(days) = args.if_older_than {
        let set = session.require_token_set().await?;
        if let Some(why) = not_needed(&set, session.now(), days) {
            let name = &session.profile().name;
            if ctx.json {
                return ctx.write_json(&json!({
                    "profile": name,
                    "refreshed": false,
                    "reason": why,
                    "refresh_token_obtained_at": set.refresh_token.as_ref().map(|_| set.obtained_at),
                    "refresh_token_lapses_at": set.refresh_token.as_ref().map(|_| set.refresh_lapses_at()),
                }));
            }
            return ctx
                .write_out(format!("profile '{name}': refresh not needed: {why}\n").as_bytes());
        }
    }
    let refreshed = session.force_refresh().await?;
    let set = &refreshed.token_set;
    let expires_at = set.expires_at.unwrap_or(0);
    if ctx.json {
        return ctx.write_json(&json!({
            "profile": session.profile().name,
            "refreshed": true,
            "by_this_process": refreshed.requested,
            "expires_at": expires_at,
            "refresh_token_lapses_at": set.refresh_token.as_ref().map(|_| set.refresh_lapses_at()),
        }));
    }
    let who = if refreshed.requested {
        "refreshed"
    } else {
        "refreshed by another process meanwhile"
    };
    // A client-credentials set has no refresh token, so nothing lapses (as `status` says).
    let refresh_token = match set.refresh_token {
        Some(_) => format!(
            "refresh token lapses {} unless used",
            format_time(set.refresh_lapses_at())
        ),
        None => "no refresh token (client credentials)".to_string(),
    };
    let line = format!(
        "profile '{}' {who}: access token valid until {}, {refresh_token}\n",
        session.profile().name,
        format_time(expires_at),
    );
    ctx.write_out(line.as_bytes())
}

/// Why `refresh --if-older-than DAYS` makes no request for `set` at `now`, or `None` when it
/// must refresh. A set stored on a clock later than this one (the clock was set back) is
/// refreshed: its age cannot be told, and a refresh dates it on the clock as it is now.
fn not_needed(set: &TokenSet, now: i64, days: u32) -> Option<String> {
    if set.refresh_token.is_none() {
        return Some(
            "it has no refresh token to keep alive (a client-credentials connection gets a new \
             access token whenever it needs one)"
                .into(),
        );
    }
    if set.clock_set_back(now) {
        return None;
    }
    let age = now.saturating_sub(set.obtained_at).max(0);
    if age > i64::from(days) * 86_400 {
        return None;
    }
    Some(format!(
        "the refresh token is {} old, not more than {days} days; it lapses {} unless used",
        format_span(age),
        format_time(set.refresh_lapses_at())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::secret_from_str;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn set(obtained_days_ago: i64, refresh_token: bool) -> TokenSet {
        TokenSet {
 audit_key: None,
            refresh_token: refresh_token.then(|| secret_from_str("rt")),
            access_token: None,
            expires_at: None,
            token_type: "Bearer".into(),
            scopes: vec![],
            obtained_at: NOW - obtained_days_ago * DAY,
        }
    }

    #[test]
    fn a_refresh_token_younger_than_the_limit_needs_no_refresh() {
        let why = not_needed(&set(3, true), NOW, 7).unwrap();
        assert!(
            why.contains("3 days old") && why.contains("not more than 7 days"),
            "{why}"
        );
        assert!(
            not_needed(&set(7, true), NOW, 7).is_some(),
            "exactly 7 days is not older"
        );
    }

    #[test]
    fn an_older_one_is_refreshed() {
        assert!(not_needed(&set(8, true), NOW, 7).is_none());
        assert!(not_needed(&set(1, true), NOW, 0).is_none());
    }

    #[test]
    fn client_credentials_have_nothing_to_keep_alive() {
        assert!(
            not_needed(&set(100, false), NOW, 7)
                .unwrap()
                .contains("no refresh token")
        );
    }

    #[test]
    fn a_set_from_a_later_clock_is_refreshed() {
        assert!(not_needed(&set(-2, true), NOW, 7).is_none());
    }
}
