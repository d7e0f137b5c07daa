//! The scheduling simulation, with Karpenter v1 semantics.
//!
//! [`schedule`] places every pending pod of a [`ClusterSnapshot`] on an existing node (or in-flight
//! NodeClaim), on a NodeClaim opened earlier in the same pass, or on a new NodeClaim from the
//! highest-weight NodePool that can take it; every pod that fits nowhere gets a reason.
//!
//! - Pods are sorted by CPU, then memory, descending (first-fit decreasing).
//! - Existing nodes are tried first (initialized before in-flight, then by name), then the NodeClaims
//!   of this pass (fewest pods first), then NodePools by weight (then name).
//! - A NodeClaim keeps every instance type that can still hold all its pods plus the daemonset
//!   overhead and has an available offering its requirements allow. At the end its options are
//!   ordered by their cheapest compatible offering and truncated to 600 (respecting `minValues`).
//! - Preferences (preferred node affinity, preferred pod (anti-)affinity, ScheduleAnyway spread) are
//!   treated as required and relaxed one step at a time when a pod fails, in Karpenter's order; the
//!   last step tolerates PreferNoSchedule taints when a NodePool has one.
//! - NodePool limits are enforced by subtracting the largest remaining option of every new
//!   NodeClaim from what the pool has left.
//!
//! ```
//! use karp_core::testing::{instance_type, nodepool, pod};
//! use karp_core::cluster::ClusterSnapshot;
//! use karp_core::scheduling::{schedule, SchedulerOptions};
//!
//! let types = vec![instance_type("small").cpu("2").memory("4Gi").price(0.05).build(),
//!                  instance_type("large").cpu("8").memory("16Gi").price(0.2).build()];
//! let snapshot = ClusterSnapshot {
//!     node_pools: vec![nodepool("default", types)],
//!     pods: (0..3).map(|i| pod(&format!("web-{i}")).cpu("1").memory("1Gi").build()).collect(),
//!     ..Default::default()
//! };
//! let results = schedule(&snapshot, &SchedulerOptions::default());
//! assert_eq!(results.new_nodeclaims.len(), 1);
//! assert_eq!(results.new_nodeclaims[0].instance_types[0].name, "large");
//! assert!(results.unschedulable.is_empty());
//! ```

mod cache;
mod claim;
pub(crate) mod replay;
mod topology;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::cloud::InstanceType;
use crate::cluster::{ClusterSnapshot, NodePool};
use crate::labels;
use crate::pod::{Pod, WhenUnsatisfiable};
use crate::requirements::{Requirement, Requirements};
use crate::resources::Resources;
use crate::taints::{first_untolerated, Effect, Taint, Toleration};

pub use cache::SchedulingCache;
use cache::Shared;
use claim::{Claim, ExistingSlot, PoolCtx};
use topology::{PodConstraints, PodGroups, Topology};

/// Karpenter truncates a NodeClaim's instance type options to this many.
pub const MAX_INSTANCE_TYPES: usize = 600;

/// Whether preferences are honoured (Karpenter `--preference-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreferencePolicy {
    /// Treat preferences as required, relaxing them one at a time (Karpenter default).
    #[default]
    Respect,
    /// Drop preferences up front.
    Ignore,
}

/// Options of a scheduling pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Preference policy.
    pub preference_policy: PreferencePolicy,
    /// Truncate instance type options to this many (Karpenter: 600).
    pub max_instance_types: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            preference_policy: PreferencePolicy::Respect,
            max_instance_types: MAX_INSTANCE_TYPES,
        }
    }
}

/// The offering a NodeClaim is expected to launch with.
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenOffering {
    /// Instance type.
    pub instance_type: String,
    /// Zone.
    pub zone: String,
    /// Capacity type.
    pub capacity_type: String,
    /// USD per hour.
    pub price: f64,
}

/// A NodeClaim the pass decided to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNodeClaim {
    /// NodePool name.
    pub nodepool: String,
    /// Placeholder hostname used for hostname topology during the pass.
    pub hostname: String,
    /// Requirements the instance must satisfy, including `node.kubernetes.io/instance-type In`
    /// the options (hostname excluded).
    pub requirements: Requirements,
    /// Instance type options, cheapest compatible offering first.
    pub instance_types: Vec<Arc<InstanceType>>,
    /// Snapshot indices of the pods placed on it.
    pub pods: Vec<usize>,
    /// Pod requests plus daemonset overhead.
    pub requests: Resources,
    /// The daemonset overhead included in `requests`.
    pub daemon_overhead: Resources,
    /// Template labels the node will carry.
    pub labels: BTreeMap<String, String>,
    /// Taints the node will carry (startup taints excluded).
    pub taints: Vec<Taint>,
    /// The cheapest available offering the requirements allow.
    pub cheapest: ChosenOffering,
}

/// Pods placed on an existing node or in-flight NodeClaim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingPlacement {
    /// Node name.
    pub node: String,
    /// Snapshot indices of pods placed there.
    pub pods: Vec<usize>,
}

/// A pod that could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// Snapshot index.
    pub pod: usize,
    /// Why, in words a person can act on.
    pub reason: String,
}

/// Counters of one pass (the operator turns them into metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulingStats {
    /// Pending pods considered.
    pub pods: usize,
    /// Relaxation steps applied.
    pub relaxations: usize,
    /// Placement attempts (pod × node / NodeClaim / pool).
    pub attempts: u64,
}

/// The outcome of a pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulingResults {
    /// NodeClaims to create.
    pub new_nodeclaims: Vec<NewNodeClaim>,
    /// Pods placed on existing nodes, by node name order.
    pub existing: Vec<ExistingPlacement>,
    /// Pods that fit nowhere.
    pub unschedulable: Vec<Unschedulable>,
    /// Counters.
    pub stats: SchedulingStats,
}

impl SchedulingResults {
    /// Total hourly price of the new NodeClaims' cheapest offerings.
    #[must_use]
    pub fn cost_per_hour(&self) -> f64 {
        self.new_nodeclaims.iter().map(|c| c.cheapest.price).sum()
    }
}

/// What the scheduler keeps per pending pod (the relaxed copy of its constraints).
struct PodState<'a> {
    idx: usize,
    /// The pod under its current relaxation: the snapshot's own until something is relaxed.
    pod: Relaxed<'a>,
    /// The snapshot pod (labels and namespace are what topology records).
    orig: &'a Pod,
    tolerate_prefer_no_schedule: bool,
    groups: PodGroups,
    data: PodData,
}

/// A pod as relaxed so far: the snapshot's own until something is relaxed, then a boxed copy
/// (boxed so a [`PodState`] stays small: the pass reads the states one after another).
struct Relaxed<'a> {
    shared: &'a Pod,
    copy: Option<Box<Pod>>,
}

impl<'a> Relaxed<'a> {
    fn new(shared: &'a Pod) -> Self {
        Relaxed { shared, copy: None }
    }

    /// The pod to change, copied from the snapshot on first use.
    fn to_mut(&mut self) -> &mut Pod {
        let shared = self.shared;
        self.copy.get_or_insert_with(|| Box::new(shared.clone()))
    }
}

impl std::ops::Deref for Relaxed<'_> {
    type Target = Pod;

    fn deref(&self) -> &Pod {
        self.copy.as_deref().unwrap_or(self.shared)
    }
}

/// Derived scheduling data of a pod under its current relaxation.
pub(crate) struct PodData {
    /// Requirements including the heaviest preferred node-affinity term.
    pub requirements: Requirements,
    /// Requirements without preferences.
    pub strict: Requirements,
    /// Tolerations (plus PreferNoSchedule when relaxed that far).
    pub tolerations: Vec<Toleration>,
}

impl PodState<'_> {
    fn compute(&mut self, respect: bool) {
        let strict = self.pod.strict_requirements();
        let mut requirements = strict.clone();
        if respect {
            if let Some(best) = heaviest(&self.pod.preferred_node_affinity) {
                requirements.add_all(&self.pod.preferred_node_affinity[best].term);
            }
        }
        let mut tolerations = self.pod.tolerations.clone();
        if self.tolerate_prefer_no_schedule {
            tolerations.push(Toleration::all_with_effect(Effect::PreferNoSchedule));
        }
        self.data = PodData {
            requirements,
            strict,
            tolerations,
        };
    }

    fn constraints(&self, respect: bool) -> PodConstraints<'_> {
        PodConstraints::of(&self.pod, respect)
    }

    /// One relaxation step in Karpenter's order; returns what was relaxed.
    fn relax(&mut self, any_prefer_no_schedule: bool) -> Option<&'static str> {
        // Looked at through the shared pod; copied only when something is relaxed.
        let p = &self.pod;
        if p.required_node_affinity.len() > 1 {
            self.pod.to_mut().required_node_affinity.remove(0);
            return Some("required node affinity term");
        }
        if let Some(i) = heaviest(&p.preferred_pod_affinity) {
            self.pod.to_mut().preferred_pod_affinity.remove(i);
            return Some("preferred pod affinity term");
        }
        if let Some(i) = heaviest(&p.preferred_pod_anti_affinity) {
            self.pod.to_mut().preferred_pod_anti_affinity.remove(i);
            return Some("preferred pod anti-affinity term");
        }
        if let Some(i) = heaviest(&p.preferred_node_affinity) {
            self.pod.to_mut().preferred_node_affinity.remove(i);
            return Some("preferred node affinity term");
        }
        if let Some(i) = p
            .topology_spread
            .iter()
            .position(|t| t.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
        {
            self.pod.to_mut().topology_spread.remove(i);
            return Some("ScheduleAnyway topology spread constraint");
        }
        if any_prefer_no_schedule && !self.tolerate_prefer_no_schedule {
            self.tolerate_prefer_no_schedule = true;
            return Some("PreferNoSchedule taints");
        }
        None
    }
}

/// Index of the first term with the highest weight.
fn heaviest<T>(terms: &[crate::pod::Weighted<T>]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, t) in terms.iter().enumerate() {
        if best.is_none_or(|b| t.weight > terms[b].weight) {
            best = Some(i);
        }
    }
    best
}

/// Whether a daemonset pod would run on nodes of this pool (taints tolerated, requirements compatible).
fn daemon_compatible(
    ds: &Pod,
    template: &Requirements,
    taints: &[Taint],
    well_known: &dyn Fn(&str) -> bool,
) -> bool {
    first_untolerated(taints, &ds.tolerations).is_none()
        && template
            .compatible(&ds.strict_requirements(), well_known)
            .is_ok()
}

/// The daemonset overhead of every new node of `pool`: the requests of each daemonset that
/// tolerates the pool's taints, is compatible with its template and could run on one of its
/// instance types.
pub(crate) fn daemon_overhead(
    daemonsets: &[Pod],
    pool: &NodePool,
    template: &Requirements,
    provider_keys: &BTreeSet<String>,
) -> Resources {
    let wk = |k: &str| labels::is_well_known(k) || provider_keys.contains(k);
    let mut overhead = Resources::new();
    for ds in daemonsets {
        // Like Karpenter, but also require an instance type of the pool the daemon could run on
        // (an arm64-only daemonset adds nothing to an amd64 pool).
        let strict = ds.strict_requirements();
        let on_some_type = pool.instance_types.iter().any(|it| {
            template
                .intersect(&it.requirements)
                .compatible(&strict, &wk)
                .is_ok()
        });
        if daemon_compatible(ds, template, &pool.taints, &wk) && on_some_type {
            overhead.add_assign(&ds.requests);
        }
    }
    overhead
}

/// Karpenter's pod order: larger CPU request first, then larger memory request.
pub(crate) fn larger_first(a: &Resources, b: &Resources) -> std::cmp::Ordering {
    larger_first_key(a).cmp(&larger_first_key(b))
}

/// The sort key of [`larger_first`]'s order: CPU, then memory, both descending.
type LargerFirstKey = (Reverse<i64>, Reverse<i64>);

/// The sort key of [`larger_first`]'s order.
fn larger_first_key(r: &Resources) -> LargerFirstKey {
    (Reverse(r.cpu), Reverse(r.memory))
}

/// A NodeClaim of `pool` for no pods: what a static pool (`spec.replicas`) launches for each
/// replica, as Karpenter's static provisioning does. Every instance type the pool's template
/// allows with an available offering, cheapest first (at most `max_types`); the DaemonSets that
/// will run on it are counted in its requests.
///
/// # Errors
/// A message when no instance type of the pool can be launched.
pub fn template_nodeclaim(
    pool: &NodePool,
    daemonsets: &[Pod],
    hostname: &str,
    max_types: usize,
) -> Result<NewNodeClaim, String> {
    let ctx = cache::pool_ctx(pool, daemonsets);
    let types: Vec<u32> = (0..ctx.types.len() as u32).collect();
    Claim::new(0, &ctx, hostname.to_string(), 0, types).finalize(
        &ctx,
        max_types,
        &mut claim::FinalizeCache::default(),
    )
}

/// Caps the NodeClaims planned onto each capacity reservation at what it can still take: claims
/// in order (the scheduler's creation order) use a reserved cheapest offering while its
/// reservation has room; a later claim whose cheapest offering is a full reservation gets the
/// cheapest other offering its requirements allow (it still may launch reserved if capacity frees
/// up; the provider decides at launch). A claim left with no offering keeps its choice.
pub fn limit_reservations(claims: &mut [NewNodeClaim]) {
    let mut used: BTreeMap<String, u32> = BTreeMap::new();
    // Only a claim whose cheapest offering is reserved can be over a reservation; the others
    // cost one comparison (this runs on every pass).
    for c in claims
        .iter_mut()
        .filter(|c| c.cheapest.capacity_type == labels::CAPACITY_RESERVED)
    {
        let room = |o: &crate::cloud::Offering, used: &BTreeMap<String, u32>| {
            o.reservation
                .as_ref()
                .is_none_or(|r| used.get(&r.id).copied().unwrap_or(0) < r.available)
        };
        let chosen = c
            .instance_types
            .iter()
            .find(|t| t.name == c.cheapest.instance_type)
            .and_then(|t| {
                t.offerings.iter().find(|o| {
                    o.zone == c.cheapest.zone
                        && o.capacity_type == c.cheapest.capacity_type
                        && o.available
                        && o.compatible(&c.requirements)
                })
            });
        let Some(chosen) = chosen.filter(|o| o.reservation.is_some()) else {
            continue;
        };
        if room(chosen, &used) {
            if let Some(r) = &chosen.reservation {
                *used.entry(r.id.clone()).or_default() += 1;
            }
            continue;
        }
        let next = c
            .instance_types
            .iter()
            .flat_map(|t| t.offerings.iter().map(move |o| (t, o)))
            .filter(|(_, o)| o.available && o.compatible(&c.requirements) && room(o, &used))
            .min_by(|(ta, a), (tb, b)| {
                a.price
                    .total_cmp(&b.price)
                    .then_with(|| ta.name.cmp(&tb.name))
                    .then_with(|| a.zone.cmp(&b.zone))
                    .then_with(|| a.capacity_type.cmp(&b.capacity_type))
            });
        if let Some((t, o)) = next {
            if let Some(r) = &o.reservation {
                *used.entry(r.id.clone()).or_default() += 1;
            }
            c.cheapest = ChosenOffering {
                instance_type: t.name.clone(),
                zone: o.zone.clone(),
                capacity_type: o.capacity_type.clone(),
                price: o.price,
            };
        }
    }
}

/// Run one scheduling pass over the snapshot's pending pods.
#[must_use]
pub fn schedule(snapshot: &ClusterSnapshot, options: &SchedulerOptions) -> SchedulingResults {
    Scheduler::new(snapshot, options).solve()
}

/// [`schedule`], taking the state that depends only on the NodePools, DaemonSets and nodes from
/// `cache` (filling it on first use). The results are those of [`schedule`]; many passes over
/// snapshots of one cluster (disruption simulations) save most of their setup.
#[must_use]
pub fn schedule_cached(
    snapshot: &ClusterSnapshot,
    options: &SchedulerOptions,
    cache: &SchedulingCache,
) -> SchedulingResults {
    Scheduler::with_shared(snapshot, options, Shared::from_cache(snapshot, cache)).solve()
}

struct Scheduler<'a> {
    snapshot: &'a ClusterSnapshot,
    options: &'a SchedulerOptions,
    respect: bool,
    pools: Vec<Arc<PoolCtx>>,
    /// Shared per-pool and per-node state, until the topology takes it.
    shared: Shared,
    existing: Vec<ExistingSlot>,
    claims: Vec<Claim>,
    /// Claim ids bucketed by pod count; iteration order = fewest pods first, then creation order.
    buckets: Vec<BTreeSet<usize>>,
    topology: Topology<'a>,
    remaining: BTreeMap<String, (BTreeMap<String, i64>, Option<i64>)>,
    any_prefer_no_schedule: bool,
    stats: SchedulingStats,
}

impl<'a> Scheduler<'a> {
    fn new(snapshot: &'a ClusterSnapshot, options: &'a SchedulerOptions) -> Self {
        Self::with_shared(snapshot, options, Shared::build(snapshot))
    }

    fn with_shared(
        snapshot: &'a ClusterSnapshot,
        options: &'a SchedulerOptions,
        shared: Shared,
    ) -> Self {
        let respect = options.preference_policy == PreferencePolicy::Respect;
        // Static pools keep their replica count: pending pods never open one of their claims.
        let mut pool_order: Vec<usize> = (0..snapshot.node_pools.len())
            .filter(|&i| !snapshot.node_pools[i].is_static())
            .collect();
        pool_order.sort_by(|&a, &b| {
            let (a, b) = (&snapshot.node_pools[a], &snapshot.node_pools[b]);
            b.weight.cmp(&a.weight).then_with(|| a.name.cmp(&b.name))
        });
        let pools: Vec<Arc<PoolCtx>> = pool_order
            .into_iter()
            .map(|i| shared.pools[i].0.clone())
            .collect();
        let any_prefer_no_schedule = snapshot.node_pools.iter().any(|p| {
            p.taints
                .iter()
                .any(|t| t.effect == Effect::PreferNoSchedule)
        });
        let remaining = snapshot.remaining_limits();
        // Existing nodes: usage from bound pods.
        let mut used: BTreeMap<&str, (Resources, Vec<crate::pod::HostPort>)> = BTreeMap::new();
        for p in &snapshot.pods {
            if let Some(n) = &p.node_name {
                let e = used.entry(n.as_str()).or_default();
                e.0.add_assign(&p.requests);
                e.1.extend(p.host_ports.iter().cloned());
            }
        }
        let mut nodes: Vec<&crate::cluster::Node> =
            snapshot.nodes.iter().filter(|n| !n.deleting).collect();
        nodes.sort_by(|a, b| {
            b.initialized
                .cmp(&a.initialized)
                .then_with(|| a.name.cmp(&b.name))
        });
        let existing = nodes
            .into_iter()
            .map(|n| {
                let (u, ports) = used.get(n.name.as_str()).cloned().unwrap_or_default();
                ExistingSlot::new(n, &u, ports, &shared.nodes[&n.name])
            })
            .collect();
        Scheduler {
            snapshot,
            options,
            respect,
            pools,
            shared,
            existing,
            claims: Vec::new(),
            buckets: Vec::new(),
            topology: Topology::default(),
            remaining,
            any_prefer_no_schedule,
            stats: SchedulingStats::default(),
        }
    }

    /// Build every pending pod's state (in first-fit-decreasing order) and the topology.
    fn prepare(&mut self) -> Vec<PodState<'a>> {
        // First-fit decreasing: CPU then memory, descending; ties keep snapshot order. The
        // states are laid out in that order, so the pass reads them (and what they allocate)
        // front to back; the sort reads keys copied out, not the snapshot's pods.
        let pods = &self.snapshot.pods;
        let mut keys: Vec<(LargerFirstKey, usize)> = self
            .snapshot
            .pending()
            .into_iter()
            .map(|i| (larger_first_key(&pods[i].requests), i))
            .collect();
        keys.sort_unstable();
        let mut states: Vec<PodState> = keys
            .into_iter()
            .map(|(_, idx)| {
                // Shared with the snapshot unless preferences are dropped.
                let mut pod = Relaxed::new(&self.snapshot.pods[idx]);
                if !self.respect {
                    let pod = pod.to_mut();
                    pod.preferred_node_affinity.clear();
                    pod.preferred_pod_affinity.clear();
                    pod.preferred_pod_anti_affinity.clear();
                    pod.topology_spread
                        .retain(|t| t.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule);
                }
                PodState {
                    idx,
                    orig: &self.snapshot.pods[idx],
                    pod,
                    tolerate_prefer_no_schedule: false,
                    groups: PodGroups::default(),
                    data: PodData {
                        requirements: Requirements::new(),
                        strict: Requirements::new(),
                        tolerations: vec![],
                    },
                }
            })
            .collect();
        // The topology learns the pods in snapshot order.
        let mut by_idx: Vec<usize> = (0..states.len()).collect();
        by_idx.sort_by_key(|&k| states[k].idx);
        let constraints: Vec<(usize, PodConstraints<'_>)> = by_idx
            .iter()
            .map(|&k| (states[k].idx, states[k].constraints(self.respect)))
            .collect();
        let (topology, groups) = Topology::new(self.snapshot, &constraints, &self.shared);
        self.topology = topology;
        for slot in &mut self.existing {
            slot.bind(&mut self.topology);
        }
        for (&k, g) in by_idx.iter().zip(groups) {
            states[k].groups = g;
        }
        for s in &mut states {
            s.compute(self.respect);
        }
        self.stats.pods = states.len();
        states
    }

    fn solve(mut self) -> SchedulingResults {
        let mut states = self.prepare();

        // The states are already in first-fit-decreasing order (see `prepare`).
        let mut queue: VecDeque<usize> = (0..states.len()).collect();
        // Karpenter's queue: stop when a full cycle made no progress.
        let mut last_len: BTreeMap<usize, usize> = BTreeMap::new();
        let mut errors: BTreeMap<usize, String> = BTreeMap::new();
        let mut existing_pods: Vec<Vec<usize>> = vec![Vec::new(); self.existing.len()];
        while let Some(&s) = queue.front() {
            if last_len.get(&s) == Some(&queue.len()) {
                break;
            }
            queue.pop_front();
            match self.add(&states[s], &mut existing_pods) {
                Ok(()) => {
                    errors.remove(&s);
                }
                Err(e) => {
                    errors.insert(s, e);
                    let relaxed = states[s].relax(self.any_prefer_no_schedule).is_some();
                    if relaxed {
                        self.stats.relaxations += 1;
                        let c = states[s].constraints(self.respect);
                        states[s].groups = self.topology.groups_for(&states[s].pod, &c);
                        states[s].compute(self.respect);
                        last_len.clear();
                        queue.push_back(s);
                    } else {
                        queue.push_back(s);
                        last_len.insert(s, queue.len());
                    }
                }
            }
        }
        self.finish(&states, errors, existing_pods)
    }

    fn add(&mut self, st: &PodState<'a>, existing_pods: &mut [Vec<usize>]) -> Result<(), String> {
        if self.topology.hostname_blocked_everywhere(&st.groups) {
            // Every node and NodeClaim would refuse the pod at its first check; they count as
            // attempted, as the scan would have.
            self.stats.attempts += (self.existing.len() + self.claims.len()) as u64;
        } else if let Some(placed) = self.add_to_existing_or_claims(st, existing_pods) {
            return placed;
        }
        self.add_to_new_claim(st)
    }

    /// Places the pod on the first existing node, else the first NodeClaim of this pass (fewest
    /// pods first), that takes it; `None` when none does.
    fn add_to_existing_or_claims(
        &mut self,
        st: &PodState<'a>,
        existing_pods: &mut [Vec<usize>],
    ) -> Option<Result<(), String>> {
        for (i, slot) in self.existing.iter_mut().enumerate() {
            self.stats.attempts += 1;
            if slot
                .try_add(st.orig, &st.data, &st.groups, &mut self.topology)
                .is_ok()
            {
                existing_pods[i].push(st.idx);
                return Some(Ok(()));
            }
        }
        // NodeClaims of this pass, fewest pods first. A claim pinned to a domain one of the
        // pod's groups refuses is passed over on its kept pins alone (try_add would refuse it
        // in its topology step, after reading its requirements).
        let refused = self
            .topology
            .refused_pins(st.orig, &st.groups, &st.data.strict);
        let mut chosen = None;
        'outer: for bucket in &self.buckets {
            for &c in bucket {
                self.stats.attempts += 1;
                let claim = &mut self.claims[c];
                if !refused.is_empty() && Topology::pins_refused(&refused, &claim.pins) {
                    continue;
                }
                let pool = &self.pools[claim.pool];
                if claim
                    .try_add(st.orig, &st.data, &st.groups, pool, &mut self.topology)
                    .is_ok()
                {
                    chosen = Some(c);
                    break 'outer;
                }
            }
        }
        if let Some(c) = chosen {
            let n = self.claims[c].pods.len();
            self.buckets[n - 1].remove(&c);
            if self.buckets.len() <= n {
                self.buckets.resize_with(n + 1, BTreeSet::new);
            }
            self.buckets[n].insert(c);
            self.claims[c].pods.push(st.idx);
            return Some(Ok(()));
        }
        None
    }

    /// Opens a new NodeClaim for the pod from the first pool (by weight) that can take it.
    fn add_to_new_claim(&mut self, st: &PodState<'a>) -> Result<(), String> {
        // A new NodeClaim from the first pool (by weight) that can take the pod.
        let mut reasons = Vec::new();
        if self.pools.is_empty() {
            if self.snapshot.node_pools.iter().any(NodePool::is_static) {
                return Err(
                    "only static NodePools (spec.replicas) exist, and they launch no node for pods"
                        .to_string(),
                );
            }
            return Err("no NodePool exists to launch a node for it".to_string());
        }
        for p in 0..self.pools.len() {
            self.stats.attempts += 1;
            let pool = &self.pools[p];
            let (limits, nodes_left) = self.remaining.get(&pool.name).cloned().unwrap_or_default();
            if nodes_left.is_some_and(|n| n <= 0) {
                reasons.push(format!(
                    "nodepool {:?} reached its limit of nodes",
                    pool.name
                ));
                continue;
            }
            let types: Vec<u32> = pool.types_within_limits(&limits);
            if types.is_empty() {
                let names: Vec<&str> = limits.keys().map(String::as_str).collect();
                reasons.push(format!(
                    "nodepool {:?}: every instance type would exceed its remaining limits ({})",
                    pool.name,
                    names.join(", ")
                ));
                continue;
            }
            let hostname = format!("{}-{}", pool.name, self.claims.len());
            let host = self.topology.register_hostname(&hostname);
            let mut claim = Claim::new(p, pool, hostname, host, types);
            match claim.try_add(st.orig, &st.data, &st.groups, pool, &mut self.topology) {
                Ok(()) => {
                    // Track the largest option against the pool's limits.
                    if let Some((lim, nodes)) = self.remaining.get_mut(&pool.name) {
                        for (k, v) in lim.iter_mut() {
                            *v -= claim.max_capacity(pool, k);
                        }
                        if let Some(n) = nodes {
                            *n -= 1;
                        }
                    }
                    claim.pods.push(st.idx);
                    let id = self.claims.len();
                    self.claims.push(claim);
                    if self.buckets.len() < 2 {
                        self.buckets.resize_with(2, BTreeSet::new);
                    }
                    self.buckets[1].insert(id);
                    return Ok(());
                }
                Err(e) => reasons.push(format!(
                    "incompatible with nodepool {:?}: {}",
                    pool.name,
                    e.describe(&self.topology)
                )),
            }
        }
        Err(reasons.join("; "))
    }

    fn finish(
        self,
        states: &[PodState],
        errors: BTreeMap<usize, String>,
        existing_pods: Vec<Vec<usize>>,
    ) -> SchedulingResults {
        let mut results = SchedulingResults {
            stats: self.stats,
            ..Default::default()
        };
        let mut unschedulable: BTreeMap<usize, String> = errors
            .into_iter()
            .map(|(s, e)| (states[s].idx, e))
            .collect();
        let mut options = claim::FinalizeCache::default();
        for claim in &self.claims {
            let pool = &self.pools[claim.pool];
            match claim.finalize(pool, self.options.max_instance_types, &mut options) {
                Ok(nc) => results.new_nodeclaims.push(nc),
                Err(e) => {
                    for &p in &claim.pods {
                        unschedulable.insert(
                            p,
                            format!("incompatible with nodepool {:?}: {e}", pool.name),
                        );
                    }
                }
            }
        }
        limit_reservations(&mut results.new_nodeclaims);
        for (slot, pods) in self.existing.iter().zip(existing_pods) {
            if !pods.is_empty() {
                results.existing.push(ExistingPlacement {
                    node: slot.name.clone(),
                    pods,
                });
            }
        }
        results.existing.sort_by(|a, b| a.node.cmp(&b.node));
        results.unschedulable = unschedulable
            .into_iter()
            .map(|(pod, reason)| Unschedulable { pod, reason })
            .collect();
        results
    }
}

/// Requirement `node.kubernetes.io/instance-type In [names]`.
pub(crate) fn instance_type_requirement(types: &[Arc<InstanceType>]) -> Requirement {
    Requirement::in_values(labels::INSTANCE_TYPE, types.iter().map(|t| t.name.clone()))
}

#[cfg(test)]
mod tests;
