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
