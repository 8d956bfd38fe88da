//! Where the encrypted-file store keeps its unlocked key between commands: the Linux kernel's key
//! retention service (keyutils), never a file.
//!
//! Unlocking the store costs one scrypt run at the store's work factor (a second and 256 MB at
//! the default): the price an attacker pays per guess, and one a cron job should not pay on
//! every call. So the key it unlocks (the store's age identity, see [`super::file`]) is kept:
//! - as a `user` key in the user's **persistent keyring** (`keyctl_get_persistent(2)`), which
//!   outlives login sessions, so cron jobs and services of the same user find it; where the
//!   kernel has no persistent keyrings, in the session keyring;
//! - with permissions `0x3f010000`: the possessor may do everything, the user may only see that
//!   it exists (for `status`). A process possesses it through its session keyring, to which
//!   the persistent keyring is linked — and any process of the user can link the persistent
//!   keyring into its own keyrings (`keyctl_get_persistent(2)`), so every process of the user
//!   can read the key while it is kept, as can root. The kernel keeps it from other users only;
//! - for `file_unlock_ttl` seconds since it was last used (the kernel's own key timeout, reset on
//!   each use), and forgotten at once by `xero-auth lock`. That timeout is the only bound on the
//!   user's processes taking the key, so it is set before any other process can find the key
//!   ([`KeyCache::put`]). At `file_unlock_ttl = 0` a key kept earlier is forgotten by the
//!   first command that looks for it;
//! - under a name made from the store's folder, and checked against the store's recipient before
//!   use (see [`super::file`]), so a key cached for one store never opens another.
//!
//! That same-user exposure is the one a passphrase in the environment gave as well
//! (docs/security.md says what it means). Other platforms have no such service here:
//! [`KeyCache::new`] says so and every command unlocks the store itself, as before.

use std::path::Path;
use std::time::Duration;

use super::CacheState;
use crate::secret::Zeroizing;

/// The longest payload read back: an age identity is 74 characters.
const MAX_PAYLOAD: usize = 256;

/// The kernel key of one file store.
pub struct KeyCache {
    description: String,
    ttl: Duration,
}

impl KeyCache {
    /// The cache of the store in `root`; `ttl` zero turns it off.
    pub fn new(root: &Path, ttl: Duration) -> Self {
        use std::os::unix::ffi::OsStrExt as _;
        let digest = ring::digest::digest(&ring::digest::SHA256, root.as_os_str().as_bytes());
        let id: String = digest
            .as_ref()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect();
        KeyCache {
            description: format!("xero-auth:file-store:{id}"),
            ttl,
        }
    }

    /// The key's description in the keyring (`keyctl search @s user DESCRIPTION`), which the
    /// tests look the key up by.
    #[cfg(any(test, feature = "test-support"))]
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether keys are kept at all (`file_unlock_ttl` is not zero).
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The cached key, its timeout restarted; `None` when there is none (or the cache is off or
    /// unusable: the caller then unlocks the store itself). With the cache off, a key kept
    /// earlier under a longer TTL is forgotten here rather than left readable for what remained
    /// of that TTL.
    pub fn get(&self) -> Option<Zeroizing<Vec<u8>>> {
        if !self.enabled() {
            // Where the kernel keeps nothing (no keyring to search), there is nothing to say.
            if let Ok(Some(key)) = self.find()
                && let Err(e) = key.invalidate()
            {
                tracing::warn!(
                    "file_unlock_ttl is 0, but the key kept earlier could not be forgotten \
                     ({e:?}): `xero-auth lock` forgets it"
                );
            }
            return None;
        }
        let key = self.find().ok()??;
        let mut payload = Zeroizing::new(vec![0u8; MAX_PAYLOAD]);
        let len = key.read(&mut *payload).ok()?;
        if len > MAX_PAYLOAD {
            return None;
        }
        payload.truncate(len);
        let _ = key.set_timeout(self.ttl_secs());
        Some(payload)
    }

    /// Keeps `payload` (replacing an older key of this store). An error says why it could not.
    ///
    /// The key is built where no other process can reach it, in this thread's own keyring: there
    /// it gets its permissions and its timeout, and only then is it linked into the keyring the
    /// other commands search (which displaces an older key of the same name). A process killed
    /// on the way leaves nothing behind: the thread's keyring, and the key with it, die with it.
    pub fn put(&self, payload: &[u8]) -> Result<(), String> {
        use linux_keyutils::{KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
        if !self.enabled() {
            return Ok(());
        }
        let ring = keyring()?;
        let private = KeyRing::from_special_id(KeyRingIdentifier::Thread, true)
            .map_err(|e| format!("the kernel gives this thread no keyring of its own ({e:?})"))?;
        let key = private
            .add_key(&self.description, payload)
            .map_err(|e| format!("the kernel refused to keep the key ({e:?})"))?;
        crate::failpoints::crash_point("kernel-key-added");
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(Permission::VIEW)
            .build();
        let shared = key
            .set_perms(perms)
            .and_then(|()| key.set_timeout(self.ttl_secs()))
            .map_err(|e| format!("the kernel refused the key's settings ({e:?})"))
            .and_then(|()| {
                crate::failpoints::crash_point("kernel-key-settled");
                ring.link_key(key)
                    .map_err(|e| format!("the kernel refused to share the key ({e:?})"))
            });
        // Linked or not, the thread's keyring lets go of it: kept, it lives on in the shared
        // keyring alone; not kept, it is gone.
        let _ = private.unlink_key(key);
        if shared.is_err() {
            let _ = key.invalidate();
        }
        shared
    }

    /// Forgets the key now; `false` when none was cached.
    pub fn forget(&self) -> Result<bool, String> {
        match self.find()? {
            None => Ok(false),
            Some(key) => key
                .invalidate()
                .map(|()| true)
                .map_err(|e| format!("the kernel refused to forget the key ({e:?})")),
        }
    }

    /// Whether a key is cached, and for how long. Only looks: with the cache off, a key kept
    /// earlier is reported as such ([`CacheState::KeptWhileOff`]), not forgotten.
    pub fn state(&self) -> CacheState {
        match (self.enabled(), self.find()) {
            (false, Ok(None) | Err(_)) => CacheState::Off,
            (false, Ok(Some(key))) => CacheState::KeptWhileOff(remaining(key.get_id().as_raw_id())),
            (true, Err(why)) => CacheState::Unavailable(why),
            (true, Ok(None)) => CacheState::Locked,
            (true, Ok(Some(key))) => CacheState::Unlocked(remaining(key.get_id().as_raw_id())),
        }
    }

    fn ttl_secs(&self) -> usize {
        self.ttl.as_secs().max(1) as usize
    }

    /// The key of this store, searched for from the keyrings this process possesses.
    fn find(&self) -> Result<Option<linux_keyutils::Key>, String> {
        let ring = keyring()?;
        match ring.search(&self.description) {
            Ok(key) => Ok(Some(key)),
            Err(
                linux_keyutils::KeyError::KeyDoesNotExist
                | linux_keyutils::KeyError::KeyExpired
                | linux_keyutils::KeyError::KeyRevoked,
            ) => Ok(None),
            Err(e) => Err(format!("the kernel keyring cannot be searched ({e:?})")),
        }
    }
}

/// The keyring keys are kept in: the user's persistent keyring, linked into this process's
/// session keyring (which restarts its expiry, three days by default); else the session keyring.
fn keyring() -> Result<linux_keyutils::KeyRing, String> {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    if let Ok(ring) = KeyRing::get_persistent(KeyRingIdentifier::Session) {
        return Ok(ring);
    }
    KeyRing::from_special_id(KeyRingIdentifier::Session, false)
        .map_err(|e| format!("the kernel gives this process no keyring to keep the key in ({e:?})"))
}

/// How long the key `id` has left, from `/proc/keys` (which the key's view permission lets its
/// owner read): the kernel gives it as `59s`, `14m`, `2h`, `3d` or `1w`.
fn remaining(id: i32) -> Option<Duration> {
    let keys = std::fs::read_to_string("/proc/keys").ok()?;
    let hex = format!("{:08x}", id);
    let line = keys.lines().find(|l| l.starts_with(&hex))?;
    let timeout = line.split_whitespace().nth(3)?;
    // Split on the last character, whatever it is: `split_at` on a byte count would panic on
    // a character that is not one byte.
    let unit = timeout.chars().last()?;
    let number = timeout.strip_suffix(unit)?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    Some(Duration::from_secs(
        number.parse::<u64>().ok()?.saturating_mul(unit),
    ))
}

/// Makes sure this process has a session keyring of its own, joining a new anonymous one when
/// the kernel only lends it the user-session keyring (a cron job or an SSH command without
/// `pam_keyinit`). Through a lent one a process can find the persistent keyring but not write to
/// it, so the unlocked key could not be kept; with one of its own it possesses the persistent
/// keyring it links in, as a login session does. Children inherit it.
///
/// # Safety
/// Call it before any other thread exists: the session keyring belongs to each thread's
/// credentials, and threads started later inherit the one in force when they start.
pub unsafe fn ensure_own_session_keyring() {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    let (Ok(session), Ok(user_session)) = (
        KeyRing::from_special_id(KeyRingIdentifier::Session, false),
        KeyRing::from_special_id(KeyRingIdentifier::UserSession, false),
    ) else {
        return;
    };
    if session != user_session {
        return;
    }
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a null name takes no other pointer. A failure
    // leaves the lent keyring, and the cache then says it cannot keep the key.
    unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_store_folder_has_its_own_key_name() {
        let a = KeyCache::new(
            Path::new("/home/a/.local/share/xero-auth/secrets"),
            Duration::ZERO,
        );
        let b = KeyCache::new(
            Path::new("/home/b/.local/share/xero-auth/secrets"),
            Duration::ZERO,
        );
        assert_ne!(a.description(), b.description());
        assert!(a.description().starts_with("xero-auth:file-store:"));
        assert!(!a.enabled());
        assert_eq!(a.state(), CacheState::Off);
        assert!(a.get().is_none());
    }
}
