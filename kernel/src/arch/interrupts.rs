//! Hardware interrupts: the 8259 PIC (remapped, masked), the PIT as the periodic timer with a
//! registrable handler, and the interrupt nesting count behind [`in_interrupt`].
//!
//! The timer is the PIT (channel 0, IRQ 0) rather than the local APIC timer: its rate is exact
//! without calibration. It only interrupts the boot CPU; every CPU's local APIC timer
//! (`apic::start_timer`, started on each CPU) calls the same handler.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use x86_64::instructions::port::Port;
use x86_64::structures::idt::{InterruptDescriptorTable, InterruptStackFrame};

use mm::NR_CPUS;

use super::percpu;
use super::pic;

/// The PIT's input clock in Hz.
pub const PIT_HZ: u32 = 1_193_182;
/// Slowest rate: the 16-bit divisor's maximum (65536) gives 18.2 Hz.
pub const MIN_TIMER_HZ: u32 = 19;
/// Fastest rate accepted. The PIT could go to ~600 kHz, but under TCG emulation a rate beyond a
/// few tens of kHz leaves no time for anything but the handler.
pub const MAX_TIMER_HZ: u32 = 100_000;

const TIMER_IRQ: u8 = 0;

static TIMER_HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// Timer handlers running on each CPU (more than one when a handler enables interrupts and
/// takes a nested tick); written by that CPU, read by [`set_timer_handler`] on any.
static TIMER_HANDLER_RUNNING: [AtomicU32; NR_CPUS] = [const { AtomicU32::new(0) }; NR_CPUS];
/// Drivers' handlers of the other legacy lines (`request_irq`), by IRQ number.
static IRQ_HANDLERS: [AtomicPtr<()>; 16] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 16];
static TIMER_HZ: AtomicU32 = AtomicU32::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Why [`start_timer`] refused a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerError {
    /// Below [`MIN_TIMER_HZ`] (the PIT's divisor is 16 bits).
    TooSlow(u32),
    /// Above [`MAX_TIMER_HZ`].
    TooFast(u32),
}

impl core::fmt::Display for TimerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TimerError::TooSlow(hz) => {
                write!(f, "timer rate {hz} Hz is below the PIT's minimum of {MIN_TIMER_HZ} Hz")
            }
            TimerError::TooFast(hz) => {
                write!(f, "timer rate {hz} Hz is above the maximum of {MAX_TIMER_HZ} Hz")
            }
        }
    }
}

/// True when this CPU has interrupts disabled (Linux's `irqs_disabled()`): with
/// [`in_interrupt`](super::in_interrupt), what a `might_sleep` check looks at.
#[inline]
pub fn irqs_disabled() -> bool {
    !x86_64::instructions::interrupts::are_enabled()
}

/// Remaps and masks the PIC. Called by `arch::init` before interrupts are enabled.
pub fn init() {
    pic::init();
}

/// Sets (or with `None` clears) the function called on every timer tick, in interrupt context.
/// It must not block; it runs with interrupts disabled.
///
/// When this returns, no other CPU is still running the handler it replaced (Linux's `free_irq`
/// waits the same way, through `synchronize_irq`): a tick latched before the timer was stopped
/// may still arrive, but it finds the new handler. Without that, code that stops the timers,
/// clears the handler and then frees what the handler holds could race with a late tick that
/// allocates into what was just swept. The running CPU is not waited for: a handler that
/// replaces itself is still on its own stack.
pub fn set_timer_handler(handler: Option<fn()>) {
    TIMER_HANDLER.store(handler.map_or(core::ptr::null_mut(), |h| h as *mut ()), Ordering::SeqCst);
    let me = percpu::cpu_id() as usize;
    for (cpu, running) in TIMER_HANDLER_RUNNING.iter().enumerate() {
        while cpu != me && running.load(Ordering::SeqCst) != 0 {
            core::hint::spin_loop();
        }
    }
}

/// Calls the installed timer handler, counted in this CPU's [`TIMER_HANDLER_RUNNING`] for
/// [`set_timer_handler`] to wait on. The count is raised before the handler is read (both
/// SeqCst): a setter that stored after this read sees the count and waits.
fn run_timer_handler() {
    let running = &TIMER_HANDLER_RUNNING[percpu::cpu_id() as usize];
    running.fetch_add(1, Ordering::SeqCst);
    let p = TIMER_HANDLER.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: `TIMER_HANDLER` only holds null or a `fn()` stored by `set_timer_handler`.
        let handler = unsafe { core::mem::transmute::<*mut (), fn()>(p) };
        handler();
    }
    running.fetch_sub(1, Ordering::SeqCst);
}

/// The installed timer handler.
pub fn timer_handler() -> Option<fn()> {
    let p = TIMER_HANDLER.load(Ordering::Acquire);
    // SAFETY: `TIMER_HANDLER` only holds null or a `fn()` stored by `set_timer_handler`.
    (!p.is_null()).then(|| unsafe { core::mem::transmute::<*mut (), fn()>(p) })
}

/// Starts the periodic timer at about `hz` interrupts per second; returns the exact rate the
/// PIT's integer divisor gives.
pub fn start_timer(hz: u32) -> Result<u32, TimerError> {
    if hz < MIN_TIMER_HZ {
        return Err(TimerError::TooSlow(hz));
    }
    if hz > MAX_TIMER_HZ {
        return Err(TimerError::TooFast(hz));
    }
    let divisor = (PIT_HZ + hz / 2) / hz;
    let divisor = divisor.clamp(1, 65535);
    x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: 0x43 is the PIT mode register and 0x40 channel 0's data port; channel 0,
        // lobyte/hibyte access, mode 2 (rate generator) makes IRQ 0 fire every `divisor` input
        // clocks. Nothing else in the kernel programs the PIT.
        unsafe {
            Port::<u8>::new(0x43).write(0b0011_0100);
            Port::<u8>::new(0x40).write(divisor as u8);
            Port::<u8>::new(0x40).write((divisor >> 8) as u8);
        }
        pic::set_masked(TIMER_IRQ, false);
    });
    let actual = PIT_HZ / divisor;
    TIMER_HZ.store(actual, Ordering::Relaxed);
    Ok(actual)
}

/// Stops timer interrupts (masks IRQ 0). The handler stays installed.
pub fn stop_timer() {
    pic::set_masked(TIMER_IRQ, true);
    TIMER_HZ.store(0, Ordering::Relaxed);
}

/// The running timer's rate, or 0 when stopped.
pub fn timer_hz() -> u32 {
    TIMER_HZ.load(Ordering::Relaxed)
}

/// Timer interrupts taken since boot.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// The timer's configuration, saved by the test harness around each test.
#[derive(Clone, Copy)]
pub struct TimerState {
    handler: Option<fn()>,
    hz: u32,
}

pub fn timer_state() -> TimerState {
    TimerState { handler: timer_handler(), hz: timer_hz() }
}

/// Puts the timer back as `state` describes it.
pub fn restore_timer_state(state: TimerState) {
    set_timer_handler(state.handler);
    if state.hz == 0 {
        stop_timer();
    } else if state.hz != timer_hz() {
        // The rate was accepted before, so it is accepted again.
        let _ = start_timer(state.hz);
    }
}

/// Cleans up after code abandoned in the middle of an interrupt handler (the test harness after
/// a failed test): unblocks the PIC and sets the nesting count back to `irq_depth`.
pub fn recover_after_abort(irq_depth: u32) {
    pic::eoi_all_in_service();
    percpu::reset_irq_depth(irq_depth);
    // A handler abandoned mid-way never lowered its count; the harness runs tests in thread
    // context, where none runs on this CPU.
    TIMER_HANDLER_RUNNING[percpu::cpu_id() as usize].store(0, Ordering::SeqCst);
}

extern "x86-interrupt" fn timer_interrupt(_frame: InterruptStackFrame) {
    percpu::irq_enter();
    TICKS.fetch_add(1, Ordering::Relaxed);
    run_timer_handler();
    pic::eoi(TIMER_IRQ);
    percpu::irq_exit();
}

/// Linux's `request_irq` for a legacy PIC line (1..15, not the timer's 0): `handler` runs in
/// interrupt context, with interrupts disabled, on the boot CPU, before the EOI; the line is
/// unmasked.
pub fn request_irq(irq: u8, handler: fn()) {
    assert!((1..16).contains(&irq), "request_irq({irq}): legacy lines are 1..15 (0 is the timer)");
    IRQ_HANDLERS[irq as usize].store(handler as *mut (), Ordering::Release);
    pic::set_masked(irq, false);
}

/// A legacy line fired: its driver's handler, or a complaint if nobody asked for it.
fn legacy_irq(irq: u8) {
    percpu::irq_enter();
    let h = IRQ_HANDLERS[irq as usize].load(Ordering::Acquire);
    if !h.is_null() {
        // SAFETY: `IRQ_HANDLERS` only holds null or a `fn()` stored by `request_irq`.
        let handler = unsafe { core::mem::transmute::<*mut (), fn()>(h) };
        handler();
        pic::eoi(irq);
        percpu::irq_exit();
        return;
    }
    // IRQ 7 and 15 are also what the PIC raises for a spurious interrupt (a request withdrawn
    // before the CPU acknowledged it); those are not in service and must not get an EOI
    // (for 15, the master still needs one for the cascade line).
    if (irq == 7 || irq == 15) && pic::in_service() & (1 << irq) == 0 {
        if irq == 15 {
            pic::eoi(2);
        }
    } else {
        crate::warn!("arch: unexpected IRQ {irq} (vector {})", pic::MASTER_VECTOR + irq);
        pic::eoi(irq);
    }
    percpu::irq_exit();
}

macro_rules! irq_handlers {
    ($($name:ident = $irq:literal),* $(,)?) => {
        $(extern "x86-interrupt" fn $name(_frame: InterruptStackFrame) { legacy_irq($irq) })*
        const OTHER_IRQS: &[(u8, extern "x86-interrupt" fn(InterruptStackFrame))] = &[$(($irq, $name)),*];
    };
}

irq_handlers!(
    irq1 = 1,
    irq2 = 2,
    irq3 = 3,
    irq4 = 4,
    irq5 = 5,
    irq6 = 6,
    irq7 = 7,
    irq8 = 8,
    irq9 = 9,
    irq10 = 10,
    irq11 = 11,
    irq12 = 12,
    irq13 = 13,
    irq14 = 14,
    irq15 = 15,
);

/// The local APIC timer of any CPU: the same handler as the PIT's (`set_timer_handler`).
extern "x86-interrupt" fn lapic_timer_interrupt(_frame: InterruptStackFrame) {
    percpu::irq_enter();
    super::apic::count_timer_tick(percpu::cpu_id() as usize);
    run_timer_handler();
    super::apic::eoi();
    percpu::irq_exit();
}

/// The APIC's spurious vector: no EOI (the SDM says so), nothing to do.
extern "x86-interrupt" fn spurious_apic_interrupt(_frame: InterruptStackFrame) {}

/// Fills the PIC's and the local APIC's vectors in the IDT.
pub(super) fn install(idt: &mut InterruptDescriptorTable) {
    idt[super::apic::TIMER_VECTOR].set_handler_fn(lapic_timer_interrupt);
    idt[super::apic::CALL_FUNCTION_VECTOR].set_handler_fn(super::smp_call::call_function_interrupt);
    idt[super::apic::SPURIOUS_VECTOR].set_handler_fn(spurious_apic_interrupt);
    idt[super::irq_work::IRQ_WORK_VECTOR].set_handler_fn(super::irq_work::irq_work_interrupt);
    idt[pic::MASTER_VECTOR].set_handler_fn(timer_interrupt);
    for &(irq, handler) in OTHER_IRQS {
        idt[pic::MASTER_VECTOR + irq].set_handler_fn(handler);
    }
}
