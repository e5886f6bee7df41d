//! Host tests of the kmalloc family.

use crate::testing::FilledWith;
use core::ptr::NonNull;
use std::vec::Vec;

use super::*;
use crate::slab::tests::prov::TestProvider;
use crate::slab::SlabDebugConfig;

const GFP: GfpFlags = GfpFlags::GFP_KERNEL;
const SEED: usize = 0x1234_5678_9abc_def0;
/// 4096 pages: the normal zone (3/4) holds an order-10 block for the 4 MiB boundary.
const PAGES: usize = if cfg!(miri) { 1024 } else { 4096 };

fn with_kmalloc(
    pages: usize,
    debug: &'static str,
    f: impl FnOnce(&TestProvider, &Kmalloc<'_, TestProvider>),
) {
    let prov = TestProvider::new(pages);
    let cfg =
        if debug.is_empty() { SlabDebugConfig::NONE } else { crate::slab::parse_slab_debug(debug).unwrap() };
    let slab = SlabAllocator::new(&prov, SEED, cfg).unwrap();
    let km = Kmalloc::new(slab).unwrap();
    f(&prov, &km);
}

#[test]
fn size_classes_match_linux() {
    let expect = [
        (1, 8),
        (8, 8),
        (9, 16),
        (17, 32),
        (33, 64),
        (64, 64),
        (65, 96),
        (96, 96),
        (97, 128),
        (128, 128),
        (129, 192),
        (192, 192),
        (193, 256),
        (257, 512),
        (1000, 1024),
        (1025, 2048),
        (4096, 4096),
        (4097, 8192),
        (8192, 8192),
    ];
    for (size, class) in expect {
        assert_eq!(KMALLOC_SIZES[kmalloc_index(size)], class, "size {size}");
    }
}

#[test]
fn boundaries_alignment_and_ksize() {
    let sizes: &[usize] = if cfg!(miri) {
        &[1, 8, 9, 96, 97, 192, 193, 8192, 8193]
    } else {
        &[1, 8, 9, 96, 97, 192, 193, 8192, 8193, KMALLOC_MAX_SIZE]
    };
    with_kmalloc(PAGES, "", |prov, km| {
        for &size in sizes {
            let p = km.kmalloc(size, GFP).unwrap();
            let ks = km.ksize(p.as_ptr()).unwrap();
            let expected =
                if size <= 8192 { KMALLOC_SIZES[kmalloc_index(size)] } else { get_order(size) as usize };
            if size <= 8192 {
                assert_eq!(ks, expected, "size {size}");
                assert_eq!(km.kmalloc_slab(size, GFP).unwrap().object_size(), ks);
            } else {
                assert_eq!(ks, PAGE_SIZE << expected, "size {size}");
                assert_eq!(p.as_ptr() as usize % PAGE_SIZE, 0);
            }
            assert_eq!(p.as_ptr() as usize % 8, 0);
            if ks.is_power_of_two() {
                assert_eq!(p.as_ptr() as usize % ks.min(PAGE_SIZE), 0, "size {size} naturally aligned");
            }
            // The whole requested size is usable.
            // SAFETY: a live block of at least `size` bytes.
            unsafe { p.as_ptr().write_bytes(0xab, size) };
            km.kfree(p.as_ptr()).unwrap();
        }
        assert_eq!(
            km.kmalloc(KMALLOC_MAX_SIZE + 1, GFP),
            Err(AllocError::TooLarge { size: KMALLOC_MAX_SIZE + 1, max: KMALLOC_MAX_SIZE })
        );
        let _ = prov;
    });
}

#[test]
// Not under Miri (CI time): 2 min under Miri; the same paths run under Miri without debug in boundaries_alignment_and_ksize and with debug in gfp_zero_with_a_kmalloc_red_zone.
#[cfg_attr(miri, ignore)]
fn power_of_two_sizes_stay_naturally_aligned_with_debug() {
    with_kmalloc(PAGES, "FZPU", |_, km| {
        for size in [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
            let p = km.kmalloc(size, GFP).unwrap();
            assert_eq!(p.as_ptr() as usize % size, 0, "kmalloc-{size} with red zones");
            km.kfree(p.as_ptr()).unwrap();
        }
        let p = km.kmalloc(96, GFP).unwrap();
        assert_eq!(p.as_ptr() as usize % 32, 0);
        km.kfree(p.as_ptr()).unwrap();
    });
}

#[test]
fn zero_size_and_null() {
    with_kmalloc(PAGES, "", |_, km| {
        let z = km.kmalloc(0, GFP).unwrap();
        assert_eq!(z.as_ptr() as usize, ZERO_SIZE_PTR);
        assert_eq!(km.ksize(z.as_ptr()), Ok(0));
        km.kfree(z.as_ptr()).unwrap();
        km.kfree(core::ptr::null()).unwrap();
        // krealloc from ZERO_SIZE_PTR allocates, to 0 frees.
        let p = km.krealloc(z.as_ptr(), 40, GFP).unwrap();
        assert_eq!(km.ksize(p.as_ptr()), Ok(64));
        assert_eq!(km.krealloc(p.as_ptr(), 0, GFP).unwrap().as_ptr() as usize, ZERO_SIZE_PTR);
        assert!(matches!(km.kfree(p.as_ptr()), Err(SlabError::DoubleFree { cache: "kmalloc-64", .. })));
    });
}

#[test]
// Not under Miri (CI time): 1.5 min under Miri; zeroing is checked under Miri by gfp_zero_covers_the_whole_usable_size.
#[cfg_attr(miri, ignore)]
fn kzalloc_kcalloc_kmalloc_array() {
    with_kmalloc(PAGES, "", |_, km| {
        let p = km.kmalloc(100, GFP).unwrap();
        // SAFETY: a live 100-byte block.
        unsafe { p.as_ptr().write_bytes(0xff, 100) };
        km.kfree(p.as_ptr()).unwrap();
        let z = km.kzalloc(100, GFP).unwrap();
        assert_eq!(z, p);
        // SAFETY: as above.
        assert!(unsafe { core::slice::from_raw_parts(z.as_ptr(), 100) }.filled_with(0));
        km.kfree(z.as_ptr()).unwrap();
        let c = km.kcalloc(10, 30, GFP).unwrap();
        assert_eq!(km.ksize(c.as_ptr()), Ok(512));
        // SAFETY: a live 300-byte block.
        assert!(unsafe { core::slice::from_raw_parts(c.as_ptr(), 300) }.filled_with(0));
        km.kfree(c.as_ptr()).unwrap();
        let a = km.kmalloc_array(3, 5, GFP).unwrap();
        assert_eq!(km.ksize(a.as_ptr()), Ok(16));
        km.kfree(a.as_ptr()).unwrap();
        assert!(matches!(km.kmalloc_array(usize::MAX / 2, 3, GFP), Err(AllocError::Invalid(_))));
        assert!(matches!(km.kcalloc(1 << 40, 1 << 30, GFP), Err(AllocError::Invalid(_))));
        // A large zeroed block.
        let l = km.kzalloc(20000, GFP).unwrap();
        // SAFETY: a live block of 20000 bytes.
        assert!(unsafe { core::slice::from_raw_parts(l.as_ptr(), 20000) }.filled_with(0));
        km.kfree(l.as_ptr()).unwrap();
    });
}

#[test]
fn krealloc_keeps_contents_and_in_place_when_it_fits() {
    with_kmalloc(PAGES, "", |prov, km| {
        let p = km.kmalloc(20, GFP).unwrap();
        for i in 0..20 {
            // SAFETY: a live 20-byte block.
            unsafe { p.as_ptr().add(i).write(i as u8) };
        }
        // Fits ksize (32): same pointer.
        assert_eq!(km.krealloc(p.as_ptr(), 32, GFP).unwrap(), p);
        // Grows: new block in kmalloc-64 with the contents.
        let q = km.krealloc(p.as_ptr(), 50, GFP).unwrap();
        assert_ne!(q, p);
        // SAFETY: a live block of 50 bytes.
        let b = unsafe { core::slice::from_raw_parts(q.as_ptr(), 20) };
        assert!(b.iter().enumerate().all(|(i, &v)| v == i as u8));
        assert!(matches!(km.kfree(p.as_ptr()), Err(SlabError::DoubleFree { .. })), "old block was freed");
        // Failure leaves the old block valid.
        prov.set_limit(0);
        assert!(km.krealloc(q.as_ptr(), 100_000, GFP).is_err());
        prov.unlimited();
        // SAFETY: still live.
        let b = unsafe { core::slice::from_raw_parts(q.as_ptr(), 20) };
        assert!(b.iter().enumerate().all(|(i, &v)| v == i as u8));
        // To a large block and back.
        let l = km.krealloc(q.as_ptr(), 10_000, GFP).unwrap();
        assert_eq!(km.ksize(l.as_ptr()), Ok(16384));
        assert_eq!(km.krealloc(l.as_ptr(), 16000, GFP).unwrap(), l);
        let s = km.krealloc(l.as_ptr(), 100_000, GFP).unwrap();
        // SAFETY: a live block of 100000 bytes.
        let b = unsafe { core::slice::from_raw_parts(s.as_ptr(), 20) };
        assert!(b.iter().enumerate().all(|(i, &v)| v == i as u8));
        km.kfree(s.as_ptr()).unwrap();
    });
}

#[test]
fn kfree_sensitive_zeroes() {
    with_kmalloc(PAGES, "", |_, km| {
        let p = km.kmalloc(64, GFP).unwrap();
        // SAFETY: a live 64-byte block.
        unsafe { p.as_ptr().write_bytes(0xee, 64) };
        km.kfree_sensitive(p.as_ptr()).unwrap();
        // SAFETY: the freed object is still emulated RAM; only the free pointer (offset 32) is set.
        let b = unsafe { core::slice::from_raw_parts(p.as_ptr(), 64) };
        assert!(b[..32].iter().chain(&b[40..]).all(|&v| v == 0));
        let l = km.kmalloc(9000, GFP).unwrap();
        // SAFETY: a live block.
        unsafe { l.as_ptr().write_bytes(0xee, 9000) };
        km.kfree_sensitive(l.as_ptr()).unwrap();
        // SAFETY: the pages went back to the provider but remain emulated RAM.
        assert!(unsafe { core::slice::from_raw_parts(l.as_ptr(), 9000) }.filled_with(0));
    });
}

#[test]
fn dma_requests_use_dma_caches_and_dma_pages() {
    with_kmalloc(PAGES, "", |prov, km| {
        let gfp = GFP | GfpFlags::__GFP_DMA;
        assert_eq!(km.kmalloc_slab(64, gfp).unwrap().name(), "dma-kmalloc-64");
        let p = km.kmalloc(64, gfp).unwrap();
        let q = km.kmalloc(64, GFP).unwrap();
        let dm = prov.direct_map();
        let pfn = |p: NonNull<u8>| crate::addr::Pfn::from_phys(dm.phys(p.as_ptr()));
        assert!(prov.is_dma(pfn(p)));
        assert!(!prov.is_dma(pfn(q)));
        km.kfree(p.as_ptr()).unwrap();
        km.kfree(q.as_ptr()).unwrap();
    });
}

#[test]
fn kfree_misuse_is_refused() {
    with_kmalloc(PAGES, "", |prov, km| {
        let p = km.kmalloc(100, GFP).unwrap();
        let inner = p.as_ptr().wrapping_add(4);
        assert_eq!(
            km.kfree(inner),
            Err(SlabError::Interior {
                cache: "kmalloc-128",
                addr: inner as usize,
                object: p.as_ptr() as usize
            })
        );
        let l = km.kmalloc(20000, GFP).unwrap();
        let li = l.as_ptr().wrapping_add(PAGE_SIZE + 8);
        assert_eq!(
            km.kfree(li),
            Err(SlabError::InteriorLarge { addr: li as usize, block: l.as_ptr() as usize })
        );
        let x = 5u64;
        assert!(matches!(km.kfree(&x as *const u64 as *const u8), Err(SlabError::NotOwned { .. })));
        km.kfree(l.as_ptr()).unwrap();
        assert!(matches!(km.kfree(l.as_ptr()), Err(SlabError::NotOwned { .. })), "large double free");
        km.kfree(p.as_ptr()).unwrap();
        assert_eq!(
            km.kfree(p.as_ptr()),
            Err(SlabError::DoubleFree { cache: "kmalloc-128", addr: p.as_ptr() as usize })
        );
        let msg = std::format!("{}", km.kfree(p.as_ptr()).unwrap_err());
        assert!(msg.starts_with("kmalloc-128: double free of 0x"), "{msg}");
        km.slab().for_each_cache(|c| {
            c.validate().unwrap();
        });
        let _ = prov;
    });
}

#[test]
fn exhaustion_then_recovery() {
    with_kmalloc(PAGES, "", |prov, km| {
        prov.set_limit(4);
        let mut v = std::vec::Vec::new();
        let err = loop {
            match km.kmalloc(1024, GfpFlags::GFP_KERNEL) {
                Ok(p) => v.push(p),
                Err(e) => break e,
            }
        };
        assert_eq!(err, AllocError::OutOfMemory { order: 1 });
        assert_eq!(km.kmalloc(20000, GFP), Err(AllocError::OutOfMemory { order: 3 }));
        for p in v.drain(..) {
            km.kfree(p.as_ptr()).unwrap();
        }
        // The kmalloc-1k slabs are empty but kept; an atomic large request cannot reclaim them,
        // a GFP_KERNEL one does (4 pages).
        assert_eq!(km.kmalloc(16000, GfpFlags::GFP_ATOMIC), Err(AllocError::OutOfMemory { order: 2 }));
        assert!(km.kmalloc(16000, GFP).is_ok_and(|p| km.kfree(p.as_ptr()).is_ok()));
        prov.unlimited();
    });
}

/// Steady-state cost of a kmalloc(64)+kfree pair, for instruction counting:
/// `KMALLOC_BENCH_N=1000000 cargo test -p mm --release -- --ignored kmalloc_pair_bench` under
/// `valgrind --tool=callgrind` (or `perf stat -e instructions:u`) with two values of N; the
/// difference divided by the difference of N is the per-pair cost.
#[test]
#[ignore]
fn kmalloc_pair_bench() {
    let n: usize = std::env::var("KMALLOC_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    with_kmalloc(PAGES, "", |_, km| {
        let warm = km.kmalloc(64, GFP).unwrap();
        for _ in 0..n {
            let p = km.kmalloc(core::hint::black_box(64), GFP).unwrap();
            km.kfree(core::hint::black_box(p.as_ptr())).unwrap();
        }
        km.kfree(warm.as_ptr()).unwrap();
    });
}

#[test]
fn compound_tails_find_their_head_and_are_cleared_on_free() {
    with_kmalloc(PAGES, "", |prov, km| {
        let dm = prov.direct_map();
        let pfn_of = |p: *const u8| Pfn(dm.phys(p).as_u64() >> crate::addr::PAGE_SHIFT);
        // kmalloc-4k slabs are order 3: objects past the first page live under tail descriptors.
        let objs: Vec<_> = (0..8).map(|_| km.kmalloc(4096, GFP).unwrap()).collect();
        let far = *objs.iter().max().unwrap();
        let head = pfn_of(objs.iter().min().unwrap().as_ptr());
        assert_ne!(pfn_of(far.as_ptr()), head, "an object under a tail descriptor");
        assert_eq!(prov.page(pfn_of(far.as_ptr())).unwrap().compound_head(), Some(head));
        assert_eq!(km.ksize(far.as_ptr()), Ok(4096));
        let interior = far.as_ptr().wrapping_add(100);
        assert_eq!(
            km.kfree(interior),
            Err(SlabError::Interior {
                cache: "kmalloc-4k",
                addr: interior as usize,
                object: far.as_ptr() as usize
            })
        );
        for p in &objs {
            km.kfree(p.as_ptr()).unwrap();
        }
        km.slab().shrink_all();
        assert_eq!(prov.page(pfn_of(far.as_ptr())).unwrap().compound_head(), None, "tags cleared on release");
        // kmalloc-large: every page of the block names the head; a pointer into page 3 is interior.
        let l = km.kmalloc(5 * PAGE_SIZE, GFP).unwrap();
        let lp = pfn_of(l.as_ptr());
        for i in 1..8 {
            assert_eq!(prov.page(Pfn(lp.0 + i)).unwrap().compound_head(), Some(lp));
        }
        let li = l.as_ptr().wrapping_add(3 * PAGE_SIZE);
        assert_eq!(
            km.kfree(li),
            Err(SlabError::InteriorLarge { addr: li as usize, block: l.as_ptr() as usize })
        );
        km.kfree(l.as_ptr()).unwrap();
        assert_eq!(prov.page(Pfn(lp.0 + 3)).unwrap().compound_head(), None);
        // A stale-looking tag on a page no block covers names no owner.
        prov.page(Pfn(lp.0 + 3)).unwrap().set_compound_head(lp);
        assert!(matches!(km.kfree(li), Err(SlabError::NotOwned { .. })));
        prov.page(Pfn(lp.0 + 3)).unwrap().clear_compound_head();
    });
}

/// Bytes `[from, to)` of a live block.
fn bytes(p: NonNull<u8>, from: usize, to: usize) -> Vec<u8> {
    // SAFETY: the callers pass live blocks of at least `to` usable bytes.
    unsafe { core::slice::from_raw_parts(p.as_ptr().add(from), to - from) }.to_vec()
}

fn fill(p: NonNull<u8>, len: usize, v: u8) {
    // SAFETY: the callers pass live blocks of at least `len` usable bytes.
    unsafe { p.as_ptr().write_bytes(v, len) };
}

/// The robustness issue's example: `kzalloc(100)` then `krealloc(128, __GFP_ZERO)` must not
/// show a previous owner's bytes. SLUB zeroes the whole object (`slab_post_alloc_hook` zeroes
/// `s->object_size`), and Linux 6.12's `__do_krealloc` zeroes the spare memory in place.
#[test]
fn gfp_zero_covers_the_whole_usable_size() {
    with_kmalloc(PAGES, "", |_, km| {
        let old = km.kmalloc(128, GFP).unwrap();
        fill(old, 128, 0xaa);
        km.kfree(old.as_ptr()).unwrap();
        let p = km.kzalloc(100, GFP).unwrap();
        assert_eq!(p, old, "LIFO reuse of the same object");
        assert!(bytes(p, 0, 128).filled_with(0), "kzalloc zeroes ksize bytes");
        let q = km.krealloc(p.as_ptr(), 128, GFP | GfpFlags::__GFP_ZERO).unwrap();
        assert_eq!(q, p, "in place");
        assert!(bytes(q, 100, 128).filled_with(0));

        // Shrinking in place with __GFP_ZERO clears the spare tail, keeps the head.
        fill(q, 128, 0x55);
        let r = km.krealloc(q.as_ptr(), 64, GFP | GfpFlags::__GFP_ZERO).unwrap();
        assert_eq!(r, q);
        assert!(bytes(r, 0, 64).filled_with(0x55));
        assert!(bytes(r, 64, 128).filled_with(0));
        // Without __GFP_ZERO the tail is left as it is.
        fill(r, 128, 0x66);
        let r = km.krealloc(r.as_ptr(), 32 + 64, GFP).unwrap();
        assert!(bytes(r, 0, 128).filled_with(0x66));

        // Moving: the new block is zeroed beyond the copied contents.
        let big = km.krealloc(r.as_ptr(), 1000, GFP | GfpFlags::__GFP_ZERO).unwrap();
        assert_ne!(big, r);
        assert!(bytes(big, 0, 128).filled_with(0x66));
        assert!(bytes(big, 128, 1024).filled_with(0), "up to ksize (1024)");
        km.kfree(big.as_ptr()).unwrap();

        // kcalloc and a large block.
        let c = km.kmalloc(3000, GFP).unwrap();
        fill(c, 4096, 0x11);
        km.kfree(c.as_ptr()).unwrap();
        let c = km.kcalloc(30, 100, GFP).unwrap();
        assert!(bytes(c, 0, 4096).filled_with(0), "kcalloc zeroes ksize (4096)");
        km.kfree(c.as_ptr()).unwrap();
        let l = km.kzalloc(9000, GFP).unwrap();
        assert!(bytes(l, 0, 16384).filled_with(0));
        fill(l, 16384, 0x22);
        let l2 = km.krealloc(l.as_ptr(), 10_000, GFP | GfpFlags::__GFP_ZERO).unwrap();
        assert_eq!(l2, l);
        assert!(bytes(l2, 10_000, 16384).filled_with(0));
        km.kfree(l2.as_ptr()).unwrap();
    });
}

/// A kmalloc red zone (`slab_debug=ZU`) keeps its pattern beyond the requested size, and
/// growing in place with __GFP_ZERO clears what was red zone and is now the caller's.
#[test]
fn gfp_zero_with_a_kmalloc_red_zone() {
    with_kmalloc(PAGES, "ZU", |_, km| {
        let p = km.kzalloc(100, GFP).unwrap();
        assert!(bytes(p, 0, 100).filled_with(0));
        assert!(bytes(p, 100, 128).filled_with(crate::slab::debug::RED_ACTIVE), "red zone kept");
        let q = km.krealloc(p.as_ptr(), 120, GFP | GfpFlags::__GFP_ZERO).unwrap();
        assert_eq!(q, p);
        assert!(bytes(q, 0, 120).filled_with(0));
        assert!(bytes(q, 120, 128).filled_with(crate::slab::debug::RED_ACTIVE));
        km.kfree(q.as_ptr()).unwrap();
    });
}

/// `init_on_alloc=1` zeroes every object as if `__GFP_ZERO` were given; `init_on_free=1`
/// zeroes on free (fast and slow paths); constructor caches are left alone (Linux's
/// `slab_want_init_on_alloc`/`_free`).
#[test]
fn init_on_alloc_and_init_on_free() {
    with_kmalloc(PAGES, "", |_, km| {
        let slab = km.slab();
        let p = km.kmalloc(64, GFP).unwrap();
        fill(p, 64, 0xaa);
        km.kfree(p.as_ptr()).unwrap();
        slab.set_auto_init(true, false);
        let q = km.kmalloc(64, GFP).unwrap();
        assert_eq!(q, p);
        assert!(bytes(q, 0, 64).filled_with(0), "init_on_alloc");
        fill(q, 64, 0xbb);
        slab.set_auto_init(false, true);
        km.kfree(q.as_ptr()).unwrap();
        assert!(bytes(q, 0, 64).filled_with(0), "init_on_free, fast path");
        // The slow path (frees into slabs that are not this CPU's active one, and frees past a
        // full sheaf) zeroes too: fill several slabs' worth and free them all. Freed objects
        // may hold the free pointer (at the middle of the object, SLUB's `s->offset`).
        // 200 objects fill three slabs and part of a fourth; under Miri 80 (more than one slab)
        // still take the slow paths.
        let n = if cfg!(miri) { 80 } else { 200 };
        let objs: Vec<_> = (0..n).map(|_| km.kmalloc(64, GFP).unwrap()).collect();
        for &o in &objs {
            fill(o, 64, 0xcc);
        }
        for &o in &objs {
            km.kfree(o.as_ptr()).unwrap();
            assert!(bytes(o, 0, 32).iter().chain(&bytes(o, 40, 64)).all(|&b| b == 0), "init_on_free, {o:p}");
        }
        // A constructor cache keeps its constructed state.
        fn ctor(p: *mut u8) {
            // SAFETY: the allocator passes a whole object of 32 bytes.
            unsafe { p.write_bytes(0x5c, 32) };
        }
        slab.set_auto_init(true, true);
        let c = slab.kmem_cache_create("ctor_cache", 32, 8, SlabFlags::empty(), Some(ctor)).unwrap();
        let o = c.alloc(GFP).unwrap();
        assert!(bytes(o, 0, 32).filled_with(0x5c), "no init_on_alloc with a ctor");
        c.free(o).unwrap();
        assert!(bytes(o, 0, 32).iter().filter(|&&b| b == 0x5c).count() >= 24, "no init_on_free with a ctor");
        slab.set_auto_init(false, false);
    });
}

/// `failslab` fails slab allocations only while active, never the bootstrap cache, never
/// `__GFP_NOFAIL`, `GFP_KERNEL` only with `ignore-gfp-wait=N`, and marked caches only under
/// `cache-filter`; a failed call changes no counter; turning it off restores the fast path.
#[test]
fn failslab_fails_slab_allocations_as_configured() {
    with_kmalloc(PAGES, "", |_, km| {
        let slab = km.slab();
        let atomic = GfpFlags::GFP_ATOMIC | GfpFlags::__GFP_NOWARN;
        let warm = km.kmalloc(64, atomic).unwrap();
        km.kfree(warm.as_ptr()).unwrap();
        slab.configure_failslab(1, 100, 0, -1).unwrap();
        let live = km.kmalloc_slab(64, atomic).unwrap().live_objects();
        assert_eq!(km.kmalloc(64, atomic), Err(AllocError::FaultInjected { by: "failslab" }));
        assert_eq!(km.kmalloc_slab(64, atomic).unwrap().live_objects(), live, "nothing allocated");
        assert!(km.kmalloc(64, GFP).is_ok(), "ignore-gfp-wait is Y by default");
        slab.set_failslab("ignore-gfp-wait", "N").unwrap();
        assert!(km.kzalloc(8, GFP | GfpFlags::__GFP_NOWARN).is_err());
        assert!(km.kmalloc(64, GFP | GfpFlags::__GFP_NOFAIL).is_ok(), "__GFP_NOFAIL never fails");
        // Cache creation takes its struct from the bootstrap cache, which failslab spares.
        let c = slab.kmem_cache_create("fi_test", 40, 8, SlabFlags::empty(), None).unwrap();
        assert!(c.alloc(atomic).is_err());
        slab.set_failslab("cache-filter", "Y").unwrap();
        assert!(!c.failslab_mark());
        let o = c.alloc(atomic).unwrap();
        c.set_failslab_mark(true);
        assert!(c.alloc(atomic).is_err(), "a marked cache fails under cache-filter");
        let m = slab.kmem_cache_create("fi_marked", 40, 8, SlabFlags::SLAB_FAILSLAB, None).unwrap();
        assert!(m.failslab_mark() && m.alloc(atomic).is_err(), "SLAB_FAILSLAB marks at creation");
        // A krealloc that cannot grow in place fails and keeps the old block.
        slab.set_failslab("cache-filter", "N").unwrap();
        let p = km.kmalloc(64, GFP | GfpFlags::__GFP_NOFAIL).unwrap();
        fill(p, 64, 0x3c);
        assert!(matches!(
            km.krealloc(p.as_ptr(), 1000, atomic),
            Err(SlabError::Alloc(AllocError::FaultInjected { by: "failslab" }))
        ));
        assert!(bytes(p, 0, 64).filled_with(0x3c));
        slab.set_failslab("times", "2").unwrap();
        assert!(km.kmalloc(64, atomic).is_err() && km.kmalloc(64, atomic).is_err());
        assert!(km.kmalloc(64, atomic).is_ok(), "times ran out");
        assert_eq!(slab.failslab().attr.times(), 0);
        slab.configure_failslab(1, 0, 0, 1).unwrap();
        let q = km.kmalloc(64, atomic).unwrap();
        let cache = km.kmalloc_slab(64, atomic).unwrap();
        let fast_before = cache.stat(crate::slab::SlabStat::AllocFastpath);
        km.kfree(q.as_ptr()).unwrap();
        let r = km.kmalloc(64, atomic).unwrap();
        assert_eq!(cache.stat(crate::slab::SlabStat::AllocFastpath), fast_before + 1, "fast path again");
        for x in [p, r] {
            km.kfree(x.as_ptr()).unwrap();
        }
        c.free(o).unwrap();
        c.destroy().unwrap();
        m.destroy().unwrap();
    });
}

/// Large blocks count as unreclaimable slab, as in 6.12 (`mm/slub.c`, `___kmalloc_large_node`:
/// `lruvec_stat_mod_folio(folio, NR_SLAB_UNRECLAIMABLE_B, PAGE_SIZE << order)`, and the
/// matching `-` in `free_large_kmalloc`): meminfo's `Slab` and `SUnreclaim` grow by the block.
#[test]
fn large_blocks_count_in_slab_and_sunreclaim() {
    with_kmalloc(PAGES, "", |_, km| {
        let before = km.slab_totals();
        assert_eq!(before.kmalloc_large_pages, 0);
        assert_eq!(before, SlabTotals { kmalloc_large_pages: 0, ..km.slab().totals() });
        let p = km.kmalloc(KMALLOC_MAX_CACHE_SIZE + 1, GFP).unwrap(); // order 2: 16 KiB
        let q = km.kmalloc(KMALLOC_MAX_CACHE_SIZE * 8, GFP).unwrap(); // order 4: 64 KiB
        let t = km.slab_totals();
        assert_eq!(t.kmalloc_large_pages, 4 + 16);
        assert_eq!(t.slab_kb(), before.slab_kb() + 80);
        assert_eq!(t.sunreclaim_kb(), before.sunreclaim_kb() + 80);
        assert_eq!(t.sreclaimable_kb(), before.sreclaimable_kb());
        assert_eq!(t.slab_kb(), t.sreclaimable_kb() + t.sunreclaim_kb(), "Slab = SReclaimable + SUnreclaim");
        km.kfree(p.as_ptr()).unwrap();
        assert_eq!(km.slab_totals().kmalloc_large_pages, 16);
        // A refused free (interior pointer) changes nothing.
        assert!(km.kfree(q.as_ptr().wrapping_add(4096)).is_err());
        assert_eq!(km.slab_totals().kmalloc_large_pages, 16);
        km.kfree(q.as_ptr()).unwrap();
        assert_eq!(km.slab_totals(), before);
    });
}

mod util;
