//! The crate's own integration tests and fuzz targets reach here (the `test-support` feature)
//! what the public types keep to the crate: building a session from its parts, and a token set's
//! whole stored form. Not part of the API: it widens nothing a program sees, and may change in
//! any release.

use std::sync::Arc;

use crate::config::{Paths, Profile};
use crate::oauth::TokenResponse;
use crate::secret::{AccessToken, RefreshToken, Zeroizing};
use crate::session::Session;
use crate::store::Store;
use crate::time::Clock;
use crate::token_set::TokenSet;

/// A session for `profile` keeping its secrets in `store`, with the given clock.
pub fn session(profile: Profile, paths: Paths, store: Store, clock: Arc<dyn Clock>) -> Session {
    Session::new(profile, paths, store, clock)
}

/// Every field of a token set, for building one as a refresh or an import would.
pub struct TokenSetFields {
    /// The single-use refresh token.
    pub refresh_token: Option<RefreshToken>,
    /// The cached access token.
    pub access_token: Option<AccessToken>,
    /// When the access token expires, in Unix seconds.
    pub expires_at: Option<i64>,
    /// `Bearer`.
    pub token_type: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// When the refresh token was obtained, in Unix seconds.
    pub obtained_at: i64,
}

/// The token set holding `fields`.
pub fn token_set(fields: TokenSetFields) -> TokenSet {
    TokenSet {
        refresh_token: fields.refresh_token,
        access_token: fields.access_token,
        expires_at: fields.expires_at,
        token_type: fields.token_type,
        scopes: fields.scopes,
        obtained_at: fields.obtained_at,
        audit_key: None,
    }
}

/// Whether `set` holds a refresh token.
pub fn has_refresh_token(set: &TokenSet) -> bool {
    set.refresh_token.is_some()
}

/// The set's token type.
pub fn token_type(set: &TokenSet) -> &str {
    &set.token_type
}

/// True when both sets hold the same tokens.
pub fn same_tokens(a: &TokenSet, b: &TokenSet) -> bool {
    a.same_tokens(b)
}

/// The set that replaces `set` after a refresh answered by `response` at `now`.
pub fn after_refresh(set: TokenSet, response: TokenResponse, now: i64) -> TokenSet {
    set.after_refresh(response, now)
}

/// The stored form of a whole set (format 1).
pub fn to_json(set: &TokenSet) -> Zeroizing<Vec<u8>> {
    set.to_json()
}

/// A whole set (format 1) read back from its stored form.
pub fn from_json(bytes: &[u8]) -> Result<TokenSet, String> {
    TokenSet::from_json(bytes)
}
