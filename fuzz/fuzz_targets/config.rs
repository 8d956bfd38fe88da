//! `config.toml` (untrusted enough: hand-edited, possibly by someone else), loaded and resolved
//! for every profile it names, as every command does first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use xero_auth::config::{Config, is_loopback};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_str(Path::new("/fuzz/config.toml"), text) else {
        return;
    };
    let no_env = |_: &str| None;
    for name in config
        .profile_names()
        .into_iter()
        .chain(["default".to_string()])
    {
        let Ok(profile) = config.profile(&name, &no_env) else {
            continue;
        };
        assert_eq!(profile.name, name);
        // A token or a secret never goes over plain http to anything but loopback.
        let e = &profile.endpoints;
        for url in [
            &e.authorize,
            &e.token,
            &e.revocation,
            &e.connections,
            &e.api,
        ] {
            assert!(
                url.scheme() == "https" || (url.scheme() == "http" && is_loopback(url)),
                "endpoint {url}"
            );
        }
        assert!(profile.http_timeout.as_secs() > 0 || profile.http_timeout.subsec_nanos() > 0);
    }
});
