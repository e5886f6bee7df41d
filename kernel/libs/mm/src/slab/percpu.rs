//! Per-CPU slabs (SLUB's `kmem_cache_cpu`): the lock-free fast paths and their counters.
//!
//! Every cache has one [`KmemCacheCpu`] per CPU slot. A slot holds the CPU's active slab (SLUB's
//! "frozen" slab: on no list) and that slab's private free list. The slot is touched only by its
//! own CPU with interrupts off on that CPU, so the fast paths take no lock and use no atomic
//! read-modify-write: `kmem_cache_alloc` pops the private list, `kmem_cache_free` of an object of
//! the active slab pushes onto it.
//!
//! In front of the private list sits a sheaf (Linux 6.18's per-CPU object array): frees of any
//! object of the cache go there while it has room, and allocations take from it first, so a
//! free/alloc pair touches no slab whatever slab the object is in (random free patterns are as
//! cheap as LIFO ones). A full sheaf gives its oldest half back to the slabs in one locked batch.
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
//! Which CPU: [`crate::cpus::this_cpu`] (in the kernel one GS-relative load, the `gs_cpu_id`
//! feature; on the host an installed function, CPU 0 without one). The slot discipline (interrupts off on the slot's own CPU, a
//! busy flag standing in for it on the host) is [`crate::cpus::CpuSlot`], shared with the
//! per-CPU page lists.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use core::ptr::NonNull;

use crate::buddy::CpuId;
use crate::cpus::CpuSlot;
pub(crate) use crate::cpus::CpuSlotGuard;
pub use crate::cpus::{set_this_cpu_fn, this_cpu};
use crate::page::{Page, PageProvider, NO_PAGE};

use super::cache::{CacheState, KmemCache, Which, FAST_DEBUG, FAST_INIT_ON_FREE};
use super::free::Released;

/// CPU slots of every cache: the per-CPU page lists' `NR_CPUS` (one constant for the whole
/// crate once the two are unified).
pub const NR_CPUS: usize = crate::buddy::pcp::NR_CPUS;

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
    /// A full sheaf gave its oldest half back to the slabs (Linux 6.18 `sheaf_flush`).
    SheafFlush = "sheaf_flush",
}

/// Number of [`SlabStat`] counters.
pub const NR_SLAB_STATS: usize = 17;

/// Objects a CPU's sheaf holds (a power of two: indices are masked, not bounds-checked).
pub const SHEAF_CAPACITY: usize = 32;
const _: () = assert!(SHEAF_CAPACITY.is_power_of_two() && NR_CPUS.is_power_of_two());

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
    /// Objects in the sheaf, `sheaf[..sheaf_len]`, the newest last.
    pub(crate) sheaf_len: AtomicU32,
    /// The sheaf (Linux 6.18's per-CPU object array, SLAB's `array_cache`): objects freed on
    /// this CPU, of any slab of the cache, handed out again first. Still counted in use by their
    /// slabs, so a free or an allocation through it touches no slab at all.
    pub(crate) sheaf: [AtomicUsize; SHEAF_CAPACITY],
    stats: [AtomicU64; NR_SLAB_STATS],
    /// Only the slot's CPU, with interrupts off (see [`CpuSlot`]).
    slot: CpuSlot,
}

impl KmemCacheCpu {
    pub(crate) const fn new() -> Self {
        KmemCacheCpu {
            freelist: AtomicUsize::new(0),
            nr_free: AtomicU32::new(0),
            pfn: AtomicU32::new(NO_PAGE),
            start: AtomicUsize::new(0),
            sheaf_len: AtomicU32::new(0),
            sheaf: [const { AtomicUsize::new(0) }; SHEAF_CAPACITY],
            stats: [const { AtomicU64::new(0) }; NR_SLAB_STATS],
            slot: CpuSlot::new(),
        }
    }

    /// Makes this CPU the only one touching the slot until the guard drops: interrupts off (the
    /// caller runs on the slot's CPU), or on the host the slot's flag.
    #[inline(always)]
    pub(crate) fn enter(&self) -> CpuSlotGuard<'_> {
        self.slot.enter()
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

    pub(crate) fn sheaf_full(&self) -> bool {
        self.sheaf_len.load(Relaxed) as usize == SHEAF_CAPACITY
    }

    /// Is `addr` in the sheaf? (Slow-path double-free check.)
    pub(crate) fn sheaf_contains(&self, addr: usize) -> bool {
        let n = self.sheaf_len.load(Relaxed) as usize;
        self.sheaf[..n].iter().any(|o| o.load(Relaxed) == addr)
    }

    /// Pushes `addr` onto a sheaf that is not full.
    pub(crate) fn sheaf_push(&self, _g: &CpuSlotGuard<'_>, addr: usize) {
        let n = self.sheaf_len.load(Relaxed) as usize;
        self.sheaf[n].store(addr, Relaxed);
        self.sheaf_len.store(n as u32 + 1, Relaxed);
    }

    /// Takes the oldest `n` objects (all if fewer) out of the sheaf.
    pub(crate) fn sheaf_take_oldest(&self, _g: &CpuSlotGuard<'_>, n: usize) -> SheafBatch {
        let len = self.sheaf_len.load(Relaxed) as usize;
        let n = n.min(len);
        let mut b = SheafBatch { objs: [0; SHEAF_CAPACITY], n };
        for i in 0..n {
            b.objs[i] = self.sheaf[i].load(Relaxed);
        }
        for i in n..len {
            self.sheaf[i - n].store(self.sheaf[i].load(Relaxed), Relaxed);
        }
        self.sheaf_len.store((len - n) as u32, Relaxed);
        b
    }

    /// The active slab's pfn, if any.
    #[inline(always)]
    pub(crate) fn active(&self) -> Option<u32> {
        let pfn = self.pfn.load(Relaxed);
        (pfn != NO_PAGE).then_some(pfn)
    }
}

/// Objects taken out of a sheaf.
pub(crate) struct SheafBatch {
    objs: [usize; SHEAF_CAPACITY],
    n: usize,
}

impl SheafBatch {
    pub(crate) fn as_slice(&self) -> &[usize] {
        &self.objs[..self.n]
    }
}

impl<'p, P: PageProvider> KmemCache<'p, P> {
    /// The allocation fast path: pop the CPU's private list. `None` sends the caller to the slow
    /// path (empty list, or a free pointer leading outside the slab, which the slow path reports).
    #[inline(always)]
    pub(crate) fn alloc_fast(&self, cpu: CpuId) -> Option<NonNull<u8>> {
        let c = self.cpu_slab(cpu);
        let slot = c.enter();
        let n = c.sheaf_len.load(Relaxed) as usize;
        if n != 0 {
            // The most recently freed object (cache-hot), of whichever slab.
            let obj = c.sheaf[n.wrapping_sub(1) & (SHEAF_CAPACITY - 1)].load(Relaxed);
            c.sheaf_len.store(n as u32 - 1, Relaxed);
            c.stat(&slot, SlabStat::AllocFastpath);
            drop(slot);
            // SAFETY: sheaf objects are objects of this cache, inside the direct map (not 0).
            return Some(unsafe { NonNull::new_unchecked(self.ptr(obj)) });
        }
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

    /// The free fast path: `addr`, an object of slab `pfn` of this cache, goes into the CPU's
    /// sheaf. `false` sends the caller to the slow path (not an object start, a full sheaf, the
    /// object already on top of the sheaf or heading the private list or its slab's list: a
    /// double free, a debug cache).
    #[inline(always)]
    pub(crate) fn free_fast(&self, cpu: CpuId, pfn: u32, page: &Page, addr: usize) -> bool {
        // One load for debug caches and init_on_free (whose zeroing the slow path does).
        if self.fast_flags.load(Relaxed) & (FAST_DEBUG | FAST_INIT_ON_FREE) != 0
            || !self.is_object_start_nodebug(self.slab_start(pfn), addr)
            || self.freelist_head(page) == addr
        {
            return false;
        }
        let c = self.cpu_slab(cpu);
        let slot = c.enter();
        let n = c.sheaf_len.load(Relaxed) as usize;
        if n == SHEAF_CAPACITY
            || (n != 0 && c.sheaf[n.wrapping_sub(1) & (SHEAF_CAPACITY - 1)].load(Relaxed) == addr)
            || c.freelist.load(Relaxed) == addr
        {
            return false;
        }
        c.sheaf[n & (SHEAF_CAPACITY - 1)].store(addr, Relaxed);
        c.sheaf_len.store(n as u32 + 1, Relaxed);
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
        let mut released = Released::new();
        {
            let mut st = self.state.lock();
            let slot = c.enter();
            self.flush_sheaf(&mut st, c, &slot, SHEAF_CAPACITY, &mut released);
            if c.active().is_some() {
                c.stat(&slot, SlabStat::CpuslabFlush);
            }
            released.push(self.deactivate(&mut st, c, &slot));
        }
        released.release_all(self)
    }

    /// Counter `s` summed over every CPU.
    pub fn stat(&self, s: SlabStat) -> u64 {
        self.cpu_slab.iter().map(|c| c.stat_value(s)).sum()
    }
}
