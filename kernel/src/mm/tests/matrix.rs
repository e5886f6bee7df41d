//! The adversarial matrix of the free-side entry points: every one of kfree, kfree_sensitive,
//! ksize, krealloc, kmem_cache_free, free_pages, __free_pages, vfree, vunmap and kvfree, given
//! every kind of bad address (interior, already freed, freed and reallocated to someone else,
//! another allocator's, non-canonical, on the stack, the kernel image, beyond RAM, user space,
//! a guard page), must refuse it with an error, change nothing (free lists, every kmalloc cache,
//! vmalloc's areas), and go on working. Null is the documented no-op where Linux has one.

use alloc::vec::Vec;
use core::ptr::NonNull;

use ::mm::slab::SlabFlags;
use ::mm::{GfpFlags, PAGE_SIZE};
use x86_64::structures::paging::PhysFrame;
use x86_64::{PhysAddr, VirtAddr};

use crate::mm::page_alloc::{__free_pages, alloc_pages, free_pages, phys_to_virt};
use crate::mm::slab::*;
use crate::mm::vmalloc::{counts, kvfree, vfree, vmalloc, vmap, vunmap};

use super::buddy_snapshot;

const KERNEL: GfpFlags = GfpFlags::GFP_KERNEL;

/// Everything a refused call must leave alone (no heap use of its own: it would count itself).
pub(super) fn state() -> ([[u64; 11]; 3], [(&'static str, u64); 64], crate::mm::vmalloc::VmallocCounts) {
    // Settled before the caches are counted: areas freed since the last purge still hold their
    // vmap_area nodes until the purge (buddy_snapshot settles again; nothing is left to do).
    super::settle();
    let mut caches = [("", 0); 64];
    let mut n = 0;
    slab().for_each_cache(|c| {
        if n < caches.len() {
            caches[n] = (c.name(), c.live_objects());
            n += 1;
        }
    });
    (buddy_snapshot(), caches, counts())
}

/// The bad addresses, by name.
fn bad_addresses(live: &Live) -> Vec<(&'static str, usize)> {
    let on_stack = 0u64;
    let dm = crate::mm::direct_map_base() as usize;
    alloc::vec![
        ("interior of a kmalloc object", live.obj + 8),
        ("interior of a kmalloc-large block", live.large + PAGE_SIZE),
        ("a freed kmalloc object", live.freed),
        ("inside an object freed and reallocated", live.freed_then_taken + 1),
        ("a page-allocator page", live.page),
        ("a vmalloc area's second page", live.vm + PAGE_SIZE),
        ("a vmalloc guard page", live.vm + 2 * PAGE_SIZE),
        ("a vmap area (given to kfree/vfree)", live.vmap),
        ("a kmem_cache object", live.cache_obj),
        ("non-canonical", 0x8000_0000_0000_0000),
        ("on the stack", core::ptr::addr_of!(on_stack) as usize),
        ("the kernel image", dm + crate::mm::boot_layout().kernel_phys as usize),
        ("beyond RAM", dm + crate::mm::direct_map_size() as usize + (1 << 30)),
        ("user space", 0x40_0000),
        ("one past a kmalloc object", live.obj + 64),
        ("unaligned", live.obj + 3),
    ]
}

struct Live {
    obj: usize,
    large: usize,
    freed: usize,
    freed_then_taken: usize,
    page: usize,
    vm: usize,
    vmap: usize,
    cache_obj: usize,
}

crate::ktest!(
    #[needs_memory]
    fn every_free_side_entry_point_refuses_every_bad_address_and_changes_nothing() {
        let _tidy = super::kmalloc::Tidy;
        let cache = kmem_cache_create("matrix", 48, 0, SlabFlags::empty(), None).unwrap();
        let obj = kmalloc(64, KERNEL).unwrap();
        let large = kmalloc(5 * PAGE_SIZE, KERNEL).unwrap();
        let freed = kmalloc(128, KERNEL).unwrap();
        kfree(freed.as_ptr()).unwrap();
        let taken = kmalloc(96, KERNEL).unwrap();
        let gone = taken.as_ptr() as usize;
        kfree(taken.as_ptr()).unwrap();
        let retaken = kmalloc(96, KERNEL).unwrap();
        let page = alloc_pages(KERNEL, 0).unwrap();
        let vm = vmalloc(2 * PAGE_SIZE).unwrap();
        let vmap_page = alloc_pages(KERNEL, 0).unwrap();
        let pfn = ::mm::Pfn::from_phys(vmap_page.start_address());
        // SAFETY: the frame is ours until after the vunmap below.
        let vm_map = unsafe { vmap(&[pfn], ::mm::vmalloc::VmFlags::VM_MAP) }.unwrap();
        let cache_obj = cache.alloc(KERNEL).unwrap();
        let live = Live {
            obj: obj.as_ptr() as usize,
            large: large.as_ptr() as usize,
            freed: freed.as_ptr() as usize,
            freed_then_taken: if retaken.as_ptr() as usize == gone {
                gone
            } else {
                retaken.as_ptr() as usize
            },
            page: phys_to_virt(page.start_address()).as_u64() as usize,
            vm: vm.as_ptr() as usize,
            vmap: vm_map.as_ptr() as usize,
            cache_obj: cache_obj.as_ptr() as usize,
        };
        let addresses = bad_addresses(&live);
        let before = state();
        let mut cases = 0;
        for &(what, a) in &addresses {
            let p = a as *const u8;
            // The slab side; a kmem_cache object is a valid kfree/ksize/krealloc argument (as
            // on Linux), so it is not among the bad addresses here.
            if a != live.cache_obj {
                for (entry, refused) in [
                    ("kfree", kfree(p).is_err()),
                    ("kfree_sensitive", kfree_sensitive(p).is_err()),
                    ("ksize", ksize(p).is_err()),
                    ("krealloc", krealloc(p, 10, KERNEL).is_err()),
                ] {
                    assert!(refused, "{entry}({what} {a:#x}) was accepted");
                    cases += 1;
                }
            }
            if let Some(nn) = NonNull::new(a as *mut u8).filter(|_| a != live.cache_obj) {
                assert!(kmem_cache_free(&cache, nn).is_err(), "kmem_cache_free({what} {a:#x}) was accepted");
                cases += 1;
            }
            if a != live.vm && a != live.vmap {
                assert!(vfree(p).is_err(), "vfree({what} {a:#x}) was accepted");
                assert!(vunmap(p).is_err(), "vunmap({what} {a:#x}) was accepted");
                cases += 2;
            }
            // kvfree, as kfree, frees any slab object (a kmem_cache object included, as Linux).
            if a != live.obj && a != live.large && a != live.vm && a != live.cache_obj {
                assert!(kvfree(p).is_err(), "kvfree({what} {a:#x}) was accepted");
                cases += 1;
            }
            if let Ok(va) = VirtAddr::try_new(a as u64) {
                if a != live.page {
                    for order in [0, 1, 10, 11, u32::MAX] {
                        assert!(
                            free_pages(va, order).is_err(),
                            "free_pages({what} {a:#x}, {order}) accepted"
                        );
                        cases += 1;
                    }
                }
            }
            assert_eq!(state(), before, "a refused call on {what} changed the allocators");
        }
        // Frames: misaligned, wrong order, beyond RAM, reserved, order above the maximum.
        let frame = |phys: u64| PhysFrame::containing_address(PhysAddr::new(phys));
        let page_phys = page.start_address().as_u64();
        for (what, f, order) in [
            ("wrong order", frame(page_phys), 3),
            ("above MAX_PAGE_ORDER", frame(page_phys), 11),
            ("u32::MAX order", frame(page_phys), u32::MAX),
            ("beyond RAM", frame(crate::mm::direct_map_size() + (1 << 30)), 0),
            ("the kernel image", frame(crate::mm::boot_layout().kernel_phys), 0),
            ("a slab page", frame(obj.as_ptr() as u64 - crate::mm::direct_map_base()), 0),
        ] {
            assert!(__free_pages(f, order).is_err(), "__free_pages({what}) accepted");
            cases += 1;
        }
        assert_eq!(state(), before, "refused frame frees changed the allocators");
        // Null: kfree, kfree_sensitive, vfree, kvfree are no-ops (as Linux); the others refuse.
        assert!(kfree(core::ptr::null()).is_ok() && kfree_sensitive(core::ptr::null()).is_ok());
        assert!(vfree(core::ptr::null()).is_ok() && kvfree(core::ptr::null()).is_ok());
        assert!(ksize(core::ptr::null()).is_err() || ksize(core::ptr::null()) == Ok(0));
        assert!(vunmap(core::ptr::null()).is_err());
        assert_eq!(state(), before);
        crate::info!("adversarial matrix: {cases} refused calls, allocators unchanged after each");
        // Everything still frees normally.
        vunmap(vm_map.as_ptr()).unwrap();
        __free_pages(vmap_page, 0).unwrap();
        cache.free(cache_obj).unwrap();
        vfree(vm.as_ptr()).unwrap();
        __free_pages(page, 0).unwrap();
        kfree(retaken.as_ptr()).unwrap();
        kfree(large.as_ptr()).unwrap();
        kfree(obj.as_ptr()).unwrap();
        kmem_cache_destroy(cache).unwrap();
    }
);

// The allocation side: every size, order, alignment, count and flag argument at and beyond its
// edges. Each call either succeeds (and is freed) or fails with an error; none panics,
// overflows or truncates, and the allocators end where they began.
crate::ktest!(
    #[needs_memory]
    fn every_allocation_entry_point_survives_edge_arguments() {
        use crate::mm::vmalloc::__vmalloc_node;
        let _tidy = super::kmalloc::Tidy;
        let huge = [usize::MAX, usize::MAX / 2 + 1, isize::MAX as usize, 1 << 48, (1 << 32) + 1];
        // Calls that succeed leave empty slabs cached: compare with every cache shrunk.
        shrink_all();
        let before = state();
        let mut calls = 0;
        let gfps = [
            KERNEL,
            GfpFlags::GFP_ATOMIC,
            GfpFlags::GFP_NOWAIT,
            KERNEL | GfpFlags::GFP_DMA,
            KERNEL | GfpFlags::GFP_DMA32,
            KERNEL | GfpFlags::GFP_DMA | GfpFlags::GFP_DMA32,
            KERNEL | GfpFlags::__GFP_ZERO | GfpFlags::__GFP_NOWARN,
            GfpFlags::from_bits_retain(u32::MAX) - GfpFlags::__GFP_NOFAIL,
            GfpFlags::empty(),
        ];
        for &gfp in &gfps {
            let gfp = gfp | GfpFlags::__GFP_NOWARN;
            for size in [0usize, 1, 7, 8, 8192, 8193, 4 << 20, (4 << 20) + 1].into_iter().chain(huge) {
                if let Ok(p) = kmalloc(size, gfp) {
                    kfree(p.as_ptr()).unwrap();
                } else {
                    assert!(
                        size > 4 << 20
                            || gfp.bits() == u32::MAX - GfpFlags::__GFP_NOFAIL.bits()
                            || gfp.contains(GfpFlags::GFP_DMA),
                        "kmalloc({size}, {gfp:?}) failed"
                    );
                }
                calls += 1;
            }
            for (n, size) in [(0, 8), (8, 0), (usize::MAX, 2), (2, usize::MAX), (1 << 32, 1 << 32), (3, 1000)]
            {
                for r in [kmalloc_array(n, size, gfp), kcalloc(n, size, gfp)] {
                    if let Ok(p) = r {
                        kfree(p.as_ptr()).unwrap();
                    } else {
                        assert!(
                            n.checked_mul(size).is_none_or(|b| b > 4 << 20)
                                || gfp.contains(GfpFlags::GFP_DMA)
                                || gfp.bits() == u32::MAX - GfpFlags::__GFP_NOFAIL.bits()
                        );
                    }
                    calls += 1;
                }
            }
            for order in [0, 1, 3, 10, 11, 12, 31, 32, u32::MAX] {
                match alloc_pages(gfp, order) {
                    Ok(f) => __free_pages(f, order).unwrap(),
                    Err(_) => {}
                }
                calls += 1;
            }
        }
        for size in [0usize, 1, 4096, 1 << 20].into_iter().chain(huge) {
            for align in [0usize, 1, 3, 4096, 1 << 21, 1 << 40, usize::MAX, 1 << 63] {
                if let Ok(p) = __vmalloc_node(size, align, KERNEL | GfpFlags::__GFP_NOWARN) {
                    vfree(p.as_ptr()).unwrap();
                }
                calls += 1;
            }
            for r in [
                crate::mm::vmalloc::vzalloc(size),
                crate::mm::vmalloc::kvmalloc(size, KERNEL | GfpFlags::__GFP_NOWARN),
            ] {
                if let Ok(p) = r {
                    kvfree(p.as_ptr()).unwrap();
                }
                calls += 1;
            }
        }
        for (name, size, align) in [
            ("", 8, 0),
            ("m0", 0, 0),
            ("m1", usize::MAX, 0),
            ("m2", 8, 3),
            ("m3", 8, 1 << 40),
            ("m4", 8, usize::MAX),
            ("m5", 5 << 20, 8),
        ] {
            if let Ok(c) = kmem_cache_create(name, size, align, SlabFlags::empty(), None) {
                panic!("kmem_cache_create({name:?}, {size}, {align}) accepted: {c:?}");
            }
            calls += 1;
        }
        shrink_all();
        assert_eq!(state(), before, "edge-argument calls changed the allocators");
        crate::info!("adversarial matrix: {calls} edge-argument allocation calls, none panicked");
    }
);
