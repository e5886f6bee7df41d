//! The benchmark gate, host side: how the bench boots, the `bench: KEY VALUE` lines it prints,
//! the committed baseline (`tests/bench-baseline.txt`) they are compared with, and the README
//! table generated from that baseline.
//!
//! Under `-icount shift=0` the guest TSC counts guest instructions, so every figure repeats
//! exactly from run to run; the gate's 1% tolerance is slack, not noise. A figure that moved by
//! more than that in either direction fails the gate: a worse one is a regression, a better one
//! means the baseline (and so the README) no longer tells the truth and must be rewritten in the
//! same commit (`cargo run -- --bench --update-baseline`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::{BootOptions, Kernel};

#[path = "../kernel/src/bench/linux_reference.rs"]
mod linux_reference;
pub use linux_reference::{linux_figure, LINUX_6_1, LINUX_SOURCE};

/// How far a figure may move before the gate fails: 1%.
pub const TOLERANCE: f64 = 0.01;

/// The committed baseline, relative to the repository root.
pub const BASELINE_FILE: &str = "tests/bench-baseline.txt";

/// Markers around the generated table in README.md.
pub const README_BEGIN: &str = "<!-- bench-table: generated from tests/bench-baseline.txt by `cargo run -- --bench --update-baseline`; do not edit -->";
pub const README_END: &str = "<!-- bench-table end -->";

/// The repository root (this crate's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The boot every published figure comes from: the release-built kernel, 2 GiB (the largest
/// same-size cell, 100k objects of 8 KiB, needs 781 MiB live in each allocator in turn), 4 CPUs
/// (the single-CPU tables run on CPU 0 while the others wait in `hlt`; the `smpN.*` figures run
/// on 1, 2 and 4 of them at once), `-icount`, and a fixed RNG seed and guest clock so that
/// nothing from the host (RDRAND, the RTC) reaches the guest.
pub fn bench_options() -> BootOptions {
    BootOptions {
        memory: "2G".into(),
        smp: 4,
        cmdline: "bench".into(),
        icount: true,
        kernel: Kernel::Bench,
        timeout: Duration::from_secs(1800),
        qemu_args: ["-seed", "1", "-rtc", "base=2026-01-01T00:00:00,clock=vm"].map(String::from).to_vec(),
        ..BootOptions::default()
    }
}

/// The bench section booted in a second QEMU alongside the others (`kernel/src/bench/mod.rs`
/// names the sections): the mixed-size row at 100k live objects, where first fit makes it about
/// as long as all the rest. Each boot runs on one host thread under `-icount`, so two of them
/// halve the bench's wall time on two cores, and its figures stay exact: a section's figures
/// depend on its own boot only.
pub const SIDE_SECTION: &str = "mixed100k";

/// Boots the bench as `opts` says (from [`bench_options`], maybe changed), as two QEMUs at once:
/// `bench_skip=SIDE_SECTION`, echoed as `opts.echo` says, and `bench_only=SIDE_SECTION`, whose
/// log follows the first one's. A command line that picks sections itself (`bench_only=` or
/// `bench_skip=`) is one boot. The outcome is the first failure, or success with both logs.
pub fn boot_bench(opts: &BootOptions) -> Result<crate::Outcome, crate::RunnerError> {
    let picks = opts
        .cmdline
        .split_ascii_whitespace()
        .any(|w| w.starts_with("bench_only=") || w.starts_with("bench_skip="));
    if picks {
        return crate::boot(opts);
    }
    let mut side = opts.clone();
    side.cmdline = format!("{} bench_only={SIDE_SECTION}", opts.cmdline);
    side.echo = false;
    side.input = crate::Input::None;
    side.memmap_dir = None;
    let mut main = opts.clone();
    main.cmdline = format!("{} bench_skip={SIDE_SECTION}", opts.cmdline);
    let side_boot = std::thread::spawn(move || crate::boot(&side));
    let main_outcome = crate::boot(&main);
    let side_outcome = side_boot.join().unwrap_or_else(|_| {
        Err(crate::RunnerError::Io(
            "the second bench boot".into(),
            std::io::Error::other("its thread panicked"),
        ))
    });
    let (main_outcome, side_outcome) = (main_outcome?, side_outcome?);
    if opts.echo {
        println!("runner: the second bench boot (`bench_only={SIDE_SECTION}`), run alongside the first:");
        print!("{}", side_outcome.serial);
    }
    let status =
        if main_outcome.status != crate::Status::Success { main_outcome.status } else { side_outcome.status };
    Ok(crate::Outcome { status, serial: format!("{}\n{}", main_outcome.serial, side_outcome.serial) })
}

/// A figure: instructions (integers) or a fraction (`mem.*.pages_per_live_byte`).
pub type Figures = BTreeMap<String, f64>;

/// The `bench: KEY VALUE` lines of a serial log (or of the baseline file; `#` starts a comment).
/// Other lines are ignored; a malformed `bench:` line or a key given twice is an error.
pub fn parse_figures(text: &str) -> Result<Figures, String> {
    let mut out = Figures::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("bench: ") else { continue };
        let mut words = rest.split_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            // The bench's own prose lines start with `bench: ` too and have more words.
            continue;
        };
        let Ok(v) = value.parse::<f64>() else { continue };
        if !key.contains('.') {
            return Err(format!("line {}: `{line}`: a key has the form a.b.c", n + 1));
        }
        if out.insert(key.to_string(), v).is_some() {
            return Err(format!("line {}: key `{key}` given twice", n + 1));
        }
    }
    Ok(out)
}

/// One figure that is not what the baseline says.
#[derive(Clone, Debug, PartialEq)]
pub enum Drift {
    /// Worse (larger) than the baseline by more than the tolerance.
    Regressed { key: String, baseline: f64, now: f64 },
    /// Better (smaller) than the baseline by more than the tolerance: the baseline is stale.
    Improved { key: String, baseline: f64, now: f64 },
    /// In the baseline but not printed any more.
    Missing { key: String, baseline: f64 },
    /// Printed but not in the baseline.
    New { key: String, now: f64 },
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let change = |b: f64, n: f64| if b == 0.0 { f64::INFINITY } else { (n - b) / b * 100.0 };
        match self {
            Drift::Regressed { key, baseline, now } => write!(
                f,
                "REGRESSED  {key:<48} baseline {baseline:>12}  now {now:>12}  ({:+.2}%)",
                change(*baseline, *now)
            ),
            Drift::Improved { key, baseline, now } => write!(
                f,
                "IMPROVED   {key:<48} baseline {baseline:>12}  now {now:>12}  ({:+.2}%): update the baseline",
                change(*baseline, *now)
            ),
            Drift::Missing { key, baseline } => {
                write!(f, "MISSING    {key:<48} baseline {baseline:>12}  not printed by the bench any more")
            }
            Drift::New { key, now } => write!(f, "NEW        {key:<48} now {now:>12}  not in the baseline"),
        }
    }
}

/// Every figure of `now` against `baseline`; empty when the gate passes. Every figure is a cost
/// (instructions, pages): larger is worse.
pub fn compare(baseline: &Figures, now: &Figures, tolerance: f64) -> Vec<Drift> {
    let mut out = Vec::new();
    for (key, &b) in baseline {
        match now.get(key) {
            None => out.push(Drift::Missing { key: key.clone(), baseline: b }),
            Some(&n) => {
                // Small integer figures (a few instructions) move by whole instructions: allow
                // at least a half-instruction step as well as the relative tolerance.
                let slack = (b.abs() * tolerance).max(if b.fract() == 0.0 { 0.5 } else { 0.0 });
                if n > b + slack {
                    out.push(Drift::Regressed { key: key.clone(), baseline: b, now: n });
                } else if n < b - slack {
                    out.push(Drift::Improved { key: key.clone(), baseline: b, now: n });
                }
            }
        }
    }
    for (key, &n) in now {
        if !baseline.contains_key(key) {
            out.push(Drift::New { key: key.clone(), now: n });
        }
    }
    out
}

/// The baseline file's text for a bench log: a header, then its `bench:` lines in key order.
pub fn baseline_text(figures: &Figures) -> String {
    let mut s = String::new();
    s.push_str(
        "# Benchmark baseline: every `bench: KEY VALUE` line of `cargo run -- --bench` (the release-built\n",
    );
    s.push_str("# kernel, 2 GiB, 4 CPUs, -icount shift=0: guest instructions, exact and repeatable).\n");
    s.push_str("# `cargo test` (tests/bench.rs) fails when a figure moves by more than 1% either way.\n");
    s.push_str(
        "# Rewrite with `cargo run -- --bench --update-baseline`, in the commit that moves a figure.\n",
    );
    for (key, v) in figures {
        let _ = writeln!(s, "bench: {key} {}", fmt_value(*v));
    }
    s
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.9}")
    }
}

/// `1,287`
fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Bytes held per live byte (`pages_per_live_byte * 4096`), as `1.31`.
fn per_byte(v: f64) -> String {
    format!("{:.2}", v * 4096.0)
}

/// The README's measured table (between [`README_BEGIN`] and [`README_END`]), generated from the
/// baseline so that it can only show figures HEAD produces.
pub fn readme_table(b: &Figures) -> Result<String, String> {
    let get = |k: &str| b.get(k).copied().ok_or_else(|| format!("the baseline lacks `{k}`"));
    let linux = |k: &str| linux_figure(k).map_or("-".to_string(), |v| thousands(v as f64));
    let mut rows: Vec<[String; 3]> = Vec::new();
    let mut row = |what: &str, key: &str, goal: &str| -> Result<(), String> {
        rows.push([format!("{what} | {}", thousands(get(key)?)), linux(key), goal.to_string()]);
        Ok(())
    };
    row("page descriptors + buddy init, per page", "init.per_page", "< 40")?;
    row("`alloc_pages` + `__free_pages`, order 0", "pages.order0.pair", "<= 80")?;
    row("order 3 pair", "pages.order3.pair", "<= 150")?;
    row("order 10 pair", "pages.order10.pair", "")?;
    row("`kmalloc(64)` + `kfree`, 100 live, LIFO", "kmalloc.64.100.lifo", "<= 50")?;
    row("`kmalloc(8)` + `kfree`, 100 live, LIFO", "kmalloc.8.100.lifo", "<= 50")?;
    row("`kzalloc(64)` + `kfree`, 100 live, LIFO", "kzalloc.64.100.lifo", "")?;
    row("same-size 64 B, 10k live, random", "kmalloc.64.10000.random", "<= 120")?;
    row("mixed 8..2048 B, 10k live, random", "kmalloc.mixed.10000.random", "<= 150")?;
    row("mixed 8..2048 B, 100k live, random", "kmalloc.mixed.100000.random", "")?;
    row("`vmalloc(3 pages)` + touch + `vfree`", "vmalloc.3.pair", "<= 2,000")?;
    row("vmalloc 256 pages, per page", "vmalloc.256.per_page", "<= 250")?;
    row("vmalloc 4096 pages, per page", "vmalloc.4096.per_page", "<= 250")?;

    // Derived rows: the range over the 100-live grid, and kmalloc against the best peer.
    let sizes = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];
    let patterns = ["lifo", "fifo", "random"];
    let mut grid = Vec::new();
    for s in sizes {
        for p in patterns {
            grid.push(get(&format!("kmalloc.{s}.100.{p}"))?);
        }
    }
    let (lo, hi) = grid.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let mut ratios = Vec::new();
    for live in [100, 10_000, 100_000] {
        for s in sizes {
            for p in patterns {
                let k = get(&format!("kmalloc.{s}.{live}.{p}"))?;
                let best = ["linked_list", "talc", "rlsf", "buddy_system"]
                    .iter()
                    .filter_map(|n| b.get(&format!("peer.{n}.{s}.{live}.{p}")).copied())
                    .fold(f64::MAX, f64::min);
                if best < f64::MAX {
                    ratios.push(best / k.max(1.0));
                }
            }
        }
    }
    let (rlo, rhi) = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let beaten = ratios.iter().filter(|&&r| r >= 1.0).count();

    let mut s = String::new();
    s.push_str(README_BEGIN);
    s.push('\n');
    s.push_str(
        "| what (guest instructions per operation) | measured | Linux 6.1 | goal |\n|---|---|---|---|\n",
    );
    for [a, l, g] in &rows {
        let _ = writeln!(s, "| {a} | {l} | {g} |");
    }
    let _ = writeln!(
        s,
        "| every size 8..8192, every pattern, 100 live | {}-{} | 244-246 | <= 60 |",
        thousands(lo),
        thousands(hi)
    );
    let _ = writeln!(
        s,
        "| kmalloc vs the best peer heap, every same-size cell (peer / kmalloc) | {rlo:.2}x-{rhi:.2}x ({beaten} of {} cells >= 1x) | - | >= 1x |",
        ratios.len()
    );
    for live in [10_000, 100_000] {
        let k = get(&format!("mem.kmalloc.mixed.{live}.pages_per_live_byte"))?;
        let mut peers = String::new();
        for n in ["linked_list", "talc", "rlsf", "buddy_system"] {
            if let Some(v) = b.get(&format!("mem.{n}.mixed.{live}.pages_per_live_byte")) {
                let _ = write!(peers, "{}{n} {}", if peers.is_empty() { "" } else { ", " }, per_byte(*v));
            }
        }
        let _ = writeln!(
            s,
            "| memory, mixed {}k live: bytes held per live byte (kmalloc; peers) | {} ({peers}) | - | |",
            live / 1000,
            per_byte(k)
        );
    }
    // The SMP figures (present when the bench boots more than one CPU, as the default does).
    for (what, key) in [
        ("`kmalloc(64)` + `kfree`, 100 live, LIFO", "kmalloc.64.100.lifo"),
        ("order-0 page pair", "pages.order0.pair"),
    ] {
        let (Some(one), Some(four)) = (b.get(&format!("smp1.{key}")), b.get(&format!("smp4.{key}"))) else {
            continue;
        };
        let locked = b.get(&format!("smp4.{key}.shared_lock_pct")).copied().unwrap_or(0.0);
        let _ = writeln!(
            s,
            "| {what}, 1 / 4 CPUs running the loop at once (per pair on each CPU; ops taking a shared lock at 4) | {} / {} ({}%) | - | 4 within 10% of 1 |",
            thousands(*one),
            thousands(*four),
            locked
        );
    }
    let _ = writeln!(s, "\nLinux column: {LINUX_SOURCE}.");
    s.push_str(README_END);
    Ok(s)
}

/// README.md with its generated table replaced by `table`; `None` if the markers are missing.
pub fn splice_readme(readme: &str, table: &str) -> Option<String> {
    let start = readme.find(README_BEGIN)?;
    let end = readme[start..].find(README_END)? + start + README_END.len();
    Some(format!("{}{}{}", &readme[..start], table, &readme[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs(pairs: &[(&str, f64)]) -> Figures {
        pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn parses_bench_lines_and_ignores_prose() {
        let log =
            "bench: guest TSC under -icount: 1.000 ticks per instruction\nbench: kmalloc.64.100.lifo 1287\n\
                   [INFO ] x\nbench: mem.talc.mixed.10000.pages_per_live_byte 0.000312500\n";
        let f = parse_figures(log).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f["kmalloc.64.100.lifo"], 1287.0);
        assert_eq!(f["mem.talc.mixed.10000.pages_per_live_byte"], 0.0003125);
        assert!(parse_figures("bench: a.b 1\nbench: a.b 2\n").is_err(), "a key twice is an error");
    }

    #[test]
    fn a_two_percent_regression_fails_and_half_a_percent_passes() {
        let base =
            figs(&[("kmalloc.64.100.lifo", 1000.0), ("mem.x.mixed.10000.pages_per_live_byte", 0.0003)]);
        assert!(compare(
            &base,
            &figs(&[("kmalloc.64.100.lifo", 1005.0), ("mem.x.mixed.10000.pages_per_live_byte", 0.0003)]),
            TOLERANCE
        )
        .is_empty());
        let d = compare(
            &base,
            &figs(&[("kmalloc.64.100.lifo", 1020.0), ("mem.x.mixed.10000.pages_per_live_byte", 0.000306)]),
            TOLERANCE,
        );
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(matches!(&d[0], Drift::Regressed { key, .. } if key == "kmalloc.64.100.lifo"));
        assert!(matches!(&d[1], Drift::Regressed { .. }));
        assert!(d[0].to_string().contains("+2.00%"), "{}", d[0]);
    }

    #[test]
    fn improvements_missing_and_new_keys_fail_too() {
        let base = figs(&[("a.b", 1000.0), ("c.d", 10.0)]);
        let d = compare(&base, &figs(&[("a.b", 900.0), ("e.f", 5.0)]), TOLERANCE);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(matches!(d[0], Drift::Improved { .. }));
        assert!(matches!(d[1], Drift::Missing { .. }));
        assert!(matches!(d[2], Drift::New { .. }));
    }

    #[test]
    fn small_integer_figures_get_half_an_instruction() {
        let base = figs(&[("part.in_interrupt", 6.0)]);
        assert!(compare(&base, &figs(&[("part.in_interrupt", 6.0)]), TOLERANCE).is_empty());
        assert_eq!(compare(&base, &figs(&[("part.in_interrupt", 7.0)]), TOLERANCE).len(), 1);
    }

    #[test]
    fn baseline_text_round_trips() {
        let f = figs(&[("a.b", 12.0), ("m.x.pages_per_live_byte", 0.000312345)]);
        assert_eq!(parse_figures(&baseline_text(&f)).unwrap(), f);
    }

    #[test]
    fn splice_replaces_only_the_marked_table() {
        let readme = format!("head\n{README_BEGIN}\nold\n{README_END}\ntail\n");
        let new = splice_readme(&readme, &format!("{README_BEGIN}\nnew\n{README_END}")).unwrap();
        assert_eq!(new, format!("head\n{README_BEGIN}\nnew\n{README_END}\ntail\n"));
        assert!(splice_readme("no markers", "x").is_none());
    }
}
