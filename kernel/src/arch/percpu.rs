//! Per-CPU data, reachable through the GS base like Linux's `this_cpu_*` accessors.
//!
//! Only the boot CPU exists today, but nothing here assumes that: every accessor goes through
//! GS, so an application processor only needs its own [`PerCpu`] block and its own `GS_BASE`
//! (written by [`init_bsp`]'s AP counterpart) to get its own interrupt nesting count.

use core::sync::atomic::{AtomicU32, Ordering};

use x86_64::registers::model_specific::GsBase;
use x86_64::VirtAddr;

/// One CPU's private data. `repr(C)` because the first field is read with `gs:[0]`.
#[repr(C)]
pub struct PerCpu {
    /// Address of this block itself, so `mov reg, gs:[0]` yields a normal pointer to it.
    self_ptr: core::cell::UnsafeCell<*const PerCpu>,
    /// Logical CPU number (0 = boot CPU).
    cpu_id: u32,
    /// Interrupt/exception nesting depth on this CPU: every handler entry increments it, every
    /// return decrements it. Non-zero means "in interrupt context" (Linux: `in_interrupt()`).
    irq_depth: AtomicU32,
}

// SAFETY: `self_ptr` is written once in `init_bsp` before GS points at the block and is
// read-only afterwards; `irq_depth` is atomic; `cpu_id` is immutable.
unsafe impl Sync for PerCpu {}

static BSP: PerCpu = PerCpu {
    self_ptr: core::cell::UnsafeCell::new(core::ptr::null()),
    cpu_id: 0,
    irq_depth: AtomicU32::new(0),
};

/// Points GS at the boot CPU's block. First thing in `arch::init`: every interrupt and exception
/// handler reads its nesting counter through GS.
pub fn init_bsp() {
    // SAFETY: runs once on the boot CPU before interrupts are enabled or any handler exists, so
    // nothing reads `self_ptr` concurrently.
    unsafe { *BSP.self_ptr.get() = &BSP };
    GsBase::write(VirtAddr::from_ptr(&BSP));
}

/// This CPU's block.
#[inline]
pub fn this() -> &'static PerCpu {
    let ptr: *const PerCpu;
    // SAFETY: after `init_bsp` GS_BASE holds the address of a `'static PerCpu` whose first word
    // is its own address; the load has no other effect.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, readonly, preserves_flags)) };
    // SAFETY: `ptr` is the `self_ptr` of a live `'static PerCpu` (see above).
    unsafe { &*ptr }
}

impl PerCpu {
    pub fn cpu_id(&self) -> u32 {
        self.cpu_id
    }

    /// Current interrupt nesting depth.
    pub fn irq_depth(&self) -> u32 {
        self.irq_depth.load(Ordering::Relaxed)
    }
}

/// Logical number of the CPU running this code.
pub fn cpu_id() -> u32 {
    this().cpu_id()
}

/// Called at the entry of every interrupt and exception handler.
#[inline]
pub fn irq_enter() {
    this().irq_depth.fetch_add(1, Ordering::Relaxed);
}

/// Called when a handler returns to the interrupted code.
#[inline]
pub fn irq_exit() {
    this().irq_depth.fetch_sub(1, Ordering::Relaxed);
}

/// Sets the nesting depth back to `depth`: the test harness does this after abandoning a test
/// that faulted, whose exception handler never returned.
pub fn reset_irq_depth(depth: u32) {
    this().irq_depth.store(depth, Ordering::Relaxed);
}

/// True inside an interrupt or exception handler (Linux's `in_interrupt()`), where sleeping or
/// blocking allocations are forbidden (`might_sleep`).
#[inline]
pub fn in_interrupt() -> bool {
    this().irq_depth() > 0
}
