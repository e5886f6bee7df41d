//! The page descriptor (Linux's `struct page`): one per page frame, 32 bytes.
//!
//! Descriptors are shared by every layer (buddy, slab, vmalloc, page tables), each owning the
//! fields of the pages it holds, so the fields are atomics used with `Relaxed` ordering: plain
//! loads and stores on x86_64, but `Sync` without `unsafe`. Who may write which field is decided
//! by the page's [`PageState`] and the lock of the layer that owns the page.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering::Relaxed};

use crate::addr::{DirectMap, Pfn};
use crate::buddy::PageRefError;
use crate::gfp::GfpFlags;
use crate::AllocError;

/// Largest buddy order: blocks of 2^10 pages = 4 MiB (Linux's `MAX_PAGE_ORDER`).
pub const MAX_PAGE_ORDER: u32 = 10;
/// Number of orders, `0..=MAX_PAGE_ORDER` (Linux's `NR_PAGE_ORDERS`).
pub const NR_PAGE_ORDERS: usize = MAX_PAGE_ORDER as usize + 1;

/// "No page" in the 32-bit page-index links.
pub const NO_PAGE: u32 = u32::MAX;

/// The zone byte of an absent descriptor ([`Page::new_absent`]): no zone has this index.
pub const NO_ZONE: u8 = u8::MAX;

/// What a page frame is used for. Stored in [`Page::state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageState {
    /// Not managed: firmware, holes, kernel image, boot-time structures. Never handed out.
    Reserved = 0,
    /// Head of a free buddy block of order [`Page::order`] (Linux's `PageBuddy`).
    Buddy = 1,
    /// Inside a free buddy block, not its head.
    FreeTail = 2,
    /// Head of a block handed out by the page allocator, order in [`Page::order`].
    Allocated = 3,
    /// Head of a slab (a block owned by a `kmem_cache`); `private` points at the cache.
    Slab = 4,
    /// Head of a kmalloc-large block (above `KMALLOC_MAX_CACHE_SIZE`).
    KmallocLarge = 5,
    /// A frame mapped into a vmalloc area.
    Vmalloc = 6,
    /// A page-table page.
    PageTable = 7,
    /// A free order-0 page on a per-CPU page list (Linux's pcp lists): free, but not a buddy
    /// (never merged, not counted in the zone's free pages) until the list gives it back.
    PcpFree = 8,
}

impl PageState {
    #[inline]
    pub fn from_u8(v: u8) -> PageState {
        match v {
            1 => PageState::Buddy,
            2 => PageState::FreeTail,
            3 => PageState::Allocated,
            4 => PageState::Slab,
            5 => PageState::KmallocLarge,
            6 => PageState::Vmalloc,
            7 => PageState::PageTable,
            8 => PageState::PcpFree,
            _ => PageState::Reserved,
        }
    }

    /// Is the block in use by someone (as opposed to free or reserved)?
    pub fn is_in_use(self) -> bool {
        !matches!(self, PageState::Reserved | PageState::Buddy | PageState::FreeTail | PageState::PcpFree)
    }

    pub fn name(self) -> &'static str {
        match self {
            PageState::Reserved => "reserved",
            PageState::Buddy => "free (buddy head)",
            PageState::FreeTail => "free (inside a buddy block)",
            PageState::Allocated => "allocated",
            PageState::Slab => "slab",
            PageState::KmallocLarge => "kmalloc-large",
            PageState::Vmalloc => "vmalloc",
            PageState::PageTable => "page table",
            PageState::PcpFree => "free (on a per-CPU page list)",
        }
    }
}

/// One page frame's descriptor. 32 bytes (Linux's `struct page` is 64).
#[repr(C)]
pub struct Page {
    /// [`PageState`] as `u8`.
    state: AtomicU8,
    /// Buddy order of the block this page heads (meaningful for heads only).
    order: AtomicU8,
    /// Zone index (`ZoneType as u8`); fixed at boot.
    zone: u8,
    /// NUMA node; fixed at boot (always 0 for now).
    node: u8,
    /// Owner-defined counters. Slab: objects in use (low 16 bits) and objects per slab (high 16).
    pub counters: AtomicU32,
    /// Intrusive list links as page indices ([`NO_PAGE`] = none): buddy free lists, slab lists.
    pub next: AtomicU32,
    pub prev: AtomicU32,
    /// Owner-defined word. Slab: the owning cache. vmalloc: the area's start address. Tail of
    /// a compound block (slab or kmalloc-large): `head pfn << 1 | 1` (see [`Page::set_compound_head`]).
    pub private: AtomicUsize,
    /// Owner-defined word. Slab: the (encoded) free-list head of the slab.
    pub freelist: AtomicUsize,
}

const _: () = assert!(core::mem::size_of::<Page>() == 32);

impl Page {
    /// A reserved page of `zone` in `node`, not on any list.
    pub const fn new_reserved(zone: u8, node: u8) -> Page {
        Page {
            state: AtomicU8::new(PageState::Reserved as u8),
            order: AtomicU8::new(0),
            zone,
            node,
            counters: AtomicU32::new(0),
            next: AtomicU32::new(NO_PAGE),
            prev: AtomicU32::new(NO_PAGE),
            private: AtomicUsize::new(0),
            freelist: AtomicUsize::new(0),
        }
    }

    /// The descriptor of a pfn without RAM or descriptors (a section the memory map has no RAM
    /// in): what the vmemmap shows for holes (`crate::mem_map`). Reserved, in no zone
    /// ([`NO_ZONE`]), no compound tail: every path that looks at a descriptor refuses it, and
    /// [`crate::mem_map::MemMap::page`] answers `None` for it.
    pub const fn new_absent() -> Page {
        Page::new_reserved(NO_ZONE, u8::MAX)
    }

    /// Is this an absent descriptor ([`Page::new_absent`])? One byte compare.
    #[inline(always)]
    pub fn is_absent(&self) -> bool {
        self.zone == NO_ZONE
    }

    #[inline]
    pub fn state(&self) -> PageState {
        PageState::from_u8(self.state.load(Relaxed))
    }
    /// Is the page in state `s`? (One byte compare: what the fast paths use.)
    #[inline(always)]
    pub fn state_is(&self, s: PageState) -> bool {
        self.state.load(Relaxed) == s as u8
    }
    #[inline]
    pub fn set_state(&self, state: PageState) {
        self.state.store(state as u8, Relaxed)
    }
    /// Atomically moves the page from state `from` to `to`; `false` (nothing changed) if the
    /// state was not `from`. Lets a free path claim a page without a lock that covers every
    /// path to it (two CPUs freeing the same page cannot both win).
    #[inline]
    pub fn try_set_state(&self, from: PageState, to: PageState) -> bool {
        self.state.compare_exchange(from as u8, to as u8, Relaxed, Relaxed).is_ok()
    }
    #[inline]
    pub fn order(&self) -> u32 {
        self.order.load(Relaxed) as u32
    }
    #[inline]
    pub fn set_order(&self, order: u32) {
        self.order.store(order as u8, Relaxed)
    }
    #[inline]
    pub fn zone(&self) -> u8 {
        self.zone
    }
    #[inline]
    pub fn node(&self) -> u8 {
        self.node
    }
}

/// Compound pages (Linux's `compound_head`): the tail descriptors of a multi-page slab or
/// kmalloc-large block name their head in `private` with bit 0 set, so an address anywhere in the
/// block finds its owner in two descriptor loads instead of a probe per order. Heads keep their
/// own `private` (the cache), whose bit 0 is clear (caches are 8-aligned). Tail states are left as
/// the page allocator keeps them; the tag is cleared before the block goes back to it, and
/// readers check the head's state and extent, so a stale word can never name a wrong owner.
impl Page {
    /// Marks this descriptor as a tail of the compound block headed by `head`.
    #[inline]
    pub fn set_compound_head(&self, head: Pfn) {
        self.private.store(((head.0 as usize) << 1) | 1, Relaxed)
    }

    /// Clears the tail mark (the block is being freed).
    #[inline]
    pub fn clear_compound_head(&self) {
        self.private.store(0, Relaxed)
    }

    /// The head this descriptor names if it is marked as a compound tail. A claim only: the
    /// caller checks that the head's block covers the tail.
    #[inline]
    pub fn compound_head(&self) -> Option<Pfn> {
        let link = self.private.load(Relaxed);
        (link & 1 != 0).then_some(Pfn((link >> 1) as u64))
    }
}

/// Marks the tails `head + 1 .. head + 2^order` of a block as compound tails of `head`
/// (`prep_compound_page`). Tails the provider does not describe are skipped (never looked up).
pub fn prep_compound_page<P: PageProvider + ?Sized>(provider: &P, head: Pfn, order: u32) {
    for i in 1..1u64 << order {
        if let Some(p) = provider.page(Pfn(head.0 + i)) {
            p.set_compound_head(head);
        }
    }
}

/// Undoes [`prep_compound_page`] before the block is freed.
pub fn clear_compound_page<P: PageProvider + ?Sized>(provider: &P, head: Pfn, order: u32) {
    for i in 1..1u64 << order {
        if let Some(p) = provider.page(Pfn(head.0 + i)) {
            p.clear_compound_head();
        }
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("state", &self.state())
            .field("order", &self.order())
            .field("zone", &self.zone)
            .field("private", &format_args!("{:#x}", self.private.load(Relaxed)))
            .finish()
    }
}

/// Why the page allocator refused to free a block. The allocator's state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreePagesError {
    /// The order is above [`MAX_PAGE_ORDER`].
    OrderTooLarge { order: u32 },
    /// The address is not page aligned (or not aligned to the order).
    Misaligned { pfn: Pfn, order: u32 },
    /// The frame is outside the RAM this allocator manages.
    NotManaged { pfn: Pfn },
    /// The frame is reserved (firmware, kernel image, boot structures, holes).
    Reserved { pfn: Pfn },
    /// The block is already free: a double free. `head`/`order` name the free block holding it.
    DoubleFree { pfn: Pfn, head: Pfn, order: u32 },
    /// The block was allocated with another order.
    WrongOrder { pfn: Pfn, allocated: u32, given: u32 },
    /// The frame lies inside an allocated block whose head is `head`: an interior pointer.
    NotBlockHead { pfn: Pfn, head: Pfn, order: u32 },
    /// The block belongs to another layer (slab, vmalloc, page tables) and must be freed there.
    WrongOwner { pfn: Pfn, state: PageState },
}

impl fmt::Display for FreePagesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FreePagesError::*;
        match *self {
            OrderTooLarge { order } => write!(f, "order {order} is above MAX_PAGE_ORDER ({MAX_PAGE_ORDER})"),
            Misaligned { pfn, order } => {
                write!(
                    f,
                    "{:#x} is not the start of an order-{order} block (misaligned)",
                    pfn.phys().as_u64()
                )
            }
            NotManaged { pfn } => write!(f, "{:#x} is outside managed RAM", pfn.phys().as_u64()),
            Reserved { pfn } => write!(f, "{:#x} is a reserved page", pfn.phys().as_u64()),
            DoubleFree { pfn, head, order } => write!(
                f,
                "double free of {:#x}: it is already free (inside the free order-{order} block at {:#x})",
                pfn.phys().as_u64(),
                head.phys().as_u64()
            ),
            WrongOrder { pfn, allocated, given } => write!(
                f,
                "{:#x} was allocated with order {allocated} but freed with order {given}",
                pfn.phys().as_u64()
            ),
            NotBlockHead { pfn, head, order } => write!(
                f,
                "{:#x} is inside the allocated order-{order} block at {:#x}, not its start",
                pfn.phys().as_u64(),
                head.phys().as_u64()
            ),
            WrongOwner { pfn, state } => {
                write!(f, "{:#x} is a {} page; free it through its owner", pfn.phys().as_u64(), state.name())
            }
        }
    }
}

/// What a layer above the buddy allocator (slab, kmalloc-large, vmalloc, page tables) needs from
/// it. The buddy allocator implements it; host tests of the upper layers may use a simple model.
pub trait PageProvider: Sync {
    /// Allocates 2^order contiguous frames; the head's descriptor is in state `Allocated`.
    fn alloc_pages(&self, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError>;
    /// Frees a block from `alloc_pages`. The head must be back in state `Allocated`.
    fn free_pages(&self, pfn: Pfn, order: u32) -> Result<(), FreePagesError>;
    /// Linux's `alloc_pages_bulk` (page-array form): fills the `None` entries of `pages` with
    /// order-0 pages and returns the number of entries populated from the start. The default
    /// allocates one page at a time up to the first failure; the buddy allocator holds its
    /// per-CPU list once per batch.
    fn alloc_pages_bulk(&self, gfp: GfpFlags, pages: &mut [Option<Pfn>]) -> usize {
        let mut n = 0;
        for slot in pages.iter_mut() {
            if slot.is_none() {
                match self.alloc_pages(gfp, 0) {
                    Ok(pfn) => *slot = Some(pfn),
                    Err(_) => break,
                }
            }
            n += 1;
        }
        n
    }
    /// Linux's `split_page`: the non-compound block of `order` at `pfn` (from `alloc_pages`)
    /// becomes `2^order` order-0 blocks, each freed on its own with `free_pages(pfn, 0)`. A
    /// refusal changes nothing. Huge vmalloc splits its order-9 blocks this way (6.12's
    /// `vm_area_alloc_pages`).
    fn split_page(&self, pfn: Pfn, order: u32) -> Result<(), PageRefError>;
    /// The descriptor of a managed frame (`None` outside managed RAM).
    fn page(&self, pfn: Pfn) -> Option<&Page>;
    /// As [`PageProvider::page`], but a frame without a descriptor may also answer an absent
    /// one ([`Page::is_absent`]: reserved, no compound head) instead of `None`, one test less,
    /// for lookups that accept only owned states (the slab owner lookup).
    #[inline(always)]
    fn descriptor(&self, pfn: Pfn) -> Option<&Page> {
        self.page(pfn)
    }
    /// The linear mapping through which page contents are reached.
    fn direct_map(&self) -> DirectMap;
}
