//! Boots fault scenarios (`fault=NAME`): each must print its fatal report and fail the session
//! through the kernel's exit device (not a triple fault, not a hang).

mod common;

use common::{boot_with, expect_line, expect_status};
use memkernel::Status;

fn fault(name: &str, lines: &[&str]) {
    let out = boot_with(&format!("fault={name}"), "1G", false);
    expect_status(&out, Status::KernelFailure, name);
    for line in lines {
        expect_line(&out, line, name);
    }
}

#[test]
fn stack_overflow_is_a_reported_double_fault() {
    fault(
        "stack_overflow",
        &[
            "[FAULT] EXCEPTION: DOUBLE FAULT (#DF, vector 8)",
            "guard page below the boot kernel stack",
            "last page fault address (CR2): ",
        ],
    );
}

#[test]
fn null_page_read_is_a_reported_page_fault() {
    fault(
        "null_deref",
        &[
            "[FAULT] EXCEPTION: PAGE FAULT (#PF, vector 14)",
            "[FAULT]   error code: 0x0 = page not present, read, supervisor mode",
            "[FAULT]   faulting address (CR2): 0x0000000000000000 = null page",
            "[FAULT]   RIP: 0xffff",
            "= kernel image, offset",
        ],
    );
}

#[test]
fn write_to_rodata_faults_with_cr0_wp() {
    fault(
        "write_rodata",
        &["error code: 0x3 = protection violation on a present page, write, supervisor mode"],
    );
}

#[test]
fn executing_the_stack_faults_with_nx() {
    fault("exec-stack", &["= protection violation on a present page, instruction fetch, supervisor mode"]);
}

#[test]
fn non_canonical_access_is_a_general_protection_fault() {
    fault(
        "non_canonical",
        &["[FAULT] EXCEPTION: GENERAL PROTECTION FAULT (#GP, vector 13)", "no selector involved"],
    );
}

#[test]
fn invalid_opcode_is_reported() {
    fault("invalid_opcode", &["[FAULT] EXCEPTION: INVALID OPCODE (#UD, vector 6)"]);
}

#[test]
fn unknown_scenario_lists_the_registered_ones() {
    fault("no_such_scenario", &["fault scenario `no_such_scenario` does not exist", "    null_deref\n"]);
}

#[test]
fn panic_outside_tests_fails_the_boot_with_its_location() {
    fault(
        "panic",
        &[
            "[PANIC] kernel panic at kernel/src/arch/fault_scenarios.rs:",
            ": deliberate panic from a fault scenario",
        ],
    );
}
