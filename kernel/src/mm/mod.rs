//! The kernel side of memory management: wires the allocator logic of the `mm` crate to real
//! memory (the bootloader's direct map of all physical memory) and real page tables.
//!
//! Bring-up order, as on Linux: firmware memory map -> memblock (early allocator) -> page
//! descriptors and zones -> buddy allocator -> (later) slab caches -> vmalloc.

pub mod direct_pages;
pub mod fault_inject;
pub mod kalloc;
pub mod layout;
pub mod memory_map;
pub mod mempool;
pub mod page_alloc;
pub mod page_ref;
pub mod report;
pub mod slab;
pub mod slab_bug;
pub mod stress;
mod tests;
pub mod util;
pub mod vmalloc;

use ::mm::addr::DirectMap;
use ::mm::buddy::Node;
use ::mm::memblock::MemBlock;
use ::mm::zone::ZoneLimits;
use bootloader_api::BootInfo;

use memory_map::MemoryMap;

static NODE: spin::Once<Node> = spin::Once::new();
static BOOT: spin::Once<BootLayout> = spin::Once::new();
/// The firmware's memory map and memblock's reservations, kept after boot for the console's
/// summary and the page-state map (which tells reserved pages apart by them).
static FIRMWARE_MAP: spin::Once<MemoryMap> = spin::Once::new();
static BOOT_RESERVATIONS: spin::Once<BootReservations> = spin::Once::new();

/// Most memblock reservations kept after boot (QEMU boots make four or five).
pub const MAX_BOOT_RESERVATIONS: usize = 32;

/// memblock's reservations as they stood when the buddy allocator took over.
pub struct BootReservations {
    pub ranges: [::mm::memblock::MemBlockRange; MAX_BOOT_RESERVATIONS],
    pub len: usize,
    pub bytes: u64,
}

impl BootReservations {
    pub fn ranges(&self) -> &[::mm::memblock::MemBlockRange] {
        &self.ranges[..self.len]
    }
}

/// The firmware memory map as the bootloader passed it.
pub fn firmware_map() -> &'static MemoryMap {
    FIRMWARE_MAP.get().expect("mm::init has not run")
}

/// memblock's reservations at hand-over.
pub fn boot_reservations() -> &'static BootReservations {
    BOOT_RESERVATIONS.get().expect("mm::init has not run")
}

/// Where the bootloader put things, fixed at boot.
#[derive(Clone, Copy, Debug)]
pub struct BootLayout {
    /// Virtual address of physical address 0 in the direct map.
    pub direct_map_base: u64,
    /// Bytes of physical address space the direct map covers (up to the end of RAM).
    pub direct_map_size: u64,
    /// Physical address of the kernel image (reserved memory).
    pub kernel_phys: u64,
}

/// What bringing up the page allocator cost, for the benchmark report.
#[derive(Clone, Copy, Debug)]
pub struct InitCost {
    /// TSC ticks (guest instructions under `-icount shift=0`) spent in memblock, descriptor and
    /// buddy initialisation.
    pub ticks: u64,
    /// Pages the descriptors cover and the buddy allocator manages.
    pub managed_pages: u64,
}

static INIT_COST: spin::Once<InitCost> = spin::Once::new();

pub fn init_cost() -> Option<InitCost> {
    INIT_COST.get().copied()
}

/// The buddy allocator of node 0. Panics if called before [`init`].
#[inline]
pub fn node() -> &'static Node {
    NODE.get().expect("page allocator used before mm::init")
}

pub fn boot_layout() -> &'static BootLayout {
    BOOT.get().expect("mm::init has not run")
}

pub fn direct_map_base() -> u64 {
    boot_layout().direct_map_base
}

pub fn direct_map_size() -> u64 {
    boot_layout().direct_map_size
}

pub fn direct_map() -> DirectMap {
    // SAFETY: the bootloader maps all physical memory at `direct_map_base` for the kernel's
    // lifetime (`Mapping::Dynamic` for `physical_memory` in BOOTLOADER_CONFIG).
    unsafe { DirectMap::new(direct_map_base() as *mut u8) }
}

/// Brings up physical memory management: prints the memory map, sets up memblock, the page
/// descriptors, the zones and the buddy allocator, and reports what it built.
pub fn init(boot_info: &'static BootInfo, cmdline: &crate::cmdline::Cmdline) {
    let Some(offset) = boot_info.physical_memory_offset.into_option() else {
        panic!("the bootloader did not map physical memory (BOOTLOADER_CONFIG.mappings.physical_memory)");
    };
    // The console prints a summary instead of the boot report.
    let quiet = cmdline.mode == crate::cmdline::Mode::Console;
    let map = FIRMWARE_MAP.call_once(|| MemoryMap::from_bootloader(&boot_info.memory_regions));
    if !quiet {
        map.print();
    }

    let layout = BootLayout {
        direct_map_base: offset,
        direct_map_size: map.max_ram_end(),
        kernel_phys: boot_info.kernel_addr,
    };
    BOOT.call_once(|| layout);

    let start = crate::arch::rdtsc();
    // RAM the bootloader used (kernel image, stack, boot page tables, boot info) is memory that is
    // present but reserved, as the kernel image is on Linux: it counts in `present`, not `managed`.
    let ram = map.with_bootloader_as_usable();
    let mut memblock = MemBlock::new(ram.regions())
        .unwrap_or_else(|e| panic!("memblock cannot take the firmware memory map: {e}"));
    for r in map.regions().iter().filter(|r| r.kind == ::mm::memmap::RegionKind::Bootloader) {
        memblock
            .reserve(r.start, r.end, "bootloader: kernel image, stack, page tables, boot info")
            .unwrap_or_else(|e| panic!("memblock cannot reserve the bootloader's memory: {e}"));
    }
    // Low memory for the AP trampoline, before the buddy allocator takes it.
    crate::arch::smp::reserve_trampoline(&mut memblock);
    // SAFETY: the direct map covers every usable range of the memory map, and memblock only
    // hands out usable memory nobody else uses (the bootloader's own memory is `Bootloader`).
    // The descriptors go to the vmemmap region of the live page tables (the bootloader's, which
    // every CPU uses); their page-table pages come from memblock like the descriptors.
    let (root, _) = x86_64::registers::control::Cr3::read();
    let mut vmemmap = ::mm::mem_map::VmemmapPageTables::new(
        root.start_address(),
        layout::VMEMMAP_START,
        layout::VMEMMAP_SIZE,
    );
    // SAFETY: as above; the vmemmap region is outside the bootloader's dynamic range, and
    // `VmemmapPageTables::init` checks that nothing is mapped there.
    let node = unsafe { Node::init(&mut memblock, direct_map(), ZoneLimits::X86_64, &mut vmemmap) }
        .unwrap_or_else(|e| panic!("cannot set up the page allocator: {e}"));
    let ticks = crate::arch::rdtsc() - start;
    let node = NODE.call_once(|| node);
    // Before anything else allocates: the per-CPU page lists follow the running CPU.
    page_alloc::init_cpu_hooks();
    INIT_COST.call_once(|| InitCost { ticks, managed_pages: node.totals().managed_pages });

    BOOT_RESERVATIONS.call_once(|| {
        let mut kept = BootReservations {
            ranges: [::mm::memblock::MemBlockRange { start: 0, end: 0, label: "" }; MAX_BOOT_RESERVATIONS],
            len: 0,
            bytes: memblock.reserved_bytes(),
        };
        for r in memblock.reservations().take(MAX_BOOT_RESERVATIONS) {
            kept.ranges[kept.len] = *r;
            kept.len += 1;
        }
        kept
    });
    if !quiet {
        report::print_boot_summary(&memblock, node);
    }
    crate::arch::fault::set_address_describer(report::describe_address);

    slab::init(cmdline.get("slab_debug"));
    let on_alloc = auto_init_param(cmdline, "init_on_alloc");
    let on_free = auto_init_param(cmdline, "init_on_free");
    set_auto_init(on_alloc, on_free);
    crate::info!("{}", node.auto_init().report());
    fault_inject::init(cmdline);
    // After kmalloc: the area trees live on the heap.
    vmalloc::init();
}

/// `init_on_alloc=` / `init_on_free=` from the command line (Linux's `kstrtobool` values);
/// off when absent, and off with a warning when the value is not a boolean.
fn auto_init_param(cmdline: &crate::cmdline::Cmdline, name: &str) -> bool {
    match cmdline.get(name) {
        None => false,
        Some(v) => ::mm::auto_init::parse_bool(v).unwrap_or_else(|| {
            crate::warn!("mm: ignoring {name}={v}: not a boolean (1/0, y/n, on/off)");
            false
        }),
    }
}

/// Turns heap auto-initialisation on or off for the page allocator and every slab cache (the
/// boot parameters; the benchmark flips them to measure their cost).
pub fn set_auto_init(init_on_alloc: bool, init_on_free: bool) {
    node().set_auto_init(init_on_alloc, init_on_free);
    slab::slab().set_auto_init(init_on_alloc, init_on_free);
}
