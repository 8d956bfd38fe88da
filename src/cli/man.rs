//! `xero-auth man [PAGE]`: the man pages, generated from the command-line definition this binary
//! parses, so an installed binary (`cargo install`) has them without a source checkout.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Subcommand};

use super::{Cli, Context};
use crate::error::{Error, Result};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_help = "Examples:
  xero-auth man token | man -l -                   # read one page
  xero-auth man install                            # install them all, then: man xero-auth-token
  xero-auth man --out DIR                          # write them all into DIR")]
/// Arguments of `xero-auth man`.
pub struct ManArgs {
    /// `install`, or none to print, list or write pages.
    #[command(subcommand)]
    pub action: Option<ManCommand>,
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

/// What `xero-auth man` does besides printing pages.
#[derive(Debug, Subcommand)]
pub enum ManCommand {
    /// Write every page into the user's man folder, ~/.local/share/man/man1
    /// ($XDG_DATA_HOME/man/man1), where `man` finds them without root; prints their paths.
    Install,
}

/// Prints one page's roff, lists the pages, or writes them all.
pub async fn run(args: ManArgs, ctx: &Context) -> Result<()> {
    let pages = pages();
    if let Some(ManCommand::Install) = args.action {
        let data = user_dir(ctx, "XDG_DATA_HOME", ".local/share")?;
        let dir = data.join("man").join("man1");
        write_pages(&pages, &dir, ctx)?;
        if !man_finds(ctx, &data) {
            eprintln!(
                "note: man reads {} when {} is on PATH; otherwise add \
                 `export MANPATH=\"{}:\"` to your shell's profile",
                data.join("man").display(),
                home(ctx)?.join(".local/bin").display(),
                data.join("man").display(),
            );
        }
        return Ok(());
    }
    if args.list {
        let names: String = pages.iter().map(|(name, _)| format!("{name}\n")).collect();
        return ctx.write_out(names.as_bytes());
    }
    if let Some(dir) = args.out {
        return write_pages(&pages, &dir, ctx);
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

/// Writes every page into `dir` as NAME.1 (creating `dir`), and prints their paths.
fn write_pages(pages: &[(String, Vec<u8>)], dir: &Path, ctx: &Context) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let mut written = String::new();
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).map_err(|e| Error::io("cannot write", &path, e))?;
        written.push_str(&format!("{}\n", path.display()));
    }
    ctx.write_out(written.as_bytes())
}

/// Whether man (man-db) reads `data`/man without being told: it does for each folder of
/// MANPATH, and for the `share/man` beside each `bin` folder on PATH.
fn man_finds(ctx: &Context, data: &Path) -> bool {
    let man = data.join("man");
    let on = |var: &str, wanted: &Path| {
        (ctx.env)(var).is_some_and(|list| std::env::split_paths(&list).any(|p| p == wanted))
    };
    on("MANPATH", &man) || data.parent().is_some_and(|prefix| on("PATH", &prefix.join("bin")))
}

/// The user's home folder, from HOME.
pub(super) fn home(ctx: &Context) -> Result<PathBuf> {
    (ctx.env)("HOME")
        .map(PathBuf::from)
        .filter(|home| home.is_absolute())
        .ok_or_else(|| {
            Error::InvalidInput(
                "HOME is not set to an absolute path, so there is no user folder to install \
                 into; set HOME, or write the files yourself (`xero-auth man --out DIR`, \
                 `xero-auth completions SHELL > FILE`)"
                    .into(),
            )
        })
}

/// A folder of the user's: `$VAR` when it is an absolute path (the XDG base directories),
/// otherwise `fallback` under HOME.
pub(super) fn user_dir(ctx: &Context, var: &str, fallback: &str) -> Result<PathBuf> {
    match (ctx.env)(var).filter(|dir| Path::new(dir).is_absolute()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(home(ctx)?.join(fallback)),
    }
}

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
        with_sections(&mut roff, &common_sections());
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

/// Inserts `sections` (roff) into `page` before its VERSION section, where man pages keep
/// these, or at its end when it has none.
fn with_sections(page: &mut Vec<u8>, sections: &str) {
    let at = page
        .windows(b"\n.SH VERSION".len())
        .position(|w| w == b"\n.SH VERSION")
        .map_or(page.len(), |i| i + 1);
    page.splice(at..at, sections.bytes());
}

/// The sections every page carries: what a script needs to know of any command (its exit
/// status), and what changes where the commands look (the environment, the files).
fn common_sections() -> String {
    use crate::error::ExitCode;
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in ExitCode::MEANINGS {
        roff.push_str(&format!(".TP\n{}\n{}\n", code as u8, escaped(meaning)));
    }
    roff.push_str(".SH ENVIRONMENT\n");
    for (name, meaning) in ENVIRONMENT {
        roff.push_str(&format!(".TP\n\\fB{name}\\fR\n{}\n", escaped(meaning)));
    }
    roff.push_str(".SH FILES\n");
    for (name, meaning) in FILES {
        roff.push_str(&format!(
            ".TP\n\\fI{}\\fR\n{}\n",
            escaped(name),
            escaped(meaning)
        ));
    }
    roff
}

/// Text as roff reads it literally: backslashes and hyphens escaped, and no line that starts
/// with a control character.
fn escaped(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    match text.chars().next() {
        Some('.' | '\'') => format!("\\&{text}"),
        _ => text,
    }
}

/// The variables the commands read (docs/configuration.md has every one).
const ENVIRONMENT: [(&str, &str); 12] = [
    (
        "XERO_AUTH_PROFILE",
        "the profile, when --profile is not given (default: default)",
    ),
    (
        "XERO_AUTH_STORE",
        "the secret store for this run, instead of the profile's store",
    ),
    (
        "XERO_CLIENT_SECRET",
        "the client secret for client set, instead of a prompt",
    ),
    (
        "XERO_AUTH_PASSPHRASE, XERO_AUTH_PASSPHRASE_FILE",
        "the encrypted-file store's passphrase, or a file whose first line is it",
    ),
    (
        "XERO_AUTH_CONFIG_DIR, XERO_AUTH_STATE_DIR, XERO_AUTH_DATA_DIR",
        "move the folders below (absolute paths only)",
    ),
    (
        "XERO_AUTH_AUTHORIZE_URL, XERO_AUTH_TOKEN_URL, XERO_AUTH_REVOCATION_URL, \
         XERO_AUTH_CONNECTIONS_URL, XERO_AUTH_API_URL",
        "override one endpoint (https, or http on loopback only)",
    ),
    (
        "XERO_AUTH_HTTP_TIMEOUT, XERO_AUTH_STORE_TIMEOUT",
        "seconds per request, per store call",
    ),
    (
        "XERO_AUTH_VAULT_ADDR and the other XERO_AUTH_VAULT_* variables",
        "override the profile's vault_* keys; Vault's own VAULT_ADDR, VAULT_NAMESPACE, \
         VAULT_CACERT, VAULT_TOKEN and VAULT_SECRET_ID are read too",
    ),
    (
        "XERO_AUTH_LIMITS, XERO_AUTH_LIMIT_WINDOW",
        "the API rate limits: off or on, the window",
    ),
    (
        "XERO_ACCESS_TOKEN, XERO_TENANT_ID",
        "set by exec for its command (and by token --env): the access token, the tenant",
    ),
    (
        "XERO_AUTH_ENDPOINT, XERO_AUTH_ENDPOINT_KEY",
        "set by exec --server for its command: its token endpoint's URL and key",
    ),
    (
        "RUST_LOG",
        "what -v logs, in tracing's filter syntax; secrets are never logged",
    ),
];

/// The files and folders, with Linux's default places (others: docs/configuration.md).
const FILES: [(&str, &str); 6] = [
    (
        "~/.config/xero-auth/config.toml",
        "the profiles and their settings, no secrets ($XDG_CONFIG_HOME, XERO_AUTH_CONFIG_DIR)",
    ),
    (
        "~/.local/state/xero-auth/locks/",
        "the refresh locks, one a profile ($XDG_STATE_HOME, XERO_AUTH_STATE_DIR)",
    ),
    (
        "~/.local/state/xero-auth/moves/PROFILE.json",
        "the note of a store move cut short, until it is finished",
    ),
    (
        "~/.local/state/xero-auth/limits/",
        "the API limit slots and ledger (tenant ids, times, counts)",
    ),
    (
        "~/.local/state/xero-auth/tenants/PROFILE.json",
        "the organisations' names as Xero last listed them, for status",
    ),
    (
        "~/.local/share/xero-auth/secrets/",
        "the encrypted-file store, used only when named ($XDG_DATA_HOME, XERO_AUTH_DATA_DIR)",
    ),
];
