//! `xero-auth doctor`: which secret stores this machine has and whether they answer, which store
//! each profile uses and what it holds (presence only), the folders, the clock, and whether the
//! endpoints answer — with one line on what to do about each problem.
//!
//! It never writes to a store and never asks one for a secret: stores are probed by reading an
//! entry no profile can have, and a profile's entries are looked up, not read. Endpoints get a
//! plain `GET` without any credential (the token endpoint's origin gets its OpenID discovery
//! document), bounded in time. The exit status is the first problem's (5 a store, 3 nothing
//! stored, 6 an endpoint, 1 anything else), or 0 when every profile can be used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Context, format_span, format_time};
use crate::config::{FolderAccess, Profile, StoreKind, folder_access};
use crate::error::{Error, Result};
use crate::lock::{RefreshLock, untrusted_lock_filesystem};
use crate::store::{Keychain, SecretStore, StoreFailure, client_secret_account, token_set_account};
use clap::Args;
use serde_json::{Value, json};

#[derive(Debug, Args)]
#[command(
    after_help = "Never writes to a store, never reads a secret, and sends no credential: \
stores are probed by reading an entry no profile has, a profile's entries are looked up, and each \
endpoint's origin gets one plain GET (the token endpoint's its OpenID discovery document).

Exit status: 0 when every configured profile, and the selected one, can be used; otherwise the \
first problem's: 5 a secret store unavailable or locked, 3 nothing stored (client id or token \
set), 6 an endpoint that does not answer, 1 anything else."
)]
/// Arguments of `xero-auth doctor` (`--json` is the global flag).
pub struct DoctorArgs {}

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

mod endpoints;
#[cfg(target_os = "linux")]
mod linux;

use endpoints::{Answer, EndpointProbe, endpoint_roles, probe_endpoints, unreachable_fix};

/// Runs the checks, prints the report (stdout), and fails with the first problem.
pub async fn run(_args: DoctorArgs, ctx: &Context) -> Result<()> {
    let report = Report::gather(ctx).await;
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

    fn nothing(profile: &str, what: &'static str, hint: &'static str) -> Self {
        Problem {
            what: format!("profile '{profile}' has no {what} stored"),
            fix: hint.to_string(),
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
    /// existing parent when the folder is not there yet).
    writable: std::result::Result<PathBuf, String>,
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
    endpoints: Vec<EndpointProbe>,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

impl Report {
    async fn gather(ctx: &Context) -> Report {
        let mut report = Report {
            os: std::env::consts::OS,
            stores: Vec::new(),
            files: Vec::new(),
            clock: ClockCheck {
                now: ctx.clock.now(),
                server: None,
            },
            profiles: profile_checks(ctx),
            endpoints: Vec::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        // In the order of the report: a problem found earlier explains later ones (no store, so
        // nothing could be looked up; a wrong clock, so tokens look expired).
        report.check_profile_configs();
        report.check_stores(ctx).await;
        report.check_files(ctx);
        report.check_lock_folder(ctx);
        report.check_clock();
        report.check_contents(ctx).await;
        report.check_endpoints(ctx).await;
        report
    }

    /// Profiles whose configuration cannot be resolved (a bad URL, an unknown store…).
    fn check_profile_configs(&mut self) {
        for p in &self.profiles {
            if let Err(why) = &p.resolved {
                self.problems.push(Problem::other(
                    format!("profile '{}' cannot be used: {why}", p.name),
                    "correct the profile in config.toml, or the environment variable named",
                ));
            }
        }
    }

    /// Every store this build has for this OS, whether or not a profile uses it; then each
    /// profile's store as its commands would open it.
    async fn check_stores(&mut self, ctx: &Context) {
        let env = |key: &str| (ctx.env)(key).filter(|v| !v.is_empty());
        let resolved = || {
            self.profiles
                .iter()
                .filter_map(|p| p.resolved.as_ref().ok())
        };
        let wait = resolved()
            .map(|p| p.store_timeout)
            .min()
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        for kind in stores_of_this_os() {
            let outcome = probe_store(kind, &env, wait).await;
            let used_by = resolved()
                .filter(|p| p.store == kind)
                .map(|p| p.name.clone())
                .collect();
            self.stores.push(StoreCheck {
                kind,
                description: Keychain::new(kind).describe(),
                outcome,
                used_by,
            });
        }
        // The encrypted-file store exists wherever there is a data folder.
        let root = ctx.paths.file_store_dir();
        let probe_root = root.clone();
        let outcome = bounded_check(
            wait.max(MIN_FILE_WAIT),
            "the data folder may be on a network file system that hangs",
            move || crate::store::file::check(&probe_root),
        )
        .await;
        self.stores.push(StoreCheck {
            kind: StoreKind::File,
            description: format!("encrypted files in {}", root.display()),
            outcome,
            used_by: resolved()
                .filter(|p| p.store == StoreKind::File)
                .map(|p| p.name.clone())
                .collect(),
        });
        let overridden = ctx.store_override.is_some();
        if !overridden {
            for s in &self.stores {
                if let Err(failure) = &s.outcome
                    && !s.used_by.is_empty()
                {
                    self.problems.push(Problem::store(
                        s.kind.name(),
                        &s.description,
                        &s.used_by,
                        failure,
                    ));
                }
            }
        }
        for p in &mut self.profiles {
            let Ok(profile) = &p.resolved else { continue };
            let known = self.stores.iter().find(|s| s.kind == profile.store);
            p.store_failure = match known {
                Some(s) if !overridden => s.outcome.clone().err(),
                _ => {
                    // A store this OS does not have (or a test's): probe it as the profile's
                    // commands would open it, and report it here.
                    let store = ctx.store(&bounded(profile));
                    let failure = store.get(PROBE_ACCOUNT).await.err().map(store_failure);
                    if let Some(failure) = &failure {
                        self.problems.push(Problem::store(
                            profile.store.name(),
                            &store.describe(),
                            std::slice::from_ref(&p.name),
                            failure,
                        ));
                    }
                    failure
                }
            };
        }
    }

    /// The configuration file and the state folder: there, or creatable.
    fn check_files(&mut self, ctx: &Context) {
        let set_by = |key: &'static str| (ctx.env)(key).filter(|v| !v.is_empty()).map(|_| key);
        self.files = vec![
            check_path(
                "config",
                ctx.paths.config_file(),
                set_by("XERO_AUTH_CONFIG_DIR"),
            ),
            check_path(
                "state",
                ctx.paths.state_dir.clone(),
                set_by("XERO_AUTH_STATE_DIR"),
            ),
        ];
        for f in &self.files {
            let Err(why) = &f.writable else { continue };
            let what = format!("{} {}: {why}", f.label, f.path.display());
            if f.label == "state" {
                self.problems.push(Problem::other(
                    what,
                    "the refresh lock lives there: make the folder writable, or point \
                     XERO_AUTH_STATE_DIR at one that is",
                ));
            } else {
                self.warnings.push(Warning {
                    what,
                    fix: "`client set` and `tenants use` write the configuration: make the \
                          folder writable, or point XERO_AUTH_CONFIG_DIR at one that is"
                        .into(),
                });
            }
        }
    }

    /// Whether the refresh lock can be trusted where it lives: the state folder and its lock
    /// folder the user's alone (commands tighten a loose one of the user's, and refuse one that
    /// another user owns or can write), on a file system whose locks exclude.
    fn check_lock_folder(&mut self, ctx: &Context) {
        let state = &ctx.paths.state_dir;
        for folder in [state.clone(), RefreshLock::folder(&ctx.paths)] {
            match folder_access(&folder) {
                Ok(FolderAccess::Private) | Err(_) => {}
                Ok(FolderAccess::Loose(mode)) => self.warnings.push(Warning {
                    what: format!(
                        "the refresh lock's folder {} is open to other users (mode {mode:04o})",
                        folder.display()
                    ),
                    fix: "the next command that takes the lock makes it 0700 (or run                           `chmod 700` on it now)"
                        .into(),
                }),
                Ok(FolderAccess::Shared(why)) => self.problems.push(Problem::other(
                    format!(
                        "the refresh lock's folder {} cannot be used: {why}; another user could                          hold the lock for ever or plant a link in it",
                        folder.display()
                    ),
                    "point XERO_AUTH_STATE_DIR at a folder only you can write",
                )),
            }
        }
        if let Some(filesystem) = untrusted_lock_filesystem(nearest_existing(state)) {
            self.warnings.push(Warning {
                what: format!(
                    "the state folder {} is on {filesystem}: whether the refresh lock there \
                     excludes other processes is up to the {filesystem} server or daemon (NFS \
                     mounted `nolock` keeps locks on each machine only), so two refreshes could \
                     spend the same single-use refresh token",
                    state.display()
                ),
                fix: "point XERO_AUTH_STATE_DIR at a folder on a local disk, the same one for \
                      every program of this machine that uses these tokens; never share one \
                      profile's tokens between machines"
                    .into(),
            });
        }
    }

    /// A system clock outside any plausible time.
    fn check_clock(&mut self) {
        if !self.clock.plausible() {
            self.problems.push(Problem::other(
                format!(
                    "the system clock says {}, which cannot be right: token expiry is computed \
                     from it",
                    format_time(self.clock.now)
                ),
                "set the clock (e.g. `timedatectl set-ntp true`) and run the command again",
            ));
        }
    }

    /// What each profile has stored: looked up, never read.
    async fn check_contents(&mut self, ctx: &Context) {
        for p in &mut self.profiles {
            let Ok(profile) = &p.resolved else { continue };
            if let Some(failure) = &p.store_failure {
                let why = format!("not checked: the store is unavailable ({})", failure.cause);
                p.client_secret = Presence::Unknown(why.clone());
                p.token_set = Presence::Unknown(why);
                continue;
            }
            let store = ctx.store(&bounded(profile));
            let mut lookup_failure = None;
            for (account, found) in [
                (client_secret_account(&p.name), &mut p.client_secret),
                (token_set_account(&p.name), &mut p.token_set),
            ] {
                *found = match store.contains(&account).await {
                    Ok(true) => Presence::Stored,
                    Ok(false) => Presence::Missing,
                    Err(e) => {
                        let mut failure = store_failure(e);
                        failure.cause =
                            format!("looking up the profile's entries: {}", failure.cause);
                        let why = format!("unknown: {}", failure.cause);
                        lookup_failure.get_or_insert(failure);
                        Presence::Unknown(why)
                    }
                };
            }
            if let Some(failure) = lookup_failure {
                self.problems.push(Problem::store(
                    profile.store.name(),
                    &store.describe(),
                    std::slice::from_ref(&p.name),
                    &failure,
                ));
                p.store_failure = Some(failure);
            }
            if profile.client_id.is_none() {
                self.problems.push(Problem::nothing(
                    &p.name,
                    "client id",
                    "run `xero-auth client set --client-id ID` with the id from developer.xero.com \
                     (or pick another profile with --profile NAME)",
                ));
            }
            if p.token_set == Presence::Missing {
                self.problems.push(Problem::nothing(
                    &p.name,
                    "token set",
                    "run `xero-auth login`, or `xero-auth import FILE` to move a token file into \
                     the keychain (or pick another profile with --profile NAME)",
                ));
            }
        }
    }

    /// One probe per endpoint origin, all at once; the first `Date` heard is compared with the
    /// system clock.
    async fn check_endpoints(&mut self, ctx: &Context) {
        let env = |key: &str| (ctx.env)(key).filter(|v| !v.is_empty());
        self.endpoints = probe_endpoints(&self.profiles, &env).await;
        for e in &self.endpoints {
            let cause = match &e.answer {
                Answer::Failed { cause } => cause.clone(),
                Answer::Http { status, .. } if *status >= 500 => format!("HTTP {status}"),
                Answer::Http { .. } => continue,
            };
            let fix = match e.answer {
                Answer::Failed { .. } => unreachable_fix(e),
                Answer::Http { .. } => "the server answers but fails: try again later".into(),
            };
            self.problems.push(Problem::unreachable(
                e.url.as_str(),
                &e.uses_phrase(),
                cause,
                fix,
            ));
        }

        self.clock.server = self.endpoints.iter().find_map(|e| match e.answer {
            Answer::Http { date: Some(d), .. } => Some((e.origin.clone(), d)),
            _ => None,
        });
        if let (Some(skew), Some((origin, _))) = (self.clock.skew(), &self.clock.server)
            && skew.abs() > MAX_SKEW_SECS
        {
            self.warnings.push(Warning {
                what: format!(
                    "the system clock is {} {} {origin}'s (its Date header)",
                    format_span(skew.abs()),
                    if skew > 0 { "ahead of" } else { "behind" }
                ),
                fix: "token lifetimes are counted on this clock: turn on time synchronisation \
                      (e.g. `timedatectl set-ntp true`)"
                    .into(),
            });
        }
    }

    fn exit_code(&self) -> u8 {
        self.problems.first().map_or(0, Problem::code)
    }

    fn to_json(&self) -> Value {
        let stores: Vec<Value> = self
            .stores
            .iter()
            .map(|s| {
                json!({
                    "store": s.kind.name(),
                    "description": s.description,
                    "usable": s.outcome.is_ok(),
                    "detail": match &s.outcome { Ok(note) => note.clone(), Err(f) => f.cause.clone() },
                    "fix": s.outcome.as_ref().err().map(|f| f.fix.clone()),
                    "used_by": s.used_by,
                })
            })
            .collect();
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                json!({
                    "what": f.label,
                    "path": f.path.display().to_string(),
                    "set_by": f.source,
                    "exists": f.exists,
                    "writable": f.writable.is_ok(),
                    "detail": match &f.writable { Ok(at) => at.display().to_string(), Err(why) => why.clone() },
                })
            })
            .collect();
        let profiles: Vec<Value> = self
            .profiles
            .iter()
            .map(|p| {
                let resolved = p.resolved.as_ref().ok();
                json!({
                    "profile": p.name,
                    "selected": p.selected,
                    "configured": p.configured,
                    "error": p.resolved.as_ref().err(),
                    "store": resolved.map(|r| r.store.name()),
                    "store_usable": resolved.map(|_| p.store_failure.is_none()),
                    "client_id": resolved.and_then(|r| r.client_id.clone()),
                    "client_secret_stored": p.client_secret.to_json(),
                    "token_set_stored": p.token_set.to_json(),
                    "endpoints": resolved.map(|r| endpoint_roles(r).iter().map(|(role, url)| {
                        (role.to_string(), json!(url.as_str()))
                    }).collect::<serde_json::Map<String, Value>>()),
                })
            })
            .collect();
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| {
                let (status, millis, error) = match &e.answer {
                    Answer::Http { status, millis, .. } => (Some(*status), Some(*millis), None),
                    Answer::Failed { cause } => (None, None, Some(cause.clone())),
                };
                json!({
                    "origin": e.origin,
                    "probe_url": e.url.as_str(),
                    "used_for": e.uses.iter().map(|(profile, role, url)| json!({
                        "profile": profile, "role": role, "url": url,
                    })).collect::<Vec<_>>(),
                    "reachable": e.usable(),
                    "http_status": status,
                    "elapsed_ms": millis,
                    "error": error,
                    "proxy_variable": e.proxy,
                })
            })
            .collect();
        let item = |what: &str, fix: &str| json!({"what": what, "fix": fix});
        json!({
            "ok": self.problems.is_empty(),
            "exit_code": self.exit_code(),
            "os": self.os,
            "stores": stores,
            "files": files,
            "clock": {
                "now": self.clock.now,
                "now_utc": format_time(self.clock.now),
                "plausible": self.clock.plausible(),
                "compared_with": self.clock.server.as_ref().map(|(origin, _)| origin),
                "skew_secs": self.clock.skew(),
            },
            "profiles": profiles,
            "endpoints": endpoints,
            "problems": self.problems.iter().map(|p| {
                let mut v = item(&p.what, &p.fix);
                v["exit_code"] = json!(p.code());
                v
            }).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(|w| item(&w.what, &w.fix)).collect::<Vec<_>>(),
        })
    }

    fn render(&self) -> String {
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();

        let mut rows = Vec::new();
        for s in &self.stores {
            let users = if s.used_by.is_empty() {
                "not used by any profile".to_string()
            } else {
                format!("used by {}", profiles_phrase(&s.used_by))
            };
            match &s.outcome {
                Ok(note) => rows.push((
                    s.kind.name().to_string(),
                    format!("usable: {} — {note}; {users}", s.description),
                )),
                Err(f) => {
                    rows.push((
                        s.kind.name().to_string(),
                        format!("UNAVAILABLE: {} — {}; {users}", s.description, f.cause),
                    ));
                    rows.push((String::new(), format!("what to do: {}", f.fix)));
                }
            }
        }
        if self.stores.is_empty() {
            rows.push((
                "(none)".into(),
                "this build has no secret store for this operating system".into(),
            ));
        }
        sections.push((format!("stores on this machine ({})", self.os), rows));

        let mut rows = Vec::new();
        for f in &self.files {
            let by = f.source.map(|v| format!(" (from {v})")).unwrap_or_default();
            let state = match (&f.writable, f.exists) {
                (Ok(_), true) => "exists, writable".to_string(),
                (Ok(at), false) => format!(
                    "not there yet (created on first use; {} is writable)",
                    at.display()
                ),
                (Err(why), _) => format!("NOT WRITABLE: {why}"),
            };
            rows.push((
                f.label.to_string(),
                format!("{}{by}: {state}", f.path.display()),
            ));
        }
        sections.push(("files".into(), rows));

        let mut clock = format!(
            "{}: {}",
            format_time(self.clock.now),
            if self.clock.plausible() {
                "plausible"
            } else {
                "NOT PLAUSIBLE"
            }
        );
        match (self.clock.skew(), &self.clock.server) {
            (Some(skew), Some((origin, _))) => clock.push_str(&format!(
                "; {} {origin}'s Date",
                if skew.abs() <= 2 {
                    "agrees with".to_string()
                } else {
                    format!(
                        "{} {}",
                        format_span(skew.abs()),
                        if skew > 0 { "ahead of" } else { "behind" }
                    )
                }
            )),
            _ => clock.push_str("; no endpoint sent a Date to compare with"),
        }
        sections.push(("clock".into(), vec![("system time".into(), clock)]));

        for p in &self.profiles {
            let notes: Vec<&str> = [
                p.selected.then_some("selected"),
                (!p.configured).then_some("not in config.toml"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let mut title = format!("profile '{}'", p.name);
            if !notes.is_empty() {
                title.push_str(&format!(" ({})", notes.join("; ")));
            }
            let mut rows = Vec::new();
            let profile = match &p.resolved {
                Ok(profile) => profile,
                Err(why) => {
                    rows.push(("configuration".into(), format!("UNUSABLE: {why}")));
                    sections.push((title, rows));
                    continue;
                }
            };
            rows.push((
                "store".into(),
                match &p.store_failure {
                    None => format!("{}: usable", profile.store.name()),
                    Some(f) => format!("{}: UNAVAILABLE ({})", profile.store.name(), f.cause),
                },
            ));
            rows.push((
                "client id".into(),
                profile
                    .client_id
                    .clone()
                    .unwrap_or_else(|| "NONE: run `xero-auth client set --client-id ID`".into()),
            ));
            rows.push((
                "client secret".into(),
                match &p.client_secret {
                    Presence::Stored => "stored".into(),
                    Presence::Missing => {
                        "none (right for a PKCE app; a web app or custom connection needs one)"
                            .into()
                    }
                    Presence::Unknown(why) => why.clone(),
                },
            ));
            rows.push((
                "token set".into(),
                match &p.token_set {
                    Presence::Stored => {
                        "stored (`xero-auth status` shows its lifetimes)".to_string()
                    }
                    Presence::Missing => {
                        "NONE: run `xero-auth login` or `xero-auth import FILE`".into()
                    }
                    Presence::Unknown(why) => why.clone(),
                },
            ));
            for (role, url) in endpoint_roles(profile) {
                let probe = self
                    .endpoints
                    .iter()
                    .find(|e| e.uses.iter().any(|(n, r, _)| *n == p.name && *r == role));
                let result = match probe {
                    None => "opened in the browser; not checked from here".to_string(),
                    Some(e) => describe_answer(e),
                };
                rows.push((role.to_string(), format!("{url} — {result}")));
            }
            sections.push((title, rows));
        }

        let mut out = String::new();
        for (title, rows) in sections {
            out.push_str(&title);
            out.push('\n');
            for (label, text) in rows {
                out.push_str(&format!("  {label:<15} {text}\n"));
            }
        }

        if !self.warnings.is_empty() {
            out.push_str("warnings\n");
            for w in &self.warnings {
                out.push_str(&format!("  - {}\n    what to do: {}\n", w.what, w.fix));
            }
        }
        if !self.problems.is_empty() {
            out.push_str("problems\n");
            for (i, p) in self.problems.iter().enumerate() {
                out.push_str(&format!(
                    "  {}. [exit {}] {}\n     what to do: {}\n",
                    i + 1,
                    p.code(),
                    p.what,
                    p.fix
                ));
            }
        }
        out.push_str(&match self.problems.len() {
            0 => "verdict: every profile can be used (exit 0)\n".to_string(),
            n => format!(
                "verdict: {n} problem{} (exit {}, the first one's)\n",
                if n == 1 { "" } else { "s" },
                self.exit_code()
            ),
        });
        out
    }
}

fn describe_answer(e: &EndpointProbe) -> String {
    let via = e
        .proxy
        .map(|v| format!(" through the proxy in {v}"))
        .unwrap_or_default();
    match &e.answer {
        Answer::Http { status, millis, .. } if *status < 500 => {
            format!(
                "reachable{via} (HTTP {status} from {} in {millis} ms)",
                e.url
            )
        }
        Answer::Http { status, .. } => format!("FAILING{via}: HTTP {status} from {}", e.url),
        Answer::Failed { cause } => format!("UNREACHABLE{via}: {cause}"),
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

/// The profiles to check: the selected one first, then the configuration's.
fn profile_checks(ctx: &Context) -> Vec<ProfileCheck> {
    let configured = ctx.config.profile_names();
    let mut names = vec![ctx.profile_name.clone()];
    for name in &configured {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
        .into_iter()
        .map(|name| ProfileCheck {
            selected: name == ctx.profile_name,
            configured: configured.contains(&name),
            resolved: ctx
                .config
                .profile(&name, &*ctx.env)
                .map_err(|e| e.to_string()),
            store_failure: None,
            client_secret: Presence::Unknown("not checked".into()),
            token_set: Presence::Unknown("not checked".into()),
            name,
        })
        .collect()
}

/// A store call's error as a cause and a fix.
fn store_failure(err: Error) -> StoreFailure {
    match err {
        Error::StoreUnavailable { cause, fix, .. } => StoreFailure { cause, fix },
        other => StoreFailure {
            cause: other.to_string(),
            fix: "run `xero-auth status` for the full error; see docs/troubleshooting.md".into(),
        },
    }
}

/// A copy of `profile` whose store calls give up after [`MAX_WAIT`] at most.
fn bounded(profile: &Profile) -> Profile {
    let mut p = profile.clone();
    p.store_timeout = p.store_timeout.min(MAX_WAIT);
    p
}

/// Opening a file of the file store costs a scrypt run (a second or more on a slow machine):
/// its check gets at least this long.
const MIN_FILE_WAIT: Duration = Duration::from_secs(20);

/// The keychains this build has for the operating system it runs on (the file store, which
/// every system has, is checked on its own).
fn stores_of_this_os() -> Vec<StoreKind> {
    if cfg!(target_os = "linux") {
        vec![StoreKind::SecretService, StoreKind::Keyutils]
    } else if cfg!(target_os = "macos") {
        vec![StoreKind::Keychain]
    } else if cfg!(target_os = "windows") {
        vec![StoreKind::CredentialManager]
    } else {
        Vec::new()
    }
}

/// Reads an entry no profile has, off the runtime and bounded in time. For the Secret Service
/// the session bus is asked first, so the answer names the bus, the service and the keyring.
async fn probe_store(
    kind: StoreKind,
    env: &dyn Fn(&str) -> Option<String>,
    wait: Duration,
) -> std::result::Result<String, StoreFailure> {
    let bus = env("DBUS_SESSION_BUS_ADDRESS");
    let runtime_dir = env("XDG_RUNTIME_DIR");
    bounded_check(
        wait,
        "the store may be waiting for an unlock prompt nobody sees, or its daemon hangs: \
         unlock it or restart it",
        move || probe_store_blocking(kind, bus, runtime_dir),
    )
    .await
}

/// Runs a store check off the runtime; after `wait` it is reported as hanging, with `hang_fix`.
async fn bounded_check(
    wait: Duration,
    hang_fix: &str,
    check: impl FnOnce() -> std::result::Result<String, StoreFailure> + Send + 'static,
) -> std::result::Result<String, StoreFailure> {
    match tokio::time::timeout(
        wait,
        tokio::task::spawn_blocking(|| crate::stack::scrubbed(check)),
    )
    .await
    {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(join)) => Err(StoreFailure {
            cause: format!("the check failed unexpectedly ({join})"),
            fix: "run `xero-auth doctor -vvv` and report it".into(),
        }),
        Err(_) => Err(StoreFailure {
            cause: format!("no answer within {} s", wait.as_secs()),
            fix: hang_fix.into(),
        }),
    }
}

fn probe_store_blocking(
    kind: StoreKind,
    bus: Option<String>,
    runtime_dir: Option<String>,
) -> std::result::Result<String, StoreFailure> {
    #[cfg(target_os = "linux")]
    {
        linux::probe(kind, bus.as_deref(), runtime_dir.as_deref())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (bus, runtime_dir);
        Keychain::new(kind)
            .get(PROBE_ACCOUNT)
            .map(|_| "reachable".to_string())
    }
}

/// Checks that files can be created where the tool needs them: a probe file is created and
/// removed at once in the folder, or in its nearest existing parent when it is not there yet.
fn check_path(label: &'static str, path: PathBuf, source: Option<&'static str>) -> PathCheck {
    let exists = path.exists();
    let folder = if label == "config" {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        path.clone()
    };
    let at = nearest_existing(&folder);
    let writable = probe_writable(at)
        .map(|()| at.to_path_buf())
        .map_err(|e| format!("cannot create a file in {}: {e}", at.display()));
    PathCheck {
        label,
        path,
        source,
        exists,
        writable,
    }
}

/// `folder`, or its nearest parent that exists.
fn nearest_existing(folder: &Path) -> &Path {
    let mut at = folder;
    while !at.exists() {
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    at
}

fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".xero-auth-doctor-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_is_not_there_is_checked_at_its_nearest_parent() {
        let dir = tempfile::tempdir().unwrap();
        let check = check_path("state", dir.path().join("a/b"), None);
        assert!(!check.exists);
        assert_eq!(check.writable.unwrap(), dir.path());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe file is removed"
        );
    }
}
