//! One error type for the library and the binary, and the one table that maps it to exit codes.
//!
//! Every message says what happened and what the user can do. No variant carries a secret:
//! errors are built from names (profile, store, endpoint, file) and from the server's error
//! code, never from a token, a secret, or a response body that could echo one.

use std::path::PathBuf;

/// The exit codes of the command-line contract (docs/troubleshooting.md lists what to do for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Success = 0,
    /// Anything not covered below.
    Failure = 1,
    /// A usage error; clap reports these itself.
    Usage = 2,
    /// Nothing stored for this profile: run `client set` / `login` / `import`.
    NothingStored = 3,
    /// Xero rejected the refresh token or the client: authorise again.
    ReauthRequired = 4,
    /// The secret store is unavailable or locked.
    StoreUnavailable = 5,
    /// A temporary failure (network, timeout, 5xx, 429); stored credentials are unchanged.
    Temporary = 6,
    /// `exec`: the command was found but cannot be run (as a shell says it).
    CommandNotExecutable = 126,
    /// `exec`: the command was not found (as a shell says it).
    CommandNotFound = 127,
}

impl ExitCode {
    /// Every code a command ends with, and what it tells a user or a script: the EXIT STATUS
    /// section of the man pages.
    pub(crate) const MEANINGS: [(ExitCode, &'static str); 9] = [
        (ExitCode::Success, "success"),
        (
            ExitCode::Failure,
            "anything not below; the message names it",
        ),
        (
            ExitCode::Usage,
            "usage error: an unknown option, a missing argument",
        ),
        (
            ExitCode::NothingStored,
            "nothing stored for this profile: run client set, login or import",
        ),
        (
            ExitCode::ReauthRequired,
            "Xero rejected the refresh token (invalid_grant) or the client (invalid_client): \
             authorise again with login, or fix the client id or secret",
        ),
        (
            ExitCode::StoreUnavailable,
            "the secret store is unavailable or locked; the message names the store and the fix",
        ),
        (
            ExitCode::Temporary,
            "temporary failure (network, timeout, 5xx, 429 after bounded retries); stored \
             credentials are unchanged: run it again",
        ),
        (
            ExitCode::CommandNotExecutable,
            "exec: the command was found but cannot be run",
        ),
        (ExitCode::CommandNotFound, "exec: the command was not found"),
    ];
}

/// Why Xero asked for a new authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// `invalid_grant`: the refresh token expired, was revoked, or was reused outside the grace window.
    Grant,
    /// `invalid_client`: the client id or secret is wrong, or the app is not the kind (with
    /// or without a secret) the profile's client was sent as.
    Client {
        /// Whether the request authenticated with a client secret. Xero says only
        /// `invalid_client`, so this is what tells the two likely mistakes apart: a web app
        /// asked without its secret, or a PKCE app sent one it does not have.
        secret_sent: bool,
    },
}

/// Everything that can go wrong, each with what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing of the kind is stored for the profile (exit 3).
    #[error("profile '{profile}' has no {what} stored: {hint}")]
    NothingStored {
        /// The profile concerned.
        profile: String,
        /// What is missing, or what was being done.
        what: &'static str,
        /// What the user can do, with the commands to run.
        hint: String,
    },

    /// The selected profile is not in `config.toml`, and the command found something it needs
    /// missing: most likely a mistyped `--profile` (exit 3, as for any profile with nothing
    /// stored).
    #[error("{}", unknown_profile_message(.profile, .config, .known, .suggestion.as_deref()))]
    UnknownProfile {
        /// The profile asked for.
        profile: String,
        /// The configuration file.
        config: PathBuf,
        /// The profiles the file has.
        known: Vec<String>,
        /// The one of them the name most likely meant.
        suggestion: Option<String>,
    },

    /// Xero rejected the refresh token or the client: authorise again (exit 4).
    #[error("{}", reauth_message(.profile, .rejection, .endpoint, .description.as_deref(), *.unsaved_refresh_at))]
    ReauthRequired {
        /// The profile concerned.
        profile: String,
        /// Which rejection.
        rejection: Rejection,
        /// The endpoint that answered.
        endpoint: String,
        /// The server's description, shortened and with token-shaped words removed.
        description: Option<String>,
        /// When an earlier run sent a refresh whose answer it never saved (Unix seconds), if
        /// the lock file recorded one: the likely reason for an `invalid_grant`.
        unsaved_refresh_at: Option<i64>,
    },

    /// The secret store cannot be used (exit 5).
    #[error("the secret store '{store}' is unavailable: {cause}\n  what to do: {fix}")]
    StoreUnavailable {
        /// The store, as named in messages.
        store: String,
        /// What went wrong.
        cause: String,
        /// What the user can do.
        fix: String,
    },

    /// Xero rotated the tokens but the keychain refused the new set (exit 5).
    #[error(
        "Xero issued new tokens for profile '{profile}' but they could not be saved to '{store}': {cause}\n  \
         the previous refresh token stays usable for 30 minutes (Xero's grace period): fix the store \
         (see `xero-auth doctor`) and run {} again within that time",
        crate::hint::command(.profile, "refresh")
    )]
    StoreWriteFailed {
        /// The profile concerned.
        profile: String,
        /// The store, as named in messages.
        store: String,
        /// What went wrong.
        cause: String,
    },

    /// A temporary failure; stored credentials are unchanged (exit 6).
    #[error(
        "{what} failed temporarily ({cause}); nothing stored was changed — run the command again{}",
        .hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Temporary {
        /// What is missing, or what was being done.
        what: String,
        /// What went wrong.
        cause: String,
        /// What the user can do.
        hint: Option<String>,
    },

    /// A request was sent and no answer said whether it was carried out (exit 6): a timeout or
    /// a reset after sending, an answer cut short, a 2xx that could not be read. Nothing stored
    /// was changed, but for a refresh Xero may have replaced the refresh token: the stored one
    /// then works only inside Xero's grace window, and the message says until when.
    #[error("{}", unconfirmed_message(.profile, .what, .cause, *.first_sent))]
    Unconfirmed {
        /// The profile concerned.
        profile: String,
        /// What was being done, and where.
        what: String,
        /// What went wrong.
        cause: String,
        /// For a refresh: when a refresh was first sent with the stored refresh token (Unix
        /// seconds; by this run, or by an earlier one that never saved the answer). The grace
        /// window runs 30 minutes from then.
        first_sent: Option<i64>,
    },

    /// Xero's daily limit of API calls for an organisation is used up (exit 6, at once): a
    /// program running a batch stops here instead of retrying until the day resets.
    #[error(
        "Xero's daily API limit for tenant {tenant} is used up ({per_day} calls per rolling 24 hours); \
         calls are accepted again from {} — nothing was retried and nothing stored was changed; \
         run the command again after that time",
        crate::time::format_time(*.resets_at)
    )]
    DayLimit {
        /// The tenant (organisation) whose day budget is spent.
        tenant: String,
        /// The calls a day allows (the profile's `limits.per_day`).
        per_day: u32,
        /// When Xero accepts calls again (Unix seconds; now plus Xero's `Retry-After`).
        resets_at: i64,
    },

    /// An OAuth error other than `invalid_grant` / `invalid_client` (exit 1).
    #[error("{endpoint} answered with error '{code}'{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    OAuth {
        /// The endpoint that answered.
        endpoint: String,
        /// The OAuth error code.
        code: String,
        /// The server's description, shortened and with token-shaped words removed.
        description: Option<String>,
    },

    /// The API refused the access token again after a refresh (exit 4).
    #[error(
        "{endpoint} refused the access token again after a refresh (HTTP 401{}): the app's authorisation \
         is no longer accepted — authorise again with {} (it asks for the same scopes)",
        .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default(),
        crate::hint::command(.profile, "login")
    )]
    AccessRefused {
        /// The profile concerned.
        profile: String,
        /// The endpoint that answered.
        endpoint: String,
        /// The API's `Detail`, if any.
        detail: Option<String>,
    },

    /// The API refused a call that needs a scope the profile's token set was not granted
    /// (exit 4: a login that asks for it, with the user's consent, is the way on).
    #[error(
        "{endpoint} was refused (HTTP {status}): it needs the scope {needed}, and profile \
         '{profile}' was granted {granted}; ask for it with {login} (each organisation consents \
         again)"
    )]
    MissingScope {
        /// The profile concerned.
        profile: String,
        /// The method and URL refused.
        endpoint: String,
        /// Xero's status (401 or 403).
        status: u16,
        /// The scopes any one of which would do, as a phrase (`a or b`).
        needed: String,
        /// What the set was granted, as a phrase.
        granted: String,
        /// The login that asks for the first of them.
        login: String,
    },

    /// The API refused a call (HTTP 403) and the profile's access token reaches no organisation
    /// at all: the user's connections to the app are gone, and only a new authorisation brings
    /// them back (exit 4).
    #[error(
        "{endpoint} refused the call for tenant {tenant} (HTTP 403), and no organisation is \
         connected to the app for profile '{profile}' any more: Xero removes all of a user's \
         connections to an app when one of its logins is revoked — a `logout` of another profile \
         with the same client id, on this machine or another — or when the app is disconnected \
         in Xero. Nothing was deleted; connect again with {} (it asks for the same scopes)",
        crate::hint::command(.profile, "login")
    )]
    Disconnected {
        /// The profile concerned.
        profile: String,
        /// The request that was refused.
        endpoint: String,
        /// The tenant the call was for.
        tenant: String,
    },

    /// An HTTP answer that is not an OAuth error (exit 1).
    #[error("{endpoint} answered HTTP {status}: {summary}")]
    Http {
        /// The endpoint that answered.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// What the answer was.
        summary: String,
    },

    /// `config.toml` is not what the tool expects (exit 1).
    #[error("configuration error in {}{}: {message}", .path.display(),
            .at.map(|(line, column)| format!(", line {line}, column {column}")).unwrap_or_default())]
    Config {
        /// The file concerned.
        path: PathBuf,
        /// Line and column (from 1) of what is wrong, when known.
        at: Option<(usize, usize)>,
        /// What is wrong.
        message: String,
    },

    /// Bad input from the user: the message says what and how to fix it (exit 1).
    #[error("{0}")]
    InvalidInput(String),

    /// A token file that cannot be imported (exit 1).
    #[error("token file {}: {message}; the file and the keychain were left untouched", .path.display())]
    TokenFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// The stored token set or secret cannot be used as it is (exit 1).
    #[error("the token set stored for profile '{profile}' {message}")]
    StoredFormat {
        /// The profile concerned.
        profile: String,
        /// What is wrong.
        message: String,
    },

    /// Another process held the refresh lock too long (exit 6).
    #[error("timed out after {secs} s waiting for another xero-auth process to finish refreshing profile '{profile}' (lock file {}); if no other xero-auth is running, run the command again", .path.display())]
    LockTimeout {
        /// The profile concerned.
        profile: String,
        /// The file concerned.
        path: PathBuf,
        /// How long the wait was.
        secs: u64,
    },

    /// `exec` could not start its command: exit 127 when it was not found, 126 when it was
    /// found but cannot be run — a shell's and `env`'s codes, so a script can tell them from the
    /// command's own failures.
    #[error("cannot run '{program}': {source}{}", if .source.kind() == std::io::ErrorKind::NotFound { " (not found: check the name, or give its path)" } else { "" })]
    CommandNotRun {
        /// The command as given.
        program: String,
        /// Why it could not be started.
        #[source]
        source: std::io::Error,
    },

    /// A file-system error (exit 1).
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What is missing, or what was being done.
        what: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file or folder that decides where secrets go or what is stored, which another user
    /// could change (exit 1): see `crate::private_fs`.
    #[error("{} cannot be trusted: {why}, so another user could change what xero-auth reads or writes there (and where it sends your client secret and tokens). Nothing was done; {fix}", .path.display())]
    Untrusted {
        /// The file or folder concerned.
        path: PathBuf,
        /// Why it cannot be trusted.
        why: String,
        /// What the user can do.
        fix: String,
    },
}

fn unknown_profile_message(
    profile: &str,
    config: &std::path::Path,
    known: &[String],
    suggestion: Option<&str>,
) -> String {
    let create = format!(
        "{}, then {} (or {})",
        crate::hint::command(profile, "client set --client-id ID"),
        crate::hint::command(profile, "login"),
        crate::hint::command(profile, "import FILE"),
    );
    if known.is_empty() {
        return format!(
            "no profile '{profile}' in {}: no profiles are configured yet; start with {create} \
             (docs/getting-started.md)",
            config.display()
        );
    }
    let meant = suggestion
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default();
    format!(
        "no profile '{profile}' in {}{meant}; profiles: {} — choose one with --profile NAME \
         (or XERO_AUTH_PROFILE), or create '{profile}' with {create}",
        config.display(),
        known.join(", ")
    )
}

fn reauth_message(
    profile: &str,
    rejection: &Rejection,
    endpoint: &str,
    description: Option<&str>,
    unsaved_refresh_at: Option<i64>,
) -> String {
    let detail = description.map(|d| format!(" ({d})")).unwrap_or_default();
    let login = crate::hint::command(profile, "login");
    let import = crate::hint::command(profile, "import FILE --force");
    match (rejection, unsaved_refresh_at) {
        (Rejection::Grant, Some(sent_at)) => format!(
            "Xero rejected the refresh token of profile '{profile}' (invalid_grant from {endpoint}){detail}. \
             An earlier xero-auth run sent a refresh at {} and ended before it saved Xero's answer \
             (it was killed, or the keychain refused the write). That refresh most likely used up the \
             stored refresh token: Xero accepts it again only for 30 minutes after that first use, and \
             that time has passed (otherwise the token expired unused for 60 days or was revoked). \
             Nothing was deleted. Authorise again: {login}, which asks for the same scopes (or {import})",
            crate::time::format_time(sent_at)
        ),
        (Rejection::Grant, None) => format!(
            "Xero rejected the refresh token of profile '{profile}' (invalid_grant from {endpoint}){detail}: \
             it expired (60 days unused), was revoked, or was already used elsewhere. Nothing was deleted. \
             Authorise again: {login}, which asks for the same scopes (or {import})"
        ),
        (Rejection::Client { secret_sent: true }, _) => format!(
            "Xero rejected the client of profile '{profile}' (invalid_client from {endpoint}){detail}: \
             the client id or secret is wrong, or the app is a PKCE app, which has no secret and \
             is refused when sent one (a client secret is stored for this profile). Nothing was \
             deleted. Check the app at developer.xero.com: for a web app or custom connection run \
             {} with its current secret; for a PKCE app run {}",
            crate::hint::command(profile, "client set --client-id ID"),
            crate::hint::command(profile, "client set --client-id ID --public")
        ),
        (Rejection::Client { secret_sent: false }, _) => format!(
            "Xero rejected the client of profile '{profile}' (invalid_client from {endpoint}){detail}: \
             the client id is wrong, or the app needs its secret — no client secret is stored for \
             this profile, so it was sent as a PKCE app's (client id only). Nothing was deleted. \
             Check the app at developer.xero.com: for a web app or custom connection run {} with \
             the app's secret (asked for, or from XERO_CLIENT_SECRET or --secret-stdin)",
            crate::hint::command(profile, "client set --client-id ID")
        ),
    }
}

/// How long Xero accepts a refresh token again after its first use (its grace period for
/// answers that were lost).
pub const GRACE_SECS: i64 = 30 * 60;

fn unconfirmed_message(profile: &str, what: &str, cause: &str, first_sent: Option<i64>) -> String {
    match first_sent {
        Some(sent) => format!(
            "{what} failed ({cause}), and a refresh with the stored refresh token may have reached \
             Xero: if it did, Xero has replaced that token, and the stored one stays usable only \
             until {} (30 minutes after it was first sent, at {}: Xero's grace period). Nothing \
             stored was changed: run the command again before then — a cron job or script should \
             retry within those 30 minutes, not wait for its next run. Past that time, if Xero \
             refuses the stored token, authorise again with {}",
            crate::time::format_time(sent.saturating_add(GRACE_SECS)),
            crate::time::format_time(sent),
            crate::hint::command(profile, "login")
        ),
        None => format!(
            "{what} failed ({cause}) after the request was sent, so it may have been carried out; \
             nothing stored was changed — run the command again"
        ),
    }
}

impl Error {
    /// The exit status for this error: the one place errors become exit codes.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::NothingStored { .. } | Error::UnknownProfile { .. } => ExitCode::NothingStored,
            Error::ReauthRequired { .. }
            | Error::AccessRefused { .. }
            | Error::MissingScope { .. }
            | Error::Disconnected { .. } => ExitCode::ReauthRequired,
            Error::StoreUnavailable { .. } | Error::StoreWriteFailed { .. } => {
                ExitCode::StoreUnavailable
            }
            Error::Temporary { .. }
            | Error::Unconfirmed { .. }
            | Error::LockTimeout { .. }
            | Error::DayLimit { .. } => ExitCode::Temporary,
            Error::CommandNotRun { .. } if self.not_found() => ExitCode::CommandNotFound,
            Error::CommandNotRun { .. } => ExitCode::CommandNotExecutable,
            Error::OAuth { .. }
            | Error::Http { .. }
            | Error::Config { .. }
            | Error::InvalidInput(_)
            | Error::TokenFile { .. }
            | Error::StoredFormat { .. }
            | Error::Untrusted { .. }
            | Error::Io { .. } => ExitCode::Failure,
        }
    }

    /// True for a [`Error::CommandNotRun`] whose command does not exist.
    fn not_found(&self) -> bool {
        matches!(self, Error::CommandNotRun { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// An I/O error on `path` while doing `what`.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_the_table() {
        let temp = Error::Temporary {
            what: "refresh".into(),
            cause: "timeout".into(),
            hint: None,
        };
        assert_eq!(temp.exit_code() as u8, 6);
        let reauth = Error::ReauthRequired {
            profile: "p".into(),
            rejection: Rejection::Grant,
            endpoint: "e".into(),
            description: None,
            unsaved_refresh_at: None,
        };
        assert_eq!(reauth.exit_code() as u8, 4);
        assert!(reauth.to_string().contains("xero-auth login --profile p"));
        let store = Error::StoreUnavailable {
            store: "s".into(),
            cause: "c".into(),
            fix: "f".into(),
        };
        assert_eq!(store.exit_code() as u8, 5);
        let nothing = Error::NothingStored {
            profile: "p".into(),
            what: "token set",
            hint: "h".into(),
        };
        assert_eq!(nothing.exit_code() as u8, 3);
        assert_eq!(Error::InvalidInput("x".into()).exit_code() as u8, 1);
        let day = Error::DayLimit {
            tenant: "t".into(),
            per_day: 5000,
            resets_at: 1_800_000_000,
        };
        assert_eq!(day.exit_code() as u8, 6);
        let message = day.to_string();
        assert!(
            message.contains("5000 calls") && message.contains("2027-01-15T08:00:00Z"),
            "{message}"
        );
    }
}
