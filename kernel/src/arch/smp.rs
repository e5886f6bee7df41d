//! SMP bring-up: every CPU the ACPI MADT lists is started and ends in its idle loop, ready for
//! cross-CPU calls (`smp_call`). Linux: `arch/x86/kernel/smpboot.c` (`native_cpu_up`,
//! `do_boot_cpu`, `wakeup_secondary_cpu_via_init`).
//!
//! Sequence, from the boot CPU:
//! 1. [`init_topology`] (in `arch::init`, before the allocators): the MADT gives the APIC ids;
//!    `nr_cpu_ids` is set so that SLUB sizes its slabs for that many CPUs; the boot CPU's
//!    local APIC is enabled.
//! 2. [`reserve_trampoline`] (in `mm::init`, between memblock and the buddy allocator): 16 KiB
//!    below 1 MiB for the real-mode trampoline and its temporary page tables.
//! 3. [`boot_secondary_cpus`] (after `mm::init`): for each AP, one at a time: its kernel stack
//!    (vmalloc: the guard page below it is unmapped), its IST stacks (page allocator), the
//!    trampoline patched with both; INIT, 10 ms, STARTUP, 200 us, STARTUP (the MP spec's
//!    sequence); then up to [`AP_BOOT_TIMEOUT_MS`] for the AP to report in. One log line per CPU
//!    that comes up; a CPU that does not is reported, put back in INIT, and skipped. Then
//!    `smp: Brought up 1 node, N CPUs`, as Linux prints it. Then the trampoline's 16 KiB go to
//!    the page allocator (`free_reserved_area`: `Freeing AP trampoline memory: 16K`); Linux
//!    keeps its real-mode trampoline for CPU hotplug and resume, which this kernel does not
//!    have. A CPU that did not come up was put back in INIT, so it cannot run from it later.
//!
//! On the AP ([`ap_entry`], called by the trampoline on the AP's own stack): the boot CPU's CR3,
//! CR0, CR4 and EFER; GS -> its per-CPU block (so fault reports name it); its GDT/TSS; the
//! shared IDT; its local APIC; online; idle loop.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mm::memblock::MemBlock;
use mm::NR_CPUS;
use x86_64::registers::control::{Cr0, Cr3, Cr4};
use x86_64::registers::model_specific::Efer;
use x86_64::VirtAddr;

use super::acpi::{self, MadtInfo};
use super::trampoline::{Trampoline, TRAMPOLINE_SIZE};
use super::{apic, gdt, percpu, smp_call};

/// How long an AP may take from the first STARTUP IPI to reporting in (Linux waits 10 s; TCG
/// runs each vCPU as a host thread on a shared machine, so a slow start is not a dead CPU).
pub const AP_BOOT_TIMEOUT_MS: u64 = 5000;
/// Kernel stack of an AP: smaller than the boot CPU's 512 KiB, enough for the test workloads.
pub const AP_STACK_SIZE: usize = 128 * 1024;

static MADT: spin::Once<Option<MadtInfo>> = spin::Once::new();
static TRAMPOLINE_PHYS: AtomicU64 = AtomicU64::new(0);
/// Bytes of AP kernel stacks allocated (meminfo `KernelStack`; never freed, see
/// [`alloc_ap_stacks`]).
static AP_STACK_BYTES: AtomicU64 = AtomicU64::new(0);

/// What the boot CPU hands the AP being started (one AP starts at a time).
static AP_IST: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
/// The logical id of the AP that last reported in (`u32::MAX`: none yet).
static AP_REPORTED: AtomicU32 = AtomicU32::new(u32::MAX);
/// `fault=ap_bringup`: the AP with this logical id faults on purpose during bring-up.
static FAULT_CPU: AtomicU32 = AtomicU32::new(u32::MAX);

/// The boot CPU's control registers, copied by every AP.
static BSP_CR0: AtomicU64 = AtomicU64::new(0);
static BSP_CR3: AtomicU64 = AtomicU64::new(0);
static BSP_CR4: AtomicU64 = AtomicU64::new(0);
static BSP_EFER: AtomicU64 = AtomicU64::new(0);

/// Reads the MADT, sets `nr_cpu_ids` and enables the boot CPU's local APIC. Without ACPI (or a
/// usable MADT) the kernel runs on the boot CPU alone, and says why.
pub fn init_topology(rsdp: Option<u64>, direct_map: u64, force_xapic: bool) {
    acpi::init(rsdp, direct_map);
    let madt = match acpi::read_madt() {
        Ok(m) => Some(m),
        Err(e) => {
            crate::warn!("smp: cannot read the CPU list ({e}); running on the boot CPU only");
            None
        }
    };
    MADT.call_once(|| madt);
    let Some(madt) = madt else { return };
    mm::cpus::set_nr_cpu_ids(madt.nr_cpus);
    let mode = apic::init_bsp(madt.lapic_phys, direct_map, force_xapic);
    let bsp_apic = apic::id();
    percpu::per_cpu(0).set_apic_id(bsp_apic);
    crate::info!(
        "smp: ACPI MADT: {} CPUs enabled{}{}, local APIC at {:#x} ({:?}); boot CPU APIC id {bsp_apic}; \
         apic timer {} ticks/s",
        madt.nr_cpus,
        if madt.nr_disabled > 0 { ", some disabled" } else { "" },
        if madt.nr_ignored > 0 { ", more than NR_CPUS ignored" } else { "" },
        madt.lapic_phys,
        mode,
        apic::timer_ticks_per_sec(),
    );
    if madt.nr_ignored > 0 {
        crate::warn!("smp: {} CPUs beyond NR_CPUS = {NR_CPUS} stay offline", madt.nr_ignored);
    }
}

/// Reserves the trampoline's 16 KiB below 1 MiB (the highest free spot, as Linux's
/// `reserve_real_mode` takes it top-down) before the buddy allocator takes low memory.
pub fn reserve_trampoline(memblock: &mut MemBlock) {
    if MADT.get().copied().flatten().is_none_or(|m| m.nr_cpus < 2) {
        return;
    }
    let mut best = None;
    memblock.for_each_free_range(|start, end| {
        // Page 0 (real-mode IVT / BIOS data) is left alone; the SIPI vector is a page number.
        let start = start.max(0x1000).next_multiple_of(4096);
        let end = end.min(0x10_0000) & !0xfff;
        if end >= start + TRAMPOLINE_SIZE {
            best = Some(end - TRAMPOLINE_SIZE);
        }
    });
    match best {
        Some(phys) => match memblock.reserve(phys, phys + TRAMPOLINE_SIZE, "smp: AP real-mode trampoline") {
            Ok(()) => TRAMPOLINE_PHYS.store(phys, Ordering::Relaxed),
            Err(e) => crate::warn!("smp: cannot reserve the AP trampoline at {phys:#x}: {e}"),
        },
        None => crate::warn!("smp: no free 16 KiB below 1 MiB for the AP trampoline; APs stay offline"),
    }
}

/// `fault=ap_bringup`: CPU 1 faults during bring-up (its report must name it).
pub fn set_fault_cpu(cpu: u32) {
    FAULT_CPU.store(cpu, Ordering::Relaxed);
}

/// Starts every other enabled CPU of the MADT; returns the number of CPUs online.
pub fn boot_secondary_cpus() -> usize {
    let madt = MADT.get().copied().flatten();
    let phys = TRAMPOLINE_PHYS.load(Ordering::Relaxed);
    let bsp_apic = percpu::per_cpu(0).apic_id();
    crate::info!("smp: CPU 0 is up (APIC id {bsp_apic}, boot CPU)");
    let mut online = 1;
    if let (Some(madt), true) = (madt, phys != 0) {
        let (cr3, _) = Cr3::read();
        BSP_CR0.store(Cr0::read_raw(), Ordering::Relaxed);
        BSP_CR3.store(cr3.start_address().as_u64(), Ordering::Relaxed);
        BSP_CR4.store(Cr4::read_raw(), Ordering::Relaxed);
        BSP_EFER.store(Efer::read_raw(), Ordering::Relaxed);
        let direct_map = super::fault::direct_map_offset();
        // SAFETY: `phys` is the memblock reservation made for it (below 1 MiB, 16 KiB, nobody
        // else's), reached through the direct map; the PML4 is the live one.
        let trampoline = unsafe { Trampoline::install(phys, direct_map, cr3.start_address().as_u64()) };
        for cpu in madt.cpus[..madt.nr_cpus].iter().filter(|c| c.apic_id != bsp_apic) {
            if boot_cpu(&trampoline, online, cpu.apic_id) {
                online += 1;
            }
        }
    }
    mm::cpus::set_num_online_cpus(online);
    // Linux's page_alloc_cpu_online -> zone_pcp_update: high_min/high_max are split over the
    // online CPUs.
    crate::mm::node().zone_pcp_update();
    crate::info!("smp: Brought up 1 node, {online} CPU{}", if online == 1 { "" } else { "s" });
    if phys != 0 {
        // Every AP is in its idle loop on its own stack and page tables, or was put back in
        // INIT: nothing runs from the trampoline any more.
        TRAMPOLINE_PHYS.store(0, Ordering::Relaxed);
        if let Err(e) =
            crate::mm::page_alloc::free_reserved_area(phys, phys + TRAMPOLINE_SIZE, "AP trampoline")
        {
            crate::warn!("smp: the AP trampoline stays reserved: {e}");
        }
    }
    online
}

/// Starts the CPU with APIC id `apic_id` as logical CPU `cpu`; true if it reported in.
fn boot_cpu(trampoline: &Trampoline, cpu: usize, apic_id: u32) -> bool {
    let Some(stack_top) = alloc_ap_stacks() else {
        crate::warn!("smp: no memory for the stacks of the CPU with APIC id {apic_id}; it stays offline");
        return false;
    };
    percpu::per_cpu(cpu).set_apic_id(apic_id);
    trampoline.prepare(stack_top, cpu as u64, ap_entry);
    AP_REPORTED.store(u32::MAX, Ordering::Release);
    apic::send_init(apic_id);
    apic::udelay(10_000);
    apic::send_startup(apic_id, trampoline.sipi_page());
    apic::udelay(200);
    if AP_REPORTED.load(Ordering::Acquire) != cpu as u32 {
        apic::send_startup(apic_id, trampoline.sipi_page());
    }
    let deadline = super::rdtsc() + AP_BOOT_TIMEOUT_MS * apic::tsc_per_ms();
    while AP_REPORTED.load(Ordering::Acquire) != cpu as u32 {
        if super::rdtsc() > deadline {
            // Park it: a late start would run on the next AP's trampoline data.
            apic::send_init(apic_id);
            crate::warn!(
                "smp: CPU with APIC id {apic_id} did not come up within {AP_BOOT_TIMEOUT_MS} ms; \
                 going on without it"
            );
            return false;
        }
        core::hint::spin_loop();
    }
    crate::info!("smp: CPU {cpu} is up (APIC id {apic_id})");
    true
}

/// Allocates the next AP's kernel stack (vmalloc, returns its top) and IST stacks (into
/// `AP_IST`). They are never freed: a CPU keeps its stacks while it is online.
fn alloc_ap_stacks() -> Option<u64> {
    let stack = crate::mm::vmalloc::vmalloc(AP_STACK_SIZE).ok()?;
    // Counted once allocated: a stack whose IST stacks then fail is kept too.
    AP_STACK_BYTES.fetch_add(AP_STACK_SIZE as u64, Ordering::Relaxed);
    let order = (gdt::IST_STACK_SIZE / 4096).trailing_zeros();
    for slot in &AP_IST {
        let bottom = crate::mm::page_alloc::__get_free_pages(mm::GfpFlags::GFP_KERNEL, order).ok()?;
        slot.store(bottom.as_u64() + gdt::IST_STACK_SIZE as u64, Ordering::Relaxed);
    }
    Some(stack.as_ptr() as u64 + AP_STACK_SIZE as u64)
}

/// Bytes of kernel stack the APs were given (vmalloc'd, the guard pages excluded): 6.12's
/// `account_kernel_stack` counts a vmapped stack's pages, not its guard, in `NR_KERNEL_STACK_KB`.
pub fn ap_stack_bytes() -> u64 {
    AP_STACK_BYTES.load(Ordering::Relaxed)
}

/// Where the trampoline lands, on the AP's own stack, with the temporary CR3.
extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = cpu as usize;
    // SAFETY: the boot CPU's values, recorded before any AP started: the same page tables (the
    // temporary ones share their upper half, where this code runs), and the same CR0/CR4/EFER
    // features (paging, protected mode, long mode, NX, WP and PGE stay on).
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) BSP_CR3.load(Ordering::Relaxed), options(nostack));
        Cr4::write_raw(BSP_CR4.load(Ordering::Relaxed));
        Efer::write_raw(BSP_EFER.load(Ordering::Relaxed));
        Cr0::write_raw(BSP_CR0.load(Ordering::Relaxed));
    }
    percpu::init_cpu(cpu);
    let ist = AP_IST.each_ref().map(|s| VirtAddr::new(s.load(Ordering::Relaxed)));
    gdt::init_cpu(cpu, ist);
    super::exceptions::load();
    apic::enable_this_cpu();
    if FAULT_CPU.load(Ordering::Relaxed) == cpu as u32 {
        crate::info!("smp: CPU {cpu} faults on purpose (fault=ap_bringup)");
        // SAFETY: not safe: a deliberate read of the null page, the scenario under test; the
        // page fault never returns here.
        let v = unsafe { core::ptr::read_volatile(core::hint::black_box(core::ptr::null::<u64>())) };
        crate::error!("read {v:#x} from the null page");
    }
    smp_call::set_online(cpu);
    AP_REPORTED.store(cpu as u32, Ordering::Release);
    smp_call::ap_idle_loop()
}
