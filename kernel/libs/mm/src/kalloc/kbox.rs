//! `Box<T, A>`: one value in memory from allocator `A`, dropped and freed with its owner
//! (Rust-for-Linux's `kbox.rs`; `KBox`, `VBox`, `KVBox` are aliases of it in the kernel).

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use super::{dangling_from_layout, Allocator};
use crate::{AllocError, GfpFlags};

/// An owned `T` in memory from `A`. A zero-sized `T` is not allocated (dangling pointer).
///
/// Invariant: `ptr` is valid for a `T` (initialised, aligned) and, unless `T` is zero-sized, is
/// a block `A` allocated for `Layout::for_value(&*ptr)` that this box owns.
pub struct Box<T: ?Sized, A: Allocator> {
    ptr: NonNull<T>,
    _owns: PhantomData<(A, T)>,
}

// SAFETY: a box owns its `T` as `alloc::boxed::Box` does; the allocator has no state.
unsafe impl<T: ?Sized + Send, A: Allocator> Send for Box<T, A> {}
// SAFETY: shared access to the box only gives shared access to the `T`.
unsafe impl<T: ?Sized + Sync, A: Allocator> Sync for Box<T, A> {}

impl<T, A: Allocator> Box<T, A> {
    /// Moves `value` into a new allocation (`KBox::new(x, GFP_KERNEL)?`).
    #[track_caller]
    pub fn new(value: T, flags: GfpFlags) -> Result<Self, AllocError> {
        Ok(Box::write(Self::new_uninit(flags)?, value))
    }

    /// Memory for a `T`, not initialised.
    #[track_caller]
    pub fn new_uninit(flags: GfpFlags) -> Result<Box<MaybeUninit<T>, A>, AllocError> {
        let layout = Layout::new::<MaybeUninit<T>>();
        let ptr =
            if layout.size() == 0 { dangling_from_layout(layout) } else { A::alloc(layout, flags)?.cast() };
        Ok(Box { ptr: ptr.cast(), _owns: PhantomData })
    }
}

impl<T, A: Allocator> Box<MaybeUninit<T>, A> {
    /// Initialises the memory with `value`.
    pub fn write(this: Self, value: T) -> Box<T, A> {
        let ptr = Box::into_raw(this);
        // SAFETY: `ptr` is valid for a `MaybeUninit<T>`, which has the layout of a `T`; the
        // block is still owned (`into_raw`) and passes, now initialised, to the new box.
        unsafe {
            (*ptr).write(value);
            Box::from_raw(ptr.cast::<T>())
        }
    }
}

impl<T: ?Sized, A: Allocator> Box<T, A> {
    /// The value's address (for `KBox`, a direct-map address; for `VBox`, a vmalloc one).
    pub fn as_ptr(this: &Self) -> *const T {
        this.ptr.as_ptr()
    }

    /// Gives up ownership: the block is the caller's, to pass back to [`Box::from_raw`].
    pub fn into_raw(this: Self) -> *mut T {
        let ptr = this.ptr.as_ptr();
        core::mem::forget(this);
        ptr
    }

    /// Takes ownership of a block returned by [`Box::into_raw`].
    ///
    /// # Safety
    ///
    /// `raw` came from `Box::<T, A>::into_raw` (same `T` layout, same `A`) and is not owned by
    /// any other box.
    pub unsafe fn from_raw(raw: *mut T) -> Self {
        // SAFETY: `into_raw` never returns null (the caller's contract).
        Box { ptr: unsafe { NonNull::new_unchecked(raw) }, _owns: PhantomData }
    }

    /// Leaks the box: the value lives, and its memory stays allocated, for ever.
    pub fn leak<'a>(this: Self) -> &'a mut T {
        // SAFETY: the value is valid and now owned by nobody, so the borrow is unique.
        unsafe { &mut *Box::into_raw(this) }
    }
}

impl<T: ?Sized, A: Allocator> Deref for Box<T, A> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: valid and initialised (type invariant), owned until drop.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized, A: Allocator> DerefMut for Box<T, A> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized + fmt::Debug, A: Allocator> fmt::Debug for Box<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display, A: Allocator> fmt::Display for Box<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: ?Sized, A: Allocator> Drop for Box<T, A> {
    fn drop(&mut self) {
        let layout = Layout::for_value::<T>(self);
        // SAFETY: the value is initialised (type invariant) and dropped exactly once, here.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() != 0 {
            // SAFETY: a non-zero-sized value is a block `A` allocated for `layout` (invariant).
            unsafe { A::free(self.ptr.cast(), layout) };
        }
    }
}
