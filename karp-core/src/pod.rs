//! The scheduler's view of a pod: requests and every placement constraint, already parsed.
//!
//! Conversion from Kubernetes objects happens once at the edge (karp-operator); this module only
//! holds validated data and the pure rules on it (effective requests, label selectors, host port
//! conflicts).

use std::collections::{BTreeMap, BTreeSet};

use crate::requirements::Requirements;
use crate::resources::Resources;
use crate::taints::Toleration;

/// Operators of a label selector expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SelectorOperator {
    /// Label value is one of the values.
    In,
    /// Label is absent or its value is none of the values.
    NotIn,
    /// Label is present.
    Exists,
    /// Label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SelectorRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: SelectorOperator,
    /// Values (In / NotIn).
    pub values: BTreeSet<String>,
}

/// A Kubernetes label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSelector {
    /// `matchLabels`.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// A selector on exact labels.
    #[must_use]
    pub fn labels<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        LabelSelector {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether `labels` satisfy the selector.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let v = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => v.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => v.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => v.is_some(),
                    SelectorOperator::DoesNotExist => v.is_none(),
                }
            })
    }

    /// Add `key In [value]` (used for `matchLabelKeys`).
    pub fn require_value(&mut self, key: &str, value: &str) {
        self.match_expressions.push(SelectorRequirement {
            key: key.to_string(),
            operator: SelectorOperator::In,
            values: [value.to_string()].into_iter().collect(),
        });
        self.match_expressions.sort();
    }

    /// Add `key NotIn [value]` (used for `mismatchLabelKeys`).
    pub fn forbid_value(&mut self, key: &str, value: &str) {
        self.match_expressions.push(SelectorRequirement {
            key: key.to_string(),
            operator: SelectorOperator::NotIn,
            values: [value.to_string()].into_iter().collect(),
        });
        self.match_expressions.sort();
    }
}

/// Which namespaces an affinity term looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamespaceSet {
    /// Every namespace (`namespaceSelector: {}`).
    All,
    /// These namespaces.
    Only(BTreeSet<String>),
}

impl NamespaceSet {
    /// Whether `ns` is included.
    #[must_use]
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            NamespaceSet::All => true,
            NamespaceSet::Only(s) => s.contains(ns),
        }
    }
}

/// A pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodAffinityTerm {
    /// Which pods; `None` selects no pods (Kubernetes semantics of a nil selector).
    pub label_selector: Option<LabelSelector>,
    /// The topology key (`kubernetes.io/hostname`, `topology.kubernetes.io/zone`, any label).
    pub topology_key: String,
    /// Explicit namespaces.
    pub namespaces: Vec<String>,
    /// Namespace selector; `Some(empty)` means all namespaces.
    pub namespace_selector: Option<LabelSelector>,
    /// `matchLabelKeys`: pod label keys whose values are added to the selector (`In`).
    pub match_label_keys: Vec<String>,
    /// `mismatchLabelKeys`: pod label keys whose values are excluded (`NotIn`).
    pub mismatch_label_keys: Vec<String>,
}

impl PodAffinityTerm {
    /// A term on `topology_key` selecting pods with `labels` in the pod's own namespace.
    #[must_use]
    pub fn new<I, K, V>(topology_key: impl Into<String>, labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        PodAffinityTerm {
            label_selector: Some(LabelSelector::labels(labels)),
            topology_key: topology_key.into(),
            namespaces: Vec::new(),
            namespace_selector: None,
            match_label_keys: Vec::new(),
            mismatch_label_keys: Vec::new(),
        }
    }
}

/// A preferred term with its weight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Weighted<T> {
    /// 1..=100.
    pub weight: i32,
    /// The term.
    pub term: T,
}

/// What to do when a spread constraint cannot be met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum WhenUnsatisfiable {
    /// Hard constraint.
    #[default]
    DoNotSchedule,
    /// Soft constraint (Karpenter treats it as hard until relaxed).
    ScheduleAnyway,
}

/// `nodeAffinityPolicy` / `nodeTaintsPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InclusionPolicy {
    /// Only count nodes that match the pod's node affinity / tolerate the node's taints.
    Honor,
    /// Count every node.
    Ignore,
}

/// A topology spread constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopologySpreadConstraint {
    /// Maximum allowed difference between domain counts.
    pub max_skew: i32,
    /// The topology key.
    pub topology_key: String,
    /// Hard or soft.
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// Which pods count; `None` selects none.
    pub label_selector: Option<LabelSelector>,
    /// Minimum number of eligible domains.
    pub min_domains: Option<i32>,
    /// Default Honor.
    pub node_affinity_policy: InclusionPolicy,
    /// Default Ignore.
    pub node_taints_policy: InclusionPolicy,
    /// Pod label keys whose values are added to the selector.
    pub match_label_keys: Vec<String>,
}

impl TopologySpreadConstraint {
    /// A hard constraint with defaults.
    #[must_use]
    pub fn new(topology_key: impl Into<String>, max_skew: i32, selector: LabelSelector) -> Self {
        TopologySpreadConstraint {
            max_skew,
            topology_key: topology_key.into(),
            when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
            label_selector: Some(selector),
            min_domains: None,
            node_affinity_policy: InclusionPolicy::Honor,
            node_taints_policy: InclusionPolicy::Ignore,
            match_label_keys: Vec::new(),
        }
    }
}

/// A host port a container binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// Host IP; empty or `0.0.0.0` means all addresses.
    pub ip: String,
    /// Port number.
    pub port: i32,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

impl HostPort {
    fn wildcard(&self) -> bool {
        self.ip.is_empty() || self.ip == "0.0.0.0" || self.ip == "::"
    }

    /// Whether two host ports cannot share a node (same port and protocol, overlapping IPs).
    #[must_use]
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.wildcard() || other.wildcard() || self.ip == other.ip)
    }
}

/// One container's resource requests, for [`effective_requests`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRequests {
    /// Requests (limits already defaulted into requests by the caller where Kubernetes does).
    pub requests: Resources,
    /// For init containers: `restartPolicy: Always` (a sidecar that keeps running).
    pub restartable: bool,
}

/// A pod's effective requests as the Kubernetes scheduler computes them, plus one pod slot.
///
/// The larger of (regular containers + all sidecars) and, for each plain init container, its
/// requests plus the sidecars started before it; then pod overhead is added.
#[must_use]
pub fn effective_requests(
    containers: &[ContainerRequests],
    init: &[ContainerRequests],
    overhead: &Resources,
) -> Resources {
    let mut running = Resources::new();
    for c in containers {
        running.add_assign(&c.requests);
    }
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for c in init {
        if c.restartable {
            sidecars.add_assign(&c.requests);
            init_peak = init_peak.max(&sidecars);
        } else {
            init_peak = init_peak.max(&c.requests.plus(&sidecars));
        }
    }
    let mut total = running.plus(&sidecars).max(&init_peak);
    total.add_assign(overhead);
    total.pods = total.pods.max(0) + 1;
    total
}

/// A pod as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Effective requests including one `pods` slot (see [`effective_requests`]).
    pub requests: Resources,
    /// `nodeSelector` as requirements.
    pub node_selector: Requirements,
    /// Required node affinity: OR-ed terms.
    pub required_node_affinity: Vec<Requirements>,
    /// Preferred node affinity terms.
    pub preferred_node_affinity: Vec<Weighted<Requirements>>,
    /// Required pod affinity terms.
    pub pod_affinity: Vec<PodAffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_pod_affinity: Vec<Weighted<PodAffinityTerm>>,
    /// Required pod anti-affinity terms.
    pub pod_anti_affinity: Vec<PodAffinityTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_pod_anti_affinity: Vec<Weighted<PodAffinityTerm>>,
    /// Topology spread constraints.
    pub topology_spread: Vec<TopologySpreadConstraint>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Host ports.
    pub host_ports: Vec<HostPort>,
    /// Requirements from bound volumes (PV node affinity / zone), ANDed with every term.
    pub volume_requirements: Requirements,
    /// The node the pod is bound to (`spec.nodeName`), if any.
    pub node_name: Option<String>,
    /// Priority (for ordering evictions; not used by the scheduler's sort).
    pub priority: i32,
}

impl Pod {
    /// `namespace/name`.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The strict node requirements: nodeSelector, volume requirements and the first required
    /// node-affinity term (Karpenter tries OR-terms one at a time).
    #[must_use]
    pub fn strict_requirements(&self) -> Requirements {
        let mut r = self.node_selector.clone();
        r.add_all(&self.volume_requirements);
        if let Some(first) = self.required_node_affinity.first() {
            r.add_all(first);
        }
        r
    }

    /// Whether `labels` satisfy the pod's hard node constraints (nodeSelector, volumes, any
    /// required term), as kube-scheduler checks them on a real node.
    #[must_use]
    pub fn node_matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector.matches_labels(labels)
            && self.volume_requirements.matches_labels(labels)
            && (self.required_node_affinity.is_empty()
                || self
                    .required_node_affinity
                    .iter()
                    .any(|t| t.matches_labels(labels)))
    }

    /// Resolve the namespaces an affinity term looks at.
    #[must_use]
    pub fn term_namespaces(
        &self,
        term: &PodAffinityTerm,
        namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> NamespaceSet {
        let mut set: BTreeSet<String> = term.namespaces.iter().cloned().collect();
        if let Some(sel) = &term.namespace_selector {
            if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
                return NamespaceSet::All;
            }
            for (ns, labels) in namespaces {
                if sel.matches(labels) {
                    set.insert(ns.clone());
                }
            }
        } else if set.is_empty() {
            set.insert(self.namespace.clone());
        }
        NamespaceSet::Only(set)
    }

    /// The effective selector of an affinity term (`matchLabelKeys` / `mismatchLabelKeys` merged).
    #[must_use]
    pub fn term_selector(&self, term: &PodAffinityTerm) -> Option<LabelSelector> {
        let mut sel = term.label_selector.clone()?;
        for k in &term.match_label_keys {
            if let Some(v) = self.labels.get(k) {
                sel.require_value(k, v);
            }
        }
        for k in &term.mismatch_label_keys {
            if let Some(v) = self.labels.get(k) {
                sel.forbid_value(k, v);
            }
        }
        Some(sel)
    }

    /// The effective selector of a spread constraint (`matchLabelKeys` merged).
    #[must_use]
    pub fn spread_selector(&self, tsc: &TopologySpreadConstraint) -> Option<LabelSelector> {
        let mut sel = tsc.label_selector.clone()?;
        for k in &tsc.match_label_keys {
            if let Some(v) = self.labels.get(k) {
                sel.require_value(k, v);
            }
        }
        Some(sel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cpu: &str, mem: &str) -> Resources {
        Resources::from_pairs([("cpu", cpu), ("memory", mem)]).unwrap()
    }

    #[test]
    fn effective_requests_take_the_init_peak_and_sidecars() {
        let containers = vec![ContainerRequests {
            requests: r("1", "1Gi"),
            restartable: false,
        }];
        // A plain init container bigger than the app dominates.
        let init = vec![ContainerRequests {
            requests: r("2", "512Mi"),
            restartable: false,
        }];
        let e = effective_requests(&containers, &init, &Resources::new());
        assert_eq!((e.cpu, e.memory, e.pods), (2000, 1 << 30, 1));
        // A sidecar adds to the app and to later init containers.
        let init = vec![
            ContainerRequests {
                requests: r("500m", "100Mi"),
                restartable: true,
            },
            ContainerRequests {
                requests: r("1", "1Gi"),
                restartable: false,
            },
        ];
        let e = effective_requests(&containers, &init, &r("100m", "10Mi"));
        assert_eq!(e.cpu, 1600);
        assert_eq!(e.memory, (1 << 30) + 110 * (1 << 20));
    }

    #[test]
    fn label_selector_operators() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let mut s = LabelSelector::labels([("app", "web")]);
        assert!(s.matches(&labels));
        s.match_expressions.push(SelectorRequirement {
            key: "tier".into(),
            operator: SelectorOperator::DoesNotExist,
            values: BTreeSet::new(),
        });
        assert!(s.matches(&labels));
        s.forbid_value("app", "web");
        assert!(!s.matches(&labels));
        assert!(LabelSelector::default().matches(&labels));
    }

    #[test]
    fn host_ports_conflict_on_overlapping_ips() {
        let p = |ip: &str, port, proto: &str| HostPort {
            ip: ip.into(),
            port,
            protocol: proto.into(),
        };
        assert!(p("", 80, "TCP").conflicts(&p("10.0.0.1", 80, "TCP")));
        assert!(!p("10.0.0.2", 80, "TCP").conflicts(&p("10.0.0.1", 80, "TCP")));
        assert!(!p("", 80, "UDP").conflicts(&p("", 80, "TCP")));
        assert!(!p("", 81, "TCP").conflicts(&p("", 80, "TCP")));
    }
}
