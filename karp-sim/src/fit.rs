//! The simulated kube-scheduler's decisions, as pure functions of pods and nodes.
//!
//! [`ClusterState`] holds the schedulable picture of the cluster (nodes, the pods bound to them,
//! what each node has left); [`ClusterState::place`] picks a node for one pending pod with the real
//! scheduler's filters and a bin-packing score, and records the placement so the next pod of the
//! same pass sees it.
//!
//! Filters, in the order the real scheduler reports them: `spec.unschedulable`, the Ready
//! condition, NoSchedule / NoExecute taints, `nodeSelector` and required node affinity, host ports,
//! resources (effective requests against allocatable minus the requests of the pods bound there),
//! required pod anti-affinity (both directions) and affinity on any topology key, and
//! `DoNotSchedule` topology spread (node inclusion policies: Honor affinity, Ignore taints).
//! Among the nodes that pass, the one with the least CPU left after placement wins, ties broken by
//! name.

use std::collections::{BTreeMap, BTreeSet};

use karp_core::pod::HostPort;
use karp_core::requirements::Requirement;
use karp_core::resources::Resources;
use karp_core::taints::{Effect, Taint, Toleration};

use crate::view::{NodeView, PodView, NODE_NAME_FIELD};

/// Reason: the node is cordoned.
pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// Reason: the node's Ready condition is not True.
pub const REASON_NOT_READY: &str = "node(s) were not ready";
/// Reason: node selector or required node affinity.
pub const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// Reason: host ports in use.
pub const REASON_HOST_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
/// Reason: pod anti-affinity.
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Reason: pod affinity.
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Reason: topology spread.
pub const REASON_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
/// Reason: the node is being deleted.
pub const REASON_DELETING: &str = "node(s) were being deleted";

/// Whether the tolerations tolerate every NoSchedule and NoExecute taint; the first one they do
/// not, otherwise.
#[must_use]
pub fn untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints.iter().find(|t| {
        t.effect != Effect::PreferNoSchedule && !tolerations.iter().any(|tol| tol.tolerates(t))
    })
}

fn requirement_matches(r: &Requirement, node: &NodeView) -> bool {
    if r.key() == NODE_NAME_FIELD {
        return r.matches(Some(&node.name));
    }
    r.matches(node.labels.get(r.key()).map(String::as_str))
}

/// Whether `node` satisfies the pod's `nodeSelector` and required node affinity (terms OR-ed,
/// expressions inside a term AND-ed).
#[must_use]
pub fn node_affinity_matches(pod: &PodView, node: &NodeView) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && (pod.required_node_terms.is_empty()
            || pod
                .required_node_terms
                .iter()
                .any(|term| term.iter().all(|r| requirement_matches(r, node))))
}

/// Whether any of `wanted` conflicts with a port in `used`.
#[must_use]
pub fn host_ports_conflict(wanted: &[HostPort], used: &[HostPort]) -> bool {
    wanted.iter().any(|w| used.iter().any(|u| w.conflicts(u)))
}

/// The reasons `requests` does not fit in `free` (`Insufficient cpu`, `Too many pods`, ...), in
/// resource order; empty when it fits.
#[must_use]
pub fn insufficient(requests: &Resources, free: &Resources) -> Vec<String> {
    requests
        .iter()
        .filter(|(name, v)| *v > 0 && *v > free.get(name))
        .map(|(name, _)| {
            if name == "pods" {
                "Too many pods".to_string()
            } else {
                format!("Insufficient {name}")
            }
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
struct NodeSlot {
    view: NodeView,
    used: Resources,
    ports: Vec<HostPort>,
    /// Indexes into `ClusterState::pods`.
    pods: Vec<usize>,
}

/// The cluster as the scheduler sees it during one pass.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    nodes: BTreeMap<String, NodeSlot>,
    /// Pods bound (or assumed bound) to a node, non-terminal, with their node.
    pods: Vec<(PodView, String)>,
    /// Indexes into `pods` of the pods with anti-affinity terms (the symmetric check reads only
    /// these, not every bound pod).
    anti_affine: Vec<usize>,
    /// (free CPU millicores, node name) of every node, ascending: the best fit (least CPU left)
    /// is the first node from the pod's request up that passes every filter.
    by_free_cpu: BTreeSet<(i64, String)>,
}

/// Where one pod goes, or why it cannot go anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bind to this node.
    Bind(String),
    /// No node fits; the message is what the pod's PodScheduled condition says.
    Unschedulable(String),
}

/// Domains (values of one topology key) relevant to one pod.
#[derive(Debug, Default)]
struct PodTopology {
    /// (key, values) pairs a node must not be in.
    forbidden: Vec<(String, BTreeSet<String>)>,
    /// (key, values): for each affinity term, the node must be in one of these (`None`: the
    /// term is satisfied anywhere because no pod matches and the pod matches itself).
    required: Vec<(String, Option<BTreeSet<String>>)>,
    spread: Vec<SpreadState>,
}

/// One spread constraint evaluated for one pod.
#[derive(Debug)]
struct SpreadState {
    key: String,
    max_skew: i32,
    /// Matching pods per eligible domain.
    counts: BTreeMap<String, i64>,
    /// The global minimum (0 when there are fewer domains than minDomains).
    min: i64,
    /// Whether the pod itself matches the selector.
    self_match: bool,
}

impl ClusterState {
    /// The state from `nodes` and the pods bound to them (`bound`: pods with `node_name` set;
    /// terminal pods are ignored). Pods bound to unknown nodes are ignored.
    #[must_use]
    pub fn new(nodes: Vec<NodeView>, bound: impl IntoIterator<Item = PodView>) -> Self {
        let mut st = ClusterState::default();
        for n in nodes {
            st.by_free_cpu.insert((n.allocatable.cpu, n.name.clone()));
            st.nodes.insert(
                n.name.clone(),
                NodeSlot {
                    view: n,
                    ..NodeSlot::default()
                },
            );
        }
        for p in bound {
            if let Some(node) = p.node_name.clone() {
                st.assume(p, &node);
            }
        }
        st
    }

    /// Record `pod` as bound to `node` (no-op for terminal pods and unknown nodes).
    pub fn assume(&mut self, pod: PodView, node: &str) {
        if pod.is_terminal() {
            return;
        }
        let idx = self.pods.len();
        let Some(slot) = self.nodes.get_mut(node) else {
            return;
        };
        self.by_free_cpu
            .remove(&(slot.view.allocatable.cpu - slot.used.cpu, node.to_string()));
        slot.used.add_assign(&pod.requests);
        self.by_free_cpu
            .insert((slot.view.allocatable.cpu - slot.used.cpu, node.to_string()));
        slot.ports.extend(pod.host_ports.iter().cloned());
        slot.pods.push(idx);
        if !pod.pod_anti_affinity.is_empty() {
            self.anti_affine.push(idx);
        }
        self.pods.push((pod, node.to_string()));
    }

    /// How much of `node`'s allocatable is free.
    #[must_use]
    pub fn free(&self, node: &str) -> Option<Resources> {
        self.nodes
            .get(node)
            .map(|s| s.view.allocatable.minus(&s.used))
    }

    /// Number of nodes.
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn domain_of<'a>(&'a self, node: &str, key: &str) -> Option<&'a str> {
        self.nodes
            .get(node)
            .and_then(|s| s.view.labels.get(key))
            .map(String::as_str)
    }

    fn topology(&self, pod: &PodView) -> PodTopology {
        let mut t = PodTopology::default();
        // The pod's own anti-affinity terms.
        for term in &pod.pod_anti_affinity {
            let domains: BTreeSet<String> = self
                .pods
                .iter()
                .filter(|(q, _)| term.selects(q))
                .filter_map(|(_, n)| self.domain_of(n, &term.topology_key).map(str::to_string))
                .collect();
            t.forbidden.push((term.topology_key.clone(), domains));
        }
        // Symmetry: existing pods whose anti-affinity selects this pod.
        for (q, n) in self.anti_affine.iter().map(|&i| &self.pods[i]) {
            for term in &q.pod_anti_affinity {
                if term.selects(pod) {
                    if let Some(d) = self.domain_of(n, &term.topology_key) {
                        t.forbidden
                            .push((term.topology_key.clone(), BTreeSet::from([d.to_string()])));
                    }
                }
            }
        }
        for term in &pod.pod_affinity {
            let domains: BTreeSet<String> = self
                .pods
                .iter()
                .filter(|(q, _)| term.selects(q))
                .filter_map(|(_, n)| self.domain_of(n, &term.topology_key).map(str::to_string))
                .collect();
            let any_match = self.pods.iter().any(|(q, _)| term.selects(q));
            if !any_match && term.selects(pod) {
                t.required.push((term.topology_key.clone(), None));
            } else {
                t.required.push((term.topology_key.clone(), Some(domains)));
            }
        }
        for c in &pod.spread {
            // Domains of nodes that pass the pod's node affinity (nodeAffinityPolicy Honor) and
            // carry the key; taints are ignored (nodeTaintsPolicy Ignore).
            let mut counts: BTreeMap<String, i64> = BTreeMap::new();
            for slot in self.nodes.values() {
                if !node_affinity_matches(pod, &slot.view) {
                    continue;
                }
                let Some(d) = slot.view.labels.get(&c.topology_key) else {
                    continue;
                };
                let n = slot
                    .pods
                    .iter()
                    .filter(|i| {
                        let q = &self.pods[**i].0;
                        q.namespace == pod.namespace && c.selector.matches(&q.labels)
                    })
                    .count() as i64;
                *counts.entry(d.clone()).or_insert(0) += n;
            }
            let too_few = c
                .min_domains
                .is_some_and(|m| (counts.len() as i64) < i64::from(m));
            let min = if too_few {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let self_match = c.selector.matches(&pod.labels);
            t.spread.push(SpreadState {
                key: c.topology_key.clone(),
                max_skew: c.max_skew,
                counts,
                min,
                self_match,
            });
        }
        t
    }

    /// Why `pod` cannot go on `slot` (every reason, in filter order); empty when it can.
    fn reasons(&self, pod: &PodView, slot: &NodeSlot, topo: &PodTopology) -> Vec<String> {
        let n = &slot.view;
        if n.deleting {
            return vec![REASON_DELETING.into()];
        }
        if n.unschedulable {
            return vec![REASON_UNSCHEDULABLE.into()];
        }
        if !n.ready {
            return vec![REASON_NOT_READY.into()];
        }
        if let Some(t) = untolerated_taint(&n.taints, &pod.tolerations) {
            return vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key, t.value
            )];
        }
        if !node_affinity_matches(pod, n) {
            return vec![REASON_NODE_AFFINITY.into()];
        }
        let mut out = Vec::new();
        if host_ports_conflict(&pod.host_ports, &slot.ports) {
            out.push(REASON_HOST_PORTS.to_string());
        }
        out.extend(insufficient(
            &pod.requests,
            &n.allocatable.minus(&slot.used),
        ));
        if !out.is_empty() {
            return out;
        }
        let label = |k: &str| n.labels.get(k);
        if topo
            .forbidden
            .iter()
            .any(|(k, ds)| label(k).is_some_and(|d| ds.contains(d)))
        {
            return vec![REASON_ANTI_AFFINITY.into()];
        }
        if topo.required.iter().any(|(k, ds)| match ds {
            None => false,
            Some(ds) => label(k).is_none_or(|d| !ds.contains(d)),
        }) {
            return vec![REASON_AFFINITY.into()];
        }
        for sp in &topo.spread {
            let Some(d) = label(&sp.key) else {
                return vec![REASON_SPREAD.into()];
            };
            let count = sp.counts.get(d).copied().unwrap_or(0) + i64::from(sp.self_match);
            if count - sp.min > i64::from(sp.max_skew) {
                return vec![REASON_SPREAD.into()];
            }
        }
        Vec::new()
    }

    /// Decide where `pod` goes without recording it.
    #[must_use]
    pub fn decide(&self, pod: &PodView) -> Decision {
        if let Some(why) = &pod.invalid {
            return Decision::Unschedulable(format!(
                "0/{} nodes are available: {why}.",
                self.nodes.len()
            ));
        }
        if self.nodes.is_empty() {
            return Decision::Unschedulable(
                "0/0 nodes are available: no nodes available to schedule pods.".into(),
            );
        }
        let topo = self.topology(pod);
        // Best fit: the node with the least CPU left after placement (ties by name) is the first
        // passing node in (free CPU, name) order from the pod's request up.
        // (A pod without a CPU request fits even on an overcommitted node: start from the lowest.)
        let from = if pod.requests.cpu > 0 {
            pod.requests.cpu
        } else {
            i64::MIN
        };
        for (_, name) in self.by_free_cpu.range((from, String::new())..) {
            if let Some(slot) = self.nodes.get(name) {
                if self.reasons(pod, slot, &topo).is_empty() {
                    return Decision::Bind(name.clone());
                }
            }
        }
        // It fits nowhere: every node's reasons, for the message.
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for slot in self.nodes.values() {
            for r in self.reasons(pod, slot, &topo) {
                *counts.entry(r).or_insert(0) += 1;
            }
        }
        let parts: Vec<String> = counts.iter().map(|(r, c)| format!("{c} {r}")).collect();
        Decision::Unschedulable(format!(
            "0/{} nodes are available: {}.",
            self.nodes.len(),
            parts.join(", ")
        ))
    }

    /// Decide where `pod` goes and, when it fits somewhere, record the placement.
    pub fn place(&mut self, pod: &PodView) -> Decision {
        let d = self.decide(pod);
        if let Decision::Bind(node) = &d {
            let mut bound = pod.clone();
            bound.node_name = Some(node.clone());
            self.assume(bound, node);
        }
        d
    }
}
