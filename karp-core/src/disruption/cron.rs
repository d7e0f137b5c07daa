//! A small parser for the 5-field cron schedules of NodePool disruption budgets (UTC), with the
//! semantics of the library Karpenter uses (robfig/cron's standard parser): fields minute, hour,
//! day of month, month, day of week; `*`, `?`, lists, ranges, `/step`, month and weekday names
//! (`JAN`, `SUN`), and the macros `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//! `@midnight`, `@hourly`. When both day fields are restricted a day matches either of them;
//! when one is `*` both must match.
//!
//! ```
//! use karp_core::disruption::cron::Schedule;
//! use karp_core::disruption::Timestamp;
//!
//! let s: Schedule = "0 9 * * mon-fri".parse().unwrap();
//! let friday_night = Timestamp::from_utc(2026, 12, 4, 22, 0, 0);
//! assert_eq!(s.next_after(friday_night), Some(Timestamp::from_utc(2026, 12, 7, 9, 0, 0)));
//! ```

use std::str::FromStr;
use std::time::Duration;

use super::time::Timestamp;

/// A schedule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {input:?}: {reason}")]
pub struct CronError {
    /// The schedule text.
    pub input: String,
    /// What is wrong.
    pub reason: String,
}

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    dom_star: bool,
    dow_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far ahead [`Schedule::next_after`] looks before concluding a schedule never fires
/// (e.g. `0 0 30 2 *`); five years covers every leap-year pattern.
const SEARCH_DAYS: i64 = 366 * 5;

fn parse_value(s: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(min + u32::try_from(i).unwrap_or(0));
    }
    let v: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v < min || v > max {
        return Err(format!("{v} is outside {min}-{max}"));
    }
    Ok(v)
}

/// Parse one field into a bit set; returns (bits, whether it was `*` / `?`).
fn parse_field(field: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("bad step {s:?}"))?;
                if step == 0 {
                    return Err("step must be positive".into());
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            star = step.is_none() && field.split(',').count() == 1;
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, min, max, names)?,
                parse_value(b, min, max, names)?,
            )
        } else {
            let v = parse_value(range, min, max, names)?;
            // `5/10` means from 5 to the end in steps of 10.
            (v, if step.is_some() { max } else { v })
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} is empty"));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl FromStr for Schedule {
    type Err = CronError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| CronError {
            input: input.to_string(),
            reason,
        };
        let text = match input.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(err("unknown macro".into())),
            other => other,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!("expected 5 fields, found {}", fields.len())));
        }
        let (minutes, _) = parse_field(fields[0], 0, 59, &[]).map_err(&err)?;
        let (hours, _) = parse_field(fields[1], 0, 23, &[]).map_err(&err)?;
        let (days_of_month, dom_star) = parse_field(fields[2], 1, 31, &[]).map_err(&err)?;
        let (months, _) = parse_field(fields[3], 1, 12, &MONTHS).map_err(&err)?;
        let (days_of_week, dow_star) = parse_field(fields[4], 0, 6, &WEEKDAYS).map_err(&err)?;
        Ok(Schedule {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            dom_star,
            dow_star,
        })
    }
}

impl Schedule {
    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let dom = self.days_of_month & (1 << day) != 0;
        let dow = self.days_of_week & (1 << weekday) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first activation strictly after `t` (activations are whole minutes), or `None` when
    /// the schedule never fires within five years.
    #[must_use]
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        // First whole minute strictly after t.
        let start_min = t.0.div_euclid(60_000) + 1;
        let start_day = start_min.div_euclid(1440);
        let mut first_minute_of_day = start_min.rem_euclid(1440);
        for day in start_day..start_day + SEARCH_DAYS {
            let c = Timestamp(day * 86_400_000).civil();
            if self.months & (1 << c.month) != 0 && self.day_matches(c.day, c.weekday) {
                for m in first_minute_of_day..1440 {
                    let (h, mi) = (m / 60, m % 60);
                    if self.hours & (1 << h) != 0 && self.minutes & (1 << mi) != 0 {
                        return Some(Timestamp((day * 1440 + m) * 60_000));
                    }
                }
            }
            first_minute_of_day = 0;
        }
        None
    }

    /// Whether a window of `duration` opened by an activation is open at `now`: some activation
    /// `a` has `now - duration < a <= now`.
    #[must_use]
    pub fn is_active(&self, now: Timestamp, duration: Duration) -> bool {
        self.next_after(now.minus(duration))
            .is_some_and(|a| a <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(d: u32, h: u32, m: u32) -> Timestamp {
        Timestamp::from_utc(2026, 12, d, h, m, 0)
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let s: Schedule = "*/15 9-17 * * MON-FRI".parse().unwrap();
        // 2026-12-05 is a Saturday.
        assert_eq!(s.next_after(at(4, 17, 45)), Some(at(7, 9, 0)));
        assert_eq!(s.next_after(at(7, 9, 0)), Some(at(7, 9, 15)));
        let s: Schedule = "30 2 1,15 jan,dec *".parse().unwrap();
        assert_eq!(s.next_after(at(2, 0, 0)), Some(at(15, 2, 30)));
        let s: Schedule = "@daily".parse().unwrap();
        assert_eq!(s.next_after(at(2, 0, 0)), Some(at(3, 0, 0)));
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // The 1st of the month or any Sunday (2026-12-06 is a Sunday).
        let s: Schedule = "0 0 1 * sun".parse().unwrap();
        assert_eq!(s.next_after(at(2, 0, 0)), Some(at(6, 0, 0)));
    }

    #[test]
    fn windows_are_open_from_the_activation_for_the_duration() {
        let s: Schedule = "0 9 * * *".parse().unwrap();
        let hour = Duration::from_secs(3600);
        assert!(!s.is_active(at(2, 8, 59), hour));
        assert!(s.is_active(at(2, 9, 0), hour));
        assert!(s.is_active(at(2, 9, 59), hour));
        assert!(!s.is_active(at(2, 10, 0), hour));
    }

    #[test]
    fn invalid_schedules_are_rejected() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* * 0 * *",
            "* * * 13 *",
            "5-1 * * * *",
            "*/0 * * * *",
            "@often",
            "x * * * *",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
        let never: Schedule = "0 0 30 2 *".parse().unwrap();
        assert_eq!(never.next_after(at(1, 0, 0)), None);
    }
}
