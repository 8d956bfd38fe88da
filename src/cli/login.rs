//! `xero-auth login`: the authorization code flow with PKCE over a loopback redirect, or
//! `--client-credentials` for Xero custom connections.

use std::io::BufRead;
use std::time::Duration;

use clap::Args;

use super::{Context, format_time};
use crate::error::{Error, Result};
use crate::failpoints::crash_point;
use crate::guard::RefreshGuard;
use crate::login::{Pkce, authorize_url, bind, parse_redirect_uri, wait_for_code};
use crate::scopes::{self, Checked};
use crate::secret::ExposeSecret;
use crate::secret::random_urlsafe;
use crate::session::Session;
use crate::token_set::TokenSet;
use crate::xero::Connection;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  xero-auth login --scope \"openid profile email accounting.invoices\"
  xero-auth login --scope accounting.read          # every granular accounting read scope
  xero-auth login --no-browser                     # over SSH: open the URL elsewhere, paste the redirect back
  xero-auth login --client-credentials             # a Xero custom connection")]
/// Arguments of `xero-auth login`.
pub struct LoginArgs {
    /// Do not open a browser: print the URL on stderr, and accept the redirect URL pasted on
    /// stdin (for SSH sessions where the browser runs on another machine).
    #[arg(long)]
    pub no_browser: bool,
    /// The redirect URI registered for the app (default: the profile's, else
    /// http://localhost:8742/callback). Must be on localhost, 127.0.0.1 or `[::1]`.
    #[arg(long, value_name = "URI")]
    pub redirect_uri: Option<String>,
    /// Give up after this many seconds without a callback.
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Ask for this scope too (repeat, or space-separate), and keep it in the profile's `scopes`
    /// for later logins. Without it, login asks for the profile's scopes and those the stored
    /// token set was granted. offline_access is always requested. Names are checked against
    /// Xero's scopes (a typo is an error); shorthands: accounting, accounting.read,
    /// accounting.reports, payroll, payroll.read (docs/scopes.md).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// A Xero custom connection: the client-credentials grant, no browser, no refresh token.
    #[arg(long, conflicts_with_all = ["no_browser", "redirect_uri"])]
    pub client_credentials: bool,
}

/// Logs in and stores the token set.
pub async fn run(mut args: LoginArgs, ctx: &Context) -> Result<()> {
    // Names first: a typo fails before anything is asked of the store, Xero or the browser.
    args.scopes = checked_scopes(&args.scopes)?;
    let session = ctx.session()?;
    // Whatever the store will ask a person (the file store's passphrase, checked) is asked now:
    // once Xero has issued tokens they must be stored, and a prompt after the browser flow would
    // compete with the reader of pasted redirect URLs for the terminal.
    session.prepare_to_store().await?;
    let app = session.app_credentials().await?;
    let name = session.profile().name.clone();
    let mut scopes = scopes_to_ask(&session, &args).await;
    if !args.client_credentials && !scopes.iter().any(|s| s == "offline_access") {
        scopes.push("offline_access".into());
    }

    let obtained = obtain(&args, &session, &app, &name, &scopes).await;
    let (set, interactive_stdin) =
        obtained.map_err(|e| explain_refusal(e, &session, &args, &scopes))?;
    finish_login(ctx, &session, &args, &scopes, set, interactive_stdin).await
}

/// Gets a token set from Xero: the client-credentials grant, or the browser flow and the code
/// exchange. Returns it, and whether stdin is free for a question afterwards.
async fn obtain(
    args: &LoginArgs,
    session: &Session,
    app: &crate::oauth::AppCredentials,
    name: &str,
    scopes: &[String],
) -> Result<(TokenSet, bool)> {
    Ok(if args.client_credentials {
        let response = session.post_client_credentials(app, scopes).await?;
        (
            TokenSet::from_response(response, scopes, session.now()),
            false,
        )
    } else {
        if scopes.len() == 1 {
            eprintln!(
                "note: profile '{name}' has no scopes and no token set that was granted any; only \
                 offline_access is requested. Pass --scope (the profile keeps it for later logins)"
            );
        } else {
            eprintln!("asking for the scopes {}", scopes.join(" "));
        }
        // Xero answers a broad scope that the app may not have with an error page in the browser,
        // not a redirect: the login learns nothing of it, so the way out is said now.
        if let Some(note) = broad_scope_note(scopes, name) {
            eprintln!("{note}");
        }
        let redirect_uri = args
            .redirect_uri
            .clone()
            .unwrap_or_else(|| session.profile().redirect_uri.clone());
        let target = parse_redirect_uri(&redirect_uri)?;
        // Listen before the browser is sent anywhere, so a taken port fails early.
        let listener = bind(&target).await?;
        let pkce = Pkce::new();
        let state = random_urlsafe(24);
        let url = authorize_url(
            &session.profile().endpoints.authorize,
            &app.client_id,
            &target.uri,
            scopes,
            &state,
            &pkce.challenge,
        );
        let mut pasted = None;
        if args.no_browser || open::that_detached(url.as_str()).is_err() {
            eprintln!("Open this URL in a browser:\n{url}");
            eprintln!(
                "Waiting for Xero to redirect to {} (up to {} s). If the browser runs on another machine, \
                 paste here the whole address it was sent to.",
                target.uri, args.timeout
            );
            pasted = Some(crate::login::Pasted {
                lines: read_stdin_lines(),
                end_ends_login: args.no_browser,
            });
        } else {
            eprintln!(
                "Opened the browser to authorise the app; waiting for Xero's redirect to {} (up to {} s).",
                target.uri, args.timeout
            );
            eprintln!("If no browser opened, visit:\n{url}");
        }
        let interactive = pasted.is_none();
        let code = wait_for_code(
            name,
            listener,
            &target,
            &state,
            Duration::from_secs(args.timeout),
            pasted,
        )
        .await?;
        let response = session
            .exchange_code(app, &code, &pkce.verifier, &target.uri)
            .await?;
        crash_point("login-code-exchanged");
        let set = TokenSet::from_response(response, scopes, session.now());
        if set.refresh_token.is_none() {
            eprintln!(
                "warning: Xero returned no refresh token; the login lasts until the access token expires"
            );
        }
        (set, interactive)
    })
}

/// Stores the new set, keeps `--scope` in the profile, and chooses the default tenant.
async fn finish_login(
    ctx: &Context,
    session: &Session,
    args: &LoginArgs,
    scopes: &[String],
    set: TokenSet,
    interactive_stdin: bool,
) -> Result<()> {
    {
        // A new set: the notes of an unsaved refresh of the old one go, in the lock file and,
        // on a shared store, in the lease.
        let guard =
            RefreshGuard::for_writing(&ctx.paths, &session.profile().name, session.store()).await?;
        let stored = session.store_token_set(&set, &guard).await;
        match stored {
            Ok(()) => guard.saved().await,
            Err(e) => {
                guard.end().await;
                return Err(e);
            }
        }
        crash_point("login-stored");
    }
    if !args.scopes.is_empty() {
        keep_scopes(ctx, session, scopes);
    }
    eprintln!(
        "logged in: profile '{}' stored in {}; access token valid until {}{}",
        session.profile().name,
        session.store().describe(),
        format_time(set.expires_at.unwrap_or(0)),
        if set.refresh_token.is_some() {
            format!(
                ", refresh token lapses {} unless used",
                format_time(set.refresh_lapses_at())
            )
        } else {
            String::new()
        }
    );
    choose_tenant(
        ctx,
        session,
        &set,
        interactive_stdin && ctx.stdin_is_terminal,
    )
    .await
}

/// The longest piece of a name a message repeats: scope names are short, and a long argument
/// (something pasted by mistake) is not echoed whole.
const ECHOED: usize = 64;

fn echoed(name: &str) -> String {
    let mut out: String = name.chars().take(ECHOED).collect();
    if out.len() < name.len() {
        out.push('…');
    }
    out
}

/// `--scope` as given, checked against Xero's scopes (`crate::scopes`): a name a typo or two
/// away from a known one is an error; a name the table does not know is sent as it is, with a
/// warning (Xero adds scopes); shorthands become the scopes they stand for.
fn checked_scopes(given: &[String]) -> Result<Vec<String>> {
    let names: Vec<&str> = given.iter().flat_map(|s| s.split_whitespace()).collect();
    let mut typos = Vec::new();
    for name in &names {
        match scopes::check(name) {
            Checked::Known(_) | Checked::Shorthand(_) => {}
            Checked::Typo { closest } => {
                typos.push(format!("'{}' (did you mean '{closest}'?)", echoed(name)));
            }
            Checked::Unknown { closest } => eprintln!(
                "warning: '{}' is not a scope xero-auth knows{}; it is sent to Xero as it is \
                 (Xero may have added it)",
                echoed(name),
                closest
                    .map(|c| format!(" (the closest known is '{c}')"))
                    .unwrap_or_default()
            ),
        }
    }
    if !typos.is_empty() {
        return Err(Error::InvalidInput(format!(
            "unknown scope {}: nothing was asked of Xero; fix the name and run login again",
            typos.join(", ")
        )));
    }
    Ok(scopes::expand(names))
}

/// The login that asks for the granular equivalents of `asked`, as a command to copy.
fn granular_login(asked: &[String], profile: &str, client_credentials: bool) -> String {
    let granular: Vec<String> = scopes::granular_equivalent(asked.iter().map(String::as_str))
        .into_iter()
        .filter(|s| s != "offline_access")
        .collect();
    let flags = if client_credentials {
        "login --client-credentials"
    } else {
        "login"
    };
    crate::hint::command(profile, &format!("{flags} --scope \"{}\"", granular.join(" ")))
}

/// Before the browser opens: what to do if Xero refuses a broad scope asked for.
fn broad_scope_note(asked: &[String], profile: &str) -> Option<String> {
    let deprecated = scopes::deprecated(asked.iter().map(String::as_str));
    if deprecated.is_empty() {
        return None;
    }
    Some(format!(
        "note: {}. If Xero shows \"Invalid scope for client\", stop this login (Ctrl-C) and ask \
         for the granular equivalents: {}",
        scopes::retiring(&deprecated),
        granular_login(asked, profile, false)
    ))
}

/// Xero's refusal of the scopes (`unauthorized_client` or `invalid_scope`, at the authorize step
/// or the token endpoint), said with what was asked, why a broad scope fails, and the command
/// that asks for what works. Any other error is returned as it is. Nothing is retried with
/// other scopes: the user chooses them.
fn explain_refusal(e: Error, session: &Session, args: &LoginArgs, asked: &[String]) -> Error {
    let Error::OAuth { code, .. } = &e else {
        return e;
    };
    if code != "unauthorized_client" && code != "invalid_scope" {
        return e;
    }
    let profile = &session.profile().name;
    let deprecated = scopes::deprecated(asked.iter().map(String::as_str));
    let mut message = format!("{e}\nasked for the scopes: {}", asked.join(" "));
    if deprecated.is_empty() {
        message.push_str(
            "\nnone of them is a broad scope Xero is retiring: the app may not be allowed one of \
             them (a restricted scope, or journals without Xero's Advanced plan); check the \
             app's scopes at developer.xero.com",
        );
        return Error::InvalidInput(message);
    }
    message.push_str(&format!(
        "\n{}.\nask for the granular equivalents instead: {}",
        scopes::retiring(&deprecated),
        granular_login(asked, profile, args.client_credentials)
    ));
    // A login asks again for the profile's `scopes`: a broad one kept there would be asked
    // again by the command above, so it goes first.
    let kept: Vec<&str> = session
        .profile()
        .scopes
        .iter()
        .flat_map(|s| s.split_whitespace())
        .filter(|s| deprecated.iter().any(|d| d.name == *s))
        .collect();
    if !kept.is_empty() {
        message.push_str(&format!(
            "\n(profile '{profile}' keeps {} in its `scopes`: first run {})",
            kept.join(" "),
            crate::hint::command(profile, "config unset scopes")
        ));
    }
    // Neither given nor kept: the stored token set was granted it, and a login asks for what
    // the stored set has until the set is gone.
    let from_stored: Vec<&str> = deprecated
        .iter()
        .map(|d| d.name)
        .filter(|d| !kept.contains(d) && !args.scopes.iter().any(|a| a == d))
        .collect();
    if !from_stored.is_empty() {
        message.push_str(&format!(
            "\n(the stored token set was granted {}, and a login asks again for what it has: \
             first run {})",
            from_stored.join(" "),
            crate::hint::command(profile, "logout")
        ));
    }
    Error::InvalidInput(message)
}

/// The scopes a login asks for, `offline_access` aside: the profile's `scopes`, then those the
/// stored token set was granted, then `--scope`. A login without `--scope` thus asks again for
/// what the profile has now — a scope given once (before it was kept in the profile, or on a
/// token set that was imported) is not dropped by the next login, and a script that used it
/// keeps working. Narrowing is deliberate: `config set scopes`, then `logout` and `login`.
/// `--client-credentials` asks for the profile's and `--scope`'s only: a custom connection's
/// grant is not the user's, and Xero refuses user scopes (`openid`, `offline_access`) there.
async fn scopes_to_ask(session: &Session, args: &LoginArgs) -> Vec<String> {
    let stored = if args.client_credentials {
        Vec::new()
    } else {
        // A stored set that cannot be read (damaged, written by a newer version) is what a
        // login replaces: its scopes are not known, and the login goes on without them.
        match session.stored_token_set().await {
            Ok(Some(set)) => set.scopes,
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::debug!("the stored token set's scopes are not known: {e}");
                Vec::new()
            }
        }
    };
    let mut scopes: Vec<String> = Vec::new();
    for scope in session
        .profile()
        .scopes
        .iter()
        .chain(stored.iter())
        .chain(args.scopes.iter())
        .flat_map(|s| s.split_whitespace())
    {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    }
    scopes
}

/// After a login with `--scope`: writes what was asked (but `offline_access`, which every browser
/// login adds itself and a custom connection must not ask for) into the profile's `scopes`, so
/// that a plain `login` — the one every "authorise again" message shows — asks for it again. The
/// login has succeeded by now: a config that cannot be written is a warning, not a failure.
fn keep_scopes(ctx: &Context, session: &Session, asked: &[String]) {
    let name = &session.profile().name;
    let kept: Vec<&str> = asked
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "offline_access")
        .collect();
    if session
        .profile()
        .scopes
        .iter()
        .map(String::as_str)
        .eq(kept.iter().copied())
    {
        return;
    }
    let written = crate::config::Config::load(ctx.config.path()).and_then(|mut config| {
        let list: toml_edit::Array = kept.iter().copied().collect();
        config.set(name, "scopes", toml_edit::Value::Array(list))?;
        config.save()
    });
    match written {
        Ok(()) => eprintln!(
            "kept the scopes in profile '{name}' ({}): {}; {} asks for them again",
            ctx.config.path().display(),
            kept.join(" "),
            crate::hint::command(name, "login")
        ),
        Err(e) => eprintln!(
            "warning: the scopes were not kept in profile '{name}' ({e}); a later login needs \
             --scope \"{}\" again",
            kept.join(" ")
        ),
    }
}

/// Fetches the connections: one becomes the default tenant; with several, the user picks on a
/// terminal, or is told how to choose. A failure here does not undo the login.
async fn choose_tenant(
    ctx: &Context,
    session: &Session,
    set: &TokenSet,
    can_prompt: bool,
) -> Result<()> {
    let token = set.require_access_token(&session.profile().name)?;
    let http = session.http().await?;
    let connections = match crate::xero::connections(
        http,
        &session.profile().name,
        &session.profile().endpoints.connections,
        token.expose_secret(),
    )
    .await
    {
        Ok(c) => {
            super::tenants::remember_names(session.paths(), &session.profile().name, &c);
            c
        }
        Err(e) => {
            eprintln!(
                "warning: could not list the connected organisations ({e}); run {} later",
                crate::hint::command(&session.profile().name, "tenants")
            );
            return Ok(());
        }
    };
    let chosen: Option<&Connection> = match connections.as_slice() {
        [] => {
            eprintln!("no organisation is connected to the app yet");
            None
        }
        [only] => Some(only),
        several if can_prompt => {
            eprintln!("Several organisations are connected; choose the default tenant:");
            for (i, c) in several.iter().enumerate() {
                eprintln!("  {}) {} ({})", i + 1, c.tenant_name, c.tenant_id);
            }
            eprint!("number: ");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).ok();
            line.trim()
                .parse::<usize>()
                .ok()
                .and_then(|n| several.get(n.wrapping_sub(1)))
        }
        several => {
            eprintln!("Several organisations are connected; none was made the default:");
            for c in several {
                eprintln!("  {}  {}  {}", c.tenant_name, c.tenant_id, c.tenant_type);
            }
            eprintln!(
                "choose one with {}",
                crate::hint::command(&session.profile().name, "tenants use ID|NAME")
            );
            None
        }
    };
    if let Some(c) = chosen {
        super::tenants::set_default_tenant(ctx, &session.profile().name, &c.tenant_id)?;
        eprintln!("default tenant: {} ({})", c.tenant_name, c.tenant_id);
    }
    Ok(())
}

/// Lines typed or pasted on stdin, read on a thread of their own so the listener keeps running.
/// The thread stops reading once the receiver is dropped (the login got its code, or ended), so
/// nothing typed afterwards is taken from the terminal.
fn read_stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    crate::stack::spawn(move || forward_stdin_lines(&tx));
    rx
}

/// The longest line kept from stdin: a redirect URL is a few hundred bytes.
#[cfg(unix)]
const MAX_PASTED_LINE: usize = 8192;

/// Reads file descriptor 0 directly — not through the standard library's stdin buffer, which
/// lives until exit and would keep whatever was typed (the pasted code; on a terminal, anything
/// typed while the login waits) — into a wiping buffer, and waits for input a tenth of a second
/// at a time, so that it notices when nobody listens any more and stops reading.
#[cfg(unix)]
fn forward_stdin_lines(tx: &tokio::sync::mpsc::Sender<String>) {
    use std::io::Read;
    let mut stdin = super::unbuffered_stdin();
    let mut line = crate::secret::Zeroizing::new(Vec::with_capacity(MAX_PASTED_LINE));
    let mut chunk = crate::secret::Zeroizing::new([0u8; 1024]);
    while !tx.is_closed() {
        let mut ready = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        match unsafe { libc::poll(&mut ready, 1, 100) } {
            0 => continue,
            n if n < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted =>
            {
                continue;
            }
            n if n < 0 => return,
            _ => {}
        }
        let n = match stdin.read(&mut chunk[..]) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        for &byte in &chunk[..n] {
            if byte != b'\n' {
                if line.len() < MAX_PASTED_LINE {
                    line.push(byte);
                }
                continue;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            zeroize::Zeroize::zeroize(&mut *line);
            if tx.blocking_send(text).is_err() {
                return;
            }
        }
    }
}

/// Windows consoles cannot be polled: the thread reads through the standard library and stops
/// at the first line after the login has ended (docs/security.md).
#[cfg(not(unix))]
fn forward_stdin_lines(tx: &tokio::sync::mpsc::Sender<String>) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if tx.blocking_send(line).is_err() {
            break;
        }
    }
}
