//! Slab bookkeeping of a [`KmemCache`]: the partial/full/empty lists (linked through the page
//! descriptors' `next`/`prev` as 32-bit pfns), the active slab, and making, releasing and
//! shrinking slabs.

use core::sync::atomic::Ordering::Relaxed;

use crate::addr::Pfn;
use crate::gfp::GfpFlags;
use crate::page::{Page, PageProvider, PageState, NO_PAGE};
use crate::AllocError;

use super::cache::{CacheState, KmemCache, SlabList, Which};
use super::debug::{self, RED_INACTIVE};
use super::percpu::KmemCacheCpu;
use super::SlabFlags;

/// `counters` bit of a frozen slab (objects per slab fit 15 bits).
const FROZEN: u32 = 1 << 31;

impl<'p, P: PageProvider> KmemCache<'p, P> {
    // ---- slab lists ----

    pub(crate) fn page_of(&self, pfn: u32) -> &'p Page {
        self.provider.page(Pfn(pfn as u64)).expect("slab pfn is managed by the provider")
    }

    pub(crate) fn list_mut(st: &mut CacheState, which: Which) -> &mut SlabList {
        match which {
            Which::Partial => &mut st.partial,
            Which::Full => &mut st.full,
            Which::Empty => &mut st.empty,
        }
    }

    pub(crate) fn list_push(&self, st: &mut CacheState, which: Which, pfn: u32, page: &Page) {
        let list = Self::list_mut(st, which);
        page.prev.store(NO_PAGE, Relaxed);
        page.next.store(list.head, Relaxed);
        if list.head != NO_PAGE {
            self.page_of(list.head).prev.store(pfn, Relaxed);
        }
        list.head = pfn;
        list.len += 1;
    }

    pub(crate) fn list_remove(&self, st: &mut CacheState, which: Which, pfn: u32, page: &Page) {
        let (next, prev) = (page.next.load(Relaxed), page.prev.load(Relaxed));
        let list = Self::list_mut(st, which);
        if prev == NO_PAGE {
            debug_assert_eq!(list.head, pfn, "{}: slab {pfn:#x} is not on the {which:?} list", self.name);
            list.head = next;
        } else {
            self.page_of(prev).next.store(next, Relaxed);
        }
        if next != NO_PAGE {
            self.page_of(next).prev.store(prev, Relaxed);
        }
        list.len -= 1;
        page.next.store(NO_PAGE, Relaxed);
        page.prev.store(NO_PAGE, Relaxed);
    }

    pub(crate) fn list_pop(&self, st: &mut CacheState, which: Which) -> Option<(u32, &'p Page)> {
        let head = Self::list_mut(st, which).head;
        if head == NO_PAGE {
            return None;
        }
        let page = self.page_of(head);
        self.list_remove(st, which, head, page);
        Some((head, page))
    }

    /// `(inuse, objects)` of a slab.
    #[inline]
    pub(crate) fn counters(page: &Page) -> (u32, u32) {
        let c = page.counters.load(Relaxed);
        (c & 0xffff, (c >> 16) & 0x7fff)
    }

    #[inline]
    pub(crate) fn set_inuse(page: &Page, inuse: u32) {
        page.counters.store(inuse | (page.counters.load(Relaxed) & 0xffff_0000), Relaxed);
    }

    /// Is the slab some CPU's active slab (SLUB `frozen`)?
    #[inline]
    pub(crate) fn is_frozen(page: &Page) -> bool {
        page.counters.load(Relaxed) & FROZEN != 0
    }

    #[inline]
    pub(crate) fn set_frozen(page: &Page, frozen: bool) {
        let c = page.counters.load(Relaxed) & !FROZEN;
        page.counters.store(if frozen { c | FROZEN } else { c }, Relaxed);
    }

    pub(crate) fn which_for(&self, inuse: u32) -> Which {
        if inuse == 0 {
            Which::Empty
        } else if inuse == self.geom.objects {
            Which::Full
        } else {
            Which::Partial
        }
    }

    // ---- slab creation and release ----

    /// Allocates and initialises a slab: every object free (debug-initialised, constructed), in
    /// address order on the free list. On pressure with a blocking `gfp`, shrinks every cache and
    /// retries once. Takes no lock of this cache.
    pub(crate) fn new_slab(&self, gfp: GfpFlags) -> Result<(u32, &'p Page), AllocError> {
        let gfp = (gfp - GfpFlags::__GFP_ZERO) | self.gfp;
        let pfn = match self.provider.alloc_pages(gfp, self.geom.order) {
            Ok(pfn) => pfn,
            Err(AllocError::OutOfMemory { .. }) if gfp.allows_blocking() && !self.root.is_null() => {
                // SAFETY: `root` is the bootstrap cache, which is never freed.
                unsafe { &*self.root }.shrink_all();
                self.provider.alloc_pages(gfp, self.geom.order)?
            }
            Err(e) => return Err(e),
        };
        let Some(page) = self.provider.page(pfn).filter(|_| pfn.0 < NO_PAGE as u64) else {
            // Unusable frame for a slab (not described, or beyond 32-bit list links).
            let _ = self.provider.free_pages(pfn, self.geom.order);
            return Err(AllocError::OutOfMemory { order: self.geom.order });
        };
        let pfn32 = pfn.0 as u32;
        let start = self.slab_start(pfn32);
        let g = &self.geom;
        let debug_init = g.flags.intersects(SlabFlags::SLAB_RED_ZONE | SlabFlags::SLAB_POISON);
        for i in 0..g.objects as usize {
            let obj = start + i * g.size as usize + g.red_left_pad as usize;
            let next = if i + 1 < g.objects as usize { obj + g.size as usize } else { 0 };
            // SAFETY: the slab block was just allocated for us; every slot is inside it.
            unsafe {
                if debug_init {
                    debug::init_object(g, self.ctor.is_some(), self.ptr(obj), RED_INACTIVE);
                }
                debug::clear_track(g, self.ptr(obj));
                if let Some(ctor) = self.ctor {
                    ctor(self.ptr(obj));
                }
                self.set_fp(obj, next);
            }
        }
        self.set_freelist_head(page, start + g.red_left_pad as usize);
        page.counters.store(g.objects << 16, Relaxed);
        page.next.store(NO_PAGE, Relaxed);
        page.prev.store(NO_PAGE, Relaxed);
        // Exposed: the pointer is stored as an integer in the shared descriptor and recovered
        // with `with_exposed_provenance` on free.
        page.private.store((self as *const Self).expose_provenance(), Relaxed);
        crate::page::prep_compound_page(self.provider, pfn, g.order);
        page.set_state(PageState::Slab);
        Ok((pfn32, page))
    }

    /// Accounts a fresh slab; it goes on the empty list, from which `refill` takes it.
    pub(crate) fn add_slab(&self, st: &mut CacheState, pfn: u32, page: &'p Page) {
        st.nr_slabs += 1;
        st.total_objects += self.geom.objects as u64;
        self.list_push(st, Which::Empty, pfn, page);
    }

    /// Unaccounts a slab already off every list; the caller frees it with [`Self::release`]
    /// after dropping the lock.
    pub(crate) fn forget_slab(&self, st: &mut CacheState) {
        st.nr_slabs -= 1;
        st.total_objects -= self.geom.objects as u64;
    }

    /// Takes slab `pfn` off its list and unaccounts it (cache destruction, after every CPU slab
    /// was flushed).
    pub(crate) fn detach(&self, st: &mut CacheState, pfn: u32, page: &'p Page) {
        let (inuse, _) = Self::counters(page);
        self.list_remove(st, self.which_for(inuse), pfn, page);
        st.inuse -= inuse as u64;
        self.forget_slab(st);
    }

    /// Returns a detached slab to the provider.
    pub(crate) fn release(&self, pfn: u32, page: &Page) {
        page.counters.store(0, Relaxed);
        page.private.store(0, Relaxed);
        page.freelist.store(0, Relaxed);
        page.set_state(PageState::Allocated);
        crate::page::clear_compound_page(self.provider, Pfn(pfn as u64), self.geom.order);
        let r = self.provider.free_pages(Pfn(pfn as u64), self.geom.order);
        debug_assert!(r.is_ok(), "{}: provider refused a slab back: {r:?}", self.name);
    }

    // ---- shrink ----

    /// `kmem_cache_shrink`: flushes the running CPU's slab (other CPUs drain theirs through
    /// [`KmemCache::flush_cpu_slab`] on themselves), then returns every empty slab to the
    /// provider. Returns the number of pages freed.
    pub fn shrink(&self) -> usize {
        // SAFETY: the running CPU's own slot.
        let mut freed = unsafe { self.flush_cpu_slab(super::percpu::this_cpu()) };
        loop {
            let slab = {
                let mut st = self.state.lock();
                let s = self.list_pop(&mut st, Which::Empty);
                if s.is_some() {
                    self.forget_slab(&mut st);
                }
                s
            };
            match slab {
                Some((pfn, page)) => {
                    self.release(pfn, page);
                    freed += 1 << self.geom.order;
                }
                None => return freed,
            }
        }
    }

    /// Pages held by this cache's slabs.
    pub fn pages(&self) -> u64 {
        self.state.lock().nr_slabs << self.geom.order
    }

    /// Calls `f` on every slab: the CPUs' active slabs (with their slot), then every list.
    pub(crate) fn slab_pfns(
        &self,
        st: &CacheState,
        mut f: impl FnMut(u32, &'p Page, Option<Which>, Option<&KmemCacheCpu>),
    ) {
        for c in &self.cpu_slab {
            if let Some(pfn) = c.active() {
                f(pfn, self.page_of(pfn), None, Some(c));
            }
        }
        for which in [Which::Partial, Which::Full, Which::Empty] {
            let list = match which {
                Which::Partial => st.partial,
                Which::Full => st.full,
                Which::Empty => st.empty,
            };
            let mut cur = list.head;
            while cur != NO_PAGE {
                let p = self.page_of(cur);
                f(cur, p, Some(which), None);
                cur = p.next.load(Relaxed);
            }
        }
    }
}
