//! In-kernel tests of the helpers of Linux 6.12's `mm/util.c` and `include/linux/slab.h`
//! (`crate::mm::util`): the string and memory duplicators, `kmalloc_size_roundup`,
//! `krealloc_array`, the kvmalloc family with 6.12's flag handling and fallback rules,
//! `kvrealloc`/`vrealloc`, and the Rust owners over their backends (`crate::mm::kalloc`).

use core::ptr::NonNull;

use ::mm::kmalloc::ZERO_SIZE_PTR;
use ::mm::slab::SlabError;
use ::mm::vmalloc::{VmallocError, VmapError};
use ::mm::{AllocError, GfpFlags, PAGE_SIZE};

use crate::mm::fault_inject;
use crate::mm::kalloc::{KBox, KVBox, KVVec, KVec, VBox};
use crate::mm::slab::{kfree, kmalloc, kmalloc_instance, ksize};
use crate::mm::util::*;
use crate::mm::vmalloc::{counts, find_vm_area, is_vmalloc_addr, vfree, vmalloc, VmError};

use super::kmalloc::Tidy;

const KERNEL: GfpFlags = GfpFlags::GFP_KERNEL;
const NOWARN: GfpFlags = GfpFlags::__GFP_NOWARN;
const P: usize = PAGE_SIZE;

fn bytes<'a>(p: NonNull<u8>, len: usize) -> &'a [u8] {
    // SAFETY: the callers pass live blocks of at least `len` bytes that they own.
    unsafe { core::slice::from_raw_parts(p.as_ptr(), len) }
}

fn fill(p: NonNull<u8>, len: usize, v: u8) {
    // SAFETY: as in `bytes`.
    unsafe { p.as_ptr().write_bytes(v, len) };
}

crate::ktest!(
    #[needs_memory]
    fn kmemdup_and_the_string_duplicators_copy_and_terminate_as_6_12() {
        let _tidy = Tidy;
        // mm/util.c kmemdup_noprof(): exactly `len` bytes, no terminator.
        let p = kmemdup(b"abc\0def", KERNEL).unwrap();
        assert_eq!((bytes(p, 7), ksize(p.as_ptr())), (&b"abc\0def"[..], Ok(8)));
        kfree(p.as_ptr()).unwrap();
        assert_eq!(kmemdup(&[], KERNEL).unwrap().as_ptr() as usize, ZERO_SIZE_PTR, "kmalloc(0)");
        // kstrdup(): strlen(s) + 1 bytes: up to the first NUL, then a NUL.
        for (s, copy) in [("hello", &b"hello\0"[..]), ("ab\0cd", b"ab\0"), ("", b"\0")] {
            let p = kstrdup(s, KERNEL).unwrap();
            assert_eq!(bytes(p, copy.len()), copy, "kstrdup({s:?})");
            kfree(p.as_ptr()).unwrap();
        }
        // kstrndup(): strnlen(s, max) bytes, then a NUL.
        for (s, max, copy) in
            [("hello", 3, &b"hel\0"[..]), ("hi", 10, b"hi\0"), ("a\0b", 5, b"a\0"), ("x", 0, b"\0")]
        {
            let p = kstrndup(s, max, KERNEL).unwrap();
            assert_eq!(bytes(p, copy.len()), copy, "kstrndup({s:?}, {max})");
            kfree(p.as_ptr()).unwrap();
        }
        // kmemdup_nul(): all `len` bytes, NULs included, then a NUL.
        let p = kmemdup_nul(b"a\0b", KERNEL).unwrap();
        assert_eq!(bytes(p, 4), b"a\0b\0");
        kfree(p.as_ptr()).unwrap();
        let big = [0x5au8; 5000];
        let p = kmemdup(&big, KERNEL).unwrap();
        assert_eq!((bytes(p, 5000), ksize(p.as_ptr())), (&big[..], Ok(8192)));
        kfree(p.as_ptr()).unwrap();
    }
);

crate::ktest!(
    #[needs_memory]
    fn kmalloc_size_roundup_is_what_kmalloc_gives() {
        let _tidy = Tidy;
        // mm/slab_common.c kmalloc_size_roundup(): 0 and sizes above KMALLOC_MAX_SIZE are
        // returned as they are.
        assert_eq!((kmalloc_size_roundup(0), kmalloc_size_roundup(usize::MAX)), (0, usize::MAX));
        for size in [1, 24, 65, 100, 129, 200, 1000, 4097, 8193, 100_000] {
            let p = kmalloc(size, KERNEL).unwrap();
            assert_eq!(ksize(p.as_ptr()), Ok(kmalloc_size_roundup(size)), "size {size}");
            kfree(p.as_ptr()).unwrap();
        }
    }
);

crate::ktest!(
    #[needs_memory]
    fn krealloc_array_refuses_an_overflowing_product_and_keeps_the_block() {
        let _tidy = Tidy;
        let p = kmalloc(32, KERNEL).unwrap();
        fill(p, 32, 0x3c);
        // include/linux/slab.h krealloc_array_noprof(): check_mul_overflow -> NULL, p intact.
        assert_eq!(
            krealloc_array(p.as_ptr(), usize::MAX / 2, 3, KERNEL | NOWARN),
            Err(SlabError::Alloc(AllocError::Invalid("krealloc_array: new_n * new_size overflows")))
        );
        assert!(bytes(p, 32).iter().all(|&b| b == 0x3c));
        let q = krealloc_array(p.as_ptr(), 50, 20, KERNEL).unwrap();
        assert_eq!(ksize(q.as_ptr()), Ok(1024));
        assert!(bytes(q, 32).iter().all(|&b| b == 0x3c));
        kfree(q.as_ptr()).unwrap();
    }
);

crate::ktest!(
    fn kvmalloc_adjusts_the_kmalloc_flags_only_above_a_page() {
        // mm/util.c kmalloc_gfp_adjust() (6.12).
        let r = GfpFlags::__GFP_RETRY_MAYFAIL;
        let nofail = GfpFlags::__GFP_NOFAIL;
        assert_eq!(kmalloc_gfp_adjust(KERNEL | nofail, P), KERNEL | nofail, "up to a page: unchanged");
        assert_eq!(kmalloc_gfp_adjust(KERNEL | nofail, P + 1), KERNEL | NOWARN | GfpFlags::__GFP_NORETRY);
        assert_eq!(kmalloc_gfp_adjust(KERNEL | r, P + 1), KERNEL | r | NOWARN, "RETRY_MAYFAIL: no NORETRY");
        assert_eq!(
            kmalloc_gfp_adjust(GfpFlags::GFP_ATOMIC, 1 << 20),
            GfpFlags::GFP_ATOMIC | NOWARN | GfpFlags::__GFP_NORETRY
        );
    }
);

/// Puts fault injection back as the boot command line had it, however the test ends.
struct RestoreFaults;

impl Drop for RestoreFaults {
    fn drop(&mut self) {
        fault_inject::reset_to_boot();
    }
}

/// The next slab allocation (any flags) fails, once.
fn fail_next_slab_allocation() {
    fault_inject::reset();
    for (a, v) in [("ignore-gfp-wait", "N"), ("verbose", "0"), ("times", "1"), ("probability", "100")] {
        fault_inject::set("failslab", a, v).unwrap();
    }
}

crate::ktest!(
    fn kvmalloc_falls_back_to_vmalloc_only_above_a_page_and_when_it_may_sleep() {
        let _tidy = Tidy;
        let _restore = RestoreFaults;
        // The boot's own injection (a `failslab=`/`fail_page_alloc=` boot) is reset first.
        fault_inject::reset();
        let areas = counts().nr_areas;
        // mm/util.c __kvmalloc_node_noprof() (6.12): kmalloc first, with any flags.
        let p = kvmalloc(64 << 10, GfpFlags::GFP_ATOMIC).unwrap();
        assert!(!is_vmalloc_addr(p.as_ptr()), "GFP_ATOMIC kvmalloc is served by kmalloc");
        kvfree(p.as_ptr()).unwrap();
        // kmalloc-8k fails (failslab): "non-sleeping allocations are not supported by vmalloc".
        fail_next_slab_allocation();
        assert!(kvmalloc(5000, GfpFlags::GFP_ATOMIC).is_err());
        assert_eq!(counts().nr_areas, areas, "no vmalloc fallback for GFP_ATOMIC");
        // Sub-page requests never fall back ("It doesn't really make sense").
        fail_next_slab_allocation();
        assert!(kvmalloc(P, KERNEL | NOWARN).is_err());
        assert_eq!(counts().nr_areas, areas);
        // Above a page, with flags that may sleep: vmalloc.
        fail_next_slab_allocation();
        let v = kvzalloc(5000, KERNEL).unwrap();
        assert!(is_vmalloc_addr(v.as_ptr()), "kmalloc failed quietly, vmalloc served it");
        assert!(bytes(v, 5000).iter().all(|&b| b == 0));
        kvfree(v.as_ptr()).unwrap();
        assert_eq!(counts().nr_areas, areas);
        // "Don't even allow crazy sizes": above INT_MAX, refused before vmalloc.
        assert_eq!(
            kvmalloc(i32::MAX as usize + 1, KERNEL | NOWARN),
            Err(VmError::Invalid("kvmalloc: size above INT_MAX"))
        );
    }
);

crate::ktest!(
    #[needs_memory]
    fn kvmalloc_array_and_kvcalloc_check_the_product_and_zero() {
        let _tidy = Tidy;
        // include/linux/slab.h kvmalloc_array_node_noprof(): check_mul_overflow -> NULL.
        assert_eq!(
            kvmalloc_array(usize::MAX / 2, 3, KERNEL | NOWARN),
            Err(VmError::Invalid("kvmalloc_array: n * size overflows"))
        );
        assert!(kvcalloc(usize::MAX, 2, KERNEL | NOWARN).is_err());
        for (n, size) in [(10, 10), (1000, 64), (3, 1 << 20)] {
            let dirty = kvmalloc(n * size, KERNEL).unwrap();
            fill(dirty, n * size, 0xff);
            kvfree(dirty.as_ptr()).unwrap();
            let p = kvcalloc(n, size, KERNEL).unwrap();
            assert!(bytes(p, n * size).iter().all(|&b| b == 0), "kvcalloc({n}, {size}) is zeroed");
            kvfree(p.as_ptr()).unwrap();
        }
        let p = kvmalloc_array(8 << 20, 1, KERNEL).unwrap();
        assert!(is_vmalloc_addr(p.as_ptr()), "8 MiB is above KMALLOC_MAX_SIZE");
        kvfree(p.as_ptr()).unwrap();
    }
);

crate::ktest!(
    #[needs_memory]
    fn kvrealloc_keeps_contents_in_place_or_moves_as_6_12() {
        let _tidy = Tidy;
        // mm/util.c kvrealloc_noprof() (6.12), kmalloc side: krealloc while it fits ksize.
        let p = kvrealloc(core::ptr::null(), 100, KERNEL).unwrap().unwrap();
        fill(p, 100, 0x11);
        let q = kvrealloc(p.as_ptr(), 120, KERNEL).unwrap().unwrap();
        assert_eq!(q, p, "kept: kmalloc-128");
        let r = kvrealloc(q.as_ptr(), 64 << 10, KERNEL).unwrap().unwrap();
        assert!(!is_vmalloc_addr(r.as_ptr()) && bytes(r, 100).iter().all(|&b| b == 0x11));
        // krealloc cannot (above KMALLOC_MAX_SIZE): kvmalloc, ksize(p) bytes copied, p freed.
        fill(r, 64 << 10, 0x22);
        let v = kvrealloc(r.as_ptr(), 5 << 20, KERNEL).unwrap().unwrap();
        assert!(is_vmalloc_addr(v.as_ptr()));
        assert!(bytes(v, 64 << 10).iter().all(|&b| b == 0x22));
        assert!(matches!(kfree(r.as_ptr()), Err(SlabError::DoubleFree { .. } | SlabError::NotOwned { .. })));
        // vmalloc side: mm/vmalloc.c vrealloc_noprof(): kept while it fits the area's pages,
        // the spare bytes zeroed with __GFP_ZERO; moved (pages copied, old area freed) above.
        let w = kvrealloc(v.as_ptr(), (5 << 20) - 100, KERNEL | GfpFlags::__GFP_ZERO).unwrap().unwrap();
        assert_eq!(w, v);
        // SAFETY: the area still has its 5 MiB mapped.
        let tail = unsafe { core::slice::from_raw_parts(w.as_ptr().add((5 << 20) - 100), 100) };
        assert!(tail.iter().all(|&b| b == 0), "spare memory zeroed");
        // kvmalloc's vmalloc is VM_ALLOW_HUGE_VMAP (mm/util.c __kvmalloc_node_noprof): 5 MiB
        // was rounded to 6 MiB of 2 MiB mappings, which 6 MiB still fits.
        assert_eq!(kvrealloc(w.as_ptr(), 6 << 20, KERNEL).unwrap(), Some(w));
        let x = kvrealloc(w.as_ptr(), 7 << 20, KERNEL).unwrap().unwrap();
        assert_ne!(x, w);
        assert!(find_vm_area(w.as_ptr()).is_none(), "the old area was freed");
        assert!(bytes(x, 64 << 10).iter().all(|&b| b == 0x22));
        // Size 0 frees: vrealloc returns NULL, krealloc ZERO_SIZE_PTR.
        assert_eq!(kvrealloc(x.as_ptr(), 0, KERNEL), Ok(None));
        assert!(find_vm_area(x.as_ptr()).is_none());
        let k = kmalloc(10, KERNEL).unwrap();
        assert_eq!(
            kvrealloc(k.as_ptr(), 0, KERNEL).unwrap().map(|z| z.as_ptr() as usize),
            Some(ZERO_SIZE_PTR)
        );
    }
);

crate::ktest!(
    #[needs_memory]
    fn kvrealloc_refuses_what_is_not_a_block_start() {
        let _tidy = Tidy;
        let v = vmalloc(2 * P).unwrap();
        // SAFETY: an address inside the area, only passed (and refused), never dereferenced.
        let inside = unsafe { v.as_ptr().add(8) };
        assert_eq!(
            kvrealloc(inside, 100, KERNEL),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::Interior {
                addr: inside as usize,
                area_start: v.as_ptr() as usize,
                // The area as the area allocator holds it: its guard page included.
                area_end: v.as_ptr() as usize + 3 * P,
            })))
        );
        vfree(v.as_ptr()).unwrap();
        assert!(
            matches!(kvrealloc(v.as_ptr(), 100, KERNEL), Err(VmError::Vmalloc(VmallocError::Area(_)))),
            "freed area"
        );
        let on_stack = 0u64;
        assert!(matches!(
            kvrealloc(core::ptr::addr_of!(on_stack).cast(), 100, KERNEL),
            Err(VmError::Kfree(SlabError::NotOwned { .. }))
        ));
    }
);

crate::ktest!(
    #[needs_memory]
    fn owners_grow_through_realloc_and_skip_zero_sized_values() {
        let _tidy = Tidy;
        let live = |size| kmalloc_instance().kmalloc_slab(size, KERNEL).unwrap().live_objects();
        // Rust-for-Linux kvec.rs: reserve() goes through Allocator::realloc, so a KVec grows in
        // place while krealloc keeps the block (its ksize).
        let mut v: KVec<u8> = KVec::with_capacity(3, KERNEL).unwrap();
        let first = v.as_ptr();
        v.extend_from_slice(b"abcd", KERNEL).unwrap();
        assert_eq!(
            (v.as_ptr(), v.capacity(), &v[..]),
            (first, 6, &b"abcd"[..]),
            "max(2 * 3, 4): kmalloc-8 kept"
        );
        v.extend_from_slice(b"efg", KERNEL).unwrap();
        assert_ne!(v.as_ptr(), first, "12 bytes: moved to kmalloc-16");
        assert_eq!((v.capacity(), &v[..]), (12, &b"abcdefg"[..]));
        v.truncate(2);
        assert_eq!(&v[..], b"ab");
        // Zero-sized values and empty vectors allocate nothing (dangling, aligned pointers).
        let before = (live(8), counts().nr_areas);
        let z = KBox::new((), KERNEL).unwrap();
        let zv = VBox::new([0u64; 0], KERNEL).unwrap();
        let e: KVVec<u64> = KVVec::with_capacity(0, KERNEL).unwrap();
        assert_eq!(KBox::as_ptr(&z) as *const u8 as usize, 1);
        assert_eq!((live(8), counts().nr_areas), before);
        drop((z, zv, e));
        // vmalloc cannot align above a page: refused, with the caller in the warning line.
        #[repr(align(8192))]
        struct Aligned(#[allow(dead_code)] u8);
        assert_eq!(
            VBox::new(Aligned(1), KERNEL | NOWARN).err(),
            Some(AllocError::Invalid("alignment above PAGE_SIZE"))
        );
        assert!(KVBox::new(Aligned(1), KERNEL | NOWARN).is_err());
        let k = KBox::new(Aligned(2), KERNEL).unwrap();
        assert_eq!(KBox::as_ptr(&k) as usize % 8192, 0, "kmalloc-8k objects are 8 KiB aligned");
    }
);
