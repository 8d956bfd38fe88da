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
//! - [`Session`]: one profile's tokens, refreshed under the cross-process lock;
//!   [`Session::from_profile`] builds it from the CLI's configuration, `with_*` methods adjust it
//!   (margin, tenant, how long to wait for another process's refresh), and
//!   [`Session::access_token`], [`Session::send`], [`Session::valid_token_set`] and
//!   [`Session::force_refresh`] (its [`Refreshed`]) use it.
//! - [`Profile`] with its [`Endpoints`], [`StoreKind`], [`RateLimits`] and [`VaultSettings`]:
//!   one profile, resolved from `config.toml` and the environment; [`Paths`]: where the
//!   configuration and state live.
//! - [`TokenSet`]: the stored tokens as a session reads them (`Debug` never shows a token).
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
//!   targets. Not part of the API: nothing reached through it is stable.

#![warn(missing_docs)]
// The modules are private and their items `pub` for one another, so the compiler now sees which
// of them nothing uses: the items only the integration tests reach (through `test-support`) and,
// without the `cli` feature, what only the commands use. Each such item is to get its own `cfg`
// (or go) as the modules settle; until then the check is off where it cannot be right.
#![cfg_attr(
    not(feature = "test-support"),
    warn(dead_code, clippy::wrong_self_convention)
)]
// Some docs of public items still link to private ones (`Session::send` to the rate limits,
// `TokenSet::from_json` to the split store, ...): rustdoc renders those links as plain text for a
// reader of the API. To go once the methods only the crate calls are `pub(crate)`.
#![warn(rustdoc::private_intra_doc_links)]

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
    mod private_fs;
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

pub use config::{Endpoints, Paths, Profile, RateLimits, StoreKind, VaultSettings};
pub use error::{Error, ExitCode, Rejection, Result};
pub use reqwest;
pub use secrecy::{ExposeSecret, SecretString};
pub use session::{Refreshed, Session};
pub use stack::runtime;
pub use token_set::TokenSet;

/// The `xero-auth` binary's whole run, from process set-up to its exit status; the binary's
/// `main` calls it. Not part of the API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub use cli::process::main as cli_main;
