//! Property tests: random operation sequences against a model (a map of live intervals).

use std::collections::BTreeMap;
use std::vec::Vec;

use proptest::prelude::*;

use crate::addr::PAGE_SIZE;
use crate::vmalloc::{AddrPlace, VmapAreas, VmapError};

const P: usize = PAGE_SIZE;
const START: usize = 0xffff_c900_0000_0000;
const PAGES: usize = 512;
const END: usize = START + PAGES * P;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        pages: usize,
        align_shift: u32,
        guard: bool,
    },
    /// Free the live area with this index (modulo the number of live areas).
    Free(usize),
    /// Free an address that is not the start of a live area: inside one, or anywhere.
    FreeBad(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..48, 12u32..19, any::<bool>())
            .prop_map(|(pages, align_shift, guard)| Op::Alloc { pages, align_shift, guard }),
        3 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::FreeBad),
    ]
}

/// Free gaps `(start, len)` of the model, in address order.
fn gaps(model: &BTreeMap<usize, usize>) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = START;
    for (&s, &size) in model {
        if s > at {
            out.push((at, s - at));
        }
        at = s + size;
    }
    if END > at {
        out.push((at, END - at));
    }
    out
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut a = VmapAreas::new(START, END).unwrap();
    // start -> size including guard
    let mut model: BTreeMap<usize, usize> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Alloc { pages, align_shift, guard } => {
                let align = 1usize << align_shift;
                let total = pages * P + if guard { P } else { 0 };
                let length = if align == P { total } else { total + align - 1 };
                let g = gaps(&model);
                let first_big = g.iter().find(|&&(_, len)| len >= length).map(|&(s, _)| s);
                match a.alloc(pages * P, align, guard) {
                    Ok(x) => {
                        prop_assert_eq!(x.size, total);
                        prop_assert_eq!(x.start % align, 0, "alignment");
                        prop_assert!(x.start >= START && x.end() <= END);
                        // No overlap with any live area (guards included, so a guard page is
                        // never inside another area and no area is inside a guard).
                        let overlaps =
                            model.range(..x.end()).next_back().is_some_and(|(&s, &sz)| s + sz > x.start);
                        prop_assert!(!overlaps, "{:#x}+{:#x} overlaps a live area", x.start, x.size);
                        // Lowest fit like Linux: at or below the first gap that is surely big
                        // enough; exactly there when no extra alignment is asked for.
                        if align == P {
                            prop_assert_eq!(Some(x.start), first_big);
                        } else {
                            // A smaller gap met on the way may fit thanks to its alignment.
                            if let Some(fb) = first_big {
                                prop_assert!(x.start < fb + align);
                            }
                            let in_gap = g.iter().any(|&(s, len)| s <= x.start && x.end() <= s + len);
                            prop_assert!(in_gap);
                        }
                        prop_assert_eq!(a.find_vmap_area(x.start), Some(x));
                        let last = a.lookup(x.end() - 1);
                        let place = if guard {
                            AddrPlace::Guard { offset: P - 1 }
                        } else {
                            AddrPlace::Inside { offset: x.size - 1 }
                        };
                        prop_assert_eq!(last, Some((x, place)));
                        model.insert(x.start, x.size);
                    }
                    Err(VmapError::NoSpace { size, align: al, largest_free }) => {
                        prop_assert_eq!((size, al), (total, align));
                        prop_assert!(first_big.is_none(), "a gap of {:#x} bytes was free", length);
                        prop_assert_eq!(largest_free, g.iter().map(|&(_, l)| l).max().unwrap_or(0));
                    }
                    Err(VmapError::TooLarge { .. }) => prop_assert!(total > PAGES * P),
                    Err(e) => prop_assert!(false, "unexpected error {:?}", e),
                }
            }
            Op::Free(i) => {
                if model.is_empty() {
                    continue;
                }
                let (&s, &size) = model.iter().nth(i % model.len()).unwrap();
                let x = a.free(s).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                prop_assert_eq!((x.start, x.size), (s, size));
                model.remove(&s);
            }
            Op::FreeBad(r) => {
                let addr = START + r % (PAGES * P);
                if model.contains_key(&addr) {
                    continue;
                }
                let before: Vec<_> = a.free_ranges().collect();
                let err = a.free(addr).unwrap_err();
                match model.range(..=addr).next_back() {
                    Some((&s, &sz)) if addr < s + sz => prop_assert!(
                        matches!(err, VmapError::Interior { area_start, .. } | VmapError::InGuard { area_start, .. } if area_start == s),
                        "{:?}",
                        err
                    ),
                    _ => prop_assert!(matches!(err, VmapError::NotAllocated { .. }), "{:?}", err),
                }
                prop_assert_eq!(a.free_ranges().collect::<Vec<_>>(), before);
            }
        }
        a.check().map_err(TestCaseError::fail)?;
        prop_assert_eq!(a.nr_areas(), model.len());
        let model_free: Vec<_> = gaps(&model);
        prop_assert_eq!(
            a.free_ranges().collect::<Vec<_>>(),
            model_free,
            "free ranges are the model's gaps, merged"
        );
    }
    // Freeing everything merges back to one free range.
    for s in model.keys().copied().collect::<Vec<_>>() {
        a.free(s).unwrap();
    }
    prop_assert_eq!(a.free_ranges().collect::<Vec<_>>(), [(START, PAGES * P)]);
    a.check().map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operations_match_the_model(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 40 } else { 300 })) {
        run(ops)?;
    }
}
