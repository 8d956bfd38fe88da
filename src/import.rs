//! Reading the plaintext token files users migrate from: the classic example programs' token
//! response (`id_token`, `access_token`, `expires_in`, `token_type`, `refresh_token`, `scope`)
//! and SDK token sets (the same plus `expires_at`, as `xoauth token NAME` prints them), either
//! at the top level or wrapped in an object's `token` field (`{"token": {…}}`, as programs that
//! keep the set beside other state save it).

use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::oauth::{parse_scope_value, take_token};
use crate::secret::read_bounded;
use crate::token_set::TokenSet;

/// Token files are a few KB; anything larger is not one.
pub const MAX_TOKEN_FILE: usize = 64 * 1024;

#[derive(Deserialize)]
struct RawTokenFile {
    access_token: Option<serde_json::Value>,
    refresh_token: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    expires_at: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    scope: Option<serde_json::Value>,
}

/// Reads and checks a token file. Nothing is changed on disk or in the keychain.
pub fn read_token_file(path: &Path) -> Result<TokenSet> {
    let bad = |message: String| Error::TokenFile {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| bad(format!("cannot be opened ({e})")))?;
    let meta = file
        .metadata()
        .map_err(|e| bad(format!("cannot be examined ({e})")))?;
    if meta.is_dir() {
        return Err(bad("is a folder, not a token file".into()));
    }
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    if meta.len() > MAX_TOKEN_FILE as u64 {
        return Err(bad(format!(
            "is {} bytes; a token file is a few KB (limit {MAX_TOKEN_FILE})",
            meta.len()
        )));
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .ok_or_else(|| bad("has no modification time".into()))?;
    let bytes = read_bounded(&mut file as &mut dyn Read, MAX_TOKEN_FILE)
        .map_err(|e| bad(format!("cannot be read ({e})")))?
        .ok_or_else(|| bad(format!("grew past {MAX_TOKEN_FILE} bytes while being read")))?;
    parse_token_file(&bytes, modified).map_err(bad)
}

/// Reads a token set piped in (`import -`), so that one taken from a secret manager never
/// touches the disk in plaintext. A stream has no date: its `expires_at` is used as it is, and
/// without one the access token is not kept (refreshed on first use), since its age is unknown.
/// `now` stands in for the issue time, which dates the refresh token's 60 days.
pub fn read_token_stream(reader: &mut dyn Read, now: i64) -> Result<TokenSet> {
    let bad = |message: String| Error::TokenFile {
        path: STDIN_NAME.into(),
        message,
    };
    let bytes = read_bounded(reader, MAX_TOKEN_FILE)
        .map_err(|e| bad(format!("cannot be read ({e})")))?
        .ok_or_else(|| {
            bad(format!(
                "is over {MAX_TOKEN_FILE} bytes; a token set is a few KB"
            ))
        })?;
    parse_token_set(&bytes, now, false).map_err(bad)
}

/// How messages name a token set read from standard input.
pub const STDIN_NAME: &str = "(stdin)";

/// Parses a token file's bytes. `modified` (Unix seconds) stands in for the issue time the
/// file does not record: expiry is `modified + expires_in` unless `expires_at` is given, so a
/// day-old file holds an expired access token, not a fresh one.
pub fn parse_token_file(bytes: &[u8], modified: i64) -> std::result::Result<TokenSet, String> {
    parse_token_set(bytes, modified, true)
}

/// Parses a token set. `issued` is when it was issued, as far as is known: the file's date
/// (`dated`), or the time of reading. An undated set's `expires_in` says nothing about when its
/// access token ends, so without `expires_at` the access token is not kept.
fn parse_token_set(
    bytes: &[u8],
    issued: i64,
    dated: bool,
) -> std::result::Result<TokenSet, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("is not JSON (line {}, column {})", e.line(), e.column()))?;
    let value = unwrapped(value);
    let raw: RawTokenFile = serde_json::from_value(value)
        .map_err(|_| "is not a JSON object with token fields".to_string())?;
    let modified = issued;
    let refresh_token = take_token(raw.refresh_token, "refresh_token")?.ok_or_else(|| {
        "has no refresh_token (was the app authorised with the offline_access scope?)".to_string()
    })?;
    let access_token = take_token(raw.access_token, "access_token")?;
    let number =
        |v: Option<serde_json::Value>, field: &str| -> std::result::Result<Option<i64>, String> {
            match v {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Number(n)) => n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                    .map(Some)
                    .ok_or_else(|| format!("{field} is not a number of seconds")),
                Some(_) => Err(format!("{field} is not a number")),
            }
        };
    let expires_in = number(raw.expires_in, "expires_in")?;
    let expires_at = number(raw.expires_at, "expires_at")?;
    let token_type = match raw.token_type {
        // xoauth writes an empty type once it has refreshed a set.
        None | Some(serde_json::Value::Null) => "Bearer".to_string(),
        Some(serde_json::Value::String(s)) if s.is_empty() => "Bearer".into(),
        Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("bearer") => "Bearer".into(),
        Some(serde_json::Value::String(s)) => {
            return Err(format!(
                "token_type is '{}', expected Bearer",
                s.escape_debug()
            ));
        }
        Some(_) => return Err("token_type is not a string".into()),
    };
    let scopes = match raw.scope {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(v) => {
            parse_scope_value(&v).ok_or("scope is neither a string nor an array of strings")?
        }
    };
    let expires_in = expires_in.filter(|_| dated);
    let expires_at = match (expires_at, expires_in) {
        // Some SDKs write milliseconds; a value past the year 5000 in seconds is one. Either
        // way a far-future time is capped like a lifetime (a year after the file's date).
        (Some(at), _) if at > 100_000_000_000 => Some(TokenSet::capped_expiry(modified, at / 1000)),
        (Some(at), _) => Some(TokenSet::capped_expiry(modified, at)),
        (None, Some(lifetime)) => Some(TokenSet::expiry_from_lifetime(modified, lifetime)),
        (None, None) => None,
    };
    Ok(TokenSet {
        refresh_token: Some(refresh_token),
        // Without an expiry the access token cannot be trusted: keep none, refresh on first use.
        access_token: access_token.filter(|_| expires_at.is_some()),
        expires_at,
        token_type,
        scopes,
        obtained_at: modified,
        audit_key: crate::audit::new_key().map(crate::secret::Zeroizing::new),
    })
}

/// The token set in `value`: `value` itself, or — when it has no `refresh_token` of its own and
/// its `token` field is an object — that object.
fn unwrapped(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(mut outer)
            if !outer.contains_key("refresh_token")
                && outer.get("token").is_some_and(serde_json::Value::is_object) =>
        {
            outer.remove("token").unwrap_or_default()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    const CLASSIC: &[u8] = br#"{ "id_token": "eyJhbGciOi.id", "access_token": "eyJhbGciOi.at", "expires_in": 1800, "token_type": "Bearer",
  "refresh_token": "2f77bbfc2ee16f", "scope": "openid profile email accounting.transactions offline_access" }"#;

    #[test]
    fn classic_file_expiry_counts_from_modification_time() {
        let set = parse_token_file(CLASSIC, 1_000_000).unwrap();
        assert_eq!(set.expires_at, Some(1_001_800));
        assert_eq!(set.refresh_token.unwrap().expose_secret(), "2f77bbfc2ee16f");
        assert_eq!(set.access_token.unwrap().expose_secret(), "eyJhbGciOi.at");
        assert_eq!(set.scopes.len(), 5);
        assert_eq!(set.obtained_at, 1_000_000);
    }

    #[test]
    fn sdk_token_set_uses_expires_at() {
        let set = parse_token_file(
            br#"{"access_token":"a","refresh_token":"r","expires_in":1800,"expires_at":1700000000,"scope":["x","offline_access"]}"#,
            1_699_999_000,
        )
        .unwrap();
        assert_eq!(set.expires_at, Some(1_700_000_000));
        assert_eq!(set.scopes, vec!["x", "offline_access"]);
        let millis = parse_token_file(
            br#"{"refresh_token":"r","access_token":"a","expires_at":1700000000123}"#,
            1_699_999_000,
        )
        .unwrap();
        assert_eq!(millis.expires_at, Some(1_700_000_000));
    }

    #[test]
    fn bad_files_say_what_is_wrong_without_quoting_secrets() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "is not JSON"),
            (b"[1,2]", "is not a JSON object"),
            (br#"{"access_token":"secret-at-1"}"#, "has no refresh_token"),
            (br#"{"refresh_token":42}"#, "refresh_token is not a string"),
            (
                br#"{"refresh_token":"r","expires_in":"soon"}"#,
                "expires_in is not a number",
            ),
            (br#"{"refresh_token":"r","scope":7}"#, "scope is neither"),
            (br#"{"refresh_token":""}"#, "refresh_token is empty"),
            (
                br#"{"refresh_token":"secret-rt-1","token_type":"MAC"}"#,
                "token_type is 'MAC'",
            ),
        ];
        for (input, expected) in cases {
            let err = parse_token_file(input, 0).unwrap_err();
            assert!(err.contains(expected), "{err} should contain {expected}");
            assert!(!err.contains("secret-"), "{err}");
        }
    }

    const MTIME: i64 = 1_000_000;
    /// Where a lifetime too long is capped: a year after the file's date.
    const CAPPED: Option<i64> = Some(MTIME + crate::token_set::MAX_LIFETIME_SECS);

    /// Imports, for each case, `{"refresh_token":"r","access_token":"a",FIELD}` dated `MTIME`
    /// and checks the `expires_at` it yields. A case: its name, FIELD, the expected expiry.
    fn assert_expiries(cases: &[(&str, &str, Option<i64>)]) {
        for (name, field, expected) in cases {
            let body = format!(r#"{{"refresh_token":"r","access_token":"a",{field}}}"#);
            let set = parse_token_file(body.as_bytes(), MTIME)
                .unwrap_or_else(|e| panic!("case '{name}': {e}"));
            assert_eq!(set.expires_at, *expected, "case '{name}'");
        }
    }

    #[test]
    fn lifetimes_zero_negative_absent_and_huge() {
        assert_expiries(&[
            ("zero", r#""expires_in":0"#, Some(MTIME)),
            ("negative", r#""expires_in":-5"#, Some(MTIME)),
            ("huge", r#""expires_in":1e12"#, CAPPED),
            ("absent (null)", r#""expires_in":null"#, None),
        ]);
        // Out of f64's range: not a number JSON can carry, refused rather than guessed.
        assert!(parse_token_file(br#"{"refresh_token":"r","expires_in":1e400}"#, 5).is_err());
    }

    #[test]
    fn expires_at_in_the_past_or_far_future() {
        assert_expiries(&[
            ("past", r#""expires_at":999000"#, Some(999_000)),
            (
                "i64::MIN",
                r#""expires_at":-9223372036854775808"#,
                Some(i64::MIN),
            ),
            // A far-future time in seconds (year 5138), in milliseconds, or beyond i64: capped
            // a year after the file's date, not trusted blindly.
            ("year 5138", r#""expires_at":99999999999"#, CAPPED),
            (
                "milliseconds",
                r#""expires_at":9007199254740993000"#,
                CAPPED,
            ),
            ("1e300", r#""expires_at":1e300"#, CAPPED),
            ("beyond i64", r#""expires_at":18446744073709551615"#, CAPPED),
        ]);
    }

    #[test]
    fn scopes_as_string_or_array_and_unknown_fields() {
        let set = parse_token_file(
            br#"{"refresh_token":"r","scope":["openid","offline_access"],"expires_in":1800,
                "refresh_token_expires_in":5184000,"session_state":{"x":[1,2]},"id_token":null}"#,
            5,
        )
        .unwrap();
        assert_eq!(set.scopes, vec!["openid", "offline_access"]);
        let set = parse_token_file(br#"{"refresh_token":"r","scope":"a  b\tc"}"#, 5).unwrap();
        assert_eq!(set.scopes, vec!["a", "b", "c"]);
    }

    #[test]
    fn wrapped_token_set_is_read_from_its_token_field() {
        let set = parse_token_file(
            br#"{"token":{"refresh_token":"r","access_token":"a","expires_in":1800},"tenant":"t"}"#,
            1_000,
        )
        .unwrap();
        assert_eq!(set.refresh_token.unwrap().expose_secret(), "r");
        assert_eq!(set.expires_at, Some(2_800));
        // A set with its own refresh_token is the set, whatever else it holds.
        let set = parse_token_file(
            br#"{"refresh_token":"top","token":{"refresh_token":"in"}}"#,
            5,
        )
        .unwrap();
        assert_eq!(set.refresh_token.unwrap().expose_secret(), "top");
        let err = parse_token_file(br#"{"token":"not an object"}"#, 5).unwrap_err();
        assert!(err.contains("has no refresh_token"), "{err}");
    }

    #[test]
    fn xoauth_set_with_an_empty_type_is_bearer() {
        let set = parse_token_file(
            br#"{"access_token":"a","id_token":"","refresh_token":"r","token_type":"","expires_in":0,"expires_at":1700000000}"#,
            1_699_999_000,
        )
        .unwrap();
        assert_eq!(set.token_type, "Bearer");
        assert_eq!(set.expires_at, Some(1_700_000_000));
    }

    #[test]
    fn a_stream_keeps_its_expires_at_but_not_an_undated_lifetime() {
        let mut dated: &[u8] = br#"{"refresh_token":"r","access_token":"a","expires_at":2000}"#;
        let set = read_token_stream(&mut dated, 1_000).unwrap();
        assert_eq!(set.expires_at, Some(2_000));
        assert!(set.access_token.is_some());
        let mut undated: &[u8] = br#"{"refresh_token":"r","access_token":"a","expires_in":1800}"#;
        let set = read_token_stream(&mut undated, 1_000).unwrap();
        assert_eq!(set.expires_at, None);
        assert!(
            set.access_token.is_none(),
            "an access token of unknown age is not kept"
        );
        assert_eq!(set.obtained_at, 1_000);
    }

    #[test]
    fn access_token_without_expiry_is_dropped() {
        let set = parse_token_file(br#"{"refresh_token":"r","access_token":"a"}"#, 5).unwrap();
        assert!(set.access_token.is_none());
    }
}
