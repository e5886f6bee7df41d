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
    crate::mm::vmalloc::purge_vmap_area_lazy();
    crate::mm::vmalloc::shrink_vmap_area_cache();
    crate::mm::vmalloc::shrink_page_tables();
    node().drain_pages();
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
    crate::mm::vmalloc::purge_vmap_area_lazy();
    crate::mm::vmalloc::shrink_vmap_area_cache();
    crate::mm::vmalloc::shrink_page_tables();
    node().drain_pages();
    node().totals().free_pages
}
