use super::{NodeBox, Tree};
use crate::vmalloc::tests::nodes::CountingAlloc;
use std::alloc::Global;
use std::collections::BTreeMap;
use std::vec::Vec;

#[test]
fn insert_remove_keeps_avl_and_augmentation() {
    let alloc = CountingAlloc::new();
    let mut t: Tree<u32, _, true> = Tree::new_in(alloc.clone());
    let mut model = BTreeMap::new();
    // A deterministic pseudo-random permutation of keys.
    let n: usize = if cfg!(miri) { 200 } else { 3000 };
    let keys: Vec<usize> = (0..n).map(|i| (i * 7919) % n).collect();
    for &k in &keys {
        t.insert(k * 16, k % 13 + 1, k as u32).unwrap();
        model.insert(k * 16, (k % 13 + 1, k as u32));
    }
    t.check().unwrap();
    assert_eq!(t.max_size(), 13);
    assert_eq!(alloc.live(), n);
    for &k in keys.iter().step_by(3) {
        let e = t.remove(k * 16).unwrap().entry();
        assert_eq!((e.size, e.value), model.remove(&(k * 16)).unwrap());
        assert!(t.remove(k * 16).is_none());
    }
    t.check().unwrap();
    // Removed nodes were dropped, hence freed.
    assert_eq!(alloc.live(), model.len());
    let got: Vec<_> = t.iter().map(|e| (e.start, (e.size, e.value))).collect();
    let want: Vec<_> = model.iter().map(|(&k, &v)| (k, v)).collect();
    assert_eq!(got, want);
    // floor/ceil/neighbours against the model.
    for probe in (0..n * 16 + 20).step_by(5) {
        let le = model.range(..=probe).next_back().map(|(&k, _)| k);
        assert_eq!(t.floor(probe).map(|e| e.start), le);
        assert_eq!(t.ceil(probe).map(|e| e.start), model.range(probe..).next().map(|(&k, _)| k));
        let gt = model.range(probe + 1..).next().map(|(&k, _)| k);
        let (a, b) = t.neighbours(probe);
        assert_eq!((a.map(|e| e.start), b.map(|e| e.start)), (le, gt));
    }
    drop(t);
    assert_eq!(alloc.live(), 0, "dropping the tree frees every node");
}

#[test]
fn removed_nodes_move_between_trees_without_allocating() {
    let alloc = CountingAlloc::new();
    let mut a: Tree<u8, _, true> = Tree::new_in(alloc.clone());
    let mut b: Tree<u8, _, false> = Tree::new_in(alloc.clone());
    for k in 0..100 {
        a.insert(k * 10, k % 9 + 1, 1).unwrap();
    }
    let made = alloc.allocations();
    for k in (0..100).rev() {
        let mut node: NodeBox<u8, _> = a.remove(k * 10).unwrap();
        node.set(k * 20, 5, 2);
        b.insert_node(node);
        a.check().unwrap();
    }
    b.check().unwrap();
    assert_eq!(alloc.allocations(), made, "moving a node allocates nothing");
    assert_eq!((a.len(), b.len(), alloc.live()), (0, 100, 100));
    assert_eq!(a.max_size(), 0);
    assert!(b.iter().all(|e| e.size == 5 && e.value == 2));
}

#[test]
fn a_failed_allocation_changes_nothing() {
    let alloc = CountingAlloc::new();
    let mut t: Tree<(), _, true> = Tree::new_in(alloc.clone());
    for k in 0..10 {
        t.insert(k * 100, 10, ()).unwrap();
    }
    alloc.fail_after(0);
    assert!(t.insert(5000, 10, ()).is_err());
    assert!(t.alloc_node(5000, 10, ()).is_err());
    assert_eq!(t.len(), 10);
    assert!(t.get(5000).is_none());
    t.check().unwrap();
    alloc.fail_never();
    t.insert(5000, 10, ()).unwrap();
    t.check().unwrap();
}

#[test]
fn update_recomputes_max_along_the_path() {
    let mut t: Tree<(), Global, true> = Tree::new_in(Global);
    for k in 0..100 {
        t.insert(k * 100, 10, ()).unwrap();
    }
    assert!(t.update(5000, 4990, 60));
    t.check().unwrap();
    assert_eq!(t.max_size(), 60);
    assert!(t.update(4990, 4990, 5));
    t.check().unwrap();
    assert_eq!(t.max_size(), 10);
    assert!(!t.update(4991, 4991, 1));
}

#[test]
fn lowest_fit_finds_lowest_range_of_sufficient_size() {
    let mut t: Tree<(), Global, true> = Tree::new_in(Global);
    // Sizes vary; the lowest range of size >= s must be found for every s.
    let sizes: Vec<usize> = (0..64).map(|i| (i * 37) % 17 + 1).collect();
    for (i, &s) in sizes.iter().enumerate() {
        t.insert(i * 100, s, ()).unwrap();
    }
    for want in 1..=18 {
        let got = t.lowest_fit(want, |_, size| (size >= want).then_some(())).map(|(e, _)| e.start);
        let model = sizes.iter().position(|&s| s >= want).map(|i| i * 100);
        assert_eq!(got, model, "length {want}");
    }
}

#[test]
fn unaugmented_tree_keeps_its_shape() {
    let mut t: Tree<u32, Global, false> = Tree::new_in(Global);
    let n: usize = if cfg!(miri) { 300 } else { 5000 };
    for k in 0..n {
        t.insert(k * 8, 8, k as u32).unwrap();
    }
    t.check().unwrap();
    for k in (0..n).filter(|k| k % 3 != 1) {
        assert_eq!(t.remove(k * 8).map(|b| b.entry().value), Some(k as u32));
    }
    t.check().unwrap();
    assert_eq!(t.iter().count(), (0..n).filter(|k| k % 3 == 1).count());
}
