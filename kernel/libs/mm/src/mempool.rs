//! Memory pools: Linux 6.12's `mm/mempool.c` (`include/linux/mempool.h`). A pool keeps `min_nr`
//! elements in reserve, allocated when the pool is created, so that a caller that must make
//! forward progress (a block-I/O path freeing memory, say) gets an element even when the
//! allocator behind the pool fails.
//!
//! The policy, as 6.12's:
//! - [`Mempool::create`] (`mempool_init_node`) preallocates `min_nr` elements with `GFP_KERNEL`
//!   and fails, giving back what it got, if it cannot;
//! - [`Mempool::alloc`] (`mempool_alloc_noprof`) first asks the allocator with
//!   `gfp | __GFP_NOMEMALLOC | __GFP_NORETRY | __GFP_NOWARN` less `__GFP_DIRECT_RECLAIM | __GFP_IO`
//!   (a cheap try), then takes a reserved element, then (reserve empty) retries the allocator
//!   with the full mask, then, if the caller may block, waits for a [`Mempool::free`] and starts
//!   over; a caller that may not block gets [`MempoolError::Exhausted`] (6.12: `NULL`);
//! - [`Mempool::free`] (`mempool_free`) refills the reserve while it holds fewer than `min_nr`
//!   elements, and frees to the allocator otherwise;
//! - [`Mempool::resize`] (`mempool_resize`) shrinks the reserve (freeing the surplus) or grows it
//!   (a new reserve array, then elements allocated with `GFP_KERNEL`, best effort).
//!
//! The allocator is a [`PoolBackend`]: 6.12's `alloc_fn`/`free_fn` pair with its `pool_data`
//! folded into the value. The reserve array is a [`Vec`] in the [`Allocator`] `A` (the kernel's
//! kmalloc, as 6.12's `kmalloc_array_node`), under an [`IrqSpinLock`] (6.12's
//! `spin_lock_irqsave(&pool->lock)`: pools are used from interrupt handlers with `GFP_ATOMIC`).
//!
//! **Waiting.** This kernel has no scheduler, so there is no wait queue to sleep on. A blocking
//! caller waits by [`PoolBackend::wait_for_free`]: it polls the pool's count of refills (the
//! kernel spins with interrupts as the caller had them, so handlers and other CPUs can free) for
//! a bounded time, 6.12's `io_schedule_timeout(5*HZ)`, then starts over. 6.12 starts over
//! forever; here, as the kernel's `__GFP_NOFAIL` retry, after [`MEMPOOL_WAIT_ROUNDS`] rounds the
//! call fails with [`MempoolError::TimedOut`] instead of hanging a CPU that nothing will wake.
//!
//! **Deviations for bad inputs** (6.12 crashes or corrupts): `__GFP_ZERO` is refused (6.12
//! `VM_WARN_ON_ONCE`s and hands out unzeroed reserved elements); `resize(0)` is refused (6.12
//! `BUG_ON(new_min_nr <= 0)`); [`Mempool::destroy`] with elements still out gives the pool back
//! (6.12 frees the pool under them, so their later `mempool_free` is a use-after-free); a free
//! with no element out is refused (6.12 would push a foreign element into the reserve).

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::kalloc::{Allocator, Vec};
use crate::sync::IrqSpinLock;
use crate::{AllocError, GfpFlags};

/// Rounds of wait-and-retry a blocking [`Mempool::alloc`] gets before it fails (6.12: no limit).
pub const MEMPOOL_WAIT_ROUNDS: u32 = 1000;

/// The allocator behind a pool: 6.12's `mempool_alloc_t` / `mempool_free_t` with `pool_data`.
pub trait PoolBackend {
    /// One element as the allocator hands it out (6.12's `void *`: an object, a `struct page`):
    /// a handle of memory that any CPU may use and free (a pool is shared between CPUs and
    /// interrupt handlers even when the handle type, a raw pointer, is not `Send`).
    type Element: Copy;

    /// A new element (6.12's `pool->alloc(gfp_mask, pool->pool_data)`).
    #[track_caller]
    fn alloc(&self, gfp: GfpFlags) -> Result<Self::Element, AllocError>;

    /// Gives `element` back to the allocator (6.12's `pool->free(element, pool->pool_data)`).
    /// `false`: the allocator refused it (not one of its own; it reported why) and still the
    /// pool counts it as returned by the caller.
    #[track_caller]
    fn free(&self, element: Self::Element) -> bool;

    /// Waits, for a bounded time, until `refills` moves past `seen` (an element came back to
    /// the reserve) — 6.12's `io_schedule_timeout(5*HZ)` on `pool->wait`. The default spins.
    fn wait_for_free(&self, refills: &AtomicU64, seen: u64) {
        for _ in 0..1024 {
            if refills.load(Ordering::Acquire) != seen {
                return;
            }
            core::hint::spin_loop();
        }
    }
}

/// Why a pool call failed. Nothing is lost: the pool and every element are as before the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MempoolError {
    /// The reserve array or a preallocated element could not be allocated (create, resize).
    Alloc(AllocError),
    /// A caller that may not block found the allocator failing and the reserve empty (6.12
    /// returns `NULL`).
    Exhausted,
    /// A blocking caller waited [`MEMPOOL_WAIT_ROUNDS`] rounds and no element came back.
    TimedOut { rounds: u32 },
    /// `__GFP_ZERO` asked of `mempool_alloc` (reserved elements are not zeroed).
    ZeroFlag,
    /// `mempool_resize` to a `min_nr` of 0.
    BadMinNr,
    /// A free with no element of this pool out.
    NothingOutstanding,
    /// `mempool_destroy` with elements still out: the pool is given back unchanged.
    ElementsOutstanding { outstanding: usize, curr_nr: usize, min_nr: usize },
}

impl fmt::Display for MempoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MempoolError::Alloc(e) => write!(f, "cannot allocate the reserve: {e}"),
            MempoolError::Exhausted => {
                f.write_str("allocator failed and reserve empty (caller may not block)")
            }
            MempoolError::TimedOut { rounds } => {
                write!(f, "allocator failed and no element came back in {rounds} rounds: failing instead of hanging")
            }
            MempoolError::ZeroFlag => f.write_str("__GFP_ZERO is not supported by mempool_alloc"),
            MempoolError::BadMinNr => f.write_str("new_min_nr must be at least 1"),
            MempoolError::NothingOutstanding => f.write_str("no element of this pool is allocated"),
            MempoolError::ElementsOutstanding { outstanding, curr_nr, min_nr } => write!(
                f,
                "{outstanding} elements still allocated (reserve {curr_nr}/{min_nr}): pool not destroyed"
            ),
        }
    }
}

struct Reserve<E, A: Allocator> {
    /// 6.12's `elements[0..curr_nr]`; `elements.len()` is `curr_nr`, the capacity at least `min_nr`.
    elements: Vec<E, A>,
    min_nr: usize,
}

/// A memory pool over the allocator `B`, its reserve array in `A`.
pub struct Mempool<B: PoolBackend, A: Allocator> {
    backend: B,
    reserve: IrqSpinLock<Reserve<B::Element, A>>,
    /// Elements handed out and not yet freed (to refuse destroying a pool under them).
    outstanding: AtomicUsize,
    /// Elements put back into the reserve by `free`: what a waiting `alloc` watches.
    refills: AtomicU64,
}

// SAFETY: the reserve is only reached under its lock, the counters are atomics. The elements
// are handles (addresses, frames) of memory any CPU may use, as [`PoolBackend::Element`]
// requires, so moving them between CPUs is what their allocator `B` (`Sync`) does itself.
unsafe impl<B: PoolBackend + Sync, A: Allocator> Sync for Mempool<B, A> {}
// SAFETY: as above: the pool owns its reserved elements, handles valid on any CPU.
unsafe impl<B: PoolBackend + Send, A: Allocator> Send for Mempool<B, A> {}

impl<B: PoolBackend, A: Allocator> Mempool<B, A> {
    /// `mempool_create(min_nr, alloc_fn, free_fn, pool_data)` (6.12 `mempool_init_node`): the
    /// reserve array, then `min_nr` elements with `GFP_KERNEL`. If any fails, what was
    /// allocated is freed (`mempool_exit`) and the error returned.
    #[track_caller]
    pub fn create(min_nr: usize, backend: B) -> Result<Self, (B, MempoolError)> {
        let gfp = GfpFlags::GFP_KERNEL;
        let mut elements = match Vec::with_capacity(min_nr, gfp) {
            Ok(v) => v,
            Err(e) => return Err((backend, MempoolError::Alloc(e))),
        };
        while elements.len() < min_nr {
            match backend.alloc(gfp) {
                // Capacity is `min_nr`: the push never allocates.
                Ok(e) => elements.push(e, gfp).expect("reserve capacity is min_nr"),
                Err(err) => {
                    while let Some(e) = elements.pop() {
                        backend.free(e);
                    }
                    return Err((backend, MempoolError::Alloc(err)));
                }
            }
        }
        Ok(Mempool {
            backend,
            reserve: IrqSpinLock::new(Reserve { elements, min_nr }),
            outstanding: AtomicUsize::new(0),
            refills: AtomicU64::new(0),
        })
    }

    /// The allocator behind the pool.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// `pool->curr_nr`: elements in reserve now.
    pub fn curr_nr(&self) -> usize {
        self.reserve.lock().elements.len()
    }

    /// `pool->min_nr`: elements the pool keeps in reserve.
    pub fn min_nr(&self) -> usize {
        self.reserve.lock().min_nr
    }

    /// `mempool_is_saturated`: the reserve is full.
    pub fn is_saturated(&self) -> bool {
        let r = self.reserve.lock();
        r.elements.len() >= r.min_nr
    }

    /// Elements handed out and not yet freed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    fn take_reserved(&self) -> Option<B::Element> {
        let e = self.reserve.lock().elements.pop()?;
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(e)
    }

    /// `mempool_alloc(pool, gfp)` (6.12 `mempool_alloc_noprof`): see the module doc. A caller
    /// that may block (`__GFP_DIRECT_RECLAIM`) gets an element unless nothing is freed for
    /// [`MEMPOOL_WAIT_ROUNDS`] waits.
    #[track_caller]
    pub fn alloc(&self, gfp: GfpFlags) -> Result<B::Element, MempoolError> {
        if gfp.contains(GfpFlags::__GFP_ZERO) {
            return Err(MempoolError::ZeroFlag);
        }
        let gfp = gfp | GfpFlags::__GFP_NOMEMALLOC | GfpFlags::__GFP_NORETRY | GfpFlags::__GFP_NOWARN;
        let mut gfp_temp = gfp - (GfpFlags::__GFP_DIRECT_RECLAIM | GfpFlags::__GFP_IO);
        let mut rounds = 0;
        loop {
            // Read before trying, so that a refill between the try and the wait is seen.
            let seen = self.refills.load(Ordering::Acquire);
            if let Ok(e) = self.backend.alloc(gfp_temp) {
                self.outstanding.fetch_add(1, Ordering::Relaxed);
                return Ok(e);
            }
            if let Some(e) = self.take_reserved() {
                return Ok(e);
            }
            // First round without direct reclaim or I/O: retry at once with the full mask.
            if gfp_temp != gfp {
                gfp_temp = gfp;
                continue;
            }
            if !gfp.contains(GfpFlags::__GFP_DIRECT_RECLAIM) {
                return Err(MempoolError::Exhausted);
            }
            if rounds == MEMPOOL_WAIT_ROUNDS {
                return Err(MempoolError::TimedOut { rounds });
            }
            rounds += 1;
            self.backend.wait_for_free(&self.refills, seen);
        }
    }

    /// `mempool_alloc_preallocated(pool)`: a reserved element only, never the allocator.
    pub fn alloc_preallocated(&self) -> Result<B::Element, MempoolError> {
        self.take_reserved().ok_or(MempoolError::Exhausted)
    }

    /// `mempool_free(element, pool)`: into the reserve while it is short (waking a waiter),
    /// otherwise to the allocator. `None` (6.12's `NULL`) is a no-op.
    #[track_caller]
    pub fn free(&self, element: Option<B::Element>) -> Result<(), MempoolError> {
        let Some(element) = element else { return Ok(()) };
        if self.outstanding.try_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
            return Err(MempoolError::NothingOutstanding);
        }
        {
            let mut r = self.reserve.lock();
            if r.elements.len() < r.min_nr {
                // Capacity is at least `min_nr`: the push never allocates.
                r.elements.push(element, GfpFlags::GFP_ATOMIC).expect("reserve capacity is min_nr");
                drop(r);
                self.refills.fetch_add(1, Ordering::Release);
                return Ok(());
            }
        }
        self.backend.free(element);
        Ok(())
    }

    /// `mempool_resize(pool, new_min_nr)` (6.12's signature: `GFP_KERNEL` inside). Shrinking
    /// frees the reserved surplus; growing replaces the reserve array, then allocates elements
    /// up to the new `min_nr` as far as the allocator gives them (6.12 returns 0 even when it
    /// stops short: the reserve refills on later frees). Only the array's allocation fails it.
    #[track_caller]
    pub fn resize(&self, new_min_nr: usize) -> Result<(), MempoolError> {
        if new_min_nr == 0 {
            return Err(MempoolError::BadMinNr);
        }
        {
            let mut r = self.reserve.lock();
            if new_min_nr <= r.min_nr {
                r.min_nr = new_min_nr;
                while r.elements.len() > new_min_nr {
                    let e = r.elements.pop().expect("len > new_min_nr");
                    drop(r);
                    self.backend.free(e);
                    r = self.reserve.lock();
                }
                return Ok(());
            }
        }
        let mut new = Vec::with_capacity(new_min_nr, GfpFlags::GFP_KERNEL).map_err(MempoolError::Alloc)?;
        let old = {
            let mut r = self.reserve.lock();
            if new_min_nr <= r.min_nr {
                // Raced with another resize, which did the work.
                return Ok(());
            }
            new.extend_from_slice(&r.elements, GfpFlags::GFP_ATOMIC).expect("capacity holds the reserve");
            r.min_nr = new_min_nr;
            core::mem::replace(&mut r.elements, new)
        };
        drop(old);
        loop {
            if self.is_saturated() {
                return Ok(());
            }
            let Ok(e) = self.backend.alloc(GfpFlags::GFP_KERNEL) else { return Ok(()) };
            let mut r = self.reserve.lock();
            if r.elements.len() < r.min_nr {
                r.elements.push(e, GfpFlags::GFP_ATOMIC).expect("reserve capacity is min_nr");
            } else {
                drop(r);
                self.backend.free(e); // Raced.
                return Ok(());
            }
        }
    }

    /// `mempool_destroy(pool)` (6.12 `mempool_exit`): the reserved elements go back to the
    /// allocator, then the array. With elements still out the pool is given back instead
    /// (6.12 frees it under them).
    pub fn destroy(self) -> Result<(), (Self, MempoolError)> {
        let outstanding = self.outstanding();
        if outstanding != 0 {
            let (curr_nr, min_nr) = (self.curr_nr(), self.min_nr());
            return Err((self, MempoolError::ElementsOutstanding { outstanding, curr_nr, min_nr }));
        }
        drop(self);
        Ok(())
    }
}

impl<B: PoolBackend, A: Allocator> Drop for Mempool<B, A> {
    /// `mempool_exit`: every reserved element back to the allocator. (Elements still out stay
    /// the caller's; [`Mempool::destroy`] refuses that case, a plain drop cannot.)
    fn drop(&mut self) {
        let r = self.reserve.get_mut();
        while let Some(e) = r.elements.pop() {
            self.backend.free(e);
        }
    }
}

#[cfg(test)]
mod tests;
