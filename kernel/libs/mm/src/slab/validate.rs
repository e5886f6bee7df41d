//! `KmemCache::validate`: a full consistency check of every slab (SLUB `validate_slab_cache`).

use core::sync::atomic::Ordering::Relaxed;

use crate::page::{Page, PageProvider, PageState};

use super::cache::{KmemCache, Which};
use super::debug::{self, RED_ACTIVE, RED_INACTIVE};
use super::percpu::KmemCacheCpu;
use super::{Corruption, CorruptionKind, SlabError, SlabFlags};

/// What `validate` counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Validation {
    pub slabs: u64,
    pub objects: u64,
    pub inuse: u64,
    pub free: u64,
}

/// Objects per slab fit 15 bits: a bitmap of 32768 bits marks the free ones.
const BITMAP_WORDS: usize = 32768 / 64;

impl<'p, P: PageProvider> KmemCache<'p, P> {
    /// Checks every slab: descriptor state and owner, list placement, every free pointer (inside
    /// the slab, on an object boundary, no cycle), counters against the free list; with red zone
    /// or poison, every object's red zones and every free object's poison. Takes the cache lock.
    ///
    /// The CPUs' private lists and sheaves are checked too. Their fast paths take no lock, so on
    /// SMP call it while no other CPU uses the cache (or after draining them), as the tests do.
    pub fn validate(&self) -> Result<Validation, SlabError> {
        let st = self.state.lock();
        let mut v = Validation::default();
        let mut err = None;
        let mut parked = 0u64;
        self.slab_pfns(&st, |pfn, page, which, cpu| {
            if err.is_none() {
                parked += cpu.map_or(0, |c| c.nr_free.load(Relaxed) as u64);
                match self.validate_slab(pfn, page, which, cpu) {
                    Ok(free) => {
                        v.slabs += 1;
                        v.objects += self.geom.objects as u64;
                        v.free += free as u64;
                    }
                    Err(e) => err = Some(e),
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        // Sheaf objects are free but not on any list: each must start an object of a slab of
        // this cache, at most once in all sheaves.
        let mut sheaved = 0u64;
        for (i, c) in self.cpu_slab.iter().enumerate() {
            let n = c.sheaf_len.load(Relaxed) as usize;
            for (j, o) in c.sheaf[..n].iter().enumerate() {
                let addr = o.load(Relaxed);
                let ok =
                    super::root::find_slab(self.provider, self.dm_base(), addr).is_some_and(|(pfn, page)| {
                        page.private.load(Relaxed) == self as *const Self as usize
                            && self.object_index(self.slab_start(pfn), addr).is_some()
                    });
                let dup = self.cpu_slab[..=i].iter().enumerate().any(|(k, d)| {
                    let m = if k == i { j } else { d.sheaf_len.load(Relaxed) as usize };
                    d.sheaf[..m].iter().any(|x| x.load(Relaxed) == addr)
                });
                if !ok || dup {
                    return Err(SlabError::Corrupted(Corruption {
                        cache: self.name,
                        kind: CorruptionKind::FreePointer,
                        object: addr,
                        bad_addr: addr,
                        offset: 0,
                        found: addr as u64,
                        expected: 0,
                        alloc_at: None,
                        free_at: None,
                    }));
                }
            }
            sheaved += n as u64;
        }
        parked += sheaved;
        v.free += sheaved;
        v.inuse = v.objects - v.free;
        let counted = |found: u64, expected: u64| {
            (found != expected).then_some(SlabError::Corrupted(Corruption {
                cache: self.name,
                kind: CorruptionKind::SlabCounters,
                object: 0,
                bad_addr: 0,
                offset: 0,
                found,
                expected,
                alloc_at: None,
                free_at: None,
            }))
        };
        // Objects on private lists are free here but counted in use by the cache (as SLUB).
        if let Some(e) = counted(v.slabs, st.nr_slabs).or(counted(v.inuse + parked, st.inuse)) {
            return Err(e);
        }
        Ok(v)
    }

    fn validate_slab(
        &self,
        pfn: u32,
        page: &'p Page,
        which: Option<Which>,
        cpu: Option<&KmemCacheCpu>,
    ) -> Result<u32, SlabError> {
        let start = self.slab_start(pfn);
        let corrupt = |kind, object: usize, bad_addr: usize, found: u64, expected: u64| {
            SlabError::Corrupted(Corruption {
                cache: self.name,
                kind,
                object,
                bad_addr,
                offset: bad_addr as isize - object as isize,
                found,
                expected,
                alloc_at: None,
                free_at: None,
            })
        };
        if page.state() != PageState::Slab
            || page.private.load(core::sync::atomic::Ordering::Relaxed) != self as *const Self as usize
        {
            return Err(corrupt(
                CorruptionKind::SlabCounters,
                start,
                start,
                page.state() as u64,
                PageState::Slab as u64,
            ));
        }
        let (inuse, objects) = Self::counters(page);
        if objects != self.geom.objects || inuse > objects || Self::is_frozen(page) != cpu.is_some() {
            return Err(corrupt(
                CorruptionKind::SlabCounters,
                start,
                start,
                objects as u64,
                self.geom.objects as u64,
            ));
        }
        if let Some(which) = which {
            let expected = if inuse == 0 {
                Which::Empty
            } else if inuse == objects {
                Which::Full
            } else {
                Which::Partial
            };
            if which != expected {
                return Err(corrupt(
                    CorruptionKind::SlabCounters,
                    start,
                    start,
                    inuse as u64,
                    objects as u64,
                ));
            }
        }
        let mut free_map = [0u64; BITMAP_WORDS];
        let mut free = 0u32;
        // The slab's own list, counted by `inuse`; then a CPU's private list, counted by the slot.
        self.check_list(start, self.freelist_head(page), &mut free_map, &mut free)?;
        if free != objects - inuse {
            return Err(corrupt(
                CorruptionKind::SlabCounters,
                start,
                start,
                free as u64,
                (objects - inuse) as u64,
            ));
        }
        if let Some(c) = cpu {
            let mut private = 0;
            self.check_list(start, c.freelist.load(Relaxed), &mut free_map, &mut private)?;
            if private != c.nr_free.load(Relaxed) {
                return Err(corrupt(
                    CorruptionKind::SlabCounters,
                    start,
                    start,
                    private as u64,
                    c.nr_free.load(Relaxed) as u64,
                ));
            }
            free += private;
        }
        if self.geom.flags.intersects(SlabFlags::SLAB_RED_ZONE | SlabFlags::SLAB_POISON) {
            for idx in 0..objects as usize {
                let obj = start + idx * self.geom.size as usize + self.geom.red_left_pad as usize;
                let is_free = free_map[idx / 64] & (1 << (idx % 64)) != 0;
                let val = if is_free { RED_INACTIVE } else { RED_ACTIVE };
                // SAFETY: every slot of the slab belongs to this cache; the lock is held.
                unsafe {
                    debug::check_object(&self.geom, self.ctor.is_some(), self.name, self.ptr(obj), val)
                }
                .map_err(SlabError::Corrupted)?;
            }
        }
        Ok(free)
    }

    /// What 6.12's `__kmem_cache_shutdown` reports when objects are left (`mm/slub.c`,
    /// `free_partial` -> `list_slab_objects`): for every slab on the partial list that still
    /// has objects in use, `on_slab(slab address, objects, inuse, first free object or 0)`,
    /// then `on_object(address, offset in the slab)` for each object not on its free list.
    /// Full slabs are not walked, as SLUB keeps no full list without debugging. Call it after
    /// [`KmemCache::shrink`] (6.12 flushes the CPU slabs first). Takes the cache lock; a free
    /// list found damaged ends the walk with its error.
    pub fn objects_remaining(
        &self,
        mut on_slab: impl FnMut(usize, u32, u32, usize),
        mut on_object: impl FnMut(usize, usize),
    ) -> Result<(), SlabError> {
        let st = self.state.lock();
        let mut result = Ok(());
        self.slab_pfns(&st, |pfn, page, which, _| {
            if result.is_err() || which != Some(Which::Partial) {
                return;
            }
            let start = self.slab_start(pfn);
            let (inuse, objects) = Self::counters(page);
            let head = self.freelist_head(page);
            let mut free_map = [0u64; BITMAP_WORDS];
            let mut free = 0u32;
            if let Err(e) = self.check_list(start, head, &mut free_map, &mut free) {
                result = Err(e);
                return;
            }
            on_slab(start, objects, inuse, head);
            for idx in 0..objects as usize {
                if free_map[idx / 64] & (1 << (idx % 64)) == 0 {
                    let offset = idx * self.geom.size as usize + self.geom.red_left_pad as usize;
                    on_object(start + offset, offset);
                }
            }
        });
        result
    }

    /// Walks one free list of the slab at `start`: every link inside the slab on an object
    /// boundary, no object twice (across lists too, through `free_map`); counts into `free`.
    fn check_list(
        &self,
        start: usize,
        head: usize,
        free_map: &mut [u64; BITMAP_WORDS],
        free: &mut u32,
    ) -> Result<(), SlabError> {
        let corrupt = |object: usize, bad_addr: usize, found: u64| {
            SlabError::Corrupted(Corruption {
                cache: self.name,
                kind: CorruptionKind::FreePointer,
                object,
                bad_addr,
                offset: bad_addr as isize - object as isize,
                found,
                expected: 0,
                alloc_at: None,
                free_at: None,
            })
        };
        let objects = self.geom.objects;
        let mut cur = head;
        let mut prev = 0usize;
        let mut seen = 0u32;
        while cur != 0 {
            let Some(idx) = self.object_index(start, cur) else {
                let at = if prev == 0 { start } else { prev + self.geom.offset as usize };
                return Err(corrupt(prev, at, cur as u64));
            };
            if free_map[idx / 64] & (1 << (idx % 64)) != 0 || seen == objects {
                // A cycle: the free lists reach an object twice.
                return Err(corrupt(prev, prev + self.geom.offset as usize, cur as u64));
            }
            free_map[idx / 64] |= 1 << (idx % 64);
            seen += 1;
            *free += 1;
            prev = cur;
            // SAFETY: `cur` is a free object of this slab (checked above); the lock is held.
            cur = unsafe { self.get_fp(cur) };
        }
        Ok(())
    }
}
