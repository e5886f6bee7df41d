//! In-kernel tests of ioremap/iounmap on the live page tables, against the local APIC's MMIO
//! page (the one device every machine here has): reads through the mapping, the refusals of
//! arch/x86/mm/ioremap.c (6.12), iounmap's checks, and the APIC's own ioremap area.

use alloc::string::String;

use ::mm::vmalloc::{AddrPlace, AreaKind, VmallocError, VmapError};
use ::mm::{GfpFlags, Pfn, PAGE_SIZE};
use x86_64::structures::paging::PageTableFlags as F;
use x86_64::VirtAddr;

use crate::arch::apic;
use crate::mm::page_alloc::Pages;
use crate::mm::vmalloc::*;

const P: usize = PAGE_SIZE;

/// Free pages and vmalloc's counts, after the shrinker (ioremap's page tables stay after
/// iounmap, as vmalloc's do).
fn state() -> (u64, VmallocCounts) {
    super::vmalloc_state()
}

fn lapic_phys() -> u64 {
    let (_, phys) = apic::mmio();
    assert_eq!(apic::mode(), Some(apic::Mode::XApic), "QEMU's TCG offers no x2APIC");
    phys
}

fn pte_flags(va: usize) -> F {
    with_space(|s| s.tables.lookup_pte(VirtAddr::new(va as u64))).expect("mapped").1
}

crate::ktest!(
    // arch/x86/mm/ioremap.c (6.12), __ioremap_caller(): the mapping is page aligned and
    // "ret_addr = vaddr + offset"; ioremap() is _PAGE_CACHE_MODE_UC_MINUS (PCD). The APIC's ID
    // register (offset 0x20, id in bits 31..24) read through it is this CPU's id.
    #[needs_memory]
    fn ioremap_reads_the_apic_id_register_at_its_sub_page_offset() {
        let phys = lapic_phys();
        let before = state();
        let reg = ioremap(phys + 0x20, 4).expect("ioremap of the APIC page");
        assert_eq!(reg.as_ptr() as usize % P, 0x20);
        assert!(is_vmalloc_addr(reg.as_ptr()));
        // SAFETY: a 4-byte aligned, readable APIC register, mapped uncached just now.
        let id = unsafe { reg.as_ptr().cast::<u32>().read_volatile() } >> 24;
        assert_eq!(id, apic::id());
        let start = reg.as_ptr() as usize - 0x20;
        let (area, place) = find_vm_area(reg.as_ptr()).expect("an area");
        assert_eq!(
            (area.start, area.kind, area.phys_addr, area.nr_pages),
            (start, AreaKind::Ioremap, phys, 1)
        );
        assert_eq!(place, AddrPlace::Inside { offset: 0x20 });
        assert_eq!(vmalloc_to_pfn(reg.as_ptr()), Some(Pfn(phys / P as u64)));
        let flags = pte_flags(start);
        assert!(flags.contains(F::NO_CACHE) && !flags.contains(F::WRITE_THROUGH), "{flags:?}");
        // No page descriptor is involved: the frame is not RAM.
        assert!(vmalloc_to_page(reg.as_ptr()).is_none_or(|p| p.state() == ::mm::page::PageState::Reserved));
        iounmap(reg.as_ptr()).expect("iounmap with the offset");
        assert!(find_vm_area(reg.as_ptr()).is_none());
        assert_eq!(vmalloc_to_pfn(reg.as_ptr()), None);
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // The xAPIC registers are reached through an ioremap_uc() area (strong UC: PCD|PWT, as
    // Linux's PAGE_KERNEL_NOCACHE fixmap of the APIC), which /proc/vmallocinfo prints as 6.12's
    // vmalloc_info_show() does: no pages=, "phys=%pa", "ioremap".
    #[needs_memory]
    fn apic_registers_are_an_ioremap_area_in_vmallocinfo() {
        let phys = lapic_phys();
        let (mmio, _) = apic::mmio();
        let (area, place) = find_vm_area(mmio as *const u8).expect("the APIC's area");
        assert_eq!(
            (area.kind, area.phys_addr, place),
            (AreaKind::Ioremap, phys, AddrPlace::Inside { offset: 0 })
        );
        assert!(pte_flags(mmio as usize).contains(F::NO_CACHE | F::WRITE_THROUGH));
        let mut info = String::new();
        write_vmallocinfo(&mut info).unwrap();
        let want =
            alloc::format!("{:#018x}-{:#018x}    8192 kernel/src/arch/apic.rs:", area.start, area.end());
        let line =
            info.lines().find(|l| l.starts_with(&want)).unwrap_or_else(|| panic!("no APIC line in\n{info}"));
        assert!(line.ends_with(&alloc::format!(" phys={phys:#018x} ioremap")), "{line}");
    }
);

crate::ktest!(
    // The boot framebuffer is reached through an ioremap_wc() area, as 6.12's efifb_probe()
    // (drivers/video/fbdev/efifb.c) maps it: no PAT here, so WC falls back to UC-
    // (PCD, see the README), and vmalloc_info_show() prints "phys=%pa" and "ioremap".
    #[needs_memory]
    fn the_framebuffer_is_an_ioremap_wc_area_in_vmallocinfo() {
        let (fb, phys, len) = crate::arch::fb::framebuffer().expect("QEMU's VGA gives a framebuffer");
        let (area, place) = find_vm_area(fb).expect("the framebuffer's area");
        let offset = (phys % P as u64) as usize;
        assert_eq!(
            (area.kind, area.phys_addr, place),
            (AreaKind::Ioremap, phys - offset as u64, AddrPlace::Inside { offset })
        );
        assert!(area.size >= offset + len, "the area covers the whole framebuffer");
        // Cleared through the mapping at boot; the mapping still reads and writes.
        // SAFETY: the framebuffer mapping, `len` bytes; nothing else draws.
        unsafe {
            assert_eq!(core::ptr::read_volatile(fb), 0);
            core::ptr::write_volatile(fb.add(len - 1), 0x5a);
            assert_eq!(core::ptr::read_volatile(fb.add(len - 1)), 0x5a);
            core::ptr::write_volatile(fb.add(len - 1), 0);
        }
        let mut info = String::new();
        write_vmallocinfo(&mut info).unwrap();
        let want = alloc::format!("{:#018x}-{:#018x} ", area.start, area.end());
        let line = info
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("no framebuffer line in\n{info}"));
        assert!(line.contains(" kernel/src/arch/fb.rs:"), "{line}");
        assert!(line.ends_with(&alloc::format!(" phys={:#018x} ioremap", phys - offset as u64)), "{line}");
    }
);

crate::ktest!(
    // __ioremap_caller(): "Don't allow wraparound or zero size", phys_addr_valid()
    // (addr >> x86_phys_bits), and "ioremap on RAM" (__ioremap_check_ram: System RAM that is
    // not PageReserved): each refused, nothing changes.
    #[needs_memory]
    fn ioremap_refuses_ram_zero_size_wraparound_and_unaddressable_phys() {
        let phys = lapic_phys();
        let page = Pages::alloc(GfpFlags::GFP_KERNEL, 0).unwrap();
        let before = state();
        let ram = page.frame().start_address().as_u64();
        let e = ioremap(ram, P).unwrap_err();
        assert_eq!(
            e,
            VmError::Vmalloc(VmallocError::IoremapOnRam {
                phys: ram,
                last: ram + P as u64 - 1,
                pfn: Pfn(ram / P as u64)
            })
        );
        assert!(matches!(
            ioremap_cache(ram, 4 * P),
            Err(VmError::Vmalloc(VmallocError::IoremapOnRam { .. }))
        ));
        assert_eq!(ioremap(phys, 0), Err(VmError::Vmalloc(VmallocError::IoremapRange { phys, size: 0 })));
        assert!(matches!(
            ioremap(u64::MAX - 10, 100),
            Err(VmError::Vmalloc(VmallocError::IoremapRange { .. }))
        ));
        let bits = ioremap::phys_bits();
        assert_eq!(
            ioremap(1 << bits, P),
            Err(VmError::Vmalloc(VmallocError::IoremapInvalidPhys { phys: 1 << bits, phys_bits: bits }))
        );
        assert_eq!(state(), before);
        drop(page);
    }
);

crate::ktest!(
    // iounmap() takes the address ioremap returned (PAGE_MASK & addr); other addresses and
    // other kinds of area are refused and change nothing; vfree/vunmap refuse ioremap areas.
    #[needs_memory]
    fn iounmap_refuses_interior_other_kinds_and_double_unmap() {
        let phys = lapic_phys();
        let before = state();
        let io = ioremap_uc(phys, 2 * P).unwrap();
        let v = vmalloc(P).unwrap();
        assert!(matches!(
            iounmap(v.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::WrongKind { kind: AreaKind::Vmalloc, .. }))
        ));
        // SAFETY: pointer arithmetic inside the 2-page area, not dereferenced.
        let second = unsafe { io.as_ptr().add(P) };
        assert!(matches!(
            iounmap(second),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::Interior { .. })))
        ));
        assert!(matches!(
            vfree(io.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::WrongKind { kind: AreaKind::Ioremap, .. }))
        ));
        assert!(vunmap(io.as_ptr()).is_err());
        assert!(find_vm_area(io.as_ptr()).is_some(), "refusals changed nothing");
        iounmap(io.as_ptr()).unwrap();
        // Parked until the lazy purge: a second unmap is refused as a double free of it.
        assert!(matches!(
            iounmap(io.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::Unpurged { area_start, .. })))
                if area_start == io.as_ptr() as usize
        ));
        purge_vmap_area_lazy();
        assert!(matches!(
            iounmap(io.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::NotAllocated { .. })))
        ));
        vfree(v.as_ptr()).unwrap();
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // arch/x86/mm/ioremap.c's variants, with arch/x86/mm/init.c's cachemode2protval() under the
    // power-on PAT (Linux with PAT disabled, pat_bp_init): UC- is PCD, UC is PCD|PWT, WT is PWT,
    // WC has no PAT slot and falls back to UC-, WB sets neither. The page after the APIC's (no
    // device there, never touched) so no cacheable alias of its registers ever exists.
    #[needs_memory]
    fn ioremap_variants_set_the_cache_bits_of_linux_without_pat() {
        let phys = lapic_phys() + P as u64;
        let before = state();
        let variants: [(fn(u64, usize) -> Result<core::ptr::NonNull<u8>, VmError>, F); 5] = [
            (ioremap, F::NO_CACHE),
            (ioremap_uc, F::NO_CACHE | F::WRITE_THROUGH),
            (ioremap_wc, F::NO_CACHE),
            (ioremap_wt, F::WRITE_THROUGH),
            (ioremap_cache, F::empty()),
        ];
        for (i, (map, bits)) in variants.into_iter().enumerate() {
            let p = map(phys, P).unwrap();
            let flags = pte_flags(p.as_ptr() as usize);
            assert_eq!(flags & (F::NO_CACHE | F::WRITE_THROUGH), bits, "variant {i}: {flags:?}");
            assert!(flags.contains(F::PRESENT | F::WRITABLE | F::GLOBAL | F::NO_EXECUTE));
            iounmap(p.as_ptr()).unwrap();
        }
        assert_eq!(state(), before);
    }
);
