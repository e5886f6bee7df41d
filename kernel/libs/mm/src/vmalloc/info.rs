//! `/proc/vmallocinfo` and the `Vmalloc*` lines of `/proc/meminfo`, in Linux's formats.

use core::fmt;

use super::vmap_area::{AreaKind, VmapArea, VmapAreas};
use crate::addr::PAGE_SIZE;

/// One `/proc/vmallocinfo` line (without the newline), as Linux's `vmalloc_info_show` prints it:
/// `0x%pK-0x%pK %7ld %pS pages=%d vmalloc N0=%d`. The size includes the guard page; the caller is
/// printed as `file:line` (no symbols here). `pages=` appears only for areas with pages (as in
/// Linux); vmap areas say `vmap` and have no per-node counts, since their pages are the caller's.
pub struct VmallocInfoLine<'a>(pub &'a VmapArea);

impl fmt::Display for VmallocInfoLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(
            f,
            "{:#018x}-{:#018x} {:7} {}:{}",
            a.start,
            a.end(),
            a.size,
            a.caller.file(),
            a.caller.line()
        )?;
        if a.nr_pages != 0 {
            write!(f, " pages={}", a.nr_pages)?;
        }
        match a.kind {
            // All memory is node 0 here (no NUMA), so the per-node count is every page.
            AreaKind::Vmalloc => write!(f, " vmalloc N0={}", a.nr_pages),
            AreaKind::Vmap => f.write_str(" vmap"),
        }
    }
}

impl VmapAreas {
    /// Writes `/proc/vmallocinfo`: one line per live area, in address order.
    pub fn write_vmallocinfo<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        for area in self.areas() {
            writeln!(w, "{}", VmallocInfoLine(&area))?;
        }
        Ok(())
    }

    /// The `Vmalloc*` figures of `/proc/meminfo`.
    pub fn meminfo(&self) -> VmallocMeminfo {
        let (start, end) = self.range();
        VmallocMeminfo {
            // include/linux/vmalloc.h: VMALLOC_TOTAL = VMALLOC_END - VMALLOC_START, where x86's
            // VMALLOC_END is the last byte (VMALLOC_START + (VMALLOC_SIZE_TB << 40) - 1,
            // arch/x86/include/asm/pgtable_64_types.h); this range's end is exclusive.
            total_kb: ((end - 1 - start) >> 10) as u64,
            used_kb: (self.vmalloc_pages() * PAGE_SIZE / 1024) as u64,
            chunk_kb: 0,
        }
    }
}

/// `VmallocTotal` (the size of the range less one byte, in kB rounded down: Linux's inclusive
/// `VMALLOC_END`), `VmallocUsed` (pages of live vmalloc areas; vmap
/// areas map someone else's pages and are not counted, as in Linux since 5.3) and `VmallocChunk`
/// (always 0, as Linux prints it since 4.4 instead of walking the areas).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmallocMeminfo {
    pub total_kb: u64,
    pub used_kb: u64,
    pub chunk_kb: u64,
}

impl fmt::Display for VmallocMeminfo {
    /// The three lines as `/proc/meminfo` prints them (`show_val_kb`: label padded to 16
    /// columns, value right-aligned in 8).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<16}{:>8} kB", "VmallocTotal:", self.total_kb)?;
        writeln!(f, "{:<16}{:>8} kB", "VmallocUsed:", self.used_kb)?;
        writeln!(f, "{:<16}{:>8} kB", "VmallocChunk:", self.chunk_kb)
    }
}
