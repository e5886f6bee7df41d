//! The stress workload: a random mix of every allocator on every chosen CPU at once
//! (kmalloc/kzalloc/krealloc/kfree, alloc_pages orders 0..4, vmalloc/vfree, a kmem_cache),
//! objects handed to other CPUs through a shared exchange and freed there, every fill pattern
//! checked before the free; afterwards the zones' free pages, every cache's object counts and
//! vmalloc's counts must be what they were. The SMP tests (`mm/tests/smp.rs`) run it and assert
//! on its [`Report`]; the console's `stress OPS [CPUS]` runs it with a progress line and Ctrl-C.

pub mod timer;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use ::mm::slab::SlabFlags;
use ::mm::GfpFlags;
use x86_64::VirtAddr;

use crate::arch::apic;
use crate::arch::smp_call::{smp_call_on_cpus, CpuMask};
use crate::mm::page_alloc::{__free_pages, alloc_pages, phys_to_virt, virt_to_phys};
use crate::mm::slab::{kfree, kmalloc, kmem_cache_create, krealloc, kzalloc, shrink_all, slab, KmemCache};
use crate::mm::vmalloc::{vfree, vmalloc};

pub(crate) const P: usize = 4096;
const KERNEL: GfpFlags = GfpFlags::GFP_KERNEL;
/// Operations between two looks at the stop request (and updates of the progress count).
const CHECK_EVERY: u64 = 256;

const HELD: usize = 64;
const EXCHANGE: usize = 64;
/// Objects in flight between CPUs: packed (kind << 60 | param << 48 | low 48 address bits).
static XCHG: [AtomicU64; EXCHANGE] = [const { AtomicU64::new(0) }; EXCHANGE];
static CORRUPT: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
/// Allocations refused (out of memory, or failed by fault injection): allowed, counted.
static REFUSED: AtomicU64 = AtomicU64::new(0);
static HANDED: AtomicU64 = AtomicU64::new(0);
static TEST_CACHE: spin::Once<KmemCache> = spin::Once::new();
const CACHE_OBJ: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Kmalloc = 1,
    Pages = 2,
    Vmalloc = 3,
    Cache = 4,
}

pub(crate) fn pack(kind: Kind, param: u64, addr: u64) -> u64 {
    (kind as u64) << 60 | param << 48 | (addr & 0xffff_ffff_ffff)
}

pub(crate) fn unpack(v: u64) -> (Kind, u64, u64) {
    let kind = match v >> 60 {
        1 => Kind::Kmalloc,
        2 => Kind::Pages,
        3 => Kind::Vmalloc,
        _ => Kind::Cache,
    };
    (kind, (v >> 48) & 0xfff, (v & 0xffff_ffff_ffff) | 0xffff_0000_0000_0000)
}

pub(crate) fn bytes_of(kind: Kind, param: u64) -> usize {
    match kind {
        Kind::Kmalloc => param as usize * 8,
        Kind::Pages => P << param,
        Kind::Vmalloc => param as usize * P,
        Kind::Cache => CACHE_OBJ,
    }
}

pub(crate) fn word(addr: u64, i: usize) -> u64 {
    (addr ^ 0xa5a5_0000_0000_5a5a).wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64)
}

/// Word indices filled and checked: all of a small object, a sample of large ones (every
/// 512th word: one per page, plus the last).
pub(crate) fn indices(bytes: usize) -> impl Iterator<Item = usize> {
    let n = bytes / 8;
    let step = if n <= 64 { 1 } else { 512.min(n / 8) };
    (0..n).step_by(step).chain(core::iter::once(n - 1))
}

pub(crate) fn fill(addr: u64, bytes: usize) {
    for i in indices(bytes) {
        // SAFETY: `addr` is a live object of `bytes` bytes owned by the caller.
        unsafe { (addr as *mut u64).add(i).write_volatile(word(addr, i)) };
    }
}

pub(crate) fn check(addr: u64, bytes: usize) {
    // SAFETY: as in `fill`.
    if indices(bytes).any(|i| unsafe { (addr as *const u64).add(i).read_volatile() } != word(addr, i)) {
        CORRUPT.fetch_add(1, Relaxed);
    }
}

pub(crate) fn release(v: u64) {
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

/// A tiny deterministic generator (xorshift64), also used by the vmalloc test scenarios.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
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
    let n = match krealloc(addr as *const u8, new_words as usize * 8, KERNEL) {
        Ok(n) => n,
        // Refused for want of memory: the old block stays valid, as it must.
        Err(::mm::slab::SlabError::Alloc(_)) => {
            REFUSED.fetch_add(1, Relaxed);
            return v;
        }
        Err(_) => {
            FAILED.fetch_add(1, Relaxed);
            return v;
        }
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
fn mix(cpu: usize, ops: u64, ctl: &Control) {
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ ((cpu as u64 + 1) << 32));
    let mut held = [0u64; HELD];
    // Operations done, and the part of them already counted in `ctl`.
    let (mut done, mut counted) = (0, 0);
    for i in 0..ops {
        if i % CHECK_EVERY == 0 && i > 0 {
            counted = i;
            if ctl.poll(cpu, CHECK_EVERY) {
                break;
            }
        }
        let r = rng.next();
        let slot = (r % HELD as u64) as usize;
        if held[slot] == 0 {
            held[slot] = allocate(&mut rng).unwrap_or_else(|| {
                REFUSED.fetch_add(1, Relaxed);
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
        done = i + 1;
    }
    ctl.done.fetch_add(done - counted, Relaxed);
    for v in held.into_iter().filter(|&v| v != 0) {
        release(v);
    }
}

/// Objects and slabs of every cache (the first 64), for the before/after comparison; a fixed
/// array, so that taking the figures allocates nothing.
pub(crate) type CacheCounts = [(&'static str, u64, u64); 64];

fn cache_counts() -> CacheCounts {
    let mut v: CacheCounts = [("", 0, 0); 64];
    let mut n = 0;
    slab().for_each_cache(|c| {
        if n < v.len() {
            let r = c.slabinfo_row();
            // The vmap_area cache's partly used slabs depend on which node survived each merge
            // of free vmalloc ranges (ktest/leak.rs): its objects are compared, its slabs not.
            let num = if r.name == crate::mm::vmalloc::VMAP_AREA_CACHE { r.active_objs } else { r.num_objs };
            v[n] = (r.name, r.active_objs, num);
            n += 1;
        }
    });
    v
}

/// The figures a mix must leave unchanged: every zone's free pages (after draining every CPU's
/// pcp lists and giving back vmalloc's empty page tables), every cache's objects (after
/// shrinking empty slabs), vmalloc's counts; and the pages of the `vmap_area` cache's slabs.
pub(crate) fn figures() -> ([u64; 3], CacheCounts, crate::mm::vmalloc::VmallocCounts, u64) {
    crate::mm::vmalloc::vfree_drain();
    // Parked areas hold their nodes and their ranges until the purge.
    crate::mm::vmalloc::purge_vmap_area_lazy();
    crate::mm::vmalloc::shrink_page_tables();
    shrink_all();
    crate::mm::page_alloc::drain_all_pages();
    let free = core::array::from_fn(|z| crate::mm::node().zones()[z].free_pages());
    (free, cache_counts(), crate::mm::vmalloc::counts(), crate::mm::vmalloc::vmap_area_slab_pages())
}

/// Whether the free pages are what they were, counting the `vmap_area` cache's slab pages as
/// free (see [`cache_counts`]) when they are all that differs.
fn free_pages_same(before: &([u64; 3], u64), after: &([u64; 3], u64)) -> bool {
    let total = |f: &([u64; 3], u64)| f.0.iter().sum::<u64>() + f.1;
    after.0 == before.0 || (after.1 != before.1 && total(after) == total(before))
}

/// What a run creates on first use: the workload's cache (the in-kernel harness calls it
/// before the first test, so that its leak check does not charge it to the first test that
/// needs it).
pub(crate) fn warm_up() {
    let _ =
        TEST_CACHE.try_call_once(|| kmem_cache_create("stress-mix", CACHE_OBJ, 0, SlabFlags::empty(), None));
}

/// How a run is steered from outside: whether to stop early, and the operations done so far.
pub struct Control<'a> {
    /// Polled by every CPU each [`CHECK_EVERY`] operations (the console's Ctrl-C).
    pub stop: &'a (dyn Fn() -> bool + Sync),
    /// Called on CPU 0 with (operations done, operations asked) each time it polls.
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
    /// Operations done on every CPU together.
    done: AtomicU64,
    total: u64,
    stopped: AtomicBool,
}

impl<'a> Control<'a> {
    pub fn new(stop: &'a (dyn Fn() -> bool + Sync), progress: Option<&'a (dyn Fn(u64, u64) + Sync)>) -> Self {
        Control { stop, progress, done: AtomicU64::new(0), total: 0, stopped: AtomicBool::new(false) }
    }

    /// Counts `ops` more; true when the run is to stop.
    fn poll(&self, cpu: usize, ops: u64) -> bool {
        let done = self.done.fetch_add(ops, Relaxed) + ops;
        if cpu == 0 {
            if let Some(p) = self.progress {
                p(done, self.total);
            }
        }
        if self.stopped.load(Relaxed) {
            return true;
        }
        if (self.stop)() {
            self.stopped.store(true, Relaxed);
            return true;
        }
        false
    }
}

/// What a run did and found.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    pub cpus: usize,
    /// Operations asked per CPU, and done on all CPUs together.
    pub ops_per_cpu: u64,
    pub ops_done: u64,
    pub ms: u64,
    /// Stopped early by [`Control::stop`].
    pub stopped: bool,
    /// Objects handed to another CPU through the exchange.
    pub handed: u64,
    /// Work done in timer interrupts meanwhile (the `irq` hooks of [`run`]), 0 without them.
    pub irq_ops: u64,
    /// Objects whose fill pattern was damaged.
    pub corrupt: u64,
    /// Frees (or reallocations) refused: always a bug.
    pub failed: u64,
    /// Allocations refused for want of memory (or by fault injection): allowed; nothing may be
    /// lost by them.
    pub refused: u64,
    /// Every zone's free pages, every cache's objects and vmalloc's counts as before the run.
    pub free_pages_same: bool,
    pub caches_same: bool,
    pub vmalloc_same: bool,
}

impl Report {
    /// Nothing damaged, nothing failed, every figure back where it was.
    pub fn clean(&self) -> bool {
        self.corrupt == 0 && self.failed == 0 && self.free_pages_same && self.caches_same && self.vmalloc_same
    }
}

/// Runs `ops` operations on each CPU of `cpus` (the online ones among them) at once; with
/// `irq`, its first function is called before and its second after (returning the work done in
/// interrupts meanwhile). Refuses (before allocating anything) only when the workload's cache
/// or the warm-up cannot be had.
pub fn run(
    ops: u64,
    cpus: CpuMask,
    ctl: &mut Control,
    irq: Option<(&dyn Fn(), &dyn Fn() -> u64)>,
) -> Result<Report, &'static str> {
    // The set-up and the figures must not be failed by fault injection; the mix itself is.
    let setup = crate::mm::fault_inject::suspend();
    TEST_CACHE
        .try_call_once(|| kmem_cache_create("stress-mix", CACHE_OBJ, 0, SlabFlags::empty(), None))
        .map_err(|_| "cannot create the workload's kmem_cache")?;
    for a in [&CORRUPT, &FAILED, &HANDED, &REFUSED] {
        a.store(0, SeqCst);
    }
    let cpus = CpuMask(cpus.0 & CpuMask::online().0);
    ctl.total = ops * cpus.count() as u64;
    ctl.done.store(0, SeqCst);
    ctl.stopped.store(false, SeqCst);
    let before = figures();
    drop(setup);
    if let Some((start, _)) = irq {
        start();
    }
    let start = crate::arch::rdtsc();
    let ctl = &*ctl;
    smp_call_on_cpus(cpus, &|cpu| mix(cpu, ops, ctl)).map_err(|_| "the CPUs could not be called")?;
    let ms = (crate::arch::rdtsc() - start) / apic::tsc_per_ms().max(1);
    let irq_ops = irq.map_or(0, |(_, stop)| stop());
    let _figures = crate::mm::fault_inject::suspend();
    for x in &XCHG {
        let v = x.swap(0, AcqRel);
        if v != 0 {
            release(v);
        }
    }
    let after = figures();
    Ok(Report {
        cpus: cpus.count(),
        ops_per_cpu: ops,
        ops_done: ctl.done.load(SeqCst),
        ms,
        stopped: ctl.stopped.load(SeqCst),
        handed: HANDED.load(SeqCst),
        irq_ops,
        corrupt: CORRUPT.load(SeqCst),
        failed: FAILED.load(SeqCst),
        refused: REFUSED.load(SeqCst),
        free_pages_same: free_pages_same(&(before.0, before.3), &(after.0, after.3)),
        caches_same: after.1 == before.1,
        vmalloc_same: after.2 == before.2,
    })
}
