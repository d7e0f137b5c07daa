//! Which managed nodes may be disrupted, and what disrupting them costs.
//!
//! A node is a candidate when it is karp-managed, its NodePool exists, it is initialized, not
//! deleting or marked for deletion, not nominated for a pending pod, and neither it nor its
//! NodeClaim carries `karpenter.sh/do-not-disrupt`. Pod-level blockers (a do-not-disrupt pod, a
//! PodDisruptionBudget that allows no eviction, a pod selected by several PDBs) are recorded
//! separately: they block consolidation, and block drift unless the NodeClaim has a
//! `terminationGracePeriod`. Expiration is never blocked (it does not use candidates).

use std::collections::{BTreeMap, BTreeSet};

use crate::pod::Pod;
use crate::taints::{Effect, Taint};

use super::model::{
    ConsolidateAfter, DisruptionInput, DisruptionSettings, NodeClaimFacts, PodDisruptionBudget,
    PodFacts, DO_NOT_DISRUPT,
};
use super::time::{parse_go_duration, Timestamp};

/// The taint Karpenter puts on nodes it disrupts; pods tolerating it are not evicted.
pub const DISRUPTED_TAINT: &str = "karpenter.sh/disrupted";

/// Scale of `controller.kubernetes.io/pod-deletion-cost` in a pod's eviction cost (2^27).
const DELETION_COST_SCALE: f64 = 134_217_728.0;
/// Scale of pod priority in a pod's eviction cost (2^25).
const PRIORITY_SCALE: f64 = 33_554_432.0;

/// A managed node that passed the common candidate filters.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    /// Its NodeClaim facts.
    pub facts: NodeClaimFacts,
    /// Its NodePool's disruption settings.
    pub settings: DisruptionSettings,
    /// Snapshot indices of the pods that must move if it goes (see [`is_reschedulable`]).
    pub reschedulable: Vec<usize>,
    /// Karpenter 1.14's reschedule disruption cost: `1 + Σ max(0, eviction cost)`.
    pub disruption_cost: f64,
    /// Whether every reschedulable pod has an eviction cost ≤ 0 (Karpenter counts the node empty).
    pub empty: bool,
    /// A pod-level blocker (do-not-disrupt pod, PDB), worded like Karpenter's events.
    pub pod_blocker: Option<String>,
    /// When `consolidateAfter` has elapsed since the last pod event (`None`: `Never`).
    pub consolidatable_at: Option<Timestamp>,
    /// Whether its NodePool is static (`spec.replicas`): never consolidated, drift replaces it
    /// one for one.
    pub static_pool: bool,
}

impl Candidate {
    /// USD per hour of its offering, when known.
    #[must_use]
    pub fn price(&self) -> Option<f64> {
        self.facts.offering.as_ref().map(|o| o.price)
    }

    /// Price per unit of disruption cost: Karpenter 1.14 consolidates the highest first.
    #[must_use]
    pub fn savings_ratio(&self) -> f64 {
        self.price().unwrap_or(0.0) / self.disruption_cost
    }

    /// Why consolidation (emptiness included when `empty_only`) may not take this node at `now`.
    #[must_use]
    pub fn consolidation_blocker(&self, now: Timestamp, empty_only: bool) -> Option<String> {
        let pool = &self.facts.nodepool;
        if self.static_pool {
            return Some(format!(
                "NodePool {pool:?} is static (spec.replicas): its nodes are not consolidated"
            ));
        }
        let Some(at) = self.consolidatable_at else {
            return Some(format!("NodePool {pool:?} has consolidation disabled"));
        };
        if !empty_only
            && !self
                .settings
                .consolidation_policy
                .consolidates_underutilized()
        {
            return Some(format!(
                "NodePool {pool:?} has non-empty consolidation disabled"
            ));
        }
        if let Some(b) = &self.pod_blocker {
            return Some(b.clone());
        }
        if now < at {
            return Some(format!(
                "Node is not consolidatable until {at} (consolidateAfter)"
            ));
        }
        if !empty_only && self.facts.offering.is_none() {
            return Some(
                "Instance type, zone, capacity type or price of the node is unknown".to_string(),
            );
        }
        None
    }
}

/// A pod's eviction cost (Karpenter): `1 + deletionCost/2^27 + priority/2^25`, clamped to
/// `[-10, 10]`.
#[must_use]
pub fn eviction_cost(pod: &Pod, facts: &PodFacts) -> f64 {
    eviction_cost_of(facts.deletion_cost, pod.priority)
}

/// [`eviction_cost`] from a pod's `controller.kubernetes.io/pod-deletion-cost` and priority.
#[must_use]
pub fn eviction_cost_of(deletion_cost: i32, priority: i32) -> f64 {
    (1.0 + f64::from(deletion_cost) / DELETION_COST_SCALE + f64::from(priority) / PRIORITY_SCALE)
        .clamp(-10.0, 10.0)
}

/// Whether the pod must be rescheduled when its node goes: not a mirror pod, not owned by a
/// DaemonSet, not terminal, and not terminating unless a StatefulSet will recreate it.
#[must_use]
pub fn is_reschedulable(facts: &PodFacts) -> bool {
    let statefulset = facts.owner_kind.as_deref() == Some("StatefulSet");
    !facts.mirror
        && facts.owner_kind.as_deref() != Some("DaemonSet")
        && !facts.terminal
        && (!facts.terminating || statefulset)
}

/// Whether the pod's `karpenter.sh/do-not-disrupt` blocks disruption at `now`: only for active
/// pods (not terminal or terminating), with the value `"true"` or a Go duration still running
/// from the pod's start (a pod without a start time has not started: the duration is still
/// running). Any other value does not block.
#[must_use]
pub fn do_not_disrupt_blocks(facts: &PodFacts, now: Timestamp) -> bool {
    if facts.terminal || facts.terminating {
        return false;
    }
    match facts.do_not_disrupt.as_deref() {
        None => false,
        Some("true") => true,
        Some(v) => match parse_go_duration(v) {
            Ok(d) => facts.start_time.is_none_or(|s| now < s.plus(d)),
            Err(_) => false,
        },
    }
}

/// The PDB blocking the eviction of `pod`, if any: the pod is evictable (active, not a mirror
/// pod, not tolerating the disrupted taint) and either several PDBs select it or the one that
/// does allows no disruption.
#[must_use]
pub fn pdb_blocker(pod: &Pod, facts: &PodFacts, pdbs: &[PodDisruptionBudget]) -> Option<String> {
    let disrupted = Taint::new(DISRUPTED_TAINT, "", Effect::NoSchedule);
    if facts.mirror
        || facts.terminal
        || facts.terminating
        || pod.tolerations.iter().any(|t| t.tolerates(&disrupted))
    {
        return None;
    }
    let matching: Vec<&PodDisruptionBudget> = pdbs
        .iter()
        .filter(|p| p.namespace == pod.namespace && p.selector.matches(&pod.labels))
        .collect();
    match matching.as_slice() {
        [] => None,
        [one] if one.disruptions_allowed > 0 => None,
        [one] => Some(format!(
            "PDB \"{}/{}\" prevents pod evictions",
            one.namespace, one.name
        )),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect();
            Some(format!(
                "Pod \"{}\" is selected by multiple PDBs ({}), which prevents its eviction",
                pod.key(),
                names.join(", ")
            ))
        }
    }
}

/// The first pod-level blocker among `pods` (snapshot indices, in pod-key order).
fn pod_blocker(input: &DisruptionInput, pods: &[usize], now: Timestamp) -> Option<String> {
    let default = PodFacts::default();
    for &i in pods {
        let pod = &input.snapshot.pods[i];
        let facts = input.pods.get(&pod.key()).unwrap_or(&default);
        if do_not_disrupt_blocks(facts, now) {
            return Some(format!(
                "Pod \"{}\" has \"{DO_NOT_DISRUPT}\" annotation",
                pod.key()
            ));
        }
        if let Some(b) = pdb_blocker(pod, facts, &input.pdbs) {
            return Some(b);
        }
    }
    None
}

/// The nodes that are deleting, by their facts or the snapshot (computed once per use: a
/// lookup per node would be quadratic in the cluster size).
pub(crate) fn deleting_nodes(input: &DisruptionInput) -> BTreeSet<&str> {
    input
        .nodes
        .iter()
        .filter(|(_, f)| f.deleting)
        .map(|(n, _)| n.as_str())
        .chain(
            input
                .snapshot
                .nodes
                .iter()
                .filter(|n| n.deleting)
                .map(|n| n.name.as_str()),
        )
        .collect()
}

/// Snapshot indices of the pods bound to each node, in pod-key order.
pub(crate) fn pods_by_node(input: &DisruptionInput) -> BTreeMap<&str, Vec<usize>> {
    let mut out: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in input.snapshot.pods.iter().enumerate() {
        if let Some(n) = &p.node_name {
            out.entry(n.as_str()).or_default().push(i);
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|&i| input.snapshot.pods[i].key());
    }
    out
}

/// When `consolidateAfter` has elapsed for a node (`None`: consolidation disabled).
#[must_use]
pub fn consolidatable_at(
    facts: &NodeClaimFacts,
    settings: &DisruptionSettings,
) -> Option<Timestamp> {
    match settings.consolidate_after {
        ConsolidateAfter::Never => None,
        ConsolidateAfter::After(d) => {
            let base = facts
                .last_pod_event
                .or(facts.initialized_at)
                .unwrap_or(facts.created);
            Some(base.plus(d))
        }
    }
}

/// The candidate view of one managed node (no filtering).
pub(crate) fn build(
    input: &DisruptionInput,
    name: &str,
    facts: &NodeClaimFacts,
    by_node: &BTreeMap<&str, Vec<usize>>,
    now: Timestamp,
) -> Candidate {
    let default_settings = DisruptionSettings::default();
    let settings = input
        .pools
        .get(&facts.nodepool)
        .unwrap_or(&default_settings)
        .clone();
    let pods: &[usize] = by_node.get(name).map_or(&[], Vec::as_slice);
    let default = PodFacts::default();
    let mut cost = 1.0;
    let mut empty = true;
    let mut reschedulable = Vec::new();
    for &i in pods {
        let pod = &input.snapshot.pods[i];
        let pf = input.pods.get(&pod.key()).unwrap_or(&default);
        if is_reschedulable(pf) {
            reschedulable.push(i);
            let c = eviction_cost(pod, pf);
            cost += c.max(0.0);
            empty &= c <= 0.0;
        }
    }
    Candidate {
        name: name.to_string(),
        consolidatable_at: consolidatable_at(facts, &settings),
        facts: facts.clone(),
        settings,
        reschedulable,
        disruption_cost: cost,
        empty,
        pod_blocker: pod_blocker(input, pods, now),
        static_pool: input
            .snapshot
            .node_pools
            .iter()
            .any(|p| p.name == facts.nodepool && p.is_static()),
    }
}

/// Every managed node, in name order, as a candidate or with the reason it is not one.
#[must_use]
pub fn evaluate(
    input: &DisruptionInput,
    now: Timestamp,
) -> (Vec<Candidate>, BTreeMap<String, String>) {
    let by_node = pods_by_node(input);
    let deleting = deleting_nodes(input);
    let mut candidates = Vec::new();
    let mut rejected = BTreeMap::new();
    for (name, facts) in &input.nodes {
        let pool = &facts.nodepool;
        let reject = if !input.snapshot.node_pools.iter().any(|p| &p.name == pool) {
            Some(format!("Owning nodepool {pool:?} not found"))
        } else if deleting.contains(name.as_str()) {
            Some("Node is deleting or marked for deletion".to_string())
        } else if !facts.initialized {
            Some("Node isn't initialized".to_string())
        } else if facts.nominated {
            Some("Nominated for a pending pod".to_string())
        } else if facts.do_not_disrupt {
            Some(format!(
                "Disruption is blocked with the {DO_NOT_DISRUPT:?} annotation"
            ))
        } else {
            None
        };
        if let Some(r) = reject {
            rejected.insert(name.clone(), r);
            continue;
        }
        candidates.push(build(input, name, facts, &by_node, now));
    }
    (candidates, rejected)
}

/// Karpenter 1.14's consolidation order: savings ratio (price / disruption cost) descending,
/// then node name ascending (our tie-break; Karpenter's is unspecified).
pub fn sort_by_savings_ratio(candidates: &mut [&Candidate]) {
    candidates.sort_by(|a, b| {
        b.savings_ratio()
            .total_cmp(&a.savings_ratio())
            .then_with(|| a.name.cmp(&b.name))
    });
}
