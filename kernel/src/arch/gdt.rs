//! The GDT and the TSS, whose interrupt stack table gives the double fault, NMI and machine check
//! handlers stacks of their own: a double fault caused by a kernel stack overflow cannot push
//! its frame on the overflowed stack, and without a known-good stack it would triple fault.
//!
//! Per-CPU: every CPU loads its own GDT and TSS (a TSS is marked busy when loaded, so two CPUs
//! cannot share one) with IST stacks of its own. The boot CPU's IST stacks are statics; an AP's
//! are given by `arch::smp` (page allocator) before it starts.

use mm::NR_CPUS;
use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slots (0-based, as `set_stack_index` takes them).
pub const DOUBLE_FAULT_IST: u16 = 0;
pub const NMI_IST: u16 = 1;
pub const MACHINE_CHECK_IST: u16 = 2;

/// Size of each IST stack. The double fault report formats text and calls the memory layer's
/// address describer, so it gets more than the bare minimum.
pub const IST_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(16))]
struct Stack([u8; IST_STACK_SIZE]);

static mut DOUBLE_FAULT_STACK: Stack = Stack([0; IST_STACK_SIZE]);
static mut NMI_STACK: Stack = Stack([0; IST_STACK_SIZE]);
static mut MACHINE_CHECK_STACK: Stack = Stack([0; IST_STACK_SIZE]);

static TSS: [Once<TaskStateSegment>; NR_CPUS] = [const { Once::new() }; NR_CPUS];
static GDT: [Once<(GlobalDescriptorTable, Selectors)>; NR_CPUS] = [const { Once::new() }; NR_CPUS];

#[derive(Clone, Copy, Debug)]
pub struct Selectors {
    pub code: SegmentSelector,
    pub data: SegmentSelector,
    pub tss: SegmentSelector,
}

fn stack_top(stack: *mut Stack) -> VirtAddr {
    // Stacks grow down: the IST entry is the end of the array.
    VirtAddr::from_ptr(stack) + IST_STACK_SIZE as u64
}

/// Loads the boot CPU's GDT and TSS and reloads every segment register. The bootloader's GDT is
/// left behind.
pub fn init() {
    // Only addresses are taken here; the stacks are written by the CPU alone, on exception entry.
    let ist = [
        stack_top(core::ptr::addr_of_mut!(DOUBLE_FAULT_STACK)),
        stack_top(core::ptr::addr_of_mut!(NMI_STACK)),
        stack_top(core::ptr::addr_of_mut!(MACHINE_CHECK_STACK)),
    ];
    init_cpu(0, ist);
}

/// Loads CPU `cpu`'s own GDT and TSS, whose IST entries are `ist` (tops of the double fault, NMI
/// and machine check stacks, in that order, each [`IST_STACK_SIZE`] bytes and never freed).
pub fn init_cpu(cpu: usize, ist: [VirtAddr; 3]) {
    let tss = TSS[cpu].call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = ist[0];
        tss.interrupt_stack_table[NMI_IST as usize] = ist[1];
        tss.interrupt_stack_table[MACHINE_CHECK_IST as usize] = ist[2];
        tss
    });
    let (gdt, sel) = GDT[cpu].call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { code, data, tss })
    });
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which lives in a static;
    // the code segment is a 64-bit ring-0 segment, the data segment a ring-0 data segment (SS
    // must be valid for `iretq` from interrupt handlers), and the TSS descriptor points at a
    // `'static` TSS that is this CPU's alone (one slot per logical CPU id) and loaded once.
    unsafe {
        CS::set_reg(sel.code);
        SS::set_reg(sel.data);
        DS::set_reg(sel.data);
        ES::set_reg(sel.data);
        load_tss(sel.tss);
    }
}

/// The boot CPU's selectors (after [`init`]).
pub fn selectors() -> Option<Selectors> {
    GDT[0].get().map(|(_, s)| *s)
}

/// The boot CPU's TSS (after [`init`]); tests check its IST entries.
pub fn tss() -> Option<&'static TaskStateSegment> {
    TSS[0].get()
}

/// CPU `cpu`'s TSS, once it has loaded it.
pub fn tss_of(cpu: usize) -> Option<&'static TaskStateSegment> {
    TSS.get(cpu)?.get()
}

/// The `[bottom, top)` range of the double fault stack, which fault reports name.
pub fn double_fault_stack() -> (u64, u64) {
    let top = stack_top(core::ptr::addr_of_mut!(DOUBLE_FAULT_STACK)).as_u64();
    (top - IST_STACK_SIZE as u64, top)
}
