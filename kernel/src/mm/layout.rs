//! The kernel's virtual memory layout (x86_64, 4-level paging, 48-bit addresses).
//!
//! ```text
//! start                end (exclusive)      size     what
//! 0000_0000_0000_0000  0000_8000_0000_0000  128 TiB  user space (unused; nothing mapped)
//! ffff_8000_0000_0000  ffff_c800_0000_0000   72 TiB  bootloader's dynamic range: direct map of
//!                                                    all physical memory, kernel image, kernel
//!                                                    stack, boot info (placed by the bootloader)
//! ffff_c900_0000_0000  ffff_e900_0000_0000   32 TiB  vmalloc/vmap area (VMALLOC_START..END)
//! ffff_ea00_0000_0000  ffff_eb00_0000_0000    1 TiB  vmemmap: the page descriptors, indexed by
//!                                                    pfn (VMEMMAP_START; mm::mem_map)
//! ```
//!
//! As on Linux (`Documentation/arch/x86/x86_64/mm.rst`) the vmalloc range is 32 TiB starting at
//! `0xffffc90000000000`. The runner's bootloader config (`BOOTLOADER_CONFIG` in `main.rs`) limits
//! the bootloader's dynamic placements to the range below it, so nothing else is ever mapped there.
//! The vmemmap is Linux's too (`VMEMMAP_START` with 4-level paging, after a 1 TiB unused gap): 1 TiB
//! of 32-byte descriptors covers 128 TiB of physical address space; boot maps the part up to the
//! last section with RAM (`mm::mem_map::VmemmapPageTables`).

/// Lowest address the bootloader may place things at (`dynamic_range_start`).
pub const DYNAMIC_START: u64 = 0xffff_8000_0000_0000;
/// End of the bootloader's dynamic range (`dynamic_range_end` is the last page below this).
pub const DYNAMIC_END: u64 = 0xffff_c800_0000_0000;
/// Start of the vmalloc range (Linux: `VMALLOC_START`).
pub const VMALLOC_START: u64 = 0xffff_c900_0000_0000;
/// End (exclusive) of the vmalloc range: 32 TiB.
pub const VMALLOC_END: u64 = VMALLOC_START + (32 << 40);
/// Start of the page-descriptor array (Linux's `VMEMMAP_START`, 4-level paging):
/// the descriptor of pfn `n` is at `VMEMMAP_START + n * 32`.
pub const VMEMMAP_START: u64 = 0xffff_ea00_0000_0000;
/// Size of the vmemmap region: 1 TiB (two top-level entries).
pub const VMEMMAP_SIZE: u64 = 1 << 40;
