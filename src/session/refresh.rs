//! A profile's session: reading and writing its token set, and the refresh protocol.
//!
//! The protocol (ARCHITECTURE.md, The refresh protocol):
//! 1. take the profile's cross-process lock (bounded wait);
//! 2. re-read the token set: another process may have refreshed while we waited;
//! 3. POST the refresh; on timeout, connection error, 5xx, 429 or an unreadable answer the
//!    stored set is untouched and the same refresh token is retried (Xero's 30-minute grace);
//! 4. write the new set to the keychain **before** anything sees the new access token;
//! 5. a response without `refresh_token` keeps the old one; `invalid_grant` deletes nothing;
//! 6. release the lock (and the lease) once every store call made under them has ended.
//!
//! Steps 1 and 6 are [`RefreshGuard`]'s: one guard for the lock, the lease and the
//! unsaved-refresh notes.
//!
//! On a store shared by many machines (the vault store) the lock queues this machine's
//! processes only; after it, a **lease** taken in the store queues the machines (others wait
//! for the set to change or the lease to expire, judged on the store's clock), the set is read
//! again under it, and step 4's write is conditional on the version read: a conflict means
//! another machine stored a newer set, which is used. The lease carries the time of a refresh
//! sent and never saved, as the lock file does on one machine.

use std::time::Duration;

use super::Session;
use crate::error::{Error, Result};
use crate::failpoints::crash_point;
use crate::guard::{Acquired, RefreshGuard};
use crate::store::{Store, Written, split};
use crate::token_set::{RefusedToken, TokenSet};

/// How many times a refreshed set's write is attempted before giving up with exit 5.
const STORE_WRITE_ATTEMPTS: u32 = 3;

/// What a refresh did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Refreshed {
    /// The token set now stored.
    pub token_set: TokenSet,
    /// True when this call made the request; false when the stored set was already good
    /// (another process refreshed while we waited for the lock).
    pub requested: bool,
}

impl Session {
    /// For a long-running command about to end: one more attempt (under the guard) at storing a
    /// token set kept unsaved, which this process's end would otherwise lose (after Xero's
    /// grace window the stored refresh token no longer works). Says on stderr whether it was
    /// saved. Nothing to do, and no request, when no set is unsaved.
    pub(crate) async fn save_unsaved(&self) {
        if !self.serve_unsaved || !self.has_unsaved_token_set() {
            return;
        }
        // Any set is "valid enough": the protocol's unsaved branch writes the kept set first,
        // and a set it serves is never refreshed here.
        let _ = self.refresh_with(Need::ValidFor(i64::MIN)).await;
        if self.has_unsaved_token_set() {
            tracing::warn!(
                "profile '{}': Xero's newest token set could not be saved in {} before this command ended; the stored refresh token stays usable for 30 minutes after it was refreshed: fix the store and run `{}` within that time",
                self.profile.name,
                self.store.describe(),
                crate::hint::command(&self.profile.name, "refresh")
            );
        }
    }

    /// A token set whose access token stays valid for more than `margin_secs`, refreshing
    /// through the protocol only when the stored one does not. Makes no request otherwise.
    pub async fn valid_token_set(&self, margin_secs: i64) -> Result<TokenSet> {
        let result = self.valid_token_set_unrecorded(margin_secs).await;
        self.record_handed_out(&result);
        result
    }

    async fn valid_token_set_unrecorded(&self, margin_secs: i64) -> Result<TokenSet> {
        let stored = self.require_token_set().await?;
        // A set kept unsaved is newer than the stored one: the protocol retries its write.
        if !self.has_unsaved_token_set() && stored.access_valid_for(self.now(), margin_secs) {
            return Ok(stored);
        }
        Ok(self
            .refresh_with(Need::ValidFor(margin_secs))
            .await?
            .token_set)
    }

    /// [`Session::valid_token_set`] for a program whose last access token Xero refused (a 401:
    /// revoked, expired early, or a clock that disagrees): refreshes, under the guard, only while
    /// the stored access token is still the one `refused` names; otherwise the stored one is
    /// newer and is handed back (refreshed only if it is not valid for `margin_secs`). So any
    /// number of programs reporting the same refused token make one refresh.
    pub async fn token_set_replacing(
        &self,
        refused: &RefusedToken,
        margin_secs: i64,
    ) -> Result<TokenSet> {
        let result = self.token_set_replacing_unrecorded(refused, margin_secs).await;
        self.record_handed_out(&result);
        result
    }

    async fn token_set_replacing_unrecorded(
        &self,
        refused: &RefusedToken,
        margin_secs: i64,
    ) -> Result<TokenSet> {
        let stored = self.require_token_set().await?;
        if !self.has_unsaved_token_set()
            && !refused.names(&stored)
            && stored.access_valid_for(self.now(), margin_secs)
        {
            return Ok(stored);
        }
        tracing::info!(profile = %self.profile.name, "the program's access token was refused: getting a new one");
        Ok(self
            .refresh_with(Need::Replacing(refused.clone(), margin_secs))
            .await?
            .token_set)
    }

    /// Refreshes now, whatever the access token's expiry: `xero-auth refresh`. When another
    /// process refreshes while this one waits for the lock, its result is used instead of a
    /// second request.
    pub async fn force_refresh(&self) -> Result<Refreshed> {
        let seen = self.require_token_set().await?;
        self.refresh_with(Need::NewerThan(seen)).await
    }

    /// Steps 1 and 2 of the protocol (the guard, the set read again under it), then what the
    /// set found there calls for: nothing (`need` was met elsewhere), the write of a set this
    /// process kept unsaved, or a refresh ([`Session::refresh_locked`]).
    pub(super) async fn refresh_with(&self, need: Need) -> Result<Refreshed> {
        let _local = self.local.lock().await;
        let name = &self.profile.name;
        let need = &need;
        let acquired = RefreshGuard::acquire(&self.paths, name, &self.store, |store| {
            Box::pin(async move {
                let current = self.current_set(&store).await?;
                let done = self.done_elsewhere(need, &current.set) && current.unsaved.is_none();
                Ok((current, done))
            })
        })
        .await?;
        let (guard, current) = match acquired {
            Acquired::Settled(current) => {
                tracing::debug!(profile = %name, "token set already refreshed by another process");
                return Ok(Refreshed {
                    token_set: current.set,
                    requested: false,
                });
            }
            Acquired::Held(guard, current) => (guard, current),
        };
        let Current { set, unsaved } = current;
        let Some(from) = unsaved else {
            let stored = copy_set(&set);
            return self.refresh_locked(set, stored, guard).await;
        };
        // A newer set this process could not store: its write is retried first.
        match self.store_refreshed(guard.store(), &set).await {
            Ok(Written::Changed) => {
                // Another machine stored a set since this one was read: it is newer, and used.
                self.unsaved_lock().take();
                tracing::warn!(profile = %name, "the refreshed token set this process kept in memory was replaced in the store by another machine; using the stored one");
                guard.saved().await;
                Ok(Refreshed {
                    token_set: self.require_token_set().await?,
                    requested: false,
                })
            }
            Ok(Written::Stored) => {
                self.unsaved_lock().take();
                // Both notes: the lease's too, or the next holder would take this saved refresh
                // for one never saved.
                guard.clear_notes().await;
                tracing::warn!(profile = %name, "the refreshed token set this process kept in memory is saved in {} now", self.store.describe());
                let (access_fp, refresh_fp) = self.fingerprints(&set);
                self.record(
                    self.audit_event("refresh")
                        .with("step", "saved-later")
                        .with_opt("access_fp", access_fp)
                        .with_opt("refresh_fp", refresh_fp)
                        .outcome(0),
                );
                if self.done_elsewhere(need, &set) {
                    guard.saved().await;
                    return Ok(Refreshed {
                        token_set: set,
                        requested: false,
                    });
                }
                let stored = copy_set(&set);
                self.refresh_locked(set, stored, guard).await
            }
            Err(e) => {
                tracing::debug!(profile = %name, "the token set is still unsaved: {e}");
                if self.serve_unsaved && self.done_elsewhere(need, &set) {
                    guard.end().await;
                    return Ok(Refreshed {
                        token_set: set,
                        requested: false,
                    });
                }
                // Its refresh token is the live one: the next refresh starts from it, and the
                // store still holds `from` (what a newer unsaved set replaces).
                self.refresh_locked(set, from, guard).await
            }
        }
    }

    /// The set to refresh from, read through `store` under the lock: the stored one, or a newer
    /// one this process could not store while the stored one is still the set it replaced.
    async fn current_set(&self, store: &Store) -> Result<Current> {
        let stored = split::load(store, &self.profile.name)
            .await?
            .ok_or_else(|| self.no_token_set())?;
        let mut unsaved = self.unsaved_lock();
        match unsaved.as_ref() {
            Some(kept) if stored.same_tokens(&kept.from) => Ok(Current {
                set: copy_set(&kept.set),
                unsaved: Some(copy_set(&kept.from)),
            }),
            Some(_) => {
                // Another process stored a set since: it was refreshed from the live refresh
                // token (inside Xero's grace window) or replaced by a login; it wins.
                unsaved.take();
                tracing::warn!(profile = %self.profile.name, "the refreshed token set this process kept in memory was replaced in the store by another process; using the stored one");
                Ok(Current {
                    set: stored,
                    unsaved: None,
                })
            }
            None => Ok(Current {
                set: stored,
                unsaved: None,
            }),
        }
    }

    /// Whether `current`, found under the lock, already meets `need`.
    fn done_elsewhere(&self, need: &Need, current: &TokenSet) -> bool {
        match need {
            Need::ValidFor(margin) => current.access_valid_for(self.now(), *margin),
            Need::Replacing(refused, margin) => {
                !refused.names(current) && current.access_valid_for(self.now(), *margin)
            }
            // Newer, and usable: a set replaced by one without an access token (an import of
            // a file without an expiry) still needs this refresh.
            Need::NewerThan(seen) => {
                !current.same_tokens(seen) && current.access_valid_for(self.now(), self.margin_secs)
            }
        }
    }

    /// How long the refresh lease must last, from the moment a request is sent, if its holder
    /// cannot renew it any more (it ended): one request to Xero and every attempt at the write
    /// after it (a write that outlived its timeout may still be on its way), and a margin.
    fn sending_lease_ttl(&self) -> Duration {
        self.profile.http_timeout
            + self.profile.store_timeout * STORE_WRITE_ATTEMPTS
            + Duration::from_secs(10)
    }

    /// Steps 3 to 5 of the protocol, under the guard (the lock, and the lease on a shared
    /// store), for `current` as read there.
    ///
    /// `stored` is the set the store holds now (`current` itself, unless `current` is a newer set
    /// this process could not store): a set this refresh cannot store is kept as replacing it.
    async fn refresh_locked(
        &self,
        current: TokenSet,
        stored: TokenSet,
        guard: RefreshGuard,
    ) -> Result<Refreshed> {
        let app = match self.app_credentials().await {
            Ok(app) => app,
            Err(e) => {
                guard.end().await;
                return Err(e);
            }
        };
        // Keep the earliest unsaved send: Xero's grace window runs from the token's first use.
        // On a shared store an earlier holder may have been another machine.
        let unsaved_before = guard.unsaved_refresh_sent_at().await;
        let first_sent = unsaved_before.unwrap_or_else(|| self.now());
        // Into the lease first (renewing it for as long as the request and the writes may take),
        // then the lock file: a lease that could not be written sent nothing.
        if let Err(e) = guard
            .note_refresh_sent(first_sent, self.sending_lease_ttl())
            .await
        {
            guard.end().await;
            return Err(e);
        }
        let rotating = current.refresh_token.is_some();
        let spent_fp = self.fingerprints(&current).1;
        self.record(
            self.audit_event("refresh")
                .with("step", if unsaved_before.is_some() { "retried" } else { "sent" })
                .with_opt("refresh_fp", spent_fp.clone()),
        );
        let posted = self.post_refresh(&app, &current, &guard).await;
        let response = match posted {
            Ok(response) => response,
            Err(e) => {
                let failed = RefreshFailure {
                    rotating,
                    unsaved_before,
                    first_sent,
                };
                let error = self.refresh_failed(e, failed, guard).await;
                self.record(
                    self.audit_event("refresh")
                        .with("step", "failed")
                        .with_opt("refresh_fp", spent_fp)
                        .outcome(error.exit_code() as i32),
                );
                return Err(error);
            }
        };
        crash_point("refresh-response-parsed");
        // Xero answered: the lease is renewed before the write, for its whole time, so that a
        // slow answer cannot leave the write without it. A lease lost here does not stop the
        // write: it is conditional on the set read (check-and-set), so it cannot replace a set
        // another machine stored meanwhile.
        if let Err(e) = guard.renew().await {
            tracing::warn!(profile = %self.profile.name, "renewing the refresh lease after Xero answered failed: {e}");
        }

        let from = stored;
        let new_set = current.after_refresh(response, self.now());
        let stored = match self.store_refreshed(guard.store(), &new_set).await {
            Ok(stored) => stored,
            Err(e) => {
                // The note of the unsaved refresh stays, in the lock file and in the lease.
                guard.end().await;
                self.record(
                    self.audit_event("refresh")
                        .with("step", "unsaved")
                        .with_opt("spent_fp", spent_fp)
                        .with_opt("refresh_fp", self.fingerprints(&new_set).1)
                        .outcome(e.exit_code() as i32),
                );
                return self.keep_unsaved(from, new_set, e);
            }
        };
        self.unsaved_lock().take();
        guard.saved().await;
        crash_point("refresh-stored");
        let (access_fp, refresh_fp) = self.fingerprints(&new_set);
        self.record(
            self.audit_event("refresh")
                .with(
                    "step",
                    if unsaved_before.is_some() { "recovered" } else { "saved" },
                )
                .with_opt("spent_fp", spent_fp)
                .with_opt("access_fp", access_fp)
                .with_opt("refresh_fp", refresh_fp)
                .outcome(0),
        );
        let Written::Changed = stored else {
            tracing::info!(profile = %self.profile.name, "refreshed and stored the token set");
            return Ok(Refreshed {
                token_set: new_set,
                requested: true,
            });
        };
        // Another machine wrote a newer set since this one read it (check-and-set refused this
        // write): that set is the one kept, and the one used. Its refresh token is the store's.
        tracing::warn!(profile = %self.profile.name, "the token set was replaced by another machine during this refresh; using the newer set");
        Ok(Refreshed {
            token_set: self.require_token_set().await?,
            requested: true,
        })
    }

    /// Ends `guard` after a refresh that brought no tokens, and turns `error` into what it means
    /// for the stored refresh token.
    ///
    /// The note of an unsaved refresh is kept only while a refresh with the stored token may have
    /// been carried out: this run's, when an attempt's answer was lost (a timeout or a reset
    /// after sending, an answer cut short, a gateway's 502 or 504), or an earlier run's, noted
    /// before this one. Every other failure proves this run's requests spent nothing: a
    /// connection never opened, an answer that says the request was not done (429, 408, another
    /// 5xx), or an error answer from the token endpoint (`invalid_client`, `invalid_grant`, any
    /// OAuth error or other 4xx: Xero refused the request, it did not rotate the token). Then,
    /// with no earlier note, the note this run wrote is cleared, so that a later failure is not
    /// reported as a refresh that "may have reached Xero".
    async fn refresh_failed(
        &self,
        error: Error,
        failed: RefreshFailure,
        guard: RefreshGuard,
    ) -> Error {
        let RefreshFailure {
            rotating,
            unsaved_before,
            first_sent,
        } = failed;
        if guard.answer_lost() || unsaved_before.is_some() {
            guard.end().await;
        } else {
            guard.saved().await;
        }
        match error {
            // A refresh that may have reached Xero leaves the stored refresh token usable only
            // inside the grace window from its first use: the message says until when, rather
            // than that the stored tokens "stay usable".
            Error::Unconfirmed { what, cause, .. } if rotating => Error::Unconfirmed {
                profile: self.profile.name.clone(),
                what,
                cause,
                first_sent: Some(first_sent),
            },
            // This run's request certainly did nothing, but an earlier run's may have.
            Error::Temporary { what, cause, .. } if rotating && unsaved_before.is_some() => {
                Error::Unconfirmed {
                    profile: self.profile.name.clone(),
                    what,
                    cause,
                    first_sent: Some(first_sent),
                }
            }
            // The stored refresh token was refused, and an earlier run had sent a refresh it
            // never saved: that run most likely spent the token, and the grace window in which
            // it could be retried is over. Say so, rather than guess.
            Error::ReauthRequired {
                profile,
                rejection: rejection @ crate::error::Rejection::Grant,
                endpoint,
                description,
                unsaved_refresh_at: None,
            } => Error::ReauthRequired {
                profile,
                rejection,
                endpoint,
                description,
                unsaved_refresh_at: unsaved_before,
            },
            other => other,
        }
    }

    /// Xero issued `new_set` for `from`, and the store would not take it: it is kept in this
    /// process's memory (its refresh token is the live one), the next refresh starts from it and
    /// retries the write first. Said once on stderr. A long-running command that serves tokens
    /// ([`Session::serving_unsaved`]) gets the set; others get the write's error (exit 5).
    fn keep_unsaved(&self, from: TokenSet, new_set: TokenSet, error: Error) -> Result<Refreshed> {
        let token_set = self.serve_unsaved.then(|| copy_set(&new_set));
        *self.unsaved_lock() = Some(Unsaved { from, set: new_set });
        if self.serve_unsaved
            && !self
                .told_unsaved
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!(
                "profile '{}': Xero's new token set could not be saved in {} ({error}); it is kept in this process's memory only, its access token is used, and the write is retried at the next token request. If this process ends first, the stored refresh token stays usable for 30 minutes after the refresh",
                self.profile.name,
                self.store.describe()
            );
        }
        match token_set {
            Some(token_set) => Ok(Refreshed {
                token_set,
                requested: true,
            }),
            None => Err(error),
        }
    }

    /// Writes a freshly issued set, retrying the write: Xero has already rotated the refresh
    /// token, so this write is what keeps the user logged in. A write that did not answer in
    /// time is not retried: it may still land, and holds `lock` until it has.
    ///
    /// On a store shared by many machines the write is conditional on the set being the one read
    /// under the lock: [`Written::Changed`] when another machine wrote a newer one.
    async fn store_refreshed(&self, held: &Store, set: &TokenSet) -> Result<Written> {
        let label = format!("xero-auth token set ({})", self.profile.name);
        let mut last = None;
        for attempt in 1..=STORE_WRITE_ATTEMPTS {
            let written = if crate::failpoints::refused("refresh-write-refused") {
                Err(Error::StoreUnavailable {
                    store: self.store.describe(),
                    cause: "the write was refused (failure point)".into(),
                    fix: "none: a test".into(),
                })
            } else {
                split::save_unless_changed(held, &self.profile.name, &label, set).await
            };
            match written {
                Ok(written) => return Ok(written),
                Err(e) => {
                    tracing::warn!(attempt, "writing the refreshed token set failed: {e}");
                    last = Some(e);
                    if held.has_unfinished_calls() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        let cause = match last {
            Some(Error::StoreUnavailable { cause, .. }) => cause,
            Some(other) => other.to_string(),
            None => "unknown".into(),
        };
        Err(Error::StoreWriteFailed {
            profile: self.profile.name.clone(),
            store: self.store.describe(),
            cause,
        })
    }
}

/// What [`Session::refresh_failed`] needs to know of the refresh that failed.
struct RefreshFailure {
    /// Whether the request carried a refresh token (Xero rotates it).
    rotating: bool,
    /// When an earlier run sent a refresh whose answer it never saved, if one did.
    unsaved_before: Option<i64>,
    /// The earliest unsaved send: that earlier run's, or this one's.
    first_sent: i64,
}

/// The set a refresh starts from, as read under the guard.
struct Current {
    /// The stored set, or the newer one this process keeps unsaved.
    set: TokenSet,
    /// With an unsaved set: the stored set it was refreshed from.
    unsaved: Option<TokenSet>,
}

/// A set Xero issued that the store would not take, kept in memory until it does.
pub(super) struct Unsaved {
    /// The stored set it was refreshed from: while the store still holds it, this one is newer.
    from: TokenSet,
    /// The new set; its refresh token is the live one.
    set: TokenSet,
}

/// A copy of `set` (each token in a wiped buffer of its own).
fn copy_set(set: &TokenSet) -> TokenSet {
    TokenSet {
        refresh_token: set.refresh_token.clone(),
        access_token: set.access_token.clone(),
        expires_at: set.expires_at,
        token_type: set.token_type.clone(),
        scopes: set.scopes.clone(),
        obtained_at: set.obtained_at,
        audit_key: set.audit_key.clone(),
    }
}

/// What a refresh must achieve; decides whether the set found after taking the lock will do.
pub(super) enum Need {
    /// An access token valid for more than this many seconds.
    ValidFor(i64),
    /// Tokens other than these, with an access token valid beyond the margin (a forced refresh,
    /// or a 401).
    NewerThan(TokenSet),
    /// An access token other than the refused one, valid for more than this many seconds (a
    /// program's 401, told through `token --refused` or the token endpoint).
    Replacing(RefusedToken, i64),
}

#[cfg(test)]
mod tests {
    use super::super::testing::{NOW, guard_of, store, unsaved_note, with_expired_set};
    use super::*;
    use crate::cli::testing::TestContext;
    use crate::secret::{ExposeSecret, secret_from_str};
    use crate::store::memory::HeldWrites;
    use fake_xero::{Counter, FakeXero};
    use std::sync::Arc;

    #[tokio::test]
    async fn failed_keychain_write_after_refresh_is_exit_5_and_keeps_the_old_set() {
        let fake = FakeXero::start();
        let (t, old_rt) = with_expired_set(&fake).await;
        let before = t.store.raw("default/token-set").unwrap();
        t.store.fail_writes(true);

        let err = t
            .ctx
            .session()
            .unwrap()
            .valid_token_set(300)
            .await
            .unwrap_err();

        assert_eq!(err.exit_code() as u8, 5);
        let message = err.to_string();
        assert!(
            message.contains("30 minutes") && message.contains("xero-auth refresh"),
            "{message}"
        );
        assert!(!message.contains(&old_rt));
        assert_eq!(t.store.raw("default/token-set").unwrap(), before);
        assert_eq!(fake.count(Counter::Refresh), 1);
        // The audit log says the refresh was sent and its set not saved (exit 5).
        let steps: Vec<_> = crate::audit::read_all(&t.ctx.paths)
            .unwrap()
            .into_iter()
            .filter(|l| l["event"] == "refresh")
            .map(|l| (l["step"].clone(), l.get("exit").cloned()))
            .collect();
        assert_eq!(
            steps,
            [
                (serde_json::json!("sent"), None),
                (serde_json::json!("unsaved"), Some(serde_json::json!(5)))
            ]
        );
    }

    /// `api` got a 401 while another process replaced the set with one that has no access
    /// token (`import --force` of a file without an expiry): the set found under the lock is
    /// newer, but has nothing to send, so it is refreshed rather than handed back (where
    /// `send` used to `expect` an access token and panic).
    #[tokio::test]
    async fn a_newer_set_without_an_access_token_is_refreshed_not_handed_back() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        let seen = session.require_token_set().await.unwrap();
        let imported = fake.issue_tokens("APP1", "openid offline_access");
        let guard = guard_of(&session).await;
        session
            .store_token_set(
                &TokenSet {
 audit_key: None,
                    refresh_token: Some(secret_from_str(&imported.refresh_token)),
                    access_token: None,
                    expires_at: None,
                    token_type: "Bearer".into(),
                    scopes: vec![],
                    obtained_at: NOW,
                },
                &guard,
            )
            .await
            .unwrap();
        guard.end().await;

        let refreshed = session.refresh_with(Need::NewerThan(seen)).await.unwrap();

        assert!(refreshed.requested, "a refresh was made");
        let token = refreshed.token_set.require_access_token("default").unwrap();
        assert!(fake.access_token_valid(token.expose_secret()));
        assert_eq!(fake.count(Counter::Refresh), 1);
    }

    #[tokio::test]
    async fn an_unsaved_refresh_is_named_when_the_token_is_refused_after_the_grace_window() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        t.store.fail_writes(true);
        let err = session.valid_token_set(300).await.unwrap_err();
        assert_eq!(err.exit_code() as u8, 5);
        assert_eq!(unsaved_note(&session).await, Some(NOW), "the note stays");

        // The store is back, but only after Xero's grace window, and for another process (this
        // one would start from the set it kept in memory).
        t.store.fail_writes(false);
        fake.advance_clock(Duration::from_secs(31 * 60));
        let err = t
            .ctx
            .session()
            .unwrap()
            .valid_token_set(300)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code() as u8, 4);
        let message = err.to_string();
        assert!(
            message.contains("An earlier xero-auth run sent a refresh at 2027-01-15T08:00:00Z")
                && message.contains("30 minutes")
                && message.contains("xero-auth login"),
            "{message}"
        );
    }

    /// A long-running command's refresh whose write failed: the new set is served from memory,
    /// the next request saves it first, and the spent refresh token is never sent again.
    #[tokio::test]
    async fn an_unsaved_set_is_served_and_saved_at_the_next_request_without_a_second_refresh() {
        let fake = FakeXero::start();
        let (t, old_rt) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap().serving_unsaved();
        t.store.fail_writes(true);
        let served = session.valid_token_set(300).await.unwrap();
        let token = served.require_access_token("default").unwrap();
        assert!(fake.access_token_valid(token.expose_secret()));
        assert!(session.has_unsaved_token_set());
        let stored = session.require_token_set().await.unwrap();
        assert_eq!(stored.refresh_token.unwrap().expose_secret(), old_rt);

        // Still failing: served again from memory, no request.
        let again = session.valid_token_set(300).await.unwrap();
        assert!(again.same_tokens(&served));
        assert_eq!(fake.count(Counter::Refresh), 1);

        t.store.fail_writes(false);
        let saved = session.valid_token_set(300).await.unwrap();
        assert!(saved.same_tokens(&served));
        assert!(!session.has_unsaved_token_set());
        let stored = session.require_token_set().await.unwrap();
        assert!(stored.same_tokens(&served), "the newer set is stored");
        assert_eq!(fake.count(Counter::Refresh), 1, "no second refresh");
        assert_eq!(unsaved_note(&session).await, None, "the note is cleared");
    }

    /// Without serving (a one-shot command or a library caller), the failed write is exit 5, but
    /// the next refresh in the same process starts from the set kept in memory: the spent refresh
    /// token is not sent again.
    #[tokio::test]
    async fn the_next_refresh_starts_from_the_unsaved_set() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        t.store.fail_writes(true);
        assert_eq!(
            session.valid_token_set(300).await.unwrap_err().exit_code() as u8,
            5
        );
        let issued = fake.issued();
        let live = issued.last().unwrap()["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        t.store.fail_writes(false);
        let set = session.valid_token_set(300).await.unwrap();
        assert_eq!(
            fake.count(Counter::Refresh),
            1,
            "saved, not refreshed again"
        );
        assert_eq!(set.refresh_token.unwrap().expose_secret(), live);
        let stored = session.require_token_set().await.unwrap();
        assert_eq!(stored.refresh_token.unwrap().expose_secret(), live);
    }

    /// Found in review: a second refresh of an unsaved set, whose write failed too, recorded the
    /// first unsaved set as what the store held; the next request then threw the newest set away
    /// and refreshed the stored (long spent) token again.
    #[tokio::test]
    async fn two_unsaved_refreshes_in_a_row_keep_the_newest_set_and_save_it() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        t.store.fail_writes(true);
        assert_eq!(
            session.valid_token_set(300).await.unwrap_err().exit_code() as u8,
            5
        );
        assert_eq!(
            session.force_refresh().await.unwrap_err().exit_code() as u8,
            5
        );
        assert_eq!(fake.count(Counter::Refresh), 2);
        let live = fake.issued().last().unwrap()["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        t.store.fail_writes(false);
        let set = session.valid_token_set(300).await.unwrap();
        assert_eq!(
            fake.count(Counter::Refresh),
            2,
            "saved, not refreshed again"
        );
        assert_eq!(set.refresh_token.unwrap().expose_secret(), live);
        let stored = session.require_token_set().await.unwrap();
        assert_eq!(stored.refresh_token.unwrap().expose_secret(), live);
    }

    #[tokio::test]
    async fn a_saved_refresh_clears_the_note() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        session.valid_token_set(300).await.unwrap();
        assert_eq!(unsaved_note(&session).await, None);
    }

    /// The context's profile, with a store whose calls time out after `timeout`.
    fn session_with_timeout(t: &TestContext, timeout: Duration) -> Session {
        Session::new(
            t.ctx.profile().unwrap(),
            t.ctx.paths.clone(),
            Store::new(t.store.clone(), timeout),
            t.ctx.clock.clone(),
        )
    }

    /// Whether another refresher could take the profile's lock now.
    async fn lock_is_free(t: &TestContext) -> bool {
        crate::guard::testing::lock_is_free(&t.ctx.paths, "default", Duration::from_millis(200))
            .await
    }

    /// Lets the held write finish and waits until the lock is free; true when it became free.
    async fn release_writes_and_wait_for_the_lock(held: HeldWrites, t: &TestContext) -> bool {
        drop(held);
        crate::guard::testing::lock_is_free(&t.ctx.paths, "default", Duration::from_secs(10)).await
    }

    #[tokio::test]
    async fn a_write_that_outlives_its_timeout_is_exit_5_and_keeps_the_lock_until_it_ends() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = session_with_timeout(&t, Duration::from_millis(300));
        let writes = t.store.writes().len();
        let held = t.store.hold_writes();

        let err = session.valid_token_set(300).await.unwrap_err();

        assert_eq!(err.exit_code() as u8, 5, "{err}");
        let message = err.to_string();
        assert!(
            message.contains("no answer to a write within 0.3 s")
                && message.contains("stays usable for 30 minutes"),
            "{message}"
        );
        assert_eq!(
            t.store.writes().len(),
            writes + 1,
            "a write still running is not retried beside itself"
        );
        assert!(
            !lock_is_free(&t).await,
            "the lock is held while the write may still land"
        );
        assert!(release_writes_and_wait_for_the_lock(held, &t).await);
        assert_eq!(fake.count(Counter::Refresh), 1);
    }

    #[tokio::test]
    async fn a_refresh_its_caller_gave_up_on_keeps_the_lock_until_its_write_ends() {
        let fake = FakeXero::start();
        let (t, old_rt) = with_expired_set(&fake).await;
        let session = session_with_timeout(&t, Duration::from_secs(30));
        let writes = t.store.writes().len();
        let held = t.store.hold_writes();

        // A library caller that stops waiting once the write has started (a timeout of its
        // own, a cancelled task): its future is dropped in the middle of the refresh.
        let mut call = Box::pin(session.access_token());
        tokio::select! {
            _ = &mut call => panic!("the access token came back although the write is held"),
            _ = async {
                while t.store.writes().len() == writes {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => {}
        }
        drop(call);

        assert!(
            !lock_is_free(&t).await,
            "a second refresher got the lock while the first one's write may still land"
        );
        assert!(release_writes_and_wait_for_the_lock(held, &t).await);
        // The write landed, before anyone else could refresh.
        let stored = session.require_token_set().await.unwrap();
        assert_ne!(stored.refresh_token.unwrap().expose_secret(), old_rt);
        assert_eq!(fake.count(Counter::Refresh), 1);
    }

    #[tokio::test]
    async fn many_tasks_in_one_process_make_one_refresh() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = Arc::new(t.ctx.session().unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = session.clone();
                tokio::spawn(async move { s.valid_token_set(300).await.map(|set| set.expires_at) })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(fake.count(Counter::Refresh), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_tasks_asking_for_an_access_token_make_one_refresh() {
        let fake = FakeXero::start();
        let (t, old_rt) = with_expired_set(&fake).await;
        let session = Arc::new(t.ctx.session().unwrap());
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let s = session.clone();
                tokio::spawn(async move {
                    s.access_token()
                        .await
                        .map(|token| token.expose_secret().to_string())
                })
            })
            .collect();
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.push(task.await.unwrap().unwrap());
        }
        assert_eq!(fake.count(Counter::Refresh), 1);
        assert!(
            tokens.iter().all(|t| t == &tokens[0]),
            "every task got the same token"
        );
        assert!(fake.access_token_valid(&tokens[0]));
        let stored = session.require_token_set().await.unwrap();
        assert_ne!(stored.refresh_token.unwrap().expose_secret(), old_rt);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sixteen_tasks_reporting_the_same_refused_token_make_one_refresh() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = Arc::new(t.ctx.session().unwrap());
        let first = session.valid_token_set(300).await.unwrap();
        assert_eq!(fake.count(Counter::Refresh), 1);
        // Valid for 30 minutes, but Xero refuses it.
        fake.refuse_access_tokens();
        let refused = RefusedToken::parse(&first.access_token_id().unwrap()).unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (s, refused) = (session.clone(), refused.clone());
                tokio::spawn(async move {
                    let set = s.token_set_replacing(&refused, 300).await?;
                    Ok::<_, Error>(set.access_token().unwrap().expose_secret().to_string())
                })
            })
            .collect();
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.push(task.await.unwrap().unwrap());
        }
        assert_eq!(fake.count(Counter::Refresh), 2, "one refresh for the 16 refusals");
        assert!(tokens.iter().all(|t| t == &tokens[0]));
        assert_ne!(&tokens[0], first.access_token().unwrap().expose_secret());
        assert!(fake.access_token_valid(&tokens[0]));
        // A refusal reported late, naming the token already replaced, gets the newer one
        // without a request.
        let again = session.token_set_replacing(&refused, 300).await.unwrap();
        assert_eq!(again.access_token().unwrap().expose_secret(), tokens[0]);
        assert_eq!(fake.count(Counter::Refresh), 2);
    }

    #[tokio::test]
    async fn token_command_serves_a_valid_token_without_any_request() {
        let fake = FakeXero::start();
        let (t, _) = with_expired_set(&fake).await;
        let session = t.ctx.session().unwrap();
        let mut set = session.require_token_set().await.unwrap();
        set.access_token = Some(secret_from_str("eyJ.valid.token"));
        set.expires_at = Some(NOW + 1000);
        store(&session, &set).await;

        crate::cli::token::run(
            crate::cli::token::TokenArgs {
                header: true,
                env: false,
                min_valid: 300,
                refused: None,
            },
            &t.ctx,
        )
        .await
        .unwrap();

        assert_eq!(t.out.text(), "Authorization: Bearer eyJ.valid.token\n");
        assert_eq!(fake.count(Counter::TokenRequests), 0);
        let _ = &t.dir;
    }
}
