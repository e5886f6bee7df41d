//! Mapping vmalloc areas into the kernel page tables (Linux's `vmap_pages_range` /
//! `vunmap_range`), with the `x86_64` crate's [`OffsetPageTable`] over the direct map.
//!
//! - Page-table pages come from the [`PageProvider`] (order 0; the crate zeroes a new table
//!   before linking it), are marked [`PageState::PageTable`] and counted (`PageTables` in
//!   meminfo). When an unmap leaves a page table (PT) or page directory (PD) empty, it is freed
//!   and its parent entry cleared. PDPT pages — the ones PML4 entries point at — are never freed
//!   and the PML4 itself is never touched beyond filling empty entries: on x86_64 Linux every
//!   address space shares the kernel's PML4 entries, so they must be stable
//!   ([`VmallocPageTables::preallocate`] fills them all at boot like `preallocate_vmalloc_pages`).
//! - No privileged instruction runs here: TLB flushes are reported as a [`TlbFlushRange`] and the
//!   kernel performs them (`invlpg`, or a CR4.PGE toggle: the mappings are global).
//! - A map that fails half way (no page-table page) unmaps what it mapped and frees the tables
//!   that became empty, so it leaves the page tables as they were.

use core::fmt;

use x86_64::structures::paging::mapper::MapToError;
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::addr::{DirectMap, Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{PageProvider, PageState};

/// Size covered by one PML4 entry (512 GiB): the managed range must be made of whole ones.
pub const P4_ENTRY_SPAN: u64 = 1 << 39;
const P3_ENTRY_SPAN: u64 = 1 << 30;
const P2_ENTRY_SPAN: u64 = 1 << 21;

/// Flags of a vmalloc mapping (Linux's `PAGE_KERNEL`): present, writable, global (the same in
/// every address space), not executable. NO_EXECUTE needs EFER.NXE, which the bootloader sets.
pub const PAGE_KERNEL: PageTableFlags = PageTableFlags::PRESENT
    .union(PageTableFlags::WRITABLE)
    .union(PageTableFlags::GLOBAL)
    .union(PageTableFlags::NO_EXECUTE);
/// Flags of the entries pointing at lower-level tables.
const TABLE_FLAGS: PageTableFlags = PageTableFlags::PRESENT.union(PageTableFlags::WRITABLE);

/// Pages whose translation the kernel must flush from the TLB: `[start, start + nr_pages * 4 KiB)`.
///
/// vmalloc mappings are GLOBAL, and a CR3 reload does not drop global entries: flush with
/// `invlpg` per page, or for large ranges by toggling CR4.PGE (Linux's `flush_tlb_kernel_range`
/// falls back to a full flush above 33 pages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbFlushRange {
    pub start: VirtAddr,
    pub nr_pages: usize,
}

impl TlbFlushRange {
    pub fn is_empty(&self) -> bool {
        self.nr_pages == 0
    }
    pub fn end(&self) -> VirtAddr {
        self.start + (self.nr_pages * PAGE_SIZE) as u64
    }
    /// The page addresses to `invlpg`.
    pub fn pages(&self) -> impl Iterator<Item = VirtAddr> {
        let start = self.start;
        (0..self.nr_pages).map(move |i| start + (i * PAGE_SIZE) as u64)
    }
}

/// Why a page-table operation was refused. The page tables are as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgTableError {
    /// `VmallocPageTables::new`: the range is empty or not made of whole PML4 entries.
    BadRange { start: VirtAddr, end: VirtAddr },
    /// The address is not page aligned.
    Misaligned { addr: VirtAddr },
    /// `[addr, addr + nr_pages pages)` is not inside the managed range (or overflows).
    OutOfRange { addr: VirtAddr, nr_pages: usize },
    /// Mapping over an existing mapping.
    AlreadyMapped { addr: VirtAddr },
    /// No page-table page could be allocated while mapping `addr`.
    NoMemory { addr: VirtAddr },
    /// A huge-page mapping covers `addr`; vmalloc ranges only hold 4 KiB mappings.
    HugePage { addr: VirtAddr },
    /// Unmapping or translating a page that is not mapped.
    NotMapped { addr: VirtAddr },
}

impl fmt::Display for PgTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PgTableError::*;
        match *self {
            BadRange { start, end } => write!(
                f,
                "page-table range {:#x}-{:#x} is empty or not made of whole 512 GiB PML4 entries",
                start.as_u64(),
                end.as_u64()
            ),
            Misaligned { addr } => write!(f, "{:#x} is not page aligned", addr.as_u64()),
            OutOfRange { addr, nr_pages } => write!(
                f,
                "{nr_pages} pages at {:#x} are not inside the vmalloc page-table range",
                addr.as_u64()
            ),
            AlreadyMapped { addr } => write!(f, "{:#x} is already mapped", addr.as_u64()),
            NoMemory { addr } => {
                write!(f, "out of memory for a page-table page while mapping {:#x}", addr.as_u64())
            }
            HugePage { addr } => write!(f, "{:#x} is covered by a huge-page mapping", addr.as_u64()),
            NotMapped { addr } => write!(f, "{:#x} is not mapped", addr.as_u64()),
        }
    }
}

/// The part of the kernel page tables that covers the vmalloc range.
pub struct VmallocPageTables {
    /// The PML4, through the direct map.
    pml4: *mut PageTable,
    dm: DirectMap,
    start: VirtAddr,
    end: VirtAddr,
    /// Page-table pages allocated here and still in use (meminfo's `PageTables`).
    nr_tables: usize,
}

// SAFETY: the raw pointer is the PML4 in the direct map; this object is the only one changing
// the part of the tables it covers (contract of `new`), and all changes need `&mut self`, so
// moving it to another CPU (behind a lock) is fine.
unsafe impl Send for VmallocPageTables {}

/// Hands out page-table pages from the provider, marking and counting them.
struct TableAlloc<'a, P: PageProvider + ?Sized> {
    provider: &'a P,
    gfp: GfpFlags,
    nr_tables: &'a mut usize,
}

// SAFETY: every frame returned was just allocated from the provider, is owned by nobody else
// and is not in use; the crate zeroes it before linking it as a table.
unsafe impl<P: PageProvider + ?Sized> FrameAllocator<Size4KiB> for TableAlloc<'_, P> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        // No __GFP_ZERO: OffsetPageTable zeroes every table it creates.
        let pfn = self.provider.alloc_pages(self.gfp, 0).ok()?;
        if let Some(page) = self.provider.page(pfn) {
            page.set_state(PageState::PageTable);
        }
        *self.nr_tables += 1;
        Some(PhysFrame::containing_address(pfn.phys()))
    }
}

/// Gives a page-table page back to the provider.
fn free_table<P: PageProvider + ?Sized>(provider: &P, nr_tables: &mut usize, pa: PhysAddr) {
    let pfn = Pfn::from_phys(pa);
    if let Some(page) = provider.page(pfn) {
        // The provider takes back blocks in the state it handed them out in.
        page.set_state(PageState::Allocated);
    }
    let freed = provider.free_pages(pfn, 0);
    // We allocated it with order 0 and nobody else owns it; a refusal means the provider's own
    // state is corrupt, and leaking the page is the only safe answer.
    debug_assert!(freed.is_ok(), "provider refused a page-table page: {freed:?}");
    *nr_tables -= 1;
}

impl VmallocPageTables {
    /// Manages the page tables of `[start, end)` under the PML4 at physical address `pml4`.
    ///
    /// # Safety
    /// - `pml4` is the physical address of a live top-level page table, reachable through `dm`;
    /// - for the life of this object, the entries covering `[start, end)` (at every level) are
    ///   changed only through it, and the page-table pages below those PML4 entries are either
    ///   none yet or were allocated from the provider later passed to its methods;
    /// - `dm` reaches every page-table page the provider hands out.
    pub unsafe fn new(
        pml4: PhysAddr,
        dm: DirectMap,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<Self, PgTableError> {
        if start >= end
            || !start.as_u64().is_multiple_of(P4_ENTRY_SPAN)
            || !end.as_u64().is_multiple_of(P4_ENTRY_SPAN)
        {
            return Err(PgTableError::BadRange { start, end });
        }
        let pml4 = dm.virt(pml4) as *mut PageTable;
        Ok(VmallocPageTables { pml4, dm, start, end, nr_tables: 0 })
    }

    /// Page-table pages allocated by this object and in use (meminfo's `PageTables`).
    pub fn nr_pagetable_pages(&self) -> usize {
        self.nr_tables
    }

    fn mapper(&mut self) -> OffsetPageTable<'_> {
        // SAFETY: `pml4` is the live PML4 reachable through the direct map whose base is
        // `dm.base()` (contract of `new`), and `&mut self` makes this the only mapper.
        unsafe { OffsetPageTable::new(&mut *self.pml4, self.dm.base()) }
    }

    fn check_range(&self, addr: VirtAddr, nr_pages: usize) -> Result<(), PgTableError> {
        if !addr.is_aligned(PAGE_SIZE as u64) {
            return Err(PgTableError::Misaligned { addr });
        }
        let len = (nr_pages as u64).checked_mul(PAGE_SIZE as u64);
        let end = len.and_then(|len| addr.as_u64().checked_add(len));
        match end {
            Some(end) if addr >= self.start && end <= self.end.as_u64() => Ok(()),
            _ => Err(PgTableError::OutOfRange { addr, nr_pages }),
        }
    }

    /// Fills every empty PML4 entry of the range with a zeroed PDPT page, so that the PML4
    /// entries never change afterwards and can be shared by every address space (Linux's
    /// `preallocate_vmalloc_pages`). Returns how many pages were allocated. On failure, frees
    /// the ones this call allocated.
    pub fn preallocate<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        gfp: GfpFlags,
    ) -> Result<usize, PgTableError> {
        let mut done = 0;
        let mut addr = self.start;
        while addr < self.end {
            // SAFETY: the PML4 is live (contract of `new`) and `&mut self` is exclusive.
            let entry = unsafe { &mut (&mut *self.pml4)[addr.p4_index()] };
            if entry.is_unused() {
                let mut alloc = TableAlloc { provider, gfp, nr_tables: &mut self.nr_tables };
                let Some(frame) = alloc.allocate_frame() else {
                    self.unwind_preallocate(provider, done);
                    return Err(PgTableError::NoMemory { addr });
                };
                // SAFETY: a fresh page from the provider, reachable through the direct map.
                unsafe { (*(self.dm.virt(frame.start_address()) as *mut PageTable)).zero() };
                entry.set_frame(frame, TABLE_FLAGS);
                done += 1;
            }
            addr += P4_ENTRY_SPAN;
        }
        Ok(done)
    }

    /// Frees the PDPT pages of the first `n` entries that `preallocate` filled (they are still
    /// empty: nothing else ran in between).
    fn unwind_preallocate<P: PageProvider + ?Sized>(&mut self, provider: &P, mut n: usize) {
        let mut addr = self.start;
        while n > 0 && addr < self.end {
            // SAFETY: as in `preallocate`.
            let entry = unsafe { &mut (&mut *self.pml4)[addr.p4_index()] };
            if !entry.is_unused() {
                // SAFETY: a table page reachable through the direct map.
                let table = unsafe { &*(self.dm.virt(entry.addr()) as *const PageTable) };
                if table.iter().all(|e| e.is_unused()) {
                    free_table(provider, &mut self.nr_tables, entry.addr());
                    entry.set_unused();
                    n -= 1;
                }
            }
            addr += P4_ENTRY_SPAN;
        }
    }

    /// Maps `frames` at consecutive pages from `addr` with [`PAGE_KERNEL`], allocating missing
    /// page-table pages from `provider` with `gfp`.
    ///
    /// No TLB flush is needed afterwards: x86 does not cache non-present translations. On error
    /// nothing stays mapped and the tables allocated by this call are freed, but the pages mapped
    /// before the failure were present for a while, so the kernel must flush
    /// `[addr, addr + frames.len() pages)` before that virtual range is used again (Linux flushes
    /// when it purges a freed area).
    ///
    /// # Safety
    /// The frames must not be freed while mapped, and whoever uses the mapping must own them.
    pub unsafe fn map_pages<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        gfp: GfpFlags,
        addr: VirtAddr,
        frames: &[Pfn],
    ) -> Result<(), PgTableError> {
        self.check_range(addr, frames.len())?;
        let dm = self.dm;
        // SAFETY: as in `mapper`; `nr_tables` is borrowed separately from the PML4.
        let mut mapper = unsafe { OffsetPageTable::new(&mut *self.pml4, dm.base()) };
        let mut alloc = TableAlloc { provider, gfp, nr_tables: &mut self.nr_tables };
        let mut failure = None;
        for (i, pfn) in frames.iter().enumerate() {
            let page = Page::<Size4KiB>::containing_address(addr + (i * PAGE_SIZE) as u64);
            let frame = PhysFrame::containing_address(pfn.phys());
            // SAFETY: the page is in the vmalloc range that this object owns; the caller owns
            // the frame (contract of this function).
            match unsafe { mapper.map_to_with_table_flags(page, frame, PAGE_KERNEL, TABLE_FLAGS, &mut alloc) }
            {
                // The flush is the kernel's business (see the type's docs).
                Ok(flush) => flush.ignore(),
                Err(e) => {
                    let addr = page.start_address();
                    let err = match e {
                        MapToError::FrameAllocationFailed => PgTableError::NoMemory { addr },
                        MapToError::ParentEntryHugePage => PgTableError::HugePage { addr },
                        MapToError::PageAlreadyMapped(_) => PgTableError::AlreadyMapped { addr },
                    };
                    failure = Some((i, err));
                    break;
                }
            }
        }
        let Some((mapped, err)) = failure else { return Ok(()) };
        for i in 0..mapped {
            let page = Page::<Size4KiB>::containing_address(addr + (i * PAGE_SIZE) as u64);
            let unmapped = mapper.unmap(page);
            debug_assert!(unmapped.is_ok(), "page mapped a moment ago is not mapped");
            if let Ok((_, flush)) = unmapped {
                flush.ignore();
            }
        }
        // Include the failed page: the tables created for it may be empty now.
        self.free_empty_tables(provider, addr, addr + ((mapped + 1) * PAGE_SIZE) as u64);
        Err(err)
    }

    /// Unmaps `nr_pages` pages from `addr`, passing each frame to `on_frame` in address order,
    /// and frees the page tables that became empty. Every page must be mapped, else nothing is
    /// unmapped. The returned range must be flushed from the TLB before the frames are reused.
    pub fn unmap_pages<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        addr: VirtAddr,
        nr_pages: usize,
        mut on_frame: impl FnMut(Pfn),
    ) -> Result<TlbFlushRange, PgTableError> {
        self.check_range(addr, nr_pages)?;
        // Check everything first so that a bad request changes nothing.
        for i in 0..nr_pages {
            let a = addr + (i * PAGE_SIZE) as u64;
            self.translate(a)?;
        }
        let mut mapper = self.mapper();
        for i in 0..nr_pages {
            let page = Page::<Size4KiB>::containing_address(addr + (i * PAGE_SIZE) as u64);
            match mapper.unmap(page) {
                Ok((frame, flush)) => {
                    // The flush is reported to the caller as a range.
                    flush.ignore();
                    on_frame(Pfn::from_phys(frame.start_address()));
                }
                // Checked above; only corrupt page tables get here.
                Err(e) => unreachable!("page checked as mapped then failed to unmap: {e:?}"),
            }
        }
        let end = addr + (nr_pages * PAGE_SIZE) as u64;
        self.free_empty_tables(provider, addr, end);
        Ok(TlbFlushRange { start: addr, nr_pages })
    }

    /// Frees the PTs and then the PDs covering `[lo, hi)` that have no entry left, clearing the
    /// parent entries. PDPTs (under PML4 entries) are never freed.
    fn free_empty_tables<P: PageProvider + ?Sized>(&mut self, provider: &P, lo: VirtAddr, hi: VirtAddr) {
        for (span, level) in [(P2_ENTRY_SPAN, 1), (P3_ENTRY_SPAN, 2)] {
            let mut a = lo.align_down(span);
            while a < hi {
                if let Some(entry) = self.entry_ptr(a, level) {
                    // SAFETY: `entry_ptr` returns a pointer into a live table of our range, and
                    // `&mut self` makes us its only user.
                    let entry = unsafe { &mut *entry };
                    let flags = entry.flags();
                    if flags.contains(PageTableFlags::PRESENT) && !flags.contains(PageTableFlags::HUGE_PAGE) {
                        // SAFETY: a present non-huge entry points at a table of ours, reachable
                        // through the direct map.
                        let table = unsafe { &*(self.dm.virt(entry.addr()) as *const PageTable) };
                        if table.iter().all(|e| e.is_unused()) {
                            free_table(provider, &mut self.nr_tables, entry.addr());
                            entry.set_unused();
                        }
                    }
                }
                a += span;
            }
        }
    }

    /// Pointer to the entry for `addr` in the table of `level` (1 = PD entry pointing at a PT,
    /// 2 = PDPT entry pointing at a PD), if the tables above it exist.
    fn entry_ptr(&self, addr: VirtAddr, level: u32) -> Option<*mut PageTableEntry> {
        // SAFETY: the PML4 is live (contract of `new`).
        let mut table = self.pml4;
        let indices = [addr.p4_index(), addr.p3_index(), addr.p2_index()];
        let depth = 3 - level as usize;
        for &idx in &indices[..depth] {
            // SAFETY: `table` is a live table reachable through the direct map.
            let e = unsafe { &(&*table)[idx] };
            let flags = e.flags();
            if !flags.contains(PageTableFlags::PRESENT) || flags.contains(PageTableFlags::HUGE_PAGE) {
                return None;
            }
            table = self.dm.virt(e.addr()) as *mut PageTable;
        }
        // SAFETY: as above; the reference ends here, the caller gets a raw pointer.
        Some(unsafe { &mut (&mut *table)[indices[depth]] as *mut PageTableEntry })
    }

    /// The frame mapped at `addr` (Linux's `vmalloc_to_pfn`): a read-only walk of the tables.
    pub fn vmalloc_to_pfn(&self, addr: VirtAddr) -> Option<Pfn> {
        self.translate(addr).ok()
    }

    /// Like [`vmalloc_to_pfn`](Self::vmalloc_to_pfn), saying why there is no frame.
    pub fn translate(&self, addr: VirtAddr) -> Result<Pfn, PgTableError> {
        if addr < self.start || addr >= self.end {
            return Err(PgTableError::OutOfRange { addr, nr_pages: 1 });
        }
        let mut table = self.pml4 as *const PageTable;
        let indices = [addr.p4_index(), addr.p3_index(), addr.p2_index(), addr.p1_index()];
        for (level, &idx) in indices.iter().enumerate() {
            // SAFETY: `table` is a live table reachable through the direct map; entries are
            // plain `u64`s and only read.
            let e = unsafe { &(&*table)[idx] };
            let flags = e.flags();
            if !flags.contains(PageTableFlags::PRESENT) {
                return Err(PgTableError::NotMapped { addr });
            }
            if level == 3 {
                return Ok(Pfn::from_phys(e.addr()));
            }
            if level > 0 && flags.contains(PageTableFlags::HUGE_PAGE) {
                return Err(PgTableError::HugePage { addr });
            }
            table = self.dm.virt(e.addr()) as *const PageTable;
        }
        unreachable!("the loop returns at level 3")
    }
}
