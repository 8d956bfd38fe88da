//! # xero-auth
//!
//! Keeps a Xero app's client secret and OAuth 2.0 tokens in the operating system's keychain
//! (Secret Service on Linux, Keychain on macOS, Credential Manager on Windows) instead of a
//! plaintext file, refreshes them under a cross-process lock so that Xero's single-use refresh
//! tokens are never lost or raced, and hands valid access tokens to scripts and programs.
//!
//! The command-line tool is a thin layer over this library; [`Session`] is the piece a program
//! uses:
//!
//! ```no_run
//! use xero_auth::Session;
//!
//! # async fn organisation() -> Result<(), Box<dyn std::error::Error>> {
//! // The profile the CLI set up (`xero-auth client set`, `xero-auth login`).
//! let session = Session::from_profile("default")?;
//!
//! // A token valid for at least 5 minutes, refreshed under the cross-process lock if needed.
//! let token = session.access_token().await?;
//! # drop(token);
//!
//! // Or let the session send the request: Authorization and Xero-Tenant-Id are added, a 401 gets
//! // one refresh and one retry, a 429 waits Retry-After within a bound.
//! let url = session.profile().endpoints.api.join("api.xro/2.0/Organisation")?;
//! let response = session.send(session.http().await?.get(url)).await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```
//!
//! ## The API
//!
//! What is listed here is the whole of it; everything else in the crate is private.
//!
//! - [`Session`]: one profile's tokens, refreshed under the cross-process lock.
//!   [`Session::from_profile`] builds it from the CLI's configuration;
//!   [`Session::with_margin`], [`Session::with_tenant`], [`Session::with_max_wait`] and
//!   [`Session::without_rate_limits`] adjust it; [`Session::access_token`], [`Session::send`],
//!   [`Session::valid_token_set`] and [`Session::force_refresh`] (its [`Refreshed`]) use it;
//!   [`Session::profile`], [`Session::paths`], [`Session::tenant`] and [`Session::http`] read it.
//!   Writing a profile's secrets (login, import, logout) is the commands' alone: it goes through
//!   the refresh protocol's guard, which is not part of the API.
//! - [`Profile`] with its [`Endpoints`], [`StoreKind`] (and its [`StoreKind::name`]),
//!   [`RateLimits`] and [`VaultSettings`]: one profile, resolved from `config.toml` and the
//!   environment, read through their fields (each `#[non_exhaustive]`, like [`Refreshed`] and
//!   [`Rejection`]: a new setting, store or field is not a breaking change); [`Paths`]: where
//!   the configuration and state live (its fields and [`Paths::config_file`]).
//! - [`TokenSet`]: a read-only view of the stored tokens ([`TokenSet::access_token`],
//!   [`TokenSet::expires_at`], [`TokenSet::scopes`], [`TokenSet::obtained_at`],
//!   [`TokenSet::refresh_lapses_at`]). The single-use refresh token has no getter: only the
//!   refresh protocol spends it. `Debug` never shows a token.
//! - [`Error`] (`#[non_exhaustive]`: a new kind of failure is not a breaking change), its
//!   [`Rejection`], [`ExitCode`] (the CLI's exit status for an error, [`Error::exit_code`]) and
//!   [`Result`].
//! - [`SecretString`] and [`ExposeSecret`] (re-exported from `secrecy`): secrets show redacted in
//!   `Debug` and are wiped when dropped.
//! - [`runtime`]: a single-threaded tokio runtime whose blocking threads (every secret store call
//!   runs on one) wipe their stacks before they stop; a program that has its own runtime wipes
//!   its own threads.
//! - [`reqwest`], re-exported: [`Session::send`] takes a `reqwest::RequestBuilder` and
//!   [`Session::http`] gives the client it is built from, so a program uses this re-export to
//!   get the version the session speaks rather than adding its own `reqwest`, which could differ.
//!
//! ## Features
//!
//! - `cli` (default): the `xero-auth` binary and the crates only it needs (clap, its completion
//!   and man page generators, `open`, `tracing-subscriber`, `signal-hook-registry`). A program
//!   that embeds the library depends on it with `default-features = false`:
//!   `xero-auth = { version = "0.1", default-features = false }`.
//! - `hardening` (default): the binary's process hardening and its allocator that wipes freed
//!   memory. The library never sets a global allocator for the program that embeds it.
//! - `failpoints`: crash points for the crash tests; never in a release build.
//! - `test-support`: makes the internal modules public for the crate's own tests and fuzz
//!   targets, with a `testing` module for what the public types above keep to the crate (a
//!   session built from its parts, a token set's every field). Not part of the API: nothing
//!   reached through it is stable.

#![warn(missing_docs)]
// Without the `cli` feature (a program's build, and the fuzz targets') the library is compiled
// without the commands, so what only they use (the process hardening, the grants of login and
// logout, doctor's checks, the stores' moving and unlocking, ...) is unused there, and so are the
// re-exports that bring it to them. The binary's build (`cli`) reports dead code as usual, and
// `scripts/test` lints it without `test-support` (which makes every module public, so that
// nothing looks unused).
#![cfg_attr(not(feature = "cli"), allow(dead_code, unused_imports))]

/// Declares the crate's internal modules: private, or public (and hidden from the docs) with
/// the `test-support` feature, for the integration tests and fuzz targets that drive internals.
macro_rules! internal {
    ($($(#[$attr:meta])* mod $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "test-support")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "test-support"))]
        mod $name;
    )*};
}

internal! {
    mod audit;
    #[cfg(feature = "cli")]
    mod child;
    #[cfg(feature = "cli")]
    mod cli;
    mod config;
    mod error;
    mod failpoints;
    mod guard;
    mod hardening;
    mod hint;
    mod http;
    mod names;
    #[cfg(any(feature = "cli", feature = "test-support"))]
    mod import;
    mod limits;
    #[cfg(any(feature = "cli", feature = "test-support"))]
    mod login;
    mod oauth;
    mod plans;
    mod private_fs;
    mod scopes;
    mod secret;
    #[cfg(feature = "cli")]
    mod serve;
    mod session;
    mod stack;
    mod store;
    mod time;
    mod token_set;
    mod xero;
}

/// What the crate's integration tests and fuzz targets reach that the API keeps to the crate.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod testing;

pub use config::{Endpoints, Paths, Profile, RateLimits, StoreKind, VaultSettings};
pub use error::{Error, ExitCode, Rejection, Result};
pub use reqwest;
pub use secrecy::{ExposeSecret, SecretString};
pub use session::{Refreshed, Session};
pub use stack::runtime;
pub use token_set::{RefusedToken, TokenSet};

/// The `xero-auth` binary's whole run, from process set-up to its exit status; the binary's
/// `main` calls it. Not part of the API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub use cli::process::main as cli_main;
