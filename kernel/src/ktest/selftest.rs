//! The harness's own tests. The `#[explicit]` ones fail on purpose and run only with
//! `test=harness_selftest_fail` (the host test `tests/ktest.rs` boots that and checks that each
//! is reported FAILED by name and that the harness kept going).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch;
use crate::ktest;

ktest!(
    fn harness_selftest_pass() {
        assert_eq!(core::hint::black_box(2) + 2, 4);
    }
);

ktest!(
    fn names_drop_the_crate_prefix() {
        let me = ktest::tests()
            .iter()
            .find(|t| t.fn_name() == "names_drop_the_crate_prefix")
            .expect("this test is registered");
        assert_eq!(me.name(), "ktest::selftest::names_drop_the_crate_prefix");
        assert_eq!(ktest::current_test(), Some(me.name()));
    }
);

ktest!(
    fn filters_select_as_documented() {
        let find = |n: &str| ktest::tests().iter().find(|t| t.fn_name() == n).expect("registered");
        let pass = find("harness_selftest_pass");
        let fail = find("harness_selftest_fail_panic");
        assert!(
            pass.selected_by(None) && pass.selected_by(Some("selftest_pa")) && !pass.selected_by(Some("zzz"))
        );
        assert!(fail.explicit && !fail.selected_by(None) && !fail.selected_by(Some("")));
        assert!(!fail.selected_by(Some("fail_panic")), "explicit tests need a prefix of their name");
        assert!(
            fail.selected_by(Some("harness_selftest_fail")) && fail.selected_by(Some("ktest::selftest::"))
        );
    }
);

ktest!(
    fn fault_scenarios_are_registered() {
        for name in ["null_deref", "stack_overflow"] {
            assert!(ktest::faults().iter().any(|f| f.name == name), "scenario {name} missing");
        }
    }
);

ktest!(
    #[explicit]
    fn harness_selftest_fail_panic() {
        panic!("deliberate panic from the harness self-test");
    }
);

ktest!(
    #[explicit]
    fn harness_selftest_fail_assert() {
        assert_eq!(core::hint::black_box(2) + 2, 5, "deliberately wrong arithmetic");
    }
);

ktest!(
    #[explicit]
    fn harness_selftest_fail_page_fault() {
        // SAFETY: not safe at all, on purpose: reads the unmapped null page to raise #PF; the
        // harness abandons the test from the page fault handler.
        unsafe { core::arch::asm!("mov rax, [{}]", in(reg) 0x18u64, out("rax") _, options(nostack)) };
    }
);

ktest!(
    #[explicit]
    fn harness_selftest_fail_stack_overflow() {
        // A double fault on the IST stack: the harness must get back to the boot stack, which
        // the overflow never wrote below its guard page.
        #[inline(never)]
        fn recurse(depth: u64) -> u64 {
            let frame = core::hint::black_box([depth; 64]);
            if core::hint::black_box(depth) == u64::MAX {
                return frame[0];
            }
            recurse(depth + 1) + frame[63]
        }
        core::hint::black_box(recurse(0));
    }
);

ktest!(
    #[explicit]
    fn harness_selftest_fail_leaks_objects() {
        // Returns normally but keeps a kmalloc object: the leak check must fail it.
        let p = crate::mm::slab::kmalloc(64, ::mm::GfpFlags::GFP_KERNEL).expect("kmalloc(64)");
        core::hint::black_box(p);
    }
);

ktest!(
    #[explicit]
    fn harness_selftest_fail_leaks_pages() {
        // Keeps an order-2 block: four pages of a zone missing.
        let f = crate::mm::page_alloc::alloc_pages(::mm::GfpFlags::GFP_KERNEL, 2).expect("order 2");
        core::hint::black_box(f);
    }
);

fn panicking_tick() {
    panic!("deliberate panic in the timer interrupt handler");
}

ktest!(
    #[explicit]
    fn harness_selftest_fail_in_timer_irq() {
        // A panic inside an interrupt handler: recovery must EOI the PIC and reset the nesting
        // count, which `harness_selftest_fail_then_pass` (sorted after this one) checks.
        arch::interrupts::set_timer_handler(Some(panicking_tick));
        arch::interrupts::start_timer(1000).expect("1000 Hz is a valid rate");
        let deadline = arch::rdtsc() + 20_000_000_000;
        while arch::rdtsc() < deadline {
            core::hint::spin_loop();
        }
        panic!("the timer never fired");
    }
);

ktest!(
    #[explicit]
    fn harness_selftest_fail_then_pass() {
        // Runs after the failing self-tests: the harness must have put interrupt state back.
        assert!(!arch::in_interrupt(), "interrupt nesting count not reset after an abandoned test");
        assert!(x86_64::instructions::interrupts::are_enabled(), "interrupts not re-enabled");
        let handler = arch::interrupts::timer_handler().map(|f| f as usize);
        assert!(
            handler != Some(panicking_tick as fn() as usize),
            "timer handler of a failed test left installed"
        );
        let saved = arch::interrupts::timer_state();
        static TICKED: AtomicU64 = AtomicU64::new(0);
        fn tick() {
            TICKED.fetch_add(1, Ordering::Relaxed);
        }
        arch::interrupts::set_timer_handler(Some(tick));
        arch::interrupts::start_timer(1000).expect("valid rate");
        let deadline = arch::rdtsc() + 20_000_000_000;
        while TICKED.load(Ordering::Relaxed) < 3 && arch::rdtsc() < deadline {
            core::hint::spin_loop();
        }
        arch::interrupts::restore_timer_state(saved);
        assert!(TICKED.load(Ordering::Relaxed) >= 3, "timer interrupts blocked after an abandoned handler");
    }
);
