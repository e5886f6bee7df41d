//! Which CPU is running, and running a function on other CPUs: two hooks the kernel installs,
//! with what the host tests need when none is installed.
//!
//! - [`set_this_cpu_fn`]: the kernel's `smp_processor_id()`. Until one is installed (early boot,
//!   and the host) every caller is CPU 0. The kernel builds the crate with `gs_cpu_id`, and then
//!   [`this_cpu`] reads the id from GS without calling the hook (see [`super::cpu_id_from_gs`]).
//! - [`set_cross_cpu_call_fn`]: the kernel's `on_each_cpu_mask(mask, func, NULL, wait=true)`
//!   (IPIs, `arch::smp_call`). Per-CPU state that only its own CPU may touch (the per-CPU page
//!   lists) is drained, reconfigured or inspected through [`on_each_cpu_mask`]: each CPU does it
//!   to its own state. The hook refuses, running nothing, where cross-CPU calls could deadlock
//!   (interrupts off, an interrupt handler); the callers then do only the running CPU's part,
//!   and say so in their documentation.
//!
//! On the host there are no CPUs to interrupt: without a hook, [`on_each_cpu_mask`] runs the
//! function "as" each CPU of the mask in turn, on the calling thread, every slot below
//! [`NR_CPUS`] counting as a CPU (host tests use them all without bringing CPUs "online").
//! Unit tests also record which CPU a thread is running as, so that touching another CPU's
//! state from inside such a call is caught ([`host`]). On the kernel target without a hook
//! (before the kernel installs it, when only the boot CPU runs) the call is refused.

use core::sync::atomic::{AtomicPtr, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

use super::NR_CPUS;
use crate::buddy::CpuId;

/// A set of CPUs: bit `c` is CPU `c`.
pub type CpuMask = u32;

/// Every CPU slot below [`NR_CPUS`].
pub const ALL_CPUS: CpuMask = if NR_CPUS >= 32 { u32::MAX } else { (1 << NR_CPUS) - 1 };
const _: () = assert!(NR_CPUS <= 32, "CpuMask has 32 bits");

static THIS_CPU: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the function that says which CPU is running (Linux `smp_processor_id()`). The kernel
/// calls it once at boot, before a second CPU can allocate.
pub fn set_this_cpu_fn(f: fn() -> CpuId) {
    THIS_CPU.store(f as *mut (), Relaxed);
}

/// The running CPU: in the kernel (the `gs_cpu_id` feature) one GS-relative load
/// ([`super::cpu_id_from_gs`]); otherwise the installed function's answer, CPU 0 before one is
/// installed (in unit tests, the CPU an [`on_each_cpu_mask`] call runs the thread as, if any).
#[inline(always)]
pub fn this_cpu() -> CpuId {
    if let Some(id) = super::cpu_id_from_gs() {
        return CpuId::from_dense_id(id);
    }
    #[cfg(test)]
    if let Some(cpu) = host::current() {
        return cpu;
    }
    let f = THIS_CPU.load(Relaxed);
    if f.is_null() {
        return CpuId::BOOT;
    }
    // SAFETY: only `set_this_cpu_fn` stores into `THIS_CPU`, always a `fn() -> CpuId`.
    let f: fn() -> CpuId = unsafe { core::mem::transmute::<*mut (), fn() -> CpuId>(f) };
    f()
}

/// The kernel's cross-CPU call: `call(mask, func)` runs `func` on every online CPU of `mask`,
/// each on its own CPU (the caller's own, if in the mask, with interrupts off), and returns true
/// once all have returned; or returns false, having run nothing, when the calling context cannot
/// make cross-CPU calls.
pub type CrossCpuCallFn = fn(CpuMask, &(dyn Fn() + Sync)) -> bool;

static CROSS_CPU_CALL: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the kernel's cross-CPU call (see [`CrossCpuCallFn`]). The kernel calls it once at
/// boot, after [`set_this_cpu_fn`] (the function runs [`this_cpu`] on each target).
pub fn set_cross_cpu_call_fn(f: CrossCpuCallFn) {
    CROSS_CPU_CALL.store(f as *mut (), Release);
}

/// Runs `f(cpu)` on each CPU of `mask` (online ones only, in the kernel), each CPU on its own
/// behalf, and returns once all have returned (Linux's `on_each_cpu_mask(mask, f, info,
/// true)`). In the kernel the others run it in interrupt context (an IPI), so `f` must be
/// short, must not allocate or block, and may run on several CPUs at once. Returns false, having
/// run nothing, when no cross-CPU call can be made here (see the module documentation).
///
/// Deadlock rule (the kernel's `smp_call_function_many`): the caller waits for every target with
/// interrupts enabled, so it must hold no lock that a target may spin on with interrupts off
/// (the zone locks, the slab locks, the vmap lock: every `IrqSpinLock`). Holding one means
/// interrupts are off, which the kernel's hook detects and refuses; a plain spinlock taken
/// elsewhere with interrupts off is the caller's to avoid (which is why the page allocator makes
/// these calls only for requests that may block, whose callers hold no spinlock at all).
pub fn on_each_cpu_mask(mask: CpuMask, f: &(dyn Fn(CpuId) + Sync)) -> bool {
    let p = CROSS_CPU_CALL.load(Acquire);
    if !p.is_null() {
        // SAFETY: only `set_cross_cpu_call_fn` stores into `CROSS_CPU_CALL`, always a
        // `CrossCpuCallFn`.
        let call = unsafe { core::mem::transmute::<*mut (), CrossCpuCallFn>(p) };
        return call(mask & ALL_CPUS, &|| f(this_cpu()));
    }
    no_hook(mask, f)
}

/// [`on_each_cpu_mask`] over every CPU.
pub fn on_each_cpu(f: &(dyn Fn(CpuId) + Sync)) -> bool {
    on_each_cpu_mask(ALL_CPUS, f)
}

/// Kernel target, no hook yet: only the boot CPU runs, so nothing needs a cross-CPU call.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
fn no_hook(_mask: CpuMask, _f: &(dyn Fn(CpuId) + Sync)) -> bool {
    false
}

/// Host: every slot of the mask in turn, on this thread.
#[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
fn no_hook(mask: CpuMask, f: &(dyn Fn(CpuId) + Sync)) -> bool {
    #[cfg(test)]
    host::count_call();
    for cpu in (0..NR_CPUS).filter(|c| mask & (1 << c) != 0) {
        let cpu = CpuId::new(cpu).expect("below NR_CPUS");
        #[cfg(test)]
        host::run_as(cpu, || f(cpu));
        #[cfg(not(test))]
        f(cpu);
    }
    true
}

/// Unit tests: the CPU a thread is running as inside an [`on_each_cpu_mask`] call, so that
/// per-CPU state can check it is entered by its own CPU.
#[cfg(test)]
pub(crate) mod host {
    use super::CpuId;
    use core::cell::Cell;

    std::thread_local! {
        static CURRENT: Cell<Option<CpuId>> = const { Cell::new(None) };
        static CALLS: Cell<u64> = const { Cell::new(0) };
    }

    /// The CPU this thread runs as, `None` outside a cross-CPU call (tests then name slots
    /// freely, as any CPU).
    pub(crate) fn current() -> Option<CpuId> {
        CURRENT.with(|c| c.get())
    }

    /// Runs `f` as CPU `cpu` (nested calls restore the outer CPU).
    pub(crate) fn run_as<R>(cpu: CpuId, f: impl FnOnce() -> R) -> R {
        let outer = CURRENT.with(|c| c.replace(Some(cpu)));
        struct Restore(Option<CpuId>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(outer);
        f()
    }

    pub(super) fn count_call() {
        CALLS.with(|c| c.set(c.get() + 1));
    }

    /// Cross-CPU calls this thread has made.
    pub(crate) fn calls() -> u64 {
        CALLS.with(|c| c.get())
    }
}
