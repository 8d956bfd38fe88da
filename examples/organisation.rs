//! Prints the name of the organisation a profile's default tenant points at, through a
//! [`Session`]: the token comes from the keychain, is refreshed when needed, and a 401 is
//! answered with one refresh and one retry.
//!
//! ```sh
//! cargo run --example organisation -- [PROFILE]
//! ```

use xero_auth::Session;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let profile = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "default".to_string());
    let session = Session::from_profile(&profile)?;
    let url = session
        .profile()
        .endpoints
        .api
        .join("api.xro/2.0/Organisation")?;
    let response = session.send(session.http().await?.get(url)).await?;
    let status = response.status();
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
    if !status.is_success() {
        return Err(format!("Xero answered HTTP {status}: {body}").into());
    }
    let name = body["Organisations"][0]["Name"]
        .as_str()
        .unwrap_or("(no name)");
    println!("{name}");
    Ok(())
}
