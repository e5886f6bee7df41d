//! Locks for allocator state.
//!
//! Allocators can be entered from interrupt handlers (`GFP_ATOMIC`), so in the kernel a lock
//! holder runs with interrupts disabled: otherwise a handler that allocates while the interrupted
//! code holds the same lock would spin forever. On the host (tests, Miri) there are no interrupts
//! and the lock is a plain spinlock.
//!
//! SMP: saving/disabling and restoring the interrupt flag are compiler barriers (the asm may
//! touch memory as far as the compiler knows), so no access to the protected data is moved
//! outside the interrupt-disabled window. The lock word itself is an acquire/release atomic.
//!
//! A CPU spinning here has interrupts disabled, so it cannot take an IPI: a lock that is held
//! across a wait for other CPUs (the vmap lock across vfree's TLB shootdown) must be waited for
//! in a loop that serves the shootdown (kernel `mm::vmalloc::space`), not with [`IrqSpinLock::lock`].

use core::ops::{Deref, DerefMut};

/// A spinlock that disables interrupts while held (in the kernel), restoring the previous
/// interrupt state on release. Nested use is fine.
pub struct IrqSpinLock<T> {
    inner: spin::Mutex<T>,
}

pub struct IrqSpinLockGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    irq_was_enabled: bool,
}

impl<T> IrqSpinLock<T> {
    pub const fn new(value: T) -> Self {
        IrqSpinLock { inner: spin::Mutex::new(value) }
    }

    #[inline]
    pub fn lock(&self) -> IrqSpinLockGuard<'_, T> {
        let irq_was_enabled = irq::save_and_disable();
        IrqSpinLockGuard { guard: Some(self.inner.lock()), irq_was_enabled }
    }

    /// Takes the lock only if it is free (used by diagnostics that must not deadlock).
    pub fn try_lock(&self) -> Option<IrqSpinLockGuard<'_, T>> {
        let irq_was_enabled = irq::save_and_disable();
        match self.inner.try_lock() {
            Some(g) => Some(IrqSpinLockGuard { guard: Some(g), irq_was_enabled }),
            None => {
                irq::restore(irq_was_enabled);
                None
            }
        }
    }

    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T> Deref for IrqSpinLockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard is present until drop")
    }
}

impl<T> DerefMut for IrqSpinLockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard is present until drop")
    }
}

impl<T> Drop for IrqSpinLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // Release the lock before interrupts can come back.
        drop(self.guard.take());
        irq::restore(self.irq_was_enabled);
    }
}

/// Interrupt-flag control. The only architecture-specific code in this crate, and only on the
/// bare-metal target.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub(crate) mod irq {
    #[inline]
    pub fn save_and_disable() -> bool {
        let rflags: u64;
        // SAFETY: reads RFLAGS (through the stack, hence no `nostack`) and clears IF. Not
        // `nomem`: the asm is a compiler barrier, so no access to lock-protected or per-CPU data
        // is moved before interrupts are off. Disabling interrupts is always sound in ring 0.
        unsafe {
            core::arch::asm!("pushfq", "pop {}", "cli", out(reg) rflags, options(preserves_flags));
        }
        rflags & (1 << 9) != 0
    }

    #[inline]
    pub fn restore(was_enabled: bool) {
        if was_enabled {
            // SAFETY: re-enables interrupts that were enabled when the lock was taken; the lock
            // has been released, so a handler can take it. Not `nomem`: a compiler barrier, so
            // no access is moved after the point where an interrupt handler may run.
            unsafe { core::arch::asm!("sti", options(nostack)) };
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
pub(crate) mod irq {
    #[inline]
    pub fn save_and_disable() -> bool {
        false
    }
    #[inline]
    pub fn restore(_was_enabled: bool) {}
}
