//! # xero-auth
//!
//! Keeps a Xero app's client secret and OAuth 2.0 tokens in the operating system's keychain
//! (Secret Service on Linux, Keychain on macOS, Credential Manager on Windows) instead of a
//! plaintext file, refreshes them under a cross-process lock so that Xero's single-use refresh
//! tokens are never lost or raced, and hands valid access tokens to scripts and programs.
//!
//! The command-line tool is a thin layer over this library; [`session::Session`] is the piece
//! a program uses.

pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod import;
pub mod login;
pub mod oauth;
pub mod secret;
pub mod session;
pub mod store;
pub mod token_set;
pub mod xero;

pub use error::{Error, ExitCode, Result};
