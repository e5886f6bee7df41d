//! memblock: the early boot allocator (Linux's `mm/memblock.c`).
//!
//! Before the page allocator exists, boot code needs memory for the page descriptors themselves
//! and for other boot-time tables. memblock keeps two sorted arrays of physical ranges: `memory`
//! (the usable RAM of the firmware map) and `reserved` (what is already taken, each range with a
//! label saying by whom). Allocation is top-down like Linux and never goes below 1 MiB. The
//! arrays have fixed capacity because there is no heap yet.
//!
//! Once [`crate::buddy::Node::init`] has handed every unreserved page to the buddy allocator it
//! retires the memblock: later allocations would hand out pages the buddy allocator owns, so
//! they fail with [`MemBlockError::Retired`] / `None`.

use core::fmt;

use x86_64::PhysAddr;

use crate::addr::PAGE_SIZE;
use crate::memmap::{MemRegion, RegionKind};

/// Capacity of each range array (Linux starts with 128 and doubles; we cannot grow).
pub const MEMBLOCK_MAX_REGIONS: usize = 128;
/// memblock allocations never go below this (Linux keeps low memory for real-mode users).
pub const MEMBLOCK_LOW_LIMIT: u64 = 1 << 20;

/// One range `[start, end)` in bytes, with a label (`"memory"` for RAM ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemBlockRange {
    pub start: u64,
    pub end: u64,
    pub label: &'static str,
}

impl MemBlockRange {
    const EMPTY: MemBlockRange = MemBlockRange { start: 0, end: 0, label: "" };

    pub const fn size(&self) -> u64 {
        self.end - self.start
    }
}

/// Why a memblock operation failed. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemBlockError {
    /// `start >= end`, or the range is not page aligned.
    BadRange { start: u64, end: u64 },
    /// The range is not entirely usable RAM (it overlaps a hole or a firmware range).
    NotMemory { start: u64, end: u64 },
    /// The range overlaps an existing reservation.
    AlreadyReserved { start: u64, end: u64, owner: &'static str },
    /// A fixed-size range array is full.
    OutOfCapacity { array: &'static str, capacity: usize },
    /// The buddy allocator has taken over the memory; memblock can no longer be used.
    Retired,
}

impl fmt::Display for MemBlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemBlockError::BadRange { start, end } => {
                write!(f, "memblock: bad range [{start:#x}, {end:#x}) (empty or not page aligned)")
            }
            MemBlockError::NotMemory { start, end } => {
                write!(f, "memblock: [{start:#x}, {end:#x}) is not entirely usable RAM (overlaps a hole)")
            }
            MemBlockError::AlreadyReserved { start, end, owner } => {
                write!(f, "memblock: [{start:#x}, {end:#x}) overlaps a range already reserved by \"{owner}\"")
            }
            MemBlockError::OutOfCapacity { array, capacity } => {
                write!(f, "memblock: the {array} array is full ({capacity} ranges)")
            }
            MemBlockError::Retired => f.write_str("memblock: retired, the buddy allocator owns memory now"),
        }
    }
}

/// A sorted, non-overlapping array of ranges with fixed capacity.
#[derive(Clone)]
struct RangeArray {
    name: &'static str,
    ranges: [MemBlockRange; MEMBLOCK_MAX_REGIONS],
    len: usize,
}

impl RangeArray {
    const fn new(name: &'static str) -> RangeArray {
        RangeArray { name, ranges: [MemBlockRange::EMPTY; MEMBLOCK_MAX_REGIONS], len: 0 }
    }

    fn as_slice(&self) -> &[MemBlockRange] {
        &self.ranges[..self.len]
    }

    /// Index of the first range ending after `addr`.
    fn first_ending_after(&self, addr: u64) -> usize {
        self.as_slice().partition_point(|r| r.end <= addr)
    }

    /// The first range overlapping `[start, end)`, if any.
    fn overlapping(&self, start: u64, end: u64) -> Option<MemBlockRange> {
        let i = self.first_ending_after(start);
        self.as_slice().get(i).copied().filter(|r| r.start < end)
    }

    /// Inserts a range that overlaps nothing, merging with neighbours of the same label that it
    /// touches. Fails without change when a new slot is needed and the array is full.
    fn insert(&mut self, start: u64, end: u64, label: &'static str) -> Result<(), MemBlockError> {
        let i = self.first_ending_after(start);
        let merge_prev = i > 0 && self.ranges[i - 1].end == start && self.ranges[i - 1].label == label;
        let merge_next = i < self.len && self.ranges[i].start == end && self.ranges[i].label == label;
        match (merge_prev, merge_next) {
            (true, true) => {
                self.ranges[i - 1].end = self.ranges[i].end;
                self.ranges.copy_within(i + 1..self.len, i);
                self.len -= 1;
            }
            (true, false) => self.ranges[i - 1].end = end,
            (false, true) => self.ranges[i].start = start,
            (false, false) => {
                if self.len == MEMBLOCK_MAX_REGIONS {
                    return Err(MemBlockError::OutOfCapacity {
                        array: self.name,
                        capacity: MEMBLOCK_MAX_REGIONS,
                    });
                }
                self.ranges.copy_within(i..self.len, i + 1);
                self.ranges[i] = MemBlockRange { start, end, label };
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// The early boot allocator. See the module documentation.
#[derive(Clone)]
pub struct MemBlock {
    memory: RangeArray,
    reserved: RangeArray,
    retired: bool,
}

impl MemBlock {
    /// Builds the memory array from the `Usable` regions of the firmware map (trimmed to whole
    /// pages, adjacent ranges merged), without page 0: 6.12's x86 `setup_arch` ->
    /// `trim_bios_range` turns the first page into reserved firmware memory before memblock is
    /// built (`e820__range_update(0, PAGE_SIZE, E820_TYPE_RAM, E820_TYPE_RESERVED)`, logged as
    /// `e820: update [mem 0x00000000-0x00000fff] usable ==> reserved`), so it is in no zone's
    /// span (ZONE_DMA starts at pfn 1) and never handed out.
    pub fn new(regions: &[MemRegion]) -> Result<MemBlock, MemBlockError> {
        let mut mb = MemBlock {
            memory: RangeArray::new("memory"),
            reserved: RangeArray::new("reserved"),
            retired: false,
        };
        for r in regions.iter().filter(|r| r.kind == RegionKind::Usable) {
            let start = r.start.next_multiple_of(PAGE_SIZE as u64).max(PAGE_SIZE as u64);
            let end = r.end & !(PAGE_SIZE as u64 - 1);
            if start >= end {
                continue;
            }
            mb.add_memory(start, end)?;
        }
        Ok(mb)
    }

    /// Adds usable RAM, merging with any range it overlaps or touches (firmware maps may
    /// overlap themselves).
    fn add_memory(&mut self, mut start: u64, mut end: u64) -> Result<(), MemBlockError> {
        // Absorb every range that overlaps or touches [start, end), then insert the union.
        let first = self.memory.as_slice().partition_point(|r| r.end < start);
        let mut last = first;
        while last < self.memory.len && self.memory.ranges[last].start <= end {
            start = start.min(self.memory.ranges[last].start);
            end = end.max(self.memory.ranges[last].end);
            last += 1;
        }
        if last > first {
            self.memory.ranges.copy_within(last..self.memory.len, first);
            self.memory.len -= last - first;
        }
        self.memory.insert(start, end, "memory")
    }

    /// Marks `[start, end)` as taken by `label`. The range must be page aligned, inside usable
    /// RAM and not already reserved; a reservation touching one with the same label is merged
    /// into it.
    pub fn reserve(&mut self, start: u64, end: u64, label: &'static str) -> Result<(), MemBlockError> {
        if self.retired {
            return Err(MemBlockError::Retired);
        }
        let page_mask = PAGE_SIZE as u64 - 1;
        if start >= end || start & page_mask != 0 || end & page_mask != 0 {
            return Err(MemBlockError::BadRange { start, end });
        }
        match self.memory.overlapping(start, end) {
            Some(m) if m.start <= start && end <= m.end => {}
            _ => return Err(MemBlockError::NotMemory { start, end }),
        }
        if let Some(r) = self.reserved.overlapping(start, end) {
            return Err(MemBlockError::AlreadyReserved { start, end, owner: r.label });
        }
        self.reserved.insert(start, end, label)
    }

    /// Allocates `size` bytes (rounded up to whole pages) aligned to `align` (a power of two, at
    /// least a page), top-down, never below [`MEMBLOCK_LOW_LIMIT`]. The memory is not zeroed.
    /// `None` when nothing fits, the arguments are invalid, or memblock is retired.
    pub fn alloc(&mut self, size: u64, align: u64, label: &'static str) -> Option<PhysAddr> {
        if self.retired || size == 0 || !align.is_power_of_two() {
            return None;
        }
        let align = align.max(PAGE_SIZE as u64);
        let size = size.checked_next_multiple_of(PAGE_SIZE as u64)?;
        let mut found = None;
        self.for_each_free_range_rev(|start, end| {
            let lowest = start.max(MEMBLOCK_LOW_LIMIT);
            if end < lowest || end - lowest < size {
                return true;
            }
            let base = (end - size) & !(align - 1);
            if base >= lowest {
                found = Some(base);
                return false;
            }
            true
        });
        let base = found?;
        // Cannot overlap (it came from a free range); fails only when the array is full.
        self.reserved.insert(base, base + size, label).ok()?;
        Some(PhysAddr::new(base))
    }

    /// Calls `f(start, end)` for each free range (memory minus reserved), highest first, until
    /// `f` returns false.
    fn for_each_free_range_rev(&self, mut f: impl FnMut(u64, u64) -> bool) {
        let res = self.reserved.as_slice();
        let mut ri = res.len();
        for m in self.memory.as_slice().iter().rev() {
            let mut top = m.end;
            // Reservations are inside memory and sorted: walk down those above m.start.
            while ri > 0 && res[ri - 1].end > m.start {
                let r = res[ri - 1];
                if r.end < top && !f(r.end, top) {
                    return;
                }
                top = top.min(r.start);
                ri -= 1;
            }
            if m.start < top && !f(m.start, top) {
                return;
            }
        }
    }

    /// Calls `f(start, end)` for each free range (memory minus reserved), lowest first.
    pub fn for_each_free_range(&self, mut f: impl FnMut(u64, u64)) {
        let res = self.reserved.as_slice();
        let mut ri = 0;
        for m in self.memory.as_slice() {
            let mut bottom = m.start;
            while ri < res.len() && res[ri].start < m.end {
                let r = res[ri];
                if bottom < r.start {
                    f(bottom, r.start);
                }
                bottom = bottom.max(r.end);
                ri += 1;
            }
            if bottom < m.end {
                f(bottom, m.end);
            }
        }
    }

    /// The usable RAM ranges, sorted.
    pub fn memory(&self) -> &[MemBlockRange] {
        self.memory.as_slice()
    }

    /// Every reservation with its label, sorted by address.
    pub fn reservations(&self) -> impl Iterator<Item = &MemBlockRange> + '_ {
        self.reserved.as_slice().iter()
    }

    /// Total bytes of usable RAM.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.as_slice().iter().map(|r| r.size()).sum()
    }

    /// Total bytes reserved.
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved.as_slice().iter().map(|r| r.size()).sum()
    }

    /// Total bytes reserved under `label`.
    pub fn reserved_bytes_of(&self, label: &str) -> u64 {
        self.reservations().filter(|r| r.label == label).map(|r| r.size()).sum()
    }

    /// Hands the memory over to the page allocator: later `reserve`/`alloc` fail.
    pub(crate) fn retire(&mut self) {
        self.retired = true;
    }

    pub fn is_retired(&self) -> bool {
        self.retired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memmap::RegionKind::*;

    const MIB: u64 = 1 << 20;

    fn map() -> [MemRegion; 5] {
        [
            MemRegion::new(0, 0x9f000, Usable),
            MemRegion::new(0x9f000, MIB, Firmware(2)),
            MemRegion::new(MIB, 4 * MIB, Usable),
            MemRegion::new(4 * MIB, 5 * MIB, Bootloader),
            MemRegion::new(5 * MIB, 8 * MIB, Usable),
        ]
    }

    #[test]
    fn builds_memory_without_page_zero() {
        // arch/x86/kernel/setup.c (6.12), trim_bios_range(): e820__range_update(0, PAGE_SIZE,
        // E820_TYPE_RAM, E820_TYPE_RESERVED) before memblock: page 0 is not memory at all.
        let mb = MemBlock::new(&map()).unwrap();
        let mem: [(u64, u64); 3] = [(0x1000, 0x9f000), (MIB, 4 * MIB), (5 * MIB, 8 * MIB)];
        assert_eq!(mb.memory().len(), 3);
        for (r, (s, e)) in mb.memory().iter().zip(mem) {
            assert_eq!((r.start, r.end), (s, e));
        }
        assert_eq!(mb.reservations().count(), 0);
        assert_eq!(mb.memory_bytes(), 0x9e000 + 3 * MIB + 3 * MIB);
    }

    #[test]
    fn merges_adjacent_and_overlapping_memory_and_trims_to_pages() {
        let regions = [
            MemRegion::new(MIB + 10, 2 * MIB, Usable),
            MemRegion::new(2 * MIB, 3 * MIB + 5, Usable),
            MemRegion::new(0x280000, 0x300000, Usable),
        ];
        let mb = MemBlock::new(&regions).unwrap();
        assert_eq!(mb.memory().len(), 1);
        assert_eq!((mb.memory()[0].start, mb.memory()[0].end), (MIB + 0x1000, 3 * MIB));
        assert_eq!(mb.reservations().count(), 0, "no page 0 when it is not RAM");
    }

    #[test]
    fn reserve_errors_are_specific_and_change_nothing() {
        let mut mb = MemBlock::new(&map()).unwrap();
        mb.reserve(2 * MIB, 2 * MIB + 0x2000, "initrd").unwrap();
        let before = mb.clone();
        let same = |a: &MemBlock, b: &MemBlock| a.reservations().eq(b.reservations());
        assert_eq!(
            mb.reserve(3 * MIB, 3 * MIB, "x"),
            Err(MemBlockError::BadRange { start: 3 * MIB, end: 3 * MIB })
        );
        assert_eq!(
            mb.reserve(3 * MIB + 1, 3 * MIB + 0x1000, "x"),
            Err(MemBlockError::BadRange { start: 3 * MIB + 1, end: 3 * MIB + 0x1000 })
        );
        // Crosses the bootloader range (not memory) and the low hole.
        assert_eq!(
            mb.reserve(3 * MIB, 6 * MIB, "x"),
            Err(MemBlockError::NotMemory { start: 3 * MIB, end: 6 * MIB })
        );
        assert_eq!(
            mb.reserve(0x9e000, 0xa0000, "x"),
            Err(MemBlockError::NotMemory { start: 0x9e000, end: 0xa0000 })
        );
        assert_eq!(
            mb.reserve(9 * MIB, 10 * MIB, "x"),
            Err(MemBlockError::NotMemory { start: 9 * MIB, end: 10 * MIB })
        );
        assert_eq!(
            mb.reserve(2 * MIB + 0x1000, 2 * MIB + 0x3000, "x"),
            Err(MemBlockError::AlreadyReserved {
                start: 2 * MIB + 0x1000,
                end: 2 * MIB + 0x3000,
                owner: "initrd"
            })
        );
        assert!(same(&mb, &before));
        assert!(std::format!("{}", MemBlockError::NotMemory { start: 0, end: 1 }).contains("hole"));
    }

    #[test]
    fn reserve_merges_same_label_only() {
        let mut mb = MemBlock::new(&map()).unwrap();
        mb.reserve(2 * MIB, 2 * MIB + 0x1000, "a").unwrap();
        mb.reserve(2 * MIB + 0x2000, 2 * MIB + 0x3000, "a").unwrap();
        mb.reserve(2 * MIB + 0x1000, 2 * MIB + 0x2000, "a").unwrap();
        mb.reserve(2 * MIB + 0x3000, 2 * MIB + 0x4000, "b").unwrap();
        let v: std::vec::Vec<_> = mb.reservations().map(|r| (r.start, r.end, r.label)).collect();
        assert_eq!(v, [(2 * MIB, 2 * MIB + 0x3000, "a"), (2 * MIB + 0x3000, 2 * MIB + 0x4000, "b")]);
        assert_eq!(mb.reserved_bytes_of("a"), 0x3000);
    }

    #[test]
    fn alloc_is_top_down_aligned_accounted_and_never_below_1mib() {
        let mut mb = MemBlock::new(&map()).unwrap();
        let a = mb.alloc(0x1800, 0x1000, "tables").unwrap();
        assert_eq!(a.as_u64(), 8 * MIB - 0x2000);
        let b = mb.alloc(0x1000, 0x10000, "aligned").unwrap();
        assert_eq!(b.as_u64(), 8 * MIB - 0x10000);
        // Fills the gap left under `a` first from the top of what remains below it.
        let c = mb.alloc(0x1000, 0x1000, "tables").unwrap();
        assert_eq!(c.as_u64(), 8 * MIB - 0x3000);
        assert_eq!(mb.reserved_bytes_of("tables"), 0x3000);
        // 3 MiB does not fit above 5 MiB any more; it fits in [1, 4) MiB exactly.
        let d = mb.alloc(3 * MIB, 0x1000, "big").unwrap();
        assert_eq!(d.as_u64(), MIB);
        // Only low memory (< 1 MiB) and scraps above 5 MiB are left.
        assert_eq!(mb.alloc(3 * MIB, 0x1000, "big2"), None);
        assert_eq!(mb.alloc(0, 0x1000, "zero"), None);
        assert_eq!(mb.alloc(0x1000, 3, "bad align"), None);
        let total: u64 = mb.reservations().map(|r| r.size()).sum();
        assert_eq!(total, mb.reserved_bytes());
        let mut free_low = 0;
        mb.for_each_free_range(|s, e| {
            if s < MIB {
                free_low += e - s
            }
        });
        assert_eq!(free_low, 0x9f000 - 0x1000, "low memory untouched");
        while mb.alloc(0x1000, 0x1000, "rest").is_some() {}
        mb.for_each_free_range(|s, _| assert!(s < MIB));
    }

    #[test]
    fn free_ranges_are_memory_minus_reserved() {
        let mut mb = MemBlock::new(&map()).unwrap();
        mb.reserve(MIB, MIB + 0x1000, "a").unwrap();
        mb.reserve(3 * MIB, 4 * MIB, "b").unwrap();
        mb.reserve(6 * MIB, 7 * MIB, "c").unwrap();
        let mut v = std::vec::Vec::new();
        mb.for_each_free_range(|s, e| v.push((s, e)));
        assert_eq!(v, [(0x1000, 0x9f000), (MIB + 0x1000, 3 * MIB), (5 * MIB, 6 * MIB), (7 * MIB, 8 * MIB)]);
        let mut r = std::vec::Vec::new();
        mb.for_each_free_range_rev(|s, e| {
            r.push((s, e));
            true
        });
        r.reverse();
        assert_eq!(v, r);
    }

    #[test]
    fn capacity_error_and_retire() {
        let mut mb = MemBlock::new(&[MemRegion::new(0, 64 * MIB, Usable)]).unwrap();
        // Fill every slot with non-adjacent reservations.
        for i in 1..=MEMBLOCK_MAX_REGIONS as u64 {
            mb.reserve(i * 0x2000, i * 0x2000 + 0x1000, "r").unwrap();
        }
        let err = mb.reserve(MIB * 32, MIB * 32 + 0x1000, "r");
        assert_eq!(
            err,
            Err(MemBlockError::OutOfCapacity { array: "reserved", capacity: MEMBLOCK_MAX_REGIONS })
        );
        // Touching an existing same-label range needs no slot.
        mb.reserve(0x3000, 0x4000, "r").unwrap();
        mb.retire();
        assert_eq!(mb.reserve(MIB * 40, MIB * 41, "r"), Err(MemBlockError::Retired));
        assert_eq!(mb.alloc(0x1000, 0x1000, "r"), None);
    }
}
