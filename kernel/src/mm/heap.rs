//! Rust's heap in the kernel: `#[global_allocator]` backed by kmalloc, so `alloc::{Box, Vec,
//! String, BTreeMap}` work. Code that can handle a failure uses the GFP-flagged owners of
//! [`super::kalloc`] (`KBox`, `KVec`, ...), which return `Result<_, AllocError>` instead of
//! aborting.

use ::mm::GfpFlags;
use core::alloc::{GlobalAlloc, Layout};

use ::mm::kmalloc::KMALLOC_MAX_CACHE_SIZE;

use super::fault_inject::without_faults;
use super::slab::{implicit_gfp, is_ready, kfree, kfree_large, kmalloc_instance, kmalloc_size_for};

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
