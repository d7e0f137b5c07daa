//! Scheduling simulations for disruption: remove the candidates, make their reschedulable pods
//! (and those of nodes already being deleted) pending, and run the provisioning scheduler.
//! Nodes that are uninitialized, or managed and still inside their pool's `consolidateAfter`
//! window, are not destinations (they stay in the snapshot, marked deleting, so their pods still
//! count for topology).

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::ClusterSnapshot;
use crate::labels;
use crate::packing::Packer;
use crate::requirements::Requirement;
use crate::scheduling::{
    schedule, schedule_cached, SchedulerOptions, SchedulingCache, SchedulingResults,
};

use super::candidates::{consolidatable_at, deleting_nodes, is_reschedulable, Candidate};
use super::model::{DisruptionInput, DisruptionSettings, PodFacts};
use super::time::Timestamp;

/// A pod that must move, and where it lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// `namespace/name`.
    pub pod: String,
    /// The candidate it leaves.
    pub from: String,
    /// An existing node's name, or `replacement-<i>` (index into the command's replacements);
    /// `None` when it fits nowhere (only for forceful expiration).
    pub to: Option<String>,
}

/// One simulation: the snapshot it scheduled and the scheduler's results.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The cluster without the candidates, their pods pending.
    pub snapshot: ClusterSnapshot,
    /// The scheduler's placement of every pending pod.
    pub results: SchedulingResults,
    /// Simulation pod indices that were running before (moved from candidates or from deleting
    /// nodes), with the node they left.
    pub was_running: BTreeMap<usize, String>,
}

impl Simulation {
    /// The first pod that was running and fits nowhere, worded for a person.
    #[must_use]
    pub fn running_pod_failure(&self) -> Option<String> {
        self.results
            .unschedulable
            .iter()
            .find(|u| self.was_running.contains_key(&u.pod))
            .map(|u| {
                format!(
                    "pod {:?} cannot be rescheduled: {}",
                    self.snapshot.pods[u.pod].key(),
                    u.reason
                )
            })
    }

    /// Moves of the pods that left `candidates`, in pod order.
    #[must_use]
    pub fn moves(&self, candidates: &BTreeSet<&str>) -> Vec<Move> {
        let mut to: BTreeMap<usize, String> = BTreeMap::new();
        for e in &self.results.existing {
            for &p in &e.pods {
                to.insert(p, e.node.clone());
            }
        }
        for (i, c) in self.results.new_nodeclaims.iter().enumerate() {
            for &p in &c.pods {
                to.insert(p, format!("replacement-{i}"));
            }
        }
        let mut moves: Vec<Move> = self
            .was_running
            .iter()
            .filter(|(_, from)| candidates.contains(from.as_str()))
            .map(|(&p, from)| Move {
                pod: self.snapshot.pods[p].key(),
                from: from.clone(),
                to: to.get(&p).cloned(),
            })
            .collect();
        moves.sort_by(|a, b| a.pod.cmp(&b.pod));
        moves
    }
}

/// Whether an existing node may receive moved pods at `now`.
fn is_destination(input: &DisruptionInput, name: &str, initialized: bool, now: Timestamp) -> bool {
    if !initialized {
        return false;
    }
    let Some(f) = input.nodes.get(name) else {
        return true;
    };
    if !f.initialized {
        return false;
    }
    let default = DisruptionSettings::default();
    let settings = input.pools.get(&f.nodepool).unwrap_or(&default);
    // A pool with consolidateAfter: Never has no window, so its nodes are destinations.
    consolidatable_at(f, settings).is_none_or(|at| now >= at)
}

/// How a simulation places the pods that must move.
#[derive(Clone, Copy, Default)]
pub struct Placement<'p> {
    /// The packer for the pods (default: the provisioning scheduler, FFD).
    pub packer: Option<&'p dyn Packer>,
    /// New NodeClaims may not use spot capacity (the `SpotToSpotConsolidation` gate is off and
    /// spot nodes are among the candidates).
    pub forbid_spot: bool,
    /// State shared with the other simulations of the pass (results are the same without it).
    pub cache: Option<&'p SchedulingCache>,
}

impl std::fmt::Debug for Placement<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("packer", &self.packer.map(Packer::name))
            .field("forbid_spot", &self.forbid_spot)
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

/// Simulate removing `candidates` (node names) at `now` with the provisioning scheduler.
#[must_use]
pub fn simulate(
    input: &DisruptionInput,
    candidates: &[&Candidate],
    now: Timestamp,
    options: &SchedulerOptions,
) -> Simulation {
    simulate_with(input, candidates, now, options, Placement::default())
}

/// Simulate removing `candidates` at `now`, placing their pods as `placement` says.
#[must_use]
pub fn simulate_with(
    input: &DisruptionInput,
    candidates: &[&Candidate],
    now: Timestamp,
    options: &SchedulerOptions,
    placement: Placement<'_>,
) -> Simulation {
    let (mut snapshot, was_running) = without(input, candidates, now);
    if placement.forbid_spot {
        forbid_spot(&mut snapshot);
    }
    let results = match (placement.packer, placement.cache) {
        (Some(p), _) => p.pack(&snapshot).results,
        (None, Some(cache)) => schedule_cached(&snapshot, options, cache),
        (None, None) => schedule(&snapshot, options),
    };
    Simulation {
        snapshot,
        results,
        was_running,
    }
}

/// Allow no spot NodeClaim in `snapshot` (on-demand and reserved capacity only).
pub(super) fn forbid_spot(snapshot: &mut ClusterSnapshot) {
    for pool in &mut snapshot.node_pools {
        pool.requirements.add(Requirement::in_values(
            labels::CAPACITY_TYPE,
            [labels::CAPACITY_ON_DEMAND, labels::CAPACITY_RESERVED],
        ));
    }
}

/// The cluster without `candidates`: their reschedulable pods (and those of deleting nodes)
/// pending, non-destinations marked deleting; with the simulation indices of the pods that were
/// running and the node each left.
pub(super) fn without(
    input: &DisruptionInput,
    candidates: &[&Candidate],
    now: Timestamp,
) -> (ClusterSnapshot, BTreeMap<usize, String>) {
    let names: BTreeSet<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    let mut snapshot = input.snapshot.clone();
    snapshot.nodes.retain(|n| !names.contains(n.name.as_str()));
    let all_deleting = deleting_nodes(input);
    let deleting: BTreeSet<String> = snapshot
        .nodes
        .iter()
        .filter(|n| all_deleting.contains(n.name.as_str()))
        .map(|n| n.name.clone())
        .collect();
    for n in &mut snapshot.nodes {
        if !n.deleting && !is_destination(input, &n.name, n.initialized, now) {
            n.deleting = true;
        }
        if deleting.contains(&n.name) {
            n.deleting = true;
        }
    }
    let default = PodFacts::default();
    let mut pods = Vec::with_capacity(snapshot.pods.len());
    let mut was_running = BTreeMap::new();
    for pod in std::mem::take(&mut snapshot.pods) {
        let facts = input.pods.get(&pod.key()).unwrap_or(&default);
        let from = pod.node_name.clone();
        match from {
            Some(node) if names.contains(node.as_str()) || deleting.contains(&node) => {
                if !is_reschedulable(facts) {
                    if names.contains(node.as_str()) {
                        continue; // leaves with its node
                    }
                    pods.push(pod); // stays on the deleting node until it goes
                    continue;
                }
                was_running.insert(pods.len(), node);
                let mut p = pod;
                p.node_name = None;
                pods.push(p);
            }
            _ => pods.push(pod),
        }
    }
    snapshot.pods = pods;
    (snapshot, was_running)
}
