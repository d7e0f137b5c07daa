//! A small, private Kubernetes quantity parser (karp-core has the full one; this crate does not depend
//! on it yet). Quantities are kept as exact rationals `num / den` and rounded up like
//! `resource.Quantity.Value()` / `MilliValue()`.

use std::fmt;

/// An exact quantity `num / den` (den > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    num: i128,
    den: i128,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuantityError(pub(crate) String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(s: &str, why: &str) -> QuantityError {
    QuantityError(format!("invalid quantity {s:?}: {why}"))
}

fn pow10(e: u32) -> Option<i128> {
    10i128.checked_pow(e)
}

impl Quantity {
    /// Parses `[+-]digits[.digits][suffix]` with suffixes n u m "" k M G T P E, Ki Mi Gi Ti Pi Ei, or `eN`/`EN`.
    pub(crate) fn parse(s: &str) -> Result<Self, QuantityError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(err(s, "empty"));
        }
        let (neg, body) = match t.as_bytes()[0] {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let split = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(split);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err(s, "no digits"));
        }
        if frac_part.contains('.') {
            return Err(err(s, "more than one decimal point"));
        }
        let digits = format!("{int_part}{frac_part}");
        if digits.len() > 30 {
            return Err(err(s, "too many digits"));
        }
        let mut num: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| err(s, "bad digits"))?
        };
        let frac_len = u32::try_from(frac_part.len()).map_err(|_| err(s, "too many digits"))?;
        let mut den = pow10(frac_len).ok_or_else(|| err(s, "too many digits"))?;
        let overflow = || err(s, "out of range");
        match suffix {
            "" => {}
            "n" => den = den.checked_mul(1_000_000_000).ok_or_else(overflow)?,
            "u" => den = den.checked_mul(1_000_000).ok_or_else(overflow)?,
            "m" => den = den.checked_mul(1_000).ok_or_else(overflow)?,
            "k" => num = num.checked_mul(1_000).ok_or_else(overflow)?,
            "M" => {
                num = num
                    .checked_mul(pow10(6).ok_or_else(overflow)?)
                    .ok_or_else(overflow)?
            }
            "G" => {
                num = num
                    .checked_mul(pow10(9).ok_or_else(overflow)?)
                    .ok_or_else(overflow)?
            }
            "T" => {
                num = num
                    .checked_mul(pow10(12).ok_or_else(overflow)?)
                    .ok_or_else(overflow)?
            }
            "P" => {
                num = num
                    .checked_mul(pow10(15).ok_or_else(overflow)?)
                    .ok_or_else(overflow)?
            }
            "E" => {
                num = num
                    .checked_mul(pow10(18).ok_or_else(overflow)?)
                    .ok_or_else(overflow)?
            }
            "Ki" => num = num.checked_mul(1 << 10).ok_or_else(overflow)?,
            "Mi" => num = num.checked_mul(1 << 20).ok_or_else(overflow)?,
            "Gi" => num = num.checked_mul(1 << 30).ok_or_else(overflow)?,
            "Ti" => num = num.checked_mul(1 << 40).ok_or_else(overflow)?,
            "Pi" => num = num.checked_mul(1 << 50).ok_or_else(overflow)?,
            "Ei" => num = num.checked_mul(1 << 60).ok_or_else(overflow)?,
            other if other.starts_with(['e', 'E']) => {
                let exp: i32 = other[1..].parse().map_err(|_| err(s, "unknown suffix"))?;
                if !(-30..=30).contains(&exp) {
                    return Err(overflow());
                }
                let p = pow10(exp.unsigned_abs()).ok_or_else(overflow)?;
                if exp >= 0 {
                    num = num.checked_mul(p).ok_or_else(overflow)?;
                } else {
                    den = den.checked_mul(p).ok_or_else(overflow)?;
                }
            }
            _ => return Err(err(s, "unknown suffix")),
        }
        if neg {
            num = -num;
        }
        Ok(Quantity { num, den })
    }

    /// The value rounded up to an integer, like `Quantity.Value()`.
    pub(crate) fn ceil_value(self) -> Option<i64> {
        i64::try_from(div_ceil(self.num, self.den)).ok()
    }

    /// The value in thousandths rounded up, like `Quantity.MilliValue()`.
    pub(crate) fn ceil_milli(self) -> Option<i64> {
        let n = self.num.checked_mul(1000)?;
        i64::try_from(div_ceil(n, self.den)).ok()
    }

    /// An approximate float value (for percentages of a capacity).
    #[cfg(test)]
    pub(crate) fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

fn div_ceil(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d != 0 && ((n > 0) == (d > 0)) {
        q + 1
    } else {
        q
    }
}

/// Parses a quantity and returns its integer value rounded up (bytes, pods, counts).
pub(crate) fn parse_value(s: &str) -> Result<i64, QuantityError> {
    Quantity::parse(s)?
        .ceil_value()
        .ok_or_else(|| err(s, "out of range"))
}

/// Parses a quantity and returns its value in thousandths rounded up (CPU millicores).
pub(crate) fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    Quantity::parse(s)?
        .ceil_milli()
        .ok_or_else(|| err(s, "out of range"))
}

/// Formats millicores the way Kubernetes would print them ("2", "1930m").
pub(crate) fn format_milli(m: i64) -> String {
    if m % 1000 == 0 {
        format!("{}", m / 1000)
    } else {
        format!("{m}m")
    }
}

/// Formats bytes with the largest exact binary suffix ("8Gi", "7577Mi", "123").
pub(crate) fn format_bytes(b: i64) -> String {
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        let unit = 1i64 << shift;
        if b != 0 && b % unit == 0 {
            return format!("{}{suffix}", b / unit);
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_suffixes() {
        assert_eq!(parse_value("100Mi").unwrap(), 100 << 20);
        assert_eq!(parse_value("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_value("20G").unwrap(), 20_000_000_000);
        assert_eq!(parse_value("1.5Ki").unwrap(), 1536);
        assert_eq!(parse_milli("100m").unwrap(), 100);
        assert_eq!(parse_milli("2").unwrap(), 2000);
        assert_eq!(parse_milli("0.5").unwrap(), 500);
        assert_eq!(parse_value("1e3").unwrap(), 1000);
        assert_eq!(parse_value("2.147483648e+09").unwrap(), 2_147_483_648);
        assert_eq!(parse_value("1E").unwrap(), 1_000_000_000_000_000_000);
        assert_eq!(parse_value("-1k").unwrap(), -1000);
    }

    #[test]
    fn rounds_up_like_kubernetes() {
        assert_eq!(parse_value("1.1").unwrap(), 2);
        assert_eq!(parse_milli("1.0001").unwrap(), 1001);
        assert_eq!(parse_value("500m").unwrap(), 1);
        assert!((Quantity::parse("1.5Gi").unwrap().as_f64() - 1610612736.0).abs() < 1e-3);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for s in [
            "",
            "abc",
            "1.2.3",
            "10Xi",
            ".",
            "1e999",
            "99999999999999999999999999999999Ei",
            "+",
        ] {
            assert!(
                Quantity::parse(s).is_err() || parse_value(s).is_err(),
                "{s}"
            );
        }
    }

    #[test]
    fn formats_round_trip() {
        for b in [0, 1, 1024, 8 << 30, 7577 << 20, 21_474_836_480] {
            assert_eq!(parse_value(&format_bytes(b)).unwrap(), b);
        }
        for m in [0, 70, 1930, 2000] {
            assert_eq!(parse_milli(&format_milli(m)).unwrap(), m);
        }
    }
}
