//! The error path of `free_pages` and the free-list consistency check.

use core::sync::atomic::Ordering::Relaxed;

use super::Node;
use crate::addr::Pfn;
use crate::page::{FreePagesError, Page, PageState, MAX_PAGE_ORDER, NO_PAGE, NR_PAGE_ORDERS};

impl Node {
    /// Says why freeing `pfn` with `order` is wrong, given that its descriptor is not an
    /// `Allocated` head of that order. Called under the zone lock; reads only.
    ///
    /// For a page inside a block (state `FreeTail`), the covering block is found by looking at
    /// the `2^o`-aligned frame below it for each order `o`: a head there whose order reaches
    /// `pfn` is the block holding it (blocks never overlap, so there is at most one).
    pub(super) fn classify_bad_free(&self, pfn: Pfn, page: &Page, order: u32) -> FreePagesError {
        match page.state() {
            PageState::Allocated => FreePagesError::WrongOrder { pfn, allocated: page.order(), given: order },
            PageState::Buddy => FreePagesError::DoubleFree { pfn, head: pfn, order: page.order() },
            // The head of a block on a per-CPU list: free as a block of its own.
            PageState::PcpFree => FreePagesError::DoubleFree { pfn, head: pfn, order: page.order() },
            PageState::Reserved => FreePagesError::Reserved { pfn },
            state @ (PageState::Slab
            | PageState::KmallocLarge
            | PageState::Vmalloc
            | PageState::PageTable) => FreePagesError::WrongOwner { pfn, state },
            PageState::FreeTail => {
                for o in 1..=MAX_PAGE_ORDER {
                    let head = Pfn(pfn.0 & !((1u64 << o) - 1));
                    let Some(hp) = self.mem_map.page(head) else { continue };
                    if pfn.0 - head.0 >= 1u64 << hp.order() {
                        continue;
                    }
                    match hp.state() {
                        PageState::Buddy | PageState::PcpFree => {
                            return FreePagesError::DoubleFree { pfn, head, order: hp.order() };
                        }
                        PageState::Allocated => {
                            return FreePagesError::NotBlockHead { pfn, head, order: hp.order() };
                        }
                        PageState::Reserved | PageState::FreeTail => {}
                        state => return FreePagesError::WrongOwner { pfn, state },
                    }
                }
                // No head covers it: only possible if a layer above rewrote descriptors it does
                // not own. Refuse rather than guess.
                FreePagesError::WrongOwner { pfn, state: PageState::FreeTail }
            }
        }
    }

    /// Checks every zone's free lists against the descriptors: links are consistent, every
    /// listed block is a `Buddy` head of the list's order in that zone, aligned, with `FreeTail`
    /// pages inside; the counters match the lists and the published free count; the per-CPU
    /// lists are consistent too. For tests and debugging (walks everything).
    pub fn check_free_lists(&self) -> Result<(), &'static str> {
        for (zi, zone) in self.zones.iter().enumerate() {
            let fa = zone.free_area.lock();
            let mut pages = 0;
            for o in 0..NR_PAGE_ORDERS {
                let mut n = 0;
                let mut prev = NO_PAGE;
                let mut idx = fa.head[o];
                while idx != NO_PAGE {
                    let p = self.mem_map.page_at(idx);
                    let pfn = self.mem_map.index_to_pfn(idx);
                    if p.prev.load(Relaxed) != prev {
                        return Err("free list: broken prev link");
                    }
                    if p.state() != PageState::Buddy || p.order() as usize != o {
                        return Err("free list: entry is not a Buddy head of the list's order");
                    }
                    if p.zone() as usize != zi {
                        return Err("free list: entry of another zone");
                    }
                    if pfn.0 & ((1 << o) - 1) != 0 {
                        return Err("free list: misaligned block");
                    }
                    for t in 1..(1u64 << o) {
                        match self.mem_map.page(pfn.add(t)) {
                            Some(tp) if tp.state() == PageState::FreeTail && tp.zone() as usize == zi => {}
                            _ => return Err("free list: block page is not a FreeTail of the zone"),
                        }
                    }
                    n += 1;
                    if n > self.mem_map.nr_pages() as u64 {
                        return Err("free list: cycle");
                    }
                    prev = idx;
                    idx = p.next.load(Relaxed);
                }
                if n != fa.nr_free[o] {
                    return Err("free list: nr_free does not match the list");
                }
                pages += n << o;
            }
            if pages != fa.free_pages {
                return Err("free list: free_pages does not match the lists");
            }
            if zone.free_pages() != fa.free_pages {
                return Err("free list: published NR_FREE_PAGES differs from the locked count");
            }
        }
        self.check_pcp_lists()
    }
}
