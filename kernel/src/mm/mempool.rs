//! Memory pools on the kernel's allocators: Linux 6.12's `mm/mempool.c` helpers
//! (`mempool_create_kmalloc_pool`, `mempool_create_page_pool`, `mempool_create_slab_pool`) and
//! the Linux-named entry points over the typed [`Mempool`] (the policy is the `mm` crate's
//! [`::mm::mempool`]; its reserve array is kmalloc memory, as 6.12's `kmalloc_array_node`, under
//! an interrupt-disabling lock, as 6.12's `spin_lock_irqsave(&pool->lock)`).
//!
//! Waiting: a blocking `mempool_alloc` with the allocator failing and the reserve empty spins
//! (interrupts as the caller had them, so interrupt handlers and other CPUs can run their
//! `mempool_free`) until an element comes back or about a thousand pauses pass, 6.12's
//! `io_schedule_timeout(5*HZ)`, and starts over; after [`MEMPOOL_WAIT_ROUNDS`] rounds it fails
//! with [`MempoolError::TimedOut`] and one console line, as the kernel's `__GFP_NOFAIL` retry
//! (`page_alloc::nofail_retry`) fails after `NOFAIL_RETRIES` rounds rather than hang.
//!
//! Bad inputs (`__GFP_ZERO`, `mempool_resize(pool, 0)`, a free with nothing out, destroying a
//! pool with elements out) get their [`MempoolError`] and one console line naming the caller.

use core::panic::Location;
use core::ptr::NonNull;

use ::mm::mempool::{self as policy, PoolBackend};
use ::mm::{AllocError, GfpFlags};
use x86_64::structures::paging::PhysFrame;

pub use ::mm::mempool::{MempoolError, MEMPOOL_WAIT_ROUNDS};

use super::kalloc::Kmalloc;
use super::page_alloc::{__free_pages, alloc_pages, might_sleep_if};
use super::slab::{kfree, kmalloc, kmem_cache_alloc, kmem_cache_free, KmemCache};

/// A memory pool over the allocator `B`, its reserve array in kmalloc memory.
pub type Mempool<B> = policy::Mempool<B, Kmalloc>;

/// `mempool_kmalloc` / `mempool_kfree`: elements of `size` bytes from kmalloc.
pub struct KmallocPool {
    pub size: usize,
}

impl PoolBackend for KmallocPool {
    type Element = NonNull<u8>;

    #[track_caller]
    fn alloc(&self, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        kmalloc(self.size, gfp)
    }

    #[track_caller]
    fn free(&self, element: NonNull<u8>) -> bool {
        kfree(element.as_ptr()).is_ok()
    }
}

/// `mempool_alloc_pages` / `mempool_free_pages`: blocks of `2^order` pages from the buddy
/// allocator (6.12's elements are `struct page *`; here the block's first frame).
pub struct PagePool {
    pub order: u32,
}

impl PoolBackend for PagePool {
    type Element = PhysFrame;

    #[track_caller]
    fn alloc(&self, gfp: GfpFlags) -> Result<PhysFrame, AllocError> {
        alloc_pages(gfp, self.order)
    }

    #[track_caller]
    fn free(&self, element: PhysFrame) -> bool {
        __free_pages(element, self.order).is_ok()
    }
}

/// `mempool_alloc_slab` / `mempool_free_slab`: objects of a slab cache, which outlives the pool.
pub struct SlabPool<'c> {
    pub cache: &'c KmemCache,
}

impl PoolBackend for SlabPool<'_> {
    type Element = NonNull<u8>;

    #[track_caller]
    fn alloc(&self, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        kmem_cache_alloc(self.cache, gfp)
    }

    #[track_caller]
    fn free(&self, element: NonNull<u8>) -> bool {
        kmem_cache_free(self.cache, element).is_ok()
    }
}

#[cold]
#[inline(never)]
fn report(what: &str, e: &MempoolError, loc: &'static Location<'static>) {
    if !crate::log::ratelimit(loc) {
        return;
    }
    crate::error!("{what} refused at {}:{}: {e}", loc.file(), loc.line());
}

/// `mempool_create(min_nr, alloc_fn, free_fn, pool_data)`: `min_nr` elements preallocated with
/// `GFP_KERNEL`; if that fails nothing is kept and the error is reported with the caller.
#[track_caller]
pub fn mempool_create<B: PoolBackend>(min_nr: usize, backend: B) -> Result<Mempool<B>, MempoolError> {
    let loc = Location::caller();
    if crate::arch::in_interrupt() {
        // 6.12 allocates with GFP_KERNEL here (might sleep): a bug in the caller.
        let e = MempoolError::Alloc(AllocError::Invalid("mempool_create in interrupt context"));
        report("mempool_create", &e, loc);
        return Err(e);
    }
    Mempool::create(min_nr, backend).map_err(|(_, e)| {
        report("mempool_create", &e, loc);
        e
    })
}

/// `mempool_create_kmalloc_pool(min_nr, size)`.
#[track_caller]
pub fn mempool_create_kmalloc_pool(min_nr: usize, size: usize) -> Result<Mempool<KmallocPool>, MempoolError> {
    mempool_create(min_nr, KmallocPool { size })
}

/// `mempool_create_page_pool(min_nr, order)`.
#[track_caller]
pub fn mempool_create_page_pool(min_nr: usize, order: u32) -> Result<Mempool<PagePool>, MempoolError> {
    mempool_create(min_nr, PagePool { order })
}

/// `mempool_create_slab_pool(min_nr, cache)`.
#[track_caller]
pub fn mempool_create_slab_pool(
    min_nr: usize,
    cache: &KmemCache,
) -> Result<Mempool<SlabPool<'_>>, MempoolError> {
    mempool_create(min_nr, SlabPool { cache })
}

/// `mempool_alloc(pool, gfp)`: the allocator, else a reserved element, else (blocking callers)
/// a bounded wait for a `mempool_free`. [`MempoolError::Exhausted`] for a caller that may not
/// block is quiet (6.12 returns `NULL` with `__GFP_NOWARN`); `__GFP_ZERO` and a timed-out wait
/// are reported.
#[track_caller]
pub fn mempool_alloc<B: PoolBackend>(pool: &Mempool<B>, gfp: GfpFlags) -> Result<B::Element, MempoolError> {
    might_sleep_if(gfp);
    let loc = Location::caller();
    pool.alloc(gfp).inspect_err(|e| {
        if !matches!(e, MempoolError::Exhausted) {
            report("mempool_alloc", e, loc);
        }
    })
}

/// `mempool_alloc_preallocated(pool)`: a reserved element only.
pub fn mempool_alloc_preallocated<B: PoolBackend>(pool: &Mempool<B>) -> Result<B::Element, MempoolError> {
    pool.alloc_preallocated()
}

/// `mempool_free(element, pool)`: `None` (`NULL`) is a no-op; a free with nothing out is refused.
#[track_caller]
pub fn mempool_free<B: PoolBackend>(
    element: Option<B::Element>,
    pool: &Mempool<B>,
) -> Result<(), MempoolError> {
    let loc = Location::caller();
    pool.free(element).inspect_err(|e| report("mempool_free", e, loc))
}

/// `mempool_resize(pool, new_min_nr)` (6.12's signature, `GFP_KERNEL` inside).
#[track_caller]
pub fn mempool_resize<B: PoolBackend>(pool: &Mempool<B>, new_min_nr: usize) -> Result<(), MempoolError> {
    might_sleep_if(GfpFlags::GFP_KERNEL);
    let loc = Location::caller();
    pool.resize(new_min_nr).inspect_err(|e| report("mempool_resize", e, loc))
}

/// `mempool_destroy(pool)`: the reserve back to the allocator. With elements still out the pool
/// is given back, reported, unchanged (6.12 frees it under them).
#[track_caller]
pub fn mempool_destroy<B: PoolBackend>(pool: Mempool<B>) -> Result<(), (Mempool<B>, MempoolError)> {
    let loc = Location::caller();
    pool.destroy().inspect_err(|(_, e)| report("mempool_destroy", e, loc))
}
