//! Requests to Xero's token and revocation endpoints (the refresh, client-credentials and
//! authorization-code grants, revocation) and their retries. Nothing stored is touched here.

use std::time::Duration;

use super::Session;
use crate::error::{Error, Result};
use crate::guard::RefreshGuard;
use crate::oauth::{self, AppCredentials, TokenError, TokenResponse};
use crate::secret::{ExposeSecret, FormBody};
use crate::token_set::TokenSet;

/// How many times one refresh is attempted before giving up with exit 6.
const REFRESH_ATTEMPTS: u32 = 3;
/// The longest `Retry-After` honoured inside one command.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

impl Session {
    /// Asks the token endpoint for new tokens for `current`: the refresh grant, or for a
    /// client-credentials connection (no refresh token) the client-credentials grant again.
    pub(super) async fn post_refresh(
        &self,
        app: &AppCredentials,
        current: &TokenSet,
        guard: &RefreshGuard,
    ) -> Result<TokenResponse> {
        let url = &self.profile.endpoints.token;
        match &current.refresh_token {
            Some(refresh_token) => {
                let refresh_token = refresh_token.expose_secret();
                self.with_retries_under(
                    Some(guard),
                    &format!("refreshing profile '{}'", self.profile.name),
                    url,
                    |http| {
                        let form = FormBody::with_capacity(64 + 3 * refresh_token.len())
                            .field("grant_type", "refresh_token")
                            .field("refresh_token", refresh_token);
                        oauth::request_tokens(http, url, app, form)
                    },
                )
                .await
            }
            None => {
                self.client_credentials(app, &current.scopes, Some(guard))
                    .await
            }
        }
    }

    /// The client-credentials grant (Xero custom connections): a new access token, no refresh
    /// token.
    pub(crate) async fn post_client_credentials(
        &self,
        app: &AppCredentials,
        scopes: &[String],
    ) -> Result<TokenResponse> {
        self.client_credentials(app, scopes, None).await
    }

    async fn client_credentials(
        &self,
        app: &AppCredentials,
        scopes: &[String],
        guard: Option<&RefreshGuard>,
    ) -> Result<TokenResponse> {
        if app.client_secret.is_none() {
            return Err(Error::NothingStored {
                profile: self.profile.name.clone(),
                what: "client secret",
                hint: format!(
                    "custom connections need the app's secret: run {}",
                    crate::hint::command(&self.profile.name, "client set --client-id ID"),
                ),
            });
        }
        let url = &self.profile.endpoints.token;
        let scope = scopes.join(" ");
        self.with_retries_under(
            guard,
            &format!(
                "requesting a client-credentials token for profile '{}'",
                self.profile.name
            ),
            url,
            |http| {
                let form = FormBody::with_capacity(64 + 3 * scope.len())
                    .field("grant_type", "client_credentials");
                let form = if scope.is_empty() {
                    form
                } else {
                    form.field("scope", &scope)
                };
                oauth::request_tokens(http, url, app, form)
            },
        )
        .await
    }

    /// Exchanges an authorization code (one attempt: a code is single use, so a retry after a
    /// lost answer could only be refused).
    pub(crate) async fn exchange_code(
        &self,
        app: &AppCredentials,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse> {
        let http = self.http().await?;
        let url = &self.profile.endpoints.token;
        let form =
            FormBody::with_capacity(128 + 3 * (code.len() + verifier.len() + redirect_uri.len()))
                .field("grant_type", "authorization_code")
                .field("code", code)
                .field("redirect_uri", redirect_uri)
                .field("code_verifier", verifier);
        let endpoint = url.to_string();
        match oauth::request_tokens(http, url, app, form).await {
            Ok(response) => Ok(response),
            Err(TokenError::Temporary { cause, .. }) => Err(Error::Temporary {
                what: format!("exchanging the authorization code at {endpoint}"),
                cause,
                hint: Some(format!(
                    "run {} again",
                    crate::hint::command(&self.profile.name, "login")
                )),
            }),
            Err(TokenError::Rejected {
                rejection: crate::error::Rejection::Grant,
                description,
            }) => Err(Error::OAuth {
                endpoint,
                code: "invalid_grant".into(),
                description: Some(description.unwrap_or_else(|| {
                    format!(
                        "the authorization code was refused (expired, already used, or the redirect URI or PKCE verifier did not match); run {} again",
                        crate::hint::command(&self.profile.name, "login")
                    )
                })),
            }),
            Err(TokenError::Rejected {
                rejection,
                description,
            }) => Err(Error::ReauthRequired {
                profile: self.profile.name.clone(),
                rejection,
                endpoint,
                description,
                unsaved_refresh_at: None,
            }),
            Err(TokenError::OAuth { code, description }) => Err(Error::OAuth {
                endpoint,
                code,
                description,
            }),
            Err(TokenError::Http { status, summary }) => Err(Error::Http {
                endpoint,
                status,
                summary,
            }),
        }
    }

    /// Revokes the refresh token at Xero (RFC 7009), retrying temporary failures.
    pub(crate) async fn revoke(&self, app: &AppCredentials, refresh_token: &str) -> Result<()> {
        let url = &self.profile.endpoints.revocation;
        self.with_retries(
            &format!(
                "revoking the refresh token of profile '{}'",
                self.profile.name
            ),
            url,
            |http| oauth::revoke(http, url, app, refresh_token),
        )
        .await
    }

    /// Runs one OAuth request to `url`, retrying temporary failures with bounded backoff and a
    /// bounded `Retry-After`, and turns the final failure into the error of the exit-code table.
    /// Nothing stored is touched here. `send` makes one attempt (with a fresh body).
    pub(crate) async fn with_retries<'a, T, Fut>(
        &'a self,
        what: &str,
        url: &url::Url,
        send: impl Fn(&'a reqwest::Client) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = std::result::Result<T, TokenError>>,
    {
        self.with_retries_under(None, what, url, send).await
    }

    /// [`Session::with_retries`], under `guard` when a refresh is sent: its lease is renewed
    /// before each retry.
    async fn with_retries_under<'a, T, Fut>(
        &'a self,
        guard: Option<&RefreshGuard>,
        what: &str,
        url: &url::Url,
        send: impl Fn(&'a reqwest::Client) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = std::result::Result<T, TokenError>>,
    {
        let http = self.http().await?;
        let endpoint = url.to_string();
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 1;
        // Whether any attempt may have been carried out: then the last failure cannot say
        // that nothing happened at Xero.
        let mut any_lost = false;
        loop {
            tracing::debug!(%endpoint, attempt, "{what}");
            match send(http).await {
                Ok(answer) => return Ok(answer),
                Err(TokenError::Temporary {
                    cause,
                    retry_after,
                    answer_lost,
                }) => {
                    any_lost |= answer_lost;
                    if let (true, Some(guard)) = (answer_lost, guard) {
                        guard.note_answer_lost();
                    }
                    let wait = retry_after.unwrap_or(backoff);
                    if attempt >= REFRESH_ATTEMPTS || wait > MAX_RETRY_AFTER {
                        if any_lost {
                            return Err(Error::Unconfirmed {
                                profile: self.profile.name.clone(),
                                what: format!("{what} at {endpoint}"),
                                cause: format!("{cause}; {attempt} attempts"),
                                first_sent: None,
                            });
                        }
                        let hint = match retry_after {
                            Some(w) => format!("Xero asked to wait {} s", w.as_secs()),
                            None => "the stored tokens were kept and stay usable".into(),
                        };
                        return Err(Error::Temporary {
                            what: format!("{what} at {endpoint}"),
                            cause: format!("{cause}; {attempt} attempts"),
                            hint: Some(hint),
                        });
                    }
                    // Progress, not a problem: the outcome is what the command reports.
                    tracing::info!(
                        "{what} at {endpoint} failed ({cause}); trying again in {} ms \
                         (attempt {} of {REFRESH_ATTEMPTS})",
                        wait.as_millis(),
                        attempt + 1
                    );
                    tokio::time::sleep(wait).await;
                    // Under a shared store's refresh lease, it is renewed before each retry; a
                    // lease that can no longer be held stops the retries (another machine may
                    // be about to refresh).
                    let renewed = match guard {
                        Some(guard) => guard.renew().await,
                        None => Ok(()),
                    };
                    if let Err(e) = renewed {
                        if any_lost {
                            return Err(Error::Unconfirmed {
                                profile: self.profile.name.clone(),
                                what: format!("{what} at {endpoint}"),
                                cause: format!("{cause}; then the refresh lease was lost: {e}"),
                                first_sent: None,
                            });
                        }
                        return Err(e);
                    }
                    backoff *= 3;
                    attempt += 1;
                }
                Err(TokenError::Rejected {
                    rejection,
                    description,
                }) => {
                    return Err(Error::ReauthRequired {
                        profile: self.profile.name.clone(),
                        rejection,
                        endpoint,
                        description,
                        unsaved_refresh_at: None,
                    });
                }
                Err(TokenError::OAuth { code, description }) => {
                    return Err(Error::OAuth {
                        endpoint,
                        code,
                        description,
                    });
                }
                Err(TokenError::Http { status, summary }) => {
                    return Err(Error::Http {
                        endpoint,
                        status,
                        summary,
                    });
                }
            }
        }
    }
}
