//! Per-CPU page lists: refill, spill, hot/cold order, double frees of list pages, draining on
//! exhaustion, and the batch/high settings.

use super::*;
use crate::buddy::pcp::{zone_batchsize, zone_highsize, PcpConfigError, NR_CPUS};
use crate::page::FreePagesError::*;

fn cpu(i: usize) -> CpuId {
    CpuId::new(i).unwrap()
}

/// The pages on `cpu`'s list of `zt`, head (hot) first.
fn list(n: &Node, zt: ZoneType, cpu: usize) -> Vec<u64> {
    let mut v = Vec::new();
    n.for_each_pcp_page(zt, |c, p, _| {
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
    let m = TestMachine::standard();
    let info = m.node.pcp_info(Normal, 0).unwrap();
    let batch = zone_batchsize(m.node.zone(Normal).managed_pages());
    assert_eq!((info.count, info.batch), (0, batch));
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

    // Frees push at the head (hot). The eighth brings count to high (8): Linux 6.12 spills
    // when count >= high, `nr_pcp_free` pages = the run of frees (8) clamped to
    // [batch, high - batch] = 4, from the cold end: the first four freed.
    for &p in &held {
        n.free_pages(p, 0).unwrap();
    }
    assert_eq!(n.pcp_info(Normal, 0).unwrap().count, 4, "count reached high: 4 spilled");
    assert_eq!(z.free_pages(), free0 - 4);
    let expect: Vec<u64> = held[4..].iter().rev().map(|p| p.0).collect();
    assert_eq!(list(n, Normal, 0), expect, "hottest first; the four coldest went back");
    for p in &held[..4] {
        let s = n.page(*p).unwrap().state();
        assert!(matches!(s, PageState::Buddy | PageState::FreeTail), "spilled page merged: {s:?}");
    }
    let hot = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    assert_eq!(hot, held[7], "LIFO: the hottest page first");
    n.free_pages(hot, 0).unwrap();

    // A page may be freed on another CPU than it was allocated on, as on Linux.
    let fresh = n.alloc_pages_cpu(cpu(1), GfpFlags::GFP_KERNEL, 0).unwrap();
    assert_eq!(list(n, Normal, 1).len(), 3, "CPU 1 refilled its own list");
    n.free_pages_cpu(cpu(0), fresh, 0).unwrap();
    assert_eq!(list(n, Normal, 0)[0], fresh.0);
    n.check_free_lists().unwrap();
    n.drain_pages();
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
    super::assert_low_then_min_sweeps(&zones);
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
    assert_eq!(n.pcp_pages(Dma), 8, "an order-3 block goes onto CPU 0's order-3 list");
    n.drain_pages();
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

#[test]
// Not under Miri (CI time: the 6.12 sizing makes these walk thousands of pages); the list code
// they use runs under Miri in the refill/spill, double-free and exhaustion tests above.
#[cfg_attr(miri, ignore)]
fn pcp_sizing_follows_linux_6_12() {
    // high = total / online CPUs, at least 4 * batch.
    assert_eq!(zone_highsize(1000, 31, 1), 1000);
    assert_eq!(zone_highsize(1000, 31, 4), 250);
    assert_eq!(zone_highsize(100, 31, 1), 124);
    assert_eq!(zone_highsize(100, 31, 0), 124, "no CPU counted: as one");
    let m = TestMachine::standard();
    let n = &m.node;
    for z in n.zones().iter().filter(|z| z.managed_pages() > 0) {
        let info = n.pcp_info(z.zone_type(), 0).unwrap();
        let online = crate::num_online_cpus();
        let batch = zone_batchsize(z.managed_pages());
        assert_eq!(info.batch, batch, "{}", z.name());
        assert_eq!(info.high_min, zone_highsize(z.low_wmark_pages(), batch, online), "{}", z.name());
        assert_eq!(info.high_max, zone_highsize(z.managed_pages() / 8, batch, online), "{}", z.name());
        assert_eq!(info.high, info.high_min, "high starts at high_min");
    }
    // A new min_free_kbytes moves the low watermark, and high_min with it (zone_pcp_update).
    let before = n.pcp_info(Normal, 0).unwrap();
    n.set_min_free_kbytes(n.min_free_kbytes() * 4).unwrap();
    let after = n.pcp_info(Normal, 0).unwrap();
    let z = n.zone(Normal);
    assert_eq!(after.high_min, zone_highsize(z.low_wmark_pages(), after.batch, crate::num_online_cpus()));
    assert!(after.high_min >= before.high_min);
    // A manual setting stays through later updates (percpu_pagelist_high_fraction).
    n.set_pcp_batch(Normal, 3, 30).unwrap();
    n.setup_per_zone_wmarks();
    let info = n.pcp_info(Normal, 0).unwrap();
    assert_eq!((info.batch, info.high, info.high_min, info.high_max), (3, 30, 30, 30));
}

#[test]
// Not under Miri (CI time: the 6.12 sizing makes these walk thousands of pages); the list code
// they use runs under Miri in the refill/spill, double-free and exhaustion tests above.
#[cfg_attr(miri, ignore)]
fn orders_1_to_3_use_their_own_lists() {
    let m = TestMachine::standard();
    let n = &m.node;
    let initial = sorted(snapshot(n));
    n.set_pcp_batch(Normal, 8, 64).unwrap();
    let orders = |n: &Node| {
        let mut v = std::vec![0u32; 4];
        n.for_each_pcp_page(Normal, |_, _, o| v[o as usize] += 1);
        v
    };
    // nr_pcp_alloc: batch >> order blocks, at least 2: order 1 -> 4 blocks, order 3 -> 2.
    let a = n.alloc_pages(GfpFlags::GFP_KERNEL, 1).unwrap();
    assert_eq!(orders(n), [0, 3, 0, 0]);
    assert_eq!(n.pcp_info(Normal, 0).unwrap().count, 6, "count counts pages");
    let b = n.alloc_pages(GfpFlags::GFP_KERNEL, 3).unwrap();
    assert_eq!(b.0 % 8, 0);
    assert_eq!(orders(n), [0, 3, 0, 1]);
    assert_eq!(n.pcp_info(Normal, 0).unwrap().count, 6 + 8);
    n.check_free_lists().unwrap();
    // Freed onto the order's list, hot end; it comes back first.
    n.free_pages(b, 3).unwrap();
    assert_eq!(n.page(b).unwrap().state(), PageState::PcpFree);
    assert_eq!(n.free_pages(b, 3), Err(DoubleFree { pfn: b, head: b, order: 3 }));
    assert_eq!(n.free_pages(b.add(1), 0), Err(DoubleFree { pfn: b.add(1), head: b, order: 3 }));
    assert_eq!(n.alloc_pages(GfpFlags::GFP_KERNEL, 3).unwrap(), b);
    n.free_pages(b, 3).unwrap();
    assert_eq!(n.pcp_info(Normal, 0).unwrap().count, 6 + 16);
    n.check_free_lists().unwrap();
    // The third high-order free since the last allocation, with free_count (12) >= batch:
    // `free_high` gives everything back.
    n.free_pages(a, 1).unwrap();
    assert_eq!(n.pcp_info(Normal, 0).unwrap().count, 0);
    assert_eq!(n.drain_pages(), 0);
    assert_eq!(sorted(snapshot(n)), initial);
}

#[test]
// Not under Miri (CI time: the 6.12 sizing makes these walk thousands of pages); the list code
// they use runs under Miri in the refill/spill, double-free and exhaustion tests above.
#[cfg_attr(miri, ignore)]
fn a_run_of_high_order_frees_empties_the_lists() {
    let m = TestMachine::standard();
    let n = &m.node;
    n.set_pcp_high_range(Normal, 4, 16, 64).unwrap();
    // 8 order-1 blocks: refills of max(4 >> 1, 2) = 2 blocks, so the lists end up empty.
    let got: Vec<Pfn> = (0..8).map(|_| n.alloc_pages(GfpFlags::GFP_KERNEL, 1).unwrap()).collect();
    assert_eq!(n.pcp_info(Normal, 0).unwrap().count, 0);
    n.free_pages(got[0], 1).unwrap();
    n.free_pages(got[1], 1).unwrap();
    assert_eq!(n.pcp_info(Normal, 0).unwrap().count, 4);
    // The third in a row: free_count (4) >= batch after a high-order free: free_high spills all.
    n.free_pages(got[2], 1).unwrap();
    let info = n.pcp_info(Normal, 0).unwrap();
    assert_eq!(info.count, 0, "free_high gives everything back");
    assert_eq!(info.high, info.high_min);
    for &p in &got[3..] {
        n.free_pages(p, 1).unwrap();
    }
    n.check_free_lists().unwrap();
}

#[test]
// Not under Miri (CI time: the 6.12 sizing makes these walk thousands of pages); the list code
// they use runs under Miri in the refill/spill, double-free and exhaustion tests above.
#[cfg_attr(miri, ignore)]
fn high_grows_with_runs_of_frees_and_decays_back() {
    let m = TestMachine::standard();
    let n = &m.node;
    assert!(!n.zone(Normal).below_high.load(core::sync::atomic::Ordering::Relaxed));
    n.set_pcp_high_range(Normal, 4, 16, 64).unwrap();
    // Refills raise high by the batch each time (nr_pcp_alloc), and double with alloc_factor.
    let got: Vec<Pfn> = (0..60).map(|_| n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap()).collect();
    let info = n.pcp_info(Normal, 0).unwrap();
    assert!(info.high > 16 && info.high <= 64, "{info:?}");
    let tuning = n.pcp_tuning(Normal, 0).unwrap();
    assert!(tuning.alloc_factor > 0, "{info:?} {tuning:?}");
    // A long run of frees: at high, high grows to free_count + batch (nr_pcp_high), capped.
    let mut max_high = 0;
    for &p in &got {
        n.free_pages(p, 0).unwrap();
        let info = n.pcp_info(Normal, 0).unwrap();
        max_high = max_high.max(info.high);
        assert!(info.high >= 16 && info.high <= 64);
        n.check_free_lists().unwrap();
    }
    assert_eq!(max_high, 64, "a run of frees tunes high up to high_max");
    assert_eq!(n.pcp_tuning(Normal, 0).unwrap().alloc_factor, 0, "frees halve alloc_factor");
    // decay_pcp_high (the vmstat worker's job): an eighth at a time, down to high_min.
    let mut rounds = 0;
    while n.pcp_info(Normal, 0).unwrap().high > 16 {
        n.decay_pcp_high_all();
        let info = n.pcp_info(Normal, 0).unwrap();
        assert!(info.count <= info.high);
        rounds += 1;
        assert!(rounds < 100);
    }
    assert!(rounds > 1, "decay is gradual");
    n.check_free_lists().unwrap();
}

#[test]
// Not under Miri (CI time: the 6.12 sizing makes these walk thousands of pages); the list code
// they use runs under Miri in the refill/spill, double-free and exhaustion tests above.
#[cfg_attr(miri, ignore)]
fn below_high_watermark_frees_shrink_high() {
    use core::sync::atomic::Ordering::Relaxed;
    let m = TestMachine::standard();
    let n = &m.node;
    n.set_pcp_high_range(Normal, 4, 16, 64).unwrap();
    let got: Vec<Pfn> = (0..60).map(|_| n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap()).collect();
    let mut rest = got.iter();
    // Free until the lists hold high_min pages, below high: no spill.
    while n.pcp_info(Normal, 0).unwrap().count < 16 {
        n.free_pages(*rest.next().unwrap(), 0).unwrap();
    }
    let before = n.pcp_info(Normal, 0).unwrap();
    let free_count = n.pcp_tuning(Normal, 0).unwrap().free_count;
    assert!(before.count < before.high && before.high > 16, "{before:?}");
    // ZONE_BELOW_HIGH: the next free lowers high by the run of frees and spills (nr_pcp_high
    // returns max(count, high_min)); the spill sees the zone above its high watermark and
    // clears the flag (free_unref_page_commit).
    n.zone(Normal).below_high.store(true, Relaxed);
    n.free_pages(*rest.next().unwrap(), 0).unwrap();
    let after = n.pcp_info(Normal, 0).unwrap();
    assert_eq!(after.high, before.high.saturating_sub(free_count.max(4) + 1).max(16), "{after:?}");
    assert!(after.count < before.count, "{after:?}");
    assert!(!n.zone(Normal).below_high.load(Relaxed));
    for &p in rest {
        n.free_pages(p, 0).unwrap();
    }
    n.check_free_lists().unwrap();
}

/// Pages on `cpu`'s lists of every zone.
fn parked(n: &Node, cpu: usize) -> Vec<u32> {
    ZoneType::ALL.iter().map(|&zt| n.pcp_info(zt, cpu).unwrap().count).collect()
}

#[test]
fn drain_pages_runs_on_each_cpus_own_lists() {
    use crate::cpus::host;
    let m = TestMachine::standard();
    let n = &m.node;
    let initial = snapshot(n);
    for c in [0, 1, 5] {
        let p = n.alloc_pages_cpu(cpu(c), GfpFlags::GFP_KERNEL, 0).unwrap();
        n.free_pages_cpu(cpu(c), p, 0).unwrap();
    }
    let on_lists = n.totals().pcp_pages;
    assert!(parked(n, 1)[Normal as usize] > 0 && parked(n, 5)[Normal as usize] > 0);
    // Drained from CPU 0: one cross-CPU call, in which each CPU empties its own lists (entering
    // another CPU's lists inside it panics, see the next test), and nothing is left anywhere.
    let calls = host::calls();
    let drained = host::run_as(cpu(0), || n.drain_pages());
    assert_eq!(host::calls(), calls + 1, "one cross-CPU call");
    assert_eq!(drained, on_lists);
    for c in 0..NR_CPUS {
        assert_eq!(parked(n, c), [0, 0, 0], "CPU {c}");
    }
    assert_eq!(sorted(snapshot(n)), sorted(initial));
    // The other readers of lists go through the same calls: the walk and the check, as CPU 0.
    let p = n.alloc_pages_cpu(cpu(1), GfpFlags::GFP_KERNEL, 0).unwrap();
    n.free_pages_cpu(cpu(1), p, 0).unwrap();
    let walked = host::run_as(cpu(0), || list(n, Normal, 1));
    assert_eq!(walked.len() as u32, parked(n, 1)[Normal as usize]);
    host::run_as(cpu(0), || n.check_free_lists()).unwrap();
    n.drain_pages();
}

#[test]
#[should_panic(expected = "CPU 0 entered the per-CPU lists of CPU 1")]
fn entering_another_cpus_lists_is_caught() {
    let m = TestMachine::standard();
    let n = &m.node;
    crate::cpus::host::run_as(cpu(0), || n.alloc_pages_cpu(cpu(1), GfpFlags::GFP_KERNEL, 0)).ok();
}

#[test]
// Not under Miri (CI time: it exhausts the test zones page by page); the drain paths it takes
// run under Miri in `drain_pages_runs_on_each_cpus_own_lists` and the refill/spill test.
#[cfg_attr(miri, ignore)]
fn requests_that_cannot_block_drain_only_their_own_cpus_lists() {
    use crate::cpus::host;
    let m = TestMachine::standard();
    let n = &m.node;
    for zt in ZoneType::ALL {
        n.set_pcp_batch(zt, 8, 48).unwrap();
    }
    for gfp in [GfpFlags::GFP_KERNEL, GfpFlags::GFP_DMA32, GfpFlags::GFP_DMA] {
        let got: Vec<Pfn> = (0..5).map(|_| n.alloc_pages_cpu(cpu(1), gfp, 0).unwrap()).collect();
        for p in got {
            n.free_pages_cpu(cpu(1), p, 0).unwrap();
        }
    }
    let on_cpu1 = parked(n, 1);
    assert!(on_cpu1.iter().all(|&c| c > 0), "{on_cpu1:?}");
    // GFP_ATOMIC from CPU 0 down to the reserves: the zone-watermark drains and the retry after
    // the final failure drain CPU 0's lists only (a caller that cannot block may hold a
    // spinlock: no cross-CPU call), so CPU 1's pages stay where they are.
    let calls = host::calls();
    let mut got = Vec::new();
    while let Ok(p) = n.alloc_pages_cpu(cpu(0), GfpFlags::GFP_ATOMIC, 0) {
        got.push(p);
    }
    assert_eq!(host::calls(), calls, "no cross-CPU call");
    assert_eq!(parked(n, 1), on_cpu1);
    assert_eq!(parked(n, 0), [0, 0, 0], "CPU 0's own lists were drained");
    // A request that may block gets CPU 1's pages too (CPU 1 gives them back itself).
    let more = n.alloc_pages_cpu(cpu(0), GfpFlags::GFP_KERNEL | GfpFlags::__GFP_HIGH, 0).unwrap();
    assert!(host::calls() > calls, "the blocking request drained the other CPUs");
    assert!(parked(n, 1).iter().sum::<u32>() < on_cpu1.iter().sum::<u32>());
    got.push(more);
    for p in got {
        n.free_pages_cpu(cpu(0), p, 0).unwrap();
    }
    n.drain_pages();
    n.check_free_lists().unwrap();
}
