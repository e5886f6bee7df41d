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
//! A CPU spinning here has interrupts disabled, so it cannot take an IPI. A CPU that holds an
//! allocator lock and waits for every CPU to flush its TLB (vfree's shootdown runs under the
//! vmap lock) would then wait for a CPU that waits for it. To break that cycle the spin loop
//! calls a relax hook ([`set_spin_relax_hook`]) that the kernel points at "do the TLB flushes
//! requested of this CPU": `invlpg` only, no lock, safe at any point of the loop. General
//! cross-CPU calls do not rely on it: their callers must hold no lock (kernel `arch::smp`).

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicPtr, Ordering};

static SPIN_RELAX_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// `lock()` calls that found the lock taken and had to spin (all locks, since boot). Counted on
/// the contended path only, so the uncontended fast path is unchanged; the SMP benchmark reports
/// it per operation.
pub static CONTENDED_LOCKS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

#[cold]
fn count_contended() {
    CONTENDED_LOCKS.fetch_add(1, Ordering::Relaxed);
}

/// Sets the function a CPU calls while it spins on a contended [`IrqSpinLock`] (interrupts off).
/// It must take no lock and must not allocate: it runs in the middle of any allocator path.
pub fn set_spin_relax_hook(hook: fn()) {
    SPIN_RELAX_HOOK.store(hook as *mut (), Ordering::Release);
}

#[cold]
fn spin_relax() {
    let p = SPIN_RELAX_HOOK.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: the hook only ever holds null or a `fn()` stored by `set_spin_relax_hook`.
        let hook = unsafe { core::mem::transmute::<*mut (), fn()>(p) };
        hook();
    }
    core::hint::spin_loop();
}

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
        let mut counted = false;
        loop {
            if let Some(guard) = self.inner.try_lock() {
                return IrqSpinLockGuard { guard: Some(guard), irq_was_enabled };
            }
            // Contended: wait without writing the lock's cache line, serving TLB flush requests.
            if !counted {
                count_contended();
                counted = true;
            }
            while self.inner.is_locked() {
                spin_relax();
            }
        }
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
mod irq {
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
mod irq {
    #[inline]
    pub fn save_and_disable() -> bool {
        false
    }
    #[inline]
    pub fn restore(_was_enabled: bool) {}
}
