//! `xero-auth store move --to STORE`: move a profile's secrets to another store, crash-safe.
//!
//! The move copies the token set (every entry of it) and the client secret to the destination,
//! reads them back from there, switches the profile's `store` in `config.toml`, and only then
//! deletes them from the source — all under the profile's refresh lock and a guard on each of
//! the two stores ([`crate::guard::ProfileLock::guard`]: a store shared between machines has a
//! lease, taken through the guard's one wait loop), so that no refresh anywhere rotates the set
//! mid-move. Until the switch the profile works
//! from the source, after it from the destination; a process that dies at any step leaves a note
//! ([`PendingMove`]) from which running the same command again finishes the move, or
//! `store move --abort` gives it up.
//!
//! A store that several machines share (the vault store) is left only with `--remove-shared`:
//! its entries are what the other machines use, and a copy beside them cannot work (Xero rotates
//! the refresh token at every refresh, so two copies of one token set break each other).

use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};

use super::{Context, format_time};
use crate::config::{Config, Profile, StoreKind};
use crate::error::{Error, Result};
use crate::failpoints::crash_point;
use crate::guard::ProfileLock;
use crate::store::moving::{PendingMove, ProfileSecrets};
use crate::store::{Store, client_secret_account, split};

/// How long a store shared between machines keeps its lease for a move that dies half-way: the
/// move's own calls take seconds; a dead mover keeps other machines from refreshing no longer.
const MOVE_LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Subcommand)]
#[command(after_help = "Examples:
  xero-auth store move --to file                  # from the keychain to encrypted files
  xero-auth store move --to secret-service --profile imp
  xero-auth store move --to file --remove-shared  # out of Vault, for every machine
  xero-auth store move --abort                    # give up a move that was cut short
  xero-auth store passphrase                      # asks for the current and the new passphrase")]
/// What `xero-auth store` does.
pub enum StoreCommand {
    /// Move the profile's token set and client secret to another store: copy, read back, switch
    /// `store` in config.toml, then delete them from the old store. Safe to run again after an
    /// interruption: it finishes the move (`--abort` gives it up instead).
    Move(MoveArgs),
    /// Change the encrypted-file store's passphrase: the current one must open it; only the
    /// store's key file is encrypted again, atomically.
    Passphrase(super::unlock::PassphraseArgs),
}

/// Arguments of `xero-auth store move`.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The store to move to.
    #[arg(long, value_name = "STORE", required_unless_present = "abort",
          value_parser = PossibleValuesParser::new(StoreKind::ALL.map(StoreKind::name)))]
    pub to: Option<String>,
    /// Replace secrets the destination already holds for the profile that differ from the
    /// source's (they are lost).
    #[arg(long, conflicts_with = "abort")]
    pub force: bool,
    /// Move out of a store other machines share (vault) and delete the profile's entries there:
    /// every machine that uses the profile through it loses its connection. Without it such a
    /// move is refused.
    #[arg(long, conflicts_with = "abort")]
    pub remove_shared: bool,
    /// Give up a move that was cut short: remove its note, and copy or delete nothing. The
    /// profile stays on the store config.toml names.
    #[arg(long, conflicts_with = "to")]
    pub abort: bool,
}

/// Runs `xero-auth store …` for the selected profile.
pub async fn run(cmd: StoreCommand, ctx: &Context) -> Result<()> {
    match cmd {
        StoreCommand::Move(args) if args.abort => give_up(ctx).await,
        StoreCommand::Move(args) => move_profile(args, ctx).await,
        StoreCommand::Passphrase(args) => super::unlock::run_passphrase(args, ctx).await,
    }
}

/// The two ends of a move and the state it starts from.
struct Plan {
    from: Profile,
    to: Profile,
    /// A note of an earlier run of this move, cut short.
    pending: Option<PendingMove>,
    /// `config.toml` already names the destination: only the source's entries are left to delete.
    switched: bool,
}

async fn move_profile(args: MoveArgs, ctx: &Context) -> Result<()> {
    let name = ctx.profile_name.clone();
    let asked = args.to.as_deref().unwrap_or_default();
    let to = StoreKind::parse(asked)
        .ok_or_else(|| Error::InvalidInput(format!("there is no store named '{asked}'")))?;
    let in_effect = ctx.profile()?;
    // No refresh of this machine rotates the set while it is being moved.
    let lock = ProfileLock::take(&ctx.paths, &name).await?;
    let plan = plan(ctx, in_effect, to)?;
    let source_store = ctx.store(&plan.from);
    // The user's word is needed once per move: a note of this move records it.
    let agreed = args.remove_shared || plan.pending.as_ref().is_some_and(|n| n.remove_shared);
    if let Some(entries) = source_store.shared_entries(&name)
        && !agreed
    {
        return Err(shared_source(&name, &entries, to));
    }

    // Nor a refresh of another machine, where a store is shared: a guard on each store, under
    // the one lock, takes its lease.
    let source = lock.guard(&source_store, MOVE_LEASE).await?;
    let dest = match lock.guard(&ctx.store(&plan.to), MOVE_LEASE).await {
        Ok(guard) => guard,
        Err(e) => {
            source.end().await;
            return Err(e);
        }
    };
    let outcome = carry_out(&args, ctx, &plan, source.store(), dest.store()).await;
    // The moved set is the same set: the note of a refresh sent with it and never saved goes
    // with it, from the source's lease (a store shared between machines) to the destination's
    // (the lock file, shared by both guards, keeps this machine's).
    if outcome.is_ok()
        && let Some(sent_at) = source.unsaved_refresh_sent_at().await
        && let Err(e) = dest.note_refresh_sent(sent_at, Duration::ZERO).await
    {
        tracing::warn!(
            "the note of an unsaved refresh was not carried to {}: {e}",
            dest.store().describe()
        );
    }
    dest.end().await;
    source.end().await;
    drop(lock);
    outcome
}

/// Where the move goes from, and whether an earlier run of it is being finished.
///
/// Which half of a move a second run finishes is read from config.toml: the switch to the
/// destination is the step between them. So a move starts only where that switch changes
/// config.toml, and is finished only while config.toml names one of its two stores.
fn plan(ctx: &Context, in_effect: Profile, to: StoreKind) -> Result<Plan> {
    let name = &ctx.profile_name;
    let pending = PendingMove::read(&ctx.paths, name)?;
    // config.toml's own `store` (or the default), without --store or XERO_AUTH_STORE.
    let configured = profile_on(ctx, None)?.store;
    let from = match &pending {
        Some(note) if note.moved_to() != Some(to) => {
            // Before the switch the profile is whole in the source, and a destination that
            // cannot be used (the reason the move stopped, perhaps) must not keep it from
            // moving elsewhere; what that destination may hold cannot be told from another
            // machine's copy of the same set there, so it is not deleted unasked.
            let give_up = match note.moved_from() {
                Some(from) if configured == from => format!(
                    ". If {} cannot be used, the profile is whole in {}: {} gives the move up \
                     ({} shows whether {} holds a copy of its secrets)",
                    note.to,
                    note.from,
                    crate::hint::command(name, "store move --abort"),
                    crate::hint::command(name, &format!("status --store {}", note.to)),
                    note.to,
                ),
                _ => String::new(),
            };
            return Err(Error::InvalidInput(format!(
                "{}; nothing was done. Finish it first, then move the profile again{give_up}",
                note.finish_hint(name)
            )));
        }
        Some(note) => {
            let from = note.moved_from().unwrap_or(in_effect.store);
            if configured != from && configured != to {
                return Err(Error::InvalidInput(format!(
                    "{}, but config.toml now sets the profile's store to {}, neither of the \
                     two; nothing was done. Set it back to {} or {}, whichever holds the \
                     profile's secrets ({} shows what one holds), then run the move again",
                    note.finish_hint(name),
                    configured.name(),
                    from.name(),
                    to.name(),
                    crate::hint::command(name, &format!("status --store {}", from.name())),
                )));
            }
            from
        }
        None if in_effect.store == to => {
            return Err(Error::InvalidInput(format!(
                "profile '{name}' already keeps its secrets in {} ({}); nothing was done",
                to.name(),
                ctx.store(&in_effect).describe()
            )));
        }
        None if configured == to => {
            return Err(Error::InvalidInput(format!(
                "profile '{name}' is set to {} in config.toml already, and to {} only by \
                 --store or XERO_AUTH_STORE: a move switches config.toml from the one to the \
                 other, and would not know after an interruption whether it had. Nothing was \
                 done; run {} first, then the move",
                to.name(),
                in_effect.store.name(),
                crate::hint::command(
                    name,
                    &format!("config set store {}", in_effect.store.name())
                ),
            )));
        }
        None => in_effect.store,
    };
    Ok(Plan {
        from: profile_on(ctx, Some(from))?,
        to: profile_on(ctx, Some(to))?,
        switched: pending.is_some() && configured == to,
        pending,
    })
}

/// The selected profile with its `store` as `store` says (config.toml's own when `None`),
/// whatever --store or XERO_AUTH_STORE say.
fn profile_on(ctx: &Context, store: Option<StoreKind>) -> Result<Profile> {
    let env = |key: &str| match key {
        "XERO_AUTH_STORE" => store.map(|s| s.name().to_string()),
        _ => (ctx.env)(key),
    };
    ctx.config.profile(&ctx.profile_name, &env)
}

async fn carry_out(
    args: &MoveArgs,
    ctx: &Context,
    plan: &Plan,
    source: &Store,
    dest: &Store,
) -> Result<()> {
    let name = &ctx.profile_name;
    let (from, to) = (plan.from.store, plan.to.store);
    let still_in_source = |e: Error| {
        with_fix(
            e,
            &format!(
                "profile '{name}' still uses {} and nothing was deleted there; run {} again",
                from.name(),
                crate::hint::command(name, &format!("store move --to {}", to.name()))
            ),
        )
    };

    let moved = if plan.switched {
        // An earlier run switched config.toml and was cut short before the source was emptied.
        let kept = ProfileSecrets::read(dest, name).await?;
        let left = ProfileSecrets::read(source, name).await?;
        if kept.is_empty() && !left.is_empty() {
            return Err(Error::InvalidInput(format!(
                "profile '{name}' is set to {} in config.toml, which holds none of its secrets, \
                 while {} still does; nothing was deleted. Run {} to use them again",
                to.name(),
                from.name(),
                crate::hint::command(name, &format!("config set store {}", from.name()))
            )));
        }
        // The profile has used the destination since the switch, where it may have been
        // refreshed (so the source's copy is older): what is refused is a source refreshed
        // after the switch, by a machine that still used it.
        if newer_set(&left, &kept) {
            return Err(source_changed(name, from, to));
        }
        kept
    } else {
        let secrets = ProfileSecrets::read(source, name).await?;
        if secrets.is_empty() {
            // Nothing to finish either: the source was emptied since (a logout).
            PendingMove::remove(&ctx.paths, name)?;
            return Err(Error::NothingStored {
                profile: name.clone(),
                what: "token set or client secret",
                hint: format!(
                    "{} holds nothing to move; run {} or {}",
                    source.describe(),
                    crate::hint::command(name, "login"),
                    crate::hint::command(name, "import FILE"),
                ),
            });
        }
        check_destination(args, plan, name, &secrets, dest).await?;
        if plan.pending.is_none() {
            // What the destination asks of a person (the file store's passphrase) is asked
            // before the note: a move it refuses has not begun, and leaves nothing to finish.
            dest.prepare_write(&client_secret_account(name))
                .await
                .map_err(still_in_source)?;
            let mut note = PendingMove::new(from, to, ctx.clock.now());
            note.remove_shared = args.remove_shared;
            note.write(&ctx.paths, name)?;
        }
        crash_point("store-move-noted");

        if let Err(e) = secrets.write(dest, name).await {
            if plan.pending.is_none() {
                forget_if_nothing_copied(ctx, dest, name).await;
            }
            return Err(still_in_source(e));
        }
        crash_point("store-move-copied");
        // Read back what the store holds, not what this process remembers writing (the file
        // store keeps a copy), before anything is deleted.
        dest.forget_cached();
        let back = ProfileSecrets::read(dest, name)
            .await
            .map_err(still_in_source)?;
        if !back.same_as(&secrets) {
            return Err(still_in_source(Error::StoreUnavailable {
                store: dest.describe(),
                cause: "the secrets read back from it differ from those written".into(),
                fix: "run `xero-auth doctor`".into(),
            }));
        }
        crash_point("store-move-verified");
        // A store that several machines share may have been refreshed by another one since the
        // copy (a lease that ran out under a slow move): then the source keeps the profile.
        source.forget_cached();
        if !ProfileSecrets::read(source, name)
            .await
            .map_err(still_in_source)?
            .same_as(&secrets)
        {
            return Err(still_in_source(Error::InvalidInput(format!(
                "{} changed while its secrets were being copied (another machine refreshed?)",
                source.describe()
            ))));
        }

        let mut config = Config::load(ctx.config.path())?;
        config.set_checked(name, "store", to.name())?;
        config.save()?;
        crash_point("store-move-switched");
        secrets
    };

    let still_in_source = |e: Error| {
        with_fix(
            e,
            &format!(
                "profile '{name}' now uses {}; its old entries are still in {}: run {} again \
                 to delete them",
                to.name(),
                from.name(),
                crate::hint::command(name, &format!("store move --to {}", to.name()))
            ),
        )
    };
    // Deleted only while it holds what was moved: never a newer set another machine stored.
    source.forget_cached();
    let left = ProfileSecrets::read(source, name)
        .await
        .map_err(still_in_source)?;
    if newer_set(&left, &moved) {
        return Err(source_changed(name, from, to));
    }
    split::delete(source, name).await.map_err(still_in_source)?;
    crash_point("store-move-token-set-deleted");
    source
        .delete(&client_secret_account(name))
        .await
        .map_err(still_in_source)?;
    crash_point("store-move-source-deleted");
    PendingMove::remove(&ctx.paths, name)?;

    let what = match (moved.token_set.is_some(), moved.client_secret.is_some()) {
        (true, true) => "token set and client secret",
        (true, false) => "token set",
        _ => "client secret",
    };
    eprintln!(
        "moved the {what} of profile '{name}' from {} to {}, read back, and deleted from {}; \
         config.toml now has store = \"{}\" for it",
        source.describe(),
        dest.describe(),
        from.name(),
        to.name()
    );
    if let Some(entries) = source.shared_entries(name) {
        eprintln!(
            "note: {entries} holds nothing of profile '{name}' any more: every other machine \
             that used it there now finds no token set (its commands say so, exit 3)"
        );
    }
    if let Some(other) = (ctx.env)("XERO_AUTH_STORE").filter(|s| !s.is_empty() && s != to.name()) {
        eprintln!(
            "warning: XERO_AUTH_STORE (or --store) names {other}, which overrides config.toml: \
             commands run with it look there, where nothing is left; unset it"
        );
    }
    Ok(())
}

/// A move out of a store other machines share, without `--remove-shared`: what it would do to
/// them, and the two things the user may have meant.
fn shared_source(name: &str, entries: &str, to: StoreKind) -> Error {
    Error::InvalidInput(format!(
        "profile '{name}' keeps its secrets in a store that other machines share: {entries}. \
         Moving it to {to} would delete them there, and every machine that uses the profile \
         through it would lose its connection to Xero; a copy beside them would not work \
         either, since Xero rotates the refresh token at every refresh and two copies of one \
         token set break each other. Nothing was done. If no other machine uses the profile \
         (or none should any more), run {}. To stop using the shared profile on this machine \
         alone, move nothing: {} points this machine at another store, where {} connects it \
         on its own",
        crate::hint::command(
            name,
            &format!("store move --to {} --remove-shared", to.name())
        ),
        crate::hint::command(name, &format!("config set store {}", to.name())),
        crate::hint::command(name, "login"),
        to = to.name(),
    ))
}

/// After the first copy of a move failed: its note stays only while the destination may hold
/// something of the move. A write still running (given up on after the store's timeout) may yet
/// land, and a destination that cannot be read may hold anything: the note stays then.
async fn forget_if_nothing_copied(ctx: &Context, dest: &Store, name: &str) {
    if dest.has_unfinished_calls() {
        return;
    }
    dest.forget_cached();
    if let Ok(held) = ProfileSecrets::read(dest, name).await
        && held.is_empty()
        && !dest.has_unfinished_calls()
        && let Err(e) = PendingMove::remove(&ctx.paths, name)
    {
        tracing::warn!("{e}");
    }
}

/// `xero-auth store move --abort`: gives up a move that was cut short. Only the note goes: the
/// profile stays on the store config.toml names, and whatever either store holds stays there
/// (in a store that machines share, a copy cannot be told from another machine's).
async fn give_up(ctx: &Context) -> Result<()> {
    let name = &ctx.profile_name;
    // A move running now holds the lock from its start to its end.
    let _lock = ProfileLock::take(&ctx.paths, name).await?;
    let path = PendingMove::path(&ctx.paths, name);
    let note = match PendingMove::read_to_give_up(&ctx.paths, name)? {
        None => {
            eprintln!(
                "no move of profile '{name}' was cut short: there is nothing to give up, and \
                 nothing was done"
            );
            return Ok(());
        }
        Some(note) => note,
    };
    PendingMove::remove(&ctx.paths, name)?;
    let configured = profile_on(ctx, None)?.store;
    let Some(note) = note else {
        eprintln!(
            "removed the damaged note of a move of profile '{name}', {}, and changed no store. \
             The profile uses {} (config.toml): {} shows what it holds",
            path.display(),
            configured.name(),
            crate::hint::command(name, "status"),
        );
        return Ok(());
    };
    let (from, to) = (&note.from, &note.to);
    let status_of = |store: &str| crate::hint::command(name, &format!("status --store {store}"));
    let state = if configured.name() == from.as_str() {
        format!(
            "The profile uses {from} (config.toml), which holds its secrets. Anything the move \
             copied to {to} is left there ({} shows what it holds): it is the same token set, \
             spent once the profile next refreshes, so nothing should use it",
            status_of(to)
        )
    } else if configured.name() == to.as_str() {
        // A shared source's entries are another machine's token set as long as they are there.
        let shared = match note.moved_from() {
            Some(kind) => ctx
                .store(&profile_on(ctx, Some(kind))?)
                .shared_entries(name),
            None => None,
        };
        let others = match shared {
            Some(entries) => format!(
                ". Other machines that use the profile through {entries} still can: the first \
                 refresh on either side spends the token set the other holds. {} finishes the \
                 move instead",
                crate::hint::command(name, &format!("store move --to {to} --remove-shared"))
            ),
            None => String::new(),
        };
        format!(
            "The profile uses {to} (config.toml), where the move had copied its secrets; the \
             old entries in {from}, which the move had yet to delete, are left there ({} shows \
             what it holds): they are the same token set, spent once the profile next \
             refreshes, so nothing should use them{others}",
            status_of(from)
        )
    } else {
        format!(
            "config.toml sets the profile's store to {}, neither of the move's two stores; its \
             secrets are in {from} or {to} ({} shows what one holds)",
            configured.name(),
            status_of(from)
        )
    };
    eprintln!(
        "gave up the move of profile '{name}' from {from} to {to} (started {}): removed its \
         note, {}, and changed no store. {state}",
        format_time(note.started_at),
        path.display(),
    );
    Ok(())
}

/// Refuses to replace secrets the destination holds for the profile that differ from the
/// source's, unless `--force`, or unless they are an earlier run's copy.
async fn check_destination(
    args: &MoveArgs,
    plan: &Plan,
    name: &str,
    secrets: &ProfileSecrets,
    dest: &Store,
) -> Result<()> {
    if args.force {
        return Ok(());
    }
    // Read first in any case: a store shared by several machines then writes with
    // check-and-set on what was read.
    let held = match ProfileSecrets::read(dest, name).await {
        Ok(held) => held,
        Err(e @ Error::StoredFormat { .. }) => {
            return Err(Error::InvalidInput(format!(
                "{e} in {}; nothing was changed. Use --force to replace it with the moved one",
                dest.describe()
            )));
        }
        Err(e) => return Err(e),
    };
    if !held.would_lose_to(secrets) {
        return Ok(());
    }
    // What an earlier run of this move wrote may be replaced (the source may have refreshed
    // since, and the copy is then stale) — unless it was refreshed where it is, by another
    // machine sharing that store: then it is newer than the source's.
    if plan.pending.is_some() && !newer_set(&held, secrets) {
        return Ok(());
    }
    let what = match &held.token_set {
        Some(set) => format!(
            "a token set (refresh token obtained {})",
            format_time(set.obtained_at)
        ),
        None => "a client secret".into(),
    };
    Err(Error::InvalidInput(format!(
        "{} already holds {what} for profile '{name}', other than the one in {}; moving would \
         replace it. Nothing was changed. Use --force to replace it (it is lost then); {} \
         shows what it holds",
        dest.describe(),
        plan.from.store.name(),
        crate::hint::command(name, &format!("status --store {}", plan.to.store.name())),
    )))
}

/// Whether `a` holds a token set obtained after `b`'s (another refresh token, newer).
fn newer_set(a: &ProfileSecrets, b: &ProfileSecrets) -> bool {
    match (&a.token_set, &b.token_set) {
        (Some(a_set), Some(b_set)) => {
            !a_set.same_tokens(b_set) && a_set.obtained_at > b_set.obtained_at
        }
        (Some(_), None) => true,
        _ => false,
    }
}

/// The source holds other secrets than the ones moved: most likely another machine sharing it
/// refreshed the profile there. Nothing is deleted.
fn source_changed(name: &str, from: StoreKind, to: StoreKind) -> Error {
    Error::InvalidInput(format!(
        "{} holds other secrets for profile '{name}' than the ones moved to {} — most likely \
         another machine refreshed them there since — so nothing was deleted from it. To keep \
         the newer ones, run {} and then {}",
        from.name(),
        to.name(),
        crate::hint::command(name, &format!("config set store {}", from.name())),
        crate::hint::command(name, &format!("store move --to {} --force", to.name())),
    ))
}

/// `err` with `fix` added to what it says to do, for the errors that say what to do.
fn with_fix(err: Error, fix: &str) -> Error {
    match err {
        Error::StoreUnavailable {
            store,
            cause,
            fix: own,
        } => Error::StoreUnavailable {
            store,
            cause,
            fix: format!("{own}; {fix}"),
        },
        Error::InvalidInput(message) => Error::InvalidInput(format!("{message}; {fix}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::cli::testing::context;
    use crate::secret::{Zeroizing, secret_from_str};
    use crate::store::memory::MemoryStore;
    use crate::store::token_set_account;
    use crate::token_set::TokenSet;

    #[tokio::test]
    async fn every_call_of_a_move_is_made_under_both_stores_leases_and_they_are_released() {
        let mut t = context(
            1_700_000_000,
            HashMap::new(),
            "[profiles.default]\nstore = \"secret-service\"\n",
        );
        let shared = |memory: &Arc<MemoryStore>| Store::new(memory.clone(), Duration::from_secs(5));
        let keychain = Arc::new(MemoryStore::with_leases());
        let files = Arc::new(MemoryStore::with_leases());
        t.ctx.stores_by_kind = vec![
            (StoreKind::SecretService, shared(&keychain)),
            (StoreKind::File, shared(&files)),
        ];
        let secrets = ProfileSecrets {
            token_set: Some(TokenSet {
 audit_key: None,
                refresh_token: Some(secret_from_str("rt-1")),
                access_token: Some(secret_from_str("at-1")),
                expires_at: Some(1_700_001_800),
                token_type: "Bearer".into(),
                scopes: vec!["offline_access".into()],
                obtained_at: 1_700_000_000,
            }),
            client_secret: Some(Zeroizing::new(b"cs-1".to_vec())),
        };
        secrets.write(&shared(&keychain), "default").await.unwrap();
        let before = keychain.calls();

        let args = MoveArgs {
            to: Some("file".into()),
            force: false,
            remove_shared: false,
            abort: false,
        };
        run(StoreCommand::Move(args), &t.ctx).await.unwrap();

        assert!(keychain.accounts().is_empty(), "{:?}", keychain.accounts());
        assert_eq!(
            files.accounts(),
            vec![
                client_secret_account("default"),
                token_set_account("default")
            ]
        );
        assert!(files.calls() > 0 && keychain.calls() > before);
        assert_eq!(files.calls_under_lease(), files.calls(), "destination");
        assert_eq!(
            keychain.calls_under_lease(),
            keychain.calls() - before,
            "source"
        );
        assert_eq!(keychain.leases_held() + files.leases_held(), 0, "released");
        let config = Config::load(t.ctx.config.path()).unwrap();
        assert_eq!(
            config
                .raw_value("default", "store")
                .and_then(|v| v.as_str()),
            Some("file")
        );
        assert_eq!(PendingMove::read(&t.ctx.paths, "default").unwrap(), None);
        assert!(
            ProfileSecrets::read(&shared(&files), "default")
                .await
                .unwrap()
                .same_as(&secrets)
        );
    }

    /// A move whose first copy fails leaves its note only while the destination holds something
    /// of the profile: a refused first write into an empty one leaves none (the move never
    /// began); with something there, a second run must know it may be the move's own copy.
    #[tokio::test]
    async fn a_first_copy_that_fails_leaves_a_note_only_when_something_was_copied() {
        let mut t = context(
            1_700_000_000,
            HashMap::new(),
            "[profiles.default]\nstore = \"secret-service\"\n",
        );
        let store = |memory: &Arc<MemoryStore>| Store::new(memory.clone(), Duration::from_secs(5));
        let keychain = Arc::new(MemoryStore::default());
        let files = Arc::new(MemoryStore::default());
        t.ctx.stores_by_kind = vec![
            (StoreKind::SecretService, store(&keychain)),
            (StoreKind::File, store(&files)),
        ];
        let secrets = ProfileSecrets {
            token_set: Some(TokenSet {
 audit_key: None,
                refresh_token: Some(secret_from_str("rt-1")),
                access_token: Some(secret_from_str("at-1")),
                expires_at: Some(1_700_001_800),
                token_type: "Bearer".into(),
                scopes: vec!["offline_access".into()],
                obtained_at: 1_700_000_000,
            }),
            client_secret: Some(Zeroizing::new(b"cs-1".to_vec())),
        };
        secrets.write(&store(&keychain), "default").await.unwrap();
        let args = || MoveArgs {
            to: Some("file".into()),
            force: false,
            remove_shared: false,
            abort: false,
        };

        files.fail_writes(true);
        let err = run(StoreCommand::Move(args()), &t.ctx).await.unwrap_err();
        assert!(err.to_string().contains("nothing was deleted"), "{err}");
        assert_eq!(PendingMove::read(&t.ctx.paths, "default").unwrap(), None);

        // The destination holds something of the profile (what a first copy cut short leaves,
        // here its client secret): the note stays.
        files.fail_writes(false);
        let client_secret_only = ProfileSecrets {
            token_set: None,
            client_secret: Some(Zeroizing::new(b"cs-1".to_vec())),
        };
        client_secret_only
            .write(&store(&files), "default")
            .await
            .unwrap();
        files.fail_writes(true);
        run(StoreCommand::Move(args()), &t.ctx).await.unwrap_err();
        assert!(
            PendingMove::read(&t.ctx.paths, "default")
                .unwrap()
                .is_some()
        );
        assert_eq!(keychain.accounts().len(), 2, "nothing was deleted");
    }
}
