//! Property test: random alloc/free sequences against a model (the set of live blocks).

use crate::testing::FilledWith;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::buddy::pcp::NR_CPUS;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        gfp: usize,
        order: u32,
        cpu: usize,
    },
    Free {
        which: usize,
        cpu: usize,
    },
    /// `decay_pcp_high` on every list (the vmstat worker's periodic job).
    Decay,
}

const GFPS: [(GfpFlags, ZoneType); 5] = [
    (GfpFlags::GFP_KERNEL, Normal),
    (GfpFlags::GFP_KERNEL.union(GfpFlags::__GFP_DMA32), Dma32),
    (GfpFlags::GFP_KERNEL.union(GfpFlags::__GFP_DMA), Dma),
    (GfpFlags::GFP_ATOMIC, Normal),
    (GfpFlags::GFP_NOWAIT.union(GfpFlags::__GFP_ZERO), Normal),
];

fn op() -> impl Strategy<Value = Op> {
    let order = prop_oneof![6 => 0u32..=2, 3 => 3u32..=6, 1 => 7u32..=10];
    prop_oneof![
        3 => (0..GFPS.len(), order, 0..NR_CPUS).prop_map(|(gfp, order, cpu)| Op::Alloc { gfp, order, cpu }),
        2 => (any::<usize>(), 0..NR_CPUS).prop_map(|(which, cpu)| Op::Free { which, cpu }),
        1 => Just(Op::Decay),
    ]
}

/// Where a page is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Buddy,
    Pcp,
    Live,
}

/// Every page of every zone span is exactly one of: in a free block, on a per-CPU list, in a
/// live block, reserved (or without descriptor). No two blocks overlap.
fn check_accounting(n: &Node, live: &BTreeMap<u64, u32>) {
    let mut blocks: Vec<(u64, u64, Kind)> =
        live.iter().map(|(&p, &o)| (p, p + (1 << o), Kind::Live)).collect();
    for zt in ZoneType::ALL {
        for o in 0..=MAX_PAGE_ORDER {
            n.for_each_free_block(zt, o, |p| blocks.push((p.0, p.0 + (1 << o), Kind::Buddy)));
        }
        n.for_each_pcp_page(zt, |_, p, o| blocks.push((p.0, p.0 + (1 << o), Kind::Pcp)));
    }
    blocks.sort_unstable();
    for w in blocks.windows(2) {
        assert!(w[0].1 <= w[1].0, "blocks overlap: {:?} and {:?}", w[0], w[1]);
    }
    for z in n.zones() {
        let (s, e) = (z.zone_start_pfn(), z.zone_start_pfn() + z.spanned_pages());
        let reserved = (s..e)
            .filter(|&p| n.page(Pfn(p)).is_none_or(|pg| pg.state() == PageState::Reserved))
            .count() as u64;
        let pages = |k: Kind| -> u64 {
            blocks.iter().filter(|b| b.0 >= s && b.0 < e && b.2 == k).map(|b| b.1 - b.0).sum()
        };
        let (free, pcp, used) = (pages(Kind::Buddy), pages(Kind::Pcp), pages(Kind::Live));
        assert_eq!(free, z.free_pages(), "{}: pcp pages are not counted as free", z.name());
        assert_eq!(pcp, n.pcp_pages(z.zone_type()), "{}", z.name());
        assert_eq!(free + pcp + used + reserved, z.spanned_pages(), "{}: every page counted once", z.name());
        assert_eq!(free + pcp + used, z.managed_pages(), "{}", z.name());
        for cpu in 0..NR_CPUS {
            let info = n.pcp_info(z.zone_type(), cpu).unwrap();
            assert!(
                info.high_min <= info.high && info.high <= info.high_max,
                "{}: high out of range",
                z.name()
            );
        }
    }
    n.check_free_lists().unwrap();
}

/// `pcp`: `None` keeps the boot sizing, `Some((batch, high_min, high_max))` sets it in every
/// zone (auto-tuned between the two highs when they differ).
fn run(small: bool, pcp: Option<(u32, u32, u32)>, ops: Vec<Op>) {
    let m = if small { TestMachine::small() } else { TestMachine::standard() };
    let n = &m.node;
    if let Some((batch, high_min, high_max)) = pcp {
        for zt in ZoneType::ALL {
            n.set_pcp_high_range(zt, batch, high_min, high_max).unwrap();
        }
    }
    let initial = sorted(snapshot(n));
    let mut live: BTreeMap<u64, u32> = BTreeMap::new();
    let mut order_of_live: Vec<u64> = Vec::new();
    for op in ops {
        match op {
            Op::Alloc { gfp, order, cpu } => {
                let (flags, highest) = GFPS[gfp];
                let Ok(p) = n.alloc_pages_cpu(CpuId::new(cpu).unwrap(), flags, order) else { continue };
                assert_eq!(p.0 % (1 << order), 0, "aligned to its order");
                assert!(zone_of(&m, p) <= highest, "zone allowed by the flags");
                let page = n.page(p).unwrap();
                assert_eq!((page.state(), page.order()), (PageState::Allocated, order));
                if let Some((&q, &qo)) = live.range(..p.0 + (1 << order)).next_back() {
                    assert!(q + (1 << qo) <= p.0, "new block {p:?}/{order} overlaps live {q:#x}/{qo}");
                }
                let dm = n.direct_map();
                if flags.contains(GfpFlags::__GFP_ZERO) {
                    // SAFETY: the block is ours.
                    let b = unsafe { core::slice::from_raw_parts(dm.pfn_to_virt(p), PAGE_SIZE << order) };
                    assert!(b.filled_with(0));
                }
                // Dirty the first byte of each page: __GFP_ZERO must clean up after us.
                for i in 0..1u64 << order {
                    // SAFETY: the block is ours.
                    unsafe { dm.pfn_to_virt(p.add(i)).write(0x5a) };
                }
                live.insert(p.0, order);
                order_of_live.push(p.0);
            }
            Op::Decay => {
                n.decay_pcp_high_all();
            }
            Op::Free { which, cpu } => {
                if order_of_live.is_empty() {
                    continue;
                }
                let p = order_of_live.swap_remove(which % order_of_live.len());
                let o = live.remove(&p).unwrap();
                n.free_pages_cpu(CpuId::new(cpu).unwrap(), Pfn(p), o).unwrap();
                assert_eq!(
                    n.free_pages(Pfn(p), o).map_err(|e| matches!(e, FreePagesError::DoubleFree { .. })),
                    Err(true)
                );
            }
        }
    }
    check_accounting(n, &live);
    for (&p, &o) in &live {
        n.free_pages(Pfn(p), o).unwrap();
    }
    assert_eq!(sorted(snapshot(n)), initial, "freeing everything coalesces back to the boot free lists");
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 48 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn random_alloc_free_matches_model(
        small in any::<bool>().prop_map(|b| b || cfg!(miri)),
        pcp in prop::option::of((1u32..=8, 1u32..=4, 1u32..=4).prop_map(|(b, k, m)| (b, b * k, b * k * m))),
        ops in prop::collection::vec(op(), if cfg!(miri) { 1..40 } else { 1..400 })) {
        run(small, pcp, ops);
    }
}
