//! `/proc`-format reports in Linux's exact formats (`mm/vmstat.c`, `fs/proc/meminfo.c`).
//!
//! - [`write_buddyinfo`]: `/proc/buddyinfo` (`frag_show_print`), populated zones only;
//! - [`write_zoneinfo`]: `/proc/zoneinfo` (`zoneinfo_show_print`), all zones, with the lines
//!   that exist here: free, boost (0), min/low/high/promo, spanned/present/managed, cma (0),
//!   protection, and for populated zones `nr_free_pages`, `node_unreclaimable` and `start_pfn`.
//!   Protection has one entry per zone type we have plus `ZONE_MOVABLE` (4 entries; Linux with
//!   `CONFIG_ZONE_DEVICE` prints a fifth);
//! - [`write_meminfo`]: `/proc/meminfo` lines from a [`MemInfo`] (`show_val_kb`).

use core::fmt::{self, Write};

use crate::addr::PAGE_SHIFT;
use crate::buddy::Node;

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
        write!(w, "\n  node_unreclaimable:  0\n  start_pfn:           {}\n", zone.zone_start_pfn())?;
    }
    Ok(())
}

/// `/proc/meminfo` values in kB. The first three come from the page allocator
/// ([`MemInfo::from_node`]); the optional ones are filled in by the layers that own them and
/// printed only when present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub mem_total_kb: u64,
    pub mem_free_kb: u64,
    pub mem_available_kb: u64,
    pub slab_kb: Option<u64>,
    pub sreclaimable_kb: Option<u64>,
    pub sunreclaim_kb: Option<u64>,
    pub page_tables_kb: Option<u64>,
    pub vmalloc_total_kb: Option<u64>,
    pub vmalloc_used_kb: Option<u64>,
    pub vmalloc_chunk_kb: Option<u64>,
}

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
        ("Slab:", info.slab_kb),
        ("SReclaimable:", info.sreclaimable_kb),
        ("SUnreclaim:", info.sunreclaim_kb),
        ("PageTables:", info.page_tables_kb),
        ("VmallocTotal:", info.vmalloc_total_kb),
        ("VmallocUsed:", info.vmalloc_used_kb),
        ("VmallocChunk:", info.vmalloc_chunk_kb),
    ];
    for (label, v) in optional {
        if let Some(kb) = v {
            show_val_kb(w, label, kb)?;
        }
    }
    Ok(())
}
