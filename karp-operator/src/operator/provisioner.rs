//! Provisioning: pending pods → NodeClaims.
//!
//! [`plan`] is the pure decision (cluster objects in, NodeClaims out), reusing `karp plan`'s
//! conversion and karp-core's scheduler; [`Provisioner::run`] batches (the window closes after 1 s
//! without new pending pods, or 10 s after it opened) and creates the claims.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use karp_core::cloud::InstanceType;
use karp_core::labels;
use karp_core::requirements::{Operator, Requirements};
use karp_core::resources::{Quantity, Resources};
use karp_core::scheduling::{schedule, SchedulerOptions};
use karp_core::taints::Taint;
use kube::api::{Api, PostParams};
use kube::Resource;
use tracing::{debug, info, info_span, warn, Instrument};

use super::objects::{NodeClaim, NodeClaimSpec, ResourceRequirements, UNREGISTERED_TAINT};
use super::{Context, OperatorError};
use crate::convert::{build_snapshot, CatalogSource, ConvertError};
use crate::manifests::{Loaded, Manifests, Object, ObjectRef};
use crate::nodepool::{FlexString, NodePool, NodeSelectorRequirementWithMinValues, TaintSpec};

/// Whether a pod is waiting for capacity: not bound, not terminating, and marked Unschedulable by
/// the kube-scheduler (Karpenter's definition of provisionable).
#[must_use]
pub fn is_provisionable(p: &Pod) -> bool {
    if p.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let spec = p.spec.as_ref();
    if spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
    {
        return false;
    }
    let status = p.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return false;
    }
    status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
}

fn is_daemonset_pod(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet")
}

fn origin(kind: &str, namespace: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        file: "cluster".into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
    }
}

/// What the provisioner reads from the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
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
}

/// The provisioner's decision.
#[derive(Debug, Clone, Default)]
pub struct ProvisionPlan {
    /// NodeClaims to create (names left to `generateName`).
    pub nodeclaims: Vec<NodeClaim>,
    /// For each planned claim, the pods (`namespace/name`) it is for.
    pub pods_per_claim: Vec<Vec<String>>,
    /// Pods that fit nowhere, with the reason.
    pub unschedulable: Vec<(String, String)>,
    /// Provisionable pods considered.
    pub pending: usize,
}

/// Quantities of a resource vector as Kubernetes writes them (`1930m`, `6903Mi`, `29`).
#[must_use]
pub fn quantities(r: &Resources) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let bytes = |b: i64| {
        if b % (1 << 20) == 0 {
            format!("{}Mi", b >> 20)
        } else if b % 1024 == 0 {
            format!("{}Ki", b >> 10)
        } else {
            b.to_string()
        }
    };
    if r.cpu != 0 {
        m.insert(
            "cpu".into(),
            if r.cpu % 1000 == 0 {
                (r.cpu / 1000).to_string()
            } else {
                format!("{}m", r.cpu)
            },
        );
    }
    if r.memory != 0 {
        m.insert("memory".into(), bytes(r.memory));
    }
    if r.ephemeral_storage != 0 {
        m.insert("ephemeral-storage".into(), bytes(r.ephemeral_storage));
    }
    if r.pods != 0 {
        m.insert("pods".into(), r.pods.to_string());
    }
    for (k, v) in &r.extended {
        m.insert(k.clone(), v.to_string());
    }
    m
}

/// Parses a quantity map (status.allocatable, spec.resources.requests); invalid entries are skipped.
#[must_use]
pub fn parse_quantities(m: &BTreeMap<String, String>) -> Resources {
    let mut r = Resources::new();
    for (k, v) in m {
        if let Ok(q) = v.parse::<Quantity>() {
            r.set(k, &q);
        }
    }
    r
}

fn taint_spec(t: &Taint) -> TaintSpec {
    TaintSpec {
        key: t.key.clone(),
        value: (!t.value.is_empty()).then(|| t.value.clone()),
        effect: t.effect.as_str().to_string(),
    }
}

/// Requirements as NodeClaim spec entries.
#[must_use]
pub fn requirement_specs(reqs: &Requirements) -> Vec<NodeSelectorRequirementWithMinValues> {
    reqs.to_node_selector()
        .into_iter()
        .map(|r| NodeSelectorRequirementWithMinValues {
            key: r.key,
            operator: r.operator.as_str().to_string(),
            values: r.values.into_iter().map(FlexString).collect(),
            min_values: r.min_values.and_then(|n| i64::try_from(n).ok()),
        })
        .collect()
}

/// The labels a NodeClaim's node will have: its own labels plus every single-valued `In`
/// requirement.
#[must_use]
pub fn claim_labels(claim: &NodeClaim) -> BTreeMap<String, String> {
    let mut l = claim.metadata.labels.clone().unwrap_or_default();
    for r in &claim.spec.requirements {
        if r.operator == "In" && r.values.len() == 1 {
            l.entry(r.key.clone())
                .or_insert_with(|| r.values[0].0.clone());
        }
    }
    l
}

fn taints_of(specs: &[TaintSpec]) -> Vec<Taint> {
    specs
        .iter()
        .filter_map(|t| {
            karp_core::taints::Effect::parse(&t.effect)
                .map(|e| Taint::new(t.key.clone(), t.value.clone().unwrap_or_default(), e))
        })
        .collect()
}

/// Claim taints (template taints) as core taints.
#[must_use]
pub fn claim_taints(claim: &NodeClaim) -> Vec<Taint> {
    taints_of(&claim.spec.taints)
}

/// Claim startup taints as core taints.
#[must_use]
pub fn claim_startup_taints(claim: &NodeClaim) -> Vec<Taint> {
    taints_of(&claim.spec.startup_taints)
}

fn node_provider_id(n: &Node) -> Option<&str> {
    n.spec.as_ref().and_then(|s| s.provider_id.as_deref())
}

/// Decides which NodeClaims to create for the provisionable pods.
///
/// # Errors
/// [`ConvertError`] when a cluster object cannot be converted (it names the object and field).
pub fn plan(
    objects: &ClusterObjects,
    types: BTreeMap<String, Vec<Arc<InstanceType>>>,
) -> Result<ProvisionPlan, ConvertError> {
    let mut m = Manifests::default();
    let mut pending = 0;
    for p in &objects.pods {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let bound = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let terminal = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if terminal || (!bound && (!is_provisionable(p) || is_daemonset_pod(p))) {
            continue;
        }
        if !bound {
            pending += 1;
        }
        m.objects.push(Loaded {
            origin: origin("Pod", Some(ns), name),
            object: Object::Pod(Box::new((**p).clone())),
        });
    }
    // Nodes owned by a NodeClaim are seen through the claim: the unregistered and startup taints
    // are going away, and an uninitialized node is in flight.
    let claims_by_provider: BTreeMap<&str, &NodeClaim> = objects
        .nodeclaims
        .iter()
        .filter_map(|c| c.provider_id().map(|p| (p, c.as_ref())))
        .collect();
    let mut claimed_nodes: BTreeMap<String, &NodeClaim> = BTreeMap::new();
    for n in &objects.nodes {
        let name = n.metadata.name.as_deref().unwrap_or_default();
        if let Some(c) = node_provider_id(n).and_then(|p| claims_by_provider.get(p)) {
            claimed_nodes.insert(name.to_string(), c);
        }
        m.objects.push(Loaded {
            origin: origin("Node", None, name),
            object: Object::Node(Box::new((**n).clone())),
        });
    }
    for np in &objects.nodepools {
        if np.metadata.deletion_timestamp.is_some() {
            continue;
        }
        m.objects.push(Loaded {
            origin: origin(
                "NodePool",
                None,
                np.metadata.name.as_deref().unwrap_or_default(),
            ),
            object: Object::NodePool(Box::new((**np).clone())),
        });
    }
    for d in &objects.daemonsets {
        m.objects.push(Loaded {
            origin: origin(
                "DaemonSet",
                Some(d.metadata.namespace.as_deref().unwrap_or("default")),
                d.metadata.name.as_deref().unwrap_or_default(),
            ),
            object: Object::DaemonSet(Box::new((**d).clone())),
        });
    }
    for n in &objects.namespaces {
        m.objects.push(Loaded {
            origin: origin(
                "Namespace",
                None,
                n.metadata.name.as_deref().unwrap_or_default(),
            ),
            object: Object::Namespace(Box::new((**n).clone())),
        });
    }
    let mut converted = build_snapshot(&m, &CatalogSource::Types(types))?;
    let snapshot = &mut converted.snapshot;
    for node in &mut snapshot.nodes {
        if let Some(claim) = claimed_nodes.get(&node.name) {
            let startup: Vec<Taint> = claim_startup_taints(claim);
            node.taints
                .retain(|t| t.key != UNREGISTERED_TAINT && !startup.contains(t));
            node.initialized = claim.is_true("Initialized");
        }
    }
    // In-flight claims without a node yet: capacity that is coming.
    let registered: BTreeSet<&str> = objects
        .nodes
        .iter()
        .filter_map(|n| node_provider_id(n))
        .collect();
    for c in &objects.nodeclaims {
        if c.metadata.deletion_timestamp.is_some()
            || c.provider_id().is_some_and(|p| registered.contains(p))
        {
            continue;
        }
        let status = c.status.clone().unwrap_or_default();
        let allocatable = if status.allocatable.is_empty() {
            parse_quantities(&c.spec.resources.clone().unwrap_or_default().requests)
        } else {
            parse_quantities(&status.allocatable)
        };
        let name = c.metadata.name.clone().unwrap_or_default();
        let mut node = karp_core::cluster::Node::new(name, claim_labels(c), allocatable);
        node.taints = claim_taints(c);
        node.initialized = false;
        snapshot.nodes.push(node);
    }
    let results = schedule(snapshot, &SchedulerOptions::default());
    let pod_name = |i: usize| {
        let p = &snapshot.pods[i];
        format!("{}/{}", p.namespace, p.name)
    };
    let mut out = ProvisionPlan {
        pending,
        ..ProvisionPlan::default()
    };
    for u in &results.unschedulable {
        out.unschedulable.push((pod_name(u.pod), u.reason.clone()));
    }
    for c in &results.new_nodeclaims {
        let Some(np) = objects
            .nodepools
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(c.nodepool.as_str()))
        else {
            continue;
        };
        let pool = snapshot.node_pools.iter().find(|p| p.name == c.nodepool);
        let t = &np.spec.template;
        let mut labels = t.metadata.labels.clone();
        labels.insert(labels::NODEPOOL.into(), c.nodepool.clone());
        if let Some(r) = &t.spec.node_class_ref {
            labels.insert("karpenter.k8s.aws/ec2nodeclass".into(), r.name.clone());
        }
        let mut requirements = c.requirements.clone();
        // The scheduler's view keeps every option; the claim carries them as requirements.
        if requirements.get(labels::INSTANCE_TYPE).is_none() {
            requirements.add(karp_core::requirements::Requirement::in_values(
                labels::INSTANCE_TYPE,
                c.instance_types.iter().map(|it| it.name.clone()),
            ));
        }
        let owner = OwnerReference {
            api_version: "karpenter.sh/v1".into(),
            kind: "NodePool".into(),
            name: c.nodepool.clone(),
            uid: np.metadata.uid.clone().unwrap_or_default(),
            block_owner_deletion: Some(true),
            controller: None,
        };
        let claim = NodeClaim {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", c.nodepool)),
                labels: Some(labels),
                annotations: (!t.metadata.annotations.is_empty())
                    .then(|| t.metadata.annotations.clone()),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            spec: NodeClaimSpec {
                requirements: requirement_specs(&requirements),
                resources: Some(ResourceRequirements {
                    requests: quantities(&c.requests),
                }),
                taints: c.taints.iter().map(taint_spec).collect(),
                startup_taints: pool
                    .map(|p| p.startup_taints.iter().map(taint_spec).collect())
                    .unwrap_or_default(),
                node_class_ref: t.spec.node_class_ref.clone(),
                expire_after: np.spec.expire_after().map(str::to_string),
                termination_grace_period: t
                    .spec
                    .termination_grace_period
                    .as_ref()
                    .map(|s| s.0.clone()),
            },
            ..NodeClaim::default()
        };
        out.nodeclaims.push(claim);
        out.pods_per_claim
            .push(c.pods.iter().map(|&i| pod_name(i)).collect());
    }
    Ok(out)
}

/// Requirements of a NodeClaim spec, parsed (entries that do not parse are dropped).
#[must_use]
pub fn claim_requirements(claim: &NodeClaim) -> Requirements {
    let mut reqs = Requirements::new();
    for r in &claim.spec.requirements {
        let Ok(op) = Operator::parse(&r.operator) else {
            continue;
        };
        let nsr = karp_core::requirements::NodeSelectorRequirement {
            key: r.key.clone(),
            operator: op,
            values: r.values.iter().map(|v| v.0.clone()).collect(),
            min_values: r.min_values.and_then(|n| usize::try_from(n).ok()),
        };
        if let Ok(req) = karp_core::requirements::Requirement::from_node_selector(&nsr) {
            reqs.add(req);
        }
    }
    reqs
}

/// The provisioning loop.
#[derive(Debug, Clone, Copy)]
pub struct BatchWindow {
    /// The window closes after this long without a new pending pod.
    pub idle: Duration,
    /// ... or this long after it opened.
    pub max: Duration,
    /// How often the pending set is checked.
    pub poll: Duration,
}

impl Default for BatchWindow {
    fn default() -> Self {
        BatchWindow {
            idle: Duration::from_secs(1),
            max: Duration::from_secs(10),
            poll: Duration::from_millis(100),
        }
    }
}

/// Runs provisioning until `ctx.shutdown` fires.
pub struct Provisioner;

impl Provisioner {
    /// Loop: wait for provisionable pods, batch, plan, create NodeClaims.
    pub async fn run(ctx: Arc<Context>, window: BatchWindow) {
        let mut handled: BTreeSet<String> = BTreeSet::new();
        let mut last_pass = Instant::now();
        loop {
            if ctx.is_shutdown() {
                return;
            }
            let pending = ctx.stores.provisionable_pods();
            // Pods that are no longer pending leave the handled set (so they are planned again if
            // they come back, e.g. after their node went away).
            handled.retain(|p| pending.contains(p));
            // Pods still pending after a pass are planned again now and then (a node class may have
            // become ready, a limit may have been raised, a launch may have failed).
            if !pending.is_empty() && last_pass.elapsed() >= ctx.settings.provision_retry {
                handled.clear();
            }
            let fresh: BTreeSet<String> = pending.difference(&handled).cloned().collect();
            if fresh.is_empty() {
                tokio::time::sleep(window.poll).await;
                continue;
            }
            // Batch window.
            let opened = Instant::now();
            let mut last_change = Instant::now();
            let mut seen = pending.clone();
            loop {
                tokio::time::sleep(window.poll).await;
                let now_pending = ctx.stores.provisionable_pods();
                if now_pending != seen {
                    seen = now_pending;
                    last_change = Instant::now();
                }
                if last_change.elapsed() >= window.idle || opened.elapsed() >= window.max {
                    break;
                }
            }
            let span = info_span!("provision", pending = seen.len());
            last_pass = Instant::now();
            match Self::provision_once(&ctx).instrument(span).await {
                Ok(()) => {
                    handled.extend(seen);
                }
                Err(e) => {
                    warn!(error = %e, "provisioning failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One provisioning pass over the current cluster state.
    ///
    /// # Errors
    /// [`OperatorError`] when the cluster state cannot be converted or the API fails.
    pub async fn provision_once(ctx: &Context) -> Result<(), OperatorError> {
        let objects = ctx.stores.objects();
        let mut types = BTreeMap::new();
        for np in &objects.nodepools {
            let Some(class) = np
                .spec
                .template
                .spec
                .node_class_ref
                .as_ref()
                .map(|r| r.name.clone())
            else {
                continue;
            };
            if types.contains_key(&class) {
                continue;
            }
            let pool = np.metadata.name.clone().unwrap_or_default();
            match ctx.cloud.instance_types(&pool, Some(&class)).await {
                Ok(t) => {
                    types.insert(class, t);
                }
                Err(e) => debug!(nodepool = %pool, error = %e, "no instance types"),
            }
        }
        let started = Instant::now();
        let plan = plan(&objects, types).map_err(|e| OperatorError::Convert(e.to_string()))?;
        ctx.metrics
            .observe_scheduling(started.elapsed().as_secs_f64());
        for (pod, reason) in &plan.unschedulable {
            debug!(%pod, %reason, "unschedulable");
        }
        let api: Api<NodeClaim> = Api::all(ctx.client.clone());
        for (claim, pods) in plan.nodeclaims.iter().zip(&plan.pods_per_claim) {
            let created = api
                .create(&PostParams::default(), claim)
                .await
                .map_err(|e| OperatorError::Kube("create NodeClaim", e.to_string()))?;
            let name = created.meta().name.clone().unwrap_or_default();
            ctx.metrics.inc(
                "karpenter_nodeclaims_created_total",
                &[
                    ("nodepool", created.nodepool().unwrap_or_default()),
                    ("reason", "provisioning"),
                ],
            );
            info!(nodeclaim = %name, pods = pods.len(), "created NodeClaim");
            ctx.events
                .publish_nodeclaim(
                    &created,
                    "Normal",
                    "Nominated",
                    &format!("planned for {} pod(s): {}", pods.len(), pods.join(", ")),
                )
                .await;
            // Each pod learns where it is going (Karpenter's Nominated event on the pod).
            for pod in pods {
                let (ns, pod_name) = pod.split_once('/').unwrap_or(("default", pod.as_str()));
                let reference = k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    namespace: Some(ns.to_string()),
                    name: Some(pod_name.to_string()),
                    ..Default::default()
                };
                ctx.events
                    .publish(
                        &reference,
                        "Normal",
                        "Nominated",
                        &format!("Pod should schedule on: nodeclaim/{name}"),
                    )
                    .await;
            }
        }
        Ok(())
    }
}
