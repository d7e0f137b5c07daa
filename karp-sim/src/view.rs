//! Compact views of Kubernetes Pods and Nodes for the simulated scheduler, converted once from the
//! k8s-openapi objects.
//!
//! Conversion never fails: a pod whose constraints cannot be parsed (an unknown operator, a bad
//! quantity) gets [`PodView::invalid`] set, and the scheduler reports it unschedulable with that
//! message, as a real scheduler would refuse it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorTerm, Pod, PodAffinityTerm, Toleration as K8sToleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use karp_core::pod::{
    effective_requests, ContainerRequests, HostPort, LabelSelector, SelectorOperator,
    SelectorRequirement,
};
use karp_core::requirements::{Operator, Requirement};
use karp_core::resources::{Quantity, Resources};
use karp_core::taints::{Effect, Taint, Toleration, TolerationOperator};

/// A required pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    /// The node label whose values define the domains.
    pub topology_key: String,
    /// Namespaces the selected pods live in (the pod's own namespace when the term lists none;
    /// `namespaceSelector` is not evaluated).
    pub namespaces: BTreeSet<String>,
    /// Which pods the term selects.
    pub selector: LabelSelector,
}

impl AffinityTerm {
    /// Whether `pod` is selected by the term.
    #[must_use]
    pub fn selects(&self, pod: &PodView) -> bool {
        self.namespaces.contains(&pod.namespace) && self.selector.matches(&pod.labels)
    }
}

/// A `DoNotSchedule` topology spread constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    /// The node label whose values define the domains.
    pub topology_key: String,
    /// The largest allowed difference between the fullest and the emptiest domain.
    pub max_skew: i32,
    /// When fewer domains exist, the global minimum counts as 0.
    pub min_domains: Option<i32>,
    /// Which pods are counted (the pod's own namespace only).
    pub selector: LabelSelector,
}

/// A pod as the simulated scheduler and kubelet see it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (empty when the server sent none).
    pub uid: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `spec.schedulerName` (`None` or empty: the default scheduler).
    pub scheduler_name: Option<String>,
    /// `status.phase` (empty when unset).
    pub phase: String,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Effective requests including one pod slot.
    pub requests: Resources,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: terms OR-ed, requirements inside a term AND-ed. Empty: no affinity.
    pub required_node_terms: Vec<Vec<Requirement>>,
    /// Host ports its containers bind.
    pub host_ports: Vec<HostPort>,
    /// Required pod affinity terms.
    pub pod_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub pod_anti_affinity: Vec<AffinityTerm>,
    /// `DoNotSchedule` topology spread constraints.
    pub spread: Vec<SpreadConstraint>,
    /// Why the pod's spec could not be understood, if it could not.
    pub invalid: Option<String>,
}

impl PodView {
    /// `namespace/name`.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod has finished (Succeeded or Failed) and no longer uses its node.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }

    /// Whether the default scheduler is responsible for it.
    #[must_use]
    pub fn uses_default_scheduler(&self) -> bool {
        self.scheduler_name
            .as_deref()
            .is_none_or(|s| s.is_empty() || s == crate::scheduler::DEFAULT_SCHEDULER_NAME)
    }
}

/// A node as the simulated scheduler sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// `status.allocatable`.
    pub allocatable: Resources,
    /// Whether the Ready condition is True.
    pub ready: bool,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

fn parse_quantity(name: &str, q: &K8sQuantity) -> Result<Quantity, String> {
    q.0.parse::<Quantity>()
        .map_err(|e| format!("resource {name}: {e}"))
}

/// Parse a Kubernetes resource list into [`Resources`].
///
/// # Errors
/// A message naming the first resource whose quantity does not parse.
pub fn resources_from(list: &BTreeMap<String, K8sQuantity>) -> Result<Resources, String> {
    let mut r = Resources::new();
    for (k, v) in list {
        r.set(k, &parse_quantity(k, v)?);
    }
    Ok(r)
}

/// Render [`Resources`] as a Kubernetes resource list: CPU in millicores (`1930m`, or whole cores
/// when exact), memory and ephemeral storage in bytes with binary suffixes where exact (`7784Mi`),
/// pods and extended resources as integers. Zero entries are left out.
#[must_use]
pub fn resource_list(r: &Resources) -> BTreeMap<String, K8sQuantity> {
    let mut out = BTreeMap::new();
    for (name, v) in r.iter() {
        let q = match name {
            "cpu" => Quantity::from_millis(v),
            "memory" | "ephemeral-storage" => Quantity::from_bytes(v),
            _ => Quantity::from_units(v),
        };
        out.insert(name.to_string(), K8sQuantity(q.to_string()));
    }
    out
}

fn container_requests(c: &Container) -> Result<ContainerRequests, String> {
    let res = c.resources.as_ref();
    let mut list: BTreeMap<String, K8sQuantity> =
        res.and_then(|r| r.requests.clone()).unwrap_or_default();
    // The API server defaults missing requests to the limits.
    if let Some(limits) = res.and_then(|r| r.limits.as_ref()) {
        for (k, v) in limits {
            list.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Ok(ContainerRequests {
        requests: resources_from(&list)?,
        restartable: c.restart_policy.as_deref() == Some("Always"),
    })
}

fn toleration(t: &K8sToleration) -> Result<Toleration, String> {
    let operator = match t.operator.as_deref() {
        None | Some("") | Some("Equal") => TolerationOperator::Equal,
        Some("Exists") => TolerationOperator::Exists,
        Some(other) => {
            return Err(format!(
                "toleration operator {other:?} is not Equal or Exists"
            ))
        }
    };
    let effect = match t.effect.as_deref() {
        None | Some("") => None,
        Some(e) => {
            Some(Effect::parse(e).ok_or_else(|| format!("toleration effect {e:?} is unknown"))?)
        }
    };
    Ok(Toleration {
        key: t.key.clone().unwrap_or_default(),
        operator,
        value: t.value.clone().unwrap_or_default(),
        effect,
    })
}

/// Convert a node taint.
///
/// # Errors
/// A message when the effect is unknown.
pub fn taint_from(t: &k8s_openapi::api::core::v1::Taint) -> Result<Taint, String> {
    let effect = Effect::parse(&t.effect)
        .ok_or_else(|| format!("taint effect {:?} is unknown", t.effect))?;
    Ok(Taint::new(
        t.key.clone(),
        t.value.clone().unwrap_or_default(),
        effect,
    ))
}

/// Convert a core taint to the Kubernetes object.
#[must_use]
pub fn taint_to(t: &Taint) -> k8s_openapi::api::core::v1::Taint {
    k8s_openapi::api::core::v1::Taint {
        key: t.key.clone(),
        value: (!t.value.is_empty()).then(|| t.value.clone()),
        effect: t.effect.as_str().to_string(),
        time_added: None,
    }
}

fn node_selector_term(term: &NodeSelectorTerm) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for e in term.match_expressions.iter().flatten() {
        let op = Operator::parse(&e.operator).map_err(|err| err.to_string())?;
        // Kubernetes node affinity knows In, NotIn, Exists, DoesNotExist, Gt and Lt.
        if matches!(op, Operator::Gte | Operator::Lte) {
            return Err(format!(
                "node affinity operator {} is not supported by Kubernetes",
                op.as_str()
            ));
        }
        let values = e.values.clone().unwrap_or_default();
        out.push(Requirement::new(e.key.clone(), op, values).map_err(|err| err.to_string())?);
    }
    // matchFields (metadata.name) is expressed as a requirement on a synthetic key the node view
    // carries: see `NODE_NAME_FIELD`.
    for f in term.match_fields.iter().flatten() {
        let op = Operator::parse(&f.operator).map_err(|err| err.to_string())?;
        if f.key != "metadata.name" || !matches!(op, Operator::In | Operator::NotIn) {
            return Err(format!(
                "node affinity matchFields supports only metadata.name with In or NotIn, got {} {}",
                f.key,
                op.as_str()
            ));
        }
        let values = f.values.clone().unwrap_or_default();
        out.push(Requirement::new(NODE_NAME_FIELD, op, values).map_err(|err| err.to_string())?);
    }
    Ok(out)
}

/// The synthetic label key under which a node's name is matched by `matchFields: metadata.name`.
pub const NODE_NAME_FIELD: &str = "metadata.name";

fn label_selector(s: Option<&K8sLabelSelector>) -> Result<LabelSelector, String> {
    let Some(s) = s else {
        // A nil selector in an affinity term selects nothing; model it with an impossible
        // expression.
        return Ok(LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![SelectorRequirement {
                key: String::new(),
                operator: SelectorOperator::In,
                values: BTreeSet::new(),
            }],
        });
    };
    let mut out = LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for e in s.match_expressions.iter().flatten() {
        let operator = match e.operator.as_str() {
            "In" => SelectorOperator::In,
            "NotIn" => SelectorOperator::NotIn,
            "Exists" => SelectorOperator::Exists,
            "DoesNotExist" => SelectorOperator::DoesNotExist,
            other => return Err(format!("label selector operator {other:?} is unknown")),
        };
        out.match_expressions.push(SelectorRequirement {
            key: e.key.clone(),
            operator,
            values: e.values.iter().flatten().cloned().collect(),
        });
    }
    Ok(out)
}

fn affinity_term(t: &PodAffinityTerm, own_ns: &str) -> Result<AffinityTerm, String> {
    let mut namespaces: BTreeSet<String> = t.namespaces.iter().flatten().cloned().collect();
    if namespaces.is_empty() {
        namespaces.insert(own_ns.to_string());
    }
    Ok(AffinityTerm {
        topology_key: t.topology_key.clone(),
        namespaces,
        selector: label_selector(t.label_selector.as_ref())?,
    })
}

fn convert_spec(pod: &Pod, v: &mut PodView) -> Result<(), String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Err("pod has no spec".into());
    };
    v.node_name = spec.node_name.clone().filter(|n| !n.is_empty());
    v.scheduler_name = spec.scheduler_name.clone();
    v.node_selector = spec.node_selector.clone().unwrap_or_default();
    let containers = spec
        .containers
        .iter()
        .map(container_requests)
        .collect::<Result<Vec<_>, _>>()?;
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(container_requests)
        .collect::<Result<Vec<_>, _>>()?;
    let overhead = resources_from(&spec.overhead.clone().unwrap_or_default())?;
    v.requests = effective_requests(&containers, &init, &overhead);
    v.tolerations = spec
        .tolerations
        .iter()
        .flatten()
        .map(toleration)
        .collect::<Result<_, _>>()?;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            if let Some(port) = p.host_port.filter(|p| *p > 0) {
                v.host_ports.push(HostPort {
                    ip: p.host_ip.clone().unwrap_or_default(),
                    port,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                });
            }
        }
    }
    if let Some(aff) = spec.affinity.as_ref() {
        if let Some(sel) = aff.node_affinity.as_ref().and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
            v.required_node_terms = sel
                .node_selector_terms
                .iter()
                .map(node_selector_term)
                .collect::<Result<_, _>>()?;
            if v.required_node_terms.is_empty() {
                // An empty list of terms matches no node.
                return Err("required node affinity has no nodeSelectorTerms".into());
            }
        }
        for t in aff.pod_affinity.iter().flat_map(|a| {
            a.required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
        }) {
            v.pod_affinity.push(affinity_term(t, &v.namespace)?);
        }
        for t in aff.pod_anti_affinity.iter().flat_map(|a| {
            a.required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
        }) {
            v.pod_anti_affinity.push(affinity_term(t, &v.namespace)?);
        }
    }
    for c in spec.topology_spread_constraints.iter().flatten() {
        if c.when_unsatisfiable != "DoNotSchedule" {
            continue;
        }
        v.spread.push(SpreadConstraint {
            topology_key: c.topology_key.clone(),
            max_skew: c.max_skew.max(1),
            min_domains: c.min_domains,
            selector: label_selector(c.label_selector.as_ref())?,
        });
    }
    Ok(())
}

impl PodView {
    /// Convert a pod. Never fails; see [`PodView::invalid`].
    #[must_use]
    pub fn from_pod(pod: &Pod) -> PodView {
        let meta = &pod.metadata;
        let mut v = PodView {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            phase: pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
            ..PodView::default()
        };
        if let Err(e) = convert_spec(pod, &mut v) {
            v.invalid = Some(e);
        }
        v
    }
}

impl NodeView {
    /// Convert a node. Taints with unknown effects and unparsable allocatable entries are
    /// skipped.
    #[must_use]
    pub fn from_node(node: &Node) -> NodeView {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let mut allocatable = Resources::new();
        for (k, q) in status
            .and_then(|s| s.allocatable.as_ref())
            .into_iter()
            .flatten()
        {
            if let Ok(q) = q.0.parse::<Quantity>() {
                allocatable.set(k, &q);
            }
        }
        NodeView {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|t| taint_from(t).ok())
                .collect(),
            allocatable,
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            deleting: node.metadata.deletion_timestamp.is_some(),
        }
    }
}
