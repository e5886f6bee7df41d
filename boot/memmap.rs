//! The picture of physical memory: parses the kernel's page-state map (the `$ memmap LABEL`
//! block, `kernel/libs/mm/src/pagemap.rs` writes it) and draws it as SVG, one cell per page (per block of
//! 2^k pages when memory is larger than 1 GiB), coloured by what the page holds, with the zone
//! boundaries, holes, a legend with page counts and, beside the map, a bar chart of the free
//! blocks of each order in each zone (what `/proc/buddyinfo` counts).
//!
//! `cargo run -- --memmap FILE.svg` draws the maps before and after the demo workload side by
//! side; the console's `memmap [FILE.svg]` draws one ([`BlockWatcher`] in the runner's reader).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// What a run of pages holds (the codes of the text form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Free(u8),
    Pcp,
    /// Slab pages of cache number n of the block's `cache` lines (`None`: not listed).
    Slab(Option<u32>),
    KmallocLarge,
    Vmalloc,
    PageTable,
    Allocated,
    Kernel,
    Memblock,
    Firmware,
    Hole,
    Inconsistent,
}

impl Kind {
    /// The category a cell is drawn and counted as (its SVG class).
    pub fn category(self) -> &'static str {
        match self {
            Kind::Free(_) => "free",
            Kind::Pcp => "pcp",
            Kind::Slab(_) => "slab",
            Kind::KmallocLarge => "kmalloc-large",
            Kind::Vmalloc => "vmalloc",
            Kind::PageTable => "pagetable",
            Kind::Allocated => "allocated",
            Kind::Kernel => "kernel",
            Kind::Memblock => "memblock",
            Kind::Firmware => "reserved",
            Kind::Hole => "hole",
            Kind::Inconsistent => "inconsistent",
        }
    }

    /// Counted in MemTotal (managed by the buddy allocator)?
    pub fn is_managed(self) -> bool {
        !matches!(self, Kind::Kernel | Kind::Memblock | Kind::Firmware | Kind::Hole)
    }

    fn parse(code: &str) -> Option<Kind> {
        let (letter, param) = code.split_at(1);
        let num = || param.parse::<u32>().ok();
        Some(match (letter, param.is_empty()) {
            ("F", false) => Kind::Free(u8::try_from(num()?).ok().filter(|&o| o <= 10)?),
            ("S", true) => Kind::Slab(None),
            ("S", false) => Kind::Slab(Some(num()?)),
            ("P", true) => Kind::Pcp,
            ("L", true) => Kind::KmallocLarge,
            ("V", true) => Kind::Vmalloc,
            ("T", true) => Kind::PageTable,
            ("A", true) => Kind::Allocated,
            ("K", true) => Kind::Kernel,
            ("M", true) => Kind::Memblock,
            ("R", true) => Kind::Firmware,
            ("H", true) => Kind::Hole,
            ("X", true) => Kind::Inconsistent,
            _ => return None,
        })
    }
}

/// Legend text of each category, in the legend's order.
const CATEGORIES: &[(&str, &str)] = &[
    ("free", "free (buddy): paler = larger block, order 10 palest"),
    ("pcp", "free on a per-CPU list"),
    ("slab", "slab (shade by cache)"),
    ("kmalloc-large", "kmalloc-large"),
    ("vmalloc", "vmalloc"),
    ("pagetable", "page table"),
    ("allocated", "alloc_pages (other)"),
    ("kernel", "kernel image, bootloader"),
    ("memblock", "memblock (mem_map, ...)"),
    ("reserved", "firmware reserved"),
    ("hole", "hole (no memory)"),
    ("inconsistent", "inconsistent descriptors"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub pages: u64,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneSpan {
    pub name: String,
    /// `[start, end)` in pfns; `None` for an empty zone.
    pub span: Option<(u64, u64)>,
}

/// One page-state map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageMap {
    pub label: String,
    pub end_pfn: u64,
    pub zones: Vec<ZoneSpan>,
    pub caches: Vec<String>,
    pub runs: Vec<Run>,
}

/// Parses one block, from its `$ memmap` line to (not including) the empty line.
pub fn parse_block(text: &str) -> Result<PageMap, String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty memmap block")?;
    let label = header.strip_prefix("$ memmap").ok_or_else(|| format!("not a memmap block: {header}"))?;
    let mut map =
        PageMap { label: label.trim().to_string(), end_pfn: 0, zones: vec![], caches: vec![], runs: vec![] };
    let mut next = 0u64;
    for line in lines {
        let mut w = line.split_ascii_whitespace();
        match w.next() {
            None => break,
            Some("pfns") => {
                let (_, end) = (w.next(), w.next());
                map.end_pfn =
                    end.and_then(|e| e.parse().ok()).ok_or_else(|| format!("bad pfns line: {line}"))?;
            }
            Some("zone") => {
                let name = w.next().ok_or_else(|| format!("bad zone line: {line}"))?.to_string();
                let span = match (w.next(), w.next()) {
                    (Some("empty"), None) => None,
                    (Some(s), Some(e)) => Some((
                        s.parse().map_err(|_| format!("bad zone line: {line}"))?,
                        e.parse().map_err(|_| format!("bad zone line: {line}"))?,
                    )),
                    _ => return Err(format!("bad zone line: {line}")),
                };
                map.zones.push(ZoneSpan { name, span });
            }
            Some("cache") => {
                let n: usize =
                    w.next().and_then(|n| n.parse().ok()).ok_or_else(|| format!("bad cache line: {line}"))?;
                if n != map.caches.len() {
                    return Err(format!("cache {n} out of order: {line}"));
                }
                map.caches.push(w.next().ok_or_else(|| format!("bad cache line: {line}"))?.to_string());
            }
            Some("run") => {
                for tok in w {
                    let digits =
                        tok.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("bad run `{tok}`"))?;
                    let pages: u64 = tok[..digits].parse().map_err(|_| format!("bad run `{tok}`"))?;
                    let kind = Kind::parse(&tok[digits..]).ok_or_else(|| format!("bad run code `{tok}`"))?;
                    if pages == 0 {
                        return Err(format!("empty run `{tok}`"));
                    }
                    map.runs.push(Run { start: next, pages, kind });
                    next += pages;
                }
            }
            Some(other) => return Err(format!("unknown memmap line `{other}`: {line}")),
        }
    }
    if next != map.end_pfn {
        return Err(format!("the runs cover {next} pages, the map {} pfns", map.end_pfn));
    }
    Ok(map)
}

/// Every memmap block of a serial log, in order.
pub fn find_all(serial: &str) -> Result<Vec<PageMap>, String> {
    let mut maps = Vec::new();
    let mut rest = serial;
    while let Some(i) = rest.find("$ memmap") {
        let block = &rest[i..];
        let end = block.find("\n\n").map_or(block.len(), |e| e + 1);
        maps.push(parse_block(&block[..end])?);
        rest = &block[end..];
    }
    Ok(maps)
}

impl PageMap {
    /// Pages per category.
    pub fn pages_by_category(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for r in &self.runs {
            *m.entry(r.kind.category()).or_insert(0) += r.pages;
        }
        m
    }

    /// Pages the buddy allocator manages (MemTotal).
    pub fn managed_pages(&self) -> u64 {
        self.runs.iter().filter(|r| r.kind.is_managed()).map(|r| r.pages).sum()
    }

    /// Free blocks per order of each populated zone (what `/proc/buddyinfo` shows).
    pub fn free_blocks(&self) -> Vec<(String, [u64; 11])> {
        let mut out = Vec::new();
        for z in &self.zones {
            let Some((zs, ze)) = z.span else { continue };
            let mut blocks = [0u64; 11];
            for r in &self.runs {
                if let Kind::Free(order) = r.kind {
                    let (a, b) = (r.start.max(zs), (r.start + r.pages).min(ze));
                    if a < b {
                        blocks[order as usize] += (b - a) >> order;
                    }
                }
            }
            out.push((z.name.clone(), blocks));
        }
        out
    }
}

// ---- drawing ----

/// Most cells a map is drawn with; above, a cell stands for 2^k pages.
const MAX_CELLS: u64 = 1 << 18;
/// Width of the map in pixels.
const GRID_PX: u64 = 1024;
const LEFT: u64 = 110;
const TOP: u64 = 56;
const CHART_W: u64 = 300;
const PANEL_W: u64 = LEFT + GRID_PX + 40 + CHART_W + 30;

fn free_colour(order: u8) -> String {
    // Free memory is the background: large blocks pale (#e5f5e0 at order 10), fragments
    // saturated (#006d2c at order 0), so fragmentation stands out.
    let (a, b) = ([0x00u32, 0x6d, 0x2c], [0xe5u32, 0xf5, 0xe0]);
    let t = order as u32;
    let c: Vec<u32> = a.iter().zip(b).map(|(&x, y)| (x * (10 - t) + y * t) / 10).collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

const SLAB_SHADES: &[&str] =
    &["#f46d43", "#fdae61", "#e08214", "#d95f0e", "#fec44f", "#b35806", "#f16913", "#fd8d3c"];

fn colour(kind: Kind) -> String {
    match kind {
        Kind::Free(o) => free_colour(o),
        Kind::Pcp => "#ffff66".into(),
        Kind::Slab(Some(n)) => SLAB_SHADES[n as usize % SLAB_SHADES.len()].into(),
        Kind::Slab(None) => "#f46d43".into(),
        Kind::KmallocLarge => "#a50026".into(),
        Kind::Vmalloc => "#762a83".into(),
        Kind::PageTable => "#2166ac".into(),
        Kind::Allocated => "#de77ae".into(),
        Kind::Kernel => "#404040".into(),
        Kind::Memblock => "#8c8c8c".into(),
        Kind::Firmware => "#111111".into(),
        Kind::Hole => "url(#hole)".into(),
        Kind::Inconsistent => "#ff00ff".into(),
    }
}

fn legend_colour(category: &str) -> String {
    match category {
        "free" => free_colour(5),
        "pcp" => colour(Kind::Pcp),
        "slab" => colour(Kind::Slab(None)),
        "kmalloc-large" => colour(Kind::KmallocLarge),
        "vmalloc" => colour(Kind::Vmalloc),
        "pagetable" => colour(Kind::PageTable),
        "allocated" => colour(Kind::Allocated),
        "kernel" => colour(Kind::Kernel),
        "memblock" => colour(Kind::Memblock),
        "reserved" => colour(Kind::Firmware),
        "hole" => colour(Kind::Hole),
        _ => colour(Kind::Inconsistent),
    }
}

/// How a map is laid out: pages per cell, cells per row, pixels per cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub pages_per_cell: u64,
    pub cols: u64,
    pub cell_px: u64,
    pub rows: u64,
}

impl Grid {
    pub fn for_pages(pages: u64) -> Grid {
        let mut ppc = 1;
        while pages.div_ceil(ppc) > MAX_CELLS {
            ppc *= 2;
        }
        let cells = pages.div_ceil(ppc).max(1);
        // Roughly square, a power of two wide (rows then start at round addresses).
        let cols = ((cells as f64).sqrt() as u64).next_power_of_two().clamp(64, 512);
        Grid { pages_per_cell: ppc, cols, cell_px: GRID_PX / cols, rows: cells.div_ceil(cols) }
    }

    fn height(&self) -> u64 {
        self.rows * self.cell_px
    }
}

/// The cells of a map: runs at cell resolution (each cell of 2^k pages shows the kind holding
/// most of its pages).
fn cell_runs(map: &PageMap, g: Grid) -> Vec<(u64, u64, Kind)> {
    if g.pages_per_cell == 1 {
        return map.runs.iter().map(|r| (r.start, r.pages, r.kind)).collect();
    }
    let mut out: Vec<(u64, u64, Kind)> = Vec::new();
    let mut runs = map.runs.iter().peekable();
    let cells = map.end_pfn.div_ceil(g.pages_per_cell);
    let mut in_cell: BTreeMap<Kind, u64> = BTreeMap::new();
    let mut pos = 0u64;
    let mut cur = runs.next().cloned();
    for cell in 0..cells {
        let end = ((cell + 1) * g.pages_per_cell).min(map.end_pfn);
        in_cell.clear();
        while pos < end {
            let Some(r) = cur.as_mut() else { break };
            let take = (r.start + r.pages).min(end) - pos;
            *in_cell.entry(r.kind).or_insert(0) += take;
            pos += take;
            if pos == r.start + r.pages {
                cur = runs.next().cloned();
            }
        }
        let kind = in_cell.iter().max_by_key(|(_, &n)| n).map_or(Kind::Hole, |(&k, _)| k);
        match out.last_mut() {
            Some(last) if last.2 == kind => last.1 += 1,
            _ => out.push((cell, 1, kind)),
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn size(pages: u64) -> String {
    let bytes = pages * 4096;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// One map with its chart and legend at horizontal offset `x0`.
fn draw_panel(svg: &mut String, map: &PageMap, x0: u64) -> u64 {
    let g = Grid::for_pages(map.end_pfn);
    let (gx, gy) = (x0 + LEFT, TOP);
    let cell = if g.pages_per_cell == 1 {
        "1 cell = 1 page (4 KiB)".to_string()
    } else {
        format!(
            "1 cell = {} pages ({}), coloured by most of its pages",
            g.pages_per_cell,
            size(g.pages_per_cell)
        )
    };
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" class="title">{}</text><text x="{}" y="42" class="note">physical memory 0x0-{:#x} ({}); {cell}</text>"#,
        x0 + 10,
        esc(&map.label),
        x0 + 10,
        map.end_pfn * 4096,
        size(map.end_pfn)
    );
    let _ = writeln!(
        svg,
        r#"<g class="map" data-pages-per-cell="{}" data-cell-px="{}">"#,
        g.pages_per_cell, g.cell_px
    );
    let (cols, px) = (g.cols, g.cell_px);
    for (start, len, kind) in cell_runs(map, g) {
        let attrs = match kind {
            Kind::Free(o) => format!(r#" data-order="{o}""#),
            Kind::Slab(Some(n)) => {
                format!(r#" data-cache="{}""#, esc(map.caches.get(n as usize).map_or("?", |s| s.as_str())))
            }
            _ => String::new(),
        };
        let fill = colour(kind);
        let cat = kind.category();
        let first_pfn = start * g.pages_per_cell;
        let title = format!(
            "pfn {first_pfn:#x}-{:#x} (phys {:#x}): {}{}",
            (start + len) * g.pages_per_cell - 1,
            first_pfn * 4096,
            cat,
            match kind {
                Kind::Free(o) => format!(", order {o}"),
                Kind::Slab(Some(n)) =>
                    format!(", cache {}", map.caches.get(n as usize).map_or("?", |s| s.as_str())),
                _ => String::new(),
            }
        );
        // At most three rectangles: the rest of the first row, full rows, the start of the last.
        let mut pieces = Vec::new();
        let (mut c, end) = (start, start + len);
        if c % cols != 0 {
            let n = (cols - c % cols).min(end - c);
            pieces.push((c % cols, c / cols, n, 1));
            c += n;
        }
        if end - c >= cols {
            let rows = (end - c) / cols;
            pieces.push((0, c / cols, cols, rows));
            c += rows * cols;
        }
        if c < end {
            pieces.push((0, c / cols, end - c, 1));
        }
        for (col, row, w, h) in pieces {
            let _ = writeln!(
                svg,
                r#"<rect class="{cat}"{attrs} x="{}" y="{}" width="{}" height="{}" fill="{fill}"><title>{}</title></rect>"#,
                gx + col * px,
                gy + row * px,
                w * px,
                h * px,
                esc(&title)
            );
        }
    }
    let _ = writeln!(svg, "</g>");
    // Row addresses every 1/8 of the map, zone boundaries and names.
    let row_bytes = cols * g.pages_per_cell * 4096;
    let step = (g.rows / 8).max(1);
    for row in (0..g.rows).step_by(step as usize) {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" class="addr">{:#x}</text>"#,
            gx - 6,
            gy + row * px + 10,
            row * row_bytes
        );
    }
    for z in &map.zones {
        let Some((zs, ze)) = z.span else { continue };
        let c = zs / g.pages_per_cell;
        let (row, col) = (c / cols, c % cols);
        let (yr, xc) = (gy + row * px, gx + col * px);
        let _ = writeln!(
            svg,
            r#"<polyline class="zone" points="{gx},{} {xc},{} {xc},{yr} {},{yr}"/>"#,
            yr + px,
            yr + px,
            gx + cols * px
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" class="zonename">{} →</text><title>zone {}: pfn {zs:#x}-{:#x}</title>"#,
            x0 + 8,
            yr + if col == 0 { 12 } else { px + 12 },
            esc(&z.name),
            esc(&z.name),
            ze - 1
        );
    }
    // Legend, with each category's pages.
    let counts = map.pages_by_category();
    let mut y = gy + g.height() + 24;
    for (cat, text) in CATEGORIES {
        let n = counts.get(cat).copied().unwrap_or(0);
        if n == 0 && matches!(*cat, "inconsistent" | "allocated" | "kmalloc-large") {
            continue;
        }
        let _ = writeln!(
            svg,
            r##"<rect class="swatch" x="{gx}" y="{}" width="14" height="14" fill="{}" stroke="#666"/><text x="{}" y="{}" class="legend">{}: {n} pages ({})</text>"##,
            y - 11,
            legend_colour(cat),
            gx + 20,
            y,
            esc(text),
            size(n)
        );
        y += 18;
    }
    // The chart: free blocks per order of each populated zone.
    let cx = gx + GRID_PX + 40;
    let mut cy = gy;
    let zones = map.free_blocks();
    let max = zones.iter().flat_map(|(_, b)| b.iter().copied()).max().unwrap_or(0).max(1);
    let _ = writeln!(svg, r#"<text x="{cx}" y="{cy}" class="note">free blocks per order (buddyinfo)</text>"#);
    cy += 16;
    for (zone, blocks) in &zones {
        let _ = writeln!(svg, r#"<text x="{cx}" y="{}" class="zonename">zone {}</text>"#, cy + 10, esc(zone));
        cy += 18;
        for (order, &n) in blocks.iter().enumerate() {
            let w = if n == 0 { 0 } else { (n * (CHART_W - 90) / max).max(1) };
            let _ = writeln!(
                svg,
                r##"<text x="{cx}" y="{}" class="axis">{order:>2}</text><rect class="bar" data-zone="{}" data-order="{order}" data-count="{n}" x="{}" y="{cy}" width="{w}" height="11" fill="{}" stroke="#2f6f3f" stroke-width="0.5"/><text x="{}" y="{}" class="axis">{n}</text>"##,
                cy + 10,
                esc(zone),
                cx + 22,
                free_colour(order as u8),
                cx + 26 + w,
                cy + 10
            );
            cy += 14;
        }
        cy += 10;
    }
    y.max(cy) + 10
}

/// The SVG of one or more maps side by side.
pub fn render_svg(maps: &[&PageMap]) -> String {
    let mut body = String::new();
    let mut height = 0;
    for (i, m) in maps.iter().enumerate() {
        height = height.max(draw_panel(&mut body, m, i as u64 * PANEL_W));
    }
    let width = PANEL_W * maps.len().max(1) as u64;
    format!(
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">
<defs><pattern id="hole" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c8c8c8" stroke-width="2"/></pattern>
<style>.title{{font-size:16px;font-weight:bold}} .note{{font-size:12px;fill:#333}} .legend{{font-size:12px}} .addr{{font-size:10px;text-anchor:end;fill:#555;font-family:monospace}} .zonename{{font-size:12px;font-weight:bold}} .axis{{font-size:10px;font-family:monospace}} .zone{{fill:none;stroke:#e00000;stroke-width:2}}</style></defs>
<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>
{body}</svg>
"##
    )
}

/// Reads a drawn picture back: for each map (panel), its pages per cell and the cells of each
/// class as the rectangles cover them (for tests that check the picture against `/proc`).
pub fn drawn_cells(svg: &str) -> Result<Vec<(u64, BTreeMap<String, u64>)>, String> {
    fn attr<'a>(elem: &'a str, name: &str) -> Option<&'a str> {
        let i = elem.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(&elem[i..i + elem[i..].find('"')?])
    }
    let num = |elem: &str, name: &str| {
        attr(elem, name)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("no number `{name}` in {elem}"))
    };
    let mut out = Vec::new();
    for group in svg.split("<g class=\"map\"").skip(1) {
        let group = &group[..group.find("</g>").ok_or("unterminated map group")?];
        let head = &group[..group.find('>').ok_or("bad map group")?];
        let (ppc, px) = (num(head, "data-pages-per-cell")?, num(head, "data-cell-px")?);
        let mut cells = BTreeMap::new();
        for r in group.split("<rect").skip(1) {
            let r = &r[..r.find('>').ok_or("unterminated rect")?];
            let class = attr(r, "class").ok_or_else(|| format!("rect without class: {r}"))?;
            let area = num(r, "width")? * num(r, "height")?;
            if area % (px * px) != 0 {
                return Err(format!("rect not made of whole cells: {r}"));
            }
            *cells.entry(class.to_string()).or_insert(0) += area / (px * px);
        }
        out.push((ppc, cells));
    }
    Ok(out)
}

/// Watches the serial stream of a console session and writes each `$ memmap NAME.svg` block to
/// `NAME.svg` in its directory as soon as the block is complete.
pub struct BlockWatcher {
    dir: PathBuf,
    line: Vec<u8>,
    block: Option<String>,
}

/// Whether the runner writes a file of this name (the kernel checks the same).
pub fn valid_svg_name(name: &str) -> bool {
    name.len() <= 64
        && name.ends_with(".svg")
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl BlockWatcher {
    pub fn new(dir: PathBuf) -> BlockWatcher {
        BlockWatcher { dir, line: Vec::new(), block: None }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line).trim_end_matches('\r').to_string();
            self.line.clear();
            self.take_line(&line);
        }
    }

    fn take_line(&mut self, line: &str) {
        match self.block.as_mut() {
            None => {
                if line.strip_prefix("$ memmap ").is_some_and(|n| valid_svg_name(n.trim())) {
                    self.block = Some(format!("{line}\n"));
                }
            }
            Some(text) if !line.is_empty() => {
                text.push_str(line);
                text.push('\n');
            }
            Some(_) => {
                let text = self.block.take().unwrap_or_default();
                match parse_block(&text) {
                    Ok(map) => {
                        let path = self.dir.join(&map.label);
                        match std::fs::write(&path, render_svg(&[&map])) {
                            Ok(()) => eprintln!("runner: wrote {} (open it in a browser)", path.display()),
                            Err(e) => eprintln!("runner: cannot write {}: {e}", path.display()),
                        }
                    }
                    Err(e) => eprintln!("runner: bad memmap block: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "\
$ memmap after boot
pfns 0 4096
zone DMA 0 1024
zone DMA32 1024 4000
zone Normal empty
cache 0 kmem_cache
cache 1 kmalloc-64
run 1M 158F0 1R 96H 10K 2S0 1S1 4A 1P 3T 5V 1L
run 2L 1500F10 2310F3 1R
";

    #[test]
    fn a_block_parses_into_runs_that_tile_the_map() {
        let m = parse_block(BLOCK).unwrap();
        assert_eq!(m.label, "after boot");
        assert_eq!(m.end_pfn, 4096);
        assert_eq!(m.zones[2], ZoneSpan { name: "Normal".into(), span: None });
        assert_eq!(m.caches, ["kmem_cache", "kmalloc-64"]);
        assert_eq!(m.runs[1], Run { start: 1, pages: 158, kind: Kind::Free(0) });
        assert_eq!(m.runs.last().unwrap(), &Run { start: 4095, pages: 1, kind: Kind::Firmware });
        let c = m.pages_by_category();
        assert_eq!(c["free"], 158 + 1500 + 2310);
        assert_eq!(c["kmalloc-large"], 3, "a run split across lines still counts");
        assert_eq!(m.managed_pages(), 158 + 2 + 1 + 4 + 1 + 3 + 5 + 1 + 2 + 1500 + 2310);
        // Free blocks count by the part of a run inside each zone.
        let fb = m.free_blocks();
        assert_eq!(fb.len(), 2);
        assert_eq!(fb[0].1[0], 158);
        assert_eq!(fb[1].1[3], (4000 - 1785) >> 3, "order-3 blocks from pfn 1785 to DMA32's end");
        assert_eq!(find_all(&format!("log\n{BLOCK}\nmore\n")).unwrap(), vec![m]);
    }

    #[test]
    fn bad_blocks_are_refused_with_the_reason() {
        assert!(parse_block(&BLOCK.replace("3 1R\n", "3 2R\n")).unwrap_err().contains("cover 4097 pages"));
        assert!(parse_block(&BLOCK.replace("1P", "1Q")).unwrap_err().contains("bad run code `1Q`"));
        assert!(parse_block(&BLOCK.replace("158F0", "158F11")).is_err(), "order above 10");
        assert!(parse_block(&BLOCK.replace("cache 1", "cache 2")).unwrap_err().contains("out of order"));
    }

    #[test]
    fn the_picture_has_a_cell_per_page_of_each_state() {
        let m = parse_block(BLOCK).unwrap();
        let svg = render_svg(&[&m, &m]);
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        let g = Grid::for_pages(4096);
        assert_eq!((g.pages_per_cell, g.cols, g.cell_px), (1, 64, 16));
        let panels = drawn_cells(&svg).unwrap();
        assert_eq!(panels.len(), 2);
        for (ppc, cells) in panels {
            assert_eq!(ppc, 1);
            let want: BTreeMap<String, u64> =
                m.pages_by_category().into_iter().map(|(c, n)| (c.to_string(), n)).collect();
            assert_eq!(cells, want, "a cell per page of each state");
        }
        // The chart's bars carry buddyinfo's counts.
        assert!(svg.contains(r#"data-zone="DMA" data-order="0" data-count="158""#), "{svg}");
    }

    #[test]
    fn large_maps_draw_blocks_of_pages() {
        let g = Grid::for_pages(6 << 18);
        assert_eq!(g.pages_per_cell, 8);
        assert!(g.rows * g.cols * g.pages_per_cell >= 6 << 18);
        let m = PageMap {
            label: "big".into(),
            end_pfn: 64,
            zones: vec![],
            caches: vec![],
            runs: vec![
                Run { start: 0, pages: 3, kind: Kind::Kernel },
                Run { start: 3, pages: 61, kind: Kind::Free(0) },
            ],
        };
        let cells = cell_runs(&m, Grid { pages_per_cell: 4, cols: 64, cell_px: 16, rows: 1 });
        assert_eq!(cells, [(0, 1, Kind::Kernel), (1, 15, Kind::Free(0))], "a cell shows most of its pages");
    }

    #[test]
    fn the_watcher_writes_named_blocks_only() {
        let dir = std::env::temp_dir().join(format!("memmap-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = BlockWatcher::new(dir.clone());
        let named = BLOCK.replace("after boot", "pic.svg").replace('\n', "\r\n");
        w.feed(b"mm> memmap\r\n");
        w.feed(named.as_bytes());
        w.feed(b"\r\n$ memmap ../evil.svg\r\nmore\r\n\r\n");
        assert!(dir.join("pic.svg").is_file());
        assert!(!dir.join("../evil.svg").exists());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!valid_svg_name("a/b.svg") && !valid_svg_name(".svg") && !valid_svg_name("x.png"));
    }
}
