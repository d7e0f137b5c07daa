//! Reflector caches shared by the simulators: a kube-runtime reflector per kind, driven by a
//! background task that wakes the simulator's loop on every change.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A reflector store kept up to date by a background task (aborted on drop).
pub(crate) struct Cache<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub(crate) store: Store<K>,
    task: JoinHandle<()>,
}

impl<K> Cache<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// Start watching `api`; every event (or error) notifies `wake`.
    pub(crate) fn start(api: Api<K>, wake: Arc<Notify>) -> Self {
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::debug!(error = %e, "sim watch error (retrying with backoff)");
                }
                wake.notify_one();
            }
        });
        Cache { store, task }
    }

    /// Wait until the first list has arrived.
    pub(crate) async fn ready(&self) {
        // The writer lives as long as the task; if it is gone the loop just runs on an empty store.
        let _ = self.store.wait_until_ready().await;
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
    /// One pass over the current Nodes and Pods.
    fn pass<'a>(
        &'a mut self,
        nodes: &'a Cache<k8s_openapi::api::core::v1::Node>,
        pods: &'a Cache<k8s_openapi::api::core::v1::Pod>,
    ) -> impl std::future::Future<Output = ()> + Send + 'a;
}

/// Runs `sim` until `shutdown`: starts Node and Pod caches, waits until both have listed, then
/// runs a pass on every change (debounced) or every `ticker.resync`.
pub(crate) async fn run_node_pod_loop<S: NodePodLoop>(
    sim: &mut S,
    client: &kube::Client,
    ticker: Ticker,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let nodes = Cache::start(
        Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()),
        Arc::clone(&ticker.wake),
    );
    let pods = Cache::start(
        Api::<k8s_openapi::api::core::v1::Pod>::all(client.clone()),
        Arc::clone(&ticker.wake),
    );
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => return,
        () = async { nodes.ready().await; pods.ready().await } => {}
    }
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = sim.pass(&nodes, &pods) => {}
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = ticker.tick() => {}
        }
    }
}
