//! The `xero-auth` binary: its allocator, and the run in the library (`cli::process`), which
//! parses the command line, runs the command, and turns an error into a message on stderr and
//! an exit status (the table in `error.rs`).

// Every block is wiped when it is freed, so the buffers that libraries we do not control fill
// with secrets (hyper's read buffers, serde_json's scratch space, the D-Bus client's messages,
// the standard library's own growth copies) do not outlive their use. 1Password's
// `zeroizing-alloc` wraps the system allocator; its `realloc` is the default one (allocate, copy,
// free through the wiping `dealloc`), so a growing buffer leaves no copy behind either. The cost
// is one memset per free, measured in docs/performance.md.
#[cfg(feature = "hardening")]
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() {
    xero_auth::cli_main()
}
