//! The page allocator API the rest of the kernel uses (Linux names, Rust face): a thin layer over
//! the buddy allocator of node 0 that adds what needs the kernel — the `might_sleep` check, the
//! allocation-failure warning, reclaim-and-retry, `__GFP_NOFAIL` — and direct-map addresses.

use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed},
};

use ::mm::buddy::CpuId;
use ::mm::page::{FreePagesError, Page, MAX_PAGE_ORDER};
use ::mm::{AllocError, GfpFlags, Pfn};
use x86_64::structures::paging::PhysFrame;
use x86_64::{PhysAddr, VirtAddr};

use super::{direct_map, node};

/// A function that gives memory back under pressure (the slab caches' empty slabs, vmalloc's
/// empty page tables); returns the number of pages it freed. It may be called from inside an
/// allocation made under the shrinker's own lock, so it must only try that lock.
pub type Shrinker = fn() -> usize;

/// Registered shrinkers (Linux's shrinker list), run in registration order.
static SHRINKERS: [AtomicPtr<()>; MAX_SHRINKERS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_SHRINKERS];
const MAX_SHRINKERS: usize = 4;
/// Times a sleeping allocation was requested in interrupt context (tests read it).
pub static MIGHT_SLEEP_VIOLATIONS: AtomicUsize = AtomicUsize::new(0);
/// Allocation failures seen (with or without a warning printed).
pub static ALLOC_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Adds `f` to the shrinkers reclaim runs (Linux's `register_shrinker`); once per function.
pub fn register_shrinker(f: Shrinker) {
    for slot in &SHRINKERS {
        match slot.compare_exchange(core::ptr::null_mut(), f as *mut (), AcqRel, Acquire) {
            Ok(_) => return,
            Err(p) if p == f as *mut () => return,
            Err(_) => {}
        }
    }
    panic!("register_shrinker: more than {MAX_SHRINKERS} shrinkers");
}

/// Runs every registered shrinker (Linux's `shrink_slab`); returns the pages they freed.
pub fn shrink_all_shrinkers() -> usize {
    let mut freed = 0;
    for slot in &SHRINKERS {
        let p = slot.load(Acquire);
        if p.is_null() {
            break;
        }
        // SAFETY: `SHRINKERS` only holds null or a `Shrinker` stored by `register_shrinker`.
        let f = unsafe { core::mem::transmute::<*mut (), Shrinker>(p) };
        freed += f();
    }
    freed
}

/// Linux's `might_sleep()`: a request that may sleep (`__GFP_DIRECT_RECLAIM`, as in `GFP_KERNEL`)
/// from interrupt context is a bug in the caller; report it with the caller's location. The
/// allocation itself goes on (it never actually sleeps here), as on Linux.
#[track_caller]
#[inline]
pub fn might_sleep_if(gfp: GfpFlags) {
    if gfp.allows_blocking() && crate::arch::in_interrupt() {
        might_sleep_report(gfp, core::panic::Location::caller());
    }
}

#[cold]
#[inline(never)]
fn might_sleep_report(gfp: GfpFlags, loc: &'static core::panic::Location<'static>) {
    MIGHT_SLEEP_VIOLATIONS.fetch_add(1, Relaxed);
    if !crate::log::ratelimit(loc) {
        return;
    }
    crate::error!(
        "BUG: sleeping function called from invalid context at {}:{} (gfp {:#x}: {:?} in interrupt context; use GFP_ATOMIC)",
        loc.file(),
        loc.line(),
        gfp.bits(),
        gfp
    );
}

/// The per-CPU page list slot of the running CPU (`smp_processor_id()` through GS): order-0..3
/// pages come from and go to this CPU's own lists, which only this CPU touches (with interrupts
/// off), by logical CPU id. Ids are below `NR_CPUS` (bring-up starts no more CPUs).
#[inline]
pub fn this_cpu() -> CpuId {
    CpuId::from_dense_id(crate::arch::percpu::cpu_id() as usize)
}

/// Installs the mm crate's cross-CPU call, which lets each CPU drain, reconfigure or check its
/// own per-CPU page lists ([`cross_cpu_call`]). Which CPU is running needs no hook: the crate is
/// built with `gs_cpu_id` and reads it from GS (`arch::percpu::CPU_ID_GS_OFFSET`). Called once
/// at boot, before any application processor runs.
pub(super) fn init_cpu_hooks() {
    ::mm::cpus::set_cross_cpu_call_fn(cross_cpu_call);
}

/// The mm crate's cross-CPU call (`::mm::cpus::CrossCpuCallFn`, Linux's
/// `on_each_cpu_mask(mask, f, NULL, true)`): `f` on every online CPU of `mask`, the others by
/// IPI ([`smp_call_function_many`](crate::arch::smp_call::smp_call_function_many), in interrupt
/// context), the caller's own last with interrupts off; returns once all have returned.
///
/// Refused (false, nothing run) in an interrupt handler or with interrupts disabled. Deadlock
/// analysis: the caller waits for each target to take the IPI. A target spinning with
/// interrupts off on a lock cannot take it until it gets the lock, so the caller must hold no
/// lock a target may spin on with interrupts off: the zone locks, the slab's cache and registry
/// locks, the vmap lock and every other `IrqSpinLock` are always held with interrupts off,
/// which is why interrupts-off is refused here. The waiting caller keeps interrupts on (it
/// takes other CPUs' calls meanwhile, so two CPUs calling each other both finish) and serves
/// TLB shootdowns (a vmap-lock holder flushing does not wait for it either). What the targets
/// run (the per-CPU page list operations) takes only the zone locks, whose holders never wait
/// for another CPU. Plain spinlocks a target may take with interrupts off (in an interrupt
/// handler) are the caller's to avoid: the page allocator makes these calls only for requests
/// that may block, whose callers hold no spinlock (`might_sleep`).
fn cross_cpu_call(mask: ::mm::cpus::CpuMask, f: &(dyn Fn() + Sync)) -> bool {
    use crate::arch::smp_call::{smp_call_function_many, CpuMask};
    if crate::arch::in_interrupt() || crate::arch::interrupts::irqs_disabled() {
        return false;
    }
    MM_CROSS_CPU_CALLS.fetch_add(1, Relaxed);
    let mask = CpuMask(mask);
    if smp_call_function_many(mask, f).is_err() {
        return false;
    }
    if mask.contains(crate::arch::percpu::cpu_id() as usize) {
        x86_64::instructions::interrupts::without_interrupts(f);
    }
    true
}

/// Cross-CPU calls made for the mm crate (per-CPU page list drains and checks; tests and the
/// stress report read it).
pub static MM_CROSS_CPU_CALLS: AtomicU64 = AtomicU64::new(0);

/// Linux's `drain_all_pages(NULL)`: every CPU's per-CPU page lists back to the buddy lists.
/// Each CPU drains its own lists in a cross-CPU call ([`cross_cpu_call`]: an IPI to every other
/// online CPU, as Linux before 5.19 and `on_each_cpu`), since only a list's own CPU touches it.
/// The caller must hold no spinlock (see there for why); in an interrupt handler or with
/// interrupts off no IPI can be sent, and only the running CPU's lists are drained. Returns the
/// pages drained.
pub fn drain_all_pages() -> u64 {
    node().drain_pages()
}

/// Allocates 2^`order` physically contiguous frames. The first frame of the block is returned.
#[track_caller]
#[inline]
pub fn alloc_pages(gfp: GfpFlags, order: u32) -> Result<PhysFrame, AllocError> {
    might_sleep_if(gfp);
    let pfn = alloc_pfn(gfp, order)?;
    Ok(PhysFrame::containing_address(pfn.phys()))
}

/// The allocation: the buddy allocator's fast path inline, everything after a failure out of
/// line.
#[track_caller]
#[inline]
pub(crate) fn alloc_pfn(gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
    match node().alloc_pages_fast(this_cpu(), gfp, order) {
        Some(pfn) => Ok(pfn),
        None => alloc_pfn_general(gfp, order),
    }
}

/// Everything [`alloc_pfn`]'s inlined fast path does not cover, out of line (so that the fast
/// path needs no stack frame): the buddy allocator's general path, then the slow path.
#[track_caller]
#[inline(never)]
fn alloc_pfn_general(gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
    match node().alloc_pages_general_at(this_cpu(), gfp, order, core::panic::Location::caller()) {
        Ok(pfn) => Ok(pfn),
        Err(e) => alloc_slowpath(gfp, order, e),
    }
}

/// After a failed attempt, 6.12's `__alloc_pages_slowpath` as far as it applies here:
/// `__GFP_NOFAIL`'s `WARN_ON_ONCE(order > 1)` and `WARN_ON_ONCE(!can_direct_reclaim)`; direct
/// reclaim (the registered shrinkers: empty slabs, empty vmalloc page tables) and one retry
/// when the flags allow blocking; for a blocking `__GFP_NOFAIL`, retrying (see
/// [`nofail_retry`]); otherwise the failure warning. A non-blocking `__GFP_NOFAIL` fails as
/// any non-blocking request (6.12, `nopage:` `if (!can_direct_reclaim) goto fail;`).
#[track_caller]
#[cold]
#[inline(never)]
fn alloc_slowpath(gfp: GfpFlags, order: u32, err: AllocError) -> Result<Pfn, AllocError> {
    let node = node();
    let nofail = gfp.contains(GfpFlags::__GFP_NOFAIL);
    if nofail {
        nofail_warnings(gfp, order, core::panic::Location::caller());
    }
    if !matches!(err, AllocError::OutOfMemory { .. }) {
        return Err(warn_failure(gfp, order, err));
    }
    if gfp.allows_blocking() {
        if shrink_all_shrinkers() > 0 {
            if let Ok(pfn) = node.alloc_pages_cpu(this_cpu(), gfp, order) {
                return Ok(pfn);
            }
        }
        if nofail {
            return nofail_retry(gfp, order);
        }
    }
    Err(warn_failure(gfp, order, AllocError::OutOfMemory { order }))
}

/// 6.12's `WARN_ON_ONCE(order > 1)` and `WARN_ON_ONCE(!can_direct_reclaim)` at the top of
/// `__alloc_pages_slowpath` for `__GFP_NOFAIL` (`mm/page_alloc.c`): each printed once per
/// boot, in `WARN`'s shape, naming the caller. Neither refuses the request.
#[cold]
#[inline(never)]
fn nofail_warnings(gfp: GfpFlags, order: u32, loc: &'static core::panic::Location<'static>) {
    let cpu = crate::arch::percpu::cpu_id();
    if order > 1 && !NOFAIL_ORDER_WARNED.swap(true, Relaxed) {
        crate::warn!("------------[ cut here ]------------");
        crate::warn!(
            "WARNING: CPU: {cpu} at mm/page_alloc.c __alloc_pages_slowpath: WARN_ON_ONCE(order > 1): __GFP_NOFAIL order {order} from {}:{}",
            loc.file(),
            loc.line()
        );
    }
    if !gfp.allows_blocking() && !NOFAIL_NONBLOCK_WARNED.swap(true, Relaxed) {
        crate::warn!("------------[ cut here ]------------");
        crate::warn!(
            "WARNING: CPU: {cpu} at mm/page_alloc.c __alloc_pages_slowpath: WARN_ON_ONCE(!can_direct_reclaim): __GFP_NOFAIL mode:{:#x}({:?}) from {}:{}",
            gfp.bits(),
            gfp,
            loc.file(),
            loc.line()
        );
    }
}

/// Whether `nofail_warnings` printed its `order > 1` warning (tests read it).
pub(crate) static NOFAIL_ORDER_WARNED: AtomicBool = AtomicBool::new(false);
/// Whether `nofail_warnings` printed its non-blocking warning (tests read it).
pub(crate) static NOFAIL_NONBLOCK_WARNED: AtomicBool = AtomicBool::new(false);

/// Rounds of reclaim-and-retry a `__GFP_NOFAIL` allocation gets before it fails.
pub const NOFAIL_RETRIES: u32 = 1000;

/// A blocking `__GFP_NOFAIL` (discouraged, as on Linux): 6.12 loops `retry:` forever, each
/// round direct reclaim (`__alloc_pages_direct_reclaim`: the shrinkers, then
/// `drain_all_pages`) and the last-resort attempt with `ALLOC_MIN_RESERVE`
/// (`__alloc_pages_cpuset_fallback`). Here a round is the same: the shrinkers, the drain, an
/// attempt with `__GFP_HIGH` (that reserve). With nothing else to reclaim (no page cache, no
/// swap, no OOM killer here), waiting helps only if another CPU frees memory, so after
/// [`NOFAIL_RETRIES`] rounds it fails loudly instead of hanging, whatever `__GFP_NOWARN` says
/// (a deliberate deviation: 6.12 would never return).
#[track_caller]
#[cold]
#[inline(never)]
fn nofail_retry(gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
    let node = node();
    let with_reserve = gfp | GfpFlags::__GFP_HIGH;
    for _ in 0..NOFAIL_RETRIES {
        shrink_all_shrinkers();
        drain_all_pages();
        if let Ok(pfn) = node.alloc_pages_cpu(this_cpu(), with_reserve, order) {
            return Ok(pfn);
        }
        core::hint::spin_loop();
    }
    ALLOC_FAILURES.fetch_add(1, Relaxed);
    let loc = core::panic::Location::caller();
    crate::error!(
        "page allocation failure: order:{order}, mode:{:#x}({:?}) at {}:{}: __GFP_NOFAIL, but nothing could be reclaimed in {NOFAIL_RETRIES} rounds: failing instead of hanging",
        gfp.bits(),
        gfp,
        loc.file(),
        loc.line()
    );
    Err(AllocError::OutOfMemory { order })
}

/// Linux's `warn_alloc`: one line, unless `__GFP_NOWARN`.
#[track_caller]
fn warn_failure(gfp: GfpFlags, order: u32, err: AllocError) -> AllocError {
    ALLOC_FAILURES.fetch_add(1, Relaxed);
    // An injected failure was reported by fault injection itself (`FAULT_INJECTION: ...`).
    let loc = core::panic::Location::caller();
    if !gfp.contains(GfpFlags::__GFP_NOWARN)
        && !matches!(err, AllocError::FaultInjected { .. })
        && crate::log::ratelimit(loc)
    {
        crate::warn!(
            "page allocation failure: order:{order}, mode:{:#x}({:?}) at {}:{}: {err}",
            gfp.bits(),
            gfp,
            loc.file(),
            loc.line()
        );
    }
    err
}

/// Frees a block from [`alloc_pages`]. Misuse (double free, wrong order, a frame that is not
/// the start of an allocated block, outside managed RAM, reserved) is refused with the reason
/// and the allocator unchanged.
#[track_caller]
#[inline]
pub fn __free_pages(frame: PhysFrame, order: u32) -> Result<(), FreePagesError> {
    let pfn = Pfn::from_phys(frame.start_address());
    if node().free_pages_fast(this_cpu(), pfn, order) {
        return Ok(());
    }
    free_pages_general(pfn, order)
}

/// Everything [`__free_pages`]'s inlined fast path does not cover, out of line: the buddy
/// allocator's general path and the report of a refused free.
#[track_caller]
#[inline(never)]
fn free_pages_general(pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
    let result = node().free_pages_general(this_cpu(), pfn, order);
    if let Err(e) = &result {
        report_refused_free(e, core::panic::Location::caller());
    }
    result
}

#[cold]
#[inline(never)]
fn report_refused_free(e: &FreePagesError, loc: &'static core::panic::Location<'static>) {
    if !crate::log::ratelimit(loc) {
        return;
    }
    crate::warn!("__free_pages refused at {}:{}: {e}", loc.file(), loc.line());
}

/// Linux's `free_reserved_area(start, end, poison, s)`: gives boot memory that is no longer
/// needed (physical `[start, end)`, reserved until now) to the page allocator, and prints
/// Linux's `Freeing <what> memory: <N>K`. Boot CPU, once per range.
pub fn free_reserved_area(start: u64, end: u64, what: &str) -> Result<u64, ::mm::buddy::FreeReservedError> {
    let pages = node().free_reserved_area(start, end)?;
    crate::info!("Freeing {what} memory: {}K", pages * 4);
    Ok(pages)
}

/// Allocates a block and returns its direct-map address (Linux's `__get_free_pages`).
#[track_caller]
pub fn __get_free_pages(gfp: GfpFlags, order: u32) -> Result<VirtAddr, AllocError> {
    alloc_pages(gfp, order).map(|f| phys_to_virt(f.start_address()))
}

/// Frees a block by its direct-map address (Linux's `free_pages`). Address 0 is a no-op, as in
/// 6.12 (`mm/page_alloc.c`, `free_pages()`: `if (addr != 0)`), so a `__get_free_pages` result
/// that was never set can be freed unconditionally.
#[track_caller]
pub fn free_pages(addr: VirtAddr, order: u32) -> Result<(), FreePagesError> {
    if addr.as_u64() == 0 {
        return Ok(());
    }
    let Some(phys) = virt_to_phys(addr) else {
        let loc = core::panic::Location::caller();
        crate::warn!(
            "free_pages refused at {}:{}: {:#x} is not a direct-map address",
            loc.file(),
            loc.line(),
            addr
        );
        return Err(FreePagesError::NotManaged { pfn: Pfn(u64::MAX) });
    };
    if !phys.is_aligned(4096u64) {
        let e = FreePagesError::Misaligned { pfn: Pfn::from_phys(phys), order };
        report_refused_free(&e, core::panic::Location::caller());
        return Err(e);
    }
    __free_pages(PhysFrame::containing_address(phys), order)
}

/// One zeroed page (Linux's `get_zeroed_page`).
#[track_caller]
pub fn get_zeroed_page(gfp: GfpFlags) -> Result<VirtAddr, AllocError> {
    __get_free_pages(gfp | GfpFlags::__GFP_ZERO, 0)
}

/// Frees one page by address (Linux's `free_page`).
#[track_caller]
pub fn free_page(addr: VirtAddr) -> Result<(), FreePagesError> {
    free_pages(addr, 0)
}

/// The direct-map address of a physical address.
pub fn phys_to_virt(pa: PhysAddr) -> VirtAddr {
    VirtAddr::from_ptr(direct_map().virt(pa))
}

/// The physical address behind a direct-map address; `None` for addresses outside the direct
/// map (vmalloc, kernel image, user half, ...).
pub fn virt_to_phys(va: VirtAddr) -> Option<PhysAddr> {
    let base = super::direct_map_base();
    let off = va.as_u64().checked_sub(base)?;
    (off < super::direct_map_size()).then(|| PhysAddr::new(off))
}

/// The descriptor of a frame (Linux's `pfn_to_page`), `None` outside managed RAM.
pub fn frame_to_page(frame: PhysFrame) -> Option<&'static Page> {
    node().page(Pfn::from_phys(frame.start_address()))
}

/// The descriptor of the page behind a direct-map address (Linux's `virt_to_page`).
pub fn virt_to_page(va: VirtAddr) -> Option<&'static Page> {
    virt_to_phys(va).and_then(|pa| node().page(Pfn::from_phys(pa)))
}

/// An owned block of pages, freed when dropped (`alloc_pages` with RAII).
pub struct Pages {
    frame: PhysFrame,
    order: u32,
}

impl Pages {
    #[track_caller]
    pub fn alloc(gfp: GfpFlags, order: u32) -> Result<Pages, AllocError> {
        alloc_pages(gfp, order).map(|frame| Pages { frame, order })
    }
    pub fn frame(&self) -> PhysFrame {
        self.frame
    }
    pub fn order(&self) -> u32 {
        self.order
    }
    pub fn addr(&self) -> VirtAddr {
        phys_to_virt(self.frame.start_address())
    }
    pub fn len(&self) -> usize {
        4096 << self.order
    }
    /// The block's bytes through the direct map.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the block is 4096 << order bytes of RAM owned by `self` (allocated, not freed
        // until drop), mapped writable by the direct map; `&mut self` makes the borrow unique.
        unsafe { core::slice::from_raw_parts_mut(self.addr().as_mut_ptr(), self.len()) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // Cannot fail: the block came from alloc_pages with this order and is freed once.
        let _ = __free_pages(self.frame, self.order);
    }
}

const _: () = assert!(MAX_PAGE_ORDER == 10);
