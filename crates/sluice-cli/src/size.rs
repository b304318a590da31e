//! Byte sizes as people write them (`512MB`, `1.5GiB`, `64k`) and as the command prints
//! them. KB/MB/GB/TB are powers of 1024, the same as KiB/MiB/GiB/TiB and as the seed's
//! `max_memory_mb`; a bare number is bytes.

/// Parses a size such as `512MB`, `2GiB`, `1.5g` or `1048576` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err("expected a number followed by a unit, such as 512MB".into());
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a number"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let power = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 1,
        "m" | "mb" | "mib" => 2,
        "g" | "gb" | "gib" => 3,
        "t" | "tb" | "tib" => 4,
        other => {
            return Err(format!(
                "unknown unit {other:?}; use B, KB, MB, GB or TB (or KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = value * 1024f64.powi(power);
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err("must be at least 1 byte".into());
    }
    Ok(bytes as u64)
}

/// `1.5 MiB`, `912 B`: a byte count for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5gib"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("MB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0MB").is_err());
        assert!(parse_size("1.2.3MB").is_err());
    }

    #[test]
    fn prints_sizes() {
        assert_eq!(human_bytes(912), "912 B");
        assert_eq!(human_bytes(3 << 19), "1.5 MiB");
    }
}
