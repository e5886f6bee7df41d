//! In-kernel tests of vm_map_ram / vm_unmap_ram / vm_unmap_aliases (mm/vmalloc.c, 6.12): per-CPU
//! vmap blocks, the large-mapping path, /proc/vmallocinfo's "vm_map_ram" lines, the refusals,
//! and several CPUs mapping and unmapping at once.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use ::mm::vmalloc::{AreaKind, VmMapRamError, VmallocError, VMAP_BBMAP_BITS, VMAP_BLOCK_SIZE};
use ::mm::{GfpFlags, Pfn, PAGE_SIZE};

use crate::arch::smp_call::{smp_call_on_cpus, CpuMask};
use crate::mm::page_alloc::Pages;
use crate::mm::vmalloc::*;

const P: usize = PAGE_SIZE;

/// Free pages and vmalloc's counts, with the blocks purged and the empty slabs given back (the
/// blocks' bookkeeping lives in kmalloc memory).
fn state() -> (u64, VmallocCounts) {
    purge_vmap_blocks();
    crate::mm::slab::shrink_all();
    super::vmalloc_state()
}

/// `n` order-0 pages, each filled with its index and `tag` in every word.
fn pages(n: usize, tag: u64) -> (Vec<Pages>, Vec<Pfn>) {
    let dm = crate::mm::direct_map();
    let owned: Vec<Pages> = (0..n).map(|_| Pages::alloc(GfpFlags::GFP_KERNEL, 0).unwrap()).collect();
    let pfns: Vec<Pfn> = owned.iter().map(|p| Pfn(p.frame().start_address().as_u64() / P as u64)).collect();
    for (i, &pfn) in pfns.iter().enumerate() {
        let w = dm.pfn_to_virt(pfn).cast::<u64>();
        for k in 0..P / 8 {
            // SAFETY: a page this function just allocated, through the direct map.
            unsafe { w.add(k).write(tag << 32 | i as u64) };
        }
    }
    (owned, pfns)
}

/// Checks that every page of the mapping at `va` reads what `pages` wrote.
fn check_mapping(va: *const u8, n: usize, tag: u64) {
    for i in 0..n {
        // SAFETY: `va` maps `n` pages (vm_map_ram returned it), each readable.
        let got = unsafe { va.add(i * P + P - 8).cast::<u64>().read_volatile() };
        assert_eq!(got, tag << 32 | i as u64, "page {i} of the mapping at {va:p}");
    }
}

fn ram<T>(e: VmMapRamError) -> Result<T, VmError> {
    Err(VmError::Vmalloc(VmallocError::VmMapRam(e)))
}

fn vmallocinfo() -> String {
    let mut s = String::new();
    write_vmallocinfo(&mut s).unwrap();
    s
}

crate::ktest!(
    // mm/vmalloc.c (6.12): vm_map_ram() of count <= VMAP_MAX_ALLOC goes to vb_alloc(), which
    // takes 2^get_order(size) pages at pages_off = VMAP_BBMAP_BITS - vb->free of this CPU's block,
    // or new_vmap_block(): alloc_vmap_area(VMAP_BLOCK_SIZE, VMAP_BLOCK_SIZE, ..) with the first
    // chunk at offset 0. vmalloc_info_show() prints the block (va->vm == NULL, VMAP_RAM) as
    // "0x%pK-0x%pK %7ld vm_map_ram". vb_free() unmaps; the block is freed when wholly dirty or
    // purged.
    #[needs_memory]
    fn vm_map_ram_carves_power_of_two_chunks_from_a_per_cpu_block() {
        let before = state();
        let (owned, pfns) = pages(4, 0xa1);
        // SAFETY: this test owns the pages until after vm_unmap_ram.
        let a = unsafe { vm_map_ram(&pfns[..3], NUMA_NO_NODE) }.unwrap();
        let start = a.as_ptr() as usize;
        assert_eq!(start % VMAP_BLOCK_SIZE, 0, "a new block, first chunk at offset 0");
        check_mapping(a.as_ptr(), 3, 0xa1);
        // SAFETY: as above.
        let b = unsafe { vm_map_ram(&pfns[3..], 0) }.unwrap();
        assert_eq!(b.as_ptr() as usize, start + 4 * P, "3 pages took an order-2 chunk");
        assert_eq!(vmalloc_to_pfn(b.as_ptr()), Some(pfns[3]));
        let (area, _) = find_vm_area(a.as_ptr()).unwrap();
        assert_eq!((area.kind, area.start, area.size), (AreaKind::VmapBlock, start, VMAP_BLOCK_SIZE));
        let want = alloc::format!("{start:#018x}-{:#018x} 4194304 vm_map_ram", start + VMAP_BLOCK_SIZE);
        let info = vmallocinfo();
        assert!(info.lines().any(|l| l == want), "no {want:?} in\n{info}");
        assert_eq!(nr_vmap_blocks(), 1);
        vm_unmap_ram(a.as_ptr(), 3).unwrap();
        assert_eq!(vmalloc_to_pfn(a.as_ptr()), None, "vb_free cleared the PTEs");
        vm_unmap_ram(b.as_ptr(), 1).unwrap();
        // Nothing live, 1019 of 1024 pages free: vm_unmap_aliases flushes but does not purge it
        // (VMAP_PURGE_THRESHOLD); the forced purge frees it.
        vm_unmap_aliases();
        assert_eq!(nr_vmap_blocks(), 1);
        assert_eq!(purge_vmap_blocks(), 1);
        drop((owned, pfns, info, want));
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // vb_free(): "if (vb->dirty == VMAP_BBMAP_BITS) free_vmap_block(vb)": a block whose every
    // page was handed out and unmapped is freed by the last vm_unmap_ram, without a purge.
    #[needs_memory]
    fn a_wholly_dirty_block_is_freed_by_its_last_unmap() {
        let before = state();
        let (owned, pfns) = pages(64, 0xb2);
        let freed = BLOCKS_FREED.load(SeqCst);
        let mut live = Vec::new();
        for _ in 0..VMAP_BBMAP_BITS / 64 {
            // SAFETY: this test owns the pages until after vm_unmap_ram.
            live.push(unsafe { vm_map_ram(&pfns, NUMA_NO_NODE) }.unwrap());
        }
        let first = live[0].as_ptr() as usize;
        assert!(live.iter().enumerate().all(|(i, a)| a.as_ptr() as usize == first + i * 64 * P), "one block");
        check_mapping(live[7].as_ptr(), 64, 0xb2);
        for a in &live {
            vm_unmap_ram(a.as_ptr(), 64).unwrap();
        }
        assert_eq!(BLOCKS_FREED.load(SeqCst), freed + 1);
        assert!(find_vm_area(first as *const u8).is_none(), "the block's area is released");
        drop((owned, pfns, live));
        assert_eq!(state(), before);
    }
);

crate::ktest!(
    // vm_map_ram() of count > VMAP_MAX_ALLOC: alloc_vmap_area(size, PAGE_SIZE, ..., VMAP_RAM)
    // (no guard page), printed "vm_map_ram"; vm_unmap_ram() then find_unlink_vmap_area() and
    // free_unmap_vmap_area(). The count must be the one mapped (6.12: "cannot unmap partial").
    #[needs_memory]
    fn large_vm_map_ram_gets_its_own_area_without_guard() {
        let (owned, pfns) = pages(65, 0xc3);
        // One round first: the area trees' node arenas (kmalloc) grow once and stay.
        // SAFETY: this test owns the pages until after vm_unmap_ram.
        vm_unmap_ram(unsafe { vm_map_ram(&pfns, NUMA_NO_NODE) }.unwrap().as_ptr(), 65).unwrap();
        let before = state();
        // SAFETY: this test owns the pages until after vm_unmap_ram.
        let a = unsafe { vm_map_ram(&pfns, NUMA_NO_NODE) }.unwrap();
        let start = a.as_ptr() as usize;
        check_mapping(a.as_ptr(), 65, 0xc3);
        let (area, _) = find_vm_area(a.as_ptr()).unwrap();
        assert_eq!((area.kind, area.size, area.nr_pages), (AreaKind::VmMapRam, 65 * P, 65));
        let want = alloc::format!("{start:#018x}-{:#018x}  266240 vm_map_ram", start + 65 * P);
        let info = vmallocinfo();
        assert!(info.lines().any(|l| l == want), "no {want:?} in\n{info}");
        for wrong in [64, 66] {
            assert_eq!(
                vm_unmap_ram(a.as_ptr(), wrong),
                Err(VmError::Vmalloc(VmallocError::VmMapRam(VmMapRamError::WrongCount {
                    addr: start,
                    mapped: 65,
                    given: wrong
                })))
            );
        }
        assert!(matches!(
            vunmap(a.as_ptr()),
            Err(VmError::Vmalloc(VmallocError::WrongKind { kind: AreaKind::VmMapRam, .. }))
        ));
        check_mapping(a.as_ptr(), 65, 0xc3);
        vm_unmap_ram(a.as_ptr(), 65).unwrap();
        assert!(find_vm_area(a.as_ptr()).is_none());
        drop((info, want));
        assert_eq!(state(), before);
        drop((owned, pfns));
    }
);

crate::ktest!(
    // vb_alloc(): WARN_ON(size == 0) -> NULL; vmap_pages_pte_range(): WARN_ON(!pfn_valid) ->
    // -EINVAL. 6.12's vm_unmap_ram()/vb_free() BUG or corrupt the block on a bad address or
    // count; here each is refused by name, with an error line naming the caller, and the live
    // mappings stay intact.
    #[needs_memory]
    fn vm_map_ram_and_vm_unmap_ram_refuse_bad_arguments() {
        let before = state();
        let (owned, pfns) = pages(8, 0xd4);
        let (_, lapic) = crate::arch::apic::mmio();
        let lapic = Pfn(lapic / P as u64);
        // SAFETY: refused.
        unsafe {
            assert_eq!(vm_map_ram(&[], NUMA_NO_NODE), ram(VmMapRamError::ZeroCount));
            assert_eq!(vm_map_ram(&pfns, 1), ram(VmMapRamError::BadNode { node: 1 }));
            assert_eq!(
                vm_map_ram(&[pfns[0], lapic], NUMA_NO_NODE),
                ram(VmMapRamError::NotPfnValid { index: 1, pfn: lapic.0 })
            );
        }
        // SAFETY: this test owns the pages until after vm_unmap_ram.
        let a = unsafe { vm_map_ram(&pfns[..5], NUMA_NO_NODE) }.unwrap();
        let s = a.as_ptr() as usize;
        // SAFETY: as above.
        let b = unsafe { vm_map_ram(&pfns[5..], NUMA_NO_NODE) }.unwrap();
        assert_eq!(vm_unmap_ram(a.as_ptr(), 0), ram(VmMapRamError::ZeroCount));
        assert_eq!(
            vm_unmap_ram(a.as_ptr(), 4),
            ram(VmMapRamError::WrongCount { addr: s, mapped: 5, given: 4 })
        );
        assert_eq!(
            vm_unmap_ram(a.as_ptr(), 8),
            ram(VmMapRamError::WrongCount { addr: s, mapped: 5, given: 8 })
        );
        assert_eq!(
            vm_unmap_ram((s + 2 * P) as *const u8, 1),
            ram(VmMapRamError::Interior { addr: s + 2 * P, start: s, count: 5 })
        );
        assert_eq!(vm_unmap_ram((s + 1) as *const u8, 5), ram(VmMapRamError::Unaligned { addr: s + 1 }));
        let past = b.as_ptr() as usize + 4 * P;
        assert_eq!(vm_unmap_ram(past as *const u8, 1), ram(VmMapRamError::NeverMapped { addr: past }));
        let v = vmalloc(P).unwrap();
        assert!(matches!(
            vm_unmap_ram(v.as_ptr(), 1),
            Err(VmError::Vmalloc(VmallocError::WrongKind { kind: AreaKind::Vmalloc, .. }))
        ));
        let k = crate::mm::slab::kmalloc(64, GfpFlags::GFP_KERNEL).unwrap();
        assert!(matches!(vm_unmap_ram(k.as_ptr(), 1), Err(VmError::NotVmalloc { direct_map: true, .. })));
        check_mapping(a.as_ptr(), 5, 0xd4);
        vm_unmap_ram(a.as_ptr(), 5).unwrap();
        assert_eq!(vm_unmap_ram(a.as_ptr(), 5), ram(VmMapRamError::AlreadyUnmapped { addr: s }));
        vm_unmap_ram(b.as_ptr(), 3).unwrap();
        assert_eq!(purge_vmap_blocks(), 1);
        assert_eq!(
            vm_unmap_ram(b.as_ptr(), 3),
            ram(VmMapRamError::NotVmMapRam { addr: b.as_ptr() as usize })
        );
        crate::mm::slab::kfree(k.as_ptr()).unwrap();
        vfree(v.as_ptr()).unwrap();
        drop((owned, pfns));
        assert_eq!(state(), before);
    }
);

/// Rounds each CPU runs in the concurrent test.
const ROUNDS: usize = 300;

crate::ktest!(
    // Several CPUs at once (checked at --smp 4): each maps its own pages with vm_map_ram in
    // sizes 1..=70 (blocks of its own queue, 6.12's raw_cpu_ptr(&vmap_block_queue), and the
    // large path), reads them back through the mapping, unmaps, and calls vm_unmap_aliases now
    // and then; blocks fill, go wholly dirty and are freed (with a shootdown) while the other
    // CPUs work. No mapping may read another's pages and everything returns to the start.
    #[needs_memory]
    fn vm_map_ram_on_every_cpu_at_once_maps_and_unmaps_its_own_pages() {
        let before = state();
        let cpus = ::mm::num_online_cpus();
        let errors = AtomicUsize::new(0);
        let created = BLOCKS_CREATED.load(SeqCst);
        smp_call_on_cpus(CpuMask::online(), &|cpu| {
            let tag = 0x100 + cpu as u64;
            let (_owned, pfns) = pages(70, tag);
            for round in 0..ROUNDS {
                let n = 1 + (round * 7 + cpu) % 70;
                // SAFETY: this CPU owns the pages until after vm_unmap_ram.
                let Ok(a) = (unsafe { vm_map_ram(&pfns[..n], NUMA_NO_NODE) }) else {
                    errors.fetch_add(1, SeqCst);
                    continue;
                };
                for i in 0..n {
                    // SAFETY: `a` maps `n` pages.
                    let got = unsafe { a.as_ptr().add(i * P).cast::<u64>().read_volatile() };
                    if got != tag << 32 | i as u64 {
                        errors.fetch_add(1, SeqCst);
                    }
                }
                if vm_unmap_ram(a.as_ptr(), n).is_err() {
                    errors.fetch_add(1, SeqCst);
                }
                if round % 50 == 49 {
                    vm_unmap_aliases();
                }
            }
        })
        .unwrap();
        crate::info!(
            "vm_map_ram: {cpus} CPUs x {ROUNDS} maps, {} blocks created, {} live after",
            BLOCKS_CREATED.load(SeqCst) - created,
            nr_vmap_blocks()
        );
        assert_eq!(errors.load(SeqCst), 0, "a mapping failed or read the wrong pages");
        vm_unmap_aliases();
        assert_eq!(state(), before);
        assert_eq!(nr_vmap_blocks(), 0);
    }
);
