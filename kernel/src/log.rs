//! Leveled logging to the serial console. `log=error|warn|info|debug|trace` on the command line
//! picks the level; the default is `info`, which keeps the boot log to what a reader wants.

use core::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Plain output, no prefix: tables and `/proc`-format blocks.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::arch::serial::write_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::kprint!("{}\n", format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $prefix:literal, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::kprint!(concat!($prefix, "{}\n"), format_args!($($arg)*));
        }
    };
}

#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, "[ERROR] ", $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warn, "[WARN ] ", $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, "[INFO ] ", $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, "[DEBUG] ", $($arg)*) }; }
#[macro_export]
macro_rules! trace { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Trace, "[TRACE] ", $($arg)*) }; }

/// The serial console as a `fmt::Write`, for code that formats into a writer (`/proc` tables).
pub struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        crate::arch::serial::write_fmt(format_args!("{s}"));
        Ok(())
    }
}

/// Linux's `printk_ratelimited`: at most [`RATELIMIT_BURST`] reports per
/// [`RATELIMIT_MS`] from one call site, then silence until the interval ends, when the next
/// report is preceded by `N callbacks suppressed`. The call site is the API's caller (the
/// `#[track_caller]` location the report names): one buggy caller in a loop cannot flood the
/// console, and other callers' reports still appear.
pub const RATELIMIT_MS: u64 = 5_000;
pub const RATELIMIT_BURST: u32 = 10;
/// Call sites tracked at once (the least recently started interval is replaced).
const RATELIMIT_SLOTS: usize = 32;

#[derive(Clone, Copy)]
struct Site {
    key: usize,
    start: u64,
    printed: u32,
    missed: u32,
}

static SITES: ::mm::sync::IrqSpinLock<[Site; RATELIMIT_SLOTS]> =
    ::mm::sync::IrqSpinLock::new([Site { key: 0, start: 0, printed: 0, missed: 0 }; RATELIMIT_SLOTS]);
/// Reports suppressed so far (tests read it).
pub static SUPPRESSED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Whether a report from `site` may be printed now (see [`RATELIMIT_MS`]).
pub fn ratelimit(site: &'static core::panic::Location<'static>) -> bool {
    let key = site as *const _ as usize;
    let now = crate::arch::rdtsc();
    let interval = RATELIMIT_MS * crate::arch::apic::tsc_per_ms().max(1);
    let (allow, missed) = {
        let mut sites = SITES.lock();
        let i = match sites.iter().position(|s| s.key == key) {
            Some(i) => i,
            None => {
                let i = (0..RATELIMIT_SLOTS).min_by_key(|&i| sites[i].start).unwrap_or(0);
                sites[i] = Site { key, start: now, printed: 0, missed: 0 };
                i
            }
        };
        let s = &mut sites[i];
        let mut missed = 0;
        if now.wrapping_sub(s.start) >= interval {
            missed = s.missed;
            *s = Site { key, start: now, printed: 0, missed: 0 };
        }
        let allow = s.printed < RATELIMIT_BURST;
        if allow {
            s.printed += 1;
        } else {
            s.missed += 1;
        }
        (allow, missed)
    };
    if missed > 0 {
        crate::warn!("{}:{}: {missed} callbacks suppressed", site.file(), site.line());
    }
    if !allow {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
    allow
}
