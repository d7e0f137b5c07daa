//! Kubernetes quantities and integer resource vectors.
//!
//! [`Quantity`] parses and prints every form the Kubernetes API accepts (`500m`, `1.5`, `1e3`,
//! `2Gi`, `1.8G`, `100Ki`, ...) exactly, as an integer number of nano-units. [`Resources`] is the
//! integer vector the scheduler works with: CPU in millicores, memory and ephemeral storage in
//! bytes, pods as a count, and extended resources (GPUs, hugepages, ...) as integer values.
//!
//! ```
//! use karp_core::resources::{Quantity, Resources};
//!
//! let q: Quantity = "1.5Gi".parse().unwrap();
//! assert_eq!(q.value_ceil(), 1_610_612_736);
//! assert_eq!(q.to_string(), "1536Mi");
//! let r = Resources::from_pairs([("cpu", "250m"), ("memory", "1Gi")]).unwrap();
//! assert_eq!(r.cpu, 250);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("quantity is empty")]
    Empty,
    /// The numeric part is not a decimal number.
    #[error(
        "quantity {input:?} has no valid number (expected forms like 500m, 1.5, 1e3, 2Gi, 100Ki)"
    )]
    BadNumber {
        /// The rejected input.
        input: String,
    },
    /// The suffix is not one Kubernetes knows.
    #[error("quantity {input:?} has unknown suffix {suffix:?} (known: n u m k M G T P E Ki Mi Gi Ti Pi Ei, e<exp>)")]
    BadSuffix {
        /// The rejected input.
        input: String,
        /// The suffix that was not understood.
        suffix: String,
    },
    /// The value does not fit the supported range.
    #[error("quantity {input:?} is out of range")]
    OutOfRange {
        /// The rejected input.
        input: String,
    },
    /// A negative value where only non-negative values make sense.
    #[error("quantity {input:?} must not be negative")]
    Negative {
        /// The rejected input.
        input: String,
    },
}

/// How a quantity was written, which decides how it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// Decimal SI suffixes (`m`, `k`, `M`, `G`, ...) or none.
    DecimalSi,
    /// Binary SI suffixes (`Ki`, `Mi`, `Gi`, ...).
    BinarySi,
    /// Decimal exponent (`1e3`).
    DecimalExponent,
}

const NANO: i128 = 1_000_000_000;
/// Largest magnitude we accept, in nano-units (about 10^35 nano = 10^26 units; 1Ei is ~1.15e18).
const MAX_NANOS: i128 = 100_000_000_000_000_000_000_000_000_000_000_000;

/// An exact Kubernetes quantity, stored as an integer number of nano-units.
///
/// Values finer than one nano-unit round up, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

impl Quantity {
    /// A quantity of `n` whole units, printed in decimal SI.
    #[must_use]
    pub fn from_units(n: i64) -> Self {
        Quantity {
            nanos: i128::from(n) * NANO,
            format: QuantityFormat::DecimalSi,
        }
    }

    /// A quantity of `m` milli-units (millicores for CPU), printed in decimal SI.
    #[must_use]
    pub fn from_millis(m: i64) -> Self {
        Quantity {
            nanos: i128::from(m) * 1_000_000,
            format: QuantityFormat::DecimalSi,
        }
    }

    /// A quantity of `b` bytes, printed with binary suffixes where exact.
    #[must_use]
    pub fn from_bytes(b: i64) -> Self {
        Quantity {
            nanos: i128::from(b) * NANO,
            format: QuantityFormat::BinarySi,
        }
    }

    /// The value in nano-units.
    #[must_use]
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// How the quantity prints.
    #[must_use]
    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// The value in milli-units, rounded up (Kubernetes `MilliValue`), saturating at `i64` bounds.
    #[must_use]
    pub fn millis_ceil(&self) -> i64 {
        clamp_i64(div_ceil(self.nanos, 1_000_000))
    }

    /// The value in whole units, rounded up (Kubernetes `Value`), saturating at `i64` bounds.
    #[must_use]
    pub fn value_ceil(&self) -> i64 {
        clamp_i64(div_ceil(self.nanos, NANO))
    }

    /// The value as a float, for display and prices only.
    #[must_use]
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANO as f64
    }
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(QuantityError::Empty);
        }
        let bad_number = || QuantityError::BadNumber {
            input: input.to_string(),
        };
        let out_of_range = || QuantityError::OutOfRange {
            input: input.to_string(),
        };
        let bytes = input.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if bytes[0] == b'+' || bytes[0] == b'-' {
            negative = bytes[0] == b'-';
            i = 1;
        }
        let num_start = i;
        let mut seen_dot = false;
        let mut digits = 0usize;
        while i < bytes.len() {
            match bytes[i] {
                b'0'..=b'9' => digits += 1,
                b'.' if !seen_dot => seen_dot = true,
                _ => break,
            }
            i += 1;
        }
        if digits == 0 {
            return Err(bad_number());
        }
        let number = &input[num_start..i];
        let suffix = &input[i..];
        // Mantissa and number of fractional digits.
        let mut mantissa: i128 = 0;
        let mut frac_digits: i32 = 0;
        let mut in_frac = false;
        let mut dropped_nonzero = false;
        for c in number.bytes() {
            if c == b'.' {
                in_frac = true;
                continue;
            }
            let d = i128::from(c - b'0');
            if in_frac && frac_digits >= 40 {
                // Far below nano precision: only remember that something was there (rounds up).
                dropped_nonzero |= d != 0;
                continue;
            }
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(d))
                .ok_or_else(out_of_range)?;
            if mantissa > MAX_NANOS {
                return Err(out_of_range());
            }
            if in_frac {
                frac_digits += 1;
            }
        }
        let (exp10, pow2, format): (i32, u32, QuantityFormat) = match suffix {
            "" => (0, 0, QuantityFormat::DecimalSi),
            "n" => (-9, 0, QuantityFormat::DecimalSi),
            "u" => (-6, 0, QuantityFormat::DecimalSi),
            "m" => (-3, 0, QuantityFormat::DecimalSi),
            "k" => (3, 0, QuantityFormat::DecimalSi),
            "M" => (6, 0, QuantityFormat::DecimalSi),
            "G" => (9, 0, QuantityFormat::DecimalSi),
            "T" => (12, 0, QuantityFormat::DecimalSi),
            "P" => (15, 0, QuantityFormat::DecimalSi),
            "E" => (18, 0, QuantityFormat::DecimalSi),
            "Ki" => (0, 10, QuantityFormat::BinarySi),
            "Mi" => (0, 20, QuantityFormat::BinarySi),
            "Gi" => (0, 30, QuantityFormat::BinarySi),
            "Ti" => (0, 40, QuantityFormat::BinarySi),
            "Pi" => (0, 50, QuantityFormat::BinarySi),
            "Ei" => (0, 60, QuantityFormat::BinarySi),
            s if s.starts_with('e') || s.starts_with('E') => {
                let exp = &s[1..];
                let valid = !exp.is_empty()
                    && exp
                        .trim_start_matches(['+', '-'])
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                    && exp.len() - exp.trim_start_matches(['+', '-']).len() <= 1
                    && !exp.trim_start_matches(['+', '-']).is_empty();
                if !valid {
                    return Err(QuantityError::BadSuffix {
                        input: input.to_string(),
                        suffix: s.to_string(),
                    });
                }
                let e: i32 = exp.parse().map_err(|_| out_of_range())?;
                if !(-60..=60).contains(&e) {
                    return Err(out_of_range());
                }
                (e, 0, QuantityFormat::DecimalExponent)
            }
            s => {
                return Err(QuantityError::BadSuffix {
                    input: input.to_string(),
                    suffix: s.to_string(),
                })
            }
        };
        // nanos = mantissa * 10^(9 + exp10 - frac_digits) * 2^pow2, rounded up.
        let mut value = mantissa
            .checked_mul(1i128 << pow2)
            .ok_or_else(out_of_range)?;
        let shift = 9 + exp10 - frac_digits;
        if shift >= 0 {
            for _ in 0..shift {
                value = value.checked_mul(10).ok_or_else(out_of_range)?;
                if value > MAX_NANOS {
                    return Err(out_of_range());
                }
            }
        } else {
            let mut remainder = dropped_nonzero;
            for _ in 0..(-shift) {
                remainder |= value % 10 != 0;
                value /= 10;
            }
            if remainder {
                value += 1;
            }
        }
        if value > MAX_NANOS {
            return Err(out_of_range());
        }
        if negative {
            value = -value;
        }
        Ok(Quantity {
            nanos: value,
            format,
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.nanos;
        if n == 0 {
            return f.write_str("0");
        }
        if self.format == QuantityFormat::BinarySi && n % NANO == 0 {
            let units = n / NANO;
            const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut k = 0;
            let mut v = units;
            while k < 6 && v % 1024 == 0 {
                v /= 1024;
                k += 1;
            }
            if k > 0 || units.abs() < 1024 {
                return write!(f, "{v}{}", SUFFIXES[k]);
            }
        }
        // Decimal: the largest exponent (multiple of 3) that keeps the mantissa an integer.
        let mut exp: i32 = -9;
        let mut v = n;
        while exp < 18 && v % 1000 == 0 {
            v /= 1000;
            exp += 3;
        }
        if self.format == QuantityFormat::DecimalExponent {
            return if exp == 0 {
                write!(f, "{v}")
            } else {
                write!(f, "{v}e{exp}")
            };
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        write!(f, "{v}{suffix}")
    }
}

impl Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes quantity (string or number)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::from_units(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                if !v.is_finite() {
                    return Err(E::custom("quantity must be finite"));
                }
                format!("{v}").parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Well-known resource names.
pub mod names {
    /// CPU, in millicores.
    pub const CPU: &str = "cpu";
    /// Memory, in bytes.
    pub const MEMORY: &str = "memory";
    /// Ephemeral storage, in bytes.
    pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
    /// Pod slots.
    pub const PODS: &str = "pods";
}

/// An integer resource vector: CPU millicores, memory bytes, ephemeral-storage bytes, pods, and
/// extended resources by name (in whole units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Pod slots.
    pub pods: i64,
    /// Extended resources (for example `nvidia.com/gpu`), in whole units.
    pub extended: BTreeMap<String, i64>,
}

/// A resource list entry that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource {name:?}: {source}")]
pub struct ResourceError {
    /// The resource name.
    pub name: String,
    /// Why its quantity was rejected.
    #[source]
    pub source: QuantityError,
}

impl Resources {
    /// An empty vector.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set one resource by name from a quantity (CPU rounds up to millicores, others to units).
    pub fn set(&mut self, name: &str, q: &Quantity) {
        match name {
            names::CPU => self.cpu = q.millis_ceil(),
            names::MEMORY => self.memory = q.value_ceil(),
            names::EPHEMERAL_STORAGE => self.ephemeral_storage = q.value_ceil(),
            names::PODS => self.pods = q.value_ceil(),
            other => {
                self.extended.insert(other.to_string(), q.value_ceil());
            }
        }
    }

    /// The amount of one resource by name (0 when absent), in the vector's integer unit.
    #[must_use]
    pub fn get(&self, name: &str) -> i64 {
        match name {
            names::CPU => self.cpu,
            names::MEMORY => self.memory,
            names::EPHEMERAL_STORAGE => self.ephemeral_storage,
            names::PODS => self.pods,
            other => self.extended.get(other).copied().unwrap_or(0),
        }
    }

    /// Parse `(name, quantity)` pairs, rejecting negative amounts.
    ///
    /// # Errors
    /// [`ResourceError`] naming the first resource whose quantity is invalid or negative.
    pub fn from_pairs<'a, I, K, V>(pairs: I) -> Result<Self, ResourceError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str> + 'a,
        V: AsRef<str> + 'a,
    {
        let mut r = Resources::new();
        for (k, v) in pairs {
            let name = k.as_ref();
            let q: Quantity = v.as_ref().parse().map_err(|source| ResourceError {
                name: name.to_string(),
                source,
            })?;
            if q.nanos() < 0 {
                return Err(ResourceError {
                    name: name.to_string(),
                    source: QuantityError::Negative {
                        input: v.as_ref().to_string(),
                    },
                });
            }
            r.set(name, &q);
        }
        Ok(r)
    }

    /// Iterate over every non-zero resource as `(name, amount)` in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        [
            (names::CPU, self.cpu),
            (names::MEMORY, self.memory),
            (names::EPHEMERAL_STORAGE, self.ephemeral_storage),
            (names::PODS, self.pods),
        ]
        .into_iter()
        .chain(self.extended.iter().map(|(k, v)| (k.as_str(), *v)))
        .filter(|(_, v)| *v != 0)
    }

    /// Add `other` into `self`.
    pub fn add_assign(&mut self, other: &Resources) {
        self.cpu = self.cpu.saturating_add(other.cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        self.pods = self.pods.saturating_add(other.pods);
        for (k, v) in &other.extended {
            let e = self.extended.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    /// `self + other`.
    #[must_use]
    pub fn plus(&self, other: &Resources) -> Resources {
        let mut r = self.clone();
        r.add_assign(other);
        r
    }

    /// `n · self`, component-wise (saturating).
    #[must_use]
    pub fn scaled(&self, n: i64) -> Resources {
        Resources {
            cpu: self.cpu.saturating_mul(n),
            memory: self.memory.saturating_mul(n),
            ephemeral_storage: self.ephemeral_storage.saturating_mul(n),
            pods: self.pods.saturating_mul(n),
            extended: self
                .extended
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_mul(n)))
                .collect(),
        }
    }

    /// `self - other`, component-wise (may go negative).
    #[must_use]
    pub fn minus(&self, other: &Resources) -> Resources {
        let mut r = self.clone();
        r.cpu = r.cpu.saturating_sub(other.cpu);
        r.memory = r.memory.saturating_sub(other.memory);
        r.ephemeral_storage = r.ephemeral_storage.saturating_sub(other.ephemeral_storage);
        r.pods = r.pods.saturating_sub(other.pods);
        for (k, v) in &other.extended {
            let e = r.extended.entry(k.clone()).or_insert(0);
            *e = e.saturating_sub(*v);
        }
        r
    }

    /// Component-wise maximum.
    #[must_use]
    pub fn max(&self, other: &Resources) -> Resources {
        let mut r = self.clone();
        r.max_assign(other);
        r
    }

    /// [`Resources::max`] in place.
    pub fn max_assign(&mut self, other: &Resources) {
        self.cpu = self.cpu.max(other.cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.extended {
            match self.extended.get_mut(k) {
                Some(e) => *e = (*e).max(*v),
                None => {
                    self.extended.insert(k.clone(), *v);
                }
            }
        }
    }

    /// Whether `self` (a request) fits in `capacity`: every requested amount is at most the
    /// capacity's. A positive request for a resource the capacity lacks does not fit; a zero
    /// request for an unknown resource does.
    #[must_use]
    pub fn fits_in(&self, capacity: &Resources) -> bool {
        self.cpu <= capacity.cpu
            && self.memory <= capacity.memory
            && self.ephemeral_storage <= capacity.ephemeral_storage
            && self.pods <= capacity.pods
            && self
                .extended
                .iter()
                .all(|(k, v)| *v <= 0 || capacity.extended.get(k).is_some_and(|c| v <= c))
    }

    /// Whether `self + other` fits in `capacity`, without allocating.
    #[must_use]
    pub fn sum_fits_in(&self, other: &Resources, capacity: &Resources) -> bool {
        self.cpu.saturating_add(other.cpu) <= capacity.cpu
            && self.memory.saturating_add(other.memory) <= capacity.memory
            && self
                .ephemeral_storage
                .saturating_add(other.ephemeral_storage)
                <= capacity.ephemeral_storage
            && self.pods.saturating_add(other.pods) <= capacity.pods
            && (self.extended.is_empty() && other.extended.is_empty()
                || self.plus(other).fits_in(capacity))
    }

    /// The names of resources in `self` that exceed `capacity`.
    #[must_use]
    pub fn exceeding(&self, capacity: &Resources) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in self.iter() {
            if v > capacity.get(name) {
                out.push(name.to_string());
            }
        }
        out
    }

    /// Whether every component is zero.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Print as a `name=quantity` list (`cpu=1500m, memory=2Gi, pods=3`).
    #[must_use]
    pub fn describe(&self) -> String {
        self.to_quantities()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Convert to Kubernetes quantities by name (non-zero entries only).
    #[must_use]
    pub fn to_quantities(&self) -> BTreeMap<String, Quantity> {
        self.iter()
            .map(|(k, v)| {
                let q = match k {
                    names::CPU => Quantity::from_millis(v),
                    names::MEMORY | names::EPHEMERAL_STORAGE => Quantity::from_bytes(v),
                    _ if k.starts_with("hugepages-") => Quantity::from_bytes(v),
                    _ => Quantity::from_units(v),
                };
                (k.to_string(), q)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_form_the_api_accepts() {
        assert_eq!(q("500m").millis_ceil(), 500);
        assert_eq!(q("1.5").millis_ceil(), 1500);
        assert_eq!(q("1e3").value_ceil(), 1000);
        assert_eq!(q("1E3").value_ceil(), 1000);
        assert_eq!(q("2Gi").value_ceil(), 2 * 1024 * 1024 * 1024);
        assert_eq!(q("1.8G").value_ceil(), 1_800_000_000);
        assert_eq!(q("100Ki").value_ceil(), 102_400);
        assert_eq!(q("0.5Mi").value_ceil(), 524_288);
        assert_eq!(q("+3").value_ceil(), 3);
        assert_eq!(q("-3").value_ceil(), -3);
        assert_eq!(q(".5").millis_ceil(), 500);
        assert_eq!(q("5.").value_ceil(), 5);
        assert_eq!(q("1n").nanos(), 1);
        assert_eq!(q("1u").nanos(), 1000);
        assert_eq!(q("12e-3").millis_ceil(), 12);
        assert_eq!(q("1Ei").value_ceil(), 1 << 60);
        assert_eq!(q("2E").value_ceil(), 2_000_000_000_000_000_000);
        assert_eq!(q("1k").value_ceil(), 1000);
        assert_eq!(q("3T").value_ceil(), 3_000_000_000_000);
    }

    #[test]
    fn rounds_up_below_precision() {
        assert_eq!(q("0.1m").millis_ceil(), 1);
        assert_eq!(q("1e-10").nanos(), 1);
        assert_eq!(q("0.0000000001").nanos(), 1);
        assert_eq!(q("100.5").value_ceil(), 101);
    }

    #[test]
    fn rejects_junk_with_clear_errors() {
        for bad in [
            "", "abc", "1.2.3", "1Qi", "1 Gi", "Gi", "1ee3", "1e", "1e+", "--1", "1Kib", "0x10",
            "1e99",
        ] {
            let err = bad.parse::<Quantity>().expect_err(bad);
            assert!(!err.to_string().is_empty());
        }
        assert!(matches!(
            "1Qi".parse::<Quantity>(),
            Err(QuantityError::BadSuffix { .. })
        ));
        assert!(matches!(
            "1e99".parse::<Quantity>(),
            Err(QuantityError::OutOfRange { .. })
        ));
    }

    #[test]
    fn prints_canonical_forms() {
        assert_eq!(q("500m").to_string(), "500m");
        assert_eq!(q("1.5").to_string(), "1500m");
        assert_eq!(q("1000m").to_string(), "1");
        assert_eq!(q("2Gi").to_string(), "2Gi");
        assert_eq!(q("1536Mi").to_string(), "1536Mi");
        assert_eq!(q("1.5Gi").to_string(), "1536Mi");
        assert_eq!(q("1.8G").to_string(), "1800M");
        assert_eq!(q("1e3").to_string(), "1e3");
        assert_eq!(q("0").to_string(), "0");
        assert_eq!(q("100Ki").to_string(), "100Ki");
        assert_eq!(q("1000Ki").to_string(), "1000Ki");
        assert_eq!(q("512").to_string(), "512");
    }

    #[test]
    fn printing_round_trips_the_value() {
        for s in [
            "500m",
            "1.5",
            "1e3",
            "2Gi",
            "1.8G",
            "100Ki",
            "0.25",
            "7n",
            "123456789",
            "3Ei",
            "1.5Ki",
        ] {
            let a = q(s);
            let b = q(&a.to_string());
            assert_eq!(a.nanos(), b.nanos(), "{s} -> {a}");
        }
    }

    #[test]
    fn resources_fit_and_exceed() {
        let req = Resources::from_pairs([("cpu", "1"), ("memory", "1Gi"), ("nvidia.com/gpu", "1")])
            .unwrap();
        let cap = Resources::from_pairs([("cpu", "2"), ("memory", "2Gi")]).unwrap();
        assert!(!req.fits_in(&cap));
        assert_eq!(req.exceeding(&cap), vec!["nvidia.com/gpu".to_string()]);
        let zero = Resources::from_pairs([("example.com/foo", "0")]).unwrap();
        assert!(zero.fits_in(&cap));
        assert!(Resources::from_pairs([("cpu", "-1")]).is_err());
        assert_eq!(req.plus(&req).cpu, 2000);
        assert_eq!(cap.minus(&req).extended["nvidia.com/gpu"], -1);
        assert_eq!(req.describe(), "cpu=1, memory=1Gi, nvidia.com/gpu=1");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn display_then_parse_is_identity(n in -1_000_000_000_000i64..1_000_000_000_000i64, fmt in 0u8..3) {
            let format = match fmt { 0 => QuantityFormat::DecimalSi, 1 => QuantityFormat::BinarySi, _ => QuantityFormat::DecimalExponent };
            let a = Quantity { nanos: i128::from(n) * 1000, format };
            let b: Quantity = a.to_string().parse().unwrap();
            prop_assert_eq!(a.nanos(), b.nanos());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,12}") {
            let _ = s.parse::<Quantity>();
        }
    }
}
