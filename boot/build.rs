//! Hands the kernel binary (built by cargo as an artifact dependency) to the runner.

fn main() {
    let kernel = std::env::var_os("CARGO_BIN_FILE_KERNEL_kernel")
        .expect("cargo did not build the kernel artifact (is `bindeps` enabled in .cargo/config.toml?)");
    // Without this, cargo may keep a runner that embeds the path of a stale kernel.
    println!("cargo:rerun-if-changed={}", std::path::Path::new(&kernel).display());
    println!("cargo:rustc-env=KERNEL_BIN={}", std::path::Path::new(&kernel).display());
}
