//! meminfo's `DirectMap4k`/`DirectMap2M`/`DirectMap1G`: what the direct map is mapped with.
//!
//! Linux keeps `direct_pages_count[]` up to date as it builds and splits the direct map
//! (arch/x86/mm/pat/set_memory.c, `update_page_count`, `arch_report_meminfo`). Here the
//! bootloader builds the direct map (bootloader-x86_64-common 0.11: every 2 MiB frame of
//! `[0, max(end of the highest memory-map region, 4 GiB))` with a 2 MiB page, in PML4 entries
//! of its own) and nothing in the kernel splits it, so the counts are taken by walking the live
//! page tables over the direct map's PML4 entries: each present leaf counts its size once.

use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{PageTable, PageTableFlags as F};

use super::direct_map_base;

/// Bytes of the direct map mapped by each page size, and what else the walk met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectPagesCount {
    pub bytes_4k: u64,
    pub bytes_2m: u64,
    pub bytes_1g: u64,
    /// Leaves in the direct map's PML4 entries that do not map `virt - direct_map_base` (none
    /// should exist: such a leaf is counted here, not in the sizes).
    pub foreign_bytes: u64,
    /// `[start, end)` the walk covered: whole PML4 entries from `direct_map_base`.
    pub walked: (u64, u64),
}

impl DirectPagesCount {
    /// All bytes the direct map maps.
    pub fn total(&self) -> u64 {
        self.bytes_4k + self.bytes_2m + self.bytes_1g
    }
}

const PML4_SPAN: u64 = 1 << 39;

/// The PML4 entries holding the direct map: those of `[base, base + max(end of the memory map,
/// 4 GiB))`, firmware ranges included (the bootloader maps up to the end of the highest region
/// of any kind, e.g. QEMU's reserved `[0xfd00000000, 1 TiB)`, and at least the first 4 GiB, and
/// gives the direct map PML4 entries nothing else shares).
fn walk_range() -> (u64, u64) {
    let base = direct_map_base();
    let max_end = super::firmware_map().regions().iter().map(|r| r.end).max().unwrap_or(0);
    (base, (base + max_end.max(4 << 30)).next_multiple_of(PML4_SPAN))
}

/// Walks the live page tables over the direct map and counts its leaves by size. Reads entries
/// only; the direct map's tables are never freed or split after boot (`apic::make_uncached`
/// changes cache bits only), so the walk needs no lock.
pub fn direct_pages_count() -> DirectPagesCount {
    let (start, end) = walk_range();
    let mut c = DirectPagesCount { walked: (start, end), ..DirectPagesCount::default() };
    let (pml4, _) = Cr3::read();
    let mut va = start;
    while va < end {
        walk(pml4.start_address().as_u64(), 4, va, &mut c);
        va += PML4_SPAN;
    }
    c
}

/// Counts the leaves of the entry of `level` (4 = PML4) that maps `va`, recursing into the
/// table it points to; `va` is the start of that entry's span.
fn walk(table_phys: u64, level: u32, va: u64, c: &mut DirectPagesCount) {
    let shift = 12 + 9 * (level - 1);
    let table = super::page_alloc::phys_to_virt(x86_64::PhysAddr::new(table_phys)).as_ptr::<PageTable>();
    let first = ((va >> shift) & 511) as usize;
    let count = if level == 4 { 1 } else { 512 };
    for i in first..first + count {
        // SAFETY: `table` is a live page table of CR3's hierarchy, read through the direct map;
        // its entries are only read, and the direct map's tables stay allocated (see above).
        let entry = unsafe { &(&*table)[i] };
        let flags = entry.flags();
        let entry_va = if level == 4 { va } else { va + ((i - first) as u64) * (1 << shift) };
        if !flags.contains(F::PRESENT) {
            continue;
        }
        if level == 1 || (level <= 3 && flags.contains(F::HUGE_PAGE)) {
            let size = 1u64 << shift;
            let pa = entry.addr().as_u64();
            if pa != entry_va - direct_map_base() {
                c.foreign_bytes += size;
            } else {
                match level {
                    1 => c.bytes_4k += size,
                    2 => c.bytes_2m += size,
                    _ => c.bytes_1g += size,
                }
            }
            continue;
        }
        walk(entry.addr().as_u64(), level - 1, entry_va, c);
    }
}

/// `direct_gbpages` (arch/x86/mm/init.c, `probe_page_size_mask`: on with
/// `CONFIG_X86_DIRECT_GBPAGES` when the CPU has `X86_FEATURE_GBPAGES`): whether 6.12 prints
/// `DirectMap1G`. CPUID 0x80000001 EDX bit 26 is PDPE1GB.
pub fn direct_gbpages() -> bool {
    // Leaf 0x80000000 says how far the extended leaves go.
    let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    max_ext >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// Fills meminfo's `DirectMap*` lines from a walk of the direct map.
pub fn fill_meminfo(info: &mut ::mm::stats::MemInfo) {
    let c = direct_pages_count();
    info.direct_map_4k_kb = Some(c.bytes_4k >> 10);
    info.direct_map_2m_kb = Some(c.bytes_2m >> 10);
    info.direct_map_1g_kb = direct_gbpages().then_some(c.bytes_1g >> 10);
}
