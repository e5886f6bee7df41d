//! CPU numbering shared by every per-CPU structure: one compile-time maximum ([`NR_CPUS`]) that
//! sizes the per-CPU arrays, and the runtime counts the kernel fills in as it learns them.
//!
//! As on Linux, three numbers differ:
//! - [`NR_CPUS`]: the most CPUs the kernel supports (arrays are this long);
//! - [`nr_cpu_ids`]: the possible CPUs, known from the firmware (ACPI MADT) before the
//!   allocators are set up, so that SLUB's slab orders (`calculate_order`) see it;
//! - [`num_online_cpus`]: the CPUs that came up, known after SMP bring-up; `/proc/zoneinfo`
//!   prints pagesets for exactly these.
//!
//! Logical CPU ids are dense: the boot CPU is 0, application processors `1..num_online_cpus()`
//! in the order they came up.
//!
//! Also here, for every per-CPU structure: which CPU is running and running a function on each
//! CPU ([`this_cpu`], [`on_each_cpu_mask`]: hooks the kernel installs), and the
//! "only its own CPU, interrupts off" discipline of per-CPU state (`CpuSlot`).

use core::sync::atomic::{AtomicUsize, Ordering};

mod call;
#[cfg(test)]
pub(crate) use call::host;
pub use call::{
    on_each_cpu, on_each_cpu_mask, set_cross_cpu_call_fn, set_this_cpu_fn, this_cpu, CpuMask, CrossCpuCallFn,
    ALL_CPUS,
};
mod slot;
pub(crate) use slot::{CpuSlot, CpuSlotGuard};

/// The most CPUs the kernel supports (Linux's `CONFIG_NR_CPUS`). The runner accepts `--smp`
/// up to this.
pub const NR_CPUS: usize = 16;

static NR_CPU_IDS: AtomicUsize = AtomicUsize::new(1);
static NR_ONLINE: AtomicUsize = AtomicUsize::new(1);

/// Possible CPUs (Linux's `nr_cpu_ids`); 1 until the kernel has read the firmware tables.
#[inline]
pub fn nr_cpu_ids() -> usize {
    NR_CPU_IDS.load(Ordering::Relaxed)
}

/// Sets the possible CPU count, clamped to `1..=NR_CPUS`; returns the value kept.
pub fn set_nr_cpu_ids(n: usize) -> usize {
    let n = clamp_cpus(n);
    NR_CPU_IDS.store(n, Ordering::Relaxed);
    n
}

/// CPUs online (Linux's `num_online_cpus()`); 1 until SMP bring-up has finished.
#[inline]
pub fn num_online_cpus() -> usize {
    NR_ONLINE.load(Ordering::Acquire)
}

/// Records that CPUs `0..n` are online (clamped to `1..=NR_CPUS`); returns the value kept.
pub fn set_num_online_cpus(n: usize) -> usize {
    let n = clamp_cpus(n);
    NR_ONLINE.store(n, Ordering::Release);
    n
}

/// Where the kernel keeps the running CPU's logical id with the `gs_cpu_id` feature: a `u32` at
/// this offset from the GS base (x86_64's per-CPU segment; Linux's `this_cpu_read(cpu_number)`
/// is the same one instruction). The kernel checks its per-CPU block against it at compile time.
pub const CPU_ID_GS_OFFSET: usize = 8;

/// The running CPU's logical id from `gs:[CPU_ID_GS_OFFSET]` when the crate is built with the
/// `gs_cpu_id` feature for the freestanding target (`None` otherwise, and always on the host).
/// One segment-relative load, where an installed `fn() -> CpuId` costs a load, a test, an
/// indirect call and a frame on every fast path. The kernel has no preemption, so the id stays
/// right for as long as the caller runs.
///
/// The feature is the embedder's promise: on every CPU, before its first allocation, GS points
/// at that CPU's per-CPU block, whose `u32` at [`CPU_ID_GS_OFFSET`] is the CPU's logical id,
/// below [`NR_CPUS`], unique, and never changed.
#[inline(always)]
pub fn cpu_id_from_gs() -> Option<usize> {
    #[cfg(all(feature = "gs_cpu_id", target_arch = "x86_64", target_os = "none"))]
    {
        let id: u32;
        // SAFETY: the `gs_cpu_id` feature's promise (above): GS points at this CPU's block and
        // the u32 at the offset is its id; the load reads nothing else and writes nothing.
        unsafe {
            core::arch::asm!("mov {0:e}, gs:[{off}]", out(reg) id, off = const CPU_ID_GS_OFFSET,
                options(nostack, readonly, preserves_flags, pure));
        }
        return Some(id as usize);
    }
    #[allow(unreachable_code)]
    None
}

/// A CPU count the per-CPU arrays can hold: at least the boot CPU, at most [`NR_CPUS`].
pub const fn clamp_cpus(n: usize) -> usize {
    if n == 0 {
        1
    } else if n > NR_CPUS {
        NR_CPUS
    } else {
        n
    }
}

/// Linux's `fls`: the 1-based index of the highest set bit, 0 for 0.
pub const fn fls(x: u32) -> u32 {
    u32::BITS - x.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fls_matches_linux() {
        assert_eq!([fls(0), fls(1), fls(2), fls(3), fls(4), fls(16)], [0, 1, 2, 2, 3, 5]);
    }

    #[test]
    fn counts_are_clamped_to_the_supported_range() {
        // The pure helper only: other host tests read the global counts (default 1) in parallel.
        assert_eq!([clamp_cpus(0), clamp_cpus(1), clamp_cpus(4), clamp_cpus(17)], [1, 1, 4, NR_CPUS]);
        assert_eq!((nr_cpu_ids(), num_online_cpus()), (1, 1), "host defaults: the boot CPU only");
    }
}
