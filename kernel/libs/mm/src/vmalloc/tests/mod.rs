//! Host tests of the vmalloc logic: the area allocator (unit tests, the `lib/test_vmalloc.c`
//! scenarios, property tests against a model), the page-table mapping over emulated RAM, and the
//! `/proc` formats.

mod areas;
mod bulk;
mod huge;
mod huge_space;
mod info;
mod ioremap;
mod lazy;
pub(super) mod nodes;
mod nomem;
mod pgtable;
mod props;
mod ram;
mod scenarios;
pub(super) mod space;
mod vmap_block;
mod vmap_pfn;

/// A small deterministic PRNG (xorshift64*) so the scenarios are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}
