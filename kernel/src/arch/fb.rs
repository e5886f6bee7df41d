//! The boot framebuffer (BIOS VESA or UEFI GOP, set up by the bootloader): the second real
//! `ioremap` user after the xAPIC. The bootloader maps it somewhere in its dynamic range; once
//! vmalloc is up, the kernel finds its physical address in the live page tables and maps it
//! write-combining with `ioremap_wc`, as 6.12's `efifb`/`simplefb` drivers do
//! (drivers/video/fbdev/efifb.c `efifb_probe`: `ioremap_wc(efifb_fix.smem_start, ...)`), then
//! clears it through that mapping: from here on the display is the kernel's.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use bootloader_api::BootInfo;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{PageTable, PageTableFlags as F};
use x86_64::PhysAddr;

/// The bootloader's mapping of the framebuffer and its length in bytes (0: none).
static BOOT_VIRT: AtomicU64 = AtomicU64::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
/// The physical start and the `ioremap_wc` mapping (0 until [`ioremap_framebuffer`]).
static PHYS: AtomicU64 = AtomicU64::new(0);
static MAPPED: AtomicU64 = AtomicU64::new(0);

/// Records the framebuffer the bootloader reports, if any.
pub fn init(boot_info: &BootInfo) {
    if let Some(fb) = boot_info.framebuffer.as_ref() {
        BOOT_VIRT.store(fb.buffer().as_ptr() as u64, Relaxed);
        LEN.store(fb.info().byte_len, Relaxed);
    }
}

/// The physical address `va` translates to in the live page tables (4 KiB, 2 MiB and 1 GiB
/// leaves), or `None` if it is not mapped.
fn translate(va: u64) -> Option<u64> {
    let (pml4, _) = Cr3::read();
    let mut table_phys = pml4.start_address().as_u64();
    for level in (1..=4u32).rev() {
        let shift = 12 + 9 * (level - 1);
        let table = crate::mm::page_alloc::phys_to_virt(PhysAddr::new(table_phys)).as_ptr::<PageTable>();
        // SAFETY: `table` is a live page table of CR3's hierarchy, read through the direct map;
        // only read, and the bootloader's tables for its mappings are never freed.
        let entry = unsafe { &(&*table)[((va >> shift) & 511) as usize] };
        let flags = entry.flags();
        if !flags.contains(F::PRESENT) {
            return None;
        }
        if level == 1 || (level <= 3 && flags.contains(F::HUGE_PAGE)) {
            return Some(entry.addr().as_u64() + (va & ((1 << shift) - 1)));
        }
        table_phys = entry.addr().as_u64();
    }
    None
}

/// Maps the framebuffer with `ioremap_wc` and clears it through the new mapping. Called once,
/// after vmalloc is up. Without a framebuffer it does nothing; a framebuffer that is not
/// physically contiguous, or an ioremap failure, keeps the bootloader's mapping with a warning.
pub fn ioremap_framebuffer() {
    let (virt, len) = (BOOT_VIRT.load(Relaxed), LEN.load(Relaxed));
    if virt == 0 || len == 0 {
        return;
    }
    let (Some(phys), Some(last)) = (translate(virt), translate(virt + len as u64 - 1)) else {
        crate::warn!("fb: the framebuffer at {virt:#x} is not mapped; not ioremapped");
        return;
    };
    if last != phys + len as u64 - 1 {
        crate::warn!("fb: the framebuffer at {virt:#x} is not physically contiguous; not ioremapped");
        return;
    }
    match crate::mm::vmalloc::ioremap_wc(phys, len) {
        Ok(p) => {
            // SAFETY: `p` maps the `len` bytes of the framebuffer (MMIO, write-combining), which
            // nothing else writes now: the bootloader is done and the kernel draws nothing else.
            unsafe { core::ptr::write_bytes(p.as_ptr(), 0, len) };
            PHYS.store(phys, Relaxed);
            MAPPED.store(p.as_ptr() as u64, Relaxed);
            crate::info!("fb: {len} B framebuffer at {phys:#x} ioremap_wc'd at {:p}, cleared", p.as_ptr());
        }
        Err(e) => crate::warn!("fb: ioremap_wc of the framebuffer failed ({e}); not ioremapped"),
    }
}

/// The framebuffer's `ioremap_wc` mapping, physical address and length, once mapped.
pub fn framebuffer() -> Option<(*mut u8, u64, usize)> {
    let p = MAPPED.load(Relaxed);
    (p != 0).then(|| (p as *mut u8, PHYS.load(Relaxed), LEN.load(Relaxed)))
}
