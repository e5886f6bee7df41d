//! The legacy 8259 PIC pair. Its power-on vectors (8..15) collide with CPU exceptions, so it is
//! remapped to 32..47 and every line masked; only lines a driver asks for get unmasked.

use x86_64::instructions::port::Port;

/// First vector of the master PIC (IRQ 0..7 -> 32..39) and of the slave (IRQ 8..15 -> 40..47).
pub const MASTER_VECTOR: u8 = 32;
pub const SLAVE_VECTOR: u8 = 40;

const MASTER_CMD: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_CMD: u16 = 0xa0;
const SLAVE_DATA: u16 = 0xa1;
const EOI: u8 = 0x20;
const READ_ISR: u8 = 0x0b;

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

fn outb(port: u16, v: u8) {
    // SAFETY: callers only pass the PIC's own command/data ports (or 0x80, the POST port used
    // as an I/O delay); writing them affects interrupt delivery only.
    unsafe { Port::<u8>::new(port).write(v) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: reading the PIC's data/command ports has no side effect besides the read.
    unsafe { Port::<u8>::new(port).read() }
}

/// Old PICs need a moment between initialisation words; a write to the unused POST port gives it.
fn io_wait() {
    outb(0x80, 0);
}

/// Remaps both PICs to [`MASTER_VECTOR`]/[`SLAVE_VECTOR`] and masks every line.
pub fn init() {
    let _g = LOCK.lock();
    outb(MASTER_CMD, 0x11); // ICW1: edge triggered, cascade, ICW4 follows
    io_wait();
    outb(SLAVE_CMD, 0x11);
    io_wait();
    outb(MASTER_DATA, MASTER_VECTOR); // ICW2: vector base
    io_wait();
    outb(SLAVE_DATA, SLAVE_VECTOR);
    io_wait();
    outb(MASTER_DATA, 4); // ICW3: slave on IRQ 2
    io_wait();
    outb(SLAVE_DATA, 2); // ICW3: slave's cascade identity
    io_wait();
    outb(MASTER_DATA, 0x01); // ICW4: 8086 mode
    io_wait();
    outb(SLAVE_DATA, 0x01);
    io_wait();
    outb(MASTER_DATA, 0xff);
    outb(SLAVE_DATA, 0xff);
}

/// Unmasks (`masked == false`) or masks IRQ line `irq` (0..15).
pub fn set_masked(irq: u8, masked: bool) {
    let _g = LOCK.lock();
    let (port, bit) = if irq < 8 { (MASTER_DATA, irq) } else { (SLAVE_DATA, irq - 8) };
    let m = inb(port);
    outb(port, if masked { m | (1 << bit) } else { m & !(1 << bit) });
    if irq >= 8 && !masked {
        // The slave's lines reach the CPU through the master's IRQ 2.
        let m = inb(MASTER_DATA);
        outb(MASTER_DATA, m & !(1 << 2));
    }
}

/// Whether IRQ line `irq` is masked.
pub fn is_masked(irq: u8) -> bool {
    let (port, bit) = if irq < 8 { (MASTER_DATA, irq) } else { (SLAVE_DATA, irq - 8) };
    inb(port) & (1 << bit) != 0
}

/// In-service register of both PICs (bit n = IRQ n being handled).
pub fn in_service() -> u16 {
    outb(MASTER_CMD, READ_ISR);
    outb(SLAVE_CMD, READ_ISR);
    (inb(SLAVE_CMD) as u16) << 8 | inb(MASTER_CMD) as u16
}

/// End of interrupt for IRQ `irq`.
pub fn eoi(irq: u8) {
    if irq >= 8 {
        outb(SLAVE_CMD, EOI);
    }
    outb(MASTER_CMD, EOI);
}

/// Acknowledges every IRQ the PICs still consider in service. The test harness calls this after
/// abandoning a test whose interrupt handler never reached its EOI; without it, that line (and
/// every lower-priority one) would stay blocked.
pub fn eoi_all_in_service() {
    for _ in 0..16 {
        let isr = in_service();
        if isr == 0 {
            break;
        }
        let irq = isr.trailing_zeros() as u8;
        eoi(irq);
    }
}
