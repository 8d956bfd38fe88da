//! Every integration test, built as one binary: one link of the library and its dependencies
//! instead of one per file, and the files' tests run side by side. Each module was once its own
//! test binary; run one with `cargo test --test it -- NAME::` (e.g. `-- crash::`).

#[macro_use]
mod support;

mod api_exec;
mod audit;
mod clock_and_data;
mod completion_shells;
mod completions_man;
mod crash;
#[cfg(target_os = "linux")]
mod desktop;
mod docs_examples;
mod doctor;
mod entry_limit;
mod exec_server;
mod faults;
#[cfg(unix)]
mod file_safety;
mod file_store;
#[cfg(target_os = "linux")]
mod file_unlock;
mod import_token_refresh;
mod install_version;
mod keep_alive;
#[cfg(target_os = "linux")]
mod keyutils;
mod lock;
mod login_tenants_logout;
mod mcp;
mod mcp_xero_server;
#[cfg(target_os = "linux")]
mod process_view;
mod profiles_config;
mod rate_limits;
mod scopes;
mod sdk;
mod secrets_and_bad_input;
mod store_faults;
mod store_move;
mod storm;
mod vault_store;
