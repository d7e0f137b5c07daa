//! The operator (`karp run`): kube-runtime controllers that execute karp-core's decisions.
//!
//! - [`provisioner`]: pending pods → NodeClaims (batched).
//! - [`lifecycle`]: NodeClaim launch, registration, initialization, liveness, deletion.
//! - [`termination`]: the Node finalizer: taint, drain through the Eviction API, delete the instance.
//! - [`gc`]: instances without a NodeClaim, NodeClaims whose instance vanished.
//! - [`podevents`]: `lastPodEventTime` on NodeClaims (binds, terminal and terminating pods).
//! - [`conditions`]: the `Consolidatable` condition of NodeClaims.
//! - [`expiration`]: NodeClaims past their `expireAfter` are deleted (forceful).
//! - [`drift`]: the `Drifted` condition of NodeClaims.
//! - [`disruption`]: consolidation, emptiness and drift commands, executed by [`orchestration`].
//! - [`status`]: NodePool and EC2NodeClass status.
//!
//! Cluster state comes from kube-runtime reflectors ([`Stores`]); every write is a patch or a
//! create that is safe to repeat, so a restart at any point loses nothing.

pub mod conditions;
pub mod disruption;
pub mod drift;
pub mod expiration;
pub mod gc;
pub mod interruption;
pub mod lifecycle;
pub mod orchestration;
pub mod podevents;
pub mod provisioner;
pub mod static_capacity;
pub mod status;
pub mod termination;
pub mod writes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use karp_core::cloud::CloudProvider;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;
use tracing::debug;

use crate::api::ec2nodeclass::EC2NodeClassObject;
use crate::api::nodeclaim::NodeClaim;
use crate::api::nodepool::NodePool;
use crate::convert::{ClusterObjects, Input};
use crate::providers::NodeClassResolver;
use crate::runtime::metrics::Metrics;

/// Errors of the operator's reconcilers.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// A Kubernetes API call failed.
    #[error("{0} failed: {1}")]
    Kube(&'static str, String),
    /// A cloud provider call failed.
    #[error("cloud provider: {0}")]
    Cloud(String),
    /// Cluster objects could not be converted for scheduling.
    #[error("converting cluster state: {0}")]
    Convert(String),
    /// A cache did not list within the sync timeout.
    #[error("the {store} cache did not sync within {timeout:?}: is its CustomResourceDefinition installed, and may karp list and watch it (RBAC)?")]
    SyncCache {
        /// The resource (`nodeclaims`).
        store: &'static str,
        /// The timeout.
        timeout: Duration,
    },
}

/// Runs `pass` at once, then every `period`, until `ctx` is shut down (the loop of every
/// scanning controller).
pub(crate) async fn every<F, Fut>(ctx: &Context, period: Duration, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        pass().await;
        tokio::select! {
            () = ctx.shutdown_requested() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// Watches the operator's tasks (reflectors and controllers): one that ends or panics while the
/// operator is not stopping is recorded, so health checks fail and the process is restarted.
#[derive(Debug, Default)]
pub struct Supervisor {
    stopping: AtomicBool,
    failed: std::sync::Mutex<Vec<String>>,
}

impl Supervisor {
    /// Spawns `task` named `name` under supervision.
    pub fn spawn(
        self: &Arc<Self>,
        name: &str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            let outcome =
                futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(task)).await;
            if !me.stopping.load(Ordering::SeqCst) {
                let how = if outcome.is_err() {
                    "panicked"
                } else {
                    "returned"
                };
                tracing::error!(task = %name, how, "operator task stopped unexpectedly");
                me.failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(format!("{name} {how}"));
            }
        })
    }

    /// The tasks that stopped unexpectedly (empty while healthy).
    #[must_use]
    pub fn failed(&self) -> Vec<String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The cluster objects the planners read, from the caches, sorted by namespace and name.
#[derive(Debug, Clone, Default)]
pub struct LiveObjects {
    /// Pods.
    pub pods: Vec<Arc<Pod>>,
    /// Nodes.
    pub nodes: Vec<Arc<Node>>,
    /// NodePools.
    pub nodepools: Vec<Arc<NodePool>>,
    /// NodeClaims.
    pub nodeclaims: Vec<Arc<NodeClaim>>,
    /// DaemonSets.
    pub daemonsets: Vec<Arc<DaemonSet>>,
    /// Namespaces.
    pub namespaces: Vec<Arc<Namespace>>,
    /// PodDisruptionBudgets.
    pub pdbs: Vec<Arc<PodDisruptionBudget>>,
}

/// A reference to the cluster-scoped object `name` of `kind`, with its uid when `objects` holds it.
fn cluster_ref<K: kube::Resource>(
    api_version: &str,
    kind: &str,
    name: &str,
    objects: &[Arc<K>],
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: Some(name.to_string()),
        uid: objects
            .iter()
            .find(|o| o.meta().name.as_deref() == Some(name))
            .and_then(|o| o.meta().uid.clone()),
        ..ObjectReference::default()
    }
}

impl LiveObjects {
    /// References (uid included, as `kubectl describe` selects Events by uid) to the pods named
    /// `namespace/name` in `keys`; a pod not in the cache gets a reference without uid.
    #[must_use]
    pub fn pod_refs<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a String>,
    ) -> BTreeMap<String, ObjectReference> {
        let wanted: std::collections::BTreeSet<&str> =
            keys.into_iter().map(String::as_str).collect();
        let mut out: BTreeMap<String, ObjectReference> = wanted
            .iter()
            .map(|k| {
                let (ns, name) = k.split_once('/').unwrap_or(("default", k));
                let r = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    ..ObjectReference::default()
                };
                ((*k).to_string(), r)
            })
            .collect();
        for p in &self.pods {
            let key = format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            );
            if let Some(r) = out.get_mut(&key) {
                r.uid.clone_from(&p.metadata.uid);
            }
        }
        out
    }

    /// A reference to the Node `name` (uid included when the cache has it).
    #[must_use]
    pub fn node_ref(&self, name: &str) -> ObjectReference {
        cluster_ref("v1", "Node", name, &self.nodes)
    }

    /// A reference to the NodePool `name` (uid included when the cache has it).
    #[must_use]
    pub fn nodepool_ref(&self, name: &str) -> ObjectReference {
        cluster_ref("karpenter.sh/v1", "NodePool", name, &self.nodepools)
    }

    /// The snapshot builder's input: the pods `include` selects, and every other object.
    #[must_use]
    pub fn cluster_objects(&self, include: impl Fn(&Pod) -> bool) -> ClusterObjects {
        ClusterObjects {
            pods: self
                .pods
                .iter()
                .filter(|p| include(p))
                .map(|p| Input::live_pod(Arc::clone(p)))
                .collect(),
            nodes: self.nodes.iter().cloned().map(Input::live).collect(),
            nodeclaims: self.nodeclaims.iter().cloned().map(Input::live).collect(),
            nodepools: self.nodepools.iter().cloned().map(Input::live).collect(),
            daemonsets: self.daemonsets.iter().cloned().map(Input::live).collect(),
            namespaces: self.namespaces.iter().cloned().map(Input::live).collect(),
            volumes: Vec::new(),
            volume_claims: Vec::new(),
        }
    }
}

/// The reflector stores of the objects the operator reads.
#[derive(Clone)]
pub struct Stores {
    /// Pods.
    pub pods: Store<Pod>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// NodePools.
    pub nodepools: Store<NodePool>,
    /// NodeClaims.
    pub nodeclaims: Store<NodeClaim>,
    /// DaemonSets.
    pub daemonsets: Store<DaemonSet>,
    /// Namespaces.
    pub namespaces: Store<Namespace>,
    /// EC2NodeClasses.
    pub nodeclasses: Store<EC2NodeClassObject>,
    /// PodDisruptionBudgets.
    pub pdbs: Store<PodDisruptionBudget>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

fn sorted<K: Resource + Clone>(store: &Store<K>) -> Vec<Arc<K>>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    let mut v = store.state();
    v.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    v
}

impl Stores {
    /// Every object the planners read, in deterministic order.
    #[must_use]
    pub fn objects(&self) -> LiveObjects {
        LiveObjects {
            pods: sorted(&self.pods),
            nodes: sorted(&self.nodes),
            nodepools: sorted(&self.nodepools),
            nodeclaims: sorted(&self.nodeclaims),
            daemonsets: sorted(&self.daemonsets),
            namespaces: sorted(&self.namespaces),
            pdbs: sorted(&self.pdbs),
        }
    }

    /// `namespace/name` of the provisionable pods.
    #[must_use]
    pub fn provisionable_pods(&self) -> BTreeSet<String> {
        self.pods
            .state()
            .iter()
            .filter(|p| provisioner::is_provisionable(p))
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect()
    }

    /// Names of the NodeClaims in the cache.
    #[must_use]
    pub fn nodeclaim_names(&self) -> BTreeSet<String> {
        self.nodeclaims
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect()
    }

    /// The node with this provider ID.
    #[must_use]
    pub fn node_by_provider_id(&self, provider_id: &str) -> Option<Arc<Node>> {
        self.nodes
            .state()
            .into_iter()
            .find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(provider_id))
    }

    /// The NodeClaim with this provider ID.
    #[must_use]
    pub fn nodeclaim_by_provider_id(&self, provider_id: &str) -> Option<Arc<NodeClaim>> {
        self.nodeclaims
            .state()
            .into_iter()
            .find(|c| c.provider_id() == Some(provider_id))
    }
}

/// Kubernetes Events about karp's decisions and failures.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// A recorder reporting as `karpenter` from `instance`.
    #[must_use]
    pub fn new(client: Client, instance: &str) -> Self {
        Self::reporting_as(client, "karpenter", instance)
    }

    /// A recorder reporting as `controller` from `instance`.
    #[must_use]
    pub fn reporting_as(client: Client, controller: &str, instance: &str) -> Self {
        Events {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: controller.into(),
                    instance: Some(instance.to_string()),
                },
            ),
        }
    }

    /// Publishes an event about `reference` (failures are logged, never fatal). Repeats of the
    /// same reason and note on one object are one event with a growing series count; another
    /// note is another event (the recorder keys on the action, which carries the note), as
    /// client-go's recorder aggregates by message.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        type_: &str,
        reason: &str,
        note: &str,
    ) {
        let ev = Event {
            type_: if type_ == "Warning" {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: if note.is_empty() {
                reason.to_string()
            } else {
                note.chars().take(128).collect()
            },
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            debug!(error = %e, reason, "event not recorded");
        }
    }

    /// An event about a NodeClaim.
    pub async fn publish_nodeclaim(
        &self,
        claim: &NodeClaim,
        type_: &str,
        reason: &str,
        note: &str,
    ) {
        self.publish(&claim.object_ref(&()), type_, reason, note)
            .await;
    }
}

/// Shared state of the controllers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// The cloud.
    pub cloud: Arc<dyn CloudProvider>,
    /// Node class resolution for the cloud.
    pub resolver: Arc<dyn NodeClassResolver>,
    /// Reflector stores.
    pub stores: Stores,
    /// Events.
    pub events: Events,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Timing settings.
    pub settings: OperatorSettings,
    /// Pods (`namespace/name`) the provisioner planned onto a NodeClaim, with that claim and
    /// when: later provisioning passes count them on the claim until it is initialized, and
    /// disruption does not take a node pods are nominated to (see
    /// [`provisioner::Nomination`]).
    pub nominations: std::sync::Mutex<std::collections::BTreeMap<String, provisioner::Nomination>>,
    /// The global consolidator's targets, kept from one disruption pass to the next (they are
    /// recomputed only when the pods they pack change).
    pub targets: karp_core::disruption::TargetCache,
    shutdown: AtomicBool,
    shutdown_notify: Notify,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Whether shutdown was requested.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Requests shutdown of every loop.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.shutdown_notify.notify_waiters();
    }

    /// Resolves when shutdown is requested.
    pub async fn shutdown_requested(&self) {
        loop {
            let notified = self.shutdown_notify.notified();
            if self.is_shutdown() {
                return;
            }
            notified.await;
        }
    }
}

/// Timing settings (Karpenter's defaults; tests and the demo shorten them).
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// Provisioning batch window.
    pub batch: provisioner::BatchWindow,
    /// A NodeClaim not registered this long after launch is deleted (Karpenter: 15 min).
    pub registration_ttl: Duration,
    /// A NodeClaim that failed to launch for this long is deleted (Karpenter: 5 min).
    pub launch_ttl: Duration,
    /// An instance without a NodeClaim is removed after this long (grace for in-flight launches).
    pub gc_grace: Duration,
    /// How often garbage collection and status refreshes run.
    pub resync: Duration,
    /// The instance name of this operator (for events and leader election).
    pub identity: String,
    /// Pods still pending after a provisioning pass are planned again after this long.
    pub provision_retry: Duration,
    /// Caches that have not listed after this long fail the start (a missing CRD or RBAC rule
    /// is an error, not a silent hang).
    pub sync_timeout: Duration,
    /// The disruption controller.
    pub disruption: disruption::DisruptionControl,
    /// How often each launched NodeClaim is asked of the cloud provider's drift check.
    pub cloud_drift_period: Duration,
    /// How provisioning packs each batch.
    pub solver: provisioner::SolverSettings,
    /// The clock of disruption decisions (tests and the demo advance it).
    pub clock: crate::runtime::clock::Clock,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        OperatorSettings {
            batch: provisioner::BatchWindow::default(),
            registration_ttl: Duration::from_secs(15 * 60),
            launch_ttl: Duration::from_secs(5 * 60),
            gc_grace: Duration::from_secs(30),
            resync: Duration::from_secs(10),
            identity: "karp".into(),
            provision_retry: Duration::from_secs(5),
            sync_timeout: Duration::from_secs(120),
            disruption: disruption::DisruptionControl::default(),
            cloud_drift_period: Duration::from_secs(300),
            solver: provisioner::SolverSettings::default(),
            clock: crate::runtime::clock::Clock::default(),
        }
    }
}

fn reflect<K>(api: Api<K>) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .for_each(|_| futures::future::ready(()));
    (reader, stream)
}

/// Starts the reflectors under `supervisor`; returns the stores once every one has listed.
///
/// # Errors
/// [`OperatorError::SyncCache`] naming the first cache that did not list within `timeout` (a
/// missing CRD or RBAC rule); the reflectors started so far are stopped.
pub async fn start_stores(
    client: &Client,
    supervisor: &Arc<Supervisor>,
    timeout: Duration,
) -> Result<(Stores, Vec<tokio::task::JoinHandle<()>>), OperatorError> {
    let mut tasks = Vec::new();
    macro_rules! store {
        ($api:expr, $name:expr) => {{
            let (s, fut) = reflect($api);
            tasks.push(supervisor.spawn(concat!("reflector/", $name), fut));
            s
        }};
    }
    let stores = Stores {
        pods: store!(Api::<Pod>::all(client.clone()), "pods"),
        nodes: store!(Api::<Node>::all(client.clone()), "nodes"),
        nodepools: store!(Api::<NodePool>::all(client.clone()), "nodepools"),
        nodeclaims: store!(Api::<NodeClaim>::all(client.clone()), "nodeclaims"),
        daemonsets: store!(Api::<DaemonSet>::all(client.clone()), "daemonsets"),
        namespaces: store!(Api::<Namespace>::all(client.clone()), "namespaces"),
        nodeclasses: store!(
            Api::<EC2NodeClassObject>::all(client.clone()),
            "ec2nodeclasses"
        ),
        pdbs: store!(
            Api::<PodDisruptionBudget>::all(client.clone()),
            "poddisruptionbudgets"
        ),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    macro_rules! synced {
        ($store:expr, $name:expr) => {
            if tokio::time::timeout_at(deadline, $store.wait_until_ready())
                .await
                .is_err()
            {
                supervisor.stopping.store(true, Ordering::SeqCst);
                for t in &tasks {
                    t.abort();
                }
                return Err(OperatorError::SyncCache {
                    store: $name,
                    timeout,
                });
            }
        };
    }
    synced!(stores.pods, "pods");
    synced!(stores.nodes, "nodes");
    synced!(stores.nodepools, "nodepools");
    synced!(stores.nodeclaims, "nodeclaims");
    synced!(stores.daemonsets, "daemonsets");
    synced!(stores.namespaces, "namespaces");
    synced!(stores.nodeclasses, "ec2nodeclasses");
    synced!(stores.pdbs, "poddisruptionbudgets");
    Ok((stores, tasks))
}

/// A running operator.
pub struct Operator {
    /// Shared context.
    pub ctx: Arc<Context>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    supervisor: Arc<Supervisor>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator").finish_non_exhaustive()
    }
}

impl crate::runtime::leader::Leading for Operator {
    async fn stop(self) {
        Operator::stop(self).await;
    }

    fn failed(&self) -> Vec<String> {
        self.supervisor.failed()
    }
}

impl Operator {
    /// Starts every controller (call once leader), once every cache has synced.
    ///
    /// # Errors
    /// [`OperatorError::SyncCache`] when a cache does not sync within `settings.sync_timeout`.
    pub async fn start(
        client: Client,
        cloud: Arc<dyn CloudProvider>,
        resolver: Arc<dyn NodeClassResolver>,
        metrics: Arc<Metrics>,
        settings: OperatorSettings,
    ) -> Result<Self, OperatorError> {
        let supervisor = Arc::new(Supervisor::default());
        let (stores, mut tasks) = start_stores(&client, &supervisor, settings.sync_timeout).await?;
        let ctx = Arc::new(Context {
            events: Events::new(client.clone(), &settings.identity),
            client,
            cloud,
            resolver,
            stores,
            metrics,
            settings,
            nominations: std::sync::Mutex::default(),
            targets: karp_core::disruption::TargetCache::default(),
            shutdown: AtomicBool::new(false),
            shutdown_notify: Notify::new(),
        });
        let window = ctx.settings.batch;
        let sv = &supervisor;
        tasks.push(sv.spawn(
            "provisioner",
            provisioner::Provisioner::run(Arc::clone(&ctx), window),
        ));
        tasks.push(sv.spawn("lifecycle", lifecycle::run(Arc::clone(&ctx))));
        tasks.push(sv.spawn("termination", termination::run(Arc::clone(&ctx))));
        tasks.push(sv.spawn("gc", gc::run(Arc::clone(&ctx))));
        tasks.push(sv.spawn("status", status::run(Arc::clone(&ctx))));
        tasks.push(sv.spawn("podevents", podevents::run(Arc::clone(&ctx))));
        tasks.push(sv.spawn("conditions", conditions::run(Arc::clone(&ctx))));
        tasks.push(sv.spawn("expiration", expiration::run(Arc::clone(&ctx))));
        tasks.push(sv.spawn("static_capacity", static_capacity::run(Arc::clone(&ctx))));
        tasks.push(sv.spawn("drift", drift::run(Arc::clone(&ctx))));
        tasks.push(sv.spawn("disruption", disruption::run(Arc::clone(&ctx))));
        Ok(Operator {
            ctx,
            tasks,
            supervisor,
        })
    }

    /// The tasks that stopped unexpectedly (empty while healthy).
    #[must_use]
    pub fn failed(&self) -> Vec<String> {
        self.supervisor.failed()
    }

    /// Stops every controller and waits for them.
    pub async fn stop(self) {
        self.supervisor.stopping.store(true, Ordering::SeqCst);
        self.ctx.shutdown();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_returns_while_running_is_recorded_and_a_stop_is_not() {
        let sv = Arc::new(Supervisor::default());
        let panicking = sv.spawn("boom", async { panic!("controller bug") });
        let returning = sv.spawn("done", async {});
        let _ = panicking.await;
        let _ = returning.await;
        let mut failed = sv.failed();
        failed.sort();
        assert_eq!(failed, ["boom panicked", "done returned"]);

        let quiet = Arc::new(Supervisor::default());
        quiet.stopping.store(true, Ordering::SeqCst);
        let _ = quiet.spawn("stopped", async {}).await;
        assert!(quiet.failed().is_empty());
    }
}
