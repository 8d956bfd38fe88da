//! Xero's API beyond the identity service: the connections (tenants) an access token reaches.

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};
use crate::http::{self, BodyError};
use crate::secret::{Zeroizing, zeroizing_bytes};

/// One connection: an organisation (tenant) the user authorised the app for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// The connection's own id (used to disconnect).
    pub id: String,
    /// The value of the `Xero-Tenant-Id` header.
    pub tenant_id: String,
    #[serde(default)]
    /// `ORGANISATION`, `PRACTICE`, …
    pub tenant_type: String,
    #[serde(default)]
    /// The organisation's name.
    pub tenant_name: String,
}

/// `Authorization: Bearer …` as a sensitive header value built in a zeroizing buffer.
pub fn bearer(access_token: &str) -> HeaderValue {
    let mut buf = Zeroizing::new(Vec::with_capacity(7 + access_token.len()));
    buf.extend_from_slice(b"Bearer ");
    buf.extend_from_slice(access_token.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(zeroizing_bytes(buf))
        .expect("a checked token is a valid header value");
    value.set_sensitive(true);
    value
}

/// `GET /connections`: the tenants this access token reaches.
pub async fn connections(
    http: &reqwest::Client,
    url: &Url,
    access_token: &str,
) -> Result<Vec<Connection>> {
    let temporary = |cause: String| Error::Temporary {
        what: format!("listing connections at {url}"),
        cause,
        hint: None,
    };
    let response = http
        .get(url.clone())
        .header(AUTHORIZATION, bearer(access_token))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| temporary(http::describe_transport(&e)))?;
    let status = response.status();
    let body = match http::read_body(response, http::MAX_BODY).await {
        Ok(body) => body,
        Err(BodyError::Transport(e)) => return Err(temporary(http::describe_transport(&e))),
        Err(BodyError::TooLarge) => return Err(temporary("an oversized answer".into())),
    };
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(temporary(format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err(Error::Http {
            endpoint: url.to_string(),
            status: status.as_u16(),
            summary: if status.as_u16() == 401 {
                "the access token was refused; run `xero-auth refresh` or `xero-auth login`".into()
            } else {
                "the connections could not be listed".into()
            },
        });
    }
    serde_json::from_slice(&body).map_err(|_| Error::Http {
        endpoint: url.to_string(),
        status: status.as_u16(),
        summary: "the answer is not a list of connections".into(),
    })
}
