//! Reference counts, compound pages, `split_page` and the exact-size allocation, as Linux 6.12
//! (`mm/page_alloc.c`, `include/linux/mm.h`, `mm/swap.c`).

use super::*;
use crate::buddy::PageRefError;

const CPU: CpuId = CpuId::BOOT;

// mm/page_alloc.c, post_alloc_hook -> set_page_refcounted: a block is handed out with
// refcount 1; include/linux/mm.h get_page / put_page (folio_put): the last put frees it.
#[test]
fn a_new_page_has_one_reference_and_the_last_put_page_frees_it() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    assert_eq!(n.page_ref_count(p), 1);
    n.get_page(p).unwrap();
    n.get_page(p).unwrap();
    assert_eq!(n.page_ref_count(p), 3);
    assert_eq!(n.put_page(CPU, p), Ok(false));
    assert_eq!(n.put_page(CPU, p), Ok(false));
    assert_eq!(n.page_ref_count(p), 1);
    assert_eq!(n.put_page(CPU, p), Ok(true), "the last reference frees the page");
    assert_eq!(n.page_ref_count(p), 0, "a free page has refcount 0");
    assert_eq!(n.put_page(CPU, p), Err(PageRefError::Free { pfn: p }));
    assert_eq!(n.get_page(p), Err(PageRefError::Free { pfn: p }));
    assert_eq!(snapshot(n), before);
    n.check_free_lists().unwrap();
}

// mm/page_alloc.c, __free_pages: `if (put_page_testzero(page)) free_unref_page(page, order)`:
// with another reference held, an order-0 free only drops ours.
#[test]
fn free_pages_with_another_reference_only_drops_one() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    n.get_page(p).unwrap();
    n.free_pages(p, 0).unwrap();
    assert_eq!(n.page(p).unwrap().state(), PageState::Allocated, "still held by the other reference");
    assert_eq!(n.page_ref_count(p), 1);
    n.free_pages(p, 0).unwrap();
    assert_eq!(n.page_ref_count(p), 0);
    assert!(matches!(n.free_pages(p, 0), Err(FreePagesError::DoubleFree { .. })));
    assert_eq!(snapshot(n), before);
}

// mm/page_alloc.c, __free_pages: a non-compound block with another reference keeps only its
// first page (`while (order-- > 0) free_unref_page(page + (1 << order), order)`); the holder's
// put_page then frees that page at order 0.
#[test]
fn free_pages_of_a_referenced_non_compound_block_frees_all_but_the_first_page() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    let free0 = n.totals().free_pages + n.totals().pcp_pages;
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 3).unwrap();
    n.get_page(p).unwrap();
    n.free_pages(p, 3).unwrap();
    let t = n.totals();
    assert_eq!(t.free_pages + t.pcp_pages, free0 - 1, "7 of the 8 pages are back");
    assert_eq!(n.page(p).unwrap().state(), PageState::Allocated);
    assert_eq!(n.page(p).unwrap().order(), 0);
    assert_eq!(n.page_ref_count(p), 1);
    assert_eq!(n.put_page(CPU, p), Ok(true));
    assert_eq!(snapshot(n), before);
    n.check_free_lists().unwrap();
}

// mm/page_alloc.c, prep_new_page -> prep_compound_page; include/linux/page-flags.h
// compound_head: every tail names its head; references through a tail count on the head;
// __free_pages of a referenced compound head frees nothing.
#[test]
fn compound_pages_have_tails_naming_the_head_and_one_count() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    let gfp = GfpFlags::GFP_KERNEL | GfpFlags::__GFP_COMP;
    for order in [1, 3, 5] {
        let h = n.alloc_pages(gfp, order).unwrap();
        assert!(n.is_compound_head(h));
        for i in 1..1u64 << order {
            assert_eq!(n.compound_head(h.add(i)), h);
            assert_eq!(n.page_ref_count(h.add(i)), 0, "tails have no count of their own");
            assert_eq!(n.folio_ref_count(h.add(i)), 1);
        }
        n.get_page(h.add(1)).unwrap();
        assert_eq!(n.page_ref_count(h), 2);
        n.free_pages(h, order).unwrap();
        let t = n.totals();
        assert_eq!(n.page(h).unwrap().order(), order, "a compound head keeps its block");
        assert_eq!(n.page_ref_count(h), 1);
        let _ = t;
        // The last put through a tail frees the whole compound block and clears the tags.
        assert_eq!(n.put_page(CPU, h.add((1 << order) - 1)), Ok(true));
        for i in 1..1u64 << order {
            assert_eq!(n.page(h.add(i)).unwrap().compound_head(), None);
        }
    }
    // Without __GFP_COMP no tail is tagged.
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 2).unwrap();
    assert!(!n.is_compound_head(p));
    assert_eq!(n.compound_head(p.add(1)), p.add(1));
    assert_eq!(n.get_page(p.add(1)), Err(PageRefError::NotBlockHead { pfn: p.add(1) }));
    n.free_pages(p, 2).unwrap();
    assert_eq!(snapshot(n), before);
    n.check_free_lists().unwrap();
}

// A compound block freed with free_pages at refcount 1 is freed whole and its tags cleared
// (mm/page_alloc.c, free_tail_page_prepare).
#[test]
fn free_pages_of_a_compound_block_clears_its_tails() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    for order in [2, 6] {
        let h = n.alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_COMP, order).unwrap();
        n.free_pages(h, order).unwrap();
        for i in 1..1u64 << order {
            assert_eq!(n.page(h.add(i)).unwrap().compound_head(), None);
        }
    }
    assert_eq!(snapshot(n), before);
}

// mm/page_alloc.c, split_page: 2^order order-0 pages, each with refcount 1, freed one by one;
// VM_BUG_ON_PAGE(PageCompound(page)) is a refusal here.
#[test]
fn split_page_gives_order0_pages_each_freed_alone() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 4).unwrap();
    assert_eq!(n.split_page(p, 3), Err(PageRefError::WrongOrder { pfn: p, allocated: 4, given: 3 }));
    assert_eq!(n.split_page(p.add(1), 0), Err(PageRefError::NotBlockHead { pfn: p.add(1) }));
    n.split_page(p, 4).unwrap();
    for i in 0..16 {
        assert_eq!(n.page_ref_count(p.add(i)), 1);
        assert_eq!(n.page(p.add(i)).unwrap().order(), 0);
    }
    assert!(matches!(n.free_pages(p, 4), Err(FreePagesError::WrongOrder { .. })));
    // Freed in a shuffled order: they merge back all the same.
    for i in [5, 0, 15, 7, 1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14] {
        n.free_pages(p.add(i), 0).unwrap();
    }
    let c = n.alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_COMP, 2).unwrap();
    assert_eq!(n.split_page(c, 2), Err(PageRefError::Compound { pfn: c, order: 2 }));
    n.free_pages(c, 2).unwrap();
    let free = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    n.free_pages(free, 0).unwrap();
    assert_eq!(n.split_page(free, 0), Err(PageRefError::Free { pfn: free }));
    assert_eq!(
        n.split_page(Pfn(0), 0),
        Err(PageRefError::NotRefcounted { pfn: Pfn(0), state: PageState::Reserved })
    );
    assert_eq!(snapshot(n), before);
    n.check_free_lists().unwrap();
}

// mm/page_alloc.c, make_alloc_exact / free_pages_exact: order get_order(size), the pages
// beyond PAGE_ALIGN(size) go straight back, the rest are order-0 pages freed one by one.
#[test]
fn alloc_pages_exact_keeps_only_the_pages_asked_for() {
    let m = TestMachine::standard();
    let n = &m.node;
    let before = snapshot(n);
    for size in [1usize, 4096, 4097, 5 * 4096, 5 * 4096 - 1, 9 * 4096 + 7, 1 << 20] {
        let order = exact_order(size).unwrap();
        assert_eq!(order, get_order(size));
        let nr = size.div_ceil(4096) as u64;
        let free0 = {
            n.drain_pages();
            n.totals().free_pages
        };
        let p = n.alloc_pages(GfpFlags::GFP_KERNEL, order).unwrap();
        n.make_alloc_exact(p, order, size).unwrap();
        n.drain_pages();
        assert_eq!(n.totals().free_pages, free0 - nr, "size {size}: {nr} pages kept");
        for i in 0..nr {
            assert_eq!(n.page_ref_count(p.add(i)), 1);
        }
        for i in nr..1 << order {
            assert_ne!(n.page(p.add(i)).unwrap().state(), PageState::Allocated);
        }
        n.free_pages_exact(CPU, p, size).unwrap();
        assert!(matches!(n.free_pages_exact(CPU, p, size), Err(FreePagesError::DoubleFree { .. })));
    }
    assert_eq!(exact_order(0), Err(AllocError::Invalid("alloc_pages_exact: size 0")));
    assert_eq!(exact_order((4 << 20) + 1), Err(AllocError::OrderTooLarge { order: 11 }));
    assert_eq!(snapshot(n), before);
    n.check_free_lists().unwrap();
}

// free_pages_exact checks every page before freeing any: a range running into a page that is
// not its own frees nothing.
#[test]
fn free_pages_exact_with_a_bad_range_frees_nothing() {
    let m = TestMachine::standard();
    let n = &m.node;
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 2).unwrap();
    n.make_alloc_exact(p, 2, 3 * 4096).unwrap();
    let before = snapshot(n);
    assert!(n.free_pages_exact(CPU, p, 4 * 4096).is_err(), "the 4th page went back already");
    assert_eq!(snapshot(n), before);
    for i in 0..3 {
        assert_eq!(n.page(p.add(i)).unwrap().state(), PageState::Allocated);
    }
    n.free_pages_exact(CPU, p, 3 * 4096).unwrap();
}

// include/linux/mm.h get_page: VM_BUG_ON on pages that are not the allocator's; here a typed
// refusal (reserved pages, pages owned by another layer).
#[test]
fn references_on_pages_of_other_owners_are_refused() {
    let m = TestMachine::standard();
    let n = &m.node;
    assert_eq!(
        n.get_page(Pfn(0)),
        Err(PageRefError::NotRefcounted { pfn: Pfn(0), state: PageState::Reserved })
    );
    assert_eq!(n.page_ref_count(Pfn(0)), 1);
    assert_eq!(n.get_page(Pfn(1 << 30)), Err(PageRefError::NotManaged { pfn: Pfn(1 << 30) }));
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    n.page(p).unwrap().set_state(PageState::Vmalloc);
    assert_eq!(n.get_page(p), Err(PageRefError::NotRefcounted { pfn: p, state: PageState::Vmalloc }));
    assert_eq!(n.put_page(CPU, p), Err(PageRefError::NotRefcounted { pfn: p, state: PageState::Vmalloc }));
    n.page(p).unwrap().set_state(PageState::Allocated);
    // Overflow is refused before the count wraps.
    n.page(p).unwrap().counters.store(i32::MAX as u32 - 1, core::sync::atomic::Ordering::Relaxed);
    assert_eq!(n.get_page(p), Err(PageRefError::Overflow { pfn: p }));
    n.page(p).unwrap().counters.store(0, core::sync::atomic::Ordering::Relaxed);
    n.free_pages(p, 0).unwrap();
}
