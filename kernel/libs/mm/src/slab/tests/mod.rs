//! Host tests of slab caches (no debug flags; see `debug` for those).

mod args;
mod debug;
mod percpu;
pub(crate) mod prov;

use crate::testing::FilledWith;
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

use core::fmt::Write;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use proptest::prelude::*;

use super::*;
use crate::gfp::GfpFlags;
use crate::page::{PageProvider, PageState};
use crate::slab::tests::prov::TestProvider;
use crate::AllocError;

pub(crate) const SEED: usize = 0x5eed_1234_abcd_9876;
const PAGES: usize = if cfg!(miri) { 1024 } else { 4096 };
const GFP: GfpFlags = GfpFlags::GFP_KERNEL;

fn setup(pages: usize) -> TestProvider {
    TestProvider::new(pages)
}

fn owner_name(prov: &TestProvider, p: NonNull<u8>) -> Option<&'static str> {
    let (_, page) = root::find_block(prov, &prov.direct_map(), p.as_ptr() as usize)?;
    (page.state() == PageState::Slab).then(|| {
        // SAFETY: a Slab page's private is its cache.
        unsafe {
            &*core::ptr::with_exposed_provenance::<KmemCache<'_, TestProvider>>(page.private.load(Relaxed))
        }
        .name()
    })
}

#[test]
fn bootstrap_places_kmem_cache_in_its_own_slab() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let root = slab.kmem_cache();
    assert_eq!(root.name(), "kmem_cache");
    assert_eq!(root.live_objects(), 1);
    let p = NonNull::from(root).cast::<u8>();
    assert_eq!(owner_name(&prov, p), Some("kmem_cache"));
    // Moving the handle is fine: it is a pointer to the root.
    let moved = slab;
    let c = moved.kmem_cache_create("after-move", 40, 0, SlabFlags::empty(), None).unwrap();
    assert_eq!(root.live_objects(), 2);
    assert_eq!(owner_name(&prov, NonNull::from(&*c).cast()), Some("kmem_cache"));
    c.destroy().unwrap();
    assert_eq!(root.live_objects(), 1);
    root.validate().unwrap();
}

#[test]
fn alloc_free_shrink_destroy_returns_every_page() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let base = prov.pages_in_use();
    let c = slab.kmem_cache_create("test-100", 100, 0, SlabFlags::SLAB_HWCACHE_ALIGN, None).unwrap();
    assert_eq!((c.object_size(), c.size(), c.align()), (100, 128, 64));
    assert_eq!((c.order(), c.objects_per_slab()), (0, 32));
    let n = 200;
    let mut objs: Vec<NonNull<u8>> = (0..n).map(|_| c.alloc(GFP).unwrap()).collect();
    for p in &objs {
        assert_eq!(p.as_ptr() as usize % 64, 0);
        assert_eq!(owner_name(&prov, *p), Some("test-100"));
        // SAFETY: a live object of 100 bytes.
        unsafe { p.as_ptr().write_bytes(0x5a, 100) };
    }
    let mut sorted: Vec<usize> = objs.iter().map(|p| p.as_ptr() as usize).collect();
    sorted.sort();
    assert!(sorted.windows(2).all(|w| w[1] - w[0] >= 100), "objects overlap");
    assert_eq!(c.live_objects(), n);
    let v = c.validate().unwrap();
    assert_eq!((v.inuse, v.slabs), (n, n.div_ceil(32)));
    for p in objs.drain(..) {
        c.free(p).unwrap();
    }
    assert_eq!(c.live_objects(), 0);
    // Objects in the CPU's sheaf still hold their slab; flushed, they go back to it.
    slab.flush_this_cpu();
    // Beyond min_partial, empty slabs went back at once.
    assert!(c.pages() <= c.min_partial() as u64 + 1, "pages kept: {}", c.pages());
    c.validate().unwrap();
    let freed = c.shrink();
    assert!(freed > 0);
    assert_eq!(c.pages(), 0);
    c.destroy().unwrap();
    assert_eq!(prov.pages_in_use(), base);
}

#[test]
fn zalloc_zeroes_and_reuse_is_lifo() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("z", 64, 0, SlabFlags::empty(), None).unwrap();
    let p = c.alloc(GFP).unwrap();
    // SAFETY: a live 64-byte object.
    unsafe { p.as_ptr().write_bytes(0xff, 64) };
    c.free(p).unwrap();
    let q = c.zalloc(GFP).unwrap();
    assert_eq!(p, q, "the last freed object is reused first");
    // SAFETY: as above.
    assert!(unsafe { core::slice::from_raw_parts(q.as_ptr(), 64) }.filled_with(0));
    c.free(q).unwrap();
    c.destroy().unwrap();
}

static CTOR_CALLS: AtomicUsize = AtomicUsize::new(0);
fn ctor_fill(p: *mut u8) {
    CTOR_CALLS.fetch_add(1, Relaxed);
    // SAFETY: the slab layer passes a fresh object of the "ctor" cache (24 bytes).
    unsafe { p.write_bytes(0x42, 24) };
}

#[test]
fn ctor_runs_for_every_object_when_a_slab_is_populated() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("ctor", 24, 0, SlabFlags::empty(), Some(ctor_fill)).unwrap();
    assert_eq!(CTOR_CALLS.load(Relaxed), 0);
    let p = c.alloc(GFP).unwrap();
    assert_eq!(CTOR_CALLS.load(Relaxed), c.objects_per_slab() as usize);
    // The free pointer lives outside the object: the constructed contents are intact.
    for _ in 0..3 {
        // SAFETY: a live 24-byte object.
        assert!(unsafe { core::slice::from_raw_parts(p.as_ptr(), 24) }.filled_with(0x42));
        c.free(p).unwrap();
        assert_eq!(c.alloc(GFP).unwrap(), p);
    }
    assert_eq!(CTOR_CALLS.load(Relaxed), c.objects_per_slab() as usize, "no ctor on reuse");
    c.free(p).unwrap();
    c.destroy().unwrap();
}

#[test]
fn destroy_refuses_while_objects_are_live() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("busy", 32, 0, SlabFlags::empty(), None).unwrap();
    let a = c.alloc(GFP).unwrap();
    let b = c.alloc(GFP).unwrap();
    let (c, e) = c.destroy().unwrap_err();
    assert_eq!(e, SlabError::CacheBusy { cache: "busy", live: 2 });
    assert_eq!(std::format!("{e}"), "cannot destroy cache busy: 2 objects are still allocated");
    // Nothing was lost: the objects are still valid and freeable.
    c.free(a).unwrap();
    c.free(b).unwrap();
    c.destroy().unwrap();
}

/// What 6.12's `__kmem_cache_shutdown` lists for a cache destroyed with objects (`mm/slub.c`,
/// `free_partial` -> `list_slab_objects`: one `slab_err` per partial slab in use, then
/// `Object 0x%p @offset=%tu` per allocated object) after `flush_all_cpus_locked`.
#[test]
fn objects_remaining_lists_the_live_objects_of_partial_slabs() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("left", 64, 0, SlabFlags::empty(), None).unwrap();
    let objs: Vec<NonNull<u8>> = (0..3).map(|_| c.alloc(GFP).unwrap()).collect();
    c.shrink();
    let (mut slabs, mut found) = (Vec::new(), Vec::new());
    c.objects_remaining(
        |start, objects, inuse, fp| slabs.push((start, objects, inuse, fp)),
        |p, off| found.push((p, off)),
    )
    .unwrap();
    assert_eq!(slabs.len(), 1);
    let (start, objects, inuse, fp) = slabs[0];
    assert_eq!((objects, inuse), (64, 3), "a 4 KiB slab of 64-byte objects, 3 in use");
    assert!(fp >= start && fp < start + 4096, "the first free object of the slab");
    let mut want: Vec<(usize, usize)> =
        objs.iter().map(|p| (p.as_ptr() as usize, p.as_ptr() as usize - start)).collect();
    want.sort();
    found.sort();
    assert_eq!(found, want);
    // Reporting changed nothing.
    for p in objs {
        c.free(p).unwrap();
    }
    c.destroy().unwrap();
}

#[test]
fn create_rejects_bad_arguments() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let bad = |name, size, align| match slab.kmem_cache_create(name, size, align, SlabFlags::empty(), None) {
        Err(SlabError::InvalidCache { why, .. }) => why,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(bad("zero", 0, 8), "object size is 0");
    assert_eq!(bad("align", 8, 24), "alignment is not a power of two");
    assert_eq!(bad("huge", (4 << 20) + 1, 8), "object size above 4 MiB (the largest slab)");
    assert_eq!(bad("", 8, 8), "empty name");
    let big = slab.kmem_cache_create("align-4k", 100, 4096, SlabFlags::empty(), None).unwrap();
    let p = big.alloc(GFP).unwrap();
    assert_eq!(p.as_ptr() as usize % 4096, 0);
    big.free(p).unwrap();
    big.destroy().unwrap();
}

#[test]
fn misuse_is_refused_and_changes_nothing() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("misuse", 48, 0, SlabFlags::empty(), None).unwrap();
    let other = slab.kmem_cache_create("other", 48, 0, SlabFlags::empty(), None).unwrap();
    let a = c.alloc(GFP).unwrap();
    let b = c.alloc(GFP).unwrap();
    let mut stack = 0u64;
    let foreign = NonNull::from(&mut stack).cast::<u8>();
    assert!(matches!(c.free(foreign), Err(SlabError::NotOwned { .. })));
    let interior = NonNull::new(a.as_ptr().wrapping_add(8)).unwrap();
    assert_eq!(
        c.free(interior),
        Err(SlabError::Interior {
            cache: "misuse",
            addr: interior.as_ptr() as usize,
            object: a.as_ptr() as usize
        })
    );
    assert_eq!(
        other.free(a),
        Err(SlabError::WrongCache { cache: "other", owner: "misuse", addr: a.as_ptr() as usize })
    );
    c.free(a).unwrap();
    let e = c.free(a).unwrap_err();
    assert_eq!(e, SlabError::DoubleFree { cache: "misuse", addr: a.as_ptr() as usize });
    assert!(std::format!("{e}").contains("double free"));
    // A free of a page that is not a slab at all.
    let pfn = prov.alloc_pages(GFP, 0).unwrap();
    let raw = NonNull::new(prov.direct_map().pfn_to_virt(pfn)).unwrap();
    assert!(matches!(c.free(raw), Err(SlabError::NotOwned { .. })));
    prov.free_pages(pfn, 0).unwrap();
    assert_eq!(c.live_objects(), 1);
    c.validate().unwrap();
    c.free(b).unwrap();
    c.destroy().unwrap();
    other.destroy().unwrap();
}

#[test]
fn double_free_deep_in_the_list_is_caught_with_consistency_checks() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("checked", 48, 0, SlabFlags::SLAB_CONSISTENCY_CHECKS, None).unwrap();
    let a = c.alloc(GFP).unwrap();
    let b = c.alloc(GFP).unwrap();
    c.free(a).unwrap();
    c.free(b).unwrap();
    // `a` is second on the free list, not the head.
    assert_eq!(c.free(a), Err(SlabError::DoubleFree { cache: "checked", addr: a.as_ptr() as usize }));
    c.validate().unwrap();
    c.destroy().unwrap();
}

#[test]
fn double_free_of_the_freelist_head_is_caught_without_debug_flags() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("plain", 48, 0, SlabFlags::empty(), None).unwrap();
    let objs: Vec<_> = (0..8).map(|_| c.alloc(GFP).unwrap()).collect();
    // What SLUB guarantees without `slab_debug`: freeing the object that is the free-list head
    // again is refused, whichever object it is.
    for &o in &objs {
        c.free(o).unwrap();
        assert_eq!(c.free(o), Err(SlabError::DoubleFree { cache: "plain", addr: o.as_ptr() as usize }));
    }
    assert_eq!(c.live_objects(), 0);
    c.validate().unwrap();
    // Live objects whose first word looks like a free pointer (0, or another object's address)
    // are freed normally: no shape test second-guesses the caller.
    let a = c.alloc(GFP).unwrap();
    let b = c.alloc(GFP).unwrap();
    // SAFETY: `a` and `b` are live 48-byte objects owned by this test.
    unsafe {
        a.as_ptr().cast::<usize>().write_unaligned(0);
        b.as_ptr().cast::<usize>().write_unaligned(a.as_ptr() as usize);
    }
    c.free(a).unwrap();
    c.free(b).unwrap();
    assert_eq!(c.live_objects(), 0);
    c.validate().unwrap();
    c.destroy().unwrap();
}

#[test]
fn double_free_deep_in_the_list_is_caught_in_every_debug_cache() {
    // Every debug letter makes a debug cache, and debug caches walk the free list on free.
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    for flags in [
        SlabFlags::SLAB_CONSISTENCY_CHECKS,
        SlabFlags::SLAB_RED_ZONE,
        SlabFlags::SLAB_POISON,
        SlabFlags::SLAB_STORE_USER,
    ] {
        let c = slab.kmem_cache_create("debug", 48, 0, flags, None).unwrap();
        let objs: Vec<_> = (0..8).map(|_| c.alloc(GFP).unwrap()).collect();
        for &o in &objs {
            c.free(o).unwrap();
        }
        // Every freed object but the last is somewhere down the free list, not its head.
        for &o in &objs {
            assert_eq!(
                c.free(o),
                Err(SlabError::DoubleFree { cache: "debug", addr: o.as_ptr() as usize }),
                "{flags:?}"
            );
        }
        c.validate().unwrap();
        c.destroy().unwrap();
    }
}

#[test]
fn exhaustion_fails_cleanly_and_recovers() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("exhaust", 512, 0, SlabFlags::empty(), None).unwrap();
    prov.set_limit(3);
    let mut objs = Vec::new();
    let err = loop {
        match c.alloc(GFP) {
            Ok(p) => objs.push(p),
            Err(e) => break e,
        }
    };
    assert_eq!(err, AllocError::OutOfMemory { order: 0 });
    assert_eq!(objs.len(), 3 * c.objects_per_slab() as usize);
    c.validate().unwrap();
    for p in objs.drain(..) {
        c.free(p).unwrap();
    }
    assert_eq!(c.alloc(GFP).map(|p| c.free(p)), Ok(Ok(())));
    prov.unlimited();
    c.validate().unwrap();
    c.destroy().unwrap();
}

#[test]
fn memory_pressure_shrinks_other_caches_for_blocking_requests() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let a = slab.kmem_cache_create("hoarder", 4096, 0, SlabFlags::empty(), None).unwrap();
    let b = slab.kmem_cache_create("needy", 64, 0, SlabFlags::empty(), None).unwrap();
    // `a` keeps up to min_partial empty order-3 slabs after its objects are freed.
    let objs: Vec<_> = (0..32).map(|_| a.alloc(GFP).unwrap()).collect();
    for p in objs {
        a.free(p).unwrap();
    }
    assert!(a.pages() > 0);
    prov.set_limit(0);
    // Atomic requests do not reclaim.
    assert_eq!(b.alloc(GfpFlags::GFP_ATOMIC), Err(AllocError::OutOfMemory { order: 0 }));
    assert!(a.pages() > 0);
    // GFP_KERNEL may: the empty slabs of `a` go back and the retry succeeds.
    let p = b.alloc(GFP).unwrap();
    assert_eq!(a.pages(), 0);
    b.free(p).unwrap();
    prov.unlimited();
    a.destroy().unwrap();
    b.destroy().unwrap();
}

#[test]
fn slabinfo_has_linux_format() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("my_cache", 200, 0, SlabFlags::SLAB_RECLAIM_ACCOUNT, None).unwrap();
    let p = c.alloc(GFP).unwrap();
    // As on Linux, the objects parked on the CPU's private list count as active until the CPU
    // slab is flushed.
    assert!(std::format!("{}", c.slabinfo_row()).starts_with("my_cache              20     20 "));
    assert_eq!(c.live_objects(), 1);
    slab.flush_this_cpu();
    let mut s = String::new();
    slab.slabinfo(&mut s).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "slabinfo - version: 2.1");
    assert_eq!(
        lines[1],
        "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> \
         <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>"
    );
    let row = lines.iter().find(|l| l.starts_with("my_cache ")).unwrap();
    // 200 bytes: 20 per order-0 slab (96 bytes wasted <= 4096/16).
    assert_eq!(
        *row,
        "my_cache               1     20    200   20    1 : tunables    0    0    0 : slabdata      1      1      0"
    );
    assert!(lines.iter().any(|l| l.starts_with("kmem_cache ")));
    let t = slab.totals();
    assert_eq!(t.reclaimable_pages, 1);
    assert_eq!(t.sreclaimable_kb(), 4);
    assert_eq!(t.slab_kb(), t.pages * 4);
    assert_eq!(t.sunreclaim_kb(), (t.pages - 1) * 4);
    let mut one = String::new();
    write!(one, "{}", c.slabinfo_row()).unwrap();
    assert_eq!(one, *row);
    c.free(p).unwrap();
    c.destroy().unwrap();
}

#[test]
fn corrupted_free_pointer_is_reported_not_followed() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("fp", 64, 0, SlabFlags::empty(), None).unwrap();
    let a = c.alloc(GFP).unwrap();
    let b = c.alloc(GFP).unwrap();
    c.free(b).unwrap();
    c.free(a).unwrap();
    // Out of the CPU's sheaf onto the slab's free list, oldest first.
    slab.flush_this_cpu();
    // `a` is the head; its free pointer (at offset 32) points at `b`. Scribble on it.
    // SAFETY: test-only corruption of a free object inside the emulated RAM.
    unsafe { a.as_ptr().add(32).cast::<u64>().write_unaligned(0x4141_4141_4141_4141) };
    match c.validate() {
        Err(SlabError::Corrupted(r)) => {
            assert_eq!(r.kind, CorruptionKind::FreePointer);
            assert_eq!(r.bad_addr, a.as_ptr() as usize + 32);
        }
        other => panic!("{other:?}"),
    }
    // The allocator hands out `a` but does not follow the wild pointer.
    assert_eq!(c.alloc(GFP).unwrap(), a);
    let (rep, n) = c.last_report();
    assert_eq!((rep.unwrap().kind, n), (CorruptionKind::FreePointer, 1));
    let next = c.alloc(GFP).unwrap();
    assert_eq!(owner_name(&prov, next), Some("fp"));
    assert_ne!(next, b, "the rest of the damaged list is quarantined");
    c.free(a).unwrap();
    c.free(next).unwrap();
    assert_eq!(c.live_objects(), 0);
}

#[derive(Debug)]
struct Node {
    val: u64,
    tag: [u8; 20],
}

static DROPS: AtomicUsize = AtomicUsize::new(0);
struct Dropper(#[allow(dead_code)] u32);
impl Drop for Dropper {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Relaxed);
    }
}

#[test]
fn typed_cache_hands_out_owned_objects_freed_on_drop() {
    let prov = setup(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let nodes: TypedCache<'_, _, Node> = TypedCache::new(&slab, "node", SlabFlags::empty()).unwrap();
    {
        let mut a = nodes.alloc(Node { val: 7, tag: [1; 20] }, GFP).unwrap();
        let b = nodes.alloc(Node { val: 8, tag: [2; 20] }, GFP).unwrap();
        a.val += 1;
        assert_eq!((a.val, b.val, a.tag[19], b.tag[0]), (8, 8, 1, 2));
        assert_eq!(nodes.cache().live_objects(), 2);
    }
    assert_eq!(nodes.cache().live_objects(), 0);
    let d: TypedCache<'_, _, Dropper> = TypedCache::new(&slab, "dropper", SlabFlags::empty()).unwrap();
    drop(d.alloc(Dropper(1), GFP).map_err(|(_, e)| e).unwrap());
    assert_eq!(DROPS.load(Relaxed), 1);
    let d2: TypedCache<'_, _, Dropper> = TypedCache::new(&slab, "dropper2", SlabFlags::empty()).unwrap();
    prov.set_limit(0);
    let (v, e) = d2.alloc(Dropper(2), GfpFlags::GFP_ATOMIC).map(|_| ()).unwrap_err();
    assert_eq!(e, AllocError::OutOfMemory { order: 0 });
    drop(v);
    assert_eq!(DROPS.load(Relaxed), 2);
    prov.unlimited();
    assert!(matches!(
        TypedCache::<'_, _, ()>::new(&slab, "zst", SlabFlags::empty()),
        Err(SlabError::InvalidCache { why: "zero-sized type", .. })
    ));
    nodes.destroy().map_err(|(_, e)| e).unwrap();
    d.destroy().map_err(|(_, e)| e).unwrap();
    d2.destroy().map_err(|(_, e)| e).unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(usize),
    Free(usize),
    Shrink,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let n = if cfg!(miri) { 60 } else { 400 };
    proptest::collection::vec(
        prop_oneof![6 => (0usize..4).prop_map(Op::Alloc), 5 => any::<usize>().prop_map(Op::Free), 1 => Just(Op::Shrink)],
        1..n,
    )
}

proptest! {
    // Under Miri: few cases, and no failure persistence (it needs the file system).
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 64 },
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    /// Against a model of live objects: no two overlap, each lies in a slab of its cache, sizes
    /// and alignment hold; freeing everything and shrinking returns every page.
    #[test]
    fn caches_match_a_model(ops in ops(), flags in 0u32..4) {
        let prov = setup(PAGES);
        let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
        let base = prov.pages_in_use();
        let extra = [SlabFlags::empty(), SlabFlags::SLAB_HWCACHE_ALIGN, SlabFlags::DEBUG, SlabFlags::SLAB_POISON][flags as usize];
        let specs = [("p-8", 8usize, 0usize), ("p-40", 40, 16), ("p-700", 700, 64), ("p-3000", 3000, 8)];
        let caches: Vec<_> = specs.iter()
            .map(|&(n, s, a)| slab.kmem_cache_create(n, s, a, extra, None).unwrap())
            .collect();
        // addr -> (pointer, end, cache)
        let mut live: BTreeMap<usize, (NonNull<u8>, usize, usize)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Alloc(i) => {
                    let ptr = caches[i].alloc(GFP).unwrap();
                    let p = ptr.as_ptr() as usize;
                    let (name, size, align) = specs[i];
                    prop_assert_eq!(p % align.max(8), 0);
                    prop_assert_eq!(owner_name(&prov, ptr), Some(name));
                    if let Some((&a, &(_, end, _))) = live.range(..=p).next_back() { prop_assert!(end <= p, "{a:#x}"); }
                    if let Some((&a, _)) = live.range(p..).next() { prop_assert!(p + size <= a); }
                    // SAFETY: a fresh object of `size` bytes.
                    unsafe { ptr.as_ptr().write_bytes(i as u8, size) };
                    live.insert(p, (ptr, p + size, i));
                }
                Op::Free(k) if !live.is_empty() => {
                    let addr = *live.keys().nth(k % live.len()).unwrap();
                    let (ptr, end, i) = live.remove(&addr).unwrap();
                    // SAFETY: still live: its bytes are what we wrote.
                    let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), end - addr) };
                    prop_assert!(bytes.filled_with(i as u8));
                    caches[i].free(ptr).unwrap();
                }
                Op::Free(_) => {}
                Op::Shrink => { slab.shrink_all(); }
            }
        }
        for c in &caches { c.validate().unwrap(); }
        for (_, (ptr, _, i)) in live { caches[i].free(ptr).unwrap(); }
        slab.shrink_all();
        for c in caches { prop_assert_eq!(c.pages(), 0); c.destroy().unwrap(); }
        // The caches' descriptors go back to the root `kmem_cache` cache (through this CPU's
        // sheaf); its emptied slab is returned on the next shrink, as on Linux.
        slab.shrink_all();
        prop_assert_eq!(prov.pages_in_use(), base);
    }
}

/// The flag values are 6.12's: `include/linux/slab.h`, `enum _slab_flag_bits` and the
/// `__SLAB_FLAG_BIT(_SLAB_*)` defines, with `CONFIG_MEMCG=y` and `CONFIG_FAILSLAB=y`
/// (`_SLAB_DEBUG_OBJECTS` absent, so `_SLAB_NOLEAKTRACE` is bit 11 and `_SLAB_FAILSLAB` 13;
/// `_SLAB_ACCOUNT` 14 and `_SLAB_KASAN`/`_SLAB_SKIP_KFENCE` absent, so `_SLAB_RECLAIM_ACCOUNT`
/// is 16).
#[test]
fn slab_flags_have_linux_6_12_values() {
    assert_eq!(SlabFlags::SLAB_CONSISTENCY_CHECKS.bits(), 0x1);
    assert_eq!(SlabFlags::SLAB_RED_ZONE.bits(), 0x2);
    assert_eq!(SlabFlags::SLAB_POISON.bits(), 0x4);
    assert_eq!(SlabFlags::SLAB_KMALLOC.bits(), 0x8);
    assert_eq!(SlabFlags::SLAB_HWCACHE_ALIGN.bits(), 0x10);
    assert_eq!(SlabFlags::SLAB_CACHE_DMA.bits(), 0x20);
    assert_eq!(SlabFlags::SLAB_STORE_USER.bits(), 0x80);
    assert_eq!(SlabFlags::SLAB_PANIC.bits(), 0x100);
    assert_eq!(SlabFlags::SLAB_FAILSLAB.bits(), 0x2000);
    assert_eq!(SlabFlags::SLAB_RECLAIM_ACCOUNT.bits(), 0x1_0000);
    assert_eq!(SlabFlags::DEBUG.bits(), 0x87, "F|Z|P|U");
}
