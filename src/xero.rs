//! Xero's API beyond the identity service: the connections (tenants) an access token reaches.

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::Endpoints;
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
    #[serde(default)]
    /// When the connection was last updated (`2019-07-09T23:40:30.1833130`, UTC).
    pub updated_date_utc: Option<String>,
}

/// Checks that a request to `url` may carry the access token: once resolved, its origin (scheme,
/// host and port) must be the origin of the profile's API base or of its connections endpoint,
/// and it must carry no user name or password. Whatever the URL was built from — a path typed on
/// the command line, a library caller's request — this is the one check every request that gets
/// `Authorization: Bearer` passes. The error says where tokens may go; it never quotes user info.
pub fn check_bearer_target(endpoints: &Endpoints, url: &Url) -> std::result::Result<(), String> {
    let api = endpoints.api.origin();
    let connections = endpoints.connections.origin();
    let allowed = if connections == api {
        format!("the API origin {}", api.ascii_serialization())
    } else {
        format!(
            "the API origin {} or the connections endpoint's {}",
            api.ascii_serialization(),
            connections.ascii_serialization()
        )
    };
    let shown = crate::config::shown(url);
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "is {shown}, with a user name or password in it; xero-auth sends the access token \
             only to {allowed}, never with credentials in the URL"
        ));
    }
    let origin = url.origin();
    if origin != api && origin != connections {
        return Err(format!(
            "resolves to {shown}, which is not on {allowed}: xero-auth sends the access token only there"
        ));
    }
    Ok(())
}

/// `Authorization: Bearer …` as a sensitive header value built in a zeroizing buffer. A token
/// that is not a valid header value (a damaged or tampered store entry: token sets are checked
/// when read, this is the last line) is an error, never a panic. `profile` is the profile the
/// token is stored for, named in the commands the error suggests.
pub fn bearer(profile: &str, access_token: &str) -> Result<HeaderValue> {
    let mut buf = Zeroizing::new(Vec::with_capacity(7 + access_token.len()));
    buf.extend_from_slice(b"Bearer ");
    buf.extend_from_slice(access_token.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(zeroizing_bytes(buf)).map_err(|_| {
        Error::InvalidInput(format!(
            "the stored access token is not a valid HTTP header value (a damaged entry?); \
             run {}, or {} if that fails",
            crate::hint::command(profile, "refresh"),
            crate::hint::command(profile, "login")
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `GET /connections`: the tenants this access token (of `profile`) reaches.
pub async fn connections(
    http: &reqwest::Client,
    profile: &str,
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
        .header(AUTHORIZATION, bearer(profile, access_token)?)
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
                format!(
                    "the access token was refused; run {} or {}",
                    crate::hint::command(profile, "refresh"),
                    crate::hint::command(profile, "login")
                )
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

/// `DELETE /connections/{id}`: removes one organisation's connection to the app (for every token
/// of the app: Xero keeps one connection per user, app and organisation), which frees a slot of
/// the app's plan. `profile` and `access_token` as for [`connections`].
pub async fn disconnect(
    http: &reqwest::Client,
    profile: &str,
    connections_url: &Url,
    access_token: &str,
    connection_id: &str,
) -> Result<()> {
    let mut url = connections_url.clone();
    url.path_segments_mut()
        .map_err(|()| Error::InvalidInput(format!("{connections_url} cannot take a path")))?
        .pop_if_empty()
        .push(connection_id);
    let temporary = |cause: String| Error::Temporary {
        what: format!("removing the connection at {url}"),
        cause,
        hint: None,
    };
    let response = http
        .delete(url.clone())
        .header(AUTHORIZATION, bearer(profile, access_token)?)
        .send()
        .await
        .map_err(|e| temporary(http::describe_transport(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(temporary(format!("HTTP {status}")));
    }
    Err(Error::Http {
        endpoint: format!("DELETE {url}"),
        status: status.as_u16(),
        summary: match status.as_u16() {
            404 => format!(
                "no such connection (removed already?); {} lists them",
                crate::hint::command(profile, "tenants")
            ),
            401 => format!(
                "the access token was refused; run {} or {}",
                crate::hint::command(profile, "refresh"),
                crate::hint::command(profile, "login")
            ),
            _ => "the connection was not removed".into(),
        },
    })
}
