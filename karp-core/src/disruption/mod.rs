//! Disruption planning with Karpenter v1.14's semantics: which nodes to remove or replace now.
//!
//! [`plan`] takes a [`DisruptionInput`] (the scheduler's [`ClusterSnapshot`](crate::cluster::ClusterSnapshot)
//! plus NodeClaim facts, pod metadata, PodDisruptionBudgets and NodePool disruption settings), the
//! time `now`, and [`DisruptionOptions`], and returns at most one [`Command`] — the first method
//! that acts wins, in this order:
//!
//! 1. **emptiness**: every empty candidate (no reschedulable pod with a positive eviction cost)
//!    whose `consolidateAfter` has elapsed, within its pool's `Empty` budget; deleted together.
//! 2. **static drift**: drifted nodes of static pools (`spec.replicas`) within the `Drifted`
//!    budget and the pool's `limits.nodes` (room for each replacement), each replaced one for one
//!    by a NodeClaim of the pool's template (no simulation: a static pool's size does not follow
//!    its pods); skipped while the pool has more nodes than replicas (scaling down).
//! 3. **drift**: drifted candidates within the `Drifted` budget; all empty ones together, else one
//!    node (earliest drifted first), replaced by whatever its pods need (1 → N).
//! 4. **expiration**: every managed node past `expireAfter`, forcefully (no budget, no blocker).
//!    Karpenter deletes expired NodeClaims without pre-spinning nodes; the replacements listed
//!    are what provisioning will launch for their pods.
//! 5. **multi-node consolidation**: candidates by savings ratio within the `Underutilized` budget,
//!    at most 100; a binary search over prefix sizes for the largest that can be deleted or
//!    replaced by one strictly cheaper node (not one of their own types unless cheaper).
//! 6. **single-node consolidation**: the first candidate (savings-ratio order, pools
//!    interleaved) that can be deleted or replaced by one strictly cheaper node.
//!
//! In both consolidation methods a move that takes nodes of a `Balanced` pool must also be
//! approved by [`balanced`]'s score for every such pool; a rejected prefix counts as invalid in
//! the multi-node search, and single-node goes on to the next candidate.
//!
//! Every simulation runs the provisioning scheduler ([`schedule`](crate::scheduling::schedule))
//! on the cluster without the candidates, their reschedulable pods pending, so a move never
//! leaves a running pod pending (except forceful expiration), never lands on an uninitialized
//! node or one inside its `consolidateAfter` window, and keeps spread and affinity.
//!
//! # Deliberate differences from Karpenter
//! - Expiration runs inside the pass (after drift) rather than in a separate controller, so in
//!   one pass the first acting method still wins.
//! - Uninitialized nodes are not destinations in simulations (Karpenter simulates onto them and
//!   then rejects the command); nodes of a pool with `consolidateAfter: Never` are destinations
//!   (they have no window to wait for).
//! - [`plan`] does not wait the 15 s delay (`at` says when Karpenter would execute a command);
//!   an executor re-reads the cluster then and calls [`validate`].
//! - Nodes of static pools are never consolidation candidates (emptiness included), as in
//!   Karpenter; scaling a static pool up or down is the operator's static capacity controller's
//!   work, not a disruption method.
//!
//! # Determinism and tie-breaks
//! Nodes are visited in name order; consolidation orders candidates by savings ratio descending,
//! then name ascending; drift by drift time, then name; single-node interleaves pools in the order
//! of their best candidate. Replacement options are ordered by cheapest offering, then name.
//!
//! ```
//! use karp_core::cluster::ClusterSnapshot;
//! use karp_core::disruption::{plan, DisruptionInput, DisruptionOptions, Method, NodeClaimFacts, Timestamp};
//! use karp_core::testing::{instance_type, node_from, nodepool};
//!
//! let it = instance_type("m5.large").price(0.1).build();
//! let created = Timestamp::from_utc(2026, 12, 1, 0, 0, 0);
//! let mut input = DisruptionInput {
//!     snapshot: ClusterSnapshot {
//!         node_pools: vec![nodepool("default", vec![it.clone()])],
//!         nodes: vec![node_from("node-1", &it, "test-zone-1", "default", "on-demand")],
//!         ..Default::default()
//!     },
//!     ..Default::default()
//! };
//! input.nodes.insert("node-1".into(), NodeClaimFacts::new("default", created));
//! let now = Timestamp::from_utc(2026, 12, 1, 12, 0, 0);
//! let out = plan(&input, now, &DisruptionOptions::default());
//! assert_eq!(out.commands[0].method, Method::Emptiness);
//! assert_eq!(out.commands[0].candidates, ["node-1"]);
//! ```

pub mod balanced;
pub mod budgets;
pub mod candidates;
pub mod consolidation;
pub mod cron;
mod global;
mod methods;
pub mod model;
pub mod simulate;
pub mod stable;
pub mod time;
pub mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::cluster::ClusterSnapshot;
use crate::scheduling::{NewNodeClaim, SchedulerOptions, SchedulingResults};

pub use budgets::{Allowed, BudgetStatus};
pub use global::GLOBAL_BALANCED_K;
pub use methods::CONSOLIDATION_TTL;
pub use model::{
    Budget, ConsolidateAfter, ConsolidationPolicy, DisruptionInput, DisruptionSettings, Drift,
    Mode, NodeClaimFacts, NodeOffering, PodDisruptionBudget, PodFacts, Reason, SavingsThreshold,
};
pub use simulate::{Move, Simulation};
pub use stable::{apply, plan_until_stable};
pub use time::{TimeError, Timestamp};
pub use validate::{validate, Invalid, Validated};

/// Karpenter considers at most this many candidates in one multi-node consolidation.
pub const MAX_MULTI_NODE_CANDIDATES: usize = 100;

/// Options of a pass (feature gates as Karpenter's, all off by default).
#[derive(Debug, Clone)]
pub struct DisruptionOptions {
    /// The `SpotToSpotConsolidation` feature gate.
    pub spot_to_spot_consolidation: bool,
    /// Options of every scheduling simulation.
    pub scheduler: SchedulerOptions,
    /// Largest multi-node batch (Karpenter: 100).
    pub max_multi_node_candidates: usize,
    /// The consolidator of pools without a `karp.dev/consolidation-mode` annotation.
    pub mode: Mode,
    /// What a `global`-mode consolidation must save, for pools without a
    /// `karp.dev/consolidation-min-savings` annotation ([`SavingsThreshold::DEFAULT`]).
    pub min_savings: SavingsThreshold,
    /// The MILP packer the global consolidator re-packs with (`None`: first-fit only). The
    /// default has deterministic work limits and no clock, so passes are reproducible; a
    /// running operator gives it a clock and a time budget instead.
    #[cfg(feature = "milp")]
    pub milp: Option<crate::packing::Milp>,
    /// How `global` moves justify their disruption (pools with the `Balanced` policy always use
    /// their own `consolidationThreshold`).
    pub justification: Justification,
    /// The global consolidator's re-packs from nothing, by what they packed (shared by clones):
    /// successive passes over the same pods pack once.
    pub targets: TargetCache,
}

/// The re-packs from nothing of the global consolidator's target-directed search, by a
/// fingerprint of the snapshot and packer they came from: the same pods give the same target,
/// so the passes of `plan_until_stable`, or an operator's successive passes with the same
/// options, pack once while the pods stay the same. Clones share the cache; it keeps the
/// [`TARGET_CACHE_ENTRIES`] latest re-packs.
#[derive(Clone, Default)]
pub struct TargetCache(Arc<Mutex<Vec<TargetEntry>>>);

/// A [`TargetCache`] entry: the fingerprint and the re-pack.
type TargetEntry = (u64, Arc<SchedulingResults>);

/// How many re-packs a [`TargetCache`] keeps.
pub const TARGET_CACHE_ENTRIES: usize = 4;

impl std::fmt::Debug for TargetCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |v| v.len());
        write!(f, "TargetCache({n} entries)")
    }
}

impl TargetCache {
    /// The re-pack stored under `key`, else `pack()`'s, stored.
    pub(crate) fn get_or_pack(
        &self,
        key: u64,
        pack: impl FnOnce() -> SchedulingResults,
    ) -> Arc<SchedulingResults> {
        let found = {
            let entries = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            entries
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, r)| r.clone())
        };
        if let Some(r) = found {
            return r;
        }
        let r = Arc::new(pack());
        let mut entries = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|(k, _)| *k != key);
        entries.push((key, r.clone()));
        if entries.len() > TARGET_CACHE_ENTRIES {
            entries.remove(0);
        }
        r
    }
}

/// How the global consolidator justifies a move's disruption beyond its savings threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Justification {
    /// Karpenter 1.14's Balanced score at this `k` (1..=3): the move's share of the pools' cost
    /// saved must be at least `1/k` of its share of their disruption cost. The default, at
    /// [`GLOBAL_BALANCED_K`].
    Balanced(u32),
    /// Every move that clears the savings threshold is taken (only `Balanced` pools score).
    Off,
}

impl Default for Justification {
    fn default() -> Self {
        Justification::Balanced(GLOBAL_BALANCED_K)
    }
}

impl Justification {
    /// Parse `1`, `2`, `3` (a Balanced `k`) or `off`.
    ///
    /// # Errors
    /// A message saying what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" | "none" => Ok(Justification::Off),
            t => match t.parse::<u32>() {
                Ok(k @ 1..=3) => Ok(Justification::Balanced(k)),
                _ => Err(format!(
                    "{text:?} is not a Balanced k (1, 2 or 3) or \"off\""
                )),
            },
        }
    }

    fn k(self) -> Option<u32> {
        match self {
            Justification::Balanced(k) => Some(k),
            Justification::Off => None,
        }
    }
}

impl Default for DisruptionOptions {
    fn default() -> Self {
        DisruptionOptions {
            spot_to_spot_consolidation: false,
            scheduler: SchedulerOptions::default(),
            max_multi_node_candidates: MAX_MULTI_NODE_CANDIDATES,
            mode: Mode::Karpenter,
            min_savings: SavingsThreshold::DEFAULT,
            #[cfg(feature = "milp")]
            milp: Some(
                crate::packing::Milp::default()
                    .with_work_limits(crate::packing::WorkLimits::default()),
            ),
            justification: Justification::default(),
            targets: TargetCache::default(),
        }
    }
}

impl DisruptionOptions {
    /// Turn the `SpotToSpotConsolidation` gate on or off.
    #[must_use]
    pub fn spot_to_spot(mut self, on: bool) -> Self {
        self.spot_to_spot_consolidation = on;
        self
    }

    /// Use `mode` for pools without a mode annotation.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Justify `global` moves this way.
    #[must_use]
    pub fn justification(mut self, justification: Justification) -> Self {
        self.justification = justification;
        self
    }

    /// Use `threshold` for pools without a threshold annotation.
    #[must_use]
    pub fn min_savings(mut self, threshold: SavingsThreshold) -> Self {
        self.min_savings = threshold;
        self
    }
}

/// The method that produced a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// Empty nodes.
    Emptiness,
    /// Drifted nodes of static pools (`spec.replicas`), replaced one for one.
    StaticDrift,
    /// Drifted nodes.
    Drift,
    /// Expired nodes.
    Expiration,
    /// Multi-node consolidation.
    MultiNode,
    /// Single-node consolidation.
    SingleNode,
    /// karp's global consolidator.
    Global,
}

impl Method {
    /// The name in `karp disrupt` output.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Emptiness => "emptiness",
            Method::StaticDrift => "static-drift",
            Method::Drift => "drift",
            Method::Expiration => "expiration",
            Method::MultiNode => "multi-node",
            Method::SingleNode => "single-node",
            Method::Global => "global",
        }
    }
}

/// Delete the candidates, or replace them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Their pods fit on existing nodes.
    Delete,
    /// New nodes come up for their pods.
    Replace,
}

impl Decision {
    /// `delete` or `replace`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Delete => "delete",
            Decision::Replace => "replace",
        }
    }
}

/// One disruption command.
#[derive(Debug, Clone)]
pub struct Command {
    /// Which method.
    pub method: Method,
    /// The budget reason it consumes.
    pub reason: Reason,
    /// Delete or replace.
    pub decision: Decision,
    /// Node names, sorted.
    pub candidates: Vec<String>,
    /// NodeClaims to launch (cheapest option first; consolidation replacements are narrowed to
    /// strictly cheaper types and pinned to spot when launching on-demand could cost more).
    pub replacements: Vec<NewNodeClaim>,
    /// Where the candidates' pods go.
    pub moves: Vec<Move>,
    /// Candidates' prices minus the replacements' expected (cheapest-offering) prices.
    pub savings_per_hour: f64,
    /// When it would start (consolidation commands wait the 15 s validation delay).
    pub at: Timestamp,
    /// The simulation behind it (absent for commands on empty nodes).
    pub simulation: Option<Simulation>,
}

/// A managed node in no command, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCandidate {
    /// Node name.
    pub node: String,
    /// Why, worded like Karpenter's events.
    pub reason: String,
}

/// Cluster cost before and after the plan's commands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostSummary {
    /// Price of every node not being deleted (managed nodes at their offering price).
    pub before_per_hour: f64,
    /// Once every command completed.
    pub after_per_hour: f64,
}

/// The outcome of one pass.
#[derive(Debug, Clone)]
pub struct DisruptionPlan {
    /// Commands to start now (at most one per pass).
    pub commands: Vec<Command>,
    /// Every managed node in no command, by name.
    pub not_candidates: Vec<NotCandidate>,
    /// Budgets per pool and reason at `now`.
    pub budgets: Vec<BudgetStatus>,
    /// Cost summary.
    pub cost: CostSummary,
}

/// Run one disruption pass at `now`.
#[must_use]
pub fn plan(
    input: &DisruptionInput,
    now: Timestamp,
    options: &DisruptionOptions,
) -> DisruptionPlan {
    let budgets = budgets::compute(input, now);
    let (candidates, rejected) = candidates::evaluate(input, now);
    let by_node = candidates::pods_by_node(input);
    let deleting = candidates::deleting_nodes(input);
    let expired: Vec<candidates::Candidate> = input
        .nodes
        .iter()
        .filter(|(name, f)| {
            !deleting.contains(name.as_str())
                && f.expire_after.is_some_and(|d| now >= f.created.plus(d))
        })
        .map(|(name, f)| candidates::build(input, name, f, &by_node, now))
        .collect();
    let mut pass = methods::Pass {
        input,
        now,
        options,
        candidates: &candidates,
        budgets: budgets
            .iter()
            .map(|b| ((b.nodepool.clone(), b.reason), b.allowed))
            .collect(),
        reasons: BTreeMap::new(),
        scope: None,
        cache: crate::scheduling::SchedulingCache::default(),
        pending_claims: None,
        aimed: false,
    };
    let command = pass
        .emptiness()
        .or_else(|| pass.static_drift())
        .or_else(|| pass.drift())
        .or_else(|| pass.expiration(&expired))
        .or_else(|| pass.consolidation());
    let acted = command.as_ref().map(|c| (c.method, c.candidates.clone()));
    let mut reasons = pass.reasons;
    for c in &candidates {
        reasons
            .entry(c.name.clone())
            .or_insert_with(|| match &acted {
                Some((m, _)) => format!("Not evaluated: {} acted first in this pass", m.as_str()),
                None => {
                    "No disruption method applies (not empty, drifted, expired or consolidatable)"
                        .to_string()
                }
            });
    }
    reasons.extend(rejected);
    let in_command: Vec<String> = acted.map(|(_, c)| c).unwrap_or_default();
    let not_candidates = reasons
        .into_iter()
        .filter(|(n, _)| !in_command.contains(n))
        .map(|(node, reason)| NotCandidate { node, reason })
        .collect();
    let before = cluster_cost(input);
    let savings: f64 = command.iter().map(|c| c.savings_per_hour).sum();
    DisruptionPlan {
        commands: command.into_iter().collect(),
        not_candidates,
        budgets,
        cost: CostSummary {
            before_per_hour: before,
            after_per_hour: before - savings,
        },
    }
}

/// A lower bound on the hourly cost of any cluster that runs the input's pods: unmanaged nodes at
/// their price, plus the best bound karp computes ([`packing::lower_bound`](crate::packing::lower_bound):
/// per-unit prices and, with the `milp` feature, the LP bounds) on new nodes for every pod of the
/// managed nodes, as if all of them could move. Pods that fit nowhere are not counted.
///
/// The LP bounds take seconds on large clusters (6 s at 10 000 pods, 46 s at 50 000 in the
/// benches); above [`LP_BOUND_MAX_PODS`] moving pods only the per-unit bound is computed.
#[must_use]
pub fn lower_bound_per_hour(input: &DisruptionInput) -> f64 {
    let (snapshot, fixed) = from_scratch(input);
    let results = crate::scheduling::schedule(&snapshot, &SchedulerOptions::default());
    let moving = snapshot.pending().len();
    fixed
        + if moving <= LP_BOUND_MAX_PODS {
            crate::packing::lower_bound(&snapshot, &results)
        } else {
            crate::packing::lower_bound_per_hour(&snapshot, &results)
        }
}

/// The hourly cost of the cluster re-provisioned from scratch by `packer`: unmanaged nodes at
/// their price plus the new nodes `packer` plans for every reschedulable pod of the managed
/// nodes (the cluster [`lower_bound_per_hour`] bounds). A reachable reference for consolidation:
/// no sequence of moves can end below [`lower_bound_per_hour`], and one that ends near this
/// value has packed the cluster as well as provisioning from nothing would.
#[must_use]
pub fn repacked_per_hour(input: &DisruptionInput, packer: &dyn crate::packing::Packer) -> f64 {
    let (snapshot, fixed) = from_scratch(input);
    fixed + packer.pack(&snapshot).results.cost_per_hour()
}

/// The input's cluster without its managed nodes, their reschedulable pods pending; with the
/// hourly price of the unmanaged nodes.
fn from_scratch(input: &DisruptionInput) -> (ClusterSnapshot, f64) {
    let mut snapshot = input.snapshot.clone();
    let managed = |n: &str| input.nodes.contains_key(n);
    let fixed: f64 = snapshot
        .nodes
        .iter()
        .filter(|n| !managed(&n.name) && !n.deleting)
        .filter_map(|n| n.price)
        .sum();
    snapshot.nodes.retain(|n| !managed(&n.name));
    let default = PodFacts::default();
    snapshot.pods.retain_mut(|p| {
        if !p.node_name.as_deref().is_some_and(managed) {
            return true;
        }
        let facts = input.pods.get(&p.key()).unwrap_or(&default);
        if !candidates::is_reschedulable(facts) {
            return false; // DaemonSet overhead is charged on new nodes by the scheduler
        }
        p.node_name = None;
        true
    });
    (snapshot, fixed)
}

/// [`lower_bound_per_hour`] adds the LP bounds only up to this many pods to move.
pub const LP_BOUND_MAX_PODS: usize = 2_000;

/// Hourly price of the nodes not being deleted: a managed node's offering price, else the
/// snapshot node's price, else nothing.
fn cluster_cost(input: &DisruptionInput) -> f64 {
    let deleting = candidates::deleting_nodes(input);
    input
        .snapshot
        .nodes
        .iter()
        .filter(|n| !deleting.contains(n.name.as_str()))
        .map(|n| {
            input
                .nodes
                .get(&n.name)
                .and_then(|f| f.offering.as_ref().map(|o| o.price))
                .or(n.price)
                .unwrap_or(0.0)
        })
        .sum()
}
