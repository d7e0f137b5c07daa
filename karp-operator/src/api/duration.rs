//! Karpenter's duration fields (`expireAfter`, `terminationGracePeriod`, `consolidateAfter`,
//! budget `duration`): a Go duration made of `h`, `m` and `s` terms, or `Never`.
//!
//! Arithmetic is checked: a value beyond Go's largest duration (`i64::MAX` nanoseconds, about
//! 292 years) is an error, as Go's `time.ParseDuration` makes it, never a wrapped small number
//! (a wrapped `terminationGracePeriod` would force-delete pods past their PDBs at once).

use std::time::Duration;

/// Go's largest duration in whole seconds (`i64::MAX` nanoseconds).
pub const MAX_SECONDS: u64 = (i64::MAX as u64) / 1_000_000_000;

/// The CRD pattern for these fields: `h`, `m`, `s` terms in that order with at most 6, 7 and 9
/// digits (so every value that matches is below [`MAX_SECONDS`]), or `Never`.
pub const PATTERN: &str =
    r"^([0-9]{1,6}h([0-9]{1,7}m)?([0-9]{1,9}s)?|[0-9]{1,7}m([0-9]{1,9}s)?|[0-9]{1,9}s|Never)$";

/// [`PATTERN`] without `Never` (`terminationGracePeriod`).
pub const PATTERN_WITHOUT_NEVER: &str =
    r"^([0-9]{1,6}h([0-9]{1,7}m)?([0-9]{1,9}s)?|[0-9]{1,7}m([0-9]{1,9}s)?|[0-9]{1,9}s)$";

/// A budget's `duration`: hours and/or minutes (Karpenter's form, with an optional `0s`), bounded
/// like [`PATTERN`].
pub const BUDGET_PATTERN: &str = r"^(([0-9]{1,6}h|[0-9]{1,7}m|[0-9]{1,6}h[0-9]{1,7}m)(0s)?)$";

/// Why a duration does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not a sequence of `<digits><h|m|s>` terms nor `Never`.
    #[error("invalid duration {0:?} (expected a Go duration of s, m and h such as 720h or 1h30m, or Never)")]
    ParseDuration(String),
    /// Larger than Go's largest duration.
    #[error("duration {0:?} exceeds the maximum of {MAX_SECONDS}s (about 292 years)")]
    DurationOverflow(String),
}

/// Parses a duration; `Ok(None)` is `Never`.
///
/// ```
/// use std::time::Duration;
/// use karp_operator::api::duration::parse;
///
/// assert_eq!(parse("1h30m").unwrap(), Some(Duration::from_secs(5400)));
/// assert_eq!(parse("Never").unwrap(), None);
/// assert!(parse("18446744073709551615s1s").is_err());
/// ```
///
/// # Errors
/// [`DurationError`] for a malformed value or one beyond Go's largest duration.
pub fn parse(s: &str) -> Result<Option<Duration>, DurationError> {
    if s == "Never" {
        return Ok(None);
    }
    let bad = || DurationError::ParseDuration(s.to_string());
    let overflow = || DurationError::DurationOverflow(s.to_string());
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = num.unwrap_or(0);
            num = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(overflow)?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n = num.take().ok_or_else(bad)?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(overflow)?;
    }
    if num.is_some() {
        return Err(bad());
    }
    if total > MAX_SECONDS {
        return Err(overflow());
    }
    Ok(Some(Duration::from_secs(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_karpenters_grammar() {
        assert_eq!(
            parse("720h").unwrap(),
            Some(Duration::from_secs(720 * 3600))
        );
        assert_eq!(parse("30s").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(parse("1h1h").unwrap(), Some(Duration::from_secs(7200)));
        assert_eq!(parse("Never").unwrap(), None);
        for bad in ["", "h", "10", "1d", "1.5h", "never", "-1h", "1h-"] {
            assert!(
                matches!(parse(bad), Err(DurationError::ParseDuration(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn huge_durations_are_errors_not_wrapped_values() {
        for huge in [
            "18446744073709551615s1s",
            "18446744073709551616s",
            "5124095576030432h",
            "2562048h",
            "99999999999999999999999h",
        ] {
            assert!(
                matches!(parse(huge), Err(DurationError::DurationOverflow(_))),
                "{huge}: {:?}",
                parse(huge)
            );
        }
        assert_eq!(
            parse("2562047h").unwrap(),
            Some(Duration::from_secs(2_562_047 * 3600))
        );
    }

    #[test]
    fn every_value_the_crd_pattern_admits_is_within_the_maximum() {
        let re = regex_lite::Regex::new(PATTERN).unwrap();
        // The largest value of each alternative stays below Go's maximum.
        for largest in [
            "999999h9999999m999999999s",
            "9999999m999999999s",
            "999999999s",
        ] {
            assert!(re.is_match(largest), "{largest}");
            assert!(parse(largest).unwrap().unwrap().as_secs() <= MAX_SECONDS);
        }
        for ok in ["720h", "1h30m", "1h30m15s", "30m", "45s", "Never"] {
            assert!(re.is_match(ok), "{ok}");
            assert!(parse(ok).is_ok());
        }
        for rejected in [
            "",
            "9999999h",
            "18446744073709551615s1s",
            "1d",
            "never",
            "1hNever",
        ] {
            assert!(!re.is_match(rejected), "{rejected}");
        }
    }
}
