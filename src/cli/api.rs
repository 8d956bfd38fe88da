//! `xero-auth api [METHOD] PATH`: call the Xero API with the profile's token and tenant.

use std::io::Read;

use clap::Args;
use reqwest::Method;
use url::Url;

use super::Context;
use crate::config::Endpoints;
use crate::error::{Error, Result};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth api api.xro/2.0/Organisation
  xero-auth api POST api.xro/2.0/Contacts --data @contact.json
  xero-auth api -X PUT api.xro/2.0/Contacts --data -      # the body from stdin
  xero-auth api connections                               # no tenant needed
  xero-auth api api.xro/2.0/Invoices --tenant \"Demo Company (NZ)\"")]
/// Arguments of `xero-auth api`.
pub struct ApiArgs {
    /// `[METHOD] PATH`: PATH relative to the profile's api_url (e.g. `api.xro/2.0/Organisation`,
    /// `connections`), or a full URL on the same host. METHOD defaults to GET, or POST with --data.
    #[arg(value_name = "METHOD|PATH", num_args = 1..=2, required = true)]
    pub target: Vec<String>,
    /// The HTTP method, as curl and gh take it (`-X POST`); the same as giving it before PATH.
    #[arg(short = 'X', long = "method", value_name = "METHOD")]
    pub method: Option<String>,
    /// The request body: `@FILE`, `-` for stdin, or the JSON text itself.
    #[arg(long, value_name = "@FILE|-|JSON")]
    pub data: Option<String>,
    /// An extra request header (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The tenant to address, by id or by name (default: the profile's default tenant).
    #[arg(long, value_name = "ID|NAME")]
    pub tenant: Option<String>,
    /// Print the status line and the response headers before the body.
    #[arg(short = 'i', long)]
    pub include: bool,
    /// The longest total wait on 429 `Retry-After` before giving up (exit 6).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub max_wait: u64,
}

/// Largest request body read from a file or stdin.
const MAX_DATA: usize = 32 * 1024 * 1024;

/// Sends the request through the session (401 → one refresh and one retry; bounded 429 waits)
/// and prints the body. A non-2xx answer still prints the body, then exits non-zero.
pub async fn run(args: ApiArgs, ctx: &Context, verbose: bool) -> Result<()> {
    let (method, path) = match (args.target.as_slice(), args.method.as_deref()) {
        ([only], None) if is_method_word(only) => {
            return Err(Error::InvalidInput(format!(
                "'{only}' is an HTTP method, and no API path follows it: `xero-auth api {only} \
                 PATH` (e.g. `xero-auth api {only} api.xro/2.0/Organisation`)"
            )));
        }
        ([path], method) => (method, path.as_str()),
        ([method, path], None) => (Some(method.as_str()), path.as_str()),
        ([method, _], Some(flag)) => {
            return Err(Error::InvalidInput(format!(
                "two methods: '{method}' before the path and '{flag}' in -X: give one"
            )));
        }
        // clap allows only one or two; a library caller may build the arguments by hand.
        _ => {
            return Err(Error::InvalidInput(
                "give the API path, optionally after an HTTP method: `xero-auth api [METHOD] PATH`"
                    .into(),
            ));
        }
    };
    let method = match method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::InvalidInput(format!("'{m}' is not an HTTP method")))?,
        None if args.data.is_some() => Method::POST,
        None => Method::GET,
    };
    let session = ctx
        .session()?
        .with_max_wait(std::time::Duration::from_secs(args.max_wait));
    let url = resolve(&session.profile().endpoints, path)?;
    session.require_token_set_stored().await?;
    let session = super::tenants::with_tenant_named(session, args.tenant.as_deref()).await?;
    let needs_tenant = !url
        .path()
        .trim_start_matches('/')
        .starts_with("connections");
    let session = if needs_tenant {
        match super::tenants::or_the_only_one(ctx, session).await {
            (session, None) => session,
            (_, Some(why)) => {
                return Err(Error::InvalidInput(format!(
                    "no tenant for {url}: Xero needs a Xero-Tenant-Id on every API call, and {why}"
                )));
            }
        }
    } else {
        session
    };
    let body = match args.data.as_deref() {
        None => None,
        Some("-") => Some(read_all(&mut std::io::stdin().lock(), "stdin")?),
        Some(text) => match text.strip_prefix('@') {
            Some(path) => {
                let mut file = std::fs::File::open(path)
                    .map_err(|e| Error::io("cannot open the data file", path, e))?;
                Some(read_all(&mut file, path)?)
            }
            None => Some(text.as_bytes().to_vec()),
        },
    };

    let http = session.http().await?;
    let mut request = http.request(method.clone(), url.clone());
    let mut has_content_type = false;
    for header in &args.headers {
        let (name, value) = header.split_once(':').ok_or_else(|| {
            Error::InvalidInput(format!("header '{header}' is not 'Name: value'"))
        })?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("authorization") {
            return Err(Error::InvalidInput(
                "the Authorization header is set by xero-auth".into(),
            ));
        }
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        request = request.header(name, value.trim());
    }
    if let Some(body) = body {
        if !has_content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        request = request.body(body);
    }

    let response = session.send(request).await?;
    let status = response.status();
    if verbose {
        for name in [
            "X-MinLimit-Remaining",
            "X-DayLimit-Remaining",
            "X-AppMinLimit-Remaining",
        ] {
            if let Some(v) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
                eprintln!("{name}: {v}");
            }
        }
    }
    let mut out = Vec::new();
    if args.include {
        out.extend_from_slice(format!("{:?} {status}\r\n", response.version()).as_bytes());
        for (name, value) in response.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
    // Xero's answer for a token without the call's scope, as far as it can be told: a 401 whose
    // Detail is AuthorizationUnsuccessful (not AuthenticationUnsuccessful, a token refused), or
    // `WWW-Authenticate: ... insufficient_scope`.
    let insufficient_scope = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("insufficient_scope"));
    let bytes = response.bytes().await.map_err(|e| Error::Temporary {
        what: format!("{method} {url}"),
        cause: crate::http::describe_transport(&e),
        hint: None,
    })?;
    out.extend_from_slice(&bytes);
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        out.push(b'\n');
    }
    ctx.write_out(&out)?;

    if status.is_success() {
        return Ok(());
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("Detail")
                .or_else(|| v.get("detail"))
                .and_then(|d| d.as_str())
                .map(|d| d.chars().take(200).collect::<String>())
        });
    if status.as_u16() == 401 {
        let authorization = insufficient_scope
            || detail
                .as_deref()
                .is_some_and(|d| d.contains("AuthorizationUnsuccessful"));
        if authorization && let Some(e) = missing_scope(&session, &method, &url, 401).await {
            return Err(e);
        }
        return Err(Error::AccessRefused {
            profile: session.profile().name.clone(),
            endpoint: url.to_string(),
            detail,
        });
    }
    let mut summary = status.canonical_reason().unwrap_or("error").to_string();
    if let Some(d) = &detail {
        summary.push_str(&format!(" ({d})"));
    }
    if status.as_u16() == 404 && !path_looks_like_xeros(&url) {
        summary.push_str(
            "; Accounting API paths start with api.xro/2.0/ \
             (e.g. `xero-auth api api.xro/2.0/Organisation`)",
        );
    }
    if status.as_u16() == 403 {
        let name = &session.profile().name;
        let tenant = session.tenant().unwrap_or("(none)").to_string();
        // A 403 says only "forbidden". What the profile's token still reaches tells the cases
        // apart: nothing (the connections are gone — a revocation, perhaps by another profile of
        // the same app), the organisation but not this call (scopes), or others (the tenant).
        match super::tenants::connections_of(&session).await {
            Ok(connected) if connected.is_empty() => {
                return Err(Error::Disconnected {
                    profile: name.clone(),
                    endpoint: format!("{method} {url}"),
                    tenant,
                });
            }
            Ok(connected)
                if !connected
                    .iter()
                    .any(|c| c.tenant_id.eq_ignore_ascii_case(&tenant)) =>
            {
                summary.push_str(&format!(
                    "; tenant {tenant} is not among the organisations connected for profile \
                     '{name}' ({}): a mistyped id, or its connection was removed — choose one \
                     with {}, or connect it again with {}",
                    connected
                        .iter()
                        .map(|c| c.tenant_name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    crate::hint::command(name, "tenants use ID|NAME"),
                    crate::hint::command(name, "login")
                ));
            }
            _ => {
                if let Some(e) = missing_scope(&session, &method, &url, 403).await {
                    return Err(e);
                }
                summary.push_str(&format!(
                    "; check the tenant id {tenant} ({}) and the scopes the login asked for ({})",
                    crate::hint::command(name, "tenants"),
                    crate::hint::command(name, "status")
                ));
            }
        }
    }
    Err(Error::Http {
        endpoint: format!("{method} {url}"),
        status: status.as_u16(),
        summary,
    })
}

/// Xero refuses a call for want of a scope with a bare 401 or 403. When the stored token set
/// (its granted scopes, and the access token's own claim) has none of the scopes the path needs
/// (`crate::scopes`), the error names them, what the set has, and the login that adds one.
/// `None` when the table knows no scope for the path, or the set has one: then the refusal is
/// something else.
async fn missing_scope(
    session: &crate::session::Session,
    method: &Method,
    url: &Url,
    status: u16,
) -> Option<Error> {
    let needed = crate::scopes::needed_for(url.path(), method.as_str());
    let set = session.stored_token_set().await.ok().flatten()?;
    let granted = set.granted_scopes();
    if crate::scopes::grants(&granted, &needed) {
        return None;
    }
    let best = crate::scopes::narrowest(&needed, method.as_str())?;
    let profile = &session.profile().name;
    Some(Error::MissingScope {
        profile: profile.clone(),
        endpoint: format!("{method} {url}"),
        status,
        needed: needed
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(" or "),
        granted: if granted.is_empty() {
            "no scopes".into()
        } else {
            granted.join(" ")
        },
        login: crate::hint::command(profile, &format!("login --scope {}", best.name)),
    })
}

fn read_all(reader: &mut dyn Read, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader
        .take(MAX_DATA as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read the request body from", what, e))?;
    if buf.len() > MAX_DATA {
        return Err(Error::InvalidInput(format!(
            "the request body from {what} is larger than {MAX_DATA} bytes"
        )));
    }
    Ok(buf)
}

/// True for a word that can only be meant as an HTTP method (`GET`, `post`…), never a path.
fn is_method_word(word: &str) -> bool {
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(word))
}

/// Whether `url`'s path starts the way Xero's API paths do (`api.xro/…`, `connections`,
/// `payroll.xro/…`, `assets.xro/…`…): a 404 elsewhere gets a hint about the prefix.
fn path_looks_like_xeros(url: &Url) -> bool {
    let path = url.path().trim_start_matches('/');
    path.starts_with("connections") || path.split('/').next().is_some_and(|p| p.ends_with(".xro"))
}

/// `PATH` resolved against the API base: a path relative to it, or a full URL. Whatever the
/// spelling (upper-case schemes, backslashes, leading blanks, `//host`), the check is made on the
/// URL it resolves to: a URL that would take the access token off the API's origin is refused
/// ([`crate::xero::check_bearer_target`]).
pub fn resolve(endpoints: &Endpoints, path: &str) -> Result<Url> {
    let url = endpoints
        .api
        .join(path.trim_start_matches('/'))
        .map_err(|e| {
            Error::InvalidInput(format!("'{}' is not a path ({e})", path.escape_debug()))
        })?;
    crate::xero::check_bearer_target(endpoints, &url).map_err(|why| {
        Error::InvalidInput(format!(
            "the target {why}; give a path relative to api_url (e.g. api.xro/2.0/Organisation)"
        ))
    })?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xero() -> Endpoints {
        let url = |s: &str| Url::parse(s).unwrap();
        Endpoints {
            authorize: url("https://login.xero.com/identity/connect/authorize"),
            token: url("https://identity.xero.com/connect/token"),
            revocation: url("https://identity.xero.com/connect/revocation"),
            connections: url("https://api.xero.com/connections"),
            api: url("https://api.xero.com/"),
        }
    }

    #[test]
    fn paths_resolve_against_the_api_base_and_full_urls_must_stay_on_it() {
        let api = xero();
        assert_eq!(
            resolve(&api, "api.xro/2.0/Organisation").unwrap().as_str(),
            "https://api.xero.com/api.xro/2.0/Organisation"
        );
        assert_eq!(
            resolve(&api, "/connections").unwrap().as_str(),
            "https://api.xero.com/connections"
        );
        assert_eq!(
            resolve(&api, "api.xro/2.0/Contacts?page=2")
                .unwrap()
                .query(),
            Some("page=2")
        );
        assert!(resolve(&api, "https://api.xero.com/api.xro/2.0/Invoices").is_ok());
        assert!(resolve(&api, "HTTPS://API.XERO.COM/api.xro/2.0/Invoices").is_ok());
        assert!(resolve(&api, "https://evil.example/api.xro/2.0/Invoices").is_err());
        assert!(resolve(&api, "http://api.xero.com/x").is_err());
    }

    /// The spellings `Url::join` turns into another host, and the other ways to change the
    /// origin: each is refused, naming where the token may go.
    #[test]
    fn every_spelling_of_another_origin_is_refused_after_resolving() {
        let api = xero();
        for input in [
            "\\\\evil.example/x",
            "https:\\\\evil.example/x",
            "\\/evil.example/x",
            "HTTPS://evil.example/x",
            "Https://evil.example/x",
            " https://evil.example/x",
            "\thttps://evil.example/x",
            "ht\ttps://evil.example/x",
            "http:evil.example/x",
            "https://api.xero.com:8443/x",
            "http://api.xero.com/x",
            "https://user@api.xero.com/x",
            "https://user:pw@api.xero.com/x",
            "https://api.xero.com@evil.example/x",
            "javascript:alert(1)",
            "data:text/plain,x",
            "file:///etc/passwd",
        ] {
            let err = resolve(&api, input).unwrap_err().to_string();
            assert!(
                err.contains("the API origin https://api.xero.com")
                    && err.contains("sends the access token only"),
                "{input:?}: {err}"
            );
            assert!(!err.contains("pw"), "{input:?}: {err}");
        }
        // Leading slashes are trimmed: `//host/x` and `/\\host/x` are paths on the API host, as
        // is `https:host/x` (the API's own scheme, so a relative reference).
        for input in [
            "//evil.example/x",
            "/\\evil.example/x",
            "https:evil.example/x",
        ] {
            assert_eq!(
                resolve(&api, input).unwrap().as_str(),
                "https://api.xero.com/evil.example/x"
            );
        }
    }
}
