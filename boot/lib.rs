//! Host side of the project: builds bootable disk images of the kernel and boots them under QEMU.
//!
//! The kernel has no command line of its own under `bootloader` 0.11, so the runner hands it one
//! the way an initrd would arrive: the command line is written to a small file that the bootloader
//! loads as the ramdisk, and the kernel reads it from `BootInfo::ramdisk_addr` (see
//! `kernel/src/cmdline.rs`). That one kernel binary can then boot as the demo, the in-kernel test
//! suite (`test`, `test=NAME`), the benchmark (`bench`) or a fault scenario (`fault=NAME`).

pub mod bench;
pub mod memmap;
pub mod procfs;
pub mod setup;

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Path of the kernel ELF, built by cargo as an artifact dependency (see `boot/build.rs`).
pub const KERNEL_BIN: &str = env!("KERNEL_BIN");

/// Path of the release-built kernel ELF (no debug assertions, no overflow checks), which the
/// benchmark boots (see `boot/build.rs`).
pub const KERNEL_BENCH_BIN: &str = env!("KERNEL_BENCH_BIN");

/// Which build of the kernel to boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The kernel in this build's profile, with debug assertions in `cargo test`/`cargo run`:
    /// the demo, the tests, the fault scenarios.
    Checked,
    /// The release build: what the benchmark measures.
    Bench,
}

impl Kernel {
    pub fn path(self) -> &'static str {
        match self {
            Kernel::Checked => KERNEL_BIN,
            Kernel::Bench => KERNEL_BENCH_BIN,
        }
    }
}

/// Status values the kernel writes to QEMU's `isa-debug-exit` port (`kernel/src/arch/qemu.rs`).
/// QEMU exits with `(value << 1) | 1`.
const QEMU_EXIT_SUCCESS: i32 = (0x10 << 1) | 1;
const QEMU_EXIT_FAILURE: i32 = (0x11 << 1) | 1;

/// Most CPUs `--smp` accepts: the kernel's `mm::NR_CPUS` (`tests/runner.rs` checks they agree).
pub const MAX_SMP: u32 = 16;

/// What to boot and how.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// Guest RAM as QEMU's `-m` takes it (`64M`, `1G`, `16G`).
    pub memory: String,
    /// Boot through OVMF (UEFI) instead of the BIOS.
    pub uefi: bool,
    /// Number of virtual CPUs.
    pub smp: u32,
    /// Wait for a debugger on tcp::1234 before the first instruction.
    pub gdb: bool,
    /// Kill QEMU and report a hang after this long.
    pub timeout: Duration,
    /// The kernel command line (see `kernel/src/cmdline.rs`).
    pub cmdline: String,
    /// Deterministic mode for benchmarks: the guest TSC counts guest instructions.
    pub icount: bool,
    /// Copy the serial log to this process's stdout while it runs.
    pub echo: bool,
    /// Extra arguments passed to QEMU unchanged.
    pub qemu_args: Vec<String>,
    /// Which kernel build boots.
    pub kernel: Kernel,
    /// Where the kernel's serial input comes from.
    pub input: Input,
    /// Keep the bootloader's own log lines off the serial port (the console boots quietly).
    pub quiet_bootloader: bool,
    /// Draw each `$ memmap NAME.svg` block the kernel prints into `NAME.svg` in this directory
    /// as it completes (the console's `memmap`).
    pub memmap_dir: Option<PathBuf>,
}

/// The kernel's serial input (COM1's receive side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// None: QEMU's stdin is /dev/null (the demo, the tests, the bench).
    None,
    /// The runner's terminal, handed to QEMU, which puts it in raw mode; Ctrl-C reaches the
    /// kernel as a byte instead of killing QEMU. No timeout.
    Terminal,
    /// The runner's stdin, forwarded to QEMU; at its end the runner sends Ctrl-D (the console
    /// then exits at its prompt), so `printf 'kmalloc 100\n' | cargo run -- --console` ends.
    Forward,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            memory: "1G".into(),
            uefi: false,
            smp: 1,
            gdb: false,
            timeout: Duration::from_secs(300),
            cmdline: String::new(),
            icount: false,
            echo: true,
            qemu_args: Vec::new(),
            kernel: Kernel::Checked,
            input: Input::None,
            quiet_bootloader: false,
            memmap_dir: None,
        }
    }
}

/// How a boot ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The kernel wrote the success value to `isa-debug-exit`.
    Success,
    /// The kernel wrote the failure value (a failed test, a panic, a fatal exception).
    KernelFailure,
    /// QEMU ended without the kernel saying anything (`-no-reboot` turns a triple fault into this).
    NoExitReport(Option<i32>),
    /// The kernel did not finish within the timeout; QEMU was killed.
    Timeout(Duration),
}

/// The result of one boot: its status and the whole serial log.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: Status,
    pub serial: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == Status::Success
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Success => write!(f, "kernel reported success"),
            Status::KernelFailure => write!(f, "kernel reported failure"),
            Status::NoExitReport(Some(code)) => write!(
                f,
                "QEMU exited with status {code} without a report from the kernel (a triple fault, or QEMU itself failed)"
            ),
            Status::NoExitReport(None) => write!(f, "QEMU was killed by a signal"),
            Status::Timeout(t) => write!(f, "kernel hung: no exit after {} s; QEMU killed", t.as_secs()),
        }
    }
}

/// Why the runner could not boot anything at all.
#[derive(Debug)]
pub enum RunnerError {
    QemuMissing,
    OvmfMissing,
    Image(String),
    Io(String, std::io::Error),
}

impl fmt::Display for RunnerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunnerError::QemuMissing => write!(
                f,
                "qemu-system-x86_64 is not installed; install the Debian package `qemu-system-x86` \
                 (apt-get install qemu-system-x86)"
            ),
            RunnerError::OvmfMissing => write!(
                f,
                "--uefi needs the OVMF firmware, which is not installed; install the Debian package `ovmf` \
                 (apt-get install ovmf)"
            ),
            RunnerError::Image(e) => write!(f, "could not build the disk image: {e}"),
            RunnerError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for RunnerError {}

fn qemu_binary() -> Result<PathBuf, RunnerError> {
    setup::find_qemu().ok_or(RunnerError::QemuMissing)
}

fn ovmf() -> Result<PathBuf, RunnerError> {
    setup::find_ovmf().ok_or(RunnerError::OvmfMissing)
}

/// Directory for disk images: next to the kernel binary, inside cargo's target directory.
fn image_dir() -> PathBuf {
    let dir = Path::new(KERNEL_BIN)
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(|t| t.join("images"))
        .unwrap_or_else(|| std::env::temp_dir().join("memkernel-images"));
    dir
}

/// Builds a disk image that boots the kernel with `cmdline`. Returns the image's path; the caller
/// removes it.
pub fn build_image(kernel: Kernel, cmdline: &str, uefi: bool) -> Result<PathBuf, RunnerError> {
    build_image_with(kernel, cmdline, uefi, false)
}

/// [`build_image`]; `quiet_bootloader` turns the bootloader's serial log off.
pub fn build_image_with(
    kernel: Kernel,
    cmdline: &str,
    uefi: bool,
    quiet_bootloader: bool,
) -> Result<PathBuf, RunnerError> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = image_dir();
    std::fs::create_dir_all(&dir).map_err(|e| RunnerError::Io(format!("creating {}", dir.display()), e))?;
    let stem = format!("boot-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let cmdline_file = dir.join(format!("{stem}.cmdline"));
    // Never an empty file: the BIOS stage of `bootloader` 0.11 panics on a zero-length ramdisk.
    std::fs::write(&cmdline_file, format!("{cmdline}\n").as_bytes())
        .map_err(|e| RunnerError::Io(format!("writing {}", cmdline_file.display()), e))?;
    let image = dir.join(format!("{stem}.{}.img", if uefi { "uefi" } else { "bios" }));
    let mut builder = bootloader::DiskImageBuilder::new(PathBuf::from(kernel.path()));
    builder.set_ramdisk(cmdline_file.clone());
    let mut config = bootloader::BootConfig::default();
    config.log_level = bootloader_log_level(cmdline);
    if quiet_bootloader {
        config.serial_logging = false;
        config.frame_buffer_logging = false;
    }
    builder.set_boot_config(&config);
    let result = if uefi { builder.create_uefi_image(&image) } else { builder.create_bios_image(&image) };
    let _ = std::fs::remove_file(&cmdline_file);
    result.map_err(|e| RunnerError::Image(format!("{e:#}")))?;
    Ok(image)
}

/// The bootloader's own log level for a kernel command line. Its `INFO :` lines (ELF segments,
/// framebuffer, page-table set-up) are detail for whoever debugs the boot, so they are printed
/// only when the kernel's log level is `debug` or `trace` (the last `log=` word wins, as in the
/// kernel's `cmdline.rs`); otherwise the bootloader prints its warnings and errors only.
pub fn bootloader_log_level(cmdline: &str) -> bootloader_boot_config::LevelFilter {
    let level = cmdline.split_ascii_whitespace().filter_map(|w| w.strip_prefix("log=")).last();
    match level {
        Some("debug" | "trace") => bootloader_boot_config::LevelFilter::Trace,
        _ => bootloader_boot_config::LevelFilter::Warn,
    }
}

/// The QEMU command line for an image.
fn qemu_command(opts: &BootOptions, image: &Path) -> Result<Command, RunnerError> {
    let mut cmd = Command::new(qemu_binary()?);
    cmd.arg("-drive").arg(format!("format=raw,file={}", image.display()));
    if opts.uefi {
        cmd.arg("-bios").arg(ovmf()?);
    }
    cmd.args(["-m", &opts.memory]);
    cmd.args(["-smp", &opts.smp.to_string()]);
    if opts.input == Input::None {
        cmd.args(["-serial", "stdio"]);
    } else {
        // signal=off: Ctrl-C on a terminal is a byte for the kernel, not SIGINT for QEMU.
        cmd.args(["-chardev", "stdio,id=com1,signal=off", "-serial", "chardev:com1"]);
    }
    cmd.args(["-display", "none", "-no-reboot"]);
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    // A CPU model with the features the kernel relies on (NX, 1 GiB pages, invpcid not needed).
    cmd.args(["-cpu", "qemu64,+pdpe1gb,+nx"]);
    if opts.icount {
        cmd.args(["-icount", "shift=0,align=off,sleep=off"]);
    }
    if opts.gdb {
        cmd.args(["-s", "-S"]);
    }
    cmd.args(&opts.qemu_args);
    Ok(cmd)
}

/// The kernel console's prompt (`kernel/src/console/mod.rs`).
pub const CONSOLE_PROMPT: &str = "mm> ";

/// Where the bootloader loads the kernel (a static PIE linked at 0): the first slot of its dynamic
/// range (`kernel/src/main.rs`: `BOOTLOADER_CONFIG`, `mm::layout::DYNAMIC_START`), as long as
/// ASLR stays off. The kernel prints the real value at boot (`arch: gdb: add-symbol-file ...`).
pub const KERNEL_LOAD_OFFSET: u64 = 0xffff_8000_0000_0000;

/// The gdb command line that attaches to a `--gdb` boot of `kernel` with its symbols (`--bench
/// --gdb` boots the release build, whose symbols are another file).
pub fn gdb_command_line(kernel: Kernel) -> String {
    format!(
        "gdb -ex 'set confirm off' -ex 'add-symbol-file {} -o {KERNEL_LOAD_OFFSET:#x}' \
         -ex 'target remote :1234' -ex 'break kernel::kernel_main' -ex continue",
        kernel.path()
    )
}

/// Boots the kernel once and returns how it ended and what it printed.
pub fn boot(opts: &BootOptions) -> Result<Outcome, RunnerError> {
    // Fail before the (slower) image build if QEMU or the firmware is missing.
    qemu_binary()?;
    if opts.uefi {
        ovmf()?;
    }
    let image = build_image_with(opts.kernel, &opts.cmdline, opts.uefi, opts.quiet_bootloader)?;
    let result = run_qemu(opts, &image);
    if std::env::var_os("MEMKERNEL_KEEP_IMAGES").is_none() {
        let _ = std::fs::remove_file(&image);
    } else {
        eprintln!("runner: kept {}", image.display());
    }
    result
}

fn run_qemu(opts: &BootOptions, image: &Path) -> Result<Outcome, RunnerError> {
    let mut cmd = qemu_command(opts, image)?;
    let stdin = match opts.input {
        Input::None => Stdio::null(),
        Input::Terminal => Stdio::inherit(),
        Input::Forward => Stdio::piped(),
    };
    cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| RunnerError::Io("starting qemu-system-x86_64".into(), e))?;
    // The forwarded input waits for the console's first prompt: bytes the UART receives
    // before the kernel takes over are dropped (the driver's init discards stale input).
    let (prompt_seen, wait_prompt) = std::sync::mpsc::channel::<()>();
    if let Some(mut to_qemu) = child.stdin.take() {
        // Detached: it may block on our stdin after QEMU is gone; the process exit ends it.
        std::thread::spawn(move || {
            if wait_prompt.recv().is_err() {
                return;
            }
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_qemu);
            // A last Enter ends an unterminated line; Ctrl-D at the empty prompt exits.
            let _ = to_qemu.write_all(b"\n\x04");
        });
    }
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let echo = opts.echo;
    let memmap_dir = opts.memmap_dir.clone();
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut buf = [0u8; 4096];
        let mut maps = memmap_dir.map(memmap::BlockWatcher::new);
        let mut prompt_seen = Some(prompt_seen);
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if prompt_seen.is_some() {
                        let tail = &log[log.len().saturating_sub(CONSOLE_PROMPT.len())..];
                        let seen = [tail, &buf[..n]].concat();
                        if seen.windows(CONSOLE_PROMPT.len()).any(|w| w == CONSOLE_PROMPT.as_bytes()) {
                            let _ = prompt_seen.take().map(|tx| tx.send(()));
                        }
                    }
                    if echo {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    log.extend_from_slice(&buf[..n]);
                    if let Some(w) = maps.as_mut() {
                        w.feed(&buf[..n]);
                    }
                }
            }
        }
        log
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| RunnerError::Io("waiting for QEMU".into(), e))? {
            Some(exit) => {
                break match exit.code() {
                    Some(QEMU_EXIT_SUCCESS) => Status::Success,
                    Some(QEMU_EXIT_FAILURE) => Status::KernelFailure,
                    other => Status::NoExitReport(other),
                }
            }
            None if !opts.gdb && opts.input != Input::Terminal && start.elapsed() > opts.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Status::Timeout(opts.timeout);
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // The kernel's console sends CR LF; tests and parsers see plain LF.
    let serial = String::from_utf8_lossy(&reader.join().unwrap_or_default()).replace("\r\n", "\n");
    Ok(Outcome { status, serial })
}

/// What a `cargo run` boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// The demo workload, then exit (today's behaviour without a terminal).
    Demo,
    /// The console; `terminal`: the runner's terminal is its input, else stdin is forwarded.
    Console { terminal: bool },
}

/// The choice, from the options and whether stdin and stdout are both a terminal: `--console`
/// always gives the console, `--demo` or another mode (`--test`, `--bench`, ...) never does,
/// and a plain run gives it exactly on a terminal.
pub fn session_kind(console: bool, demo_or_other_mode: bool, terminal: bool) -> SessionKind {
    if console || (!demo_or_other_mode && terminal) {
        SessionKind::Console { terminal }
    } else {
        SessionKind::Demo
    }
}

/// Parses a memory size as QEMU takes it (`512M`, `1G`, `16G`, plain numbers are MiB) into bytes.
pub fn parse_memory(size: &str) -> Option<u64> {
    let s = size.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1 << 20),
    };
    num.parse::<u64>().ok()?.checked_mul(mult).filter(|&b| b > 0)
}
