//! vmap blocks: the per-CPU chunks of virtual space behind `vm_map_ram` (Linux 6.12,
//! mm/vmalloc.c: `struct vmap_block`, `new_vmap_block`, `vb_alloc`, `vb_free`,
//! `purge_fragmented_block`, `_vm_unmap_aliases`).
//!
//! A block is one `VMAP_BLOCK_SIZE` vmap area (aligned to its size, no guard page) from which
//! `vm_map_ram` carves chunks of `2^get_order(count)` pages, for `count` up to
//! [`VMAP_MAX_ALLOC`]. As on Linux the carving is a bump pointer (`pages_off = VMAP_BBMAP_BITS -
//! vb->free`): a freed chunk is not reused but counted `dirty`, its range added to the block's
//! not-yet-flushed dirty range; when every page of the block is dirty the block is freed, and a
//! block with nothing live and little free space left can be purged early. Chunks have no guard
//! pages (`alloc_vmap_area` is called directly, not through `__get_vm_area_node`).
//!
//! This file is the bookkeeping of one block, plain data: the kernel keeps the blocks per CPU,
//! locks them, unmaps and flushes (kernel/src/mm/vmalloc/vm_map_ram.rs). Added to Linux's
//! fields: the count of each live chunk, so that `vm_unmap_ram` with a wrong count, an interior
//! address or an already unmapped chunk is refused instead of corrupting the block (6.12 trusts
//! the caller: `bitmap_clear` of whatever it is given).

use core::fmt;

use super::avl::NodeAlloc;
use super::pgtable::TlbFlushRange;
use super::space::VmallocError;
use super::space::VmallocSpace;
use super::vmap_area::{AreaKind, VmapArea};
use crate::addr::PAGE_SIZE;
use crate::page::PageProvider;
use x86_64::VirtAddr;

/// `VMAP_MAX_ALLOC` = `BITS_PER_LONG`: vm_map_ram of up to this many pages uses a vmap block;
/// more get their own vmap area.
pub const VMAP_MAX_ALLOC: usize = 64;

/// 6.12's `VMALLOC_SPACE` guess on 64-bit (128 GiB) in pages, for `VMAP_BBMAP_BITS`.
const VMALLOC_PAGES: usize = (128usize << 30) / PAGE_SIZE;

/// `VMAP_BBMAP_BITS` = `min(VMAP_BBMAP_BITS_MAX, max(VMAP_BBMAP_BITS_MIN, VMALLOC_PAGES /
/// roundup_pow_of_two(NR_CPUS) / 16))` with `VMAP_BBMAP_BITS_MAX` = 1024 and `_MIN` =
/// `2 * VMAP_MAX_ALLOC`: pages per block; 1024 (4 MiB blocks) for any NR_CPUS up to 2048.
pub const VMAP_BBMAP_BITS: usize = {
    let guess = VMALLOC_PAGES / crate::NR_CPUS.next_power_of_two() / 16;
    let at_least = if guess > 2 * VMAP_MAX_ALLOC { guess } else { 2 * VMAP_MAX_ALLOC };
    if at_least < 1024 {
        at_least
    } else {
        1024
    }
};

/// `VMAP_BLOCK_SIZE`: the bytes of one block, also its alignment.
pub const VMAP_BLOCK_SIZE: usize = VMAP_BBMAP_BITS * PAGE_SIZE;

/// `VMAP_PURGE_THRESHOLD`: a block with nothing live is purged by `vm_unmap_aliases` only when
/// fewer than this many pages are still free in it ("Don't overeagerly purge usable blocks").
pub const VMAP_PURGE_THRESHOLD: usize = VMAP_BBMAP_BITS / 4;

const WORDS: usize = VMAP_BBMAP_BITS / 64;

/// `get_order(count << PAGE_SHIFT)`: the order of the chunk a vm_map_ram of `count` pages takes.
pub fn vb_order(count: usize) -> u32 {
    count.max(1).next_power_of_two().trailing_zeros()
}

/// `addr_to_vb_idx`: the block index of an address (blocks are aligned to their size).
pub fn addr_to_vb_idx(vmalloc_start: usize, addr: usize) -> usize {
    (addr - (vmalloc_start & !(VMAP_BLOCK_SIZE - 1))) / VMAP_BLOCK_SIZE
}

/// Why a vm_map_ram / vm_unmap_ram request was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmMapRamError {
    /// vm_map_ram or vm_unmap_ram of 0 pages (6.12's vb_alloc: `WARN_ON(size == 0)`).
    ZeroCount,
    /// A frame without a page descriptor (6.12's vmap_pages_pte_range: `WARN_ON(!pfn_valid)`
    /// -> -EINVAL): vm_map_ram maps RAM; device memory is for vmap_pfn.
    NotPfnValid { index: usize, pfn: u64 },
    /// A node other than NUMA_NO_NODE (-1) or 0: this machine has one node.
    BadNode { node: i32 },
    /// vm_unmap_ram of an address that is not page aligned (6.12: `BUG_ON(!PAGE_ALIGNED)`).
    Unaligned { addr: usize },
    /// vm_unmap_ram of an address no vm_map_ram mapping starts at (no block or area there).
    NotVmMapRam { addr: usize },
    /// vm_unmap_ram with another count than the vm_map_ram call had ("cannot unmap partial").
    WrongCount { addr: usize, mapped: usize, given: usize },
    /// vm_unmap_ram of an address inside a chunk, not its start.
    Interior { addr: usize, start: usize, count: usize },
    /// vm_unmap_ram of a chunk already unmapped (double unmap).
    AlreadyUnmapped { addr: usize },
    /// vm_unmap_ram of a block address never handed out.
    NeverMapped { addr: usize },
    /// Out of heap for the block's bookkeeping.
    NoMemory,
}

impl fmt::Display for VmMapRamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use VmMapRamError::*;
        match *self {
            ZeroCount => write!(f, "count of 0 pages"),
            NotPfnValid { index, pfn } => write!(
                f,
                "page {index} (pfn {pfn:#x}) has no page descriptor: vm_map_ram maps RAM, use vmap_pfn for device memory"
            ),
            BadNode { node } => write!(f, "node {node}: this machine has node 0 only (or NUMA_NO_NODE)"),
            Unaligned { addr } => write!(f, "{addr:#x} is not page aligned"),
            NotVmMapRam { addr } => {
                write!(f, "{addr:#x} was not returned by vm_map_ram (no live vmap block or vm_map_ram area there)")
            }
            WrongCount { addr, mapped, given } => write!(
                f,
                "{addr:#x} was mapped with {mapped} pages, not {given}: vm_unmap_ram cannot unmap partially"
            ),
            Interior { addr, start, count } => {
                write!(f, "{addr:#x} is inside the vm_map_ram mapping at {start:#x} ({count} pages), not its start")
            }
            AlreadyUnmapped { addr } => write!(f, "{addr:#x} is already unmapped: double vm_unmap_ram"),
            NeverMapped { addr } => write!(f, "{addr:#x} is in a vmap block but was never mapped"),
            NoMemory => write!(f, "out of memory for vmap block bookkeeping"),
        }
    }
}

/// A chunk taken off a block by [`VmapBlock::unmap_begin`]: its pages must be unmapped, then
/// handed to [`VmapBlock::unmap_end`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VbFree {
    pub offset: usize,
    pub order: u32,
    pub count: usize,
}

/// One vmap block (Linux's `struct vmap_block`). The kernel keeps it under a lock (the
/// `vb->lock` role); this type is plain data.
#[derive(Clone, Debug)]
pub struct VmapBlock {
    /// Start of the block's vmap area (`vb->va->va_start`).
    pub va_start: usize,
    /// Pages not yet handed out, all after the bump pointer (`vb->free`).
    pub free: usize,
    /// Pages handed out and freed again (`vb->dirty`).
    pub dirty: usize,
    /// Page range freed but not yet flushed from the TLBs (`vb->dirty_min`, `vb->dirty_max`).
    pub dirty_min: usize,
    pub dirty_max: usize,
    /// Pages of live chunks (`vb->used_map`).
    used_map: [u64; WORDS],
    /// The count each live chunk was mapped with, at its first page (0 elsewhere): added here.
    counts: [u8; VMAP_BBMAP_BITS],
    /// The CPU whose queue holds the block (`vb->cpu`).
    pub cpu: usize,
}

impl VmapBlock {
    /// `new_vmap_block(order)`: a block over the area at `va_start` whose first chunk (offset 0)
    /// is taken for `count` pages.
    pub fn new(va_start: usize, count: usize, cpu: usize) -> VmapBlock {
        debug_assert!((1..=VMAP_MAX_ALLOC).contains(&count));
        let mut vb = VmapBlock {
            va_start,
            free: VMAP_BBMAP_BITS,
            dirty: 0,
            dirty_min: VMAP_BBMAP_BITS,
            dirty_max: 0,
            used_map: [0; WORDS],
            counts: [0; VMAP_BBMAP_BITS],
            cpu,
        };
        let first = vb.alloc(count);
        debug_assert_eq!(first, Some(va_start));
        vb
    }

    fn set_used(&mut self, from: usize, n: usize, on: bool) {
        for i in from..from + n {
            if on {
                self.used_map[i / 64] |= 1 << (i % 64);
            } else {
                self.used_map[i / 64] &= !(1 << (i % 64));
            }
        }
    }

    fn is_used(&self, i: usize) -> bool {
        self.used_map[i / 64] & (1 << (i % 64)) != 0
    }

    /// Pages of live chunks.
    pub fn nr_used(&self) -> usize {
        self.used_map.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// `vb_alloc`'s step on one block: the next `2^order` pages after the bump pointer for a
    /// chunk of `count` pages, or `None` when fewer are free.
    pub fn alloc(&mut self, count: usize) -> Option<usize> {
        let n = 1 << vb_order(count);
        if self.free < n {
            return None;
        }
        let off = VMAP_BBMAP_BITS - self.free;
        self.free -= n;
        self.set_used(off, n, true);
        self.counts[off] = count as u8;
        Some(self.va_start + off * PAGE_SIZE)
    }

    /// `vb_free`'s first step (`bitmap_clear` of the chunk), after checking that `addr` starts
    /// a live chunk of `count` pages. The caller then unmaps `count` pages from `addr` and
    /// calls [`unmap_end`](Self::unmap_end).
    pub fn unmap_begin(&mut self, addr: usize, count: usize) -> Result<VbFree, VmMapRamError> {
        let offset = (addr - self.va_start) / PAGE_SIZE;
        if offset >= VMAP_BBMAP_BITS - self.free {
            return Err(VmMapRamError::NeverMapped { addr });
        }
        let mapped = self.counts[offset] as usize;
        if mapped == 0 {
            if !self.is_used(offset) {
                return Err(VmMapRamError::AlreadyUnmapped { addr });
            }
            let start = (0..offset).rev().find(|&i| self.counts[i] != 0).expect("a used page is in a chunk");
            let count = self.counts[start] as usize;
            return Err(VmMapRamError::Interior { addr, start: self.va_start + start * PAGE_SIZE, count });
        }
        if mapped != count {
            return Err(VmMapRamError::WrongCount { addr, mapped, given: count });
        }
        let order = vb_order(count);
        self.counts[offset] = 0;
        self.set_used(offset, 1 << order, false);
        Ok(VbFree { offset, order, count })
    }

    /// `vb_free`'s last step, once the chunk's PTEs are cleared: widens the dirty range and
    /// counts the chunk dirty. Returns true when the whole block is dirty (`vb->dirty ==
    /// VMAP_BBMAP_BITS`): the caller then frees the block after flushing its range.
    pub fn unmap_end(&mut self, f: VbFree) -> bool {
        let n = 1 << f.order;
        self.dirty_min = self.dirty_min.min(f.offset);
        self.dirty_max = self.dirty_max.max(f.offset + n);
        self.dirty += n;
        debug_assert!(self.dirty < VMAP_BBMAP_BITS || self.free == 0);
        self.dirty == VMAP_BBMAP_BITS
    }

    /// `purge_fragmented_block`'s test: nothing live (`free + dirty == VMAP_BBMAP_BITS`), not
    /// already being freed, and with `force` or fewer than [`VMAP_PURGE_THRESHOLD`] pages free.
    pub fn purgeable(&self, force: bool) -> bool {
        self.free + self.dirty == VMAP_BBMAP_BITS
            && self.dirty != VMAP_BBMAP_BITS
            && (force || self.free < VMAP_PURGE_THRESHOLD)
    }

    /// Marks a purgeable block as purged (`free = 0`, everything dirty: no more allocations
    /// and no second purge) and returns the whole block's range, to flush before it is freed.
    pub fn mark_purged(&mut self) -> TlbFlushRange {
        self.free = 0;
        self.dirty = VMAP_BBMAP_BITS;
        self.dirty_min = 0;
        self.dirty_max = VMAP_BBMAP_BITS;
        self.range()
    }

    /// The whole block as a flush range.
    pub fn range(&self) -> TlbFlushRange {
        TlbFlushRange { start: VirtAddr::new(self.va_start as u64), nr_pages: VMAP_BBMAP_BITS }
    }

    /// `_vm_unmap_aliases`' step on a block that is not purged: its dirty range `[start, end)`
    /// as addresses, reset so that it is not flushed again; `None` when nothing is dirty or the
    /// block is being freed (its free path flushes it).
    pub fn take_dirty(&mut self) -> Option<(usize, usize)> {
        if self.dirty_max == 0 || self.dirty == VMAP_BBMAP_BITS {
            return None;
        }
        let r = (self.va_start + self.dirty_min * PAGE_SIZE, self.va_start + self.dirty_max * PAGE_SIZE);
        self.dirty_min = VMAP_BBMAP_BITS;
        self.dirty_max = 0;
        Some(r)
    }

    /// The live chunks `(addr, count)` in address order.
    pub fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..VMAP_BBMAP_BITS)
            .filter(|&i| self.counts[i] != 0)
            .map(|i| (self.va_start + i * PAGE_SIZE, self.counts[i] as usize))
    }
}

/// The union of flush ranges, as `_vm_unmap_aliases` combines them into one
/// `flush_tlb_kernel_range(start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushUnion {
    pub start: usize,
    pub end: usize,
}

impl FlushUnion {
    pub const EMPTY: FlushUnion = FlushUnion { start: usize::MAX, end: 0 };

    pub fn add(&mut self, start: usize, end: usize) {
        self.start = self.start.min(start);
        self.end = self.end.max(end);
    }

    pub fn range(&self) -> Option<TlbFlushRange> {
        (self.start < self.end).then(|| TlbFlushRange {
            start: VirtAddr::new(self.start as u64),
            nr_pages: (self.end - self.start) / PAGE_SIZE,
        })
    }
}

impl<A: NodeAlloc> VmallocSpace<A> {
    /// `vm_unmap_ram` of a mapping of more than [`VMAP_MAX_ALLOC`] pages (its own vmap area,
    /// 6.12's `find_unlink_vmap_area` + `free_unmap_vmap_area`): checks the count, unmaps,
    /// calls `flush` and releases the range. The frames stay the caller's.
    pub fn vm_unmap_ram_area<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        addr: usize,
        count: usize,
        flush: impl FnMut(TlbFlushRange),
    ) -> Result<VmapArea, VmallocError> {
        if let Some(area) = self.areas.find_vmap_area(addr) {
            if area.kind == AreaKind::VmapBlock {
                // A block is freed by its own bookkeeping, never as a whole by a caller.
                return Err(VmallocError::VmMapRam(VmMapRamError::NotVmMapRam { addr }));
            }
            if area.kind == AreaKind::VmMapRam && area.nr_pages != count {
                return Err(VmallocError::VmMapRam(VmMapRamError::WrongCount {
                    addr,
                    mapped: area.nr_pages,
                    given: count,
                }));
            }
        }
        self.release(provider, addr, AreaKind::VmMapRam, flush)
    }
}
