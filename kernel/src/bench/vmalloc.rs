//! vmalloc benchmarks: vmalloc + touch every page + vfree for several sizes, on an empty vmap
//! area tree and beside 10,000 live areas (the busy-list case of Linux's test_vmalloc), and the
//! two TLB flush strategies for N pages measured on their own.

use ::mm::{GfpFlags, PAGE_SIZE};
use x86_64::VirtAddr;

use super::{emit, measure, LinuxCol};
use crate::kprintln;
use crate::mm::vmalloc::tlb::{flush_pages, flush_tlb_all, range, TLB_FLUSH_ALL_THRESHOLD};
use crate::mm::vmalloc::{vfree, vmalloc, KVVec};

const SIZES: [usize; 5] = [1, 3, 16, 256, 4096];

/// Instructions per vmalloc + touch + vfree of `nr` pages.
fn cycle(tpk: u64, nr: usize) -> u64 {
    let iters = (4000 / nr as u64).clamp(10, 2000);
    measure(tpk, iters, || {
        let p = vmalloc(nr * PAGE_SIZE).expect("bench vmalloc");
        for i in 0..nr {
            // SAFETY: page i of the live area.
            unsafe { p.as_ptr().add(i * PAGE_SIZE).write_volatile(1) };
        }
        vfree(p.as_ptr()).expect("bench vfree");
    })
}

pub fn run(tpk: u64) {
    kprintln!();
    kprintln!("== vmalloc ==");
    let mut empty = [0u64; SIZES.len()];
    for (i, &nr) in SIZES.iter().enumerate() {
        empty[i] = cycle(tpk, nr);
    }
    // 10,000 live one-page areas.
    const BUSY: usize = 10_000;
    let mut busy: KVVec<usize> = KVVec::with_capacity(BUSY, GfpFlags::GFP_KERNEL).expect("bench list");
    for _ in 0..BUSY {
        let p = vmalloc(PAGE_SIZE).expect("bench busy area");
        busy.push(p.as_ptr() as usize, GfpFlags::GFP_KERNEL).expect("bench list push");
    }
    let mut loaded = [0u64; SIZES.len()];
    for (i, &nr) in SIZES.iter().enumerate() {
        loaded[i] = cycle(tpk, nr);
    }
    for &a in busy.iter() {
        vfree(a as *const u8).expect("bench busy vfree");
    }
    drop(busy);
    kprintln!("vmalloc + touch each page + vfree, GFP_KERNEL (instructions):");
    kprintln!("  pages   empty tree  per page   10k live areas  per page   busy/empty   Linux 6.1 (pair / per page)");
    for (i, &nr) in SIZES.iter().enumerate() {
        let goal = match nr {
            3 => "   (goal: <= 2,000)",
            256 | 4096 => "   (goal: <= 250/page)",
            _ => "",
        };
        emit(format_args!("vmalloc.{nr}.pair"), empty[i]);
        emit(format_args!("vmalloc.{nr}.per_page"), empty[i] / nr as u64);
        emit(format_args!("vmalloc.{nr}.busy.pair"), loaded[i]);
        let pair_key = alloc::format!("vmalloc.{nr}.pair");
        let page_key = alloc::format!("vmalloc.{nr}.per_page");
        kprintln!(
            "  {nr:>5}  {:>11}  {:>8}   {:>14}  {:>8}   {:>6}.{:02}x   {:>9} / {:<5}{goal}",
            empty[i],
            empty[i] / nr as u64,
            loaded[i],
            loaded[i] / nr as u64,
            loaded[i] / empty[i].max(1),
            loaded[i] * 100 / empty[i].max(1) % 100,
            LinuxCol(&pair_key),
            LinuxCol(&page_key),
        );
    }
    kprintln!("  (busy-list goal: within 2x of empty)");
    let pair = measure(tpk, 20_000, || {
        let f = crate::mm::page_alloc::alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("bench page");
        crate::mm::page_alloc::__free_pages(f, 0).expect("bench page free");
    });
    let last = SIZES.len() - 1;
    kprintln!(
        "  of the {} per page at {} pages, {pair} are the page allocator's order-0 alloc+free pair; vmalloc's own share (map, unmap, flush, bookkeeping) is {}",
        empty[last] / SIZES[last] as u64,
        SIZES[last],
        (empty[last] / SIZES[last] as u64).saturating_sub(pair)
    );

    // The flush strategies alone, on an unmapped vmalloc range (invlpg of an absent
    // translation costs the same instruction).
    kprintln!(
        "TLB flush of N pages (instructions; threshold {TLB_FLUSH_ALL_THRESHOLD}: invlpg up to it, full flush above):"
    );
    kprintln!("  pages   invlpg each   full flush (CR4.PGE toggle)");
    let start = VirtAddr::new(crate::mm::layout::VMALLOC_END - (1 << 30));
    for nr in [1usize, 8, 33, 64, 512, 4096] {
        let r = range(start, nr);
        let single = measure(tpk, 200, || flush_pages(r));
        let full = measure(tpk, 200, flush_tlb_all);
        emit(format_args!("tlb.invlpg.{nr}"), single);
        emit(format_args!("tlb.full.{nr}"), full);
        kprintln!("  {nr:>5}   {single:>11}   {full:>11}");
    }
    kprintln!(
        "  (-icount counts instructions, and a TLB refill costs none: the refill after a full flush,\n   which decides the crossover on hardware, is not visible here; see mm/vmalloc/tlb.rs)"
    );
}
