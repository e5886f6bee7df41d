//! Host tests of the per-CPU slabs: which path an operation takes (the SLUB_STATS counters),
//! remote frees into another CPU's frozen slab, flushing, exact counts, and a model of several
//! CPUs sharing caches.

use std::collections::BTreeSet;
use std::vec::Vec;

use core::panic::Location;
use core::ptr::NonNull;

use proptest::prelude::*;

use crate::buddy::CpuId;
use crate::gfp::GfpFlags;
use crate::slab::tests::prov::TestProvider;
use crate::slab::tests::SEED;
use crate::slab::*;

const GFP: GfpFlags = GfpFlags::GFP_KERNEL;
const PAGES: usize = if cfg!(miri) { 1024 } else { 4096 };

fn cpu(n: usize) -> CpuId {
    CpuId::new(n).unwrap()
}

fn alloc_on<P: crate::page::PageProvider>(c: &KmemCache<'_, P>, n: usize) -> NonNull<u8> {
    c.alloc_on(cpu(n), GFP, c.geom.object_size, Location::caller()).unwrap()
}

fn free_on<P: crate::page::PageProvider>(
    c: &KmemCache<'_, P>,
    n: usize,
    p: NonNull<u8>,
) -> Result<(), SlabError> {
    c.free_on(cpu(n), p, Location::caller())
}

fn flush_all<P: crate::page::PageProvider>(c: &KmemCache<'_, P>) {
    for n in 0..percpu::NR_CPUS {
        // SAFETY: host test: the guard of each slot stands in for its CPU.
        unsafe { c.flush_cpu_slab(cpu(n)) };
    }
}

#[test]
fn lifo_pairs_take_the_fast_paths() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("fast", 64, 0, SlabFlags::empty(), None).unwrap();
    let first = alloc_on(&c, 0);
    // The first allocation found no CPU slab: slow path, a new slab, activated from the list.
    assert_eq!(c.stat(SlabStat::AllocSlowpath), 1);
    assert_eq!(c.stat(SlabStat::AllocSlab), 1);
    assert_eq!(c.stat(SlabStat::AllocFromPartial), 1);
    for _ in 0..100 {
        let p = alloc_on(&c, 0);
        free_on(&c, 0, p).unwrap();
    }
    assert_eq!(c.stat(SlabStat::AllocFastpath), 100);
    assert_eq!(c.stat(SlabStat::FreeFastpath), 100);
    assert_eq!(c.stat(SlabStat::FreeSlowpath), 0);
    assert_eq!(c.live_objects(), 1);
    free_on(&c, 0, first).unwrap();
    c.validate().unwrap();
    c.destroy().unwrap();
}

#[test]
fn remote_free_goes_to_the_frozen_slab_and_comes_back_by_refill() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("remote", 256, 0, SlabFlags::empty(), None).unwrap();
    let per_slab = c.objects_per_slab() as usize;
    // CPU 0 takes every object of its active slab: its private list is empty.
    let objs: Vec<_> = (0..per_slab).map(|_| alloc_on(&c, 0)).collect();
    // CPU 1 frees two of them: into its own sheaf (fast path, no slab touched).
    free_on(&c, 1, objs[3]).unwrap();
    free_on(&c, 1, objs[5]).unwrap();
    assert_eq!(c.stat(SlabStat::FreeFastpath), 2);
    assert_eq!(c.live_objects(), per_slab as u64 - 2);
    c.validate().unwrap();
    // CPU 1 drains: the objects go to their slab, frozen by CPU 0: remote frees onto the slab's
    // own list (no list move).
    // SAFETY: host test; the slot's guard stands in for CPU 1.
    unsafe { c.flush_cpu_slab(cpu(1)) };
    assert_eq!(c.stat(SlabStat::FreeFrozen), 2);
    assert_eq!(c.stat(SlabStat::SheafFlush), 1);
    assert_eq!(c.live_objects(), per_slab as u64 - 2);
    c.validate().unwrap();
    // A second free of the slab list's head is refused, from any CPU, fast path or not.
    for n in [0, 1, 2] {
        assert_eq!(
            free_on(&c, n, objs[5]),
            Err(SlabError::DoubleFree { cache: "remote", addr: objs[5].as_ptr() as usize })
        );
    }
    // CPU 0's next allocations refill its private list from those remote frees.
    let a = alloc_on(&c, 0);
    let b = alloc_on(&c, 0);
    assert_eq!(c.stat(SlabStat::AllocRefill), 1);
    let got: BTreeSet<_> = [a, b].into_iter().collect();
    assert_eq!(got, [objs[3], objs[5]].into_iter().collect());
    assert_eq!(c.stat(SlabStat::AllocSlab), 1, "no new slab was needed");
    for (i, p) in objs.into_iter().enumerate() {
        if i != 3 && i != 5 {
            free_on(&c, 1, p).unwrap();
        }
    }
    free_on(&c, 0, a).unwrap();
    free_on(&c, 0, b).unwrap();
    assert_eq!(c.live_objects(), 0);
    c.validate().unwrap();
    c.destroy().unwrap();
}

#[test]
fn deactivation_merges_remote_frees_and_counts_stay_exact() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("merge", 128, 0, SlabFlags::empty(), None).unwrap();
    let per_slab = c.objects_per_slab() as u64;
    let objs: Vec<_> = (0..4).map(|_| alloc_on(&c, 0)).collect();
    // Objects on CPU 0's private list count as active in slabinfo, as on Linux.
    assert_eq!(c.slabinfo_row().active_objs, per_slab);
    free_on(&c, 1, objs[0]).unwrap();
    free_on(&c, 0, objs[1]).unwrap();
    // Both sit in their CPU's sheaf, still counted active.
    assert_eq!(c.slabinfo_row().active_objs, per_slab);
    // SAFETY: host test; the slot's guard stands in for CPU 1.
    assert_eq!(unsafe { c.flush_cpu_slab(cpu(1)) }, 0);
    assert_eq!(c.slabinfo_row().active_objs, per_slab - 1, "the remote free left the slab");
    assert_eq!(c.live_objects(), 2);
    // SAFETY: host test; the slot's guard stands in for CPU 0.
    assert_eq!(unsafe { c.flush_cpu_slab(cpu(0)) }, 0, "the slab still has live objects");
    assert_eq!(c.stat(SlabStat::CpuslabFlush), 1);
    assert_eq!(c.stat(SlabStat::DeactivateRemoteFrees), 1);
    assert_eq!(c.stat(SlabStat::DeactivateToHead), 1);
    assert_eq!(c.slabinfo_row().active_objs, 2);
    c.validate().unwrap();
    // A flushed CPU takes the partial slab again on its next allocation.
    let p = alloc_on(&c, 0);
    assert_eq!(c.stat(SlabStat::AllocFromPartial), 2);
    for q in [objs[2], objs[3], p] {
        free_on(&c, 0, q).unwrap();
    }
    // Flushing an empty active slab keeps it (up to min_partial) until shrink.
    flush_all(&c);
    assert_eq!(c.stat(SlabStat::DeactivateEmpty), 1);
    assert_eq!(c.slabinfo_row().active_objs, 0);
    assert!(c.shrink() > 0);
    assert_eq!(c.pages(), 0);
    c.destroy().unwrap();
}

#[test]
fn a_full_sheaf_gives_its_oldest_half_back_in_one_batch() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("sheaf", 64, 0, SlabFlags::empty(), None).unwrap();
    let cap = percpu::SHEAF_CAPACITY;
    let objs: Vec<_> = (0..cap + 1).map(|_| alloc_on(&c, 0)).collect();
    for &p in &objs[..cap] {
        free_on(&c, 0, p).unwrap();
    }
    assert_eq!(c.stat(SlabStat::FreeFastpath), cap as u64);
    assert_eq!(c.stat(SlabStat::SheafFlush), 0);
    // The next free finds the sheaf full: the oldest half goes back to the slabs, then it fits.
    free_on(&c, 0, objs[cap]).unwrap();
    assert_eq!(c.stat(SlabStat::SheafFlush), 1);
    assert_eq!(c.stat(SlabStat::FreeSlowpath), 1);
    assert_eq!(c.live_objects(), 0);
    c.validate().unwrap();
    // Allocations take the newest first, from the sheaf (no slab touched).
    let before = c.stat(SlabStat::AllocSlowpath);
    assert_eq!(alloc_on(&c, 0), objs[cap]);
    assert_eq!(alloc_on(&c, 0), objs[cap - 1]);
    assert_eq!(c.stat(SlabStat::AllocSlowpath), before);
    // A double free of the sheaf's top is refused on the fast path's CPU.
    free_on(&c, 0, objs[cap]).unwrap();
    let dfree = |p: NonNull<u8>| Err(SlabError::DoubleFree { cache: "sheaf", addr: p.as_ptr() as usize });
    assert_eq!(free_on(&c, 0, objs[cap]), dfree(objs[cap]));
    free_on(&c, 0, objs[cap - 1]).unwrap();
    assert_eq!(c.live_objects(), 0);
    // With the sheaf full, every free takes the slow path, whose scan of the sheaf refuses a
    // double free of any object in it.
    let more: Vec<_> = (0..2 * cap).map(|_| alloc_on(&c, 0)).collect();
    for &p in &more[..cap] {
        free_on(&c, 0, p).unwrap();
    }
    assert_eq!(free_on(&c, 0, more[3]), dfree(more[3]));
    assert_eq!(c.live_objects(), cap as u64);
    for &p in &more[cap..] {
        free_on(&c, 0, p).unwrap();
    }
    assert_eq!(c.live_objects(), 0);
    c.validate().unwrap();
    flush_all(&c);
    assert_eq!(c.slabinfo_row().active_objs, 0);
    c.destroy().unwrap();
}

#[test]
fn debug_caches_never_take_the_fast_paths() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    for flags in [SlabFlags::SLAB_CONSISTENCY_CHECKS, SlabFlags::SLAB_POISON, SlabFlags::SLAB_STORE_USER] {
        let c = slab.kmem_cache_create("dbg", 40, 0, flags, None).unwrap();
        let objs: Vec<_> = (0..10).map(|_| alloc_on(&c, 0)).collect();
        for p in &objs {
            free_on(&c, 0, *p).unwrap();
        }
        assert_eq!(c.stat(SlabStat::AllocFastpath), 0, "{flags:?}");
        assert_eq!(c.stat(SlabStat::FreeFastpath), 0, "{flags:?}");
        assert_eq!(c.stat(SlabStat::AllocSlowpath), 10);
        assert_eq!(c.stat(SlabStat::FreeSlowpath), 10);
        // A double free anywhere on a CPU's private list is caught (the walk of debug caches),
        // also when another CPU frees it.
        assert!(matches!(free_on(&c, 1, objs[2]), Err(SlabError::DoubleFree { .. })), "{flags:?}");
        assert!(matches!(free_on(&c, 0, objs[4]), Err(SlabError::DoubleFree { .. })), "{flags:?}");
        c.validate().unwrap();
        c.destroy().unwrap();
    }
}

#[test]
fn double_free_of_the_private_list_head_is_caught_on_the_fast_path_cpu() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("dfree", 32, 0, SlabFlags::empty(), None).unwrap();
    let keep = alloc_on(&c, 0);
    let a = alloc_on(&c, 0);
    free_on(&c, 0, a).unwrap();
    let before = (c.stat(SlabStat::FreeFastpath), c.live_objects());
    assert_eq!(free_on(&c, 0, a), Err(SlabError::DoubleFree { cache: "dfree", addr: a.as_ptr() as usize }));
    assert_eq!((c.stat(SlabStat::FreeFastpath), c.live_objects()), before, "nothing changed");
    // An interior pointer is refused by the slow path with the object it points into.
    let interior = NonNull::new(keep.as_ptr().wrapping_add(8)).unwrap();
    assert!(matches!(free_on(&c, 0, interior), Err(SlabError::Interior { .. })));
    free_on(&c, 0, keep).unwrap();
    c.validate().unwrap();
    c.destroy().unwrap();
}

#[test]
fn fast_path_object_start_check_for_power_of_two_and_other_sizes() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    for (name, size) in [("pow2", 64), ("odd", 96), ("odd2", 200)] {
        let c = slab.kmem_cache_create(name, size, 0, SlabFlags::empty(), None).unwrap();
        let objs: Vec<_> = (0..c.objects_per_slab()).map(|_| alloc_on(&c, 0)).collect();
        for off in [1, 8, size / 2, size - 8] {
            let interior = NonNull::new(objs[1].as_ptr().wrapping_add(off)).unwrap();
            assert_eq!(
                free_on(&c, 0, interior),
                Err(SlabError::Interior {
                    cache: name,
                    addr: interior.as_ptr() as usize,
                    object: objs[1].as_ptr() as usize
                }),
                "{name} +{off}"
            );
        }
        // Past the last object of the slab (the unused tail), if there is one.
        let last = *objs.iter().max().unwrap();
        let tail = last.as_ptr().wrapping_add(c.size());
        if (tail as usize) % crate::addr::PAGE_SIZE != 0 {
            assert!(free_on(&c, 0, NonNull::new(tail).unwrap()).is_err(), "{name}: slab tail");
        }
        let fast = c.stat(SlabStat::FreeFastpath);
        for &p in &objs {
            free_on(&c, 0, p).unwrap();
        }
        assert!(c.stat(SlabStat::FreeFastpath) > fast, "{name}: object starts take the fast path");
        assert_eq!(c.live_objects(), 0);
        flush_all(&c);
        c.destroy().unwrap();
    }
}

#[test]
fn cpus_in_threads_share_a_cache() {
    // Each thread is one CPU; half the frees are remote (objects another CPU allocated).
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("threads", 48, 0, SlabFlags::empty(), None).unwrap();
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    let (tx, rx) = std::sync::mpsc::channel::<Vec<usize>>();
    std::thread::scope(|s| {
        let c = &c;
        s.spawn(move || {
            for _ in 0..rounds {
                let batch: Vec<_> = (0..8).map(|_| alloc_on(c, 1).as_ptr() as usize).collect();
                tx.send(batch).unwrap();
            }
        });
        s.spawn(move || {
            for batch in rx {
                let mine: Vec<_> = (0..8).map(|_| alloc_on(c, 2)).collect();
                for (a, b) in batch.into_iter().zip(mine) {
                    free_on(c, 2, NonNull::new(a as *mut u8).unwrap()).unwrap();
                    free_on(c, 2, b).unwrap();
                }
            }
        });
    });
    assert_eq!(c.live_objects(), 0);
    c.validate().unwrap();
    assert!(c.stat(SlabStat::FreeFrozen) + c.stat(SlabStat::FreeSlowpath) > 0);
    flush_all(&c);
    c.destroy().unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Alloc { cache: usize, cpu: usize },
    Free { pick: usize, cpu: usize },
    Flush { cpu: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..3usize).prop_map(|(cache, cpu)| Op::Alloc { cache, cpu }),
        3 => (any::<usize>(), 0..3usize).prop_map(|(pick, cpu)| Op::Free { pick, cpu }),
        1 => (0..3usize).prop_map(|cpu| Op::Flush { cpu }),
    ]
}

proptest! {
    // Under Miri: few cases, and no failure persistence (it needs the file system).
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 64 },
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    /// Three CPUs allocate from and free into two caches (objects freed by any CPU, so many frees
    /// are remote) and flush at random; after every step the live counts match a model, every
    /// object is distinct and the caches validate; slabinfo counts at least the live objects and
    /// exactly them once every CPU is flushed.
    #[test]
    fn cpus_match_a_model(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 30 } else { 300 })) {
        let prov = TestProvider::new(PAGES);
        let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
        let caches = [
            slab.kmem_cache_create("model-a", 24, 0, SlabFlags::empty(), None).unwrap(),
            slab.kmem_cache_create("model-b", 512, 0, SlabFlags::empty(), None).unwrap(),
        ];
        let mut live: Vec<(usize, NonNull<u8>)> = Vec::new();
        let mut addrs = BTreeSet::new();
        for op in ops {
            match op {
                Op::Alloc { cache, cpu } => {
                    let p = alloc_on(&caches[cache], cpu);
                    prop_assert!(addrs.insert(p.as_ptr() as usize), "handed out twice");
                    live.push((cache, p));
                }
                Op::Free { pick, cpu } if !live.is_empty() => {
                    let (cache, p) = live.swap_remove(pick % live.len());
                    addrs.remove(&(p.as_ptr() as usize));
                    prop_assert_eq!(free_on(&caches[cache], cpu, p), Ok(()));
                    // The object just freed heads the list it went on (or its slab went back
                    // to the provider): a second free is refused and changes nothing.
                    let again = free_on(&caches[cache], cpu, p);
                    prop_assert!(
                        matches!(again, Err(SlabError::DoubleFree { .. }) | Err(SlabError::NotOwned { .. })),
                        "{:?}", again
                    );
                }
                Op::Free { .. } => {}
                // SAFETY: host test; each slot's guard stands in for its CPU.
                Op::Flush { cpu: n } => for c in &caches { unsafe { c.flush_cpu_slab(cpu(n)) }; },
            }
            for (i, c) in caches.iter().enumerate() {
                let n = live.iter().filter(|(k, _)| *k == i).count() as u64;
                prop_assert_eq!(c.live_objects(), n);
                prop_assert!(c.slabinfo_row().active_objs >= n);
                c.validate().unwrap();
            }
        }
        for (i, c) in caches.iter().enumerate() {
            flush_all(c);
            let n = live.iter().filter(|(k, _)| *k == i).count() as u64;
            prop_assert_eq!(c.slabinfo_row().active_objs, n);
        }
        for (cache, p) in live {
            free_on(&caches[cache], 0, p).unwrap();
        }
        for c in caches {
            flush_all(&c);
            c.destroy().unwrap();
        }
    }
}
