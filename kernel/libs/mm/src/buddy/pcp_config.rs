//! The per-CPU lists' configuration (`zone_pcp_update`, `percpu_pagelist_high_fraction`),
//! reports and consistency check. Who may read or write what, and from which CPU, is in
//! [`super::pcp`]; each function here says which of the three ways it takes: atomics only,
//! running on each CPU, or the running CPU's lists only.

use core::sync::atomic::Ordering::Relaxed;

use super::pcp::{self, PcpConfigError, PcpInfo, PcpTuning, NR_CPUS};
use super::{CpuId, Node};
use crate::addr::Pfn;
use crate::cpus::{self, on_each_cpu, on_each_cpu_mask};
use crate::page::{PageState, NO_PAGE};
use crate::zone::ZoneType;

impl Node {
    /// Linux 6.12's `zone_pcp_update` for every zone: `batch`, `high_min` (low watermark) and
    /// `high_max` (managed / 8) of every CPU's lists from the zone's figures and
    /// [`crate::num_online_cpus`]. Zones set by hand ([`Node::set_pcp_batch`]) keep their
    /// setting. Called when the watermarks change (under the watermark lock, interrupts off) and
    /// when CPUs come online.
    ///
    /// Writes only the atomics the owners re-read (Linux's `pageset_update`, `WRITE_ONCE` from
    /// any CPU): no cross-CPU call, so it works with interrupts off. `high` is clamped into the
    /// new range here and again by the owner on its next slow path (see [`super::pcp`]).
    pub fn zone_pcp_update(&self) {
        let online = crate::num_online_cpus();
        for zone in &self.zones {
            if zone.pcp_manual.load(Relaxed) {
                continue;
            }
            let (batch, high_min, high_max) =
                pcp::pageset_high_and_batch(zone.managed_pages(), zone.low_wmark_pages(), online);
            for p in &zone.pcp {
                p.pageset_update(batch, high_min, high_max);
            }
        }
    }

    /// Pages on the per-CPU lists of zone `zt`, all CPUs: a sum of the owners' counters (each
    /// exact when read, the sum racy while CPUs allocate, as Linux's `zoneinfo`).
    pub fn pcp_pages(&self, zt: ZoneType) -> u64 {
        self.zones[zt as usize].pcp.iter().map(|p| p.count() as u64).sum()
    }

    /// The figures of `cpu`'s lists in zone `zt` that other CPUs may read (`None` for
    /// `cpu >= NR_CPUS`): the counters only, read where the caller runs.
    pub fn pcp_info(&self, zt: ZoneType, cpu: usize) -> Option<PcpInfo> {
        self.zones[zt as usize].pcp.get(cpu).map(|p| p.info())
    }

    /// The owner-only tuning state of `cpu`'s lists in zone `zt`, read on `cpu` (a cross-CPU
    /// call). `None` for `cpu >= NR_CPUS`, an offline CPU, or where no cross-CPU call can be
    /// made (unless `cpu` is the running CPU). For tests and debugging.
    pub fn pcp_tuning(&self, zt: ZoneType, cpu: usize) -> Option<PcpTuning> {
        let cpu = CpuId::new(cpu)?;
        let zone = &self.zones[zt as usize];
        let out = spin::Mutex::new(None);
        let read = |c: CpuId| *out.lock() = Some(self.pcp_enter(zone, c).tuning());
        if !on_each_cpu_mask(1 << cpu.index(), &read) && cpu == cpus::this_cpu() {
            read(cpu);
        }
        out.into_inner()
    }

    /// Calls `f(cpu, pfn, order)` for each block on the per-CPU lists of zone `zt` (orders 0
    /// to 3, head to tail). Each CPU walks its own lists, one CPU after the other, in a
    /// cross-CPU call: `f` runs on that CPU with interrupts off (in the kernel, in interrupt
    /// context), so it must be short and must not allocate or free. Where no cross-CPU call can
    /// be made, only the running CPU's lists are walked.
    pub fn for_each_pcp_page(&self, zt: ZoneType, f: impl FnMut(usize, Pfn, u32) + Send) {
        let zone = &self.zones[zt as usize];
        let f = spin::Mutex::new(f);
        let walk = |c: CpuId| {
            let f = &mut *f.lock();
            let pcp = self.pcp_enter(zone, c);
            for (order, list) in pcp.lists().iter().enumerate() {
                let mut idx = list.head;
                while idx != NO_PAGE {
                    f(c.index(), self.mem_map.index_to_pfn(idx), order as u32);
                    idx = self.mem_map.page_at(idx).next.load(Relaxed);
                }
            }
        };
        for c in 0..NR_CPUS {
            if !on_each_cpu_mask(1 << c, &walk) {
                walk(cpus::this_cpu());
                return;
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

    /// [`Node::set_pcp_batch`] with auto-tuning between `high_min` and `high_max`. Every CPU
    /// drains its lists and resets its tuning state itself (a cross-CPU call); where no such
    /// call can be made, [`PcpConfigError::NoCrossCpuCall`] with nothing changed.
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
        // Before the CPUs apply it, so that a concurrent `zone_pcp_update` leaves it alone.
        let was_manual = zone.pcp_manual.swap(true, Relaxed);
        let each = |c: CpuId| {
            let mut pcp = self.pcp_enter(zone, c);
            let count = pcp.count();
            self.pcp_spill(zone, pcp.reborrow(), count, 0);
            zone.pcp[c.index()].pageset_update(batch, high_min, high_max);
            pcp.set_high(high_min);
            (pcp.l().free_count, pcp.l().alloc_factor, pcp.l().flags) = (0, 0, 0);
        };
        if !on_each_cpu(&each) {
            zone.pcp_manual.store(was_manual, Relaxed);
            return Err(PcpConfigError::NoCrossCpuCall);
        }
        Ok(())
    }

    /// Checks the per-CPU lists of every zone: links, counts, that every entry is a `PcpFree`
    /// head of its list's order, aligned, of the zone, and that `high` is within
    /// `[high_min, high_max]`. Part of [`Node::check_free_lists`]. Each CPU checks its own lists
    /// in a cross-CPU call (walking another CPU's lists would race with it); where none can be
    /// made, only the running CPU's lists are checked.
    pub(super) fn check_pcp_lists(&self) -> Result<(), &'static str> {
        let first_err = spin::Mutex::new(None);
        let each = |c: CpuId| {
            if let Err(e) = self.check_local_pcp_lists(c) {
                first_err.lock().get_or_insert(e);
            }
        };
        if !on_each_cpu(&each) {
            each(cpus::this_cpu());
        }
        first_err.into_inner().map_or(Ok(()), Err)
    }

    /// [`Node::check_pcp_lists`] of the running CPU `cpu`.
    fn check_local_pcp_lists(&self, cpu: CpuId) -> Result<(), &'static str> {
        for (zi, zone) in self.zones.iter().enumerate() {
            let pcp = self.pcp_enter(zone, cpu);
            let mut pages = 0u64;
            for (order, list) in pcp.lists().iter().enumerate() {
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
            if pages != pcp.count() as u64 {
                return Err("pcp list: count does not match the lists");
            }
            if pcp.high() < pcp.high_min() || pcp.high() > pcp.high_max() {
                return Err("pcp list: high outside [high_min, high_max]");
            }
        }
        Ok(())
    }
}
