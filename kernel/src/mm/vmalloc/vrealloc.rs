//! `vrealloc` as Linux 6.12 (`mm/vmalloc.c`, `vrealloc_noprof()`): a block that still fits its
//! pages stays where it is (with `__GFP_ZERO`/`init_on_alloc`, the spare bytes zeroed); a larger
//! one is a new area, the old pages copied and freed. The area is never shrunk in place (6.12's
//! "TODO: Shrink the vm_area").

use core::panic::Location;
use core::ptr::NonNull;

use ::mm::vmalloc::{AddrPlace, AreaKind, VmallocError, VmapError};
use ::mm::{GfpFlags, PAGE_SIZE};

use super::{__vmalloc_node, find_vm_area, vfree, VmError};

/// `vrealloc(p, size, gfp)`. `p` null allocates; `size == 0` frees `p` and returns `None` (6.12
/// returns NULL). On failure the old area is untouched. An address that is not the start of a
/// live vmalloc area is refused and reported (6.12: `WARN(1, "Trying to vrealloc() nonexistent vm
/// area")`).
#[track_caller]
pub fn vrealloc(p: *const u8, size: usize, gfp: GfpFlags) -> Result<Option<NonNull<u8>>, VmError> {
    if size == 0 {
        vfree(p)?;
        return Ok(None);
    }
    let old_size = if p.is_null() { 0 } else { live_area_size(p).inspect_err(|e| report(e))? };
    if size <= old_size {
        if crate::mm::node().auto_init().want_init_on_alloc(gfp) {
            // SAFETY: `p` is the start of a live vmalloc area of `old_size` mapped bytes.
            unsafe { (p as *mut u8).add(size).write_bytes(0, old_size - size) };
        }
        return Ok(NonNull::new(p as *mut u8));
    }
    let n = __vmalloc_node(size, PAGE_SIZE, gfp)?;
    if !p.is_null() {
        // SAFETY: both areas are live and distinct; the new one has `size > old_size` bytes.
        unsafe { core::ptr::copy_nonoverlapping(p, n.as_ptr(), old_size) };
        // The old area was checked live above: its vfree cannot be refused.
        vfree(p)?;
    }
    Ok(Some(n))
}

/// The mapped size of the vmalloc area starting at `p` (6.12: `get_vm_area_size(find_vm_area(p))`).
fn live_area_size(p: *const u8) -> Result<usize, VmError> {
    let addr = p as usize;
    match find_vm_area(p) {
        Some((area, AddrPlace::Inside { offset: 0 })) if area.kind == AreaKind::Vmalloc => {
            Ok(area.usable_size())
        }
        Some((_, AddrPlace::Inside { offset: 0 })) => {
            Err(VmError::Vmalloc(VmallocError::WrongKind { addr, kind: AreaKind::Vmap }))
        }
        Some((area, AddrPlace::Inside { .. })) => {
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::Interior {
                addr,
                area_start: area.start,
                area_end: area.mapped_end(),
            })))
        }
        Some((area, AddrPlace::Guard { .. })) => {
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::InGuard { addr, area_start: area.start })))
        }
        None if !super::is_vmalloc_addr(p) => Err(VmError::NotVmalloc {
            addr,
            direct_map: crate::mm::page_alloc::virt_to_phys(x86_64::VirtAddr::new_truncate(addr as u64))
                .is_some(),
        }),
        None => {
            Err(VmError::Invalid("vrealloc: no live vmalloc area at this address (freed or never allocated)"))
        }
    }
}

#[cold]
#[track_caller]
fn report(e: &VmError) {
    let loc = Location::caller();
    if crate::log::ratelimit(loc) {
        crate::error!("vrealloc refused at {}:{}: {e}", loc.file(), loc.line());
    }
}
