//! vmalloc in the booted kernel, seen from the host: a write one byte past a vmalloc area hits
//! its guard page and the fault report names the area, its size and the allocating caller; the
//! large-area test runs on a 512 MiB guest.

mod common;

use common::{boot_with, expect_line, expect_status};
use memkernel::Status;

#[test]
fn overrun_into_the_guard_page_is_reported_with_the_area_and_its_caller() {
    let out = boot_with("fault=vmalloc_guard", "256M", false);
    expect_status(&out, Status::KernelFailure, "vmalloc guard scenario");
    for line in [
        "[FAULT] EXCEPTION: PAGE FAULT (#PF, vector 14)",
        "error code: 0x2 = page not present, write, supervisor mode",
        "= vmalloc guard page: 0 bytes past the end of vmalloc area [0xffffc900",
        "(12288 bytes) allocated at kernel/src/mm/tests/vmalloc.rs:",
    ] {
        expect_line(&out, line, "vmalloc guard page report");
    }
    // The faulting address is the first byte after the 3 mapped pages.
    let report = out.serial.lines().find(|l| l.contains("faulting address (CR2)")).expect("CR2 line");
    let cr2 = report.split("(CR2): ").nth(1).and_then(|r| r.split_whitespace().next()).expect("address");
    let start = report.split("area [").nth(1).and_then(|r| r.split(',').next()).expect("area start");
    let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
    assert_eq!(parse(cr2), parse(start) + 3 * 4096, "{report}");
}

#[test]
fn vmalloc_suite_on_a_512m_guest() {
    let out = boot_with("test=mm::tests::vmalloc", "512M", false);
    expect_status(&out, Status::Success, "vmalloc tests on 512 MiB");
    expect_line(&out, "test mm::tests::vmalloc::large_vmalloc_of_most_free_memory_and_back ... ok", "large");
    expect_line(
        &out,
        "test mm::tests::vmalloc::vmalloc_works_on_physically_scattered_memory ... ok",
        "scattered",
    );
    assert!(!out.serial.contains("... FAILED"), "{}", out.serial);
}
