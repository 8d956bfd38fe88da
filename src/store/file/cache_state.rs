//! What `status` and `doctor` say about the file store's kept key, in a user's words.

/// What `status` and `doctor` say about the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    not(target_os = "linux"),
    allow(dead_code, reason = "the key is kept in the kernel on Linux only")
)]
pub enum CacheState {
    /// The key is cached, and forgotten after this long unused (the kernel's rounding).
    Unlocked(Option<std::time::Duration>),
    /// No key is cached for this store.
    Locked,
    /// `file_unlock_ttl = 0`: the key is never kept.
    Off,
    /// `file_unlock_ttl = 0`, but a key kept under an earlier, longer TTL is still in the kernel
    /// (for about this long): the next command that reads the store forgets it.
    KeptWhileOff(Option<std::time::Duration>),
    /// The platform or this process cannot keep it, and why.
    Unavailable(String),
}

impl CacheState {
    /// The state in a few words, for `status` and `doctor`.
    pub fn describe(&self) -> String {
        match self {
            CacheState::Unlocked(Some(left)) => {
                let now = crate::time::unix_now();
                let left = left.as_secs() as i64;
                format!(
                    "unlocked until about {} (in {}; each use extends it): its key is kept in \
                     the kernel (`xero-auth lock` forgets it now)",
                    crate::time::format_time(now.saturating_add(left)),
                    crate::time::format_span(left)
                )
            }
            CacheState::Unlocked(None) => {
                "unlocked: its key is kept in the kernel (`xero-auth lock` forgets it now)".into()
            }
            CacheState::Locked => "locked: the next command that reads it needs the passphrase \
                 (`xero-auth unlock` keeps the key for file_unlock_ttl)"
                .into(),
            CacheState::Off => {
                "its key is never kept (file_unlock_ttl = 0): every command needs the passphrase"
                    .into()
            }
            CacheState::KeptWhileOff(left) => {
                let left = left
                    .map(|d| {
                        format!(
                            " for about {}",
                            crate::time::format_span(d.as_secs() as i64)
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "file_unlock_ttl is 0, yet a key kept by an earlier unlock is still in the \
                     kernel{left}: the next command that reads the store forgets it \
                     (`xero-auth lock` does now)"
                )
            }
            CacheState::Unavailable(why) => {
                format!(
                    "its key cannot be kept between commands here ({why}): every command needs the passphrase"
                )
            }
        }
    }
}
