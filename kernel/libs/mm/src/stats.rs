//! `/proc`-format reports in Linux's exact formats (`mm/vmstat.c`, `fs/proc/meminfo.c`).
//!
//! - [`write_buddyinfo`]: `/proc/buddyinfo` (`frag_show_print`), populated zones only;
//! - [`write_zoneinfo`]: `/proc/zoneinfo` (`zoneinfo_show_print`), all zones, with the lines
//!   that exist here: free, boost (0), min/low/high/promo, spanned/present/managed, cma (0),
//!   protection, and for populated zones `nr_free_pages`, the per-CPU `pagesets` (count, high,
//!   batch of every CPU slot), `node_unreclaimable` and `start_pfn`.
//!   Protection has one entry per zone type we have plus `ZONE_MOVABLE` (4 entries; Linux with
//!   `CONFIG_ZONE_DEVICE` prints a fifth);
//!
//! Pages on the per-CPU lists are free but counted in neither `pages free`/`nr_free_pages`/
//! `MemFree` nor `/proc/buddyinfo`, as on Linux; zoneinfo's `pagesets` shows them.
//! - [`write_meminfo`]: `/proc/meminfo` lines from a [`MemInfo`] (`show_val_kb`).

use core::fmt::{self, Write};

use crate::addr::PAGE_SHIFT;
use crate::buddy::Node;
use crate::mem_map::MemMap;
use crate::memblock::MemBlock;

/// `/proc/buddyinfo`: `"Node %d, zone %8s "`, then `"%6lu "` per order, then `"\n"`.
pub fn write_buddyinfo(w: &mut dyn Write, node: &Node) -> fmt::Result {
    for zone in node.zones().iter().filter(|z| z.is_populated()) {
        let fa = zone.free_area_snapshot();
        write!(w, "Node {}, zone {:>8} ", node.node_id(), zone.name())?;
        for n in fa.nr_free {
            write!(w, "{n:>6} ")?;
        }
        w.write_char('\n')?;
    }
    Ok(())
}

/// `/proc/zoneinfo` (the lines described in the module documentation).
pub fn write_zoneinfo(w: &mut dyn Write, node: &Node) -> fmt::Result {
    write_zoneinfo_cpus(w, node, crate::num_online_cpus())
}

/// `/proc/zoneinfo` with pagesets for CPUs `0..online` (Linux prints the online CPUs).
pub fn write_zoneinfo_cpus(w: &mut dyn Write, node: &Node, online: usize) -> fmt::Result {
    for zone in node.zones() {
        let free = zone.free_pages();
        write!(w, "Node {}, zone {:>8}", node.node_id(), zone.name())?;
        write!(
            w,
            "\n  pages free     {free}\
             \n        boost    0\
             \n        min      {}\
             \n        low      {}\
             \n        high     {}\
             \n        promo    {}\
             \n        spanned  {}\
             \n        present  {}\
             \n        managed  {}\
             \n        cma      0",
            zone.min_wmark_pages(),
            zone.low_wmark_pages(),
            zone.high_wmark_pages(),
            zone.promo_wmark_pages(),
            zone.spanned_pages(),
            zone.present_pages(),
            zone.managed_pages(),
        )?;
        let reserve = zone.lowmem_reserve();
        write!(w, "\n        protection: ({}", reserve[0])?;
        for r in &reserve[1..] {
            write!(w, ", {r}")?;
        }
        w.write_char(')')?;
        if !zone.is_populated() {
            w.write_char('\n')?;
            continue;
        }
        write!(w, "\n      {:<12} {}", "nr_free_pages", free)?;
        w.write_str("\n  pagesets")?;
        for cpu in 0..online {
            let Some(p) = node.pcp_info(zone.zone_type(), cpu) else { break };
            write!(
                w,
                "\n    cpu: {cpu}\n              count:    {}\n              high:     {}\n              batch:    {}\n              high_min: {}\n              high_max: {}",
                p.count, p.high, p.batch, p.high_min, p.high_max
            )?;
        }
        write!(w, "\n  node_unreclaimable:  0\n  start_pfn:           {}\n", zone.zone_start_pfn())?;
    }
    Ok(())
}

/// Boot report of memblock: every reservation with its label, then the totals, e.g.
/// `memblock: reserved [0x0000000000000000-0x0000000000000fff]     4 KiB  page 0`.
pub fn write_memblock(w: &mut dyn Write, mb: &MemBlock) -> fmt::Result {
    for r in mb.reservations() {
        writeln!(
            w,
            "memblock: reserved [{:#018x}-{:#018x}] {:>8} KiB  {}",
            r.start,
            r.end - 1,
            r.size() >> 10,
            r.label
        )?;
    }
    writeln!(
        w,
        "memblock: {} KiB memory in {} ranges, {} KiB reserved",
        mb.memory_bytes() >> 10,
        mb.memory().len(),
        mb.reserved_bytes() >> 10
    )
}

/// Boot report of the page descriptors, e.g. `mem_map: 32768 descriptors x 32 B = 1024 KiB in
/// 1 of 8 sections (128 MiB each), page tables 16384 B`.
pub fn write_mem_map(w: &mut dyn Write, mm: &MemMap) -> fmt::Result {
    writeln!(
        w,
        "mem_map: {} descriptors x {} B = {} KiB in {} of {} sections ({} MiB each), page tables {} B",
        mm.nr_pages(),
        mm.descriptor_size(),
        mm.descriptor_bytes() >> 10,
        mm.nr_present_sections(),
        mm.nr_sections(),
        (mm.pages_per_section() << PAGE_SHIFT) >> 20,
        mm.table_bytes()
    )
}

/// `/proc/meminfo` values in kB. The first three come from the page allocator
/// ([`MemInfo::from_node`]); the optional ones are filled in by the layers that own them and
/// printed only when present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub mem_total_kb: u64,
    pub mem_free_kb: u64,
    pub mem_available_kb: u64,
    /// `KReclaimable`: `SReclaimable + NR_KERNEL_MISC_RECLAIMABLE` (the latter is 0 here: no
    /// other reclaimable kernel memory exists).
    pub kreclaimable_kb: Option<u64>,
    pub slab_kb: Option<u64>,
    pub sreclaimable_kb: Option<u64>,
    pub sunreclaim_kb: Option<u64>,
    /// `KernelStack`: `NR_KERNEL_STACK_KB`, the kernel stacks allocated.
    pub kernel_stack_kb: Option<u64>,
    pub page_tables_kb: Option<u64>,
    pub vmalloc_total_kb: Option<u64>,
    pub vmalloc_used_kb: Option<u64>,
    pub vmalloc_chunk_kb: Option<u64>,
    /// `Percpu`: `pcpu_nr_pages()` in kB, the pages of the per-CPU areas.
    pub percpu_kb: Option<u64>,
    /// `DirectMap4k`/`DirectMap2M`/`DirectMap1G` (arch/x86/mm/pat/set_memory.c,
    /// `arch_report_meminfo`): bytes of the direct map mapped by each page size, in kB.
    /// `DirectMap1G` is printed only when `direct_gbpages` is set (the CPU has 1 GiB pages).
    pub direct_map_4k_kb: Option<u64>,
    pub direct_map_2m_kb: Option<u64>,
    pub direct_map_1g_kb: Option<u64>,
}

/// Every label `meminfo_proc_show` (fs/proc/meminfo.c, 6.12.19 lines 60-166) and
/// `arch_report_meminfo` (arch/x86/mm/pat/set_memory.c lines 110-124, x86_64) can print, in
/// their order; config-dependent ones included. [`write_meminfo`] prints a subsequence of it.
pub const LINUX_MEMINFO_ORDER: &[&str] = &[
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SwapCached",
    "Active",
    "Inactive",
    "Active(anon)",
    "Inactive(anon)",
    "Active(file)",
    "Inactive(file)",
    "Unevictable",
    "Mlocked",
    "HighTotal",
    "HighFree",
    "LowTotal",
    "LowFree",
    "MmapCopy",
    "SwapTotal",
    "SwapFree",
    "Zswap",
    "Zswapped",
    "Dirty",
    "Writeback",
    "AnonPages",
    "Mapped",
    "Shmem",
    "KReclaimable",
    "Slab",
    "SReclaimable",
    "SUnreclaim",
    "KernelStack",
    "ShadowCallStack",
    "PageTables",
    "SecPageTables",
    "NFS_Unstable",
    "Bounce",
    "WritebackTmp",
    "CommitLimit",
    "Committed_AS",
    "VmallocTotal",
    "VmallocUsed",
    "VmallocChunk",
    "Percpu",
    "EarlyMemtestBad",
    "HardwareCorrupted",
    "AnonHugePages",
    "ShmemHugePages",
    "ShmemPmdMapped",
    "FileHugePages",
    "FilePmdMapped",
    "CmaTotal",
    "CmaFree",
    "Unaccepted",
    "HugePages_Total",
    "HugePages_Free",
    "HugePages_Rsvd",
    "HugePages_Surp",
    "Hugepagesize",
    "Hugetlb",
    "DirectMap4k",
    "DirectMap2M",
    "DirectMap1G",
];

const fn pages_to_kb(pages: u64) -> u64 {
    pages << (PAGE_SHIFT - 10)
}

/// Linux's `si_mem_available` without page cache: free pages minus `totalreserve_pages`, plus
/// the reclaimable slab pages less `min(reclaimable / 2, sum of low watermarks)`; at least 0.
pub fn si_mem_available(free_pages: u64, totalreserve_pages: u64, wmark_low: u64, reclaimable: u64) -> u64 {
    let available = free_pages as i64 - totalreserve_pages as i64;
    let reclaimable = reclaimable - (reclaimable / 2).min(wmark_low);
    (available + reclaimable as i64).max(0) as u64
}

impl MemInfo {
    /// MemTotal (managed pages), MemFree and MemAvailable of `node`, with
    /// `sreclaimable_pages` of reclaimable slab counted as available as Linux does. The optional
    /// fields are left `None` for the caller.
    pub fn from_node(node: &Node, sreclaimable_pages: u64) -> MemInfo {
        let t = node.totals();
        MemInfo {
            mem_total_kb: pages_to_kb(t.managed_pages),
            mem_free_kb: pages_to_kb(t.free_pages),
            mem_available_kb: pages_to_kb(si_mem_available(
                t.free_pages,
                t.totalreserve_pages,
                t.low_wmark_pages,
                sreclaimable_pages,
            )),
            ..MemInfo::default()
        }
    }
}

/// `show_val_kb`: the label padded to 16 columns, the value right-aligned in 8, `" kB"`.
fn show_val_kb(w: &mut dyn Write, label: &str, kb: u64) -> fmt::Result {
    writeln!(w, "{label:<16}{kb:>8} kB")
}

/// `/proc/meminfo` lines, in Linux's order.
pub fn write_meminfo(w: &mut dyn Write, info: &MemInfo) -> fmt::Result {
    show_val_kb(w, "MemTotal:", info.mem_total_kb)?;
    show_val_kb(w, "MemFree:", info.mem_free_kb)?;
    show_val_kb(w, "MemAvailable:", info.mem_available_kb)?;
    let optional = [
        ("KReclaimable:", info.kreclaimable_kb),
        ("Slab:", info.slab_kb),
        ("SReclaimable:", info.sreclaimable_kb),
        ("SUnreclaim:", info.sunreclaim_kb),
        ("KernelStack:", info.kernel_stack_kb),
        ("PageTables:", info.page_tables_kb),
        ("VmallocTotal:", info.vmalloc_total_kb),
        ("VmallocUsed:", info.vmalloc_used_kb),
        ("VmallocChunk:", info.vmalloc_chunk_kb),
        ("Percpu:", info.percpu_kb),
        ("DirectMap4k:", info.direct_map_4k_kb),
        ("DirectMap2M:", info.direct_map_2m_kb),
        ("DirectMap1G:", info.direct_map_1g_kb),
    ];
    for (label, v) in optional {
        if let Some(kb) = v {
            show_val_kb(w, label, kb)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::string::String;
    use std::vec::Vec;

    use super::*;
    use crate::gfp::GfpFlags;
    use crate::testing::TestMachine;

    #[test]
    fn buddyinfo_has_linux_format_and_matches_memfree() {
        let m = TestMachine::standard();
        let n = &m.node;
        let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
        let mut s = String::new();
        write_buddyinfo(&mut s, n).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        // DMA: boot decomposition of [1, 0x9f) and [0x100, 0x200) (see buddy tests).
        assert_eq!(
            lines[0],
            "Node 0, zone      DMA      2      2      2      2      2      1      1      0      1      0      0 "
        );
        assert!(lines[1].starts_with("Node 0, zone    DMA32 "));
        assert!(lines[2].starts_with("Node 0, zone   Normal "));
        assert!(s.ends_with(" \n"), "trailing space before the newline, as Linux");
        // sum(count << order) over all lines == MemFree pages.
        let pages: u64 = lines
            .iter()
            .flat_map(|l| l[22..].split_whitespace().enumerate())
            .map(|(o, c)| c.parse::<u64>().unwrap() << o)
            .sum();
        let t = n.totals();
        assert_eq!(pages, t.free_pages);
        assert_eq!(t.buddyinfo_pages, t.free_pages);
        let info = MemInfo::from_node(n, 0);
        assert_eq!(info.mem_free_kb, pages * 4);
        assert_eq!(info.mem_total_kb, t.managed_pages * 4);
        n.free_pages(p, 0).unwrap();
    }

    #[test]
    fn zoneinfo_has_linux_format() {
        let m = TestMachine::standard();
        let n = &m.node;
        let mut s = String::new();
        write_zoneinfo_cpus(&mut s, n, 2).unwrap();
        let z = n.zone(crate::zone::ZoneType::Dma);
        let r = z.lowmem_reserve();
        let expect = std::format!(
            "Node 0, zone      DMA\n  pages free     {free}\n        boost    0\n        min      {}\n        \
             low      {}\n        high     {}\n        promo    {}\n        spanned  511\n        \
             present  414\n        managed  {free}\n        cma      0\n        protection: (0, {}, {}, {})\n      \
             nr_free_pages {free}\n  pagesets\n    cpu: 0\n              count:    0\n              \
             high:     {high}\n              batch:    1\n              high_min: {high}\n              \
             high_max: {high_max}\n    cpu: 1\n              count:    0\n",
            z.min_wmark_pages(),
            z.low_wmark_pages(),
            z.high_wmark_pages(),
            z.promo_wmark_pages(),
            r[1],
            r[2],
            r[3],
            free = z.managed_pages(),
            high = n.pcp_info(z.zone_type(), 0).unwrap().high_min,
            high_max = n.pcp_info(z.zone_type(), 0).unwrap().high_max,
        );
        assert!(s.starts_with(&expect), "got:\n{s}\nexpected prefix:\n{expect}");
        assert!(s.contains(&std::format!(
            "              high_max: {}\n  node_unreclaimable:  0\n  start_pfn:           1\n",
            n.pcp_info(z.zone_type(), 1).unwrap().high_max
        )));
        // 6.12's x86 trim_bios_range: page 0 is e820-reserved, so ZONE_DMA starts at pfn 1.
        assert!(s.contains("\n  start_pfn:           1\n"), "{s}");
        assert_eq!(s.matches("\n    cpu: ").count(), 3 * 2, "pagesets of online CPUs, populated zones only");
        let mut one = String::new();
        write_zoneinfo(&mut one, n).unwrap();
        assert_eq!(
            one.matches("\n    cpu: ").count(),
            3 * crate::num_online_cpus(),
            "default: the online CPUs"
        );
        assert!(s.contains("Node 0, zone    DMA32\n"));
        assert!(s.contains("Node 0, zone   Normal\n  pages free     "));
        assert_eq!(s.matches("protection: (").count(), 3);

        // A freed order-0 page sits on CPU 0's list of Normal: in pagesets, not in free pages.
        let free_before = n.zone(crate::zone::ZoneType::Normal).free_pages();
        let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
        n.free_pages(p, 0).unwrap();
        let normal = n.zone(crate::zone::ZoneType::Normal);
        assert_eq!(normal.free_pages(), free_before - 1, "the page on the pcp list is not counted free");
        let mut s = String::new();
        write_zoneinfo(&mut s, n).unwrap();
        let section = &s[s.find("zone   Normal").unwrap()..];
        assert!(section.contains(&std::format!("\n  pages free     {}\n", free_before - 1)));
        let info = n.pcp_info(crate::zone::ZoneType::Normal, 0).unwrap();
        assert!(section.contains(&std::format!(
            "\n  pagesets\n    cpu: 0\n              count:    1\n              high:     {}\n              \
             batch:    {}\n              high_min: {}\n              high_max: {}\n",
            info.high,
            info.batch,
            info.high_min,
            info.high_max
        )));
        assert_eq!(n.drain_pages(), 1);
        assert_eq!(normal.free_pages(), free_before);
    }

    #[test]
    fn boot_reports() {
        let m = TestMachine::standard();
        let mut s = String::new();
        write_memblock(&mut s, &m.memblock).unwrap();
        write_mem_map(&mut s, m.node.mem_map()).unwrap();
        // Page 0 is no memblock memory (6.12's trim_bios_range), so no reservation of it.
        assert!(!s.contains("page 0"), "{s}");
        assert!(s.contains("KiB  test reserved\n"));
        assert!(s.contains(
            "mem_map: 3840 descriptors x 32 B = 128 KiB in 15 of 16 sections (1 MiB each), page tables 0 B\n"
        ));
    }

    fn full_meminfo() -> MemInfo {
        MemInfo {
            mem_total_kb: 1_012_345,
            mem_free_kb: 7,
            mem_available_kb: 123_456_789,
            kreclaimable_kb: Some(1024),
            slab_kb: Some(2048),
            sreclaimable_kb: Some(1024),
            sunreclaim_kb: Some(1024),
            kernel_stack_kb: Some(896),
            page_tables_kb: Some(12),
            vmalloc_total_kb: Some(34_359_738_367),
            vmalloc_used_kb: Some(0),
            vmalloc_chunk_kb: Some(0),
            percpu_kb: Some(4),
            direct_map_4k_kb: Some(0),
            direct_map_2m_kb: Some(4_194_304),
            direct_map_1g_kb: Some(0),
        }
    }

    #[test]
    fn meminfo_lines_are_show_val_kb() {
        let mut info = full_meminfo();
        info.page_tables_kb = None;
        info.direct_map_1g_kb = None;
        let mut s = String::new();
        write_meminfo(&mut s, &info).unwrap();
        // fs/proc/meminfo.c, show_val_kb(): label in 16 columns, "%8lu kB"; KernelStack,
        // VmallocTotal (seq_printf "%8lu kB") and arch_report_meminfo's DirectMap lines the same.
        assert_eq!(
            s,
            "MemTotal:        1012345 kB\n\
             MemFree:               7 kB\n\
             MemAvailable:   123456789 kB\n\
             KReclaimable:       1024 kB\n\
             Slab:               2048 kB\n\
             SReclaimable:       1024 kB\n\
             SUnreclaim:         1024 kB\n\
             KernelStack:         896 kB\n\
             VmallocTotal:   34359738367 kB\n\
             VmallocUsed:           0 kB\n\
             VmallocChunk:          0 kB\n\
             Percpu:                4 kB\n\
             DirectMap4k:           0 kB\n\
             DirectMap2M:     4194304 kB\n"
        );
    }

    /// The labels come in 6.12's order: fs/proc/meminfo.c meminfo_proc_show() (6.12.19 lines
    /// 60-168: ... Shmem 105, KReclaimable 106, Slab 108, SReclaimable 109, SUnreclaim 110,
    /// KernelStack 111, PageTables 117, VmallocTotal 129, VmallocUsed 131, VmallocChunk 132,
    /// Percpu 133, then arch_report_meminfo() at 168) and arch/x86/mm/pat/set_memory.c
    /// arch_report_meminfo() (DirectMap4k line 112, DirectMap2M 115, DirectMap1G 122).
    #[test]
    fn meminfo_fields_in_linux_6_12_order() {
        let mut s = String::new();
        write_meminfo(&mut s, &full_meminfo()).unwrap();
        let labels: Vec<&str> = s.lines().map(|l| l.split_once(':').unwrap().0).collect();
        assert_eq!(
            labels,
            [
                "MemTotal",
                "MemFree",
                "MemAvailable",
                "KReclaimable",
                "Slab",
                "SReclaimable",
                "SUnreclaim",
                "KernelStack",
                "PageTables",
                "VmallocTotal",
                "VmallocUsed",
                "VmallocChunk",
                "Percpu",
                "DirectMap4k",
                "DirectMap2M",
                "DirectMap1G",
            ]
        );
        // A subsequence of 6.12's full list, each label once.
        let mut at = 0;
        for l in &labels {
            let i = LINUX_MEMINFO_ORDER[at..]
                .iter()
                .position(|x| x == l)
                .unwrap_or_else(|| panic!("{l} out of 6.12's order (or not a 6.12 field)"));
            at += i + 1;
        }
        assert!(s.contains("\nKernelStack:         896 kB\n"));
        assert!(s.ends_with("\nDirectMap1G:           0 kB\n"));
    }

    #[test]
    fn mem_available_follows_si_mem_available() {
        assert_eq!(si_mem_available(1000, 300, 50, 0), 700);
        // Reclaimable slab counts minus min(half, low watermarks).
        assert_eq!(si_mem_available(1000, 300, 50, 400), 700 + 400 - 50);
        assert_eq!(si_mem_available(1000, 300, 500, 400), 700 + 200);
        assert_eq!(si_mem_available(100, 300, 50, 0), 0, "never negative");
        let m = TestMachine::standard();
        let t = m.node.totals();
        let info = MemInfo::from_node(&m.node, 0);
        assert_eq!(info.mem_available_kb, (t.free_pages - t.totalreserve_pages) * 4);
    }
}
