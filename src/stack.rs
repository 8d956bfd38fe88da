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
//! The wipe is written as frames, not as stores through a raw pointer below the stack pointer:
//! a function with a [`BLOCK`]-byte local array zeroes that array with volatile writes (which the
//! optimiser may not remove) and calls itself until its array reaches the deepest page. Each
//! write is to memory the function owns, so nothing is written that a signal handler or the
//! compiler's red zone might be using.
//!
//! Limits, also in docs/security.md: a thread this crate neither starts nor runs code on (the
//! D-Bus client's executor and reactor threads, which see only the encrypted form of a secret)
//! is not wiped; values held in the live frames above the wipe (the caller's own locals) are not
//! touched; a secret the kernel copied elsewhere (swap, a pipe buffer) is out of reach.

use std::hint::black_box;
use std::mem::MaybeUninit;

use zeroize::Zeroize;

/// Bytes wiped per frame. Small enough that the last frame goes at most this far past the
/// deepest page in use; large enough that a 2 MiB stack takes 128 frames.
pub const BLOCK: usize = 16 * 1024;

/// How deep the wipe goes where the deepest page in use cannot be found (Windows).
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
/// thread has touched. Returns the number of bytes wiped (0 where the platform tells nothing).
#[inline(never)]
pub fn wipe_unused() -> usize {
    let here = stack_pointer();
    let Some(bounds) = current_bounds() else {
        return 0;
    };
    let floor = bounds.low.saturating_add(FLOOR_MARGIN);
    let deepest = match platform::deepest_in_use(bounds, here) {
        Some(deepest) => deepest.max(floor),
        None => here.saturating_sub(FIXED_DEPTH).max(floor),
    };
    if deepest >= here {
        return 0;
    }
    wipe_frames(deepest, floor);
    here - deepest
}

/// An address in the caller's frame (a promoted `&0u8` would point into the binary instead).
#[inline(always)]
fn stack_pointer() -> usize {
    let marker = 0u8;
    black_box(&marker) as *const u8 as usize
}

/// One frame of the wipe: zeroes its own array, then recurses while the array has not yet
/// reached `deepest` and the next frame would still stay above `floor`.
#[inline(never)]
fn wipe_frames(deepest: usize, floor: usize) {
    let mut block = [MaybeUninit::<u64>::uninit(); BLOCK / 8];
    // Volatile writes, element by element: the zeroize crate's guarantee that they stay.
    block.as_mut_slice().zeroize();
    let low = black_box(block.as_ptr() as usize);
    if low > deepest && low.saturating_sub(2 * BLOCK) > floor {
        wipe_frames(deepest, floor);
    }
    // Keeps the array alive across the call, so this is no tail call and the frames stack up.
    black_box(&block);
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
    use super::StackBounds;

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
    pub fn deepest_in_use(bounds: StackBounds, below: usize) -> Option<usize> {
        let page = page_size();
        let high = below - below % page;
        let mut low = bounds.low.next_multiple_of(page);
        if high <= low {
            return Some(high);
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
            return Some(low);
        }
        match resident.iter().position(|r| r & 1 == 1) {
            Some(first) => Some(low + first * page),
            None => Some(high),
        }
    }
}

#[cfg(windows)]
mod platform {
    use super::StackBounds;

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
    pub fn deepest_in_use(_bounds: StackBounds, _below: usize) -> Option<usize> {
        None
    }
}

#[cfg(not(any(unix, windows)))]
mod platform {
    use super::StackBounds;

    pub fn bounds() -> Option<StackBounds> {
        None
    }

    pub fn deepest_in_use(_bounds: StackBounds, _below: usize) -> Option<usize> {
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
