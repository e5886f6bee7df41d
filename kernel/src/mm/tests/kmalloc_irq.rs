//! kmalloc in interrupt context: a fast timer whose handler allocates and frees with GFP_ATOMIC
//! while the interrupted code does the same on the same caches, and the `might_sleep` check of a
//! GFP_KERNEL request made from the handler.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use ::mm::kmalloc::KMALLOC_SIZES;
use ::mm::GfpFlags;

use crate::arch::interrupts;
use crate::mm::page_alloc::MIGHT_SLEEP_VIOLATIONS;
use crate::mm::slab::{kfree, kmalloc, kmalloc_instance};

/// Sizes both sides cycle through (several per cache, all multiples of 8 for word patterns).
const SIZES: [usize; 12] = [8, 16, 24, 40, 64, 96, 128, 160, 256, 512, 1024, 2048];
/// kmalloc+kfree pairs to reach, both sides counted.
const TARGET_PAIRS: u64 = 1_000_000;
/// Objects each side keeps alive between operations, so frees interleave with allocations.
const HELD: usize = 16;
const TIMER_HZ: u32 = 20_000;

static IRQ_PAIRS: AtomicU64 = AtomicU64::new(0);
static IRQ_RUNS: AtomicU64 = AtomicU64::new(0);
static IRQ_CORRUPT: AtomicU64 = AtomicU64::new(0);
static IRQ_ALLOC_FAILS: AtomicU64 = AtomicU64::new(0);
static IRQ_HELD: [AtomicUsize; HELD] = [const { AtomicUsize::new(0) }; HELD];
static IRQ_HELD_SIZE: [AtomicUsize; HELD] = [const { AtomicUsize::new(0) }; HELD];

/// The word written at index `i` of an object at `p`: depends on the address, the index and the
/// side, so an object handed to both sides, or overwritten by the allocator, fails the check.
fn pattern(p: usize, i: usize, side: u64) -> u64 {
    (p as u64 ^ side).wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64)
}

fn fill(p: *mut u8, size: usize, side: u64) {
    for i in 0..size / 8 {
        // SAFETY: `p` is a live kmalloc block of at least `size` bytes owned by the caller.
        unsafe { p.cast::<u64>().add(i).write_volatile(pattern(p as usize, i, side)) };
    }
}

fn intact(p: *mut u8, size: usize, side: u64) -> bool {
    // SAFETY: as in `fill`.
    (0..size / 8).all(|i| unsafe { p.cast::<u64>().add(i).read_volatile() } == pattern(p as usize, i, side))
}

const IRQ_SIDE: u64 = 0x1111_0000;
const MAIN_SIDE: u64 = 0x2222_0000;

/// Timer handler: replaces 4 held objects per tick (verify, kfree, kmalloc GFP_ATOMIC, fill).
fn stress_handler() {
    let run = IRQ_RUNS.fetch_add(1, Relaxed);
    for k in 0..4u64 {
        let slot = ((run * 4 + k) % HELD as u64) as usize;
        let old = IRQ_HELD[slot].swap(0, Relaxed);
        if old != 0 {
            let size = IRQ_HELD_SIZE[slot].load(Relaxed);
            if !intact(old as *mut u8, size, IRQ_SIDE) {
                IRQ_CORRUPT.fetch_add(1, Relaxed);
            }
            if kfree(old as *const u8).is_err() {
                IRQ_CORRUPT.fetch_add(1, Relaxed);
            }
            IRQ_PAIRS.fetch_add(1, Relaxed);
        }
        let size = SIZES[((run * 7 + k * 3) % SIZES.len() as u64) as usize];
        match kmalloc(size, GfpFlags::GFP_ATOMIC) {
            Ok(p) => {
                fill(p.as_ptr(), size, IRQ_SIDE);
                IRQ_HELD_SIZE[slot].store(size, Relaxed);
                IRQ_HELD[slot].store(p.as_ptr() as usize, Relaxed);
            }
            Err(_) => {
                IRQ_ALLOC_FAILS.fetch_add(1, Relaxed);
            }
        }
    }
}

ktest!(
    #[needs_memory]
    fn kmalloc_from_timer_interrupt_and_task_concurrently() {
        let _tidy = super::kmalloc::Tidy;
        let saved = interrupts::timer_state();
        IRQ_PAIRS.store(0, Relaxed);
        IRQ_RUNS.store(0, Relaxed);
        IRQ_CORRUPT.store(0, Relaxed);
        IRQ_ALLOC_FAILS.store(0, Relaxed);
        let violations = MIGHT_SLEEP_VIOLATIONS.load(Relaxed);
        assert!(x86_64::instructions::interrupts::are_enabled(), "tests run with interrupts enabled");

        interrupts::set_timer_handler(Some(stress_handler));
        let hz = interrupts::start_timer(TIMER_HZ).expect("timer rate");
        let mut held = [(core::ptr::null_mut::<u8>(), 0usize); HELD];
        let (mut main_pairs, mut corrupt, mut i) = (0u64, 0u64, 0u64);
        // Run until both sides together did TARGET_PAIRS and the handler ran often (a cap stops a
        // timer that never fires from hanging the suite; the assertions below then fail).
        // The handler's first HELD/4 runs only fill its slots, so 1000 runs are not yet 4000 pairs:
        // wait for both, as the assertions below require.
        while (main_pairs + IRQ_PAIRS.load(Relaxed) < TARGET_PAIRS
            || IRQ_RUNS.load(Relaxed) < 1000
            || IRQ_PAIRS.load(Relaxed) < 4000)
            && main_pairs < 20 * TARGET_PAIRS
        {
            let slot = (i % HELD as u64) as usize;
            let size = SIZES[((i * 5 + i / 7) % SIZES.len() as u64) as usize];
            let p = kmalloc(size, GfpFlags::GFP_KERNEL).expect("task-side kmalloc");
            fill(p.as_ptr(), size, MAIN_SIDE);
            let (old, old_size) = core::mem::replace(&mut held[slot], (p.as_ptr(), size));
            if !old.is_null() {
                corrupt += !intact(old, old_size, MAIN_SIDE) as u64;
                kfree(old).expect("task-side kfree");
                main_pairs += 1;
            }
            i += 1;
        }
        interrupts::stop_timer();
        interrupts::set_timer_handler(None);
        interrupts::restore_timer_state(saved);

        // Release what both sides still hold (the handler can no longer run).
        for (p, size) in held {
            if !p.is_null() {
                corrupt += !intact(p, size, MAIN_SIDE) as u64;
                kfree(p).unwrap();
            }
        }
        for (slot, size) in IRQ_HELD.iter().zip(&IRQ_HELD_SIZE) {
            let p = slot.swap(0, Relaxed) as *mut u8;
            if !p.is_null() {
                corrupt += !intact(p, size.load(Relaxed), IRQ_SIDE) as u64;
                kfree(p).unwrap();
            }
        }
        let (irq_pairs, runs) = (IRQ_PAIRS.load(Relaxed), IRQ_RUNS.load(Relaxed));
        crate::info!(
            "kmalloc irq stress: {main_pairs} task pairs + {irq_pairs} interrupt pairs ({runs} timer interrupts at {hz} Hz)"
        );
        assert_eq!(corrupt + IRQ_CORRUPT.load(Relaxed), 0, "objects corrupted or refused on free");
        assert_eq!(IRQ_ALLOC_FAILS.load(Relaxed), 0, "GFP_ATOMIC kmalloc failed in the handler");
        assert!(main_pairs + irq_pairs >= TARGET_PAIRS, "only {} pairs", main_pairs + irq_pairs);
        assert!(runs >= 1000 && irq_pairs >= 4000, "the handler ran only {runs} times ({irq_pairs} pairs)");
        assert_eq!(MIGHT_SLEEP_VIOLATIONS.load(Relaxed), violations, "GFP_ATOMIC counted as a violation");
        for size in KMALLOC_SIZES {
            let cache = kmalloc_instance().kmalloc_slab(size, GfpFlags::GFP_KERNEL).unwrap();
            if let Err(e) = cache.validate() {
                panic!("{} inconsistent after the interrupt stress: {e}", cache.name());
            }
        }
    }
);

static SLEEP_RESULT: AtomicUsize = AtomicUsize::new(0);
static SLEEP_DONE: AtomicUsize = AtomicUsize::new(0);

/// Timer handler making one GFP_KERNEL request (a bug the kernel must report), then none.
fn sleeping_handler() {
    if SLEEP_DONE.load(Relaxed) == 0 {
        let p = kmalloc(48, GfpFlags::GFP_KERNEL).map_or(0, |p| p.as_ptr() as usize);
        SLEEP_RESULT.store(p, Relaxed);
        SLEEP_DONE.store(1, Relaxed);
    }
}

ktest!(
    #[needs_memory]
    fn gfp_kernel_in_interrupt_is_reported() {
        let _tidy = super::kmalloc::Tidy;
        let saved = interrupts::timer_state();
        SLEEP_DONE.store(0, Relaxed);
        let before = MIGHT_SLEEP_VIOLATIONS.load(Relaxed);
        interrupts::set_timer_handler(Some(sleeping_handler));
        interrupts::start_timer(1000).expect("timer rate");
        let start = interrupts::ticks();
        while SLEEP_DONE.load(Relaxed) == 0 && interrupts::ticks() - start < 1000 {
            x86_64::instructions::hlt();
        }
        interrupts::stop_timer();
        interrupts::set_timer_handler(None);
        interrupts::restore_timer_state(saved);
        assert_eq!(SLEEP_DONE.load(Relaxed), 1, "the timer handler never ran");
        assert_eq!(
            MIGHT_SLEEP_VIOLATIONS.load(Relaxed),
            before + 1,
            "GFP_KERNEL in interrupt context was not detected"
        );
        // The allocation itself went through, as on Linux (it never sleeps here).
        let p = SLEEP_RESULT.load(Relaxed) as *const u8;
        assert!(!p.is_null());
        kfree(p).unwrap();
        // Outside interrupt context the same request is fine.
        let q = kmalloc(48, GfpFlags::GFP_KERNEL).unwrap();
        kfree(q.as_ptr()).unwrap();
        assert_eq!(MIGHT_SLEEP_VIOLATIONS.load(Relaxed), before + 1);
    }
);
