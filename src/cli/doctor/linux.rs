//! Why the Secret Service or keyutils cannot be used, in the terms of the session bus and
//! the kernel: what `xero-auth doctor` adds to the store's own error on Linux.

use super::PROBE_ACCOUNT;
use crate::cli::format_span;
use crate::config::StoreKind;
use crate::store::secret_service::{self, bus_phrase};
use crate::store::{Keychain, SecretStore, StoreFailure};

/// Probes the store of `kind`: the Linux-specific checks first, then a read of an entry no
/// profile has, through the real store code. Returns what was found when usable.
pub fn probe(
    kind: StoreKind,
    bus: Option<&str>,
    runtime_dir: Option<&str>,
) -> Result<String, StoreFailure> {
    let read = || Keychain::new(kind).get(PROBE_ACCOUNT).map(drop);
    match kind {
        StoreKind::SecretService => {
            let note = secret_service::diagnose(bus, runtime_dir)?;
            read().map_err(|f| StoreFailure {
                cause: format!("{} ({})", f.cause, bus_phrase(bus, runtime_dir)),
                fix: f.fix,
            })?;
            Ok(note)
        }
        StoreKind::Keyutils => {
            keyutils_session()?;
            read().map_err(keyutils_failure)?;
            let idle = crate::cli::keyutils_notice::persistent_keyring_expiry()
                .map(|secs| {
                    format!(
                        ", and {} after last use once no login session holds them",
                        format_span(secs as i64)
                    )
                })
                .unwrap_or_default();
            Ok(format!(
                "reachable; kernel memory only: forgotten at reboot{idle}"
            ))
        }
        _ => read().map(|()| "reachable".to_string()),
    }
}

/// Whether this process has a session keyring keyutils can write through. Without one of
/// its own the kernel lends the user-session keyring, and a key added there by its number
/// is not the process's to link into the persistent keyring: every write fails with
/// AccessDenied (and leaves the new key behind in the user-session keyring).
pub fn keyutils_session() -> Result<(), StoreFailure> {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    let session =
        KeyRing::from_special_id(KeyRingIdentifier::Session, false).map_err(|e| StoreFailure {
            cause: format!("the kernel does not give this process a session keyring ({e:?})"),
            fix: "the kernel key retention service is not usable here (containers may forbid \
                  the keyctl system calls); use store = \"secret-service\""
                .into(),
        })?;
    let borrowed = KeyRing::from_special_id(KeyRingIdentifier::UserSession, false)
        .is_ok_and(|user_session| user_session == session);
    if borrowed && KeyRing::get_persistent(KeyRingIdentifier::Session).is_ok() {
        return Err(StoreFailure {
            cause: "this process has no session keyring of its own (the kernel lends it the \
                    user-session keyring), and through that one every keyutils write is \
                    refused (AccessDenied)"
                .into(),
            fix: KEYUTILS_SESSION_FIX.into(),
        });
    }
    Ok(())
}

/// What to do when the session keyring is not one keyutils can use.
const KEYUTILS_SESSION_FIX: &str = "run xero-auth in a session keyring of its own — \
    `keyctl session - xero-auth …` (package keyutils), pam_keyinit in the PAM stack of cron \
    or SSH, KeyringMode=private in a systemd unit — or use store = \"secret-service\"; see \
    docs/headless-linux.md";

/// keyutils' refusal, explained: `AccessDenied` means the session keyring this process
/// inherited is not one it may search.
pub fn keyutils_failure(failure: StoreFailure) -> StoreFailure {
    if failure.cause.contains("AccessDenied") {
        StoreFailure {
            cause: format!(
                "the kernel answered AccessDenied: this process's session keyring does not \
                 give it the entry ({})",
                failure.cause
            ),
            fix: KEYUTILS_SESSION_FIX.into(),
        }
    } else {
        failure
    }
}
