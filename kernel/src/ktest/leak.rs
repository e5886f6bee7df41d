//! The harness's per-test leak check: the page allocator's free pages per zone, every slab
//! cache's objects and vmalloc's areas before and after each test, with every per-CPU cache
//! drained first (deferred vfrees, per-CPU slabs and sheaves, per-CPU page lists). A test that
//! returns with fewer free pages or more live objects or areas than it found fails, and the
//! report names the zone or cache and the count.
//!
//! What a test may keep: memory it freed beyond what it took (the figures only have to not go
//! down), objects `slab_debug` isolated as damaged (with their slabs): those are reported by
//! their `BUG` report, not lost silently, and partly used slabs of the `vmap_area` cache while
//! that cache has no more objects than before: every vmalloc range is a node of its own, and
//! which node survives a merge of free ranges decides which slab keeps an object (slab
//! fragmentation, not a lost node; the objects are compared). Nothing else. A cache created on
//! first use is created by [`warm_up`] before the first test, so that it does not count against
//! whichever test first needs it.

use crate::kprintln;
use crate::mm::stress::figures;
use crate::mm::vmalloc::VmallocCounts;

/// Caches compared (the kernel has about 30).
const MAX_CACHES: usize = 64;

/// One cache's figures: name, objects in use (isolated ones excepted), objects isolated by
/// `slab_debug`, pages per slab.
type CacheFigures = (&'static str, u64, u64, u64);

/// What the check compares.
pub struct Snapshot {
    free: [u64; 3],
    caches: [CacheFigures; MAX_CACHES],
    vm: VmallocCounts,
    /// Pages in the `vmap_area` cache's slabs.
    vmap_area_pages: u64,
}

/// Drains every per-CPU cache and takes the figures.
pub fn take() -> Snapshot {
    let _no_faults = crate::mm::fault_inject::suspend();
    let (free, _, vm, vmap_area_pages) = figures();
    let mut caches = [("", 0, 0, 0); MAX_CACHES];
    let mut n = 0;
    crate::mm::slab::slab().for_each_cache(|c| {
        if n < MAX_CACHES {
            caches[n] = (c.name(), c.live_objects(), c.quarantined(), 1 << c.order());
            n += 1;
        }
    });
    Snapshot { free, caches, vm, vmap_area_pages }
}

/// Prints one line per leak of the test `name`; `true` when there is none.
pub fn check(before: &Snapshot, name: &str) -> bool {
    let after = take();
    let mut clean = true;
    // An object `slab_debug` isolated keeps its slab (reported by its `BUG` report, not lost
    // silently): up to one slab per newly isolated object is not a leak.
    let isolated_pages: u64 = after
        .caches
        .iter()
        .filter(|c| !c.0.is_empty())
        .map(|&(cache, _, q, pages)| {
            let had = before.caches.iter().find(|c| c.0 == cache).map_or(0, |c| c.2);
            q.saturating_sub(had) * pages
        })
        .sum();
    // The vmap_area cache's extra slabs when it holds no more objects than before (module text).
    let objects = |s: &Snapshot| {
        s.caches.iter().find(|c| c.0 == crate::mm::vmalloc::VMAP_AREA_CACHE).map_or(0, |c| c.1)
    };
    let fragmented = if objects(&after) <= objects(before) {
        after.vmap_area_pages.saturating_sub(before.vmap_area_pages)
    } else {
        0
    };
    let lost: u64 = before.free.iter().zip(&after.free).map(|(b, a)| b.saturating_sub(*a)).sum();
    let zones = crate::mm::node().zones();
    for (z, (b, a)) in before.free.iter().zip(&after.free).enumerate() {
        if a < b && lost > isolated_pages + fragmented {
            kprintln!("test {name}: leaked {} pages of zone {}", b - a, zones[z].name());
            clean = false;
        }
    }
    for &(cache, active, _, _) in after.caches.iter().filter(|c| !c.0.is_empty()) {
        let had = before.caches.iter().find(|c| c.0 == cache).map_or(0, |c| c.1);
        if active > had {
            kprintln!("test {name}: leaked {} objects of cache {cache}", active - had);
            clean = false;
        }
    }
    if after.vm.nr_areas > before.vm.nr_areas || after.vm.vmalloc_pages > before.vm.vmalloc_pages {
        kprintln!(
            "test {name}: leaked {} vmalloc areas ({} pages)",
            after.vm.nr_areas.saturating_sub(before.vm.nr_areas),
            after.vm.vmalloc_pages.saturating_sub(before.vm.vmalloc_pages)
        );
        clean = false;
    }
    clean
}

/// Creates what the kernel creates on first use (see the module text), so that the first test
/// to use it is not charged for it.
pub fn warm_up() {
    let _no_faults = crate::mm::fault_inject::suspend();
    crate::mm::stress::warm_up();
}
