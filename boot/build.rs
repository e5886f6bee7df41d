//! Hands the runner its two kernels:
//!
//! - `KERNEL_BIN`: the kernel as the artifact dependency builds it, in the profile of this
//!   build (for `cargo test`/`cargo run`: optimised, debug assertions and overflow checks on).
//!   The demo, the in-kernel tests and the fault scenarios boot it.
//! - `KERNEL_BENCH_BIN`: the same kernel built with the release profile (no debug assertions,
//!   no overflow checks): the code as shipped, which the benchmark measures. Cargo has no way to
//!   build one artifact dependency in two profiles, so this script runs a nested
//!   `cargo build --release -p kernel` into its own target directory (`target/bench-kernel`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let kernel = std::env::var_os("CARGO_BIN_FILE_KERNEL_kernel")
        .expect("cargo did not build the kernel artifact (is `bindeps` enabled in .cargo/config.toml?)");
    // Without this, cargo may keep a runner that embeds the path of a stale kernel.
    println!("cargo:rerun-if-changed={}", Path::new(&kernel).display());
    println!("cargo:rustc-env=KERNEL_BIN={}", Path::new(&kernel).display());

    let bench = build_bench_kernel();
    println!("cargo:rustc-env=KERNEL_BENCH_BIN={}", bench.display());
}

/// Builds the release kernel; returns the ELF's path.
fn build_bench_kernel() -> PathBuf {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    // The sources the kernel is built from: a change anywhere in them rebuilds it (cargo scans a
    // directory recursively for modified files).
    for input in ["kernel", "mm", "Cargo.toml", "Cargo.lock", "rust-toolchain.toml", ".cargo"] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // target/<profile>/build/memkernel-HASH/out -> target
    let target_dir = out
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.clone())
        .join("bench-kernel");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "kernel", "--bin", "kernel"])
        .args(["--target", "x86_64-unknown-none", "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings for this crate and profile must not leak into the nested one
    // (its rustc wrapper, flags, and the variables cargo sets for build scripts); the jobserver
    // (CARGO_MAKEFLAGS) stays so both builds share the same job slots.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer = key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_FILE_")
            || key.starts_with("DEP_")
            || matches!(
                key,
                "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTFLAGS"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC_LINKER"
                    | "CARGO_CRATE_NAME"
            );
        if outer {
            cmd.env_remove(key);
        }
    }
    // The published figures must not depend on where the repository or cargo's home is: the
    // bootloader loads the whole ELF, so its size moves the physical memory layout and with it
    // which pages the loops get (a checkout path 5 bytes longer moved page-pair figures by 4%).
    // Debug info (absolute paths) is stripped, and the paths in panic locations of registry
    // crates are remapped.
    cmd.env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let cargo_home = std::env::var("CARGO_HOME")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.cargo")))
        .unwrap_or_default();
    let mut flags = format!("--remap-path-prefix={}=.", root.display());
    if !cargo_home.is_empty() {
        flags.push_str(&format!("\x1f--remap-path-prefix={cargo_home}=/cargo"));
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags);
    let output = cmd.output().expect("running cargo for the bench kernel");
    if !output.status.success() {
        panic!("building the release (bench) kernel failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    target_dir.join("x86_64-unknown-none").join("release").join("kernel")
}
