//! The reference column of the benchmark: Linux 6.1 (Debian's `6.1.0-57-amd64`) measured under
//! the same QEMU setup as this kernel's bench boot (`-accel tcg -cpu max -smp 1 -icount
//! shift=0,align=off,sleep=off -seed 1 -rtc base=2026-01-01T00:00:00,clock=vm`,
//! `init_on_alloc=0`), from a module timing loops with `rdtsc`: guest instructions per
//! operation, keyed as this kernel's `bench:` lines are.
//!
//! Plain data, shared by the kernel (which prints it beside its own figures) and the host runner
//! (which puts it in the README's generated table): `boot/bench.rs` includes this file.

/// Where the figures come from, printed once above the tables.
pub const LINUX_SOURCE: &str = "Linux 6.1 (Debian 6.1.0-57-amd64) under the same QEMU -icount setup, \
init_on_alloc=0, rdtsc loops in a module";

/// `(key, guest instructions)`. `kmalloc`+`kfree` costs 244 for every size class 8..8192 (326 for
/// 64 B with Debian's default `init_on_alloc=1`, which zeroes).
pub const LINUX_6_1: &[(&str, u64)] = &[
    ("kmalloc.8.100.lifo", 244),
    ("kmalloc.16.100.lifo", 244),
    ("kmalloc.32.100.lifo", 244),
    ("kmalloc.64.100.lifo", 244),
    ("kmalloc.128.100.lifo", 244),
    ("kmalloc.256.100.lifo", 244),
    ("kmalloc.512.100.lifo", 244),
    ("kmalloc.1024.100.lifo", 244),
    ("kmalloc.2048.100.lifo", 244),
    ("kmalloc.4096.100.lifo", 244),
    ("kmalloc.8192.100.lifo", 244),
    ("kzalloc.64.100.lifo", 322),
    ("init_on_alloc.kmalloc.64.100.lifo", 326),
    ("kmalloc.64.10000.random", 546),
    ("kmalloc.mixed.10000.random", 591),
    ("pages.order0.pair", 704),
    ("pages.order3.pair", 888),
    ("pages.order10.pair", 33_662),
    ("vmalloc.3.pair", 4_781),
    ("vmalloc.256.per_page", 481),
    ("vmalloc.4096.per_page", 471),
];

/// The Linux figure for `key`, if one was measured.
pub fn linux_figure(key: &str) -> Option<u64> {
    LINUX_6_1.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
}
