//! Allocator logic of the kernel, free of arch code so that it builds and is tested on the host
//! (unit tests, property tests against models, Miri) over emulated physical memory. The kernel
//! (`kernel/src/mm`) wires it to real memory and real page tables.
//!
//! The reference is Linux 6.12 (LTS): semantics, flag values and report formats are 6.12's,
//! and the tests that check them cite the 6.12 source. The deliberate deviations (one node, no
//! highmem, no page reclaim, kswapd or OOM killer, ...) are listed in the README's table
//! "Deviations from Linux 6.12".
//!
//! Layers, bottom up:
//! - [`memmap`]: the firmware's physical memory map;
//! - [`memblock`]: the early boot allocator;
//! - [`page`], [`mem_map`]: page descriptors, one virtual array indexed by pfn (vmemmap);
//! - [`zone`], [`buddy`]: zones with watermarks and the buddy page allocator;
//! - [`slab`], [`kmalloc`]: slab caches and the kmalloc family;
//! - [`mempool`]: memory pools, reserved elements over any of the allocators;
//! - [`kalloc`]: the Rust face of the allocators: an `Allocator` trait with GFP flags, `Box`, `Vec`;
//! - [`vmalloc`]: the virtual area allocator, page-table mapping and `/proc` formats behind vmalloc;
//! - [`stats`]: `/proc`-format reports; [`pagemap`]: the page-state map behind the memmap picture;
//! - [`cpus`]: [`NR_CPUS`] and the possible/online CPU counts every per-CPU structure uses.
#![no_std]
// `Box::try_new_in`: area-tree nodes are boxes from the `vmap_area` slab cache (vmalloc/avl.rs).
#![feature(allocator_ext)]

#[cfg(any(test, feature = "testing"))]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod addr;
pub mod auto_init;
pub mod buddy;
pub mod cpus;
pub mod fault_inject;
pub mod gfp;
pub mod kalloc;
pub mod kmalloc;
pub mod mem_map;
pub mod memblock;
pub mod memmap;
pub mod mempool;
pub mod page;
pub mod pagemap;
pub mod slab;
pub mod stats;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vmalloc;
pub mod zone;

use core::fmt;

pub use addr::{DirectMap, Pfn, PAGE_SHIFT, PAGE_SIZE};
pub use cpus::{nr_cpu_ids, num_online_cpus, NR_CPUS};
pub use gfp::GfpFlags;

/// Why an allocation failed. Nothing was allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The order is above `MAX_PAGE_ORDER`.
    OrderTooLarge { order: u32 },
    /// The size is beyond what this allocator can ever provide (kmalloc above 4 MiB, vmalloc
    /// above its range).
    TooLarge { size: usize, max: usize },
    /// Nothing free that the flags allow: the zones they permit are exhausted (or below their
    /// watermarks).
    OutOfMemory { order: u32 },
    /// An argument is invalid (zero size, alignment not a power of two, `n * size` overflows).
    Invalid(&'static str),
    /// Failed on purpose by fault injection (`by`: `failslab` or `fail_page_alloc`, see
    /// [`fault_inject`]); nothing was short. Callers handle it as any allocation failure.
    FaultInjected { by: &'static str },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::OrderTooLarge { order } => {
                write!(f, "order {order} is above MAX_PAGE_ORDER ({})", page::MAX_PAGE_ORDER)
            }
            AllocError::TooLarge { size, max } => {
                write!(f, "size {size} bytes is above the limit of {max} bytes")
            }
            AllocError::OutOfMemory { order } => write!(f, "out of memory (order {order})"),
            AllocError::Invalid(why) => write!(f, "invalid request: {why}"),
            AllocError::FaultInjected { by } => write!(f, "failed by fault injection ({by})"),
        }
    }
}
