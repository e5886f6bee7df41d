//! The `lib/test_vmalloc.c` scenarios, at the area level (no pages, no mappings): they stress
//! the free-range tree the way the kernel module stresses vmalloc.

use std::vec::Vec;

use super::Rng;
use crate::addr::PAGE_SIZE;
use crate::vmalloc::{VmapAreas, VmapError};

const P: usize = PAGE_SIZE;
const START: usize = 0xffff_c900_0000_0000;
/// The kernel's 32 TiB range.
const END: usize = START + (32 << 40);

/// Loop count (test_vmalloc.c's `test_loop_count`, scaled down).
const LOOPS: usize = if cfg!(miri) { 50 } else { 20_000 };

fn vmalloc_range() -> VmapAreas {
    VmapAreas::new(START, END).unwrap()
}

fn assert_all_freed(a: &VmapAreas) {
    a.check().unwrap();
    assert_eq!(a.nr_areas(), 0);
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(START, END - START)]);
}

/// fix_size_alloc_test: one page, allocated and freed again and again; it always lands at the
/// same (lowest) address.
#[test]
fn fix_size_alloc() {
    let mut a = vmalloc_range();
    for _ in 0..LOOPS {
        let x = a.alloc(P, P, true).unwrap();
        assert_eq!(x.start, START);
        a.free(x.start).unwrap();
    }
    assert_all_freed(&a);
}

/// full_fit_alloc_test: fill the space with alternating 1- and 2-page areas, free the 1-page
/// ones (holes of 2 pages with the guard), then 1-page requests fit the holes exactly, lowest
/// first, and never extend the used space.
#[test]
fn full_fit_alloc() {
    let mut a = vmalloc_range();
    let n = if cfg!(miri) { 30 } else { 2_000 };
    let mut small = Vec::new();
    let mut big = Vec::new();
    for _ in 0..n {
        small.push(a.alloc(P, P, true).unwrap().start);
        big.push(a.alloc(2 * P, P, true).unwrap().start);
    }
    let high_water = a.free_ranges().last().unwrap().0;
    for &s in &small {
        a.free(s).unwrap();
    }
    a.check().unwrap();
    for &hole in &small {
        let x = a.alloc(P, P, true).unwrap();
        assert_eq!(x.start, hole, "lowest exact fit");
    }
    assert_eq!(a.free_ranges().count(), 1, "every hole filled");
    assert_eq!(a.free_ranges().last().unwrap().0, high_water);
    for s in small.into_iter().chain(big) {
        a.free(s).unwrap();
    }
    assert_all_freed(&a);
}

/// long_busy_list_alloc_test: thousands of live areas, then alloc/free cycles on top of them.
#[test]
fn long_busy_list_alloc() {
    let mut a = vmalloc_range();
    let n = if cfg!(miri) { 300 } else { 15_000 };
    let live: Vec<usize> = (0..n).map(|_| a.alloc(P, P, true).unwrap().start).collect();
    for _ in 0..LOOPS {
        let x = a.alloc(P, P, true).unwrap();
        assert_eq!(x.start, START + n * 2 * P);
        a.free(x.start).unwrap();
    }
    a.check().unwrap();
    for s in live {
        a.free(s).unwrap();
    }
    assert_all_freed(&a);
}

/// random_size_alloc_test: random sizes of 1..=100 pages, freed at random, against a live set.
#[test]
fn random_size_alloc() {
    let mut a = vmalloc_range();
    let mut rng = Rng::new(0x5eed_0001);
    let mut live: Vec<(usize, usize)> = Vec::new();
    for i in 0..LOOPS {
        if live.len() < 500 && !rng.next().is_multiple_of(3) {
            let size = rng.range(1, 100) * P;
            let x = a.alloc(size, P, true).unwrap();
            assert_eq!(x.size, size + P);
            live.push((x.start, x.size));
        } else if !live.is_empty() {
            let (s, size) = live.swap_remove(rng.range(0, live.len() - 1));
            assert_eq!(a.free(s).unwrap().size, size);
        }
        if i % 1000 == 0 {
            a.check().unwrap();
        }
    }
    for (s, _) in live {
        a.free(s).unwrap();
    }
    assert_all_freed(&a);
}

/// fix_align_alloc_test (align_shift_alloc_test): one page with every alignment from a page up
/// to 2^63. Alignments the range can hold succeed and are honoured; larger ones fail cleanly.
#[test]
fn fix_align_alloc() {
    let mut a = vmalloc_range();
    for shift in 12..usize::BITS {
        let align = 1usize << shift;
        match a.alloc(P, align, true) {
            Ok(x) => {
                assert_eq!(x.start % align, 0);
                // Like Linux, only free ranges of at least size + align - 1 bytes are searched:
                // up to 2^44 that is within the 2^45-byte range.
                assert!(shift <= 44, "2^{shift} cannot fit");
                a.free(x.start).unwrap();
            }
            Err(e) => {
                assert!(matches!(e, VmapError::NoSpace { .. }), "{e:?}");
                assert!(shift > 44, "2^{shift} should fit");
            }
        }
    }
    assert_all_freed(&a);
}

/// random_size_align_alloc_test: random sizes and alignments (up to 2^22, as test_vmalloc.c).
#[test]
fn random_size_align_alloc() {
    let mut a = vmalloc_range();
    let mut rng = Rng::new(0x5eed_0002);
    let mut live: Vec<usize> = Vec::new();
    for i in 0..LOOPS {
        if live.len() < 300 && !rng.next().is_multiple_of(3) {
            let align = 1usize << rng.range(12, 22);
            let size = rng.range(1, 64) * P;
            let x = a.alloc(size, align, rng.next().is_multiple_of(2)).unwrap();
            assert_eq!(x.start % align, 0);
            live.push(x.start);
        } else if !live.is_empty() {
            let s = live.swap_remove(rng.range(0, live.len() - 1));
            a.free(s).unwrap();
        }
        if i % 1000 == 0 {
            a.check().unwrap();
        }
    }
    for s in live {
        a.free(s).unwrap();
    }
    assert_all_freed(&a);
}
