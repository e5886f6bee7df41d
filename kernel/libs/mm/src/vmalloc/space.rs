//! vmalloc / vfree / vmap / vunmap over the area allocator and the page tables together
//! (Linux's `__vmalloc_node_range`, `vfree`, `vmap`, `vunmap`), host-testable.
//!
//! The kernel keeps one [`VmallocSpace`] behind one lock. vmalloc takes it only to reserve the
//! area and to map each chunk of pages ([`vmalloc_with`]); page allocation and zeroing run with
//! it free. The page allocator never takes it (its reclaim only tries it). The kernel supplies what is
//! not logic: the page provider (the buddy allocator) and the TLB flush (a callback).

extern crate alloc;

use alloc::alloc::Global;
use core::fmt;

use x86_64::VirtAddr;

use super::avl::NodeAlloc;
use super::pgtable::{PgTableError, TlbFlushRange, VmallocPageTables};
use super::vmap_area::{AreaKind, VmapArea, VmapAreaRequest, VmapAreas, VmapError};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{PageProvider, PageState};
use crate::AllocError;

/// Why a vmalloc-level operation failed. Nothing was leaked and nothing stays half done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmallocError {
    /// The virtual area could not be allocated or the address is not a live area.
    Area(VmapError),
    /// Mapping failed (out of page-table pages, ...).
    PageTable(PgTableError),
    /// The page allocator refused page `index` of `nr_pages`.
    Pages { index: usize, nr_pages: usize, err: AllocError },
    /// `vfree` of a vmap area or `vunmap` of a vmalloc area.
    WrongKind { addr: usize, kind: AreaKind },
    /// `vmap` of no pages.
    NoPages,
    /// ioremap of zero bytes or of a range that wraps around the physical address space.
    IoremapRange { phys: u64, size: usize },
    /// ioremap of an address the CPU cannot address (`phys_addr_valid`).
    IoremapInvalidPhys { phys: u64, phys_bits: u32 },
    /// ioremap of RAM the page allocator manages (6.12: "ioremap on RAM at %pa - %pa").
    IoremapOnRam { phys: u64, last: u64, pfn: Pfn },
    /// vmap_pfn of a frame that has a page descriptor (`pfn_valid`: 6.12's `vmap_pfn_apply`
    /// refuses it with -EINVAL); `index` is its place in the array.
    VmapPfnValid { index: usize, pfn: Pfn },
    /// vmap_pfn with protection bits that cannot make a kernel PTE (see `vmap_pfn`).
    BadProt { prot: u64, why: &'static str },
    /// vm_map_ram / vm_unmap_ram refused the request.
    VmMapRam(super::vmap_block::VmMapRamError),
}

impl fmt::Display for VmallocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmallocError::Area(e) => e.fmt(f),
            VmallocError::PageTable(e) => e.fmt(f),
            VmallocError::Pages { index, nr_pages, err } => {
                write!(f, "allocating page {index} of {nr_pages} failed: {err}")
            }
            VmallocError::WrongKind { addr, kind } => {
                let article = if kind == AreaKind::Ioremap { "an" } else { "a" };
                write!(
                    f,
                    "{addr:#x} is {article} {} area: release it with {}",
                    kind.name(),
                    kind.release_fn()
                )
            }
            VmallocError::NoPages => write!(f, "vmap of an empty page list"),
            VmallocError::IoremapRange { phys, size } => {
                write!(f, "ioremap of {size} bytes at {phys:#x}: zero size or the range wraps around")
            }
            VmallocError::IoremapInvalidPhys { phys, phys_bits } => write!(
                f,
                "ioremap: invalid physical address {phys:#x} (the CPU has {phys_bits} physical address bits)"
            ),
            VmallocError::IoremapOnRam { phys, last, pfn } => write!(
                f,
                "ioremap on RAM at {phys:#018x} - {last:#018x}: page {:#x} belongs to the page allocator",
                pfn.phys().as_u64()
            ),
            VmallocError::VmapPfnValid { index, pfn } => write!(
                f,
                "vmap_pfn: pfn {:#x} (entry {index}) is pfn_valid: RAM with a page descriptor must be mapped with vmap",
                pfn.0
            ),
            VmallocError::BadProt { prot, why } => write!(f, "vmap_pfn: protection {prot:#x} refused: {why}"),
            VmallocError::VmMapRam(e) => e.fmt(f),
        }
    }
}

impl From<VmapError> for VmallocError {
    fn from(e: VmapError) -> Self {
        VmallocError::Area(e)
    }
}

impl From<PgTableError> for VmallocError {
    fn from(e: PgTableError) -> Self {
        VmallocError::PageTable(e)
    }
}

/// Pages of lazily freed areas above which a free purges them all (Linux's `lazy_max_pages`:
/// 32 MiB for each bit of the online CPU count, `fls(num_online_cpus())`).
pub fn lazy_max_pages() -> usize {
    crate::cpus::fls(crate::cpus::num_online_cpus().max(1) as u32) as usize * ((32 << 20) / PAGE_SIZE)
}

/// Pages vmalloc allocates and maps per step (512 bytes of frame numbers on the stack).
pub const VMALLOC_CHUNK: usize = 64;

/// The vmalloc range: its areas (their nodes from `A`) and its page tables.
pub struct VmallocSpace<A: NodeAlloc = Global> {
    pub areas: VmapAreas<A>,
    pub tables: VmallocPageTables,
}

/// The bits of a vmalloc `gfp` that apply to page-table pages: how hard to try, not where from
/// or whether zeroed (the table code zeroes tables itself).
pub(super) fn table_gfp(gfp: GfpFlags) -> GfpFlags {
    gfp.difference(
        GfpFlags::__GFP_ZERO
            | GfpFlags::__GFP_DMA
            | GfpFlags::__GFP_DMA32
            | GfpFlags::__GFP_HIGHMEM
            | GfpFlags::__GFP_MOVABLE
            | GfpFlags::__GFP_COMP,
    )
}

/// How [`vmalloc_with`] reaches the space: the kernel's lock, taken for each step that touches
/// the area trees or the page tables and released in between.
pub trait SpaceLock {
    /// Where the space's area nodes come from.
    type Alloc: NodeAlloc;
    /// Runs `f` on the space, exclusively.
    fn with<R>(&self, f: impl FnOnce(&mut VmallocSpace<Self::Alloc>) -> R) -> R;
}

/// A space the caller already holds exclusively.
struct Held<'a, A: NodeAlloc>(core::cell::RefCell<&'a mut VmallocSpace<A>>);

impl<A: NodeAlloc> SpaceLock for Held<'_, A> {
    type Alloc = A;
    fn with<R>(&self, f: impl FnOnce(&mut VmallocSpace<A>) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

/// Linux's `__vmalloc_node_range` without holding the vmap lock across page allocation and
/// zeroing: the area is reserved under the lock, then pages are allocated (and zeroed for
/// `__GFP_ZERO`) a chunk at a time with the lock free, and each chunk is mapped under it.
/// Nobody else maps into a reserved area, so the chunks need only the page-table updates
/// locked. Each page's descriptor is marked [`PageState::Vmalloc`] with `private` = the area
/// start. On failure everything is given back; `flush` is then called with the area's range
/// (pages may have been mapped for a moment) before the range is freed.
pub fn vmalloc_with<L: SpaceLock, P: PageProvider + ?Sized>(
    lock: &L,
    provider: &P,
    gfp: GfpFlags,
    req: VmapAreaRequest,
    mut flush: impl FnMut(TlbFlushRange),
) -> Result<VmapArea, VmallocError> {
    let req = VmapAreaRequest { kind: AreaKind::Vmalloc, ..req };
    let area = lock.with(|s| s.alloc_area_or_purge(&mut flush, req))?;
    let start = VirtAddr::new(area.start as u64);
    // Pages are allocated and mapped a chunk at a time through a buffer on the stack, not
    // through a page list on the heap: a list for a large area would need a physically
    // contiguous heap block, exactly what vmalloc exists to avoid (a 16 MiB area needs 32 KiB
    // of list, which fails when memory is fragmented to single pages).
    let mut chunk = [Pfn(0); VMALLOC_CHUNK];
    let mut mapped = 0;
    while mapped < area.nr_pages {
        let n = VMALLOC_CHUNK.min(area.nr_pages - mapped);
        // Linux's vm_area_alloc_pages: order-0 pages from the bulk allocator (one per-CPU list
        // hold for the chunk), the rest, if it fell short, one at a time from the more
        // permissive single-page allocator.
        let mut bulk = [None; VMALLOC_CHUNK];
        provider.alloc_pages_bulk(gfp, &mut bulk[..n]);
        for i in 0..n {
            match bulk[i].take().map_or_else(|| provider.alloc_pages(gfp, 0), Ok) {
                Ok(pfn) => {
                    if let Some(page) = provider.page(pfn) {
                        page.set_state(PageState::Vmalloc);
                        page.private.store(area.start, core::sync::atomic::Ordering::Relaxed);
                    }
                    chunk[i] = pfn;
                }
                Err(err) => {
                    for &pfn in chunk[..i].iter().chain(bulk[i + 1..n].iter().flatten()) {
                        free_vmalloc_page(provider, pfn);
                    }
                    lock.with(|s| s.unwind_vmalloc(provider, &area, mapped, mapped > 0, &mut flush));
                    return Err(VmallocError::Pages { index: mapped + i, nr_pages: area.nr_pages, err });
                }
            }
        }
        let at = start + (mapped * PAGE_SIZE) as u64;
        // SAFETY: the pages were just allocated for this area and stay allocated while mapped
        // (vfree unmaps before freeing them); the area is ours.
        let result = lock.with(|s| unsafe { s.tables.map_pages(provider, table_gfp(gfp), at, &chunk[..n]) });
        if let Err(e) = result {
            for &pfn in &chunk[..n] {
                free_vmalloc_page(provider, pfn);
            }
            // The failed call mapped some of the chunk for a while: always flush.
            lock.with(|s| s.unwind_vmalloc(provider, &area, mapped, true, &mut flush));
            return Err(e.into());
        }
        mapped += n;
    }
    Ok(area)
}

/// Gives a vmalloc page back to the page allocator.
pub(super) fn free_vmalloc_page<P: PageProvider + ?Sized>(provider: &P, pfn: Pfn) {
    if let Some(page) = provider.page(pfn) {
        page.private.store(0, core::sync::atomic::Ordering::Relaxed);
        // The provider takes blocks back in the state it handed them out in.
        page.set_state(PageState::Allocated);
    }
    let freed = provider.free_pages(pfn, 0);
    // We allocated it with order 0 and own it; a refusal means the provider is corrupt, and
    // leaking the page is the only safe answer.
    debug_assert!(freed.is_ok(), "provider refused a vmalloc page: {freed:?}");
}

impl<A: NodeAlloc> VmallocSpace<A> {
    pub fn new(areas: VmapAreas<A>, tables: VmallocPageTables) -> Self {
        VmallocSpace { areas, tables }
    }

    /// Allocates an area for `req` (its `kind` is forced to vmalloc), fills it with order-0
    /// pages from `provider` allocated with `gfp` (`__GFP_ZERO` zeroes them), and maps them
    /// ([`vmalloc_with`] with this space held throughout).
    pub fn vmalloc<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        gfp: GfpFlags,
        req: VmapAreaRequest,
        flush: impl FnMut(TlbFlushRange),
    ) -> Result<VmapArea, VmallocError> {
        vmalloc_with(&Held(core::cell::RefCell::new(self)), provider, gfp, req, flush)
    }

    /// Frees the vmalloc area starting at `addr`: unmaps it (its page tables stay, for the next
    /// area or the shrinker) and frees its pages at once; the virtual range is freed lazily, as
    /// on Linux (`free_vmap_area_noflush`): it waits, out of both trees, for the next
    /// [`purge_vmap_area_lazy`](Self::purge_vmap_area_lazy), whose one `flush` covers every
    /// waiting area, so that no range is reused while a CPU may hold a stale translation. A
    /// free that takes the waiting pages past [`lazy_max_pages`] purges. Any other address is
    /// refused with the reason and nothing changes.
    pub fn vfree<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        addr: usize,
        flush: impl FnMut(TlbFlushRange),
    ) -> Result<VmapArea, VmallocError> {
        self.release(provider, addr, AreaKind::Vmalloc, flush)
    }

    /// Maps the caller's `frames` into a new area (with a guard page) and returns it. The frames
    /// stay the caller's: their descriptors are not touched and [`vunmap`](Self::vunmap) does not
    /// free them.
    ///
    /// # Safety
    /// The caller owns the frames and must not free them before `vunmap`.
    pub unsafe fn vmap<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        gfp: GfpFlags,
        frames: &[Pfn],
        caller: &'static core::panic::Location<'static>,
        mut flush: impl FnMut(TlbFlushRange),
    ) -> Result<VmapArea, VmallocError> {
        if frames.is_empty() {
            return Err(VmallocError::NoPages);
        }
        let size = frames.len().checked_mul(PAGE_SIZE).ok_or(VmallocError::Area(VmapError::TooLarge {
            size: usize::MAX,
            max: self.areas.range().1 - self.areas.range().0,
        }))?;
        let req = VmapAreaRequest { kind: AreaKind::Vmap, caller, ..VmapAreaRequest::new(size) };
        let area = self.alloc_area_or_purge(&mut flush, req)?;
        // SAFETY: the caller owns the frames (contract of this function); the area is ours.
        let mapped = unsafe {
            self.tables.map_pages(provider, table_gfp(gfp), VirtAddr::new(area.start as u64), frames)
        };
        if let Err(e) = mapped {
            flush(TlbFlushRange { start: VirtAddr::new(area.start as u64), nr_pages: area.nr_pages });
            self.free_area_unmapped(area.start);
            return Err(e.into());
        }
        Ok(area)
    }

    /// Unmaps the vmap area starting at `addr` (its frames stay the caller's) and frees its
    /// range lazily, as [`vfree`](Self::vfree) does.
    pub fn vunmap<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        addr: usize,
        flush: impl FnMut(TlbFlushRange),
    ) -> Result<VmapArea, VmallocError> {
        self.release(provider, addr, AreaKind::Vmap, flush)
    }

    pub(crate) fn release<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        addr: usize,
        kind: AreaKind,
        flush: impl FnMut(TlbFlushRange),
    ) -> Result<VmapArea, VmallocError> {
        let Some(area) = self.areas.find_vmap_area(addr) else {
            // Let the area allocator name the problem (interior, guard, double free, ...).
            return Err(self.areas.free(addr).expect_err("no live area starts at addr").into());
        };
        // vunmap releases vmap and vmap_pfn areas alike (6.12's vunmap takes any area).
        if area.kind.release_fn() != kind.release_fn() {
            return Err(VmallocError::WrongKind { addr, kind: area.kind });
        }
        let start = VirtAddr::new(area.start as u64);
        self.tables.unmap_pages(provider, start, area.nr_pages, |pfn| {
            // Freeing before the flush is Linux's order too (`vfree` frees the pages, the lazy
            // purge flushes later): the virtual range is not reused before the flush, so only a
            // use-after-vfree could go through a stale translation.
            if kind == AreaKind::Vmalloc {
                free_vmalloc_page(provider, pfn);
            }
        })?;
        let parked = self.areas.free_lazy(area.start);
        debug_assert!(parked.is_ok(), "the area found a moment ago cannot be freed: {parked:?}");
        if self.areas.lazy_pages() > lazy_max_pages() {
            self.purge_vmap_area_lazy(flush);
        }
        Ok(area)
    }

    /// Flushes the range covering every lazily freed area from every CPU's TLB (one `flush`)
    /// and makes their ranges reusable (Linux's `__purge_vmap_area_lazy`; `vm_unmap_aliases`,
    /// a free past [`lazy_max_pages`] and an allocation that finds no room call it). Returns
    /// the areas purged.
    pub fn purge_vmap_area_lazy(&mut self, mut flush: impl FnMut(TlbFlushRange)) -> usize {
        let Some((lo, hi)) = self.areas.lazy_range() else { return 0 };
        flush(TlbFlushRange { start: VirtAddr::new(lo as u64), nr_pages: (hi - lo) / PAGE_SIZE });
        self.areas.purge_lazy()
    }

    /// An area for `req`; when no range fits and areas wait for the purge, purges them and
    /// tries once more (Linux's `alloc_vmap_area` overflow path: `reclaim_and_purge_vmap_areas`,
    /// then `goto retry`).
    pub fn alloc_area_or_purge(
        &mut self,
        flush: &mut impl FnMut(TlbFlushRange),
        req: VmapAreaRequest,
    ) -> Result<VmapArea, VmapError> {
        match self.areas.alloc_area(req) {
            Err(VmapError::NoSpace { .. }) if self.purge_vmap_area_lazy(&mut *flush) > 0 => {
                self.areas.alloc_area(req)
            }
            other => other,
        }
    }

    /// Undoes a vmalloc that failed after mapping its first `mapped` pages: unmaps them, frees
    /// them (the page tables stay), flushes the whole area if anything was ever
    /// present in it (`was_mapped`) and releases the range.
    pub(super) fn unwind_vmalloc<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        area: &VmapArea,
        mapped: usize,
        was_mapped: bool,
        mut flush: impl FnMut(TlbFlushRange),
    ) {
        let start = VirtAddr::new(area.start as u64);
        if mapped > 0 {
            let unmapped =
                self.tables.unmap_pages(provider, start, mapped, |pfn| free_vmalloc_page(provider, pfn));
            // Those pages were mapped by this call a moment ago; only corrupt tables fail here.
            debug_assert!(unmapped.is_ok(), "unwinding a partial vmalloc: {unmapped:?}");
        }
        if was_mapped {
            flush(TlbFlushRange { start, nr_pages: area.nr_pages });
        }
        self.free_area_unmapped(area.start);
    }

    /// Releases the virtual range of an area that has nothing mapped.
    pub fn free_area_unmapped(&mut self, start: usize) {
        let freed = self.areas.free(start);
        // A free can only fail for want of a tree node when nothing merges; the range then
        // stays reserved (leaked virtual space, never a double use).
        debug_assert!(freed.is_ok(), "freeing our own area failed: {freed:?}");
    }
}
