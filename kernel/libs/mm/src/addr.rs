//! Page frame numbers and the direct map.
//!
//! Allocator logic works in page frame numbers ([`Pfn`]) and reaches page contents through a
//! [`DirectMap`]: in the kernel that is the bootloader's mapping of all physical memory at a fixed
//! offset; on the host it is a buffer standing in for RAM.

use core::fmt;

use x86_64::{PhysAddr, VirtAddr};

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// A page frame number: physical address >> 12.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

impl Pfn {
    #[inline]
    pub const fn from_phys(pa: PhysAddr) -> Pfn {
        Pfn(pa.as_u64() >> PAGE_SHIFT)
    }
    #[inline]
    pub const fn phys(self) -> PhysAddr {
        PhysAddr::new_truncate(self.0 << PAGE_SHIFT)
    }
    #[inline]
    pub const fn add(self, n: u64) -> Pfn {
        Pfn(self.0 + n)
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pfn {:#x}", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The linear mapping of physical memory: `virt = base + phys`.
///
/// `base` is a pointer (not an integer) so that, on the host, accesses keep the provenance of the
/// buffer that emulates RAM and Miri can check them.
#[derive(Clone, Copy, Debug)]
pub struct DirectMap {
    base: *mut u8,
}

// SAFETY: `DirectMap` is an address computation; it grants no access by itself. Whoever
// dereferences a pointer it returns must own that memory (see `virt`).
unsafe impl Send for DirectMap {}
// SAFETY: as above; the type has no interior state.
unsafe impl Sync for DirectMap {}

impl DirectMap {
    /// # Safety
    /// For every physical address `pa` that the allocators will manage, `base.wrapping_add(pa)`
    /// must be valid for reads and writes of the page containing it for as long as this
    /// `DirectMap` (or a copy) is used.
    pub const unsafe fn new(base: *mut u8) -> DirectMap {
        DirectMap { base }
    }

    /// The direct-map pointer of physical address `pa`. Computing it is safe; dereferencing it is
    /// allowed only for memory the caller owns (a page it allocated, a descriptor array, ...).
    #[inline]
    pub fn virt(&self, pa: PhysAddr) -> *mut u8 {
        self.base.wrapping_add(pa.as_u64() as usize)
    }

    #[inline]
    pub fn pfn_to_virt(&self, pfn: Pfn) -> *mut u8 {
        self.virt(pfn.phys())
    }

    /// The physical address behind a direct-map pointer (no check that it is inside RAM).
    #[inline]
    pub fn phys(&self, ptr: *const u8) -> PhysAddr {
        PhysAddr::new_truncate((ptr as usize).wrapping_sub(self.base as usize) as u64)
    }

    /// The virtual address of the direct map's start (physical address 0).
    pub fn base(&self) -> VirtAddr {
        VirtAddr::new_truncate(self.base as u64)
    }
}
