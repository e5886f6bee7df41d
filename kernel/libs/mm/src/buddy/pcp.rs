//! Per-CPU page lists (Linux's `struct per_cpu_pages`, "pcp"): the fast path for orders
//! `0..=PAGE_ALLOC_COSTLY_ORDER`, with Linux 6.12's sizing and auto-tuning of `high`.
//!
//! Every zone has one [`PerCpuPages`] per CPU ([`NR_CPUS`] slots). As in Linux 6.12, a
//! `per_cpu_pages` holds one list per order up to [`PAGE_ALLOC_COSTLY_ORDER`] (Linux multiplies
//! that by `MIGRATE_PCPTYPES` and adds a THP list; this allocator has no migrate types), each
//! list of free blocks of that order linked through the head descriptors' `next`/`prev`, and
//! `count` counts *pages* over all the lists:
//! - allocation takes the first block of the order's list (`rmqueue_pcplist` /
//!   `__rmqueue_pcplist`); an empty list is refilled under the zone lock with `nr_pcp_alloc()`
//!   blocks of that order (`rmqueue_bulk`, added at the tail);
//! - freeing pushes the block at the head (`free_unref_page_commit`: hot blocks are reused
//!   first); when `count` reaches the `high` that `nr_pcp_high()` returns, `nr_pcp_free()` pages
//!   leave the cold ends of the lists, round-robin over the orders starting with the freed one,
//!   back to the buddy lists, merging as usual (`free_pcppages_bulk`).
//!
//! So a steady alloc/free pair of order 0..3 touches only the list: no split, no merge, no zone
//! lock.
//!
//! ## Sizing (Linux 6.12 `zone_set_pageset_high_and_batch`)
//! - `batch` = [`zone_batchsize`] (about a quarter of managed/1024, at most 256/4, rounded to
//!   `2^n - 1`), at least 1;
//! - `high_min` = [`zone_highsize`] of the zone's **low watermark**: split over the online CPUs,
//!   at least `4 * batch` (so full lists do not wake reclaim early);
//! - `high_max` = [`zone_highsize`] of **managed / 8** (`MIN_PERCPU_PAGELIST_HIGH_FRACTION`),
//!   split and bounded the same way;
//! - `high` starts at `high_min` and moves between the two ([`nr_pcp_high`], [`nr_pcp_alloc`],
//!   [`decay_pcp_high`]). Every change of the watermarks (`setup_per_zone_wmarks`, i.e.
//!   `min_free_kbytes`) or of the online CPUs (`page_alloc_cpu_online`) recomputes the three
//!   (`zone_pcp_update`, [`Node::zone_pcp_update`]). [`Node::set_pcp_batch`] is the
//!   `percpu_pagelist_high_fraction` case: a manual `high`, auto-tuning off
//!   (`high_min == high_max`).
//!
//! ## Auto-tuning (Linux 6.7+, as in 6.12)
//! Implemented as Linux does it:
//! - `free_count` counts pages freed since the last allocation (halved by each allocation,
//!   capped at `batch << PCP_BATCH_SCALE_MAX`); a list at `high` grows `high` to
//!   `free_count + batch` (`nr_pcp_high`), and a spill frees `free_count` pages clamped to
//!   `[batch, high - batch]` (`nr_pcp_free`);
//! - `alloc_factor` doubles the order-0 refill for each refill without a free in between
//!   (`nr_pcp_alloc`, halved on each free), and a refill first raises `high` by the batch;
//! - consecutive frees of orders 1..3 without allocations (`PCPF_PREV_FREE_HIGH_ORDER`) drain
//!   the list and lower `high` (`free_high`: high-order pages on lists fragment memory);
//! - `ZONE_BELOW_HIGH`: while the zone is below its high watermark, frees lower `high` toward
//!   `high_min` and spill down to it. Linux sets the flag in `get_page_from_freelist` on every
//!   allocation; here it is set where the zone lock is held anyway (a refill, an order > 3
//!   allocation, a spill), so that the order-0 fast path reads nothing new, and cleared by a
//!   spill that leaves the zone above its high watermark (as Linux's `free_unref_page_commit`).
//!
//! Not implemented, and why:
//! - [`decay_pcp_high`] is Linux's periodic decay, run by the vmstat worker
//!   (`refresh_cpu_vm_stats`, every second). This kernel has no vmstat worker (nor any
//!   deferred-work thread); the function is here, exact, and [`Node::decay_pcp_high_all`] runs
//!   it on demand (tests, and `drain`-style callers), but nothing runs it periodically, so a
//!   `high` raised by a burst stays up until the zone goes below its high watermark or the
//!   lists are reconfigured;
//! - `ZONE_RECLAIM_ACTIVE` (kswapd is reclaiming): there is no reclaim;
//! - `PCPF_FREE_HIGH_BATCH` (set by `free_unref_folios` when a process exits and frees its
//!   pages in bulk): there is no folio batch freeing, so it is never set, and the `free_high`
//!   test reduces to what it is on Linux without it.
//!
//! ## Everything else
//! The watermark is checked (on the lock-free free counter) before each allocation from a
//! list, not for each block of a refill: as on Linux, a refill may take the zone a batch below
//! the watermark it passed. A zone found below its watermark while it has pages on per-CPU lists
//! gives them back and is checked again before the zonelist falls back to a lower zone; an
//! allocation that fails everywhere drains the lists (`drain_all_pages`) and retries once, so
//! pages on lists never cause an `OutOfMemory` of a request that may block. Both drains reach
//! every CPU's lists (a cross-CPU call) only for requests that may block (`__GFP_DIRECT_RECLAIM`,
//! whose callers hold no spinlock: Linux's `drain_all_pages` is in direct reclaim too) and where
//! the call can be made; otherwise, `GFP_ATOMIC`/`GFP_NOWAIT` or interrupts off, they drain the
//! running CPU's lists only, and the other CPUs' pages stay where they are until those CPUs
//! give them back.
//!
//! Blocks on a list are in state [`PageState::PcpFree`] (their tail pages stay `FreeTail`):
//! free (a second free is a double free), never merged with buddies, and, as on Linux, not
//! counted in the zone's free pages (`NR_FREE_PAGES`) nor in `/proc/buddyinfo`: both stay equal
//! to `MemFree`, and the watermark check does not see them. `/proc/zoneinfo` shows them per CPU
//! under "pagesets" (`count`, `high`, `batch`, `high_min`, `high_max`, as 6.12's
//! `zoneinfo_show_print`).
//!
//! ## Who touches what
//! The lists of CPU `c` are touched only by CPU `c`, with its interrupts off (Linux's
//! `local_lock_irqsave` on `this_cpu_ptr(zone->per_cpu_pageset)`, as before 5.19 made it a
//! spinlock): [`crate::cpus::CpuSlot`], the discipline the slab's per-CPU slots follow too. No
//! lock and no atomic read-modify-write on the fast paths. Interrupts off, because an interrupt
//! handler allocating with `GFP_ATOMIC` on the same CPU must not find a list half-updated. The
//! caller of a `*_cpu` function names the running CPU (the kernel passes `smp_processor_id()`;
//! host tests name any slot, the slot's busy flag standing in for interrupts-off).
//!
//! Per field (see [`PerCpuPages`]): the lists, `free_count`, `alloc_factor` and `flags` are the
//! owner's alone, plain loads and stores. `count`, `high`, `batch`, `high_min` and `high_max` are
//! read by other CPUs (`/proc/zoneinfo`, [`Node::pcp_info`], the totals), so they are atomics
//! used with `Relaxed` loads and stores (a `mov`, as Linux's `READ_ONCE`/`WRITE_ONCE`): `count`
//! is written by the owner only; `batch`, `high_min` and `high_max` by configuration changes on
//! any CPU ([`Node::zone_pcp_update`], under the watermark lock, interrupts off: it cannot make
//! cross-CPU calls), which the owner re-reads on every slow path; `high` by the owner's
//! auto-tuning and by those changes (a clamp into the new range; a lost update between the two
//! is harmless: the owner clamps `high` into `[high_min, high_max]` on each slow path before
//! using it, exactly as Linux's `nr_pcp_high`/`nr_pcp_alloc` do after `pageset_update`).
//!
//! Everything that must change another CPU's lists runs on that CPU through a cross-CPU call
//! ([`crate::cpus::on_each_cpu_mask`], the kernel's IPIs): draining ([`Node::drain_pages`],
//! Linux's `drain_all_pages`), [`Node::decay_pcp_high_all`], [`Node::set_pcp_high_range`], and
//! the readers that walk lists ([`Node::for_each_pcp_page`], the consistency check). Where a
//! cross-CPU call cannot be made (interrupts off, an interrupt handler, a request that may not
//! block, whose caller may hold a spinlock), the drains drain only the running CPU's lists, as
//! Linux before 5.19 did. Lock order: the running CPU's lists, then a zone lock; never the
//! reverse, and no cross-CPU call while either is held.

use crate::cpus::{CpuSlot, CpuSlotGuard};
use crate::mem_map::MemMap;
use crate::page::NO_PAGE;

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// CPU slots per zone (the project-wide [`crate::NR_CPUS`]). The caller of
/// [`Node::alloc_pages_cpu`](super::Node::alloc_pages_cpu) names the running CPU; the plain
/// `alloc_pages`/`free_pages` use [`crate::cpus::this_cpu`].
pub use crate::cpus::NR_CPUS;

/// Linux's `PAGE_ALLOC_COSTLY_ORDER`: the highest order kept on per-CPU lists.
pub const PAGE_ALLOC_COSTLY_ORDER: u32 = 3;

/// Lists per `PerCpuPages`: one per order `0..=PAGE_ALLOC_COSTLY_ORDER` (Linux's
/// `NR_PCP_LISTS` without migrate types and THP).
pub const NR_PCP_LISTS: usize = PAGE_ALLOC_COSTLY_ORDER as usize + 1;

/// Linux's `CONFIG_PCP_BATCH_SCALE_MAX` (default 5): batches scale up to `batch << 5`.
pub const PCP_BATCH_SCALE_MAX: u32 = 5;

/// Linux's `MIN_PERCPU_PAGELIST_HIGH_FRACTION`: `high_max` comes from managed / 8.
pub const MIN_PERCPU_PAGELIST_HIGH_FRACTION: u64 = 8;

/// `pcp->flags`: the previous free was of order 1..3 (Linux's `PCPF_PREV_FREE_HIGH_ORDER`).
pub const PCPF_PREV_FREE_HIGH_ORDER: u8 = 1 << 0;

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

/// Linux 6.12's `zone_highsize`: `total_pages` (the low watermark for `high_min`, managed / 8
/// for `high_max`) split over the `online_cpus` CPUs of the node, at least `4 * batch`.
pub fn zone_highsize(total_pages: u64, batch: u32, online_cpus: usize) -> u32 {
    let high = total_pages / online_cpus.max(1) as u64;
    (high.min(i32::MAX as u64) as u32).max(batch << 2)
}

/// Linux 6.12's `zone_set_pageset_high_and_batch` without `percpu_pagelist_high_fraction`:
/// `(batch, high_min, high_max)` of a zone.
pub fn pageset_high_and_batch(managed_pages: u64, low_wmark: u64, online_cpus: usize) -> (u32, u32, u32) {
    let batch = zone_batchsize(managed_pages).max(1);
    let high_min = zone_highsize(low_wmark, batch, online_cpus);
    let high_max = zone_highsize(managed_pages / MIN_PERCPU_PAGELIST_HIGH_FRACTION, batch, online_cpus);
    (batch, high_min, high_max.max(high_min))
}

/// One list: free blocks of one order, linked through the heads' descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpList {
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

impl PcpList {
    const EMPTY: PcpList = PcpList { head: NO_PAGE, tail: NO_PAGE };

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head == NO_PAGE
    }
}

/// The owner-only part of a [`PerCpuPages`]: touched only through a [`PcpGuard`].
pub(crate) struct PcpLocal {
    pub(crate) lists: [PcpList; NR_PCP_LISTS],
    /// Pages freed since the last allocation, halved by each allocation (`pcp->free_count`).
    pub(crate) free_count: u32,
    /// log2 of the order-0 refill multiplier (`pcp->alloc_factor`).
    pub(crate) alloc_factor: u8,
    /// `PCPF_*` flags.
    pub(crate) flags: u8,
}

/// One CPU's lists of one zone (Linux's `struct per_cpu_pages`): see the module documentation
/// for who writes which field. One cache line in the kernel, so that CPUs do not share lines.
#[repr(C, align(64))]
pub struct PerCpuPages {
    /// The lists and the owner's tuning state: the owner only, through [`PerCpuPages::enter`].
    local: UnsafeCell<PcpLocal>,
    /// Pages on the lists (a block of order `o` counts `2^o`). Written by the owner.
    count: AtomicU32,
    /// At this many pages a free gives pages back (auto-tuned in `[high_min, high_max]`).
    /// Written by the owner, and clamped by configuration changes.
    high: AtomicU32,
    /// Blocks moved to or from the buddy lists at a time (scaled, see the module doc). Written
    /// by configuration changes, re-read by the owner.
    batch: AtomicU32,
    /// The lowest `high` auto-tuning goes to (from the low watermark). As `batch`.
    high_min: AtomicU32,
    /// The highest `high` auto-tuning goes to (from managed / 8). As `batch`.
    high_max: AtomicU32,
    slot: CpuSlot,
}

// SAFETY: `local` is reached only through a `PcpGuard`, which `enter` hands out to the slot's
// own CPU with its interrupts off (on the host, to one thread at a time: the slot's busy flag),
// so never to two at once; every other field is an atomic.
unsafe impl Sync for PerCpuPages {}

/// The figures of one CPU's lists that other CPUs read (`/proc/zoneinfo`'s pageset): a racy
/// but whole snapshot of the atomics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpInfo {
    pub count: u32,
    pub high: u32,
    pub batch: u32,
    pub high_min: u32,
    pub high_max: u32,
}

/// The owner-only tuning state of one CPU's lists, read on that CPU ([`Node::pcp_tuning`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpTuning {
    pub free_count: u32,
    pub alloc_factor: u8,
    pub flags: u8,
}

impl PerCpuPages {
    pub(crate) const fn new() -> PerCpuPages {
        PerCpuPages {
            local: UnsafeCell::new(PcpLocal {
                lists: [PcpList::EMPTY; NR_PCP_LISTS],
                free_count: 0,
                alloc_factor: 0,
                flags: 0,
            }),
            count: AtomicU32::new(0),
            high: AtomicU32::new(0),
            batch: AtomicU32::new(1),
            high_min: AtomicU32::new(0),
            high_max: AtomicU32::new(0),
            slot: CpuSlot::new(),
        }
    }

    /// Enters the lists: interrupts off (host: the slot's flag). The caller runs on the CPU
    /// they belong to ([`Node::pcp_enter`] checks it where it can).
    #[inline(always)]
    pub(crate) fn enter(&self) -> PcpGuard<'_> {
        let slot = self.slot.enter();
        PcpGuard { r: PcpRef { pcp: self, owner: PhantomData }, _slot: slot }
    }

    /// The figures other CPUs may read (each a relaxed load: exact for its field).
    pub fn info(&self) -> PcpInfo {
        PcpInfo {
            count: self.count.load(Relaxed),
            high: self.high.load(Relaxed),
            batch: self.batch.load(Relaxed),
            high_min: self.high_min.load(Relaxed),
            high_max: self.high_max.load(Relaxed),
        }
    }

    /// Pages on the lists (a relaxed load; racy by design when read by another CPU).
    #[inline]
    pub(crate) fn count(&self) -> u32 {
        self.count.load(Relaxed)
    }

    /// Linux's `pageset_update` (`WRITE_ONCE` of the three, from any CPU), and `high` brought
    /// into the new range (the owner re-clamps it on its next slow path anyway).
    pub(crate) fn pageset_update(&self, batch: u32, high_min: u32, high_max: u32) {
        self.batch.store(batch, Relaxed);
        self.high_min.store(high_min, Relaxed);
        self.high_max.store(high_max, Relaxed);
        self.high.store(self.high.load(Relaxed).clamp(high_min, high_max), Relaxed);
    }
}

/// The running CPU inside its own lists (interrupts off until it drops): a [`PcpRef`].
pub(crate) struct PcpGuard<'a> {
    r: PcpRef<'a>,
    _slot: CpuSlotGuard<'a>,
}

impl<'a> core::ops::Deref for PcpGuard<'a> {
    type Target = PcpRef<'a>;
    #[inline(always)]
    fn deref(&self) -> &PcpRef<'a> {
        &self.r
    }
}

impl<'a> core::ops::DerefMut for PcpGuard<'a> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut PcpRef<'a> {
        &mut self.r
    }
}

/// Access to lists the running CPU has entered: plain access to the owner-only part
/// ([`PcpRef::l`]), the shared counters with relaxed loads and stores. One pointer, so that the
/// out-of-line slow paths take it by value in a register (a guard passed by reference would be
/// spilled to the stack on every fast path). Made only by [`PerCpuPages::enter`] (inside its
/// guard) and [`PcpRef::reborrow`].
pub(crate) struct PcpRef<'a> {
    pcp: &'a PerCpuPages,
    owner: PhantomData<&'a mut PcpLocal>,
}

impl PcpRef<'_> {
    /// The owner-only part.
    #[inline(always)]
    pub(crate) fn l(&mut self) -> &mut PcpLocal {
        // SAFETY: a `PcpRef` exists only inside the guard of its lists (`enter`), which no other
        // CPU (host: thread) holds meanwhile, and only one is usable at a time (`reborrow`
        // borrows the original mutably); `&mut self` makes this the only reference derived
        // from it.
        unsafe { &mut *self.pcp.local.get() }
    }

    /// The lists, read only.
    #[inline(always)]
    pub(crate) fn lists(&self) -> &[PcpList; NR_PCP_LISTS] {
        // SAFETY: as in `l`; `&self` excludes a `&mut` from `l` while this borrow lives.
        unsafe { &(*self.pcp.local.get()).lists }
    }

    /// The same access for a callee (the original is unusable until the copy is dropped).
    #[inline(always)]
    pub(crate) fn reborrow(&mut self) -> PcpRef<'_> {
        PcpRef { pcp: self.pcp, owner: PhantomData }
    }

    #[inline(always)]
    pub(crate) fn count(&self) -> u32 {
        self.pcp.count.load(Relaxed)
    }
    #[inline(always)]
    fn set_count(&self, v: u32) {
        self.pcp.count.store(v, Relaxed);
    }
    #[inline(always)]
    pub(crate) fn high(&self) -> u32 {
        self.pcp.high.load(Relaxed)
    }
    #[inline(always)]
    pub(crate) fn set_high(&self, v: u32) {
        self.pcp.high.store(v, Relaxed);
    }
    #[inline(always)]
    pub(crate) fn batch(&self) -> u32 {
        self.pcp.batch.load(Relaxed)
    }
    #[inline(always)]
    pub(crate) fn high_min(&self) -> u32 {
        self.pcp.high_min.load(Relaxed)
    }
    #[inline(always)]
    pub(crate) fn high_max(&self) -> u32 {
        self.pcp.high_max.load(Relaxed)
    }

    /// `high` clamped into `[high_min, high_max]` as configuration may have moved them (the
    /// first step of Linux 6.12's `nr_pcp_high` and `nr_pcp_alloc`); returns the three.
    fn clamp_high(&self) -> (u32, u32, u32) {
        let (high_min, high_max) = (self.high_min(), self.high_max());
        let high = self.high().clamp(high_min, high_max);
        self.set_high(high);
        (high, high_min, high_max)
    }

    /// Pushes block `idx` of `order` at the head (hot end) of its list.
    #[inline(always)]
    pub(crate) fn push_head(&mut self, mm: &MemMap, order: u32, idx: u32) {
        let list = &mut self.l().lists[order as usize];
        // SAFETY: `idx` and the list entries are valid descriptor indices (they come from
        // `pfn_to_index` or the buddy lists).
        let page = unsafe { mm.page_at_unchecked(idx) };
        // Read once: the compiler cannot tell that the descriptor stores below leave it alone.
        let head = list.head;
        page.next.store(head, Relaxed);
        page.prev.store(NO_PAGE, Relaxed);
        if head == NO_PAGE {
            list.tail = idx;
        } else {
            // SAFETY: list entries are valid indices.
            unsafe { mm.page_at_unchecked(head) }.prev.store(idx, Relaxed);
        }
        list.head = idx;
        self.set_count(self.count() + (1 << order));
    }

    /// Appends block `idx` of `order` at the tail (cold end) of its list.
    #[inline]
    pub(crate) fn push_tail(&mut self, mm: &MemMap, order: u32, idx: u32) {
        let list = &mut self.l().lists[order as usize];
        // SAFETY: as in `push_head`.
        let page = unsafe { mm.page_at_unchecked(idx) };
        page.next.store(NO_PAGE, Relaxed);
        page.prev.store(list.tail, Relaxed);
        if list.tail == NO_PAGE {
            list.head = idx;
        } else {
            // SAFETY: list entries are valid indices.
            unsafe { mm.page_at_unchecked(list.tail) }.next.store(idx, Relaxed);
        }
        list.tail = idx;
        self.set_count(self.count() + (1 << order));
    }

    /// Takes the head block of the `order` list.
    #[inline(always)]
    pub(crate) fn pop_head(&mut self, mm: &MemMap, order: u32) -> Option<u32> {
        let list = &mut self.l().lists[order as usize];
        let idx = list.head;
        if idx == NO_PAGE {
            return None;
        }
        // SAFETY: list entries are valid indices.
        let next = unsafe { mm.page_at_unchecked(idx) }.next.load(Relaxed);
        list.head = next;
        if next == NO_PAGE {
            list.tail = NO_PAGE;
        } else {
            // SAFETY: list entries are valid indices.
            unsafe { mm.page_at_unchecked(next) }.prev.store(NO_PAGE, Relaxed);
        }
        self.set_count(self.count() - (1 << order));
        Some(idx)
    }

    /// Takes the tail block of the `order` list.
    #[inline]
    pub(crate) fn pop_tail(&mut self, mm: &MemMap, order: u32) -> Option<u32> {
        let list = &mut self.l().lists[order as usize];
        let idx = list.tail;
        if idx == NO_PAGE {
            return None;
        }
        // SAFETY: list entries are valid indices.
        let prev = unsafe { mm.page_at_unchecked(idx) }.prev.load(Relaxed);
        list.tail = prev;
        if prev == NO_PAGE {
            list.head = NO_PAGE;
        } else {
            // SAFETY: list entries are valid indices.
            unsafe { mm.page_at_unchecked(prev) }.next.store(NO_PAGE, Relaxed);
        }
        self.set_count(self.count() - (1 << order));
        Some(idx)
    }

    /// The owner-only tuning state.
    pub(crate) fn tuning(&mut self) -> PcpTuning {
        let l = self.l();
        PcpTuning { free_count: l.free_count, alloc_factor: l.alloc_factor, flags: l.flags }
    }
}

/// Linux 6.12's `nr_pcp_high`: the `high` a free of a block compares `count` with, adjusting
/// `pcp.high` on the way (`free_high`: consecutive high-order frees; `below_high`: the zone's
/// `ZONE_BELOW_HIGH`).
pub(crate) fn nr_pcp_high(pcp: &mut PcpRef<'_>, batch: u32, free_high: bool, below_high: bool) -> u32 {
    let (high, high_min, high_max) = pcp.clamp_high();
    if high == 0 {
        return 0;
    }
    if free_high {
        pcp.set_high(high.saturating_sub(batch << PCP_BATCH_SCALE_MAX).max(high_min));
        return 0;
    }
    // (ZONE_RECLAIM_ACTIVE: no reclaim here.)
    if high_min == high_max {
        return high;
    }
    if below_high {
        let free_count = pcp.l().free_count.max(batch);
        pcp.set_high(high.saturating_sub(free_count).max(high_min));
        return pcp.count().max(high_min);
    }
    if pcp.count() >= high {
        let need_high = pcp.l().free_count + batch;
        // `high` should be large enough to hold `batch` freed pages.
        if high < need_high {
            pcp.set_high(need_high.clamp(high_min, high_max));
        }
    }
    high
}

/// Linux 6.12's `nr_pcp_free`: pages a spill gives back.
pub(crate) fn nr_pcp_free(pcp: &mut PcpRef<'_>, batch: u32, high: u32, free_high: bool) -> u32 {
    // Free as much as possible if batch freeing high-order pages.
    if free_high {
        return pcp.count().min(batch << PCP_BATCH_SCALE_MAX);
    }
    // PCP disabled (a tiny zone whose high is below its batch).
    if high < batch {
        return 1;
    }
    // Leave at least `batch` pages; spill as many as were freed in a row. (Linux's `clamp_t`
    // gives the upper bound when the bounds cross, `high < 2 * batch`.)
    pcp.l().free_count.max(batch).min(high - batch)
}

/// Linux 6.12's `nr_pcp_alloc`: blocks of `order` a refill of an empty list takes, raising
/// `high` (by the batch, up to `high_max`) and `alloc_factor` on the way.
pub(crate) fn nr_pcp_alloc(pcp: &mut PcpRef<'_>, order: u32, below_high: bool) -> u32 {
    let base_batch = pcp.batch();
    let (mut high, high_min, high_max) = pcp.clamp_high();
    // PCP disabled.
    if high < base_batch {
        return 1;
    }
    let mut batch = if order != 0 { base_batch } else { base_batch << pcp.l().alloc_factor };
    // A larger `high` could have avoided going to the zone.
    if high_min != high_max && !below_high {
        high = (high + batch).min(high_max);
        pcp.set_high(high);
    }
    if order == 0 {
        let max_nr_alloc = high.saturating_sub(pcp.count() + base_batch).max(base_batch);
        // Double the refill for each refill without a free in between.
        if batch <= max_nr_alloc && (pcp.l().alloc_factor as u32) < PCP_BATCH_SCALE_MAX {
            pcp.l().alloc_factor += 1;
        }
        batch = batch.min(max_nr_alloc);
    }
    // Scale to the order when the batch stores pages at all (batch 1: tiny zone).
    if batch > 1 {
        batch = (batch >> order).max(2);
    }
    batch
}

/// Linux 6.12's `decay_pcp_high` (the vmstat worker's part): lowers `high` by an eighth, at
/// most `batch << PCP_BATCH_SCALE_MAX` below `count`, not below `high_min`. Returns the pages
/// to give back (`count - high`, if positive); the caller spills them.
pub(crate) fn decay_pcp_high(pcp: &mut PcpRef<'_>) -> u32 {
    let (high_min, batch) = (pcp.high_min(), pcp.batch());
    let high = pcp.high();
    if high > high_min {
        pcp.set_high(
            pcp.count().saturating_sub(batch << PCP_BATCH_SCALE_MAX).max(high - (high >> 3)).max(high_min),
        );
    }
    pcp.count().saturating_sub(pcp.high())
}

/// Why [`Node::set_pcp_batch`](super::Node::set_pcp_batch) refused a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcpConfigError {
    /// `batch` must be at least 1.
    ZeroBatch,
    /// `high` (`high_min`) must be at least `batch` (a refill must fit below `high`).
    HighBelowBatch { high: u32, batch: u32 },
    /// `high_max` must be at least `high_min`.
    HighMaxBelowHighMin { high_min: u32, high_max: u32 },
    /// Every CPU applies a setting to its own lists through a cross-CPU call, which cannot be
    /// made here (interrupts off, an interrupt handler). Nothing was changed.
    NoCrossCpuCall,
}

impl core::fmt::Display for PcpConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PcpConfigError::ZeroBatch => f.write_str("pcp: batch must be at least 1"),
            PcpConfigError::HighBelowBatch { high, batch } => {
                write!(f, "pcp: high ({high}) must be at least batch ({batch})")
            }
            PcpConfigError::HighMaxBelowHighMin { high_min, high_max } => {
                write!(f, "pcp: high_max ({high_max}) must be at least high_min ({high_min})")
            }
            PcpConfigError::NoCrossCpuCall => {
                f.write_str("pcp: every CPU must apply the setting, and no cross-CPU call can be made here")
            }
        }
    }
}
