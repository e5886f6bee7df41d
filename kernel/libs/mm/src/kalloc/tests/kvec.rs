//! `Vec<T, A>`: growth through `realloc`, unchanged on failure, no allocation while empty or
//! for zero-sized elements, every element dropped once.

use core::cell::Cell;

use super::*;
use crate::kalloc::Vec;

type TVec<T> = Vec<T, TestAlloc>;

/// Rust-for-Linux's `reserve`: the capacity becomes `max(2 * cap, len + additional)`.
#[test]
fn push_grows_by_doubling_and_keeps_the_contents() {
    let mut v = TVec::new();
    let mut caps = std::vec::Vec::new();
    for i in 0..100u32 {
        v.push(i, GFP).unwrap();
        if caps.last() != Some(&v.capacity()) {
            caps.push(v.capacity());
        }
    }
    assert_eq!(caps, [1, 2, 4, 8, 16, 32, 64, 128]);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    assert_eq!(stats().live, 1, "one block, grown by realloc");
    assert_eq!(v.pop(), Some(99));
    assert_eq!(v.len(), 99);
    drop(v);
    assert_eq!(stats().live, 0);
}

#[test]
fn empty_and_zero_capacity_vectors_do_not_allocate() {
    let before = stats();
    let v: TVec<u64> = TVec::new();
    let w: TVec<u64> = TVec::with_capacity(0, GFP).unwrap();
    let mut x: TVec<u64> = TVec::default();
    x.reserve(0, GFP).unwrap();
    assert!(v.is_empty() && w.capacity() == 0 && x.as_slice().is_empty());
    assert_eq!(x.pop(), None);
    drop((v, w, x));
    assert_eq!(stats(), before);
}

#[test]
fn zero_sized_elements_never_allocate() {
    std::thread_local!(static DROPS: Cell<usize> = const { Cell::new(0) });
    #[derive(Clone)]
    struct Z;
    impl Drop for Z {
        fn drop(&mut self) {
            DROPS.set(DROPS.get() + 1);
        }
    }
    let before = stats();
    let mut v = TVec::with_capacity(10, GFP).unwrap();
    assert_eq!(v.capacity(), usize::MAX);
    for _ in 0..1000 {
        v.push(Z, GFP).unwrap();
    }
    v.extend_from_slice(&[Z, Z], GFP).unwrap();
    assert_eq!(DROPS.get(), 2, "the slice's two values");
    assert_eq!(v.len(), 1002);
    v.truncate(2);
    assert_eq!(DROPS.get(), 1002);
    drop(v);
    assert_eq!(DROPS.get(), 1004);
    assert_eq!(stats(), before, "no allocator call for zero-sized elements");
}

/// A size that overflows is refused before the allocator (`Layout` rules: at most `isize::MAX`
/// bytes), reported through `Allocator::refused`, and changes nothing.
#[test]
fn overflowing_sizes_are_refused_and_leave_the_vector_unchanged() {
    let mut v: TVec<u64> = TVec::with_capacity(2, GFP).unwrap();
    v.push(1, GFP).unwrap();
    let before = stats();
    assert!(matches!(v.reserve(usize::MAX / 4, GFP), Err(AllocError::Invalid(_))));
    assert!(matches!(v.reserve(usize::MAX, GFP), Err(AllocError::Invalid(_))));
    assert!(matches!(
        TVec::<u64>::with_capacity(isize::MAX as usize / 8 + 1, GFP),
        Err(AllocError::Invalid(_))
    ));
    let after = stats();
    assert_eq!(after.refused, before.refused + 3);
    assert_eq!(after.calls, before.calls, "the allocator was not asked");
    assert_eq!((v.len(), v.capacity(), v[0]), (1, 2, 1));
    // The largest representable layout is asked for (and fails in the allocator, not before).
    fail_after(Some(0));
    assert_eq!(v.reserve(isize::MAX as usize / 8 - 1, GFP), Err(AllocError::OutOfMemory { order: 0 }));
    fail_after(None);
}

#[test]
fn failed_growth_leaves_contents_and_capacity_unchanged() {
    let mut v = TVec::with_capacity(4, GFP).unwrap();
    for i in 0..4u64 {
        v.push(i, GFP).unwrap();
    }
    fail_after(Some(0));
    assert_eq!(v.push(4, GFP), Err(AllocError::OutOfMemory { order: 0 }));
    assert_eq!(v.extend_from_slice(&[5, 6], GFP), Err(AllocError::OutOfMemory { order: 0 }));
    fail_after(None);
    assert_eq!((v.len(), v.capacity()), (4, 4));
    assert_eq!(&v[..], &[0, 1, 2, 3]);
    v.push(4, GFP).unwrap();
    assert_eq!(&v[..], &[0, 1, 2, 3, 4]);
}

#[test]
fn extend_from_slice_reserves_once_and_clones() {
    let mut v = TVec::new();
    v.extend_from_slice(b"hello, ", GFP).unwrap();
    let calls = stats().calls;
    v.extend_from_slice(b"world", GFP).unwrap();
    assert_eq!(stats().calls, calls + 1, "one realloc for the whole slice");
    assert_eq!(&v[..], b"hello, world");
    assert_eq!(v.capacity(), 14, "max(2 * 7, 12)");
}

#[test]
fn truncate_clear_and_drop_drop_each_element_once() {
    let drops = Cell::new(0);
    let mut v = TVec::new();
    for i in 0..10 {
        v.push(Counted(&drops, i), GFP).unwrap();
    }
    v.truncate(20);
    assert_eq!(drops.get(), 0, "truncating to a larger length does nothing");
    v.truncate(6);
    assert_eq!(drops.get(), 4);
    assert_eq!(v.iter().map(|c| c.1).sum::<u64>(), 15);
    let cap = v.capacity();
    let popped = v.pop().unwrap();
    assert_eq!(popped.1, 5);
    drop(popped);
    assert_eq!(drops.get(), 5);
    v.clear();
    assert_eq!((drops.get(), v.len(), v.capacity()), (10, 0, cap));
    v.push(Counted(&drops, 1), GFP).unwrap();
    drop(v);
    assert_eq!(drops.get(), 11);
    assert_eq!(stats().live, 0);
}

#[test]
fn derefs_to_a_slice() {
    let mut v = TVec::with_capacity(5, GFP).unwrap();
    v.extend_from_slice(&[5, 3, 9, 1, 7], GFP).unwrap();
    v.sort_unstable();
    assert_eq!(v.as_slice(), &[1, 3, 5, 7, 9]);
    v.as_mut_slice()[0] = 2;
    assert_eq!(v.first(), Some(&2));
    assert_eq!(std::format!("{v:?}"), "[2, 3, 5, 7, 9]");
    assert_eq!(v.as_ptr(), &v[0] as *const i32);
}

#[test]
fn over_aligned_elements_are_aligned() {
    #[derive(Clone, Copy)]
    #[repr(align(128))]
    struct A(u8);
    let mut v = TVec::new();
    for i in 0..9 {
        v.push(A(i), GFP).unwrap();
        assert_eq!(v.as_ptr() as usize % 128, 0);
    }
    assert_eq!(v[8].0, 8);
}
