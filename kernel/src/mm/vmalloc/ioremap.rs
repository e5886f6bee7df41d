//! ioremap in the running kernel (Linux 6.12's `arch/x86/mm/ioremap.c`): a physical range that is
//! not RAM the page allocator manages (device MMIO) mapped into the vmalloc space with a cache
//! mode, on the live page tables, as a `VM_IOREMAP` area that `/proc/vmallocinfo` prints with
//! `phys=` and `ioremap`. The checks and the mapping are the `mm` crate's
//! ([`VmallocSpace::ioremap`](::mm::vmalloc::VmallocSpace::ioremap)); this file adds the context
//! check, the CPU's physical address width and the error line naming the caller.
//!
//! `iounmap` unmaps, shoots the range down on every CPU (like vunmap) and only then releases
//! it; it frees nothing.

use core::panic::Location;
use core::ptr::NonNull;

use ::mm::vmalloc::{AreaKind, IoremapRequest, PageCacheMode};

use super::{check_context, release, report_bad_free, space, tlb, vfree_drain, VmError, VmallocPages};

/// The CPU's physical address width (`boot_cpu_data.x86_phys_bits`: CPUID 0x80000008 EAX[7:0],
/// or 36 when the leaf is missing, as Linux's `get_cpu_address_sizes` assumes).
pub fn phys_bits() -> u32 {
    if crate::arch::cpu::cpuid(0x8000_0000).0 >= 0x8000_0008 {
        crate::arch::cpu::cpuid(0x8000_0008).0 & 0xff
    } else {
        36
    }
}

#[track_caller]
fn ioremap_mode(phys: u64, size: usize, mode: PageCacheMode) -> Result<NonNull<u8>, VmError> {
    check_context("ioremap")?;
    vfree_drain();
    let caller = Location::caller();
    let req = IoremapRequest { phys, size, mode, phys_bits: phys_bits(), caller };
    let result = space().ioremap(&VmallocPages, req, tlb::flush_tlb_kernel_range);
    match result {
        Ok((_, addr)) => Ok(NonNull::new(addr as *mut u8).expect("ioremap areas are above VMALLOC_START")),
        Err(e) => {
            let e = VmError::from(e);
            if crate::log::ratelimit(caller) {
                crate::warn!(
                    "ioremap of {size} bytes at {phys:#x} ({mode:?}) refused at {}:{}: {e}",
                    caller.file(),
                    caller.line()
                );
            }
            Err(e)
        }
    }
}

/// `ioremap(phys, size)`: `size` bytes of device memory at `phys`, uncached (UC-, Linux's default
/// since 4.2). Returns the address of `phys` (the mapping is page aligned, the sub-page offset
/// is kept). Refused with an error line naming the caller: zero size or wraparound, an address
/// past the CPU's physical width, RAM the page allocator manages ("ioremap on RAM"), interrupt
/// context, no virtual space or page-table page.
#[track_caller]
pub fn ioremap(phys: u64, size: usize) -> Result<NonNull<u8>, VmError> {
    ioremap_mode(phys, size, PageCacheMode::UcMinus)
}

/// `ioremap_uc`: strongly uncached (PCD|PWT).
#[track_caller]
pub fn ioremap_uc(phys: u64, size: usize) -> Result<NonNull<u8>, VmError> {
    ioremap_mode(phys, size, PageCacheMode::Uc)
}

/// `ioremap_wc`: write-combining where the PAT offers it; this kernel leaves the power-on PAT,
/// which has no WC slot, so it is UC- (as Linux with PAT disabled).
#[track_caller]
pub fn ioremap_wc(phys: u64, size: usize) -> Result<NonNull<u8>, VmError> {
    ioremap_mode(phys, size, PageCacheMode::Wc)
}

/// `ioremap_wt`: write-through (PWT).
#[track_caller]
pub fn ioremap_wt(phys: u64, size: usize) -> Result<NonNull<u8>, VmError> {
    ioremap_mode(phys, size, PageCacheMode::Wt)
}

/// `ioremap_cache`: write-back, for device memory that may be cached.
#[track_caller]
pub fn ioremap_cache(phys: u64, size: usize) -> Result<NonNull<u8>, VmError> {
    ioremap_mode(phys, size, PageCacheMode::Wb)
}

/// `iounmap(addr)`: unmaps the ioremap area `addr` was returned for (its start or start plus
/// the sub-page offset), flushes every CPU's TLB and releases the range. Anything else (an
/// address inside a later page, a vmalloc or vmap area, a double iounmap) and interrupt
/// context are refused with an error line naming the caller.
#[track_caller]
pub fn iounmap(addr: *const u8) -> Result<(), VmError> {
    check_context("iounmap")?;
    let result = release(addr, AreaKind::Ioremap).map(|_| ());
    if let Err(e) = &result {
        report_bad_free("iounmap", e);
    }
    result
}
