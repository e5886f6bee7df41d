//! Fault injection: Linux's fault-injection framework (`lib/fault-inject.c`) with its two memory
//! users, `failslab` (`mm/failslab.c`) and `fail_page_alloc` (`mm/fail_page_alloc.c`), as of
//! Linux 6.12.
//!
//! A [`FaultAttr`] decides, call by call, whether an allocation that would have succeeded fails
//! instead, so that every caller's failure path runs. The decision is Linux's `should_fail_ex`:
//!
//! 1. nothing fails while `probability` is 0 (the allocators' fast paths then do not even look:
//!    Linux's static keys, here the slab fast-path flag byte and the buddy's order-0 switch);
//! 2. the caller filter must let the call through (below);
//! 3. nothing fails once `times` failures were injected (`-1`: no limit);
//! 4. while `space` is larger than the request, the request is subtracted and goes through;
//! 5. with `interval` N > 1 only every Nth call is a candidate;
//! 6. a candidate fails with `probability` percent.
//!
//! Each injected failure is counted and, unless the call carried `__GFP_NOWARN`, handed to the
//! dump hook the kernel installs ([`set_dump_fn`]), which prints Linux's
//! `FAULT_INJECTION: forcing a failure.` lines (rate-limited).
//!
//! **Caller filtering.** Linux filters on the call stack (`require-start`/`require-end`,
//! `reject-start`/`reject-end`, needing frame pointers and addresses a user looks up). This
//! kernel's entry points carry the caller's source location (`#[track_caller]`), so the filter
//! is on that: `require-caller=TEXT` fails only calls whose `file:line` contains `TEXT`,
//! `reject-caller=TEXT` never fails those. Linux's `task-filter` and `fail_nth` need tasks,
//! which this kernel does not have.
//!
//! The random choice uses a xorshift generator per attribute with a fixed seed (`seed=`), so a
//! boot with the same command line fails the same calls.
//!
//! Attributes are set by boot parameters (`failslab=<interval>,<probability>,<space>,<times>`,
//! Linux's format), by name as Linux's debugfs files (`/sys/kernel/debug/failslab/probability`,
//! [`FaultAttr::set`] and the filter-specific [`FailSlab::set`] / [`FailPageAlloc::set`]), or from
//! kernel code and tests.

use core::fmt;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::addr::PAGE_SIZE;
use crate::gfp::GfpFlags;
use crate::sync::IrqSpinLock;

/// Longest caller filter kept (bytes of a `file:line` substring).
pub const MAX_FILTER_LEN: usize = 64;

/// A bad attribute name or value (the console and the boot-parameter parser print it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultConfigError {
    /// No attribute of that name.
    NoSuchAttribute,
    /// The value is not of the attribute's kind (a number, `-1` or more for `times`, a boolean).
    BadValue { attr: &'static str, expected: &'static str },
    /// The boot parameter is not `<interval>,<probability>,<space>,<times>`.
    BadBootParameter,
}

impl fmt::Display for FaultConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FaultConfigError::NoSuchAttribute => f.write_str("no such attribute"),
            FaultConfigError::BadValue { attr, expected } => write!(f, "{attr}: expected {expected}"),
            FaultConfigError::BadBootParameter => {
                f.write_str("expected <interval>,<probability>,<space>,<times> (e.g. 1,5,0,-1)")
            }
        }
    }
}

/// What the dump hook is told about one injected failure.
#[derive(Clone, Copy, Debug)]
pub struct FaultDump {
    pub name: &'static str,
    pub interval: u64,
    pub probability: u32,
    pub space: i64,
    /// `times` left after this failure (`-1`: no limit).
    pub times: i64,
    /// `verbose`: 1 prints the two Linux lines, 2 also the caller (Linux: a stack dump).
    pub verbose: u32,
    /// Bytes the failed call asked for (an object, or `PAGE_SIZE << order`).
    pub size: usize,
    pub caller: &'static Location<'static>,
}

static DUMP_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static SUPPRESS_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the function that says whether injection is suspended for the running code (the
/// kernel: a test that must allocate, or the Rust global allocator, whose callers cannot handle
/// failure). Asked only when a failure would otherwise be considered.
pub fn set_suppress_fn(f: fn() -> bool) {
    SUPPRESS_FN.store(f as *mut (), Relaxed);
}

fn suppressed() -> bool {
    let f = SUPPRESS_FN.load(Relaxed);
    // SAFETY: only `set_suppress_fn` stores here, and it stores a `fn() -> bool`.
    !f.is_null() && unsafe { core::mem::transmute::<*mut (), fn() -> bool>(f) }()
}

/// Installs the function that reports injected failures (the kernel prints them). Without one,
/// failures are only counted.
pub fn set_dump_fn(f: fn(&FaultDump)) {
    DUMP_FN.store(f as *mut (), Relaxed);
}

#[cold]
#[inline(never)]
fn dump(d: &FaultDump) {
    let f = DUMP_FN.load(Relaxed);
    if !f.is_null() {
        // SAFETY: only `set_dump_fn` stores here, and it stores a `fn(&FaultDump)`.
        let f: fn(&FaultDump) = unsafe { core::mem::transmute::<*mut (), fn(&FaultDump)>(f) };
        f(d);
    }
}

/// The caller filter's two substrings.
struct CallerFilter {
    require: [u8; MAX_FILTER_LEN],
    require_len: usize,
    reject: [u8; MAX_FILTER_LEN],
    reject_len: usize,
}

impl CallerFilter {
    fn admits(&self, loc: &Location<'_>) -> bool {
        let mut text = LocText::default();
        let _ = fmt::write(&mut text, format_args!("{}:{}", loc.file(), loc.line()));
        let hay = text.as_bytes();
        let has = |needle: &[u8]| needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle);
        let reject = &self.reject[..self.reject_len];
        if !reject.is_empty() && has(reject) {
            return false;
        }
        has(&self.require[..self.require_len])
    }
}

/// `file:line` of a caller, truncated to what fits.
struct LocText {
    buf: [u8; 160],
    len: usize,
}

impl Default for LocText {
    fn default() -> Self {
        LocText { buf: [0; 160], len: 0 }
    }
}

impl LocText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for LocText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Linux's `struct fault_attr`: when to fail. All fields are atomics, so attributes can be
/// changed while allocations run on other CPUs (as Linux's debugfs writes can).
pub struct FaultAttr {
    name: &'static str,
    /// Percent, 0..=100.
    probability: AtomicU32,
    interval: AtomicU64,
    /// Failures still to inject; -1 without limit.
    times: AtomicI64,
    space: AtomicI64,
    verbose: AtomicU32,
    /// Calls counted for `interval`.
    count: AtomicU64,
    rng: AtomicU64,
    /// A caller filter is set (checked before taking the filter's lock).
    filtered: AtomicBool,
    /// Paused by its owner (the attributes are kept, nothing fails, the fast paths run).
    paused: AtomicBool,
    filter: IrqSpinLock<CallerFilter>,
    injected: AtomicU64,
}

/// The attribute names [`FaultAttr::set`] and [`FaultAttr::get`] take (Linux's debugfs files,
/// with the caller filter in place of the stack-address filter).
pub const FAULT_ATTR_NAMES: [&str; 8] =
    ["probability", "interval", "times", "space", "verbose", "seed", "require-caller", "reject-caller"];

const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

impl FaultAttr {
    /// Linux's `FAULT_ATTR_INITIALIZER`: probability 0 (off), interval 1, times 1, space 0,
    /// verbose 2.
    pub const fn new(name: &'static str) -> Self {
        FaultAttr {
            name,
            probability: AtomicU32::new(0),
            interval: AtomicU64::new(1),
            times: AtomicI64::new(1),
            space: AtomicI64::new(0),
            verbose: AtomicU32::new(2),
            count: AtomicU64::new(0),
            rng: AtomicU64::new(DEFAULT_SEED),
            filtered: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            filter: IrqSpinLock::new(CallerFilter {
                require: [0; MAX_FILTER_LEN],
                require_len: 0,
                reject: [0; MAX_FILTER_LEN],
                reject_len: 0,
            }),
            injected: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Failures can be injected (`probability` > 0, not paused): the allocators' fast paths
    /// step aside.
    #[inline(always)]
    pub fn active(&self) -> bool {
        self.probability.load(Relaxed) != 0 && !self.paused.load(Relaxed)
    }

    /// Pauses or resumes injection without touching the attributes. The allocators'
    /// `pause_*` methods call this and switch their fast paths.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Relaxed);
    }

    pub fn probability(&self) -> u32 {
        self.probability.load(Relaxed)
    }

    pub fn times(&self) -> i64 {
        self.times.load(Relaxed)
    }

    /// Failures injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Relaxed)
    }

    /// Sets the four fields of the boot parameter at once (also what tests use).
    pub fn configure(
        &self,
        interval: u64,
        probability: u32,
        space: i64,
        times: i64,
    ) -> Result<(), FaultConfigError> {
        check_probability(probability as u64)?;
        check_times(times)?;
        self.interval.store(interval, Relaxed);
        self.space.store(space, Relaxed);
        self.times.store(times, Relaxed);
        self.count.store(0, Relaxed);
        self.probability.store(probability, Relaxed);
        Ok(())
    }

    /// Linux's `setup_fault_attr`: the boot parameter `<interval>,<probability>,<space>,<times>`.
    pub fn setup(&self, s: &str) -> Result<(), FaultConfigError> {
        let mut it = s.split(',');
        let mut next = || it.next().map(str::trim);
        let (Some(i), Some(p), Some(sp), Some(t), None) = (next(), next(), next(), next(), next()) else {
            return Err(FaultConfigError::BadBootParameter);
        };
        let bad = FaultConfigError::BadBootParameter;
        let interval = i.parse::<u64>().map_err(|_| bad)?;
        let probability = p.parse::<u64>().map_err(|_| bad)?;
        check_probability(probability)?;
        let space = sp.parse::<i64>().map_err(|_| bad)?;
        let times = t.parse::<i64>().map_err(|_| bad)?;
        self.configure(interval, probability as u32, space, times)
    }

    /// Writes one attribute by its debugfs name.
    pub fn set(&self, attr: &str, value: &str) -> Result<(), FaultConfigError> {
        let value = value.trim();
        let num = |name: &'static str| {
            value.parse::<u64>().map_err(|_| FaultConfigError::BadValue { attr: name, expected: "a number" })
        };
        match attr {
            "probability" => {
                let p = num("probability")?;
                check_probability(p)?;
                self.probability.store(p as u32, Relaxed);
            }
            "interval" => self.interval.store(num("interval")?, Relaxed),
            "times" => {
                let t = value
                    .parse::<i64>()
                    .map_err(|_| FaultConfigError::BadValue { attr: "times", expected: "a count or -1" })?;
                check_times(t)?;
                self.times.store(t, Relaxed);
            }
            "space" => self.space.store(
                value
                    .parse::<i64>()
                    .map_err(|_| FaultConfigError::BadValue { attr: "space", expected: "bytes" })?,
                Relaxed,
            ),
            "verbose" => {
                let v = num("verbose")?;
                if v > 2 {
                    return Err(FaultConfigError::BadValue { attr: "verbose", expected: "0, 1 or 2" });
                }
                self.verbose.store(v as u32, Relaxed);
            }
            "seed" => self.rng.store(num("seed")?.max(1), Relaxed),
            "require-caller" | "reject-caller" => {
                if value.len() > MAX_FILTER_LEN {
                    return Err(FaultConfigError::BadValue {
                        attr: if attr == "require-caller" { "require-caller" } else { "reject-caller" },
                        expected: "at most 64 bytes of a file:line",
                    });
                }
                let mut guard = self.filter.lock();
                let f = &mut *guard;
                let (buf, len) = if attr == "require-caller" {
                    (&mut f.require, &mut f.require_len)
                } else {
                    (&mut f.reject, &mut f.reject_len)
                };
                buf[..value.len()].copy_from_slice(value.as_bytes());
                *len = value.len();
                let any = f.require_len + f.reject_len > 0;
                drop(guard);
                self.filtered.store(any, Relaxed);
            }
            _ => return Err(FaultConfigError::NoSuchAttribute),
        }
        Ok(())
    }

    /// Reads one attribute by its debugfs name, as the file would print it.
    pub fn get(&self, attr: &str, out: &mut dyn fmt::Write) -> Result<(), FaultConfigError> {
        let r = match attr {
            "probability" => writeln!(out, "{}", self.probability.load(Relaxed)),
            "interval" => writeln!(out, "{}", self.interval.load(Relaxed)),
            "times" => writeln!(out, "{}", self.times.load(Relaxed)),
            "space" => writeln!(out, "{}", self.space.load(Relaxed)),
            "verbose" => writeln!(out, "{}", self.verbose.load(Relaxed)),
            "seed" => writeln!(out, "{}", self.rng.load(Relaxed)),
            "require-caller" | "reject-caller" => {
                let f = self.filter.lock();
                let (buf, len) = if attr == "require-caller" {
                    (&f.require, f.require_len)
                } else {
                    (&f.reject, f.reject_len)
                };
                let text = core::str::from_utf8(&buf[..len]).unwrap_or("");
                writeln!(out, "{text}")
            }
            _ => return Err(FaultConfigError::NoSuchAttribute),
        };
        let _ = r;
        Ok(())
    }

    /// Linux's `should_fail_ex(attr, size, nowarn ? FAULT_NOWARN : 0)` for a call from `caller`.
    /// Callers check [`FaultAttr::active`] first (it is the fast paths' check).
    #[inline(never)]
    pub fn should_fail(&self, size: usize, nowarn: bool, caller: &'static Location<'static>) -> bool {
        let probability = self.probability.load(Relaxed);
        if probability == 0 || self.paused.load(Relaxed) || suppressed() {
            return false;
        }
        if self.filtered.load(Relaxed) && !self.filter.lock().admits(caller) {
            return false;
        }
        if self.times.load(Relaxed) == 0 {
            return false;
        }
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        if self.space.load(Relaxed) > size {
            // Linux's `atomic_sub`: the budget is consumed even when calls race.
            self.space.fetch_sub(size, Relaxed);
            return false;
        }
        let interval = self.interval.load(Relaxed);
        if interval > 1 {
            let n = self.count.fetch_add(1, Relaxed) + 1;
            if n % interval != 0 {
                return false;
            }
        }
        if probability <= self.random_below_100() {
            return false;
        }
        // Linux's `atomic_dec_not_zero` unless unlimited: a racing caller may have used the
        // last one, and then this call goes through after all.
        let mut t = self.times.load(Relaxed);
        loop {
            if t == 0 {
                return false;
            }
            if t == -1 {
                break;
            }
            match self.times.compare_exchange_weak(t, t - 1, Relaxed, Relaxed) {
                Ok(_) => {
                    t -= 1;
                    break;
                }
                Err(now) => t = now,
            }
        }
        self.injected.fetch_add(1, Relaxed);
        let verbose = self.verbose.load(Relaxed);
        if !nowarn && verbose > 0 {
            dump(&FaultDump {
                name: self.name,
                interval,
                probability,
                space: self.space.load(Relaxed),
                times: t,
                verbose,
                size: size as usize,
                caller,
            });
        }
        true
    }

    /// `get_random_u32_below(100)` from this attribute's xorshift64* state. Racing callers may
    /// draw the same number; that only makes the sequence less random.
    fn random_below_100(&self) -> u32 {
        let mut x = self.rng.load(Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Relaxed);
        ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % 100) as u32
    }

    /// Prints every attribute as `name: value` lines (the console's overview).
    pub fn write_all(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        for name in FAULT_ATTR_NAMES {
            write!(out, "{name:<20}")?;
            let _ = self.get(name, out);
        }
        Ok(())
    }
}

fn check_probability(p: u64) -> Result<(), FaultConfigError> {
    if p > 100 {
        return Err(FaultConfigError::BadValue { attr: "probability", expected: "a percentage, 0 to 100" });
    }
    Ok(())
}

fn check_times(t: i64) -> Result<(), FaultConfigError> {
    if t < -1 {
        return Err(FaultConfigError::BadValue { attr: "times", expected: "a count or -1 (no limit)" });
    }
    Ok(())
}

fn parse_flag(attr: &'static str, value: &str) -> Result<bool, FaultConfigError> {
    crate::auto_init::parse_bool(value.trim()).ok_or(FaultConfigError::BadValue { attr, expected: "Y or N" })
}

fn yes_no(b: bool) -> char {
    if b {
        'Y'
    } else {
        'N'
    }
}

/// Linux's `failslab`: fault injection for slab allocations (`kmem_cache_alloc`, kmalloc up
/// to the slab limit). Bigger kmalloc blocks come from the page allocator and
/// [`FailPageAlloc`] applies to them, as on Linux.
pub struct FailSlab {
    pub attr: FaultAttr,
    /// `ignore-gfp-wait` (default Y): allocations that may sleep (`__GFP_DIRECT_RECLAIM`, as in
    /// `GFP_KERNEL`) never fail.
    ignore_gfp_wait: AtomicBool,
    /// `cache-filter` (default N): only caches marked `failslab` fail.
    cache_filter: AtomicBool,
}

/// [`FailSlab::set`]'s names beyond [`FAULT_ATTR_NAMES`].
pub const FAILSLAB_NAMES: [&str; 2] = ["ignore-gfp-wait", "cache-filter"];

impl FailSlab {
    pub const fn new() -> Self {
        FailSlab {
            attr: FaultAttr::new("failslab"),
            ignore_gfp_wait: AtomicBool::new(true),
            cache_filter: AtomicBool::new(false),
        }
    }

    /// Linux's `__should_failslab` for a cache other than the bootstrap `kmem_cache`, whose
    /// `failslab` mark is `marked`.
    #[inline(never)]
    pub fn should_fail(
        &self,
        object_size: usize,
        marked: bool,
        gfp: GfpFlags,
        caller: &'static Location<'static>,
    ) -> bool {
        if gfp.contains(GfpFlags::__GFP_NOFAIL)
            || (self.ignore_gfp_wait.load(Relaxed) && gfp.contains(GfpFlags::__GFP_DIRECT_RECLAIM))
            || (self.cache_filter.load(Relaxed) && !marked)
        {
            return false;
        }
        self.attr.should_fail(object_size, gfp.contains(GfpFlags::__GFP_NOWARN), caller)
    }

    pub fn set(&self, attr: &str, value: &str) -> Result<(), FaultConfigError> {
        match attr {
            "ignore-gfp-wait" => self.ignore_gfp_wait.store(parse_flag("ignore-gfp-wait", value)?, Relaxed),
            "cache-filter" => self.cache_filter.store(parse_flag("cache-filter", value)?, Relaxed),
            _ => return self.attr.set(attr, value),
        }
        Ok(())
    }

    pub fn get(&self, attr: &str, out: &mut dyn fmt::Write) -> Result<(), FaultConfigError> {
        let _ = match attr {
            "ignore-gfp-wait" => writeln!(out, "{}", yes_no(self.ignore_gfp_wait.load(Relaxed))),
            "cache-filter" => writeln!(out, "{}", yes_no(self.cache_filter.load(Relaxed))),
            _ => return self.attr.get(attr, out),
        };
        Ok(())
    }
}

impl Default for FailSlab {
    fn default() -> Self {
        Self::new()
    }
}

/// Linux's `fail_page_alloc`: fault injection for the page allocator.
pub struct FailPageAlloc {
    pub attr: FaultAttr,
    /// `ignore-gfp-wait` (default Y): allocations that may sleep never fail.
    ignore_gfp_wait: AtomicBool,
    /// `ignore-gfp-highmem` (default Y): `__GFP_HIGHMEM` allocations never fail.
    ignore_gfp_highmem: AtomicBool,
    /// `min-order` (default 1): smaller allocations never fail.
    min_order: AtomicU32,
}

/// [`FailPageAlloc::set`]'s names beyond [`FAULT_ATTR_NAMES`].
pub const FAIL_PAGE_ALLOC_NAMES: [&str; 3] = ["ignore-gfp-wait", "ignore-gfp-highmem", "min-order"];

impl FailPageAlloc {
    pub const fn new() -> Self {
        FailPageAlloc {
            attr: FaultAttr::new("fail_page_alloc"),
            ignore_gfp_wait: AtomicBool::new(true),
            ignore_gfp_highmem: AtomicBool::new(true),
            min_order: AtomicU32::new(1),
        }
    }

    /// Order-0 allocations may fail: the buddy's order-0 fast path must step aside.
    #[inline]
    pub fn active_at_order0(&self) -> bool {
        self.attr.active() && self.min_order.load(Relaxed) == 0
    }

    /// Linux's `should_fail_alloc_page`.
    #[inline(never)]
    pub fn should_fail(&self, gfp: GfpFlags, order: u32, caller: &'static Location<'static>) -> bool {
        if order < self.min_order.load(Relaxed)
            || gfp.contains(GfpFlags::__GFP_NOFAIL)
            || (self.ignore_gfp_highmem.load(Relaxed) && gfp.contains(GfpFlags::__GFP_HIGHMEM))
            || (self.ignore_gfp_wait.load(Relaxed) && gfp.contains(GfpFlags::__GFP_DIRECT_RECLAIM))
        {
            return false;
        }
        self.attr.should_fail(PAGE_SIZE << order.min(20), gfp.contains(GfpFlags::__GFP_NOWARN), caller)
    }

    pub fn set(&self, attr: &str, value: &str) -> Result<(), FaultConfigError> {
        match attr {
            "ignore-gfp-wait" => self.ignore_gfp_wait.store(parse_flag("ignore-gfp-wait", value)?, Relaxed),
            "ignore-gfp-highmem" => {
                self.ignore_gfp_highmem.store(parse_flag("ignore-gfp-highmem", value)?, Relaxed)
            }
            "min-order" => {
                let o = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&o| o <= crate::page::MAX_PAGE_ORDER + 1)
                    .ok_or(FaultConfigError::BadValue { attr: "min-order", expected: "an order, 0 to 11" })?;
                self.min_order.store(o, Relaxed);
            }
            _ => return self.attr.set(attr, value),
        }
        Ok(())
    }

    pub fn get(&self, attr: &str, out: &mut dyn fmt::Write) -> Result<(), FaultConfigError> {
        let _ = match attr {
            "ignore-gfp-wait" => writeln!(out, "{}", yes_no(self.ignore_gfp_wait.load(Relaxed))),
            "ignore-gfp-highmem" => writeln!(out, "{}", yes_no(self.ignore_gfp_highmem.load(Relaxed))),
            "min-order" => writeln!(out, "{}", self.min_order.load(Relaxed)),
            _ => return self.attr.get(attr, out),
        };
        Ok(())
    }
}

impl Default for FailPageAlloc {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
