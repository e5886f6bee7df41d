//! The area allocator's nodes come from an allocator that can fail: a refused node leaves both
//! trees as they were, frees never allocate, and every node goes back when its range merges away.

use std::vec::Vec;

use super::nodes::CountingAlloc;
use super::Rng;
use crate::addr::PAGE_SIZE;
use crate::vmalloc::{VmapAreaRequest, VmapAreas, VmapError};

const P: usize = PAGE_SIZE;
const START: usize = 0xffff_c900_0000_0000;

type Snapshot = (Vec<(usize, usize)>, Vec<(usize, usize)>, usize, usize);

fn snapshot(a: &VmapAreas<CountingAlloc>) -> Snapshot {
    (
        a.areas().map(|x| (x.start, x.size)).collect(),
        a.free_ranges().collect(),
        a.free_bytes(),
        a.vmalloc_pages(),
    )
}

/// Nodes the allocator has out: exactly one per busy area and per free range.
fn assert_nodes(a: &VmapAreas<CountingAlloc>, alloc: &CountingAlloc) {
    a.check().unwrap();
    assert_eq!(alloc.live(), a.nr_areas() + a.free_ranges().count(), "a node was lost or kept");
}

#[test]
fn a_refused_node_changes_nothing() {
    let alloc = CountingAlloc::new();
    let mut a = VmapAreas::new_in(START, START + 256 * P, alloc.clone()).unwrap();
    alloc.fail_after(0);
    assert_eq!(VmapAreas::new_in(START, START + P, alloc.clone()).err(), Some(VmapError::NoMemory));
    alloc.fail_never();
    // [x: 2 pages][hole: 2 pages][y: 2 pages][free ...]
    let x = a.alloc(P, P, true).unwrap();
    let hole = a.alloc(P, P, true).unwrap();
    let _y = a.alloc(P, P, true).unwrap();
    a.free(hole.start).unwrap();
    assert_nodes(&a, &alloc);

    // Left-edge fit (one node for the area): refused, nothing changed.
    let before = snapshot(&a);
    alloc.fail_after(0);
    assert_eq!(a.alloc(3 * P, P, true), Err(VmapError::NoMemory));
    assert_eq!(snapshot(&a), before);
    assert_nodes(&a, &alloc);

    // No-edge fit (an aligned area inside the tail: the area's node and the split's): the
    // second allocation fails, the first node is given back.
    alloc.fail_after(1);
    let req = VmapAreaRequest { align: 64 * P, ..VmapAreaRequest::new(P) };
    assert_eq!(a.alloc_area(req), Err(VmapError::NoMemory));
    assert_eq!(snapshot(&a), before);
    assert_nodes(&a, &alloc);

    // A full fit needs no node: the hole's own becomes the area's.
    alloc.fail_after(0);
    let h = a.alloc(P, P, true).unwrap();
    assert_eq!(h.start, hole.start);
    assert_nodes(&a, &alloc);

    // Frees never allocate, whatever merges.
    for area in a.areas().collect::<Vec<_>>() {
        a.free(area.start).unwrap();
        assert_nodes(&a, &alloc);
    }
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(START, 256 * P)]);
    assert_eq!(alloc.live(), 1);

    alloc.fail_never();
    let z = a.alloc_area(req).unwrap();
    assert_eq!(z.start, START);
    assert_eq!(x.start, START);
    assert_nodes(&a, &alloc);
    drop(a);
    assert_eq!(alloc.live(), 0, "dropping the allocator frees every node");
}

#[test]
fn nodes_track_areas_and_holes_under_random_failures() {
    let alloc = CountingAlloc::new();
    let mut a = VmapAreas::new_in(START, START + 4096 * P, alloc.clone()).unwrap();
    let mut rng = Rng::new(9);
    let mut live: Vec<usize> = Vec::new();
    let steps = if cfg!(miri) { 300 } else { 5000 };
    for _ in 0..steps {
        if live.is_empty() || rng.range(0, 2) > 0 {
            // One allocation in four runs out of nodes after 0 or 1 successes.
            let fail = rng.range(0, 3);
            if fail < 2 {
                alloc.fail_after(fail);
            }
            let align = P << rng.range(0, 4);
            let before = snapshot(&a);
            let req = VmapAreaRequest { align, ..VmapAreaRequest::new(rng.range(1, 8) * P) };
            match a.alloc_area(req) {
                Ok(area) => live.push(area.start),
                Err(VmapError::NoMemory) => assert_eq!(snapshot(&a), before),
                Err(VmapError::NoSpace { .. }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
            alloc.fail_never();
        } else {
            let i = rng.range(0, live.len() - 1);
            alloc.fail_after(0);
            a.free(live.swap_remove(i)).unwrap();
            alloc.fail_never();
        }
        assert_nodes(&a, &alloc);
    }
}
