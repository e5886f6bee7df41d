//! `soak[=OPS]` (`cargo run -- --soak [OPS]`): the stress workload (`mm::stress`: kmalloc,
//! kzalloc, krealloc, kfree, alloc_pages orders 0..4, vmalloc/vfree, a kmem_cache; objects handed
//! between CPUs and freed there, fill patterns checked before every free) on every online CPU,
//! with every CPU's timer doing `GFP_ATOMIC` work meanwhile and fault injection failing 1% of the
//! allocations (unless `failslab=`/`fail_page_alloc=` say otherwise). Each tenth of the run, the
//! boot CPU checks that the `/proc` figures are consistent while the others keep going. At the end
//! every page, object and vmalloc area must be back; the kernel exits with failure otherwise, or
//! on any damaged pattern, refused free or inconsistent figure.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::arch::qemu::{self, ExitCode};
use crate::arch::smp_call::CpuMask;
use crate::cmdline::Cmdline;
use crate::mm::{fault_inject, node, stress};

/// Operations in all when `soak` has no count.
pub const DEFAULT_OPS: u64 = 10_000_000;

static CHECKS: AtomicU64 = AtomicU64::new(0);
static INCONSISTENT: AtomicU64 = AtomicU64::new(0);
static LAST_TENTH: AtomicU64 = AtomicU64::new(0);

/// Fault injection at 1% for both allocators, sleeping allocations and order 0 included, quiet
/// (the soak counts the failures instead), unless the command line configured it.
fn default_fault_injection(cmdline: &Cmdline) {
    for which in fault_inject::FAULT_NAMES {
        let configured = cmdline.raw.split_ascii_whitespace().any(|w| w.starts_with(which));
        if configured {
            continue;
        }
        let mut attrs =
            [("ignore-gfp-wait", "N"), ("verbose", "0"), ("times", "-1"), ("probability", "1"), ("", "")];
        if which == "fail_page_alloc" {
            attrs[4] = ("min-order", "0");
        }
        for (a, v) in attrs.into_iter().filter(|(a, _)| !a.is_empty()) {
            fault_inject::set(which, a, v).expect("valid fault-injection attribute");
        }
    }
}

/// The `/proc` figures that must hold at any moment, taken while the other CPUs run: every
/// zone's free lists add up to its free-page count (buddyinfo against zoneinfo, one lock hold)
/// within its managed pages; every cache has no more active objects than objects; MemFree is
/// within MemTotal.
fn check_consistency() {
    CHECKS.fetch_add(1, Relaxed);
    let mut bad = 0;
    for z in node().zones() {
        let fa = z.free_area_snapshot();
        let sum: u64 = fa.nr_free.iter().enumerate().map(|(o, &n)| n << o).sum();
        if sum != fa.free_pages || fa.free_pages > z.managed_pages() {
            kprintln!(
                "soak: zone {}: free lists hold {sum} pages, the zone counts {} of {} managed",
                z.name(),
                fa.free_pages,
                z.managed_pages()
            );
            bad += 1;
        }
    }
    crate::mm::slab::slab().for_each_cache(|c| {
        let r = c.slabinfo_row();
        if r.active_objs > r.num_objs {
            kprintln!("soak: slabinfo {}: {} active of {} objects", r.name, r.active_objs, r.num_objs);
            bad += 1;
        }
    });
    let t = node().totals();
    if t.free_pages > t.managed_pages {
        kprintln!("soak: meminfo: MemFree {} pages above MemTotal {}", t.free_pages, t.managed_pages);
        bad += 1;
    }
    INCONSISTENT.fetch_add(bad, Relaxed);
}

/// `soak_selftest=leak`: the soak's own check, which must then fail the run (a host test
/// boots it): one kmalloc object taken at the first tenth and never freed.
static LEAK_ONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Called on the boot CPU as the run goes: a progress line and a consistency check per tenth.
fn progress(done: u64, total: u64) {
    let tenth = done * 10 / total.max(1);
    if tenth > LAST_TENTH.load(Relaxed) && tenth < 10 {
        LAST_TENTH.store(tenth, Relaxed);
        if LEAK_ONE.swap(false, Relaxed) {
            let _ = crate::mm::slab::kmalloc(64, ::mm::GfpFlags::GFP_KERNEL | ::mm::GfpFlags::__GFP_NOFAIL);
        }
        check_consistency();
        let (slab, pages) = fault_inject::injected();
        kprintln!(
            "soak: {:>3}% ({done} of {total} operations), {} failures injected, /proc consistent: {}",
            tenth * 10,
            slab + pages,
            if INCONSISTENT.load(Relaxed) == 0 { "yes" } else { "NO" }
        );
    }
}

/// Runs the soak of `total` operations (split over the online CPUs) and exits QEMU.
pub fn run(cmdline: &Cmdline, total: u64) -> ! {
    default_fault_injection(cmdline);
    match cmdline.get("soak_selftest") {
        None => {}
        Some("leak") => {
            kprintln!("soak: soak_selftest=leak: one kmalloc object will be kept, the soak must fail");
            LEAK_ONE.store(true, Relaxed);
        }
        Some(other) => crate::warn!("soak: ignoring soak_selftest={other} (only `leak`)"),
    }
    let cpus = CpuMask::online();
    let n = cpus.count() as u64;
    let per_cpu = total.div_ceil(n).max(1);
    kprintln!(
        "soak: {n} CPU{} x {per_cpu} operations, GFP_ATOMIC work in every CPU's timer interrupt, fault injection:",
        if n == 1 { "" } else { "s" }
    );
    for which in fault_inject::FAULT_NAMES {
        match fault_inject::summary(which) {
            Some(line) => kprintln!("soak:   {line}"),
            None => kprintln!("soak:   {which} off"),
        }
    }
    let injected_before = fault_inject::injected();
    let never = || false;
    let mut ctl = stress::Control::new(&never, Some(&progress));
    let irq: Option<(&dyn Fn(), &dyn Fn() -> u64)> = Some((&stress::timer::start, &stress::timer::stop));
    let r = match stress::run(per_cpu, cpus, &mut ctl, irq) {
        Ok(r) => r,
        Err(why) => {
            kprintln!("soak: cannot start: {why}");
            qemu::exit(ExitCode::Failure)
        }
    };
    check_consistency();
    let injected = fault_inject::injected();
    let injected = (injected.0 - injected_before.0) + (injected.1 - injected_before.1);
    let ops = r.ops_done + r.irq_ops;
    kprintln!(
        "soak: {} operations ({} by the workload, {} GFP_ATOMIC in timer interrupts) on {} CPUs in {} ms: {} operations/s",
        ops,
        r.ops_done,
        r.irq_ops,
        r.cpus,
        r.ms,
        ops * 1000 / r.ms.max(1)
    );
    kprintln!(
        "soak: {} objects freed by another CPU; {} allocations refused ({injected} failures injected); {} damaged, {} refused frees; {} of {} /proc checks inconsistent",
        r.handed,
        r.refused,
        r.corrupt,
        r.failed,
        INCONSISTENT.load(Relaxed),
        CHECKS.load(Relaxed)
    );
    let recovered = r.free_pages_same && r.caches_same && r.vmalloc_same;
    kprintln!(
        "soak: free pages {}, slab objects {}, vmalloc areas {}",
        if r.free_pages_same { "recovered exactly" } else { "DIFFER" },
        if r.caches_same { "recovered exactly" } else { "DIFFER" },
        if r.vmalloc_same { "recovered exactly" } else { "DIFFER" }
    );
    let ok = r.clean() && recovered && INCONSISTENT.load(Relaxed) == 0 && r.irq_ops > 0;
    kprintln!("soak: {}", if ok { "passed" } else { "FAILED" });
    qemu::exit(if ok { ExitCode::Success } else { ExitCode::Failure })
}
