//! What the session bus says about the Secret Service, asked without starting one: whether a
//! bus is there, whether a service owns `org.freedesktop.secrets`, whether D-Bus could start
//! one, and whether the service has a default keyring (collection) and it is unlocked.
//!
//! Nothing here calls the service unless it is already running: a method call to a name with no
//! owner makes D-Bus start the daemon its service file names, and a GNOME Keyring started that
//! way on a headless session has no unlocked `login` keyring, so every later call waits for an
//! unlock prompt nobody sees. `doctor` asks this before it reads; a keychain call that failed
//! asks it to say which of these it was.

use super::StoreFailure;

const SECRETS: &str = "org.freedesktop.secrets";

/// What unlocks (and the first time creates) GNOME Keyring's `login` keyring on a machine with
/// no desktop session, replacing a daemon that is running without it.
pub const HEADLESS_UNLOCK: &str = "`printf %s \"$KEYRING_PASSWORD\" | gnome-keyring-daemon \
    --replace --unlock --components=secrets` (it creates the 'login' keyring the first time and \
    makes it the default)";

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

/// The bus and the runtime folder this process would use, from its environment.
pub fn bus_from_env() -> (Option<String>, Option<String>) {
    let var = |key| std::env::var(key).ok().filter(|v| !v.is_empty());
    (var("DBUS_SESSION_BUS_ADDRESS"), var("XDG_RUNTIME_DIR"))
}

/// Asks the session bus whether a Secret Service is running, and the service whether it has a
/// default keyring and whether that is unlocked. Reads names and properties only, and starts
/// nothing. Returns a note on what was found when the store can be used.
pub fn diagnose(bus: Option<&str>, runtime_dir: Option<&str>) -> Result<String, StoreFailure> {
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
    // The bus itself answers these: asking them starts no service.
    let dbus =
        zbus::blocking::fdo::DBusProxy::new(&conn).map_err(|e| failed("a name lookup", &e))?;
    let name = zbus::names::WellKnownName::from_static_str_unchecked(SECRETS);
    let running = dbus
        .name_has_owner(name.into())
        .map_err(|e| failed("a name lookup", &e))?;
    if !running {
        let startable = dbus
            .list_activatable_names()
            .map_err(|e| failed("a name lookup", &e))?
            .iter()
            .any(|n| n.as_str() == SECRETS);
        return Err(if startable {
            StoreFailure {
                cause: format!(
                    "no Secret Service is running on the session D-Bus ({place}); D-Bus would \
                     start one on first use, but one started that way without a desktop login \
                     has no unlocked keyring, so this check does not start it"
                ),
                fix: "on a desktop, log in to the graphical session (it starts and unlocks \
                      the keyring); on a headless machine start GNOME Keyring unlocked \
                      yourself before any command uses it: `printf %s \"$KEYRING_PASSWORD\" | \
                      gnome-keyring-daemon --daemonize --unlock --components=secrets` (it \
                      creates the 'login' keyring the first time); see docs/headless-linux.md"
                    .into(),
            }
        } else {
            StoreFailure {
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
            }
        });
    }
    let note = format!("on the session D-Bus ({place})");
    // Running: the service itself can be asked now.
    let default: zbus::zvariant::OwnedObjectPath = conn
        .call_method(
            Some(SECRETS),
            "/org/freedesktop/secrets",
            Some("org.freedesktop.Secret.Service"),
            "ReadAlias",
            &("default",),
        )
        .and_then(|reply| reply.body().deserialize())
        .map_err(|e| failed("which keyring is the default", &e))?;
    if default.as_str() == "/" {
        return Err(StoreFailure {
            cause: format!(
                "a Secret Service answered on the session D-Bus ({place}), but it has no \
                 default keyring (collection) to store into"
            ),
            fix: format!(
                "create one: on a desktop, in Passwords and Keys (Seahorse) make a keyring the \
                 default; on a headless machine {HEADLESS_UNLOCK}"
            ),
        });
    }
    let collection = zbus::blocking::Proxy::new(
        &conn,
        SECRETS,
        default.as_str(),
        "org.freedesktop.Secret.Collection",
    )
    .map_err(|e| failed("for the default keyring", &e))?;
    match collection.get_property::<bool>("Locked") {
        Ok(false) => Ok(format!("{note}; default keyring unlocked")),
        Ok(true) => Err(StoreFailure {
            cause: format!("the default keyring of the Secret Service ({place}) is locked"),
            fix: format!(
                "unlock it: log in to the desktop session, or on a headless machine \
                 {HEADLESS_UNLOCK}; a locked keyring makes commands wait for an unlock prompt \
                 until XERO_AUTH_STORE_TIMEOUT"
            ),
        }),
        Err(e) => Err(failed("whether the default keyring is locked", &e)),
    }
}
