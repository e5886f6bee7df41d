//! "Only its own CPU touches it, with interrupts off": the discipline of per-CPU allocator state
//! (the slab's per-CPU slots, the per-CPU page lists), Linux's `local_lock_irqsave` on a
//! `this_cpu_ptr()`.
//!
//! On the kernel target a [`CpuSlot`] is empty and entering it is `pushfq; pop; cli` (and the
//! matching `sti` when the guard drops): no lock, no atomic read-modify-write. The caller must be
//! running on the CPU the state belongs to; nothing else can then reach it, because the kernel
//! has no preemption (the CPU id read before interrupts go off stays right: a handler that runs
//! in between returns to the same CPU) and a handler cannot run while interrupts are off.
//!
//! On the host, where "interrupts off" means nothing and tests run "CPUs" as threads that may
//! share a slot, the slot carries a busy flag that stands in for it, so that two threads entering
//! the same slot cannot interleave. The kernel build has no such flag.

use core::marker::PhantomData;
#[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
use core::sync::atomic::AtomicBool;
use core::sync::atomic::{compiler_fence, Ordering::SeqCst};

/// The owner-only part of a per-CPU structure: see the module documentation.
pub(crate) struct CpuSlot {
    /// Host stand-in for "interrupts off on this CPU".
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    busy: AtomicBool,
}

impl CpuSlot {
    pub(crate) const fn new() -> CpuSlot {
        CpuSlot {
            #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
            busy: AtomicBool::new(false),
        }
    }

    /// Makes this CPU the only one touching the slot until the guard drops: interrupts off (the
    /// caller runs on the slot's CPU), or on the host the slot's flag.
    #[inline(always)]
    pub(crate) fn enter(&self) -> CpuSlotGuard<'_> {
        let irq = crate::sync::irq::save_and_disable();
        // The slot's loads and stores must stay between `cli` and `sti`, whatever the asm
        // options of the interrupt helpers say (no instruction is emitted).
        compiler_fence(SeqCst);
        #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
        while self
            .busy
            .compare_exchange_weak(
                false,
                true,
                core::sync::atomic::Ordering::Acquire,
                core::sync::atomic::Ordering::Relaxed,
            )
            .is_err()
        {
            core::hint::spin_loop();
        }
        CpuSlotGuard {
            slot: PhantomData,
            #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
            busy: &self.busy,
            irq,
        }
    }
}

/// Proof that the current CPU owns a [`CpuSlot`] (interrupts are off). Dropping it restores the
/// interrupt state. Not `Send`: it stands for the running CPU's interrupt state.
pub(crate) struct CpuSlotGuard<'a> {
    slot: PhantomData<(&'a CpuSlot, *const ())>,
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    busy: &'a AtomicBool,
    irq: bool,
}

impl Drop for CpuSlotGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
        self.busy.store(false, core::sync::atomic::Ordering::Release);
        compiler_fence(SeqCst);
        crate::sync::irq::restore(self.irq);
    }
}
