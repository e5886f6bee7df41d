//! The vmalloc variants of Linux 6.12's `mm/vmalloc.c` beyond plain vmalloc: `vmalloc_user`,
//! `vmalloc_32`, `vmalloc_32_user` (area flags and zones), `vmalloc_huge` (2 MiB mappings) and
//! `vrealloc`.

use core::ptr::NonNull;

use ::mm::vmalloc::{AreaKind, VmFlags, VmallocError};
use ::mm::{GfpFlags, PAGE_SIZE};

use super::{__vmalloc, __vmalloc_node_range, is_vmalloc_addr, vfree, VmError};
use super::{check_context, tlb, vfree_drain, warn_failure, VmallocPages, VmapLock, TOTALRAM_PAGES};

/// `GFP_VMALLOC32` on x86_64 (`CONFIG_ZONE_DMA32`): `GFP_DMA32 | GFP_KERNEL`.
const GFP_VMALLOC32: GfpFlags = GfpFlags::GFP_KERNEL.union(GfpFlags::GFP_DMA32);

/// `vmalloc_user(size)`: zeroed memory "so it can be mapped to userspace without leaking data",
/// a `VM_USERMAP` area (printed `user` in `/proc/vmallocinfo`), aligned to `SHMLBA` (a page on
/// x86). 6.12: `__vmalloc_node_range(size, SHMLBA, ..., GFP_KERNEL | __GFP_ZERO, PAGE_KERNEL,
/// VM_USERMAP, ...)`.
#[track_caller]
pub fn vmalloc_user(size: usize) -> Result<NonNull<u8>, VmError> {
    __vmalloc_node_range(size, PAGE_SIZE, GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO, VmFlags::VM_USERMAP)
}

/// `vmalloc_32(size)`: every page from `ZONE_DMA32` or below (32-bit physical addresses).
/// 6.12: `__vmalloc_node(size, 1, GFP_VMALLOC32, ...)`.
#[track_caller]
pub fn vmalloc_32(size: usize) -> Result<NonNull<u8>, VmError> {
    __vmalloc_node_range(size, PAGE_SIZE, GFP_VMALLOC32, VmFlags::empty())
}

/// `vmalloc_32_user(size)`: [`vmalloc_32`] zeroed, as a `VM_USERMAP` area.
#[track_caller]
pub fn vmalloc_32_user(size: usize) -> Result<NonNull<u8>, VmError> {
    __vmalloc_node_range(size, PAGE_SIZE, GFP_VMALLOC32 | GfpFlags::__GFP_ZERO, VmFlags::VM_USERMAP)
}

/// x86's `arch_vmap_pmd_supported`: `boot_cpu_has(X86_FEATURE_PSE)` (CPUID 1, EDX bit 3).
fn arch_vmap_pmd_supported() -> bool {
    crate::arch::cpu::cpuid(1).3 & (1 << 3) != 0
}

/// `vmalloc_huge(size, gfp)` as 6.12's `vmalloc_huge_noprof`: `__vmalloc_node_range(size, 1,
/// ..., gfp, PAGE_KERNEL, VM_ALLOW_HUGE_VMAP, NUMA_NO_NODE, caller)`. From 2 MiB (`PMD_SIZE`)
/// up, the size is rounded up to 2 MiB, the area aligned to 2 MiB and each 2 MiB mapped by one
/// PMD entry over an order-9 block that is split into 512 independent vmalloc pages (what
/// `vmalloc_to_page` returns, and what vfree frees one by one). If an order-9 block cannot be
/// had, everything is given back and the allocation retried with 4 KiB pages at the size asked
/// for. Below 2 MiB it is `__vmalloc(size, gfp)` with the flag. The logic is the `mm` crate's
/// [`vmalloc_huge_with`](::mm::vmalloc::vmalloc_huge_with). Refused as vmalloc refuses (size
/// 0, more than RAM, interrupt context), with one line naming the caller.
#[track_caller]
pub fn vmalloc_huge(size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
    check_context("vmalloc")?;
    vfree_drain();
    let result = vmalloc_huge_locked(size, gfp);
    if let Err(e) = &result {
        warn_failure(size, gfp, e);
    }
    result
}

#[track_caller]
fn vmalloc_huge_locked(size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
    let totalram = TOTALRAM_PAGES.load(core::sync::atomic::Ordering::Relaxed);
    let nr_pages = size.div_ceil(PAGE_SIZE);
    if nr_pages > totalram {
        return Err(VmError::MoreThanRam { nr_pages, totalram_pages: totalram });
    }
    let req = ::mm::vmalloc::VmapAreaRequest::new(size);
    let pmd = arch_vmap_pmd_supported();
    let area = ::mm::vmalloc::vmalloc_huge_with(
        &VmapLock,
        &VmallocPages,
        gfp,
        req,
        pmd,
        tlb::flush_tlb_kernel_range,
    )?;
    Ok(NonNull::new(area.start as *mut u8).expect("vmalloc areas are above VMALLOC_START"))
}

/// `vrealloc(p, size, gfp)` as 6.12's `vrealloc_noprof`:
/// - `p` null: `__vmalloc(size, gfp)`; `size` 0: `vfree(p)`, `Ok(None)` (Linux returns NULL);
/// - `size` at most the area's mapped size (its pages, not the size first asked for): the same
///   area, unchanged but for `[size, old_size)`, which is zeroed when `gfp` has `__GFP_ZERO` or
///   `init_on_alloc` is on (`want_init_on_alloc`); the pages are kept (6.12 does not shrink);
/// - larger: a new `__vmalloc(size, gfp)`, the old `old_size` bytes copied, the old area freed;
///   on failure the old area is left as it was.
///
/// Refused with a typed error and the caller named: an address that is not the start of a
/// vmalloc area (6.12 finds the area *containing* `p` and would then copy or zero past the end
/// for an interior pointer, or vfree a vmap area; here those are refused).
#[track_caller]
pub fn vrealloc(p: *const u8, size: usize, gfp: GfpFlags) -> Result<Option<NonNull<u8>>, VmError> {
    if size == 0 {
        return vfree(p).map(|()| None);
    }
    let Some(old) = NonNull::new(p.cast_mut()) else {
        return __vmalloc(size, gfp).map(Some);
    };
    let old_size = match vrealloc_area(p) {
        Ok(n) => n,
        Err(e) => {
            super::report_bad_free("vrealloc", &e);
            return Err(e);
        }
    };
    if size <= old_size {
        if crate::mm::node().auto_init().want_init_on_alloc(gfp) {
            // SAFETY: `[p, p + old_size)` is the mapped part of the caller's live vmalloc area.
            unsafe { core::ptr::write_bytes(old.as_ptr().add(size), 0, old_size - size) };
        }
        return Ok(Some(old));
    }
    let new = __vmalloc(size, gfp)?;
    // SAFETY: both are live vmalloc areas of at least `old_size` bytes (the new one is larger)
    // and distinct (the old one is still allocated).
    unsafe { core::ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), old_size) };
    vfree(p)?;
    Ok(Some(new))
}

/// The mapped size of the vmalloc area starting at `p` (6.12's `get_vm_area_size(find_vm_area(p))`),
/// or why `p` is not one.
fn vrealloc_area(p: *const u8) -> Result<usize, VmError> {
    let addr = p as usize;
    if !is_vmalloc_addr(p) {
        let direct_map =
            super::super::page_alloc::virt_to_phys(x86_64::VirtAddr::new_truncate(addr as u64)).is_some();
        return Err(VmError::NotVmalloc { addr, direct_map });
    }
    // The area allocator names the problem: interior, guard page, freed or never allocated.
    let area = super::with_space(|s| s.areas.check_free(addr)).map_err(|e| VmError::Vmalloc(e.into()))?;
    if area.kind != AreaKind::Vmalloc {
        return Err(VmError::Vmalloc(VmallocError::WrongKind { addr, kind: area.kind }));
    }
    Ok(area.usable_size())
}
