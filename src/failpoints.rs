//! Crash points for the crash tests (`tests/it/crash.rs`, `tests/it/store_move.rs`): one at every
//! step of the refresh protocol, of login's code exchange, of import and of a move between
//! stores, where a process may die for real.
//!
//! They exist only with the `failpoints` cargo feature (off by default, never in a release
//! build); without it [`crash_point`] compiles to nothing. With it, the binary reads the
//! `FAILPOINTS` environment variable at start-up (`fail::FailScenario::setup` in `main`), e.g.
//! `FAILPOINTS='refresh-response-parsed=return'`. The actions are the `fail` crate's, except
//! that **`return` ends the process at once with `std::process::abort()`**: no unwinding, no
//! destructor (the refresh lock is not released by our code, buffers are not flushed or wiped),
//! no `atexit` handler — what `kill -9` or a power cut leaves behind, short of the kernel
//! releasing the lock file and the sockets. `panic` would unwind and run destructors, so it is
//! not a crash. `sleep(MS)` and `pause` hold the process at the point (a test then kills it);
//! `print` logs through the `log` crate, which this tool does not record.
//!
//! | point | where | after it, what has happened |
//! |---|---|---|
//! | `refresh-lock-taken` | `RefreshGuard::acquire` (the refresh) | the profile's lock is held; nothing read yet |
//! | `refresh-set-read` | `RefreshGuard::acquire` (the refresh) | the token set was re-read under the lock |
//! | `token-request-sent` | `oauth::post_form` (every token-endpoint and revocation request) | the request was sent and answered, the body is not read yet: Xero may have rotated the refresh token |
//! | `refresh-response-parsed` | `Session::refresh_with` | the new tokens are parsed, not yet written to the keychain |
//! | `token-parts-stored` | `store::split::save` (a set too large for one entry of a limited store) | the access token's parts are written, the core entry with the refresh token is not: the previous set is still the stored one |
//! | `refresh-lease-taken` | `RefreshGuard::acquire` (a store shared by many machines: the vault store) | the refresh lease is taken in the store; the set is not re-read under it yet |
//! | `refresh-stored` | `Session::refresh_with` | the new set is in the keychain; the lock is still held |
//! | `login-code-exchanged` | `cli::login` | the code was exchanged and the answer parsed; nothing written yet |
//! | `login-stored` | `cli::login` | the new set is in the keychain; the lock is still held |
//! | `import-checked` | `cli::import` | the file was read and the lock taken; nothing written yet |
//! | `import-stored` | `cli::import` | the file's set is in the keychain; not read back, the file not removed |
//! | `file-store-writing` | `store::file` (every write to the encrypted-file store, through `private_fs::replace_locked_file`) | half of the new file is in its temporary file; the old file is untouched |
//! | `file-store-written` | `store::file` | the temporary file is complete and synced, not yet renamed over the old one |
//! | `file-store-recipient-written` | `store::file` (a store's first key) | the recipient file is written; the key file not yet |
//! | `file-store-key-written` | `store::file` (a store's first key) | the key file is written; no secret re-encrypted yet |
//! | `file-store-file-upgraded` | `store::file` (an older store's write) | one more file of the profile re-encrypted to the key |
//! | `kernel-key-added` | `store::unlock_cache` (the file store's key kept in the kernel, Linux) | the key is in this thread's own keyring, without its permissions and timeout; no other process can find it |
//! | `kernel-key-settled` | `store::unlock_cache` | the key has its permissions and timeout, still in this thread's keyring alone: not yet linked where other commands find it |
//! | `store-move-noted` | `cli::store` (`store move`) | the lock (and the stores' leases) taken, the destination checked, the note of the move written; nothing copied: the profile uses the source |
//! | `store-move-copied` | `cli::store` | the token set and client secret are written to the destination, not yet read back; the profile still uses the source |
//! | `store-move-verified` | `cli::store` | the destination's copy was read back and matches; config.toml still names the source |
//! | `store-move-switched` | `cli::store` | config.toml names the destination, which the profile now uses; the source still holds its entries |
//! | `store-move-token-set-deleted` | `cli::store` | the source's token set (every entry of it) is deleted, its client secret not yet |
//! | `store-move-source-deleted` | `cli::store` | the source holds nothing of the profile; the note of the move is not yet removed |
//! | `child-started` | `child::spawn` (`exec --server`, `mcp`) | the command runs; its parent does not yet pass stop signals on to it by its id (with `sleep(MS)`, the window a signal must not be lost in) |
//!
//! `refresh-write-refused` ([`refused`], in `Session::store_refreshed`: each attempt at writing
//! a refreshed set) is no crash either: `return` makes that attempt fail as a store that refuses
//! the write would, e.g. `FAILPOINTS='refresh-write-refused=3*return'` for one refresh's three
//! attempts.
//!
//! Two more points take the `fail` crate's actions as they are, not as crashes:
//! `client-secret-stored` (`cli::client`, after the secret is written: `sleep` holds the process
//! there) and `lock-filesystem` (`lock::untrusted_lock_filesystem`: `return(NFS)` makes the state
//! folder's file system read as NFS, for `doctor`'s test).

/// A named crash point: does nothing unless the `failpoints` feature is on and `FAILPOINTS`
/// configures `name` (see the module documentation for what the actions do).
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| std::process::abort());
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Whether the failure point `name` refuses here (its action is `return`): the tests' stand-in
/// for a store that refuses a write. Always false without the `failpoints` feature.
pub fn refused(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    {
        (|| {
            fail::fail_point!(name, |_| true);
            false
        })()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}
