//! Kubernetes quantities for this crate's settings and catalog files, on top of karp-core's
//! parser (`karp_core::resources::Quantity`), rounded up like `Value()` / `MilliValue()`.

use std::fmt;

use karp_core::resources::Quantity;

/// Why a string is not a usable Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuantityError(pub(crate) String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse(s: &str) -> Result<Quantity, QuantityError> {
    s.trim()
        .parse::<Quantity>()
        .map_err(|e| QuantityError(format!("invalid quantity {s:?}: {e}")))
}

fn in_range(s: &str, v: i64) -> Result<i64, QuantityError> {
    if v == i64::MAX || v == i64::MIN {
        Err(QuantityError(format!(
            "invalid quantity {s:?}: out of range"
        )))
    } else {
        Ok(v)
    }
}

/// Parses a quantity and returns its value rounded up (bytes, counts).
pub(crate) fn parse_value(s: &str) -> Result<i64, QuantityError> {
    in_range(s, parse(s)?.value_ceil())
}

/// Parses a quantity and returns its value in thousandths rounded up (CPU millicores).
pub(crate) fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    in_range(s, parse(s)?.millis_ceil())
}

/// Formats millicores the way Kubernetes prints them ("2", "1930m").
pub(crate) fn format_milli(m: i64) -> String {
    Quantity::from_millis(m).to_string()
}

/// Formats bytes with the largest exact binary suffix ("8Gi", "7577Mi", "123").
pub(crate) fn format_bytes(b: i64) -> String {
    Quantity::from_bytes(b).to_string()
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
        assert!((parse("1.5Gi").unwrap().as_f64() - 1610612736.0).abs() < 1e-3);
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
            assert!(parse(s).is_err() || parse_value(s).is_err(), "{s}");
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
