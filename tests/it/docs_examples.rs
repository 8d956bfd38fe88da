//! The shell examples in README.md and docs/*.md, run: what people copy must work.
//!
//! **What is an example.** Every fenced block whose info string is `sh` or `bash`, in README.md
//! and in each docs/*.md (new pages are picked up by themselves). A block indented inside a list
//! loses its indentation.
//!
//! **How it runs.** Each block runs on its own, as a bash script (`set -euo pipefail`, a file of
//! its own, so `$0` is the script), in a world of its own, and must exit 0:
//! - a home folder with the usual XDG folders inside it, and `XDG_RUNTIME_DIR`;
//! - xero-auth pointed at an in-process fake Xero on 127.0.0.1 (the endpoint variables), and
//!   at the real Secret Service the tests use, under a profile name of the world's own
//!   (`XERO_AUTH_PROFILE`), so that examples written for the default profile touch nothing
//!   else;
//! - on PATH, this build's `xero-auth`, and `pass` printing the app's secret for
//!   `pass show xero/secret`; the system's curl and python3;
//! - in the current folder, the files the examples name: `contact.json`, `sync.py` and
//!   `report.py` (which check that they got a token and a tenant), and, when the client is
//!   stored but no tokens, `qa_data/tokens/xero-access-token.json` (tokens the fake issued);
//! - `TENANT` holds the fake's tenant id, and Xero's API address `https://api.xero.com/` in an
//!   example is replaced by the fake's.
//!
//! **Markers.** An HTML comment on the line above the fence (invisible on a rendered page) says
//! how a block runs, as a comma-separated list:
//! - `<!-- example: not run: REASON -->` — the block is only checked by `bash -n`: it installs,
//!   opens a browser, prompts on a terminal, or needs a system this test does not have;
//! - `nothing stored` — the world starts with nothing configured and nothing stored (the fake
//!   knows the app); `client stored` — the client id and secret are stored, but no tokens;
//!   without either, the world is ready: client stored, a token file imported, the default
//!   tenant chosen;
//! - `file store` — the world's profile uses the encrypted-file store, `XERO_AUTH_PASSPHRASE`
//!   set;
//! - `CI secrets` — `XERO_CLIENT_ID` and `XERO_CLIENT_SECRET` are set, as a CI job has them.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fake_xero::DEFAULT_TENANT_ID;
use support::*;

/// One shell example: where it is, what it says, how it is marked.
#[derive(Debug)]
struct Example {
    file: String,
    line: usize,
    text: String,
    marker: Marker,
}

#[derive(Debug, Default)]
struct Marker {
    not_run: Option<String>,
    state: State,
    file_store: bool,
    ci_secrets: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum State {
    Nothing,
    Client,
    #[default]
    Ready,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md, in a fixed order.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, repo().join("README.md"));
    docs
}

fn parse_marker(comment: &str, at: &str) -> Marker {
    let mut marker = Marker::default();
    let Some(spec) = comment
        .strip_prefix("<!-- example:")
        .and_then(|rest| rest.strip_suffix("-->"))
    else {
        return marker;
    };
    let spec = spec.trim();
    if let Some(reason) = spec.strip_prefix("not run:") {
        marker.not_run = Some(reason.trim().to_string());
        return marker;
    }
    for word in spec.split(',').map(str::trim) {
        match word {
            "nothing stored" => marker.state = State::Nothing,
            "client stored" => marker.state = State::Client,
            "file store" => marker.file_store = true,
            "CI secrets" => marker.ci_secrets = true,
            other => {
                panic!("{at}: unknown example marker '{other}' (see tests/it/docs_examples.rs)")
            }
        }
    }
    marker
}

/// Every `sh`/`bash` block of `path`.
fn examples_in(path: &Path) -> Vec<Example> {
    let name = path.strip_prefix(repo()).unwrap().display().to_string();
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut examples = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - trimmed.len();
        let start = i;
        i += 1;
        let mut body = Vec::new();
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            body.push(lines[i].get(indent..).unwrap_or(lines[i].trim_start()));
            i += 1;
        }
        i += 1; // the closing fence
        if !matches!(info.split_whitespace().next(), Some("sh" | "bash")) {
            continue;
        }
        let above = lines[..start]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim())
            .unwrap_or_default();
        let at = format!("{name}:{}", start + 1);
        examples.push(Example {
            marker: parse_marker(above, &at),
            file: name.clone(),
            line: start + 1,
            text: body.join("\n") + "\n",
        });
    }
    examples
}

fn all_examples() -> Vec<Example> {
    documents().iter().flat_map(|d| examples_in(d)).collect()
}

/// A world for one example (see the module documentation).
struct World {
    env: TestEnv,
    work: PathBuf,
}

impl World {
    fn new(fake: &FakeXero, name: &str, marker: &Marker) -> World {
        let mut env = TestEnv::new(fake, name);
        let root = env.dir.path().to_path_buf();
        let home = env.home();
        for (key, sub) in [
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_DATA_HOME", ".local/share"),
            ("XDG_STATE_HOME", ".local/state"),
            ("XDG_CACHE_HOME", ".cache"),
        ] {
            let dir = home.join(sub);
            std::fs::create_dir_all(&dir).unwrap();
            env.set_env(key, dir.to_str().unwrap());
        }
        std::fs::create_dir_all(home.join(".config/xero-auth")).unwrap();
        let runtime = root.join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        env.set_env("XDG_RUNTIME_DIR", runtime.to_str().unwrap());
        env.set_env("TENANT", DEFAULT_TENANT_ID);

        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_xero-auth"), bin.join("xero-auth")).unwrap();
        write_program(
            &bin.join("pass"),
            &format!(
                "#!/bin/sh\n[ \"$1 $2\" = 'show xero/secret' ] || exit 1\necho '{CLIENT_SECRET}'\n"
            ),
        );
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        env.set_env("PATH", &path);

        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(
            work.join("contact.json"),
            r#"{"Contacts": [{"Name": "ACME"}]}"#,
        )
        .unwrap();
        let program = "import os, sys\n\
                       for name in ('XERO_ACCESS_TOKEN', 'XERO_TENANT_ID'):\n    \
                           if not os.environ.get(name):\n        \
                               sys.exit(name + ' is not set')\n";
        std::fs::write(work.join("sync.py"), program).unwrap();
        std::fs::write(work.join("report.py"), program).unwrap();

        if marker.ci_secrets {
            env.set_env("XERO_CLIENT_ID", CLIENT_ID);
            env.set_env("XERO_CLIENT_SECRET", CLIENT_SECRET);
        }
        if marker.file_store {
            env.set_env("XERO_AUTH_PASSPHRASE", "a passphrase for the examples");
            env.set_env("XERO_AUTH_FILE_WORK_FACTOR", "10");
            env.ok(&["config", "set", "store", "file"]);
        }
        if marker.state != State::Nothing {
            env.set_client(fake);
        }
        match marker.state {
            State::Nothing => {}
            State::Client => {
                let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
                let file = env.write_token_file(&tokens, Duration::from_secs(30));
                let dest = work.join("qa_data/tokens");
                std::fs::create_dir_all(&dest).unwrap();
                std::fs::rename(file, dest.join("xero-access-token.json")).unwrap();
            }
            State::Ready => {
                env.import_fresh(fake, Duration::from_secs(30));
                env.ok(&["tenants", "use", DEFAULT_TENANT_ID]);
            }
        }
        World { env, work }
    }

    /// Runs `script` as a bash script in this world (with `set -euo pipefail`), after replacing
    /// Xero's API address with the fake's.
    fn run(&self, script: &str, extra_env: &[(&str, &str)]) -> Output {
        let script = script.replace("https://api.xero.com/", &format!("{}/", self.env.base_url));
        let file = self.env.dir.path().join("example.sh");
        write_program(
            &file,
            &format!("#!/usr/bin/env bash\nset -euo pipefail\n{script}"),
        );
        // The world's variables, as the binary would get them, for bash and all it starts.
        let template = self.env.std_cmd(&[]);
        let mut cmd = Command::new("timeout");
        cmd.arg("120").arg(&file).current_dir(&self.work);
        for (key, value) in template.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd.envs(extra_env.iter().copied())
            .stdin(std::process::Stdio::null());
        cmd.output().unwrap()
    }
}

fn write_program(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_shell_example_in_the_docs_runs() {
    require_keychain!();
    let examples = all_examples();
    assert!(
        examples.len() >= 25,
        "found only {} examples",
        examples.len()
    );
    let fake = FakeXero::start();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (n, example) in examples.iter().enumerate() {
        let at = format!("{}:{}", example.file, example.line);
        if let Some(reason) = &example.marker.not_run {
            assert!(!reason.is_empty(), "{at}: `not run` needs a reason");
            let out = Command::new("bash")
                .args(["-n", "-c", &example.text])
                .output()
                .unwrap();
            if !out.status.success() {
                failures.push(describe(&format!("{at} (bash -n)"), &out));
            }
            continue;
        }
        ran += 1;
        let world = World::new(&fake, &format!("doc{n}"), &example.marker);
        let out = world.run(&example.text, &[]);
        if !out.status.success() {
            failures.push(describe(
                &format!(
                    "{at} (mark it `<!-- example: not run: REASON -->` only if it cannot run here)"
                ),
                &out,
            ));
        }
    }
    assert!(ran >= 15, "only {ran} examples ran");
    assert!(
        failures.is_empty(),
        "{} of {} examples failed:\n\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n\n")
    );
}

/// The block of docs/scripting.md that tells exit codes apart.
fn exit_code_example() -> Example {
    examples_in(&repo().join("docs/scripting.md"))
        .into_iter()
        .find(|e| e.text.contains("case ") && e.text.contains("xero-auth token"))
        .expect("docs/scripting.md has the exit-code example")
}

/// The example must reach each branch: it once read `$?` inside `if !`, where it is always 0.
#[test]
fn the_scripting_exit_code_example_reaches_each_branch() {
    require_keychain!();
    let example = exit_code_example();
    let fake = FakeXero::start();

    // 3: nothing stored.
    let nothing = Marker {
        state: State::Nothing,
        ..Marker::default()
    };
    let world = World::new(&fake, "exit3", &nothing);
    let out = world.run(&example.text, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe("exit 3", &out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("xero-auth needs a person"),
        "{}",
        describe("exit 3", &out)
    );

    // 5: no Secret Service where the bus should be.
    let world = World::new(&fake, "exit5", &Marker::default());
    let out = world.run(
        &example.text,
        &[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe("exit 5", &out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keychain locked or unreachable"),
        "{}",
        describe("exit 5", &out)
    );

    // 6: Xero fails the refresh of an expired token (three tries), the example waits (a `sleep`
    // that only records its argument) and runs again, and then gets its token.
    let world = World::new(&fake, "exit6", &Marker::default());
    let bin = world.env.dir.path().join("bin");
    let slept = world.env.dir.path().join("slept");
    write_program(
        &bin.join("sleep"),
        &format!("#!/bin/sh\necho \"$1\" >> '{}'\n", slept.display()),
    );
    let tokens = fake.issue_tokens(CLIENT_ID, SCOPE);
    let file = world
        .env
        .write_token_file(&tokens, Duration::from_secs(86_400));
    world
        .env
        .cmd(&["import", "--force", file.to_str().unwrap()])
        .assert()
        .success();
    for _ in 0..3 {
        fake.push_fault(Target::Token, Fault::ServerError);
    }
    let out = world.run(&format!("{}echo \"got: $token\"\n", example.text), &[]);
    assert!(out.status.success(), "{}", describe("exit 6", &out));
    assert_eq!(std::fs::read_to_string(&slept).unwrap(), "60\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stored = world.env.stored().unwrap();
    assert_eq!(
        stdout.trim(),
        format!("got: {}", stored["access_token"].as_str().unwrap()),
        "the run after the wait got the refreshed token"
    );
}
