//! CPU feature set-up and small instruction wrappers.

use x86_64::registers::control::{Cr0, Cr0Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

/// Reads the time-stamp counter. Under QEMU's `-icount` (the runner's `--bench`) it counts guest
/// instructions, which makes benchmark figures reproducible.
#[inline]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `rdtsc` only reads the TSC into edx:eax; CR4.TSD is clear (ring 0 anyway).
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    ((hi as u64) << 32) | lo as u64
}

/// `cpuid` leaf `leaf`, sub-leaf 0: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    // `cpuid` exists on every x86_64 CPU and only writes registers.
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Whether the CPU supports the no-execute page bit (CPUID 0x8000_0001 EDX bit 20).
pub fn has_nx() -> bool {
    cpuid(0x8000_0000).0 >= 0x8000_0001 && cpuid(0x8000_0001).3 & (1 << 20) != 0
}

/// Makes sure the protections the memory layer relies on are on, whatever the bootloader did:
/// EFER.NXE (so `NO_EXECUTE` in page tables is honoured instead of being a reserved bit) and
/// CR0.WP (so the kernel itself faults when it writes a read-only page, e.g. `.rodata`).
pub fn init_features() {
    if has_nx() {
        let efer = Efer::read();
        if !efer.contains(EferFlags::NO_EXECUTE_ENABLE) {
            // SAFETY: the CPU supports NX (checked above); setting NXE only gives bit 63 of page
            // table entries its NX meaning, and no current entry sets it (NXE was off).
            unsafe { Efer::write(efer | EferFlags::NO_EXECUTE_ENABLE) };
            crate::debug!("arch: enabled EFER.NXE (the bootloader left it off)");
        }
    } else {
        crate::warn!("arch: the CPU has no NX bit; data pages stay executable");
    }
    let cr0 = Cr0::read();
    if !cr0.contains(Cr0Flags::WRITE_PROTECT) {
        // SAFETY: WP only makes ring-0 writes to read-only pages fault, which is what the
        // kernel wants; nothing relies on writing through read-only mappings.
        unsafe { Cr0::write(cr0 | Cr0Flags::WRITE_PROTECT) };
        crate::debug!("arch: enabled CR0.WP");
    }
}

/// Whether EFER.NXE and CR0.WP are set (tests check [`init_features`]).
pub fn nx_enabled() -> bool {
    Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE)
}

pub fn write_protect_enabled() -> bool {
    Cr0::read().contains(Cr0Flags::WRITE_PROTECT)
}
