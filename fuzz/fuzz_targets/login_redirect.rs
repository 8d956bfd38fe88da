//! Login's redirect handling (untrusted: a redirect URI from the command line or the config,
//! any request a local process sends to the listener, any line pasted on stdin).
//!
//! The input is `REDIRECT_URI \n CALLBACK`: the first line goes to `parse_redirect_uri`, the
//! rest to `parse_callback` as a request target and through `pasted_target` as a pasted URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xero_auth::login::{Callback, parse_callback, parse_redirect_uri, pasted_target};

const STATE: &str = "s7aTe-Qx";

/// The `state` the callback parser compares: the last `state` parameter of the query.
fn last_state(target: &str) -> Option<String> {
    let url = url::Url::parse("http://loopback.invalid")
        .and_then(|base| base.join(target))
        .ok()?;
    url.query_pairs()
        .filter(|(k, _)| k == "state")
        .last()
        .map(|(_, v)| v.into_owned())
}

/// Only a callback carrying our state can end the login, with a code or a refusal.
fn check(target: &str, path: &str) {
    match parse_callback(target, path, STATE) {
        Callback::Code(code) => {
            assert!(!code.is_empty());
            assert_eq!(last_state(target).as_deref(), Some(STATE));
        }
        Callback::Refused { error, description } => {
            assert_eq!(last_state(target).as_deref(), Some(STATE));
            for text in std::iter::once(&error).chain(description.as_ref()) {
                assert!(!text.chars().any(char::is_control) && text.chars().count() <= 200);
            }
        }
        Callback::Ignored { status, .. } => assert!(status == 400 || status == 404),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (uri, callback) = text.split_once('\n').unwrap_or((text, ""));
    let path = match parse_redirect_uri(uri) {
        Ok(redirect) => {
            // The listener never binds anything but loopback.
            assert!(redirect.bind.ip().is_loopback(), "binds {}", redirect.bind);
            redirect.path
        }
        Err(_) => "/callback".to_string(),
    };
    check(callback, &path);
    let pasted = pasted_target(callback);
    assert!(pasted.is_empty() || pasted.starts_with('/'));
    check(pasted, &path);
});
