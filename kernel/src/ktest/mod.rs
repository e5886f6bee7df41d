//! The in-kernel test harness (`test` / `test=NAME` on the command line) and fault scenarios
//! (`fault=NAME`).
//!
//! Tests register themselves, without a central list, by placing a [`KTest`] record in the
//! `ktests` linker section (`#[used(linker)]` keeps it through `--gc-sections`); lld defines
//! `__start_ktests`/`__stop_ktests` around that section because its name is a C identifier.
//!
//! ```ignore
//! crate::ktest!(fn double_free_is_reported() { ... });          // runs in every `test` boot
//! crate::ktest!(#[explicit] fn harness_selftest_fail_x() { ... }); // only when a filter names it
//! crate::ktest!(#[needs_memory] fn zone_fallback() { ... });       // no fault injection in it
//! crate::kfault!(fn null_deref() { ... });                      // `fault=null_deref`
//! ```
//!
//! A test passes when its function returns. A panic or a CPU exception inside it is reported,
//! the test is abandoned and counted as failed, and the harness goes on with the next one (see
//! `catch`). Limits of that recovery: the abandoned test's destructors do not run, so locks it
//! held stay locked and memory it allocated is leaked; the harness restores the interrupt flag,
//! the interrupt nesting count, the PIC (EOI) and the timer configuration, nothing else. An NMI
//! or machine check stays "in progress" for the CPU (no `iretq` happened).

mod catch;
mod leak;
mod selftest;

use core::sync::atomic::{AtomicPtr, Ordering};

use crate::arch::{self, fault, interrupts, qemu};
use crate::kprintln;

/// One registered test. Build it with [`ktest!`](crate::ktest!), not by hand.
pub struct KTest {
    /// `module_path!()::fn_name`, crate name included (see [`KTest::name`]).
    pub path: &'static str,
    pub func: fn(),
    /// Run only when the filter names it (tests that must fail, for the harness's own tests).
    pub explicit: bool,
    /// The test checks what allocations return, so it needs them to succeed: fault injection
    /// (`failslab=`, `fail_page_alloc=`) is suspended while it runs.
    pub needs_memory: bool,
}

impl KTest {
    /// The name tests are reported and filtered by: the path without the `kernel::` prefix,
    /// e.g. `mm::buddy::double_free`.
    pub fn name(&self) -> &'static str {
        self.path.strip_prefix("kernel::").unwrap_or(self.path)
    }

    /// The test function's own name.
    pub fn fn_name(&self) -> &'static str {
        self.path.rsplit("::").next().unwrap_or(self.path)
    }

    /// Whether a `test[=filter]` run includes this test. Ordinary tests: the name contains the
    /// filter (no filter: all). Explicit tests: the function name or the full name starts with a
    /// non-empty filter, so `test=harness_selftest_fail` selects them and `test` never does.
    pub fn selected_by(&self, filter: Option<&str>) -> bool {
        match filter {
            None => !self.explicit,
            Some(f) if self.explicit => {
                !f.is_empty() && (self.fn_name().starts_with(f) || self.name().starts_with(f))
            }
            Some(f) => self.name().contains(f),
        }
    }
}

/// One registered fault scenario. Build it with [`kfault!`](crate::kfault!).
pub struct KFault {
    /// The scenario's name as `fault=NAME` gives it (the function name; `-` matches `_`).
    pub name: &'static str,
    pub path: &'static str,
    pub func: fn(),
}

/// Registers a kernel test: `ktest!(fn name() { body })`, or `ktest!(#[explicit] fn ...)` for a
/// test that runs only when a `test=` filter names it.
#[macro_export]
macro_rules! ktest {
    (#[explicit] fn $name:ident() $body:block) => {
        $crate::ktest!(@register true, false, $name, $body);
    };
    (#[needs_memory] fn $name:ident() $body:block) => {
        $crate::ktest!(@register false, true, $name, $body);
    };
    (fn $name:ident() $body:block) => {
        $crate::ktest!(@register false, false, $name, $body);
    };
    (@register $explicit:expr, $needs_memory:expr, $name:ident, $body:block) => {
        fn $name() $body
        const _: () = {
            #[used(linker)]
            #[link_section = "ktests"]
            static TEST: $crate::ktest::KTest = $crate::ktest::KTest {
                path: concat!(module_path!(), "::", stringify!($name)),
                func: $name,
                explicit: $explicit,
                needs_memory: $needs_memory,
            };
        };
    };
}

/// Registers a fault scenario: `kfault!(fn name() { body })`, booted with `fault=name`. The body
/// is expected to end in a fatal fault report; returning from it is a failure.
#[macro_export]
macro_rules! kfault {
    (fn $name:ident() $body:block) => {
        fn $name() $body
        const _: () = {
            #[used(linker)]
            #[link_section = "kfaults"]
            static FAULT: $crate::ktest::KFault = $crate::ktest::KFault {
                name: stringify!($name),
                path: module_path!(),
                func: $name,
            };
        };
    };
}

// Only the addresses of these symbols are used (to build slices of Rust types), so the C ABI
// lint about `&str` fields does not apply.
#[allow(improper_ctypes)]
extern "C" {
    // Defined by the linker around the sections the macros fill.
    static __start_ktests: KTest;
    static __stop_ktests: KTest;
    static __start_kfaults: KFault;
    static __stop_kfaults: KFault;
}

/// Every registered test, in link order.
pub fn tests() -> &'static [KTest] {
    // SAFETY: the linker places every `KTest` static of the `ktests` section contiguously
    // between these two symbols (they have the same type, size a multiple of their alignment,
    // so no padding); the section holds nothing else.
    unsafe {
        let start = core::ptr::addr_of!(__start_ktests);
        let end = core::ptr::addr_of!(__stop_ktests);
        core::slice::from_raw_parts(start, (end as usize - start as usize) / size_of::<KTest>())
    }
}

/// Every registered fault scenario.
pub fn faults() -> &'static [KFault] {
    // SAFETY: as in `tests`, for the `kfaults` section.
    unsafe {
        let start = core::ptr::addr_of!(__start_kfaults);
        let end = core::ptr::addr_of!(__stop_kfaults);
        core::slice::from_raw_parts(start, (end as usize - start as usize) / size_of::<KFault>())
    }
}

/// The test running now, if any (read by the fatal paths).
static CURRENT: AtomicPtr<KTest> = AtomicPtr::new(core::ptr::null_mut());
/// Where a failing test is abandoned to. Only `run_one` and `abandon_current_test` touch it.
static mut CONTEXT: catch::Context = catch::Context::new();

/// Name of the test running now (the panic handler prints it).
pub fn current_test() -> Option<&'static str> {
    let t = CURRENT.load(Ordering::Acquire);
    // SAFETY: `CURRENT` holds null or a pointer into the `'static` test registry.
    (!t.is_null()).then(|| unsafe { &*t }.name())
}

/// Called on the fatal paths (panic handler, exception reports). If a test is running, marks it
/// failed and abandons it; the harness continues with the next test. Returns if none is running.
pub fn abandon_current_test() {
    if CURRENT.swap(core::ptr::null_mut(), Ordering::AcqRel).is_null() {
        return;
    }
    // SAFETY: `CURRENT` was non-null, so `run_one` is inside `call_catching` on `CONTEXT` and the
    // test's frames still exist (we are running on top of them, or on an IST stack above them).
    // Clearing `CURRENT` first makes a fault during the jump fatal instead of recursive.
    unsafe { catch::throw(core::ptr::addr_of!(CONTEXT)) }
}

/// Runs one test; `true` if it returned.
fn run_one(test: &'static KTest) -> bool {
    let irq_enabled = x86_64::instructions::interrupts::are_enabled();
    let irq_depth = arch::percpu::this().irq_depth();
    let timer = interrupts::timer_state();
    // Tests that check allocation results run without fault injection; the others run with
    // whatever `failslab=`/`fail_page_alloc=` set, and must pass anyway.
    let _no_faults = test.needs_memory.then(crate::mm::fault_inject::suspend);
    CURRENT.store(test as *const KTest as *mut KTest, Ordering::Release);
    // SAFETY: `CONTEXT` is used by one test at a time (tests do not nest: `run` is only called
    // once, from `kernel_main`), and `abandon_current_test` throws to it only while `CURRENT`
    // is set, i.e. while `test.func` is still running.
    let abandoned = unsafe { catch::call_catching(core::ptr::addr_of_mut!(CONTEXT), test.func as usize) };
    CURRENT.store(core::ptr::null_mut(), Ordering::Release);
    if abandoned != 0 {
        // The fatal path ran with interrupts off, maybe inside an interrupt handler.
        interrupts::recover_after_abort(irq_depth);
        interrupts::restore_timer_state(timer);
        if irq_enabled {
            x86_64::instructions::interrupts::enable();
        }
    }
    abandoned == 0
}

/// The selected test that sorts right after `after` (alphabetical order, like cargo).
fn next_test(filter: Option<&str>, after: Option<&str>) -> Option<&'static KTest> {
    tests()
        .iter()
        .filter(|t| t.selected_by(filter) && after.is_none_or(|a| t.name() > a))
        .min_by_key(|t| t.name())
}

/// Most failed tests listed again in the summary.
const MAX_LISTED_FAILURES: usize = 64;

/// `test[=filter]` mode: runs the selected tests and exits QEMU with success iff none failed.
pub fn run(filter: Option<&str>) -> ! {
    fault::set_fatal_hook(Some(abandon_current_test));
    let all = tests();
    let selected = all.iter().filter(|t| t.selected_by(filter)).count();
    kprintln!("\nrunning {selected} test{}", if selected == 1 { "" } else { "s" });
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut failures: [&str; MAX_LISTED_FAILURES] = [""; MAX_LISTED_FAILURES];
    let mut last = None;
    leak::warm_up();
    while let Some(test) = next_test(filter, last) {
        last = Some(test.name());
        let before = leak::take();
        // An abandoned test leaks by nature (its destructors did not run): not checked again.
        if run_one(test) && leak::check(&before, test.name()) {
            passed += 1;
            kprintln!("test {} ... ok", test.name());
        } else {
            if failed < MAX_LISTED_FAILURES {
                failures[failed] = test.name();
            }
            failed += 1;
            kprintln!("test {} ... FAILED", test.name());
        }
    }
    fault::set_fatal_hook(None);
    if failed > 0 {
        kprintln!("\nfailures:");
        for name in &failures[..failed.min(MAX_LISTED_FAILURES)] {
            kprintln!("    {name}");
        }
    }
    kprintln!();
    if all.len() > selected {
        kprintln!("{} filtered out", all.len() - selected);
    }
    if selected == 0 {
        crate::warn!("ktest: no test matches the filter {:?}", filter.unwrap_or(""));
    }
    kprintln!("{passed} passed, {failed} failed");
    qemu::exit(if failed == 0 { qemu::ExitCode::Success } else { qemu::ExitCode::Failure })
}

/// `fault=NAME` mode: runs the scenario, which should end in a fatal fault report.
pub fn run_fault(name: &str) -> ! {
    let matches = |f: &KFault| {
        f.name.len() == name.len()
            && f.name.bytes().zip(name.bytes()).all(|(a, b)| a == b || (a == b'_' && b == b'-'))
    };
    let Some(scenario) = faults().iter().find(|f| matches(f)) else {
        crate::error!("fault scenario `{name}` does not exist; registered scenarios:");
        for f in faults() {
            kprintln!("    {}", f.name);
        }
        qemu::exit(qemu::ExitCode::Failure)
    };
    kprintln!("fault scenario {} ({}): expecting a fatal fault report", scenario.name, scenario.path);
    (scenario.func)();
    crate::error!("fault scenario {} returned without faulting", scenario.name);
    qemu::exit(qemu::ExitCode::Failure)
}
