//! Time without a clock: instants as milliseconds since the Unix epoch (UTC), Go-style duration
//! parsing (`1h30m`, `90s`, `1.5h`), and the calendar arithmetic cron schedules need.

use std::fmt;
use std::time::Duration;

/// An instant, in milliseconds since 1970-01-01T00:00:00Z. Callers pass `now` explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl From<std::time::SystemTime> for Timestamp {
    /// The instant of a system time (before the epoch: the epoch; beyond `i64` milliseconds:
    /// the largest timestamp).
    fn from(t: std::time::SystemTime) -> Self {
        Timestamp(
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

impl Timestamp {
    /// From whole seconds since the epoch.
    #[must_use]
    pub fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    /// From a UTC calendar date and time of day.
    #[must_use]
    pub fn from_utc(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Self {
        let days = days_from_civil(year, month, day);
        Timestamp::from_secs(
            days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second),
        )
    }

    /// Milliseconds since the epoch.
    #[must_use]
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus `d` (saturating).
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// This instant minus `d` (saturating).
    #[must_use]
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// The UTC calendar fields `(year, month 1-12, day 1-31, hour, minute, second, weekday 0=Sunday)`.
    #[must_use]
    pub fn civil(self) -> Civil {
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: u32::try_from(rem / 3600).unwrap_or(0),
            minute: u32::try_from((rem % 3600) / 60).unwrap_or(0),
            second: u32::try_from(rem % 60).unwrap_or(0),
            // 1970-01-01 was a Thursday (4).
            weekday: u32::try_from((days + 4).rem_euclid(7)).unwrap_or(0),
        }
    }
}

/// A timestamp that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 time {input:?} (expected e.g. 2026-12-01T12:00:00Z)")]
pub struct TimeError {
    /// The text.
    pub input: String,
}

impl std::str::FromStr for Timestamp {
    type Err = TimeError;

    /// Parse RFC 3339 (`2026-12-01T12:00:00Z`, `2026-12-01T14:00:00.5+02:00`); fractions beyond
    /// milliseconds are truncated.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || TimeError {
            input: input.to_string(),
        };
        let b = input.as_bytes();
        if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, TimeError> {
            let t = input.get(r).ok_or_else(err)?;
            if !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            t.parse().map_err(|_| err())
        };
        if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return Err(err());
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(err());
        }
        let mut i = 19;
        let mut millis = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err());
            }
            let frac = &input[start..i.min(start + 3)];
            millis = frac.parse::<i64>().map_err(|_| err())?
                * 10i64.pow(3 - u32::try_from(frac.len()).unwrap_or(3));
        }
        let offset_secs: i64 = match &input[i..] {
            "Z" | "z" => 0,
            o if o.len() == 6
                && (o.starts_with('+') || o.starts_with('-'))
                && o.as_bytes()[3] == b':' =>
            {
                let h = i64::from(num(i + 1..i + 3)?);
                let m = i64::from(num(i + 4..i + 6)?);
                let sign = if o.starts_with('-') { -1 } else { 1 };
                sign * (h * 3600 + m * 60)
            }
            _ => return Err(err()),
        };
        let t = Timestamp::from_utc(i64::from(year), month, day, hour, minute, second.min(59));
        Ok(Timestamp(t.0 + millis - offset_secs * 1000))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, with milliseconds only when they are not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.civil();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )?;
        let ms = self.0.rem_euclid(1000);
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        f.write_str("Z")
    }
}

/// UTC calendar fields of a [`Timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year.
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
    /// Minute, 0–59.
    pub minute: u32,
    /// Second, 0–59.
    pub second: u32,
    /// Day of week, 0 = Sunday.
    pub weekday: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
#[must_use]
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A Go duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    /// The text.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// Parse a Go `time.Duration` string (`300ms`, `1.5h`, `2h45m`; units `ns us µs ms s m h`).
/// Negative durations are rejected (nothing in disruption can use them).
///
/// # Errors
/// [`DurationError`] when the text is not a non-negative Go duration.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let mut s = input.strip_prefix('+').unwrap_or(input);
    if s.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total_nanos: f64 = 0.0;
    while !s.is_empty() {
        let num_len = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let value: f64 = s[..num_len].parse().map_err(|_| err("bad number"))?;
        s = &s[num_len..];
        let unit_len = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let scale = match &s[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err("unknown unit")),
        };
        s = &s[unit_len..];
        total_nanos += value * scale;
    }
    if !total_nanos.is_finite() || total_nanos > 9.2e18 {
        return Err(err("overflow"));
    }
    // Go truncates fractional nanoseconds.
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// Format a duration the way Go prints it (`1h30m0s`), whole seconds only.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_across_eras_and_leap_days() {
        for &(y, mo, d) in &[(1970, 1, 1), (2000, 2, 29), (2024, 12, 31), (1969, 12, 31)] {
            let t = Timestamp::from_utc(y, mo, d, 13, 5, 9);
            let c = t.civil();
            assert_eq!(
                (c.year, c.month, c.day, c.hour, c.minute, c.second),
                (y, mo, d, 13, 5, 9)
            );
        }
        // 2026-12-01 is a Tuesday.
        assert_eq!(Timestamp::from_utc(2026, 12, 1, 0, 0, 0).civil().weekday, 2);
        assert_eq!(
            Timestamp::from_utc(2026, 12, 1, 12, 0, 15).to_string(),
            "2026-12-01T12:00:15Z"
        );
    }

    #[test]
    fn rfc3339_parses_offsets_and_fractions() {
        let t: Timestamp = "2026-12-01T12:00:15Z".parse().unwrap();
        assert_eq!(t, Timestamp::from_utc(2026, 12, 1, 12, 0, 15));
        let t: Timestamp = "2026-12-01T14:00:15.25+02:00".parse().unwrap();
        assert_eq!(
            t,
            Timestamp::from_utc(2026, 12, 1, 12, 0, 15).plus(Duration::from_millis(250))
        );
        for bad in [
            "",
            "2026-12-01",
            "2026-13-01T00:00:00Z",
            "2026-12-01T00:00:00",
            "2026-12-01T00:00:00+0200",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("300ms").unwrap(),
            Duration::from_millis(300)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "true", "10", "-5m", "5x", "h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m0s");
    }
}
