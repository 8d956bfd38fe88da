//! Wiping thread stacks: the memory that the zeroizing allocator cannot reach.
//!
//! The global allocator wipes every heap block it frees, and the secret types wipe themselves
//! when dropped. Neither reaches the stack. A function that copies a secret into a local array
//! (a cipher's block buffer, a hasher's state, a large value moved by an unoptimised build) leaves
//! those bytes below the stack pointer when it returns, and nothing overwrites them until a
//! deeper call happens to. A thread that exits keeps its stack too: glibc caches the stacks of
//! exited threads for reuse and wipes none of them. Which library code spills what depends on
//! the CPU (ring, the AES and SHA crates and glibc's `memcpy` pick code paths at run time), so
//! the fix is a mechanism, not a list of call sites:
//!
//! - [`scrubbed`] runs a closure and then wipes every stack page below its own frame that the
//!   thread has ever touched. Every secret store call runs inside it ([`crate::store::Store`]),
//!   as do the threads this crate starts.
//! - [`wipe_unused`] wipes the same region from wherever it is called: a runtime thread before it
//!   stops ([`runtime`]'s `on_thread_stop`), and the main thread before the process exits.
//!
//! "Every page ever touched" is found without guessing a depth: the thread's stack bounds come
//! from the platform (`pthread_getattr_np`, `pthread_get_stackaddr_np`,
//! `GetCurrentThreadStackLimits`), and the deepest page in use from `mincore(2)` (a stack page
//! that was never touched is not resident, and holds nothing). Windows has no `mincore`: there a
//! fixed depth is wiped ([`FIXED_DEPTH`]), bounded by the stack's limits.
//!
//! The wipe has two parts. The [`NEAR`] bytes just below the caller are wiped through frames of
//! the wipe's own: a function with a [`BLOCK`]-byte local array zeroes it with volatile writes
//! (which the optimiser may not remove) and calls itself, so nothing is written where a live
//! frame, a signal handler or the compiler's red zone could be. The rest, down to the deepest
//! page, lies at least [`NEAR`] bytes below every live frame and is zeroed from above with
//! volatile writes through its address: that touches exactly the pages already in use, where
//! frames reaching down would overshoot by up to a frame, make new pages resident, and creep
//! further down the stack with every call. Where the deepest page is not known (Windows), the
//! whole [`FIXED_DEPTH`] is wiped through frames, whose stack probes grow the stack as that
//! platform expects. Last, the thread's vector registers are zeroed
//! ([`clear_vector_registers`]).
//!
//! The wipe writes only below a point it knows to lie on a stack whose bounds it knows: the
//! thread's own, or the alternate signal stack (`sigaltstack`) a signal handler runs on. Called
//! anywhere else (a coroutine's stack allocated on the heap) it wipes nothing, since what lies
//! below may be another stack's live frames or any other memory; and where `mincore` cannot say
//! how deep the stack was used, it wipes only the [`NEAR`] part, never from the bottom up.
//!
//! Limits, also in docs/security.md: a thread this crate neither starts nor runs code on (the
//! D-Bus client's executor and reactor threads, which see only the encrypted form of a secret)
//! is not wiped; values held in the live frames above the wipe (the caller's own locals) are not
//! touched; a secret the kernel copied elsewhere (swap, a pipe buffer) is out of reach.

use std::hint::black_box;
use std::mem::MaybeUninit;

use zeroize::Zeroize;

/// Bytes wiped per frame.
pub const BLOCK: usize = 16 * 1024;

/// The part just below the caller that is wiped through frames of the wipe's own: always this
/// much, whatever the thread has used, so it never creeps deeper from one call to the next.
pub const NEAR: usize = 2 * BLOCK;

/// How deep the wipe goes where the deepest page in use cannot be found (Windows): all of it
/// through frames, whose stack probes grow the stack the way the platform expects.
#[cfg_attr(unix, allow(dead_code, reason = "unix tells the depth in use; the others wipe this much"))]
pub const FIXED_DEPTH: usize = 256 * 1024;

/// Room left untouched above the bottom of the stack (its guard page sits below it).
const FLOOR_MARGIN: usize = 2 * BLOCK;

/// Runs `f`, then wipes the stack pages below this frame that the thread has used, so whatever
/// `f` (and everything it called) left on the stack is gone when `scrubbed` returns.
#[inline(never)]
pub fn scrubbed<T>(f: impl FnOnce() -> T) -> T {
    let out = f();
    wipe_unused();
    out
}

/// Wipes the current thread's stack below the caller's frame, down to the deepest page the
/// thread has touched, and then its vector registers. Returns the number of stack bytes wiped
/// (0 where the platform tells nothing).
#[inline(never)]
pub fn wipe_unused() -> usize {
    let wiped = wipe_stack_below(stack_pointer());
    clear_vector_registers();
    wiped
}

/// Wipes below `here`, on the stack `here` lies on. Returns the number of bytes wiped.
///
/// Nothing is wiped where the wipe cannot be sure the memory below `here` is unused stack: when
/// `here` lies on neither the thread's stack nor the alternate signal stack a handler runs on (a
/// coroutine's stack, or bounds the platform does not tell), since the memory below it may be
/// anything. When the deepest page in use cannot be found (`mincore` failed) only the
/// [`NEAR`] part is wiped, through frames, not the stack down to its bottom.
fn wipe_stack_below(here: usize) -> usize {
    let Some(bounds) = bounds_holding(here) else {
        return 0;
    };
    let floor = bounds.low.saturating_add(FLOOR_MARGIN);
    // The frames of the near part must fit above the floor.
    let room_for_near = floor.saturating_add(NEAR) < here;
    let near_end = here.saturating_sub(NEAR);
    let deepest = match platform::deepest_in_use(bounds, here) {
        Depth::Deepest(deepest) => deepest.max(floor),
        #[cfg(not(unix))]
        Depth::Untold => {
            let depth = here.saturating_sub(floor).min(FIXED_DEPTH);
            wipe_frames(depth / BLOCK);
            return depth;
        }
        Depth::Unsure if room_for_near => {
            wipe_frames(NEAR / BLOCK);
            return NEAR;
        }
        Depth::Unsure => return 0,
    };
    // Too close to the floor for the near part (and so for the far part, which lies below it).
    if !room_for_near {
        return 0;
    }
    if deepest < near_end {
        // SAFETY: [deepest, near_end) lies within the bounds of the stack `here` is on, above its
        // floor, mapped (mincore found it so), and at least NEAR bytes below every live frame:
        // nothing but a signal handler could be using it, and that runs while this loop does not.
        unsafe { wipe_far(deepest, near_end) };
    }
    wipe_frames(NEAR / BLOCK);
    here - deepest.min(near_end)
}

/// The bounds of the stack `here` lies on: the thread's own, or, in a signal handler, the
/// alternate signal stack it runs on; `None` when `here` lies on neither (a coroutine's stack
/// allocated elsewhere) or the platform tells neither.
fn bounds_holding(here: usize) -> Option<StackBounds> {
    let holds = |b: &StackBounds| b.low < here && here <= b.high;
    current_bounds()
        .filter(holds)
        .or_else(|| platform::signal_stack().filter(holds))
}

/// How deep a stack has been used, as far as the platform tells.
// Windows only ever answers `Untold`; the other variants are the Unix answers the shared code
// matches on.
#[cfg_attr(not(unix), allow(dead_code))]
enum Depth {
    /// The deepest page in use.
    Deepest(usize),
    /// The platform cannot tell (Windows): a fixed depth is wiped, through frames.
    #[cfg(not(unix))]
    Untold,
    /// The platform should have told and did not (`mincore` failed, the range is not one
    /// mapping): only the near part is wiped.
    Unsure,
}

/// Zeroes `[from, to)` with volatile writes. The region lies below the frames of the wipe, in
/// memory no Rust value owns, hence an address rather than a reference. Writing it from above
/// (rather than through frames reaching down to it) touches exactly the pages already in use:
/// a frame that reached past the deepest page would make one more page resident each time and
/// the wipe would creep down the whole stack.
///
/// # Safety
/// `[from, to)` must be mapped, writable, and used by no live frame.
#[inline(never)]
unsafe fn wipe_far(from: usize, to: usize) {
    let mut at = from.next_multiple_of(8);
    while at + 8 <= to {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::with_exposed_provenance_mut::<u64>(at).write_volatile(0) };
        at += 8;
    }
}

/// `count` frames of [`BLOCK`] bytes below the caller, each zeroing its own array with volatile
/// writes (which the optimiser may not remove).
#[inline(never)]
fn wipe_frames(count: usize) {
    let mut block = [MaybeUninit::<u64>::uninit(); BLOCK / 8];
    block.as_mut_slice().zeroize();
    if count > 1 {
        wipe_frames(count - 1);
    }
    // Keeps the array alive across the call, so this is no tail call and the frames stack up.
    black_box(&block);
}

/// Zeroes the calling thread's SIMD registers. glibc's `memcpy` and `memset` on CPUs with
/// AVX-512 work in the upper registers (`ymm16`–`ymm31`) precisely because `vzeroupper` leaves
/// them alone, so the last secret copied stays in them — and in the register state a debugger or
/// a core dump records — until other code happens to use them. A thread's registers vanish with
/// it; the main thread's are cleared before exit, a runtime thread's before it stops.
#[inline(never)]
pub fn clear_vector_registers() {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: each function runs only on a CPU with the feature it is compiled for; the
        // registers it zeroes are caller-saved (declared clobbered), so no live value is lost.
        if std::arch::is_x86_feature_detected!("avx512f") {
            unsafe { x86::clear_avx512() }
        } else if std::arch::is_x86_feature_detected!("avx") {
            unsafe { x86::clear_avx() }
        } else {
            x86::clear_sse()
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn clear_avx512() {
        // SAFETY: register-only instructions; every register written is declared clobbered.
        unsafe {
            asm!(
                "vpxord zmm0, zmm0, zmm0",
                "vpxord zmm1, zmm1, zmm1",
                "vpxord zmm2, zmm2, zmm2",
                "vpxord zmm3, zmm3, zmm3",
                "vpxord zmm4, zmm4, zmm4",
                "vpxord zmm5, zmm5, zmm5",
                "vpxord zmm6, zmm6, zmm6",
                "vpxord zmm7, zmm7, zmm7",
                "vpxord zmm8, zmm8, zmm8",
                "vpxord zmm9, zmm9, zmm9",
                "vpxord zmm10, zmm10, zmm10",
                "vpxord zmm11, zmm11, zmm11",
                "vpxord zmm12, zmm12, zmm12",
                "vpxord zmm13, zmm13, zmm13",
                "vpxord zmm14, zmm14, zmm14",
                "vpxord zmm15, zmm15, zmm15",
                "vpxord zmm16, zmm16, zmm16",
                "vpxord zmm17, zmm17, zmm17",
                "vpxord zmm18, zmm18, zmm18",
                "vpxord zmm19, zmm19, zmm19",
                "vpxord zmm20, zmm20, zmm20",
                "vpxord zmm21, zmm21, zmm21",
                "vpxord zmm22, zmm22, zmm22",
                "vpxord zmm23, zmm23, zmm23",
                "vpxord zmm24, zmm24, zmm24",
                "vpxord zmm25, zmm25, zmm25",
                "vpxord zmm26, zmm26, zmm26",
                "vpxord zmm27, zmm27, zmm27",
                "vpxord zmm28, zmm28, zmm28",
                "vpxord zmm29, zmm29, zmm29",
                "vpxord zmm30, zmm30, zmm30",
                "vpxord zmm31, zmm31, zmm31",
                clobber_abi("C"),
                options(nostack, nomem, preserves_flags),
            );
        }
    }

    #[target_feature(enable = "avx")]
    pub unsafe fn clear_avx() {
        // SAFETY: as above; `vzeroall` zeroes ymm0–ymm15.
        unsafe {
            asm!(
                "vzeroall",
                clobber_abi("C"),
                options(nostack, nomem, preserves_flags)
            )
        }
    }

    pub fn clear_sse() {
        // SAFETY: as above; SSE2 is part of x86_64.
        unsafe {
            asm!(
                "pxor xmm0, xmm0",
                "pxor xmm1, xmm1",
                "pxor xmm2, xmm2",
                "pxor xmm3, xmm3",
                "pxor xmm4, xmm4",
                "pxor xmm5, xmm5",
                "pxor xmm6, xmm6",
                "pxor xmm7, xmm7",
                "pxor xmm8, xmm8",
                "pxor xmm9, xmm9",
                "pxor xmm10, xmm10",
                "pxor xmm11, xmm11",
                "pxor xmm12, xmm12",
                "pxor xmm13, xmm13",
                "pxor xmm14, xmm14",
                "pxor xmm15, xmm15",
                clobber_abi("C"),
                options(nostack, nomem, preserves_flags),
            );
        }
    }
}

/// An address in the caller's frame (a promoted `&0u8` would point into the binary instead).
#[inline(always)]
fn stack_pointer() -> usize {
    let marker = 0u8;
    black_box(&marker) as *const u8 as usize
}

/// The bounds of a thread's stack: `low` is the lowest usable address, `high` the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackBounds {
    /// Lowest usable address (just above the guard page).
    pub low: usize,
    /// One past the highest address.
    pub high: usize,
}

/// The current thread's stack bounds, where the platform tells them. Asked once per thread
/// (for the main thread glibc reads /proc/self/maps to answer).
pub fn current_bounds() -> Option<StackBounds> {
    thread_local! {
        static BOUNDS: std::cell::Cell<Option<StackBounds>> = const { std::cell::Cell::new(None) };
    }
    BOUNDS.with(|cached| {
        if cached.get().is_none() {
            cached.set(platform::bounds());
        }
        cached.get()
    })
}

/// A tokio runtime for the command-line tool: the current thread drives it, and each blocking
/// thread (every secret store call runs on one) wipes its stack before it stops.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_stop(|| {
            wipe_unused();
        })
        .build()
}

/// Starts a thread whose whole body runs inside [`scrubbed`].
pub fn spawn<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || scrubbed(f))
}

#[cfg(unix)]
mod platform {
    use super::{Depth, StackBounds};

    /// The size of a page, as the kernel uses it for `mincore`.
    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(4096)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn bounds() -> Option<StackBounds> {
        // SAFETY: pthread_getattr_np fills `attr` for the calling thread; it is read only when
        // that succeeded and destroyed once. pthread_attr_getstack writes two plain values.
        unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
            if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
                return None;
            }
            let mut addr = std::ptr::null_mut();
            let mut size = 0usize;
            let ok = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
            libc::pthread_attr_destroy(attr.as_mut_ptr());
            let low = addr as usize;
            (ok && size > 0).then(|| StackBounds {
                low,
                high: low.saturating_add(size),
            })
        }
    }

    #[cfg(target_os = "macos")]
    pub fn bounds() -> Option<StackBounds> {
        // SAFETY: both calls only read the calling thread's descriptor.
        unsafe {
            let me = libc::pthread_self();
            let high = libc::pthread_get_stackaddr_np(me) as usize;
            let size = libc::pthread_get_stacksize_np(me);
            (size > 0).then(|| StackBounds {
                low: high.saturating_sub(size),
                high,
            })
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
    pub fn bounds() -> Option<StackBounds> {
        None
    }

    /// The alternate signal stack, when the calling thread runs on it (in a handler installed
    /// with `SA_ONSTACK`). `sigaltstack` may be called from a signal handler.
    pub fn signal_stack() -> Option<StackBounds> {
        // SAFETY: `stack_t` is plain data, for which all zeroes is a valid value.
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: a null new stack changes nothing; the current one is written to `current`.
        if unsafe { libc::sigaltstack(std::ptr::null(), &mut current) } != 0 {
            return None;
        }
        let low = current.ss_sp as usize;
        (current.ss_flags & libc::SS_ONSTACK != 0 && current.ss_size > 0 && low != 0).then(|| {
            StackBounds {
                low,
                high: low.saturating_add(current.ss_size),
            }
        })
    }

    /// Whether the page at `addr` is mapped (resident or not); `mincore` says `ENOMEM` when not.
    fn mapped(addr: usize, page: usize) -> bool {
        let mut byte = 0u8;
        // SAFETY: one page-aligned page, one result byte.
        unsafe { libc::mincore(addr as *mut _, page, (&mut byte as *mut u8).cast()) == 0 }
    }

    /// The lowest page of `bounds` below `below` that is resident: the deepest the thread's
    /// stack has ever reached. A thread's stack is mapped whole and only the pages it touched are
    /// resident. The main thread's stack is a mapping that grows on demand, so the part of its
    /// bounds below the mapping is not mapped at all: a binary search finds where it starts.
    /// [`Depth::Unsure`] when `mincore` fails on the range (it is not one mapping).
    pub fn deepest_in_use(bounds: StackBounds, below: usize) -> Depth {
        let page = page_size();
        let high = below - below % page;
        let mut low = bounds.low.next_multiple_of(page);
        if high <= low {
            return Depth::Deepest(high);
        }
        if !mapped(low, page) {
            // Unmapped at `low`, mapped at `high` (this frame is there): find the boundary.
            let (mut unmapped, mut found) = (low, high);
            while found - unmapped > page {
                let mid = unmapped + (found - unmapped) / page / 2 * page;
                if mapped(mid, page) {
                    found = mid;
                } else {
                    unmapped = mid;
                }
            }
            low = found;
        }
        let mut resident = vec![0u8; (high - low) / page];
        // SAFETY: `resident` has one byte per page of [low, high), both page-aligned.
        let ok =
            unsafe { libc::mincore(low as *mut _, high - low, resident.as_mut_ptr().cast()) == 0 };
        if !ok {
            return Depth::Unsure;
        }
        match resident.iter().position(|r| r & 1 == 1) {
            Some(first) => Depth::Deepest(low + first * page),
            None => Depth::Deepest(high),
        }
    }
}

#[cfg(windows)]
mod platform {
    use super::{Depth, StackBounds};

    #[link(name = "kernel32")]
    unsafe extern "system" {
        fn GetCurrentThreadStackLimits(low: *mut usize, high: *mut usize);
    }

    pub fn bounds() -> Option<StackBounds> {
        let (mut low, mut high) = (0usize, 0usize);
        // SAFETY: writes two plain values for the calling thread.
        unsafe { GetCurrentThreadStackLimits(&mut low, &mut high) };
        (high > low).then_some(StackBounds { low, high })
    }

    /// Windows commits stack pages as they are touched but offers no `mincore`: the caller falls
    /// back to a fixed depth.
    pub fn deepest_in_use(_bounds: StackBounds, _below: usize) -> Depth {
        Depth::Untold
    }

    /// Windows has no alternate signal stacks.
    pub fn signal_stack() -> Option<StackBounds> {
        None
    }
}

#[cfg(not(any(unix, windows)))]
mod platform {
    use super::{Depth, StackBounds};

    pub fn bounds() -> Option<StackBounds> {
        None
    }

    pub fn deepest_in_use(_bounds: StackBounds, _below: usize) -> Depth {
        Depth::Untold
    }

    pub fn signal_stack() -> Option<StackBounds> {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const SECRET: &[u8] = b"stack-wipe-test-secret-7d1f0c9a2b4e8a6f31c5d9e7";

    /// Copies SECRET into a local array some frames deep, the way a cipher or an unoptimised
    /// move leaves a secret on the stack, and returns without wiping it.
    #[inline(never)]
    fn leave_secret_on_stack(depth: u32) -> usize {
        let mut local = [0u8; 8192];
        for chunk in local.chunks_mut(SECRET.len()) {
            chunk.copy_from_slice(&SECRET[..chunk.len()]);
        }
        let here = black_box(&local).as_ptr() as usize;
        if depth > 0 {
            return leave_secret_on_stack(depth - 1).min(here);
        }
        here
    }

    /// Reads `[low, high)` of this process through /proc/self/mem (which fails cleanly on pages
    /// that are not mapped) and counts the copies of SECRET in it.
    fn copies_in(low: usize, high: usize) -> usize {
        let mem = std::fs::File::open("/proc/self/mem").expect("open /proc/self/mem");
        let mut buf = vec![0u8; high - low];
        mem.read_exact_at(&mut buf, low as u64)
            .expect("the stack region is still mapped");
        buf.windows(SECRET.len()).filter(|w| *w == SECRET).count()
    }

    #[test]
    fn a_scrubbed_call_leaves_no_secret_below_its_frame() {
        let (copies_inside, copies_after) = std::thread::spawn(|| {
            let bounds = current_bounds().expect("stack bounds");
            let top = stack_pointer();
            let deepest = scrubbed(|| {
                let deepest = leave_secret_on_stack(4);
                // Not yet wiped: the copies are there while the closure runs.
                (deepest, copies_in(deepest - 4096, top - 4096))
            });
            let after = copies_in(bounds.low.max(deepest.0 - 65536), top - 4096);
            (deepest.1, after)
        })
        .join()
        .unwrap();
        assert!(copies_inside >= 5, "the test put no secret on the stack");
        assert_eq!(
            copies_after, 0,
            "the secret is still on the stack after scrubbed"
        );
    }

    /// The stack of a runtime's blocking thread, after the thread stopped: glibc keeps it mapped
    /// (cached for the next thread), and nothing but the runtime's `on_thread_stop` wipes it.
    #[test]
    fn a_blocking_thread_leaves_no_secret_on_its_stack_when_it_stops() {
        let rt = runtime().unwrap();
        let (bounds, deepest) = rt
            .block_on(rt.spawn_blocking(|| {
                let deepest = leave_secret_on_stack(4);
                (current_bounds().expect("stack bounds"), deepest)
            }))
            .unwrap();
        // Stops the blocking thread and waits for it to finish.
        drop(rt);
        let copies = copies_in(deepest - 4096, bounds.high - 4096);
        assert_eq!(copies, 0, "an exited thread's stack still holds the secret");
    }

    /// A secret left in the upper vector registers by an AVX-512 `memcpy` is gone after
    /// `clear_vector_registers`. (On a CPU without AVX-512 the test checks ymm15 instead.)
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_registers_hold_no_secret_after_clearing() {
        use std::arch::asm;
        let pattern = [0x5au8; 64];
        let mut after = [0xffu8; 64];
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[target_feature(enable = "avx512f")]
            unsafe fn load(p: &[u8; 64]) {
                // SAFETY: reads 64 bytes from a 64-byte array into a register declared written.
                unsafe { asm!("vmovdqu64 zmm31, [{p}]", p = in(reg) p.as_ptr(), out("zmm31") _) }
            }
            #[target_feature(enable = "avx512f")]
            unsafe fn store(p: &mut [u8; 64]) {
                // SAFETY: writes 64 bytes into a 64-byte array.
                unsafe { asm!("vmovdqu64 [{p}], zmm31", p = in(reg) p.as_mut_ptr()) }
            }
            // SAFETY: the CPU has AVX-512F.
            unsafe { load(&pattern) };
            clear_vector_registers();
            unsafe { store(&mut after) };
        } else if std::arch::is_x86_feature_detected!("avx") {
            #[target_feature(enable = "avx")]
            unsafe fn load(p: &[u8; 64]) {
                // SAFETY: reads 32 bytes from a 64-byte array into a register declared written.
                unsafe { asm!("vmovdqu ymm15, [{p}]", p = in(reg) p.as_ptr(), out("ymm15") _) }
            }
            #[target_feature(enable = "avx")]
            unsafe fn store(p: &mut [u8; 64]) {
                // SAFETY: writes 32 bytes into a 64-byte array.
                unsafe { asm!("vmovdqu [{p}], ymm15", p = in(reg) p.as_mut_ptr()) }
                p[32..].fill(0);
            }
            // SAFETY: the CPU has AVX.
            unsafe { load(&pattern) };
            clear_vector_registers();
            unsafe { store(&mut after) };
        } else {
            return;
        }
        assert_eq!(after, [0u8; 64], "the register still holds the secret");
    }

    /// Set in the child process that [`a_wipe_on_a_signal_stack_leaves_the_interrupted_frames_alone`]
    /// runs itself in.
    const CHILD: &str = "XERO_AUTH_STACK_TEST_CHILD";
    const THREAD_STACK: usize = 1024 * 1024;
    const SIGNAL_STACK: usize = 256 * 1024;
    const CANARY: u8 = 0xc5;

    /// What the signal handler saw: the address of its frame and the bytes it wiped.
    static HANDLER_FRAME: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static HANDLER_WIPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// A signal handler on the alternate stack: leaves the secret there, then wipes.
    extern "C" fn handler(_: libc::c_int) {
        use std::sync::atomic::Ordering::SeqCst;
        HANDLER_FRAME.store(stack_pointer(), SeqCst);
        leave_secret_on_stack(4);
        HANDLER_WIPED.store(wipe_unused(), SeqCst);
    }

    /// A thread whose stack is the lower part of one mapping and whose alternate signal stack
    /// (`arg`) is the upper part, right above it: live frames and the TCB lie between the thread's
    /// stack bounds and the handler's frame. Returns 0 when the canary in its live frame survived
    /// the handler's wipe, 1 when it did not.
    extern "C" fn interrupted(arg: *mut libc::c_void) -> *mut libc::c_void {
        let canary = [CANARY; 4096];
        black_box(&canary);
        // Asked now: pthread_getattr_np is not for signal handlers.
        let _ = current_bounds();
        let alternate = libc::stack_t {
            ss_sp: arg,
            ss_flags: 0,
            ss_size: SIGNAL_STACK,
        };
        // SAFETY: `arg` is SIGNAL_STACK bytes of this thread's mapping, used for nothing else.
        unsafe {
            assert_eq!(libc::sigaltstack(&alternate, std::ptr::null_mut()), 0);
            libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1);
        }
        let intact = black_box(&canary).iter().all(|&b| b == CANARY);
        std::ptr::without_provenance_mut(usize::from(!intact))
    }

    fn wipe_on_a_signal_stack() {
        use std::sync::atomic::Ordering::SeqCst;
        // SAFETY: a private anonymous mapping, unmapped by no one until the process ends; the
        // handler is installed before the only thread that raises the signal starts.
        unsafe {
            let region = libc::mmap(
                std::ptr::null_mut(),
                THREAD_STACK + SIGNAL_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(region, libc::MAP_FAILED);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_ONSTACK;
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0
            );

            let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
            assert_eq!(libc::pthread_attr_init(attr.as_mut_ptr()), 0);
            assert_eq!(
                libc::pthread_attr_setstack(attr.as_mut_ptr(), region, THREAD_STACK),
                0
            );
            let signal_stack = region.cast::<u8>().add(THREAD_STACK);
            let mut thread: libc::pthread_t = 0;
            assert_eq!(
                libc::pthread_create(&mut thread, attr.as_ptr(), interrupted, signal_stack.cast()),
                0
            );
            let mut result = std::ptr::null_mut();
            assert_eq!(libc::pthread_join(thread, &mut result), 0);
            assert_eq!(
                result as usize, 0,
                "the wipe on the signal stack zeroed a live frame of the interrupted thread"
            );
            let (low, frame) = (signal_stack as usize, HANDLER_FRAME.load(SeqCst));
            assert!(HANDLER_WIPED.load(SeqCst) > 0, "nothing was wiped");
            assert_eq!(
                copies_in(low, frame - 4096),
                0,
                "the signal stack still holds the secret"
            );
        }
    }

    /// A signal handler running on an alternate stack that lies above the thread's own: the
    /// wipe stays on the alternate stack (wiping it), and never reaches down into the thread's
    /// stack, whose frames are live. Run in a child process, since a wrong wipe kills it.
    #[test]
    fn a_wipe_on_a_signal_stack_leaves_the_interrupted_frames_alone() {
        if std::env::var_os(CHILD).is_some() {
            return wipe_on_a_signal_stack();
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stack::tests::a_wipe_on_a_signal_stack_leaves_the_interrupted_frames_alone",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the wipe in a signal handler killed or failed the process running it ({:?}): it \
             reached below the signal stack\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }

    /// A pointer on neither the thread's stack nor a signal stack (a coroutine's stack on the
    /// heap): nothing below it is known to be unused, so nothing is wiped.
    #[test]
    fn nothing_is_wiped_below_a_stack_the_platform_does_not_know() {
        std::thread::spawn(|| {
            let area = vec![0x77u8; 256 * 1024];
            let here = black_box(area.as_ptr()) as usize + 128 * 1024;
            assert_eq!(wipe_stack_below(here), 0);
            assert!(black_box(&area).iter().all(|&b| b == 0x77));
        })
        .join()
        .unwrap();
    }

    /// Bounds that are not one mapping (a hole in them): the deepest page in use is not guessed
    /// (it was taken to be the bottom, and everything above it wiped).
    #[test]
    fn bounds_with_a_hole_give_no_deepest_page() {
        // SAFETY: sysconf has no preconditions; a private anonymous mapping of four pages, whose
        // second page is unmapped again, the rest when the test is done.
        unsafe {
            let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).unwrap();
            let region = libc::mmap(
                std::ptr::null_mut(),
                4 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(region, libc::MAP_FAILED);
            let low = region as usize;
            region.cast::<u8>().write_volatile(1);
            assert_eq!(libc::munmap((low + page) as *mut _, page), 0);
            let bounds = StackBounds {
                low,
                high: low + 4 * page,
            };
            let depth = platform::deepest_in_use(bounds, low + 3 * page + 8);
            libc::munmap(region, page);
            libc::munmap((low + 2 * page) as *mut _, 2 * page);
            assert!(
                matches!(depth, Depth::Unsure),
                "a deepest page was named across a hole"
            );
        }
    }

    #[test]
    fn wipe_unused_reaches_the_deepest_page_in_use() {
        std::thread::spawn(|| {
            let deepest = leave_secret_on_stack(40);
            let here = stack_pointer();
            let wiped = wipe_unused();
            assert!(
                wiped + 4096 >= here - deepest,
                "wiped {wiped} bytes, used {}",
                here - deepest
            );
            assert_eq!(copies_in(deepest - 4096, here - 65536), 0);
        })
        .join()
        .unwrap();
    }
}
