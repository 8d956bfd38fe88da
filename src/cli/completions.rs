//! `xero-auth completions SHELL`: the shell's completion script on stdout.

use clap::{Args, CommandFactory};

use super::{Cli, Context};
use crate::error::Result;

#[derive(Debug, Args)]
#[command(after_help = "Install, for example:
  bash        xero-auth completions bash > ~/.local/share/bash-completion/completions/xero-auth
  zsh         xero-auth completions zsh > ~/.zfunc/_xero-auth   (with fpath+=~/.zfunc before compinit)
  fish        xero-auth completions fish > ~/.config/fish/completions/xero-auth.fish
  powershell  xero-auth completions powershell | Out-String | Invoke-Expression   (in $PROFILE)
  elvish      eval (xero-auth completions elvish | slurp)   (in ~/.config/elvish/rc.elv)")]
/// Arguments of `xero-auth completions`.
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Writes the completion script for `args.shell` to stdout.
pub async fn run(args: CompletionsArgs, ctx: &Context) -> Result<()> {
    ctx.write_out(&script(args.shell))
}

/// The completion script for `shell`, generated from the command-line definition itself, so it
/// always matches this binary's commands and flags.
pub fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut out = Vec::with_capacity(16 * 1024);
    clap_complete::generate(shell, &mut command, "xero-auth", &mut out);
    out
}
