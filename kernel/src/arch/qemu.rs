//! Leaving QEMU with a status through the `isa-debug-exit` device (iobase 0xf4, see the runner).

use x86_64::instructions::port::Port;

/// Values written to the device; QEMU exits with `(value << 1) | 1`, which the runner decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    Success = 0x10,
    Failure = 0x11,
}

/// Ends the QEMU session with `code`. Never returns: if the device is missing (not under QEMU,
/// or the runner's arguments changed), the CPU halts with interrupts off.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device as configured by the runner; writing it
    // has no effect on memory. On a machine without it the write is ignored.
    unsafe { Port::<u32>::new(0xf4).write(code as u32) };
    halt_forever()
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}
