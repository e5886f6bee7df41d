//! Zones (Linux's `struct zone`): DMA, DMA32 and Normal ranges of a node, each with its own free
//! lists, counters, watermarks and lowmem reserves.
//!
//! The watermark and reserve computations follow Linux `mm/page_alloc.c`:
//! `init_per_zone_wmark_min`, `__setup_per_zone_wmarks`, `setup_per_zone_lowmem_reserve` and
//! `calculate_totalreserve_pages`.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::addr::PAGE_SHIFT;
use crate::buddy::pcp::{PerCpuPages, NR_CPUS};
use crate::page::{NO_PAGE, NR_PAGE_ORDERS};
use crate::sync::IrqSpinLock;

/// The zone types of x86_64 that hold memory here. `Movable` exists in Linux's
/// `lowmem_reserve` arrays (and in `/proc/zoneinfo` protection) but never has pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ZoneType {
    /// Below 16 MiB: ISA DMA.
    Dma = 0,
    /// Below 4 GiB: 32-bit DMA.
    Dma32 = 1,
    /// Everything above.
    Normal = 2,
}

/// Zones with pages.
pub const MAX_NR_ZONES: usize = 3;
/// Entries of `lowmem_reserve`: the zones above plus `ZONE_MOVABLE` (always empty).
pub const NR_LOWMEM_RESERVE: usize = MAX_NR_ZONES + 1;

impl ZoneType {
    pub const ALL: [ZoneType; MAX_NR_ZONES] = [ZoneType::Dma, ZoneType::Dma32, ZoneType::Normal];

    /// Linux's zone name (`/proc/zoneinfo`, `/proc/buddyinfo`).
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Dma32 => "DMA32",
            ZoneType::Normal => "Normal",
        }
    }

    pub const fn from_index(i: usize) -> ZoneType {
        match i {
            0 => ZoneType::Dma,
            1 => ZoneType::Dma32,
            _ => ZoneType::Normal,
        }
    }
}

impl fmt::Display for ZoneType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the zones end, in bytes. A parameter so that host tests can have several zones in a
/// few MiB of emulated RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneLimits {
    /// `ZONE_DMA` is `[0, dma_end)`.
    pub dma_end: u64,
    /// `ZONE_DMA32` is `[dma_end, dma32_end)`; `ZONE_NORMAL` is above.
    pub dma32_end: u64,
}

impl ZoneLimits {
    /// Linux x86_64: `MAX_DMA_PFN` = 16 MiB, `MAX_DMA32_PFN` = 4 GiB.
    pub const X86_64: ZoneLimits = ZoneLimits { dma_end: 16 << 20, dma32_end: 4 << 30 };

    /// The zone of a page frame.
    #[inline]
    pub fn zone_of_pfn(&self, pfn: u64) -> ZoneType {
        let pa = pfn << PAGE_SHIFT;
        if pa < self.dma_end {
            ZoneType::Dma
        } else if pa < self.dma32_end {
            ZoneType::Dma32
        } else {
            ZoneType::Normal
        }
    }

    /// `[start_pfn, end_pfn)` a zone may span.
    pub fn pfn_bounds(&self, zt: ZoneType) -> (u64, u64) {
        let dma = self.dma_end >> PAGE_SHIFT;
        let dma32 = self.dma32_end >> PAGE_SHIFT;
        match zt {
            ZoneType::Dma => (0, dma),
            ZoneType::Dma32 => (dma, dma32),
            ZoneType::Normal => (dma32, u64::MAX),
        }
    }
}

/// `sysctl_lowmem_reserve_ratio` (DMA, DMA32, Normal, Movable).
pub const LOWMEM_RESERVE_RATIO: [u64; NR_LOWMEM_RESERVE] = [256, 256, 32, 0];
/// `watermark_scale_factor` default (in 1/10000 of managed pages).
pub const WATERMARK_SCALE_FACTOR: u64 = 10;

/// The free lists of a zone, under the zone lock. Links are descriptor indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeArea {
    /// Head of the free list of each order ([`NO_PAGE`] when empty).
    pub(crate) head: [u32; NR_PAGE_ORDERS],
    /// Free blocks of each order.
    pub nr_free: [u64; NR_PAGE_ORDERS],
    /// Free pages in the zone (`sum nr_free[o] << o`).
    pub free_pages: u64,
}

impl FreeArea {
    pub(crate) const fn new() -> FreeArea {
        FreeArea { head: [NO_PAGE; NR_PAGE_ORDERS], nr_free: [0; NR_PAGE_ORDERS], free_pages: 0 }
    }
}

/// One zone of a node.
pub struct Zone {
    pub(crate) zone_type: ZoneType,
    pub(crate) node: u8,
    pub(crate) zone_start_pfn: u64,
    pub(crate) spanned_pages: u64,
    pub(crate) present_pages: u64,
    /// Pages given to the buddy allocator. Atomic: `Node::free_reserved_area` adds pages at
    /// run time (Linux's `adjust_managed_page_count`).
    pub(crate) managed_pages: AtomicU64,
    /// min, low, high, promo (Linux's `_watermark[]`). Atomics because `vm.min_free_kbytes`
    /// changes them at run time ([`Node::setup_per_zone_wmarks`](crate::buddy::Node)) while the
    /// allocation paths read them without a lock, as Linux's `wmark_pages()` does (a relaxed
    /// load is a plain `mov`).
    pub(crate) watermark: [AtomicU64; 4],
    pub(crate) lowmem_reserve: [u64; NR_LOWMEM_RESERVE],
    pub(crate) free_area: IrqSpinLock<FreeArea>,
    /// `free_area.free_pages`, published after every change under the zone lock, so that the
    /// watermark check and reports read it without the lock (Linux's `NR_FREE_PAGES` vmstat).
    /// Pages on per-CPU lists are not in it, as on Linux.
    pub(crate) nr_free_pages: AtomicU64,
    /// Per-CPU lists of free blocks of orders 0..=3 (Linux's `per_cpu_pageset`), each touched
    /// only by its own CPU: see `buddy::pcp`.
    pub(crate) pcp: [PerCpuPages; NR_CPUS],
    /// Linux's `ZONE_BELOW_HIGH`: free pages were last seen below the high watermark, so frees
    /// shrink the per-CPU lists toward `high_min` (see `buddy::pcp`).
    pub(crate) below_high: AtomicBool,
    /// The per-CPU lists' `high` was set by hand ([`crate::buddy::Node::set_pcp_batch`], Linux's
    /// `percpu_pagelist_high_fraction`): `zone_pcp_update` leaves it alone.
    pub(crate) pcp_manual: AtomicBool,
}

impl Zone {
    pub(crate) const fn new(zone_type: ZoneType, node: u8) -> Zone {
        Zone {
            zone_type,
            node,
            zone_start_pfn: 0,
            spanned_pages: 0,
            present_pages: 0,
            managed_pages: AtomicU64::new(0),
            watermark: [const { AtomicU64::new(0) }; 4],
            lowmem_reserve: [0; NR_LOWMEM_RESERVE],
            free_area: IrqSpinLock::new(FreeArea::new()),
            nr_free_pages: AtomicU64::new(0),
            pcp: [const { PerCpuPages::new() }; NR_CPUS],
            below_high: AtomicBool::new(false),
            pcp_manual: AtomicBool::new(false),
        }
    }

    /// Publishes the free-page counter; called with the zone lock held after changing `fa`.
    #[inline]
    pub(crate) fn publish_free(&self, fa: &FreeArea) {
        self.nr_free_pages.store(fa.free_pages, Relaxed)
    }

    pub fn zone_type(&self) -> ZoneType {
        self.zone_type
    }
    pub fn name(&self) -> &'static str {
        self.zone_type.name()
    }
    pub fn node_id(&self) -> u8 {
        self.node
    }
    pub fn zone_start_pfn(&self) -> u64 {
        self.zone_start_pfn
    }
    /// Pages from the first to the last present page of the zone, holes included.
    pub fn spanned_pages(&self) -> u64 {
        self.spanned_pages
    }
    /// Usable RAM pages in the zone (reserved ones included).
    pub fn present_pages(&self) -> u64 {
        self.present_pages
    }
    /// Pages given to the buddy allocator.
    pub fn managed_pages(&self) -> u64 {
        self.managed_pages.load(Relaxed)
    }
    /// Linux's `populated_zone`.
    pub fn is_populated(&self) -> bool {
        self.present_pages != 0
    }
    #[inline]
    pub fn min_wmark_pages(&self) -> u64 {
        self.watermark[0].load(Relaxed)
    }
    #[inline]
    pub fn low_wmark_pages(&self) -> u64 {
        self.watermark[1].load(Relaxed)
    }
    #[inline]
    pub fn high_wmark_pages(&self) -> u64 {
        self.watermark[2].load(Relaxed)
    }
    #[inline]
    pub fn promo_wmark_pages(&self) -> u64 {
        self.watermark[3].load(Relaxed)
    }
    /// Sets `[min, low, high, promo]`; callers hold the zone lock (as Linux's
    /// `__setup_per_zone_wmarks` does), readers need none.
    pub(crate) fn set_watermarks(&self, wmarks: [u64; 4]) {
        for (w, v) in self.watermark.iter().zip(wmarks) {
            w.store(v, Relaxed);
        }
    }
    /// Pages this zone keeps back from allocations that could have used zone `idx`
    /// (`idx` in `0..NR_LOWMEM_RESERVE`; the last entry is `ZONE_MOVABLE`).
    pub fn lowmem_reserve(&self) -> [u64; NR_LOWMEM_RESERVE] {
        self.lowmem_reserve
    }
    /// Free pages in the buddy lists now (Linux's `NR_FREE_PAGES`; no lock). Pages on the
    /// per-CPU lists are not included, as on Linux.
    #[inline]
    pub fn free_pages(&self) -> u64 {
        self.nr_free_pages.load(Relaxed)
    }
    /// A consistent copy of the free counters (one lock hold).
    pub fn free_area_snapshot(&self) -> FreeArea {
        *self.free_area.lock()
    }
}

/// Linux's `int_sqrt`: floor of the square root.
pub fn int_sqrt(x: u64) -> u64 {
    if x < 2 {
        return x;
    }
    // Bit-by-bit method, as lib/math/int_sqrt.c.
    let mut m: u64 = 1 << ((63 - x.leading_zeros()) & !1);
    let mut y = 0u64;
    let mut x = x;
    while m != 0 {
        let b = y + m;
        y >>= 1;
        if x >= b {
            x -= b;
            y += m;
        }
        m >>= 2;
    }
    y
}

/// Linux's `mult_frac(x, n, d)` = x * n / d without overflowing the intermediate.
pub const fn mult_frac(x: u64, n: u64, d: u64) -> u64 {
    (x / d) * n + (x % d) * n / d
}

/// `init_per_zone_wmark_min`: `min_free_kbytes = clamp(int_sqrt(lowmem_kbytes * 16), 128, 262144)`.
pub fn min_free_kbytes(lowmem_pages: u64) -> u64 {
    let lowmem_kbytes = lowmem_pages * (1 << (PAGE_SHIFT - 10));
    int_sqrt(lowmem_kbytes * 16).clamp(128, 262144)
}

/// `__setup_per_zone_wmarks`: `[min, low, high, promo]` of a zone with `managed` pages, given
/// `min_free_kbytes` and the managed pages of all (non-highmem, non-movable) zones.
pub fn zone_watermarks(min_free_kbytes: u64, managed: u64, lowmem_pages: u64) -> [u64; 4] {
    if lowmem_pages == 0 {
        return [0; 4];
    }
    let pages_min = min_free_kbytes >> (PAGE_SHIFT - 10);
    let min = pages_min * managed / lowmem_pages;
    let tmp = (min >> 2).max(mult_frac(managed, WATERMARK_SCALE_FACTOR, 10000));
    [min, min + tmp, min + 2 * tmp, min + 3 * tmp]
}

/// `setup_per_zone_lowmem_reserve`: `reserve[i][j]` for zones `i < j` is the managed pages of
/// zones `i+1..=j` divided by `sysctl_lowmem_reserve_ratio[i]`; 0 when the ratio is 0 or zone `i`
/// has no managed pages, and 0 for `j <= i`.
pub fn lowmem_reserves(managed: [u64; MAX_NR_ZONES]) -> [[u64; NR_LOWMEM_RESERVE]; MAX_NR_ZONES] {
    let managed_of = |j: usize| if j < MAX_NR_ZONES { managed[j] } else { 0 };
    let mut out = [[0; NR_LOWMEM_RESERVE]; MAX_NR_ZONES];
    for i in 0..MAX_NR_ZONES {
        let ratio = LOWMEM_RESERVE_RATIO[i];
        let clear = ratio == 0 || managed[i] == 0;
        let mut upper = 0;
        for (j, reserve) in out[i].iter_mut().enumerate().skip(i + 1) {
            upper += managed_of(j);
            *reserve = if clear { 0 } else { upper / ratio };
        }
    }
    out
}

/// `calculate_totalreserve_pages`: per zone, max lowmem_reserve (of zones at or above it) plus
/// the high watermark, capped at the zone's managed pages; summed.
pub fn totalreserve_pages(zones: &[Zone]) -> u64 {
    zones
        .iter()
        .map(|z| {
            let i = z.zone_type as usize;
            let max = z.lowmem_reserve[i..].iter().copied().max().unwrap_or(0);
            (max + z.high_wmark_pages()).min(z.managed_pages())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_sqrt_is_floor_sqrt() {
        for x in [0u64, 1, 2, 3, 4, 15, 16, 17, 1 << 40, (1 << 40) - 1, u64::MAX] {
            let r = int_sqrt(x);
            assert!(r.checked_mul(r).is_some_and(|v| v <= x), "{x}");
            assert!((r + 1).checked_mul(r + 1).is_none_or(|v| v > x), "{x}");
        }
    }

    #[test]
    fn watermarks_match_linux_for_a_1gib_machine() {
        // Worked example: QEMU -m 1G. DMA 3977 managed, DMA32 ~ 250000 managed.
        let managed = [3977u64, 250_000, 0];
        let lowmem: u64 = managed.iter().sum();
        let mfk = min_free_kbytes(lowmem);
        // int_sqrt(253977 * 4 * 16) = int_sqrt(16254528) = 4031
        assert_eq!(mfk, 4031);
        let pages_min = 4031 >> 2; // 1007
        let dma = zone_watermarks(mfk, managed[0], lowmem);
        let min = pages_min * 3977 / lowmem; // 15
        let tmp = (min / 4).max(3977 * 10 / 10000); // max(3, 3)
        assert_eq!(dma, [min, min + tmp, min + 2 * tmp, min + 3 * tmp]);
        assert_eq!(dma[0], 15);
        let dma32 = zone_watermarks(mfk, managed[1], lowmem);
        assert_eq!(dma32[0], 1007 * 250_000 / 253_977);
        assert_eq!(dma32[1] - dma32[0], (dma32[0] / 4).max(250));
        // Small machines are clamped to 128 kB.
        assert_eq!(min_free_kbytes(100), 128);
        assert_eq!(min_free_kbytes(1 << 40), 262144);
    }

    #[test]
    fn lowmem_reserve_matches_linux() {
        let r = lowmem_reserves([3977, 250_000, 1_000_000]);
        assert_eq!(r[0], [0, 250_000 / 256, 1_250_000 / 256, 1_250_000 / 256]);
        assert_eq!(r[1], [0, 0, 1_000_000 / 256, 1_000_000 / 256]);
        assert_eq!(r[2], [0, 0, 0, 0]);
        // An empty zone reserves nothing.
        let r = lowmem_reserves([0, 10_000, 5_000]);
        assert_eq!(r[0], [0; 4]);
        assert_eq!(r[1], [0, 0, 5_000 / 256, 5_000 / 256]);
    }

    #[test]
    fn zone_of_pfn_uses_limits() {
        let l = ZoneLimits::X86_64;
        assert_eq!(l.zone_of_pfn(0), ZoneType::Dma);
        assert_eq!(l.zone_of_pfn((16 << 20 >> 12) - 1), ZoneType::Dma);
        assert_eq!(l.zone_of_pfn(16 << 20 >> 12), ZoneType::Dma32);
        assert_eq!(l.zone_of_pfn((4u64 << 30 >> 12) - 1), ZoneType::Dma32);
        assert_eq!(l.zone_of_pfn(4u64 << 30 >> 12), ZoneType::Normal);
    }
}
