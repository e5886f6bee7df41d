//! The kernel's slab allocator and kmalloc family: the `mm` crate's SLUB-like caches over the
//! buddy allocator of node 0, with the kernel-only parts added here — `might_sleep` checks, the
//! allocation-failure warning, the report of a refused free, the `slab_debug=` boot option and the
//! hardening seed.

use core::alloc::Layout;
use core::ptr::NonNull;

use ::mm::buddy::Node;
use ::mm::kmalloc::{Kmalloc, KMALLOC_MAX_SIZE};
use ::mm::slab::{CacheHandle, SlabAllocator, SlabError, SlabFlags};
use ::mm::{AllocError, GfpFlags, PAGE_SIZE};

use super::page_alloc::{might_sleep_if, register_shrinker};

/// A slab cache created by [`kmem_cache_create`].
pub type KmemCache = CacheHandle<'static, Node>;

static KMALLOC: spin::Once<Kmalloc<'static, Node>> = spin::Once::new();

/// The kmalloc instance (and through it the slab allocator). Panics before [`init`].
#[inline(always)]
pub fn kmalloc_instance() -> &'static Kmalloc<'static, Node> {
    KMALLOC.get().expect("kmalloc used before mm::slab::init")
}

/// Whether [`init`] has run (the global allocator refuses before it).
pub fn is_ready() -> bool {
    KMALLOC.get().is_some()
}

/// The slab allocator: `kmem_cache_create`, the cache list, `slab_debug`.
pub fn slab() -> &'static SlabAllocator<'static, Node> {
    kmalloc_instance().slab()
}

/// Bootstraps the slab allocator and the kmalloc caches. `slab_debug` is the boot option's value
/// (Linux syntax: `FZPU` for all caches, `FZ,kmalloc-64` for some).
pub fn init(slab_debug: Option<&'static str>) {
    let debug = match slab_debug.map(::mm::slab::debug::parse_slab_debug) {
        None => ::mm::slab::debug::SlabDebugConfig::NONE,
        Some(Ok(cfg)) => {
            crate::info!(
                "slab: slab_debug={} (debug checks on the caches it names)",
                slab_debug.unwrap_or("")
            );
            cfg
        }
        Some(Err(e)) => {
            crate::warn!("slab: ignoring slab_debug={}: {e}", slab_debug.unwrap_or(""));
            ::mm::slab::debug::SlabDebugConfig::NONE
        }
    };
    // Per-CPU slabs are indexed by the running CPU: `mm::cpus::this_cpu`, read from GS.
    ::mm::slab::debug::set_corruption_report_fn(super::slab_bug::report_isolated);
    let slab_allocator = SlabAllocator::new(super::node(), hardening_seed(), debug)
        .unwrap_or_else(|e| panic!("cannot bootstrap the slab allocator: {e}"));
    let kmalloc =
        Kmalloc::new(slab_allocator).unwrap_or_else(|e| panic!("cannot create the kmalloc caches: {e}"));
    KMALLOC.call_once(|| kmalloc);
    register_shrinker(shrink_all);
}

/// Returns every empty slab of every cache to the buddy allocator (the page allocator's
/// reclaim hook); returns the pages freed. Where it can, it first drains every CPU's per-CPU
/// slabs and sheaves ([`flush_all_cpus`]), so that their objects' slabs can empty too.
pub fn shrink_all() -> usize {
    flush_all_cpus() + slab().shrink_all()
}

/// Linux's `flush_all()`: every online CPU drains its per-CPU slabs and sheaves of every cache
/// ([`flush_this_cpu`]), the other CPUs through an IPI (`on_each_cpu`), so that
/// `/proc/slabinfo` and object counts are exact afterwards. Returns the pages freed.
///
/// Cross-CPU calls need interrupts enabled here (a CPU holding an `IrqSpinLock` the targets
/// spin on, with interrupts off, would deadlock them): every allocator lock disables
/// interrupts, so a call from inside the allocator (reclaim under a lock) or from an interrupt
/// handler drains only the running CPU, which is always safe.
pub fn flush_all_cpus() -> usize {
    use core::sync::atomic::{AtomicUsize, Ordering};
    let can_ipi = ::mm::cpus::num_online_cpus() > 1
        && !crate::arch::in_interrupt()
        && !crate::arch::interrupts::irqs_disabled();
    if !can_ipi {
        return flush_this_cpu();
    }
    let freed = AtomicUsize::new(0);
    let flush = || {
        freed.fetch_add(flush_this_cpu(), Ordering::Relaxed);
    };
    if crate::arch::smp_call::on_each_cpu(&flush).is_err() {
        // Refused (and reported) only when the conditions above changed under us.
        return flush_this_cpu();
    }
    freed.into_inner()
}

/// Drains this CPU's slab of every cache (`flush_cpu_slab`), so that `/proc/slabinfo` counts
/// only objects in use (objects parked on a CPU's private list count as active, as on Linux).
/// An SMP kernel runs it on every CPU (IPI) to drain them all. Returns the pages freed.
pub fn flush_this_cpu() -> usize {
    slab().flush_this_cpu()
}

/// The per-boot random value that free pointers are encoded with (`SLAB_FREELIST_HARDENED`):
/// RDRAND when the CPU has it, else the TSC mixed.
fn hardening_seed() -> usize {
    let mut v: u64 = 0;
    // SAFETY: CPUID leaf 1 is always available on x86_64; bit 30 of ECX says RDRAND exists, and
    // RDRAND only writes its output register and the carry flag.
    let ok = unsafe {
        let has_rdrand = core::arch::x86_64::__cpuid(1).ecx & (1 << 30) != 0;
        has_rdrand && core::arch::x86_64::_rdrand64_step(&mut v) == 1
    };
    if !ok {
        v = crate::arch::rdtsc().wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    v as usize | 1
}

/// Linux's `warn_alloc` for kmalloc: one line unless `__GFP_NOWARN`. `loc` is the caller of the
/// kmalloc entry point (taken there: inside a `map_err` closure it would be this file). Cold and
/// out of line: the formatting stays off the allocation fast path.
#[cold]
#[inline(never)]
pub(crate) fn warn_failure(
    what: &str,
    size: usize,
    gfp: GfpFlags,
    e: AllocError,
    loc: &'static core::panic::Location<'static>,
) -> AllocError {
    super::page_alloc::ALLOC_FAILURES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    // An injected failure was reported by fault injection itself (`FAULT_INJECTION: ...`).
    if !gfp.contains(GfpFlags::__GFP_NOWARN)
        && !matches!(e, AllocError::FaultInjected { .. })
        && crate::log::ratelimit(loc)
    {
        crate::warn!(
            "{what}({size}) failure: mode:{:#x}({gfp:?}) at {}:{}: {e}",
            gfp.bits(),
            loc.file(),
            loc.line()
        );
    }
    e
}

/// A refused free is a bug in the caller (Linux BUGs or warns); report it, keep running. `loc` is
/// taken by the `#[track_caller]` entry point itself: inside the `inspect_err` closures the
/// caller location would be this file.
#[cold]
#[inline(never)]
fn report_bad_free(what: &str, e: &SlabError, loc: &'static core::panic::Location<'static>) {
    if !crate::log::ratelimit(loc) {
        return;
    }
    if let SlabError::Corrupted(c) = e {
        super::slab_bug::print_slab_bug(c, "not freed: isolated, never handed out again");
    }
    crate::error!("{what} refused at {}:{}: {e}", loc.file(), loc.line());
}

/// `kmalloc(size, gfp)`: `size` bytes, physically contiguous, in the direct map.
// Always inlined: with the `init_on_alloc` test in the fast path the compiler stopped inlining
// it into some callers, and the out-of-line call (its `Result` through memory) cost 40
// instructions per pair in the SMP bench loop.
#[track_caller]
#[inline(always)]
pub fn kmalloc(size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    might_sleep_if(gfp);
    let loc = core::panic::Location::caller();
    kmalloc_instance().kmalloc(size, gfp).map_err(|e| warn_failure("kmalloc", size, gfp, e, loc))
}

/// `kzalloc`: zeroed `kmalloc`.
#[track_caller]
pub fn kzalloc(size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    might_sleep_if(gfp);
    let loc = core::panic::Location::caller();
    kmalloc_instance().kzalloc(size, gfp).map_err(|e| warn_failure("kzalloc", size, gfp, e, loc))
}

/// `kmalloc_array`: `n * size` bytes; an overflowing product is an error, not a wrap.
#[track_caller]
pub fn kmalloc_array(n: usize, size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    might_sleep_if(gfp);
    let loc = core::panic::Location::caller();
    kmalloc_instance()
        .kmalloc_array(n, size, gfp)
        .map_err(|e| warn_failure("kmalloc_array", n.wrapping_mul(size), gfp, e, loc))
}

/// `kcalloc`: zeroed `kmalloc_array`.
#[track_caller]
pub fn kcalloc(n: usize, size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    might_sleep_if(gfp);
    let loc = core::panic::Location::caller();
    kmalloc_instance()
        .kcalloc(n, size, gfp)
        .map_err(|e| warn_failure("kcalloc", n.wrapping_mul(size), gfp, e, loc))
}

/// `krealloc`: the same block while `new_size` fits it, else a new one with the contents copied;
/// on failure the old block stays valid.
#[track_caller]
pub fn krealloc(ptr: *const u8, new_size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, SlabError> {
    might_sleep_if(gfp);
    let loc = core::panic::Location::caller();
    kmalloc_instance().krealloc(ptr, new_size, gfp).inspect_err(|e| match e {
        SlabError::Alloc(a) => {
            warn_failure("krealloc", new_size, gfp, *a, loc);
        }
        other => report_bad_free("krealloc", other, loc),
    })
}

/// `ksize`: the usable size of a kmalloc block.
pub fn ksize(ptr: *const u8) -> Result<usize, SlabError> {
    kmalloc_instance().ksize(ptr)
}

/// `kfree`. Null and `ZERO_SIZE_PTR` are fine; a pointer kmalloc does not own, an interior
/// pointer or a double free is refused, reported and changes nothing.
#[track_caller]
#[inline]
pub fn kfree(ptr: *const u8) -> Result<(), SlabError> {
    let km = kmalloc_instance();
    // The fast path returns a bool, so the 80-byte error type is only built (and copied) on the
    // slow path.
    if km.kfree_fast(ptr) {
        return Ok(());
    }
    kfree_slow(km, ptr)
}

/// `kfree` of a block the caller knows is no slab object (the global allocator, from the
/// `Layout`): straight to the path that frees kmalloc-large blocks and reports bad pointers.
#[track_caller]
pub(crate) fn kfree_large(ptr: *const u8) -> Result<(), SlabError> {
    kfree_slow(kmalloc_instance(), ptr)
}

/// `#[track_caller]` too, so the free track of debug caches and the report name the caller of
/// [`kfree`].
#[track_caller]
#[inline(never)]
fn kfree_slow(km: &'static Kmalloc<'static, Node>, ptr: *const u8) -> Result<(), SlabError> {
    let loc = core::panic::Location::caller();
    km.kfree(ptr).inspect_err(|e| report_bad_free("kfree", e, loc))
}

/// `kfree_sensitive`: zeroes the block before freeing it.
#[track_caller]
pub fn kfree_sensitive(ptr: *const u8) -> Result<(), SlabError> {
    let loc = core::panic::Location::caller();
    kmalloc_instance().kfree_sensitive(ptr).inspect_err(|e| report_bad_free("kfree_sensitive", e, loc))
}

/// `kmem_cache_create(name, size, align, flags, ctor)`. A refusal (bad size or alignment, no
/// memory for the cache) is reported with the caller.
#[track_caller]
pub fn kmem_cache_create(
    name: &'static str,
    size: usize,
    align: usize,
    flags: SlabFlags,
    ctor: Option<fn(*mut u8)>,
) -> Result<KmemCache, SlabError> {
    let loc = core::panic::Location::caller();
    if crate::arch::in_interrupt() {
        // Linux's takes `slab_mutex` (it may sleep): a bug in the caller, refused here.
        let e = SlabError::InInterrupt { what: "kmem_cache_create", cache: name };
        report_bad_free("kmem_cache_create", &e, loc);
        return Err(e);
    }
    slab().kmem_cache_create(name, size, align, flags, ctor).inspect_err(|e| match e {
        SlabError::Alloc(a) => {
            warn_failure("kmem_cache_create", size, GfpFlags::GFP_KERNEL, *a, loc);
        }
        other => report_bad_free("kmem_cache_create", other, loc),
    })
}

/// `kmem_cache_alloc(cache, gfp)`, with the allocation-failure warning.
#[track_caller]
pub fn kmem_cache_alloc(cache: &KmemCache, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    might_sleep_if(gfp);
    let loc = core::panic::Location::caller();
    cache.alloc(gfp).map_err(|e| warn_failure("kmem_cache_alloc", cache.object_size(), gfp, e, loc))
}

/// `kmem_cache_free(cache, ptr)`: a pointer of another cache, an interior pointer or a double
/// free is refused, reported with the caller and changes nothing.
#[track_caller]
pub fn kmem_cache_free(cache: &KmemCache, ptr: NonNull<u8>) -> Result<(), SlabError> {
    let loc = core::panic::Location::caller();
    cache.free(ptr).inspect_err(|e| report_bad_free("kmem_cache_free", e, loc))
}

/// `kmem_cache_destroy(cache)`: while objects are allocated, 6.12's report and warning
/// (`mm/slab_common.c`, `kmem_cache_destroy`; `mm/slub.c`, `__kmem_cache_shutdown`): the empty
/// slabs are freed, the partial slabs still in use listed (`slab_err` "Objects remaining in %s
/// on __kmem_cache_shutdown()", each object), then `WARN(err, "%s %s: Slab cache still has
/// objects when called from %pS")`; the cache is not destroyed and its objects are intact.
/// 6.12 unlinks and leaks such a cache; here the handle is given back (`Err`), still listed,
/// so the caller can free the objects and destroy it again.
#[track_caller]
pub fn kmem_cache_destroy(cache: KmemCache) -> Result<(), (KmemCache, SlabError)> {
    let loc = core::panic::Location::caller();
    if crate::arch::in_interrupt() {
        let e = SlabError::InInterrupt { what: "kmem_cache_destroy", cache: cache.name() };
        report_bad_free("kmem_cache_destroy", &e, loc);
        return Err((cache, e));
    }
    cache.destroy().inspect_err(|(c, e)| match e {
        SlabError::CacheBusy { .. } => report_destroy_with_objects(c, loc),
        _ => report_bad_free("kmem_cache_destroy", e, loc),
    })
}

/// The lines 6.12 prints for `kmem_cache_destroy` of a cache with objects (see
/// [`kmem_cache_destroy`]), the `%pS` caller being the source location.
#[cold]
#[inline(never)]
fn report_destroy_with_objects(cache: &KmemCache, loc: &'static core::panic::Location<'static>) {
    // __kmem_cache_shutdown: flush_all_cpus_locked, then free_partial discards the empty slabs.
    cache.shrink();
    let name = cache.name();
    let listed = cache.objects_remaining(
        |slab, objects, inuse, fp| {
            // slab_err -> slab_bug, print_slab_info (dump_stack and the taint are not modelled).
            kprintln!("=============================================================================");
            kprintln!("BUG {name} (Not tainted): Objects remaining in {name} on __kmem_cache_shutdown()");
            kprintln!("-----------------------------------------------------------------------------");
            kprintln!();
            kprintln!("Slab {slab:#x} objects={objects} used={inuse} fp={fp:#x} flags=(slab)");
        },
        |object, offset| kprintln!("Object {object:#x} @offset={offset}"),
    );
    if let Err(e) = listed {
        crate::error!("kmem_cache_destroy {name}: listing the remaining objects stopped: {e}");
    }
    kprintln!("------------[ cut here ]------------");
    kprintln!(
        "kmem_cache_destroy {name}: Slab cache still has objects when called from {}:{}",
        loc.file(),
        loc.line()
    );
    kprintln!("WARNING: CPU: {} at mm/slab_common.c kmem_cache_destroy", crate::arch::percpu::cpu_id());
}

/// The kmalloc request that satisfies `layout`: kmalloc aligns power-of-two sizes naturally (up
/// to 4 MiB, since large blocks are buddy blocks aligned to their order) and everything to 8, so
/// a stricter alignment is met by asking for a power of two at least as large as it.
pub fn kmalloc_size_for(layout: Layout) -> Option<usize> {
    let size = layout.size().max(1);
    let size =
        if layout.align() <= 8 { size } else { size.max(layout.align()).checked_next_power_of_two()? };
    (size <= KMALLOC_MAX_SIZE).then_some(size)
}

/// GFP flags for allocations that carry none (the global allocator): never sleep in interrupt
/// context.
pub fn implicit_gfp() -> GfpFlags {
    if crate::arch::in_interrupt() {
        GfpFlags::GFP_ATOMIC
    } else {
        GfpFlags::GFP_KERNEL
    }
}

const _: () = assert!(PAGE_SIZE == 4096);
