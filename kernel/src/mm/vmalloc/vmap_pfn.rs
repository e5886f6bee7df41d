//! `vmap_pfn` in the running kernel (Linux 6.12's mm/vmalloc.c, `vmap_pfn`): frames without
//! page descriptors (device memory) mapped at consecutive pages as a `VM_IOREMAP` area, on the
//! live page tables. The checks and the mapping are the `mm` crate's
//! ([`VmallocSpace::vmap_pfn`](::mm::vmalloc::VmallocSpace::vmap_pfn)); this file adds the
//! context check and the warning line naming the caller. Released with [`vunmap`](super::vunmap),
//! which shoots the range down on every CPU before the range is reused and frees nothing.

use core::panic::Location;
use core::ptr::NonNull;

use ::mm::{GfpFlags, Pfn, PAGE_SIZE};
use x86_64::structures::paging::PageTableFlags;

use super::{check_context, space, tlb, vfree_drain, warn_failure, VmError, VmallocPages};

/// `vmap_pfn(pfns, count, prot)`: maps `pfns` at consecutive virtual pages (followed by a guard
/// page) with `prot`, made non-executable and `_PAGE_SPECIAL`, and returns the start. Refused,
/// with a warning line naming the caller and nothing reserved or mapped: no frames, more frames
/// than the range holds, a frame that is `pfn_valid` (RAM with a page descriptor: use vmap), a
/// protection that is not present, user-accessible or carries other bits, interrupt context.
///
/// # Safety
/// The caller owns the frames (device memory) for as long as they are mapped, and unmaps them
/// with [`vunmap`](super::vunmap).
#[track_caller]
pub unsafe fn vmap_pfn(pfns: &[Pfn], prot: PageTableFlags) -> Result<NonNull<u8>, VmError> {
    check_context("vmap_pfn")?;
    vfree_drain();
    let caller = Location::caller();
    // SAFETY: the caller owns the frames while mapped (contract of this function).
    let area = unsafe { space().vmap_pfn(&VmallocPages, pfns, prot, caller, tlb::flush_tlb_kernel_range) };
    match area {
        Ok(area) => Ok(NonNull::new(area.start as *mut u8).expect("vmap_pfn areas are above VMALLOC_START")),
        Err(e) => {
            let e = VmError::from(e);
            warn_failure(pfns.len().saturating_mul(PAGE_SIZE), GfpFlags::GFP_KERNEL, &e);
            Err(e)
        }
    }
}
