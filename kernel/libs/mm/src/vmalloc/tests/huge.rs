//! 2 MiB PMD mappings over emulated RAM (6.12 mm/vmalloc.c `vmap_try_huge_pmd`,
//! `vunmap_pmd_range`, `vmalloc_to_page`; arch/x86/mm/pgtable.c `pmd_set_huge`,
//! `pmd_clear_huge`, `pmd_free_pte_page`), cross-checked with the x86_64 crate's walker.

use std::vec::Vec;

use x86_64::structures::paging::PageTableFlags;
use x86_64::VirtAddr;

use super::pgtable::{setup, Setup, START};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::PageProvider;
use crate::vmalloc::{PgTableError, TlbFlushRange, HPAGE_PMD_NR, PAGE_KERNEL, PMD_ORDER, PMD_SIZE};

const P: u64 = PAGE_SIZE as u64;
const M2: u64 = PMD_SIZE as u64;

impl Setup {
    fn block(&self) -> Pfn {
        self.ram.alloc_pages(GfpFlags::GFP_KERNEL, PMD_ORDER).expect("an order-9 block of test RAM")
    }

    /// `map_huge_pmd`, with the flushes it asked for.
    fn map_huge(&mut self, addr: u64, head: Pfn) -> (Result<(), PgTableError>, Vec<TlbFlushRange>) {
        let mut flushes = Vec::new();
        // SAFETY: test blocks, owned by the test and never accessed through the mapping.
        let r = unsafe {
            self.pt
                .map_huge_pmd(&self.ram, GfpFlags::GFP_KERNEL, VirtAddr::new(addr), head, |f| flushes.push(f))
        };
        (r, flushes)
    }

    /// Every 4 KiB page of `[addr, addr + n pages)` and its translation, for "nothing changed".
    fn snapshot(&self, addr: u64, n: u64) -> (Vec<Option<Pfn>>, usize, usize) {
        let map = (0..n).map(|i| self.pt.vmalloc_to_pfn(VirtAddr::new(addr + i * P))).collect();
        (map, self.pt.nr_pagetable_pages(), self.ram.nr_free())
    }
}

#[test]
// mm/vmalloc.c (6.12.19) vmap_try_huge_pmd -> arch/x86/mm/pgtable.c pmd_set_huge: one PMD
// entry, `protval_4k_2_large(prot) | _PAGE_PSE`, no page table; vmalloc_to_page returns
// `pmd_page(*pmd) + ((addr & ~PMD_MASK) >> PAGE_SHIFT)`.
fn a_huge_pmd_maps_2mib_with_one_ps_entry_and_translates_every_page() {
    let mut s = setup(2048);
    let head = s.block();
    let addr = START + 3 * M2;
    let (r, flushes) = s.map_huge(addr, head);
    r.unwrap();
    assert!(flushes.is_empty(), "no table was there to free, so nothing to flush");
    // A PDPT and a PD; no PT below a huge entry.
    assert_eq!(s.pt.nr_pagetable_pages(), 2);
    assert_eq!(s.table_pages_in_state(), 2);
    for i in [0u64, 1, 255, 511] {
        let a = addr + i * P + 77;
        assert_eq!(s.pfn_at(a), Some(head.add(i)), "page {i}");
        let (pfn, flags) = s.pt.lookup_pte(VirtAddr::new(a)).unwrap();
        assert_eq!((pfn, flags), (head.add(i), PAGE_KERNEL | PageTableFlags::HUGE_PAGE));
        assert_eq!(s.crate_translate(a).unwrap().1, PAGE_KERNEL | PageTableFlags::HUGE_PAGE);
    }
    assert_eq!(s.pfn_at(addr - 1), None);
    assert_eq!(s.pfn_at(addr + M2), None);
    // The shrinker sees a PD in use and takes neither it nor the block for a table.
    assert_eq!(s.shrink(), (0, 0));
    assert_eq!(s.pfn_at(addr + 9 * P), Some(head.add(9)));
}

#[test]
// mm/vmalloc.c (6.12.19) vunmap_pmd_range: pmd_clear_huge clears the leaf and `continue`s:
// there is no page table below it to walk or free.
fn unmapping_a_huge_pmd_clears_it_passes_512_frames_and_frees_no_table() {
    let mut s = setup(2048);
    let head = s.block();
    let addr = START + M2;
    s.map_huge(addr, head).0.unwrap();
    let (tables, free) = (s.pt.nr_pagetable_pages(), s.ram.nr_free());
    let (flush, frames) = s.unmap(addr, HPAGE_PMD_NR).unwrap();
    assert_eq!(frames, (0..512).map(|i| head.add(i)).collect::<Vec<_>>(), "every 4 KiB frame, in order");
    assert_eq!(flush, TlbFlushRange { start: VirtAddr::new(addr), nr_pages: 512 }, "the whole 2 MiB");
    assert_eq!((s.pt.nr_pagetable_pages(), s.ram.nr_free()), (tables, free), "no table freed");
    assert_eq!(s.pfn_at(addr + 5 * P), None);
    // The PD is empty now: the shrinker frees it (the PDPT stays), never the data block.
    assert_eq!(s.shrink(), (1, 1));
    assert_eq!(s.ram.nr_free(), free + 1);
    assert_eq!(s.ram.page(head).unwrap().state(), crate::page::PageState::Allocated, "still ours");
    s.ram.free_pages(head, PMD_ORDER).unwrap();
}

#[test]
// arch/x86/mm/pgtable.c (6.12.19) pmd_free_pte_page (x86_64): a page table left under the PMD
// is unlinked, `flush_tlb_kernel_range(addr, addr + PAGE_SIZE - 1)` drops the
// paging-structure caches, and only then is the table page freed.
fn a_table_left_by_4k_mappings_is_freed_after_a_flush_to_map_huge() {
    let mut s = setup(2048);
    let addr = START + 2 * M2;
    let small = s.data_frames(3);
    s.map(addr + 10 * P, &small).unwrap();
    s.unmap(addr + 10 * P, 3).unwrap();
    // PDPT + PD + the empty PT that vfree keeps.
    assert_eq!(s.pt.nr_pagetable_pages(), 3);
    let free = s.ram.nr_free();
    let head = s.block();
    let (r, flushes) = s.map_huge(addr, head);
    r.unwrap();
    assert_eq!(flushes, [TlbFlushRange { start: VirtAddr::new(addr), nr_pages: 1 }]);
    assert_eq!(s.pt.nr_pagetable_pages(), 2, "the PT is gone");
    assert_eq!(s.table_pages_in_state(), 2);
    assert_eq!(s.ram.nr_free(), free - 512 + 1, "the block taken, the table page given back");
    assert_eq!(s.pfn_at(addr + 10 * P), Some(head.add(10)));
}

#[test]
// 6.12's vmap_try_huge_pmd returns 0 (falls back to PTEs) for an unaligned address or physical
// address; here the PMD call itself refuses. A PT that still maps a page would be freed under
// its mapping by 6.12 (its caller guarantees the range is empty); here it is refused.
fn bad_huge_maps_are_refused_and_change_nothing() {
    let mut s = setup(2048);
    let head = s.block();
    let addr = START + 4 * M2;
    let before = s.snapshot(addr - M2, 3 * 512);
    let check = |s: &Setup, what: &str| assert_eq!(s.snapshot(addr - M2, 3 * 512), before, "{what}");
    let (r, f) = s.map_huge(addr + P, head);
    assert_eq!(r, Err(PgTableError::HugeMisaligned { addr: VirtAddr::new(addr + P), phys: head.phys() }));
    assert!(f.is_empty());
    check(&s, "unaligned address");
    let (r, _) = s.map_huge(addr, head.add(1));
    assert_eq!(r, Err(PgTableError::HugeMisaligned { addr: VirtAddr::new(addr), phys: head.add(1).phys() }));
    check(&s, "unaligned block");
    let outside = START - M2;
    assert_eq!(
        s.map_huge(outside, head).0,
        Err(PgTableError::OutOfRange { addr: VirtAddr::new(outside), nr_pages: 512 })
    );
    check(&s, "outside the range");

    // Over a huge mapping.
    s.map_huge(addr, head).0.unwrap();
    let mapped = s.snapshot(addr - M2, 3 * 512);
    let other = s.block();
    let (r, f) = s.map_huge(addr, other);
    assert_eq!((r, f.len()), (Err(PgTableError::AlreadyMapped { addr: VirtAddr::new(addr) }), 0));
    assert_eq!(s.snapshot(addr - M2, 3 * 512).0, mapped.0);
    // 4 KiB pages into it, and partial unmaps of it.
    let small = s.data_frames(2);
    let inside = VirtAddr::new(addr + 7 * P);
    assert_eq!(s.map(addr + 7 * P, &small), Err(PgTableError::HugePage { addr: inside }));
    assert_eq!(s.unmap(addr + 7 * P, 2).unwrap_err(), PgTableError::HugePage { addr: inside });
    assert_eq!(s.unmap(addr, 511).unwrap_err(), PgTableError::HugePage { addr: VirtAddr::new(addr) });
    // A range that is mapped huge and then not mapped at all.
    assert_eq!(s.unmap(addr, 1024).unwrap_err(), PgTableError::NotMapped { addr: VirtAddr::new(addr + M2) });
    assert_eq!(s.snapshot(addr - M2, 3 * 512).0, mapped.0);
    s.unmap(addr, 512).unwrap();

    // Over a page table that still maps a page.
    let next = addr + M2;
    s.map(next + 300 * P, &small[..1]).unwrap();
    let mapped = s.snapshot(addr - M2, 3 * 512);
    let (r, f) = s.map_huge(next, other);
    assert_eq!((r, f.len()), (Err(PgTableError::AlreadyMapped { addr: VirtAddr::new(next + 300 * P) }), 0));
    assert_eq!(s.snapshot(addr - M2, 3 * 512), mapped, "the table and its page stay");
}

#[test]
// mm/vmalloc.c (6.12.19) vunmap_range_noflush walks PMD by PMD: huge leaves and page tables in
// one range are both unmapped.
fn one_unmap_covers_huge_pmds_and_4k_pages_together() {
    let mut s = setup(2048);
    let addr = START + 6 * M2;
    let small = s.data_frames(4);
    s.map(addr - 4 * P, &small).unwrap();
    let (a, b) = (s.block(), s.block());
    s.map_huge(addr, a).0.unwrap();
    s.map_huge(addr + M2, b).0.unwrap();
    let (flush, frames) = s.unmap(addr - 4 * P, 4 + 1024).unwrap();
    let mut want = small.clone();
    want.extend((0..512).map(|i| a.add(i)));
    want.extend((0..512).map(|i| b.add(i)));
    assert_eq!(frames, want);
    assert_eq!(flush.nr_pages, 1028);
    for x in [addr - P, addr, addr + M2 + 511 * P] {
        assert_eq!(s.pfn_at(x), None);
    }
    // The space can be mapped again with 4 KiB pages (a new PT under the cleared PMD).
    s.map(addr, &small).unwrap();
    assert_eq!(s.pfn_at(addr + 3 * P), Some(small[3]));
    assert_eq!(s.pt.nr_pagetable_pages(), 4, "PDPT, PD, the old PT before addr, a new PT");
}
