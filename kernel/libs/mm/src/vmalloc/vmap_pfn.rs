//! vmap_pfn: an array of frames that are not RAM with page descriptors (device memory, memory
//! the kernel does not manage) mapped at consecutive virtual pages (Linux 6.12's `vmap_pfn` and
//! `vmap_pfn_apply`, mm/vmalloc.c).
//!
//! What 6.12 does, and what is kept here:
//! - the area is `get_vm_area_caller(count * PAGE_SIZE, VM_IOREMAP, caller)`: a `VM_IOREMAP`
//!   area (so aligned as ioremap areas are, `__get_vm_area_node`) with a guard page, and no
//!   `phys_addr` (`/proc/vmallocinfo` prints `ioremap` and no `phys=`); a size of 0 is refused
//!   (`__get_vm_area_node`: `if (unlikely(!size)) return NULL`);
//! - each PTE is `pte_mkspecial(pfn_pte(pfn, pgprot_nx(prot)))`: the caller's protection, never
//!   executable, with `_PAGE_SPECIAL` (software bit 9 on x86);
//! - a frame that is `pfn_valid` (has a `struct page`) is refused, `WARN_ON_ONCE` and -EINVAL,
//!   and the area is freed (`free_vm_area`): NULL, nothing stays mapped. Here all frames are
//!   checked before anything is reserved, which ends the same way with less to undo.
//!
//! Added: the protection is checked (6.12 takes any `pgprot_t`): it must be present, not user
//! accessible, and hold only the PTE bits a kernel 4 KiB mapping uses.

use core::panic::Location;

use x86_64::structures::paging::PageTableFlags;
use x86_64::VirtAddr;

use super::avl::NodeAlloc;
use super::ioremap::ioremap_align;
use super::pgtable::TlbFlushRange;
use super::space::{VmallocError, VmallocSpace};
use super::vmap_area::{AreaKind, VmFlags, VmapArea, VmapAreaRequest, VmapError};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::PageProvider;

/// x86's `_PAGE_SPECIAL` (`_PAGE_BIT_SOFTW1` = 9, arch/x86/include/asm/pgtable_types.h): set by
/// `pte_mkspecial` on PTEs that map no `struct page`.
pub const PAGE_SPECIAL: PageTableFlags = PageTableFlags::BIT_9;

/// The protection bits vmap_pfn accepts: what a kernel 4 KiB PTE may carry (the cache bits
/// included, for device memory). Bit 7 is the PAT bit in a 4 KiB PTE, which this kernel does not
/// program, so it is refused with the others.
const PROT_ALLOWED: PageTableFlags = PageTableFlags::PRESENT
    .union(PageTableFlags::WRITABLE)
    .union(PageTableFlags::WRITE_THROUGH)
    .union(PageTableFlags::NO_CACHE)
    .union(PageTableFlags::ACCESSED)
    .union(PageTableFlags::DIRTY)
    .union(PageTableFlags::GLOBAL)
    .union(PageTableFlags::NO_EXECUTE);

/// Checks `prot` and returns the PTE flags vmap_pfn writes: `pgprot_nx(prot)` plus
/// [`PAGE_SPECIAL`].
pub fn vmap_pfn_prot(prot: PageTableFlags) -> Result<PageTableFlags, VmallocError> {
    let bad = |why| Err(VmallocError::BadProt { prot: prot.bits(), why });
    if !prot.contains(PageTableFlags::PRESENT) {
        return bad("not present (a mapping that cannot be used)");
    }
    if prot.contains(PageTableFlags::USER_ACCESSIBLE) {
        return bad("user accessible (the vmalloc range is kernel only)");
    }
    if !PROT_ALLOWED.contains(prot) {
        return bad("bits other than present, writable, cache, accessed, dirty, global, NX");
    }
    Ok(prot | PageTableFlags::NO_EXECUTE | PAGE_SPECIAL)
}

impl<A: NodeAlloc> VmallocSpace<A> {
    /// Maps `pfns` at consecutive pages of a new `VM_IOREMAP` area with `prot` (see the module
    /// documentation) and returns the area. Refused, with nothing changed: an empty array
    /// ([`VmallocError::NoPages`]), a size past the range ([`VmapError::TooLarge`]), a bad
    /// protection ([`VmallocError::BadProt`]), a frame with a page descriptor
    /// ([`VmallocError::VmapPfnValid`]), no room or no page-table page.
    ///
    /// # Safety
    /// The caller owns the frames (the device ranges) for as long as they are mapped.
    pub unsafe fn vmap_pfn<P: PageProvider + ?Sized>(
        &mut self,
        provider: &P,
        pfns: &[Pfn],
        prot: PageTableFlags,
        caller: &'static Location<'static>,
        mut flush: impl FnMut(TlbFlushRange),
    ) -> Result<VmapArea, VmallocError> {
        if pfns.is_empty() {
            return Err(VmallocError::NoPages);
        }
        let (lo, hi) = self.areas.range();
        let size = pfns
            .len()
            .checked_mul(PAGE_SIZE)
            .ok_or(VmallocError::Area(VmapError::TooLarge { size: usize::MAX, max: hi - lo }))?;
        // More frames than the range has pages (with the guard): refused before the frames are
        // scanned, as alloc_area would refuse it after (the scan of a huge array is the cost).
        let max = hi - lo - PAGE_SIZE;
        if size > max {
            return Err(VmallocError::Area(VmapError::TooLarge { size, max }));
        }
        let prot = vmap_pfn_prot(prot)?;
        // vmap_pfn_apply: WARN_ON_ONCE(pfn_valid(pfn)) -> -EINVAL. pfn_valid is "has a page
        // descriptor", reserved pages included.
        if let Some(index) = pfns.iter().position(|&pfn| provider.page(pfn).is_some()) {
            return Err(VmallocError::VmapPfnValid { index, pfn: pfns[index] });
        }
        let area = self.alloc_area_or_purge(
            &mut flush,
            VmapAreaRequest {
                size,
                align: ioremap_align(size.min(1 << 62)),
                guard: true,
                kind: AreaKind::VmapPfn,
                flags: VmFlags::empty(),
                phys_addr: 0,
                caller,
            },
        )?;
        let start = VirtAddr::new(area.start as u64);
        for (i, &pfn) in pfns.iter().enumerate() {
            let at = start + (i * PAGE_SIZE) as u64;
            // SAFETY: the frame has no page descriptor (checked above), so no allocator hands it
            // out; the caller owns it (contract of this function); the area is ours.
            let mapped =
                unsafe { self.tables.map_pfn_range(provider, GfpFlags::GFP_KERNEL, at, pfn, 1, prot) };
            if let Err(e) = mapped {
                if i > 0 {
                    let undone = self.tables.unmap_pages(provider, start, i, |_| {});
                    debug_assert!(undone.is_ok(), "unwinding a partial vmap_pfn: {undone:?}");
                }
                flush(TlbFlushRange { start, nr_pages: area.nr_pages });
                self.free_area_unmapped(area.start);
                return Err(e.into());
            }
        }
        Ok(area)
    }
}
