//! Shared helpers of the host integration tests: boot with the log captured, check statuses
//! with the log in the failure message.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use memkernel::{boot, BootOptions, Outcome, Status};

/// Boots `cmdline` with `memory` RAM, BIOS or UEFI, without echoing the log.
pub fn boot_with(cmdline: &str, memory: &str, uefi: bool) -> Outcome {
    let opts = BootOptions {
        memory: memory.into(),
        uefi,
        cmdline: cmdline.into(),
        echo: false,
        // Generous: the machine may be busy; a hang still ends the test.
        timeout: Duration::from_secs(180),
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
