//! In-kernel tests of the page-level API on real memory: `alloc_page`/`__free_page`,
//! reference counts, compound pages, `split_page`, `alloc_pages_exact` (Linux 6.12
//! `mm/page_alloc.c`, `include/linux/mm.h`).

use ::mm::buddy::PageRefError;
use ::mm::page::{FreePagesError, PageState};
use ::mm::{AllocError, GfpFlags};
use x86_64::structures::paging::PhysFrame;

use crate::mm::page_alloc::*;
use crate::mm::page_ref::*;

use super::buddy_snapshot as snapshot;

fn nth(frame: PhysFrame, i: u64) -> PhysFrame {
    PhysFrame::containing_address(frame.start_address() + i * 4096)
}

ktest!(
    #[needs_memory]
    fn alloc_page_and_free_page_round_trip() {
        // include/linux/gfp.h: alloc_page(gfp) = alloc_pages(gfp, 0); __free_page(page) =
        // __free_pages(page, 0); __get_free_page(gfp) = __get_free_pages(gfp, 0).
        let before = snapshot();
        let f = alloc_page(GfpFlags::GFP_KERNEL).expect("alloc_page");
        assert_eq!(frame_to_page(f).unwrap().order(), 0);
        assert_eq!(page_ref_count(f), 1, "post_alloc_hook: set_page_refcounted");
        __free_page(f).expect("__free_page");
        assert_eq!(page_ref_count(f), 0);
        assert!(matches!(__free_page(f), Err(FreePagesError::DoubleFree { .. })));
        let va = __get_free_page(GfpFlags::GFP_KERNEL).expect("__get_free_page");
        free_page(va).expect("free_page");
        assert_eq!(snapshot(), before);
    }
);

ktest!(
    #[needs_memory]
    fn get_page_put_page_and_free_pages_share_one_count() {
        // mm/page_alloc.c __free_pages: put_page_testzero first; include/linux/mm.h put_page.
        let before = snapshot();
        let f = alloc_page(GfpFlags::GFP_KERNEL).unwrap();
        get_page(f).unwrap();
        assert_eq!(page_ref_count(f), 2);
        __free_page(f).unwrap();
        assert_eq!(frame_to_page(f).unwrap().state(), PageState::Allocated, "the other reference keeps it");
        assert_eq!(put_page(f), Ok(true));
        assert_eq!(put_page(f), Err(PageRefError::Free { pfn: ::mm::Pfn::from_phys(f.start_address()) }));
        // A referenced non-compound order-2 block: __free_pages frees pages 1..3, keeps page 0.
        let b = alloc_pages(GfpFlags::GFP_KERNEL, 2).unwrap();
        get_page(b).unwrap();
        __free_pages(b, 2).unwrap();
        assert_eq!(frame_to_page(b).unwrap().order(), 0);
        assert_eq!(page_ref_count(nth(b, 1)), 0);
        assert_eq!(put_page(b), Ok(true));
        assert_eq!(snapshot(), before);
    }
);

ktest!(
    #[needs_memory]
    fn compound_pages_count_on_their_head() {
        // mm/page_alloc.c prep_compound_page; include/linux/page-flags.h compound_head.
        let before = snapshot();
        let h = alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_COMP, 4).unwrap();
        for i in 1..16 {
            assert_eq!(compound_head(nth(h, i)), h);
        }
        get_page(nth(h, 9)).unwrap();
        assert_eq!(page_ref_count(h), 2);
        assert_eq!(put_page(nth(h, 3)), Ok(false));
        assert!(matches!(split_page(h, 4), Err(PageRefError::Compound { order: 4, .. })));
        assert_eq!(put_page(nth(h, 15)), Ok(true), "the last reference frees the whole block");
        assert_eq!(compound_head(nth(h, 1)), nth(h, 1));
        assert_eq!(snapshot(), before);
    }
);

ktest!(
    #[needs_memory]
    fn split_page_and_alloc_pages_exact() {
        // mm/page_alloc.c split_page, make_alloc_exact, free_pages_exact.
        let before = snapshot();
        let b = alloc_pages(GfpFlags::GFP_KERNEL, 3).unwrap();
        split_page(b, 3).unwrap();
        for i in (0..8).rev() {
            assert_eq!(page_ref_count(nth(b, i)), 1);
            __free_page(nth(b, i)).unwrap();
        }
        let free0 = super::free_pages_drained();
        let va = alloc_pages_exact(5 * 4096 + 1, GfpFlags::GFP_KERNEL).expect("alloc_pages_exact");
        assert_eq!(super::free_pages_drained(), free0 - 6, "order 3 allocated, the last 2 pages given back");
        // SAFETY: the 6 pages are ours until free_pages_exact.
        unsafe { core::ptr::write_bytes(va.as_mut_ptr::<u8>(), 0x5a, 6 * 4096) };
        assert!(free_pages_exact(va, 7 * 4096).is_err(), "the 7th page is not ours: nothing freed");
        assert_eq!(super::free_pages_drained(), free0 - 6);
        free_pages_exact(va, 5 * 4096 + 1).unwrap();
        // 6.12 drops __GFP_COMP with a warning and goes on.
        let va = alloc_pages_exact(3 * 4096, GfpFlags::GFP_KERNEL | GfpFlags::__GFP_COMP).unwrap();
        free_pages_exact(va, 3 * 4096).unwrap();
        assert_eq!(
            alloc_pages_exact(0, GfpFlags::GFP_KERNEL),
            Err(AllocError::Invalid("alloc_pages_exact: size 0"))
        );
        assert!(matches!(
            alloc_pages_exact((4 << 20) + 1, GfpFlags::GFP_KERNEL),
            Err(AllocError::OrderTooLarge { order: 11 })
        ));
        assert_eq!(snapshot(), before);
    }
);

ktest!(
    #[needs_memory]
    fn alloc_pages_bulk_fills_the_empty_entries() {
        // mm/page_alloc.c alloc_pages_bulk_noprof: NULL entries only; returns the entries
        // populated.
        let before = snapshot();
        let keep = alloc_page(GfpFlags::GFP_KERNEL).unwrap();
        let keep_pfn = ::mm::Pfn::from_phys(keep.start_address());
        let mut pages = [None; 100];
        pages[3] = Some(keep_pfn);
        assert_eq!(alloc_pages_bulk(GfpFlags::GFP_KERNEL, &mut pages), 100);
        assert_eq!(pages[3], Some(keep_pfn));
        for (i, p) in pages.iter().enumerate() {
            let f = PhysFrame::containing_address(p.unwrap().phys());
            assert_eq!(page_ref_count(f), 1);
            if i != 3 {
                __free_page(f).unwrap();
            }
        }
        __free_page(keep).unwrap();
        assert_eq!(snapshot(), before);
    }
);

ktest!(
    fn alloc_pages_bulk_fails_whole_under_fail_page_alloc() {
        // mm/page_alloc.c alloc_pages_bulk_noprof: prepare_alloc_pages -> should_fail_alloc_page
        // `goto out`: nothing allocated, the populated count returned.
        // The boot's own injection (a `fail_page_alloc=` boot) is reset first, as the other
        // fault-injection tests do.
        let _restore = Restore;
        crate::mm::fault_inject::reset();
        let keep = alloc_page(GfpFlags::GFP_KERNEL).unwrap();
        let keep_pfn = ::mm::Pfn::from_phys(keep.start_address());
        for (a, v) in [
            ("ignore-gfp-wait", "N"),
            ("min-order", "0"),
            ("verbose", "0"),
            ("times", "-1"),
            ("probability", "100"),
        ] {
            crate::mm::fault_inject::set("fail_page_alloc", a, v).unwrap();
        }
        let mut pages = [None; 8];
        pages[0] = Some(keep_pfn);
        assert_eq!(alloc_pages_bulk(GfpFlags::GFP_KERNEL, &mut pages), 1, "nothing allocated");
        assert!(pages[1..].iter().all(|p| p.is_none()));
        crate::mm::fault_inject::reset_to_boot();
        __free_page(keep).unwrap();
    }
);

/// Puts the fault-injection attributes back as the boot command line had them.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        crate::mm::fault_inject::reset_to_boot();
    }
}
