//! Request batching (Karpenter batches DescribeInstances and TerminateInstances): calls arriving
//! within a short window are merged into one API call whose result is split back per caller.
//!
//! The first caller of a window spawns the flush task, so a caller that is cancelled never strands
//! the others. A window closes after `idle` without new keys, after `max_wait`, or at `max_items`.
//!
//! A window is sent in chunks of at most `max_items` keys (the API's limit: 200 values per EC2
//! filter), however many keys arrived before it closed. When a chunk of several keys fails, each
//! key is retried alone, so one bad key (an id EC2 rejects) fails only its own caller.

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
                let keys: Vec<String> = win.keys.into_iter().collect();
                let mut results: BTreeMap<String, Result<Option<V>, AwsError>> = BTreeMap::new();
                for chunk in keys.chunks(max_items) {
                    flush_chunk(&call, &calls, chunk, &mut results).await;
                }
                for (key, tx) in win.waiters {
                    let r = results.get(&key).cloned().unwrap_or(Ok(None));
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

/// Calls `chunk` at once; when that fails and it holds several keys, calls each key alone.
async fn flush_chunk<V: Clone>(
    call: &BatchFn<V>,
    calls: &std::sync::atomic::AtomicUsize,
    chunk: &[String],
    results: &mut BTreeMap<String, Result<Option<V>, AwsError>>,
) {
    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match call(chunk.to_vec()).await {
        Ok(map) => {
            for key in chunk {
                results.insert(key.clone(), Ok(map.get(key).cloned()));
            }
        }
        Err(e) if chunk.len() == 1 => {
            results.insert(chunk[0].clone(), Err(e));
        }
        Err(_) => {
            for key in chunk {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = call(vec![key.clone()])
                    .await
                    .map(|map| map.get(key).cloned());
                results.insert(key.clone(), r);
            }
        }
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

    #[tokio::test(start_paused = true)]
    async fn a_window_is_sent_in_chunks_of_at_most_max_items() {
        let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let b = Arc::new(Batcher::new(
            echo(Arc::clone(&seen)),
            Duration::from_millis(10),
            Duration::from_millis(100),
            200,
        ));
        let mut handles = Vec::new();
        for i in 0..250 {
            let b = Arc::clone(&b);
            handles.push(tokio::spawn(
                async move { b.get(&format!("i-{i:03}")).await },
            ));
        }
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().unwrap(), Some(format!("v-i-{i:03}")));
        }
        let sizes: Vec<usize> = lock(&seen).iter().map(Vec::len).collect();
        assert!(sizes.iter().all(|n| *n <= 200), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 250);
    }

    #[tokio::test(start_paused = true)]
    async fn one_bad_key_fails_only_its_own_caller() {
        let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let seen2 = Arc::clone(&seen);
        // Like TerminateInstances: a malformed id fails the whole call.
        let call: BatchFn<String> = Arc::new(move |keys: Vec<String>| {
            let seen = Arc::clone(&seen2);
            Box::pin(async move {
                lock(&seen).push(keys.clone());
                if keys.iter().any(|k| k == "bad") {
                    return Err(AwsError::invalid_response(
                        "TerminateInstances",
                        "InvalidInstanceID.Malformed",
                    ));
                }
                Ok(keys
                    .into_iter()
                    .map(|k| (k.clone(), format!("v-{k}")))
                    .collect())
            })
        });
        let b = Arc::new(Batcher::new(
            call,
            Duration::from_millis(10),
            Duration::from_millis(100),
            500,
        ));
        let (x, bad, y) = tokio::join!(b.get("x"), b.get("bad"), b.get("y"));
        assert_eq!(x.unwrap(), Some("v-x".into()));
        assert_eq!(y.unwrap(), Some("v-y".into()));
        assert!(bad.is_err());
        assert_eq!(lock(&seen).len(), 4, "one batch, then each key alone");
    }
}
