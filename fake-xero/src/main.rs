//! `fake-xero`: runs the fake Xero server for scripts and demos.
//!
//! ```text
//! fake-xero [--port N] [--client-id ID] [--client-secret-env VAR]
//!           [--write-token-file PATH] [--scope S] [--access-token-secs N]
//! ```
//! `--access-token-secs N`: access tokens live N seconds instead of Xero's 1800.
//! Prints `listening on http://127.0.0.1:PORT` once ready, then serves until killed.
//! Control routes on the same port: `GET /_fake/counts`, `GET /_fake/requests`,
//! `POST /_fake/clock/advance?secs=N`, `POST /_fake/expire_access_tokens`,
//! `POST /_fake/refuse_access_tokens` (401 `AuthenticationUnsuccessful` for every token so far),
//! `POST /_fake/minute_limit?limit=N|none&retry_after=N`, `POST /_fake/access_token_len?len=N|none`,
//! `POST /_fake/limits?concurrent=N&day=N&app_minute=N&window_ms=N` (each `none` when absent),
//! `POST /_fake/fault?target=token&kind=server_error|reset|reset_after|html|truncated|too_many|delay&retry_after=N&ms=N[&persistent=1]`.

use std::io::Write as _;
use std::process::ExitCode;

use fake_xero::FakeXero;

const USAGE: &str = "usage: fake-xero [--port N] [--client-id ID] [--client-secret-env VAR] \
[--write-token-file PATH] [--scope S] [--access-token-secs N]";

/// The scope of the token file when `--scope` is not given (the classic example's).
const DEFAULT_SCOPE: &str = "openid profile email accounting.transactions offline_access";

struct Args {
    port: u16,
    client_id: Option<String>,
    secret_env: Option<String>,
    token_file: Option<String>,
    scope: String,
    access_token_secs: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        client_id: None,
        secret_env: None,
        token_file: None,
        scope: DEFAULT_SCOPE.to_string(),
        access_token_secs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                args.port = v.parse().map_err(|_| format!("bad port {v:?}"))?;
            }
            "--client-id" => args.client_id = Some(value()?),
            "--client-secret-env" => args.secret_env = Some(value()?),
            "--write-token-file" => args.token_file = Some(value()?),
            "--scope" => args.scope = value()?,
            "--access-token-secs" => {
                let v = value()?;
                match v.parse() {
                    Ok(secs) if secs > 0 => args.access_token_secs = Some(secs),
                    _ => {
                        return Err(format!(
                            "bad --access-token-secs {v:?} (seconds, 1 or more)"
                        ));
                    }
                }
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if args.token_file.is_some() && args.client_id.is_none() {
        return Err("--write-token-file needs --client-id".into());
    }
    if args.secret_env.is_some() && args.client_id.is_none() {
        return Err("--client-secret-env needs --client-id".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("fake-xero: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let fake = match FakeXero::start_on(args.port) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-xero: cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::FAILURE;
        }
    };
    if let Some(secs) = args.access_token_secs {
        fake.set_access_token_secs(secs);
    }
    if let Some(id) = &args.client_id {
        // The secret comes from the environment, never the command line (which other
        // users can read); a missing variable makes a public (PKCE) app.
        let secret = args
            .secret_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|s| !s.is_empty());
        fake.add_client(id, secret.as_deref());
        if let Some(path) = &args.token_file {
            let t = fake.issue_tokens(id, &args.scope);
            // The file the classic Xero example programs save: the token response as is.
            let mut file = serde_json::Map::new();
            if !t.id_token.is_empty() {
                file.insert("id_token".into(), t.id_token.into());
            }
            file.insert("access_token".into(), t.access_token.into());
            file.insert("expires_in".into(), t.expires_in.into());
            file.insert("token_type".into(), "Bearer".into());
            if !t.refresh_token.is_empty() {
                file.insert("refresh_token".into(), t.refresh_token.into());
            }
            file.insert("scope".into(), t.scope.into());
            let text = serde_json::to_string_pretty(&serde_json::Value::Object(file))
                .expect("JSON serialises");
            if let Err(e) = std::fs::write(path, text + "\n") {
                eprintln!("fake-xero: cannot write {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", fake.base_url());
    let _ = out.flush();
    drop(out);

    // Serve until a signal ends the process (default SIGTERM/SIGINT action).
    loop {
        std::thread::park();
    }
}
