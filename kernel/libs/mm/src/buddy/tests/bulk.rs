//! `alloc_pages_bulk` as Linux 6.12's `alloc_pages_bulk_noprof` (mm/page_alloc.c).

use super::*;
use crate::testing::FilledWith;
use core::panic::Location;
use std::vec;

fn bulk(n: &Node, gfp: GfpFlags, pages: &mut [Option<Pfn>]) -> usize {
    n.alloc_pages_bulk_cpu_at(CpuId::BOOT, gfp, pages, Location::caller(), |g| n.alloc_pages(g, 0))
}

// mm/page_alloc.c, alloc_pages_bulk_noprof: only NULL entries are filled, the return value is
// the number of entries populated; one pcp hold serves the batch (the list is refilled from
// the buddy lists as needed, __rmqueue_pcplist).
#[test]
fn bulk_fills_only_empty_entries_and_counts_the_array() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    let keep = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    let mut pages = [None; 40];
    pages[0] = Some(keep);
    pages[7] = Some(keep);
    assert_eq!(bulk(n, GfpFlags::GFP_KERNEL, &mut pages), 40);
    assert_eq!(pages[0], Some(keep));
    assert_eq!(pages[7], Some(keep), "populated entries are never replaced");
    let mut seen: Vec<u64> = pages.iter().map(|p| p.unwrap().0).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 39, "38 distinct new pages + the one already there");
    for p in pages.iter().enumerate().filter(|(i, _)| *i != 0 && *i != 7) {
        let pfn = p.1.unwrap();
        assert_eq!(n.page(pfn).unwrap().state(), PageState::Allocated);
        assert_eq!(n.page_ref_count(pfn), 1);
        n.free_pages(pfn, 0).unwrap();
    }
    // A full array allocates nothing; an empty one returns 0.
    let mut full = [Some(keep); 3];
    assert_eq!(bulk(n, GfpFlags::GFP_KERNEL, &mut full), 3);
    assert_eq!(bulk(n, GfpFlags::GFP_KERNEL, &mut []), 0);
    n.free_pages(keep, 0).unwrap();
    assert_eq!(snapshot(n), before);
    n.check_free_lists().unwrap();
}

// alloc_pages_bulk_noprof: `if (nr_pages - nr_populated == 1) goto failed;` and no zone above
// low + nr_pages: one page from the single-page allocator.
#[test]
fn bulk_falls_back_to_one_single_allocation() {
    let m = TestMachine::standard();
    let n = &m.node;
    let mut calls = 0;
    let mut one = [None; 1];
    let got =
        n.alloc_pages_bulk_cpu_at(CpuId::BOOT, GfpFlags::GFP_KERNEL, &mut one, Location::caller(), |g| {
            calls += 1;
            n.alloc_pages(g, 0)
        });
    assert_eq!((got, calls), (1, 1));
    n.free_pages(one[0].unwrap(), 0).unwrap();
    // More pages than any zone has above its low watermark: the batch path is refused, one
    // page comes from the fallback.
    let total = n.totals().free_pages as usize;
    let mut many = vec![None; total];
    let mut calls = 0;
    let got =
        n.alloc_pages_bulk_cpu_at(CpuId::BOOT, GfpFlags::GFP_KERNEL, &mut many, Location::caller(), |g| {
            calls += 1;
            n.alloc_pages(g, 0)
        });
    assert_eq!((got, calls), (1, 1));
    n.free_pages(many[0].unwrap(), 0).unwrap();
}

// alloc_pages_bulk_noprof: zone_watermark_fast(zone, 0, low + nr_pages, ...) picks the zone;
// the batch stops where the list and the zone run dry, keeping what it got.
#[test]
#[cfg_attr(
    miri,
    ignore = "watermark policy over thousands of allocations (safe code); its alloc/free paths run under Miri in the proptest and high_orders_split_and_coalesce"
)]
fn bulk_uses_the_low_watermark_and_stops_when_the_zone_runs_dry() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    let z = n.zone(Normal);
    let low = z.low_wmark_pages() as usize;
    n.drain_pages();
    let free = z.free_pages() as usize;
    // Exactly at the mark: Normal is refused, the batch comes from DMA32 (the next zone).
    let nr = free - low;
    let mut pages = vec![None; nr];
    let got = bulk(n, GfpFlags::GFP_KERNEL, &mut pages);
    assert!(got >= 1);
    assert!(pages[..got].iter().all(|p| zone_of(&m, p.unwrap()) != Normal || got == 1));
    for p in pages[..got].iter() {
        n.free_pages(p.unwrap(), 0).unwrap();
    }
    // One below: Normal serves it all.
    n.drain_pages();
    assert_eq!(z.free_pages() as usize, free);
    let mut pages = vec![None; nr - 1];
    assert_eq!(bulk(n, GfpFlags::GFP_KERNEL, &mut pages), nr - 1);
    assert!(pages.iter().all(|p| zone_of(&m, p.unwrap()) == Normal));
    for p in &pages {
        n.free_pages(p.unwrap(), 0).unwrap();
    }
    assert_eq!(sorted(snapshot(n)), sorted(before), "same free blocks (list order aside)");
}

// prep_new_page: __GFP_ZERO zeroes each page of the batch; fail_page_alloc at 100% makes
// prepare_alloc_pages fail: nothing is allocated and the array count is returned.
#[test]
fn bulk_zeroes_and_obeys_fail_page_alloc() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    let mut dirty = [None; 16];
    assert_eq!(bulk(n, GfpFlags::GFP_KERNEL, &mut dirty), 16);
    for p in dirty.iter().rev() {
        // SAFETY: our page until freed.
        unsafe { core::ptr::write_bytes(n.direct_map().pfn_to_virt(p.unwrap()), 0xee, PAGE_SIZE) };
        n.free_pages(p.unwrap(), 0).unwrap();
    }
    let mut pages = [None; 16];
    assert_eq!(bulk(n, GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO, &mut pages), 16);
    for p in &pages {
        // SAFETY: our page until freed.
        let b = unsafe { core::slice::from_raw_parts(n.direct_map().pfn_to_virt(p.unwrap()), PAGE_SIZE) };
        assert!(b.filled_with(0));
        n.free_pages(p.unwrap(), 0).unwrap();
    }
    n.configure_fail_page_alloc(1, 100, 0, -1).unwrap();
    n.set_fail_page_alloc("min-order", "0").unwrap();
    n.set_fail_page_alloc("ignore-gfp-wait", "N").unwrap();
    let mut pages = [None; 16];
    pages[0] = Some(Pfn(1));
    assert_eq!(bulk(n, GfpFlags::GFP_KERNEL, &mut pages), 1, "only the entry already there");
    assert!(pages[1..].iter().all(|p| p.is_none()));
    n.configure_fail_page_alloc(1, 0, 0, -1).unwrap();
    assert_eq!(snapshot(n), before);
}
