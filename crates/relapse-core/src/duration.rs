//! Durations as scenario files write them: `"250ms"`, `"30s"`, `"2m"`, `"1.5s"`.
//!
//! Hand-written rather than `humantime::parse_duration` so that the accepted forms are exactly the
//! documented ones (one number, one unit) and the error says what was expected.

use std::time::Duration;

/// Parses a duration written as a number (integer or decimal) followed by one unit:
/// `us`, `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected =
        "expected a number followed by a unit (us, ms, s, m, h), e.g. \"250ms\" or \"30s\"";
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(format!("invalid duration \"{text}\": {expected}"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration \"{text}\": {expected}"))?;
    let seconds_per_unit = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => {
            return Err(format!(
                "invalid duration \"{text}\": missing unit; {expected}"
            ))
        }
        other => {
            return Err(format!(
                "invalid duration \"{text}\": unknown unit \"{other}\"; {expected}"
            ))
        }
    };
    let seconds = value * seconds_per_unit;
    // A week is far beyond any scenario; the bound keeps the conversion exact and finite.
    if !seconds.is_finite() || seconds > 7.0 * 24.0 * 3600.0 {
        return Err(format!("invalid duration \"{text}\": longer than a week"));
    }
    Ok(Duration::from_nanos((seconds * 1e9).round() as u64))
}

/// Formats a duration the way scenario files write it, choosing the largest exact unit.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0ms".to_string();
    }
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
    ] {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    if nanos % 1_000 == 0 {
        return format!("{}us", nanos / 1_000);
    }
    format!("{:.3}ms", nanos as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_it_cannot_read_and_says_what_was_expected() {
        for bad in [
            "",
            "ms",
            "10",
            "10 parsecs",
            "1.2.3s",
            "-5s",
            "1e3s",
            "9999h",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.starts_with("invalid duration"), "{bad}: {err}");
        }
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("3 weeks")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1500us");
    }
}
