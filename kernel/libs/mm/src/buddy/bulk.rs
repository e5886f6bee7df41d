//! Bulk allocation of order-0 pages (Linux 6.12's `alloc_pages_bulk_noprof`, page-array form):
//! one per-CPU list hold for a whole batch instead of one per page. vmalloc fills its pages
//! with it (Linux's `vm_area_alloc_pages`).

use core::panic::Location;

use super::{gfp_zone, CpuId, Node};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::PageState;
use crate::AllocError;

impl Node {
    /// Linux 6.12's `alloc_pages_bulk_noprof(gfp, nid, NULL, nr_pages, NULL, page_array)` with
    /// `pages.len()` as `nr_pages`: fills the `None` entries of `pages` with order-0 pages and
    /// returns the number of entries populated from the start (pages already there included).
    /// Entries already `Some` are skipped, never replaced.
    ///
    /// As 6.12: the first zone of the zonelist above its **low** watermark plus `nr_pages` is
    /// used, in one stretch inside `cpu`'s lists (the running CPU's, interrupts off; 6.12's
    /// `pcp_spin_trylock` can fail on a remote drain, which here runs on the list's own CPU and
    /// so never overlaps), each page from the list, the list refilled from the buddy lists when
    /// empty (`__rmqueue_pcplist`); each page is prepared as an ordinary
    /// allocation (`prep_new_page`: `__GFP_ZERO`/`init_on_alloc` zero it). When that path cannot
    /// be used (one page wanted, no zone above the mark, the list and zone empty before the
    /// first page) one page comes from `single` (Linux's fallback to
    /// `__alloc_pages`: the kernel passes its allocation with reclaim). `fail_page_alloc`, when
    /// it fires (`prepare_alloc_pages`, seen as the call at `caller`), fails the whole call:
    /// nothing is allocated.
    pub fn alloc_pages_bulk_cpu_at(
        &self,
        cpu: CpuId,
        gfp: GfpFlags,
        pages: &mut [Option<Pfn>],
        caller: &'static Location<'static>,
        single: impl FnOnce(GfpFlags) -> Result<Pfn, AllocError>,
    ) -> usize {
        let nr_pages = pages.len();
        let mut nr_populated = pages.iter().take_while(|p| p.is_some()).count();
        if nr_populated == nr_pages {
            return nr_populated;
        }
        if nr_pages - nr_populated > 1 {
            match self.bulk_from_pcp(cpu, gfp, pages, &mut nr_populated, caller) {
                Bulk::Done => return nr_populated,
                Bulk::Failed => {}
            }
        }
        // failed: one page through the single-page allocator.
        if let Ok(pfn) = single(gfp) {
            pages[nr_populated] = Some(pfn);
            nr_populated += 1;
        }
        nr_populated
    }

    /// The batch part of [`Node::alloc_pages_bulk_cpu_at`]; `Failed` sends the caller to the
    /// single-page fallback with `*nr_populated` at the first empty entry.
    fn bulk_from_pcp(
        &self,
        cpu: CpuId,
        gfp: GfpFlags,
        pages: &mut [Option<Pfn>],
        nr_populated: &mut usize,
        caller: &'static Location<'static>,
    ) -> Bulk {
        let nr_pages = pages.len();
        let Ok(highest) = gfp_zone(gfp) else { return Bulk::Failed };
        // prepare_alloc_pages -> should_fail_alloc_page: `goto out`, nothing allocated.
        if self.fail_page_alloc.attr.active() && self.fail_page_alloc.should_fail(gfp, 0, caller) {
            return Bulk::Done;
        }
        // "Find an allowed local zone that meets the low watermark": ALLOC_WMARK_LOW, mark +
        // nr_pages, no reserve access whatever the flags.
        let Some(zone) = self.zones[..=highest].iter().rev().find(|z| {
            z.managed_pages() != 0
                && z.free_pages() > z.low_wmark_pages() + nr_pages as u64 + z.lowmem_reserve[highest]
        }) else {
            return Bulk::Failed;
        };
        let mut pcp = self.pcp_enter(zone, cpu);
        let init = self.auto_init.want_init_on_alloc(gfp);
        let mut nr_account = 0;
        while *nr_populated < nr_pages {
            if pages[*nr_populated].is_some() {
                *nr_populated += 1;
                continue;
            }
            let idx = match pcp.pop_head(&self.mem_map, 0) {
                Some(idx) => Some(idx),
                None if self.pcp_refill(zone, pcp.reborrow(), 0) != 0 => pcp.pop_head(&self.mem_map, 0),
                None => None,
            };
            let Some(idx) = idx else {
                if nr_account == 0 {
                    // "Try and allocate at least one page".
                    return Bulk::Failed;
                }
                break;
            };
            nr_account += 1;
            self.desc(idx).set_state(PageState::Allocated);
            let pfn = self.mem_map.index_to_pfn(idx);
            if init {
                prep_zero(self, pfn);
            }
            pages[*nr_populated] = Some(pfn);
            *nr_populated += 1;
        }
        Bulk::Done
    }
}

enum Bulk {
    Done,
    Failed,
}

/// `prep_new_page` -> `kernel_init_pages` for one page taken by the batch.
#[inline]
fn prep_zero(node: &Node, pfn: Pfn) {
    // SAFETY: the page was just taken off a free list inside the running CPU's lists: ours alone; the
    // direct map covers managed memory (init contract).
    unsafe { core::ptr::write_bytes(node.dm.pfn_to_virt(pfn), 0, PAGE_SIZE) };
}
