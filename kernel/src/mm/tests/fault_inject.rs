//! In-kernel tests of fault injection (`failslab`, `fail_page_alloc`): the kernel's entry points
//! fail as the attributes say, report it as Linux does, lose nothing, and the global allocator
//! and [`suspend`] scopes are spared.

use alloc::boxed::Box;

use ::mm::{AllocError, GfpFlags};

use crate::mm::fault_inject::{self, set, suspend};
use crate::mm::page_alloc::{__free_pages, alloc_pages};
use crate::mm::slab::{kfree, kmalloc, kmalloc_instance, kzalloc};
use crate::mm::vmalloc::{vfree, vmalloc, VmError};

use super::free_pages_drained;
use super::kmalloc::Tidy;

const KERNEL: GfpFlags = GfpFlags::GFP_KERNEL;
const INJECTED_SLAB: AllocError = AllocError::FaultInjected { by: "failslab" };
const INJECTED_PAGE: AllocError = AllocError::FaultInjected { by: "fail_page_alloc" };

/// Puts the attributes back as the boot command line had them, however the test ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        fault_inject::reset_to_boot();
    }
}

fn configure(which: &str, attrs: &[(&str, &str)]) {
    for (a, v) in attrs {
        set(which, a, v).unwrap_or_else(|e| panic!("{which}/{a}={v}: {e}"));
    }
}

crate::ktest!(
    fn failslab_fails_kmalloc_exactly_times_calls_and_loses_nothing() {
        let _tidy = Tidy;
        let _restore = Restore;
        fault_inject::reset();
        let cache = kmalloc_instance().kmalloc_slab(64, KERNEL).unwrap();
        let live = cache.live_objects();
        let before = fault_inject::injected().0;
        configure(
            "failslab",
            &[("ignore-gfp-wait", "N"), ("verbose", "1"), ("times", "3"), ("probability", "100")],
        );
        for _ in 0..3 {
            assert_eq!(kmalloc(64, KERNEL), Err(INJECTED_SLAB));
        }
        assert_eq!(fault_inject::injected().0, before + 3);
        assert_eq!(cache.live_objects(), live, "failed calls allocated nothing");
        let p = kzalloc(64, KERNEL).expect("times ran out: allocations succeed again");
        kfree(p.as_ptr()).unwrap();
        // Sleeping allocations are spared by default (Linux's ignore-gfp-wait=Y).
        configure("failslab", &[("times", "-1"), ("ignore-gfp-wait", "Y")]);
        let p = kmalloc(64, KERNEL).unwrap();
        assert_eq!(kmalloc(64, GfpFlags::GFP_ATOMIC | GfpFlags::__GFP_NOWARN), Err(INJECTED_SLAB));
        kfree(p.as_ptr()).unwrap();
    }
);

crate::ktest!(
    fn fail_page_alloc_fails_pages_and_vmalloc_cleanly() {
        let _tidy = Tidy;
        let _restore = Restore;
        fault_inject::reset();
        // A first vmalloc may add upper page-table levels, which stay (kernel page tables).
        let warm = vmalloc(16 * 4096).unwrap();
        vfree(warm.as_ptr()).unwrap();
        let free = free_pages_drained();
        configure(
            "fail_page_alloc",
            &[
                ("ignore-gfp-wait", "N"),
                ("min-order", "0"),
                ("verbose", "0"),
                ("times", "-1"),
                ("probability", "100"),
            ],
        );
        assert_eq!(alloc_pages(KERNEL, 0), Err(INJECTED_PAGE));
        assert_eq!(alloc_pages(KERNEL, 4), Err(INJECTED_PAGE));
        // kmalloc above the slab sizes comes from the page allocator, as on Linux.
        assert_eq!(kmalloc(64 * 1024, KERNEL | GfpFlags::__GFP_NOWARN), Err(INJECTED_PAGE));
        assert!(matches!(vmalloc(3 * 4096), Err(VmError::Vmalloc(_))), "vmalloc fails as a whole");
        // Every third candidate fails: vmalloc gets some pages, then fails and gives them back.
        configure("fail_page_alloc", &[("interval", "3")]);
        for _ in 0..4 {
            if let Ok(p) = vmalloc(16 * 4096) {
                vfree(p.as_ptr()).unwrap();
            }
        }
        set("fail_page_alloc", "probability", "0").unwrap();
        assert_eq!(free_pages_drained(), free, "failed and unwound allocations lost no page");
        let f = alloc_pages(KERNEL, 0).expect("off: pages again");
        __free_pages(f, 0).unwrap();
    }
);

crate::ktest!(
    fn the_global_allocator_and_suspended_scopes_are_never_failed() {
        let _restore = Restore;
        fault_inject::reset();
        configure(
            "failslab",
            &[("ignore-gfp-wait", "N"), ("verbose", "0"), ("times", "-1"), ("probability", "100")],
        );
        configure(
            "fail_page_alloc",
            &[
                ("ignore-gfp-wait", "N"),
                ("min-order", "0"),
                ("verbose", "0"),
                ("times", "-1"),
                ("probability", "100"),
            ],
        );
        // `Box::new` cannot handle a failure: the global allocator is spared.
        let b = Box::new([7u64; 32]);
        assert_eq!(b[31], 7);
        drop(b);
        assert!(kmalloc(8, KERNEL).is_err());
        {
            let _s = suspend();
            let p = kmalloc(8, KERNEL).expect("suspended");
            kfree(p.as_ptr()).unwrap();
            let f = alloc_pages(KERNEL, 2).expect("suspended");
            __free_pages(f, 2).unwrap();
        }
        assert!(kmalloc(8, KERNEL).is_err(), "resumed after the guard");
    }
);

crate::ktest!(
    fn caller_filter_and_bad_attributes() {
        let _restore = Restore;
        fault_inject::reset();
        configure(
            "failslab",
            &[("ignore-gfp-wait", "N"), ("verbose", "0"), ("times", "-1"), ("probability", "100")],
        );
        configure("failslab", &[("require-caller", "no/such/file.rs")]);
        let p = kmalloc(8, KERNEL).expect("the filter admits no caller here");
        kfree(p.as_ptr()).unwrap();
        configure("failslab", &[("require-caller", "tests/fault_inject.rs")]);
        assert_eq!(kmalloc(8, KERNEL), Err(INJECTED_SLAB));
        configure("failslab", &[("reject-caller", "fault_inject.rs:1")]);
        // This file's lines 100-199 are rejected now, and this call is one of them.
        let p = kmalloc(8, KERNEL).expect("rejected caller");
        kfree(p.as_ptr()).unwrap();
        for (attr, value) in [("probability", "101"), ("times", "-2"), ("min-order", "0"), ("verbose", "9")] {
            assert!(set("failslab", attr, value).is_err(), "failslab/{attr}={value} accepted");
        }
        assert!(set("fail_page_alloc", "cache-filter", "Y").is_err(), "a failslab-only attribute");
        assert!(set("fail_nothing", "probability", "1").is_err());
    }
);
