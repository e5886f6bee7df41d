//! The lazy purge (6.12's `free_vmap_area_noflush`, `__purge_vmap_area_lazy`,
//! `lazy_max_pages`): vfree and vunmap unmap at once and park the range; one flush purges every
//! parked range; no parked range is handed out before that flush.

use core::cell::RefCell;
use core::panic::Location;
use std::vec::Vec;

use super::space::setup;
use crate::addr::PAGE_SIZE;
use crate::gfp::GfpFlags;
use crate::page::PageProvider;
use crate::vmalloc::{lazy_max_pages, TlbFlushRange, VmallocError, VmapAreaRequest, VmapAreas, VmapError};
use x86_64::VirtAddr;

const START: usize = 0xffff_c900_0000_0000;
const P: usize = PAGE_SIZE;

#[test]
fn vfree_parks_the_range_until_one_flush_purges_them_all() {
    let (ram, mut s) = setup(64);
    let flushes = RefCell::new(Vec::new());
    let flush = |r| flushes.borrow_mut().push(r);
    let areas: Vec<_> = (0..3)
        .map(|_| s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(2 * P), flush).unwrap())
        .collect();
    let free = ram.nr_free();
    for a in &areas {
        s.vfree(&ram, a.start, flush).unwrap();
    }
    assert!(flushes.borrow().is_empty(), "vfree does not flush");
    assert_eq!(ram.nr_free(), free + 6, "the pages are freed at once");
    assert_eq!((s.areas.nr_areas(), s.areas.lazy_pages()), (0, 9));
    // A parked range is not handed out again: the next area comes after all of them.
    let next = s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(P), flush).unwrap();
    assert_eq!(next.start, areas[2].end());
    s.areas.check().unwrap();
    // One flush covering the three, then their ranges are free again.
    assert_eq!(s.purge_vmap_area_lazy(flush), 3);
    assert_eq!(*flushes.borrow(), [TlbFlushRange { start: VirtAddr::new(START as u64), nr_pages: 9 }]);
    assert_eq!(s.purge_vmap_area_lazy(flush), 0, "nothing left to purge, no flush");
    assert_eq!(flushes.borrow().len(), 1);
    let again = s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(P), flush).unwrap();
    assert_eq!(again.start, START);
    s.areas.check().unwrap();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "lazy_max_pages() / 2 + 1 vmaps (thousands; 170 s under Miri): the purge it triggers runs \
              under Miri in the tests around it, only the threshold compare (safe code) is skipped"
)]
fn past_lazy_max_pages_a_free_purges() {
    let (ram, mut s) = setup(64);
    let frame = ram.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    let flushes = RefCell::new(Vec::new());
    let flush = |r| flushes.borrow_mut().push(r);
    // Each one-page vmap parks 2 pages (page and guard) when unmapped.
    let n = lazy_max_pages() / 2 + 1;
    let mut areas = Vec::new();
    for _ in 0..n {
        // SAFETY: the test owns the frame until every area mapping it is unmapped.
        areas.push(
            unsafe { s.vmap(&ram, GfpFlags::GFP_KERNEL, &[frame], Location::caller(), flush) }.unwrap(),
        );
    }
    for (i, a) in areas.iter().enumerate() {
        s.vunmap(&ram, a.start, flush).unwrap();
        let purged = i + 1 == n;
        assert_eq!(flushes.borrow().len(), purged as usize, "after {} vunmaps", i + 1);
    }
    let want = TlbFlushRange { start: VirtAddr::new(START as u64), nr_pages: 2 * n };
    assert_eq!(*flushes.borrow(), [want], "one flush over the union");
    assert_eq!(s.areas.lazy_pages(), 0);
    assert_eq!(s.areas.free_ranges().count(), 1);
    s.areas.check().unwrap();
}

#[test]
fn an_allocation_that_finds_no_room_purges_and_retries() {
    let (ram, mut s) = setup(64);
    // Only 8 pages of addresses.
    s.areas = VmapAreas::new(START, START + 8 * P).unwrap();
    let flushes = RefCell::new(Vec::new());
    let flush = |r| flushes.borrow_mut().push(r);
    let a = s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(5 * P), flush).unwrap();
    s.vfree(&ram, a.start, flush).unwrap();
    assert!(flushes.borrow().is_empty());
    let b = s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(5 * P), flush).unwrap();
    assert_eq!(b.start, START, "the parked range, after its flush");
    assert_eq!(*flushes.borrow(), [TlbFlushRange { start: VirtAddr::new(START as u64), nr_pages: 6 }]);
    // Nothing parked: no room is no room, without a flush.
    let e = s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(5 * P), flush).unwrap_err();
    assert!(matches!(e, VmallocError::Area(VmapError::NoSpace { .. })), "{e:?}");
    assert_eq!(flushes.borrow().len(), 1);
    s.vfree(&ram, b.start, flush).unwrap();
    s.purge_vmap_area_lazy(flush);
    s.areas.check().unwrap();
}
