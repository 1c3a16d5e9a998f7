//! Small deterministic helpers: seeded hashing (stable across builds, unlike `StdRng`),
//! clock access and PVE's size notation.

use std::time::{SystemTime, UNIX_EPOCH};

/// splitmix64 finaliser: a good, cheap 64-bit mixer.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Deterministic hash of a seed and a list of parts (FNV-1a over the bytes, then mixed).
pub fn hash_parts(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ mix64(seed);
    for part in parts {
        for b in part.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// A deterministic value in `[0, 1)` from a seed and parts.
pub fn unit(seed: u64, parts: &[&[u8]]) -> f64 {
    (hash_parts(seed, parts) >> 11) as f64 / (1u64 << 53) as f64
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Current unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// PVE's `format_size`: the largest unit that divides the size exactly (`32G`, `512M`, `4096`).
pub fn format_size(size: u64) -> String {
    for (unit, suffix) in [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")] {
        if size >= unit && size.is_multiple_of(unit) {
            return format!("{}{}", size / unit, suffix);
        }
    }
    size.to_string()
}

/// PVE's `parse_size`: `<number>[K|M|G|T][iB]` to bytes.
pub fn parse_size(value: &str) -> Option<u64> {
    let (num, unit) = match value.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "" => 1,
        "K" | "KiB" => KIB,
        "M" | "MiB" => MIB,
        "G" | "GiB" => GIB,
        "T" | "TiB" => TIB,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_like_pve() {
        assert_eq!(format_size(32 * GIB), "32G");
        assert_eq!(format_size(512 * MIB), "512M");
        assert_eq!(format_size(1536 * MIB), "1536M");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(parse_size("32G"), Some(32 * GIB));
        assert_eq!(parse_size("1.5G"), Some(1536 * MIB));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2X"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn hashing_is_deterministic_and_seeded() {
        assert_eq!(hash_parts(1, &[b"a"]), hash_parts(1, &[b"a"]));
        assert_ne!(hash_parts(1, &[b"a"]), hash_parts(2, &[b"a"]));
        assert_ne!(hash_parts(1, &[b"ab"]), hash_parts(1, &[b"a", b"b"]));
        let u = unit(7, &[b"x"]);
        assert!((0.0..1.0).contains(&u));
    }
}
