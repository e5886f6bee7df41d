//! `cargo run -- --soak OPS`: the mixed workload on every CPU with fault injection and timer
//! `GFP_ATOMIC` work must recover every page and object; a leak must fail it.

mod common;

use common::{boot_smp, expect_line, expect_status};
use memkernel::Status;

/// 4M operations on 4 CPUs (1M per CPU), fault injection at 1%, every timer doing GFP_ATOMIC
/// work: nothing damaged, nothing lost, /proc consistent throughout.
#[test]
fn soak_of_4m_operations_on_4_cpus_recovers_everything() {
    let out = boot_smp("soak=4000000", "1G", false, 4);
    expect_status(&out, Status::Success, "soak");
    expect_line(&out, "soak: 4 CPUs x 1000000 operations", "per-CPU count");
    expect_line(&out, "fault injection: failslab on: probability 1", "failslab on");
    expect_line(&out, "fault injection: fail_page_alloc on: probability 1", "fail_page_alloc on");
    expect_line(&out, " 0 damaged, 0 refused frees; 0 of ", "no damage");
    expect_line(
        &out,
        "soak: free pages recovered exactly, slab objects recovered exactly, vmalloc areas recovered exactly",
        "recovery",
    );
    expect_line(&out, "soak: passed", "verdict");
    let line = out.serial.lines().find(|l| l.contains(" failures injected);")).expect("the summary line");
    let injected: u64 = line
        .split(" failures injected")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no injected count in `{line}`"));
    assert!(injected > 1000, "fault injection barely ran: {line}");
    assert!(out.serial.contains("soak:  50% ("), "no progress lines:\n{}", out.serial);
}

/// The same on the boot CPU alone (no cross-CPU frees; the timer's GFP_ATOMIC work and fault
/// injection still interleave with the workload).
#[test]
fn soak_of_2m_operations_on_1_cpu_recovers_everything() {
    let out = boot_smp("soak=2000000", "1G", false, 1);
    expect_status(&out, Status::Success, "soak on 1 CPU");
    expect_line(&out, "soak: 1 CPU x 2000000 operations", "per-CPU count");
    expect_line(&out, " 0 damaged, 0 refused frees; 0 of ", "no damage");
    expect_line(&out, "soak: passed", "verdict");
}

/// The soak's own verdict: one object kept on purpose (`soak_selftest=leak`) fails the run.
#[test]
fn a_soak_that_loses_an_object_fails() {
    let out = boot_smp("soak=200000 soak_selftest=leak", "1G", false, 2);
    expect_status(&out, Status::KernelFailure, "soak with a deliberate leak");
    expect_line(&out, "slab objects DIFFER", "the leak is seen");
    expect_line(&out, "soak: FAILED", "verdict");
}
