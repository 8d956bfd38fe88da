//! The token endpoint's answer (untrusted: whatever a server, proxy or captive portal sends),
//! through the parser and into the token set that is stored, and back out of the keychain form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xero_auth::oauth::parse_token_response;
use xero_auth::secret::{ExposeSecret, secret_from_str};
use xero_auth::testing::{self, TokenSetFields};
use xero_auth::token_set::MAX_LIFETIME_SECS;

const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = parse_token_response(data) else {
        return;
    };
    let token = response.access_token.expose_secret();
    assert!(!token.is_empty() && !token.chars().any(|c| c.is_whitespace() || c.is_control()));
    assert_eq!(response.token_type, "Bearer");

    let previous = testing::token_set(TokenSetFields {
        refresh_token: Some(secret_from_str("rt-previous")),
        access_token: None,
        expires_at: None,
        token_type: "Bearer".into(),
        scopes: vec!["offline_access".into()],
        obtained_at: NOW - 86_400,
    });
    let set = testing::after_refresh(previous, response, NOW);
    // Never expired before it was issued, never valid for more than the cap.
    let at = set.expires_at().expect("a refreshed set has an expiry");
    assert!(
        (NOW..=NOW + MAX_LIFETIME_SECS).contains(&at),
        "expires_at {at}"
    );
    assert!(
        testing::has_refresh_token(&set),
        "a refresh never loses the refresh token"
    );

    // What is written to the keychain reads back as the same set.
    let back = testing::from_json(&testing::to_json(&set)).expect("a stored set reads back");
    assert!(testing::same_tokens(&back, &set));
    assert_eq!(back.expires_at(), set.expires_at());
    assert_eq!(testing::token_type(&back), testing::token_type(&set));
    assert_eq!(back.scopes(), set.scopes());
    assert_eq!(back.obtained_at(), set.obtained_at());
});
