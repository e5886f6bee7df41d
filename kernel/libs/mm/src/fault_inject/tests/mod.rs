//! Linux's `should_fail_ex` semantics, attribute by attribute.

use core::panic::Location;
use std::string::String;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use super::*;

fn here() -> &'static Location<'static> {
    Location::caller()
}

fn fails(a: &FaultAttr, calls: usize, size: usize) -> usize {
    (0..calls).filter(|_| a.should_fail(size, true, here())).count()
}

#[test]
fn the_default_attribute_never_fails() {
    let a = FaultAttr::new("t");
    assert!(!a.active());
    assert_eq!(fails(&a, 1000, 64), 0);
    // Linux's FAULT_ATTR_INITIALIZER: times 1, interval 1, verbose 2.
    assert_eq!(a.times(), 1);
    let mut s = String::new();
    a.get("verbose", &mut s).unwrap();
    assert_eq!(s, "2\n");
}

#[test]
fn probability_100_fails_exactly_times_calls() {
    let a = FaultAttr::new("t");
    a.configure(1, 100, 0, 3).unwrap();
    assert_eq!(fails(&a, 10, 64), 3);
    assert_eq!(a.times(), 0);
    assert_eq!(a.injected(), 3);
    a.set("times", "-1").unwrap();
    assert_eq!(fails(&a, 10, 64), 10);
    assert_eq!(a.times(), -1, "-1 means no limit and is never decremented");
}

#[test]
fn interval_makes_every_nth_call_a_candidate() {
    let a = FaultAttr::new("t");
    a.configure(3, 100, 0, -1).unwrap();
    let pattern: std::vec::Vec<bool> = (0..9).map(|_| a.should_fail(8, true, here())).collect();
    assert_eq!(pattern, [false, false, true, false, false, true, false, false, true]);
    // Interval 0 behaves as 1 (Linux tests `interval > 1`).
    a.set("interval", "0").unwrap();
    assert_eq!(fails(&a, 5, 8), 5);
}

#[test]
fn space_is_a_budget_consumed_before_anything_fails() {
    let a = FaultAttr::new("t");
    a.configure(1, 100, 1000, -1).unwrap();
    // 1000 -> 700 -> 400 -> 100, then 100 > 300 no longer holds: the 4th call fails.
    let pattern: std::vec::Vec<bool> = (0..5).map(|_| a.should_fail(300, true, here())).collect();
    assert_eq!(pattern, [false, false, false, true, true]);
}

#[test]
fn probability_is_a_percentage_and_the_sequence_repeats() {
    // Fewer calls under Miri (a minute for 60,000 there); the bounds scale with them.
    let calls = if cfg!(miri) { 2_000 } else { 20_000 };
    let a = FaultAttr::new("t");
    a.configure(1, 10, 0, -1).unwrap();
    let n = fails(&a, calls, 8);
    assert!((calls * 7 / 100..=calls * 13 / 100).contains(&n), "10% of {calls} calls failed {n} times");
    let b = FaultAttr::new("t");
    b.configure(1, 10, 0, -1).unwrap();
    assert_eq!(fails(&b, calls, 8), n, "the same seed fails the same calls");
    let c = FaultAttr::new("t");
    c.set("seed", "12345").unwrap();
    c.configure(1, 10, 0, -1).unwrap();
    assert_ne!(fails(&c, calls, 8), 0);
}

#[test]
fn boot_parameter_is_interval_probability_space_times() {
    let a = FaultAttr::new("t");
    a.setup("2,50,4096,-1").unwrap();
    let mut s = String::new();
    for name in ["interval", "probability", "space", "times"] {
        a.get(name, &mut s).unwrap();
    }
    assert_eq!(s, "2\n50\n4096\n-1\n");
    for bad in ["", "1,5,0", "1,5,0,-1,7", "x,5,0,-1", "1,101,0,-1", "1,5,0,-2", "-1,5,0,-1"] {
        let r = a.setup(bad);
        assert!(r.is_err(), "{bad:?} accepted");
    }
    assert_eq!(a.probability(), 50, "a refused parameter changes nothing");
}

#[test]
fn bad_attribute_values_are_refused_by_name() {
    let a = FaultAttr::new("t");
    assert_eq!(a.set("nonsense", "1"), Err(FaultConfigError::NoSuchAttribute));
    assert!(matches!(
        a.set("probability", "101"),
        Err(FaultConfigError::BadValue { attr: "probability", .. })
    ));
    assert!(matches!(a.set("probability", "-1"), Err(FaultConfigError::BadValue { .. })));
    assert!(matches!(a.set("times", "-5"), Err(FaultConfigError::BadValue { attr: "times", .. })));
    assert!(matches!(a.set("verbose", "3"), Err(FaultConfigError::BadValue { attr: "verbose", .. })));
    let long = "x".repeat(MAX_FILTER_LEN + 1);
    assert!(a.set("require-caller", &long).is_err());
    assert!(!a.active());
}

#[test]
fn caller_filter_requires_and_rejects_by_file_and_line() {
    let a = FaultAttr::new("t");
    a.configure(1, 100, 0, -1).unwrap();
    let this_file = here().file();
    a.set("require-caller", "no/such/file.rs").unwrap();
    assert_eq!(fails(&a, 5, 8), 0);
    a.set("require-caller", this_file).unwrap();
    assert_eq!(fails(&a, 5, 8), 5);
    a.set("reject-caller", "fault_inject/tests/mod.rs").unwrap();
    assert_eq!(fails(&a, 5, 8), 0, "reject wins over require");
    a.set("reject-caller", "").unwrap();
    a.set("require-caller", "").unwrap();
    assert_eq!(fails(&a, 5, 8), 5);
    let mut s = String::new();
    a.get("require-caller", &mut s).unwrap();
    assert_eq!(s, "\n");
}

#[test]
fn failslab_ignores_sleeping_and_nofail_allocations_by_default() {
    let f = FailSlab::new();
    f.attr.configure(1, 100, 0, -1).unwrap();
    let at = here();
    assert!(!f.should_fail(64, false, GfpFlags::GFP_KERNEL, at), "ignore-gfp-wait is Y by default");
    assert!(f.should_fail(64, false, GfpFlags::GFP_ATOMIC | GfpFlags::__GFP_NOWARN, at));
    assert!(!f.should_fail(64, false, GfpFlags::GFP_ATOMIC | GfpFlags::__GFP_NOFAIL, at));
    f.set("ignore-gfp-wait", "N").unwrap();
    assert!(f.should_fail(64, false, GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOWARN, at));
    f.set("cache-filter", "Y").unwrap();
    assert!(!f.should_fail(64, false, GfpFlags::GFP_KERNEL, at), "unmarked caches pass the filter");
    assert!(f.should_fail(64, true, GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOWARN, at));
    assert!(f.set("cache-filter", "maybe").is_err());
    let mut s = String::new();
    f.get("cache-filter", &mut s).unwrap();
    f.get("ignore-gfp-wait", &mut s).unwrap();
    assert_eq!(s, "Y\nN\n");
}

#[test]
fn fail_page_alloc_spares_order_0_highmem_and_sleeping_allocations_by_default() {
    let f = FailPageAlloc::new();
    f.attr.configure(1, 100, 0, -1).unwrap();
    let at = here();
    let atomic = GfpFlags::GFP_ATOMIC | GfpFlags::__GFP_NOWARN;
    assert!(!f.active_at_order0());
    assert!(!f.should_fail(atomic, 0, at), "min-order is 1 by default");
    assert!(f.should_fail(atomic, 1, at));
    assert!(!f.should_fail(atomic | GfpFlags::__GFP_HIGHMEM, 3, at));
    assert!(!f.should_fail(GfpFlags::GFP_KERNEL, 3, at));
    f.set("min-order", "0").unwrap();
    f.set("ignore-gfp-wait", "0").unwrap();
    assert!(f.active_at_order0());
    assert!(f.should_fail(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOWARN, 0, at));
    assert!(f.set("min-order", "12").is_err());
    assert!(f.set("ignore-gfp-highmem", "").is_err());
}

static DUMPS: AtomicUsize = AtomicUsize::new(0);
static LAST_TIMES: AtomicUsize = AtomicUsize::new(0);

fn count_dump(d: &FaultDump) {
    if d.name == "dump-test" {
        DUMPS.fetch_add(1, SeqCst);
        LAST_TIMES.store(d.times as usize, SeqCst);
        assert_eq!((d.interval, d.probability, d.size), (1, 100, 24));
        assert!(d.caller.file().ends_with("fault_inject/tests/mod.rs"));
    }
}

#[test]
fn every_injected_failure_is_dumped_unless_nowarn_or_quiet() {
    set_dump_fn(count_dump);
    let a = FaultAttr::new("dump-test");
    a.configure(1, 100, 0, 5).unwrap();
    assert!(a.should_fail(24, false, here()));
    assert!(a.should_fail(24, true, here()), "__GFP_NOWARN: fails without a dump");
    assert_eq!(DUMPS.load(SeqCst), 1);
    assert_eq!(LAST_TIMES.load(SeqCst), 4, "the dump shows times left after the failure");
    a.set("verbose", "0").unwrap();
    assert!(a.should_fail(24, false, here()));
    assert_eq!(DUMPS.load(SeqCst), 1);
    assert_eq!(a.injected(), 3);
}
