//! `Vec<T, A>`: a growable array in memory from allocator `A` (Rust-for-Linux's `kvec.rs`;
//! `KVec`, `VVec`, `KVVec` are aliases of it in the kernel). Growing asks `A::realloc`, so
//! kmalloc grows in place while the block's `ksize` allows, vmalloc while its pages do.

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use super::Allocator;
use crate::{AllocError, GfpFlags};

/// A vector of `T` in memory from `A`.
///
/// Invariants: the first `len` elements from `ptr` are initialised; `len <= cap`; for a
/// zero-sized `T`, `cap` is `usize::MAX` and nothing is allocated; otherwise `cap == 0` with a
/// dangling `ptr`, or `ptr` is a block `A` allocated for `Layout::array::<T>(cap)` (which is
/// valid: at most `isize::MAX` bytes).
pub struct Vec<T, A: Allocator> {
    ptr: NonNull<T>,
    cap: usize,
    len: usize,
    _owns: PhantomData<(T, A)>,
}

// SAFETY: a vector owns its elements as `alloc::vec::Vec` does; the allocator has no state.
unsafe impl<T: Send, A: Allocator> Send for Vec<T, A> {}
// SAFETY: shared access gives only shared access to the elements.
unsafe impl<T: Sync, A: Allocator> Sync for Vec<T, A> {}

impl<T, A: Allocator> Vec<T, A> {
    const IS_ZST: bool = size_of::<T>() == 0;

    /// An empty vector; allocates nothing.
    pub const fn new() -> Self {
        Vec {
            ptr: NonNull::dangling(),
            cap: if Self::IS_ZST { usize::MAX } else { 0 },
            len: 0,
            _owns: PhantomData,
        }
    }

    /// An empty vector with room for `capacity` elements.
    #[track_caller]
    pub fn with_capacity(capacity: usize, flags: GfpFlags) -> Result<Self, AllocError> {
        let mut v = Self::new();
        v.reserve(capacity, flags)?;
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements the vector holds without reallocating (`usize::MAX` for zero-sized `T`).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The buffer's address (dangling while nothing is allocated).
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[T] {
        self
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self
    }

    /// Makes room for at least `additional` more elements: the capacity becomes at least
    /// doubled, or `len + additional` if that is more (Rust-for-Linux's growth). On failure the
    /// vector is unchanged. A capacity whose size overflows `isize` is refused
    /// (`AllocError::Invalid`).
    #[track_caller]
    pub fn reserve(&mut self, additional: usize, flags: GfpFlags) -> Result<(), AllocError> {
        if self.cap - self.len >= additional {
            return Ok(());
        }
        // Only a non-zero-sized `T` gets here (its capacity is usize::MAX otherwise), whose
        // capacity is at most isize::MAX (invariant), so doubling cannot overflow.
        let Some(need) = self.len.checked_add(additional) else {
            return Err(A::refused(AllocError::Invalid("Vec: len + additional overflows usize"), flags));
        };
        let new_cap = need.max(self.cap * 2);
        let Ok(layout) = Layout::array::<T>(new_cap) else {
            return Err(A::refused(AllocError::Invalid("Vec: capacity in bytes overflows isize"), flags));
        };
        let old = (self.cap != 0).then_some(self.ptr.cast::<u8>());
        // The old layout was valid when it was allocated (invariant); a zero capacity's layout
        // is the zero-sized one, which `realloc` ignores with `old == None`.
        let old_layout = Layout::array::<T>(self.cap).map_err(|_| AllocError::Invalid("Vec: invariant"))?;
        // SAFETY: `old` is `None` or the block allocated for `old_layout` (invariant); the
        // alignment is `T`'s in both layouts.
        let new = unsafe { A::realloc(old, layout, old_layout, flags)? };
        self.ptr = new.cast();
        self.cap = new_cap;
        Ok(())
    }

    /// Appends `value`; on allocation failure the vector is unchanged and `value` dropped.
    #[track_caller]
    pub fn push(&mut self, value: T, flags: GfpFlags) -> Result<(), AllocError> {
        self.reserve(1, flags)?;
        // SAFETY: `len < cap` after `reserve`: the slot is inside the buffer, uninitialised.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: the slot at the old last index is initialised and now outside `len`.
        Some(unsafe { self.ptr.as_ptr().add(self.len).read() })
    }

    /// Drops the elements from `len` on; nothing if the vector is not longer. Keeps the capacity.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let tail = core::ptr::slice_from_raw_parts_mut(
            // SAFETY: `len < self.len`: inside the initialised elements.
            unsafe { self.ptr.as_ptr().add(len) },
            self.len - len,
        );
        // Shorten first: a panicking destructor then leaks the rest instead of dropping twice.
        self.len = len;
        // SAFETY: the tail's elements are initialised and now outside `len`: dropped once.
        unsafe { core::ptr::drop_in_place(tail) };
    }

    /// Drops every element; keeps the capacity.
    pub fn clear(&mut self) {
        self.truncate(0);
    }
}

impl<T: Clone, A: Allocator> Vec<T, A> {
    /// Appends clones of `other`'s elements, allocating once; on failure nothing is appended.
    #[track_caller]
    pub fn extend_from_slice(&mut self, other: &[T], flags: GfpFlags) -> Result<(), AllocError> {
        self.reserve(other.len(), flags)?;
        for item in other {
            // SAFETY: `reserve` made room for all of `other`: `len < cap` at each step, and
            // `len` is raised after each write, so a panicking `clone` leaves a valid vector.
            unsafe { self.ptr.as_ptr().add(self.len).write(item.clone()) };
            self.len += 1;
        }
        Ok(())
    }
}

impl<T, A: Allocator> Default for Vec<T, A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, A: Allocator> Deref for Vec<T, A> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements from `ptr` (dangling and aligned when 0).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T, A: Allocator> DerefMut for Vec<T, A> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes the access unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: fmt::Debug, A: Allocator> fmt::Debug for Vec<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T, A: Allocator> Drop for Vec<T, A> {
    fn drop(&mut self) {
        // SAFETY: the first `len` elements are initialised and dropped exactly once, here.
        unsafe { core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) };
        if !Self::IS_ZST && self.cap != 0 {
            // SAFETY: a non-zero capacity of a non-zero-sized `T` is a block `A` allocated for
            // this layout (invariant), which was valid then.
            unsafe { A::free(self.ptr.cast(), Layout::array::<T>(self.cap).unwrap_unchecked()) };
        }
    }
}
