//! Page allocator benchmarks: initialisation cost per page and per GiB, and the steady-state cost
//! of an alloc_pages + __free_pages pair for orders 0, 3 and 10.

use ::mm::GfpFlags;

use super::measure;
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
    }
    kprintln!("alloc_pages + __free_pages pair, GFP_KERNEL, steady state (block freed and reallocated):");
    kprintln!(
        "  order  block size   instructions/pair   of which buddy core (Node::alloc_pages + free_pages)"
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
        kprintln!(
            "  {order:>5}  {:>10}   {per:>17}   {core:>10}{}",
            Size(4096 << order),
            if order == 0 { "   (goal: < 150; Linux pcp fast path ~160-240 cycles)" } else { "" }
        );
    }
}
