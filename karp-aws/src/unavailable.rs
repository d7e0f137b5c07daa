//! The insufficient-capacity cache: offerings (instance type, zone, capacity type) that failed to
//! launch are unavailable for a while (Karpenter: 3 minutes) and excluded from scheduling.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use karp_core::cloud::UnavailableOffering;

/// How long an offering stays unavailable after an insufficient-capacity error.
pub const UNAVAILABLE_TTL: Duration = Duration::from_secs(180);

/// Offerings that recently failed with insufficient capacity. Time is passed in, so tests are exact.
#[derive(Debug, Default)]
pub struct UnavailableOfferings {
    entries: Mutex<BTreeMap<UnavailableOffering, Instant>>,
    capacity_types: Mutex<BTreeMap<String, Instant>>,
    ttl: Option<Duration>,
}

impl UnavailableOfferings {
    /// An empty cache with Karpenter's 3-minute expiry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache with another expiry.
    #[must_use]
    pub fn with_ttl(ttl: Duration) -> Self {
        UnavailableOfferings {
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    fn ttl(&self) -> Duration {
        self.ttl.unwrap_or(UNAVAILABLE_TTL)
    }

    /// Marks one offering unavailable from `now`.
    pub fn mark(&self, offering: UnavailableOffering, now: Instant) {
        let until = now + self.ttl();
        lock(&self.entries).insert(offering, until);
    }

    /// Marks every offering of a capacity type unavailable (account-wide errors such as
    /// `MaxSpotInstanceCountExceeded`).
    pub fn mark_capacity_type(&self, capacity_type: &str, now: Instant) {
        let until = now + self.ttl();
        lock(&self.capacity_types).insert(capacity_type.to_string(), until);
    }

    /// Whether the offering is unavailable at `now`.
    #[must_use]
    pub fn is_unavailable(
        &self,
        instance_type: &str,
        zone: &str,
        capacity_type: &str,
        now: Instant,
    ) -> bool {
        if lock(&self.capacity_types)
            .get(capacity_type)
            .is_some_and(|until| *until > now)
        {
            return true;
        }
        let key = UnavailableOffering {
            instance_type: instance_type.to_string(),
            zone: zone.to_string(),
            capacity_type: capacity_type.to_string(),
        };
        lock(&self.entries)
            .get(&key)
            .is_some_and(|until| *until > now)
    }

    /// Drops expired entries; returns how many offerings are still cached.
    pub fn expire(&self, now: Instant) -> usize {
        lock(&self.capacity_types).retain(|_, until| *until > now);
        let mut e = lock(&self.entries);
        e.retain(|_, until| *until > now);
        e.len()
    }

    /// How many single offerings are cached at `now`.
    #[must_use]
    pub fn len(&self, now: Instant) -> usize {
        self.expire(now)
    }

    /// Whether nothing is cached at `now`.
    #[must_use]
    pub fn is_empty(&self, now: Instant) -> bool {
        self.expire(now) == 0 && lock(&self.capacity_types).is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(t: &str, z: &str, ct: &str) -> UnavailableOffering {
        UnavailableOffering {
            instance_type: t.into(),
            zone: z.into(),
            capacity_type: ct.into(),
        }
    }

    #[test]
    fn offerings_expire_after_three_minutes() {
        let cache = UnavailableOfferings::new();
        let t0 = Instant::now();
        cache.mark(off("m5.large", "us-east-1a", "spot"), t0);
        assert!(cache.is_unavailable("m5.large", "us-east-1a", "spot", t0));
        assert!(!cache.is_unavailable("m5.large", "us-east-1b", "spot", t0));
        assert!(!cache.is_unavailable("m5.large", "us-east-1a", "on-demand", t0));
        let almost = t0 + Duration::from_secs(179);
        assert!(cache.is_unavailable("m5.large", "us-east-1a", "spot", almost));
        let later = t0 + Duration::from_secs(180);
        assert!(!cache.is_unavailable("m5.large", "us-east-1a", "spot", later));
        assert!(cache.is_empty(later));
    }

    #[test]
    fn capacity_type_wide_entries_cover_every_offering() {
        let cache = UnavailableOfferings::with_ttl(Duration::from_secs(10));
        let t0 = Instant::now();
        cache.mark_capacity_type("spot", t0);
        assert!(cache.is_unavailable("c5.xlarge", "us-east-1f", "spot", t0));
        assert!(!cache.is_unavailable("c5.xlarge", "us-east-1f", "on-demand", t0));
        assert!(!cache.is_unavailable(
            "c5.xlarge",
            "us-east-1f",
            "spot",
            t0 + Duration::from_secs(10)
        ));
    }
}
