//! The profile's refresh lock, as seen from outside the guard: where its files are, and whether
//! their file system can be trusted. Taking the lock is [`crate::guard`]'s alone.

pub use crate::guard::{RefreshLock, untrusted_lock_filesystem};
