//! The allocators the benchmark runs side by side, behind one small trait, each as kernels
//! deploy it: kmalloc/kfree (and one `kmem_cache` directly), and over a physically contiguous
//! run of buddy pages (a [`Region`]) the heaps other kernels use:
//!
//! - `linked_list_allocator::LockedHeap` (first fit over a hole list; the usual hobby-kernel
//!   heap), through its `GlobalAlloc` implementation, spin lock included;
//! - `talc` (`Talck` with a `spin::Mutex`), through `GlobalAlloc`;
//! - `rlsf` (TLSF: two-level segregated fit, O(1)) behind a `spin::Mutex`, as a kernel wraps it
//!   (the crate brings no lock of its own);
//! - `buddy_system_allocator::LockedHeap` (a power-of-two buddy heap, rCore's), through
//!   `GlobalAlloc`.
//!
//! A [`Null`] allocator measures the workload loop itself, which the tables subtract, and
//! [`Tracked`] records the highest address a region heap ever handed out (its memory footprint).

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use ::mm::GfpFlags;
use x86_64::structures::paging::PhysFrame;

use crate::mm::page_alloc::{__free_pages, alloc_pages, phys_to_virt};
use crate::mm::slab::{kfree, kmalloc, kzalloc};

/// One allocator under test. `size` is what the caller asked for (a heap without size classes
/// needs it back on free, as `GlobalAlloc::dealloc` gets it).
pub trait BenchAlloc {
    fn alloc(&mut self, size: usize) -> *mut u8;
    fn free(&mut self, p: *mut u8, size: usize);
}

/// The layout the byte workloads ask the region heaps for: kmalloc's minimum alignment.
#[inline(always)]
fn layout(size: usize) -> Layout {
    // 8 divides every size the workloads use and is a power of two: this cannot fail.
    Layout::from_size_align(size, 8).unwrap_or(Layout::new::<u64>())
}

/// kmalloc/kfree with GFP_KERNEL.
pub struct Kmalloc;

impl BenchAlloc for Kmalloc {
    #[inline(always)]
    fn alloc(&mut self, size: usize) -> *mut u8 {
        kmalloc(size, GfpFlags::GFP_KERNEL).expect("bench kmalloc").as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, _size: usize) {
        if kfree(p).is_err() {
            panic!("bench kfree refused");
        }
    }
}

/// kzalloc/kfree with GFP_KERNEL (the zeroing variant).
pub struct Kzalloc;

impl BenchAlloc for Kzalloc {
    #[inline(always)]
    fn alloc(&mut self, size: usize) -> *mut u8 {
        kzalloc(size, GfpFlags::GFP_KERNEL).expect("bench kzalloc").as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, _size: usize) {
        if kfree(p).is_err() {
            panic!("bench kfree refused");
        }
    }
}

/// `kmem_cache_alloc`/`kmem_cache_free` on one cache: the slab layer without kmalloc's size
/// lookup (the free still finds the slab from the address).
pub struct Cache(pub &'static ::mm::slab::KmemCache<'static, ::mm::buddy::Node>);

impl BenchAlloc for Cache {
    #[inline(always)]
    fn alloc(&mut self, _size: usize) -> *mut u8 {
        self.0.alloc(GfpFlags::GFP_KERNEL).expect("bench kmem_cache_alloc").as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, _size: usize) {
        if self.0.free(NonNull::new(p).expect("non-null")).is_err() {
            panic!("bench kmem_cache_free refused");
        }
    }
}

/// No allocation at all: measures the loop's own cost.
pub struct Null;

impl BenchAlloc for Null {
    #[inline(always)]
    fn alloc(&mut self, size: usize) -> *mut u8 {
        core::hint::black_box(size as *mut u8)
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, _size: usize) {
        core::hint::black_box(p);
    }
}

/// The region heaps, by the names the `bench:` keys use (`peer.NAME.…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    LinkedList,
    Talc,
    Rlsf,
    BuddySystem,
}

impl Peer {
    pub const ALL: [Peer; 4] = [Peer::LinkedList, Peer::Talc, Peer::Rlsf, Peer::BuddySystem];

    /// The key component (`peer.linked_list.64.100.lifo`).
    pub fn key(self) -> &'static str {
        match self {
            Peer::LinkedList => "linked_list",
            Peer::Talc => "talc",
            Peer::Rlsf => "rlsf",
            Peer::BuddySystem => "buddy_system",
        }
    }

    /// Room a heap needs for a workload that keeps `live` objects of at most `size` bytes and
    /// makes `allocs` further allocations: per-object headers and minimum sizes (16 B in
    /// linked_list and rlsf, a tag in talc), power-of-two rounding in buddy_system, and for rlsf
    /// one fresh block per allocation: TLSF is good-fit, it rounds a request up to the next
    /// size class, so a hole of exactly the freed size is not reused for the same size, and the
    /// heap grows by one block per step in the worst case (which the memory figures then show).
    pub fn heap_bytes(self, live: usize, size: usize, allocs: usize) -> usize {
        let per_object = match self {
            Peer::LinkedList => size.max(16),
            Peer::Talc | Peer::Rlsf => size.max(16) + 16,
            Peer::BuddySystem => size.max(8).next_power_of_two(),
        };
        let objects = match self {
            Peer::Rlsf => live + allocs,
            _ => live,
        };
        objects * per_object + live * per_object / 8 + (1 << 20)
    }
}

/// Fits rlsf's limits: 16-byte granularity, blocks up to 16 << 28 = 4 GiB.
type Tlsf = rlsf::Tlsf<'static, u32, u16, 28, 16>;

/// One region heap over a [`Region`] of buddy pages.
pub enum PeerHeap {
    LinkedList(linked_list_allocator::LockedHeap),
    Talc(talc::Talck<spin::Mutex<()>, talc::ErrOnOom>),
    Rlsf(spin::Mutex<Tlsf>),
    BuddySystem(buddy_system_allocator::LockedHeap<33>),
}

impl PeerHeap {
    /// A heap of kind `peer` over `region`.
    ///
    /// # Safety
    /// `region` must stay allocated, and nothing else may use its memory, for as long as the
    /// heap is used; the heap must be dropped (or no longer used) before `region` is.
    pub unsafe fn new(peer: Peer, region: &Region) -> PeerHeap {
        let (start, len) = (region.start(), region.len());
        match peer {
            // SAFETY (all arms): the caller guarantees `[start, start + len)` is RAM owned by
            // this heap alone for its whole use; the direct map maps it read-write.
            Peer::LinkedList => {
                PeerHeap::LinkedList(unsafe { linked_list_allocator::LockedHeap::new(start, len) })
            }
            Peer::Talc => {
                let talck = talc::Talc::new(talc::ErrOnOom).lock::<spin::Mutex<()>>();
                // SAFETY: as above.
                unsafe { talck.lock().claim(talc::Span::from_base_size(start, len)) }
                    .expect("talc claims the bench region");
                PeerHeap::Talc(talck)
            }
            Peer::Rlsf => {
                let mut tlsf = Tlsf::new();
                let block = core::ptr::slice_from_raw_parts_mut(start, len);
                // SAFETY: as above.
                unsafe { tlsf.insert_free_block_ptr(NonNull::new(block).expect("region is not null")) };
                PeerHeap::Rlsf(spin::Mutex::new(tlsf))
            }
            Peer::BuddySystem => {
                let heap = buddy_system_allocator::LockedHeap::<33>::new();
                // SAFETY: as above.
                unsafe { heap.lock().init(start as usize, len) };
                PeerHeap::BuddySystem(heap)
            }
        }
    }
}

impl PeerHeap {
    #[cold]
    #[inline(never)]
    fn out_of_memory(&self, size: usize) -> ! {
        let name = match self {
            PeerHeap::LinkedList(_) => "linked_list",
            PeerHeap::Talc(_) => "talc",
            PeerHeap::Rlsf(_) => "rlsf",
            PeerHeap::BuddySystem(_) => "buddy_system",
        };
        panic!("bench: the {name} heap has no room for {size} bytes: Peer::heap_bytes gave it too little")
    }
}

impl BenchAlloc for PeerHeap {
    #[inline(always)]
    fn alloc(&mut self, size: usize) -> *mut u8 {
        let l = layout(size);
        // SAFETY: `l` has a non-zero size (the workloads allocate at least 8 bytes).
        let p = match self {
            PeerHeap::LinkedList(h) => unsafe { h.alloc(l) },
            PeerHeap::Talc(h) => unsafe { h.alloc(l) },
            PeerHeap::Rlsf(h) => h.lock().allocate(l).map_or(core::ptr::null_mut(), |p| p.as_ptr()),
            PeerHeap::BuddySystem(h) => unsafe { h.alloc(l) },
        };
        if p.is_null() {
            self.out_of_memory(size);
        }
        p
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, size: usize) {
        let l = layout(size);
        // SAFETY: `p` came from `alloc` on this heap with the same size (so the same layout) and
        // is freed once: the workloads free each slot exactly once before reusing it.
        match self {
            PeerHeap::LinkedList(h) => unsafe { h.dealloc(p, l) },
            PeerHeap::Talc(h) => unsafe { h.dealloc(p, l) },
            PeerHeap::Rlsf(h) => unsafe { h.lock().deallocate(NonNull::new_unchecked(p), l.align()) },
            PeerHeap::BuddySystem(h) => unsafe { h.dealloc(p, l) },
        }
    }
}

/// Wraps an allocator and records the highest end address it handed out: for a heap over one
/// region, `high_water - region start` is the memory the workload needed from it (live bytes,
/// headers, and the holes fragmentation leaves).
pub struct Tracked<'a, A> {
    pub inner: &'a mut A,
    pub high_water: usize,
}

impl<A: BenchAlloc> BenchAlloc for Tracked<'_, A> {
    #[inline(always)]
    fn alloc(&mut self, size: usize) -> *mut u8 {
        let p = self.inner.alloc(size);
        self.high_water = self.high_water.max(p as usize + size);
        p
    }
    #[inline(always)]
    fn free(&mut self, p: *mut u8, size: usize) {
        self.inner.free(p, size)
    }
}

/// A physically contiguous run of order-10 buddy blocks (more than the largest buddy block can
/// be needed), freed on drop.
pub struct Region {
    blocks: Vec<PhysFrame>,
}

impl Region {
    pub const BLOCK: u64 = 4 << 20;

    /// The lowest run of order-10 blocks covering `bytes`, or `None` if free memory has none.
    /// Takes every free order-10 block, sorts them by address, keeps the first long enough run
    /// and gives the rest back (free lists hand blocks out in the order they were freed, so
    /// after a large workload adjacent blocks rarely come one after another).
    pub fn new(bytes: usize) -> Option<Region> {
        let need = (bytes as u64).div_ceil(Self::BLOCK) as usize;
        let mut all: Vec<PhysFrame> = Vec::new();
        while let Ok(f) = alloc_pages(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_NOWARN, 10) {
            if all.try_reserve(1).is_err() {
                let _ = __free_pages(f, 10);
                break;
            }
            all.push(f);
        }
        all.sort_unstable_by_key(|f| f.start_address().as_u64());
        let mut run_start = 0;
        let mut found = None;
        for i in 0..all.len() {
            let adjacent =
                i > 0 && all[i - 1].start_address().as_u64() + Self::BLOCK == all[i].start_address().as_u64();
            if !adjacent {
                run_start = i;
            }
            if i + 1 - run_start == need {
                found = Some(run_start);
                break;
            }
        }
        let mut blocks = Vec::with_capacity(if found.is_some() { need } else { 0 });
        for (i, f) in all.into_iter().enumerate() {
            match found {
                Some(s) if (s..s + need).contains(&i) => blocks.push(f),
                _ => {
                    let _ = __free_pages(f, 10);
                }
            }
        }
        found.map(|_| Region { blocks })
    }

    pub fn start(&self) -> *mut u8 {
        phys_to_virt(self.blocks[0].start_address()).as_mut_ptr()
    }

    pub fn len(&self) -> usize {
        self.blocks.len() * Self::BLOCK as usize
    }

    /// First page frame number of the region.
    pub fn start_pfn(&self) -> usize {
        (self.blocks[0].start_address().as_u64() / 4096) as usize
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        for &f in &self.blocks {
            let _ = __free_pages(f, 10);
        }
    }
}
