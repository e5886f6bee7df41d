//! SMP tests of the memory subsystem: every online CPU at once.
//!
//! - `drain_all_pages`: every CPU drains its own per-CPU page lists in an IPI; with interrupts
//!   off only the running CPU's are drained.
//! - The TLB shootdown: CPU 1 reads a vmalloc page in a loop while CPU 0 vfrees it and purges
//!   the lazily freed range (and vunmaps a vmap of other frames at, usually, the same address);
//!   once the purge has returned, CPU 1 must never read the old contents (vfree itself only
//!   parks the range, as on Linux: until the purge, reading it is a use after free). Without
//!   the shootdown (`tlb_shootdown=off`, see
//!   `tests/smp.rs`) it does, through its stale TLB entry. The same with vmalloc_huge: CPU 1
//!   holds a 2 MiB TLB entry, and a 4 KiB vmalloc at the freed address must be what it reads.
//! - A random mix on every CPU (the stress workload, `crate::mm::stress`: kmalloc/kzalloc/
//!   krealloc/kfree, alloc_pages orders 0..4, vmalloc/vfree, a kmem_cache), objects handed to
//!   other CPUs through a shared exchange and freed there, every fill pattern checked before the
//!   free; then the zones' free pages and every cache's object counts must be exactly what they
//!   were. Once plain, once with every CPU's local APIC timer doing GFP_ATOMIC work in interrupt
//!   context meanwhile.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use ::mm::{GfpFlags, Pfn};

use crate::arch::apic;
use crate::arch::exceptions::read_nofault;
use crate::arch::smp_call::{smp_call_on_cpus, CpuMask};
use crate::mm::page_alloc::{__free_pages, alloc_pages, phys_to_virt};
use crate::mm::stress::{self, P};
use crate::mm::vmalloc::{__vmalloc_node, purge_vmap_area_lazy, vfree, vmalloc, vmalloc_huge, vmap, vunmap};
use ::mm::vmalloc::VmFlags;

const KERNEL: GfpFlags = GfpFlags::GFP_KERNEL;

// ---- TLB shootdown ----

const ROUNDS: u64 = 200;
static GEN: AtomicU64 = AtomicU64::new(u64::MAX);
static ADDR: AtomicU64 = AtomicU64::new(0);
/// `gen + 1` of the last area whose vfree/vunmap has returned (0: none).
static FREED_PLUS1: AtomicU64 = AtomicU64::new(0);
/// The generation the reader last read intact (it has the translation in its TLB).
static READ_GEN: AtomicU64 = AtomicU64::new(u64::MAX);
static STOP: AtomicBool = AtomicBool::new(false);
static STALE: AtomicU64 = AtomicU64::new(0);
/// The last value the reader read (what it still sees when the writer gives up waiting).
static LAST_READ: AtomicU64 = AtomicU64::new(0);
static FAULTED_READS: AtomicU64 = AtomicU64::new(0);

const MAGIC: u64 = 0x5354_414c_4500_0000;

fn stale_pattern(gen: u64) -> u64 {
    MAGIC ^ gen
}

/// The generation whose pattern `v` is, if it is one.
fn pattern_gen(v: u64) -> Option<u64> {
    (v ^ MAGIC < 2 * ROUNDS).then_some(v ^ MAGIC)
}

/// Waits for the reader to have read generation `gen`; false after 10 s (the reader is stuck
/// or, without the shootdown, still reads the old frame). Generous: TCG on a busy host may
/// leave a vCPU thread unscheduled for a while.
fn wait_reader(gen: u64) -> bool {
    let deadline = crate::arch::rdtsc() + 10_000 * apic::tsc_per_ms();
    while READ_GEN.load(Acquire) != gen {
        if crate::arch::rdtsc() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn publish(addr: u64, gen: u64) {
    ADDR.store(addr, Release);
    GEN.store(gen, Release);
}

/// What the writer found when the reader did not see a new generation in time.
fn reader_stuck(round: u64, gen: u64, what: &'static str) -> WriterError {
    let seen = LAST_READ.load(Acquire);
    let freed = FREED_PLUS1.load(Acquire);
    match pattern_gen(seen) {
        // The new mapping's frames hold `gen`'s pattern; a freed generation's pattern can only
        // come from a translation cached before that generation's free.
        Some(old) if old < gen && old < freed => WriterError::StaleTlb { round, what, old, gen },
        _ => WriterError::ReaderStuck { round, what, seen },
    }
}

enum WriterError {
    /// CPU 1 kept reading a freed generation's contents at the reused address.
    StaleTlb {
        round: u64,
        what: &'static str,
        old: u64,
        gen: u64,
    },
    ReaderStuck {
        round: u64,
        what: &'static str,
        seen: u64,
    },
}

/// CPU 0's side: vmalloc + fill, let the reader cache it, vfree; vmap other (pre-filled) frames,
/// let the reader see them, vunmap. Returns how often the vmap reused the freed address. Never
/// panics (CPU 1 must be told to stop whatever happens): errors are returned.
fn shootdown_writer(rounds: fn() -> Result<u64, WriterError>) -> Result<u64, WriterError> {
    let result = rounds();
    STOP.store(true, Release);
    result
}

fn shootdown_rounds() -> Result<u64, WriterError> {
    let mut reused = 0;
    for round in 0..ROUNDS {
        let (g_vmalloc, g_vmap) = (2 * round, 2 * round + 1);
        // The other frames, filled before they are mapped anywhere.
        let frame = alloc_pages(KERNEL, 0).expect("page for the vmap");
        let other = phys_to_virt(frame.start_address()).as_u64();
        // SAFETY: a page this test owns, through the direct map.
        unsafe { (other as *mut u64).write_volatile(stale_pattern(g_vmap)) };

        let p = vmalloc(P).expect("vmalloc");
        // SAFETY: the first word of the live area.
        unsafe { p.as_ptr().cast::<u64>().write_volatile(stale_pattern(g_vmalloc)) };
        publish(p.as_ptr() as u64, g_vmalloc);
        if !wait_reader(g_vmalloc) {
            return Err(reader_stuck(round, g_vmalloc, "vmalloc"));
        }
        vfree(p.as_ptr()).unwrap();
        // The range is parked; the purge flushes it on every CPU and frees it for the vmap.
        purge_vmap_area_lazy();
        FREED_PLUS1.store(g_vmalloc + 1, Release);

        let pfn = Pfn::from_phys(frame.start_address());
        // SAFETY: the frame is this test's until the vunmap below.
        let q = unsafe { vmap(&[pfn], VmFlags::VM_MAP) }.expect("vmap");
        reused += (q == p) as u64;
        publish(q.as_ptr() as u64, g_vmap);
        if !wait_reader(g_vmap) {
            return Err(reader_stuck(round, g_vmap, "vmap of other frames"));
        }
        vunmap(q.as_ptr()).unwrap();
        purge_vmap_area_lazy();
        FREED_PLUS1.store(g_vmap + 1, Release);
        __free_pages(frame, 0).unwrap();
    }
    Ok(reused)
}

/// Rounds of [`huge_shootdown_rounds`]: each maps and frees 4 MiB.
const HUGE_ROUNDS: u64 = 40;

/// CPU 0's side for vmalloc_huge: a 2 MiB PMD mapping read by CPU 1 at its middle (so CPU 1
/// caches a 2 MiB translation), vfree, then a 4 KiB-page vmalloc of the same shape, which the
/// lowest fit puts at the same address, over other frames (the freed pages leave the per-CPU
/// list last-in first-out, so the page at the middle is another frame). CPU 1 must read the
/// new contents: the purge's flush covered the whole 2 MiB on every CPU.
fn huge_shootdown_rounds() -> Result<u64, WriterError> {
    const M2: usize = ::mm::vmalloc::PMD_SIZE;
    let mut reused = 0;
    for round in 0..HUGE_ROUNDS {
        let (g_huge, g_small) = (2 * round, 2 * round + 1);
        let p = vmalloc_huge(M2, KERNEL).expect("vmalloc_huge");
        let mid = p.as_ptr() as u64 + M2 as u64 / 2;
        // SAFETY: a word in the middle of the live 2 MiB area.
        unsafe { (mid as *mut u64).write_volatile(stale_pattern(g_huge)) };
        publish(mid, g_huge);
        if !wait_reader(g_huge) {
            return Err(reader_stuck(round, g_huge, "vmalloc_huge"));
        }
        vfree(p.as_ptr()).unwrap();
        purge_vmap_area_lazy();
        FREED_PLUS1.store(g_huge + 1, Release);

        let q = __vmalloc_node(M2, M2, KERNEL).expect("vmalloc of 4 KiB pages");
        let qmid = q.as_ptr() as u64 + M2 as u64 / 2;
        // SAFETY: as above, in the new area.
        unsafe { (qmid as *mut u64).write_volatile(stale_pattern(g_small)) };
        reused += (q == p) as u64;
        publish(qmid, g_small);
        if !wait_reader(g_small) {
            return Err(reader_stuck(round, g_small, "4 KiB vmalloc at the freed huge area"));
        }
        vfree(q.as_ptr()).unwrap();
        purge_vmap_area_lazy();
        FREED_PLUS1.store(g_small + 1, Release);
    }
    Ok(reused)
}

/// CPU 1's side: reads the published address in a loop; a read that returns the contents of a
/// generation whose free had returned before the read began is a stale translation.
fn shootdown_reader() {
    while !STOP.load(Acquire) {
        let g = GEN.load(Acquire);
        let a = ADDR.load(Acquire);
        if g == u64::MAX || GEN.load(Acquire) != g {
            continue;
        }
        for _ in 0..64 {
            let freed = FREED_PLUS1.load(Acquire);
            let v = read_nofault(a);
            if let Some(v) = v {
                LAST_READ.store(v, Release);
            }
            match v {
                Some(v) if v == stale_pattern(g) => {
                    if freed > g {
                        STALE.fetch_add(1, Relaxed);
                    } else {
                        READ_GEN.store(g, Release);
                    }
                }
                Some(_) => {}
                None => {
                    FAULTED_READS.fetch_add(1, Relaxed);
                }
            }
            if GEN.load(Acquire) != g {
                break;
            }
        }
    }
}

/// Runs `rounds` on CPU 0 against [`shootdown_reader`] on CPU 1; the reuse count, or `None`
/// with fewer than 2 CPUs. Panics on a stale read.
fn run_shootdown(rounds: fn() -> Result<u64, WriterError>) -> Option<u64> {
    if mm::num_online_cpus() < 2 {
        crate::info!("shootdown test: needs 2 CPUs, {} online; checked at --smp 4", mm::num_online_cpus());
        return None;
    }
    for a in [&GEN, &READ_GEN] {
        a.store(u64::MAX, SeqCst);
    }
    for a in [&ADDR, &FREED_PLUS1, &STALE, &FAULTED_READS, &LAST_READ] {
        a.store(0, SeqCst);
    }
    STOP.store(false, SeqCst);
    let result = spin::Mutex::new(None);
    smp_call_on_cpus(CpuMask(0b11), &|cpu| {
        if cpu == 0 {
            *result.lock() = Some(shootdown_writer(rounds));
        } else {
            shootdown_reader();
        }
    })
    .unwrap();
    let reused = match result.lock().take().expect("the writer ran") {
        Ok(reused) => reused,
        Err(WriterError::StaleTlb { round, what, old, gen }) => panic!(
            "round {round}: after vfree/vunmap and the purge returned, CPU 1 still read generation {old}'s \
             contents where the {what} (generation {gen}) is mapped: a stale TLB entry"
        ),
        Err(WriterError::ReaderStuck { round, what, seen }) => {
            panic!("round {round}: CPU 1 did not read the {what} within 10 s (last read {seen:#x})")
        }
    };
    assert_eq!(
        STALE.load(SeqCst),
        0,
        "CPU 1 read freed memory through a stale TLB entry after the purge returned"
    );
    Some(reused)
}

crate::ktest!(
    #[needs_memory]
    fn vfree_and_vunmap_ranges_shoot_down_every_cpus_tlb_at_the_purge() {
        if let Some(reused) = run_shootdown(shootdown_rounds) {
            crate::info!(
                "shootdown test: {ROUNDS} rounds, address reused by the vmap in {reused} rounds, {} reads \
                 faulted after a free, {} stale reads",
                FAULTED_READS.load(SeqCst),
                STALE.load(SeqCst)
            );
        }
    }
);

crate::ktest!(
    // mm/vmalloc.c (6.12.19) vunmap_pmd_range clears the huge PMD; the lazy purge's
    // flush_tlb_kernel_range(start, end) covers the whole area (a full flush above 33 pages on
    // x86) on every CPU before the range is reused.
    #[needs_memory]
    fn vmalloc_huge_vfree_shoots_down_the_2mib_translation_on_every_cpu() {
        if let Some(reused) = run_shootdown(huge_shootdown_rounds) {
            crate::info!(
                "huge shootdown test: {HUGE_ROUNDS} rounds, address reused in {reused} rounds, {} reads \
                 faulted after a free, {} stale reads",
                FAULTED_READS.load(SeqCst),
                STALE.load(SeqCst)
            );
            assert!(reused > 0, "the 4 KiB vmalloc never reused the huge area's address");
        }
    }
);

// ---- drain_all_pages ----

/// Pages on `cpu`'s per-CPU lists, all zones (its counters, readable from any CPU).
fn pcp_pages_of(cpu: usize) -> u64 {
    ::mm::zone::ZoneType::ALL
        .iter()
        .map(|&zt| crate::mm::node().pcp_info(zt, cpu).map_or(0, |i| i.count as u64))
        .sum()
}

/// Every online CPU leaves pages on its own per-CPU lists (an alloc/free pair refills a batch
/// and frees onto the running CPU's list).
fn park_pages_on_every_cpu() {
    smp_call_on_cpus(CpuMask::online(), &|_| {
        let frame = alloc_pages(KERNEL, 0).expect("one page");
        __free_pages(frame, 0).expect("freed");
    })
    .unwrap();
}

crate::ktest!(
    fn drain_all_pages_empties_every_cpus_lists_through_ipis() {
        let online = mm::num_online_cpus();
        if online < 2 {
            crate::info!("drain_all_pages test: needs 2 CPUs, {online} online; checked at --smp 4");
            return;
        }
        park_pages_on_every_cpu();
        for cpu in 0..online {
            assert!(pcp_pages_of(cpu) > 0, "CPU {cpu} has nothing on its lists");
        }
        // With interrupts off no IPI can be sent: only the running CPU's lists are drained.
        let local =
            x86_64::instructions::interrupts::without_interrupts(crate::mm::page_alloc::drain_all_pages);
        assert_eq!(pcp_pages_of(0), 0, "CPU 0 drained its own lists");
        assert!(local > 0);
        for cpu in 1..online {
            assert!(pcp_pages_of(cpu) > 0, "CPU {cpu}'s lists were touched from CPU 0");
        }
        // From thread context: every other CPU drains its own lists in the IPI (the debug build
        // asserts, in each, that the lists entered are the running CPU's).
        let parked = crate::mm::node().totals().pcp_pages;
        let drained = crate::mm::page_alloc::drain_all_pages();
        assert_eq!(drained, parked, "every page on a list came back");
        for cpu in 0..online {
            assert_eq!(pcp_pages_of(cpu), 0, "CPU {cpu} still has pages on its lists");
        }
        assert_eq!(crate::mm::node().totals().pcp_pages, 0);
    }
);

// ---- random mix on every CPU (the workload is `crate::mm::stress`) ----

/// Operations per CPU in the suite. Under TCG with 4 vCPUs sharing 2 host cores a million mixed
/// operations per CPU (vfree's shootdown IPIs included) takes about two minutes, so the suite
/// runs a fraction; `stress_ops=N` on the command line sets it, and `tests/smp.rs` boots the
/// plain mix alone at 1M per CPU on 4 CPUs (the soak runs the timer variant at that size).
const DEFAULT_OPS: u64 = 200_000;

pub(crate) fn run_mix(ops: u64, with_timer: bool) {
    let _tidy = super::kmalloc::Tidy;
    let never = || false;
    let mut ctl = stress::Control::new(&never, None);
    let irq: Option<(&dyn Fn(), &dyn Fn() -> u64)> =
        if with_timer { Some((&stress::timer::start, &timer_stop)) } else { None };
    let calls = crate::mm::page_alloc::MM_CROSS_CPU_CALLS.load(Relaxed);
    let r = stress::run(ops, CpuMask::online(), &mut ctl, irq).expect("the stress workload starts");
    crate::info!(
        "smp mix: {} CPUs x {ops} ops in {} ms, {} objects handed across CPUs, {} GFP_ATOMIC ops in \
         timer interrupts, {} allocations refused, {} per-CPU page list IPI rounds",
        r.cpus,
        r.ms,
        r.handed,
        r.irq_ops,
        r.refused,
        crate::mm::page_alloc::MM_CROSS_CPU_CALLS.load(Relaxed) - calls
    );
    assert_eq!(r.ops_done, ops * r.cpus as u64, "every operation ran");
    assert_eq!(r.corrupt, 0, "fill patterns damaged");
    assert_eq!(r.failed, 0, "frees or reallocations were refused");
    if !crate::mm::fault_inject::active() {
        assert_eq!(r.refused, 0, "allocations failed without fault injection");
    }
    assert!(r.vmalloc_same, "vmalloc counts differ after the mix");
    assert!(r.caches_same, "cache object counts differ after the mix");
    assert!(r.free_pages_same, "zone free pages differ after the mix");
}

/// [`stress::timer::stop`], which must have seen GFP_ATOMIC work.
fn timer_stop() -> u64 {
    let ops = stress::timer::stop();
    assert!(ops > 0, "no timer interrupt did GFP_ATOMIC work");
    ops
}

fn stress_ops() -> u64 {
    crate::cmdline::get_global("stress_ops").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_OPS)
}

crate::ktest!(
    fn random_mix_on_every_cpu_with_cross_cpu_frees_returns_to_the_starting_figures() {
        run_mix(stress_ops(), false);
    }
);

crate::ktest!(
    fn random_mix_with_gfp_atomic_work_in_every_cpus_timer_interrupt() {
        run_mix(stress_ops() / 2, true);
    }
);
