//! `cargo run [-- OPTIONS]`: boot the kernel under QEMU and stream its serial log.

use std::process::ExitCode;
use std::time::Duration;

use std::io::IsTerminal;

use memkernel::{bench, memmap, setup};
use memkernel::{boot, parse_memory, session_kind, BootOptions, Input, SessionKind, Status};

const USAGE: &str = "\
usage: cargo run [-- OPTIONS]

Builds a disk image of the kernel, boots it under QEMU and streams the serial log. On a
terminal (stdin and stdout), a plain `cargo run` opens the kernel's console (`mm> `, type
`help`); otherwise it runs the demo workload and exits. Exits 0 when the kernel reports
success, 1 otherwise (failure, hang, triple fault), 2 on bad options or missing QEMU/OVMF.

options:
  --console         the console even without a terminal: commands come from stdin, e.g.
                    printf 'kmalloc 100\\nexit\\n' | cargo run -- --console
  --demo            the demo even on a terminal
  --memmap FILE     run the demo and draw physical memory before and after it into FILE (SVG)
  --memory SIZE     guest RAM, as QEMU's -m takes it (default 1G; 64M to 16G are supported)
  --uefi            boot through OVMF (UEFI) instead of the BIOS
  --smp N           number of virtual CPUs, 1 to 16 (default 1); all are brought online
  --gdb             wait for a debugger on localhost:1234 (no timeout)
  --timeout SECS    kill QEMU and fail after SECS seconds (default 300)
  --bench           boot the benchmarks (release-built kernel, 2G, -icount: deterministic) and
                    compare every figure with tests/bench-baseline.txt
  --update-baseline with --bench: rewrite tests/bench-baseline.txt and the README's table
                    from this run
  --readme-table    rewrite only the README's measured table from tests/bench-baseline.txt
                    (after a change to the table's layout; no boot)
  --test [NAME]     boot the in-kernel test suite, or only the tests whose name contains NAME
  --fault NAME      boot a fault scenario (e.g. vmalloc-guard); it is expected to fail loudly
  --soak [OPS]      the stress workload on every CPU (--smp N) with fault injection at 1% and
                    GFP_ATOMIC work in every timer interrupt; OPS operations in all (default
                    10000000); fails on any damage, loss or inconsistent /proc figure
  --cmdline ARGS    extra kernel command-line words (e.g. \"log=debug slab_debug=FZPU\")
  --qemu ARGS...    pass the remaining arguments to QEMU unchanged
  -h, --help        this text
";

/// What the runner does besides booting.
#[derive(Default)]
struct Extra {
    bench: bool,
    update_baseline: bool,
    /// `--console` / `--demo`.
    console: bool,
    demo: bool,
    /// `--memmap FILE`.
    memmap: Option<String>,
    /// `--bench`, `--test`, `--fault` or `--memmap`: a kernel mode that is never the console.
    other_mode: bool,
}

fn parse_args(args: &[String]) -> Result<(BootOptions, Extra), String> {
    let mut opts = BootOptions::default();
    let mut extra_mode = Extra::default();
    let (mut memory_given, mut timeout_given, mut smp_given) = (false, false, false);
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
                memory_given = true;
            }
            "--uefi" => opts.uefi = true,
            "--smp" => {
                smp_given = true;
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
                timeout_given = true;
            }
            "--bench" => {
                extra_mode.bench = true;
                mode.push("bench".into());
            }
            "--update-baseline" => extra_mode.update_baseline = true,
            "--test" => match it.clone().next() {
                Some(name) if !name.starts_with("--") => {
                    it.next();
                    mode.push(format!("test={name}"));
                }
                _ => mode.push("test".into()),
            },
            "--fault" => mode.push(format!("fault={}", value(&mut it, arg)?)),
            "--soak" => {
                match it.clone().next() {
                    Some(n) if !n.starts_with("--") => {
                        it.next();
                        let ops: u64 =
                            n.replace('_', "").parse().ok().filter(|&o| o > 0).ok_or_else(|| {
                                format!("--soak {n}: not an operation count (e.g. 10000000)")
                            })?;
                        mode.push(format!("soak={ops}"));
                    }
                    _ => mode.push("soak".into()),
                }
            }
            "--console" => {
                extra_mode.console = true;
                mode.push("console".into());
            }
            "--demo" => {
                extra_mode.demo = true;
                mode.push("demo".into());
            }
            "--memmap" => {
                extra_mode.memmap = Some(value(&mut it, arg)?);
                mode.push("memmap".into());
            }
            "--cmdline" => extra.push(value(&mut it, arg)?),
            "--qemu" => {
                opts.qemu_args.extend(it.by_ref().cloned());
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if mode.len() > 1 {
        return Err(format!(
            "choose one of --bench, --test, --fault, --soak, --console, --demo, --memmap (got {})",
            mode.join(", ")
        ));
    }
    // `demo` is the kernel's default (no word on its command line); `console` is added when the
    // session is chosen (`console_options`), which a plain run on a terminal also does.
    mode.retain(|m| m != "demo" && m != "console");
    extra_mode.other_mode = !mode.is_empty();
    if extra_mode.update_baseline && !extra_mode.bench {
        return Err("--update-baseline goes with --bench".into());
    }
    if mode.iter().any(|m| m == "soak" || m.starts_with("soak=")) && !timeout_given {
        // A soak runs as long as its operation count takes (10M: minutes under TCG).
        opts.timeout = Duration::from_secs(6 * 3600);
    }
    mode.extend(extra);
    opts.cmdline = mode.join(" ");
    if extra_mode.bench {
        // The published figures' boot (boot/bench.rs); --memory, --timeout and --qemu still apply.
        let b = bench::bench_options();
        opts.icount = b.icount;
        opts.kernel = b.kernel;
        if !memory_given {
            opts.memory = b.memory;
        }
        if !timeout_given {
            opts.timeout = b.timeout;
        }
        if !smp_given {
            opts.smp = b.smp;
        }
        opts.qemu_args = b.qemu_args.into_iter().chain(opts.qemu_args).collect();
    }
    Ok((opts, extra_mode))
}

/// After a `--bench` boot: the gate's verdict, or (with `--update-baseline`) a new baseline and
/// README table. Returns false when the gate fails or the files cannot be written.
fn bench_after(serial: &str, update: bool, default_boot: bool) -> bool {
    let now = match bench::parse_figures(serial) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("runner: the bench printed no `bench:` lines");
            return false;
        }
        Err(e) => {
            eprintln!("runner: bad `bench:` lines: {e}");
            return false;
        }
    };
    let root = bench::repo_root();
    let path = root.join(bench::BASELINE_FILE);
    let old =
        std::fs::read_to_string(&path).ok().and_then(|t| bench::parse_figures(&t).ok()).unwrap_or_default();
    let drift = bench::compare(&old, &now, bench::TOLERANCE);
    if update {
        if !default_boot {
            eprintln!("runner: --update-baseline needs the default bench boot (no --memory/--smp/--qemu/--cmdline changes)");
            return false;
        }
        let table = match bench::readme_table(&now) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("runner: cannot generate the README table: {e}");
                return false;
            }
        };
        let readme_path = root.join("README.md");
        let readme = std::fs::read_to_string(&readme_path).unwrap_or_default();
        let Some(new_readme) = bench::splice_readme(&readme, &table) else {
            eprintln!(
                "runner: README.md lacks the markers `{}` / `{}`",
                bench::README_BEGIN,
                bench::README_END
            );
            return false;
        };
        if let Err(e) = std::fs::write(&path, bench::baseline_text(&now))
            .and_then(|_| std::fs::write(&readme_path, new_readme))
        {
            eprintln!("runner: writing the baseline: {e}");
            return false;
        }
        for d in &drift {
            eprintln!("runner: {d}");
        }
        eprintln!(
            "runner: wrote {} ({} figures, {} changed) and the README's measured table",
            bench::BASELINE_FILE,
            now.len(),
            drift.len()
        );
        return true;
    }
    if drift.is_empty() {
        eprintln!("runner: bench gate: all {} figures within 1% of {}", now.len(), bench::BASELINE_FILE);
        true
    } else {
        for d in &drift {
            eprintln!("runner: {d}");
        }
        eprintln!(
            "runner: bench gate: {} of {} figures differ from {} by more than 1% (`cargo run -- --bench --update-baseline` rewrites it)",
            drift.len(),
            now.len(),
            bench::BASELINE_FILE
        );
        // Only the default boot is gated: other memory sizes or QEMU options measure other things.
        !default_boot
    }
}

/// `--readme-table`: the README's generated table from the committed baseline.
fn readme_table_only() -> ExitCode {
    let root = bench::repo_root();
    let baseline = std::fs::read_to_string(root.join(bench::BASELINE_FILE))
        .map_err(|e| e.to_string())
        .and_then(|t| bench::parse_figures(&t));
    let readme_path = root.join("README.md");
    let result = baseline.and_then(|b| bench::readme_table(&b)).and_then(|table| {
        let readme = std::fs::read_to_string(&readme_path).map_err(|e| e.to_string())?;
        let new = bench::splice_readme(&readme, &table).ok_or("README.md lacks the table markers")?;
        std::fs::write(&readme_path, new).map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => {
            eprintln!("runner: README.md's measured table rewritten from {}", bench::BASELINE_FILE);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("runner: --readme-table: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The console: the kernel boots with `console`, quietly, its input the terminal or stdin, and
/// `memmap FILE.svg` blocks are drawn into the current directory.
fn console_options(opts: &mut BootOptions, terminal: bool) {
    opts.cmdline =
        if opts.cmdline.is_empty() { "console".into() } else { format!("console {}", opts.cmdline) };
    opts.input = if terminal { Input::Terminal } else { Input::Forward };
    opts.quiet_bootloader = true;
    opts.memmap_dir = Some(std::env::current_dir().unwrap_or_else(|_| ".".into()));
}

/// `--memmap FILE`: the demo's before and after maps, side by side, into FILE.
fn write_memmap(serial: &str, file: &str) -> bool {
    let maps = match memmap::find_all(serial) {
        Ok(m) if m.len() == 2 => m,
        Ok(m) => {
            eprintln!(
                "runner: the kernel printed {} page-state maps, not the two (before, after) of --memmap",
                m.len()
            );
            return false;
        }
        Err(e) => {
            eprintln!("runner: bad page-state map: {e}");
            return false;
        }
    };
    match std::fs::write(file, memmap::render_svg(&[&maps[0], &maps[1]])) {
        Ok(()) => {
            eprintln!(
                "runner: wrote {file}: physical memory {} and {} (open it in a browser)",
                maps[0].label, maps[1].label
            );
            true
        }
        Err(e) => {
            eprintln!("runner: writing {file}: {e}");
            false
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--readme-table") {
        if args.len() > 1 {
            eprintln!("runner: --readme-table takes no other options\n\n{USAGE}");
            return ExitCode::from(2);
        }
        return readme_table_only();
    }
    let (mut opts, extra) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(msg) if msg.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("runner: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // A terminal is stdin and stdout both (`cargo run | less` is not one).
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let kind = session_kind(extra.console, extra.demo || extra.other_mode, terminal);
    if let SessionKind::Console { terminal } = kind {
        console_options(&mut opts, terminal);
    }
    match setup::ensure(opts.uefi, terminal, &mut std::io::stdin().lock()) {
        Ok(()) => {}
        Err(setup::SetupError::NotInstalled) => return ExitCode::from(2),
        Err(setup::SetupError::InstallFailed(why)) => {
            eprintln!("runner: {why}");
            return ExitCode::FAILURE;
        }
    }
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
            memkernel::gdb_command_line(opts.kernel),
            memkernel::KERNEL_LOAD_OFFSET
        );
    }
    let outcome = if extra.bench { bench::boot_bench(&opts) } else { boot(&opts) };
    match outcome {
        Ok(outcome) => {
            eprintln!("runner: {}", outcome.status);
            if outcome.status != Status::Success {
                return ExitCode::FAILURE;
            }
            if let Some(file) = &extra.memmap {
                if !write_memmap(&outcome.serial, file) {
                    return ExitCode::FAILURE;
                }
            }
            if extra.bench {
                let b = bench::bench_options();
                let default_boot = opts.memory == b.memory
                    && opts.smp == b.smp
                    && opts.qemu_args == b.qemu_args
                    && opts.cmdline == "bench";
                if !bench_after(&outcome.serial, extra.update_baseline, default_boot) {
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("runner: {e}");
            ExitCode::FAILURE
        }
    }
}
