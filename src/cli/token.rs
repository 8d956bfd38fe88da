//! `xero-auth token`: print a valid access token for scripts.

use clap::Args;

use super::Context;
use crate::error::Result;
use crate::secret::{ExposeSecret, Zeroizing};
use crate::session::{DEFAULT_MARGIN_SECS, Session};
use crate::token_set::{RefusedToken, TokenSet};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth token                                  # the access token, on stdout
  xero-auth token --header | curl -H @- https://api.xero.com/connections
  xero-auth token --min-valid 900                  # valid for at least 15 more minutes
  xero-auth token --json --refused 3f1c9a0b7d2e4f68 # Xero answered 401 to that token: a new one
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
    /// Xero refused (401) the access token with this id (its `access_token_id` in the JSON
    /// output: 16 hex digits of its SHA-256): refresh, unless the stored token is newer already.
    #[arg(long, value_name = "ID")]
    pub refused: Option<RefusedToken>,
}

/// `token --json` and the `exec --server` endpoint's answer, one shape for both (documented
/// field by field in docs/scripting.md): the fields Xero's token response and its SDKs' token
/// sets use, with their units (`expires_at` in Unix seconds, as xero-python and xero-node keep
/// it), and ours beside them. Borrows the token rather than copying it into a `serde_json::Value`.
#[derive(serde::Serialize)]
pub(crate) struct TokenJson<'a> {
    access_token: &'a str,
    token_type: &'a str,
    /// Unix seconds; `null` when unknown.
    expires_at: Option<i64>,
    /// Seconds from now until `expires_at`.
    expires_in: Option<i64>,
    /// `expires_at` as RFC 3339 UTC.
    expires_at_rfc3339: Option<String>,
    /// The granted scopes, space-separated, as Xero's token response gives them.
    scope: String,
    /// 16 hex digits of the access token's SHA-256: sent back as `refused` after a 401.
    access_token_id: Option<String>,
    tenant_id: Option<&'a str>,
}

impl<'a> TokenJson<'a> {
    /// The document for `set` (whose access token is `token`), as `session` hands it out now.
    pub(crate) fn new(set: &TokenSet, token: &'a str, session: &'a Session) -> TokenJson<'a> {
        let expires_at = set.expires_at;
        TokenJson {
            access_token: token,
            token_type: "Bearer",
            expires_at,
            expires_in: expires_at.map(|at| at.saturating_sub(session.now()).max(0)),
            expires_at_rfc3339: expires_at.map(crate::time::format_time),
            scope: set.scopes.join(" "),
            access_token_id: set.access_token_id(),
            tenant_id: session.tenant(),
        }
    }
}

/// Prints the access token, refreshing first only when it expires within the margin.
pub async fn run(args: TokenArgs, ctx: &Context) -> Result<()> {
    let session = ctx.session()?;
    let started = session.now();
    let set = match &args.refused {
        Some(refused) => {
            session
                .token_set_replacing(refused, args.min_valid as i64)
                .await?
        }
        None => session.valid_token_set(args.min_valid as i64).await?,
    };
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
        let doc = TokenJson::new(&set, token, &session);
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
