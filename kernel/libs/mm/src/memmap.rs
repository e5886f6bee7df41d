//! The firmware's physical memory map, as the allocators see it.

use core::fmt;

/// What a physical range holds, as reported by the firmware and the bootloader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Free RAM: the allocators may manage it.
    Usable,
    /// RAM the bootloader used: kernel image, boot page tables, kernel stack, boot info, ramdisk.
    Bootloader,
    /// Anything else the firmware reports (ACPI tables, reserved, NVS, ...), with its raw type.
    Firmware(u32),
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionKind::Usable => f.write_str("usable"),
            RegionKind::Bootloader => f.write_str("bootloader (kernel, stack, boot tables)"),
            RegionKind::Firmware(t) => write!(f, "firmware reserved (type {t})"),
        }
    }
}

/// One range `[start, end)` of physical memory, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    pub start: u64,
    pub end: u64,
    pub kind: RegionKind,
}

impl MemRegion {
    pub const fn new(start: u64, end: u64, kind: RegionKind) -> MemRegion {
        MemRegion { start, end, kind }
    }
    pub const fn size(&self) -> u64 {
        self.end - self.start
    }
}
