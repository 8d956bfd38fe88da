//! `xero-auth client set|show|remove`: the app's client id (config) and secret (keychain).

use clap::{Args, Subcommand};
use serde_json::json;

use super::Context;
use crate::error::{Error, Result};
use crate::guard::RefreshGuard;
use crate::secret::{Zeroizing, parse_secret_input, read_bounded};
use crate::store::client_secret_account;

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Store the client id (config) and the client secret (keychain). The secret comes from a
    /// no-echo prompt, from stdin (--secret-stdin) or from XERO_CLIENT_SECRET, never from an
    /// argument.
    Set(SetArgs),
    /// Show the client id and whether a secret is stored (never the secret).
    Show,
    /// Delete the client secret from the keychain and the client id from the config.
    Remove,
}

#[derive(Debug, Args)]
/// Arguments of `xero-auth client set`.
pub struct SetArgs {
    /// The app's client id, from developer.xero.com.
    #[arg(long, value_name = "ID")]
    pub client_id: String,
    /// Read the client secret from stdin (e.g. `pass xero | xero-auth client set …`).
    #[arg(long)]
    pub secret_stdin: bool,
    /// The app has no secret (a PKCE app); removes a stored one.
    #[arg(long, conflicts_with = "secret_stdin")]
    pub public: bool,
}

/// Runs a client subcommand.
pub async fn run(cmd: ClientCommand, ctx: &Context) -> Result<()> {
    match cmd {
        ClientCommand::Set(args) => set(args, ctx).await,
        ClientCommand::Show => show(ctx).await,
        ClientCommand::Remove => remove(ctx).await,
    }
}

fn validate_client_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "'{}' is not a client id: Xero's are 32 letters and digits (developer.xero.com → My Apps → Configuration)",
            id.escape_debug()
        )))
    }
}

async fn set(args: SetArgs, ctx: &Context) -> Result<()> {
    validate_client_id(&args.client_id)?;
    let profile = ctx.profile()?;
    let store = ctx.store(&profile);
    let account = client_secret_account(&profile.name);

    // Every write of a profile's secrets is made under its guard (the file store relies on
    // the lock, a shared store on the lease).
    let guard = || RefreshGuard::for_writing(&ctx.paths, &profile.name, &store);
    if args.public {
        let guard = guard().await?;
        let deleted = guard.store().delete(&account).await;
        guard.end().await;
        deleted?;
    } else {
        let raw = read_secret(&args, ctx)?;
        let secret = parse_secret_input(&raw, "client secret").map_err(Error::InvalidInput)?;
        drop(raw);
        let guard = guard().await?;
        use crate::secret::ExposeSecret;
        let bytes = Zeroizing::new(secret.expose_secret().as_bytes().to_vec());
        let label = format!("xero-auth client secret ({})", profile.name);
        // The secret goes to the keychain first: if that fails, the config is left as it was.
        let stored = guard.store().set(&account, &label, bytes).await;
        guard.end().await;
        stored?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("client-secret-stored");
    }

    if let Some(old) = profile
        .client_id
        .as_deref()
        .filter(|old| *old != args.client_id)
    {
        eprintln!(
            "note: profile '{}' used client id {old} before; tokens issued to that app will not refresh with this one — run {} again",
            profile.name,
            crate::hint::command(&profile.name, "login")
        );
    }
    let mut config = Config::load(ctx.config.path())?;
    config.set(&profile.name, "client_id", &args.client_id)?;
    config.save()?;
    eprintln!(
        "stored client id {} in {} and {} for profile '{}'",
        args.client_id,
        config.path().display(),
        if args.public {
            "no client secret (PKCE app)".to_string()
        } else {
            format!("the client secret in {}", store.describe())
        },
        profile.name
    );
    Ok(())
}

use crate::config::Config;

/// Reads stdin without going through the standard library's process-wide stdin buffer, which
/// lives until exit and would keep a copy of the secret.
fn read_stdin_unbuffered(max: usize) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    #[cfg(unix)]
    {
        read_bounded(&mut *super::unbuffered_stdin(), max)
    }
    #[cfg(not(unix))]
    {
        read_bounded(&mut std::io::stdin().lock(), max)
    }
}

/// Where the secret comes from, in order: stdin when asked, the environment, a prompt.
fn read_secret(args: &SetArgs, ctx: &Context) -> Result<Zeroizing<Vec<u8>>> {
    if args.secret_stdin {
        return read_stdin_unbuffered(4096)
            .map_err(|e| Error::io("cannot read the client secret from", "stdin", e))?
            .ok_or_else(|| {
                Error::InvalidInput("the client secret on stdin is longer than 4 KB".into())
            });
    }
    if let Some(value) = (ctx.env)("XERO_CLIENT_SECRET").filter(|v| !v.is_empty()) {
        let copy = Zeroizing::new(Zeroizing::new(value).as_bytes().to_vec());
        // The variable's value also sits in the process's environment block, which no
        // allocator frees: wipe it there too.
        crate::hardening::wipe_env_value("XERO_CLIENT_SECRET");
        return Ok(copy);
    }
    if ctx.stdin_is_terminal {
        let typed = Zeroizing::new(
            rpassword::prompt_password("Client secret (input hidden): ")
                .map_err(|e| Error::io("cannot read the client secret from", "the terminal", e))?,
        );
        return Ok(Zeroizing::new(typed.as_bytes().to_vec()));
    }
    Err(Error::InvalidInput(
        "no client secret given: pipe it with --secret-stdin, set XERO_CLIENT_SECRET, run in a terminal to be prompted, or pass --public for a PKCE app without a secret".into(),
    ))
}

async fn show(ctx: &Context) -> Result<()> {
    let profile = ctx.profile()?;
    let store = ctx.store(&profile);
    // Looked up, not read: no secret crosses D-Bus, and the file store asks no passphrase.
    let secret_stored = store
        .contains(&client_secret_account(&profile.name))
        .await?;
    if profile.client_id.is_none() && !secret_stored {
        return Err(Error::NothingStored {
            hint: format!(
                "run {}",
                crate::hint::command(&profile.name, "client set --client-id ID")
            ),
            profile: profile.name,
            what: "client",
        });
    }
    if ctx.json {
        return ctx.write_json(&json!({
            "profile": profile.name,
            "client_id": profile.client_id,
            "client_secret_stored": secret_stored,
            "store": store.describe(),
        }));
    }
    let text = format!(
        "profile:       {}\nclient id:     {}\nclient secret: {}\n",
        profile.name,
        profile.client_id.as_deref().unwrap_or("(none)"),
        secret_text(&profile, secret_stored, &store.describe())
    );
    ctx.write_out(text.as_bytes())
}

/// What `status` and `client show` say of the client secret, from what is known: whether the
/// store holds one (a lookup) and whether the profile has a client id. Whether the app is a PKCE
/// app is not recorded anywhere, so it is not claimed: only what a missing secret means.
pub(super) fn secret_text(profile: &crate::config::Profile, stored: bool, store: &str) -> String {
    match (stored, profile.client_id.is_some()) {
        (true, _) => format!("stored in {store}"),
        (false, false) => "none stored (the profile has no client id either)".into(),
        (false, true) => format!(
            "none stored in {store}, so login and refresh send the client id only (right for a \
             PKCE app; a web app or custom connection needs {})",
            crate::hint::command(&profile.name, "client set --client-id ID")
        ),
    }
}

async fn remove(ctx: &Context) -> Result<()> {
    let profile = ctx.profile()?;
    let store = ctx.store(&profile);
    let deleted = {
        let guard = RefreshGuard::for_writing(&ctx.paths, &profile.name, &store).await?;
        let deleted = guard
            .store()
            .delete(&client_secret_account(&profile.name))
            .await;
        guard.end().await;
        deleted?
    };
    let mut config = Config::load(ctx.config.path())?;
    let had_id = config.remove(&profile.name, "client_id")?;
    if had_id {
        config.save()?;
    }
    let removed = [
        had_id.then_some("client id"),
        deleted.then_some("client secret"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" and ");
    // The token set stays. `logout` would now stop at the missing client id (revoking needs it),
    // so the hint says what works from here, and only when there is a token set at all.
    let tokens_stored = store
        .contains(&crate::store::token_set_account(&profile.name))
        .await
        .unwrap_or(false);
    let name = &profile.name;
    let tokens = if tokens_stored {
        format!(
            "; its token set is kept: {} deletes it here without revoking it, or put the client \
             back with {} and run {} to revoke it at Xero too",
            crate::hint::command(name, "logout --keep-remote"),
            crate::hint::command(name, "client set --client-id ID"),
            crate::hint::command(name, "logout")
        )
    } else {
        String::new()
    };
    if removed.is_empty() {
        eprintln!("profile '{name}' had no client stored; nothing to remove{tokens}");
    } else {
        eprintln!("removed the client of profile '{name}' ({removed}){tokens}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::context;
    use std::collections::HashMap;

    #[tokio::test]
    async fn set_stores_secret_from_env_and_id_in_config() {
        let env = HashMap::from([(
            "XERO_CLIENT_SECRET".to_string(),
            "s3cr3t-value\n".to_string(),
        )]);
        let t = context(0, env, "");
        set(
            SetArgs {
                client_id: "ABCDEF0123".into(),
                secret_stdin: false,
                public: false,
            },
            &t.ctx,
        )
        .await
        .unwrap();
        assert_eq!(
            t.store.raw("default/client-secret").unwrap(),
            b"s3cr3t-value"
        );
        let config = std::fs::read_to_string(t.ctx.config.path()).unwrap();
        assert!(config.contains("client_id = \"ABCDEF0123\""), "{config}");
        assert!(!config.contains("s3cr3t"));
    }

    #[tokio::test]
    async fn set_without_any_secret_source_fails_and_stores_nothing() {
        let t = context(0, HashMap::new(), "");
        let err = set(
            SetArgs {
                client_id: "ABC".into(),
                secret_stdin: false,
                public: false,
            },
            &t.ctx,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("--secret-stdin"), "{err}");
        assert!(
            std::fs::read_to_string(t.ctx.config.path())
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn set_refuses_a_bad_client_id() {
        let t = context(0, HashMap::new(), "");
        let err = set(
            SetArgs {
                client_id: "has space".into(),
                secret_stdin: false,
                public: true,
            },
            &t.ctx,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("is not a client id"));
    }
}
