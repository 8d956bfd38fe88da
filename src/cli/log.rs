//! `xero-auth log`: the audit log ([`crate::audit`]) as a table, or as JSON lines.

use clap::Args;
use serde_json::{Map, Value};

use super::Context;
use crate::error::{Error, Result};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth log                          # every event, oldest first
  xero-auth log --since 1h --event token # the tokens handed out in the last hour
  xero-auth log --profile work --json    # profile work's events, one JSON object per line
  xero-auth log --all-profiles           # every profile's events")]
/// Arguments of `xero-auth log`.
pub struct LogArgs {
    /// Only events newer than this long ago (`30m`, `1h`, `2days`).
    #[arg(long, value_name = "SPAN")]
    pub since: Option<String>,
    /// Every profile's events, not only those of the profile `--profile` names (`default`
    /// unless given).
    #[arg(long)]
    pub all_profiles: bool,
    /// Only events of this kind (`token`, `refresh`, `login`, `api-call`, `mcp-tool`, ...).
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
}

/// Prints the events of the log that pass the filters.
pub async fn run(args: LogArgs, ctx: &Context) -> Result<()> {
    let since = match &args.since {
        Some(text) => {
            let span = humantime::parse_duration(text).map_err(|e| {
                Error::InvalidInput(format!(
                    "--since {text:?} is not a span of time ({e}); give one like 30m, 1h or 2days"
                ))
            })?;
            let secs = i64::try_from(span.as_secs()).unwrap_or(i64::MAX);
            Some(crate::time::format_time(ctx.clock.now().saturating_sub(secs)))
        }
        None => None,
    };
    let text = |line: &Map<String, Value>, key: &str| {
        line.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let lines: Vec<_> = crate::audit::read_all(&ctx.paths)?
        .into_iter()
        // RFC 3339 UTC times of one format compare as text.
        .filter(|l| since.as_ref().is_none_or(|s| text(l, "time") >= *s))
        .filter(|l| args.all_profiles || text(l, "profile") == ctx.profile_name)
        .filter(|l| args.event.as_ref().is_none_or(|e| text(l, "event") == *e))
        .collect();
    let mut out = String::new();
    if ctx.json {
        for line in &lines {
            out.push_str(&Value::Object(line.clone()).to_string());
            out.push('\n');
        }
    } else {
        out.push_str(&format!(
            "{:<20} {:<15} {:<12} {:<10} {:<7} {:<8} {}\n",
            "TIME", "EVENT", "PROFILE", "VIA", "OUTCOME", "PID", "DETAIL"
        ));
        for line in &lines {
            let pid = line
                .get("requester")
                .and_then(|r| r.get("pid"))
                .map(Value::to_string)
                .unwrap_or_default();
            let outcome = match line.get("exit").and_then(Value::as_i64) {
                Some(0) | None => text(line, "outcome"),
                Some(code) => format!("exit {code}"),
            };
            let detail: Vec<String> = ["step", "tool", "method", "path", "status", "tenant"]
                .iter()
                .filter_map(|k| line.get(*k).map(|v| format!("{k}={}", plain(v))))
                .collect();
            out.push_str(&format!(
                "{:<20} {:<15} {:<12} {:<10} {:<7} {:<8} {}\n",
                text(line, "time"),
                text(line, "event"),
                text(line, "profile"),
                text(line, "via"),
                outcome,
                pid,
                detail.join(" ")
            ));
        }
        if lines.is_empty() {
            out.push_str(&format!(
                "(no events{}; the log is {})\n",
                if args.since.is_some() || !args.all_profiles || args.event.is_some() {
                    " match"
                } else {
                    ""
                },
                crate::audit::path(&ctx.paths).display()
            ));
        }
    }
    ctx.write_out(out.as_bytes())
}

/// A JSON value as a table shows it: strings without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
