//! The allocator's self-check, for tests and the kernel's self-tests.

extern crate alloc;

use alloc::vec::Vec;

use super::{AreaKind, NodeAlloc, VmapAreas};
use crate::addr::PAGE_SIZE;

impl<A: NodeAlloc> VmapAreas<A> {
    /// Checks every invariant: both trees are valid, free, busy and lazily freed ranges tile
    /// the managed range exactly, no two free ranges touch (they would have been merged), the
    /// counters agree. O(n) (and a sorted copy of the lazy list); for tests and the kernel's
    /// self-tests.
    pub fn check(&self) -> Result<(), &'static str> {
        self.free.check()?;
        self.busy.check()?;
        let mut lazy: Vec<_> = self.lazy.iter().collect();
        lazy.sort_unstable_by_key(|e| e.start);
        if lazy.iter().map(|e| e.size / PAGE_SIZE).sum::<usize>() != self.lazy_pages {
            return Err("lazy page count is wrong");
        }
        if lazy.iter().any(|e| e.start < self.lazy_lo || e.end() > self.lazy_hi) {
            return Err("a lazy area is outside the lazy range");
        }
        let mut free = self.free.iter().peekable();
        // Live and lazy areas both occupy their ranges: merged in address order.
        let (mut live, mut parked) = (self.busy.iter().peekable(), lazy.into_iter().peekable());
        let mut busy = core::iter::from_fn(move || match (live.peek(), parked.peek()) {
            (Some(b), Some(l)) if l.start < b.start => parked.next().map(|e| (e, false)),
            (Some(_), _) => live.next().map(|e| (e, true)),
            (None, _) => parked.next().map(|e| (e, false)),
        })
        .peekable();
        let (mut at, mut prev_free, mut free_bytes, mut pages) = (self.start, false, 0, 0);
        loop {
            let take_free = match (free.peek(), busy.peek()) {
                (Some(f), Some((b, _))) => f.start < b.start,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (start, end) = if take_free {
                let f = free.next().unwrap();
                if prev_free {
                    return Err("two adjacent free ranges were not merged");
                }
                free_bytes += f.size;
                (f.start, f.end())
            } else {
                let (b, live) = busy.next().unwrap();
                if live && b.value.kind == AreaKind::Vmalloc {
                    pages += b.value.nr_pages;
                }
                (b.start, b.end())
            };
            if start != at {
                return Err("ranges do not tile the managed range (gap or overlap)");
            }
            if start == end {
                return Err("empty range in a tree");
            }
            prev_free = take_free;
            at = end;
        }
        if at != self.end {
            return Err("ranges do not reach the end of the managed range");
        }
        if free_bytes != self.free_bytes {
            return Err("free byte count is wrong");
        }
        if pages != self.vmalloc_pages {
            return Err("vmalloc page count is wrong");
        }
        Ok(())
    }
}
