//! The same loop on 1, 2 and 4 CPUs at once: kmalloc(64)+kfree with 100 live objects (LIFO) and
//! order-0 page pairs. Booted with `--bench --smp 4`; run from `bench::run` only when more than
//! one CPU is online.
//!
//! Under `-icount` QEMU runs the vCPUs in turn in one host thread and the guest TSC counts the
//! instructions of whichever vCPU runs, so the time from the common start (a barrier) to the
//! last CPU's end is the instructions of all participants; divided by CPUs x pairs it is the
//! instructions per pair on each CPU. Spinning on a contended lock executes instructions and
//! shows up here. Goal (issue 8): at 4 CPUs within 10% of 1 CPU.
//!
//! Lines (`bench: KEY VALUE`, for the benchmark gate):
//! - `smpN.kmalloc.64.100.lifo`, `smpN.pages.order0.pair`: instructions per pair;
//! - `smpN.kmalloc.64.100.lifo.shared_lock_pct`, `smpN.pages.order0.pair.shared_lock_pct`: the
//!   share of operations (alloc or free) that took a lock shared between CPUs, in percent:
//!   for kmalloc SLUB_STATS' `alloc_slowpath + free_slowpath` over all operations of
//!   kmalloc-64 (the fast paths use the CPU's sheaf and slab without a lock); an
//!   order-0 page pair stays on the CPU's own pcp list (a per-CPU lock), taking the zone lock
//!   only when the list refills or spills a batch, counted in a second, untimed pass as the
//!   pairs during which the buddy free count changed (an upper bound: a CPU also sees the
//!   others' refills).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

use ::mm::{GfpFlags, NR_CPUS};

use crate::arch::rdtsc;
use crate::arch::smp_call::{smp_call_on_cpus, CpuMask};
use crate::kprintln;
use crate::mm::page_alloc::{__free_pages, alloc_pages};
use crate::mm::slab::{kfree, kmalloc};

const KMALLOC_ROUNDS: usize = 100;
const LIVE: usize = 100;
const PAGE_PAIRS: usize = 10_000;

static ARRIVED: AtomicUsize = AtomicUsize::new(0);
static START: [AtomicU64; NR_CPUS] = [const { AtomicU64::new(0) }; NR_CPUS];
static END: [AtomicU64; NR_CPUS] = [const { AtomicU64::new(0) }; NR_CPUS];
/// Zone-lock visits seen by the page loop (changes of the zone's free count).
static ZONE_VISITS: AtomicU64 = AtomicU64::new(0);

/// Every participant waits here until all `n` have arrived, then notes its start time.
fn barrier(cpu: usize, n: usize) {
    ARRIVED.fetch_add(1, AcqRel);
    while ARRIVED.load(Acquire) < n {
        core::hint::spin_loop();
    }
    START[cpu].store(rdtsc(), Relaxed);
}

fn kmalloc_lifo() {
    let mut held = [core::ptr::null_mut::<u8>(); LIVE];
    for _ in 0..KMALLOC_ROUNDS {
        for h in held.iter_mut() {
            *h = kmalloc(64, GfpFlags::GFP_KERNEL).expect("kmalloc(64)").as_ptr();
        }
        for h in held.iter().rev() {
            let _ = kfree(*h);
        }
    }
}

fn page_pairs() {
    for _ in 0..PAGE_PAIRS {
        let f = alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("order-0 page");
        let _ = __free_pages(f, 0);
    }
}

/// [`page_pairs`] again, untimed, counting the pairs during which the buddy free count changed
/// (a pcp refill or spill under the zone lock, by this CPU or, over-counting, another one).
fn page_pairs_counting_zone_visits() {
    let free = || crate::mm::node().zones().iter().map(|z| z.free_pages()).sum::<u64>();
    let mut last = free();
    let mut visits = 0;
    for _ in 0..PAGE_PAIRS {
        let f = alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("order-0 page");
        let _ = __free_pages(f, 0);
        let now = free();
        visits += (now != last) as u64;
        last = now;
    }
    ZONE_VISITS.fetch_add(visits, Relaxed);
}

/// Runs `work` on CPUs `0..n` at once; returns the instructions per pair.
fn run_on(tpk: u64, n: usize, pairs_per_cpu: usize, work: fn()) -> u64 {
    ARRIVED.store(0, SeqCst);
    let mask = CpuMask((1u32 << n) - 1);
    smp_call_on_cpus(mask, &|cpu| {
        barrier(cpu, n);
        work();
        END[cpu].store(rdtsc(), Relaxed);
    })
    .expect("bench runs in thread context with interrupts on");
    let start = START[..n].iter().map(|s| s.load(SeqCst)).min().unwrap_or(0);
    let end = END[..n].iter().map(|e| e.load(SeqCst)).max().unwrap_or(0);
    (end - start) * 1000 / tpk.max(1) / (n * pairs_per_cpu) as u64
}

/// Runs when more than one CPU is online (`--bench --smp 4`), else returns at once.
pub fn run(tpk: u64) {
    let online = mm::num_online_cpus();
    if online < 2 {
        return;
    }
    kprintln!(
        "---- bench: the same loop on 1, 2 and 4 CPUs at once (instructions per pair on each CPU) ----"
    );
    let kmalloc_pairs = KMALLOC_ROUNDS * LIVE;
    // Warm-up: slabs and pcp lists filled, so that no CPU count pays the first refill.
    let _ = run_on(tpk, online.min(4), kmalloc_pairs, kmalloc_lifo);
    for n in [1, 2, 4].into_iter().filter(|&n| n <= online) {
        let before = lock_counts();
        let per_pair = run_on(tpk, n, kmalloc_pairs, kmalloc_lifo);
        let after = lock_counts();
        let (slow, all) = (after.0 - before.0, after.1 - before.1);
        kprintln!("bench: smp{n}.kmalloc.64.100.lifo {per_pair}");
        kprintln!("bench: smp{n}.kmalloc.64.100.lifo.shared_lock_pct {}", slow * 100 / all.max(1));

        let per_pair = run_on(tpk, n, PAGE_PAIRS, page_pairs);
        let ops = (2 * n * PAGE_PAIRS) as u64;
        ZONE_VISITS.store(0, SeqCst);
        let _ = run_on(tpk, n, PAGE_PAIRS, page_pairs_counting_zone_visits);
        kprintln!("bench: smp{n}.pages.order0.pair {per_pair}");
        kprintln!("bench: smp{n}.pages.order0.pair.shared_lock_pct {}", ZONE_VISITS.load(SeqCst) * 100 / ops);
    }
    kprintln!(
        "(goal: smp4 within 10% of smp1; shared_lock_pct: kmalloc-64's SLUB_STATS (alloc_slowpath + free_slowpath) over all its operations,"
    );
    kprintln!(" the loop allocates 100 objects, then frees them: more than a 32-object sheaf, so batches go through the cache lock)");
}

/// kmalloc-64's (slow-path operations, all operations) so far, summed over every CPU.
fn lock_counts() -> (u64, u64) {
    use ::mm::slab::SlabStat::*;
    let Some(cache) = crate::mm::slab::kmalloc_instance().kmalloc_slab(64, GfpFlags::GFP_KERNEL) else {
        return (0, 0);
    };
    let slow = cache.stat(AllocSlowpath) + cache.stat(FreeSlowpath);
    (slow, slow + cache.stat(AllocFastpath) + cache.stat(FreeFastpath))
}
