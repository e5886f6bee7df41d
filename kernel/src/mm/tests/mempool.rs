//! In-kernel tests of memory pools (`mm::mempool`) on kmalloc, the page allocator and a slab
//! cache, exhausted by fault injection at 100% (`failslab`, `fail_page_alloc`), each checked
//! against 6.12's `mm/mempool.c`.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

use ::mm::slab::SlabFlags;
use ::mm::{AllocError, GfpFlags};

use crate::arch::interrupts;
use crate::mm::fault_inject::{self, set};
use crate::mm::mempool::*;
use crate::mm::slab::{kmalloc_instance, kmem_cache_create, kmem_cache_destroy, shrink_all};

use super::free_pages_drained;
use super::kmalloc::Tidy;

const KERNEL: GfpFlags = GfpFlags::GFP_KERNEL;
const ATOMIC: GfpFlags = GfpFlags::GFP_ATOMIC;

/// Puts the attributes back as the boot command line had them, however the test ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        fault_inject::reset_to_boot();
    }
}

/// Every call of `which` fails, sleeping ones too, quietly.
fn fail_all(which: &str) {
    fault_inject::reset();
    let mut attrs =
        [("ignore-gfp-wait", "N"), ("verbose", "0"), ("times", "-1"), ("probability", "100")].to_vec();
    if which == "fail_page_alloc" {
        attrs.push(("min-order", "0"));
    }
    for (a, v) in attrs {
        set(which, a, v).unwrap_or_else(|e| panic!("{which}/{a}={v}: {e}"));
    }
}

fn stop(which: &str) {
    set(which, "probability", "0").unwrap();
}

crate::ktest!(
    // mm/mempool.c, mempool_alloc_noprof(): with kmalloc failing every call the pool still
    // gives its min_nr reserved elements; GFP_ATOMIC then gets NULL (Exhausted) and GFP_KERNEL
    // waits, bounded here (TimedOut). mempool_free() refills the reserve first.
    fn mempool_kmalloc_pool_gives_min_nr_under_failslab_and_frees_refill() {
        let _tidy = Tidy;
        let _restore = Restore;
        // Under a `failslab=`/`fail_page_alloc=` boot the test starts from no injection.
        fault_inject::reset();
        let cache = kmalloc_instance().kmalloc_slab(192, KERNEL).unwrap();
        let live = cache.live_objects();
        let pool = mempool_create_kmalloc_pool(4, 192).unwrap();
        assert_eq!(cache.live_objects(), live + 4, "mempool_init_node preallocated min_nr");
        fail_all("failslab");
        let mut got = alloc::vec::Vec::new();
        for _ in 0..4 {
            got.push(mempool_alloc(&pool, KERNEL).expect("a reserved element"));
        }
        assert_eq!(pool.curr_nr(), 0);
        assert_eq!(mempool_alloc(&pool, ATOMIC), Err(MempoolError::Exhausted));
        assert_eq!(mempool_alloc(&pool, KERNEL), Err(MempoolError::TimedOut { rounds: MEMPOOL_WAIT_ROUNDS }));
        for p in &got {
            // SAFETY: each element is a live 192-byte kmalloc block the test owns.
            unsafe { p.as_ptr().write_bytes(0x5a, 192) };
        }
        for p in got {
            mempool_free(Some(p), &pool).unwrap();
        }
        assert_eq!(pool.curr_nr(), 4, "the frees refilled the reserve");
        stop("failslab");
        mempool_destroy(pool).map_err(|(_, e)| e).unwrap();
        assert_eq!(cache.live_objects(), live, "destroy gave the reserve back to kmalloc");
    }
);

crate::ktest!(
    // mm/mempool.c, mempool_alloc_pages()/mempool_free_pages() under mempool_alloc_noprof():
    // with fail_page_alloc at 100% the page pool still serves min_nr blocks; nothing is lost.
    fn mempool_page_pool_gives_min_nr_under_fail_page_alloc() {
        let _restore = Restore;
        // Under a `failslab=`/`fail_page_alloc=` boot the test starts from no injection.
        fault_inject::reset();
        // The reserve array is a kmalloc block: empty slabs go back first, so pages compare.
        shrink_all();
        let free = free_pages_drained();
        let pool = mempool_create_page_pool(3, 1).unwrap();
        fail_all("fail_page_alloc");
        let a = mempool_alloc(&pool, KERNEL).unwrap();
        let b = mempool_alloc(&pool, ATOMIC).unwrap();
        let c = mempool_alloc(&pool, GfpFlags::GFP_NOIO).unwrap();
        assert_eq!(mempool_alloc(&pool, GfpFlags::GFP_NOWAIT), Err(MempoolError::Exhausted));
        for f in [a, b, c] {
            mempool_free(Some(f), &pool).unwrap();
        }
        assert_eq!(pool.curr_nr(), 3);
        stop("fail_page_alloc");
        // mm/mempool.c, mempool_free(): with the reserve full the element goes to the allocator.
        let d = mempool_alloc(&pool, KERNEL).unwrap();
        assert_eq!(pool.curr_nr(), 3, "the allocator served it: reserve untouched");
        mempool_free(Some(d), &pool).unwrap();
        mempool_destroy(pool).map_err(|(_, e)| e).unwrap();
        shrink_all();
        assert_eq!(free_pages_drained(), free, "every page back");
    }
);

crate::ktest!(
    // mm/mempool.c, mempool_alloc_slab()/mempool_free_slab(): a pool over a slab cache; the
    // cache outlives the pool (a borrow here) and is destroyed empty after it.
    fn mempool_slab_pool_serves_its_cache_and_resizes() {
        let _tidy = Tidy;
        let _restore = Restore;
        // Under a `failslab=`/`fail_page_alloc=` boot the test starts from no injection.
        fault_inject::reset();
        let cache = kmem_cache_create("mempool-test", 72, 0, SlabFlags::empty(), None).unwrap();
        {
            let pool = mempool_create_slab_pool(2, &cache).unwrap();
            assert_eq!(cache.live_objects(), 2);
            // mm/mempool.c, mempool_resize(): grow allocates up to new_min_nr, shrink frees.
            mempool_resize(&pool, 5).unwrap();
            assert_eq!((pool.curr_nr(), pool.min_nr(), cache.live_objects()), (5, 5, 5));
            mempool_resize(&pool, 1).unwrap();
            assert_eq!((pool.curr_nr(), pool.min_nr(), cache.live_objects()), (1, 1, 1));
            fail_all("failslab");
            let e = mempool_alloc(&pool, KERNEL).unwrap();
            assert_eq!(mempool_alloc(&pool, ATOMIC), Err(MempoolError::Exhausted));
            // mm/mempool.c, mempool_resize(): the new array's kmalloc_array fails: -ENOMEM,
            // the pool as it was.
            let r = mempool_resize(&pool, 2);
            stop("failslab");
            assert_eq!(r, Err(MempoolError::Alloc(AllocError::FaultInjected { by: "failslab" })));
            assert_eq!((pool.curr_nr(), pool.min_nr()), (0, 1));
            mempool_free(Some(e), &pool).unwrap();
            assert_eq!(pool.curr_nr(), 1, "refilled");
            mempool_destroy(pool).map_err(|(_, e)| e).unwrap();
        }
        assert_eq!(cache.live_objects(), 0);
        kmem_cache_destroy(cache).map_err(|(_, e)| e).unwrap();
    }
);

crate::ktest!(
    // mm/mempool.c, mempool_init_node(): a preallocation that fails fails the create and
    // mempool_exit() frees what was got; fault injection fails the third element.
    fn mempool_create_fails_cleanly_when_preallocation_fails() {
        let _tidy = Tidy;
        let _restore = Restore;
        // Under a `failslab=`/`fail_page_alloc=` boot the test starts from no injection.
        fault_inject::reset();
        let cache = kmalloc_instance().kmalloc_slab(192, KERNEL).unwrap();
        let live = cache.live_objects();
        fail_all("failslab");
        // The reserve array (kmalloc-32) and two elements get through, the third fails.
        set("failslab", "space", "0").unwrap();
        set("failslab", "interval", "4").unwrap();
        let r = mempool_create_kmalloc_pool(4, 192);
        stop("failslab");
        assert_eq!(r.err(), Some(MempoolError::Alloc(AllocError::FaultInjected { by: "failslab" })));
        assert_eq!(cache.live_objects(), live, "the preallocated elements were freed");
    }
);

crate::ktest!(
    // Bad inputs. mm/mempool.c, mempool_free(): NULL is a no-op. mempool_alloc_noprof():
    // VM_WARN_ON_ONCE(__GFP_ZERO). mempool_resize(): BUG_ON(new_min_nr <= 0). mempool_destroy()
    // / mempool_exit(): no check for elements out (the pool is freed under them). Here each is a
    // typed error with the pool unchanged.
    #[needs_memory]
    fn mempool_bad_inputs_are_refused_and_change_nothing() {
        let _tidy = Tidy;
        let pool = mempool_create_kmalloc_pool(2, 64).unwrap();
        assert_eq!(mempool_free(None, &pool), Ok(()));
        assert_eq!(mempool_alloc(&pool, KERNEL | GfpFlags::__GFP_ZERO), Err(MempoolError::ZeroFlag));
        assert_eq!(mempool_resize(&pool, 0), Err(MempoolError::BadMinNr));
        let e = mempool_alloc_preallocated(&pool).unwrap();
        let (pool, err) = mempool_destroy(pool).err().expect("an element is out");
        assert_eq!(err, MempoolError::ElementsOutstanding { outstanding: 1, curr_nr: 1, min_nr: 2 });
        mempool_free(Some(e), &pool).unwrap();
        assert_eq!(mempool_free(Some(e), &pool), Err(MempoolError::NothingOutstanding), "double free");
        assert_eq!((pool.curr_nr(), pool.outstanding()), (2, 0));
        mempool_destroy(pool).map_err(|(_, e)| e).unwrap();
    }
);

/// The pool the timer handler frees into, and the element it holds for it.
static IRQ_POOL: AtomicPtr<Mempool<KmallocPool>> = AtomicPtr::new(core::ptr::null_mut());
static IRQ_HELD: AtomicUsize = AtomicUsize::new(0);
static IRQ_RUNS: AtomicU64 = AtomicU64::new(0);
static IRQ_FREED: AtomicU64 = AtomicU64::new(0);

/// Timer handler: after a few interrupts, gives the held element back (mempool_free from
/// interrupt context, the pool lock taken with interrupts off).
fn freeing_handler() {
    if IRQ_RUNS.fetch_add(1, Relaxed) < 20 {
        return;
    }
    let held = IRQ_HELD.swap(0, Relaxed);
    let pool = IRQ_POOL.load(Acquire);
    if held != 0 && !pool.is_null() {
        // SAFETY: the test keeps the pool alive until the handler is stopped and unpublished.
        let pool = unsafe { &*pool };
        if mempool_free(NonNull::new(held as *mut u8), pool).is_ok() {
            IRQ_FREED.fetch_add(1, Relaxed);
        }
    }
}

crate::ktest!(
    // mm/mempool.c, mempool_alloc_noprof(): a blocking caller with the allocator failing and
    // the reserve empty waits for a mempool_free() (here from the timer interrupt), whose
    // add_element() + wake_up(&pool->wait) hands it the element on repeat_alloc.
    fn mempool_blocking_alloc_waits_for_a_free_from_an_interrupt() {
        let _tidy = Tidy;
        let _restore = Restore;
        // Under a `failslab=`/`fail_page_alloc=` boot the test starts from no injection.
        fault_inject::reset();
        let saved = interrupts::timer_state();
        let pool = mempool_create_kmalloc_pool(1, 96).unwrap();
        fail_all("failslab");
        let e = mempool_alloc(&pool, KERNEL).unwrap();
        assert_eq!(pool.curr_nr(), 0);
        IRQ_RUNS.store(0, Relaxed);
        IRQ_FREED.store(0, Relaxed);
        IRQ_HELD.store(e.as_ptr() as usize, Relaxed);
        IRQ_POOL.store(&pool as *const _ as *mut _, Release);
        interrupts::set_timer_handler(Some(freeing_handler));
        interrupts::start_timer(1000).expect("timer rate");
        let got = mempool_alloc(&pool, KERNEL);
        interrupts::stop_timer();
        interrupts::set_timer_handler(None);
        interrupts::restore_timer_state(saved);
        IRQ_POOL.store(core::ptr::null_mut(), Release);
        stop("failslab");
        assert_eq!(IRQ_FREED.load(Relaxed), 1, "the handler freed the element");
        assert_eq!(got, Ok(e), "the waiter got the element the interrupt freed");
        assert!(IRQ_RUNS.load(Relaxed) > 20, "it waited for the interrupts");
        mempool_free(Some(e), &pool).unwrap();
        mempool_destroy(pool).map_err(|(_, e)| e).unwrap();
    }
);
