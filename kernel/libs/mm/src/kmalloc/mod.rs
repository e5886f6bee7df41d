//! The kmalloc family over slab caches and the page provider, with Linux x86_64 size classes.
//!
//! Sizes up to 192 bytes map through Linux's `size_index` table (so 65..=96 -> kmalloc-96 and
//! 129..=192 -> kmalloc-192), larger ones to the next power of two, up to kmalloc-8k
//! (`KMALLOC_MAX_CACHE_SIZE`). Above that, blocks come straight from the provider as
//! `KmallocLarge` pages (order recorded in the head descriptor), up to 4 MiB (`KMALLOC_MAX_SIZE`).
//! `__GFP_DMA` requests use the `dma-kmalloc-*` caches, whose slabs are `__GFP_DMA` pages.

use core::panic::Location;
use core::ptr::NonNull;
use core::sync::atomic::{
    compiler_fence, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};

use crate::addr::{Pfn, PAGE_SIZE};
use crate::buddy::CpuId;
use crate::gfp::GfpFlags;
use crate::page::{PageProvider, PageState};
use crate::slab::layout::get_order;
use crate::slab::percpu::this_cpu;
use crate::slab::root::{find_block, find_slab};
use crate::slab::{CacheHandle, KmemCache, SlabAllocator, SlabError, SlabFlags, SlabTotals};
use crate::AllocError;

/// Smallest kmalloc object and minimum alignment of every kmalloc block.
pub const KMALLOC_MIN_SIZE: usize = 8;
/// Largest size served by a kmalloc cache.
pub const KMALLOC_MAX_CACHE_SIZE: usize = 8192;
/// Largest kmalloc: one order-`MAX_PAGE_ORDER` block.
pub const KMALLOC_MAX_SIZE: usize = PAGE_SIZE << crate::page::MAX_PAGE_ORDER;
/// What `kmalloc(0)` returns (Linux `ZERO_SIZE_PTR`): not null, faults on use, `kfree` accepts it.
pub const ZERO_SIZE_PTR: usize = 16;

/// Object sizes of the kmalloc caches.
pub const KMALLOC_SIZES: [usize; 13] = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];
const NAMES: [&str; 13] = [
    "kmalloc-8",
    "kmalloc-16",
    "kmalloc-32",
    "kmalloc-64",
    "kmalloc-96",
    "kmalloc-128",
    "kmalloc-192",
    "kmalloc-256",
    "kmalloc-512",
    "kmalloc-1k",
    "kmalloc-2k",
    "kmalloc-4k",
    "kmalloc-8k",
];
const DMA_NAMES: [&str; 13] = [
    "dma-kmalloc-8",
    "dma-kmalloc-16",
    "dma-kmalloc-32",
    "dma-kmalloc-64",
    "dma-kmalloc-96",
    "dma-kmalloc-128",
    "dma-kmalloc-192",
    "dma-kmalloc-256",
    "dma-kmalloc-512",
    "dma-kmalloc-1k",
    "dma-kmalloc-2k",
    "dma-kmalloc-4k",
    "dma-kmalloc-8k",
];

/// Linux's `size_index[(size - 1) / 8]` for sizes up to 192, as indices into [`KMALLOC_SIZES`].
const SIZE_INDEX: [u8; 24] = [0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6];

/// Index into [`KMALLOC_SIZES`] of the cache serving `size` (1..=8192).
#[inline]
pub fn kmalloc_index(size: usize) -> usize {
    if size <= 192 {
        SIZE_INDEX[size.wrapping_sub(1) / 8] as usize
    } else {
        // 256 -> 7, 512 -> 8, ..., 8192 -> 12.
        size.next_power_of_two().trailing_zeros() as usize - 1
    }
}

/// Linux 6.12's `kmalloc_size_roundup()` (`mm/slab_common.c`): the usable size `kmalloc(size)`
/// would give, to allocate the whole bucket up front: the cache's object size up to
/// `KMALLOC_MAX_CACHE_SIZE`, whole pages of the block's order up to `KMALLOC_MAX_SIZE`, and
/// `size` itself for 0 (`ZERO_SIZE_PTR`) and above (kmalloc fails there).
pub fn kmalloc_size_roundup(size: usize) -> usize {
    if size != 0 && size <= KMALLOC_MAX_CACHE_SIZE {
        return KMALLOC_SIZES[kmalloc_index(size)];
    }
    if size != 0 && size <= KMALLOC_MAX_SIZE {
        return PAGE_SIZE << get_order(size);
    }
    size
}

/// The kmalloc caches (normal and DMA) and the large-block path.
pub struct Kmalloc<'p, P: PageProvider> {
    slab: SlabAllocator<'p, P>,
    caches: [[NonNull<KmemCache<'p, P>>; 13]; 2],
    provider: &'p P,
    /// Direct-map address of physical 0: address -> pfn in the free fast path.
    dm_base: usize,
    /// Pages of live large blocks (6.12's `NR_SLAB_UNRECLAIMABLE_B` share of
    /// `___kmalloc_large_node` / `free_large_kmalloc`).
    large_pages: AtomicU64,
}

// SAFETY: the caches are `Sync` and never destroyed (their handles were forgotten on purpose).
unsafe impl<P: PageProvider> Sync for Kmalloc<'_, P> {}
// SAFETY: as above.
unsafe impl<P: PageProvider> Send for Kmalloc<'_, P> {}

impl<'p, P: PageProvider> Kmalloc<'p, P> {
    /// Creates the 13 `kmalloc-*` and 13 `dma-kmalloc-*` caches (`create_kmalloc_caches`).
    /// kmalloc caches align to the largest power of two dividing the size (Linux), so
    /// power-of-two sizes are naturally aligned.
    pub fn new(slab: SlabAllocator<'p, P>) -> Result<Self, SlabError> {
        let mut caches = [[NonNull::dangling(); 13]; 2];
        for (dma, names) in [NAMES, DMA_NAMES].iter().enumerate() {
            for (i, &size) in KMALLOC_SIZES.iter().enumerate() {
                let mut flags = SlabFlags::SLAB_KMALLOC;
                if dma == 1 {
                    flags |= SlabFlags::SLAB_CACHE_DMA;
                }
                let align = 1 << size.trailing_zeros();
                let handle: CacheHandle<'p, P> =
                    slab.kmem_cache_create(names[i], size, align, flags, None)?;
                // kmalloc caches live forever: keep the cache, drop the owner handle (dropping a
                // handle never destroys; only `destroy` does).
                caches[dma][i] = handle.as_ptr();
            }
        }
        let provider = slab.provider();
        let dm_base = provider.direct_map().pfn_to_virt(Pfn(0)) as usize;
        Ok(Kmalloc { slab, caches, provider, dm_base, large_pages: AtomicU64::new(0) })
    }

    pub fn slab(&self) -> &SlabAllocator<'p, P> {
        &self.slab
    }

    /// The meminfo slab figures: every cache's slabs ([`SlabAllocator::totals`]) and the large
    /// blocks, which 6.12 accounts as unreclaimable slab.
    pub fn slab_totals(&self) -> SlabTotals {
        SlabTotals { kmalloc_large_pages: self.large_pages.load(Relaxed), ..self.slab.totals() }
    }

    /// The cache serving `size` bytes with `gfp` (None above `KMALLOC_MAX_CACHE_SIZE` or for 0).
    #[inline(always)]
    pub fn kmalloc_slab(&self, size: usize, gfp: GfpFlags) -> Option<&KmemCache<'p, P>> {
        if size == 0 || size > KMALLOC_MAX_CACHE_SIZE {
            return None;
        }
        let dma = gfp.contains(GfpFlags::__GFP_DMA) as usize;
        // SAFETY: kmalloc caches are never destroyed.
        Some(unsafe { self.caches[dma][kmalloc_index(size)].as_ref() })
    }

    /// `kmalloc`: at least `size` bytes, physically contiguous, aligned to 8 (and to `size` for
    /// powers of two up to a page). `kmalloc(0)` is [`ZERO_SIZE_PTR`].
    #[track_caller]
    #[inline(always)]
    pub fn kmalloc(&self, size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        self.kmalloc_traced(size, gfp, Location::caller())
    }

    #[inline(always)]
    fn kmalloc_traced(
        &self,
        size: usize,
        gfp: GfpFlags,
        loc: &'static Location<'static>,
    ) -> Result<NonNull<u8>, AllocError> {
        if size == 0 {
            // SAFETY: 16 is not 0.
            return Ok(unsafe { NonNull::new_unchecked(core::ptr::without_provenance_mut(ZERO_SIZE_PTR)) });
        }
        if let Some(cache) = self.kmalloc_slab(size, gfp) {
            return cache.alloc_traced(gfp, size as u32, loc);
        }
        if size > KMALLOC_MAX_SIZE {
            return Err(AllocError::TooLarge { size, max: KMALLOC_MAX_SIZE });
        }
        self.kmalloc_large(size, gfp)
    }

    #[inline(never)]
    fn kmalloc_large(&self, size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        let order = get_order(size);
        let provider = self.slab.provider();
        let pgfp = gfp - GfpFlags::__GFP_ZERO;
        let pfn = match provider.alloc_pages(pgfp, order) {
            Ok(pfn) => pfn,
            Err(AllocError::OutOfMemory { .. }) if gfp.allows_blocking() => {
                self.slab.shrink_all();
                provider.alloc_pages(pgfp, order)?
            }
            Err(e) => return Err(e),
        };
        let Some(page) = provider.page(pfn) else {
            let _ = provider.free_pages(pfn, order);
            return Err(AllocError::OutOfMemory { order });
        };
        page.set_order(order);
        crate::page::prep_compound_page(provider, pfn, order);
        page.set_state(PageState::KmallocLarge);
        // mm/slub.c (6.12), ___kmalloc_large_node: NR_SLAB_UNRECLAIMABLE_B += PAGE_SIZE << order.
        self.large_pages.fetch_add(1 << order, Relaxed);
        let p = provider.direct_map().pfn_to_virt(pfn);
        if gfp.contains(GfpFlags::__GFP_ZERO) {
            // SAFETY: the block was just allocated for us: 2^order pages from `p`.
            unsafe { p.write_bytes(0, PAGE_SIZE << order) };
        }
        // SAFETY: direct-map addresses of managed RAM are never null.
        Ok(unsafe { NonNull::new_unchecked(p) })
    }

    /// `kzalloc`: `kmalloc` zeroed.
    #[track_caller]
    pub fn kzalloc(&self, size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        self.kmalloc_traced(size, gfp | GfpFlags::__GFP_ZERO, Location::caller())
    }

    /// `kmalloc_array`: `n * size` bytes; an overflowing product is refused.
    #[track_caller]
    pub fn kmalloc_array(&self, n: usize, size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        let bytes = n.checked_mul(size).ok_or(AllocError::Invalid("kmalloc_array: n * size overflows"))?;
        self.kmalloc_traced(bytes, gfp, Location::caller())
    }

    /// `kcalloc`: `kmalloc_array` zeroed.
    #[track_caller]
    pub fn kcalloc(&self, n: usize, size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
        let bytes = n.checked_mul(size).ok_or(AllocError::Invalid("kcalloc: n * size overflows"))?;
        self.kmalloc_traced(bytes, gfp | GfpFlags::__GFP_ZERO, Location::caller())
    }

    fn is_zero_or_null(ptr: *const u8) -> bool {
        (ptr as usize) <= ZERO_SIZE_PTR
    }

    /// Where `ptr` lives: a slab object (its cache, slab pfn) or a large block (its order).
    #[inline]
    fn lookup(&self, ptr: *const u8) -> Result<Owner<'_, 'p, P>, SlabError> {
        let addr = ptr as usize;
        let provider = self.slab.provider();
        let dm = provider.direct_map();
        let (pfn, page) = find_block(provider, &dm, addr).ok_or(SlabError::NotOwned { addr })?;
        match page.state() {
            PageState::Slab => {
                // SAFETY: a `Slab` head's `private` is its live cache.
                let cache = unsafe {
                    &*core::ptr::with_exposed_provenance::<KmemCache<'p, P>>(
                        page.private.load(core::sync::atomic::Ordering::Relaxed),
                    )
                };
                // The object-start check is left to the caller: `free_in_slab` does it anyway,
                // so the kfree fast path computes it once.
                Ok(Owner::Slab { cache, pfn: pfn.0 as u32, page })
            }
            _ => {
                let block = dm.pfn_to_virt(pfn) as usize;
                if block != addr {
                    return Err(SlabError::InteriorLarge { addr, block });
                }
                Ok(Owner::Large { pfn, order: page.order(), page })
            }
        }
    }

    /// `kfree`. Null and `ZERO_SIZE_PTR` are accepted; anything kmalloc (or a slab cache) does not
    /// own, interior pointers and double frees are refused with the state unchanged.
    #[track_caller]
    #[inline(always)]
    pub fn kfree(&self, ptr: *const u8) -> Result<(), SlabError> {
        let cpu = this_cpu();
        if self.kfree_fast_on(cpu, ptr) {
            return Ok(());
        }
        self.kfree_slow(cpu, ptr, Location::caller())
    }

    /// `kfree`'s fast path alone: `true` if `ptr` was freed onto the running CPU's private list;
    /// `false` if it was left alone (any other case, good or bad), and [`Self::kfree`] must take
    /// it. Lets a caller keep its own error reporting out of the fast path.
    #[inline(always)]
    pub fn kfree_fast(&self, ptr: *const u8) -> bool {
        self.kfree_fast_on(this_cpu(), ptr)
    }

    /// The fast path: a slab object of a non-debug cache whose slab is CPU `cpu`'s active one
    /// goes onto that CPU's private list. `false` for everything else (other slabs, large
    /// blocks, bad pointers, null), which the slow path handles and reports.
    #[inline(always)]
    fn kfree_fast_on(&self, cpu: CpuId, ptr: *const u8) -> bool {
        let Some((pfn, page)) = find_slab(self.provider, self.dm_base, ptr as usize) else {
            return false;
        };
        // SAFETY: a `Slab` head's `private` is its live cache.
        let cache = unsafe {
            &*core::ptr::with_exposed_provenance::<KmemCache<'p, P>>(
                page.private.load(core::sync::atomic::Ordering::Relaxed),
            )
        };
        cache.free_fast(cpu, pfn, page, ptr as usize)
    }

    #[inline(never)]
    fn kfree_slow(
        &self,
        cpu: CpuId,
        ptr: *const u8,
        loc: &'static Location<'static>,
    ) -> Result<(), SlabError> {
        self.kfree_inner_on(cpu, ptr, false, loc)
    }

    /// `kfree_sensitive`: zeroes the block (what its owner could have written) before freeing.
    #[track_caller]
    pub fn kfree_sensitive(&self, ptr: *const u8) -> Result<(), SlabError> {
        self.kfree_inner(ptr, true, Location::caller())
    }

    fn kfree_inner(
        &self,
        ptr: *const u8,
        zero: bool,
        loc: &'static Location<'static>,
    ) -> Result<(), SlabError> {
        self.kfree_inner_on(this_cpu(), ptr, zero, loc)
    }

    fn kfree_inner_on(
        &self,
        cpu: CpuId,
        ptr: *const u8,
        zero: bool,
        loc: &'static Location<'static>,
    ) -> Result<(), SlabError> {
        if Self::is_zero_or_null(ptr) {
            return Ok(());
        }
        match self.lookup(ptr)? {
            Owner::Slab { cache, pfn, page } => cache.free_in_slab(cpu, pfn, page, ptr as usize, zero, loc),
            Owner::Large { pfn, order, page } => {
                let provider = self.slab.provider();
                if zero {
                    let p = provider.direct_map().pfn_to_virt(pfn);
                    // SAFETY: the caller owns the whole large block it is freeing.
                    unsafe { p.write_bytes(0, PAGE_SIZE << order) };
                    compiler_fence(SeqCst);
                }
                page.set_state(PageState::Allocated);
                crate::page::clear_compound_page(provider, pfn, order);
                // mm/slub.c (6.12), free_large_kmalloc: NR_SLAB_UNRECLAIMABLE_B -= the block.
                self.large_pages.fetch_sub(1 << order, Relaxed);
                provider.free_pages(pfn, order).map_err(|_| SlabError::NotOwned { addr: ptr as usize })
            }
        }
    }

    /// `ksize`: the usable size of the block: for a slab object (of any cache, kmalloc or
    /// not) the cache's [`KmemCache::ksize`] (Linux 6.12 `__ksize()`: `slab_ksize(cache)`), for
    /// a large block its whole pages (`folio_size`).
    pub fn ksize(&self, ptr: *const u8) -> Result<usize, SlabError> {
        if Self::is_zero_or_null(ptr) {
            return Ok(0);
        }
        Ok(match self.lookup(ptr)? {
            Owner::Slab { cache, pfn, page } => {
                cache.check_object_start(pfn, ptr as usize)?;
                if cache.known_free(pfn, page, ptr as usize) {
                    return Err(SlabError::Freed { cache: cache.name(), addr: ptr as usize });
                }
                cache.ksize()
            }
            Owner::Large { order, .. } => PAGE_SIZE << order,
        })
    }

    /// `krealloc_array(p, new_n, new_size, gfp)` (Linux 6.12 `include/linux/slab.h`): an
    /// overflowing `new_n * new_size` is refused (6.12 returns NULL via `check_mul_overflow`)
    /// and `p` stays valid and unchanged.
    #[track_caller]
    pub fn krealloc_array(
        &self,
        ptr: *const u8,
        new_n: usize,
        new_size: usize,
        gfp: GfpFlags,
    ) -> Result<NonNull<u8>, SlabError> {
        let bytes = new_n
            .checked_mul(new_size)
            .ok_or(SlabError::Alloc(AllocError::Invalid("krealloc_array: new_n * new_size overflows")))?;
        self.krealloc(ptr, bytes, gfp)
    }

    /// `krealloc`: keeps the block while `new_size` fits `ksize` (recording the new size for the
    /// kmalloc red zone), else allocates, copies and frees. `new_size == 0` frees and returns
    /// `ZERO_SIZE_PTR`. On failure the old block stays valid and unchanged.
    #[track_caller]
    // `ptr` is only read after `lookup` proved it is the start of a live block this allocator
    // owns, inside memory the allocator manages.
    #[allow(clippy::not_unsafe_ptr_arg_deref)]
    pub fn krealloc(&self, ptr: *const u8, new_size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, SlabError> {
        let loc = Location::caller();
        if Self::is_zero_or_null(ptr) {
            return Ok(self.kmalloc_traced(new_size, gfp, loc)?);
        }
        let owner = self.lookup(ptr)?;
        if let Owner::Slab { cache, pfn, page } = &owner {
            cache.check_object_start(*pfn, ptr as usize)?;
            // Resizing (or zeroing) a free object in place would damage the free list.
            if cache.known_free(*pfn, page, ptr as usize) {
                return Err(SlabError::Freed { cache: cache.name(), addr: ptr as usize });
            }
        }
        if new_size == 0 {
            self.kfree_inner(ptr, false, loc)?;
            return self.kmalloc_traced(0, gfp, loc).map_err(SlabError::Alloc);
        }
        // 6.12 `__do_krealloc`: `ks = ksize(p)`; the contents to keep are the requested size
        // where a kmalloc red zone tracks it, else all of `ks`.
        let (ks, old_len) = match &owner {
            Owner::Slab { cache, .. } if cache.geom.orig_size_offset != 0 => {
                (cache.ksize(), cache.user_size(ptr as usize))
            }
            Owner::Slab { cache, .. } => (cache.ksize(), cache.ksize()),
            Owner::Large { order, .. } => (PAGE_SIZE << order, PAGE_SIZE << order),
        };
        if new_size <= ks {
            if gfp.contains(GfpFlags::__GFP_ZERO) || self.slab.auto_init().init_on_alloc() {
                // Linux 6.12 `__do_krealloc`: the spare memory of the block is zeroed
                // (`memset(p + new_size, 0, ks - new_size)`). Growing within a tracked kmalloc
                // red zone, the bytes between the old and the new size are zeroed too (they
                // held the red-zone pattern, not the caller's data).
                let from = new_size.min(old_len);
                // SAFETY: `ptr` is a live block of `ks` usable bytes (checked above).
                unsafe { (ptr as *mut u8).add(from).write_bytes(0, ks - from) };
            }
            if let Owner::Slab { cache, .. } = owner {
                cache.resize_in_place(ptr as usize, new_size);
            }
            // SAFETY: `ptr` was checked to be a live block start above.
            return Ok(unsafe { NonNull::new_unchecked(ptr as *mut u8) });
        }
        let new = self.kmalloc_traced(new_size, gfp, loc)?;
        // SAFETY: both blocks are live and distinct; `old_len <= new_size` bytes are copied.
        unsafe { core::ptr::copy_nonoverlapping(ptr, new.as_ptr(), old_len.min(new_size)) };
        if let Err(e) = self.kfree_inner(ptr, false, loc) {
            // The old block could not be freed (debug check): keep it, undo the new one.
            let _ = self.kfree_inner(new.as_ptr(), false, loc);
            return Err(e);
        }
        Ok(new)
    }
}

enum Owner<'a, 'p, P: PageProvider> {
    Slab { cache: &'a KmemCache<'p, P>, pfn: u32, page: &'p crate::page::Page },
    Large { pfn: Pfn, order: u32, page: &'p crate::page::Page },
}

#[cfg(test)]
mod tests;
