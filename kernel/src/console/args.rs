//! Arguments of console commands: numbers, sizes, addresses and GFP flags as a Linux reader
//! writes them.

use ::mm::GfpFlags;

/// A number: decimal, or hexadecimal with `0x`.
pub fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None => s.parse().ok(),
    }
}

/// A size in bytes: a number with an optional binary suffix `K`, `M`, `G` (KiB, MiB, GiB).
pub fn parse_size(s: &str) -> Option<usize> {
    let (num, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n = parse_u64(num)?;
    usize::try_from(n.checked_mul(1 << shift)?).ok()
}

/// GFP flags: names joined by `|` (`GFP_KERNEL|__GFP_ZERO`, any case), or a number.
pub fn parse_gfp(s: &str) -> Result<GfpFlags, &str> {
    if let Some(bits) = parse_u64(s) {
        let bits = u32::try_from(bits).map_err(|_| s)?;
        return GfpFlags::from_bits(bits).ok_or(s);
    }
    let mut flags = GfpFlags::empty();
    for part in s.split('|') {
        let part = part.trim();
        let mut upper = [0u8; 32];
        if part.is_empty() || part.len() > upper.len() {
            return Err(part);
        }
        for (u, b) in upper.iter_mut().zip(part.bytes()) {
            *u = b.to_ascii_uppercase();
        }
        let name = core::str::from_utf8(&upper[..part.len()]).map_err(|_| part)?;
        flags |= GfpFlags::from_name(name).ok_or(part)?;
    }
    Ok(flags)
}

crate::ktest!(
    fn numbers_sizes_and_gfp_flags_parse_as_written() {
        assert_eq!(parse_u64("4096"), Some(4096));
        assert_eq!(parse_u64("0xffff800001000000"), Some(0xffff_8000_0100_0000));
        assert_eq!(parse_u64("0x"), None);
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_u64("12k"), None);
        assert_eq!(parse_size("3000"), Some(3000));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("4m"), Some(4 << 20));
        assert_eq!(parse_size("0x10K"), Some(16 << 10));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
        assert_eq!(parse_gfp("GFP_KERNEL"), Ok(GfpFlags::GFP_KERNEL));
        assert_eq!(parse_gfp("gfp_dma"), Ok(GfpFlags::GFP_DMA));
        assert_eq!(
            parse_gfp("GFP_KERNEL|__GFP_ZERO | __GFP_NOWARN"),
            Ok(GfpFlags::GFP_KERNEL | GfpFlags::__GFP_ZERO | GfpFlags::__GFP_NOWARN)
        );
        assert_eq!(parse_gfp("0xcc0"), Ok(GfpFlags::GFP_KERNEL));
        assert_eq!(parse_gfp("GFP_KERNEL|GFP_BOGUS"), Err("GFP_BOGUS"));
        assert_eq!(parse_gfp("0x80000000"), Err("0x80000000"), "bits the kernel does not define");
        assert_eq!(parse_gfp("GFP_KERNEL|"), Err(""));
    }
);
