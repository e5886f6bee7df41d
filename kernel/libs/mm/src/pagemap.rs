//! The page-state map: what every page frame of a node holds, as runs of equal state by pfn,
//! read from the page descriptors, and its compact text form (the block `$ memmap` that
//! `cargo run -- --memmap FILE.svg` and the console's `memmap` print, and the host renders as
//! a picture of physical memory: `boot/memmap.rs`).
//!
//! The walk follows the descriptor invariant of the buddy allocator: the head of a block (free
//! or allocated) carries the block's order and state, its tails are not written, so a block is
//! stepped over as a whole from its head. Pages the allocators never had (`Reserved`, and pfns
//! without descriptors) are told apart by the caller's [`ReservedKind`] classifier: the kernel
//! knows the firmware map and memblock's reservations.
//!
//! The walk reads descriptors without locks (they are atomics): on a quiet machine (one CPU, no
//! allocation meanwhile) the map is exact, and its counts equal `/proc/buddyinfo` and
//! `/proc/meminfo` of the same moment; while other CPUs allocate it is a moment's approximation.

use core::fmt::{self, Write};
use core::sync::atomic::Ordering::Relaxed;

use crate::addr::Pfn;
use crate::buddy::Node;
use crate::page::{PageState, MAX_PAGE_ORDER};

/// Why a page the allocators do not manage is not theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReservedKind {
    /// The kernel image and what the bootloader placed with it (stack, boot page tables, boot
    /// info).
    Kernel,
    /// A memblock reservation made at boot (the page descriptors, the AP trampoline).
    Memblock,
    /// Reserved by the firmware (ACPI tables, BIOS areas), or a page only partly RAM.
    Firmware,
    /// No memory at all: a gap in the firmware map.
    Hole,
}

/// What a run of pages holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageUse {
    /// Free buddy blocks of this order.
    Free { order: u8 },
    /// Free order-0 pages on a per-CPU list.
    Pcp,
    /// Slab pages of the cache whose `kmem_cache` is at this address.
    Slab { cache: usize },
    /// A kmalloc-large block.
    KmallocLarge,
    /// Pages mapped into a vmalloc area.
    Vmalloc,
    /// Page-table pages.
    PageTable,
    /// A block from `alloc_pages` that no upper layer claimed.
    Allocated,
    /// Not managed by the allocators.
    Reserved(ReservedKind),
    /// A tail descriptor reached without its head: the descriptors contradict each other (the
    /// map shows it rather than guess).
    Inconsistent,
}

impl PageUse {
    /// Counted in `MemTotal` (the node's managed pages)?
    pub fn is_managed(self) -> bool {
        !matches!(self, PageUse::Reserved(_))
    }
}

/// Calls `f(start, pages, use)` for each maximal run of pages in `[0, end_pfn)` holding the same
/// thing, in pfn order; `end_pfn` is the end of the last section with descriptors.
/// `reserved(pfn)` classifies pages without a descriptor or with a `Reserved` one.
pub fn for_each_run(
    node: &Node,
    mut reserved: impl FnMut(Pfn) -> ReservedKind,
    mut f: impl FnMut(Pfn, u64, PageUse),
) {
    let end = end_pfn(node);
    let mut run: Option<(u64, u64, PageUse)> = None;
    let mut emit = |start: u64, pages: u64, what: PageUse, f: &mut dyn FnMut(Pfn, u64, PageUse)| match run {
        Some((s, n, w)) if w == what && s + n == start => run = Some((s, n + pages, w)),
        _ => {
            if let Some((s, n, w)) = run {
                f(Pfn(s), n, w);
            }
            run = Some((start, pages, what));
        }
    };
    let mut pfn = 0;
    while pfn < end {
        let (what, pages) = match node.page(Pfn(pfn)) {
            None => (PageUse::Reserved(reserved(Pfn(pfn))), 1),
            Some(page) => {
                let order = page.order().min(MAX_PAGE_ORDER);
                let block = 1u64 << order;
                match page.state() {
                    PageState::Buddy => (PageUse::Free { order: order as u8 }, block),
                    PageState::PcpFree => (PageUse::Pcp, block),
                    PageState::Slab => (PageUse::Slab { cache: page.private.load(Relaxed) }, block),
                    PageState::KmallocLarge => (PageUse::KmallocLarge, block),
                    PageState::Allocated => (PageUse::Allocated, block),
                    PageState::Vmalloc => (PageUse::Vmalloc, 1),
                    PageState::PageTable => (PageUse::PageTable, 1),
                    PageState::Reserved => (PageUse::Reserved(reserved(Pfn(pfn))), 1),
                    PageState::FreeTail => (PageUse::Inconsistent, 1),
                }
            }
        };
        let pages = pages.min(end - pfn);
        emit(pfn, pages, what, &mut f);
        pfn += pages;
    }
    if let Some((s, n, w)) = run {
        f(Pfn(s), n, w);
    }
}

/// The pfn after the last section with descriptors (the end of the vmemmap).
pub fn end_pfn(node: &Node) -> u64 {
    node.mem_map().end_pfn()
}

/// The code of a run in the text form: one letter, and for free blocks the order, for slab
/// pages the cache's number in the `cache` lines (none when the cache is not listed).
fn write_code(
    w: &mut dyn Write,
    what: PageUse,
    cache_number: &dyn Fn(usize) -> Option<usize>,
) -> fmt::Result {
    match what {
        PageUse::Free { order } => write!(w, "F{order}"),
        PageUse::Pcp => w.write_str("P"),
        PageUse::Slab { cache } => match cache_number(cache) {
            Some(n) => write!(w, "S{n}"),
            None => w.write_str("S"),
        },
        PageUse::KmallocLarge => w.write_str("L"),
        PageUse::Vmalloc => w.write_str("V"),
        PageUse::PageTable => w.write_str("T"),
        PageUse::Allocated => w.write_str("A"),
        PageUse::Reserved(ReservedKind::Kernel) => w.write_str("K"),
        PageUse::Reserved(ReservedKind::Memblock) => w.write_str("M"),
        PageUse::Reserved(ReservedKind::Firmware) => w.write_str("R"),
        PageUse::Reserved(ReservedKind::Hole) => w.write_str("H"),
        PageUse::Inconsistent => w.write_str("X"),
    }
}

/// Runs per body line of the text form.
const RUNS_PER_LINE: usize = 12;

/// Writes the page-state map of `node` in its text form, the header line included:
///
/// ```text
/// $ memmap after boot                 <- `$ memmap` and the caller's label
/// pfns 0 262144                       <- the range [0, end) the runs cover
/// zone DMA 0 4096                     <- each zone's span [start, end) in pfns (empty: none)
/// cache 0 kmem_cache                  <- number and name of each slab cache
/// run 1M 158F0 1R 96H ...             <- runs in pfn order: <pages><code>, see `write_code`
///                                     <- an empty line ends the block
/// ```
///
/// `caches` names the slab caches (the address of each `kmem_cache` and its name); slab pages
/// of a cache not listed get the code `S` alone. Codes: `F<order>` free buddy blocks, `P`
/// per-CPU list, `S<n>` slab of cache n, `L` kmalloc-large, `V` vmalloc, `T` page table, `A`
/// other `alloc_pages` block, `K` kernel image and bootloader memory, `M` memblock, `R`
/// firmware reserved, `H` hole, `X` inconsistent descriptors.
pub fn write_pagemap(
    w: &mut dyn Write,
    label: &str,
    node: &Node,
    caches: &[(usize, &str)],
    reserved: impl FnMut(Pfn) -> ReservedKind,
) -> fmt::Result {
    writeln!(w, "$ memmap {label}")?;
    writeln!(w, "pfns 0 {}", end_pfn(node))?;
    for z in node.zones() {
        if z.spanned_pages() == 0 {
            writeln!(w, "zone {} empty", z.name())?;
        } else {
            writeln!(
                w,
                "zone {} {} {}",
                z.name(),
                z.zone_start_pfn(),
                z.zone_start_pfn() + z.spanned_pages()
            )?;
        }
    }
    for (n, (_, name)) in caches.iter().enumerate() {
        writeln!(w, "cache {n} {name}")?;
    }
    let cache_number = |addr: usize| caches.iter().position(|&(a, _)| a == addr);
    let mut result = Ok(());
    let mut on_line = 0;
    for_each_run(node, reserved, |_, pages, what| {
        if result.is_err() {
            return;
        }
        result = (|| {
            w.write_str(if on_line == 0 { "run" } else { "" })?;
            write!(w, " {pages}")?;
            write_code(w, what, &cache_number)?;
            on_line += 1;
            if on_line == RUNS_PER_LINE {
                on_line = 0;
                w.write_str("\n")?;
            }
            Ok(())
        })();
    });
    result?;
    if on_line != 0 {
        w.write_str("\n")?;
    }
    w.write_str("\n")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::string::String;
    use std::vec::Vec;

    use super::*;
    use crate::gfp::GfpFlags;
    use crate::testing::TestMachine;
    use crate::zone::ZoneType;

    fn runs(m: &TestMachine) -> Vec<(u64, u64, PageUse)> {
        let mut v = Vec::new();
        for_each_run(&m.node, |_| ReservedKind::Firmware, |s, n, w| v.push((s.0, n, w)));
        v
    }

    fn pages_by_use(runs: &[(u64, u64, PageUse)]) -> HashMap<PageUse, u64> {
        let mut h = HashMap::new();
        for &(_, n, w) in runs {
            *h.entry(w).or_insert(0) += n;
        }
        h
    }

    /// The runs tile `[0, end)` without gaps, never repeat a state across a boundary, and
    /// their counts are the allocator's own: free = MemFree, pcp = pcp pages, managed =
    /// MemTotal, free blocks per order per zone = buddyinfo.
    #[test]
    fn runs_tile_memory_and_match_the_allocators_counts() {
        let m = TestMachine::standard();
        let n = &m.node;
        let held: Vec<(Pfn, u32)> = [0u32, 3, 0, 5, 1]
            .iter()
            .map(|&o| (n.alloc_pages(GfpFlags::GFP_KERNEL, o).unwrap(), o))
            .collect();
        // One order-0 page on CPU 0's per-CPU list.
        let p = n.alloc_pages(GfpFlags::GFP_KERNEL, 0).unwrap();
        n.free_pages(p, 0).unwrap();
        let r = runs(&m);
        let mut next = 0;
        for (i, &(s, len, w)) in r.iter().enumerate() {
            assert_eq!(s, next, "run {i} starts after a gap or overlap");
            assert!(len > 0);
            if i > 0 {
                assert_ne!(r[i - 1].2, w, "equal neighbours {} and {i} not merged", i - 1);
            }
            next = s + len;
        }
        assert_eq!(next, end_pfn(n));
        let by = pages_by_use(&r);
        let t = n.totals();
        let free: u64 = by.iter().filter(|(w, _)| matches!(w, PageUse::Free { .. })).map(|(_, n)| n).sum();
        assert_eq!(free, t.free_pages);
        assert_eq!(by.get(&PageUse::Pcp).copied().unwrap_or(0), t.pcp_pages);
        assert_eq!(by.get(&PageUse::Allocated).copied(), Some(1 + 8 + 1 + 32 + 2));
        let managed: u64 = by.iter().filter(|(w, _)| w.is_managed()).map(|(_, n)| n).sum();
        assert_eq!(managed, t.managed_pages);
        assert!(!by.contains_key(&PageUse::Inconsistent));
        for zt in ZoneType::ALL {
            let z = n.zone(zt);
            let (zs, ze) = (z.zone_start_pfn(), z.zone_start_pfn() + z.spanned_pages());
            let mut blocks = [0u64; 11];
            for &(s, len, w) in &r {
                if let PageUse::Free { order } = w {
                    let (a, b) = (s.max(zs), (s + len).min(ze));
                    if a < b {
                        blocks[order as usize] += (b - a) >> order;
                    }
                }
            }
            assert_eq!(blocks, z.free_area_snapshot().nr_free, "zone {}", z.name());
        }
        for (pfn, o) in held {
            n.free_pages(pfn, o).unwrap();
        }
    }

    /// Slab pages are runs of their cache (by the `kmem_cache` address), a whole multi-page
    /// slab at once.
    #[test]
    fn slab_pages_name_their_cache() {
        use crate::slab::{debug::SlabDebugConfig, SlabAllocator, SlabFlags};
        let m = TestMachine::standard();
        let slab = SlabAllocator::new(&m.node, 0x5eed, SlabDebugConfig::NONE).unwrap();
        let c = slab.kmem_cache_create("pagemap-test", 3000, 0, SlabFlags::empty(), None).unwrap();
        let obj = c.alloc(GfpFlags::GFP_KERNEL).unwrap();
        let addr = &*c as *const _ as usize;
        let root = slab.kmem_cache() as *const _ as usize;
        let by = pages_by_use(&runs(&m));
        assert_eq!(by.get(&PageUse::Slab { cache: addr }).copied(), Some(1 << c.order()));
        assert!(c.order() > 0, "a multi-page slab");
        assert!(by.get(&PageUse::Slab { cache: root }).is_some_and(|&n| n > 0), "the root cache's slab");
        c.free(obj).unwrap();
        c.destroy().unwrap();
    }

    #[test]
    fn text_form_has_header_zones_caches_and_runs() {
        let m = TestMachine::standard();
        let n = &m.node;
        let a = n.alloc_pages(GfpFlags::GFP_KERNEL, 2).unwrap();
        let mut s = String::new();
        let caches = [(0x1000usize, "kmem_cache"), (0x2000, "kmalloc-64")];
        write_pagemap(&mut s, "after boot", n, &caches, |pfn| {
            // Page 0 is firmware's: 6.12's x86 trim_bios_range makes it e820-reserved.
            if pfn.0 == 0 {
                ReservedKind::Firmware
            } else {
                ReservedKind::Hole
            }
        })
        .unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "$ memmap after boot");
        assert_eq!(lines[1], std::format!("pfns 0 {}", end_pfn(n)));
        assert!(lines[2].starts_with("zone DMA 1 "), "ZONE_DMA starts at pfn 1: {s}");
        assert_eq!(lines[5], "cache 0 kmem_cache");
        assert_eq!(lines[6], "cache 1 kmalloc-64");
        assert!(lines[7].starts_with("run 1R "), "page 0 is firmware's: {s}");
        assert!(s.ends_with("\n\n"), "an empty line ends the block");
        assert!(s.contains(" 4A"), "the order-2 block: {s}");
        // Every run line holds at most RUNS_PER_LINE runs, and the pages add up.
        let mut total = 0;
        for l in lines.iter().filter(|l| l.starts_with("run")) {
            let toks: Vec<&str> = l.split_whitespace().skip(1).collect();
            assert!(toks.len() <= RUNS_PER_LINE);
            for t in toks {
                let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap();
                total += t[..digits].parse::<u64>().unwrap();
            }
        }
        assert_eq!(total, end_pfn(n));
        n.free_pages(a, 2).unwrap();
    }
}
