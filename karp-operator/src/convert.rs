//! Conversion of loaded manifests into the scheduler's [`ClusterSnapshot`], once, at the edge.
//!
//! - Pods (standalone, and the replicas of Deployments, ReplicaSets, StatefulSets and Jobs, named
//!   `<owner>-<index>`) become [`karp_core::pod::Pod`]s with effective requests, node selector,
//!   node affinity, pod (anti-)affinity, topology spread, tolerations, host ports and volume
//!   requirements; DaemonSet templates become snapshot daemonsets; Nodes become existing capacity.
//! - NodePools become [`karp_core::cluster::NodePool`]s whose instance types come from the catalog
//!   (built in, or a catalog file) computed with the settings of the EC2NodeClass they reference.
//!
//! Every error names the file, the object and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use karp_aws::allocatable::ResourceAmounts;
use karp_aws::catalog::CatalogEntry;
use karp_aws::nodeclass::EC2NodeClass;
use karp_core::cloud::InstanceType;
use karp_core::cluster::{ClusterSnapshot, Limits, Node, NodePool};
use karp_core::labels;
use karp_core::pod::{
    effective_requests, ContainerRequests, HostPort, InclusionPolicy, LabelSelector, Pod,
    PodAffinityTerm, SelectorOperator, SelectorRequirement, TopologySpreadConstraint, Weighted,
    WhenUnsatisfiable,
};
use karp_core::requirements::{NodeSelectorRequirement, Operator, Requirement, Requirements};
use karp_core::resources::{Quantity, Resources};
use karp_core::taints::{Effect, Taint, Toleration, TolerationOperator};

use crate::manifests::{Manifests, Object, ObjectRef};
use crate::nodepool;

/// Where instance types come from.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CatalogSource {
    /// The built-in AWS us-east-1 catalog ([`karp_aws::catalog::builtin_catalog`]).
    #[default]
    Builtin,
    /// A catalog file's text ([`karp_aws::catalog_file`]); `name` is used in messages.
    File {
        /// The file name.
        name: String,
        /// Its JSON text.
        json: String,
    },
    /// Instance types per node class name, already computed (from a cloud provider); a node class
    /// missing here has no instance types.
    Types(BTreeMap<String, Vec<Arc<InstanceType>>>),
}

/// Why manifests could not be converted into a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// A field has a value karp (or Kubernetes) does not accept.
    #[error("{object}: {field}: {reason}")]
    ConvertField {
        /// The object.
        object: Box<ObjectRef>,
        /// Field path, e.g. `spec.template.spec.containers[0].resources.requests.cpu`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A NodePool references an EC2NodeClass that is not in the input.
    #[error("{nodepool}: spec.template.spec.nodeClassRef.name: EC2NodeClass {name:?} is not in the input")]
    ResolveNodeClass {
        /// The NodePool.
        nodepool: Box<ObjectRef>,
        /// The missing node class.
        name: String,
    },
    /// The instance-type catalog could not be built for a node class.
    #[error("{nodeclass}: {reason}")]
    BuildCatalog {
        /// The EC2NodeClass whose settings were used.
        nodeclass: Box<ObjectRef>,
        /// What failed.
        reason: String,
    },
    /// The `--catalog` file is invalid.
    #[error("{file}: {reason}")]
    ParseCatalogFile {
        /// The catalog file.
        file: String,
        /// What is wrong (entry index, name and field).
        reason: String,
    },
    /// Two objects (or two expanded pods) have the same identity.
    #[error("{object}: defined twice (also in {first})")]
    DuplicateObject {
        /// The second definition.
        object: Box<ObjectRef>,
        /// Where the first one was.
        first: String,
    },
}

/// The converted snapshot and warnings for people.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    /// What the scheduler plans against.
    pub snapshot: ClusterSnapshot,
    /// For each snapshot pod, the object it came from (same index as `snapshot.pods`).
    pub pod_origins: Vec<ObjectRef>,
    /// Warnings, one line each.
    pub warnings: Vec<String>,
}

fn field_err(object: &ObjectRef, field: impl Into<String>, reason: impl Display) -> ConvertError {
    ConvertError::ConvertField {
        object: Box::new(object.clone()),
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// Convert a karp-aws resource vector into the core's.
#[must_use]
pub fn to_resources(a: &ResourceAmounts) -> Resources {
    a.to_core()
}

/// Convert a catalog entry into the core's instance type.
#[must_use]
pub fn to_instance_type(e: &CatalogEntry) -> InstanceType {
    e.to_instance_type()
}

fn parse_quantity(object: &ObjectRef, field: &str, q: &str) -> Result<Quantity, ConvertError> {
    let parsed: Quantity = q.parse().map_err(|e| field_err(object, field, e))?;
    if parsed.nanos() < 0 {
        return Err(field_err(
            object,
            field,
            format!("quantity {q:?} must not be negative"),
        ));
    }
    Ok(parsed)
}

fn set_resources(
    object: &ObjectRef,
    field: &str,
    into: &mut Resources,
    list: Option<&BTreeMap<String, K8sQuantity>>,
    skip: impl Fn(&str) -> bool,
) -> Result<(), ConvertError> {
    for (name, q) in list.into_iter().flatten() {
        if skip(name) {
            continue;
        }
        let q = parse_quantity(object, &format!("{field}.{name}"), &q.0)?;
        into.set(name, &q);
    }
    Ok(())
}

/// Requests of a `resources` block, with limits standing in for absent requests (as Kubernetes defaults them).
fn requests_of(
    object: &ObjectRef,
    field: &str,
    rr: Option<&corev1::ResourceRequirements>,
) -> Result<Resources, ConvertError> {
    let mut r = Resources::new();
    let Some(rr) = rr else { return Ok(r) };
    let requests = rr.requests.as_ref();
    set_resources(
        object,
        &format!("{field}.limits"),
        &mut r,
        rr.limits.as_ref(),
        |n| requests.is_some_and(|m| m.contains_key(n)),
    )?;
    set_resources(
        object,
        &format!("{field}.requests"),
        &mut r,
        requests,
        |_| false,
    )?;
    Ok(r)
}

/// A pod spec's effective requests: containers, init containers (sidecars with `restartPolicy:
/// Always` keep running), pod-level resources when set, and `spec.overhead`.
///
/// # Errors
/// [`ConvertError::ConvertField`] naming the quantity that does not parse.
pub fn pod_requests(
    object: &ObjectRef,
    path: &str,
    spec: &corev1::PodSpec,
) -> Result<Resources, ConvertError> {
    let mut containers = Vec::with_capacity(spec.containers.len());
    for (i, c) in spec.containers.iter().enumerate() {
        let requests = requests_of(
            object,
            &format!("{path}.containers[{i}].resources"),
            c.resources.as_ref(),
        )?;
        containers.push(ContainerRequests {
            requests,
            restartable: false,
        });
    }
    let mut init = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let requests = requests_of(
            object,
            &format!("{path}.initContainers[{i}].resources"),
            c.resources.as_ref(),
        )?;
        init.push(ContainerRequests {
            requests,
            restartable: c.restart_policy.as_deref() == Some("Always"),
        });
    }
    let mut overhead = Resources::new();
    set_resources(
        object,
        &format!("{path}.overhead"),
        &mut overhead,
        spec.overhead.as_ref(),
        |_| false,
    )?;
    let mut total = effective_requests(&containers, &init, &overhead);
    if spec.resources.is_some() {
        // Pod-level resources replace the container sum for the resources they name.
        let pod_level = requests_of(
            object,
            &format!("{path}.resources"),
            spec.resources.as_ref(),
        )?;
        for (name, amount) in pod_level.iter() {
            let value = amount + overhead.get(name);
            match name {
                "cpu" => total.cpu = value,
                "memory" => total.memory = value,
                "ephemeral-storage" => total.ephemeral_storage = value,
                other => {
                    total.extended.insert(other.to_string(), value);
                }
            }
        }
    }
    Ok(total)
}

fn pod_operator(object: &ObjectRef, field: &str, op: &str) -> Result<Operator, ConvertError> {
    match op {
        "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {
            Operator::parse(op).map_err(|e| field_err(object, field, e))
        }
        other => Err(field_err(
            object,
            field,
            format!(
                "unknown operator {other:?} (expected In, NotIn, Exists, DoesNotExist, Gt or Lt)"
            ),
        )),
    }
}

fn node_selector_requirements(
    object: &ObjectRef,
    path: &str,
    exprs: Option<&Vec<corev1::NodeSelectorRequirement>>,
) -> Result<Requirements, ConvertError> {
    let mut out = Requirements::new();
    for (j, e) in exprs.into_iter().flatten().enumerate() {
        let field = format!("{path}[{j}]");
        let op = pod_operator(object, &format!("{field}.operator"), &e.operator)?;
        let key = labels::normalize_key(&e.key).to_string();
        let r = Requirement::new(key, op, e.values.iter().flatten().cloned())
            .map_err(|err| field_err(object, &field, err))?;
        out.add(r);
    }
    Ok(out)
}

fn selector_operator(
    object: &ObjectRef,
    field: &str,
    op: &str,
) -> Result<SelectorOperator, ConvertError> {
    Ok(match op {
        "In" => SelectorOperator::In,
        "NotIn" => SelectorOperator::NotIn,
        "Exists" => SelectorOperator::Exists,
        "DoesNotExist" => SelectorOperator::DoesNotExist,
        other => {
            return Err(field_err(
                object,
                field,
                format!("unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"),
            ))
        }
    })
}

fn label_selector(
    object: &ObjectRef,
    path: &str,
    s: &metav1::LabelSelector,
) -> Result<LabelSelector, ConvertError> {
    let mut out = LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let field = format!("{path}.matchExpressions[{i}]");
        let operator = selector_operator(object, &format!("{field}.operator"), &e.operator)?;
        let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
        match operator {
            SelectorOperator::In | SelectorOperator::NotIn if values.is_empty() => {
                return Err(field_err(
                    object,
                    format!("{field}.values"),
                    format!("operator {} needs at least one value", e.operator),
                ))
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !values.is_empty() => {
                return Err(field_err(
                    object,
                    format!("{field}.values"),
                    format!("operator {} takes no values", e.operator),
                ))
            }
            _ => {}
        }
        out.match_expressions.push(SelectorRequirement {
            key: e.key.clone(),
            operator,
            values,
        });
    }
    out.match_expressions.sort();
    Ok(out)
}

fn affinity_term(
    object: &ObjectRef,
    path: &str,
    t: &corev1::PodAffinityTerm,
) -> Result<PodAffinityTerm, ConvertError> {
    if t.topology_key.is_empty() {
        return Err(field_err(object, format!("{path}.topologyKey"), "required"));
    }
    Ok(PodAffinityTerm {
        label_selector: t
            .label_selector
            .as_ref()
            .map(|s| label_selector(object, &format!("{path}.labelSelector"), s))
            .transpose()?,
        topology_key: labels::normalize_key(&t.topology_key).to_string(),
        namespaces: t.namespaces.clone().unwrap_or_default(),
        namespace_selector: t
            .namespace_selector
            .as_ref()
            .map(|s| label_selector(object, &format!("{path}.namespaceSelector"), s))
            .transpose()?,
        match_label_keys: t.match_label_keys.clone().unwrap_or_default(),
        mismatch_label_keys: t.mismatch_label_keys.clone().unwrap_or_default(),
    })
}

fn affinity_terms(
    object: &ObjectRef,
    path: &str,
    required: Option<&Vec<corev1::PodAffinityTerm>>,
    preferred: Option<&Vec<corev1::WeightedPodAffinityTerm>>,
) -> Result<(Vec<PodAffinityTerm>, Vec<Weighted<PodAffinityTerm>>), ConvertError> {
    let mut req = Vec::new();
    for (i, t) in required.into_iter().flatten().enumerate() {
        req.push(affinity_term(
            object,
            &format!("{path}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
            t,
        )?);
    }
    let mut pref = Vec::new();
    for (i, w) in preferred.into_iter().flatten().enumerate() {
        let p = format!("{path}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        if !(1..=100).contains(&w.weight) {
            return Err(field_err(
                object,
                format!("{p}.weight"),
                format!("must be between 1 and 100, got {}", w.weight),
            ));
        }
        pref.push(Weighted {
            weight: w.weight,
            term: affinity_term(
                object,
                &format!("{p}.podAffinityTerm"),
                &w.pod_affinity_term,
            )?,
        });
    }
    Ok((req, pref))
}

fn inclusion_policy(
    object: &ObjectRef,
    field: &str,
    v: Option<&str>,
    default: InclusionPolicy,
) -> Result<InclusionPolicy, ConvertError> {
    match v {
        None | Some("") => Ok(default),
        Some("Honor") => Ok(InclusionPolicy::Honor),
        Some("Ignore") => Ok(InclusionPolicy::Ignore),
        Some(other) => Err(field_err(
            object,
            field,
            format!("unknown policy {other:?} (expected Honor or Ignore)"),
        )),
    }
}

fn spread(
    object: &ObjectRef,
    path: &str,
    t: &corev1::TopologySpreadConstraint,
) -> Result<TopologySpreadConstraint, ConvertError> {
    if t.max_skew <= 0 {
        return Err(field_err(
            object,
            format!("{path}.maxSkew"),
            format!("must be greater than 0, got {}", t.max_skew),
        ));
    }
    if t.topology_key.is_empty() {
        return Err(field_err(object, format!("{path}.topologyKey"), "required"));
    }
    let when_unsatisfiable = match t.when_unsatisfiable.as_str() {
        "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
        "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
        other => {
            return Err(field_err(
                object,
                format!("{path}.whenUnsatisfiable"),
                format!("unknown value {other:?} (expected DoNotSchedule or ScheduleAnyway)"),
            ))
        }
    };
    if let Some(m) = t.min_domains {
        if m <= 0 {
            return Err(field_err(
                object,
                format!("{path}.minDomains"),
                format!("must be greater than 0, got {m}"),
            ));
        }
    }
    Ok(TopologySpreadConstraint {
        max_skew: t.max_skew,
        topology_key: labels::normalize_key(&t.topology_key).to_string(),
        when_unsatisfiable,
        label_selector: t
            .label_selector
            .as_ref()
            .map(|s| label_selector(object, &format!("{path}.labelSelector"), s))
            .transpose()?,
        min_domains: t.min_domains,
        node_affinity_policy: inclusion_policy(
            object,
            &format!("{path}.nodeAffinityPolicy"),
            t.node_affinity_policy.as_deref(),
            InclusionPolicy::Honor,
        )?,
        node_taints_policy: inclusion_policy(
            object,
            &format!("{path}.nodeTaintsPolicy"),
            t.node_taints_policy.as_deref(),
            InclusionPolicy::Ignore,
        )?,
        match_label_keys: t.match_label_keys.clone().unwrap_or_default(),
    })
}

fn effect(object: &ObjectRef, field: &str, e: &str) -> Result<Effect, ConvertError> {
    Effect::parse(e).ok_or_else(|| {
        field_err(
            object,
            field,
            format!(
                "invalid taint effect {e:?} (expected NoSchedule, PreferNoSchedule or NoExecute)"
            ),
        )
    })
}

fn toleration(
    object: &ObjectRef,
    path: &str,
    t: &corev1::Toleration,
) -> Result<Toleration, ConvertError> {
    let operator = match t.operator.as_deref() {
        None | Some("") | Some("Equal") => TolerationOperator::Equal,
        Some("Exists") => TolerationOperator::Exists,
        Some(other) => {
            return Err(field_err(
                object,
                format!("{path}.operator"),
                format!("unknown operator {other:?} (expected Equal or Exists)"),
            ))
        }
    };
    let effect = match t.effect.as_deref() {
        None | Some("") => None,
        Some(e) => Some(effect(object, &format!("{path}.effect"), e)?),
    };
    Ok(Toleration {
        key: t.key.clone().unwrap_or_default(),
        operator,
        value: t.value.clone().unwrap_or_default(),
        effect,
    })
}

fn taint(
    object: &ObjectRef,
    path: &str,
    key: &str,
    value: Option<&str>,
    e: &str,
) -> Result<Taint, ConvertError> {
    if key.is_empty() {
        return Err(field_err(object, format!("{path}.key"), "required"));
    }
    Ok(Taint::new(
        key,
        value.unwrap_or_default(),
        effect(object, &format!("{path}.effect"), e)?,
    ))
}

/// Volume requirements known from the input: PVC name (namespace, name) → PV node affinity.
#[derive(Debug, Default)]
struct Volumes {
    claims: BTreeMap<(String, String), String>,
    volumes: BTreeMap<String, Requirements>,
}

impl Volumes {
    fn requirements(&self, namespace: &str, claim: &str) -> Option<&Requirements> {
        let pv = self
            .claims
            .get(&(namespace.to_string(), claim.to_string()))?;
        self.volumes.get(pv)
    }
}

/// The labels and spec of a pod to convert.
struct PodInput<'a> {
    namespace: &'a str,
    name: &'a str,
    labels: BTreeMap<String, String>,
    spec: &'a corev1::PodSpec,
    /// Field path of the pod spec (`spec`, `spec.template.spec`).
    path: &'a str,
}

fn convert_pod(
    object: &ObjectRef,
    input: &PodInput<'_>,
    volumes: &Volumes,
) -> Result<Pod, ConvertError> {
    let path = input.path;
    let spec = input.spec;
    let requests = pod_requests(object, path, spec)?;
    let node_selector: Requirements = spec
        .node_selector
        .iter()
        .flatten()
        .map(|(k, v)| Requirement::in_values(labels::normalize_key(k), [v.clone()]))
        .collect();
    let mut pod = Pod {
        namespace: input.namespace.to_string(),
        name: input.name.to_string(),
        labels: input.labels.clone(),
        requests,
        node_selector,
        node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
        priority: spec.priority.unwrap_or(0),
        ..Pod::default()
    };
    if let Some(aff) = &spec.affinity {
        if let Some(na) = &aff.node_affinity {
            let p = format!("{path}.affinity.nodeAffinity");
            if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
                for (i, term) in req.node_selector_terms.iter().enumerate() {
                    let tp = format!("{p}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}].matchExpressions");
                    pod.required_node_affinity.push(node_selector_requirements(
                        object,
                        &tp,
                        term.match_expressions.as_ref(),
                    )?);
                }
            }
            for (i, w) in na
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .enumerate()
            {
                let wp = format!("{p}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
                if !(1..=100).contains(&w.weight) {
                    return Err(field_err(
                        object,
                        format!("{wp}.weight"),
                        format!("must be between 1 and 100, got {}", w.weight),
                    ));
                }
                let term = node_selector_requirements(
                    object,
                    &format!("{wp}.preference.matchExpressions"),
                    w.preference.match_expressions.as_ref(),
                )?;
                pod.preferred_node_affinity.push(Weighted {
                    weight: w.weight,
                    term,
                });
            }
        }
        if let Some(pa) = &aff.pod_affinity {
            let (req, pref) = affinity_terms(
                object,
                &format!("{path}.affinity.podAffinity"),
                pa.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                pa.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
            )?;
            pod.pod_affinity = req;
            pod.preferred_pod_affinity = pref;
        }
        if let Some(pa) = &aff.pod_anti_affinity {
            let (req, pref) = affinity_terms(
                object,
                &format!("{path}.affinity.podAntiAffinity"),
                pa.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                pa.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
            )?;
            pod.pod_anti_affinity = req;
            pod.preferred_pod_anti_affinity = pref;
        }
    }
    for (i, t) in spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
    {
        pod.topology_spread.push(spread(
            object,
            &format!("{path}.topologySpreadConstraints[{i}]"),
            t,
        )?);
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        pod.tolerations
            .push(toleration(object, &format!("{path}.tolerations[{i}]"), t)?);
    }
    let host_network = spec.host_network == Some(true);
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    for c in spec.containers.iter().chain(sidecars) {
        for p in c.ports.iter().flatten() {
            // With hostNetwork the API server defaults hostPort to containerPort.
            let port = p
                .host_port
                .filter(|&h| h > 0)
                .or((host_network && p.container_port > 0).then_some(p.container_port));
            if let Some(port) = port {
                pod.host_ports.push(HostPort {
                    ip: p.host_ip.clone().unwrap_or_default(),
                    port,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                });
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(claim) = &v.persistent_volume_claim {
            if let Some(reqs) = volumes.requirements(input.namespace, &claim.claim_name) {
                pod.volume_requirements.add_all(reqs);
            }
        }
    }
    Ok(pod)
}

fn is_duration(s: &str) -> bool {
    if s == "Never" {
        return true;
    }
    let b = s.as_bytes();
    let mut i = 0;
    if b.is_empty() {
        return false;
    }
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i == b.len() || !matches!(b[i], b's' | b'm' | b'h') {
            return false;
        }
        i += 1;
    }
    true
}

fn check_duration(
    object: &ObjectRef,
    field: &str,
    v: Option<&nodepool::FlexString>,
) -> Result<(), ConvertError> {
    match v {
        Some(d) if !is_duration(&d.0) => Err(field_err(
            object,
            field,
            format!("invalid duration {:?} (expected a Go duration of s, m and h such as 720h or 1h30m, or Never)", d.0),
        )),
        _ => Ok(()),
    }
}

/// Convert a NodePool's spec (everything but its instance types) and check the fields planning does not use.
///
/// # Errors
/// [`ConvertError::ConvertField`] naming the offending field.
pub fn convert_nodepool(
    object: &ObjectRef,
    np: &nodepool::NodePool,
) -> Result<NodePool, ConvertError> {
    let spec = &np.spec;
    let t = &spec.template.spec;
    let mut pool = NodePool::new(object.name.clone(), Vec::new());
    for (i, r) in t.requirements.iter().enumerate() {
        let field = format!("spec.template.spec.requirements[{i}]");
        let operator = Operator::parse(&r.operator)
            .map_err(|e| field_err(object, format!("{field}.operator"), e))?;
        let key = labels::normalize_key(&r.key).to_string();
        if labels::is_restricted(&key) {
            return Err(field_err(
                object,
                format!("{field}.key"),
                format!("label {key:?} is restricted"),
            ));
        }
        let min_values = match r.min_values {
            None => None,
            Some(n) => Some(usize::try_from(n).map_err(|_| {
                field_err(
                    object,
                    format!("{field}.minValues"),
                    format!("must be between 1 and 50, got {n}"),
                )
            })?),
        };
        let nsr = NodeSelectorRequirement {
            key,
            operator,
            values: r.values.iter().map(|v| v.0.clone()).collect(),
            min_values,
        };
        pool.requirements
            .add(Requirement::from_node_selector(&nsr).map_err(|e| field_err(object, &field, e))?);
    }
    for k in spec.template.metadata.labels.keys() {
        if labels::is_restricted(k) {
            return Err(field_err(
                object,
                format!("spec.template.metadata.labels.{k}"),
                format!("label {k:?} is restricted"),
            ));
        }
    }
    pool.labels = spec.template.metadata.labels.clone();
    for (i, tn) in t.taints.iter().enumerate() {
        pool.taints.push(taint(
            object,
            &format!("spec.template.spec.taints[{i}]"),
            &tn.key,
            tn.value.as_deref(),
            &tn.effect,
        )?);
    }
    for (i, tn) in t.startup_taints.iter().enumerate() {
        pool.startup_taints.push(taint(
            object,
            &format!("spec.template.spec.startupTaints[{i}]"),
            &tn.key,
            tn.value.as_deref(),
            &tn.effect,
        )?);
    }
    let mut limits = Limits::default();
    for (name, q) in &spec.limits {
        let parsed = parse_quantity(object, &format!("spec.limits.{name}"), &q.0)?;
        if name == "nodes" {
            limits.nodes = Some(parsed.value_ceil());
        } else {
            let mut r = Resources::new();
            r.set(name, &parsed);
            limits.resources.insert(name.clone(), r.get(name));
        }
    }
    pool.limits = limits;
    if let Some(w) = spec.weight {
        if !(1..=100).contains(&w) {
            return Err(field_err(
                object,
                "spec.weight",
                format!("must be between 1 and 100, got {w}"),
            ));
        }
        pool.weight = w;
    }
    check_duration(
        object,
        "spec.template.spec.expireAfter",
        t.expire_after.as_ref(),
    )?;
    check_duration(
        object,
        "spec.template.spec.terminationGracePeriod",
        t.termination_grace_period.as_ref(),
    )?;
    if let Some(d) = &spec.disruption {
        check_duration(
            object,
            "spec.disruption.expireAfter",
            d.expire_after.as_ref(),
        )?;
        check_duration(
            object,
            "spec.disruption.consolidateAfter",
            d.consolidate_after.as_ref(),
        )?;
        match d.consolidation_policy.as_deref() {
            None | Some("WhenEmpty" | "WhenEmptyOrUnderutilized") => {}
            Some(other) => {
                return Err(field_err(
                    object,
                    "spec.disruption.consolidationPolicy",
                    format!(
                        "unknown value {other:?} (expected WhenEmpty or WhenEmptyOrUnderutilized)"
                    ),
                ))
            }
        }
        for (i, b) in d.budgets.iter().enumerate() {
            if let Some(n) = &b.nodes {
                let s = n.0.strip_suffix('%').unwrap_or(&n.0);
                let ok = !s.is_empty()
                    && s.bytes().all(|c| c.is_ascii_digit())
                    && (!n.0.ends_with('%') || s.parse::<u32>().is_ok_and(|p| p <= 100));
                if !ok {
                    return Err(field_err(
                        object,
                        format!("spec.disruption.budgets[{i}].nodes"),
                        format!(
                            "invalid value {:?} (expected a count or a percentage such as 10%)",
                            n.0
                        ),
                    ));
                }
            }
            check_duration(
                object,
                &format!("spec.disruption.budgets[{i}].duration"),
                b.duration.as_ref(),
            )?;
            for (j, r) in b.reasons.iter().enumerate() {
                if !matches!(r.as_str(), "Underutilized" | "Empty" | "Drifted") {
                    return Err(field_err(
                        object,
                        format!("spec.disruption.budgets[{i}].reasons[{j}]"),
                        format!("unknown reason {r:?} (expected Underutilized, Empty or Drifted)"),
                    ));
                }
            }
        }
    }
    let Some(r) = &t.node_class_ref else {
        return Err(field_err(
            object,
            "spec.template.spec.nodeClassRef",
            "required",
        ));
    };
    if r.name.is_empty() {
        return Err(field_err(
            object,
            "spec.template.spec.nodeClassRef.name",
            "required",
        ));
    }
    if let Some(g) = r.group.as_deref().filter(|g| *g != "karpenter.k8s.aws") {
        return Err(field_err(
            object,
            "spec.template.spec.nodeClassRef.group",
            format!("unsupported group {g:?} (expected karpenter.k8s.aws)"),
        ));
    }
    if let Some(k) = r.kind.as_deref().filter(|k| *k != "EC2NodeClass") {
        return Err(field_err(
            object,
            "spec.template.spec.nodeClassRef.kind",
            format!("unsupported kind {k:?} (expected EC2NodeClass)"),
        ));
    }
    pool.node_class = Some(r.name.clone());
    Ok(pool)
}

/// Convert a Node into existing capacity.
///
/// # Errors
/// [`ConvertError::ConvertField`] for a bad quantity or taint, or a node without allocatable or capacity.
pub fn convert_node(object: &ObjectRef, n: &corev1::Node) -> Result<Node, ConvertError> {
    let mut node_labels = BTreeMap::new();
    for (k, v) in n.metadata.labels.iter().flatten() {
        node_labels.insert(k.clone(), v.clone());
    }
    for (k, v) in n.metadata.labels.iter().flatten() {
        node_labels
            .entry(labels::normalize_key(k).to_string())
            .or_insert_with(|| v.clone());
    }
    let status = n.status.as_ref();
    let (alloc_field, alloc) = match (
        status.and_then(|s| s.allocatable.as_ref()),
        status.and_then(|s| s.capacity.as_ref()),
    ) {
        (Some(a), _) => ("status.allocatable", a),
        (None, Some(c)) => ("status.capacity", c),
        (None, None) => {
            return Err(field_err(
                object,
                "status.allocatable",
                "required (the resources the node offers to pods)",
            ))
        }
    };
    let mut allocatable = Resources::new();
    set_resources(object, alloc_field, &mut allocatable, Some(alloc), |_| {
        false
    })?;
    let mut capacity = Resources::new();
    match status.and_then(|s| s.capacity.as_ref()) {
        Some(c) => set_resources(object, "status.capacity", &mut capacity, Some(c), |_| false)?,
        None => capacity = allocatable.clone(),
    }
    let mut node = Node::new(object.name.clone(), node_labels, allocatable);
    node.capacity = capacity;
    let spec = n.spec.as_ref();
    for (i, t) in spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        node.taints.push(taint(
            object,
            &format!("spec.taints[{i}]"),
            &t.key,
            t.value.as_deref(),
            &t.effect,
        )?);
    }
    node.deleting =
        spec.and_then(|s| s.unschedulable) == Some(true) || n.metadata.deletion_timestamp.is_some();
    Ok(node)
}

fn pv_requirements(
    object: &ObjectRef,
    pv: &corev1::PersistentVolume,
) -> Result<Option<Requirements>, ConvertError> {
    let Some(terms) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return Ok(None);
    };
    // Karpenter uses the first term (terms are OR-ed; one zone per volume in practice).
    let Some(first) = terms.node_selector_terms.first() else {
        return Ok(None);
    };
    let path = "spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions";
    let mut out = Requirements::new();
    for (j, e) in first.match_expressions.iter().flatten().enumerate() {
        let field = format!("{path}[{j}]");
        let op = Operator::parse(&e.operator)
            .map_err(|err| field_err(object, format!("{field}.operator"), err))?;
        let r = Requirement::new(
            labels::normalize_key(&e.key),
            op,
            e.values.iter().flatten().cloned(),
        )
        .map_err(|err| field_err(object, &field, err))?;
        out.add(r);
    }
    Ok(Some(out))
}

fn owned_by(meta: &metav1::ObjectMeta, kind: &str) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == kind && o.controller == Some(true))
        .map(|o| o.name.clone())
}

struct Builder {
    converted: Converted,
    pod_keys: BTreeMap<String, ObjectRef>,
}

impl Builder {
    fn push_pod(&mut self, origin: &ObjectRef, pod: Pod) -> Result<(), ConvertError> {
        let key = pod.key();
        if let Some(first) = self.pod_keys.get(&key) {
            let object = ObjectRef {
                kind: format!("{} (pod {key})", origin.kind),
                ..origin.clone()
            };
            return Err(ConvertError::DuplicateObject {
                object: Box::new(object),
                first: first.to_string(),
            });
        }
        self.pod_keys.insert(key, origin.clone());
        self.converted.snapshot.pods.push(pod);
        self.converted.pod_origins.push(origin.clone());
        Ok(())
    }

    /// Expand a workload's template into `count` pods named `<owner>-<index>`.
    fn expand(
        &mut self,
        origin: &ObjectRef,
        template: &corev1::PodTemplateSpec,
        count: i32,
        extra_labels: impl Fn(&str, i32) -> Vec<(String, String)>,
        volumes: &Volumes,
    ) -> Result<(), ConvertError> {
        let Some(spec) = &template.spec else {
            return Err(field_err(origin, "spec.template.spec", "required"));
        };
        let namespace = origin.namespace.clone().unwrap_or_else(|| "default".into());
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let base = convert_pod(
            origin,
            &PodInput {
                namespace: &namespace,
                name: &origin.name,
                labels,
                spec,
                path: "spec.template.spec",
            },
            volumes,
        )?;
        for i in 0..count.max(0) {
            let mut pod = base.clone();
            pod.name = format!("{}-{i}", origin.name);
            pod.node_name = None;
            for (k, v) in extra_labels(&pod.name, i) {
                pod.labels.insert(k, v);
            }
            self.push_pod(origin, pod)?;
        }
        Ok(())
    }
}

/// The most pods one workload may expand to in a plan (a simulation of more would only exhaust
/// memory; real clusters stay far below it).
pub const MAX_REPLICAS: i32 = 100_000;

fn replicas(origin: &ObjectRef, r: Option<i32>) -> Result<i32, ConvertError> {
    match r {
        Some(n) if n < 0 => Err(field_err(
            origin,
            "spec.replicas",
            format!("must not be negative, got {n}"),
        )),
        Some(n) if n > MAX_REPLICAS => Err(field_err(
            origin,
            "spec.replicas",
            format!("{n} is more than the {MAX_REPLICAS} pods karp plan simulates per workload"),
        )),
        Some(n) => Ok(n),
        None => Ok(1),
    }
}

/// Build the snapshot from loaded manifests, with instance types from `catalog`.
///
/// # Errors
/// [`ConvertError`] naming the file, the object and the field.
pub fn build_snapshot(
    manifests: &Manifests,
    catalog: &CatalogSource,
) -> Result<Converted, ConvertError> {
    let mut seen: BTreeMap<(String, Option<String>, String), String> = BTreeMap::new();
    for l in &manifests.objects {
        let o = &l.origin;
        if o.name.is_empty() {
            continue; // generateName pods
        }
        if let Some(first) = seen.insert(
            (o.kind.clone(), o.namespace.clone(), o.name.clone()),
            o.file.clone(),
        ) {
            return Err(ConvertError::DuplicateObject {
                object: Box::new(o.clone()),
                first,
            });
        }
    }

    // Volumes first: pods look them up.
    let mut volumes = Volumes::default();
    for l in &manifests.objects {
        match &l.object {
            Object::PersistentVolume(pv) => {
                if let Some(r) = pv_requirements(&l.origin, pv)? {
                    volumes.volumes.insert(l.origin.name.clone(), r);
                }
            }
            Object::PersistentVolumeClaim(pvc) => {
                if let Some(v) = pvc
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .filter(|v| !v.is_empty())
                {
                    volumes.claims.insert(
                        (
                            l.origin.namespace.clone().unwrap_or_default(),
                            l.origin.name.clone(),
                        ),
                        v,
                    );
                }
            }
            _ => {}
        }
    }
    let deployments: BTreeSet<(String, String)> = manifests
        .objects
        .iter()
        .filter(|l| matches!(l.object, Object::Deployment(_)))
        .map(|l| {
            (
                l.origin.namespace.clone().unwrap_or_default(),
                l.origin.name.clone(),
            )
        })
        .collect();

    let mut b = Builder {
        converted: Converted::default(),
        pod_keys: BTreeMap::new(),
    };
    let mut node_classes: BTreeMap<String, (&ObjectRef, &EC2NodeClass)> = BTreeMap::new();
    let mut pools: Vec<(&ObjectRef, NodePool)> = Vec::new();
    let mut generated = 0usize;
    for l in &manifests.objects {
        let o = &l.origin;
        let ns = o.namespace.clone().unwrap_or_else(|| "default".into());
        match &l.object {
            Object::NodePool(np) => pools.push((o, convert_nodepool(o, np)?)),
            Object::EC2NodeClass(nc) => {
                node_classes.insert(o.name.clone(), (o, nc));
            }
            Object::Namespace(n) => {
                let mut labels = n.metadata.labels.clone().unwrap_or_default();
                labels.insert("kubernetes.io/metadata.name".into(), o.name.clone());
                b.converted
                    .snapshot
                    .namespaces
                    .insert(o.name.clone(), labels);
            }
            Object::Node(n) => b.converted.snapshot.nodes.push(convert_node(o, n)?),
            Object::Pod(p) => {
                if matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                ) {
                    continue;
                }
                let Some(spec) = &p.spec else {
                    return Err(field_err(o, "spec", "required"));
                };
                let pending = spec.node_name.as_deref().is_none_or(str::is_empty);
                if pending && owned_by(&p.metadata, "DaemonSet").is_some() {
                    continue; // DaemonSet pods are the DaemonSet's business, as in Karpenter
                }
                let name = if o.name.is_empty() {
                    generated += 1;
                    format!(
                        "{}{generated}",
                        p.metadata.generate_name.as_deref().unwrap_or("pod-")
                    )
                } else {
                    o.name.clone()
                };
                let labels = p.metadata.labels.clone().unwrap_or_default();
                let pod = convert_pod(
                    o,
                    &PodInput {
                        namespace: &ns,
                        name: &name,
                        labels,
                        spec,
                        path: "spec",
                    },
                    &volumes,
                )?;
                b.push_pod(o, pod)?;
            }
            Object::Deployment(d) => {
                let spec = &d.spec;
                let n = replicas(o, spec.replicas)?;
                b.expand(o, &spec.template, n, |_, _| Vec::new(), &volumes)?;
            }
            Object::ReplicaSet(rs) => {
                if let Some(owner) = owned_by(&rs.metadata, "Deployment")
                    .filter(|d| deployments.contains(&(ns.clone(), d.clone())))
                {
                    b.converted.warnings.push(format!(
                        "{o}: skipping: its pods come from Deployment {ns}/{owner}"
                    ));
                    continue;
                }
                let spec = &rs.spec;
                let n = replicas(o, spec.replicas)?;
                let template = spec
                    .template
                    .as_ref()
                    .ok_or_else(|| field_err(o, "spec.template", "required"))?;
                b.expand(o, template, n, |_, _| Vec::new(), &volumes)?;
            }
            Object::StatefulSet(s) => {
                let spec = &s.spec;
                let n = replicas(o, spec.replicas)?;
                let labels = |name: &str, i: i32| {
                    vec![
                        (
                            "statefulset.kubernetes.io/pod-name".to_string(),
                            name.to_string(),
                        ),
                        ("apps.kubernetes.io/pod-index".to_string(), i.to_string()),
                    ]
                };
                b.expand(o, &spec.template, n, labels, &volumes)?;
            }
            Object::Job(j) => {
                let spec = j
                    .spec
                    .as_ref()
                    .ok_or_else(|| field_err(o, "spec", "required"))?;
                let mut n = spec.parallelism.unwrap_or(1);
                if n < 0 {
                    return Err(field_err(
                        o,
                        "spec.parallelism",
                        format!("must not be negative, got {n}"),
                    ));
                }
                if let Some(c) = spec.completions {
                    if c < 0 {
                        return Err(field_err(
                            o,
                            "spec.completions",
                            format!("must not be negative, got {c}"),
                        ));
                    }
                    n = n.min(c);
                }
                if n > MAX_REPLICAS {
                    return Err(field_err(
                        o,
                        "spec.parallelism",
                        format!("{n} is more than the {MAX_REPLICAS} pods karp plan simulates per workload"),
                    ));
                }
                if spec.suspend == Some(true) {
                    n = 0;
                }
                let job = o.name.clone();
                let labels = move |_: &str, _: i32| {
                    vec![
                        ("batch.kubernetes.io/job-name".to_string(), job.clone()),
                        ("job-name".to_string(), job.clone()),
                    ]
                };
                b.expand(o, &spec.template, n, labels, &volumes)?;
            }
            Object::DaemonSet(d) => {
                let spec = &d.spec;
                let pod_spec = spec
                    .template
                    .spec
                    .as_ref()
                    .ok_or_else(|| field_err(o, "spec.template.spec", "required"))?;
                let labels = spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                let pod = convert_pod(
                    o,
                    &PodInput {
                        namespace: &ns,
                        name: &o.name,
                        labels,
                        spec: pod_spec,
                        path: "spec.template.spec",
                    },
                    &volumes,
                )?;
                b.converted.snapshot.daemonsets.push(pod);
            }
            Object::PodDisruptionBudget(_)
            | Object::PersistentVolume(_)
            | Object::PersistentVolumeClaim(_) => {}
        }
    }

    // Instance types per referenced node class (settings change capacity and overhead).
    let mut types_by_class: BTreeMap<String, Vec<Arc<InstanceType>>> = BTreeMap::new();
    for (origin, pool) in &mut pools {
        let class = pool.node_class.clone().unwrap_or_default();
        if let CatalogSource::Types(given) = catalog {
            pool.instance_types = given.get(&class).cloned().unwrap_or_default();
            continue;
        }
        if !types_by_class.contains_key(&class) {
            let Some((nc_origin, nc)) = node_classes.get(&class) else {
                return Err(ConvertError::ResolveNodeClass {
                    nodepool: Box::new((*origin).clone()),
                    name: class,
                });
            };
            let settings = nc.spec.settings().map_err(|e| ConvertError::BuildCatalog {
                nodeclass: Box::new((*nc_origin).clone()),
                reason: e.to_string(),
            })?;
            let entries =
                match catalog {
                    CatalogSource::Builtin => karp_aws::catalog::builtin_catalog(&settings)
                        .map_err(|e| ConvertError::BuildCatalog {
                            nodeclass: Box::new((*nc_origin).clone()),
                            reason: e.to_string(),
                        })?,
                    CatalogSource::File { name, json } => {
                        karp_aws::catalog_file::parse(json, &settings).map_err(|e| {
                            ConvertError::ParseCatalogFile {
                                file: name.clone(),
                                reason: e.to_string(),
                            }
                        })?
                    }
                    CatalogSource::Types(_) => Vec::new(),
                };
            types_by_class.insert(
                class.clone(),
                entries
                    .iter()
                    .map(|e| Arc::new(to_instance_type(e)))
                    .collect(),
            );
        }
        pool.instance_types = types_by_class[&class].clone();
    }
    // Without any NodePool a catalog file is still checked, so its errors are never silent.
    if let (true, CatalogSource::File { name, json }) = (pools.is_empty(), catalog) {
        karp_aws::catalog_file::parse(json, &karp_aws::allocatable::NodeClassSettings::default())
            .map_err(|e| ConvertError::ParseCatalogFile {
            file: name.clone(),
            reason: e.to_string(),
        })?;
    }

    // Prices of existing nodes, when the catalog knows their offering.
    for n in &mut b.converted.snapshot.nodes {
        let (Some(it), Some(zone), Some(ct)) = (
            n.labels.get(labels::INSTANCE_TYPE),
            n.labels.get(labels::ZONE),
            n.labels.get(labels::CAPACITY_TYPE),
        ) else {
            continue;
        };
        n.price = types_by_class
            .values()
            .flatten()
            .find(|t| &t.name == it)
            .and_then(|t| {
                t.offerings
                    .iter()
                    .find(|o| &o.zone == zone && &o.capacity_type == ct)
            })
            .map(|o| o.price);
    }

    let snapshot = &mut b.converted.snapshot;
    snapshot.node_pools = pools.into_iter().map(|(_, p)| p).collect();
    let pod_namespaces: Vec<String> = snapshot
        .pods
        .iter()
        .chain(&snapshot.daemonsets)
        .map(|p| p.namespace.clone())
        .collect();
    for ns in pod_namespaces {
        snapshot
            .namespaces
            .entry(ns.clone())
            .or_insert_with(|| [("kubernetes.io/metadata.name".to_string(), ns)].into());
    }
    Ok(b.converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::parse_text;

    fn origin() -> ObjectRef {
        ObjectRef {
            file: "t.yaml".into(),
            kind: "Pod".into(),
            namespace: Some("default".into()),
            name: "p".into(),
        }
    }

    fn spec(yaml: &str) -> corev1::PodSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn effective_requests_count_sidecars_init_peak_and_overhead() {
        let s = spec(
            r#"
containers:
  - {name: app, resources: {requests: {cpu: "1", memory: 1Gi}}}
  - {name: limited, resources: {limits: {cpu: 500m, memory: 256Mi}}}
initContainers:
  - {name: sidecar, restartPolicy: Always, resources: {requests: {cpu: 250m, memory: 64Mi}}}
  - {name: migrate, resources: {requests: {cpu: "3", memory: 128Mi}}}
overhead: {cpu: 100m, memory: 32Mi}
"#,
        );
        let r = pod_requests(&origin(), "spec", &s).unwrap();
        // max(1 + 0.5 + 0.25, 3 + 0.25) + 0.1 cpu; max(1Gi + 256Mi + 64Mi, 128Mi + 64Mi) + 32Mi memory.
        assert_eq!(r.cpu, 3350);
        assert_eq!(r.memory, (1 << 30) + (256 + 64 + 32) * (1 << 20));
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn limits_stand_in_for_missing_requests_only() {
        let s = spec(
            r#"containers: [{name: a, resources: {requests: {cpu: 200m}, limits: {cpu: "2", memory: 1Gi}}}]"#,
        );
        let r = pod_requests(&origin(), "spec", &s).unwrap();
        assert_eq!((r.cpu, r.memory), (200, 1 << 30));
    }

    #[test]
    fn bad_quantities_name_the_field() {
        let s = spec(r#"containers: [{name: a, resources: {requests: {cpu: abc}}}]"#);
        let e = pod_requests(&origin(), "spec.template.spec", &s)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.yaml: Pod default/p: spec.template.spec.containers[0].resources.requests.cpu: quantity \"abc\""), "{e}");
    }

    #[test]
    fn pod_constraints_convert_with_normalized_keys_and_defaults() {
        let s = spec(
            r#"
containers: [{name: a, ports: [{containerPort: 80, hostPort: 8080}]}]
nodeSelector: {"failure-domain.beta.kubernetes.io/zone": us-east-1a}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions: [{key: beta.kubernetes.io/arch, operator: In, values: [arm64]}]
        - matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 10
        preference: {matchExpressions: [{key: karpenter.sh/capacity-type, operator: In, values: [spot]}]}
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector: {matchLabels: {app: web}}
        matchLabelKeys: [version]
        namespaceSelector: {}
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, minDomains: 3,
     labelSelector: {matchExpressions: [{key: app, operator: Exists}]}}
tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]
"#,
        );
        let input = PodInput {
            namespace: "default",
            name: "p",
            labels: BTreeMap::new(),
            spec: &s,
            path: "spec",
        };
        let p = convert_pod(&origin(), &input, &Volumes::default()).unwrap();
        assert!(p.node_selector.get(labels::ZONE).is_some());
        assert_eq!(p.required_node_affinity.len(), 2);
        assert!(p.required_node_affinity[0]
            .get(labels::ARCH)
            .unwrap()
            .has("arm64"));
        assert_eq!(p.preferred_node_affinity[0].weight, 10);
        assert_eq!(p.pod_anti_affinity[0].match_label_keys, ["version"]);
        assert_eq!(
            p.pod_anti_affinity[0].namespace_selector,
            Some(LabelSelector::default())
        );
        let t = &p.topology_spread[0];
        assert_eq!(
            (t.when_unsatisfiable, t.min_domains),
            (WhenUnsatisfiable::ScheduleAnyway, Some(3))
        );
        assert_eq!(
            (t.node_affinity_policy, t.node_taints_policy),
            (InclusionPolicy::Honor, InclusionPolicy::Ignore)
        );
        assert_eq!(
            p.host_ports,
            [HostPort {
                ip: String::new(),
                port: 8080,
                protocol: "TCP".into()
            }]
        );
        assert_eq!(p.tolerations[0].effect, Some(Effect::NoSchedule));
    }

    #[test]
    fn unknown_operators_and_effects_are_field_errors() {
        let s = spec(
            r#"
containers: [{name: a}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: k, operator: Like, values: [x]}]}]}}}
"#,
        );
        let input = PodInput {
            namespace: "default",
            name: "p",
            labels: BTreeMap::new(),
            spec: &s,
            path: "spec",
        };
        let e = convert_pod(&origin(), &input, &Volumes::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: unknown operator \"Like\""), "{e}");
        let s = spec("containers: [{name: a}]\ntolerations: [{key: k, effect: NoWay}]\n");
        let input = PodInput {
            namespace: "default",
            name: "p",
            labels: BTreeMap::new(),
            spec: &s,
            path: "spec",
        };
        let e = convert_pod(&origin(), &input, &Volumes::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.tolerations[0].effect: invalid taint effect \"NoWay\""),
            "{e}"
        );
    }

    #[test]
    fn resource_amounts_convert_field_by_field() {
        let a = ResourceAmounts {
            cpu_millis: 1930,
            memory_bytes: 7 << 30,
            pods: 29,
            ephemeral_storage_bytes: 17 << 30,
            extended: [("nvidia.com/gpu".to_string(), 1), ("zero".to_string(), 0)].into(),
        };
        let r = to_resources(&a);
        assert_eq!(
            (r.cpu, r.memory, r.pods, r.ephemeral_storage),
            (1930, 7 << 30, 29, 17 << 30)
        );
        assert_eq!(r.extended, [("nvidia.com/gpu".to_string(), 1)].into());
    }

    #[test]
    fn workloads_expand_to_named_replicas() {
        let text = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: data}
spec:
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, resources: {requests: {cpu: "1"}}}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  parallelism: 5
  completions: 3
  template: {spec: {restartPolicy: Never, containers: [{name: w}]}}
"#;
        let c = build_snapshot(
            &parse_text("w.yaml", text).unwrap(),
            &CatalogSource::Builtin,
        )
        .unwrap();
        let keys: Vec<String> = c.snapshot.pods.iter().map(Pod::key).collect();
        assert_eq!(
            keys,
            [
                "data/db-0",
                "data/db-1",
                "default/batch-0",
                "default/batch-1",
                "default/batch-2"
            ]
        );
        assert_eq!(
            c.snapshot.pods[1].labels["statefulset.kubernetes.io/pod-name"],
            "db-1"
        );
        assert_eq!(c.snapshot.pods[2].labels["job-name"], "batch");
        assert!(c.snapshot.namespaces["data"].contains_key("kubernetes.io/metadata.name"));
    }

    #[test]
    fn pv_node_affinity_becomes_volume_requirements() {
        let text = r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-1}
spec:
  capacity: {storage: 10Gi}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [us-east-1b]}]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {volumeName: pv-1}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: a}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}, {name: e, persistentVolumeClaim: {claimName: unknown}}]
"#;
        let c = build_snapshot(
            &parse_text("v.yaml", text).unwrap(),
            &CatalogSource::Builtin,
        )
        .unwrap();
        let z = c.snapshot.pods[0]
            .volume_requirements
            .get(labels::ZONE)
            .unwrap();
        assert_eq!(z.values(), ["us-east-1b"]);
    }

    #[test]
    fn durations_follow_karpenter_pattern() {
        for ok in ["Never", "720h", "1h30m", "30s"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "h", "10", "1d", "1.5h", "never"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod nodepool_tests {
    use super::*;
    use crate::manifests::parse_text;

    fn pool(spec_yaml: &str) -> Result<NodePool, ConvertError> {
        let text = format!("apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {{name: np}}\nspec:\n{spec_yaml}");
        let m = parse_text("np.yaml", &text).unwrap();
        let Object::NodePool(np) = &m.objects[0].object else {
            panic!("not a NodePool")
        };
        convert_nodepool(&m.objects[0].origin, np)
    }

    const REF: &str =
        "      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: c}\n";

    #[test]
    fn nodepool_fields_convert() {
        let p = pool(&format!(
            r#"  weight: 10
  limits: {{cpu: "100", memory: 1000Gi, nodes: 5}}
  template:
    metadata: {{labels: {{team: a}}}}
    spec:
      requirements:
        - {{key: karpenter.k8s.aws/instance-cpu, operator: In, values: [4, "8"], minValues: 2}}
        - {{key: beta.kubernetes.io/arch, operator: In, values: [arm64]}}
      taints: [{{key: dedicated, effect: NoSchedule}}]
      startupTaints: [{{key: init, value: "true", effect: NoExecute}}]
{REF}"#
        ))
        .unwrap();
        assert_eq!(p.weight, 10);
        assert_eq!(p.limits.resources["cpu"], 100_000);
        assert_eq!(p.limits.resources["memory"], 1000 << 30);
        assert_eq!(p.limits.nodes, Some(5));
        let cpu = p
            .requirements
            .get("karpenter.k8s.aws/instance-cpu")
            .unwrap();
        assert_eq!((cpu.values(), cpu.min_values()), (vec!["4", "8"], Some(2)));
        assert!(
            p.requirements.get(labels::ARCH).is_some(),
            "beta keys are normalized"
        );
        assert_eq!(p.labels["team"], "a");
        assert_eq!(p.taints, [Taint::new("dedicated", "", Effect::NoSchedule)]);
        assert_eq!(p.startup_taints[0].effect, Effect::NoExecute);
        assert_eq!(p.node_class.as_deref(), Some("c"));
    }

    #[test]
    fn nodepool_field_errors_name_the_field() {
        let cases = [
            ("  weight: 0\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.weight"),
            ("  limits: {cpu: lots}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.limits.cpu"),
            ("  template: {spec: {}}\n", "spec.template.spec.nodeClassRef: required"),
            ("  template: {spec: {nodeClassRef: {name: c, kind: Other}}}\n", "spec.template.spec.nodeClassRef.kind"),
            ("  template: {spec: {expireAfter: 30d, nodeClassRef: {name: c}}}\n", "spec.template.spec.expireAfter"),
            ("  disruption: {consolidationPolicy: Sometimes}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.disruption.consolidationPolicy"),
            ("  disruption: {budgets: [{nodes: 150%}]}\n  template: {spec: {nodeClassRef: {name: c}}}\n", "spec.disruption.budgets[0].nodes"),
            (
                "  template: {spec: {requirements: [{key: a, operator: In, values: [x], minValues: 2}], nodeClassRef: {name: c}}}\n",
                "spec.template.spec.requirements[0]: minValues 2",
            ),
            (
                "  template: {spec: {requirements: [{key: kubernetes.io/hostname, operator: Exists}], nodeClassRef: {name: c}}}\n",
                "spec.template.spec.requirements[0].key",
            ),
        ];
        for (spec, field) in cases {
            let e = pool(spec).unwrap_err().to_string();
            assert!(e.starts_with("np.yaml: NodePool np: "), "{e}");
            assert!(e.contains(field), "{field:?} not in {e}");
        }
    }
}
