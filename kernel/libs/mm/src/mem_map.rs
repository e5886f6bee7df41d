//! mem_map: the page descriptors in a virtually contiguous array (Linux's
//! `CONFIG_SPARSEMEM_VMEMMAP`).
//!
//! Physical memory is cut into sections of 2^[`SECTION_SIZE_BITS`] bytes (128 MiB, as on Linux
//! x86_64). The descriptors live in one virtual array, `vmemmap`, indexed by pfn:
//! `descriptor(pfn) = vmemmap + pfn * 32`, as Linux's `__pfn_to_page` is `vmemmap + pfn`. Only the
//! parts of that array which describe sections with RAM are backed by memory of their own; the
//! embedder's [`VmemmapBacking`] provides them (the kernel maps memblock pages there with real page
//! tables, [`VmemmapPageTables`]; host tests use one contiguous buffer, [`ContiguousVmemmap`]).
//!
//! Holes: the array covers every pfn below [`MemMap::end_pfn`] (the end of the last section with
//! RAM). Descriptors of sections without RAM are "absent" ([`Page::new_absent`]); the kernel maps
//! all of them read-only to one shared page of absent descriptors, so they cost a page-table
//! entry, not memory, and can never be written. Pfns at or above `end_pfn` have no array at all.
//! Why this and not a per-section "present" check: [`MemMap::page`] is then one compare with
//! `end_pfn` (a field next to the base) and, after the add, a one-byte compare of the descriptor's
//! zone, which sits in the same cache line as the state byte every caller reads next; a section
//! check would be a dependent load from a section table before the descriptor can be addressed,
//! the load this layout exists to drop. The slab owner lookup (`kfree`) skips even the zone test
//! ([`MemMap::descriptor`]): an absent descriptor is reserved with no compound head, which it
//! refuses anyway. The answers are exactly those of the sparse map before it:
//! `None` past the last section and in sections without RAM, `Some(reserved)` for holes inside a
//! section with RAM, so every bad-input error of the free paths stays as it was.
//!
//! Descriptor indices (the buddy and slab list links) are pfns: `index_to_pfn` is the identity,
//! and 32-bit indices cover pfns below 2^32 - 1 (16 TiB of physical memory).
//!
//! The descriptors (and the kernel's page tables for them) are carved out of memblock and never
//! freed.

use core::fmt;
use core::ptr::NonNull;

use crate::addr::{DirectMap, Pfn, PAGE_SHIFT};
use crate::memblock::MemBlock;
use crate::page::{Page, NO_PAGE};

mod contiguous;
mod pgtable;
#[cfg(test)]
mod tests;

pub use contiguous::ContiguousVmemmap;
pub use pgtable::VmemmapPageTables;

/// log2 of the section size in bytes (Linux x86_64: 27 = 128 MiB).
pub const SECTION_SIZE_BITS: u32 = 27;
/// Pages per section in the kernel configuration.
pub const PAGES_PER_SECTION: u64 = 1 << (SECTION_SIZE_BITS - PAGE_SHIFT);

/// Why the memory map could not be built. Nothing has been handed out yet when this happens;
/// memblock may hold the partial allocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemMapError {
    /// There is no usable RAM at all.
    NoMemory,
    /// memblock could not provide `bytes` for `what`.
    MemBlockExhausted { what: &'static str, bytes: u64 },
    /// Pfns up to `pages` do not fit 32-bit page indices.
    TooManyPages { pages: u64 },
    /// The section size is not between a page and 2^40 bytes (or, for page-table backing, a
    /// section's descriptors do not fill whole pages).
    BadSectionBits { bits: u32 },
    /// The vmemmap region of `size` bytes cannot hold the `needed` bytes of descriptors.
    VmemmapTooSmall { needed: u64, size: u64 },
    /// Something is already mapped at `addr`, inside the vmemmap region.
    VmemmapOccupied { addr: u64 },
    /// The descriptors of the section at `pfn` do not start on a page boundary, so pages cannot
    /// be mapped for them (sections below 128 pages).
    VmemmapUnaligned { pfn: u64 },
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
            MemMapError::VmemmapTooSmall { needed, size } => {
                write!(f, "mem_map: {needed} bytes of descriptors do not fit the {size}-byte vmemmap")
            }
            MemMapError::VmemmapOccupied { addr } => {
                write!(f, "mem_map: {addr:#x} in the vmemmap region is already mapped")
            }
            MemMapError::VmemmapUnaligned { pfn } => {
                write!(f, "mem_map: the descriptors of pfn {pfn:#x} do not start a page of the vmemmap")
            }
        }
    }
}

/// What backing the descriptor array cost (for the boot report and meminfo's figures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmemmapUsage {
    /// Bytes of memory holding descriptors (memblock label `"mem_map"`).
    pub descriptor_bytes: u64,
    /// Bytes of page-table pages and of the shared page of absent descriptors (memblock label
    /// `"vmemmap"`); 0 without page tables.
    pub table_bytes: u64,
    /// Page-table pages allocated (PDPT, PD and PT pages).
    pub page_tables: u64,
    /// 2 MiB mappings of descriptors (Linux's `vmemmap_populate_hugepages`).
    pub pmd_mappings: u64,
    /// 4 KiB mappings of descriptors.
    pub pte_mappings: u64,
    /// 4 KiB read-only entries naming the shared page of absent descriptors.
    pub hole_ptes: u64,
    /// PMD entries naming the shared page table of such entries (2 MiB stretches without RAM).
    pub hole_pmds: u64,
}

/// Memory behind the virtual descriptor array, provided by the embedder of [`MemMap`].
///
/// # Safety
/// Implementations promise, for the life of every [`MemMap`] built with them:
/// - [`VmemmapBacking::init`] returns a base `b` aligned to 32 such that `b + pfn` (in
///   descriptors) is a distinct address for each pfn below `end_pfn`;
/// - after `populate(start, end)` returns `Ok`, the descriptors of `[start, end)` are readable and
///   writable memory used by nothing else, never unmapped;
/// - after `populate_hole(start, end)` returns `Ok`, the descriptors of `[start, end)` are readable,
///   hold [`Page::new_absent`] descriptors and never change.
pub unsafe trait VmemmapBacking {
    /// Prepares the array for pfns `[0, end_pfn)`; returns its base (the descriptor of pfn 0).
    fn init(&mut self, mb: &mut MemBlock, dm: DirectMap, end_pfn: u64) -> Result<NonNull<Page>, MemMapError>;
    /// Backs the descriptors of `[start, end)` (whole sections with RAM) with writable memory.
    fn populate(&mut self, mb: &mut MemBlock, dm: DirectMap, start: Pfn, end: Pfn)
        -> Result<(), MemMapError>;
    /// Makes the descriptors of `[start, end)` (whole sections without RAM) read as absent.
    fn populate_hole(
        &mut self,
        mb: &mut MemBlock,
        dm: DirectMap,
        start: Pfn,
        end: Pfn,
    ) -> Result<(), MemMapError>;
    /// What the backing took so far.
    fn usage(&self) -> VmemmapUsage;
}

/// The virtual array of page descriptors. See the module documentation.
pub struct MemMap {
    /// The descriptor of pfn 0 (`vmemmap`).
    base: NonNull<Page>,
    /// Pfns below this have a descriptor (absent ones in holes): whole sections.
    end_pfn: u64,
    /// Descriptors of sections with RAM.
    nr_pages: usize,
    nr_sections: usize,
    nr_present_sections: usize,
    /// log2(pages per section).
    section_page_bits: u32,
    usage: VmemmapUsage,
}

// SAFETY: `MemMap` only hands out shared references to descriptors (whose fields are atomics or
// fixed at boot). The memory is the backing's forever, so no other owner exists.
unsafe impl Send for MemMap {}
// SAFETY: as above: after construction all access is through `&Page` (atomics).
unsafe impl Sync for MemMap {}

/// The next run `[first, end)` of consecutive sections with RAM, from memblock's memory range
/// `*next` on (which it advances past the run).
fn next_present_run(mb: &MemBlock, section_page_bits: u32, next: &mut usize) -> Option<(u64, u64)> {
    let sections = |r: &crate::memblock::MemBlockRange| {
        ((r.start >> PAGE_SHIFT) >> section_page_bits, (((r.end >> PAGE_SHIFT) - 1) >> section_page_bits) + 1)
    };
    let ranges = mb.memory();
    let (first, mut end) = sections(ranges.get(*next)?);
    *next += 1;
    // memblock's memory is sorted and merged: a range starts in or after the run's last section.
    while let Some((f, e)) = ranges.get(*next).map(sections) {
        if f > end {
            break;
        }
        end = end.max(e);
        *next += 1;
    }
    Some((first, end))
}

impl MemMap {
    /// Sizes the map from memblock's memory, has `backing` back the descriptors of every
    /// section with RAM (and show absent descriptors for the others), and initialises every
    /// backed descriptor as a reserved page of zone `zone_of(pfn)` in `node`. The buddy
    /// allocator then marks the free ranges.
    ///
    /// # Safety
    /// `dm` must map every usable byte of `mb`'s memory, and memory memblock allocates must be
    /// unused: the backing writes through `dm` and keeps what it allocates forever.
    pub unsafe fn new(
        mb: &mut MemBlock,
        dm: DirectMap,
        section_bits: u32,
        node: u8,
        zone_of: impl Fn(u64) -> u8,
        backing: &mut dyn VmemmapBacking,
    ) -> Result<MemMap, MemMapError> {
        if !(PAGE_SHIFT..=40).contains(&section_bits) {
            return Err(MemMapError::BadSectionBits { bits: section_bits });
        }
        let section_page_bits = section_bits - PAGE_SHIFT;
        let last = mb.memory().last().ok_or(MemMapError::NoMemory)?;
        let nr_sections = ((((last.end >> PAGE_SHIFT) - 1) >> section_page_bits) + 1) as usize;
        let end_pfn = (nr_sections as u64) << section_page_bits;
        // Indices are pfns; `NO_PAGE` must stay free.
        if end_pfn > NO_PAGE as u64 {
            return Err(MemMapError::TooManyPages { pages: end_pfn });
        }
        let base = backing.init(mb, dm, end_pfn)?;
        let mut nr_present_sections = 0usize;
        let (mut hole_start, mut next) = (0u64, 0usize);
        while let Some((first, end)) = next_present_run(mb, section_page_bits, &mut next) {
            let (run_start, run_end) = (first << section_page_bits, end << section_page_bits);
            if hole_start < run_start {
                backing.populate_hole(mb, dm, Pfn(hole_start), Pfn(run_start))?;
            }
            backing.populate(mb, dm, Pfn(run_start), Pfn(run_end))?;
            // Bulk initialisation: one 32-byte store per page (`zone_of` is two compares).
            for pfn in run_start..run_end {
                // SAFETY: `pfn < end_pfn` of the array and just populated (the backing's
                // contract): writable, aligned, ours.
                unsafe { base.as_ptr().add(pfn as usize).write(Page::new_reserved(zone_of(pfn), node)) };
            }
            nr_present_sections += (end - first) as usize;
            hole_start = run_end;
        }
        Ok(MemMap {
            base,
            end_pfn,
            nr_pages: nr_present_sections << section_page_bits,
            nr_sections,
            nr_present_sections,
            section_page_bits,
            usage: backing.usage(),
        })
    }

    /// The descriptor of `pfn`: `vmemmap + pfn` below [`MemMap::end_pfn`], `None` when its
    /// section has no RAM or it is past the last section (holes inside a section with RAM have
    /// reserved descriptors). No table load (see the module documentation).
    #[inline(always)]
    pub fn page(&self, pfn: Pfn) -> Option<&Page> {
        self.descriptor(pfn).filter(|p| !p.is_absent())
    }

    /// `vmemmap + pfn` below [`MemMap::end_pfn`], absent descriptors ([`Page::is_absent`])
    /// included: for lookups that only accept owned states, which an absent descriptor (reserved,
    /// no compound head) never has, so skipping [`MemMap::page`]'s absent test changes no answer.
    #[inline(always)]
    pub fn descriptor(&self, pfn: Pfn) -> Option<&Page> {
        if pfn.0 >= self.end_pfn {
            return None;
        }
        // SAFETY: every pfn below `end_pfn` has a readable, initialised descriptor (populated or
        // absent, the backing's contract) living as long as `self`.
        Some(unsafe { &*self.base.as_ptr().add(pfn.0 as usize) })
    }

    /// Is there a descriptor for `pfn` (Linux's `pfn_valid`)? True for holes inside a section
    /// with RAM too (their descriptors are reserved), as on Linux.
    #[inline]
    pub fn pfn_valid(&self, pfn: Pfn) -> bool {
        self.page(pfn).is_some()
    }

    /// The descriptor index of `pfn` (the pfn itself), if it has a descriptor.
    #[inline]
    pub fn pfn_to_index(&self, pfn: Pfn) -> Option<u32> {
        self.pfn_valid(pfn).then_some(pfn.0 as u32)
    }

    /// The page frame of descriptor `index`: indices are pfns.
    #[inline(always)]
    pub fn index_to_pfn(&self, index: u32) -> Pfn {
        debug_assert!((index as u64) < self.end_pfn, "page index {index} out of range");
        Pfn(index as u64)
    }

    /// The descriptor at `index`. Panics when out of range or absent.
    #[inline]
    pub fn page_at(&self, index: u32) -> &Page {
        match self.page(Pfn(index as u64)) {
            Some(p) => p,
            None => panic!("page index {index} has no descriptor"),
        }
    }

    /// The descriptor at `index` without the checks (for the allocator's fast paths, whose
    /// indices come from its own lists and from [`MemMap::pfn_to_index`]).
    ///
    /// # Safety
    /// `index < self.end_pfn()`.
    #[inline(always)]
    pub unsafe fn page_at_unchecked(&self, index: u32) -> &Page {
        debug_assert!((index as u64) < self.end_pfn);
        // SAFETY: in bounds (caller's contract); descriptors live as long as `self`.
        unsafe { &*self.base.as_ptr().add(index as usize) }
    }

    /// The index of a descriptor of this map (`None` for any other reference).
    pub fn page_to_index(&self, page: &Page) -> Option<u32> {
        let offset = (page as *const Page as usize).wrapping_sub(self.base.as_ptr() as usize);
        let index = (offset / core::mem::size_of::<Page>()) as u64;
        (offset.is_multiple_of(core::mem::size_of::<Page>()) && index < self.end_pfn && !page.is_absent())
            .then_some(index as u32)
    }

    /// The page frame a descriptor of this map stands for (Linux's `page_to_pfn`).
    pub fn page_to_pfn(&self, page: &Page) -> Option<Pfn> {
        self.page_to_index(page).map(|i| self.index_to_pfn(i))
    }

    /// Address of the descriptor array (`vmemmap`, the descriptor of pfn 0).
    pub fn vmemmap_base(&self) -> *const Page {
        self.base.as_ptr()
    }

    /// Pfns below this have a descriptor in the array (absent ones in sections without RAM).
    #[inline]
    pub fn end_pfn(&self) -> u64 {
        self.end_pfn
    }

    /// Number of descriptors of sections with RAM (sections × pages per section).
    #[inline]
    pub fn nr_pages(&self) -> usize {
        self.nr_pages
    }

    /// Number of sections with descriptors, and of sections up to the highest RAM address.
    pub fn nr_present_sections(&self) -> usize {
        self.nr_present_sections
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

    /// Bytes of memory holding descriptors (what the backing allocated for them).
    pub fn descriptor_bytes(&self) -> u64 {
        self.usage.descriptor_bytes
    }

    /// Bytes of the vmemmap's page tables and shared page of absent descriptors.
    pub fn table_bytes(&self) -> u64 {
        self.usage.table_bytes
    }

    /// Everything the backing took.
    pub fn vmemmap_usage(&self) -> VmemmapUsage {
        self.usage
    }
}
