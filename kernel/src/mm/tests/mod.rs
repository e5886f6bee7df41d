//! In-kernel tests of the memory subsystem (registered with `ktest!`, run by `cargo run -- --test`).

mod fault_inject;
mod ioremap;
mod kmalloc;
mod kmalloc_irq;
mod matrix;
mod meminfo;
mod mempool;
mod nested_irq;
mod page_alloc;
mod page_ref;
mod slab;
mod smp;
mod util;
mod vm_map_ram;
mod vmalloc;
mod vmalloc_huge;
mod vmalloc_variants;
mod vmap_area;
mod vmap_pfn;
mod vmemmap;

use crate::mm::node;

/// Free-list counts of every zone: equal snapshots mean the page allocator is unchanged. The
/// per-CPU lists are drained first (Linux's `drain_all_pages`): their pages are free but not on
/// the free lists, and which pages sit there depends on the order of earlier frees. vmalloc's
/// empty page tables (kept after vfree) are given back first too.
pub(super) fn buddy_snapshot() -> [[u64; 11]; 3] {
    settle();
    let mut s = [[0; 11]; 3];
    for (i, zone) in node().zones().iter().enumerate() {
        s[i] = zone.free_area_snapshot().nr_free;
    }
    s
}

/// Free pages on the buddy lists after draining the per-CPU lists (MemFree's count), once the
/// lazily freed vmalloc areas are purged (their nodes freed, empty `vmap_area` slabs given
/// back) and vmalloc's empty page tables given back.
pub(super) fn free_pages_drained() -> u64 {
    settle();
    node().totals().free_pages
}

/// Brings the allocators to a state that depends only on what is live: the lazily freed
/// vmalloc areas purged (their nodes freed), empty `vmap_area` slabs and vmalloc's empty page
/// tables given back, and the per-CPU page lists drained. Every before/after snapshot starts
/// here.
pub(super) fn settle() {
    crate::mm::vmalloc::purge_vmap_area_lazy();
    crate::mm::vmalloc::shrink_vmap_area_cache();
    crate::mm::vmalloc::shrink_page_tables();
    node().drain_pages();
}

/// [`free_pages_drained`] with the `vmap_area` cache's slab pages counted as free (see
/// [`vmalloc_state`]).
pub(super) fn vmalloc_free_pages() -> u64 {
    free_pages_drained() + crate::mm::vmalloc::vmap_area_slab_pages()
}

/// What a vmalloc test compares before and after: free pages ([`free_pages_drained`]: the
/// lazily freed areas purged, empty tables given back) with the `vmap_area` cache's slab pages
/// counted as free, and vmalloc's counts, taken after the shrink so that the page-table count
/// is the one after it; then the area trees are checked.
///
/// The slab pages: every area and free range is a node of that cache, and which node survives
/// a merge of free ranges decides which slab keeps an object. A purge merges parked ranges in
/// another order than eager frees did, so a test can end with the same nodes spread over one
/// slab more or fewer (seen: 3 slab pages before a kvmalloc/kvfree, 2 after, same areas). A
/// lost node is still caught: by the area count and free bytes here, by the tree check, and by
/// the harness's per-cache object count (`ktest/leak.rs`, which allows the same).
///
/// The check comes last because it makes a sorted copy of the lazy list (a kmalloc): run while
/// areas are parked it leaves that object's slab as this CPU's slab, one page counted against
/// the test. The check with parked areas is the host tests' (`mm` crate, vmalloc/tests/lazy.rs).
pub(super) fn vmalloc_state() -> (u64, crate::mm::vmalloc::VmallocCounts) {
    let free = vmalloc_free_pages();
    let counts = crate::mm::vmalloc::counts();
    crate::mm::vmalloc::with_space(|s| s.areas.check()).expect("vmap area trees consistent");
    (free, counts)
}
