//! Emulated physical memory for host tests (this crate's and, with the `testing` feature, other
//! crates'): a zeroed heap buffer stands for RAM from physical address 0, a memory map with holes
//! and reserved ranges describes it, and a [`TestMachine`] boots a buddy [`Node`] over it the way
//! the kernel does (memblock -> mem_map -> buddy).

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::vec::Vec;

use crate::addr::{DirectMap, Pfn, PAGE_SIZE};
use crate::buddy::{Node, PageRefError};
use crate::mem_map::ContiguousVmemmap;
use crate::memblock::MemBlock;
use crate::memmap::{MemRegion, RegionKind};
use crate::page::{PageProvider, PageState};
use crate::zone::ZoneLimits;

const MIB: u64 = 1 << 20;

/// A zeroed, page-aligned heap buffer standing for physical memory `[0, size)`.
pub struct EmulatedRam {
    base: *mut u8,
    layout: Layout,
}

// SAFETY: `EmulatedRam` only owns the buffer; all access goes through `DirectMap` pointers whose
// users must own what they touch (the allocators' locks decide that), as with real RAM.
unsafe impl Send for EmulatedRam {}
// SAFETY: as above; `&EmulatedRam` only gives out the direct map.
unsafe impl Sync for EmulatedRam {}

impl EmulatedRam {
    /// On Linux hosts large buffers are mapped lazily, so untouched emulated RAM costs nothing.
    pub fn new(size: usize) -> EmulatedRam {
        let layout = Layout::from_size_align(size, PAGE_SIZE).expect("emulated RAM layout");
        // SAFETY: `layout` has non-zero size (callers pass at least a page).
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null(), "cannot allocate {size} bytes of emulated RAM");
        EmulatedRam { base, layout }
    }

    pub fn size(&self) -> usize {
        self.layout.size()
    }

    /// The direct map of this RAM: physical address `pa` is `base + pa`.
    pub fn direct_map(&self) -> DirectMap {
        // SAFETY: every physical address below `size` maps into the buffer, which lives until
        // `self` is dropped; users (TestMachine) drop the allocator first.
        unsafe { DirectMap::new(self.base) }
    }
}

impl Drop for EmulatedRam {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.base, self.layout) }
    }
}

/// Small zone limits for tests: DMA below 2 MiB, DMA32 below 8 MiB, Normal above.
pub const TEST_LIMITS: ZoneLimits = ZoneLimits { dma_end: 2 * MIB, dma32_end: 8 * MIB };
/// 1 MiB sections (256 pages), so that 16 MiB of emulated RAM has several present sections and
/// a missing one.
pub const TEST_SECTION_BITS: u32 = 20;

/// A PC-like map of 16 MiB with holes, a bootloader range and firmware ranges in all three
/// zones of [`TEST_LIMITS`]. Section 8 (`[8, 9)` MiB) has no RAM at all.
pub fn standard_map() -> Vec<MemRegion> {
    use RegionKind::*;
    alloc::vec![
        MemRegion::new(0, 0x9f000, Usable),
        MemRegion::new(0x9f000, MIB, Firmware(2)),
        MemRegion::new(MIB, 3 * MIB, Usable),
        MemRegion::new(3 * MIB, 3 * MIB + 0x40000, Bootloader),
        MemRegion::new(3 * MIB + 0x40000, 7 * MIB + 0x3000, Usable),
        MemRegion::new(7 * MIB + 0x3000, 7 * MIB + 0x5000, Firmware(3)),
        MemRegion::new(7 * MIB + 0x5000, 8 * MIB, Usable),
        // [8, 9) MiB: nothing (a hole the size of a whole test section).
        MemRegion::new(9 * MIB, 16 * MIB, Usable),
    ]
}

/// Zone limits of [`small_map`]: DMA below 512 KiB, DMA32 below 1 MiB, Normal above.
pub const SMALL_LIMITS: ZoneLimits = ZoneLimits { dma_end: 0x80000, dma32_end: MIB };
/// 256 KiB sections (64 pages) for [`small_map`].
pub const SMALL_SECTION_BITS: u32 = 18;

/// A 2 MiB map (about 400 pages) with holes in all three zones of [`SMALL_LIMITS`] and a missing
/// section (`[0x140000, 0x180000)`): small enough for Miri.
pub fn small_map() -> Vec<MemRegion> {
    use RegionKind::*;
    alloc::vec![
        MemRegion::new(0, 0x60000, Usable),
        MemRegion::new(0x60000, 0x80000, Firmware(2)),
        MemRegion::new(0x80000, 0xf0000, Usable),
        MemRegion::new(0xf0000, MIB, Firmware(2)),
        MemRegion::new(MIB, 0x140000, Usable),
        MemRegion::new(0x180000, 0x1c0000, Usable),
        MemRegion::new(0x1c0000, 0x1c8000, Bootloader),
        MemRegion::new(0x1c8000, 2 * MIB, Usable),
    ]
}

/// A booted buddy allocator over emulated RAM.
pub struct TestMachine {
    // Field order matters: the node (which points into `ram`) is dropped first.
    pub node: Node,
    pub regions: Vec<MemRegion>,
    /// memblock as the node left it (retired): its reservations, for reports.
    pub memblock: MemBlock,
    ram: EmulatedRam,
}

impl TestMachine {
    /// Boots over `regions`, reserving `reserve` (start, end, label) in memblock first.
    pub fn new(
        regions: &[MemRegion],
        reserve: &[(u64, u64, &'static str)],
        limits: ZoneLimits,
        section_bits: u32,
    ) -> TestMachine {
        let end = regions.iter().map(|r| r.end).max().expect("a memory map");
        let ram = EmulatedRam::new(end.next_multiple_of(PAGE_SIZE as u64) as usize);
        let mut memblock = MemBlock::new(regions).expect("memblock");
        for &(s, e, label) in reserve {
            memblock.reserve(s, e, label).expect("test reservation");
        }
        // SAFETY: `ram` covers every address of the map, is unused, and outlives `node` (field
        // order in `TestMachine`).
        let mut vmemmap = ContiguousVmemmap::new();
        let node = unsafe {
            Node::init_with_sections(&mut memblock, ram.direct_map(), limits, section_bits, 0, &mut vmemmap)
        }
        .expect("node init");
        TestMachine { node, regions: regions.into(), memblock, ram }
    }

    /// [`standard_map`] with a 64 KiB reservation at 10 MiB (`"test reserved"`), three zones and
    /// 1 MiB sections.
    pub fn standard() -> TestMachine {
        TestMachine::new(
            &standard_map(),
            &[(10 * MIB, 10 * MIB + 0x10000, "test reserved")],
            TEST_LIMITS,
            TEST_SECTION_BITS,
        )
    }

    /// [`small_map`] with [`SMALL_LIMITS`] and [`SMALL_SECTION_BITS`].
    pub fn small() -> TestMachine {
        TestMachine::new(&small_map(), &[], SMALL_LIMITS, SMALL_SECTION_BITS)
    }

    /// Machines for tests whose cost grows with the number of pages: both natively, only
    /// [`TestMachine::small`] under Miri.
    pub fn for_heavy_tests() -> Vec<TestMachine> {
        if cfg!(miri) {
            alloc::vec![TestMachine::small()]
        } else {
            alloc::vec![TestMachine::standard(), TestMachine::small()]
        }
    }

    pub fn ram(&self) -> &EmulatedRam {
        &self.ram
    }
}

/// `PageProvider::split_page` of the test providers, whose blocks are a head descriptor in
/// state `Allocated` with the block's order: every page becomes an allocated order-0 page.
pub fn split_test_block<P: PageProvider + ?Sized>(
    prov: &P,
    pfn: Pfn,
    order: u32,
) -> Result<(), PageRefError> {
    let page = prov.page(pfn).ok_or(PageRefError::NotManaged { pfn })?;
    if page.state() != PageState::Allocated {
        return Err(PageRefError::NotRefcounted { pfn, state: page.state() });
    }
    if page.order() != order {
        return Err(PageRefError::WrongOrder { pfn, allocated: page.order(), given: order });
    }
    for i in 0..1u64 << order {
        let p = prov.page(pfn.add(i)).expect("a block's pages have descriptors");
        p.set_order(0);
        p.set_state(PageState::Allocated);
    }
    Ok(())
}

/// Byte-pattern checks for tests, as slice comparisons: `memcmp`, which Miri runs natively,
/// where `iter().all(..)` would interpret a loop iteration (and a borrow check) per byte.
pub trait FilledWith {
    /// Every byte is `v`.
    fn filled_with(&self, v: u8) -> bool;
}

impl FilledWith for [u8] {
    fn filled_with(&self, v: u8) -> bool {
        let pattern = [v; PAGE_SIZE];
        self.chunks(PAGE_SIZE).all(|c| c == &pattern[..c.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_with_sees_one_different_byte_in_any_chunk() {
        let mut b = alloc::vec![7u8; 3 * PAGE_SIZE + 5];
        assert!(b.filled_with(7) && !b.filled_with(0) && b[..0].filled_with(1));
        for i in [0, PAGE_SIZE - 1, PAGE_SIZE, 3 * PAGE_SIZE + 4] {
            b[i] = 8;
            assert!(!b.filled_with(7), "byte {i}");
            b[i] = 7;
        }
    }
}
