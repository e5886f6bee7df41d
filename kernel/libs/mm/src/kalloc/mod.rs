//! Owners of allocated memory in the style of Rust-for-Linux (`rust/kernel/alloc/`): one
//! [`Allocator`] trait whose calls take GFP flags, and one generic box ([`Box<T, A>`]) and one
//! generic vector ([`Vec<T, A>`]) over it. The kernel provides the three backends (`Kmalloc`,
//! `Vmalloc`, `KVmalloc` in `kernel/src/mm/kalloc.rs`) and the aliases `KBox`, `VBox`, `KVBox`,
//! `KVec`, `VVec`, `KVVec`; the logic here is plain Rust, tested on the host (and under Miri)
//! over a test allocator.
//!
//! As in Rust-for-Linux, allocation never aborts: every call that may allocate returns
//! `Result<_, AllocError>` and leaves the owner unchanged on failure. Zero-sized values and
//! zero-capacity vectors never reach the allocator: they use a dangling pointer aligned for the
//! type (`dangling_from_layout`), which is never freed.

mod kbox;
mod kvec;
#[cfg(test)]
mod tests;

use core::alloc::Layout;
use core::ptr::NonNull;

pub use kbox::Box;
pub use kvec::Vec;

use crate::{AllocError, GfpFlags};

/// Rust-for-Linux's name for the allocation flags (`kernel::alloc::Flags`): GFP flags.
pub type Flags = GfpFlags;

/// The flag combinations by their bare Linux names, as Rust-for-Linux's `kernel::alloc::flags`:
/// `use mm::kalloc::flags::GFP_KERNEL; KBox::new(x, GFP_KERNEL)?`.
pub mod flags {
    use super::Flags;

    /// May sleep and reclaim: the default for process context.
    pub const GFP_KERNEL: Flags = Flags::GFP_KERNEL;
    /// Never sleeps, may use the reserves: interrupt context and under spinlocks.
    pub const GFP_ATOMIC: Flags = Flags::GFP_ATOMIC;
    /// Never sleeps, does not touch the reserves, no warning on failure.
    pub const GFP_NOWAIT: Flags = Flags::GFP_NOWAIT;
    /// Zero the memory.
    pub const __GFP_ZERO: Flags = Flags::__GFP_ZERO;
    /// No warning on failure.
    pub const __GFP_NOWARN: Flags = Flags::__GFP_NOWARN;
}

/// An allocator whose calls take GFP flags: Rust-for-Linux's `Allocator` (allocator.rs). The
/// backends are types without state, so every function is an associated function.
///
/// # Safety
///
/// A memory block returned by [`Allocator::realloc`] (or [`Allocator::alloc`]) stays valid, for
/// reading and writing `layout.size()` bytes, aligned to `layout.align()`, until it is passed to
/// `realloc` or [`Allocator::free`] of the same allocator. `realloc` keeps the first
/// `min(layout.size(), old_layout.size())` bytes of the old block, and leaves the old block valid
/// and unchanged when it fails. A zero-sized `layout` returns a dangling pointer aligned to it and
/// frees the old block.
pub unsafe trait Allocator {
    /// A new block for `layout`. Zero-sized layouts give a dangling, aligned pointer.
    #[track_caller]
    fn alloc(layout: Layout, flags: GfpFlags) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `None` asks `realloc` for a new block; no old block is involved.
        unsafe { Self::realloc(None, layout, Layout::new::<()>(), flags) }
    }

    /// Resizes the block at `ptr` (described by `old_layout`) to `layout`, moving it if needed;
    /// `None` allocates a new block, a zero-sized `layout` frees it. On failure the old block is
    /// untouched and still owned by the caller.
    ///
    /// # Safety
    ///
    /// `ptr` is `None` or a block this allocator returned for `old_layout` and has not freed;
    /// `layout.align()` equals `old_layout.align()` when `ptr` is a block (of non-zero size).
    #[track_caller]
    unsafe fn realloc(
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: GfpFlags,
    ) -> Result<NonNull<[u8]>, AllocError>;

    /// Frees the block at `ptr`, which was allocated for `layout` (nothing for a zero size).
    ///
    /// # Safety
    ///
    /// `ptr` is a block this allocator returned for `layout` and has not freed.
    #[track_caller]
    unsafe fn free(ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract; a zero-sized `layout` frees and cannot fail.
        let _ = unsafe { Self::realloc(Some(ptr), Layout::new::<()>(), layout, GfpFlags::empty()) };
    }

    /// Reports a request refused before it reached the allocator (a size that overflows), so
    /// that the kernel prints its one line naming the caller, as its own allocation failures do.
    /// The default prints nothing (host tests).
    #[track_caller]
    fn refused(err: AllocError, flags: GfpFlags) -> AllocError {
        let _ = flags;
        err
    }
}

/// A dangling pointer aligned for `layout`, for zero-sized memory (Rust-for-Linux's
/// `dangling_from_layout`): an address without provenance, never dereferenced or freed.
pub fn dangling_from_layout(layout: Layout) -> NonNull<u8> {
    // SAFETY: an alignment is never zero.
    unsafe { NonNull::new_unchecked(core::ptr::without_provenance_mut(layout.align())) }
}
