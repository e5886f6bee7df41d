//! vmalloc/vfree/vmap/vunmap over emulated RAM.

use crate::testing::FilledWith;
use core::cell::Cell;
use core::panic::Location;
use core::sync::atomic::Ordering::Relaxed;
use std::vec::Vec;

use x86_64::VirtAddr;

use super::ram::TestRam;
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{PageProvider, PageState};
use crate::vmalloc::pgtable::P4_ENTRY_SPAN;
use crate::vmalloc::{
    AreaKind, PgTableError, TlbFlushRange, VmallocError, VmallocPageTables, VmallocSpace, VmapAreaRequest,
    VmapAreas, VmapError,
};
use crate::AllocError;

const START: usize = 0xffff_c900_0000_0000;
const P: usize = PAGE_SIZE;

pub(super) fn setup(frames: usize) -> (TestRam, VmallocSpace) {
    let ram = TestRam::new(frames);
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
    space.tables.preallocate(&ram, GfpFlags::GFP_KERNEL).unwrap();
    (ram, space)
}

fn no_flush(r: TlbFlushRange) {
    panic!("unexpected flush {r:?}");
}

#[test]
fn vmalloc_maps_zeroed_pages_and_vfree_gives_everything_back() {
    let (ram, mut s) = setup(128);
    let free = ram.nr_free();
    let gfp = GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO;
    let a = s.vmalloc(&ram, gfp, VmapAreaRequest::new(5 * P), no_flush).unwrap();
    assert_eq!((a.start, a.size, a.nr_pages, a.kind), (START, 6 * P, 5, AreaKind::Vmalloc));
    // 5 pages + a PD and a PT.
    // Page-table pages stay after an unmap; the shrinker gives the empty ones back.
    s.tables.shrink(&ram, || {});
    assert_eq!(ram.nr_free(), free - 7);
    let dm = ram.direct_map();
    let mut seen = Vec::new();
    for i in 0..5 {
        let pfn = s.tables.vmalloc_to_pfn(VirtAddr::new((a.start + i * P) as u64)).unwrap();
        let page = ram.page(pfn).unwrap();
        assert_eq!(page.state(), PageState::Vmalloc);
        assert_eq!(page.private.load(Relaxed), a.start);
        // SAFETY: the frame is mapped by this area, which the test owns.
        let bytes = unsafe { core::slice::from_raw_parts(dm.pfn_to_virt(pfn), P) };
        assert!(bytes.filled_with(0), "__GFP_ZERO honoured");
        seen.push(pfn);
    }
    // The guard page is not mapped.
    assert_eq!(s.tables.vmalloc_to_pfn(VirtAddr::new((a.start + 5 * P) as u64)), None);

    let flushed = Cell::new(None);
    let freed = s.vfree(&ram, a.start, |r| flushed.set(Some(r))).unwrap();
    assert_eq!(freed, a);
    assert_eq!(flushed.get(), None, "the range waits for the lazy purge");
    assert_eq!(s.purge_vmap_area_lazy(|r| flushed.set(Some(r))), 1);
    assert_eq!(flushed.get(), Some(TlbFlushRange { start: VirtAddr::new(a.start as u64), nr_pages: 6 }));
    // Page-table pages stay after an unmap; the shrinker gives the empty ones back.
    s.tables.shrink(&ram, || {});
    assert_eq!(ram.nr_free(), free);
    for pfn in seen {
        assert_eq!(ram.page(pfn).unwrap().state(), PageState::Buddy);
    }
    assert_eq!(s.areas.nr_areas(), 0);
    assert_eq!(s.areas.vmalloc_pages(), 0);
    s.areas.check().unwrap();
}

#[test]
fn vmalloc_failures_leave_nothing_behind() {
    // Budget k: pages run out at page k (k < 4), or the page tables do (k = 4, 5).
    for budget in 0..6 {
        let (ram, mut s) = setup(128);
        let free = ram.nr_free();
        ram.set_budget(budget);
        let flushed = Cell::new(None);
        let err = s
            .vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(4 * P), |r| flushed.set(Some(r)))
            .unwrap_err();
        ram.set_budget(usize::MAX);
        if budget < 4 {
            assert_eq!(
                err,
                VmallocError::Pages { index: budget, nr_pages: 4, err: AllocError::OutOfMemory { order: 0 } }
            );
            assert_eq!(flushed.get(), None, "nothing was mapped");
        } else {
            assert_eq!(
                err,
                VmallocError::PageTable(PgTableError::NoMemory { addr: VirtAddr::new(START as u64) })
            );
            assert_eq!(
                flushed.get(),
                Some(TlbFlushRange { start: VirtAddr::new(START as u64), nr_pages: 4 })
            );
        }
        // Page-table pages stay after an unmap; the shrinker gives the empty ones back.
        s.tables.shrink(&ram, || {});
        assert_eq!(ram.nr_free(), free, "budget {budget}");
        assert_eq!(s.areas.nr_areas(), 0);
        assert_eq!(s.areas.vmalloc_pages(), 0);
        s.areas.check().unwrap();
        // The space works afterwards.
        let a = s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(4 * P), no_flush).unwrap();
        assert_eq!(a.start, START);
    }
}

#[test]
fn vmalloc_failure_in_a_later_chunk_unwinds_the_mapped_chunks() {
    use crate::vmalloc::space::VMALLOC_CHUNK;
    let nr = VMALLOC_CHUNK * 2 + 5;
    // Budgets that run out in the second chunk's pages, in the third chunk's pages and, with the
    // PD and PT taken by the first chunk, never in the tables: everything must come back.
    for fail_at in [VMALLOC_CHUNK + 3, 2 * VMALLOC_CHUNK + 1] {
        let (ram, mut s) = setup(nr + 64);
        let free = ram.nr_free();
        // Page `fail_at` fails: `fail_at` data pages plus the PD and PT of the first chunk.
        ram.set_budget(fail_at + 2);
        let flushed = Cell::new(None);
        let err = s
            .vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(nr * P), |r| flushed.set(Some(r)))
            .unwrap_err();
        ram.set_budget(usize::MAX);
        assert_eq!(
            err,
            VmallocError::Pages { index: fail_at, nr_pages: nr, err: AllocError::OutOfMemory { order: 0 } }
        );
        assert_eq!(flushed.get(), Some(TlbFlushRange { start: VirtAddr::new(START as u64), nr_pages: nr }));
        // Page-table pages stay after an unmap; the shrinker gives the empty ones back.
        s.tables.shrink(&ram, || {});
        assert_eq!(ram.nr_free(), free, "fail_at {fail_at}");
        assert_eq!(s.tables.nr_pagetable_pages(), 1, "only the preallocated PDPT is left");
        assert_eq!(s.areas.nr_areas(), 0);
        s.areas.check().unwrap();
        let a = s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(nr * P), no_flush).unwrap();
        for i in 0..nr {
            assert!(s.tables.vmalloc_to_pfn(VirtAddr::new((a.start + i * P) as u64)).is_some());
        }
    }
}

#[test]
fn vfree_and_vunmap_refuse_wrong_addresses_and_kinds() {
    let (ram, mut s) = setup(128);
    let a = s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(2 * P), no_flush).unwrap();
    let frames: Vec<Pfn> = (0..3).map(|_| ram.take()).collect();
    // SAFETY: the frames belong to the test and outlive the mapping.
    let v = unsafe { s.vmap(&ram, GfpFlags::GFP_KERNEL, &frames, Location::caller(), no_flush) }.unwrap();
    assert_eq!((v.start, v.nr_pages, v.kind), (a.end(), 3, AreaKind::Vmap));
    assert_eq!(s.areas.vmalloc_pages(), 2);
    let free = ram.nr_free();

    assert_eq!(
        s.vfree(&ram, v.start, no_flush),
        Err(VmallocError::WrongKind { addr: v.start, kind: AreaKind::Vmap })
    );
    assert_eq!(
        s.vunmap(&ram, a.start, no_flush),
        Err(VmallocError::WrongKind { addr: a.start, kind: AreaKind::Vmalloc })
    );
    assert_eq!(
        s.vfree(&ram, a.start + P, no_flush),
        Err(VmallocError::Area(VmapError::Interior {
            addr: a.start + P,
            area_start: a.start,
            area_end: a.end()
        }))
    );
    assert!(matches!(
        s.vfree(&ram, a.start + 2 * P, no_flush),
        Err(VmallocError::Area(VmapError::InGuard { .. }))
    ));
    assert!(matches!(
        s.vfree(&ram, v.end(), no_flush),
        Err(VmallocError::Area(VmapError::NotAllocated { .. }))
    ));
    // SAFETY: as above.
    let empty = unsafe { s.vmap(&ram, GfpFlags::GFP_KERNEL, &[], Location::caller(), no_flush) };
    assert_eq!(empty, Err(VmallocError::NoPages));
    // Page-table pages stay after an unmap; the shrinker gives the empty ones back.
    s.tables.shrink(&ram, || {});
    assert_eq!(ram.nr_free(), free);
    assert_eq!(s.areas.nr_areas(), 2);

    // vunmap leaves the caller's frames alone.
    let flushed = Cell::new(None);
    s.vunmap(&ram, v.start, |r| flushed.set(Some(r))).unwrap();
    assert_eq!(flushed.get(), None, "the range waits for the lazy purge");
    s.purge_vmap_area_lazy(|r| flushed.set(Some(r)));
    assert_eq!(flushed.get().map(|r| r.nr_pages), Some(4), "3 pages and the guard");
    for f in &frames {
        assert_eq!(ram.page(*f).unwrap().state(), PageState::Allocated);
    }
    s.vfree(&ram, a.start, |_| {}).unwrap();
    // Double free after the real one: while the range waits for the purge, and after it.
    let e = s.vfree(&ram, a.start + P, no_flush).unwrap_err();
    assert_eq!(
        e,
        VmallocError::Area(VmapError::Unpurged { addr: a.start + P, area_start: a.start, area_end: a.end() })
    );
    assert_eq!(
        std::format!("{e}"),
        std::format!(
            "{:#x} is in the area {:#x}-{:#x}, already freed and waiting for the lazy purge: double free",
            a.start + P,
            a.start,
            a.end()
        )
    );
    assert_eq!(s.areas.lookup_lazy(a.start).map(|x| x.start), Some(a.start));
    s.areas.check().unwrap();
    s.purge_vmap_area_lazy(|_| {});
    assert!(matches!(
        s.vfree(&ram, a.start, no_flush),
        Err(VmallocError::Area(VmapError::NotAllocated { .. }))
    ));
    s.areas.check().unwrap();
    assert_eq!(s.tables.nr_pagetable_pages(), 3, "the PD and PT stay for the next area");
    assert_eq!(s.tables.shrink(&ram, || {}), 2);
    assert_eq!(s.tables.nr_pagetable_pages(), 1, "only the preallocated PDPT is left");
}

/// The kernel's lock for [`crate::vmalloc::vmalloc_with`] in miniature: counts how often it is
/// taken and says whether it is held.
struct CountingLock {
    space: spin::Mutex<VmallocSpace>,
    held: core::sync::atomic::AtomicBool,
    taken: core::sync::atomic::AtomicUsize,
}

impl crate::vmalloc::SpaceLock for CountingLock {
    type Alloc = std::alloc::Global;
    fn with<R>(&self, f: impl FnOnce(&mut VmallocSpace) -> R) -> R {
        assert!(!self.held.swap(true, Relaxed), "the vmap lock taken twice");
        self.taken.fetch_add(1, Relaxed);
        let r = f(&mut self.space.lock());
        self.held.store(false, Relaxed);
        r
    }
}

/// A page provider that fails the test when a data page is allocated under the lock.
struct Unlocked<'a> {
    ram: &'a TestRam,
    lock: &'a CountingLock,
    data_pages: core::sync::atomic::AtomicUsize,
}

impl PageProvider for Unlocked<'_> {
    fn alloc_pages(&self, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
        // Page-table pages come with the mapping, under the lock; data pages never do.
        if !self.lock.held.load(Relaxed) {
            self.data_pages.fetch_add(1, Relaxed);
        }
        self.ram.alloc_pages(gfp, order)
    }
    fn free_pages(&self, pfn: Pfn, order: u32) -> Result<(), crate::page::FreePagesError> {
        self.ram.free_pages(pfn, order)
    }
    fn split_page(&self, pfn: Pfn, order: u32) -> Result<(), crate::buddy::PageRefError> {
        self.ram.split_page(pfn, order)
    }
    fn page(&self, pfn: Pfn) -> Option<&crate::page::Page> {
        self.ram.page(pfn)
    }
    fn direct_map(&self) -> crate::addr::DirectMap {
        self.ram.direct_map()
    }
}

#[test]
fn vmalloc_allocates_pages_with_the_lock_free_and_maps_each_chunk_under_it() {
    let (ram, space) = setup(512);
    let lock =
        CountingLock { space: spin::Mutex::new(space), held: Default::default(), taken: Default::default() };
    let provider = Unlocked { ram: &ram, lock: &lock, data_pages: Default::default() };
    let nr = 2 * crate::vmalloc::VMALLOC_CHUNK + 5;
    let a = crate::vmalloc::vmalloc_with(
        &lock,
        &provider,
        GfpFlags::GFP_KERNEL,
        VmapAreaRequest::new(nr * P),
        no_flush,
    )
    .unwrap();
    assert_eq!(provider.data_pages.load(Relaxed), nr, "every data page allocated with the lock free");
    // Once for the area, once per chunk of pages.
    assert_eq!(lock.taken.load(Relaxed), 1 + 3);
    let mut s = lock.space.lock();
    for i in 0..nr {
        let pfn = s.tables.vmalloc_to_pfn(VirtAddr::new((a.start + i * P) as u64)).unwrap();
        assert_eq!(ram.page(pfn).unwrap().state(), PageState::Vmalloc);
    }
    let free = ram.nr_free();
    s.vfree(&ram, a.start, |_| {}).unwrap();
    assert_eq!(ram.nr_free(), free + nr);
    // A failure in the second chunk: the first is unmapped and freed, under the lock.
    s.tables.shrink(&ram, || {});
    drop(s);
    let before = ram.nr_free();
    ram.set_budget(crate::vmalloc::VMALLOC_CHUNK + 3);
    let flushed = Cell::new(false);
    let err = crate::vmalloc::vmalloc_with(
        &lock,
        &provider,
        GfpFlags::GFP_KERNEL,
        VmapAreaRequest::new(nr * P),
        |_| flushed.set(true),
    );
    ram.set_budget(usize::MAX);
    // The budget buys a PD, a PT (the shrinker took the first area's) and CHUNK + 1 pages.
    assert!(
        matches!(err, Err(VmallocError::Pages { index, .. }) if index == crate::vmalloc::VMALLOC_CHUNK + 1)
    );
    assert!(flushed.get(), "the mapped chunk was flushed before the range was released");
    assert!(!lock.held.load(Relaxed));
    let mut s = lock.space.lock();
    s.tables.shrink(&ram, || {});
    assert_eq!(ram.nr_free(), before);
    assert_eq!(s.areas.nr_areas(), 0);
}
