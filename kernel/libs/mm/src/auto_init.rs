//! Heap memory auto-initialisation: Linux's `init_on_alloc=` and `init_on_free=` boot
//! parameters (`mm/mm_init.c`, `want_init_on_alloc`/`want_init_on_free` in
//! `include/linux/mm.h`). Both are off by default, as in Debian's and most distributions'
//! builds without `CONFIG_INIT_ON_ALLOC_DEFAULT_ON`.
//!
//! - `init_on_alloc`: every page and slab object is zeroed when it is allocated, as if each
//!   request carried `__GFP_ZERO` (slab caches with a constructor or `SLAB_POISON` excepted, as
//!   `slab_want_init_on_alloc`).
//! - `init_on_free`: every page and slab object is zeroed when it is freed, so a freed buffer
//!   never keeps its contents (same exceptions, as `slab_want_init_on_free`).
//!
//! One deliberate difference: Linux skips the allocation-time zeroing of pages when
//! `init_on_free` is on (they were zeroed when freed). Here the switches can be flipped at run
//! time (the benchmark measures their cost), so pages already free when `init_on_free` was
//! turned on may hold old contents: `__GFP_ZERO` and `init_on_alloc` always zero at allocation.
//!
//! The switches belong to an allocator instance, not to globals (host tests run many
//! allocators at once): the page allocator's [`crate::buddy::Node`] holds an [`AutoInit`], and
//! slab caches copy the values into their own descriptor when created and when
//! `Slab::set_auto_init` runs, so the slab fast paths read a field of the cache they touch
//! anyway. The kernel sets both from its command line before the first allocation.

use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::gfp::GfpFlags;

/// The two switches of one allocator.
#[derive(Debug, Default)]
pub struct AutoInit {
    on_alloc: AtomicBool,
    on_free: AtomicBool,
}

impl AutoInit {
    pub const fn new() -> Self {
        Self { on_alloc: AtomicBool::new(false), on_free: AtomicBool::new(false) }
    }

    /// Sets both switches (the owner's `set_auto_init` does, and updates its fast paths).
    pub(crate) fn set(&self, init_on_alloc: bool, init_on_free: bool) {
        self.on_alloc.store(init_on_alloc, Relaxed);
        self.on_free.store(init_on_free, Relaxed);
    }

    /// `init_on_alloc` is on.
    #[inline(always)]
    pub fn init_on_alloc(&self) -> bool {
        self.on_alloc.load(Relaxed)
    }

    /// `init_on_free` is on.
    #[inline(always)]
    pub fn init_on_free(&self) -> bool {
        self.on_free.load(Relaxed)
    }

    /// `want_init_on_alloc`: an allocation with `gfp` must be zeroed.
    #[inline(always)]
    pub fn want_init_on_alloc(&self, gfp: GfpFlags) -> bool {
        gfp.contains(GfpFlags::__GFP_ZERO) || self.init_on_alloc()
    }

    /// Linux's boot line for the switches (`report_meminit`).
    pub fn report(&self) -> Report {
        Report { on_alloc: self.init_on_alloc(), on_free: self.init_on_free() }
    }
}

/// Parses a boolean boot-parameter value as Linux's `kstrtobool`: `1/y/Y/on` and `0/n/N/off`
/// (the first character decides for `y`/`n`/`1`/`0`, as the kernel does).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.as_bytes() {
        [b'1' | b'y' | b'Y', ..] => Some(true),
        [b'0' | b'n' | b'N', ..] => Some(false),
        [b'o' | b'O', b'n' | b'N', ..] => Some(true),
        [b'o' | b'O', b'f' | b'F', ..] => Some(false),
        _ => None,
    }
}

/// Linux's boot line for the switches (`report_meminit`): `mem auto-init: stack:off, heap
/// alloc:on, heap free:off` (stack initialisation is a compiler feature this kernel does not
/// use).
pub struct Report {
    pub on_alloc: bool,
    pub on_free: bool,
}

impl core::fmt::Display for Report {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        write!(
            f,
            "mem auto-init: stack:off, heap alloc:{}, heap free:{}",
            on(self.on_alloc),
            on(self.on_free)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstrtobool_values() {
        for v in ["1", "y", "Y", "yes", "on", "ON", "On"] {
            assert_eq!(parse_bool(v), Some(true), "{v}");
        }
        for v in ["0", "n", "N", "no", "off", "OFF"] {
            assert_eq!(parse_bool(v), Some(false), "{v}");
        }
        for v in ["", "2", "true", "o", "x"] {
            assert_eq!(parse_bool(v), None, "{v}");
        }
    }
}
