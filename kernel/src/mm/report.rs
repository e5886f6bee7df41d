//! What the memory subsystem tells the reader: the boot summary, `/proc`-format statistics and
//! the description of an address for fault reports.

use core::fmt::{self, Write};

use ::mm::buddy::Node;
use ::mm::memblock::MemBlock;
use ::mm::page::PageState;
use ::mm::Pfn;
use x86_64::VirtAddr;

use super::layout::{VMALLOC_END, VMALLOC_START};
use super::memory_map::Size;
use crate::log::Console;

/// The holes part of the boot log's `vmemmap:` line (printed before the heap exists).
struct VmemmapHoles(::mm::mem_map::VmemmapUsage);

impl fmt::Display for VmemmapHoles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.hole_pmds, self.0.hole_ptes) {
            (0, 0) => f.write_str("none"),
            (pmds, ptes) => write!(f, "{pmds} PMDs + {ptes} PTEs read-only to 1 shared page"),
        }
    }
}

/// Prints what bring-up built: memblock reservations, zones, page descriptors, totals.
pub fn print_boot_summary(memblock: &MemBlock, node: &Node) {
    kprintln!("memblock: boot-time allocations (carved out of usable RAM before the buddy allocator):");
    for r in memblock.reservations() {
        kprintln!("  [mem {:#018x}-{:#018x}] {:>10}  {}", r.start, r.end - 1, Size(r.size()), r.label);
    }
    kprintln!("memblock: {} reserved in all", Size(memblock.reserved_bytes()));

    // Linux's "Zone ranges:" block from free_area_init.
    kprintln!("Zone ranges:");
    for zone in node.zones() {
        if zone.is_populated() {
            let start = zone.zone_start_pfn() << 12;
            let end = (zone.zone_start_pfn() + zone.spanned_pages()) << 12;
            kprintln!("  {:<8} [mem {:#018x}-{:#018x}]", zone.name(), start, end - 1);
        } else {
            kprintln!("  {:<8} empty", zone.name());
        }
    }
    let map = node.mem_map();
    kprintln!(
        "mem_map: {} page descriptors x {} bytes = {} in {} of {} sections of {} (vmemmap), page tables {}",
        map.nr_pages(),
        map.descriptor_size(),
        Size(map.descriptor_bytes()),
        map.nr_present_sections(),
        map.nr_sections(),
        Size(map.pages_per_section() << 12),
        Size(map.table_bytes())
    );
    let u = map.vmemmap_usage();
    let base = map.vmemmap_base() as u64;
    kprintln!(
        "vmemmap: [{:#x}, {:#x}) for pfns below {:#x}: {} x 2 MiB + {} x 4 KiB descriptor pages, \
         {} page-table pages; sections without RAM: {}",
        base,
        base + map.end_pfn() * map.descriptor_size() as u64,
        map.end_pfn(),
        u.pmd_mappings,
        u.pte_mappings,
        u.page_tables,
        VmemmapHoles(u)
    );
    for zone in node.zones().iter().filter(|z| z.is_populated()) {
        kprintln!(
            "zone {:<6}: managed {:>8} pages ({:>10}), watermarks min {} low {} high {} pages, lowmem_reserve {:?}",
            zone.name(),
            zone.managed_pages(),
            Size(zone.managed_pages() << 12),
            zone.min_wmark_pages(),
            zone.low_wmark_pages(),
            zone.high_wmark_pages(),
            zone.lowmem_reserve()
        );
    }
    let t = node.totals();
    kprintln!(
        "Memory: {}K/{}K available ({}K reserved), min_free_kbytes {}",
        t.managed_pages * 4,
        t.present_pages * 4,
        (t.present_pages - t.managed_pages) * 4,
        node.min_free_kbytes()
    );
}

/// Prints one `/proc` file in Linux's format, under a `$ cat /proc/NAME` header line and
/// followed by an empty line (the host tests find blocks by that header).
pub fn print_proc(name: &str, write: impl FnOnce(&mut dyn Write) -> fmt::Result) {
    kprintln!("$ cat /proc/{name}");
    let _ = write(&mut Console);
    kprintln!();
}

/// Writes one `/proc` file's content.
pub type ProcWriter = fn(&mut dyn Write) -> fmt::Result;

/// The `/proc` files the kernel has, in the order the statistics print them: what
/// [`print_statistics`] prints and the console's `cat /proc/NAME` reads. A new file is one
/// more entry here.
pub const PROC_FILES: &[(&str, ProcWriter)] = &[
    ("buddyinfo", write_buddyinfo),
    ("zoneinfo", write_zoneinfo),
    ("slabinfo", write_slabinfo),
    ("vmallocinfo", write_vmallocinfo),
    ("meminfo", write_meminfo),
];

fn write_buddyinfo(w: &mut dyn Write) -> fmt::Result {
    ::mm::stats::write_buddyinfo(w, super::node())
}

fn write_zoneinfo(w: &mut dyn Write) -> fmt::Result {
    ::mm::stats::write_zoneinfo(w, super::node())
}

fn write_slabinfo(w: &mut dyn Write) -> fmt::Result {
    super::slab::slab().slabinfo(w)
}

fn write_vmallocinfo(w: &mut dyn Write) -> fmt::Result {
    super::vmalloc::write_vmallocinfo(w)
}

fn write_meminfo(w: &mut dyn Write) -> fmt::Result {
    ::mm::stats::write_meminfo(w, &meminfo())
}

/// The writer of `/proc/NAME`.
pub fn proc_file(name: &str) -> Option<ProcWriter> {
    PROC_FILES.iter().find(|(n, _)| *n == name).map(|&(_, w)| w)
}

/// Prints every file of [`PROC_FILES`] under a header line.
pub fn print_statistics(when: &str) {
    kprintln!("---- memory statistics {when} ----");
    for &(name, write) in PROC_FILES {
        print_proc(name, write);
    }
}

/// Most slab caches the page-state map names (more are drawn as slab of an unnamed cache).
const MEMMAP_CACHES: usize = 128;

/// Prints the page-state map (`::mm::pagemap`'s text form, `$ memmap LABEL` ... empty line),
/// which the runner draws (`boot/memmap.rs`). Exact when nothing allocates meanwhile (the demo
/// on one CPU); takes no allocator lock while it walks and allocates nothing.
pub fn print_memmap(label: &str) {
    let mut caches: [(usize, &'static str); MEMMAP_CACHES] = [(0, ""); MEMMAP_CACHES];
    let mut n = 0;
    super::slab::slab().for_each_cache(|c| {
        if n < MEMMAP_CACHES {
            caches[n] = (c as *const _ as usize, c.name());
            n += 1;
        }
    });
    let _ = ::mm::pagemap::write_pagemap(&mut Console, label, super::node(), &caches[..n], reserved_kind);
}

/// Why a page the allocators do not manage is not theirs: memblock's reservations (the
/// bootloader's one is the kernel image and its company), then the firmware map.
pub fn reserved_kind(pfn: Pfn) -> ::mm::pagemap::ReservedKind {
    use ::mm::memmap::RegionKind;
    use ::mm::pagemap::ReservedKind;
    let pa = pfn.0 << 12;
    let page = pa..pa + 4096;
    for r in super::boot_reservations().ranges() {
        if r.start < page.end && page.start < r.end {
            return if r.label.starts_with("bootloader") {
                ReservedKind::Kernel
            } else {
                ReservedKind::Memblock
            };
        }
    }
    let mut kind = ReservedKind::Hole;
    for r in super::firmware_map().regions() {
        if r.start < page.end && page.start < r.end {
            match r.kind {
                RegionKind::Bootloader => return ReservedKind::Kernel,
                // Firmware memory, or a page only partly usable RAM (never handed out).
                RegionKind::Firmware(_) | RegionKind::Usable => kind = ReservedKind::Firmware,
            }
        }
    }
    kind
}

/// The `/proc/meminfo` figures from every layer that exists.
pub fn meminfo() -> ::mm::stats::MemInfo {
    // Large kmalloc blocks are unreclaimable slab, as in 6.12 (see `Kmalloc::slab_totals`).
    let slab = super::slab::kmalloc_instance().slab_totals();
    let mut info = ::mm::stats::MemInfo::from_node(super::node(), slab.reclaimable_pages);
    // fs/proc/meminfo.c: KReclaimable = SReclaimable + NR_KERNEL_MISC_RECLAIMABLE, and no
    // other reclaimable kernel memory exists here.
    info.kreclaimable_kb = Some(slab.sreclaimable_kb());
    info.slab_kb = Some(slab.slab_kb());
    info.sreclaimable_kb = Some(slab.sreclaimable_kb());
    info.sunreclaim_kb = Some(slab.sunreclaim_kb());
    if super::vmalloc::is_ready() {
        super::vmalloc::fill_meminfo(&mut info);
    }
    info.kernel_stack_kb = Some(kernel_stack_bytes() >> 10);
    info.percpu_kb = Some(percpu_pages() << 2);
    super::direct_pages::fill_meminfo(&mut info);
    info
}

/// meminfo `KernelStack` in bytes: the boot CPU's stack (mapped by the bootloader) and each
/// AP's (vmalloc), without guard pages, as 6.12's `account_kernel_stack` counts them. The IST
/// (exception) stacks are not task stacks, as in 6.12 (there they live in `cpu_entry_area`).
pub fn kernel_stack_bytes() -> u64 {
    let (bottom, top) = crate::arch::fault::boot_stack();
    (top - bottom) + crate::arch::smp::ap_stack_bytes()
}

/// meminfo `Percpu` in pages: the pages the per-CPU areas occupy (6.12's `pcpu_nr_pages`,
/// the populated pages of every unit).
pub fn percpu_pages() -> u64 {
    let (start, end) = crate::arch::percpu::areas();
    (end.next_multiple_of(4096) - start / 4096 * 4096) / 4096
}

/// Says what a faulting address is, for the page-fault report: what the memory layer knows
/// (kmalloc's ZERO_SIZE_PTR, the page state behind a direct-map address), else the arch layer's
/// description from the boot layout. Runs inside exception handlers: reads page descriptors
/// (atomics) only, takes no lock and allocates nothing.
pub fn describe_address(addr: VirtAddr, w: &mut dyn Write) {
    let a = addr.as_u64();
    let _ = if (::mm::kmalloc::ZERO_SIZE_PTR as u64..::mm::kmalloc::ZERO_SIZE_PTR as u64 + 16).contains(&a) {
        write!(w, "ZERO_SIZE_PTR: dereference of the result of a zero-size kmalloc (kmalloc(0))")
    } else if let Some(pa) = super::page_alloc::virt_to_phys(addr) {
        describe_direct_map(w, pa.as_u64())
    } else if (VMALLOC_START..VMALLOC_END).contains(&a) {
        super::vmalloc::describe(a, w)
    } else {
        crate::arch::fault::describe_default(addr, w);
        Ok(())
    };
}

fn describe_direct_map(w: &mut dyn Write, pa: u64) -> fmt::Result {
    write!(w, "direct map of phys {pa:#x}")?;
    match super::node().page(Pfn(pa >> 12)) {
        Some(page) => match page.state() {
            PageState::Buddy | PageState::FreeTail | PageState::PcpFree => {
                write!(w, ", a FREE page (use after free?)")
            }
            state => write!(w, ", page state: {}", state.name()),
        },
        None => write!(w, ", outside the RAM the page allocator manages"),
    }
}
