//! The kernel: boots under QEMU, brings up the memory subsystem and runs the demo workload, the
//! in-kernel test suite or the benchmarks, as its command line asks.
#![no_std]
#![no_main]
// Exception handlers (`arch::exceptions`) and test registration in a linker section (`ktest`).
#![feature(abi_x86_interrupt)]
#![feature(used_with_arg)]

extern crate alloc;

mod arch;
mod bench;
mod cmdline;
mod console;
mod demo;
#[macro_use]
mod ktest;
#[macro_use]
mod log;
mod mm;
mod panic;
mod soak;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{entry_point, BootInfo};

/// Where the bootloader puts things. Everything it places dynamically (the direct map of all
/// physical memory, the kernel image, the stack, boot info) lands in
/// `[DYNAMIC_START, DYNAMIC_END)`, which keeps it out of the vmalloc range above.
pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.mappings.dynamic_range_start = Some(mm::layout::DYNAMIC_START);
    config.mappings.dynamic_range_end = Some(mm::layout::DYNAMIC_END - 0x1000);
    config.kernel_stack_size = 512 * 1024;
    config
};

entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    arch::serial::init();
    let cmdline = cmdline::init(boot_info);
    // The console boots quietly (warnings and errors only) and prints a summary instead.
    let quiet = cmdline.mode == cmdline::Mode::Console && !cmdline.log_given;
    log::set_level(if quiet { log::Level::Warn } else { cmdline.log_level });
    info!("memkernel booting (cmdline: \"{}\")", cmdline.raw);
    arch::init(boot_info, &cmdline);
    mm::init(boot_info, &cmdline);
    // vmalloc is up: the xAPIC registers move from the early direct-map alias to ioremap.
    arch::apic::ioremap_mmio();
    // And the boot framebuffer goes onto an ioremap_wc mapping.
    arch::fb::ioremap_framebuffer();
    if cmdline.get("tlb_shootdown") == Some("off") {
        mm::vmalloc::tlb::disable_shootdown();
    }
    if matches!(cmdline.mode, cmdline::Mode::Fault("ap_bringup" | "ap-bringup")) {
        arch::smp::set_fault_cpu(1);
    }
    arch::smp::boot_secondary_cpus();
    // Boot is done: `failslab=` / `fail_page_alloc=` start failing allocations now.
    mm::fault_inject::boot_done();
    match cmdline.mode {
        cmdline::Mode::Demo => {
            demo::run(cmdline.memmap);
            info!("demo finished");
            arch::qemu::exit(arch::qemu::ExitCode::Success)
        }
        cmdline::Mode::Bench => bench::run(),
        cmdline::Mode::Test { filter } => ktest::run(filter),
        cmdline::Mode::Fault(name) => ktest::run_fault(name),
        cmdline::Mode::Console => {
            log::set_level(cmdline.log_level);
            console::run()
        }
        cmdline::Mode::Soak(ops) => soak::run(&cmdline, ops),
    }
}
