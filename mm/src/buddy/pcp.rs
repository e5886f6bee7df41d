//! Per-CPU page lists (Linux's `struct per_cpu_pages`, "pcp"): the order-0 fast path.
//!
//! Every zone has one list per CPU ([`NR_CPUS`] slots) of free order-0 pages, linked through the
//! descriptors' `next`/`prev` as indices, with `count`, `high` and `batch`:
//! - allocation takes the list's first page (`rmqueue_pcplist`); an empty list is first refilled
//!   with `batch` pages from the buddy lists under the zone lock (`rmqueue_bulk`, added at the
//!   tail);
//! - freeing pushes the page at the head (`free_unref_page`, hot pages are reused first); when
//!   `count` exceeds `high`, `batch` pages from the tail (the coldest) go back to the buddy lists,
//!   merging as usual (`free_pcppages_bulk`).
//!
//! So a steady alloc/free pair touches only the list: no split, no merge, no zone lock.
//!
//! The watermark is checked (on the lock-free free counter) before each order-0 allocation,
//! not for each page of a refill: as on Linux, a refill may take the zone up to `batch - 1`
//! pages below the watermark it passed. A zone found below its watermark while it has pages on
//! per-CPU lists gives them back and is checked again before the zonelist falls back to a lower
//! zone; an allocation that fails everywhere drains all lists (`drain_all_pages`) and retries
//! once, so pages on lists never cause an `OutOfMemory`.
//!
//! Pages on a list are in state [`PageState::PcpFree`]: free (a second free is a double free),
//! never merged with buddies, and, as on Linux, not counted in the zone's free pages
//! (`NR_FREE_PAGES`) nor in `/proc/buddyinfo`: both stay equal to `MemFree`, and the watermark
//! check does not see them. `/proc/zoneinfo` shows them per CPU under "pagesets".
//!
//! `batch` is Linux's `zone_batchsize` (about a quarter of managed/1024, at most 256/4, rounded
//! to `2^n - 1` so that consecutive batches do not hit the same cache colours), at least 1.
//! `high` is `6 * batch`, the classic `pageset_set_batch` choice of Linux before 5.14 (newer
//! kernels derive it from the low watermark and the CPU count; with one CPU the classic value
//! keeps the lists small and predictable).
//!
//! Locking: each list has its own [`IrqSpinLock`]. The lock disables interrupts (an interrupt
//! handler allocating with `GFP_ATOMIC` on the same CPU must not find the list half-updated, nor
//! spin on a lock its own CPU holds), and being a real lock it also lets any CPU drain another
//! CPU's list (`drain_all_pages`) without IPIs. Uncontended it costs one atomic exchange per
//! pair of operations; a cheaper "interrupts off + this CPU's cell" scheme would need a trusted
//! current-CPU id, which the callers do not have yet (see [`Node::alloc_pages_cpu`]).
//! Lock order: a pcp lock, then the zone lock; never the reverse.

use core::fmt;
use core::sync::atomic::Ordering::Relaxed;

use super::Node;
use crate::addr::Pfn;
use crate::mem_map::MemMap;
use crate::page::{PageState, NO_PAGE};
use crate::zone::{Zone, ZoneType};

/// CPU slots per zone (the project-wide [`crate::NR_CPUS`]). The caller of
/// [`Node::alloc_pages_cpu`]/[`Node::free_pages_cpu`] names its CPU; the plain
/// [`Node::alloc_pages`]/[`Node::free_pages`] use CPU 0. Any index below `NR_CPUS` is correct
/// from any CPU: the lists are locked.
pub use crate::cpus::NR_CPUS;

/// Linux's `zone_batchsize` (always at least 1).
pub fn zone_batchsize(managed_pages: u64) -> u32 {
    // ~1/1000th of the zone, at most 1 MiB of pages, then a quarter of that.
    let mut batch = (managed_pages >> 10).min((1 << 20) >> crate::addr::PAGE_SHIFT) / 4;
    batch = batch.max(1);
    // rounddown_pow_of_two(batch * 1.5) - 1
    let x = batch + batch / 2;
    let pow = 1u64 << (63 - x.leading_zeros());
    ((pow - 1) as u32).max(1)
}

/// `high` for a given `batch` (see the module documentation).
pub const fn pcp_high(batch: u32) -> u32 {
    6 * batch
}

/// One CPU's list of one zone (Linux's `struct per_cpu_pages`), under its own lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerCpuPages {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    /// Pages on the list.
    pub count: u32,
    /// Above this many pages, `batch` pages go back to the buddy lists.
    pub high: u32,
    /// Pages moved to or from the buddy lists at a time.
    pub batch: u32,
}

impl PerCpuPages {
    pub(crate) const fn new() -> PerCpuPages {
        PerCpuPages { head: NO_PAGE, tail: NO_PAGE, count: 0, high: 0, batch: 1 }
    }

    /// Pushes page `idx` at the head (hot end).
    #[inline]
    pub(crate) fn push_head(&mut self, mm: &MemMap, idx: u32) {
        // SAFETY: `idx` and the list entries are valid descriptor indices (they come from
        // `pfn_to_index` or the buddy lists).
        let page = unsafe { mm.page_at_unchecked(idx) };
        page.next.store(self.head, Relaxed);
        page.prev.store(NO_PAGE, Relaxed);
        if self.head == NO_PAGE {
            self.tail = idx;
        } else {
            // SAFETY: list entries are valid indices.
            unsafe { mm.page_at_unchecked(self.head) }.prev.store(idx, Relaxed);
        }
        self.head = idx;
        self.count += 1;
    }

    /// Appends page `idx` at the tail (cold end).
    #[inline]
    pub(crate) fn push_tail(&mut self, mm: &MemMap, idx: u32) {
        // SAFETY: as in `push_head`.
        let page = unsafe { mm.page_at_unchecked(idx) };
        page.next.store(NO_PAGE, Relaxed);
        page.prev.store(self.tail, Relaxed);
        if self.tail == NO_PAGE {
            self.head = idx;
        } else {
            // SAFETY: list entries are valid indices.
            unsafe { mm.page_at_unchecked(self.tail) }.next.store(idx, Relaxed);
        }
        self.tail = idx;
        self.count += 1;
    }

    /// Takes the head page.
    #[inline]
    pub(crate) fn pop_head(&mut self, mm: &MemMap) -> Option<u32> {
        let idx = self.head;
        if idx == NO_PAGE {
            return None;
        }
        // SAFETY: list entries are valid indices.
        let next = unsafe { mm.page_at_unchecked(idx) }.next.load(Relaxed);
        self.head = next;
        if next == NO_PAGE {
            self.tail = NO_PAGE;
        } else {
            // SAFETY: list entries are valid indices.
            unsafe { mm.page_at_unchecked(next) }.prev.store(NO_PAGE, Relaxed);
        }
        self.count -= 1;
        Some(idx)
    }

    /// Takes the tail page.
    #[inline]
    pub(crate) fn pop_tail(&mut self, mm: &MemMap) -> Option<u32> {
        let idx = self.tail;
        if idx == NO_PAGE {
            return None;
        }
        // SAFETY: list entries are valid indices.
        let prev = unsafe { mm.page_at_unchecked(idx) }.prev.load(Relaxed);
        self.tail = prev;
        if prev == NO_PAGE {
            self.head = NO_PAGE;
        } else {
            // SAFETY: list entries are valid indices.
            unsafe { mm.page_at_unchecked(prev) }.next.store(NO_PAGE, Relaxed);
        }
        self.count -= 1;
        Some(idx)
    }
}

/// Why [`Node::set_pcp_batch`] refused a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcpConfigError {
    /// `batch` must be at least 1.
    ZeroBatch,
    /// `high` must be at least `batch` (a refill must fit below `high`).
    HighBelowBatch { high: u32, batch: u32 },
}

impl fmt::Display for PcpConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PcpConfigError::ZeroBatch => f.write_str("pcp: batch must be at least 1"),
            PcpConfigError::HighBelowBatch { high, batch } => {
                write!(f, "pcp: high ({high}) must be at least batch ({batch})")
            }
        }
    }
}

impl Node {
    /// Refills an empty list with up to `batch` pages of the zone (`rmqueue_bulk`), under the
    /// zone lock. Returns the pages added (0 when the zone's buddy lists are empty).
    #[inline(never)]
    pub(super) fn pcp_refill(&self, zone: &Zone, pcp: &mut PerCpuPages) -> u32 {
        let mut fa = zone.free_area.lock();
        let mut n = 0;
        while n < pcp.batch {
            let Some(idx) = self.rmqueue(&mut fa, 0) else { break };
            let page = self.desc(idx);
            page.set_order(0);
            page.set_state(PageState::PcpFree);
            pcp.push_tail(&self.mem_map, idx);
            n += 1;
        }
        zone.publish_free(&fa);
        n
    }

    /// Gives `nr` pages from the cold end of the list back to the buddy lists, merging them
    /// (`free_pcppages_bulk`), under the zone lock.
    #[inline(never)]
    pub(super) fn pcp_spill(&self, zone: &Zone, pcp: &mut PerCpuPages, nr: u32) {
        let mut fa = zone.free_area.lock();
        for _ in 0..nr {
            let Some(idx) = pcp.pop_tail(&self.mem_map) else { break };
            let pfn = self.mem_map.index_to_pfn(idx);
            self.free_one_page(&mut fa, pfn, idx, 0, zone.zone_type as u8);
        }
        zone.publish_free(&fa);
    }

    /// Empties every CPU's list of one zone (Linux's `drain_zone_pages` over all CPUs).
    /// Returns the pages given back.
    pub(super) fn drain_zone(&self, zone: &Zone) -> u64 {
        let mut n = 0;
        for slot in &zone.pcp {
            let mut pcp = slot.lock();
            if pcp.count != 0 {
                n += pcp.count as u64;
                let count = pcp.count;
                self.pcp_spill(zone, &mut pcp, count);
            }
        }
        n
    }

    /// Gives every page on every per-CPU list of every zone back to the buddy lists (Linux's
    /// `drain_all_pages(NULL)`). Returns the number of pages drained. Afterwards the buddy lists
    /// are exactly what they would be without per-CPU lists (as far as merging goes), which is
    /// what tests comparing free-list snapshots need.
    pub fn drain_pages(&self) -> u64 {
        self.zones.iter().map(|z| self.drain_zone(z)).sum()
    }

    /// Pages on the per-CPU lists of zone `zt`, all CPUs.
    pub fn pcp_pages(&self, zt: ZoneType) -> u64 {
        self.zones[zt as usize].pcp.iter().map(|p| p.lock().count as u64).sum()
    }

    /// A copy of the list header of `cpu` in zone `zt` (`None` for `cpu >= NR_CPUS`).
    pub fn pcp_info(&self, zt: ZoneType, cpu: usize) -> Option<PerCpuPages> {
        self.zones[zt as usize].pcp.get(cpu).map(|p| *p.lock())
    }

    /// Calls `f(pfn)` for each page on the per-CPU lists of zone `zt` (all CPUs, head to tail),
    /// under each list's lock: `f` must not allocate or free.
    pub fn for_each_pcp_page(&self, zt: ZoneType, mut f: impl FnMut(usize, Pfn)) {
        for (cpu, slot) in self.zones[zt as usize].pcp.iter().enumerate() {
            let pcp = slot.lock();
            let mut idx = pcp.head;
            while idx != NO_PAGE {
                f(cpu, self.mem_map.index_to_pfn(idx));
                idx = self.mem_map.page_at(idx).next.load(Relaxed);
            }
        }
    }

    /// Sets `batch` and `high` of every CPU's list of zone `zt` (Linux sets them through
    /// `percpu_pagelist_high_fraction`; tests use this to get batches larger than their small
    /// zones would). The lists are drained first so that `count <= high` holds.
    pub fn set_pcp_batch(&self, zt: ZoneType, batch: u32, high: u32) -> Result<(), PcpConfigError> {
        if batch == 0 {
            return Err(PcpConfigError::ZeroBatch);
        }
        if high < batch {
            return Err(PcpConfigError::HighBelowBatch { high, batch });
        }
        let zone = &self.zones[zt as usize];
        for slot in &zone.pcp {
            let mut pcp = slot.lock();
            let count = pcp.count;
            self.pcp_spill(zone, &mut pcp, count);
            pcp.batch = batch;
            pcp.high = high;
        }
        Ok(())
    }

    /// Checks the per-CPU lists of every zone: links, counts, and that every entry is a
    /// `PcpFree` order-0 page of the zone. Part of [`Node::check_free_lists`].
    pub(super) fn check_pcp_lists(&self) -> Result<(), &'static str> {
        for (zi, zone) in self.zones.iter().enumerate() {
            for slot in &zone.pcp {
                let pcp = slot.lock();
                let (mut n, mut prev, mut idx) = (0u64, NO_PAGE, pcp.head);
                while idx != NO_PAGE {
                    let p = self.mem_map.page_at(idx);
                    if p.prev.load(Relaxed) != prev {
                        return Err("pcp list: broken prev link");
                    }
                    if p.state() != PageState::PcpFree || p.order() != 0 {
                        return Err("pcp list: entry is not a PcpFree order-0 page");
                    }
                    if p.zone() as usize != zi {
                        return Err("pcp list: entry of another zone");
                    }
                    n += 1;
                    if n > self.mem_map.nr_pages() as u64 {
                        return Err("pcp list: cycle");
                    }
                    prev = idx;
                    idx = p.next.load(Relaxed);
                }
                if prev != pcp.tail {
                    return Err("pcp list: tail does not match the list");
                }
                if n != pcp.count as u64 {
                    return Err("pcp list: count does not match the list");
                }
                if pcp.count > pcp.high {
                    return Err("pcp list: count above high");
                }
            }
        }
        Ok(())
    }
}
