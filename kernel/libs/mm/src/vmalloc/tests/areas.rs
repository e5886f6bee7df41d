//! Unit tests of the vmap area allocator.

use std::vec::Vec;

use crate::addr::PAGE_SIZE;
use crate::vmalloc::{AddrPlace, AreaKind, VmFlags, VmapAreaRequest, VmapAreas, VmapError};

const P: usize = PAGE_SIZE;
const START: usize = 0xffff_c900_0000_0000;

fn areas(pages: usize) -> VmapAreas {
    VmapAreas::new(START, START + pages * P).unwrap()
}

/// Live areas, free ranges, free bytes, vmalloc pages.
type Snapshot = (Vec<(usize, usize)>, Vec<(usize, usize)>, usize, usize);

/// Everything observable, to show that a refused operation changed nothing.
fn snapshot(a: &VmapAreas) -> Snapshot {
    (
        a.areas().map(|x| (x.start, x.size)).collect(),
        a.free_ranges().collect(),
        a.free_bytes(),
        a.vmalloc_pages(),
    )
}

#[test]
fn bad_ranges_are_refused() {
    assert_eq!(VmapAreas::new(START, START).err(), Some(VmapError::BadRange { start: START, end: START }));
    assert!(matches!(VmapAreas::new(START + 1, START + P), Err(VmapError::BadRange { .. })));
    assert!(matches!(VmapAreas::new(START, START + P + 8), Err(VmapError::BadRange { .. })));
}

#[test]
fn alloc_records_area_with_guard_and_caller() {
    let mut a = areas(64);
    let line = line!() + 1;
    let x = a.alloc(3 * P + 1, P, true).unwrap();
    assert_eq!(x.start, START);
    assert_eq!(x.size, 5 * P, "4 pages rounded up + guard");
    assert_eq!(x.nr_pages, 4);
    assert_eq!(x.kind, AreaKind::Vmalloc);
    assert_eq!(x.flags, VmFlags::VM_ALLOC);
    assert_eq!(x.caller.line(), line);
    assert!(x.caller.file().ends_with("areas.rs"));
    assert_eq!((x.guard_size(), x.usable_size(), x.mapped_end()), (P, 4 * P, START + 4 * P));
    assert_eq!(a.vmalloc_pages(), 4);
    assert_eq!(a.free_bytes(), 59 * P);

    let y = a.alloc(P, P, true).unwrap();
    assert_eq!(y.start, START + 5 * P, "lowest fit: right after the first area's guard");
    let z = a
        .alloc_area(VmapAreaRequest { guard: false, kind: AreaKind::Vmap, ..VmapAreaRequest::new(2 * P) })
        .unwrap();
    assert_eq!((z.start, z.size, z.guard_size()), (START + 7 * P, 2 * P, 0));
    assert_eq!(z.flags, VmFlags::VM_MAP | VmFlags::VM_NO_GUARD);
    assert_eq!(a.vmalloc_pages(), 5, "vmap areas are not counted");

    assert_eq!(a.find_vmap_area(START), Some(x));
    assert_eq!(a.find_vmap_area(START + P), None);
    assert_eq!(a.lookup(START + 2 * P + 5), Some((x, AddrPlace::Inside { offset: 2 * P + 5 })));
    assert_eq!(a.lookup(START + 4 * P + 8), Some((x, AddrPlace::Guard { offset: 8 })));
    assert_eq!(a.lookup(START + 9 * P - 1), Some((z, AddrPlace::Inside { offset: 2 * P - 1 })));
    assert_eq!(a.lookup(START + 9 * P), None);
    assert_eq!(a.lookup(START - 1), None);
    a.check().unwrap();
}

#[test]
fn free_merges_with_left_right_both_and_none() {
    let mut a = areas(64);
    let v: Vec<_> = (0..6).map(|_| a.alloc(P, P, true).unwrap().start).collect();
    // Tail free range after the 6 areas.
    assert_eq!(a.free_ranges().count(), 1);
    // None: v[1] has busy neighbours on both sides.
    a.free(v[1]).unwrap();
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(v[1], 2 * P), (v[5] + 2 * P, 52 * P)]);
    a.check().unwrap();
    // Left: v[2] touches the free v[1] range on its left.
    a.free(v[2]).unwrap();
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(v[1], 4 * P), (v[5] + 2 * P, 52 * P)]);
    a.check().unwrap();
    // Right: v[5] touches the tail on its right.
    a.free(v[5]).unwrap();
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(v[1], 4 * P), (v[5], 54 * P)]);
    a.check().unwrap();
    // Both: v[3]'s left is free, v[4] stays busy; then v[4] joins both sides.
    a.free(v[3]).unwrap();
    a.free(v[4]).unwrap();
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(v[1], 62 * P)]);
    a.free(v[0]).unwrap();
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(START, 64 * P)]);
    assert_eq!((a.nr_areas(), a.free_bytes(), a.vmalloc_pages()), (0, 64 * P, 0));
    a.check().unwrap();
}

#[test]
fn alignment_is_honoured_and_leaves_the_gap_free() {
    let mut a = areas(4096);
    let first = a.alloc(P, P, true).unwrap();
    let x = a.alloc(P, 1 << 21, true).unwrap();
    assert_eq!(x.start % (1 << 21), 0);
    assert_eq!(x.start, START + (1 << 21));
    // The gap before the aligned area is still free and is used by the next small request.
    let y = a.alloc(P, P, true).unwrap();
    assert_eq!(y.start, first.end());
    a.check().unwrap();
    for shift in 12..=20 {
        let z = a.alloc(3 * P, 1 << shift, false).unwrap();
        assert_eq!(z.start % (1 << shift), 0, "align 2^{shift}");
    }
    a.check().unwrap();
}

#[test]
fn bad_requests_are_refused_with_state_unchanged() {
    let mut a = areas(16);
    let x = a.alloc(2 * P, P, true).unwrap();
    let before = snapshot(&a);
    assert_eq!(a.alloc(0, P, true), Err(VmapError::ZeroSize));
    for align in [0, 3, 2048, P + 1, 3 * P] {
        assert_eq!(a.alloc(P, align, true), Err(VmapError::BadAlign { align }));
    }
    assert_eq!(a.alloc(16 * P, P, true), Err(VmapError::TooLarge { size: 16 * P, max: 15 * P }));
    assert!(matches!(a.alloc(usize::MAX - 5, P, true), Err(VmapError::TooLarge { .. })));
    assert_eq!(
        a.alloc(15 * P, P, true),
        Err(VmapError::NoSpace { size: 16 * P, align: P, largest_free: 13 * P })
    );
    // An alignment beyond the whole range cannot be satisfied either.
    assert!(matches!(a.alloc(P, 1 << 40, true), Err(VmapError::NoSpace { .. })));
    assert!(matches!(a.alloc(P, 1 << 63, true), Err(VmapError::NoSpace { .. })));

    assert_eq!(
        a.free(START + P),
        Err(VmapError::Interior { addr: START + P, area_start: START, area_end: START + 3 * P })
    );
    assert_eq!(
        a.free(START + 2 * P + 7),
        Err(VmapError::InGuard { addr: START + 2 * P + 7, area_start: START })
    );
    assert_eq!(
        a.free(START + 5 * P),
        Err(VmapError::NotAllocated {
            addr: START + 5 * P,
            free_start: START + 3 * P,
            free_end: START + 16 * P
        })
    );
    assert_eq!(
        a.free(START - P),
        Err(VmapError::OutOfRange { addr: START - P, start: START, end: START + 16 * P })
    );
    assert!(matches!(a.free(START + 16 * P), Err(VmapError::OutOfRange { .. })));
    assert_eq!(snapshot(&a), before);

    // Double free.
    a.free(x.start).unwrap();
    let after = snapshot(&a);
    assert_eq!(
        a.free(x.start),
        Err(VmapError::NotAllocated { addr: x.start, free_start: START, free_end: START + 16 * P })
    );
    assert_eq!(snapshot(&a), after);
    a.check().unwrap();
}

#[test]
fn errors_name_their_cause() {
    let msg = std::format!("{}", VmapError::Interior { addr: 0x2000, area_start: 0x1000, area_end: 0x4000 });
    assert_eq!(msg, "0x2000 is inside the vmap area 0x1000-0x4000, not its start");
    let msg =
        std::format!("{}", VmapError::NotAllocated { addr: 0x1000, free_start: 0x1000, free_end: 0x9000 });
    assert!(msg.contains("double free or never allocated"), "{msg}");
    let msg = std::format!("{}", VmapError::BadAlign { align: 3 });
    assert!(msg.contains("not a power of two"), "{msg}");
}

#[test]
fn exhaustion_then_full_recovery() {
    let mut a = areas(64);
    let mut live = Vec::new();
    loop {
        match a.alloc(P, P, true) {
            Ok(x) => live.push(x.start),
            Err(e) => {
                assert_eq!(e, VmapError::NoSpace { size: 2 * P, align: P, largest_free: 0 });
                break;
            }
        }
    }
    assert_eq!(live.len(), 32);
    assert_eq!(a.free_bytes(), 0);
    // Exactly filled: one page without guard still fits nowhere.
    assert!(matches!(a.alloc(P, P, false), Err(VmapError::NoSpace { .. })));
    // Free in an interleaved order; everything merges back to one range.
    for i in (0..32).step_by(2).chain((1..32).step_by(2)) {
        a.free(live[i]).unwrap();
        a.check().unwrap();
    }
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(START, 64 * P)]);
}

#[test]
fn whole_range_in_one_area() {
    let mut a = areas(8);
    let x = a.alloc(7 * P, P, true).unwrap();
    assert_eq!((x.start, x.size), (START, 8 * P));
    assert_eq!(a.free_ranges().count(), 0);
    a.check().unwrap();
    a.free(x.start).unwrap();
    assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(START, 8 * P)]);
}
