//! `vmap_area_cachep`: the slab cache every `vmap_area` node comes from (6.12 mm/vmalloc.c,
//! `vmalloc_init`: `vmap_area_cachep = KMEM_CACHE(vmap_area, SLAB_PANIC)`), listed as
//! `vmap_area` in `/proc/slabinfo`. The area trees (`mm` crate, `vmalloc/avl.rs`) hold their
//! nodes as `Box<_, VmapAreaCache>`: one object per area or free range, so the bookkeeping grows
//! with memory rather than with the largest physically contiguous block.

use core::alloc::{AllocError, Allocator, Layout};
use core::ptr::NonNull;

use ::mm::slab::SlabFlags;
use ::mm::vmalloc::VmapAreas;
use ::mm::GfpFlags;

use crate::mm::slab::{kmem_cache_alloc, kmem_cache_create, kmem_cache_free, KmemCache};

static VMAP_AREA_CACHEP: spin::Once<KmemCache> = spin::Once::new();

/// The cache's name in `/proc/slabinfo`.
pub const VMAP_AREA_CACHE: &str = "vmap_area";

/// Pages in the cache's slabs (partly used ones included).
pub fn slab_pages() -> u64 {
    VMAP_AREA_CACHEP.get().map_or(0, |c| c.slabinfo_row().num_slabs << c.order())
}

/// Frees the cache's empty slabs (`kmem_cache_shrink`); returns the pages freed. For figures
/// compared before and after a workload: nodes freed by a purge may leave a slab empty.
pub fn shrink() -> usize {
    VMAP_AREA_CACHEP.get().map_or(0, |c| c.shrink())
}

/// The allocator of the area trees' nodes: the `vmap_area` cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct VmapAreaCache;

/// Creates the cache; called once by `vmalloc::init`, before the first area.
pub(super) fn init() {
    let layout = VmapAreas::<VmapAreaCache>::node_layout();
    VMAP_AREA_CACHEP.call_once(|| {
        kmem_cache_create(VMAP_AREA_CACHE, layout.size(), layout.align(), SlabFlags::empty(), None)
            .unwrap_or_else(|e| panic!("vmalloc: cannot create the vmap_area cache: {e}"))
    });
}

// SAFETY: blocks come from the `vmap_area` cache, whose objects are at least as large and as
// aligned as the layouts it accepts (checked), stay valid until `kmem_cache_free`, and are given
// back to the same cache.
unsafe impl Allocator for VmapAreaCache {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let cache = VMAP_AREA_CACHEP.get().ok_or(AllocError)?;
        if layout.size() > cache.object_size() || !cache.align().is_multiple_of(layout.align()) {
            return Err(AllocError);
        }
        // Taken under the vmap lock, in process context (vmalloc, vmap and ioremap refuse
        // interrupt context; frees never allocate). No warning of its own: the failed vmalloc
        // prints one line naming its caller (VmapError::NoMemory).
        let obj =
            kmem_cache_alloc(cache, GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOWARN).map_err(|_| AllocError)?;
        Ok(NonNull::slice_from_raw_parts(obj, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, _layout: Layout) {
        if let Some(cache) = VMAP_AREA_CACHEP.get() {
            // A refusal (reported with the caller) would mean a corrupt tree; the object then
            // stays allocated, which is the safe answer.
            let _ = kmem_cache_free(cache, ptr);
        }
    }
}
