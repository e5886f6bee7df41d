//! Host tests of the buddy allocator over emulated RAM (`crate::testing`).

mod bulk;
mod errors;
mod page_ref;
mod pcp_lists;
mod proptests;

use crate::testing::FilledWith;
use std::vec::Vec;

use super::*;
use crate::mem_map::ContiguousVmemmap;
use crate::testing::{EmulatedRam, TestMachine, TEST_LIMITS};
use crate::zone::ZoneType::{Dma, Dma32, Normal};

const MIB: u64 = 1 << 20;

/// The exact free lists of every zone, in list order, with the counters, after draining the
/// per-CPU lists (Linux's `drain_all_pages`: what the free lists hold without them).
#[derive(Debug, PartialEq, Eq, Clone)]
pub(super) struct Snapshot {
    areas: Vec<FreeArea>,
    lists: Vec<Vec<Vec<u64>>>,
}

pub(super) fn snapshot(node: &Node) -> Snapshot {
    node.drain_pages();
    let mut lists = Vec::new();
    for zt in ZoneType::ALL {
        let mut per_order = Vec::new();
        for o in 0..=MAX_PAGE_ORDER {
            let mut v = Vec::new();
            node.for_each_free_block(zt, o, |p| v.push(p.0));
            per_order.push(v);
        }
        lists.push(per_order);
    }
    Snapshot { areas: node.zones().iter().map(|z| z.free_area_snapshot()).collect(), lists }
}

/// Same free blocks, list order ignored.
pub(super) fn sorted(mut s: Snapshot) -> Snapshot {
    for a in &mut s.areas {
        a.head = [0; crate::page::NR_PAGE_ORDERS];
    }
    for z in &mut s.lists {
        for l in z {
            l.sort_unstable();
        }
    }
    s
}

fn zone_of(m: &TestMachine, pfn: Pfn) -> ZoneType {
    ZoneType::from_index(m.node.page(pfn).unwrap().zone() as usize)
}

fn pages(bytes: u64) -> u64 {
    bytes / PAGE_SIZE as u64
}

#[test]
fn small_machine_has_three_zones_and_a_missing_section() {
    let m = &TestMachine::small();
    let n = &m.node;
    assert!(n.zones().iter().all(|z| z.is_populated() && z.managed_pages() > 0));
    // Page 0 is firmware's (6.12 x86 trim_bios_range), so DMA has one page less.
    assert_eq!(n.zone(Dma).present_pages(), 95);
    assert_eq!(n.zone(Dma32).present_pages(), 112);
    assert_eq!(n.zone(Normal).present_pages(), 64 + 64 + 56);
    assert_eq!((n.mem_map().nr_sections(), n.mem_map().nr_present_sections()), (8, 7));
    assert!(n.page(Pfn(0x150)).is_none());
    n.check_free_lists().unwrap();
}

#[test]
fn node_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Node>();
    shareable::<TestMachine>();
}

#[test]
fn init_accounts_every_page_of_the_standard_map() {
    let m = &TestMachine::standard();
    let n = &m.node;
    // Usable pages per zone of testing::standard_map with TEST_LIMITS (DMA < 2 MiB < DMA32 < 8 MiB).
    // Page 0 is not RAM for the zones: 6.12's x86 setup_arch -> trim_bios_range makes it
    // e820-reserved, so ZONE_DMA starts at pfn 1.
    let present = [158 + 256, 256 + 963 + 251, 1792];
    let spanned = [511, 1536, 1792];
    let start = [1, 512, 2304];
    for (i, z) in n.zones().iter().enumerate() {
        assert_eq!(z.present_pages(), present[i], "{}", z.name());
        assert_eq!(z.spanned_pages(), spanned[i], "{}", z.name());
        assert_eq!(z.zone_start_pfn(), start[i], "{}", z.name());
        assert_eq!(z.free_pages(), z.managed_pages());
    }
    // memblock reserved: the test range and the mem_map: over emulated RAM the contiguous vmemmap
    // (`ContiguousVmemmap`), 16 sections x 256 x 32 B, the missing section's absent descriptors
    // included; no page tables.
    let mm = n.mem_map();
    assert_eq!(mm.nr_present_sections(), 15);
    assert_eq!(mm.nr_sections(), 16);
    assert_eq!(mm.nr_pages(), 15 * 256);
    assert_eq!(mm.descriptor_size(), 32);
    assert_eq!(mm.descriptor_bytes(), 16 * 256 * 32);
    assert_eq!(mm.end_pfn(), 16 * 256);
    assert_eq!(m.memblock.reserved_bytes_of("mem_map"), mm.descriptor_bytes());
    assert_eq!((m.memblock.reserved_bytes_of("vmemmap"), mm.table_bytes()), (0, 0));
    assert_eq!(m.memblock.reserved_bytes_of("page 0"), 0, "page 0 is not memblock memory at all");
    let t = n.totals();
    assert_eq!(t.present_pages, present.iter().sum::<u64>());
    assert_eq!(t.managed_pages, t.present_pages - pages(m.memblock.reserved_bytes()));
    assert_eq!(t.managed_pages, t.present_pages - 16 - 32);
    assert_eq!((t.free_pages, t.buddyinfo_pages), (t.managed_pages, t.managed_pages));
    n.check_free_lists().unwrap();
    assert!(m.memblock.is_retired());

    // Descriptors: page 0, holes and reservations are reserved; section 8 has none.
    assert_eq!(n.page(Pfn(0)).unwrap().state(), PageState::Reserved);
    assert_eq!(n.page(Pfn(0x9f)).unwrap().state(), PageState::Reserved);
    assert_eq!(n.page(Pfn(0x300)).unwrap().state(), PageState::Reserved);
    assert_eq!(n.page(Pfn(10 * 256 + 3)).unwrap().state(), PageState::Reserved);
    assert!(n.page(Pfn(8 * 256 + 5)).is_none());
    assert!(n.page(Pfn(16 * 256)).is_none());
    // Index <-> pfn round trip across the missing section.
    for pfn in [0u64, 255, 256, 7 * 256 + 255, 9 * 256, 16 * 256 - 1] {
        let p = n.page(Pfn(pfn)).unwrap();
        assert_eq!(mm.page_to_pfn(p), Some(Pfn(pfn)));
        assert_eq!(mm.index_to_pfn(mm.pfn_to_index(Pfn(pfn)).unwrap()), Pfn(pfn));
    }
    // Zones are tagged in the descriptors.
    assert_eq!(zone_of(m, Pfn(511)), Dma);
    assert_eq!(zone_of(m, Pfn(512)), Dma32);
    assert_eq!(zone_of(m, Pfn(9 * 256)), Normal);
}

#[test]
fn watermarks_and_reserves_follow_linux_formulas() {
    let m = &TestMachine::standard();
    let n = &m.node;
    let managed = n.zones().each_ref().map(|z| z.managed_pages());
    let lowmem: u64 = managed.iter().sum();
    let mfk = zone::int_sqrt(lowmem * 4 * 16).clamp(128, 262144);
    assert_eq!(n.min_free_kbytes(), mfk);
    let mut reserve = 0;
    for (i, z) in n.zones().iter().enumerate() {
        let min = (mfk / 4) * managed[i] / lowmem;
        let tmp = (min / 4).max(managed[i] * 10 / 10000);
        assert_eq!(z.min_wmark_pages(), min);
        assert_eq!(z.low_wmark_pages(), min + tmp);
        assert_eq!(z.high_wmark_pages(), min + 2 * tmp);
        let upper: u64 = managed[i + 1..].iter().sum();
        let ratio = [256, 256, 32][i];
        for j in 0..4 {
            let expect = if j <= i { 0 } else { managed[i + 1..(j + 1).min(3)].iter().sum::<u64>() / ratio };
            assert_eq!(z.lowmem_reserve()[j], expect, "zone {i} reserve {j}");
        }
        if i < 2 {
            assert_eq!(z.lowmem_reserve()[3], upper / ratio);
        }
        let max = z.lowmem_reserve()[i..].iter().copied().max().unwrap();
        reserve += (max + z.high_wmark_pages()).min(z.managed_pages());
    }
    assert_eq!(n.totalreserve_pages(), reserve);
}

/// `vm.min_free_kbytes=N` recomputes every watermark and `totalreserve_pages` as init did for
/// the computed value, refuses values beyond `INT_MAX` unchanged, and the allocator obeys the
/// new watermarks at once.
#[test]
fn set_min_free_kbytes_recomputes_watermarks_as_linux() {
    let m = &TestMachine::standard();
    let n = &m.node;
    let initial = n.min_free_kbytes();
    let figures = |n: &Node| {
        (
            n.zones().each_ref().map(|z| {
                [z.min_wmark_pages(), z.low_wmark_pages(), z.high_wmark_pages(), z.promo_wmark_pages()]
            }),
            n.totalreserve_pages(),
        )
    };
    let at_boot = figures(n);
    let lowmem: u64 = n.zones().iter().map(|z| z.managed_pages()).sum();
    for kb in [0u64, 128, 4 * initial, 65536] {
        n.set_min_free_kbytes(kb).unwrap();
        assert_eq!(n.min_free_kbytes(), kb);
        for z in n.zones() {
            let w = zone::zone_watermarks(kb, z.managed_pages(), lowmem);
            assert_eq!(
                [z.min_wmark_pages(), z.low_wmark_pages(), z.high_wmark_pages(), z.promo_wmark_pages()],
                w,
                "{kb} kB, zone {}",
                z.name()
            );
        }
        assert_eq!(n.totalreserve_pages(), zone::totalreserve_pages(n.zones()));
    }
    let before = figures(n);
    let e = n.set_min_free_kbytes(1 << 31).unwrap_err();
    assert_eq!(e, SysctlError::OutOfRange { value: 1 << 31, max: i32::MAX as u64 });
    assert_eq!(std::format!("{e}"), "2147483648 is out of range (0 to 2147483647): Invalid argument");
    assert_eq!((n.min_free_kbytes(), figures(n)), (65536, before), "a refused value changes nothing");

    // A min watermark above every zone's free pages: GFP_KERNEL fails, nothing is taken.
    let free = n.totals().free_pages;
    n.set_min_free_kbytes(free * 8).unwrap();
    assert!(matches!(n.alloc_pages(GfpFlags::GFP_KERNEL, 0), Err(AllocError::OutOfMemory { .. })));
    assert_eq!(n.totals().free_pages, free);
    // Back to the boot value: the boot figures exactly, and allocations succeed again.
    n.set_min_free_kbytes(initial).unwrap();
    assert_eq!(figures(n), at_boot);
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    n.free_pages(p, 0).unwrap();
}

#[test]
fn zonelists_and_gfp_zone_modifiers() {
    let m = &TestMachine::standard();
    let n = &m.node;
    let initial = snapshot(n);
    let k = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    assert_eq!(zone_of(m, k), Normal);
    let d32 = n.alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_DMA32, 1).unwrap();
    assert_eq!(zone_of(m, d32), Dma32);
    let d = n.alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA, 2).unwrap();
    assert_eq!(zone_of(m, d), Dma);
    for (p, o) in [(k, 0), (d32, 1), (d, 2)] {
        let page = n.page(p).unwrap();
        assert_eq!((page.state(), page.order()), (PageState::Allocated, o));
        assert_eq!(p.0 % (1 << o), 0);
    }
    n.check_free_lists().unwrap();
    for (p, o) in [(k, 0), (d32, 1), (d, 2)] {
        n.free_pages(p, o).unwrap();
    }
    assert_eq!(sorted(snapshot(n)), sorted(initial));
    n.check_free_lists().unwrap();
}

#[test]
fn alloc_argument_errors() {
    let m = &TestMachine::standard();
    let n = &m.node;
    let initial = snapshot(n);
    assert_eq!(n.alloc_pages(GfpFlags::GFP_KERNEL, 11), Err(AllocError::OrderTooLarge { order: 11 }));
    // __GFP_NOFAIL above order 1 is served (6.12's __alloc_pages_slowpath only
    // WARN_ON_ONCE(order > 1)s, in the kernel's slow path).
    let nofail = GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOFAIL;
    let big = n.alloc_pages(nofail, 2).unwrap();
    n.free_pages(big, 2).unwrap();
    let both = GfpFlags::GFP_KERNEL | GfpFlags::__GFP_DMA | GfpFlags::__GFP_DMA32;
    assert_eq!(n.alloc_pages(both, 0), Err(AllocError::Invalid("__GFP_DMA and __GFP_DMA32 together")));
    assert_eq!(snapshot(n), initial);
    let p = n.alloc_pages(nofail, 1).unwrap();
    n.free_pages(p, 1).unwrap();
    assert!(std::format!("{}", AllocError::OrderTooLarge { order: 11 }).contains("MAX_PAGE_ORDER"));
}

#[test]
fn gfp_zero_zeroes_the_whole_block() {
    let m = &TestMachine::standard();
    let n = &m.node;
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 2).unwrap();
    let dm = n.direct_map();
    // SAFETY: we own the 4 allocated pages.
    unsafe { core::ptr::write_bytes(dm.pfn_to_virt(p), 0xa5, 4 * PAGE_SIZE) };
    n.free_pages(p, 2).unwrap();
    let q = n.alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO, 2).unwrap();
    assert_eq!(q, p, "the same block comes back (lowest part of the same free block)");
    // SAFETY: we own the 4 allocated pages.
    let bytes = unsafe { core::slice::from_raw_parts(dm.pfn_to_virt(q), 4 * PAGE_SIZE) };
    assert!(bytes.filled_with(0));
    n.free_pages(q, 2).unwrap();
}

/// `init_on_alloc=1` zeroes every block as `__GFP_ZERO` would (the order-0 fast path
/// included); `init_on_free=1` zeroes blocks as they are freed, order 0 (onto the per-CPU
/// list) and higher orders (onto the buddy lists); bad frees are still refused untouched.
#[test]
fn init_on_alloc_and_init_on_free_zero_pages() {
    let m = &TestMachine::standard();
    let n = &m.node;
    let dm = n.direct_map();
    let fill = |p: Pfn, order: u32, v: u8| {
        // SAFETY: the test owns the block (or reads a freed block of emulated RAM).
        unsafe { core::ptr::write_bytes(dm.pfn_to_virt(p), v, PAGE_SIZE << order) }
    };
    let zero = |p: Pfn, order: u32| {
        // SAFETY: emulated RAM, mapped for the whole test.
        unsafe { core::slice::from_raw_parts(dm.pfn_to_virt(p), PAGE_SIZE << order) }.filled_with(0)
    };
    for order in [0, 3] {
        let p = n.alloc_pages(GfpFlags::GFP_KERNEL, order).unwrap();
        fill(p, order, 0xa5);
        n.free_pages(p, order).unwrap();
        n.set_auto_init(true, false);
        let q = n.alloc_pages(GfpFlags::GFP_KERNEL, order).unwrap();
        assert_eq!(q, p, "order {order}: the same block comes back");
        assert!(zero(q, order), "order {order}: init_on_alloc");
        fill(q, order, 0x5a);
        n.set_auto_init(false, true);
        // A misaligned or wrong-order free is refused and zeroes nothing.
        if order > 0 {
            assert!(n.free_pages(q, order - 1).is_err());
            assert!(!zero(q, order));
        }
        n.free_pages(q, order).unwrap();
        assert!(zero(q, order), "order {order}: init_on_free");
        assert!(n.free_pages(q, order).is_err(), "double free still refused");
        n.set_auto_init(false, false);
    }
}

/// Allocates order-0 pages with `gfp` until it fails; returns them.
/// 6.12's two passes (`mm/page_alloc.c`, `__alloc_pages_noprof`: `get_page_from_freelist`
/// with `ALLOC_WMARK_LOW`, then `__alloc_pages_slowpath` with `gfp_to_alloc_flags`'
/// `ALLOC_WMARK_MIN`): exhausting memory walks the zonelist twice, every zone down to `low`
/// first, then every zone down to `min`. So the zones of successive allocations are two
/// non-increasing runs (Normal -> DMA32 -> DMA, then again from Normal).
pub(crate) fn assert_low_then_min_sweeps(zones: &[ZoneType]) {
    let ascents: Vec<usize> = (1..zones.len()).filter(|&i| zones[i - 1] < zones[i]).collect();
    assert_eq!(ascents.len(), 1, "two zonelist sweeps (low, then min), got zones {zones:?}");
    let (low, min) = zones.split_at(ascents[0]);
    assert_eq!((low[0], *low.last().unwrap()), (Normal, Dma), "the low sweep uses every zone");
    assert_eq!(min[0], Normal, "the min sweep starts again at the top");
}

fn drain(n: &Node, gfp: GfpFlags) -> Vec<Pfn> {
    let mut v = Vec::new();
    while let Ok(p) = n.alloc_pages(gfp, 0) {
        v.push(p);
    }
    v
}

#[test]
#[cfg_attr(
    miri,
    ignore = "watermark policy over thousands of allocations (safe code); its alloc/free paths run under Miri in the proptest and high_orders_split_and_coalesce"
)]
fn exhaustion_falls_back_normal_dma32_dma_and_respects_watermarks() {
    for m in TestMachine::for_heavy_tests() {
        exhaustion_falls_back_normal_dma32_dma_and_respects_watermarks_on(&m);
    }
}

fn exhaustion_falls_back_normal_dma32_dma_and_respects_watermarks_on(m: &TestMachine) {
    let n = &m.node;
    let initial = snapshot(n);

    let kernel = drain(n, GfpFlags::GFP_KERNEL);
    assert_eq!(n.alloc_pages(GfpFlags::GFP_KERNEL, 0), Err(AllocError::OutOfMemory { order: 0 }));
    // Zones used in zonelist order, twice: every zone down to low, then every zone down to min.
    let zones: Vec<ZoneType> = kernel.iter().map(|&p| zone_of(m, p)).collect();
    assert_low_then_min_sweeps(&zones);
    assert_eq!(*zones.last().unwrap(), Dma);
    // Each zone stopped exactly at min + lowmem_reserve[Normal].
    for z in n.zones() {
        let stop = z.min_wmark_pages() + z.lowmem_reserve()[Normal as usize];
        assert_eq!(z.free_pages(), stop, "{}", z.name());
    }
    // GFP_NOWAIT may not dip into min; __GFP_HIGH may use half; GFP_ATOMIC even more.
    let before = snapshot(n);
    assert_eq!(n.alloc_pages(GfpFlags::GFP_NOWAIT, 0), Err(AllocError::OutOfMemory { order: 0 }));
    assert_eq!(snapshot(n), before, "a failed allocation changes nothing");
    let high = drain(n, GfpFlags::GFP_KERNEL | GfpFlags::__GFP_HIGH);
    assert!(!high.is_empty());
    assert!(n.alloc_pages(GfpFlags::GFP_NOWAIT, 0).is_err());
    let atomic = drain(n, GfpFlags::GFP_ATOMIC);
    assert!(!atomic.is_empty(), "GFP_ATOMIC succeeds where GFP_NOWAIT fails");
    let normal = n.zone(Normal);
    let min = normal.min_wmark_pages() as i64;
    let atomic_min = min - min / 2 - (min - min / 2) / 4;
    assert_eq!(normal.free_pages() as i64, atomic_min, "ATOMIC stops at min - min/2 - rest/4");
    // DMA stopped at its atomic limit plus its lowmem reserve against Normal requests; a
    // GFP_DMA request has no reserve to respect in DMA and gets exactly those reserve pages.
    let dma = n.zone(Dma);
    let dma_stop = {
        let min = dma.min_wmark_pages() as i64;
        min - min / 2 - (min - min / 2) / 4 + dma.lowmem_reserve()[Normal as usize] as i64
    };
    assert_eq!(dma.free_pages() as i64, dma_stop);
    let dma_only = drain(n, GfpFlags::GFP_ATOMIC | GfpFlags::GFP_DMA);
    assert_eq!(dma_only.len() as u64, dma.lowmem_reserve()[Normal as usize]);
    assert!(dma_only.iter().all(|&p| zone_of(m, p) == Dma));
    assert!(n.alloc_pages(GfpFlags::GFP_ATOMIC, 1).is_err());

    n.check_free_lists().unwrap();
    for p in kernel.into_iter().chain(high).chain(atomic).chain(dma_only) {
        n.free_pages(p, 0).unwrap();
    }
    assert_eq!(sorted(snapshot(n)), sorted(initial), "full recovery: everything coalesced back");
}

#[test]
fn dma_exhaustion_leaves_other_zones_alone() {
    for m in TestMachine::for_heavy_tests() {
        dma_exhaustion_leaves_other_zones_alone_on(&m);
    }
}

fn dma_exhaustion_leaves_other_zones_alone_on(m: &TestMachine) {
    let n = &m.node;
    let before_dma32 = n.zone(Dma32).free_pages();
    let before_normal = n.zone(Normal).free_pages();
    let mut got = Vec::new();
    for order in [3, 0] {
        while let Ok(p) = n.alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA, order) {
            assert_eq!(zone_of(m, p), Dma);
            got.push((p, order));
        }
    }
    assert_eq!(n.zone(Dma).free_pages(), n.zone(Dma).min_wmark_pages());
    assert_eq!(n.zone(Dma32).free_pages(), before_dma32);
    assert_eq!(n.zone(Normal).free_pages(), before_normal);
    for (p, o) in got {
        n.free_pages(p, o).unwrap();
    }
    n.drain_pages();
    assert_eq!(n.zone(Dma).free_pages(), n.zone(Dma).managed_pages());
}

#[test]
fn high_orders_split_and_coalesce() {
    let m = &TestMachine::standard();
    let n = &m.node;
    let initial = snapshot(n);
    let mut got = Vec::new();
    for order in (0..=MAX_PAGE_ORDER).rev() {
        if let Ok(p) = n.alloc_pages(GfpFlags::GFP_KERNEL, order) {
            assert_eq!(p.0 % (1 << order), 0);
            got.push((p, order));
        }
    }
    assert!(got.iter().any(|&(_, o)| o >= 8), "large blocks exist at boot");
    n.check_free_lists().unwrap();
    for (p, o) in got.into_iter().rev() {
        n.free_pages(p, o).unwrap();
    }
    assert_eq!(sorted(snapshot(n)), sorted(initial));
}

#[test]
fn threads_allocate_disjoint_pages() {
    for m in TestMachine::for_heavy_tests() {
        threads_allocate_disjoint_pages_on(&m);
    }
}

fn threads_allocate_disjoint_pages_on(m: &TestMachine) {
    let n = &m.node;
    let (threads, rounds) = if cfg!(miri) { (2, 10) } else { (4, 500) };
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                // Each thread plays a CPU and frees onto the next CPU's lists (pages move
                // between lists, as on Linux when a page is freed on another CPU).
                let cpu = CpuId::new(t % crate::buddy::pcp::NR_CPUS).unwrap();
                let other = CpuId::new((t + 1) % crate::buddy::pcp::NR_CPUS).unwrap();
                let dm = n.direct_map();
                let mut mine = Vec::new();
                for i in 0..rounds {
                    let order = (i % 3) as u32;
                    if let Ok(p) = n.alloc_pages_cpu(cpu, GfpFlags::GFP_KERNEL, order) {
                        // SAFETY: we own the block; mark it with the thread id.
                        unsafe { core::ptr::write_bytes(dm.pfn_to_virt(p), t as u8, PAGE_SIZE << order) };
                        mine.push((p, order));
                    }
                    if i % 4 == 3 && !mine.is_empty() {
                        let (p, o) = mine.swap_remove(0);
                        // SAFETY: still ours until freed below.
                        let b = unsafe { core::slice::from_raw_parts(dm.pfn_to_virt(p), PAGE_SIZE << o) };
                        assert!(b.filled_with(t as u8), "another thread wrote our block");
                        n.free_pages_cpu(other, p, o).unwrap();
                    }
                }
                for (p, o) in mine {
                    n.free_pages(p, o).unwrap();
                }
            });
        }
    });
    n.check_free_lists().unwrap();
    let t = n.totals();
    assert_eq!(t.free_pages + t.pcp_pages, t.managed_pages);
    n.drain_pages();
    assert_eq!(n.totals().free_pages, t.managed_pages);
}

#[test]
fn init_errors() {
    let map = crate::testing::standard_map();
    let ram = EmulatedRam::new(16 * MIB as usize);
    let mut mb = MemBlock::new(&map).unwrap();
    let bad = ZoneLimits { dma_end: 8 * MIB, dma32_end: 2 * MIB };
    // SAFETY: fails before touching memory.
    let r = unsafe {
        Node::init_with_sections(&mut mb, ram.direct_map(), bad, 20, 0, &mut ContiguousVmemmap::new())
    };
    assert_eq!(r.err(), Some(NodeInitError::BadZoneLimits { dma_end: 8 * MIB, dma32_end: 2 * MIB }));
    // SAFETY: fails before touching memory.
    let r = unsafe {
        Node::init_with_sections(&mut mb, ram.direct_map(), TEST_LIMITS, 5, 0, &mut ContiguousVmemmap::new())
    };
    assert_eq!(r.err(), Some(NodeInitError::MemMap(MemMapError::BadSectionBits { bits: 5 })));
    let mut empty = MemBlock::new(&[]).unwrap();
    // SAFETY: fails before touching memory.
    let r = unsafe {
        Node::init_with_sections(
            &mut empty,
            ram.direct_map(),
            TEST_LIMITS,
            20,
            0,
            &mut ContiguousVmemmap::new(),
        )
    };
    assert_eq!(r.err(), Some(NodeInitError::MemMap(MemMapError::NoMemory)));
    // memblock too full for the descriptors: reserve everything above 1 MiB first.
    let mut full = MemBlock::new(&map).unwrap();
    while full.alloc(PAGE_SIZE as u64, PAGE_SIZE as u64, "filler").is_some() {}
    // SAFETY: fails before writing anything (the table allocation fails).
    let r = unsafe {
        Node::init_with_sections(
            &mut full,
            ram.direct_map(),
            TEST_LIMITS,
            20,
            0,
            &mut ContiguousVmemmap::new(),
        )
    };
    assert!(matches!(r.err(), Some(NodeInitError::MemMap(MemMapError::MemBlockExhausted { .. }))));
    // A node retires memblock; a second node over the same memblock is refused.
    // SAFETY: `ram` covers the map and outlives `node`.
    let node = unsafe {
        Node::init_with_sections(&mut mb, ram.direct_map(), TEST_LIMITS, 20, 0, &mut ContiguousVmemmap::new())
    }
    .unwrap();
    assert_eq!(node.totals().free_pages, node.totals().managed_pages);
    // SAFETY: fails before touching memory.
    let r = unsafe {
        Node::init_with_sections(&mut mb, ram.direct_map(), TEST_LIMITS, 20, 0, &mut ContiguousVmemmap::new())
    };
    assert_eq!(r.err(), Some(NodeInitError::MemBlockRetired));
    assert!(std::format!("{}", NodeInitError::MemBlockRetired).contains("retired"));
}

/// The kernel configuration: 128 MiB sections, x86_64 zone limits, and a whole section missing.
/// Emulated RAM of 512 MiB is mapped lazily by the host, so only descriptors are touched.
#[test]
#[cfg_attr(miri, ignore = "512 MiB of emulated RAM")]
fn real_sections_and_x86_64_limits() {
    use crate::memmap::{MemRegion, RegionKind::*};
    let map = [
        MemRegion::new(0, 0x9f000, Usable),
        MemRegion::new(0x9f000, MIB, Firmware(2)),
        MemRegion::new(MIB, 250 * MIB, Usable),
        MemRegion::new(400 * MIB, 500 * MIB, Usable),
    ];
    let m = &TestMachine::new(&map, &[], ZoneLimits::X86_64, SECTION_SIZE_BITS);
    let n = &m.node;
    let mm = n.mem_map();
    assert_eq!(mm.pages_per_section(), 32768);
    assert_eq!((mm.nr_sections(), mm.nr_present_sections()), (4, 3));
    assert_eq!(mm.nr_pages(), 3 * 32768);
    // The contiguous host vmemmap covers the missing section too.
    assert_eq!(mm.descriptor_bytes(), 4 * 32768 * 32);
    assert!(n.page(Pfn::from_phys(x86_64::PhysAddr::new(300 * MIB))).is_none());
    assert!(n.page(Pfn::from_phys(x86_64::PhysAddr::new(450 * MIB))).is_some());
    // arch/x86/kernel/setup.c (6.12), trim_bios_range(): e820 page 0 RAM -> reserved, so
    // zoneinfo's DMA has start_pfn 1 and spans 4095 pages.
    assert_eq!(n.zone(Dma).zone_start_pfn(), 1);
    assert_eq!(n.zone(Dma).spanned_pages(), 4095);
    assert_eq!(n.zone(Dma).present_pages(), 158 + 3840);
    assert!(!n.zone(Normal).is_populated());
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, MAX_PAGE_ORDER).unwrap();
    assert_eq!(zone_of(m, p), Dma32);
    let d = n.alloc_pages(GfpFlags::GFP_DMA, 0).unwrap();
    assert!(d.0 < 4096);
    n.free_pages(p, MAX_PAGE_ORDER).unwrap();
    n.free_pages(d, 0).unwrap();
    n.check_free_lists().unwrap();
    let t = n.totals();
    assert_eq!(t.free_pages + t.pcp_pages, t.managed_pages);
}

/// Fast-path cost probe. Run the release test binary under valgrind twice and divide the
/// difference of instruction counts by the difference of pairs:
/// `BUDDY_PAIRS=N BUDDY_SPLIT=0|1 valgrind --tool=callgrind <mm test binary> --ignored fast_path_probe`.
/// `BUDDY_ORDER=o` measures order `o` instead of 0.
/// `BUDDY_SPLIT=1` holds the lone order-0 block first, so each alloc splits an order-4 block and
/// each free merges it back (4 levels).
#[test]
#[ignore = "instruction-count probe, run under valgrind"]
fn fast_path_probe() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (pairs, split, order) =
        (env("BUDDY_PAIRS", 1000), env("BUDDY_SPLIT", 0), env("BUDDY_ORDER", 0) as u32);
    let m = &TestMachine::standard();
    let n = &m.node;
    let held = (split == 1).then(|| n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap());
    for _ in 0..pairs {
        let p =
            n.alloc_pages(core::hint::black_box(GfpFlags::GFP_KERNEL), core::hint::black_box(order)).unwrap();
        n.free_pages(core::hint::black_box(p), order).unwrap();
    }
    if let Some(p) = held {
        n.free_pages(p, 0).unwrap();
    }
}

/// `fail_page_alloc` fails only what its attributes admit (order 0 only with `min-order=0`,
/// then also on the per-CPU fast path), allocates nothing when it fails, and once off the
/// allocator serves the same blocks as before.
#[test]
fn fail_page_alloc_fails_page_allocations_as_configured() {
    let m = &TestMachine::standard();
    let n = &m.node;
    let atomic = GfpFlags::GFP_ATOMIC | GfpFlags::__GFP_NOWARN;
    let p0 = n.alloc_pages(atomic, 0).unwrap();
    n.free_pages(p0, 0).unwrap();
    // Free pages, those on per-CPU lists included (the order-3 refill below leaves blocks there).
    let free_or_pcp = |t: MemTotals| t.free_pages + t.pcp_pages;
    let free = free_or_pcp(n.totals());
    n.configure_fail_page_alloc(1, 100, 0, -1).unwrap();
    let injected = Err(AllocError::FaultInjected { by: "fail_page_alloc" });
    assert_eq!(n.alloc_pages(atomic, 0), Ok(p0), "min-order is 1 by default");
    n.free_pages(p0, 0).unwrap();
    assert_eq!(n.alloc_pages(atomic, 3), injected);
    assert!(n.alloc_pages(GfpFlags::GFP_KERNEL, 3).is_ok_and(|p| n.free_pages(p, 3).is_ok()));
    n.set_fail_page_alloc("min-order", "0").unwrap();
    n.set_fail_page_alloc("ignore-gfp-wait", "N").unwrap();
    assert_eq!(n.alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOWARN, 0), injected);
    assert_eq!(n.alloc_pages(atomic | GfpFlags::__GFP_HIGHMEM, 0), Ok(p0), "ignore-gfp-highmem");
    n.free_pages(p0, 0).unwrap();
    assert_eq!(n.alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOFAIL, 0), Ok(p0));
    n.free_pages(p0, 0).unwrap();
    assert_eq!(free_or_pcp(n.totals()), free, "failed calls took nothing");
    assert_eq!(n.alloc_pages(atomic, MAX_PAGE_ORDER + 1), Err(AllocError::OrderTooLarge { order: 11 }));
    n.configure_fail_page_alloc(1, 0, 0, 1).unwrap();
    assert_eq!(n.alloc_pages(atomic, 0), Ok(p0), "off: the fast path serves order 0 again");
    n.free_pages(p0, 0).unwrap();
    assert_eq!(n.fail_page_alloc().attr.injected(), 2);
}

/// `free_reserved_area` gives reserved boot memory to the allocator (free and managed pages
/// grow by as much, the pages can be allocated), and refuses, giving nothing back, a range with
/// a page that is not reserved, not described, or not page-aligned.
#[test]
fn free_reserved_area_gives_reserved_pages_to_the_allocator() {
    use super::alloc::FreeReservedError;
    let m = &TestMachine::standard();
    let n = &m.node;
    // The standard machine reserves 64 KiB at 10 MiB.
    let (start, end) = (10 * MIB, 10 * MIB + 0x4000);
    n.drain_pages();
    let before = n.totals();
    assert_eq!(n.free_reserved_area(start, end), Ok(4));
    n.drain_pages();
    let after = n.totals();
    assert_eq!(after.managed_pages, before.managed_pages + 4);
    assert_eq!(after.free_pages, before.free_pages + 4);
    let state = n.page(Pfn(start >> 12)).unwrap().state();
    assert!(matches!(state, PageState::Buddy | PageState::FreeTail), "freed into a buddy block: {state:?}");
    // Again: those pages are managed now; the rest of the reservation is still reserved, but a
    // range that includes a freed page is refused as a whole.
    assert!(matches!(n.free_reserved_area(start, end), Err(FreeReservedError::NotReserved { .. })));
    assert!(matches!(n.free_reserved_area(start, end + 0x4000), Err(FreeReservedError::NotReserved { .. })));
    assert_eq!(n.totals().managed_pages, after.managed_pages, "a refusal gives nothing back");
    assert!(matches!(n.free_reserved_area(end + 1, end + 0x1000), Err(FreeReservedError::BadRange { .. })));
    assert!(matches!(n.free_reserved_area(end, end), Err(FreeReservedError::BadRange { .. })));
    assert!(matches!(
        n.free_reserved_area(1 << 40, (1 << 40) + 0x1000),
        Err(FreeReservedError::NotDescribed { .. })
    ));
    // A page of the allocator itself is not reserved.
    let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
    assert!(matches!(
        n.free_reserved_area(p.0 << 12, (p.0 + 1) << 12),
        Err(FreeReservedError::NotReserved { state: PageState::Allocated, .. })
    ));
    n.free_pages(p, 0).unwrap();
}

/// 6.12, `mm/page_alloc.c`, `__alloc_pages_noprof`: the first attempt is
/// `get_page_from_freelist(..., ALLOC_WMARK_LOW, ...)`; only `__alloc_pages_slowpath` goes down
/// to `min`. So once Normal is at its low watermark, `GFP_KERNEL` falls back to DMA32 although
/// Normal still has pages above `min`.
#[test]
#[cfg_attr(
    miri,
    ignore = "watermark policy over thousands of allocations (safe code); its alloc/free paths run under Miri in the proptest and high_orders_split_and_coalesce"
)]
fn first_pass_falls_back_at_low_before_any_zone_goes_below_low() {
    let m = TestMachine::standard();
    let n = &m.node;
    let normal = n.zone(Normal);
    let mut got = Vec::new();
    loop {
        let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
        got.push(p);
        if zone_of(&m, p) != Normal {
            break;
        }
    }
    assert_eq!(zone_of(&m, *got.last().unwrap()), Dma32);
    assert!(normal.free_pages() <= normal.low_wmark_pages(), "Normal left at its low watermark");
    assert!(normal.free_pages() > normal.min_wmark_pages(), "with pages above min still there");
    for p in got {
        n.free_pages(p, 0).unwrap();
    }
}
