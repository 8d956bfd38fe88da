//! `xero-auth token`: print a valid access token for scripts.

use clap::Args;

use super::Context;
use crate::error::Result;
use crate::secret::{ExposeSecret, Zeroizing};
use crate::session::DEFAULT_MARGIN_SECS;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth token                                  # the access token, on stdout
  xero-auth token --header | curl -H @- https://api.xero.com/connections
  xero-auth token --min-valid 900                  # valid for at least 15 more minutes
  eval \"$(xero-auth token --env)\"                  # XERO_ACCESS_TOKEN and XERO_TENANT_ID")]
/// Arguments of `xero-auth token`.
pub struct TokenArgs {
    /// Print `Authorization: Bearer …`, ready for `curl -H`.
    #[arg(long, conflicts_with = "env")]
    pub header: bool,
    /// Print `export XERO_ACCESS_TOKEN=…` (and XERO_TENANT_ID) lines for `eval`.
    #[arg(long)]
    pub env: bool,
    /// Refresh first when the token expires within this many seconds: 0 to 1500 (an access token
    /// lasts 30 minutes, 1800 s).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MARGIN_SECS as u64,
          value_parser = clap::value_parser!(u64).range(0..=1500))]
    pub min_valid: u64,
}

/// `token --json`, borrowing the token rather than copying it into a `serde_json::Value`.
#[derive(serde::Serialize)]
struct TokenJson<'a> {
    access_token: &'a str,
    expires_at: Option<i64>,
    token_type: &'a str,
    tenant_id: Option<&'a str>,
}

/// Prints the access token, refreshing first only when it expires within the margin.
pub async fn run(args: TokenArgs, ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    let started = session.now();
    let set = session.valid_token_set(args.min_valid as i64).await?;
    // -v says which it was: a token handed out as stored makes no request, so nothing else
    // would be said.
    if let Some(at) = set.expires_at {
        let source = if set.obtained_at >= started {
            "just refreshed"
        } else {
            "as stored, no request needed"
        };
        tracing::info!(
            "profile '{}': access token valid until {} (in {}), {source}",
            session.profile().name,
            super::format_time(at),
            super::format_span(at - session.now())
        );
    }
    let token = set
        .require_access_token(&session.profile().name)?
        .expose_secret();

    // One buffer, sized up front (no reallocation leaves a copy), written in one call.
    let mut out = Zeroizing::new(Vec::with_capacity(2 * token.len() + 256));
    if ctx.json {
        let doc = TokenJson {
            access_token: token,
            expires_at: set.expires_at,
            token_type: &set.token_type,
            tenant_id: session.profile().default_tenant.as_deref(),
        };
        serde_json::to_writer(&mut *out, &doc).expect("JSON to memory");
    } else if args.env {
        // The line is meant for `eval`: refuse anything a shell could read as more than a word.
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
        {
            return Err(crate::error::Error::InvalidInput(format!(
                "the access token has characters that are unsafe in a shell line; use {} or `exec`",
                crate::hint::command(&ctx.profile_name, "token")
            )));
        }
        out.extend_from_slice(b"export XERO_ACCESS_TOKEN='");
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(b"'");
        if let Some(tenant) = &session.profile().default_tenant {
            // Tenant ids are uuids; anything else is not written into a shell line.
            if tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                out.extend_from_slice(format!("\nexport XERO_TENANT_ID='{tenant}'").as_bytes());
            }
        }
    } else {
        if args.header {
            out.extend_from_slice(b"Authorization: Bearer ");
        }
        out.extend_from_slice(token.as_bytes());
    }
    out.push(b'\n');
    ctx.write_out(&out)
}
