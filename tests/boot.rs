//! Boots the demo kernel at several memory sizes and firmware types and checks that the `/proc`
//! blocks it prints are present, well-formed and consistent with each other and with the RAM
//! QEMU was given.

mod common;

use common::{boot_with, expect_status};
use memkernel::{parse_memory, procfs, Status};

/// `kernel/src/mm/layout.rs`.
const VMALLOC_START: u64 = 0xffff_c900_0000_0000;
const VMALLOC_END: u64 = VMALLOC_START + (32 << 40);
const PAGE_KB: u64 = 4;

fn block<'a>(serial: &'a str, name: &str) -> &'a str {
    procfs::block(serial, name)
        .unwrap_or_else(|| panic!("no `$ cat /proc/{name}` block in the log:\n{serial}"))
}

/// Checks every `/proc` block of a demo boot with `memory` RAM; returns the zone names.
fn check_proc(serial: &str, memory: &str) -> Vec<String> {
    let ram_kb = parse_memory(memory).expect("valid size") / 1024;
    let fail = |msg: String| -> ! { panic!("{memory}: {msg}\nserial log:\n{serial}") };

    let buddy = procfs::parse_buddyinfo(block(serial, "buddyinfo")).unwrap_or_else(|e| fail(e));
    let mem = procfs::parse_meminfo(block(serial, "meminfo")).unwrap_or_else(|e| fail(e));
    let zoneinfo = procfs::parse_zoneinfo(block(serial, "zoneinfo")).unwrap_or_else(|e| fail(e));
    let slabs = procfs::parse_slabinfo(block(serial, "slabinfo")).unwrap_or_else(|e| fail(e));
    let areas = procfs::parse_vmallocinfo(block(serial, "vmallocinfo")).unwrap_or_else(|e| fail(e));

    let (total, free) = (mem["MemTotal"], mem["MemFree"]);
    if total > ram_kb || total < ram_kb / 2 {
        fail(format!("MemTotal {total} kB is implausible for {ram_kb} kB of RAM"));
    }
    if free > total || free == 0 {
        fail(format!("MemFree {free} kB outside (0, MemTotal {total} kB]"));
    }
    let buddy_free_kb: u64 = buddy.iter().map(|z| z.free_pages()).sum::<u64>() * PAGE_KB;
    if buddy_free_kb != free {
        fail(format!("buddyinfo free pages * 4 = {buddy_free_kb} kB but MemFree is {free} kB"));
    }

    // Every buddyinfo zone is in zoneinfo with the same free page count; MemTotal is the sum of
    // the zones' managed pages (Linux: totalram_pages).
    for z in &buddy {
        let Some(info) = zoneinfo.iter().find(|i| i.node == z.node && i.zone == z.zone) else {
            fail(format!("zone {} of buddyinfo missing from zoneinfo", z.zone));
        };
        if info.fields.get("free") != Some(&z.free_pages()) {
            fail(format!(
                "zone {}: zoneinfo `pages free` {:?}, buddyinfo sums to {}",
                z.zone,
                info.fields.get("free"),
                z.free_pages()
            ));
        }
    }
    let managed: Option<u64> = zoneinfo.iter().map(|z| z.fields.get("managed").copied()).sum();
    match managed {
        Some(m) if m * PAGE_KB == total => {}
        other => fail(format!("zoneinfo managed pages {other:?} * 4 kB != MemTotal {total} kB")),
    }

    for c in &slabs {
        let ok = c.active_objs <= c.num_objs
            && c.num_objs == c.num_slabs * c.objperslab
            && c.active_slabs <= c.num_slabs
            && c.objsize * c.objperslab <= c.pagesperslab * 4096
            && c.objperslab > 0;
        if !ok {
            fail(format!("inconsistent slabinfo line for {}: {c:?}", c.name));
        }
    }

    let mut sorted = areas.clone();
    sorted.sort_by_key(|a| a.start);
    for (i, a) in sorted.iter().enumerate() {
        let ok = a.start < a.end
            && a.size == a.end - a.start
            && a.start >= VMALLOC_START
            && a.end <= VMALLOC_END
            && a.pages.is_none_or(|p| p * 4096 <= a.size);
        if !ok {
            fail(format!("inconsistent vmallocinfo line {a:?}"));
        }
        if i > 0 && sorted[i - 1].end > a.start {
            fail(format!("vmalloc areas overlap: {:?} and {a:?}", sorted[i - 1]));
        }
    }
    buddy.iter().map(|z| z.zone.clone()).collect()
}

fn demo(memory: &str, uefi: bool) -> Vec<String> {
    let out = boot_with("", memory, uefi);
    expect_status(&out, Status::Success, &format!("demo boot with {memory}"));
    check_proc(&out.serial, memory)
}

#[test]
fn demo_64m_bios() {
    let zones = demo("64M", false);
    assert!(zones.iter().any(|z| z == "DMA"), "zones {zones:?}");
    assert!(zones.iter().any(|z| z == "DMA32"), "zones {zones:?}");
    assert!(!zones.iter().any(|z| z == "Normal"), "64M cannot have memory above 4 GiB: {zones:?}");
}

#[test]
fn demo_1g_uefi() {
    let zones = demo("1G", true);
    assert!(zones.iter().any(|z| z == "DMA32"), "zones {zones:?}");
    assert!(!zones.iter().any(|z| z == "Normal"), "1G cannot have memory above 4 GiB: {zones:?}");
}

#[test]
fn demo_6g_bios_has_zone_normal() {
    let zones = demo("6G", false);
    for want in ["DMA", "DMA32", "Normal"] {
        assert!(zones.iter().any(|z| z == want), "zone {want} missing from {zones:?}");
    }
}

/// The checks themselves, on a hand-made consistent log (no boot): guards against assertions
/// that could never pass, and shows the expected format.
#[test]
fn proc_checks_accept_a_consistent_log() {
    let log = "\
[INFO ] demo done
$ cat /proc/buddyinfo
Node 0, zone      DMA      1      0      0      0      0      0      0      0      0      0      3
Node 0, zone    DMA32      0      0      0      0      0      0      0      0      0      0     10

$ cat /proc/zoneinfo
Node 0, zone      DMA
  pages free     3073
        managed  3584
Node 0, zone    DMA32
  pages free     10240
        managed  12000

$ cat /proc/meminfo
MemTotal:          62336 kB
MemFree:           53252 kB

$ cat /proc/slabinfo
slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
kmalloc-64           100    128     64   64    1 : tunables    0    0    0 : slabdata      2      2      0

$ cat /proc/vmallocinfo
0xffffc90000000000-0xffffc90000005000   20480 demo+0x10/0x20 pages=4 vmalloc
0xffffc90000005000-0xffffc90000007000    8192 demo+0x10/0x20 pages=1 vmalloc

";
    assert_eq!(check_proc(log, "64M"), ["DMA", "DMA32"]);
    let broken = log.replace("MemFree:           53252 kB", "MemFree:           53248 kB");
    let err =
        std::panic::catch_unwind(|| check_proc(&broken, "64M")).expect_err("inconsistent MemFree accepted");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("buddyinfo free pages * 4 = 53252 kB but MemFree is 53248 kB"), "{msg}");
}
