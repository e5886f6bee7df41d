//! Emulated RAM and a minimal page provider over it, for the page-table tests: order-0 pages,
//! and naturally aligned higher-order blocks (huge vmalloc's order 9) that `split_page` turns
//! into order-0 pages.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::boxed::Box;
use std::vec::Vec;

use crate::addr::{DirectMap, Pfn, PAGE_SIZE};
use crate::buddy::PageRefError;
use crate::gfp::GfpFlags;
use crate::page::{FreePagesError, Page, PageProvider, PageState};
use crate::AllocError;

/// `nr` page frames in one host allocation; physical address 0 is its first byte. Frame 0 is
/// never handed out (a zero physical address would hide bugs).
pub struct TestRam {
    base: *mut u8,
    nr: usize,
    pages: Box<[Page]>,
    free: spin::Mutex<Vec<Pfn>>,
    /// Allocations still allowed; `usize::MAX` = unlimited.
    budget: AtomicUsize,
}

// SAFETY: the frames are only reached through raw pointers by their owner of the moment; the
// free list is behind a lock and the descriptors are atomics.
unsafe impl Sync for TestRam {}
// SAFETY: as above; the buffer is owned by this object.
unsafe impl Send for TestRam {}

impl TestRam {
    pub fn new(nr: usize) -> TestRam {
        let layout = Self::layout(nr);
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null());
        let pages: Box<[Page]> = (0..nr).map(|_| Page::new_reserved(0, 0)).collect();
        for p in &pages[1..] {
            p.set_state(PageState::Buddy);
        }
        // Hand out low frames first: easier to read in failures.
        let free = (1..nr as u64).rev().map(Pfn).collect();
        TestRam { base, nr, pages, free: spin::Mutex::new(free), budget: AtomicUsize::new(usize::MAX) }
    }

    fn layout(nr: usize) -> Layout {
        Layout::from_size_align(nr * PAGE_SIZE, PAGE_SIZE).unwrap()
    }

    pub fn nr_free(&self) -> usize {
        self.free.lock().len()
    }

    /// Lets only `n` more allocations succeed.
    pub fn set_budget(&self, n: usize) {
        self.budget.store(n, Relaxed);
    }

    /// Takes a free, naturally aligned run of `2^order` frames off the free list.
    fn take_block(&self, order: u32) -> Option<Pfn> {
        let mut free = self.free.lock();
        if order == 0 {
            return free.pop();
        }
        let n = 1usize << order;
        let head = (n..self.nr.saturating_sub(n - 1))
            .step_by(n)
            .find(|&i| self.pages[i..i + n].iter().all(|p| p.state() == PageState::Buddy))?;
        free.retain(|p| !(head as u64..(head + n) as u64).contains(&p.0));
        for p in &self.pages[head + 1..head + n] {
            p.set_state(PageState::FreeTail);
        }
        Some(Pfn(head as u64))
    }

    /// An order-0 page, or panics (test setup).
    pub fn take(&self) -> Pfn {
        self.alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO, 0).expect("test RAM exhausted")
    }
}

impl Drop for TestRam {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.base, Self::layout(self.nr)) };
    }
}

impl PageProvider for TestRam {
    fn alloc_pages(&self, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
        let b = self.budget.load(Relaxed);
        if b == 0 {
            return Err(AllocError::OutOfMemory { order });
        }
        if b != usize::MAX {
            self.budget.store(b - 1, Relaxed);
        }
        let pfn = self.take_block(order).ok_or(AllocError::OutOfMemory { order })?;
        let page = &self.pages[pfn.0 as usize];
        assert_eq!(page.state(), PageState::Buddy);
        page.set_state(PageState::Allocated);
        page.set_order(order);
        // Dirty the block unless asked for zeroes, so code relying on zeroed memory it did not
        // ask for fails.
        let fill = if gfp.contains(GfpFlags::__GFP_ZERO) { 0 } else { 0xa5 };
        // SAFETY: the block is inside the buffer and now owned by nobody but this call.
        unsafe { core::ptr::write_bytes(self.direct_map().pfn_to_virt(pfn), fill, PAGE_SIZE << order) };
        Ok(pfn)
    }

    fn free_pages(&self, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        let page = self.page(pfn).ok_or(FreePagesError::NotManaged { pfn })?;
        match page.state() {
            PageState::Allocated => {}
            PageState::Buddy => return Err(FreePagesError::DoubleFree { pfn, head: pfn, order }),
            PageState::Reserved => return Err(FreePagesError::Reserved { pfn }),
            state => return Err(FreePagesError::WrongOwner { pfn, state }),
        }
        if page.order() != order {
            return Err(FreePagesError::WrongOrder { pfn, allocated: page.order(), given: order });
        }
        let mut free = self.free.lock();
        for i in 0..1u64 << order {
            self.pages[(pfn.0 + i) as usize].set_state(PageState::Buddy);
            free.push(pfn.add(i));
        }
        Ok(())
    }

    fn split_page(&self, pfn: Pfn, order: u32) -> Result<(), PageRefError> {
        crate::testing::split_test_block(self, pfn, order)
    }

    fn page(&self, pfn: Pfn) -> Option<&Page> {
        // Indexing the boxed slice projects to one descriptor; `get` would borrow the whole
        // array, which Miri's Stacked Borrows retags descriptor by descriptor on every call.
        (pfn.0 != 0 && (pfn.0 as usize) < self.nr).then(|| &self.pages[pfn.0 as usize])
    }

    fn direct_map(&self) -> DirectMap {
        // SAFETY: every physical address below `nr * PAGE_SIZE` is inside the buffer, which
        // lives as long as `self`.
        unsafe { DirectMap::new(self.base) }
    }
}
