//! In-kernel tests of the page allocator on real memory: every API, every bad input, exhaustion
//! of each zone and full recovery.

use ::mm::page::{FreePagesError, PageState, MAX_PAGE_ORDER};
use ::mm::zone::ZoneType;
use ::mm::{AllocError, GfpFlags, Pfn};
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;

use crate::mm::node;
use crate::mm::page_alloc::*;

const NOWARN: GfpFlags = GfpFlags::__GFP_NOWARN;

use super::buddy_snapshot as snapshot;

fn pfn(frame: PhysFrame) -> Pfn {
    Pfn::from_phys(frame.start_address())
}

fn zone_of(frame: PhysFrame) -> ZoneType {
    ZoneType::from_index(frame_to_page(frame).expect("managed").zone() as usize)
}

// Blocks held by a test, chained through their own first bytes so that holding the whole of
// memory needs no other memory. Freed (and checked) on drop.
struct Chain {
    head: Option<(PhysFrame, u32)>,
    blocks: u64,
    pages: u64,
}

impl Chain {
    fn new() -> Chain {
        Chain { head: None, blocks: 0, pages: 0 }
    }
    fn push(&mut self, frame: PhysFrame, order: u32) {
        let link = phys_to_virt(frame.start_address()).as_mut_ptr::<u64>();
        let (prev, prev_order) =
            self.head.map(|(f, o)| (f.start_address().as_u64(), o as u64)).unwrap_or((u64::MAX, 0));
        // SAFETY: `frame` is a block this test just allocated (owned, at least 4 KiB, mapped by the
        // direct map); the two words hold the link to the previous block.
        unsafe {
            link.write(prev);
            link.add(1).write(prev_order);
        }
        self.head = Some((frame, order));
        self.blocks += 1;
        self.pages += 1 << order;
    }
    /// Allocates blocks of `order` with `gfp` until the allocator refuses; returns how many.
    fn fill(&mut self, gfp: GfpFlags, order: u32) -> u64 {
        let mut n = 0;
        while let Ok(frame) = alloc_pages(gfp | NOWARN, order) {
            self.push(frame, order);
            n += 1;
        }
        n
    }
    fn for_each(&self, mut f: impl FnMut(PhysFrame, u32)) {
        let mut cur = self.head;
        while let Some((frame, order)) = cur {
            let link = phys_to_virt(frame.start_address()).as_ptr::<u64>();
            // SAFETY: written by `push` for a block the chain still owns.
            let (prev, prev_order) = unsafe { (link.read(), link.add(1).read()) };
            f(frame, order);
            cur = (prev != u64::MAX)
                .then(|| (PhysFrame::containing_address(PhysAddr::new(prev)), prev_order as u32));
        }
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let mut cur = self.head.take();
        while let Some((frame, order)) = cur {
            let link = phys_to_virt(frame.start_address()).as_ptr::<u64>();
            // SAFETY: written by `push` for a block the chain owns; read before the block is freed.
            let (prev, prev_order) = unsafe { (link.read(), link.add(1).read()) };
            __free_pages(frame, order).expect("freeing a block held by the test");
            cur = (prev != u64::MAX)
                .then(|| (PhysFrame::containing_address(PhysAddr::new(prev)), prev_order as u32));
        }
    }
}

// Fills a zonelist completely: largest blocks first, then smaller ones, down to order 0.
fn exhaust(gfp: GfpFlags) -> Chain {
    let mut chain = Chain::new();
    for order in (0..=MAX_PAGE_ORDER).rev() {
        chain.fill(gfp, order);
    }
    chain
}

ktest!(
    #[needs_memory]
    fn alloc_each_order_is_aligned_and_recorded() {
        let before = snapshot();
        for order in 0..=MAX_PAGE_ORDER {
            let frame = alloc_pages(GfpFlags::GFP_KERNEL, order).expect("alloc_pages");
            assert_eq!(pfn(frame).0 % (1 << order), 0, "order-{order} block not aligned to its order");
            let page = frame_to_page(frame).expect("descriptor");
            assert_eq!(page.state(), PageState::Allocated);
            assert_eq!(page.order(), order);
            // The whole block is usable memory.
            let va = phys_to_virt(frame.start_address());
            // SAFETY: the block is ours: 4096 << order bytes through the direct map.
            unsafe { core::ptr::write_bytes(va.as_mut_ptr::<u8>(), 0x5a, 4096 << order) };
            __free_pages(frame, order).expect("__free_pages");
        }
        assert_eq!(snapshot(), before, "alloc+free of every order must leave the free lists as they were");
    }
);

ktest!(
    #[needs_memory]
    fn gfp_zero_and_get_zeroed_page_return_zeroed_memory() {
        // Dirty blocks, free them, and ask for zeroed ones: LIFO free lists hand the same ones back.
        for order in [0u32, 3] {
            let dirty = __get_free_pages(GfpFlags::GFP_KERNEL, order).expect("alloc");
            // SAFETY: the block is ours until freed just below.
            unsafe { core::ptr::write_bytes(dirty.as_mut_ptr::<u8>(), 0xff, 4096 << order) };
            free_pages(dirty, order).expect("free");
            let zeroed =
                __get_free_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO, order).expect("alloc zeroed");
            // SAFETY: the block is ours until freed just below.
            let bytes = unsafe { core::slice::from_raw_parts(zeroed.as_ptr::<u8>(), 4096 << order) };
            assert!(bytes.iter().all(|&b| b == 0), "__GFP_ZERO block of order {order} not zeroed");
            free_pages(zeroed, order).expect("free");
        }
        let page = get_zeroed_page(GfpFlags::GFP_KERNEL).expect("get_zeroed_page");
        // SAFETY: one page, ours until free_page.
        let bytes = unsafe { core::slice::from_raw_parts(page.as_ptr::<u8>(), 4096) };
        assert!(bytes.iter().all(|&b| b == 0));
        free_page(page).expect("free_page");
    }
);

ktest!(
    #[needs_memory]
    fn address_conversions_round_trip() {
        let frame = alloc_pages(GfpFlags::GFP_KERNEL, 2).expect("alloc");
        let va = phys_to_virt(frame.start_address());
        assert_eq!(virt_to_phys(va), Some(frame.start_address()));
        assert_eq!(virt_to_phys(va + 4097u64), Some(frame.start_address() + 4097u64));
        let page = virt_to_page(va).expect("virt_to_page");
        assert!(core::ptr::eq(page, frame_to_page(frame).unwrap()));
        assert_eq!(node().mem_map().page_to_pfn(page), Some(pfn(frame)));
        // Addresses outside the direct map have no physical address through it.
        assert_eq!(virt_to_phys(x86_64::VirtAddr::new(crate::mm::layout::VMALLOC_START)), None);
        __free_pages(frame, 2).unwrap();
    }
);

ktest!(
    #[needs_memory]
    fn order_above_max_is_refused() {
        let before = snapshot();
        assert_eq!(
            alloc_pages(GfpFlags::GFP_KERNEL | NOWARN, 11),
            Err(AllocError::OrderTooLarge { order: 11 })
        );
        let frame = alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
        assert_eq!(__free_pages(frame, 11), Err(FreePagesError::OrderTooLarge { order: 11 }));
        __free_pages(frame, 0).unwrap();
        assert_eq!(snapshot(), before);
    }
);

ktest!(
    #[needs_memory]
    fn double_free_is_refused_and_changes_nothing() {
        let frame = alloc_pages(GfpFlags::GFP_KERNEL, 1).unwrap();
        __free_pages(frame, 1).unwrap();
        let before = snapshot();
        match __free_pages(frame, 1) {
            Err(FreePagesError::DoubleFree { pfn: p, .. }) => assert_eq!(p, pfn(frame)),
            other => panic!("double free not detected: {other:?}"),
        }
        assert_eq!(snapshot(), before, "a refused double free changed the free lists");
    }
);

ktest!(
    #[needs_memory]
    fn wrong_order_and_interior_pointer_are_refused() {
        let frame = alloc_pages(GfpFlags::GFP_KERNEL, 2).unwrap();
        let before = snapshot();
        assert_eq!(
            __free_pages(frame, 1),
            Err(FreePagesError::WrongOrder { pfn: pfn(frame), allocated: 2, given: 1 })
        );
        let interior = PhysFrame::containing_address(frame.start_address() + 4096u64);
        assert!(matches!(__free_pages(interior, 0), Err(FreePagesError::NotBlockHead { .. })));
        // A direct-map address that is not page aligned.
        let va = phys_to_virt(frame.start_address()) + 8u64;
        assert!(matches!(free_pages(va, 2), Err(FreePagesError::Misaligned { .. })));
        assert_eq!(snapshot(), before);
        __free_pages(frame, 2).unwrap();
    }
);

ktest!(
    fn free_outside_managed_ram_or_reserved_is_refused() {
        let before = snapshot();
        // Far above the end of RAM.
        let beyond = PhysFrame::containing_address(PhysAddr::new(crate::mm::direct_map_size() + (1 << 30)));
        assert!(matches!(__free_pages(beyond, 0), Err(FreePagesError::NotManaged { .. })));
        // The kernel image is reserved memory.
        let kernel = PhysFrame::containing_address(PhysAddr::new(crate::mm::boot_layout().kernel_phys));
        assert!(matches!(
            __free_pages(kernel, 0),
            Err(FreePagesError::Reserved { .. } | FreePagesError::NotManaged { .. })
        ));
        // A virtual address outside the direct map.
        assert!(free_pages(x86_64::VirtAddr::new(crate::mm::layout::VMALLOC_START), 0).is_err());
        assert_eq!(snapshot(), before);
    }
);

ktest!(
    fn free_pages_of_address_zero_is_a_no_op() {
        // mm/page_alloc.c (6.12), free_pages(): `if (addr != 0) { ... __free_pages(...) }`:
        // no error, no report, nothing freed; order is not even looked at.
        let before = snapshot();
        assert_eq!(free_pages(x86_64::VirtAddr::zero(), 0), Ok(()));
        assert_eq!(free_pages(x86_64::VirtAddr::zero(), 11), Ok(()));
        assert_eq!(free_page(x86_64::VirtAddr::zero()), Ok(()));
        assert_eq!(snapshot(), before);
        // Address 1 (not 0) still is no direct-map address and is refused.
        assert!(free_pages(x86_64::VirtAddr::new(1), 0).is_err());
    }
);

ktest!(
    #[needs_memory]
    fn zone_modifiers_select_zones() {
        let dma = alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA, 0).expect("GFP_DMA");
        assert!(dma.start_address().as_u64() < 16 << 20);
        assert_eq!(zone_of(dma), ZoneType::Dma);
        let dma32 = alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA32, 0).expect("GFP_DMA32");
        assert!(dma32.start_address().as_u64() < 4 << 30);
        let normal = alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("GFP_KERNEL");
        // Normal allocations prefer the highest populated zone.
        let highest = ZoneType::ALL.iter().rev().find(|&&z| node().zone(z).is_populated()).copied().unwrap();
        assert_eq!(zone_of(normal), highest);
        for f in [dma, dma32, normal] {
            __free_pages(f, 0).unwrap();
        }
    }
);

// Exhausts the DMA zone with `GFP_DMA`: every block must come from below 16 MiB, the last
// request must fail with OutOfMemory, and freeing restores the zone exactly.
ktest!(
    #[needs_memory]
    fn dma_zone_exhaustion_and_recovery() {
        let before = snapshot();
        {
            let chain = exhaust(GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA);
            assert!(chain.pages > 0, "no DMA pages at all");
            chain.for_each(|f, _| assert_eq!(zone_of(f), ZoneType::Dma));
            assert_eq!(
                alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA | NOWARN, 0),
                Err(AllocError::OutOfMemory { order: 0 })
            );
            // The other zones are untouched by DMA exhaustion.
            let other =
                alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("normal allocation while DMA is exhausted");
            __free_pages(other, 0).unwrap();
        }
        assert_eq!(snapshot(), before, "DMA zone not fully recovered");
    }
);

// Exhausts everything GFP_DMA32 may use (DMA32, then DMA by fallback).
ktest!(
    #[needs_memory]
    fn dma32_exhaustion_falls_back_to_dma_and_recovers() {
        let before = snapshot();
        {
            let chain = exhaust(GfpFlags::GFP_KERNEL | GfpFlags::GFP_DMA32);
            let mut zones = [0u64; 3];
            chain.for_each(|f, o| zones[zone_of(f) as usize] += 1 << o);
            assert!(zones[ZoneType::Dma32 as usize] > 0);
            assert!(zones[ZoneType::Dma as usize] > 0, "GFP_DMA32 did not fall back to DMA");
            assert_eq!(zones[ZoneType::Normal as usize], 0, "GFP_DMA32 got Normal memory");
        }
        assert_eq!(snapshot(), before);
    }
);

// Exhausts all memory with GFP_KERNEL (Normal -> DMA32 -> DMA), checks the failure and
// recovery: afterwards an order-10 block is available again and the free lists are as before.
ktest!(
    #[needs_memory]
    fn total_exhaustion_and_full_recovery() {
        let before = snapshot();
        let free_before = node().totals().free_pages;
        {
            let chain = exhaust(GfpFlags::GFP_KERNEL);
            assert!(alloc_pages(GfpFlags::GFP_KERNEL | NOWARN, 0).is_err());
            // What remains free is the reserve kept by the watermarks, which GFP_KERNEL may not use.
            let left = node().totals().free_pages;
            assert!(left < free_before / 10, "exhaustion left {left} of {free_before} pages free");
            assert_eq!(chain.pages + left, free_before);
        }
        assert_eq!(snapshot(), before, "free lists differ after freeing everything");
        let big = alloc_pages(GfpFlags::GFP_KERNEL, MAX_PAGE_ORDER).expect("order 10 after recovery");
        __free_pages(big, MAX_PAGE_ORDER).unwrap();
    }
);

// `GFP_NOWAIT` stops at the min watermark; `GFP_ATOMIC` may dip below it into the reserve.
ktest!(
    #[needs_memory]
    fn atomic_dips_into_reserves_nowait_does_not() {
        let before = snapshot();
        {
            let _chain = exhaust(GfpFlags::GFP_NOWAIT);
            assert!(alloc_pages(GfpFlags::GFP_NOWAIT | NOWARN, 0).is_err());
            let atomic =
                alloc_pages(GfpFlags::GFP_ATOMIC | NOWARN, 0).expect("GFP_ATOMIC must use the reserve");
            __free_pages(atomic, 0).unwrap();
        }
        assert_eq!(snapshot(), before);
    }
);

ktest!(
    #[needs_memory]
    fn oom_failure_counts_and_nofail_as_6_12() {
        use core::sync::atomic::Ordering::Relaxed;
        let failures = ALLOC_FAILURES.load(Relaxed);
        let _chain = exhaust(GfpFlags::GFP_KERNEL);
        assert!(alloc_pages(GfpFlags::GFP_KERNEL | NOWARN, 0).is_err());
        assert!(ALLOC_FAILURES.load(Relaxed) > failures);
        // mm/page_alloc.c (6.12), __alloc_pages_slowpath(): for __GFP_NOFAIL,
        // WARN_ON_ONCE(order > 1) and WARN_ON_ONCE(!can_direct_reclaim), neither refusing.
        // Order 2 is served from the min reserve if a block is there; either way it warned.
        if let Ok(big) = alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOFAIL | NOWARN, 2) {
            __free_pages(big, 2).unwrap();
        }
        assert!(super::super::page_alloc::NOFAIL_ORDER_WARNED.load(Relaxed), "order > 1 warned");
        // Order 0 with __GFP_NOFAIL gets the min reserve after reclaim failed (6.12's
        // __alloc_pages_cpuset_fallback(..., ALLOC_MIN_RESERVE, ...))...
        let reserve = alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOFAIL, 0).expect("the min reserve");
        // ... while a non-blocking __GFP_NOFAIL fails as any non-blocking request once the
        // atomic reserve is gone (nopage: `if (!can_direct_reclaim) goto fail;`), warned once.
        let _atomic = exhaust(GfpFlags::GFP_ATOMIC);
        let failures = ALLOC_FAILURES.load(Relaxed);
        assert!(alloc_pages(GfpFlags::GFP_ATOMIC | GfpFlags::__GFP_NOFAIL | NOWARN, 0).is_err());
        assert_eq!(ALLOC_FAILURES.load(Relaxed), failures + 1);
        assert!(super::super::page_alloc::NOFAIL_NONBLOCK_WARNED.load(Relaxed), "!can_direct_reclaim warned");
        // With the reserve gone too, a blocking __GFP_NOFAIL fails loudly after its retries
        // instead of hanging (the deliberate deviation: 6.12 would retry forever).
        let failures = ALLOC_FAILURES.load(Relaxed);
        assert!(alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOFAIL | NOWARN, 0).is_err());
        assert_eq!(ALLOC_FAILURES.load(Relaxed), failures + 1);
        __free_pages(reserve, 0).unwrap();
    }
);

ktest!(
    #[needs_memory]
    fn pages_owner_frees_on_drop() {
        let before = snapshot();
        {
            let mut pages = Pages::alloc(GfpFlags::GFP_KERNEL, 3).unwrap();
            pages.as_mut_slice().fill(0xab);
            assert_eq!(pages.len(), 32768);
        }
        assert_eq!(snapshot(), before);
    }
);

ktest!(
    fn statistics_are_consistent() {
        let t = node().totals();
        assert_eq!(t.buddyinfo_pages, t.free_pages, "buddyinfo total differs from MemFree");
        let info = crate::mm::report::meminfo();
        assert_eq!(info.mem_total_kb, t.managed_pages * 4);
        assert_eq!(info.mem_free_kb, t.free_pages * 4);
        assert!(info.mem_available_kb <= info.mem_free_kb);
    }
);

// Orders 1..3 have per-CPU lists of their own (Linux 6.12's per_cpu_pages): a freed order-3 block
// waits on CPU 0's order-3 list (counted in pages, not free), comes back first, and the sizing is
// 6.12's: high within [high_min, high_max], high_min split over the online CPUs.
ktest!(
    #[needs_memory]
    fn order3_blocks_go_through_the_per_cpu_lists() {
        node().drain_pages();
        let frame = alloc_pages(GfpFlags::GFP_KERNEL, 3).expect("alloc");
        let zone = node().zone(zone_of(frame));
        let info = node().pcp_info(zone.zone_type(), 0).expect("cpu 0");
        assert!(info.high_min <= info.high && info.high <= info.high_max);
        assert!(info.high_min >= 4 * info.batch);
        assert_eq!(info.count % 8, 0, "the refill took whole order-3 blocks");
        let free = zone.free_pages();
        __free_pages(frame, 3).expect("free");
        assert_eq!(frame_to_page(frame).unwrap().state(), PageState::PcpFree);
        assert_eq!(zone.free_pages(), free, "a block on a per-CPU list is not counted free");
        assert!(matches!(__free_pages(frame, 3), Err(FreePagesError::DoubleFree { .. })));
        let again = alloc_pages(GfpFlags::GFP_KERNEL, 3).expect("alloc");
        assert_eq!(again, frame, "the hottest block comes back first");
        // (This free may already spill everything: `free_high`, a run of high-order frees.)
        __free_pages(again, 3).unwrap();
        node().drain_pages();
        assert_eq!(node().totals().pcp_pages, 0);
    }
);

// Order-0 pages go through CPU 0's per-CPU list: a freed page waits there (free, but not in the
// zone's free count, as on Linux), comes back first, is protected against a double free, and
// drain_pages gives it back to the buddy lists.
ktest!(
    #[needs_memory]
    fn order0_pages_go_through_the_per_cpu_list() {
        node().drain_pages();
        let frame = alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("alloc");
        let zone = node().zone(zone_of(frame));
        let info = node().pcp_info(zone.zone_type(), 0).expect("cpu 0");
        assert!(info.batch >= 1 && info.high >= info.batch);
        assert_eq!(info.count, info.batch - 1, "an empty list is refilled with one batch");
        let free = zone.free_pages();
        __free_pages(frame, 0).expect("free");
        assert_eq!(frame_to_page(frame).unwrap().state(), PageState::PcpFree);
        assert_eq!(zone.free_pages(), free, "a page on a per-CPU list is not counted free");
        assert_eq!(node().pcp_info(zone.zone_type(), 0).unwrap().count, info.batch);
        assert!(matches!(__free_pages(frame, 0), Err(FreePagesError::DoubleFree { .. })));
        let again = alloc_pages(GfpFlags::GFP_KERNEL, 0).expect("alloc");
        assert_eq!(again, frame, "the hottest page comes back first");
        __free_pages(again, 0).unwrap();
        assert_eq!(node().drain_pages(), info.batch as u64);
        assert_eq!(zone.free_pages(), free + info.batch as u64);
        assert_eq!(node().totals().pcp_pages, 0);
    }
);
