//! In-kernel tests of vmalloc on the real page tables: every API and misuse, unwinding when
//! frames run out, physically scattered memory, a large area, interrupt context, the TLB flush,
//! and Linux's lib/test_vmalloc.c scenarios.

use core::fmt::Write;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use ::mm::page::PageState;
use ::mm::vmalloc::{AreaKind, VmFlags, VmallocError, VmapError};
use ::mm::{GfpFlags, Pfn, PAGE_SIZE};
use x86_64::structures::paging::{OffsetPageTable, PageTable, Translate};
use x86_64::{PhysAddr, VirtAddr};

use crate::mm::kalloc::{KVBox, KVVec, VBox, VVec};
use crate::mm::page_alloc::{alloc_pages, phys_to_virt, Pages};
use crate::mm::vmalloc::*;
use crate::mm::{direct_map_base, node};

const P: usize = PAGE_SIZE;
const NOWARN: GfpFlags = GfpFlags::__GFP_NOWARN;

fn free_pages() -> u64 {
    super::vmalloc_free_pages()
}

/// Everything a vmalloc test must give back: free pages, vmalloc's counts and the tree shape.
#[derive(Debug, PartialEq, Eq)]
struct State {
    free: u64,
    counts: VmallocCounts,
}

fn state() -> State {
    let (free, counts) = super::vmalloc_state();
    State { free, counts }
}

/// The frame behind `va` by walking CR3's page tables with the x86_64 crate (independent of the
/// vmalloc code's own walk).
fn walk(va: usize) -> Option<Pfn> {
    let (pml4, _) = x86_64::registers::control::Cr3::read();
    let table = phys_to_virt(pml4.start_address()).as_mut_ptr::<PageTable>();
    // SAFETY: the live PML4 through the direct map, only read here (translate does not write)
    // while no vmalloc call runs on this CPU.
    let mapper = unsafe { OffsetPageTable::new(&mut *table, VirtAddr::new(direct_map_base())) };
    mapper.translate_addr(VirtAddr::new(va as u64)).map(Pfn::from_phys)
}

fn write_pattern(p: NonNull<u8>, len: usize, seed: u8) {
    for i in (0..len).step_by(512) {
        // SAFETY: `p` is a live area of at least `len` bytes owned by the test.
        unsafe { p.as_ptr().add(i).write_volatile(seed.wrapping_add((i / 512) as u8)) };
    }
}

fn check_pattern(p: NonNull<u8>, len: usize, seed: u8) {
    for i in (0..len).step_by(512) {
        // SAFETY: as in `write_pattern`.
        let v = unsafe { p.as_ptr().add(i).read_volatile() };
        assert_eq!(v, seed.wrapping_add((i / 512) as u8), "byte {i} of the area at {:p}", p.as_ptr());
    }
}

/// Blocks held by a test, linked through their own first two words (next, order): no heap.
pub(super) struct PageList {
    head: u64,
    head_order: u32,
    len: u64,
}

impl PageList {
    const END: u64 = u64::MAX;
    pub(super) fn new() -> Self {
        PageList { head: Self::END, head_order: 0, len: 0 }
    }
    pub(super) fn len(&self) -> u64 {
        self.len
    }
    pub(super) fn push(&mut self, phys: PhysAddr) {
        self.push_block(phys, 0);
    }
    pub(super) fn push_block(&mut self, phys: PhysAddr, order: u32) {
        let link = phys_to_virt(phys).as_mut_ptr::<u64>();
        // SAFETY: a block the test owns (at least one page), reached through the direct map.
        unsafe {
            link.write(self.head);
            link.add(1).write(self.head_order as u64);
        }
        self.head = phys.as_u64();
        self.head_order = order;
        self.len += 1;
    }
    fn pop_block(&mut self) -> Option<(PhysAddr, u32)> {
        (self.head != Self::END).then(|| {
            let (phys, order) = (PhysAddr::new(self.head), self.head_order);
            let link = phys_to_virt(phys).as_ptr::<u64>();
            // SAFETY: written by `push_block` for a block the list owns.
            unsafe {
                self.head = link.read();
                self.head_order = link.add(1).read() as u32;
            }
            self.len -= 1;
            (phys, order)
        })
    }
    fn pop(&mut self) -> Option<PhysAddr> {
        let (phys, order) = self.pop_block()?;
        assert_eq!(order, 0, "pop of a single page from a list of blocks");
        Some(phys)
    }
}

impl Drop for PageList {
    fn drop(&mut self) {
        while let Some((phys, order)) = self.pop_block() {
            crate::mm::page_alloc::free_pages(phys_to_virt(phys), order)
                .expect("freeing a block the test held");
        }
    }
}

/// Flags that reach each zone from the bottom up, dipping into the reserves (`__GFP_HIGH`).
pub(super) const ALL_ZONES: [GfpFlags; 3] = [
    GfpFlags::GFP_ATOMIC.union(GfpFlags::__GFP_DMA),
    GfpFlags::GFP_ATOMIC.union(GfpFlags::__GFP_DMA32),
    GfpFlags::GFP_ATOMIC,
];

/// Allocates every order-0 page the allocator gives out, from every zone.
fn take_all_pages() -> PageList {
    let mut list = PageList::new();
    for gfp in ALL_ZONES {
        while let Ok(frame) = alloc_pages(gfp | NOWARN, 0) {
            list.push(frame.start_address());
        }
    }
    list
}

/// Area trees and slabs grow on first use and keep their memory; run a workload once so that
/// before/after comparisons see only what vmalloc itself holds.
fn warm_up(sizes: &[usize]) {
    for &s in sizes {
        let p = vmalloc(s).expect("warm-up vmalloc");
        vfree(p.as_ptr()).expect("warm-up vfree");
    }
}

struct Buf {
    b: [u8; 512],
    n: usize,
}

impl Write for Buf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let take = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + take].copy_from_slice(&s.as_bytes()[..take]);
        self.n += take;
        Ok(())
    }
}

fn describe(addr: usize) -> Buf {
    let mut b = Buf { b: [0; 512], n: 0 };
    crate::mm::report::describe_address(VirtAddr::new(addr as u64), &mut b);
    b
}

impl Buf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.b[..self.n]).unwrap_or("<utf8>")
    }
}

ktest!(
    #[needs_memory]
    fn vmalloc_maps_separate_pages_and_vfree_gives_everything_back() {
        warm_up(&[3 * P + 1]);
        let before = state();
        let p = vmalloc(3 * P + 1).expect("vmalloc");
        assert!(is_vmalloc_addr(p.as_ptr()));
        assert_eq!(p.as_ptr() as usize % P, 0);
        write_pattern(p, 4 * P, 7);
        check_pattern(p, 4 * P, 7);
        for i in 0..4 {
            let a = p.as_ptr().wrapping_add(i * P);
            let page = vmalloc_to_page(a).expect("mapped");
            assert_eq!(page.state(), PageState::Vmalloc);
            assert_eq!(page.private.load(SeqCst), p.as_ptr() as usize, "page.private = area start");
            assert_eq!(vmalloc_to_pfn(a), walk(a as usize));
        }
        // The guard page is not mapped.
        assert_eq!(vmalloc_to_pfn(p.as_ptr().wrapping_add(4 * P)), None);
        let c = counts();
        assert_eq!(c.nr_areas, before.counts.nr_areas + 1);
        assert_eq!(c.vmalloc_pages, before.counts.vmalloc_pages + 4);
        assert_eq!(
            free_pages(),
            before.free - 4 - (c.pagetable_pages - before.counts.pagetable_pages) as u64
        );
        vfree(p.as_ptr()).expect("vfree");
        assert_eq!(state(), before);
        assert_eq!(vfree(core::ptr::null()), Ok(()), "vfree(NULL) is a no-op");
    }
);

ktest!(
    #[needs_memory]
    fn vzalloc_and_gfp_zero_return_zeroed_memory() {
        // Dirty pages, free them; LIFO free lists hand the same frames back.
        let dirty = vmalloc(8 * P).expect("vmalloc");
        write_pattern(dirty, 8 * P, 0xa5);
        vfree(dirty.as_ptr()).unwrap();
        for p in
            [vzalloc(8 * P).unwrap(), __vmalloc(8 * P, GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO).unwrap()]
        {
            // SAFETY: 8 pages of a live area.
            let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), 8 * P) };
            assert!(bytes.iter().all(|&b| b == 0), "zeroed vmalloc memory is not zero");
            vfree(p.as_ptr()).unwrap();
        }
    }
);

ktest!(
    fn bad_sizes_and_alignments_are_refused() {
        // A failed area allocation may have grown the area tree's node storage (heap), so
        // compare vmalloc's own counts.
        let before = state().counts;
        assert_eq!(vmalloc(0), Err(VmError::Vmalloc(VmallocError::Area(VmapError::ZeroSize))));
        assert!(matches!(vmalloc(usize::MAX - P), Err(VmError::MoreThanRam { .. })));
        let total = node().totals().managed_pages as usize;
        assert!(matches!(__vmalloc((total + 1) * P, NOWARN), Err(VmError::MoreThanRam { .. })));
        assert_eq!(
            __vmalloc_node(P, 3 * P, NOWARN),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::BadAlign { align: 3 * P })))
        );
        // An alignment beyond the whole range can never be met.
        assert!(
            matches!(
                __vmalloc_node(P, 1 << 46, NOWARN),
                Err(VmError::Vmalloc(VmallocError::Area(
                    VmapError::TooLarge { .. } | VmapError::NoSpace { .. }
                )))
            ),
            "alignment 64 TiB in a 32 TiB range"
        );
        assert_eq!(state().counts, before);
    }
);

ktest!(
    #[needs_memory]
    fn misuse_of_vfree_and_vunmap_is_reported_and_changes_nothing() {
        let p = vmalloc(2 * P).expect("vmalloc");
        let a = p.as_ptr() as usize;
        let k = crate::mm::slab::kmalloc(64, GfpFlags::GFP_KERNEL).unwrap();
        let before = state();
        assert!(matches!(
            vfree((a + 8) as *const u8),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::Interior { .. })))
        ));
        assert!(matches!(
            vfree((a + 2 * P) as *const u8),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::InGuard { .. })))
        ));
        assert_eq!(
            vfree(k.as_ptr()),
            Err(VmError::NotVmalloc { addr: k.as_ptr() as usize, direct_map: true }),
            "a kmalloc pointer"
        );
        assert_eq!(
            vunmap(p.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::WrongKind { addr: a, kind: AreaKind::Vmalloc }))
        );
        assert_eq!(state(), before);
        check_pattern_free(p);
        vfree(p.as_ptr()).expect("vfree");
        // While the range waits for the lazy purge: refused as a double free of a parked area.
        match vfree(p.as_ptr()) {
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::Unpurged { addr, area_start, .. }))) => {
                assert_eq!((addr, area_start), (a, a))
            }
            other => panic!("double vfree of a parked area gave {other:?}"),
        }
        // state() purges (counts() does): then the range is simply free.
        let after_free = state();
        match vfree(p.as_ptr()) {
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::NotAllocated { addr, .. }))) => {
                assert_eq!(addr, a)
            }
            other => panic!("double vfree gave {other:?}"),
        }
        assert_eq!(state(), after_free, "a double vfree changes nothing");
        crate::mm::slab::kfree(k.as_ptr()).unwrap();
    }
);

fn check_pattern_free(p: NonNull<u8>) {
    write_pattern(p, 2 * P, 3);
    check_pattern(p, 2 * P, 3);
}

ktest!(
    #[needs_memory]
    fn vmalloc_out_of_frames_unwinds() {
        warm_up(&[64 * P]);
        let before = state();
        // Hold all memory but 100 pages, then ask for 300: the failure comes half way.
        let mut held = take_all_pages();
        let mut spare = PageList::new();
        for _ in 0..100 {
            spare.push(held.pop().expect("memory"));
        }
        drop(spare);
        let during = state();
        // GFP_ATOMIC: the pages were taken down to its (lower) watermark.
        let err = __vmalloc(300 * P, GfpFlags::GFP_ATOMIC | NOWARN).expect_err("only 100 pages are free");
        match err {
            VmError::Vmalloc(VmallocError::Pages { index, nr_pages: 300, .. }) => {
                assert!((50..=100).contains(&index), "failed at page {index}")
            }
            other => panic!("unexpected error {other}"),
        }
        assert_eq!(state(), during, "the failed vmalloc gave back every page, table and the area");
        // And it works again once memory is back.
        drop(held);
        let p = vmalloc(300 * P).expect("vmalloc after the memory came back");
        vfree(p.as_ptr()).unwrap();
        assert_eq!(state(), before);
    }
);

ktest!(
    #[needs_memory]
    fn vmalloc_works_on_physically_scattered_memory() {
        warm_up(&[16 << 20, 16 << 10]);
        let k = crate::mm::slab::kmalloc(16 << 10, GfpFlags::GFP_KERNEL).expect("kmalloc before fragmenting");
        crate::mm::slab::kfree(k.as_ptr()).unwrap();
        // Empty slabs first: reclaim would otherwise hand their (multi-page) blocks back later.
        crate::mm::slab::shrink_all();
        let before = state();
        // Take everything as single pages, then give back every page whose buddy stays held:
        // no two free pages can merge, so no free block above order 0 remains.
        let mut all = take_all_pages();
        let mut held = PageList::new();
        let mut freed = 0u64;
        while let Some(phys) = all.pop() {
            if (phys.as_u64() >> 12) & 1 == 0 {
                crate::mm::page_alloc::free_page(phys_to_virt(phys)).unwrap();
                freed += 1;
            } else {
                held.push(phys);
            }
        }
        // The watermark reserve was left free by `take_all_pages`, in blocks of any order; now
        // that half of memory is free again, hold every block above order 0 as it is.
        for order in (1..=::mm::page::MAX_PAGE_ORDER).rev() {
            for gfp in ALL_ZONES {
                while let Ok(frame) = alloc_pages(gfp | NOWARN, order) {
                    held.push_block(frame.start_address(), order);
                }
            }
        }
        for zone in node().zones() {
            let nr_free = zone.free_area_snapshot().nr_free;
            assert!(
                nr_free[1..].iter().all(|&n| n == 0),
                "zone {}: free blocks above order 0: {nr_free:?}",
                zone.name()
            );
        }
        assert!(freed >= 2 * 4096, "{freed} pages freed: too little memory for the test");
        assert!(
            crate::mm::slab::kmalloc(16 << 10, GfpFlags::GFP_KERNEL | NOWARN).is_err(),
            "kmalloc(16 KiB) needs an order-2 block"
        );
        let p = vmalloc(16 << 20).expect("vmalloc(16 MiB) from single pages");
        let mut discontiguous = 0;
        let mut prev: Option<Pfn> = None;
        for i in 0..4096 {
            let a = p.as_ptr().wrapping_add(i * P);
            let pfn = vmalloc_to_pfn(a).expect("mapped");
            assert_eq!(
                Some(pfn),
                walk(a as usize),
                "vmalloc_to_pfn disagrees with the page-table walk at page {i}"
            );
            assert_eq!(vmalloc_to_page(a).map(|pg| pg.state()), Some(PageState::Vmalloc));
            if prev.is_some_and(|q| q.0 + 1 != pfn.0) {
                discontiguous += 1;
            }
            prev = Some(pfn);
        }
        assert_eq!(discontiguous, 4095, "no two consecutive pages of the area are adjacent frames");
        write_pattern(p, 16 << 20, 11);
        check_pattern(p, 16 << 20, 11);
        // kvmalloc falls back to vmalloc when kmalloc cannot.
        let kv = kvmalloc(16 << 10, GfpFlags::GFP_KERNEL).expect("kvmalloc");
        assert!(is_vmalloc_addr(kv.as_ptr()), "kvmalloc(16 KiB) on scattered memory is vmalloc memory");
        kvfree(kv.as_ptr()).unwrap();
        vfree(p.as_ptr()).unwrap();
        drop(held);
        assert_eq!(state(), before);
    }
);

ktest!(
    #[needs_memory]
    fn large_vmalloc_of_most_free_memory_and_back() {
        let free = free_pages() as usize;
        // Leave room for the page tables (one PT per 512 pages) and the watermarks.
        let nr = free - free / 8;
        warm_up(&[nr * P]);
        let before = state();
        let p = vmalloc(nr * P).expect("vmalloc of most of free memory");
        for i in 0..nr {
            // SAFETY: page i of the live area.
            unsafe { p.as_ptr().add(i * P).cast::<usize>().write_volatile(i) };
        }
        for i in (0..nr).step_by(97) {
            // SAFETY: as above.
            assert_eq!(unsafe { p.as_ptr().add(i * P).cast::<usize>().read_volatile() }, i);
        }
        let during = counts();
        assert_eq!(during.vmalloc_pages, before.counts.vmalloc_pages + nr);
        assert!(during.pagetable_pages >= before.counts.pagetable_pages + nr / 512);
        crate::info!(
            "large vmalloc: {} MiB in {} pages with {} page-table pages, {} pages left free",
            (nr * P) >> 20,
            nr,
            during.pagetable_pages - before.counts.pagetable_pages,
            free_pages()
        );
        vfree(p.as_ptr()).unwrap();
        assert_eq!(state(), before, "free pages, page-table pages and the area tree are back");
    }
);

static IRQ_TARGET: AtomicUsize = AtomicUsize::new(0);
static IRQ_DONE: AtomicUsize = AtomicUsize::new(0);
static IRQ_RESULTS: [AtomicUsize; 7] = [const { AtomicUsize::new(0) }; 7];

fn code(r: Result<(), VmError>) -> usize {
    match r {
        Ok(()) => 1,
        Err(VmError::AlreadyQueued { .. }) => 2,
        Err(VmError::InInterrupt { .. }) => 3,
        Err(_) => 4,
    }
}

fn timer_vfree() {
    if IRQ_DONE.load(SeqCst) != 0 {
        return;
    }
    let addr = IRQ_TARGET.load(SeqCst) as *const u8;
    IRQ_RESULTS[0].store(code(vfree(addr)), SeqCst);
    IRQ_RESULTS[1].store(code(vfree(addr)), SeqCst);
    IRQ_RESULTS[2].store(code(vmalloc(P).map(|_| ())), SeqCst);
    // vunmap may sleep (Linux: `might_sleep(); BUG_ON(in_interrupt())`): refused, even for an
    // address that is no vmap area, before anything is looked up.
    IRQ_RESULTS[3].store(code(vunmap(addr)), SeqCst);
    // ioremap allocates a vm area (6.12: BUG_ON(in_interrupt()) in __get_vm_area_node) and
    // iounmap frees one (remove_vm_area's might_sleep): both refused.
    let (_, lapic) = crate::arch::apic::mmio();
    IRQ_RESULTS[5].store(code(ioremap(lapic, 4).map(|_| ())), SeqCst);
    IRQ_RESULTS[6].store(code(iounmap(addr)), SeqCst);
    // kmem_cache_create/destroy take a sleeping lock on Linux: refused with a report.
    let created =
        crate::mm::slab::kmem_cache_create("irq-cache", 32, 0, ::mm::slab::SlabFlags::empty(), None);
    IRQ_RESULTS[4].store(
        match created {
            Err(::mm::slab::SlabError::InInterrupt { what: "kmem_cache_create", .. }) => 3,
            Err(_) => 4,
            Ok(c) => {
                let _ = crate::mm::slab::kmem_cache_destroy(c);
                1
            }
        },
        SeqCst,
    );
    IRQ_DONE.store(1, SeqCst);
}

ktest!(
    #[needs_memory]
    fn vfree_in_interrupt_is_deferred_and_vmalloc_vunmap_ioremap_and_cache_creation_are_refused() {
        warm_up(&[5 * P]);
        let before = state();
        let p = vmalloc(5 * P).unwrap();
        IRQ_TARGET.store(p.as_ptr() as usize, SeqCst);
        IRQ_DONE.store(0, SeqCst);
        let refused = VMALLOC_IN_INTERRUPT.load(SeqCst);
        crate::arch::interrupts::set_timer_handler(Some(timer_vfree));
        crate::arch::interrupts::start_timer(1000).unwrap();
        x86_64::instructions::interrupts::enable();
        let start = crate::arch::interrupts::ticks();
        while IRQ_DONE.load(SeqCst) == 0 && crate::arch::interrupts::ticks() < start + 1000 {
            x86_64::instructions::hlt();
        }
        crate::arch::interrupts::stop_timer();
        crate::arch::interrupts::set_timer_handler(None);
        assert_eq!(IRQ_DONE.load(SeqCst), 1, "the timer handler did not run");
        assert_eq!(IRQ_RESULTS[0].load(SeqCst), 1, "vfree in interrupt context is queued");
        assert_eq!(IRQ_RESULTS[1].load(SeqCst), 2, "a second vfree of the same area is a double free");
        assert_eq!(IRQ_RESULTS[2].load(SeqCst), 3, "vmalloc in interrupt context is refused");
        assert_eq!(IRQ_RESULTS[3].load(SeqCst), 3, "vunmap in interrupt context is refused");
        assert_eq!(IRQ_RESULTS[4].load(SeqCst), 3, "kmem_cache_create in interrupt context is refused");
        assert_eq!(IRQ_RESULTS[5].load(SeqCst), 3, "ioremap in interrupt context is refused");
        assert_eq!(IRQ_RESULTS[6].load(SeqCst), 3, "iounmap in interrupt context is refused");
        assert_eq!(VMALLOC_IN_INTERRUPT.load(SeqCst), refused + 4);
        // Still mapped until the drain.
        assert_eq!(deferred_pending(), 1);
        assert_eq!(counts().nr_areas, before.counts.nr_areas + 1);
        assert!(vmalloc_to_pfn(p.as_ptr()).is_some(), "a queued area stays mapped until the drain");
        assert_eq!(vfree_drain(), 1);
        assert_eq!(deferred_pending(), 0);
        assert_eq!(state(), before);
    }
);

fn deferred_pending() -> usize {
    crate::mm::vmalloc::nr_deferred()
}

ktest!(
    #[needs_memory]
    fn deferred_vfree_is_drained_by_the_next_vmalloc() {
        let before = state();
        let p = vmalloc(P).unwrap();
        vfree_atomic(p.as_ptr()).unwrap();
        assert_eq!(deferred_pending(), 1);
        let q = vmalloc(P).unwrap();
        assert_eq!(deferred_pending(), 0, "vmalloc drained the queue");
        assert!(find_vm_area(p.as_ptr()).is_none(), "the drained area is no longer live");
        let parked = with_space(|s| s.areas.lookup_lazy(p.as_ptr() as usize)).map(|a| a.start);
        assert_eq!(parked, Some(p.as_ptr() as usize), "its range waits for the lazy purge");
        assert_ne!(q, p, "and is not handed out before it");
        vfree(q.as_ptr()).unwrap();
        assert_eq!(state(), before);
    }
);

ktest!(
    #[needs_memory]
    fn vmap_maps_the_callers_pages_and_vunmap_leaves_them() {
        let mut pages: [Option<Pages>; 4] = Default::default();
        let mut pfns = [Pfn(0); 4];
        for (i, slot) in pages.iter_mut().enumerate() {
            let mut pg = Pages::alloc(GfpFlags::GFP_KERNEL, 0).unwrap();
            pg.as_mut_slice().fill(i as u8 + 1);
            pfns[i] = Pfn::from_phys(pg.frame().start_address());
            *slot = Some(pg);
        }
        let before = state();
        // SAFETY: the frames are owned by `pages`, which outlives the mapping (vunmap below).
        let v = unsafe { vmap(&pfns, VmFlags::VM_MAP) }.expect("vmap");
        for (i, pfn) in pfns.iter().enumerate() {
            let a = v.as_ptr().wrapping_add(i * P);
            assert_eq!(vmalloc_to_pfn(a), Some(*pfn));
            // SAFETY: page i of the live vmap area.
            assert_eq!(unsafe { a.add(100).read_volatile() }, i as u8 + 1);
        }
        assert!(with_space(|s| s.areas.find_vmap_area(v.as_ptr() as usize))
            .is_some_and(|a| a.kind == AreaKind::Vmap));
        assert_eq!(
            vfree(v.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::WrongKind {
                addr: v.as_ptr() as usize,
                kind: AreaKind::Vmap
            }))
        );
        vunmap(v.as_ptr()).expect("vunmap");
        for pg in pages.iter().flatten() {
            let page = crate::mm::page_alloc::frame_to_page(pg.frame()).unwrap();
            assert_eq!(page.state(), PageState::Allocated, "vunmap does not free the caller's pages");
        }
        assert_eq!(state(), before);
        // SAFETY: no frames: nothing to own.
        assert_eq!(unsafe { vmap(&[], VmFlags::VM_MAP) }, Err(VmError::Vmalloc(VmallocError::NoPages)));
        // SAFETY: refused before mapping anything.
        assert_eq!(
            unsafe { vmap(&pfns, VmFlags::VM_ALLOC) },
            Err(VmError::BadFlags { flags: VmFlags::VM_ALLOC })
        );
    }
);

ktest!(
    #[needs_memory]
    fn kvmalloc_uses_kmalloc_when_it_can_and_vmalloc_above_it() {
        let before = state();
        let small = kvmalloc(1000, GfpFlags::GFP_KERNEL).unwrap();
        assert!(!is_vmalloc_addr(small.as_ptr()), "1000 bytes come from kmalloc");
        let mid = kvzalloc(64 << 10, GfpFlags::GFP_KERNEL).unwrap();
        // SAFETY: 64 KiB from kvzalloc.
        assert!(unsafe { core::slice::from_raw_parts(mid.as_ptr(), 64 << 10) }.iter().all(|&b| b == 0));
        let big = kvmalloc(8 << 20, GfpFlags::GFP_KERNEL).unwrap();
        assert!(is_vmalloc_addr(big.as_ptr()), "8 MiB is above KMALLOC_MAX_SIZE: vmalloc");
        for p in [small, mid, big] {
            kvfree(p.as_ptr()).unwrap();
        }
        assert!(matches!(kvfree(0x1234_5000 as *const u8), Err(VmError::Kfree(_))));
        assert_eq!(state().counts, before.counts);
    }
);

ktest!(
    #[needs_memory]
    fn owners_free_on_drop() {
        warm_up(&[8 * P]);
        let before = state();
        {
            let mut b = VBox::new([7u64; 1024], GfpFlags::GFP_KERNEL).unwrap();
            assert!(is_vmalloc_addr(VBox::as_ptr(&b).cast()));
            b[1023] = 9;
            assert_eq!(b[0] + b[1023], 16);
            let kb = KVBox::new(5u32, GfpFlags::GFP_KERNEL).unwrap();
            assert!(!is_vmalloc_addr(KVBox::as_ptr(&kb).cast()));
            let mut v: VVec<u32> = VVec::new();
            for i in 0..100_000 {
                v.push(i, GfpFlags::GFP_KERNEL).unwrap();
            }
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
            assert!(v.len() == 100_000 && !v.is_empty() && v.capacity() >= v.len());
            assert!(is_vmalloc_addr(v.as_ptr().cast()));
            let mut kv: KVVec<u64> = KVVec::with_capacity(4, GfpFlags::GFP_KERNEL).unwrap();
            for i in 0..1_000_000u64 {
                kv.push(i, GfpFlags::GFP_KERNEL).unwrap();
            }
            assert!(is_vmalloc_addr(kv.as_ptr().cast()), "8 MB of u64 went to vmalloc");
            assert_eq!(kv.pop(), Some(999_999));
        }
        assert_eq!(state().counts, before.counts);
    }
);

ktest!(
    #[needs_memory]
    fn describer_names_the_area_its_guard_page_and_the_caller() {
        let p = vmalloc(2 * P).unwrap();
        let a = p.as_ptr() as usize;
        let inside = describe(a + 100);
        assert!(inside.as_str().contains("vmalloc area ["), "{}", inside.as_str());
        assert!(
            inside.as_str().contains("allocated at kernel/src/mm/tests/vmalloc.rs:"),
            "{}",
            inside.as_str()
        );
        assert!(matches!(
            find_vm_area((a + 2 * P + 5) as *const u8),
            Some((area, ::mm::vmalloc::AddrPlace::Guard { offset: 5 })) if area.start == a
        ));
        let guard = describe(a + 2 * P);
        assert!(guard.as_str().starts_with("vmalloc guard page: 0 bytes past the end"), "{}", guard.as_str());
        assert!(
            guard.as_str().contains("(8192 bytes) allocated at kernel/src/mm/tests/vmalloc.rs:"),
            "{}",
            guard.as_str()
        );
        vfree(p.as_ptr()).unwrap();
        let parked = describe(a + 8);
        let want = "freed vmalloc area [";
        assert!(parked.as_str().starts_with(want), "{}", parked.as_str());
        assert!(
            parked.as_str().ends_with(", offset 0x8: use after vfree (range waiting for the lazy purge)"),
            "{}",
            parked.as_str()
        );
        crate::mm::vmalloc::purge_vmap_area_lazy();
        let gone = describe(a);
        assert!(gone.as_str().contains("not inside any live vmalloc area"), "{}", gone.as_str());
    }
);

ktest!(
    #[needs_memory]
    fn the_lazy_purge_flushes_the_tlb_so_a_reused_range_sees_new_frames() {
        use crate::mm::vmalloc::tlb::{FULL_FLUSHES, SINGLE_PAGE_FLUSHES, TLB_FLUSH_ALL_THRESHOLD};
        // The purge flushes the area with its guard page: nr + 1 pages.
        for nr in [1, TLB_FLUSH_ALL_THRESHOLD - 1, TLB_FLUSH_ALL_THRESHOLD, 256] {
            purge_vmap_area_lazy();
            let p = vmalloc(nr * P).unwrap();
            // Cache every translation, with a pattern the next frames will not have.
            write_pattern(p, nr * P, 0xee);
            let (single, full) = (SINGLE_PAGE_FLUSHES.load(SeqCst), FULL_FLUSHES.load(SeqCst));
            vfree(p.as_ptr()).unwrap();
            let flushes = (SINGLE_PAGE_FLUSHES.load(SeqCst), FULL_FLUSHES.load(SeqCst));
            assert_eq!(flushes, (single, full), "vfree parks the range without a flush");
            assert_eq!(purge_vmap_area_lazy(), 1);
            if nr < TLB_FLUSH_ALL_THRESHOLD {
                assert_eq!(SINGLE_PAGE_FLUSHES.load(SeqCst), single + nr as u64 + 1);
                assert_eq!(FULL_FLUSHES.load(SeqCst), full);
            } else {
                assert_eq!(SINGLE_PAGE_FLUSHES.load(SeqCst), single);
                assert_eq!(FULL_FLUSHES.load(SeqCst), full + 1);
            }
            // Dirty the freed frames through the direct map so a stale translation would show.
            let q = vzalloc(nr * P).unwrap();
            assert_eq!(q, p, "the lowest fit reuses the range");
            // SAFETY: nr pages of the live area.
            let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), nr * P) };
            assert!(bytes.iter().all(|&b| b == 0), "{nr} pages: stale TLB entry after vfree");
            vfree(q.as_ptr()).unwrap();
        }
    }
);

// ---- Linux lib/test_vmalloc.c scenarios ----

use crate::mm::stress::Rng;

const ROUNDS: usize = 500;

ktest!(
    #[needs_memory]
    fn test_vmalloc_fixed_size_alloc() {
        warm_up(&[P]);
        let before = state();
        for _ in 0..ROUNDS {
            let p = vmalloc(3 * P).unwrap();
            // SAFETY: first byte of a live area.
            unsafe { p.as_ptr().write_volatile(1) };
            vfree(p.as_ptr()).unwrap();
        }
        assert_eq!(state(), before);
    }
);

ktest!(
    #[needs_memory]
    fn test_vmalloc_full_fit_alloc() {
        // Three areas; free the middle one; the same size fits the hole exactly and gets it.
        let a = vmalloc(P).unwrap();
        let b = vmalloc(P).unwrap();
        let c = vmalloc(P).unwrap();
        vfree(b.as_ptr()).unwrap();
        purge_vmap_area_lazy();
        let b2 = vmalloc(P).unwrap();
        assert_eq!(b2, b, "full fit");
        // A bigger request does not fit the hole and goes above.
        vfree(b2.as_ptr()).unwrap();
        purge_vmap_area_lazy();
        let big = vmalloc(2 * P).unwrap();
        assert!(big.as_ptr() as usize > c.as_ptr() as usize);
        for p in [a, c, big] {
            vfree(p.as_ptr()).unwrap();
        }
    }
);

ktest!(
    #[needs_memory]
    fn test_vmalloc_long_busy_list_alloc() {
        const BUSY: usize = 5000;
        warm_up(&[P]);
        let before = state();
        let mut busy: KVVec<usize> = KVVec::with_capacity(BUSY, GfpFlags::GFP_KERNEL).unwrap();
        for _ in 0..BUSY {
            busy.push(vmalloc(P).unwrap().as_ptr() as usize, GfpFlags::GFP_KERNEL).unwrap();
        }
        assert_eq!(counts().nr_areas, before.counts.nr_areas + BUSY);
        for _ in 0..ROUNDS {
            let p = vmalloc(P).unwrap();
            vfree(p.as_ptr()).unwrap();
        }
        for &a in busy.iter() {
            vfree(a as *const u8).unwrap();
        }
        drop(busy);
        let after = state();
        assert_eq!(after.counts, before.counts);
    }
);

ktest!(
    #[needs_memory]
    fn test_vmalloc_random_size_alloc() {
        let before = state();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut live = [0usize; 64];
        for _ in 0..ROUNDS {
            let slot = rng.below(64) as usize;
            if live[slot] != 0 {
                vfree(live[slot] as *const u8).unwrap();
                live[slot] = 0;
            } else {
                let size = 1 + rng.below(100 * P as u64) as usize;
                let p = vmalloc(size).unwrap();
                write_pattern(p, size, slot as u8);
                live[slot] = p.as_ptr() as usize;
            }
        }
        for a in live.into_iter().filter(|&a| a != 0) {
            vfree(a as *const u8).unwrap();
        }
        assert_eq!(state().counts, before.counts);
    }
);

ktest!(
    #[needs_memory]
    fn test_vmalloc_fixed_align_alloc() {
        let before = state();
        for shift in 12..=24 {
            let align = 1usize << shift;
            let p = __vmalloc_node(3 * P, align, GfpFlags::GFP_KERNEL).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0, "alignment {align:#x}");
            vfree(p.as_ptr()).unwrap();
        }
        assert_eq!(state().counts, before.counts);
    }
);

ktest!(
    #[needs_memory]
    fn test_vmalloc_random_size_align_alloc() {
        let before = state();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..ROUNDS / 2 {
            let align = P << rng.below(10);
            let size = 1 + rng.below(20 * P as u64) as usize;
            let p = __vmalloc_node(size, align, GfpFlags::GFP_KERNEL).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0);
            write_pattern(p, size, 1);
            vfree(p.as_ptr()).unwrap();
        }
        assert_eq!(state().counts, before.counts);
    }
);

// `fault=vmalloc_guard`: a write one byte past the end of a 3-page area lands in its guard page.
crate::kfault!(
    fn vmalloc_guard() {
        let p = vmalloc(3 * P).expect("vmalloc");
        crate::info!("vmalloc(3 pages) = {:p}; writing the byte just past its end", p.as_ptr());
        // SAFETY: not safe — the write overruns the area on purpose to hit its guard page; the
        // fault never returns here.
        unsafe { core::ptr::write_volatile(p.as_ptr().add(core::hint::black_box(3 * P)), 1) };
        crate::error!("the write past the vmalloc area did not fault");
    }
);

ktest!(
    #[needs_memory]
    fn page_tables_stay_after_vfree_are_reused_and_the_shrinker_gives_them_back() {
        use crate::mm::page_alloc::shrink_all_shrinkers;
        shrink_page_tables();
        let (free0, tables0) = (free_pages(), counts().pagetable_pages);
        // 1 GiB alignment: an address under no table yet, so the area needs a new PD and PT.
        let p = __vmalloc_node(P, 1 << 30, GfpFlags::GFP_KERNEL).unwrap();
        assert_eq!(counts().pagetable_pages, tables0 + 2, "a PD and a PT for the new area");
        vfree(p.as_ptr()).unwrap();
        assert_eq!(counts().pagetable_pages, tables0 + 2, "vfree keeps the tables (as Linux)");
        let q = __vmalloc_node(3 * P, 1 << 30, GfpFlags::GFP_KERNEL).unwrap();
        assert_eq!(q, p, "the same range again");
        assert_eq!(counts().pagetable_pages, tables0 + 2, "mapped without a new table");
        // The shrinker leaves tables that map something.
        assert_eq!(shrink_page_tables(), 0);
        vfree(q.as_ptr()).unwrap();
        // Reclaim runs it (registered with the page allocator): both tables go back.
        assert!(shrink_all_shrinkers() >= 2);
        assert_eq!(counts().pagetable_pages, tables0);
        assert_eq!(free_pages(), free0, "every page back after the shrinker");
    }
);
