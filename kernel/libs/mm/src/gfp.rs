//! GFP ("get free pages") flags with Linux's bit values (`include/linux/gfp_types.h`).
//!
//! Only the bits this kernel acts on are defined; composite flags are built from them exactly as
//! Linux builds them, so `GFP_KERNEL.bits()` is Linux's value for the bits that exist here.

use bitflags::bitflags;

bitflags! {
    /// How an allocation may behave: which zones it may use, whether it may sleep or reclaim,
    /// whether it may dip into the reserves, whether the memory must be zeroed.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct GfpFlags: u32 {
        /// `___GFP_DMA`: only `ZONE_DMA` (below 16 MiB).
        const __GFP_DMA = 0x01;
        /// `___GFP_HIGHMEM`: unused on x86_64 (no highmem); accepted and ignored.
        const __GFP_HIGHMEM = 0x02;
        /// `___GFP_DMA32`: `ZONE_DMA32` or below (below 4 GiB).
        const __GFP_DMA32 = 0x04;
        /// `___GFP_MOVABLE`: the page may be migrated (no effect without compaction).
        const __GFP_MOVABLE = 0x08;
        /// `___GFP_RECLAIMABLE`: slab pages that a shrinker can reclaim.
        const __GFP_RECLAIMABLE = 0x10;
        /// `___GFP_HIGH`: high priority; may use part of the `min` reserve.
        const __GFP_HIGH = 0x20;
        /// `___GFP_IO`: may start physical I/O to reclaim.
        const __GFP_IO = 0x40;
        /// `___GFP_FS`: may call into the filesystem to reclaim.
        const __GFP_FS = 0x80;
        /// `___GFP_ZERO`: return zeroed memory.
        const __GFP_ZERO = 0x100;
        /// `___GFP_DIRECT_RECLAIM`: may sleep to reclaim memory itself.
        const __GFP_DIRECT_RECLAIM = 0x400;
        /// `___GFP_KSWAPD_RECLAIM`: may wake the background reclaimer.
        const __GFP_KSWAPD_RECLAIM = 0x800;
        /// `___GFP_NOWARN`: do not print the allocation-failure warning.
        const __GFP_NOWARN = 0x2000;
        /// `___GFP_RETRY_MAYFAIL`: try hard, but may fail.
        const __GFP_RETRY_MAYFAIL = 0x4000;
        /// `___GFP_NOFAIL`: the caller cannot handle failure; the allocator reclaims and retries,
        /// with access to the `min` reserve, and is never failed by fault injection. Linux
        /// retries forever; here, with nothing left to reclaim, the kernel fails it loudly after
        /// a bounded number of rounds rather than hang. **Discouraged** (as on Linux): new code
        /// should handle `AllocError` instead. Never valid with orders above 1.
        const __GFP_NOFAIL = 0x8000;
        /// `___GFP_NORETRY`: give up early.
        const __GFP_NORETRY = 0x10000;
        /// `___GFP_COMP`: compound page metadata (accepted; every block here is one unit).
        const __GFP_COMP = 0x40000;
        /// `___GFP_NOMEMALLOC`: never dip into the emergency reserves (`PF_MEMALLOC`'s
        /// `ALLOC_NO_WATERMARKS`). Accepted; this kernel has no such reserves, so it changes
        /// nothing. `mempool_alloc` sets it (`mm/mempool.c`, `mempool_alloc_noprof`).
        const __GFP_NOMEMALLOC = 0x80000;

        /// `__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM`.
        const __GFP_RECLAIM = Self::__GFP_DIRECT_RECLAIM.bits() | Self::__GFP_KSWAPD_RECLAIM.bits();

        /// Process context: may sleep and reclaim. The common case.
        const GFP_KERNEL = Self::__GFP_RECLAIM.bits() | Self::__GFP_IO.bits() | Self::__GFP_FS.bits();
        /// Interrupt context or under a spinlock: never sleeps, may use part of the reserves.
        const GFP_ATOMIC = Self::__GFP_HIGH.bits() | Self::__GFP_KSWAPD_RECLAIM.bits();
        /// Never sleeps, never touches the reserves: fails early instead, and quietly: 6.12's
        /// `GFP_NOWAIT` carries `__GFP_NOWARN` (since 6.8: a failure is expected and handled).
        const GFP_NOWAIT = Self::__GFP_KSWAPD_RECLAIM.bits() | Self::__GFP_NOWARN.bits();
        /// `GFP_KERNEL` without filesystem or I/O recursion.
        const GFP_NOIO = Self::__GFP_RECLAIM.bits();
        const GFP_NOFS = Self::__GFP_RECLAIM.bits() | Self::__GFP_IO.bits();
        /// `GFP_DMA` is `__GFP_DMA` alone; callers combine it with one of the above.
        const GFP_DMA = Self::__GFP_DMA.bits();
        const GFP_DMA32 = Self::__GFP_DMA32.bits();
    }
}

impl GfpFlags {
    /// May this allocation sleep (Linux's `gfpflags_allow_blocking`)?
    #[inline]
    pub const fn allows_blocking(self) -> bool {
        self.contains(GfpFlags::__GFP_DIRECT_RECLAIM)
    }
}

#[cfg(test)]
mod tests {
    use super::GfpFlags;

    #[test]
    fn composite_flags_have_linux_values() {
        // include/linux/gfp_types.h (6.12): GFP_KERNEL (__GFP_RECLAIM | __GFP_IO | __GFP_FS),
        // GFP_ATOMIC (__GFP_HIGH|__GFP_KSWAPD_RECLAIM),
        // GFP_NOWAIT (__GFP_KSWAPD_RECLAIM | __GFP_NOWARN).
        assert_eq!(GfpFlags::GFP_KERNEL.bits(), 0xcc0);
        assert_eq!(GfpFlags::GFP_ATOMIC.bits(), 0x820);
        assert_eq!(GfpFlags::GFP_NOWAIT.bits(), 0x2800);
        assert!(GfpFlags::GFP_NOWAIT.contains(GfpFlags::__GFP_NOWARN));
        assert!(GfpFlags::GFP_KERNEL.allows_blocking());
        assert!(!GfpFlags::GFP_ATOMIC.allows_blocking());
    }
}
