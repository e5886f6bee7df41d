//! Lazily freed areas (Linux's `free_vmap_area_noflush` and `__purge_vmap_area_lazy`): vfree
//! and vunmap take an area out of the busy tree at once and park its node on a list, outside
//! both trees; one TLB flush of the range covering every parked area on every CPU then makes
//! them all reusable at once ([`VmapAreas::purge_lazy`]). Until then no parked range can be
//! handed out again: it is in neither tree.

use super::{to_area, NodeAlloc, VmapArea, VmapAreas, VmapError};
use crate::addr::PAGE_SIZE;

impl<A: NodeAlloc> VmapAreas<A> {
    /// Frees the area starting at `addr` lazily (Linux's `free_vmap_area_noflush`): it leaves
    /// the live areas at once, its node parked on the lazy list, but its range becomes reusable
    /// only at [`purge_lazy`](Self::purge_lazy), which the caller runs after one TLB flush of
    /// [`lazy_range`](Self::lazy_range) on every CPU. Refused as [`free`](Self::free) refuses.
    /// O(log n), never allocates.
    pub fn free_lazy(&mut self, addr: usize) -> Result<VmapArea, VmapError> {
        let (node, area) = self.take_busy(addr)?;
        self.lazy.push(node);
        self.lazy_pages += area.size / PAGE_SIZE;
        self.lazy_lo = self.lazy_lo.min(area.start);
        self.lazy_hi = self.lazy_hi.max(area.end());
        Ok(area)
    }

    /// Pages (guard pages included) of the areas waiting for the purge (Linux's
    /// `vmap_lazy_nr`).
    pub fn lazy_pages(&self) -> usize {
        self.lazy_pages
    }

    /// `[lo, hi)` covering every area waiting for the purge: the range to flush before
    /// [`purge_lazy`](Self::purge_lazy). `None` when none waits.
    pub fn lazy_range(&self) -> Option<(usize, usize)> {
        (self.lazy.len() > 0).then_some((self.lazy_lo, self.lazy_hi))
    }

    /// Areas waiting for the purge, most recently freed first (`/proc/vmallocinfo`'s
    /// "unpurged vm_area" lines).
    pub fn lazy_areas(&self) -> impl Iterator<Item = VmapArea> + '_ {
        self.lazy.iter().map(to_area)
    }

    /// The area waiting for the purge whose range (guard included) holds `addr`: a use or a
    /// free after vfree. O(number of lazy areas); for error paths and the fault describer.
    pub fn lookup_lazy(&self, addr: usize) -> Option<VmapArea> {
        if !(self.lazy_lo..self.lazy_hi).contains(&addr) {
            return None;
        }
        self.lazy.iter().find(|e| (e.start..e.end()).contains(&addr)).map(to_area)
    }

    /// Gives every lazily freed range back to the free ranges (Linux's
    /// `__purge_vmap_area_lazy` after its flush); the caller has flushed
    /// [`lazy_range`](Self::lazy_range) on every CPU. Never allocates: each parked node becomes
    /// the free range or merges away. Returns the areas purged.
    pub fn purge_lazy(&mut self) -> usize {
        let n = self.lazy.len();
        while let Some(node) = self.lazy.pop() {
            self.insert_free(node);
        }
        (self.lazy_pages, self.lazy_lo, self.lazy_hi) = (0, usize::MAX, 0);
        n
    }
}
