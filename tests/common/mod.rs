//! Shared helpers of the host integration tests: boot with the log captured, check statuses
//! with the log in the failure message.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use memkernel::{boot, BootOptions, Outcome, Status};

/// Boots `cmdline` with `memory` RAM, BIOS or UEFI, without echoing the log.
pub fn boot_with(cmdline: &str, memory: &str, uefi: bool) -> Outcome {
    boot_smp(cmdline, memory, uefi, 1)
}

/// [`boot_with`] on `smp` virtual CPUs.
pub fn boot_smp(cmdline: &str, memory: &str, uefi: bool, smp: u32) -> Outcome {
    let opts = BootOptions {
        memory: memory.into(),
        uefi,
        smp,
        cmdline: cmdline.into(),
        echo: false,
        // Generous: the machine may be busy (and TCG runs every vCPU as a host thread); a hang
        // still ends the test.
        timeout: Duration::from_secs(if smp > 1 { 600 } else { 180 }),
        ..BootOptions::default()
    };
    boot(&opts).unwrap_or_else(|e| panic!("could not boot `{cmdline}` ({memory}): {e}"))
}

/// Panics with the serial log unless the boot ended with `want`.
pub fn expect_status(outcome: &Outcome, want: Status, what: &str) {
    assert_eq!(
        outcome.status, want,
        "{what}: unexpected status ({}); serial log:\n{}",
        outcome.status, outcome.serial
    );
}

/// Panics with the serial log unless it contains `needle`.
pub fn expect_line(outcome: &Outcome, needle: &str, what: &str) {
    assert!(
        outcome.serial.contains(needle),
        "{what}: the log lacks `{needle}`; serial log:\n{}",
        outcome.serial
    );
}
