//! The runner binary's own behaviour (no kernel boot): missing QEMU, bad options.

use std::process::Command;

fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memkernel"))
}

#[test]
fn missing_qemu_names_the_debian_package_without_a_backtrace() {
    let empty = std::env::temp_dir().join(format!("memkernel-no-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = runner().env("PATH", &empty).env("RUST_BACKTRACE", "1").output().expect("runner starts");
    let _ = std::fs::remove_dir(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(stderr.contains("qemu-system-x86_64 is not installed"), "stderr:\n{stderr}");
    assert!(stderr.contains("`qemu-system-x86`"), "Debian package not named; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "stderr:\n{stderr}");
}

#[test]
fn bad_options_are_explained() {
    for (args, needle) in [
        (&["--memory", "lots"][..], "--memory lots: not a size"),
        (&["--smp", "0"][..], "--smp 0: not a CPU count (at least 1, the boot CPU)"),
        (&["--smp", "17"][..], "--smp 17: more CPUs than the kernel supports (NR_CPUS = 16; use 1 to 16)"),
        (&["--smp", "four"][..], "--smp four: not a CPU count (a number from 1 to 16)"),
        (&["--test", "a", "--fault", "b"][..], "choose one of --bench, --test, --fault"),
        (&["--frobnicate"][..], "unknown option `--frobnicate`"),
    ] {
        let out = runner().args(args).output().expect("runner starts");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: stderr:\n{stderr}");
        assert!(stderr.contains(needle), "{args:?}: stderr lacks `{needle}`:\n{stderr}");
    }
    let help = runner().arg("--help").output().expect("runner starts");
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--memory SIZE"));
}

#[test]
fn runner_cpu_limit_is_the_kernels_nr_cpus() {
    assert_eq!(memkernel::MAX_SMP as usize, mm::NR_CPUS);
}
