//! Object layout inside a slab and the slab order, after SLUB's `calculate_sizes`,
//! `calculate_alignment` and `calculate_order`.
//!
//! A slot (stride `size`) is laid out as:
//!
//! ```text
//! [left red zone: red_left_pad] [object: object_size] [right red zone .. inuse]
//! [free pointer, if outside the object] [orig_size, kmalloc+red zone] [alloc/free track, store-user]
//! [padding to align]
//! ```
//!
//! The free pointer lives in the middle of the object (as SLUB) unless the object must keep its
//! contents while free (ctor, poison) or is too small to hold it next to a red zone.

use crate::addr::PAGE_SIZE;

use super::SlabFlags;

/// Cache line size of x86_64 (`cache_line_size()`).
pub const CACHE_LINE: u32 = 64;
/// Largest slab order for small objects (Linux `slub_max_order` = `PAGE_ALLOC_COSTLY_ORDER`).
pub const SLUB_MAX_ORDER: u32 = 3;
/// Objects per slab are stored in 15 bits of the page's `counters` (Linux `MAX_OBJS_PER_PAGE`).
pub const MAX_OBJS_PER_PAGE: u32 = 32767;
/// Bytes of a store-user track record: the alloc and the free `&'static Location`.
pub const TRACK_SIZE: u32 = 2 * 8;
/// Largest object a cache can hold: one order-`MAX_PAGE_ORDER` slab.
pub const MAX_OBJECT_SIZE: u32 = (PAGE_SIZE as u32) << crate::page::MAX_PAGE_ORDER;

const WORD: u32 = 8;
const RECIP_SHIFT: u32 = 45;

/// Everything derived from `(size, align, flags, ctor)` at cache creation. Immutable afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheGeom {
    pub object_size: u32,
    /// Slot stride.
    pub size: u32,
    pub align: u32,
    /// End of object + right red zone, from the object start.
    pub inuse: u32,
    /// Free pointer offset from the object start.
    pub offset: u32,
    pub red_left_pad: u32,
    /// Offset of the kmalloc requested size (0 = not tracked).
    pub orig_size_offset: u32,
    /// Offset of the track records (0 = none).
    pub track_offset: u32,
    pub order: u32,
    pub objects: u32,
    /// `2^45 / size` rounded up: `obj_to_index` by multiply instead of division (as Linux's
    /// `reciprocal_divide`). Exact when `offset * size < 2^45`, true for any offset inside a slab
    /// (both at most 2^22); `offset * reciprocal` fits in 64 bits as `size >= 8`.
    pub reciprocal: u64,
    pub flags: SlabFlags,
}

/// `calculate_alignment`: cache-line alignment for `SLAB_HWCACHE_ALIGN` unless the object fits in
/// half a line (then halves, as Linux), at least a word.
pub fn calculate_alignment(flags: SlabFlags, align: u32, size: u32) -> u32 {
    let mut align = align;
    if flags.contains(SlabFlags::SLAB_HWCACHE_ALIGN) {
        let mut ralign = CACHE_LINE;
        while size <= ralign / 2 {
            ralign /= 2;
        }
        align = align.max(ralign);
    }
    align.max(WORD).next_multiple_of(WORD)
}

/// `get_order`: smallest order whose block holds `size` bytes.
pub fn get_order(size: usize) -> u32 {
    let pages = size.div_ceil(PAGE_SIZE).max(1);
    pages.next_power_of_two().trailing_zeros()
}

fn order_objects(order: u32, size: u32) -> u32 {
    ((PAGE_SIZE as u32) << order) / size
}

fn calc_slab_order(size: u32, min_order: u32, max_order: u32, fract_leftover: u32) -> u32 {
    let mut order = min_order;
    while order <= max_order {
        let slab_size = (PAGE_SIZE as u32) << order;
        if slab_size % size <= slab_size / fract_leftover {
            break;
        }
        order += 1;
    }
    order
}

/// SLUB `calculate_order`: the smallest order holding `min_objects` with at most 1/16 waste,
/// relaxing the waste to 1/8, 1/4, 1/2 up to `slub_max_order`, else just big enough.
pub fn calculate_order(size: u32) -> Option<u32> {
    // Linux: `4 * (fls(nr_cpu_ids) + 1)`, more objects per slab the more CPUs may share it.
    let mut min_objects = 4 * (crate::cpus::fls(crate::nr_cpu_ids() as u32) + 1);
    let max_objects = order_objects(SLUB_MAX_ORDER, size).max(1);
    min_objects = min_objects.min(max_objects);
    let min_order = get_order(min_objects as usize * size as usize);
    if order_objects(min_order, size) > MAX_OBJS_PER_PAGE {
        return Some(get_order(size as usize * MAX_OBJS_PER_PAGE as usize) - 1);
    }
    let mut fraction = 16;
    while fraction > 1 {
        let order = calc_slab_order(size, min_order, SLUB_MAX_ORDER, fraction);
        if order <= SLUB_MAX_ORDER {
            return Some(order);
        }
        fraction /= 2;
    }
    let order = get_order(size as usize);
    (order <= crate::page::MAX_PAGE_ORDER).then_some(order)
}

/// `calculate_sizes`. `None` if no slab order can hold one object.
pub fn calculate_sizes(object_size: u32, align: u32, flags: SlabFlags, has_ctor: bool) -> Option<CacheGeom> {
    let red = flags.contains(SlabFlags::SLAB_RED_ZONE);
    let mut size = object_size.next_multiple_of(WORD);
    // A right red zone needs room: use the word padding if any, else add a word.
    if red && size == object_size {
        size += WORD;
    }
    let inuse = size;
    let kmalloc_tail = red && flags.contains(SlabFlags::SLAB_KMALLOC);
    let offset;
    if flags.contains(SlabFlags::SLAB_POISON) || has_ctor || (red && (object_size < WORD || kmalloc_tail)) {
        // The object's bytes must survive while free: keep the free pointer after it.
        offset = size;
        size += WORD;
    } else {
        offset = (object_size / 2) & !(WORD - 1);
    }
    let mut orig_size_offset = 0;
    if kmalloc_tail {
        orig_size_offset = size;
        size += WORD;
    }
    let mut track_offset = 0;
    if flags.contains(SlabFlags::SLAB_STORE_USER) {
        track_offset = size;
        size += TRACK_SIZE;
    }
    let mut red_left_pad = 0;
    if red {
        red_left_pad = WORD.next_multiple_of(align);
        size += red_left_pad;
    }
    let size = size.next_multiple_of(align);
    if size > MAX_OBJECT_SIZE {
        return None;
    }
    let order = calculate_order(size)?;
    let objects = order_objects(order, size);
    if objects == 0 {
        return None;
    }
    Some(CacheGeom {
        object_size,
        size,
        align,
        inuse,
        offset,
        red_left_pad,
        orig_size_offset,
        track_offset,
        order,
        objects,
        reciprocal: (1u64 << RECIP_SHIFT).div_ceil(size as u64),
        flags,
    })
}

impl CacheGeom {
    /// Bytes of one slab.
    #[inline(always)]
    pub fn slab_bytes(&self) -> usize {
        PAGE_SIZE << self.order
    }

    /// Index of the slot containing byte `off` of the slab (`off` < slab size), without division.
    #[inline(always)]
    pub fn slot_index(&self, off: usize) -> usize {
        // Cannot overflow for offsets inside a slab (see `reciprocal`); wrapping keeps the
        // overflow check off the fast path.
        ((off as u64).wrapping_mul(self.reciprocal) >> RECIP_SHIFT) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_match_slub_for_kmalloc_sizes() {
        // With one CPU (min_objects 8): object size -> (order, objects per slab), as /proc/slabinfo
        // on a 1-CPU Linux without debug shows.
        for (size, order, objs) in [
            (8, 0, 512),
            (16, 0, 256),
            (64, 0, 64),
            (96, 0, 42),
            (192, 0, 21),
            (256, 0, 16),
            (512, 0, 8),
            (1024, 1, 8),
            (2048, 2, 8),
            (4096, 3, 8),
            (8192, 3, 4),
        ] {
            let g = calculate_sizes(size, 8, SlabFlags::empty(), false).unwrap();
            assert_eq!((g.size, g.order, g.objects), (size, order, objs), "size {size}");
        }
    }

    #[test]
    fn hwcache_alignment_halves_for_small_objects() {
        assert_eq!(calculate_alignment(SlabFlags::SLAB_HWCACHE_ALIGN, 8, 100), 64);
        assert_eq!(calculate_alignment(SlabFlags::SLAB_HWCACHE_ALIGN, 8, 20), 32);
        assert_eq!(calculate_alignment(SlabFlags::SLAB_HWCACHE_ALIGN, 8, 8), 8);
        assert_eq!(calculate_alignment(SlabFlags::empty(), 1, 3), 8);
        assert_eq!(calculate_alignment(SlabFlags::empty(), 128, 3), 128);
    }

    #[test]
    fn reciprocal_index_is_exact() {
        for size in [8u32, 24, 96, 192, 200, 1000, 4104, 8192, 1 << 20, (1 << 21) + 8] {
            let g = calculate_sizes(size, 8, SlabFlags::empty(), false).unwrap();
            for off in (0..g.slab_bytes()).step_by(if cfg!(miri) { 4093 } else { 7 }) {
                assert_eq!(g.slot_index(off), off / g.size as usize, "size {size} off {off}");
            }
        }
    }

    #[test]
    fn debug_layout_has_red_zones_and_track() {
        let g = calculate_sizes(18, 8, SlabFlags::DEBUG | SlabFlags::SLAB_KMALLOC, false).unwrap();
        assert_eq!(g.red_left_pad, 8);
        assert_eq!(g.inuse, 24);
        assert_eq!(g.offset, 24);
        assert_eq!(g.orig_size_offset, 32);
        assert_eq!(g.track_offset, 40);
        assert_eq!(g.size, 64);
    }
}
