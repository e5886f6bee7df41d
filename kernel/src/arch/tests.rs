//! In-kernel tests of the arch layer (`cargo run -- --test arch::`).

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::VirtAddr;

use super::interrupts::{self, TimerError};
use super::{cpu, exceptions, fault, gdt, percpu};

/// A fixed buffer to format into (fault descriptions).
struct Buf {
    bytes: [u8; 256],
    len: usize,
}

impl Buf {
    fn new() -> Self {
        Buf { bytes: [0; 256], len: 0 }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("<invalid utf-8>")
    }
}

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn describe_default(addr: u64) -> Buf {
    let mut b = Buf::new();
    fault::describe_raw_default(addr, &mut b);
    b
}

crate::ktest!(
    fn cpu_features_are_on() {
        assert!(cpu::nx_enabled(), "EFER.NXE is off");
        assert!(cpu::write_protect_enabled(), "CR0.WP is off");
    }
);

crate::ktest!(
    fn tables_are_loaded() {
        let idtr = x86_64::instructions::tables::sidt();
        assert_eq!(Some(idtr.base.as_u64()), exceptions::idt_addr(), "IDTR does not point at our IDT");
        let tss = gdt::tss().expect("TSS set up");
        let ists = tss.interrupt_stack_table; // copied out: the TSS is packed
        for (i, ist) in ists.iter().take(3).enumerate() {
            assert!(ist.as_u64() != 0 && ist.as_u64() % 16 == 0, "IST {i} not a 16-byte aligned stack top");
        }
        let sel = gdt::selectors().expect("GDT set up");
        assert_eq!(
            <x86_64::instructions::segmentation::CS as x86_64::instructions::segmentation::Segment>::get_reg(
            ),
            sel.code
        );
        let tr: u16;
        // SAFETY: `str` only reads the task register.
        unsafe { core::arch::asm!("str {:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
        assert_eq!(tr, sel.tss.0, "TR does not hold our TSS selector");
    }
);

crate::ktest!(
    fn percpu_reaches_this_cpu() {
        assert!(!interrupts::irqs_disabled(), "tests run with interrupts enabled");
        x86_64::instructions::interrupts::without_interrupts(|| assert!(interrupts::irqs_disabled()));
        assert_eq!(percpu::cpu_id(), 0);
        assert!(!percpu::in_interrupt(), "thread context counted as interrupt context");
        assert_eq!(percpu::this().irq_depth(), 0);
    }
);

crate::ktest!(
    fn rdtsc_advances() {
        let a = super::rdtsc();
        let mut x = 0u64;
        for i in 0..1000 {
            x = core::hint::black_box(x + i);
        }
        let b = super::rdtsc();
        assert!(b > a, "TSC did not advance: {a} then {b}");
    }
);

crate::ktest!(
    fn timer_rates_are_checked() {
        let hz_before = interrupts::timer_hz();
        assert_eq!(interrupts::start_timer(0), Err(TimerError::TooSlow(0)));
        assert_eq!(interrupts::start_timer(18), Err(TimerError::TooSlow(18)));
        assert_eq!(interrupts::start_timer(1_000_000), Err(TimerError::TooFast(1_000_000)));
        assert_eq!(interrupts::timer_hz(), hz_before, "a refused rate changed the timer");
    }
);

crate::ktest!(
    fn timer_ticks_in_interrupt_context() {
        static TICKS: AtomicU64 = AtomicU64::new(0);
        static OUTSIDE_IRQ: AtomicBool = AtomicBool::new(false);
        fn tick() {
            if !super::in_interrupt() {
                OUTSIDE_IRQ.store(true, Ordering::Relaxed);
            }
            TICKS.fetch_add(1, Ordering::Relaxed);
        }
        // The timer is shared: put back whatever ran before (the boot may run one).
        let saved = interrupts::timer_state();
        interrupts::set_timer_handler(Some(tick));
        let before = interrupts::ticks();
        let hz = interrupts::start_timer(2000).expect("2000 Hz is valid");
        assert!((1990..=2010).contains(&hz), "PIT divisor gave {hz} Hz");
        // A generous bound in TSC cycles (seconds at any realistic TSC rate), not a timing test.
        let deadline = super::rdtsc() + 20_000_000_000;
        while TICKS.load(Ordering::Relaxed) < 10 && super::rdtsc() < deadline {
            core::hint::spin_loop();
        }
        interrupts::stop_timer();
        interrupts::set_timer_handler(None);
        let n = TICKS.load(Ordering::Relaxed);
        assert!(n >= 10, "only {n} timer ticks arrived");
        assert!(interrupts::ticks() - before >= n, "global tick count lags the handler's");
        assert!(!OUTSIDE_IRQ.load(Ordering::Relaxed), "timer handler ran with in_interrupt() false");
        assert!(!super::in_interrupt());
        // Stopped means stopped.
        assert!(super::pic::is_masked(0), "IRQ 0 still unmasked after stop_timer");
        let after = interrupts::ticks();
        for _ in 0..100_000 {
            core::hint::spin_loop();
        }
        assert!(interrupts::ticks() - after <= 1, "ticks keep arriving after stop_timer");
        interrupts::restore_timer_state(saved);
    }
);

crate::ktest!(
    fn default_describer_names_regions() {
        let check = |addr: u64, want: &str| {
            let b = describe_default(addr);
            assert!(b.as_str().contains(want), "{addr:#x} described as `{}`, expected `{want}`", b.as_str());
        };
        check(0, "null page");
        check(0xff8, "null page");
        check(0x0000_8000_0000_0000, "non-canonical");
        check(0x1234_5000, "user half");
        check(cpu_features_are_on as fn() as usize as u64, "kernel image");
        let local = 0u64;
        check(core::hint::black_box(&local) as *const u64 as u64, "boot kernel stack");
        let (bottom, _) = fault::boot_stack();
        check(bottom - 8, "guard page below the boot kernel stack");
        check(crate::mm::layout::VMALLOC_START + 4096, "vmalloc range");
    }
);

crate::ktest!(
    fn registered_describer_is_used() {
        fn test_describer(addr: VirtAddr, w: &mut dyn Write) {
            let _ = write!(w, "test describer saw {:#x}", addr.as_u64());
        }
        let previous = fault::swap_address_describer(None);
        fault::set_address_describer(test_describer);
        let mut b = Buf::new();
        fault::describe(VirtAddr::new(0x1000), &mut b);
        fault::swap_address_describer(previous);
        assert_eq!(b.as_str(), "test describer saw 0x1000");
    }
);

crate::ktest!(
    fn error_codes_decode() {
        let mut b = Buf::new();
        let _ = write!(b, "{}", fault::PfError(0b1_0001));
        assert_eq!(b.as_str(), "protection violation on a present page, instruction fetch, supervisor mode");
        let mut b = Buf::new();
        let _ = write!(b, "{}", fault::PfError(0b0110));
        assert_eq!(b.as_str(), "page not present, write, user mode");
        let mut b = Buf::new();
        let _ = write!(b, "{}", fault::SelectorError((50 << 3) | 2));
        assert!(b.as_str().starts_with("IDT vector 50"), "{}", b.as_str());
    }
);
