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

// mm/vmalloc.c (6.12), show_purge_info(): after the busy areas, each area on a node's lazy list
// as "0x%pK-0x%pK %7ld unpurged vm_area\n", va_end - va_start (guard page included).
#[test]
fn lazily_freed_areas_are_unpurged_vm_area_lines_after_the_live_ones() {
    let mut a = VmapAreas::new(START, START + (32usize << 40)).unwrap();
    let x = a.alloc(2 * PAGE_SIZE, PAGE_SIZE, true).unwrap();
    let line_y = line!() + 1;
    a.alloc(PAGE_SIZE, PAGE_SIZE, true).unwrap();
    a.free_lazy(x.start).unwrap();
    let mut out = String::new();
    a.write_vmallocinfo(&mut out).unwrap();
    let file = file!();
    assert_eq!(
        out,
        std::format!(
            "0xffffc90000003000-0xffffc90000005000    8192 {file}:{line_y} pages=1 vmalloc N0=1\n\
             0xffffc90000000000-0xffffc90000003000   12288 unpurged vm_area\n"
        )
    );
    assert_eq!(a.purge_lazy(), 1);
    out.clear();
    a.write_vmallocinfo(&mut out).unwrap();
    assert!(!out.contains("unpurged"), "{out}");
    a.check().unwrap();
}
