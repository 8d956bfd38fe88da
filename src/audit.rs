//! The audit log: one JSON line for each event that touches a secret or spends a token, appended
//! to `audit.log` in the state folder. Never a secret: a token is named by a keyed fingerprint
//! (HMAC-SHA256 under a key kept with the token set in the profile's store), never by itself.
//!
//! Guarantees (docs/security.md, "The audit log"):
//! - **No torn or interleaved line**: each line is built whole in memory, bounded to
//!   [`MAX_LINE`] bytes (long command lines are cut first), and written with one `write(2)` on a
//!   file opened with `O_APPEND`: the kernel puts each such write at the end as one piece.
//! - **Never in the way**: a log that cannot be opened or written (a full disk, a folder that
//!   fails the private-folder check, a read-only file) is skipped with one warning per process;
//!   the command goes on and ends as it would have.
//! - **Bounded**: past its maximum size (`XERO_AUTH_AUDIT_MAX_BYTES`, default
//!   [`DEFAULT_MAX_BYTES`]) the log is renamed to `audit.log.1` (replacing the previous one) by
//!   the first writer that sees it, under an exclusive lock on `audit.lock` taken without waiting.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

use crate::config::Paths;

/// The log's file name in the state folder.
pub const FILE_NAME: &str = "audit.log";
/// The previous log, after a rotation.
pub const ROTATED_NAME: &str = "audit.log.1";
/// Taken (without waiting) by the writer that rotates.
const LOCK_NAME: &str = "audit.lock";
/// The default size past which the log is rotated: 10 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// The longest line written, newline included: Linux's `PIPE_BUF`. Longer lines lose their
/// command lines, then are not written.
pub const MAX_LINE: usize = 4096;
/// The most of one command line kept in a line.
const MAX_CMDLINE: usize = 512;

/// The command this process runs (`token`, `exec`, ...), or `library` for a program using the
/// crate: the `via` of each line.
static VIA: OnceLock<&'static str> = OnceLock::new();
/// A warning about the log was printed already.
static WARNED: AtomicBool = AtomicBool::new(false);
/// Lines of one process go out one at a time (one `write` each anyway; this keeps rotation
/// checks of one process's threads from racing each other).
static WRITING: Mutex<()> = Mutex::new(());

/// Names the command this process runs, for every line it writes.
pub fn set_via(command: &'static str) {
    let _ = VIA.set(command);
}

/// Where the log is.
pub fn path(paths: &Paths) -> PathBuf {
    paths.state_dir.join(FILE_NAME)
}

/// Whether the log is on (`XERO_AUTH_AUDIT=off` turns it off) and its maximum size.
fn settings() -> Option<u64> {
    if std::env::var_os("XERO_AUTH_AUDIT").is_some_and(|v| v == "off") {
        return None;
    }
    let max = std::env::var("XERO_AUTH_AUDIT_MAX_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n >= 4096)
        .unwrap_or(DEFAULT_MAX_BYTES);
    Some(max)
}

/// Whether the log is turned off (`status` says so).
pub fn is_off() -> bool {
    settings().is_none()
}

/// A keyed fingerprint of `secret`: 16 bytes of HMAC-SHA256 under `key`, in hex. Two lines
/// naming the same token under the same key carry the same fingerprint; without the key nothing
/// can be learned from it.
pub fn fingerprint(key: &[u8], secret: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, secret.as_bytes());
    tag.as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new fingerprint key: 32 random bytes.
pub fn new_key() -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).ok()?;
    Some(key)
}

/// One event: its name and fields (never a secret).
pub struct Event {
    fields: Map<String, Value>,
}

impl Event {
    /// An event named `name` about `profile` kept in `store` (its description).
    pub fn new(name: &str, profile: &str, store: Option<&str>) -> Event {
        let mut fields = Map::new();
        fields.insert("event".into(), name.into());
        fields.insert("profile".into(), profile.into());
        if let Some(store) = store {
            fields.insert("store".into(), store.into());
        }
        Event { fields }
    }

    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// Adds a field when there is a value.
    pub fn with_opt(self, key: &str, value: Option<impl Into<Value>>) -> Event {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    /// The outcome: `ok`, or `error` with the exit code.
    pub fn outcome(self, exit: i32) -> Event {
        self.with("outcome", if exit == 0 { "ok" } else { "error" })
            .with("exit", exit)
    }

    /// Who asked: the process `pid` (another one, found by the platform) and its parent.
    pub fn asked_by(self, pid: u32) -> Event {
        self.with("requester", process(pid))
    }

    /// Writes the event to the log of `paths`; never fails, never blocks on another process.
    pub fn record(self, paths: &Paths, now: i64) {
        let Some(max) = settings() else { return };
        let line = self.line(now);
        let Some(line) = line else {
            warn_once("an event was too large for one line and was left out");
            return;
        };
        let _one = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = append(&paths.state_dir, &line, max) {
            warn_once(&e);
        }
    }

    /// The line: the event's fields, the time, how and by whom it was asked; `None` when even
    /// without command lines it would not fit in [`MAX_LINE`].
    fn line(mut self, now: i64) -> Option<Vec<u8>> {
        let mut fields = Map::new();
        fields.insert("time".into(), crate::time::format_time(now).into());
        fields.insert("via".into(), (*VIA.get().unwrap_or(&"library")).into());
        fields.append(&mut self.fields);
        if !fields.contains_key("requester") {
            fields.insert("requester".into(), process(std::process::id()));
        }
        for attempt in 0..2 {
            if attempt == 1 {
                strip_cmdlines(&mut fields);
            }
            let mut line = serde_json::to_vec(&fields).ok()?;
            line.push(b'\n');
            if line.len() <= MAX_LINE {
                return Some(line);
            }
        }
        None
    }
}

/// Removes the command lines of the requester and its parent (a line too long otherwise).
fn strip_cmdlines(fields: &mut Map<String, Value>) {
    if let Some(Value::Object(who)) = fields.get_mut("requester") {
        who.remove("cmdline");
        if let Some(Value::Object(parent)) = who.get_mut("parent") {
            parent.remove("cmdline");
        }
    }
}

/// A process and its parent: pid, executable, command line (cut to [`MAX_CMDLINE`]).
fn process(pid: u32) -> Value {
    let mut who = one_process(pid);
    if let Some(ppid) = parent_of(pid) {
        who.insert("parent".into(), Value::Object(one_process(ppid)));
    }
    Value::Object(who)
}

fn one_process(pid: u32) -> Map<String, Value> {
    let mut who = Map::new();
    who.insert("pid".into(), pid.into());
    #[cfg(target_os = "linux")]
    {
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            who.insert("exe".into(), exe.to_string_lossy().into_owned().into());
        }
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let text = String::from_utf8_lossy(&raw);
            let args: Vec<&str> = text.trim_end_matches('\0').split('\0').collect();
            who.insert("cmdline".into(), cmdline(&args).into());
        }
    }
    #[cfg(not(target_os = "linux"))]
    if pid == std::process::id() {
        if let Ok(exe) = std::env::current_exe() {
            who.insert("exe".into(), exe.to_string_lossy().into_owned().into());
        }
        let args: Vec<String> = std::env::args().collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        who.insert("cmdline".into(), cmdline(&args).into());
    }
    who
}

/// A command line as the log keeps it: the arguments joined by spaces, each cut at its `?` (a
/// URL's query may hold values: names, amounts, a search), the whole cut to [`MAX_CMDLINE`]
/// characters.
fn cmdline(args: &[&str]) -> String {
    let cut: Vec<&str> = args
        .iter()
        .map(|a| a.find('?').and_then(|i| a.get(..=i)).unwrap_or(a))
        .collect();
    cut.join(" ").chars().take(MAX_CMDLINE).collect()
}

/// The parent of `pid`, where the platform says.
fn parent_of(pid: u32) -> Option<u32> {
    #[cfg(unix)]
    if pid == std::process::id() {
        return Some(std::os::unix::process::parent_id());
    }
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses; the last `)` ends it.
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        return rest.split_whitespace().nth(1)?.parse().ok();
    }
    #[cfg(not(unix))]
    let _ = pid;
    #[allow(unreachable_code)]
    None
}

/// Appends `line` with one write, rotating first when the log has grown past `max`.
fn append(dir: &Path, line: &[u8], max: u64) -> Result<(), String> {
    crate::private_fs::private_folder(dir).map_err(|e| e.to_string())?;
    let path = dir.join(FILE_NAME);
    let mut file = open_append(&path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size.saturating_add(line.len() as u64) > max && rotate(dir, &path, max) {
        file = open_append(&path)?;
    }
    // One write: the line goes in whole or (on a full disk) not at all, never in part.
    match file.write(line) {
        Ok(n) if n == line.len() => Ok(()),
        Ok(n) => Err(format!(
            "only {n} of {} bytes of a line were written to {}",
            line.len(),
            path.display()
        )),
        Err(e) => Err(format!("cannot write to {}: {e}", path.display())),
    }
}

/// Opens the log for appending (created `0600`), without following a link; a file that is not
/// a plain file of the user's is refused.
fn open_append(path: &Path) -> Result<File, String> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = options
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a plain file", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!(
                "{} belongs to user id {}, not to you",
                path.display(),
                meta.uid()
            ));
        }
    }
    Ok(file)
}

/// Renames the log to [`ROTATED_NAME`] when it is still past `max`, under the rotation lock
/// taken without waiting (another process rotating is left to it). Whether it was rotated.
fn rotate(dir: &Path, path: &Path, max: u64) -> bool {
    let Ok(lock) = crate::private_fs::open_lock_file(&dir.join(LOCK_NAME)) else {
        return false;
    };
    if lock.try_lock().is_err() {
        return false;
    }
    // Another process may have rotated between our look at the size and the lock.
    let big = std::fs::symlink_metadata(path).is_ok_and(|m| m.len() >= max.saturating_sub(MAX_LINE as u64));
    let rotated = big && std::fs::rename(path, dir.join(ROTATED_NAME)).is_ok();
    let _ = lock.unlock();
    rotated
}

/// Prints `why` once per process: the log is not kept, the command goes on.
fn warn_once(why: &str) {
    if !WARNED.swap(true, Ordering::SeqCst) {
        eprintln!(
            "warning: the audit log was not written ({why}); the command goes on. Check the \
             state folder's space and permissions, or set XERO_AUTH_AUDIT=off"
        );
    }
}

/// Reads the lines of the log (the rotated one first), skipping any that is not JSON. Each file
/// passes the one ownership and no-link check of the state folder's files (`private_fs`).
pub fn read_all(paths: &Paths) -> crate::error::Result<Vec<Map<String, Value>>> {
    let mut out = Vec::new();
    for name in [ROTATED_NAME, FILE_NAME] {
        let Some(bytes) = crate::private_fs::read_file(
            &paths.state_dir.join(name),
            crate::private_fs::FileKind::Own,
            usize::MAX,
            "remove the file, or make it a regular file of your own that only you can write",
        )?
        else {
            continue;
        };
        out.extend(
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter_map(|l| serde_json::from_str::<Map<String, Value>>(l).ok()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_depends_on_the_key_and_shows_nothing_of_the_token() {
        let a = fingerprint(&[1; 32], "token-value");
        assert_eq!(a.len(), 32);
        assert_eq!(a, fingerprint(&[1; 32], "token-value"));
        assert_ne!(a, fingerprint(&[2; 32], "token-value"));
        assert!(!a.contains("token"));
    }

    #[test]
    fn a_command_line_keeps_no_query_values() {
        assert_eq!(
            cmdline(&["xero-auth", "api", "Contacts?where=Name%3D%22X%22", "--json"]),
            "xero-auth api Contacts? --json"
        );
        assert_eq!(cmdline(&["a".repeat(600).as_str()]).len(), MAX_CMDLINE);
    }

    #[test]
    fn a_line_longer_than_the_limit_loses_its_command_lines_first() {
        let event = Event::new("token", "p", None).with(
            "requester",
            serde_json::json!({"pid": 1, "cmdline": "x".repeat(5000),
                               "parent": {"pid": 2, "cmdline": "y".repeat(5000)}}),
        );
        let line = event.line(0).expect("fits without the command lines");
        assert!(line.len() <= MAX_LINE);
        assert!(!String::from_utf8_lossy(&line).contains("xxxx"));
        let huge = Event::new("token", "p", None).with("path", "z".repeat(5000));
        assert!(huge.line(0).is_none());
    }
}
