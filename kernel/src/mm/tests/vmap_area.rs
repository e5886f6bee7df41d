//! In-kernel tests of the vmap_area bookkeeping: every area is an object of the `vmap_area`
//! slab cache, so the number of areas is bounded by memory, not by the largest physically
//! contiguous block (the index arena these replaced was one kmalloc'd vector, grown by
//! doubling up to kmalloc's 4 MiB: it refused the 32,767th one-page vmap, and on memory
//! fragmented to single pages it could not grow at all).

use ::mm::vmalloc::{PgTableError, VmFlags, VmallocError, VmapError};
use ::mm::{GfpFlags, Pfn};

use super::vmalloc::{PageList, ALL_ZONES};
use crate::mm::kalloc::KVVec;
use crate::mm::page_alloc::{__free_pages, alloc_pages, frame_to_page};
use crate::mm::vmalloc::{counts, vmap, vunmap, VMAP_AREA_CACHE};

const NOWARN: GfpFlags = GfpFlags::__GFP_NOWARN;

/// Objects in use in the `vmap_area` cache.
fn vmap_area_objects() -> u64 {
    let mut n = None;
    crate::mm::slab::slab().for_each_cache(|c| {
        if c.name() == VMAP_AREA_CACHE {
            n = Some(c.live_objects());
        }
    });
    n.expect("the vmap_area cache exists (created by vmalloc init)")
}

/// vmaps of `pfn` until `most` areas exist or vmap refuses; returns the refusal.
fn vmap_until(pfn: Pfn, most: usize, areas: &mut KVVec<usize>) -> Option<VmallocError> {
    while areas.len() < most {
        // SAFETY: the test owns the frame until every area mapping it is vunmapped below.
        match unsafe { vmap(&[pfn], VmFlags::VM_MAP) } {
            Ok(p) => areas.push(p.as_ptr() as usize, GfpFlags::GFP_KERNEL).expect("room was reserved"),
            Err(crate::mm::vmalloc::VmError::Vmalloc(e)) => return Some(e),
            Err(e) => panic!("vmap refused for another reason: {e}"),
        }
    }
    None
}

fn vunmap_all(areas: &KVVec<usize>) {
    for &a in areas.iter() {
        vunmap(a as *const u8).expect("vunmap of a test area");
    }
}

crate::ktest!(
    #[needs_memory]
    fn more_than_65536_one_page_vmap_areas_and_back() {
        const AREAS: usize = 70_000;
        let before = (counts(), vmap_area_objects());
        let frame = alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("a page to map");
        let pfn = Pfn::from_phys(frame.start_address());
        let mut areas = KVVec::with_capacity(AREAS, GfpFlags::GFP_KERNEL).expect("the address list");
        if let Some(e) = vmap_until(pfn, AREAS, &mut areas) {
            panic!("vmap number {} refused: {e}", areas.len() + 1);
        }
        let c = counts();
        assert!(c.nr_areas >= before.0.nr_areas + AREAS);
        // One node per area: the cache shows them (/proc/slabinfo's vmap_area line).
        let objects = vmap_area_objects();
        assert!(objects as usize > c.nr_areas, "one vmap_area object per area and free range: {objects}");
        // Each maps the same frame at its own address.
        let probe = areas[AREAS - 1] as *const u8;
        assert_eq!(crate::mm::vmalloc::vmalloc_to_pfn(probe), Some(pfn));
        crate::mm::vmalloc::with_space(|s| s.areas.check()).expect("area trees consistent");
        vunmap_all(&areas);
        drop(areas);
        __free_pages(frame, 0).expect("the mapped frame");
        assert_eq!(counts().nr_areas, before.0.nr_areas);
        assert_eq!(vmap_area_objects(), before.1, "every node went back to the cache");
    }
);

crate::ktest!(
    #[needs_memory]
    fn vmap_areas_allocate_on_memory_fragmented_to_single_pages_until_it_runs_out() {
        // GFP_KERNEL pages left above DMA32's min watermark once memory is fragmented: enough
        // for far more nodes (50 a page) than one 4 MiB block, the old arena's limit, holds.
        const SPARE: u64 = 2000;
        const MOST: usize = 400_000;
        let before = (counts(), vmap_area_objects());
        let mut areas = KVVec::with_capacity(MOST, GfpFlags::GFP_KERNEL).expect("the address list");
        let frame = alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("a page to map");
        let pfn = Pfn::from_phys(frame.start_address());
        let dma32 = &crate::mm::node().zones()[1];
        let budget = dma32.min_wmark_pages() + SPARE;
        // Every page, the reserves too; then the odd frames of DMA32 back, up to the budget:
        // each one's buddy stays held, so no free block above order 0 exists anywhere.
        let (mut held, mut given) = (PageList::new(), PageList::new());
        for gfp in ALL_ZONES {
            while let Ok(f) = alloc_pages(gfp | NOWARN, 0) {
                let odd = f.start_address().as_u64() >> 12 & 1 == 1;
                let in_dma32 = frame_to_page(f).is_some_and(|p| p.zone() == 1);
                if odd && in_dma32 && given.len() < budget {
                    given.push(f.start_address());
                } else {
                    held.push(f.start_address());
                }
            }
        }
        assert_eq!(given.len(), budget, "DMA32 has fewer odd frames than the test needs");
        drop(given);
        // What the watermarks kept from the fill may be larger blocks: now that the free count
        // is above them again, take every block above order 0 too.
        for gfp in ALL_ZONES {
            for order in (1..=::mm::page::MAX_PAGE_ORDER).rev() {
                while let Ok(f) = alloc_pages(gfp | NOWARN, order) {
                    held.push_block(f.start_address(), order);
                }
            }
        }
        assert!(alloc_pages(GfpFlags::GFP_ATOMIC | NOWARN, 1).is_err(), "an order-1 block is free");

        let refusal = vmap_until(pfn, MOST, &mut areas);
        let made = areas.len();
        // Memory really ran out: a page-table page or a node found no page, and the page
        // allocator has no order-0 page left for GFP_KERNEL either.
        let out_of_memory = matches!(
            refusal,
            Some(VmallocError::Area(VmapError::NoMemory))
                | Some(VmallocError::PageTable(PgTableError::NoMemory { .. }))
        );
        let left = alloc_pages(GfpFlags::GFP_KERNEL | NOWARN, 0);
        let left_ok = left.is_ok();
        if let Ok(f) = left {
            __free_pages(f, 0).expect("probe page");
        }
        vunmap_all(&areas);
        drop(held);
        drop(areas);
        __free_pages(frame, 0).expect("the mapped frame");
        assert!(out_of_memory, "vmap {} refused for another reason: {refusal:?}", made + 1);
        assert!(!left_ok, "vmap gave up with order-0 pages still free for GFP_KERNEL");
        assert!(made >= 50_000, "only {made} areas on {SPARE} single pages");
        assert_eq!(counts().nr_areas, before.0.nr_areas);
        assert_eq!(vmap_area_objects(), before.1, "every node went back to the cache");
    }
);
