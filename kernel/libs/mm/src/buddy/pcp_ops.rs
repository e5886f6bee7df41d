//! The per-CPU lists' operations on a [`Node`]: refill (`rmqueue_bulk`), spill
//! (`free_pcppages_bulk`), the free-side tuning (`free_unref_page_commit`'s slow half), drains,
//! sizing (`zone_pcp_update`), reports and the consistency check. See [`super::pcp`].

use core::sync::atomic::Ordering::Relaxed;

use super::pcp::{
    self, decay_pcp_high, nr_pcp_alloc, nr_pcp_free, nr_pcp_high, PcpConfigError, PerCpuPages, NR_PCP_LISTS,
};
use super::Node;
use crate::addr::Pfn;
use crate::page::{PageState, NO_PAGE};
use crate::zone::{Zone, ZoneType};

impl Node {
    /// Refills the empty `order` list with `nr_pcp_alloc()` blocks of that order from the
    /// zone's buddy lists (`rmqueue_bulk`), under the zone lock. Returns the blocks added (0 when
    /// the zone has no block of that order or larger).
    #[inline(never)]
    pub(super) fn pcp_refill(&self, zone: &Zone, pcp: &mut PerCpuPages, order: u32) -> u32 {
        let want = nr_pcp_alloc(pcp, order, zone.below_high.load(Relaxed));
        let mut fa = zone.free_area.lock();
        let mut n = 0;
        while n < want {
            let Some(idx) = self.rmqueue(&mut fa, order) else { break };
            let page = self.desc(idx);
            page.set_order(order);
            page.set_state(PageState::PcpFree);
            pcp.push_tail(&self.mem_map, order, idx);
            n += 1;
        }
        // ZONE_BELOW_HIGH, set where Linux's get_page_from_freelist would have seen it.
        if fa.free_pages < zone.high_wmark_pages() {
            zone.below_high.store(true, Relaxed);
        }
        zone.publish_free(&fa);
        n
    }

    /// Gives at least `nr` pages (whole blocks) from the cold ends of the lists back to the
    /// buddy lists, merging them, round-robin over the orders starting with `pindex`
    /// (Linux 6.12's `free_pcppages_bulk`), under the zone lock.
    #[inline(never)]
    pub(super) fn pcp_spill(&self, zone: &Zone, pcp: &mut PerCpuPages, nr: u32, pindex: usize) {
        let mut count = nr.min(pcp.count) as i64;
        if count == 0 {
            return;
        }
        let mut pindex = pindex % NR_PCP_LISTS;
        let mut fa = zone.free_area.lock();
        // Start with `pindex`: `pindex - 1` then `++pindex`, as Linux.
        pindex = (pindex + NR_PCP_LISTS - 1) % NR_PCP_LISTS;
        while count > 0 {
            loop {
                pindex = (pindex + 1) % NR_PCP_LISTS;
                if !pcp.lists[pindex].is_empty() {
                    break;
                }
            }
            let order = pindex as u32;
            while count > 0 {
                let Some(idx) = pcp.pop_tail(&self.mem_map, order) else { break };
                count -= 1 << order;
                let pfn = self.mem_map.index_to_pfn(idx);
                self.free_one_page(&mut fa, pfn, idx, order, zone.zone_type as u8);
            }
        }
        // free_unref_page_commit: clear ZONE_BELOW_HIGH once the zone is above its high mark.
        if zone.below_high.load(Relaxed) && fa.free_pages > zone.high_wmark_pages() {
            zone.below_high.store(false, Relaxed);
        }
        zone.publish_free(&fa);
    }

    /// The part of `free_unref_page_commit` after the block is on the list, out of line: the
    /// caller saw `count >= high`, a zone below its high watermark, or a free of order 1..3 that
    /// follows others (`free_high`). Runs `nr_pcp_high` and spills `nr_pcp_free` pages.
    #[inline(never)]
    pub(super) fn pcp_commit_slow(&self, zone: &Zone, pcp: &mut PerCpuPages, order: u32, free_high: bool) {
        let batch = pcp.batch;
        let high = nr_pcp_high(pcp, batch, free_high, zone.below_high.load(Relaxed));
        if pcp.count >= high {
            let nr = nr_pcp_free(pcp, batch, high, free_high);
            self.pcp_spill(zone, pcp, nr, order as usize);
        }
    }

    /// Empties every CPU's lists of one zone (Linux's `drain_zone_pages` over all CPUs).
    /// Returns the pages given back.
    pub(super) fn drain_zone(&self, zone: &Zone) -> u64 {
        let mut n = 0;
        for slot in &zone.pcp {
            let mut pcp = slot.lock();
            if pcp.count != 0 {
                n += pcp.count as u64;
                let count = pcp.count;
                self.pcp_spill(zone, &mut pcp, count, 0);
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

    /// Linux 6.12's `decay_pcp_high` on every CPU's lists of every zone (what the vmstat
    /// worker does each second; this kernel has none, see [`super::pcp`]). Returns the pages
    /// given back.
    pub fn decay_pcp_high_all(&self) -> u64 {
        let mut n = 0;
        for zone in &self.zones {
            for slot in &zone.pcp {
                let mut pcp = slot.lock();
                let to_drain = decay_pcp_high(&mut pcp);
                if to_drain > 0 {
                    let before = pcp.count;
                    self.pcp_spill(zone, &mut pcp, to_drain, 0);
                    n += (before - pcp.count) as u64;
                }
            }
        }
        n
    }

    /// Linux 6.12's `zone_pcp_update` for every zone: `batch`, `high_min` (low watermark) and
    /// `high_max` (managed / 8) of every CPU's lists from the zone's figures and
    /// [`crate::num_online_cpus`]. Zones set by hand ([`Node::set_pcp_batch`]) keep their
    /// setting. Called when the watermarks change and when CPUs come online.
    pub fn zone_pcp_update(&self) {
        let online = crate::num_online_cpus();
        for zone in &self.zones {
            if zone.pcp_manual.load(Relaxed) {
                continue;
            }
            let (batch, high_min, high_max) =
                pcp::pageset_high_and_batch(zone.managed_pages(), zone.low_wmark_pages(), online);
            for slot in &zone.pcp {
                slot.lock().pageset_update(batch, high_min, high_max);
            }
        }
    }

    /// Pages on the per-CPU lists of zone `zt`, all CPUs.
    pub fn pcp_pages(&self, zt: ZoneType) -> u64 {
        self.zones[zt as usize].pcp.iter().map(|p| p.lock().count as u64).sum()
    }

    /// A copy of the list header of `cpu` in zone `zt` (`None` for `cpu >= NR_CPUS`).
    pub fn pcp_info(&self, zt: ZoneType, cpu: usize) -> Option<PerCpuPages> {
        self.zones[zt as usize].pcp.get(cpu).map(|p| *p.lock())
    }

    /// Calls `f(cpu, pfn, order)` for each block on the per-CPU lists of zone `zt` (all CPUs,
    /// orders 0 to 3, head to tail), under each CPU's lock: `f` must not allocate or free.
    pub fn for_each_pcp_page(&self, zt: ZoneType, mut f: impl FnMut(usize, Pfn, u32)) {
        for (cpu, slot) in self.zones[zt as usize].pcp.iter().enumerate() {
            let pcp = slot.lock();
            for (order, list) in pcp.lists.iter().enumerate() {
                let mut idx = list.head;
                while idx != NO_PAGE {
                    f(cpu, self.mem_map.index_to_pfn(idx), order as u32);
                    idx = self.mem_map.page_at(idx).next.load(Relaxed);
                }
            }
        }
    }

    /// Sets `batch` and a fixed `high` (`high_min == high_max`: no auto-tuning) of every CPU's
    /// lists of zone `zt`, as Linux's `percpu_pagelist_high_fraction` does; later
    /// [`Node::zone_pcp_update`]s keep it. Tests use this to get batches larger than their small
    /// zones would. The lists are drained first.
    pub fn set_pcp_batch(&self, zt: ZoneType, batch: u32, high: u32) -> Result<(), PcpConfigError> {
        self.set_pcp_high_range(zt, batch, high, high)
    }

    /// [`Node::set_pcp_batch`] with auto-tuning between `high_min` and `high_max`.
    pub fn set_pcp_high_range(
        &self,
        zt: ZoneType,
        batch: u32,
        high_min: u32,
        high_max: u32,
    ) -> Result<(), PcpConfigError> {
        if batch == 0 {
            return Err(PcpConfigError::ZeroBatch);
        }
        if high_min < batch {
            return Err(PcpConfigError::HighBelowBatch { high: high_min, batch });
        }
        if high_max < high_min {
            return Err(PcpConfigError::HighMaxBelowHighMin { high_min, high_max });
        }
        let zone = &self.zones[zt as usize];
        zone.pcp_manual.store(true, Relaxed);
        for slot in &zone.pcp {
            let mut pcp = slot.lock();
            let count = pcp.count;
            self.pcp_spill(zone, &mut pcp, count, 0);
            pcp.pageset_update(batch, high_min, high_max);
            pcp.high = high_min;
            (pcp.free_count, pcp.alloc_factor, pcp.flags) = (0, 0, 0);
        }
        Ok(())
    }

    /// Checks the per-CPU lists of every zone: links, counts, that every entry is a `PcpFree`
    /// head of its list's order, aligned, of the zone, and that `high` is within
    /// `[high_min, high_max]`. Part of [`Node::check_free_lists`].
    pub(super) fn check_pcp_lists(&self) -> Result<(), &'static str> {
        for (zi, zone) in self.zones.iter().enumerate() {
            for slot in &zone.pcp {
                let pcp = slot.lock();
                let mut pages = 0u64;
                for (order, list) in pcp.lists.iter().enumerate() {
                    let (mut n, mut prev, mut idx) = (0u64, NO_PAGE, list.head);
                    while idx != NO_PAGE {
                        let p = self.mem_map.page_at(idx);
                        if p.prev.load(Relaxed) != prev {
                            return Err("pcp list: broken prev link");
                        }
                        if p.state() != PageState::PcpFree || p.order() as usize != order {
                            return Err("pcp list: entry is not a PcpFree head of the list's order");
                        }
                        if p.zone() as usize != zi {
                            return Err("pcp list: entry of another zone");
                        }
                        if self.mem_map.index_to_pfn(idx).0 & ((1 << order) - 1) != 0 {
                            return Err("pcp list: misaligned block");
                        }
                        n += 1;
                        if n > self.mem_map.nr_pages() as u64 {
                            return Err("pcp list: cycle");
                        }
                        prev = idx;
                        idx = p.next.load(Relaxed);
                    }
                    if prev != list.tail {
                        return Err("pcp list: tail does not match the list");
                    }
                    pages += n << order;
                }
                if pages != pcp.count as u64 {
                    return Err("pcp list: count does not match the lists");
                }
                if pcp.high < pcp.high_min || pcp.high > pcp.high_max {
                    return Err("pcp list: high outside [high_min, high_max]");
                }
            }
        }
        Ok(())
    }
}
