//! 2 MiB PMD mappings for huge vmalloc (Linux 6.12's `vmap_try_huge_pmd` in mm/vmalloc.c with
//! x86's `pmd_set_huge` and `pmd_free_pte_page` in arch/x86/mm/pgtable.c).
//!
//! One page-directory entry with the PS bit maps a 2 MiB-aligned, physically contiguous 2 MiB
//! block: no page table below it. A page table left under that entry by earlier 4 KiB
//! mappings (vfree keeps them) is freed first, as x86_64's `pmd_free_pte_page` does: the entry
//! is cleared, the TLB flushed (a CPU may hold the entry in its paging-structure caches and
//! still walk through the table), and only then the table page freed. Unlike 6.12, which
//! frees that table without looking (its caller guarantees the range is unmapped), a table
//! still mapping a page is refused here and nothing changes.

use x86_64::structures::paging::PageTableFlags;
use x86_64::VirtAddr;

use super::{entries, free_table, PgTableError, TlbFlushRange, VmallocPageTables, PAGE_KERNEL};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::PageProvider;

/// Bytes one PMD entry maps (x86_64's `PMD_SIZE`).
pub const PMD_SIZE: usize = 1 << 21;
/// The buddy order of a PMD-sized block (`PMD_SHIFT - PAGE_SHIFT`).
pub const PMD_ORDER: u32 = 9;
/// 4 KiB pages in a PMD mapping (`HPAGE_PMD_NR`).
pub const HPAGE_PMD_NR: usize = PMD_SIZE / PAGE_SIZE;

impl VmallocPageTables {
    /// Maps the 2 MiB block of frames from `head` at `addr` with one PMD entry: [`PAGE_KERNEL`]
    /// with the PS bit (`pmd_set_huge`: `protval_4k_2_large(prot) | _PAGE_PSE`; the PAT bit is
    /// clear, so the flags are the same). The PDPT and PD on the way are allocated with `gfp`
    /// where missing. An empty page table under the entry is unlinked, `flush` is called with
    /// one page at `addr` (6.12 `pmd_free_pte_page`: `flush_tlb_kernel_range(addr, addr +
    /// PAGE_SIZE - 1)`, which on x86 also drops the paging-structure caches; the kernel makes it
    /// a shootdown), and the table is freed.
    ///
    /// Refused, changing nothing: `addr` or `head` not 2 MiB aligned ([`PgTableError::HugeMisaligned`]),
    /// the 2 MiB outside the range, a huge mapping already there or a page table still mapping
    /// a page ([`PgTableError::AlreadyMapped`]). As for [`map_pages`](Self::map_pages), no TLB
    /// flush is needed after mapping (x86 caches no non-present translation).
    ///
    /// # Safety
    /// The block must not be freed while mapped, and whoever uses the mapping must own it.
    pub unsafe fn map_huge_pmd<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        gfp: GfpFlags,
        addr: VirtAddr,
        head: Pfn,
        flush: impl FnOnce(TlbFlushRange),
    ) -> Result<(), PgTableError> {
        let phys = head.phys();
        if !addr.is_aligned(PMD_SIZE as u64) || !phys.is_aligned(PMD_SIZE as u64) {
            return Err(PgTableError::HugeMisaligned { addr, phys });
        }
        self.check_range(addr, HPAGE_PMD_NR)?;
        let pd = self.table_or_create(provider, gfp, addr, &[addr.p4_index(), addr.p3_index()])?;
        // SAFETY: `pd` is a live page directory of our range (from `table_or_create`), reached
        // through the direct map; `&mut self` makes this the only writer.
        let pmd = unsafe { &mut entries(pd)[usize::from(addr.p2_index())] };
        let flags = pmd.flags();
        if flags.contains(PageTableFlags::PRESENT) {
            if flags.contains(PageTableFlags::HUGE_PAGE) {
                return Err(PgTableError::AlreadyMapped { addr });
            }
            let pt = pmd.addr();
            // SAFETY: a present, non-huge PD entry of our range points at one of our tables.
            let ptes = unsafe { entries(self.dm.virt(pt) as *mut _) };
            if let Some(k) = ptes.iter().position(|e| !e.is_unused()) {
                return Err(PgTableError::AlreadyMapped { addr: addr + (k * PAGE_SIZE) as u64 });
            }
            // pmd_free_pte_page: clear, flush, then free.
            pmd.set_unused();
            flush(TlbFlushRange { start: addr, nr_pages: 1 });
            free_table(provider, &mut self.nr_tables, pt);
        }
        pmd.set_addr(phys, PAGE_KERNEL | PageTableFlags::HUGE_PAGE);
        Ok(())
    }
}
