//! `KmemCache`: one cache of equal-sized objects, its slabs and their free lists.
//!
//! A slab is one buddy block of `2^order` pages. Its head page descriptor holds:
//! - `state` = [`PageState::Slab`], `order` = the block order (set by the provider);
//! - `private` = address of the owning `KmemCache`;
//! - `freelist` = address of the first free object XOR the cache's random value (0 objects free =
//!   `random`), so descriptors do not show raw object addresses;
//! - `counters` = objects in use (low 16 bits) | objects in the slab (high 16 bits);
//! - `next`/`prev` = links of the partial/full/empty list the slab is on, as **pfns truncated to
//!   32 bits** ([`NO_PAGE`] = none; pfns above 2^32 - 1 (16 TiB) are refused when the slab is made).
//!
//! Each free object stores the next free object's address encoded as SLAB_FREELIST_HARDENED does:
//! `next ^ random ^ swab(address where it is stored)`.
//!
//! The cache keeps one active slab (SLUB's "cpu slab", on no list) from which the fast path pops
//! and to which it pushes, plus partial, full and empty lists. The active slab is a field of
//! [`CacheState`], shaped so a per-CPU array indexed by CPU id can replace it later. Empty slabs
//! beyond `min_partial` go back to the provider at once.

use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering::Relaxed};

use crate::addr::{DirectMap, Pfn};
use crate::gfp::GfpFlags;
use crate::page::{Page, PageProvider, PageState, NO_PAGE};
use crate::sync::IrqSpinLock;
use crate::AllocError;

use super::debug::{self, SlabDebugConfig, RED_ACTIVE, RED_INACTIVE};
use super::layout::CacheGeom;
use super::{Corruption, CorruptionKind, SlabError, SlabFlags};

/// A doubly linked list of slabs through `Page::next/prev` (pfns).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlabList {
    pub head: u32,
    pub len: u32,
}

impl SlabList {
    const EMPTY: SlabList = SlabList { head: NO_PAGE, len: 0 };
}

/// The active slab (Linux `kmem_cache_cpu`): one now; an array indexed by CPU id later.
pub(crate) struct CpuSlab<'p> {
    pub page: Option<&'p Page>,
    pub pfn: u32,
    /// Address of the slab's first byte.
    pub start: usize,
}

/// Everything guarded by the cache lock.
pub(crate) struct CacheState<'p> {
    pub cpu: CpuSlab<'p>,
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
    pub(crate) state: IrqSpinLock<CacheState<'p>>,
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
            state: IrqSpinLock::new(CacheState {
                cpu: CpuSlab { page: None, pfn: NO_PAGE, start: 0 },
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
    /// The size callers asked for.
    pub fn object_size(&self) -> usize {
        self.geom.object_size as usize
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
    pub fn live_objects(&self) -> u64 {
        let st = self.state.lock();
        st.inuse - st.quarantined
    }
    /// The last corruption found while allocating (poison/red zone of a free object, bad free
    /// pointer), and how many were found in total. Such objects are quarantined, never handed out.
    pub fn last_report(&self) -> (Option<Corruption>, u32) {
        (*self.last_report.lock(), self.reports.load(Relaxed))
    }

    fn record(&self, c: Corruption) {
        *self.last_report.lock() = Some(c);
        self.reports.fetch_add(1, Relaxed);
    }

    // ---- addresses and encoding ----

    /// A pointer with the direct map's provenance for address `addr`.
    #[inline]
    pub(crate) fn ptr(&self, addr: usize) -> *mut u8 {
        let base = self.dm.pfn_to_virt(Pfn(0));
        base.wrapping_add(addr.wrapping_sub(base as usize))
    }

    #[inline]
    pub(crate) fn slab_start(&self, pfn: u32) -> usize {
        self.dm.pfn_to_virt(Pfn(pfn as u64)) as usize
    }

    #[inline]
    fn encode_fp(&self, next: usize, stored_at: usize) -> usize {
        next ^ self.random ^ stored_at.swap_bytes()
    }

    /// Reads the decoded next-free pointer stored in free object `obj`.
    ///
    /// # Safety
    /// `obj` is a free object of a slab of this cache; the lock is held.
    #[inline]
    pub(crate) unsafe fn get_fp(&self, obj: usize) -> usize {
        let at = obj + self.geom.offset as usize;
        // SAFETY: the free pointer word is inside the slot of a free object we own.
        let raw = unsafe { self.ptr(at).cast::<usize>().read_unaligned() };
        self.encode_fp(raw, at)
    }

    /// # Safety
    /// As [`Self::get_fp`].
    #[inline]
    pub(crate) unsafe fn set_fp(&self, obj: usize, next: usize) {
        let at = obj + self.geom.offset as usize;
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

    /// Is `addr` the start of an object of the slab at `start` (exact, no division)?
    #[inline]
    pub(crate) fn object_index(&self, start: usize, addr: usize) -> Option<usize> {
        let off = addr.wrapping_sub(start).wrapping_sub(self.geom.red_left_pad as usize);
        if off >= self.geom.objects as usize * self.geom.size as usize {
            return None;
        }
        let idx = self.geom.slot_index(off);
        (idx * self.geom.size as usize == off).then_some(idx)
    }

    // ---- allocation ----

    /// Pops an object from the active slab; `None` if it has none.
    #[inline]
    fn pop(&self, st: &mut CacheState<'p>) -> Option<usize> {
        let page = st.cpu.page?;
        let obj = self.freelist_head(page);
        if obj == 0 {
            return None;
        }
        // SAFETY: `obj` is the head of the active slab's free list, a free object of this cache.
        let next = unsafe { self.get_fp(obj) };
        let start = st.cpu.start;
        if next != 0 && next.wrapping_sub(start) >= self.geom.slab_bytes() {
            // The stored pointer was overwritten: keep `obj`, lose the rest of the list rather
            // than follow a wild pointer. The lost objects stay counted in use (quarantined).
            let (inuse, objects) = Self::counters(page);
            let lost = objects - inuse - 1;
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
            self.set_freelist_head(page, 0);
            Self::set_inuse(page, objects);
            st.inuse += 1 + lost as u64;
            st.quarantined += lost as u64;
            return Some(obj);
        }
        self.set_freelist_head(page, next);
        let (inuse, _) = Self::counters(page);
        Self::set_inuse(page, inuse + 1);
        st.inuse += 1;
        Some(obj)
    }

    /// Finds a slab with free objects for the active slot: partial first, then empty.
    fn refill(&self, st: &mut CacheState<'p>) -> bool {
        self.deactivate(st);
        match self.list_pop(st, Which::Partial).or_else(|| self.list_pop(st, Which::Empty)) {
            Some((pfn, page)) => {
                self.activate(st, pfn, page);
                true
            }
            None => false,
        }
    }

    /// `kmem_cache_alloc`: an object of `object_size` bytes, aligned to `align()`.
    #[track_caller]
    pub fn alloc(&self, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        self.alloc_traced(gfp, self.geom.object_size, Location::caller())
    }

    /// `kmem_cache_zalloc`: as `alloc`, zeroed.
    #[track_caller]
    pub fn zalloc(&self, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        self.alloc_traced(gfp | GfpFlags::__GFP_ZERO, self.geom.object_size, Location::caller())
    }

    /// The allocation path. `orig` is the size the caller asked for (kmalloc red zone tail).
    #[inline]
    pub(crate) fn alloc_traced(
        &self,
        gfp: GfpFlags,
        orig: u32,
        loc: &'static Location<'static>,
    ) -> Result<NonNull<u8>, AllocError> {
        loop {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let obj = match self.pop(st) {
                Some(obj) => obj,
                None if self.refill(st) => continue,
                None => {
                    // No lock of ours while the provider works (it may shrink this very cache).
                    drop(guard);
                    let (pfn, page) = self.new_slab(gfp)?;
                    let mut st = self.state.lock();
                    self.add_slab(&mut st, pfn, page);
                    continue;
                }
            };
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
            if gfp.contains(GfpFlags::__GFP_ZERO) {
                // SAFETY: the first `orig` bytes are the caller's part of the object.
                unsafe { p.write_bytes(0, orig as usize) };
            }
            // SAFETY: objects are inside the direct map, never at address 0.
            return Ok(unsafe { NonNull::new_unchecked(p) });
        }
    }

    // ---- free ----

    /// `kmem_cache_free`. Refuses (state unchanged) pointers this cache does not own, interior
    /// pointers, double frees, and (with debug flags) objects whose red zones were overwritten.
    #[track_caller]
    pub fn free(&self, obj: NonNull<u8>) -> Result<(), SlabError> {
        let addr = obj.as_ptr() as usize;
        let (pfn, page) = super::root::find_block(self.provider, &self.dm, addr)
            .filter(|(_, p)| p.state() == PageState::Slab)
            .ok_or(SlabError::NotOwned { addr })?;
        let owner = core::ptr::with_exposed_provenance::<KmemCache<'p, P>>(page.private.load(Relaxed));
        if !core::ptr::eq(owner, self) {
            // SAFETY: a `Slab` page's `private` is its live cache (cleared before release).
            let owner = unsafe { &*owner }.name;
            return Err(SlabError::WrongCache { cache: self.name, owner, addr });
        }
        self.free_in_slab(pfn.0 as u32, page, addr, false, Location::caller())
    }

    /// Checks that `addr` starts an object of slab `pfn`; returns the slab's start address.
    #[inline]
    pub(crate) fn check_object_start(&self, pfn: u32, addr: usize) -> Result<usize, SlabError> {
        let start = self.slab_start(pfn);
        if self.object_index(start, addr).is_none() {
            let off = addr.wrapping_sub(start);
            let idx = self.geom.slot_index(off).min(self.geom.objects as usize - 1);
            let object = start + idx * self.geom.size as usize + self.geom.red_left_pad as usize;
            return Err(SlabError::Interior { cache: self.name, addr, object });
        }
        Ok(start)
    }

    /// Is `addr` on the free list of the slab starting at `start` (whose head is `head`)? Walks
    /// at most the slab's free-object count; stops at a corrupted link.
    fn on_freelist(&self, start: usize, page: &Page, head: usize, addr: usize) -> bool {
        let (inuse, objects) = Self::counters(page);
        let mut cur = head;
        for _ in 0..objects - inuse {
            if cur == 0 || self.object_index(start, cur).is_none() {
                return false;
            }
            if cur == addr {
                return true;
            }
            // SAFETY: `cur` is a free object of this slab (checked just above); the caller holds
            // the cache lock.
            cur = unsafe { self.get_fp(cur) };
        }
        false
    }

    /// Frees `addr` into its slab (`page` is a `Slab` head owned by this cache).
    #[inline]
    pub(crate) fn free_in_slab(
        &self,
        pfn: u32,
        page: &'p Page,
        addr: usize,
        zero: bool,
        loc: &'static Location<'static>,
    ) -> Result<(), SlabError> {
        let start = self.check_object_start(pfn, addr)?;
        let mut released = None;
        {
            let mut guard = self.state.lock();
            // One deref of the guard for the whole critical section.
            let st = &mut *guard;
            let head = self.freelist_head(page);
            // Double free, as SLUB: the object being the slab's free-list head is caught always
            // (one compare); debug caches walk the whole free list (`on_freelist`), so they catch
            // a double free anywhere on it. Plain caches do not walk: a double free deeper in the
            // list is not detected there (as on Linux without `slab_debug=F`).
            if head == addr {
                return Err(SlabError::DoubleFree { cache: self.name, addr });
            }
            let g = &self.geom;
            let p = self.ptr(addr);
            if g.flags.intersects(SlabFlags::DEBUG) && self.on_freelist(start, page, head, addr) {
                return Err(SlabError::DoubleFree { cache: self.name, addr });
            }
            if g.flags.intersects(SlabFlags::DEBUG) {
                if g.flags.intersects(SlabFlags::SLAB_RED_ZONE) {
                    // SAFETY: `addr` is an allocated object of this slab; the lock is held.
                    unsafe { debug::check_object(g, self.ctor.is_some(), self.name, p, RED_ACTIVE) }
                        .map_err(SlabError::Corrupted)?;
                }
            }
            if zero {
                // kfree_sensitive: clear what the caller could have written, after the checks.
                // SAFETY: the object is allocated and being freed by its owner; the lock is held.
                unsafe { p.write_bytes(0, debug::orig_size(g, p) as usize) };
                core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
            }
            if g.flags.intersects(SlabFlags::DEBUG) {
                // SAFETY: as above; from here on the object is free.
                unsafe {
                    debug::init_object(g, self.ctor.is_some(), p, RED_INACTIVE);
                    debug::set_track(g, p, true, loc);
                }
            }
            // SAFETY: the object is now free and ours; the lock is held.
            unsafe { self.set_fp(addr, head) };
            self.set_freelist_head(page, addr);
            let (inuse, objects) = Self::counters(page);
            Self::set_inuse(page, inuse - 1);
            st.inuse -= 1;
            if st.cpu.pfn != pfn {
                // Move between lists when the fill level changes class.
                let from = if inuse == objects { Which::Full } else { Which::Partial };
                let to = self.which_for(inuse - 1);
                if from != to {
                    self.list_remove(st, from, pfn, page);
                    if to == Which::Empty && st.empty.len >= self.min_partial {
                        self.forget_slab(st);
                        released = Some((pfn, page));
                    } else {
                        self.list_push(st, to, pfn, page);
                    }
                }
            }
        }
        if let Some((pfn, page)) = released {
            self.release(pfn, page);
        }
        Ok(())
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
