//! The serial console: COM1, a 16550 UART at I/O port 0x3f8, which QEMU connects to the runner.
//!
//! Output is polled (every write waits for the transmitter). Input, once [`enable_input`] ran,
//! is interrupt-driven: COM1's "data ready" interrupt (IRQ 4, through the legacy PIC that
//! already delivers the PIT's IRQ 0 to the boot CPU) moves received bytes into a ring that
//! [`read_byte`] drains. A full ring turns the interrupt off until the reader made room, so
//! the UART's FIFO fills and QEMU stops taking input: nothing typed ahead is lost. Ctrl-C
//! (0x03) is counted as it arrives ([`ctrl_c_pending`]), so a running command sees it before
//! the reader gets to it.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::IER;
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

/// COM1's legacy interrupt line (ISA IRQ 4; QEMU's MADT has no source override for it).
pub const COM1_IRQ: u8 = 4;

/// The ASCII code Ctrl-C sends.
pub const CTRL_C: u8 = 0x03;

/// Received bytes not yet read: a single-producer (the interrupt handler) single-consumer
/// ([`read_byte`]) ring. Both run on the boot CPU, the only one the PIC interrupts.
const RX_RING: usize = 4096;
static RX_BUF: [AtomicU8; RX_RING] = [const { AtomicU8::new(0) }; RX_RING];
/// Bytes ever written (producer) and read (consumer); the difference is the fill level.
static RX_HEAD: AtomicUsize = AtomicUsize::new(0);
static RX_TAIL: AtomicUsize = AtomicUsize::new(0);
/// Ctrl-C bytes in the ring (received, not yet read).
static CTRL_C_PENDING: AtomicU32 = AtomicU32::new(0);
/// The handler turned the data-ready interrupt off because the ring was full.
static RX_STOPPED: AtomicBool = AtomicBool::new(false);

/// Turns on interrupt-driven input: COM1's data-ready interrupt, IRQ 4 unmasked on the PIC.
pub fn enable_input() {
    x86_64::instructions::interrupts::without_interrupts(|| {
        super::interrupts::request_irq(COM1_IRQ, com1_interrupt);
        if let Some(uart) = COM1.lock().as_mut() {
            uart.enable_interrupts(IER::DATA_READY);
        }
    });
}

/// IRQ 4, with interrupts off: moves every received byte into the ring while it has room.
fn com1_interrupt() {
    let mut guard = COM1.lock();
    let Some(uart) = guard.as_mut() else { return };
    loop {
        let head = RX_HEAD.load(Ordering::Relaxed);
        if head - RX_TAIL.load(Ordering::Acquire) == RX_RING {
            // Full: stop taking bytes; the reader turns the interrupt back on.
            uart.disable_interrupts(IER::DATA_READY);
            RX_STOPPED.store(true, Ordering::Release);
            return;
        }
        let Ok(b) = uart.try_receive_byte() else { return };
        if b == CTRL_C {
            CTRL_C_PENDING.fetch_add(1, Ordering::Relaxed);
        }
        RX_BUF[head % RX_RING].store(b, Ordering::Relaxed);
        RX_HEAD.store(head + 1, Ordering::Release);
    }
}

/// The next received byte, if one is waiting.
pub fn try_read_byte() -> Option<u8> {
    let tail = RX_TAIL.load(Ordering::Relaxed);
    if RX_HEAD.load(Ordering::Acquire) == tail {
        return None;
    }
    let b = RX_BUF[tail % RX_RING].load(Ordering::Relaxed);
    RX_TAIL.store(tail + 1, Ordering::Release);
    if b == CTRL_C {
        CTRL_C_PENDING.fetch_sub(1, Ordering::Relaxed);
    }
    if RX_STOPPED.swap(false, Ordering::AcqRel) {
        x86_64::instructions::interrupts::without_interrupts(|| {
            if let Some(uart) = COM1.lock().as_mut() {
                uart.enable_interrupts(IER::DATA_READY);
            }
        });
    }
    Some(b)
}

/// Waits for the next received byte (halting the CPU meanwhile). Boot CPU only, after
/// [`enable_input`], with interrupts enabled.
pub fn read_byte() -> u8 {
    loop {
        x86_64::instructions::interrupts::disable();
        if let Some(b) = try_read_byte() {
            x86_64::instructions::interrupts::enable();
            return b;
        }
        // `sti; hlt` is atomic: a byte that arrives after the check still wakes the `hlt`.
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// A Ctrl-C has arrived that the reader has not read yet: what a running command polls to
/// stop early.
pub fn ctrl_c_pending() -> bool {
    CTRL_C_PENDING.load(Ordering::Relaxed) > 0
}

/// Drops received bytes up to and including the first pending Ctrl-C (what a terminal does
/// with type-ahead when it delivers an interrupt); nothing when none is pending.
pub fn discard_through_ctrl_c() {
    while ctrl_c_pending() {
        match try_read_byte() {
            Some(CTRL_C) | None => break,
            Some(_) => {}
        }
    }
}
