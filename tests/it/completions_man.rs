//! Shell completions (`xero-auth completions SHELL`) and the man pages (`xero-auth man`, which
//! `scripts/man` runs) are generated from the command-line definition without error, and name
//! every subcommand.

use std::process::Command;

use clap::CommandFactory;
use xero_auth::cli::Cli;

/// Every subcommand name, nested ones included (`client set`, `tenants use`).
fn subcommand_names() -> Vec<String> {
    fn walk(cmd: &clap::Command, names: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            names.push(sub.get_name().to_string());
            walk(sub, names);
        }
    }
    let mut names = Vec::new();
    walk(&Cli::command(), &mut names);
    names
}

/// `name` as a word of its own in `text` (not inside `subset` or `user`): a letter or digit on
/// either side makes it part of another word.
fn contains_word(text: &str, name: &str) -> bool {
    let part_of_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.match_indices(name).any(|(at, _)| {
        !part_of_word(text[..at].chars().next_back())
            && !part_of_word(text[at + name.len()..].chars().next())
    })
}

fn xero_auth(args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_xero-auth"))
        .args(args)
        .env("HOME", home.path())
        .env("XERO_AUTH_CONFIG_DIR", home.path().join("config"))
        .env("XERO_AUTH_STATE_DIR", home.path().join("state"))
        .output()
        .expect("the binary runs")
}

#[test]
fn the_names_cover_the_whole_interface() {
    let names = subcommand_names();
    for expected in [
        "client",
        "set",
        "login",
        "import",
        "refresh",
        "token",
        "status",
        "api",
        "exec",
        "tenants",
        "use",
        "scopes",
        "for",
        "logout",
        "doctor",
        "completions",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
}

#[test]
fn completions_for_every_shell_name_every_subcommand() {
    let names = subcommand_names();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = xero_auth(&["completions", shell]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{shell}: {stderr}");
        assert!(stderr.is_empty(), "{shell}: {stderr}");
        let script = String::from_utf8(out.stdout).unwrap();
        for name in &names {
            assert!(
                contains_word(&script, name),
                "{shell} completions lack '{name}'"
            );
        }
        // Flags are completed too.
        assert!(contains_word(&script, "if-older-than"), "{shell}");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = xero_auth(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bash") && stderr.contains("powershell"),
        "{stderr}"
    );
}

#[test]
fn the_man_pages_name_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    // What an installed binary offers (and scripts/man runs).
    let out = xero_auth(&["man", "--out", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = String::from_utf8(out.stdout).unwrap();
    assert!(
        written.contains(&format!("{}\n", dir.path().join("xero-auth.1").display())),
        "it lists what it wrote: {written}"
    );

    let main_page = std::fs::read_to_string(dir.path().join("xero-auth.1")).unwrap();
    assert!(main_page.contains(".TH xero-auth 1"), "{main_page}");
    let top_level: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in &top_level {
        assert!(
            contains_word(&main_page, name),
            "xero-auth.1 lacks '{name}'"
        );
    }
    for name in [
        "client-set",
        "client-show",
        "client-remove",
        "tenants-use",
        "config-set",
    ] {
        assert!(
            dir.path().join(format!("xero-auth-{name}.1")).exists(),
            "no page for {name}"
        );
    }
    for name in &top_level {
        let page = std::fs::read_to_string(dir.path().join(format!("xero-auth-{name}.1")))
            .unwrap_or_else(|e| panic!("no page for {name}: {e}"));
        assert!(page.contains(".TH"), "{name}");
    }
    let doctor = std::fs::read_to_string(dir.path().join("xero-auth-doctor.1")).unwrap();
    assert!(
        doctor.contains("Exit status"),
        "the doctor page explains its exit status"
    );
}

/// `cargo install` leaves no man pages behind: the binary prints each one itself.
#[test]
fn man_prints_one_page_by_command_name() {
    let dir = tempfile::tempdir().unwrap();
    xero_auth(&["man", "--out", dir.path().to_str().unwrap()]);
    let page = |args: &[&str]| {
        let out = xero_auth(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let file = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();

    assert_eq!(page(&["man"]), file("xero-auth.1"));
    assert_eq!(page(&["man", "token"]), file("xero-auth-token.1"));
    assert!(page(&["man", "token"]).starts_with(".ie"), "roff");
    for spelling in [
        &["man", "client", "set"][..],
        &["man", "client-set"],
        &["man", "xero-auth-client-set"],
    ] {
        assert_eq!(
            page(spelling),
            file("xero-auth-client-set.1"),
            "{spelling:?}"
        );
    }

    let list = page(&["man", "--list"]);
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.trim_end_matches(".1").to_string()
        })
        .collect();
    files.sort();
    let mut listed: Vec<String> = list.lines().map(String::from).collect();
    listed.sort();
    assert_eq!(listed, files, "--list names the pages --out writes");

    let out = xero_auth(&["man", "tokn"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no man page 'tokn'") && stderr.contains("did you mean 'token'?"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn completions_need_no_configuration_and_a_broken_one_does_not_stop_them() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        "[profiles.default\nthis is not TOML",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xero-auth"))
            .args(args)
            .env("HOME", home.path())
            .env("XERO_AUTH_CONFIG_DIR", &config)
            .env("XERO_AUTH_STATE_DIR", home.path().join("state"))
            .output()
            .unwrap()
    };
    let out = run(&["completions", "bash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(contains_word(
        &String::from_utf8_lossy(&out.stdout),
        "refresh"
    ));
    // Nor the man pages, nor the way to find the file to mend.
    for args in [&["man", "token"][..], &["config", "path"]] {
        let out = run(args);
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Commands that do need it still say what is wrong with it.
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid TOML"));
}

/// A command's help lists its own options first and the options every command takes under a
/// heading of their own, and the main commands show examples.
#[test]
fn help_keeps_a_commands_own_options_apart_from_the_global_ones_and_shows_examples() {
    for command in [
        "login", "token", "api", "exec", "status", "refresh", "import", "tenants", "scopes",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_xero-auth"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        let own = help.find("Options:").expect("a section of its own options");
        let global = help
            .find("Global options:")
            .expect("a section of global options");
        assert!(
            own < global,
            "{command}: its own options come first:\n{help}"
        );
        for flag in ["--profile", "--store", "--json", "--verbose"] {
            let at = help.find(flag).unwrap();
            assert!(
                at > global,
                "{command}: {flag} is under Global options:\n{help}"
            );
        }
        assert!(
            help.contains("Examples:\n  xero-auth "),
            "{command}: examples:\n{help}"
        );
    }
}

/// The exit codes, the environment and the files are on every page, before VERSION, as `man`
/// readers look for them; the exit codes are the one table's.
#[test]
fn every_man_page_has_exit_status_environment_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = xero_auth(&["man", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let mut pages = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let page = std::fs::read_to_string(&path).unwrap();
        pages += 1;
        let at = |section: &str| {
            page.find(&format!("\n.SH {section}\n"))
                .unwrap_or_else(|| panic!("{}: no {section} section", path.display()))
        };
        let (exit, env, files) = (at("\"EXIT STATUS\""), at("ENVIRONMENT"), at("FILES"));
        assert!(exit < env && env < files, "{}", path.display());
        if let Some(version) = page.find("\n.SH VERSION\n") {
            assert!(files < version, "{}: before VERSION", path.display());
        }
        let codes = &page[exit..env];
        for code in ["0", "3", "4", "5", "6", "126", "127"] {
            assert!(
                codes.contains(&format!(".TP\n{code}\n")),
                "{}: {code}",
                path.display()
            );
        }
        assert!(
            page[env..files].contains("XERO_AUTH_PROFILE"),
            "{}",
            path.display()
        );
        assert!(page[files..].contains("config.toml"), "{}", path.display());
    }
    assert!(pages > 20, "{pages} pages");
}

/// Every page's name as `--help` takes it: `xero-auth-client-set` → `client set`.
fn commands_with_pages() -> Vec<Vec<String>> {
    let list = xero_auth(&["man", "--list"]);
    String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|page| {
            page.trim_start_matches("xero-auth")
                .split('-')
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

/// In every `--help`, an example is a command, then — after spaces — a comment that starts with
/// `#`, so it can be copied into a shell as it is; and it fits on one line of the help's width.
#[test]
fn help_examples_mark_their_comments_and_do_not_wrap() {
    for command in commands_with_pages() {
        let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
        args.push("--help");
        let out = xero_auth(&args);
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        let Some(examples) = help.split("\nExamples:\n").nth(1) else {
            continue;
        };
        for line in examples.lines().take_while(|l| l.starts_with("  ")) {
            assert!(line.len() <= 100, "{args:?}: wraps at 100 columns: {line}");
            let example = line.trim_start();
            assert!(
                !line.starts_with("   "),
                "{args:?}: a continued comment: {line}"
            );
            if let Some(gap) = example.find("  ") {
                let comment = example[gap..].trim_start();
                assert!(
                    comment.starts_with('#'),
                    "{args:?}: a comment without #: {line}"
                );
            }
        }
    }
}

/// The options that take a margin say what values they take.
#[test]
fn min_valid_states_its_range() {
    for command in ["token", "exec", "mcp"] {
        let out = xero_auth(&[command, "--help"]);
        let help = String::from_utf8(out.stdout).unwrap();
        let at = help.find("--min-valid").unwrap();
        let text: String = help[at..]
            .split("\n\n")
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(text.contains("0 to 1500"), "{command}: {text}");
    }
}
