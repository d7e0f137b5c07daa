//! karp's `global` consolidator, and the consolidation step of a pass that chooses between it
//! and Karpenter's methods.
//!
//! Karpenter's consolidation looks for one command of a fixed shape: delete some nodes, or
//! replace them by exactly one cheaper node. The global consolidator chooses the set of nodes to
//! remove and the replacements together:
//!
//! 1. The consolidatable candidates of the `global` pools are ordered least utilized first
//!    (the larger of the CPU and memory requests of their reschedulable pods over allocatable;
//!    then the dearest first, then by name). Each takes one disruption from its own pool's budget
//!    for its own reason (`Empty` for nodes Karpenter counts empty, else `Underutilized`); a node
//!    the budget does not allow is left out.
//! 2. First, for pools of at most 200 candidates, the target-directed search
//!    (`Pass::toward`): the whole candidate list re-packed from nothing (with the MILP packer
//!    when there is one) is the *target*; the candidates that already are target nodes, partly
//!    filled, are kept, and a step removes the others the budget allows, their pods going to
//!    the target's free slots on kept nodes and on target nodes it launches, as long as the step
//!    saves. Passes over the same pods aim at the same target, so the pool reaches it in
//!    budget-sized steps that each save, where the searches below, which take the move saving
//!    most now, stop in a local optimum. When the pool is at its target, or no step saves, or
//!    the step is below the savings threshold or not justified (6.), the searches below run.
//! 3. Prefixes of that order are simulated (sizes 1, 2, 3, 4, 6, 8, 12, … and all), each with
//!    the provisioning scheduler: the prefix's pods go to the free room of the kept nodes first
//!    and then to any number of new NodeClaims (N → M, 1 → 2 splits included). Each replacement
//!    is pinned to the capacity type of its cheapest offering and keeps only the instance types
//!    that cannot launch dearer than the chosen one. A prefix is valid when every pod that was
//!    running is placed and the replacements' worst-case launch price is strictly below the
//!    prefix's price. With the `SpotToSpotConsolidation` gate off, a prefix holding a spot node
//!    gets no spot replacements (Karpenter's rule, applied to any command that removes spot).
//! 4. With the `milp` feature, the best prefix and the whole candidate list are re-packed with
//!    the MILP packer of the options (by default with deterministic work limits), which places
//!    the pods on new NodeClaims more cheaply than FFD; the cheapest valid result wins, the
//!    smaller prefix on a tie.
//! 5. When no prefix saves, the exchange search (`Pass::exchange`) tries sets of
//!    complementary nodes, and when that finds nothing either, the staged search
//!    (`Pass::staged`) fills one node of an offering the whole candidate list would re-pack
//!    onto with the candidates the budget allows: a step toward that re-pack that saves on its
//!    own, for pools whose budget is smaller than the move that would save most.
//! 6. The move is taken only when Karpenter's Balanced score approves it (k = 2, or the pool's
//!    `consolidationThreshold`: its share of the pools' cost saved is at least half its share of
//!    their disruption cost) and its savings reach the threshold ([`SavingsThreshold`]: an
//!    absolute amount and a fraction of the touched pools' cost, per pool overridable; see
//!    [`SavingsThreshold`](super::SavingsThreshold)).
//!
//! The consolidation step of a pass ([`Pass::consolidation`]) runs Karpenter's multi-node then
//! single-node consolidation for the `karpenter` pools, and for the `global` pools both the
//! global consolidator and Karpenter's methods, all subject to the threshold; the command saving
//! most wins (Karpenter's on a tie), except that a step of the target-directed search wins over
//! Karpenter's command: taking the larger saving now would move the pool away from the cheaper
//! target (`plan_until_stable` still plays the all-`karpenter` sequence too and keeps the
//! cheaper end, so `global` never ends dearer than `karpenter`).

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::Node;
use crate::labels;
use crate::requirements::Requirement;
use crate::scheduling::replay::Replay;
use crate::scheduling::{larger_first, NewNodeClaim, SchedulingResults};

use super::budgets::Allowed;
use super::candidates::Candidate;
use super::consolidation::{narrow, worst_launch_price};
use super::methods::{Pass, CONSOLIDATION_TTL};
use super::model::{Mode, Reason};
use super::simulate::{forbid_spot, simulate_with, without, Placement, Simulation};
use super::{Command, Method};

/// The global consolidator justifies its moves with Karpenter's Balanced score at this `k` (a
/// pool's own `consolidationThreshold` when it is `Balanced`).
pub const GLOBAL_BALANCED_K: u32 = 2;

/// Tolerance of price comparisons, in USD per hour.
const EPSILON: f64 = 1e-9;

/// A simulated removal of a prefix of the ordered candidates.
pub(super) struct Trial<'a> {
    pub(super) nodes: Vec<&'a Candidate>,
    pub(super) sim: Simulation,
    pub(super) savings: f64,
}

/// Prefix sizes tried: 1, 2, 3, 4, 6, 8, 12, 16, 24, … (powers of two and one and a half times
/// them) below `n`, then `n`.
fn prefix_sizes(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut p = 1usize;
    while p < n {
        out.push(p);
        if p >= 2 && p + p / 2 < n {
            out.push(p + p / 2);
        }
        p *= 2;
    }
    out.push(n);
    out
}

/// How full a candidate is with the pods that would move, and what its room is worth.
#[derive(Debug, Clone)]
struct Load {
    /// CPU requests of its reschedulable pods over allocatable.
    cpu: f64,
    /// Memory requests over allocatable.
    memory: f64,
    /// Its price minus the value of those requests at the pool's cheapest unit prices (the
    /// largest over CPU, memory and extended resources such as GPUs): what the node costs beyond
    /// its pods' fair share.
    waste: f64,
    /// Its price.
    price: f64,
    /// The requests of each resource at the pool's cheapest price per unit of it.
    values: BTreeMap<String, f64>,
}

impl Load {
    fn of(
        c: &Candidate,
        node: Option<&Node>,
        pods: &[crate::pod::Pod],
        units: &BTreeMap<String, f64>,
    ) -> Load {
        let price = c.price().unwrap_or(0.0);
        let Some(node) = node else {
            return Load {
                cpu: 1.0,
                memory: 1.0,
                waste: 0.0,
                price,
                values: BTreeMap::new(),
            };
        };
        let mut requests = crate::resources::Resources::new();
        for &i in &c.reschedulable {
            requests.add_assign(&pods[i].requests);
        }
        let frac = |used: i64, total: i64| {
            if total > 0 {
                used as f64 / total as f64
            } else {
                0.0
            }
        };
        let values: BTreeMap<String, f64> = requests
            .iter()
            .filter_map(|(name, amount)| {
                units
                    .get(name)
                    .map(|unit| (name.to_string(), amount as f64 * unit))
            })
            .collect();
        let fair = values.values().copied().fold(0.0, f64::max);
        Load {
            cpu: frac(requests.cpu, node.allocatable.cpu),
            memory: frac(requests.memory, node.allocatable.memory),
            waste: price - fair,
            price,
            values,
        }
    }

    /// The larger of the CPU and memory fractions.
    fn utilization(&self) -> f64 {
        self.cpu.max(self.memory)
    }
}

/// What re-packing a set of candidates together could save at most: their price minus the
/// largest of their joint requests' values per resource (complementary nodes waste less
/// together).
fn potential(loads: &[Load], set: &BTreeSet<usize>) -> f64 {
    let mut price = 0.0;
    let mut values: BTreeMap<&str, f64> = BTreeMap::new();
    for &i in set {
        price += loads[i].price;
        for (name, v) in &loads[i].values {
            *values.entry(name.as_str()).or_default() += v;
        }
    }
    price - values.values().copied().fold(0.0, f64::max)
}

/// The cheapest price per unit of CPU, memory and each extended resource among `pool`'s
/// available offerings its template allows (pod slots and ephemeral storage left out: they
/// rarely decide a node's size).
fn unit_prices(pool: &crate::cluster::NodePool) -> BTreeMap<String, f64> {
    let template = pool.template_requirements();
    let mut best: BTreeMap<String, f64> = BTreeMap::new();
    for it in &pool.instance_types {
        let Some(price) = it
            .offerings
            .iter()
            .filter(|o| o.available && o.compatible(&template))
            .map(|o| o.price)
            .min_by(f64::total_cmp)
        else {
            continue;
        };
        for (name, amount) in it.allocatable().iter() {
            if amount <= 0
                || name == crate::resources::names::PODS
                || name == crate::resources::names::EPHEMERAL_STORAGE
            {
                continue;
            }
            let unit = price / amount as f64;
            let e = best.entry(name.to_string()).or_insert(unit);
            *e = e.min(unit);
        }
    }
    best
}

/// The reason a global move charges `c` to: `Empty` when Karpenter counts it empty, else
/// `Underutilized`.
fn global_reason(c: &Candidate) -> Reason {
    if c.empty {
        Reason::Empty
    } else {
        Reason::Underutilized
    }
}

/// Take one disruption for `c` (its pool, its [`global_reason`]) from `budgets`; whether one was
/// left.
fn take_budget(budgets: &mut BTreeMap<(String, Reason), Allowed>, c: &Candidate) -> bool {
    let allowed = budgets
        .entry((c.facts.nodepool.clone(), global_reason(c)))
        .or_insert(Allowed::Unlimited);
    let ok = allowed.any();
    if ok {
        allowed.take();
    }
    ok
}

/// Seeds of the exchange search: the candidates wasting most.
const EXCHANGE_SEEDS: usize = 8;
/// Pairs simulated by the exchange search: those of the highest [`potential`].
const EXCHANGE_PAIRS: usize = 8;
/// Extensions of the best set simulated per round: those of the highest [`potential`].
const EXCHANGE_EXTENSIONS: usize = 3;
/// How the staged search measures the share of a new node a candidate's pods take.
#[derive(Clone, Copy)]
enum Share<'k> {
    /// The largest fraction over the node's resources.
    Largest,
    /// The sum of the fractions.
    Total,
    /// The fraction of one resource.
    Of(&'k str),
}

/// Where the target-directed search puts a pod.
#[derive(Debug, Clone, PartialEq)]
enum Dest {
    /// An existing node, by name.
    Node(String),
    /// A new NodeClaim of the target, by index.
    Claim(usize),
}

/// The packer of the global consolidator's re-packs: the options' MILP packer (with the pass's
/// scheduler options) when the crate has the `milp` feature and the options one, else FFD.
#[derive(Debug)]
struct Repacker(#[cfg(feature = "milp")] Option<crate::packing::Milp>);

impl Repacker {
    /// The MILP packer to hand to a simulation (`None`: FFD).
    #[cfg(feature = "milp")]
    fn packer(&self) -> Option<&dyn crate::packing::Packer> {
        self.0.as_ref().map(|m| m as &dyn crate::packing::Packer)
    }

    /// Without the `milp` feature there is no MILP packer (`None`: FFD).
    #[cfg(not(feature = "milp"))]
    fn packer(&self) -> Option<&dyn crate::packing::Packer> {
        None
    }
}

/// What makes pods interchangeable for the target-directed search: requests, node
/// requirements, tolerations and host ports (the scheduler's checks decide the rest).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PodClass {
    requests: Vec<(String, i64)>,
    requirements: crate::requirements::Requirements,
    tolerations: Vec<crate::taints::Toleration>,
    host_ports: Vec<crate::pod::HostPort>,
}

impl PodClass {
    fn of(p: &crate::pod::Pod) -> PodClass {
        PodClass {
            requests: p
                .requests
                .iter()
                .filter(|(_, v)| *v != 0)
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            requirements: p.strict_requirements(),
            tolerations: p.tolerations.clone(),
            host_ports: p.host_ports.clone(),
        }
    }
}

/// Where [`Slots::place`] put each pod class: (node, count) in order.
type Placed = Vec<(PodClass, Vec<(Dest, usize)>)>;

/// The free slots of the target-directed search: per kept or launched target node, counts per
/// pod class; and the target nodes not launched yet.
#[derive(Clone)]
struct Slots {
    /// Free counts of each open node.
    free: Vec<BTreeMap<PodClass, usize>>,
    /// Where each open node is: a kept node, or a target NodeClaim by index.
    node: Vec<Dest>,
    /// Target NodeClaims not launched, by index, with their counts.
    launch: BTreeMap<usize, BTreeMap<PodClass, usize>>,
}

impl Slots {
    /// Take free slots for `need` (count per class), launching target nodes when a class has
    /// none left (the one with most slots for what is still needed first, then the cheapest at
    /// `worst`, then the first); the launch cost and where each class goes (node, count), or
    /// `None` when the target nodes cannot hold it.
    fn place(&mut self, need: &[(&PodClass, usize)], worst: &[f64]) -> Option<(f64, Placed)> {
        let mut cost = 0.0;
        let mut placed: Placed = Vec::new();
        let mut left: BTreeMap<&PodClass, usize> = need.iter().map(|(c, n)| (*c, *n)).collect();
        loop {
            for (class, n) in left.iter_mut() {
                for (i, free) in self.free.iter_mut().enumerate() {
                    if *n == 0 {
                        break;
                    }
                    if let Some(m) = free.get_mut(*class).filter(|m| **m > 0) {
                        let take = (*m).min(*n);
                        *m -= take;
                        *n -= take;
                        let to = self.node[i].clone();
                        match placed.iter_mut().find(|(c, _)| c == *class) {
                            Some((_, v)) => v.push((to, take)),
                            None => placed.push(((*class).clone(), vec![(to, take)])),
                        }
                    }
                }
            }
            left.retain(|_, n| *n > 0);
            if left.is_empty() {
                return Some((cost, placed));
            }
            let covers = |counts: &BTreeMap<PodClass, usize>| -> usize {
                left.iter()
                    .map(|(c, n)| counts.get(*c).map_or(0, |m| (*m).min(*n)))
                    .sum()
            };
            let (&j, _) = self
                .launch
                .iter()
                .filter(|(_, counts)| covers(counts) > 0)
                .max_by(|(ja, a), (jb, b)| {
                    covers(a)
                        .cmp(&covers(b))
                        .then_with(|| worst[**jb].total_cmp(&worst[**ja]))
                        .then_with(|| jb.cmp(ja))
                })?;
            let counts = self.launch.remove(&j)?;
            cost += worst[j];
            self.free.push(counts);
            self.node.push(Dest::Claim(j));
        }
    }

    /// Target NodeClaims launched in `self` and not in `before`.
    fn launched_since(&self, before: &Slots) -> Vec<usize> {
        self.node[before.node.len()..]
            .iter()
            .filter_map(|d| match d {
                Dest::Claim(j) => Some(*j),
                Dest::Node(_) => None,
            })
            .collect()
    }
}

/// The staged search re-packs at most this many candidates together.
const STAGED_MAX_CANDIDATES: usize = 200;

/// Pin `claim` to its cheapest offering's capacity type and keep the instance types whose
/// worst-case launch price is not above the chosen type's. A spot claim whose chosen type costs
/// more in some allowed zone than in the chosen one is pinned to the chosen zone too, when that
/// lowers the worst case (spot prices differ by zone up to threefold; Karpenter's worst case
/// over every zone would rule out most spot moves). Returns the claim and its worst-case price.
fn pin(claim: &NewNodeClaim) -> Option<(NewNodeClaim, f64)> {
    let by_type = pin_to(claim, false);
    if claim.cheapest.capacity_type == labels::CAPACITY_SPOT
        && by_type
            .as_ref()
            .is_none_or(|(_, w)| *w > claim.cheapest.price + EPSILON)
    {
        if let Some(by_zone) = pin_to(claim, true) {
            if by_type.as_ref().is_none_or(|(_, w)| by_zone.1 < *w) {
                return Some(by_zone);
            }
        }
    }
    by_type
}

/// `claim`'s requirements narrowed to exactly its cheapest offering's instance type and capacity
/// type: a NodeClaim launched like this has the room `claim`'s plan counted on.
fn exactly(claim: &NewNodeClaim) -> crate::requirements::Requirements {
    let mut requirements = claim.requirements.clone();
    requirements.add(Requirement::in_values(
        labels::INSTANCE_TYPE,
        [claim.cheapest.instance_type.clone()],
    ));
    requirements.add(Requirement::in_values(
        labels::CAPACITY_TYPE,
        [claim.cheapest.capacity_type.clone()],
    ));
    requirements
}

/// [`pin`] to the cheapest offering's capacity type (and zone when `zone`).
fn pin_to(claim: &NewNodeClaim, zone: bool) -> Option<(NewNodeClaim, f64)> {
    let mut c = claim.clone();
    c.requirements.add(Requirement::in_values(
        labels::CAPACITY_TYPE,
        [claim.cheapest.capacity_type.clone()],
    ));
    if zone {
        c.requirements.add(Requirement::in_values(
            labels::ZONE,
            [claim.cheapest.zone.clone()],
        ));
    }
    let chosen = c
        .instance_types
        .iter()
        .find(|t| t.name == claim.cheapest.instance_type)?;
    let cap = worst_launch_price(chosen, &c)?;
    let pinned = narrow(&c, |t| {
        worst_launch_price(t, &c).is_some_and(|p| p <= cap + EPSILON)
    })
    .ok()?;
    (!pinned.instance_types.is_empty()).then_some((pinned, cap))
}

impl<'a> Pass<'a> {
    /// The effective mode of a pool: its annotation, else the pass's.
    fn mode_of(&self, pool: &str) -> Mode {
        self.input
            .pools
            .get(pool)
            .and_then(|s| s.mode)
            .unwrap_or(self.options.mode)
    }

    /// The savings a move of `nodes` must reach: per touched pool, its threshold (annotation,
    /// else the pass's) applied to the touched pools' hourly cost; the largest.
    pub(super) fn required_savings(&self, nodes: &[&str]) -> f64 {
        let pools: BTreeSet<&str> = nodes
            .iter()
            .filter_map(|n| self.input.nodes.get(*n).map(|f| f.nodepool.as_str()))
            .collect();
        let cost: f64 = self
            .input
            .nodes
            .values()
            .filter(|f| pools.contains(f.nodepool.as_str()) && !f.deleting)
            .filter_map(|f| f.offering.as_ref().map(|o| o.price))
            .sum();
        pools
            .iter()
            .map(|p| {
                self.input
                    .pools
                    .get(*p)
                    .and_then(|s| s.min_savings)
                    .unwrap_or(self.options.min_savings)
                    .required(cost)
            })
            .fold(0.0, f64::max)
    }

    /// Simulate removing `nodes`; `None` when a running pod would be left pending or the
    /// replacements could cost as much as the nodes.
    pub(super) fn trial(
        &self,
        nodes: &[&'a Candidate],
        packer: Option<&dyn crate::packing::Packer>,
    ) -> Option<Trial<'a>> {
        self.priced(nodes, self.simulation(nodes, packer))
    }

    /// Simulate removing `nodes`, their pods placed by `packer` (FFD by default); with the
    /// `SpotToSpotConsolidation` gate off, no spot replacement for a set holding a spot node.
    fn simulation(
        &self,
        nodes: &[&'a Candidate],
        packer: Option<&dyn crate::packing::Packer>,
    ) -> Simulation {
        let placement = Placement {
            packer,
            forbid_spot: self.forbids_spot(nodes),
            cache: Some(&self.cache),
        };
        simulate_with(
            self.input,
            nodes,
            self.now,
            &self.options.scheduler,
            placement,
        )
    }

    /// Whether removing `nodes` may get no spot replacement: the `SpotToSpotConsolidation`
    /// gate is off and one of them is spot.
    fn forbids_spot(&self, nodes: &[&Candidate]) -> bool {
        !self.options.spot_to_spot_consolidation
            && nodes.iter().any(|c| {
                c.facts
                    .offering
                    .as_ref()
                    .is_some_and(|o| o.capacity_type == labels::CAPACITY_SPOT)
            })
    }

    /// The simulation of removing `nodes` as a [`Trial`]: `None` when a running pod would be
    /// left pending or the replacements (pinned, see [`pin`]) could cost as much as the nodes.
    fn priced(&self, nodes: &[&'a Candidate], mut sim: Simulation) -> Option<Trial<'a>> {
        if sim.running_pod_failure().is_some() {
            return None;
        }
        let price: f64 = nodes.iter().filter_map(|c| c.price()).sum();
        let mut worst = 0.0;
        let mut expected = 0.0;
        for claim in &mut sim.results.new_nodeclaims {
            let (pinned, w) = pin(claim)?;
            worst += w;
            expected += pinned.cheapest.price;
            *claim = pinned;
        }
        if worst >= price - EPSILON {
            return None;
        }
        Some(Trial {
            nodes: nodes.to_vec(),
            sim,
            savings: price - expected,
        })
    }

    /// The global consolidator over the consolidatable candidates in scope (see the module docs).
    pub fn global(&mut self) -> Option<Command> {
        let names: BTreeMap<&str, &Node> = self
            .input
            .snapshot
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n))
            .collect();
        let pods = &self.input.snapshot.pods;
        let units: BTreeMap<&str, BTreeMap<String, f64>> = self
            .input
            .snapshot
            .node_pools
            .iter()
            .map(|p| (p.name.as_str(), unit_prices(p)))
            .collect();
        let no_units = BTreeMap::new();
        let mut ordered: Vec<(Load, &'a Candidate)> = self
            .consolidatable()
            .into_iter()
            .map(|c| {
                let unit = units.get(c.facts.nodepool.as_str()).unwrap_or(&no_units);
                (
                    Load::of(c, names.get(c.name.as_str()).copied(), pods, unit),
                    c,
                )
            })
            .collect();
        ordered.sort_by(|(ua, a), (ub, b)| {
            ua.utilization()
                .total_cmp(&ub.utilization())
                .then_with(|| {
                    b.price()
                        .unwrap_or(0.0)
                        .total_cmp(&a.price().unwrap_or(0.0))
                })
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut budgets = self.budgets.clone();
        let mut within: Vec<&'a Candidate> = Vec::new();
        let everyone = ordered.clone();
        for (_, c) in ordered {
            if take_budget(&mut budgets, c) {
                within.push(c);
            } else {
                self.budget_blocked(&c.name, global_reason(c));
            }
        }
        if within.is_empty() {
            return None;
        }
        // A step toward the whole pool's target first, when it clears the threshold and is
        // justified; else the prefixes, then the exchange and staged searches.
        let aimed = self.toward(&everyone).filter(|t| self.refusal(t).is_none());
        self.aimed = aimed.is_some();
        let best = aimed.or_else(|| self.unaimed(&within, &everyone));
        let Some(t) = best else {
            for c in &within {
                self.note(
                    &c.name,
                    "Global consolidation found no cheaper placement of its pods",
                );
            }
            return None;
        };
        if let Some(why) = self.refusal(&t) {
            for c in &t.nodes {
                self.note(&c.name, why.clone());
            }
            return None;
        }
        let reason = if t.nodes.iter().all(|c| c.empty) {
            Reason::Empty
        } else {
            Reason::Underutilized
        };
        let at = self.now.plus(CONSOLIDATION_TTL);
        Some(self.command(Method::Global, reason, &t.nodes, Some(t.sim), at))
    }

    /// Why the global move `t` is not taken: its savings are below the savings threshold, or
    /// the Balanced score does not justify it; `None` when it may be taken.
    fn refusal(&self, t: &Trial<'a>) -> Option<String> {
        let names: Vec<&str> = t.nodes.iter().map(|c| c.name.as_str()).collect();
        let required = self.required_savings(&names);
        if t.savings < required - EPSILON {
            return Some(format!(
                "Global consolidation would save ${:.4}/h, below the savings threshold ${:.4}/h",
                t.savings, required
            ));
        }
        let totals = super::balanced::pool_totals(self.candidates);
        super::balanced::approve_with(&totals, &t.nodes, t.savings, self.options.justification.k())
            .err()
            .map(|why| format!("Global consolidation rejected: {why}"))
    }

    /// The global consolidator's searches other than the target-directed one: prefixes of
    /// `within` (the utilization order cut to the budgets) with FFD, the best prefix and all of
    /// `within` with the MILP packer, then, when no prefix saves, the exchange and the staged
    /// searches over `everyone`.
    fn unaimed(
        &self,
        within: &[&'a Candidate],
        everyone: &[(Load, &'a Candidate)],
    ) -> Option<Trial<'a>> {
        let mut best: Option<Trial<'a>> = None;
        let consider = |t: Option<Trial<'a>>, best: &mut Option<Trial<'a>>| {
            if let Some(t) = t {
                let better = best.as_ref().is_none_or(|b| {
                    t.savings > b.savings + EPSILON
                        || (t.savings > b.savings - EPSILON && t.nodes.len() < b.nodes.len())
                });
                if better {
                    *best = Some(t);
                }
            }
        };
        for k in prefix_sizes(within.len()) {
            consider(self.trial(&within[..k], None), &mut best);
        }
        let repacker = self.repacker();
        if let Some(milp) = repacker.packer() {
            let mut sizes = vec![within.len()];
            if let Some(b) = &best {
                sizes.insert(0, b.nodes.len());
            }
            sizes.dedup();
            for k in sizes {
                consider(self.trial(&within[..k], Some(milp)), &mut best);
            }
        }
        if best.is_none() {
            best = self.exchange(everyone);
        }
        if best.is_none() {
            best = self.staged(everyone);
        }
        best
    }

    /// The exchange search, for clusters whose nodes are full but of the wrong shapes (a
    /// CPU-heavy node on a memory-optimized type next to a memory-heavy one on a CPU type): no
    /// prefix of the utilization order saves, but re-packing a few complementary nodes together
    /// does. Pairs of one of the [`EXCHANGE_SEEDS`] candidates wasting most ([`Load::waste`])
    /// with any other are ranked by [`potential`]; the best [`EXCHANGE_PAIRS`] within budget
    /// are simulated (with the MILP packer when the options have one), and the best valid set
    /// grows by its [`EXCHANGE_EXTENSIONS`] best-ranked extensions while that saves more.
    fn exchange(&self, ordered: &[(Load, &'a Candidate)]) -> Option<Trial<'a>> {
        if ordered.len() < 2 {
            return None;
        }
        let within: Vec<&'a Candidate> = ordered.iter().map(|(_, c)| *c).collect();
        let loads: Vec<Load> = ordered.iter().map(|(l, _)| l.clone()).collect();
        let repacker = self.repacker();
        let packer = repacker.packer();
        let nodes_of = |set: &BTreeSet<usize>| -> Vec<&'a Candidate> {
            set.iter().map(|&i| within[i]).collect()
        };
        // The `limit` sets of highest potential among `sets` that the budgets allow.
        let ranked = |sets: Vec<BTreeSet<usize>>, limit: usize| {
            let mut scored: Vec<(f64, BTreeSet<usize>)> = sets
                .into_iter()
                .map(|set| (potential(&loads, &set), set))
                .filter(|(p, _)| *p > EPSILON)
                .collect();
            scored.sort_by(|(pa, a), (pb, b)| pb.total_cmp(pa).then_with(|| a.cmp(b)));
            scored.dedup_by(|x, y| x.1 == y.1);
            scored
                .into_iter()
                .map(|(_, set)| set)
                .filter(|set| self.within_budget(&nodes_of(set)))
                .take(limit)
                .collect::<Vec<_>>()
        };
        let mut seeds: Vec<usize> = (0..within.len()).collect();
        seeds.sort_by(|&a, &b| loads[b].waste.total_cmp(&loads[a].waste).then(a.cmp(&b)));
        seeds.truncate(EXCHANGE_SEEDS);
        let pairs: Vec<BTreeSet<usize>> = seeds
            .iter()
            .flat_map(|&s| {
                (0..within.len())
                    .filter(move |&j| j != s)
                    .map(move |j| BTreeSet::from([s, j]))
            })
            .collect();
        let mut best: Option<(BTreeSet<usize>, Trial<'a>)> = None;
        for set in ranked(pairs, EXCHANGE_PAIRS) {
            if let Some(t) = self.trial(&nodes_of(&set), packer) {
                if best
                    .as_ref()
                    .is_none_or(|(_, b)| t.savings > b.savings + EPSILON)
                {
                    best = Some((set, t));
                }
            }
        }
        // Grow the best set while adding a candidate saves more.
        while let Some((set, t)) = &best {
            let bigger: Vec<BTreeSet<usize>> = (0..within.len())
                .filter(|j| !set.contains(j))
                .map(|j| {
                    let mut b = set.clone();
                    b.insert(j);
                    b
                })
                .collect();
            let mut grown: Option<(BTreeSet<usize>, Trial<'a>)> = None;
            for b in ranked(bigger, EXCHANGE_EXTENSIONS) {
                if let Some(nt) = self.trial(&nodes_of(&b), packer) {
                    let floor = grown.as_ref().map_or(t.savings, |(_, g)| g.savings);
                    if nt.savings > floor + EPSILON {
                        grown = Some((b, nt));
                    }
                }
            }
            match grown {
                Some(g) => best = Some(g),
                None => break,
            }
        }
        best.map(|(_, t)| t)
    }

    /// The packer of the global consolidator's re-packs (see [`Repacker`]).
    fn repacker(&self) -> Repacker {
        Repacker(
            #[cfg(feature = "milp")]
            self.options.milp.clone().map(|mut m| {
                m.options = self.options.scheduler.clone();
                m
            }),
        )
    }

    /// The target-directed search, for pools whose budget is smaller than the re-pack that
    /// would save most. The *target* is the re-pack of every candidate's pods from nothing
    /// (the MILP packer when the options have one), computed over the pods in name order so
    /// that every pass over the same pods aims at the same nodes. Pods with the same requests,
    /// node requirements, tolerations and host ports are interchangeable, so a target node is
    /// a count per such pod class on an offering (pool, instance type, capacity type). A
    /// candidate of a target node's offering whose pods fit within that node's counts *is*
    /// that node, partly filled (its remaining counts are free slots, which the node has room
    /// for); every other candidate is to be removed. A step removes, within the budgets, the
    /// candidates saving most: each one's pods go to free slots of the kept nodes and of the
    /// target nodes the step launches (exactly their offering; a node is launched when a pod
    /// finds no free slot of its class, the one with most slots for what is left first). A
    /// candidate that launches nothing saves its whole price; the others are taken while the
    /// step still saves at worst-case launch prices. Every placement goes through the
    /// scheduler's own checks. Skipped past [`STAGED_MAX_CANDIDATES`] candidates, and when the
    /// target is not cheaper than the candidates now.
    fn toward(&self, ordered: &[(Load, &'a Candidate)]) -> Option<Trial<'a>> {
        if ordered.len() < 2 || ordered.len() > STAGED_MAX_CANDIDATES {
            return None;
        }
        let repacker = self.repacker();
        let packer = repacker.packer();
        let all: Vec<&'a Candidate> = ordered.iter().map(|(_, c)| *c).collect();
        let (mut snapshot, _) = without(self.input, &all, self.now);
        if self.forbids_spot(&all) {
            forbid_spot(&mut snapshot);
        }
        snapshot.pods.sort_by_cached_key(crate::pod::Pod::key);
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            format!("{snapshot:?}").hash(&mut h);
            format!("{:?}", self.options.scheduler).hash(&mut h);
            format!("{repacker:?}").hash(&mut h);
            h.finish()
        };
        let scratch = self.options.targets.get_or_pack(key, || match packer {
            Some(p) => p.pack(&snapshot).results,
            None => crate::scheduling::schedule(&snapshot, &self.options.scheduler),
        });
        if !scratch.unschedulable.is_empty() {
            return None;
        }
        let claims = &scratch.new_nodeclaims;
        let worst: Vec<f64> = claims
            .iter()
            .map(|c| pin(c).map_or(f64::INFINITY, |(_, w)| w))
            .collect();
        // Pods (indices into `pods`) by class.
        let by_class = |pods: &[crate::pod::Pod], of: &mut dyn Iterator<Item = usize>| {
            let mut classes: BTreeMap<PodClass, Vec<usize>> = BTreeMap::new();
            for i in of {
                classes.entry(PodClass::of(&pods[i])).or_default().push(i);
            }
            classes
        };
        let counts_of = |classes: &BTreeMap<PodClass, Vec<usize>>| -> BTreeMap<PodClass, usize> {
            classes.iter().map(|(c, v)| (c.clone(), v.len())).collect()
        };
        let patterns: Vec<BTreeMap<PodClass, usize>> = claims
            .iter()
            .map(|c| counts_of(&by_class(&snapshot.pods, &mut c.pods.iter().copied())))
            .collect();
        let pods = &self.input.snapshot.pods;
        let classes: BTreeMap<&str, BTreeMap<PodClass, Vec<usize>>> = all
            .iter()
            .map(|c| {
                let of = by_class(pods, &mut c.reschedulable.iter().copied());
                (c.name.as_str(), of)
            })
            .collect();
        // Kept candidates: the most utilized first, each the first unmatched target node of its
        // offering whose counts hold its pods.
        let mut fullest: Vec<&(Load, &'a Candidate)> = ordered.iter().collect();
        fullest.sort_by(|(la, a), (lb, b)| {
            lb.utilization()
                .total_cmp(&la.utilization())
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut slots = Slots {
            free: Vec::new(),
            node: Vec::new(),
            launch: BTreeMap::new(),
        };
        let mut matched = vec![false; claims.len()];
        let mut kept: BTreeSet<&str> = BTreeSet::new();
        for (_, c) in fullest {
            let Some(o) = &c.facts.offering else {
                continue;
            };
            let has = counts_of(&classes[c.name.as_str()]);
            let fits = |j: usize| {
                !matched[j]
                    && claims[j].nodepool == c.facts.nodepool
                    && claims[j].cheapest.instance_type == o.instance_type
                    && claims[j].cheapest.capacity_type == o.capacity_type
                    && has
                        .iter()
                        .all(|(k, n)| patterns[j].get(k).is_some_and(|m| m >= n))
            };
            if let Some(j) = (0..claims.len()).find(|&j| fits(j)) {
                matched[j] = true;
                kept.insert(c.name.as_str());
                let mut free = patterns[j].clone();
                for (k, n) in &has {
                    if let Some(m) = free.get_mut(k) {
                        *m -= n;
                    }
                }
                slots.free.push(free);
                slots.node.push(Dest::Node(c.name.clone()));
            }
        }
        for (j, _) in claims.iter().enumerate().filter(|(j, _)| !matched[*j]) {
            slots.launch.insert(j, patterns[j].clone());
        }
        let removable: Vec<&'a Candidate> = all
            .iter()
            .copied()
            .filter(|c| !kept.contains(c.name.as_str()))
            .collect();
        let now: f64 = all.iter().filter_map(|c| c.price()).sum();
        let target: f64 = all
            .iter()
            .filter(|c| kept.contains(c.name.as_str()))
            .filter_map(|c| c.price())
            .sum::<f64>()
            + slots.launch.keys().map(|&j| worst[j]).sum::<f64>();
        if removable.is_empty() || target >= now - EPSILON {
            return None;
        }
        let demand = |k: usize| &classes[removable[k].name.as_str()];
        let counts = |k: usize| -> Vec<(&PodClass, usize)> {
            demand(k).iter().map(|(c, v)| (c, v.len())).collect()
        };
        let alone = |k: usize| {
            slots
                .clone()
                .place(&counts(k), &worst)
                .map_or(f64::NEG_INFINITY, |(cost, _)| {
                    removable[k].price().unwrap_or(0.0) - cost
                })
        };
        let mut order: Vec<(f64, usize)> = (0..removable.len()).map(|k| (alone(k), k)).collect();
        order.retain(|(v, _)| v.is_finite());
        order.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| removable[a.1].name.cmp(&removable[b.1].name))
        });
        // The step: the candidates saving on their own first, then those that launch nodes
        // while the step still saves, within the budgets.
        let mut budgets = self.budgets.clone();
        let mut step: Vec<usize> = Vec::new();
        let mut dest: BTreeMap<String, Dest> = BTreeMap::new();
        let mut opened: BTreeSet<usize> = BTreeSet::new();
        let mut saves = 0.0;
        for must_save in [true, false] {
            for &(_, k) in &order {
                if step.contains(&k) {
                    continue;
                }
                let mut trial = slots.clone();
                let Some((cost, placed)) = trial.place(&counts(k), &worst) else {
                    continue;
                };
                let marginal = removable[k].price().unwrap_or(0.0) - cost;
                let ok = if must_save {
                    marginal > EPSILON
                } else {
                    saves + marginal > EPSILON
                };
                // take_budget takes a disruption only when one is left.
                if !ok || !take_budget(&mut budgets, removable[k]) {
                    continue;
                }
                step.push(k);
                saves += marginal;
                for j in trial.launched_since(&slots) {
                    opened.insert(j);
                }
                slots = trial;
                // Hand out the class's pods to the places found, in order.
                for (class, places) in placed {
                    let Some(pods_of) = demand(k).get(&class) else {
                        continue;
                    };
                    let mut it = pods_of.iter();
                    for (to, n) in places {
                        for &i in it.by_ref().take(n) {
                            dest.insert(pods[i].key(), to.clone());
                        }
                    }
                }
            }
        }
        if step.is_empty() {
            return None;
        }
        step.sort_unstable();
        let nodes: Vec<&'a Candidate> = step.iter().map(|&k| removable[k]).collect();
        self.toward_trial(&nodes, &dest, claims, &opened)
    }

    /// Remove `nodes` and place each pod that was running on them where `dest` says: an
    /// existing node, or one of `claims` (those in `opened`), launched on exactly its cheapest
    /// offering; with the scheduler's checks. `None` when a pod does not fit or the step would
    /// not be strictly cheaper at its worst-case launch prices.
    fn toward_trial(
        &self,
        nodes: &[&'a Candidate],
        dest: &BTreeMap<String, Dest>,
        claims: &[NewNodeClaim],
        opened: &BTreeSet<usize>,
    ) -> Option<Trial<'a>> {
        let (snapshot, was_running) = without(self.input, nodes, self.now);
        let (new_nodeclaims, existing) = {
            let mut replay = Replay::new(&snapshot, &self.options.scheduler, &[], &[]);
            let mut ids: BTreeMap<usize, usize> = BTreeMap::new();
            for &j in opened {
                let like = &claims[j];
                let id = replay
                    .open_with(&like.hostname, &like.nodepool, exactly(like), Vec::new())
                    .ok()?;
                ids.insert(j, id);
            }
            let mut pods: Vec<usize> = was_running.keys().copied().collect();
            pods.sort_by(|&a, &b| {
                larger_first(&snapshot.pods[a].requests, &snapshot.pods[b].requests).then(a.cmp(&b))
            });
            for p in pods {
                match dest.get(&snapshot.pods[p].key())? {
                    Dest::Node(n) => replay.add_existing(n, p).ok()?,
                    Dest::Claim(j) => replay.add(*ids.get(j)?, p).ok()?,
                }
            }
            replay.finish_with_existing().ok()?
        };
        let sim = Simulation {
            snapshot,
            results: SchedulingResults {
                new_nodeclaims,
                existing,
                ..SchedulingResults::default()
            },
            was_running,
        };
        self.priced(nodes, sim)
    }

    /// The staged search, for pools whose budget is smaller than the move that would save
    /// (no prefix and no exchange saves): every candidate is re-packed together, budget
    /// ignored, by the provisioning scheduler. For each offering that re-pack
    /// uses (instance type and capacity type), one new node of it is filled greedily with whole
    /// candidates (their reschedulable pods), densest first (price over the share of the node
    /// they take: the largest share, the sum of the shares, then each resource's share in turn;
    /// the dearest fill wins) while the budgets allow, then improved by adding a candidate that
    /// still fits or swapping one for a dearer one that fits in its place. When the fill costs
    /// more than the node's worst-case launch price, its pods are placed on a NodeClaim of
    /// exactly that offering with the scheduler's checks: a step toward the re-pack that saves
    /// on its own, and whose room later passes may fill. The step saving most wins; the search
    /// is skipped past [`STAGED_MAX_CANDIDATES`] candidates.
    fn staged(&self, ordered: &[(Load, &'a Candidate)]) -> Option<Trial<'a>> {
        if ordered.len() < 2 || ordered.len() > STAGED_MAX_CANDIDATES {
            return None;
        }
        let all: Vec<&'a Candidate> = ordered.iter().map(|(_, c)| *c).collect();
        let target = self.simulation(&all, None);
        if target.running_pod_failure().is_some() {
            return None;
        }
        // One NodeClaim per offering the target uses (its first), in the target's order.
        let mut likes: Vec<&NewNodeClaim> = Vec::new();
        for c in &target.results.new_nodeclaims {
            if !likes.iter().any(|l| {
                l.cheapest.instance_type == c.cheapest.instance_type
                    && l.cheapest.capacity_type == c.cheapest.capacity_type
            }) {
                likes.push(c);
            }
        }
        let pods = &self.input.snapshot.pods;
        let requests: Vec<crate::resources::Resources> = all
            .iter()
            .map(|c| {
                c.reschedulable
                    .iter()
                    .fold(crate::resources::Resources::new(), |acc, &i| {
                        acc.plus(&pods[i].requests)
                    })
            })
            .collect();
        // The node requirements of each candidate's pods (a quick filter; the scheduler's own
        // checks decide).
        let needs: Vec<Vec<crate::requirements::Requirements>> = all
            .iter()
            .map(|c| {
                c.reschedulable
                    .iter()
                    .map(|&i| pods[i].strict_requirements())
                    .collect()
            })
            .collect();
        let mut best: Option<Trial<'a>> = None;
        for like in likes {
            let Some(it) = like
                .instance_types
                .iter()
                .find(|t| t.name == like.cheapest.instance_type)
            else {
                continue;
            };
            let Some((_, worst)) = pin(like) else {
                continue;
            };
            let step = self.fill(&all, &requests, &needs, like, it.allocatable());
            let price: f64 = step.iter().filter_map(|c| c.price()).sum();
            if step.len() < 2 || worst >= price - EPSILON {
                continue;
            }
            if let Some(t) = self.staged_trial(&step, like) {
                if best
                    .as_ref()
                    .is_none_or(|b| t.savings > b.savings + EPSILON)
                {
                    best = Some(t);
                }
            }
        }
        best
    }

    /// The staged search's fill of one new node like `like` (allocatable `alloc`): whole
    /// candidates of `all` (their pods' summed `requests` and node requirements `needs`) that
    /// fit it, within the budgets, chosen greedily densest first under each share measure and
    /// improved by adds and swaps (see [`Pass::staged`]); the dearest fill.
    fn fill(
        &self,
        all: &[&'a Candidate],
        requests: &[crate::resources::Resources],
        needs: &[Vec<crate::requirements::Requirements>],
        like: &NewNodeClaim,
        alloc: &crate::resources::Resources,
    ) -> Vec<&'a Candidate> {
        let node = exactly(like);
        // Candidates that fit the new node on their own, with each resource's share of it.
        let fitting: Vec<(usize, BTreeMap<&str, f64>)> = (0..all.len())
            .filter(|&i| {
                like.daemon_overhead.plus(&requests[i]).fits_in(alloc)
                    && needs[i]
                        .iter()
                        .all(|r| node.compatible(r, &|_| true).is_ok())
            })
            .map(|i| {
                let shares = requests[i]
                    .iter()
                    .filter(|(_, amount)| *amount > 0)
                    .map(|(name, amount)| (name, amount as f64 / alloc.get(name) as f64))
                    .collect();
                (i, shares)
            })
            .collect();
        // Fill the node greedily, densest first, by the largest share and by each
        // resource's share in turn; the fullest fill (by price) is the step.
        let mut keys: Vec<Share> = vec![Share::Largest, Share::Total];
        keys.extend(
            alloc
                .iter()
                .filter(|(n, a)| {
                    *a > 0
                        && *n != crate::resources::names::PODS
                        && *n != crate::resources::names::EPHEMERAL_STORAGE
                })
                .map(|(n, _)| Share::Of(n)),
        );
        let mut step: Vec<&'a Candidate> = Vec::new();
        let mut step_price = 0.0;
        for key in keys {
            let mut order: Vec<(f64, usize)> = fitting
                .iter()
                .map(|(i, shares)| {
                    let share = match key {
                        Share::Largest => shares.values().copied().fold(0.0, f64::max),
                        Share::Total => shares.values().sum(),
                        Share::Of(k) => shares.get(k).copied().unwrap_or(0.0),
                    };
                    let price = all[*i].price().unwrap_or(0.0);
                    let density = if share > 0.0 {
                        price / share
                    } else {
                        f64::INFINITY
                    };
                    (density, *i)
                })
                .collect();
            order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut budgets = self.budgets.clone();
            let mut used = like.daemon_overhead.clone();
            let mut picked: Vec<usize> = Vec::new();
            for &(_, i) in &order {
                let with = used.plus(&requests[i]);
                if with.fits_in(alloc) && take_budget(&mut budgets, all[i]) {
                    used = with;
                    picked.push(i);
                }
            }
            // Then add a candidate that still fits, or swap a picked one for a dearer one
            // that fits in its place, while one does (each raises the fill's price, so this
            // ends).
            let price_of = |i: usize| all[i].price().unwrap_or(0.0);
            // Whether the budgets allow `picked` with `j` added, or in place of its `k`-th;
            // asked only of fills that fit.
            let within = |picked: &[usize], k: Option<usize>, j: usize| {
                let mut set: Vec<&'a Candidate> = picked.iter().map(|&i| all[i]).collect();
                match k {
                    Some(k) => set[k] = all[j],
                    None => set.push(all[j]),
                }
                self.within_budget(&set)
            };
            'swaps: loop {
                for &(_, j) in &order {
                    if picked.contains(&j) {
                        continue;
                    }
                    let with = used.plus(&requests[j]);
                    if with.fits_in(alloc) && within(&picked, None, j) {
                        used = with;
                        picked.push(j);
                        continue 'swaps;
                    }
                }
                for k in 0..picked.len() {
                    let out = picked[k];
                    for &(_, j) in &order {
                        if picked.contains(&j) || price_of(j) <= price_of(out) + EPSILON {
                            continue;
                        }
                        let with = used.minus(&requests[out]).plus(&requests[j]);
                        if with.fits_in(alloc) && within(&picked, Some(k), j) {
                            used = with;
                            picked[k] = j;
                            continue 'swaps;
                        }
                    }
                }
                break;
            }
            let chosen: Vec<&'a Candidate> = picked.iter().map(|&i| all[i]).collect();
            let price: f64 = chosen.iter().filter_map(|c| c.price()).sum();
            if price > step_price + EPSILON {
                step = chosen;
                step_price = price;
            }
        }
        step
    }

    /// Remove `nodes` and place every pod that was running on them on one NodeClaim of exactly
    /// `like`'s cheapest offering (its pool, requirements and hostname), with the scheduler's
    /// checks; `None` when a pod does not fit or the node would not be strictly cheaper at its
    /// worst-case launch price.
    fn staged_trial(&self, nodes: &[&'a Candidate], like: &NewNodeClaim) -> Option<Trial<'a>> {
        let pods = &self.input.snapshot.pods;
        let dest: BTreeMap<String, Dest> = nodes
            .iter()
            .flat_map(|c| c.reschedulable.iter())
            .map(|&i| (pods[i].key(), Dest::Claim(0)))
            .collect();
        self.toward_trial(
            nodes,
            &dest,
            std::slice::from_ref(like),
            &BTreeSet::from([0]),
        )
    }

    /// Whether the budgets allow disrupting all of `nodes` at once (each for its own reason).
    fn within_budget(&self, nodes: &[&Candidate]) -> bool {
        let mut budgets = self.budgets.clone();
        nodes.iter().all(|c| take_budget(&mut budgets, c))
    }

    /// Karpenter's multi-node then single-node consolidation over the current scope.
    fn karpenter_consolidation(&mut self) -> Option<Command> {
        if let Some(why) = self.pending_blocker() {
            for c in self.consolidatable() {
                self.note(&c.name, why.clone());
            }
            return None;
        }
        self.multi_node().or_else(|| self.single_node())
    }

    /// The consolidation step of a pass: Karpenter's methods for `karpenter` pools; for `global`
    /// pools the better of the global consolidator and Karpenter's methods, when it clears the
    /// savings threshold (a step toward the global target, else the command saving most); the
    /// command saving most of the two.
    pub fn consolidation(&mut self) -> Option<Command> {
        let pools: BTreeSet<String> = self
            .candidates
            .iter()
            .map(|c| c.facts.nodepool.clone())
            .collect();
        let (global, karpenter): (BTreeSet<String>, BTreeSet<String>) = pools
            .into_iter()
            .partition(|p| self.mode_of(p) == Mode::Global);
        let mut best: Option<Command> = None;
        if !karpenter.is_empty() {
            self.scope = Some(karpenter);
            best = self.karpenter_consolidation();
        }
        if !global.is_empty() {
            self.scope = Some(global);
            // Karpenter's methods first, so the reasons the global consolidator notes win.
            let k = self.karpenter_consolidation();
            let g = self.global();
            let chosen = match (g, k) {
                (Some(g), Some(k))
                    if !self.aimed && k.savings_per_hour > g.savings_per_hour + EPSILON =>
                {
                    Some(k)
                }
                (Some(g), _) => Some(g),
                (None, k) => k,
            };
            if let Some(c) = chosen {
                let names: Vec<&str> = c.candidates.iter().map(String::as_str).collect();
                let required = self.required_savings(&names);
                if c.savings_per_hour < required - EPSILON {
                    for n in &c.candidates {
                        self.note(
                            n,
                            format!(
                                "Consolidation would save ${:.4}/h, below the savings threshold ${:.4}/h",
                                c.savings_per_hour, required
                            ),
                        );
                    }
                } else if best
                    .as_ref()
                    .is_none_or(|b| c.savings_per_hour > b.savings_per_hour + EPSILON)
                {
                    best = Some(c);
                }
            }
        }
        self.scope = None;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_sizes;

    #[test]
    fn prefix_sizes_grow_geometrically_and_end_with_n() {
        assert_eq!(prefix_sizes(1), [1]);
        assert_eq!(prefix_sizes(5), [1, 2, 3, 4, 5]);
        assert_eq!(prefix_sizes(40), [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 40]);
        let big = prefix_sizes(1000);
        assert!(big.len() < 25, "{big:?}");
        assert!(big.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(big.last(), Some(&1000));
    }
}
