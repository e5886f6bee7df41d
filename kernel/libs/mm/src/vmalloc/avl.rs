//! An AVL tree of address ranges whose nodes are individually allocated objects, optionally
//! augmented with the largest range size in each subtree (Linux's `subtree_max_size` of the
//! `free_vmap_area_root` rb-tree).
//!
//! Both trees of the vmap allocator use it: the free ranges (augmented: the lowest-address fit
//! in O(log n)) and the busy areas (lookup by address; `AUG = false` skips the augmentation).
//! Every node is a `Box` from the allocator `A`: in the kernel the `vmap_area` slab cache
//! (Linux's `vmap_area_cachep`), so the bookkeeping grows one small object at a time and never
//! needs a physically contiguous block, however many areas there are or however fragmented memory
//! is. Nodes move between the trees without reallocation ([`NodeBox`]): a free range used up by an
//! allocation becomes the busy area's node, a freed area's node becomes the free range when it
//! merges with nothing. Allocation happens only in [`Tree::alloc_node`], which callers invoke
//! *before* changing anything, so that a failed allocation leaves both trees untouched.
//!
//! The code is safe Rust: children are `Option<Box<Node>>`, so there are no indices to check.
//! Lookups are iterative; insert, remove and update recurse (a node has no parent link) and stop
//! fixing heights and maxima as soon as a subtree's height and maximum are what they were.

extern crate alloc;

use alloc::boxed::Box;
use core::alloc::{AllocError, Allocator};

/// The allocators a tree's nodes can come from.
pub trait NodeAlloc: Allocator + Clone {}
impl<A: Allocator + Clone> NodeAlloc for A {}

/// Deepest possible AVL tree: its height is below 1.45 * log2(n + 2), so 64 levels hold far
/// more nodes than the address space has room for.
const MAX_DEPTH: usize = 64;

type NodeRef<V, A> = Box<Node<V, A>, A>;
type Link<V, A> = Option<NodeRef<V, A>>;

/// One range (Linux's `struct vmap_area`): the same type in both trees, so that a node moves
/// from one to the other as it is.
pub struct Node<V, A: Allocator> {
    start: usize,
    size: usize,
    /// Largest `size` in the subtree rooted here (the augmentation; trees with `AUG` only).
    max: usize,
    left: Link<V, A>,
    right: Link<V, A>,
    height: u8,
    value: V,
}

/// A node outside any tree: freshly allocated, or removed from a tree. Dropping it frees it.
pub struct NodeBox<V, A: Allocator>(NodeRef<V, A>);

impl<V: Copy, A: Allocator> NodeBox<V, A> {
    /// The range and payload it carries.
    pub fn entry(&self) -> Entry<V> {
        Entry { start: self.0.start, size: self.0.size, value: self.0.value }
    }

    /// Gives it a new range and payload (before inserting it into a tree).
    pub fn set(&mut self, start: usize, size: usize, value: V) {
        let n = &mut *self.0;
        (n.start, n.size, n.value) = (start, size, value);
    }
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

impl<V: Copy, A: Allocator> Node<V, A> {
    fn entry(&self) -> Entry<V> {
        Entry { start: self.start, size: self.size, value: self.value }
    }
}

#[inline]
fn height<V, A: Allocator>(l: &Link<V, A>) -> u8 {
    l.as_ref().map_or(0, |n| n.height)
}

#[inline]
fn max_of<V, A: Allocator>(l: &Link<V, A>) -> usize {
    l.as_ref().map_or(0, |n| n.max)
}

/// Ranges keyed by start address. Keys are unique; the caller guarantees ranges do not overlap.
/// With `AUG`, every node knows the largest size in its subtree ([`Tree::lowest_fit`]).
pub struct Tree<V: Copy, A: NodeAlloc, const AUG: bool> {
    root: Link<V, A>,
    len: usize,
    alloc: A,
}

impl<V: Copy, A: NodeAlloc, const AUG: bool> Tree<V, A, AUG> {
    pub const fn new_in(alloc: A) -> Self {
        Tree { root: None, len: 0, alloc }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// A node for `[start, start + size)`, not yet in any tree. The only place a tree allocates.
    pub fn alloc_node(&self, start: usize, size: usize, value: V) -> Result<NodeBox<V, A>, AllocError> {
        let node = Node { start, size, max: size, left: None, right: None, height: 1, value };
        Box::try_new_in(node, self.alloc.clone()).map(NodeBox)
    }

    /// Inserts a node. Its key must be absent.
    pub fn insert_node(&mut self, node: NodeBox<V, A>) {
        let mut b = node.0;
        (b.max, b.height, b.left, b.right) = (b.size, 1, None, None);
        Self::insert_at(&mut self.root, b);
        self.len += 1;
    }

    /// Allocates a node for `[start, start + size)` and inserts it; nothing changes on failure.
    pub fn insert(&mut self, start: usize, size: usize, value: V) -> Result<(), AllocError> {
        let node = self.alloc_node(start, size, value)?;
        self.insert_node(node);
        Ok(())
    }

    /// Removes the range starting at `start` and hands its node back (drop it to free it).
    pub fn remove(&mut self, start: usize) -> Option<NodeBox<V, A>> {
        let (node, _) = Self::remove_at(&mut self.root, start)?;
        self.len -= 1;
        Some(NodeBox(node))
    }

    /// The range starting exactly at `start`.
    pub fn get(&self, start: usize) -> Option<Entry<V>> {
        let mut cur = self.root.as_deref();
        while let Some(n) = cur {
            if start == n.start {
                return Some(n.entry());
            }
            cur = if start < n.start { n.left.as_deref() } else { n.right.as_deref() };
        }
        None
    }

    /// The range with the largest start `<= addr`.
    pub fn floor(&self, addr: usize) -> Option<Entry<V>> {
        self.neighbours(addr).0
    }

    /// The range with the smallest start `>= addr`.
    #[cfg(test)]
    pub fn ceil(&self, addr: usize) -> Option<Entry<V>> {
        let (le, gt) = self.neighbours(addr);
        le.filter(|e| e.start == addr).or(gt)
    }

    /// In one descent: the range with the largest start `<= addr` and the one with the smallest
    /// start `> addr` (both lie on the search path for `addr`).
    pub fn neighbours(&self, addr: usize) -> (Option<Entry<V>>, Option<Entry<V>>) {
        let (mut cur, mut le, mut gt) = (self.root.as_deref(), None, None);
        while let Some(n) = cur {
            if n.start <= addr {
                le = Some(n);
                cur = n.right.as_deref();
            } else {
                gt = Some(n);
                cur = n.left.as_deref();
            }
        }
        (le.map(Node::entry), gt.map(Node::entry))
    }

    /// Changes the range starting at `start` to `[new_start, new_start + new_size)`. The new
    /// start must keep the key order (it must stay between the neighbours' starts), so the shape of
    /// the tree does not change; only the augmentation along the path is recomputed.
    /// Returns false if there is no range at `start`.
    pub fn update(&mut self, start: usize, new_start: usize, new_size: usize) -> bool {
        Self::update_at(&mut self.root, start, new_start, new_size).is_some()
    }

    /// All ranges in address order.
    pub fn iter(&self) -> Iter<'_, V, A> {
        let mut it = Iter { stack: [None; MAX_DEPTH], depth: 0 };
        it.push_left(self.root.as_deref());
        it
    }

    /// Checks the AVL shape, the key order, the augmentation, and that ranges do not overlap.
    /// O(n); for tests and debugging.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut count = 0;
        Self::check_at(&self.root, &mut count)?;
        if count != self.len {
            return Err("node count differs from len");
        }
        let mut prev_end: Option<usize> = None;
        for e in self.iter() {
            if prev_end.is_some_and(|pe| e.start < pe) {
                return Err("ranges overlap or are out of order");
            }
            prev_end = Some(e.end());
        }
        Ok(())
    }

    fn check_at(l: &Link<V, A>, count: &mut usize) -> Result<(u8, usize), &'static str> {
        let Some(n) = l else { return Ok((0, 0)) };
        *count += 1;
        if n.left.as_ref().is_some_and(|c| c.start >= n.start) {
            return Err("left child key not smaller");
        }
        if n.right.as_ref().is_some_and(|c| c.start <= n.start) {
            return Err("right child key not larger");
        }
        let (hl, ml) = Self::check_at(&n.left, count)?;
        let (hr, mr) = Self::check_at(&n.right, count)?;
        if hl.abs_diff(hr) > 1 {
            return Err("AVL balance violated");
        }
        let h = 1 + hl.max(hr);
        if h != n.height {
            return Err("stored height is wrong");
        }
        let m = n.size.max(ml).max(mr);
        if AUG && m != n.max {
            return Err("subtree max size is wrong");
        }
        Ok((h, m))
    }

    /// Recomputes height and (with `AUG`) subtree max of `n` from its children.
    #[inline]
    fn fix(n: &mut Node<V, A>) {
        n.height = 1 + height(&n.left).max(height(&n.right));
        if AUG {
            n.max = n.size.max(max_of(&n.left)).max(max_of(&n.right));
        }
    }

    /// `link`'s node moves down to the right, its left child takes its place.
    fn rotate_right(link: &mut NodeRef<V, A>) {
        let Some(mut l) = link.left.take() else { return };
        link.left = l.right.take();
        // The subtree keeps its nodes, hence its maximum.
        l.max = link.max;
        Self::fix(link);
        core::mem::swap(link, &mut l);
        link.right = Some(l);
        link.height = 1 + height(&link.left).max(height(&link.right));
    }

    /// `link`'s node moves down to the left, its right child takes its place.
    fn rotate_left(link: &mut NodeRef<V, A>) {
        let Some(mut r) = link.right.take() else { return };
        link.right = r.left.take();
        r.max = link.max;
        Self::fix(link);
        core::mem::swap(link, &mut r);
        link.left = Some(r);
        link.height = 1 + height(&link.left).max(height(&link.right));
    }

    /// Restores the AVL balance at `n`, whose children are balanced and whose own height and
    /// max may be stale.
    fn balance(n: &mut NodeRef<V, A>) {
        let (hl, hr) = (height(&n.left), height(&n.right));
        if hl > hr + 1 {
            if let Some(l) = n.left.as_mut() {
                if height(&l.left) < height(&l.right) {
                    Self::fix(l);
                    Self::rotate_left(l);
                }
            }
            Self::fix(n);
            Self::rotate_right(n);
        } else if hr > hl + 1 {
            if let Some(r) = n.right.as_mut() {
                if height(&r.right) < height(&r.left) {
                    Self::fix(r);
                    Self::rotate_right(r);
                }
            }
            Self::fix(n);
            Self::rotate_left(n);
        } else {
            Self::fix(n);
        }
    }

    /// Inserts `new` below `link`; returns whether the subtree grew in height (its max was
    /// raised on the way down).
    fn insert_at(link: &mut Link<V, A>, new: NodeRef<V, A>) -> bool {
        let Some(n) = link else {
            *link = Some(new);
            return true;
        };
        if AUG && new.size > n.max {
            n.max = new.size;
        }
        let grew = if new.start < n.start {
            Self::insert_at(&mut n.left, new)
        } else {
            Self::insert_at(&mut n.right, new)
        };
        if !grew {
            return false;
        }
        let (hl, hr) = (height(&n.left), height(&n.right));
        if hl.abs_diff(hr) > 1 {
            // A rotation after an insert gives the subtree back its height from before.
            Self::balance(n);
            return false;
        }
        let h = 1 + hl.max(hr);
        let grew = h != n.height;
        n.height = h;
        grew
    }

    /// Detaches the minimum of the non-empty subtree at `link`, rebalancing the path.
    fn remove_min(link: &mut Link<V, A>) -> Option<NodeRef<V, A>> {
        let n = link.as_mut()?;
        if n.left.is_none() {
            let mut min = link.take()?;
            *link = min.right.take();
            return Some(min);
        }
        let min = Self::remove_min(&mut n.left);
        Self::balance(n);
        min
    }

    /// Removes the node with key `start` below `link`: returns it and whether the subtree's
    /// height or max changed (the parents' then need fixing).
    fn remove_at(link: &mut Link<V, A>, start: usize) -> Option<(NodeRef<V, A>, bool)> {
        let n = link.as_mut()?;
        let (removed, changed) = if start < n.start {
            Self::remove_at(&mut n.left, start)?
        } else if start > n.start {
            Self::remove_at(&mut n.right, start)?
        } else {
            let mut node = link.take()?;
            *link = match node.right.take() {
                None => node.left.take(),
                Some(right) => {
                    // The minimum of the right subtree takes the node's place (relinked, not
                    // copied: every node keeps its own range).
                    let mut right = Some(right);
                    let mut min = Self::remove_min(&mut right)?;
                    min.left = node.left.take();
                    min.right = right;
                    Self::balance(&mut min);
                    Some(min)
                }
            };
            return Some((node, true));
        };
        if !changed {
            return Some((removed, false));
        }
        let before = (n.height, n.max);
        Self::balance(n);
        Some((removed, (n.height, n.max) != before))
    }

    /// Changes the node with key `start`; `Some(changed)` when found, `changed` saying whether
    /// the subtree's max moved.
    fn update_at(link: &mut Link<V, A>, start: usize, new_start: usize, new_size: usize) -> Option<bool> {
        let n = link.as_mut()?;
        let changed = if start < n.start {
            Self::update_at(&mut n.left, start, new_start, new_size)?
        } else if start > n.start {
            Self::update_at(&mut n.right, start, new_start, new_size)?
        } else {
            (n.start, n.size) = (new_start, new_size);
            true
        };
        if !AUG || !changed {
            return Some(false);
        }
        let m = n.size.max(max_of(&n.left)).max(max_of(&n.right));
        let changed = m != n.max;
        n.max = m;
        Some(changed)
    }
}

impl<V: Copy, A: NodeAlloc> Tree<V, A, true> {
    /// Largest range size in the tree (0 when empty).
    pub fn max_size(&self) -> usize {
        max_of(&self.root)
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
        if self.max_size() < length {
            return None;
        }
        let mut cur = self.root.as_deref();
        while let Some(n) = cur {
            if max_of(&n.left) >= length {
                cur = n.left.as_deref();
                continue;
            }
            if let Some(r) = fits(n.start, n.size) {
                return Some((n.entry(), r));
            }
            // Invariant: max(n) >= length and the left subtree and this node cannot serve, so
            // the right subtree can.
            debug_assert!(max_of(&n.right) >= length, "fits() refused a range of >= length");
            cur = n.right.as_deref();
        }
        None
    }
}

/// Nodes outside any tree, chained through their own left link: a list that costs no
/// allocation (the lazily freed areas waiting for the purge). Last in, first out.
pub struct NodeList<V, A: Allocator> {
    head: Link<V, A>,
    len: usize,
}

impl<V: Copy, A: Allocator> NodeList<V, A> {
    pub const fn new() -> Self {
        NodeList { head: None, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, node: NodeBox<V, A>) {
        let mut b = node.0;
        (b.left, b.right) = (self.head.take(), None);
        self.head = Some(b);
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<NodeBox<V, A>> {
        let mut b = self.head.take()?;
        self.head = b.left.take();
        self.len -= 1;
        Some(NodeBox(b))
    }

    /// The nodes, most recently pushed first.
    pub fn iter(&self) -> impl Iterator<Item = Entry<V>> + '_ {
        let mut cur = self.head.as_deref();
        core::iter::from_fn(move || {
            let n = cur?;
            cur = n.left.as_deref();
            Some(n.entry())
        })
    }
}

impl<V, A: Allocator> Drop for NodeList<V, A> {
    /// One node at a time: the default drop would recurse once per node.
    fn drop(&mut self) {
        let mut cur = self.head.take();
        while let Some(mut b) = cur {
            cur = b.left.take();
        }
    }
}

/// In-order iterator with an explicit stack (no recursion, no allocation).
pub struct Iter<'a, V, A: Allocator> {
    stack: [Option<&'a Node<V, A>>; MAX_DEPTH],
    depth: usize,
}

impl<'a, V, A: Allocator> Iter<'a, V, A> {
    fn push_left(&mut self, mut cur: Option<&'a Node<V, A>>) {
        while let Some(n) = cur {
            self.stack[self.depth] = Some(n);
            self.depth += 1;
            cur = n.left.as_deref();
        }
    }
}

impl<V: Copy, A: Allocator> Iterator for Iter<'_, V, A> {
    type Item = Entry<V>;
    fn next(&mut self) -> Option<Entry<V>> {
        self.depth = self.depth.checked_sub(1)?;
        let n = self.stack[self.depth].take()?;
        self.push_left(n.right.as_deref());
        Some(n.entry())
    }
}

#[cfg(test)]
mod tests;
