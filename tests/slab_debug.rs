//! Boots that check what the in-kernel suite cannot see from inside: the `slab_debug=` boot
//! option reaching the kmalloc caches and their corruption reports, the `might_sleep` report
//! line, and the fault report of a ZERO_SIZE_PTR dereference.

mod common;

use common::{boot_with, expect_line, expect_status};
use memkernel::Status;

#[test]
fn slab_debug_boot_option_red_zones_kmalloc_32() {
    let out = boot_with("test=slab_debug_kmalloc_tail_redzone slab_debug=FZPU,kmalloc-32", "256M", false);
    let what = "slab_debug=FZPU,kmalloc-32";
    expect_status(&out, Status::Success, what);
    expect_line(&out, "slab: slab_debug=FZPU,kmalloc-32 (debug checks on the caches it names)", what);
    expect_line(&out, "test mm::tests::slab::slab_debug_kmalloc_tail_redzone ... ok", what);
    // The refused kfree names the caller; the report names cache, object, first bad byte and
    // value, and where the object was allocated.
    expect_line(&out, "kfree refused at kernel/src/mm/tests/slab.rs:", what);
    expect_line(&out, "kmalloc red zone report (expected): kmalloc-32: object 0x", what);
    expect_line(
        &out,
        ": kmalloc red zone (tail past the requested size) overwritten: first bad byte at 0x",
        what,
    );
    expect_line(
        &out,
        "(offset 18) is 0x55, expected 0xcc; last allocated at kernel/src/mm/tests/slab.rs:",
        what,
    );
    expect_line(&out, "kmalloc poison report (expected): kmalloc-32: object 0x", what);
    expect_line(&out, "poison overwritten (use after free): first bad byte at", what);
    expect_line(
        &out,
        "(offset 0) is 0x99, expected 0x6b; last allocated at kernel/src/mm/tests/slab.rs:",
        what,
    );
    expect_line(&out, "; last freed at kernel/src/mm/tests/slab.rs:", what);
    // Linux's report shape (mm/slub.c): at free time (the kfree is refused) and at allocation
    // time (the damaged free object is isolated).
    for line in [
        "=============================================================================\nBUG kmalloc-32 (Not tainted): kmalloc Redzone overwritten\n-----",
        " @offset=18. First byte 0x55 instead of 0xcc\nAllocated in kernel/src/mm/tests/slab.rs:",
        "BUG kmalloc-32 (Not tainted): Poison overwritten",
        " @offset=0. First byte 0x99 instead of 0x6b\nAllocated in kernel/src/mm/tests/slab.rs:",
        "\nFreed in kernel/src/mm/tests/slab.rs:",
        ": 99 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b .kkkkkkkkkkkkkkk",
        "not freed: isolated, never handed out again",
        "FIX kmalloc-32: Object at 0x",
        " isolated: never handed out again",
    ] {
        expect_line(&out, line, what);
    }
    expect_line(&out, "slab_debug kmalloc-32 checks done", what);
    expect_line(&out, "1 passed, 0 failed", what);
}

#[test]
fn invalid_slab_debug_is_reported_and_ignored() {
    let out = boot_with("test=mm::tests::kmalloc::size_class slab_debug=FQ", "256M", false);
    let what = "slab_debug=FQ";
    expect_status(&out, Status::Success, what);
    expect_line(&out, "slab: ignoring slab_debug=FQ: ", what);
    expect_line(&out, "test mm::tests::kmalloc::size_class_boundaries ... ok", what);
    // The kmalloc failure warning names the caller, not the kmalloc wrapper.
    expect_line(&out, "kmalloc(4194305) failure: mode:0xcc0(", what);
    expect_line(&out, ") at kernel/src/mm/tests/kmalloc.rs:", what);
}

#[test]
fn gfp_kernel_in_interrupt_context_is_reported_with_the_caller() {
    let out = boot_with("test=mm::tests::kmalloc_irq::gfp_kernel_in_interrupt", "256M", false);
    let what = "GFP_KERNEL kmalloc from the timer handler";
    expect_status(&out, Status::Success, what);
    expect_line(
        &out,
        "BUG: sleeping function called from invalid context at kernel/src/mm/tests/kmalloc_irq.rs:",
        what,
    );
    expect_line(&out, "test mm::tests::kmalloc_irq::gfp_kernel_in_interrupt_is_reported ... ok", what);
}

#[test]
fn zero_size_ptr_dereference_is_a_reported_page_fault() {
    let out = boot_with("fault=zero_size_ptr_deref", "256M", false);
    let what = "fault=zero_size_ptr_deref";
    expect_status(&out, Status::KernelFailure, what);
    expect_line(&out, "[FAULT] EXCEPTION: PAGE FAULT (#PF, vector 14)", what);
    expect_line(
        &out,
        "faulting address (CR2): 0x0000000000000010 = ZERO_SIZE_PTR: dereference of the result of a zero-size kmalloc (kmalloc(0))",
        what,
    );
}
