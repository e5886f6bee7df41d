//! Fatal fault reporting: the text every exception handler prints, the "what is this address"
//! hook the memory layer registers, and the hook the test harness uses to survive a fault.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use bootloader_api::BootInfo;
use x86_64::VirtAddr;

/// Writes one line (or more) saying what `addr` is, e.g. "direct map of phys 0x1234000".
/// Runs inside exception handlers, possibly with allocator locks held by the faulting code:
/// an implementation must only `try_lock`, never block, and must not allocate.
pub type AddressDescriber = fn(VirtAddr, &mut dyn Write);

/// Called after a fatal report, before QEMU is told to fail. The test harness installs one that
/// abandons the running test and goes on with the next; it returns if no test is running.
pub type FatalHook = fn();

static DESCRIBER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static FATAL_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the memory layer's address describer (replacing the built-in [`describe_default`],
/// which it may call for addresses it does not know).
pub fn set_address_describer(describer: AddressDescriber) {
    DESCRIBER.store(describer as *mut (), Ordering::Release);
}

/// Replaces the describer (`None`: the built-in one) and returns the previous one; tests use it to
/// put things back.
pub fn swap_address_describer(describer: Option<AddressDescriber>) -> Option<AddressDescriber> {
    let new = describer.map_or(core::ptr::null_mut(), |d| d as *mut ());
    let old = DESCRIBER.swap(new, Ordering::AcqRel);
    // SAFETY: `DESCRIBER` only ever holds null or an `AddressDescriber`.
    (!old.is_null()).then(|| unsafe { core::mem::transmute::<*mut (), AddressDescriber>(old) })
}

pub fn set_fatal_hook(hook: Option<FatalHook>) {
    FATAL_HOOK.store(hook.map_or(core::ptr::null_mut(), |h| h as *mut ()), Ordering::Release);
}

/// Says what `addr` is, through the registered describer or the default one.
pub fn describe(addr: VirtAddr, w: &mut dyn Write) {
    let p = DESCRIBER.load(Ordering::Acquire);
    if p.is_null() {
        describe_default(addr, w);
    } else {
        // SAFETY: `DESCRIBER` only ever holds null or an `AddressDescriber` stored by
        // `set_address_describer`; fn pointers and data pointers have the same size here.
        let f: AddressDescriber = unsafe { core::mem::transmute::<*mut (), AddressDescriber>(p) };
        f(addr, w);
    }
}

/// Kernel regions known from the boot information, before the memory layer knows better.
struct Layout {
    image_start: AtomicU64,
    image_end: AtomicU64,
    stack_bottom: AtomicU64,
    stack_top: AtomicU64,
    direct_map: AtomicU64,
    direct_map_end: AtomicU64,
}

static LAYOUT: Layout = Layout {
    image_start: AtomicU64::new(0),
    image_end: AtomicU64::new(0),
    stack_bottom: AtomicU64::new(0),
    stack_top: AtomicU64::new(0),
    direct_map: AtomicU64::new(u64::MAX),
    direct_map_end: AtomicU64::new(0),
};

extern "C" {
    /// End of the loaded kernel image (all segments, `.bss` included); defined by the linker.
    static _end: u8;
}

/// Records where the bootloader put the kernel image, the boot stack and the direct map.
pub fn init_layout(boot_info: &BootInfo) {
    // The kernel is a static PIE linked at 0: its image starts at the load offset.
    let start = boot_info.kernel_image_offset;
    // Only the address of the linker symbol is taken, never its contents.
    let end = core::ptr::addr_of!(_end) as u64;
    LAYOUT.image_start.store(start, Ordering::Relaxed);
    LAYOUT.image_end.store(end, Ordering::Relaxed);
    LAYOUT.stack_bottom.store(boot_info.kernel_stack_bottom, Ordering::Relaxed);
    LAYOUT.stack_top.store(boot_info.kernel_stack_bottom + boot_info.kernel_stack_len, Ordering::Relaxed);
    if let Some(offset) = boot_info.physical_memory_offset.into_option() {
        let max_phys = boot_info.memory_regions.iter().map(|r| r.end).max().unwrap_or(0);
        LAYOUT.direct_map.store(offset, Ordering::Relaxed);
        LAYOUT.direct_map_end.store(offset.saturating_add(max_phys), Ordering::Relaxed);
    }
}

/// Virtual address of physical 0 in the bootloader's direct map (`u64::MAX` before `init_layout`).
pub fn direct_map_offset() -> u64 {
    LAYOUT.direct_map.load(Ordering::Relaxed)
}

/// `[start, end)` of the loaded kernel image.
pub fn kernel_image() -> (u64, u64) {
    (LAYOUT.image_start.load(Ordering::Relaxed), LAYOUT.image_end.load(Ordering::Relaxed))
}

/// `[bottom, top)` of the boot CPU's kernel stack (the bootloader leaves the page below unmapped).
pub fn boot_stack() -> (u64, u64) {
    (LAYOUT.stack_bottom.load(Ordering::Relaxed), LAYOUT.stack_top.load(Ordering::Relaxed))
}

fn is_canonical(addr: u64) -> bool {
    // Bits 63..47 must all equal bit 47 (4-level paging).
    let top = addr >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// The built-in describer: what can be said from the boot information alone. The memory layer's
/// describer may fall back to it.
pub fn describe_default(addr: VirtAddr, w: &mut dyn Write) {
    describe_raw_default(addr.as_u64(), w)
}

/// [`describe_default`] for any 64-bit value, including non-canonical ones (which a `VirtAddr`
/// cannot hold), e.g. a bad pointer found in a data structure.
pub fn describe_raw_default(a: u64, w: &mut dyn Write) {
    let (img_start, img_end) = kernel_image();
    let (stack_bottom, stack_top) = boot_stack();
    let (df_bottom, df_top) = super::gdt::double_fault_stack();
    let dm = LAYOUT.direct_map.load(Ordering::Relaxed);
    let dm_end = LAYOUT.direct_map_end.load(Ordering::Relaxed);
    let vmalloc = crate::mm::layout::VMALLOC_START..crate::mm::layout::VMALLOC_END;
    let _ = if a < 4096 {
        write!(
            w,
            "null page (a NULL pointer dereference{})",
            if a == 0 { "" } else { " plus a small offset" }
        )
    } else if !is_canonical(a) {
        write!(w, "non-canonical address (bits 63..47 differ; no page table can map it)")
    } else if a < 0x0000_8000_0000_0000 {
        write!(w, "user half of the address space (the kernel maps nothing there)")
    } else if stack_bottom != 0 && a < stack_bottom && a >= stack_bottom - 4096 {
        write!(
            w,
            "guard page below the boot kernel stack [{stack_bottom:#x}, {stack_top:#x}): kernel stack overflow"
        )
    } else if (stack_bottom..stack_top).contains(&a) {
        write!(
            w,
            "boot kernel stack [{stack_bottom:#x}, {stack_top:#x}), {} bytes below its top",
            stack_top - a
        )
    } else if (df_bottom..df_top).contains(&a) {
        write!(w, "double fault IST stack [{df_bottom:#x}, {df_top:#x})")
    } else if (img_start..img_end).contains(&a) {
        write!(w, "kernel image, offset {:#x} into the ELF", a - img_start)
    } else if (dm..dm_end).contains(&a) {
        write!(w, "direct map of phys {:#x}", a - dm)
    } else if vmalloc.contains(&a) {
        write!(w, "vmalloc range (no vmalloc area information registered)")
    } else {
        write!(w, "unknown kernel address")
    };
}

/// The serial console as a `fmt::Write` that works inside fault and panic handlers.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        super::serial::write_fmt_panicking(format_args!("{s}"));
        Ok(())
    }
}

/// Ends a fatal report: lets the test harness recover (it does not return then), otherwise
/// fails the QEMU session.
pub fn die() -> ! {
    let p = FATAL_HOOK.load(Ordering::Acquire);
    // The test harness runs on the boot CPU and can only abandon a test there: a fault on an
    // application processor ends the session after its report.
    if !p.is_null() && super::percpu::cpu_id() == 0 {
        // SAFETY: `FATAL_HOOK` only ever holds null or a `FatalHook` stored by `set_fatal_hook`.
        let hook: FatalHook = unsafe { core::mem::transmute::<*mut (), FatalHook>(p) };
        hook();
    }
    super::qemu::exit(super::qemu::ExitCode::Failure)
}

/// Decodes a page fault error code (Intel SDM Vol. 3A, 4.7) into words.
pub struct PfError(pub u64);

impl fmt::Display for PfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        let bit = |n: u32| e & (1 << n) != 0;
        f.write_str(if bit(0) { "protection violation on a present page" } else { "page not present" })?;
        f.write_str(if bit(4) {
            ", instruction fetch"
        } else if bit(1) {
            ", write"
        } else {
            ", read"
        })?;
        f.write_str(if bit(2) { ", user mode" } else { ", supervisor mode" })?;
        if bit(3) {
            f.write_str(", reserved bit set in a paging entry")?;
        }
        if bit(5) {
            f.write_str(", protection key violation")?;
        }
        if bit(6) {
            f.write_str(", shadow stack access")?;
        }
        if bit(15) {
            f.write_str(", SGX violation")?;
        }
        Ok(())
    }
}

/// Decodes a selector error code (#GP, #TS, #NP, #SS; Intel SDM Vol. 3A, 6.13).
pub struct SelectorError(pub u64);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        if e == 0 {
            return f
                .write_str("no selector involved (e.g. a non-canonical address or a privileged operation)");
        }
        let index = (e >> 3) & 0x1fff;
        if e & 2 != 0 {
            write!(f, "IDT vector {index} (no handler installed for it)")?;
        } else if e & 4 != 0 {
            write!(f, "LDT selector index {index}")?;
        } else {
            write!(f, "GDT selector index {index}")?;
        }
        if e & 1 != 0 {
            f.write_str(", during delivery of an external event")?;
        }
        Ok(())
    }
}
