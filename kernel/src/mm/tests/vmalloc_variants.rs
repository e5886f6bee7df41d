//! In-kernel tests of vmalloc_user, vmalloc_32 and vrealloc (Linux 6.12's mm/vmalloc.c).

use ::mm::vmalloc::{AreaKind, VmFlags, VmallocError, VmallocInfoLine, VmapError};
use ::mm::{GfpFlags, PAGE_SIZE};

use crate::mm::vmalloc::*;

const P: usize = PAGE_SIZE;

fn state() -> (u64, VmallocCounts) {
    super::vmalloc_state()
}

fn bytes(p: *const u8, n: usize) -> &'static [u8] {
    // SAFETY: the tests pass live areas of at least `n` mapped bytes.
    unsafe { core::slice::from_raw_parts(p, n) }
}

crate::ktest!(
    // mm/vmalloc.c (6.12), vmalloc_user_noprof(): GFP_KERNEL | __GFP_ZERO, VM_USERMAP, which
    // vmalloc_info_show() prints as " user" after " vmalloc"; vmalloc_32_noprof(): GFP_VMALLOC32
    // (GFP_DMA32 | GFP_KERNEL on x86_64): every page below 4 GiB.
    #[needs_memory]
    fn vmalloc_user_is_zeroed_usermap_and_vmalloc_32_pages_are_below_4g() {
        let before = state();
        let u = vmalloc_user(3 * P).unwrap();
        assert!(bytes(u.as_ptr(), 3 * P).iter().all(|&b| b == 0));
        let (area, _) = find_vm_area(u.as_ptr()).unwrap();
        assert_eq!(area.flags, VmFlags::VM_ALLOC | VmFlags::VM_USERMAP);
        {
            let line = alloc::format!("{}", VmallocInfoLine(&area));
            assert!(line.ends_with(" pages=3 vmalloc user N0=3"), "{line}");
        }
        let d = vmalloc_32(8 * P).unwrap();
        let z = vmalloc_32_user(2 * P).unwrap();
        assert!(bytes(z.as_ptr(), 2 * P).iter().all(|&b| b == 0));
        for (p, n) in [(d, 8), (z, 2)] {
            for i in 0..n {
                // SAFETY: page i of a live area.
                let pfn = vmalloc_to_pfn(unsafe { p.as_ptr().add(i * P) }).unwrap();
                assert!(pfn.phys().as_u64() < 1 << 32, "page {i} at {:#x}", pfn.phys().as_u64());
            }
        }
        for p in [u, d, z] {
            vfree(p.as_ptr()).unwrap();
        }
        // Pages: the kmalloc of the formatted line may have grown a slab, which the harness's
        // leak check drains and counts; the vmalloc side must be back exactly.
        assert_eq!(state().1, before.1);
    }
);

crate::ktest!(
    // mm/vmalloc.c (6.12.19), vrealloc_noprof(): size <= get_vm_area_size() keeps the area and
    // zeroes [size, old_size) when want_init_on_alloc(flags); a larger size is __vmalloc + memcpy
    // of old_size + vfree; size 0 is vfree and NULL; p NULL is __vmalloc.
    #[needs_memory]
    fn vrealloc_keeps_shrinks_in_place_and_copies_on_growth() {
        let before = state();
        let zero = GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO;
        let p = vrealloc(core::ptr::null(), 2 * P, zero).unwrap().unwrap();
        // SAFETY: the 2-page area just allocated.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 0x5a, 2 * P) };
        // Shrink: same pointer, tail zeroed with __GFP_ZERO, head kept, pages kept.
        let q = vrealloc(p.as_ptr(), 100, zero).unwrap().unwrap();
        assert_eq!(q, p);
        assert!(bytes(p.as_ptr(), 100).iter().all(|&b| b == 0x5a));
        assert!(bytes(p.as_ptr(), 2 * P)[100..].iter().all(|&b| b == 0));
        assert_eq!(find_vm_area(p.as_ptr()).unwrap().0.nr_pages, 2);
        // Growing within the mapped size stays too (old_size is the area's, not the request's).
        assert_eq!(vrealloc(p.as_ptr(), 2 * P, GfpFlags::GFP_KERNEL).unwrap(), Some(p));
        // Growth: a new area with the old bytes; the old one is gone.
        let r = vrealloc(p.as_ptr(), 5 * P, zero).unwrap().unwrap();
        assert_ne!(r, p);
        assert!(bytes(r.as_ptr(), 100).iter().all(|&b| b == 0x5a));
        assert!(bytes(r.as_ptr(), 5 * P)[2 * P..].iter().all(|&b| b == 0));
        assert!(find_vm_area(p.as_ptr()).is_none());
        assert_eq!(vrealloc(r.as_ptr(), 0, zero).unwrap(), None);
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // 6.12 finds the area containing p and would zero or copy past its end for an interior
    // pointer; here vrealloc refuses anything but the start of a vmalloc area, changing nothing.
    #[needs_memory]
    fn vrealloc_refuses_interior_vmap_and_freed_addresses() {
        let before = state();
        let p = vmalloc(2 * P).unwrap();
        // SAFETY: pointer arithmetic inside the area, not dereferenced by the test.
        let inner = unsafe { p.as_ptr().add(P) };
        let e = vrealloc(inner, P, GfpFlags::GFP_KERNEL).unwrap_err();
        assert!(matches!(e, VmError::Vmalloc(VmallocError::Area(VmapError::Interior { .. }))), "{e:?}");
        let page = crate::mm::page_alloc::Pages::alloc(GfpFlags::GFP_KERNEL, 0).unwrap();
        let pfn = ::mm::Pfn::from_phys(page.frame().start_address());
        // SAFETY: the page stays allocated until after vunmap.
        let m = unsafe { vmap(&[pfn], VmFlags::VM_MAP) }.unwrap();
        let e = vrealloc(m.as_ptr(), 2 * P, GfpFlags::GFP_KERNEL).unwrap_err();
        assert!(matches!(e, VmError::Vmalloc(VmallocError::WrongKind { kind: AreaKind::Vmap, .. })), "{e:?}");
        vunmap(m.as_ptr()).unwrap();
        drop(page);
        vfree(p.as_ptr()).unwrap();
        // Parked until the lazy purge: a use after vfree, named as such.
        let e = vrealloc(p.as_ptr(), P, GfpFlags::GFP_KERNEL).unwrap_err();
        assert!(
            matches!(e, VmError::Vmalloc(VmallocError::Area(VmapError::Unpurged { area_start, .. }))
                if area_start == p.as_ptr() as usize),
            "{e:?}"
        );
        purge_vmap_area_lazy();
        let e = vrealloc(p.as_ptr(), P, GfpFlags::GFP_KERNEL).unwrap_err();
        assert!(matches!(e, VmError::Vmalloc(VmallocError::Area(VmapError::NotAllocated { .. }))), "{e:?}");
        assert_eq!(state(), before);
    }
);
