//! TLB flushing for the vmalloc range (Linux's `flush_tlb_kernel_range`).
//!
//! SMP: a kernel translation may be cached by every CPU, so every flush here is a shootdown:
//! the same strategy (per-page `invlpg` up to the threshold, else a full flush) runs on this CPU
//! and, through `arch::smp_call::shootdown`, on every other online CPU before the function
//! returns. The lazy purge calls it, under the vmap lock, over the range covering every parked
//! area before those ranges go back to the free tree, so a range is never handed out again while
//! any CPU can still reach the old frames. One request covers
//! the whole range (batched like Linux's `flush_tlb_kernel_range`, one IPI per CPU, not one per
//! page). The `tlb_shootdown=off` command-line word turns the remote part off, only so that
//! `tests/smp.rs` can show the shootdown test failing without it.
//!
//! vmalloc mappings are GLOBAL (`PAGE_KERNEL`), so a CR3 reload does not drop them: a range is
//! flushed with one `invlpg` per page, or, above [`TLB_FLUSH_ALL_THRESHOLD`] pages, by toggling
//! CR4.PGE, which drops every translation including the global ones.
//!
//! Why 33 pages: the cost of `invlpg` grows with the number of pages, the cost of a full flush
//! is a constant plus the refill of every TLB entry the kernel was using (kernel text, stack,
//! direct map), which is paid after the flush as page walks. Linux measured the crossover on
//! real CPUs and set `tlb_single_page_flush_ceiling` to 33 (arch/x86/mm/tlb.c). Under QEMU's
//! `-icount` the benchmark (`bench/vmalloc.rs`) counts instructions, and a TLB miss costs no
//! guest instruction there, so it shows only the instruction side of the trade-off: `invlpg` per
//! page is a few instructions per page and the CR4 toggle a constant handful; both are far below
//! the per-page cost of vmalloc itself (allocating, zeroing the PTE, freeing), so the threshold
//! does not matter for the instruction budget and is chosen for real hardware, as Linux does.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use ::mm::vmalloc::TlbFlushRange;
use x86_64::registers::control::{Cr4, Cr4Flags};
use x86_64::VirtAddr;

/// Ranges of more pages than this are flushed with a full (global) flush.
pub const TLB_FLUSH_ALL_THRESHOLD: usize = 33;

/// Pages flushed one by one with `invlpg`.
pub static SINGLE_PAGE_FLUSHES: AtomicU64 = AtomicU64::new(0);
/// Full flushes (CR4.PGE toggles or CR3 reloads).
pub static FULL_FLUSHES: AtomicU64 = AtomicU64::new(0);

/// Cleared by `tlb_shootdown=off` (test of the test only, see the module documentation).
static SHOOTDOWN_ENABLED: AtomicBool = AtomicBool::new(true);

/// `tlb_shootdown=off`: flush only the local TLB. Announced on the console, as it breaks SMP.
pub fn disable_shootdown() {
    SHOOTDOWN_ENABLED.store(false, Relaxed);
    crate::warn!("tlb: cross-CPU shootdown DISABLED (tlb_shootdown=off): stale translations survive vfree");
}

/// Flushes the translations of `range` on every CPU, with the cheaper strategy for its size.
pub fn flush_tlb_kernel_range(range: TlbFlushRange) {
    if range.is_empty() {
        return;
    }
    let pages = if range.nr_pages <= TLB_FLUSH_ALL_THRESHOLD {
        flush_pages(range);
        range.nr_pages as u64
    } else {
        flush_tlb_all();
        u64::MAX
    };
    if SHOOTDOWN_ENABLED.load(Relaxed) {
        crate::arch::smp_call::shootdown(range.start.as_u64(), pages);
    }
}

/// Drops every translation and cached paging-structure entry on every CPU (Linux's
/// `flush_tlb_all`): what freeing a page table needs, since a CPU may still walk through a
/// cached entry pointing at it.
pub fn flush_tlb_all_cpus() {
    flush_tlb_all();
    if SHOOTDOWN_ENABLED.load(Relaxed) {
        crate::arch::smp_call::shootdown(0, u64::MAX);
    }
}

/// A remote CPU's part of a shootdown: `pages` pages from `start` with `invlpg`, or everything
/// for `u64::MAX`. Not counted in [`SINGLE_PAGE_FLUSHES`]/[`FULL_FLUSHES`], which count the
/// flushes requested (one per range, whatever the CPU count).
pub fn flush_local(start: u64, pages: u64) {
    if pages == u64::MAX {
        drop_all_translations();
    } else {
        for page in (TlbFlushRange { start: VirtAddr::new(start), nr_pages: pages as usize }).pages() {
            x86_64::instructions::tlb::flush(page);
        }
    }
}

/// `invlpg` on every page of `range`.
pub fn flush_pages(range: TlbFlushRange) {
    for page in range.pages() {
        x86_64::instructions::tlb::flush(page);
    }
    SINGLE_PAGE_FLUSHES.fetch_add(range.nr_pages as u64, Relaxed);
}

/// Drops every translation, global ones included: toggles CR4.PGE when global pages are on,
/// else reloads CR3 (then no translation is global).
pub fn flush_tlb_all() {
    drop_all_translations();
    FULL_FLUSHES.fetch_add(1, Relaxed);
}

fn drop_all_translations() {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let cr4 = Cr4::read();
        if cr4.contains(Cr4Flags::PAGE_GLOBAL) {
            // SAFETY: clearing and setting PGE only changes which translations are cached (the
            // SDM's documented way to flush global entries); paging stays on and every mapping
            // stays as it is. Interrupts are off, so nothing runs with PGE clear.
            unsafe {
                Cr4::write(cr4.difference(Cr4Flags::PAGE_GLOBAL));
                Cr4::write(cr4);
            }
        } else {
            x86_64::instructions::tlb::flush_all();
        }
    });
}

/// A range of `nr_pages` from `start`, for the benchmark.
pub fn range(start: VirtAddr, nr_pages: usize) -> TlbFlushRange {
    TlbFlushRange { start, nr_pages }
}
