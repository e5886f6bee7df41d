//! In-kernel tests of slab caches on real memory: `kmem_cache_create` and its checks, alloc,
//! zalloc, free, shrink, destroy (refused while objects live), constructors, SLAB_HWCACHE_ALIGN,
//! typed caches; and the debug reports of SLAB_RED_ZONE / SLAB_POISON / SLAB_STORE_USER caches
//! and of a corrupted free pointer, after which the allocator must keep working.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ::mm::slab::debug::{POISON_FREE, RED_ACTIVE};
use ::mm::slab::{Corruption, CorruptionKind, SlabError, SlabFlags, TypedCache};
use ::mm::GfpFlags;

use super::buddy_snapshot;
use crate::mm::slab::*;

const KERNEL: GfpFlags = GfpFlags::GFP_KERNEL;
const DEBUG: SlabFlags = SlabFlags::DEBUG;

ktest!(
    #[needs_memory]
    fn create_alloc_free_shrink_destroy() {
        let _tidy = super::kmalloc::Tidy;
        shrink_all();
        let before = buddy_snapshot();
        let cache = kmem_cache_create("test-basic", 100, 0, SlabFlags::empty(), None).expect("create");
        assert_eq!(cache.name(), "test-basic");
        assert_eq!(cache.object_size(), 100);
        assert!(cache.objects_per_slab() >= 1);
        let n = cache.objects_per_slab() as usize * 3 + 1;
        let mut objs = alloc::vec::Vec::with_capacity(n);
        for i in 0..n {
            let p = cache.alloc(KERNEL).expect("kmem_cache_alloc");
            assert_eq!(p.as_ptr() as usize % 8, 0);
            // SAFETY: 100 bytes of a live object.
            unsafe { p.as_ptr().write_bytes(i as u8, 100) };
            objs.push(p);
        }
        assert_eq!(cache.live_objects(), n as u64);
        // As on Linux, slabinfo counts the objects parked in this CPU's slab as active until it
        // is flushed.
        let per_slab = cache.objects_per_slab() as u64;
        assert_eq!(cache.slabinfo_row().active_objs, 4 * per_slab);
        flush_this_cpu();
        let row = cache.slabinfo_row();
        assert_eq!(row.active_objs, n as u64);
        assert_eq!(row.num_slabs, 4, "{n} objects need 4 slabs");
        // Objects are distinct and kept their contents.
        for (i, p) in objs.iter().enumerate() {
            // SAFETY: 100 bytes of a live object.
            let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), 100) };
            assert!(bytes.iter().all(|&b| b == i as u8), "object {i} overwritten");
        }
        // Destroy is refused while objects live, naming the cache and the count.
        let cache = match cache.destroy() {
            Err((cache, e)) => {
                assert_eq!(e, SlabError::CacheBusy { cache: "test-basic", live: n as u64 });
                let msg = alloc::format!("{e}");
                assert!(msg.contains("test-basic") && msg.contains(&alloc::format!("{n} objects")), "{msg}");
                cache
            }
            Ok(()) => panic!("destroy accepted a cache with live objects"),
        };
        for p in objs.drain(..) {
            cache.free(p).expect("kmem_cache_free");
        }
        assert_eq!(cache.live_objects(), 0);
        assert!(cache.validate().is_ok());
        // Empty slabs up to min_partial stay cached; shrink returns them.
        assert!(cache.pages() > 0);
        let freed = cache.shrink();
        assert!(freed > 0);
        assert_eq!(cache.pages(), 0);
        // zalloc zeroes (the object just freed was dirty).
        let z = cache.zalloc(KERNEL).unwrap();
        // SAFETY: 100 bytes of a live object.
        assert!(unsafe { core::slice::from_raw_parts(z.as_ptr(), 100) }.iter().all(|&b| b == 0));
        cache.free(z).unwrap();
        cache.destroy().expect("destroy of an unused cache");
        drop(objs);
        shrink_all();
        assert_eq!(buddy_snapshot(), before, "create + use + destroy leaked pages");
    }
);

ktest!(
    fn bad_creation_arguments_are_refused() {
        let _tidy = super::kmalloc::Tidy;
        let cases: [(&'static str, usize, usize, &str); 4] = [
            ("", 8, 0, "empty name"),
            ("test-zero", 0, 0, "object size is 0"),
            ("test-huge", (4 << 20) + 1, 0, "object size above 4 MiB"),
            ("test-align", 64, 24, "alignment is not a power of two"),
        ];
        for (name, size, align, why) in cases {
            match kmem_cache_create(name, size, align, SlabFlags::empty(), None) {
                Err(SlabError::InvalidCache { name: n, why: w }) => {
                    assert_eq!(n, name);
                    assert!(w.starts_with(why), "{w}");
                }
                other => panic!("kmem_cache_create({name:?}, {size}, {align}) gave {other:?}"),
            }
        }
    }
);

static CTOR_CALLS: AtomicU64 = AtomicU64::new(0);

fn ctor(p: *mut u8) {
    CTOR_CALLS.fetch_add(1, Relaxed);
    // SAFETY: the slab allocator passes an object of the cache (48 bytes).
    unsafe { p.cast::<u64>().write(0xc0ffee) };
}

ktest!(
    #[needs_memory]
    fn ctor_runs_when_a_slab_is_populated() {
        let _tidy = super::kmalloc::Tidy;
        CTOR_CALLS.store(0, Relaxed);
        let cache = kmem_cache_create("test-ctor", 48, 0, SlabFlags::empty(), Some(ctor)).unwrap();
        assert_eq!(CTOR_CALLS.load(Relaxed), 0, "ctor ran before any slab exists");
        let first = cache.alloc(KERNEL).unwrap();
        let per_slab = cache.objects_per_slab() as u64;
        assert_eq!(CTOR_CALLS.load(Relaxed), per_slab, "ctor must run once per object of the new slab");
        // SAFETY: a live object of 48 bytes.
        assert_eq!(unsafe { first.as_ptr().cast::<u64>().read() }, 0xc0ffee);
        // Allocating the rest of that slab constructs nothing more.
        let mut more = alloc::vec::Vec::new();
        for _ in 1..per_slab {
            more.push(cache.alloc(KERNEL).unwrap());
        }
        assert_eq!(CTOR_CALLS.load(Relaxed), per_slab);
        // The next slab is constructed when it is populated.
        more.push(cache.alloc(KERNEL).unwrap());
        assert_eq!(CTOR_CALLS.load(Relaxed), 2 * per_slab);
        for p in more.into_iter().chain([first]) {
            cache.free(p).unwrap();
        }
        cache.destroy().unwrap();
    }
);

ktest!(
    #[needs_memory]
    fn hwcache_align_and_explicit_alignment() {
        let _tidy = super::kmalloc::Tidy;
        let hw = kmem_cache_create("test-hwcache", 40, 0, SlabFlags::SLAB_HWCACHE_ALIGN, None).unwrap();
        let al = kmem_cache_create("test-align256", 40, 256, SlabFlags::empty(), None).unwrap();
        let mut objs = alloc::vec::Vec::new();
        for _ in 0..200 {
            let a = hw.alloc(KERNEL).unwrap();
            assert_eq!(a.as_ptr() as usize % 64, 0, "SLAB_HWCACHE_ALIGN object not on a cache line");
            let b = al.alloc(KERNEL).unwrap();
            assert_eq!(b.as_ptr() as usize % 256, 0, "align 256 not honoured");
            objs.push((a, b));
        }
        for (a, b) in objs {
            hw.free(a).unwrap();
            al.free(b).unwrap();
        }
        hw.destroy().unwrap();
        al.destroy().unwrap();
    }
);

#[derive(Debug)]
struct Tracked(u64);

static TRACKED_DROPS: AtomicU64 = AtomicU64::new(0);

impl Drop for Tracked {
    fn drop(&mut self) {
        TRACKED_DROPS.fetch_add(self.0, Relaxed);
    }
}

ktest!(
    #[needs_memory]
    fn typed_cache_frees_on_drop() {
        let _tidy = super::kmalloc::Tidy;
        TRACKED_DROPS.store(0, Relaxed);
        let cache = TypedCache::<_, Tracked>::new(slab(), "test-typed", SlabFlags::empty()).unwrap();
        {
            let a = cache.alloc(Tracked(1), KERNEL).map_err(|(_, e)| e).unwrap();
            let mut b = cache.alloc(Tracked(10), KERNEL).map_err(|(_, e)| e).unwrap();
            b.0 += 90;
            assert_eq!(a.0 + b.0, 101);
            assert_eq!(cache.cache().live_objects(), 2);
        }
        assert_eq!(TRACKED_DROPS.load(Relaxed), 101, "SlabBox did not drop its value");
        assert_eq!(cache.cache().live_objects(), 0, "SlabBox did not free its object");
        cache.destroy().map_err(|(_, e)| e).unwrap();
    }
);

/// Reads and writes single bytes of slab memory the test deliberately damages.
fn poke(p: *mut u8, off: usize, v: u8) {
    // SAFETY: `p + off` lies inside the slot of an object of a slab the test's cache owns (the
    // object itself, its red zone, or a freed object): RAM mapped by the direct map. The
    // allocator's debug checks are what is under test.
    unsafe { p.add(off).write_volatile(v) }
}

fn here_file() -> &'static str {
    file!()
}

fn check_report(
    c: &Corruption,
    cache: &str,
    kind: CorruptionKind,
    obj: NonNull<u8>,
    off: isize,
    found: u8,
    expected: u8,
) {
    assert_eq!(c.cache, cache, "{c}");
    assert_eq!(c.kind, kind, "{c}");
    assert_eq!(c.object, obj.as_ptr() as usize, "{c}");
    assert_eq!(c.offset, off, "{c}");
    assert_eq!(c.bad_addr, (obj.as_ptr() as isize + off) as usize, "{c}");
    assert_eq!((c.found, c.expected), (found as u64, expected as u64), "{c}");
    let alloc_at = c.alloc_at.unwrap_or_else(|| panic!("no allocation track with SLAB_STORE_USER: {c}"));
    assert_eq!(alloc_at.file(), here_file(), "{c}");
}

ktest!(
    #[needs_memory]
    fn red_zone_overwrite_is_reported_on_free() {
        let _tidy = super::kmalloc::Tidy;
        let cache = kmem_cache_create("test-redzone", 32, 0, DEBUG, None).unwrap();
        let obj = cache.alloc(KERNEL).unwrap();
        let before = cache.slabinfo_row();
        poke(obj.as_ptr(), 32, 0x42); // one byte past the end
        let c = match cache.free(obj) {
            Err(SlabError::Corrupted(c)) => c,
            other => panic!("write past the end not detected: {other:?}"),
        };
        crate::info!("slab debug report (expected): {c}");
        check_report(&c, "test-redzone", CorruptionKind::RightRedzone, obj, 32, 0x42, RED_ACTIVE);
        assert!(c.free_at.is_none(), "never freed, yet a free track: {c}");
        let msg = alloc::format!("{c}");
        assert!(msg.contains("test-redzone") && msg.contains("right red zone") && msg.contains(here_file()));
        // The object was not freed; validate reports the same damage.
        assert_eq!(cache.slabinfo_row(), before);
        assert!(matches!(cache.validate(), Err(SlabError::Corrupted(_))));
        // Repaired, it frees; the cache keeps working.
        poke(obj.as_ptr(), 32, RED_ACTIVE);
        cache.free(obj).expect("free after repair");
        let again = cache.alloc(KERNEL).unwrap();
        cache.free(again).unwrap();
        assert!(cache.validate().is_ok());
        // Left red zone too.
        let obj = cache.alloc(KERNEL).unwrap();
        // SAFETY: one byte before the object: its left red zone, inside the slot.
        unsafe { obj.as_ptr().sub(1).write_volatile(0x17) };
        match cache.free(obj) {
            Err(SlabError::Corrupted(c)) => {
                check_report(&c, "test-redzone", CorruptionKind::LeftRedzone, obj, -1, 0x17, RED_ACTIVE)
            }
            other => panic!("write before the start not detected: {other:?}"),
        }
        // SAFETY: as above.
        unsafe { obj.as_ptr().sub(1).write_volatile(RED_ACTIVE) };
        cache.free(obj).unwrap();
        cache.destroy().unwrap();
    }
);

ktest!(
    #[needs_memory]
    fn write_after_free_is_reported_and_object_quarantined() {
        let _tidy = super::kmalloc::Tidy;
        let cache = kmem_cache_create("test-poison", 64, 0, DEBUG, None).unwrap();
        let keep = cache.alloc(KERNEL).unwrap();
        let obj = cache.alloc(KERNEL).unwrap();
        cache.free(obj).unwrap();
        // Freed objects are poisoned: 0x6b, last byte 0xa5.
        // SAFETY: reads of a freed object's slot (RAM in the direct map).
        assert_eq!(unsafe { obj.as_ptr().add(3).read_volatile() }, POISON_FREE);
        poke(obj.as_ptr(), 5, 0x11); // use after free
        let (_, reports) = cache.last_report();
        // The next allocation would get that object: it is checked, reported and never handed out.
        let next = cache.alloc(KERNEL).unwrap();
        assert_ne!(next, obj, "a damaged object was handed out");
        let (last, now) = cache.last_report();
        assert_eq!(now, reports + 1);
        let c = last.expect("report");
        crate::info!("slab debug report (expected): {c}");
        check_report(&c, "test-poison", CorruptionKind::Poison, obj, 5, 0x11, POISON_FREE);
        let free_at = c.free_at.expect("free track with SLAB_STORE_USER");
        assert_eq!(free_at.file(), here_file());
        // Quarantined objects do not count as live; the cache works and destroys cleanly.
        assert_eq!(cache.live_objects(), 2);
        cache.free(next).unwrap();
        cache.free(keep).unwrap();
        assert_eq!(cache.live_objects(), 0);
        cache.destroy().expect("destroy with a quarantined object");
    }
);

ktest!(
    #[needs_memory]
    fn corrupted_free_pointer_is_detected() {
        let _tidy = super::kmalloc::Tidy;
        // No debug flags: the free pointer lives inside the free object, where a use after free
        // hits it.
        let cache = kmem_cache_create("test-freeptr", 64, 0, SlabFlags::empty(), None).unwrap();
        let a = cache.alloc(KERNEL).unwrap();
        let b = cache.alloc(KERNEL).unwrap();
        cache.free(a).unwrap();
        // Out of this CPU's sheaf onto a free list, where its free pointer is.
        flush_this_cpu();
        for off in 0..64 {
            poke(a.as_ptr(), off, 0x41);
        }
        match cache.validate() {
            Err(SlabError::Corrupted(c)) => {
                assert_eq!((c.cache, c.kind), ("test-freeptr", CorruptionKind::FreePointer), "{c}");
                crate::info!("slab validate report (expected): {c}");
            }
            other => panic!("validate missed a corrupted free pointer: {other:?}"),
        }
        // Allocation does not follow the wild pointer: it reports, keeps the rest of the list out
        // of use, and goes on with fresh objects.
        let (_, reports) = cache.last_report();
        let again = cache.alloc(KERNEL).unwrap();
        assert_eq!(again, a);
        let (last, now) = cache.last_report();
        assert_eq!(now, reports + 1);
        let c = last.expect("report");
        assert_eq!(
            (c.cache, c.kind, c.object),
            ("test-freeptr", CorruptionKind::FreePointer, a.as_ptr() as usize)
        );
        let mut more = alloc::vec::Vec::new();
        for _ in 0..cache.objects_per_slab() * 2 {
            let p = cache.alloc(KERNEL).unwrap();
            assert!(p != a && p != b);
            more.push(p);
        }
        for p in more.into_iter().chain([a, b]) {
            cache.free(p).unwrap();
        }
        assert!(cache.validate().is_ok());
        cache.destroy().unwrap();
    }
);

ktest!(
    #[needs_memory]
    fn double_free_in_debug_cache_is_found_anywhere_on_the_free_list() {
        let _tidy = super::kmalloc::Tidy;
        let cache = kmem_cache_create("test-dfree", 32, 0, DEBUG, None).unwrap();
        let a = cache.alloc(KERNEL).unwrap();
        let b = cache.alloc(KERNEL).unwrap();
        cache.free(a).unwrap();
        cache.free(b).unwrap();
        // `a` is not the free-list head any more: the consistency check walks the list.
        assert_eq!(
            cache.free(a),
            Err(SlabError::DoubleFree { cache: "test-dfree", addr: a.as_ptr() as usize })
        );
        assert!(cache.validate().is_ok());
        cache.destroy().unwrap();
    }
);

// The per-CPU fast paths on real memory: a LIFO kmalloc/kfree pair goes through this CPU's
// sheaf, every counter is readable from kernel code by its SLUB_STATS name, and flushing the
// CPU leaves slabinfo counting exactly the live objects.
ktest!(
    #[needs_memory]
    fn kmalloc_pairs_take_the_per_cpu_fast_paths() {
        use ::mm::slab::SlabStat;
        let _tidy = super::kmalloc::Tidy;
        let cache = kmalloc_instance().kmalloc_slab(64, KERNEL).unwrap();
        let keep = kmalloc(64, KERNEL).unwrap();
        // One warm-up pair: the first free fills the sheaf the loop then reuses.
        let w = kmalloc(64, KERNEL).unwrap();
        kfree(w.as_ptr()).unwrap();
        let (a0, f0, s0) = (
            cache.stat(SlabStat::AllocFastpath),
            cache.stat(SlabStat::FreeFastpath),
            cache.stat(SlabStat::AllocSlowpath),
        );
        for _ in 0..1000 {
            let p = kmalloc(64, KERNEL).unwrap();
            kfree(p.as_ptr()).unwrap();
        }
        assert_eq!(cache.stat(SlabStat::AllocFastpath) - a0, 1000);
        assert_eq!(cache.stat(SlabStat::FreeFastpath) - f0, 1000);
        assert_eq!(cache.stat(SlabStat::AllocSlowpath), s0, "no pair left the fast path");
        let mut line = alloc::string::String::new();
        for s in SlabStat::ALL {
            line.push_str(&alloc::format!(" {}={}", s.name(), cache.stat(s)));
        }
        crate::info!("kmalloc-64 stats:{line}");
        let live = cache.live_objects();
        flush_this_cpu();
        assert_eq!(cache.slabinfo_row().active_objs, live);
        assert_eq!(cache.live_objects(), live);
        kfree(keep.as_ptr()).unwrap();
        assert!(cache.validate().is_ok());
    }
);

// `slab_debug=FZPU,kmalloc-32` boot (tests/slab_debug.rs): writing into the tail of an 18-byte
// kmalloc object of the 32-byte class is reported on kfree, as Linux's kmalloc red zone does.
ktest!(
    #[explicit]
    fn slab_debug_kmalloc_tail_redzone() {
        let _tidy = super::kmalloc::Tidy;
        let cfg = slab().debug_config();
        assert_eq!(cfg.flags_for("kmalloc-32"), DEBUG, "boot with slab_debug=FZPU,kmalloc-32");
        assert_eq!(cfg.flags_for("kmalloc-64"), SlabFlags::empty(), "slab_debug= applied to other caches");
        let k32 = kmalloc_instance().kmalloc_slab(18, KERNEL).unwrap();
        assert_eq!(k32.name(), "kmalloc-32");
        assert!(k32.flags().contains(DEBUG));
        let p = kmalloc(18, KERNEL).unwrap();
        assert_eq!(ksize(p.as_ptr()), Ok(32));
        poke(p.as_ptr(), 18, 0x55);
        let c = match kfree(p.as_ptr()) {
            Err(SlabError::Corrupted(c)) => c,
            other => panic!("write into the kmalloc tail not detected: {other:?}"),
        };
        crate::info!("kmalloc red zone report (expected): {c}");
        check_report(&c, "kmalloc-32", CorruptionKind::KmallocTail, p, 18, 0x55, RED_ACTIVE);
        poke(p.as_ptr(), 18, RED_ACTIVE);
        kfree(p.as_ptr()).expect("kfree after repair");
        assert!(k32.validate().is_ok());
        // Use after free of a kmalloc-32 object is caught at the next allocation.
        let q = kmalloc(32, KERNEL).unwrap();
        kfree(q.as_ptr()).unwrap();
        poke(q.as_ptr(), 0, 0x99);
        let r = kmalloc(32, KERNEL).unwrap();
        assert_ne!(r, q);
        let c = k32.last_report().0.expect("report");
        crate::info!("kmalloc poison report (expected): {c}");
        assert_eq!((c.kind, c.object, c.found), (CorruptionKind::Poison, q.as_ptr() as usize, 0x99));
        kfree(r.as_ptr()).unwrap();
        // The allocator keeps working.
        for size in [1usize, 18, 32, 100, 5000] {
            let p = kmalloc(size, KERNEL).unwrap();
            kfree(p.as_ptr()).unwrap();
        }
        crate::info!("slab_debug kmalloc-32 checks done");
    }
);

ktest!(
    #[needs_memory]
    fn kmem_cache_destroy_with_objects_warns_and_keeps_the_cache() {
        // mm/slab_common.c (6.12), kmem_cache_destroy(): __kmem_cache_shutdown() fails, WARN
        // "Slab cache still has objects", the cache is not released and its objects stay valid
        // (mm/slub.c free_partial: only the empty slabs are discarded).
        let cache = kmem_cache_create("test-destroy-busy", 200, 0, SlabFlags::empty(), None).expect("create");
        let objs: alloc::vec::Vec<_> = (0..30u8)
            .map(|i| {
                let p = kmem_cache_alloc(&cache, KERNEL).expect("alloc");
                // SAFETY: 200 bytes of a live object.
                unsafe { p.as_ptr().write_bytes(i, 200) };
                p
            })
            .collect();
        let (cache, e) = kmem_cache_destroy(cache).expect_err("destroy with 30 live objects");
        assert_eq!(e, SlabError::CacheBusy { cache: "test-destroy-busy", live: 30 });
        assert_eq!(cache.live_objects(), 30);
        assert!(cache.validate().is_ok(), "the report changed nothing");
        for (i, p) in objs.into_iter().enumerate() {
            // SAFETY: 200 bytes of a live object.
            let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), 200) };
            assert!(bytes.iter().all(|&b| b == i as u8), "object {i} damaged by the destroy attempt");
            kmem_cache_free(&cache, p).expect("free");
        }
        kmem_cache_destroy(cache).expect("destroy once empty");
    }
);
