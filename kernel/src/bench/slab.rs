//! kmalloc benchmark: guest instructions per kmalloc + kfree pair, by size, free pattern and
//! number of live objects, beside the peer heaps of [`super::peers`] running the same workload
//! over buddy pages sized for the live set, and the memory each needs for the mixed workload.
//!
//! Workload of one cell: `live` objects of `size` bytes are allocated, then each step frees one
//! and allocates a replacement in its slot — LIFO: the newest (top of a stack), FIFO: the oldest
//! (ring), random: a uniformly random one. The cost of the loop itself (slot choice, random
//! numbers) is measured with a no-op allocator and subtracted.

use alloc::vec::Vec;

use ::mm::GfpFlags;

use super::peers::{BenchAlloc, Cache, Kmalloc, Kzalloc, Null, Peer, PeerHeap, Region, Tracked};
use super::{emit, emit_fraction, LinuxCol, Ratio};
use crate::arch::rdtsc;
use crate::mm::slab::shrink_all;
use crate::{kprint, kprintln};

const SIZES: [usize; 11] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];
const LIVES: [usize; 3] = [100, 10_000, 100_000];
/// Measured steps per pattern for kmalloc and the O(1)/O(log n) heaps.
const OPS: usize = 20_000;

#[derive(Clone, Copy)]
enum Pattern {
    Lifo,
    Fifo,
    Random,
}

const PATTERNS: [(Pattern, &str); 3] =
    [(Pattern::Lifo, "lifo"), (Pattern::Fifo, "fifo"), (Pattern::Random, "random")];

/// Measured steps for `peer` at `live` objects: first fit walks its hole list, so it gets fewer
/// steps where it is slow, and rlsf, whose heap grows by a block per step in the worst case
/// (see `Peer::heap_bytes`), fewer where that would not fit (counts are exact under -icount).
fn peer_ops(peer: Peer, live: usize) -> usize {
    match (peer, live) {
        (Peer::LinkedList, 100) => 10_000,
        (Peer::LinkedList, 10_000) => 2_000,
        (Peer::LinkedList, _) => 500,
        (Peer::Rlsf, 100_000) => 2_000,
        _ => OPS,
    }
}

/// Allocations a [`cell`] of `ops` steps makes after building its live set.
fn cell_allocs(ops: usize) -> usize {
    3 * (ops + ops / 10)
}

/// xorshift64*: cheap, deterministic random slot choice.
#[inline(always)]
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Runs `ops` free+alloc steps of `pattern` on the live set in `slots`; returns TSC ticks.
#[inline(never)]
fn steps<A: BenchAlloc>(a: &mut A, slots: &mut [*mut u8], size: usize, pattern: Pattern, ops: usize) -> u64 {
    let live = slots.len();
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut head = 0usize;
    let start = rdtsc();
    for _ in 0..ops {
        let idx = match pattern {
            Pattern::Lifo => live - 1,
            Pattern::Fifo => {
                let i = head;
                head = if head + 1 == live { 0 } else { head + 1 };
                i
            }
            Pattern::Random => (next_random(&mut rng) % live as u64) as usize,
        };
        a.free(slots[idx], size);
        slots[idx] = a.alloc(size);
    }
    rdtsc() - start
}

/// Instructions per pair for the three patterns on one allocator, `ops` measured steps each
/// (after `ops / 10` warm-up steps), the live set built before and freed after.
fn cell<A: BenchAlloc>(
    a: &mut A,
    size: usize,
    live: usize,
    ops: usize,
    tpk: u64,
    free_all: bool,
) -> [u64; 3] {
    let mut slots: Vec<*mut u8> = Vec::with_capacity(live);
    for _ in 0..live {
        slots.push(a.alloc(size));
    }
    let mut out = [0; 3];
    for (k, &(pattern, _)) in PATTERNS.iter().enumerate() {
        steps(a, &mut slots, size, pattern, ops / 10);
        let ticks = steps(a, &mut slots, size, pattern, ops);
        out[k] = ticks * 1000 / tpk.max(1) / ops as u64;
    }
    if free_all {
        for &p in &slots {
            a.free(p, size);
        }
    }
    out
}

/// [`cell`] minus the loop's own cost.
fn net_cell<A: BenchAlloc>(
    a: &mut A,
    size: usize,
    live: usize,
    ops: usize,
    tpk: u64,
    free_all: bool,
) -> [u64; 3] {
    let raw = cell(a, size, live, ops, tpk, free_all);
    let overhead = cell(&mut Null, size, live, ops, tpk, false);
    core::array::from_fn(|i| raw[i].saturating_sub(overhead[i]))
}

/// kmalloc(64) + kfree, 100 live, LIFO, the loop subtracted (the auto-init rows).
pub(super) fn lifo_pair_64(tpk: u64) -> u64 {
    net_cell(&mut Kmalloc, 64, 100, OPS, tpk, true)[0]
}

/// Iterations of the order-0 page pair rows.
pub(super) const ORDER0_ITERS: u64 = 100_000;

/// Pages free in the buddy allocator, per-CPU lists included (drained first, so that the count
/// is what the zones hold).
fn free_pages() -> u64 {
    let node = crate::mm::node();
    node.drain_pages();
    let t = node.totals();
    t.free_pages + t.pcp_pages
}

/// What one run of the mixed workload measured.
struct Mixed {
    /// Instructions per pair, loop not subtracted.
    per_pair: u64,
    /// Bytes requested by the live objects at the end.
    live_bytes: u64,
    /// Pages the buddy allocator gave out during the run and had not got back at its end.
    buddy_pages_taken: u64,
}

/// Mixed sizes (8 B to 2 KiB, uniformly among the 9 powers of two), random frees: the workload
/// that fragments a first-fit heap. `warm` unmeasured steps first let the fragmentation build up.
fn mixed_cell<A: BenchAlloc>(
    a: &mut A,
    live: usize,
    warm: usize,
    ops: usize,
    tpk: u64,
    free_all: bool,
) -> Mixed {
    let mut rng = 0x0ddb_a11c_0ffe_e123u64;
    let size = |rng: &mut u64| SIZES[(next_random(rng) % 9) as usize];
    let mut slots: Vec<(*mut u8, usize)> = Vec::with_capacity(live);
    let free_before = free_pages();
    for _ in 0..live {
        let s = size(&mut rng);
        slots.push((a.alloc(s), s));
    }
    let mut run = |a: &mut A, n: usize, rng: &mut u64| {
        let start = rdtsc();
        for _ in 0..n {
            let idx = (next_random(rng) % live as u64) as usize;
            let (p, old) = slots[idx];
            a.free(p, old);
            let s = size(rng);
            slots[idx] = (a.alloc(s), s);
        }
        rdtsc() - start
    };
    run(a, warm, &mut rng);
    let ticks = run(a, ops, &mut rng);
    let buddy_pages_taken = free_before.saturating_sub(free_pages());
    let live_bytes = slots.iter().map(|&(_, s)| s as u64).sum();
    if free_all {
        for &(p, s) in &slots {
            a.free(p, s);
        }
    }
    Mixed { per_pair: ticks * 1000 / tpk.max(1) / ops as u64, live_bytes, buddy_pages_taken }
}

/// Runs `f` on a fresh `peer` heap over a region of `bytes`; `None` if no such region exists.
fn with_peer<R>(peer: Peer, bytes: usize, f: impl FnOnce(&mut PeerHeap, &Region) -> R) -> Option<R> {
    shrink_all();
    let region = Region::new(bytes)?;
    // SAFETY: `region` is RAM this function owns (allocated above) and outlives the heap, which
    // is dropped at the end of this function before `region` is.
    let mut heap = unsafe { PeerHeap::new(peer, &region) };
    let r = f(&mut heap, &region);
    drop(heap);
    drop(region);
    Some(r)
}

/// The mixed-size rows, one per `(live, warm-up steps)`: time per pair and memory held per live
/// byte, every allocator.
fn mixed_rows(tpk: u64, rows: &[(usize, usize)]) {
    kprintln!();
    kprintln!("mixed sizes (uniform over 8, 16, ..., 2048 bytes), random frees, the fragmenting workload: instructions per pair");
    kprintln!(
        "    live   kmalloc  linked_list       talc       rlsf  buddy_system   vs best peer   Linux 6.1"
    );
    // Per live count: (pages held, live bytes) for kmalloc and each peer.
    let mut memory: Vec<(usize, [(u64, u64); 5])> = Vec::new();
    // Warm-up: as many steps as live objects at 10k (steady state).
    for &(live, warm) in rows {
        let k = mixed_cell(&mut Kmalloc, live, warm, OPS, tpk, true);
        let k_pair = k.per_pair.saturating_sub(mixed_cell(&mut Null, live, warm, OPS, tpk, false).per_pair);
        // kmalloc's memory is the slab pages it took from the buddy allocator.
        let mut mem = [(0u64, 0u64); 5];
        mem[0] = (k.buddy_pages_taken, k.live_bytes);
        emit(format_args!("kmalloc.mixed.{live}.random"), k_pair);
        emit_fraction(
            format_args!("mem.kmalloc.mixed.{live}.pages_per_live_byte"),
            k.buddy_pages_taken,
            k.live_bytes,
        );
        let mut peers = [None; 4];
        for (i, peer) in Peer::ALL.into_iter().enumerate() {
            let ops = match peer {
                Peer::LinkedList if live >= 100_000 => 200,
                Peer::LinkedList => 2_000,
                _ => OPS,
            };
            // Room for the live set (455 bytes on average) twice over: first fit fragments.
            let bytes = peer.heap_bytes(live, 455, warm + ops) * 2;
            // First fit's pairs cost thousands of instructions, so the few that recording the
            // footprint adds are far below the gate's 1%: one tracked run gives both of its
            // figures. The fast heaps are timed untracked, then run again (same seed: the same
            // requests) to record the footprint.
            let first_fit = matches!(peer, Peer::LinkedList);
            peers[i] = with_peer(peer, bytes, |heap, region| {
                let timed = (!first_fit).then(|| mixed_cell(heap, live, warm, ops, tpk, true).per_pair);
                let null = mixed_cell(&mut Null, live, warm, ops, tpk, false).per_pair;
                let mut tracked = Tracked { inner: heap, high_water: region.start() as usize };
                let m = mixed_cell(&mut tracked, live, warm, ops, tpk, true);
                let pages = (tracked.high_water - region.start() as usize).div_ceil(4096) as u64;
                (timed.unwrap_or(m.per_pair).saturating_sub(null), pages, m.live_bytes)
            });
            match peers[i] {
                Some((pair, pages, bytes)) => {
                    emit(format_args!("peer.{}.mixed.{live}.random", peer.key()), pair);
                    emit_fraction(
                        format_args!("mem.{}.mixed.{live}.pages_per_live_byte", peer.key()),
                        pages,
                        bytes,
                    );
                    mem[i + 1] = (pages, bytes);
                }
                None => kprintln!("  (no contiguous region of {} MiB for {})", bytes >> 20, peer.key()),
            }
        }
        let best = peers.iter().flatten().map(|p| p.0).min().unwrap_or(0);
        let col = |i: usize| peers[i].map_or(0, |p| p.0);
        kprintln!(
            "  {live:>6}  {k_pair:>8}  {:>11}  {:>9}  {:>9}  {:>12}   {:>12}   {:>9}{}",
            col(0),
            col(1),
            col(2),
            col(3),
            Ratio(best, k_pair),
            LinuxCol(if live == 10_000 { "kmalloc.mixed.10000.random" } else { "" }),
            if live == 10_000 { "   <- goal: <= 150" } else { "" }
        );
        memory.push((live, mem));
    }
    kprintln!("memory for the mixed workload: pages held, and bytes held per live byte requested (kmalloc: the slab pages it");
    kprintln!("took from the buddy allocator; a region heap: the pages up to the highest byte it handed out; 1.00 = no overhead)");
    kprintln!("    live    kmalloc          linked_list      talc             rlsf             buddy_system");
    for (live, m) in memory {
        kprint!("  {live:>6}");
        for (pages, bytes) in m {
            let per = pages * 4096 * 100 / bytes.max(1);
            kprint!("  {pages:>7} {:>3}.{:02}", per / 100, per % 100);
        }
        kprintln!();
    }
}

pub fn run(tpk: u64) {
    kprintln!();
    kprintln!("== slab / kmalloc ==");
    kprintln!("kmalloc + kfree pair (GFP_KERNEL) vs the peer heaps on the same workload over buddy pages, instructions per pair,");
    kprintln!("loop overhead subtracted; a pair frees one of `live` objects (LIFO: newest, FIFO: oldest, random) and allocates its replacement.");
    kprintln!("`vs best peer`: the fastest peer's figure / kmalloc's (above 1x: kmalloc is faster). goals: 64-byte pair <= 50 instructions.");
    building_blocks(tpk);
    let cache =
        crate::mm::slab::kmalloc_instance().kmalloc_slab(64, GfpFlags::GFP_KERNEL).expect("kmalloc-64");
    let direct = net_cell(&mut Cache(cache), 64, 100, OPS, tpk, true);
    let zeroed = net_cell(&mut Kzalloc, 64, 100, OPS, tpk, true);
    for (i, &(_, name)) in PATTERNS.iter().enumerate() {
        emit(format_args!("kmem_cache.64.100.{name}"), direct[i]);
        emit(format_args!("kzalloc.64.100.{name}"), zeroed[i]);
    }
    kprintln!(
        "kmem_cache_alloc + kmem_cache_free on kmalloc-64 directly (no kmalloc layer), 100 live: LIFO {}, FIFO {}, random {}",
        direct[0],
        direct[1],
        direct[2]
    );
    kprintln!(
        "kzalloc(64) + kfree, 100 live: LIFO {} (Linux 6.1: {}), FIFO {}, random {}",
        zeroed[0],
        LinuxCol("kzalloc.64.100.lifo"),
        zeroed[1],
        zeroed[2]
    );
    slub_stats_of_one_cell(tpk);
    kprintln!();
    kprintln!("same-size objects: instructions per pair");
    kprintln!("   size     live  pattern   kmalloc  linked_list       talc       rlsf  buddy_system   vs best peer   Linux 6.1");
    // Guest instructions the grid spends per allocator and live count (the bench's run time).
    let mut spent = [[0u64; 5]; 3];
    for (l, &live) in LIVES.iter().enumerate() {
        for &size in &SIZES {
            let t0 = rdtsc();
            let k = net_cell(&mut Kmalloc, size, live, OPS, tpk, true);
            spent[l][0] += rdtsc() - t0;
            let mut peers = [None; 4];
            for (i, peer) in Peer::ALL.into_iter().enumerate() {
                let ops = peer_ops(peer, live);
                let bytes = peer.heap_bytes(live, size, cell_allocs(ops));
                let t0 = rdtsc();
                peers[i] = with_peer(peer, bytes, |heap, _| net_cell(heap, size, live, ops, tpk, true));
                spent[l][i + 1] += rdtsc() - t0;
                if peers[i].is_none() {
                    kprintln!(
                        "  (no contiguous region of {} MiB for {} at {size} B x {live})",
                        bytes >> 20,
                        peer.key()
                    );
                }
            }
            for (j, &(_, name)) in PATTERNS.iter().enumerate() {
                let key_k = alloc::format!("kmalloc.{size}.{live}.{name}");
                emit(format_args!("{key_k}"), k[j]);
                for (i, peer) in Peer::ALL.into_iter().enumerate() {
                    if let Some(p) = peers[i] {
                        emit(format_args!("peer.{}.{size}.{live}.{name}", peer.key()), p[j]);
                    }
                }
                let col = |i: usize| peers[i].map_or(0, |p| p[j]);
                let best = peers.iter().flatten().map(|p| p[j]).min().unwrap_or(0);
                kprintln!(
                    "  {size:>5}  {live:>7}  {name:<7} {:>9}  {:>11}  {:>9}  {:>9}  {:>12}   {:>12}   {:>9}{}",
                    k[j],
                    col(0),
                    col(1),
                    col(2),
                    col(3),
                    Ratio(best, k[j]),
                    LinuxCol(&key_k),
                    if size == 64 && j == 0 && live == 100 { "   <- goal: kmalloc <= 50" } else { "" }
                );
            }
        }
    }
    let t0 = rdtsc();
    mixed_rows(tpk, &[(10_000, 10_000)]);
    let mixed = (rdtsc() - t0) / tpk.max(1);
    kprintln!("run time of the same-size grid, millions of guest instructions (kmalloc, linked_list, talc, rlsf, buddy_system):");
    for (l, &live) in LIVES.iter().enumerate() {
        let m = spent[l].map(|t| t / tpk.max(1) / 1000);
        kprintln!("  {live:>7} live  {:>7} {:>7} {:>7} {:>7} {:>7}", m[0], m[1], m[2], m[3], m[4]);
    }
    kprintln!("  mixed, 10k     {:>7}", mixed / 1000);
}

/// The mixed-size row at 100,000 live objects: a section of its own because first fit makes it
/// the longest part of the bench (10 of 15 billion guest instructions before it became one),
/// so that the runner can boot it in a second QEMU alongside the rest.
pub fn run_mixed_100k(tpk: u64) {
    kprintln!();
    kprintln!("== slab / kmalloc: the mixed-size row at 100,000 live ==");
    // Warm-up 20k steps, where first fit is too slow for more (its fragmentation is still
    // growing there).
    mixed_rows(tpk, &[(100_000, 20_000)]);
}

/// The SLUB_STATS counters of kmalloc-64 over one kmalloc(64) cell (100 live, every pattern):
/// which path the pairs took.
fn slub_stats_of_one_cell(tpk: u64) {
    use ::mm::slab::SlabStat;
    let cache =
        crate::mm::slab::kmalloc_instance().kmalloc_slab(64, GfpFlags::GFP_KERNEL).expect("kmalloc-64");
    let before = SlabStat::ALL.map(|s| cache.stat(s));
    net_cell(&mut Kmalloc, 64, 100, OPS, tpk, true);
    kprint!(
        "SLUB_STATS of kmalloc-64 over the kmalloc(64) x 100 cell ({} steps of each pattern, the live set built and freed):",
        OPS + OPS / 10
    );
    let delta: [u64; ::mm::slab::NR_SLAB_STATS] =
        core::array::from_fn(|i| cache.stat(SlabStat::ALL[i]) - before[i]);
    for (s, d) in SlabStat::ALL.into_iter().zip(delta) {
        if d != 0 {
            kprint!(" {} {d}", s.name());
        }
    }
    kprintln!();
    for (s, d) in SlabStat::ALL.into_iter().zip(delta) {
        emit(format_args!("slub_stats.kmalloc-64.{}", s.name()), d);
    }
}

/// What the pieces of a kmalloc + kfree pair cost, to see where the instructions go.
fn building_blocks(tpk: u64) {
    use super::measure;
    const N: u64 = 20_000;
    let node = crate::mm::node();
    let kmalloc = crate::mm::slab::kmalloc_instance();
    let gfp = GfpFlags::GFP_KERNEL;
    let lock = ::mm::sync::IrqSpinLock::new(0u64);
    let cache = kmalloc.kmalloc_slab(64, gfp).expect("kmalloc-64");
    let obj = cache.alloc(gfp).expect("bench object");
    let empty = measure(tpk, N, || {
        core::hint::black_box(0);
    });
    let rows: [(&str, &str, u64); 5] = [
        (
            "in_interrupt",
            "arch::in_interrupt() (might_sleep check)",
            measure(tpk, N, || {
                core::hint::black_box(crate::arch::in_interrupt());
            }),
        ),
        (
            "irq_spinlock",
            "IrqSpinLock lock + unlock (cli/sti + spin::Mutex)",
            measure(tpk, N, || {
                *lock.lock() += 1;
            }),
        ),
        (
            "page_lookup",
            "Node::page(pfn) (descriptor lookup, done per free)",
            measure(tpk, N, || {
                core::hint::black_box(node.page(core::hint::black_box(::mm::Pfn(0x2000))));
            }),
        ),
        (
            "kmalloc_slab",
            "kmalloc_slab(64) (size class lookup)",
            measure(tpk, N, || {
                core::hint::black_box(kmalloc.kmalloc_slab(core::hint::black_box(64), gfp));
            }),
        ),
        (
            "ksize",
            "ksize(obj) (the free path's owner lookup)",
            measure(tpk, N, || {
                let _ = core::hint::black_box(crate::mm::slab::ksize(core::hint::black_box(obj.as_ptr())));
            }),
        ),
    ];
    kprintln!("building blocks, instructions per call (call loop overhead of {empty} subtracted):");
    for (key, what, cost) in rows {
        let net = cost.saturating_sub(empty);
        kprintln!("  {net:>5}  {what}");
        emit(format_args!("part.{key}"), net);
    }
    cache.free(obj).expect("bench object free");
}
