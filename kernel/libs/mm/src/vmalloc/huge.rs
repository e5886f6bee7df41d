//! Huge vmalloc (Linux 6.12's `vmalloc_huge_noprof` -> `__vmalloc_node_range_noprof` with
//! `VM_ALLOW_HUGE_VMAP`, mm/vmalloc.c), host-testable.
//!
//! When the size is at least `PMD_SIZE` and the architecture maps PMDs (x86: `X86_FEATURE_PSE`,
//! `arch_vmap_pmd_supported`; unless `nohugevmalloc`), 6.12 rounds the size up to 2 MiB,
//! aligns the area to 2 MiB (`align = max(real_align, 1UL << shift)`, `__get_vm_area_node`'s
//! `ALIGN(size, 1ul << shift)`, one guard page after it), allocates order-9 blocks without
//! `__GFP_NOFAIL` and with `__GFP_NOWARN`, `split_page`s each into 512 order-0 pages
//! (`vm_area_alloc_pages`: callers treat vmalloc pages as independent small pages) and maps
//! each block with one PMD entry (`vmap_pages_range(..., page_shift = PMD_SHIFT)`). Any failure
//! gives everything back and retries the whole allocation with small pages at the original
//! size and alignment (the `fail:` label: `shift = PAGE_SHIFT; align = real_align; size =
//! real_size; goto again`). Smaller sizes are plain vmalloc.
//!
//! The pages are accounted as small pages, as 6.12 does (`area->nr_pages` counts `PAGE_SIZE`
//! pages): `/proc/vmallocinfo`'s `pages=` and meminfo's `VmallocUsed` include the rounding to
//! 2 MiB, and vfree frees the 512 pages of each block one by one (`__free_page` per page).

use core::sync::atomic::Ordering::Relaxed;

use x86_64::VirtAddr;

use super::pgtable::{TlbFlushRange, HPAGE_PMD_NR, PMD_ORDER, PMD_SIZE};
use super::space::{free_vmalloc_page, table_gfp, vmalloc_with, SpaceLock, VmallocError};
use super::vmap_area::{AreaKind, VmFlags, VmapArea, VmapAreaRequest};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{PageProvider, PageState};
use crate::AllocError;

/// `__vmalloc_node_range_noprof` with `VM_ALLOW_HUGE_VMAP`: 2 MiB mappings when
/// `pmd_supported` (`vmap_allow_huge && arch_vmap_pmd_supported(prot)`) and `req.size >=
/// PMD_SIZE`, falling back to [`vmalloc_with`] (4 KiB pages, `req` as given) when that fails or
/// does not apply. The area always carries `VM_ALLOW_HUGE_VMAP`. `flush` is called as
/// [`vmalloc_with`] calls it, plus once per page table freed to make room for a PMD mapping.
pub fn vmalloc_huge_with<L: SpaceLock, P: PageProvider + ?Sized>(
    lock: &L,
    provider: &P,
    gfp: GfpFlags,
    req: VmapAreaRequest,
    pmd_supported: bool,
    mut flush: impl FnMut(TlbFlushRange),
) -> Result<VmapArea, VmallocError> {
    let req = VmapAreaRequest { flags: req.flags | VmFlags::VM_ALLOW_HUGE_VMAP, ..req };
    if pmd_supported && req.size >= PMD_SIZE {
        if let Ok(area) = vmalloc_pmd_with(lock, provider, gfp, req, &mut flush) {
            return Ok(area);
        }
    }
    vmalloc_with(lock, provider, gfp, req, flush)
}

/// The `shift = PMD_SHIFT` attempt: the area, then one order-9 block per 2 MiB, each split and
/// mapped by one PMD entry. On failure everything is given back (the area's range flushed if a
/// block was mapped) and the error returned for the caller to fall back.
fn vmalloc_pmd_with<L: SpaceLock, P: PageProvider + ?Sized>(
    lock: &L,
    provider: &P,
    gfp: GfpFlags,
    req: VmapAreaRequest,
    flush: &mut impl FnMut(TlbFlushRange),
) -> Result<VmapArea, VmallocError> {
    let size = req.size.checked_next_multiple_of(PMD_SIZE).unwrap_or(usize::MAX & !(PMD_SIZE - 1));
    let huge = VmapAreaRequest { kind: AreaKind::Vmalloc, size, align: req.align.max(PMD_SIZE), ..req };
    let area = lock.with(|s| s.alloc_area_or_purge(&mut *flush, huge))?;
    let start = VirtAddr::new(area.start as u64);
    // vm_area_alloc_pages for page_order > 0: no __GFP_NOFAIL (high-order nofail is "really
    // expensive and potentially dangerous"), no warning (the small-page retry follows), and
    // never compound (the blocks are split).
    let block_gfp = (gfp.difference(GfpFlags::__GFP_NOFAIL | GfpFlags::__GFP_COMP)) | GfpFlags::__GFP_NOWARN;
    let mut mapped = 0;
    while mapped < area.nr_pages {
        let head = match alloc_split_block(provider, block_gfp, area.start) {
            Ok(head) => head,
            Err(err) => {
                lock.with(|s| s.unwind_vmalloc(provider, &area, mapped, mapped > 0, &mut *flush));
                return Err(VmallocError::Pages { index: mapped, nr_pages: area.nr_pages, err });
            }
        };
        let at = start + (mapped * PAGE_SIZE) as u64;
        // SAFETY: the block was just allocated for this area and stays allocated while mapped
        // (vfree unmaps before freeing its pages); the area is ours.
        let result =
            lock.with(|s| unsafe { s.tables.map_huge_pmd(provider, table_gfp(gfp), at, head, &mut *flush) });
        if let Err(e) = result {
            (0..HPAGE_PMD_NR as u64).for_each(|i| free_vmalloc_page(provider, head.add(i)));
            lock.with(|s| s.unwind_vmalloc(provider, &area, mapped, mapped > 0, &mut *flush));
            return Err(e.into());
        }
        mapped += HPAGE_PMD_NR;
    }
    Ok(area)
}

/// One order-9 block, split into 512 order-0 pages marked as the area's vmalloc pages.
fn alloc_split_block<P: PageProvider + ?Sized>(
    provider: &P,
    gfp: GfpFlags,
    area_start: usize,
) -> Result<Pfn, AllocError> {
    let head = provider.alloc_pages(gfp, PMD_ORDER)?;
    if let Err(e) = provider.split_page(head, PMD_ORDER) {
        // The block came from the provider a moment ago, non-compound: only a corrupt
        // provider refuses; give the block back whole.
        debug_assert!(false, "provider refused to split its own order-{PMD_ORDER} block: {e:?}");
        let _ = provider.free_pages(head, PMD_ORDER);
        return Err(AllocError::Invalid("split_page refused a fresh order-9 block"));
    }
    for i in 0..HPAGE_PMD_NR as u64 {
        if let Some(page) = provider.page(head.add(i)) {
            page.set_state(PageState::Vmalloc);
            page.private.store(area_start, Relaxed);
        }
    }
    Ok(head)
}
