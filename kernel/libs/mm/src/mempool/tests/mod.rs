//! Host tests of the pool policy over a test allocator that can be made to fail, each checked
//! against 6.12's `mm/mempool.c`.

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use std::vec::Vec as StdVec;

use super::{Mempool, MempoolError, PoolBackend, MEMPOOL_WAIT_ROUNDS};
use crate::kalloc::{dangling_from_layout, Allocator};
use crate::{AllocError, GfpFlags};

/// The reserve array's allocator: std's, failing while `ARRAY_FAILS` is set.
struct StdAlloc;

std::thread_local! {
    static ARRAY_FAILS: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: blocks come from std's allocator for exactly the layout asked and are freed only
// through it; a failed realloc leaves the old block untouched.
unsafe impl Allocator for StdAlloc {
    unsafe fn realloc(
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        _flags: GfpFlags,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let old = ptr.filter(|_| old_layout.size() != 0);
        if layout.size() == 0 {
            if let Some(p) = old {
                // SAFETY: `p` was allocated for `old_layout` (the caller's contract).
                unsafe { std::alloc::dealloc(p.as_ptr(), old_layout) };
            }
            return Ok(NonNull::slice_from_raw_parts(dangling_from_layout(layout), 0));
        }
        if ARRAY_FAILS.with(|f| f.get()) {
            return Err(AllocError::OutOfMemory { order: 0 });
        }
        let p = match old {
            // SAFETY: `layout` has a non-zero size.
            None => unsafe { std::alloc::alloc(layout) },
            // SAFETY: `p` was allocated for `old_layout`, same alignment (the caller's contract).
            Some(p) => unsafe { std::alloc::realloc(p.as_ptr(), old_layout, layout.size()) },
        };
        NonNull::new(p)
            .map(|p| NonNull::slice_from_raw_parts(p, layout.size()))
            .ok_or(AllocError::OutOfMemory { order: 0 })
    }
}

/// An allocator of numbered elements that records every call; `fail` makes it fail, `fail_after`
/// lets that many calls through first.
#[derive(Default)]
struct TestBackend {
    next: Cell<u32>,
    live: std::cell::RefCell<StdVec<u32>>,
    fail: Cell<bool>,
    fail_after: Cell<Option<u32>>,
    gfps: std::cell::RefCell<StdVec<GfpFlags>>,
    waits: Cell<u32>,
    /// The next this many calls fail, whatever `fail` says.
    fail_next: Cell<u32>,
    /// After this many waits the allocator works again (memory freed elsewhere).
    recover_after_waits: Cell<Option<u32>>,
}

impl PoolBackend for TestBackend {
    type Element = u32;

    fn alloc(&self, gfp: GfpFlags) -> Result<u32, AllocError> {
        self.gfps.borrow_mut().push(gfp);
        if self.fail_next.get() > 0 {
            self.fail_next.set(self.fail_next.get() - 1);
            return Err(AllocError::OutOfMemory { order: 0 });
        }
        if let Some(n) = self.fail_after.get() {
            if n == 0 {
                return Err(AllocError::OutOfMemory { order: 0 });
            }
            self.fail_after.set(Some(n - 1));
        }
        if self.fail.get() {
            return Err(AllocError::OutOfMemory { order: 0 });
        }
        let e = self.next.get();
        self.next.set(e + 1);
        self.live.borrow_mut().push(e);
        Ok(e)
    }

    fn free(&self, element: u32) -> bool {
        let mut live = self.live.borrow_mut();
        let i = live.iter().position(|&e| e == element).expect("freed an element it never gave");
        live.swap_remove(i);
        true
    }

    fn wait_for_free(&self, refills: &AtomicU64, seen: u64) {
        self.waits.set(self.waits.get() + 1);
        if self.recover_after_waits.get() == Some(self.waits.get()) {
            self.fail.set(false);
        }
        let _ = (refills, seen);
    }
}

type Pool = Mempool<TestBackend, StdAlloc>;

fn pool(min_nr: usize) -> Pool {
    Mempool::create(min_nr, TestBackend::default()).map_err(|(_, e)| e).unwrap()
}

// mm/mempool.c, mempool_init_node(): min_nr elements preallocated with GFP_KERNEL.
#[test]
fn create_preallocates_min_nr_elements_with_gfp_kernel() {
    let p = pool(4);
    assert_eq!((p.curr_nr(), p.min_nr()), (4, 4));
    assert_eq!(p.backend().live.borrow().len(), 4);
    assert!(p.backend().gfps.borrow().iter().all(|&g| g == GfpFlags::GFP_KERNEL));
    assert!(p.is_saturated());
}

// mm/mempool.c, mempool_init_node(): an element that cannot be allocated fails the whole
// create, and mempool_exit() frees the ones already preallocated.
#[test]
fn create_fails_when_an_element_cannot_be_preallocated_and_frees_the_rest() {
    let b = TestBackend::default();
    b.fail_after.set(Some(2));
    let (b, e) = Mempool::<_, StdAlloc>::create(4, b).err().unwrap();
    assert_eq!(e, MempoolError::Alloc(AllocError::OutOfMemory { order: 0 }));
    assert!(b.live.borrow().is_empty(), "the two preallocated elements were freed");
    ARRAY_FAILS.with(|f| f.set(true));
    let r = Mempool::<_, StdAlloc>::create(4, TestBackend::default());
    ARRAY_FAILS.with(|f| f.set(false));
    let (b, e) = r.err().unwrap();
    assert!(matches!(e, MempoolError::Alloc(_)), "no reserve array: -ENOMEM");
    assert!(b.gfps.borrow().is_empty(), "nothing asked of the allocator");
}

// mm/mempool.c, mempool_alloc_noprof(): the first try is gfp | __GFP_NOMEMALLOC |
// __GFP_NORETRY | __GFP_NOWARN without __GFP_DIRECT_RECLAIM | __GFP_IO (gfp_temp); when the
// allocator works the reserve is untouched.
#[test]
fn alloc_tries_the_allocator_first_with_gfp_temp() {
    let p = pool(2);
    p.backend().gfps.borrow_mut().clear();
    let e = p.alloc(GfpFlags::GFP_KERNEL).unwrap();
    assert_eq!(p.curr_nr(), 2, "reserve untouched");
    let want = (GfpFlags::GFP_KERNEL
        | GfpFlags::__GFP_NOMEMALLOC
        | GfpFlags::__GFP_NORETRY
        | GfpFlags::__GFP_NOWARN)
        - (GfpFlags::__GFP_DIRECT_RECLAIM | GfpFlags::__GFP_IO);
    assert_eq!(*p.backend().gfps.borrow(), [want]);
    // mm/mempool.c, mempool_free(): the reserve is full, so the element goes to the allocator.
    p.free(Some(e)).unwrap();
    assert_eq!(p.curr_nr(), 2);
    assert_eq!(p.backend().live.borrow().len(), 2);
}

// mm/mempool.c, mempool_alloc_noprof(): with the allocator exhausted the pool still gives
// min_nr elements from the reserve, and mempool_free() refills the reserve with them.
#[test]
fn exhausted_allocator_still_gets_min_nr_elements_and_frees_refill_the_reserve() {
    let p = pool(3);
    p.backend().fail.set(true);
    let got: StdVec<u32> = (0..3).map(|_| p.alloc(GfpFlags::GFP_ATOMIC).unwrap()).collect();
    assert_eq!(p.curr_nr(), 0);
    assert_eq!(p.outstanding(), 3);
    // A non-blocking caller now gets NULL (mempool_alloc_noprof: !__GFP_DIRECT_RECLAIM).
    assert_eq!(p.alloc(GfpFlags::GFP_ATOMIC), Err(MempoolError::Exhausted));
    for e in got {
        p.free(Some(e)).unwrap();
    }
    assert_eq!(p.curr_nr(), 3, "frees refilled the reserve");
    assert_eq!(p.backend().live.borrow().len(), 3, "nothing went back to the failing allocator");
}

// mm/mempool.c, mempool_alloc_noprof(): reserve empty and gfp_temp != gfp_mask: one immediate
// retry with the full mask (direct reclaim allowed) before waiting.
#[test]
fn empty_reserve_retries_with_the_full_mask_before_waiting() {
    let p = pool(1);
    p.backend().fail.set(true);
    let e = p.alloc(GfpFlags::GFP_KERNEL).unwrap();
    p.backend().gfps.borrow_mut().clear();
    // The first try fails, the reserve is empty, the full-mask retry succeeds.
    p.backend().fail.set(false);
    p.backend().fail_next.set(1);
    let f = p.alloc(GfpFlags::GFP_KERNEL).unwrap();
    let g = p.backend().gfps.borrow().clone();
    assert_eq!(g.len(), 2);
    assert!(!g[0].contains(GfpFlags::__GFP_DIRECT_RECLAIM));
    assert!(g[1].contains(GfpFlags::__GFP_DIRECT_RECLAIM | GfpFlags::__GFP_IO | GfpFlags::__GFP_NORETRY));
    assert_eq!(p.backend().waits.get(), 0, "no wait when the retry succeeds");
    p.free(Some(e)).unwrap();
    p.free(Some(f)).unwrap();
}

// mm/mempool.c, mempool_alloc_noprof(): a blocking caller waits (io_schedule_timeout) and goes
// back to repeat_alloc; here the wait is bounded: MEMPOOL_WAIT_ROUNDS rounds, then TimedOut.
#[test]
fn blocking_alloc_on_an_exhausted_pool_waits_bounded_rounds_then_fails() {
    let p = pool(1);
    p.backend().fail.set(true);
    let e = p.alloc(GfpFlags::GFP_KERNEL).unwrap();
    assert_eq!(p.alloc(GfpFlags::GFP_KERNEL), Err(MempoolError::TimedOut { rounds: MEMPOOL_WAIT_ROUNDS }));
    assert_eq!(p.backend().waits.get(), MEMPOOL_WAIT_ROUNDS);
    assert_eq!(p.outstanding(), 1, "the failed call took nothing");
    p.free(Some(e)).unwrap();
    assert_eq!(p.curr_nr(), 1);
}

// mm/mempool.c, mempool_alloc_noprof(): after io_schedule_timeout() the waiter goes back to
// repeat_alloc and tries the allocator again: memory freed meanwhile serves it.
#[test]
fn a_waiter_retries_the_allocator_after_each_wait() {
    let p = pool(1);
    p.backend().fail.set(true);
    let e = p.alloc(GfpFlags::GFP_KERNEL).unwrap();
    p.backend().recover_after_waits.set(Some(3));
    let f = p.alloc(GfpFlags::GFP_KERNEL).unwrap();
    assert_eq!(p.backend().waits.get(), 3);
    assert_eq!(p.outstanding(), 2);
    p.free(Some(e)).unwrap();
    p.free(Some(f)).unwrap();
    assert_eq!(p.curr_nr(), 1);
    assert_eq!(p.backend().live.borrow().len(), 1, "the surplus element went to the allocator");
}

// mm/mempool.c, mempool_free() bumps the refill the waiter watches (wake_up(&pool->wait)).
#[test]
fn a_refill_is_what_the_default_wait_watches() {
    struct Spin;
    impl PoolBackend for Spin {
        type Element = u8;
        fn alloc(&self, _: GfpFlags) -> Result<u8, AllocError> {
            Ok(0)
        }
        fn free(&self, _: u8) -> bool {
            true
        }
    }
    let p = Mempool::<_, StdAlloc>::create(1, Spin).map_err(|(_, e)| e).unwrap();
    let a = p.alloc_preallocated().unwrap();
    let seen = p.refills.load(core::sync::atomic::Ordering::Acquire);
    p.free(Some(a)).unwrap();
    assert_eq!(p.refills.load(core::sync::atomic::Ordering::Acquire), seen + 1);
    // The default wait returns at once once the count moved (it would spin otherwise).
    Spin.wait_for_free(&p.refills, seen);
}

// mm/mempool.c, mempool_alloc_preallocated(): the reserve only, never the allocator.
#[test]
fn alloc_preallocated_takes_only_the_reserve() {
    let p = pool(1);
    p.backend().gfps.borrow_mut().clear();
    let e = p.alloc_preallocated().unwrap();
    assert_eq!(p.alloc_preallocated(), Err(MempoolError::Exhausted));
    assert!(p.backend().gfps.borrow().is_empty());
    p.free(Some(e)).unwrap();
}

// mm/mempool.c, mempool_free(): `if (unlikely(element == NULL)) return;`.
#[test]
fn free_of_null_is_a_no_op() {
    let p = pool(2);
    assert_eq!(p.free(None), Ok(()));
    assert_eq!((p.curr_nr(), p.outstanding()), (2, 0));
}

// mm/mempool.c, mempool_free() would add_element() an element the pool never gave into a
// short reserve; here a free with nothing out is refused and the pool unchanged.
#[test]
fn free_with_nothing_outstanding_is_refused() {
    let p = pool(1);
    let e = p.alloc_preallocated().unwrap();
    p.free(Some(e)).unwrap();
    assert_eq!(p.free(Some(e)), Err(MempoolError::NothingOutstanding), "double free");
    assert_eq!(p.curr_nr(), 1);
}

// mm/mempool.c, mempool_alloc_noprof(): VM_WARN_ON_ONCE(gfp_mask & __GFP_ZERO); refused here.
#[test]
fn gfp_zero_is_refused() {
    let p = pool(1);
    assert_eq!(p.alloc(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO), Err(MempoolError::ZeroFlag));
    assert_eq!((p.curr_nr(), p.outstanding()), (1, 0));
}

// mm/mempool.c, mempool_resize(): shrinking frees the reserved surplus, growing allocates up to
// the new min_nr with GFP_KERNEL; BUG_ON(new_min_nr <= 0) is a typed error here.
#[test]
fn resize_shrinks_and_grows_the_reserve() {
    let p = pool(4);
    p.resize(2).unwrap();
    assert_eq!((p.curr_nr(), p.min_nr()), (2, 2));
    assert_eq!(p.backend().live.borrow().len(), 2, "surplus freed");
    p.resize(5).unwrap();
    assert_eq!((p.curr_nr(), p.min_nr()), (5, 5));
    assert_eq!(p.resize(0), Err(MempoolError::BadMinNr));
    assert_eq!((p.curr_nr(), p.min_nr()), (5, 5));
}

// mm/mempool.c, mempool_resize(): growing with a failing allocator still returns 0, with the
// new min_nr; the reserve fills on later mempool_free()s. A failed array allocation is -ENOMEM.
#[test]
fn resize_grow_with_failing_allocator_sets_min_nr_and_frees_refill() {
    let p = pool(1);
    p.backend().fail.set(true);
    p.resize(3).unwrap();
    assert_eq!((p.curr_nr(), p.min_nr()), (1, 3));
    p.backend().fail.set(false);
    let a = p.alloc(GfpFlags::GFP_KERNEL).unwrap();
    let b = p.alloc(GfpFlags::GFP_KERNEL).unwrap();
    p.free(Some(a)).unwrap();
    p.free(Some(b)).unwrap();
    assert_eq!(p.curr_nr(), 3, "mempool_free refilled up to the new min_nr");
    ARRAY_FAILS.with(|f| f.set(true));
    let r = p.resize(6);
    ARRAY_FAILS.with(|f| f.set(false));
    assert!(matches!(r, Err(MempoolError::Alloc(_))));
    assert_eq!((p.curr_nr(), p.min_nr()), (3, 3), "unchanged");
}

// mm/mempool.c, mempool_destroy()/mempool_exit(): the reserved elements go back to the
// allocator. With elements out 6.12 frees the pool anyway (no check); refused here, pool intact.
#[test]
fn destroy_frees_the_reserve_and_refuses_while_elements_are_out() {
    let p = pool(2);
    let e = p.alloc(GfpFlags::GFP_KERNEL).unwrap();
    let (p, err) = p.destroy().err().unwrap();
    assert_eq!(err, MempoolError::ElementsOutstanding { outstanding: 1, curr_nr: 2, min_nr: 2 });
    p.free(Some(e)).unwrap();
    assert_eq!(
        p.backend().live.borrow().len(),
        2,
        "the reserve full, the freed element went to the allocator"
    );
    p.destroy().map_err(|(_, e)| e).unwrap();
}
