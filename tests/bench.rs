//! The benchmark gate: boots the benchmark as `cargo run -- --bench` does (release-built kernel,
//! 2 GiB, one CPU, `-icount`) and fails when any figure is more than 1% away from the committed
//! baseline `tests/bench-baseline.txt`, either way; and fails when the README's measured table
//! is not the one the baseline generates. `cargo run -- --bench --update-baseline` rewrites
//! both, in the commit that moves a figure.

use memkernel::bench::{self, Figures};
use memkernel::Status;

fn baseline() -> Figures {
    let path = bench::repo_root().join(bench::BASELINE_FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    bench::parse_figures(&text).unwrap_or_else(|e| panic!("{}: {e}", bench::BASELINE_FILE))
}

#[test]
fn bench_figures_match_the_baseline() {
    let opts = memkernel::BootOptions { echo: false, ..bench::bench_options() };
    let outcome = bench::boot_bench(&opts).unwrap_or_else(|e| panic!("could not boot the bench: {e}"));
    assert_eq!(outcome.status, Status::Success, "the bench boot failed; serial log:\n{}", outcome.serial);
    let now = bench::parse_figures(&outcome.serial).unwrap_or_else(|e| panic!("bench output: {e}"));
    let drift = bench::compare(&baseline(), &now, bench::TOLERANCE);
    assert!(
        drift.is_empty(),
        "{} of {} benchmark figures moved by more than 1% from {} (a regression fails; an improvement or a \
         new figure means the baseline must be rewritten in the same commit: `cargo run -- --bench --update-baseline`):\n{}",
        drift.len(),
        now.len(),
        bench::BASELINE_FILE,
        drift.iter().map(|d| format!("  {d}\n")).collect::<String>()
    );
}

#[test]
fn readme_table_is_generated_from_the_baseline() {
    let readme = std::fs::read_to_string(bench::repo_root().join("README.md")).expect("README.md");
    let table = bench::readme_table(&baseline()).unwrap_or_else(|e| panic!("{e}"));
    let spliced = bench::splice_readme(&readme, &table)
        .unwrap_or_else(|| panic!("README.md lacks the generated-table markers `{}`", bench::README_BEGIN));
    assert!(
        spliced == readme,
        "README.md's measured table is not the one {} generates; run `cargo run -- --bench --update-baseline`.\n\
         expected:\n{table}",
        bench::BASELINE_FILE
    );
}

/// The baseline carries every figure the gate is meant to hold: the whole workload grid for
/// kmalloc and each peer, the page pairs, vmalloc, init and the memory figures.
#[test]
fn baseline_covers_every_workload() {
    let b = baseline();
    let mut missing = Vec::new();
    let mut need = |k: String| {
        if !b.contains_key(&k) {
            missing.push(k);
        }
    };
    for live in [100, 10_000, 100_000] {
        for size in [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192] {
            for pattern in ["lifo", "fifo", "random"] {
                need(format!("kmalloc.{size}.{live}.{pattern}"));
                for peer in ["linked_list", "talc", "rlsf", "buddy_system"] {
                    need(format!("peer.{peer}.{size}.{live}.{pattern}"));
                }
            }
        }
    }
    for live in [10_000, 100_000] {
        need(format!("kmalloc.mixed.{live}.random"));
        need(format!("mem.kmalloc.mixed.{live}.pages_per_live_byte"));
        for peer in ["linked_list", "talc", "rlsf", "buddy_system"] {
            need(format!("peer.{peer}.mixed.{live}.random"));
            need(format!("mem.{peer}.mixed.{live}.pages_per_live_byte"));
        }
    }
    for order in [0, 3, 10] {
        need(format!("pages.order{order}.pair"));
        need(format!("peer.buddy_system.pages.order{order}.pair"));
    }
    for pages in [1, 3, 16, 256, 4096] {
        need(format!("vmalloc.{pages}.pair"));
        need(format!("vmalloc.{pages}.per_page"));
    }
    need("init.per_page".into());
    need("kzalloc.64.100.lifo".into());
    // Every Linux reference figure has its own figure beside it.
    for (k, _) in bench::LINUX_6_1 {
        need(k.to_string());
    }
    assert!(missing.is_empty(), "{} lacks {} figures: {missing:?}", bench::BASELINE_FILE, missing.len());
}
