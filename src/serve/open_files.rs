//! The open-file limit of the commands that serve for a long time (`exec --server`, `mcp`).
//!
//! Every connection is a file descriptor, and many systems start a process with a soft limit of
//! 1024 under a much higher hard one: a few hundred stray connections would then be enough for
//! `accept` to fail and the endpoint to stop answering. The soft limit is raised to the hard one
//! (which any process may do) at start, and the caller's soft limit is given back to the command
//! xero-auth starts ([`restore_for_child`]), since programs that use `select(2)` or close every
//! descriptor up to the limit misbehave under a very high one.
#![cfg_attr(
    not(unix),
    allow(dead_code, reason = "the open-file limit is raised (and restored for a child) on Unix only")
)]

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (or as close to it as the system allows).
/// Unix only; elsewhere a no-op. A failure is not an error: the limit stays as it was.
pub fn raise_to_hard_limit() {
    platform::raise();
}

/// Puts back the soft open-file limit the process started with, for a program about to replace
/// it. Async-signal-safe (one system call, no allocation): it may run between `fork` and `exec`.
/// Does nothing when [`raise_to_hard_limit`] did not change it.
pub fn restore_for_child() {
    platform::restore();
}

#[cfg(unix)]
mod platform {
    use std::sync::OnceLock;

    /// The open-file limits the process had before they were raised.
    static CALLERS: OnceLock<libc::rlimit> = OnceLock::new();

    pub fn raise() {
        let mut callers = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: one system call with a valid argument.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut callers) } != 0 {
            return;
        }
        // The hard limit may be "unlimited" or above what the kernel takes (macOS refuses more
        // than OPEN_MAX, Linux more than fs.nr_open): try it, then smaller steps, never below
        // the current soft limit.
        let steps = [callers.rlim_max, 1 << 20, 1 << 16, 10240];
        for target in steps {
            if target <= callers.rlim_cur || target > callers.rlim_max {
                continue;
            }
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: callers.rlim_max,
            };
            // SAFETY: one system call with a valid argument; a failure changes nothing.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                let _ = CALLERS.set(callers);
                tracing::debug!(
                    from = callers.rlim_cur,
                    to = target,
                    "raised the open-file limit"
                );
                return;
            }
        }
    }

    pub fn restore() {
        if let Some(callers) = CALLERS.get() {
            // SAFETY: one system call with a valid argument; lowering a soft limit is always
            // allowed.
            unsafe {
                libc::setrlimit(libc::RLIMIT_NOFILE, callers);
            }
        }
    }
}

#[cfg(not(unix))]
mod platform {
    pub fn raise() {}

    pub fn restore() {}
}
