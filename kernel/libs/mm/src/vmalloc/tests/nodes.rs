//! A node allocator for the area trees that counts what it hands out and can be told to fail,
//! so that tests see every node freed and exercise the `NoMemory` paths.

use std::alloc::{AllocError, Allocator, Global, Layout};
use std::cell::Cell;
use std::ptr::NonNull;
use std::rc::Rc;

#[derive(Default)]
struct State {
    live: Cell<usize>,
    allocations: Cell<usize>,
    /// Allocations that may still succeed; `None`: no limit.
    budget: Cell<Option<usize>>,
}

/// [`Global`] with counters and a failure switch; clones share them.
#[derive(Clone, Default)]
pub struct CountingAlloc(Rc<State>);

impl CountingAlloc {
    pub fn new() -> Self {
        Self::default()
    }
    /// Nodes allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.0.live.get()
    }
    /// Allocations that succeeded so far.
    pub fn allocations(&self) -> usize {
        self.0.allocations.get()
    }
    /// Lets `n` more allocations succeed, then fails every one.
    pub fn fail_after(&self, n: usize) {
        self.0.budget.set(Some(n));
    }
    pub fn fail_never(&self) {
        self.0.budget.set(None);
    }
}

// SAFETY: every block comes from `Global` and goes back to it with the same layout.
unsafe impl Allocator for CountingAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match self.0.budget.get() {
            Some(0) => return Err(AllocError),
            Some(n) => self.0.budget.set(Some(n - 1)),
            None => {}
        }
        let block = Global.allocate(layout)?;
        self.0.live.set(self.0.live.get() + 1);
        self.0.allocations.set(self.0.allocations.get() + 1);
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.0.live.set(self.0.live.get() - 1);
        // SAFETY: allocated by `Global` with this layout (above), freed once (caller's contract).
        unsafe { Global.deallocate(ptr, layout) }
    }
}
