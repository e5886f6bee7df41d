//! The virtual area allocator behind vmalloc and vmap (Linux's `vmap_area`, `mm/vmalloc.c`).
//!
//! The managed range `[start, end)` is tiled by free ranges and busy areas:
//! - free ranges sit in a tree keyed by address and augmented with the largest free size of each
//!   subtree (Linux's `free_vmap_area_root` with `subtree_max_size`), so the lowest-addressed range
//!   that fits is found in O(log n) (`find_vmap_lowest_match`); adjacent free ranges are always
//!   merged (`merge_or_add_vmap_area`);
//! - busy areas sit in a second tree keyed by start, for `find_vmap_area(addr)` and for "which
//!   area contains this address" (the page-fault describer) in O(log n).
//!
//! Every area except `guard == false` ones ends with one guard page that is reserved but never
//! mapped, so running off the end of a vmalloc buffer faults instead of corrupting the next one.
//!
//! Memory: every range is a node of its own (Linux's `struct vmap_area`), allocated from `A`: in
//! the kernel the `vmap_area` slab cache (Linux's `vmap_area_cachep`), on the host `Global` or a
//! test allocator. An allocation that needs nodes (one for the busy area, one more when it
//! splits a free range in two) allocates them after the search and before changing anything,
//! so a failed allocation is reported as [`VmapError::NoMemory`] with the allocator unchanged;
//! a free range used up whole becomes the busy area's node. `free` never allocates: the freed
//! area's node becomes the free range when the range merges with nothing, and nodes that merge
//! away go back to `A`. In the kernel this object is behind the vmap lock and the slab cache is
//! called under it; the slab allocator never takes the vmap lock (it does not use vmalloc), so
//! this cannot self-deadlock.

use core::panic::Location;

use bitflags::bitflags;

extern crate alloc;

use alloc::alloc::Global;

use super::avl::{Entry, NodeAlloc, NodeList, Tree};
pub use super::vmap_error::VmapError;

mod check;
mod lazy;
use crate::addr::PAGE_SIZE;

bitflags! {
    /// Area flags with Linux's values (`include/linux/vmalloc.h`), for the ones used here.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct VmFlags: u32 {
        /// `VM_IOREMAP`: `ioremap()` and friends: a physical (MMIO) range mapped uncached; the
        /// frames are not RAM and nobody frees them.
        const VM_IOREMAP = 0x1;
        /// `VM_ALLOC`: pages allocated and mapped by vmalloc (freed by vfree).
        const VM_ALLOC = 0x2;
        /// `VM_MAP`: caller-provided pages mapped by vmap (vunmap does not free them).
        const VM_MAP = 0x4;
        /// `VM_USERMAP`: zeroed, so suitable for `remap_vmalloc_range` (`vmalloc_user`).
        const VM_USERMAP = 0x8;
        /// `VM_NO_GUARD`: no guard page after the area.
        const VM_NO_GUARD = 0x40;
        /// `VM_ALLOW_HUGE_VMAP`: the area may be mapped with 2 MiB PMD entries (`vmalloc_huge`);
        /// kept on the area whichever page size it got, and not printed in `/proc/vmallocinfo`.
        const VM_ALLOW_HUGE_VMAP = 0x400;
    }
}

/// Who populated an area and owns its pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AreaKind {
    /// vmalloc: the pages belong to the area.
    Vmalloc,
    /// vmap: the caller's pages, mapped; they stay the caller's.
    Vmap,
    /// ioremap: a physical range that is not RAM the page allocator manages (MMIO), mapped
    /// with a cache mode; nothing is freed when it is unmapped.
    Ioremap,
    /// vmap_pfn: the caller's frames that have no page descriptor (not `pfn_valid`), mapped
    /// as a `VM_IOREMAP` area without a physical start; released with vunmap.
    VmapPfn,
    /// vm_map_ram of more than `VMAP_MAX_ALLOC` pages: the caller's frames in an area of its
    /// own without a `vm_struct` (6.12's `VMAP_RAM` vmap_area flag), no guard page.
    VmMapRam,
    /// A vmap block (`VMAP_RAM | VMAP_BLOCK`): a `VMAP_BLOCK_SIZE` area that vm_map_ram
    /// carves into chunks (`vmap_block.rs`); no guard page.
    VmapBlock,
}

impl AreaKind {
    fn flag(self) -> VmFlags {
        match self {
            AreaKind::Vmalloc => VmFlags::VM_ALLOC,
            AreaKind::Vmap => VmFlags::VM_MAP,
            AreaKind::Ioremap | AreaKind::VmapPfn => VmFlags::VM_IOREMAP,
            // VMAP_RAM is a vmap_area flag, not a vm_struct one: no VM_* flag.
            AreaKind::VmMapRam | AreaKind::VmapBlock => VmFlags::empty(),
        }
    }

    /// The kind's name in error messages and fault reports (the function that made it;
    /// `/proc/vmallocinfo` prints the flags instead: a vmap_pfn area shows as `ioremap`).
    pub fn name(self) -> &'static str {
        match self {
            AreaKind::Vmalloc => "vmalloc",
            AreaKind::Vmap => "vmap",
            AreaKind::Ioremap => "ioremap",
            AreaKind::VmapPfn => "vmap_pfn",
            AreaKind::VmMapRam => "vm_map_ram",
            AreaKind::VmapBlock => "vmap block",
        }
    }

    /// The function that releases an area of this kind (for error messages).
    pub fn release_fn(self) -> &'static str {
        match self {
            AreaKind::Vmalloc => "vfree",
            AreaKind::Vmap | AreaKind::VmapPfn => "vunmap",
            AreaKind::Ioremap => "iounmap",
            AreaKind::VmMapRam | AreaKind::VmapBlock => "vm_unmap_ram",
        }
    }
}

/// A busy area (Linux's `vmap_area` + `vm_struct`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmapArea {
    /// First address, aligned as requested.
    pub start: usize,
    /// Size in bytes including the guard page (as `/proc/vmallocinfo` shows it).
    pub size: usize,
    /// Pages to be mapped: the size without the guard, in pages.
    pub nr_pages: usize,
    pub kind: AreaKind,
    pub flags: VmFlags,
    /// The page-aligned physical start of an ioremap area (Linux's `vm_struct.phys_addr`), 0
    /// for the other kinds.
    pub phys_addr: u64,
    /// Where the allocation was requested (printed in `/proc/vmallocinfo`).
    pub caller: &'static Location<'static>,
}

impl VmapArea {
    /// End of the area including its guard page (exclusive).
    #[inline]
    pub fn end(&self) -> usize {
        self.start + self.size
    }
    /// Bytes of guard after the mapped part: one page, or 0 with `VM_NO_GUARD`.
    #[inline]
    pub fn guard_size(&self) -> usize {
        if self.flags.contains(VmFlags::VM_NO_GUARD) {
            0
        } else {
            PAGE_SIZE
        }
    }
    /// Size of the mappable part (Linux's `get_vm_area_size`).
    #[inline]
    pub fn usable_size(&self) -> usize {
        self.size - self.guard_size()
    }
    /// End of the mappable part (exclusive); the guard page starts here.
    #[inline]
    pub fn mapped_end(&self) -> usize {
        self.start + self.usable_size()
    }
}

/// Where an address lies relative to the busy area containing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrPlace {
    /// In the mappable part, `offset` bytes from the start.
    Inside { offset: usize },
    /// In the guard page, `offset` bytes past the mappable end: an overrun.
    Guard { offset: usize },
}

/// What to allocate. Build with [`VmapAreaRequest::new`] and adjust the fields.
#[derive(Clone, Copy, Debug)]
pub struct VmapAreaRequest {
    /// Bytes to map; rounded up to whole pages.
    pub size: usize,
    /// Alignment of the start: a power of two, at least `PAGE_SIZE`.
    pub align: usize,
    /// Reserve a guard page after the area.
    pub guard: bool,
    pub kind: AreaKind,
    /// Flags besides the kind's own and `VM_NO_GUARD` (`VM_USERMAP`).
    pub flags: VmFlags,
    /// Recorded as [`VmapArea::phys_addr`] (ioremap).
    pub phys_addr: u64,
    pub caller: &'static Location<'static>,
}

impl VmapAreaRequest {
    /// A page-aligned vmalloc area with a guard page, attributed to the caller of this function
    /// (or of the `#[track_caller]` chain leading to it).
    #[track_caller]
    pub fn new(size: usize) -> Self {
        VmapAreaRequest {
            size,
            align: PAGE_SIZE,
            guard: true,
            kind: AreaKind::Vmalloc,
            flags: VmFlags::empty(),
            phys_addr: 0,
            caller: Location::caller(),
        }
    }
}

/// What the busy tree stores per area besides start and size.
#[derive(Clone, Copy)]
struct AreaData {
    nr_pages: usize,
    kind: AreaKind,
    flags: VmFlags,
    phys_addr: u64,
    caller: &'static Location<'static>,
}

fn to_area(e: Entry<AreaData>) -> VmapArea {
    VmapArea {
        start: e.start,
        size: e.size,
        nr_pages: e.value.nr_pages,
        kind: e.value.kind,
        flags: e.value.flags,
        phys_addr: e.value.phys_addr,
        caller: e.value.caller,
    }
}

/// The vmap area allocator over one virtual range; its nodes come from `A`.
pub struct VmapAreas<A: NodeAlloc = Global> {
    start: usize,
    end: usize,
    free: Tree<AreaData, A, true>,
    busy: Tree<AreaData, A, false>,
    /// Areas freed lazily (Linux's `vmap_node.lazy`): unmapped, out of the busy tree, their
    /// range not reusable until one TLB flush on every CPU purges them all. Each is the node
    /// it had in the busy tree, chained through its own link: parking allocates nothing.
    lazy: NodeList<AreaData, A>,
    /// Pages (guard included) and the covering range `[lo, hi)` of the lazy areas.
    lazy_pages: usize,
    lazy_lo: usize,
    lazy_hi: usize,
    free_bytes: usize,
    /// Pages of live `Vmalloc` areas (Linux's `nr_vmalloc_pages`, for `VmallocUsed`).
    vmalloc_pages: usize,
}

impl VmapAreas<Global> {
    /// Manages `[start, end)` with nodes from the global heap; both page aligned, `start < end`.
    #[track_caller]
    pub fn new(start: usize, end: usize) -> Result<Self, VmapError> {
        Self::new_in(start, end, Global)
    }
}

impl<A: NodeAlloc> VmapAreas<A> {
    /// Manages `[start, end)` with nodes from `alloc`; both page aligned, `start < end`.
    #[track_caller]
    pub fn new_in(start: usize, end: usize, alloc: A) -> Result<Self, VmapError> {
        if start >= end || !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
            return Err(VmapError::BadRange { start, end });
        }
        let mut free = Tree::new_in(alloc.clone());
        // A free range's payload is never read; this one names whoever set the range up.
        let data = AreaData {
            nr_pages: 0,
            kind: AreaKind::Vmalloc,
            flags: VmFlags::empty(),
            phys_addr: 0,
            caller: Location::caller(),
        };
        free.insert(start, end - start, data).map_err(|_| VmapError::NoMemory)?;
        Ok(VmapAreas {
            start,
            end,
            free,
            busy: Tree::new_in(alloc),
            lazy: NodeList::new(),
            lazy_pages: 0,
            lazy_lo: usize::MAX,
            lazy_hi: 0,
            free_bytes: end - start,
            vmalloc_pages: 0,
        })
    }

    /// Size and alignment of one node (the kernel sizes its `vmap_area` slab cache with it).
    pub const fn node_layout() -> core::alloc::Layout {
        core::alloc::Layout::new::<super::avl::Node<AreaData, A>>()
    }

    /// Nodes in use: one per live area, per lazily freed area and per free range.
    pub fn nr_nodes(&self) -> usize {
        self.busy.len() + self.lazy.len() + self.free.len()
    }

    /// The managed range `[start, end)`.
    pub fn range(&self) -> (usize, usize) {
        (self.start, self.end)
    }

    /// A page-aligned or more strictly aligned vmalloc area of `size` bytes, attributed to the
    /// caller.
    #[track_caller]
    pub fn alloc(&mut self, size: usize, align: usize, guard: bool) -> Result<VmapArea, VmapError> {
        self.alloc_area(VmapAreaRequest { align, guard, ..VmapAreaRequest::new(size) })
    }

    /// Allocates an area for `req` at the lowest address where it fits (Linux's
    /// `alloc_vmap_area`). O(log n).
    pub fn alloc_area(&mut self, req: VmapAreaRequest) -> Result<VmapArea, VmapError> {
        if req.size == 0 {
            return Err(VmapError::ZeroSize);
        }
        if !req.align.is_power_of_two() || req.align < PAGE_SIZE {
            return Err(VmapError::BadAlign { align: req.align });
        }
        let guard = if req.guard { PAGE_SIZE } else { 0 };
        let capacity = self.end - self.start;
        let too_large = VmapError::TooLarge { size: req.size, max: capacity - guard };
        let mapped = req.size.checked_next_multiple_of(PAGE_SIZE).ok_or(too_large)?;
        let total = mapped.checked_add(guard).ok_or(too_large)?;
        if total > capacity {
            return Err(too_large);
        }
        let largest_free = self.free.max_size();
        let no_space = || VmapError::NoSpace { size: total, align: req.align, largest_free };
        // Linux's adjust_search_size: with a stricter alignment than a page, only a range of
        // size + align - 1 is sure to hold an aligned block, and searching with that length is
        // what keeps the walk free of backtracking.
        let length = if req.align <= PAGE_SIZE { Some(total) } else { total.checked_add(req.align - 1) };
        let length = length.ok_or_else(no_space)?;
        let (range, addr) = self
            .free
            .lowest_fit(length, |start, size| {
                let addr = start.checked_next_multiple_of(req.align)?;
                (addr.checked_add(total)? <= start + size).then_some(addr)
            })
            .ok_or_else(no_space)?;

        let mut flags = req.kind.flag() | req.flags;
        if !req.guard {
            flags |= VmFlags::VM_NO_GUARD;
        }
        let data = AreaData {
            nr_pages: mapped / PAGE_SIZE,
            kind: req.kind,
            flags,
            phys_addr: req.phys_addr,
            caller: req.caller,
        };
        // Linux's adjust_va_to_fit_type: FL (full), LE (left edge), RE (right edge), NE (no
        // edge). The nodes this needs are allocated before anything changes (Linux's
        // kmem_cache_alloc of the va and ne_fit_preload_node): a failure leaves both trees as
        // they were.
        let (left, right) = (addr - range.start, range.end() - (addr + total));
        let nomem = |_| VmapError::NoMemory;
        let node = match (left, right) {
            (0, 0) => None,
            _ => Some(self.busy.alloc_node(addr, total, data).map_err(nomem)?),
        };
        let split = match (left, right) {
            (0, _) | (_, 0) => None,
            _ => Some(self.free.alloc_node(addr + total, right, data).map_err(nomem)?),
        };
        let node = match (left, right) {
            // The free range is used up: its node becomes the area's.
            (0, 0) => self.free.remove(range.start).map(|mut n| {
                n.set(addr, total, data);
                n
            }),
            (0, _) => {
                self.free.update(range.start, addr + total, right);
                node
            }
            (_, 0) => {
                self.free.update(range.start, range.start, left);
                node
            }
            (_, _) => {
                self.free.update(range.start, range.start, left);
                if let Some(split) = split {
                    self.free.insert_node(split);
                }
                node
            }
        };
        let Some(node) = node else {
            // lowest_fit found the range in the tree just above: it is there to remove.
            debug_assert!(false, "the fitting free range vanished");
            return Err(no_space());
        };
        self.free_bytes -= total;
        self.busy.insert_node(node);
        if req.kind == AreaKind::Vmalloc {
            self.vmalloc_pages += data.nr_pages;
        }
        Ok(to_area(Entry { start: addr, size: total, value: data }))
    }

    /// Frees the area starting at `addr`, merging its range with free neighbours (Linux's
    /// `free_vmap_area` / `merge_or_add_vmap_area`). Returns the area so the caller can unmap and
    /// free its pages. O(log n); never allocates. Any address that is not the start of a live
    /// area is refused with the reason, and nothing changes.
    pub fn free(&mut self, addr: usize) -> Result<VmapArea, VmapError> {
        let (node, area) = self.take_busy(addr)?;
        self.insert_free(node);
        Ok(area)
    }

    /// Takes the live area starting at `addr` out of the busy tree and its pages out of the
    /// vmalloc count, for [`free`](Self::free) and [`free_lazy`](Self::free_lazy); anything else
    /// is refused with the reason, changing nothing.
    fn take_busy(&mut self, addr: usize) -> Result<(super::avl::NodeBox<AreaData, A>, VmapArea), VmapError> {
        let Some(node) = self.busy.remove(addr) else {
            return Err(self.classify_bad_free(addr));
        };
        let area = to_area(node.entry());
        if area.kind == AreaKind::Vmalloc {
            self.vmalloc_pages -= area.nr_pages;
        }
        Ok((node, area))
    }

    /// Puts a range that left the busy tree into the free tree, merged with the free ranges it
    /// touches; its node is reused when it merges with nothing and freed otherwise.
    fn insert_free(&mut self, node: super::avl::NodeBox<AreaData, A>) {
        let Entry { start, size, .. } = node.entry();
        let end = start + size;
        // No free range starts inside [start, end): the neighbours of `start` are those of the
        // whole range, found in one descent.
        let (prev, next) = self.free.neighbours(start);
        let prev = prev.filter(|p| p.end() == start);
        let next = next.filter(|n| n.start == end);
        match (prev, next) {
            (Some(p), Some(n)) => {
                // The right-hand node stays: the range at the top of the tiling (the tail of
                // the vmalloc range) keeps one node for good, so a burst of areas freed back
                // into it leaves none of its own nodes behind in the slab cache.
                drop(self.free.remove(p.start));
                self.free.update(n.start, p.start, p.size + size + n.size);
            }
            (Some(p), None) => {
                self.free.update(p.start, p.start, p.size + size);
            }
            (None, Some(n)) => {
                // The new start is still above the previous free range, so the order holds.
                self.free.update(n.start, start, size + n.size);
            }
            (None, None) => self.free.insert_node(node),
        }
        self.free_bytes += size;
    }

    fn classify_bad_free(&self, addr: usize) -> VmapError {
        if addr < self.start || addr >= self.end {
            return VmapError::OutOfRange { addr, start: self.start, end: self.end };
        }
        match self.lookup(addr) {
            Some((area, AddrPlace::Inside { .. })) => {
                VmapError::Interior { addr, area_start: area.start, area_end: area.end() }
            }
            Some((area, AddrPlace::Guard { .. })) => VmapError::InGuard { addr, area_start: area.start },
            None => {
                if let Some(a) = self.lookup_lazy(addr) {
                    return VmapError::Unpurged { addr, area_start: a.start, area_end: a.end() };
                }
                // The range is tiled by busy, lazy and free ranges, so a free range holds addr.
                let f = self.free.floor(addr).filter(|f| addr < f.end());
                debug_assert!(f.is_some(), "address in neither a busy nor a free range");
                let (free_start, free_end) = f.map_or((addr, addr), |f| (f.start, f.end()));
                VmapError::NotAllocated { addr, free_start, free_end }
            }
        }
    }

    /// What [`free`](Self::free) would say about `addr`, without freeing: the live area starting
    /// there, or the reason it cannot be freed. For callers that must validate before they may
    /// change anything (the kernel's deferred vfree).
    pub fn check_free(&self, addr: usize) -> Result<VmapArea, VmapError> {
        self.busy.get(addr).map(to_area).ok_or_else(|| self.classify_bad_free(addr))
    }

    /// The live area starting exactly at `addr` (Linux's `find_vmap_area`). O(log n).
    pub fn find_vmap_area(&self, addr: usize) -> Option<VmapArea> {
        self.busy.get(addr).map(to_area)
    }

    /// The live area whose range (guard included) contains `addr`, and where in it `addr` lies.
    /// For the page-fault describer. O(log n).
    pub fn lookup(&self, addr: usize) -> Option<(VmapArea, AddrPlace)> {
        let e = self.busy.floor(addr).filter(|e| addr < e.end())?;
        let area = to_area(e);
        let place = if addr < area.mapped_end() {
            AddrPlace::Inside { offset: addr - area.start }
        } else {
            AddrPlace::Guard { offset: addr - area.mapped_end() }
        };
        Some((area, place))
    }

    /// Live areas in address order.
    pub fn areas(&self) -> impl Iterator<Item = VmapArea> + '_ {
        self.busy.iter().map(to_area)
    }

    /// Free ranges `(start, size)` in address order.
    pub fn free_ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.free.iter().map(|e| (e.start, e.size))
    }

    /// Number of live areas.
    pub fn nr_areas(&self) -> usize {
        self.busy.len()
    }

    /// Pages of live vmalloc areas (not vmap ones), as Linux counts `VmallocUsed`.
    pub fn vmalloc_pages(&self) -> usize {
        self.vmalloc_pages
    }

    /// Total free bytes (guard pages of live areas are not free).
    pub fn free_bytes(&self) -> usize {
        self.free_bytes
    }

    /// Size of the largest free range. O(1).
    pub fn largest_free(&self) -> usize {
        self.free.max_size()
    }
}
