//! Owners of vmalloc and kvmalloc memory that free it on drop: `VBox<T>` / `KVBox<T>` (one
//! value) and `VVec<T>` / `KVVec<T>` (a growable array), all returning `Result` on allocation.
//! For values and arrays too large for kmalloc, or for which contiguity does not matter.

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use ::mm::{GfpFlags, PAGE_SIZE};

use super::{__vmalloc_node, kvfree, kvmalloc, vfree, VmError};

/// Which allocator an owner uses.
pub trait Backend {
    /// `size` bytes aligned to `align` (a power of two).
    #[track_caller]
    fn alloc(size: usize, align: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError>;
    /// Frees what `alloc` returned.
    fn free(ptr: NonNull<u8>);
}

/// vmalloc memory: page aligned (or more, with `__vmalloc_node`).
pub struct Vmalloc;
/// kvmalloc memory: kmalloc if it can, else vmalloc.
pub struct Kvmalloc;

impl Backend for Vmalloc {
    #[track_caller]
    fn alloc(size: usize, align: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
        __vmalloc_node(size, align.max(PAGE_SIZE), gfp)
    }
    fn free(ptr: NonNull<u8>) {
        // Cannot fail: the owner frees what vmalloc returned, once.
        let _ = vfree(ptr.as_ptr());
    }
}

impl Backend for Kvmalloc {
    #[track_caller]
    fn alloc(size: usize, align: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
        if align > PAGE_SIZE {
            // Neither kmalloc nor a plain vmalloc promises more than a page; ask vmalloc.
            return __vmalloc_node(size, align, gfp);
        }
        // kmalloc aligns power-of-two sizes naturally and everything to 8; vmalloc to a page.
        let layout = core::alloc::Layout::from_size_align(size.max(1), align)
            .map_err(|_| VmError::Invalid("size overflows with its alignment"))?;
        match crate::mm::slab::kmalloc_size_for(layout) {
            Some(k) => kvmalloc(k, gfp),
            None => __vmalloc_node(size, PAGE_SIZE, gfp),
        }
    }
    fn free(ptr: NonNull<u8>) {
        // Cannot fail: the owner frees what kvmalloc returned, once.
        let _ = kvfree(ptr.as_ptr());
    }
}

/// One `T` in memory from backend `B`, dropped and freed with the owner.
pub struct VmBox<T, B: Backend> {
    ptr: NonNull<T>,
    _owns: PhantomData<(T, B)>,
}

/// A box in vmalloc memory.
pub type VBox<T> = VmBox<T, Vmalloc>;
/// A box in kvmalloc memory.
pub type KVBox<T> = VmBox<T, Kvmalloc>;

// SAFETY: the box owns its T like Box does.
unsafe impl<T: Send, B: Backend> Send for VmBox<T, B> {}
// SAFETY: shared access to the box only gives shared access to T.
unsafe impl<T: Sync, B: Backend> Sync for VmBox<T, B> {}

impl<T, B: Backend> VmBox<T, B> {
    #[track_caller]
    pub fn new(value: T, gfp: GfpFlags) -> Result<Self, VmError> {
        let size = size_of::<T>().max(1);
        let ptr = B::alloc(size, align_of::<T>(), gfp)?.cast::<T>();
        // SAFETY: `ptr` has room for a T, is aligned for it (backend contract) and uninitialised.
        unsafe { ptr.as_ptr().write(value) };
        Ok(VmBox { ptr, _owns: PhantomData })
    }

    /// The value's address (a vmalloc address for `VBox`).
    pub fn as_ptr(this: &Self) -> *const T {
        this.ptr.as_ptr()
    }
}

impl<T, B: Backend> Deref for VmBox<T, B> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialised in `new`, owned until drop.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T, B: Backend> DerefMut for VmBox<T, B> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` is unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T, B: Backend> Drop for VmBox<T, B> {
    fn drop(&mut self) {
        // SAFETY: the value is initialised and dropped exactly once, then its memory freed.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        B::free(self.ptr.cast());
    }
}

/// A growable array in memory from backend `B`; growing allocates a larger block, moves the
/// elements and frees the old one (vmalloc memory cannot be extended in place here).
pub struct VmVec<T, B: Backend> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    _owns: PhantomData<(T, B)>,
}

/// A vector in vmalloc memory.
pub type VVec<T> = VmVec<T, Vmalloc>;
/// A vector in kvmalloc memory.
pub type KVVec<T> = VmVec<T, Kvmalloc>;

// SAFETY: the vector owns its elements like Vec does.
unsafe impl<T: Send, B: Backend> Send for VmVec<T, B> {}
// SAFETY: shared access gives only shared access to the elements.
unsafe impl<T: Sync, B: Backend> Sync for VmVec<T, B> {}

impl<T, B: Backend> VmVec<T, B> {
    pub const fn new() -> Self {
        let cap = if size_of::<T>() == 0 { usize::MAX } else { 0 };
        VmVec { ptr: NonNull::dangling(), len: 0, cap, _owns: PhantomData }
    }

    #[track_caller]
    pub fn with_capacity(cap: usize, gfp: GfpFlags) -> Result<Self, VmError> {
        let mut v = Self::new();
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

    /// Makes room for `additional` more elements (at least doubling). On failure the vector is
    /// unchanged.
    #[track_caller]
    pub fn reserve(&mut self, additional: usize, gfp: GfpFlags) -> Result<(), VmError> {
        let need = self.len.checked_add(additional).ok_or(VmError::Invalid("capacity overflows usize"))?;
        if need <= self.cap {
            return Ok(());
        }
        let new_cap = need.max(self.cap.saturating_mul(2)).max(4);
        let bytes = new_cap.checked_mul(size_of::<T>()).ok_or(VmError::Invalid("size overflows usize"))?;
        let new = B::alloc(bytes, align_of::<T>(), gfp)?.cast::<T>();
        if self.cap > 0 {
            // SAFETY: the old buffer holds `len` initialised elements, the new one has room for
            // `new_cap >= len`; fresh allocations do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), self.len) };
            B::free(self.ptr.cast());
        }
        self.ptr = new;
        self.cap = new_cap;
        Ok(())
    }

    /// Appends `value`; on allocation failure the vector is unchanged.
    #[track_caller]
    pub fn push(&mut self, value: T, gfp: GfpFlags) -> Result<(), VmError> {
        if self.len == self.cap {
            self.reserve(1, gfp)?;
        }
        // SAFETY: `len < cap`: the slot is in the buffer and uninitialised.
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

    /// The buffer's address (`None` before the first allocation).
    pub fn as_ptr(&self) -> Option<*const T> {
        (self.cap > 0 && size_of::<T>() != 0).then_some(self.ptr.as_ptr() as *const T)
    }
}

impl<T, B: Backend> Default for VmVec<T, B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, B: Backend> Deref for VmVec<T, B> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` elements from `ptr` are initialised (dangling + 0 when empty).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T, B: Backend> DerefMut for VmVec<T, B> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` is unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T, B: Backend> Drop for VmVec<T, B> {
    fn drop(&mut self) {
        // SAFETY: the first `len` elements are initialised and dropped exactly once.
        unsafe { core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) };
        if self.cap > 0 && size_of::<T>() != 0 {
            B::free(self.ptr.cast());
        }
    }
}
