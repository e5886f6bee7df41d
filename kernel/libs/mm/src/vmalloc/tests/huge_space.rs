//! vmalloc_huge over emulated RAM (6.12 mm/vmalloc.c `__vmalloc_node_range_noprof` with
//! `VM_ALLOW_HUGE_VMAP`, `__vmalloc_area_node`, `vm_area_alloc_pages`): 2 MiB areas of split
//! order-9 blocks, small-page fallback, accounting in small pages, vfree of every page.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::cell::RefCell;
use std::format;
use std::vec::Vec;

use x86_64::structures::paging::PageTableFlags;
use x86_64::VirtAddr;

use super::ram::TestRam;
use super::space::setup;
use crate::addr::{DirectMap, Pfn, PAGE_SIZE};
use crate::buddy::PageRefError;
use crate::gfp::GfpFlags;
use crate::page::{FreePagesError, Page, PageProvider, PageState};
use crate::vmalloc::{
    vmalloc_huge_with, SpaceLock, TlbFlushRange, VmFlags, VmallocInfoLine, VmallocSpace, VmapAreaRequest,
    PMD_ORDER, PMD_SIZE,
};
use crate::AllocError;

const P: usize = PAGE_SIZE;
const M2: usize = PMD_SIZE;

struct Held(RefCell<VmallocSpace>);

impl SpaceLock for Held {
    type Alloc = std::alloc::Global;
    fn with<R>(&self, f: impl FnOnce(&mut VmallocSpace) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

/// A provider that lets `huge_left` order-9 allocations succeed, then fails them.
struct HugeBudget<'a> {
    ram: &'a TestRam,
    huge_left: AtomicUsize,
}

impl PageProvider for HugeBudget<'_> {
    fn alloc_pages(&self, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
        if order == PMD_ORDER {
            let left = self.huge_left.load(Relaxed);
            if left == 0 {
                return Err(AllocError::OutOfMemory { order });
            }
            self.huge_left.store(left - 1, Relaxed);
        }
        self.ram.alloc_pages(gfp, order)
    }
    fn free_pages(&self, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        self.ram.free_pages(pfn, order)
    }
    fn split_page(&self, pfn: Pfn, order: u32) -> Result<(), PageRefError> {
        self.ram.split_page(pfn, order)
    }
    fn page(&self, pfn: Pfn) -> Option<&Page> {
        self.ram.page(pfn)
    }
    fn direct_map(&self) -> DirectMap {
        self.ram.direct_map()
    }
}

fn space(frames: usize) -> (TestRam, Held) {
    let (ram, s) = setup(frames);
    (ram, Held(RefCell::new(s)))
}

/// Every page of the area: its frame and whether a huge PMD maps it.
fn pages(s: &Held, start: usize, n: usize) -> Vec<(Pfn, bool)> {
    let s = s.0.borrow();
    (0..n)
        .map(|i| {
            let (pfn, flags) = s.tables.lookup_pte(VirtAddr::new((start + i * P) as u64)).unwrap();
            (pfn, flags.contains(PageTableFlags::HUGE_PAGE))
        })
        .collect()
}

#[test]
// Not under Miri (CI time): thousands of emulated frames per test; the PMD code itself runs
// under Miri in tests/huge.rs.
#[cfg_attr(miri, ignore)]
// 6.12.19 __vmalloc_node_range_noprof: size >= PMD_SIZE -> shift = PMD_SHIFT, align =
// max(real_align, PMD_SIZE), __get_vm_area_node rounds the size to 2 MiB and adds the guard;
// vm_area_alloc_pages split_page()s each order-9 block; area->nr_pages counts small pages
// (vmalloc_info_show `pages=`, show_numa_info, nr_vmalloc_pages for VmallocUsed); vfree
// __free_page()s every page.
fn vmalloc_huge_maps_2mib_blocks_counts_small_pages_and_vfree_frees_every_page() {
    let (ram, s) = space(6 * 512);
    let free = ram.nr_free();
    let gfp = GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO;
    let flushes = RefCell::new(Vec::new());
    let a = vmalloc_huge_with(&s, &ram, gfp, VmapAreaRequest::new(3 * M2 / 2), true, |r| {
        flushes.borrow_mut().push(r)
    })
    .unwrap();
    assert_eq!(a.start % M2, 0, "2 MiB aligned");
    assert_eq!((a.size, a.nr_pages), (2 * M2 + P, 1024), "rounded to 2 MiB, plus the guard page");
    assert_eq!(a.flags, VmFlags::VM_ALLOC | VmFlags::VM_ALLOW_HUGE_VMAP);
    assert!(flushes.borrow().is_empty());
    let got = pages(&s, a.start, 1024);
    let dm = ram.direct_map();
    for (i, &(pfn, huge)) in got.iter().enumerate() {
        assert!(huge, "page {i} through a PMD");
        assert_eq!(pfn, got[i / 512 * 512].0.add((i % 512) as u64), "one contiguous block per 2 MiB");
        let page = ram.page(pfn).unwrap();
        assert_eq!((page.state(), page.order()), (PageState::Vmalloc, 0), "split: page {i}");
        assert_eq!(page.private.load(Relaxed), a.start);
        // SAFETY: a frame of the test's area, read through the test RAM's direct map.
        let bytes = unsafe { core::slice::from_raw_parts(dm.pfn_to_virt(pfn), P) };
        // The test RAM fills unzeroed blocks with 0xa5: both ends of each page tell.
        assert_eq!((bytes[0], bytes[P - 1]), (0, 0), "__GFP_ZERO honoured for page {i}");
    }
    assert_eq!(got[0].0.phys().as_u64() % M2 as u64, 0);
    let line = format!("{}", VmallocInfoLine(&a));
    assert!(line.ends_with(" pages=1024 vmalloc N0=1024"), "{line}");
    assert_eq!(s.0.borrow().areas.meminfo().used_kb, 4096);

    s.0.borrow_mut().vfree(&ram, a.start, |r| flushes.borrow_mut().push(r)).unwrap();
    assert_eq!(*flushes.borrow(), [], "the range waits for the lazy purge");
    s.0.borrow_mut().purge_vmap_area_lazy(|r| flushes.borrow_mut().push(r));
    // The purge flushes the whole range, guard page included.
    assert_eq!(*flushes.borrow(), [TlbFlushRange { start: VirtAddr::new(a.start as u64), nr_pages: 1025 }]);
    for &(pfn, _) in &got {
        assert_eq!(ram.page(pfn).unwrap().state(), PageState::Buddy, "every small page freed");
    }
    s.0.borrow_mut().tables.shrink(&ram, || {});
    assert_eq!(ram.nr_free(), free);
    assert_eq!(s.0.borrow().areas.meminfo().used_kb, 0);
}

#[test]
#[cfg_attr(miri, ignore)] // as above
                          // 6.12.19 vmalloc_huge_noprof -> __vmalloc_node_range_noprof: below PMD_SIZE (or without
                          // arch_vmap_pmd_supported / with nohugevmalloc) shift stays PAGE_SHIFT: plain vmalloc, with
                          // VM_ALLOW_HUGE_VMAP in the area's flags.
fn below_2mib_or_without_pmd_support_vmalloc_huge_is_plain_vmalloc() {
    let (ram, s) = space(6 * 512);
    let free = ram.nr_free();
    for (size, pmd) in [(M2 - P, true), (M2 + 5 * P, false)] {
        let a = vmalloc_huge_with(&s, &ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(size), pmd, |_| {})
            .unwrap();
        assert_eq!((a.size, a.nr_pages), (size + P, size / P));
        assert_eq!(a.flags, VmFlags::VM_ALLOC | VmFlags::VM_ALLOW_HUGE_VMAP);
        assert!(pages(&s, a.start, a.nr_pages).iter().all(|&(_, huge)| !huge));
        s.0.borrow_mut().vfree(&ram, a.start, |_| {}).unwrap();
    }
    s.0.borrow_mut().tables.shrink(&ram, || {});
    assert_eq!(ram.nr_free(), free);
}

#[test]
#[cfg_attr(miri, ignore)] // as above
                          // 6.12.19 __vmalloc_node_range_noprof `fail:` — if (shift > PAGE_SHIFT) { shift = PAGE_SHIFT;
                          // align = real_align; size = real_size; goto again; }: after a failed order-9 allocation
                          // (__vmalloc_area_node vfree()s what it got) the whole allocation is retried with small pages.
fn a_failed_order9_block_falls_back_to_small_pages_losing_nothing() {
    for huge_blocks in [0, 1] {
        let (ram, s) = space(8 * 512);
        let prov = HugeBudget { ram: &ram, huge_left: AtomicUsize::new(huge_blocks) };
        let free = ram.nr_free();
        let flushes = RefCell::new(Vec::new());
        let a = vmalloc_huge_with(&s, &prov, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(3 * M2), true, |r| {
            flushes.borrow_mut().push(r)
        })
        .unwrap();
        assert_eq!((a.size, a.nr_pages), (3 * M2 + P, 3 * 512), "the original size, page granular");
        assert!(pages(&s, a.start, a.nr_pages).iter().all(|&(_, huge)| !huge), "4 KiB pages");
        // One mapped block was given back: its range was flushed before it could be reused.
        assert_eq!(flushes.borrow().len(), huge_blocks, "{:?}", flushes.borrow());
        s.0.borrow_mut().vfree(&ram, a.start, |_| {}).unwrap();
        s.0.borrow_mut().tables.shrink(&ram, || {});
        assert_eq!(ram.nr_free(), free, "with {huge_blocks} block(s) before the failure");
        assert_eq!(s.0.borrow().areas.nr_areas(), 0);
    }
}

#[test]
#[cfg_attr(miri, ignore)] // as above
                          // 6.12.19 __vmalloc_area_node: a vmap_pages_range failure ("failed to map pages") goes to
                          // `fail:` (vfree of what was allocated), then __vmalloc_node_range_noprof retries with small
                          // pages. Here the page directory for the PMD cannot be had: the block goes back, and the
                          // small-page retry fails as well for want of any page; nothing is lost.
fn a_pmd_that_cannot_be_mapped_gives_its_block_back_before_the_retry() {
    let (ram, s) = space(6 * 512);
    let free = ram.nr_free();
    // The order-9 block, then nothing: not the page directory, not a small page.
    ram.set_budget(1);
    let flushes = RefCell::new(Vec::new());
    let e = vmalloc_huge_with(&s, &ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(M2), true, |r| {
        flushes.borrow_mut().push(r)
    })
    .unwrap_err();
    assert!(matches!(e, crate::vmalloc::VmallocError::Pages { index: 0, .. }), "the retry's error: {e:?}");
    ram.set_budget(usize::MAX);
    assert_eq!(ram.nr_free(), free, "the block and everything else given back");
    assert_eq!(s.0.borrow().areas.nr_areas(), 0);
    assert!(flushes.borrow().is_empty(), "nothing was ever mapped");
    // With memory again, the same call maps huge.
    let a =
        vmalloc_huge_with(&s, &ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(M2), true, |_| {}).unwrap();
    assert!(pages(&s, a.start, 512).iter().all(|&(_, huge)| huge));
    s.0.borrow_mut().vfree(&ram, a.start, |_| {}).unwrap();
}
