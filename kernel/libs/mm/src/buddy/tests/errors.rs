//! Every bad `free_pages` is refused with a specific error and the allocator unchanged.

use super::*;
use crate::page::FreePagesError::*;

#[test]
fn bad_frees_are_refused_with_state_unchanged() {
    let m = TestMachine::standard();
    let n = &m.node;
    let initial = snapshot(n);
    let a0 = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    let a2 = n.alloc_pages(GfpFlags::GFP_KERNEL, 2).unwrap();
    let a3 = n.alloc_pages(GfpFlags::GFP_KERNEL, 3).unwrap();
    let freed = n.alloc_pages(GfpFlags::GFP_KERNEL, 1).unwrap();
    n.free_pages(freed, 1).unwrap();
    // A free block of order >= 2 whose inside we can point at.
    let (big, bo) = (2..=MAX_PAGE_ORDER)
        .find_map(|o| {
            let mut first = None;
            n.for_each_free_block(Normal, o, |p| first = first.or(Some(p)));
            first.map(|p| (p, o))
        })
        .expect("a free block of order >= 2");
    let before = snapshot(n);

    let cases: [(Pfn, u32, FreePagesError); 15] = [
        (a0, 11, OrderTooLarge { order: 11 }),
        (a2.add(1), 1, Misaligned { pfn: a2.add(1), order: 1 }),
        (a3.add(4), 3, Misaligned { pfn: a3.add(4), order: 3 }),
        (Pfn(8 * 256 + 4), 0, NotManaged { pfn: Pfn(8 * 256 + 4) }),
        (Pfn(1 << 30), 0, NotManaged { pfn: Pfn(1 << 30) }),
        (Pfn(0), 0, Reserved { pfn: Pfn(0) }),
        (Pfn(0x9f), 0, Reserved { pfn: Pfn(0x9f) }),
        (Pfn(0x300), 0, Reserved { pfn: Pfn(0x300) }),
        (Pfn(10 * 256), 2, Reserved { pfn: Pfn(10 * 256) }),
        (big, bo, DoubleFree { pfn: big, head: big, order: bo }),
        (big.add(2), 1, DoubleFree { pfn: big.add(2), head: big, order: bo }),
        (big.add(3), 0, DoubleFree { pfn: big.add(3), head: big, order: bo }),
        (a2, 1, WrongOrder { pfn: a2, allocated: 2, given: 1 }),
        (a3.add(2), 1, NotBlockHead { pfn: a3.add(2), head: a3, order: 3 }),
        (a3.add(7), 0, NotBlockHead { pfn: a3.add(7), head: a3, order: 3 }),
    ];
    for (i, &(pfn, order, want)) in cases.iter().enumerate() {
        assert_eq!(n.free_pages(pfn, order), Err(want), "case {i}: free({pfn:?}, {order})");
        assert_eq!(snapshot(n), before, "case {i} changed the allocator");
        let msg = std::format!("{want}");
        assert!(!msg.is_empty());
    }
    // The freed order-1 block merged away: freeing it again is a double free inside a block.
    match n.free_pages(freed, 1) {
        Err(DoubleFree { pfn, head, order }) => {
            assert_eq!(pfn, freed);
            assert!(head.0 <= freed.0 && freed.0 < head.0 + (1 << order) && order >= 1);
        }
        other => panic!("double free not detected: {other:?}"),
    }
    assert_eq!(snapshot(n), before);

    // Pages owned by another layer.
    for state in [PageState::Slab, PageState::KmallocLarge, PageState::Vmalloc, PageState::PageTable] {
        n.page(a3).unwrap().set_state(state);
        assert_eq!(n.free_pages(a3, 3), Err(WrongOwner { pfn: a3, state }));
        assert_eq!(n.free_pages(a3.add(1), 0), Err(WrongOwner { pfn: a3.add(1), state }));
        assert_eq!(snapshot(n), before);
    }
    n.page(a3).unwrap().set_state(PageState::Allocated);

    assert!(std::format!("{}", DoubleFree { pfn: big, head: big, order: bo }).contains("double free"));
    for (p, o) in [(a0, 0), (a2, 2), (a3, 3)] {
        n.free_pages(p, o).unwrap();
    }
    assert!(matches!(n.free_pages(a0, 0), Err(DoubleFree { pfn, .. }) if pfn == a0));
    assert_eq!(sorted(snapshot(n)), sorted(initial));
    n.check_free_lists().unwrap();
}
