//! The demo workload of a plain `cargo run`: exercise each allocator a little, with statistics
//! before and after, so the log shows what the allocators did.

use ::mm::GfpFlags;

use crate::mm::page_alloc::{__free_pages, alloc_pages, Pages};
use crate::mm::report::print_statistics;
use crate::{info, kprintln};

/// With `memmap`, each statistics block ends with the page-state map of the same moment.
pub fn run(memmap: bool) {
    print_statistics("after boot");
    if memmap {
        crate::mm::report::print_memmap("after boot");
    }
    page_allocator_demo();
    kmalloc_demo();
    vmalloc_demo();
    print_statistics("after the demo workload");
    if memmap {
        crate::mm::report::print_memmap("after the demo workload");
    }
}

fn page_allocator_demo() {
    kprintln!("---- demo: page allocator ----");
    // One block of each order from the normal zonelist, held at once.
    let mut held: [Option<Pages>; 11] = Default::default();
    for (order, slot) in held.iter_mut().enumerate() {
        // Every allocation here may fail (out of memory, or `failslab=`/`fail_page_alloc=`):
        // the demo says so and goes on.
        let pages = match Pages::alloc(GfpFlags::GFP_KERNEL, order as u32) {
            Ok(p) => p,
            Err(e) => {
                info!("alloc_pages(GFP_KERNEL, order {order:>2}) failed: {e}");
                continue;
            }
        };
        info!(
            "alloc_pages(GFP_KERNEL, order {:>2}) -> phys {:#012x} ({}, zone {})",
            pages.order(),
            pages.frame().start_address().as_u64(),
            crate::mm::memory_map::Size(pages.len() as u64),
            zone_name(&pages)
        );
        *slot = Some(pages);
    }
    // Zone-restricted allocations.
    for (name, gfp) in [
        ("GFP_KERNEL | GFP_DMA", GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA),
        ("GFP_KERNEL | GFP_DMA32", GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA32),
        ("GFP_ATOMIC", GfpFlags::GFP_ATOMIC),
    ] {
        match alloc_pages(gfp, 0) {
            Ok(frame) => {
                info!("alloc_pages({name}, order 0) -> phys {:#012x}", frame.start_address().as_u64());
                __free_pages(frame, 0).expect("demo free");
            }
            Err(e) => info!("alloc_pages({name}, order 0) failed: {e}"),
        }
    }
    crate::mm::report::print_proc("buddyinfo", |w| ::mm::stats::write_buddyinfo(w, crate::mm::node()));
    drop(held);
    info!("freed all demo blocks; buddies coalesced back");
}

fn zone_name(pages: &Pages) -> &'static str {
    crate::mm::page_alloc::frame_to_page(pages.frame())
        .map(|p| ::mm::zone::ZoneType::from_index(p.zone() as usize).name())
        .unwrap_or("?")
}

fn kmalloc_demo() {
    use crate::mm::kalloc::{KBox, KVec};
    use crate::mm::slab::{kfree, kmalloc, ksize};
    kprintln!("---- demo: kmalloc and slab caches ----");
    for size in [1usize, 8, 9, 96, 97, 192, 193, 1000, 8192, 8193, 100_000] {
        let p = match kmalloc(size, GfpFlags::GFP_KERNEL) {
            Ok(p) => p,
            Err(e) => {
                info!("kmalloc({size:>6}, GFP_KERNEL) failed: {e}");
                continue;
            }
        };
        let phys = crate::mm::page_alloc::virt_to_phys(x86_64::VirtAddr::from_ptr(p.as_ptr()))
            .expect("kmalloc memory is in the direct map");
        info!(
            "kmalloc({size:>6}, GFP_KERNEL) -> {:p} (phys {:#x}), ksize {:>6}, from {}",
            p.as_ptr(),
            phys.as_u64(),
            ksize(p.as_ptr()).unwrap_or(0),
            crate::mm::slab::kmalloc_instance()
                .kmalloc_slab(size, GfpFlags::GFP_KERNEL)
                .map_or("the page allocator (kmalloc-large)", |c| c.name())
        );
        kfree(p.as_ptr()).expect("demo kfree");
    }
    // Rust's heap and the GFP-flagged owners all come from the same caches.
    let boxed = alloc::boxed::Box::new([0u64; 8]);
    let mut v: KVec<u32> = KVec::new();
    for i in 0..1000 {
        if let Err(e) = v.push(i, GfpFlags::GFP_KERNEL) {
            info!("KVec::push failed at element {i}: {e}");
            break;
        }
    }
    let kb = KBox::new(42u64, GfpFlags::GFP_KERNEL);
    let mut map = alloc::collections::BTreeMap::new();
    for i in 0..200u32 {
        map.insert(i, alloc::format!("value {i}"));
    }
    info!(
        "Box<[u64; 8]> at {:p}, KVec of {} u32 (capacity {}), KBox = {:?}, BTreeMap of {} Strings: all on kmalloc",
        &*boxed,
        v.len(),
        v.capacity(),
        kb.as_deref(),
        map.len()
    );
    crate::mm::report::print_proc("slabinfo", |w| crate::mm::slab::slab().slabinfo(w));
}

/// The area the vmalloc demo keeps, so the final `/proc/vmallocinfo` shows a live area and its
/// caller (it stays allocated until QEMU exits, like a module's long-lived table).
static DEMO_TABLE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn vmalloc_demo() {
    use crate::mm::vmalloc::{vfree, vmalloc, vmalloc_to_pfn, vzalloc};
    kprintln!("---- demo: vmalloc and vmap ----");
    let mut freed = [core::ptr::null(); 2];
    for (i, size) in [5000usize, 64 << 10].into_iter().enumerate() {
        let p = match vmalloc(size) {
            Ok(p) => p,
            Err(e) => {
                info!("vmalloc({size:>6}) failed: {e:?}");
                continue;
            }
        };
        let pfns: [u64; 2] =
            [0, 1].map(|pg| vmalloc_to_pfn(p.as_ptr().wrapping_add(pg * 4096)).map_or(0, |f| f.0));
        info!(
            "vmalloc({size:>6}) -> {:p}; first pages at pfn {:#x}, {:#x} (separate frames)",
            p.as_ptr(),
            pfns[0],
            pfns[1]
        );
        freed[i] = p.as_ptr();
    }
    match vzalloc(1 << 20) {
        Ok(table) => {
            DEMO_TABLE.store(table.as_ptr() as usize, core::sync::atomic::Ordering::Relaxed);
            info!("vzalloc(1 MiB) -> {:p}: kept live across the final statistics", table.as_ptr());
        }
        Err(e) => info!("vzalloc(1 MiB) failed: {e:?}"),
    }
    vmap_demo();
    for p in freed.into_iter().filter(|p| !p.is_null()) {
        vfree(p).expect("demo vfree");
    }
    info!("vunmap'ed the vmap area and vfree'd the two vmalloc areas");
}

/// vmap: four scattered pages seen as one contiguous buffer.
fn vmap_demo() {
    use crate::mm::vmalloc::{vmap, vunmap};
    let mut pages: [Option<Pages>; 4] = Default::default();
    for slot in &mut pages {
        match Pages::alloc(GfpFlags::GFP_KERNEL, 0) {
            Ok(p) => *slot = Some(p),
            Err(e) => return info!("vmap demo: alloc_pages failed: {e}"),
        }
    }
    let pfns = pages
        .each_ref()
        .map(|p| ::mm::Pfn::from_phys(p.as_ref().expect("allocated above").frame().start_address()));
    // SAFETY: the frames belong to `pages`, which lives until after the vunmap below.
    let v = match unsafe { vmap(&pfns, ::mm::vmalloc::VmFlags::VM_MAP) } {
        Ok(v) => v,
        Err(e) => return info!("vmap of 4 pages failed: {e:?}"),
    };
    info!(
        "vmap of pages at phys {:#x}, {:#x}, {:#x}, {:#x} -> {:p} (16 KiB contiguous)",
        pfns[0].0 << 12,
        pfns[1].0 << 12,
        pfns[2].0 << 12,
        pfns[3].0 << 12,
        v.as_ptr()
    );
    crate::mm::report::print_proc("vmallocinfo", |w| crate::mm::vmalloc::write_vmallocinfo(w));
    vunmap(v.as_ptr()).expect("demo vunmap");
    drop(pages);
}
