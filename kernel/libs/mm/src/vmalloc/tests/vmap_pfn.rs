//! vmap_pfn over emulated RAM: 6.12's `vmap_pfn` / `vmap_pfn_apply` (mm/vmalloc.c): a
//! `VM_IOREMAP` area without `phys=`, `pgprot_nx` + `pte_mkspecial` PTEs, pfn_valid frames
//! refused with nothing left behind, release by vunmap.

use core::panic::Location;
use std::format;

use x86_64::structures::paging::PageTableFlags as F;
use x86_64::VirtAddr;

use super::space::setup;
use crate::addr::{Pfn, PAGE_SIZE};
use crate::page::{PageProvider, PageState};
use crate::vmalloc::ioremap::ioremap_align;
use crate::vmalloc::{
    AreaKind, TlbFlushRange, VmFlags, VmallocError, VmallocInfoLine, VmapError, PAGE_KERNEL, PAGE_SPECIAL,
};

const P: usize = PAGE_SIZE;
/// Frames past the emulated RAM (no descriptor): the local APIC and I/O APIC pages.
const DEV: [Pfn; 3] = [Pfn(0xfee00), Pfn(0xfec00), Pfn(0xfed00)];

fn no_flush(r: TlbFlushRange) {
    panic!("unexpected flush {r:?}");
}

// mm/vmalloc.c (6.12), vmap_pfn(): get_vm_area_caller(count * PAGE_SIZE, VM_IOREMAP, caller)
// then vmap_pfn_apply() writes pte_mkspecial(pfn_pte(pfn, pgprot_nx(prot))) for each frame in
// order; vmalloc_info_show() prints "ioremap" for VM_IOREMAP, no pages= (nr_pages 0) and no
// phys= (phys_addr 0); the area has a guard page and ioremap's alignment (__get_vm_area_node).
#[test]
fn vmap_pfn_maps_each_frame_special_nx_as_an_ioremap_area_without_phys() {
    let (ram, mut s) = setup(64);
    let caller = Location::caller();
    let line = caller.line();
    // SAFETY: frames outside the test RAM, which nothing reads.
    let area =
        unsafe { s.vmap_pfn(&ram, &DEV, PAGE_KERNEL.difference(F::NO_EXECUTE), caller, no_flush) }.unwrap();
    assert_eq!((area.kind, area.phys_addr, area.nr_pages, area.size), (AreaKind::VmapPfn, 0, 3, 4 * P));
    assert_eq!(area.flags, VmFlags::VM_IOREMAP);
    assert_eq!(area.start % ioremap_align(3 * P), 0);
    for (i, pfn) in DEV.iter().enumerate() {
        let (got, flags) = s.tables.lookup_pte(VirtAddr::new((area.start + i * P) as u64)).unwrap();
        assert_eq!(got, *pfn);
        assert_eq!(flags, PAGE_KERNEL | PAGE_SPECIAL, "pgprot_nx and pte_mkspecial");
    }
    assert!(s.tables.lookup_pte(VirtAddr::new((area.start + 3 * P) as u64)).is_err(), "guard page");
    assert_eq!(
        format!("{}", VmallocInfoLine(&area)),
        format!("0xffffc90000000000-0xffffc90000004000   16384 {}:{line} ioremap", file!())
    );
    // vunmap (remove_vm_area) releases it and frees nothing; iounmap names vunmap.
    let free = ram.nr_free();
    assert_eq!(
        s.iounmap(&ram, area.start, no_flush),
        Err(VmallocError::WrongKind { addr: area.start, kind: AreaKind::VmapPfn })
    );
    let mut flushed = None;
    s.vunmap(&ram, area.start, |r| flushed = Some(r)).unwrap();
    assert_eq!(flushed, None, "the range waits for the lazy purge");
    s.purge_vmap_area_lazy(|r| flushed = Some(r));
    assert_eq!(flushed, Some(TlbFlushRange { start: VirtAddr::new(area.start as u64), nr_pages: 4 }));
    assert_eq!(ram.nr_free(), free);
    assert_eq!(s.areas.nr_areas(), 0);
    assert_eq!(
        s.vunmap(&ram, area.start, no_flush).unwrap_err(),
        VmallocError::Area(VmapError::NotAllocated {
            addr: area.start,
            free_start: area.start,
            free_end: s.areas.range().1
        })
    );
    s.areas.check().unwrap();
}

// mm/vmalloc.c (6.12), vmap_pfn_apply(): "if (WARN_ON_ONCE(pfn_valid(pfn))) return -EINVAL;",
// after which vmap_pfn() does free_vm_area(area) and returns NULL: nothing stays reserved or
// mapped. A reserved descriptor is still pfn_valid.
#[test]
fn vmap_pfn_refuses_a_pfn_valid_frame_and_leaves_nothing() {
    let (ram, mut s) = setup(64);
    let ram_pfn = Pfn(5);
    let before = (ram.nr_free(), s.areas.nr_areas(), s.areas.free_bytes());
    // SAFETY: refused before anything is mapped.
    let e =
        unsafe { s.vmap_pfn(&ram, &[DEV[0], ram_pfn, DEV[1]], PAGE_KERNEL, Location::caller(), no_flush) };
    assert_eq!(e.unwrap_err(), VmallocError::VmapPfnValid { index: 1, pfn: ram_pfn });
    assert_eq!((ram.nr_free(), s.areas.nr_areas(), s.areas.free_bytes()), before);
    // A reserved descriptor (firmware memory): pfn_valid all the same.
    let reserved = Pfn(7);
    ram.page(reserved).unwrap().set_state(PageState::Reserved);
    // SAFETY: refused.
    let e = unsafe { s.vmap_pfn(&ram, &[reserved], PAGE_KERNEL, Location::caller(), no_flush) };
    assert_eq!(e.unwrap_err(), VmallocError::VmapPfnValid { index: 0, pfn: reserved });
    assert!(s.tables.lookup_pte(VirtAddr::new(s.areas.range().0 as u64)).is_err());
    s.areas.check().unwrap();
}

// mm/vmalloc.c (6.12), __get_vm_area_node(): a size of 0 returns NULL (vmap_pfn of no frames);
// a count whose size cannot be reserved fails the area allocation. The protection checks are
// this kernel's (6.12 takes any pgprot_t): each refusal names its reason, nothing is reserved.
#[test]
fn vmap_pfn_refuses_no_frames_a_huge_count_and_bad_protections() {
    let (ram, mut s) = setup(64);
    let before = (ram.nr_free(), s.areas.nr_areas(), s.areas.free_bytes());
    // SAFETY: all refused.
    unsafe {
        assert_eq!(
            s.vmap_pfn(&ram, &[], PAGE_KERNEL, Location::caller(), no_flush),
            Err(VmallocError::NoPages)
        );
        for bad in [
            F::WRITABLE,
            PAGE_KERNEL | F::USER_ACCESSIBLE,
            PAGE_KERNEL | F::HUGE_PAGE,
            PAGE_KERNEL | F::BIT_10,
        ] {
            let e = s.vmap_pfn(&ram, &DEV, bad, Location::caller(), no_flush).unwrap_err();
            assert!(matches!(e, VmallocError::BadProt { prot, .. } if prot == bad.bits()), "{bad:?}: {e:?}");
        }
    }
    // More frames than the range has pages (with the guard page): TooLarge, before the frames
    // are scanned. The array is 2^27 frames (1 GiB): natively only, Miri cannot build it in CI
    // time (the check is one comparison in safe code).
    if !cfg!(miri) {
        let (lo, hi) = s.areas.range();
        let huge = std::vec![DEV[0]; (hi - lo) / P];
        // SAFETY: refused.
        let e = unsafe { s.vmap_pfn(&ram, &huge, PAGE_KERNEL, Location::caller(), no_flush) }.unwrap_err();
        assert_eq!(e, VmallocError::Area(VmapError::TooLarge { size: hi - lo, max: hi - lo - P }));
    }
    assert_eq!((ram.nr_free(), s.areas.nr_areas(), s.areas.free_bytes()), before);
}
