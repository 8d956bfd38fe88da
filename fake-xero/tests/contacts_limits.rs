//! The Contacts route, the recorded bodies and headers, the enforced minute limit and
//! `expire_access_tokens`, over real HTTP.

mod common;

use std::time::Duration;

use common::*;
use fake_xero::{Counter, DEFAULT_TENANT_ID, FakeXero, Fault, RefreshTokenStatus, Target};
use serde_json::json;

const OTHER_TENANT: &str = "0b9e3c2a-1111-4222-8333-444455556666";
const CONTACTS: &str = "/api.xro/2.0/Contacts";

/// A request with a body to the API, as a client sending JSON would make it.
fn send(
    fx: &FakeXero,
    method: &str,
    path: &str,
    access: &str,
    tenant: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Resp {
    let auth = bearer(access);
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(t) = tenant {
        headers.push(("Xero-Tenant-Id", t));
    }
    if let Some(ct) = content_type {
        headers.push(("Content-Type", ct));
    }
    request(fx, method, path, &headers, body)
}

fn post_contacts(fx: &FakeXero, access: &str, tenant: Option<&str>, body: &[u8]) -> Resp {
    send(
        fx,
        "POST",
        CONTACTS,
        access,
        tenant,
        Some("application/json"),
        body,
    )
}

fn get_contacts(fx: &FakeXero, access: &str, tenant: Option<&str>) -> Resp {
    api(fx, "GET", CONTACTS, access, tenant)
}

fn organisation(fx: &FakeXero, access: &str, tenant: &str) -> Resp {
    api(fx, "GET", "/api.xro/2.0/Organisation", access, Some(tenant))
}

fn minute_remaining(r: &Resp) -> Option<&str> {
    r.header("X-MinLimit-Remaining")
}

mod contacts {
    use super::*;

    #[test]
    fn post_put_and_get_per_tenant() {
        let fx = fake();
        fx.add_tenant(OTHER_TENANT, "Other Org", "ORGANISATION");
        let t = fx.issue_tokens(CONF, SCOPE);
        let a = br#"{"Contacts":[{"Name":"Alpha Ltd","EmailAddress":"a@example.com"},{"Name":"Beta"}]}"#;
        let r = post_contacts(&fx, &t.access_token, Some(DEFAULT_TENANT_ID), a);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.header("Content-Type")
                .unwrap()
                .starts_with("application/json")
        );
        let j = r.json();
        assert_eq!(j["Status"], "OK");
        assert_eq!(j["ProviderName"], "fake-xero");
        assert_eq!(j["Id"].as_str().unwrap().len(), 36);
        assert!(j["DateTimeUTC"].as_str().unwrap().starts_with("/Date("));
        assert_eq!(
            j["Contacts"],
            json!([{"Name":"Alpha Ltd","EmailAddress":"a@example.com"},{"Name":"Beta"}])
        );
        // The answer also keeps the echo fields every other route has.
        assert_eq!(j["Method"], "POST");
        assert_eq!(j["BodyLength"], a.len());
        assert_eq!(j["TenantId"], DEFAULT_TENANT_ID);
        assert!(minute_remaining(&r).is_some());

        // PUT too; a body that is not JSON (or JSON without a Contacts array) is kept
        // all the same, and answered with no contacts.
        let xml = b"<Contacts><Contact><Name>Gamma</Name></Contact></Contacts>";
        let r = send(
            &fx,
            "PUT",
            CONTACTS,
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
            Some("application/xml"),
            xml,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["Contacts"], json!([]));
        let single = br#"{"Name":"Not in an array"}"#;
        let r = post_contacts(&fx, &t.access_token, Some(DEFAULT_TENANT_ID), single);
        assert_eq!(r.json()["Contacts"], json!([]));
        // Path matching ignores case, as Xero's does; the tenant header too.
        let delta = br#"{"Contacts":[{"Name":"Delta"}]}"#;
        let r = send(
            &fx,
            "POST",
            "/api.xro/2.0/contacts",
            &t.access_token,
            Some(&DEFAULT_TENANT_ID.to_uppercase()),
            Some("application/json"),
            delta,
        );
        assert_eq!(r.json()["Contacts"], json!([{"Name":"Delta"}]));
        let other = br#"{"Contacts":[{"Name":"Elsewhere"}]}"#;
        let r = post_contacts(&fx, &t.access_token, Some(OTHER_TENANT), other);
        assert_eq!(r.json()["TenantId"], OTHER_TENANT);

        let r = get_contacts(&fx, &t.access_token, Some(DEFAULT_TENANT_ID));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json(),
            json!({"Contacts": [
                {"Name":"Alpha Ltd","EmailAddress":"a@example.com"},
                {"Name":"Beta"},
                {"Name":"Delta"},
            ]})
        );
        let r = get_contacts(&fx, &t.access_token, Some(OTHER_TENANT));
        assert_eq!(r.json(), json!({"Contacts": [{"Name":"Elsewhere"}]}));
        // The bytes are kept exactly as received, per tenant.
        assert_eq!(
            fx.posted_contacts(DEFAULT_TENANT_ID),
            vec![a.to_vec(), xml.to_vec(), single.to_vec(), delta.to_vec()]
        );
        assert_eq!(
            fx.posted_contacts(&OTHER_TENANT.to_uppercase()),
            vec![other.to_vec()]
        );
        assert!(fx.posted_contacts("nobody").is_empty());
    }

    #[test]
    fn auth_and_tenant_checks_store_nothing() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let body = br#"{"Contacts":[{"Name":"Never"}]}"#;
        let forbidden = json!({"Type": null, "Title": "Forbidden", "Status": 403,
                               "Detail": "AuthenticationUnsuccessful"});
        let unauthorized = json!({"Type": null, "Title": "Unauthorized", "Status": 401,
                                  "Detail": "AuthenticationUnsuccessful"});
        for method in ["GET", "POST", "PUT"] {
            let r = send(&fx, method, CONTACTS, &t.access_token, None, None, body);
            assert_eq!((r.status, r.json()), (403, forbidden.clone()), "{method}");
            let r = send(
                &fx,
                method,
                CONTACTS,
                &t.access_token,
                Some("00000000-0000-4000-8000-000000000000"),
                None,
                body,
            );
            assert_eq!((r.status, r.json()), (403, forbidden.clone()), "{method}");
            let r = send(
                &fx,
                method,
                CONTACTS,
                "eyJfoo.bar.baz",
                Some(DEFAULT_TENANT_ID),
                None,
                body,
            );
            assert_eq!(
                (r.status, r.json()),
                (401, unauthorized.clone()),
                "{method}"
            );
        }
        let r = request(
            &fx,
            "POST",
            CONTACTS,
            &[("Xero-Tenant-Id", DEFAULT_TENANT_ID)],
            body,
        );
        assert_eq!((r.status, r.json()), (401, unauthorized));

        // An access token expired on the fake's clock.
        fx.advance_clock(Duration::from_secs(31 * 60));
        let r = post_contacts(&fx, &t.access_token, Some(DEFAULT_TENANT_ID), body);
        assert_eq!(r.status, 401);
        let detail = r.json()["Detail"].as_str().unwrap().to_string();
        assert!(
            detail.starts_with("TokenExpired: token expired at "),
            "{detail}"
        );
        assert!(fx.posted_contacts(DEFAULT_TENANT_ID).is_empty());
        assert_eq!(fx.count(Counter::Api), 11);

        // A refreshed token reads an empty list.
        let j = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).json();
        let r = get_contacts(
            &fx,
            j["access_token"].as_str().unwrap(),
            Some(DEFAULT_TENANT_ID),
        );
        assert_eq!((r.status, r.json()), (200, json!({"Contacts": []})));
    }

    #[test]
    fn custom_connection_needs_no_tenant_header() {
        let fx = fake();
        let r = token(
            &fx,
            Auth::Basic(CONF, SECRET),
            &[("grant_type", "client_credentials")],
        );
        let access = r.json()["access_token"].as_str().unwrap().to_string();
        let body = br#"{"Contacts":[{"Name":"Via custom connection"}]}"#;
        assert_eq!(post_contacts(&fx, &access, None, body).status, 200);
        assert_eq!(fx.posted_contacts(DEFAULT_TENANT_ID), vec![body.to_vec()]);
        assert_eq!(
            get_contacts(&fx, &access, None).json()["Contacts"],
            json!([{"Name":"Via custom connection"}])
        );
    }
}

mod recording {
    use super::*;

    #[test]
    fn last_api_body_is_exact_and_follows_every_api_request() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        assert_eq!(fx.last_api_body(), None);
        // Other endpoints do not touch it.
        refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        connections(&fx, &t.access_token);
        assert_eq!(fx.last_api_body(), None);

        // Not UTF-8, with CR LF and NUL: kept byte for byte.
        let odd = b"{\"Contacts\":[]}\r\n\x00\xff\xfe tail".to_vec();
        let r = send(
            &fx,
            "POST",
            "/api.xro/2.0/Invoices",
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
            Some("application/octet-stream"),
            &odd,
        );
        // (A refresh leaves the earlier access token valid.)
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(fx.last_api_body(), Some(odd.clone()));
        // A 403 and a 401 still record what was sent.
        let body = br#"{"Contacts":[{"Name":"x"}]}"#;
        post_contacts(&fx, &t.access_token, None, body);
        assert_eq!(fx.last_api_body().as_deref(), Some(&body[..]));
        post_contacts(&fx, "eyJnope", Some(DEFAULT_TENANT_ID), b"{}");
        assert_eq!(fx.last_api_body().as_deref(), Some(&b"{}"[..]));
        // A GET has an empty body.
        get_contacts(&fx, &t.access_token, Some(DEFAULT_TENANT_ID));
        assert_eq!(fx.last_api_body(), Some(Vec::new()));

        // A chunked body is recorded decoded.
        let port = fx.port();
        let auth = bearer(&t.access_token);
        let req = format!(
            "PUT /api.xro/2.0/Contacts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Authorization: {auth}\r\nXero-Tenant-Id: {DEFAULT_TENANT_ID}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n\
             c\r\n{{\"Contacts\":\r\n10\r\n[{{\"Name\":\"Chu\"}}]\r\n1\r\n}}\r\n0\r\n\r\n"
        );
        let r = parse(&raw(port, req.as_bytes(), Duration::from_secs(10)).unwrap()).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let decoded = br#"{"Contacts":[{"Name":"Chu"}]}"#;
        assert_eq!(fx.last_api_body().as_deref(), Some(&decoded[..]));
        assert_eq!(r.json()["Contacts"], json!([{"Name":"Chu"}]));
    }

    #[test]
    fn tenant_and_content_type_are_recorded() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let mixed_case = DEFAULT_TENANT_ID.to_uppercase();
        send(
            &fx,
            "POST",
            CONTACTS,
            &t.access_token,
            Some(&mixed_case),
            Some("application/json; charset=utf-8"),
            b"{}",
        );
        get_contacts(&fx, &t.access_token, None);
        refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        let records = fx.requests();
        assert_eq!(records[0].tenant.as_deref(), Some(mixed_case.as_str()));
        assert_eq!(
            records[0].content_type.as_deref(),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            (records[1].tenant.as_deref(), records[1].status),
            (None, Some(403))
        );
        assert_eq!(records[1].content_type, None);
        assert_eq!(records[2].tenant, None);
        assert_eq!(
            records[2].content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        // The control route shows them too.
        let list = request(&fx, "GET", "/_fake/requests", &[], b"").json();
        assert_eq!(list[0]["tenant"], mixed_case.as_str());
        assert_eq!(list[0]["content_type"], "application/json; charset=utf-8");
        assert_eq!(list[1]["tenant"], serde_json::Value::Null);
    }

    #[test]
    fn api_requests_with_status_lists_api_calls_only() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
        connections(&fx, &t.access_token);
        post_contacts(&fx, &t.access_token, None, b"{}");
        api(
            &fx,
            "GET",
            "/api.xro/2.0/Invoices?page=2",
            "eyJnope",
            Some(DEFAULT_TENANT_ID),
        );
        fx.push_fault(Target::Api, Fault::Reset);
        let _ = try_request(
            fx.port(),
            "GET",
            "/api.xro/2.0/Organisation",
            &[],
            b"",
            Duration::from_secs(10),
        );
        fx.set_minute_limit(Some(0), 1);
        organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
        let s = |m: &str, p: &str, code: u16| (m.to_string(), p.to_string(), code);
        assert_eq!(
            fx.api_requests_with_status(),
            vec![
                s("GET", "/api.xro/2.0/Organisation", 200),
                s("POST", "/api.xro/2.0/Contacts", 403),
                s("GET", "/api.xro/2.0/Invoices", 401),
                s("GET", "/api.xro/2.0/Organisation", 0),
                s("GET", "/api.xro/2.0/Organisation", 429),
            ]
        );
    }
}

mod minute_limit {
    use super::*;

    #[test]
    fn limit_per_tenant_then_429_like_xero() {
        let fx = fake();
        fx.add_tenant(OTHER_TENANT, "Other Org", "ORGANISATION");
        let t = fx.issue_tokens(CONF, SCOPE);
        // Calls before the switch do not count against it.
        for _ in 0..3 {
            organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
        }
        fx.set_minute_limit(Some(2), 7);
        let r = organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
        assert_eq!((r.status, minute_remaining(&r)), (200, Some("1")));
        let r = post_contacts(
            &fx,
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
            br#"{"Contacts":[{"Name":"Kept"}]}"#,
        );
        assert_eq!((r.status, minute_remaining(&r)), (200, Some("0")));

        let r = post_contacts(
            &fx,
            &t.access_token,
            Some(DEFAULT_TENANT_ID),
            br#"{"Contacts":[{"Name":"Refused"}]}"#,
        );
        assert_eq!(r.status, 429);
        assert_eq!(r.header("Retry-After"), Some("7"));
        assert_eq!(r.header("X-Rate-Limit-Problem"), Some("minute"));
        assert_eq!(minute_remaining(&r), Some("0"));
        for h in ["X-DayLimit-Remaining", "X-AppMinLimit-Remaining"] {
            assert!(r.header(h).unwrap().parse::<u32>().is_ok(), "{h}");
        }
        // Not processed.
        assert_eq!(fx.posted_contacts(DEFAULT_TENANT_ID).len(), 1);
        assert_eq!(
            fx.requests().last().map(|r| r.status),
            Some(Some(429)),
            "recorded with its status"
        );

        // Per tenant: the other organisation has its own window.
        let r = organisation(&fx, &t.access_token, OTHER_TENANT);
        assert_eq!((r.status, minute_remaining(&r)), (200, Some("1")));
        // A bad token or tenant is told so before the limit, and takes no place.
        assert_eq!(organisation(&fx, "eyJnope", DEFAULT_TENANT_ID).status, 401);
        let r = api(
            &fx,
            "GET",
            "/api.xro/2.0/Organisation",
            &t.access_token,
            None,
        );
        assert_eq!(r.status, 403);
        // /connections and the identity endpoints are never limited.
        assert_eq!(connections(&fx, &t.access_token).status, 200);
        let j = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!(j.status, 200);
        // Every refused call still counts.
        assert_eq!(fx.count(Counter::Api), 3 + 3 + 1 + 2);

        // A fault still reports the tenant's minute remaining.
        fx.push_fault(Target::Api, Fault::ServerError);
        let r = organisation(&fx, &t.access_token, OTHER_TENANT);
        assert_eq!((r.status, minute_remaining(&r)), (500, Some("1")));

        // Clearing the limit lets everything through again, with the old headers.
        fx.set_minute_limit(None, 0);
        let r = organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("X-Rate-Limit-Problem"), None);
        let remaining: usize = minute_remaining(&r).unwrap().parse().unwrap();
        assert!(remaining > 2, "{remaining}");
        // Setting it again starts the windows afresh.
        fx.set_minute_limit(Some(1), 3);
        assert_eq!(
            organisation(&fx, &t.access_token, DEFAULT_TENANT_ID).status,
            200
        );
        let r = organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
        assert_eq!((r.status, r.header("Retry-After")), (429, Some("3")));
    }

    #[test]
    fn sliding_sixty_second_window_on_the_fake_clock() {
        let fx = fake();
        // The clock moves 151 s in all: well inside the access token's 30 minutes.
        let t = fx.issue_tokens(CONF, SCOPE);
        let a = t.access_token.as_str();
        let call = |access: &str| organisation(&fx, access, DEFAULT_TENANT_ID).status;
        fx.set_minute_limit(Some(2), 60);
        assert_eq!(call(a), 200);
        fx.advance_clock(Duration::from_secs(30));
        assert_eq!(call(a), 200);
        assert_eq!(call(a), 429);
        // The margins below allow for a few real seconds passing during the test.
        fx.advance_clock(Duration::from_secs(20));
        assert_eq!(call(a), 429, "50 s after the first call");
        // 60 s after the first call it has left the window; the second has not.
        fx.advance_clock(Duration::from_secs(10));
        assert_eq!(call(a), 200);
        assert_eq!(call(a), 429);
        // Refused calls took no place: 60 s after the second call, one more slot.
        fx.advance_clock(Duration::from_secs(31));
        assert_eq!(call(a), 200);
        assert_eq!(call(a), 429);
        // A full minute of quiet frees everything.
        fx.advance_clock(Duration::from_secs(60));
        assert_eq!(call(a), 200);
        assert_eq!(call(a), 200);
        assert_eq!(call(a), 429);
    }

    #[test]
    fn zero_refuses_every_call() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.set_minute_limit(Some(0), 11);
        for _ in 0..3 {
            let r = get_contacts(&fx, &t.access_token, Some(DEFAULT_TENANT_ID));
            assert_eq!((r.status, r.header("Retry-After")), (429, Some("11")));
        }
    }
}

mod other_limits {
    use super::*;

    #[test]
    fn day_and_app_minute_limits_answer_429_with_their_problem() {
        let fx = fake();
        fx.add_tenant(OTHER_TENANT, "Other Org", "ORGANISATION");
        let t = fx.issue_tokens(CONF, SCOPE);
        let a = t.access_token.as_str();
        fx.set_limits(Some(3), Some(2), Duration::from_millis(800), None);
        let r = organisation(&fx, a, DEFAULT_TENANT_ID);
        assert_eq!(
            (r.status, r.header("X-DayLimit-Remaining")),
            (200, Some("1"))
        );
        assert_eq!(r.header("X-AppMinLimit-Remaining"), Some("2"));
        assert_eq!(organisation(&fx, a, DEFAULT_TENANT_ID).status, 200);
        let r = organisation(&fx, a, DEFAULT_TENANT_ID);
        assert_eq!(
            (r.status, r.header("X-Rate-Limit-Problem")),
            (429, Some("day"))
        );
        let after: u64 = r.header("Retry-After").unwrap().parse().unwrap();
        assert!((86_399..=86_400).contains(&after), "{after}");
        // The other tenant has a day of its own, but the app's minute is shared.
        assert_eq!(organisation(&fx, a, OTHER_TENANT).status, 200);
        let r = organisation(&fx, a, OTHER_TENANT);
        assert_eq!(
            (r.status, r.header("X-Rate-Limit-Problem")),
            (429, Some("appminute"))
        );
        // The short window passes in real time.
        std::thread::sleep(Duration::from_millis(850));
        assert_eq!(organisation(&fx, a, OTHER_TENANT).status, 200);
    }

    #[test]
    fn requests_in_progress_are_counted_per_tenant_and_limited() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.set_limits(None, None, Duration::from_secs(60), Some(2));
        fx.set_persistent_fault(Target::Api, Some(Fault::Delay(Duration::from_millis(600))));
        let port = fx.port();
        let access = t.access_token.clone();
        let slow: Vec<_> = (0..2)
            .map(|_| {
                let access = access.clone();
                std::thread::spawn(move || {
                    let req = format!(
                        "GET /api.xro/2.0/Organisation HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {access}\r\nXero-Tenant-Id: {DEFAULT_TENANT_ID}\r\n\r\n"
                    );
                    parse(&raw(port, req.as_bytes(), Duration::from_secs(5)).unwrap()).unwrap()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let r = organisation(&fx, &access, DEFAULT_TENANT_ID);
        assert_eq!(
            (
                r.status,
                r.header("X-Rate-Limit-Problem"),
                r.header("Retry-After")
            ),
            (429, Some("concurrent"), Some("1"))
        );
        for s in slow {
            assert_eq!(s.join().unwrap().status, 200);
        }
        assert_eq!(fx.max_in_progress(), 2);
        fx.set_persistent_fault(Target::Api, None);
        assert_eq!(organisation(&fx, &access, DEFAULT_TENANT_ID).status, 200);
    }
}

mod expiry {
    use super::*;
    use base64::Engine as _;

    fn exp_claim(jwt: &str) -> u64 {
        let payload = jwt.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["exp"].as_u64().unwrap()
    }

    #[test]
    fn expire_access_tokens_gives_one_token_expired_then_refresh_works() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let cc = token(
            &fx,
            Auth::Basic(CONF, SECRET),
            &[("grant_type", "client_credentials")],
        )
        .json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            organisation(&fx, &t.access_token, DEFAULT_TENANT_ID).status,
            200
        );
        let before = fx.now();
        fx.expire_access_tokens();
        assert!(fx.now() < before + 5, "the clock did not move");
        // The client still thinks the token is good for half an hour…
        assert!(exp_claim(&t.access_token) >= fx.now() + 1700);
        // …but the API says otherwise.
        assert!(!fx.access_token_valid(&t.access_token));
        assert!(!fx.access_token_valid(&cc));
        let r = organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
        assert_eq!(r.status, 401);
        let detail = r.json()["Detail"].as_str().unwrap().to_string();
        assert!(
            detail.starts_with("TokenExpired: token expired at "),
            "{detail}"
        );
        assert_eq!(connections(&fx, &t.access_token).status, 401);
        assert_eq!(get_contacts(&fx, &cc, None).status, 401);

        // The refresh token is untouched, and its new access token works.
        assert_eq!(
            fx.refresh_token_status(&t.refresh_token),
            RefreshTokenStatus::Active
        );
        let j = refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token);
        assert_eq!(j.status, 200, "{}", j.text());
        let fresh = j.json()["access_token"].as_str().unwrap().to_string();
        assert!(fx.access_token_valid(&fresh));
        assert_eq!(organisation(&fx, &fresh, DEFAULT_TENANT_ID).status, 200);
        // The expired tokens got one 401 each from the API, nothing else did.
        assert_eq!(
            fx.api_requests_with_status()
                .iter()
                .filter(|(_, _, s)| *s == 401)
                .count(),
            2
        );
        let newer = j.json()["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(fx.refresh_token_status(&newer), RefreshTokenStatus::Active);
        // A retry of the used token inside the grace window still works too.
        assert_eq!(
            refresh(&fx, Auth::Basic(CONF, SECRET), &t.refresh_token).status,
            200
        );
    }

    #[test]
    fn advance_clock_expires_on_the_api() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.advance_clock(Duration::from_secs(29 * 60));
        assert_eq!(
            get_contacts(&fx, &t.access_token, Some(DEFAULT_TENANT_ID)).status,
            200
        );
        fx.advance_clock(Duration::from_secs(2 * 60));
        let r = get_contacts(&fx, &t.access_token, Some(DEFAULT_TENANT_ID));
        assert_eq!(r.status, 401);
        assert!(
            r.json()["Detail"]
                .as_str()
                .unwrap()
                .starts_with("TokenExpired: token expired at ")
        );
    }
}

mod control {
    use super::*;

    #[test]
    fn minute_limit_and_expiry_routes() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        let post = |target: &str| request(&fx, "POST", target, &[], b"").status;
        assert_eq!(post("/_fake/minute_limit?limit=1&retry_after=4"), 200);
        assert_eq!(
            organisation(&fx, &t.access_token, DEFAULT_TENANT_ID).status,
            200
        );
        let r = organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
        assert_eq!((r.status, r.header("Retry-After")), (429, Some("4")));
        assert_eq!(post("/_fake/minute_limit?limit=none"), 200);
        assert_eq!(
            organisation(&fx, &t.access_token, DEFAULT_TENANT_ID).status,
            200
        );
        assert_eq!(post("/_fake/minute_limit?limit=x"), 400);
        assert_eq!(post("/_fake/minute_limit?limit=1&retry_after=-1"), 400);
        assert_eq!(
            request(&fx, "GET", "/_fake/minute_limit", &[], b"").status,
            405
        );

        assert_eq!(post("/_fake/expire_access_tokens"), 200);
        let r = organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
        assert_eq!(r.status, 401);
        assert_eq!(
            request(&fx, "GET", "/_fake/expire_access_tokens", &[], b"").status,
            405
        );
        // Control routes are not recorded.
        assert_eq!(fx.requests().len(), 4);
    }
}

mod unauthorized_fault {
    use super::*;

    #[test]
    fn persistent_unauthorized_fault_answers_401_to_every_api_call_until_cleared() {
        let fx = fake();
        let t = fx.issue_tokens(CONF, SCOPE);
        fx.set_persistent_fault(Target::Api, Some(Fault::Unauthorized));
        for _ in 0..2 {
            let r = organisation(&fx, &t.access_token, DEFAULT_TENANT_ID);
            assert_eq!(r.status, 401);
            assert_eq!(r.json()["Detail"], "AuthenticationUnsuccessful");
        }
        fx.set_persistent_fault(Target::Api, None);
        assert_eq!(
            organisation(&fx, &t.access_token, DEFAULT_TENANT_ID).status,
            200
        );
        assert_eq!(fx.count(Counter::Api), 3);
    }
}
