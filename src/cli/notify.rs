//! A desktop notification when only the person can fix what a command ran into, and nobody is
//! watching its output: a refresh run by a timer (the keep-alive units), or a long-running
//! `exec --server` or `mcp`. Three problems count — Xero refused the refresh token (or it
//! lapsed: authorise again), the keychain is locked, the refresh token lapses within
//! [`LAPSE_WARNING_DAYS`] while refreshing keeps failing — and each is sent at most once a day
//! per profile (a small file in the state folder remembers when).
//!
//! Sent through the freedesktop Notifications interface on the session bus (Linux); where there
//! is no session bus, or no notification daemon answers within [`SEND_WAIT`], nothing happens
//! and the command goes on as before. The profile's `notify = false` turns it off. Nothing of a
//! secret is in a notification: the profile's name and the command to run.

use std::path::Path;
use std::time::Duration;

use crate::config::Paths;
use crate::error::{Error, ExitCode};
use crate::session::Session;

/// From this many days before the refresh token lapses, a failing refresh is worth a
/// notification.
pub const LAPSE_WARNING_DAYS: i64 = 7;
/// How long one problem stays quiet after its notification.
const QUIET_FOR_SECS: i64 = 24 * 3600;
/// The longest a notification may take to be handed over.
const SEND_WAIT: Duration = Duration::from_secs(5);

/// What the person has to do something about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Xero refused the refresh token, or it lapsed: `login` again.
    Reauthorise,
    /// The keychain is locked: unlock it.
    Locked,
    /// The refresh token lapses in this many days, and refreshing failed.
    LapsesSoon(i64),
}

impl Problem {
    /// The problem an error of a refresh (or of a token fetch) is, if only a person can fix it.
    pub fn of(err: &Error) -> Option<Problem> {
        match err.exit_code() {
            ExitCode::ReauthRequired => Some(Problem::Reauthorise),
            ExitCode::StoreUnavailable => Some(Problem::Locked),
            _ => None,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Problem::Reauthorise => "reauthorise",
            Problem::Locked => "locked",
            Problem::LapsesSoon(_) => "lapses-soon",
        }
    }

    /// Summary and body of the notification.
    fn text(self, profile: &str) -> (String, String) {
        let command = |args: &str| crate::hint::command(profile, args).replace('`', "");
        match self {
            Problem::Reauthorise => (
                format!("xero-auth: profile '{profile}' must be authorised again"),
                format!(
                    "Xero refused its refresh token, or it lapsed. Programs using it get no token \
                     until you run: {}",
                    command("login")
                ),
            ),
            Problem::Locked => (
                format!("xero-auth: profile '{profile}' cannot read the keychain"),
                format!(
                    "The keychain holding its tokens is locked or not answering. Unlock it (log \
                     in to the desktop, or unlock the login keyring), then run: {}",
                    command("refresh")
                ),
            ),
            Problem::LapsesSoon(days) => (
                format!("xero-auth: profile '{profile}' lapses in {days} days"),
                format!(
                    "Refreshing keeps failing, and Xero forgets a refresh token unused for 60 \
                     days. Run: {} (and see why it fails)",
                    command("refresh")
                ),
            ),
        }
    }
}

/// Tells the person about `err` of `session`'s profile when only they can fix it, without
/// waiting for the notification to be handed over: for the long-running commands, whose other
/// work must not stall on the bus.
pub fn on_error(session: &Session, err: &Error) {
    if let Some(problem) = Problem::of(err) {
        on_problem(session, problem, Wait::No);
    }
}

/// Tells the person about `problem` of `session`'s profile (see [`tell`]).
pub fn on_problem(session: &Session, problem: Problem, wait: Wait) {
    let profile = session.profile();
    tell(
        session.paths(),
        &profile.name,
        profile.notify,
        problem,
        session.now(),
        wait,
    );
}

/// Whether [`tell`] waits (at most [`SEND_WAIT`]) for the notification to be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A command about to end: the sending thread would end with it.
    ForDelivery,
    /// A long-running command: send in the background.
    No,
}

/// The problems this process tried to tell, and when: a long-running command that cannot
/// reach a notification daemon tries once a day, not at every failed fetch.
static ATTEMPTED: std::sync::Mutex<Vec<(String, i64)>> = std::sync::Mutex::new(Vec::new());

/// Tells the person about `problem` of `profile`, unless `enabled` is false or it was told (or,
/// by this process, tried) in the last day. Never fails; blocks at most [`SEND_WAIT`], and only
/// with [`Wait::ForDelivery`].
pub fn tell(paths: &Paths, profile: &str, enabled: bool, problem: Problem, now: i64, wait: Wait) {
    if !enabled {
        return;
    }
    let key = format!("{profile} {}", problem.key());
    let recent = |at: i64| now.saturating_sub(at) < QUIET_FOR_SECS && at <= now;
    {
        let Ok(mut attempted) = ATTEMPTED.lock() else {
            return;
        };
        if attempted.iter().any(|(k, at)| *k == key && recent(*at)) {
            return;
        }
        attempted.retain(|(k, _)| *k != key);
        attempted.push((key.clone(), now));
    }
    let file = paths.state_dir.join("notified.json");
    if read_told(&file)
        .get(&key)
        .and_then(serde_json::Value::as_i64)
        .is_some_and(recent)
    {
        return;
    }
    let (summary, body) = problem.text(profile);
    let state_dir = paths.state_dir.clone();
    let (done, delivered) = std::sync::mpsc::channel();
    // A thread of its own: the bus may start a daemon that never answers.
    let spawned = std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || {
            let sent = send(&summary, &body);
            if sent {
                record(&state_dir, &file, key, now);
            }
            let _ = done.send(sent);
        });
    match spawned {
        Ok(_) if wait == Wait::ForDelivery => {
            let _ = delivered.recv_timeout(SEND_WAIT);
        }
        Ok(handle) => {
            if let Ok(mut sending) = SENDING.lock() {
                sending.retain(|h| !h.is_finished());
                sending.push(handle);
            }
        }
        Err(_) => {}
    }
}

/// The notifications sent in the background, for [`finish`].
static SENDING: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits (at most [`SEND_WAIT`]) for the notifications sent in the background: a long-running
/// command calls it before it ends, so that one sent as its program failed is not lost with it.
pub fn finish() {
    let deadline = std::time::Instant::now() + SEND_WAIT;
    while std::time::Instant::now() < deadline {
        let busy = SENDING
            .lock()
            .map(|sending| sending.iter().any(|h| !h.is_finished()))
            .unwrap_or(false);
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Notes in the state folder that `key` was told at `now`. Losing this file only means one more
/// notification: a failure to write it is not told.
fn record(state_dir: &Path, file: &Path, key: String, now: i64) {
    let mut told = read_told(file);
    told.insert(key, now.into());
    if crate::private_fs::private_folder(state_dir).is_ok()
        && let Ok(bytes) = serde_json::to_vec(&told)
    {
        let _ = crate::private_fs::replace_file(file, &bytes);
    }
}

/// What `file` says was told when; empty when it is missing, unreadable, or fails the state
/// folder's ownership and no-link check (one more notification is the worst that follows).
fn read_told(file: &Path) -> serde_json::Map<String, serde_json::Value> {
    crate::private_fs::read_file(
        file,
        crate::private_fs::FileKind::Own,
        1 << 20,
        "remove it",
    )
    .ok()
    .flatten()
    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    .unwrap_or_default()
}

/// Hands the notification to the session's notification daemon; whether it took it.
#[cfg(target_os = "linux")]
fn send(summary: &str, body: &str) -> bool {
    let sent = (|| -> zbus::Result<()> {
        let conn = zbus::blocking::Connection::session()?;
        let hints: std::collections::HashMap<&str, zbus::zvariant::Value<'_>> =
            std::collections::HashMap::from([("urgency", zbus::zvariant::Value::U8(2))]);
        conn.call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "Notify",
            &(
                "xero-auth",
                0u32,
                "dialog-password",
                summary,
                body,
                Vec::<&str>::new(),
                hints,
                -1i32,
            ),
        )?;
        Ok(())
    })();
    sent.is_ok()
}

/// Elsewhere there is no freedesktop bus: nothing is sent (see docs/desktop.md).
#[cfg(not(target_os = "linux"))]
fn send(_summary: &str, _body: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_a_program_can_fix_is_not_a_persons_problem() {
        assert_eq!(Problem::of(&Error::InvalidInput("x".into())), None);
    }

    #[test]
    fn the_text_names_the_profile_and_the_command_and_nothing_else() {
        let (summary, body) = Problem::Reauthorise.text("work");
        assert!(summary.contains("'work'"), "{summary}");
        assert!(body.contains("xero-auth login --profile work"), "{body}");
        let (summary, body) = Problem::LapsesSoon(3).text("default");
        assert!(summary.contains("lapses in 3 days"), "{summary}");
        assert!(body.contains("xero-auth refresh"), "{body}");
        assert!(!body.contains('`'), "{body}");
    }
}
