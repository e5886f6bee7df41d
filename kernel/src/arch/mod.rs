//! Architecture glue: everything that touches x86_64 hardware directly lives below here, apart
//! from the allocator logic in the `mm` crate.
//!
//! [`init`] order matters: per-CPU data first (every handler counts its nesting through GS),
//! then the GDT/TSS (the IDT's IST entries refer to it), the IDT, CPU features, the PIC, and
//! only then are interrupts enabled.

pub mod acpi;
pub mod apic;
pub mod cpu;
pub mod exceptions;
pub mod fault;
mod fault_scenarios;
pub mod fb;
pub mod gdt;
pub mod interrupts;
pub mod irq_work;
pub mod percpu;
mod pic;
pub mod qemu;
pub mod serial;
pub mod smp;
pub mod smp_call;
mod smp_tests;
mod tests;
mod trampoline;

use bootloader_api::BootInfo;

pub use cpu::rdtsc;
pub use percpu::in_interrupt;

/// Brings up the CPU: segments, exception handling, NX/WP, the PIC; enables interrupts (all
/// lines masked until a driver such as the timer unmasks one).
pub fn init(boot_info: &BootInfo, cmdline: &crate::cmdline::Cmdline) {
    percpu::init_bsp();
    gdt::init();
    exceptions::init();
    cpu::init_features();
    fault::init_layout(boot_info);
    fb::init(boot_info);
    interrupts::init();
    // Before the allocators: SLUB sizes slabs by nr_cpu_ids (the MADT's CPU count).
    smp::init_topology(
        boot_info.rsdp_addr.into_option(),
        fault::direct_map_offset(),
        cmdline.raw.split_ascii_whitespace().any(|w| w == "nox2apic"),
    );
    x86_64::instructions::interrupts::enable();
    let (start, end) = fault::kernel_image();
    crate::info!(
        "arch: GDT/TSS/IDT loaded, PIC remapped to {}..{}; kernel image at {start:#x}..{end:#x}",
        pic::MASTER_VECTOR,
        pic::SLAVE_VECTOR + 8
    );
    // For debugging (README): the static-PIE kernel is linked at 0 and loaded at this offset.
    crate::info!("arch: gdb: add-symbol-file <kernel ELF> -o {start:#x}");
}
