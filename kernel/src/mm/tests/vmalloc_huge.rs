//! In-kernel tests of vmalloc_huge (Linux 6.12.19 mm/vmalloc.c: vmalloc_huge_noprof ->
//! __vmalloc_node_range_noprof with VM_ALLOW_HUGE_VMAP, __vmalloc_area_node,
//! vm_area_alloc_pages, vmap_try_huge_pmd; arch/x86/mm/pgtable.c pmd_set_huge,
//! pmd_free_pte_page) on the live page tables.

use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use ::mm::page::PageState;
use ::mm::vmalloc::{VmFlags, VmallocError, VmallocInfoLine, VmapError, PMD_SIZE};
use ::mm::{GfpFlags, PAGE_SIZE};
use x86_64::structures::paging::PageTableFlags;
use x86_64::VirtAddr;

use crate::mm::fault_inject::{self, set};
use crate::mm::vmalloc::tlb::{FULL_FLUSHES, SINGLE_PAGE_FLUSHES};
use crate::mm::vmalloc::*;

const P: usize = PAGE_SIZE;
const M2: usize = PMD_SIZE;
const KERNEL: GfpFlags = GfpFlags::GFP_KERNEL;

fn state() -> (u64, VmallocCounts) {
    super::vmalloc_state()
}

/// Whether the page at `addr` is mapped through a 2 MiB PMD entry (the PS bit).
fn is_huge(addr: usize) -> bool {
    let (_, flags) = with_space(|s| s.tables.lookup_pte(VirtAddr::new(addr as u64))).expect("mapped");
    flags.contains(PageTableFlags::HUGE_PAGE)
}

/// Puts the fault-injection attributes back as the boot command line had them.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        fault_inject::reset_to_boot();
    }
}

crate::ktest!(
    // 6.12.19 __vmalloc_node_range_noprof: size >= PMD_SIZE and arch_vmap_pmd_supported (PSE)
    // -> shift = PMD_SHIFT, align = max(real_align, PMD_SIZE), the area rounded to 2 MiB plus
    // the guard; vm_area_alloc_pages split_page()s each order-9 block (vmalloc_to_page gives
    // independent order-0 pages); area->nr_pages counts small pages (vmallocinfo `pages=`,
    // show_numa_info, VmallocUsed); vfree frees every page; the unmap's flush is a full one
    // (flush_tlb_kernel_range above tlb_single_page_flush_ceiling).
    #[needs_memory]
    fn vmalloc_huge_maps_2mib_pmds_of_split_blocks_and_vfree_returns_everything() {
        let before = state();
        let p = vmalloc_huge(3 * M2 / 2, KERNEL | GfpFlags::__GFP_ZERO).unwrap();
        let start = p.as_ptr() as usize;
        assert_eq!(start % M2, 0, "2 MiB aligned");
        let (area, _) = find_vm_area(p.as_ptr()).unwrap();
        assert_eq!((area.size, area.nr_pages), (2 * M2 + P, 1024));
        assert_eq!(area.flags, VmFlags::VM_ALLOC | VmFlags::VM_ALLOW_HUGE_VMAP);
        let first = vmalloc_to_pfn(p.as_ptr()).unwrap();
        for i in 0..1024 {
            let a = start + i * P;
            assert!(is_huge(a), "page {i} through a PMD");
            let pfn = vmalloc_to_pfn(a as *const u8).unwrap();
            let head = vmalloc_to_pfn((start + i / 512 * M2) as *const u8).unwrap();
            assert_eq!(pfn, head.add((i % 512) as u64), "one physically contiguous block per 2 MiB");
            assert_eq!(head.phys().as_u64() % M2 as u64, 0);
            let page = vmalloc_to_page(a as *const u8).unwrap();
            assert_eq!((page.state(), page.order()), (PageState::Vmalloc, 0), "page {i} split");
            assert_eq!(page.private.load(SeqCst), start);
        }
        assert_eq!(first.phys().as_u64() % M2 as u64, 0);
        // SAFETY: the whole 4 MiB is mapped and the test's.
        let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), 2 * M2) };
        assert!(bytes.iter().all(|&b| b == 0), "__GFP_ZERO");
        // SAFETY: as above.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 0x3c, 2 * M2) };
        assert!(bytes.iter().all(|&b| b == 0x3c));
        {
            // On the stack: a heap string could grow a slab and move the free-page count.
            let mut buf = [0u8; 160];
            let mut w = crate::mm::memory_map::BufWriter { buf: &mut buf, len: 0 };
            core::fmt::Write::write_fmt(&mut w, format_args!("{}", VmallocInfoLine(&area))).unwrap();
            let len = w.len;
            let line = core::str::from_utf8(&buf[..len]).unwrap();
            assert!(line.ends_with(" pages=1024 vmalloc N0=1024"), "{line}");
            assert!(line.contains("kernel/src/mm/tests/vmalloc_huge.rs:"), "the caller: {line}");
        }
        let mut info = ::mm::stats::MemInfo::default();
        fill_meminfo(&mut info);
        let used = info.vmalloc_used_kb.unwrap();
        assert_eq!(counts().vmalloc_pages, before.1.vmalloc_pages + 1024);
        let full = FULL_FLUSHES.load(SeqCst);
        vfree(p.as_ptr()).unwrap();
        // vfree parks the range (4 MiB is below lazy_max_pages); the purge flushes it.
        assert_eq!(FULL_FLUSHES.load(SeqCst), full, "vfree itself flushes nothing");
        assert!(purge_vmap_area_lazy() >= 1);
        assert!(FULL_FLUSHES.load(SeqCst) > full, "1024 pages: a full flush on every CPU");
        let mut info = ::mm::stats::MemInfo::default();
        fill_meminfo(&mut info);
        assert_eq!(used - info.vmalloc_used_kb.unwrap(), 4096, "VmallocUsed counts the rounded 4 MiB");
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // 6.12.19 __vmalloc_node_range_noprof: below PMD_SIZE shift stays PAGE_SHIFT
    // (arch_vmap_pte_supported_shift is PAGE_SHIFT on x86) and align = real_align: vmalloc.
    #[needs_memory]
    fn vmalloc_huge_below_2mib_is_plain_vmalloc() {
        let before = state();
        let p = vmalloc_huge(M2 - P, KERNEL).unwrap();
        let (area, _) = find_vm_area(p.as_ptr()).unwrap();
        assert_eq!((area.size, area.nr_pages), (M2, 511));
        assert_eq!(area.flags, VmFlags::VM_ALLOC | VmFlags::VM_ALLOW_HUGE_VMAP);
        assert!((0..511).all(|i| !is_huge(p.as_ptr() as usize + i * P)));
        vfree(p.as_ptr()).unwrap();
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // 6.12.19 __vmalloc_node_range_noprof `fail:` (shift > PAGE_SHIFT: retry with PAGE_SHIFT,
    // real_align, real_size) after __vmalloc_area_node's vm_area_alloc_pages fell short of
    // order-9 blocks (its vfree gives back the blocks it got). fail_page_alloc with min-order 9
    // fails only the order-9 blocks; interval 2 lets the first block through, so a mapped
    // block is unwound too. Not `#[needs_memory]` (that suspends injection): the boot's
    // injection is reset instead.
    fn vmalloc_huge_falls_back_to_4k_pages_when_order9_blocks_fail() {
        let _restore = Restore;
        fault_inject::reset();
        let before = state();
        for interval in ["1", "2"] {
            for (a, v) in [
                ("ignore-gfp-wait", "N"),
                ("min-order", "9"),
                ("verbose", "0"),
                ("times", "-1"),
                ("interval", interval),
                ("probability", "100"),
            ] {
                set("fail_page_alloc", a, v).unwrap();
            }
            let injected = fault_inject::injected().1;
            let p = vmalloc_huge(2 * M2, KERNEL).unwrap();
            assert!(fault_inject::injected().1 > injected, "an order-9 block was failed");
            let (area, _) = find_vm_area(p.as_ptr()).unwrap();
            assert_eq!((area.size, area.nr_pages), (2 * M2 + P, 1024), "the size asked for");
            assert!((0..1024).all(|i| !is_huge(p.as_ptr() as usize + i * P)), "4 KiB pages");
            // SAFETY: the mapped 4 MiB of the test's area.
            unsafe { core::ptr::write_bytes(p.as_ptr(), 0x77, 2 * M2) };
            vfree(p.as_ptr()).unwrap();
            set("fail_page_alloc", "probability", "0").unwrap();
            assert_eq!(state(), before, "interval {interval}: nothing lost");
        }
    }
);

crate::ktest!(
    // arch/x86/mm/pgtable.c (6.12.19) pmd_free_pte_page, called by vmap_try_huge_pmd when the
    // PMD is present: the page table a 4 KiB vmalloc left there (vfree keeps tables) is
    // unlinked, flush_tlb_kernel_range(addr, addr + PAGE_SIZE - 1) runs on every CPU, then the
    // table is freed and the PMD maps 2 MiB.
    #[needs_memory]
    fn vmalloc_huge_frees_the_empty_page_table_left_under_its_pmd() {
        let before = state();
        // The same area shape as vmalloc_huge(2 MiB): 2 MiB aligned, 2 MiB + guard.
        let small = __vmalloc_node(M2, M2, KERNEL).unwrap();
        assert!(!is_huge(small.as_ptr() as usize));
        vfree(small.as_ptr()).unwrap();
        let tables = counts().pagetable_pages;
        let single = SINGLE_PAGE_FLUSHES.load(SeqCst);
        let p = vmalloc_huge(M2, KERNEL).unwrap();
        assert_eq!(p, small, "lowest fit: the same range");
        assert!(is_huge(p.as_ptr() as usize));
        assert_eq!(counts().pagetable_pages, tables - 1, "the PT under the PMD was freed");
        assert!(SINGLE_PAGE_FLUSHES.load(SeqCst) > single, "flushed before the table was freed");
        vfree(p.as_ptr()).unwrap();
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // Bad calls are vmalloc's: size 0 (6.12 WARN_ON_ONCE(!size)), more than totalram_pages
    // ("exceeds total pages"); vfree of a huge area's interior pointer is refused and changes
    // nothing.
    #[needs_memory]
    fn vmalloc_huge_refuses_bad_sizes_and_vfree_of_its_interior() {
        let before = state();
        let nowarn = KERNEL | GfpFlags::__GFP_NOWARN;
        assert_eq!(vmalloc_huge(0, nowarn), Err(VmError::Vmalloc(VmallocError::Area(VmapError::ZeroSize))));
        assert!(matches!(vmalloc_huge(usize::MAX - M2, nowarn), Err(VmError::MoreThanRam { .. })));
        let p = vmalloc_huge(M2, KERNEL).unwrap();
        // SAFETY: pointer arithmetic inside the area, not dereferenced.
        let inner = unsafe { p.as_ptr().add(M2 / 2) };
        assert!(matches!(
            vfree(inner),
            Err(VmError::Vmalloc(VmallocError::Area(VmapError::Interior { .. })))
        ));
        assert!(is_huge(inner as usize), "still mapped");
        vfree(p.as_ptr()).unwrap();
        assert_eq!(state(), before);
    }
);

static IRQ_AREA: AtomicUsize = AtomicUsize::new(0);
static IRQ_STEP: AtomicUsize = AtomicUsize::new(0);
static IRQ_HUGE: AtomicUsize = AtomicUsize::new(0);

fn timer_huge() {
    if IRQ_STEP.load(SeqCst) != 0 {
        return;
    }
    let refused = matches!(vmalloc_huge(M2, KERNEL), Err(VmError::InInterrupt { .. }));
    IRQ_HUGE.store(refused as usize + 1, SeqCst);
    let queued = vfree(IRQ_AREA.load(SeqCst) as *const u8).is_ok();
    IRQ_STEP.store(queued as usize + 1, SeqCst);
}

crate::ktest!(
    // 6.12.19: vmalloc_huge in interrupt context BUG()s (__get_vm_area_node's
    // BUG_ON(in_interrupt())): refused here; vfree of a huge area there is vfree_atomic,
    // freed later in process context.
    #[needs_memory]
    fn vmalloc_huge_is_refused_in_interrupts_and_its_vfree_is_deferred() {
        let before = state();
        let p = vmalloc_huge(M2, KERNEL).unwrap();
        IRQ_AREA.store(p.as_ptr() as usize, SeqCst);
        IRQ_STEP.store(0, SeqCst);
        crate::arch::interrupts::set_timer_handler(Some(timer_huge));
        crate::arch::interrupts::start_timer(1000).unwrap();
        x86_64::instructions::interrupts::enable();
        let start = crate::arch::interrupts::ticks();
        while IRQ_STEP.load(SeqCst) == 0 && crate::arch::interrupts::ticks() < start + 1000 {
            x86_64::instructions::hlt();
        }
        crate::arch::interrupts::stop_timer();
        crate::arch::interrupts::set_timer_handler(None);
        assert_eq!(IRQ_HUGE.load(SeqCst), 2, "vmalloc_huge in interrupt context is refused");
        assert_eq!(IRQ_STEP.load(SeqCst), 2, "vfree of the huge area is queued");
        assert_eq!(vfree_drain(), 1);
        assert!(find_vm_area(p.as_ptr()).is_none());
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // mm/util.c (6.12.19) __kvmalloc_node_noprof: "kvmalloc() can always use
    // VM_ALLOW_HUGE_VMAP": its vmalloc fallback is __vmalloc_node_range(size, 1, ...,
    // VM_ALLOW_HUGE_VMAP, ...), so from 2 MiB up it is mapped with PMDs.
    #[needs_memory]
    fn kvmalloc_above_2mib_gets_huge_mappings_and_kvfree_returns_them() {
        let before = state();
        let p = kvmalloc(4 * M2 + 100, KERNEL).unwrap();
        assert!(is_vmalloc_addr(p.as_ptr()), "above KMALLOC_MAX_SIZE: vmalloc");
        let (area, _) = find_vm_area(p.as_ptr()).unwrap();
        assert_eq!((area.size, area.nr_pages), (5 * M2 + P, 5 * 512), "rounded to 2 MiB");
        assert!(area.flags.contains(VmFlags::VM_ALLOW_HUGE_VMAP));
        assert!((0..5).all(|i| is_huge(p.as_ptr() as usize + i * M2)));
        kvfree(p.as_ptr()).unwrap();
        assert_eq!(state(), before);
    }
);
