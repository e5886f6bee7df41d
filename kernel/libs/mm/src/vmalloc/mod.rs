//! The logic behind vmalloc: virtually contiguous kernel memory built from scattered frames.
//!
//! - [`vmap_area`]: the virtual area allocator over `[VMALLOC_START, VMALLOC_END)` (Linux's
//!   `vmap_area` with the `free_vmap_area_root` augmented tree and the busy tree), O(log n);
//! - [`pgtable`]: mapping frames at consecutive pages of the kernel page tables and unmapping
//!   them, with page-table pages taken from and given back to a [`PageProvider`](crate::page::PageProvider);
//! - [`space`]: vmalloc/vfree/vmap/vunmap combining the two: take an area, allocate the pages,
//!   map them; on `vfree` unmap, free the pages, have the kernel flush the TLB, free the area;
//! - [`huge`]: vmalloc_huge: 2 MiB PMD mappings of split order-9 blocks, falling back to
//!   4 KiB pages;
//! - [`ioremap`]: ioremap/iounmap of MMIO ranges with a cache mode;
//! - [`vmap_block`]: the per-CPU blocks vm_map_ram carves small mappings from;
//! - [`vmap_pfn`]: frames without page descriptors mapped as a `VM_IOREMAP` area;
//! - [`info`]: `/proc/vmallocinfo` lines and the `Vmalloc*` lines of `/proc/meminfo`.
//!
//! The kernel (`kernel/src/mm/vmalloc.rs`) supplies the page provider (buddy), the lock, the TLB
//! flush and the real page tables.

mod avl;
pub mod huge;
pub mod info;
pub mod ioremap;
pub mod pgtable;
pub mod space;
pub mod vmap_area;
pub mod vmap_block;
mod vmap_error;
pub mod vmap_pfn;

#[cfg(test)]
mod tests;

pub use avl::NodeAlloc;
pub use huge::vmalloc_huge_with;
pub use info::{UnpurgedLine, VmallocInfoLine, VmallocMeminfo};
pub use ioremap::{IoremapRequest, PageCacheMode, IOREMAP_MAX_ORDER};
pub use pgtable::{
    PgTableError, TlbFlushRange, VmallocPageTables, HPAGE_PMD_NR, PAGE_KERNEL, PMD_ORDER, PMD_SIZE,
};
pub use space::{lazy_max_pages, vmalloc_with, SpaceLock, VmallocError, VmallocSpace, VMALLOC_CHUNK};
pub use vmap_area::{AddrPlace, AreaKind, VmFlags, VmapArea, VmapAreaRequest, VmapAreas, VmapError};
pub use vmap_block::{VmMapRamError, VmapBlock, VMAP_BBMAP_BITS, VMAP_BLOCK_SIZE, VMAP_MAX_ALLOC};
pub use vmap_pfn::{vmap_pfn_prot, PAGE_SPECIAL};
