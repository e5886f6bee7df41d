//! The console's fault-injection commands, with Linux's debugfs paths:
//! `echo VALUE > /sys/kernel/debug/{failslab,fail_page_alloc}/ATTR`, `cat` of the same files,
//! `echo 1 > /sys/kernel/slab/CACHE/failslab`; and a shorthand, `failslab ATTR=VALUE...`,
//! `failslab off`, `failslab` alone listing every attribute and the failures injected.

use crate::kprintln;
use crate::log::Console;
use crate::mm::fault_inject::{self, FAULT_NAMES};

const DEBUGFS: &str = "/sys/kernel/debug/";
const SYS_SLAB: &str = "/sys/kernel/slab/";

/// `cat` of a debugfs attribute file; `false` if `path` is not one of ours (the caller then
/// tries `/proc`).
pub fn cat(path: &str) -> bool {
    if let Some(rest) = path.strip_prefix(DEBUGFS) {
        match rest.trim_end_matches('/').split_once('/') {
            Some((which, attr)) if FAULT_NAMES.contains(&which) => {
                if fault_inject::get(which, attr, &mut Console).is_err() {
                    kprintln!("cat: {path}: No such file or directory");
                }
            }
            None if FAULT_NAMES.contains(&rest.trim_end_matches('/')) => {
                kprintln!("cat: {path}: Is a directory");
            }
            _ => kprintln!("cat: {path}: No such file or directory"),
        }
        return true;
    }
    if let Some(rest) = path.strip_prefix(SYS_SLAB) {
        match rest.split_once('/') {
            Some((cache, "failslab")) => match find_cache(cache) {
                Some(mark) => kprintln!("{}", u8::from(mark)),
                None => kprintln!("cat: {path}: No such file or directory"),
            },
            _ => kprintln!("cat: {path}: No such file or directory"),
        }
        return true;
    }
    false
}

fn find_cache(name: &str) -> Option<bool> {
    let mut mark = None;
    crate::mm::slab::slab().for_each_cache(|c| {
        if c.name() == name {
            mark = Some(c.failslab_mark());
        }
    });
    mark
}

/// `echo VALUE > FILE`.
pub fn echo(a: &[&str]) {
    let [value, ">", path] = a else {
        return kprintln!("usage: echo VALUE > /sys/kernel/debug/failslab/ATTR (or fail_page_alloc/ATTR, or /sys/kernel/slab/CACHE/failslab)");
    };
    if let Some((which, attr)) = path.strip_prefix(DEBUGFS).and_then(|r| r.split_once('/')) {
        match fault_inject::set(which, attr, value) {
            Ok(()) => {}
            Err(fault_inject::FaultError::NoSuchFault)
            | Err(fault_inject::FaultError::Config(::mm::fault_inject::FaultConfigError::NoSuchAttribute)) => {
                kprintln!("echo: {path}: No such file or directory")
            }
            Err(e) => kprintln!("echo: write error: Invalid argument ({e})"),
        }
        return;
    }
    if let Some((cache, "failslab")) = path.strip_prefix(SYS_SLAB).and_then(|r| r.split_once('/')) {
        let Some(on) = ::mm::auto_init::parse_bool(value) else {
            return kprintln!("echo: write error: Invalid argument (0 or 1)");
        };
        let mut found = false;
        crate::mm::slab::slab().for_each_cache(|c| {
            if c.name() == cache {
                c.set_failslab_mark(on);
                found = true;
            }
        });
        if !found {
            kprintln!("echo: {path}: No such file or directory");
        }
        return;
    }
    kprintln!("echo: {path}: No such file or directory (the console writes /sys/kernel/debug/failslab/*, fail_page_alloc/*, /sys/kernel/slab/CACHE/failslab)");
}

/// `failslab` / `fail_page_alloc` [`off` | `ATTR=VALUE`...].
pub fn shorthand(which: &'static str, a: &[&str]) {
    match a {
        [] => {}
        ["off"] => {
            let _ = fault_inject::set(which, "probability", "0");
        }
        _ => {
            for arg in a {
                let Some((attr, value)) = arg.split_once('=') else {
                    return kprintln!("{which}: `{arg}` is not ATTR=VALUE (or `off`)");
                };
                if let Err(e) = fault_inject::set(which, attr, value) {
                    return kprintln!("{which}: {arg}: {e}");
                }
            }
        }
    }
    let (slab, pages) = fault_inject::injected();
    kprintln!(
        "{which}: {} ({} failures injected so far)",
        if fault_inject::summary(which).is_some() { "on" } else { "off (probability 0)" },
        if which == "failslab" { slab } else { pages }
    );
    for attr in fault_inject::attr_names(which) {
        crate::kprint!("  {attr:<20}");
        let _ = fault_inject::get(which, attr, &mut Console);
    }
}
