//! vmalloc's data pages come from the bulk allocator (Linux 6.12 mm/vmalloc.c,
//! vm_area_alloc_pages: `alloc_pages_bulk_*` for order 0, then single pages for what it did
//! not provide).

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use x86_64::VirtAddr;

use super::ram::TestRam;
use crate::addr::{DirectMap, Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{FreePagesError, Page, PageProvider};
use crate::vmalloc::pgtable::P4_ENTRY_SPAN;
use crate::vmalloc::{TlbFlushRange, VmallocPageTables, VmallocSpace, VmapAreaRequest, VmapAreas};
use crate::AllocError;

const START: usize = 0xffff_c900_0000_0000;

/// A provider whose bulk call fills at most `cap` entries (an allocator that falls short) and
/// counts bulk calls and single allocations.
struct Bulky<'a> {
    ram: &'a TestRam,
    cap: usize,
    bulk_calls: AtomicUsize,
    bulk_pages: AtomicUsize,
    singles: AtomicUsize,
}

impl PageProvider for Bulky<'_> {
    fn alloc_pages(&self, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
        self.singles.fetch_add(1, Relaxed);
        self.ram.alloc_pages(gfp, order)
    }
    fn alloc_pages_bulk(&self, gfp: GfpFlags, pages: &mut [Option<Pfn>]) -> usize {
        self.bulk_calls.fetch_add(1, Relaxed);
        let mut n = 0;
        for slot in pages.iter_mut().take(self.cap) {
            match self.ram.alloc_pages(gfp, 0) {
                Ok(p) => *slot = Some(p),
                Err(_) => break,
            }
            n += 1;
        }
        self.bulk_pages.fetch_add(n, Relaxed);
        n
    }
    fn free_pages(&self, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        self.ram.free_pages(pfn, order)
    }
    fn split_page(&self, pfn: Pfn, order: u32) -> Result<(), crate::buddy::PageRefError> {
        self.ram.split_page(pfn, order)
    }
    fn page(&self, pfn: Pfn) -> Option<&Page> {
        self.ram.page(pfn)
    }
    fn direct_map(&self) -> DirectMap {
        self.ram.direct_map()
    }
}

fn setup(ram: &TestRam) -> VmallocSpace {
    let pml4 = ram.take();
    let end = START + P4_ENTRY_SPAN as usize;
    // SAFETY: a zeroed PML4 in `ram`, reached through its direct map; nothing else touches it.
    let tables = unsafe {
        VmallocPageTables::new(
            pml4.phys(),
            ram.direct_map(),
            VirtAddr::new(START as u64),
            VirtAddr::new(end as u64),
        )
    }
    .unwrap();
    let mut space = VmallocSpace::new(VmapAreas::new(START, end).unwrap(), tables);
    space.tables.preallocate(ram, GfpFlags::GFP_KERNEL).unwrap();
    space
}

fn flush(_: TlbFlushRange) {}

#[test]
fn vmalloc_takes_its_pages_in_bulk_and_tops_up_one_by_one() {
    let ram = TestRam::new(1024);
    let mut s = setup(&ram);
    let p = Bulky { ram: &ram, cap: 50, bulk_calls: 0.into(), bulk_pages: 0.into(), singles: 0.into() };
    let a = s.vmalloc(&p, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(130 * PAGE_SIZE), flush).unwrap();
    // Chunks of 64, 64 and 2 pages: one bulk call each; the bulk gives 50 + 50 + 2, the other
    // 28 come from single allocations (page-table pages come from single allocations too).
    assert_eq!(p.bulk_calls.load(Relaxed), 3);
    assert_eq!(p.bulk_pages.load(Relaxed), 102);
    assert!(p.singles.load(Relaxed) >= 28);
    s.vfree(&p, a.start, flush).unwrap();
}

#[test]
fn a_failure_after_a_bulk_chunk_gives_every_page_back() {
    let ram = TestRam::new(1024);
    let mut s = setup(&ram);
    let p = Bulky { ram: &ram, cap: 64, bulk_calls: 0.into(), bulk_pages: 0.into(), singles: 0.into() };
    // Warm the page tables so that only data pages are counted below.
    let a = s.vmalloc(&p, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(200 * PAGE_SIZE), flush).unwrap();
    s.vfree(&p, a.start, flush).unwrap();
    let free = ram.nr_free();
    ram.set_budget(100);
    assert!(s.vmalloc(&p, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(200 * PAGE_SIZE), flush).is_err());
    ram.set_budget(usize::MAX);
    assert_eq!(ram.nr_free(), free, "every page taken in bulk or singly is back");
}
