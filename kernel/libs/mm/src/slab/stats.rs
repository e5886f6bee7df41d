//! `/proc/slabinfo` (Linux `mm/slab_common.c` `cache_show`, SLUB's `get_slabinfo`) and the
//! meminfo totals `Slab`, `SReclaimable`, `SUnreclaim`.

use core::fmt;

use crate::addr::PAGE_SIZE;
use crate::page::PageProvider;

use super::cache::KmemCache;
use super::root::SlabAllocator;
use super::SlabFlags;

/// One row of `/proc/slabinfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabinfoRow {
    pub name: &'static str,
    pub active_objs: u64,
    pub num_objs: u64,
    /// Slot size (`s->size`), metadata included.
    pub objsize: u32,
    pub objperslab: u32,
    pub pagesperslab: u32,
    pub active_slabs: u64,
    pub num_slabs: u64,
}

impl fmt::Display for SlabinfoRow {
    /// `"%-17s %6lu %6lu %6u %4u %4d : tunables %4u %4u %4u : slabdata %6lu %6lu %6lu"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
            self.name,
            self.active_objs,
            self.num_objs,
            self.objsize,
            self.objperslab,
            self.pagesperslab,
            0,
            0,
            0,
            self.active_slabs,
            self.num_slabs,
            0
        )
    }
}

/// Slab memory for meminfo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabTotals {
    /// Pages held by all slabs.
    pub pages: u64,
    /// Of which in `SLAB_RECLAIM_ACCOUNT` caches.
    pub reclaimable_pages: u64,
    /// Pages of live large kmalloc blocks (above `KMALLOC_MAX_CACHE_SIZE`): 6.12 counts them as
    /// unreclaimable slab (`mm/slub.c`, `___kmalloc_large_node`: `lruvec_stat_mod_folio(folio,
    /// NR_SLAB_UNRECLAIMABLE_B, PAGE_SIZE << order)`), so they are in `Slab` and `SUnreclaim`.
    /// 0 from [`SlabAllocator::totals`]; [`crate::kmalloc::Kmalloc::slab_totals`] fills it in.
    pub kmalloc_large_pages: u64,
}

impl SlabTotals {
    /// meminfo `Slab`: `SReclaimable + SUnreclaim`.
    pub fn slab_kb(&self) -> u64 {
        (self.pages + self.kmalloc_large_pages) * PAGE_SIZE as u64 / 1024
    }
    pub fn sreclaimable_kb(&self) -> u64 {
        self.reclaimable_pages * PAGE_SIZE as u64 / 1024
    }
    /// meminfo `SUnreclaim`: `NR_SLAB_UNRECLAIMABLE_B`, large kmalloc blocks included.
    pub fn sunreclaim_kb(&self) -> u64 {
        (self.pages - self.reclaimable_pages + self.kmalloc_large_pages) * PAGE_SIZE as u64 / 1024
    }
}

impl<P: PageProvider> KmemCache<'_, P> {
    /// This cache's `/proc/slabinfo` row (SLUB: active and total slabs are the same number).
    pub fn slabinfo_row(&self) -> SlabinfoRow {
        let st = self.state.lock();
        SlabinfoRow {
            name: self.name,
            active_objs: st.inuse,
            num_objs: st.total_objects,
            objsize: self.geom.size,
            objperslab: self.geom.objects,
            pagesperslab: 1 << self.geom.order,
            active_slabs: st.nr_slabs,
            num_slabs: st.nr_slabs,
        }
    }
}

impl<P: PageProvider> SlabAllocator<'_, P> {
    /// Writes `/proc/slabinfo`: version line, header, one row per cache.
    pub fn slabinfo(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        w.write_str("slabinfo - version: 2.1\n")?;
        w.write_str(
            "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables \
             <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n",
        )?;
        let mut r = Ok(());
        self.for_each_cache(|c| {
            if r.is_ok() {
                r = writeln!(w, "{}", c.slabinfo_row());
            }
        });
        r
    }

    /// Pages held by slabs, total and reclaimable (meminfo `Slab`, `SReclaimable`, `SUnreclaim`).
    pub fn totals(&self) -> SlabTotals {
        let mut t = SlabTotals::default();
        self.for_each_cache(|c| {
            let pages = c.pages();
            t.pages += pages;
            if c.flags().contains(SlabFlags::SLAB_RECLAIM_ACCOUNT) {
                t.reclaimable_pages += pages;
            }
        });
        t
    }
}
