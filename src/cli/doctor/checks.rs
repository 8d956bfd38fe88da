//! Gathering the report: each check in one place, in the order it runs.

use super::*;

impl Report {
    pub(super) async fn gather(ctx: &Context, all: bool) -> Report {
        let (profiles, not_checked) = profile_checks(ctx, all);
        let mut report = Report {
            os: std::env::consts::OS,
            stores: Vec::new(),
            files: Vec::new(),
            clock: ClockCheck {
                now: ctx.clock.now(),
                server: None,
            },
            profiles,
            not_checked,
            endpoints: Vec::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
            // Until the selected profile's entries are looked up (`check_contents`).
            fresh: ctx
                .config
                .profile_names()
                .iter()
                .all(|name| is_empty_table(ctx, name)),
        };
        // In the order of the report: a problem found earlier explains later ones (no store, so
        // nothing could be looked up; a wrong clock, so tokens look expired).
        report.check_profile_configs();
        report.check_stores(ctx).await;
        report.check_files(ctx);
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
        let ttl = ctx
            .profile()
            .map(|p| p.file_unlock_ttl)
            .unwrap_or(crate::config::DEFAULT_FILE_UNLOCK_TTL);
        let outcome = bounded_check(
            wait.max(MIN_FILE_WAIT),
            "the data folder may be on a network file system that hangs",
            move || crate::store::file::check(&probe_root, ttl),
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
        // A shared store is not of this machine: checked for each profile that uses one.
        let vault_profiles: Vec<crate::config::Profile> = resolved()
            .filter(|p| p.store == StoreKind::Vault)
            .cloned()
            .collect();
        for profile in vault_profiles {
            let store = crate::store::VaultStore::new(&profile);
            let description = store.describe();
            let name = profile.name.clone();
            let outcome = bounded_check(
                profile.store_timeout.min(MAX_WAIT).max(MIN_FILE_WAIT),
                "the server does not answer: check vault_addr and the network path to it",
                move || store.check(&name),
            )
            .await;
            self.stores.push(StoreCheck {
                kind: StoreKind::Vault,
                description,
                outcome,
                used_by: vec![profile.name.clone()],
            });
        }
        let overridden = ctx.store_override.is_some();
        if !overridden {
            for s in &self.stores {
                let Err(failure) = &s.outcome else { continue };
                if s.used_by.is_empty() {
                    // Information (the stores section shows it): no profile is stopped by it.
                } else if self.fresh {
                    // Only the selected profile, not set up yet, would use it: nothing is
                    // unusable today, but `client set` will be.
                    self.warnings.push(Warning {
                        what: format!(
                            "the secret store '{}' ({}), which {} would store the client in, is \
                             unavailable: {}",
                            s.kind.name(),
                            s.description,
                            crate::hint::command(&ctx.profile_name, "client set"),
                            failure.cause
                        ),
                        fix: failure.fix.clone(),
                    });
                } else {
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

    /// Every file and folder that decides where secrets go or what is stored, each through the
    /// one check the commands make (`crate::private_fs`): the configuration file and its folder,
    /// the state folder and its folders (refresh locks, rate limits, moves), the data folder and
    /// the file store's folder, and the files the profiles name (the passphrase file, AppRole's
    /// secret id file, Vault's CA certificate, the Vault CLI's token file). Then whether the
    /// refresh lock's file system can be trusted. Nothing is changed.
    fn check_files(&mut self, ctx: &Context) {
        let set_by = |key: &'static str| (ctx.env)(key).filter(|v| !v.is_empty()).map(|_| key);
        let state = &ctx.paths.state_dir;
        let data = &ctx.paths.data_dir;
        self.files = vec![
            check_folder(
                "config folder",
                ctx.paths.config_dir.clone(),
                set_by("XERO_AUTH_CONFIG_DIR"),
            ),
            check_file(
                "config",
                ctx.paths.config_file(),
                set_by("XERO_AUTH_CONFIG_DIR"),
                FileKind::Own,
                true,
            ),
            check_folder("state", state.clone(), set_by("XERO_AUTH_STATE_DIR")),
            check_folder("locks", RefreshLock::folder(&ctx.paths), None),
            check_folder("rate limits", state.join("limits"), None),
            check_folder("moves", state.join("moves"), None),
            check_folder("data", data.clone(), set_by("XERO_AUTH_DATA_DIR")),
            check_folder("file store", ctx.paths.file_store_dir(), None),
        ];
        for (label, path, source, kind) in named_files(ctx, &self.profiles) {
            self.files
                .push(check_file(label, path, source, kind, false));
        }
        for f in &self.files {
            match &f.trust {
                Some(Access::Refused(why)) => self.problems.push(Problem::other(
                    format!(
                        "the {} {} cannot be trusted: {why}; another user could change where \
                         xero-auth sends your secrets or what it stores, so commands refuse it",
                        f.label,
                        f.path.display()
                    ),
                    "make it yours and closed to others (`chmod go-w`, and `chmod 700` on a \
                     folder of xero-auth's), or choose other folders with XERO_AUTH_CONFIG_DIR, \
                     XERO_AUTH_STATE_DIR and XERO_AUTH_DATA_DIR",
                )),
                Some(Access::Loose(mode)) => self.warnings.push(Warning {
                    what: format!(
                        "the {} folder {} is open to other users (mode {mode:04o})",
                        f.label,
                        f.path.display()
                    ),
                    fix: "the next command that uses it makes it 0700 (or run `chmod 700` on it \
                          now)"
                        .into(),
                }),
                _ => {}
            }
            let Some(Err(why)) = &f.writable else {
                continue;
            };
            let what = format!("{} {}: {why}", f.label, f.path.display());
            if f.label == "state" {
                self.problems.push(Problem::other(
                    what,
                    "the refresh lock lives there: make the folder writable, or point \
                     XERO_AUTH_STATE_DIR at one that is",
                ));
            } else if f.label == "config" {
                self.warnings.push(Warning {
                    what,
                    fix: "`client set` and `tenants use` write the configuration: make the \
                          folder writable, or point XERO_AUTH_CONFIG_DIR at one that is"
                        .into(),
                });
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
            if p.store_failure.is_some() {
                // Why is said once, in the stores section and the problems.
                let why = "not checked: the store is unavailable".to_string();
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
            if self.fresh && p.selected {
                // A fresh install stays one only while nothing is stored for the selected
                // profile either (a token set imported before `client set` is a profile).
                self.fresh =
                    p.client_secret == Presence::Missing && p.token_set == Presence::Missing;
                if self.fresh {
                    continue;
                }
            }
            let nothing_stored =
                p.client_secret == Presence::Missing && p.token_set == Presence::Missing;
            if p.empty && !p.selected && nothing_stored {
                // A leftover table (`config unset` of its last key): nothing to use, nothing lost.
                continue;
            }
            if profile.client_id.is_none() {
                self.problems.push(Problem::nothing(
                    &p.name,
                    "client id",
                    format!(
                        "run {} with the id from developer.xero.com \
                         (or pick another profile with --profile NAME)",
                        crate::hint::command(&p.name, "client set --client-id ID")
                    ),
                ));
            }
            if p.token_set == Presence::Missing {
                self.problems.push(Problem::nothing(
                    &p.name,
                    "token set",
                    format!(
                        "run {}, or {} to move a token file into the keychain \
                         (or pick another profile with --profile NAME)",
                        crate::hint::command(&p.name, "login"),
                        crate::hint::command(&p.name, "import FILE")
                    ),
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
}

/// The profiles to check — the selected one, and with `all` the configuration's after it — and
/// the configuration's profiles left unchecked.
fn profile_checks(ctx: &Context, all: bool) -> (Vec<ProfileCheck>, Vec<String>) {
    let configured = ctx.config.profile_names();
    let mut names = vec![ctx.profile_name.clone()];
    let mut not_checked = Vec::new();
    for name in &configured {
        if names.contains(name) {
            continue;
        }
        if all {
            names.push(name.clone());
        } else {
            not_checked.push(name.clone());
        }
    }
    let checks = names
        .into_iter()
        .map(|name| ProfileCheck {
            selected: name == ctx.profile_name,
            configured: configured.contains(&name),
            empty: configured.contains(&name) && is_empty_table(ctx, &name),
            resolved: ctx
                .config
                .profile(&name, &*ctx.env)
                .map_err(|e| e.to_string()),
            store_failure: None,
            client_secret: Presence::Unknown("not checked".into()),
            token_set: Presence::Unknown("not checked".into()),
            name,
        })
        .collect();
    (checks, not_checked)
}

/// Whether config.toml's table for `name` sets nothing.
fn is_empty_table(ctx: &Context, name: &str) -> bool {
    crate::config::profile_keys().all(|key| ctx.config.raw_value(name, key).is_none())
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

/// One of xero-auth's own folders: whether files can be created in it (a probe file is created
/// and removed at once in the folder, or in its nearest existing parent when it is not there yet),
/// and what the file-and-folder check says of it.
fn check_folder(label: &'static str, path: PathBuf, source: Option<&'static str>) -> PathCheck {
    let at = nearest_existing(&path);
    let writable = probe_writable(at)
        .map(|()| at.to_path_buf())
        .map_err(|e| format!("cannot create a file in {}: {e}", at.display()));
    PathCheck {
        label,
        exists: path.exists(),
        trust: Some(crate::private_fs::inspect_folder(&path)),
        path,
        source,
        writable: Some(writable),
    }
}

/// A file read as `kind`: what the check says of it (nothing when it is not there), and, for one
/// the tool writes (`writable`), whether its folder takes new files.
fn check_file(
    label: &'static str,
    path: PathBuf,
    source: Option<&'static str>,
    kind: FileKind,
    writable: bool,
) -> PathCheck {
    let writable = writable.then(|| {
        let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let at = nearest_existing(&folder);
        probe_writable(at)
            .map(|()| at.to_path_buf())
            .map_err(|e| format!("cannot create a file in {}: {e}", at.display()))
    });
    PathCheck {
        label,
        exists: path.exists(),
        trust: crate::private_fs::inspect_file(&path, kind),
        path,
        source,
        writable,
    }
}

/// The files the profiles and the environment name that hold a secret or decide whom to trust,
/// once each: the file store's passphrase file, and for the vault store AppRole's secret id file,
/// the CA certificate and the Vault CLI's token file (`~/.vault-token`).
fn named_files(
    ctx: &Context,
    profiles: &[ProfileCheck],
) -> Vec<(&'static str, PathBuf, Option<&'static str>, FileKind)> {
    let mut files = Vec::new();
    let mut add = |label, path: PathBuf, source, kind| {
        if !files.iter().any(|(_, p, _, _)| *p == path) {
            files.push((label, path, source, kind));
        }
    };
    if let Some(path) = (ctx.env)(crate::store::file::PASSPHRASE_FILE_ENV).filter(|v| !v.is_empty())
    {
        add(
            "passphrase file",
            PathBuf::from(path),
            Some(crate::store::file::PASSPHRASE_FILE_ENV),
            FileKind::Secret,
        );
    }
    for profile in profiles.iter().filter_map(|p| p.resolved.as_ref().ok()) {
        if profile.store != StoreKind::Vault {
            continue;
        }
        let vault = &profile.vault;
        if let Some(path) = &vault.secret_id_file {
            add("vault secret id file", path.clone(), None, FileKind::Secret);
        }
        if let Some(path) = &vault.cacert {
            add("vault CA certificate", path.clone(), None, FileKind::Named);
        }
        if let Some(home) = (ctx.env)("HOME").filter(|v| !v.is_empty()) {
            add(
                "vault token file",
                Path::new(&home).join(".vault-token"),
                None,
                FileKind::Named,
            );
        }
    }
    files
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
        let check = check_folder("state", dir.path().join("a/b"), None);
        assert!(!check.exists);
        assert_eq!(check.writable.unwrap().unwrap(), dir.path());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe file is removed"
        );
    }
}
