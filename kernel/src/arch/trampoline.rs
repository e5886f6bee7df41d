//! The real-mode trampoline an application processor starts in (Linux:
//! `arch/x86/realmode/rm/trampoline_64.S`).
//!
//! A STARTUP IPI starts the AP in 16-bit real mode at `CS:IP = (page << 8):0`, so the code must
//! sit in a page below 1 MiB. It goes 16-bit -> 32-bit protected mode (its own 4-entry GDT) ->
//! 64-bit long mode (PAE, EFER.LME|NXE, CR0.PG|WP) on a temporary PML4, then calls the kernel's
//! AP entry on the AP's own stack. The temporary PML4 identity-maps the first 2 MiB (where the
//! trampoline runs while paging turns on) and shares the kernel's upper-half PML4 entries, so the
//! kernel's code, direct map and vmalloc stacks are all reachable; the AP switches to the
//! kernel's own CR3 first thing. The boot CPU's tables never get the identity mapping.
//!
//! Layout of the reserved low memory (4 pages, [`TRAMPOLINE_SIZE`]):
//!
//! ```text
//! +0x0000  code page: jmp over the data block; data block at +8 (patched per AP); code
//! +0x1000  temporary PML4: [0] -> PDPT, [256..512] copied from the kernel's PML4
//! +0x2000  PDPT: [0] -> PD
//! +0x3000  PD: [0] = 2 MiB identity page at physical 0
//! ```
//!
//! The code uses only offsets from its own start (`%ebx` = its physical base, computed from `CS`
//! in real mode), so it runs wherever memblock found room.

use core::arch::global_asm;

/// Bytes of low memory the trampoline needs (code page + 3 page-table pages).
pub const TRAMPOLINE_SIZE: u64 = 4 * 4096;

// Offsets into the code page of the data block the asm reads (see the `.quad`s below).
const OFF_GDT_PTR_BASE: usize = 8 + 32 + 2;
const OFF_FAR32: usize = 8 + 40;
const OFF_FAR64: usize = 8 + 48;
const OFF_CR3: usize = 8 + 56;
const OFF_STACK: usize = 8 + 64;
const OFF_ARG: usize = 8 + 72;
const OFF_ENTRY: usize = 8 + 80;
const OFF_START32: usize = 8 + 88;
const OFF_START64: usize = 8 + 92;
const OFF_GDT: usize = 8;

global_asm!(
    r#"
.section .text.smp_trampoline, "ax"
.balign 16
.global smp_trampoline_start
smp_trampoline_start:
.code16
    jmp 1f
.balign 8
    /* +8: GDT: null, 32-bit code 0x08, data 0x10, 64-bit code 0x18 */
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
    /* +40: GDT pointer (base patched), padding */
    .word 31
    .long 0
    .word 0
    /* +48: far pointer to the 32-bit code (offset patched), +56: to the 64-bit code */
    .long 0
    .word 0x08
    .word 0
    .long 0
    .word 0x18
    .word 0
    /* +64 temporary CR3, +72 stack top, +80 argument, +88 entry (all patched) */
    .quad 0
    .quad 0
    .quad 0
    .quad 0
    /* +96, +100: offsets of the 32- and 64-bit code from the start */
    .long 2f - smp_trampoline_start
    .long 3f - smp_trampoline_start
1:
    cli
    cld
    xorl %ebx, %ebx
    movw %cs, %bx
    movw %bx, %ds
    shll $4, %ebx
    lgdtl (8 + 32)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl *(8 + 40)
.code32
2:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl (8 + 56)(%ebx), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x900, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax
    movl %eax, %cr0
    ljmpl *(8 + 48)(%ebx)
.code64
3:
    movl %ebx, %ebx
    movq (8 + 64)(%rbx), %rsp
    movq (8 + 72)(%rbx), %rdi
    movq (8 + 80)(%rbx), %rax
    xorl %ebp, %ebp
    callq *%rax
    ud2
.global smp_trampoline_end
smp_trampoline_end:
.text
"#,
    options(att_syntax)
);

extern "C" {
    static smp_trampoline_start: u8;
    static smp_trampoline_end: u8;
}

/// The trampoline installed in low memory.
pub struct Trampoline {
    /// Physical address of the code page (4 KiB aligned, below 1 MiB).
    phys: u64,
    /// Its direct-map address.
    virt: *mut u8,
}

impl Trampoline {
    /// Copies the trampoline to `phys` and builds its temporary page tables from the kernel's
    /// PML4 (physical `kernel_pml4`).
    ///
    /// # Safety
    /// `[phys, phys + TRAMPOLINE_SIZE)` is RAM below 1 MiB that nobody else uses (a memblock
    /// reservation), 4 KiB aligned, reachable at `direct_map + phys`; `kernel_pml4` is the live
    /// PML4, likewise reachable.
    pub unsafe fn install(phys: u64, direct_map: u64, kernel_pml4: u64) -> Trampoline {
        assert!(
            phys.is_multiple_of(4096) && phys + TRAMPOLINE_SIZE <= 0x10_0000,
            "trampoline must be below 1 MiB"
        );
        let virt = (direct_map + phys) as *mut u8;
        // Only the symbols' addresses are used, never their contents as Rust values.
        let start = core::ptr::addr_of!(smp_trampoline_start);
        let len = core::ptr::addr_of!(smp_trampoline_end) as usize - start as usize;
        assert!(len <= 4096, "trampoline code is {len} bytes");
        // SAFETY: the destination is the reserved range (contract), the source the kernel text.
        unsafe {
            core::ptr::write_bytes(virt, 0, TRAMPOLINE_SIZE as usize);
            core::ptr::copy_nonoverlapping(start, virt, len);
        }
        let t = Trampoline { phys, virt };
        let start32 = t.get_u32(OFF_START32);
        let start64 = t.get_u32(OFF_START64);
        t.put_u32(OFF_GDT_PTR_BASE, (phys + OFF_GDT as u64) as u32);
        t.put_u32(OFF_FAR32, phys as u32 + start32);
        t.put_u32(OFF_FAR64, phys as u32 + start64);
        t.put_u64(OFF_CR3, phys + 0x1000);
        let table = |i: u64| (direct_map + phys + i * 0x1000) as *mut u64;
        let (present_writable, huge) = (0b11u64, 1u64 << 7);
        // SAFETY: the three table pages are inside the reserved range; the kernel's PML4 is
        // read through the direct map and never written.
        unsafe {
            let pml4 = table(1);
            *pml4 = (phys + 0x2000) | present_writable;
            let kernel = (direct_map + kernel_pml4) as *const u64;
            for i in 256..512 {
                *pml4.add(i) = *kernel.add(i);
            }
            *table(2) = (phys + 0x3000) | present_writable;
            *table(3) = huge | present_writable;
        }
        t
    }

    /// The STARTUP IPI vector: the code page's page number.
    pub fn sipi_page(&self) -> u8 {
        (self.phys >> 12) as u8
    }

    /// Sets what the next AP to start gets: its stack top, the argument of `entry` and `entry`.
    pub fn prepare(&self, stack_top: u64, arg: u64, entry: extern "C" fn(u64) -> !) {
        self.put_u64(OFF_STACK, stack_top);
        self.put_u64(OFF_ARG, arg);
        self.put_u64(OFF_ENTRY, entry as usize as u64);
    }

    fn get_u32(&self, off: usize) -> u32 {
        // SAFETY: `off` is inside the code page, which this struct owns.
        unsafe { core::ptr::read_unaligned(self.virt.add(off) as *const u32) }
    }

    fn put_u32(&self, off: usize, v: u32) {
        // SAFETY: as in `get_u32` (the GDT base at +42 is not 4-aligned, hence unaligned). The
        // fence keeps the store before the STARTUP IPI's (volatile) ICR write.
        unsafe { core::ptr::write_unaligned(self.virt.add(off) as *mut u32, v) };
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }

    fn put_u64(&self, off: usize, v: u64) {
        // SAFETY: as in `put_u32`; the offsets are 8-aligned in the 4 KiB-aligned page;
        // volatile because another CPU reads it after the STARTUP IPI.
        unsafe { core::ptr::write_volatile(self.virt.add(off) as *mut u64, v) }
    }
}
