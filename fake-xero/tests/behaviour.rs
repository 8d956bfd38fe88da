//! The fake's behaviour, exercised over real HTTP.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use fake_xero::{
    AuthorizeDecision, ClientAuth, Counter, DEFAULT_TENANT_ID, FakeXero, Fault, RefreshTokenStatus,
    Target, pkce_s256,
};

const MIN: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

fn assert_jwt(t: &str) {
    assert!(t.starts_with("eyJ"), "{t}");
    let parts: Vec<&str> = t.split('.').collect();
    assert_eq!(parts.len(), 3, "{t}");
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    );
}

mod tokens {
    use super::*;

    #[test]
    fn token_shapes() {
        let fx = fake();
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let t = fx.issue_tokens(CONF, SCOPE);
            assert_jwt(&t.access_token);
            assert_jwt(&t.id_token);
            assert!(
                (1200..=1600).contains(&t.access_token.len()),
                "access token length {}",
                t.access_token.len()
            );
            assert_eq!(t.refresh_token.len(), 64);
            assert!(t.refresh_token.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(t.expires_in, 1800);
            assert_eq!(t.scope, SCOPE);
            assert!(seen.insert(t.access_token));
            assert!(seen.insert(t.refresh_token));
        }
        // The claims are real JSON with the fake's clock.
        use base64::Engine as _;
        let t = fx.issue_tokens(CONF, SCOPE);
        let payload = t.access_token.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["client_id"], CONF);
        assert_eq!(claims["exp"].as_u64().unwrap(), fx.now() + 1800);
    }

    #[test]
    fn rotation() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::Active
        );
        let r = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.header("Content-Type")
                .unwrap()
                .starts_with("application/json")
        );
        let j = r.json();
        assert_eq!(j["token_type"], "Bearer");
        assert_eq!(j["expires_in"], 1800);
        assert_eq!(j["scope"], SCOPE);
        assert_jwt(j["access_token"].as_str().unwrap());
        assert_jwt(j["id_token"].as_str().unwrap());
        let new_rt = j["refresh_token"].as_str().unwrap();
        assert_ne!(new_rt, t.refresh_token);
        assert_ne!(j["access_token"], t.access_token.as_str());
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::UsedInGrace
        );
        assert_eq!(fx.refresh_token_status(new_rt), RefreshTokenStatus::Active);
        assert!(fx.access_token_valid(j["access_token"].as_str().unwrap()));
        assert!(fx.access_token_valid(&t.access_token));
        // The new one rotates too.
        let r2 = refresh(&fx, Auth::Basic(CONF, SECRET), new_rt);
        assert_eq!(r2.status, 200);
        assert_eq!(r2.json()["scope"], SCOPE);
        assert_eq!(fx.refresh_token_status("nope"), RefreshTokenStatus::Unknown);
    }

    #[test]
    fn grace_window() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let first = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).json();
        fx.advance_clock(29 * MIN);
        // Retried inside the window: works, and by default gives a new pair.
        let retry = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!(retry.status, 200, "{}", retry.text());
        let retry = retry.json();
        assert_ne!(retry["refresh_token"], first["refresh_token"]);
        assert_ne!(retry["access_token"], first["access_token"]);
        let again = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!(again.status, 200);
        for rt in [&first["refresh_token"], &retry["refresh_token"]] {
            assert_eq!(
                fx.refresh_token_status(rt.as_str().unwrap()),
                RefreshTokenStatus::Active
            );
        }
        fx.advance_clock(2 * MIN);
        let late = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!(late.status, 400);
        assert_eq!(late.json(), serde_json::json!({"error": "invalid_grant"}));
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::Spent
        );
        // The rotated token is unaffected.
        let next = refresh(
            &fx,
            Auth::Basic(CONF, SECRET),
            retry["refresh_token"].as_str().unwrap(),
        );
        assert_eq!(next.status, 200);
    }

    #[test]
    fn grace_same_pair() {
        let fx = fake();
        fx.set_grace_returns_same_pair(true);
        let t = fx.issue_tokens(CONF, SCOPE);
        let first = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).json();
        fx.advance_clock(10 * MIN);
        let retry = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).json();
        assert_eq!(first, retry);
    }

    #[test]
    fn sixty_day_expiry() {
        let fx = fake();
        let a = fx.issue_tokens(CONF, SCOPE);
        let b = fx.issue_tokens(CONF, SCOPE);
        fx.advance_clock(59 * DAY);
        assert_eq!(
            refresh(&fx, Auth::Basic(CONF, SECRET), &a.refresh_token).status,
            200
        );
        fx.advance_clock(DAY);
        assert_eq!(
            fx.refresh_token_status(&b.refresh_token),
            RefreshTokenStatus::Expired
        );
        let r = refresh(&fx, Auth::Basic(CONF, SECRET), &b.refresh_token);
        assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
    }

    #[test]
    fn client_authentication_methods() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let r = refresh(&fx, Auth::Post(CONF, SECRET), &t.refresh_token);
        assert_eq!(r.status, 200, "{}", r.text());
        let rt = r.json()["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(refresh(&fx, Auth::Basic(CONF, SECRET), &rt).status, 200);
        let p = fx.issue_tokens(PUBLIC, SCOPE);
        let r = refresh(&fx, Auth::Public(PUBLIC), &p.refresh_token);
        assert_eq!(r.status, 200, "{}", r.text());
        // An empty Basic password is no secret: fine for a public app, not for a
        // confidential one.
        let rt = r.json()["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(refresh(&fx, Auth::Basic(PUBLIC, ""), &rt).status, 200);
        assert_eq!(
            refresh(&fx, Auth::Basic(CONF, ""), &t.refresh_token).error(),
            "invalid_client"
        );
        let auths: Vec<ClientAuth> = fx.requests().iter().map(|r| r.client_auth).collect();
        assert_eq!(
            auths,
            [
                ClientAuth::Post,
                ClientAuth::Basic,
                ClientAuth::PublicClientId,
                ClientAuth::Basic,
                ClientAuth::Basic
            ]
        );
        assert!(
            fx.requests()
                .iter()
                .all(|r| r.grant_type.as_deref() == Some("refresh_token"))
        );
    }

    #[test]
    fn invalid_client() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let p = fx.issue_tokens(PUBLIC, SCOPE);
        for (auth, rt) in [
            (Auth::Basic("unknown", SECRET), &t.refresh_token),
            (Auth::Basic(CONF, "wrong"), &t.refresh_token),
            (Auth::Post(CONF, "wrong"), &t.refresh_token),
            (Auth::Public(CONF), &t.refresh_token),
            (Auth::Basic(PUBLIC, "anything"), &p.refresh_token),
            (Auth::Post(PUBLIC, "anything"), &p.refresh_token),
            (Auth::Nothing, &t.refresh_token),
        ] {
            let r = refresh(&fx, auth, rt);
            assert_eq!(r.status, 400);
            assert_eq!(r.json(), serde_json::json!({"error": "invalid_client"}));
        }
        // Two methods at once.
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(format!("{CONF}:{SECRET}"))
        };
        let basic = format!("Basic {b64}");
        let body = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &t.refresh_token),
            ("client_secret", SECRET),
        ]);
        let r = request(
            &fx,
            "POST",
            "/connect/token",
            &[
                ("Authorization", &basic),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        );
        assert_eq!(r.error(), "invalid_client");
        // Nothing was rotated by any of these.
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::Active
        );
        assert_eq!(fx.count(Counter::Refresh), 8);
    }

    #[test]
    fn grant_type_errors() {
        let fx = fake();
        let r = token(&fx, Auth::Basic(CONF, SECRET), &[]);
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "unsupported_grant_type")
        );
        let r = token(
            &fx,
            Auth::Basic(CONF, SECRET),
            &[("grant_type", "password"), ("username", "u")],
        );
        assert_eq!(r.error(), "unsupported_grant_type");
        let r = token(
            &fx,
            Auth::Basic(CONF, SECRET),
            &[("grant_type", "refresh_token")],
        );
        assert_eq!(r.error(), "invalid_request");
        let r = refresh(&fx, Auth::Basic(CONF, SECRET), "0123");
        assert_eq!(r.error(), "invalid_grant");
        assert_eq!(fx.count(Counter::TokenRequests), 4);
        assert_eq!(fx.count(Counter::Refresh), 2);
        // GET is not allowed; a JSON body is not a form.
        assert_eq!(request(&fx, "GET", "/connect/token", &[], b"").status, 405);
        let r = request(
            &fx,
            "POST",
            "/connect/token",
            &[("Content-Type", "application/json")],
            br#"{"grant_type":"client_credentials"}"#,
        );
        assert_eq!(r.error(), "invalid_request");
    }

    #[test]
    fn other_clients_token_is_invalid_grant() {
        let fx = fake();
        fx.add_client("OTHER", Some("other-secret"));
        let t = fx.issue_tokens(CONF, SCOPE);
        let r = refresh(&fx, Auth::Basic("OTHER", "other-secret"), &t.refresh_token);
        assert_eq!(r.error(), "invalid_grant");
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::Active
        );
    }

    #[test]
    fn scope_decides_refresh_and_id_token() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, "accounting.transactions");
        assert!(t.refresh_token.is_empty());
        assert!(t.id_token.is_empty());
        let t = fx.issue_tokens(CONF, "accounting.transactions   offline_access");
        assert_eq!(t.scope, "accounting.transactions offline_access");
        let j = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).json();
        assert!(j.get("id_token").is_none());
        assert!(j["refresh_token"].is_string());
        assert_eq!(j["scope"], "accounting.transactions offline_access");
    }

    #[test]
    fn client_credentials() {
        let fx = fake();
        let r = token(
            &fx,
            Auth::Basic(CONF, SECRET),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "accounting.transactions accounting.contacts"),
            ],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert!(j.get("refresh_token").is_none());
        assert!(j.get("id_token").is_none());
        assert_eq!(j["expires_in"], 1800);
        assert_eq!(j["scope"], "accounting.transactions accounting.contacts");
        let access = j["access_token"].as_str().unwrap();
        assert_jwt(access);
        assert!(fx.access_token_valid(access));
        // A Custom Connection has one organisation: no tenant header needed.
        assert_eq!(
            api(&fx, "GET", "/api.xro/2.0/Organisation", access, None).status,
            200
        );
        let r = token(
            &fx,
            Auth::Post(CONF, SECRET),
            &[("grant_type", "client_credentials")],
        );
        assert_eq!(r.status, 200);
        // Public apps cannot.
        let r = token(
            &fx,
            Auth::Public(PUBLIC),
            &[("grant_type", "client_credentials")],
        );
        assert_eq!((r.status, r.error().as_str()), (400, "unauthorized_client"));
        assert_eq!(fx.count(Counter::ClientCredentials), 3);
    }

    #[test]
    fn revocation_kills_family_and_connections() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let rotated = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).json();
        let new_rt = rotated["refresh_token"].as_str().unwrap();
        let access = rotated["access_token"].as_str().unwrap();
        assert_eq!(connections(&fx, access).json().as_array().unwrap().len(), 1);

        let r = try_post_form(
            &fx,
            "/connect/revocation",
            Auth::Basic(CONF, SECRET),
            &[("token", new_rt)],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        for rt in [t.refresh_token.as_str(), new_rt] {
            assert_eq!(fx.refresh_token_status(rt), RefreshTokenStatus::Revoked);
            assert_eq!(
                refresh(&fx, Auth::Basic(CONF, SECRET), rt).error(),
                "invalid_grant"
            );
        }
        assert!(fx.tenants().is_empty());
        assert_eq!(connections(&fx, access).json(), serde_json::json!([]));
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            access,
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!(r.status, 403);
        // Unknown token: 200 all the same (RFC 7009); wrong client: invalid_client.
        let r = try_post_form(
            &fx,
            "/connect/revocation",
            Auth::Basic(CONF, SECRET),
            &[("token", "ffff")],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200);
        let r = try_post_form(
            &fx,
            "/connect/revocation",
            Auth::Basic(CONF, "bad"),
            &[("token", "ffff")],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.error(), "invalid_client");
        assert_eq!(fx.count(Counter::Revocation), 3);
        // A new authorisation reconnects the organisation.
        let again = fx.issue_tokens(CONF, SCOPE);
        assert_eq!(fx.tenants().len(), 1);
        assert_eq!(fx.tenants()[0].tenant_id, DEFAULT_TENANT_ID);
        assert_eq!(
            refresh(&fx, Auth::Basic(CONF, SECRET), &again.refresh_token).status,
            200
        );
    }

    #[test]
    fn revoking_another_clients_token_does_nothing() {
        let fx = fake();
        let p = fx.issue_tokens(PUBLIC, SCOPE);
        let r = try_post_form(
            &fx,
            "/connect/revocation",
            Auth::Basic(CONF, SECRET),
            &[("token", &p.refresh_token)],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            fx.refresh_token_status(&p.refresh_token),
            RefreshTokenStatus::Active
        );
        assert_eq!(fx.tenants().len(), 1);
        // The public app revokes its own with client_id only.
        let r = try_post_form(
            &fx,
            "/connect/revocation",
            Auth::Public(PUBLIC),
            &[("token", &p.refresh_token)],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            fx.refresh_token_status(&p.refresh_token),
            RefreshTokenStatus::Revoked
        );
    }
}

mod authorize {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const REDIRECT: &str = "http://localhost:8742/callback";

    fn authorize_target(client: &str, redirect: &str, challenge: Option<&str>) -> String {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", redirect),
            ("scope", SCOPE),
            ("state", "st a/te"),
        ];
        if let Some(c) = challenge {
            params.push(("code_challenge", c));
            params.push(("code_challenge_method", "S256"));
        }
        format!("/identity/connect/authorize?{}", form(&params))
    }

    /// The query parameters of a 302's Location.
    fn location_params(r: &Resp) -> Vec<(String, String)> {
        assert_eq!(r.status, 302, "{}", r.text());
        let loc = r.header("Location").unwrap();
        let (_, q) = loc.split_once('?').unwrap();
        q.split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), decode(v))
            })
            .collect()
    }

    fn decode(v: &str) -> String {
        let mut out = Vec::new();
        let b = v.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
        p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn get_code(fx: &FakeXero, client: &str, challenge: Option<&str>) -> String {
        let r = request(
            fx,
            "GET",
            &authorize_target(client, REDIRECT, challenge),
            &[],
            b"",
        );
        assert!(r.header("Location").unwrap().starts_with(REDIRECT));
        let p = location_params(&r);
        assert_eq!(param(&p, "state"), Some("st a/te"));
        param(&p, "code").unwrap().to_string()
    }

    fn exchange(
        fx: &FakeXero,
        auth: Auth,
        code: &str,
        redirect: &str,
        verifier: Option<&str>,
    ) -> Resp {
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
        ];
        if let Some(v) = verifier {
            params.push(("code_verifier", v));
        }
        token(fx, auth, &params)
    }

    #[test]
    fn pkce_vector() {
        assert_eq!(pkce_s256(VERIFIER), CHALLENGE);
    }

    #[test]
    fn pkce_flow_and_single_use_code() {
        let fx = fake();
        let code = get_code(&fx, PUBLIC, Some(CHALLENGE));
        let r = exchange(&fx, Auth::Public(PUBLIC), &code, REDIRECT, Some(VERIFIER));
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["scope"], SCOPE);
        let rt = j["refresh_token"].as_str().unwrap();
        assert_eq!(fx.refresh_token_status(rt), RefreshTokenStatus::Active);
        // Single use.
        let r = exchange(&fx, Auth::Public(PUBLIC), &code, REDIRECT, Some(VERIFIER));
        assert_eq!(r.error(), "invalid_grant");
        assert_eq!(fx.count(Counter::Authorize), 1);
        assert_eq!(fx.count(Counter::AuthorizationCode), 2);
    }

    #[test]
    fn pkce_failures() {
        let fx = fake();
        let wrong_verifier = "x".repeat(43);
        let cases: [(Auth, Option<&str>, &str); 5] = [
            (Auth::Public(PUBLIC), Some(&wrong_verifier), REDIRECT),
            (Auth::Public(PUBLIC), None, REDIRECT),
            (
                Auth::Public(PUBLIC),
                Some(VERIFIER),
                "http://localhost:8742/other",
            ),
            (Auth::Basic(CONF, SECRET), Some(VERIFIER), REDIRECT), // another client
            (Auth::Public("nobody"), Some(VERIFIER), REDIRECT),
        ];
        for (i, (auth, verifier, redirect)) in cases.into_iter().enumerate() {
            let code = get_code(&fx, PUBLIC, Some(CHALLENGE));
            let r = exchange(&fx, auth, &code, redirect, verifier);
            let want = if i == 4 {
                "invalid_client"
            } else {
                "invalid_grant"
            };
            assert_eq!((r.status, r.error().as_str()), (400, want), "case {i}");
        }
        // Expired after 5 minutes.
        let code = get_code(&fx, PUBLIC, Some(CHALLENGE));
        fx.advance_clock(5 * MIN + Duration::from_secs(1));
        let r = exchange(&fx, Auth::Public(PUBLIC), &code, REDIRECT, Some(VERIFIER));
        assert_eq!(r.error(), "invalid_grant");
    }

    #[test]
    fn confidential_code_flow() {
        let fx = fake();
        let code = get_code(&fx, CONF, None);
        let r = exchange(&fx, Auth::Basic(CONF, SECRET), &code, REDIRECT, None);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["refresh_token"].is_string());
    }

    #[test]
    fn a_granular_only_app_refuses_broad_scopes_at_every_step() {
        let fx = fake();
        assert!(SCOPE.contains("accounting.transactions"));
        // A code for broad scopes, issued while the app still took them.
        let code = get_code(&fx, CONF, None);
        fx.set_granular_only(CONF, true);
        let r = request(
            &fx,
            "GET",
            &authorize_target(CONF, REDIRECT, None),
            &[],
            b"",
        );
        assert_eq!(r.status, 400, "Xero's error page, no redirect");
        assert!(
            r.text()
                .contains("unauthorized_client : Invalid scope for client"),
            "{}",
            r.text()
        );
        let r = exchange(&fx, Auth::Basic(CONF, SECRET), &code, REDIRECT, None);
        assert_eq!((r.status, r.error().as_str()), (400, "invalid_scope"));
        let cc = |scope: Option<&str>| {
            let mut params = vec![("grant_type", "client_credentials")];
            params.extend(scope.map(|s| ("scope", s)));
            token(&fx, Auth::Basic(CONF, SECRET), &params)
        };
        let r = cc(Some("accounting.contacts accounting.reports.read"));
        assert_eq!((r.status, r.error().as_str()), (400, "invalid_scope"));
        assert_eq!(
            r.json()["error_description"],
            "Client credentials scope validation failed"
        );
        let r = cc(Some("accounting.invoices.read"));
        assert_eq!(r.status, 200, "{}", r.text());
        let r = cc(None);
        assert!(
            !r.json()["scope"]
                .as_str()
                .unwrap()
                .contains("accounting.transactions"),
            "{}",
            r.text()
        );
        // An older app takes broad scopes again.
        fx.set_granular_only(CONF, false);
        let code = get_code(&fx, CONF, None);
        let r = exchange(&fx, Auth::Basic(CONF, SECRET), &code, REDIRECT, None);
        assert_eq!(r.status, 200, "{}", r.text());
    }

    #[test]
    fn api_routes_require_their_scope_when_asked_to() {
        let fx = fake();
        let tokens = fx.issue_tokens(CONF, "accounting.contacts.read accounting.transactions");
        let at = tokens.access_token.as_str();
        let tenant = Some(DEFAULT_TENANT_ID);
        // Off by default.
        assert_eq!(
            api(&fx, "GET", "/api.xro/2.0/Organisation", at, tenant).status,
            200
        );
        fx.set_require_scopes(true);
        let r = api(&fx, "GET", "/api.xro/2.0/Organisation", at, tenant);
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["Detail"], "AuthorizationUnsuccessful");
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Bearer error=\"insufficient_scope\"")
        );
        // A read scope reads, and does not write; a broad scope covers its areas.
        assert_eq!(
            api(&fx, "GET", "/api.xro/2.0/Contacts", at, tenant).status,
            200
        );
        assert_eq!(
            api(&fx, "POST", "/api.xro/2.0/Contacts", at, tenant).status,
            401
        );
        assert_eq!(
            api(&fx, "POST", "/api.xro/2.0/Invoices", at, tenant).status,
            200
        );
        assert_eq!(
            api(&fx, "GET", "/api.xro/2.0/Reports/BalanceSheet", at, tenant).status,
            401
        );
    }

    #[test]
    fn authorize_errors() {
        let fx = fake();
        let r = request(
            &fx,
            "GET",
            &authorize_target("nobody", REDIRECT, None),
            &[],
            b"",
        );
        assert_eq!(r.status, 400);
        assert!(r.header("Content-Type").unwrap().starts_with("text/html"));
        assert!(r.text().contains("unauthorized_client : Invalid client_id"));
        for bad in [
            "ftp://localhost/cb",
            "myapp:/cb",
            "http://example.com/cb",
            "",
        ] {
            let r = request(&fx, "GET", &authorize_target(CONF, bad, None), &[], b"");
            assert_eq!(r.status, 400, "{bad}");
            assert!(
                r.text()
                    .contains("unauthorized_client : Invalid redirect_uri")
            );
        }
        for good in [
            "https://example.com/cb",
            "http://127.0.0.1:5000/cb",
            "http://[::1]:5000/cb",
        ] {
            let r = request(&fx, "GET", &authorize_target(CONF, good, None), &[], b"");
            assert_eq!(r.status, 302, "{good}");
        }
        // A public app must send a challenge.
        let r = request(
            &fx,
            "GET",
            &authorize_target(PUBLIC, REDIRECT, None),
            &[],
            b"",
        );
        assert_eq!(
            param(&location_params(&r), "error"),
            Some("invalid_request")
        );
        // Registered redirect URIs must match exactly (the port too).
        fx.set_redirect_uris(CONF, &[REDIRECT]);
        let r = request(
            &fx,
            "GET",
            &authorize_target(CONF, "http://localhost:8080/callback", None),
            &[],
            b"",
        );
        assert_eq!(r.status, 400);
        assert_eq!(fx.count(Counter::Authorize), 10);
    }

    #[test]
    fn deny() {
        let fx = fake();
        fx.set_authorize_decision(AuthorizeDecision::Deny);
        let r = request(
            &fx,
            "GET",
            &authorize_target(PUBLIC, REDIRECT, Some(CHALLENGE)),
            &[],
            b"",
        );
        let p = location_params(&r);
        assert_eq!(param(&p, "error"), Some("access_denied"));
        assert_eq!(param(&p, "state"), Some("st a/te"));
        assert_eq!(param(&p, "code"), None);
    }
}

mod api_side {
    use super::*;

    #[test]
    fn connections_list_and_delete() {
        let fx = fake();
        fx.add_tenant(
            "0b9e3c2a-1111-4222-8333-444455556666",
            "Other Org",
            "ORGANISATION",
        );
        let t = fx.issue_tokens(CONF, SCOPE);
        let r = connections(&fx, &t.access_token);
        assert_eq!(r.status, 200);
        let list = r.json();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 2);
        for c in list {
            for k in [
                "id",
                "authEventId",
                "tenantId",
                "tenantType",
                "tenantName",
                "createdDateUtc",
                "updatedDateUtc",
            ] {
                assert!(c[k].is_string(), "{k} in {c}");
            }
        }
        assert_eq!(list[0]["tenantName"], "Demo Company (NZ)");
        assert_eq!(list[0]["tenantType"], "ORGANISATION");
        let id = list[1]["id"].as_str().unwrap();
        let auth = bearer(&t.access_token);
        let r = request(
            &fx,
            "DELETE",
            &format!("/connections/{id}"),
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(r.status, 204);
        assert_eq!(fx.tenants().len(), 1);
        let r = request(
            &fx,
            "DELETE",
            &format!("/connections/{id}"),
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(r.status, 404);
        // No bearer, bad bearer.
        assert_eq!(request(&fx, "GET", "/connections", &[], b"").status, 401);
        assert_eq!(connections(&fx, "eyJnope").status, 401);
        assert_eq!(fx.count(Counter::Connections), 5);
        fx.clear_tenants();
        assert_eq!(
            connections(&fx, &t.access_token).json(),
            serde_json::json!([])
        );
    }

    #[test]
    fn api_auth_and_tenant() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let org = &r.json()["Organisations"][0];
        assert_eq!(org["Name"], "Demo Company (NZ)");
        assert_eq!(org["OrganisationID"], DEFAULT_TENANT_ID);
        for h in [
            "X-MinLimit-Remaining",
            "X-DayLimit-Remaining",
            "X-AppMinLimit-Remaining",
        ] {
            assert!(r.header(h).unwrap().parse::<u32>().is_ok(), "{h}");
        }
        assert_eq!(r.header("X-MinLimit-Remaining"), Some("59"));

        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Invoices?page=1",
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!(r.json()["Path"], "/api.xro/2.0/Invoices");
        assert_eq!(r.json()["Method"], "GET");
        let auth = bearer(&t.access_token);
        let r = request(
            &fx,
            "POST",
            "/api.xro/2.0/Contacts",
            &[
                ("Authorization", &auth),
                ("Xero-Tenant-Id", DEFAULT_TENANT_ID),
            ],
            br#"{"Name":"x"}"#,
        );
        assert_eq!(r.json()["Method"], "POST");
        assert_eq!(r.json()["BodyLength"], 12);

        // 403: no tenant, unknown tenant.
        let forbidden = serde_json::json!({"Type": null, "Title": "Forbidden", "Status": 403,
                                           "Detail": "AuthenticationUnsuccessful"});
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            &t.access_token,
            None,
        );
        assert_eq!((r.status, r.json()), (403, forbidden.clone()));
        assert!(r.header("X-DayLimit-Remaining").is_some());
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            &t.access_token,
            Some("00000000-0000-4000-8000-000000000000"),
        );
        assert_eq!((r.status, r.json()), (403, forbidden));

        // 401: unknown token, no token.
        let unauthorized = serde_json::json!({"Type": null, "Title": "Unauthorized", "Status": 401,
                                              "Detail": "AuthenticationUnsuccessful"});
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            "eyJfoo.bar.baz",
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!((r.status, r.json()), (401, unauthorized.clone()));
        let r = request(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            &[("Xero-Tenant-Id", DEFAULT_TENANT_ID)],
            b"",
        );
        assert_eq!((r.status, r.json()), (401, unauthorized));
        assert_eq!(fx.count(Counter::Api), 7);
        assert!(fx.requests()[0].has_bearer);
    }

    #[test]
    fn token_expired_after_31_minutes() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.advance_clock(29 * MIN);
        assert!(fx.access_token_valid(&t.access_token));
        fx.advance_clock(2 * MIN);
        assert!(!fx.access_token_valid(&t.access_token));
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!(r.status, 401);
        let detail = r.json()["Detail"].as_str().unwrap().to_string();
        assert!(
            detail.starts_with("TokenExpired: token expired at "),
            "{detail}"
        );
        assert_eq!(connections(&fx, &t.access_token).status, 401);
        // A refresh gives a working token again.
        let j = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).json();
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            j["access_token"].as_str().unwrap(),
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!(r.status, 200);
    }

    #[test]
    fn paths_are_matched_in_any_case_as_xeros_are() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let auth = bearer(&t.access_token);
        // xero-python's IdentityApi.get_connections() asks for `/Connections`.
        let r = request(&fx, "GET", "/Connections", &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()[0]["tenantId"], DEFAULT_TENANT_ID);
        for path in ["/API.XRO/2.0/ORGANISATION", "/api.xro/2.0/organisation"] {
            let r = api(&fx, "GET", path, &t.access_token, Some(DEFAULT_TENANT_ID));
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert_eq!(
                r.json()["Organisations"][0]["OrganisationID"],
                DEFAULT_TENANT_ID
            );
        }
        let id = r#"/CONNECTIONS/"#.to_string() + fake_xero::DEFAULT_CONNECTION_ID;
        let r = request(&fx, "DELETE", &id, &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 204, "{}", r.text());
        assert!(fx.tenants().is_empty());
    }

    #[test]
    fn access_token_lifetime_can_be_shortened() {
        let fx = fake();
        fx.set_access_token_secs(5);
        let t = fx.issue_tokens(CONF, SCOPE);
        assert_eq!(t.expires_in, 5);
        let j = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).json();
        assert_eq!(j["expires_in"], 5);
        let access = j["access_token"].as_str().unwrap();
        assert!(fx.access_token_valid(access));
        fx.advance_clock(Duration::from_secs(6));
        assert!(!fx.access_token_valid(access));
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            access,
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!(r.status, 401);
    }

    #[test]
    fn refused_tokens_get_401_authentication_unsuccessful_before_their_expiry() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.refuse_access_tokens();
        assert!(!fx.access_token_valid(&t.access_token));
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["Detail"], "AuthenticationUnsuccessful");
        assert_eq!(connections(&fx, &t.access_token).status, 401);
        // A token issued afterwards is accepted.
        let j = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).json();
        let access = j["access_token"].as_str().unwrap();
        assert_eq!(connections(&fx, access).status, 200);
    }
}

mod faults {
    use super::*;

    fn no_response(r: std::io::Result<Resp>) {
        if let Ok(r) = r {
            panic!("expected no response, got {} {}", r.status, r.text());
        }
    }

    #[test]
    fn reset_before_processing() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.push_fault(Target::Token, Fault::Reset);
        let answer = raw(
            fx.port(),
            &oauth_request(
                fx.port(),
                "/connect/token",
                Auth::Basic(CONF, SECRET),
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &t.refresh_token),
                ],
            ),
            Duration::from_secs(10),
        );
        match answer {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            Ok(bytes) => assert!(bytes.is_empty(), "got {bytes:?}"),
        }
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::Active
        );
        assert_eq!(fx.count(Counter::Refresh), 1);
        assert_eq!(fx.requests()[0].status, None);
        assert_eq!(fx.requests()[0].fault, Some(Fault::Reset));
        // One-shot: the next one works.
        assert_eq!(
            refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).status,
            200
        );
    }

    #[test]
    fn reset_after_processing_then_grace_retry() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.push_fault(Target::Token, Fault::ResetAfterProcessing);
        no_response(try_post_form(
            &fx,
            "/connect/token",
            Auth::Basic(CONF, SECRET),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &t.refresh_token),
            ],
            Duration::from_secs(10),
        ));
        // The server rotated although the client heard nothing…
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::UsedInGrace
        );
        // …and the grace window lets the client retry with the old token.
        fx.advance_clock(5 * MIN);
        assert_eq!(
            refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).status,
            200
        );
    }

    #[test]
    fn delay_times_out_client_but_still_processes() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.push_fault(Target::Token, Fault::Delay(Duration::from_millis(700)));
        let start = Instant::now();
        let r = try_post_form(
            &fx,
            "/connect/token",
            Auth::Basic(CONF, SECRET),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &t.refresh_token),
            ],
            Duration::from_millis(200),
        );
        let e = r.expect_err("should time out");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        assert!(start.elapsed() < Duration::from_millis(650));
        while fx.refresh_token_status(&t.refresh_token) != RefreshTokenStatus::UsedInGrace {
            assert!(start.elapsed() < Duration::from_secs(5), "never processed");
            std::thread::sleep(Duration::from_millis(20));
        }
        // With a patient client the delay is just a delay.
        fx.push_fault(Target::Api, Fault::Delay(Duration::from_millis(300)));
        let start = Instant::now();
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!(r.status, 200);
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn server_error_and_html_do_not_process() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.push_fault(Target::Token, Fault::ServerError);
        fx.push_fault(Target::Token, Fault::Html);
        let r = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!(r.status, 500);
        assert!(r.header("Content-Type").unwrap().starts_with("text/html"));
        let r = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!(r.status, 200);
        assert!(r.header("Content-Type").unwrap().starts_with("text/html"));
        assert!(r.text().contains("<html"));
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::Active
        );
        assert_eq!(fx.count(Counter::Refresh), 2);
    }

    #[test]
    fn too_many_requests() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.push_fault(
            Target::Api,
            Fault::TooManyRequests {
                retry_after_secs: 7,
            },
        );
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!(r.status, 429);
        assert_eq!(r.header("Retry-After"), Some("7"));
        assert_eq!(r.header("X-MinLimit-Remaining"), Some("0"));
        assert!(r.header("X-DayLimit-Remaining").is_some());
        assert!(r.header("X-AppMinLimit-Remaining").is_some());
        fx.push_fault(
            Target::Token,
            Fault::TooManyRequests {
                retry_after_secs: 3,
            },
        );
        let r = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!((r.status, r.header("Retry-After")), (429, Some("3")));
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::Active
        );
    }

    #[test]
    fn truncated_json_after_processing() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.push_fault(Target::Token, Fault::TruncatedJson);
        let r = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!(r.status, 200);
        assert!(
            r.header("Content-Type")
                .unwrap()
                .starts_with("application/json")
        );
        let declared: usize = r.header("Content-Length").unwrap().parse().unwrap();
        assert!(declared > 100);
        assert_eq!(r.body.len(), declared / 2);
        assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::UsedInGrace
        );
    }

    #[test]
    fn persistent_any_and_fifo() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.set_persistent_fault(Target::Connections, Some(Fault::ServerError));
        for _ in 0..3 {
            assert_eq!(connections(&fx, &t.access_token).status, 500);
        }
        // One-shot before persistent.
        fx.push_fault(Target::Connections, Fault::Html);
        assert_eq!(
            connections(&fx, &t.access_token)
                .header("Content-Type")
                .map(|c| c.starts_with("text/html")),
            Some(true)
        );
        fx.set_persistent_fault(Target::Connections, None);
        assert_eq!(connections(&fx, &t.access_token).status, 200);
        // Any reaches every route, in FIFO order.
        fx.push_fault(Target::Any, Fault::ServerError);
        fx.push_fault(
            Target::Any,
            Fault::TooManyRequests {
                retry_after_secs: 1,
            },
        );
        assert_eq!(
            api(
                &fx,
                "GET",
                "/api.xro/2.0/Organisation",
                &t.access_token,
                Some(DEFAULT_TENANT_ID)
            )
            .status,
            500
        );
        assert_eq!(
            refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).status,
            429
        );
        assert_eq!(
            refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).status,
            200
        );
        // A fault for another target does not leak.
        fx.push_fault(Target::Revocation, Fault::ServerError);
        assert_eq!(connections(&fx, &t.access_token).status, 200);
        assert_eq!(fx.count(Counter::Connections), 6);
    }
}

mod server {
    use super::*;

    #[test]
    fn http_level_errors() {
        let fx = fake();
        assert_eq!(request(&fx, "GET", "/nope", &[], b"").status, 404);
        assert_eq!(request(&fx, "GET", "/api.xro/2.0", &[], b"").status, 404);
        let big = vec![b'a'; 1024 * 1024 + 1];
        let r = request(
            &fx,
            "POST",
            "/connect/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &big,
        );
        assert_eq!(r.status, 413);
        assert_eq!(fx.count(Counter::TokenRequests), 1);
        assert_eq!(fx.requests()[2].status, Some(413));
        let r =
            parse(&raw(fx.port(), b"GARBAGE\r\n\r\n", Duration::from_secs(5)).unwrap()).unwrap();
        assert_eq!(r.status, 400);
        let r = parse(
            &raw(
                fx.port(),
                b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
                Duration::from_secs(5),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.status, 400);
        let r = parse(
            &raw(
                fx.port(),
                b"POST /connect/token HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                Duration::from_secs(5),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.header("Connection"), Some("close"));
    }

    #[test]
    fn chunked_and_expect_continue() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let body = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &t.refresh_token),
            ("client_id", CONF),
            ("client_secret", SECRET),
        ]);
        let (a, b) = body.split_at(20);
        let req = format!(
            "POST /connect/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let answer = raw(fx.port(), req.as_bytes(), Duration::from_secs(5)).unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
            "{text}"
        );
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::UsedInGrace
        );
    }

    #[test]
    fn control_routes() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        let r = request(&fx, "GET", "/_fake/counts", &[], b"");
        let c = r.json();
        assert_eq!(c["token_requests"], 1);
        assert_eq!(c["refresh"], 1);
        assert_eq!(c["api"], 0);
        let before = fx.now();
        let r = request(&fx, "POST", "/_fake/clock/advance?secs=3600", &[], b"");
        assert_eq!(r.status, 200);
        assert!(fx.now() >= before + 3600);
        let r = request(
            &fx,
            "POST",
            "/_fake/fault?target=token&kind=too_many&retry_after=9",
            &[],
            b"",
        );
        assert_eq!(r.status, 200);
        let r = token(
            &fx,
            Auth::Basic(CONF, SECRET),
            &[("grant_type", "client_credentials")],
        );
        assert_eq!((r.status, r.header("Retry-After")), (429, Some("9")));
        for kind in [
            "server_error",
            "reset",
            "reset_after",
            "html",
            "truncated",
            "delay",
        ] {
            let r = request(
                &fx,
                "POST",
                &format!("/_fake/fault?target=api&kind={kind}&ms=1"),
                &[],
                b"",
            );
            assert_eq!(r.status, 200, "{kind}");
        }
        assert_eq!(
            request(&fx, "POST", "/_fake/fault?target=x&kind=reset", &[], b"").status,
            400
        );
        assert_eq!(
            request(&fx, "POST", "/_fake/fault?kind=bogus", &[], b"").status,
            400
        );
        assert_eq!(
            request(&fx, "GET", "/_fake/clock/advance?secs=1", &[], b"").status,
            405
        );
        // Control routes are not counted or recorded.
        assert_eq!(fx.requests().len(), 2);
    }

    #[test]
    fn many_concurrent_clients() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let barrier = std::sync::Barrier::new(64);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..64)
                .map(|i| {
                    let (fx, t, barrier) = (&fx, &t, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        match i % 4 {
                            0 => {
                                token(
                                    fx,
                                    Auth::Basic(CONF, SECRET),
                                    &[("grant_type", "client_credentials")],
                                )
                                .status
                            }
                            1 => connections(fx, &t.access_token).status,
                            2 => {
                                api(
                                    fx,
                                    "GET",
                                    "/api.xro/2.0/Organisation",
                                    &t.access_token,
                                    Some(DEFAULT_TENANT_ID),
                                )
                                .status
                            }
                            _ => refresh(fx, Auth::Basic(CONF, SECRET), &t.refresh_token).status,
                        }
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), 200);
            }
        });
        assert_eq!(fx.count(Counter::TokenRequests), 32);
        assert_eq!(fx.count(Counter::ClientCredentials), 16);
        assert_eq!(fx.count(Counter::Refresh), 16);
        assert_eq!(fx.count(Counter::Connections), 16);
        assert_eq!(fx.count(Counter::Api), 16);
        assert_eq!(fx.requests().len(), 64);
    }

    #[test]
    fn ports_drop_and_urls() {
        let fx = FakeXero::start();
        let port = fx.port();
        assert_eq!(fx.base_url(), format!("http://127.0.0.1:{port}"));
        assert_eq!(
            fx.token_url(),
            format!("http://127.0.0.1:{port}/connect/token")
        );
        assert_eq!(
            fx.authorize_url(),
            format!("http://127.0.0.1:{port}/identity/connect/authorize")
        );
        assert_eq!(
            fx.revocation_url(),
            format!("http://127.0.0.1:{port}/connect/revocation")
        );
        assert_eq!(
            fx.connections_url(),
            format!("http://127.0.0.1:{port}/connections")
        );
        assert_eq!(fx.api_url(), format!("http://127.0.0.1:{port}/"));
        assert!(FakeXero::start_on(port).is_err(), "port in use");
        drop(fx);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        // The port can be reused at once.
        let again = FakeXero::start_on(port).expect("rebind");
        assert_eq!(again.port(), port);
        assert_eq!(again.tenants().len(), 1);
    }

    #[test]
    fn works_inside_another_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let fx = fake();
            let t = fx.issue_tokens(CONF, SCOPE);
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", fx.port()))
                .await
                .unwrap();
            let req = format!(
                "GET /connections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                t.access_token
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            assert_eq!(parse(&out).unwrap().status, 200);
            drop(fx);
        });
    }

    #[test]
    fn binary_writes_token_file_and_serves() {
        use std::io::BufRead as _;
        let dir = std::env::temp_dir().join(format!("fake-xero-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("xero-access-token.json");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fake-xero"))
            .args([
                "--client-id",
                CONF,
                "--client-secret-env",
                "FAKE_XERO_TEST_SECRET",
            ])
            .arg("--write-token-file")
            .arg(&file)
            .env("FAKE_XERO_TEST_SECRET", SECRET)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let result = std::panic::catch_unwind(|| {
            let url = line
                .trim()
                .strip_prefix("listening on http://127.0.0.1:")
                .expect(&line);
            let port: u16 = url.parse().unwrap();
            let tokens: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            assert_eq!(tokens["token_type"], "Bearer");
            assert_eq!(tokens["expires_in"], 1800);
            assert_eq!(tokens["scope"], SCOPE);
            assert!(tokens["id_token"].as_str().unwrap().starts_with("eyJ"));
            let rt = tokens["refresh_token"].as_str().unwrap();
            let req = oauth_request(
                port,
                "/connect/token",
                Auth::Basic(CONF, SECRET),
                &[("grant_type", "refresh_token"), ("refresh_token", rt)],
            );
            let r = parse(&raw(port, &req, Duration::from_secs(5)).unwrap()).unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let counts = try_request(
                port,
                "GET",
                "/_fake/counts",
                &[],
                b"",
                Duration::from_secs(5),
            )
            .unwrap();
            assert_eq!(counts.json()["refresh"], 1);
        });
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        result.unwrap();
    }
}
