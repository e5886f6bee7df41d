//! Slab caches (Linux SLUB semantics) over a [`PageProvider`](crate::page::PageProvider).
//!
//! - [`cache`]: `KmemCache`, its slabs, free lists, partial/full/empty bookkeeping;
//! - [`layout`]: object layout, alignment and slab order (`calculate_sizes`/`calculate_order`);
//! - [`debug`]: poisoning, red zones, store-user tracking, the `slab_debug=` parser;
//! - [`root`]: the bootstrap `kmem_cache` cache, cache creation and the list of caches;
//! - [`stats`]: `/proc/slabinfo` and meminfo totals;
//! - [`typed`]: `TypedCache<T>` handing out owned objects freed on drop.
//!
//! No heap is needed: every cache struct is an object of the bootstrap cache `kmem_cache`,
//! which itself lives in its own first slab (as Linux's `boot_kmem_cache` ends up).

pub mod cache;
pub mod debug;
mod free;
pub mod layout;
pub mod percpu;
pub mod root;
pub mod slabs;
pub mod stats;
pub mod typed;
pub mod validate;

#[cfg(test)]
pub(crate) mod tests;

use core::fmt;
use core::panic::Location;

use bitflags::bitflags;

use crate::AllocError;

pub use cache::KmemCache;
pub use debug::{parse_slab_debug, SlabDebugConfig, SlabDebugParseError};
pub use percpu::{set_this_cpu_fn, this_cpu, SlabStat, NR_SLAB_STATS};
pub use root::{CacheHandle, SlabAllocator};
pub use stats::{SlabTotals, SlabinfoRow};
pub use typed::{SlabBox, TypedCache};
pub use validate::Validation;

bitflags! {
    /// Cache creation flags with Linux 6.12's values. 6.12 numbers them as bits of
    /// `enum _slab_flag_bits` (`include/linux/slab.h`), where bits exist only in some
    /// configurations; the values here are those of a configuration with `CONFIG_MEMCG=y` and
    /// `CONFIG_FAILSLAB=y` (which this kernel implements) and with `CONFIG_DEBUG_OBJECTS`,
    /// `CONFIG_KASAN_GENERIC`, `CONFIG_KFENCE` and `CONFIG_SLUB_TINY` off (not x86_64
    /// `defconfig`, which has no `CONFIG_MEMCG`):
    /// `_SLAB_CONSISTENCY_CHECKS` 0, `_SLAB_RED_ZONE` 1, `_SLAB_POISON` 2, `_SLAB_KMALLOC` 3,
    /// `_SLAB_HWCACHE_ALIGN` 4, `_SLAB_CACHE_DMA` 5, `_SLAB_CACHE_DMA32` 6, `_SLAB_STORE_USER` 7,
    /// `_SLAB_PANIC` 8, `_SLAB_TYPESAFE_BY_RCU` 9, `_SLAB_TRACE` 10, `_SLAB_NOLEAKTRACE` 11,
    /// `_SLAB_NO_MERGE` 12, `_SLAB_FAILSLAB` 13, `_SLAB_ACCOUNT` 14, `_SLAB_NO_USER_FLAGS` 15,
    /// `_SLAB_RECLAIM_ACCOUNT` 16. Only the flags this allocator acts on are defined.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SlabFlags: u32 {
        /// `SLAB_CONSISTENCY_CHECKS` ('F'): full checks on alloc/free (free-list walk for double
        /// free, free-pointer sanity).
        const SLAB_CONSISTENCY_CHECKS = 1 << 0;
        /// `SLAB_RED_ZONE` ('Z'): red zones around objects.
        const SLAB_RED_ZONE = 1 << 1;
        /// `SLAB_POISON` ('P'): freed objects filled with 0x6b (last byte 0xa5).
        const SLAB_POISON = 1 << 2;
        /// Internal: a kmalloc cache (Linux `SLAB_KMALLOC`); enables the kmalloc tail red zone.
        const SLAB_KMALLOC = 1 << 3;
        /// `SLAB_HWCACHE_ALIGN`: align objects to cache lines (unless small).
        const SLAB_HWCACHE_ALIGN = 1 << 4;
        /// `SLAB_CACHE_DMA`: slabs come from ZONE_DMA.
        const SLAB_CACHE_DMA = 1 << 5;
        /// `SLAB_STORE_USER` ('U'): remember where each object was last allocated and freed.
        const SLAB_STORE_USER = 1 << 7;
        /// `SLAB_PANIC`: accepted for compatibility; creation errors are returned regardless.
        const SLAB_PANIC = 1 << 8;
        /// `SLAB_FAILSLAB`: the cache fails under `failslab`'s `cache-filter` (the cache's
        /// `failslab` mark starts set; see [`crate::fault_inject::FailSlab`]).
        const SLAB_FAILSLAB = 1 << 13;
        /// `SLAB_RECLAIM_ACCOUNT`: objects are reclaimable (counted as SReclaimable).
        const SLAB_RECLAIM_ACCOUNT = 1 << 16;
    }
}

impl SlabFlags {
    /// The debug flags (`slab_debug` letters F, Z, P, U).
    pub const DEBUG: SlabFlags = SlabFlags::SLAB_CONSISTENCY_CHECKS
        .union(SlabFlags::SLAB_RED_ZONE)
        .union(SlabFlags::SLAB_POISON)
        .union(SlabFlags::SLAB_STORE_USER);
}

/// What kind of damage a debug check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorruptionKind {
    /// The red zone before the object was overwritten.
    LeftRedzone,
    /// The red zone after the object was overwritten (write past the end).
    RightRedzone,
    /// The unused tail of a kmalloc object (between the requested and the object size).
    KmallocTail,
    /// A freed object's poison was overwritten (write after free).
    Poison,
    /// A free pointer points outside its slab or between objects.
    FreePointer,
    /// The slab's counters do not match its free list.
    SlabCounters,
}

impl CorruptionKind {
    pub fn name(self) -> &'static str {
        match self {
            CorruptionKind::LeftRedzone => "left red zone overwritten",
            CorruptionKind::RightRedzone => "right red zone overwritten",
            CorruptionKind::KmallocTail => "kmalloc red zone (tail past the requested size) overwritten",
            CorruptionKind::Poison => "poison overwritten (use after free)",
            CorruptionKind::FreePointer => "free pointer corrupt",
            CorruptionKind::SlabCounters => "slab counters do not match its free list",
        }
    }
}

/// A debug report: which cache, which object, the first bad byte, and where the object was last
/// allocated/freed (with `SLAB_STORE_USER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub cache: &'static str,
    pub kind: CorruptionKind,
    /// Address of the object (its start as handed out).
    pub object: usize,
    /// Address of the first bad byte (for `FreePointer`: where the pointer is stored).
    pub bad_addr: usize,
    /// Offset of the bad byte from the object start (negative inside the left red zone).
    pub offset: isize,
    /// The value found (for `FreePointer`: the decoded pointer) and the value expected.
    pub found: u64,
    pub expected: u64,
    pub alloc_at: Option<&'static Location<'static>>,
    pub free_at: Option<&'static Location<'static>>,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: object {:#x}: {}: first bad byte at {:#x} (offset {}) is {:#x}, expected {:#x}",
            self.cache,
            self.object,
            self.kind.name(),
            self.bad_addr,
            self.offset,
            self.found,
            self.expected
        )?;
        if let Some(l) = self.alloc_at {
            write!(f, "; last allocated at {l}")?;
        }
        if let Some(l) = self.free_at {
            write!(f, "; last freed at {l}")?;
        }
        Ok(())
    }
}

/// Why a slab/kmalloc operation was refused. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// An allocation failed.
    Alloc(AllocError),
    /// No slab or kmalloc-large block owns this address.
    NotOwned { addr: usize },
    /// The address is inside an object of `cache` (starting at `object`), not its start.
    Interior { cache: &'static str, addr: usize, object: usize },
    /// The address is inside a kmalloc-large block starting at `block`.
    InteriorLarge { addr: usize, block: usize },
    /// The object is already free.
    DoubleFree { cache: &'static str, addr: usize },
    /// The object is free: asked about after it was freed (use after free).
    Freed { cache: &'static str, addr: usize },
    /// The object belongs to cache `owner`, not to `cache` it was freed to.
    WrongCache { cache: &'static str, owner: &'static str, addr: usize },
    /// A debug check failed; the object was not freed.
    Corrupted(Corruption),
    /// `destroy` refused: objects are still allocated.
    CacheBusy { cache: &'static str, live: u64 },
    /// A creation argument is invalid.
    InvalidCache { name: &'static str, why: &'static str },
    /// Called from interrupt context, where `what` may not run (it may sleep on Linux:
    /// `kmem_cache_create`/`kmem_cache_destroy` take `slab_mutex`).
    InInterrupt { what: &'static str, cache: &'static str },
}

impl From<AllocError> for SlabError {
    fn from(e: AllocError) -> SlabError {
        SlabError::Alloc(e)
    }
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SlabError::Alloc(e) => write!(f, "{e}"),
            SlabError::NotOwned { addr } => {
                write!(f, "free of {addr:#x}: no slab or kmalloc-large block owns this address")
            }
            SlabError::Interior { cache, addr, object } => {
                write!(f, "{cache}: free of {addr:#x}: interior pointer into the object at {object:#x}")
            }
            SlabError::InteriorLarge { addr, block } => {
                write!(f, "free of {addr:#x}: interior pointer into the kmalloc-large block at {block:#x}")
            }
            SlabError::DoubleFree { cache, addr } => {
                write!(f, "{cache}: double free of {addr:#x}: the object is already free")
            }
            SlabError::Freed { cache, addr } => {
                write!(f, "{cache}: {addr:#x} is a free object (use after free)")
            }
            SlabError::WrongCache { cache, owner, addr } => {
                write!(f, "{cache}: free of {addr:#x}, which belongs to cache {owner}")
            }
            SlabError::Corrupted(c) => write!(f, "{c}"),
            SlabError::CacheBusy { cache, live } => {
                write!(f, "cannot destroy cache {cache}: {live} objects are still allocated")
            }
            SlabError::InvalidCache { name, why } => write!(f, "cannot create cache {name}: {why}"),
            SlabError::InInterrupt { what, cache } => {
                write!(f, "{what}({cache}) called from interrupt context: it may sleep")
            }
        }
    }
}
