//! The GDT and the TSS, whose interrupt stack table gives the double fault, NMI and machine check
//! handlers stacks of their own: a double fault caused by a kernel stack overflow cannot push
//! its frame on the overflowed stack, and without a known-good stack it would triple fault.
//!
//! Per-CPU: these are the boot CPU's tables. An AP needs its own TSS and IST stacks (a TSS is
//! marked busy when loaded), so SMP bring-up will turn these statics into per-CPU copies.

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

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

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

/// Loads the GDT and TSS and reloads every segment register. The bootloader's GDT is left behind.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        // Only addresses are taken here; the stacks are written by the CPU alone, on exception
        // entry.
        tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] =
            stack_top(core::ptr::addr_of_mut!(DOUBLE_FAULT_STACK));
        tss.interrupt_stack_table[NMI_IST as usize] = stack_top(core::ptr::addr_of_mut!(NMI_STACK));
        tss.interrupt_stack_table[MACHINE_CHECK_IST as usize] =
            stack_top(core::ptr::addr_of_mut!(MACHINE_CHECK_STACK));
        tss
    });
    let (gdt, sel) = GDT.call_once(|| {
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
    // `'static` TSS that is loaded exactly once on this CPU.
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
    GDT.get().map(|(_, s)| *s)
}

/// The loaded TSS (after [`init`]); tests check its IST entries.
pub fn tss() -> Option<&'static TaskStateSegment> {
    TSS.get()
}

/// The `[bottom, top)` range of the double fault stack, which fault reports name.
pub fn double_fault_stack() -> (u64, u64) {
    let top = stack_top(core::ptr::addr_of_mut!(DOUBLE_FAULT_STACK)).as_u64();
    (top - IST_STACK_SIZE as u64, top)
}
