//! `/proc/vmallocinfo` and the `Vmalloc*` lines of `/proc/meminfo`, in Linux's formats.

use core::fmt;

use super::avl::NodeAlloc;
use super::vmap_area::{AreaKind, VmFlags, VmapArea, VmapAreas};
use crate::addr::PAGE_SIZE;

/// One `/proc/vmallocinfo` line (without the newline), as 6.12's `vmalloc_info_show`
/// (mm/vmalloc.c) prints an area with a `vm_struct`: `0x%pK-0x%pK %7ld`, the caller, then in this
/// order `pages=%d` (only when `nr_pages`: vmalloc areas; vmap and ioremap areas own no pages),
/// `phys=%pa` (only when `phys_addr` is not 0: ioremap areas; `%pa` is `0x` and 16 digits),
/// `ioremap`, `vmalloc`, `vmap`, `user` per flag, and `show_numa_info`'s ` N%u=%u` per node
/// with pages. The size includes the guard page.
///
/// Printed differently: the caller is `file:line`, not `%pS` (no symbols here); `vpages` (the
/// page array was vmalloc'ed) never appears, as areas here keep no page array (the frames are
/// found through the page tables); the flags this kernel never sets (`sparse`, `dma-coherent`)
/// never appear. Areas freed and waiting for the lazy purge are [`UnpurgedLine`]s.
pub struct VmallocInfoLine<'a>(pub &'a VmapArea);

impl fmt::Display for VmallocInfoLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        if matches!(a.kind, AreaKind::VmMapRam | AreaKind::VmapBlock) {
            // No vm_struct (va->vm == NULL) and VMAP_RAM set: 6.12 prints the range, its size
            // and "vm_map_ram" only. A block is one line for the whole block, whatever of it is
            // in use.
            return write!(f, "{:#018x}-{:#018x} {:7} vm_map_ram", a.start, a.end(), a.size);
        }
        write!(
            f,
            "{:#018x}-{:#018x} {:7} {}:{}",
            a.start,
            a.end(),
            a.size,
            a.caller.file(),
            a.caller.line()
        )?;
        // `vm_struct.nr_pages` is set for the pages vmalloc allocated (and vmap with
        // VM_MAP_PUT_PAGES, which this kernel does not offer).
        let nr_pages = if a.kind == AreaKind::Vmalloc { a.nr_pages } else { 0 };
        if nr_pages != 0 {
            write!(f, " pages={nr_pages}")?;
        }
        if a.phys_addr != 0 {
            write!(f, " phys={:#018x}", a.phys_addr)?;
        }
        for (flag, name) in [
            (VmFlags::VM_IOREMAP, " ioremap"),
            (VmFlags::VM_ALLOC, " vmalloc"),
            (VmFlags::VM_MAP, " vmap"),
            (VmFlags::VM_USERMAP, " user"),
        ] {
            if a.flags.contains(flag) {
                f.write_str(name)?;
            }
        }
        // show_numa_info: all memory is node 0 here (no NUMA), so node 0 has every page.
        if nr_pages != 0 {
            write!(f, " N0={nr_pages}")?;
        }
        Ok(())
    }
}

/// The `/proc/vmallocinfo` line of an area freed and waiting for the lazy purge, as 6.12's
/// `show_purge_info` prints it: `0x%pK-0x%pK %7ld unpurged vm_area` (the size includes the
/// guard page).
pub struct UnpurgedLine<'a>(pub &'a VmapArea);

impl fmt::Display for UnpurgedLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(f, "{:#018x}-{:#018x} {:7} unpurged vm_area", a.start, a.end(), a.size)
    }
}

impl<A: NodeAlloc> VmapAreas<A> {
    /// Writes `/proc/vmallocinfo`: one line per live area, in address order, then one per area
    /// waiting for the lazy purge (6.12's `show_purge_info` after the busy areas).
    pub fn write_vmallocinfo<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        for area in self.areas() {
            writeln!(w, "{}", VmallocInfoLine(&area))?;
        }
        for area in self.lazy_areas() {
            writeln!(w, "{}", UnpurgedLine(&area))?;
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
