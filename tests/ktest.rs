//! Boots the in-kernel test harness (`test`, `test=NAME`) and checks its report.

mod common;

use common::{boot_smp, boot_with, expect_line, expect_status};
use memkernel::Status;

/// The closing `N passed, M failed` line (the last one in the log).
fn summary(serial: &str) -> Option<(u32, u32)> {
    serial.lines().rev().find_map(|l| {
        let (p, f) = l.trim().split_once(" passed, ")?;
        Some((p.parse().ok()?, f.strip_suffix(" failed")?.parse().ok()?))
    })
}

/// The whole suite on the boot CPU alone (`tests/kernel_suite.rs` boots it on 4 CPUs and lists
/// every test's result).
#[test]
fn in_kernel_suite_passes_on_1_cpu() {
    suite_passes(1);
}

fn suite_passes(cpus: u32) {
    let out = boot_smp("test", "1G", false, cpus);
    expect_status(&out, Status::Success, &format!("in-kernel test suite on {cpus} CPUs"));
    expect_line(&out, &format!("smp: Brought up 1 node, {cpus} CPU"), "bring-up");
    let (passed, failed) = summary(&out.serial).unwrap_or_else(|| panic!("no summary line:\n{}", out.serial));
    assert!(passed > 0 && failed == 0, "summary {passed} passed, {failed} failed:\n{}", out.serial);
    let ok_lines = out.serial.lines().filter(|l| l.starts_with("test ") && l.ends_with(" ... ok")).count();
    assert_eq!(ok_lines as u32, passed, "`... ok` lines do not match the summary:\n{}", out.serial);
    assert!(!out.serial.contains("... FAILED"), "a test failed:\n{}", out.serial);
    // The deliberately failing self-tests stay out of the normal suite.
    assert!(!out.serial.contains("harness_selftest_fail"), "explicit tests ran:\n{}", out.serial);
}

/// The page allocator tests again above 4 GiB (so ZONE_NORMAL exists and is exhausted too) and
/// through UEFI firmware, whose memory map differs from the BIOS one.
#[test]
fn page_allocator_suite_passes_with_zone_normal_under_uefi() {
    let out = boot_with("test=mm::tests::page_alloc", "5G", true);
    expect_status(&out, Status::Success, "page allocator tests, 5G UEFI");
    let (passed, failed) = summary(&out.serial).unwrap_or_else(|| panic!("no summary line:\n{}", out.serial));
    assert!(passed >= 10 && failed == 0, "summary {passed} passed, {failed} failed:\n{}", out.serial);
    assert!(
        out.serial.contains("  Normal   [mem 0x0000000100000000-"),
        "no ZONE_NORMAL above 4 GiB:\n{}",
        out.serial
    );
}

/// The kmalloc tests with Linux's heap auto-initialisation on (`init_on_alloc=1
/// init_on_free=on`, `kstrtobool` values): every path zeroes and everything else still holds.
#[test]
fn kmalloc_suite_passes_with_init_on_alloc_and_init_on_free() {
    let out = boot_with("test=mm::tests::kmalloc init_on_alloc=1 init_on_free=on", "1G", false);
    expect_status(&out, Status::Success, "kmalloc tests with init_on_alloc=1 init_on_free=on");
    expect_line(&out, "mem auto-init: stack:off, heap alloc:on, heap free:on", "auto-init report");
    let (passed, failed) = summary(&out.serial).unwrap_or_else(|| panic!("no summary line:\n{}", out.serial));
    assert!(passed >= 10 && failed == 0, "summary {passed} passed, {failed} failed:\n{}", out.serial);
}

/// The whole suite with Linux's fault injection failing `percent`% of the slab and page
/// allocations (`GFP_KERNEL` and order 0 included) on `cpus` CPUs: the kernel handles every
/// failure, the stress mixes lose nothing, and only the tests marked `#[needs_memory]` (which
/// check allocation results) run with it paused.
fn suite_passes_with_fault_injection(cpus: u32, percent: u32) {
    let cmdline = format!(
        "test stress_ops=50000 \
         failslab=1,{percent},0,-1 failslab.ignore-gfp-wait=N failslab.verbose=0 \
         fail_page_alloc=1,{percent},0,-1 fail_page_alloc.ignore-gfp-wait=N fail_page_alloc.min-order=0 \
         fail_page_alloc.verbose=0"
    );
    let what = format!("in-kernel suite on {cpus} CPUs with fault injection at {percent}%");
    let out = boot_smp(&cmdline, "1G", false, cpus);
    expect_status(&out, Status::Success, &what);
    let on = format!("fault injection: failslab on: probability {percent} interval 1 times -1");
    expect_line(&out, &on, "failslab= parsed");
    expect_line(
        &out,
        &format!("fault injection: fail_page_alloc on: probability {percent}"),
        "fail_page_alloc= parsed",
    );
    let (passed, failed) = summary(&out.serial).unwrap_or_else(|| panic!("no summary line:\n{}", out.serial));
    assert!(passed > 80 && failed == 0, "{what}: {passed} passed, {failed} failed:\n{}", out.serial);
    // The mixes ran with failures injected, and got everything back (the tests assert it).
    let refused: u64 = out
        .serial
        .lines()
        .filter_map(|l| l.split(" allocations refused").next()?.rsplit(", ").next()?.parse::<u64>().ok())
        .sum();
    assert!(refused > 100, "{what}: the stress mixes saw no injected failure:\n{}", out.serial);
}

#[test]
fn in_kernel_suite_passes_on_4_cpus_with_failslab_and_fail_page_alloc_at_5_percent() {
    suite_passes_with_fault_injection(4, 5);
}

#[test]
fn in_kernel_suite_passes_on_1_cpu_with_failslab_and_fail_page_alloc_at_5_percent() {
    suite_passes_with_fault_injection(1, 5);
}

/// Every allocation fails: each test not marked `#[needs_memory]` copes with nothing at all.
#[test]
fn in_kernel_suite_passes_on_1_cpu_with_every_allocation_failed() {
    suite_passes_with_fault_injection(1, 100);
}

/// The demo workload with half of its allocations failed: it reports each failure and ends.
#[test]
fn demo_completes_with_fault_injection_at_50_percent() {
    let cmdline = "failslab=1,50,0,-1 failslab.ignore-gfp-wait=N fail_page_alloc=1,50,0,-1 \
        fail_page_alloc.ignore-gfp-wait=N fail_page_alloc.min-order=0";
    let out = boot_smp(cmdline, "1G", false, 1);
    expect_status(&out, Status::Success, "demo with fault injection at 50%");
    expect_line(&out, "demo finished", "demo end");
    expect_line(&out, "FAULT_INJECTION: forcing a failure.", "Linux's report of an injected failure");
    expect_line(&out, "name failslab, interval 1, probability 50, space 0, times -1", "the attributes");
}

#[test]
fn filter_selects_tests_by_name() {
    let out = boot_with("test=arch::tests::rdtsc", "64M", false);
    expect_status(&out, Status::Success, "filtered suite");
    expect_line(&out, "test arch::tests::rdtsc_advances ... ok", "filtered suite");
    assert_eq!(summary(&out.serial), Some((1, 0)), "{}", out.serial);
    // Filtered counts go on a line of their own, never on the summary line.
    assert!(
        out.serial.lines().any(|l| l.trim().ends_with(" filtered out") && !l.contains("passed")),
        "no `N filtered out` line:\n{}",
        out.serial
    );
}

#[test]
fn failing_tests_are_reported_and_the_harness_goes_on() {
    let out = boot_with("test=harness_selftest_fail", "1G", false);
    expect_status(&out, Status::KernelFailure, "harness self-test failures");
    for (name, why) in [
        ("panic", "deliberate panic from the harness self-test"),
        ("assert", "deliberately wrong arithmetic"),
        ("page_fault", "EXCEPTION: PAGE FAULT (#PF, vector 14)"),
        ("in_timer_irq", "deliberate panic in the timer interrupt handler"),
        ("stack_overflow", "EXCEPTION: DOUBLE FAULT (#DF, vector 8)"),
    ] {
        let full = format!("ktest::selftest::harness_selftest_fail_{name}");
        expect_line(&out, &format!("test {full} ... FAILED"), "failing self-test");
        expect_line(&out, &format!("    {full}\n"), "failures list");
        expect_line(&out, why, "failure reason");
    }
    expect_line(
        &out,
        "[PANIC] kernel panic in test ktest::selftest::harness_selftest_fail_panic at kernel/src/ktest/selftest.rs:",
        "panic message with test name and location",
    );
    expect_line(&out, "[FAULT]   in test ktest::selftest::harness_selftest_fail_page_fault", "fault report");
    // The per-test leak check: a test that returns holding memory fails, naming cache or zone.
    for leak in
        ["leaks_objects: leaked 1 objects of cache kmalloc-64", "leaks_pages: leaked 4 pages of zone "]
    {
        expect_line(&out, &format!("test ktest::selftest::harness_selftest_fail_{leak}"), "leak report");
    }
    for name in ["leaks_objects", "leaks_pages"] {
        expect_line(&out, &format!("test ktest::selftest::harness_selftest_fail_{name} ... FAILED"), "leak");
    }
    // Sorted last, it runs after every failure and checks the harness restored interrupt state.
    expect_line(&out, "test ktest::selftest::harness_selftest_fail_then_pass ... ok", "recovery");
    assert_eq!(summary(&out.serial), Some((1, 7)), "{}", out.serial);
}
