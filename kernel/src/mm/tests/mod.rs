//! In-kernel tests of the memory subsystem (registered with `ktest!`, run by `cargo run -- --test`).

mod kmalloc;
mod kmalloc_irq;
mod page_alloc;
mod slab;
mod vmalloc;
