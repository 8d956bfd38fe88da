//! Why the Secret Service or keyutils cannot be used, in the terms of the session bus and
//! the kernel: what `xero-auth doctor` adds to the store's own error on Linux.

use super::PROBE_ACCOUNT;
use crate::cli::format_span;
use crate::config::StoreKind;
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
            let note = secret_service(bus, runtime_dir)?;
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

const SECRETS: &str = "org.freedesktop.secrets";

/// `DBUS_SESSION_BUS_ADDRESS=…`, or what is tried without it.
pub fn bus_phrase(bus: Option<&str>, runtime_dir: Option<&str>) -> String {
    match (bus, runtime_dir) {
        (Some(address), _) => format!("DBUS_SESSION_BUS_ADDRESS={address}"),
        (None, Some(dir)) => format!(
            "DBUS_SESSION_BUS_ADDRESS is not set, so {dir}/bus (from XDG_RUNTIME_DIR) was tried"
        ),
        (None, None) => {
            "DBUS_SESSION_BUS_ADDRESS and XDG_RUNTIME_DIR are not set: there is no session bus \
             to find"
                .into()
        }
    }
}

/// Asks the session bus whether a Secret Service is there and whether its default keyring
/// is unlocked. Reads properties only.
pub fn secret_service(
    bus: Option<&str>,
    runtime_dir: Option<&str>,
) -> Result<String, StoreFailure> {
    let place = bus_phrase(bus, runtime_dir);
    let conn = zbus::blocking::Connection::session().map_err(|e| StoreFailure {
        cause: format!("cannot connect to the session D-Bus ({place}): {e}"),
        fix: "there is no D-Bus session here (SSH, cron, containers, CI). Start one for the \
              job — `dbus-run-session -- sh -c '…'` with GNOME Keyring unlocked in it — or \
              point DBUS_SESSION_BUS_ADDRESS at your session's bus \
              (unix:path=/run/user/$(id -u)/bus); see docs/headless-linux.md. Or set \
              store = \"file\" (files encrypted with a passphrase) or store = \"keyutils\" \
              (kernel memory, forgotten at reboot). xero-auth never falls back to a \
              plaintext file"
            .into(),
    })?;
    let failed = |what: &str, e: &dyn std::fmt::Display| StoreFailure {
        cause: format!("the session D-Bus ({place}) failed to answer {what}: {e}"),
        fix: "restart the session bus or log in again".into(),
    };
    let dbus =
        zbus::blocking::fdo::DBusProxy::new(&conn).map_err(|e| failed("a name lookup", &e))?;
    let name = zbus::names::BusName::try_from(SECRETS).expect("a valid bus name");
    let running = dbus
        .name_has_owner(name)
        .map_err(|e| failed("a name lookup", &e))?;
    let mut note = format!("on the session D-Bus ({place})");
    if !running {
        let startable = dbus
            .list_activatable_names()
            .map_err(|e| failed("a name lookup", &e))?
            .iter()
            .any(|n| n.as_str() == SECRETS);
        if !startable {
            return Err(StoreFailure {
                cause: format!(
                    "no Secret Service ({SECRETS}) on the session D-Bus ({place}): nothing \
                     provides it and D-Bus cannot start one"
                ),
                fix: "install and start one: GNOME Keyring (`gnome-keyring-daemon \
                      --components=secrets --daemonize --unlock`, password on stdin), \
                      KWallet, or KeePassXC with Secret Service integration; see \
                      docs/headless-linux.md. Or set store = \"file\" (files encrypted with a \
                      passphrase) or store = \"keyutils\" (forgotten at reboot)"
                    .into(),
            });
        }
        note.push_str(", started by D-Bus on first use");
    }
    let collection = zbus::blocking::Proxy::new(
        &conn,
        SECRETS,
        "/org/freedesktop/secrets/aliases/default",
        "org.freedesktop.Secret.Collection",
    )
    .map_err(|e| failed("for the default keyring", &e))?;
    match collection.get_property::<bool>("Locked") {
        Ok(false) => {
            note.push_str("; default keyring unlocked");
            Ok(note)
        }
        Ok(true) => Err(StoreFailure {
            cause: format!("the default keyring of the Secret Service ({place}) is locked"),
            fix: "unlock it: log in to the desktop session, or on a headless machine \
                  `printf %s \"$KEYRING_PASSWORD\" | gnome-keyring-daemon --replace --unlock \
                  --components=secrets`; a locked keyring makes commands wait for an unlock \
                  prompt until XERO_AUTH_STORE_TIMEOUT"
                .into(),
        }),
        Err(e) => Err(StoreFailure {
            cause: format!(
                "the Secret Service ({place}) has no default keyring to store into ({e})"
            ),
            fix: "create one: on a desktop, in Passwords and Keys (Seahorse) make a keyring \
                  the default; headless, unlocking GNOME Keyring with a password creates \
                  'login' (`printf %s \"$KEYRING_PASSWORD\" | gnome-keyring-daemon \
                  --replace --unlock --components=secrets`)"
                .into(),
        }),
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
