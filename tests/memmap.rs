//! `cargo run -- --memmap FILE.svg`: the picture of physical memory before and after the demo
//! workload, checked against the same boot's `/proc/buddyinfo` and `/proc/meminfo`: the cells
//! of each state are the pages the kernel counts, the chart's bars are buddyinfo's counts, and
//! the file is well-formed XML.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use memkernel::{memmap, procfs};

/// The lines from `header` to the next statistics header (or the end).
fn section<'a>(serial: &'a str, header: &str) -> &'a str {
    let start = serial.find(header).unwrap_or_else(|| panic!("no `{header}` in the log:\n{serial}"));
    let rest = &serial[start + header.len()..];
    let end = rest.find("---- ").unwrap_or(rest.len());
    &rest[..end]
}

/// Every tag opened is closed in order (what a browser's XML parser demands of an SVG file).
fn well_formed(xml: &str) -> Result<(), String> {
    let body = xml.strip_prefix("<?xml").and_then(|r| r.split_once("?>")).ok_or("no XML declaration")?.1;
    let mut open: Vec<&str> = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        let tag_end = rest[i..].find('>').ok_or("unterminated tag")? + i;
        let tag = &rest[i + 1..tag_end];
        if let Some(name) = tag.strip_prefix('/') {
            match open.pop() {
                Some(o) if o == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else if !tag.ends_with('/') {
            open.push(tag.split_whitespace().next().ok_or("empty tag")?);
        }
        let text = &rest[i..tag_end];
        if text.contains('&') && !text.contains("&amp;") && !text.contains("&lt;") && !text.contains("&quot;")
        {
            return Err(format!("bare & in {text}"));
        }
        rest = &rest[tag_end + 1..];
    }
    match open.as_slice() {
        [] => Ok(()),
        left => Err(format!("unclosed: {left:?}")),
    }
}

#[test]
fn the_picture_matches_the_proc_figures_of_the_same_boot() {
    let file = std::env::temp_dir().join(format!("memkernel-memmap-{}.svg", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_memkernel"))
        .arg("--memmap")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("the runner starts");
    let serial = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}\nlog:\n{serial}");
    assert!(serial.contains("[INFO ] demo finished"), "the demo ran:\n{serial}");
    assert!(stderr.contains("runner: wrote "), "{stderr}");
    let svg = std::fs::read_to_string(&file).expect("the SVG file");
    let _ = std::fs::remove_file(&file);
    well_formed(&svg).unwrap_or_else(|e| panic!("the SVG is not well-formed: {e}"));
    assert!(svg.contains(r#"<svg xmlns="http://www.w3.org/2000/svg""#));

    let panels = memmap::drawn_cells(&svg).expect("the picture's maps");
    assert_eq!(panels.len(), 2, "before and after the demo, side by side");
    let maps = memmap::find_all(&serial).expect("the page-state maps of the log");
    assert_eq!(
        maps.iter().map(|m| m.label.as_str()).collect::<Vec<_>>(),
        ["after boot", "after the demo workload"]
    );

    for (when, (map, (ppc, cells))) in
        ["after boot", "after the demo workload"].into_iter().zip(maps.iter().zip(&panels))
    {
        let stats = section(&serial, &format!("---- memory statistics {when} ----"));
        let block = |name| procfs::block(stats, name).unwrap_or_else(|| panic!("{when}: no /proc/{name}"));
        let buddy = procfs::parse_buddyinfo(block("buddyinfo")).unwrap();
        let mem = procfs::parse_meminfo(block("meminfo")).unwrap();
        assert_eq!(*ppc, 1, "1 GiB is drawn a cell per page");
        let cell = |c: &str| cells.get(c).copied().unwrap_or(0);
        // Each state's cells are the pages the kernel counts for it.
        assert_eq!(cell("free") * 4, mem["MemFree"], "{when}: free cells vs MemFree");
        assert_eq!(cell("free"), buddy.iter().map(|z| z.free_pages()).sum::<u64>(), "{when}: vs buddyinfo");
        // fs/proc/meminfo.c (6.12): Slab is NR_SLAB_RECLAIMABLE_B + NR_SLAB_UNRECLAIMABLE_B, and
        // mm/slub.c ___kmalloc_large_node adds large kmalloc blocks to the latter.
        assert_eq!((cell("slab") + cell("kmalloc-large")) * 4, mem["Slab"], "{when}: slab cells vs Slab");
        assert_eq!(cell("pagetable") * 4, mem["PageTables"], "{when}: page-table cells vs PageTables");
        assert_eq!(cell("vmalloc") * 4, mem["VmallocUsed"], "{when}: vmalloc cells vs VmallocUsed");
        let managed: u64 = ["free", "pcp", "slab", "kmalloc-large", "vmalloc", "pagetable", "allocated"]
            .iter()
            .map(|c| cell(c))
            .sum();
        assert_eq!(managed * 4, mem["MemTotal"], "{when}: managed cells vs MemTotal");
        assert_eq!(cell("inconsistent"), 0, "{when}");
        assert!(cell("kernel") > 0 && cell("memblock") > 0 && cell("hole") > 0, "{when}: {cells:?}");
        // The picture is the map the kernel printed, every page of it.
        let drawn: u64 = cells.values().sum();
        assert_eq!(drawn, map.end_pfn, "{when}");
        let by: BTreeMap<String, u64> =
            map.pages_by_category().into_iter().map(|(c, n)| (c.to_string(), n)).collect();
        assert_eq!(&by, cells, "{when}");
        // The chart: buddyinfo's free blocks per order of each zone.
        for z in &buddy {
            for (order, n) in z.free.iter().enumerate() {
                let bar = format!(r#"data-zone="{}" data-order="{order}" data-count="{n}""#, z.zone);
                assert!(svg.contains(&bar), "{when}: no bar `{bar}`");
            }
        }
    }
    // The demo keeps a 1 MiB vzalloc'd table: the second picture shows it.
    assert!(panels[1].1["vmalloc"] >= 256, "{:?}", panels[1].1);
}
