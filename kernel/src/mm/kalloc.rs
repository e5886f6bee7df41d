//! The kernel's backends of the `mm` crate's [`Allocator`] trait, as Rust-for-Linux's
//! `rust/kernel/alloc/allocator.rs`: [`Kmalloc`] over `krealloc`, [`Vmalloc`] over `vrealloc`,
//! [`KVmalloc`] over `kvrealloc`, and the aliases of the generic owners: [`KBox`], [`VBox`],
//! [`KVBox`] (one value) and [`KVec`], [`VVec`], [`KVVec`] (a growable array). Their calls take
//! GFP flags and return `Result<_, AllocError>`: `KBox::new(x, GFP_KERNEL)?`,
//! `v.push(x, GFP_KERNEL)?`. A failure prints the allocator's own warning (unless
//! `__GFP_NOWARN`) naming the caller of `new`/`push`/`reserve` (`#[track_caller]` throughout).

use core::alloc::Layout;
use core::panic::Location;
use core::ptr::NonNull;

use ::mm::kalloc::{dangling_from_layout, Allocator, Box, Vec};
use ::mm::slab::SlabError;
use ::mm::vmalloc::VmallocError;
use ::mm::{AllocError, GfpFlags, PAGE_SIZE};

use super::fault_inject::without_faults;
use super::slab::{implicit_gfp, is_ready, kfree, kfree_large, kmalloc_instance, kmalloc_size_for};
use super::vmalloc::VmError;
use ::mm::kmalloc::KMALLOC_MAX_CACHE_SIZE;
use core::alloc::GlobalAlloc;

/// kmalloc memory: physically contiguous, in the direct map.
pub struct Kmalloc;
/// vmalloc memory: virtually contiguous, page aligned.
pub struct Vmalloc;
/// kvmalloc memory: kmalloc if it can, else vmalloc.
pub struct KVmalloc;

/// A box in kmalloc memory.
pub type KBox<T> = Box<T, Kmalloc>;
/// A box in vmalloc memory.
pub type VBox<T> = Box<T, Vmalloc>;
/// A box in kvmalloc memory.
pub type KVBox<T> = Box<T, KVmalloc>;
/// A vector in kmalloc memory.
pub type KVec<T> = Vec<T, Kmalloc>;
/// A vector in vmalloc memory.
pub type VVec<T> = Vec<T, Vmalloc>;
/// A vector in kvmalloc memory.
pub type KVVec<T> = Vec<T, KVmalloc>;

/// The size to ask for so that the block is aligned for `layout` (Rust-for-Linux's
/// `aligned_size`): padded to a multiple of the alignment, since kmalloc aligns every block to
/// the largest power of two dividing its size (the caches' alignment, `Kmalloc::new`; large
/// blocks are buddy blocks aligned to their order) and vmalloc to a page.
fn aligned_size(layout: Layout) -> usize {
    layout.pad_to_align().size()
}

/// The old block for `realloc`: none when there is none or it is zero-sized (dangling).
fn old_block(ptr: Option<NonNull<u8>>, old_layout: Layout) -> *const u8 {
    match ptr {
        Some(p) if old_layout.size() != 0 => p.as_ptr(),
        _ => core::ptr::null(),
    }
}

fn block(p: NonNull<u8>, size: usize) -> NonNull<[u8]> {
    NonNull::slice_from_raw_parts(p, size)
}

fn dangling(layout: Layout) -> NonNull<[u8]> {
    block(dangling_from_layout(layout), 0)
}

/// What a vmalloc-side failure means to an owner.
fn from_vm(e: VmError) -> AllocError {
    match e {
        VmError::Vmalloc(VmallocError::Pages { err, .. }) => err,
        VmError::MoreThanRam { nr_pages, totalram_pages } => {
            AllocError::TooLarge { size: nr_pages * PAGE_SIZE, max: totalram_pages * PAGE_SIZE }
        }
        VmError::Invalid(why) => AllocError::Invalid(why),
        VmError::InInterrupt { .. } => AllocError::Invalid("vmalloc called from interrupt context"),
        VmError::Kfree(SlabError::Alloc(a)) => a,
        // No room for the area, no page tables, or a refused old block (reported already).
        VmError::Vmalloc(_) => AllocError::OutOfMemory { order: 0 },
        _ => AllocError::Invalid("vmalloc refused the old block"),
    }
}

/// `Allocator::refused` of the kernel backends: the request never reached the allocator (its
/// size overflows); one warning line naming the caller, unless `__GFP_NOWARN`, as kmalloc's
/// own failures print.
#[cold]
#[track_caller]
fn report_refused(what: &str, err: AllocError, flags: GfpFlags) -> AllocError {
    super::page_alloc::ALLOC_FAILURES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let loc = Location::caller();
    if !flags.contains(GfpFlags::__GFP_NOWARN) && crate::log::ratelimit(loc) {
        crate::warn!(
            "{what} failure: mode:{:#x}({flags:?}) at {}:{}: {err}",
            flags.bits(),
            loc.file(),
            loc.line()
        );
    }
    err
}

/// vmalloc memory is aligned to a page; a stricter alignment is refused (as Rust-for-Linux's
/// `Vmalloc` and `KVmalloc`: "does not support alignments larger than PAGE_SIZE yet").
#[track_caller]
fn check_vmalloc_align(what: &str, layout: Layout, flags: GfpFlags) -> Result<(), AllocError> {
    if layout.align() > PAGE_SIZE {
        return Err(report_refused(what, AllocError::Invalid("alignment above PAGE_SIZE"), flags));
    }
    Ok(())
}

// SAFETY: `krealloc` returns a block of at least `size` bytes aligned for `layout` (see
// `aligned_size`), keeps `min(old, new)` bytes when it moves, leaves the old block valid when it
// fails, and frees for size 0 (then the dangling pointer is returned).
unsafe impl Allocator for Kmalloc {
    #[track_caller]
    unsafe fn realloc(
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: GfpFlags,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let size = aligned_size(layout);
        let old = old_block(ptr, old_layout);
        if size == 0 {
            // Cannot be refused: the owner frees what kmalloc gave it, once.
            let _ = super::slab::kfree(old);
            return Ok(dangling(layout));
        }
        match super::slab::krealloc(old, size, flags) {
            Ok(p) => Ok(block(p, size)),
            Err(SlabError::Alloc(e)) => Err(e),
            // A block the owner did not get from kmalloc: reported by krealloc.
            Err(_) => Err(AllocError::Invalid("krealloc refused the old block")),
        }
    }

    #[track_caller]
    fn refused(err: AllocError, flags: GfpFlags) -> AllocError {
        report_refused("KVec", err, flags)
    }
}

// SAFETY: `vrealloc` returns a page-aligned area of at least `size` bytes (alignments above a
// page are refused), copies the old contents when it moves, keeps the old area on failure.
unsafe impl Allocator for Vmalloc {
    #[track_caller]
    unsafe fn realloc(
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: GfpFlags,
    ) -> Result<NonNull<[u8]>, AllocError> {
        check_vmalloc_align("vmalloc", layout, flags)?;
        let size = aligned_size(layout);
        let old = old_block(ptr, old_layout);
        if size == 0 {
            let _ = super::vmalloc::vfree(old);
            return Ok(dangling(layout));
        }
        match super::vmalloc::vrealloc(old, size, flags).map_err(from_vm)? {
            Some(p) => Ok(block(p, size)),
            None => Err(AllocError::Invalid("vrealloc freed a block of non-zero size")),
        }
    }

    #[track_caller]
    fn refused(err: AllocError, flags: GfpFlags) -> AllocError {
        report_refused("VVec", err, flags)
    }
}

// SAFETY: `kvrealloc` gives kmalloc memory (aligned as for `Kmalloc`) or vmalloc memory (page
// aligned; stricter alignments are refused), copies on a move and keeps the old block on failure.
unsafe impl Allocator for KVmalloc {
    #[track_caller]
    unsafe fn realloc(
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: GfpFlags,
    ) -> Result<NonNull<[u8]>, AllocError> {
        check_vmalloc_align("kvmalloc", layout, flags)?;
        let size = aligned_size(layout);
        let old = old_block(ptr, old_layout);
        if size == 0 {
            let _ = super::util::kvfree(old);
            return Ok(dangling(layout));
        }
        match super::util::kvrealloc(old, size, flags).map_err(from_vm)? {
            Some(p) => Ok(block(p, size)),
            None => Err(AllocError::Invalid("kvrealloc freed a block of non-zero size")),
        }
    }

    #[track_caller]
    fn refused(err: AllocError, flags: GfpFlags) -> AllocError {
        report_refused("KVVec", err, flags)
    }
}

// Rust's heap in the kernel: `#[global_allocator]` backed by kmalloc, so `alloc::{Box, Vec,
// String, BTreeMap}` work. Code that can handle a failure uses the GFP-flagged owners above,
// which return `Result<_, AllocError>` instead of aborting.

struct KernelHeap;

#[global_allocator]
static HEAP: KernelHeap = KernelHeap;

// SAFETY: `alloc` returns blocks from kmalloc sized and aligned for the layout (see
// `kmalloc_size_for`) or null; `dealloc` returns them to kmalloc exactly once (Rust's contract).
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        heap_alloc(layout, false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        heap_alloc(layout, true)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // A failure here means heap corruption or a foreign pointer; kfree has reported it. The
        // layout says which side of KMALLOC_MAX_CACHE_SIZE the block is (`kmalloc_size_for`
        // exceeds it exactly when the size or the alignment does): a kmalloc-large block skips
        // the slab fast path, whose lookup could only find a large head and fall through.
        let large = layout.size() > KMALLOC_MAX_CACHE_SIZE || layout.align() > KMALLOC_MAX_CACHE_SIZE;
        let _ = if large { kfree_large(ptr) } else { kfree(ptr) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= 8 {
            // krealloc keeps the block while it fits and copies otherwise; 8-byte alignment holds.
            let gfp = implicit_gfp() | GfpFlags::__GFP_NOWARN;
            return without_faults(|| kmalloc_instance().krealloc(ptr, new_size, gfp))
                .map_or(core::ptr::null_mut(), |p| p.as_ptr());
        }
        // SAFETY: forwarded under the caller's contract; the default allocates, copies, frees.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: the caller's contract for realloc covers alloc + copy + dealloc.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// The global allocator's kmalloc call: no flags from the caller, so `GFP_KERNEL` (or
/// `GFP_ATOMIC` in interrupt context), and no warning line (Rust reports the failure itself).
/// Fault injection spares it: `Box::new` and friends cannot handle a failure (see
/// [`super::fault_inject`]).
fn heap_alloc(layout: Layout, zero: bool) -> *mut u8 {
    let Some(size) = kmalloc_size_for(layout).filter(|_| is_ready()) else {
        return core::ptr::null_mut();
    };
    let gfp =
        implicit_gfp() | GfpFlags::__GFP_NOWARN | if zero { GfpFlags::__GFP_ZERO } else { GfpFlags::empty() };
    without_faults(|| kmalloc_instance().kmalloc(size, gfp)).map_or(core::ptr::null_mut(), |p| p.as_ptr())
}
