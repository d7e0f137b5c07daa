//! The clock of the disruption decisions: wall time plus an offset that tests and the demo can
//! advance, so `expireAfter`, `consolidateAfter`, budget schedules and the 15 s validation delay
//! run in test time without waiting in real time.
//!
//! Only forward jumps exist; every sleep on the clock wakes when it is advanced past its end.
//! Lifecycle timeouts (registration, launch, garbage-collection grace) stay on real time: they
//! guard real launches, which an advanced clock does not speed up.
//!
//! ```
//! use std::time::Duration;
//! use karp_operator::runtime::clock::Clock;
//!
//! let clock = Clock::default();
//! let before = clock.now();
//! clock.advance(Duration::from_secs(3600));
//! assert!(clock.now().duration_since(before).unwrap() >= Duration::from_secs(3600));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    offset_ms: AtomicU64,
    advanced: Notify,
}

/// Wall time plus an advanceable offset (cheap to clone; clones share the offset).
#[derive(Clone, Default)]
pub struct Clock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("offset", &self.offset())
            .finish()
    }
}

impl Clock {
    /// How far the clock is ahead of wall time.
    #[must_use]
    pub fn offset(&self) -> Duration {
        Duration::from_millis(self.inner.offset_ms.load(Ordering::SeqCst))
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + self.offset()
    }

    /// Moves the clock forward by `by`, waking every sleep that ends before the new time.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.inner.offset_ms.fetch_add(ms, Ordering::SeqCst);
        self.inner.advanced.notify_waiters();
    }

    /// Sleeps until the clock has moved `d` past now (in real time, or sooner when advanced).
    pub async fn sleep(&self, d: Duration) {
        let until = self.now() + d;
        loop {
            let notified = self.inner.advanced.notified();
            let Ok(left) = until.duration_since(self.now()) else {
                return;
            };
            if left.is_zero() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                () = notified => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_ends_when_the_clock_is_advanced_past_it() {
        let clock = Clock::default();
        let c = clock.clone();
        let sleeper = tokio::spawn(async move { c.sleep(Duration::from_secs(3600)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1800));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sleeper.is_finished(), "half-way is not the end");
        clock.advance(Duration::from_secs(1800));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken by the advance")
            .unwrap();
    }
}
