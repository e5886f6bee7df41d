//! `kmem_cache_free`: the fast path's entry (see [`super::percpu`] for the push itself) and the
//! locked slow path with its double-free, interior-pointer and debug checks.

use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::Ordering::Relaxed;

use crate::buddy::CpuId;
use crate::page::{Page, PageProvider, PageState};

use super::cache::{CacheState, KmemCache, Which};
use super::debug::{self, RED_ACTIVE, RED_INACTIVE};
use super::percpu::{this_cpu, CpuSlotGuard, KmemCacheCpu, SlabStat, SHEAF_CAPACITY};
use super::{SlabError, SlabFlags};

impl<'p, P: PageProvider> KmemCache<'p, P> {
    /// `kmem_cache_free`. Refuses (state unchanged) pointers this cache does not own, interior
    /// pointers, double frees, and (with debug flags) objects whose red zones were overwritten.
    #[track_caller]
    #[inline]
    pub fn free(&self, obj: NonNull<u8>) -> Result<(), SlabError> {
        self.free_on(this_cpu(), obj, Location::caller())
    }

    /// `kmem_cache_free` as CPU `cpu`.
    #[inline(always)]
    pub(crate) fn free_on(
        &self,
        cpu: CpuId,
        obj: NonNull<u8>,
        loc: &'static Location<'static>,
    ) -> Result<(), SlabError> {
        let addr = obj.as_ptr() as usize;
        if let Some((pfn, page)) = super::root::find_block(self.provider, &self.dm, addr) {
            if page.state() == PageState::Slab
                && page.private.load(Relaxed) == self as *const Self as usize
                && self.free_fast(cpu, pfn.0 as u32, page, addr)
            {
                return Ok(());
            }
        }
        self.free_slow(cpu, addr, loc)
    }

    /// `kmem_cache_free`'s slow path and error reports.
    #[inline(never)]
    fn free_slow(&self, cpu: CpuId, addr: usize, loc: &'static Location<'static>) -> Result<(), SlabError> {
        let (pfn, page) = super::root::find_block(self.provider, &self.dm, addr)
            .filter(|(_, p)| p.state() == PageState::Slab)
            .ok_or(SlabError::NotOwned { addr })?;
        let owner = core::ptr::with_exposed_provenance::<KmemCache<'p, P>>(page.private.load(Relaxed));
        if !core::ptr::eq(owner, self) {
            // SAFETY: a `Slab` page's `private` is its live cache (cleared before release).
            let owner = unsafe { &*owner }.name;
            return Err(SlabError::WrongCache { cache: self.name, owner, addr });
        }
        self.free_in_slab(cpu, pfn.0 as u32, page, addr, false, loc)
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

    /// Whether object `addr` of slab `pfn` is known to be free, by kfree's double-free check
    /// (SLUB's cheap one): it heads the slab's own free list or this CPU's private list, or is
    /// on this CPU's sheaf. For `ksize` and `krealloc`; a walk of the whole lists made `ksize`
    /// cost 2,000 instructions instead of 74 (the bench's `part.ksize`). Other CPUs' private
    /// lists of a plain cache are theirs alone and are not looked at.
    pub(crate) fn known_free(&self, pfn: u32, page: &Page, addr: usize) -> bool {
        let _guard = self.state.lock();
        let c = self.cpu_slab(super::percpu::this_cpu());
        let _slot = c.enter();
        let private_head = if c.active() == Some(pfn) { c.freelist.load(Relaxed) } else { 0 };
        self.freelist_head(page) == addr || private_head == addr || c.sheaf_contains(addr)
    }

    /// Is `addr` on the free list starting at `head` of the slab at `start`, which holds at most
    /// `max` objects? Stops at a corrupted link.
    fn on_freelist(&self, start: usize, head: usize, max: u32, addr: usize) -> bool {
        let mut cur = head;
        for _ in 0..max {
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

    /// The slow path of `kmem_cache_free`/`kfree` for `addr` in slab `pfn` (`page` is a `Slab`
    /// head owned by this cache), under the cache lock: every free the fast path did not take
    /// (a full sheaf, a suspected double free, `kfree_sensitive`) and every free of a debug cache.
    pub(crate) fn free_in_slab(
        &self,
        cpu: CpuId,
        pfn: u32,
        page: &'p Page,
        addr: usize,
        zero: bool,
        loc: &'static Location<'static>,
    ) -> Result<(), SlabError> {
        let start = self.check_object_start(pfn, addr)?;
        let mut released = Released::new();
        {
            let mut guard = self.state.lock();
            // One deref of the guard for the whole critical section.
            let st = &mut *guard;
            let c = self.cpu_slab(cpu);
            let slot = c.enter();
            // Double free, as SLUB: the object being the head of the list it would go on is
            // caught always (one compare); a plain cache also checks this CPU's sheaf (at most
            // SHEAF_CAPACITY compares, slow path only). Debug caches walk every free list of the
            // slab (the private list of whichever CPU holds it too: in a debug cache those lists
            // are only touched under this lock), so they catch a double free anywhere. Plain
            // caches do not walk (as Linux without `slab_debug=F`).
            let private_head = if c.active() == Some(pfn) { c.freelist.load(Relaxed) } else { 0 };
            if private_head == addr
                || self.freelist_head(page) == addr
                || (!self.debug && c.sheaf_contains(addr))
            {
                return Err(SlabError::DoubleFree { cache: self.name, addr });
            }
            let g = &self.geom;
            let p = self.ptr(addr);
            if self.debug {
                let objects = g.objects;
                let mut free = self.on_freelist(start, self.freelist_head(page), objects, addr);
                if let Some(holder) = self.cpu_slab.iter().find(|h| h.active() == Some(pfn)) {
                    free |= self.on_freelist(start, holder.freelist.load(Relaxed), objects, addr);
                }
                if free {
                    return Err(SlabError::DoubleFree { cache: self.name, addr });
                }
                if g.flags.intersects(SlabFlags::SLAB_RED_ZONE) {
                    // SAFETY: `addr` is an allocated object of this slab; the lock is held.
                    unsafe { debug::check_object(g, self.ctor.is_some(), self.name, p, RED_ACTIVE) }
                        .map_err(SlabError::Corrupted)?;
                }
            }
            if zero || self.init_on_free.load(Relaxed) {
                // kfree_sensitive or init_on_free: clear what the caller could have written,
                // after the checks (a kmalloc red zone beyond the requested size stays).
                // SAFETY: the object is allocated and being freed by its owner; the lock is held.
                unsafe { p.write_bytes(0, debug::orig_size(g, p) as usize) };
                core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
            }
            c.stat(&slot, SlabStat::FreeSlowpath);
            if self.debug {
                // SAFETY: as above; from here on the object is free.
                unsafe {
                    debug::init_object(g, self.ctor.is_some(), p, RED_INACTIVE);
                    debug::set_track(g, p, true, loc);
                }
                released.push(self.free_to_slab(st, c, &slot, pfn, page, addr));
            } else {
                if c.sheaf_full() {
                    self.flush_sheaf(st, c, &slot, SHEAF_CAPACITY / 2, &mut released);
                }
                c.sheaf_push(&slot, addr);
            }
        }
        released.release_all(self);
        Ok(())
    }

    /// Gives the oldest `n` objects of slot `c`'s sheaf back to their slabs (`sheaf_flush`).
    pub(crate) fn flush_sheaf(
        &self,
        st: &mut CacheState,
        c: &KmemCacheCpu,
        slot: &CpuSlotGuard<'_>,
        n: usize,
        released: &mut Released<'p>,
    ) {
        let objs = c.sheaf_take_oldest(slot, n);
        for &addr in objs.as_slice() {
            // Sheaf objects passed the fast path's checks: a slab object of this cache.
            let (pfn, page) = super::root::find_slab(self.provider, self.dm_base(), addr)
                .expect("a sheaf holds objects of live slabs");
            released.push(self.free_to_slab(st, c, slot, pfn, page, addr));
        }
        if !objs.as_slice().is_empty() {
            c.stat(slot, SlabStat::SheafFlush);
        }
    }

    /// Puts free object `addr` back on a free list of its slab `pfn`: the private list when the
    /// slab is the CPU's active one, the slab's own list otherwise (a remote free when another
    /// CPU has it frozen), moving the slab between lists when its fill class changes. Returns a
    /// slab to release after the lock is dropped.
    fn free_to_slab(
        &self,
        st: &mut CacheState,
        c: &KmemCacheCpu,
        slot: &CpuSlotGuard<'_>,
        pfn: u32,
        page: &'p Page,
        addr: usize,
    ) -> Option<(u32, &'p Page)> {
        if c.active() == Some(pfn) {
            // The running CPU's active slab: onto its private list (counted at deactivation).
            // SAFETY: the object is free and ours; the slot is held.
            unsafe { self.set_fp(addr, c.freelist.load(Relaxed)) };
            c.freelist.store(addr, Relaxed);
            c.nr_free.store(c.nr_free.load(Relaxed) + 1, Relaxed);
            return None;
        }
        // SAFETY: the object is free and ours; the lock is held.
        unsafe { self.set_fp(addr, self.freelist_head(page)) };
        self.set_freelist_head(page, addr);
        let (inuse, objects) = Self::counters(page);
        Self::set_inuse(page, inuse - 1);
        st.inuse -= 1;
        if Self::is_frozen(page) {
            // Another CPU's active slab: a remote free onto the slab's own list, which that CPU
            // takes back under this lock (`refill`) or merges when it deactivates.
            c.stat(slot, SlabStat::FreeFrozen);
            return None;
        }
        let from = if inuse == objects { Which::Full } else { Which::Partial };
        let to = self.which_for(inuse - 1);
        if from == to {
            return None;
        }
        self.list_remove(st, from, pfn, page);
        c.stat(
            slot,
            if from == Which::Full { SlabStat::FreeAddPartial } else { SlabStat::FreeRemovePartial },
        );
        if to == Which::Empty && st.empty.len >= self.min_partial {
            self.forget_slab(st);
            c.stat(slot, SlabStat::FreeSlab);
            return Some((pfn, page));
        }
        self.list_push(st, to, pfn, page);
        None
    }
}

/// Slabs emptied under the lock, returned to the provider once it is dropped (at most one per
/// object of a sheaf flush).
pub(crate) struct Released<'p> {
    slabs: [Option<(u32, &'p Page)>; SHEAF_CAPACITY],
    n: usize,
}

impl<'p> Released<'p> {
    pub(crate) fn new() -> Self {
        Released { slabs: [None; SHEAF_CAPACITY], n: 0 }
    }

    pub(crate) fn push(&mut self, s: Option<(u32, &'p Page)>) {
        if let Some(s) = s {
            self.slabs[self.n] = Some(s);
            self.n += 1;
        }
    }

    pub(crate) fn release_all<P: PageProvider>(self, cache: &KmemCache<'p, P>) -> usize {
        for (pfn, page) in self.slabs.into_iter().flatten() {
            cache.release(pfn, page);
        }
        self.n << cache.geom.order
    }
}
