//! ioremap / iounmap over emulated RAM: 6.12's `__ioremap_caller` checks, alignment, cache
//! bits, `/proc/vmallocinfo` lines, and iounmap freeing nothing.

use core::cell::Cell;
use std::format;

use x86_64::structures::paging::PageTableFlags as F;
use x86_64::VirtAddr;

use super::space::setup;
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::vmalloc::ioremap::ioremap_align;
use crate::vmalloc::{
    AreaKind, IoremapRequest, PageCacheMode, TlbFlushRange, VmFlags, VmallocError, VmallocInfoLine,
    VmapAreaRequest, VmapError, PAGE_KERNEL,
};

const START: usize = 0xffff_c900_0000_0000;
const P: usize = PAGE_SIZE;
/// The local APIC's default base: MMIO, no page descriptor in the test RAM.
const LAPIC: u64 = 0xfee0_0000;

#[track_caller]
fn req(phys: u64, size: usize, mode: PageCacheMode) -> IoremapRequest {
    IoremapRequest { phys, size, mode, phys_bits: 46, caller: core::panic::Location::caller() }
}

fn no_flush(r: TlbFlushRange) {
    panic!("unexpected flush {r:?}");
}

// arch/x86/mm/ioremap.c, __ioremap_caller(): "Mappings have to be page-aligned": offset =
// phys_addr & ~PAGE_MASK is added back to the returned address, vm_struct.phys_addr is the
// aligned start, and ioremap() is _PAGE_CACHE_MODE_UC_MINUS (PCD with the PAT-less table).
#[test]
fn ioremap_maps_the_aligned_range_and_returns_the_offset() {
    let (ram, mut s) = setup(64);
    let line = line!() + 1;
    let (area, va) = s.ioremap(&ram, req(LAPIC + 0x20, 0x10, PageCacheMode::UcMinus), no_flush).unwrap();
    assert_eq!(va, area.start + 0x20);
    assert_eq!((area.kind, area.phys_addr, area.nr_pages, area.size), (AreaKind::Ioremap, LAPIC, 1, 2 * P));
    assert_eq!(area.flags, VmFlags::VM_IOREMAP);
    let (pfn, flags) = s.tables.lookup_pte(VirtAddr::new(area.start as u64)).unwrap();
    assert_eq!(pfn, Pfn(LAPIC / P as u64));
    assert_eq!(flags, PAGE_KERNEL | F::NO_CACHE);
    // The guard page is not mapped.
    assert!(s.tables.lookup_pte(VirtAddr::new((area.start + P) as u64)).is_err());
    // mm/vmalloc.c, vmalloc_info_show(): no pages= (nr_pages is 0), phys=%pa, ioremap.
    assert_eq!(
        format!("{}", VmallocInfoLine(&area)),
        format!(
            "0xffffc90000000000-0xffffc90000002000    8192 {}:{line} phys=0x00000000fee00000 ioremap",
            file!()
        )
    );

    // A range crossing a page boundary maps both pages: PAGE_ALIGN(last_addr + 1) - phys_addr.
    let (two, va2) = s.ioremap(&ram, req(LAPIC + 0xff8, 0x10, PageCacheMode::UcMinus), no_flush).unwrap();
    assert_eq!((two.nr_pages, va2 - two.start), (2, 0xff8));
    let second = s.tables.lookup_pte(VirtAddr::new((two.start + P) as u64)).unwrap().0;
    assert_eq!(second, Pfn(LAPIC / P as u64 + 1));

    let flushed = Cell::new(None);
    let free = ram.nr_free();
    // iounmap() masks the offset (PAGE_MASK & addr) and frees nothing.
    s.iounmap(&ram, va, |r| flushed.set(Some(r))).unwrap();
    assert_eq!(flushed.get(), None, "the range waits for the lazy purge");
    s.purge_vmap_area_lazy(|r| flushed.set(Some(r)));
    assert_eq!(flushed.get(), Some(TlbFlushRange { start: VirtAddr::new(area.start as u64), nr_pages: 2 }));
    assert_eq!(ram.nr_free(), free);
    s.iounmap(&ram, va2, |_| {}).unwrap();
    assert_eq!(s.areas.nr_areas(), 0);
    s.areas.check().unwrap();
}

// mm/vmalloc.c, __get_vm_area_node(): VM_IOREMAP areas are aligned to
// 1 << clamp(get_count_order_long(size), PAGE_SHIFT, IOREMAP_MAX_ORDER), IOREMAP_MAX_ORDER being
// PUD_SHIFT on x86_64 (arch/x86/include/asm/page_types.h); the guard page is added after.
#[test]
fn ioremap_areas_are_aligned_to_their_size_order() {
    assert_eq!(ioremap_align(P), P);
    assert_eq!(ioremap_align(3 * P), 4 * P);
    assert_eq!(ioremap_align(5 << 20), 8 << 20);
    assert_eq!(ioremap_align(3 << 30), 1 << 30);
    let (ram, mut s) = setup(64);
    s.areas.alloc(P, P, true).unwrap();
    let (a, _) = s.ioremap(&ram, req(LAPIC, 3 * P, PageCacheMode::Uc), no_flush).unwrap();
    assert_eq!((a.start, a.size), (START + 4 * P, 4 * P));
    // A vmalloc after it fills the hole the alignment left below it.
    let v = s.areas.alloc(P, P, true).unwrap();
    assert_eq!(v.start, START + 2 * P);
}

// arch/x86/mm/ioremap.c, ioremap_uc/ioremap_wc/ioremap_wt/ioremap_cache and
// arch/x86/mm/init.c's __cachemode2pte_tbl with PAT off (arch/x86/mm/pat/memtype.c,
// pat_bp_init: slots WB, WT, UC-, UC): UC is PCD|PWT, WT is PWT, WC falls back to UC- (PCD),
// WB sets neither.
#[test]
fn cache_modes_set_linux_pte_bits() {
    let (ram, mut s) = setup(64);
    for (mode, bits) in [
        (PageCacheMode::Uc, F::NO_CACHE | F::WRITE_THROUGH),
        (PageCacheMode::UcMinus, F::NO_CACHE),
        (PageCacheMode::Wc, F::NO_CACHE),
        (PageCacheMode::Wt, F::WRITE_THROUGH),
        (PageCacheMode::Wb, F::empty()),
    ] {
        let (a, va) = s.ioremap(&ram, req(LAPIC, P, mode), no_flush).unwrap();
        assert_eq!(s.tables.lookup_pte(VirtAddr::new(va as u64)).unwrap().1, PAGE_KERNEL | bits, "{mode:?}");
        s.iounmap(&ram, a.start, |_| {}).unwrap();
    }
}

// arch/x86/mm/ioremap.c, __ioremap_caller(): "Don't allow wraparound or zero size",
// phys_addr_valid() (addr >> x86_phys_bits == 0), and "ioremap on RAM" for a page that is System
// RAM and not PageReserved (__ioremap_check_ram). Each refusal changes nothing.
#[test]
fn ioremap_refuses_zero_size_wraparound_bad_phys_and_ram() {
    let (ram, mut s) = setup(64);
    let (free, areas) = (ram.nr_free(), s.areas.nr_areas());
    let e = s.ioremap(&ram, req(LAPIC, 0, PageCacheMode::UcMinus), no_flush).unwrap_err();
    assert_eq!(e, VmallocError::IoremapRange { phys: LAPIC, size: 0 });
    let e = s.ioremap(&ram, req(u64::MAX - 0xff, 0x200, PageCacheMode::UcMinus), no_flush).unwrap_err();
    assert_eq!(e, VmallocError::IoremapRange { phys: u64::MAX - 0xff, size: 0x200 });
    let e = s.ioremap(&ram, req(1 << 46, P, PageCacheMode::UcMinus), no_flush).unwrap_err();
    assert_eq!(e, VmallocError::IoremapInvalidPhys { phys: 1 << 46, phys_bits: 46 });
    // A free page and an allocated one are both the page allocator's.
    let used = ram.take();
    for pfn in [Pfn(5), used] {
        let phys = pfn.phys().as_u64();
        let e = s.ioremap(&ram, req(phys - 8, P + 16, PageCacheMode::UcMinus), no_flush).unwrap_err();
        assert_eq!(e, VmallocError::IoremapOnRam { phys: phys - 8, last: phys + P as u64 + 7, pfn });
        let msg = format!("{e}");
        assert!(msg.starts_with("ioremap on RAM at 0x"), "{msg}");
    }
    assert_eq!((ram.nr_free(), s.areas.nr_areas()), (free - 1, areas));
    s.areas.check().unwrap();
}

// __ioremap_check_ram() looks only at the pages wholly inside the range (start_pfn rounds up,
// stop_pfn down), so less than a page inside RAM is not refused; a page with no descriptor (not
// managed: pfn 0 here) is not RAM the page allocator uses. vm_struct.phys_addr 0 prints no phys=.
#[test]
fn ioremap_allows_partial_ram_pages_and_unmanaged_frames() {
    let (ram, mut s) = setup(64);
    let (a, va) =
        s.ioremap(&ram, req(Pfn(5).phys().as_u64() + 8, 16, PageCacheMode::UcMinus), no_flush).unwrap();
    assert_eq!(va, a.start + 8);
    let (z, _) = s.ioremap(&ram, req(0, P, PageCacheMode::UcMinus), no_flush).unwrap();
    let line = format!("{}", VmallocInfoLine(&z));
    assert!(line.ends_with(" ioremap") && !line.contains("phys="), "{line}");
    s.iounmap(&ram, a.start, |_| {}).unwrap();
    s.iounmap(&ram, z.start, |_| {}).unwrap();
}

// The release functions refuse each other's areas (vfree of an ioremap area would free device
// frames as pages), and a double iounmap is named; nothing changes.
#[test]
fn iounmap_refuses_other_kinds_and_double_unmap() {
    let (ram, mut s) = setup(64);
    let v = s.vmalloc(&ram, GfpFlags::GFP_KERNEL, VmapAreaRequest::new(P), no_flush).unwrap();
    let (io, _) = s.ioremap(&ram, req(LAPIC, P, PageCacheMode::UcMinus), no_flush).unwrap();
    assert_eq!(
        s.iounmap(&ram, v.start, no_flush).unwrap_err(),
        VmallocError::WrongKind { addr: v.start, kind: AreaKind::Vmalloc }
    );
    let e = s.vfree(&ram, io.start, no_flush).unwrap_err();
    assert_eq!(e, VmallocError::WrongKind { addr: io.start, kind: AreaKind::Ioremap });
    assert_eq!(format!("{e}"), format!("{:#x} is an ioremap area: release it with iounmap", io.start));
    assert!(s.vunmap(&ram, io.start, no_flush).is_err());
    s.iounmap(&ram, io.start, |_| {}).unwrap();
    let e = s.iounmap(&ram, io.start, no_flush).unwrap_err();
    assert!(matches!(e, VmallocError::Area(VmapError::Unpurged { .. })), "{e:?}");
    s.purge_vmap_area_lazy(|_| {});
    let e = s.iounmap(&ram, io.start, no_flush).unwrap_err();
    assert!(matches!(e, VmallocError::Area(VmapError::NotAllocated { .. })), "{e:?}");
    s.vfree(&ram, v.start, |_| {}).unwrap();
}
