//! `xero-auth completions SHELL`: the shell's completion script on stdout; `completions install
//! [SHELL]` writes it where the shell loads it by itself, for the user alone (no root).
//!
//! The scripts are clap_complete's, generated from the command-line definition itself (so they
//! always match this binary's commands and flags), with three things of our own:
//! - a value completes file names only where a path is asked for (`import FILE`, `man --out`,
//!   `exec CMD`): every other value (`--tenant`, `--min-valid`, `tenants use NAME`) completes
//!   nothing rather than the files of the current folder;
//! - `--profile` completes the profiles in config.toml, asked at each press of Tab from
//!   `xero-auth profiles` (which reads only that file); `config set store` the store names;
//! - bash: clap_complete names its case labels `xero__subcmd__auth__subcmd__token` but sets
//!   `cmd="xero__auth__subcmd__token"` for a program name with a hyphen (clap-rs/clap#6421), so
//!   nothing after the first word completed. The labels are renamed to match, and the script's
//!   function is wrapped by one that adds the two points above.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Subcommand, ValueHint};
use clap_complete::Shell;

use super::{Cli, Context};
use crate::config::APP_NAME;
use crate::error::{Error, Result};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true,
          after_help = "Install for bash, zsh or fish: xero-auth completions install [SHELL]

By hand, for example:

bash:
  mkdir -p ~/.local/share/bash-completion/completions
  xero-auth completions bash > ~/.local/share/bash-completion/completions/xero-auth
zsh (and in ~/.zshrc, before compinit: fpath+=~/.zfunc):
  mkdir -p ~/.zfunc
  xero-auth completions zsh > ~/.zfunc/_xero-auth
fish:
  mkdir -p ~/.config/fish/completions
  xero-auth completions fish > ~/.config/fish/completions/xero-auth.fish
powershell (in $PROFILE):
  xero-auth completions powershell | Out-String | Invoke-Expression
elvish (in ~/.config/elvish/rc.elv):
  eval (xero-auth completions elvish | slurp)")]
/// Arguments of `xero-auth completions`.
pub struct CompletionsArgs {
    /// `install`, or none to print the script.
    #[command(subcommand)]
    pub action: Option<CompletionsCommand>,
    /// The shell to complete for.
    #[arg(value_enum, required = true)]
    pub shell: Option<Shell>,
}

/// What `xero-auth completions` does besides printing a script.
#[derive(Debug, Subcommand)]
pub enum CompletionsCommand {
    /// Write the script where the shell loads it by itself, and print its path: bash
    /// ~/.local/share/bash-completion/completions/xero-auth, zsh ~/.zfunc/_xero-auth (with
    /// `fpath+=~/.zfunc` before compinit in ~/.zshrc), fish
    /// ~/.config/fish/completions/xero-auth.fish.
    Install(InstallArgs),
}

/// Arguments of `xero-auth completions install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// bash, zsh or fish; none for the shell named by $SHELL.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: Option<String>,
}

/// Writes the completion script for `args.shell` to stdout, or installs it.
pub async fn run(args: CompletionsArgs, ctx: &Context) -> Result<()> {
    match (args.action, args.shell) {
        (Some(CompletionsCommand::Install(install)), _) => self::install(install, ctx),
        (None, Some(shell)) => ctx.write_out(&script(shell)),
        // clap asks for SHELL when there is no `install`.
        (None, None) => Err(Error::InvalidInput(
            "name the shell: xero-auth completions SHELL".into(),
        )),
    }
}

/// Writes the script of the shell asked for (or $SHELL's) into the folder it loads scripts
/// from by itself, and prints the file's path.
fn install(args: InstallArgs, ctx: &Context) -> Result<()> {
    let name = match args.shell {
        Some(name) => name,
        None => {
            let login_shell = (ctx.env)("SHELL").unwrap_or_default();
            match login_shell.rsplit('/').next() {
                Some(name @ ("bash" | "zsh" | "fish")) => name.to_string(),
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "cannot tell the shell from SHELL ('{login_shell}'): name it, \
                         `xero-auth completions install bash` (or zsh, fish)"
                    )));
                }
            }
        }
    };
    let (shell, path) = match name.as_str() {
        "bash" => {
            let dir = match (ctx.env)("BASH_COMPLETION_USER_DIR").filter(|d| d.starts_with('/')) {
                Some(dir) => PathBuf::from(dir),
                None => super::man::user_dir(ctx, "XDG_DATA_HOME", ".local/share")?
                    .join("bash-completion"),
            };
            (Shell::Bash, dir.join("completions").join(APP_NAME))
        }
        "zsh" => (
            Shell::Zsh,
            super::man::home(ctx)?
                .join(".zfunc")
                .join(format!("_{APP_NAME}")),
        ),
        _ => (
            Shell::Fish,
            super::man::user_dir(ctx, "XDG_CONFIG_HOME", ".config")?
                .join("fish")
                .join("completions")
                .join(format!("{APP_NAME}.fish")),
        ),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    }
    std::fs::write(&path, script(shell)).map_err(|e| Error::io("cannot write", &path, e))?;
    ctx.write_out(format!("{}\n", path.display()).as_bytes())?;
    match shell {
        Shell::Bash => eprintln!(
            "bash loads it in each new shell (with the bash-completion package installed)"
        ),
        Shell::Zsh => eprintln!(
            "zsh loads it once ~/.zshrc has `fpath+=~/.zfunc` before `compinit`; then open a new shell"
        ),
        _ => eprintln!("fish loads it in each new shell"),
    }
    Ok(())
}

/// How the scripts ask for the profiles: the program itself, found on PATH as the completed
/// command is, reading only config.toml (errors, such as a broken file, complete nothing).
const PROFILES_COMMAND: &str = "command xero-auth profiles 2>/dev/null";

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut command = completion_command();
    let mut out = Vec::with_capacity(64 * 1024);
    clap_complete::generate(shell, &mut command, APP_NAME, &mut out);
    let text = String::from_utf8(out).expect("clap_complete writes UTF-8");
    match shell {
        Shell::Bash => bash(text, &command),
        Shell::Zsh => zsh(text),
        Shell::Fish => fish(text, &command),
        _ => text,
    }
    .into_bytes()
}

/// The command-line definition as the scripts see it: a value that is not a path and has no
/// list of possible values completes nothing (clap_complete's default for such a value is the
/// file names of the current folder).
fn completion_command() -> clap::Command {
    fn no_file_names(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|arg| {
            let free_text = arg.get_action().takes_values()
                && arg.get_possible_values().is_empty()
                && arg.get_value_hint() == ValueHint::Unknown;
            if free_text {
                arg.value_hint(ValueHint::Other)
            } else {
                arg
            }
        })
        .mut_subcommands(no_file_names)
    }
    let mut cmd = Cli::command();
    // Built first, so that global options are copied into every subcommand and each argument
    // knows its value hint (a PathBuf is a path) before it is looked at.
    cmd.build();
    no_file_names(cmd)
}

/// The top-level commands whose positional arguments are paths or commands (`import`, `exec`).
fn commands_taking_paths(cmd: &clap::Command) -> Vec<&str> {
    let path_like = |hint: ValueHint| {
        !matches!(
            hint,
            ValueHint::Unknown
                | ValueHint::Other
                | ValueHint::Username
                | ValueHint::Hostname
                | ValueHint::Url
                | ValueHint::EmailAddress
        )
    };
    cmd.get_subcommands()
        .filter(|sub| {
            sub.get_positionals()
                .any(|p| p.get_possible_values().is_empty() && path_like(p.get_value_hint()))
        })
        .map(|sub| sub.get_name())
        .collect()
}

fn bash(script: String, cmd: &clap::Command) -> String {
    let function = format!("_{}", APP_NAME.replace('-', "__"));
    let wrong_labels = APP_NAME.replace('-', "__subcmd__");
    let generated = format!("{function}_generated");
    // The generated registration (`complete … -o bashdefault -o default …`) falls back to file
    // names wherever it offers nothing: replaced by ours below, which has no fallback.
    let body = match script.find("\nif [[ \"${BASH_VERSINFO[0]}\" -eq 4") {
        Some(end) => &script[..end],
        None => script.as_str(),
    };
    let body = body
        .replace(&wrong_labels, &APP_NAME.replace('-', "__"))
        .replacen(&format!("{function}() {{"), &format!("{generated}() {{"), 1);
    let path_commands = commands_taking_paths(cmd).join("|");
    let stores = store_names();
    format!(
        r#"{body}

# Around the generated function: `--profile` completes the configured profiles, `config set
# store` the store names, and file names come only where a path is asked for ({path_commands}).
{function}() {{
    local cur="$2" prev="$3"
    if [[ $prev == --profile || ($prev == = && ${{COMP_WORDS[COMP_CWORD-2]}} == --profile) ]]; then
        COMPREPLY=( $(compgen -W "$({PROFILES_COMMAND})" -- "$cur") )
        return 0
    fi
    if [[ $prev == store && ${{COMP_WORDS[COMP_CWORD-2]}} == set && " ${{COMP_WORDS[*]:1:COMP_CWORD-3}} " == *" config "* ]]; then
        COMPREPLY=( $(compgen -W "{stores}" -- "$cur") )
        return 0
    fi
    {generated} "$@"
    if [[ ${{#COMPREPLY[@]}} -eq 0 && $cur != -* ]]; then
        local word
        for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
            case $word in
                {path_commands})
                    compopt -o filenames 2>/dev/null
                    COMPREPLY=( $(compgen -f -- "$cur") )
                    return 0
                    ;;
            esac
        done
    fi
    return 0
}}

if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -F {function} -o nosort {APP_NAME}
else
    complete -F {function} {APP_NAME}
fi
"#
    )
}

fn zsh(script: String) -> String {
    let function = format!("_{APP_NAME}_profiles");
    let helper = format!(
        r#"(( $+functions[{function}] )) ||
{function}() {{
    local -a profiles
    profiles=( ${{(f)"$({PROFILES_COMMAND})"}} )
    compadd -a profiles
}}

"#
    );
    let script = script.replace("]:PROFILE:'", &format!("]:PROFILE:{function}'"));
    // `config set store VALUE`: the store names (the value of any other key is free text).
    let script = script
        .lines()
        .map(|line| match line.strip_suffix(":' \\") {
            Some(spec) if line.starts_with("':value -- ") => format!(
                "{spec}:{{[[ $words[CURRENT-1] == store ]] && compadd -- {}}}' \\",
                store_names()
            ),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let entry = format!("if [ \"$funcstack[1]\" = \"_{APP_NAME}\" ]; then");
    match script.find(&entry) {
        Some(at) => format!("{}{helper}{}", &script[..at], &script[at..]),
        None => script,
    }
}

fn fish(script: String, cmd: &clap::Command) -> String {
    let mut script = script;
    script.push_str(&format!(
        "\n# Values complete file names only where a path is asked for; `--profile` completes the\n\
         # configured profiles.\n\
         complete -c {APP_NAME} -f\n\
         complete -c {APP_NAME} -l profile -r -f -a \"({PROFILES_COMMAND})\"\n"
    ));
    let condition = format!("__fish_{}_using_subcommand", APP_NAME.replace('-', "_"));
    for name in commands_taking_paths(cmd) {
        script.push_str(&format!(
            "complete -c {APP_NAME} -n \"{condition} {name}\" -F\n"
        ));
    }
    // clap_complete's fish script completes no positional value, even from a list
    // (`completions SHELL`, `config set KEY`): one line each, for the word at that position.
    fn positional_values(cmd: &clap::Command, condition: String, depth: usize, lines: &mut String) {
        for (at, arg) in cmd.get_positionals().enumerate() {
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() {
                lines.push_str(&format!(
                    "complete -c {APP_NAME} -n \"{condition}; and __fish_is_nth_token {}\" -f -a \"{}\"\n",
                    depth + at + 1,
                    values.join(" ")
                ));
            }
        }
        for sub in cmd.get_subcommands() {
            positional_values(
                sub,
                format!(
                    "{condition}; and __fish_seen_subcommand_from {}",
                    sub.get_name()
                ),
                depth + 1,
                lines,
            );
        }
    }
    for sub in cmd.get_subcommands() {
        positional_values(
            sub,
            format!("{condition} {}", sub.get_name()),
            1,
            &mut script,
        );
    }
    // `config set store VALUE`: the store names.
    script.push_str(&format!(
        "complete -c {APP_NAME} -n \"{condition} config; and __fish_seen_subcommand_from set; \
         and test (commandline -opc)[-2] = set; and test (commandline -opc)[-1] = store\" -f -a \"{}\"\n",
        store_names()
    ));
    script
}

/// The values `config set store` takes, space-separated.
fn store_names() -> String {
    crate::config::StoreKind::ALL
        .iter()
        .map(|kind| kind.name())
        .collect::<Vec<_>>()
        .join(" ")
}
