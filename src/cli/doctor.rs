//! `xero-auth doctor`: which secret stores this machine has and whether they answer, which store
//! each profile uses and what it holds (presence only), the folders, the clock, and whether the
//! endpoints answer — with one line on what to do about each problem.
//!
//! It never writes to a store and never asks one for a secret: stores are probed by reading an
//! entry no profile can have, and a profile's entries are looked up, not read. Endpoints get a
//! plain `GET` without any credential (the token endpoint's origin gets its OpenID discovery
//! document), bounded in time. The exit status is the first problem's (5 a store, 3 nothing
//! stored, 6 an endpoint, 1 anything else), or 0 when every profile can be used or nothing is
//! set up yet (a fresh install: the report says what to run first).
//!
//! This file holds what a report is made of; `checks.rs` gathers it (each check in one place),
//! `render.rs` shows it (text and JSON), `endpoints.rs` and `linux.rs` hold the probes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Context, format_span, format_time};
use crate::config::{Profile, StoreKind};
use crate::error::{Error, Result};
use crate::guard::{RefreshLock, untrusted_lock_filesystem};
use crate::private_fs::{Access, FileKind};
use crate::store::{Keychain, SecretStore, StoreFailure, client_secret_account, token_set_account};
use clap::Args;
use serde_json::{Value, json};

#[derive(Debug, Args)]
#[command(
    after_help = "Never writes to a store, never reads a secret, and sends no credential: \
stores are probed by reading an entry no profile has, a profile's entries are looked up, and each \
endpoint's origin gets one plain GET (the token endpoint's its OpenID discovery document).

Checks the selected profile (--profile, XERO_AUTH_PROFILE, or 'default'); --all checks every \
profile in config.toml. The stores of this machine are listed either way; only the profiles \
checked make problems.

Exit status: 0 when every profile checked can be used, and on a fresh install (nothing \
configured or stored yet: it says what to run first); otherwise the first problem's: 5 a \
secret store unavailable or locked, 3 nothing stored (client id or token set), 6 an endpoint \
that does not answer, 1 anything else."
)]
/// Arguments of `xero-auth doctor` (`--json` is the global flag).
pub struct DoctorArgs {
    /// Check every profile in config.toml, not only the selected one.
    #[arg(long)]
    pub all: bool,
}

/// The longest the doctor waits for one store or one endpoint.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// An account no profile can have (profile names cannot start with '.'): the store probe reads it.
const PROBE_ACCOUNT: &str = ".doctor/probe";
/// A system clock before 2024-01-01T00:00:00Z is certainly wrong…
const EARLIEST_PLAUSIBLE: i64 = 1_704_067_200;
/// …and so is one after 2100-01-01T00:00:00Z.
const LATEST_PLAUSIBLE: i64 = 4_102_444_800;
/// A server's `Date` further than this from the system clock is worth a warning.
const MAX_SKEW_SECS: i64 = 300;

mod checks;
mod endpoints;
#[cfg(target_os = "linux")]
mod linux;
mod render;

use endpoints::{Answer, EndpointProbe, endpoint_roles, probe_endpoints, unreachable_fix};

/// Runs the checks, prints the report (stdout), and fails with the first problem.
pub async fn run(args: DoctorArgs, ctx: &Context) -> Result<()> {
    let report = Report::gather(ctx, args.all).await;
    if ctx.json {
        ctx.write_json(&report.to_json())?;
    } else {
        ctx.write_out(report.render().as_bytes())?;
    }
    match report.problems.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(first.error),
    }
}

/// Something that stops a profile from being used.
#[derive(Debug)]
struct Problem {
    what: String,
    fix: String,
    /// What the command ends with: its exit code is the problem's.
    error: Error,
}

impl Problem {
    fn code(&self) -> u8 {
        self.error.exit_code() as u8
    }

    fn store(kind: &str, description: &str, users: &[String], failure: &StoreFailure) -> Self {
        Problem {
            what: format!(
                "the secret store '{kind}' ({description}), used by {}, is unavailable: {}",
                profiles_phrase(users),
                failure.cause
            ),
            fix: failure.fix.clone(),
            error: Error::StoreUnavailable {
                store: description.to_string(),
                cause: failure.cause.clone(),
                fix: failure.fix.clone(),
            },
        }
    }

    fn nothing(profile: &str, what: &'static str, hint: String) -> Self {
        Problem {
            what: format!("profile '{profile}' has no {what} stored"),
            fix: hint.clone(),
            error: Error::NothingStored {
                profile: profile.to_string(),
                what,
                hint,
            },
        }
    }

    fn unreachable(url: &str, uses: &str, cause: String, fix: String) -> Self {
        Problem {
            what: format!("{url} ({uses}) did not answer: {cause}"),
            error: Error::Temporary {
                what: format!("reaching {url}"),
                cause,
                hint: Some(fix.clone()),
            },
            fix,
        }
    }

    fn other(what: String, fix: &str) -> Self {
        Problem {
            error: Error::InvalidInput(format!("{what}; {fix}")),
            what,
            fix: fix.to_string(),
        }
    }
}

/// Worth knowing, but nothing is unusable because of it.
#[derive(Debug)]
struct Warning {
    what: String,
    fix: String,
}

/// One secret store this build has for this operating system.
struct StoreCheck {
    kind: StoreKind,
    description: String,
    /// What was found when usable (a note), or why not.
    outcome: std::result::Result<String, StoreFailure>,
    used_by: Vec<String>,
}

/// A folder or file the tool uses.
struct PathCheck {
    label: &'static str,
    path: PathBuf,
    /// Which variable set it, if one did.
    source: Option<&'static str>,
    exists: bool,
    /// Whether the tool can create files where it needs to (in the folder, or in the nearest
    /// existing parent when the folder is not there yet); `None` for a file it only reads.
    writable: Option<std::result::Result<PathBuf, String>>,
    /// What the one file-and-folder check (`crate::private_fs`) says of it: whether another user
    /// could change it; `None` for a file that is not there.
    trust: Option<Access>,
}

/// Whether an entry is in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Presence {
    Stored,
    Missing,
    Unknown(String),
}

impl Presence {
    fn to_json(&self) -> Value {
        match self {
            Presence::Stored => json!(true),
            Presence::Missing => json!(false),
            Presence::Unknown(_) => Value::Null,
        }
    }
}

/// One profile: where its secrets are and what is there.
struct ProfileCheck {
    name: String,
    selected: bool,
    configured: bool,
    /// A `[profiles.NAME]` table with nothing in it (what `config unset` of its last key
    /// leaves): with nothing stored either, a leftover, not a problem.
    empty: bool,
    resolved: std::result::Result<Profile, String>,
    /// Why the profile's store cannot be used, if it cannot.
    store_failure: Option<StoreFailure>,
    client_secret: Presence,
    token_set: Presence,
}

struct ClockCheck {
    now: i64,
    /// A server's `Date`, from the first endpoint that sent one.
    server: Option<(String, i64)>,
}

impl ClockCheck {
    fn plausible(&self) -> bool {
        (EARLIEST_PLAUSIBLE..LATEST_PLAUSIBLE).contains(&self.now)
    }

    fn skew(&self) -> Option<i64> {
        self.server.as_ref().map(|(_, date)| self.now - date)
    }
}

struct Report {
    os: &'static str,
    stores: Vec<StoreCheck>,
    files: Vec<PathCheck>,
    clock: ClockCheck,
    profiles: Vec<ProfileCheck>,
    /// The profiles of config.toml not checked (without `--all`).
    not_checked: Vec<String>,
    endpoints: Vec<EndpointProbe>,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
    /// No profile with settings in `config.toml` and nothing stored for the selected one: a
    /// fresh install,
    /// which is where everyone starts, not a problem. The report says what to run first.
    fresh: bool,
}

impl Report {
    fn exit_code(&self) -> u8 {
        self.problems.first().map_or(0, Problem::code)
    }

    /// What a fresh install runs first, for the selected profile.
    fn first_step(&self) -> Option<String> {
        let selected = self.profiles.iter().find(|p| p.selected)?;
        self.fresh.then(|| {
            format!(
                "nothing set up yet: run {} (docs/getting-started.md)",
                crate::hint::command(&selected.name, "client set --client-id ID")
            )
        })
    }
}

/// "profile 'a'" or "profiles 'a', 'b'".
fn profiles_phrase(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    match quoted.len() {
        1 => format!("profile {}", quoted[0]),
        _ => format!("profiles {}", quoted.join(", ")),
    }
}
