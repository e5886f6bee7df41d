//! In-kernel tests of the vmemmap (`mm::mem_map` with `VmemmapPageTables`): the live page tables
//! map every descriptor where `vmemmap + pfn * 32` says, onto the memblock memory the boot
//! reserved for it; holes read as absent descriptors without faulting; the free paths keep their
//! errors for direct-map addresses in physical holes.

use ::mm::page::{FreePagesError, Page, PageState};
use ::mm::slab::SlabError;
use core::sync::atomic::Ordering::Relaxed;

use ::mm::{GfpFlags, Pfn};
use x86_64::structures::paging::mapper::{MappedFrame, TranslateResult};
use x86_64::structures::paging::{OffsetPageTable, PageTable, PageTableFlags as F, PhysFrame, Translate};
use x86_64::{PhysAddr, VirtAddr};

use crate::mm::layout::VMEMMAP_START;
use crate::mm::page_alloc::{__free_pages, alloc_pages, free_pages, phys_to_virt};
use crate::mm::slab::kfree;
use crate::mm::{boot_reservations, direct_map_base, direct_map_size, node};

/// The physical address and flags `va` translates to in the live page tables.
fn translate(va: u64) -> Option<(PhysAddr, F)> {
    let (pml4, _) = x86_64::registers::control::Cr3::read();
    let table = phys_to_virt(pml4.start_address()).as_mut_ptr::<PageTable>();
    // SAFETY: the live PML4 through the direct map, only read here (translate writes nothing).
    let mapper = unsafe { OffsetPageTable::new(&mut *table, VirtAddr::new(direct_map_base())) };
    match mapper.translate(VirtAddr::new(va)) {
        TranslateResult::Mapped { frame, offset, flags } => {
            let start = match frame {
                MappedFrame::Size4KiB(f) => f.start_address(),
                MappedFrame::Size2MiB(f) => f.start_address(),
                MappedFrame::Size1GiB(f) => f.start_address(),
            };
            Some((start + offset, flags))
        }
        _ => None,
    }
}

/// Is `[pa, pa + len)` inside a boot reservation labelled `label`?
fn reserved_as(pa: PhysAddr, len: u64, label: &str) -> bool {
    let (s, e) = (pa.as_u64(), pa.as_u64() + len);
    boot_reservations().ranges().iter().any(|r| r.label == label && r.start <= s && e <= r.end)
}

/// Sections below `end_pfn` without RAM (absent descriptors), as first pfns.
fn absent_sections() -> impl Iterator<Item = u64> {
    let mm = node().mem_map();
    let pps = mm.pages_per_section();
    (0..mm.nr_sections() as u64).map(move |s| s * pps).filter(|&pfn| mm.page(Pfn(pfn)).is_none())
}

ktest!(
    // include/asm-generic/memory_model.h (6.12): __pfn_to_page(pfn) = vmemmap + pfn under
    // CONFIG_SPARSEMEM_VMEMMAP; arch/x86/mm/init_64.c vmemmap_populate maps memblock memory
    // there. Every page of the array up to end_pfn is mapped: descriptors writable onto "mem_map"
    // memory, holes read-only onto one shared page of absent descriptors ("vmemmap").
    // It allocates a page to watch its descriptor through both mappings: fault injection paused.
    #[needs_memory]
    fn vmemmap_mapping_agrees_with_the_descriptors_direct_map_address() {
        let mm = node().mem_map();
        assert_eq!(mm.vmemmap_base() as u64, VMEMMAP_START);
        let pps = mm.pages_per_section();
        let mut hole_page = None;
        for pfn in (0..mm.end_pfn()).step_by(4096 / 32) {
            let va = VMEMMAP_START + pfn * 32;
            let (pa, flags) = translate(va).unwrap_or_else(|| panic!("vmemmap page {va:#x} unmapped"));
            assert!(flags.contains(F::PRESENT | F::NO_EXECUTE), "{va:#x}: {flags:?}");
            let section_present = mm.page(Pfn(pfn & !(pps - 1))).is_some();
            if section_present {
                assert!(flags.contains(F::WRITABLE), "{va:#x}: {flags:?}");
                assert!(reserved_as(pa, 4096, "mem_map"), "{va:#x} -> {pa:#x} is no mem_map memory");
                // The same descriptor through the vmemmap and through the direct map.
                let p = mm.page(Pfn(pfn)).unwrap();
                assert_eq!(p as *const Page as u64, va);
                // SAFETY: `pa` holds descriptors (a mem_map reservation), read only.
                let d = unsafe { &*phys_to_virt(pa).as_ptr::<Page>() };
                let words = |p: &Page| {
                    (p.state(), p.zone(), p.order(), p.private.load(Relaxed), p.next.load(Relaxed))
                };
                assert_eq!(words(d), words(p), "pfn {pfn:#x}");
            } else {
                assert!(!flags.contains(F::WRITABLE), "hole {va:#x} is writable: {flags:?}");
                assert_eq!(*hole_page.get_or_insert(pa), pa, "every hole names the one hole page");
                assert!(reserved_as(pa, 4096, "vmemmap"));
            }
        }
        // Nothing past the array.
        let end = VMEMMAP_START + mm.end_pfn() * 32;
        assert!(translate(end).is_none(), "vmemmap mapped past end_pfn");
        assert_eq!(absent_sections().next().is_some(), hole_page.is_some());

        // A state change made through the allocator is seen through the direct map of the
        // descriptor's frame.
        let f = alloc_pages(GfpFlags::GFP_KERNEL, 2).unwrap();
        let pfn = Pfn::from_phys(f.start_address());
        let va = VMEMMAP_START + pfn.0 * 32;
        let (pa, _) = translate(va).unwrap();
        // SAFETY: `pa` is the descriptor's frame (translated above), read only.
        let d = unsafe { &*phys_to_virt(pa).as_ptr::<Page>() };
        assert_eq!((d.state(), d.order()), (PageState::Allocated, 2));
        __free_pages(f, 2).unwrap();
        assert_ne!(d.state(), PageState::Allocated);
        crate::info!(
            "vmemmap test: {:#x} pfns, {} sections without RAM, hole page {:?}",
            mm.end_pfn(),
            absent_sections().count(),
            hole_page
        );
    }
);

ktest!(
    // mm/page_alloc.c free_pages -> virt_to_page, mm/slub.c kfree -> virt_to_folio: an address
    // of the direct map whose frame has no RAM. Sections without RAM read as absent through
    // the vmemmap (no fault), pfns past its end are never dereferenced, holes inside a section
    // have reserved descriptors: the errors are those the sparse mem_map gave.
    fn vmemmap_holes_read_as_no_page_and_frees_there_keep_their_errors() {
        let mm = node().mem_map();
        for pfn in absent_sections() {
            for p in [pfn, pfn + 1, pfn + mm.pages_per_section() - 1] {
                assert!(mm.page(Pfn(p)).is_none() && !mm.pfn_valid(Pfn(p)));
                // SAFETY: below end_pfn, so mapped (read-only); read only.
                let raw = unsafe { &*mm.vmemmap_base().add(p as usize) };
                assert!(raw.is_absent() && raw.state() == PageState::Reserved);
                let va = phys_to_virt(PhysAddr::new(p << 12));
                assert_eq!(free_pages(va, 0), Err(FreePagesError::NotManaged { pfn: Pfn(p) }));
                let f = PhysFrame::containing_address(PhysAddr::new(p << 12));
                assert_eq!(__free_pages(f, 0), Err(FreePagesError::NotManaged { pfn: Pfn(p) }));
                assert_eq!(kfree(va.as_ptr()), Err(SlabError::NotOwned { addr: va.as_u64() as usize }));
            }
        }
        // Past the last section but inside the direct map (it covers at least 4 GiB).
        // Past the last section (free_pages only where the direct map reaches).
        let past = Pfn(mm.end_pfn());
        let va = phys_to_virt(past.phys());
        assert!(mm.page(past).is_none());
        let f = PhysFrame::containing_address(past.phys());
        assert_eq!(__free_pages(f, 0), Err(FreePagesError::NotManaged { pfn: past }));
        if past.phys().as_u64() < direct_map_size() {
            assert_eq!(free_pages(va, 0), Err(FreePagesError::NotManaged { pfn: past }));
        }
        assert_eq!(kfree(va.as_ptr()), Err(SlabError::NotOwned { addr: va.as_u64() as usize }));
        // The legacy VGA hole [0xa0000, 0x100000) is inside section 0: reserved descriptors.
        let vga = Pfn(0xa0);
        assert_eq!(mm.page(vga).map(|p| p.state()), Some(PageState::Reserved));
        let va = phys_to_virt(PhysAddr::new(0xa0000));
        assert_eq!(free_pages(va, 0), Err(FreePagesError::Reserved { pfn: vga }));
        assert_eq!(kfree(va.as_ptr()), Err(SlabError::NotOwned { addr: va.as_u64() as usize }));
        // Far past anything: no lookup faults.
        for pfn in [mm.end_pfn(), mm.end_pfn() + 1, u32::MAX as u64, 1 << 40, u64::MAX >> 12] {
            assert!(mm.page(Pfn(pfn)).is_none());
        }
    }
);
