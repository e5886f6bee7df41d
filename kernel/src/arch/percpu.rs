//! Per-CPU data, reachable through the GS base like Linux's `this_cpu_*` accessors.
//!
//! One block per possible CPU ([`NR_CPUS`] statics, indexed by logical CPU id): every accessor
//! goes through GS, which [`init_cpu`] points at the running CPU's own block, so each CPU has
//! its own interrupt nesting count (`in_interrupt()`, `might_sleep`) and id. Other CPUs' blocks
//! are reached with [`per_cpu`] (read-only fields and atomics only).

use core::sync::atomic::{AtomicU32, Ordering};

use mm::NR_CPUS;
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
    /// Local APIC id (what IPIs are addressed to), set when the CPU comes up.
    apic_id: AtomicU32,
}

// SAFETY: `self_ptr` is written once in `init_cpu`, by the CPU that owns the block, before GS
// points at it, and is read-only afterwards; `irq_depth` and `apic_id` are atomic; `cpu_id` is
// immutable.
unsafe impl Sync for PerCpu {}

const fn blocks() -> [PerCpu; NR_CPUS] {
    let mut blocks = [const {
        PerCpu {
            self_ptr: core::cell::UnsafeCell::new(core::ptr::null()),
            cpu_id: 0,
            irq_depth: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
        }
    }; NR_CPUS];
    let mut i = 0;
    while i < NR_CPUS {
        blocks[i].cpu_id = i as u32;
        i += 1;
    }
    blocks
}

static PER_CPU: [PerCpu; NR_CPUS] = blocks();

/// Points GS at the boot CPU's block. First thing in `arch::init`: every interrupt and exception
/// handler reads its nesting counter through GS.
pub fn init_bsp() {
    init_cpu(0);
}

/// Points GS at CPU `cpu`'s block; the first thing an AP does in Rust, so that a fault report
/// can name it. Each logical id is given to exactly one CPU (`arch::smp` hands them out).
pub fn init_cpu(cpu: usize) {
    let block = &PER_CPU[cpu];
    // SAFETY: only the CPU being given id `cpu` writes this block's `self_ptr`, once, before its
    // GS points at the block; other CPUs read only `cpu_id`, `irq_depth` and `apic_id`.
    unsafe { *block.self_ptr.get() = block };
    GsBase::write(VirtAddr::from_ptr(block));
}

/// `[start, end)` of the per-CPU areas: the blocks of all [`NR_CPUS`] possible CPUs (meminfo
/// `Percpu`).
pub fn areas() -> (u64, u64) {
    let start = PER_CPU.as_ptr() as u64;
    (start, start + core::mem::size_of_val(&PER_CPU) as u64)
}

/// CPU `cpu`'s block (any CPU may read another's id, APIC id and nesting depth).
pub fn per_cpu(cpu: usize) -> &'static PerCpu {
    &PER_CPU[cpu]
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

    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    pub fn set_apic_id(&self, id: u32) {
        self.apic_id.store(id, Ordering::Relaxed);
    }
}

/// Offset of [`PerCpu`]'s `cpu_id` from the GS base: `gs:[CPU_ID_GS_OFFSET]` is the running
/// CPU's logical id. The allocators' per-CPU fast paths read it there (the mm crate's
/// `gs_cpu_id` feature), so the layout is theirs: checked here at compile time.
pub const CPU_ID_GS_OFFSET: usize = core::mem::offset_of!(PerCpu, cpu_id);
const _: () = assert!(CPU_ID_GS_OFFSET == mm::cpus::CPU_ID_GS_OFFSET);

/// Logical number of the CPU running this code (Linux's `smp_processor_id()`): one
/// GS-relative load.
#[inline]
pub fn cpu_id() -> u32 {
    let id: u32;
    // SAFETY: GS points at the running CPU's `PerCpu` block (set by `init_bsp`/`init_cpu` before
    // any code that asks), and `cpu_id` sits at `CPU_ID_GS_OFFSET` in it (repr(C)); immutable.
    unsafe {
        core::arch::asm!("mov {0:e}, gs:[{1}]", out(reg) id, const CPU_ID_GS_OFFSET,
            options(nostack, readonly, preserves_flags, pure));
    }
    id
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
    let depth: u32;
    // SAFETY: GS points at the running CPU's `PerCpu` (see `cpu_id`); `irq_depth` sits at
    // IRQ_DEPTH_GS_OFFSET in it (repr(C)). One aligned 32-bit load, as a relaxed atomic load is;
    // only this CPU changes its own depth.
    unsafe {
        core::arch::asm!("mov {0:e}, gs:[{1}]", out(reg) depth, const IRQ_DEPTH_GS_OFFSET,
            options(nostack, readonly, preserves_flags));
    }
    depth > 0
}

/// Offset of [`PerCpu`]'s `irq_depth` from the GS base (`in_interrupt` reads it with one load:
/// `might_sleep` runs on every kmalloc).
const IRQ_DEPTH_GS_OFFSET: usize = core::mem::offset_of!(PerCpu, irq_depth);
