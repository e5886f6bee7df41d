//! The vmemmap with page tables (Linux's `vmemmap_populate`, arch/x86/mm/init_64.c): memblock
//! pages holding descriptors are mapped at `vmemmap + pfn * 32` in the live page tables, 2 MiB
//! at a time where a whole PMD's worth of descriptors is present and memblock has a 2 MiB-aligned
//! block (`vmemmap_populate_hugepages`), else 4 KiB at a time (`vmemmap_populate_basepages`).
//! Descriptors of sections without RAM are mapped read-only to one shared page of absent
//! descriptors; a 2 MiB stretch with no RAM at all points its PMD at one shared page table whose
//! entries all name that page, so a large hole costs one PMD entry per 2 MiB of descriptors
//! (64 Ki pfns, 256 MiB of physical address space).
//!
//! Page-table and hole pages come from memblock (label `"vmemmap"`), descriptors too (label
//! `"mem_map"`); all are reached through the direct map and never freed. The region must not be
//! mapped before (its top-level entries are checked to be empty). Nothing was mapped at these
//! addresses, so no TLB entry can exist to flush.

use core::ptr::NonNull;

use x86_64::structures::paging::{PageTable, PageTableFlags as F};
use x86_64::PhysAddr;

use super::{MemMapError, VmemmapBacking, VmemmapUsage};
use crate::addr::{DirectMap, Pfn, PAGE_SIZE};
use crate::memblock::MemBlock;
use crate::page::Page;

/// Bytes mapped by one PMD entry.
pub const PMD_SIZE: u64 = 1 << 21;
const PAGE: u64 = PAGE_SIZE as u64;
/// Descriptors (Linux's `PAGE_KERNEL`): present, writable, global, not executable.
const DESC_FLAGS: F = F::PRESENT.union(F::WRITABLE).union(F::GLOBAL).union(F::NO_EXECUTE);
/// The shared page of absent descriptors: as above, read-only.
const HOLE_FLAGS: F = F::PRESENT.union(F::GLOBAL).union(F::NO_EXECUTE);
/// Entries naming lower-level tables (the leaves decide writability).
const TABLE_FLAGS: F = F::PRESENT.union(F::WRITABLE);

/// See the module documentation.
pub struct VmemmapPageTables {
    /// Physical address of the top-level table (CR3's).
    root: PhysAddr,
    /// Virtual start and size of the region.
    start: u64,
    size: u64,
    /// The shared page of absent descriptors, and the page table of 512 entries naming it.
    hole_page: Option<PhysAddr>,
    hole_table: Option<PhysAddr>,
    usage: VmemmapUsage,
}

impl VmemmapPageTables {
    /// A vmemmap at `[start, start + size)` (both 512 GiB aligned: whole top-level entries) of
    /// the page tables whose top level is at physical `root`.
    pub const fn new(root: PhysAddr, start: u64, size: u64) -> VmemmapPageTables {
        VmemmapPageTables {
            root,
            start,
            size,
            hole_page: None,
            hole_table: None,
            usage: VmemmapUsage {
                descriptor_bytes: 0,
                table_bytes: 0,
                page_tables: 0,
                pmd_mappings: 0,
                pte_mappings: 0,
                hole_ptes: 0,
                hole_pmds: 0,
            },
        }
    }

    /// A zeroed page from memblock for the page tables or the hole page.
    fn table_page(&mut self, mb: &mut MemBlock, dm: DirectMap) -> Result<PhysAddr, MemMapError> {
        let pa = mb
            .alloc(PAGE, PAGE, "vmemmap")
            .ok_or(MemMapError::MemBlockExhausted { what: "vmemmap", bytes: PAGE })?;
        // SAFETY: a fresh memblock page, unused (the `MemMap::new` caller's contract), mapped by `dm`.
        unsafe { core::ptr::write_bytes(dm.virt(pa), 0, PAGE_SIZE) };
        self.usage.table_bytes += PAGE;
        Ok(pa)
    }

    /// The table at `pa`.
    ///
    /// # Safety
    /// `pa` is one of this vmemmap's tables (or the root), reached through `dm`, and no other
    /// reference to it is live.
    unsafe fn table<'a>(dm: DirectMap, pa: PhysAddr) -> &'a mut PageTable {
        // SAFETY: the caller's contract.
        unsafe { &mut *(dm.virt(pa) as *mut PageTable) }
    }

    /// Sets the entry of `va` at `level` (1: PTE, 2: PMD) to `pa` with `flags`, creating the
    /// tables above it on the way; the entry must be unused, and the way must not cross a huge
    /// mapping or the shared hole table (both would mean `va` is mapped already).
    fn set_entry(
        &mut self,
        mb: &mut MemBlock,
        dm: DirectMap,
        va: u64,
        level: u32,
        pa: PhysAddr,
        flags: F,
    ) -> Result<(), MemMapError> {
        let occupied = MemMapError::VmemmapOccupied { addr: va };
        let mut table = self.root;
        for l in (level + 1..=4).rev() {
            // SAFETY: `table` is the root or a table this vmemmap made, not the shared hole table
            // (checked below before descending); this borrow ends before the next one.
            let e = &mut unsafe { Self::table(dm, table) }[((va >> (12 + 9 * (l - 1))) & 511) as usize];
            if e.is_unused() {
                let t = self.table_page(mb, dm)?;
                e.set_addr(t, TABLE_FLAGS);
                self.usage.page_tables += 1;
            } else if e.flags().contains(F::HUGE_PAGE) || Some(e.addr()) == self.hole_table {
                return Err(occupied);
            }
            table = e.addr();
        }
        // SAFETY: as above, the table of `level`.
        let e = &mut unsafe { Self::table(dm, table) }[((va >> (12 + 9 * (level - 1))) & 511) as usize];
        if !e.is_unused() {
            return Err(occupied);
        }
        e.set_addr(pa, flags);
        Ok(())
    }

    /// Calls `f(self, va, piece_end, whole)` for each piece of the descriptors of `[start, end)`
    /// within one PMD (`whole`: the piece is the entire 2 MiB). The descriptors must start and
    /// end on pages.
    fn for_each_pmd_piece(
        &mut self,
        start: Pfn,
        end: Pfn,
        mut f: impl FnMut(&mut Self, u64, u64, bool) -> Result<(), MemMapError>,
    ) -> Result<(), MemMapError> {
        let d = core::mem::size_of::<Page>() as u64;
        let (mut va, ve) = (self.start + start.0 * d, self.start + end.0 * d);
        if (va | ve) % PAGE != 0 {
            return Err(MemMapError::VmemmapUnaligned { pfn: start.0 });
        }
        while va < ve {
            let pmd_end = (va | (PMD_SIZE - 1)) + 1;
            let piece_end = pmd_end.min(ve);
            f(self, va, piece_end, va % PMD_SIZE == 0 && piece_end == pmd_end)?;
            va = piece_end;
        }
        Ok(())
    }

    /// The shared page of absent descriptors, made on first use.
    fn hole_page(&mut self, mb: &mut MemBlock, dm: DirectMap) -> Result<PhysAddr, MemMapError> {
        if let Some(pa) = self.hole_page {
            return Ok(pa);
        }
        let pa = self.table_page(mb, dm)?;
        let p = dm.virt(pa) as *mut Page;
        for i in 0..PAGE_SIZE / core::mem::size_of::<Page>() {
            // SAFETY: inside the fresh page, which is ours; `Page` is 32 bytes and 32-aligned there.
            unsafe { p.add(i).write(Page::new_absent()) };
        }
        self.hole_page = Some(pa);
        Ok(pa)
    }

    /// The shared page table of 512 read-only entries naming the hole page, made on first use.
    fn hole_table(&mut self, mb: &mut MemBlock, dm: DirectMap) -> Result<PhysAddr, MemMapError> {
        if let Some(pa) = self.hole_table {
            return Ok(pa);
        }
        let hole = self.hole_page(mb, dm)?;
        let pa = self.table_page(mb, dm)?;
        self.usage.page_tables += 1;
        // SAFETY: a fresh table page, ours.
        for e in unsafe { Self::table(dm, pa) }.iter_mut() {
            e.set_addr(hole, HOLE_FLAGS);
        }
        self.hole_table = Some(pa);
        Ok(pa)
    }
}

// SAFETY: `init` checks the region is unmapped and large enough, so `start + pfn * 32` are
// distinct addresses of it; `populate` maps fresh memblock memory (unused by the `MemMap::new`
// caller's contract) writable at exactly the descriptors' addresses and never unmaps it;
// `populate_hole` maps them read-only to a page of absent descriptors nothing can write (the only
// writable mapping of it is the direct map, and the page is memblock's forever).
unsafe impl VmemmapBacking for VmemmapPageTables {
    fn init(
        &mut self,
        _mb: &mut MemBlock,
        dm: DirectMap,
        end_pfn: u64,
    ) -> Result<NonNull<Page>, MemMapError> {
        let needed = end_pfn * core::mem::size_of::<Page>() as u64;
        if needed > self.size {
            return Err(MemMapError::VmemmapTooSmall { needed, size: self.size });
        }
        // SAFETY: the root table, read only here.
        let root = unsafe { Self::table(dm, self.root) };
        let mut va = self.start;
        while va < self.start + needed {
            if !root[((va >> 39) & 511) as usize].is_unused() {
                return Err(MemMapError::VmemmapOccupied { addr: va });
            }
            va += 1 << 39;
        }
        // The kernel's vmemmap address is not null; an integer from the embedder's layout.
        NonNull::new(core::ptr::with_exposed_provenance_mut(self.start as usize))
            .ok_or(MemMapError::VmemmapOccupied { addr: 0 })
    }

    fn populate(
        &mut self,
        mb: &mut MemBlock,
        dm: DirectMap,
        start: Pfn,
        end: Pfn,
    ) -> Result<(), MemMapError> {
        self.for_each_pmd_piece(start, end, |this, va, piece_end, whole| {
            if whole {
                if let Some(pa) = mb.alloc(PMD_SIZE, PMD_SIZE, "mem_map") {
                    this.set_entry(mb, dm, va, 2, pa, DESC_FLAGS | F::HUGE_PAGE)?;
                    this.usage.pmd_mappings += 1;
                    this.usage.descriptor_bytes += PMD_SIZE;
                    return Ok(());
                }
            }
            // Part of a PMD, or no 2 MiB block left: 4 KiB pages (vmemmap_populate_basepages).
            let len = piece_end - va;
            let pa = mb
                .alloc(len, PAGE, "mem_map")
                .ok_or(MemMapError::MemBlockExhausted { what: "mem_map", bytes: len })?;
            for off in (0..len).step_by(PAGE_SIZE) {
                this.set_entry(mb, dm, va + off, 1, pa + off, DESC_FLAGS)?;
            }
            this.usage.pte_mappings += len / PAGE;
            this.usage.descriptor_bytes += len;
            Ok(())
        })
    }

    fn populate_hole(
        &mut self,
        mb: &mut MemBlock,
        dm: DirectMap,
        start: Pfn,
        end: Pfn,
    ) -> Result<(), MemMapError> {
        self.for_each_pmd_piece(start, end, |this, va, piece_end, whole| {
            if whole {
                let table = this.hole_table(mb, dm)?;
                this.set_entry(mb, dm, va, 2, table, TABLE_FLAGS)?;
                this.usage.hole_pmds += 1;
            } else {
                let hole = this.hole_page(mb, dm)?;
                for v in (va..piece_end).step_by(PAGE_SIZE) {
                    this.set_entry(mb, dm, v, 1, hole, HOLE_FLAGS)?;
                }
                this.usage.hole_ptes += (piece_end - va) / PAGE;
            }
            Ok(())
        })
    }

    fn usage(&self) -> VmemmapUsage {
        self.usage
    }
}
