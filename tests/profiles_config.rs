//! Profiles and `config.toml` as a user meets them: a mistyped `--profile`, `xero-auth profiles`,
//! mistakes in the file (where they are, what was meant), and `xero-auth config`.

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::*;

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The test's `config.toml` (XDG_CONFIG_HOME is the test's `config` folder).
fn config_file(env: &TestEnv) -> PathBuf {
    env.dir.path().join("config/xero-auth/config.toml")
}

fn write_config(env: &TestEnv, text: &str) {
    let path = config_file(env);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Two configured profiles, `default` and `imp`, with nothing stored for either.
const TWO_PROFILES: &str = "[profiles.default]\nclient_id = \"AAA\"\n\n[profiles.imp]\nclient_id = \"BBB\"\nstore = \"file\"\n";

// ------------------------------------------------------------------ a mistyped profile

#[test]
fn a_profile_not_in_the_config_is_named_with_the_ones_that_are() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "unknown-profile");
    write_config(&env, TWO_PROFILES);
    let mistyped = format!("prod{}", std::process::id());

    for args in [
        vec!["token"],
        vec!["refresh"],
        vec!["api", "connections"],
        vec!["exec", "--", "true"],
        vec!["status"],
        vec!["status", "--json"],
    ] {
        let out = env
            .cmd(&["--profile", &mistyped])
            .args(&args)
            .output()
            .unwrap();
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("no profile '{mistyped}' in "))
                && stderr.contains("config.toml")
                && stderr.contains("profiles: default, imp"),
            "{args:?}: {stderr}"
        );
        // No report of an empty profile (`status` used to show "none (PKCE app)").
        assert_eq!(stdout_of(&out), "", "{args:?}");
    }
}

#[test]
fn a_near_miss_is_suggested_and_nothing_configured_says_how_to_start() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "near-miss");
    // The test's own profile (a unique name in the shared keyring), and a near miss of it.
    write_config(
        &env,
        &format!("[profiles.{}]\nclient_id = \"AAA\"\n", env.profile),
    );
    let near = format!("{}x", env.profile);
    let out = env.cmd(&["token", "--profile", &near]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!("did you mean '{}'?", env.profile)),
        "{stderr}"
    );

    // Nothing configured at all: say how to begin, naming the profile.
    write_config(&env, "");
    let out = env.cmd(&["token"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("no profiles are configured")
            && stderr.contains(&format!(
                "xero-auth client set --profile {} --client-id ID",
                env.profile
            )),
        "{stderr}"
    );
}

#[test]
fn a_configured_profile_with_nothing_stored_still_says_what_is_missing() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "configured-empty");
    env.set_client(&fake);
    let out = env.cmd(&["token"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("has no token set stored"), "{stderr}");
    assert!(!stderr.contains("no profile"), "{stderr}");
}

// ------------------------------------------------------------------ xero-auth profiles

#[test]
fn profiles_lists_the_configured_profiles() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "profiles-list");
    write_config(&env, TWO_PROFILES);

    let out = env.ok(&["profiles"]);
    assert_eq!(stdout_of(&out), "default\nimp\n");

    let out = env.ok(&["profiles", "--json", "--profile", "imp"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = json.as_array().expect("an array");
    assert_eq!(list.len(), 2, "{json}");
    assert_eq!(list[0]["name"], "default");
    assert_eq!(list[0]["selected"], false);
    assert_eq!(list[0]["client_id"], "AAA");
    assert_eq!(list[1]["name"], "imp");
    assert_eq!(list[1]["selected"], true);
    assert_eq!(list[1]["store"], "file");

    // None configured: nothing on stdout, exit 0, and a word on stderr for a person.
    write_config(&env, "");
    let out = env.ok(&["profiles"]);
    assert_eq!(stdout_of(&out), "");
    assert!(
        stderr_of(&out).contains("client set"),
        "{}",
        stderr_of(&out)
    );
    let out = env.ok(&["profiles", "--json"]);
    assert_eq!(stdout_of(&out).trim(), "[]");
}
