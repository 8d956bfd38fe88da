//! A plaintext token file being imported (untrusted: any JSON a user points the tool at), with
//! any modification time, through the parser, the stored form, and the times `status` prints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xero_auth::time::format_time;
use xero_auth::import::parse_token_file;
use xero_auth::testing;
use xero_auth::token_set::MAX_LIFETIME_SECS;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes are the file's modification time (Unix seconds, never negative: the
    // importer refuses a file dated before 1970); the rest is the file.
    let Some((time, file)) = data.split_first_chunk::<8>() else {
        return;
    };
    let modified = i64::from_le_bytes(*time) & i64::MAX;
    let Ok(set) = parse_token_file(file, modified) else {
        return;
    };
    assert!(
        testing::has_refresh_token(&set),
        "an import always has a refresh token"
    );
    assert_eq!(set.obtained_at(), modified);
    if set.access_token().is_some() {
        assert!(
            set.expires_at().is_some(),
            "an access token is kept only with an expiry"
        );
    }
    if let Some(at) = set.expires_at() {
        assert!(
            at <= modified.saturating_add(MAX_LIFETIME_SECS),
            "expires_at {at} is more than a year after the file's date {modified}"
        );
        let _ = format_time(at);
    }
    let _ = format_time(set.refresh_lapses_at());

    let back = testing::from_json(&testing::to_json(&set)).expect("a stored set reads back");
    assert!(testing::same_tokens(&back, &set));
    assert_eq!(back.expires_at(), set.expires_at());
    assert_eq!(back.scopes(), set.scopes());
    assert_eq!(back.obtained_at(), set.obtained_at());
});
