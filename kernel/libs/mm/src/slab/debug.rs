//! Slab debugging as SLUB's `slab_debug`: poison, red zones, store-user tracks, and the parser of
//! the `slab_debug=` boot option.
//!
//! All functions here work on raw object pointers of a slab the caller holds the cache lock of.

use core::panic::Location;
use core::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use super::layout::CacheGeom;
use super::{Corruption, CorruptionKind, SlabFlags};

/// Byte of a free object (`POISON_FREE`).
pub const POISON_FREE: u8 = 0x6b;
/// Last byte of a free object (`POISON_END`).
pub const POISON_END: u8 = 0xa5;
/// Red zone of a free object (`SLUB_RED_INACTIVE`).
pub const RED_INACTIVE: u8 = 0xbb;
/// Red zone of an allocated object (`SLUB_RED_ACTIVE`).
pub const RED_ACTIVE: u8 = 0xcc;

static REPORT_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the function that reports damage found while allocating (a free object's poison or
/// red zone, a corrupt free pointer): the object is isolated, never handed out, and nobody is
/// told unless this function is. The kernel prints Linux's `BUG cache (Not tainted): ...` report.
/// Damage found while freeing is returned to the caller (`SlabError::Corrupted`) instead.
pub fn set_corruption_report_fn(f: fn(&Corruption)) {
    REPORT_FN.store(f as *mut (), Relaxed);
}

/// Reports `c` through the installed function, if any.
#[cold]
pub(crate) fn report_corruption(c: &Corruption) {
    let f = REPORT_FN.load(Relaxed);
    if !f.is_null() {
        // SAFETY: only `set_corruption_report_fn` stores here, and it stores a `fn(&Corruption)`.
        let f = unsafe { core::mem::transmute::<*mut (), fn(&Corruption)>(f) };
        f(c);
    }
}

/// `__OBJECT_POISON`: poison applies only when nothing must survive in a free object.
pub fn poisons(g: &CacheGeom, has_ctor: bool) -> bool {
    g.flags.contains(SlabFlags::SLAB_POISON) && !has_ctor
}

/// The requested size of a kmalloc object (the whole object if not tracked).
///
/// # Safety
/// `obj` is an object of a slab with geometry `g`, owned by the caller's locked cache.
pub unsafe fn orig_size(g: &CacheGeom, obj: *mut u8) -> u32 {
    if g.orig_size_offset == 0 {
        return g.object_size;
    }
    // SAFETY: the orig_size word is inside the slot (layout), which the caller owns.
    unsafe { obj.add(g.orig_size_offset as usize).cast::<u32>().read_unaligned() }
}

/// # Safety
/// As [`orig_size`].
pub unsafe fn set_orig_size(g: &CacheGeom, obj: *mut u8, size: u32) {
    if g.orig_size_offset != 0 {
        // SAFETY: as in `orig_size`.
        unsafe { obj.add(g.orig_size_offset as usize).cast::<u32>().write_unaligned(size) }
    }
}

/// `init_object`: poison (free objects only, or everything before handing out as SLUB does) and
/// red zones with `val`; with kmalloc tracking, the tail past `orig` is red zone too.
///
/// # Safety
/// As [`orig_size`].
pub unsafe fn init_object(g: &CacheGeom, has_ctor: bool, obj: *mut u8, val: u8) {
    let red = g.flags.contains(SlabFlags::SLAB_RED_ZONE);
    let mut poison_size = g.object_size as usize;
    // SAFETY (whole function): every range written lies inside the slot of `obj`: the left red
    // zone precedes it by `red_left_pad`, the object and right red zone end at `inuse`.
    unsafe {
        if red {
            obj.sub(g.red_left_pad as usize).write_bytes(val, g.red_left_pad as usize);
            if val == RED_ACTIVE && g.orig_size_offset != 0 {
                poison_size = orig_size(g, obj) as usize;
            }
        }
        if poisons(g, has_ctor) && poison_size > 0 {
            obj.write_bytes(POISON_FREE, poison_size - 1);
            obj.add(poison_size - 1).write(POISON_END);
        }
        if red {
            obj.add(poison_size).write_bytes(val, g.inuse as usize - poison_size);
        }
    }
}

fn first_bad(start: *const u8, len: usize, expected: impl Fn(usize) -> u8) -> Option<(usize, u8, u8)> {
    (0..len).find_map(|i| {
        // SAFETY: callers pass ranges inside a slot they own.
        let v = unsafe { start.add(i).read() };
        let e = expected(i);
        (v != e).then_some((i, v, e))
    })
}

/// `check_object`: red zones equal `val`, and for a free object (`val == RED_INACTIVE`) the poison.
///
/// # Safety
/// As [`orig_size`].
pub unsafe fn check_object(
    g: &CacheGeom,
    has_ctor: bool,
    name: &'static str,
    obj: *mut u8,
    val: u8,
) -> Result<(), Corruption> {
    let report = |kind, start: *const u8, i: usize, found: u8, expected: u8| {
        let bad = start as usize + i;
        // SAFETY: `obj` is an object of this geometry (caller contract).
        let (alloc_at, free_at) = unsafe { get_track(g, obj) };
        Corruption {
            cache: name,
            kind,
            object: obj as usize,
            bad_addr: bad,
            offset: bad as isize - obj as isize,
            found: found as u64,
            expected: expected as u64,
            alloc_at,
            free_at,
        }
    };
    let red = g.flags.contains(SlabFlags::SLAB_RED_ZONE);
    // SAFETY (whole block): all ranges read lie inside the slot of `obj`.
    unsafe {
        if red {
            let left = obj.sub(g.red_left_pad as usize);
            if let Some((i, v, e)) = first_bad(left, g.red_left_pad as usize, |_| val) {
                return Err(report(CorruptionKind::LeftRedzone, left, i, v, e));
            }
            let mut tail_start = g.object_size as usize;
            if val == RED_ACTIVE && g.orig_size_offset != 0 {
                let orig = orig_size(g, obj) as usize;
                let tail = obj.add(orig);
                if let Some((i, v, e)) = first_bad(tail, g.object_size as usize - orig, |_| val) {
                    return Err(report(CorruptionKind::KmallocTail, tail, i, v, e));
                }
                tail_start = g.object_size as usize;
            }
            let right = obj.add(tail_start);
            if let Some((i, v, e)) = first_bad(right, g.inuse as usize - tail_start, |_| val) {
                return Err(report(CorruptionKind::RightRedzone, right, i, v, e));
            }
        }
        if val == RED_INACTIVE && poisons(g, has_ctor) && g.object_size > 0 {
            let n = g.object_size as usize;
            let expect = |i| if i == n - 1 { POISON_END } else { POISON_FREE };
            if let Some((i, v, e)) = first_bad(obj, n, expect) {
                return Err(report(CorruptionKind::Poison, obj, i, v, e));
            }
        }
    }
    Ok(())
}

/// Records where the object was allocated (`free == false`) or freed.
///
/// # Safety
/// As [`orig_size`].
pub unsafe fn set_track(g: &CacheGeom, obj: *mut u8, free: bool, loc: &'static Location<'static>) {
    if g.track_offset == 0 {
        return;
    }
    let slot = g.track_offset as usize + if free { 8 } else { 0 };
    // SAFETY: the track records are inside the slot. The pointer is stored with its provenance
    // (a typed pointer write), so it can be read back as a reference.
    unsafe { obj.add(slot).cast::<*const Location<'static>>().write_unaligned(loc) }
}

/// Clears both tracks (a fresh slab: never allocated or freed).
///
/// # Safety
/// As [`orig_size`].
pub unsafe fn clear_track(g: &CacheGeom, obj: *mut u8) {
    if g.track_offset != 0 {
        // SAFETY: as in `set_track`.
        unsafe { obj.add(g.track_offset as usize).write_bytes(0, super::layout::TRACK_SIZE as usize) }
    }
}

/// The last alloc and free locations, if recorded.
///
/// # Safety
/// As [`orig_size`]; the tracks were written only by `set_track`/`clear_track` (a corrupted track
/// is not detectable and must not happen: it is outside the object and its red zones).
pub unsafe fn get_track(
    g: &CacheGeom,
    obj: *mut u8,
) -> (Option<&'static Location<'static>>, Option<&'static Location<'static>>) {
    if g.track_offset == 0 {
        return (None, None);
    }
    // SAFETY: the words hold null or a `&'static Location` stored by `set_track`.
    unsafe {
        let p = obj.add(g.track_offset as usize).cast::<*const Location<'static>>();
        (p.read_unaligned().as_ref(), p.add(1).read_unaligned().as_ref())
    }
}

/// Up to this many `slab_debug` rules are kept.
pub const MAX_RULES: usize = 8;

/// The parsed `slab_debug=` option: rules of debug flags, each for all caches or a list of names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabDebugConfig {
    rules: [Option<(SlabFlags, Option<&'static str>)>; MAX_RULES],
}

impl SlabDebugConfig {
    /// No debugging.
    pub const NONE: SlabDebugConfig = SlabDebugConfig { rules: [None; MAX_RULES] };

    /// Debug flags for a cache named `name` (the last matching rule wins, as in Linux).
    pub fn flags_for(&self, name: &str) -> SlabFlags {
        let mut flags = SlabFlags::empty();
        for (f, names) in self.rules.iter().flatten() {
            match names {
                None => flags = *f,
                Some(list) => {
                    if list.split(',').any(|pat| glob_match(pat, name)) {
                        flags = *f;
                    }
                }
            }
        }
        flags
    }
}

fn glob_match(pat: &str, name: &str) -> bool {
    match pat.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pat == name,
    }
}

/// Why `slab_debug=` could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabDebugParseError {
    /// An unknown flag letter.
    UnknownFlag(char),
    /// More than [`MAX_RULES`] `;`-separated rules.
    TooManyRules,
    /// A cache list with an empty name (`FZ,,x`).
    EmptyName,
}

impl core::fmt::Display for SlabDebugParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SlabDebugParseError::UnknownFlag(c) => write!(f, "slab_debug: unknown flag '{c}' (known: FZPU-)"),
            SlabDebugParseError::TooManyRules => write!(f, "slab_debug: more than {MAX_RULES} rules"),
            SlabDebugParseError::EmptyName => write!(f, "slab_debug: empty cache name in list"),
        }
    }
}

/// Parses the value of `slab_debug=` (Linux syntax): `;`-separated rules `FLAGS[,cache[,cache]]`.
/// Flags: `F` consistency checks, `Z` red zone, `P` poison, `U` store user, `-` none; an empty
/// flag string means `FZPU`. Without cache names a rule applies to all caches; names may end in
/// `*` (prefix match). The value `""` (bare `slab_debug`) enables everything everywhere.
pub fn parse_slab_debug(s: &'static str) -> Result<SlabDebugConfig, SlabDebugParseError> {
    let mut cfg = SlabDebugConfig::NONE;
    let mut n = 0;
    for rule in s.split(';') {
        if rule.is_empty() && n > 0 {
            continue;
        }
        if n == MAX_RULES {
            return Err(SlabDebugParseError::TooManyRules);
        }
        let (flag_str, names) = match rule.split_once(',') {
            Some((f, names)) => (f, Some(names)),
            None => (rule, None),
        };
        let mut flags = SlabFlags::empty();
        if flag_str.is_empty() {
            flags = SlabFlags::DEBUG;
        }
        for c in flag_str.chars() {
            flags |= match c.to_ascii_uppercase() {
                'F' => SlabFlags::SLAB_CONSISTENCY_CHECKS,
                'Z' => SlabFlags::SLAB_RED_ZONE,
                'P' => SlabFlags::SLAB_POISON,
                'U' => SlabFlags::SLAB_STORE_USER,
                '-' => SlabFlags::empty(),
                _ => return Err(SlabDebugParseError::UnknownFlag(c)),
            };
        }
        if let Some(names) = names {
            if names.split(',').any(str::is_empty) {
                return Err(SlabDebugParseError::EmptyName);
            }
        }
        cfg.rules[n] = Some((flags, names));
        n += 1;
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_linux_syntax() {
        let all = parse_slab_debug("FZPU").unwrap();
        assert_eq!(all.flags_for("anything"), SlabFlags::DEBUG);
        assert_eq!(parse_slab_debug("").unwrap().flags_for("x"), SlabFlags::DEBUG);
        let one = parse_slab_debug("FZ,kmalloc-64").unwrap();
        assert_eq!(
            one.flags_for("kmalloc-64"),
            SlabFlags::SLAB_CONSISTENCY_CHECKS | SlabFlags::SLAB_RED_ZONE
        );
        assert_eq!(one.flags_for("kmalloc-32"), SlabFlags::empty());
        let multi = parse_slab_debug("P,dma-kmalloc-*;U,foo,bar").unwrap();
        assert_eq!(multi.flags_for("dma-kmalloc-8"), SlabFlags::SLAB_POISON);
        assert_eq!(multi.flags_for("bar"), SlabFlags::SLAB_STORE_USER);
        assert_eq!(multi.flags_for("kmalloc-8"), SlabFlags::empty());
        let off = parse_slab_debug("FZPU;-,kmalloc-8").unwrap();
        assert_eq!(off.flags_for("kmalloc-8"), SlabFlags::empty());
        assert_eq!(off.flags_for("kmalloc-16"), SlabFlags::DEBUG);
    }

    #[test]
    fn rejects_bad_options() {
        assert_eq!(parse_slab_debug("FQ"), Err(SlabDebugParseError::UnknownFlag('Q')));
        assert_eq!(parse_slab_debug("F,a,,b"), Err(SlabDebugParseError::EmptyName));
        assert_eq!(parse_slab_debug("F;F;F;F;F;F;F;F;F"), Err(SlabDebugParseError::TooManyRules));
        assert!(parse_slab_debug("F;F").unwrap().flags_for("x").contains(SlabFlags::SLAB_CONSISTENCY_CHECKS));
    }
}
