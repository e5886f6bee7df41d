//! The console's command table and the commands that hold no memory themselves: `help`, `cat`,
//! `stress`, `sysctl`, `memmap`, `allocations`, `exit` (the allocation commands are the
//! session's, `session.rs`).

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::args::parse_u64;
use super::session::Session;
use crate::arch::serial;
use crate::arch::smp_call::CpuMask;
use crate::log::Console;
use crate::{kprint, kprintln};

/// What the loop does after a command.
pub enum Flow {
    Continue,
    Exit,
}

/// Most words a command line splits into.
const MAX_WORDS: usize = 8;

/// Runs one command line.
pub fn run(session: &mut Session, line: &str) -> Flow {
    let mut words = [""; MAX_WORDS];
    let mut n = 0;
    for w in line.split_ascii_whitespace() {
        if n == MAX_WORDS {
            kprintln!("{}: too many arguments", words[0]);
            return Flow::Continue;
        }
        words[n] = w;
        n += 1;
    }
    if n == 0 {
        return Flow::Continue;
    }
    let (cmd, a) = (words[0], &words[1..n]);
    match cmd {
        "help" => help(),
        "cat" => cat(a),
        "kmalloc" | "kzalloc" => session.kmalloc(cmd, a),
        "kfree" => session.kfree(a),
        "krealloc" => session.krealloc(a),
        "ksize" => session.ksize(a),
        "alloc_pages" => session.alloc_pages(a),
        "free_pages" => session.free_pages(a),
        "vmalloc" => session.vmalloc(a),
        "vfree" => session.vfree(a),
        "vmap" => session.vmap(a),
        "vunmap" => session.vunmap(a),
        "kmem_cache_create" => session.kmem_cache_create(a),
        "kmem_cache_alloc" => session.kmem_cache_alloc(a),
        "kmem_cache_free" => session.kmem_cache_free(a),
        "kmem_cache_destroy" => session.kmem_cache_destroy(a),
        "stress" => stress(session, a),
        "sysctl" => sysctl(a),
        "echo" => super::fault::echo(a),
        "failslab" => super::fault::shorthand("failslab", a),
        "fail_page_alloc" => super::fault::shorthand("fail_page_alloc", a),
        "memmap" => memmap(a),
        "allocations" if a.is_empty() => session.list(),
        "exit" if a.is_empty() => return Flow::Exit,
        _ => kprintln!("{cmd}: command not found (`help` lists the commands)"),
    }
    Flow::Continue
}

fn help() {
    kprint!(
        "\
Linux's names and the API's rules; sizes in bytes (K, M, G suffixes), numbers and addresses
decimal or 0x hex, GFP flags as GFP_KERNEL (the default), GFP_ATOMIC, GFP_DMA, __GFP_ZERO, ...
joined by |. Refusals print the API's one-line report.
  cat /proc/FILE                  FILE:"
    );
    for (name, _) in crate::mm::report::PROC_FILES {
        kprint!(" {name}");
    }
    kprintln!(
        "
  kmalloc SIZE [GFP]              kmalloc(SIZE, GFP): the address, ksize, the cache, phys, zone
  kzalloc SIZE [GFP]              zeroed kmalloc
  kfree ADDR                      kfree
  krealloc ADDR SIZE [GFP]        krealloc: the same block while it fits, else a moved one
  ksize ADDR                      the usable size of a kmalloc block
  alloc_pages ORDER [GFP]         2^ORDER contiguous pages; prints the direct-map address
  free_pages ADDR ORDER           free_pages of that address
  vmalloc SIZE                    virtually contiguous pages, a guard page after them
  vfree ADDR
  vmap [NPAGES]                   NPAGES (default 4) separate pages mapped contiguously
  vunmap ADDR                     unmaps a vmap area and frees its pages
  kmem_cache_create NAME SIZE [ALIGN]
  kmem_cache_alloc NAME [GFP]
  kmem_cache_free NAME ADDR
  kmem_cache_destroy NAME         refused while objects are allocated
  stress OPS [CPUS]               the soak workload: OPS random operations on each of CPUS CPUs
  sysctl vm.min_free_kbytes[=N]   read, or set and recompute every zone's watermarks
  failslab [ATTR=VALUE...|off]    fault injection for slab allocations: the attributes, or set
  fail_page_alloc [ATTR=VALUE...|off]  them (probability=5 times=-1 ignore-gfp-wait=N ...)
  echo VALUE > /sys/kernel/debug/failslab/ATTR    Linux's debugfs files (also fail_page_alloc/,
  cat /sys/kernel/debug/failslab/ATTR             and /sys/kernel/slab/CACHE/failslab)
  memmap [FILE.svg]               the page-state map; the runner draws it into FILE.svg
  allocations                     what the console holds
  help, exit                      exit lists what is left allocated, QEMU exits
keys: Backspace, Ctrl-U (erase the line), Up/Down (history), Ctrl-C (stop a command), Ctrl-D (exit)"
    );
}

fn cat(a: &[&str]) {
    if a.is_empty() {
        return kprintln!("usage: cat /proc/FILE... (or /sys/kernel/debug/failslab/ATTR ...)");
    }
    for path in a {
        if super::fault::cat(path) {
            continue;
        }
        let name = path.strip_prefix("/proc/").unwrap_or(path);
        match crate::mm::report::proc_file(name) {
            Some(write) => {
                let _ = write(&mut Console);
            }
            None => kprintln!("cat: {path}: No such file or directory"),
        }
    }
}

/// Largest `stress` operation count per CPU (a run of that size takes hours under TCG).
const MAX_STRESS_OPS: u64 = 1_000_000_000;

fn stress(session: &mut Session, a: &[&str]) {
    let (Some(ops), 1..=2) = (a.first(), a.len()) else {
        return kprintln!("usage: stress OPS [CPUS]");
    };
    let Some(ops) = parse_u64(ops).filter(|&o| (1..=MAX_STRESS_OPS).contains(&o)) else {
        return kprintln!("stress: `{ops}` is not an operation count (1 to {MAX_STRESS_OPS} per CPU)");
    };
    let online = CpuMask::online();
    let cpus = match a.get(1) {
        None => online.count(),
        Some(c) => match parse_u64(c).filter(|&c| (1..=online.count() as u64).contains(&c)) {
            Some(c) => c as usize,
            None => return kprintln!("stress: `{c}` is not a CPU count (1 to {} online)", online.count()),
        },
    };
    // The first `cpus` online CPUs, the console's own (CPU 0) among them.
    let mask = CpuMask(online.iter().take(cpus).fold(0, |m, c| m | 1 << c));
    kprintln!(
        "stress: {cpus} CPU{} x {ops} operations: kmalloc/kzalloc/krealloc/kfree, alloc_pages orders 0..4, \
         vmalloc/vfree, a kmem_cache; objects handed between CPUs (Ctrl-C stops it)",
        if cpus == 1 { "" } else { "s" }
    );
    static SHOWN: AtomicU64 = AtomicU64::new(u64::MAX);
    SHOWN.store(u64::MAX, Relaxed);
    let progress = |done: u64, total: u64| {
        let pct = done * 100 / total.max(1);
        if SHOWN.swap(pct, Relaxed) != pct {
            kprint!("\rstress: {pct:>3}% ({done} of {total} operations)");
        }
    };
    let stop = serial::ctrl_c_pending;
    let mut ctl = crate::mm::stress::Control::new(&stop, Some(&progress));
    let r = match crate::mm::stress::run(ops, mask, &mut ctl, None) {
        Ok(r) => r,
        Err(why) => return kprintln!("stress: cannot start: {why}"),
    };
    session.forget_freed();
    if r.stopped {
        // As a terminal's interrupt does: input typed before the Ctrl-C is dropped with it.
        serial::discard_through_ctrl_c();
        kprint!(" ^C");
    }
    kprintln!(
        "\nstress: {} of {} operations in {} ms{}; {} objects passed through the exchange (freed by whichever CPU took them); {} allocations refused; {} damaged, {} failed",
        r.ops_done,
        r.ops_per_cpu * r.cpus as u64,
        r.ms,
        if r.stopped { " (stopped by Ctrl-C)" } else { "" },
        r.handed,
        r.refused,
        r.corrupt,
        r.failed
    );
    if r.free_pages_same && r.caches_same && r.vmalloc_same {
        kprintln!("stress: free pages, slab objects and vmalloc areas are back to the starting figures");
    } else {
        kprintln!(
            "stress: NOT back to the starting figures: free pages {}, slab objects {}, vmalloc {}",
            if r.free_pages_same { "same" } else { "differ" },
            if r.caches_same { "same" } else { "differ" },
            if r.vmalloc_same { "same" } else { "differ" }
        );
    }
    if !r.clean() {
        session.failed = true;
    }
}

/// `sysctl KEY`, `sysctl KEY=VALUE` (or `-w KEY=VALUE`), with procps' messages.
fn sysctl(a: &[&str]) {
    let arg = match a {
        [arg] | ["-w", arg] => *arg,
        _ => return kprintln!("usage: sysctl vm.min_free_kbytes[=N]"),
    };
    let (key, value) = match arg.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (arg, None),
    };
    let node = crate::mm::node();
    if key != "vm.min_free_kbytes" {
        kprint!("sysctl: cannot stat /proc/sys/");
        for (i, part) in key.split('.').enumerate() {
            kprint!("{}{part}", if i == 0 { "" } else { "/" });
        }
        return kprintln!(": No such file or directory");
    }
    let Some(value) = value else {
        return kprintln!("vm.min_free_kbytes = {}", node.min_free_kbytes());
    };
    let before: [[u64; 3]; 3] =
        node.zones().each_ref().map(|z| [z.min_wmark_pages(), z.low_wmark_pages(), z.high_wmark_pages()]);
    let result =
        value.parse::<u64>().map_err(|_| ()).and_then(|kb| node.set_min_free_kbytes(kb).map_err(|_| ()));
    if result.is_err() {
        return kprintln!("sysctl: setting key \"vm.min_free_kbytes\": Invalid argument");
    }
    kprintln!("vm.min_free_kbytes = {}", node.min_free_kbytes());
    for (z, was) in node.zones().iter().zip(before) {
        if z.managed_pages() > 0 {
            kprintln!(
                "  zone {:<6}: watermarks min {} low {} high {} pages (were {} {} {}), totalreserve_pages {}",
                z.name(),
                z.min_wmark_pages(),
                z.low_wmark_pages(),
                z.high_wmark_pages(),
                was[0],
                was[1],
                was[2],
                node.totalreserve_pages()
            );
        }
    }
}

/// Whether the runner takes `name` as a file to write (it checks the same).
fn valid_svg_name(name: &str) -> bool {
    name.len() <= 64
        && name.ends_with(".svg")
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn memmap(a: &[&str]) {
    let name = match a {
        [] => "memmap.svg",
        [name] if valid_svg_name(name) => name,
        [name] => return kprintln!("memmap: `{name}`: a file name of A-Z a-z 0-9 - _ . ending in .svg"),
        _ => return kprintln!("usage: memmap [FILE.svg]"),
    };
    kprintln!("memmap: the page-state map of this moment; the runner draws it into {name}");
    crate::mm::report::print_memmap(name);
}
