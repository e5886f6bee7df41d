//! The page-level API around the page allocator (Linux 6.12 names): `alloc_page`,
//! `__free_page`, `__get_free_page`, reference counts (`get_page`, `put_page`,
//! `page_ref_count`), compound pages (`compound_head`), `split_page`, `alloc_pages_exact` /
//! `free_pages_exact`. The logic is the buddy allocator's (`::mm::buddy::Node`, see its
//! `page_ref` module); this layer adds the caller-naming console line for each refusal and
//! direct-map addresses.

use ::mm::buddy::{exact_order, PageRefError};
use ::mm::page::FreePagesError;
use ::mm::{AllocError, GfpFlags, Pfn};
use core::panic::Location;
use x86_64::structures::paging::PhysFrame;
use x86_64::VirtAddr;

use super::node;
use super::page_alloc::{__free_pages, __get_free_pages, alloc_pages, free_pages, this_cpu, virt_to_phys};

fn pfn(frame: PhysFrame) -> Pfn {
    Pfn::from_phys(frame.start_address())
}

fn frame(pfn: Pfn) -> PhysFrame {
    PhysFrame::containing_address(pfn.phys())
}

/// One page (Linux's `alloc_page`: `alloc_pages(gfp, 0)`).
#[track_caller]
#[inline]
pub fn alloc_page(gfp: GfpFlags) -> Result<PhysFrame, AllocError> {
    alloc_pages(gfp, 0)
}

/// Frees one page from [`alloc_page`] (Linux's `__free_page`: `__free_pages(page, 0)`).
#[track_caller]
#[inline]
pub fn __free_page(frame: PhysFrame) -> Result<(), FreePagesError> {
    __free_pages(frame, 0)
}

/// One page by its direct-map address (Linux's `__get_free_page`: `__get_free_pages(gfp, 0)`).
#[track_caller]
#[inline]
pub fn __get_free_page(gfp: GfpFlags) -> Result<VirtAddr, AllocError> {
    __get_free_pages(gfp, 0)
}

#[cold]
#[inline(never)]
fn report(what: &str, e: &dyn core::fmt::Display, loc: &'static Location<'static>) {
    if crate::log::ratelimit(loc) {
        crate::warn!("{what} refused at {}:{}: {e}", loc.file(), loc.line());
    }
}

#[track_caller]
fn checked<T>(what: &str, r: Result<T, PageRefError>) -> Result<T, PageRefError> {
    if let Err(e) = &r {
        report(what, e, Location::caller());
    }
    r
}

/// Linux's `get_page`: one more reference on the block `frame` belongs to (its compound head).
/// The caller must hold a reference already; a free page, a page owned by another layer, a
/// non-head page of a non-compound block or an overflow is refused.
#[track_caller]
pub fn get_page(frame: PhysFrame) -> Result<(), PageRefError> {
    checked("get_page", node().get_page(pfn(frame)))
}

/// Linux's `put_page`: drops a reference; the last one frees the block (a compound block
/// whole). Returns whether it was freed.
#[track_caller]
pub fn put_page(frame: PhysFrame) -> Result<bool, PageRefError> {
    checked("put_page", node().put_page(this_cpu(), pfn(frame)))
}

/// Linux's `page_ref_count`: 0 for free pages and compound tails, the references of an
/// allocated head, 1 for reserved pages and pages of other layers.
pub fn page_ref_count(frame: PhysFrame) -> u32 {
    node().page_ref_count(pfn(frame))
}

/// Linux's `compound_head`: the head frame of the compound block `frame` is a tail of, else
/// `frame`.
pub fn compound_head(frame: PhysFrame) -> PhysFrame {
    self::frame(node().compound_head(pfn(frame)))
}

/// Linux's `split_page`: a non-compound block of `order` becomes `2^order` order-0 pages, each
/// with refcount 1 and freed on its own.
#[track_caller]
pub fn split_page(frame: PhysFrame, order: u32) -> Result<(), PageRefError> {
    checked("split_page", node().split_page(pfn(frame), order))
}

/// Linux 6.12's `alloc_pages_exact`: `PAGE_ALIGN(size)` bytes of physically contiguous pages,
/// from a block of `get_order(size)` whose pages beyond the size go straight back
/// (`make_alloc_exact`). As 6.12, `__GFP_COMP` (and `__GFP_HIGHMEM`) are dropped with a
/// warning (`WARN_ON_ONCE`: once per call site here). Free with [`free_pages_exact`].
#[track_caller]
pub fn alloc_pages_exact(size: usize, gfp: GfpFlags) -> Result<VirtAddr, AllocError> {
    let loc = Location::caller();
    let order = match exact_order(size) {
        Ok(o) => o,
        Err(e) => {
            report("alloc_pages_exact", &e, loc);
            return Err(e);
        }
    };
    let mut gfp = gfp;
    let bad = GfpFlags::__GFP_COMP | GfpFlags::__GFP_HIGHMEM;
    if gfp.intersects(bad) {
        if crate::log::ratelimit(loc) {
            crate::warn!(
                "WARNING: alloc_pages_exact at {}:{}: gfp {:?} must not contain __GFP_COMP or __GFP_HIGHMEM; dropped",
                loc.file(),
                loc.line(),
                gfp.intersection(bad)
            );
        }
        gfp = gfp.difference(bad);
    }
    let addr = __get_free_pages(gfp, order)?;
    let head = Pfn::from_phys(virt_to_phys(addr).expect("a direct-map address"));
    node().make_alloc_exact(head, order, size).expect("a block just allocated without __GFP_COMP");
    Ok(addr)
}

/// Linux 6.12's `free_pages_exact`: frees the `PAGE_ALIGN(size) / PAGE_SIZE` pages at `addr`
/// one by one. Every page is checked first: a bad range (not a direct-map address, a page
/// that is not an order-0 allocated page) is refused with nothing freed.
#[track_caller]
pub fn free_pages_exact(addr: VirtAddr, size: usize) -> Result<(), FreePagesError> {
    let loc = Location::caller();
    let Some(phys) = virt_to_phys(addr).filter(|p| p.is_aligned(4096u64)) else {
        // free_pages reports it with this caller.
        return free_pages(addr, 0);
    };
    let r = node().free_pages_exact(this_cpu(), Pfn::from_phys(phys), size);
    if let Err(e) = &r {
        report("free_pages_exact", e, loc);
    }
    r
}

/// Linux 6.12's `alloc_pages_bulk` (page-array form, `alloc_pages_bulk_array`): fills the
/// `None` entries of `pages` with order-0 pages under one hold of this CPU's page list, and
/// returns the number of entries populated from the start (those already there included).
/// When the batch path cannot be used it falls back to one page from [`alloc_pages`]'s path
/// (reclaim and retry as the flags allow), as 6.12 falls back to `__alloc_pages`. Fewer pages
/// than asked is not an error: the caller allocates the rest one by one or gives up.
#[track_caller]
pub fn alloc_pages_bulk(gfp: GfpFlags, pages: &mut [Option<Pfn>]) -> usize {
    super::page_alloc::might_sleep_if(gfp);
    let caller = Location::caller();
    node().alloc_pages_bulk_cpu_at(this_cpu(), gfp, pages, caller, |g| super::page_alloc::alloc_pfn(g, 0))
}
