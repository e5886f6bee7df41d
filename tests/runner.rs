//! The runner binary's own behaviour (no kernel boot): missing QEMU, bad options.

use std::process::Command;

fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memkernel"))
}

/// The exact command a fresh machine needs, as the runner computes it here (root or sudo,
/// `apt-get update` first when apt has no package lists).
fn install_line(packages: &[&str]) -> String {
    use memkernel::setup::{command_line, have_apt_lists, install_commands, is_root};
    command_line(&install_commands(packages, is_root(), have_apt_lists()))
}

/// Without a terminal, a missing QEMU (or OVMF) ends the run before any build with the exact
/// install command and status 2.
#[test]
fn missing_qemu_and_ovmf_print_the_install_command_and_exit_2() {
    let empty = std::env::temp_dir().join(format!("memkernel-no-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let no_ovmf = empty.join("OVMF.fd");
    for (env_path, args, packages) in
        [(Some(&empty), &[][..], &["qemu-system-x86", "ovmf"][..]), (None, &["--uefi"][..], &["ovmf"][..])]
    {
        let mut cmd = runner();
        cmd.args(args).env("MEMKERNEL_OVMF", &no_ovmf).env("RUST_BACKTRACE", "1");
        if let Some(p) = env_path {
            cmd.env("PATH", p);
        }
        let out = cmd.stdin(std::process::Stdio::null()).output().expect("runner starts");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: exit status; stderr:\n{stderr}");
        let line = install_line(packages);
        assert!(
            stderr.contains(&format!("install with (Debian):\n  {line}\n")),
            "{args:?}: wants `{line}`; stderr:\n{stderr}"
        );
        if env_path.is_some() {
            assert!(stderr.contains("qemu-system-x86_64 is not installed"), "stderr:\n{stderr}");
        }
        assert!(!stderr.contains("booting"), "nothing boots: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "stderr:\n{stderr}");
    }
    let _ = std::fs::remove_dir(&empty);
}

/// A plain run is the console exactly on a terminal; `--console` always, `--demo` and the other
/// modes never.
#[test]
fn the_console_is_chosen_by_the_terminal_and_the_options() {
    use memkernel::{session_kind, SessionKind::*};
    assert_eq!(session_kind(false, false, true), Console { terminal: true });
    assert_eq!(session_kind(false, false, false), Demo, "no terminal: today's demo");
    assert_eq!(session_kind(true, false, false), Console { terminal: false });
    assert_eq!(session_kind(true, false, true), Console { terminal: true });
    assert_eq!(session_kind(false, true, true), Demo, "--demo, --test, --bench, --fault, --memmap");
}

#[test]
fn bad_options_are_explained() {
    for (args, needle) in [
        (&["--memory", "lots"][..], "--memory lots: not a size"),
        (&["--smp", "0"][..], "--smp 0: not a CPU count (at least 1, the boot CPU)"),
        (&["--smp", "17"][..], "--smp 17: more CPUs than the kernel supports (NR_CPUS = 16; use 1 to 16)"),
        (&["--smp", "four"][..], "--smp four: not a CPU count (a number from 1 to 16)"),
        (&["--test", "a", "--fault", "b"][..], "choose one of --bench, --test, --fault"),
        (
            &["--console", "--demo"][..],
            "choose one of --bench, --test, --fault, --soak, --console, --demo, --memmap",
        ),
        (&["--soak", "0"][..], "--soak 0: not an operation count (e.g. 10000000)"),
        (&["--soak", "lots"][..], "--soak lots: not an operation count"),
        (&["--soak", "--test"][..], "choose one of --bench, --test, --fault, --soak"),
        (&["--memmap"][..], "--memmap needs a value"),
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
