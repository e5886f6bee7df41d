//! A small page provider for host tests of the slab layer: a heap buffer stands in for RAM,
//! descriptors live in a `Vec`, and a first-fit search over a bitmap hands out order-aligned
//! blocks. The first quarter of the frames is "ZONE_DMA": only `__GFP_DMA` requests get them, so
//! tests can tell DMA slabs apart. A page budget (`set_limit`) simulates memory pressure.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::Mutex;
use std::vec::Vec;

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::addr::{DirectMap, Pfn, PAGE_SIZE};
use crate::gfp::GfpFlags;
use crate::page::{FreePagesError, Page, PageProvider, PageState, MAX_PAGE_ORDER};
use crate::AllocError;

/// First pfn of the emulated RAM: not 0, so that a zero physical address is never valid.
pub(crate) const FIRST_PFN: u64 = 0x100;

pub struct TestProvider {
    buf: *mut u8,
    layout: Layout,
    dm: DirectMap,
    pages: Vec<Page>,
    used: Mutex<Vec<bool>>,
    dma_pages: usize,
    /// Pages that may still be handed out (simulated memory pressure).
    limit: AtomicUsize,
    pub in_use: AtomicUsize,
    pub failures: AtomicUsize,
}

// SAFETY: the buffer is owned by the provider and only reached through allocated blocks; the
// bookkeeping is behind a mutex or atomic.
unsafe impl Sync for TestProvider {}
// SAFETY: as above; no thread-affine state.
unsafe impl Send for TestProvider {}

impl TestProvider {
    /// `nr_pages` frames (a multiple of 1024 keeps order-10 blocks available).
    pub fn new(nr_pages: usize) -> TestProvider {
        let layout = Layout::from_size_align(nr_pages * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: the layout has a non-zero size.
        let buf = unsafe { alloc_zeroed(layout) };
        assert!(!buf.is_null());
        // SAFETY: physical address `FIRST_PFN * PAGE_SIZE + x` maps to `buf + x`, inside the
        // buffer for every frame this provider manages; the buffer lives as long as `self`.
        let dm = unsafe { DirectMap::new(buf.wrapping_sub(FIRST_PFN as usize * PAGE_SIZE)) };
        let pages = (0..nr_pages).map(|_| Page::new_reserved(0, 0)).collect();
        TestProvider {
            buf,
            layout,
            dm,
            pages,
            used: Mutex::new(std::vec![false; nr_pages]),
            dma_pages: nr_pages / 4,
            limit: AtomicUsize::new(usize::MAX),
            in_use: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
        }
    }

    /// Allows at most `pages` more pages to be in use from now on.
    pub fn set_limit(&self, pages: usize) {
        self.limit.store(self.in_use.load(Relaxed) + pages, Relaxed);
    }

    pub fn unlimited(&self) {
        self.limit.store(usize::MAX, Relaxed);
    }

    /// Descriptor `i < nr_pages` through a raw pointer: indexing the `Vec` would borrow the
    /// whole descriptor array, which Miri's Stacked Borrows retags byte range by byte range
    /// (UnsafeCell-aware) on every lookup: O(nr_pages) per call.
    fn page_at(&self, i: usize) -> &Page {
        assert!(i < self.pages.len());
        // SAFETY: in bounds; `Vec::as_ptr` does not create a reference to the whole array.
        unsafe { &*self.pages.as_ptr().add(i) }
    }

    pub fn pages_in_use(&self) -> usize {
        self.in_use.load(Relaxed)
    }

    pub fn is_dma(&self, pfn: Pfn) -> bool {
        ((pfn.0 - FIRST_PFN) as usize) < self.dma_pages
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.buf, self.layout) };
    }
}

impl PageProvider for TestProvider {
    fn alloc_pages(&self, gfp: GfpFlags, order: u32) -> Result<Pfn, AllocError> {
        if order > MAX_PAGE_ORDER {
            return Err(AllocError::OrderTooLarge { order });
        }
        let n = 1usize << order;
        if self.in_use.load(Relaxed) + n > self.limit.load(Relaxed) {
            self.failures.fetch_add(1, Relaxed);
            return Err(AllocError::OutOfMemory { order });
        }
        let mut used = self.used.lock().unwrap();
        let (lo, hi) = if gfp.contains(GfpFlags::__GFP_DMA) {
            (0, self.dma_pages)
        } else {
            (self.dma_pages, used.len())
        };
        let mut i = lo.next_multiple_of(n);
        while i + n <= hi {
            if used[i..i + n].iter().all(|u| !u) {
                used[i..i + n].iter_mut().for_each(|u| *u = true);
                self.in_use.fetch_add(n, Relaxed);
                let head = self.page_at(i);
                head.set_state(PageState::Allocated);
                head.set_order(order);
                return Ok(Pfn(FIRST_PFN + i as u64));
            }
            i += n;
        }
        self.failures.fetch_add(1, Relaxed);
        Err(AllocError::OutOfMemory { order })
    }

    fn free_pages(&self, pfn: Pfn, order: u32) -> Result<(), FreePagesError> {
        let page = self.page(pfn).ok_or(FreePagesError::NotManaged { pfn })?;
        match page.state() {
            PageState::Allocated => {}
            PageState::Buddy => return Err(FreePagesError::DoubleFree { pfn, head: pfn, order }),
            state => return Err(FreePagesError::WrongOwner { pfn, state }),
        }
        if page.order() != order {
            return Err(FreePagesError::WrongOrder { pfn, allocated: page.order(), given: order });
        }
        let i = (pfn.0 - FIRST_PFN) as usize;
        let mut used = self.used.lock().unwrap();
        used[i..i + (1 << order)].iter_mut().for_each(|u| *u = false);
        page.set_state(PageState::Buddy);
        self.in_use.fetch_sub(1 << order, Relaxed);
        Ok(())
    }

    fn split_page(&self, pfn: Pfn, order: u32) -> Result<(), crate::buddy::PageRefError> {
        crate::testing::split_test_block(self, pfn, order)
    }

    fn page(&self, pfn: Pfn) -> Option<&Page> {
        let i = pfn.0.checked_sub(FIRST_PFN)? as usize;
        (i < self.pages.len()).then(|| self.page_at(i))
    }

    fn direct_map(&self) -> DirectMap {
        self.dm
    }
}
