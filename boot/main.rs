//! `cargo run [-- OPTIONS]`: boot the kernel under QEMU and stream its serial log.

use std::process::ExitCode;
use std::time::Duration;

use memkernel::{boot, parse_memory, BootOptions, Status};

const USAGE: &str = "\
usage: cargo run [-- OPTIONS]

Builds a disk image of the kernel, boots it under QEMU and streams the serial log.
Exits 0 when the kernel reports success, 1 otherwise (failure, hang, triple fault).

options:
  --memory SIZE     guest RAM, as QEMU's -m takes it (default 1G; 64M to 16G are supported)
  --uefi            boot through OVMF (UEFI) instead of the BIOS
  --smp N           number of virtual CPUs, 1 to 16 (default 1); all are brought online
  --gdb             wait for a debugger on localhost:1234 (no timeout)
  --timeout SECS    kill QEMU and fail after SECS seconds (default 300)
  --bench           boot the benchmarks in deterministic -icount mode
  --test [NAME]     boot the in-kernel test suite, or only the tests whose name contains NAME
  --fault NAME      boot a fault scenario (e.g. vmalloc-guard); it is expected to fail loudly
  --cmdline ARGS    extra kernel command-line words (e.g. \"log=debug slab_debug=FZPU\")
  --qemu ARGS...    pass the remaining arguments to QEMU unchanged
  -h, --help        this text
";

fn parse_args(args: &[String]) -> Result<BootOptions, String> {
    let mut opts = BootOptions::default();
    let mut mode: Vec<String> = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    let mut it = args.iter();
    let value = |it: &mut std::slice::Iter<String>, flag: &str| {
        it.next().cloned().ok_or_else(|| format!("{flag} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--memory" | "-m" => {
                let m = value(&mut it, arg)?;
                let bytes =
                    parse_memory(&m).ok_or_else(|| format!("--memory {m}: not a size like 512M or 2G"))?;
                if !((64 << 20)..=(16 << 30)).contains(&bytes) {
                    eprintln!("runner: warning: --memory {m} is outside the supported 64M..16G");
                }
                opts.memory = m;
            }
            "--uefi" => opts.uefi = true,
            "--smp" => {
                let n = value(&mut it, arg)?;
                let max = memkernel::MAX_SMP;
                opts.smp = match n.parse::<u32>() {
                    Ok(c) if (1..=max).contains(&c) => c,
                    Ok(0) => return Err("--smp 0: not a CPU count (at least 1, the boot CPU)".to_string()),
                    Ok(c) => {
                        return Err(format!(
                            "--smp {c}: more CPUs than the kernel supports (NR_CPUS = {max}; use 1 to {max})"
                        ))
                    }
                    Err(_) => return Err(format!("--smp {n}: not a CPU count (a number from 1 to {max})")),
                };
            }
            "--gdb" => opts.gdb = true,
            "--timeout" => {
                let t = value(&mut it, arg)?;
                let secs: u64 = t
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("--timeout {t}: not a number of seconds"))?;
                opts.timeout = Duration::from_secs(secs);
            }
            "--bench" => {
                opts.icount = true;
                mode.push("bench".into());
            }
            "--test" => match it.clone().next() {
                Some(name) if !name.starts_with("--") => {
                    it.next();
                    mode.push(format!("test={name}"));
                }
                _ => mode.push("test".into()),
            },
            "--fault" => mode.push(format!("fault={}", value(&mut it, arg)?)),
            "--cmdline" => extra.push(value(&mut it, arg)?),
            "--qemu" => {
                opts.qemu_args.extend(it.by_ref().cloned());
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if mode.len() > 1 {
        return Err(format!("choose one of --bench, --test, --fault (got {})", mode.join(", ")));
    }
    mode.extend(extra);
    opts.cmdline = mode.join(" ");
    Ok(opts)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(opts) => opts,
        Err(msg) if msg.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("runner: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "runner: booting {} with {} RAM{}{}{}",
        if opts.uefi { "UEFI (OVMF)" } else { "BIOS" },
        opts.memory,
        if opts.smp > 1 { format!(", {} CPUs", opts.smp) } else { String::new() },
        if opts.icount { ", -icount (deterministic)" } else { "" },
        if opts.cmdline.is_empty() { String::new() } else { format!(", cmdline \"{}\"", opts.cmdline) },
    );
    if opts.gdb {
        eprintln!(
            "runner: QEMU waits for gdb on localhost:1234 (see README: Debugging). In another terminal:\n  {}\n\
             runner: the kernel is a static PIE linked at 0; if its boot line `arch: gdb: add-symbol-file ... -o X` \
             shows another offset than {:#x}, use that one",
            memkernel::gdb_command_line(),
            memkernel::KERNEL_LOAD_OFFSET
        );
    }
    match boot(&opts) {
        Ok(outcome) => {
            eprintln!("runner: {}", outcome.status);
            if outcome.status == Status::Success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("runner: {e}");
            ExitCode::FAILURE
        }
    }
}
