//! In-kernel tests of vmap_pfn on the live page tables, against the local APIC's MMIO page
//! (device memory without a page descriptor): mm/vmalloc.c (6.12), vmap_pfn() and
//! vmap_pfn_apply().

use alloc::string::String;

use ::mm::vmalloc::{AddrPlace, AreaKind, VmallocError, VmapError, PAGE_KERNEL, PAGE_SPECIAL};
use ::mm::{GfpFlags, Pfn, PAGE_SIZE};
use x86_64::structures::paging::PageTableFlags as F;
use x86_64::VirtAddr;

use crate::arch::apic;
use crate::mm::page_alloc::Pages;
use crate::mm::vmalloc::*;

const P: usize = PAGE_SIZE;

fn state() -> (u64, VmallocCounts) {
    super::vmalloc_state()
}

/// The APIC page's frame; it has no page descriptor (not pfn_valid), which vmap_pfn needs.
fn lapic_pfn() -> Pfn {
    let (_, phys) = apic::mmio();
    let pfn = Pfn(phys / P as u64);
    assert!(crate::mm::node().page(pfn).is_none(), "the APIC page has no descriptor");
    pfn
}

crate::ktest!(
    // mm/vmalloc.c (6.12), vmap_pfn(): a VM_IOREMAP area from get_vm_area_caller() (guard
    // page), PTEs pte_mkspecial(pfn_pte(pfn, pgprot_nx(prot))). The APIC ID register read through it (uncached)
    // is this CPU's id; vunmap releases it and frees nothing.
    #[needs_memory]
    fn vmap_pfn_maps_the_apic_page_as_an_ioremap_area_without_phys() {
        let pfn = lapic_pfn();
        let before = state();
        let prot = PAGE_KERNEL.difference(F::NO_EXECUTE) | F::NO_CACHE | F::WRITE_THROUGH;
        // SAFETY: the APIC page is device memory; this test only reads its ID register.
        let va = unsafe { vmap_pfn(&[pfn, Pfn(pfn.0 + 1)], prot) }.expect("vmap_pfn of the APIC pages");
        let start = va.as_ptr() as usize;
        let (area, place) = find_vm_area(va.as_ptr()).expect("an area");
        assert_eq!((area.kind, area.phys_addr, area.nr_pages, area.size), (AreaKind::VmapPfn, 0, 2, 3 * P));
        assert_eq!(place, AddrPlace::Inside { offset: 0 });
        let (got, flags) = with_space(|s| s.tables.lookup_pte(VirtAddr::new(start as u64))).unwrap();
        assert_eq!((got, flags), (pfn, prot | F::NO_EXECUTE | PAGE_SPECIAL));
        // SAFETY: a 4-byte aligned, readable APIC register, mapped uncached just now.
        let id = unsafe { va.as_ptr().add(0x20).cast::<u32>().read_volatile() } >> 24;
        assert_eq!(id, apic::id());
        assert!(matches!(
            iounmap(va.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::WrongKind { kind: AreaKind::VmapPfn, .. }))
        ));
        vunmap(va.as_ptr()).expect("vunmap of a vmap_pfn area");
        assert!(find_vm_area(va.as_ptr()).is_none());
        // Parked until the lazy purge: a second unmap is refused as a double free of it.
        assert!(matches!(
            vunmap(va.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::Unpurged { area_start, .. })))
                if area_start == va.as_ptr() as usize
        ));
        purge_vmap_area_lazy();
        assert!(matches!(
            vunmap(va.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::NotAllocated { .. })))
        ));
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // mm/vmalloc.c (6.12), vmalloc_info_show(): a vmap_pfn area (VM_IOREMAP, phys_addr 0,
    // nr_pages 0) is printed with its caller and " ioremap", without pages= or phys=.
    #[needs_memory]
    fn vmap_pfn_area_is_an_ioremap_line_without_phys_in_vmallocinfo() {
        let pfn = lapic_pfn();
        let line = line!() + 2;
        // SAFETY: the APIC page is device memory; nothing accesses the mapping.
        let va = unsafe { vmap_pfn(&[pfn], PAGE_KERNEL | F::NO_CACHE) }.expect("vmap_pfn of the APIC page");
        let (area, _) = find_vm_area(va.as_ptr()).expect("an area");
        let mut info = String::new();
        write_vmallocinfo(&mut info).unwrap();
        let want =
            alloc::format!("{:#018x}-{:#018x}    8192 {}:{line} ioremap", area.start, area.end(), file!());
        assert!(info.lines().any(|l| l == want), "no line {want:?} in\n{info}");
        vunmap(va.as_ptr()).unwrap();
    }
);

crate::ktest!(
    // mm/vmalloc.c (6.12), vmap_pfn_apply(): WARN_ON_ONCE(pfn_valid(pfn)) -> -EINVAL, then
    // vmap_pfn() frees the area and returns NULL; __get_vm_area_node() returns NULL for size 0.
    // The protection checks are this kernel's. Each refusal is typed, warned with the caller,
    // and leaves nothing reserved or mapped.
    #[needs_memory]
    fn vmap_pfn_refuses_ram_no_frames_and_bad_protections() {
        let pfn = lapic_pfn();
        let page = Pages::alloc(GfpFlags::GFP_KERNEL, 0).unwrap();
        let ram = Pfn(page.frame().start_address().as_u64() / P as u64);
        let before = state();
        // SAFETY: every call below is refused before anything is mapped.
        unsafe {
            assert_eq!(
                vmap_pfn(&[pfn, ram], PAGE_KERNEL),
                Err(VmError::Vmalloc(VmallocError::VmapPfnValid { index: 1, pfn: ram }))
            );
            assert_eq!(vmap_pfn(&[], PAGE_KERNEL), Err(VmError::Vmalloc(VmallocError::NoPages)));
            for bad in [F::WRITABLE, PAGE_KERNEL | F::USER_ACCESSIBLE, PAGE_KERNEL | F::HUGE_PAGE] {
                assert!(
                    matches!(vmap_pfn(&[pfn], bad), Err(VmError::Vmalloc(VmallocError::BadProt { prot, .. })) if prot == bad.bits()),
                    "{bad:?}"
                );
            }
        }
        assert_eq!(state(), before);
        drop(page);
    }
);
