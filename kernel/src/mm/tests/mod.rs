//! In-kernel tests of the memory subsystem (registered with `ktest!`, run by `cargo run -- --test`).

mod page_alloc;
mod vmalloc;
