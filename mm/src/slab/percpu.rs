//! Per-CPU slabs (SLUB's `kmem_cache_cpu`): the lock-free fast paths and their counters.
//!
//! Every cache has one [`KmemCacheCpu`] per CPU slot. A slot holds the CPU's active slab (SLUB's
//! "frozen" slab: on no list) and that slab's private free list. The slot is touched only by its
//! own CPU with interrupts off on that CPU, so the fast paths take no lock and use no atomic
//! read-modify-write: `kmem_cache_alloc` pops the private list, `kmem_cache_free` of an object of
//! the active slab pushes onto it.
//!
//! Everything else is the slow path, under the cache lock (see `cache.rs`): refilling an empty
//! private list from the slab's own free list (objects other CPUs freed into the frozen slab:
//! "remote frees"), or from a partial, empty or new slab; frees into any other slab; and every
//! operation of a debug cache (`kmem_cache_debug()`: any `slab_debug` flag), whose checks all
//! live there.
//!
//! Counting, as SLUB: while a slab is frozen its `inuse` counts the objects on the private list
//! as in use, so `/proc/slabinfo`'s active objects include objects parked in per-CPU slabs (as
//! on Linux). Deactivation (a refill that moves on, [`KmemCache::flush_cpu_slab`], shrink,
//! destroy) gives the private list back to the slab and subtracts its length.
//!
//! Which CPU: [`set_this_cpu_fn`] installs the kernel's `smp_processor_id()`; until then (and on
//! the host) every caller is CPU 0. The kernel has no preemption, so the id read before
//! interrupts go off stays right: an interrupt handler that runs in between returns to the same
//! CPU. On the host, where "interrupts off" means nothing, a per-slot flag stands in for it so
//! that threads sharing a slot cannot interleave (the kernel build has no such flag).

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use core::ptr::NonNull;

use crate::buddy::CpuId;
use crate::page::{Page, PageProvider, NO_PAGE};

use super::cache::{CacheState, KmemCache, Which};

/// CPU slots of every cache: the per-CPU page lists' `NR_CPUS` (one constant for the whole
/// crate once the two are unified).
pub const NR_CPUS: usize = crate::buddy::pcp::NR_CPUS;

static THIS_CPU: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the function that says which CPU is running (Linux `smp_processor_id()`). The kernel
/// calls it once at boot, before a second CPU can allocate.
pub fn set_this_cpu_fn(f: fn() -> CpuId) {
    THIS_CPU.store(f as *mut (), Relaxed);
}

/// The running CPU: the installed function's answer, CPU 0 before one is installed.
#[inline(always)]
pub fn this_cpu() -> CpuId {
    let f = THIS_CPU.load(Relaxed);
    if f.is_null() {
        return CpuId::BOOT;
    }
    // SAFETY: only `set_this_cpu_fn` stores into `THIS_CPU`, always a `fn() -> CpuId`.
    let f: fn() -> CpuId = unsafe { core::mem::transmute::<*mut (), fn() -> CpuId>(f) };
    f()
}

macro_rules! slab_stats {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Per-cache event counters with Linux's `SLUB_STATS` names (`/sys/kernel/slab/*/`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum SlabStat { $($(#[$doc])* $variant,)* }

        impl SlabStat {
            /// Every counter, in declaration order.
            pub const ALL: [SlabStat; NR_SLAB_STATS] = [$(SlabStat::$variant,)*];

            /// The Linux name (`alloc_fastpath`, ...).
            pub fn name(self) -> &'static str {
                match self { $(SlabStat::$variant => $name,)* }
            }
        }
    };
}

slab_stats! {
    /// Allocation from the CPU's private free list, no lock.
    AllocFastpath = "alloc_fastpath",
    /// Allocation through the locked slow path.
    AllocSlowpath = "alloc_slowpath",
    /// Free onto the CPU's private free list, no lock.
    FreeFastpath = "free_fastpath",
    /// Free through the locked slow path.
    FreeSlowpath = "free_slowpath",
    /// Free into a slab frozen by another CPU (a remote free onto the slab's own list).
    FreeFrozen = "free_frozen",
    /// Free that moved a full slab to the partial list.
    FreeAddPartial = "free_add_partial",
    /// Free that took an emptied slab off the partial list.
    FreeRemovePartial = "free_remove_partial",
    /// Slab returned to the page allocator.
    FreeSlab = "free_slab",
    /// Private list refilled from the active slab's own list (remote frees).
    AllocRefill = "alloc_refill",
    /// New active slab taken from the partial (or empty) list.
    AllocFromPartial = "alloc_from_partial",
    /// New slab allocated from the page allocator.
    AllocSlab = "alloc_slab",
    /// Active slab given back by `flush_cpu_slab` (shrink, destroy, CPU drain).
    CpuslabFlush = "cpuslab_flush",
    /// Deactivated slab was full.
    DeactivateFull = "deactivate_full",
    /// Deactivated slab was empty.
    DeactivateEmpty = "deactivate_empty",
    /// Deactivated slab went to the partial list.
    DeactivateToHead = "deactivate_to_head",
    /// Deactivation merged remote frees back into the slab.
    DeactivateRemoteFrees = "deactivate_remote_frees",
}

/// Number of [`SlabStat`] counters.
pub const NR_SLAB_STATS: usize = 16;

/// One CPU's slot of a cache. Fields are atomics used with `Relaxed` plain loads and stores, not
/// for synchronisation (only the owning CPU writes, with interrupts off) but so that readers on
/// other CPUs (`live_objects`, statistics, `validate`) see whole values.
#[repr(C, align(64))]
pub struct KmemCacheCpu {
    /// First object of the private free list (raw address, 0 = empty); free pointers link the
    /// rest with the hardened encoding.
    pub(crate) freelist: AtomicUsize,
    /// Objects on the private free list.
    pub(crate) nr_free: AtomicU32,
    /// Pfn of the active slab, [`NO_PAGE`] = none.
    pub(crate) pfn: AtomicU32,
    /// Address of the active slab's first byte.
    pub(crate) start: AtomicUsize,
    stats: [AtomicU64; NR_SLAB_STATS],
    /// Host stand-in for "interrupts off on this CPU" (see the module documentation).
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    busy: core::sync::atomic::AtomicBool,
}

impl KmemCacheCpu {
    pub(crate) const fn new() -> Self {
        KmemCacheCpu {
            freelist: AtomicUsize::new(0),
            nr_free: AtomicU32::new(0),
            pfn: AtomicU32::new(NO_PAGE),
            start: AtomicUsize::new(0),
            stats: [const { AtomicU64::new(0) }; NR_SLAB_STATS],
            #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
            busy: core::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Makes this CPU the only one touching the slot until the guard drops: interrupts off (the
    /// caller runs on the slot's CPU), or on the host the slot's flag.
    #[inline(always)]
    pub(crate) fn enter(&self) -> CpuSlotGuard<'_> {
        let irq = crate::sync::irq::save_and_disable();
        #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
        while self
            .busy
            .compare_exchange_weak(false, true, core::sync::atomic::Ordering::Acquire, Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        CpuSlotGuard { slot: self, irq }
    }

    /// Counts one event (the owner holds the slot: a plain increment).
    #[inline(always)]
    pub(crate) fn stat(&self, _g: &CpuSlotGuard<'_>, s: SlabStat) {
        let c = &self.stats[s as usize];
        c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
    }

    pub(crate) fn stat_value(&self, s: SlabStat) -> u64 {
        self.stats[s as usize].load(Relaxed)
    }

    /// The active slab's pfn, if any.
    #[inline(always)]
    pub(crate) fn active(&self) -> Option<u32> {
        let pfn = self.pfn.load(Relaxed);
        (pfn != NO_PAGE).then_some(pfn)
    }
}

/// Proof that the current CPU owns a [`KmemCacheCpu`] (interrupts are off). Dropping it restores
/// the interrupt state.
pub(crate) struct CpuSlotGuard<'a> {
    #[cfg_attr(all(target_arch = "x86_64", target_os = "none"), allow(dead_code))]
    slot: &'a KmemCacheCpu,
    irq: bool,
}

impl Drop for CpuSlotGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
        self.slot.busy.store(false, core::sync::atomic::Ordering::Release);
        crate::sync::irq::restore(self.irq);
    }
}

impl<'p, P: PageProvider> KmemCache<'p, P> {
    /// The allocation fast path: pop the CPU's private list. `None` sends the caller to the slow
    /// path (empty list, or a free pointer leading outside the slab, which the slow path reports).
    #[inline(always)]
    pub(crate) fn alloc_fast(&self, cpu: CpuId) -> Option<NonNull<u8>> {
        let c = self.cpu_slab(cpu);
        let slot = c.enter();
        let obj = c.freelist.load(Relaxed);
        if obj == 0 {
            return None;
        }
        // SAFETY: `obj` heads the private list of the CPU's active slab: a free object of this
        // cache, and the slot is ours (`slot`).
        let next = unsafe { self.get_fp(obj) };
        if next != 0 && next.wrapping_sub(c.start.load(Relaxed)) >= self.geom.slab_bytes() {
            return None;
        }
        c.freelist.store(next, Relaxed);
        c.nr_free.store(c.nr_free.load(Relaxed).wrapping_sub(1), Relaxed);
        c.stat(&slot, SlabStat::AllocFastpath);
        drop(slot);
        // SAFETY: objects are inside the direct map, never at address 0.
        Some(unsafe { NonNull::new_unchecked(self.ptr(obj)) })
    }

    /// The free fast path: `addr` in slab `pfn` of this cache goes onto the CPU's private list
    /// when that slab is the CPU's active one. `false` sends the caller to the slow path (not an
    /// object start, another slab, the list's head already: a double free, a debug cache).
    #[inline(always)]
    pub(crate) fn free_fast(&self, cpu: CpuId, pfn: u32, addr: usize) -> bool {
        if self.debug || self.object_index(self.slab_start(pfn), addr).is_none() {
            return false;
        }
        let c = self.cpu_slab(cpu);
        let slot = c.enter();
        let head = c.freelist.load(Relaxed);
        if c.pfn.load(Relaxed) != pfn || head == addr {
            return false;
        }
        // SAFETY: `addr` starts an object of the CPU's active slab that its owner is freeing;
        // the slot is ours.
        unsafe { self.set_fp(addr, head) };
        c.freelist.store(addr, Relaxed);
        c.nr_free.store(c.nr_free.load(Relaxed).wrapping_add(1), Relaxed);
        c.stat(&slot, SlabStat::FreeFastpath);
        true
    }

    /// Makes slab `pfn` the active slab of slot `c`: its whole free list becomes the private
    /// list, counted in use from now on (SLUB `freeze`).
    fn activate(&self, st: &mut CacheState, c: &KmemCacheCpu, pfn: u32, page: &Page) {
        let (inuse, objects) = Self::counters(page);
        let n = objects - inuse;
        c.freelist.store(self.freelist_head(page), Relaxed);
        c.nr_free.store(n, Relaxed);
        c.start.store(self.slab_start(pfn), Relaxed);
        c.pfn.store(pfn, Relaxed);
        self.set_freelist_head(page, 0);
        Self::set_inuse(page, objects);
        Self::set_frozen(page, true);
        st.inuse += n as u64;
    }

    /// Gives slot `c`'s active slab back (SLUB `deactivate_slab`): the private list joins the
    /// slab's own list (remote frees), counts are reconciled and the slab goes on the list its
    /// fill level says. Returns a slab to release (after the lock is dropped) when it is empty
    /// and enough empty slabs are kept already.
    pub(crate) fn deactivate(
        &self,
        st: &mut CacheState,
        c: &KmemCacheCpu,
        slot: &CpuSlotGuard<'_>,
    ) -> Option<(u32, &'p Page)> {
        let pfn = c.active()?;
        let page = self.page_of(pfn);
        let mut head = c.freelist.load(Relaxed);
        let n = c.nr_free.load(Relaxed);
        let remote = self.freelist_head(page);
        if head != 0 && remote != 0 {
            // Splice: the private list's tail links to the remote frees.
            let mut tail = head;
            for _ in 1..n {
                // SAFETY: objects on the private list are free objects of this slab.
                tail = unsafe { self.get_fp(tail) };
            }
            // SAFETY: as above.
            unsafe { self.set_fp(tail, remote) };
            c.stat(slot, SlabStat::DeactivateRemoteFrees);
        } else if head == 0 {
            head = remote;
        }
        self.set_freelist_head(page, head);
        let (inuse, _) = Self::counters(page);
        let inuse = inuse - n;
        Self::set_inuse(page, inuse);
        Self::set_frozen(page, false);
        st.inuse -= n as u64;
        c.freelist.store(0, Relaxed);
        c.nr_free.store(0, Relaxed);
        c.pfn.store(NO_PAGE, Relaxed);
        c.start.store(0, Relaxed);
        let to = self.which_for(inuse);
        c.stat(
            slot,
            match to {
                Which::Full => SlabStat::DeactivateFull,
                Which::Empty => SlabStat::DeactivateEmpty,
                Which::Partial => SlabStat::DeactivateToHead,
            },
        );
        if to == Which::Empty && st.empty.len >= self.min_partial {
            self.forget_slab(st);
            c.stat(slot, SlabStat::FreeSlab);
            return Some((pfn, page));
        }
        self.list_push(st, to, pfn, page);
        None
    }

    /// Refills slot `c`'s empty private list: from the active slab's remote frees, else from a
    /// partial or empty slab that becomes active. `false`: no slab has a free object.
    pub(crate) fn refill(&self, st: &mut CacheState, c: &KmemCacheCpu, slot: &CpuSlotGuard<'_>) -> bool {
        if let Some(pfn) = c.active() {
            let page = self.page_of(pfn);
            let (inuse, objects) = Self::counters(page);
            if inuse < objects {
                c.freelist.store(self.freelist_head(page), Relaxed);
                c.nr_free.store(objects - inuse, Relaxed);
                self.set_freelist_head(page, 0);
                Self::set_inuse(page, objects);
                st.inuse += (objects - inuse) as u64;
                c.stat(slot, SlabStat::AllocRefill);
                return true;
            }
            // Full: nothing to release.
            let released = self.deactivate(st, c, slot);
            debug_assert!(released.is_none());
        }
        match self.list_pop(st, Which::Partial).or_else(|| self.list_pop(st, Which::Empty)) {
            Some((pfn, page)) => {
                self.activate(st, c, pfn, page);
                c.stat(slot, SlabStat::AllocFromPartial);
                true
            }
            None => false,
        }
    }

    /// Drains CPU `cpu`'s slab of this cache (`flush_cpu_slab`, what Linux runs on each CPU by
    /// IPI): the active slab goes back to the lists, and to the provider if it is empty and
    /// enough empty slabs are kept. Returns the pages freed.
    ///
    /// # Safety
    /// Runs on CPU `cpu`, or while `cpu` uses no slab cache (offline, parked, or the cache is
    /// being destroyed): the slot is otherwise only touched by its own CPU with interrupts off.
    pub unsafe fn flush_cpu_slab(&self, cpu: CpuId) -> usize {
        let c = self.cpu_slab(cpu);
        let released = {
            let mut st = self.state.lock();
            let slot = c.enter();
            if c.active().is_some() {
                c.stat(&slot, SlabStat::CpuslabFlush);
            }
            self.deactivate(&mut st, c, &slot)
        };
        match released {
            Some((pfn, page)) => {
                self.release(pfn, page);
                1 << self.geom.order
            }
            None => 0,
        }
    }

    /// Counter `s` summed over every CPU.
    pub fn stat(&self, s: SlabStat) -> u64 {
        self.cpu_slab.iter().map(|c| c.stat_value(s)).sum()
    }
}
