//! The allocation helpers of Linux 6.12's `mm/util.c` and `include/linux/slab.h`, built on the
//! kmalloc, krealloc, kfree and vmalloc entry points: `kmemdup`, `kstrdup`, `kstrndup`,
//! `kmemdup_nul`, `kmalloc_size_roundup`, `krealloc_array`, and the kvmalloc family
//! (`kvmalloc`, `kvzalloc`, `kvmalloc_array`, `kvcalloc`, `kvrealloc`, `kvfree`): kmalloc first,
//! vmalloc when kmalloc cannot and the flags allow sleeping.
//!
//! The string helpers take Rust strings and return the kmalloc pointer as `kmalloc` does (free
//! it with `kfree`); the copy is NUL-terminated, as the C functions' are.

use core::ptr::NonNull;

use ::mm::slab::SlabError;
use ::mm::vmalloc::VmallocError;
use ::mm::{AllocError, GfpFlags, PAGE_SIZE};

use super::slab::{kfree, kmalloc, krealloc, ksize};
use super::vmalloc::{is_vmalloc_addr, vfree, vrealloc, VmError};

/// Copies `len` bytes of `src` into a new kmalloc block of `alloc` bytes and NUL-terminates it
/// at `len` when `alloc > len`.
#[track_caller]
fn dup(src: &[u8], len: usize, alloc: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    let p = kmalloc(alloc, gfp)?;
    // SAFETY: the block has `alloc >= len` bytes (`ZERO_SIZE_PTR` for 0, then nothing is
    // written); `src` has at least `len` bytes; a fresh block does not overlap it.
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), p.as_ptr(), len);
        if alloc > len {
            p.as_ptr().add(len).write(0);
        }
    }
    Ok(p)
}

/// The C string length of `s`: up to its first NUL byte (`strlen`), at most `max` (`strnlen`).
fn strnlen(s: &[u8], max: usize) -> usize {
    let s = &s[..s.len().min(max)];
    s.iter().position(|&b| b == 0).unwrap_or(s.len())
}

/// `kmemdup(src, len, gfp)` (6.12 `kmemdup_noprof()`): a kmalloc copy of `src`, exactly
/// `src.len()` bytes (`kmalloc(0)`'s `ZERO_SIZE_PTR` for an empty slice).
#[track_caller]
pub fn kmemdup(src: &[u8], gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    dup(src, src.len(), src.len(), gfp)
}

/// `kstrdup(s, gfp)` (6.12): `strlen(s) + 1` bytes, the string up to its first NUL and a NUL.
#[track_caller]
pub fn kstrdup(s: &str, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    let len = strnlen(s.as_bytes(), usize::MAX);
    dup(s.as_bytes(), len, len + 1, gfp)
}

/// `kstrndup(s, max, gfp)` (6.12): at most `max` bytes of the string (`strnlen`), then a NUL.
#[track_caller]
pub fn kstrndup(s: &str, max: usize, gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    let len = strnlen(s.as_bytes(), max);
    dup(s.as_bytes(), len, len + 1, gfp)
}

/// `kmemdup_nul(s, len, gfp)` (6.12): all `s.len()` bytes, NULs included, then a NUL.
#[track_caller]
pub fn kmemdup_nul(s: &[u8], gfp: GfpFlags) -> Result<NonNull<u8>, AllocError> {
    // A slice is at most isize::MAX bytes: `len + 1` cannot overflow.
    dup(s, s.len(), s.len() + 1, gfp)
}

/// `kmalloc_size_roundup(size)` (6.12 `mm/slab_common.c`): the usable size `kmalloc(size)`
/// would give.
pub fn kmalloc_size_roundup(size: usize) -> usize {
    ::mm::kmalloc::kmalloc_size_roundup(size)
}

/// `krealloc_array(p, new_n, new_size, gfp)` (6.12 `include/linux/slab.h`): `krealloc` of
/// `new_n * new_size` bytes; an overflowing product is refused (6.12: NULL) and `p` kept.
#[track_caller]
pub fn krealloc_array(
    p: *const u8,
    new_n: usize,
    new_size: usize,
    gfp: GfpFlags,
) -> Result<NonNull<u8>, SlabError> {
    let Some(bytes) = new_n.checked_mul(new_size) else {
        let e = AllocError::Invalid("krealloc_array: new_n * new_size overflows");
        super::slab::warn_failure(
            "krealloc_array",
            new_n.wrapping_mul(new_size),
            gfp,
            e,
            core::panic::Location::caller(),
        );
        return Err(SlabError::Alloc(e));
    };
    krealloc(p, bytes, gfp)
}

/// 6.12's `kmalloc_gfp_adjust()` (`mm/util.c`): above a page the kmalloc attempt of kvmalloc
/// is quiet, gives up early (`__GFP_NORETRY`, unless the caller asked `__GFP_RETRY_MAYFAIL`)
/// and is never `__GFP_NOFAIL` ("nofail semantic is implemented by the vmalloc fallback").
pub fn kmalloc_gfp_adjust(gfp: GfpFlags, size: usize) -> GfpFlags {
    if size <= PAGE_SIZE {
        return gfp;
    }
    let mut gfp = gfp | GfpFlags::__GFP_NOWARN;
    if !gfp.contains(GfpFlags::__GFP_RETRY_MAYFAIL) {
        gfp |= GfpFlags::__GFP_NORETRY;
    }
    gfp - GfpFlags::__GFP_NOFAIL
}

/// `kvmalloc(size, gfp)` (6.12 `__kvmalloc_node_noprof()`): kmalloc with
/// [`kmalloc_gfp_adjust`]ed flags; up to a page that is all (a failure there is kmalloc's,
/// with its warning). Above a page, when kmalloc fails: nothing more for flags that may not
/// sleep (`!gfpflags_allow_blocking`: vmalloc may sleep; no warning, kmalloc was quiet), a
/// size above `INT_MAX` is refused (6.12 `WARN_ON_ONCE` unless `__GFP_NOWARN`), else vmalloc
/// with the caller's flags and `VM_ALLOW_HUGE_VMAP` ("kvmalloc() can always use
/// VM_ALLOW_HUGE_VMAP"): [`vmalloc_huge`](super::vmalloc::vmalloc_huge), 2 MiB mappings from
/// 2 MiB up.
#[track_caller]
pub fn kvmalloc(size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
    let e = match kmalloc(size, kmalloc_gfp_adjust(gfp, size)) {
        Ok(p) => return Ok(p),
        Err(e) => VmError::Vmalloc(VmallocError::Pages { index: 0, nr_pages: 1, err: e }),
    };
    if size <= PAGE_SIZE || !gfp.allows_blocking() {
        return Err(e);
    }
    if size > i32::MAX as usize {
        let e = VmError::Invalid("kvmalloc: size above INT_MAX");
        super::vmalloc::warn_failure(size, gfp, &e);
        return Err(e);
    }
    super::vmalloc::vmalloc_huge(size, gfp)
}

/// `kvzalloc`: zeroed [`kvmalloc`].
#[track_caller]
pub fn kvzalloc(size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
    kvmalloc(size, gfp | GfpFlags::__GFP_ZERO)
}

/// `kvmalloc_array(n, size, gfp)` (6.12 `include/linux/slab.h`): an overflowing `n * size` is
/// refused (6.12: `check_mul_overflow` then NULL), with kmalloc_array's warning line.
#[track_caller]
pub fn kvmalloc_array(n: usize, size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
    let Some(bytes) = n.checked_mul(size) else {
        let e = VmError::Invalid("kvmalloc_array: n * size overflows");
        super::vmalloc::warn_failure(n.wrapping_mul(size), gfp, &e);
        return Err(e);
    };
    kvmalloc(bytes, gfp)
}

/// `kvcalloc(n, size, gfp)`: zeroed [`kvmalloc_array`].
#[track_caller]
pub fn kvcalloc(n: usize, size: usize, gfp: GfpFlags) -> Result<NonNull<u8>, VmError> {
    kvmalloc_array(n, size, gfp | GfpFlags::__GFP_ZERO)
}

/// `kvrealloc(p, size, gfp)` (6.12 `kvrealloc_noprof()`, no old size: it is the block's):
/// a vmalloc block goes to `vrealloc`; otherwise `krealloc` with [`kmalloc_gfp_adjust`]ed
/// flags, and if that fails, a new [`kvmalloc`] block with the old block's `ksize` bytes copied
/// and the old block freed. `size == 0` frees `p`: `Some(ZERO_SIZE_PTR)` for a kmalloc block
/// (krealloc's result), `None` for a vmalloc one (vrealloc's NULL). On failure `p` is kept.
#[track_caller]
pub fn kvrealloc(p: *const u8, size: usize, gfp: GfpFlags) -> Result<Option<NonNull<u8>>, VmError> {
    if is_vmalloc_addr(p) {
        return vrealloc(p, size, gfp);
    }
    match krealloc(p, size, kmalloc_gfp_adjust(gfp, size)) {
        Ok(n) => Ok(Some(n)),
        Err(SlabError::Alloc(_)) => {
            // krealloc failed only to allocate: `p` is null, ZERO_SIZE_PTR or a live block.
            let n = kvmalloc(size, gfp)?;
            let old = ksize(p).map_err(VmError::Kfree)?;
            // SAFETY: `p` has `old` usable bytes and `n` at least `size > old` (krealloc moves
            // only when the size grows past ksize); distinct blocks.
            unsafe { core::ptr::copy_nonoverlapping(p, n.as_ptr(), old) };
            kfree(p).map_err(VmError::Kfree)?;
            Ok(Some(n))
        }
        // A pointer kmalloc does not own, or a freed one: reported by krealloc.
        Err(e) => Err(VmError::Kfree(e)),
    }
}

/// `kvfree(addr)`: frees memory from [`kvmalloc`], whichever allocator served it.
#[track_caller]
pub fn kvfree(addr: *const u8) -> Result<(), VmError> {
    if is_vmalloc_addr(addr) {
        vfree(addr)
    } else {
        kfree(addr).map_err(VmError::Kfree)
    }
}
