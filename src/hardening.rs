//! Process hardening at start-up, before any secret is read.
//!
//! - **Linux**: `prctl(PR_SET_DUMPABLE, 0)` — no core dump, and `/proc/PID/mem`, `ptrace` attach
//!   and `/proc/PID/environ` are refused to other processes of the same user (root keeps them);
//!   the soft `RLIMIT_CORE` 0 as well, for kernels or container set-ups that ignore the first.
//! - **macOS**: the soft `RLIMIT_CORE` 0. `ptrace(PT_DENY_ATTACH)` is not used: it only stops debuggers
//!   that honour it (it is trivially bypassed by a process with the user's rights, which could
//!   read the keychain anyway), and it makes crash reports and debugging of the tool impossible.
//! - **Windows**: nothing to switch from inside the process: Windows Error Reporting's dumps are
//!   configured per machine (LocalDumps registry key), and other processes of the same user can
//!   open this one for reading. docs/security.md says so.
//!
//! `XERO_AUTH_ALLOW_CORE_DUMPS=1` skips the hardening, for debugging the tool itself.
//!
//! Only the soft core-size limit is lowered, and the caller's limits are kept: `exec`'s command
//! replaces this process and would otherwise inherit a limit of 0 it may not raise (a hard limit
//! of 0 cannot be raised again without privilege). [`restore_for_child`] puts the caller's limits
//! back just before the command is started; `PR_SET_DUMPABLE` needs nothing, as `execve` resets
//! it.
#![cfg_attr(
    not(unix),
    allow(dead_code, reason = "what is undone before a child runs exists on Unix only")
)]

/// What [`harden_process`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardening {
    /// Core dumps and ptrace by other processes of the user are refused.
    #[cfg_attr(not(unix), allow(dead_code, reason = "only Unix has the hardening"))]
    Applied,
    /// `XERO_AUTH_ALLOW_CORE_DUMPS=1` asked to skip it.
    SkippedByRequest,
    /// Nothing applies on this platform.
    #[cfg_attr(unix, allow(dead_code, reason = "only the platforms without hardening have it"))]
    NotAvailable,
}

/// Applies the platform's hardening; see the module documentation.
pub fn harden_process() -> Hardening {
    if std::env::var_os("XERO_AUTH_ALLOW_CORE_DUMPS").is_some_and(|v| v == "1") {
        return Hardening::SkippedByRequest;
    }
    platform::harden()
}

/// Puts back the core-size limits the process started with, for a program about to replace it
/// (`exec`'s command). Async-signal-safe (one system call, no allocation): it may run between
/// `fork` and `exec`. Does nothing when the hardening was not applied.
pub fn restore_for_child() {
    platform::restore();
}

/// Lowers the soft core-size limit to 0 again after [`restore_for_child`], when the program
/// could not be started and this process carries on. Does nothing when the hardening was not
/// applied.
pub fn reapply_after_failed_exec() {
    platform::reapply();
}

#[cfg(unix)]
mod platform {
    use super::Hardening;
    use std::sync::OnceLock;

    /// The core-size limits the process started with.
    static CALLERS: OnceLock<libc::rlimit> = OnceLock::new();

    pub fn harden() -> Hardening {
        let mut callers = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls with valid arguments; failures are ignored on purpose (a
        // sandbox may forbid them, and the tool must still work there).
        unsafe {
            if libc::getrlimit(libc::RLIMIT_CORE, &mut callers) == 0 {
                let _ = CALLERS.set(callers);
            }
            no_core(callers.rlim_max);
            #[cfg(any(target_os = "linux", target_os = "android"))]
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        Hardening::Applied
    }

    /// Soft limit 0, hard limit as given (the caller's: lowering it could not be undone).
    fn no_core(hard: libc::rlim_t) {
        let limits = libc::rlimit {
            rlim_cur: 0,
            rlim_max: hard,
        };
        // SAFETY: one system call with a valid argument; a failure is ignored (see harden).
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &limits);
        }
    }

    pub fn reapply() {
        if let Some(callers) = CALLERS.get() {
            no_core(callers.rlim_max);
        }
    }

    pub fn restore() {
        if let Some(callers) = CALLERS.get() {
            // SAFETY: one system call with a valid argument; raising the soft limit back up to
            // the hard limit, which was left as it was, is always allowed.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, callers);
            }
        }
    }
}

#[cfg(not(unix))]
mod platform {
    use super::Hardening;

    pub fn harden() -> Hardening {
        Hardening::NotAvailable
    }

    pub fn restore() {}

    pub fn reapply() {}
}

/// Wipes the value of environment variable `name` in place, where the process's environment
/// block keeps it (the initial stack on Unix, which no allocator ever frees). Called once a
/// secret given through the environment has been copied into a wiping buffer.
pub fn wipe_env_value(name: &str) {
    #[cfg(unix)]
    {
        let Ok(cname) = std::ffi::CString::new(name) else {
            return;
        };
        // SAFETY: getenv returns a pointer into the environment block or null; the bytes up to
        // the NUL are the value and are writable. Nothing else reads this variable concurrently:
        // the tool reads it once, on this thread, before this call.
        unsafe {
            let value = libc::getenv(cname.as_ptr());
            if !value.is_null() {
                let len = libc::strlen(value);
                std::ptr::write_bytes(value, 0, len);
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = name;
    }
}
