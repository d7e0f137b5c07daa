//! The simulated kubelet: one loop standing in for the kubelets of every [`SimCloud`] instance.
//!
//! For each running instance without a Node it registers one (see [`crate::node::node_object`]):
//! Ready=False at first, Ready=True after [`KubeletOptions::ready_delay`], and the launch
//! request's startup taints removed [`KubeletOptions::startup_taint_delay`] after that. Pods bound
//! to its nodes become Running after [`KubeletOptions::pod_start_delay`]; pods being deleted there
//! are removed (grace period 0) after [`KubeletOptions::pod_stop_delay`]. When an instance is
//! terminated its kubelet stops: the Node's conditions turn Unknown (`NodeStatusUnknown`), and the
//! Node itself is left for karp to delete.
//!
//! It only ever patches what a kubelet owns (Node status, the startup taints, Pod status), so the
//! labels and taint changes karp makes at registration survive.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::time::Instant;

use crate::cache::{run_node_pod_loop, send_all, Cache, NodePodCaches, NodePodLoop, Ticker};
use crate::cloud::{InstanceState, SimCloud, SimInstance};
use crate::node::{
    node_conditions, node_object, node_status, pod_ip, ready_status, removable_startup_taints,
    without_startup_taints, Readiness,
};

/// How long the kubelet trusts its own Running status write over a cache that does not show
/// it yet (so a pass does not start the same pod twice).
const START_GRACE: Duration = Duration::from_secs(5);

/// How often the kubelet polls the cloud by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(150);

/// How long the kubelet waits for its own Node create to show up in its cache before creating it
/// again (a watch event normally arrives within milliseconds).
const CREATE_GRACE: Duration = Duration::from_secs(2);

/// Timing of the simulated kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletOptions {
    /// How often to poll the cloud for instances (and resync pods and nodes).
    pub poll_interval: Duration,
    /// From registration to Ready=True (0 allowed).
    pub ready_delay: Duration,
    /// From Ready=True to the removal of the startup taints.
    pub startup_taint_delay: Duration,
    /// From binding to Running.
    pub pod_start_delay: Duration,
    /// From a bound pod's deletion to its removal (the simulated termination grace period).
    pub pod_stop_delay: Duration,
    /// The time written into node conditions and pod statuses.
    pub clock: crate::SimClock,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        KubeletOptions {
            poll_interval: DEFAULT_POLL_INTERVAL,
            ready_delay: Duration::from_secs(1),
            startup_taint_delay: Duration::from_millis(500),
            pod_start_delay: Duration::from_millis(200),
            pod_stop_delay: Duration::from_millis(200),
            clock: crate::SimClock::default(),
        }
    }
}

impl KubeletOptions {
    /// Set the polling interval.
    #[must_use]
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }
    /// Set the delay from registration to Ready.
    #[must_use]
    pub fn ready_delay(mut self, d: Duration) -> Self {
        self.ready_delay = d;
        self
    }
    /// Set the delay from Ready to the removal of startup taints.
    #[must_use]
    pub fn startup_taint_delay(mut self, d: Duration) -> Self {
        self.startup_taint_delay = d;
        self
    }
    /// Set the delay from binding to Running.
    #[must_use]
    pub fn pod_start_delay(mut self, d: Duration) -> Self {
        self.pod_start_delay = d;
        self
    }
    /// Set the delay from deletion to removal of a bound pod.
    #[must_use]
    pub fn pod_stop_delay(mut self, d: Duration) -> Self {
        self.pod_stop_delay = d;
        self
    }
}

/// Where a kubelet learns which instances run: [`SimCloud`], or an adapter over a real cloud
/// provider (the embedded cluster on karp-aws uses one).
pub trait InstanceSource: Send + Sync {
    /// The region nodes are named after.
    fn region(&self) -> &str;
    /// Every known instance (running and terminated), with its type and launch request.
    fn instances(&self) -> Vec<SimInstance>;
}

impl InstanceSource for SimCloud {
    fn region(&self) -> &str {
        SimCloud::region(self)
    }
    fn instances(&self) -> Vec<SimInstance> {
        SimCloud::instances(self)
    }
}

/// The simulated kubelet of every instance of one [`InstanceSource`] (usually a [`SimCloud`]).
pub struct Kubelet {
    client: Client,
    cloud: Arc<dyn InstanceSource>,
    options: KubeletOptions,
    /// Provider ID → when its Node was registered (created or first seen).
    registered: BTreeMap<String, Instant>,
    /// Provider ID → when its Node was first Ready.
    ready_since: BTreeMap<String, Instant>,
    /// Node name → when we created it (until the cache shows it).
    created: BTreeMap<String, Instant>,
    /// Pod UID → when first seen bound to one of our nodes.
    pods_bound: BTreeMap<String, Instant>,
    /// Pod UID → when first seen deleting on one of our nodes.
    pods_deleting: BTreeMap<String, Instant>,
    /// Pod UID → its IP.
    pod_ips: BTreeMap<String, Ipv4Addr>,
    /// Pod UID → when its Running status was last written.
    pods_started: BTreeMap<String, Instant>,
    /// What the last pod pass saw: the pod and node caches' change counts and the live nodes.
    /// An unchanged view with nothing waiting on a timer needs no pass over every pod.
    tended: Option<(u64, u64, usize)>,
    /// The last pod pass left work for later (a start or stop delay running, a request sent).
    tend_again: bool,
    next_pod_ip: u64,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("options", &self.options)
            .field("nodes", &self.registered.len())
            .finish_non_exhaustive()
    }
}

fn is_conflict_or_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The pod status a kubelet reports for a running pod.
#[must_use]
pub fn running_pod_status(
    pod: &Pod,
    pod_ip: Ipv4Addr,
    host_ip: &str,
    now: &Time,
) -> serde_json::Value {
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let spec = pod.spec.as_ref();
    let containers: Vec<serde_json::Value> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()),
                "containerID": format!("containerd://{}-{}", pod.metadata.uid.clone().unwrap_or_default(), c.name),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    json!({
        "status": {
            "phase": "Running",
            "conditions": [
                cond("PodReadyToStartContainers"),
                cond("Initialized"),
                cond("Ready"),
                cond("ContainersReady"),
                cond("PodScheduled"),
            ],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip.to_string(),
            "podIPs": [{"ip": pod_ip.to_string()}],
            "startTime": now,
            "containerStatuses": containers,
            "qosClass": pod.status.as_ref().and_then(|s| s.qos_class.clone()).unwrap_or_else(|| "BestEffort".into()),
        }
    })
}

fn pod_is_running(pod: &Pod) -> bool {
    let Some(st) = pod.status.as_ref() else {
        return false;
    };
    st.phase.as_deref() == Some("Running")
        && st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

impl Kubelet {
    /// A kubelet for `cloud`'s instances talking to the cluster through `client`.
    #[must_use]
    pub fn new<S: InstanceSource + 'static>(
        client: Client,
        cloud: Arc<S>,
        options: KubeletOptions,
    ) -> Self {
        Kubelet {
            client,
            cloud: cloud as Arc<dyn InstanceSource>,
            options,
            registered: BTreeMap::new(),
            ready_since: BTreeMap::new(),
            created: BTreeMap::new(),
            pods_bound: BTreeMap::new(),
            pods_deleting: BTreeMap::new(),
            pod_ips: BTreeMap::new(),
            pods_started: BTreeMap::new(),
            tended: None,
            tend_again: false,
            next_pod_ip: 0,
        }
    }

    /// Run until `shutdown` completes. API errors are logged and retried on the next poll.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let caches = NodePodCaches::start(&self.client);
        run_node_pod_loop(&mut self, &caches, shutdown).await;
    }

    async fn pass_once(&mut self, nodes: &Cache<Node>, pods: &Cache<Pod>) {
        let now = Instant::now();
        let region = self.cloud.region().to_string();
        // Counted before the stores are read (see `Cache::changes`).
        let (pod_changes, node_changes) = (pods.changes(), nodes.changes());
        let node_map: BTreeMap<String, Arc<Node>> = nodes
            .store
            .state()
            .into_iter()
            .filter_map(|n| n.metadata.name.clone().map(|name| (name, n)))
            .collect();
        let mut live_nodes: BTreeMap<String, SimInstance> = BTreeMap::new();
        // Node registrations and status updates go out concurrently, as each node's kubelet
        // would send its own.
        let mut requests: Vec<BoxFuture<'static, ()>> = Vec::new();
        for inst in self.cloud.instances() {
            let name = inst.node_name(&region);
            let pid = inst.instance.provider_id.clone();
            match inst.state {
                InstanceState::Running => {
                    if let Some(node) = node_map.get(&name) {
                        self.created.remove(&name);
                        requests.extend(self.tend_node(&inst, node, &region, now));
                        live_nodes.insert(name, inst);
                    } else if self
                        .created
                        .get(&name)
                        .is_none_or(|t| now.duration_since(*t) > CREATE_GRACE)
                    {
                        requests.push(self.register(&inst, &region, now));
                    }
                }
                InstanceState::Terminated => {
                    self.registered.remove(&pid);
                    self.ready_since.remove(&pid);
                    if let Some(node) = node_map.get(&name) {
                        requests.extend(self.mark_unknown(&inst, node));
                    }
                }
            }
        }
        send_all(requests).await;
        let view = (pod_changes, node_changes, live_nodes.len());
        if self.tend_again || self.tended != Some(view) {
            self.tended = Some(view);
            self.tend_again = self.tend_pods(pods, &live_nodes, now).await;
        }
    }

    /// Registers the instance's Node (created, then its status through the subresource). The
    /// Node counts as created from now (a failed create is retried after [`CREATE_GRACE`]).
    fn register(
        &mut self,
        inst: &SimInstance,
        region: &str,
        now: Instant,
    ) -> BoxFuture<'static, ()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let t = self.options.clock.time();
        let node = node_object(inst, region, &t);
        let name = inst.node_name(region);
        self.created.insert(name.clone(), now);
        self.registered
            .insert(inst.instance.provider_id.clone(), now);
        self.ready_since.remove(&inst.instance.provider_id);
        // Some servers drop the status on create: send it through the status subresource too.
        let status = json!({"status": node_status(inst, region, Readiness::NotReady, &t)});
        let provider_id = inst.instance.provider_id.clone();
        Box::pin(async move {
            match api.create(&PostParams::default(), &node).await {
                Ok(_) => {
                    tracing::info!(node = %name, provider_id = %provider_id, "sim kubelet registered node");
                }
                Err(e) if is_conflict_or_exists(&e) => {}
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "sim kubelet could not register node");
                    return;
                }
            }
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                tracing::debug!(node = %name, error = %e, "sim kubelet could not post initial node status");
            }
        })
    }

    /// The Node's readiness as the instance's age says, then the startup taints removed once
    /// they are due: the requests to send, if any.
    fn tend_node(
        &mut self,
        inst: &SimInstance,
        node: &Node,
        region: &str,
        now: Instant,
    ) -> Option<BoxFuture<'static, ()>> {
        if node.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let pid = inst.instance.provider_id.clone();
        let name = inst.node_name(region);
        let registered = *self.registered.entry(pid.clone()).or_insert(now);
        let want_ready = now.duration_since(registered) >= self.options.ready_delay;
        let readiness = if want_ready {
            Readiness::Ready
        } else {
            Readiness::NotReady
        };
        let status = (ready_status(node) != Some(readiness.status())).then(
            || json!({"status": node_status(inst, region, readiness, &self.options.clock.time())}),
        );
        let taints = if want_ready {
            let ready_since = *self.ready_since.entry(pid).or_insert(now);
            if now.duration_since(ready_since) < self.options.startup_taint_delay {
                None
            } else {
                startup_taint_patch(inst, node)
            }
        } else {
            None
        };
        if status.is_none() && taints.is_none() {
            return None;
        }
        let api: Api<Node> = Api::all(self.client.clone());
        Some(Box::pin(async move {
            if let Some(status) = status {
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    Ok(_) => {
                        if want_ready {
                            tracing::info!(node = %name, "sim kubelet node ready");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "sim kubelet could not post node status");
                        return;
                    }
                }
            }
            let Some(Ok(patch)) = taints.map(serde_json::from_value) else {
                return;
            };
            match api
                .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
            {
                Ok(_) => tracing::info!(node = %name, "sim kubelet removed startup taints"),
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "sim kubelet startup taint removal raced; retrying")
                }
            }
        }))
    }

    /// The Node of a terminated instance goes Unknown: the request, unless it already is.
    fn mark_unknown(&mut self, inst: &SimInstance, node: &Node) -> Option<BoxFuture<'static, ()>> {
        if ready_status(node) == Some("Unknown")
            || node.spec.as_ref().and_then(|s| s.provider_id.as_deref())
                != Some(inst.instance.provider_id.as_str())
        {
            return None;
        }
        let name = node.metadata.name.clone()?;
        let api: Api<Node> = Api::all(self.client.clone());
        let status = json!({"status": {"conditions": node_conditions(Readiness::Unknown, &self.options.clock.time())}});
        Some(Box::pin(async move {
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => tracing::info!(node = %name, "sim kubelet stopped: node status unknown"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "sim kubelet could not mark node unknown")
                }
            }
        }))
    }

    /// Starts the pods bound to live nodes and removes the ones being deleted there, each after
    /// its delay. True when something is left for a later pass (a delay still running, or
    /// requests sent whose effect the next pass checks).
    async fn tend_pods(
        &mut self,
        pods: &Cache<Pod>,
        live_nodes: &BTreeMap<String, SimInstance>,
        now: Instant,
    ) -> bool {
        let mut waiting = false;
        let mut all: Vec<Arc<Pod>> = pods.store.state();
        all.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        // Pod UIDs on live nodes, borrowed from the cache's objects: most pods need nothing, and
        // nothing is copied for them.
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        // Stops and starts go out concurrently, as a kubelet per node would send them.
        let mut requests = Vec::new();
        for pod in &all {
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                continue;
            };
            let Some(inst) = live_nodes.get(node) else {
                continue;
            };
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let (Some(ns), Some(name)) = (
                pod.metadata.namespace.as_deref(),
                pod.metadata.name.as_deref(),
            ) else {
                continue;
            };
            seen.insert(uid);
            if pod.metadata.deletion_timestamp.is_some() {
                let since = first_seen(&mut self.pods_deleting, uid, now);
                waiting = true;
                if now.duration_since(since) >= self.options.pod_stop_delay {
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
                    let (ns, name) = (ns.to_string(), name.to_string());
                    requests.push(futures::future::Either::Left(async move {
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..DeleteParams::default()
                        };
                        match api.delete(&name, &dp).await {
                            Ok(_) => {
                                tracing::debug!(pod = %format!("{ns}/{name}"), "sim kubelet stopped pod")
                            }
                            Err(e) if is_not_found(&e) => {}
                            Err(e) => {
                                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "sim kubelet could not remove pod")
                            }
                        }
                    }));
                }
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) || pod_is_running(pod) {
                continue;
            }
            let since = first_seen(&mut self.pods_bound, uid, now);
            if now.duration_since(since) < self.options.pod_start_delay
                || self
                    .pods_started
                    .get(uid)
                    .is_some_and(|at| now.duration_since(*at) < START_GRACE)
            {
                waiting = true;
                continue;
            }
            self.pods_started.insert(uid.to_string(), now);
            let ip = match self.pod_ips.get(uid) {
                Some(ip) => *ip,
                None => {
                    self.next_pod_ip += 1;
                    let ip = pod_ip(self.next_pod_ip);
                    self.pod_ips.insert(uid.to_string(), ip);
                    ip
                }
            };
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let (ns, name, node) = (ns.to_string(), name.to_string(), node.to_string());
            let status = running_pod_status(
                pod,
                ip,
                &inst.private_ip.to_string(),
                &self.options.clock.time(),
            );
            requests.push(futures::future::Either::Right(async move {
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    Ok(_) => {
                        tracing::debug!(pod = %format!("{ns}/{name}"), node = %node, "sim kubelet started pod")
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "sim kubelet could not post pod status")
                    }
                }
            }));
        }
        let sent = !requests.is_empty();
        send_all(requests).await;
        self.pods_bound.retain(|uid, _| seen.contains(uid.as_str()));
        self.pods_deleting
            .retain(|uid, _| seen.contains(uid.as_str()));
        self.pod_ips.retain(|uid, _| seen.contains(uid.as_str()));
        self.pods_started
            .retain(|uid, _| seen.contains(uid.as_str()));
        waiting || sent
    }
}

/// The JSON patch that removes the instance's startup taints from `node`, if it still has
/// any. Optimistic concurrency: only the taints of the version looked at are replaced, so a
/// concurrent change by karp (removing karpenter.sh/unregistered) is never undone.
fn startup_taint_patch(inst: &SimInstance, node: &Node) -> Option<serde_json::Value> {
    let startup = removable_startup_taints(inst);
    if startup.is_empty() {
        return None;
    }
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let kept = without_startup_taints(&current, &startup)?;
    Some(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": node.metadata.resource_version},
        {"op": "replace", "path": "/spec/taints", "value": kept},
    ]))
}

/// When `uid` was first seen in `map`, recording `now` if it is new (the key is copied only
/// then).
fn first_seen(map: &mut BTreeMap<String, Instant>, uid: &str, now: Instant) -> Instant {
    if let Some(at) = map.get(uid) {
        return *at;
    }
    map.insert(uid.to_string(), now);
    now
}

/// Run a [`Kubelet`] until `shutdown` completes.
pub async fn run_kubelet<S: InstanceSource + 'static>(
    client: Client,
    cloud: Arc<S>,
    options: KubeletOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    Kubelet::new(client, cloud, options).run(shutdown).await;
}

impl NodePodLoop for Kubelet {
    fn ticker(&self) -> Ticker {
        Ticker::new(self.options.poll_interval, Duration::from_millis(20))
    }

    fn pass<'a>(
        &'a mut self,
        nodes: &'a Cache<Node>,
        pods: &'a Cache<Pod>,
    ) -> impl Future<Output = ()> + Send + 'a {
        self.pass_once(nodes, pods)
    }
}
