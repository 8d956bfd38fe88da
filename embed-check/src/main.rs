//! Uses the library's public API as a program would: builds a session from a profile, asks
//! for a token, and sends a request. Only compiled (scripts/check-embedding), never run.

use std::process::ExitCode;

use xero_auth::{Error, ExposeSecret, Session, reqwest};

fn main() -> ExitCode {
    let runtime = match xero_auth::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(organisation()) {
        Ok(status) => {
            println!("{status}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            // `Error` is non-exhaustive: a match needs its catch-all arm.
            match &err {
                Error::NothingStored { profile, .. } => {
                    eprintln!("set up profile '{profile}' with xero-auth first")
                }
                _ => eprintln!("{err}"),
            }
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

/// The organisation's status code, with a token refreshed under the cross-process lock if needed.
async fn organisation() -> xero_auth::Result<reqwest::StatusCode> {
    let session = Session::from_profile("default")?.with_margin(600);
    let token = session.access_token().await?;
    let _length = token.expose_secret().len();
    // The token set's public view: the access token and the times around it, no refresh token.
    let set = session.valid_token_set(300).await?;
    let _view = (
        set.access_token().map(|t| t.expose_secret().len()),
        set.expires_at(),
        set.scopes().len(),
        set.obtained_at(),
        set.refresh_lapses_at(),
    );
    let profile = session.profile();
    let _store = profile.store;
    let Ok(url) = profile.endpoints.api.join("api.xro/2.0/Organisation") else {
        return Ok(reqwest::StatusCode::BAD_REQUEST);
    };
    let response = session.send(session.http().await?.get(url)).await?;
    Ok(response.status())
}
