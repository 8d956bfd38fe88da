//! The token set: what one keychain entry holds for a profile, and how it is written.
//!
//! The whole set is one small JSON document written in **one** keychain write, so the refresh
//! token is never split across entries and never lost between two writes. On a store that limits
//! the size of one entry (Windows Credential Manager) a set too large for it keeps its access
//! token in entries of its own and the rest here ([`crate::store::split`]); the refresh token
//! always stays in this one entry.

use serde::{Deserialize, Serialize};

use crate::secret::{AccessToken, ExposeSecret, RefreshToken, Zeroizing, secret_from_str};

/// The format of a whole set in one entry: what every store without a size limit holds, and what
/// a limited store holds whenever the set fits. A newer format is refused, never overwritten.
pub const FORMAT_VERSION: u32 = 1;

/// The format of a set whose access token is kept in entries of its own (see
/// [`AccessTokenParts`]). Only a store with a per-entry size limit ever holds it.
///
/// Why a new number rather than format 1 without `access_token`: xero-auth before this format
/// would read such an entry as a set with no cached access token and carry on — refresh on
/// every call, then try to write the whole set back in one entry, which the store refuses (the
/// very failure the split avoids), and leave the parts behind at `logout`. With format 2 it
/// stops at once with its "written by a newer xero-auth" message (exit 1), touching nothing,
/// and the user upgrades. Sets that fit stay format 1, so only the sets an older version could
/// not have stored anyway are hidden from it.
pub const SPLIT_FORMAT_VERSION: u32 = 2;

/// Where a split set's access token is: `count` entries, each headed by `id` and its index, whose
/// contents joined are a token with this SHA-256 (base64url, unpadded). The digest tells a complete, current
/// token from damaged, stale or mixed parts; it is a digest of a random-signed 30-minute token,
/// not a way back to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenParts {
    /// Random, fresh for every write of the parts.
    pub id: String,
    /// How many entries the token is cut into.
    pub count: u32,
    /// SHA-256 of the whole token, base64url without padding.
    pub sha256: String,
}

/// How long Xero keeps an unused refresh token alive.
pub const REFRESH_TOKEN_LIFETIME_SECS: i64 = 60 * 24 * 3600;

/// Xero's access-token lifetime, assumed when a response leaves `expires_in` out.
pub const DEFAULT_ACCESS_LIFETIME_SECS: i64 = 1800;

/// Upper bound on a lifetime we believe from a server or a file (one year): a typo or an
/// overflow must not make a token look valid for ever.
pub const MAX_LIFETIME_SECS: i64 = 365 * 24 * 3600;

/// How far after "now" a stored `obtained_at` may lie before this machine's clock is taken to
/// have been set back since the set was stored (a minute absorbs ordinary clock adjustments).
pub const CLOCK_SET_BACK_TOLERANCE_SECS: i64 = 60;

/// A profile's tokens. `Debug` never shows a token.
pub struct TokenSet {
    /// The single-use refresh token (`None` for client-credentials connections).
    pub(crate) refresh_token: Option<RefreshToken>,
    /// The latest access token, a 30-minute cache.
    pub(crate) access_token: Option<AccessToken>,
    /// When the access token expires, in Unix seconds.
    pub(crate) expires_at: Option<i64>,
    /// `Bearer`.
    pub(crate) token_type: String,
    /// The scopes Xero granted.
    pub(crate) scopes: Vec<String>,
    /// When the refresh token was obtained, in Unix seconds: it lapses 60 days later unless used.
    pub(crate) obtained_at: i64,
    /// The key of the audit log's fingerprints of this profile's tokens ([`crate::audit`]): 32
    /// random bytes made at login or the first refresh, kept with the set (so reading it costs
    /// no extra store call) and carried from set to set.
    pub(crate) audit_key: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at", &self.expires_at)
            .field("token_type", &self.token_type)
            .field("scopes", &self.scopes)
            .field("obtained_at", &self.obtained_at)
            .finish()
    }
}

#[derive(Serialize)]
struct StoredRef<'a> {
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    token_type: &'a str,
    scope: String,
    obtained_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token_parts: Option<&'a AccessTokenParts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_key: Option<&'a str>,
}

#[derive(Deserialize)]
struct StoredOwned {
    version: u32,
    refresh_token: Option<String>,
    access_token: Option<String>,
    expires_at: Option<i64>,
    #[serde(default = "bearer")]
    token_type: String,
    #[serde(default)]
    scope: String,
    obtained_at: i64,
    #[serde(default)]
    access_token_parts: Option<AccessTokenParts>,
    #[serde(default)]
    audit_key: Option<String>,
}

fn bearer() -> String {
    "Bearer".into()
}

#[derive(Deserialize)]
struct VersionOnly {
    version: Option<u32>,
}

/// What a program may read of a set: the access token and the times and scopes around it. The
/// refresh token has no getter: it is single-use, and only the refresh protocol may spend it.
impl TokenSet {
    /// The cached access token, if the set holds one (a set imported without an expiry has none).
    pub fn access_token(&self) -> Option<&AccessToken> {
        self.access_token.as_ref()
    }

    /// When the access token expires, in Unix seconds.
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }

    /// The scopes Xero granted.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// When the refresh token was obtained, in Unix seconds: it lapses 60 days later unless used.
    pub fn obtained_at(&self) -> i64 {
        self.obtained_at
    }

    /// When the refresh token lapses if it is not used (obtained + 60 days).
    pub fn refresh_lapses_at(&self) -> i64 {
        self.obtained_at.saturating_add(REFRESH_TOKEN_LIFETIME_SECS)
    }
}

impl TokenSet {
    /// The scope names the set was granted (the token response's `scope`), and those its access
    /// token claims where they differ: what a call refused for want of a scope is compared with.
    pub(crate) fn granted_scopes(&self) -> Vec<String> {
        let mut granted = self.scopes.clone();
        for claimed in self.access_token_scopes().unwrap_or_default() {
            if !granted.contains(&claimed) {
                granted.push(claimed);
            }
        }
        granted
    }

    /// The `scope` claim of the cached access token (Xero's are JWTs): what the token itself
    /// carries, which may differ from the token response's `scope`. `None` when there is no
    /// access token or it is not a JWT with such a claim. Only the scope names leave: the
    /// decoded claims are wiped, and the token is never logged.
    pub(crate) fn access_token_scopes(&self) -> Option<Vec<String>> {
        use base64::Engine as _;
        let token = self.access_token.as_ref()?;
        let claims = token.expose_secret().split('.').nth(1)?;
        let json = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims.trim_end_matches('='))
                .ok()?,
        );
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum ScopeClaim {
            List(Vec<String>),
            Text(String),
        }
        #[derive(Deserialize)]
        struct Claims {
            scope: Option<ScopeClaim>,
        }
        let parsed: Claims = serde_json::from_slice(&json).ok()?;
        Some(match parsed.scope? {
            ScopeClaim::List(list) => list,
            ScopeClaim::Text(text) => text.split_whitespace().map(String::from).collect(),
        })
    }
}

/// Hex digits of an access token's SHA-256 in its [id](TokenSet::access_token_id).
pub const ACCESS_TOKEN_ID_LEN: usize = 16;

impl TokenSet {
    /// The access token's id: the first 16 hex digits (64 bits) of the SHA-256 of the token.
    /// Not a secret (nothing of the token can be had from it): a program that sees the token
    /// refused (a 401) sends the id back, never the token, to ask for a new one
    /// ([`RefusedToken`]). `None` when the set has no access token.
    pub fn access_token_id(&self) -> Option<String> {
        let token = self.access_token.as_ref()?;
        let mut id = sha256_hex(token.expose_secret().as_bytes());
        id.truncate(ACCESS_TOKEN_ID_LEN);
        Some(id)
    }
}

/// The lower-case hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An access token a program saw refused (Xero answered 401), named by its
/// [id](TokenSet::access_token_id) — 16 to 64 hex digits of the token's SHA-256, in any case —
/// so the token itself never travels back. Asking for a token with it refreshes only while the
/// stored access token is still the refused one: N programs that saw the same 401 make one
/// refresh, and the ones after it get the newer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedToken(String);

impl RefusedToken {
    /// `None` unless `id` is 16 to 64 hex digits.
    pub fn parse(id: &str) -> Option<RefusedToken> {
        let hex = id.bytes().all(|b| b.is_ascii_hexdigit());
        (hex && (ACCESS_TOKEN_ID_LEN..=64).contains(&id.len()))
            .then(|| RefusedToken(id.to_ascii_lowercase()))
    }

    /// True when `id` (an `access_token_id`) names the same token: both are prefixes of its
    /// SHA-256, so they agree on their common length.
    pub(crate) fn is(&self, id: &str) -> bool {
        id.starts_with(&self.0) || self.0.starts_with(id)
    }

    /// True when `set`'s access token is the refused one.
    pub(crate) fn names(&self, set: &TokenSet) -> bool {
        set.access_token
            .as_ref()
            .is_some_and(|t| sha256_hex(t.expose_secret().as_bytes()).starts_with(&self.0))
    }
}

impl std::str::FromStr for RefusedToken {
    type Err = String;

    /// For the command line's `--refused ID`.
    fn from_str(id: &str) -> Result<RefusedToken, String> {
        RefusedToken::parse(id).ok_or_else(|| {
            "expected the refused access token's id: 16 to 64 hex digits of its SHA-256 (the `access_token_id` of `token --json`)".into()
        })
    }
}

impl TokenSet {
    /// True when the access token is present and stays valid for more than `margin_secs`.
    ///
    /// Not when the clock was set back since the set was stored ([`TokenSet::clock_set_back`]):
    /// the expiry was computed on the later clock, so by this one the token would look valid
    /// for longer than it is. Refreshing re-bases every time on the clock as it is now.
    pub(crate) fn access_valid_for(&self, now: i64, margin_secs: i64) -> bool {
        match (&self.access_token, self.expires_at) {
            (Some(_), Some(expires_at)) => {
                !self.clock_set_back(now) && expires_at.saturating_sub(now) > margin_secs
            }
            _ => false,
        }
    }

    /// True when the set says its refresh token was obtained later than `now` (beyond a small
    /// tolerance): the system clock was set back since the set was stored.
    pub(crate) fn clock_set_back(&self, now: i64) -> bool {
        self.obtained_at > now.saturating_add(CLOCK_SET_BACK_TOLERANCE_SECS)
    }

    /// The access token, or an error when the set has none (a set imported without an expiry,
    /// or whose cached token could not be used) — never a panic: callers that expect one after
    /// a refresh still get an error with an exit code if that expectation is ever wrong.
    pub(crate) fn require_access_token(&self, profile: &str) -> crate::error::Result<&AccessToken> {
        self.access_token
            .as_ref()
            .ok_or_else(|| no_access_token(profile))
    }

    /// [`TokenSet::require_access_token`], taking the token out of the set.
    pub(crate) fn into_access_token(self, profile: &str) -> crate::error::Result<AccessToken> {
        self.access_token.ok_or_else(|| no_access_token(profile))
    }

    /// True when both sets hold the same tokens: used to notice that another process refreshed.
    pub(crate) fn same_tokens(&self, other: &TokenSet) -> bool {
        fn eq(
            a: &Option<crate::secret::SecretString>,
            b: &Option<crate::secret::SecretString>,
        ) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
                (None, None) => true,
                _ => false,
            }
        }
        eq(&self.refresh_token, &other.refresh_token) && eq(&self.access_token, &other.access_token)
    }

    /// An expiry from a lifetime in seconds as a server or file gives it: negative lifetimes
    /// count as already expired, huge ones are capped at a year.
    pub(crate) fn expiry_from_lifetime(start: i64, lifetime_secs: i64) -> i64 {
        start.saturating_add(lifetime_secs.clamp(0, MAX_LIFETIME_SECS))
    }

    /// An expiry given as a time (a file's `expires_at`), capped like a lifetime: at most a year
    /// after `start`, so a far-future value cannot make a token look valid for ever.
    pub(crate) fn capped_expiry(start: i64, expires_at: i64) -> i64 {
        expires_at.min(start.saturating_add(MAX_LIFETIME_SECS))
    }

    /// The set that replaces this one after a successful refresh answered by `response` at `now`.
    /// A response without a refresh token keeps the old one (and its age); one with a refresh
    /// token starts a new 60-day life.
    pub(crate) fn after_refresh(self, response: crate::oauth::TokenResponse, now: i64) -> TokenSet {
        let rotated = response.refresh_token.is_some();
        TokenSet {
            refresh_token: response.refresh_token.or(self.refresh_token),
            expires_at: Some(TokenSet::expiry_from_lifetime(
                now,
                response.expires_in.unwrap_or(DEFAULT_ACCESS_LIFETIME_SECS),
            )),
            access_token: Some(response.access_token),
            token_type: response.token_type,
            scopes: response.scopes.unwrap_or(self.scopes),
            obtained_at: if rotated { now } else { self.obtained_at },
            audit_key: self.audit_key.or_else(new_audit_key),
        }
    }

    /// A new set from a token response obtained at `now` (login, client credentials).
    pub(crate) fn from_response(
        response: crate::oauth::TokenResponse,
        requested_scopes: &[String],
        now: i64,
    ) -> TokenSet {
        TokenSet {
            refresh_token: response.refresh_token,
            expires_at: Some(TokenSet::expiry_from_lifetime(
                now,
                response.expires_in.unwrap_or(DEFAULT_ACCESS_LIFETIME_SECS),
            )),
            access_token: Some(response.access_token),
            token_type: response.token_type,
            scopes: response.scopes.unwrap_or_else(|| requested_scopes.to_vec()),
            obtained_at: now,
            audit_key: new_audit_key(),
        }
    }

    /// The stored form: one JSON document in a zeroizing buffer allocated once.
    pub(crate) fn to_json(&self) -> Zeroizing<Vec<u8>> {
        self.stored_json(FORMAT_VERSION, true, None)
    }

    /// The stored form without the access token: with `parts`, a split set's core entry
    /// (format [`SPLIT_FORMAT_VERSION`]) that says where the access token is; without, a whole set
    /// (format 1) that has no access token to cache.
    pub(crate) fn to_core_json(&self, parts: Option<&AccessTokenParts>) -> Zeroizing<Vec<u8>> {
        match parts {
            Some(parts) => self.stored_json(SPLIT_FORMAT_VERSION, false, Some(parts)),
            None => self.stored_json(FORMAT_VERSION, false, None),
        }
    }

    fn stored_json(
        &self,
        version: u32,
        with_access_token: bool,
        parts: Option<&AccessTokenParts>,
    ) -> Zeroizing<Vec<u8>> {
        let access_token = self.access_token.as_ref().filter(|_| with_access_token);
        let audit_key = self.audit_key.as_ref().map(|key| {
            use base64::Engine as _;
            Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_slice()))
        });
        let stored = StoredRef {
            version,
            refresh_token: self.refresh_token.as_ref().map(|t| t.expose_secret()),
            access_token: access_token.map(|t| t.expose_secret()),
            expires_at: self
                .expires_at
                .filter(|_| with_access_token || parts.is_some()),
            token_type: &self.token_type,
            scope: self.scopes.join(" "),
            obtained_at: self.obtained_at,
            access_token_parts: parts,
            audit_key: audit_key.as_ref().map(|k| k.as_str()),
        };
        let secret_len =
            stored.refresh_token.map_or(0, str::len) + stored.access_token.map_or(0, str::len);
        let parts_len = parts.map_or(0, |p| p.id.len() + p.sha256.len() + 64) + 64;
        // Escapes can at most sextuple a character (\u00XX); reserve for the worst case so the
        // buffer never reallocates and leaves a copy behind.
        let capacity =
            6 * (secret_len + stored.scope.len() + stored.token_type.len() + parts_len) + 256;
        let mut buf = Zeroizing::new(Vec::with_capacity(capacity));
        serde_json::to_writer(&mut *buf, &stored).expect("serialising to memory cannot fail");
        buf
    }

    /// Parses a whole set (format 1). A split set's core entry is refused here: its access token
    /// is elsewhere, read it with [`crate::store::split::load`]. The error never quotes the data.
    #[cfg(any(test, feature = "test-support"))]
    pub(crate) fn from_json(bytes: &[u8]) -> Result<TokenSet, String> {
        match TokenSet::from_stored(bytes)? {
            (set, None) => Ok(set),
            (_, Some(_)) => Err(format!(
                "keeps its access token in entries of its own (format {SPLIT_FORMAT_VERSION}); \
                 it is read through the store"
            )),
        }
    }

    /// Parses what a token-set entry holds: a whole set (format 1), or a split set's core (format
    /// [`SPLIT_FORMAT_VERSION`]) with no access token and the reference to its parts. The error
    /// never quotes the data.
    pub(crate) fn from_stored(bytes: &[u8]) -> Result<(TokenSet, Option<AccessTokenParts>), String> {
        let version = serde_json::from_slice::<VersionOnly>(bytes)
            .map_err(|e| {
                format!(
                    "is not a token set xero-auth wrote (JSON error at line {}, column {})",
                    e.line(),
                    e.column()
                )
            })?
            .version
            .ok_or_else(|| "has no format version".to_string())?;
        if version > SPLIT_FORMAT_VERSION {
            return Err(format!(
                "was written by a newer xero-auth (format {version}; this one reads up to {SPLIT_FORMAT_VERSION}); \
                 the entry was left as it is: upgrade xero-auth, or replace the entry with \
                 `xero-auth import FILE --force` or `xero-auth login`"
            ));
        }
        let stored: StoredOwned = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "is damaged (JSON error at line {}, column {}); log in again or import a token file",
                e.line(),
                e.column()
            )
        })?;
        let split = stored.version == SPLIT_FORMAT_VERSION;
        let inconsistent = match (split, &stored.access_token_parts, &stored.access_token) {
            (false, Some(_), _) => Some("format 1 with a reference to access-token entries"),
            (true, None, _) => Some("format 2 without its reference to access-token entries"),
            (true, Some(_), Some(_)) => Some("format 2 with an access token of its own"),
            _ => None,
        };
        if let Some(what) = inconsistent {
            return Err(format!(
                "is damaged ({what}); log in again or import a token file"
            ));
        }
        let refresh_token = stored.refresh_token.map(owned_secret);
        if let Some(token) = &refresh_token {
            crate::oauth::check_token_text(token.expose_secret(), "refresh_token").map_err(
                |why| format!("is damaged ({why}); log in again or import a token file"),
            )?;
        }
        // The access token is a 30-minute cache: one that cannot be sent as it is (a damaged or
        // tampered entry) is dropped, and the next use refreshes.
        let access_token = stored.access_token.map(owned_secret).filter(|token| {
            let usable = crate::oauth::check_token_text(token.expose_secret(), "access_token");
            if let Err(why) = &usable {
                tracing::warn!("the stored {why}; it is not used, the next use refreshes");
            }
            usable.is_ok()
        });
        let expires_at = stored
            .expires_at
            .filter(|_| access_token.is_some() || split);
        let set = TokenSet {
            refresh_token,
            access_token,
            expires_at,
            token_type: stored.token_type,
            scopes: stored.scope.split_whitespace().map(String::from).collect(),
            obtained_at: stored.obtained_at,
            audit_key: stored.audit_key.and_then(decode_audit_key),
        };
        Ok((set, stored.access_token_parts))
    }
}

fn no_access_token(profile: &str) -> crate::error::Error {
    crate::error::Error::StoredFormat {
        profile: profile.to_string(),
        message: format!(
            "has no usable access token; run {} (or {} if that fails)",
            crate::hint::command(profile, "refresh"),
            crate::hint::command(profile, "login")
        ),
    }
}

/// A new key for the audit log's fingerprints (none when the system has no randomness to give).
fn new_audit_key() -> Option<Zeroizing<[u8; 32]>> {
    crate::audit::new_key().map(Zeroizing::new)
}

/// The stored audit key, wiping the text it came in; a damaged one is dropped (a new one is
/// made at the next refresh).
fn decode_audit_key(text: String) -> Option<Zeroizing<[u8; 32]>> {
    use base64::Engine as _;
    let text = Zeroizing::new(text);
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .ok()?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return None;
    }
    key.copy_from_slice(&bytes);
    Some(key)
}

/// Moves a `String` into a secret, wiping the original allocation.
pub(crate) fn owned_secret(s: String) -> crate::secret::SecretString {
    let s = Zeroizing::new(s);
    secret_from_str(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_token_is_named_by_a_prefix_of_its_sha256_and_nothing_else() {
        let set_with = |token: Option<&str>| TokenSet {
 audit_key: None,
            refresh_token: None,
            access_token: token.map(secret_from_str),
            expires_at: None,
            token_type: "Bearer".into(),
            scopes: vec![],
            obtained_at: 0,
        };
        let set = set_with(Some("abc"));
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(set.access_token_id().as_deref(), Some("ba7816bf8f01cfea"));
        for id in ["ba7816bf8f01cfea", "BA7816BF8F01CFEA41", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"] {
            assert!(RefusedToken::parse(id).unwrap().names(&set), "{id}");
        }
        assert!(!RefusedToken::parse("ba7816bf8f01cfeb").unwrap().names(&set));
        for bad in ["", "ba7816bf8f01cfe", "ba7816bf8f01cfez", "abc", &"a".repeat(65)[..]] {
            assert!(RefusedToken::parse(bad).is_none(), "{bad:?}");
        }
        let none = set_with(None);
        assert_eq!(none.access_token_id(), None);
        assert!(!RefusedToken::parse("ba7816bf8f01cfea").unwrap().names(&none));
    }

    fn with_access_token(token: &str) -> TokenSet {
        TokenSet {
            access_token: Some(secret_from_str(token)),
            ..sample()
        }
    }

    #[test]
    fn the_access_tokens_scope_claim_is_read_from_the_jwt() {
        use base64::Engine as _;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = |claims: &str| format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(claims));
        let list = with_access_token(&jwt(r#"{"scope":["openid","accounting.invoices"],"sub":"x"}"#));
        assert_eq!(
            list.access_token_scopes().unwrap(),
            ["openid", "accounting.invoices"]
        );
        let text = with_access_token(&jwt(r#"{"scope":"a b"}"#));
        assert_eq!(text.access_token_scopes().unwrap(), ["a", "b"]);
        for not in ["opaque", "a.!!!.c", &jwt(r#"{"sub":"x"}"#), &jwt("[1]")] {
            assert_eq!(with_access_token(not).access_token_scopes(), None, "{not}");
        }
    }

    fn sample() -> TokenSet {
        TokenSet {
 audit_key: None,
            refresh_token: Some(secret_from_str("rt-123")),
            access_token: Some(secret_from_str("eyJ.at.456")),
            expires_at: Some(1_000_000),
            token_type: "Bearer".into(),
            scopes: vec!["openid".into(), "offline_access".into()],
            obtained_at: 999_000,
        }
    }

    #[test]
    fn round_trips_through_stored_json() {
        let json = sample().to_json();
        let back = TokenSet::from_json(&json).unwrap();
        assert!(back.same_tokens(&sample()));
        assert_eq!(back.expires_at, Some(1_000_000));
        assert_eq!(back.scopes, vec!["openid", "offline_access"]);
        assert_eq!(back.obtained_at, 999_000);
        assert_eq!(back.refresh_lapses_at(), 999_000 + 60 * 86_400);
    }

    #[test]
    fn refuses_a_newer_format_without_quoting_it() {
        let err =
            TokenSet::from_json(br#"{"version":3,"refresh_token":"rt-secret","obtained_at":1}"#)
                .unwrap_err();
        assert!(err.contains("newer xero-auth"), "{err}");
        assert!(!err.contains("rt-secret"));
        let err =
            TokenSet::from_json(br#"{"version":1,"refresh_token":5,"obtained_at":1}"#).unwrap_err();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn validity_respects_the_margin() {
        let set = sample();
        assert!(set.access_valid_for(1_000_000 - 301, 300));
        assert!(!set.access_valid_for(1_000_000 - 300, 300));
        assert!(!set.access_valid_for(1_000_001, 0));
    }

    #[test]
    fn lifetimes_are_clamped() {
        assert_eq!(TokenSet::expiry_from_lifetime(100, -5), 100);
        assert_eq!(
            TokenSet::expiry_from_lifetime(100, i64::MAX),
            100 + MAX_LIFETIME_SECS
        );
    }

    fn response(refresh: Option<&str>, expires_in: Option<i64>) -> crate::oauth::TokenResponse {
        crate::oauth::TokenResponse {
            access_token: secret_from_str("at-new"),
            refresh_token: refresh.map(secret_from_str),
            expires_in,
            token_type: "Bearer".into(),
            scopes: None,
        }
    }

    #[test]
    fn refresh_without_refresh_token_keeps_the_old_one_and_its_age() {
        let next = sample().after_refresh(response(None, Some(1800)), 2_000_000);
        assert_eq!(next.refresh_token.unwrap().expose_secret(), "rt-123");
        assert_eq!(next.access_token.unwrap().expose_secret(), "at-new");
        assert_eq!(next.expires_at, Some(2_001_800));
        assert_eq!(next.obtained_at, 999_000);
        assert_eq!(next.scopes, vec!["openid", "offline_access"]);
    }

    #[test]
    fn refresh_with_rotation_restarts_the_60_days() {
        let next = sample().after_refresh(response(Some("rt-new"), None), 2_000_000);
        assert_eq!(next.refresh_token.unwrap().expose_secret(), "rt-new");
        assert_eq!(next.obtained_at, 2_000_000);
        assert_eq!(
            next.expires_at,
            Some(2_000_000 + DEFAULT_ACCESS_LIFETIME_SECS)
        );
    }

    #[test]
    fn a_clock_set_back_since_the_set_was_stored_means_refresh() {
        // Stored when the clock said 2_000_000; now it says two hours earlier.
        let set = TokenSet {
            expires_at: Some(2_001_800),
            obtained_at: 2_000_000,
            ..sample()
        };
        let earlier = 2_000_000 - 7200;
        assert!(set.clock_set_back(earlier));
        assert!(
            !set.access_valid_for(earlier, 300),
            "an expiry computed on the later clock is not trusted"
        );
        // Small adjustments (up to a minute) are not a clock set back.
        assert!(!set.clock_set_back(2_000_000 - 60));
        assert!(set.access_valid_for(2_000_000 - 60, 300));
        // The refreshed set is based on the clock as it is now, and valid again.
        let next = set.after_refresh(response(Some("rt-new"), Some(1800)), earlier);
        assert!(!next.clock_set_back(earlier));
        assert!(next.access_valid_for(earlier, 300));
    }

    #[test]
    fn far_future_expiry_times_are_capped_like_lifetimes() {
        assert_eq!(TokenSet::capped_expiry(100, 5_000), 5_000);
        assert_eq!(
            TokenSet::capped_expiry(100, i64::MAX),
            100 + MAX_LIFETIME_SECS
        );
        assert_eq!(TokenSet::capped_expiry(100, -5), -5, "the past stays past");
        assert_eq!(
            TokenSet::capped_expiry(i64::MAX, i64::MAX),
            i64::MAX,
            "no overflow"
        );
    }

    #[test]
    fn extreme_stored_times_do_not_overflow() {
        let set = TokenSet {
            expires_at: Some(i64::MIN),
            obtained_at: i64::MAX,
            ..sample()
        };
        assert!(!set.access_valid_for(0, 300));
        assert_eq!(set.refresh_lapses_at(), i64::MAX);
        let set = TokenSet {
            expires_at: Some(i64::MAX),
            obtained_at: i64::MIN,
            ..sample()
        };
        assert!(set.access_valid_for(i64::MIN, i64::MAX - 1));
        assert!(!set.clock_set_back(i64::MAX));
    }

    #[test]
    fn a_whole_set_is_stored_exactly_as_before_the_split_format() {
        // Format 1 entries written by earlier versions and by this one must stay identical.
        assert_eq!(
            std::str::from_utf8(&sample().to_json()).unwrap(),
            r#"{"version":1,"refresh_token":"rt-123","access_token":"eyJ.at.456","expires_at":1000000,"token_type":"Bearer","scope":"openid offline_access","obtained_at":999000}"#
        );
    }

    #[test]
    fn a_split_core_holds_everything_but_the_access_token_and_reads_back() {
        let parts = AccessTokenParts {
            id: "0123456789abcdef".into(),
            count: 2,
            sha256: "ab".repeat(32),
        };
        let core = sample().to_core_json(Some(&parts));
        let text = std::str::from_utf8(&core).unwrap();
        assert!(
            text.starts_with(r#"{"version":2,"refresh_token":"rt-123","#),
            "{text}"
        );
        assert!(!text.contains("eyJ.at.456"), "{text}");
        let (back, back_parts) = TokenSet::from_stored(&core).unwrap();
        assert_eq!(back_parts, Some(parts));
        assert_eq!(back.refresh_token.unwrap().expose_secret(), "rt-123");
        assert!(back.access_token.is_none());
        assert_eq!(back.expires_at, Some(1_000_000));
        assert_eq!(back.obtained_at, 999_000);
        // A whole-set reader refuses it rather than hand out a set without its access token.
        let err = TokenSet::from_json(&core).unwrap_err();
        assert!(err.contains("entries of its own"), "{err}");
        // Without parts: a format 1 set with nothing to cache.
        let bare = sample().to_core_json(None);
        let back = TokenSet::from_json(&bare).unwrap();
        assert!(back.access_token.is_none() && back.expires_at.is_none());
        assert_eq!(back.refresh_token.unwrap().expose_secret(), "rt-123");
    }

    #[test]
    fn a_core_that_contradicts_its_format_is_damaged() {
        for bytes in [
            &br#"{"version":2,"refresh_token":"rt-secret","obtained_at":1}"#[..],
            br#"{"version":1,"refresh_token":"rt-secret","obtained_at":1,"access_token_parts":{"id":"a","count":1,"sha256":"b"}}"#,
            br#"{"version":2,"refresh_token":"rt-secret","access_token":"at","obtained_at":1,"access_token_parts":{"id":"a","count":1,"sha256":"b"}}"#,
        ] {
            let err = TokenSet::from_stored(bytes).unwrap_err();
            assert!(err.contains("damaged") && !err.contains("rt-secret"), "{err}");
        }
    }

    #[test]
    fn debug_hides_tokens() {
        let shown = format!("{:?}", sample());
        assert!(
            !shown.contains("rt-123") && !shown.contains("eyJ.at.456"),
            "{shown}"
        );
    }
}
