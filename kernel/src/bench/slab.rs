//! kmalloc benchmark: guest instructions per kmalloc + kfree pair, by size, free pattern and
//! number of live objects, beside `linked_list_allocator` (a first-fit free list, the usual
//! hobby-kernel heap) running the same workload in a heap of buddy pages sized for the live set.
//!
//! Workload of one cell: `live` objects of `size` bytes are allocated, then each step frees one
//! and allocates a replacement in its slot — LIFO: the newest (top of a stack), FIFO: the oldest
//! (ring), random: a uniformly random one. The cost of the loop itself (slot choice, random
//! numbers) is measured with a no-op allocator and subtracted.

use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::NonNull;

use ::mm::GfpFlags;
use linked_list_allocator::Heap;
use x86_64::structures::paging::PhysFrame;

use crate::arch::rdtsc;
use crate::kprintln;
use crate::mm::page_alloc::{__free_pages, alloc_pages, phys_to_virt};
use crate::mm::slab::{kfree, kmalloc, shrink_all};

const SIZES: [usize; 11] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];
const LIVES: [usize; 3] = [100, 10_000, 100_000];
/// Live sets above this are skipped (the bench boots with 1 GiB; each allocator needs the live
/// set once).
const MAX_LIVE_BYTES: usize = 256 << 20;

#[derive(Clone, Copy)]
enum Pattern {
    Lifo,
    Fifo,
    Random,
}

const PATTERNS: [(Pattern, &str); 3] =
    [(Pattern::Lifo, "LIFO"), (Pattern::Fifo, "FIFO"), (Pattern::Random, "random")];

trait BenchAlloc {
    fn alloc(&mut self, size: usize) -> *mut u8;
    fn free(&mut self, p: *mut u8, size: usize);
}

/// kmalloc/kfree with GFP_KERNEL.
struct Kmalloc;

impl BenchAlloc for Kmalloc {
    #[inline(always)]
    fn alloc(&mut self, size: usize) -> *mut u8 {
        kmalloc(size, GfpFlags::GFP_KERNEL).expect("bench kmalloc").as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, _size: usize) {
        if kfree(p).is_err() {
            panic!("bench kfree refused");
        }
    }
}

/// `kmem_cache_alloc`/`kmem_cache_free` on one cache: the slab layer without kmalloc's size
/// lookup (the free still finds the slab from the address).
struct Cache(&'static ::mm::slab::KmemCache<'static, ::mm::buddy::Node>);

impl BenchAlloc for Cache {
    #[inline(always)]
    fn alloc(&mut self, _size: usize) -> *mut u8 {
        self.0.alloc(GfpFlags::GFP_KERNEL).expect("bench kmem_cache_alloc").as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, _size: usize) {
        if self.0.free(NonNull::new(p).expect("non-null")).is_err() {
            panic!("bench kmem_cache_free refused");
        }
    }
}

/// No allocation at all: measures the loop's own cost.
struct Null;

impl BenchAlloc for Null {
    #[inline(always)]
    fn alloc(&mut self, size: usize) -> *mut u8 {
        core::hint::black_box(size as *mut u8)
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, _size: usize) {
        core::hint::black_box(p);
    }
}

/// `linked_list_allocator::Heap` over physically contiguous buddy pages.
struct LinkedList {
    heap: Heap,
}

impl BenchAlloc for LinkedList {
    #[inline(always)]
    fn alloc(&mut self, size: usize) -> *mut u8 {
        let layout = Layout::from_size_align(size, 8).expect("layout");
        self.heap.allocate_first_fit(layout).expect("linked_list heap sized for the live set").as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, size: usize) {
        let layout = Layout::from_size_align(size, 8).expect("layout");
        // SAFETY: `p` came from `alloc` on this heap with this layout and is freed once.
        unsafe { self.heap.deallocate(NonNull::new(p).expect("non-null"), layout) }
    }
}

/// A physically contiguous run of order-10 buddy blocks (more than the largest buddy block can
/// be needed), freed on drop.
struct Region {
    blocks: Vec<PhysFrame>,
}

impl Region {
    const BLOCK: u64 = 4 << 20;

    fn new(bytes: usize) -> Option<Region> {
        let need = (bytes as u64).div_ceil(Self::BLOCK) as usize;
        let mut run: Vec<PhysFrame> = Vec::new();
        let mut spare: Vec<PhysFrame> = Vec::new();
        // Order-10 blocks come in address order, ascending on fresh memory, descending once freed
        // blocks are handed back (LIFO free lists); grow the run at either end, set aside the
        // blocks that do not extend it.
        while run.len() < need {
            let Ok(f) = alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOWARN, 10) else { break };
            let a = f.start_address().as_u64();
            match (run.first(), run.last()) {
                (Some(first), _) if first.start_address().as_u64() == a + Self::BLOCK => run.insert(0, f),
                (_, Some(last)) if last.start_address().as_u64() + Self::BLOCK == a => run.push(f),
                (None, None) => run.push(f),
                _ => {
                    spare.append(&mut run);
                    run.push(f);
                }
            }
        }
        for f in spare {
            let _ = __free_pages(f, 10);
        }
        let region = Region { blocks: run };
        (region.blocks.len() >= need).then_some(region)
    }

    fn start(&self) -> *mut u8 {
        phys_to_virt(self.blocks[0].start_address()).as_mut_ptr()
    }

    fn len(&self) -> usize {
        self.blocks.len() * Self::BLOCK as usize
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        for &f in &self.blocks {
            let _ = __free_pages(f, 10);
        }
    }
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

/// Mixed sizes (8 B to 2 KiB, uniformly among the 9 powers of two), random frees: the workload
/// that fragments a first-fit heap. `warm` unmeasured steps first let the fragmentation build up.
/// Returns instructions per pair (loop not subtracted).
fn mixed_cell<A: BenchAlloc>(
    a: &mut A,
    live: usize,
    warm: usize,
    ops: usize,
    tpk: u64,
    free_all: bool,
) -> u64 {
    let mut rng = 0x0ddb_a11c_0ffe_e123u64;
    let size = |rng: &mut u64| SIZES[(next_random(rng) % 9) as usize];
    let mut slots: Vec<(*mut u8, usize)> = Vec::with_capacity(live);
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
    if free_all {
        for &(p, s) in &slots {
            a.free(p, s);
        }
    }
    ticks * 1000 / tpk.max(1) / ops as u64
}

/// The mixed-size rows of the table.
fn mixed_rows(tpk: u64) {
    // Warm-up: as many steps as live objects at 10k (steady state); 20k at 100k, where first fit
    // is too slow for more (its fragmentation is still growing there).
    for (live, warm, ll_ops) in [(10_000usize, 10_000usize, 2_000usize), (100_000, 20_000, 200)] {
        let slab_ops = 20_000;
        let overhead = mixed_cell(&mut Null, live, warm, slab_ops, tpk, false);
        let k = mixed_cell(&mut Kmalloc, live, warm, slab_ops, tpk, true).saturating_sub(overhead);
        shrink_all();
        // Room for the live set (455 bytes on average) twice over: first fit fragments.
        let heap_bytes = live * 455 * 2 + (1 << 20);
        let l = Region::new(heap_bytes).map(|region| {
            // SAFETY: as in `run`: RAM owned by `region`, which outlives the heap.
            let heap = unsafe { Heap::new(region.start(), region.len()) };
            let l = mixed_cell(&mut LinkedList { heap }, live, warm, ll_ops, tpk, false);
            drop(region);
            l.saturating_sub(mixed_cell(&mut Null, live, warm, ll_ops, tpk, false))
        });
        match l {
            Some(l) => {
                let ratio10 = l * 10 / k.max(1);
                kprintln!(
                    "  8-2048  {live:>7}  random  {k:>9}  {l:>11}  {:>5}.{}x   ({slab_ops} / {ll_ops}, after {warm} warm-up){}",
                    ratio10 / 10,
                    ratio10 % 10,
                    if live == 10_000 { "   <- goal: >= 100x" } else { "" }
                );
            }
            None => kprintln!(
                "  8-2048  {live:>7}  random  {k:>9}  (no contiguous {} MiB for the heap)",
                heap_bytes >> 20
            ),
        }
    }
}

fn per_pair_minus(raw: u64, overhead: u64) -> u64 {
    raw.saturating_sub(overhead)
}

pub fn run(tpk: u64) {
    kprintln!();
    kprintln!("== slab / kmalloc ==");
    kprintln!("kmalloc + kfree pair (GFP_KERNEL) vs linked_list_allocator (first fit) on the same workload, instructions per pair,");
    kprintln!("loop overhead subtracted; a pair frees one of `live` objects (LIFO: newest, FIFO: oldest, random) and allocates its replacement.");
    kprintln!(
        "goals: 64-byte pair <= 50 instructions; >= 100x fewer than linked_list_allocator at 10k live."
    );
    building_blocks(tpk);
    let overhead = cell(&mut Null, 64, 100, 20_000, tpk, false);
    let cache =
        crate::mm::slab::kmalloc_instance().kmalloc_slab(64, GfpFlags::GFP_KERNEL).expect("kmalloc-64");
    let direct = cell(&mut Cache(cache), 64, 100, 20_000, tpk, true);
    kprintln!(
        "kmem_cache_alloc + kmem_cache_free on kmalloc-64 directly (no kmalloc layer), 100 live: LIFO {}, FIFO {}, random {}",
        per_pair_minus(direct[0], overhead[0]),
        per_pair_minus(direct[1], overhead[1]),
        per_pair_minus(direct[2], overhead[2])
    );
    kprintln!(
        "   size     live  pattern   kmalloc  linked_list   ratio   (measured pairs: kmalloc / linked_list)"
    );
    for &live in &LIVES {
        for &size in &SIZES {
            if live * size > MAX_LIVE_BYTES {
                kprintln!(
                    "  {size:>5}  {live:>7}  (skipped: a live set of {} MiB per allocator does not fit the 1 GiB bench boot)",
                    (live * size) >> 20
                );
                continue;
            }
            let slab_ops = 20_000;
            // First fit walks its hole list: fewer steps where it is slow.
            let ll_ops = match live {
                100 => 10_000,
                10_000 => 2_000,
                _ => 500,
            };
            let overhead = cell(&mut Null, size, live, slab_ops, tpk, false);
            let k = cell(&mut Kmalloc, size, live, slab_ops, tpk, true);
            shrink_all();
            // The heap holds the live set with first fit's 16-byte minimum and some room.
            let heap_bytes = live * size.max(16) + live * size.max(16) / 8 + (64 << 10);
            let l = match Region::new(heap_bytes) {
                Some(region) => {
                    // SAFETY: the region is RAM this function owns (allocated above, freed when
                    // `region` drops after the heap is no longer used), mapped by the direct map.
                    let heap = unsafe { Heap::new(region.start(), region.len()) };
                    let l = cell(&mut LinkedList { heap }, size, live, ll_ops, tpk, false);
                    // The heap is gone; only now is its memory given back.
                    drop(region);
                    Some(l)
                }
                None => None,
            };
            let ll_overhead = cell(&mut Null, size, live, ll_ops, tpk, false);
            for (i, &(_, name)) in PATTERNS.iter().enumerate() {
                let kv = per_pair_minus(k[i], overhead[i]);
                match l {
                    Some(l) => {
                        let lv = per_pair_minus(l[i], ll_overhead[i]);
                        let ratio10 = lv * 10 / kv.max(1);
                        kprintln!(
                            "  {size:>5}  {live:>7}  {name:<7} {kv:>9}  {lv:>11}  {:>5}.{}x   ({slab_ops} / {ll_ops}){}",
                            ratio10 / 10,
                            ratio10 % 10,
                            if size == 64 && i == 0 && live == 100 { "   <- goal: kmalloc <= 50" } else { "" }
                        );
                    }
                    None => kprintln!(
                        "  {size:>5}  {live:>7}  {name:<7} {kv:>9}  (no contiguous {} MiB for the heap)",
                        heap_bytes >> 20
                    ),
                }
            }
        }
    }
    kprintln!("mixed sizes (uniform over 8, 16, ..., 2048 bytes), random frees: the fragmenting workload");
    mixed_rows(tpk);
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
    let rows: [(&str, u64); 5] = [
        (
            "arch::in_interrupt() (might_sleep check)",
            measure(tpk, N, || {
                core::hint::black_box(crate::arch::in_interrupt());
            }),
        ),
        (
            "IrqSpinLock lock + unlock (cli/sti + spin::Mutex)",
            measure(tpk, N, || {
                *lock.lock() += 1;
            }),
        ),
        (
            "Node::page(pfn) (descriptor lookup, done per free)",
            measure(tpk, N, || {
                core::hint::black_box(node.page(core::hint::black_box(::mm::Pfn(0x2000))));
            }),
        ),
        (
            "kmalloc_slab(64) (size class lookup)",
            measure(tpk, N, || {
                core::hint::black_box(kmalloc.kmalloc_slab(core::hint::black_box(64), gfp));
            }),
        ),
        (
            "ksize(obj) (the free path's owner lookup: find_block + object check)",
            measure(tpk, N, || {
                let _ = core::hint::black_box(crate::mm::slab::ksize(core::hint::black_box(obj.as_ptr())));
            }),
        ),
    ];
    kprintln!("building blocks, instructions per call (call loop overhead of {empty} subtracted):");
    for (what, cost) in rows {
        kprintln!("  {:>5}  {what}", cost.saturating_sub(empty));
    }
    cache.free(obj).expect("bench object free");
}
