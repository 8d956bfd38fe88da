//! Xero's token endpoint: client authentication, one token request, and parsing of what comes
//! back (untrusted input: every field is checked, nothing is quoted back in errors).

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use url::Url;

use crate::error::Rejection;
use crate::http::{self, BodyError};
use crate::secret::{
    AccessToken, ClientSecret, FormBody, RefreshToken, SecretString, basic_credential,
    zeroizing_bytes,
};

/// The app as Xero knows it: a client id, and a secret unless it is a PKCE-only app.
pub struct AppCredentials {
    /// The client id.
    pub client_id: String,
    /// The client secret (none for PKCE apps).
    pub client_secret: Option<ClientSecret>,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// A successful token response. `Debug` shows the secrets redacted.
#[derive(Debug)]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: AccessToken,
    /// The new refresh token, if one was issued.
    pub refresh_token: Option<RefreshToken>,
    /// Lifetime of the access token in seconds, as sent (may be absent, zero or negative).
    pub expires_in: Option<i64>,
    /// `Bearer`.
    pub token_type: String,
    /// The granted scopes, if the server said.
    pub scopes: Option<Vec<String>>,
}

/// Why a token request did not produce tokens.
#[derive(Debug)]
pub enum TokenError {
    /// Worth retrying: network, timeout, 5xx, 429, or an answer we could not read (the request
    /// may have been processed: Xero's grace window lets the same refresh token be retried).
    Temporary {
        /// What went wrong.
        cause: String,
        /// How long the server asked to wait.
        retry_after: Option<Duration>,
        /// True when the request was sent and no answer saying it failed came back (a timeout
        /// or a reset after sending, an answer cut short, a 2xx we could not read, a gateway's
        /// 502 or 504): Xero may have carried it out — for a refresh, replaced the refresh token.
        answer_lost: bool,
    },
    /// `invalid_grant` or `invalid_client`.
    Rejected {
        /// Which rejection.
        rejection: Rejection,
        /// The server's description.
        description: Option<String>,
    },
    /// Another OAuth error (`invalid_scope`, `unsupported_grant_type`, …).
    OAuth {
        /// The OAuth error code.
        code: String,
        /// The server's description.
        description: Option<String>,
    },
    /// A non-OAuth client error.
    Http {
        /// The HTTP status.
        status: u16,
        /// What the answer was.
        summary: String,
    },
}

#[derive(Deserialize)]
struct RawTokenResponse {
    access_token: Option<serde_json::Value>,
    refresh_token: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    scope: Option<serde_json::Value>,
    id_token: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawErrorResponse {
    error: String,
    error_description: Option<String>,
}

/// Parses a 2xx token response. Errors name the field, never its value.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, String> {
    let raw: RawTokenResponse = serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            "the answer is cut short (truncated JSON)".to_string()
        } else {
            match e.classify() {
                serde_json::error::Category::Data => {
                    "the answer is JSON but not a token response".to_string()
                }
                _ => "the answer is not a JSON token response".to_string(),
            }
        }
    })?;
    let access_token = take_token(raw.access_token, "access_token")?
        .ok_or_else(|| "the answer has no access_token".to_string())?;
    let refresh_token = take_token(raw.refresh_token, "refresh_token")?;
    // Checked like the other tokens, then dropped: nothing uses the OpenID Connect id token.
    take_token(raw.id_token, "id_token")?;
    let expires_in = match raw.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(
            n.as_i64()
                .or_else(|| {
                    n.as_f64()
                        .map(|f| f.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
                })
                .ok_or("expires_in is not a number")?,
        ),
        // Some servers send numbers as strings.
        Some(serde_json::Value::String(s)) => Some(
            s.trim()
                .parse::<i64>()
                .map_err(|_| "expires_in is not a number".to_string())?,
        ),
        Some(_) => return Err("expires_in is not a number".into()),
    };
    let token_type = match raw.token_type {
        None | Some(serde_json::Value::Null) => "Bearer".to_string(),
        Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("bearer") => "Bearer".into(),
        Some(serde_json::Value::String(_)) => return Err("token_type is not Bearer".into()),
        Some(_) => return Err("token_type is not a string".into()),
    };
    let scopes = match raw.scope {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            Some(parse_scope_value(&v).ok_or("scope is neither a string nor an array of strings")?)
        }
    };
    Ok(TokenResponse {
        access_token,
        refresh_token,
        expires_in,
        token_type,
        scopes,
    })
}

/// Scopes as a space-separated string (OAuth) or an array of strings (some SDK token sets).
/// A scope never contains whitespace (RFC 6749, 3.3), so an array item that does holds several:
/// it is split like the string form, and the stored set (one space-separated string) reads back
/// the same list.
pub fn parse_scope_value(value: &serde_json::Value) -> Option<Vec<String>> {
    match value {
        serde_json::Value::String(s) => Some(s.split_whitespace().map(String::from).collect()),
        serde_json::Value::Array(items) => {
            let mut scopes = Vec::with_capacity(items.len());
            for item in items {
                scopes.extend(item.as_str()?.split_whitespace().map(String::from));
            }
            Some(scopes)
        }
        _ => None,
    }
}

/// A token field: absent or null is `None`; a non-empty string without whitespace or control
/// characters becomes a secret; anything else is an error naming the field.
pub fn take_token(
    value: Option<serde_json::Value>,
    field: &str,
) -> Result<Option<SecretString>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => {
            let s = crate::secret::Zeroizing::new(s);
            check_token_text(&s, field)?;
            Ok(Some(crate::secret::secret_from_str(&s)))
        }
        Some(mut other) => {
            wipe_value(&mut other);
            Err(format!("{field} is not a string"))
        }
    }
}

/// What every token must be, wherever it comes from (a server, a file, the keychain): a
/// non-empty word without whitespace or control characters, so that it can only ever be one
/// header value, one form field, one environment variable. The error names the field, never the
/// value.
pub fn check_token_text(token: &str, field: &str) -> Result<(), String> {
    if token.is_empty() {
        Err(format!("{field} is empty"))
    } else if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("{field} contains whitespace or control characters"))
    } else {
        Ok(())
    }
}

fn wipe_value(value: &mut serde_json::Value) {
    use zeroize::Zeroize;
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe_value),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe_value),
        _ => {}
    }
}

/// An answer to a form POST, read into a zeroizing buffer.
struct FormAnswer {
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    is_json: bool,
    body: crate::secret::Zeroizing<Vec<u8>>,
}

/// POSTs a form with the app's client authentication: with a client secret, HTTP Basic;
/// without (PKCE apps), `client_id` in the body and no `Authorization` header. Transport
/// failures are temporary.
async fn post_form(
    http: &reqwest::Client,
    url: &Url,
    app: &AppCredentials,
    form: FormBody,
) -> Result<FormAnswer, TokenError> {
    let mut request = http
        .post(url.clone())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json");
    let form = match &app.client_secret {
        Some(secret) => {
            let mut value = HeaderValue::from_maybe_shared(zeroizing_bytes(basic_credential(
                &app.client_id,
                secret,
            )))
            .expect("base64 is a valid header value");
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
            form
        }
        None => form.field("client_id", &app.client_id),
    };
    let response = request
        .body(form.into_bytes())
        .send()
        .await
        // Only a connection never made is a request certainly not sent.
        .map_err(|e| {
            let cause = http::describe_transport(&e);
            if e.is_connect() {
                temporary(cause)
            } else {
                answer_lost(cause)
            }
        })?;
    crate::failpoints::crash_point("token-request-sent");

    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    let body = match http::read_body(response, http::MAX_BODY).await {
        Ok(body) => body,
        Err(BodyError::Transport(e)) => return Err(answer_lost(http::describe_transport(&e))),
        Err(BodyError::TooLarge) => {
            let cause = format!("HTTP {status} with an oversized body");
            return Err(if status.is_success() {
                answer_lost(cause)
            } else {
                temporary(cause)
            });
        }
    };
    Ok(FormAnswer {
        status,
        retry_after,
        is_json,
        body,
    })
}

/// Sends one token request (any grant) and classifies the answer.
pub async fn request_tokens(
    http: &reqwest::Client,
    url: &Url,
    app: &AppCredentials,
    form: FormBody,
) -> Result<TokenResponse, TokenError> {
    let answer = post_form(http, url, app, form).await?;
    if answer.status.is_success() {
        return parse_token_response(&answer.body)
            .map_err(|why| answer_lost(format!("HTTP {}, but {why}", answer.status)));
    }
    Err(classify_failure(&answer, app))
}

/// Revokes a refresh token (RFC 7009) with the same client authentication as the token
/// endpoint. Xero also removes the user's connections to the app.
pub async fn revoke(
    http: &reqwest::Client,
    url: &Url,
    app: &AppCredentials,
    refresh_token: &str,
) -> Result<(), TokenError> {
    let form = FormBody::with_capacity(64 + 3 * refresh_token.len())
        .field("token", refresh_token)
        .field("token_type_hint", "refresh_token");
    let answer = post_form(http, url, app, form).await?;
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(classify_failure(&answer, app))
    }
}

/// What a non-2xx answer means: temporary (429, 5xx, 408), a rejection of the grant or the
/// client, another OAuth error, or something that is not OAuth at all.
/// `app` is how the client authenticated: with `invalid_client`, whether a secret was sent is
/// the best clue to what is wrong.
fn classify_failure(answer: &FormAnswer, app: &AppCredentials) -> TokenError {
    let status = answer.status;
    if status.as_u16() == 429 {
        return TokenError::Temporary {
            cause: "HTTP 429 Too Many Requests".into(),
            retry_after: answer.retry_after,
            answer_lost: false,
        };
    }
    // A gateway's 502 or 504 says the server behind it did not answer in time, not that it did
    // nothing; the other 5xx and 408 are the server's own "not done".
    if matches!(status.as_u16(), 502 | 504) {
        return answer_lost(format!("HTTP {status}"));
    }
    if status.is_server_error() || status.as_u16() == 408 {
        return temporary(format!("HTTP {status}"));
    }
    match serde_json::from_slice::<RawErrorResponse>(&answer.body) {
        Ok(err) => {
            let description = err.error_description.map(|d| sanitize(&d));
            match err.error.as_str() {
                "invalid_grant" => TokenError::Rejected {
                    rejection: Rejection::Grant,
                    description,
                },
                "invalid_client" => TokenError::Rejected {
                    rejection: Rejection::Client {
                        secret_sent: app.client_secret.is_some(),
                    },
                    description,
                },
                code => TokenError::OAuth {
                    code: sanitize(code),
                    description,
                },
            }
        }
        Err(_) => TokenError::Http {
            status: status.as_u16(),
            summary: if answer.is_json {
                "an unexpected JSON body".into()
            } else {
                "a body that is not an OAuth error (a proxy or captive portal?)".into()
            },
        },
    }
}

/// A failure that says the request was not carried out.
fn temporary(cause: String) -> TokenError {
    TokenError::Temporary {
        cause,
        retry_after: None,
        answer_lost: false,
    }
}

/// A failure after the request was sent, with no answer saying it failed: it may have been
/// carried out.
fn answer_lost(cause: String) -> TokenError {
    TokenError::Temporary {
        cause,
        retry_after: None,
        answer_lost: true,
    }
}

/// Server-provided text for messages: printable, short, and never something shaped like a token.
fn sanitize(text: &str) -> String {
    let cleaned: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    cleaned
        .split(' ')
        .map(|word| {
            if looks_like_token(word) {
                "[…]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn looks_like_token(word: &str) -> bool {
    word.len() >= 24
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+/=".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    #[test]
    fn parses_xero_token_response() {
        let body = br#"{"id_token":"eyJid","access_token":"eyJat","expires_in":1800,"token_type":"Bearer","refresh_token":"rt1","scope":"openid offline_access"}"#;
        let r = parse_token_response(body).unwrap();
        assert_eq!(r.access_token.expose_secret(), "eyJat");
        assert_eq!(r.refresh_token.unwrap().expose_secret(), "rt1");
        assert_eq!(r.expires_in, Some(1800));
        assert_eq!(r.scopes.unwrap(), vec!["openid", "offline_access"]);
    }

    #[test]
    fn accepts_edge_cases_of_fields() {
        let r = parse_token_response(
            br#"{"access_token":"a","expires_in":"60","scope":["x","y"],"extra":{"n":1}}"#,
        )
        .unwrap();
        assert_eq!(r.expires_in, Some(60));
        assert_eq!(r.scopes.unwrap(), vec!["x", "y"]);
        assert!(r.refresh_token.is_none());
        let r = parse_token_response(br#"{"access_token":"a","expires_in":1e30}"#).unwrap();
        assert_eq!(r.expires_in, Some(i64::MAX));
        let r = parse_token_response(br#"{"access_token":"a","expires_in":-5}"#).unwrap();
        assert_eq!(r.expires_in, Some(-5));
    }

    #[test]
    fn expires_in_zero_negative_absent_or_huge_is_kept_as_sent_and_clamped_later() {
        let lifetime = |body: &[u8]| parse_token_response(body).unwrap().expires_in;
        assert_eq!(lifetime(br#"{"access_token":"a","expires_in":0}"#), Some(0));
        assert_eq!(
            lifetime(br#"{"access_token":"a","expires_in":-5}"#),
            Some(-5)
        );
        assert_eq!(lifetime(br#"{"access_token":"a"}"#), None);
        assert_eq!(lifetime(br#"{"access_token":"a","expires_in":null}"#), None);
        assert_eq!(
            lifetime(br#"{"access_token":"a","expires_in":1e12}"#),
            Some(1_000_000_000_000)
        );
        assert_eq!(
            lifetime(br#"{"access_token":"a","expires_in":18446744073709551615}"#),
            Some(i64::MAX)
        );
        assert_eq!(
            lifetime(br#"{"access_token":"a","expires_in":-1e300}"#),
            Some(i64::MIN)
        );
        // What the token set makes of them, at now = 1000: never valid for more than a year,
        // never valid before now.
        let at = |body: &[u8]| {
            let set = crate::token_set::TokenSet {
 audit_key: None,
                refresh_token: None,
                access_token: None,
                expires_at: None,
                token_type: "Bearer".into(),
                scopes: vec![],
                obtained_at: 0,
            };
            set.after_refresh(parse_token_response(body).unwrap(), 1000)
                .expires_at
                .unwrap()
        };
        let year = crate::token_set::MAX_LIFETIME_SECS;
        assert_eq!(at(br#"{"access_token":"a","expires_in":0}"#), 1000);
        assert_eq!(at(br#"{"access_token":"a","expires_in":-5}"#), 1000);
        assert_eq!(at(br#"{"access_token":"a","expires_in":-1e300}"#), 1000);
        assert_eq!(at(br#"{"access_token":"a"}"#), 1000 + 1800);
        assert_eq!(
            at(br#"{"access_token":"a","expires_in":1e12}"#),
            1000 + year
        );
        assert_eq!(
            at(br#"{"access_token":"a","expires_in":18446744073709551615}"#),
            1000 + year
        );
    }

    #[test]
    fn scopes_as_string_or_array_and_unknown_fields() {
        let r = parse_token_response(
            br#"{"access_token":"a","scope":"  openid   offline_access ","x":[1,{"y":null}],"refresh_token_expires_in":5184000}"#,
        )
        .unwrap();
        assert_eq!(r.scopes.unwrap(), vec!["openid", "offline_access"]);
        let r = parse_token_response(br#"{"access_token":"a","scope":["openid"," email ",""]}"#)
            .unwrap();
        assert_eq!(r.scopes.unwrap(), vec!["openid", "email"]);
        let err =
            parse_token_response(br#"{"access_token":"a","scope":["openid",7]}"#).unwrap_err();
        assert!(err.contains("scope"), "{err}");
        let err = parse_token_response(br#"{"access_token":"a","expires_in":true}"#).unwrap_err();
        assert_eq!(err, "expires_in is not a number");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/token_response.rs): an array item with inner
    /// whitespace was kept as one scope, and came back from the keychain as two.
    #[test]
    fn array_scopes_with_inner_whitespace_survive_the_keychain() {
        let body = br#"{"access_token":"a","expires_in":"60","scope":["          `          xA","%y"],"extra":{"n":1}}"#;
        let response = parse_token_response(body).unwrap();
        assert_eq!(response.scopes.as_deref().unwrap(), ["`", "xA", "%y"]);
        let set = crate::token_set::TokenSet {
 audit_key: None,
            refresh_token: Some(crate::secret::secret_from_str("rt")),
            access_token: None,
            expires_at: None,
            token_type: "Bearer".into(),
            scopes: vec![],
            obtained_at: 0,
        }
        .after_refresh(response, 1000);
        let back = crate::token_set::TokenSet::from_json(&set.to_json()).unwrap();
        assert_eq!(back.scopes, set.scopes);
    }

    #[test]
    fn rejects_bad_bodies_without_quoting_them() {
        let truncated =
            parse_token_response(br#"{"access_token":"secret-abc","refresh_tok"#).unwrap_err();
        assert!(truncated.contains("truncated"), "{truncated}");
        let html = parse_token_response(b"<html><body>Sign in</body></html>").unwrap_err();
        assert!(html.contains("not a JSON"), "{html}");
        let wrong = parse_token_response(br#"{"access_token":12345678}"#).unwrap_err();
        assert_eq!(wrong, "access_token is not a string");
        let missing = parse_token_response(br#"{"refresh_token":"secret-abc"}"#).unwrap_err();
        assert!(!missing.contains("secret-abc"));
        let spaced = parse_token_response(br#"{"access_token":"a b"}"#).unwrap_err();
        assert!(spaced.contains("whitespace"));
    }

    #[test]
    fn sanitize_hides_token_shaped_words() {
        let s = sanitize("token 2f77b9c0a1d2e3f4a5b6c7d8e9f0bfc2ee16f was reused\n");
        assert_eq!(s, "token […] was reused");
    }
}
