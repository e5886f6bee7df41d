//! Page-table mapping over emulated RAM: a PML4 in a host buffer, the x86_64 crate's walker.

use std::vec::Vec;

use x86_64::structures::paging::mapper::{Translate, TranslateResult};
use x86_64::structures::paging::{OffsetPageTable, PageTable, PageTableFlags};
use x86_64::VirtAddr;

use super::ram::TestRam;
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{PageProvider, PageState};
use crate::vmalloc::pgtable::P4_ENTRY_SPAN;
use crate::vmalloc::{PgTableError, TlbFlushRange, VmallocPageTables, PAGE_KERNEL};

pub(super) const START: u64 = 0xffff_c900_0000_0000;
const END: u64 = START + 2 * P4_ENTRY_SPAN;
const GIB: u64 = 1 << 30;
const MIB2: u64 = 1 << 21;
const P: u64 = PAGE_SIZE as u64;

pub(super) struct Setup {
    pub(super) ram: TestRam,
    pml4: Pfn,
    pub(super) pt: VmallocPageTables,
}

pub(super) fn setup(frames: usize) -> Setup {
    let ram = TestRam::new(frames);
    let pml4 = ram.take();
    // SAFETY: the PML4 is a zeroed page of `ram`, reached through its direct map; nothing else
    // touches these tables; all tables come from `ram`.
    let pt = unsafe {
        VmallocPageTables::new(pml4.phys(), ram.direct_map(), VirtAddr::new(START), VirtAddr::new(END))
    }
    .unwrap();
    Setup { ram, pml4, pt }
}

impl Setup {
    pub(super) fn data_frames(&self, n: usize) -> Vec<Pfn> {
        (0..n).map(|_| self.ram.take()).collect()
    }

    pub(super) fn map(&mut self, addr: u64, frames: &[Pfn]) -> Result<(), PgTableError> {
        // SAFETY: test frames, owned by the test and never accessed through the mapping.
        unsafe { self.pt.map_pages(&self.ram, GfpFlags::GFP_KERNEL, VirtAddr::new(addr), frames) }
    }

    pub(super) fn unmap(&mut self, addr: u64, n: usize) -> Result<(TlbFlushRange, Vec<Pfn>), PgTableError> {
        let mut frames = Vec::new();
        let flush = self.pt.unmap_pages(&self.ram, VirtAddr::new(addr), n, |f| frames.push(f))?;
        Ok((flush, frames))
    }

    /// The crate's own translation, as a cross-check of `vmalloc_to_pfn`, with the leaf flags.
    pub(super) fn crate_translate(&self, addr: u64) -> Option<(Pfn, PageTableFlags)> {
        let dm = self.ram.direct_map();
        // SAFETY: the PML4 lives in `ram`; the mapper is only read through while it exists.
        let mapper =
            unsafe { OffsetPageTable::new(&mut *(dm.pfn_to_virt(self.pml4) as *mut PageTable), dm.base()) };
        match mapper.translate(VirtAddr::new(addr)) {
            // Through a 2 MiB mapping, the 4 KiB frame inside it.
            TranslateResult::Mapped { frame, offset, flags } => {
                Some((Pfn::from_phys(frame.start_address() + (offset & !(P - 1))), flags))
            }
            _ => None,
        }
    }

    pub(super) fn pfn_at(&self, addr: u64) -> Option<Pfn> {
        let got = self.pt.vmalloc_to_pfn(VirtAddr::new(addr));
        assert_eq!(got, self.crate_translate(addr).map(|(p, _)| p), "walkers disagree at {addr:#x}");
        got
    }

    /// The shrinker: frees the empty tables, with the number of flushes it asked for.
    pub(super) fn shrink(&mut self) -> (usize, usize) {
        let mut flushes = 0;
        let freed = self.pt.shrink(&self.ram, || flushes += 1);
        (freed, flushes)
    }

    pub(super) fn table_pages_in_state(&self) -> usize {
        (1..4096u64)
            .filter(|&i| self.ram.page(Pfn(i)).is_some_and(|p| p.state() == PageState::PageTable))
            .count()
    }
}

#[test]
// Not under Miri (CI time): 3 min under Miri; the same map/unmap code runs under Miri in crossing_table_boundaries_and_partial_unmap and failure_half_way_unwinds_everything.
#[cfg_attr(miri, ignore)]
fn map_translate_unmap_and_tables_stay_until_the_shrinker() {
    let mut s = setup(256);
    let frames = s.data_frames(10);
    let free_before = s.ram.nr_free();
    let addr = START + 5 * P;
    s.map(addr, &frames).unwrap();
    // PDPT + PD + PT.
    assert_eq!(s.pt.nr_pagetable_pages(), 3);
    assert_eq!(s.table_pages_in_state(), 3);
    assert_eq!(s.ram.nr_free(), free_before - 3);
    for (i, f) in frames.iter().enumerate() {
        let a = addr + i as u64 * P;
        assert_eq!(s.pfn_at(a + 123), Some(*f));
        let (_, flags) = s.crate_translate(a).unwrap();
        assert_eq!(flags, PAGE_KERNEL);
    }
    assert_eq!(s.pfn_at(addr - P), None);
    assert_eq!(s.pfn_at(addr + 10 * P), None);
    assert_eq!(
        s.pt.translate(VirtAddr::new(addr - P)),
        Err(PgTableError::NotMapped { addr: VirtAddr::new(addr - P) })
    );

    let (flush, got) = s.unmap(addr, 10).unwrap();
    assert_eq!(got, frames, "frames come back in address order");
    assert_eq!(flush, TlbFlushRange { start: VirtAddr::new(addr), nr_pages: 10 });
    assert_eq!(flush.pages().count(), 10);
    assert_eq!(flush.end(), VirtAddr::new(addr + 10 * P));
    // The tables stay (as on Linux): the next map at these addresses allocates nothing.
    assert_eq!(s.pt.nr_pagetable_pages(), 3);
    assert_eq!(s.ram.nr_free(), free_before - 3);
    for i in 0..10 {
        assert_eq!(s.pfn_at(addr + i * P), None);
    }
    s.map(addr, &frames).unwrap();
    assert_eq!((s.pt.nr_pagetable_pages(), s.ram.nr_free()), (3, free_before - 3), "tables reused");
    // The shrinker finds nothing to free while the PT maps pages.
    assert_eq!(s.shrink(), (0, 0));
    s.unmap(addr, 10).unwrap();
    // Now it frees the PT and PD, after one flush; the PDPT under the shared PML4 entry stays.
    assert_eq!(s.shrink(), (2, 1));
    assert_eq!(s.pt.nr_pagetable_pages(), 1);
    assert_eq!(s.table_pages_in_state(), 1);
    assert_eq!(s.ram.nr_free(), free_before - 1);
    assert_eq!(s.shrink(), (0, 0), "nothing left to shrink");
    s.map(addr, &frames).unwrap();
    assert_eq!(s.pt.nr_pagetable_pages(), 3);
    assert_eq!(s.pfn_at(addr + 9 * P), Some(frames[9]));
}

#[test]
fn crossing_table_boundaries_and_partial_unmap() {
    let mut s = setup(256);
    let frames = s.data_frames(6);
    // 2 pages below a 1 GiB boundary, 4 above: two PDs, two PTs, one PDPT.
    let addr = START + GIB - 2 * P;
    s.map(addr, &frames).unwrap();
    assert_eq!(s.pt.nr_pagetable_pages(), 5);
    // Unmapping the part below the boundary empties that PT and PD only: the shrinker frees
    // those two and keeps the ones still mapping pages.
    let (_, got) = s.unmap(addr, 2).unwrap();
    assert_eq!(got, frames[..2]);
    assert_eq!(s.shrink(), (2, 1));
    assert_eq!(s.pt.nr_pagetable_pages(), 3);
    for i in 2..6 {
        assert_eq!(s.pfn_at(addr + i * P), Some(frames[i as usize]));
    }
    // A PT shared with other mappings is kept until its last entry goes.
    let (_, got) = s.unmap(addr + 2 * P, 1).unwrap();
    assert_eq!(got, [frames[2]]);
    assert_eq!(s.shrink(), (0, 0));
    assert_eq!(s.pt.nr_pagetable_pages(), 3);
    s.unmap(addr + 3 * P, 3).unwrap();
    assert_eq!(s.shrink(), (2, 1));
    assert_eq!(s.pt.nr_pagetable_pages(), 1);
    // Across a 2 MiB boundary: one PD, two PTs.
    let addr = START + 7 * MIB2 - P;
    s.map(addr, &frames[..2]).unwrap();
    assert_eq!(s.pt.nr_pagetable_pages(), 4);
    s.unmap(addr, 2).unwrap();
    assert_eq!(s.shrink(), (3, 1));
    assert_eq!(s.pt.nr_pagetable_pages(), 1);
}

#[test]
fn the_shrinker_frees_in_batches_each_after_a_flush() {
    // One page in each of SHRINK_BATCH + 3 separate 2 MiB ranges: as many PTs under one PD.
    let n = crate::vmalloc::pgtable::SHRINK_BATCH + 3;
    let mut s = setup(256);
    let frames = s.data_frames(n);
    for (i, f) in frames.iter().enumerate() {
        s.map(START + i as u64 * MIB2, core::slice::from_ref(f)).unwrap();
    }
    assert_eq!(s.pt.nr_pagetable_pages(), 2 + n);
    for i in 0..n as u64 {
        s.unmap(START + i * MIB2, 1).unwrap();
    }
    let free = s.ram.nr_free();
    // n PTs and then their PD: two batches, two flushes.
    assert_eq!(s.shrink(), (n + 1, 2));
    assert_eq!((s.pt.nr_pagetable_pages(), s.ram.nr_free()), (1, free + n + 1));
}

#[test]
fn failure_half_way_unwinds_everything() {
    // 6 pages across a 1 GiB boundary need 4 tables below the (preallocated) PDPT: 2 PDs and
    // 2 PTs. The second PML4 entry holds an unrelated mapping whose tables must survive.
    for budget in 0..4 {
        let mut s = setup(256);
        s.pt.preallocate(&s.ram, GfpFlags::GFP_KERNEL).unwrap();
        let frames = s.data_frames(6);
        let other = s.data_frames(1);
        s.map(START + P4_ENTRY_SPAN, &other).unwrap();
        let tables = s.pt.nr_pagetable_pages();
        let free = s.ram.nr_free();
        let addr = START + GIB - 2 * P;
        s.ram.set_budget(budget);
        let err = s.map(addr, &frames).unwrap_err();
        s.ram.set_budget(usize::MAX);
        // The first table that could not be allocated decides the failing page: pages below
        // the boundary need 2 tables, the ones above 2 more.
        let failed_at = if budget < 2 { addr } else { START + GIB };
        assert_eq!(err, PgTableError::NoMemory { addr: VirtAddr::new(failed_at) }, "budget {budget}");
        // Tables allocated before the failure stay, empty, for the shrinker (no data page of
        // the caller's is touched).
        assert_eq!(s.pt.nr_pagetable_pages() - tables, free - s.ram.nr_free(), "budget {budget}");
        assert_eq!(
            s.pt.nr_pagetable_pages() - tables,
            budget,
            "budget {budget}: every page it got is a table"
        );
        for i in 0..6 {
            assert_eq!(s.pfn_at(addr + i * P), None, "budget {budget}: nothing left mapped");
        }
        assert_eq!(s.pfn_at(START + P4_ENTRY_SPAN), Some(other[0]));
        // The shrinker gives the empty tables back and leaves the other mapping's.
        assert_eq!(s.shrink().0, budget, "budget {budget}");
        assert_eq!((s.pt.nr_pagetable_pages(), s.ram.nr_free()), (tables, free), "budget {budget}");
        assert_eq!(s.pfn_at(START + P4_ENTRY_SPAN), Some(other[0]));
        // With enough pages it works.
        s.map(addr, &frames).unwrap();
        assert_eq!(s.pt.nr_pagetable_pages(), tables + 4);
    }
}

#[test]
fn failure_without_preallocation_keeps_only_the_pdpt() {
    // A PDPT hangs off a PML4 entry, which must stay stable once set (shared by every address
    // space), so an unwound map keeps it; the shrinker frees what is below it.
    let mut s = setup(64);
    let frames = s.data_frames(2);
    let free = s.ram.nr_free();
    s.ram.set_budget(2);
    let err = s.map(START, &frames).unwrap_err();
    s.ram.set_budget(usize::MAX);
    assert_eq!(err, PgTableError::NoMemory { addr: VirtAddr::new(START) });
    assert_eq!((s.pt.nr_pagetable_pages(), s.ram.nr_free()), (2, free - 2));
    assert_eq!(s.shrink(), (1, 1));
    assert_eq!((s.pt.nr_pagetable_pages(), s.ram.nr_free()), (1, free - 1));
}

#[test]
fn bad_requests_change_nothing() {
    let mut s = setup(128);
    let frames = s.data_frames(4);
    let addr = START + 16 * P;
    s.map(addr, &frames[..2]).unwrap();
    let tables = s.pt.nr_pagetable_pages();
    let free = s.ram.nr_free();

    // Over an existing mapping: the new pages before it are unwound, the old ones stay.
    let err = s.map(addr - 2 * P, &frames[2..4].iter().chain(&frames[..1]).copied().collect::<Vec<_>>());
    assert_eq!(err, Err(PgTableError::AlreadyMapped { addr: VirtAddr::new(addr) }));
    assert_eq!(s.pfn_at(addr - 2 * P), None);
    assert_eq!(s.pfn_at(addr - P), None);
    assert_eq!(s.pfn_at(addr), Some(frames[0]));

    assert_eq!(
        s.map(addr + 1, &frames[2..]),
        Err(PgTableError::Misaligned { addr: VirtAddr::new(addr + 1) })
    );
    assert_eq!(
        s.map(START - P, &frames[2..3]),
        Err(PgTableError::OutOfRange { addr: VirtAddr::new(START - P), nr_pages: 1 })
    );
    assert_eq!(
        s.map(END - P, &frames[2..4]),
        Err(PgTableError::OutOfRange { addr: VirtAddr::new(END - P), nr_pages: 2 })
    );
    assert!(matches!(s.unmap(addr, usize::MAX), Err(PgTableError::OutOfRange { .. })));
    // Unmapping a range with a hole: refused before anything is unmapped.
    assert_eq!(s.unmap(addr, 3), Err(PgTableError::NotMapped { addr: VirtAddr::new(addr + 2 * P) }));
    assert_eq!(s.pfn_at(addr), Some(frames[0]));
    assert_eq!(s.pfn_at(addr + P), Some(frames[1]));
    assert_eq!(s.pt.nr_pagetable_pages(), tables);
    assert_eq!(s.ram.nr_free(), free);
    // An empty map or unmap is a no-op.
    s.map(addr + 8 * P, &[]).unwrap();
    assert!(s.unmap(addr + 8 * P, 0).unwrap().0.is_empty());
    assert_eq!(s.pt.nr_pagetable_pages(), tables);
}

#[test]
fn range_must_be_whole_pml4_entries() {
    let ram = TestRam::new(8);
    let pml4 = ram.take();
    for (a, b) in [(START, START), (START + GIB, END), (START, END - P)] {
        // SAFETY: as in `setup`; the constructor fails before any table is touched.
        let r = unsafe {
            VmallocPageTables::new(pml4.phys(), ram.direct_map(), VirtAddr::new(a), VirtAddr::new(b))
        };
        assert!(matches!(r, Err(PgTableError::BadRange { .. })));
    }
}

#[test]
fn preallocate_fills_pml4_entries_or_unwinds() {
    let mut s = setup(64);
    let free = s.ram.nr_free();
    s.ram.set_budget(1);
    assert_eq!(
        s.pt.preallocate(&s.ram, GfpFlags::GFP_KERNEL),
        Err(PgTableError::NoMemory { addr: VirtAddr::new(START + P4_ENTRY_SPAN) })
    );
    s.ram.set_budget(usize::MAX);
    assert_eq!((s.pt.nr_pagetable_pages(), s.ram.nr_free()), (0, free));
    assert_eq!(s.pt.preallocate(&s.ram, GfpFlags::GFP_KERNEL), Ok(2));
    assert_eq!(s.pt.nr_pagetable_pages(), 2);
    // Idempotent; and mapping then unmapping never frees the PDPTs.
    assert_eq!(s.pt.preallocate(&s.ram, GfpFlags::GFP_KERNEL), Ok(0));
    let f = s.data_frames(1);
    s.map(START + P4_ENTRY_SPAN + 3 * GIB, &f).unwrap();
    assert_eq!(s.pt.nr_pagetable_pages(), 4);
    s.unmap(START + P4_ENTRY_SPAN + 3 * GIB, 1).unwrap();
    assert_eq!(s.shrink(), (2, 1));
    assert_eq!(s.pt.nr_pagetable_pages(), 2);
}
