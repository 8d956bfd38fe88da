//! One rule, in one place, for every file and folder that decides where secrets go or what is
//! stored: the configuration (its endpoints say where the client secret and the refresh token are
//! sent), the state folder (refresh locks and their notes, store moves, rate-limit ledgers), the
//! data folder (the encrypted-file store), and the files a profile names that hold a secret or
//! decide whom to trust (the passphrase file, AppRole's secret id file, Vault's CA certificate).
//!
//! - **Folders of xero-auth's own** (the config, state and data folders and what is under them)
//!   are the user's alone. One of the user's that others can read or write is tightened to
//!   `0700`; one that another user owns, or that is a link another user made, is refused (exit 1),
//!   naming it.
//! - **The folders above them**, and above every file read here, cannot be changed by another
//!   user: each belongs to the user or to root and no one else can write it, unless it is sticky
//!   (`/tmp`: there only an entry's owner can rename or remove it). A folder above that others can
//!   write is refused, not changed: it is not xero-auth's to change. A group that holds the user
//!   alone (Debian's user private groups, where `umask 002` makes folders group-writable) counts as
//!   the user.
//! - **Links** on the way are followed only when they are the user's (or root's): another user's
//!   link can be turned elsewhere at any moment. Files xero-auth creates are never opened through a
//!   link (`O_NOFOLLOW`, or created new).
//! - **A file read** is a plain file of the user's (or root's) that no one else can write; a file
//!   that holds a secret no one else can read either. The checks are made on the open file, so what
//!   was checked is what is read.
//! - **A file written** is created new under a name no one else can have made (a random temporary
//!   name, `O_EXCL`), written, synced, then renamed over the old one, and the folder synced: a
//!   crash leaves the old file or the new one, never a part of either.
//!
//! On Windows these checks are not made (a profile's folders there are the user's by their ACL,
//! which xero-auth does not read); docs/security.md says so.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::secret::Zeroizing;

/// What the check found about a folder or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Safe as it is.
    Private,
    /// One of xero-auth's own folders that is the user's but open to others (its mode): the next
    /// command that uses it makes it `0700`.
    #[cfg_attr(not(unix), allow(dead_code, reason = "modes are Unix's"))]
    Loose(u32),
    /// Another user could change it or what it leads to: refused. Says why.
    Refused(String),
}

/// What a file read with [`read_file`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A file in one of xero-auth's own folders (its folder is made private first).
    Own,
    /// A file a profile or a variable names, which decides whom to trust (a CA certificate): no
    /// one else may change it.
    Named,
    /// A file a profile or a variable names that holds a secret (a passphrase, a secret id): no
    /// one else may change it or read it.
    Secret,
}

/// The user this process runs as.
#[cfg(unix)]
fn me() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `uid` may own what xero-auth trusts: the user, or root (who can change anything
/// anyway).
#[cfg(unix)]
fn trusted_owner(uid: u32) -> bool {
    uid == me() || uid == 0
}

/// Whether group `gid` holds the user alone: the user's primary group, named as the user is, that
/// lists no other member (a user private group, as Debian and Fedora make them).
#[cfg(unix)]
fn group_is_only_mine(gid: u32) -> bool {
    // SAFETY: getegid has no preconditions and cannot fail.
    if gid != unsafe { libc::getegid() } {
        return false;
    }
    let (Some(user), Some((group, members))) = (user_name(me()), group_entry(gid)) else {
        return false;
    };
    group == user && members.iter().all(|m| *m == user)
}

/// The name of user `uid`, from the system's user database.
#[cfg(unix)]
fn user_name(uid: u32) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf's length is given.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points at a NUL-terminated string inside buf.
    Some(
        unsafe { std::ffi::CStr::from_ptr(entry.pw_name) }
            .to_bytes()
            .to_vec(),
    )
}

/// The name and the listed members of group `gid`, from the system's group database.
#[cfg(unix)]
fn group_entry(gid: u32) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: an all-zero group is a valid value for getgrgid_r to fill.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf's length is given.
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            &mut entry,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || entry.gr_name.is_null() {
        return None;
    }
    // SAFETY: getgrgid_r succeeded: gr_name is a NUL-terminated string and gr_mem a
    // NULL-terminated array of them, all inside buf.
    unsafe {
        let name = std::ffi::CStr::from_ptr(entry.gr_name).to_bytes().to_vec();
        let mut members = Vec::new();
        let mut at = entry.gr_mem;
        while !at.is_null() && !(*at).is_null() {
            members.push(std::ffi::CStr::from_ptr(*at).to_bytes().to_vec());
            at = at.add(1);
        }
        Some((name, members))
    }
}

/// Why others can change a folder whose metadata is `meta`, or `None` when they cannot. A sticky
/// folder (`/tmp`) lets others add entries but not rename or remove the user's.
#[cfg(unix)]
fn others_can_write(meta: &Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    if !trusted_owner(meta.uid()) {
        return Some(format!("it belongs to user id {}, not to you", meta.uid()));
    }
    if meta.is_dir() && mode & 0o1000 != 0 {
        return None;
    }
    if mode & 0o002 != 0 {
        return Some(format!("every user can write in it (mode {mode:04o})"));
    }
    if mode & 0o020 != 0 && !group_is_only_mine(meta.gid()) {
        return Some(format!(
            "the users of group id {} can write in it (mode {mode:04o})",
            meta.gid()
        ));
    }
    None
}

/// How deep links may lead to links before the path is refused.
#[cfg(unix)]
const MAX_LINKS: u8 = 16;

/// Checks every folder above `path` (not `path` itself): none can be changed by another user, and
/// every link on the way is the user's or root's. Parts that do not exist yet end the walk: they
/// will be made by the user. `Err` says which folder and why.
#[cfg(unix)]
fn check_above(path: &Path) -> std::result::Result<(), String> {
    // A relative path (a passphrase file named from the working folder) is walked from the
    // root like any other: the folders above the working folder count too.
    let path = std::path::absolute(path)
        .map_err(|e| format!("{} cannot be made absolute ({e})", path.display()))?;
    check_above_at(&path, MAX_LINKS)
}

#[cfg(unix)]
fn check_above_at(path: &Path, links_left: u8) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Component, PathBuf};
    let parts: Vec<Component> = path.components().collect();
    let Some((_, above)) = parts.split_last() else {
        return Ok(());
    };
    let mut at = PathBuf::new();
    for part in above {
        match part {
            Component::ParentDir => {
                at.pop();
                continue;
            }
            Component::CurDir => continue,
            _ => at.push(part),
        }
        let meta = match std::fs::symlink_metadata(&at) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{} cannot be read ({e})", at.display())),
        };
        if meta.file_type().is_symlink() {
            if !trusted_owner(meta.uid()) {
                return Err(format!(
                    "{} is a link made by user id {}, who can point it elsewhere at any time",
                    at.display(),
                    meta.uid()
                ));
            }
            if links_left == 0 {
                return Err(format!("{} leads through too many links", at.display()));
            }
            let target = match std::fs::canonicalize(&at) {
                Ok(target) => target,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(format!("{} cannot be followed ({e})", at.display())),
            };
            // The folder the link leads to is passed through too: check it and what is above.
            check_above_at(&target.join("x"), links_left - 1)?;
            at = target;
            continue;
        }
        if let Some(why) = others_can_write(&meta) {
            return Err(format!("{}: {why}", at.display()));
        }
    }
    Ok(())
}

/// What the check finds about `dir`, one of xero-auth's own folders, without changing anything:
/// the folders above it, then the folder itself. A folder that does not exist is
/// [`Access::Private`] when what is above it is safe (it will be made `0700`).
pub fn inspect_folder(dir: &Path) -> Access {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Err(why) = check_above(dir) {
            return Access::Refused(why);
        }
        let link = match std::fs::symlink_metadata(dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Access::Private,
            Err(e) => return Access::Refused(format!("it cannot be read ({e})")),
        };
        if link.file_type().is_symlink() && !trusted_owner(link.uid()) {
            return Access::Refused(format!(
                "it is a link made by user id {}, who can point it elsewhere at any time",
                link.uid()
            ));
        }
        let meta = match std::fs::metadata(dir) {
            Ok(meta) => meta,
            Err(e) => return Access::Refused(format!("it cannot be read ({e})")),
        };
        if link.file_type().is_symlink()
            && let Ok(target) = std::fs::canonicalize(dir)
            && let Err(why) = check_above(&target)
        {
            return Access::Refused(why);
        }
        let mode = meta.mode() & 0o7777;
        if !meta.is_dir() {
            Access::Refused("it is not a folder".into())
        } else if meta.uid() == me() {
            if mode & 0o077 == 0 {
                Access::Private
            } else {
                Access::Loose(mode)
            }
        } else if meta.uid() != 0 {
            Access::Refused(format!("it belongs to user id {}, not to you", meta.uid()))
        } else if mode & 0o022 != 0 {
            Access::Refused(format!(
                "other users can write in it (mode {mode:04o}, owner root)"
            ))
        } else {
            // root's and closed to others: root can change anything anyway.
            Access::Private
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Access::Private
    }
}

/// The error for a path the check refused.
fn refused(path: &Path, why: &str, fix: &str) -> Error {
    Error::Untrusted {
        path: path.to_path_buf(),
        why: why.to_string(),
        fix: fix.to_string(),
    }
}

/// The fix for a refused folder of xero-auth's own.
const FOLDER_FIX: &str = "make it and the folders above it yours and closed to others (`chmod \
                          go-w` on a folder above), or point XERO_AUTH_CONFIG_DIR, \
                          XERO_AUTH_STATE_DIR or XERO_AUTH_DATA_DIR at a folder only you can write";

/// Makes `dir`, one of xero-auth's own folders (which exists), the user's alone: a loose one of
/// the user's is tightened to `0700`; one another user could change is refused (exit 1), naming
/// it and what to do.
fn secure_folder(dir: &Path) -> Result<()> {
    match inspect_folder(dir) {
        Access::Private => Ok(()),
        Access::Loose(_mode) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io("cannot restrict the permissions of", dir, e))?;
            }
            Ok(())
        }
        Access::Refused(why) => Err(refused(dir, &why, FOLDER_FIX)),
    }
}

/// Creates `dir`, one of xero-auth's own folders, and the folders above it that are missing
/// (`0700`), then makes it the user's alone (see `secure_folder`). The folders above must already
/// be safe: they are checked before anything is made.
pub fn private_folder(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    if let Err(why) = check_above(dir) {
        return Err(refused(dir, &why, FOLDER_FIX));
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| Error::io("cannot create the folder", dir, e))?;
    secure_folder(dir)
}

/// [`private_folder`] for `sub`, a folder inside `root` (both xero-auth's own), and for each
/// folder from `root` down to it, in that order: a loose `root` is tightened before anything is
/// made in it.
pub fn private_folder_in(root: &Path, sub: &Path) -> Result<()> {
    private_folder(root)?;
    let mut at = root.to_path_buf();
    for part in sub.strip_prefix(root).unwrap_or(Path::new("")).components() {
        at.push(part);
        private_folder(&at)?;
    }
    Ok(())
}

/// Whether `dir`, one of xero-auth's own folders, exists, after making it the user's alone when it
/// does (see `secure_folder`): for readers, which create nothing.
pub fn existing_private_folder(dir: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // Nothing to read; what is above is still checked, so a refusal is not put off
            // until the first write.
            #[cfg(unix)]
            if let Err(why) = check_above(dir) {
                return Err(refused(dir, &why, FOLDER_FIX));
            }
            Ok(false)
        }
        _ => secure_folder(dir).map(|()| true),
    }
}

/// Why the open file whose metadata is `meta` cannot be used as `kind`, if it cannot.
fn file_problem(meta: &Metadata, kind: FileKind) -> Option<String> {
    if !meta.is_file() {
        return Some("it is not a plain file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o7777;
        if !trusted_owner(meta.uid()) {
            return Some(format!("it belongs to user id {}, not to you", meta.uid()));
        }
        if kind == FileKind::Secret && mode & 0o077 != 0 {
            return Some(format!("other users can read it (mode {mode:04o})"));
        }
        if mode & 0o002 != 0 || (mode & 0o020 != 0 && !group_is_only_mine(meta.gid())) {
            return Some(format!("other users can change it (mode {mode:04o})"));
        }
    }
    #[cfg(not(unix))]
    let _ = kind;
    None
}

/// What the check finds about the file `path` read as `kind` (for `doctor`): `None` when there is
/// none.
pub fn inspect_file(path: &Path, kind: FileKind) -> Option<Access> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => return Some(Access::Refused(format!("it cannot be read ({e})"))),
        Ok(_) => {}
    }
    Some(match open_checked(path, kind) {
        Ok(_) => Access::Private,
        Err(Refusal::Unsafe(why)) => Access::Refused(why),
        Err(Refusal::Io(e)) => Access::Refused(format!("it cannot be read ({e})")),
    })
}

/// Why [`open_checked`] did not give a file.
enum Refusal {
    Unsafe(String),
    Io(std::io::Error),
}

/// Opens `path` for reading after the checks for `kind`: the folders above it, a link only when
/// the user's, and the open file itself.
fn open_checked(path: &Path, kind: FileKind) -> std::result::Result<File, Refusal> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        check_above(path).map_err(Refusal::Unsafe)?;
        let link = std::fs::symlink_metadata(path).map_err(Refusal::Io)?;
        let mut options = OpenOptions::new();
        options.read(true);
        if link.file_type().is_symlink() {
            if !trusted_owner(link.uid()) {
                return Err(Refusal::Unsafe(format!(
                    "it is a link made by user id {}, who can point it elsewhere at any time",
                    link.uid()
                )));
            }
            let target = std::fs::canonicalize(path).map_err(Refusal::Io)?;
            check_above(&target).map_err(Refusal::Unsafe)?;
        } else {
            // What was checked is what is opened: a link put there since is not followed.
            options.custom_flags(libc::O_NOFOLLOW);
        }
        let file = options.open(path).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                Refusal::Unsafe("it was replaced by a link while it was being opened".into())
            }
            _ => Refusal::Io(e),
        })?;
        let meta = file.metadata().map_err(Refusal::Io)?;
        if let Some(why) = file_problem(&meta, kind) {
            return Err(Refusal::Unsafe(why));
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        let file = File::open(path).map_err(Refusal::Io)?;
        let meta = file.metadata().map_err(Refusal::Io)?;
        if let Some(why) = file_problem(&meta, kind) {
            return Err(Refusal::Unsafe(why));
        }
        Ok(file)
    }
}

/// Opens the file `path` for reading as `kind` after the check ([`read_file`] without the read):
/// `Ok(None)` when there is no such file; a file that fails the check is refused (exit 1), naming
/// it, why, and `fix`.
pub fn open_file(path: &Path, kind: FileKind, fix: &str) -> Result<Option<File>> {
    match open_checked(path, kind) {
        Ok(file) => Ok(Some(file)),
        Err(Refusal::Io(e)) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(Refusal::Io(e)) => Err(Error::io("cannot read", path, e)),
        Err(Refusal::Unsafe(why)) => Err(refused(path, &why, fix)),
    }
}

/// Reads the file `path` as `kind`, at most `max` bytes, into wiping memory; `Ok(None)` when there
/// is no such file. A file of xero-auth's own has its folder made private first. A file that fails
/// the check is refused (exit 1), naming it, why, and `fix`; a longer one is refused too.
pub fn read_file(
    path: &Path,
    kind: FileKind,
    max: usize,
    fix: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    if kind == FileKind::Own
        && let Some(dir) = path.parent()
        && !existing_private_folder(dir)?
    {
        return Ok(None);
    }
    let Some(mut file) = open_file(path, kind, fix)? else {
        return Ok(None);
    };
    let too_long = || {
        Error::InvalidInput(format!(
            "{} is longer than {max} bytes; it was not used. Check that it is the file you meant",
            path.display()
        ))
    };
    // The buffer is the file's size (one wiping buffer, never grown), not `max`: a limit of
    // megabytes must not cost megabytes on every read of a small file.
    let len = file
        .metadata()
        .map_err(|e| Error::io("cannot read", path, e))?
        .len();
    let Some(len) = usize::try_from(len).ok().filter(|len| *len <= max) else {
        return Err(too_long());
    };
    match crate::secret::read_bounded(&mut file, len) {
        Ok(Some(bytes)) => Ok(Some(bytes)),
        // Longer than its size a moment ago: it is being written; the next run reads it whole.
        Ok(None) => Err(Error::InvalidInput(format!(
            "{} changed while it was read; nothing was done: run the command again",
            path.display()
        ))),
        Err(e) => Err(Error::io("cannot read", path, e)),
    }
}

/// Replaces `path` with `bytes` atomically: a new temporary file (`0600`, a random name created
/// with `O_EXCL`, so nothing already there is written through) in the same folder, synced, then
/// renamed over `path`, and the folder synced. A process that dies at any point leaves the old file
/// or the new one, never a part of either. The folder must exist (and be private: callers make it
/// so with [`private_folder`]).
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, true, None)
}

/// Where a write stops in the crash tests (`failpoints`; ARCHITECTURE.md, "Crash points").
pub struct WritePoints {
    /// Half of the new content is in the temporary file; the old file is untouched.
    pub half_written: &'static str,
    /// The temporary file is complete and synced, not yet renamed over the old one.
    pub synced: &'static str,
}

/// [`replace_file`] for a file whose writers a lock the caller holds serialises (the file
/// store's files, under the profile's guard): what a writer that died mid-write left beside it
/// (its temporary files) is removed first, and the write stops at `points` in the crash tests.
/// Without such a lock a leftover could be another writer's file in progress.
pub fn replace_locked_file(path: &Path, bytes: &[u8], points: &WritePoints) -> std::io::Result<()> {
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        remove_leftovers(dir, &name.to_string_lossy());
    }
    replace(path, bytes, true, Some(points))
}

/// Removes the temporary files of `name` in `dir` that a writer which died mid-write left.
fn remove_leftovers(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// [`replace_file`] without syncing the file or its folder, for a file that only caches what can
/// be learnt again (the rate-limit ledger, written after every API call): a crash still leaves
/// the old file or the new one, and after a power loss at worst an empty one, read as none.
pub fn replace_cache_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, false, None)
}

fn replace(
    path: &Path,
    bytes: &[u8],
    sync: bool,
    points: Option<&WritePoints>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut attempts = 0;
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(
            ".{name}.{}-{:08x}.tmp",
            std::process::id(),
            random_u32()
        ));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        match options.open(&tmp) {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => return Err(e),
        }
    };
    let written = (|| {
        match points {
            Some(points) => {
                let (first, rest) = bytes.split_at(bytes.len() / 2);
                file.write_all(first)?;
                crate::failpoints::crash_point(points.half_written);
                file.write_all(rest)?;
            }
            None => file.write_all(bytes)?,
        }
        if sync {
            file.sync_all()?;
        }
        if let Some(points) = points {
            crate::failpoints::crash_point(points.synced);
        }
        std::fs::rename(&tmp, path)
    })();
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if sync {
        sync_folder(dir);
    }
    Ok(())
}

/// Opens (creating it `0600`) the file `path`, which is only ever locked and holds short notes,
/// without following a link, and checks that it is a plain file of the user's. Its folder must be
/// private ([`private_folder`]).
pub fn open_lock_file(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        /// Opens a link itself rather than what it points to (winbase.h).
        const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
        options.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    }
    let not_plain = |what: &str| {
        Error::InvalidInput(format!(
            "the lock file {} {what}; xero-auth did not use it (it truncates and rewrites its \
             lock files). Nothing was done; if you did not put it there, another program or user \
             did: remove it and run the command again",
            path.display()
        ))
    };
    let file = match options.open(path) {
        Ok(file) => file,
        // ELOOP: the last part of the path is a symbolic link.
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_plain("is a symbolic link"));
        }
        Err(e) => return Err(Error::io("cannot open the lock file", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot read the lock file", path, e))?;
    if meta.file_type().is_symlink() {
        return Err(not_plain("is a symbolic link"));
    }
    if !meta.is_file() {
        return Err(not_plain("is not a plain file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != me() {
            return Err(not_plain(&format!(
                "belongs to user id {}, not to you",
                meta.uid()
            )));
        }
    }
    Ok(file)
}

/// Syncs a folder, so that a rename in it survives a power loss. Best effort.
pub fn sync_folder(dir: &Path) {
    #[cfg(unix)]
    if let Ok(folder) = File::open(dir) {
        let _ = folder.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// A random number for a temporary file's name.
fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // A failure leaves zeros: the name still carries the process id, and `O_EXCL` refuses a
    // name that is taken.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u32::from_le_bytes(bytes)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_loose_folder_of_the_users_is_tightened_and_its_missing_parts_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let sub = root.join("locks");
        private_folder_in(&root, &sub).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&sub), 0o700);
    }

    #[test]
    fn a_folder_above_that_everyone_can_write_is_refused_not_changed() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_folder(&open.join("xero-auth")).unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Failure);
        assert!(
            err.to_string().contains("every user can write in it"),
            "{err}"
        );
        assert!(!open.join("xero-auth").exists());
        assert_eq!(mode(&open), 0o777);
        // A sticky one (like /tmp) is fine: others cannot rename what is the user's.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        private_folder(&open.join("xero-auth")).unwrap();
    }

    #[test]
    fn files_written_replace_a_planted_link_and_never_write_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let path = dir.path().join("ledger.json");
        symlink(&victim, &path).unwrap();
        replace_file(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn lock_files_are_not_opened_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let path = dir.path().join("ledger.lock");
        symlink(&victim, &path).unwrap();
        let err = open_lock_file(&path).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }

    #[test]
    fn a_file_others_can_change_is_refused_and_a_secret_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, b"x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o646)).unwrap();
        let err = read_file(&path, FileKind::Named, 10, "fix it").unwrap_err();
        assert!(
            err.to_string().contains("other users can change it"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            &**read_file(&path, FileKind::Named, 10, "").unwrap().unwrap(),
            b"x"
        );
        let err = read_file(&path, FileKind::Secret, 10, "").unwrap_err();
        assert!(err.to_string().contains("other users can read it"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            read_file(&path, FileKind::Secret, 10, "")
                .unwrap()
                .is_some()
        );
        assert!(
            read_file(&path, FileKind::Secret, 0, "").is_err(),
            "too long"
        );
        assert!(
            read_file(&dir.path().join("none"), FileKind::Secret, 10, "")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_link_of_the_users_own_is_followed_to_a_safe_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, b"a = 1").unwrap();
        let link = dir.path().join("config.toml");
        symlink(&real, &link).unwrap();
        assert!(read_file(&link, FileKind::Own, 100, "").unwrap().is_some());
    }
}
