//! Benchmarks, booted with `cargo run -- --bench`. The runner starts QEMU with
//! `-icount shift=0,align=off,sleep=off`, so the guest TSC advances with executed guest
//! instructions and every figure here repeats exactly from run to run. Figures are measured and
//! printed, never asserted here; goals are quoted beside them.
//!
//! Besides its tables, every figure is printed once as a machine-readable line
//! `bench: KEY VALUE` ([`emit`]). The host's benchmark gate (`tests/bench.rs`) compares those
//! lines with the committed baseline `tests/bench-baseline.txt`, and the README's measured table
//! is generated from that baseline (`boot/bench.rs`).

mod auto_init;
pub mod linux_reference;
mod page_alloc;
mod peers;
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

/// Prints one figure as `bench: KEY VALUE` (instructions unless the key says otherwise).
pub fn emit(key: core::fmt::Arguments, value: u64) {
    kprintln!("bench: {key} {value}");
}

/// Prints a ratio `num / den` as a decimal fraction with nine places (`bench: KEY 0.000312500`):
/// exact integer arithmetic, so it repeats to the last digit.
pub fn emit_fraction(key: core::fmt::Arguments, num: u64, den: u64) {
    let nano = (num as u128 * 1_000_000_000 / den.max(1) as u128) as u64;
    kprintln!("bench: {key} {}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000);
}

/// `a / b` as `N.NNx` (how many times fewer instructions `b` needs than `a`).
pub struct Ratio(pub u64, pub u64);

impl core::fmt::Display for Ratio {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let hundredths = self.0 * 100 / self.1.max(1);
        let mut buf = [0u8; 24];
        let mut w = Buf { buf: &mut buf, len: 0 };
        core::fmt::write(&mut w, format_args!("{}.{:02}x", hundredths / 100, hundredths % 100))?;
        let len = w.len;
        f.pad(core::str::from_utf8(&buf[..len]).unwrap_or("?"))
    }
}

/// The Linux 6.1 figure for a key, formatted for a table column (`-` where none was measured).
pub struct LinuxCol<'a>(pub &'a str);

impl core::fmt::Display for LinuxCol<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut buf = [0u8; 24];
        let mut w = Buf { buf: &mut buf, len: 0 };
        match linux_reference::linux_figure(self.0) {
            Some(v) => core::fmt::write(&mut w, format_args!("{v}"))?,
            None => core::fmt::write(&mut w, format_args!("-"))?,
        }
        let len = w.len;
        f.pad(core::str::from_utf8(&buf[..len]).unwrap_or("?"))
    }
}

struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

pub fn run() -> ! {
    let tpk = calibrate();
    kprintln!("bench: guest TSC under -icount: {}.{:03} ticks per instruction (calibrated on 2,000,000 instructions); figures below are instructions", tpk / 1000, tpk % 1000);
    if !(900..=1100).contains(&tpk) {
        crate::warn!("bench: the TSC does not count instructions here (not booted with --bench / -icount?); figures are TSC ticks scaled by the calibration");
    }
    kprintln!(
        "bench: built {}; reference column: {}",
        if cfg!(debug_assertions) {
            "WITH debug assertions (not as shipped: use the runner's --bench, which boots the release-built bench kernel)"
        } else {
            "as shipped (release profile: no debug assertions, no overflow checks)"
        },
        linux_reference::LINUX_SOURCE
    );
    // Each module prints its own table; the guest instructions each took (the boot's wall time
    // under -icount) close the log, to show where the bench's run time goes.
    let sections: [(&str, &str, fn(u64)); 6] = [
        ("pages", "page allocator", page_alloc::run),
        ("slab", "slab / kmalloc", slab::run),
        ("mixed100k", "kmalloc mixed, 100k live", slab::run_mixed_100k),
        ("vmalloc", "vmalloc", vmalloc::run),
        ("autoinit", "heap auto-initialisation", auto_init::run),
        ("smp", "smp", smp::run),
    ];
    // `bench_only=KEY[,KEY..]` runs only the sections whose key starts with one of the KEYs,
    // `bench_skip=KEY[,KEY..]` all but those. The runner boots the bench as two QEMUs at once
    // (`bench_skip=mixed100k` and `bench_only=mixed100k`, see `boot/bench.rs`), and a developer
    // can time one section (`--cmdline bench_only=vmalloc`; the gate then reports the other
    // figures as missing).
    let listed = |arg: Option<&str>, key: &str| {
        arg.is_some_and(|a| a.split(',').any(|k| !k.is_empty() && key.starts_with(k)))
    };
    let only = crate::cmdline::get_global("bench_only");
    let skip = crate::cmdline::get_global("bench_skip");
    let mut took = [None; 6];
    for (i, (key, _, run)) in sections.iter().enumerate() {
        if (only.is_some() && !listed(only, key)) || listed(skip, key) {
            continue;
        }
        let start = rdtsc();
        run(tpk);
        took[i] = Some((rdtsc() - start) / tpk.max(1));
    }
    kprintln!();
    kprintln!("bench run time, millions of guest instructions per section (on the CPU running it):");
    for ((_, name, _), m) in sections.iter().zip(took) {
        match m {
            Some(m) => kprintln!("  {name:<26} {:>8}", m / 1000),
            None => kprintln!("  {name:<26} {:>8}", "-"),
        }
    }
    crate::arch::qemu::exit(crate::arch::qemu::ExitCode::Success)
}
