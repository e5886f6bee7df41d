//! Deferred vfree (Linux's `vfree_atomic`): vfree in interrupt context must not unmap and free
//! there, so the area is pushed onto a lock-free list threaded through the areas' own first
//! words (Linux's `llist`, no allocation) and freed later in process context: on the next
//! vmalloc/vfree/vmap or by an explicit [`vfree_drain`].
//!
//! Safety of the list: a push validates the address under the vmap lock (a live vmalloc area
//! start, not already queued) and the drain holds the same lock for the whole walk, so a node
//! is never queued twice nor freed while queued. The lock is IRQ-safe (taken with interrupts
//! off), so on this single-CPU kernel `try_lock` in an interrupt handler always succeeds; if it
//! ever fails (another CPU holds it) the push is done unvalidated, as Linux always does.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use ::mm::vmalloc::{AreaKind, VmallocError};

use super::{is_vmalloc_addr, release_locked, report_bad_free, space, VmError};

/// Head of the list of queued areas (0: empty). Each queued area's first word holds the next.
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// Areas queued and not yet freed.
static NR_PENDING: AtomicUsize = AtomicUsize::new(0);
/// Areas ever freed by a drain (tests read it).
pub static DEFERRED_FREES: AtomicUsize = AtomicUsize::new(0);

/// Areas waiting for [`vfree_drain`].
pub fn nr_pending() -> usize {
    NR_PENDING.load(Ordering::Relaxed)
}

fn is_queued(addr: usize) -> bool {
    let mut p = PENDING.load(Ordering::Acquire);
    while p != 0 {
        if p == addr {
            return true;
        }
        // SAFETY: `p` is a queued area's start: mapped and owned by the queue until drained, and
        // the drain cannot run now (we hold the vmap lock).
        p = unsafe { (p as *const usize).read_volatile() };
    }
    false
}

/// Queues `addr` for freeing in process context. Callable in any context; refuses (and
/// reports) an address that is not a live vmalloc area or is already queued.
#[track_caller]
pub fn vfree_atomic(addr: *const u8) -> Result<(), VmError> {
    let Some(node) = NonNull::new(addr as *mut usize) else { return Ok(()) };
    let a = addr as usize;
    if !is_vmalloc_addr(addr) {
        let direct_map =
            crate::mm::page_alloc::virt_to_phys(x86_64::VirtAddr::new_truncate(a as u64)).is_some();
        let e = VmError::NotVmalloc { addr: a, direct_map };
        report_bad_free("vfree_atomic", &e);
        return Err(e);
    }
    // Held until the push is done, so the checks stay true.
    let guard = super::space_lock().try_lock();
    if let Some(space) = &guard {
        let e = match space.areas.check_free(a) {
            Ok(area) if area.kind != AreaKind::Vmalloc => {
                Some(VmError::Vmalloc(VmallocError::WrongKind { addr: a, kind: area.kind }))
            }
            Ok(_) if is_queued(a) => Some(VmError::AlreadyQueued { addr: a }),
            Ok(_) => None,
            // The area allocator names the problem (interior, guard page, double free, ...).
            Err(e) => Some(VmError::Vmalloc(VmallocError::Area(e))),
        };
        if let Some(e) = e {
            report_bad_free("vfree_atomic", &e);
            return Err(e);
        }
    }
    let mut head = PENDING.load(Ordering::Relaxed);
    loop {
        // SAFETY: `addr` is the start of a live vmalloc area (checked above): at least one
        // mapped, writable page that the caller gives up by freeing it.
        unsafe { node.as_ptr().write_volatile(head) };
        match PENDING.compare_exchange_weak(head, a, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(h) => head = h,
        }
    }
    NR_PENDING.fetch_add(1, Ordering::Relaxed);
    drop(guard);
    Ok(())
}

/// Frees every queued area; returns how many. Process context only (does nothing in an
/// interrupt handler, where the areas must stay queued).
pub fn vfree_drain() -> usize {
    if crate::arch::in_interrupt() || PENDING.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let mut space = space();
    drain_locked(&mut space)
}

fn drain_locked(space: &mut super::Space) -> usize {
    let mut p = PENDING.swap(0, Ordering::Acquire);
    let mut n = 0;
    while p != 0 {
        // SAFETY: a queued area, still mapped: read its link before unmapping it.
        let next = unsafe { (p as *const usize).read_volatile() };
        match release_locked(space, p, AreaKind::Vmalloc) {
            Ok(_) => n += 1,
            // Validated when queued; only an unvalidated push (see the module docs) gets here.
            Err(e) => crate::error!("deferred vfree of {p:#x} refused: {e}"),
        }
        NR_PENDING.fetch_sub(1, Ordering::Relaxed);
        p = next;
    }
    DEFERRED_FREES.fetch_add(n, Ordering::Relaxed);
    n
}
