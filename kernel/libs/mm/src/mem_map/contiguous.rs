//! The vmemmap without page tables: one physically contiguous memblock allocation for the
//! descriptors of every pfn below `end_pfn`, reached through the direct map. For embedders that
//! map nothing themselves (host tests and Miri over emulated RAM): it pays for the descriptors of
//! holes too, which [`super::VmemmapPageTables`] maps to one shared page instead.

use core::ptr::NonNull;

use super::{MemMapError, VmemmapBacking, VmemmapUsage};
use crate::addr::{DirectMap, Pfn};
use crate::memblock::MemBlock;
use crate::page::Page;

/// See the module documentation.
#[derive(Default)]
pub struct ContiguousVmemmap {
    base: Option<NonNull<Page>>,
    end_pfn: u64,
    usage: VmemmapUsage,
}

impl ContiguousVmemmap {
    pub fn new() -> ContiguousVmemmap {
        ContiguousVmemmap::default()
    }

    /// The descriptors of `[start, end)`, checked against what `init` allocated.
    fn range(&self, start: Pfn, end: Pfn) -> (*mut Page, usize) {
        let base = self.base.expect("ContiguousVmemmap::init first");
        assert!(
            start.0 <= end.0 && end.0 <= self.end_pfn,
            "pfns [{:#x}, {:#x}) outside the array",
            start.0,
            end.0
        );
        // SAFETY: `start <= end_pfn`: inside (or one past) the allocation of `end_pfn` descriptors.
        (unsafe { base.as_ptr().add(start.0 as usize) }, (end.0 - start.0) as usize)
    }
}

// SAFETY: `init` allocates `end_pfn` descriptors of fresh memblock memory (unused, the caller
// of `MemMap::new` guarantees) that memblock keeps reserved forever; `populate` has nothing to do
// (all of it is writable), `populate_hole` writes absent descriptors that nobody writes again
// (`MemMap` hands out no reference to them).
unsafe impl VmemmapBacking for ContiguousVmemmap {
    fn init(&mut self, mb: &mut MemBlock, dm: DirectMap, end_pfn: u64) -> Result<NonNull<Page>, MemMapError> {
        let bytes = end_pfn * core::mem::size_of::<Page>() as u64;
        let pa = mb
            .alloc(bytes, 64, "mem_map")
            .ok_or(MemMapError::MemBlockExhausted { what: "mem_map", bytes })?;
        // Direct-map pointers of allocated RAM are never null.
        let base = NonNull::new(dm.virt(pa) as *mut Page).expect("direct map of RAM");
        self.base = Some(base);
        self.end_pfn = end_pfn;
        self.usage.descriptor_bytes = bytes;
        Ok(base)
    }

    fn populate(
        &mut self,
        _mb: &mut MemBlock,
        _dm: DirectMap,
        start: Pfn,
        end: Pfn,
    ) -> Result<(), MemMapError> {
        self.range(start, end);
        Ok(())
    }

    fn populate_hole(
        &mut self,
        _mb: &mut MemBlock,
        _dm: DirectMap,
        start: Pfn,
        end: Pfn,
    ) -> Result<(), MemMapError> {
        let (p, n) = self.range(start, end);
        for i in 0..n {
            // SAFETY: inside the allocation (`range`), which is ours and suitably aligned.
            unsafe { p.add(i).write(Page::new_absent()) };
        }
        Ok(())
    }

    fn usage(&self) -> VmemmapUsage {
        self.usage
    }
}
