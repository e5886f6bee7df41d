//! In-kernel tests of the kmalloc family on real memory: every API, every size-class boundary,
//! alignment, physical contiguity, every misuse (refused with a specific error and nothing
//! changed), exhaustion and full recovery, reclaim of cached slabs under pressure, GFP_DMA, and
//! Rust's heap (`Box`, `Vec`, `String`, `BTreeMap`, `KBox`, `KVec`, over-aligned layouts).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::Layout;

use ::mm::kmalloc::{KMALLOC_MAX_SIZE, KMALLOC_SIZES, ZERO_SIZE_PTR};
use ::mm::page::MAX_PAGE_ORDER;
use ::mm::slab::{SlabError, SlabinfoRow};
use ::mm::{AllocError, GfpFlags, PAGE_SIZE};
use x86_64::VirtAddr;

use crate::mm::kalloc::{KBox, KVec};
use crate::mm::node;
use crate::mm::page_alloc::{__free_pages, alloc_pages, virt_to_phys};
use crate::mm::slab::*;

const KERNEL: GfpFlags = GfpFlags::GFP_KERNEL;
const NOWARN: GfpFlags = GfpFlags::__GFP_NOWARN;

use super::buddy_snapshot;

/// Declared first in a test, dropped last: returns the empty slabs the test left cached, so the
/// tests that compare buddy free lists (here and in page_alloc) see the same state whatever ran
/// before them (a GFP_KERNEL allocation that fails shrinks the caches, changing the free lists).
pub(super) struct Tidy;

impl Drop for Tidy {
    fn drop(&mut self) {
        shrink_all();
    }
}

/// The slabinfo rows of the 26 kmalloc caches (normal, then DMA).
fn kmalloc_rows() -> [[SlabinfoRow; 13]; 2] {
    let k = kmalloc_instance();
    let row = |size, gfp| k.kmalloc_slab(size, gfp).expect("kmalloc cache").slabinfo_row();
    [KMALLOC_SIZES.map(|s| row(s, KERNEL)), KMALLOC_SIZES.map(|s| row(s, KERNEL | GfpFlags::GFP_DMA))]
}

/// The whole allocator state a refused operation must leave alone.
fn state() -> ([[u64; 11]; 3], [[SlabinfoRow; 13]; 2]) {
    (buddy_snapshot(), kmalloc_rows())
}

/// Name of the cache a kmalloc of `size` comes from (None: kmalloc-large).
fn cache_name(size: usize, gfp: GfpFlags) -> Option<&'static str> {
    kmalloc_instance().kmalloc_slab(size, gfp).map(|c| c.name())
}

fn phys(p: *const u8) -> u64 {
    virt_to_phys(VirtAddr::from_ptr(p)).expect("kmalloc memory is in the direct map").as_u64()
}

ktest!(
    #[needs_memory]
    fn size_class_boundaries() {
        let _tidy = Tidy;
        // (request, cache, ksize): Linux's x86_64 classes, kmalloc-large above 8 KiB.
        let cases: [(usize, Option<&str>, usize); 10] = [
            (1, Some("kmalloc-8"), 8),
            (8, Some("kmalloc-8"), 8),
            (9, Some("kmalloc-16"), 16),
            (96, Some("kmalloc-96"), 96),
            (97, Some("kmalloc-128"), 128),
            (192, Some("kmalloc-192"), 192),
            (193, Some("kmalloc-256"), 256),
            (8192, Some("kmalloc-8k"), 8192),
            (8193, None, 16384),
            (KMALLOC_MAX_SIZE, None, KMALLOC_MAX_SIZE),
        ];
        for (size, cache, ks) in cases {
            assert_eq!(cache_name(size, KERNEL), cache, "kmalloc({size}) cache");
            let p = kmalloc(size, KERNEL).unwrap_or_else(|e| panic!("kmalloc({size}): {e}"));
            assert_eq!(ksize(p.as_ptr()), Ok(ks), "ksize of kmalloc({size})");
            // The whole usable size can be written.
            // SAFETY: ksize bytes from p belong to this block until kfree.
            unsafe { p.as_ptr().write_bytes(0x3c, ks) };
            kfree(p.as_ptr()).expect("kfree");
        }
        let before = state();
        // Without __GFP_NOWARN: the failure warning names this line (tests/slab_debug.rs).
        assert_eq!(
            kmalloc(KMALLOC_MAX_SIZE + 1, KERNEL),
            Err(AllocError::TooLarge { size: KMALLOC_MAX_SIZE + 1, max: KMALLOC_MAX_SIZE })
        );
        assert_eq!(state(), before, "a refused TooLarge kmalloc changed the allocator");
    }
);

ktest!(
    fn kmalloc_zero_is_zero_size_ptr() {
        let _tidy = Tidy;
        let before = state();
        let p = kmalloc(0, KERNEL).expect("kmalloc(0)");
        assert_eq!(p.as_ptr() as usize, ZERO_SIZE_PTR);
        assert_eq!(ksize(p.as_ptr()), Ok(0));
        kfree(p.as_ptr()).expect("kfree(ZERO_SIZE_PTR) is allowed");
        kfree(core::ptr::null()).expect("kfree(NULL) is allowed");
        assert_eq!(state(), before);
    }
);

ktest!(
    #[needs_memory]
    fn minimum_and_natural_alignment() {
        let _tidy = Tidy;
        for size in (1..=256).chain([300, 1000, 3000, 5000, 8000]) {
            let p = kmalloc(size, KERNEL).unwrap();
            assert_eq!(p.as_ptr() as usize % 8, 0, "kmalloc({size}) not 8-byte aligned");
            kfree(p.as_ptr()).unwrap();
        }
        // Power-of-two sizes are naturally aligned, up to the largest kmalloc.
        let mut size = 8;
        while size <= KMALLOC_MAX_SIZE {
            let p = kmalloc(size, KERNEL).unwrap();
            assert_eq!(p.as_ptr() as usize % size, 0, "kmalloc({size}) not aligned to {size}");
            kfree(p.as_ptr()).unwrap();
            size *= 2;
        }
    }
);

ktest!(
    #[needs_memory]
    fn blocks_are_physically_contiguous() {
        let _tidy = Tidy;
        for size in [64usize, 4096, 8192, 8193, 65536, 1 << 20, KMALLOC_MAX_SIZE] {
            let p = kmalloc(size, KERNEL).unwrap();
            let base = phys(p.as_ptr());
            let pages = size.div_ceil(PAGE_SIZE);
            for page in 0..pages {
                for off in [page * PAGE_SIZE, page * PAGE_SIZE + 1234, page * PAGE_SIZE + PAGE_SIZE - 1] {
                    let off = off.min(size - 1);
                    // The byte offsets stay inside the block (`off < size`).
                    let at = p.as_ptr().wrapping_add(off);
                    assert_eq!(phys(at), base + off as u64, "kmalloc({size}) + {off} not contiguous");
                }
            }
            kfree(p.as_ptr()).unwrap();
        }
    }
);

ktest!(
    #[needs_memory]
    fn kzalloc_kcalloc_zero_and_array_overflow_is_an_error() {
        let _tidy = Tidy;
        // Dirty a block, free it, and get it back zeroed (LIFO free lists).
        // The whole usable size (`ksize`) is zeroed, not only the bytes asked for: an in-place
        // krealloc hands the rest to the caller (SLUB zeroes `object_size`).
        for size in [40usize, 100, 512, 20000] {
            let dirty = kmalloc(size, KERNEL).unwrap();
            let ks = ksize(dirty.as_ptr()).unwrap();
            // SAFETY: `ks` usable bytes of a live block.
            unsafe { dirty.as_ptr().write_bytes(0xee, ks) };
            kfree(dirty.as_ptr()).unwrap();
            let z = kzalloc(size, KERNEL).unwrap();
            assert_eq!(z, dirty, "LIFO reuse");
            assert_eq!(nonzero_words(z.as_ptr(), ks), 0, "kzalloc({size}) left bytes of ksize {ks}");
            let g = krealloc(z.as_ptr(), ks, KERNEL | GfpFlags::__GFP_ZERO).unwrap();
            assert_eq!(g, z, "in place");
            assert_eq!(nonzero_words(g.as_ptr(), ks), 0);
            kfree(g.as_ptr()).unwrap();
        }
        let c = kcalloc(100, 12, KERNEL).unwrap();
        assert_eq!(ksize(c.as_ptr()), Ok(2048));
        // SAFETY: 1200 bytes of a live block.
        assert!(unsafe { core::slice::from_raw_parts(c.as_ptr(), 1200) }.iter().all(|&b| b == 0));
        kfree(c.as_ptr()).unwrap();
        let a = kmalloc_array(10, 100, KERNEL).unwrap();
        assert_eq!(ksize(a.as_ptr()), Ok(1024));
        kfree(a.as_ptr()).unwrap();

        let before = state();
        for r in
            [kmalloc_array(usize::MAX / 2, 3, KERNEL | NOWARN), kcalloc(1 << 33, 1 << 31, KERNEL | NOWARN)]
        {
            assert!(matches!(r, Err(AllocError::Invalid(_))), "overflowing n * size accepted: {r:?}");
        }
        assert_eq!(state(), before);
    }
);

ktest!(
    #[needs_memory]
    fn krealloc_keeps_block_while_it_fits_and_contents_always() {
        let _tidy = Tidy;
        let p = kmalloc(20, KERNEL).unwrap();
        assert_eq!(ksize(p.as_ptr()), Ok(32));
        // SAFETY: 20 bytes of a live block.
        unsafe { core::ptr::copy_nonoverlapping(b"krealloc keeps this!".as_ptr(), p.as_ptr(), 20) };
        // Growing within ksize and shrinking keep the same block.
        let same = krealloc(p.as_ptr(), 32, KERNEL).unwrap();
        assert_eq!(same, p, "krealloc to 32 moved a block of ksize 32");
        let same = krealloc(p.as_ptr(), 10, KERNEL).unwrap();
        assert_eq!(same, p);
        let same = krealloc(p.as_ptr(), 20, KERNEL).unwrap();
        assert_eq!(same, p);
        // Growing past ksize moves it with the contents.
        let moved = krealloc(p.as_ptr(), 5000, KERNEL).unwrap();
        assert_ne!(moved, p);
        assert_eq!(ksize(moved.as_ptr()), Ok(8192));
        // SAFETY: the first 20 bytes of a live block of 8192.
        let kept = unsafe { core::slice::from_raw_parts(moved.as_ptr(), 20) };
        if node().auto_init().init_on_alloc() {
            // Linux 6.12 `__do_krealloc`: with init_on_alloc, shrinking to 10 zeroed the spare
            // bytes from 10 on (`memset(p + new_size, 0, ks - new_size)`).
            assert_eq!(kept, b"krealloc k\0\0\0\0\0\0\0\0\0\0");
            // SAFETY: as above.
            unsafe { core::ptr::copy_nonoverlapping(b"krealloc keeps this!".as_ptr(), moved.as_ptr(), 20) };
        } else {
            assert_eq!(kept, b"krealloc keeps this!");
        }
        // The old block was freed (it is the head of its free list again: double free).
        assert!(matches!(kfree(p.as_ptr()), Err(SlabError::DoubleFree { .. })));
        // Into kmalloc-large and back.
        let large = krealloc(moved.as_ptr(), 100_000, KERNEL).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { core::slice::from_raw_parts(large.as_ptr(), 20) }, b"krealloc keeps this!");
        // A failing krealloc leaves the old block valid and unchanged.
        let before = state();
        let r = krealloc(large.as_ptr(), KMALLOC_MAX_SIZE + 1, KERNEL | NOWARN);
        assert!(matches!(r, Err(SlabError::Alloc(AllocError::TooLarge { .. }))), "{r:?}");
        assert_eq!(state(), before);
        // SAFETY: as above: still ours.
        assert_eq!(unsafe { core::slice::from_raw_parts(large.as_ptr(), 20) }, b"krealloc keeps this!");
        assert_eq!(ksize(large.as_ptr()), Ok(131072));
        // krealloc(NULL) allocates; krealloc(p, 0) frees and returns ZERO_SIZE_PTR.
        let fresh = krealloc(core::ptr::null(), 64, KERNEL).unwrap();
        assert_eq!(ksize(fresh.as_ptr()), Ok(64));
        kfree(fresh.as_ptr()).unwrap();
        let zero = krealloc(large.as_ptr(), 0, KERNEL).unwrap();
        assert_eq!(zero.as_ptr() as usize, ZERO_SIZE_PTR);
    }
);

/// The bytes of a just-freed block as the direct map shows them: at most one aligned word (the
/// free pointer the allocator stores in a free object) may be non-zero.
fn nonzero_words(p: *const u8, len: usize) -> usize {
    (0..len / 8)
        // SAFETY: reads of RAM through the direct map; the block was just freed and nothing else
        // runs (no timer handler, one CPU) to reuse it before the check ends. Volatile: the
        // compiler must not reason about freed memory.
        .filter(|&i| unsafe { core::ptr::read_volatile(p.cast::<u64>().add(i)) } != 0)
        .count()
}

ktest!(
    #[needs_memory]
    fn init_on_alloc_and_init_on_free_zero_objects_and_pages() {
        let _tidy = Tidy;
        // The boot's settings come back at the end (the suite also runs with them on).
        struct Restore(bool, bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                crate::mm::set_auto_init(self.0, self.1);
            }
        }
        let a = node().auto_init();
        let _restore = Restore(a.init_on_alloc(), a.init_on_free());
        for size in [64usize, 3000, 20000] {
            let p = kmalloc(size, KERNEL).unwrap();
            let ks = ksize(p.as_ptr()).unwrap();
            // SAFETY: `ks` usable bytes of a live block.
            unsafe { p.as_ptr().write_bytes(0xee, ks) };
            kfree(p.as_ptr()).unwrap();
            crate::mm::set_auto_init(true, false);
            let q = kmalloc(size, KERNEL).unwrap();
            assert_eq!(q, p);
            assert_eq!(nonzero_words(q.as_ptr(), ks), 0, "init_on_alloc, kmalloc({size})");
            // SAFETY: as above.
            unsafe { q.as_ptr().write_bytes(0xdd, ks) };
            crate::mm::set_auto_init(false, true);
            kfree(q.as_ptr()).unwrap();
            // The freed object may hold the free pointer (one word in the middle).
            assert!(nonzero_words(q.as_ptr(), ks) <= 1, "init_on_free, kfree of kmalloc({size})");
            crate::mm::set_auto_init(false, false);
        }
        let frame = alloc_pages(KERNEL, 2).unwrap();
        let va = crate::mm::page_alloc::phys_to_virt(frame.start_address()).as_mut_ptr::<u8>();
        // SAFETY: the 4 pages just allocated.
        unsafe { va.write_bytes(0x77, 4 * PAGE_SIZE) };
        crate::mm::set_auto_init(false, true);
        __free_pages(frame, 2).unwrap();
        assert_eq!(nonzero_words(va, 4 * PAGE_SIZE), 0, "init_on_free, order-2 pages");
    }
);

ktest!(
    #[needs_memory]
    fn kfree_sensitive_zeroes_the_block() {
        let _tidy = Tidy;
        for size in [8usize, 64, 200, 4096, 8192, 30000] {
            let p = kmalloc(size, KERNEL).unwrap();
            let ks = ksize(p.as_ptr()).unwrap();
            // SAFETY: ksize bytes of a live block.
            unsafe { p.as_ptr().write_bytes(0xa7, ks) };
            kfree_sensitive(p.as_ptr()).unwrap();
            let left = nonzero_words(p.as_ptr(), ks);
            let allowed = if size <= 8192 { 1 } else { 0 };
            assert!(left <= allowed, "kfree_sensitive({size}) left {left} non-zero words");
        }
        // Plain kfree does not zero (so the check above can tell them apart), unless the boot
        // asked for `init_on_free=1`.
        let p = kmalloc(64, KERNEL).unwrap();
        // SAFETY: 64 bytes of a live block.
        unsafe { p.as_ptr().write_bytes(0xa7, 64) };
        kfree(p.as_ptr()).unwrap();
        let left = nonzero_words(p.as_ptr(), 64);
        if node().auto_init().init_on_free() {
            assert!(left <= 1, "init_on_free=1: kfree left {left} non-zero words");
        } else {
            assert!(left > 1, "plain kfree zeroed the object");
        }
    }
);

ktest!(
    #[needs_memory]
    fn misuse_is_refused_and_changes_nothing() {
        let _tidy = Tidy;
        let obj = kmalloc(64, KERNEL).unwrap();
        let large = kmalloc(16384, KERNEL).unwrap();
        let page = alloc_pages(KERNEL, 0).unwrap();
        let page_va = crate::mm::page_alloc::phys_to_virt(page.start_address()).as_ptr::<u8>();
        let freed = kmalloc(96, KERNEL).unwrap();
        kfree(freed.as_ptr()).unwrap();
        let on_stack = 0u64;
        let stack = core::ptr::addr_of!(on_stack).cast::<u8>();

        let before = state();
        assert_eq!(kfree(stack), Err(SlabError::NotOwned { addr: stack as usize }), "stack address");
        assert_eq!(kfree(page_va), Err(SlabError::NotOwned { addr: page_va as usize }), "buddy page");
        let interior = obj.as_ptr().wrapping_add(8);
        assert_eq!(
            kfree(interior),
            Err(SlabError::Interior {
                cache: "kmalloc-64",
                addr: interior as usize,
                object: obj.as_ptr() as usize
            })
        );
        let interior = large.as_ptr().wrapping_add(4096);
        assert_eq!(
            kfree(interior),
            Err(SlabError::InteriorLarge { addr: interior as usize, block: large.as_ptr() as usize })
        );
        assert_eq!(
            kfree(freed.as_ptr()),
            Err(SlabError::DoubleFree { cache: "kmalloc-96", addr: freed.as_ptr() as usize })
        );
        assert!(matches!(kfree_sensitive(stack), Err(SlabError::NotOwned { .. })));
        assert!(matches!(ksize(obj.as_ptr().wrapping_add(1)), Err(SlabError::Interior { .. })));
        assert!(matches!(krealloc(interior, 10, KERNEL), Err(SlabError::InteriorLarge { .. })));
        // A kmalloc object freed to another cache.
        let cache = kmem_cache_create("kmalloc-misuse-test", 64, 0, ::mm::slab::SlabFlags::empty(), None)
            .expect("create");
        let before_cache = state();
        assert_eq!(
            cache.free(obj),
            Err(SlabError::WrongCache {
                cache: "kmalloc-misuse-test",
                owner: "kmalloc-64",
                addr: obj.as_ptr() as usize
            })
        );
        assert_eq!(state(), before_cache, "refused frees changed the allocator");
        cache.destroy().expect("destroy an unused cache");
        // The cache struct's slab (of `kmem_cache`) may have been new: emptied, it stays cached
        // until shrunk. Only that cache is shrunk (the other caches keep their state).
        slab().kmem_cache().shrink();
        assert_eq!(state(), before, "refused frees changed the allocator");
        // Everything still works and frees normally.
        kfree(obj.as_ptr()).unwrap();
        kfree(large.as_ptr()).unwrap();
        // A freed large block is back in the buddy allocator: a second free finds no owner.
        assert!(matches!(kfree(large.as_ptr()), Err(SlabError::NotOwned { .. })));
        __free_pages(page, 0).unwrap();
    }
);

/// Objects held by a test, chained through their own first word (every kmalloc object has at
/// least 8 bytes), so holding all of memory needs no other memory.
struct Held {
    head: *mut u8,
    count: u64,
}

impl Held {
    fn new() -> Held {
        Held { head: core::ptr::null_mut(), count: 0 }
    }
    fn push(&mut self, p: *mut u8) {
        // SAFETY: `p` is a live kmalloc block of at least 8 bytes, aligned to 8, owned by us.
        unsafe { p.cast::<*mut u8>().write(self.head) };
        self.head = p;
        self.count += 1;
    }
    /// kmalloc(size) until it fails; returns the error that stopped it.
    fn fill(&mut self, size: usize, gfp: GfpFlags) -> AllocError {
        loop {
            match kmalloc(size, gfp | NOWARN) {
                Ok(p) => self.push(p.as_ptr()),
                Err(e) => return e,
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        while !self.head.is_null() {
            // SAFETY: written by `push`; read before the block is freed.
            let next = unsafe { self.head.cast::<*mut u8>().read() };
            kfree(self.head).expect("freeing a block held by the test");
            self.head = next;
        }
    }
}

ktest!(
    #[needs_memory]
    fn exhaustion_and_full_recovery() {
        let _tidy = Tidy;
        shrink_all();
        let before = buddy_snapshot();
        let free_before = node().totals().free_pages;
        {
            let mut held = Held::new();
            // Large blocks first, then every class down to the smallest fills what is left.
            for size in [KMALLOC_MAX_SIZE, 1 << 20, 65536, 16384, 8192, 4096, 1024, 256, 64, 16, 8] {
                let e = held.fill(size, KERNEL);
                assert!(matches!(e, AllocError::OutOfMemory { .. }), "kmalloc({size}) stopped with {e}");
            }
            assert!(held.count > 0);
            let left = node().totals().free_pages;
            assert!(left < free_before / 10, "exhaustion left {left} of {free_before} pages free");
            // The Rust-facing owners report the failure instead of aborting.
            assert!(matches!(KBox::new(7u64, KERNEL | NOWARN), Err(AllocError::OutOfMemory { .. })));
            let mut v = KVec::<u64>::new();
            assert!(matches!(v.push(1, KERNEL | NOWARN), Err(AllocError::OutOfMemory { .. })));
            assert!(v.is_empty());
        }
        shrink_all();
        assert_eq!(buddy_snapshot(), before, "free lists differ after kfree of everything and shrink_all");
        let p = kmalloc(KMALLOC_MAX_SIZE, KERNEL).expect("4 MiB kmalloc after recovery");
        kfree(p.as_ptr()).unwrap();
    }
);

/// Page blocks held by a test, chained through their own first words.
struct PageChain {
    head: Option<(x86_64::structures::paging::PhysFrame, u32)>,
}

impl PageChain {
    fn new() -> PageChain {
        PageChain { head: None }
    }
    /// alloc_pages(gfp, order) until it fails.
    fn fill(&mut self, gfp: GfpFlags, order: u32) {
        while let Ok(frame) = alloc_pages(gfp, order) {
            let link = crate::mm::page_alloc::phys_to_virt(frame.start_address()).as_mut_ptr::<u64>();
            let (prev, prev_order) =
                self.head.map_or((u64::MAX, 0), |(f, o)| (f.start_address().as_u64(), o));
            // SAFETY: the block was just allocated for us (at least 4 KiB in the direct map).
            unsafe {
                link.write(prev);
                link.add(1).write(prev_order as u64);
            }
            self.head = Some((frame, order));
        }
    }
}

impl Drop for PageChain {
    fn drop(&mut self) {
        while let Some((frame, order)) = self.head.take() {
            let link = crate::mm::page_alloc::phys_to_virt(frame.start_address()).as_ptr::<u64>();
            // SAFETY: written by `fill` in a block the chain owns; read before it is freed.
            let (prev, prev_order) = unsafe { (link.read(), link.add(1).read()) };
            __free_pages(frame, order).expect("freeing a block held by the test");
            if prev != u64::MAX {
                let f =
                    x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(prev));
                self.head = Some((f, prev_order as u32));
            }
        }
    }
}

ktest!(
    #[needs_memory]
    fn page_allocation_reclaims_cached_empty_slabs() {
        let _tidy = Tidy;
        shrink_all();
        let before = buddy_snapshot();
        let cache = kmalloc_instance().kmalloc_slab(4096, KERNEL).expect("kmalloc-4k");
        let order = cache.order();
        {
            // Populate a few slabs and free their objects: the slabs stay cached, empty.
            let mut held = Held::new();
            let n = cache.objects_per_slab() as u64 * (cache.min_partial() as u64 - 1);
            for _ in 0..n {
                held.push(kmalloc(4096, KERNEL).unwrap().as_ptr());
            }
            drop(held);
            let cached = cache.pages();
            assert!(cached >= 1 << order, "no empty slab stayed cached");
            // Take every free page without reclaim (GFP_NOWAIT may not shrink).
            let mut pages = PageChain::new();
            for o in (0..=MAX_PAGE_ORDER).rev() {
                pages.fill(GfpFlags::GFP_NOWAIT | NOWARN, o);
            }
            assert!(alloc_pages(GfpFlags::GFP_NOWAIT | NOWARN, order).is_err(), "memory not exhausted");
            assert_eq!(cache.pages(), cached, "a non-blocking allocation shrank the slab caches");
            // A blocking allocation reclaims the cached slabs and succeeds.
            let frame = alloc_pages(KERNEL, order).expect("GFP_KERNEL after reclaim of empty slabs");
            assert!(cache.pages() < cached, "the reclaim hook did not shrink kmalloc-4k");
            __free_pages(frame, order).unwrap();
        }
        shrink_all();
        assert_eq!(buddy_snapshot(), before);
    }
);

ktest!(
    #[needs_memory]
    fn gfp_dma_comes_from_dma_caches_below_16m() {
        let _tidy = Tidy;
        for size in [8usize, 100, 1024, 8192] {
            let p = kmalloc(size, KERNEL | GfpFlags::GFP_DMA).unwrap();
            let name = cache_name(size, KERNEL | GfpFlags::GFP_DMA).unwrap();
            assert!(name.starts_with("dma-kmalloc-"), "{name}");
            assert!(phys(p.as_ptr()) + (size as u64) <= 16 << 20, "GFP_DMA kmalloc({size}) above 16 MiB");
            kfree(p.as_ptr()).unwrap();
        }
        // kmalloc-large with GFP_DMA: buddy pages from ZONE_DMA.
        let p = kmalloc(20000, KERNEL | GfpFlags::GFP_DMA).unwrap();
        assert!(phys(p.as_ptr()) + 20000 <= 16 << 20);
        kfree(p.as_ptr()).unwrap();
    }
);

ktest!(
    fn rust_collections_use_kmalloc() {
        let _tidy = Tidy;
        let live = |size| kmalloc_instance().kmalloc_slab(size, KERNEL).unwrap().live_objects();
        let before = live(64);
        let b = Box::new([7u64; 8]);
        assert_eq!(live(64), before + 1, "Box<[u64; 8]> is not a kmalloc-64 object");
        assert_eq!(ksize(&*b as *const [u64; 8] as *const u8), Ok(64));
        drop(b);
        assert_eq!(live(64), before);

        let mut v: Vec<u32> = Vec::new();
        for i in 0..10_000 {
            v.push(i);
        }
        assert_eq!(v.iter().map(|&x| x as u64).sum::<u64>(), 49_995_000);
        let mut s = String::new();
        for i in 0..100 {
            s.push_str(if i % 2 == 0 { "ab" } else { "c" });
        }
        assert_eq!(s.len(), 150);
        let mut m = BTreeMap::new();
        for i in 0..2000u32 {
            m.insert(i.wrapping_mul(2_654_435_761), alloc::format!("v{i}"));
        }
        assert_eq!(m.len(), 2000);
        assert_eq!(m.get(&7u32.wrapping_mul(2_654_435_761)).map(String::as_str), Some("v7"));
        drop((v, s, m));

        // Over-aligned layouts: kmalloc serves them with a naturally aligned power of two; their
        // dealloc (large ones skip the slab fast path by their layout) gives every page back.
        shrink_all();
        let pages_before = super::buddy_snapshot();
        for (size, align) in [(100usize, 8192usize), (100, 65536), (70000, 65536), (8, 4096), (9000, 8)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero-sized layout; freed with the same layout below.
            let p = unsafe { alloc::alloc::alloc(layout) };
            assert!(!p.is_null(), "global allocator refused {layout:?}");
            assert_eq!(p as usize % align, 0, "{layout:?} not honoured");
            // SAFETY: `size` bytes are ours.
            unsafe { p.write_bytes(1, size) };
            // SAFETY: allocated above with this layout.
            unsafe { alloc::alloc::dealloc(p, layout) };
        }
        shrink_all();
        assert_eq!(super::buddy_snapshot(), pages_before, "a global-allocator block was not freed");
    }
);

ktest!(
    #[needs_memory]
    fn kbox_kvec_report_failure_and_free_on_drop() {
        let _tidy = Tidy;
        let live = |size| kmalloc_instance().kmalloc_slab(size, KERNEL).unwrap().live_objects();
        let before = live(32);
        {
            let mut b = KBox::new([1u64; 4], KERNEL).unwrap();
            b[3] = 9;
            assert_eq!(b.iter().sum::<u64>(), 12);
            assert_eq!(ksize(KBox::as_ptr(&b).cast::<u8>()), Ok(32), "KBox<[u64; 4]> is a kmalloc-32 object");
            assert_eq!(live(32), before + 1);
        }
        assert_eq!(live(32), before, "KBox did not free on drop");
        let state_before = state();
        assert!(matches!(
            KVec::<u64>::with_capacity(1 << 40, KERNEL | NOWARN),
            Err(AllocError::TooLarge { .. })
        ));
        assert!(matches!(
            KVec::<u64>::with_capacity(usize::MAX / 4, KERNEL | NOWARN),
            Err(AllocError::Invalid(_))
        ));
        assert_eq!(state(), state_before);
        let mut v = KVec::with_capacity(3, KERNEL).unwrap();
        for i in 0..1000u64 {
            v.push(i, KERNEL).unwrap();
        }
        assert_eq!(v.len(), 1000);
        assert_eq!(v.pop(), Some(999));
        assert_eq!(v.iter().sum::<u64>(), 999 * 998 / 2);
    }
);

// `fault=zero_size_ptr_deref`: using the result of kmalloc(0) must fault, and the report must
// say it was ZERO_SIZE_PTR (tests/slab_debug.rs boots it).
crate::kfault!(
    fn zero_size_ptr_deref() {
        let p = kmalloc(0, KERNEL).expect("kmalloc(0) cannot fail");
        // SAFETY: not safe, on purpose: ZERO_SIZE_PTR is in the unmapped null page; the read
        // must raise a page fault that ends the scenario.
        let v = unsafe { core::ptr::read_volatile(core::hint::black_box(p.as_ptr()).cast::<u64>()) };
        crate::error!("read {v:#x} through ZERO_SIZE_PTR");
    }
);

ktest!(
    fn repeated_refusals_from_one_caller_are_rate_limited() {
        use core::sync::atomic::Ordering::Relaxed;
        let on_stack = 0u64;
        let p = core::ptr::addr_of!(on_stack).cast::<u8>();
        let before = crate::log::SUPPRESSED.load(Relaxed);
        // One call site, 15 refusals within the interval: 10 reported, 5 suppressed.
        for _ in 0..15 {
            assert!(kfree(p).is_err());
        }
        assert_eq!(crate::log::SUPPRESSED.load(Relaxed) - before, 5);
        // Another caller is not silenced by the first one.
        assert!(kfree(p).is_err(), "still refused");
        assert_eq!(crate::log::SUPPRESSED.load(Relaxed) - before, 5);
    }
);

ktest!(
    #[needs_memory]
    fn large_kmalloc_counts_in_meminfo_slab_and_sunreclaim() {
        // mm/slub.c (6.12), ___kmalloc_large_node(): NR_SLAB_UNRECLAIMABLE_B += PAGE_SIZE << order;
        // fs/proc/meminfo.c: Slab = SReclaimable + SUnreclaim.
        let before = crate::mm::report::meminfo();
        let p = kmalloc(64 * 1024, KERNEL).expect("kmalloc 64 KiB");
        let during = crate::mm::report::meminfo();
        assert_eq!(during.sunreclaim_kb, before.sunreclaim_kb.map(|k| k + 64));
        assert_eq!(during.slab_kb, before.slab_kb.map(|k| k + 64));
        assert_eq!(during.slab_kb, Some(during.sreclaimable_kb.unwrap() + during.sunreclaim_kb.unwrap()));
        kfree(p.as_ptr()).unwrap();
        assert_eq!(crate::mm::report::meminfo().slab_kb, before.slab_kb);
    }
);
