//! Kubernetes objects → karp-core's [`DisruptionInput`]: the snapshot from
//! [`build_snapshot`](super::build_snapshot) plus NodeClaim facts of managed nodes, pod metadata,
//! PodDisruptionBudgets and NodePool disruption settings.
//!
//! A Node is managed when it carries `karpenter.sh/nodepool` naming a NodePool of the input. Its
//! NodeClaim (matched by `providerID`) gives `expireAfter`, `terminationGracePeriod`, conditions
//! (`Initialized`, `Drifted`), the NodePool hash annotations and `lastPodEventTime`; a managed
//! Node without one stands for it (initialized when labelled `karpenter.sh/initialized: "true"`,
//! `expireAfter` / `terminationGracePeriod` from its NodePool's template, last pod event = the
//! latest start of its non-DaemonSet pods). A Node without a `Ready` condition (a hand-written
//! manifest) counts as Ready. A PDB without `status` gets `disruptionsAllowed` computed from the
//! pods it selects, as kube-controller-manager does (bound pods without status count as Running
//! and Ready).
//!
//! Drift, at `now`, as Karpenter's NodeClaim disruption controller decides it, first match wins:
//! a `Drifted` condition already on the NodeClaim (its reason kept); `NodePoolDrifted` (the
//! `karpenter.sh/nodepool-hash` annotations differ under equal hash versions);
//! `RequirementsDrifted` (the node's labels are no longer compatible with the NodePool template's
//! requirements: every requirement on a label the node has must allow its value, and one on a
//! label it lacks must be `NotIn` or `DoesNotExist`); `InstanceTypeNotFound` (the node's
//! instance type is no longer among its NodePool's instance types, or none of that type's
//! offerings, available or not, matches the node's zone and capacity type). The labels judged
//! are the Node's overlaid with the NodeClaim's (beta keys normalized), completed with the labels
//! the catalog's instance type pins to one value when the manifests leave them out (Karpenter
//! stamps them on every NodeClaim it launches). A node without an instance-type label is not
//! judged on its instance type.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use karp_core::disruption::model::{
    CONSOLIDATION_THRESHOLD_RANGE, DEFAULT_CONSOLIDATION_THRESHOLD,
};
use karp_core::disruption::time::parse_go_duration;
use karp_core::disruption::{
    Budget, ConsolidateAfter, ConsolidationPolicy, DisruptionInput, DisruptionSettings, Drift,
    NodeClaimFacts, NodeOffering, PodFacts, Reason, SavingsThreshold, Timestamp,
};
use karp_core::labels;
use karp_core::pod::LabelSelector;
use karp_core::requirements::Requirements;

use super::pod::label_selector;
use super::snapshot::{ClusterObjects, Converted, Input, PodSource};
use super::{field_err, ConvertError, ObjectRef};
use crate::api::nodeclaim::NodeClaim;
use crate::api::nodepool::NodePool;

/// `karpenter.sh/do-not-disrupt`.
const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// The NodePool template hash Karpenter stamps on NodePools and their NodeClaims.
const NODEPOOL_HASH: &str = "karpenter.sh/nodepool-hash";
/// The version of that hash's algorithm; hashes are compared only when versions are equal.
const NODEPOOL_HASH_VERSION: &str = "karpenter.sh/nodepool-hash-version";
/// `controller.kubernetes.io/pod-deletion-cost`.
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Marks mirror (static) pods.
const MIRROR: &str = "kubernetes.io/config.mirror";
/// Karpenter's default `expireAfter` (the CRD default).
const DEFAULT_EXPIRE_AFTER: Duration = Duration::from_secs(720 * 3600);

/// A Kubernetes time as a planner timestamp.
pub(crate) fn millis(t: &Time) -> Timestamp {
    Timestamp(t.0.as_millisecond())
}

fn parse_time(origin: &ObjectRef, field: &str, s: &str) -> Result<Timestamp, ConvertError> {
    s.parse().map_err(|e| field_err(origin, field, e))
}

/// `Never` → `None`, else a Go duration.
fn parse_lifetime(
    origin: &ObjectRef,
    field: &str,
    s: &str,
) -> Result<Option<Duration>, ConvertError> {
    if s == "Never" {
        return Ok(None);
    }
    parse_go_duration(s)
        .map(Some)
        .map_err(|e| field_err(origin, field, e))
}

/// A NodePool's `spec.disruption` (already validated by the NodePool conversion).
///
/// # Errors
/// [`ConvertError::ConvertField`] naming the field.
pub fn disruption_settings(
    origin: &ObjectRef,
    np: &NodePool,
) -> Result<DisruptionSettings, ConvertError> {
    let mut s = DisruptionSettings::default();
    karp_annotations(origin, np, &mut s)?;
    let Some(d) = &np.spec.disruption else {
        return Ok(s);
    };
    match d.consolidation_policy.as_deref() {
        Some("WhenEmpty") => s.consolidation_policy = ConsolidationPolicy::WhenEmpty,
        Some("Balanced") => {
            let field = "spec.disruption.consolidationThreshold";
            let k = match d.consolidation_threshold {
                None => DEFAULT_CONSOLIDATION_THRESHOLD,
                Some(k) => u32::try_from(k)
                    .ok()
                    .filter(|k| CONSOLIDATION_THRESHOLD_RANGE.contains(k))
                    .ok_or_else(|| {
                        field_err(origin, field, format!("must be between 1 and 3, got {k}"))
                    })?,
            };
            s.consolidation_policy = ConsolidationPolicy::Balanced {
                consolidation_threshold: k,
            };
        }
        _ => {}
    }
    if let Some(after) = &d.consolidate_after {
        let field = "spec.disruption.consolidateAfter";
        s.consolidate_after = match parse_lifetime(origin, field, &after.0)? {
            None => ConsolidateAfter::Never,
            Some(d) => ConsolidateAfter::After(d),
        };
    }
    if !d.budgets.is_empty() {
        s.budgets = Vec::new();
    }
    for (i, b) in d.budgets.iter().enumerate() {
        let mut reasons = Vec::new();
        for (j, r) in b.reasons.iter().enumerate() {
            reasons.push(match r.as_str() {
                "Empty" => Reason::Empty,
                "Drifted" => Reason::Drifted,
                "Underutilized" => Reason::Underutilized,
                other => {
                    return Err(field_err(
                        origin,
                        format!("spec.disruption.budgets[{i}].reasons[{j}]"),
                        format!("unknown reason {other:?}"),
                    ))
                }
            });
        }
        let duration = match &b.duration {
            Some(d) => parse_lifetime(
                origin,
                &format!("spec.disruption.budgets[{i}].duration"),
                &d.0,
            )?,
            None => None,
        };
        s.budgets.push(Budget {
            nodes: b
                .nodes
                .as_ref()
                .map_or_else(|| "10%".to_string(), |n| n.0.clone()),
            reasons,
            schedule: b.schedule.clone(),
            duration,
        });
    }
    Ok(s)
}

/// `karp.dev/consolidation-mode`: overrides `--mode` for the pool's nodes.
pub const MODE_ANNOTATION: &str = "karp.dev/consolidation-mode";
/// `karp.dev/consolidation-min-savings`: overrides `--min-savings` for the pool's nodes.
pub const MIN_SAVINGS_ANNOTATION: &str = "karp.dev/consolidation-min-savings";

/// karp's per-pool annotations (mode and savings threshold).
fn karp_annotations(
    origin: &ObjectRef,
    np: &NodePool,
    s: &mut DisruptionSettings,
) -> Result<(), ConvertError> {
    let field = |key: &str| format!("metadata.annotations[{key:?}]");
    if let Some(v) = annotation(&np.metadata, MODE_ANNOTATION) {
        s.mode = Some(
            v.parse()
                .map_err(|e: String| field_err(origin, field(MODE_ANNOTATION), e))?,
        );
    }
    if let Some(v) = annotation(&np.metadata, MIN_SAVINGS_ANNOTATION) {
        s.min_savings = Some(
            SavingsThreshold::parse(v)
                .map_err(|e| field_err(origin, field(MIN_SAVINGS_ANNOTATION), e))?,
        );
    }
    Ok(())
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// A pod's `controller.kubernetes.io/pod-deletion-cost` (0 when absent or not an int32).
pub(crate) fn deletion_cost(pod: &corev1::Pod) -> i32 {
    annotation(&pod.metadata, DELETION_COST)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Metadata of a pod object.
fn pod_facts(pod: &corev1::Pod) -> PodFacts {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    PodFacts {
        do_not_disrupt: annotation(meta, DO_NOT_DISRUPT).map(str::to_string),
        deletion_cost: deletion_cost(pod),
        owner_kind: meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind.clone()),
        mirror: annotation(meta, MIRROR).is_some(),
        terminal: status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed"),
        terminating: meta.deletion_timestamp.is_some(),
        start_time: status.and_then(|s| s.start_time.as_ref()).map(millis),
    }
}

/// Whether a pod counts as healthy for its PDB: Running and Ready (a bound pod without status
/// counts as both).
fn healthy(pod: &corev1::Pod) -> bool {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    match &pod.status {
        None => bound,
        Some(s) if s.phase.is_none() && s.conditions.is_none() => bound,
        Some(s) => {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        }
    }
}

fn scaled(
    origin: &ObjectRef,
    field: &str,
    v: &IntOrString,
    total: usize,
) -> Result<usize, ConvertError> {
    match v {
        IntOrString::Int(n) => {
            usize::try_from(*n).map_err(|_| field_err(origin, field, "must not be negative"))
        }
        IntOrString::String(s) => {
            let pct: usize = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    field_err(
                        origin,
                        field,
                        format!("invalid value {s:?} (expected an integer or a percentage)"),
                    )
                })?;
            Ok((total * pct).div_ceil(100))
        }
    }
}

/// A PDB: its selector and `disruptionsAllowed` (from status, else computed from `pods`).
fn pdb(
    origin: &ObjectRef,
    pdb: &PodDisruptionBudget,
    pods: &[&corev1::Pod],
) -> Result<karp_core::disruption::PodDisruptionBudget, ConvertError> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let namespace = origin.namespace.clone().unwrap_or_else(|| "default".into());
    let selector = match &spec.selector {
        Some(s) => label_selector(origin, "spec.selector", s)?,
        None => LabelSelector::default(),
    };
    let allowed = match pdb.status.as_ref().and_then(|s| s.disruptions_allowed) {
        Some(n) => n,
        None => {
            let selected: Vec<&&corev1::Pod> = pods
                .iter()
                .filter(|p| {
                    p.metadata.namespace.as_deref().unwrap_or("default") == namespace
                        && selector.matches(&p.metadata.labels.clone().unwrap_or_default())
                })
                .collect();
            let expected = selected.len();
            let healthy = selected.iter().filter(|p| healthy(p)).count();
            let desired = if let Some(m) = &spec.max_unavailable {
                expected.saturating_sub(scaled(origin, "spec.maxUnavailable", m, expected)?)
            } else if let Some(m) = &spec.min_available {
                scaled(origin, "spec.minAvailable", m, expected)?
            } else {
                0
            };
            i32::try_from(healthy.saturating_sub(desired)).unwrap_or(i32::MAX)
        }
    };
    Ok(karp_core::disruption::PodDisruptionBudget {
        namespace,
        name: origin.name.clone(),
        selector,
        disruptions_allowed: allowed,
    })
}

/// `RequirementsDrifted`: the node's labels no longer satisfy the NodePool's requirements.
pub const REQUIREMENTS_DRIFTED: &str = "RequirementsDrifted";
/// `InstanceTypeNotFound`: the node's instance type or offering is gone from its NodePool's.
pub const INSTANCE_TYPE_NOT_FOUND: &str = "InstanceTypeNotFound";

/// The labels drift is judged on: the Node's overlaid with the NodeClaim's, beta keys normalized
/// (a stable key wins over its beta twin), completed with the labels `pool`'s instance type of
/// that name pins to one value.
fn drift_labels(
    node: &corev1::Node,
    claim: Option<&NodeClaim>,
    pool: &karp_core::cluster::NodePool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let sources = [
        node.metadata.labels.as_ref(),
        claim.and_then(|c| c.metadata.labels.as_ref()),
    ];
    for labels in sources.into_iter().flatten() {
        let mut beta = Vec::new();
        for (k, v) in labels {
            let key = labels::normalize_key(k);
            if key == k {
                out.insert(k.clone(), v.clone());
            } else {
                beta.push((key, v));
            }
        }
        for (key, v) in beta {
            if !labels.contains_key(key) {
                out.insert(key.to_string(), v.clone());
            }
        }
    }
    let it = out
        .get(labels::INSTANCE_TYPE)
        .and_then(|name| pool.instance_types.iter().find(|t| &t.name == name));
    if let Some(it) = it {
        for r in it.requirements.iter() {
            if let Some(v) = r.single_value() {
                out.entry(r.key().to_string())
                    .or_insert_with(|| v.to_string());
            }
        }
    }
    out
}

/// Karpenter's drift reasons computed from the NodePool and the catalog (after the hash): the
/// labels against the requirements, then the instance type and offering.
fn computed_drift(
    labels: &BTreeMap<String, String>,
    pool: &karp_core::cluster::NodePool,
) -> Option<&'static str> {
    let node = Requirements::from_labels(labels);
    // Strict compatibility: a requirement on a label the node lacks must allow absence.
    if node.compatible(&pool.requirements, &|_| false).is_err() {
        return Some(REQUIREMENTS_DRIFTED);
    }
    let name = labels.get(labels::INSTANCE_TYPE)?;
    let Some(it) = pool.instance_types.iter().find(|t| &t.name == name) else {
        return Some(INSTANCE_TYPE_NOT_FOUND);
    };
    // An unavailable offering (insufficient capacity) is not a gone one.
    if !it.offerings.iter().any(|o| o.compatible(&node)) {
        return Some(INSTANCE_TYPE_NOT_FOUND);
    }
    None
}

/// The facts of one managed node.
fn node_facts(
    node: &Input<Arc<corev1::Node>>,
    claim: Option<&Input<Arc<NodeClaim>>>,
    pool: &Input<Arc<NodePool>>,
    pool_view: Option<&karp_core::cluster::NodePool>,
    snapshot_node: Option<&karp_core::cluster::Node>,
    pods: &[&corev1::Pod],
    now: Timestamp,
) -> Result<NodeClaimFacts, ConvertError> {
    let n = &node.object;
    let pool_name = pool.origin.name.clone();
    let node_labels = n.metadata.labels.clone().unwrap_or_default();
    let created = claim
        .and_then(|c| c.object.metadata.creation_timestamp.as_ref())
        .or(n.metadata.creation_timestamp.as_ref())
        .map_or(now, millis);
    let mut f = NodeClaimFacts::new(&pool_name, created);
    f.ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_none_or(|c| c.status == "True");
    f.deleting = n.metadata.deletion_timestamp.is_some()
        || claim.is_some_and(|c| c.object.metadata.deletion_timestamp.is_some())
        || n.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| {
                ts.iter()
                    .any(|t| t.key == karp_core::disruption::candidates::DISRUPTED_TAINT)
            });
    f.do_not_disrupt = annotation(&n.metadata, DO_NOT_DISRUPT) == Some("true")
        || claim.is_some_and(|c| annotation(&c.object.metadata, DO_NOT_DISRUPT) == Some("true"));
    if let (Some(it), Some(zone), Some(ct), Some(price)) = (
        node_labels.get(labels::INSTANCE_TYPE),
        node_labels.get(labels::ZONE),
        node_labels.get(labels::CAPACITY_TYPE),
        snapshot_node.and_then(|s| s.price),
    ) {
        f.offering = Some(NodeOffering {
            instance_type: it.clone(),
            zone: zone.clone(),
            capacity_type: ct.clone(),
            price,
        });
    }
    let template = &pool.object.spec.template.spec;
    let (expire, expire_field, tgp, tgp_field, origin) = match claim {
        Some(c) => (
            c.object.spec.expire_after.clone(),
            "spec.expireAfter",
            c.object.spec.termination_grace_period.clone(),
            "spec.terminationGracePeriod",
            &c.origin,
        ),
        None => (
            template.expire_after.as_ref().map(|s| s.0.clone()),
            "spec.template.spec.expireAfter",
            template
                .termination_grace_period
                .as_ref()
                .map(|s| s.0.clone()),
            "spec.template.spec.terminationGracePeriod",
            &pool.origin,
        ),
    };
    f.expire_after = match &expire {
        Some(e) => parse_lifetime(origin, expire_field, e)?,
        None => Some(DEFAULT_EXPIRE_AFTER),
    };
    f.termination_grace_period = match &tgp {
        Some(t) => parse_lifetime(origin, tgp_field, t)?,
        None => None,
    };
    match claim {
        Some(c) => claim_facts(&mut f, c, pool, now)?,
        None => {
            f.initialized =
                node_labels.get(labels::INITIALIZED).map(String::as_str) == Some("true");
            f.initialized_at = Some(created);
            f.last_pod_event = pods
                .iter()
                .filter(|p| pod_facts(p).owner_kind.as_deref() != Some("DaemonSet"))
                .filter_map(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.start_time.as_ref())
                        .or(p.metadata.creation_timestamp.as_ref())
                        .map(millis)
                })
                .max();
            f.drifted = hash_drift(&n.metadata, &pool.object, now);
        }
    }
    if let (None, Some(view)) = (&f.drifted, pool_view) {
        let labels = drift_labels(n, claim.map(|c| c.object.as_ref()), view);
        f.drifted = computed_drift(&labels, view).map(|reason| Drift {
            reason: reason.into(),
            since: now,
        });
    }
    Ok(f)
}

/// Drift by NodePool hash: both hashes present with equal versions, and different.
fn hash_drift(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    pool: &NodePool,
    now: Timestamp,
) -> Option<Drift> {
    let ours = annotation(meta, NODEPOOL_HASH)?;
    let theirs = annotation(&pool.metadata, NODEPOOL_HASH)?;
    let same_version = annotation(meta, NODEPOOL_HASH_VERSION)
        == annotation(&pool.metadata, NODEPOOL_HASH_VERSION);
    (same_version && ours != theirs).then(|| Drift {
        reason: "NodePoolDrifted".into(),
        since: now,
    })
}

/// What the NodeClaim says: initialization, last pod event, drift.
fn claim_facts(
    f: &mut NodeClaimFacts,
    c: &Input<Arc<NodeClaim>>,
    pool: &Input<Arc<NodePool>>,
    now: Timestamp,
) -> Result<(), ConvertError> {
    let claim = &c.object;
    f.nodeclaim = Some(c.origin.name.clone());
    f.initialized = claim.is_true("Initialized");
    let conditions = claim
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for (i, cond) in conditions.iter().enumerate() {
        let field = format!("status.conditions[{i}].lastTransitionTime");
        let at = || -> Result<Timestamp, ConvertError> {
            if cond.last_transition_time.is_empty() {
                Ok(f.created)
            } else {
                parse_time(&c.origin, &field, &cond.last_transition_time)
            }
        };
        if cond.type_ == "Initialized" && cond.status == "True" {
            f.initialized_at = Some(at()?);
        }
        if cond.type_ == "Drifted" && cond.status == "True" {
            let reason = if cond.reason.is_empty() {
                "Drifted".to_string()
            } else {
                cond.reason.clone()
            };
            f.drifted = Some(Drift {
                reason,
                since: at()?,
            });
        }
    }
    if let Some(t) = claim
        .status
        .as_ref()
        .and_then(|s| s.last_pod_event_time.as_deref())
    {
        f.last_pod_event = Some(parse_time(&c.origin, "status.lastPodEventTime", t)?);
    }
    if f.drifted.is_none() {
        f.drifted = hash_drift(&claim.metadata, &pool.object, now);
    }
    Ok(())
}

/// Build the disruption input from the objects and their converted snapshot.
///
/// # Errors
/// [`ConvertError`] naming the object and field (a bad time, duration or selector).
pub fn disruption_input(
    objects: &ClusterObjects,
    pdbs: &[Input<Arc<PodDisruptionBudget>>],
    converted: Converted,
    now: Timestamp,
) -> Result<DisruptionInput, ConvertError> {
    let snapshot = converted.snapshot;
    let pod_objects: Vec<&corev1::Pod> = objects
        .pods
        .iter()
        .filter_map(|p| match &p.object {
            PodSource::Pod(p) => Some(p.as_ref()),
            PodSource::Workload(_) => None,
        })
        .collect();
    let mut input = DisruptionInput::default();
    for p in &pod_objects {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        if let Some(name) = &p.metadata.name {
            input.pods.insert(format!("{ns}/{name}"), pod_facts(p));
        }
    }
    let pools: BTreeMap<&str, &Input<Arc<NodePool>>> = objects
        .nodepools
        .iter()
        .map(|p| (p.origin.name.as_str(), p))
        .collect();
    for p in &objects.nodepools {
        input.pools.insert(
            p.origin.name.clone(),
            disruption_settings(&p.origin, &p.object)?,
        );
    }
    let claims: BTreeMap<&str, &Input<Arc<NodeClaim>>> = objects
        .nodeclaims
        .iter()
        .filter_map(|c| c.object.provider_id().map(|id| (id, c)))
        .collect();
    for n in &objects.nodes {
        let labels = n.object.metadata.labels.clone().unwrap_or_default();
        let Some(pool) = labels
            .get(labels::NODEPOOL)
            .and_then(|p| pools.get(p.as_str()))
        else {
            continue;
        };
        let name = n.origin.name.as_str();
        let claim = n
            .object
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(|id| claims.get(id).copied());
        let on_node: Vec<&corev1::Pod> = pod_objects
            .iter()
            .copied()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name))
            .collect();
        let snapshot_node = snapshot.nodes.iter().find(|s| s.name == name);
        let pool_view = snapshot
            .node_pools
            .iter()
            .find(|p| p.name == pool.origin.name);
        let facts = node_facts(n, claim, pool, pool_view, snapshot_node, &on_node, now)?;
        input.nodes.insert(name.to_string(), facts);
    }
    for p in pdbs {
        input.pdbs.push(pdb(&p.origin, &p.object, &pod_objects)?);
    }
    input.snapshot = snapshot;
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(kind: &str, ns: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            file: Some("t.yaml".into()),
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        }
    }

    #[test]
    fn nodepool_disruption_converts_with_karpenter_defaults() {
        let np: NodePool = serde_yaml::from_str(
            "metadata: {name: p}\nspec:\n  template: {spec: {nodeClassRef: {name: c}}}\n",
        )
        .unwrap();
        let s = disruption_settings(&origin("NodePool", None, "p"), &np).unwrap();
        assert_eq!(s, DisruptionSettings::default());
        let np: NodePool = serde_yaml::from_str(
            "metadata: {name: p}\nspec:\n  disruption:\n    consolidationPolicy: WhenEmpty\n    consolidateAfter: Never\n    budgets: [{nodes: \"0\", reasons: [Drifted], schedule: \"@daily\", duration: 1h30m}]\n  template: {spec: {nodeClassRef: {name: c}}}\n",
        )
        .unwrap();
        let s = disruption_settings(&origin("NodePool", None, "p"), &np).unwrap();
        assert_eq!(s.consolidation_policy, ConsolidationPolicy::WhenEmpty);
        assert_eq!(s.consolidate_after, ConsolidateAfter::Never);
        assert_eq!(
            s.budgets,
            vec![Budget::nodes("0")
                .reasons(&[Reason::Drifted])
                .during("@daily", Duration::from_secs(5400))]
        );
    }

    #[test]
    fn balanced_converts_with_its_threshold_defaulting_to_two() {
        let pool = |disruption: &str| -> NodePool {
            serde_yaml::from_str(&format!(
                "metadata: {{name: p}}\nspec:\n  disruption: {disruption}\n  template: {{spec: {{nodeClassRef: {{name: c}}}}}}\n"
            ))
            .unwrap()
        };
        let o = origin("NodePool", None, "p");
        let s = disruption_settings(&o, &pool("{consolidationPolicy: Balanced}")).unwrap();
        assert_eq!(s.consolidation_policy, ConsolidationPolicy::balanced());
        let s = disruption_settings(
            &o,
            &pool("{consolidationPolicy: Balanced, consolidationThreshold: 3}"),
        )
        .unwrap();
        assert_eq!(
            s.consolidation_policy,
            ConsolidationPolicy::Balanced {
                consolidation_threshold: 3
            }
        );
        let e = disruption_settings(
            &o,
            &pool("{consolidationPolicy: Balanced, consolidationThreshold: 9}"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("spec.disruption.consolidationThreshold"), "{e}");
    }

    use karp_core::cloud::{InstanceType, Offering};
    use karp_core::requirements::{Operator, Requirement};
    use karp_core::resources::Resources;

    fn m5_large(offerings: Vec<Offering>) -> Arc<InstanceType> {
        let labels = [(
            "karpenter.k8s.aws/instance-family".to_string(),
            "m5".to_string(),
        )]
        .into();
        Arc::new(InstanceType::new(
            "m5.large",
            &labels,
            Resources::new(),
            Resources::new(),
            offerings,
        ))
    }

    /// A pool offering m5.large on demand in us-east-1a, with `reqs` as its requirements.
    fn pool_view(reqs: &[(&str, Operator, &[&str])]) -> karp_core::cluster::NodePool {
        let mut p = karp_core::cluster::NodePool::new(
            "default",
            vec![m5_large(vec![Offering::new(
                "us-east-1a",
                "on-demand",
                0.096,
            )])],
        );
        for (k, op, values) in reqs {
            p.requirements
                .add(Requirement::new(*k, *op, values.iter().copied()).unwrap());
        }
        p
    }

    fn node_object(labels: &str) -> corev1::Node {
        serde_yaml::from_str(&format!(
            "metadata:\n  name: n\n  labels: {{karpenter.sh/nodepool: default, {labels}}}\n"
        ))
        .unwrap()
    }

    const M5_NODE: &str = "node.kubernetes.io/instance-type: m5.large, topology.kubernetes.io/zone: us-east-1a, karpenter.sh/capacity-type: on-demand";

    fn drift(node_labels: &str, pool: &karp_core::cluster::NodePool) -> Option<&'static str> {
        computed_drift(&drift_labels(&node_object(node_labels), None, pool), pool)
    }

    #[test]
    fn requirements_drift_follows_karpenters_strict_compatibility() {
        use Operator::{DoesNotExist, Exists, In, NotIn};
        let ok = pool_view(&[
            ("karpenter.sh/capacity-type", In, &["on-demand", "spot"]),
            ("kubernetes.io/arch", In, &["amd64"]),
            // Absent labels satisfy NotIn and DoesNotExist.
            ("example.com/team", NotIn, &["x"]),
            ("example.com/gpu", DoesNotExist, &[]),
        ]);
        assert_eq!(drift(M5_NODE, &ok), None);
        // A beta key on the node is read as its stable key.
        assert_eq!(
            drift(&format!("{M5_NODE}, beta.kubernetes.io/arch: amd64"), &ok),
            None
        );
        for reqs in [
            [("karpenter.sh/capacity-type", In, &["spot"][..])],
            [("example.com/gpu", Exists, &[][..])],
            [("example.com/team", In, &["a"][..])],
            [("topology.kubernetes.io/zone", NotIn, &["us-east-1a"][..])],
        ] {
            assert_eq!(
                drift(M5_NODE, &pool_view(&reqs)),
                Some(REQUIREMENTS_DRIFTED),
                "{reqs:?}"
            );
        }
        assert_eq!(
            drift(
                &format!("{M5_NODE}, example.com/team: a"),
                &pool_view(&[("example.com/team", In, &["a"])])
            ),
            None
        );
    }

    #[test]
    fn labels_the_catalog_pins_fill_what_the_manifests_leave_out() {
        let family = |v: &'static [&'static str]| {
            pool_view(&[("karpenter.k8s.aws/instance-family", Operator::In, v)])
        };
        // The Node carries no instance-family label; m5.large's catalog entry says m5.
        assert_eq!(drift(M5_NODE, &family(&["m5", "c5"])), None);
        assert_eq!(drift(M5_NODE, &family(&["c5"])), Some(REQUIREMENTS_DRIFTED));
        // A label the node does carry wins over the catalog.
        assert_eq!(
            drift(
                &format!("{M5_NODE}, karpenter.k8s.aws/instance-family: c5"),
                &family(&["m5"])
            ),
            Some(REQUIREMENTS_DRIFTED)
        );
    }

    #[test]
    fn instance_type_drift_when_the_type_or_its_offering_is_gone_but_not_when_unavailable() {
        let mut gone = pool_view(&[]);
        gone.instance_types.clear();
        assert_eq!(drift(M5_NODE, &gone), Some(INSTANCE_TYPE_NOT_FOUND));
        let mut other_zone = pool_view(&[]);
        other_zone.instance_types = vec![m5_large(vec![Offering::new(
            "us-east-1b",
            "on-demand",
            0.096,
        )])];
        assert_eq!(drift(M5_NODE, &other_zone), Some(INSTANCE_TYPE_NOT_FOUND));
        let mut spot_only = pool_view(&[]);
        spot_only.instance_types = vec![m5_large(vec![Offering::new("us-east-1a", "spot", 0.03)])];
        assert_eq!(drift(M5_NODE, &spot_only), Some(INSTANCE_TYPE_NOT_FOUND));
        let mut unavailable = pool_view(&[]);
        let mut o = Offering::new("us-east-1a", "on-demand", 0.096);
        o.available = false;
        unavailable.instance_types = vec![m5_large(vec![o])];
        assert_eq!(drift(M5_NODE, &unavailable), None);
        // Without an instance-type label there is nothing to look up.
        assert_eq!(
            drift("topology.kubernetes.io/zone: us-east-1a", &gone),
            None
        );
    }

    #[test]
    fn an_existing_drifted_condition_keeps_its_reason_and_claim_labels_override_the_node() {
        let node = Input {
            origin: origin("Node", None, "n"),
            object: Arc::new(node_object(M5_NODE)),
        };
        let np: NodePool = serde_yaml::from_str(
            "metadata: {name: default}\nspec:\n  template: {spec: {nodeClassRef: {name: c}}}\n",
        )
        .unwrap();
        let pool = Input {
            origin: origin("NodePool", None, "default"),
            object: Arc::new(np),
        };
        let claim = |status: &str| -> Input<Arc<NodeClaim>> {
            Input {
                origin: origin("NodeClaim", None, "c"),
                object: Arc::new(
                    serde_yaml::from_str(&format!(
                        "metadata: {{name: c, labels: {{karpenter.sh/capacity-type: spot}}}}\nspec: {{nodeClassRef: {{name: c}}}}\nstatus: {status}\n"
                    ))
                    .unwrap(),
                ),
            }
        };
        let view = pool_view(&[("karpenter.sh/capacity-type", Operator::In, &["on-demand"])]);
        let now = Timestamp::from_utc(2026, 12, 1, 12, 0, 0);
        let facts = |status: &str| {
            node_facts(
                &node,
                Some(&claim(status)),
                &pool,
                Some(&view),
                None,
                &[],
                now,
            )
            .unwrap()
            .drifted
        };
        // The claim says spot, the pool wants on-demand.
        let d = facts("{conditions: []}").unwrap();
        assert_eq!((d.reason.as_str(), d.since), (REQUIREMENTS_DRIFTED, now));
        let d = facts("{conditions: [{type: Drifted, status: \"True\", reason: AMIDrift, lastTransitionTime: \"2026-12-01T10:00:00Z\"}]}")
            .unwrap();
        assert_eq!(d.reason, "AMIDrift");
        assert_eq!(d.since, Timestamp::from_utc(2026, 12, 1, 10, 0, 0));
    }

    fn web(name: &str, bound: bool, ready: bool) -> corev1::Pod {
        let status = if ready {
            "status: {phase: Running, conditions: [{type: Ready, status: \"True\"}]}"
        } else {
            "status: {phase: Running, conditions: [{type: Ready, status: \"False\"}]}"
        };
        let node = if bound {
            "spec: {nodeName: n, containers: []}"
        } else {
            "spec: {containers: []}"
        };
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}\n{node}\n{status}\n"
        ))
        .unwrap()
    }

    #[test]
    fn pdb_without_status_computes_disruptions_allowed_like_the_disruption_controller() {
        let pods = [
            web("a", true, true),
            web("b", true, true),
            web("c", true, false),
            web("d", false, false),
        ];
        let refs: Vec<&corev1::Pod> = pods.iter().collect();
        let allowed = |spec: &str| {
            let p: PodDisruptionBudget = serde_yaml::from_str(&format!(
                "metadata: {{name: web, namespace: default}}\nspec: {{selector: {{matchLabels: {{app: web}}}}, {spec}}}\n"
            ))
            .unwrap();
            pdb(
                &origin("PodDisruptionBudget", Some("default"), "web"),
                &p,
                &refs,
            )
            .unwrap()
            .disruptions_allowed
        };
        // Four selected pods, two healthy.
        assert_eq!(allowed("minAvailable: 1"), 1);
        assert_eq!(allowed("minAvailable: 50%"), 0);
        assert_eq!(allowed("maxUnavailable: 3"), 1);
        assert_eq!(allowed("maxUnavailable: 25%"), 0);
    }
}
