//! Request batching (Karpenter batches DescribeInstances and TerminateInstances): calls arriving
//! within a short window are merged into one API call whose result is split back per caller.
//!
//! The first caller of a window spawns the flush task, so a caller that is cancelled never strands
//! the others. A window closes after `idle` without new keys, after `max_wait`, or at `max_items`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::AwsError;

/// The call a batch makes: all keys in, one result per key out (absent key: "no result").
pub type BatchFn<V> = Arc<
    dyn Fn(
            Vec<String>,
        ) -> Pin<Box<dyn Future<Output = Result<BTreeMap<String, V>, AwsError>> + Send>>
        + Send
        + Sync,
>;

type Waiter<V> = oneshot::Sender<Result<Option<V>, AwsError>>;

struct Window<V> {
    keys: BTreeSet<String>,
    waiters: Vec<(String, Waiter<V>)>,
    last_added: Instant,
}

/// Batches keyed calls.
pub struct Batcher<V> {
    call: BatchFn<V>,
    idle: Duration,
    max_wait: Duration,
    max_items: usize,
    window: Arc<Mutex<Option<Window<V>>>>,
    full: Arc<tokio::sync::Notify>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl<V> std::fmt::Debug for Batcher<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("idle", &self.idle)
            .field("max_wait", &self.max_wait)
            .field("max_items", &self.max_items)
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + 'static> Batcher<V> {
    /// A batcher around `call`.
    pub fn new(call: BatchFn<V>, idle: Duration, max_wait: Duration, max_items: usize) -> Self {
        Batcher {
            call,
            idle,
            max_wait,
            max_items: max_items.max(1),
            window: Arc::new(Mutex::new(None)),
            full: Arc::new(tokio::sync::Notify::new()),
            calls: Arc::default(),
        }
    }

    /// How many batched API calls were made so far.
    #[must_use]
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds `key` to the current window and waits for its result.
    ///
    /// # Errors
    /// The batch call's error (shared by every key of the window).
    pub async fn get(&self, key: &str) -> Result<Option<V>, AwsError> {
        let (tx, rx) = oneshot::channel();
        let start_flusher = {
            let mut w = lock(&self.window);
            let now = Instant::now();
            match w.as_mut() {
                Some(win) => {
                    win.keys.insert(key.to_string());
                    win.waiters.push((key.to_string(), tx));
                    win.last_added = now;
                    if win.keys.len() >= self.max_items {
                        self.full.notify_one();
                    }
                    false
                }
                None => {
                    *w = Some(Window {
                        keys: BTreeSet::from([key.to_string()]),
                        waiters: vec![(key.to_string(), tx)],
                        last_added: now,
                    });
                    true
                }
            }
        };
        if start_flusher {
            let window = Arc::clone(&self.window);
            let call = Arc::clone(&self.call);
            let calls = Arc::clone(&self.calls);
            let full = Arc::clone(&self.full);
            let (idle, max_wait, max_items) = (self.idle, self.max_wait, self.max_items);
            tokio::spawn(async move {
                let opened = Instant::now();
                loop {
                    let (last, n) = {
                        let w = lock(&window);
                        w.as_ref()
                            .map_or((opened, 0), |win| (win.last_added, win.keys.len()))
                    };
                    let now = Instant::now();
                    if n >= max_items || now >= last + idle || now >= opened + max_wait {
                        break;
                    }
                    let until = (last + idle).min(opened + max_wait);
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = full.notified() => {}
                    }
                }
                let Some(win) = lock(&window).take() else {
                    return;
                };
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let result = call(win.keys.into_iter().collect()).await;
                for (key, tx) in win.waiters {
                    let r = match &result {
                        Ok(map) => Ok(map.get(&key).cloned()),
                        Err(e) => Err(e.clone()),
                    };
                    // A caller that went away no longer wants its result.
                    let _ = tx.send(r);
                }
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(AwsError::invalid_response(
                "batch",
                "the batch task ended without a result",
            ))
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(seen: Arc<Mutex<Vec<Vec<String>>>>) -> BatchFn<String> {
        Arc::new(move |keys: Vec<String>| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                lock(&seen).push(keys.clone());
                Ok(keys
                    .into_iter()
                    .filter(|k| k != "missing")
                    .map(|k| (k.clone(), format!("v-{k}")))
                    .collect())
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_gets_share_one_call() {
        let seen = Arc::default();
        let b = Arc::new(Batcher::new(
            echo(Arc::clone(&seen)),
            Duration::from_millis(10),
            Duration::from_millis(100),
            500,
        ));
        let mut handles = Vec::new();
        for k in ["a", "b", "a", "missing"] {
            let b = Arc::clone(&b);
            handles.push(tokio::spawn(async move { b.get(k).await }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap().unwrap());
        }
        assert_eq!(
            out,
            vec![
                Some("v-a".to_string()),
                Some("v-b".to_string()),
                Some("v-a".to_string()),
                None
            ]
        );
        assert_eq!(b.calls(), 1);
        assert_eq!(lock(&seen)[0], vec!["a", "b", "missing"]);
        // A later call opens a new window.
        assert_eq!(b.get("c").await.unwrap(), Some("v-c".to_string()));
        assert_eq!(b.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn max_items_closes_the_window() {
        let seen = Arc::default();
        let b = Arc::new(Batcher::new(
            echo(Arc::clone(&seen)),
            Duration::from_secs(5),
            Duration::from_secs(50),
            2,
        ));
        let start = Instant::now();
        let (x, y) = tokio::join!(b.get("x"), b.get("y"));
        assert!(Instant::now() - start < Duration::from_secs(5));
        assert_eq!(x.unwrap(), Some("v-x".into()));
        assert_eq!(y.unwrap(), Some("v-y".into()));
        assert_eq!(b.calls(), 1);
    }
}
