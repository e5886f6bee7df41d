//! Fault scenarios of the arch layer (`cargo run -- --fault NAME`): each must end in the fatal
//! report the host tests (`tests/faults.rs`) look for.

/// Reads 8 bytes at `addr` with a plain `mov`, so the access happens exactly as written (no
/// compiler reasoning about null or invalid pointers).
fn read_at(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: not safe in general — these scenarios read bad addresses on purpose to raise the
    // exception under test; a fault never returns here.
    unsafe { core::arch::asm!("mov {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) };
    v
}

crate::kfault!(
    fn null_deref() {
        let v = read_at(core::hint::black_box(0));
        crate::error!("read {v:#x} from the null page");
    }
);

// Unbounded recursion: the stack runs into the guard page below it; the page fault cannot push
// its frame there, so the CPU raises a double fault, which runs on its IST stack.
crate::kfault!(
    fn stack_overflow() {
        #[inline(never)]
        fn recurse(depth: u64) -> u64 {
            let frame = [depth; 64];
            let frame = core::hint::black_box(frame);
            if core::hint::black_box(depth) == u64::MAX {
                return frame[0];
            }
            recurse(depth + 1) + frame[63]
        }
        let v = recurse(0);
        crate::error!("recursion ended at {v}");
    }
);

crate::kfault!(
    fn write_rodata() {
        static READ_ONLY: u64 = 0x5a5a;
        let addr = core::hint::black_box(&READ_ONLY as *const u64 as u64);
        // SAFETY: not safe, on purpose: with CR0.WP set this write to `.rodata` must fault.
        unsafe { core::arch::asm!("mov qword ptr [{}], 1", in(reg) addr, options(nostack)) };
        crate::error!("wrote to .rodata: CR0.WP is not protecting read-only pages");
    }
);

crate::kfault!(
    fn exec_stack() {
        // A `ret` instruction on the stack; with EFER.NXE the stack's NX bit makes the call fault.
        let code = core::hint::black_box([0xc3u8; 16]);
        // SAFETY: not safe, on purpose: executing data must raise #PF (instruction fetch).
        unsafe { core::arch::asm!("call {}", in(reg) code.as_ptr(), clobber_abi("sysv64")) };
        crate::error!("executed code on the stack: NX is not enforced");
    }
);

crate::kfault!(
    fn non_canonical() {
        let v = read_at(core::hint::black_box(0x8000_0000_0000_0000));
        crate::error!("read {v:#x} from a non-canonical address");
    }
);

crate::kfault!(
    fn invalid_opcode() {
        // SAFETY: `ud2` raises #UD by definition; that is the scenario.
        unsafe { core::arch::asm!("ud2", options(nostack)) };
    }
);

crate::kfault!(
    fn panic() {
        panic!("deliberate panic from a fault scenario");
    }
);

// Boot with `--smp 2` or more: `arch::smp` makes CPU 1 read the null page during its bring-up,
// whose report must name CPU 1 and end the session. Reaching this function means no AP faulted.
crate::kfault!(
    fn ap_bringup() {
        crate::error!("fault scenario ap_bringup: no AP faulted during bring-up (needs --smp 2 or more)");
    }
);
