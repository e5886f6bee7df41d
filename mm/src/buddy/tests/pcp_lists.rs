//! Per-CPU page lists: refill, spill, hot/cold order, double frees of list pages, draining on
//! exhaustion, and the batch/high settings.

use super::*;
use crate::buddy::pcp::{pcp_high, zone_batchsize, PcpConfigError, NR_CPUS};
use crate::page::FreePagesError::*;

fn cpu(i: usize) -> CpuId {
    CpuId::new(i).unwrap()
}

/// The pages on `cpu`'s list of `zt`, head (hot) first.
fn list(n: &Node, zt: ZoneType, cpu: usize) -> Vec<u64> {
    let mut v = Vec::new();
    n.for_each_pcp_page(zt, |c, p| {
        if c == cpu {
            v.push(p.0)
        }
    });
    v
}

#[test]
fn zone_batchsize_follows_linux() {
    // batch = rounddown_pow_of_two(b + b/2) - 1 with b = min(managed >> 10, 256) / 4, at least 1.
    assert_eq!(zone_batchsize(0), 1);
    assert_eq!(zone_batchsize(3977), 1);
    assert_eq!(zone_batchsize(100_000), 31); // b = 24 -> 36 -> 32 - 1
    assert_eq!(zone_batchsize(250_000), 63); // b = 61 -> 91 -> 64 - 1
    assert_eq!(zone_batchsize(1 << 30), 63); // capped: b = 64 -> 96 -> 64 - 1
    assert_eq!(pcp_high(63), 378);
    let m = TestMachine::standard();
    let info = m.node.pcp_info(Normal, 0).unwrap();
    let batch = zone_batchsize(m.node.zone(Normal).managed_pages());
    assert_eq!((info.count, info.batch, info.high), (0, batch, pcp_high(batch)));
    assert_eq!(m.node.pcp_info(Normal, NR_CPUS), None);
    assert_eq!(CpuId::new(NR_CPUS), None);
}

#[test]
fn refill_takes_a_batch_and_spill_returns_the_coldest_batch() {
    let m = TestMachine::standard();
    let n = &m.node;
    let initial = snapshot(n);
    n.set_pcp_batch(Normal, 4, 8).unwrap();
    let z = n.zone(Normal);
    let free0 = z.free_pages();

    // The first order-0 allocation refills the empty list with a batch of 4 from the buddy lists.
    let a = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    assert_eq!(n.page(a).unwrap().state(), PageState::Allocated);
    assert_eq!(z.free_pages(), free0 - 4, "the whole batch left the buddy lists");
    let rest = list(n, Normal, 0);
    assert_eq!(rest.len(), 3);
    assert!(rest.iter().all(|&p| n.page(Pfn(p)).unwrap().state() == PageState::PcpFree));
    n.check_free_lists().unwrap();

    // The next three come from the list, in order, without touching the buddy lists.
    let mut held = std::vec![a];
    for &want in &rest {
        let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
        assert_eq!(p.0, want);
        held.push(p);
    }
    assert_eq!(z.free_pages(), free0 - 4);
    assert_eq!(n.pcp_info(Normal, 0).unwrap().count, 0);
    // Empty again: the next one refills.
    for _ in 0..4 {
        held.push(n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap());
    }
    assert_eq!(z.free_pages(), free0 - 8);

    // Frees push at the head (hot): the last freed page is the next one handed out.
    for &p in &held {
        n.free_pages(p, 0).unwrap();
    }
    assert_eq!(n.pcp_info(Normal, 0).unwrap().count, 8, "count == high: no spill yet");
    assert_eq!(z.free_pages(), free0 - 8);
    let before_spill = list(n, Normal, 0);
    assert_eq!(before_spill[0], held[7].0);
    let hot = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    assert_eq!(hot, held[7], "LIFO: the hottest page first");
    n.free_pages(hot, 0).unwrap();

    // A ninth page takes count above high: the 4 coldest (tail) pages go back to the buddy
    // lists. It comes from CPU 1's list (a page may be freed on another CPU than it was
    // allocated on, as on Linux).
    let fresh = n.alloc_pages_cpu(cpu(1), GfpFlags::GFP_KERNEL, 0).unwrap();
    assert_eq!(list(n, Normal, 1).len(), 3, "CPU 1 refilled its own list");
    n.free_pages_cpu(cpu(0), fresh, 0).unwrap();
    let after = list(n, Normal, 0);
    assert_eq!(after.len(), 5, "9 > high 8: a batch of 4 went back");
    assert_eq!(after[0], fresh.0);
    assert_eq!(&after[1..], &before_spill[..4], "the 4 coldest were spilled");
    for p in &before_spill[4..] {
        let s = n.page(Pfn(*p)).unwrap().state();
        assert!(matches!(s, PageState::Buddy | PageState::FreeTail), "spilled page merged: {s:?}");
    }
    n.check_free_lists().unwrap();
    assert_eq!(sorted(snapshot(n)), sorted(initial), "draining restores the boot free lists");
}

#[test]
fn double_free_of_a_page_on_a_pcp_list_is_detected() {
    let m = TestMachine::standard();
    let n = &m.node;
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    let q = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    n.free_pages(p, 0).unwrap();
    assert_eq!(n.page(p).unwrap().state(), PageState::PcpFree);
    let lists = [list(n, Normal, 0), list(n, Normal, 1)];
    let free = n.zone(Normal).free_pages();
    // Same CPU, another CPU, another order: all refused, nothing changed.
    assert_eq!(n.free_pages(p, 0), Err(DoubleFree { pfn: p, head: p, order: 0 }));
    assert_eq!(n.free_pages_cpu(cpu(1), p, 0), Err(DoubleFree { pfn: p, head: p, order: 0 }));
    if p.0.is_multiple_of(2) {
        assert_eq!(n.free_pages(p, 1), Err(DoubleFree { pfn: p, head: p, order: 0 }));
    }
    assert_eq!([list(n, Normal, 0), list(n, Normal, 1)], lists);
    assert_eq!(n.zone(Normal).free_pages(), free);
    assert!(std::format!("{}", DoubleFree { pfn: p, head: p, order: 0 }).contains("double free"));
    assert!(!PageState::PcpFree.is_in_use());
    n.check_free_lists().unwrap();
    // After draining, the page is in a buddy block: still a double free.
    n.free_pages(q, 0).unwrap();
    n.drain_pages();
    assert!(matches!(n.free_pages(p, 0), Err(DoubleFree { pfn, .. }) if pfn == p));
    n.check_free_lists().unwrap();
}

#[test]
fn concurrent_double_frees_onto_different_lists_succeed_once() {
    let m = TestMachine::standard();
    let n = &m.node;
    let rounds = if cfg!(miri) { 5 } else { 200 };
    for _ in 0..rounds {
        let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
        let ok = std::thread::scope(|s| {
            let hs: Vec<_> =
                (0..2).map(|c| s.spawn(move || n.free_pages_cpu(cpu(c), p, 0).is_ok())).collect();
            hs.into_iter().map(|h| h.join().unwrap() as u32).sum::<u32>()
        });
        assert_eq!(ok, 1, "exactly one of two racing frees of {p:?} wins");
    }
    n.check_free_lists().unwrap();
}

#[test]
fn exhaustion_drains_pcp_lists_and_allocates_down_to_the_last_page() {
    for m in TestMachine::for_heavy_tests() {
        exhaustion_drains_on(&m);
    }
}

fn exhaustion_drains_on(m: &TestMachine) {
    let n = &m.node;
    let initial = snapshot(n);
    for zt in ZoneType::ALL {
        n.set_pcp_batch(zt, 8, 48).unwrap();
    }
    // Park pages on the lists of CPUs 1..4, in every zone (4 CPUs' lists fit the small test
    // zones below their pcp high marks; NR_CPUS = 16 would not).
    let nr_cpus = NR_CPUS.min(4);
    for c in 1..nr_cpus {
        for gfp in [GfpFlags::GFP_KERNEL, GfpFlags::GFP_DMA32, GfpFlags::GFP_DMA] {
            let got: Vec<Pfn> = (0..5).map(|_| n.alloc_pages_cpu(cpu(c), gfp, 0).unwrap()).collect();
            for p in got {
                n.free_pages_cpu(cpu(c), p, 0).unwrap();
            }
        }
    }
    let t = n.totals();
    assert!(t.pcp_pages >= 3 * (nr_cpus as u64 - 1) * 5);
    assert_eq!(t.free_pages + t.pcp_pages, t.managed_pages);

    // GFP_KERNEL from CPU 0 gets every page above each zone's stop, including those parked on
    // the other CPUs' lists: nothing is lost to the lists.
    let mut got = Vec::new();
    while let Ok(p) = n.alloc_pages(GfpFlags::GFP_KERNEL, 0) {
        got.push(p);
    }
    let stops: u64 =
        n.zones().iter().map(|z| z.min_wmark_pages() + z.lowmem_reserve()[Normal as usize]).sum();
    assert_eq!(got.len() as u64, t.managed_pages - stops);
    for z in n.zones() {
        assert_eq!(z.free_pages(), z.min_wmark_pages() + z.lowmem_reserve()[Normal as usize], "{}", z.name());
    }
    assert_eq!(n.totals().pcp_pages, 0, "the failed allocation drained every list");
    let zones: Vec<ZoneType> = got.iter().map(|&p| zone_of(m, p)).collect();
    assert!(zones.windows(2).all(|w| w[0] >= w[1]), "zonelist order kept: Normal -> DMA32 -> DMA");
    n.check_free_lists().unwrap();
    for p in got {
        n.free_pages(p, 0).unwrap();
    }
    assert_eq!(sorted(snapshot(n)), sorted(initial));
}

#[test]
fn high_order_allocation_drains_pcp_lists_and_retries() {
    let m = TestMachine::standard();
    let n = &m.node;
    // A list that never spills, so that all of DMA can sit on it.
    n.set_pcp_batch(Dma, 1, 1 << 20).unwrap();
    let dma = GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA;
    let mut got = Vec::new();
    while let Ok(p) = n.alloc_pages_cpu(cpu(2), dma, 0) {
        got.push(p);
    }
    for p in got {
        n.free_pages_cpu(cpu(2), p, 0).unwrap();
    }
    let z = n.zone(Dma);
    assert_eq!(z.free_pages(), z.min_wmark_pages(), "the rest of DMA is on CPU 2's list");
    // An order-3 DMA request fails on the buddy lists alone; the drain makes it succeed.
    let p = n.alloc_pages(dma, 3).unwrap();
    assert_eq!(n.pcp_pages(Dma), 0);
    assert_eq!(zone_of(&m, p), Dma);
    n.free_pages(p, 3).unwrap();
    assert_eq!(z.free_pages(), z.managed_pages());
    n.check_free_lists().unwrap();
}

#[test]
fn pcp_settings_are_checked() {
    let m = TestMachine::standard();
    let n = &m.node;
    assert_eq!(n.set_pcp_batch(Normal, 0, 8), Err(PcpConfigError::ZeroBatch));
    assert_eq!(n.set_pcp_batch(Normal, 8, 7), Err(PcpConfigError::HighBelowBatch { high: 7, batch: 8 }));
    assert!(std::format!("{}", PcpConfigError::HighBelowBatch { high: 7, batch: 8 }).contains("high (7)"));
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    n.free_pages(p, 0).unwrap();
    assert!(n.pcp_pages(Normal) > 0);
    n.set_pcp_batch(Normal, 2, 2).unwrap();
    assert_eq!(n.pcp_pages(Normal), 0, "new settings start from empty lists");
    let info = n.pcp_info(Normal, 3).unwrap();
    assert_eq!((info.batch, info.high), (2, 2));
}
