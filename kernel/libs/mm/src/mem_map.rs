//! mem_map: the page descriptors, sparse by sections (Linux's `CONFIG_SPARSEMEM`).
//!
//! Physical memory is cut into sections of 2^[`SECTION_SIZE_BITS`] bytes (128 MiB, as on Linux
//! x86_64). Only sections that contain usable RAM get descriptors, a full section's worth each,
//! so a large hole in the physical map costs nothing. Descriptors of present sections sit in one
//! array, section after section; two small tables translate:
//! - `section_table[section]` = index of the section's first descriptor (or [`NO_SECTION`]);
//! - `slot_section[index >> section_page_bits]` = section number of a descriptor index.
//!
//! Both directions (`pfn -> &Page`, `index -> pfn`) are O(1): a shift, one table load, an add.
//! Since every section's descriptors start at a multiple of the section size in the array,
//! `index & mask == pfn & mask`.
//!
//! For the free fast paths, `section_mem_map[section]` holds the address of the section's
//! descriptors biased by its first pfn (Linux's `section_mem_map` encoding), so `pfn -> &Page` is
//! a shift, a bounds check, one load and `biased + pfn * 32`: no masking, no second table. (A
//! virtually contiguous vmemmap would drop the load and the check; it needs page tables for the
//! descriptor array, which this crate does not map.)
//!
//! The descriptor array and tables are carved out of memblock and reached through the direct
//! map; they are never freed.

use core::fmt;
use core::ptr::NonNull;

use crate::addr::{DirectMap, Pfn, PAGE_SHIFT};
use crate::memblock::MemBlock;
use crate::page::{Page, NO_PAGE};

/// log2 of the section size in bytes (Linux x86_64: 27 = 128 MiB).
pub const SECTION_SIZE_BITS: u32 = 27;
/// Pages per section in the kernel configuration.
pub const PAGES_PER_SECTION: u64 = 1 << (SECTION_SIZE_BITS - PAGE_SHIFT);
/// "No descriptors for this section" in the section table.
pub const NO_SECTION: u32 = u32::MAX;

/// Why the memory map could not be built. Nothing has been handed out yet when this happens;
/// memblock may hold the partial allocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemMapError {
    /// There is no usable RAM at all.
    NoMemory,
    /// memblock could not provide `bytes` for `what`.
    MemBlockExhausted { what: &'static str, bytes: u64 },
    /// More page descriptors than 32-bit page indices can name.
    TooManyPages { pages: u64 },
    /// The section size is not between a page and 2^40 bytes.
    BadSectionBits { bits: u32 },
}

impl fmt::Display for MemMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemMapError::NoMemory => f.write_str("mem_map: the memory map has no usable RAM"),
            MemMapError::MemBlockExhausted { what, bytes } => {
                write!(f, "mem_map: memblock cannot provide {bytes} bytes for the {what}")
            }
            MemMapError::TooManyPages { pages } => {
                write!(f, "mem_map: {pages} page descriptors do not fit 32-bit page indices")
            }
            MemMapError::BadSectionBits { bits } => {
                write!(f, "mem_map: section size 2^{bits} is unsupported")
            }
        }
    }
}

/// The sparse array of page descriptors. See the module documentation.
pub struct MemMap {
    pages: NonNull<Page>,
    /// Per section: `pages + first index - first pfn` (wrapping), null for absent sections.
    section_mem_map: NonNull<*const Page>,
    nr_pages: usize,
    section_table: NonNull<u32>,
    nr_sections: usize,
    slot_section: NonNull<u32>,
    nr_slots: usize,
    /// log2(pages per section).
    section_page_bits: u32,
    table_bytes: u64,
}

// SAFETY: `MemMap` only hands out shared references to descriptors (whose fields are atomics or
// fixed at boot) and reads the tables, which are never written after `MemMap::new` returns. The
// memory is reserved in memblock forever, so no other owner exists.
unsafe impl Send for MemMap {}
// SAFETY: as above: after construction all access is through `&Page` (atomics) and table reads.
unsafe impl Sync for MemMap {}

impl MemMap {
    /// Sizes the map from memblock's memory, allocates the descriptors and tables from memblock
    /// (labels `"mem_map"` and `"mem_map tables"`) and initialises every descriptor as a
    /// reserved page of zone `zone_of(pfn)` in `node`. The buddy allocator then marks the free
    /// ranges.
    ///
    /// # Safety
    /// `dm` must map every usable byte of `mb`'s memory, and memory memblock allocates must be
    /// unused: the descriptor array and tables are written through `dm` and kept forever.
    pub unsafe fn new(
        mb: &mut MemBlock,
        dm: DirectMap,
        section_bits: u32,
        node: u8,
        zone_of: impl Fn(u64) -> u8,
    ) -> Result<MemMap, MemMapError> {
        if !(PAGE_SHIFT..=40).contains(&section_bits) {
            return Err(MemMapError::BadSectionBits { bits: section_bits });
        }
        let section_page_bits = section_bits - PAGE_SHIFT;
        let pps = 1u64 << section_page_bits;
        let last = mb.memory().last().ok_or(MemMapError::NoMemory)?;
        let max_pfn = last.end >> PAGE_SHIFT;
        let nr_sections = max_pfn.div_ceil(pps) as usize;

        // Present sections: those a memory range touches.
        let mut nr_slots = 0usize;
        let mut prev_section = None;
        for r in mb.memory() {
            let first = (r.start >> PAGE_SHIFT) >> section_page_bits;
            let last = ((r.end >> PAGE_SHIFT) - 1) >> section_page_bits;
            for s in first..=last {
                if prev_section != Some(s) {
                    nr_slots += 1;
                    prev_section = Some(s);
                }
            }
        }
        let nr_pages = nr_slots as u64 * pps;
        if nr_pages >= NO_PAGE as u64 {
            return Err(MemMapError::TooManyPages { pages: nr_pages });
        }

        let table_bytes = (8 * nr_sections + 4 * (nr_sections + nr_slots)) as u64;
        let tables = mb
            .alloc(table_bytes, 64, "mem_map tables")
            .ok_or(MemMapError::MemBlockExhausted { what: "mem_map tables", bytes: table_bytes })?;
        let map_bytes = nr_pages * core::mem::size_of::<Page>() as u64;
        let map = mb
            .alloc(map_bytes, 64, "mem_map")
            .ok_or(MemMapError::MemBlockExhausted { what: "mem_map", bytes: map_bytes })?;

        let section_mem_map = dm.virt(tables) as *mut *const Page;
        // SAFETY: the tables are a fresh memblock allocation of `table_bytes` bytes, mapped by
        // `dm` (caller's contract) and owned by us: `nr_sections` pointers (8-aligned: the base
        // is 64-aligned), then `nr_sections + nr_slots` u32s.
        let section_table = unsafe { section_mem_map.add(nr_sections) } as *mut u32;
        // SAFETY: as above.
        let slot_section = unsafe { section_table.add(nr_sections) };
        for s in 0..nr_sections {
            // SAFETY: `s < nr_sections`, inside the table allocation (see above).
            unsafe {
                section_table.add(s).write(NO_SECTION);
                section_mem_map.add(s).write(core::ptr::null());
            }
        }
        let pages = dm.virt(map) as *mut Page;
        let mut slot = 0usize;
        let mut prev_section = None;
        for r in mb.memory() {
            let first = (r.start >> PAGE_SHIFT) >> section_page_bits;
            let last = ((r.end >> PAGE_SHIFT) - 1) >> section_page_bits;
            for s in first..=last {
                if prev_section == Some(s) {
                    continue;
                }
                prev_section = Some(s);
                // SAFETY: `s < nr_sections` and `slot < nr_slots` (counted the same way above).
                unsafe {
                    section_table.add(s as usize).write((slot as u64 * pps) as u32);
                    slot_section.add(slot).write(s as u32);
                }
                let base_pfn = s << section_page_bits;
                let base_idx = slot as u64 * pps;
                // Biased by the first pfn: `biased + pfn` is the descriptor of `pfn` for every pfn
                // of the section (wrapping arithmetic; only those in-bounds results are used).
                let biased =
                    (pages as *const Page).wrapping_add(base_idx as usize).wrapping_sub(base_pfn as usize);
                // A null `biased` would read as an absent section; impossible for a direct-map
                // array (kernel addresses lie far above any pfn * 32), checked anyway.
                assert!(!biased.is_null(), "mem_map: biased section pointer is null");
                // SAFETY: `s < nr_sections` (see above).
                unsafe { section_mem_map.add(s as usize).write(biased) };
                // Bulk initialisation: one 32-byte store per page (`zone_of` is two compares).
                for i in 0..pps {
                    let desc = Page::new_reserved(zone_of(base_pfn + i), node);
                    // SAFETY: `base_idx + i < nr_pages`: inside the fresh descriptor allocation,
                    // which is suitably aligned (page aligned base).
                    unsafe { pages.add((base_idx + i) as usize).write(desc) };
                }
                slot += 1;
            }
        }
        Ok(MemMap {
            // SAFETY: direct-map pointers of allocated RAM are never null.
            pages: unsafe { NonNull::new_unchecked(pages) },
            // SAFETY: as above.
            section_mem_map: unsafe { NonNull::new_unchecked(section_mem_map) },
            nr_pages: nr_pages as usize,
            // SAFETY: as above.
            section_table: unsafe { NonNull::new_unchecked(section_table) },
            nr_sections,
            // SAFETY: as above.
            slot_section: unsafe { NonNull::new_unchecked(slot_section) },
            nr_slots,
            section_page_bits,
            table_bytes,
        })
    }

    /// The descriptor index of `pfn`, if its section has descriptors.
    #[inline]
    pub fn pfn_to_index(&self, pfn: Pfn) -> Option<u32> {
        let section = (pfn.0 >> self.section_page_bits) as usize;
        if section >= self.nr_sections {
            return None;
        }
        // SAFETY: `section < nr_sections`; the table is initialised and never written again.
        let base = unsafe { *self.section_table.as_ptr().add(section) };
        if base == NO_SECTION {
            return None;
        }
        Some(base | (pfn.0 & ((1 << self.section_page_bits) - 1)) as u32)
    }

    /// The page frame of descriptor `index` (which must be `< nr_pages`).
    #[inline]
    pub fn index_to_pfn(&self, index: u32) -> Pfn {
        let slot = (index >> self.section_page_bits) as usize;
        assert!(slot < self.nr_slots, "page index {index} out of range");
        // SAFETY: `slot < nr_slots`; the table is initialised and never written again.
        let section = unsafe { *self.slot_section.as_ptr().add(slot) } as u64;
        Pfn((section << self.section_page_bits) | (index as u64 & ((1 << self.section_page_bits) - 1)))
    }

    /// The descriptor at `index`. Panics when out of range.
    #[inline]
    pub fn page_at(&self, index: u32) -> &Page {
        assert!((index as usize) < self.nr_pages, "page index {index} out of range");
        // SAFETY: in bounds; the descriptors are initialised and live as long as `self`.
        unsafe { &*self.pages.as_ptr().add(index as usize) }
    }

    /// The descriptor at `index` without the bounds check (for the allocator's fast paths,
    /// whose indices come from its own lists and from [`MemMap::pfn_to_index`]).
    ///
    /// # Safety
    /// `index < self.nr_pages()`.
    #[inline]
    pub unsafe fn page_at_unchecked(&self, index: u32) -> &Page {
        debug_assert!((index as usize) < self.nr_pages);
        // SAFETY: in bounds (caller's contract); descriptors live as long as `self`.
        unsafe { &*self.pages.as_ptr().add(index as usize) }
    }

    /// The descriptor of `pfn`, if its section has descriptors (holes inside a present section
    /// have reserved descriptors). One table load (see the module documentation).
    #[inline]
    pub fn page(&self, pfn: Pfn) -> Option<&Page> {
        // `wrapping_shr`: the shift is below 64 by construction; no overflow check needed.
        let section = pfn.0.wrapping_shr(self.section_page_bits) as usize;
        if section >= self.nr_sections {
            return None;
        }
        // SAFETY: `section < nr_sections`; the table is initialised and never written again.
        let biased = unsafe { *self.section_mem_map.as_ptr().add(section) };
        if biased.is_null() {
            return None;
        }
        // SAFETY: `biased + pfn` is the descriptor of `pfn` inside the section's descriptors,
        // which are initialised and live as long as `self`.
        Some(unsafe { &*biased.wrapping_add(pfn.0 as usize) })
    }

    /// The index of a descriptor of this map (`None` for any other reference).
    pub fn page_to_index(&self, page: &Page) -> Option<u32> {
        let offset = (page as *const Page as usize).wrapping_sub(self.pages.as_ptr() as usize);
        let index = offset / core::mem::size_of::<Page>();
        (offset.is_multiple_of(core::mem::size_of::<Page>()) && index < self.nr_pages).then_some(index as u32)
    }

    /// The page frame a descriptor of this map stands for.
    pub fn page_to_pfn(&self, page: &Page) -> Option<Pfn> {
        self.page_to_index(page).map(|i| self.index_to_pfn(i))
    }

    /// Number of descriptors (present sections × pages per section).
    #[inline]
    pub fn nr_pages(&self) -> usize {
        self.nr_pages
    }

    /// Number of sections with descriptors, and of sections up to the highest RAM address.
    pub fn nr_present_sections(&self) -> usize {
        self.nr_slots
    }
    pub fn nr_sections(&self) -> usize {
        self.nr_sections
    }

    /// log2 of the pages per section.
    #[inline]
    pub fn section_page_bits(&self) -> u32 {
        self.section_page_bits
    }

    /// Pages per section.
    pub fn pages_per_section(&self) -> u64 {
        1 << self.section_page_bits
    }

    /// Size of one descriptor (32 bytes).
    pub const fn descriptor_size(&self) -> usize {
        core::mem::size_of::<Page>()
    }

    /// Bytes used by the descriptor array.
    pub fn descriptor_bytes(&self) -> u64 {
        (self.nr_pages * core::mem::size_of::<Page>()) as u64
    }

    /// Bytes used by the section tables.
    pub fn table_bytes(&self) -> u64 {
        self.table_bytes
    }
}
