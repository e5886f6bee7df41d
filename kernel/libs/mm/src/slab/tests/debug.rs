//! Debug-mode tests in the spirit of Linux's `slub_kunit`: corrupt on purpose, assert the report.

use crate::testing::FilledWith;
use core::ptr::NonNull;

use crate::gfp::GfpFlags;
use crate::kmalloc::Kmalloc;
use crate::slab::debug::{POISON_END, POISON_FREE, RED_ACTIVE, RED_INACTIVE};
use crate::slab::tests::prov::TestProvider;
use crate::slab::tests::SEED;
use crate::slab::*;

const GFP: GfpFlags = GfpFlags::GFP_KERNEL;
const PAGES: usize = if cfg!(miri) { 1024 } else { 4096 };

fn corrupted(r: Result<(), SlabError>) -> Corruption {
    match r {
        Err(SlabError::Corrupted(c)) => c,
        other => panic!("expected a corruption report, got {other:?}"),
    }
}

/// Writes one byte at `p + off` (test-only corruption inside the emulated RAM).
fn poke(p: NonNull<u8>, off: isize, v: u8) {
    // SAFETY: every offset used stays inside the object's slot, inside the provider's buffer.
    unsafe { p.as_ptr().offset(off).write(v) }
}

#[test]
fn write_past_the_end_is_caught_at_free_with_locations() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("rz", 64, 0, SlabFlags::DEBUG, None).unwrap();
    let alloc_line = line!() + 1;
    let p = c.alloc(GFP).unwrap();
    poke(p, 64, 0x11);
    let r = corrupted(c.free(p));
    assert_eq!(r.kind, CorruptionKind::RightRedzone);
    assert_eq!(
        (r.cache, r.object, r.bad_addr, r.offset),
        ("rz", p.as_ptr() as usize, p.as_ptr() as usize + 64, 64)
    );
    assert_eq!((r.found, r.expected), (0x11, RED_ACTIVE as u64));
    let at = r.alloc_at.unwrap();
    assert_eq!((at.file(), at.line()), (file!(), alloc_line));
    let msg = std::format!("{}", SlabError::Corrupted(r));
    assert!(msg.contains("rz: object") && msg.contains("right red zone") && msg.contains("0x11"), "{msg}");
    assert!(msg.contains("last allocated at"), "{msg}");
    // Refused: the object is still allocated; repair and free for real.
    assert_eq!(c.live_objects(), 1);
    poke(p, 64, RED_ACTIVE);
    c.free(p).unwrap();
    c.validate().unwrap();
    c.destroy().unwrap();
}

#[test]
fn write_before_the_start_hits_the_left_red_zone() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("left", 40, 0, SlabFlags::SLAB_RED_ZONE, None).unwrap();
    let p = c.alloc(GFP).unwrap();
    poke(p, -3, 0);
    assert!(matches!(
        c.validate(),
        Err(SlabError::Corrupted(Corruption { kind: CorruptionKind::LeftRedzone, .. }))
    ));
    let r = corrupted(c.free(p));
    assert_eq!(
        (r.kind, r.offset, r.found, r.expected),
        (CorruptionKind::LeftRedzone, -3, 0, RED_ACTIVE as u64)
    );
    poke(p, -3, RED_ACTIVE);
    c.free(p).unwrap();
    c.destroy().unwrap();
}

#[test]
fn write_after_free_is_caught_by_validate_and_never_handed_out() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab.kmem_cache_create("uaf", 32, 0, SlabFlags::DEBUG, None).unwrap();
    let p = c.alloc(GFP).unwrap();
    let free_line = line!() + 1;
    c.free(p).unwrap();
    // Freed objects are poisoned.
    // SAFETY: reading the (free) object's bytes inside the emulated RAM.
    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), 32) };
    assert!(bytes[..31].filled_with(POISON_FREE) && bytes[31] == POISON_END);
    poke(p, 5, 0x00);
    let r = match c.validate() {
        Err(SlabError::Corrupted(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!((r.kind, r.offset, r.found, r.expected), (CorruptionKind::Poison, 5, 0, POISON_FREE as u64));
    assert_eq!(r.free_at.unwrap().line(), free_line);
    // The next allocation would have been `p`: it is quarantined and another object is returned.
    let q = c.alloc(GFP).unwrap();
    assert_ne!(q, p);
    let (rep, n) = c.last_report();
    assert_eq!((rep.unwrap().kind, rep.unwrap().object, n), (CorruptionKind::Poison, p.as_ptr() as usize, 1));
    assert_eq!(c.live_objects(), 1);
    c.free(q).unwrap();
    // The quarantined object does not block destruction.
    c.destroy().unwrap();
}

#[test]
fn kmalloc_red_zone_covers_the_tail_of_the_request() {
    let prov = TestProvider::new(PAGES);
    let cfg = parse_slab_debug("FZPU,kmalloc-32").unwrap();
    let slab = SlabAllocator::new(&prov, SEED, cfg).unwrap();
    let km = Kmalloc::new(slab).unwrap();
    let k32 = km.kmalloc_slab(18, GFP).unwrap();
    assert_eq!(k32.name(), "kmalloc-32");
    assert!(k32.flags().contains(SlabFlags::DEBUG));
    assert!(!km.kmalloc_slab(64, GFP).unwrap().flags().intersects(SlabFlags::DEBUG));
    let p = km.kmalloc(18, GFP).unwrap();
    // Bytes 18..32 are red zone.
    // SAFETY: reading the tail of a live object.
    assert!(unsafe { core::slice::from_raw_parts(p.as_ptr().add(18), 14) }.filled_with(RED_ACTIVE));
    poke(p, 17, 1); // inside the request: fine
    poke(p, 20, 0x77);
    let r = corrupted(km.kfree(p.as_ptr()));
    assert_eq!((r.kind, r.cache, r.offset, r.found), (CorruptionKind::KmallocTail, "kmalloc-32", 20, 0x77));
    poke(p, 20, RED_ACTIVE);
    // krealloc within ksize moves the red zone: 18 -> 24 frees bytes 18..24 for the caller.
    let q = km.krealloc(p.as_ptr(), 24, GFP).unwrap();
    assert_eq!(q, p);
    poke(p, 23, 9);
    poke(p, 24, 9);
    let r = corrupted(km.kfree(p.as_ptr()));
    assert_eq!((r.kind, r.offset), (CorruptionKind::KmallocTail, 24));
    poke(p, 24, RED_ACTIVE);
    km.kfree(p.as_ptr()).unwrap();
    k32.validate().unwrap();
}

#[test]
fn red_zone_and_poison_patterns_on_free_objects() {
    let prov = TestProvider::new(PAGES);
    let slab = SlabAllocator::new(&prov, SEED, SlabDebugConfig::NONE).unwrap();
    let c = slab
        .kmem_cache_create("pat", 20, 0, SlabFlags::SLAB_RED_ZONE | SlabFlags::SLAB_POISON, None)
        .unwrap();
    let p = c.alloc(GFP).unwrap();
    let q = c.alloc(GFP).unwrap();
    // `q` was never handed out before: its red zones are active now, the neighbour's left red
    // zone after it is inactive until allocated.
    // SAFETY: reading red zones inside live slots.
    unsafe {
        assert_eq!(q.as_ptr().add(20).read(), RED_ACTIVE);
        assert_eq!(q.as_ptr().sub(1).read(), RED_ACTIVE);
    }
    c.free(q).unwrap();
    // SAFETY: as above.
    unsafe {
        assert_eq!(q.as_ptr().add(20).read(), RED_INACTIVE);
        assert_eq!(q.as_ptr().sub(1).read(), RED_INACTIVE);
    }
    c.free(p).unwrap();
    c.validate().unwrap();
    c.destroy().unwrap();
}

#[test]
fn slab_debug_string_applies_to_named_caches_only() {
    let prov = TestProvider::new(PAGES);
    let cfg = parse_slab_debug("U,alpha;Z,b*").unwrap();
    let slab = SlabAllocator::new(&prov, SEED, cfg).unwrap();
    let a = slab.kmem_cache_create("alpha", 16, 0, SlabFlags::empty(), None).unwrap();
    let b = slab.kmem_cache_create("beta", 16, 0, SlabFlags::empty(), None).unwrap();
    let g = slab.kmem_cache_create("gamma", 16, 0, SlabFlags::empty(), None).unwrap();
    assert_eq!(a.flags(), SlabFlags::SLAB_STORE_USER);
    assert_eq!(b.flags(), SlabFlags::SLAB_RED_ZONE);
    assert_eq!(g.flags(), SlabFlags::empty());
    assert!(a.size() > 16 && b.size() > 16 && g.size() == 16);
    for c in [a, b, g] {
        c.destroy().unwrap();
    }
}
