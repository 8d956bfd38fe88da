//! The accept loop, per-connection handling (faults included) and the routes.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::http::{Conn, ReadError, Request, Response};
use crate::sha256::pkce_s256;
use crate::state::{
    AccessCheck, CODE_SECS, Client, CodeEntry, GrantResult, State, refused_broad_scope,
    scope_allows,
};
use crate::util::{
    form_get, http_date, normalize_scope, parse_form, percent_decode, percent_encode, random_hex,
    token_expired_date,
};
use crate::{AuthorizeDecision, ClientAuth, Counter, Fault, RequestRecord, Target};

/// The state shared by the handle and every connection task.
pub type Shared = Arc<Mutex<State>>;

/// Locks the state. A panic while it was held (in a test thread) does not make the
/// data unusable, so poisoning is ignored.
pub fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts connections until `shutdown` fires; each connection is its own task.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_conn(shared.clone(), stream));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// Which route a path belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Endpoint {
    Authorize,
    Token,
    Revocation,
    Connections,
    Api,
    Discovery,
    Control,
    NotFound,
}

impl Endpoint {
    /// Paths are matched in any case, as Xero's are: Xero documents `GET /connections`, while
    /// its own xero-python SDK requests `GET /Connections` (`IdentityApi.get_connections`), and
    /// Xero's accounting paths appear in either case in its documentation
    /// (`/api.xro/2.0/Invoices`, `/api.xro/1.0/invoice`).
    fn of(path: &str) -> Endpoint {
        match path.to_ascii_lowercase().as_str() {
            "/identity/connect/authorize" => Endpoint::Authorize,
            "/connect/token" => Endpoint::Token,
            "/connect/revocation" => Endpoint::Revocation,
            "/connections" => Endpoint::Connections,
            "/.well-known/openid-configuration" => Endpoint::Discovery,
            p if p.starts_with("/connections/") => Endpoint::Connections,
            p if p.starts_with("/api.xro/2.0/") => Endpoint::Api,
            p if p.starts_with("/_fake/") => Endpoint::Control,
            _ => Endpoint::NotFound,
        }
    }

    /// The fault target of this route; routes without one only see `Target::Any`.
    fn target(self) -> Option<Target> {
        match self {
            Endpoint::Token => Some(Target::Token),
            Endpoint::Revocation => Some(Target::Revocation),
            Endpoint::Connections => Some(Target::Connections),
            Endpoint::Api => Some(Target::Api),
            _ => None,
        }
    }
}

async fn serve_conn(shared: Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    let request = conn.read_request().await;
    let date = http_date(lock(&shared).now());
    let req = match request {
        Ok(req) => req,
        Err(ReadError::Gone) => return,
        Err(ReadError::Malformed(why)) => {
            let resp = Response::text(400, &format!("Bad Request: {why}\n"));
            conn.respond_and_drain(&resp, &date).await;
            return;
        }
        Err(ReadError::TooLarge(req)) => {
            // Still a request that reached the fake: count and record it.
            let endpoint = Endpoint::of(&req.path);
            if endpoint != Endpoint::Control {
                let mut st = lock(&shared);
                let index = record(&mut st, endpoint, &req);
                st.requests[index].status = Some(413);
            }
            let resp = Response::text(413, "Request body larger than 1 MiB\n");
            conn.respond_and_drain(&resp, &date).await;
            return;
        }
    };

    let endpoint = Endpoint::of(&req.path);
    if endpoint == Endpoint::Control {
        let resp = control(&shared, &req);
        conn.respond(&resp, &date).await;
        return;
    }

    // Count and record the request, and pick its fault, before doing anything else:
    // a request that is then reset or faulted still "reached" the fake.
    let (fault, index) = {
        let mut st = lock(&shared);
        let index = record(&mut st, endpoint, &req);
        let fault = st.take_fault(endpoint.target());
        st.requests[index].fault = fault.clone();
        (fault, index)
    };

    // Requests in progress per tenant, from arrival to the end of the answer (or of the
    // connection): Xero refuses a request beyond its limit at once with a 429.
    let mut _in_progress = None;
    if endpoint == Endpoint::Api {
        let refused = {
            let mut st = lock(&shared);
            let key = tenant_key(&st, &req).unwrap_or_default();
            if st.enter(&key) {
                _in_progress = Some(InProgress {
                    shared: shared.clone(),
                    tenant: key,
                });
                None
            } else {
                st.requests[index].status = Some(429);
                let limits = st.limits_for(Some(&key));
                Some(
                    with_limits(Response::empty(429), limits)
                        .with_header("Retry-After", "1")
                        .with_header("X-Rate-Limit-Problem", "concurrent"),
                )
            }
        };
        if let Some(resp) = refused {
            conn.respond(&resp, &date).await;
            return;
        }
    }

    let process = |shared: &Shared| {
        let mut st = lock(shared);
        let resp = handle(&mut st, endpoint, &req);
        st.requests[index].status = Some(resp.status);
        resp
    };
    let answered = |shared: &Shared, resp: Response| {
        let mut st = lock(shared);
        st.requests[index].status = Some(resp.status);
        let limits = st.limits_for(tenant_key(&st, &req).as_deref());
        drop(st);
        if endpoint == Endpoint::Api {
            with_limits(resp, limits)
        } else {
            resp
        }
    };

    match fault {
        None => {
            let resp = process(&shared);
            conn.respond(&resp, &date).await;
        }
        Some(Fault::Delay(d)) => {
            // The work is done after the delay even if the client has given up by then,
            // as a slow real server would.
            tokio::time::sleep(d).await;
            let resp = process(&shared);
            conn.respond(&resp, &date).await;
        }
        Some(Fault::Reset) => {
            lock(&shared).requests[index].status = None;
            conn.reset();
        }
        Some(Fault::ResetAfterProcessing) => {
            // The server has done the work (e.g. rotated the refresh token) but the
            // client never hears about it. This is exactly the situation Xero's 30-minute
            // grace period exists for: the client must retry with the old refresh token
            // rather than conclude the session is lost.
            process(&shared);
            lock(&shared).requests[index].status = None;
            conn.reset();
        }
        Some(Fault::TruncatedJson) => {
            let mut resp = process(&shared);
            resp.status = 200;
            resp.set_header("Content-Type", "application/json; charset=utf-8");
            lock(&shared).requests[index].status = Some(200);
            conn.respond_truncated(&resp, &date).await;
        }
        Some(Fault::ServerError) => {
            let resp = answered(
                &shared,
                Response::html(
                    500,
                    "<html><head><title>500 Internal Server Error</title></head>\
                     <body><h1>Internal Server Error</h1></body></html>\n",
                ),
            );
            conn.respond(&resp, &date).await;
        }
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let (_, day, app) = lock(&shared).limits();
            let resp = answered(&shared, Response::empty(429));
            // `answered` added the current limits for API routes; a 429 says the
            // per-minute one is used up, whatever the target.
            let mut resp = with_limits(resp, (0, day, app));
            resp.set_header("Retry-After", retry_after_secs.to_string());
            resp.set_header("X-Rate-Limit-Problem", "minute");
            conn.respond(&resp, &date).await;
        }
        Some(Fault::Html) => {
            let resp = answered(&shared, Response::html(200, LOGIN_PAGE));
            conn.respond(&resp, &date).await;
        }
        Some(Fault::Unauthorized) => {
            let resp = answered(&shared, unauthorized("AuthenticationUnsuccessful"));
            conn.respond(&resp, &date).await;
        }
        Some(Fault::OAuthError(error)) => {
            let resp = answered(&shared, Response::json(400, &json!({ "error": error })));
            conn.respond(&resp, &date).await;
        }
    }
}

/// One API request in progress; counted out when dropped, however the connection ends.
struct InProgress {
    shared: Shared,
    tenant: String,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        lock(&self.shared).leave(&self.tenant);
    }
}

/// A page like the one a captive portal or an intercepting proxy returns.
const LOGIN_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Login | Xero Accounting Software</title></head>\
<body><h1>Log in to Xero</h1><form method=\"post\" action=\"/login\">\
<input name=\"email\" type=\"email\"><input name=\"password\" type=\"password\">\
<button type=\"submit\">Log in</button></form></body></html>\n";

/// Counts the request and appends its record; returns the record's index.
fn record(st: &mut State, endpoint: Endpoint, req: &Request) -> usize {
    let form = form_of(req);
    let grant_type = (endpoint == Endpoint::Token)
        .then(|| form_get(&form, "grant_type").map(str::to_string))
        .flatten();
    match endpoint {
        Endpoint::Authorize => st.bump(Counter::Authorize),
        Endpoint::Token => {
            st.bump(Counter::TokenRequests);
            match grant_type.as_deref() {
                Some("refresh_token") => st.bump(Counter::Refresh),
                Some("authorization_code") => st.bump(Counter::AuthorizationCode),
                Some("client_credentials") => st.bump(Counter::ClientCredentials),
                _ => {}
            }
        }
        Endpoint::Revocation => st.bump(Counter::Revocation),
        Endpoint::Connections => st.bump(Counter::Connections),
        Endpoint::Api => {
            st.bump(Counter::Api);
            // Kept whatever happens next (fault, 401, 429…): a test asks what the
            // client sent, not what the fake did with it.
            st.last_api_body = Some(req.body.clone());
        }
        Endpoint::Discovery | Endpoint::Control | Endpoint::NotFound => {}
    }
    let client_auth = if basic_header(req).is_some() {
        ClientAuth::Basic
    } else if form_get(&form, "client_secret").is_some() {
        ClientAuth::Post
    } else if form_get(&form, "client_id").is_some() {
        ClientAuth::PublicClientId
    } else {
        ClientAuth::None
    };
    st.requests.push(RequestRecord {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        grant_type,
        client_auth,
        has_bearer: req.bearer().is_some(),
        status: None,
        fault: None,
        tenant: req.header("xero-tenant-id").map(str::to_string),
        content_type: req.header("content-type").map(str::to_string),
    });
    st.requests.len() - 1
}

/// The request body as form pairs, if it is `application/x-www-form-urlencoded`.
fn form_of(req: &Request) -> Vec<(String, String)> {
    let is_form = req.header("content-type").is_some_and(|ct| {
        ct.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if is_form {
        parse_form(&String::from_utf8_lossy(&req.body))
    } else {
        Vec::new()
    }
}

fn handle(st: &mut State, endpoint: Endpoint, req: &Request) -> Response {
    match endpoint {
        Endpoint::Authorize => authorize(st, req),
        Endpoint::Token => token(st, req),
        Endpoint::Revocation => revocation(st, req),
        Endpoint::Connections => connections(st, req),
        Endpoint::Api => api(st, req),
        Endpoint::Discovery => discovery(st, req),
        Endpoint::Control | Endpoint::NotFound => not_found(),
    }
}

fn not_found() -> Response {
    Response::text(404, "Not Found\n")
}

fn method_not_allowed(allow: &str) -> Response {
    Response::text(405, "Method Not Allowed\n").with_header("Allow", allow)
}

fn oauth_error(code: &str) -> Response {
    Response::json(400, &json!({ "error": code })).with_header("Cache-Control", "no-store")
}

/// An OAuth error with Xero's `error_description`.
fn oauth_error_described(code: &str, description: &str) -> Response {
    Response::json(
        400,
        &json!({ "error": code, "error_description": description }),
    )
    .with_header("Cache-Control", "no-store")
}

// ---------------------------------------------------------------- authorize

/// Xero's error page for a bad authorize request (no redirect: the redirect URI is
/// not trusted yet).
fn error_page(message: &str) -> Response {
    Response::html(
        400,
        &format!(
            "<!DOCTYPE html>\n<html><head><title>Error | Xero</title></head><body>\
             <h1>Sorry, something went wrong</h1><p>Error: {message}</p></body></html>\n"
        ),
    )
}

/// Whether Xero would accept `uri` as a redirect URI of `client`: https, or http to
/// the loopback host only; no fragment; and when the app has registered URIs, one of
/// them exactly.
fn redirect_ok(client: &Client, uri: &str) -> bool {
    if !client.redirect_uris.is_empty() {
        return client.redirect_uris.iter().any(|r| r == uri);
    }
    if uri.contains('#') {
        return false;
    }
    let lower = uri.to_ascii_lowercase();
    let (https, rest) = if let Some(rest) = lower.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = lower.strip_prefix("http://") {
        (false, rest)
    } else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return false;
    }
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    https || matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// `uri` plus query parameters (`?` or `&` as needed).
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_string();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&percent_encode(v));
        sep = '&';
    }
    out
}

fn redirect(location: String) -> Response {
    Response::empty(302)
        .with_header("Location", location)
        .with_header("Cache-Control", "no-store")
}

fn authorize(st: &mut State, req: &Request) -> Response {
    if req.method != "GET" {
        return method_not_allowed("GET");
    }
    let q = parse_form(&req.query);
    let get = |k| form_get(&q, k).filter(|v| !v.is_empty());
    let Some(client_id) = get("client_id") else {
        return error_page("unauthorized_client : Invalid client_id");
    };
    let Some(client) = st.clients.get(client_id) else {
        return error_page("unauthorized_client : Invalid client_id");
    };
    let redirect_uri = get("redirect_uri").unwrap_or_default();
    if !redirect_ok(client, redirect_uri) {
        return error_page("unauthorized_client : Invalid redirect_uri");
    }
    let public = client.secret.is_none();

    // From here on errors go back to the app, with its state.
    let state = get("state");
    let fail = |error: &str| {
        let mut params = vec![("error", error)];
        params.extend(state.map(|s| ("state", s)));
        redirect(with_query(redirect_uri, &params))
    };
    if get("response_type") != Some("code") {
        return fail("unsupported_response_type");
    }
    let scope = normalize_scope(get("scope").unwrap_or_default());
    if scope.is_empty() {
        return fail("invalid_scope");
    }
    // A broad scope asked of an app that takes only granular ones: Xero's error page, not a
    // redirect (as for a restricted scope the app may not ask for).
    if refused_broad_scope(client, &scope).is_some() {
        return error_page("unauthorized_client : Invalid scope for client");
    }
    let challenge = get("code_challenge");
    match (challenge, get("code_challenge_method")) {
        // Public apps must use PKCE.
        (None, _) if public => return fail("invalid_request"),
        (None, _) => {}
        (Some(c), Some("S256")) if (43..=128).contains(&c.len()) => {}
        // Xero only does S256; no plain.
        (Some(_), _) => return fail("invalid_request"),
    }
    if st.decision == AuthorizeDecision::Deny {
        return fail("access_denied");
    }

    let code = random_hex(64);
    st.codes.insert(
        code.clone(),
        CodeEntry {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            scope: scope.clone(),
            challenge: challenge.map(str::to_string),
            created: st.now(),
            used: false,
        },
    );
    let session_state = format!("{}.{}", random_hex(43), random_hex(32));
    let mut params = vec![("code", code.as_str()), ("scope", scope.as_str())];
    params.extend(state.map(|s| ("state", s)));
    params.push(("session_state", &session_state));
    redirect(with_query(redirect_uri, &params))
}

// ---------------------------------------------------------------- token

/// The `user:password` of an `Authorization: Basic` header, if there is one.
fn basic_header(req: &Request) -> Option<&str> {
    let v = req.header("authorization")?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
}

/// Authenticates the client of a token or revocation request. Returns the client id and
/// whether it is a confidential client, or the error response.
fn authenticate(
    st: &State,
    req: &Request,
    form: &[(String, String)],
) -> Result<(String, bool), Response> {
    let invalid = || Err(oauth_error("invalid_client"));
    let (client_id, secret) = if let Some(b64) = basic_header(req) {
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let Some(decoded) = engine
            .decode(b64)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
        else {
            return invalid();
        };
        let Some((id, secret)) = decoded.split_once(':') else {
            return invalid();
        };
        // Only one authentication method per request (RFC 6749 §2.3).
        if form_get(form, "client_secret").is_some()
            || form_get(form, "client_id").is_some_and(|body_id| body_id != id)
        {
            return invalid();
        }
        (id.to_string(), Some(secret.to_string()))
    } else {
        let Some(id) = form_get(form, "client_id") else {
            return invalid();
        };
        (
            id.to_string(),
            form_get(form, "client_secret").map(str::to_string),
        )
    };
    // An empty secret is no secret (as IdentityServer, behind Xero's identity service,
    // parses it): fine for a public app, not enough for a confidential one.
    let secret = secret.filter(|s| !s.is_empty());
    let Some(client) = st.clients.get(&client_id) else {
        return invalid();
    };
    match (&client.secret, &secret) {
        (None, None) => Ok((client_id, false)),
        // RFC 6749 says Basic credentials are form-encoded before base64; Xero's server
        // decodes them. Xero's secrets never need encoding, so accept either form.
        (Some(want), Some(got)) if want == got || *want == percent_decode(got) => {
            Ok((client_id, true))
        }
        _ => invalid(),
    }
}

fn token(st: &mut State, req: &Request) -> Response {
    if req.method != "POST" {
        return method_not_allowed("POST");
    }
    let form = form_of(req);
    if !req.header("content-type").is_some_and(|ct| {
        ct.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    }) {
        return oauth_error("invalid_request");
    }
    let (client_id, confidential) = match authenticate(st, req, &form) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let result: GrantResult = match form_get(&form, "grant_type") {
        Some("refresh_token") => match form_get(&form, "refresh_token").filter(|t| !t.is_empty()) {
            None => Err("invalid_request"),
            Some(rt) => st.refresh_grant(&client_id, rt),
        },
        Some("authorization_code") => code_grant(st, &client_id, &form),
        Some("client_credentials") if !confidential => Err("unauthorized_client"),
        Some("client_credentials")
            if st.clients.get(&client_id).is_some_and(|c| {
                refused_broad_scope(c, form_get(&form, "scope").unwrap_or_default()).is_some()
            }) =>
        {
            return oauth_error_described(
                "invalid_scope",
                "Client credentials scope validation failed",
            );
        }
        Some("client_credentials") => {
            Ok(st.client_credentials_grant(&client_id, form_get(&form, "scope")))
        }
        _ => Err("unsupported_grant_type"),
    };
    match result {
        Ok(body) => Response::json(200, &body)
            .with_header("Cache-Control", "no-store, no-cache, max-age=0")
            .with_header("Pragma", "no-cache"),
        Err(code) => oauth_error(code),
    }
}

fn code_grant(st: &mut State, client_id: &str, form: &[(String, String)]) -> GrantResult {
    let now = st.now();
    let code = form_get(form, "code").unwrap_or_default();
    let Some(entry) = st.codes.get_mut(code) else {
        return Err("invalid_grant");
    };
    // Any presentation consumes the code, even one that fails below (as IdentityServer,
    // which Xero's identity service is built on, removes the code before validating).
    if std::mem::replace(&mut entry.used, true) {
        return Err("invalid_grant");
    }
    if entry.client_id != client_id
        || now >= entry.created + CODE_SECS
        || form_get(form, "redirect_uri") != Some(entry.redirect_uri.as_str())
    {
        return Err("invalid_grant");
    }
    if let Some(challenge) = &entry.challenge {
        let verifier = form_get(form, "code_verifier").unwrap_or_default();
        if !(43..=128).contains(&verifier.len()) || pkce_s256(verifier) != *challenge {
            return Err("invalid_grant");
        }
    }
    let scope = entry.scope.clone();
    if st
        .clients
        .get(client_id)
        .is_some_and(|c| refused_broad_scope(c, &scope).is_some())
    {
        return Err("invalid_scope");
    }
    Ok(st.new_family(client_id, &scope))
}

fn revocation(st: &mut State, req: &Request) -> Response {
    if req.method != "POST" {
        return method_not_allowed("POST");
    }
    let form = form_of(req);
    let (client_id, _) = match authenticate(st, req, &form) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    match form_get(&form, "token").filter(|t| !t.is_empty()) {
        None => oauth_error("invalid_request"),
        Some(token) => {
            st.revoke(&client_id, token);
            Response::empty(200)
        }
    }
}

// ---------------------------------------------------------------- API side

fn unauthorized(detail: &str) -> Response {
    Response::json(
        401,
        &json!({"Type": null, "Title": "Unauthorized", "Status": 401, "Detail": detail}),
    )
}

/// Checks the bearer token of an API or connections request. `Ok(client_credentials)`.
fn bearer_ok(st: &State, req: &Request) -> Result<bool, Response> {
    let Some(token) = req.bearer() else {
        return Err(unauthorized("AuthenticationUnsuccessful"));
    };
    match st.check_access(token) {
        AccessCheck::Unknown => Err(unauthorized("AuthenticationUnsuccessful")),
        AccessCheck::Expired(at) => Err(unauthorized(&format!(
            "TokenExpired: token expired at {}",
            token_expired_date(at)
        ))),
        AccessCheck::Valid { client_credentials } => Ok(client_credentials),
    }
}

fn connections(st: &mut State, req: &Request) -> Response {
    let id = strip_prefix_any_case(&req.path, "/connections/");
    match (req.method.as_str(), id) {
        ("GET", None) => {}
        ("DELETE", Some(id)) if !id.is_empty() && !id.contains('/') => {}
        (_, None) => return method_not_allowed("GET"),
        (_, Some(id)) if !id.is_empty() && !id.contains('/') => {
            return method_not_allowed("DELETE");
        }
        _ => return not_found(),
    }
    if let Err(resp) = bearer_ok(st, req) {
        return resp;
    }
    if let Some(id) = id {
        return if st.remove_connection(&percent_decode(id)) {
            Response::empty(204)
        } else {
            not_found()
        };
    }
    let q = parse_form(&req.query);
    let event = form_get(&q, "authEventId");
    let list: Vec<Value> = st
        .tenants
        .iter()
        .filter(|t| event.is_none_or(|e| t.auth_event_id.eq_ignore_ascii_case(e)))
        .map(|t| {
            json!({
                "id": t.id,
                "authEventId": t.auth_event_id,
                "tenantId": t.tenant_id,
                "tenantType": t.tenant_type,
                "tenantName": t.tenant_name,
                "createdDateUtc": t.created_date_utc,
                "updatedDateUtc": t.updated_date_utc,
            })
        })
        .collect();
    Response::json(200, &Value::Array(list))
}

/// `path` without `prefix`, matched in any ASCII case (as [`Endpoint::of`] routes).
fn strip_prefix_any_case<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let head = path.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| path.get(prefix.len()..))
        .flatten()
}

fn with_limits(resp: Response, (minute, day, app): (usize, usize, usize)) -> Response {
    let mut resp = resp;
    resp.set_header("X-MinLimit-Remaining", minute.to_string());
    resp.set_header("X-DayLimit-Remaining", day.to_string());
    resp.set_header("X-AppMinLimit-Remaining", app.to_string());
    resp
}

fn api(st: &mut State, req: &Request) -> Response {
    st.api_call();
    let tenant = tenant_key(st, req);
    let resp = api_inner(st, req);
    // After the call, so that a call let through counts in the minute remaining.
    with_limits(resp, st.limits_for(tenant.as_deref()))
}

/// The lower-case id of the tenant an API request is for, as far as it can be told:
/// the connection its token and `Xero-Tenant-Id` lead to, else the header as sent
/// (a 401 still reports that tenant's minute remaining).
fn tenant_key(st: &State, req: &Request) -> Option<String> {
    let header = req.header("xero-tenant-id");
    let resolved = match req.bearer().map(|t| st.check_access(t)) {
        Some(AccessCheck::Valid { client_credentials }) => {
            st.tenant_for(header, client_credentials)
        }
        _ => None,
    };
    resolved
        .map(|t| t.tenant_id.as_str())
        .or(header.map(str::trim))
        .map(str::to_ascii_lowercase)
}

fn api_inner(st: &mut State, req: &Request) -> Response {
    if !matches!(req.method.as_str(), "GET" | "POST" | "PUT" | "DELETE") {
        return method_not_allowed("GET, POST, PUT, DELETE");
    }
    let client_credentials = match bearer_ok(st, req) {
        Ok(cc) => cc,
        Err(resp) => return resp,
    };
    if st.require_scopes {
        let scope = req
            .bearer()
            .and_then(|t| st.access_scope(t))
            .unwrap_or_default();
        let rest = strip_prefix_any_case(&req.path, "/api.xro/2.0/").unwrap_or_default();
        if !scope_allows(scope, rest, &req.method) {
            return unauthorized("AuthorizationUnsuccessful")
                .with_header("WWW-Authenticate", "Bearer error=\"insufficient_scope\"");
        }
    }
    let Some(tenant) = st
        .tenant_for(req.header("xero-tenant-id"), client_credentials)
        .cloned()
    else {
        return Response::json(
            403,
            &json!({"Type": null, "Title": "Forbidden", "Status": 403,
                    "Detail": "AuthenticationUnsuccessful"}),
        );
    };
    let tenant_key = tenant.tenant_id.to_ascii_lowercase();
    // The limit is per app per tenant, so it can only be told once the token and the
    // tenant are known: a 401 or 403 wins over a 429.
    if let Err((retry_after, problem)) = st.admit(&tenant_key) {
        // `api` adds the `X-…Limit-Remaining` headers.
        return Response::empty(429)
            .with_header("Retry-After", retry_after.to_string())
            .with_header("X-Rate-Limit-Problem", problem);
    }
    let now = st.now();
    let envelope = |extra: Value| {
        let mut v = json!({
            "Id": crate::util::random_uuid(),
            "Status": "OK",
            "ProviderName": "fake-xero",
            "DateTimeUTC": format!("/Date({})/", now * 1000),
        });
        if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        v
    };
    let rest = strip_prefix_any_case(&req.path, "/api.xro/2.0/").unwrap_or_default();
    if rest.eq_ignore_ascii_case("contacts") {
        match req.method.as_str() {
            "GET" => {
                let all: Vec<Value> = st
                    .posted_contacts(&tenant_key)
                    .iter()
                    .flat_map(|body| contacts_in(body))
                    .collect();
                return Response::json(200, &json!({ "Contacts": all }));
            }
            "POST" | "PUT" => {
                st.store_contacts(&tenant_key, req.body.clone());
                // The echo fields of other routes stay, for tests written against them.
                return Response::json(
                    200,
                    &envelope(json!({
                        "Contacts": contacts_in(&req.body),
                        "Path": req.path,
                        "Method": req.method,
                        "BodyLength": req.body.len(),
                        "TenantId": tenant.tenant_id,
                    })),
                );
            }
            _ => {}
        }
    }
    if req.method == "GET" && rest.eq_ignore_ascii_case("organisation") {
        let demo = tenant.tenant_name.contains("Demo Company");
        return Response::json(
            200,
            &envelope(json!({"Organisations": [{
                "APIKey": "",
                "Name": tenant.tenant_name,
                "LegalName": tenant.tenant_name,
                "PaysTax": true,
                "Version": "NZ",
                "OrganisationType": "COMPANY",
                "BaseCurrency": "NZD",
                "CountryCode": "NZ",
                "IsDemoCompany": demo,
                "OrganisationStatus": "ACTIVE",
                "OrganisationID": tenant.tenant_id,
                "Timezone": "NEWZEALANDSTANDARDTIME",
                "OrganisationEntityType": "COMPANY",
                "ShortCode": "!fk7Q2",
                "Class": if demo { "DEMO" } else { "STANDARD" },
                "Edition": "BUSINESS",
            }]})),
        );
    }
    Response::json(
        200,
        &envelope(json!({
            "Path": req.path,
            "Method": req.method,
            "BodyLength": req.body.len(),
            "TenantId": tenant.tenant_id,
        })),
    )
}

/// The `Contacts` array of a JSON body; empty for anything else (not JSON, no array):
/// bodies are kept as received, and only read as far as the answers need.
fn contacts_in(body: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut o)) => match o.remove("Contacts") {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// OIDC discovery, pointing at the fake's own endpoints.
fn discovery(st: &State, req: &Request) -> Response {
    if req.method != "GET" {
        return method_not_allowed("GET");
    }
    let base = format!("http://127.0.0.1:{}", st.port);
    Response::json(
        200,
        &json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/identity/connect/authorize"),
            "token_endpoint": format!("{base}/connect/token"),
            "revocation_endpoint": format!("{base}/connect/revocation"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }),
    )
}

// ---------------------------------------------------------------- control routes

/// A control route's `key=N|none` parameter: `Ok(None)` when absent, empty or `none`, `Err`
/// when it is not a number.
fn number_or_none(q: &[(String, String)], key: &str) -> Result<Option<usize>, ()> {
    match form_get(q, key).filter(|v| !v.is_empty()) {
        None | Some("none") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ()),
    }
}

/// Control routes for scripts (`/_fake/…`); never counted, recorded or faulted.
fn control(shared: &Shared, req: &Request) -> Response {
    let q = parse_form(&req.query);
    let bad = |why: &str| Response::text(400, &format!("{why}\n"));
    let mut st = lock(shared);
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/_fake/counts") => {
            let mut counts = serde_json::Map::new();
            for c in Counter::ALL {
                counts.insert(c.name().into(), st.count(c).into());
            }
            counts.insert("max_in_progress".into(), st.max_in_progress.into());
            Response::json(200, &Value::Object(counts))
        }
        ("GET", "/_fake/issued") => Response::json(200, &Value::Array(st.issued.clone())),
        ("GET", "/_fake/requests") => {
            let list: Vec<Value> = st
                .requests
                .iter()
                .map(|r| {
                    json!({
                        "method": r.method,
                        "path": r.path,
                        "grant_type": r.grant_type,
                        "client_auth": format!("{:?}", r.client_auth),
                        "has_bearer": r.has_bearer,
                        "status": r.status,
                        "tenant": r.tenant,
                        "content_type": r.content_type,
                    })
                })
                .collect();
            Response::json(200, &Value::Array(list))
        }
        ("POST", "/_fake/clock/advance") => {
            let Some(secs) = form_get(&q, "secs").and_then(|s| s.parse::<u64>().ok()) else {
                return bad("secs=N required");
            };
            st.advance_clock(Duration::from_secs(secs));
            Response::json(200, &json!({ "now": st.now() }))
        }
        ("POST", "/_fake/minute_limit") => {
            let retry_after = match form_get(&q, "retry_after").map(str::parse::<u64>) {
                None => 60,
                Some(Ok(n)) => n,
                Some(Err(_)) => return bad("retry_after must be a number"),
            };
            let Ok(limit) = number_or_none(&q, "limit") else {
                return bad("limit must be a number or none");
            };
            st.set_minute_limit(limit, retry_after);
            Response::json(200, &json!({}))
        }
        ("POST", "/_fake/limits") => {
            let (Ok(concurrent), Ok(day), Ok(app_minute), Ok(window_ms)) = (
                number_or_none(&q, "concurrent"),
                number_or_none(&q, "day"),
                number_or_none(&q, "app_minute"),
                number_or_none(&q, "window_ms"),
            ) else {
                return bad("concurrent, day, app_minute and window_ms must be numbers or none");
            };
            let window = Duration::from_millis(window_ms.unwrap_or(60_000) as u64);
            st.set_limits(app_minute, day, window, concurrent);
            Response::json(200, &json!({}))
        }
        ("POST", "/_fake/expire_access_tokens") => {
            st.expire_access_tokens();
            Response::json(200, &json!({}))
        }
        ("POST", "/_fake/refuse_access_tokens") => {
            st.refuse_access_tokens();
            Response::json(200, &json!({}))
        }
        ("POST", "/_fake/access_token_len") => {
            let Ok(len) = number_or_none(&q, "len") else {
                return bad("len must be a number or none");
            };
            st.access_token_len = len;
            Response::json(200, &json!({}))
        }
        ("POST", "/_fake/fault") => {
            let target = match form_get(&q, "target").unwrap_or("any") {
                "token" => Target::Token,
                "revocation" => Target::Revocation,
                "connections" => Target::Connections,
                "api" => Target::Api,
                "any" => Target::Any,
                _ => return bad("target must be token|revocation|connections|api|any"),
            };
            let num = |k: &str, default: u64| {
                form_get(&q, k).map_or(Some(default), |v| v.parse::<u64>().ok())
            };
            let (Some(retry_after), Some(ms)) = (num("retry_after", 60), num("ms", 5000)) else {
                return bad("retry_after and ms must be numbers");
            };
            let fault = match form_get(&q, "kind").unwrap_or_default() {
                "server_error" => Some(Fault::ServerError),
                "reset" => Some(Fault::Reset),
                "reset_after" => Some(Fault::ResetAfterProcessing),
                "html" => Some(Fault::Html),
                "truncated" => Some(Fault::TruncatedJson),
                "unauthorized" => Some(Fault::Unauthorized),
                "too_many" => Some(Fault::TooManyRequests {
                    retry_after_secs: retry_after,
                }),
                "delay" => Some(Fault::Delay(Duration::from_millis(ms))),
                "clear" => None,
                _ => {
                    return bad(
                        "kind must be server_error|reset|reset_after|html|truncated|too_many|delay|clear",
                    );
                }
            };
            let persistent = form_get(&q, "persistent").is_some_and(|p| p == "1" || p == "true");
            match (fault, persistent) {
                (Some(f), false) => st.push_fault(target, f),
                (f, true) => st.set_persistent_fault(target, f),
                (None, false) => return bad("kind=clear needs persistent=1"),
            }
            Response::json(200, &json!({}))
        }
        (_, "/_fake/counts" | "/_fake/requests" | "/_fake/issued") => method_not_allowed("GET"),
        (
            _,
            "/_fake/clock/advance"
            | "/_fake/fault"
            | "/_fake/minute_limit"
            | "/_fake/limits"
            | "/_fake/expire_access_tokens"
            | "/_fake/refuse_access_tokens"
            | "/_fake/access_token_len",
        ) => method_not_allowed("POST"),
        _ => not_found(),
    }
}
