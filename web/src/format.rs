//! Formatting of sizes, times, statuses and prices for display. Integer arithmetic on purpose:
//! float formatting and chrono's `strftime` would each add kilobytes to the wasm.

use chrono::{DateTime, Datelike, Timelike, Utc};
use nimbus_domain::{InstanceStatus, JobStatus};

/// `value / unit` with one decimal, rounded: `tenths(1536, 1024)` → `1.5`.
fn tenths(value: u64, unit: u64) -> String {
    let t = (value * 10 + unit / 2) / unit;
    format!("{}.{}", t / 10, t % 10)
}

/// `1536` MiB → `1.5 GiB`.
pub fn mib(v: i64) -> String {
    if v >= 1024 && v % 1024 == 0 {
        format!("{} GiB", v / 1024)
    } else if v >= 1024 {
        format!("{} GiB", tenths(v as u64, 1024))
    } else {
        format!("{v} MiB")
    }
}

/// Bytes → the largest unit that keeps the number ≥ 1.
pub fn bytes(v: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    while unit < UNITS.len() - 1 && v >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    if unit == 0 { format!("{v} B") } else { format!("{} {}", tenths(v, 1u64 << (10 * unit)), UNITS[unit]) }
}

/// Percentage, 0-100; 0 when the total is 0.
pub fn percent(part: f64, total: f64) -> f64 {
    if total <= 0.0 { 0.0 } else { (part / total * 100.0).clamp(0.0, 100.0) }
}

/// A percentage as a whole number, for text and styles.
pub fn whole(p: f64) -> i64 {
    p.round() as i64
}

/// `2026-11-26 10:00 UTC`.
pub fn time(t: &DateTime<Utc>) -> String {
    format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), t.month(), t.day(), t.hour(), t.minute())
}

/// An RFC 3339 time as the API writes it, shown like [`time`] (as written when it is not one).
pub fn time_str(s: &str) -> String {
    s.parse::<DateTime<chrono::FixedOffset>>().map(|t| time(&t.with_timezone(&Utc))).unwrap_or_else(|_| s.to_owned())
}

/// How long before `now` (Unix seconds) an RFC 3339 time was, in its largest unit: `just now`,
/// `5 min ago`, `3 h ago`, `2 d ago` (as written when it is not a time).
pub fn ago(s: &str, now: i64) -> String {
    let Ok(t) = s.parse::<DateTime<chrono::FixedOffset>>() else { return s.to_owned() };
    let secs = now - t.timestamp();
    match secs {
        ..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// A billing period as the API writes it (RFC 3339, its end excluded) as the days it covers:
/// `2026-11-01 – 2026-11-30` (a time that is not one is shown as written).
pub fn period(start: &str, end: &str) -> String {
    let day = |s: &str, back: i64| {
        s.parse::<DateTime<chrono::FixedOffset>>()
            .map(|t| {
                let t = t.with_timezone(&Utc) - chrono::Duration::seconds(back);
                format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
            })
            .unwrap_or_else(|_| s.to_owned())
    };
    format!("{} – {}", day(start, 0), day(end, 1))
}

/// The serde name of a status (`running`), used for text and CSS classes.
pub fn instance_status(s: InstanceStatus) -> &'static str {
    s.as_str()
}

/// The serde name of a job status.
pub fn job_status(s: JobStatus) -> &'static str {
    s.as_str()
}

/// A duration in seconds, to the largest two units: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// The first 8 characters of an id, for tables.
pub fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(mib(512), "512 MiB");
        assert_eq!(mib(2048), "2 GiB");
        assert_eq!(mib(1536), "1.5 GiB");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(percent(1.0, 0.0), 0.0);
        assert_eq!(percent(5.0, 4.0), 100.0);
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(whole(99.6), 100);
        assert_eq!(short_id("01a217b7-cec9-7448"), "01a217b7");
        let t = DateTime::parse_from_rfc3339("2026-11-26T09:05:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(time(&t), "2026-11-26 09:05 UTC");
        assert_eq!(time_str("2026-12-07T03:00:00Z"), "2026-12-07 03:00 UTC");
        assert_eq!(time_str("soon"), "soon");
        assert_eq!(period("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"), "2026-11-01 – 2026-11-30");
        assert_eq!(period("2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00Z"), "2026-12-01 – 2026-12-31");
    }

    #[test]
    fn ages_keep_their_largest_unit() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap().timestamp();
        assert_eq!(ago("2026-12-06T11:59:30Z", now), "just now");
        assert_eq!(ago("2026-12-06T12:00:05Z", now), "just now", "a clock a little behind the server's");
        assert_eq!(ago("2026-12-06T11:55:00+00:00", now), "5 min ago");
        assert_eq!(ago("2026-12-06T08:59:00Z", now), "3 h ago");
        assert_eq!(ago("2026-12-04T11:00:00Z", now), "2 d ago");
        assert_eq!(ago("soon", now), "soon");
    }

    #[test]
    fn durations_keep_two_units() {
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(12 * 60 + 5), "12 min");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3 h 5 min");
        assert_eq!(duration(2 * 86_400 + 4 * 3600 + 59), "2 d 4 h");
        assert_eq!(duration(-3), "0 s");
    }
}
