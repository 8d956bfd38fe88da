//! Profiles and `config.toml` as a user meets them: a mistyped `--profile`, `xero-auth profiles`,
//! mistakes in the file (where they are, what was meant), and `xero-auth config`.

use crate::support;

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
        vec!["logout"],
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
                "xero-auth client set --client-id ID --profile {}",
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

// ------------------------------------------------------------------ mistakes in config.toml

/// What docs/headless-linux.md once told people to do after `client set`: append a second
/// `[profiles.default]` table. The error says where.
#[test]
fn a_toml_error_names_the_file_line_and_column() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "toml-error");
    write_config(
        &env,
        "# mine\n[profiles.default]\nclient_id = \"AAA\"\n[profiles.default]\nstore = \"file\"\n",
    );
    let out = env.cmd(&["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_of(&out);
    let path = config_file(&env);
    assert!(
        stderr.contains(&format!("{}, line 4, column 11: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("not valid TOML: duplicate key"), "{stderr}");
    // The line itself is shown.
    assert!(stderr.contains("4 | [profiles.default]"), "{stderr}");

    // A value of the wrong type is placed too.
    write_config(&env, &format!("[profiles.{}]\n\nscopes = 5\n", env.profile));
    let out = env.cmd(&["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_of(&out);
    assert!(stderr.contains(", line 3, column 1: "), "{stderr}");
    assert!(stderr.contains("scopes` must be"), "{stderr}");
}

#[test]
fn unknown_keys_are_warned_about_with_the_key_meant() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "unknown-keys");
    write_config(
        &env,
        "client_id = \"TOP\"\n\n[profile.default]\nclient_id = \"AAA\"\n\n[profiles.imp]\nclient_id = \"BBB\"\nscope = \"openid\"\nredirect = \"http://localhost:1/\"\nflavour = \"mint\"\n",
    );
    let out = env.ok(&["profiles"]);
    assert_eq!(stdout_of(&out), "imp\n", "warnings change nothing");
    let stderr = stderr_of(&out);
    for expected in [
        "line 1: `client_id` is outside any [profiles.NAME] table, ignored: put it under [profiles.default]",
        "line 3: unknown table [profile.default], ignored: did you mean [profiles.default]?",
        "line 8: unknown key `scope` in [profiles.imp], ignored: did you mean `scopes`?",
        "line 9: unknown key `redirect` in [profiles.imp], ignored: did you mean `redirect_uri`?",
        "line 10: unknown key `flavour` in [profiles.imp], ignored",
    ] {
        assert!(stderr.contains(expected), "lacks {expected:?}:\n{stderr}");
    }
    assert_eq!(
        stderr.matches("warning: ").count(),
        5,
        "one warning each:\n{stderr}"
    );
}

// ------------------------------------------------------------------ xero-auth config

#[test]
fn config_set_edits_the_file_in_place_and_validates_like_the_reader() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "config-set");
    let path = config_file(&env);
    let profile = env.profile.clone();

    let out = env.ok(&["config", "path"]);
    assert_eq!(stdout_of(&out), format!("{}\n", path.display()));

    // What headless-linux.md does after `client set`: no duplicate table, comments kept.
    write_config(
        &env,
        &format!("# my settings\n[profiles.{profile}]\nclient_id = \"AAA\" # the app\n"),
    );
    env.ok(&["config", "set", "store", "file"]);
    env.ok(&["config", "set", "http_timeout", "12.5"]);
    // A value replaced in place keeps its comment.
    env.ok(&["config", "set", "client_id", "AAA"]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with(&format!(
            "# my settings\n[profiles.{profile}]\nclient_id = \"AAA\" # the app\n"
        )) && text.contains("store = \"file\"\n")
            && text.contains("http_timeout = 12.5\n"),
        "{text}"
    );
    assert_eq!(stdout_of(&env.ok(&["config", "get", "store"])), "file\n");
    // The value in effect: the environment's override wins over the file (the test sets 2).
    assert_eq!(
        stdout_of(&env.ok(&["config", "get", "http_timeout"])),
        "2\n"
    );
    let out = env
        .cmd(&["config", "get", "http_timeout"])
        .env_remove("XERO_AUTH_HTTP_TIMEOUT")
        .output()
        .unwrap();
    assert_eq!(stdout_of(&out), "12.5\n");
    assert_eq!(stdout_of(&env.ok(&["config", "get", "client_id"])), "AAA\n");
    // Unset in the file: the value in effect (here Xero's default endpoint).
    assert_eq!(
        stdout_of(
            &env.cmd(&["config", "get", "authorize_url"])
                .env_remove("XERO_AUTH_AUTHORIZE_URL")
                .output()
                .unwrap()
        ),
        "https://login.xero.com/identity/connect/authorize\n"
    );
    let json: Value =
        serde_json::from_slice(&env.ok(&["config", "get", "store", "--json"]).stdout).unwrap();
    assert_eq!(json["value"], "file");
    assert_eq!(json["in_config_toml"], "file");

    // Another profile, by --profile: a table of its own.
    env.ok(&[
        "config",
        "set",
        "--profile",
        "other",
        "scopes",
        "openid offline_access",
    ]);
    assert_eq!(
        stdout_of(&env.ok(&["config", "get", "--profile", "other", "scopes"])),
        "openid offline_access\n"
    );

    // Refused, with the reader's own message, and the file left as it was.
    let before = std::fs::read_to_string(&path).unwrap();
    for (args, says) in [
        (vec!["store", "plaintext"], "unknown store 'plaintext'"),
        (vec!["http_timeout", "-1"], "between 0.001 and 86400"),
        (vec!["file_work_factor", "40"], "whole number from 10 to 22"),
        (vec!["token_url", "http://10.0.0.1/token"], "use https://"),
    ] {
        let out = env.cmd(&["config", "set"]).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr_of(&out).contains(says),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
    // An unknown key is a usage error, with the key meant.
    let out = env
        .cmd(&["config", "set", "scope", "openid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("'scopes'"), "{}", stderr_of(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

    // unset, then get of a key with no value in effect: exit 1, nothing on stdout.
    env.ok(&["config", "unset", "store"]);
    assert!(!std::fs::read_to_string(&path).unwrap().contains("store ="));
    let out = env
        .cmd(&["config", "get", "default_tenant"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_of(&out), "");
    assert!(stderr_of(&out).contains("not set"), "{}", stderr_of(&out));
}

// ------------------------------------------------------------------ hints name the profile

/// The commands quoted in `text` (each "`xero-auth …`" span).
fn quoted_commands(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("xero-auth "))
        .map(String::from)
        .collect()
}

/// Asserts that `text` quotes at least one command, and that every command it quotes that acts
/// on a profile names `profile`: copied as written, a hint must not act on the default profile.
fn assert_hints_name(text: &str, profile: &str, situation: &str) {
    let commands = quoted_commands(text);
    assert!(
        !commands.is_empty(),
        "{situation}: no command hinted in {text}"
    );
    let flag = format!("--profile {profile}");
    for command in commands {
        // `unlock` and `lock` act on the data folder's file store, whichever profile is selected.
        let global = [
            "xero-auth doctor",
            "xero-auth profiles",
            "xero-auth unlock",
            "xero-auth lock",
        ]
        .iter()
        .any(|g| command.starts_with(g));
        assert!(
            global || command.ends_with(&flag),
            "{situation}: `{command}` does not name the profile in {text}"
        );
    }
}

#[test]
fn hints_name_a_profile_that_is_not_the_default() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "hints-profile");
    let profile = env.profile.clone();
    // Configured, so that what is missing is reported rather than a mistyped profile.
    write_config(
        &env,
        &format!("[profiles.{profile}]\nstore = \"secret-service\"\n"),
    );

    let out = env.cmd(&["refresh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_hints_name(&stderr_of(&out), &profile, "refresh with nothing stored");

    let out = env.cmd(&["status"]).output().unwrap();
    let status = format!("{}{}", stdout_of(&out), stderr_of(&out));
    assert_hints_name(&status, &profile, "status with nothing stored");

    let out = env.cmd(&["doctor"]).output().unwrap();
    let doctor = format!("{}{}", stdout_of(&out), stderr_of(&out));
    assert!(doctor.contains(&format!("client set --client-id ID --profile {profile}`")));
    assert_hints_name(&doctor, &profile, "doctor without a client id");

    env.set_client(&fake);
    let out = env.cmd(&["token"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_hints_name(&stderr_of(&out), &profile, "token without a token set");

    let out = env.ok(&[
        "client",
        "set",
        "--client-id",
        "0123456789ABCDEF0123456789ABCDEF",
        "--public",
    ]);
    assert_hints_name(&stderr_of(&out), &profile, "client set with another id");

    // With no token set there is nothing left to suggest; whatever it quotes names the profile.
    let out = env.ok(&["client", "remove"]);
    let flag = format!("--profile {profile}");
    assert!(
        quoted_commands(&stderr_of(&out))
            .iter()
            .all(|c| c.ends_with(&flag)),
        "client remove: {}",
        stderr_of(&out)
    );
}

#[test]
fn hints_of_login_import_a_lost_refresh_and_logout_name_the_profile() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "hints-more");
    let profile = env.profile.clone();
    write_config(
        &env,
        &format!("[profiles.{profile}]\nstore = \"secret-service\"\n"),
    );
    env.set_client(&fake);

    // A login that gets no callback.
    let redirect = format!(
        "http://127.0.0.1:{}/callback",
        support::browser::free_port()
    );
    let login = [
        "login",
        "--no-browser",
        "--timeout",
        "1",
        "--redirect-uri",
        &redirect,
    ];
    // Stdin kept open (a person who never pastes): the timeout.
    let mut child = env
        .std_cmd(&login)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _open = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("timed out"), "{}", stderr_of(&out));
    assert_hints_name(&stderr_of(&out), &profile, "login timed out");
    // Stdin at its end: nothing can be pasted, and the login says so at once rather than
    // waiting out its timeout.
    let started = std::time::Instant::now();
    let out = env
        .cmd(&["login", "--no-browser", "--redirect-uri", &redirect])
        .write_stdin("")
        .output()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("stdin ended"),
        "{}",
        stderr_of(&out)
    );
    assert_hints_name(&stderr_of(&out), &profile, "login with stdin at its end");

    // `import --remove` of a symbolic link.
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, std::time::Duration::from_secs(86_400));
    let link = env.dir.path().join("tokens-link.json");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let out = env
        .cmd(&["import", link.to_str().unwrap(), "--remove"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_hints_name(&stderr_of(&out), &profile, "import --remove of a link");

    // A refresh whose answer was lost after Xero may have carried it out.
    env.cmd(&["import", file.to_str().unwrap()])
        .assert()
        .success();
    fake.set_persistent_fault(Target::Token, Some(Fault::ResetAfterProcessing));
    let out = env.cmd(&["token"]).output().unwrap();
    fake.set_persistent_fault(Target::Token, None);
    assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("may have reached"),
        "{}",
        stderr_of(&out)
    );
    assert_hints_name(
        &stderr_of(&out),
        &profile,
        "a refresh that may have reached Xero",
    );

    // `client remove` with a token set stored: its hints must work from there.
    let out = env.ok(&["client", "remove"]);
    let removed = stderr_of(&out);
    assert!(removed.contains("logout --keep-remote"), "{removed}");
    assert_hints_name(&removed, &profile, "client remove with tokens stored");
    let out = env.cmd(&["logout"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("--keep-remote"),
        "{}",
        stderr_of(&out)
    );
    assert_hints_name(&stderr_of(&out), &profile, "logout without a client");

    // `logout --force` claims to keep no client it does not have.
    let out = env.ok(&["logout", "--force"]);
    let stderr = stderr_of(&out);
    assert!(!stderr.contains(" kept"), "{stderr}");
    assert!(env.stored().is_none(), "{stderr}");
    assert_hints_name(&stderr, &profile, "logout --force without a client");
}

#[test]
fn hints_for_the_default_profile_stay_short() {
    require_keychain!();
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "hints-default");
    env.set_env("XERO_AUTH_PROFILE", "default");
    write_config(&env, "[profiles.default]\nstore = \"secret-service\"\n");
    let out = env.cmd(&["refresh"]).output().unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("`xero-auth login`"), "{stderr}");
    assert!(!stderr.contains("--profile default"), "{stderr}");
}

// ------------------------------------------------------------------ --store for one run

#[test]
fn a_store_given_for_one_run_says_it_is_not_remembered_and_how_to_keep_it() {
    require_keychain!();
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "store-once");
    env.set_env("XERO_AUTH_PASSPHRASE", "tidy-Otter-41-lantern");
    env.set_env("XERO_AUTH_FILE_WORK_FACTOR", "10");
    let keep = format!(
        "`xero-auth config set store file --profile {}`",
        env.profile
    );

    let out = env
        .cmd(&["client", "set", "--client-id", CLIENT_ID, "--store", "file"])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--store file was for this run only") && stderr.contains(&keep),
        "{stderr}"
    );

    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = env.write_token_file(&tokens, std::time::Duration::from_secs(60));
    let out = env
        .cmd(&["import", file.to_str().unwrap(), "--store", "file"])
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&keep), "{stderr}");

    // Following the advice: the profile now uses the file store, and says nothing more.
    env.ok(&["config", "set", "store", "file"]);
    let out = env.ok(&["status", "--store", "file"]);
    assert!(stderr_of(&out).is_empty(), "{}", stderr_of(&out));
    let out = env
        .cmd(&["client", "set", "--client-id", CLIENT_ID, "--store", "file"])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        !stderr_of(&out).contains("this run only"),
        "{}",
        stderr_of(&out)
    );
    let out = env.ok(&["token"]);
    assert_eq!(stdout_of(&out).trim(), tokens.access_token);
}

// ------------------------------------------------------- list, remove, the selected profile

#[test]
fn config_list_prints_what_config_toml_sets_for_the_profile() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "config-list");
    write_config(&env, TWO_PROFILES);
    let out = env
        .cmd(&["config", "list", "--profile", "imp"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "client_id = \"BBB\"\nstore = \"file\"\n");
    let out = env
        .cmd(&["config", "list", "--profile", "imp", "--json"])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["settings"]["store"], "file");
    assert_eq!(json["profile"], "imp");
}

#[test]
fn unsetting_the_last_key_leaves_no_profile_behind() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "unset-last");
    write_config(&env, TWO_PROFILES);
    env.ok(&["config", "unset", "store", "--profile", "imp"]);
    let out = env.ok(&["config", "unset", "client_id", "--profile", "imp"]);
    assert!(
        stderr_of(&out).contains("its table went too"),
        "{}",
        stderr_of(&out)
    );
    assert!(
        !std::fs::read_to_string(config_file(&env))
            .unwrap()
            .contains("imp")
    );
    assert_eq!(stdout_of(&env.ok(&["profiles"])), "default\n");

    // A table left empty by hand, or by an older version, is no profile either.
    write_config(
        &env,
        "[profiles.default]\nclient_id = \"AAA\"\n\n[profiles.empty]\n",
    );
    assert_eq!(stdout_of(&env.ok(&["profiles"])), "default\n");
}

#[test]
fn profiles_remove_refuses_while_secrets_are_stored_then_removes_the_settings() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = imported_profile(&fake, "profiles-remove", std::time::Duration::from_secs(60));
    let name = env.profile.clone();

    let out = env.cmd(&["profiles", "remove", &name]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("a token set") && err.contains("a client secret") && err.contains("logout"),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(config_file(&env))
            .unwrap()
            .contains(&name)
    );

    env.ok(&["logout", "--keep-remote"]);
    env.ok(&["client", "remove"]);
    let out = env.cmd(&["profiles", "remove", &name]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        !std::fs::read_to_string(config_file(&env))
            .unwrap()
            .contains(&name)
    );
    assert_eq!(stdout_of(&env.ok(&["profiles"])), "");

    let out = env.cmd(&["profiles", "remove", "nosuch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("has no profile 'nosuch'"));
}

/// On a terminal the selected profile is marked; piped (scripts, completion) the names stay
/// bare.
#[test]
fn profiles_marks_the_selected_one_on_a_terminal() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "profiles-mark");
    write_config(&env, TWO_PROFILES);
    let piped = env.ok(&["profiles", "--profile", "imp"]);
    assert_eq!(stdout_of(&piped), "default\nimp\n");

    // The binary on a pseudo-terminal of its own (python's pty), in the test's environment.
    let binary = env.std_cmd(&[]);
    let mut on_a_terminal = std::process::Command::new("python3");
    on_a_terminal.args([
        "-c",
        "import pty, sys; pty.spawn(sys.argv[1:])",
        env!("CARGO_BIN_EXE_xero-auth"),
        "profiles",
        "--profile",
        "imp",
    ]);
    for (key, value) in binary.get_envs() {
        match value {
            Some(value) => on_a_terminal.env(key, value),
            None => on_a_terminal.env_remove(key),
        };
    }
    let out = on_a_terminal.output().unwrap();
    let shown = stdout_of(&out).replace('\r', "");
    assert_eq!(shown, "  default\n* imp\n");
}

/// The `client secret:` line of `status` and `client show`, as printed.
fn secret_line(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("client secret:"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_client_secret_line_says_what_is_known_not_that_the_app_is_pkce() {
    // The file store: a lookup needs no keychain and no passphrase.
    let fake = FakeXero::start();
    let mut env = TestEnv::new(&fake, "secret-line");
    env.set_env("XERO_AUTH_STORE", "file");
    env.set_env("XERO_AUTH_PASSPHRASE", "tidy-Otter-41-lantern");
    env.set_env("XERO_AUTH_FILE_WORK_FACTOR", "10");
    write_config(
        &env,
        &format!("[profiles.{}]\ndefault_tenant = \"T1\"\n", env.profile),
    );

    // No client id at all: not "a PKCE app", but that there is no app yet.
    let status = env.cmd(&["status"]).output().unwrap();
    let line = secret_line(&stdout_of(&status));
    assert!(
        line.contains("none stored") && line.contains("no client id") && !line.contains("PKCE"),
        "{line}"
    );

    // A client id and no secret: what that means, not what the app is.
    env.ok(&["client", "set", "--client-id", CLIENT_ID, "--public"]);
    for args in [&["status"][..], &["client", "show"]] {
        let out = env.cmd(args).output().unwrap();
        let line = secret_line(&stdout_of(&out));
        assert!(
            line.contains("none stored in encrypted files")
                && line.contains("client id only")
                && !line.contains("none (PKCE app)")
                && line.contains(&format!(
                    "xero-auth client set --client-id ID --profile {}",
                    env.profile
                )),
            "{args:?}: {line}"
        );
    }

    // A stored secret: where.
    env.cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .assert()
        .success();
    for args in [&["status"][..], &["client", "show"]] {
        let out = env.cmd(args).output().unwrap();
        let line = secret_line(&stdout_of(&out));
        assert!(
            line.contains("stored in encrypted files"),
            "{args:?}: {line}"
        );
    }
}
