//! Simulated workload controllers (the parts of kube-controller-manager karp's tests need):
//!
//! - **Deployment** → one ReplicaSet per pod template, named `<deployment>-<10-char hash of the
//!   template>`, with the `pod-template-hash` label added to its selector and template; on a
//!   template change the new ReplicaSet gets all replicas and old ones are scaled to 0 at once
//!   (the `Recreate` behaviour; rolling-update pacing and `maxSurge` are not simulated).
//! - **ReplicaSet** → pods `<replicaset>-<random suffix>` (`generateName`); scale up and down to
//!   `spec.replicas` (default 1), recreating deleted or evicted pods; scale-down deletes unbound,
//!   then not-ready, then the newest pods first.
//! - **StatefulSet** → pods `<name>-<ordinal>`, created in parallel (`podManagementPolicy:
//!   Parallel` regardless of the spec), recreated with the same name once a deleted one is gone;
//!   volume claim templates are not turned into PersistentVolumeClaims.
//! - **Job** → `parallelism` (default 1) pods, none while `suspend` is true. Pods never complete in
//!   the simulation (the kubelet keeps them Running), so Jobs never finish.
//! - **Pod GC** → pods bound to a Node that no longer exists are deleted (after a direct GET
//!   confirms the Node is gone).
//!
//! `status.replicas` / `readyReplicas` / `availableReplicas` of Deployments, ReplicaSets and
//! StatefulSets and `status.active` of Jobs are kept up to date. Cascading deletion through owner
//! references is the API server's job.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::cache::{Cache, NodePodCaches, Ticker};

/// The label Deployments add to their ReplicaSets' selectors and templates.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The label a StatefulSet gives each pod with its name.
pub const STATEFULSET_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";

/// The label a Job gives its pods.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// How long a create or delete this controller made counts although the cache does not show it
/// yet (the real controllers' "expectations").
const EXPECTATION_TTL: Duration = Duration::from_secs(10);

/// At most this many pods created or deleted per ReplicaSet per pass (kube-controller-manager's
/// `burstReplicas`).
const BURST_REPLICAS: usize = 500;

/// Options of the workload controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadOptions {
    /// Periodic re-evaluation even without changes.
    pub resync: Duration,
    /// How long to gather a burst of changes before a pass.
    pub debounce: Duration,
    /// The time written into Job `startTime`.
    pub clock: crate::SimClock,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            resync: Duration::from_millis(500),
            debounce: Duration::from_millis(30),
            clock: crate::SimClock::default(),
        }
    }
}

impl WorkloadOptions {
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

const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A 10-character hash of a pod template (FNV-1a over its JSON, in Kubernetes' safe alphabet
/// without vowels), used in ReplicaSet names and the `pod-template-hash` label.
#[must_use]
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = String::with_capacity(10);
    for _ in 0..10 {
        let i = (h % HASH_ALPHABET.len() as u64) as usize;
        out.push(char::from(HASH_ALPHABET[i]));
        h /= HASH_ALPHABET.len() as u64;
    }
    out
}

/// A controller owner reference to `owner`.
fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone()?,
        uid: owner.meta().uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The UID of `obj`'s controller, if it has one.
#[must_use]
pub fn controller_uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Whether a pod counts as one of its controller's replicas (not terminal, not being deleted).
#[must_use]
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Whether the pod's Ready condition is True.
#[must_use]
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A pod from `template` in `namespace`, owned by `owner`, with extra labels.
#[must_use]
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name: Option<String>,
    generate_name: Option<String>,
    owner: Option<OwnerReference>,
    extra_labels: &BTreeMap<String, String>,
) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.extend(extra_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The order in which a ReplicaSet deletes surplus pods: unbound first, then not running, then
/// not ready, then newest first (name descending as the last tie-breaker).
pub fn sort_for_deletion(pods: &mut [&Pod]) {
    use k8s_openapi::jiff::Timestamp;
    use std::cmp::Reverse;
    /// (bound, running, ready, newest first, name descending), borrowed from the pod.
    type Key<'a> = (
        bool,
        bool,
        bool,
        Reverse<Option<Timestamp>>,
        Reverse<Option<&'a str>>,
    );
    fn key(p: &Pod) -> Key<'_> {
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        (
            bound,
            running,
            is_ready(p),
            Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            Reverse(p.metadata.name.as_deref()),
        )
    }
    pods.sort_by(|a, b| key(a).cmp(&key(b)));
}

#[derive(Debug, Default)]
struct Expectations {
    /// Owner UID → names of pods created but not yet seen.
    creates: BTreeMap<String, BTreeMap<String, Instant>>,
    /// Owner UID → UIDs of pods deleted but still seen active.
    deletes: BTreeMap<String, BTreeMap<String, Instant>>,
}

impl Expectations {
    /// Forgets the creates now seen and the deletes no longer active (or either expired). Only
    /// pods of owners with expectations are looked at, by reference.
    fn prune(&mut self, pods: &[Arc<Pod>], now: Instant) {
        if self.creates.is_empty() && self.deletes.is_empty() {
            return;
        }
        let mut names: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut active_uids: BTreeSet<&str> = BTreeSet::new();
        for p in pods {
            let Some(owner) = controller_uid(p.as_ref()) else {
                continue;
            };
            if self.creates.contains_key(owner) {
                if let Some(name) = p.metadata.name.as_deref() {
                    names.insert((owner, name));
                }
            }
            if self.deletes.contains_key(owner) && is_active(p) {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    active_uids.insert(uid);
                }
            }
        }
        for (owner, m) in &mut self.creates {
            m.retain(|name, at| {
                !names.contains(&(owner.as_str(), name.as_str()))
                    && now.duration_since(*at) < EXPECTATION_TTL
            });
        }
        self.creates.retain(|_, m| !m.is_empty());
        for m in self.deletes.values_mut() {
            m.retain(|uid, at| {
                active_uids.contains(uid.as_str()) && now.duration_since(*at) < EXPECTATION_TTL
            });
        }
        self.deletes.retain(|_, m| !m.is_empty());
    }

    fn pending_creates(&self, owner: &str) -> usize {
        self.creates.get(owner).map_or(0, BTreeMap::len)
    }

    fn pending_create(&self, owner: &str, name: &str) -> bool {
        self.creates
            .get(owner)
            .is_some_and(|m| m.contains_key(name))
    }

    fn deleting(&self, owner: &str, uid: &str) -> bool {
        self.deletes.get(owner).is_some_and(|m| m.contains_key(uid))
    }

    fn created(&mut self, owner: &str, name: String, now: Instant) {
        self.creates
            .entry(owner.to_string())
            .or_default()
            .insert(name, now);
    }

    fn deleted(&mut self, owner: &str, uid: String, now: Instant) {
        self.deletes
            .entry(owner.to_string())
            .or_default()
            .insert(uid, now);
    }
}

struct Caches {
    deployments: Cache<Deployment>,
    replicasets: Cache<ReplicaSet>,
    statefulsets: Cache<StatefulSet>,
    jobs: Cache<Job>,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<Node>>,
}

/// The simulated workload controllers and pod garbage collector.
pub struct WorkloadControllers {
    client: Client,
    options: WorkloadOptions,
    expectations: Expectations,
    /// ReplicaSets created (namespace, name) but not yet seen.
    rs_created: BTreeMap<(String, String), Instant>,
}

impl std::fmt::Debug for WorkloadControllers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadControllers")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn key_of<K: Resource>(o: &K) -> (String, String) {
    let (ns, name) = key_ref(o);
    (ns.to_string(), name.to_string())
}

/// The (namespace, name) of `o`, borrowed.
fn key_ref<K: Resource>(o: &K) -> (&str, &str) {
    (
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default(),
    )
}

/// The cache's objects by (namespace, name); keys are compared in place, not copied.
fn sorted<K: Resource + Clone>(cache: &Cache<K>) -> Vec<Arc<K>>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut v = cache.store.state();
    v.sort_unstable_by(|a, b| key_ref(a.as_ref()).cmp(&key_ref(b.as_ref())));
    v
}

fn log_err(what: &str, key: &str, e: &kube::Error) {
    if !matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
        tracing::warn!(object = %key, error = %e, "sim workload controller {what} failed");
    }
}

impl WorkloadControllers {
    /// Controllers working through `client`.
    #[must_use]
    pub fn new(client: Client, options: WorkloadOptions) -> Self {
        WorkloadControllers {
            client,
            options,
            expectations: Expectations::default(),
            rs_created: BTreeMap::new(),
        }
    }

    /// Run until `shutdown` completes. API errors are logged and retried on the next pass.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let shared = NodePodCaches::start(&self.client);
        self.run_shared(shared, shutdown).await;
    }

    /// Run with the Node and Pod caches shared with the other simulators until `shutdown`
    /// completes.
    pub(crate) async fn run_shared(
        mut self,
        shared: NodePodCaches,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let ticker = Ticker::new(self.options.resync, self.options.debounce);
        let c = &self.client;
        let w = &ticker.wake;
        shared.subscribe(w);
        let caches = Caches {
            deployments: Cache::start(Api::all(c.clone()), Arc::clone(w)),
            replicasets: Cache::start(Api::all(c.clone()), Arc::clone(w)),
            statefulsets: Cache::start(Api::all(c.clone()), Arc::clone(w)),
            jobs: Cache::start(Api::all(c.clone()), Arc::clone(w)),
            pods: shared.pods,
            nodes: shared.nodes,
        };
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => return,
            () = async {
                caches.deployments.ready().await;
                caches.replicasets.ready().await;
                caches.statefulsets.ready().await;
                caches.jobs.ready().await;
                caches.pods.ready().await;
                caches.nodes.ready().await;
            } => {}
        }
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = self.pass(&caches) => {}
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = ticker.tick() => {}
            }
        }
    }

    async fn pass(&mut self, caches: &Caches) {
        let now = Instant::now();
        let pods = sorted(&caches.pods);
        self.expectations.prune(&pods, now);
        let mut by_owner: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in &pods {
            if let Some(o) = controller_uid(p.as_ref()) {
                by_owner
                    .entry(o.to_string())
                    .or_default()
                    .push(Arc::clone(p));
            }
        }
        let replicasets = sorted(&caches.replicasets);
        for d in sorted(&caches.deployments) {
            self.deployment(&d, &replicasets, now).await;
        }
        for rs in &replicasets {
            let owned = rs.metadata.uid.as_ref().and_then(|u| by_owner.get(u));
            self.replicaset(rs, owned.map_or(&[][..], Vec::as_slice), now)
                .await;
        }
        for s in sorted(&caches.statefulsets) {
            let owned = s.metadata.uid.as_ref().and_then(|u| by_owner.get(u));
            self.statefulset(&s, owned.map_or(&[][..], Vec::as_slice), now)
                .await;
        }
        for j in sorted(&caches.jobs) {
            let owned = j.metadata.uid.as_ref().and_then(|u| by_owner.get(u));
            self.job(&j, owned.map_or(&[][..], Vec::as_slice), now)
                .await;
        }
        self.pod_gc(&pods, &caches.nodes).await;
    }

    /// Creates `count` pods from `pod` as kube-controller-manager does: in slow-start batches
    /// (1, 2, 4, … concurrent requests), stopping after a batch with a failure.
    async fn create_pods(&mut self, owner_uid: &str, pod: &Pod, count: usize, now: Instant) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let (mut left, mut batch) = (count, 1usize);
        while left > 0 {
            let n = batch.min(left);
            let pp = PostParams::default();
            let results = futures::future::join_all((0..n).map(|_| api.create(&pp, pod))).await;
            let mut failed = false;
            for r in results {
                match r {
                    Ok(created) => {
                        let name = created.name_any();
                        tracing::debug!(pod = %format!("{ns}/{name}"), "sim controller created pod");
                        self.expectations.created(owner_uid, name, now);
                    }
                    Err(e) => {
                        failed = true;
                        let name = pod
                            .metadata
                            .name
                            .clone()
                            .or_else(|| pod.metadata.generate_name.clone())
                            .unwrap_or_default();
                        log_err("pod create", &format!("{ns}/{name}"), &e);
                    }
                }
            }
            if failed {
                break;
            }
            left -= n;
            batch = (batch * 2).min(BURST_REPLICAS);
        }
    }

    /// Deletes `pods` concurrently (one burst).
    async fn delete_pods(&mut self, owner_uid: &str, pods: &[&Pod], now: Instant) {
        let dp = DeleteParams::default();
        let results = futures::future::join_all(pods.iter().map(|p| {
            let (ns, name) = key_of(*p);
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let dp = &dp;
            async move {
                let r = api.delete(&name, dp).await;
                (ns, name, r)
            }
        }))
        .await;
        for ((ns, name, r), p) in results.into_iter().zip(pods) {
            match r {
                Ok(_) => {
                    tracing::debug!(pod = %format!("{ns}/{name}"), "sim controller deleted pod");
                    if let Some(uid) = p.metadata.uid.clone() {
                        self.expectations.deleted(owner_uid, uid, now);
                    }
                }
                Err(e) => log_err("pod delete", &format!("{ns}/{name}"), &e),
            }
        }
    }

    async fn create_pod(&mut self, owner_uid: &str, pod: &Pod, now: Instant) {
        self.create_pods(owner_uid, pod, 1, now).await;
    }

    async fn delete_pod(&mut self, owner_uid: &str, pod: &Pod, now: Instant) {
        self.delete_pods(owner_uid, &[pod], now).await;
    }

    async fn patch_status<K>(&self, obj: &K, status: serde_json::Value)
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
    {
        let (ns, name) = key_of(obj);
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            log_err("status update", &format!("{ns}/{name}"), &e);
        }
    }

    async fn deployment(&mut self, d: &Deployment, replicasets: &[Arc<ReplicaSet>], now: Instant) {
        if d.metadata.deletion_timestamp.is_some() {
            return;
        }
        let (ns, name) = key_of(d);
        let (Some(uid), spec) = (d.metadata.uid.clone(), &d.spec) else {
            return;
        };
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let hash = template_hash(&spec.template);
        let current_name = format!("{name}-{hash}");
        let owned: Vec<&Arc<ReplicaSet>> = replicasets
            .iter()
            .filter(|rs| controller_uid(rs.as_ref()) == Some(uid.as_str()))
            .collect();
        let current = owned.iter().find(|rs| rs.name_any() == current_name);
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        match current {
            None => {
                let key = (ns.clone(), current_name.clone());
                let pending = self
                    .rs_created
                    .get(&key)
                    .is_some_and(|at| now.duration_since(*at) < EXPECTATION_TTL);
                if !pending {
                    let mut template = spec.template.clone();
                    let tmeta = template.metadata.get_or_insert_with(ObjectMeta::default);
                    tmeta
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
                    let mut selector: LabelSelector = spec.selector.clone();
                    selector
                        .match_labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
                    let mut labels = spec
                        .template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default();
                    labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
                    let rs = ReplicaSet {
                        metadata: ObjectMeta {
                            name: Some(current_name.clone()),
                            namespace: Some(ns.clone()),
                            labels: Some(labels),
                            owner_references: owner_ref(d).map(|o| vec![o]),
                            ..ObjectMeta::default()
                        },
                        spec: ReplicaSetSpec {
                            replicas: Some(replicas),
                            selector,
                            template: Some(template),
                            min_ready_seconds: spec.min_ready_seconds,
                        },
                        status: None,
                    };
                    match api.create(&PostParams::default(), &rs).await {
                        Ok(_) => {
                            tracing::info!(replicaset = %format!("{ns}/{current_name}"), "sim controller created replicaset");
                            self.rs_created.insert(key, now);
                        }
                        Err(e) => log_err("replicaset create", &format!("{ns}/{current_name}"), &e),
                    }
                }
            }
            Some(rs) => {
                self.rs_created.remove(&(ns.clone(), current_name.clone()));
                if rs.spec.replicas != Some(replicas) {
                    self.scale_rs(&api, rs, replicas).await;
                }
            }
        }
        for rs in &owned {
            if rs.name_any() != current_name && rs.spec.replicas.unwrap_or(1) != 0 {
                self.scale_rs(&api, rs, 0).await;
            }
        }
        // Status from the ReplicaSets.
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| owned.iter().map(|rs| f(rs)).sum::<i32>();
        let total = sum(&|rs| rs.status.as_ref().map_or(0, |s| s.replicas));
        let ready = sum(&|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        });
        let available = sum(&|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0)
        });
        let updated = current
            .and_then(|rs| rs.status.as_ref())
            .map_or(0, |s| s.replicas);
        let unavailable = (replicas - available).max(0);
        let status = d.status.clone().unwrap_or_default();
        let want = (
            Some(total),
            Some(ready),
            Some(available),
            Some(updated),
            d.metadata.generation,
        );
        let have = (
            status.replicas,
            status.ready_replicas,
            status.available_replicas,
            status.updated_replicas,
            status.observed_generation,
        );
        if want != have {
            let available_cond = if available >= replicas {
                "True"
            } else {
                "False"
            };
            self.patch_status(
                d,
                json!({
                    "replicas": total,
                    "readyReplicas": ready,
                    "availableReplicas": available,
                    "updatedReplicas": updated,
                    "unavailableReplicas": unavailable,
                    "observedGeneration": d.metadata.generation,
                    "conditions": [{
                        "type": "Available",
                        "status": available_cond,
                        "reason": if available_cond == "True" { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                        "message": if available_cond == "True" { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                    }],
                }),
            )
            .await;
        }
    }

    async fn scale_rs(&self, api: &Api<ReplicaSet>, rs: &ReplicaSet, replicas: i32) {
        let name = rs.name_any();
        match api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(replicaset = %name, replicas, "sim controller scaled replicaset")
            }
            Err(e) => log_err("replicaset scale", &name, &e),
        }
    }

    async fn replicaset(&mut self, rs: &ReplicaSet, owned: &[Arc<Pod>], now: Instant) {
        let (ns, name) = key_of(rs);
        let (Some(uid), spec) = (rs.metadata.uid.clone(), &rs.spec) else {
            return;
        };
        let active: Vec<&Pod> = owned
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| {
                is_active(p)
                    && !self
                        .expectations
                        .deleting(&uid, p.metadata.uid.as_deref().unwrap_or(""))
            })
            .collect();
        if rs.metadata.deletion_timestamp.is_none() {
            if let Some(template) = spec.template.as_ref() {
                let desired = spec.replicas.unwrap_or(1).max(0) as usize;
                let have = active.len() + self.expectations.pending_creates(&uid);
                if have < desired {
                    let pod = pod_from_template(
                        template,
                        &ns,
                        None,
                        Some(format!("{name}-")),
                        owner_ref(rs),
                        &BTreeMap::new(),
                    );
                    self.create_pods(&uid, &pod, (desired - have).min(BURST_REPLICAS), now)
                        .await;
                } else if have > desired && self.expectations.pending_creates(&uid) == 0 {
                    let mut victims = active.clone();
                    sort_for_deletion(&mut victims);
                    victims.truncate((have - desired).min(BURST_REPLICAS));
                    self.delete_pods(&uid, &victims, now).await;
                }
            }
        }
        let replicas = active.len() as i32;
        let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
        let status = rs.status.clone().unwrap_or_default();
        let want = (replicas, Some(ready), Some(ready), rs.metadata.generation);
        let have = (
            status.replicas,
            status.ready_replicas,
            status.available_replicas,
            status.observed_generation,
        );
        if want != have {
            self.patch_status(
                rs,
                json!({
                    "replicas": replicas,
                    "fullyLabeledReplicas": replicas,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "observedGeneration": rs.metadata.generation,
                }),
            )
            .await;
        }
    }

    async fn statefulset(&mut self, s: &StatefulSet, owned: &[Arc<Pod>], now: Instant) {
        if s.metadata.deletion_timestamp.is_some() {
            return;
        }
        let (ns, name) = key_of(s);
        let (Some(uid), spec) = (s.metadata.uid.clone(), &s.spec) else {
            return;
        };
        let desired = spec.replicas.unwrap_or(1).max(0);
        let by_name: BTreeMap<String, &Pod> =
            owned.iter().map(|p| (p.name_any(), p.as_ref())).collect();
        for i in 0..desired {
            let pod_name = format!("{name}-{i}");
            if by_name.contains_key(&pod_name) || self.expectations.pending_create(&uid, &pod_name)
            {
                continue;
            }
            let extra = BTreeMap::from([
                (STATEFULSET_POD_NAME.to_string(), pod_name.clone()),
                ("apps.kubernetes.io/pod-index".to_string(), i.to_string()),
            ]);
            let mut pod = pod_from_template(
                &spec.template,
                &ns,
                Some(pod_name.clone()),
                None,
                owner_ref(s),
                &extra,
            );
            if let Some(ps) = pod.spec.as_mut() {
                ps.hostname = Some(pod_name.clone());
                if let Some(svc) = spec.service_name.clone().filter(|s| !s.is_empty()) {
                    ps.subdomain = Some(svc);
                }
            }
            self.create_pod(&uid, &pod, now).await;
        }
        // Surplus ordinals, highest first.
        let mut surplus: Vec<(i64, &Pod)> = owned
            .iter()
            .filter(|p| is_active(p))
            .filter_map(|p| {
                let ord = p
                    .name_any()
                    .strip_prefix(&format!("{name}-"))
                    .and_then(|o| o.parse::<i64>().ok())?;
                (ord >= i64::from(desired)).then_some((ord, p.as_ref()))
            })
            .collect();
        surplus.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
        for (_, p) in surplus {
            if !self
                .expectations
                .deleting(&uid, p.metadata.uid.as_deref().unwrap_or(""))
            {
                self.delete_pod(&uid, p, now).await;
            }
        }
        let active: Vec<&Pod> = owned
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| is_active(p))
            .collect();
        let replicas = active.len() as i32;
        let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
        let status = s.status.clone().unwrap_or_default();
        let want = (replicas, Some(ready), Some(ready), s.metadata.generation);
        let have = (
            status.replicas,
            status.ready_replicas,
            status.available_replicas,
            status.observed_generation,
        );
        if want != have {
            self.patch_status(
                s,
                json!({
                    "replicas": replicas,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "currentReplicas": replicas,
                    "updatedReplicas": replicas,
                    "observedGeneration": s.metadata.generation,
                }),
            )
            .await;
        }
    }

    async fn job(&mut self, j: &Job, owned: &[Arc<Pod>], now: Instant) {
        if j.metadata.deletion_timestamp.is_some() {
            return;
        }
        let (ns, name) = key_of(j);
        let (Some(uid), Some(spec)) = (j.metadata.uid.clone(), j.spec.as_ref()) else {
            return;
        };
        let desired = if spec.suspend == Some(true) {
            0
        } else {
            spec.parallelism.unwrap_or(1).max(0) as usize
        };
        let active: Vec<&Pod> = owned
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| {
                is_active(p)
                    && !self
                        .expectations
                        .deleting(&uid, p.metadata.uid.as_deref().unwrap_or(""))
            })
            .collect();
        let have = active.len() + self.expectations.pending_creates(&uid);
        if have < desired {
            let extra = BTreeMap::from([
                (JOB_NAME.to_string(), name.clone()),
                ("job-name".to_string(), name.clone()),
                (
                    "batch.kubernetes.io/controller-uid".to_string(),
                    uid.clone(),
                ),
                ("controller-uid".to_string(), uid.clone()),
            ]);
            let pod = pod_from_template(
                &spec.template,
                &ns,
                None,
                Some(format!("{name}-")),
                owner_ref(j),
                &extra,
            );
            for _ in have..desired {
                self.create_pod(&uid, &pod, now).await;
            }
        } else if have > desired && self.expectations.pending_creates(&uid) == 0 {
            let mut victims = active.clone();
            sort_for_deletion(&mut victims);
            for p in victims.into_iter().take(have - desired) {
                self.delete_pod(&uid, p, now).await;
            }
        }
        let n = active.len() as i32;
        let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
        let status = j.status.clone().unwrap_or_default();
        if status.active.unwrap_or(0) != n
            || status.ready.unwrap_or(0) != ready
            || status.start_time.is_none()
        {
            let start = status
                .start_time
                .clone()
                .unwrap_or_else(|| self.options.clock.time());
            self.patch_status(j, json!({"active": n, "ready": ready, "startTime": start}))
                .await;
        }
    }

    async fn pod_gc(&self, pods: &[Arc<Pod>], nodes: &Cache<Node>) {
        let known: BTreeSet<String> = nodes.store.state().iter().map(|n| n.name_any()).collect();
        let mut confirmed_missing: BTreeMap<String, bool> = BTreeMap::new();
        let node_api: Api<Node> = Api::all(self.client.clone());
        for p in pods {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            if known.contains(&node) {
                continue;
            }
            let missing = match confirmed_missing.get(&node) {
                Some(m) => *m,
                None => {
                    let m = matches!(node_api.get(&node).await, Err(kube::Error::Api(s)) if s.code == 404);
                    confirmed_missing.insert(node.clone(), m);
                    m
                }
            };
            if !missing {
                continue;
            }
            let (ns, name) = key_of(p.as_ref());
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), node = %node, "sim pod gc deleted orphaned pod")
                }
                Err(e) => log_err("pod gc", &format!("{ns}/{name}"), &e),
            }
        }
    }
}

/// Run the [`WorkloadControllers`] until `shutdown` completes.
pub async fn run_workload_controllers(
    client: Client,
    options: WorkloadOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    WorkloadControllers::new(client, options)
        .run(shutdown)
        .await;
}
