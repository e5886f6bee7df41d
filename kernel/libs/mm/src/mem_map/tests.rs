//! Host tests of the vmemmap: lookups in holes, at the edges and past the end over emulated RAM
//! ([`ContiguousVmemmap`]), and the page tables [`VmemmapPageTables`] builds, walked in emulated
//! RAM.

use x86_64::structures::paging::{PageTable, PageTableFlags as F};
use x86_64::PhysAddr;

use super::*;
use crate::memmap::{MemRegion, RegionKind::Usable};
use crate::page::PageState;
use crate::testing::{EmulatedRam, TestMachine};

const MIB: u64 = 1 << 20;

/// Every lookup question on a machine whose section `hole` has no RAM.
fn check_lookups(m: &TestMachine, hole: u64) {
    let mm = m.node.mem_map();
    let pps = mm.pages_per_section();
    assert_eq!(mm.end_pfn(), mm.nr_sections() as u64 * pps);
    assert_eq!(mm.nr_pages() as u64, mm.nr_present_sections() as u64 * pps);
    let (hole_start, hole_end) = (hole * pps, (hole + 1) * pps);
    for pfn in [hole_start, hole_start + 1, hole_end - 1] {
        assert!(mm.page(Pfn(pfn)).is_none(), "pfn {pfn:#x} in the missing section");
        assert!(!mm.pfn_valid(Pfn(pfn)) && mm.pfn_to_index(Pfn(pfn)).is_none());
        // The array is there (no fault): an absent descriptor.
        // SAFETY: below `end_pfn`, so backed; read only.
        let raw = unsafe { &*mm.vmemmap_base().add(pfn as usize) };
        assert!(raw.is_absent() && raw.state() == PageState::Reserved && raw.compound_head().is_none());
        assert_eq!(mm.page_to_index(raw), None, "an absent descriptor has no index");
        // The owner lookups' form answers the absent descriptor itself, which no owner claims.
        assert!(mm.descriptor(Pfn(pfn)).is_some_and(|d| core::ptr::eq(d, raw)));
        assert!(crate::page::PageProvider::descriptor(&m.node, Pfn(pfn)).is_some_and(Page::is_absent));
    }
    // The edges of the hole and of the array.
    for pfn in [0, hole_start - 1, hole_end, mm.end_pfn() - 1] {
        let p = mm.page(Pfn(pfn)).unwrap_or_else(|| panic!("pfn {pfn:#x} has a descriptor"));
        assert!(!p.is_absent());
        assert_eq!(mm.pfn_to_index(Pfn(pfn)), Some(pfn as u32));
        assert_eq!(mm.index_to_pfn(pfn as u32), Pfn(pfn));
        assert_eq!(mm.page_to_pfn(p), Some(Pfn(pfn)));
        assert!(core::ptr::eq(mm.page_at(pfn as u32), p));
        assert!(core::ptr::eq(mm.vmemmap_base().wrapping_add(pfn as usize), p), "vmemmap + pfn");
    }
    // Past the end: no array, no descriptor.
    for pfn in [mm.end_pfn(), mm.end_pfn() + 1, NO_PAGE as u64, 1 << 40, u64::MAX] {
        assert!(mm.page(Pfn(pfn)).is_none() && !mm.pfn_valid(Pfn(pfn)), "pfn {pfn:#x}");
        assert!(mm.descriptor(Pfn(pfn)).is_none());
        assert!(m.node.page(Pfn(pfn)).is_none());
    }
    // A reference that is no descriptor of this map.
    let other = Page::new_reserved(0, 0);
    assert_eq!(mm.page_to_index(&other), None);
    // The free paths keep their errors: a hole is not managed memory.
    let e = m.node.free_pages(Pfn(hole_start), 0).unwrap_err();
    assert_eq!(e, crate::page::FreePagesError::NotManaged { pfn: Pfn(hole_start) });
    let e = m.node.free_pages(Pfn(mm.end_pfn()), 0).unwrap_err();
    assert_eq!(e, crate::page::FreePagesError::NotManaged { pfn: Pfn(mm.end_pfn()) });
}

#[test]
fn mem_map_lookups_in_holes_at_edges_and_past_the_end() {
    let m = TestMachine::small();
    // small_map: section 5 ([0x140000, 0x180000)) has no RAM; 8 sections of 64 pages.
    assert_eq!((m.node.mem_map().nr_sections(), m.node.mem_map().nr_present_sections()), (8, 7));
    check_lookups(&m, 5);
    // The contiguous backing pays for the whole array, holes included.
    let mm = m.node.mem_map();
    assert_eq!(mm.descriptor_bytes(), 8 * 64 * 32);
    assert_eq!(m.memblock.reserved_bytes_of("mem_map"), mm.descriptor_bytes().next_multiple_of(4096));
    assert_eq!(mm.table_bytes(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "16 MiB of emulated RAM; the small machine covers the same paths")]
fn mem_map_lookups_standard_machine() {
    let m = TestMachine::standard();
    check_lookups(&m, 8);
    // A hole inside a section with RAM has reserved descriptors (0x9f000 is firmware's).
    let p = m.node.mem_map().page(Pfn(0x9f)).expect("a reserved descriptor");
    assert_eq!(p.state(), PageState::Reserved);
    assert!(!p.is_absent());
}

#[test]
fn mem_map_too_many_pfns_for_32_bit_indices() {
    // RAM at 16 TiB: pfns reach 2^32, which 32-bit indices (NO_PAGE = u32::MAX) cannot name.
    let map = [MemRegion::new(MIB, 2 * MIB, Usable), MemRegion::new(16 << 40, (16 << 40) + MIB, Usable)];
    let ram = EmulatedRam::new(4096);
    let mut mb = MemBlock::new(&map).unwrap();
    // SAFETY: fails before touching memory.
    let r = unsafe { MemMap::new(&mut mb, ram.direct_map(), 20, 0, |_| 0, &mut ContiguousVmemmap::new()) };
    assert_eq!(r.err(), Some(MemMapError::TooManyPages { pages: (16 << 40 >> 12) + 256 }));
}

/// The leaf entry (physical address, flags, level: 1 = 4 KiB, 2 = 2 MiB) of `va`.
fn translate(dm: DirectMap, root: PhysAddr, va: u64) -> Option<(PhysAddr, F, u32)> {
    let mut table = root;
    for level in [4u32, 3, 2, 1] {
        // SAFETY: tables of the test's page tables in emulated RAM, read only.
        let t = unsafe { &*(dm.virt(table) as *const PageTable) };
        let e = &t[((va >> (12 + 9 * (level - 1))) & 511) as usize];
        if e.is_unused() {
            return None;
        }
        if level == 1 || e.flags().contains(F::HUGE_PAGE) {
            let off = va & ((1 << (12 + 9 * (level - 1))) - 1);
            return Some((e.addr() + off, e.flags(), level));
        }
        table = e.addr();
    }
    unreachable!()
}

const VMEMMAP: u64 = 0xffff_ea00_0000_0000;

#[test]
fn vmemmap_page_tables_map_descriptors_and_share_the_hole_page() {
    let ram = EmulatedRam::new(16 * MIB as usize);
    let dm = ram.direct_map();
    let mut mb = MemBlock::new(&[MemRegion::new(0, 16 * MIB, Usable)]).unwrap();
    let root = mb.alloc(4096, 4096, "root").unwrap();
    let mut vm = VmemmapPageTables::new(root, VMEMMAP, 1 << 40);
    // 2 MiB of descriptors describe 64 Ki pfns (PMD 0); then half a PMD, a hole of one and a
    // half PMDs, a present half PMD.
    let end = 4 * 65536;
    assert_eq!(vm.init(&mut mb, dm, end).unwrap().as_ptr() as u64, VMEMMAP);
    vm.populate(&mut mb, dm, Pfn(0), Pfn(65536 + 32768)).unwrap();
    vm.populate_hole(&mut mb, dm, Pfn(65536 + 32768), Pfn(3 * 65536)).unwrap();
    vm.populate(&mut mb, dm, Pfn(3 * 65536), Pfn(3 * 65536 + 32768)).unwrap();
    vm.populate_hole(&mut mb, dm, Pfn(3 * 65536 + 32768), Pfn(end)).unwrap();
    let u = vm.usage();
    assert_eq!((u.pmd_mappings, u.pte_mappings), (1, 256 + 256));
    assert_eq!((u.hole_pmds, u.hole_ptes), (1, 256 + 256));
    assert_eq!(u.descriptor_bytes, 2 * MIB + 2 * MIB / 2 * 2);
    assert_eq!(mb.reserved_bytes_of("mem_map"), u.descriptor_bytes);
    // PDPT, PD, 3 private PTs (PMDs 1 and 3) ... and the shared hole table; plus the hole page.
    assert_eq!(u.page_tables, 2 + 2 + 1);
    assert_eq!(u.table_bytes, (u.page_tables + 1) * 4096);
    assert_eq!(mb.reserved_bytes_of("vmemmap"), u.table_bytes);

    let va = |pfn: u64| VMEMMAP + pfn * 32;
    // PMD 0: one 2 MiB writable mapping of memblock memory.
    let (pa0, f, level) = translate(dm, root, va(0)).unwrap();
    assert_eq!(level, 2);
    assert!(f.contains(F::WRITABLE | F::NO_EXECUTE | F::GLOBAL) && pa0.is_aligned(2 * MIB));
    assert_eq!(translate(dm, root, va(65535)).unwrap().0, pa0 + (2 * MIB - 32));
    // PMD 1, first half: 4 KiB writable pages, physically contiguous.
    let (pa1, f, level) = translate(dm, root, va(65536)).unwrap();
    assert!(level == 1 && f.contains(F::WRITABLE));
    assert_eq!(translate(dm, root, va(65536 + 32767)).unwrap().0, pa1 + (MIB - 32));
    // Holes: read-only, all the same page of absent descriptors.
    let (hole, f, level) = translate(dm, root, va(65536 + 32768)).unwrap();
    assert!(level == 1 && !f.contains(F::WRITABLE) && f.contains(F::PRESENT));
    for pfn in [65536 + 32768 + 128, 2 * 65536, 3 * 65536 - 1, 3 * 65536 + 32768, end - 1] {
        let (pa, f, _) = translate(dm, root, va(pfn)).unwrap();
        assert_eq!(pa.align_down(4096u64), hole, "pfn {pfn:#x}");
        assert!(!f.contains(F::WRITABLE));
    }
    // SAFETY: the hole page is in emulated RAM, read only.
    let absent = unsafe { &*(dm.virt(hole) as *const [Page; 128]) };
    assert!(absent.iter().all(Page::is_absent));
    // Past the populated part: nothing mapped.
    assert!(translate(dm, root, va(end)).is_none());
    // Populating twice is refused, and so is a region that is mapped already or too small.
    assert_eq!(
        vm.populate(&mut mb, dm, Pfn(0), Pfn(32768)),
        Err(MemMapError::VmemmapOccupied { addr: va(0) })
    );
    assert!(matches!(
        vm.populate_hole(&mut mb, dm, Pfn(65536), Pfn(65536 + 128)),
        Err(MemMapError::VmemmapOccupied { .. })
    ));
    assert_eq!(
        VmemmapPageTables::new(root, VMEMMAP, 1 << 40).init(&mut mb, dm, end).err(),
        Some(MemMapError::VmemmapOccupied { addr: VMEMMAP })
    );
    assert_eq!(
        VmemmapPageTables::new(root, VMEMMAP + (1 << 40), 1 << 20).init(&mut mb, dm, end).err(),
        Some(MemMapError::VmemmapTooSmall { needed: end * 32, size: 1 << 20 })
    );
    // Sections whose descriptors do not fill pages cannot be mapped.
    assert_eq!(
        vm.populate(&mut mb, dm, Pfn(end + 64), Pfn(end + 128)),
        Err(MemMapError::VmemmapUnaligned { pfn: end + 64 })
    );
}
