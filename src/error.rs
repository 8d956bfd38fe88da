//! One error type for the library and the binary, and the one table that maps it to exit codes.
//!
//! Every message says what happened and what the user can do. No variant carries a secret:
//! errors are built from names (profile, store, endpoint, file) and from the server's error
//! code, never from a token, a secret, or a response body that could echo one.

use std::path::PathBuf;

/// The exit codes of the command-line contract (DESIGN.md, "Exit codes").
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
}

/// Why Xero asked for a new authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// `invalid_grant`: the refresh token expired, was revoked, or was reused outside the grace window.
    Grant,
    /// `invalid_client`: the client id or secret is wrong.
    Client,
}

/// Everything that can go wrong, each with what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("profile '{profile}' has no {what} stored: {hint}")]
    NothingStored {
        profile: String,
        what: &'static str,
        hint: &'static str,
    },

    #[error("{}", reauth_message(.profile, .rejection, .endpoint, .description.as_deref()))]
    ReauthRequired {
        profile: String,
        rejection: Rejection,
        endpoint: String,
        description: Option<String>,
    },

    #[error("the secret store '{store}' is unavailable: {cause}\n  what to do: {fix}")]
    StoreUnavailable {
        store: String,
        cause: String,
        fix: String,
    },

    #[error(
        "Xero issued new tokens for profile '{profile}' but they could not be saved to '{store}': {cause}\n  \
         the previous refresh token stays usable for 30 minutes (Xero's grace period): fix the store \
         (see `xero-auth doctor`) and run `xero-auth refresh --profile {profile}` again within that time"
    )]
    StoreWriteFailed {
        profile: String,
        store: String,
        cause: String,
    },

    #[error(
        "{what} failed temporarily ({cause}); nothing stored was changed — run the command again{}",
        .hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Temporary {
        what: String,
        cause: String,
        hint: Option<String>,
    },

    #[error("{endpoint} answered with error '{code}'{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    OAuth {
        endpoint: String,
        code: String,
        description: Option<String>,
    },

    #[error(
        "{endpoint} refused the access token again after a refresh (HTTP 401{}): the app's authorisation \
         is no longer accepted — authorise again with `xero-auth login --profile {profile}`",
        .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    AccessRefused {
        profile: String,
        endpoint: String,
        detail: Option<String>,
    },

    #[error("{endpoint} answered HTTP {status}: {summary}")]
    Http {
        endpoint: String,
        status: u16,
        summary: String,
    },

    #[error("configuration error in {}: {message}", .path.display())]
    Config { path: PathBuf, message: String },

    #[error("{0}")]
    InvalidInput(String),

    #[error("token file {}: {message}; the file and the keychain were left untouched", .path.display())]
    TokenFile { path: PathBuf, message: String },

    #[error("the token set stored for profile '{profile}' {message}")]
    StoredFormat { profile: String, message: String },

    #[error("timed out after {secs} s waiting for another xero-auth process to finish refreshing profile '{profile}' (lock file {}); if no other xero-auth is running, run the command again", .path.display())]
    LockTimeout {
        profile: String,
        path: PathBuf,
        secs: u64,
    },

    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn reauth_message(
    profile: &str,
    rejection: &Rejection,
    endpoint: &str,
    description: Option<&str>,
) -> String {
    let detail = description.map(|d| format!(" ({d})")).unwrap_or_default();
    match rejection {
        Rejection::Grant => format!(
            "Xero rejected the refresh token of profile '{profile}' (invalid_grant from {endpoint}){detail}: \
             it expired (60 days unused), was revoked, or was already used elsewhere. Nothing was deleted. \
             Authorise again: `xero-auth login --profile {profile}` (or `xero-auth import FILE --force`)"
        ),
        Rejection::Client => format!(
            "Xero rejected the client of profile '{profile}' (invalid_client from {endpoint}){detail}: \
             the client id or secret is wrong. Nothing was deleted. Check the app at developer.xero.com \
             and run `xero-auth client set --profile {profile} --client-id ID`"
        ),
    }
}

impl Error {
    /// The exit status for this error: the one place errors become exit codes.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::NothingStored { .. } => ExitCode::NothingStored,
            Error::ReauthRequired { .. } | Error::AccessRefused { .. } => ExitCode::ReauthRequired,
            Error::StoreUnavailable { .. } | Error::StoreWriteFailed { .. } => {
                ExitCode::StoreUnavailable
            }
            Error::Temporary { .. } | Error::LockTimeout { .. } => ExitCode::Temporary,
            Error::OAuth { .. }
            | Error::Http { .. }
            | Error::Config { .. }
            | Error::InvalidInput(_)
            | Error::TokenFile { .. }
            | Error::StoredFormat { .. }
            | Error::Io { .. } => ExitCode::Failure,
        }
    }

    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
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
            hint: "h",
        };
        assert_eq!(nothing.exit_code() as u8, 3);
        assert_eq!(Error::InvalidInput("x".into()).exit_code() as u8, 1);
    }
}
