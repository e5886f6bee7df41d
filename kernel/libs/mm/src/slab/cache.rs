//! `KmemCache`: one cache of equal-sized objects, its slabs and their free lists.
//!
//! A slab is one buddy block of `2^order` pages. Its head page descriptor holds:
//! - `state` = [`PageState::Slab`](crate::page::PageState::Slab), `order` = the block order (set by the provider);
//! - `private` = address of the owning `KmemCache`;
//! - `freelist` = address of the first free object XOR the cache's random value (0 objects free =
//!   `random`), so descriptors do not show raw object addresses;
//! - `counters` = objects in use (low 16 bits) | objects in the slab (bits 16..31) | frozen (bit 31);
//! - `next`/`prev` = links of the partial/full/empty list the slab is on, as **pfns truncated to
//!   32 bits** ([`NO_PAGE`] = none; pfns above 2^32 - 1 (16 TiB) are refused when the slab is made).
//!
//! Each free object stores the next free object's address encoded as SLAB_FREELIST_HARDENED does:
//! `next ^ random ^ swab(address where it is stored)`.
//!
//! Each CPU has an active slab (SLUB's frozen "cpu slab", on no list; see [`super::percpu`]),
//! bit 31 of `counters` set while frozen. Under the cache lock: partial, full and empty lists.
//! Empty slabs beyond `min_partial` go back to the provider at once.

use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, Ordering::Relaxed};

use crate::addr::{DirectMap, Pfn};
use crate::auto_init::AutoInit;
use crate::buddy::CpuId;
use crate::fault_inject::FailSlab;
use crate::gfp::GfpFlags;
use crate::page::{Page, PageProvider, NO_PAGE};
use crate::sync::IrqSpinLock;
use crate::AllocError;

use super::debug::{self, SlabDebugConfig, RED_ACTIVE, RED_INACTIVE};
use super::layout::CacheGeom;
use super::percpu::{this_cpu, KmemCacheCpu, SlabStat, NR_CPUS};
use super::{Corruption, CorruptionKind, SlabFlags};

/// A doubly linked list of slabs through `Page::next/prev` (pfns).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlabList {
    pub head: u32,
    pub len: u32,
}

impl SlabList {
    const EMPTY: SlabList = SlabList { head: NO_PAGE, len: 0 };
}

/// Everything guarded by the cache lock.
pub(crate) struct CacheState {
    pub partial: SlabList,
    pub full: SlabList,
    pub empty: SlabList,
    pub nr_slabs: u64,
    pub total_objects: u64,
    pub inuse: u64,
    /// Objects taken out of use because a debug check found them corrupted at allocation.
    pub quarantined: u64,
}

/// Which list a slab is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Which {
    Partial,
    Full,
    Empty,
}

/// [`KmemCache::fast_flags`]: a `slab_debug` cache (`kmem_cache_debug()`).
pub(crate) const FAST_DEBUG: u8 = 1;
/// [`KmemCache::fast_flags`]: `init_on_alloc` applies to the cache.
pub(crate) const FAST_INIT_ON_ALLOC: u8 = 2;
/// [`KmemCache::fast_flags`]: `init_on_free` applies to the cache.
pub(crate) const FAST_INIT_ON_FREE: u8 = 4;
/// [`KmemCache::fast_flags`]: `failslab` is active: allocations take the slow path, which asks
/// it (Linux's `should_failslab_active` static key).
pub(crate) const FAST_FAILSLAB: u8 = 8;

/// A slab cache. Created by [`SlabAllocator::kmem_cache_create`](super::SlabAllocator), which
/// places it in an object of the bootstrap `kmem_cache` cache; all methods take `&self`.
pub struct KmemCache<'p, P: PageProvider> {
    pub(crate) name: &'static str,
    pub(crate) geom: CacheGeom,
    pub(crate) ctor: Option<fn(*mut u8)>,
    /// Added to every slab allocation (`__GFP_DMA` for DMA caches, `__GFP_RECLAIMABLE`).
    pub(crate) gfp: GfpFlags,
    pub(crate) random: usize,
    pub(crate) min_partial: u32,
    pub(crate) provider: &'p P,
    pub(crate) dm: DirectMap,
    /// The bootstrap cache: owns the list of caches and the debug configuration.
    pub(crate) root: *const KmemCache<'p, P>,
    /// Next cache in the root's list (guarded by the root's `registry` lock).
    pub(crate) next: AtomicPtr<KmemCache<'p, P>>,
    /// Root only: guards the `next` links of all caches.
    pub(crate) registry: IrqSpinLock<()>,
    /// Root only: the `slab_debug=` configuration.
    pub(crate) debug_cfg: SlabDebugConfig,
    pub(crate) state: IrqSpinLock<CacheState>,
    /// `kmem_cache_debug()`: any `slab_debug` flag; such caches never take the fast paths.
    pub(crate) debug: bool,
    /// `slab_want_init_on_alloc` / `slab_want_init_on_free` for this cache (the root's
    /// [`AutoInit`] switches, off for caches with a constructor or `SLAB_POISON`).
    pub(crate) init_on_alloc: AtomicBool,
    pub(crate) init_on_free: AtomicBool,
    /// What the fast paths must know, in the one byte they load: [`FAST_DEBUG`] (never take
    /// them), [`FAST_INIT_ON_ALLOC`] (zero what the allocation fast path hands out),
    /// [`FAST_INIT_ON_FREE`] (frees take the slow path, which zeroes).
    pub(crate) fast_flags: AtomicU8,
    /// Root only: `init_on_alloc=` / `init_on_free=`, copied into every cache.
    pub(crate) auto_init: AutoInit,
    /// Root only: the `failslab` fault-injection attributes.
    pub(crate) failslab: FailSlab,
    /// `/sys/kernel/slab/NAME/failslab` (`SLAB_FAILSLAB`): the cache fails under `failslab`'s
    /// `cache-filter`.
    pub(crate) failslab_mark: AtomicBool,
    /// The per-CPU slabs, indexed by [`CpuId`].
    pub(crate) cpu_slab: [KmemCacheCpu; NR_CPUS],
    /// Bytes of a slab covered by objects (`objects * size`), for the free fast path's
    /// object-start check.
    pub(crate) span: usize,
    /// `size - 1` when the slot size is a power of two (the object-start check is then a mask),
    /// else 0.
    pub(crate) pow2_mask: usize,
    /// The last debug report found at allocation or by the fast-path free-pointer check.
    pub(crate) last_report: IrqSpinLock<Option<Corruption>>,
    pub(crate) reports: AtomicU32,
}

// SAFETY: the raw pointers (`root`, `next`, the direct map) point at caches and slab memory that
// outlive the cache; all mutable state is behind `IrqSpinLock`s or atomics.
unsafe impl<P: PageProvider> Sync for KmemCache<'_, P> {}
// SAFETY: as above; nothing is tied to a thread.
unsafe impl<P: PageProvider> Send for KmemCache<'_, P> {}

impl<'p, P: PageProvider> KmemCache<'p, P> {
    pub(crate) fn new_value(
        name: &'static str,
        geom: CacheGeom,
        ctor: Option<fn(*mut u8)>,
        provider: &'p P,
        random: usize,
        root: *const KmemCache<'p, P>,
        debug_cfg: SlabDebugConfig,
    ) -> Self {
        let mut gfp = GfpFlags::empty();
        if geom.flags.contains(SlabFlags::SLAB_CACHE_DMA) {
            gfp |= GfpFlags::__GFP_DMA;
        }
        if geom.flags.contains(SlabFlags::SLAB_RECLAIM_ACCOUNT) {
            gfp |= GfpFlags::__GFP_RECLAIMABLE;
        }
        // Linux: min(MAX_PARTIAL, max(MIN_PARTIAL, ilog2(size) / 2)).
        let min_partial = (geom.size.ilog2() / 2).clamp(5, 10);
        KmemCache {
            name,
            geom,
            ctor,
            gfp,
            random,
            min_partial,
            provider,
            dm: provider.direct_map(),
            root,
            next: AtomicPtr::new(core::ptr::null_mut()),
            registry: IrqSpinLock::new(()),
            debug_cfg,
            debug: geom.flags.intersects(SlabFlags::DEBUG),
            init_on_alloc: AtomicBool::new(false),
            init_on_free: AtomicBool::new(false),
            fast_flags: AtomicU8::new(if geom.flags.intersects(SlabFlags::DEBUG) { FAST_DEBUG } else { 0 }),
            auto_init: AutoInit::new(),
            failslab: FailSlab::new(),
            failslab_mark: AtomicBool::new(geom.flags.contains(SlabFlags::SLAB_FAILSLAB)),
            span: geom.objects as usize * geom.size as usize,
            pow2_mask: if geom.size.is_power_of_two() { geom.size as usize - 1 } else { 0 },
            cpu_slab: [const { KmemCacheCpu::new() }; NR_CPUS],
            state: IrqSpinLock::new(CacheState {
                partial: SlabList::EMPTY,
                full: SlabList::EMPTY,
                empty: SlabList::EMPTY,
                nr_slabs: 0,
                total_objects: 0,
                inuse: 0,
                quarantined: 0,
            }),
            last_report: IrqSpinLock::new(None),
            reports: AtomicU32::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Copies the root's `init_on_alloc=` / `init_on_free=` into the cache, except where Linux
    /// leaves them off (`slab_want_init_on_alloc`/`_free`): a constructor's work would be undone,
    /// and `SLAB_POISON` already overwrites freed objects. With `failslab` active, allocations
    /// take the slow path (never for the bootstrap cache, which Linux exempts too).
    pub(crate) fn apply_root_config(&self, root: &KmemCache<'p, P>) {
        let a = &root.auto_init;
        let exempt = self.ctor.is_some() || self.geom.flags.contains(SlabFlags::SLAB_POISON);
        let (on_alloc, on_free) = (a.init_on_alloc() && !exempt, a.init_on_free() && !exempt);
        self.init_on_alloc.store(on_alloc, Relaxed);
        self.init_on_free.store(on_free, Relaxed);
        let mut fast = if self.debug { FAST_DEBUG } else { 0 };
        if on_alloc {
            fast |= FAST_INIT_ON_ALLOC;
        }
        if on_free {
            fast |= FAST_INIT_ON_FREE;
        }
        if root.failslab.attr.active() && !core::ptr::eq(self, root) {
            fast |= FAST_FAILSLAB;
        }
        self.fast_flags.store(fast, Relaxed);
    }

    /// The cache's `failslab` mark (`/sys/kernel/slab/NAME/failslab`), used by `failslab`'s
    /// `cache-filter`.
    pub fn failslab_mark(&self) -> bool {
        self.failslab_mark.load(Relaxed)
    }

    pub fn set_failslab_mark(&self, on: bool) {
        self.failslab_mark.store(on, Relaxed);
    }

    /// Linux's `should_failslab`: asked on the slow path while `failslab` is active.
    #[cold]
    #[inline(never)]
    fn should_failslab(&self, gfp: GfpFlags, loc: &'static Location<'static>) -> bool {
        // SAFETY: `root` is the bootstrap cache, which is never freed.
        let root = unsafe { &*self.root };
        root.failslab.should_fail(self.geom.object_size as usize, self.failslab_mark(), gfp, loc)
    }
    /// The size callers asked for.
    pub fn object_size(&self) -> usize {
        self.geom.object_size as usize
    }
    /// What `ksize` reports for an object of this cache: Linux 6.12's `slab_ksize()`
    /// (`mm/slab.h`): the object size when red zones or poisoning use the bytes after it, the
    /// object and its word padding (`inuse`) when a track record follows, else the whole slot,
    /// padding included (the free pointer, when it is stored after the object, is unused while
    /// the object is allocated).
    pub fn ksize(&self) -> usize {
        let g = &self.geom;
        if g.flags.intersects(SlabFlags::SLAB_RED_ZONE | SlabFlags::SLAB_POISON) {
            g.object_size as usize
        } else if g.flags.contains(SlabFlags::SLAB_STORE_USER) {
            g.inuse as usize
        } else {
            g.size as usize
        }
    }
    /// The slot stride, metadata included (`/proc/slabinfo`'s objsize).
    pub fn size(&self) -> usize {
        self.geom.size as usize
    }
    pub fn align(&self) -> usize {
        self.geom.align as usize
    }
    pub fn order(&self) -> u32 {
        self.geom.order
    }
    pub fn objects_per_slab(&self) -> u32 {
        self.geom.objects
    }
    pub fn flags(&self) -> SlabFlags {
        self.geom.flags
    }
    pub fn min_partial(&self) -> u32 {
        self.min_partial
    }
    /// Objects currently allocated (quarantined ones excluded).
    ///
    /// Objects parked in per-CPU sheaves and private lists are free, so they are not counted here (while
    /// `/proc/slabinfo` counts them active, as Linux does). Exact when no other CPU is using the
    /// cache at the same time.
    pub fn live_objects(&self) -> u64 {
        let st = self.state.lock();
        let parked: u64 =
            self.cpu_slab.iter().map(|c| (c.nr_free.load(Relaxed) + c.sheaf_len.load(Relaxed)) as u64).sum();
        st.inuse - st.quarantined - parked
    }
    /// Objects isolated by `slab_debug` (damaged; counted in use, never handed out again).
    pub fn quarantined(&self) -> u64 {
        self.state.lock().quarantined
    }

    /// The last corruption found while allocating (poison/red zone of a free object, bad free
    /// pointer), and how many were found in total. Such objects are quarantined, never handed out.
    pub fn last_report(&self) -> (Option<Corruption>, u32) {
        (*self.last_report.lock(), self.reports.load(Relaxed))
    }

    /// CPU `cpu`'s slot.
    #[inline(always)]
    pub(crate) fn cpu_slab(&self, cpu: CpuId) -> &KmemCacheCpu {
        // A `CpuId` is below `NR_CPUS` by construction (`CpuId::new`), so the mask changes
        // nothing; it lets the compiler drop the bounds check (NR_CPUS is a power of two).
        &self.cpu_slab[cpu.index() & (NR_CPUS - 1)]
    }

    pub(crate) fn record(&self, c: Corruption) {
        *self.last_report.lock() = Some(c);
        self.reports.fetch_add(1, Relaxed);
        super::debug::report_corruption(&c);
    }

    // ---- addresses and encoding ----

    /// A pointer with the direct map's provenance for address `addr`.
    #[inline]
    pub(crate) fn ptr(&self, addr: usize) -> *mut u8 {
        let base = self.dm.pfn_to_virt(Pfn(0));
        base.wrapping_add(addr.wrapping_sub(base as usize))
    }

    /// The direct map's address of physical 0.
    #[inline(always)]
    pub(crate) fn dm_base(&self) -> usize {
        self.dm.pfn_to_virt(Pfn(0)) as usize
    }

    #[inline(always)]
    pub(crate) fn slab_start(&self, pfn: u32) -> usize {
        self.dm.pfn_to_virt(Pfn(pfn as u64)) as usize
    }

    #[inline(always)]
    fn encode_fp(&self, next: usize, stored_at: usize) -> usize {
        next ^ self.random ^ stored_at.swap_bytes()
    }

    /// Reads the decoded next-free pointer stored in free object `obj`.
    ///
    /// # Safety
    /// `obj` is a free object of a slab of this cache; the lock is held.
    #[inline]
    pub(crate) unsafe fn get_fp(&self, obj: usize) -> usize {
        let at = obj.wrapping_add(self.geom.offset as usize);
        // SAFETY: the free pointer word is inside the slot of a free object we own.
        let raw = unsafe { self.ptr(at).cast::<usize>().read_unaligned() };
        self.encode_fp(raw, at)
    }

    /// # Safety
    /// As [`Self::get_fp`].
    #[inline]
    pub(crate) unsafe fn set_fp(&self, obj: usize, next: usize) {
        let at = obj.wrapping_add(self.geom.offset as usize);
        // SAFETY: as in `get_fp`.
        unsafe { self.ptr(at).cast::<usize>().write_unaligned(self.encode_fp(next, at)) }
    }

    #[inline]
    pub(crate) fn freelist_head(&self, page: &Page) -> usize {
        page.freelist.load(Relaxed) ^ self.random
    }

    #[inline]
    pub(crate) fn set_freelist_head(&self, page: &Page, head: usize) {
        page.freelist.store(head ^ self.random, Relaxed)
    }

    /// [`Self::object_index`] for caches without red zones (no left pad: only `SLAB_RED_ZONE`
    /// adds one, and such debug caches never take the fast paths): a mask for power-of-two
    /// slots, else the reciprocal multiply.
    #[inline(always)]
    pub(crate) fn is_object_start_nodebug(&self, start: usize, addr: usize) -> bool {
        let off = addr.wrapping_sub(start);
        if off >= self.span {
            return false;
        }
        if self.pow2_mask != 0 {
            return off & self.pow2_mask == 0;
        }
        self.geom.slot_index(off).wrapping_mul(self.geom.size as usize) == off
    }

    /// Is `addr` the start of an object of the slab at `start` (exact, no division)?
    #[inline(always)]
    pub(crate) fn object_index(&self, start: usize, addr: usize) -> Option<usize> {
        let off = addr.wrapping_sub(start).wrapping_sub(self.geom.red_left_pad as usize);
        if off >= (self.geom.objects as usize).wrapping_mul(self.geom.size as usize) {
            return None;
        }
        let idx = self.geom.slot_index(off);
        (idx.wrapping_mul(self.geom.size as usize) == off).then_some(idx)
    }

    // ---- allocation ----

    /// Pops an object from the private list of slot `c` (slow path: cache lock and slot held);
    /// `None` if it is empty. A corrupted free pointer is reported, the object is handed out and
    /// the rest of the list is quarantined (counted in use, never handed out) rather than
    /// followed.
    fn pop_cpu(&self, st: &mut CacheState, c: &KmemCacheCpu) -> Option<usize> {
        let obj = c.freelist.load(Relaxed);
        if obj == 0 {
            return None;
        }
        // SAFETY: `obj` heads the private list of the active slab: a free object of this cache,
        // and the slot is ours.
        let next = unsafe { self.get_fp(obj) };
        let nr_free = c.nr_free.load(Relaxed);
        if next != 0 && next.wrapping_sub(c.start.load(Relaxed)) >= self.geom.slab_bytes() {
            let at = obj + self.geom.offset as usize;
            self.record(Corruption {
                cache: self.name,
                kind: CorruptionKind::FreePointer,
                object: obj,
                bad_addr: at,
                offset: self.geom.offset as isize,
                found: next as u64,
                expected: 0,
                alloc_at: None,
                free_at: None,
            });
            // The lost objects are already counted in use (the slab is frozen).
            st.quarantined += nr_free.saturating_sub(1) as u64;
            c.freelist.store(0, Relaxed);
            c.nr_free.store(0, Relaxed);
            return Some(obj);
        }
        c.freelist.store(next, Relaxed);
        c.nr_free.store(nr_free - 1, Relaxed);
        Some(obj)
    }

    /// `kmem_cache_alloc`: an object of `object_size` bytes, aligned to `align()`.
    #[track_caller]
    #[inline]
    pub fn alloc(&self, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        self.alloc_traced(gfp, self.geom.object_size, Location::caller())
    }

    /// `kmem_cache_zalloc`: as `alloc`, zeroed.
    #[track_caller]
    pub fn zalloc(&self, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        self.alloc_traced(gfp | GfpFlags::__GFP_ZERO, self.geom.object_size, Location::caller())
    }

    /// The allocation path on the running CPU. `orig` is the size the caller asked for.
    #[inline(always)]
    pub(crate) fn alloc_traced(
        &self,
        gfp: GfpFlags,
        orig: u32,
        loc: &'static Location<'static>,
    ) -> Result<NonNull<u8>, AllocError> {
        self.alloc_on(this_cpu(), gfp, orig, loc)
    }

    /// The allocation path as CPU `cpu` (the running CPU; host tests name others).
    #[inline(always)]
    pub(crate) fn alloc_on(
        &self,
        cpu: CpuId,
        gfp: GfpFlags,
        orig: u32,
        loc: &'static Location<'static>,
    ) -> Result<NonNull<u8>, AllocError> {
        let fast = self.fast_flags.load(Relaxed);
        if fast & (FAST_DEBUG | FAST_FAILSLAB) == 0 {
            if let Some(p) = self.alloc_fast(cpu) {
                if gfp.contains(GfpFlags::__GFP_ZERO) || fast & FAST_INIT_ON_ALLOC != 0 {
                    // The whole object, not only the `orig` bytes asked for: `ksize` and an
                    // in-place `krealloc` hand the rest to the caller too (SLUB zeroes
                    // `object_size`).
                    // SAFETY: the fresh object is ours: `object_size` bytes from `p`.
                    unsafe { p.as_ptr().write_bytes(0, self.geom.object_size as usize) };
                }
                return Ok(p);
            }
        }
        self.alloc_slow(cpu, gfp, orig, loc)
    }

    /// The slow path: refill the CPU's private list under the cache lock (remote frees, partial,
    /// empty or new slab), then for debug caches check and initialise the object.
    #[inline(never)]
    fn alloc_slow(
        &self,
        cpu: CpuId,
        gfp: GfpFlags,
        orig: u32,
        loc: &'static Location<'static>,
    ) -> Result<NonNull<u8>, AllocError> {
        if self.fast_flags.load(Relaxed) & FAST_FAILSLAB != 0 && self.should_failslab(gfp, loc) {
            return Err(AllocError::FaultInjected { by: "failslab" });
        }
        let c = self.cpu_slab(cpu);
        loop {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let slot = c.enter();
            let obj = match self.pop_cpu(st, c) {
                Some(obj) => obj,
                None if self.refill(st, c, &slot) => continue,
                None => {
                    // No lock of ours while the provider works (it may shrink this very cache).
                    drop(slot);
                    drop(guard);
                    let (pfn, page) = self.new_slab(gfp)?;
                    let mut st = self.state.lock();
                    self.add_slab(&mut st, pfn, page);
                    let slot = c.enter();
                    c.stat(&slot, SlabStat::AllocSlab);
                    continue;
                }
            };
            c.stat(&slot, SlabStat::AllocSlowpath);
            drop(slot);
            drop(guard);
            // The object is ours now: debug checks and initialisation need no lock.
            let p = self.ptr(obj);
            let g = &self.geom;
            if g.flags.intersects(SlabFlags::SLAB_RED_ZONE | SlabFlags::SLAB_POISON) {
                // SAFETY: `obj` was just taken off the free list; its slot is ours.
                if let Err(c) =
                    unsafe { debug::check_object(g, self.ctor.is_some(), self.name, p, RED_INACTIVE) }
                {
                    // Never hand out a damaged object: report it and keep it out of use.
                    self.record(c);
                    self.state.lock().quarantined += 1;
                    continue;
                }
                // SAFETY: as above.
                unsafe {
                    debug::set_orig_size(g, p, orig);
                    debug::init_object(g, self.ctor.is_some(), p, RED_ACTIVE);
                }
            }
            if g.track_offset != 0 {
                // SAFETY: as above.
                unsafe { debug::set_track(g, p, false, loc) };
            }
            if gfp.contains(GfpFlags::__GFP_ZERO) || self.init_on_alloc.load(Relaxed) {
                // The whole object, except that a kmalloc red zone (tracked requested size)
                // keeps its pattern beyond `orig`, as SLUB's `slab_post_alloc_hook`.
                let len = if g.orig_size_offset != 0 { orig } else { g.object_size };
                // SAFETY: the object is ours; `len <= object_size`.
                unsafe { p.write_bytes(0, len as usize) };
            }
            // SAFETY: objects are inside the direct map, never at address 0.
            return Ok(unsafe { NonNull::new_unchecked(p) });
        }
    }
}

impl<P: PageProvider> KmemCache<'_, P> {
    /// The bytes of allocated object `addr` its owner may use: the kmalloc requested size when
    /// tracked (kmalloc + red zone), else the object size.
    pub(crate) fn user_size(&self, addr: usize) -> usize {
        let _st = self.state.lock();
        // SAFETY: `addr` is an allocated object of this cache (checked by the caller).
        unsafe { debug::orig_size(&self.geom, self.ptr(addr)) as usize }
    }

    /// krealloc in place: records the new requested size and red-zones the tail beyond it.
    pub(crate) fn resize_in_place(&self, addr: usize, new: usize) {
        if self.geom.orig_size_offset == 0 {
            return;
        }
        let _st = self.state.lock();
        let p = self.ptr(addr);
        // SAFETY: `addr` is an allocated object of this cache and `new <= object_size`; the
        // metadata is only touched under the lock.
        unsafe {
            debug::set_orig_size(&self.geom, p, new as u32);
            p.add(new).write_bytes(RED_ACTIVE, self.geom.object_size as usize - new);
        }
    }
}
