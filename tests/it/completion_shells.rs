//! The completion scripts, run in the real shells: each is loaded into bash, zsh or fish and asked
//! to complete a command line, and what it offers is checked — subcommands, flags after a
//! subcommand, values, `--profile` from config.toml, and no file names where no path is asked
//! for. zsh and fish are skipped, saying so, where they are not installed (scripts/test installs
//! them when it can); set XERO_AUTH_TEST_REQUIRE_SHELLS=1 to make that a failure.
//!
//! bash: the script is sourced and its function called with COMP_WORDS/COMP_CWORD, as readline
//! calls it (the script registers no file-name fallback, so what the function returns is all
//! there is). zsh: an interactive zsh in a pseudo-terminal (zsh's own zpty module) runs
//! compinit and completes the line with Tab, with `compadd` recording every match it adds.
//! fish: `complete -C LINE`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A world to complete in: config.toml with three profiles, a folder with files in it (the
/// current folder of the shells), and PATH leading to this build's binary.
struct World {
    dir: tempfile::TempDir,
}

const PROFILES: [&str; 3] = ["default", "imp", "work-2"];

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let tables: String = PROFILES
            .iter()
            .map(|p| format!("[profiles.{p}]\nclient_id = \"ID\"\n"))
            .collect();
        std::fs::write(config.join("config.toml"), tables).unwrap();
        let cwd = dir.path().join("cwd");
        std::fs::create_dir_all(&cwd).unwrap();
        for file in ["notes.txt", "tokens.json"] {
            std::fs::write(cwd.join(file), "x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        World { dir }
    }

    fn cwd(&self) -> PathBuf {
        self.dir.path().join("cwd")
    }

    /// `xero-auth completions SHELL`, written to a file.
    fn script(&self, shell: &str, name: &str) -> PathBuf {
        let out = self
            .command(env!("CARGO_BIN_EXE_xero-auth"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let folder = self.dir.path().join(format!("completions-{shell}"));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(name);
        std::fs::write(&path, out.stdout).unwrap();
        path
    }

    /// `program` in this world: its folders, its PATH, its current folder.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_xero-auth")).parent().unwrap();
        let mut cmd = Command::new(program);
        cmd.current_dir(self.cwd())
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("home/.config"))
            .env("XDG_DATA_HOME", self.dir.path().join("home/.local/share"))
            .env("XERO_AUTH_CONFIG_DIR", self.dir.path().join("config"))
            .env("XERO_AUTH_STATE_DIR", self.dir.path().join("state"))
            .env_remove("XERO_AUTH_PROFILE")
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display()),
            );
        cmd
    }
}

fn installed(shell: &str) -> bool {
    let found = Command::new(shell)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("XERO_AUTH_TEST_REQUIRE_SHELLS").as_deref() == Ok("1") {
            panic!("{shell} is required here but not installed");
        }
        eprintln!(
            "skipped: {shell} is not installed (Debian: apt-get install {shell}; scripts/test does it as root)"
        );
    }
    found
}

/// Runs `shell` and takes each line of its output as a candidate (up to a tab: fish follows a
/// candidate with its description).
fn candidates(mut shell: Command) -> Vec<String> {
    let out = shell.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            l.split('\t')
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// What a shell offers for the last word of `line` (after a trailing space: a new word).
type Completer<'a> = dyn Fn(&str) -> Vec<String> + 'a;

/// The behaviours every shell's script must have.
fn check_shell(shell: &str, complete: &Completer) {
    let has = |line: &str, expected: &[&str]| {
        let got = complete(line);
        for e in expected {
            assert!(
                got.iter().any(|g| g == e),
                "{shell}: `{line}` lacks {e}: {got:?}"
            );
        }
        got
    };
    let no_files = |line: &str| {
        let got = complete(line);
        assert!(
            !got.iter()
                .any(|g| g.contains("notes.txt") || g.contains("tokens.json")),
            "{shell}: `{line}` offers file names: {got:?}"
        );
        got
    };

    // Subcommands, nested ones too.
    has("xero-auth to", &["token"]);
    has("xero-auth client ", &["set", "show", "remove"]);
    has("xero-auth tenants ", &["use"]);
    has("xero-auth config ", &["set", "get", "unset", "path"]);
    // Flags after a subcommand (what stopped working after the first word), globals included.
    has(
        "xero-auth token --",
        &["--header", "--min-valid", "--profile", "--json"],
    );
    has("xero-auth refresh --if", &["--if-older-than"]);
    has(
        "xero-auth client set --",
        &["--client-id", "--secret-stdin", "--public"],
    );
    // Values from a list.
    has(
        "xero-auth token --store ",
        &["secret-service", "file", "keyutils"],
    );
    has("xero-auth token --store fi", &["file"]);
    has("xero-auth completions ", &["bash", "zsh", "fish"]);
    has("xero-auth config set sto", &["store", "store_timeout"]);
    // A key's value from a list: the stores, not the key names again.
    let stores = has(
        "xero-auth config set store ",
        &["secret-service", "file", "keyutils", "vault"],
    );
    assert!(
        !stores.iter().any(|s| s == "store_timeout"),
        "{shell}: {stores:?}"
    );
    has("xero-auth --profile imp config set store fi", &["file"]);
    // --profile: the profiles in config.toml, and only those.
    let mut profiles = no_files("xero-auth --profile ");
    profiles.sort();
    assert_eq!(
        profiles, PROFILES,
        "{shell}: --profile offers the configured profiles"
    );
    assert_eq!(complete("xero-auth token --profile i"), ["imp"], "{shell}");
    assert_eq!(
        complete("xero-auth tenants use --profile w"),
        ["work-2"],
        "{shell}"
    );
    // No file names where no path is asked for.
    no_files("xero-auth tenants use ");
    no_files("xero-auth tenants use n");
    no_files("xero-auth token --min-valid ");
    no_files("xero-auth api --tenant ");
    no_files("xero-auth api ");
    // File names where one is.
    has("xero-auth import no", &["notes.txt"]);
}

#[test]
fn bash_completes_subcommands_flags_values_and_profiles() {
    let world = World::new();
    let script = world.script("bash", "xero-auth.bash");
    let registered = world
        .command("bash")
        .args([
            "--norc",
            "--noprofile",
            "-c",
            "source \"$1\"; complete -p xero-auth",
            "bash",
        ])
        .arg(&script)
        .output()
        .unwrap();
    let registered = String::from_utf8_lossy(&registered.stdout).into_owned();
    assert!(registered.contains("-F _xero__auth"), "{registered}");
    assert!(
        !registered.contains("-o default") && !registered.contains("-o bashdefault"),
        "no fallback to file names: {registered}"
    );

    const CALL: &str = r#"source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
_xero__auth xero-auth "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}""#;
    let complete = |line: &str| {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if line.ends_with(' ') {
            words.push("");
        }
        let mut bash = world.command("bash");
        bash.args(["--norc", "--noprofile", "-c", CALL, "bash"])
            .arg(&script)
            .args(&words);
        candidates(bash)
    };
    check_shell("bash", &complete);
}

/// The zsh side of the test: an interactive zsh in a zpty completes the line with Tab; `compadd`
/// appends each match it adds to $OUT, and a line `--end--` once completion is over.
const ZSH_SETUP: &str = r#"PROMPT='' RPROMPT=''
fpath=("$COMPDIR" $fpath)
autoload -Uz compinit && compinit -u -D
zstyle ':completion:*' list-grouped false
zstyle ':completion:*' insert-tab false
compadd() {
    # Calls that only ask (-O, -A, -D) are zsh's own bookkeeping, not matches shown.
    if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
        builtin compadd "$@"
        return $?
    fi
    local -a __hits
    builtin compadd -A __hits "$@"
    (( $#__hits )) && print -rl -- $__hits >> "$OUT"
    builtin compadd "$@"
}
_capture_done() { print -r -- --end-- >> "$OUT" }
comppostfuncs=( _capture_done )
bindkey '^I' complete-word
print -r -- --ready-- >> "$OUT"
"#;

const ZSH_DRIVER: &str = r#"zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z "source ${(q)SETUP}"
integer tries=0
until grep -q -- --ready-- "$OUT" 2>/dev/null; do
    zpty -r -t z junk || sleep 0.05
    (( ++tries > 400 )) && { print -u2 "zsh did not start"; exit 4 }
done
zpty -w -n z "$LINE"$'\t'
tries=0
until grep -q -- --end-- "$OUT"; do
    zpty -r -t z junk || sleep 0.05
    (( ++tries > 400 )) && { print -u2 "no completion for: $LINE"; exit 5 }
done
zpty -d z
"#;

#[test]
fn zsh_completes_subcommands_flags_values_and_profiles() {
    if !installed("zsh") {
        return;
    }
    let world = World::new();
    let script = world.script("zsh", "_xero-auth");
    let setup = world.dir.path().join("setup.zsh");
    std::fs::write(&setup, ZSH_SETUP).unwrap();
    let calls = std::cell::Cell::new(0);
    let complete = |line: &str| {
        calls.set(calls.get() + 1);
        let out_file = world.dir.path().join(format!("zsh-{}.out", calls.get()));
        let out = world
            .command("zsh")
            .args(["-f", "-c", ZSH_DRIVER])
            .env("SETUP", &setup)
            .env("COMPDIR", script.parent().unwrap())
            .env("OUT", &out_file)
            .env("LINE", line)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "zsh driver for `{line}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&out_file).unwrap();
        let mut matches: Vec<String> = text
            .lines()
            .skip_while(|l| *l != "--ready--")
            .skip(1)
            .take_while(|l| *l != "--end--")
            .map(String::from)
            .collect();
        matches.dedup();
        matches
    };
    check_shell("zsh", &complete);
}

#[test]
fn fish_completes_subcommands_flags_values_and_profiles() {
    if !installed("fish") {
        return;
    }
    let world = World::new();
    let script = world.script("fish", "xero-auth.fish");
    let complete = |line: &str| {
        let mut fish = world.command("fish");
        fish.args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
            .arg(&script)
            .arg(line);
        candidates(fish)
    };
    check_shell("fish", &complete);
}
