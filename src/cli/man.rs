//! `xero-auth man [PAGE]`: the man pages, generated from the command-line definition this binary
//! parses, so an installed binary (`cargo install`) has them without a source checkout.

use std::path::PathBuf;

use clap::{Args, CommandFactory};

use super::{Cli, Context};
use crate::error::{Error, Result};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth man token | man -l -                   read one page
  xero-auth man --out ~/.local/share/man/man1      install them all, then: man xero-auth-token")]
/// Arguments of `xero-auth man`.
pub struct ManArgs {
    /// The page: a command (`token`, `client set`, `client-set`); none for the main page.
    #[arg(value_name = "COMMAND")]
    pub page: Vec<String>,
    /// List the pages (one name a line) instead of printing one.
    #[arg(long, conflicts_with_all = ["page", "out"])]
    pub list: bool,
    /// Write every page into DIR as NAME.1 (creating DIR), and print their paths.
    #[arg(long, value_name = "DIR", conflicts_with = "page", value_hint = clap::ValueHint::DirPath)]
    pub out: Option<PathBuf>,
}

/// Prints one page's roff, lists the pages, or writes them all.
pub async fn run(args: ManArgs, ctx: &Context) -> Result<()> {
    let pages = pages();
    if args.list {
        let names: String = pages.iter().map(|(name, _)| format!("{name}\n")).collect();
        return ctx.write_out(names.as_bytes());
    }
    if let Some(dir) = args.out {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        let mut written = String::new();
        for (name, page) in &pages {
            let path = dir.join(format!("{name}.1"));
            std::fs::write(&path, page).map_err(|e| Error::io("cannot write", &path, e))?;
            written.push_str(&format!("{}\n", path.display()));
        }
        return ctx.write_out(written.as_bytes());
    }
    let wanted = if args.page.is_empty() {
        APP.to_string()
    } else {
        let joined = args.page.join("-");
        match joined.strip_prefix(APP) {
            Some(rest) if rest.is_empty() || rest.starts_with('-') => joined,
            _ => format!("{APP}-{joined}"),
        }
    };
    match pages.iter().find(|(name, _)| *name == wanted) {
        Some((_, page)) => ctx.write_out(page),
        None => {
            let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
            let meant = crate::config::closest(&wanted, names.iter().copied())
                .map(|n| format!(" (did you mean '{}'?)", short(n)))
                .unwrap_or_default();
            Err(Error::InvalidInput(format!(
                "no man page '{}'{meant}; the pages: {}",
                args.page.join(" "),
                names
                    .iter()
                    .map(|n| short(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

const APP: &str = crate::config::APP_NAME;

/// A page's name without the `xero-auth-` in front, as one asks for it.
fn short(name: &str) -> &str {
    name.strip_prefix(APP)
        .map(|rest| rest.trim_start_matches('-'))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(name)
}

/// Every page, `xero-auth` first, then each command's (`xero-auth-client-set`), with its roff:
/// the pages clap_mangen writes, under the names it gives their files.
pub fn pages() -> Vec<(String, Vec<u8>)> {
    fn walk(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut roff = Vec::new();
        man.render(&mut roff).expect("rendering to memory");
        let name = man.get_filename().trim_end_matches(".1").to_string();
        pages.push((name, roff));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, pages);
        }
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building gives each subcommand the display name its page is named by.
    cmd.build();
    let mut pages = Vec::new();
    walk(&cmd, &mut pages);
    pages
}
