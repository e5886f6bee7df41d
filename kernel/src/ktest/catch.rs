//! Running a function so that a later fatal error (panic, CPU exception) can abandon it and make
//! the call return "failed" instead — a minimal setjmp/longjmp.
//!
//! [`call_catching`] is an ordinary function to the compiler: it saves the callee-saved
//! registers, the stack pointer and its return address in a [`Context`], then calls the test.
//! [`throw`] restores that state and "returns" from `call_catching` with 1. The caller's frames
//! are intact (the test ran deeper in the same stack); the abandoned frames are simply dropped,
//! without running destructors.

use core::arch::naked_asm;

/// Saved registers: rbx, rbp, r12, r13, r14, r15, rsp (after return), return address.
#[repr(C)]
pub struct Context {
    regs: [u64; 8],
}

impl Context {
    pub const fn new() -> Self {
        Context { regs: [0; 8] }
    }
}

extern "sysv64" fn call_fn(f: usize) {
    // SAFETY: `f` is the `fn()` that `call_catching` received, passed through as an integer.
    let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(f) };
    f();
}

/// Calls `f`; returns 0 when it returns, 1 when [`throw`] abandoned it.
///
/// # Safety
/// `ctx` must stay valid and untouched by others until `f` returns or `throw(ctx)` is called,
/// and `throw` may only be called while `f` is still running (its frame must still exist).
#[unsafe(naked)]
pub unsafe extern "sysv64" fn call_catching(ctx: *mut Context, f: usize) -> u64 {
    naked_asm!(
        "mov [rdi + 0], rbx",
        "mov [rdi + 8], rbp",
        "mov [rdi + 16], r12",
        "mov [rdi + 24], r13",
        "mov [rdi + 32], r14",
        "mov [rdi + 40], r15",
        "lea rax, [rsp + 8]",
        "mov [rdi + 48], rax",
        "mov rax, [rsp]",
        "mov [rdi + 56], rax",
        // Entry rsp is 8 mod 16; the call needs 0 mod 16.
        "sub rsp, 8",
        "mov rdi, rsi",
        "call {call_fn}",
        "add rsp, 8",
        "xor eax, eax",
        "ret",
        call_fn = sym call_fn,
    )
}

/// Makes the pending [`call_catching`] on `ctx` return 1.
///
/// # Safety
/// `ctx` must have been filled by a `call_catching` whose callee is still running on this CPU.
#[unsafe(naked)]
pub unsafe extern "sysv64" fn throw(ctx: *const Context) -> ! {
    naked_asm!(
        "cld",
        "mov rbx, [rdi + 0]",
        "mov rbp, [rdi + 8]",
        "mov r12, [rdi + 16]",
        "mov r13, [rdi + 24]",
        "mov r14, [rdi + 32]",
        "mov r15, [rdi + 40]",
        "mov rsp, [rdi + 48]",
        "mov eax, 1",
        "jmp qword ptr [rdi + 56]",
    )
}
