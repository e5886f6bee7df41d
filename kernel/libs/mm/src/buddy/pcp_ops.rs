//! The per-CPU lists' operations on a [`Node`]: entering the running CPU's lists, refill
//! (`rmqueue_bulk`), spill (`free_pcppages_bulk`), the free-side tuning
//! (`free_unref_page_commit`'s slow half) and the drains. Configuration, reports and the
//! consistency check are in `pcp_config.rs`. See [`super::pcp`].

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::pcp::{decay_pcp_high, nr_pcp_alloc, nr_pcp_free, nr_pcp_high, PcpGuard, PcpRef, NR_PCP_LISTS};
use super::{CpuId, Node};
use crate::cpus::{self, on_each_cpu};
use crate::page::PageState;
use crate::zone::Zone;

impl Node {
    /// The lists of `cpu` in `zone`, entered with interrupts off. `cpu` must be the running CPU
    /// (the contract of every `*_cpu` function; see [`super::pcp`]): checked in kernel debug
    /// builds, and in unit tests inside a cross-CPU call (where the thread runs "as" a CPU).
    #[inline(always)]
    pub(super) fn pcp_enter<'z>(&self, zone: &'z Zone, cpu: CpuId) -> PcpGuard<'z> {
        #[cfg(test)]
        if let Some(me) = cpus::host::current() {
            assert_eq!(me, cpu, "CPU {} entered the per-CPU lists of CPU {}", me.index(), cpu.index());
        }
        #[cfg(all(target_arch = "x86_64", target_os = "none", debug_assertions))]
        debug_assert_eq!(cpu, cpus::this_cpu(), "per-CPU lists entered from another CPU");
        zone.pcp[cpu.index()].enter()
    }

    /// Refills the empty `order` list with `nr_pcp_alloc()` blocks of that order from the
    /// zone's buddy lists (`rmqueue_bulk`), under the zone lock. Returns the blocks added (0 when
    /// the zone has no block of that order or larger).
    #[inline(never)]
    pub(super) fn pcp_refill(&self, zone: &Zone, mut pcp: PcpRef<'_>, order: u32) -> u32 {
        let want = nr_pcp_alloc(&mut pcp, order, zone.below_high.load(Relaxed));
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
    pub(super) fn pcp_spill(&self, zone: &Zone, mut pcp: PcpRef<'_>, nr: u32, pindex: usize) {
        let mut count = nr.min(pcp.count()) as i64;
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
                if !pcp.lists()[pindex].is_empty() {
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
    pub(super) fn pcp_commit_slow(&self, zone: &Zone, mut pcp: PcpRef<'_>, order: u32, free_high: bool) {
        let batch = pcp.batch();
        let high = nr_pcp_high(&mut pcp, batch, free_high, zone.below_high.load(Relaxed));
        if pcp.count() >= high {
            let nr = nr_pcp_free(&mut pcp, batch, high, free_high);
            self.pcp_spill(zone, pcp.reborrow(), nr, order as usize);
        }
    }

    /// Empties the lists of the running CPU `cpu` in `zone` (Linux's `drain_pages_zone`).
    /// Returns the pages given back.
    pub(super) fn drain_zone_local(&self, zone: &Zone, cpu: CpuId) -> u64 {
        let mut pcp = self.pcp_enter(zone, cpu);
        let count = pcp.count();
        self.pcp_spill(zone, pcp.reborrow(), count, 0);
        count as u64
    }

    /// Empties the lists of the running CPU `cpu` in every zone (Linux's `drain_local_pages`).
    pub fn drain_local_pages(&self, cpu: CpuId) -> u64 {
        self.zones.iter().map(|z| self.drain_zone_local(z, cpu)).sum()
    }

    /// Empties `zone`'s lists (`None`: every zone's) on every CPU, each CPU its own, through a
    /// cross-CPU call (Linux's `drain_all_pages(zone)`); where that call cannot be made, only
    /// the running CPU `cpu`'s. Returns the pages given back.
    ///
    /// The caller must hold no lock a CPU may spin on with interrupts off (see
    /// [`crate::cpus::on_each_cpu_mask`]): a CPU spinning on it could not take the call, and the
    /// caller would wait for it forever. Every allocator lock turns interrupts off, which the
    /// kernel's hook detects and refuses, so the only case left to the caller is a plain
    /// spinlock: the allocation paths drain every CPU only for requests that may block.
    pub(super) fn drain_all_zone(&self, zone: Option<&Zone>, cpu: CpuId) -> u64 {
        let drained = AtomicU64::new(0);
        let each = |c: CpuId| {
            let n = match zone {
                Some(z) => self.drain_zone_local(z, c),
                None => self.drain_local_pages(c),
            };
            drained.fetch_add(n, Relaxed);
        };
        if on_each_cpu(&each) {
            return drained.into_inner();
        }
        each(cpu);
        drained.into_inner()
    }

    /// The drains of the allocation paths (a zone below its watermark, the retry after a
    /// failure everywhere): `zone`'s lists (`None`: every zone's). Other CPUs' lists are drained,
    /// by those CPUs, only when the request may block (its caller holds no spinlock, so the
    /// cross-CPU call cannot deadlock) and their counters show pages (no IPIs for nothing);
    /// otherwise only the running CPU `cpu`'s, as Linux before 5.19 did.
    pub(super) fn drain_for_retry(&self, zone: Option<&Zone>, cpu: CpuId, may_block: bool) -> u64 {
        let others = |z: &Zone| z.pcp.iter().enumerate().any(|(c, p)| c != cpu.index() && p.count() != 0);
        let remote = may_block
            && match zone {
                Some(z) => others(z),
                None => self.zones.iter().any(others),
            };
        match zone {
            _ if remote => self.drain_all_zone(zone, cpu),
            Some(z) => self.drain_zone_local(z, cpu),
            None => self.drain_local_pages(cpu),
        }
    }

    /// Gives every page on every per-CPU list of every zone back to the buddy lists (Linux's
    /// `drain_all_pages(NULL)`): each CPU drains its own lists in a cross-CPU call
    /// ([`crate::cpus::on_each_cpu`]; the caller must hold no spinlock, see there). Where no such
    /// call can be made (interrupts off, an interrupt handler), only the running CPU's lists are
    /// drained. Returns the number of pages drained. Afterwards the buddy lists are exactly what
    /// they would be without per-CPU lists (as far as merging goes), which is what tests
    /// comparing free-list snapshots need.
    pub fn drain_pages(&self) -> u64 {
        self.drain_all_zone(None, cpus::this_cpu())
    }

    /// Linux 6.12's `decay_pcp_high` on every CPU's lists of every zone, each CPU its own in a
    /// cross-CPU call, or only the running CPU's where none can be made (what the vmstat worker
    /// does each second on each CPU; this kernel has none, see [`super::pcp`]). Returns the pages
    /// given back.
    pub fn decay_pcp_high_all(&self) -> u64 {
        let given = AtomicU64::new(0);
        let each = |cpu: CpuId| {
            for zone in &self.zones {
                let mut pcp = self.pcp_enter(zone, cpu);
                let to_drain = decay_pcp_high(&mut pcp);
                if to_drain > 0 {
                    let before = pcp.count();
                    self.pcp_spill(zone, pcp.reborrow(), to_drain, 0);
                    given.fetch_add((before - pcp.count()) as u64, Relaxed);
                }
            }
        };
        if !on_each_cpu(&each) {
            each(cpus::this_cpu());
        }
        given.into_inner()
    }
}
