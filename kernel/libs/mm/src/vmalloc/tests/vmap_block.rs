//! vmap block bookkeeping (6.12 mm/vmalloc.c: new_vmap_block, vb_alloc, vb_free,
//! purge_fragmented_block, _vm_unmap_aliases) and the vm_map_ram lines of /proc/vmallocinfo.

use std::format;

use x86_64::VirtAddr;

use super::space::setup;
use crate::addr::{Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::vmalloc::vmap_block::{addr_to_vb_idx, vb_order, FlushUnion, VbFree, VMAP_PURGE_THRESHOLD};
use crate::vmalloc::{
    AreaKind, TlbFlushRange, VmMapRamError, VmallocError, VmallocInfoLine, VmapAreaRequest, VmapBlock,
    VMAP_BBMAP_BITS, VMAP_BLOCK_SIZE, VMAP_MAX_ALLOC,
};

const P: usize = PAGE_SIZE;
const VA: usize = 0xffff_c900_0040_0000;

// mm/vmalloc.c (6.12): VMAP_MAX_ALLOC = BITS_PER_LONG; VMAP_BBMAP_BITS = min(1024, max(128,
// VMALLOC_PAGES / roundup_pow_of_two(NR_CPUS) / 16)) = 1024 with 128 GiB / 4 KiB pages and
// NR_CPUS = 16; VMAP_BLOCK_SIZE = VMAP_BBMAP_BITS * PAGE_SIZE; VMAP_PURGE_THRESHOLD = bits / 4.
#[test]
fn block_constants_are_6_12s_for_64_bit_and_nr_cpus_16() {
    assert_eq!(crate::NR_CPUS, 16);
    assert_eq!((VMAP_MAX_ALLOC, VMAP_BBMAP_BITS, VMAP_BLOCK_SIZE), (64, 1024, 4 << 20));
    assert_eq!(VMAP_PURGE_THRESHOLD, 256);
    // get_order(size): 1 -> 0, 2 -> 1, 3 -> 2, 64 -> 6.
    assert_eq!([1, 2, 3, 4, 5, 64].map(vb_order), [0, 1, 2, 2, 3, 6]);
    // addr_to_vb_idx: (addr - (VMALLOC_START & ~(VMAP_BLOCK_SIZE - 1))) / VMAP_BLOCK_SIZE.
    assert_eq!(addr_to_vb_idx(0xffff_c900_0000_0000, VA + 5 * P), 1);
}

// new_vmap_block(order): bitmap_set(used_map, 0, 1 << order), free = BITS - (1 << order);
// vb_alloc(): pages_off = VMAP_BBMAP_BITS - vb->free, a bump pointer, 2^order pages per chunk
// (not aligned to the order), vb->free -= 1 << order; a block with too little free is skipped.
#[test]
fn chunks_are_bumped_in_power_of_two_orders_from_offset_zero() {
    let mut vb = VmapBlock::new(VA, 3, 2);
    assert_eq!(
        (vb.free, vb.dirty, vb.dirty_min, vb.dirty_max, vb.cpu),
        (VMAP_BBMAP_BITS - 4, 0, VMAP_BBMAP_BITS, 0, 2)
    );
    assert_eq!(vb.alloc(1), Some(VA + 4 * P));
    assert_eq!(vb.alloc(5), Some(VA + 5 * P), "8 pages from offset 5");
    assert_eq!(vb.alloc(64), Some(VA + 13 * P));
    assert_eq!(vb.free, VMAP_BBMAP_BITS - 4 - 1 - 8 - 64);
    assert_eq!(vb.nr_used(), 77);
    assert_eq!(
        vb.chunks().collect::<std::vec::Vec<_>>(),
        [(VA, 3), (VA + 4 * P, 1), (VA + 5 * P, 5), (VA + 13 * P, 64)]
    );
    while vb.alloc(64).is_some() {}
    let left = vb.free;
    assert!(left < 64);
    assert_eq!(vb.alloc(64), None);
    assert_eq!(vb.free, left, "a refused alloc takes nothing");
}

// vb_free(): bitmap_clear(used_map, offset, 1 << order), then after the PTEs are cleared the
// dirty range grows (dirty_min = min, dirty_max = max(offset + (1 << order))) and vb->dirty +=
// 1 << order; dirty == VMAP_BBMAP_BITS frees the block. _vm_unmap_aliases() takes the dirty
// range once and resets it (dirty_min = BITS, dirty_max = 0).
#[test]
fn unmap_marks_dirty_and_the_dirty_range_is_taken_once() {
    let mut vb = VmapBlock::new(VA, 2, 0);
    let b = vb.alloc(3).unwrap();
    let f = vb.unmap_begin(b, 3).unwrap();
    assert_eq!(f, VbFree { offset: 2, order: 2, count: 3 });
    assert!(!vb.unmap_end(f));
    assert_eq!((vb.dirty, vb.dirty_min, vb.dirty_max, vb.nr_used()), (4, 2, 6, 2));
    assert_eq!(vb.take_dirty(), Some((VA + 2 * P, VA + 6 * P)));
    assert_eq!(vb.take_dirty(), None);
    // Fill the block, free everything: the last free reports the block fully dirty.
    let mut live = std::vec![(VA, 2)];
    while let Some(a) = vb.alloc(64) {
        live.push((a, 64));
    }
    while let Some(a) = vb.alloc(1) {
        live.push((a, 1));
    }
    assert_eq!(vb.free, 0);
    let last = live.pop().unwrap();
    for (a, n) in live {
        let f = vb.unmap_begin(a, n).unwrap();
        assert!(!vb.unmap_end(f));
    }
    let f = vb.unmap_begin(last.0, last.1).unwrap();
    assert!(vb.unmap_end(f), "dirty == VMAP_BBMAP_BITS: free_vmap_block");
    assert_eq!(vb.take_dirty(), None, "a block being freed is flushed by its free path");
}

// 6.12's vb_free() trusts its caller; here a wrong count, an interior address, a double unmap
// and a never-mapped address are each refused by name and change nothing.
#[test]
fn bad_unmaps_are_refused_and_change_nothing() {
    let mut vb = VmapBlock::new(VA, 3, 0);
    let b = vb.alloc(8).unwrap();
    let snapshot = format!("{vb:?}");
    assert_eq!(vb.unmap_begin(VA, 4), Err(VmMapRamError::WrongCount { addr: VA, mapped: 3, given: 4 }));
    assert_eq!(vb.unmap_begin(VA, 2), Err(VmMapRamError::WrongCount { addr: VA, mapped: 3, given: 2 }));
    assert_eq!(
        vb.unmap_begin(b + 3 * P, 1),
        Err(VmMapRamError::Interior { addr: b + 3 * P, start: b, count: 8 })
    );
    assert_eq!(
        vb.unmap_begin(VA + 3 * P, 1),
        Err(VmMapRamError::Interior { addr: VA + 3 * P, start: VA, count: 3 })
    );
    assert_eq!(vb.unmap_begin(b + 8 * P, 1), Err(VmMapRamError::NeverMapped { addr: b + 8 * P }));
    assert_eq!(format!("{vb:?}"), snapshot);
    let f = vb.unmap_begin(VA, 3).unwrap();
    vb.unmap_end(f);
    let snapshot = format!("{vb:?}");
    assert_eq!(vb.unmap_begin(VA, 3), Err(VmMapRamError::AlreadyUnmapped { addr: VA }));
    assert_eq!(format!("{vb:?}"), snapshot);
}

// purge_fragmented_block(): only when free + dirty == VMAP_BBMAP_BITS (nothing live) and dirty
// != BITS, and, unless forced, vb->free < VMAP_PURGE_THRESHOLD; then free = 0, dirty = BITS,
// dirty range = the whole block.
#[test]
fn purge_needs_nothing_live_and_little_free_unless_forced() {
    let mut vb = VmapBlock::new(VA, 64, 0);
    assert!(!vb.purgeable(true), "a live chunk");
    let f = vb.unmap_begin(VA, 64).unwrap();
    vb.unmap_end(f);
    assert!(vb.purgeable(true) && !vb.purgeable(false), "960 pages free: not over-eagerly");
    let mut live = std::vec::Vec::new();
    while vb.free >= VMAP_PURGE_THRESHOLD {
        live.push(vb.alloc(64).unwrap());
    }
    assert!(!vb.purgeable(false));
    for a in live {
        let f = vb.unmap_begin(a, 64).unwrap();
        vb.unmap_end(f);
    }
    assert!(vb.purgeable(false));
    assert_eq!(
        vb.mark_purged(),
        TlbFlushRange { start: VirtAddr::new(VA as u64), nr_pages: VMAP_BBMAP_BITS }
    );
    assert!(!vb.purgeable(true), "not purged twice");
    assert_eq!(vb.alloc(1), None);
    // _vm_unmap_aliases: one flush for the union of the ranges.
    let mut u = FlushUnion::EMPTY;
    assert_eq!(u.range(), None);
    u.add(VA + 8 * P, VA + 10 * P);
    u.add(VA + VMAP_BLOCK_SIZE, VA + VMAP_BLOCK_SIZE + P);
    assert_eq!(
        u.range(),
        Some(TlbFlushRange { start: VirtAddr::new((VA + 8 * P) as u64), nr_pages: VMAP_BBMAP_BITS - 8 + 1 })
    );
}

// vmalloc_info_show(): an area without vm_struct that has VMAP_RAM prints
// "0x%pK-0x%pK %7ld vm_map_ram" (va_start, va_end, va_size); vm_unmap_ram of a large
// mapping (find_unlink_vmap_area + free_unmap_vmap_area) needs the count it was mapped with.
#[test]
fn vm_map_ram_areas_print_as_vm_map_ram_and_unmap_with_their_count() {
    let (ram, mut s) = setup(256);
    let block = s
        .areas
        .alloc_area(VmapAreaRequest {
            align: VMAP_BLOCK_SIZE,
            guard: false,
            kind: AreaKind::VmapBlock,
            ..VmapAreaRequest::new(VMAP_BLOCK_SIZE)
        })
        .unwrap();
    assert_eq!(
        format!("{}", VmallocInfoLine(&block)),
        "0xffffc90000000000-0xffffc90000400000 4194304 vm_map_ram"
    );
    let frames: std::vec::Vec<Pfn> = (0..65).map(|_| ram.take()).collect();
    let big = s
        .areas
        .alloc_area(VmapAreaRequest {
            guard: false,
            kind: AreaKind::VmMapRam,
            ..VmapAreaRequest::new(65 * P)
        })
        .unwrap();
    // SAFETY: frames of the test RAM owned by this test.
    unsafe { s.tables.map_pages(&ram, GfpFlags::GFP_KERNEL, VirtAddr::new(big.start as u64), &frames) }
        .unwrap();
    assert_eq!(
        format!("{}", VmallocInfoLine(&big)),
        format!("{:#018x}-{:#018x}  266240 vm_map_ram", big.start, big.start + 65 * P)
    );
    let no_flush = |r: TlbFlushRange| panic!("unexpected flush {r:?}");
    assert_eq!(
        s.vm_unmap_ram_area(&ram, big.start, 64 + 2, no_flush),
        Err(VmallocError::VmMapRam(VmMapRamError::WrongCount { addr: big.start, mapped: 65, given: 66 }))
    );
    assert_eq!(
        s.vm_unmap_ram_area(&ram, block.start, 65, no_flush),
        Err(VmallocError::VmMapRam(VmMapRamError::NotVmMapRam { addr: block.start }))
    );
    assert!(matches!(
        s.vunmap(&ram, big.start, no_flush),
        Err(VmallocError::WrongKind { kind: AreaKind::VmMapRam, .. })
    ));
    let free = ram.nr_free();
    let mut flushed = None;
    s.vm_unmap_ram_area(&ram, big.start, 65, |r| flushed = Some(r)).unwrap();
    assert_eq!(flushed, None, "the range waits for the lazy purge");
    s.purge_vmap_area_lazy(|r| flushed = Some(r));
    assert_eq!(flushed, Some(TlbFlushRange { start: VirtAddr::new(big.start as u64), nr_pages: 65 }));
    assert_eq!(ram.nr_free(), free, "the frames stay the caller's");
    s.areas.check().unwrap();
}
