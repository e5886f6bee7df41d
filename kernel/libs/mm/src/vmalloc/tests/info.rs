//! `/proc/vmallocinfo` and meminfo formats.

use std::string::String;

use crate::addr::PAGE_SIZE;
use crate::vmalloc::{AreaKind, VmallocInfoLine, VmallocMeminfo, VmapAreaRequest, VmapAreas};

const START: usize = 0xffff_c900_0000_0000;

// mm/vmalloc.c (6.12), vmalloc_info_show(): " pages=%d" only when v->nr_pages, which vmap()
// leaves 0 (it sets nr_pages only with VM_MAP_PUT_PAGES), so a vmap line is caller then "vmap";
// show_numa_info() counts v->pages[0..nr_pages], so a vmap line has no N0= either.
#[test]
fn vmallocinfo_lines_have_linux_format() {
    let mut a = VmapAreas::new(START, START + (32usize << 40)).unwrap();
    let line_a = line!() + 1;
    a.alloc(4 * PAGE_SIZE, PAGE_SIZE, true).unwrap();
    let line_b = line!() + 1;
    let req = VmapAreaRequest { kind: AreaKind::Vmap, ..VmapAreaRequest::new(2 * PAGE_SIZE) };
    a.alloc_area(req).unwrap();
    let file = file!();
    let mut out = String::new();
    a.write_vmallocinfo(&mut out).unwrap();
    let want = std::format!(
        "0xffffc90000000000-0xffffc90000005000   20480 {file}:{line_a} pages=4 vmalloc N0=4\n\
         0xffffc90000005000-0xffffc90000008000   12288 {file}:{line_b} vmap\n"
    );
    assert_eq!(out, want);
    let first = a.areas().next().unwrap();
    assert_eq!(
        std::format!("{}", VmallocInfoLine(&first)),
        std::format!("0xffffc90000000000-0xffffc90000005000   20480 {file}:{line_a} pages=4 vmalloc N0=4")
    );
}

#[test]
fn meminfo_lines_have_linux_format() {
    let mut a = VmapAreas::new(START, START + (32usize << 40)).unwrap();
    a.alloc(10 * PAGE_SIZE, PAGE_SIZE, true).unwrap();
    let req = VmapAreaRequest { kind: AreaKind::Vmap, ..VmapAreaRequest::new(8 * PAGE_SIZE) };
    a.alloc_area(req).unwrap();
    let m = a.meminfo();
    // fs/proc/meminfo.c (6.12), meminfo_proc_show(): `VMALLOC_TOTAL >> 10` with VMALLOC_TOTAL =
    // VMALLOC_END - VMALLOC_START and x86's inclusive VMALLOC_END: 32 TiB - 1 byte = 34359738367 kB.
    assert_eq!(m, VmallocMeminfo { total_kb: 34359738367, used_kb: 40, chunk_kb: 0 });
    assert_eq!(
        std::format!("{m}"),
        "VmallocTotal:   34359738367 kB\nVmallocUsed:          40 kB\nVmallocChunk:          0 kB\n"
    );
}
