//! Mapping vmalloc areas into the kernel page tables (Linux's `vmap_pages_range` /
//! `vunmap_range`), walking the tables by hand over the direct map: one descent per page table
//! (2 MiB of addresses), then a loop over its PTEs.
//!
//! - Page-table pages come from the [`PageProvider`] (order 0, zeroed here before they are
//!   linked), are marked [`PageState::PageTable`] and counted (`PageTables` in meminfo). They
//!   stay once allocated, as on Linux, which never frees vmalloc page tables: the next area at
//!   those addresses maps without allocating, zeroing or freeing a table.
//!   [`VmallocPageTables::shrink`] gives the empty PTs and PDs back under memory pressure (the
//!   kernel's shrinker), with the TLB flush that freeing a page table needs. PDPT pages (the
//!   ones PML4 entries point at) are never freed and the PML4 itself is never touched beyond
//!   filling empty entries: on x86_64 Linux every address space shares the kernel's PML4
//!   entries, so they must be stable ([`VmallocPageTables::preallocate`] fills them all at boot
//!   like `preallocate_vmalloc_pages`).
//! - No privileged instruction runs here: TLB flushes are reported as a [`TlbFlushRange`] (or
//!   asked of a callback) and the kernel performs them (`invlpg`, or a CR4.PGE toggle: the
//!   mappings are global).
//! - A map that fails half way (no page-table page, a page already mapped) clears what it
//!   mapped, so it leaves no mapping behind.
//! - Huge vmalloc ([`map_huge_pmd`](VmallocPageTables::map_huge_pmd)): one PMD entry with the
//!   PS bit maps a 2 MiB-aligned, physically contiguous 2 MiB block (6.12's
//!   `vmap_try_huge_pmd`); unmapping and translating go through such entries as through page
//!   tables.

mod huge;
mod shrink;

pub use huge::{HPAGE_PMD_NR, PMD_ORDER, PMD_SIZE};

use core::fmt;

use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{
    FrameAllocator, PageTable, PageTableFlags, PageTableIndex, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::addr::{DirectMap, Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{PageProvider, PageState};

/// Size covered by one PML4 entry (512 GiB): the managed range must be made of whole ones.
pub const P4_ENTRY_SPAN: u64 = 1 << 39;

/// Page-table pages [`VmallocPageTables::shrink`] unlinks before one TLB flush frees them.
pub const SHRINK_BATCH: usize = 64;

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
    /// A huge-page (2 MiB PMD) mapping covers `addr`, and the request would map 4 KiB pages
    /// into it or unmap only part of it.
    HugePage { addr: VirtAddr },
    /// A huge-page mapping at `addr` of `phys`: one of them is not 2 MiB aligned.
    HugeMisaligned { addr: VirtAddr, phys: PhysAddr },
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
            HugePage { addr } => write!(
                f,
                "{:#x} is covered by a 2 MiB huge-page mapping, which is mapped and unmapped only whole",
                addr.as_u64()
            ),
            HugeMisaligned { addr, phys } => write!(
                f,
                "a 2 MiB mapping of {:#x} at {:#x}: both must be 2 MiB aligned",
                phys.as_u64(),
                addr.as_u64()
            ),
            NotMapped { addr } => write!(f, "{:#x} is not mapped", addr.as_u64()),
        }
    }
}

/// A present PMD (page-directory) entry: a page table below it, or a 2 MiB huge mapping.
#[derive(Clone, Copy)]
enum Pmd {
    Table(*mut PageTable),
    Huge(*mut PageTableEntry),
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
        // No __GFP_ZERO: the caller zeroes the table before linking it.
        let pfn = self.provider.alloc_pages(self.gfp, 0).ok()?;
        if let Some(page) = self.provider.page(pfn) {
            page.set_state(PageState::PageTable);
        }
        *self.nr_tables += 1;
        Some(PhysFrame::containing_address(pfn.phys()))
    }
}

/// The 512 entries of the table at `pt` (`PageTable` is `repr(C)` around exactly that array,
/// and indexes only one entry at a time).
///
/// # Safety
/// `pt` points at a live page table that nothing else accesses for `'a`.
unsafe fn entries<'a>(pt: *mut PageTable) -> &'a mut [PageTableEntry; 512] {
    // SAFETY: the caller's contract; the cast is layout-preserving (see above).
    unsafe { &mut *pt.cast::<[PageTableEntry; 512]>() }
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
    /// page-table pages from `provider` with `gfp` (Linux's `vmap_pages_range`). The walk
    /// descends once per page table (2 MiB) and then writes its PTEs in a loop
    /// (`vmap_pte_range`); page-table pages, once allocated, stay (as Linux keeps them) until
    /// [`shrink`](Self::shrink) gives the empty ones back.
    ///
    /// No TLB flush is needed afterwards: x86 does not cache non-present translations. On error
    /// nothing stays mapped (tables this call allocated stay, empty, for the next map or the
    /// shrinker), but the pages mapped before the failure were present for a while, so the
    /// kernel must flush `[addr, addr + frames.len() pages)` before that virtual range is used
    /// again (Linux flushes when it purges a freed area).
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
        let mut done = 0;
        while done < frames.len() {
            let at = addr + (done * PAGE_SIZE) as u64;
            let pt = match self.pt_or_create(provider, gfp, at) {
                Ok(pt) => pt,
                Err(e) => {
                    self.clear_ptes(addr, done);
                    return Err(e);
                }
            };
            let first = usize::from(at.p1_index());
            let n = (512 - first).min(frames.len() - done);
            for (k, pfn) in frames[done..done + n].iter().enumerate() {
                // SAFETY: `pt` is a live page table of our range (from `pt_or_create`), reached
                // through the direct map, and `&mut self` makes this the only writer.
                let entry = unsafe { &mut entries(pt)[first + k] };
                if !entry.is_unused() {
                    self.clear_ptes(addr, done + k);
                    return Err(PgTableError::AlreadyMapped { addr: at + (k * PAGE_SIZE) as u64 });
                }
                entry.set_addr(pfn.phys(), PAGE_KERNEL);
            }
            done += n;
        }
        Ok(())
    }

    /// Maps the `nr_pages` consecutive frames from `first` at consecutive pages from `addr` with
    /// the PTE flags `prot` (Linux's `ioremap_page_range` / `vmap_range_noflush` with 4 KiB
    /// pages). The frames need not be RAM (MMIO): nothing reads them or their descriptors. As
    /// [`map_pages`](Self::map_pages) otherwise: the same walk, and on error nothing stays
    /// mapped and the range must be flushed before reuse.
    ///
    /// # Safety
    /// Whoever uses the mapping must own the physical range; if it is RAM, it must not be
    /// freed while mapped.
    pub unsafe fn map_pfn_range<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        gfp: GfpFlags,
        addr: VirtAddr,
        first: Pfn,
        nr_pages: usize,
        prot: PageTableFlags,
    ) -> Result<(), PgTableError> {
        self.check_range(addr, nr_pages)?;
        let mut done = 0;
        while done < nr_pages {
            let at = addr + (done * PAGE_SIZE) as u64;
            let pt = match self.pt_or_create(provider, gfp, at) {
                Ok(pt) => pt,
                Err(e) => {
                    self.clear_ptes(addr, done);
                    return Err(e);
                }
            };
            let first_pte = usize::from(at.p1_index());
            let n = (512 - first_pte).min(nr_pages - done);
            for k in 0..n {
                // SAFETY: as in `map_pages`.
                let entry = unsafe { &mut entries(pt)[first_pte + k] };
                if !entry.is_unused() {
                    self.clear_ptes(addr, done + k);
                    return Err(PgTableError::AlreadyMapped { addr: at + (k * PAGE_SIZE) as u64 });
                }
                entry.set_addr(Pfn(first.0 + (done + k) as u64).phys(), prot);
            }
            done += n;
        }
        Ok(())
    }

    /// Unmaps `nr_pages` pages from `addr`, passing each frame to `on_frame` in address order
    /// (Linux's `vunmap_range_noflush`: one descent per page table, then a loop over its PTEs).
    /// A huge PMD in the range is cleared whole (`pmd_clear_huge`), passing its 512 frames; it
    /// has no page table below it, so none is freed. Every page must be mapped and every huge
    /// PMD covered whole, else nothing is unmapped (6.12 WARNs and clears a partly covered huge
    /// PMD anyway). Page-table pages stay. The returned range must be flushed from the TLB
    /// before the frames or the range are reused.
    pub fn unmap_pages<P: PageProvider + ?Sized>(
        &mut self,
        _provider: &P,
        addr: VirtAddr,
        nr_pages: usize,
        mut on_frame: impl FnMut(Pfn),
    ) -> Result<TlbFlushRange, PgTableError> {
        self.check_range(addr, nr_pages)?;
        // Check everything first so that a bad request changes nothing.
        self.for_each_pmd(addr, nr_pages, |pmd, first, n, at| match pmd {
            Pmd::Table(pt) => {
                // SAFETY: `for_each_pmd` passes live page tables of our range.
                let entries = unsafe { &entries(pt)[first..first + n] };
                match entries.iter().position(|e| !e.flags().contains(PageTableFlags::PRESENT)) {
                    Some(k) => Err(PgTableError::NotMapped { addr: at + (k * PAGE_SIZE) as u64 }),
                    None => Ok(()),
                }
            }
            Pmd::Huge(_) if first != 0 || n != 512 => Err(PgTableError::HugePage { addr: at }),
            Pmd::Huge(_) => Ok(()),
        })?;
        let cleared = self.for_each_pmd(addr, nr_pages, |pmd, first, n, _| {
            match pmd {
                Pmd::Table(pt) => {
                    // SAFETY: as above, and `&mut self` makes this the only writer.
                    for entry in unsafe { &mut entries(pt)[first..first + n] } {
                        on_frame(Pfn::from_phys(entry.addr()));
                        entry.set_unused();
                    }
                }
                Pmd::Huge(pmd) => {
                    // SAFETY: a live PD entry of our range (from `for_each_pmd`); `&mut self`.
                    let pmd = unsafe { &mut *pmd };
                    let head = Pfn::from_phys(pmd.addr());
                    pmd.set_unused();
                    (0..512).for_each(|i| on_frame(head.add(i)));
                }
            }
            Ok(())
        });
        debug_assert!(cleared.is_ok(), "tables checked a moment ago are gone: {cleared:?}");
        Ok(TlbFlushRange { start: addr, nr_pages })
    }

    /// Clears the first `n` PTEs from `addr`, which this object's `map_pages` just wrote.
    fn clear_ptes(&mut self, addr: VirtAddr, n: usize) {
        let cleared = self.for_each_pt(addr, n, |pt, first, n, _| {
            // SAFETY: `for_each_pt` passes live page tables of our range; `&mut self`.
            for entry in unsafe { &mut entries(pt)[first..first + n] } {
                entry.set_unused();
            }
            Ok(())
        });
        debug_assert!(cleared.is_ok(), "tables written a moment ago are gone: {cleared:?}");
    }

    /// Calls `f(pt, first, n, at)` for each page table covering `[addr, addr + nr_pages)`:
    /// the PTEs `first..first + n` of table `pt` cover the pages from `at`. Stops at the first
    /// error of `f`, or where a table is missing (`NotMapped`) or a huge page is (`HugePage`).
    fn for_each_pt(
        &self,
        addr: VirtAddr,
        nr_pages: usize,
        mut f: impl FnMut(*mut PageTable, usize, usize, VirtAddr) -> Result<(), PgTableError>,
    ) -> Result<(), PgTableError> {
        self.for_each_pmd(addr, nr_pages, |pmd, first, n, at| match pmd {
            Pmd::Table(pt) => f(pt, first, n, at),
            Pmd::Huge(_) => Err(PgTableError::HugePage { addr: at }),
        })
    }

    /// Calls `f(pmd, first, n, at)` for each PMD entry covering `[addr, addr + nr_pages)`: its
    /// 4 KiB slots `first..first + n` (PTEs of a table, or pages of a huge mapping) cover the
    /// pages from `at`. Stops at the first error of `f`, or where a table is missing.
    fn for_each_pmd(
        &self,
        addr: VirtAddr,
        nr_pages: usize,
        mut f: impl FnMut(Pmd, usize, usize, VirtAddr) -> Result<(), PgTableError>,
    ) -> Result<(), PgTableError> {
        let mut done = 0;
        while done < nr_pages {
            let at = addr + (done * PAGE_SIZE) as u64;
            let pmd = self.pmd_of(at)?;
            let first = usize::from(at.p1_index());
            let n = (512 - first).min(nr_pages - done);
            f(pmd, first, n, at)?;
            done += n;
        }
        Ok(())
    }

    /// What the present PMD entry covering `addr` holds, if the tables above it exist.
    fn pmd_of(&self, addr: VirtAddr) -> Result<Pmd, PgTableError> {
        let mut table = self.pml4;
        for (level, idx) in [addr.p4_index(), addr.p3_index(), addr.p2_index()].into_iter().enumerate() {
            // SAFETY: `table` is a live table of our range reached through the direct map.
            let e = unsafe { &mut entries(table)[usize::from(idx)] };
            let flags = e.flags();
            if !flags.contains(PageTableFlags::PRESENT) {
                return Err(PgTableError::NotMapped { addr });
            }
            if flags.contains(PageTableFlags::HUGE_PAGE) {
                // Only PMDs are mapped huge here; a 1 GiB PUD leaf is nobody's.
                return if level == 2 { Ok(Pmd::Huge(e)) } else { Err(PgTableError::HugePage { addr }) };
            }
            table = self.dm.virt(e.addr()) as *mut PageTable;
        }
        Ok(Pmd::Table(table))
    }

    /// The page table covering `addr`, allocating (zeroed) the PDPT, PD and PT on the way where
    /// they are missing (Linux's `pud_alloc`/`pmd_alloc`/`pte_alloc_kernel`).
    fn pt_or_create<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        gfp: GfpFlags,
        addr: VirtAddr,
    ) -> Result<*mut PageTable, PgTableError> {
        self.table_or_create(provider, gfp, addr, &[addr.p4_index(), addr.p3_index(), addr.p2_index()])
    }

    /// The table reached from the PML4 through the entries `indices`, allocating (zeroed) the
    /// missing ones on the way.
    fn table_or_create<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        gfp: GfpFlags,
        addr: VirtAddr,
        indices: &[PageTableIndex],
    ) -> Result<*mut PageTable, PgTableError> {
        let mut table = self.pml4;
        for &idx in indices {
            // SAFETY: `table` is a live table of our range reached through the direct map, and
            // `&mut self` makes this the only writer of the range's entries.
            let e = unsafe { &mut entries(table)[usize::from(idx)] };
            let flags = e.flags();
            if flags.contains(PageTableFlags::HUGE_PAGE) {
                return Err(PgTableError::HugePage { addr });
            }
            if !flags.contains(PageTableFlags::PRESENT) {
                let mut alloc = TableAlloc { provider, gfp, nr_tables: &mut self.nr_tables };
                let frame = alloc.allocate_frame().ok_or(PgTableError::NoMemory { addr })?;
                // SAFETY: a fresh page from the provider, reachable through the direct map and
                // not yet linked: zeroed before the entry makes the walker see it.
                unsafe { (*(self.dm.virt(frame.start_address()) as *mut PageTable)).zero() };
                e.set_frame(frame, TABLE_FLAGS);
            }
            table = self.dm.virt(e.addr()) as *mut PageTable;
        }
        Ok(table)
    }

    /// The frame mapped at `addr` (Linux's `vmalloc_to_pfn`): a read-only walk of the tables.
    pub fn vmalloc_to_pfn(&self, addr: VirtAddr) -> Option<Pfn> {
        self.translate(addr).ok()
    }

    /// Like [`vmalloc_to_pfn`](Self::vmalloc_to_pfn), saying why there is no frame.
    pub fn translate(&self, addr: VirtAddr) -> Result<Pfn, PgTableError> {
        self.lookup_pte(addr).map(|(pfn, _)| pfn)
    }

    /// The frame mapped at `addr` and the flags of the PTE mapping it (cache mode bits, ...).
    /// Through a huge PMD, the 4 KiB frame of the block that `addr` falls in (6.12's
    /// `vmalloc_to_page`: `pmd_page(*pmd) + ((addr & ~PMD_MASK) >> PAGE_SHIFT)`) and the PMD's
    /// flags (with `HUGE_PAGE`).
    pub fn lookup_pte(&self, addr: VirtAddr) -> Result<(Pfn, PageTableFlags), PgTableError> {
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
                return Ok((Pfn::from_phys(e.addr()), flags));
            }
            if level == 2 && flags.contains(PageTableFlags::HUGE_PAGE) {
                let head = Pfn::from_phys(e.addr());
                return Ok((head.add(u64::from(u16::from(addr.p1_index()))), flags));
            }
            if level > 0 && flags.contains(PageTableFlags::HUGE_PAGE) {
                return Err(PgTableError::HugePage { addr });
            }
            table = self.dm.virt(e.addr()) as *const PageTable;
        }
        unreachable!("the loop returns at level 3")
    }
}
