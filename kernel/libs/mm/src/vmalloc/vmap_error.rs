//! Why a vmap-area operation failed ([`VmapError`]).

use core::fmt;

use crate::addr::PAGE_SIZE;

/// Why a vmap-area operation failed. The allocator is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmapError {
    /// A zero-sized area was requested.
    ZeroSize,
    /// The alignment is not a power of two or is below `PAGE_SIZE`.
    BadAlign { align: usize },
    /// The size (plus guard) exceeds the whole managed range: it can never succeed.
    TooLarge { size: usize, max: usize },
    /// No free range is large enough (with alignment) right now: the range is exhausted or
    /// fragmented.
    NoSpace { size: usize, align: usize, largest_free: usize },
    /// No memory for a `vmap_area` node (only `alloc` can report this).
    NoMemory,
    /// `VmapAreas::new` got a range that is empty or not page aligned.
    BadRange { start: usize, end: usize },
    /// The address is outside the managed range.
    OutOfRange { addr: usize, start: usize, end: usize },
    /// The address is in a free range: it was already freed (double free) or never allocated.
    NotAllocated { addr: usize, free_start: usize, free_end: usize },
    /// The address is inside a live area but is not its start.
    Interior { addr: usize, area_start: usize, area_end: usize },
    /// The address is in the guard page of a live area.
    InGuard { addr: usize, area_start: usize },
    /// The address is in an area already freed whose range waits for the lazy purge (its TLB
    /// flush): a double free, or a free of a pointer into it.
    Unpurged { addr: usize, area_start: usize, area_end: usize },
}

impl fmt::Display for VmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use VmapError::*;
        match *self {
            ZeroSize => write!(f, "vmap area of size 0 requested"),
            BadAlign { align } => {
                write!(f, "alignment {align:#x} is not a power of two of at least {PAGE_SIZE:#x}")
            }
            TooLarge { size, max } => {
                write!(f, "size {size:#x} is larger than the whole vmalloc range (at most {max:#x} bytes)")
            }
            NoSpace { size, align, largest_free } => write!(
                f,
                "no free vmalloc range fits {size:#x} bytes aligned to {align:#x} (largest free range {largest_free:#x})"
            ),
            NoMemory => write!(f, "out of memory for a vmap_area node"),
            BadRange { start, end } => {
                write!(f, "vmap range {start:#x}-{end:#x} is empty or not page aligned")
            }
            OutOfRange { addr, start, end } => {
                write!(f, "{addr:#x} is outside the vmalloc range {start:#x}-{end:#x}")
            }
            NotAllocated { addr, free_start, free_end } => write!(
                f,
                "{addr:#x} is not a live vmap area (free range {free_start:#x}-{free_end:#x}): double free or never allocated"
            ),
            Interior { addr, area_start, area_end } => write!(
                f,
                "{addr:#x} is inside the vmap area {area_start:#x}-{area_end:#x}, not its start"
            ),
            InGuard { addr, area_start } => {
                write!(f, "{addr:#x} is in the guard page of the vmap area at {area_start:#x}")
            }
            Unpurged { addr, area_start, area_end } => write!(
                f,
                "{addr:#x} is in the area {area_start:#x}-{area_end:#x}, already freed and waiting for the lazy purge: double free"
            ),
        }
    }
}
