//! The panic handler: prints the message and where it came from, then fails the QEMU session —
//! unless a kernel test is running, in which case the harness abandons that test, reports it
//! FAILED and goes on with the next (see `ktest`).

use core::panic::PanicInfo;

use crate::arch;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    let test = crate::ktest::current_test();
    let (in_test, name) = match test {
        Some(name) => (" in test ", name),
        None => ("", ""),
    };
    match info.location() {
        Some(loc) => arch::serial::write_fmt_panicking(format_args!(
            "\n[PANIC] kernel panic{in_test}{name} at {}:{}:{}: {}\n",
            loc.file(),
            loc.line(),
            loc.column(),
            info.message()
        )),
        None => arch::serial::write_fmt_panicking(format_args!(
            "\n[PANIC] kernel panic{in_test}{name}: {}\n",
            info.message()
        )),
    }
    // Returns only when no test is running.
    arch::fault::die()
}
