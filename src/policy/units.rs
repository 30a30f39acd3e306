//! Parsing of the human units policy files use: durations (`90m`, `14d`,
//! `1h30m`), sizes (`200MiB`), rates (`100MiB/s`) and daily windows
//! (`22:00-06:00`). Everything is parsed at load time so nothing later has to
//! guess what a bare number meant.

use std::time::Duration;

/// The forms a duration accepts, used verbatim in hints.
pub const DURATION_FORMS: &str = "a number and a unit, several may follow each other: s, m (minutes), h, d, w, y (365d); e.g. `90m`, `4h`, `14d`, `1h30m`";
/// The forms a size accepts, used verbatim in hints.
pub const SIZE_FORMS: &str = "a number and a unit: B, KiB, MiB, GiB, TiB (powers of 1024) or kB, MB, GB, TB (powers of 1000); e.g. `4MiB`, `200GiB`";
/// The forms a rate accepts, used verbatim in hints.
pub const RATE_FORMS: &str = "a size per second: e.g. `100MiB/s`, `1GB/s`";
/// The form a backup window takes.
pub const WINDOW_FORMS: &str =
    "`HH:MM-HH:MM` in the policy time zone, e.g. `22:00-06:00` (may cross midnight)";

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// A throughput limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub bytes_per_second: u64,
}

/// A daily window in local wall-clock minutes since midnight; `start > end`
/// means the window crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    pub start_minute: u32,
    pub end_minute: u32,
}

impl DailyWindow {
    /// Whether a local wall-clock minute of the day falls inside the window.
    pub fn contains(&self, minute_of_day: u32) -> bool {
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_minute || minute_of_day < self.end_minute
        }
    }
}

/// Parses an RFC 3339 time (`2026-11-25T01:00:00Z`), as an instant.
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, chrono::ParseError> {
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&chrono::Utc))
}

/// Parses an RFC 3339 time given on the command line; an error says the
/// form expected.
pub fn parse_time_arg(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    parse_time(text).map_err(|e| format!("{e}: expected RFC 3339, e.g. 2026-11-25T01:00:00Z"))
}

/// Parses the time an action may take: a duration in whole seconds, at
/// least one.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_duration(text).map(|d| Duration::from_secs(d.as_secs().max(1)))
}

/// Parses `1h30m`-style durations. Zero is allowed here; callers that need a
/// positive duration check it themselves with a message of their own.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("`{text}` is not a duration"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds_per_unit: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "y" => 365 * 86_400,
            "" if rest.starts_with(' ') => {
                return Err(format!(
                    "`{text}` has a space; durations are written without spaces, e.g. `4h`"
                ));
            }
            "" => return Err(format!("`{text}` has a number without a unit")),
            other => return Err(format!("`{other}` is not a duration unit")),
        };
        total = number
            .checked_mul(seconds_per_unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("`{text}` is too long"))?;
    }
    Ok(Duration::from_secs(total))
}

/// An instant as people read it: in the policy's time zone `zone`, to the
/// minute, with the offset (`2026-11-25 02:00 +01:00`).
pub fn format_time(zone: chrono_tz::Tz, t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M %:z")
        .to_string()
}

/// Renders a duration back in the largest exact units, e.g. `1d2h`.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

/// Renders a byte count for people: `512 B`, `4.0 MiB`, `1.5 TiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Parses `4MiB`, `200GB`, `512B`.
pub fn parse_size(text: &str) -> Result<ByteSize, String> {
    let t = text.trim();
    let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return Err(format!("`{text}` is not a size"));
    }
    let number: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("`{text}`: number too large"))?;
    let unit = t[digits..].trim();
    let multiplier: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "" => return Err(format!("`{text}` has no unit")),
        other => return Err(format!("`{other}` is not a size unit")),
    };
    number
        .checked_mul(multiplier)
        .map(ByteSize)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a pack size: a size within `repo::pack::SIZE_RANGE`, or `off`
/// (`None`: one object per chunk).
pub fn parse_pack_size(text: &str) -> Result<Option<u64>, String> {
    if text.trim() == "off" {
        return Ok(None);
    }
    let size = parse_size(text)?.0;
    if !crate::repo::pack::SIZE_RANGE.contains(&size) {
        return Err(format!(
            "`{text}` is out of range: from 256 KiB to 1 GiB, or `off`"
        ));
    }
    Ok(Some(size))
}

/// Parses `100MiB/s`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let Some(size) = text.trim().strip_suffix("/s") else {
        return Err(format!("`{text}` is not a rate (it must end in `/s`)"));
    };
    let size = parse_size(size)?;
    if size.0 == 0 {
        return Err("a rate of zero would stop all transfers".into());
    }
    Ok(Rate {
        bytes_per_second: size.0,
    })
}

/// Parses `22:00-06:00`.
pub fn parse_window(text: &str) -> Result<DailyWindow, String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not a window"))?;
    let minute = |s: &str| -> Result<u32, String> {
        let (h, m) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not HH:MM"))?;
        let h: u32 = h.parse().map_err(|_| format!("`{s}` is not HH:MM"))?;
        let m: u32 = m.parse().map_err(|_| format!("`{s}` is not HH:MM"))?;
        if h > 24 || m > 59 || (h == 24 && m != 0) {
            return Err(format!("`{s}` is not a time of day"));
        }
        Ok(h * 60 + m)
    };
    let start_minute = minute(a)?;
    let end_minute = minute(b)?;
    if start_minute == end_minute {
        return Err("an empty window never lets a backup start".into());
    }
    Ok(DailyWindow {
        start_minute,
        end_minute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_are_read_as_instants() {
        let t = parse_time("2026-12-02T01:30:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-02T00:30:00+00:00");
        assert!(parse_time("2026-12-02 01:30").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn times_are_shown_in_the_policy_zone_with_the_offset() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-02T00:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            format_time(chrono_tz::Europe::Berlin, t),
            "2026-12-02 01:30 +01:00"
        );
        assert_eq!(format_time(chrono_tz::UTC, t), "2026-12-02 00:30 +00:00");
        // Summer time moves the offset, not the instant.
        let summer = t + chrono::Duration::days(200);
        assert_eq!(
            format_time(chrono_tz::Europe::Berlin, summer),
            "2027-06-20 02:30 +02:00"
        );
    }

    #[test]
    fn durations_parse_and_compose() {
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert!(parse_duration("14").is_err());
        assert!(parse_duration("14 days").is_err());
        assert!(parse_duration("4hours").is_err());
        assert!(parse_duration("-4h").is_err());
        assert!(parse_duration("99999999999999999999y").is_err());
        assert_eq!(format_duration(Duration::from_secs(93_600)), "1d2h");
    }

    #[test]
    fn sizes_and_rates_parse() {
        assert_eq!(parse_size("4MiB").unwrap(), ByteSize(4 << 20));
        assert_eq!(parse_size("200GB").unwrap(), ByteSize(200_000_000_000));
        assert!(parse_size("4mb").is_err());
        assert!(parse_size("4").is_err());
        assert_eq!(parse_rate("100MiB/s").unwrap().bytes_per_second, 100 << 20);
        assert!(parse_rate("100MiB").is_err());
        assert!(parse_rate("0B/s").is_err());
    }

    #[test]
    fn windows_cross_midnight() {
        let w = parse_window("22:00-06:00").unwrap();
        assert!(w.contains(23 * 60));
        assert!(w.contains(5 * 60 + 59));
        assert!(!w.contains(6 * 60));
        assert!(!w.contains(12 * 60));
        let d = parse_window("01:00-05:00").unwrap();
        assert!(d.contains(60) && !d.contains(300));
        assert!(parse_window("25:00-01:00").is_err());
        assert!(parse_window("01:00-01:00").is_err());
    }
}
