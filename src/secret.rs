//! Secret types and the few places where a secret is turned into bytes for the wire.
//!
//! Every secret lives in a [`SecretString`] (redacted `Debug`, wiped on drop) or in a
//! [`Zeroizing`] buffer from the moment it enters the process until it leaves. Buffers that
//! hold a secret are allocated once at their final size, because a `Vec` or `String` that
//! grows leaves the old copy behind in freed memory.

pub use secrecy::{ExposeSecret, SecretString};
use std::io::Read;
pub use zeroize::Zeroizing;

use base64::Engine as _;
use bytes::Bytes;

/// A refresh token: single use at Xero, the one secret whose loss forces a new login.
pub type RefreshToken = SecretString;
/// A 30-minute access token (a JWT).
pub type AccessToken = SecretString;
/// The app's client secret.
pub type ClientSecret = SecretString;

/// Copies `s` into a new secret of exactly its length.
pub fn secret_from_str(s: &str) -> SecretString {
    SecretString::from(s)
}

/// Reads at most `max` bytes from `reader` into a zeroizing buffer allocated once.
///
/// Returns `None` when the input is longer than `max`.
pub fn read_bounded(
    reader: &mut dyn Read,
    max: usize,
) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut buf = Zeroizing::new(vec![0u8; max + 1]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Ok(None);
        }
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // Truncating never reallocates: the bytes past `len` are zeros we wrote ourselves.
    buf.truncate(len);
    Ok(Some(buf))
}

/// `n` random bytes from the operating system, base64url without padding.
pub fn random_urlsafe(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..])
}

/// Checks a client secret or token typed or piped in: trims surrounding whitespace (a trailing
/// newline from `echo` or a file) and refuses empty values and inner whitespace or control
/// characters, which no Xero secret has and which mean the wrong thing was pasted.
pub fn parse_secret_input(raw: &[u8], what: &str) -> Result<SecretString, String> {
    let text = std::str::from_utf8(raw).map_err(|_| format!("the {what} is not valid UTF-8"))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the {what} contains spaces or control characters; paste exactly the value shown by Xero"
        ));
    }
    Ok(secret_from_str(trimmed))
}

/// `Basic base64(client_id:client_secret)`, built in one zeroizing allocation.
pub fn basic_credential(client_id: &str, secret: &SecretString) -> Zeroizing<Vec<u8>> {
    let secret = secret.expose_secret();
    let plain_len = client_id.len() + 1 + secret.len();
    let mut plain = Zeroizing::new(Vec::with_capacity(plain_len));
    plain.extend_from_slice(client_id.as_bytes());
    plain.push(b':');
    plain.extend_from_slice(secret.as_bytes());

    let b64_len = base64::encoded_len(plain_len, true).expect("credential length fits usize");
    let mut header = Zeroizing::new(vec![0u8; 6 + b64_len]);
    header[..6].copy_from_slice(b"Basic ");
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(&plain[..], &mut header[6..])
        .expect("buffer sized by encoded_len");
    header.truncate(6 + written);
    header
}

/// An `application/x-www-form-urlencoded` body built in a zeroizing buffer.
pub struct FormBody {
    buf: Zeroizing<Vec<u8>>,
}

impl FormBody {
    /// A body for fields whose encoded size is at most `capacity` bytes; larger bodies still
    /// work, at the cost of one reallocation.
    pub fn with_capacity(capacity: usize) -> Self {
        FormBody {
            buf: Zeroizing::new(Vec::with_capacity(capacity)),
        }
    }

    /// Appends `name=value`, percent-encoding both.
    pub fn field(mut self, name: &str, value: &str) -> Self {
        let needed = self.buf.len() + 1 + encoded_len(name) + 1 + encoded_len(value);
        if needed > self.buf.capacity() {
            // Grow by hand so that the old buffer is wiped rather than freed with its contents.
            let mut bigger = Zeroizing::new(Vec::with_capacity(needed * 2));
            bigger.extend_from_slice(&self.buf);
            self.buf = bigger;
        }
        if !self.buf.is_empty() {
            self.buf.push(b'&');
        }
        encode_into(&mut self.buf, name);
        self.buf.push(b'=');
        encode_into(&mut self.buf, value);
        self
    }

    /// The body as `Bytes` that wipes itself when the HTTP client drops it.
    pub fn into_bytes(self) -> Bytes {
        zeroizing_bytes(self.buf)
    }
}

/// Hands a zeroizing buffer to code that wants `Bytes` (reqwest bodies, header values)
/// without copying it: the buffer is wiped when the last `Bytes` referring to it is dropped.
pub fn zeroizing_bytes(buf: Zeroizing<Vec<u8>>) -> Bytes {
    Bytes::from_owner(ZeroizingOwner(buf))
}

struct ZeroizingOwner(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizingOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| if is_unreserved(b) { 1 } else { 3 })
        .sum()
}

fn encode_into(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if is_unreserved(b) {
            buf.push(b);
        } else {
            buf.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credential_matches_rfc7617_example() {
        let secret = secret_from_str("open sesame");
        let header = basic_credential("Aladdin", &secret);
        assert_eq!(&header[..], b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn form_body_percent_encodes_and_grows() {
        let body = FormBody::with_capacity(4)
            .field("grant_type", "refresh_token")
            .field("scope", "openid offline_access a+b/c");
        assert_eq!(
            &body.into_bytes()[..],
            b"grant_type=refresh_token&scope=openid%20offline_access%20a%2Bb%2Fc"
        );
    }

    #[test]
    fn secret_input_is_trimmed_and_checked() {
        assert_eq!(
            parse_secret_input(b"abc123\n", "client secret")
                .unwrap()
                .expose_secret(),
            "abc123"
        );
        assert!(
            parse_secret_input(b"  \n", "client secret")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            parse_secret_input(b"ab c", "client secret")
                .unwrap_err()
                .contains("spaces")
        );
        assert!(
            parse_secret_input(&[0xff, 0xfe], "client secret")
                .unwrap_err()
                .contains("UTF-8")
        );
    }

    #[test]
    fn read_bounded_refuses_oversized_input() {
        let mut small: &[u8] = b"12345";
        assert_eq!(&read_bounded(&mut small, 5).unwrap().unwrap()[..], b"12345");
        let mut big: &[u8] = b"123456";
        assert!(read_bounded(&mut big, 5).unwrap().is_none());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = secret_from_str("hunter2-very-secret");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
