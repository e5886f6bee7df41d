//! ioremap / iounmap: a physical range that is not RAM (MMIO) mapped into the vmalloc space with a
//! cache mode (Linux 6.12's `arch/x86/mm/ioremap.c`, `__ioremap_caller` and `iounmap`).
//!
//! What 6.12 does, in order, and what is kept here:
//! - zero size or a range that wraps: refused (`last_addr < phys_addr`);
//! - an address beyond the CPU's physical address bits: refused (`phys_addr_valid`);
//! - RAM the page allocator manages: refused, "ioremap on RAM" (`__ioremap_check_ram`: a page of
//!   the range that is System RAM and not `PageReserved`). As there, only the pages wholly inside
//!   the range are looked at, so a request smaller than a page inside a RAM page is not refused;
//! - the mapping is page aligned and the sub-page offset is added to the returned address;
//! - the area is `VM_IOREMAP`, aligned to the size's power of two (at least a page, at most
//!   `IOREMAP_MAX_ORDER` = `PUD_SHIFT` on x86_64: `__get_vm_area_node`), with a guard page, and
//!   records the page-aligned physical start (`vm_struct.phys_addr`, printed as `phys=`).
//!
//! Not kept: PAT memtype reservation (`memtype_reserve`, which refuses conflicting cache modes
//! for the same range) and huge (2 MiB / 1 GiB) ioremap mappings: every page is a 4 KiB PTE.

use core::panic::Location;

use x86_64::structures::paging::PageTableFlags;
use x86_64::VirtAddr;

use super::avl::NodeAlloc;
use super::pgtable::{TlbFlushRange, PAGE_KERNEL};
use super::space::{VmallocError, VmallocSpace};
use super::vmap_area::{AreaKind, VmFlags, VmapArea, VmapAreaRequest};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{PageProvider, PageState};

/// x86_64's `IOREMAP_MAX_ORDER` (`PUD_SHIFT`, `arch/x86/include/asm/page_types.h`): ioremap
/// areas are aligned to their size's power of two up to 1 GiB.
pub const IOREMAP_MAX_ORDER: u32 = 30;

/// Linux's `enum page_cache_mode`, the ones ioremap offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCacheMode {
    /// Write-back (`ioremap_cache`).
    Wb,
    /// Write-combining (`ioremap_wc`).
    Wc,
    /// Uncached, overridable by a WC MTRR (`ioremap`: Linux's default since 4.2).
    UcMinus,
    /// Strongly uncached (`ioremap_uc`).
    Uc,
    /// Write-through (`ioremap_wt`).
    Wt,
}

impl PageCacheMode {
    /// The PTE bits for this mode (Linux's `cachemode2protval`). This kernel does not program the
    /// PAT MSR, so the power-on PAT is in force (slots WB, WT, UC-, UC), which is Linux's table
    /// with PAT disabled (`pat_bp_init`'s "no PAT" emulation, `init_cache_modes`): WC has no slot
    /// and falls back to UC- (`__cachemode2pte_tbl`'s default), WT is PWT.
    pub fn pte_bits(self) -> PageTableFlags {
        match self {
            PageCacheMode::Wb => PageTableFlags::empty(),
            PageCacheMode::Wt => PageTableFlags::WRITE_THROUGH,
            PageCacheMode::Wc | PageCacheMode::UcMinus => PageTableFlags::NO_CACHE,
            PageCacheMode::Uc => PageTableFlags::NO_CACHE | PageTableFlags::WRITE_THROUGH,
        }
    }
}

/// One ioremap request.
#[derive(Clone, Copy, Debug)]
pub struct IoremapRequest {
    pub phys: u64,
    pub size: usize,
    pub mode: PageCacheMode,
    /// The CPU's physical address width (CPUID 0x80000008 EAX[7:0]); `phys_addr_valid`.
    pub phys_bits: u32,
    pub caller: &'static Location<'static>,
}

/// The alignment of an ioremap area of `size` page-aligned bytes (`__get_vm_area_node`:
/// `1 << clamp(get_count_order_long(size), PAGE_SHIFT, IOREMAP_MAX_ORDER)`).
pub fn ioremap_align(size: usize) -> usize {
    let order =
        size.next_power_of_two().trailing_zeros().clamp(PAGE_SIZE.trailing_zeros(), IOREMAP_MAX_ORDER);
    1 << order
}

impl<A: NodeAlloc> VmallocSpace<A> {
    /// Maps `[req.phys, req.phys + req.size)` (Linux's `__ioremap_caller`) and returns the area and
    /// the address of `req.phys` in it (the area start plus the sub-page offset). Refused, with
    /// nothing changed: zero size or wraparound ([`VmallocError::IoremapRange`]), an address past
    /// the CPU's physical width ([`VmallocError::IoremapInvalidPhys`]), a page the page allocator
    /// manages ([`VmallocError::IoremapOnRam`]), no room or no page-table page.
    pub fn ioremap<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        req: IoremapRequest,
        mut flush: impl FnMut(TlbFlushRange),
    ) -> Result<(VmapArea, usize), VmallocError> {
        let IoremapRequest { phys, size, mode, phys_bits, caller } = req;
        let range_err = VmallocError::IoremapRange { phys, size };
        // "Don't allow wraparound or zero size".
        let last = (size as u64).checked_sub(1).and_then(|s| phys.checked_add(s)).ok_or(range_err)?;
        if phys_bits < 64 && phys >> phys_bits != 0 {
            return Err(VmallocError::IoremapInvalidPhys { phys, phys_bits });
        }
        if phys_bits < 64 && last >> phys_bits != 0 {
            // Linux checks only the start; the end past the CPU's width cannot be mapped either
            // (a PTE holds at most `phys_bits` of address).
            return Err(VmallocError::IoremapInvalidPhys { phys: last, phys_bits });
        }
        // `__ioremap_check_ram`: the pages wholly inside the range.
        let (first_full, end_full) = (phys.div_ceil(PAGE_SIZE as u64), (last + 1) / PAGE_SIZE as u64);
        for pfn in first_full..end_full {
            if provider.page(Pfn(pfn)).is_some_and(|p| p.state() != PageState::Reserved) {
                return Err(VmallocError::IoremapOnRam { phys, last, pfn: Pfn(pfn) });
            }
        }
        let offset = (phys % PAGE_SIZE as u64) as usize;
        let aligned = phys - offset as u64;
        // `PAGE_ALIGN(last_addr + 1) - phys_addr`; cannot overflow: `last` is below 2^phys_bits.
        let map_size = ((last + 1).div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64 - aligned) as usize;
        let area = self.alloc_area_or_purge(
            &mut flush,
            VmapAreaRequest {
                size: map_size,
                align: ioremap_align(map_size),
                guard: true,
                kind: AreaKind::Ioremap,
                flags: VmFlags::empty(),
                phys_addr: aligned,
                caller,
            },
        )?;
        let prot = PAGE_KERNEL | mode.pte_bits();
        let start = VirtAddr::new(area.start as u64);
        // SAFETY: the range is not managed RAM (checked above), so no allocator hands it out
        // while mapped; the caller of ioremap owns the device range; the area is ours.
        let mapped = unsafe {
            self.tables.map_pfn_range(
                provider,
                table_gfp(),
                start,
                Pfn(aligned / PAGE_SIZE as u64),
                area.nr_pages,
                prot,
            )
        };
        if let Err(e) = mapped {
            flush(TlbFlushRange { start, nr_pages: area.nr_pages });
            self.free_area_unmapped(area.start);
            return Err(e.into());
        }
        Ok((area, area.start + offset))
    }

    /// Unmaps the ioremap area that `addr` (its start, or the address ioremap returned: the
    /// start plus a sub-page offset) begins, flushes it and releases the range (Linux's
    /// `iounmap`, which masks the offset with `PAGE_MASK`). Nothing is freed: the frames are the
    /// device's.
    pub fn iounmap<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        addr: usize,
        flush: impl FnMut(TlbFlushRange),
    ) -> Result<VmapArea, VmallocError> {
        self.release(provider, addr & !(PAGE_SIZE - 1), AreaKind::Ioremap, flush)
    }
}

/// Page-table pages for ioremap: `GFP_KERNEL` as `__get_vm_area_node` is called with.
fn table_gfp() -> GfpFlags {
    GfpFlags::GFP_KERNEL
}
