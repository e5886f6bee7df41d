//! `Box<T, A>`: one block per value, freed on drop; zero-sized values are never allocated.

use core::cell::Cell;
use core::mem::MaybeUninit;

use super::*;
use crate::kalloc::Box;

type TBox<T> = Box<T, TestAlloc>;

#[test]
fn new_allocates_one_block_and_drop_frees_it() {
    let before = stats();
    {
        let mut b = TBox::new([1u64; 4], GFP).unwrap();
        b[3] = 9;
        assert_eq!(b.iter().sum::<u64>(), 12);
        assert_eq!(stats().live, before.live + 1);
        assert_eq!(TBox::as_ptr(&b) as usize % align_of::<[u64; 4]>(), 0);
    }
    assert_eq!(stats().live, before.live, "dropping the box freed its block");
}

#[test]
fn drop_runs_the_destructor_once_then_frees() {
    let drops = Cell::new(0);
    let b = TBox::new(Counted(&drops, 5), GFP).unwrap();
    assert_eq!(b.1, 5);
    drop(b);
    assert_eq!(drops.get(), 1);
    assert_eq!(stats().live, 0);
}

/// Rust-for-Linux's `Box` does not allocate for zero-sized types: the pointer is dangling and
/// aligned, and nothing is freed.
#[test]
fn zero_sized_values_are_not_allocated() {
    #[repr(align(64))]
    struct Empty;
    let before = stats();
    let a = TBox::new((), GFP).unwrap();
    let e = TBox::new(Empty, GFP).unwrap();
    let z = TBox::new([0u32; 0], GFP).unwrap();
    assert_eq!(TBox::as_ptr(&e) as *const u8 as usize, 64, "dangling at the alignment");
    drop((a, e, z));
    assert_eq!(stats(), before, "no allocator call for zero-sized values");
}

#[test]
fn failure_is_an_error_and_nothing_is_allocated() {
    fail_after(Some(0));
    let r = TBox::new(7u64, GFP);
    fail_after(None);
    assert_eq!(r.err(), Some(AllocError::OutOfMemory { order: 0 }));
    assert_eq!(stats().live, 0);
}

#[test]
fn over_aligned_values_are_aligned() {
    #[repr(align(256))]
    struct Big([u8; 300]);
    let b = TBox::new(Big([3; 300]), GFP).unwrap();
    assert_eq!(TBox::as_ptr(&b) as usize % 256, 0);
    assert_eq!(b.0[299], 3);
}

#[test]
fn uninit_write_raw_round_trip_and_leak() {
    let u: TBox<MaybeUninit<u32>> = TBox::new_uninit(GFP).unwrap();
    let b = Box::write(u, 41);
    let raw = TBox::into_raw(b);
    // SAFETY: `raw` came from `into_raw` of a box of this type and allocator.
    let mut b = unsafe { TBox::from_raw(raw) };
    *b += 1;
    assert_eq!(*b, 42);
    assert_eq!(std::format!("{b:?} {b}"), "42 42");
    drop(b);
    assert_eq!(stats().live, 0);
    let leaked: &mut u64 = TBox::leak(TBox::new(1, GFP).unwrap());
    *leaked = 2;
    assert_eq!(stats().live, 1, "a leaked box keeps its block");
    // SAFETY: the leaked block is still the box's; give it back so the test frees it.
    drop(unsafe { TBox::from_raw(leaked) });
    assert_eq!(stats().live, 0);
}

#[test]
// rust/kernel/alloc.rs (Rust-for-Linux): `Flags` and `flags::GFP_KERNEL` etc., so that
// `KBox::new(x, GFP_KERNEL)?` reads as in Linux; the values are the GFP masks of
// include/linux/gfp_types.h (6.12).
fn bare_flag_names_are_the_gfp_masks() {
    use crate::kalloc::flags::{GFP_ATOMIC, GFP_KERNEL, GFP_NOWAIT};
    use crate::kalloc::Flags;
    assert_eq!((GFP_KERNEL.bits(), GFP_ATOMIC.bits(), GFP_NOWAIT.bits()), (0xcc0, 0x820, 0x2800));
    let b = TBox::new(7u32, GFP_KERNEL).unwrap();
    assert_eq!(*b, 7);
    let _: Flags = GFP_NOWAIT;
}
