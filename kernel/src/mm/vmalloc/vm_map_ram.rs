//! `vm_map_ram` / `vm_unmap_ram` / `vm_unmap_aliases` in the running kernel, with 6.12's per-CPU
//! vmap blocks (mm/vmalloc.c: `vmap_block_queue`, `vb_alloc`, `vb_free`, `_vm_unmap_aliases`).
//! The block bookkeeping is the `mm` crate's ([`VmapBlock`]); this file keeps the blocks, locks
//! them, maps, unmaps and flushes.
//!
//! Mappings of up to [`VMAP_MAX_ALLOC`] pages are carved from a block of the calling CPU; larger
//! ones get a vmap area of their own (no guard page, as 6.12's `alloc_vmap_area` call). Unmapping
//! a block chunk clears its PTEs but does not flush the TLBs (6.12's `vb_free`:
//! `vunmap_range_noflush` and a dirty range): a chunk's range is never handed out again while
//! its block lives (the block's allocation is a bump pointer), and a block's whole range is
//! flushed on every CPU before its area is released, when it is fully dirty or purged. Stale
//! translations of unmapped chunks therefore only alias pages the caller already gave up;
//! [`vm_unmap_aliases`] removes them (one shootdown of the union of every block's dirty range).
//!
//! Structures and their locks (lock order: a queue, then a shard, then the vmap lock; no path
//! takes them in another order, and no TLB shootdown is started while a queue or shard lock is
//! held, so a CPU spinning on one with interrupts off never blocks a shootdown):
//! - [`VBQ`]`[cpu]` (Linux's `vmap_block_queue.free`): the indices of the blocks `cpu` allocates
//!   from, under its own lock. Only that CPU allocates from its list; entries are hints, dropped
//!   when their block is gone, full or another CPU's;
//! - [`SHARDS`]`[i]` (Linux's `vmap_block_queue.vmap_blocks` xarray, hashed by
//!   `addr_to_vb_xa`: block index modulo `nr_cpu_ids`): the blocks themselves, by index, under
//!   the shard's lock, which also plays each block's `vb->lock`. Any CPU frees into any block;
//! - the page tables and the vmap areas of blocks: the vmap lock (`super::space`).

use alloc::vec::Vec;
use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ::mm::page::PageProvider;
use ::mm::sync::IrqSpinLock;
use ::mm::vmalloc::vmap_block::{addr_to_vb_idx, FlushUnion};
use ::mm::vmalloc::{
    AreaKind, VmMapRamError, VmallocError, VmapAreaRequest, VmapBlock, VmapError, VMAP_BLOCK_SIZE,
    VMAP_MAX_ALLOC,
};
use ::mm::{GfpFlags, Pfn, NR_CPUS, PAGE_SIZE};
use x86_64::VirtAddr;

use super::{
    check_context, is_vmalloc_addr, report_bad_free, space, tlb, vfree_drain, VmError, VmallocPages,
};
use crate::mm::kalloc::KBox;
use crate::mm::layout::{VMALLOC_END, VMALLOC_START};

/// Linux's `NUMA_NO_NODE`.
pub const NUMA_NO_NODE: i32 = -1;

/// Per-CPU lists of block indices with free space (see the module documentation).
static VBQ: [IrqSpinLock<Vec<usize>>; NR_CPUS] = [const { IrqSpinLock::new(Vec::new()) }; NR_CPUS];

/// The blocks, sorted by index within each shard (see the module documentation).
/// One shard: blocks sorted by index.
type Shard = Vec<(usize, KBox<VmapBlock>)>;

static SHARDS: [IrqSpinLock<Shard>; NR_CPUS] = [const { IrqSpinLock::new(Vec::new()) }; NR_CPUS];

/// Blocks ever created and ever freed (fully dirty or purged), for tests.
pub static BLOCKS_CREATED: AtomicU64 = AtomicU64::new(0);
pub static BLOCKS_FREED: AtomicU64 = AtomicU64::new(0);

fn vb_idx(addr: usize) -> usize {
    addr_to_vb_idx(VMALLOC_START as usize, addr)
}

/// `addr_to_vb_xa`: the shard of a block index (modulo NR_CPUS rather than `nr_cpu_ids`, which
/// grows while the CPUs come up: a block must stay in the shard it was put in).
fn shard(idx: usize) -> &'static IrqSpinLock<Shard> {
    &SHARDS[idx % NR_CPUS]
}

fn find(blocks: &mut [(usize, KBox<VmapBlock>)], idx: usize) -> Option<&mut VmapBlock> {
    let i = blocks.binary_search_by_key(&idx, |e| e.0).ok()?;
    Some(&mut blocks[i].1)
}

fn this_cpu() -> usize {
    (crate::arch::percpu::cpu_id() as usize).min(NR_CPUS - 1)
}

/// Takes block `i` out of its shard; an empty shard gives its memory back.
fn take_block(blocks: &mut Shard, i: usize) -> KBox<VmapBlock> {
    let vb = blocks.remove(i).1;
    if blocks.is_empty() {
        *blocks = Vec::new();
    }
    vb
}

/// Removes entry `i` of a CPU's list; an empty list gives its memory back (the lists would
/// otherwise keep their largest size forever).
fn drop_hint(list: &mut Vec<usize>, i: usize) {
    list.swap_remove(i);
    if list.is_empty() {
        *list = Vec::new();
    }
}

/// Drops the entries of purged or freed blocks from every CPU's list (queue, then shard: the
/// lock order), after a purge.
fn prune_hints() {
    for (cpu, q) in VBQ.iter().enumerate() {
        let mut list = q.lock();
        let mut i = 0;
        while i < list.len() {
            let idx = list[i];
            let live = find(&mut shard(idx).lock(), idx).is_some_and(|vb| vb.cpu == cpu && vb.free > 0);
            if live {
                i += 1;
            } else {
                drop_hint(&mut list, i);
            }
        }
    }
}

/// `vb_alloc(count)`: a chunk of `2^get_order(count)` pages from one of this CPU's blocks, or
/// from a new block.
fn vb_alloc(count: usize) -> Result<usize, VmError> {
    let cpu = this_cpu();
    {
        let mut list = VBQ[cpu].lock();
        let mut i = 0;
        while i < list.len() {
            let idx = list[i];
            let mut blocks = shard(idx).lock();
            let got = match find(&mut blocks, idx) {
                Some(vb) if vb.cpu == cpu => vb.alloc(count).map(|a| (a, vb.free)),
                // Gone (freed or purged) or another CPU's block reusing the index: a stale hint.
                _ => {
                    drop(blocks);
                    drop_hint(&mut list, i);
                    continue;
                }
            };
            drop(blocks);
            match got {
                Some((addr, free)) => {
                    if free == 0 {
                        drop_hint(&mut list, i);
                    }
                    return Ok(addr);
                }
                None => i += 1,
            }
        }
    }
    new_vmap_block(cpu, count)
}

/// `new_vmap_block(order)`: a `VMAP_BLOCK_SIZE` area aligned to its size, its first chunk taken,
/// put into its shard and onto this CPU's list. When the range is full, fragmented blocks are
/// purged and the area allocation retried once (6.12's `alloc_vmap_area` overflow path calls
/// `purge_fragmented_blocks_allcpus`).
fn new_vmap_block(cpu: usize, count: usize) -> Result<usize, VmError> {
    let req = VmapAreaRequest {
        align: VMAP_BLOCK_SIZE,
        guard: false,
        kind: AreaKind::VmapBlock,
        ..VmapAreaRequest::new(VMAP_BLOCK_SIZE)
    };
    let area = match space().areas.alloc_area(req) {
        Err(VmapError::NoSpace { .. }) => {
            purge_blocks(true, false);
            space().areas.alloc_area(req)
        }
        r => r,
    }
    .map_err(|e| VmError::Vmalloc(e.into()))?;
    let vb = KBox::new(VmapBlock::new(area.start, count, cpu), GfpFlags::GFP_KERNEL);
    let idx = vb_idx(area.start);
    let inserted = vb.ok().and_then(|vb| {
        let mut blocks = shard(idx).lock();
        blocks.try_reserve(1).ok()?;
        let at = blocks.binary_search_by_key(&idx, |e| e.0).expect_err("a new block's index is free");
        blocks.insert(at, (idx, vb));
        Some(())
    });
    if inserted.is_none() {
        space().free_area_unmapped(area.start);
        return Err(VmError::Vmalloc(VmallocError::VmMapRam(VmMapRamError::NoMemory)));
    }
    BLOCKS_CREATED.fetch_add(1, Relaxed);
    let mut list = VBQ[cpu].lock();
    // Without room on the list the block is still found by vb_free; it only gets no more
    // allocations (as a full block), and is freed once its chunks are unmapped.
    if list.try_reserve(1).is_ok() {
        list.push(idx);
    }
    Ok(area.start)
}

/// Frees a block that left its shard: every CPU's TLB is flushed over the whole block before
/// its area is released (6.12 frees it lazily with `free_vmap_area_noflush`; the flush before
/// reuse is the same guarantee).
fn free_vmap_block(vb: KBox<VmapBlock>) {
    tlb::flush_tlb_kernel_range(vb.range());
    space().free_area_unmapped(vb.va_start);
    BLOCKS_FREED.fetch_add(1, Relaxed);
}

/// `vb_free(addr, count)`: checks and clears the chunk, unmaps its PTEs without a flush, then
/// counts it dirty; frees the block when it is wholly dirty.
fn vb_free(addr: usize, count: usize) -> Result<(), VmError> {
    let idx = vb_idx(addr);
    let ticket = {
        let mut blocks = shard(idx).lock();
        let vb = find(&mut blocks, idx).ok_or(VmMapRamError::NotVmMapRam { addr });
        vb.and_then(|vb| vb.unmap_begin(addr, count))
    }
    .map_err(|e| VmError::Vmalloc(VmallocError::VmMapRam(e)))?;
    let unmapped = space().tables.unmap_pages(&VmallocPages, VirtAddr::new(addr as u64), count, |_| {});
    // vm_map_ram mapped these pages and the chunk was live: only corrupt tables fail here.
    debug_assert!(unmapped.is_ok(), "unmapping a live vm_map_ram chunk: {unmapped:?}");
    let freed = {
        let mut blocks = shard(idx).lock();
        let i = blocks.binary_search_by_key(&idx, |e| e.0).expect("a block with a chunk in flight stays");
        if blocks[i].1.unmap_end(ticket) {
            Some(take_block(&mut blocks, i))
        } else {
            None
        }
    };
    if let Some(vb) = freed {
        free_vmap_block(vb);
    }
    Ok(())
}

/// Purges the blocks with nothing live (`purge_fragmented_block`: all of them with `force`,
/// else those with less than a quarter free) and, with `take_dirty`, takes every other block's
/// dirty range; then one shootdown of the union and the purged blocks' areas released.
/// Returns the blocks purged.
fn purge_blocks(force: bool, take_dirty: bool) -> usize {
    let mut union = FlushUnion::EMPTY;
    let mut purged: Vec<KBox<VmapBlock>> = Vec::new();
    for s in SHARDS.iter() {
        let mut blocks = s.lock();
        if purged.try_reserve(blocks.len()).is_err() {
            // Without room to hold purged blocks, only flush this shard's dirty ranges.
            for (_, vb) in blocks.iter_mut() {
                if let Some((a, b)) = vb.take_dirty().filter(|_| take_dirty) {
                    union.add(a, b);
                }
            }
            continue;
        }
        let mut i = 0;
        while i < blocks.len() {
            let vb = &mut blocks[i].1;
            if vb.purgeable(force) {
                let r = vb.mark_purged();
                union.add(r.start.as_u64() as usize, r.end().as_u64() as usize);
                purged.push(take_block(&mut blocks, i));
                continue;
            }
            if take_dirty {
                if let Some((a, b)) = vb.take_dirty() {
                    union.add(a, b);
                }
            }
            i += 1;
        }
    }
    // 6.12's _vm_unmap_aliases: the dirty block ranges and the lazily freed areas share one
    // flush (__purge_vmap_area_lazy(start, end)). The vmap lock is held from reading the lazy
    // range to purging it, so that no area parked meanwhile is purged unflushed.
    let mut space = space();
    if let Some((lo, hi)) = space.areas.lazy_range() {
        union.add(lo, hi);
    }
    if let Some(range) = union.range() {
        tlb::flush_tlb_kernel_range(range);
    }
    space.areas.purge_lazy();
    let n = purged.len();
    for vb in purged {
        space.free_area_unmapped(vb.va_start);
    }
    drop(space);
    if n > 0 {
        BLOCKS_FREED.fetch_add(n as u64, Relaxed);
        prune_hints();
    }
    n
}

/// `vm_unmap_aliases()`: flushes the lazily unmapped ranges of every CPU's blocks and of the
/// lazily freed areas (one TLB shootdown for their union), purges those areas and the blocks
/// with nothing live and under a quarter free (6.12's `_vm_unmap_aliases`). Afterwards no CPU holds a translation of a page vm_unmap_ram
/// gave back. Process context (it may wait for other CPUs).
pub fn vm_unmap_aliases() {
    if crate::arch::in_interrupt() {
        crate::error!("BUG: vm_unmap_aliases called from interrupt context: not flushed");
        return;
    }
    purge_blocks(false, true);
}

/// Frees every vmap block with nothing live (6.12's `purge_fragmented_blocks_allcpus`), with the
/// flush; returns how many. For tests that compare figures and for the out-of-space retry.
pub fn purge_vmap_blocks() -> usize {
    purge_blocks(true, false)
}

/// Blocks alive now, for tests.
pub fn nr_vmap_blocks() -> usize {
    SHARDS.iter().map(|s| s.lock().len()).sum()
}

fn ram_err(e: VmMapRamError) -> VmError {
    VmError::Vmalloc(VmallocError::VmMapRam(e))
}

/// `vm_map_ram(pages, count, node)`: maps `pages` at consecutive virtual pages and returns the
/// start. Up to [`VMAP_MAX_ALLOC`] pages come from this CPU's vmap block (no guard page between
/// chunks), more from a vmap area of their own. Refused with a warning line naming the caller,
/// nothing reserved or mapped: no pages, a frame without a page descriptor, a node other than
/// 0 or [`NUMA_NO_NODE`], interrupt context, no space.
///
/// # Safety
/// The caller owns the frames and must not free them before [`vm_unmap_ram`] of the returned
/// address with the same count.
#[track_caller]
pub unsafe fn vm_map_ram(pages: &[Pfn], node: i32) -> Result<NonNull<u8>, VmError> {
    check_context("vm_map_ram")?;
    let result = vm_map_ram_locked(pages, node, Location::caller());
    if let Err(e) = &result {
        super::warn_failure(pages.len().saturating_mul(PAGE_SIZE), GfpFlags::GFP_KERNEL, e);
    }
    result
}

fn vm_map_ram_locked(
    pages: &[Pfn],
    node: i32,
    caller: &'static Location<'static>,
) -> Result<NonNull<u8>, VmError> {
    let count = pages.len();
    if count == 0 {
        return Err(ram_err(VmMapRamError::ZeroCount));
    }
    if node != NUMA_NO_NODE && node != 0 {
        return Err(ram_err(VmMapRamError::BadNode { node }));
    }
    if let Some(index) = pages.iter().position(|&p| VmallocPages.page(p).is_none()) {
        return Err(ram_err(VmMapRamError::NotPfnValid { index, pfn: pages[index].0 }));
    }
    vfree_drain();
    let addr = if count <= VMAP_MAX_ALLOC {
        vb_alloc(count)?
    } else {
        let size = count.checked_mul(PAGE_SIZE).ok_or(VmError::Vmalloc(VmallocError::Area(
            VmapError::TooLarge { size: usize::MAX, max: (VMALLOC_END - VMALLOC_START) as usize },
        )))?;
        let req =
            VmapAreaRequest { guard: false, kind: AreaKind::VmMapRam, caller, ..VmapAreaRequest::new(size) };
        space().areas.alloc_area(req).map_err(|e| VmError::Vmalloc(e.into()))?.start
    };
    // SAFETY: the caller owns the frames until vm_unmap_ram (contract of vm_map_ram); the range
    // was just reserved for this mapping.
    let mapped = unsafe {
        space().tables.map_pages(&VmallocPages, GfpFlags::GFP_KERNEL, VirtAddr::new(addr as u64), pages)
    };
    if let Err(e) = mapped {
        // Nothing stays mapped; give the range back (6.12: vm_unmap_ram(mem, count)). A chunk
        // becomes dirty (flushed before reuse); an own area is flushed now.
        if count <= VMAP_MAX_ALLOC {
            let idx = vb_idx(addr);
            let mut blocks = shard(idx).lock();
            if let Some(t) = find(&mut blocks, idx).and_then(|vb| vb.unmap_begin(addr, count).ok()) {
                let i = blocks.binary_search_by_key(&idx, |e| e.0).expect("found above");
                if blocks[i].1.unmap_end(t) {
                    let vb = take_block(&mut blocks, i);
                    drop(blocks);
                    free_vmap_block(vb);
                }
            }
        } else {
            tlb::flush_tlb_kernel_range(::mm::vmalloc::TlbFlushRange {
                start: VirtAddr::new(addr as u64),
                nr_pages: count,
            });
            space().free_area_unmapped(addr);
        }
        return Err(VmError::Vmalloc(e.into()));
    }
    Ok(NonNull::new(addr as *mut u8).expect("vm_map_ram addresses are above VMALLOC_START"))
}

/// `vm_unmap_ram(mem, count)`: unmaps what [`vm_map_ram`] returned, with the same count. A block
/// chunk's TLB flush is deferred (see the module documentation); a larger mapping is flushed on
/// every CPU before its range is released. The frames stay the caller's. Refused with an error
/// line naming the caller, nothing changed: a count of 0, an address outside the vmalloc range
/// or not page aligned, an address vm_map_ram did not return (or inside such a mapping), a wrong
/// count, a double unmap, interrupt context.
#[track_caller]
pub fn vm_unmap_ram(mem: *const u8, count: usize) -> Result<(), VmError> {
    check_context("vm_unmap_ram")?;
    let result = vm_unmap_ram_checked(mem as usize, count);
    if let Err(e) = &result {
        report_bad_free("vm_unmap_ram", e);
    }
    result
}

fn vm_unmap_ram_checked(addr: usize, count: usize) -> Result<(), VmError> {
    if !is_vmalloc_addr(addr as *const u8) {
        let direct_map = crate::mm::page_alloc::virt_to_phys(VirtAddr::new_truncate(addr as u64)).is_some();
        return Err(VmError::NotVmalloc { addr, direct_map });
    }
    if count == 0 {
        return Err(ram_err(VmMapRamError::ZeroCount));
    }
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(ram_err(VmMapRamError::Unaligned { addr }));
    }
    // The count says where 6.12 looks (a block for up to VMAP_MAX_ALLOC, else an area); a
    // mismatch is named from what is really there.
    let in_block = {
        let idx = vb_idx(addr);
        let mut blocks = shard(idx).lock();
        find(&mut blocks, idx).map(|vb| vb.chunks().find(|&(a, _)| a == addr).map(|(_, n)| n))
    };
    match (count <= VMAP_MAX_ALLOC, in_block) {
        (true, Some(_)) => vb_free(addr, count),
        (false, Some(Some(mapped))) => Err(ram_err(VmMapRamError::WrongCount { addr, mapped, given: count })),
        (false, Some(None)) => Err(ram_err(VmMapRamError::NotVmMapRam { addr })),
        (small, None) => {
            let mut space = space();
            match space.areas.find_vmap_area(addr) {
                Some(a) if a.kind == AreaKind::VmMapRam && small => {
                    Err(ram_err(VmMapRamError::WrongCount { addr, mapped: a.nr_pages, given: count }))
                }
                Some(a) if a.kind == AreaKind::VmMapRam => {
                    space
                        .vm_unmap_ram_area(&VmallocPages, addr, count, tlb::flush_tlb_kernel_range)
                        .map(|_| ())?;
                    Ok(())
                }
                Some(a) => Err(VmError::Vmalloc(VmallocError::WrongKind { addr, kind: a.kind })),
                None => match space.areas.check_free(addr) {
                    Err(VmapError::NotAllocated { .. }) | Ok(_) => {
                        Err(ram_err(VmMapRamError::NotVmMapRam { addr }))
                    }
                    Err(e) => Err(VmError::Vmalloc(VmallocError::Area(e))),
                },
            }
        }
    }
}
