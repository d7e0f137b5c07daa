//! Reflector caches shared by the simulators: a kube-runtime reflector per kind, driven by a
//! background task that wakes the simulator's loop on every change.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A reflector store kept up to date by a background task (aborted on drop); every change
/// wakes each subscribed loop.
pub(crate) struct Cache<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub(crate) store: Store<K>,
    wakes: Arc<Mutex<Vec<Arc<Notify>>>>,
    /// Counts the watch events applied to the store (see [`Cache::changes`]).
    changes: Arc<AtomicU64>,
    /// True once the first list is in the store. (Not `Store::wait_until_ready`: it wakes only
    /// the last of several waiting tasks, and the caches are shared.)
    listed: tokio::sync::watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl<K> Cache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// Start watching `api`; every event (or error) notifies `wake`.
    pub(crate) fn start(api: Api<K>, wake: Arc<Notify>) -> Self {
        let cache = Self::shared(api);
        cache.subscribe(wake);
        cache
    }

    /// Start watching `api` for several loops, which [`Cache::subscribe`] (as
    /// kube-controller-manager's controllers share one informer per kind).
    pub(crate) fn shared(api: Api<K>) -> Self {
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        let wakes: Arc<Mutex<Vec<Arc<Notify>>>> = Arc::default();
        let subscribers = Arc::clone(&wakes);
        let (listed_tx, listed) = tokio::sync::watch::channel(false);
        let changes = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&changes);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                counter.fetch_add(1, Ordering::Release);
                match ev {
                    // The reflector has applied the event to the store before yielding it.
                    Ok(watcher::Event::InitDone) => {
                        listed_tx.send_replace(true);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "sim watch error (retrying with backoff)");
                    }
                }
                for w in subscribers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                {
                    w.notify_one();
                }
            }
        });
        Cache {
            store,
            wakes,
            changes,
            listed,
            task,
        }
    }

    /// How many watch events the store has applied so far. Read before the store: if the count
    /// is unchanged since a pass, so is everything that pass saw.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Wake `wake` on every change from now on.
    pub(crate) fn subscribe(&self, wake: Arc<Notify>) {
        self.wakes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(wake);
    }

    /// Wait until the first list has arrived.
    pub(crate) async fn ready(&self) {
        // If the task is gone (the sender dropped) the loop just runs on an empty store.
        let _ = self.listed.clone().wait_for(|listed| *listed).await;
    }
}

impl<K: Resource + 'static> Drop for Cache<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests a simulator has in flight at once (as a kubelet per node sends its own, and a
/// scheduler binds asynchronously).
pub(crate) const CONCURRENT_REQUESTS: usize = 64;

/// Sends `requests` with at most [`CONCURRENT_REQUESTS`] in flight; their outcomes in
/// completion order.
pub(crate) async fn send_all<F: std::future::Future>(requests: Vec<F>) -> Vec<F::Output> {
    futures::stream::iter(requests)
        .buffer_unordered(CONCURRENT_REQUESTS)
        .collect()
        .await
}

/// When the next pass of a simulator loop is due: on a change notification (after `debounce`, to
/// batch bursts of events) or after `resync`, whichever comes first.
pub(crate) struct Ticker {
    pub(crate) wake: Arc<Notify>,
    pub(crate) resync: Duration,
    pub(crate) debounce: Duration,
}

impl Ticker {
    /// A ticker with its own notifier.
    pub(crate) fn new(resync: Duration, debounce: Duration) -> Self {
        Ticker {
            wake: Arc::new(Notify::new()),
            resync,
            debounce,
        }
    }

    /// Wait for the next pass.
    pub(crate) async fn tick(&self) {
        tokio::select! {
            () = self.wake.notified() => tokio::time::sleep(self.debounce).await,
            () = tokio::time::sleep(self.resync) => {}
        }
    }
}

/// A simulator that reacts to Nodes and Pods: one pass over both caches at a time.
pub(crate) trait NodePodLoop {
    /// When its passes are due.
    fn ticker(&self) -> Ticker;

    /// One pass over the current Nodes and Pods.
    fn pass<'a>(
        &'a mut self,
        nodes: &'a Cache<k8s_openapi::api::core::v1::Node>,
        pods: &'a Cache<k8s_openapi::api::core::v1::Pod>,
    ) -> impl std::future::Future<Output = ()> + Send + 'a;
}

/// The Node and Pod caches the simulated kubelet, scheduler and workload controllers share:
/// one watch per kind for all three, not one each.
#[derive(Clone)]
pub(crate) struct NodePodCaches {
    pub(crate) nodes: Arc<Cache<k8s_openapi::api::core::v1::Node>>,
    pub(crate) pods: Arc<Cache<k8s_openapi::api::core::v1::Pod>>,
}

impl NodePodCaches {
    /// Start both watches through `client`.
    pub(crate) fn start(client: &kube::Client) -> Self {
        NodePodCaches {
            nodes: Arc::new(Cache::shared(Api::all(client.clone()))),
            pods: Arc::new(Cache::shared(Api::all(client.clone()))),
        }
    }

    /// Wake `wake` on every Node or Pod change.
    pub(crate) fn subscribe(&self, wake: &Arc<Notify>) {
        self.nodes.subscribe(Arc::clone(wake));
        self.pods.subscribe(Arc::clone(wake));
    }
}

/// Runs `sim` until `shutdown` on `caches`: waits until both have listed, then runs a pass on
/// every change (debounced) or every resync of its ticker.
pub(crate) async fn run_node_pod_loop<S: NodePodLoop>(
    sim: &mut S,
    caches: &NodePodCaches,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let ticker = sim.ticker();
    caches.subscribe(&ticker.wake);
    let (nodes, pods) = (&*caches.nodes, &*caches.pods);
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => return,
        () = async { nodes.ready().await; pods.ready().await } => {}
    }
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = sim.pass(nodes, pods) => {}
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = ticker.tick() => {}
        }
    }
}
