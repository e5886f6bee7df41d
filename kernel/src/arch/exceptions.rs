//! The IDT and the CPU exception handlers. Every exception is fatal in this kernel (there is no
//! user space and no demand paging), so each handler prints a report and ends the session —
//! or, while the in-kernel test harness runs a test, abandons that test (see `ktest`).

use core::fmt::Write;

use spin::Once;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{InterruptDescriptorTable, InterruptStackFrame, PageFaultErrorCode};
use x86_64::VirtAddr;

use super::fault::{self, Console, PfError, SelectorError};
use super::gdt;
use super::percpu;

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// How an exception's error code is shown.
#[derive(Clone, Copy)]
enum ErrorCode {
    None,
    /// Error code without structure (#DF, #AC, #CP: always 0 or vendor-specific).
    Plain(u64),
    /// Segment selector error code (#TS, #NP, #SS, #GP).
    Selector(u64),
    /// Page fault error code; CR2 holds the address.
    PageFault(u64),
}

/// Prints the report for one exception and never returns (see [`fault::die`]).
fn report(vector: u8, mnemonic: &str, name: &str, frame: &InterruptStackFrame, code: ErrorCode) -> ! {
    percpu::irq_enter();
    let w = &mut Console;
    let _ =
        writeln!(w, "\n[FAULT] EXCEPTION: {name} ({mnemonic}, vector {vector}) on CPU {}", percpu::cpu_id());
    if let Some(test) = crate::ktest::current_test() {
        let _ = writeln!(w, "[FAULT]   in test {test}");
    }
    match code {
        ErrorCode::None => {}
        ErrorCode::Plain(e) => {
            let _ = writeln!(w, "[FAULT]   error code: {e:#x}");
        }
        ErrorCode::Selector(e) => {
            let _ = writeln!(w, "[FAULT]   error code: {e:#x} = {}", SelectorError(e));
        }
        ErrorCode::PageFault(e) => {
            let addr = Cr2::read_raw();
            let _ = writeln!(w, "[FAULT]   error code: {e:#x} = {}", PfError(e));
            let _ = write!(w, "[FAULT]   faulting address (CR2): {addr:#018x} = ");
            fault::describe(VirtAddr::new_truncate(addr), w);
            let _ = writeln!(w);
        }
    }
    let _ = write!(w, "[FAULT]   RIP: {:#018x} = ", frame.instruction_pointer.as_u64());
    fault::describe(frame.instruction_pointer, w);
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "[FAULT]   CS: {:#x}  RFLAGS: {:#x}  SS: {:#x}",
        frame.code_segment.0,
        frame.cpu_flags.bits(),
        frame.stack_segment.0
    );
    let _ = write!(w, "[FAULT]   RSP: {:#018x} = ", frame.stack_pointer.as_u64());
    fault::describe(frame.stack_pointer, w);
    let _ = writeln!(w);
    fault::die()
}

macro_rules! exception {
    ($handler:ident, $vector:expr, $mn:literal, $name:literal) => {
        extern "x86-interrupt" fn $handler(frame: InterruptStackFrame) {
            report($vector, $mn, $name, &frame, ErrorCode::None)
        }
    };
    ($handler:ident, $vector:expr, $mn:literal, $name:literal, $kind:ident) => {
        extern "x86-interrupt" fn $handler(frame: InterruptStackFrame, code: u64) {
            report($vector, $mn, $name, &frame, ErrorCode::$kind(code))
        }
    };
}

exception!(divide_error, 0, "#DE", "DIVIDE ERROR");
exception!(debug, 1, "#DB", "DEBUG");
exception!(nmi, 2, "NMI", "NON-MASKABLE INTERRUPT");
exception!(breakpoint, 3, "#BP", "BREAKPOINT");
exception!(overflow, 4, "#OF", "OVERFLOW");
exception!(bound_range, 5, "#BR", "BOUND RANGE EXCEEDED");
exception!(invalid_opcode, 6, "#UD", "INVALID OPCODE");
exception!(device_not_available, 7, "#NM", "DEVICE NOT AVAILABLE");
exception!(invalid_tss, 10, "#TS", "INVALID TSS", Selector);
exception!(segment_not_present, 11, "#NP", "SEGMENT NOT PRESENT", Selector);
exception!(stack_segment, 12, "#SS", "STACK SEGMENT FAULT", Selector);
exception!(general_protection, 13, "#GP", "GENERAL PROTECTION FAULT", Selector);
exception!(x87_floating_point, 16, "#MF", "x87 FLOATING POINT ERROR");
exception!(alignment_check, 17, "#AC", "ALIGNMENT CHECK", Plain);
exception!(simd_floating_point, 19, "#XM", "SIMD FLOATING POINT EXCEPTION");
exception!(virtualization, 20, "#VE", "VIRTUALIZATION EXCEPTION");
exception!(control_protection, 21, "#CP", "CONTROL PROTECTION EXCEPTION", Plain);

extern "x86-interrupt" fn page_fault(mut frame: InterruptStackFrame, code: PageFaultErrorCode) {
    if frame.instruction_pointer.as_u64() == nofault_insn() {
        // The fault-tolerant load (Linux's exception-table fixup for
        // `copy_from_kernel_nofault`): resume at its failure exit instead of dying.
        // SAFETY: the new RIP is the fixup label of the same asm function, which expects to be
        // entered exactly there, with the same stack and registers.
        unsafe { frame.as_mut().update(|f| f.instruction_pointer = VirtAddr::new(nofault_fixup())) };
        return;
    }
    report(14, "#PF", "PAGE FAULT", &frame, ErrorCode::PageFault(code.bits()))
}

core::arch::global_asm!(
    ".global memkernel_read_nofault",
    ".global memkernel_read_nofault_insn",
    ".global memkernel_read_nofault_fixup",
    "memkernel_read_nofault:",
    "memkernel_read_nofault_insn:",
    "    mov rax, [rdi]",
    "    mov [rsi], rax",
    "    mov eax, 1",
    "    ret",
    "memkernel_read_nofault_fixup:",
    "    xor eax, eax",
    "    ret",
);

extern "C" {
    fn memkernel_read_nofault(addr: u64, out: *mut u64) -> u32;
    static memkernel_read_nofault_insn: u8;
    static memkernel_read_nofault_fixup: u8;
}

fn nofault_insn() -> u64 {
    // Only the label's address is taken.
    core::ptr::addr_of!(memkernel_read_nofault_insn) as u64
}

fn nofault_fixup() -> u64 {
    core::ptr::addr_of!(memkernel_read_nofault_fixup) as u64
}

/// Reads the 8 bytes at `addr`, or `None` if that faults (unmapped, not present): Linux's
/// `copy_from_kernel_nofault`. The SMP shootdown test reads freed vmalloc pages with it.
pub fn read_nofault(addr: u64) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: the load is the only memory access that may fault, and a page fault there resumes
    // at the fixup (returning 0) instead of reporting; `v` is a local the function writes.
    let ok = unsafe { memkernel_read_nofault(addr, &mut v) };
    (ok == 1).then_some(v)
}

/// Runs on its own IST stack: the usual cause is a kernel stack overflow, where the page fault
/// on the guard page could not push its frame (the report's RSP line names the guard page).
extern "x86-interrupt" fn double_fault(frame: InterruptStackFrame, code: u64) -> ! {
    let cr2 = Cr2::read_raw();
    let _ = write!(
        Console,
        "\n[FAULT] a fault occurred while delivering another one (usually a kernel stack overflow: \
         see what RSP points at); last page fault address (CR2): {cr2:#018x} = "
    );
    fault::describe(VirtAddr::new_truncate(cr2), &mut Console);
    let _ = writeln!(Console);
    report(8, "#DF", "DOUBLE FAULT", &frame, ErrorCode::Plain(code))
}

extern "x86-interrupt" fn machine_check(frame: InterruptStackFrame) -> ! {
    report(18, "#MC", "MACHINE CHECK", &frame, ErrorCode::None)
}

/// Builds and loads the IDT: exceptions here, hardware interrupt vectors from `interrupts`.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        idt.divide_error.set_handler_fn(divide_error);
        idt.debug.set_handler_fn(debug);
        idt.breakpoint.set_handler_fn(breakpoint);
        idt.overflow.set_handler_fn(overflow);
        idt.bound_range_exceeded.set_handler_fn(bound_range);
        idt.invalid_opcode.set_handler_fn(invalid_opcode);
        idt.device_not_available.set_handler_fn(device_not_available);
        idt.invalid_tss.set_handler_fn(invalid_tss);
        idt.segment_not_present.set_handler_fn(segment_not_present);
        idt.stack_segment_fault.set_handler_fn(stack_segment);
        idt.general_protection_fault.set_handler_fn(general_protection);
        idt.page_fault.set_handler_fn(page_fault);
        idt.x87_floating_point.set_handler_fn(x87_floating_point);
        idt.alignment_check.set_handler_fn(alignment_check);
        idt.simd_floating_point.set_handler_fn(simd_floating_point);
        idt.virtualization.set_handler_fn(virtualization);
        idt.cp_protection_exception.set_handler_fn(control_protection);
        // SAFETY: the IST indices name stacks `gdt::init` installed in the TSS (it runs first);
        // no other handler uses them, so these handlers never share a stack with themselves
        // unless they nest, which for #DF means a triple fault anyway.
        unsafe {
            idt.double_fault.set_handler_fn(double_fault).set_stack_index(gdt::DOUBLE_FAULT_IST);
            idt.non_maskable_interrupt.set_handler_fn(nmi).set_stack_index(gdt::NMI_IST);
            idt.machine_check.set_handler_fn(machine_check).set_stack_index(gdt::MACHINE_CHECK_IST);
        }
        super::interrupts::install(&mut idt);
        idt
    });
    idt.load();
}

/// Loads the shared IDT on an application processor (the boot CPU built it in [`init`]).
pub fn load() {
    IDT.get().expect("exceptions::init ran on the boot CPU").load();
}

/// The loaded IDT's address (tests compare it with `sidt`).
pub fn idt_addr() -> Option<u64> {
    IDT.get().map(|idt| idt as *const _ as u64)
}
