//! The firmware's memory map as the bootloader hands it over, converted to `::mm` regions and
//! printed the way Linux prints the e820 map at boot.

use ::mm::memmap::{MemRegion, RegionKind};
use bootloader_api::info::{MemoryRegionKind, MemoryRegions};

/// Most regions kept. QEMU's maps have ~10 entries; UEFI firmware maps a few dozen after merging.
pub const MAX_REGIONS: usize = 256;

/// The memory map, sorted by address, adjacent regions of the same kind merged.
pub struct MemoryMap {
    regions: [MemRegion; MAX_REGIONS],
    len: usize,
}

impl MemoryMap {
    pub fn from_bootloader(regions: &MemoryRegions) -> MemoryMap {
        let mut map = MemoryMap { regions: [MemRegion::new(0, 0, RegionKind::Usable); MAX_REGIONS], len: 0 };
        let mut dropped = 0;
        for r in regions.iter().filter(|r| r.end > r.start) {
            let kind = match r.kind {
                MemoryRegionKind::Usable => RegionKind::Usable,
                MemoryRegionKind::Bootloader => RegionKind::Bootloader,
                MemoryRegionKind::UnknownBios(t) => RegionKind::Firmware(t),
                MemoryRegionKind::UnknownUefi(t) => RegionKind::Firmware(t),
                _ => RegionKind::Firmware(u32::MAX),
            };
            if !map.push(MemRegion::new(r.start, r.end, kind)) {
                dropped += 1;
            }
        }
        map.regions[..map.len].sort_unstable_by_key(|r| r.start);
        map.merge_adjacent();
        if dropped > 0 {
            crate::warn!(
                "memory map: {dropped} regions beyond the first {MAX_REGIONS} ignored (treated as reserved)"
            );
        }
        map
    }

    fn push(&mut self, r: MemRegion) -> bool {
        if self.len == MAX_REGIONS {
            return false;
        }
        self.regions[self.len] = r;
        self.len += 1;
        true
    }

    fn merge_adjacent(&mut self) {
        let mut out = 0;
        for i in 0..self.len {
            let r = self.regions[i];
            if out > 0 && self.regions[out - 1].end == r.start && self.regions[out - 1].kind == r.kind {
                self.regions[out - 1].end = r.end;
            } else {
                self.regions[out] = r;
                out += 1;
            }
        }
        self.len = out;
    }

    /// The same map with the bootloader's ranges counted as usable RAM (for memblock, which then
    /// reserves them), merged with their usable neighbours.
    pub fn with_bootloader_as_usable(&self) -> MemoryMap {
        let mut map = MemoryMap { regions: self.regions, len: self.len };
        for r in &mut map.regions[..map.len] {
            if r.kind == RegionKind::Bootloader {
                r.kind = RegionKind::Usable;
            }
        }
        map.merge_adjacent();
        map
    }

    pub fn regions(&self) -> &[MemRegion] {
        &self.regions[..self.len]
    }

    /// End of the highest range of RAM (usable or used by the bootloader).
    pub fn max_ram_end(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| matches!(r.kind, RegionKind::Usable | RegionKind::Bootloader))
            .map(|r| r.end)
            .max()
            .unwrap_or(0)
    }

    fn total(&self, pred: impl Fn(RegionKind) -> bool) -> u64 {
        self.regions().iter().filter(|r| pred(r.kind)).map(|r| r.size()).sum()
    }

    /// Bytes of usable RAM, of RAM the bootloader used, and reserved by the firmware.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.total(|k| k == RegionKind::Usable),
            self.total(|k| k == RegionKind::Bootloader),
            self.total(|k| matches!(k, RegionKind::Firmware(_))),
        )
    }

    /// Prints the map in Linux's e820 format, with a size column and totals.
    pub fn print(&self) {
        kprintln!("BIOS-provided physical RAM map (via the bootloader):");
        for r in self.regions() {
            let kind = match r.kind {
                RegionKind::Usable => "usable",
                RegionKind::Bootloader => "usable (in use by the bootloader: kernel, stack, page tables)",
                RegionKind::Firmware(_) => "reserved",
            };
            kprintln!(
                "BIOS-e820: [mem {:#018x}-{:#018x}] {:>10}  {}",
                r.start,
                r.end - 1,
                Size(r.size()),
                kind
            );
        }
        // arch/x86/kernel/setup.c (6.12), trim_bios_range(): the first page is the BIOS's,
        // taken out of RAM before memblock is built (see `MemBlock::new`), and logged by
        // e820__range_update (KERN_DEBUG there).
        if self.regions().iter().any(|r| r.kind == RegionKind::Usable && r.start < 0x1000 && r.end > 0) {
            crate::debug!("e820: update [mem 0x00000000-0x00000fff] usable ==> reserved");
        }
        let (usable, boot, reserved) = self.totals();
        kprintln!(
            "e820: total RAM {} (usable {}, bootloader {}), reserved {}, highest RAM address {:#x}",
            Size(usable + boot),
            Size(usable),
            Size(boot),
            Size(reserved),
            self.max_ram_end()
        );
    }
}

/// A byte count printed with a binary unit: `639 KiB`, `1022.6 MiB`, `16 GiB`.
#[derive(Clone, Copy)]
pub struct Size(pub u64);

impl core::fmt::Display for Size {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        // The largest unit that the value reaches; exact values print whole, others with one decimal.
        let unit = (1..UNITS.len()).rev().find(|&u| self.0 >= 1u64 << (10 * u)).unwrap_or(0);
        let divisor = 1u64 << (10 * unit);
        if self.0 % divisor == 0 {
            pad_fmt(f, format_args!("{} {}", self.0 / divisor, UNITS[unit]))
        } else {
            let tenths = (self.0 as u128 * 10 / divisor as u128) as u64;
            pad_fmt(f, format_args!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit]))
        }
    }
}

/// Formats with padding honoured (`{:>10}` on a `Size`), without a heap.
fn pad_fmt(f: &mut core::fmt::Formatter<'_>, args: core::fmt::Arguments) -> core::fmt::Result {
    let mut buf = [0u8; 32];
    let mut w = BufWriter { buf: &mut buf, len: 0 };
    core::fmt::write(&mut w, args)?;
    let len = w.len;
    f.pad(core::str::from_utf8(&buf[..len]).unwrap_or("?"))
}

/// A fixed buffer that implements `fmt::Write` (formatting without a heap).
pub struct BufWriter<'a> {
    pub buf: &'a mut [u8],
    pub len: usize,
}

impl core::fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len.checked_add(s.len()).filter(|&e| e <= self.buf.len()).ok_or(core::fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
