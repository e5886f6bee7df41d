//! Fault injection in the kernel: Linux's `failslab=` and `fail_page_alloc=` boot parameters,
//! the `FAULT_INJECTION: forcing a failure.` report, and the scopes in which nothing is failed.
//! The decisions are the `mm` crate's ([`::mm::fault_inject`]): `failslab` belongs to the slab
//! allocator, `fail_page_alloc` to the buddy allocator of node 0.
//!
//! Boot parameters, as Linux: `failslab=<interval>,<probability>,<space>,<times>` (and the same
//! for `fail_page_alloc=`), e.g. `failslab=1,5,0,-1` fails 5% of the candidate calls without
//! limit. Linux sets the other attributes through debugfs only; as the kernel has no debugfs at
//! boot, `failslab.ATTR=VALUE` and `fail_page_alloc.ATTR=VALUE` set them from the command line
//! (`fail_page_alloc.min-order=0`, `failslab.ignore-gfp-wait=N`). At run time the console's
//! `echo VALUE > /sys/kernel/debug/failslab/ATTR` and `cat` do, and kernel code calls
//! [`set`]/[`get`] or the allocators' `configure_*` methods.
//!
//! Not failed, whatever the attributes say:
//! - the Rust global allocator (`alloc::Box`, `Vec`, ...): its callers cannot handle a failure
//!   (an infallible `Box::new` would abort the kernel), so [`without_faults`] wraps it; code that
//!   can handle failure uses `KBox`/`KVec` or kmalloc, which fault injection reaches;
//! - anything inside [`suspend`] (in-kernel tests that must allocate say so with it);
//! - the boot itself, until [`boot_done`]: injection starts when the kernel is up.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use ::mm::fault_inject::{
    FaultConfigError, FaultDump, FAILSLAB_NAMES, FAIL_PAGE_ALLOC_NAMES, FAULT_ATTR_NAMES,
};
use ::mm::NR_CPUS;

use super::{node, slab::slab};
use crate::cmdline::Cmdline;

/// The two attribute sets, by their debugfs directory names.
pub const FAULT_NAMES: [&str; 2] = ["failslab", "fail_page_alloc"];

/// Holders of [`suspend`] guards, plus one while the kernel boots: boot code has no way to go
/// on without its memory (Linux's would panic too), so injection starts after it. While it is
/// above 0 both sets are paused (attributes kept, fast paths back on).
static SUSPENDED: spin::Mutex<u32> = spin::Mutex::new(1);
static BOOTING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);
/// Depth of [`without_faults`] per CPU, touched only by its CPU.
static NOFAULT_DEPTH: [AtomicU32; NR_CPUS] = [const { AtomicU32::new(0) }; NR_CPUS];

fn suppressed() -> bool {
    let cpu = crate::arch::percpu::cpu_id() as usize;
    NOFAULT_DEPTH.get(cpu).is_some_and(|d| d.load(Relaxed) != 0)
}

fn pause(paused: bool) {
    slab().pause_failslab(paused);
    node().pause_fail_page_alloc(paused);
}

/// Called once the kernel is up (CPUs online), before the demo, tests or console run.
pub fn boot_done() {
    if BOOTING.swap(false, Relaxed) {
        drop(Suspended(()));
    }
}

/// Runs `f` with fault injection off on this CPU (the other CPUs are not affected).
#[inline]
pub fn without_faults<R>(f: impl FnOnce() -> R) -> R {
    let cpu = crate::arch::percpu::cpu_id() as usize;
    let depth = NOFAULT_DEPTH.get(cpu);
    if let Some(d) = depth {
        d.fetch_add(1, Relaxed);
    }
    let r = f();
    if let Some(d) = depth {
        d.fetch_sub(1, Relaxed);
    }
    r
}

/// Fault injection stays off on every CPU until the guard is dropped.
pub struct Suspended(());

impl Drop for Suspended {
    fn drop(&mut self) {
        let mut n = SUSPENDED.lock();
        *n -= 1;
        if *n == 0 {
            pause(false);
        }
    }
}

/// Turns fault injection off everywhere while the guard lives (the attributes are kept, and
/// the allocators' fast paths run as without it). Process context only.
#[must_use = "fault injection resumes when the guard is dropped"]
pub fn suspend() -> Suspended {
    let mut n = SUSPENDED.lock();
    if *n == 0 {
        pause(true);
    }
    *n += 1;
    Suspended(())
}

/// Linux's `DEFAULT_RATELIMIT_INTERVAL` (5 s) and `DEFAULT_RATELIMIT_BURST` (10), the limits of
/// `fail_dump`'s reports.
const RATELIMIT_MS: u64 = 5_000;
const RATELIMIT_BURST: u64 = 10;
static RL_START: AtomicU64 = AtomicU64::new(0);
static RL_PRINTED: AtomicU64 = AtomicU64::new(0);
static RL_MISSED: AtomicU64 = AtomicU64::new(0);

/// Linux's `___ratelimit`: up to the burst per interval; the next report after an interval
/// says how many were dropped.
fn ratelimit() -> bool {
    let now = crate::arch::rdtsc();
    let interval = RATELIMIT_MS * crate::arch::apic::tsc_per_ms().max(1);
    let start = RL_START.load(Relaxed);
    if start == 0 || now.wrapping_sub(start) >= interval {
        RL_START.store(now, Relaxed);
        RL_PRINTED.store(0, Relaxed);
        let missed = RL_MISSED.swap(0, Relaxed);
        if missed > 0 {
            crate::warn!("fail_dump: {missed} callbacks suppressed");
        }
    }
    if RL_PRINTED.fetch_add(1, Relaxed) < RATELIMIT_BURST {
        return true;
    }
    RL_MISSED.fetch_add(1, Relaxed);
    false
}

/// Linux's `fail_dump`: two lines (`printk(KERN_NOTICE ...)`), and with `verbose` 2 the caller
/// in place of Linux's stack dump.
fn dump(d: &FaultDump) {
    if !ratelimit() {
        return;
    }
    crate::kprintln!("FAULT_INJECTION: forcing a failure.");
    crate::kprintln!(
        "name {}, interval {}, probability {}, space {}, times {}",
        d.name,
        d.interval,
        d.probability,
        d.space,
        d.times
    );
    if d.verbose >= 2 {
        crate::kprintln!(
            "CPU: {} caller {}:{} ({} bytes)",
            crate::arch::percpu::cpu_id(),
            d.caller.file(),
            d.caller.line(),
            d.size
        );
    }
}

/// Reads `failslab=`, `fail_page_alloc=` and their `.ATTR=` words; installs the hooks. Runs
/// after the slab allocator is up and before anything else allocates.
pub fn init(cmdline: &Cmdline) {
    ::mm::fault_inject::set_dump_fn(dump);
    ::mm::fault_inject::set_suppress_fn(suppressed);
    // Paused until `boot_done` (the boot holds one `suspend` count).
    pause(true);
    apply_cmdline(cmdline.raw);
    for which in FAULT_NAMES {
        if let Some(line) = summary(which) {
            crate::info!("{line}");
        }
    }
}

/// Linux's defaults for every attribute of both sets (`FAULT_ATTR_INITIALIZER`, failslab's and
/// fail_page_alloc's own): nothing fails.
pub fn reset() {
    const DEFAULTS: [(&str, &str); 11] = [
        ("probability", "0"),
        ("interval", "1"),
        ("times", "1"),
        ("space", "0"),
        ("verbose", "2"),
        ("require-caller", ""),
        ("reject-caller", ""),
        ("ignore-gfp-wait", "Y"),
        ("cache-filter", "N"),
        ("ignore-gfp-highmem", "Y"),
        ("min-order", "1"),
    ];
    for which in FAULT_NAMES {
        for (attr, value) in DEFAULTS {
            // Each set refuses the other's names; that is expected here.
            let _ = set(which, attr, value);
        }
    }
}

/// The attributes as the boot command line set them (tests that change them restore these).
pub fn reset_to_boot() {
    reset();
    if let Some(raw) = crate::cmdline::raw() {
        apply_cmdline(raw);
    }
}

fn apply_cmdline(raw: &str) {
    for word in raw.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else { continue };
        let r = match key.split_once('.') {
            None if FAULT_NAMES.contains(&key) => setup(key, value),
            Some((which, attr)) if FAULT_NAMES.contains(&which) => set(which, attr, value),
            _ => continue,
        };
        if let Err(e) = r {
            crate::warn!("fault injection: ignoring {word}: {e}");
        }
    }
}

/// One line describing an active attribute set, `None` when it is off.
pub fn summary(which: &str) -> Option<impl fmt::Display + 'static> {
    let attr = match which {
        "failslab" => &slab().failslab().attr,
        "fail_page_alloc" => &node().fail_page_alloc().attr,
        _ => return None,
    };
    if attr.probability() == 0 {
        return None;
    }
    struct Line(&'static str);
    impl fmt::Display for Line {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "fault injection: {} on:", self.0)?;
            let mut names = FAULT_ATTR_NAMES.iter().take(4).chain(match self.0 {
                "failslab" => FAILSLAB_NAMES.iter(),
                _ => FAIL_PAGE_ALLOC_NAMES.iter(),
            });
            names.try_for_each(|n| {
                let mut buf = [0u8; 80];
                let mut v = crate::mm::memory_map::BufWriter { buf: &mut buf, len: 0 };
                let _ = get(self.0, n, &mut v);
                let len = v.len;
                write!(f, " {n} {}", core::str::from_utf8(&buf[..len]).unwrap_or("?").trim_end())
            })
        }
    }
    Some(Line(if which == "failslab" { "failslab" } else { "fail_page_alloc" }))
}

/// Why [`set`] or [`get`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// Neither `failslab` nor `fail_page_alloc`.
    NoSuchFault,
    Config(FaultConfigError),
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultError::NoSuchFault => f.write_str("no such fault (failslab, fail_page_alloc)"),
            FaultError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl From<FaultConfigError> for FaultError {
    fn from(e: FaultConfigError) -> Self {
        FaultError::Config(e)
    }
}

/// The boot parameter `which=<interval>,<probability>,<space>,<times>`.
pub fn setup(which: &str, param: &str) -> Result<(), FaultError> {
    match which {
        "failslab" => Ok(slab().setup_failslab(param)?),
        "fail_page_alloc" => Ok(node().setup_fail_page_alloc(param)?),
        _ => Err(FaultError::NoSuchFault),
    }
}

/// Writes attribute `attr` of `which` (`/sys/kernel/debug/which/attr`).
pub fn set(which: &str, attr: &str, value: &str) -> Result<(), FaultError> {
    match which {
        "failslab" => Ok(slab().set_failslab(attr, value)?),
        "fail_page_alloc" => Ok(node().set_fail_page_alloc(attr, value)?),
        _ => Err(FaultError::NoSuchFault),
    }
}

/// Reads attribute `attr` of `which`, as its debugfs file prints it.
pub fn get(which: &str, attr: &str, out: &mut dyn fmt::Write) -> Result<(), FaultError> {
    match which {
        "failslab" => Ok(slab().failslab().get(attr, out)?),
        "fail_page_alloc" => Ok(node().fail_page_alloc().get(attr, out)?),
        _ => Err(FaultError::NoSuchFault),
    }
}

/// The attribute names of `which` (its debugfs files).
pub fn attr_names(which: &str) -> impl Iterator<Item = &'static str> {
    let extra: &'static [&'static str] = match which {
        "failslab" => &FAILSLAB_NAMES,
        "fail_page_alloc" => &FAIL_PAGE_ALLOC_NAMES,
        _ => &[],
    };
    FAULT_ATTR_NAMES.iter().chain(extra).copied()
}

/// Either set can fail allocations now (attributes on, not suspended).
pub fn active() -> bool {
    (slab().failslab().attr.active() || node().fail_page_alloc().attr.active()) && !suppressed()
}

/// Failures injected so far by `failslab` and `fail_page_alloc`.
pub fn injected() -> (u64, u64) {
    (slab().failslab().attr.injected(), node().fail_page_alloc().attr.injected())
}
