//! The kernel command line. The runner hands it over as the bootloader's ramdisk (see
//! `boot/lib.rs`): a few words of ASCII such as `test=buddy log=debug slab_debug=FZPU`.

use bootloader_api::BootInfo;

use crate::log::Level;

/// Longest command line kept; the rest is ignored with a warning.
const MAX_LEN: usize = 512;

/// What the kernel should do after the memory subsystem is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Print the memory map, run the demo workload, print the statistics.
    Demo,
    /// Run the in-kernel test suite; `filter` selects tests whose name contains it.
    Test { filter: Option<&'static str> },
    /// Run the benchmarks (the runner boots these under `-icount`).
    Bench,
    /// Run a scenario that is expected to end in a fault report (host tests check it).
    Fault(&'static str),
    /// The interactive console on the serial port (`console`): a short summary, then `mm> `.
    Console,
    /// `soak[=OPS]`: the stress workload on every CPU with fault injection (see `soak.rs`).
    Soak(u64),
}

#[derive(Clone, Copy, Debug)]
pub struct Cmdline {
    pub raw: &'static str,
    pub mode: Mode,
    pub log_level: Level,
    /// `log=` was given (the console boots quietly only when it was not).
    pub log_given: bool,
    /// `memmap`: the demo prints the page-state map with its statistics (before and after the
    /// workload), which `cargo run -- --memmap FILE.svg` draws.
    pub memmap: bool,
}

impl Cmdline {
    /// The value of `key=value`, if present.
    pub fn get(&self, key: &str) -> Option<&'static str> {
        self.raw.split_ascii_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }
}

static mut BUF: [u8; MAX_LEN] = [0; MAX_LEN];
static RAW: spin::Once<&'static str> = spin::Once::new();

/// The value of `key=value` on the boot command line, for code that is not handed the
/// [`Cmdline`] (tests' tunables such as `stress_ops=`).
pub fn get_global(key: &str) -> Option<&'static str> {
    let raw = RAW.get()?;
    raw.split_ascii_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The whole boot command line (after [`init`]).
pub fn raw() -> Option<&'static str> {
    RAW.get().copied()
}

/// Copies the command line out of the ramdisk (whose memory is the bootloader's) and parses it.
pub fn init(boot_info: &BootInfo) -> Cmdline {
    let raw: &'static str = match boot_info.ramdisk_addr.into_option() {
        Some(addr) if boot_info.ramdisk_len > 0 => {
            let len = (boot_info.ramdisk_len as usize).min(MAX_LEN);
            // SAFETY: the bootloader mapped `ramdisk_len` bytes at `ramdisk_addr` and nothing
            // writes them. `BUF` is written only here, once, before anything reads it, on the
            // boot CPU.
            unsafe {
                let src = core::slice::from_raw_parts(addr as *const u8, len);
                let buf = &mut *core::ptr::addr_of_mut!(BUF);
                buf[..len].copy_from_slice(src);
                core::str::from_utf8(&buf[..len]).unwrap_or("").trim()
            }
        }
        _ => "",
    };
    RAW.call_once(|| raw);
    let mut cmdline =
        Cmdline { raw, mode: Mode::Demo, log_level: Level::Info, log_given: false, memmap: false };
    for word in raw.split_ascii_whitespace() {
        match word.split_once('=') {
            None if word == "test" => cmdline.mode = Mode::Test { filter: None },
            None if word == "bench" => cmdline.mode = Mode::Bench,
            None if word == "console" => cmdline.mode = Mode::Console,
            None if word == "soak" => cmdline.mode = Mode::Soak(crate::soak::DEFAULT_OPS),
            Some(("soak", ops)) => match ops.parse::<u64>() {
                Ok(n) if n > 0 => cmdline.mode = Mode::Soak(n),
                _ => {
                    crate::kprintln!("[WARN ] cmdline: soak={ops}: not an operation count; running the demo")
                }
            },
            None if word == "memmap" => cmdline.memmap = true,
            Some(("test", name)) => cmdline.mode = Mode::Test { filter: Some(name) },
            Some(("fault", name)) => cmdline.mode = Mode::Fault(name),
            Some(("log", level)) => match Level::parse(level) {
                Some(l) => {
                    cmdline.log_level = l;
                    cmdline.log_given = true;
                }
                None => crate::kprintln!(
                    "[WARN ] cmdline: unknown log level `{level}` (error, warn, info, debug, trace)"
                ),
            },
            // Options read by the subsystems themselves (e.g. `slab_debug=`) pass through.
            _ => {}
        }
    }
    cmdline
}
