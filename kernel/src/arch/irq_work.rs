//! Linux's `irq_work`: run a function in hard-interrupt context on this CPU, as soon as this CPU
//! accepts interrupts, through a self-IPI on Linux's `IRQ_WORK_VECTOR`. Code that runs with
//! interrupts disabled (or inside another handler) uses it to get work done in interrupt
//! context right after; raised inside a handler that re-enables interrupts it is a nested
//! interrupt, which is how the nested-context tests of the allocators get one.
//!
//! One pending function per CPU: the slot is this CPU's (only it queues into it and only its
//! vector handler takes from it), so a compare-exchange against its own interrupts suffices.

use core::panic::Location;
use core::sync::atomic::{AtomicPtr, Ordering};

use mm::NR_CPUS;
use x86_64::structures::idt::InterruptStackFrame;

use super::{apic, percpu};

/// Linux's `IRQ_WORK_VECTOR` (priority class 0xf: above the local timer's 0xec, so it nests
/// inside a timer handler that has interrupts enabled).
pub const IRQ_WORK_VECTOR: u8 = 0xf6;

/// Per CPU: null, or the `fn()` queued and not yet run.
static PENDING: [AtomicPtr<()>; NR_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; NR_CPUS];

/// Why [`irq_work_queue`] did not queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqWorkError {
    /// A function is already pending on this CPU (Linux's `irq_work_queue` returns false).
    Busy,
    /// No local APIC to send the self-IPI with.
    NoApic,
}

/// Queues `f` to run in interrupt context on this CPU: at once if interrupts are enabled here,
/// otherwise when they next are (Linux's `irq_work_queue`). Callable from any context.
#[track_caller]
pub fn irq_work_queue(f: fn()) -> Result<(), IrqWorkError> {
    let caller = Location::caller();
    if apic::mode().is_none() {
        return Err(refused(IrqWorkError::NoApic, caller));
    }
    // Interrupts off between the claim and the IPI: the CPU id stays this CPU's, and a handler
    // on this CPU cannot see the slot claimed with no IPI on its way.
    x86_64::instructions::interrupts::without_interrupts(|| {
        let me = percpu::this();
        PENDING[me.cpu_id() as usize]
            .compare_exchange(core::ptr::null_mut(), f as *mut (), Ordering::AcqRel, Ordering::Relaxed)
            .map_err(|_| refused(IrqWorkError::Busy, caller))?;
        apic::send_ipi(me.apic_id(), IRQ_WORK_VECTOR);
        Ok(())
    })
}

#[cold]
fn refused(e: IrqWorkError, caller: &'static Location<'static>) -> IrqWorkError {
    if crate::log::ratelimit(caller) {
        crate::warn!("irq_work_queue: refused ({e:?}) for {caller}");
    }
    e
}

/// True while a function queued on this CPU has not run yet.
pub fn irq_work_pending() -> bool {
    !PENDING[percpu::cpu_id() as usize].load(Ordering::Acquire).is_null()
}

/// The vector handler: acknowledges the IPI, then runs what was queued (Linux acks first too,
/// so a function may queue the next one).
pub(super) extern "x86-interrupt" fn irq_work_interrupt(_frame: InterruptStackFrame) {
    percpu::irq_enter();
    apic::eoi();
    let f = PENDING[percpu::cpu_id() as usize].swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !f.is_null() {
        // SAFETY: `PENDING` only ever holds null or a `fn()` stored by `irq_work_queue`.
        let f = unsafe { core::mem::transmute::<*mut (), fn()>(f) };
        f();
    }
    percpu::irq_exit();
}
