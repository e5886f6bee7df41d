//! The kernel side of memory management: wires the allocator logic of the `mm` crate to real
//! memory (the bootloader's direct map) and real page tables.

pub mod layout;
