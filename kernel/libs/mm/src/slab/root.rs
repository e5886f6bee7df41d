//! The bootstrap cache `kmem_cache`, cache creation/destruction and the list of caches.
//!
//! Like Linux, cache structs are slab objects of the cache `kmem_cache`. That cache's own struct is
//! object 0 of its first slab: [`SlabAllocator::new`] builds it on the stack, makes a slab, takes
//! one object and moves the struct there. Nothing needs a heap, and [`SlabAllocator`] is a
//! movable handle (a pointer to that root cache).

use core::fmt;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::Ordering::Relaxed;

use crate::addr::{DirectMap, Pfn};
use crate::auto_init::AutoInit;
use crate::fault_inject::{FailSlab, FaultConfigError};
use crate::gfp::GfpFlags;
use crate::page::{Page, PageProvider, PageState};
use crate::AllocError;

use super::cache::KmemCache;
use super::debug::SlabDebugConfig;
use super::layout::{calculate_alignment, calculate_sizes, MAX_OBJECT_SIZE};
use super::{SlabError, SlabFlags};

/// The block (slab or kmalloc-large) containing direct-map address `addr`: its head pfn and
/// descriptor. O(1) without loops: the descriptor of the address's frame is the head (state
/// `Slab`/`KmallocLarge`), or a compound tail naming its head (one more lookup, then the head's
/// extent is checked so that a stale tag cannot name a wrong owner).
#[inline(always)]
pub(crate) fn find_block<'p, P: PageProvider>(
    provider: &'p P,
    dm: &DirectMap,
    addr: usize,
) -> Option<(Pfn, &'p Page)> {
    // `DirectMap::phys` of an address, without making a pointer out of an integer.
    let base = dm.pfn_to_virt(Pfn(0)) as usize;
    let pfn = Pfn((addr.wrapping_sub(base) as u64) >> crate::addr::PAGE_SHIFT);
    let page = provider.descriptor(pfn)?;
    if matches!(page.state(), PageState::Slab | PageState::KmallocLarge) {
        return Some((pfn, page));
    }
    let head = page.compound_head()?;
    let hp = provider.descriptor(head)?;
    (matches!(hp.state(), PageState::Slab | PageState::KmallocLarge)
        && pfn.0.wrapping_sub(head.0) < 1u64 << hp.order())
    .then_some((head, hp))
}

/// The fast paths' owner lookup: the `Slab` head (pfn, descriptor) of the slab containing
/// direct-map address `addr`, where `base` is the direct map's address of physical 0. As
/// [`find_block`], for slabs only, with one-byte state compares.
#[inline(always)]
pub(crate) fn find_slab<P: PageProvider>(provider: &P, base: usize, addr: usize) -> Option<(u32, &Page)> {
    let pfn = (addr.wrapping_sub(base) as u64) >> crate::addr::PAGE_SHIFT;
    let page = provider.descriptor(Pfn(pfn))?;
    if page.state_is(PageState::Slab) {
        // Slab pfns fit 32 bits (`new_slab` refuses others).
        return Some((pfn as u32, page));
    }
    let head = page.compound_head()?;
    let hp = provider.descriptor(head)?;
    (hp.state_is(PageState::Slab) && pfn.wrapping_sub(head.0).wrapping_shr(hp.order()) == 0)
        .then_some((head.0 as u32, hp))
}

/// Handle on the slab allocator: the root cache `kmem_cache` that holds every cache struct, the
/// list of caches and the `slab_debug` configuration. Cheap to copy and move.
pub struct SlabAllocator<'p, P: PageProvider> {
    root: NonNull<KmemCache<'p, P>>,
}

impl<P: PageProvider> Clone for SlabAllocator<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: PageProvider> Copy for SlabAllocator<'_, P> {}

// SAFETY: the handle points at the root cache, which is `Sync` and never freed.
unsafe impl<P: PageProvider> Send for SlabAllocator<'_, P> {}
// SAFETY: as above.
unsafe impl<P: PageProvider> Sync for SlabAllocator<'_, P> {}

impl<'p, P: PageProvider> SlabAllocator<'p, P> {
    /// Bootstraps the allocator over `provider`. `random` seeds the free-pointer hardening (the
    /// kernel passes an rdrand/rdtsc-derived value); `debug` is the parsed `slab_debug=`.
    pub fn new(provider: &'p P, random: usize, debug: SlabDebugConfig) -> Result<Self, AllocError> {
        let size = core::mem::size_of::<KmemCache<'p, P>>() as u32;
        let flags = SlabFlags::SLAB_HWCACHE_ALIGN;
        let align = calculate_alignment(flags, core::mem::align_of::<KmemCache<'p, P>>() as u32, size);
        let geom = calculate_sizes(size, align, flags, false).expect("kmem_cache struct fits a slab");
        let tmp = KmemCache::new_value("kmem_cache", geom, None, provider, random, core::ptr::null(), debug);
        let (pfn, page) = tmp.new_slab(GfpFlags::GFP_KERNEL)?;
        let obj = {
            let mut st = tmp.state.lock();
            tmp.add_slab(&mut st, pfn, page);
            drop(st);
            // The slab is fresh and this is the only thread that knows it: the pop succeeds.
            tmp.alloc_traced(GfpFlags::GFP_KERNEL, size, core::panic::Location::caller())?
        };
        let root = obj.cast::<KmemCache<'p, P>>();
        let mut value = tmp;
        value.root = root.as_ptr();
        // SAFETY: `obj` is a fresh object of the slab, sized and aligned for a `KmemCache`
        // (the cache geometry was computed from its layout). The value moves in; its state holds
        // no pointer to itself (slabs are linked by pfn).
        unsafe { root.as_ptr().write(value) };
        // The slab's owner pointer still names the stack copy: point it at the moved struct.
        page.private.store(root.as_ptr().expose_provenance(), Relaxed);
        // SAFETY: just initialised; lives in a slab never freed.
        let r = unsafe { root.as_ref() };
        r.next.store(core::ptr::null_mut(), Relaxed);
        Ok(SlabAllocator { root })
    }

    /// The root cache `kmem_cache`.
    pub fn kmem_cache(&self) -> &KmemCache<'p, P> {
        // SAFETY: the root lives in its own slab, which is never freed.
        unsafe { self.root.as_ref() }
    }

    pub fn provider(&self) -> &'p P {
        self.kmem_cache().provider
    }

    pub fn debug_config(&self) -> SlabDebugConfig {
        self.kmem_cache().debug_cfg
    }

    /// `kmem_cache_create(name, size, align, flags, ctor)`. The `slab_debug` flags configured for
    /// `name` are added to `flags`. `ctor` runs on every object when its slab is populated.
    pub fn kmem_cache_create(
        &self,
        name: &'static str,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<fn(*mut u8)>,
    ) -> Result<CacheHandle<'p, P>, SlabError> {
        let invalid = |why| Err(SlabError::InvalidCache { name, why });
        if name.is_empty() {
            return invalid("empty name");
        }
        if size == 0 {
            return invalid("object size is 0");
        }
        if size > MAX_OBJECT_SIZE as usize {
            return invalid("object size above 4 MiB (the largest slab)");
        }
        if align != 0 && !align.is_power_of_two() {
            return invalid("alignment is not a power of two");
        }
        if align > MAX_OBJECT_SIZE as usize {
            // Checked before the narrowing below: 1 << 32 must not become an alignment of 0.
            return invalid("alignment above the slab size");
        }
        let root = self.kmem_cache();
        let flags = flags | root.debug_cfg.flags_for(name);
        let align = calculate_alignment(flags, align.max(1) as u32, size as u32);
        let Some(geom) = calculate_sizes(size as u32, align, flags, ctor.is_some()) else {
            return invalid("object and its debug metadata do not fit a slab");
        };
        if geom.align as usize > geom.slab_bytes() {
            // Slabs are aligned to their own size only.
            return invalid("alignment above the slab size");
        }
        let obj =
            root.alloc_traced(GfpFlags::GFP_KERNEL, root.geom.object_size, core::panic::Location::caller())?;
        let cache = obj.cast::<KmemCache<'p, P>>();
        let value = KmemCache::new_value(
            name,
            geom,
            ctor,
            root.provider,
            root.random,
            self.root.as_ptr(),
            root.debug_cfg,
        );
        value.apply_root_config(root);
        // SAFETY: a fresh `kmem_cache` object, sized and aligned for the struct.
        unsafe { cache.as_ptr().write(value) };
        // Link it after the root: the list is only walked under the registry lock.
        let _g = root.registry.lock();
        // SAFETY: just written; lives until `destroy` unlinks it under this lock.
        unsafe { cache.as_ref() }.next.store(root.next.load(Relaxed), Relaxed);
        root.next.store(cache.as_ptr(), Relaxed);
        Ok(CacheHandle { cache })
    }

    /// Sets `init_on_alloc=` / `init_on_free=` for every cache, and for caches created later.
    pub fn set_auto_init(&self, init_on_alloc: bool, init_on_free: bool) {
        let root = self.kmem_cache();
        root.auto_init.set(init_on_alloc, init_on_free);
        self.for_each_cache(|c| c.apply_root_config(root));
    }

    /// The `failslab` fault-injection attributes of this allocator (read them; change them with
    /// [`SlabAllocator::set_failslab`] and friends, which also switch the fast paths).
    pub fn failslab(&self) -> &FailSlab {
        &self.kmem_cache().failslab
    }

    /// Writes one `failslab` attribute by its debugfs name (`probability`, `times`,
    /// `ignore-gfp-wait`, `cache-filter`, ...).
    pub fn set_failslab(&self, attr: &str, value: &str) -> Result<(), FaultConfigError> {
        let r = self.failslab().set(attr, value);
        self.refresh_fast_flags();
        r
    }

    /// The `failslab=<interval>,<probability>,<space>,<times>` boot parameter.
    pub fn setup_failslab(&self, param: &str) -> Result<(), FaultConfigError> {
        let r = self.failslab().attr.setup(param);
        self.refresh_fast_flags();
        r
    }

    /// Sets the four main `failslab` attributes at once (probability 0 turns it off).
    pub fn configure_failslab(
        &self,
        interval: u64,
        probability: u32,
        space: i64,
        times: i64,
    ) -> Result<(), FaultConfigError> {
        let r = self.failslab().attr.configure(interval, probability, space, times);
        self.refresh_fast_flags();
        r
    }

    /// Pauses or resumes `failslab`, keeping its attributes (the fast paths follow).
    pub fn pause_failslab(&self, paused: bool) {
        self.failslab().attr.set_paused(paused);
        self.refresh_fast_flags();
    }

    fn refresh_fast_flags(&self) {
        let root = self.kmem_cache();
        self.for_each_cache(|c| c.apply_root_config(root));
    }

    /// The `init_on_alloc=` / `init_on_free=` switches of this allocator.
    pub fn auto_init(&self) -> &AutoInit {
        &self.kmem_cache().auto_init
    }

    /// Calls `f` on every cache (the root first), under the registry lock.
    pub fn for_each_cache(&self, mut f: impl FnMut(&KmemCache<'p, P>)) {
        self.kmem_cache().for_each_cache(&mut f)
    }

    /// Drains the running CPU's slab of every cache (`flush_cpu_slab` on this CPU), so that
    /// `/proc/slabinfo` counts only objects in use. Returns the pages freed.
    pub fn flush_this_cpu(&self) -> usize {
        let cpu = super::percpu::this_cpu();
        let mut freed = 0;
        // SAFETY: the running CPU's own slots.
        self.for_each_cache(|c| freed += unsafe { c.flush_cpu_slab(cpu) });
        freed
    }

    /// Shrinks every cache; returns the pages freed.
    pub fn shrink_all(&self) -> usize {
        self.kmem_cache().shrink_all()
    }
}

impl<'p, P: PageProvider> KmemCache<'p, P> {
    /// Root only: calls `f` on every cache under the registry lock.
    pub(crate) fn for_each_cache(&self, f: &mut dyn FnMut(&KmemCache<'p, P>)) {
        let _g = self.registry.lock();
        let mut cur: *const KmemCache<'p, P> = self;
        while !cur.is_null() {
            // SAFETY: caches on the list are alive: `destroy` unlinks under this lock first.
            let c = unsafe { &*cur };
            f(c);
            cur = c.next.load(Relaxed);
        }
    }

    /// Root only: frees the empty slabs of every cache (the memory-pressure path).
    pub(crate) fn shrink_all(&self) -> usize {
        let mut freed = 0;
        self.for_each_cache(&mut |c| freed += c.shrink());
        freed
    }
}

/// Owner of a cache created by [`SlabAllocator::kmem_cache_create`]. Dereferences to the cache;
/// [`CacheHandle::destroy`] consumes it, so no reference to the cache survives destruction.
/// Dropping a handle without `destroy` leaves the cache alive for good (a deliberate choice for
/// caches that live forever, like the kmalloc ones; not a leak of its objects).
pub struct CacheHandle<'p, P: PageProvider> {
    cache: NonNull<KmemCache<'p, P>>,
}

// SAFETY: the cache is `Sync`/`Send`; the handle is a unique owner pointer.
unsafe impl<P: PageProvider> Send for CacheHandle<'_, P> {}
// SAFETY: as above.
unsafe impl<P: PageProvider> Sync for CacheHandle<'_, P> {}

impl<'p, P: PageProvider> Deref for CacheHandle<'p, P> {
    type Target = KmemCache<'p, P>;
    fn deref(&self) -> &KmemCache<'p, P> {
        // SAFETY: alive until `destroy`, which consumes the handle.
        unsafe { self.cache.as_ref() }
    }
}

impl<P: PageProvider> fmt::Debug for CacheHandle<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheHandle({})", self.name)
    }
}

impl<'p, P: PageProvider> CacheHandle<'p, P> {
    /// A `'static`-free raw pointer to the cache, for owners that outlive borrows (kmalloc).
    pub(crate) fn as_ptr(&self) -> NonNull<KmemCache<'p, P>> {
        self.cache
    }

    /// `kmem_cache_destroy`: refuses, giving the handle back, while objects are live; otherwise
    /// frees every slab, unlinks the cache and frees its struct.
    pub fn destroy(self) -> Result<(), (Self, SlabError)> {
        let live = self.live_objects();
        if live > 0 {
            let cache = self.name;
            return Err((self, SlabError::CacheBusy { cache, live }));
        }
        // SAFETY: alive until the end of this function (the handle is consumed).
        let c: &KmemCache<'p, P> = unsafe { self.cache.as_ref() };
        // SAFETY: `root` is the bootstrap cache, never freed.
        let root = unsafe { &*c.root };
        {
            let _g = root.registry.lock();
            let mut prev: &KmemCache<'p, P> = root;
            loop {
                let next = prev.next.load(Relaxed);
                if next.is_null() {
                    break;
                }
                if core::ptr::eq(next, c) {
                    prev.next.store(c.next.load(Relaxed), Relaxed);
                    break;
                }
                // SAFETY: on the list, hence alive (we hold the registry lock).
                prev = unsafe { &*next };
            }
        }
        // Unlinked: no shrinker can reach it. Every CPU slab back to the lists first: nobody
        // uses a cache being destroyed, so touching other CPUs' slots races with nothing.
        for cpu in 0..super::percpu::NR_CPUS {
            let cpu = crate::buddy::CpuId::new(cpu).expect("below NR_CPUS");
            // SAFETY: no CPU allocates from or frees into a cache being destroyed (see above).
            unsafe { c.flush_cpu_slab(cpu) };
        }
        // Release every slab (only empty or quarantined ones).
        let mut slabs: [Option<(u32, &'p Page)>; 1] = [None];
        loop {
            {
                let mut st = c.state.lock();
                slabs[0] = None;
                c.slab_pfns(&st, |pfn, page, _, _| {
                    if slabs[0].is_none() {
                        slabs[0] = Some((pfn, page))
                    }
                });
                if let Some((pfn, page)) = slabs[0] {
                    c.detach(&mut st, pfn, page);
                }
            }
            match slabs[0] {
                Some((pfn, page)) => c.release(pfn, page),
                None => break,
            }
        }
        // The struct is an object of the root cache; nothing references it any more (the handle
        // is consumed, it is off the list, it owns no slab).
        let r = root.free(self.cache.cast());
        debug_assert!(r.is_ok(), "freeing the cache struct of {}: {r:?}", c.name);
        Ok(())
    }
}
