//! The time the simulators write into objects (pod `startTime`, condition transition times, Job
//! `startTime`): wall time by default, or a function the embedded cluster shares with the
//! operator's advanceable clock, so timestamps and karp's decisions agree when a test jumps
//! ahead. Delays (readiness, pod start, resyncs) stay on real time.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use karp_sim::SimClock;
//!
//! let ahead = SimClock::from_fn(|| SystemTime::now() + Duration::from_secs(3600));
//! assert!(ahead.now() > SimClock::default().now());
//! ```

use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

type NowFn = dyn Fn() -> SystemTime + Send + Sync;

/// A source of the current time (cheap to clone).
#[derive(Clone, Default)]
pub struct SimClock(Option<Arc<NowFn>>);

impl SimClock {
    /// A clock reading `now`.
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        SimClock(Some(Arc::new(now)))
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> SystemTime {
        self.0.as_ref().map_or_else(SystemTime::now, |f| f())
    }

    /// The current time as a Kubernetes `Time`.
    #[must_use]
    pub fn time(&self) -> Time {
        Time(
            k8s_openapi::jiff::Timestamp::try_from(self.now())
                .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
        )
    }
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "SimClock(shared)"
        } else {
            "SimClock(wall)"
        })
    }
}

/// Two clocks are equal when both are wall time or both read the same function.
impl PartialEq for SimClock {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for SimClock {}
