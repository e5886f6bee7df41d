//! The Rust face of a cache: `TypedCache<T>` hands out `SlabBox<T>`, freed on drop.

use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::gfp::GfpFlags;
use crate::page::PageProvider;
use crate::AllocError;

use super::root::{CacheHandle, SlabAllocator};
use super::{SlabError, SlabFlags};

/// A cache of `T` objects. Boxes borrow the cache, so it cannot be destroyed while one lives.
pub struct TypedCache<'p, P: PageProvider, T> {
    cache: CacheHandle<'p, P>,
    _t: PhantomData<fn(T) -> T>,
}

impl<'p, P: PageProvider, T> TypedCache<'p, P, T> {
    /// A cache named `name` sized and aligned for `T` (zero-sized types are refused).
    pub fn new(slab: &SlabAllocator<'p, P>, name: &'static str, flags: SlabFlags) -> Result<Self, SlabError> {
        if size_of::<T>() == 0 {
            return Err(SlabError::InvalidCache { name, why: "zero-sized type" });
        }
        let cache = slab.kmem_cache_create(name, size_of::<T>(), align_of::<T>(), flags, None)?;
        Ok(TypedCache { cache, _t: PhantomData })
    }

    /// Moves `value` into a new object. On failure the value is handed back.
    #[track_caller]
    pub fn alloc(&self, value: T, gfp: GfpFlags) -> Result<SlabBox<'_, 'p, P, T>, (T, AllocError)> {
        match self.cache.alloc(gfp) {
            Ok(p) => {
                let p = p.cast::<T>();
                // SAFETY: a fresh object of at least `size_of::<T>()` bytes aligned for `T`.
                unsafe { p.as_ptr().write(value) };
                Ok(SlabBox { ptr: p, cache: self })
            }
            Err(e) => Err((value, e)),
        }
    }

    pub fn cache(&self) -> &CacheHandle<'p, P> {
        &self.cache
    }

    /// Destroys the cache (no box can be alive: they borrow it).
    pub fn destroy(self) -> Result<(), (Self, SlabError)> {
        self.cache.destroy().map_err(|(cache, e)| (TypedCache { cache, _t: PhantomData }, e))
    }
}

/// An owned `T` in a slab object; dropping it drops `T` and frees the object.
pub struct SlabBox<'c, 'p, P: PageProvider, T> {
    ptr: NonNull<T>,
    cache: &'c TypedCache<'p, P, T>,
}

impl<P: PageProvider, T> Deref for SlabBox<'_, '_, P, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns an initialised `T` until drop.
        unsafe { self.ptr.as_ref() }
    }
}

impl<P: PageProvider, T> DerefMut for SlabBox<'_, '_, P, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` is unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<P: PageProvider, T: fmt::Debug> fmt::Debug for SlabBox<'_, '_, P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<P: PageProvider, T> Drop for SlabBox<'_, '_, P, T> {
    fn drop(&mut self) {
        // SAFETY: the box owns the `T`; it is dropped exactly once, here.
        unsafe { self.ptr.as_ptr().drop_in_place() };
        let r = self.cache.cache.free(self.ptr.cast());
        // A box is its object's only owner: freeing can fail only on memory corruption.
        debug_assert!(r.is_ok(), "SlabBox free: {r:?}");
    }
}
