//! What the console handed out, and the commands that hand memory out and take it back.
//!
//! Every call goes to the kernel's API (`mm::slab`, `mm::page_alloc`, `mm::vmalloc`), so its
//! rules and its one-line refusal reports are the API's. The console adds one rule of its own:
//! it frees only what it handed out. An address it did not hand out and that is the start of
//! something live (a slab object, an allocated block, a vmalloc area) belongs to the kernel and
//! is refused with a console line instead of being freed; everything else (garbage, interior
//! pointers, an address the console freed already: a double free) goes to the API, which
//! refuses it and says why. The table of held addresses is reserved once, at start, so that
//! the console allocates nothing between commands (a freed object is not reused under the
//! user's feet by the console itself).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;

use ::mm::vmalloc::{AddrPlace, AreaKind, VmFlags};
use ::mm::{GfpFlags, Pfn};
use x86_64::VirtAddr;

use super::args::{parse_gfp, parse_size, parse_u64};
use crate::kprintln;
use crate::mm::memory_map::Size;
use crate::mm::page_alloc::{self, Pages};
use crate::mm::slab::{self, KmemCache};
use crate::mm::vmalloc;

/// Most allocations the console holds at once.
pub const MAX_HELD: usize = 1024;
/// Most caches created at the console alive at once.
pub const MAX_CACHES: usize = 32;
/// Most pages one `vmap` maps.
pub const MAX_VMAP_PAGES: usize = 512;
/// Addresses the console freed most recently, still passed to the API (a double free).
const FREED: usize = 64;

/// One thing the console handed out.
pub enum What {
    Kmalloc {
        size: usize,
    },
    Pages {
        order: u32,
    },
    Vmalloc {
        size: usize,
    },
    /// The frames mapped by the area, owned until the vunmap.
    Vmap {
        pages: Vec<Pages>,
    },
    Object {
        cache: &'static str,
    },
}

pub struct Held {
    pub addr: usize,
    pub what: What,
}

/// A cache created at the console (its name lives as long as the cache).
struct ConsoleCache {
    name: &'static str,
    cache: KmemCache,
}

pub struct Session {
    held: Vec<Held>,
    caches: Vec<ConsoleCache>,
    freed: [usize; FREED],
    freed_next: usize,
    /// A stress run found damage: `exit` ends with the failure status.
    pub failed: bool,
}

fn usage(u: &str) {
    kprintln!("usage: {u}");
}

fn size_arg(cmd: &str, s: &str) -> Option<usize> {
    let v = parse_size(s);
    if v.is_none() {
        kprintln!("{cmd}: `{s}` is not a size (bytes; K, M, G suffixes; 0x for hex)");
    }
    v
}

fn addr_arg(cmd: &str, s: &str) -> Option<usize> {
    let v = parse_u64(s).map(|a| a as usize);
    if v.is_none() {
        kprintln!("{cmd}: `{s}` is not an address (0x... as printed)");
    }
    v
}

fn order_arg(cmd: &str, s: &str) -> Option<u32> {
    let v = parse_u64(s).and_then(|o| u32::try_from(o).ok());
    if v.is_none() {
        kprintln!("{cmd}: `{s}` is not an order (0 to {})", ::mm::page::MAX_PAGE_ORDER);
    }
    v
}

/// The GFP argument (`GFP_KERNEL` when absent) and how to print it.
fn gfp_arg<'a>(cmd: &str, s: Option<&&'a str>) -> Option<(GfpFlags, &'a str)> {
    let Some(&s) = s else { return Some((GfpFlags::GFP_KERNEL, "GFP_KERNEL")) };
    match parse_gfp(s) {
        Ok(g) => Some((g, s)),
        Err(bad) => {
            kprintln!("{cmd}: `{bad}` is not a GFP flag (GFP_KERNEL, GFP_ATOMIC, GFP_DMA, __GFP_ZERO, ... joined by |)");
            None
        }
    }
}

/// A failure the API kept quiet about (`__GFP_NOWARN`): the console says it.
fn quiet_failure(cmd: &str, gfp: GfpFlags, e: &::mm::AllocError) {
    if gfp.contains(GfpFlags::__GFP_NOWARN) {
        kprintln!("{cmd} failed (no warning: __GFP_NOWARN): {e}");
    } else if matches!(e, ::mm::AllocError::FaultInjected { .. }) {
        // The API prints no allocation-failure warning for it (fault injection reports it,
        // unless its `verbose` is 0): say what happened.
        kprintln!("{cmd} failed: {e}");
    }
}

fn zone_of(phys: u64) -> &'static str {
    crate::mm::node()
        .page(Pfn(phys >> 12))
        .map_or("?", |p| ::mm::zone::ZoneType::from_index(p.zone() as usize).name())
}

fn phys_of(addr: usize) -> Option<u64> {
    page_alloc::virt_to_phys(VirtAddr::try_new(addr as u64).ok()?).map(|p| p.as_u64())
}

/// Where a kmalloc block comes from: its cache, or the page allocator.
fn kmalloc_source(addr: usize, size: usize, gfp: GfpFlags) -> &'static str {
    let _ = addr;
    slab::kmalloc_instance()
        .kmalloc_slab(size, gfp)
        .map_or("kmalloc-large (the page allocator)", |c| c.name())
}

/// Prints what the kernel knows of an address (the fault report's describer).
fn describe(addr: usize) -> impl core::fmt::Display {
    struct D(usize);
    impl core::fmt::Display for D {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let mut w = crate::mm::memory_map::BufWriter { buf: &mut [0; 256], len: 0 };
            crate::mm::report::describe_address(VirtAddr::new_truncate(self.0 as u64), &mut w);
            let len = w.len;
            f.write_str(core::str::from_utf8(&w.buf[..len]).unwrap_or("?"))
        }
    }
    D(addr)
}

impl Session {
    pub fn new() -> Session {
        Session {
            held: Vec::with_capacity(MAX_HELD),
            caches: Vec::with_capacity(MAX_CACHES),
            freed: [0; FREED],
            freed_next: 0,
            failed: false,
        }
    }

    fn find(&self, addr: usize) -> Option<usize> {
        self.held.iter().position(|h| h.addr == addr)
    }

    fn room(&self, cmd: &str) -> bool {
        let ok = self.held.len() < MAX_HELD;
        if !ok {
            kprintln!("{cmd}: the console holds {MAX_HELD} allocations already; free some first");
        }
        ok
    }

    fn track(&mut self, addr: usize, what: What) {
        self.held.push(Held { addr, what });
    }

    fn untrack(&mut self, i: usize) -> Held {
        let h = self.held.swap_remove(i);
        self.freed[self.freed_next % FREED] = h.addr;
        self.freed_next += 1;
        h
    }

    fn was_freed(&self, addr: usize) -> bool {
        addr != 0 && self.freed.contains(&addr)
    }

    /// After a stress run, the freed addresses may hold the workload's former objects' places
    /// in any state; they are no longer a double free of the console's.
    pub fn forget_freed(&mut self) {
        self.freed = [0; FREED];
    }

    /// Refuses an address the console did not hand out that `live` says is the start of
    /// something of the kernel's. True when the call may go to the API.
    fn may_free(&self, cmd: &str, addr: usize, live: bool) -> bool {
        if self.find(addr).is_some() || self.was_freed(addr) || !live {
            return true;
        }
        kprintln!(
            "{cmd}: {addr:#x} was not handed out by this console ({}): the kernel's memory is not freed from here",
            describe(addr)
        );
        false
    }

    // ---- kmalloc family ----

    pub fn kmalloc(&mut self, cmd: &str, a: &[&str]) {
        let zeroed = cmd == "kzalloc";
        let (Some(size), 1..=2) = (a.first(), a.len()) else { return usage("kmalloc|kzalloc SIZE [GFP]") };
        let Some(size) = size_arg(cmd, size) else { return };
        let Some((gfp, gfp_name)) = gfp_arg(cmd, a.get(1)) else { return };
        if !self.room(cmd) {
            return;
        }
        let result = if zeroed { slab::kzalloc(size, gfp) } else { slab::kmalloc(size, gfp) };
        match result {
            Ok(p) => self.report_kmalloc(cmd, format_args!("{size}, {gfp_name}"), p, size, gfp),
            Err(e) => quiet_failure(cmd, gfp, &e),
        }
    }

    fn report_kmalloc(
        &mut self,
        cmd: &str,
        call: core::fmt::Arguments,
        p: NonNull<u8>,
        size: usize,
        gfp: GfpFlags,
    ) {
        let addr = p.as_ptr() as usize;
        if addr == ::mm::kmalloc::ZERO_SIZE_PTR as usize {
            kprintln!("{cmd}({call}) = {addr:#x} (ZERO_SIZE_PTR: nothing allocated, kfree accepts it)");
            return;
        }
        let phys = phys_of(addr).unwrap_or(0);
        kprintln!(
            "{cmd}({call}) = {addr:#x}: ksize {}, {}, phys {phys:#x} (zone {})",
            slab::ksize(p.as_ptr()).unwrap_or(0),
            kmalloc_source(addr, size, gfp),
            zone_of(phys)
        );
        self.track(addr, What::Kmalloc { size });
    }

    pub fn kfree(&mut self, a: &[&str]) {
        let [addr] = a else { return usage("kfree ADDR") };
        let Some(addr) = addr_arg("kfree", addr) else { return };
        let live = slab::ksize(addr as *const u8).is_ok_and(|n| n > 0);
        if !self.may_free("kfree", addr, live) {
            return;
        }
        let size = slab::ksize(addr as *const u8).unwrap_or(0);
        if slab::kfree(addr as *const u8).is_ok() {
            match self.find(addr) {
                Some(i) => {
                    self.untrack(i);
                    kprintln!("kfree({addr:#x}): freed ({size} bytes)");
                }
                None => kprintln!("kfree({addr:#x}): nothing to free (NULL or ZERO_SIZE_PTR)"),
            }
        }
    }

    pub fn krealloc(&mut self, a: &[&str]) {
        let (2..=3, Some(addr), Some(size)) = (a.len(), a.first(), a.get(1)) else {
            return usage("krealloc ADDR SIZE [GFP]");
        };
        let (Some(addr), Some(size)) = (addr_arg("krealloc", addr), size_arg("krealloc", size)) else {
            return;
        };
        let Some((gfp, gfp_name)) = gfp_arg("krealloc", a.get(2)) else { return };
        let live = slab::ksize(addr as *const u8).is_ok_and(|n| n > 0);
        if !self.may_free("krealloc", addr, live) || (self.find(addr).is_none() && !self.room("krealloc")) {
            return;
        }
        match slab::krealloc(addr as *const u8, size, gfp) {
            Ok(p) => {
                if let Some(i) = self.find(addr) {
                    self.untrack(i);
                }
                let new = p.as_ptr() as usize;
                let moved = if new == addr { "the same block" } else { "moved" };
                if new == ::mm::kmalloc::ZERO_SIZE_PTR as usize {
                    kprintln!(
                        "krealloc({addr:#x}, 0, {gfp_name}) = {new:#x} (ZERO_SIZE_PTR): the block is freed"
                    );
                    return;
                }
                kprintln!(
                    "krealloc({addr:#x}, {size}, {gfp_name}) = {new:#x} ({moved}): ksize {}",
                    slab::ksize(p.as_ptr()).unwrap_or(0)
                );
                self.track(new, What::Kmalloc { size });
            }
            Err(::mm::slab::SlabError::Alloc(e)) => quiet_failure("krealloc", gfp, &e),
            Err(_) => {}
        }
    }

    pub fn ksize(&mut self, a: &[&str]) {
        let [addr] = a else { return usage("ksize ADDR") };
        let Some(addr) = addr_arg("ksize", addr) else { return };
        match slab::ksize(addr as *const u8) {
            Ok(n) => kprintln!("ksize({addr:#x}) = {n}"),
            Err(e) => kprintln!("ksize({addr:#x}) refused: {e}"),
        }
    }

    // ---- page allocator ----

    pub fn alloc_pages(&mut self, a: &[&str]) {
        let (Some(order), 1..=2) = (a.first(), a.len()) else { return usage("alloc_pages ORDER [GFP]") };
        let Some(order) = order_arg("alloc_pages", order) else { return };
        let Some((gfp, gfp_name)) = gfp_arg("alloc_pages", a.get(1)) else { return };
        if !self.room("alloc_pages") {
            return;
        }
        match page_alloc::alloc_pages(gfp, order) {
            Ok(frame) => {
                let phys = frame.start_address().as_u64();
                let addr = page_alloc::phys_to_virt(frame.start_address()).as_u64() as usize;
                kprintln!(
                    "alloc_pages({gfp_name}, {order}) = {addr:#x}: phys {phys:#x}, {} (zone {})",
                    Size(4096 << order),
                    zone_of(phys)
                );
                self.track(addr, What::Pages { order });
            }
            Err(e) => quiet_failure("alloc_pages", gfp, &e),
        }
    }

    pub fn free_pages(&mut self, a: &[&str]) {
        let [addr, order] = a else { return usage("free_pages ADDR ORDER") };
        let (Some(addr), Some(order)) = (addr_arg("free_pages", addr), order_arg("free_pages", order)) else {
            return;
        };
        let live = VirtAddr::try_new(addr as u64)
            .ok()
            .and_then(page_alloc::virt_to_page)
            .is_some_and(|p| addr % 4096 == 0 && p.state() == ::mm::page::PageState::Allocated);
        if !self.may_free("free_pages", addr, live) {
            return;
        }
        let Ok(va) = VirtAddr::try_new(addr as u64) else {
            kprintln!("free_pages: {addr:#x} is not a canonical address");
            return;
        };
        if page_alloc::free_pages(va, order).is_ok() {
            if let Some(i) = self.find(addr) {
                self.untrack(i);
            }
            kprintln!("free_pages({addr:#x}, {order}): freed {}", Size(4096 << order));
        }
    }

    // ---- vmalloc ----

    pub fn vmalloc(&mut self, a: &[&str]) {
        let [size] = a else { return usage("vmalloc SIZE") };
        let Some(size) = size_arg("vmalloc", size) else { return };
        if !self.room("vmalloc") {
            return;
        }
        if let Ok(p) = vmalloc::vmalloc(size) {
            let addr = p.as_ptr() as usize;
            let pages = size.div_ceil(4096);
            kprintln!(
                "vmalloc({size}) = {addr:#x}: {pages} pages, each its own frame; guard page at {:#x}",
                addr + pages * 4096
            );
            self.track(addr, What::Vmalloc { size });
        }
    }

    /// Whether `addr` starts a live vmalloc/vmap area of `kind`.
    fn starts_area(addr: usize, kind: AreaKind) -> bool {
        vmalloc::is_vmalloc_addr(addr as *const u8)
            && matches!(vmalloc::find_vm_area(addr as *const u8),
                Some((area, AddrPlace::Inside { offset: 0 })) if area.kind == kind)
    }

    pub fn vfree(&mut self, a: &[&str]) {
        let [addr] = a else { return usage("vfree ADDR") };
        let Some(addr) = addr_arg("vfree", addr) else { return };
        if !self.may_free("vfree", addr, Self::starts_area(addr, AreaKind::Vmalloc)) {
            return;
        }
        if vmalloc::vfree(addr as *const u8).is_ok() {
            match self.find(addr) {
                Some(i) => {
                    self.untrack(i);
                    kprintln!("vfree({addr:#x}): freed");
                }
                None => kprintln!("vfree({addr:#x}): nothing to free (NULL)"),
            }
        }
    }

    pub fn vmap(&mut self, a: &[&str]) {
        let n = match a {
            [] => 4,
            [n] => match parse_u64(n).filter(|&n| (1..=MAX_VMAP_PAGES as u64).contains(&n)) {
                Some(n) => n as usize,
                None => return kprintln!("vmap: `{n}` is not a page count (1 to {MAX_VMAP_PAGES})"),
            },
            _ => return usage("vmap [NPAGES]"),
        };
        if !self.room("vmap") {
            return;
        }
        let mut pages = Vec::new();
        if pages.try_reserve_exact(n).is_err() {
            return kprintln!("vmap: no memory for the list of {n} pages");
        }
        for _ in 0..n {
            match Pages::alloc(GfpFlags::GFP_KERNEL, 0) {
                Ok(p) => pages.push(p),
                Err(_) => return, // reported by alloc_pages; the pages taken so far are dropped
            }
        }
        let mut pfns = Vec::new();
        if pfns.try_reserve_exact(n).is_err() {
            return kprintln!("vmap: no memory for the list of {n} frames");
        }
        pfns.extend(pages.iter().map(|p| Pfn::from_phys(p.frame().start_address())));
        // SAFETY: the frames belong to `pages`, which the session keeps until the vunmap.
        if let Ok(v) = unsafe { vmalloc::vmap(&pfns, VmFlags::VM_MAP) } {
            let addr = v.as_ptr() as usize;
            crate::kprint!("vmap({n} pages at phys");
            for (i, p) in pfns.iter().enumerate().take(8) {
                crate::kprint!("{}{:#x}", if i == 0 { " " } else { ", " }, p.phys().as_u64());
            }
            kprintln!(
                "{}) = {addr:#x}: {} contiguous",
                if n > 8 { ", ..." } else { "" },
                Size(n as u64 * 4096)
            );
            self.track(addr, What::Vmap { pages });
        }
    }

    pub fn vunmap(&mut self, a: &[&str]) {
        let [addr] = a else { return usage("vunmap ADDR") };
        let Some(addr) = addr_arg("vunmap", addr) else { return };
        if !self.may_free("vunmap", addr, Self::starts_area(addr, AreaKind::Vmap)) {
            return;
        }
        if vmalloc::vunmap(addr as *const u8).is_ok() {
            if let Some(i) = self.find(addr) {
                // The frames go back to the page allocator now that nothing maps them.
                let freed = match self.untrack(i).what {
                    What::Vmap { pages } => pages.len(),
                    _ => 0,
                };
                kprintln!("vunmap({addr:#x}): unmapped; its {freed} pages freed");
            }
        }
    }

    // ---- slab caches ----

    fn cache(&self, cmd: &str, name: &str) -> Option<usize> {
        let i = self.caches.iter().position(|c| c.name == name);
        if i.is_none() {
            kprintln!("{cmd}: no cache `{name}` was created at this console (kmem_cache_create NAME SIZE)");
        }
        i
    }

    pub fn kmem_cache_create(&mut self, a: &[&str]) {
        let (2..=3, Some(&name), Some(size)) = (a.len(), a.first(), a.get(1)) else {
            return usage("kmem_cache_create NAME SIZE [ALIGN]");
        };
        let Some(size) = size_arg("kmem_cache_create", size) else { return };
        let align = match a.get(2) {
            None => 0,
            Some(s) => match parse_u64(s) {
                Some(v) => v as usize,
                None => return kprintln!("kmem_cache_create: `{s}` is not an alignment"),
            },
        };
        let valid = (1..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !valid {
            return kprintln!("kmem_cache_create: `{name}`: a name is 1 to 32 of A-Z a-z 0-9 - _ . :");
        }
        if self.caches.iter().any(|c| c.name == name) {
            return kprintln!("kmem_cache_create: a cache `{name}` exists already at this console");
        }
        if self.caches.len() == MAX_CACHES {
            return kprintln!("kmem_cache_create: {MAX_CACHES} console caches exist; destroy one first");
        }
        let name: &'static str = Box::leak(String::from(name).into_boxed_str());
        match slab::kmem_cache_create(name, size, align, ::mm::slab::SlabFlags::empty(), None) {
            Ok(cache) => {
                kprintln!(
                    "kmem_cache_create(\"{name}\", {size}, {align}) = cache {name}: {}-byte slots (align {}), {} objects per slab of {} page{}",
                    cache.size(),
                    cache.align(),
                    cache.objects_per_slab(),
                    1 << cache.order(),
                    if cache.order() == 0 { "" } else { "s" }
                );
                self.caches.push(ConsoleCache { name, cache });
            }
            Err(_) => {
                // SAFETY: the name was leaked above for this cache, which was not created;
                // nothing else holds it (the refusal report that named it is printed).
                drop(unsafe { Box::from_raw(name as *const str as *mut str) });
            }
        }
    }

    pub fn kmem_cache_alloc(&mut self, a: &[&str]) {
        let (Some(name), 1..=2) = (a.first(), a.len()) else { return usage("kmem_cache_alloc NAME [GFP]") };
        let Some(i) = self.cache("kmem_cache_alloc", name) else { return };
        let Some((gfp, gfp_name)) = gfp_arg("kmem_cache_alloc", a.get(1)) else { return };
        if !self.room("kmem_cache_alloc") {
            return;
        }
        let c = &self.caches[i];
        match slab::kmem_cache_alloc(&c.cache, gfp) {
            Ok(p) => {
                let addr = p.as_ptr() as usize;
                let name = c.name;
                kprintln!("kmem_cache_alloc({name}, {gfp_name}) = {addr:#x}");
                self.track(addr, What::Object { cache: name });
            }
            Err(e) => quiet_failure("kmem_cache_alloc", gfp, &e),
        }
    }

    pub fn kmem_cache_free(&mut self, a: &[&str]) {
        let [name, addr] = a else { return usage("kmem_cache_free NAME ADDR") };
        let Some(i) = self.cache("kmem_cache_free", name) else { return };
        let Some(addr) = addr_arg("kmem_cache_free", addr) else { return };
        let live = slab::ksize(addr as *const u8).is_ok_and(|n| n > 0);
        if !self.may_free("kmem_cache_free", addr, live) {
            return;
        }
        let Some(ptr) = NonNull::new(addr as *mut u8) else {
            return kprintln!("kmem_cache_free({name}, 0x0): NULL is not an object");
        };
        if slab::kmem_cache_free(&self.caches[i].cache, ptr).is_ok() {
            if let Some(j) = self.find(addr) {
                self.untrack(j);
            }
            kprintln!("kmem_cache_free({name}, {addr:#x}): freed");
        }
    }

    pub fn kmem_cache_destroy(&mut self, a: &[&str]) {
        let [name] = a else { return usage("kmem_cache_destroy NAME") };
        let Some(i) = self.cache("kmem_cache_destroy", name) else { return };
        let c = self.caches.swap_remove(i);
        match slab::kmem_cache_destroy(c.cache) {
            Ok(()) => {
                kprintln!("kmem_cache_destroy({name}): destroyed");
                // SAFETY: the name was leaked for this cache, which no longer exists; the
                // console's held objects of it are gone (destroy refuses while any is live).
                drop(unsafe { Box::from_raw(c.name as *const str as *mut str) });
            }
            Err((cache, _)) => self.caches.push(ConsoleCache { name: c.name, cache }),
        }
    }

    // ---- listing and exit ----

    /// Prints what the console holds.
    pub fn list(&self) {
        if self.held.is_empty() && self.caches.is_empty() {
            return kprintln!("the console holds nothing");
        }
        for h in &self.held {
            match &h.what {
                What::Kmalloc { size } => kprintln!("  {:#x}  kmalloc, {size} bytes", h.addr),
                What::Pages { order } => kprintln!("  {:#x}  alloc_pages, order {order}", h.addr),
                What::Vmalloc { size } => kprintln!("  {:#x}  vmalloc, {size} bytes", h.addr),
                What::Vmap { pages } => kprintln!("  {:#x}  vmap of {} pages", h.addr, pages.len()),
                What::Object { cache } => kprintln!("  {:#x}  object of cache {cache}", h.addr),
            }
        }
        for c in &self.caches {
            kprintln!("  cache {}: {} objects live", c.name, c.cache.live_objects());
        }
    }

    /// `exit`: says what is left allocated, then ends the session.
    pub fn exit(&self) -> ! {
        if self.held.is_empty() && self.caches.is_empty() {
            kprintln!("exit: nothing allocated at the console is left");
        } else {
            kprintln!(
                "exit: left allocated at the console: {} allocation{} and {} cache{}:",
                self.held.len(),
                if self.held.len() == 1 { "" } else { "s" },
                self.caches.len(),
                if self.caches.len() == 1 { "" } else { "s" }
            );
            self.list();
        }
        let code = if self.failed {
            kprintln!("exit: a stress run found damage; the kernel reports failure");
            crate::arch::qemu::ExitCode::Failure
        } else {
            crate::arch::qemu::ExitCode::Success
        };
        crate::arch::qemu::exit(code)
    }
}
