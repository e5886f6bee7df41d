//! vmalloc benchmarks: vmalloc + touch every page + vfree for several sizes, on an empty vmap
//! area tree and beside 10,000 live areas (the busy-list case of Linux's test_vmalloc), and the
//! two TLB flush strategies for N pages measured on their own.

use ::mm::{GfpFlags, PAGE_SIZE};
use x86_64::VirtAddr;

use super::{emit, measure, LinuxCol};
use crate::kprintln;
use crate::mm::kalloc::KVVec;
use crate::mm::vmalloc::tlb::{flush_pages, flush_tlb_all, range, TLB_FLUSH_ALL_THRESHOLD};
use crate::mm::vmalloc::{vfree, vmalloc};

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

    parts_of_a_small_vmalloc(tpk, empty[1]);

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

/// Where the instructions of a 3-page vmalloc + touch + vfree go: each piece timed on its own
/// (the remainder is the wrappers: context checks, deferred-free drain, the lock, size checks).
fn parts_of_a_small_vmalloc(tpk: u64, whole: u64) {
    use ::mm::vmalloc::{TlbFlushRange, VmapAreaRequest};
    const NR: usize = 3;
    const N: u64 = 2000;
    let gfp = GfpFlags::GFP_KERNEL;
    let pages = measure(tpk, N, || {
        let f: [_; NR] =
            core::array::from_fn(|_| crate::mm::page_alloc::alloc_pages(gfp, 0).expect("bench page"));
        for f in f {
            crate::mm::page_alloc::__free_pages(f, 0).expect("bench page free");
        }
    });
    let area = measure(tpk, N, || {
        crate::mm::vmalloc::with_space_mut(|s, _| {
            let a = s.areas.alloc_area(VmapAreaRequest::new(NR * PAGE_SIZE)).expect("bench area");
            s.areas.free(a.start).expect("bench area free");
        })
    });
    // Map and unmap 3 frames at a fixed address whose tables exist (as they do after the first
    // vmalloc there): what the range walk costs.
    let frames: [_; NR] =
        core::array::from_fn(|_| crate::mm::page_alloc::alloc_pages(gfp, 0).expect("bench page"));
    let pfns = frames.map(|f| ::mm::Pfn::from_phys(f.start_address()));
    let at = VirtAddr::new(crate::mm::layout::VMALLOC_END - (2 << 30));
    let map = measure(tpk, N, || {
        crate::mm::vmalloc::with_space_mut(|s, provider| {
            // SAFETY: the bench owns the frames and never touches the mapping; the address is in
            // the vmalloc range far above any area the bench allocates, and unmapped right away.
            unsafe { s.tables.map_pages(provider, gfp, at, &pfns) }.expect("bench map");
            s.tables.unmap_pages(provider, at, NR, |_| {}).expect("bench unmap");
        })
    });
    for f in frames {
        crate::mm::page_alloc::__free_pages(f, 0).expect("bench page free");
    }
    let range = TlbFlushRange { start: at, nr_pages: NR };
    let local = measure(tpk, N, || flush_pages(range));
    let remote = measure(tpk, N, || crate::arch::smp_call::shootdown(at.as_u64(), NR as u64));
    let empty = measure(tpk, N, || {
        core::hint::black_box(0);
    });
    let net = |x: u64| x.saturating_sub(empty);
    let rows = [
        ("pages", "3 order-0 page allocations and frees", net(pages)),
        ("area", "vmap_area alloc + free in the area trees", net(area)),
        ("map", "map 3 PTEs + unmap them (tables kept, range walk)", net(map)),
        ("flush_local", "invlpg of the 3 pages on this CPU", net(local)),
        ("shootdown", "the same on every other CPU (IPI, wait for each)", net(remote)),
    ];
    let sum: u64 = rows.iter().map(|r| r.2).sum();
    kprintln!("where a 3-page vmalloc + touch + vfree ({whole} instructions) goes, each piece timed alone:");
    for (key, what, cost) in rows {
        kprintln!("  {cost:>6}  {what}");
        emit(format_args!("part.vmalloc3.{key}"), cost);
    }
    let rest = whole.saturating_sub(sum);
    kprintln!("  {rest:>6}  the rest: touching 3 pages, the vmap lock, context checks, the deferred-free drain, wrappers");
}
