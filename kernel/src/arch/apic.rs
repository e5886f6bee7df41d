//! The local APIC of every CPU: its id, end of interrupt, inter-processor interrupts (INIT,
//! STARTUP, fixed vectors) and a per-CPU periodic timer.
//!
//! Two register interfaces, chosen once on the boot CPU and used by every CPU:
//! - **x2APIC** when CPUID.1:ECX[21] offers it: registers are MSRs `0x800 + offset / 16`, the ICR
//!   is one 64-bit write with the 32-bit destination id in the high half (no busy bit to poll).
//! - **xAPIC** otherwise (QEMU 7.2's TCG does not emulate x2APIC): 4 KiB of MMIO at the MADT's
//!   address, normally `0xfee00000`, reached through `ioremap_uc` once vmalloc is up
//!   ([`ioremap_mmio`]: a `VM_IOREMAP` area, strongly uncached as Linux's `PAGE_KERNEL_NOCACHE`
//!   APIC mapping, printed in `/proc/vmallocinfo` as `phys=0x00000000fee00000 ioremap`). Before
//!   that (calibration runs before the allocators exist), as Linux uses its early fixmap, the
//!   registers are reached through the bootloader's direct map, which always covers the first
//!   4 GiB: [`init_bsp`] makes that 2 MiB direct-map page uncached (PCD|PWT); it holds only
//!   APIC MMIO, no RAM, and stays uncached so that no cacheable alias of the registers exists.
//!
//! Vectors follow Linux's `irq_vectors.h`: the timer at 0xec, cross-CPU calls at 0xfc, spurious
//! at 0xff. The 8259 PIC stays wired to the boot CPU's LINT0 (virtual wire), which is untouched.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use x86_64::registers::model_specific::Msr;

use super::cpu::{cpuid, rdtsc};

/// Linux's `LOCAL_TIMER_VECTOR`.
pub const TIMER_VECTOR: u8 = 0xec;
/// Linux's `CALL_FUNCTION_VECTOR`: cross-CPU calls and TLB shootdowns (`arch::smp`).
pub const CALL_FUNCTION_VECTOR: u8 = 0xfc;
/// Linux's `SPURIOUS_APIC_VECTOR`.
pub const SPURIOUS_VECTOR: u8 = 0xff;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

// Register offsets (xAPIC MMIO; x2APIC MSR = 0x800 + offset >> 4).
const REG_ID: u32 = 0x20;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_ESR: u32 = 0x280;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;

const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// Divide configuration 0b0011: divide the bus clock by 16.
const TIMER_DIVIDE_16: u32 = 0b0011;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    XApic,
    X2Apic,
}

const MODE_NONE: u8 = 0;
const MODE_XAPIC: u8 = 1;
const MODE_X2APIC: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(MODE_NONE);
/// Virtual address of the xAPIC registers: the direct map during early boot, then the ioremap.
static MMIO: AtomicU64 = AtomicU64::new(0);
/// Physical address of the xAPIC registers (the MADT's), for [`ioremap_mmio`].
static MMIO_PHYS: AtomicU64 = AtomicU64::new(0);
/// LAPIC timer ticks (bus clock / 16) per second and TSC ticks per millisecond, measured
/// against the PIT at boot.
static TIMER_TICKS_PER_SEC: AtomicU64 = AtomicU64::new(0);
static TSC_PER_MS: AtomicU64 = AtomicU64::new(0);
/// Per-CPU LAPIC timer interrupts taken (tests check every CPU ticks).
static TIMER_TICKS: [AtomicU64; mm::NR_CPUS] = [const { AtomicU64::new(0) }; mm::NR_CPUS];

pub fn mode() -> Option<Mode> {
    match MODE.load(Ordering::Relaxed) {
        MODE_XAPIC => Some(Mode::XApic),
        MODE_X2APIC => Some(Mode::X2Apic),
        _ => None,
    }
}

/// Whether CPUID offers x2APIC.
pub fn has_x2apic() -> bool {
    cpuid(1).2 & (1 << 21) != 0
}

fn read(reg: u32) -> u32 {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled on this CPU (`enable_this_cpu`), so the MSR exists;
        // reading an APIC register has no side effect.
        MODE_X2APIC => unsafe { Msr::new(0x800 + (reg >> 4)).read() as u32 },
        // SAFETY: `MMIO` maps this CPU's APIC page uncached (the direct map early, the ioremap
        // area later, both valid for ever; every CPU sees its own APIC at the same physical
        // address); the register is 4-byte aligned and readable.
        _ => unsafe { core::ptr::read_volatile((MMIO.load(Ordering::Relaxed) + reg as u64) as *const u32) },
    }
}

fn write(reg: u32, value: u32) {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: as in `read`; the callers write architecturally defined values.
        MODE_X2APIC => unsafe { Msr::new(0x800 + (reg >> 4)).write(value as u64) },
        // SAFETY: as in `read`.
        _ => unsafe {
            core::ptr::write_volatile((MMIO.load(Ordering::Relaxed) + reg as u64) as *mut u32, value)
        },
    }
}

/// This CPU's APIC id (full 32 bits in x2APIC mode, bits 31..24 of the ID register in xAPIC).
pub fn id() -> u32 {
    match mode() {
        Some(Mode::X2Apic) => read(REG_ID),
        Some(Mode::XApic) => read(REG_ID) >> 24,
        None => cpuid(1).1 >> 24,
    }
}

/// Picks the register interface and enables the boot CPU's APIC. `lapic_phys` comes from the
/// MADT; `direct_map` is the virtual address of physical 0. `force_xapic` is the `nox2apic`
/// command-line word (Linux's), which keeps the MMIO interface even where x2APIC exists.
pub fn init_bsp(lapic_phys: u64, direct_map: u64, force_xapic: bool) -> Mode {
    let mode = if has_x2apic() && !force_xapic { MODE_X2APIC } else { MODE_XAPIC };
    if mode == MODE_XAPIC {
        let virt = direct_map + lapic_phys;
        make_uncached(virt);
        MMIO_PHYS.store(lapic_phys, Ordering::Relaxed);
        MMIO.store(virt, Ordering::Relaxed);
    }
    MODE.store(mode, Ordering::Relaxed);
    enable_this_cpu();
    calibrate();
    self::mode().expect("set above")
}

/// In xAPIC mode, moves the register accesses onto an `ioremap_uc` mapping of the APIC page
/// (Linux maps it with `set_fixmap_nocache(FIX_APIC_BASE, ...)`, this kernel has no fixmap).
/// Called once vmalloc is up and before the APs start; the early direct-map address stays
/// valid, so an interrupt using it meanwhile is fine. A failure keeps the direct map, with a
/// warning.
pub fn ioremap_mmio() {
    if mode() != Some(Mode::XApic) {
        return;
    }
    let phys = MMIO_PHYS.load(Ordering::Relaxed);
    match crate::mm::vmalloc::ioremap_uc(phys, 4096) {
        Ok(p) => {
            MMIO.store(p.as_ptr() as u64, Ordering::Relaxed);
            crate::info!("apic: xAPIC registers at {phys:#x} ioremapped at {:p}", p.as_ptr());
        }
        Err(e) => {
            crate::warn!("apic: ioremap of the xAPIC registers failed ({e}); staying on the direct map")
        }
    }
}

/// Where the xAPIC registers are reached now (0 in x2APIC mode), and their physical address.
pub fn mmio() -> (u64, u64) {
    (MMIO.load(Ordering::Relaxed), MMIO_PHYS.load(Ordering::Relaxed))
}

/// Enables this CPU's APIC in the chosen mode: software enable with the spurious vector, task
/// priority 0 (accept every vector), errors cleared. Every AP calls it during bring-up.
pub fn enable_this_cpu() {
    let msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; setting EN (and EXTD when x2APIC was
    // chosen, which CPUID offered) keeps the base address and only selects the interface.
    unsafe {
        let mut base = msr.read() | APIC_BASE_ENABLE;
        if MODE.load(Ordering::Relaxed) == MODE_X2APIC {
            base |= APIC_BASE_X2APIC;
        }
        let mut msr = msr;
        msr.write(base);
    }
    write(REG_TPR, 0);
    write(REG_SVR, 0x100 | SPURIOUS_VECTOR as u32);
    write(REG_ESR, 0);
    write(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
}

/// Signals the end of a LAPIC-delivered interrupt (timer, IPI).
#[inline]
pub fn eoi() {
    write(REG_EOI, 0);
}

fn send_icr(dest: u32, low: u32) {
    x86_64::instructions::interrupts::without_interrupts(|| match mode() {
        Some(Mode::X2Apic) => {
            // SAFETY: x2APIC mode is on; the ICR MSR takes destination and command in one write.
            unsafe { Msr::new(0x830).write(((dest as u64) << 32) | low as u64) };
        }
        _ => {
            while read(REG_ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
                core::hint::spin_loop();
            }
            write(REG_ICR_HIGH, dest << 24);
            write(REG_ICR_LOW, low);
            while read(REG_ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
                core::hint::spin_loop();
            }
        }
    });
}

/// A fixed-vector IPI to the CPU with APIC id `dest`.
pub fn send_ipi(dest: u32, vector: u8) {
    send_icr(dest, ICR_LEVEL_ASSERT | vector as u32);
}

/// INIT: resets the target into wait-for-SIPI.
pub fn send_init(dest: u32) {
    send_icr(dest, ICR_LEVEL_ASSERT | ICR_INIT);
}

/// STARTUP: the target starts in real mode at `page * 4096` (page below 256).
pub fn send_startup(dest: u32, page: u8) {
    send_icr(dest, ICR_LEVEL_ASSERT | ICR_STARTUP | page as u32);
}

/// Busy-waits `us` microseconds (TSC, calibrated against the PIT).
pub fn udelay(us: u64) {
    let per_ms = TSC_PER_MS.load(Ordering::Relaxed).max(1);
    let end = rdtsc() + per_ms * us / 1000;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// TSC ticks per millisecond (for timeouts).
pub fn tsc_per_ms() -> u64 {
    TSC_PER_MS.load(Ordering::Relaxed)
}

/// Measures the TSC and the LAPIC timer against 10 ms of PIT channel 2 (Linux's
/// `pit_calibrate_tsc`/`calibrate_APIC_clock`).
fn calibrate() {
    use x86_64::instructions::port::Port;
    let pit_ticks: u32 = super::interrupts::PIT_HZ / 100;
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: port 0x61 bit 0 gates PIT channel 2 and bit 1 drives the speaker (kept off);
        // 0x43/0x42 program channel 2 in mode 0 (interrupt on terminal count), whose output
        // shows in 0x61 bit 5. Nothing else in the kernel uses channel 2. The LAPIC timer is
        // this CPU's, masked, counting down from the maximum.
        unsafe {
            let mut gate = Port::<u8>::new(0x61);
            let g = gate.read();
            gate.write((g & !0x02) | 0x01);
            Port::<u8>::new(0x43).write(0b1011_0000);
            write(REG_TIMER_DIVIDE, TIMER_DIVIDE_16);
            write(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
            Port::<u8>::new(0x42).write(pit_ticks as u8);
            Port::<u8>::new(0x42).write((pit_ticks >> 8) as u8);
            write(REG_TIMER_INIT, u32::MAX);
            let t0 = rdtsc();
            while gate.read() & 0x20 == 0 {
                core::hint::spin_loop();
            }
            let t1 = rdtsc();
            let left = read(REG_TIMER_CURRENT);
            write(REG_TIMER_INIT, 0);
            TSC_PER_MS.store(((t1 - t0) / 10).max(1), Ordering::Relaxed);
            TIMER_TICKS_PER_SEC.store(((u32::MAX - left) as u64 * 100).max(1), Ordering::Relaxed);
        }
    });
}

/// LAPIC timer ticks per second (bus clock / 16), as calibrated.
pub fn timer_ticks_per_sec() -> u64 {
    TIMER_TICKS_PER_SEC.load(Ordering::Relaxed)
}

/// Starts this CPU's LAPIC timer, periodic at about `hz`; the handler is the one
/// `interrupts::set_timer_handler` installed (the same on every CPU).
pub fn start_timer(hz: u32) {
    let hz = hz.max(1);
    let count = (TIMER_TICKS_PER_SEC.load(Ordering::Relaxed) / hz as u64).clamp(1, u32::MAX as u64);
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_16);
    write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | TIMER_VECTOR as u32);
    write(REG_TIMER_INIT, count as u32);
}

/// Stops this CPU's LAPIC timer.
pub fn stop_timer() {
    write(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
    write(REG_TIMER_INIT, 0);
}

/// LAPIC timer interrupts taken on `cpu` since boot.
pub fn timer_ticks(cpu: usize) -> u64 {
    TIMER_TICKS.get(cpu).map_or(0, |t| t.load(Ordering::Relaxed))
}

pub(super) fn count_timer_tick(cpu: usize) {
    if let Some(t) = TIMER_TICKS.get(cpu) {
        t.fetch_add(1, Ordering::Relaxed);
    }
}

/// Makes the direct-map page holding `virt` uncached (PCD|PWT) and flushes its translation.
/// The bootloader maps the direct map with 2 MiB (or 4 KiB) pages; whichever entry maps `virt`
/// gets the bits. Runs on the boot CPU before any AP exists, so the local flush is enough.
fn make_uncached(virt: u64) {
    use x86_64::registers::control::Cr3;
    use x86_64::structures::paging::{PageTable, PageTableFlags as F};
    let offset = crate::arch::fault::direct_map_offset();
    let (mut table_phys, _) = Cr3::read();
    let idx = [(virt >> 39) & 511, (virt >> 30) & 511, (virt >> 21) & 511, (virt >> 12) & 511];
    for (level, &i) in idx.iter().enumerate() {
        let table = (offset + table_phys.start_address().as_u64()) as *mut PageTable;
        // SAFETY: `table` is a page table of the live hierarchy reached through the direct map;
        // only this CPU runs, and changing the cache bits of an MMIO page changes no data.
        let entry = unsafe { &mut (&mut *table)[i as usize] };
        let flags = entry.flags();
        if !flags.contains(F::PRESENT) {
            crate::warn!("apic: {virt:#x} is not mapped; the xAPIC registers stay unreachable");
            return;
        }
        if level == 3 || flags.contains(F::HUGE_PAGE) {
            entry.set_flags(flags | F::NO_CACHE | F::WRITE_THROUGH);
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(virt));
            return;
        }
        table_phys = x86_64::structures::paging::PhysFrame::containing_address(entry.addr());
    }
}
