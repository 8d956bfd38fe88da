//! Where the file store's passphrase comes from: `XERO_AUTH_PASSPHRASE` (taken from the
//! environment at start-up), a file, a systemd credential, or a no-echo prompt on the terminal;
//! and a new passphrase, asked twice.

use super::*;

/// The environment variable that carries the passphrase.
pub const PASSPHRASE_ENV: &str = "XERO_AUTH_PASSPHRASE";
/// A file whose first line is the passphrase (a secret manager's mount, a root-owned `0400`
/// file for a cron job); read when [`PASSPHRASE_ENV`] is not set.
pub const PASSPHRASE_FILE_ENV: &str = "XERO_AUTH_PASSPHRASE_FILE";
/// The name of the passphrase among systemd's credentials (`LoadCredential=xero-auth-passphrase:…`,
/// found in `$CREDENTIALS_DIRECTORY`); read when neither variable above is set.
pub const PASSPHRASE_CREDENTIAL: &str = "xero-auth-passphrase";
/// The longest passphrase file read.
const MAX_PASSPHRASE_FILE: usize = 4096;

/// The passphrase `XERO_AUTH_PASSPHRASE` held at start-up, taken by [`take_passphrase_from_env`].
static TAKEN: Mutex<Option<SecretString>> = Mutex::new(None);

/// For the command-line tool, first thing in `main`: moves `XERO_AUTH_PASSPHRASE` out of the
/// environment into memory that is wiped, wipes the variable's bytes in the environment block
/// and removes the variable, so no child process (`exec`'s command, the browser `login` opens)
/// inherits it.
///
/// # Safety
/// Changes the process environment: call it before any other thread exists.
pub unsafe fn take_passphrase_from_env() {
    let Some(value) = std::env::var_os(PASSPHRASE_ENV) else {
        return;
    };
    let value = Zeroizing::new(value.into_string().unwrap_or_default());
    if !value.is_empty() {
        *TAKEN.lock().unwrap_or_else(|p| p.into_inner()) = Some(SecretString::from(value.as_str()));
    }
    crate::hardening::wipe_env_value(PASSPHRASE_ENV);
    // SAFETY: the caller guarantees no other thread reads or writes the environment.
    unsafe { std::env::remove_var(PASSPHRASE_ENV) };
}

/// Wipes the passphrase [`take_passphrase_from_env`] took: a static is never dropped, so the
/// tool calls this before it exits.
pub fn forget_passphrase() {
    TAKEN.lock().unwrap_or_else(|p| p.into_inner()).take();
}

/// How to stop needing the passphrase, where the key can be kept.
#[cfg(target_os = "linux")]
const UNLOCK_HINT: &str = "; or unlock the store once with `xero-auth unlock` in a terminal, \
    which keeps its key in the kernel for file_unlock_ttl";
#[cfg(not(target_os = "linux"))]
const UNLOCK_HINT: &str = "";

/// Where the tool gets the passphrase: what [`take_passphrase_from_env`] took, else
/// `XERO_AUTH_PASSPHRASE` (a program linking the library), else a no-echo prompt when stderr is
/// a terminal (asked twice for a new store), else an error that says what to set.
pub fn env_or_terminal(root: PathBuf) -> PassphraseSource {
    Box::new(move |new_store| {
        if let Some((given, _)) = given_passphrase()? {
            return Ok(given);
        }
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Err(StoreFailure {
                cause: format!(
                    "the file store ({}) needs its passphrase, and there is no terminal to ask on",
                    root.display()
                ),
                fix: format!(
                    "set {PASSPHRASE_ENV} in the environment (from a secret manager or the CI's \
                     secret variables, never on a command line), or {PASSPHRASE_FILE_ENV} to a \
                     file only you can read, or give a systemd unit \
                     LoadCredential={PASSPHRASE_CREDENTIAL}:FILE; or run the command in a \
                     terminal{UNLOCK_HINT}"
                ),
            });
        }
        prompt(&root, new_store)
    })
}

/// The passphrase given without asking anyone, and where it came from (for messages): what
/// [`take_passphrase_from_env`] took, else `XERO_AUTH_PASSPHRASE` (a program linking the
/// library), else the file `XERO_AUTH_PASSPHRASE_FILE` names, else systemd's credential
/// `xero-auth-passphrase`.
pub(super) fn given_passphrase() -> Result<Option<(SecretString, String)>, StoreFailure> {
    if let Some(taken) = TAKEN.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return Ok(Some((taken.clone(), PASSPHRASE_ENV.into())));
    }
    if let Some(value) = std::env::var_os(PASSPHRASE_ENV).filter(|v| !v.is_empty()) {
        let value = Zeroizing::new(value.into_string().map_err(|_| StoreFailure {
            cause: format!("{PASSPHRASE_ENV} is not valid UTF-8"),
            fix: "give the passphrase as UTF-8 text".into(),
        })?);
        return Ok(Some((
            SecretString::from(value.as_str()),
            PASSPHRASE_ENV.into(),
        )));
    }
    if let Some(path) = std::env::var_os(PASSPHRASE_FILE_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        let passphrase = passphrase_from_file(&path, PASSPHRASE_FILE_ENV)?;
        return Ok(Some((
            passphrase,
            format!("{PASSPHRASE_FILE_ENV} ({})", path.display()),
        )));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|v| !v.is_empty()) {
        let path = Path::new(&dir).join(PASSPHRASE_CREDENTIAL);
        if path.exists() {
            let passphrase = passphrase_from_file(&path, "the systemd credential")?;
            return Ok(Some((
                passphrase,
                format!("the systemd credential {PASSPHRASE_CREDENTIAL}"),
            )));
        }
    }
    Ok(None)
}

/// The first line of `path` (without its line ending), read into wiping memory. Refused when
/// the file is not a regular file of the user's or others may read it (the passphrase would be
/// theirs too), when it is empty, too long or not UTF-8; `what` names where the path came from.
fn passphrase_from_file(path: &Path, what: &str) -> Result<SecretString, StoreFailure> {
    let refuse = |cause: String, fix: &str| StoreFailure {
        cause: format!("{what}: {} {cause}", path.display()),
        fix: fix.into(),
    };
    // The one check of private_fs: a plain file (a link only when the user's), the user's, and
    // no one else can read or change it. Refused here as an unusable store (exit 5, as for every
    // problem with the passphrase), naming the file.
    let read = private_fs::read_file(
        path,
        FileKind::Secret,
        MAX_PASSPHRASE_FILE,
        "give the path of a file that holds the passphrase",
    );
    let bytes = match read {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return Err(refuse(
                "does not exist".into(),
                "give the path of a file that holds the passphrase",
            ));
        }
        Err(Error::Untrusted { why, .. }) => {
            return Err(refuse(
                format!("was not used: {why}"),
                &format!("`chmod 600 {}` (or 400), as your own file", path.display()),
            ));
        }
        Err(Error::InvalidInput(_)) => {
            return Err(refuse(
                format!("is longer than {MAX_PASSPHRASE_FILE} bytes"),
                "put the passphrase alone on the file's first line",
            ));
        }
        Err(e) => return Err(refuse(format!("cannot be read ({e})"), "check the file")),
    };
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let text = std::str::from_utf8(first).map_err(|_| {
        refuse(
            "is not UTF-8 text".into(),
            "give the passphrase as UTF-8 text",
        )
    })?;
    if text.is_empty() {
        return Err(refuse(
            "has no passphrase on its first line".into(),
            "put the passphrase alone on the file's first line",
        ));
    }
    Ok(SecretString::from(text))
}

/// The new passphrase for `xero-auth store passphrase`: the first line of `file` (checked as
/// `XERO_AUTH_PASSPHRASE_FILE` is), else asked twice on the terminal.
pub fn new_passphrase(root: &Path, file: Option<&Path>) -> Result<SecretString, StoreFailure> {
    if let Some(file) = file {
        return passphrase_from_file(file, "--new-passphrase-file");
    }
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return Err(StoreFailure::mistyped(
            "there is no terminal to ask for the new passphrase on: give it with \
             --new-passphrase-file FILE (a file only you can read)",
        ));
    }
    prompt(root, true)
}

fn prompt(root: &Path, new_store: bool) -> Result<SecretString, StoreFailure> {
    let read = |text: &str| {
        rpassword::prompt_password(text)
            .map(Zeroizing::new)
            .map_err(|e| StoreFailure {
                cause: format!("cannot read the passphrase from the terminal ({e})"),
                fix: format!("set {PASSPHRASE_ENV} instead"),
            })
    };
    if !new_store {
        let typed = read(&format!(
            "Passphrase of the xero-auth file store ({}): ",
            root.display()
        ))?;
        return Ok(SecretString::from(typed.as_str()));
    }
    let first = read(&format!(
        "New passphrase for the xero-auth file store ({}): ",
        root.display()
    ))?;
    let again = read("The same passphrase again: ")?;
    if *first != *again {
        return Err(StoreFailure::mistyped(
            "the two passphrases differ; nothing was written: run the command again and type \
             the same new passphrase twice",
        ));
    }
    Ok(SecretString::from(first.as_str()))
}
