//! The panic handler: prints the message and where it came from, then fails the QEMU session.

use core::panic::PanicInfo;

use crate::arch;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    match info.location() {
        Some(loc) => arch::serial::write_fmt_panicking(format_args!(
            "\n[PANIC] kernel panic at {}:{}:{}: {}\n",
            loc.file(),
            loc.line(),
            loc.column(),
            info.message()
        )),
        None => {
            arch::serial::write_fmt_panicking(format_args!("\n[PANIC] kernel panic: {}\n", info.message()))
        }
    }
    arch::qemu::exit(arch::qemu::ExitCode::Failure)
}
