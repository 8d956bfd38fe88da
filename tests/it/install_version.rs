//! What a user of `cargo install` runs instead of a package: `completions install [SHELL]` and
//! `man install` put the files where the shell and `man` find them, under a throw-away HOME (no
//! root); and `--version` names the version, the commit and the stores.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary with HOME set to `home` and none of the variables that move the user's folders.
fn xero_auth(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xero-auth"));
    cmd.args(args)
        .env("HOME", home)
        .env("XERO_AUTH_CONFIG_DIR", home.join("config"))
        .env("XERO_AUTH_STATE_DIR", home.join("state"));
    for var in [
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        "BASH_COMPLETION_USER_DIR",
        "MANPATH",
        "SHELL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn ok(mut cmd: Command) -> Output {
    let out = cmd.output().expect("the binary runs");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn completions_install_writes_each_shell_script_where_the_shell_loads_it() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let expected: [(&str, PathBuf); 3] = [
        (
            "bash",
            home.join(".local/share/bash-completion/completions/xero-auth"),
        ),
        ("zsh", home.join(".zfunc/_xero-auth")),
        ("fish", home.join(".config/fish/completions/xero-auth.fish")),
    ];
    for (shell, path) in &expected {
        let printed = ok(xero_auth(home, &["completions", "install", shell]));
        assert_eq!(stdout(&printed).trim(), path.display().to_string());
        let script = ok(xero_auth(home, &["completions", shell])).stdout;
        assert_eq!(
            std::fs::read(path).unwrap(),
            script,
            "{shell}'s installed script"
        );
    }

    // Without SHELL named, $SHELL's; the XDG folders move them.
    let other = tempfile::tempdir().unwrap();
    let mut cmd = xero_auth(other.path(), &["completions", "install"]);
    cmd.env("SHELL", "/usr/bin/fish")
        .env("XDG_CONFIG_HOME", other.path().join("cfg"));
    let printed = ok(cmd);
    let fish = other.path().join("cfg/fish/completions/xero-auth.fish");
    assert_eq!(stdout(&printed).trim(), fish.display().to_string());
    assert!(fish.is_file());
    let mut cmd = xero_auth(other.path(), &["completions", "install"]);
    cmd.env("SHELL", "/bin/bash")
        .env("XDG_DATA_HOME", other.path().join("data"));
    ok(cmd);
    assert!(
        other
            .path()
            .join("data/bash-completion/completions/xero-auth")
            .is_file()
    );

    // A shell it cannot tell: exit 1, saying how to name it, and nothing written.
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = xero_auth(empty.path(), &["completions", "install"]);
    cmd.env("SHELL", "/bin/sh");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("completions install bash"),
        "stderr: {stderr}"
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);

    // `completions SHELL` still prints the script.
    let printed = ok(xero_auth(home, &["completions", "bash"]));
    assert!(stdout(&printed).contains("complete -F"));
}

#[test]
fn man_install_writes_every_page_where_man_finds_it() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut cmd = xero_auth(home, &["man", "install"]);
    cmd.env("PATH", "/usr/bin:/bin");
    let out = ok(cmd);
    let names = stdout(&ok(xero_auth(home, &["man", "--list"])));
    let dir = home.join(".local/share/man/man1");
    let expected: Vec<String> = names
        .lines()
        .map(|name| format!("{}\n", dir.join(format!("{name}.1")).display()))
        .collect();
    assert_eq!(stdout(&out), expected.concat());
    for name in names.lines() {
        let page = ok(xero_auth(home, &["man", name])).stdout;
        assert_eq!(std::fs::read(dir.join(format!("{name}.1"))).unwrap(), page);
    }
    // ~/.local/bin is not on that PATH: the note says what makes man look there.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MANPATH"), "stderr: {stderr}");

    // With ~/.local/bin on PATH, man itself finds the page there, and no note is needed.
    let path = format!("{}:/usr/bin:/bin", home.join(".local/bin").display());
    let mut cmd = xero_auth(home, &["man", "install"]);
    cmd.env("PATH", &path);
    assert!(ok(cmd).stderr.is_empty());
    if Command::new("man").arg("-w").arg("man").output().is_err() {
        eprintln!("SKIP the man lookup: man (man-db) is not installed");
        return;
    }
    let found = Command::new("man")
        .args(["-w", "xero-auth-token"])
        .env("HOME", home)
        .env("PATH", &path)
        .env_remove("MANPATH")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).trim(),
        dir.join("xero-auth-token.1").display().to_string(),
        "man -w: {}",
        String::from_utf8_lossy(&found.stderr)
    );
}

#[test]
fn version_names_the_version_the_commit_and_the_stores() {
    let home = tempfile::tempdir().unwrap();
    let out = stdout(&ok(xero_auth(home.path(), &["--version"])));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(concat!("xero-auth ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    // The commit of the checkout the test binary was built from, or `unknown` outside one.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    assert_eq!(
        lines.get(1).copied(),
        Some(format!("commit: {head}").as_str()),
        "{out}"
    );
    let stores = if cfg!(target_os = "linux") {
        "stores: secret-service, keyutils, file, vault"
    } else if cfg!(target_os = "macos") {
        "stores: keychain, file, vault"
    } else {
        "stores: credential-manager, file, vault"
    };
    assert_eq!(lines.get(2).copied(), Some(stores), "{out}");
    // -V: one line, the version and the commit.
    let short = stdout(&ok(xero_auth(home.path(), &["-V"])));
    assert_eq!(
        short.trim(),
        format!("xero-auth {} ({head})", env!("CARGO_PKG_VERSION"))
    );
}
