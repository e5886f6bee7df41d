//! Rust's heap in the kernel: `#[global_allocator]` backed by kmalloc, so `alloc::{Box, Vec,
//! String, BTreeMap}` work; and GFP-flagged owners in the style of Rust-for-Linux (`KBox`,
//! `KVec`) that return `Result<_, AllocError>` instead of aborting.

use core::alloc::{GlobalAlloc, Layout};
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use ::mm::{AllocError, GfpFlags};

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

/// Memory for `layout` from kmalloc with explicit flags (dangling for zero-sized layouts).
#[track_caller]
fn alloc_layout(layout: Layout, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    if layout.size() == 0 {
        // A dangling, aligned pointer: nothing is allocated for zero-sized values.
        return Ok(NonNull::new(layout.align() as *mut u8).expect("alignment is non-zero"));
    }
    let size = kmalloc_size_for(layout)
        .ok_or(AllocError::TooLarge { size: layout.size(), max: ::mm::kmalloc::KMALLOC_MAX_SIZE })?;
    super::slab::kmalloc(size, gfp)
}

fn free_layout(ptr: NonNull<u8>, layout: Layout) {
    if layout.size() != 0 {
        let _ = kfree(ptr.as_ptr());
    }
}

/// A `Box` whose allocation takes GFP flags and reports failure (`KBox::new(x, GFP_KERNEL)?`).
pub struct KBox<T> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

// SAFETY: a KBox owns its T like Box does.
unsafe impl<T: Send> Send for KBox<T> {}
// SAFETY: shared access to a KBox only gives shared access to T.
unsafe impl<T: Sync> Sync for KBox<T> {}

impl<T> KBox<T> {
    #[track_caller]
    pub fn new(value: T, gfp: GfpFlags) -> Result<KBox<T>, AllocError> {
        let ptr = alloc_layout(Layout::new::<T>(), gfp)?.cast::<T>();
        // SAFETY: `ptr` is valid and aligned for a T (kmalloc_size_for) and uninitialised.
        unsafe { ptr.as_ptr().write(value) };
        Ok(KBox { ptr, _owns: PhantomData })
    }

    /// The address of the value (a direct-map address: kmalloc memory).
    pub fn as_ptr(this: &KBox<T>) -> *const T {
        this.ptr.as_ptr()
    }
}

impl<T> Deref for KBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialised in `new`, owned until drop.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for KBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` is unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for KBox<T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialised and dropped exactly once, then its memory freed.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        free_layout(self.ptr.cast(), Layout::new::<T>());
    }
}

/// A `Vec` whose growth takes GFP flags and reports failure (`v.push(x, GFP_KERNEL)?`).
pub struct KVec<T> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
}

// SAFETY: a KVec owns its elements like Vec does.
unsafe impl<T: Send> Send for KVec<T> {}
// SAFETY: shared access gives only shared access to the elements.
unsafe impl<T: Sync> Sync for KVec<T> {}

impl<T> KVec<T> {
    pub const fn new() -> KVec<T> {
        KVec {
            ptr: NonNull::dangling(),
            len: 0,
            cap: if core::mem::size_of::<T>() == 0 { usize::MAX } else { 0 },
        }
    }

    #[track_caller]
    pub fn with_capacity(cap: usize, gfp: GfpFlags) -> Result<KVec<T>, AllocError> {
        let mut v = KVec::new();
        v.reserve(cap, gfp)?;
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Makes room for `additional` more elements (at least doubling, as Vec does).
    #[track_caller]
    pub fn reserve(&mut self, additional: usize, gfp: GfpFlags) -> Result<(), AllocError> {
        let need =
            self.len.checked_add(additional).ok_or(AllocError::Invalid("KVec capacity overflows usize"))?;
        if need <= self.cap {
            return Ok(());
        }
        let new_cap = need.max(self.cap.saturating_mul(2)).max(4);
        let layout = Layout::array::<T>(new_cap).map_err(|_| AllocError::Invalid("KVec layout overflows"))?;
        let new = alloc_layout(layout, gfp)?.cast::<T>();
        if self.cap > 0 {
            // SAFETY: the old buffer holds `len` initialised elements; the new one has room for
            // `new_cap >= len`; they do not overlap (the new block is a fresh allocation).
            unsafe { core::ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), self.len) };
            free_layout(self.ptr.cast(), Layout::array::<T>(self.cap).expect("existing layout"));
        }
        self.ptr = new;
        self.cap = new_cap;
        Ok(())
    }

    /// Appends `value`; on allocation failure the vector is unchanged and the error returned.
    #[track_caller]
    pub fn push(&mut self, value: T, gfp: GfpFlags) -> Result<(), AllocError> {
        if self.len == self.cap {
            self.reserve(1, gfp)?;
        }
        // SAFETY: `len < cap`: the slot is inside the buffer and uninitialised.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: the slot at the old last index is initialised and now outside `len`.
        Some(unsafe { self.ptr.as_ptr().add(self.len).read() })
    }
}

impl<T> Default for KVec<T> {
    fn default() -> Self {
        KVec::new()
    }
}

impl<T> Deref for KVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` elements from `ptr` are initialised (dangling + 0 when empty).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for KVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` is unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for KVec<T> {
    fn drop(&mut self) {
        // SAFETY: the first `len` elements are initialised and dropped exactly once.
        unsafe { core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) };
        if self.cap > 0 && core::mem::size_of::<T>() != 0 {
            free_layout(self.ptr.cast(), Layout::array::<T>(self.cap).expect("existing layout"));
        }
    }
}
