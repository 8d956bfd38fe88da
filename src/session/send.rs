//! [`Session::send`]: one call to Xero's API with the profile's access token, inside Xero's
//! limits, refreshed and retried once after a 401, retried once after a 429 within the wait
//! allowed.

use std::time::{Duration, Instant};

use super::Session;
use super::refresh::Need;
use crate::error::{Error, ExitCode, Result};
use crate::limits::Answer;
use crate::secret::ExposeSecret;

impl Session {
    /// Sends `request` with `Authorization: Bearer …`, `Xero-Tenant-Id` (unless the request
    /// sets it) and `Accept: application/json`. On a 401 it refreshes once (through the refresh
    /// protocol) and retries once; a second 401 is returned as it is, never retried again.
    ///
    /// Xero's limits are kept before sending (unless [`Session::without_rate_limits`]): at most
    /// N requests in progress per tenant and the per-minute budgets, shared with every process
    /// of the user; waiting for them counts in the session's `max_wait`. A 429 for the minute, app-minute
    /// or concurrency limit waits `Retry-After` (within `max_wait`, else [`Error::Temporary`]
    /// without waiting) and retries once; a 429 for the day limit is [`Error::DayLimit`] at
    /// once, without a retry.
    ///
    /// The request body must be replayable (bytes, not a stream).
    ///
    /// What it guarantees, whoever built the request: the access token goes only to the origin
    /// (scheme, host, port) of the profile's `api_url` or `connections_url`, and never to a URL
    /// with a user name or password in it — anything else is refused with
    /// [`Error::InvalidInput`] before the token is even read (reqwest itself moves a URL's user
    /// info into an `Authorization` header when the request is built, which the bearer then
    /// replaces). The request is sent with the session's own client ([`Session::http`]), not the
    /// one that built it: no redirects followed, no pooled connection, and no proxy for a
    /// loopback URL.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderName, HeaderValue};
        let (_, built) = request.build_split();
        let template = built.map_err(|e| {
            Error::InvalidInput(format!(
                "invalid request: {}",
                crate::http::describe_transport(&e)
            ))
        })?;
        crate::xero::check_bearer_target(&self.profile.endpoints, template.url()).map_err(
            |why| {
                Error::InvalidInput(format!(
                    "refusing to send the access token: the request {why}"
                ))
            },
        )?;
        let client = self.http().await?;
        let mut used = self.valid_token_set(self.margin_secs).await?;
        let mut refreshed = false;
        let mut retried_429 = false;
        // `max_wait` is at most a year (with_max_wait), so this cannot overflow.
        let deadline = Instant::now() + self.max_wait;
        loop {
            let mut req = template.try_clone().ok_or_else(|| {
                Error::InvalidInput(
                    "the request body is a stream and cannot be sent again; give it as bytes"
                        .into(),
                )
            })?;
            let token = used.require_access_token(&self.profile.name)?;
            let headers = req.headers_mut();
            headers.insert(
                AUTHORIZATION,
                crate::xero::bearer(&self.profile.name, token.expose_secret())?,
            );
            if !headers.contains_key(ACCEPT) {
                headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
            }
            let tenant_header = HeaderName::from_static("xero-tenant-id");
            if let Some(tenant) = &self.tenant
                && !headers.contains_key(&tenant_header)
            {
                let value = HeaderValue::from_str(tenant).map_err(|_| {
                    Error::InvalidInput(format!("'{tenant}' is not a valid tenant id"))
                })?;
                headers.insert(tenant_header, value);
            }
            let url = req.url().clone();
            let method = req.method().clone();
            let tenant = req
                .headers()
                .get("xero-tenant-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let permit = match &self.limiter {
                Some(limiter) => Some(limiter.admit(tenant.as_deref(), deadline).await?),
                None => None,
            };
            let started = Instant::now();
            let sent_fp = self.fingerprints(&used).0;
            let executed = client.execute(req).await;
            // The call, for the audit log: the path without its query (values may name people
            // or amounts), the tenant, the status and the length Xero announced.
            let event = self
                .audit_event("api-call")
                .with("method", method.as_str())
                .with("path", url.path())
                .with_opt("tenant", tenant.clone())
                .with_opt("access_fp", sent_fp)
                .with("duration_ms", started.elapsed().as_millis() as u64);
            self.record(match &executed {
                Ok(response) => event
                    .with("status", response.status().as_u16())
                    .with_opt("bytes", response.content_length()),
                Err(_) => event.outcome(ExitCode::Temporary as i32),
            });
            let response = executed.map_err(|e| Error::Temporary {
                what: format!("{method} {}", crate::config::shown(&url)),
                cause: crate::http::describe_transport(&e),
                hint: None,
            })?;
            let answer = Answer::new(response.status().as_u16(), response.headers());
            // The call was made (it may have created something at Xero): a ledger that cannot
            // be written only costs the next calls their pacing, and must not turn the answer
            // into an error that a script would retry into a duplicate.
            if let Some(permit) = permit
                && let Err(e) = permit.answered(&answer)
                && !self
                    .told_ledger
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                tracing::warn!(
                    "the answer to {method} {} came back, but the rate-limit ledger could not be updated ({e}); calls are paced without it until it can",
                    crate::config::shown(&url)
                );
            }
            match response.status().as_u16() {
                401 if !refreshed => {
                    tracing::info!(%url, "401 from the API: refreshing once and retrying");
                    refreshed = true;
                    used = self.refresh_with(Need::NewerThan(used)).await?.token_set;
                }
                429 if answer.is_day_limit() => {
                    let after = answer.retry_after.unwrap_or(Duration::from_secs(86_400));
                    return Err(Error::DayLimit {
                        tenant: tenant.unwrap_or_default(),
                        per_day: self.profile.rate_limits.per_day,
                        resets_at: self
                            .now()
                            .saturating_add(i64::try_from(after.as_secs()).unwrap_or(i64::MAX)),
                    });
                }
                429 => {
                    let retry_after = answer.retry_after.unwrap_or(Duration::from_secs(1));
                    let problem = answer.problem.as_deref().unwrap_or("unnamed");
                    let refuse = |why: String| Error::Temporary {
                        what: format!("{method} {}", crate::config::shown(&url)),
                        cause: format!(
                            "HTTP 429 Too Many Requests ({problem} limit), Retry-After {} s",
                            retry_after.as_secs()
                        ),
                        hint: Some(why),
                    };
                    if retried_429 {
                        return Err(refuse(
                            "Xero refused the retry too; other programs of this app are using its limits".into(),
                        ));
                    }
                    // Checked: Retry-After is the server's number, up to u64::MAX seconds.
                    if Instant::now()
                        .checked_add(retry_after)
                        .is_none_or(|then| then > deadline)
                    {
                        return Err(refuse(format!(
                            "waiting longer than {} s in all was not allowed (--max-wait)",
                            self.max_wait.as_secs()
                        )));
                    }
                    // Said without -v: the command would otherwise seem to hang.
                    tracing::warn!(
                        "Xero's {problem} limit was reached at {url} (429): waiting {} s, then \
                         trying once more",
                        retry_after.as_secs()
                    );
                    tokio::time::sleep(retry_after).await;
                    retried_429 = true;
                }
                _ => return Ok(response),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::with_expired_set;
    use super::*;
    use fake_xero::{Counter, FakeXero};

    /// A POST went out and Xero answered; then the rate-limit ledger could not be written (its
    /// temporary file's name taken by a folder): the answer still comes back, so a script does
    /// not retry the call into a duplicate.
    #[tokio::test]
    async fn an_answered_call_comes_back_when_the_rate_limit_ledger_cannot_be_written() {
        let fake = FakeXero::start();
        let (mut t, _) = with_expired_set(&fake).await;
        let api = fake.api_url();
        let token_url = fake.token_url();
        t.ctx.env = Box::new(move |k| match k {
            "XERO_AUTH_API_URL" => Some(api.clone()),
            "XERO_AUTH_TOKEN_URL" => Some(token_url.clone()),
            _ => None,
        });
        fake.add_tenant("tenant-1", "Org", "ORGANISATION");
        let session = t
            .ctx
            .session()
            .unwrap()
            .with_tenant(Some("tenant-1".into()));
        let url = session
            .profile()
            .endpoints
            .api
            .join("api.xro/2.0/Organisation")
            .unwrap();
        // Refreshed first, so that only the call is in flight below.
        session.valid_token_set(300).await.unwrap();
        fake.push_fault(
            fake_xero::Target::Api,
            fake_xero::Fault::Delay(Duration::from_millis(800)),
        );
        let limits = t.ctx.paths.state_dir.join("limits");
        let request = session.http().await.unwrap().post(url).body("{}");
        let call = session.send(request);
        let spoil = async {
            while fake.count(Counter::Api) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for app in std::fs::read_dir(&limits).unwrap() {
                std::fs::create_dir(app.unwrap().path().join("ledger.json.tmp")).unwrap();
            }
        };
        let (response, ()) = tokio::join!(call, spoil);

        let response = response.expect("the answer, not an error");
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(fake.count(Counter::Api), 1, "sent once");
    }

    /// A listener that records whether anything connected to it.
    fn stray_listener() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/steal", listener.local_addr().unwrap());
        (listener, url)
    }

    #[tokio::test]
    async fn send_refuses_a_request_off_the_api_origin_whoever_built_it() {
        let fake = FakeXero::start();
        let (mut t, _) = with_expired_set(&fake).await;
        let api = fake.api_url();
        let base = fake.base_url();
        let port = fake.port();
        t.ctx.env = Box::new(move |k| match k {
            "XERO_AUTH_API_URL" => Some(api.clone()),
            "XERO_AUTH_CONNECTIONS_URL" => Some(format!("{base}/connections")),
            "XERO_AUTH_TOKEN_URL" => Some(format!("{base}/connect/token")),
            _ => None,
        });
        let session = t.ctx.session().unwrap();
        let (stray, stray_url) = stray_listener();
        // The caller's own client would follow redirects; the session's does not matter here:
        // nothing may be sent at all.
        let theirs = reqwest::Client::new();
        for url in [
            stray_url.clone(),
            format!("https://127.0.0.1:{port}/api.xro/2.0/Organisation"),
        ] {
            let err = session.send(theirs.get(&url)).await.unwrap_err();
            assert_eq!(err.exit_code() as u8, 1, "{url}: {err}");
            let message = err.to_string();
            assert!(
                message.contains(&format!("the API origin http://127.0.0.1:{port}"))
                    && !message.contains("pw"),
                "{url}: {message}"
            );
        }
        assert!(
            matches!(stray.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "nothing connected to the other port"
        );
        assert_eq!(fake.count(Counter::TokenRequests), 0, "not even a refresh");
        assert_eq!(fake.count(Counter::Api), 0);
    }
}
