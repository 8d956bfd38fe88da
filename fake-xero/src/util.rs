//! Small helpers: URL encoding, random identifiers, dates and Xero-looking JWTs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Decodes `application/x-www-form-urlencoded` text (also used for query strings):
/// `+` is a space and `%XX` a byte. A `%` not followed by two hex digits is kept as is,
/// as lenient servers do.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes everything except RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a form body or query string into (name, value) pairs, in order.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(part), String::new()),
        })
        .collect()
}

/// The first value of `name` in parsed form pairs.
pub fn form_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::u8(..)).collect()
}

/// `n` random lowercase hex characters.
pub fn random_hex(n: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..n).map(|_| HEX[fastrand::usize(..16)] as char).collect()
}

/// A random version-4 UUID in its usual text form.
pub fn random_uuid() -> String {
    let h = random_hex(32);
    let variant = ["8", "9", "a", "b"][fastrand::usize(..4)];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    )
}

/// Normalises a space-separated scope string (any whitespace, repeated scopes) to
/// single-space-separated, first occurrence kept.
pub fn normalize_scope(scope: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for s in scope.split_whitespace() {
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    seen.join(" ")
}

/// Whether the space-separated `scope` contains `wanted`.
pub fn scope_has(scope: &str, wanted: &str) -> bool {
    scope.split_whitespace().any(|s| s == wanted)
}

/// (year, month, day, hour, minute, second) in UTC for unix seconds.
pub fn civil(unix: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `2019-07-09T23:40:30.1833130`, the form of `createdDateUtc` in `/connections`.
pub fn xero_datetime(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:07}",
        fastrand::u32(..10_000_000)
    )
}

/// `01/24/2022 20:31:35`, the form of the date in the API's `TokenExpired` detail.
pub fn token_expired_date(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{mo:02}/{d:02}/{y:04} {h:02}:{mi:02}:{s:02}")
}

/// An HTTP `Date` header value (RFC 9110 IMF-fixdate).
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil(unix);
    format!(
        "{}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        DAYS[(unix / 86_400 % 7) as usize],
        MONTHS[mo as usize - 1]
    )
}

/// Encodes a JSON value as one base64url JWT segment.
fn jwt_segment(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON serialises"))
}

/// A JWT-shaped token: the header and claims are real JSON (so a client that peeks at
/// `exp` sees the fake's clock), the "RS256 signature" is 256 random bytes. Nothing
/// verifies it; the fake recognises its tokens by looking them up.
pub fn fake_jwt(claims: serde_json::Value) -> String {
    let header = serde_json::json!({
        "alg": "RS256",
        "kid": "1CAF8A24ECF9C4DA1B3A2B0A7C6F8C7E3B2D1A09",
        "typ": "JWT",
        "x5t": "HK-KJOz5xNobOisKfG-MfjstGgk",
    });
    format!(
        "{}.{}.{}",
        jwt_segment(&header),
        jwt_segment(&claims),
        URL_SAFE_NO_PAD.encode(random_bytes(256))
    )
}

/// A JWT-looking token of exactly `len` characters: [`fake_jwt`]'s header and claims, and a
/// random base64url signature as long as it takes (at least one character; a `len` shorter
/// than header and claims gives that minimum, longer than asked).
pub fn fake_jwt_of_len(claims: serde_json::Value, len: usize) -> String {
    let jwt = fake_jwt(claims);
    let signed = jwt.rfind('.').expect("a JWT has three segments") + 1;
    let room = len.saturating_sub(signed).max(1);
    let mut signature = URL_SAFE_NO_PAD.encode(random_bytes(room * 3 / 4 + 3));
    signature.truncate(room);
    format!("{}{signature}", &jwt[..signed])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_of_a_given_length_is_that_long_and_jwt_shaped() {
        for len in [2000, 2600, 3001] {
            let jwt = fake_jwt_of_len(serde_json::json!({ "scope": ["openid"] }), len);
            assert_eq!(jwt.len(), len);
            let segments: Vec<&str> = jwt.split('.').collect();
            assert_eq!(segments.len(), 3, "{jwt}");
            assert!(URL_SAFE_NO_PAD.decode(segments[1]).is_ok());
            assert!(
                segments[2]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }

    #[test]
    fn decode_form() {
        let pairs = parse_form("a=1+2&b=%41%2b%zz&c&d=%E2%82%AC&e=%4");
        assert_eq!(form_get(&pairs, "a"), Some("1 2"));
        assert_eq!(form_get(&pairs, "b"), Some("A+%zz"));
        assert_eq!(form_get(&pairs, "c"), Some(""));
        assert_eq!(form_get(&pairs, "d"), Some("€"));
        assert_eq!(form_get(&pairs, "e"), Some("%4"));
        assert_eq!(form_get(&pairs, "x"), None);
    }

    #[test]
    fn encode_roundtrip() {
        let s = "http://localhost:8742/callback?x=1 2&y=é";
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(percent_encode("a-b_c.d~e f"), "a-b_c.d~e%20f");
    }

    #[test]
    fn dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        // 2022-01-24 20:31:35 UTC
        assert_eq!(token_expired_date(1_643_056_295), "01/24/2022 20:31:35");
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert!(xero_datetime(1_562_715_630).starts_with("2019-07-09T23:40:30."));
    }

    #[test]
    fn uuid_shape() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_eq!(u.matches('-').count(), 4);
    }

    #[test]
    fn scopes() {
        assert_eq!(normalize_scope("  a\tb  a c "), "a b c");
        assert!(scope_has("openid offline_access", "offline_access"));
        assert!(!scope_has("openid offline_access_x", "offline_access"));
    }
}
