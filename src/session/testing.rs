//! What the session's unit tests share: a profile talking to a fake Xero, with a token set
//! stored.

use std::collections::HashMap;

use super::Session;
use crate::guard::RefreshGuard;
use crate::cli::testing::{TestContext, context};
use crate::secret::{Zeroizing, secret_from_str};
use crate::token_set::TokenSet;
use fake_xero::FakeXero;

pub(super) const NOW: i64 = 1_800_000_000;

/// Writes `set` as the commands do: under the profile's guard.
pub(super) async fn store(session: &Session, set: &TokenSet) {
    let guard = guard_of(session).await;
    session.store_token_set(set, &guard).await.unwrap();
    guard.end().await;
}

/// The profile's guard, as a command that writes takes it.
pub(super) async fn guard_of(session: &Session) -> RefreshGuard {
    RefreshGuard::for_writing(session.paths(), &session.profile().name, session.store())
        .await
        .unwrap()
}

/// The note of an unsaved refresh, read under the profile's guard.
pub(super) async fn unsaved_note(session: &Session) -> Option<i64> {
    let guard = guard_of(session).await;
    let note = guard.unsaved_refresh_sent_at().await;
    guard.end().await;
    note
}

/// A context whose profile talks to `fake`, with a client and an expired token set stored.
pub(super) async fn with_expired_set(fake: &FakeXero) -> (TestContext, String) {
    fake.add_client("APP1", Some("app-secret"));
    let issued = fake.issue_tokens("APP1", "openid offline_access");
    let env = HashMap::from([
        ("XERO_AUTH_TOKEN_URL".to_string(), fake.token_url()),
        ("XERO_AUTH_HTTP_TIMEOUT".to_string(), "2".to_string()),
    ]);
    let t = context(NOW, env, "[profiles.default]\nclient_id = \"APP1\"\n");
    let session = t.ctx.session().unwrap();
    session
        .store()
        .set(
            "default/client-secret",
            "x",
            Zeroizing::new(b"app-secret".to_vec()),
        )
        .await
        .unwrap();
    let set = TokenSet {
 audit_key: None,
        refresh_token: Some(secret_from_str(&issued.refresh_token)),
        access_token: Some(secret_from_str(&issued.access_token)),
        expires_at: Some(NOW - 10),
        token_type: "Bearer".into(),
        scopes: vec![],
        obtained_at: NOW - 86_400,
    };
    store(&session, &set).await;
    (t, issued.refresh_token)
}
