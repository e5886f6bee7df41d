//! The allocators in a nested interrupt: the timer handler (depth 1) holds objects and pages of
//! its own, re-enables interrupts and raises an `irq_work` self-IPI, whose handler (depth 2)
//! allocates and frees GFP_ATOMIC from the same caches and zones and calls every entry point
//! Linux forbids in interrupt context; meanwhile the interrupted task does GFP_KERNEL work on
//! the same caches. Nothing held at any level is damaged, the refusals are refused at depth 2
//! as at depth 1, and the allocators end where they began.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};

use ::mm::slab::{SlabError, SlabFlags};
use ::mm::GfpFlags;
use spin::Mutex;
use x86_64::structures::paging::PhysFrame;

use crate::arch::{interrupts, irq_work, percpu};
use crate::mm::page_alloc::{__free_pages, alloc_pages, phys_to_virt, MIGHT_SLEEP_VIOLATIONS};
use crate::mm::slab::{
    kfree, kmalloc, kmem_cache_alloc, kmem_cache_create, kmem_cache_destroy, kmem_cache_free, kzalloc,
    shrink_all, KmemCache,
};
use crate::mm::vmalloc::{vfree, vfree_drain, vmalloc, vunmap, VmError};

const ATOMIC: GfpFlags = GfpFlags::GFP_ATOMIC;
/// Nested interrupts to reach before the task stops.
const ROUNDS: u64 = 400;
const SIZES: [usize; 8] = [8, 24, 64, 96, 192, 512, 1024, 2048];

/// The test cache both handler levels and the task allocate from.
static CACHE: Mutex<Option<KmemCache>> = Mutex::new(None);
/// A vmalloc area the nested handler vfrees (deferred) in its first round.
static AREA: AtomicUsize = AtomicUsize::new(0);

static OUTER_RUNS: AtomicU64 = AtomicU64::new(0);
static NESTED_RUNS: AtomicU64 = AtomicU64::new(0);
/// Damaged contents or refused frees seen at either level.
static DAMAGED: AtomicU64 = AtomicU64::new(0);
/// GFP_ATOMIC requests that failed at either level.
static FAILED: AtomicU64 = AtomicU64::new(0);
/// irq_work_queue refusals in the outer handler, and outer rounds whose nested IPI never came.
static NOT_NESTED: AtomicU64 = AtomicU64::new(0);
/// The deepest nesting depth the nested handler saw, and the outer handler's.
static NESTED_DEPTH: AtomicU32 = AtomicU32::new(0);
static OUTER_DEPTH: AtomicU32 = AtomicU32::new(0);
/// Bit per refusal the nested handler saw as specified (see `REFUSALS`).
static REFUSED: AtomicU32 = AtomicU32::new(0);
const REFUSALS: u32 = 0b11_1111;

fn pattern(addr: usize, level: u64) -> u64 {
    (addr as u64 ^ level).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn fill(p: *mut u8, bytes: usize, level: u64) {
    for i in 0..bytes / 8 {
        // SAFETY: `p` is a live block of at least `bytes` bytes owned by the caller.
        unsafe { p.cast::<u64>().add(i).write_volatile(pattern(p as usize + i, level)) };
    }
}

fn check(p: *mut u8, bytes: usize, level: u64) {
    // SAFETY: as in `fill`.
    let ok = (0..bytes / 8)
        .all(|i| unsafe { p.cast::<u64>().add(i).read_volatile() } == pattern(p as usize + i, level));
    if !ok {
        DAMAGED.fetch_add(1, SeqCst);
    }
}

fn page_ptr(frame: PhysFrame) -> *mut u8 {
    phys_to_virt(frame.start_address()).as_mut_ptr()
}

/// Depth 2: a burst of GFP_ATOMIC work on every allocator, then (first round only) every call
/// that may sleep, each of which must be refused or reported.
fn nested() {
    let run = NESTED_RUNS.load(SeqCst);
    NESTED_DEPTH.fetch_max(percpu::this().irq_depth(), SeqCst);
    const LEVEL: u64 = 2;
    for (k, &size) in SIZES.iter().enumerate() {
        let size = size + (run as usize % 3) * 8 * (k % 2);
        match (kmalloc(size, ATOMIC), kzalloc(size, ATOMIC)) {
            (Ok(a), Ok(z)) => {
                fill(a.as_ptr(), size, LEVEL);
                // SAFETY: `z` is a live block of `size` bytes.
                if (0..size).any(|i| unsafe { z.as_ptr().add(i).read_volatile() } != 0) {
                    DAMAGED.fetch_add(1, SeqCst);
                }
                check(a.as_ptr(), size, LEVEL);
                DAMAGED
                    .fetch_add(kfree(a.as_ptr()).is_err() as u64 + kfree(z.as_ptr()).is_err() as u64, SeqCst);
            }
            (a, z) => {
                FAILED.fetch_add(1, SeqCst);
                for p in [a, z].into_iter().flatten() {
                    let _ = kfree(p.as_ptr());
                }
            }
        }
    }
    for order in 0..4 {
        match alloc_pages(ATOMIC, order) {
            Ok(f) => {
                fill(page_ptr(f), 4096 << order, LEVEL);
                check(page_ptr(f), 4096 << order, LEVEL);
                DAMAGED.fetch_add(__free_pages(f, order).is_err() as u64, SeqCst);
            }
            Err(_) => {
                FAILED.fetch_add(1, SeqCst);
            }
        }
    }
    if let Some(cache) = CACHE.lock().as_ref() {
        match kmem_cache_alloc(cache, ATOMIC) {
            Ok(p) => {
                fill(p.as_ptr(), 128, LEVEL);
                check(p.as_ptr(), 128, LEVEL);
                DAMAGED.fetch_add(kmem_cache_free(cache, p).is_err() as u64, SeqCst);
            }
            Err(_) => {
                FAILED.fetch_add(1, SeqCst);
            }
        }
    }
    if run == 0 {
        refusals();
    }
    NESTED_RUNS.fetch_add(1, SeqCst);
}

/// What Linux forbids in interrupt context, tried at depth 2 (each sets its bit when it was
/// handled as specified).
fn refusals() {
    let mut seen = 0;
    if matches!(vmalloc(4096), Err(VmError::InInterrupt { .. })) {
        seen |= 1;
    }
    let area = AREA.load(SeqCst) as *const u8;
    if matches!(vunmap(area), Err(VmError::InInterrupt { .. })) {
        seen |= 2;
    }
    // vfree from interrupt context is deferred (Linux's vfree -> vfree_atomic): accepted, queued.
    if vfree(area).is_ok() {
        seen |= 4;
    }
    if matches!(
        kmem_cache_create("nested-irq", 32, 0, SlabFlags::empty(), None),
        Err(SlabError::InInterrupt { what: "kmem_cache_create", .. })
    ) {
        seen |= 8;
    }
    let mut slot = CACHE.lock();
    if let Some(cache) = slot.take() {
        match kmem_cache_destroy(cache) {
            Err((cache, SlabError::InInterrupt { what: "kmem_cache_destroy", .. })) => {
                *slot = Some(cache);
                seen |= 16;
            }
            Err((cache, _)) => *slot = Some(cache),
            Ok(()) => {}
        }
    }
    drop(slot);
    // GFP_KERNEL here is the caller's bug: reported (might_sleep), and served as on Linux.
    let violations = MIGHT_SLEEP_VIOLATIONS.load(SeqCst);
    if let Ok(p) = kmalloc(40, GfpFlags::GFP_KERNEL) {
        if MIGHT_SLEEP_VIOLATIONS.load(SeqCst) == violations + 1 && kfree(p.as_ptr()).is_ok() {
            seen |= 32;
        }
    }
    REFUSED.store(seen, SeqCst);
}

/// Depth 1: holds an object and a page across the nested interrupt, then checks them.
fn outer() {
    if NESTED_RUNS.load(SeqCst) >= ROUNDS {
        return;
    }
    OUTER_RUNS.fetch_add(1, SeqCst);
    OUTER_DEPTH.fetch_max(percpu::this().irq_depth(), SeqCst);
    const LEVEL: u64 = 1;
    let (obj, page) = match (kmalloc(256, ATOMIC), alloc_pages(ATOMIC, 0)) {
        (Ok(o), Ok(p)) => (o, p),
        (o, p) => {
            FAILED.fetch_add(1, SeqCst);
            if let Ok(o) = o {
                let _ = kfree(o.as_ptr());
            }
            if let Ok(p) = p {
                let _ = __free_pages(p, 0);
            }
            return;
        }
    };
    fill(obj.as_ptr(), 256, LEVEL);
    fill(page_ptr(page), 4096, LEVEL);
    let before = NESTED_RUNS.load(SeqCst);
    if irq_work::irq_work_queue(nested).is_ok() {
        // Interrupts on inside the handler (as Linux's softirq tail does): the self-IPI's vector
        // outranks the timer's, so it is taken here, one level deeper.
        x86_64::instructions::interrupts::enable();
        let mut spins = 0u32;
        while NESTED_RUNS.load(SeqCst) == before && spins < 1_000_000 {
            core::hint::spin_loop();
            spins += 1;
        }
        x86_64::instructions::interrupts::disable();
    }
    if NESTED_RUNS.load(SeqCst) == before {
        NOT_NESTED.fetch_add(1, SeqCst);
    }
    check(obj.as_ptr(), 256, LEVEL);
    check(page_ptr(page), 4096, LEVEL);
    DAMAGED.fetch_add(kfree(obj.as_ptr()).is_err() as u64 + __free_pages(page, 0).is_err() as u64, SeqCst);
}

crate::ktest!(
    #[needs_memory]
    fn allocators_in_a_nested_interrupt_serve_gfp_atomic_and_refuse_what_may_sleep() {
        let _tidy = super::kmalloc::Tidy;
        for s in [&OUTER_RUNS, &NESTED_RUNS, &DAMAGED, &FAILED, &NOT_NESTED] {
            s.store(0, SeqCst);
        }
        NESTED_DEPTH.store(0, SeqCst);
        OUTER_DEPTH.store(0, SeqCst);
        REFUSED.store(0, SeqCst);
        shrink_all();
        let before = super::matrix::state();
        let cache = kmem_cache_create("nested-irq-test", 128, 0, SlabFlags::empty(), None).unwrap();
        // The area the nested handler vfrees (deferred) and the task drains at the end.
        let area = vmalloc(3 * 4096).unwrap();
        AREA.store(area.as_ptr() as usize, SeqCst);
        *CACHE.lock() = Some(cache);
        let violations = MIGHT_SLEEP_VIOLATIONS.load(SeqCst);

        let saved = interrupts::timer_state();
        interrupts::set_timer_handler(Some(outer));
        interrupts::start_timer(2000).expect("timer rate");
        // The task: GFP_KERNEL work on the same caches the handlers use, checked before free.
        let mut held = [core::ptr::null_mut::<u8>(); 8];
        let mut i = 0usize;
        let start = interrupts::ticks();
        while NESTED_RUNS.load(SeqCst) < ROUNDS && interrupts::ticks() - start < 20 * ROUNDS {
            let slot = i % held.len();
            if !held[slot].is_null() {
                check(held[slot], 256, 0);
                kfree(held[slot]).unwrap();
            }
            let p = kmalloc(256, GfpFlags::GFP_KERNEL).unwrap().as_ptr();
            fill(p, 256, 0);
            held[slot] = p;
            // `CACHE` is also locked at depth 2: held here with interrupts off, as any lock an
            // interrupt handler takes.
            x86_64::instructions::interrupts::without_interrupts(|| {
                if let Some(cache) = CACHE.lock().as_ref() {
                    let q = kmem_cache_alloc(cache, GfpFlags::GFP_KERNEL).unwrap();
                    fill(q.as_ptr(), 128, 0);
                    check(q.as_ptr(), 128, 0);
                    kmem_cache_free(cache, q).unwrap();
                }
            });
            i += 1;
        }
        interrupts::stop_timer();
        interrupts::set_timer_handler(None);
        interrupts::restore_timer_state(saved);
        for p in held.into_iter().filter(|p| !p.is_null()) {
            check(p, 256, 0);
            kfree(p).unwrap();
        }
        let cache = CACHE.lock().take().expect("the nested handler gave the cache back");
        kmem_cache_destroy(cache).map_err(|(_, e)| e).expect("destroy in task context");
        let drained = vfree_drain();

        let (outer_runs, nested_runs) = (OUTER_RUNS.load(SeqCst), NESTED_RUNS.load(SeqCst));
        crate::info!(
            "nested interrupts: {nested_runs} at depth {} inside {outer_runs} timer interrupts at depth {}, \
             task did {i} rounds",
            NESTED_DEPTH.load(SeqCst),
            OUTER_DEPTH.load(SeqCst)
        );
        assert_eq!(OUTER_DEPTH.load(SeqCst), 1, "the timer handler runs at depth 1");
        assert_eq!(NESTED_DEPTH.load(SeqCst), 2, "the irq_work handler nested at depth 2");
        assert!(nested_runs >= ROUNDS, "only {nested_runs} nested interrupts");
        assert_eq!(NOT_NESTED.load(SeqCst), 0, "a queued irq_work did not interrupt the handler");
        assert_eq!(DAMAGED.load(SeqCst), 0, "contents damaged or frees refused across the nesting");
        assert_eq!(FAILED.load(SeqCst), 0, "GFP_ATOMIC requests failed");
        let seen = REFUSED.load(SeqCst);
        assert_eq!(
            seen, REFUSALS,
            "nested-interrupt refusals (bits: vmalloc, vunmap, vfree deferred, kmem_cache_create, \
             kmem_cache_destroy, GFP_KERNEL reported): {seen:#08b}"
        );
        assert_eq!(MIGHT_SLEEP_VIOLATIONS.load(SeqCst), violations + 1, "exactly the one GFP_KERNEL request");
        assert_eq!(drained, 1, "the nested vfree was queued and drained here");
        shrink_all();
        assert_eq!(super::matrix::state(), before, "the allocators did not return to where they began");
    }
);

crate::ktest!(
    fn irq_work_runs_in_interrupt_context_once_and_refuses_a_second_queue() {
        static RAN: AtomicU64 = AtomicU64::new(0);
        static DEPTH: AtomicU32 = AtomicU32::new(0);
        fn work() {
            RAN.fetch_add(1, SeqCst);
            DEPTH.store(percpu::this().irq_depth(), SeqCst);
        }
        RAN.store(0, SeqCst);
        // With interrupts off the IPI waits: the work is pending and a second one is refused.
        x86_64::instructions::interrupts::without_interrupts(|| {
            irq_work::irq_work_queue(work).expect("queue");
            assert!(irq_work::irq_work_pending());
            assert_eq!(irq_work::irq_work_queue(work), Err(irq_work::IrqWorkError::Busy));
            assert_eq!(RAN.load(SeqCst), 0, "ran with interrupts disabled");
        });
        // Interrupts back on: taken at once.
        for _ in 0..1000 {
            if RAN.load(SeqCst) != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        assert_eq!(RAN.load(SeqCst), 1, "the work ran exactly once");
        assert_eq!(DEPTH.load(SeqCst), 1, "in interrupt context");
        assert!(!irq_work::irq_work_pending());
        irq_work::irq_work_queue(work).expect("the slot is free again");
        for _ in 0..1000 {
            if RAN.load(SeqCst) == 2 {
                break;
            }
            core::hint::spin_loop();
        }
        assert_eq!(RAN.load(SeqCst), 2);
    }
);
