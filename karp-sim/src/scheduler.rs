//! The simulated kube-scheduler: binds pending pods through `pods/binding` and marks the ones that
//! fit nowhere `PodScheduled=False` with reason `Unschedulable` (what karp's provisioner waits
//! for). The decisions are [`crate::fit::ClusterState::place`]'s.
//!
//! Pods are taken in the real scheduler's queue order (priority descending, then creation time),
//! ties broken by namespace/name. Each pass starts from the watch caches plus the bindings this
//! scheduler made that the caches do not show yet ("assumed" pods, as in the real scheduler).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::time::Instant;

use crate::cache::{run_node_pod_loop, send_all, Cache, NodePodCaches, NodePodLoop, Ticker};
use crate::fit::{ClusterState, Decision};
use crate::view::{NodeView, PodView};

/// The scheduler name pods get by default; pods naming another scheduler are left alone.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// How long a binding this scheduler made counts even though the cache does not show it yet.
const ASSUME_TTL: Duration = Duration::from_secs(10);

/// How long after writing an Unschedulable condition the scheduler trusts its own write over a
/// cache that does not show it yet.
const REPORT_GRACE: Duration = Duration::from_secs(2);

/// How often at most the scheduler rewrites an Unschedulable condition whose message changed
/// (the node count, say): kube-scheduler retries an unschedulable pod after a back-off of at
/// most 10 s, and only a retry rewrites the message. A pod not yet marked is marked at once.
const REPORT_REFRESH: Duration = Duration::from_secs(10);

/// Options of the simulated scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Periodic re-evaluation even without changes.
    pub resync: Duration,
    /// How long to gather a burst of pod / node changes before a pass.
    pub debounce: Duration,
    /// The time written into `PodScheduled` conditions.
    pub clock: crate::SimClock,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            resync: Duration::from_millis(500),
            debounce: Duration::from_millis(50),
            clock: crate::SimClock::default(),
        }
    }
}

impl SchedulerOptions {
    /// Set the resync period.
    #[must_use]
    pub fn resync(mut self, d: Duration) -> Self {
        self.resync = d;
        self
    }
    /// Set the debounce.
    #[must_use]
    pub fn debounce(mut self, d: Duration) -> Self {
        self.debounce = d;
        self
    }
}

/// One pending pod's fate in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassDecision {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Where it goes or why it cannot.
    pub decision: Decision,
}

/// The queue order of pending pods: priority descending, creation time, namespace, name.
fn queue_key(p: &Pod) -> (i32, Option<Time>, String, String) {
    (
        -p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
        p.metadata.creation_timestamp.clone(),
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether the default scheduler should place `pod` now.
#[must_use]
pub fn is_pending(pod: &PodView) -> bool {
    pod.node_name.is_none() && !pod.deleting && !pod.is_terminal() && pod.uses_default_scheduler()
}

/// Decide every pending pod of `pods` on `nodes` (pure): the bound pods occupy their nodes, then
/// pending pods are placed one by one in queue order, each seeing the previous placements.
#[must_use]
pub fn plan<P: std::borrow::Borrow<Pod>>(nodes: &[Node], pods: &[P]) -> Vec<PassDecision> {
    let node_views: Vec<NodeView> = nodes.iter().map(NodeView::from_node).collect();
    let mut sorted: Vec<&Pod> = pods.iter().map(std::borrow::Borrow::borrow).collect();
    sorted.sort_by_cached_key(|p| queue_key(p));
    let views: Vec<PodView> = sorted.iter().map(|p| PodView::from_pod(p)).collect();
    let mut state = ClusterState::new(
        node_views,
        views.iter().filter(|v| v.node_name.is_some()).cloned(),
    );
    // A pod that fits nowhere leaves the state as it was, so a later pod with the same
    // scheduling inputs fits nowhere either, for the same reasons, until a binding changes the
    // state: the last few such classes are remembered (pods of one ReplicaSet are alike).
    let mut failed: Vec<(&PodView, u64, String)> = Vec::new();
    let mut binds = 0u64;
    let mut out = Vec::new();
    for v in views.iter().filter(|v| is_pending(v)) {
        let known = failed
            .iter()
            .find(|(f, at, _)| *at == binds && same_scheduling(f, v))
            .map(|(_, _, m)| m.clone());
        let decision = match known {
            Some(message) => Decision::Unschedulable(message),
            None => {
                let d = state.place(v);
                match &d {
                    Decision::Bind(_) => binds += 1,
                    Decision::Unschedulable(m) => {
                        failed.retain(|(_, at, _)| *at == binds);
                        if failed.len() == 8 {
                            failed.remove(0);
                        }
                        failed.push((v, binds, m.clone()));
                    }
                }
                d
            }
        };
        out.push(PassDecision {
            namespace: v.namespace.clone(),
            name: v.name.clone(),
            decision,
        });
    }
    out
}

/// Whether two pods are alike for every filter of a pass (everything but identity and
/// placement), so one's Unschedulable verdict holds for the other.
fn same_scheduling(a: &PodView, b: &PodView) -> bool {
    a.namespace == b.namespace
        && a.labels == b.labels
        && a.scheduler_name == b.scheduler_name
        && a.requests == b.requests
        && a.tolerations == b.tolerations
        && a.node_selector == b.node_selector
        && a.required_node_terms == b.required_node_terms
        && a.host_ports == b.host_ports
        && a.pod_affinity == b.pod_affinity
        && a.pod_anti_affinity == b.pod_anti_affinity
        && a.spread == b.spread
        && a.invalid == b.invalid
}

/// The PodScheduled condition of `pod`, if any.
fn scheduled_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
}

/// Whether `pod` is unbound and not being deleted: every pod [`is_pending`] holds for is (a
/// cheap test on the object itself, before any view is built).
fn may_be_pending(pod: &Pod) -> bool {
    pod.spec.as_ref().is_none_or(|s| s.node_name.is_none())
        && pod.metadata.deletion_timestamp.is_none()
}

/// Whether `pod` already says it is unschedulable (with any message).
fn is_marked_unschedulable(pod: &Pod) -> bool {
    scheduled_condition(pod)
        .is_some_and(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
}

/// Whether `pod` already says it is unschedulable with `message`.
#[must_use]
pub fn reports_unschedulable(pod: &Pod, message: &str) -> bool {
    scheduled_condition(pod).is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    })
}

/// The status patch that marks `pod` unschedulable with `message` (other conditions kept).
#[must_use]
pub fn unschedulable_patch(pod: &Pod, message: &str, now: &Time) -> serde_json::Value {
    let mut conditions: Vec<serde_json::Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != "PodScheduled")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": now,
    }));
    json!({"status": {"phase": "Pending", "conditions": conditions}})
}

/// The simulated kube-scheduler.
pub struct Scheduler {
    client: Client,
    options: SchedulerOptions,
    /// Pod UID → (node, when) for bindings the cache may not show yet.
    assumed: BTreeMap<String, (String, Instant)>,
    /// Pod UID → (message, when) last written.
    reported: BTreeMap<String, (String, Instant)>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler working through `client`.
    #[must_use]
    pub fn new(client: Client, options: SchedulerOptions) -> Self {
        Scheduler {
            client,
            options,
            assumed: BTreeMap::new(),
            reported: BTreeMap::new(),
        }
    }

    /// Run until `shutdown` completes. API errors are logged and retried on the next pass.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let caches = NodePodCaches::start(&self.client);
        run_node_pod_loop(&mut self, &caches, shutdown).await;
    }

    async fn pass_once(&mut self, nodes: &Cache<Node>, pods: &Cache<Pod>) {
        let now = Instant::now();
        // The cache's pods are shared, not copied; only pods this scheduler bound and the cache
        // does not show bound yet are copied, with their node.
        let mut pods: Vec<Arc<Pod>> = pods.store.state();
        // Nothing unbound and alive: nothing to decide (the common case while a cluster
        // scales down), so no view of the cluster is built.
        if !pods.iter().any(|p| may_be_pending(p)) {
            self.assumed.clear();
            self.reported.clear();
            return;
        }
        let nodes: Vec<Node> = nodes.store.state().iter().map(|n| Node::clone(n)).collect();
        // Forget assumptions the cache has caught up with (or that expired).
        let by_uid: BTreeMap<&str, &Pod> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref().map(|u| (u, p.as_ref())))
            .collect();
        self.assumed.retain(|uid, (_, at)| {
            by_uid
                .get(uid.as_str())
                .is_some_and(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
                && now.duration_since(*at) < ASSUME_TTL
        });
        self.reported
            .retain(|uid, _| by_uid.contains_key(uid.as_str()));
        for p in &mut pods {
            if let Some((node, _)) = p.metadata.uid.as_ref().and_then(|u| self.assumed.get(u)) {
                let mut q = Pod::clone(p);
                if let Some(spec) = q.spec.as_mut() {
                    spec.node_name = Some(node.clone());
                }
                *p = Arc::new(q);
            }
        }
        let decisions = plan(&nodes, &pods);
        let index: BTreeMap<(String, String), &Pod> = pods
            .iter()
            .filter(|p| may_be_pending(p))
            .map(|p| {
                (
                    (
                        p.metadata.namespace.clone().unwrap_or_default(),
                        p.metadata.name.clone().unwrap_or_default(),
                    ),
                    p.as_ref(),
                )
            })
            .collect();
        // Bindings and Unschedulable reports go out concurrently (a real scheduler binds
        // asynchronously too); their outcomes are recorded afterwards.
        enum Outcome {
            Bound(String, String),
            Reported(String, String),
            Failed,
        }
        let (mut binds, mut reports) = (Vec::new(), Vec::new());
        for d in decisions {
            let Some(pod) = index.get(&(d.namespace.clone(), d.name.clone())) else {
                continue;
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &d.namespace);
            let key = format!("{}/{}", d.namespace, d.name);
            match d.decision {
                Decision::Bind(node) => {
                    let binding = Binding {
                        metadata: ObjectMeta {
                            name: Some(d.name.clone()),
                            namespace: Some(d.namespace.clone()),
                            ..ObjectMeta::default()
                        },
                        target: ObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("Node".into()),
                            name: Some(node.clone()),
                            ..ObjectReference::default()
                        },
                    };
                    binds.push(async move {
                        match api
                            .create_subresource::<Binding, serde_json::Value>(
                                "binding",
                                &d.name,
                                &PostParams::default(),
                                &binding,
                            )
                            .await
                        {
                            Ok(_) => {
                                tracing::debug!(pod = %key, node = %node, "sim scheduler bound pod");
                                Outcome::Bound(uid, node)
                            }
                            Err(e) => {
                                tracing::debug!(pod = %key, node = %node, error = %e, "sim scheduler could not bind pod");
                                Outcome::Failed
                            }
                        }
                    });
                }
                Decision::Unschedulable(message) => {
                    let marked = is_marked_unschedulable(pod);
                    if reports_unschedulable(pod, &message)
                        || self.reported.get(&uid).is_some_and(|(m, at)| {
                            let age = now.duration_since(*at);
                            (*m == message && age < REPORT_GRACE)
                                || (marked && age < REPORT_REFRESH)
                        })
                    {
                        continue;
                    }
                    let patch = unschedulable_patch(pod, &message, &self.options.clock.time());
                    reports.push(async move {
                        match api
                            .patch_status(&d.name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => {
                                tracing::debug!(pod = %key, message = %message, "sim scheduler marked pod unschedulable");
                                Outcome::Reported(uid, message)
                            }
                            Err(e) => {
                                tracing::debug!(pod = %key, error = %e, "sim scheduler could not mark pod unschedulable");
                                Outcome::Failed
                            }
                        }
                    });
                }
            }
        }
        // Bindings first: a flood of condition rewrites must not hold up pods that fit.
        let mut outcomes = send_all(binds).await;
        outcomes.extend(send_all(reports).await);
        for o in outcomes {
            match o {
                Outcome::Bound(uid, node) => {
                    self.assumed.insert(uid, (node, now));
                }
                Outcome::Reported(uid, message) => {
                    self.reported.insert(uid, (message, now));
                }
                Outcome::Failed => {}
            }
        }
    }
}

/// Run a [`Scheduler`] until `shutdown` completes.
pub async fn run_scheduler(
    client: Client,
    options: SchedulerOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    Scheduler::new(client, options).run(shutdown).await;
}

impl NodePodLoop for Scheduler {
    fn ticker(&self) -> Ticker {
        Ticker::new(self.options.resync, self.options.debounce)
    }

    fn pass<'a>(
        &'a mut self,
        nodes: &'a Cache<Node>,
        pods: &'a Cache<Pod>,
    ) -> impl Future<Output = ()> + Send + 'a {
        self.pass_once(nodes, pods)
    }
}
