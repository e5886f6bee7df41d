//! In-kernel tests of `/proc/meminfo`'s kernel-side figures against what the machine really
//! holds: the `DirectMap*` counts against an independent translation of the direct map, and
//! `KernelStack`/`Percpu` against the stacks and per-CPU blocks that exist.

use alloc::string::String;

use x86_64::structures::paging::mapper::{MappedFrame, TranslateResult};
use x86_64::structures::paging::{OffsetPageTable, PageTable, Translate};
use x86_64::VirtAddr;

use crate::mm::direct_pages::{direct_gbpages, direct_pages_count};
use crate::mm::page_alloc::phys_to_virt;
use crate::mm::report::{kernel_stack_bytes, meminfo, percpu_pages};
use crate::mm::{direct_map_base, firmware_map};

fn with_mapper<R>(f: impl FnOnce(&OffsetPageTable<'_>) -> R) -> R {
    let (pml4, _) = x86_64::registers::control::Cr3::read();
    let table = phys_to_virt(pml4.start_address()).as_mut_ptr::<PageTable>();
    // SAFETY: the live PML4 through the direct map, only read here (translate writes nothing).
    let mapper = unsafe { OffsetPageTable::new(&mut *table, VirtAddr::new(direct_map_base())) };
    f(&mapper)
}

/// The value of meminfo line `label` (`None`: no such line).
fn meminfo_kb(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split_once(':').is_some_and(|(n, _)| n == label))?;
    Some(line.split_whitespace().nth(1).unwrap().parse().unwrap())
}

fn meminfo_text() -> String {
    let mut s = String::new();
    ::mm::stats::write_meminfo(&mut s, &meminfo()).unwrap();
    s
}

crate::ktest!(
    // arch/x86/mm/pat/set_memory.c, arch_report_meminfo(): DirectMap4k/2M/1G are the bytes of
    // the direct map mapped by each page size (direct_pages_count[PG_LEVEL_*]); DirectMap1G
    // only with direct_gbpages (arch/x86/mm/init.c, probe_page_size_mask()). Checked against
    // the x86_64 crate's translation of every page of the direct map, and against what the
    // bootloader maps: [0, max(end of the memory map, 4 GiB)) rounded up to 2 MiB
    // (bootloader-x86_64-common 0.11, set_up_mappings / max_phys_addr).
    fn meminfo_direct_map_counts_what_the_page_tables_map() {
        let c = direct_pages_count();
        assert_eq!(c.foreign_bytes, 0, "every leaf of the direct map maps virt - base: {c:?}");
        let base = direct_map_base();
        let max_end = firmware_map().regions().iter().map(|r| r.end).max().unwrap();
        let mapped = max_end.max(4 << 30).next_multiple_of(2 << 20);
        assert_eq!(c.total(), mapped, "{c:?}");

        // Independent walk: translate from base on, one mapping at a time, by its page size.
        let (mut b4k, mut b2m, mut b1g) = (0u64, 0u64, 0u64);
        with_mapper(|m| {
            let mut va = base;
            while va < base + mapped {
                let TranslateResult::Mapped { frame, offset, .. } = m.translate(VirtAddr::new(va)) else {
                    panic!("direct map hole at {va:#x}");
                };
                assert_eq!(offset, 0, "mappings are aligned");
                assert_eq!(frame.start_address().as_u64(), va - base);
                let size = match frame {
                    MappedFrame::Size4KiB(_) => {
                        b4k += 4096;
                        4096
                    }
                    MappedFrame::Size2MiB(_) => {
                        b2m += 2 << 20;
                        2 << 20
                    }
                    MappedFrame::Size1GiB(_) => {
                        b1g += 1 << 30;
                        1 << 30
                    }
                };
                va += size;
            }
            if base + mapped < c.walked.1 {
                assert!(
                    matches!(m.translate(VirtAddr::new(base + mapped)), TranslateResult::NotMapped),
                    "nothing mapped past the direct map in its PML4 entries"
                );
            }
        });
        assert_eq!((c.bytes_4k, c.bytes_2m, c.bytes_1g), (b4k, b2m, b1g));

        let text = meminfo_text();
        assert_eq!(meminfo_kb(&text, "DirectMap4k"), Some(b4k >> 10));
        assert_eq!(meminfo_kb(&text, "DirectMap2M"), Some(b2m >> 10));
        assert_eq!(meminfo_kb(&text, "DirectMap1G"), direct_gbpages().then_some(b1g >> 10));
        // The runner's QEMU CPU is `qemu64,+pdpe1gb`: 6.12 would print DirectMap1G there.
        assert!(direct_gbpages(), "the runner's CPU has PDPE1GB");
        assert!(text.ends_with(&alloc::format!("DirectMap1G:    {:>8} kB\n", b1g >> 10)), "{text}");
    }
);

crate::ktest!(
    // fs/proc/meminfo.c: KernelStack is NR_KERNEL_STACK_KB, which kernel/fork.c
    // account_kernel_stack() grows by each task stack's pages (THREAD_SIZE, no guard page).
    // Here: the boot stack the bootloader mapped, and each AP's vmalloc'd stack. Percpu is
    // mm/percpu.c pcpu_nr_pages(): the populated pages of the per-CPU units.
    // KReclaimable = SReclaimable + NR_KERNEL_MISC_RECLAIMABLE (0 here).
    fn meminfo_kernel_stack_and_percpu_are_the_real_sizes() {
        // Boot stack: every page of [bottom, top) mapped, the guard page below not.
        let (bottom, top) = crate::arch::fault::boot_stack();
        assert!(top > bottom && (top - bottom) % 4096 == 0);
        with_mapper(|m| {
            for va in (bottom..top).step_by(4096) {
                assert!(m.translate_addr(VirtAddr::new(va)).is_some(), "boot stack page {va:#x}");
            }
            assert!(m.translate_addr(VirtAddr::new(bottom - 4096)).is_none(), "guard page");
        });
        // AP stacks: the vmalloc areas smp.rs allocated, their pages (the guard excluded).
        let mut info = String::new();
        crate::mm::vmalloc::write_vmallocinfo(&mut info).unwrap();
        let ap_pages: u64 = info
            .lines()
            .filter(|l| l.contains(" kernel/src/arch/smp.rs:"))
            .map(|l| {
                let p = l.split_whitespace().find_map(|w| w.strip_prefix("pages=")).expect("pages=");
                p.parse::<u64>().unwrap()
            })
            .sum();
        let aps = (::mm::num_online_cpus() - 1) as u64;
        assert_eq!(ap_pages * 4096, aps * crate::arch::smp::AP_STACK_SIZE as u64, "{info}");
        assert_eq!(kernel_stack_bytes(), (top - bottom) + ap_pages * 4096);

        // Per-CPU areas: the pages holding every CPU's block.
        let (start, end) = crate::arch::percpu::areas();
        for cpu in 0..::mm::NR_CPUS {
            let p = crate::arch::percpu::per_cpu(cpu) as *const _ as u64;
            assert!(start <= p && p < end, "CPU {cpu}'s block in the areas");
        }
        let pages = percpu_pages();
        assert!(pages * 4096 >= end - start && (pages - 1) * 4096 < end - start + 4096);

        let text = meminfo_text();
        assert_eq!(meminfo_kb(&text, "KernelStack"), Some(kernel_stack_bytes() >> 10));
        assert_eq!(meminfo_kb(&text, "Percpu"), Some(pages * 4));
        assert_eq!(meminfo_kb(&text, "KReclaimable"), meminfo_kb(&text, "SReclaimable"));
    }
);
