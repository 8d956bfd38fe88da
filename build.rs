//! Gives the crate the commit it is built from (`XERO_AUTH_COMMIT`, which `xero-auth --version`
//! prints): `unknown` when it is not built from a git checkout of its own (a crate downloaded
//! by `cargo install`, a source package), or when git is not installed.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let commit = commit(Path::new(&dir)).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=XERO_AUTH_COMMIT={commit}");
}

/// The checked-out commit's short id, and build again when it changes; `None` outside a
/// checkout whose top folder is the crate's (a crate unpacked inside another project's
/// repository must not take that project's commit).
fn commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    // HEAD moves on a checkout or a commit: HEAD itself, the branch it names, and the packed
    // refs, where a branch's commit is kept after `git gc`.
    for name in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            watch(&dir.join(path));
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &branch])
    {
        watch(&dir.join(path));
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}

/// Runs this script again when `path` changes; a file that does not exist is not watched (cargo
/// would take it as changed on every build, and rebuild the crate each time).
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
