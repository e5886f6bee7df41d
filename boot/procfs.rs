//! Parsers for the `/proc`-format blocks the kernel prints in its serial log, so host tests can
//! check the figures. A block is a header line `$ cat /proc/NAME`, the file's content in Linux's
//! format, and an empty line.

use std::collections::BTreeMap;

/// The content of the last `/proc/NAME` block in `serial` (a boot may print a block more than
/// once, e.g. before and after the workload; the last one describes the final state).
pub fn block<'a>(serial: &'a str, name: &str) -> Option<&'a str> {
    blocks(serial, name).pop()
}

/// All `/proc/NAME` blocks in order of appearance.
pub fn blocks<'a>(serial: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("$ cat /proc/{name}\n");
    let serial_lines: Vec<&str> = serial.split_inclusive('\n').collect();
    let mut out = Vec::new();
    let mut offset = 0;
    let mut i = 0;
    while i < serial_lines.len() {
        let line = serial_lines[i];
        offset += line.len();
        i += 1;
        if line.trim_end_matches(['\r', '\n']) == header.trim_end() {
            let start = offset;
            let mut end = start;
            while i < serial_lines.len() && !serial_lines[i].trim_end_matches(['\r', '\n']).is_empty() {
                end += serial_lines[i].len();
                offset += serial_lines[i].len();
                i += 1;
            }
            out.push(serial[start..end].trim_end_matches(['\r', '\n']));
        }
    }
    out
}

fn lines(block: &str) -> impl Iterator<Item = &str> {
    block.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty())
}

/// One line of `/proc/buddyinfo`: `Node 0, zone   Normal    12     3 ...` (11 free-block counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuddyZone {
    pub node: u32,
    pub zone: String,
    /// Free blocks of each order 0..=10.
    pub free: [u64; 11],
}

impl BuddyZone {
    /// Free pages in this zone: sum of count[o] << o.
    pub fn free_pages(&self) -> u64 {
        self.free.iter().enumerate().map(|(o, &n)| n << o).sum()
    }
}

/// Parses "Node N, zone NAME" into (N, NAME, rest of line).
fn node_zone(line: &str) -> Result<(u32, &str, &str), String> {
    let rest =
        line.strip_prefix("Node ").ok_or_else(|| format!("line does not start with `Node `: {line:?}"))?;
    let (node, rest) =
        rest.split_once(',').ok_or_else(|| format!("no `,` after the node number: {line:?}"))?;
    let node = node.trim().parse().map_err(|_| format!("bad node number in {line:?}"))?;
    let rest = rest.trim_start().strip_prefix("zone").ok_or_else(|| format!("no `zone` in {line:?}"))?;
    let rest = rest.trim_start();
    let (zone, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    Ok((node, zone, rest))
}

pub fn parse_buddyinfo(block: &str) -> Result<Vec<BuddyZone>, String> {
    let mut zones = Vec::new();
    for line in lines(block) {
        let (node, zone, rest) = node_zone(line)?;
        let counts: Vec<u64> = rest
            .split_whitespace()
            .map(|w| w.parse().map_err(|_| format!("bad count `{w}` in buddyinfo line {line:?}")))
            .collect::<Result<_, _>>()?;
        let free: [u64; 11] = counts
            .try_into()
            .map_err(|c: Vec<u64>| format!("{} counts instead of 11 in buddyinfo line {line:?}", c.len()))?;
        zones.push(BuddyZone { node, zone: zone.to_string(), free });
    }
    if zones.is_empty() {
        return Err("empty /proc/buddyinfo".into());
    }
    Ok(zones)
}

/// `/proc/meminfo` as field name -> value in kB (fields without a `kB` unit keep their number).
pub fn parse_meminfo(block: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut fields = BTreeMap::new();
    for line in lines(block) {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("no `:` in meminfo line {line:?}"))?;
        let mut words = value.split_whitespace();
        let number = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| format!("no number in meminfo line {line:?}"))?;
        match words.next() {
            None | Some("kB") => {}
            Some(unit) => return Err(format!("unit `{unit}` instead of kB in meminfo line {line:?}")),
        }
        fields.insert(name.to_string(), number);
    }
    for required in ["MemTotal", "MemFree"] {
        if !fields.contains_key(required) {
            return Err(format!("/proc/meminfo has no {required} line"));
        }
    }
    Ok(fields)
}

/// One zone of `/proc/zoneinfo`: its `Node N, zone NAME` header and the `key value` pairs below
/// it (`pages free N` is stored as `free`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneInfo {
    pub node: u32,
    pub zone: String,
    pub fields: BTreeMap<String, u64>,
}

pub fn parse_zoneinfo(block: &str) -> Result<Vec<ZoneInfo>, String> {
    let mut zones: Vec<ZoneInfo> = Vec::new();
    for line in lines(block) {
        if line.starts_with("Node ") {
            let (node, zone, _) = node_zone(line)?;
            zones.push(ZoneInfo { node, zone: zone.to_string(), fields: BTreeMap::new() });
            continue;
        }
        let Some(current) = zones.last_mut() else {
            return Err(format!("zoneinfo line before any `Node N, zone NAME` header: {line:?}"));
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        // "pages free 123" and plain "key 123"; other lines (per-node stats headers, protection
        // arrays, pagesets) carry no single figure and are skipped.
        match words.as_slice() {
            ["pages", key, value] => {
                if let Ok(v) = value.parse() {
                    current.fields.insert(key.to_string(), v);
                }
            }
            [key, value] => {
                if let Ok(v) = value.parse() {
                    current.fields.insert(key.to_string(), v);
                }
            }
            _ => {}
        }
    }
    if zones.is_empty() {
        return Err("no zone in /proc/zoneinfo".into());
    }
    Ok(zones)
}

/// One cache line of `/proc/slabinfo` (version 2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlabCache {
    pub name: String,
    pub active_objs: u64,
    pub num_objs: u64,
    pub objsize: u64,
    pub objperslab: u64,
    pub pagesperslab: u64,
    pub active_slabs: u64,
    pub num_slabs: u64,
}

pub fn parse_slabinfo(block: &str) -> Result<Vec<SlabCache>, String> {
    let mut it = lines(block);
    let version = it.next().ok_or("empty /proc/slabinfo")?;
    if version.trim() != "slabinfo - version: 2.1" {
        return Err(format!("first slabinfo line is {version:?}, not `slabinfo - version: 2.1`"));
    }
    let mut caches = Vec::new();
    for line in it {
        if line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(':').collect();
        let [head, _tunables, slabdata] = parts.as_slice() else {
            return Err(format!("slabinfo line without `: tunables ... : slabdata ...`: {line:?}"));
        };
        let head: Vec<&str> = head.split_whitespace().collect();
        let slabdata: Vec<&str> = slabdata.split_whitespace().collect();
        let num =
            |w: &str| w.parse::<u64>().map_err(|_| format!("bad number `{w}` in slabinfo line {line:?}"));
        if head.len() != 6 || slabdata.len() != 4 || slabdata[0] != "slabdata" {
            return Err(format!("malformed slabinfo line {line:?}"));
        }
        caches.push(SlabCache {
            name: head[0].to_string(),
            active_objs: num(head[1])?,
            num_objs: num(head[2])?,
            objsize: num(head[3])?,
            objperslab: num(head[4])?,
            pagesperslab: num(head[5])?,
            active_slabs: num(slabdata[1])?,
            num_slabs: num(slabdata[2])?,
        });
    }
    Ok(caches)
}

/// One line of `/proc/vmallocinfo`: `0xstart-0xend size caller pages=N vmalloc ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmArea {
    pub start: u64,
    pub end: u64,
    pub size: u64,
    /// Everything after the size (caller, `pages=N`, flags).
    pub rest: String,
    pub pages: Option<u64>,
}

pub fn parse_vmallocinfo(block: &str) -> Result<Vec<VmArea>, String> {
    let hex = |s: &str, line: &str| {
        u64::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| format!("bad address `{s}` in {line:?}"))
    };
    let mut areas = Vec::new();
    for line in lines(block) {
        let mut words = line.split_whitespace();
        let range = words.next().ok_or_else(|| format!("empty vmallocinfo line {line:?}"))?;
        let (start, end) =
            range.split_once('-').ok_or_else(|| format!("no `start-end` range in {line:?}"))?;
        let size = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| format!("no size in vmallocinfo line {line:?}"))?;
        let rest: Vec<&str> = words.collect();
        let pages = rest.iter().find_map(|w| w.strip_prefix("pages=")?.parse().ok());
        areas.push(VmArea {
            start: hex(start, line)?,
            end: hex(end, line)?,
            size,
            rest: rest.join(" "),
            pages,
        });
    }
    Ok(areas)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[INFO ] boot
$ cat /proc/buddyinfo
Node 0, zone      DMA      1      0      0      1      2      1      1      0      1      1      3
Node 0, zone    DMA32      3      2      2      2      1      2      3      2      2      2    240

$ cat /proc/meminfo
MemTotal:        1014024 kB
MemFree:          991456 kB
HugePages_Total:       0

$ cat /proc/zoneinfo
Node 0, zone      DMA
  per-node stats
      nr_free_pages 3840
  pages free     3840
        min      33
        managed  3840
Node 0, zone    DMA32
  pages free     245022
        managed  250000

$ cat /proc/slabinfo
slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
kmalloc-64           100    128     64   64    1 : tunables    0    0    0 : slabdata      2      2      0

$ cat /proc/vmallocinfo
0xffffc90000000000-0xffffc90000005000   20480 demo+0x10/0x20 pages=4 vmalloc

[INFO ] done
";

    #[test]
    fn finds_blocks() {
        assert!(block(LOG, "buddyinfo").unwrap().starts_with("Node 0, zone      DMA "));
        assert_eq!(block(LOG, "meminfo").unwrap().lines().count(), 3);
        assert_eq!(block(LOG, "nothing"), None);
        assert_eq!(blocks(LOG, "vmallocinfo").len(), 1);
        let twice = format!("{LOG}$ cat /proc/meminfo\nMemTotal: 1 kB\nMemFree: 0 kB\n\n");
        assert_eq!(blocks(&twice, "meminfo").len(), 2);
        assert_eq!(block(&twice, "meminfo").unwrap(), "MemTotal: 1 kB\nMemFree: 0 kB");
    }

    #[test]
    fn parses_buddyinfo_and_meminfo() {
        let zones = parse_buddyinfo(block(LOG, "buddyinfo").unwrap()).unwrap();
        assert_eq!(zones.len(), 2);
        assert_eq!(zones[0].zone, "DMA");
        assert_eq!(zones[0].free[10], 3);
        assert_eq!(zones[0].free_pages(), 1 + 8 + 2 * 16 + 32 + 64 + 256 + 512 + 3 * 1024);
        let mem = parse_meminfo(block(LOG, "meminfo").unwrap()).unwrap();
        assert_eq!(mem["MemTotal"], 1014024);
        assert_eq!(mem["HugePages_Total"], 0);
        assert!(parse_buddyinfo("Node 0, zone DMA 1 2 3").unwrap_err().contains("3 counts instead of 11"));
        assert!(parse_meminfo("MemTotal: 12 MB").unwrap_err().contains("unit `MB`"));
        assert!(parse_meminfo("MemTotal: 12 kB").unwrap_err().contains("no MemFree"));
    }

    #[test]
    fn parses_zoneinfo_slabinfo_vmallocinfo() {
        let zones = parse_zoneinfo(block(LOG, "zoneinfo").unwrap()).unwrap();
        assert_eq!(zones.len(), 2);
        assert_eq!(zones[0].fields["free"], 3840);
        assert_eq!(zones[1].fields["managed"], 250000);
        let caches = parse_slabinfo(block(LOG, "slabinfo").unwrap()).unwrap();
        assert_eq!(caches[0].name, "kmalloc-64");
        assert_eq!((caches[0].active_objs, caches[0].num_objs, caches[0].num_slabs), (100, 128, 2));
        let areas = parse_vmallocinfo(block(LOG, "vmallocinfo").unwrap()).unwrap();
        assert_eq!(areas[0].start, 0xffffc90000000000);
        assert_eq!(areas[0].size, areas[0].end - areas[0].start);
        assert_eq!(areas[0].pages, Some(4));
        assert!(parse_slabinfo("slabinfo - version: 2.0").is_err());
    }
}
