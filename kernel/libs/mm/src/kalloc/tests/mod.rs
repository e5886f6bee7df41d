//! Host tests of the generic `Box` and `Vec` over a test allocator that counts its blocks and
//! calls and fails on request, the way the kernel's backends fail under memory pressure.

mod kbox;
mod kvec;

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;

use super::{dangling_from_layout, Allocator};
use crate::{AllocError, GfpFlags};

std::thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static CALLS: Cell<usize> = const { Cell::new(0) };
    static IN_PLACE: Cell<usize> = const { Cell::new(0) };
    static REFUSED: Cell<usize> = const { Cell::new(0) };
    static FAIL_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Counters of this thread's [`TestAlloc`] (each test runs on its own thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stats {
    live: usize,
    calls: usize,
    in_place: usize,
    refused: usize,
}

fn stats() -> Stats {
    Stats { live: LIVE.get(), calls: CALLS.get(), in_place: IN_PLACE.get(), refused: REFUSED.get() }
}

/// The next `n` allocating calls succeed, the ones after fail (`None`: never fail).
fn fail_after(n: Option<usize>) {
    FAIL_AFTER.set(n);
}

/// std's allocator with counters. Like krealloc, growing keeps the block when the allocator can
/// (std's `realloc`), and `__GFP_ZERO` zeroes what the caller did not have before.
struct TestAlloc;

// SAFETY: blocks come from std's allocator for exactly the layout asked (same alignment on
// realloc, as the trait requires of callers), and are freed only through this allocator.
unsafe impl Allocator for TestAlloc {
    unsafe fn realloc(
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: GfpFlags,
    ) -> Result<NonNull<[u8]>, AllocError> {
        CALLS.set(CALLS.get() + 1);
        let old = ptr.filter(|_| old_layout.size() != 0);
        if layout.size() == 0 {
            if let Some(p) = old {
                // SAFETY: `p` was allocated for `old_layout` (the caller's contract).
                unsafe { std::alloc::dealloc(p.as_ptr(), old_layout) };
                LIVE.set(LIVE.get() - 1);
            }
            return Ok(NonNull::slice_from_raw_parts(dangling_from_layout(layout), 0));
        }
        if let Some(n) = FAIL_AFTER.get() {
            if n == 0 {
                return Err(AllocError::OutOfMemory { order: 0 });
            }
            FAIL_AFTER.set(Some(n - 1));
        }
        let new = match old {
            None => {
                // SAFETY: `layout` has a non-zero size.
                let p = unsafe { std::alloc::alloc(layout) };
                LIVE.set(LIVE.get() + 1);
                p
            }
            Some(p) => {
                // SAFETY: `p` was allocated for `old_layout`, whose alignment is `layout`'s.
                let q = unsafe { std::alloc::realloc(p.as_ptr(), old_layout, layout.size()) };
                if q == p.as_ptr() {
                    IN_PLACE.set(IN_PLACE.get() + 1);
                }
                q
            }
        };
        let new = NonNull::new(new).ok_or(AllocError::OutOfMemory { order: 0 })?;
        if flags.contains(GfpFlags::__GFP_ZERO) {
            let from = old.map_or(0, |_| old_layout.size()).min(layout.size());
            // SAFETY: the block has `layout.size()` bytes.
            unsafe { new.as_ptr().add(from).write_bytes(0, layout.size() - from) };
        }
        Ok(NonNull::slice_from_raw_parts(new, layout.size()))
    }

    fn refused(err: AllocError, _flags: GfpFlags) -> AllocError {
        REFUSED.set(REFUSED.get() + 1);
        err
    }
}

const GFP: GfpFlags = GfpFlags::GFP_KERNEL;

/// Counts its drops, to check every element is dropped exactly once.
#[derive(Clone)]
struct Counted<'a>(&'a Cell<usize>, u64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}
