//! The in-kernel test suite, listed as cargo lists tests: boots it on 4 CPUs under QEMU and
//! prints one `test NAME ... ok` (or `FAILED`) line per in-kernel test, then cargo's
//! `test result:` line. A custom harness (`harness = false` in Cargo.toml), so that the lines are
//! the output itself rather than captured inside one host test that wraps the boot.
//!
//! A filter argument (`cargo test --test kernel_suite -- NAME`) becomes the kernel's
//! `test=NAME`; `--list` lists nothing (the names exist only in the kernel image).

mod common;

use std::time::Instant;

use memkernel::Status;

const CPUS: u32 = 4;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let cmdline = match filter {
        Some(f) => format!("test={f}"),
        None => "test".to_string(),
    };
    let start = Instant::now();
    let out = common::boot_smp(&cmdline, "1G", false, CPUS);
    let results: Vec<&str> = out
        .serial
        .lines()
        .filter(|l| l.starts_with("test ") && (l.ends_with(" ... ok") || l.ends_with(" ... FAILED")))
        .collect();
    println!("\nrunning {} tests (in the kernel, booted under QEMU on {CPUS} CPUs)", results.len());
    for l in &results {
        println!("{l}");
    }
    let passed = results.iter().filter(|l| l.ends_with(" ... ok")).count();
    let failed = results.len() - passed;
    let mut problems = Vec::new();
    if out.status != Status::Success {
        problems.push(format!("the kernel exited with {}", out.status));
    }
    if !out.serial.contains(&format!("smp: Brought up 1 node, {CPUS} CPUs")) {
        problems.push(format!("not every one of the {CPUS} CPUs came up"));
    }
    let summary = format!("{passed} passed, {failed} failed");
    if !out.serial.lines().any(|l| l.trim() == summary) {
        problems.push(format!("the kernel's summary line is not `{summary}`"));
    }
    if filter.is_none() && (passed == 0 || out.serial.contains("harness_selftest_fail")) {
        problems.push("no test ran, or the deliberately failing self-tests did".to_string());
    }
    let secs = start.elapsed().as_secs_f64();
    if failed > 0 || !problems.is_empty() {
        println!("\nfailures:\n{}\n\nserial log:\n{}", problems.join("\n"), out.serial);
        println!(
            "\ntest result: FAILED. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n"
        );
        std::process::exit(101);
    }
    println!(
        "\ntest result: ok. {passed} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n"
    );
}
