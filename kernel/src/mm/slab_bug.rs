//! `slab_debug`'s corruption reports in Linux's shape (`mm/slub.c`: `slab_bug`,
//! `check_bytes_and_report`, `print_trailer`, `slab_fix`):
//!
//! ```text
//! =============================================================================
//! BUG kmalloc-64 (Not tainted): Poison overwritten
//! -----------------------------------------------------------------------------
//!
//! 0xffff82003f7a9008-0xffff82003f7a9008 @offset=8. First byte 0x0 instead of 0x6b
//! Allocated in kernel/src/mm/tests/slab.rs:310
//! Freed in kernel/src/mm/tests/slab.rs:312
//! Object   0xffff82003f7a9000: 6b 6b 6b 6b 6b 6b 6b 6b 00 6b 6b 6b 6b 6b 6b 6b  kkkkkkkk.kkkkkkk
//! FIX kmalloc-64: Object at 0xffff82003f7a9000 isolated: never handed out again
//! ```
//!
//! Linux's `Allocated in`/`Freed in` name a symbol, age, CPU and PID; here the caller's source
//! location (`SLAB_STORE_USER`, `#[track_caller]`). The hex dump is the object's first 32 bytes.

use ::mm::slab::{Corruption, CorruptionKind};

/// Linux's title for each kind of damage.
fn title(kind: CorruptionKind) -> &'static str {
    match kind {
        CorruptionKind::Poison => "Poison overwritten",
        CorruptionKind::LeftRedzone => "Left Redzone overwritten",
        CorruptionKind::RightRedzone => "Right Redzone overwritten",
        CorruptionKind::KmallocTail => "kmalloc Redzone overwritten",
        CorruptionKind::FreePointer => "Freepointer corrupt",
        CorruptionKind::SlabCounters => "Wrong number of objects",
    }
}

/// Prints the report of `c`, ending with `FIX cache: fix`.
pub fn print_slab_bug(c: &Corruption, fix: &str) {
    kprintln!("=============================================================================");
    kprintln!("BUG {} (Not tainted): {}", c.cache, title(c.kind));
    kprintln!("-----------------------------------------------------------------------------");
    kprintln!();
    match c.kind {
        CorruptionKind::FreePointer => {
            kprintln!("Object {:#x} @offset={} fp={:#x}", c.object, c.offset, c.found);
        }
        CorruptionKind::SlabCounters => {
            kprintln!("Slab of object {:#x}: found {} but should be {}", c.object, c.found, c.expected);
        }
        _ => kprintln!(
            "{:#x}-{:#x} @offset={}. First byte {:#x} instead of {:#x}",
            c.bad_addr,
            c.bad_addr,
            c.offset,
            c.found,
            c.expected
        ),
    }
    if let Some(l) = c.alloc_at {
        kprintln!("Allocated in {}:{}", l.file(), l.line());
    }
    if let Some(l) = c.free_at {
        kprintln!("Freed in {}:{}", l.file(), l.line());
    }
    for line in 0..2u64 {
        let at = c.object as u64 + line * 16;
        let (Some(a), Some(b)) =
            (crate::arch::exceptions::read_nofault(at), crate::arch::exceptions::read_nofault(at + 8))
        else {
            break;
        };
        let bytes: [u8; 16] =
            core::array::from_fn(|i| if i < 8 { a.to_le_bytes()[i] } else { b.to_le_bytes()[i - 8] });
        let mut hex = [0u8; 48];
        let mut text = [b'.'; 16];
        for (i, &v) in bytes.iter().enumerate() {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            hex[i * 3] = DIGITS[(v >> 4) as usize];
            hex[i * 3 + 1] = DIGITS[(v & 15) as usize];
            hex[i * 3 + 2] = b' ';
            if v.is_ascii_graphic() || v == b' ' {
                text[i] = v;
            }
        }
        kprintln!(
            "Object   {at:#x}: {} {}",
            core::str::from_utf8(&hex[..47]).unwrap_or(""),
            core::str::from_utf8(&text).unwrap_or("")
        );
    }
    kprintln!("FIX {}: Object at {:#x} {fix}", c.cache, c.object);
}

/// The slab allocator's hook for damage found while allocating.
pub fn report_isolated(c: &Corruption) {
    print_slab_bug(c, "isolated: never handed out again");
}
