//! Benchmarks, booted with `cargo run -- --bench`. The runner starts QEMU with
//! `-icount shift=0,align=off,sleep=off`, so the guest TSC advances with executed guest
//! instructions and every figure here repeats exactly from run to run. Figures are measured and
//! printed, never asserted; goals are quoted beside them.

mod page_alloc;
mod slab;
mod smp;
mod vmalloc;

use core::arch::asm;

use crate::arch::rdtsc;
use crate::kprintln;

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
    // One line per benchmark module; each prints its own table.
    page_alloc::run(tpk);
    slab::run(tpk);
    vmalloc::run(tpk);
    smp::run(tpk);
    crate::arch::qemu::exit(crate::arch::qemu::ExitCode::Success)
}
