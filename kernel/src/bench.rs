//! Benchmarks, booted with `cargo run -- --bench`. The runner starts QEMU with
//! `-icount shift=0,align=off,sleep=off`, so the guest TSC advances with executed guest
//! instructions and every figure here repeats exactly from run to run. Figures are measured and
//! printed, never asserted; goals are quoted beside them.

use core::arch::asm;

use ::mm::GfpFlags;

use crate::arch::rdtsc;
use crate::kprintln;
use crate::mm::page_alloc::{__free_pages, alloc_pages};

/// TSC ticks per 1000 guest instructions, measured on a loop of known length.
fn calibrate() -> u64 {
    const ITERS: u64 = 1_000_000;
    let start = rdtsc();
    // SAFETY: a register-only countdown loop: 2 instructions (dec, jnz) per iteration, no memory.
    unsafe {
        asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) ITERS => _, options(nomem, nostack));
    }
    let ticks = rdtsc() - start;
    ticks * 1000 / (2 * ITERS)
}

/// Instructions per call of `f`, averaged over `iters` calls, after `iters / 10` warm-up calls.
pub fn measure(ticks_per_kinstr: u64, iters: u64, mut f: impl FnMut()) -> u64 {
    for _ in 0..iters / 10 {
        f();
    }
    let start = rdtsc();
    for _ in 0..iters {
        f();
    }
    let ticks = rdtsc() - start;
    ticks * 1000 / ticks_per_kinstr.max(1) / iters
}

pub fn run() -> ! {
    let tpk = calibrate();
    kprintln!("bench: guest TSC under -icount: {}.{:03} ticks per instruction (calibrated on 2,000,000 instructions); figures below are instructions", tpk / 1000, tpk % 1000);
    if !(900..=1100).contains(&tpk) {
        crate::warn!("bench: the TSC does not count instructions here (not booted with --bench / -icount?); figures are TSC ticks scaled by the calibration");
    }
    page_allocator(tpk);
    crate::arch::qemu::exit(crate::arch::qemu::ExitCode::Success)
}

fn page_allocator(tpk: u64) {
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
    kprintln!("  order  block size   instructions/pair");
    for (order, iters) in [(0u32, 100_000u64), (3, 50_000), (10, 5_000)] {
        let per = measure(tpk, iters, || {
            let frame = alloc_pages(GfpFlags::GFP_KERNEL, order).expect("bench allocation");
            __free_pages(frame, order).expect("bench free");
        });
        kprintln!(
            "  {order:>5}  {:>10}   {per:>17}{}",
            crate::mm::memory_map::Size(4096 << order),
            if order == 0 { "   (goal: < 150; Linux pcp fast path ~160-240 cycles)" } else { "" }
        );
    }
}
