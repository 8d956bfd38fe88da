//! A profile's token set on any store, including one whose entries are smaller than the set.
//!
//! Windows Credential Manager keeps at most 2,560 bytes per entry, and a Xero access token alone
//! is 1.2–1.6 KB, more with many granular scopes. The contract (ARCHITECTURE.md,
//! Stores) gives the access token up, never the refresh token: the refresh token is written
//! in one write and never split, the access token is a 30-minute cache that may live elsewhere.
//!
//! - When the whole set fits in one entry, or the store has no limit (the Secret Service, the
//!   macOS Keychain, keyutils), it is one entry `PROFILE/token-set` in format 1, byte for byte
//!   what earlier versions wrote, and reading or writing it costs the one keychain call it always
//!   did.
//! - When it does not fit, the access token is cut into parts `PROFILE/access-token/0`, `/1`, …,
//!   each within the limit and headed by a random id, its index and the count, and written
//!   **first**. Then the core entry `PROFILE/token-set` — the refresh token and everything else,
//!   with the id, the count and the token's digest (format
//!   [`SPLIT_FORMAT_VERSION`](crate::token_set::SPLIT_FORMAT_VERSION)) — is written
//!   in **one** write. A crash between the two leaves the previous core, whose refresh token
//!   still works, beside parts that no longer match it: the access token reads as absent and the
//!   next command refreshes.
//! - Parts that are missing, stale (another id), damaged or incomplete mean "no cached access
//!   token", never an error and never a lost refresh token. Store errors (unavailable, locked)
//!   still fail the read.
//!
//! Part entries always form an unbroken run from `/0`: they are written upwards and deleted
//! downwards from the highest, so finding the last one is a walk up from where a run may start.

use crate::error::{Error, Result};
use crate::secret::{ExposeSecret, Zeroizing, secret_from_str};
use crate::store::{Store, Written, access_token_part_account, token_set_account};
use crate::token_set::{AccessTokenParts, TokenSet};

/// The most parts one access token is cut into (some 160 KB on Credential Manager). A longer
/// token is not cached at all: the set is stored without it and each use refreshes.
const MAX_PARTS: u32 = 64;

/// How a part entry begins; the header ends at the first newline.
const PART_MAGIC: &str = "xero-auth access-token part";

/// The header of part `index` of `count` written under `id`.
fn part_header(id: &str, index: u32, count: u32) -> String {
    format!("{PART_MAGIC} {id} {index}/{count}\n")
}

/// The stored token set of `profile`, if any, with its access token gathered from its parts when
/// it has them. A set whose parts cannot be used comes back without an access token.
pub async fn load(store: &Store, profile: &str) -> Result<Option<TokenSet>> {
    let Some(bytes) = store.get(&token_set_account(profile)).await? else {
        return Ok(None);
    };
    let (mut set, parts) =
        TokenSet::from_stored(&bytes).map_err(|message| Error::StoredFormat {
            profile: profile.to_string(),
            message,
        })?;
    drop(bytes);
    if let Some(parts) = parts {
        set.access_token = read_access_token(store, profile, &parts).await?;
        if set.access_token.is_none() {
            set.expires_at = None;
        }
    }
    Ok(Some(set))
}

/// Writes `set` for `profile`: one entry when it fits, else the access token's parts first and
/// then the core entry in one write. Refuses, writing nothing, when even the core does not fit.
pub async fn save(store: &Store, profile: &str, label: &str, set: &TokenSet) -> Result<()> {
    let account = token_set_account(profile);
    let whole = set.to_json();
    let Some(limit) = store.max_secret_len() else {
        return store.set(&account, label, whole).await;
    };
    if whole.len() <= limit {
        store.set(&account, label, whole).await?;
        sweep_parts(store, profile, 0).await;
        return Ok(());
    }
    let whole_len = whole.len();
    drop(whole);

    let access_token = set
        .access_token
        .as_ref()
        .map(|t| t.expose_secret().as_bytes());
    let id = crate::secret::random_urlsafe(12);
    let plan = access_token.and_then(|token| Some((token, part_count(token.len(), limit, &id)?)));
    let Some((token, count)) = plan else {
        // No access token, or one too long to cut into MAX_PARTS: store the set without it.
        let core = set.to_core_json(None);
        refuse_if_too_big(store, profile, limit, whole_len, core.len())?;
        if access_token.is_some() {
            tracing::warn!(
                profile,
                "the access token is too long to keep in {}; it is not cached",
                store.describe()
            );
        }
        store.set(&account, label, core).await?;
        sweep_parts(store, profile, 0).await;
        return Ok(());
    };
    let parts = AccessTokenParts {
        id,
        count,
        sha256: sha256(token),
    };
    let core = set.to_core_json(Some(&parts));
    refuse_if_too_big(store, profile, limit, whole_len, core.len())?;

    let room = limit - part_header(&parts.id, count - 1, count).len();
    for index in 0..count {
        let start = (index as usize * room).min(token.len());
        let chunk = &token[start..(start + room).min(token.len())];
        let header = part_header(&parts.id, index, count);
        let mut part = Zeroizing::new(Vec::with_capacity(header.len() + chunk.len()));
        part.extend_from_slice(header.as_bytes());
        part.extend_from_slice(chunk);
        let part_label = format!("{label}: access token, part {} of {count}", index + 1);
        store
            .set(
                &access_token_part_account(profile, index),
                &part_label,
                part,
            )
            .await?;
    }
    crate::failpoints::crash_point("token-parts-stored");
    store.set(&account, label, core).await?;
    sweep_parts(store, profile, count).await;
    Ok(())
}

/// Deletes `profile`'s token set: its access-token parts first (on a store with a limit, the only
/// kind that has them), then the core entry. `false` when there was nothing to delete.
pub async fn delete(store: &Store, profile: &str) -> Result<bool> {
    let parts_deleted = match store.max_secret_len() {
        Some(_) => delete_parts(store, profile, 0).await?,
        None => false,
    };
    Ok(store.delete(&token_set_account(profile)).await? || parts_deleted)
}

/// [`save`], on condition that the set was not changed since this process read it, where the
/// store can tell ([`crate::store::SharedStore::set_unless_changed`]: a store with no per-entry
/// limit, such as the vault store). A store that splits sets writes as [`save`] does.
pub async fn save_unless_changed(
    store: &Store,
    profile: &str,
    label: &str,
    set: &TokenSet,
) -> Result<Written> {
    if store.max_secret_len().is_some() {
        return save(store, profile, label, set)
            .await
            .map(|()| Written::Stored);
    }
    store
        .set_unless_changed(&token_set_account(profile), label, set.to_json())
        .await
}

/// How many parts a token of `token_len` bytes needs when each entry holds `limit` bytes, every
/// part sized for the longest header; `None` when it would take more than [`MAX_PARTS`].
fn part_count(token_len: usize, limit: usize, id: &str) -> Option<u32> {
    (1..=MAX_PARTS).find(|&count| {
        let header = part_header(id, count - 1, count).len();
        limit > header && token_len.div_ceil(limit - header) <= count as usize
    })
}

fn refuse_if_too_big(
    store: &Store,
    profile: &str,
    limit: usize,
    whole_len: usize,
    core_len: usize,
) -> Result<()> {
    if core_len <= limit {
        return Ok(());
    }
    Err(Error::StoreUnavailable {
        store: store.describe(),
        cause: format!(
            "profile '{profile}''s token set is {whole_len} bytes, and {core_len} even without its \
             access token; one entry of this store holds at most {limit} bytes, and the refresh \
             token is never split across entries. Nothing was written"
        ),
        fix: "log in again with fewer scopes (`scopes` in the profile's config), or keep this \
              profile in another store"
            .into(),
    })
}

/// The access token the parts named by `parts` make, or `None` when any of them is missing,
/// stale, damaged or incomplete. Store errors are returned.
async fn read_access_token(
    store: &Store,
    profile: &str,
    parts: &AccessTokenParts,
) -> Result<Option<crate::secret::AccessToken>> {
    if parts.count == 0 || parts.count > MAX_PARTS {
        tracing::warn!(
            profile,
            count = parts.count,
            "access-token part count out of range"
        );
        return Ok(None);
    }
    let mut chunks = Vec::with_capacity(parts.count as usize);
    for index in 0..parts.count {
        let Some(part) = store
            .get(&access_token_part_account(profile, index))
            .await?
        else {
            tracing::info!(
                profile,
                index,
                "an access-token part is missing; refreshing instead"
            );
            return Ok(None);
        };
        let header = part_header(&parts.id, index, parts.count);
        if !part.starts_with(header.as_bytes()) {
            tracing::info!(
                profile,
                index,
                "an access-token part is stale or damaged; refreshing instead"
            );
            return Ok(None);
        }
        chunks.push((part, header.len()));
    }
    let len = chunks
        .iter()
        .map(|(part, header)| part.len() - header)
        .sum();
    let mut token = Zeroizing::new(Vec::with_capacity(len));
    for (part, header) in &chunks {
        token.extend_from_slice(&part[*header..]);
    }
    drop(chunks);
    if sha256(&token) != parts.sha256 {
        tracing::info!(
            profile,
            "the access-token parts do not make the token they were written for; refreshing instead"
        );
        return Ok(None);
    }
    // The digest matched, so these are the bytes written; checked like every stored token
    // anyway (parts and core may both have been rewritten).
    Ok(std::str::from_utf8(&token)
        .ok()
        .filter(|t| crate::oauth::check_token_text(t, "access_token").is_ok())
        .map(secret_from_str))
}

/// Deletes the part entries from `from` up, highest first, so that what a failure leaves is
/// still an unbroken run. `true` when there was any.
async fn delete_parts(store: &Store, profile: &str, from: u32) -> Result<bool> {
    let mut end = from;
    while end < MAX_PARTS
        && store
            .contains(&access_token_part_account(profile, end))
            .await?
    {
        end += 1;
    }
    for index in (from..end).rev() {
        store
            .delete(&access_token_part_account(profile, index))
            .await?;
    }
    Ok(end > from)
}

/// Best effort: parts from `from` up belong to no set any more (left by an earlier, longer
/// token); a failure to delete them is logged, not returned — the set itself is stored.
async fn sweep_parts(store: &Store, profile: &str, from: u32) {
    if let Err(e) = delete_parts(store, profile, from).await {
        tracing::warn!(profile, "could not delete leftover access-token parts: {e}");
    }
}

fn sha256(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Refuses a secret of `len` bytes in a store that holds at most `limit`, as Windows Credential
/// Manager does (`TooLong`): for [`Store::entry_limit`] and the tests' memory store.
pub(crate) fn refuse_over_limit(
    len: usize,
    limit: Option<usize>,
) -> std::result::Result<(), super::StoreFailure> {
    match limit {
        Some(limit) if len > limit => Err(super::StoreFailure {
            cause: format!(
                "a secret of {len} bytes is longer than this store's {limit}-byte limit"
            ),
            fix: "store less in one entry".into(),
        }),
        _ => Ok(()),
    }
}

/// The environment variable that, in builds with the `failpoints` feature (the tests' build),
/// makes the command-line tool's store refuse secrets over that many bytes and report the limit,
/// as Credential Manager does — so the split layout is tested against the real Secret Service.
#[cfg(feature = "failpoints")]
pub const TEST_ENTRY_LIMIT_ENV: &str = "XERO_AUTH_TEST_ENTRY_LIMIT";

/// `store`, limited to [`TEST_ENTRY_LIMIT_ENV`] bytes per entry when that variable is set in a
/// `failpoints` build; otherwise `store` itself, untouched.
pub fn limit_for_tests(store: Store) -> Store {
    #[cfg(feature = "failpoints")]
    if let Some(limit) = std::env::var(TEST_ENTRY_LIMIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return store.entry_limit(limit);
    }
    store
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{CREDENTIAL_MANAGER_MAX_SECRET_LEN as LIMIT, SecretStore};

    const PROFILE: &str = "p";

    fn core() -> String {
        token_set_account(PROFILE)
    }

    fn part(index: u32) -> String {
        access_token_part_account(PROFILE, index)
    }

    fn limited() -> (Store, Arc<MemoryStore>) {
        let memory = Arc::new(MemoryStore::with_limit(LIMIT));
        (Store::new(memory.clone(), Duration::from_secs(5)), memory)
    }

    /// A JWT-looking token of exactly `len` bytes; `seed` makes different tokens differ.
    fn token(len: usize, seed: u64) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut out = String::from("eyJhbGciOiJSUzI1NiJ9.");
        while out.len() < len {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let c = if out.len() % 700 == 699 {
                b'.'
            } else {
                ALPHABET[(state >> 58) as usize]
            };
            out.push(c as char);
        }
        out.truncate(len);
        out
    }

    /// Forty of Xero's granular scopes, as an app that asks for many of them gets.
    fn granular_scopes() -> Vec<String> {
        let mut scopes: Vec<String> = ["openid", "profile", "email", "offline_access"]
            .into_iter()
            .map(String::from)
            .collect();
        for what in [
            "invoices",
            "payments",
            "banktransactions",
            "manualjournals",
            "contacts",
            "settings",
            "attachments",
        ] {
            scopes.push(format!("accounting.{what}"));
            scopes.push(format!("accounting.{what}.read"));
        }
        for report in [
            "aged",
            "balancesheet",
            "banksummary",
            "budgetsummary",
            "executivesummary",
            "profitandloss",
            "trialbalance",
            "taxreports",
            "tenninetynine",
        ] {
            scopes.push(format!("accounting.reports.{report}.read"));
        }
        for what in ["employees", "payruns", "payslip", "settings", "timesheets"] {
            scopes.push(format!("payroll.{what}"));
            scopes.push(format!("payroll.{what}.read"));
        }
        scopes.push("accounting.budgets.read".into());
        scopes.push("accounting.journals.read".into());
        scopes.push("files.read".into());
        assert_eq!(scopes.len(), 40);
        scopes
    }

    fn set(access_len: usize, seed: u64) -> TokenSet {
        TokenSet {
 audit_key: None,
            refresh_token: Some(secret_from_str(&format!("rt-{seed}-{}", "f".repeat(60)))),
            access_token: Some(secret_from_str(&token(access_len, seed))),
            expires_at: Some(1_700_001_800),
            token_type: "Bearer".into(),
            scopes: granular_scopes(),
            obtained_at: 1_700_000_000,
        }
    }

    fn small_set() -> TokenSet {
        TokenSet {
            scopes: vec!["openid".into(), "offline_access".into()],
            ..set(300, 7)
        }
    }

    fn assert_same(back: &TokenSet, set: &TokenSet) {
        assert!(back.same_tokens(set), "tokens differ");
        assert_eq!(back.expires_at, set.expires_at);
        assert_eq!(back.scopes, set.scopes);
        assert_eq!(back.obtained_at, set.obtained_at);
        assert_eq!(back.token_type, set.token_type);
    }

    /// No write ever went over the limit, and nothing stored is over it.
    fn assert_within_limit(memory: &MemoryStore) {
        for (account, len) in memory.writes() {
            assert!(len <= LIMIT, "a write of {len} bytes to {account}");
        }
        for account in memory.accounts() {
            assert!(memory.raw(&account).unwrap().len() <= LIMIT, "{account}");
        }
    }

    fn refresh_token_of(set: &TokenSet) -> String {
        set.refresh_token
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_string()
    }

    #[tokio::test]
    async fn long_access_tokens_round_trip_within_the_limit() {
        for len in [1200, 1600, 2600, 6000] {
            let (store, memory) = limited();
            let written = set(len, len as u64);
            save(&store, PROFILE, "label", &written).await.unwrap();
            let back = load(&store, PROFILE)
                .await
                .unwrap()
                .expect("a set is stored");
            assert_same(&back, &written);
            assert_within_limit(&memory);
            let stored: serde_json::Value =
                serde_json::from_slice(&memory.raw(&core()).unwrap()).unwrap();
            assert_eq!(stored["refresh_token"], refresh_token_of(&written), "{len}");
            if written.to_json().len() <= LIMIT {
                assert_eq!(memory.accounts(), vec![core()], "{len}: fits, so one entry");
            } else {
                let count = stored["access_token_parts"]["count"].as_u64().unwrap() as u32;
                assert_eq!(stored["version"], 2, "{len}");
                assert!(stored.get("access_token").is_none(), "{len}");
                assert!(
                    count as usize >= len.div_ceil(LIMIT),
                    "{len}: {count} parts"
                );
                let mut expected: Vec<String> = (0..count).map(part).collect();
                expected.push(core());
                expected.sort();
                assert_eq!(memory.accounts(), expected, "{len}");
            }
        }
    }

    #[test]
    fn with_forty_scopes_a_1600_byte_token_no_longer_fits_one_entry() {
        // What the split is for: without it this set could not be stored on Windows.
        assert!(set(1600, 1).to_json().len() > LIMIT);
        assert!(set(2600, 1).to_json().len() > LIMIT);
    }

    #[tokio::test]
    async fn a_small_set_is_one_entry_with_the_bytes_of_format_1() {
        let (store, memory) = limited();
        let small = small_set();
        save(&store, PROFILE, "label", &small).await.unwrap();
        assert_eq!(memory.accounts(), vec![core()]);
        assert_eq!(memory.raw(&core()).unwrap(), small.to_json().to_vec());
        let before = memory.calls();
        assert_same(&load(&store, PROFILE).await.unwrap().unwrap(), &small);
        assert_eq!(memory.calls() - before, 1, "a format 1 set is one read");
    }

    #[tokio::test]
    async fn a_store_without_a_limit_costs_one_call_per_operation_whatever_the_size() {
        let memory = Arc::new(MemoryStore::default());
        assert_eq!(memory.max_secret_len(), None);
        let store = Store::new(memory.clone(), Duration::from_secs(5));
        let long = set(6000, 3);
        save(&store, PROFILE, "label", &long).await.unwrap();
        assert_eq!(memory.calls(), 1);
        assert_eq!(memory.accounts(), vec![core()]);
        assert_eq!(memory.raw(&core()).unwrap(), long.to_json().to_vec());
        assert_same(&load(&store, PROFILE).await.unwrap().unwrap(), &long);
        assert_eq!(memory.calls(), 2);
        assert!(delete(&store, PROFILE).await.unwrap());
        assert_eq!(memory.calls(), 3);
        assert!(memory.accounts().is_empty());
    }

    #[tokio::test]
    async fn a_crash_between_the_parts_and_the_core_keeps_the_old_refresh_token() {
        for old in [set(2600, 1), small_set()] {
            let (store, memory) = limited();
            save(&store, PROFILE, "label", &old).await.unwrap();
            let new = set(2600, 2);
            // The parts go in, the core write fails: as if the process died between them.
            memory.fail_calls_to(Some(&core()));
            save(&store, PROFILE, "label", &new).await.unwrap_err();
            assert!(
                memory.raw(&part(0)).is_some(),
                "the parts were written first"
            );
            memory.fail_calls_to(None);
            let back = load(&store, PROFILE)
                .await
                .unwrap()
                .expect("the old set is stored");
            assert_eq!(refresh_token_of(&back), refresh_token_of(&old));
            if old.to_json().len() <= LIMIT {
                // A whole set never looks at the parts.
                assert_same(&back, &old);
            } else {
                assert!(
                    back.access_token.is_none(),
                    "the new parts do not match the old core"
                );
                assert_eq!(back.expires_at, None);
                assert!(
                    !back.access_valid_for(1_700_000_100, 0),
                    "so the next use refreshes"
                );
            }
            assert_within_limit(&memory);
        }
    }

    #[tokio::test]
    async fn stale_damaged_or_missing_parts_mean_no_access_token() {
        let (store, memory) = limited();
        save(&store, PROFILE, "label", &set(6000, 1)).await.unwrap();
        let stale = memory.raw(&part(1)).unwrap();
        let current = set(6000, 2);
        save(&store, PROFILE, "label", &current).await.unwrap();
        let good = memory.raw(&part(1)).unwrap();
        let raw = |bytes: &[u8]| memory.set(&part(1), "x", bytes).unwrap();
        let check = |why: &'static str| {
            let store = store.clone();
            async move {
                let back = load(&store, PROFILE).await.unwrap().expect(why);
                assert!(back.access_token.is_none(), "{why}");
                assert_eq!(
                    refresh_token_of(&back),
                    refresh_token_of(&set(6000, 2)),
                    "{why}"
                );
            }
        };

        raw(&stale);
        check("a part of an earlier write").await;
        let mut damaged = good.clone();
        *damaged.last_mut().unwrap() ^= 1;
        raw(&damaged);
        check("a part whose token bytes changed").await;
        raw(&good[..good.len() - 10]);
        check("a cut-off part").await;
        raw(b"not a part at all");
        check("a part without its header").await;
        memory.delete(&part(1)).unwrap();
        check("a missing part").await;

        raw(&good);
        assert_same(&load(&store, PROFILE).await.unwrap().unwrap(), &current);
    }

    #[tokio::test]
    async fn a_store_error_on_a_part_is_an_error_not_a_missing_token() {
        let (store, memory) = limited();
        save(&store, PROFILE, "label", &set(6000, 1)).await.unwrap();
        memory.fail_calls_to(Some(&part(1)));
        let err = load(&store, PROFILE).await.unwrap_err();
        assert!(matches!(err, Error::StoreUnavailable { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_core_too_big_for_one_entry_is_refused_and_nothing_is_written() {
        let (store, memory) = limited();
        let huge = TokenSet {
            scopes: (0..200)
                .map(|i| format!("accounting.granular.scope{i}"))
                .collect(),
            ..set(2600, 1)
        };
        let err = save(&store, PROFILE, "label", &huge).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::StoreUnavailable { .. }), "{text}");
        assert!(
            text.contains(&format!("at most {LIMIT} bytes"))
                && text.contains(&format!("is {} bytes", huge.to_json().len()))
                && text.contains("Nothing was written"),
            "{text}"
        );
        assert!(!text.contains(&refresh_token_of(&huge)), "{text}");
        assert!(memory.writes().is_empty(), "{:?}", memory.writes());
        assert!(memory.accounts().is_empty());
    }

    #[tokio::test]
    async fn a_token_too_long_for_any_number_of_parts_is_not_cached() {
        let (store, memory) = limited();
        let endless = set(MAX_PARTS as usize * LIMIT, 1);
        save(&store, PROFILE, "label", &endless).await.unwrap();
        assert_eq!(memory.accounts(), vec![core()]);
        let back = load(&store, PROFILE).await.unwrap().unwrap();
        assert_eq!(refresh_token_of(&back), refresh_token_of(&endless));
        assert!(back.access_token.is_none() && back.expires_at.is_none());
        assert_within_limit(&memory);
    }

    #[tokio::test]
    async fn leftover_parts_of_a_longer_token_are_deleted_after_each_write() {
        let (store, memory) = limited();
        save(&store, PROFILE, "label", &set(6000, 1)).await.unwrap();
        assert!(memory.raw(&part(2)).is_some());
        save(&store, PROFILE, "label", &set(2600, 2)).await.unwrap();
        assert_eq!(memory.accounts(), vec![part(0), part(1), core()]);
        save(&store, PROFILE, "label", &small_set()).await.unwrap();
        assert_eq!(memory.accounts(), vec![core()]);
        assert_within_limit(&memory);
    }

    #[tokio::test]
    async fn delete_removes_the_parts_and_the_core() {
        let (store, memory) = limited();
        save(&store, PROFILE, "label", &set(6000, 1)).await.unwrap();
        assert!(memory.accounts().len() > 2);
        assert!(delete(&store, PROFILE).await.unwrap());
        assert!(memory.accounts().is_empty(), "{:?}", memory.accounts());
        assert!(
            !delete(&store, PROFILE).await.unwrap(),
            "nothing left to delete"
        );
        assert!(load(&store, PROFILE).await.unwrap().is_none());
    }

    #[test]
    fn every_part_fits_with_its_header() {
        for limit in [100, 2560] {
            for len in [1, 50, 2559, 2560, 2561, 10_000, 60_000] {
                let Some(count) = part_count(len, limit, "abcdefghijklmnop") else {
                    assert!(len > 20 * limit, "{len} in {limit}");
                    continue;
                };
                let room = limit - part_header("abcdefghijklmnop", count - 1, count).len();
                assert!(len <= room * count as usize, "{len} in {limit}");
                assert!(
                    len > room * (count as usize - 1),
                    "{len} in {limit}: no empty part"
                );
            }
        }
    }
}
