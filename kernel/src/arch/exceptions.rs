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

extern "x86-interrupt" fn page_fault(frame: InterruptStackFrame, code: PageFaultErrorCode) {
    report(14, "#PF", "PAGE FAULT", &frame, ErrorCode::PageFault(code.bits()))
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

/// The loaded IDT's address (tests compare it with `sidt`).
pub fn idt_addr() -> Option<u64> {
    IDT.get().map(|idt| idt as *const _ as u64)
}
