//! Running a program and staying its parent, for the commands that outlive a 30-minute token
//! (`exec --server`, `mcp`): its environment without our secrets, passing stop signals on to
//! it, and the exit status to end with.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus};

use crate::error::{Error, Result};

/// Removes from `command`'s environment the secrets this process may have been given through
/// its own (the client secret, the file store's passphrase), so that a child never inherits them.
/// The Vault variables (`VAULT_TOKEN`, `BAO_TOKEN`, `VAULT_SECRET_ID`), taken out of this
/// process's environment at start-up, are the profile's credentials only when it uses the vault
/// store (`store`): otherwise they are the caller's own, for the programs it runs (a `terraform`
/// under `exec`), and the child gets them back.
pub fn without_secrets(command: &mut Command, store: crate::config::StoreKind) -> &mut Command {
    command
        .env_remove("XERO_CLIENT_SECRET")
        .env_remove(crate::store::file::PASSPHRASE_ENV);
    if store != crate::config::StoreKind::Vault {
        crate::store::vault::give_back_credentials(command);
    }
    command
}

/// Gives `command` the core-size and open-file limits the caller of xero-auth had, not the ones
/// xero-auth set for itself (`hardening.rs`, `serve/open_files.rs`): a program it starts may want
/// its own core dumps, and may not expect a very high open-file limit.
pub fn with_callers_limits(command: &mut Command) -> &mut Command {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the hook makes two async-signal-safe system calls and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                crate::hardening::restore_for_child();
                crate::serve::open_files::restore_for_child();
                Ok(())
            });
        }
    }
    command
}

/// The error for a program that could not be started: exit 127 when it was not found, 126
/// when it cannot be run (a shell's codes).
pub fn cannot_run(program: &OsStr, source: std::io::Error) -> Error {
    Error::CommandNotRun {
        program: program.to_string_lossy().into_owned(),
        source,
    }
}

/// Starts `command` as a child that is killed if this process drops it without waiting (an
/// error path), never left running on its own.
pub fn spawn(command: Command) -> Result<tokio::process::Child> {
    let mut command = command;
    with_callers_limits(&mut command);
    let program = command.get_program().to_owned();
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let child = command.spawn().map_err(|e| cannot_run(&program, e))?;
    crate::failpoints::crash_point("child-started");
    Ok(child)
}

/// The status a parent ends with for a child that ended with `status`: its exit code, or
/// 128 + N when signal N ended it (what a shell reports).
pub fn exit_code(status: ExitStatus) -> i32 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    status.code().unwrap_or(1)
}

/// SIGINT, SIGTERM and SIGHUP, caught for as long as this value lives: they no longer end this
/// process, they are passed on to the supervised child, and the command learns that it should
/// stop (end when the child does, start no other).
pub struct StopSignals {
    #[cfg(unix)]
    state: std::sync::Arc<unix::State>,
    #[cfg(unix)]
    ids: Vec<signal_hook_registry::SigId>,
}

impl StopSignals {
    /// Catches the signals. Call it before starting the child, so that no signal falls between.
    pub fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            unix::install()
        }
        #[cfg(not(unix))]
        {
            Ok(StopSignals {})
        }
    }

    /// Signals from now on go to process `pid` (the current child). A signal that arrived while
    /// there was no child to pass it on to (between catching and starting it: the child exists
    /// from its fork on, but its id is known here only once it runs) is passed on now.
    pub fn supervise(&self, pid: Option<u32>) {
        #[cfg(unix)]
        {
            let pid = pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
            self.state
                .child
                .store(pid, std::sync::atomic::Ordering::SeqCst);
            if pid > 0 {
                self.state.pass_on_unsent(pid);
            }
        }
        #[cfg(not(unix))]
        let _ = pid;
    }

    /// The last stop signal received, if any.
    pub fn received(&self) -> Option<i32> {
        #[cfg(unix)]
        {
            match self
                .state
                .received
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                0 => None,
                signal => Some(signal),
            }
        }
        #[cfg(not(unix))]
        None
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        #[cfg(unix)]
        for id in self.ids.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}

#[cfg(unix)]
mod unix {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI32, Ordering};

    use super::StopSignals;
    use crate::error::{Error, Result};

    pub(super) struct State {
        /// The child's process id; 0 while there is none.
        pub child: AtomicI32,
        /// The last stop signal received; 0 for none.
        pub received: AtomicI32,
        /// A stop signal sent by a process while there was no child to pass it on to; 0 for
        /// none. Whoever takes it (the handler or `supervise`) passes it on: exactly one does.
        pub unsent: AtomicI32,
    }

    impl State {
        /// Passes a signal kept in `unsent` on to `child`, if one is there (async-signal-safe:
        /// an atomic swap and kill(2)).
        pub fn pass_on_unsent(&self, child: i32) {
            let signal = self.unsent.swap(0, Ordering::SeqCst);
            if signal != 0 {
                // SAFETY: kill(2) with a process id and a signal number.
                unsafe { libc::kill(child, signal) };
            }
        }
    }

    /// Whether a signal was sent by a process (`kill`, a service manager, an MCP client stopping
    /// its server) rather than by the kernel for the terminal. Ctrl-C or a hang-up reaches the
    /// terminal's whole foreground process group, the child included: passing it on would
    /// deliver it twice (a second Ctrl-C can interrupt a program's own clean-up).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn sent_by_a_process(info: &libc::siginfo_t) -> bool {
        // SI_USER, SI_QUEUE, SI_TKILL… are zero or negative; SI_KERNEL is positive.
        info.si_code <= 0
    }

    /// Elsewhere the sender is not told apart: every signal is passed on.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn sent_by_a_process(_info: &libc::siginfo_t) -> bool {
        true
    }

    pub(super) fn install() -> Result<StopSignals> {
        let state = Arc::new(State {
            child: AtomicI32::new(0),
            received: AtomicI32::new(0),
            unsent: AtomicI32::new(0),
        });
        let mut ids = Vec::new();
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let state = state.clone();
            // SAFETY: the action only does what is allowed in a signal handler: atomic loads and
            // stores and kill(2), which is async-signal-safe.
            let id = unsafe {
                signal_hook_registry::register_sigaction(signal, move |info| {
                    state.received.store(signal, Ordering::SeqCst);
                    if !sent_by_a_process(info) {
                        return;
                    }
                    let child = state.child.load(Ordering::SeqCst);
                    if child > 0 {
                        libc::kill(child, signal);
                        return;
                    }
                    // No child known yet: kept for `supervise`, unless it stored one meanwhile.
                    state.unsent.store(signal, Ordering::SeqCst);
                    let child = state.child.load(Ordering::SeqCst);
                    if child > 0 {
                        state.pass_on_unsent(child);
                    }
                })
            }
            .map_err(|e| Error::io("cannot catch signals", "", e))?;
            ids.push(id);
        }
        Ok(StopSignals { state, ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn exit_codes_are_the_childs_or_128_plus_its_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(2)), 130);
    }

    #[test]
    fn a_child_never_inherits_our_secrets() {
        let mut command = Command::new("true");
        command.env("XERO_CLIENT_SECRET", "x").env("KEEP", "y");
        without_secrets(&mut command, crate::config::StoreKind::File);
        let envs: Vec<_> = command.get_envs().collect();
        assert!(envs.contains(&(OsStr::new("XERO_CLIENT_SECRET"), None)));
        assert!(envs.contains(&(OsStr::new(crate::store::file::PASSPHRASE_ENV), None)));
        assert!(envs.contains(&(OsStr::new("KEEP"), Some(OsStr::new("y")))));
    }
}
