//! The kmalloc helpers of Linux 6.12's `mm/slab_common.c` and `include/linux/slab.h`:
//! `kmalloc_size_roundup`, `krealloc_array`, `ksize` of objects of any cache, and the exact
//! extent of `krealloc`'s `__GFP_ZERO` when it keeps the block.

use super::*;
use crate::testing::FilledWith;

/// `kmalloc_size_roundup()` (mm/slab_common.c, 6.12): the bucket's object size up to
/// KMALLOC_MAX_CACHE_SIZE, `PAGE_SIZE << get_order(size)` up to KMALLOC_MAX_SIZE, `size` itself
/// for 0 and above.
#[test]
fn kmalloc_size_roundup_reports_the_bucket() {
    for (size, rounded) in [
        (0, 0),
        (1, 8),
        (9, 16),
        (65, 96),
        (126, 128),
        (129, 192),
        (193, 256),
        (4097, 8192),
        (8192, 8192),
        (8193, 16384),
        (12288, 16384),
        (KMALLOC_MAX_SIZE, KMALLOC_MAX_SIZE),
        (KMALLOC_MAX_SIZE + 1, KMALLOC_MAX_SIZE + 1),
        (usize::MAX, usize::MAX),
    ] {
        assert_eq!(kmalloc_size_roundup(size), rounded, "size {size}");
    }
    with_kmalloc(PAGES, "", |_, km| {
        for size in [1, 100, 3000, 9000] {
            let p = km.kmalloc(size, GFP).unwrap();
            assert_eq!(km.ksize(p.as_ptr()), Ok(kmalloc_size_roundup(size)), "ksize of kmalloc({size})");
            km.kfree(p.as_ptr()).unwrap();
        }
    });
}

/// `krealloc_array()` (include/linux/slab.h, 6.12): `check_mul_overflow` fails the call and
/// leaves the block as it was; otherwise it is `krealloc(p, new_n * new_size)`.
#[test]
fn krealloc_array_refuses_overflow_and_keeps_the_block() {
    with_kmalloc(PAGES, "", |_, km| {
        let p = km.kmalloc_array(4, 8, GFP).unwrap();
        fill(p, 32, 0x5a);
        assert_eq!(
            km.krealloc_array(p.as_ptr(), usize::MAX / 2, 3, GFP),
            Err(SlabError::Alloc(AllocError::Invalid("krealloc_array: new_n * new_size overflows")))
        );
        assert!(bytes(p, 0, 32).filled_with(0x5a), "the block is untouched");
        let q = km.krealloc_array(p.as_ptr(), 100, 8, GFP).unwrap();
        assert_eq!(km.ksize(q.as_ptr()), Ok(1024));
        assert!(bytes(q, 0, 32).filled_with(0x5a), "contents moved");
        assert!(matches!(km.kfree(p.as_ptr()), Err(SlabError::DoubleFree { .. })), "the old block was freed");
        km.kfree(q.as_ptr()).unwrap();
    });
}

/// `ksize()` of a `kmem_cache_alloc` object (mm/slab_common.c `__ksize()`, 6.12): the cache's
/// `slab_ksize()` (mm/slab.h): the whole slot (`s->size`, alignment padding and, with a ctor,
/// the free pointer word after the object) without debugging, `s->inuse` with only a track
/// record (`SLAB_STORE_USER`), `s->object_size` with red zones or poisoning.
#[test]
fn ksize_of_other_caches_is_slab_ksize() {
    with_kmalloc(PAGES, "", |_, km| {
        let slab = km.slab();
        let padded = slab.kmem_cache_create("ks-100", 100, 32, SlabFlags::empty(), None).unwrap();
        fn ctor(p: *mut u8) {
            // SAFETY: the cache hands the constructor an object of 20 bytes.
            unsafe { p.write_bytes(7, 20) };
        }
        let with_ctor = slab.kmem_cache_create("ks-ctor", 20, 8, SlabFlags::empty(), Some(ctor)).unwrap();
        let tracked = slab.kmem_cache_create("ks-track", 20, 8, SlabFlags::SLAB_STORE_USER, None).unwrap();
        let red = slab.kmem_cache_create("ks-red", 20, 8, SlabFlags::SLAB_RED_ZONE, None).unwrap();
        for (cache, expected) in [(&padded, 128), (&with_ctor, 32), (&tracked, 24), (&red, 20)] {
            assert_eq!(cache.ksize(), expected, "{}", cache.name());
            let o = cache.alloc(GFP).unwrap();
            assert_eq!(km.ksize(o.as_ptr()), Ok(expected), "{}", cache.name());
            // The whole of ksize is the caller's while the object is allocated.
            fill(o, expected, 0xee);
            cache.free(o).unwrap();
            let again = cache.alloc(GFP).unwrap();
            cache.free(again).unwrap();
        }
        for c in [padded, with_ctor, tracked, red] {
            c.destroy().map_err(|(_, e)| e).unwrap();
        }
    });
}

/// `__do_krealloc()` (mm/slab_common.c, 6.12) keeps a block that still fits `ksize` and, with
/// `__GFP_ZERO` (`want_init_on_alloc`), zeroes `[new_size, ks)` only: growing in place does not
/// clear `[old_size, new_size)`, which is why 6.12 asks for `__GFP_ZERO` on every call from the
/// first allocation on.
#[test]
fn krealloc_gfp_zero_in_place_zeroes_from_the_new_size() {
    with_kmalloc(PAGES, "", |_, km| {
        let p = km.kmalloc(100, GFP).unwrap();
        fill(p, 128, 0x77);
        let q = km.krealloc(p.as_ptr(), 120, GFP | GfpFlags::__GFP_ZERO).unwrap();
        assert_eq!(q, p, "kept: 120 fits kmalloc-128");
        assert!(bytes(q, 0, 120).filled_with(0x77), "[0, new_size) is kept as it was");
        assert!(bytes(q, 120, 128).filled_with(0), "[new_size, ksize) is zeroed");
        km.kfree(q.as_ptr()).unwrap();
    });
}
