//! SMP tests of the memory subsystem: every online CPU at once.
//!
//! - The TLB shootdown: CPU 1 reads a vmalloc page in a loop while CPU 0 vfrees it (and vunmaps
//!   a vmap of other frames at, usually, the same address); once the free has returned, CPU 1
//!   must never read the old contents. Without the shootdown (`tlb_shootdown=off`, see
//!   `tests/smp.rs`) it does, through its stale TLB entry.
//! - A random mix on every CPU (kmalloc/kzalloc/krealloc/kfree, alloc_pages orders 0..4,
//!   vmalloc/vfree, a test kmem_cache), objects handed to other CPUs through a shared exchange
//!   and freed there, every fill pattern checked before the free; then the zones' free pages and
//!   every cache's object counts must be exactly what they were. Once plain, once with every
//!   CPU's local APIC timer doing GFP_ATOMIC work in interrupt context meanwhile.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};

use ::mm::slab::SlabFlags;
use ::mm::{GfpFlags, Pfn, NR_CPUS};
use x86_64::VirtAddr;

use crate::arch::apic;
use crate::arch::exceptions::read_nofault;
use crate::arch::smp_call::{smp_call_on_cpus, CpuMask};
use crate::mm::page_alloc::{__free_pages, alloc_pages, phys_to_virt, virt_to_phys};
use crate::mm::slab::{kfree, kmalloc, kmem_cache_create, krealloc, kzalloc, shrink_all, slab, KmemCache};
use crate::mm::vmalloc::{vfree, vmalloc, vmap, vunmap};
use ::mm::vmalloc::VmFlags;

const P: usize = 4096;
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
fn shootdown_writer() -> Result<u64, WriterError> {
    let result = shootdown_rounds();
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
        FREED_PLUS1.store(g_vmap + 1, Release);
        __free_pages(frame, 0).unwrap();
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

crate::ktest!(
    fn vfree_and_vunmap_shoot_down_every_cpus_tlb_before_returning() {
        if mm::num_online_cpus() < 2 {
            crate::info!(
                "shootdown test: needs 2 CPUs, {} online; checked at --smp 4",
                mm::num_online_cpus()
            );
            return;
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
                *result.lock() = Some(shootdown_writer());
            } else {
                shootdown_reader();
            }
        })
        .unwrap();
        let reused = match result.lock().take().expect("the writer ran") {
            Ok(reused) => reused,
            Err(WriterError::StaleTlb { round, what, old, gen }) => panic!(
                "round {round}: after vfree/vunmap returned, CPU 1 still read generation {old}'s \
                 contents where the {what} (generation {gen}) is mapped: a stale TLB entry"
            ),
            Err(WriterError::ReaderStuck { round, what, seen }) => {
                panic!("round {round}: CPU 1 did not read the {what} within 10 s (last read {seen:#x})")
            }
        };
        let (stale, faulted) = (STALE.load(SeqCst), FAULTED_READS.load(SeqCst));
        crate::info!(
            "shootdown test: {ROUNDS} rounds, address reused by the vmap in {reused} rounds, {faulted} reads \
             faulted after a free, {stale} stale reads"
        );
        assert_eq!(stale, 0, "CPU 1 read freed memory through a stale TLB entry after vfree/vunmap returned");
    }
);

// ---- random mix on every CPU ----

/// Operations per CPU. The issue asks for 1M; under TCG with 4 vCPUs sharing 2 host cores a
/// million mixed operations per CPU (vfree's shootdown IPIs included) takes minutes, so the
/// suite runs a fraction and `stress_ops=N` on the command line sets it (`tests/smp.rs`).
const DEFAULT_OPS: u64 = 200_000;
const HELD: usize = 64;
const EXCHANGE: usize = 64;
/// Objects in flight between CPUs: packed (kind << 60 | param << 48 | low 48 address bits).
static XCHG: [AtomicU64; EXCHANGE] = [const { AtomicU64::new(0) }; EXCHANGE];
static CORRUPT: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static HANDED: AtomicU64 = AtomicU64::new(0);
static TEST_CACHE: spin::Once<KmemCache> = spin::Once::new();
const CACHE_OBJ: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Kmalloc = 1,
    Pages = 2,
    Vmalloc = 3,
    Cache = 4,
}

fn pack(kind: Kind, param: u64, addr: u64) -> u64 {
    (kind as u64) << 60 | param << 48 | (addr & 0xffff_ffff_ffff)
}

fn unpack(v: u64) -> (Kind, u64, u64) {
    let kind = match v >> 60 {
        1 => Kind::Kmalloc,
        2 => Kind::Pages,
        3 => Kind::Vmalloc,
        _ => Kind::Cache,
    };
    (kind, (v >> 48) & 0xfff, (v & 0xffff_ffff_ffff) | 0xffff_0000_0000_0000)
}

fn bytes_of(kind: Kind, param: u64) -> usize {
    match kind {
        Kind::Kmalloc => param as usize * 8,
        Kind::Pages => P << param,
        Kind::Vmalloc => param as usize * P,
        Kind::Cache => CACHE_OBJ,
    }
}

fn word(addr: u64, i: usize) -> u64 {
    (addr ^ 0xa5a5_0000_0000_5a5a).wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64)
}

/// Word indices filled and checked: all of a small object, a sample of large ones (every
/// 512th word: one per page, plus the last).
fn indices(bytes: usize) -> impl Iterator<Item = usize> {
    let n = bytes / 8;
    let step = if n <= 64 { 1 } else { 512.min(n / 8) };
    (0..n).step_by(step).chain(core::iter::once(n - 1))
}

fn fill(addr: u64, bytes: usize) {
    for i in indices(bytes) {
        // SAFETY: `addr` is a live object of `bytes` bytes owned by the caller.
        unsafe { (addr as *mut u64).add(i).write_volatile(word(addr, i)) };
    }
}

fn check(addr: u64, bytes: usize) {
    // SAFETY: as in `fill`.
    if indices(bytes).any(|i| unsafe { (addr as *const u64).add(i).read_volatile() } != word(addr, i)) {
        CORRUPT.fetch_add(1, Relaxed);
    }
}

fn release(v: u64) {
    let (kind, param, addr) = unpack(v);
    check(addr, bytes_of(kind, param));
    let ok = match kind {
        Kind::Kmalloc => kfree(addr as *const u8).is_ok(),
        Kind::Pages => {
            let phys = virt_to_phys(VirtAddr::new(addr)).expect("direct-map address");
            __free_pages(x86_64::structures::paging::PhysFrame::containing_address(phys), param as u32)
                .is_ok()
        }
        Kind::Vmalloc => vfree(addr as *const u8).is_ok(),
        Kind::Cache => {
            TEST_CACHE.get().unwrap().free(core::ptr::NonNull::new(addr as *mut u8).unwrap()).is_ok()
        }
    };
    if !ok {
        FAILED.fetch_add(1, Relaxed);
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn allocate(rng: &mut Rng) -> Option<u64> {
    let r = rng.next();
    let (kind, param, addr) = match r % 64 {
        0 => {
            let pages = 1 + (r >> 8) % 4;
            (Kind::Vmalloc, pages, vmalloc(pages as usize * P).ok()?.as_ptr() as u64)
        }
        1..=8 => {
            let order = (r >> 8) % 5;
            let frame = alloc_pages(KERNEL, order as u32).ok()?;
            (Kind::Pages, order, phys_to_virt(frame.start_address()).as_u64())
        }
        9..=20 => (Kind::Cache, 0, TEST_CACHE.get().unwrap().alloc(KERNEL).ok()?.as_ptr() as u64),
        21..=28 => {
            let size = 8 * (1 + (r >> 8) % 256);
            let p = kzalloc(size as usize, KERNEL).ok()?.as_ptr() as u64;
            // SAFETY: `size` bytes of a live kzalloc block.
            if (0..size as usize / 8).any(|i| unsafe { (p as *const u64).add(i).read_volatile() } != 0) {
                CORRUPT.fetch_add(1, Relaxed);
            }
            (Kind::Kmalloc, size / 8, p)
        }
        _ => {
            let size = if r & (1 << 40) != 0 { 8 * (1 + (r >> 8) % 2047) } else { 8 * (1 + (r >> 8) % 64) };
            (Kind::Kmalloc, size / 8, kmalloc(size as usize, KERNEL).ok()?.as_ptr() as u64)
        }
    };
    fill(addr, bytes_of(kind, param));
    Some(pack(kind, param, addr))
}

/// krealloc of a held kmalloc object: the kept prefix must arrive intact.
fn reallocate(v: u64, rng: &mut Rng) -> u64 {
    let (_, param, addr) = unpack(v);
    let new_words = 1 + rng.next() % 512;
    check(addr, param as usize * 8);
    let Ok(n) = krealloc(addr as *const u8, new_words as usize * 8, KERNEL) else {
        FAILED.fetch_add(1, Relaxed);
        return v;
    };
    let n = n.as_ptr() as u64;
    let kept = new_words.min(param) as usize;
    // SAFETY: the first `kept` words of the live block krealloc returned were copied from the
    // old one, whose filled words are `indices` of its size.
    let copied = |i: usize| unsafe { (n as *const u64).add(i).read_volatile() };
    if indices(param as usize * 8).filter(|&i| i < kept).any(|i| copied(i) != word(addr, i)) {
        CORRUPT.fetch_add(1, Relaxed);
    }
    fill(n, new_words as usize * 8);
    pack(Kind::Kmalloc, new_words, n)
}

/// One CPU's share: `ops` operations on `HELD` slots, one in eight frees handing the object to
/// the exchange instead (whoever takes it from there frees it).
fn mix(cpu: usize, ops: u64) {
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ ((cpu as u64 + 1) << 32));
    let mut held = [0u64; HELD];
    for _ in 0..ops {
        let r = rng.next();
        let slot = (r % HELD as u64) as usize;
        if held[slot] == 0 {
            held[slot] = allocate(&mut rng).unwrap_or_else(|| {
                FAILED.fetch_add(1, Relaxed);
                0
            });
        } else if (r >> 16).is_multiple_of(8) {
            let x = (r >> 24) as usize % EXCHANGE;
            let got = XCHG[x].swap(held[slot], AcqRel);
            HANDED.fetch_add(1, Relaxed);
            held[slot] = 0;
            if got != 0 {
                release(got);
            }
        } else if (r >> 16) % 8 == 1 && unpack(held[slot]).0 == Kind::Kmalloc {
            held[slot] = reallocate(held[slot], &mut rng);
        } else {
            release(held[slot]);
            held[slot] = 0;
        }
    }
    for v in held.into_iter().filter(|&v| v != 0) {
        release(v);
    }
}

/// Objects and slabs of every cache (the first 64), for the before/after comparison; a fixed
/// array, so that taking the figures allocates nothing.
type CacheCounts = [(&'static str, u64, u64); 64];

fn cache_counts() -> CacheCounts {
    let mut v: CacheCounts = [("", 0, 0); 64];
    let mut n = 0;
    slab().for_each_cache(|c| {
        if n < v.len() {
            let r = c.slabinfo_row();
            v[n] = (r.name, r.active_objs, r.num_objs);
            n += 1;
        }
    });
    v
}

/// The figures a mix must leave unchanged: every zone's free pages (after draining every CPU's
/// pcp lists), every cache's objects (after shrinking empty slabs), vmalloc's counts.
fn figures() -> ([u64; 3], CacheCounts, crate::mm::vmalloc::VmallocCounts) {
    crate::mm::vmalloc::vfree_drain();
    shrink_all();
    crate::mm::page_alloc::drain_all_pages();
    let free = core::array::from_fn(|z| crate::mm::node().zones()[z].free_pages());
    (free, cache_counts(), crate::mm::vmalloc::counts())
}

/// vmalloc's area trees keep their node arrays at their high-water mark (kmalloc'd vectors
/// that never shrink). Take them beyond what the mix can reach (at most `HELD` areas per CPU
/// plus the exchange, and as many holes) before the first figures, so that the comparison sees
/// only what the mix itself leaves behind.
fn grow_vmalloc_trees() {
    let most = 2 * (mm::num_online_cpus() * HELD + EXCHANGE) + 2;
    let mut areas = alloc::vec::Vec::with_capacity(most);
    for _ in 0..most {
        areas.push(vmalloc(P).expect("vmalloc for the warm-up"));
    }
    // Every other one first: as many holes as areas, the free-space tree at its largest.
    for p in areas.iter().step_by(2).chain(areas.iter().skip(1).step_by(2)) {
        vfree(p.as_ptr()).unwrap();
    }
}

pub(crate) fn run_mix(ops: u64, with_timer: bool) {
    let _tidy = super::kmalloc::Tidy;
    TEST_CACHE
        .call_once(|| kmem_cache_create("test-smp-mix", CACHE_OBJ, 0, SlabFlags::empty(), None).unwrap());
    for a in [&CORRUPT, &FAILED, &HANDED] {
        a.store(0, SeqCst);
    }
    grow_vmalloc_trees();
    let before = figures();
    if with_timer {
        irq_work_start();
    }
    let start = crate::arch::rdtsc();
    smp_call_on_cpus(CpuMask::online(), &|cpu| mix(cpu, ops)).unwrap();
    let ms = (crate::arch::rdtsc() - start) / apic::tsc_per_ms().max(1);
    let irq_ops = if with_timer { irq_work_stop() } else { 0 };
    for x in &XCHG {
        let v = x.swap(0, AcqRel);
        if v != 0 {
            release(v);
        }
    }
    crate::info!(
        "smp mix: {} CPUs x {ops} ops in {ms} ms, {} objects handed across CPUs, {irq_ops} GFP_ATOMIC ops in \
         timer interrupts",
        mm::num_online_cpus(),
        HANDED.load(SeqCst)
    );
    assert_eq!(CORRUPT.load(SeqCst), 0, "fill patterns damaged");
    assert_eq!(FAILED.load(SeqCst), 0, "allocations or frees failed");
    let after = figures();
    assert_eq!(after.2, before.2, "vmalloc counts differ after the mix");
    assert_eq!(after.1, before.1, "cache object counts differ after the mix");
    assert_eq!(after.0, before.0, "zone free pages differ after the mix");
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

// ---- GFP_ATOMIC work in every CPU's timer interrupt ----

const IRQ_HELD: usize = 8;
static IRQ_SLOTS: [[AtomicU64; IRQ_HELD]; NR_CPUS] =
    [const { [const { AtomicU64::new(0) }; IRQ_HELD] }; NR_CPUS];
static IRQ_RUNS: [AtomicUsize; NR_CPUS] = [const { AtomicUsize::new(0) }; NR_CPUS];
static IRQ_OPS: AtomicU64 = AtomicU64::new(0);

/// Per tick: replace two held objects of this CPU (kmalloc or an order-0 page, GFP_ATOMIC).
fn atomic_work() {
    let cpu = crate::arch::percpu::cpu_id() as usize;
    let run = IRQ_RUNS[cpu].fetch_add(1, Relaxed);
    for k in 0..2 {
        let slot = &IRQ_SLOTS[cpu][(run * 2 + k) % IRQ_HELD];
        let old = slot.swap(0, Relaxed);
        if old != 0 {
            release(old);
        }
        let v = if (run + k).is_multiple_of(3) {
            alloc_pages(GfpFlags::GFP_ATOMIC, 0).ok().map(|f| {
                let a = phys_to_virt(f.start_address()).as_u64();
                fill(a, P);
                pack(Kind::Pages, 0, a)
            })
        } else {
            let size = 8 * (1 + (run % 64) as u64);
            kmalloc(size as usize, GfpFlags::GFP_ATOMIC).ok().map(|p| {
                fill(p.as_ptr() as u64, size as usize);
                pack(Kind::Kmalloc, size / 8, p.as_ptr() as u64)
            })
        };
        slot.store(v.unwrap_or(0), Relaxed);
        IRQ_OPS.fetch_add(2, Relaxed);
    }
}

fn irq_work_start() {
    IRQ_OPS.store(0, SeqCst);
    crate::arch::interrupts::set_timer_handler(Some(atomic_work));
    crate::arch::smp_call::on_each_cpu(&|| apic::start_timer(2000)).unwrap();
}

/// Stops every CPU's timer, frees what the handlers held, returns the operations they did.
fn irq_work_stop() -> u64 {
    crate::arch::smp_call::on_each_cpu(&apic::stop_timer).unwrap();
    crate::arch::interrupts::set_timer_handler(None);
    for cpu in IRQ_SLOTS.iter() {
        for s in cpu {
            let v = s.swap(0, SeqCst);
            if v != 0 {
                release(v);
            }
        }
    }
    let ops = IRQ_OPS.load(SeqCst);
    assert!(ops > 0, "no timer interrupt did GFP_ATOMIC work");
    ops
}
