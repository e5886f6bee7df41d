//! An AVL tree of address ranges in an index-linked arena, augmented with the largest range size
//! in each subtree (Linux's `subtree_max_size` of the `free_vmap_area_root` rb-tree).
//!
//! Both trees of the vmap allocator use it: the free ranges (the augmentation drives the
//! lowest-address fit in O(log n)) and the busy areas (lookup by address; the augmentation is kept
//! but unused there). Nodes live in a `Vec` and link by `u32` index rather than by pointer: no
//! `unsafe`, no per-node heap allocation, freed slots are reused, and Miri has nothing to object
//! to. The `Vec` only grows in [`Tree::reserve`], which callers invoke *before* changing anything so
//! that a failed heap allocation leaves both trees untouched.

extern crate alloc;

use alloc::collections::TryReserveError;
use alloc::vec::Vec;

/// "No node" in the index links.
const NIL: u32 = u32::MAX;

/// Deepest possible AVL tree with fewer than 2^32 nodes is about 1.44 * 32 = 46 levels.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy)]
struct Node<V> {
    start: usize,
    size: usize,
    /// Largest `size` in the subtree rooted here (the augmentation).
    max: usize,
    left: u32,
    /// Free slots reuse `left` as the link of the slot free list.
    right: u32,
    height: u8,
    value: V,
}

/// A range in the tree: `[start, start + size)` with its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<V> {
    pub start: usize,
    pub size: usize,
    pub value: V,
}

impl<V> Entry<V> {
    #[inline]
    pub fn end(&self) -> usize {
        self.start + self.size
    }
}

/// Ranges keyed by start address. Keys are unique; the caller guarantees ranges do not overlap.
pub struct Tree<V: Copy> {
    nodes: Vec<Node<V>>,
    root: u32,
    /// Head of the list of freed slots (linked through `left`).
    free_slot: u32,
    nr_free_slots: usize,
    len: usize,
}

impl<V: Copy> Tree<V> {
    pub const fn new() -> Self {
        Tree { nodes: Vec::new(), root: NIL, free_slot: NIL, nr_free_slots: 0, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Largest range size in the tree (0 when empty).
    pub fn max_size(&self) -> usize {
        self.max(self.root)
    }

    /// Makes sure `n` more inserts need no heap allocation.
    pub fn reserve(&mut self, n: usize) -> Result<(), TryReserveError> {
        if n > self.nr_free_slots {
            self.nodes.try_reserve(n - self.nr_free_slots)?;
        }
        Ok(())
    }

    /// Makes sure the tree can hold `total` nodes without heap allocation.
    pub fn reserve_total(&mut self, total: usize) -> Result<(), TryReserveError> {
        self.nodes.try_reserve(total.saturating_sub(self.nodes.len()))
    }

    /// Inserts `[start, start + size)`. The key must be absent; call [`Tree::reserve`] first.
    pub fn insert(&mut self, start: usize, size: usize, value: V) {
        let node = Node { start, size, max: size, left: NIL, right: NIL, height: 1, value };
        let idx = if self.free_slot != NIL {
            let idx = self.free_slot;
            self.free_slot = self.nodes[idx as usize].left;
            self.nr_free_slots -= 1;
            self.nodes[idx as usize] = node;
            idx
        } else {
            // Capacity was reserved by the caller, so this push does not allocate.
            debug_assert!(self.nodes.len() < self.nodes.capacity(), "insert without reserve");

            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        self.root = self.insert_at(self.root, idx);
        self.len += 1;
    }

    /// Removes the range starting at `start`, returning it.
    pub fn remove(&mut self, start: usize) -> Option<Entry<V>> {
        let mut removed = NIL;
        self.root = self.remove_at(self.root, start, &mut removed);
        if removed == NIL {
            return None;
        }
        let entry = self.entry(removed);
        self.nodes[removed as usize].left = self.free_slot;
        self.free_slot = removed;
        self.nr_free_slots += 1;
        self.len -= 1;
        Some(entry)
    }

    /// The range starting exactly at `start`.
    pub fn get(&self, start: usize) -> Option<Entry<V>> {
        let mut n = self.root;
        while n != NIL {
            let node = &self.nodes[n as usize];
            if start == node.start {
                return Some(self.entry(n));
            }
            n = if start < node.start { node.left } else { node.right };
        }
        None
    }

    /// The range with the largest start `<= addr`.
    pub fn floor(&self, addr: usize) -> Option<Entry<V>> {
        let (mut n, mut best) = (self.root, NIL);
        while n != NIL {
            let node = &self.nodes[n as usize];
            if node.start <= addr {
                best = n;
                n = node.right;
            } else {
                n = node.left;
            }
        }
        (best != NIL).then(|| self.entry(best))
    }

    /// The range with the smallest start `>= addr`.
    pub fn ceil(&self, addr: usize) -> Option<Entry<V>> {
        let (mut n, mut best) = (self.root, NIL);
        while n != NIL {
            let node = &self.nodes[n as usize];
            if node.start >= addr {
                best = n;
                n = node.left;
            } else {
                n = node.right;
            }
        }
        (best != NIL).then(|| self.entry(best))
    }

    /// Changes the range starting at `start` to `[new_start, new_start + new_size)`. The new
    /// start must keep the key order (it must stay between the neighbours' starts), so the shape of
    /// the tree does not change; only the augmentation along the path is recomputed.
    /// Returns false if there is no range at `start`.
    pub fn update(&mut self, start: usize, new_start: usize, new_size: usize) -> bool {
        let mut path = [NIL; MAX_DEPTH];
        let mut depth = 0;
        let mut n = self.root;
        while n != NIL {
            path[depth] = n;
            depth += 1;
            let node = &self.nodes[n as usize];
            if start == node.start {
                break;
            }
            n = if start < node.start { node.left } else { node.right };
        }
        if n == NIL {
            return false;
        }
        let node = &mut self.nodes[n as usize];
        node.start = new_start;
        node.size = new_size;
        for &p in path[..depth].iter().rev() {
            self.fix(p);
        }
        true
    }

    /// The lowest-addressed range for which `fits(start, size)` returns `Some`, searching like
    /// Linux's `find_vmap_lowest_match`: descend left while the left subtree holds a range of at
    /// least `length` bytes, else try this node, else go right. `fits` must succeed for every range
    /// of size `>= length`; then the walk never backtracks and costs O(log n). Among the ranges of
    /// size `>= length` the lowest-addressed one is found; a smaller range met on the way that
    /// happens to fit (thanks to its alignment) is taken first, which is lower still.
    pub fn lowest_fit<R>(
        &self,
        length: usize,
        mut fits: impl FnMut(usize, usize) -> Option<R>,
    ) -> Option<(Entry<V>, R)> {
        let mut n = self.root;
        if self.max(n) < length {
            return None;
        }
        while n != NIL {
            let node = &self.nodes[n as usize];
            if self.max(node.left) >= length {
                n = node.left;
                continue;
            }
            if let Some(r) = fits(node.start, node.size) {
                return Some((self.entry(n), r));
            }
            // Invariant: max(n) >= length and the left subtree and this node cannot serve, so
            // the right subtree can.
            debug_assert!(self.max(node.right) >= length, "fits() refused a range of >= length");
            n = node.right;
        }
        None
    }

    /// All ranges in address order.
    pub fn iter(&self) -> Iter<'_, V> {
        let mut it = Iter { tree: self, stack: [NIL; MAX_DEPTH], depth: 0 };
        it.push_left(self.root);
        it
    }

    /// Checks the AVL shape, the key order, the augmentation, and that ranges do not overlap.
    /// O(n); for tests and debugging.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut count = 0;
        self.check_at(self.root, &mut count)?;
        if count != self.len {
            return Err("node count differs from len");
        }
        let mut prev_end: Option<usize> = None;
        for e in self.iter() {
            if let Some(pe) = prev_end {
                if e.start < pe {
                    return Err("ranges overlap or are out of order");
                }
            }
            prev_end = Some(e.end());
        }
        Ok(())
    }

    fn check_at(&self, n: u32, count: &mut usize) -> Result<(i32, usize), &'static str> {
        if n == NIL {
            return Ok((0, 0));
        }
        *count += 1;
        let node = &self.nodes[n as usize];
        if node.left != NIL && self.nodes[node.left as usize].start >= node.start {
            return Err("left child key not smaller");
        }
        if node.right != NIL && self.nodes[node.right as usize].start <= node.start {
            return Err("right child key not larger");
        }
        let (hl, ml) = self.check_at(node.left, count)?;
        let (hr, mr) = self.check_at(node.right, count)?;
        if (hl - hr).abs() > 1 {
            return Err("AVL balance violated");
        }
        let h = 1 + hl.max(hr);
        if h != node.height as i32 {
            return Err("stored height is wrong");
        }
        let m = node.size.max(ml).max(mr);
        if m != node.max {
            return Err("subtree max size is wrong");
        }
        Ok((h, m))
    }

    fn entry(&self, n: u32) -> Entry<V> {
        let node = &self.nodes[n as usize];
        Entry { start: node.start, size: node.size, value: node.value }
    }

    #[inline]
    fn height(&self, n: u32) -> i32 {
        if n == NIL {
            0
        } else {
            self.nodes[n as usize].height as i32
        }
    }

    #[inline]
    fn max(&self, n: u32) -> usize {
        if n == NIL {
            0
        } else {
            self.nodes[n as usize].max
        }
    }

    /// Recomputes height and subtree max of `n` from its children.
    fn fix(&mut self, n: u32) {
        let (l, r) = (self.nodes[n as usize].left, self.nodes[n as usize].right);
        let height = 1 + self.height(l).max(self.height(r));
        let max = self.nodes[n as usize].size.max(self.max(l)).max(self.max(r));
        let node = &mut self.nodes[n as usize];
        node.height = height as u8;
        node.max = max;
    }

    fn rotate_right(&mut self, n: u32) -> u32 {
        let l = self.nodes[n as usize].left;
        self.nodes[n as usize].left = self.nodes[l as usize].right;
        self.nodes[l as usize].right = n;
        self.fix(n);
        self.fix(l);
        l
    }

    fn rotate_left(&mut self, n: u32) -> u32 {
        let r = self.nodes[n as usize].right;
        self.nodes[n as usize].right = self.nodes[r as usize].left;
        self.nodes[r as usize].left = n;
        self.fix(n);
        self.fix(r);
        r
    }

    /// Restores the AVL balance at `n` (children already balanced), returning the subtree root.
    fn balance(&mut self, n: u32) -> u32 {
        self.fix(n);
        let (l, r) = (self.nodes[n as usize].left, self.nodes[n as usize].right);
        let bf = self.height(l) - self.height(r);
        if bf > 1 {
            let (ll, lr) = (self.nodes[l as usize].left, self.nodes[l as usize].right);
            if self.height(ll) < self.height(lr) {
                self.nodes[n as usize].left = self.rotate_left(l);
            }
            return self.rotate_right(n);
        }
        if bf < -1 {
            let (rl, rr) = (self.nodes[r as usize].left, self.nodes[r as usize].right);
            if self.height(rr) < self.height(rl) {
                self.nodes[n as usize].right = self.rotate_right(r);
            }
            return self.rotate_left(n);
        }
        n
    }

    fn insert_at(&mut self, n: u32, new: u32) -> u32 {
        if n == NIL {
            return new;
        }
        if self.nodes[new as usize].start < self.nodes[n as usize].start {
            let l = self.insert_at(self.nodes[n as usize].left, new);
            self.nodes[n as usize].left = l;
        } else {
            let r = self.insert_at(self.nodes[n as usize].right, new);
            self.nodes[n as usize].right = r;
        }
        self.balance(n)
    }

    /// Detaches the minimum of the subtree at `n`: returns (new subtree root, detached node).
    fn remove_min(&mut self, n: u32) -> (u32, u32) {
        let l = self.nodes[n as usize].left;
        if l == NIL {
            return (self.nodes[n as usize].right, n);
        }
        let (nl, min) = self.remove_min(l);
        self.nodes[n as usize].left = nl;
        (self.balance(n), min)
    }

    fn remove_at(&mut self, n: u32, start: usize, removed: &mut u32) -> u32 {
        if n == NIL {
            return NIL;
        }
        let key = self.nodes[n as usize].start;
        if start < key {
            let l = self.remove_at(self.nodes[n as usize].left, start, removed);
            self.nodes[n as usize].left = l;
        } else if start > key {
            let r = self.remove_at(self.nodes[n as usize].right, start, removed);
            self.nodes[n as usize].right = r;
        } else {
            *removed = n;
            let (l, r) = (self.nodes[n as usize].left, self.nodes[n as usize].right);
            if r == NIL {
                return l;
            }
            // Replace the node by the minimum of its right subtree (relinking, not copying, so
            // no other node changes index).
            let (nr, min) = self.remove_min(r);
            self.nodes[min as usize].left = l;
            self.nodes[min as usize].right = nr;
            return self.balance(min);
        }
        self.balance(n)
    }
}

impl<V: Copy> Default for Tree<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// In-order iterator with an explicit stack (no recursion, no allocation).
pub struct Iter<'a, V: Copy> {
    tree: &'a Tree<V>,
    stack: [u32; MAX_DEPTH],
    depth: usize,
}

impl<V: Copy> Iter<'_, V> {
    fn push_left(&mut self, mut n: u32) {
        while n != NIL {
            self.stack[self.depth] = n;
            self.depth += 1;
            n = self.tree.nodes[n as usize].left;
        }
    }
}

impl<V: Copy> Iterator for Iter<'_, V> {
    type Item = Entry<V>;
    fn next(&mut self) -> Option<Entry<V>> {
        if self.depth == 0 {
            return None;
        }
        self.depth -= 1;
        let n = self.stack[self.depth];
        self.push_left(self.tree.nodes[n as usize].right);
        Some(self.tree.entry(n))
    }
}

#[cfg(test)]
mod tests {
    use super::Tree;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    #[test]
    fn insert_remove_keeps_avl_and_augmentation() {
        let mut t: Tree<u32> = Tree::new();
        let mut model = BTreeMap::new();
        // A deterministic pseudo-random permutation of keys.
        let n: usize = if cfg!(miri) { 200 } else { 3000 };
        let keys: Vec<usize> = (0..n).map(|i| (i * 7919) % n).collect();
        for &k in &keys {
            t.reserve(1).unwrap();
            t.insert(k * 16, k % 13 + 1, k as u32);
            model.insert(k * 16, (k % 13 + 1, k as u32));
        }
        t.check().unwrap();
        assert_eq!(t.max_size(), 13);
        for &k in keys.iter().step_by(3) {
            let e = t.remove(k * 16).unwrap();
            assert_eq!((e.size, e.value), model.remove(&(k * 16)).unwrap());
            assert!(t.remove(k * 16).is_none());
        }
        t.check().unwrap();
        let got: Vec<_> = t.iter().map(|e| (e.start, (e.size, e.value))).collect();
        let want: Vec<_> = model.iter().map(|(&k, &v)| (k, v)).collect();
        assert_eq!(got, want);
        // floor/ceil against the model.
        for probe in (0..n * 16 + 20).step_by(5) {
            assert_eq!(t.floor(probe).map(|e| e.start), model.range(..=probe).next_back().map(|(&k, _)| k));
            assert_eq!(t.ceil(probe).map(|e| e.start), model.range(probe..).next().map(|(&k, _)| k));
        }
        // Slots are reused: removing and inserting again does not grow the arena.
        let cap = t.nodes.len();
        for &k in keys.iter().step_by(3) {
            t.reserve(1).unwrap();
            t.insert(k * 16, 1, 0);
        }
        assert_eq!(t.nodes.len(), cap);
        t.check().unwrap();
    }

    #[test]
    fn update_recomputes_max_along_the_path() {
        let mut t: Tree<()> = Tree::new();
        t.reserve(100).unwrap();
        for k in 0..100 {
            t.insert(k * 100, 10, ());
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
        let mut t: Tree<()> = Tree::new();
        t.reserve(64).unwrap();
        // Sizes vary; the lowest range of size >= s must be found for every s.
        let sizes: Vec<usize> = (0..64).map(|i| (i * 37) % 17 + 1).collect();
        for (i, &s) in sizes.iter().enumerate() {
            t.insert(i * 100, s, ());
        }
        for want in 1..=18 {
            let got = t.lowest_fit(want, |_, size| (size >= want).then_some(())).map(|(e, _)| e.start);
            let model = sizes.iter().position(|&s| s >= want).map(|i| i * 100);
            assert_eq!(got, model, "length {want}");
        }
    }
}
