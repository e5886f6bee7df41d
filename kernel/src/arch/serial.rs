//! The serial console: COM1, a 16550 UART at I/O port 0x3f8, which QEMU connects to the runner.

use core::fmt::{self, Write};

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

static COM1: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Programs COM1. Called once, first thing at boot.
pub fn init() {
    // SAFETY: 0x3f8..0x3f8+8 are COM1's registers on every PC (and in QEMU); nothing else in the
    // kernel drives them, and the UART lives in `COM1` for the rest of the kernel's life.
    let mut uart = unsafe { Uart16550::new_port(0x3f8) }.expect("0x3f8 is a valid port base");
    // A failed init still leaves a UART that QEMU accepts bytes from; keep it either way.
    let _ = uart.init(Config::default());
    *COM1.lock() = Some(uart);
}

struct Writer<'a>(&'a mut Uart16550<PioBackend>);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.send_bytes_exact(b"\r");
            }
            self.0.send_bytes_exact(&[b]);
        }
        Ok(())
    }
}

/// Writes formatted text to COM1. Interrupts are off while the port is held, so an interrupt
/// handler that logs cannot deadlock against the code it interrupted.
pub fn write_fmt(args: fmt::Arguments) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(uart) = COM1.lock().as_mut() {
            let _ = Writer(uart).write_fmt(args);
        }
    });
}

/// Used by the panic handler: takes the port even if the panicking code held its lock.
pub fn write_fmt_panicking(args: fmt::Arguments) {
    // SAFETY-free: `force_unlock` is unsafe because another holder may be mid-write; after a
    // panic interleaved bytes are better than a silent deadlock, and only this CPU runs.
    if COM1.is_locked() {
        // SAFETY: only one CPU runs kernel code; the holder is the panicking context itself,
        // which will never resume its write.
        unsafe { COM1.force_unlock() };
    }
    write_fmt(args);
}
