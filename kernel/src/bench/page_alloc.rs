//! Page allocator benchmarks: initialisation cost per page and per GiB, and the steady-state cost
//! of an alloc_pages + __free_pages pair for orders 0, 3 and 10, beside
//! `buddy_system_allocator`'s `FrameAllocator` (a buddy system over frame numbers, kept in
//! `BTreeSet`s on the kernel heap, behind its spin lock) managing a region of the same pages.

use ::mm::GfpFlags;
use buddy_system_allocator::LockedFrameAllocator;

use super::peers::Region;
use super::{emit, measure, LinuxCol, Ratio};
use crate::kprintln;
use crate::mm::memory_map::Size;
use crate::mm::page_alloc::{__free_pages, alloc_pages};

pub fn run(tpk: u64) {
    kprintln!();
    kprintln!("== page allocator ==");
    if let Some(cost) = crate::mm::init_cost() {
        let instr = cost.ticks * 1000 / tpk.max(1);
        let pages = cost.managed_pages.max(1);
        kprintln!(
            "init (memblock + page descriptors + buddy free lists): {} instructions for {} pages = {} instructions/page, {} instructions/GiB   (goal: < 40/page)",
            instr,
            pages,
            instr / pages,
            instr * 262_144 / pages
        );
        emit(format_args!("init.per_page"), instr / pages);
    }
    // The peer: 64 MiB of buddy pages handed to a FrameAllocator (orders up to 32; the region's
    // frame numbers are the physical ones, so order-10 blocks are aligned as in the buddy).
    let region = Region::new(64 << 20).expect("64 MiB of contiguous pages for the FrameAllocator");
    let frames: LockedFrameAllocator<33> = LockedFrameAllocator::new();
    frames.lock().add_frame(region.start_pfn(), region.start_pfn() + region.len() / 4096);
    kprintln!("alloc_pages + __free_pages pair, GFP_KERNEL, steady state (block freed and reallocated):");
    kprintln!(
        "  order  block size   instructions/pair   buddy core   buddy_system FrameAllocator   vs peer   Linux 6.1"
    );
    let node = crate::mm::node();
    for (order, iters) in [(0u32, 100_000u64), (3, 50_000), (10, 5_000)] {
        // Every row starts from the same free lists: the order-0 rows leave a batch of pages on
        // the per-CPU list, taken from the smallest free blocks, which would otherwise make the
        // next rows split larger blocks than at boot.
        node.drain_pages();
        let per = measure(tpk, iters, || {
            let frame = alloc_pages(GfpFlags::GFP_KERNEL, order).expect("bench allocation");
            __free_pages(frame, order).expect("bench free");
        });
        let core = measure(tpk, iters, || {
            let pfn = node.alloc_pages(GfpFlags::GFP_KERNEL, order).expect("bench allocation");
            node.free_pages(pfn, order).expect("bench free");
        });
        let peer = measure(tpk, iters, || {
            let pfn = frames.lock().alloc(1 << order).expect("bench FrameAllocator allocation");
            frames.lock().dealloc(core::hint::black_box(pfn), 1 << order);
        });
        let key = alloc::format!("pages.order{order}.pair");
        emit(format_args!("{key}"), per);
        emit(format_args!("pages.order{order}.buddy_core"), core);
        emit(format_args!("peer.buddy_system.pages.order{order}.pair"), peer);
        kprintln!(
            "  {order:>5}  {:>10}   {per:>17}   {core:>10}   {peer:>27}   {:>7}   {:>9}{}",
            Size(4096 << order),
            Ratio(peer, per),
            LinuxCol(&key),
            if order == 0 { "   (goal: <= 80)" } else { "" }
        );
    }
    // The FrameAllocator's sets live on the kernel heap: drop it before its pages go back.
    drop(frames);
    drop(region);
}
