//! Host side of the project: builds bootable disk images of the kernel and boots them under QEMU.
//!
//! The kernel has no command line of its own under `bootloader` 0.11, so the runner hands it one
//! the way an initrd would arrive: the command line is written to a small file that the bootloader
//! loads as the ramdisk, and the kernel reads it from `BootInfo::ramdisk_addr` (see
//! `kernel/src/cmdline.rs`). That one kernel binary can then boot as the demo, the in-kernel test
//! suite (`test`, `test=NAME`), the benchmark (`bench`) or a fault scenario (`fault=NAME`).

pub mod bench;
pub mod procfs;

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

/// Debian's OVMF firmware (package `ovmf`).
const OVMF_PATHS: &[&str] =
    &["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd", "/usr/share/OVMF/OVMF.fd"];

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
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .ok_or(RunnerError::QemuMissing)
}

fn ovmf() -> Result<&'static str, RunnerError> {
    OVMF_PATHS.iter().copied().find(|p| Path::new(p).is_file()).ok_or(RunnerError::OvmfMissing)
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
    let result = if uefi { builder.create_uefi_image(&image) } else { builder.create_bios_image(&image) };
    let _ = std::fs::remove_file(&cmdline_file);
    result.map_err(|e| RunnerError::Image(format!("{e:#}")))?;
    Ok(image)
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
    cmd.args(["-serial", "stdio", "-display", "none", "-no-reboot"]);
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

/// Where the bootloader loads the kernel (a static PIE linked at 0): the first slot of its dynamic
/// range (`kernel/src/main.rs`: `BOOTLOADER_CONFIG`, `mm::layout::DYNAMIC_START`), as long as
/// ASLR stays off. The kernel prints the real value at boot (`arch: gdb: add-symbol-file ...`).
pub const KERNEL_LOAD_OFFSET: u64 = 0xffff_8000_0000_0000;

/// The gdb command line that attaches to a `--gdb` boot with the kernel's symbols.
pub fn gdb_command_line() -> String {
    format!(
        "gdb -ex 'set confirm off' -ex 'add-symbol-file {KERNEL_BIN} -o {KERNEL_LOAD_OFFSET:#x}' \
         -ex 'target remote :1234' -ex 'break kernel::kernel_main' -ex continue"
    )
}

/// Boots the kernel once and returns how it ended and what it printed.
pub fn boot(opts: &BootOptions) -> Result<Outcome, RunnerError> {
    // Fail before the (slower) image build if QEMU or the firmware is missing.
    qemu_binary()?;
    if opts.uefi {
        ovmf()?;
    }
    let image = build_image(opts.kernel, &opts.cmdline, opts.uefi)?;
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
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| RunnerError::Io("starting qemu-system-x86_64".into(), e))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let echo = opts.echo;
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if echo {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    log.extend_from_slice(&buf[..n]);
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
            None if !opts.gdb && start.elapsed() > opts.timeout => {
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
