//! The zoned buddy page allocator (Linux's `mm/page_alloc.c`).
//!
//! A [`Node`] owns the page descriptors of its RAM ([`MemMap`]) and its zones. Each zone keeps
//! one intrusive doubly linked free list per order (`0..=MAX_PAGE_ORDER`), linked through the
//! descriptors' `next`/`prev` as 32-bit descriptor indices, behind the zone's own
//! [`IrqSpinLock`]; so `alloc_pages`/`free_pages` take `&self` and `Node` is `Sync`.
//!
//! Descriptor states (the invariant everything here relies on):
//! - the head of a free block is `Buddy` with its order; every other page of it is `FreeTail`;
//! - the head of an allocated block is `Allocated` (or the state an upper layer set) with its
//!   order; its other pages keep `FreeTail` (nobody writes tail descriptors on the fast paths);
//! - pages never handed out (holes, memblock reservations) are `Reserved`.
//!
//! Blocks of orders 0..=3 (`PAGE_ALLOC_COSTLY_ORDER`) go through per-CPU lists first (see
//! [`pcp`]): a steady alloc/free pair neither splits nor merges. Blocks on those lists are
//! `PcpFree` and not counted as free.
//!
//! Allocation walks the zonelist from the highest zone the GFP flags allow down to DMA,
//! checking each zone's `min` watermark as `__zone_watermark_ok` does; it splits a larger block
//! if needed (`expand`). Freeing merges with the buddy (`pfn ^ (1 << order)`) while it is a free
//! head of the same order in the same zone. Bad frees are detected before anything changes.
//!
//! Boot sequence in the kernel (no heap needed; `regions` is a stack array converted from the
//! bootloader's memory regions, `offset` the bootloader's physical-memory offset):
//!
//! ```text
//! let mut mb = ::mm::memblock::MemBlock::new(&regions)?;      // Usable regions = memory
//! mb.reserve(start, end, "label")?;                           // anything else to keep
//! // SAFETY: the bootloader maps all physical memory at `offset`; usable RAM is unused.
//! let dm = unsafe { ::mm::DirectMap::new(offset as *mut u8) };
//! // SAFETY: `dm` maps every usable byte and nothing uses memblock's free memory.
//! let node = unsafe { ::mm::buddy::Node::init(&mut mb, dm, ::mm::zone::ZoneLimits::X86_64) }?;
//! ::mm::stats::write_memblock(&mut w, &mb)?;                  // boot report
//! ::mm::stats::write_mem_map(&mut w, node.mem_map())?;
//! NODE.call_once(|| node);                                    // e.g. a `spin::Once<Node>`
//! let pfn = NODE.get().unwrap().alloc_pages(GfpFlags::GFP_KERNEL, 0)?;
//! ```

mod alloc;
mod bulk;
pub use alloc::FreeReservedError;
mod free;
mod page_ref;
pub use page_ref::{exact_order, get_order, PageRefError};
pub mod pcp;
mod pcp_config;
mod pcp_ops;
#[cfg(test)]
mod tests;

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::addr::{DirectMap, Pfn, PAGE_SHIFT, PAGE_SIZE};
use crate::auto_init::AutoInit;
use crate::fault_inject::{FailPageAlloc, FaultConfigError};
use crate::gfp::GfpFlags;
use crate::mem_map::{MemMap, MemMapError, VmemmapBacking, SECTION_SIZE_BITS};
use crate::memblock::MemBlock;
use crate::page::{FreePagesError, Page, PageProvider, PageState, MAX_PAGE_ORDER, NO_PAGE};
use crate::sync::IrqSpinLock;
use crate::zone::{self, FreeArea, Zone, ZoneLimits, ZoneType, MAX_NR_ZONES};
use crate::AllocError;
use pcp::NR_CPUS;

/// A CPU slot of the per-CPU page lists: always below [`NR_CPUS`], so no list lookup can fail.
/// Functions taking one act on that CPU's per-CPU state, which only that CPU touches: the
/// kernel passes the running CPU (`smp_processor_id()`, what [`crate::cpus::this_cpu`] returns
/// and what [`Node::alloc_pages`] and [`Node::free_pages`] use); host tests name any slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuId(usize);

impl CpuId {
    /// CPU 0.
    pub const BOOT: CpuId = CpuId(0);

    /// `None` if `cpu >= NR_CPUS`.
    #[inline]
    pub const fn new(cpu: usize) -> Option<CpuId> {
        if cpu < NR_CPUS {
            Some(CpuId(cpu))
        } else {
            None
        }
    }

    /// A logical id the kernel guarantees to be below [`NR_CPUS`] (its per-CPU blocks are
    /// numbered so): masked rather than checked, so a fast path spends one instruction on it and
    /// no out-of-range value can index past a per-CPU array. Debug builds assert the guarantee.
    #[inline(always)]
    pub const fn from_dense_id(cpu: usize) -> CpuId {
        const { assert!(NR_CPUS.is_power_of_two()) };
        debug_assert!(cpu < NR_CPUS, "CPU id past NR_CPUS");
        CpuId(cpu & (NR_CPUS - 1))
    }

    #[inline]
    pub const fn index(self) -> usize {
        self.0
    }
}

/// Why a node could not be initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeInitError {
    /// memblock was already handed over to a buddy allocator.
    MemBlockRetired,
    /// The zone limits are not page aligned or not ordered (`dma_end <= dma32_end`).
    BadZoneLimits { dma_end: u64, dma32_end: u64 },
    /// The page descriptors could not be set up.
    MemMap(MemMapError),
}

impl fmt::Display for NodeInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NodeInitError::MemBlockRetired => f.write_str("buddy: memblock already retired by another node"),
            NodeInitError::BadZoneLimits { dma_end, dma32_end } => write!(
                f,
                "buddy: bad zone limits (DMA end {dma_end:#x}, DMA32 end {dma32_end:#x}): \
                 must be page aligned with DMA end <= DMA32 end"
            ),
            NodeInitError::MemMap(e) => write!(f, "buddy: {e}"),
        }
    }
}

impl From<MemMapError> for NodeInitError {
    fn from(e: MemMapError) -> Self {
        NodeInitError::MemMap(e)
    }
}

/// Why a `vm.*` setting was refused. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysctlError {
    /// The value is outside what the setting takes (Linux: `-EINVAL` from
    /// `proc_dointvec_minmax`).
    OutOfRange { value: u64, max: u64 },
}

impl fmt::Display for SysctlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SysctlError::OutOfRange { value, max } => {
                write!(f, "{value} is out of range (0 to {max}): Invalid argument")
            }
        }
    }
}

/// Linux's `ALLOC_*` bits that matter here (`mm/internal.h`; set by `gfp_to_alloc_flags`).
#[derive(Clone, Copy)]
struct AllocFlags {
    /// `ALLOC_WMARK_MIN` (0) or `ALLOC_WMARK_LOW` (1): the index of the watermark checked.
    wmark: usize,
    /// `ALLOC_MIN_RESERVE`: `__GFP_HIGH`: may use half of `min`. (`__GFP_NOFAIL` gets it only
    /// in 6.12's last resort, `__alloc_pages_cpuset_fallback(..., ALLOC_MIN_RESERVE, ...)` after
    /// reclaim failed: the kernel's NOFAIL retry adds `__GFP_HIGH` for that.)
    min_reserve: bool,
    /// `ALLOC_NON_BLOCK`: cannot reclaim; together with `min_reserve` (GFP_ATOMIC) may use
    /// another quarter of what is left. Alone (GFP_NOWAIT) it grants nothing.
    non_block: bool,
}

impl AllocFlags {
    /// The first attempt of 6.12's `__alloc_pages_noprof`: `alloc_flags = ALLOC_WMARK_LOW`, no
    /// reserve bits whatever the GFP flags say.
    const FIRST_PASS: AllocFlags = AllocFlags { wmark: 1, min_reserve: false, non_block: false };

    /// `gfp_to_alloc_flags` (6.12, `mm/page_alloc.c`), for the slow path's attempt:
    /// `ALLOC_WMARK_MIN`, `ALLOC_MIN_RESERVE` from `__GFP_HIGH`, `ALLOC_NON_BLOCK` without
    /// `__GFP_DIRECT_RECLAIM` (unless `__GFP_NOMEMALLOC`, which this kernel does not define).
    /// `ALLOC_HIGHATOMIC` (non-blocking, order > 0) only opens the `MIGRATE_HIGHATOMIC`
    /// reserve, which does not exist here (no migrate types), so it is not modelled.
    #[inline]
    fn from_gfp(gfp: GfpFlags) -> AllocFlags {
        AllocFlags {
            wmark: 0,
            min_reserve: gfp.contains(GfpFlags::__GFP_HIGH),
            non_block: !gfp.allows_blocking(),
        }
    }
}

/// Linux's `gfp_zone`: the highest zone the flags allow.
#[inline]
fn gfp_zone(gfp: GfpFlags) -> Result<usize, AllocError> {
    let dma = gfp.contains(GfpFlags::__GFP_DMA);
    let dma32 = gfp.contains(GfpFlags::__GFP_DMA32);
    match (dma, dma32) {
        (false, false) => Ok(ZoneType::Normal as usize),
        (false, true) => Ok(ZoneType::Dma32 as usize),
        (true, false) => Ok(ZoneType::Dma as usize),
        (true, true) => Err(AllocError::Invalid("__GFP_DMA and __GFP_DMA32 together")),
    }
}

/// Memory totals of a node, for consistency checks and reports (in pages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MemTotals {
    pub spanned_pages: u64,
    pub present_pages: u64,
    pub managed_pages: u64,
    /// Sum of the zones' free page counters (`MemFree`).
    pub free_pages: u64,
    /// Sum over zones and orders of `nr_free[order] << order` (what `/proc/buddyinfo` shows).
    pub buddyinfo_pages: u64,
    /// Pages on the per-CPU lists: free, but in neither `free_pages` nor `buddyinfo_pages`
    /// (as on Linux, where they are in neither `MemFree` nor `/proc/buddyinfo`).
    pub pcp_pages: u64,
    /// Linux's `totalreserve_pages`.
    pub totalreserve_pages: u64,
    /// Sum of the zones' low watermarks (used by `MemAvailable`).
    pub low_wmark_pages: u64,
}

/// A memory node: its page descriptors and zones. See the module documentation.
pub struct Node {
    node_id: u8,
    mem_map: MemMap,
    zones: [Zone; MAX_NR_ZONES],
    dm: DirectMap,
    limits: ZoneLimits,
    /// `vm.min_free_kbytes`: computed at init, changed by [`Node::set_min_free_kbytes`].
    min_free_kbytes: AtomicU64,
    /// Linux's `totalreserve_pages`, recomputed with the watermarks.
    totalreserve_pages: AtomicU64,
    /// Serialises watermark updates (Linux's `setup_per_zone_wmarks` lock).
    wmark_lock: IrqSpinLock<()>,
    /// The first populated zone of the Normal zonelist (Normal, else DMA32, else DMA; Normal
    /// if none is), for the order-0 fast path.
    normal_first: u8,
    /// `init_on_alloc=` / `init_on_free=` for this node's pages.
    auto_init: AutoInit,
    /// The `fail_page_alloc` fault-injection attributes of this node.
    fail_page_alloc: FailPageAlloc,
    /// Order-0 allocations skip the per-CPU fast path: `init_on_alloc` is on, or
    /// `fail_page_alloc` may fail order 0. One flag, so the fast path tests one byte.
    order0_slow: AtomicBool,
}

impl Node {
    /// Builds node 0 over memblock's memory: allocates and initialises the page descriptors
    /// from memblock (mapped by `vmemmap`, see [`crate::mem_map`]), gives every unreserved page to the buddy allocator (as the largest aligned
    /// blocks), retires memblock and sets the watermarks and lowmem reserves.
    ///
    /// # Safety
    /// `dm` must map every usable byte of `mb`'s memory for as long as the node is used; that
    /// memory, except memblock's reservations, must be unused: the node owns it from now on.
    pub unsafe fn init(
        mb: &mut MemBlock,
        dm: DirectMap,
        limits: ZoneLimits,
        vmemmap: &mut dyn VmemmapBacking,
    ) -> Result<Node, NodeInitError> {
        // SAFETY: the caller's contract.
        unsafe { Node::init_with_sections(mb, dm, limits, SECTION_SIZE_BITS, 0, vmemmap) }
    }

    /// [`Node::init`] with another section size (host tests use small sections to keep
    /// emulated RAM small) and node id.
    ///
    /// # Safety
    /// As [`Node::init`].
    pub unsafe fn init_with_sections(
        mb: &mut MemBlock,
        dm: DirectMap,
        limits: ZoneLimits,
        section_bits: u32,
        node_id: u8,
        vmemmap: &mut dyn VmemmapBacking,
    ) -> Result<Node, NodeInitError> {
        if mb.is_retired() {
            return Err(NodeInitError::MemBlockRetired);
        }
        let page_mask = PAGE_SIZE as u64 - 1;
        if limits.dma_end > limits.dma32_end || (limits.dma_end | limits.dma32_end) & page_mask != 0 {
            return Err(NodeInitError::BadZoneLimits {
                dma_end: limits.dma_end,
                dma32_end: limits.dma32_end,
            });
        }
        // SAFETY: the caller guarantees `dm` maps the memory and memblock's free memory is unused.
        let mem_map = unsafe {
            MemMap::new(mb, dm, section_bits, node_id, |pfn| limits.zone_of_pfn(pfn) as u8, vmemmap)
        }?;
        let mut zones = ZoneType::ALL.map(|zt| Zone::new(zt, node_id));

        // Spans and present pages from the memory ranges, split at the zone limits.
        let mut span = [(u64::MAX, 0u64); MAX_NR_ZONES];
        for r in mb.memory() {
            for_each_zone_run(&limits, r.start >> PAGE_SHIFT, r.end >> PAGE_SHIFT, |zt, s, e| {
                let z = zt as usize;
                zones[z].present_pages += e - s;
                span[z] = (span[z].0.min(s), span[z].1.max(e));
            });
        }
        for (z, &(s, e)) in zones.iter_mut().zip(span.iter()) {
            if s < e {
                z.zone_start_pfn = s;
                z.spanned_pages = e - s;
            } else {
                // Empty zone: Linux reports its start at the zone's lower limit.
                z.zone_start_pfn = limits.pfn_bounds(z.zone_type).0;
            }
        }

        // Hand every free range to the buddy lists.
        mb.for_each_free_range(|start, end| {
            for_each_zone_run(&limits, start >> PAGE_SHIFT, end >> PAGE_SHIFT, |zt, s, e| {
                let zone = &mut zones[zt as usize];
                *zone.managed_pages.get_mut() += e - s;
                free_range_init(&mem_map, zone.free_area.get_mut(), s, e);
            });
        });
        mb.retire();

        // init_per_zone_wmark_min -> setup_per_zone_wmarks, setup_per_zone_lowmem_reserve.
        let managed = [0, 1, 2].map(|i| zones[i].managed_pages());
        let lowmem: u64 = managed.iter().sum();
        let min_free_kbytes = zone::min_free_kbytes(lowmem);
        let reserves = zone::lowmem_reserves(managed);
        for (i, z) in zones.iter_mut().enumerate() {
            z.set_watermarks(zone::zone_watermarks(min_free_kbytes, z.managed_pages(), lowmem));
            z.lowmem_reserve = reserves[i];
            // The per-CPU lists (Linux 6.12 zone_pcp_init -> zone_set_pageset_high_and_batch).
            let (batch, high_min, high_max) =
                pcp::pageset_high_and_batch(z.managed_pages(), z.low_wmark_pages(), crate::num_online_cpus());
            for slot in &z.pcp {
                slot.pageset_update(batch, high_min, high_max);
            }
            let free = z.free_area.get_mut().free_pages;
            *z.nr_free_pages.get_mut() = free;
        }
        let totalreserve_pages = zone::totalreserve_pages(&zones);
        let normal_first =
            zones.iter().rposition(|z| z.managed_pages() != 0).unwrap_or(ZoneType::Normal as usize) as u8;
        Ok(Node {
            node_id,
            mem_map,
            zones,
            dm,
            limits,
            min_free_kbytes: AtomicU64::new(min_free_kbytes),
            totalreserve_pages: AtomicU64::new(totalreserve_pages),
            wmark_lock: IrqSpinLock::new(()),
            normal_first,
            auto_init: AutoInit::new(),
            fail_page_alloc: FailPageAlloc::new(),
            order0_slow: AtomicBool::new(false),
        })
    }

    /// Takes a block of `order` off the lists of a zone, splitting a larger one if needed.
    #[inline(always)]
    pub(super) fn rmqueue(&self, fa: &mut FreeArea, order: u32) -> Option<u32> {
        let mut cur = order;
        while fa.head[cur as usize] == NO_PAGE {
            cur += 1;
            if cur > MAX_PAGE_ORDER {
                return None;
            }
        }
        let idx = fa.head[cur as usize];
        self.list_del(fa, idx, cur);
        // expand(): give back the upper halves. Indices inside a free block are contiguous:
        // all its sections are present and present sections get consecutive slots.
        while cur > order {
            cur -= 1;
            let half = idx + (1 << cur);
            let p = self.desc(half);
            p.set_order(cur);
            p.set_state(PageState::Buddy);
            self.list_add(fa, half, cur);
        }
        Some(idx)
    }

    /// `__free_one_page`: merge with free buddies, then put the result on its list.
    #[inline(always)]
    pub(super) fn free_one_page(
        &self,
        fa: &mut FreeArea,
        mut pfn: Pfn,
        mut idx: u32,
        mut order: u32,
        zone: u8,
    ) {
        while order < MAX_PAGE_ORDER {
            let buddy_pfn = Pfn(pfn.0 ^ (1 << order));
            // Indices are pfns. Within a section (always, with 128 MiB sections) the buddy has a
            // descriptor; across sections (small test sections) its section may have none.
            let bidx = if order < self.mem_map.section_page_bits() {
                idx ^ (1 << order)
            } else {
                let Some(bidx) = self.mem_map.pfn_to_index(buddy_pfn) else { break };
                bidx
            };
            let buddy = self.desc(bidx);
            if buddy.state() != PageState::Buddy || buddy.order() != order || buddy.zone() != zone {
                break;
            }
            self.list_del(fa, bidx, order);
            if buddy_pfn < pfn {
                self.desc(idx).set_state(PageState::FreeTail);
                pfn = buddy_pfn;
                idx = bidx;
            } else {
                buddy.set_state(PageState::FreeTail);
            }
            order += 1;
        }
        let head = self.desc(idx);
        head.set_order(order);
        head.set_state(PageState::Buddy);
        self.list_add(fa, idx, order);
    }

    /// A descriptor by index, unchecked: every index the allocator handles comes from its
    /// free lists, from `pfn_to_index`, or from block arithmetic inside a free block.
    #[inline]
    pub(super) fn desc(&self, idx: u32) -> &Page {
        debug_assert!((idx as u64) < self.mem_map.end_pfn());
        // SAFETY: indices in the free lists and from `pfn_to_index` are below `end_pfn`; the
        // halves `expand` computes lie inside a free block, whose pages all have descriptors.
        unsafe { self.mem_map.page_at_unchecked(idx) }
    }

    #[inline(always)]
    fn list_add(&self, fa: &mut FreeArea, idx: u32, order: u32) {
        list_add(&self.mem_map, fa, idx, order)
    }

    #[inline(always)]
    fn list_del(&self, fa: &mut FreeArea, idx: u32, order: u32) {
        let page = self.desc(idx);
        let next = page.next.load(core::sync::atomic::Ordering::Relaxed);
        let prev = page.prev.load(core::sync::atomic::Ordering::Relaxed);
        if prev == NO_PAGE {
            fa.head[order as usize] = next;
        } else {
            self.desc(prev).next.store(next, core::sync::atomic::Ordering::Relaxed);
        }
        if next != NO_PAGE {
            self.desc(next).prev.store(prev, core::sync::atomic::Ordering::Relaxed);
        }
        fa.nr_free[order as usize] -= 1;
        fa.free_pages -= 1 << order;
    }

    pub fn node_id(&self) -> u8 {
        self.node_id
    }
    /// The zones, indexed by `ZoneType as usize` (empty zones included).
    pub fn zones(&self) -> &[Zone; MAX_NR_ZONES] {
        &self.zones
    }
    pub fn zone(&self, zt: ZoneType) -> &Zone {
        &self.zones[zt as usize]
    }
    pub fn mem_map(&self) -> &MemMap {
        &self.mem_map
    }
    /// The descriptor of `pfn` (`None` outside the sections that have descriptors).
    #[inline]
    pub fn page(&self, pfn: Pfn) -> Option<&Page> {
        self.mem_map.page(pfn)
    }
    pub fn direct_map(&self) -> DirectMap {
        self.dm
    }
    pub fn limits(&self) -> ZoneLimits {
        self.limits
    }
    /// `vm.min_free_kbytes`: as computed at init (`init_per_zone_wmark_min`) or last set.
    #[inline]
    pub fn min_free_kbytes(&self) -> u64 {
        self.min_free_kbytes.load(Relaxed)
    }
    /// Linux's `totalreserve_pages`.
    #[inline]
    pub fn totalreserve_pages(&self) -> u64 {
        self.totalreserve_pages.load(Relaxed)
    }

    /// Writing `vm.min_free_kbytes` (Linux's `min_free_kbytes_sysctl_handler`): stores the
    /// value and recomputes every zone's watermarks and `totalreserve_pages` from it
    /// ([`Node::setup_per_zone_wmarks`]). Linux takes any value from 0 to `INT_MAX` (the
    /// sysctl is an `int` with minimum 0); larger values are refused with nothing changed.
    /// Free pages are not touched: a watermark above them makes the next allocations fail or
    /// dip into reserves exactly as the new figures say.
    pub fn set_min_free_kbytes(&self, kbytes: u64) -> Result<(), SysctlError> {
        if kbytes > i32::MAX as u64 {
            return Err(SysctlError::OutOfRange { value: kbytes, max: i32::MAX as u64 });
        }
        let _g = self.wmark_lock.lock();
        self.min_free_kbytes.store(kbytes, Relaxed);
        self.setup_per_zone_wmarks_locked();
        Ok(())
    }

    /// Linux's `setup_per_zone_wmarks`: `[min, low, high, promo]` of every zone from
    /// `min_free_kbytes`, each zone's written under its lock, then `totalreserve_pages`. (Linux
    /// then resizes the per-CPU lists from the new low watermark, `zone_pcp_update`, and so
    /// does this.)
    pub fn setup_per_zone_wmarks(&self) {
        let _g = self.wmark_lock.lock();
        self.setup_per_zone_wmarks_locked();
    }

    fn setup_per_zone_wmarks_locked(&self) {
        let kbytes = self.min_free_kbytes.load(Relaxed);
        let lowmem: u64 = self.zones.iter().map(|z| z.managed_pages()).sum();
        for z in &self.zones {
            let _fa = z.free_area.lock();
            z.set_watermarks(zone::zone_watermarks(kbytes, z.managed_pages(), lowmem));
        }
        self.totalreserve_pages.store(zone::totalreserve_pages(&self.zones), Relaxed);
        // Linux 6.12 setup_per_zone_wmarks: "the watermark size have changed so update the pcpu
        // batch and high limits".
        self.zone_pcp_update();
    }

    /// Page totals over the zones (each zone's counters read under its lock).
    pub fn totals(&self) -> MemTotals {
        let mut t = MemTotals { totalreserve_pages: self.totalreserve_pages(), ..MemTotals::default() };
        for z in &self.zones {
            let fa = z.free_area_snapshot();
            t.spanned_pages += z.spanned_pages;
            t.present_pages += z.present_pages;
            t.managed_pages += z.managed_pages();
            t.free_pages += fa.free_pages;
            t.buddyinfo_pages += fa.nr_free.iter().enumerate().map(|(o, n)| n << o).sum::<u64>();
            t.pcp_pages += self.pcp_pages(z.zone_type);
            t.low_wmark_pages += z.low_wmark_pages();
        }
        t
    }

    /// Calls `f(pfn)` for each free block of `order` in zone `zt`, in list order (under the
    /// zone lock: `f` must not allocate or free).
    pub fn for_each_free_block(&self, zt: ZoneType, order: u32, mut f: impl FnMut(Pfn)) {
        let fa = self.zones[zt as usize].free_area.lock();
        let mut idx = fa.head[order as usize];
        while idx != NO_PAGE {
            f(self.mem_map.index_to_pfn(idx));
            idx = self.mem_map.page_at(idx).next.load(core::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Splits `[start, end)` (pfns) at the zone limits.
fn for_each_zone_run(limits: &ZoneLimits, start: u64, end: u64, mut f: impl FnMut(ZoneType, u64, u64)) {
    for zt in ZoneType::ALL {
        let (zs, ze) = limits.pfn_bounds(zt);
        let (s, e) = (start.max(zs), end.min(ze));
        if s < e {
            f(zt, s, e);
        }
    }
}

/// Pushes block `idx` on the list of `order`. `idx` and the list's entries must be valid
/// descriptor indices (they are: they come from `pfn_to_index` and the lists themselves).
#[inline(always)]
fn list_add(mm: &MemMap, fa: &mut FreeArea, idx: u32, order: u32) {
    use core::sync::atomic::Ordering::Relaxed;
    debug_assert!((idx as u64) < mm.end_pfn());
    // SAFETY: valid index (see above).
    let page = unsafe { mm.page_at_unchecked(idx) };
    let head = fa.head[order as usize];
    page.next.store(head, Relaxed);
    page.prev.store(NO_PAGE, Relaxed);
    if head != NO_PAGE {
        // SAFETY: list entries are valid indices.
        unsafe { mm.page_at_unchecked(head) }.prev.store(idx, Relaxed);
    }
    fa.head[order as usize] = idx;
    fa.nr_free[order as usize] += 1;
    fa.free_pages += 1 << order;
}

/// Init: marks the pages of a free range of one zone and frees it as the largest aligned blocks
/// (the fully coalesced form, so no merging is needed). Ranges of different calls never merge:
/// they are separated by reservations, holes or zone limits.
fn free_range_init(mm: &MemMap, fa: &mut FreeArea, start: u64, end: u64) {
    for pfn in start..end {
        if let Some(p) = mm.page(Pfn(pfn)) {
            p.set_state(PageState::FreeTail);
        }
    }
    let mut pfn = start;
    while pfn < end {
        let align = if pfn == 0 { MAX_PAGE_ORDER } else { pfn.trailing_zeros().min(MAX_PAGE_ORDER) };
        let fit = 63 - (end - pfn).leading_zeros();
        let order = align.min(fit);
        let idx = mm.pfn_to_index(Pfn(pfn)).expect("free memory has descriptors");
        let head = mm.page_at(idx);
        head.set_order(order);
        head.set_state(PageState::Buddy);
        list_add(mm, fa, idx, order);
        pfn += 1 << order;
    }
}

/// The free-page part of `__zone_watermark_ok` (6.12, `mm/page_alloc.c`) with the watermark
/// `flags` name (`wmark_pages(z, alloc_flags & ALLOC_WMARK_MASK)`), given the zone's free
/// pages (per-CPU list pages excluded, as on Linux). Callers with `order > 0` also check that a
/// block of that order exists.
#[inline]
fn zone_watermark_ok(z: &Zone, free_pages: u64, order: u32, highest: usize, flags: AllocFlags) -> bool {
    let free = free_pages as i64 - ((1i64 << order) - 1);
    let mut min = z.watermark[flags.wmark].load(core::sync::atomic::Ordering::Relaxed) as i64;
    if flags.min_reserve {
        min -= min / 2;
        if flags.non_block {
            min -= min / 4;
        }
    }
    free > min + z.lowmem_reserve[highest] as i64
}

impl Node {
    /// `init_on_alloc=` / `init_on_free=` of this node.
    pub fn auto_init(&self) -> &AutoInit {
        &self.auto_init
    }

    /// Sets `init_on_alloc=` / `init_on_free=` for this node's pages.
    pub fn set_auto_init(&self, init_on_alloc: bool, init_on_free: bool) {
        self.auto_init.set(init_on_alloc, init_on_free);
        self.refresh_order0_slow();
    }

    /// The `fail_page_alloc` fault-injection attributes (read them; change them with
    /// [`Node::set_fail_page_alloc`] and friends, which also switch the fast path).
    pub fn fail_page_alloc(&self) -> &FailPageAlloc {
        &self.fail_page_alloc
    }

    /// Writes one `fail_page_alloc` attribute by its debugfs name (`probability`, `times`,
    /// `min-order`, `ignore-gfp-wait`, ...).
    pub fn set_fail_page_alloc(&self, attr: &str, value: &str) -> Result<(), FaultConfigError> {
        let r = self.fail_page_alloc.set(attr, value);
        self.refresh_order0_slow();
        r
    }

    /// The `fail_page_alloc=<interval>,<probability>,<space>,<times>` boot parameter.
    pub fn setup_fail_page_alloc(&self, param: &str) -> Result<(), FaultConfigError> {
        let r = self.fail_page_alloc.attr.setup(param);
        self.refresh_order0_slow();
        r
    }

    /// Sets the four main `fail_page_alloc` attributes at once (probability 0 turns it off).
    pub fn configure_fail_page_alloc(
        &self,
        interval: u64,
        probability: u32,
        space: i64,
        times: i64,
    ) -> Result<(), FaultConfigError> {
        let r = self.fail_page_alloc.attr.configure(interval, probability, space, times);
        self.refresh_order0_slow();
        r
    }

    /// Pauses or resumes `fail_page_alloc`, keeping its attributes (the fast path follows).
    pub fn pause_fail_page_alloc(&self, paused: bool) {
        self.fail_page_alloc.attr.set_paused(paused);
        self.refresh_order0_slow();
    }

    fn refresh_order0_slow(&self) {
        let slow = self.auto_init.init_on_alloc() || self.fail_page_alloc.active_at_order0();
        self.order0_slow.store(slow, Relaxed);
    }
}

impl PageProvider for Node {
    fn alloc_pages(&self, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
        Node::alloc_pages(self, gfp, order)
    }
    fn free_pages(&self, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        Node::free_pages(self, pfn, order)
    }
    #[track_caller]
    fn alloc_pages_bulk(&self, gfp: GfpFlags, pages: &mut [Option<Pfn>]) -> usize {
        let caller = core::panic::Location::caller();
        let cpu = crate::cpus::this_cpu();
        self.alloc_pages_bulk_cpu_at(cpu, gfp, pages, caller, |g| self.alloc_pages_cpu_at(cpu, g, 0, caller))
    }
    fn split_page(&self, pfn: Pfn, order: u32) -> Result<(), PageRefError> {
        Node::split_page(self, pfn, order)
    }
    #[inline]
    fn page(&self, pfn: Pfn) -> Option<&Page> {
        Node::page(self, pfn)
    }
    #[inline(always)]
    fn descriptor(&self, pfn: Pfn) -> Option<&Page> {
        self.mem_map.descriptor(pfn)
    }
    #[inline]
    fn direct_map(&self) -> DirectMap {
        self.dm
    }
}
