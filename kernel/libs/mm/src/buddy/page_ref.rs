//! Page reference counts, compound pages, `split_page` and the exact-size allocation
//! (Linux 6.12 `include/linux/mm.h`, `include/linux/page_ref.h`, `mm/swap.c` `__folio_put`,
//! `mm/page_alloc.c` `__free_pages`, `split_page`, `make_alloc_exact`).
//!
//! ## Reference counts without a new field
//! The descriptor stays 32 bytes: the reference count of an `Allocated` block lives in the
//! head's `counters` word, **biased by one** (`counters == refcount - 1`). A block comes off the
//! free lists with `counters == 0`, i.e. refcount 1 as Linux's `set_page_refcounted` makes it,
//! so the allocation fast path stores nothing; every path that gives a page back to the
//! allocator leaves `counters` at 0 (the free paths only free at 0, the slab zeroes it before
//! it frees a slab). Free pages read as refcount 0 ([`Node::page_ref_count`]), pages owned by
//! another layer (slab, kmalloc-large, vmalloc, page tables) and reserved pages as 1, which is
//! what they hold on Linux.
//!
//! `put_page_testzero` is a compare-and-swap loop on `counters`: above 0 it takes one reference
//! off; at 0 it reports "last reference" without writing (the caller then frees, claiming the
//! block through its state, which two CPUs cannot both win).
//!
//! ## Compound pages
//! `__GFP_COMP` (order > 0) tags every tail descriptor with its head (`private = head << 1 | 1`,
//! [`crate::page::prep_compound_page`], which slab and kmalloc-large already use), so
//! [`Node::compound_head`] is Linux's `compound_head()` and a head is compound when its first
//! tail names it (Linux keeps `PG_head`; here the tag of `head + 1` is that bit). The order is the
//! head's `order`, as Linux's `folio_order`. References taken through a tail count on the head.
//! Freeing a compound block clears the tags (Linux's `free_tail_page_prepare`).

use core::sync::atomic::Ordering::Relaxed;

use super::{CpuId, Node};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::page::{Page, PageState, MAX_PAGE_ORDER};
use crate::AllocError;

/// Why a reference-count, split or exact-free request was refused. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRefError {
    /// The frame is outside the RAM this allocator manages.
    NotManaged { pfn: Pfn },
    /// The page is free (refcount 0): taking or dropping a reference is a use after free
    /// (Linux: `VM_BUG_ON_FOLIO(folio_ref_zero_or_close_to_overflow)`, refcount underflow).
    Free { pfn: Pfn },
    /// The page is not a page-allocator block: it is reserved or owned by another layer
    /// (slab, kmalloc-large, vmalloc, page tables), whose owner frees it.
    NotRefcounted { pfn: Pfn, state: PageState },
    /// The page lies inside a block without being its head and the block is not compound.
    NotBlockHead { pfn: Pfn },
    /// The reference count would overflow (Linux: `folio_ref_zero_or_close_to_overflow`).
    Overflow { pfn: Pfn },
    /// `split_page` of a compound block (Linux: `VM_BUG_ON_PAGE(PageCompound(page))`).
    Compound { pfn: Pfn, order: u32 },
    /// `split_page` with an order other than the block's.
    WrongOrder { pfn: Pfn, allocated: u32, given: u32 },
}

impl core::fmt::Display for PageRefError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use PageRefError::*;
        match *self {
            NotManaged { pfn } => write!(f, "{:#x} is outside managed RAM", pfn.phys().as_u64()),
            Free { pfn } => {
                write!(f, "{:#x} is a free page (refcount 0): use after free", pfn.phys().as_u64())
            }
            NotRefcounted { pfn, state } => {
                write!(f, "{:#x} is a {} page, not a page-allocator block", pfn.phys().as_u64(), state.name())
            }
            NotBlockHead { pfn } => {
                write!(f, "{:#x} is inside a non-compound block, not its first page", pfn.phys().as_u64())
            }
            Overflow { pfn } => write!(f, "{:#x}: reference count overflow", pfn.phys().as_u64()),
            Compound { pfn, order } => {
                write!(f, "{:#x} is a compound order-{order} page: it cannot be split", pfn.phys().as_u64())
            }
            WrongOrder { pfn, allocated, given } => {
                write!(f, "{:#x} is an order-{allocated} block, not order {given}", pfn.phys().as_u64())
            }
        }
    }
}

/// Linux's `get_order(size)`: the smallest order whose block holds `size` bytes (`size > 0`).
pub fn get_order(size: usize) -> u32 {
    let pages = size.div_ceil(PAGE_SIZE).max(1);
    pages.next_power_of_two().trailing_zeros()
}

/// Linux's `put_page_testzero` on the biased count: `true` if the caller held the last
/// reference (the count is left at "1", for the free path to claim), else one reference is
/// dropped.
#[inline]
fn put_page_testzero(page: &Page) -> bool {
    let mut c = page.counters.load(Relaxed);
    loop {
        if c == 0 {
            return true;
        }
        match page.counters.compare_exchange_weak(c, c - 1, Relaxed, Relaxed) {
            Ok(_) => return false,
            Err(now) => c = now,
        }
    }
}

impl Node {
    /// Linux's `compound_head()`: the head of the compound block `pfn` is a tail of, else `pfn`.
    /// A tail tag counts only if the head it names is an in-use block that covers `pfn`.
    pub fn compound_head(&self, pfn: Pfn) -> Pfn {
        let Some(page) = self.page(pfn) else { return pfn };
        let Some(head) = page.compound_head() else { return pfn };
        match self.page(head) {
            Some(hp) if hp.state().is_in_use() && head.0 < pfn.0 && pfn.0 - head.0 < 1 << hp.order() => head,
            _ => pfn,
        }
    }

    /// Linux's `PageHead`: `pfn` heads a compound block (its first tail names it).
    pub fn is_compound_head(&self, pfn: Pfn) -> bool {
        match self.page(pfn) {
            Some(p) if p.order() > 0 && p.state().is_in_use() => {
                self.page(pfn.add(1)).and_then(|t| t.compound_head()) == Some(pfn)
            }
            _ => false,
        }
    }

    /// Linux's `page_ref_count`: the page's own count. An allocated head: its references; a
    /// free page or a tail: 0 (tails count on their head, as Linux's); a reserved page or one
    /// owned by another layer: 1.
    pub fn page_ref_count(&self, pfn: Pfn) -> u32 {
        let Some(page) = self.page(pfn) else { return 0 };
        match page.state() {
            PageState::Allocated => page.counters.load(Relaxed) + 1,
            PageState::Buddy | PageState::FreeTail | PageState::PcpFree => 0,
            _ => 1,
        }
    }

    /// Linux's `folio_ref_count(page_folio(page))`: the count of the block `pfn` belongs to
    /// (through its compound head).
    pub fn folio_ref_count(&self, pfn: Pfn) -> u32 {
        self.page_ref_count(self.compound_head(pfn))
    }

    /// The `Allocated` head that a reference on `pfn` counts on (Linux's `page_folio`).
    fn ref_head(&self, pfn: Pfn) -> Result<(Pfn, &Page), PageRefError> {
        let head = self.compound_head(pfn);
        let page = self.page(head).ok_or(PageRefError::NotManaged { pfn })?;
        match page.state() {
            PageState::Allocated => Ok((head, page)),
            PageState::Buddy | PageState::PcpFree => Err(PageRefError::Free { pfn }),
            PageState::FreeTail => {
                // A tail of an allocated non-compound block, or a page inside a free block.
                if self.classify_tail_is_free(pfn) {
                    Err(PageRefError::Free { pfn })
                } else {
                    Err(PageRefError::NotBlockHead { pfn })
                }
            }
            state => Err(PageRefError::NotRefcounted { pfn, state }),
        }
    }

    /// Is the `FreeTail` page `pfn` inside a free block (as opposed to an allocated one)?
    fn classify_tail_is_free(&self, pfn: Pfn) -> bool {
        for o in 1..=MAX_PAGE_ORDER {
            let head = Pfn(pfn.0 & !((1u64 << o) - 1));
            let Some(hp) = self.page(head) else { continue };
            if pfn.0 - head.0 >= 1u64 << hp.order() {
                continue;
            }
            match hp.state() {
                PageState::Buddy | PageState::PcpFree => return true,
                PageState::Reserved | PageState::FreeTail => {}
                _ => return false,
            }
        }
        false
    }

    /// Linux's `get_page`: one more reference on the block `pfn` belongs to (its compound head;
    /// a non-compound block's first page). The caller must already hold one.
    pub fn get_page(&self, pfn: Pfn) -> Result<(), PageRefError> {
        let (head, page) = self.ref_head(pfn)?;
        let mut c = page.counters.load(Relaxed);
        loop {
            // Linux's refcount is an `int`: a count at INT_MAX is an overflow.
            if c >= i32::MAX as u32 - 1 {
                return Err(PageRefError::Overflow { pfn: head });
            }
            match page.counters.compare_exchange_weak(c, c + 1, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => c = now,
            }
        }
    }

    /// Linux's `put_page` (`folio_put`): drops a reference; the last one frees the block
    /// (`__folio_put` -> `free_unref_page(page, folio_order(folio))`): a compound block at its
    /// order, a non-compound page at order 0. Returns whether the block was freed.
    ///
    /// Deviation: Linux's last `put_page` of a *non-compound* block of order > 0 frees only its
    /// first page and leaks the rest (its `__free_pages` comment warns of it); here the whole
    /// block is freed, at the order recorded in its head.
    pub fn put_page(&self, cpu: CpuId, pfn: Pfn) -> Result<bool, PageRefError> {
        let (head, page) = self.ref_head(pfn)?;
        if !put_page_testzero(page) {
            return Ok(false);
        }
        let order = page.order();
        self.free_pages_cpu(cpu, head, order).map_err(|_| PageRefError::Free { pfn })?;
        Ok(true)
    }

    /// The part of Linux 6.12's `__free_pages` after `put_page_testzero` found other
    /// references: a compound block is left to them; of a non-compound block only the first
    /// page stays (theirs, now order 0) and the rest is freed, as halves of decreasing order
    /// (`while (order-- > 0) free_unref_page(page + (1 << order), order)`). Called by the free
    /// paths for an `Allocated` head of `order` whose count is above 1.
    #[cold]
    #[inline(never)]
    pub(super) fn free_pages_referenced(
        &self,
        cpu: CpuId,
        pfn: Pfn,
        order: u32,
    ) -> Result<(), crate::page::FreePagesError> {
        let head = self.is_compound_head(pfn);
        let idx = self.mem_map.pfn_to_index(pfn).expect("checked by the caller");
        let page = self.desc(idx);
        if put_page_testzero(page) {
            // The other holders dropped theirs meanwhile: ours is the last reference.
            return self.free_pages_cpu(cpu, pfn, order);
        }
        if head || order == 0 {
            return Ok(());
        }
        page.set_order(0);
        for o in (0..order).rev() {
            let half = pfn.add(1 << o);
            let hp = self.page(half).expect("a block's pages have descriptors");
            hp.set_order(o);
            hp.set_state(PageState::Allocated);
            self.free_pages_cpu(cpu, half, o).expect("a half of our own block");
        }
        Ok(())
    }

    /// Linux 6.12's `split_page`: the non-compound `Allocated` block of `order` at `pfn`
    /// becomes `2^order` order-0 pages, each with a reference count of 1 (the first keeps its
    /// own count), each to be freed on its own.
    pub fn split_page(&self, pfn: Pfn, order: u32) -> Result<(), PageRefError> {
        let page = self.page(pfn).ok_or(PageRefError::NotManaged { pfn })?;
        match page.state() {
            PageState::Allocated => {}
            PageState::Buddy | PageState::PcpFree | PageState::FreeTail => {
                // Inside an allocated block it is not its head; inside a free one it is free.
                return Err(if page.state() == PageState::FreeTail && !self.classify_tail_is_free(pfn) {
                    PageRefError::NotBlockHead { pfn }
                } else {
                    PageRefError::Free { pfn }
                });
            }
            state => return Err(PageRefError::NotRefcounted { pfn, state }),
        }
        if page.order() != order {
            return Err(PageRefError::WrongOrder { pfn, allocated: page.order(), given: order });
        }
        if self.is_compound_head(pfn) {
            return Err(PageRefError::Compound { pfn, order });
        }
        for i in 1..1u64 << order {
            let p = self.page(pfn.add(i)).expect("a block's pages have descriptors");
            p.set_order(0);
            p.counters.store(0, Relaxed); // set_page_refcounted
            p.set_state(PageState::Allocated);
        }
        page.set_order(0);
        Ok(())
    }

    /// Linux 6.12's `make_alloc_exact`: the block of `order` at `pfn`, just allocated without
    /// `__GFP_COMP`, keeps its first `DIV_ROUND_UP(size, PAGE_SIZE)` pages, each an order-0 page
    /// with refcount 1; the pages beyond go back to the buddy lists (`__free_pages_ok(page, 0,
    /// FPI_TO_TAIL)`: not through the per-CPU lists), merging as usual.
    pub fn make_alloc_exact(&self, pfn: Pfn, order: u32, size: usize) -> Result<(), PageRefError> {
        let nr = size.div_ceil(PAGE_SIZE) as u64;
        if nr == 0 || nr > 1 << order {
            return Err(PageRefError::WrongOrder { pfn, allocated: order, given: get_order(size) });
        }
        self.split_page(pfn, order)?;
        let zone = &self.zones[self.page(pfn).expect("split above").zone() as usize];
        let mut fa = zone.free_area.lock();
        for i in nr..1u64 << order {
            let tail = pfn.add(i);
            let idx = self.mem_map.pfn_to_index(tail).expect("a block's pages have descriptors");
            self.free_one_page(&mut fa, tail, idx, 0, zone.zone_type as u8);
        }
        zone.publish_free(&fa);
        Ok(())
    }

    /// Linux 6.12's `free_pages_exact` on pfns: frees the `PAGE_ALIGN(size) / PAGE_SIZE` pages
    /// at `pfn` one by one (`free_page` each). All are checked first (each an order-0
    /// `Allocated` page), so a refusal frees nothing.
    pub fn free_pages_exact(
        &self,
        cpu: CpuId,
        pfn: Pfn,
        size: usize,
    ) -> Result<(), crate::page::FreePagesError> {
        let nr = size.div_ceil(PAGE_SIZE) as u64;
        for i in 0..nr {
            let p = pfn.add(i);
            let page = self.page(p).ok_or(crate::page::FreePagesError::NotManaged { pfn: p })?;
            if page.state() != PageState::Allocated || page.order() != 0 {
                let zone = &self.zones[page.zone() as usize];
                let _fa = zone.free_area.lock();
                return Err(self.classify_bad_free(p, page, 0));
            }
        }
        for i in 0..nr {
            self.free_pages_cpu(cpu, pfn.add(i), 0)?;
        }
        Ok(())
    }
}

/// `size` 0 is refused by `alloc_pages_exact` (Linux's `get_order(0)` is far above
/// `MAX_PAGE_ORDER`, so Linux fails it too, with a warning).
pub fn exact_order(size: usize) -> Result<u32, AllocError> {
    if size == 0 {
        return Err(AllocError::Invalid("alloc_pages_exact: size 0"));
    }
    if size > PAGE_SIZE << MAX_PAGE_ORDER {
        return Err(AllocError::OrderTooLarge { order: get_order(size) });
    }
    Ok(get_order(size))
}
