//! `alloc_pages`/`free_pages`: the inlined order-0 fast paths over the per-CPU lists and the
//! general paths (zonelist walk, watermarks, drain-and-retry, error classification).

use super::pcp::{PAGE_ALLOC_COSTLY_ORDER, PCPF_PREV_FREE_HIGH_ORDER, PCP_BATCH_SCALE_MAX};
use super::{gfp_zone, zone_watermark_ok, AllocFlags, CpuId, Node};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{FreePagesError, PageState, MAX_PAGE_ORDER};
use crate::zone::{Zone, ZoneType};
use crate::AllocError;

use core::sync::atomic::Ordering::Relaxed;

impl Node {
    /// Allocates 2^`order` contiguous frames (Linux's `alloc_pages`) on the running CPU's
    /// per-CPU lists ([`crate::cpus::this_cpu`]). The head descriptor is `Allocated` with the order recorded. Zones are
    /// tried Normal -> DMA32 -> DMA from the highest the flags allow; a zone is used only above
    /// its `min` watermark (reduced for `__GFP_HIGH`/`GFP_ATOMIC`) plus its lowmem reserve
    /// against that highest zone. Order 0 is served from the per-CPU lists.
    #[inline]
    pub fn alloc_pages(&self, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
        self.alloc_pages_cpu(crate::cpus::this_cpu(), gfp, order)
    }

    /// [`Node::alloc_pages`] using the per-CPU lists of `cpu`, which must be the running CPU
    /// (see [`CpuId`]).
    ///
    /// When every zone fails, the per-CPU lists are drained (`drain_all_pages`) and the
    /// zonelist is tried once more, so pages sitting on lists never cause an `OutOfMemory` of a
    /// request that may block. The drain reaches the other CPUs (a cross-CPU call) only for a
    /// request that may block and where such a call can be made; otherwise it drains `cpu`'s
    /// lists alone (see [`super::pcp`]).
    /// `fail_page_alloc` may fail the call; its caller filter sees this function's location
    /// (use [`Node::alloc_pages_cpu_at`] to name the caller).
    #[inline]
    pub fn alloc_pages_cpu(&self, cpu: CpuId, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
        self.alloc_pages_cpu_at(cpu, gfp, order, core::panic::Location::caller())
    }

    /// [`Node::alloc_pages_cpu`] on behalf of the code at `caller`, which `fail_page_alloc`'s
    /// caller filter sees (the kernel's `alloc_pages` passes its `#[track_caller]` location).
    /// Always inlined, as the free side below: left to itself the compiler moved the order-0
    /// paths out of line once this function grew its fault-injection check (smpN order-0 pair
    /// 188 -> 204 instructions).
    #[inline(always)]
    pub fn alloc_pages_cpu_at(
        &self,
        cpu: CpuId,
        gfp: GfpFlags,
        order: u32,
        caller: &'static core::panic::Location<'static>,
    ) -> Result<Pfn, AllocError> {
        if let Some(pfn) = self.alloc_pages_fast(cpu, gfp, order) {
            return Ok(pfn);
        }
        self.alloc_pages_slow(cpu, gfp, order, caller)
    }

    /// The fast path of [`Node::alloc_pages_cpu_at`] alone: order 0 with no zone modifier and
    /// no reserve access, served by the first zone of the Normal zonelist when it is above its
    /// watermark and the list is not empty (exactly what the general path would do then), with
    /// `fail_page_alloc` and `init_on_alloc` sending order 0 elsewhere. `None`: the caller makes
    /// the full call, which starts with the same test. For callers that put everything else
    /// out of line (the kernel's `alloc_pages`, whose fast path then needs no stack frame).
    #[inline(always)]
    pub fn alloc_pages_fast(&self, cpu: CpuId, gfp: GfpFlags, order: u32) -> Option<Pfn> {
        const SLOW: GfpFlags = GfpFlags::__GFP_DMA
            .union(GfpFlags::__GFP_DMA32)
            .union(GfpFlags::__GFP_HIGH)
            .union(GfpFlags::__GFP_ZERO);
        if order == 0 && !gfp.intersects(SLOW) && !self.order0_slow.load(Relaxed) {
            if let Some(idx) = self.rmqueue_pcplist_fast(cpu) {
                return Some(self.mem_map.index_to_pfn(idx));
            }
        }
        None
    }

    /// The fast path of [`Node::alloc_pages_cpu`]: the first populated zone of the Normal
    /// zonelist, the `low` watermark (6.12's first attempt, `ALLOC_WMARK_LOW`) with the Normal
    /// lowmem reserve, a page from the list.
    #[inline]
    fn rmqueue_pcplist_fast(&self, cpu: CpuId) -> Option<u32> {
        let highest = ZoneType::Normal as usize;
        debug_assert!((self.normal_first as usize) < self.zones.len());
        // SAFETY: `normal_first` is set once, by `init`, to a zone index (`rposition` over the
        // zones, or Normal): always in bounds. (Unchecked: the bounds check is two instructions
        // of the order-0 fast path.)
        let zone = unsafe { self.zones.get_unchecked(self.normal_first as usize) };
        if zone.free_pages() <= zone.low_wmark_pages() + zone.lowmem_reserve[highest] {
            return None;
        }
        let mut pcp = self.pcp_enter(zone, cpu);
        // rmqueue_pcplist: an allocation halves the run of frees that scales spills.
        pcp.l().free_count >>= 1;
        let idx = pcp.pop_head(&self.mem_map, 0);
        drop(pcp);
        let idx = idx?;
        // Ours now: on no list. Its order is already 0.
        self.desc(idx).set_state(PageState::Allocated);
        Some(idx)
    }

    /// Everything [`Node::alloc_pages_cpu`]'s fast path does not cover, out of line.
    #[inline(never)]
    fn alloc_pages_slow(
        &self,
        cpu: CpuId,
        gfp: GfpFlags,
        order: u32,
        caller: &'static core::panic::Location<'static>,
    ) -> Result<Pfn, AllocError> {
        self.alloc_pages_general_at(cpu, gfp, order, caller)
    }

    /// [`Node::alloc_pages_cpu_at`] without its fast path ([`Node::alloc_pages_fast`]): for a
    /// caller that tried that first and has its own out-of-line function for the rest (the
    /// kernel's `alloc_pages`), into which this is inlined, so that the rest costs one call.
    #[inline(always)]
    pub fn alloc_pages_general_at(
        &self,
        cpu: CpuId,
        gfp: GfpFlags,
        order: u32,
        caller: &'static core::panic::Location<'static>,
    ) -> Result<Pfn, AllocError> {
        if order > MAX_PAGE_ORDER {
            return Err(AllocError::OrderTooLarge { order });
        }
        // `__GFP_NOFAIL` above order 1 is served as any other request: 6.12 only warns
        // (`__alloc_pages_slowpath`: `WARN_ON_ONCE(order > 1)`), which is the kernel's
        // slow path's business, as the retrying is.
        let highest = gfp_zone(gfp)?;
        // Linux's `prepare_alloc_pages`: before any attempt, so no reclaim or retry follows.
        if self.fail_page_alloc.attr.active() && self.fail_page_alloc.should_fail(gfp, order, caller) {
            return Err(AllocError::FaultInjected { by: "fail_page_alloc" });
        }
        // 6.12's `__alloc_pages_noprof`: a first pass over the zonelist against the `low`
        // watermarks (`ALLOC_WMARK_LOW`), so that every zone is used down to `low` before any
        // goes below it; then `__alloc_pages_slowpath`'s pass with `gfp_to_alloc_flags` (`min`,
        // and the reserves the flags grant). Its `wake_all_kswapds` between them has nothing to
        // wake here (no kswapd), and direct reclaim is the caller's (see the kernel's
        // `alloc_slowpath`); the drain of the per-CPU lists is `__alloc_pages_direct_reclaim`'s
        // `drain_all_pages` before its retry (every CPU's lists for a request that may block,
        // else this CPU's: see `pcp`). One call site, so that the walk is inlined here.
        let may_block = gfp.allows_blocking();
        let mut flags = AllocFlags::FIRST_PASS;
        let mut drained = false;
        let idx = loop {
            if let Some(idx) = self.get_page_from_freelist(cpu, order, highest, flags, may_block) {
                break idx;
            }
            if flags.wmark != 0 {
                flags = AllocFlags::from_gfp(gfp);
                continue;
            }
            if drained || self.drain_for_retry(None, cpu, may_block) == 0 {
                return Err(AllocError::OutOfMemory { order });
            }
            drained = true;
        };
        let pfn = self.mem_map.index_to_pfn(idx);
        if order > 0 && gfp.contains(GfpFlags::__GFP_COMP) {
            // prep_new_page: `if (order && (gfp_flags & __GFP_COMP)) prep_compound_page()`.
            crate::page::prep_compound_page(self, pfn, order);
        }
        if self.auto_init.want_init_on_alloc(gfp) {
            // SAFETY: the block was just taken off the free lists, so it is ours alone, and
            // `dm` maps it (init contract). Zeroed outside the locks to keep them short.
            unsafe { core::ptr::write_bytes(self.dm.pfn_to_virt(pfn), 0, PAGE_SIZE << order) };
        }
        Ok(pfn)
    }

    /// One pass over the zonelist; the index of the `Allocated` head taken, if any.
    /// `may_block`: the request may block (its caller holds no spinlock), so a drain may reach
    /// the other CPUs.
    #[inline(always)]
    fn get_page_from_freelist(
        &self,
        cpu: CpuId,
        order: u32,
        highest: usize,
        flags: AllocFlags,
        may_block: bool,
    ) -> Option<u32> {
        for zone in self.zones[..=highest].iter().rev() {
            if zone.managed_pages() == 0 {
                continue;
            }
            let idx = if order <= PAGE_ALLOC_COSTLY_ORDER {
                self.rmqueue_pcplist(zone, cpu, order, highest, flags, may_block)
            } else {
                self.rmqueue_buddy(zone, order, highest, flags)
            };
            if let Some(idx) = idx {
                return Some(idx);
            }
        }
        None
    }

    /// Orders 0..=3 from the per-CPU lists of `cpu` (Linux 6.12's `rmqueue_pcplist` and
    /// `__rmqueue_pcplist`), the order's list refilled from the buddy lists when empty
    /// (`nr_pcp_alloc` blocks). The watermark is checked first on the lock-free free counter
    /// (`zone_watermark_fast`; for orders above 0 without the free-area walk, as the list may
    /// hold the block).
    ///
    /// If the zone is below its watermark but has pages on per-CPU lists, they are given back
    /// and the check repeated before falling back to a lower zone: otherwise up to
    /// `high` pages per CPU of a higher zone would push allocations into lower zones early,
    /// and lower zones are the scarcer ones. (Linux leaves this to the slow path's
    /// `drain_all_pages`; here it keeps the zonelist order exact. It runs only at the watermark.)
    /// Other CPUs' lists are drained (by those CPUs, a cross-CPU call) only for a request that
    /// may block and when their counters show pages; otherwise only `cpu`'s lists are.
    #[inline]
    fn rmqueue_pcplist(
        &self,
        zone: &Zone,
        cpu: CpuId,
        order: u32,
        highest: usize,
        flags: AllocFlags,
        may_block: bool,
    ) -> Option<u32> {
        if !zone_watermark_ok(zone, zone.free_pages(), order, highest, flags)
            && (self.drain_for_retry(Some(zone), cpu, may_block) == 0
                || !zone_watermark_ok(zone, zone.free_pages(), order, highest, flags))
        {
            return None;
        }
        let mut pcp = self.pcp_enter(zone, cpu);
        pcp.l().free_count >>= 1;
        let idx = match pcp.pop_head(&self.mem_map, order) {
            Some(idx) => idx,
            None => {
                if self.pcp_refill(zone, pcp.reborrow(), order) == 0 {
                    return None;
                }
                pcp.pop_head(&self.mem_map, order)?
            }
        };
        drop(pcp);
        // Ours now: not on any list. Its order is already recorded.
        self.desc(idx).set_state(PageState::Allocated);
        Some(idx)
    }

    /// Orders above `PAGE_ALLOC_COSTLY_ORDER`, straight from the buddy lists under the zone
    /// lock.
    #[inline(always)]
    fn rmqueue_buddy(&self, zone: &Zone, order: u32, highest: usize, flags: AllocFlags) -> Option<u32> {
        let mut fa = zone.free_area.lock();
        if !zone_watermark_ok(zone, fa.free_pages, order, highest, flags)
            || fa.nr_free[order as usize..].iter().all(|&n| n == 0)
        {
            return None;
        }
        let idx = self.rmqueue(&mut fa, order)?;
        let page = self.desc(idx);
        page.set_order(order);
        page.set_state(PageState::Allocated);
        if fa.free_pages < zone.high_wmark_pages() {
            zone.below_high.store(true, Relaxed); // ZONE_BELOW_HIGH (see `pcp`)
        }
        zone.publish_free(&fa);
        Some(idx)
    }

    /// Frees a block from [`Node::alloc_pages`] (Linux's `__free_pages`): orders 0..3 onto the
    /// running CPU's per-CPU lists, larger blocks merged with free buddies. Every misuse is refused with the
    /// allocator unchanged: see [`FreePagesError`].
    #[inline]
    pub fn free_pages(&self, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        self.free_pages_cpu(crate::cpus::this_cpu(), pfn, order)
    }

    /// [`Node::free_pages`] onto the per-CPU list of `cpu`, the running CPU (which need not be
    /// the CPU that allocated the page, as on Linux). A list above `high` gives `batch` pages back.
    #[inline(always)]
    pub fn free_pages_cpu(&self, cpu: CpuId, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        if self.free_pages_fast(cpu, pfn, order) {
            return Ok(());
        }
        self.free_pages_slow(cpu, pfn, order)
    }

    /// The fast path of [`Node::free_pages_cpu`] alone: a managed order-0 `Allocated` page
    /// with no other reference, claimed by one atomic transition (so a double free never gets
    /// past it), onto `cpu`'s list. `false`, with nothing changed: the caller makes the full
    /// call, which classifies everything else, errors included.
    #[inline(always)]
    pub fn free_pages_fast(&self, cpu: CpuId, pfn: Pfn, order: u32) -> bool {
        if order == 0 && !self.auto_init.init_on_free() {
            if let Some(idx) = self.mem_map.pfn_to_index(pfn) {
                let page = self.desc(idx);
                // `counters == 0`: the caller holds the only reference (`put_page_testzero`
                // would reach zero; see `page_ref`).
                if page.order() == 0
                    && page.counters.load(Relaxed) == 0
                    && page.try_set_state(PageState::Allocated, PageState::PcpFree)
                {
                    self.free_unref_page_commit(cpu, &self.zones[page.zone() as usize], idx, 0);
                    return true;
                }
            }
        }
        false
    }

    /// Linux 6.12's `free_unref_page_commit`: pushes a block of order 0..=3 (already
    /// `PcpFree`) onto the lists of `cpu`, counting the run of frees, and, out of line, runs
    /// `nr_pcp_high` and spills `nr_pcp_free` pages when the lists reach `high`. Always inlined:
    /// with order 0 it is the free fast path.
    #[inline(always)]
    fn free_unref_page_commit(&self, cpu: CpuId, zone: &Zone, idx: u32, order: u32) {
        let mut pcp = self.pcp_enter(zone, cpu);
        // A free halves the refill scaling of nr_pcp_alloc.
        pcp.l().alloc_factor >>= 1;
        pcp.push_head(&self.mem_map, order, idx);
        let batch = pcp.batch();
        let mut free_high = false;
        if order != 0 {
            // High-order pages on lists fragment memory: a run of them is spilled at once.
            free_high = pcp.l().free_count >= batch && pcp.l().flags & PCPF_PREV_FREE_HIGH_ORDER != 0;
            pcp.l().flags |= PCPF_PREV_FREE_HIGH_ORDER;
        } else {
            // (Linux tests the bit first to keep the cache line clean; here it is the same line
            // as `count`, so an unconditional store is one branch less.)
            pcp.l().flags &= !PCPF_PREV_FREE_HIGH_ORDER;
        }
        if pcp.l().free_count < batch << PCP_BATCH_SCALE_MAX {
            pcp.l().free_count += 1 << order;
        }
        // `nr_pcp_high` changes nothing and returns `high` unless one of these holds (`high` is
        // kept within [high_min, high_max], up to a configuration change the slow path clamps).
        if pcp.count() >= pcp.high() || free_high || zone.below_high.load(Relaxed) {
            self.pcp_commit_slow(zone, pcp.reborrow(), order, free_high);
        }
    }

    /// Everything [`Node::free_pages_cpu`]'s fast path does not cover, out of line.
    #[inline(never)]
    fn free_pages_slow(&self, cpu: CpuId, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        self.free_pages_general(cpu, pfn, order)
    }

    /// [`Node::free_pages_cpu`] without its fast path ([`Node::free_pages_fast`]), as
    /// [`Node::alloc_pages_general_at`]: inlined into the caller's out-of-line function.
    #[inline(always)]
    pub fn free_pages_general(&self, cpu: CpuId, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        if order > MAX_PAGE_ORDER {
            return Err(FreePagesError::OrderTooLarge { order });
        }
        if pfn.0 & ((1 << order) - 1) != 0 {
            return Err(FreePagesError::Misaligned { pfn, order });
        }
        let idx = self.mem_map.pfn_to_index(pfn).ok_or(FreePagesError::NotManaged { pfn })?;
        let page = self.desc(idx);
        let zone = &self.zones[page.zone() as usize];
        if page.counters.load(Relaxed) != 0 && page.state_is(PageState::Allocated) && page.order() == order {
            // Other references remain (Linux's `__free_pages`: `put_page_testzero` fails).
            return self.free_pages_referenced(cpu, pfn, order);
        }
        if order <= PAGE_ALLOC_COSTLY_ORDER {
            // The order of an `Allocated` head is stable until it is freed, and claiming it is
            // one atomic transition: two CPUs freeing the same block cannot both succeed, even
            // onto different lists.
            if page.order() == order && page.try_set_state(PageState::Allocated, PageState::PcpFree) {
                if order > 0 {
                    self.free_tail_pages_prepare(pfn, order);
                }
                if self.auto_init.init_on_free() {
                    // SAFETY: the claim above made the block ours alone (on no list yet).
                    unsafe { self.kernel_init_pages(pfn, order) };
                }
                self.free_unref_page_commit(cpu, zone, idx, order);
                return Ok(());
            }
            // Classified under the zone lock so that no block is split or merged meanwhile.
            let _fa = zone.free_area.lock();
            return Err(self.classify_bad_free(pfn, page, order));
        }
        if self.auto_init.init_on_free() && page.state() == PageState::Allocated && page.order() == order {
            // Zeroed before the lock (`free_pages_prepare`), once the block looks like the
            // caller's; the check is repeated under the lock below.
            // SAFETY: an `Allocated` head of this order is the caller's block, being freed.
            unsafe { self.kernel_init_pages(pfn, order) };
        }
        let mut fa = zone.free_area.lock();
        // Checked under the lock: two CPUs freeing the same block cannot both succeed.
        if page.state() != PageState::Allocated || page.order() != order {
            return Err(self.classify_bad_free(pfn, page, order));
        }
        self.free_tail_pages_prepare(pfn, order);
        self.free_one_page(&mut fa, pfn, idx, order, page.zone());
        zone.publish_free(&fa);
        Ok(())
    }

    /// Linux's `free_tail_page_prepare` for a block being freed: a compound block's tails lose
    /// their head tags (one descriptor load for a non-compound block). The block is ours.
    #[inline]
    fn free_tail_pages_prepare(&self, pfn: Pfn, order: u32) {
        if self.page(pfn.add(1)).and_then(|t| t.compound_head()) == Some(pfn) {
            crate::page::clear_compound_page(self, pfn, order);
        }
    }

    /// `kernel_init_pages`: zeroes the `2^order` pages at `pfn` (`init_on_free`).
    ///
    /// # Safety
    /// The block is being freed by its owner: nobody else uses it.
    #[cold]
    unsafe fn kernel_init_pages(&self, pfn: Pfn, order: u32) {
        // SAFETY: the caller's contract; `dm` maps managed memory (init contract).
        unsafe { core::ptr::write_bytes(self.dm.pfn_to_virt(pfn), 0, PAGE_SIZE << order) };
    }
}

/// Why [`Node::free_reserved_area`] refused a range. Nothing was given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeReservedError {
    /// The range is empty or not page-aligned.
    BadRange { start: u64, end: u64 },
    /// A frame of the range has no page descriptor (a hole, beyond RAM).
    NotDescribed { pfn: Pfn },
    /// A frame of the range is not reserved (already managed by the allocator).
    NotReserved { pfn: Pfn, state: PageState },
}

impl core::fmt::Display for FreeReservedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            FreeReservedError::BadRange { start, end } => {
                write!(f, "[{start:#x}, {end:#x}) is not a non-empty page-aligned range")
            }
            FreeReservedError::NotDescribed { pfn } => write!(f, "pfn {:#x} has no page descriptor", pfn.0),
            FreeReservedError::NotReserved { pfn, state } => {
                write!(f, "pfn {:#x} is not reserved (it is {state:?})", pfn.0)
            }
        }
    }
}

impl Node {
    /// Linux's `free_reserved_area`: gives the reserved pages of physical `[start, end)` (boot
    /// memory no longer needed, such as the AP trampoline) to the buddy allocator; their zones'
    /// managed pages grow by as much (`adjust_managed_page_count`). Every page is checked first,
    /// so a refusal gives nothing back. Returns the pages freed.
    pub fn free_reserved_area(&self, start: u64, end: u64) -> Result<u64, FreeReservedError> {
        if start >= end || start % PAGE_SIZE as u64 != 0 || end % PAGE_SIZE as u64 != 0 {
            return Err(FreeReservedError::BadRange { start, end });
        }
        let pfns = (start / PAGE_SIZE as u64..end / PAGE_SIZE as u64).map(Pfn);
        for pfn in pfns.clone() {
            let page = self.page(pfn).ok_or(FreeReservedError::NotDescribed { pfn })?;
            if page.state() != PageState::Reserved {
                return Err(FreeReservedError::NotReserved { pfn, state: page.state() });
            }
        }
        let mut freed = 0;
        for pfn in pfns {
            let page = self.page(pfn).expect("checked above");
            page.set_order(0);
            page.set_state(PageState::Allocated);
            self.zones[page.zone() as usize].managed_pages.fetch_add(1, Relaxed);
            self.free_pages(pfn, 0).expect("an allocated order-0 page of managed memory");
            freed += 1;
        }
        Ok(freed)
    }
}
