//! Architecture glue: everything that touches x86_64 hardware directly lives below here, apart
//! from the allocator logic in the `mm` crate.

pub mod qemu;
pub mod serial;
