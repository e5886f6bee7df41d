//! The shrinker of the retained vmalloc page tables: empty PTs and PDs go back under memory
//! pressure, after the TLB flush that freeing a page table needs.

use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags};
use x86_64::PhysAddr;

use super::{entries, free_table, VmallocPageTables, P4_ENTRY_SPAN, SHRINK_BATCH};
use crate::page::PageProvider;

impl VmallocPageTables {
    /// Gives back every page table and page directory of the range that maps nothing (the
    /// shrinker of the retained tables, for memory pressure; PDPTs under the PML4 entries stay).
    /// The entries pointing at them are cleared first; then `flush_all` must drop every CPU's
    /// cached translations and paging-structure entries (a CPU may still walk through a cached
    /// PD entry), and only then are the pages freed (Linux's `pmd_free_pte_page` flushes before
    /// `pte_free_kernel` for the same reason). `flush_all` runs once per batch of up to
    /// [`SHRINK_BATCH`] pages, never when nothing was found. Returns the pages freed.
    pub fn shrink<P: PageProvider + ?Sized>(&mut self, provider: &P, mut flush_all: impl FnMut()) -> usize {
        let mut batch = [PhysAddr::zero(); SHRINK_BATCH];
        let (mut queued, mut freed) = (0, 0);
        let mut release = |batch: &mut [PhysAddr], queued: &mut usize, nr_tables: &mut usize| {
            if *queued > 0 {
                flush_all();
                for &pa in &batch[..*queued] {
                    free_table(provider, nr_tables, pa);
                }
                freed += *queued;
                *queued = 0;
            }
        };
        let mut p4 = self.start;
        while p4 < self.end {
            // SAFETY: the PML4 is live (contract of `new`); `&mut self` is exclusive.
            let pml4e = unsafe { &entries(self.pml4)[usize::from(p4.p4_index())] };
            if let Some(pdpt) = self.table_below(pml4e) {
                for pdpte in 0..512 {
                    // SAFETY: `pdpt` is a live table of our range; entries are plain words.
                    let Some(pd) = self.table_below(unsafe { &entries(pdpt)[pdpte] }) else { continue };
                    let mut pd_in_use = false;
                    for pde in 0..512 {
                        // SAFETY: as above.
                        let entry = unsafe { &mut entries(pd)[pde] };
                        match self.table_below(entry) {
                            // SAFETY: a live page table of ours.
                            Some(pt) if unsafe { entries(pt) }.iter().all(|e| e.is_unused()) => {
                                batch[queued] = entry.addr();
                                queued += 1;
                                entry.set_unused();
                                if queued == SHRINK_BATCH {
                                    release(&mut batch, &mut queued, &mut self.nr_tables);
                                }
                            }
                            _ => pd_in_use |= !entry.is_unused(),
                        }
                    }
                    if !pd_in_use {
                        // SAFETY: as above.
                        let entry = unsafe { &mut entries(pdpt)[pdpte] };
                        batch[queued] = entry.addr();
                        queued += 1;
                        entry.set_unused();
                        if queued == SHRINK_BATCH {
                            release(&mut batch, &mut queued, &mut self.nr_tables);
                        }
                    }
                }
            }
            p4 += P4_ENTRY_SPAN;
        }
        release(&mut batch, &mut queued, &mut self.nr_tables);
        freed
    }

    /// The table a present, non-huge entry points at.
    fn table_below(&self, entry: &PageTableEntry) -> Option<*mut PageTable> {
        let flags = entry.flags();
        (flags.contains(PageTableFlags::PRESENT) && !flags.contains(PageTableFlags::HUGE_PAGE))
            .then(|| self.dm.virt(entry.addr()) as *mut PageTable)
    }
}
