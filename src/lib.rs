//! # xero-auth
//!
//! Keeps a Xero app's client secret and OAuth 2.0 tokens in the operating system's keychain
//! (Secret Service on Linux, Keychain on macOS, Credential Manager on Windows) instead of a
//! plaintext file, refreshes them under a cross-process lock so that Xero's single-use refresh
//! tokens are never lost or raced, and hands valid access tokens to scripts and programs.
//!
//! The command-line tool is a thin layer over this library; [`session::Session`] is the piece
//! a program uses:
//!
//! ```no_run
//! use xero_auth::session::Session;
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
//! Secrets are [`secrecy::SecretString`]s: `Debug` shows them redacted, and they are wiped when
//! dropped. Errors are [`Error`]s whose [`Error::exit_code`] is the CLI's exit status.

#![warn(missing_docs)]

pub mod child;
pub mod cli;
pub mod config;
pub mod error;
pub mod failpoints;
pub mod guard;
pub mod hardening;
pub mod hint;
pub mod http;
pub mod import;
pub mod limits;
pub mod login;
mod names;
pub mod oauth;
pub mod private_fs;
pub mod secret;
pub mod serve;
pub mod session;
pub mod stack;
pub mod store;
pub mod time;
pub mod token_set;
pub mod xero;

pub use error::{Error, ExitCode, Result};
