//! vmalloc in the running kernel: the `mm` crate's [`VmallocSpace`] over the real page tables
//! (the PML4 in CR3) and the buddy allocator, behind one IRQ-safe lock, with Linux's API:
//! `vmalloc`, `vzalloc`, `__vmalloc`, `vfree` (deferred from interrupt context, as
//! `vfree_atomic`), `vmap`/`vunmap`, `vmalloc_to_page`/`vmalloc_to_pfn`, `is_vmalloc_addr` and
//! `vrealloc` ([`vrealloc`](vrealloc())); `kvmalloc`/`kvfree` are in [`crate::mm::util`] and the owners
//! `VBox`, `VVec`, `KVBox`, `KVVec` in [`crate::mm::kalloc`].
//!
//! Every page of an area is a separate order-0 frame; [`vmalloc_huge`] (and `kvmalloc` from
//! 2 MiB up) maps 2 MiB at a time with one PMD entry over an order-9 block split into such
//! frames (the `mm` crate's `vmalloc::huge`). `vfree` unmaps and frees the frames at once and
//! parks the virtual range (6.12's lazy purge): past `lazy_max_pages` of parked ranges, when an
//! allocation finds no room, or at [`vm_unmap_aliases`], one TLB flush on every CPU ([`tlb`])
//! covers them all and only then are the ranges reusable. The PDPT pages under the range's 64 PML4 entries are allocated at boot and
//! never freed (Linux's `preallocate_vmalloc_pages`), so the PML4 entries never change.

mod cachep;
mod deferred;
pub mod ioremap;
pub mod tlb;
mod variants;
mod vm_map_ram;
mod vmap_pfn;

use core::fmt;
use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use ::mm::addr::DirectMap;
use ::mm::page::{FreePagesError, Page, PageProvider};
use ::mm::slab::SlabError;
use ::mm::sync::{IrqSpinLock, IrqSpinLockGuard};
use ::mm::vmalloc::{
    AddrPlace, AreaKind, VmFlags, VmallocError, VmallocPageTables, VmallocSpace, VmapArea, VmapAreaRequest,
    VmapAreas,
};
use ::mm::{AllocError, GfpFlags, Pfn, PAGE_SIZE};
use x86_64::registers::control::Cr3;
use x86_64::VirtAddr;

pub use cachep::{
    shrink as shrink_vmap_area_cache, slab_pages as vmap_area_slab_pages, VmapAreaCache, VMAP_AREA_CACHE,
};
pub use deferred::{nr_pending as nr_deferred, vfree_atomic, vfree_drain};
// kvmalloc and kvfree are in mm/util.c on Linux: `crate::mm::util`.
pub use super::util::{kvfree, kvmalloc, kvzalloc};
pub use ioremap::{ioremap, ioremap_cache, ioremap_uc, ioremap_wc, ioremap_wt, iounmap};
pub use variants::{vmalloc_32, vmalloc_32_user, vmalloc_huge, vmalloc_user, vrealloc};
pub use vm_map_ram::{
    nr_vmap_blocks, purge_vmap_blocks, vm_map_ram, vm_unmap_aliases, vm_unmap_ram, BLOCKS_CREATED,
    BLOCKS_FREED, NUMA_NO_NODE,
};
pub use vmap_pfn::vmap_pfn;

use super::layout::{VMALLOC_END, VMALLOC_START};

/// The kernel's vmalloc space: area nodes from the `vmap_area` slab cache.
pub type Space = VmallocSpace<VmapAreaCache>;

static VMAP: spin::Once<IrqSpinLock<Space>> = spin::Once::new();

/// Managed pages (Linux's `totalram_pages`), fixed at boot: the cheap bound vmalloc checks
/// sizes against before allocating anything.
static TOTALRAM_PAGES: AtomicUsize = AtomicUsize::new(0);

/// Times vmalloc or vmap was called in interrupt context (tests read it).
pub static VMALLOC_IN_INTERRUPT: AtomicUsize = AtomicUsize::new(0);

/// The page provider vmalloc uses: the buddy allocator of node 0 through the kernel's
/// allocation loop (reclaim of empty slabs and retry when the flags allow blocking). The
/// page allocator's own failure warning is silenced: vmalloc prints one line for the area.
pub(super) struct VmallocPages;

impl PageProvider for VmallocPages {
    #[track_caller]
    fn alloc_pages(&self, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
        super::page_alloc::alloc_pfn(gfp | GfpFlags::__GFP_NOWARN, order)
    }
    #[track_caller]
    fn alloc_pages_bulk(&self, gfp: GfpFlags, pages: &mut [Option<Pfn>]) -> usize {
        super::page_ref::alloc_pages_bulk(gfp | GfpFlags::__GFP_NOWARN, pages)
    }
    fn free_pages(&self, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        super::node().free_pages_cpu(super::page_alloc::this_cpu(), pfn, order)
    }
    fn split_page(&self, pfn: Pfn, order: u32) -> Result<(), ::mm::buddy::PageRefError> {
        super::node().split_page(pfn, order)
    }
    fn page(&self, pfn: Pfn) -> Option<&Page> {
        super::node().page(pfn)
    }
    fn direct_map(&self) -> DirectMap {
        super::direct_map()
    }
}

/// Why a kernel vmalloc call failed. Nothing was allocated, freed or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmError {
    /// Refused by the vmalloc logic: size 0, too large, no free range, a bad address for
    /// vfree/vunmap (interior, guard page, double free), wrong kind, out of pages or tables.
    Vmalloc(VmallocError),
    /// vmalloc/vmap called in interrupt context: they may sleep (Linux BUGs on it).
    InInterrupt { what: &'static str, caller: &'static Location<'static> },
    /// More pages requested than the machine has (Linux checks against `totalram_pages`).
    MoreThanRam { nr_pages: usize, totalram_pages: usize },
    /// vfree/vunmap of an address outside the vmalloc range; `direct_map` says it is a
    /// kmalloc/page-allocator address, which must be freed with kfree/free_pages.
    NotVmalloc { addr: usize, direct_map: bool },
    /// vfree of an area already queued for deferred freeing (a double vfree from interrupt
    /// context).
    AlreadyQueued { addr: usize },
    /// vmap flags other than `VM_MAP` (vmap always reserves a guard page here).
    BadFlags { flags: VmFlags },
    /// kvfree of a non-vmalloc address that kfree refused.
    Kfree(SlabError),
    /// kvmalloc size arithmetic overflowed or the alignment is invalid.
    Invalid(&'static str),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmError::Vmalloc(e) => e.fmt(f),
            VmError::InInterrupt { what: what @ ("vunmap" | "iounmap" | "vm_unmap_ram"), caller } => write!(
                f,
                "called from interrupt context at {}:{} ({what} may sleep: unmap in process context)",
                caller.file(),
                caller.line()
            ),
            VmError::InInterrupt { what: what @ ("ioremap" | "vmap_pfn" | "vm_map_ram"), caller } => write!(
                f,
                "called from interrupt context at {}:{} ({what} may sleep: map in process context)",
                caller.file(),
                caller.line()
            ),
            VmError::InInterrupt { what, caller } => write!(
                f,
                "called from interrupt context at {}:{} ({what} may sleep: allocate in process context or use kmalloc(GFP_ATOMIC))",
                caller.file(),
                caller.line()
            ),
            VmError::MoreThanRam { nr_pages, totalram_pages } => {
                write!(f, "{nr_pages} pages requested, more than all {totalram_pages} pages of RAM")
            }
            VmError::NotVmalloc { addr, direct_map: true } => write!(
                f,
                "{addr:#x} is not a vmalloc address but a direct-map (kmalloc or page allocator) one: free it with kfree/free_pages"
            ),
            VmError::NotVmalloc { addr, direct_map: false } => write!(
                f,
                "{addr:#x} is outside the vmalloc range [{VMALLOC_START:#x}, {VMALLOC_END:#x})"
            ),
            VmError::AlreadyQueued { addr } => {
                write!(f, "{addr:#x} is already queued for deferred vfree: double vfree")
            }
            VmError::BadFlags { flags } => write!(f, "vmap flags {flags:?}: only VM_MAP is supported"),
            VmError::Kfree(e) => write!(f, "kfree refused it: {e}"),
            VmError::Invalid(why) => write!(f, "invalid request: {why}"),
        }
    }
}

impl From<VmallocError> for VmError {
    fn from(e: VmallocError) -> Self {
        VmError::Vmalloc(e)
    }
}

/// Builds the vmalloc space on the live page tables (CR3's PML4) and preallocates the PDPT
/// pages of the range. Called once, after the slab allocator is up (the area trees' nodes come
/// from the `vmap_area` cache created here).
pub fn init() {
    let (pml4, _) = Cr3::read();
    cachep::init();
    let areas = VmapAreas::new_in(VMALLOC_START as usize, VMALLOC_END as usize, VmapAreaCache)
        .unwrap_or_else(|e| panic!("vmalloc: bad range: {e}"));
    // SAFETY: CR3's PML4 is live for the kernel's lifetime and reachable through the direct map
    // (which covers all RAM); the layout (`layout.rs`, BOOTLOADER_CONFIG) keeps the bootloader
    // out of [VMALLOC_START, VMALLOC_END), so only this object will ever change the tables
    // under those PML4 entries, and it takes its table pages from the buddy allocator, all of
    // which the direct map reaches.
    let tables = unsafe {
        VmallocPageTables::new(
            pml4.start_address(),
            super::direct_map(),
            VirtAddr::new(VMALLOC_START),
            VirtAddr::new(VMALLOC_END),
        )
    }
    .unwrap_or_else(|e| panic!("vmalloc: cannot manage the page tables: {e}"));
    let mut space = VmallocSpace::new(areas, tables);
    let n = space
        .tables
        .preallocate(&VmallocPages, GfpFlags::GFP_KERNEL)
        .unwrap_or_else(|e| panic!("vmalloc: cannot preallocate the top-level page tables: {e}"));
    TOTALRAM_PAGES.store(super::node().totals().managed_pages as usize, Relaxed);
    VMAP.call_once(|| IrqSpinLock::new(space));
    super::page_alloc::register_shrinker(shrink_page_tables);
    crate::info!(
        "vmalloc: [{VMALLOC_START:#x}, {VMALLOC_END:#x}) {} TiB, {n} PDPT pages preallocated under its PML4 entries; TLB: invlpg up to {} pages, global flush above",
        (VMALLOC_END - VMALLOC_START) >> 40,
        tlb::TLB_FLUSH_ALL_THRESHOLD
    );
}

fn space_lock() -> &'static IrqSpinLock<Space> {
    VMAP.get().expect("vmalloc used before mm::vmalloc::init")
}

/// Takes the vmap lock. Its holder may be waiting for a TLB shootdown (vfree and vunmap flush
/// every CPU before the lock releases the range), so a CPU waiting for the lock, possibly with
/// interrupts off (vmalloc_to_pfn may be called so), serves flush requests meanwhile;
/// otherwise holder and waiter would wait for each other. The other allocator locks are never
/// held across a shootdown and stay plain `IrqSpinLock`s.
pub(super) fn space() -> IrqSpinLockGuard<'static, Space> {
    let lock = space_lock();
    loop {
        if let Some(guard) = lock.try_lock() {
            return guard;
        }
        while lock.is_locked() {
            crate::arch::smp_call::serve_tlb_flush();
            core::hint::spin_loop();
        }
    }
}

/// The vmap lock as [`vmalloc_with`](::mm::vmalloc::vmalloc_with) takes it: once to reserve
/// the area and once per chunk of pages mapped, never across page allocation or zeroing.
struct VmapLock;

impl ::mm::vmalloc::SpaceLock for VmapLock {
    type Alloc = VmapAreaCache;
    fn with<R>(&self, f: impl FnOnce(&mut Space) -> R) -> R {
        f(&mut space())
    }
}

/// vmalloc's shrinker: gives back the page tables and page directories that map nothing. They
/// stay after vfree, as on Linux, so that the next area at those addresses maps without
/// allocating, zeroing and freeing tables; this returns them under memory pressure (registered
/// with the page allocator's reclaim) and for exact free-page figures (the per-test leak check,
/// the stress mixes). Every CPU's TLB and paging-structure caches are flushed before the pages
/// are freed. Returns the pages freed; 0 when the vmap lock is held (reclaim may run inside a
/// vmalloc on this CPU, whose tables are in use anyway).
pub fn shrink_page_tables() -> usize {
    let Some(lock) = VMAP.get() else { return 0 };
    let Some(mut space) = lock.try_lock() else { return 0 };
    space.tables.shrink(&VmallocPages, tlb::flush_tlb_all_cpus)
}

/// Runs `f` on the vmalloc space and vmalloc's page provider under the lock: the benchmark
/// times the pieces of a vmalloc (area tree, page tables) on their own.
pub(crate) fn with_space_mut<R>(f: impl FnOnce(&mut Space, &dyn PageProvider) -> R) -> R {
    f(&mut space(), &VmallocPages)
}

/// Runs `f` on the vmalloc space under its lock (statistics, tests).
pub fn with_space<R>(f: impl FnOnce(&Space) -> R) -> R {
    f(&space())
}

/// Whether [`init`] has run.
pub fn is_ready() -> bool {
    VMAP.get().is_some()
}

/// Linux's `is_vmalloc_addr`: inside `[VMALLOC_START, VMALLOC_END)`.
pub fn is_vmalloc_addr(addr: *const u8) -> bool {
    (VMALLOC_START..VMALLOC_END).contains(&(addr as u64))
}

#[track_caller]
pub(crate) fn warn_failure(size: usize, gfp: GfpFlags, e: &VmError) {
    super::page_alloc::ALLOC_FAILURES.fetch_add(1, Relaxed);
    let loc = Location::caller();
    if !gfp.contains(GfpFlags::__GFP_NOWARN) && crate::log::ratelimit(loc) {
        crate::warn!(
            "vmalloc error: size {size}, mode:{:#x}({gfp:?}) at {}:{}: {e}",
            gfp.bits(),
            loc.file(),
            loc.line()
        );
    }
}

/// The interrupt-context check of vmalloc and vmap (Linux: `BUG_ON(in_interrupt())` in
/// `__get_vm_area_node`, plus `might_sleep`): reported with the caller and refused.
#[track_caller]
pub(super) fn check_context(what: &'static str) -> Result<(), VmError> {
    if crate::arch::in_interrupt() {
        let caller = Location::caller();
        VMALLOC_IN_INTERRUPT.fetch_add(1, Relaxed);
        let e = VmError::InInterrupt { what, caller };
        crate::error!("BUG: {what} {e}");
        return Err(e);
    }
    Ok(())
}

/// `__vmalloc_node(size, align, gfp)`: `size` bytes (rounded up to pages) of virtually
/// contiguous memory, aligned to `align` (a power of two, at least a page), followed by a guard
/// page. `__GFP_ZERO` zeroes it. The caller is recorded for `/proc/vmallocinfo`.
#[track_caller]
pub fn __vmalloc_node(size: usize, align: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
    __vmalloc_node_range(size, align, gfp, VmFlags::empty())
}

/// `__vmalloc_node_range(size, align, VMALLOC_START, VMALLOC_END, gfp, PAGE_KERNEL, vm_flags)`:
/// [`__vmalloc_node`] with area flags besides `VM_ALLOC` (`VM_USERMAP`).
#[track_caller]
#[inline(always)]
pub(super) fn __vmalloc_node_range(
    size: usize,
    align: usize,
    gfp: GfpFlags,
    vm_flags: VmFlags,
) -> Result<NonNull<u8>, VmError> {
    check_context("vmalloc")?;
    vfree_drain();
    let result = vmalloc_locked(size, align, gfp, vm_flags);
    if let Err(e) = &result {
        warn_failure(size, gfp, e);
    }
    result
}

#[track_caller]
fn vmalloc_locked(size: usize, align: usize, gfp: GfpFlags, flags: VmFlags) -> Result<NonNull<u8>, VmError> {
    let totalram = TOTALRAM_PAGES.load(Relaxed);
    let nr_pages = size.div_ceil(PAGE_SIZE);
    if nr_pages > totalram {
        return Err(VmError::MoreThanRam { nr_pages, totalram_pages: totalram });
    }
    let req = VmapAreaRequest { align, flags, ..VmapAreaRequest::new(size) };
    let area = ::mm::vmalloc::vmalloc_with(&VmapLock, &VmallocPages, gfp, req, tlb::flush_tlb_kernel_range)?;
    Ok(NonNull::new(area.start as *mut u8).expect("vmalloc areas are above VMALLOC_START"))
}

/// `vmalloc(size)`: `__vmalloc(size, GFP_KERNEL)`.
#[track_caller]
pub fn vmalloc(size: usize) -> Result<NonNull<u8>, VmError> {
    __vmalloc_node(size, PAGE_SIZE, GfpFlags::GFP_KERNEL)
}

/// `vzalloc(size)`: zeroed `vmalloc`.
#[track_caller]
pub fn vzalloc(size: usize) -> Result<NonNull<u8>, VmError> {
    __vmalloc_node(size, PAGE_SIZE, GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO)
}

/// `__vmalloc(size, gfp)`.
#[track_caller]
pub fn __vmalloc(size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
    __vmalloc_node(size, PAGE_SIZE, gfp)
}

/// A refused free is a bug in the caller: report it (error line with the caller), keep going.
#[track_caller]
pub(super) fn report_bad_free(what: &str, e: &VmError) {
    let loc = Location::caller();
    if !crate::log::ratelimit(loc) {
        return;
    }
    crate::error!("{what} refused at {}:{}: {e}", loc.file(), loc.line());
}

/// `vfree(addr)`: frees a vmalloc area by its start address; null is a no-op. In interrupt
/// context the free is deferred ([`vfree_atomic`]). An interior pointer, a guard-page address,
/// a kmalloc pointer, a vmap area or a double free is reported and refused, changing nothing.
#[track_caller]
pub fn vfree(addr: *const u8) -> Result<(), VmError> {
    if addr.is_null() {
        return Ok(());
    }
    if crate::arch::in_interrupt() {
        return vfree_atomic(addr);
    }
    vfree_drain();
    let result = release(addr, AreaKind::Vmalloc).map(|_| ());
    if let Err(e) = &result {
        report_bad_free("vfree", e);
    }
    result
}

/// The address checks shared by vfree and vunmap, then the release under the lock.
pub(super) fn release(addr: *const u8, kind: AreaKind) -> Result<VmapArea, VmError> {
    let a = addr as usize;
    if !is_vmalloc_addr(addr) {
        let direct_map = super::page_alloc::virt_to_phys(VirtAddr::new_truncate(a as u64)).is_some();
        return Err(VmError::NotVmalloc { addr: a, direct_map });
    }
    let mut space = space();
    release_locked(&mut space, a, kind)
}

fn release_locked(space: &mut Space, addr: usize, kind: AreaKind) -> Result<VmapArea, VmError> {
    let result = match kind {
        AreaKind::Vmalloc => space.vfree(&VmallocPages, addr, tlb::flush_tlb_kernel_range),
        AreaKind::Vmap | AreaKind::VmapPfn => space.vunmap(&VmallocPages, addr, tlb::flush_tlb_kernel_range),
        AreaKind::Ioremap => space.iounmap(&VmallocPages, addr, tlb::flush_tlb_kernel_range),
        // vm_map_ram mappings need their count: only vm_unmap_ram releases them.
        AreaKind::VmMapRam | AreaKind::VmapBlock => Err(VmallocError::WrongKind { addr, kind }),
    };
    Ok(result?)
}

/// `vmap(pages, VM_MAP)`: maps the caller's frames at consecutive virtual pages (with a guard
/// page after them) and returns the start. The frames stay the caller's.
///
/// # Safety
/// The caller owns the frames and must not free them before [`vunmap`] of the returned address.
#[track_caller]
pub unsafe fn vmap(pages: &[Pfn], flags: VmFlags) -> Result<NonNull<u8>, VmError> {
    check_context("vmap")?;
    if flags != VmFlags::VM_MAP {
        return Err(VmError::BadFlags { flags });
    }
    vfree_drain();
    let caller = Location::caller();
    // SAFETY: the caller owns the frames until vunmap (contract of this function).
    let area = unsafe {
        space().vmap(&VmallocPages, GfpFlags::GFP_KERNEL, pages, caller, tlb::flush_tlb_kernel_range)
    };
    match area {
        Ok(area) => Ok(NonNull::new(area.start as *mut u8).expect("vmap areas are above VMALLOC_START")),
        Err(e) => {
            let e = VmError::from(e);
            warn_failure(pages.len() * PAGE_SIZE, GfpFlags::GFP_KERNEL, &e);
            Err(e)
        }
    }
}

/// `vunmap(addr)`: unmaps a vmap area; its frames are not freed. Refused in interrupt context
/// (it may sleep: Linux's `BUG_ON(in_interrupt())`; there is no deferred vunmap).
#[track_caller]
pub fn vunmap(addr: *const u8) -> Result<(), VmError> {
    check_context("vunmap")?;
    let result = release(addr, AreaKind::Vmap).map(|_| ());
    if let Err(e) = &result {
        report_bad_free("vunmap", e);
    }
    result
}

/// `vmalloc_to_pfn`: the frame mapped at `addr` (any byte of a mapped page).
pub fn vmalloc_to_pfn(addr: *const u8) -> Option<Pfn> {
    if !is_vmalloc_addr(addr) {
        return None;
    }
    space().tables.vmalloc_to_pfn(VirtAddr::new(addr as u64))
}

/// `vmalloc_to_page`: the descriptor of the frame mapped at `addr`.
pub fn vmalloc_to_page(addr: *const u8) -> Option<&'static Page> {
    vmalloc_to_pfn(addr).and_then(|pfn| super::node().page(pfn))
}

/// The live area containing `addr` (its mappable part or its guard page).
pub fn find_vm_area(addr: *const u8) -> Option<(VmapArea, AddrPlace)> {
    space().areas.lookup(addr as usize)
}

/// What the vmalloc space holds, for tests and the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmallocCounts {
    pub nr_areas: usize,
    pub vmalloc_pages: usize,
    pub pagetable_pages: usize,
    pub free_bytes: usize,
}

/// The figures once the lazily freed areas are purged (their ranges free again), so that they
/// compare before and after a workload whatever it left parked.
pub fn counts() -> VmallocCounts {
    purge_vmap_area_lazy();
    with_space(|s| VmallocCounts {
        nr_areas: s.areas.nr_areas(),
        vmalloc_pages: s.areas.vmalloc_pages(),
        pagetable_pages: s.tables.nr_pagetable_pages(),
        free_bytes: s.areas.free_bytes(),
    })
}

/// Writes `/proc/vmallocinfo`: the live areas, then the ones waiting for the lazy purge
/// (`unpurged vm_area`).
pub fn write_vmallocinfo(mut w: &mut dyn fmt::Write) -> fmt::Result {
    space().areas.write_vmallocinfo(&mut w)
}

/// 6.12's `purge_vmap_area_lazy`: flushes the range of every area waiting for the lazy purge
/// on every CPU (one shootdown) and makes their ranges reusable; returns how many. vfree,
/// vunmap and iounmap park their ranges (see `mm::vmalloc::VmallocSpace::vfree`); the purge runs
/// past `lazy_max_pages`, when an allocation finds no room, from [`vm_unmap_aliases`], and
/// before the leak check and the stress mixes compare figures.
pub fn purge_vmap_area_lazy() -> usize {
    space().purge_vmap_area_lazy(tlb::flush_tlb_kernel_range)
}

/// Fills meminfo's `VmallocTotal`, `VmallocUsed`, `VmallocChunk` and `PageTables` (the
/// page-table pages vmalloc allocated; the boot page tables are in memory the bootloader
/// reserved, outside the managed pages, as the kernel image is).
pub fn fill_meminfo(info: &mut ::mm::stats::MemInfo) {
    let space = space();
    let v = space.areas.meminfo();
    info.vmalloc_total_kb = Some(v.total_kb);
    info.vmalloc_used_kb = Some(v.used_kb);
    info.vmalloc_chunk_kb = Some(v.chunk_kb);
    info.page_tables_kb = Some((space.tables.nr_pagetable_pages() * PAGE_SIZE / 1024) as u64);
}

/// Says what a vmalloc-range address is, for the fault report. Runs in exception handlers:
/// only `try_lock`s, never allocates.
pub fn describe(addr: u64, w: &mut dyn fmt::Write) -> fmt::Result {
    let Some(space) = VMAP.get().and_then(|s| s.try_lock()) else {
        return write!(
            w,
            "the vmalloc range [{VMALLOC_START:#x}, {VMALLOC_END:#x}) (area table busy or not set up: area unknown)"
        );
    };
    match space.areas.lookup(addr as usize) {
        Some((area, AddrPlace::Guard { offset })) => write!(
            w,
            "vmalloc guard page: {offset} bytes past the end of vmalloc area [{:#x}, {:#x}) ({} bytes) allocated at {}:{}",
            area.start,
            area.mapped_end(),
            area.usable_size(),
            area.caller.file(),
            area.caller.line()
        ),
        Some((area, AddrPlace::Inside { offset })) => write!(
            w,
            "vmalloc area [{:#x}, {:#x}) ({} bytes, {}) allocated at {}:{}, offset {offset:#x}",
            area.start,
            area.mapped_end(),
            area.usable_size(),
            area.kind.name(),
            area.caller.file(),
            area.caller.line()
        ),
        None => match space.areas.lookup_lazy(addr as usize) {
            Some(area) => write!(
                w,
                "freed {} area [{:#x}, {:#x}) ({} bytes) allocated at {}:{}, offset {:#x}: use after {} (range waiting for the lazy purge)",
                area.kind.name(),
                area.start,
                area.mapped_end(),
                area.usable_size(),
                area.caller.file(),
                area.caller.line(),
                addr as usize - area.start,
                area.kind.release_fn()
            ),
            None => write!(
                w,
                "the vmalloc range [{VMALLOC_START:#x}, {VMALLOC_END:#x}), not inside any live vmalloc area (freed or never allocated)"
            ),
        },
    }
}
