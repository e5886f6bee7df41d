//! Cross-CPU calls over IPIs (Linux's `kernel/smp.c`), the TLB shootdown mailbox, and the idle
//! loop in which application processors wait for work.
//!
//! Three ways to make other CPUs do something, all waiting for completion:
//! - [`smp_call_function_many`] / [`on_each_cpu`]: a function run in interrupt context on each
//!   target (IPI on [`CALL_FUNCTION_VECTOR`]). It must be short, must not block, log, or take a
//!   lock the caller could hold.
//! - [`smp_call_on_cpus`]: a function run in thread context (interrupts on, `in_interrupt()`
//!   false) by each target's idle loop (Linux's `smp_call_on_cpu`): for long work such as the
//!   SMP stress tests, which allocate with `GFP_KERNEL`.
//! - [`shootdown`]: the TLB flush of a kernel range on every other CPU (used by
//!   `mm::vmalloc::tlb`).
//!
//! Deadlock rules. A waiting caller spins with interrupts enabled (it keeps answering other
//! CPUs' IPIs), and **must hold no lock that a target may take with interrupts disabled**: a
//! target spinning on an `IrqSpinLock` cannot take the IPI, so a caller holding that lock would
//! wait forever. [`smp_call_function_many`] therefore refuses to run with interrupts disabled
//! (the sign of a held `IrqSpinLock`) and names the caller. The TLB shootdown is the exception,
//! because vfree must flush before the vmap lock releases the range: it is served not only by
//! the IPI handler but also by every CPU waiting for the vmap lock (`mm::vmalloc::space`, which
//! spins on `try_lock` and serves flushes, interrupts on or off) and by every CPU waiting here;
//! serving it takes no lock. The vmap lock is the only lock held across a shootdown.
//!
//! Lock order (outermost first): vmap lock -> shootdown sender lock; callers of
//! smp_call_function_many / smp_call_on_cpus: no lock at all.

use core::cell::UnsafeCell;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use mm::NR_CPUS;
use x86_64::structures::idt::InterruptStackFrame;

use super::apic::{self, CALL_FUNCTION_VECTOR};
use super::percpu;

/// Logical CPUs that take part in calls and shootdowns (bit per CPU id), set by each CPU as it
/// comes up.
static ONLINE_MASK: AtomicU32 = AtomicU32::new(1);

/// A set of logical CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuMask(pub u32);

impl CpuMask {
    pub fn online() -> CpuMask {
        CpuMask(ONLINE_MASK.load(Ordering::Acquire))
    }
    pub fn contains(self, cpu: usize) -> bool {
        cpu < 32 && self.0 & (1 << cpu) != 0
    }
    pub fn without(self, cpu: usize) -> CpuMask {
        CpuMask(self.0 & !(1u32 << cpu))
    }
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..NR_CPUS).filter(move |&c| self.contains(c))
    }
    pub fn count(self) -> usize {
        self.0.count_ones() as usize
    }
}

/// Marks CPU `cpu` online for calls and shootdowns (its IDT and APIC are ready).
pub(super) fn set_online(cpu: usize) {
    ONLINE_MASK.fetch_or(1 << cpu, Ordering::AcqRel);
}

type CallFn = *const (dyn Fn() + Sync);

/// One caller's request to one target (Linux's `call_single_data`): the caller fills `func`,
/// then sets `pending` (release); the target runs `func` and clears `pending` (release).
struct CallSlot {
    func: UnsafeCell<CallFn>,
    pending: AtomicBool,
}

// SAFETY: `func` is written only by the slot's caller while `pending` is false and read only by
// the slot's target while it is true; the flag's release/acquire orders the two.
unsafe impl Sync for CallSlot {}

fn nop() {}
const NOP: &(dyn Fn() + Sync) = &nop;

const fn empty_fn() -> CallFn {
    NOP
}

/// Slots `[target][caller]`: a caller never has two requests in flight to one target.
static IRQ_CALLS: [[CallSlot; NR_CPUS]; NR_CPUS] = [const {
    [const { CallSlot { func: UnsafeCell::new(empty_fn()), pending: AtomicBool::new(false) } }; NR_CPUS]
}; NR_CPUS];
/// Thread-context work for each AP's idle loop (one caller at a time: [`smp_call_on_cpus`]
/// callers serialise on `THREAD_CALL_LOCK`).
static THREAD_CALLS: [CallSlot; NR_CPUS] =
    [const { CallSlot { func: UnsafeCell::new(empty_fn()), pending: AtomicBool::new(false) } }; NR_CPUS];
static THREAD_CALL_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Why a cross-CPU call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpCallError {
    /// Called with interrupts disabled: the caller may hold an `IrqSpinLock` a target waits for.
    IrqsDisabled,
    /// Called from an interrupt handler (thread-context calls only).
    InInterrupt,
}

impl core::fmt::Display for SmpCallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SmpCallError::IrqsDisabled => {
                write!(f, "called with interrupts disabled (a held IrqSpinLock could deadlock the targets)")
            }
            SmpCallError::InInterrupt => write!(f, "called from interrupt context"),
        }
    }
}

fn refuse(what: &str, e: SmpCallError, loc: &Location) -> SmpCallError {
    crate::error!("{what} refused at {}:{}: {e}", loc.file(), loc.line());
    e
}

/// Runs `f` in interrupt context on every CPU of `mask` except the caller, and waits until all
/// have returned (Linux's `smp_call_function_many(mask, f, info, wait=true)`). See the module
/// documentation for what `f` may do and what the caller must not hold.
#[track_caller]
pub fn smp_call_function_many(mask: CpuMask, f: &(dyn Fn() + Sync)) -> Result<(), SmpCallError> {
    if super::interrupts::irqs_disabled() {
        return Err(refuse("smp_call_function_many", SmpCallError::IrqsDisabled, Location::caller()));
    }
    let me = percpu::cpu_id() as usize;
    let targets = CpuMask(mask.0 & CpuMask::online().0).without(me);
    // SAFETY (lifetime): the slots hold `f` only until `pending` is cleared, and this function
    // does not return before every target has cleared it, so `f` outlives every use.
    let func: CallFn = unsafe { core::mem::transmute::<&(dyn Fn() + Sync), CallFn>(f) };
    for t in targets.iter() {
        let slot = &IRQ_CALLS[t][me];
        // SAFETY: `pending` is false (the previous call from this CPU was waited for), so the
        // target does not read `func` now.
        unsafe { *slot.func.get() = func };
        slot.pending.store(true, Ordering::Release);
        apic::send_ipi(percpu::per_cpu(t).apic_id(), CALL_FUNCTION_VECTOR);
    }
    for t in targets.iter() {
        while IRQ_CALLS[t][me].pending.load(Ordering::Acquire) {
            serve_tlb_flush();
            core::hint::spin_loop();
        }
    }
    Ok(())
}

/// Runs `f` on every online CPU, the caller included (last, after the others returned), in
/// interrupt context on the others and with interrupts disabled here (Linux's `on_each_cpu`).
#[track_caller]
pub fn on_each_cpu(f: &(dyn Fn() + Sync)) -> Result<(), SmpCallError> {
    smp_call_function_many(CpuMask::online(), f)?;
    x86_64::instructions::interrupts::without_interrupts(f);
    Ok(())
}

/// Runs `f(cpu)` in thread context on every online CPU of `mask` at once, the caller's CPU
/// included (on the caller's stack), and returns when all have finished. The other CPUs run it
/// from their idle loop with interrupts enabled, so it may allocate with `GFP_KERNEL`.
#[track_caller]
pub fn smp_call_on_cpus(mask: CpuMask, f: &(dyn Fn(usize) + Sync)) -> Result<(), SmpCallError> {
    let loc = Location::caller();
    if super::in_interrupt() {
        return Err(refuse("smp_call_on_cpus", SmpCallError::InInterrupt, loc));
    }
    if super::interrupts::irqs_disabled() {
        return Err(refuse("smp_call_on_cpus", SmpCallError::IrqsDisabled, loc));
    }
    let _serialised = THREAD_CALL_LOCK.lock();
    let me = percpu::cpu_id() as usize;
    let mask = CpuMask(mask.0 & CpuMask::online().0);
    let targets = mask.without(me);
    // Each AP reads its own id from GS, so one closure serves all of them.
    let on_ap = &|| f(percpu::cpu_id() as usize);
    // SAFETY (lifetime): as in `smp_call_function_many`, `on_ap` is used only until every
    // target cleared its `pending`, which this function waits for.
    let func: CallFn = unsafe { core::mem::transmute::<&(dyn Fn() + Sync), CallFn>(on_ap) };
    for t in targets.iter() {
        let slot = &THREAD_CALLS[t];
        // SAFETY: `pending` is false (callers are serialised and wait), so the AP does not read it.
        unsafe { *slot.func.get() = func };
        slot.pending.store(true, Ordering::Release);
        apic::send_ipi(percpu::per_cpu(t).apic_id(), CALL_FUNCTION_VECTOR);
    }
    if mask.contains(me) {
        f(me);
    }
    for t in targets.iter() {
        while THREAD_CALLS[t].pending.load(Ordering::Acquire) {
            serve_tlb_flush();
            core::hint::spin_loop();
        }
    }
    Ok(())
}

/// The vector [`CALL_FUNCTION_VECTOR`]: serves the TLB mailbox and the interrupt-context calls
/// addressed to this CPU. Thread-context work is only woken (the idle loop's `hlt` returns).
pub(super) extern "x86-interrupt" fn call_function_interrupt(_frame: InterruptStackFrame) {
    percpu::irq_enter();
    serve_tlb_flush();
    let me = percpu::cpu_id() as usize;
    for slot in &IRQ_CALLS[me] {
        if slot.pending.load(Ordering::Acquire) {
            // SAFETY: `pending` is set, so `func` is the caller's live closure (it waits).
            let f = unsafe { &**slot.func.get() };
            f();
            slot.pending.store(false, Ordering::Release);
        }
    }
    apic::eoi();
    percpu::irq_exit();
}

/// What an AP does once up: thread-context work when asked, otherwise `hlt` with interrupts on
/// (IPIs and its timer wake it).
pub(super) fn ap_idle_loop() -> ! {
    let me = percpu::cpu_id() as usize;
    let slot = &THREAD_CALLS[me];
    loop {
        x86_64::instructions::interrupts::disable();
        if slot.pending.load(Ordering::Acquire) {
            x86_64::instructions::interrupts::enable();
            // SAFETY: `pending` is set, so `func` is the caller's live closure (it waits).
            let f = unsafe { &**slot.func.get() };
            f();
            slot.pending.store(false, Ordering::Release);
        } else {
            // `sti; hlt` is atomic: an IPI that arrives after the check still wakes the `hlt`.
            x86_64::instructions::interrupts::enable_and_hlt();
        }
    }
}

// ---- TLB shootdown mailbox ----

/// The range every other CPU must flush: start and page count (`u64::MAX` pages = everything).
static SHOOTDOWN_START: AtomicU64 = AtomicU64::new(0);
static SHOOTDOWN_PAGES: AtomicU64 = AtomicU64::new(0);
/// Per CPU: a flush of the range above is requested of it.
static SHOOTDOWN_PENDING: [AtomicBool; NR_CPUS] = [const { AtomicBool::new(false) }; NR_CPUS];
/// One shootdown at a time (the range slots are shared).
static SHOOTDOWN_BUSY: AtomicBool = AtomicBool::new(false);
/// Shootdowns sent and flush requests served on other CPUs (tests and the log read them).
pub static SHOOTDOWNS: AtomicU64 = AtomicU64::new(0);
pub static SHOOTDOWN_FLUSHES_SERVED: AtomicU64 = AtomicU64::new(0);

/// Does the flush requested of this CPU, if any. Takes no lock and allocates nothing: it runs
/// from the IPI handler, from the vmap lock's wait loop and from waiting callers.
pub fn serve_tlb_flush() {
    let me = percpu::cpu_id() as usize;
    if !SHOOTDOWN_PENDING[me].load(Ordering::Acquire) {
        return;
    }
    let start = SHOOTDOWN_START.load(Ordering::Relaxed);
    let pages = SHOOTDOWN_PAGES.load(Ordering::Relaxed);
    crate::mm::vmalloc::tlb::flush_local(start, pages);
    SHOOTDOWN_FLUSHES_SERVED.fetch_add(1, Ordering::Relaxed);
    SHOOTDOWN_PENDING[me].store(false, Ordering::Release);
}

/// Makes every other online CPU flush `pages` pages from `start` (`u64::MAX`: all translations)
/// and waits until they have. The caller flushes its own TLB. May be called with interrupts
/// disabled and under the vmap lock: targets also serve it while spinning on a lock.
pub fn shootdown(start: u64, pages: u64) {
    let me = percpu::cpu_id() as usize;
    let targets = CpuMask::online().without(me);
    if targets.0 == 0 {
        return;
    }
    // Another CPU's shootdown may be in flight: serve it while waiting for the slots.
    while SHOOTDOWN_BUSY.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        serve_tlb_flush();
        core::hint::spin_loop();
    }
    SHOOTDOWN_START.store(start, Ordering::Relaxed);
    SHOOTDOWN_PAGES.store(pages, Ordering::Relaxed);
    for t in targets.iter() {
        SHOOTDOWN_PENDING[t].store(true, Ordering::Release);
        apic::send_ipi(percpu::per_cpu(t).apic_id(), CALL_FUNCTION_VECTOR);
    }
    for t in targets.iter() {
        while SHOOTDOWN_PENDING[t].load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
    SHOOTDOWNS.fetch_add(1, Ordering::Relaxed);
    SHOOTDOWN_BUSY.store(false, Ordering::Release);
}
