//! Writes the man pages — `xero-auth.1` and one `xero-auth-COMMAND.1` per subcommand — into a
//! folder (default `man/`). `scripts/man` runs it.
//!
//! An example rather than a hidden `xero-auth man` command: clap_mangen is then a
//! dev-dependency, so the shipped binary carries no roff generator, while the pages are still
//! generated from the same command-line definition the binary parses (tests/completions_man.rs
//! checks both).

use std::path::PathBuf;

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("man"));
    std::fs::create_dir_all(&dir)?;
    clap_mangen::generate_to(xero_auth::cli::Cli::command(), &dir)?;
    let mut pages: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n.to_string_lossy().ends_with(".1"))
        .collect();
    pages.sort();
    for page in pages {
        println!("{}", dir.join(page).display());
    }
    Ok(())
}
