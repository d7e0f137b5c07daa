//! The MILP packer: a pattern (cutting-stock) formulation over pod groups and instance types,
//! solved by column generation and an integer master problem in HiGHS.
//!
//! 1. Run the FFD scheduler. Pods whose constraints the MILP does not model (topology spread,
//!    pod affinity, anti-affinity other than on hostname, preferences, pods other pods' topology
//!    selects) keep their FFD NodeClaims; the other pods on those NodeClaims may move, and the
//!    kept NodeClaims' instance types are recomputed for what stays.
//! 2. The other pods form *groups* (same requests, requirements, tolerations, host ports,
//!    hostname anti-affinity, NodePool). A *pattern* is an instance type of a NodePool plus a
//!    count per group that fits its allocatable minus the daemonset overhead, respecting host
//!    ports and hostname anti-affinity (conflicting groups never share a node).
//! 3. Column generation: the LP master covers every group's demand at least once, within the
//!    NodePools' limits; a greedy multi-dimensional knapsack prices new patterns from the duals.
//! 4. Diving: fix the LP's whole nodes (or round up its largest fractional one), re-solve the
//!    pods left with a few rounds of column generation, repeat; a small integer master finishes
//!    when the time runs out. The integer master over every pattern (warm-started from the
//!    cheaper of the FFD plan and the dive's, with a time limit and a gap) picks pattern counts
//!    too; the cheaper of the two is kept (the dive's on a tie). Pods are assigned to the chosen nodes and replayed through the scheduler's own
//!    checks; the plan is validated. If anything fails, or the plan is not cheaper, FFD stands.
//!
//! Column generation starts from the *fluid* LP (fractional nodes of each config, fractional pods
//! of each group on them, whole-pod fit counts as cuts), tightened by *pattern cuts*: per config,
//! a small column generation tries to cover the fluid optimum's per-node mix with whole patterns;
//! when it cannot with one node, its duals give a row every plan satisfies and the optimum breaks.
//! The patterns found there, and the per-node mixes rounded, seed the pattern LP. The lower
//! bound is the larger of the fluid LP's optimum (with its cuts) and Farley's bound on the LP
//! relaxation of the pattern formulation, both over every pod the plan places (topology ignored,
//! every compatible NodePool allowed), valid whenever no existing node has free capacity;
//! otherwise the per-unit price bound.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use good_lp::solvers::{DualValues, SolutionWithDual};
use good_lp::{
    highs, variable, Constraint, Expression, ProblemVariables, Solution, SolverModel, Variable,
    WithInitialSolution,
};

use super::{lower_bound_per_hour, PackResult, PackStats, Packer};
use crate::cloud::InstanceType;
use crate::cluster::{ClusterSnapshot, NodePool};
use crate::labels;
use crate::pod::{LabelSelector, NamespaceSet, Pod};
use crate::requirements::Requirements;
use crate::resources::Resources;
use crate::scheduling::larger_first;
use crate::scheduling::replay::Replay;
use crate::scheduling::{
    daemon_overhead, schedule, NewNodeClaim, SchedulerOptions, SchedulingResults,
};
use crate::taints::{first_untolerated, Effect};
use crate::validation::validate;

/// Column-generation rounds of the lower bound computed outside a packing run.
pub(super) const BOUND_ROUNDS: usize = 60;
/// Patterns above its threshold a pricing search keeps besides its best (extra columns).
const EARLIER_INCUMBENTS: usize = 4;
/// Search nodes the branch-and-bound pricing may visit before HiGHS takes over.
const SEARCH_NODES: usize = 3_000;
/// Rounds of pattern cuts on the fluid LP.
const CUT_ROUNDS: usize = 20;
/// Column-generation rounds of one cut separation.
const SEPARATION_ROUNDS: usize = 30;
/// Column-generation rounds per diving step.
const DIVE_ROUNDS: usize = 2;
/// Configs whose pricing bound Farley's bound refines (the most promising ones).
const REFINED_CONFIGS: usize = 400;

/// A monotonic clock in seconds, injected so that the core never reads the time itself.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> f64 + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The MILP packer.
#[derive(Debug, Clone)]
pub struct Milp {
    /// Scheduler options (also used for the FFD start).
    pub options: SchedulerOptions,
    /// Time limit of the integer master, in seconds.
    pub time_limit_secs: f64,
    /// Relative MIP gap at which the integer master stops.
    pub mip_gap: f64,
    /// Maximum column-generation rounds.
    pub max_rounds: usize,
    /// Wall-clock budget of the whole run per 1 000 pending pods (scaled linearly between 1 000
    /// and 5 000 pods, never below this value), in seconds, enforced when a [`Clock`] is given:
    /// pattern cuts on the fluid LP stop at 40 % of it, column generation at 65 %, Farley's
    /// bound at 70 %, diving at 90 % (then an
    /// integer master of what it left gets 5 % of `time_limit_secs`), and the integer master
    /// over every pattern gets what is left (at least 0.2 s, at most `time_limit_secs`).
    pub budget_secs: f64,
    /// The clock for `budget_secs`; without one only the round and time limits apply.
    pub clock: Option<Clock>,
}

impl Default for Milp {
    fn default() -> Self {
        Milp {
            options: SchedulerOptions::default(),
            time_limit_secs: 1.5,
            mip_gap: 0.002,
            max_rounds: 400,
            budget_secs: 1.5,
            clock: None,
        }
    }
}

impl Milp {
    /// Use `clock` to enforce `budget_secs`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }
}

/// Pods with identical requests and modelled constraints.
#[derive(Debug, Clone)]
struct Group {
    pods: Vec<usize>,
    requests: Resources,
    /// NodePools (indices into the snapshot) the group may use.
    pools: Vec<usize>,
    /// Requirement class (0 = nothing beyond the pool's template).
    class: usize,
    /// At most this many per node (host ports or self anti-affinity), if limited.
    per_node: Option<u32>,
    /// Groups it may not share a node with.
    conflicts: BTreeSet<usize>,
    /// The pods' strict requirements.
    reqs: Requirements,
    /// A bundle: the constrained pods of one FFD NodeClaim, placed together exactly once.
    bundle: bool,
    /// How many times the group must be covered: its pod count, 1 for a bundle.
    demand: usize,
}

impl Group {
    /// The most pods of the group one node may hold: its demand, or less under a per-node limit.
    fn most_per_node(&self) -> u32 {
        let demand = u32::try_from(self.demand).unwrap_or(u32::MAX);
        self.per_node.map_or(demand, |l| l.min(demand))
    }
}

/// An instance type of a NodePool under a requirement class.
#[derive(Debug, Clone)]
struct Config {
    pool: usize,
    class: usize,
    it: Arc<InstanceType>,
    price: f64,
    /// Allocatable minus daemonset overhead.
    room: Resources,
}

/// Whether `a` has at least as much of every resource as `b`.
fn covers(a: &Resources, b: &Resources) -> bool {
    b.fits_in(a)
        && b.extended
            .iter()
            .all(|(k, v)| a.extended.get(k).copied().unwrap_or(0) >= *v)
}

/// Keep only configs no other config of the same pool and class dominates (cheaper or equal and
/// with at least as much room); ties keep the first by price then name.
fn prune_dominated(mut configs: Vec<Config>) -> Vec<Config> {
    configs.sort_by(|a, b| {
        (a.pool, a.class)
            .cmp(&(b.pool, b.class))
            .then(a.price.total_cmp(&b.price))
            .then_with(|| a.it.name.cmp(&b.it.name))
    });
    let mut kept: Vec<Config> = Vec::with_capacity(configs.len());
    for c in configs {
        let dominated = kept.iter().any(|k| {
            k.pool == c.pool && k.class == c.class && k.price <= c.price && covers(&k.room, &c.room)
        });
        if !dominated {
            kept.push(c);
        }
    }
    kept
}

/// Constrained pods that stay together on a NodeClaim of the FFD plan (its requirements, e.g. a
/// pinned zone, kept), which the MILP may still fill with movable pods or move to another type.
#[derive(Debug, Clone)]
struct Bundle {
    pods: Vec<usize>,
    pool: usize,
    requirements: Requirements,
    /// The FFD NodeClaim it comes from (hostname).
    hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pattern {
    config: usize,
    counts: Vec<(usize, u32)>,
}

/// The optimum of the fluid LP ([`Model::fluid`]).
struct Fluid {
    /// Its value: a lower bound on the cost of every plan of the model's pods.
    value: f64,
    /// Cover duals (per group).
    duals: Vec<f64>,
    /// Per config used: fractional node count and pods per group on those nodes.
    nodes: BTreeMap<usize, (f64, Vec<(usize, f64)>)>,
    /// Patterns found separating its per-node mixes (columns for the pattern LP).
    patterns: Vec<Pattern>,
}

/// The formulation: groups, configs, patterns.
struct Model {
    groups: Vec<Group>,
    configs: Vec<Config>,
    /// Configs each group fits on.
    fits: Vec<Vec<usize>>,
    patterns: Vec<Pattern>,
    seen: BTreeSet<Pattern>,
    /// Per pool: remaining resource limits and node count (None: unlimited).
    limits: BTreeMap<usize, (BTreeMap<String, i64>, Option<i64>)>,
    /// Objective of the last LP master (over the patterns generated so far).
    lp_value: f64,
    /// The best Farley bound column generation proved on the way (0 if none).
    cg_bound: f64,
    /// Whether every column-generation round also searches the configs that bound Farley's θ
    /// (more columns and a bound, at the cost of the searches).
    bound_rounds: bool,
    /// Pattern counts of the last LP master (patterns added since count 0).
    lp_solution: Vec<f64>,
}

fn res_key(r: &Resources) -> (i64, i64, i64, i64, Vec<(String, i64)>) {
    (
        r.cpu,
        r.memory,
        r.ephemeral_storage,
        r.pods,
        r.extended.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    )
}

/// Whether a selector of `owner` matches `pod` (namespace rules applied).
fn selects(sel: Option<LabelSelector>, ns: &NamespaceSet, pod: &Pod) -> bool {
    sel.is_some_and(|s| ns.contains(&pod.namespace) && s.matches(&pod.labels))
}

/// Whether the MILP can move this pod freely (see the module docs).
fn is_free(snapshot: &ClusterSnapshot, pod: &Pod) -> bool {
    let simple = pod.topology_spread.is_empty()
        && pod.pod_affinity.is_empty()
        && pod.preferred_pod_affinity.is_empty()
        && pod.preferred_pod_anti_affinity.is_empty()
        && pod.preferred_node_affinity.is_empty()
        && pod.required_node_affinity.len() <= 1
        && pod
            .pod_anti_affinity
            .iter()
            .all(|t| t.topology_key == labels::HOSTNAME);
    if !simple {
        return false;
    }
    // Nobody's topology may count or target this pod, except hostname anti-affinity.
    !snapshot.pods.iter().any(|o| {
        o.topology_spread.iter().any(|t| {
            o.namespace == pod.namespace
                && o.spread_selector(t).is_some_and(|s| s.matches(&pod.labels))
        }) || o
            .pod_affinity
            .iter()
            .chain(o.preferred_pod_affinity.iter().map(|w| &w.term))
            .any(|t| {
                selects(
                    o.term_selector(t),
                    &o.term_namespaces(t, &snapshot.namespaces),
                    pod,
                )
            })
            || o.pod_anti_affinity
                .iter()
                .chain(o.preferred_pod_anti_affinity.iter().map(|w| &w.term))
                .any(|t| {
                    t.topology_key != labels::HOSTNAME
                        && selects(
                            o.term_selector(t),
                            &o.term_namespaces(t, &snapshot.namespaces),
                            pod,
                        )
                })
    })
}

/// Keys of the pod's requirements that the pool's template already implies are dropped.
fn class_requirements(template: &Requirements, pod: &Requirements) -> Requirements {
    pod.iter()
        .filter(|r| !template.get(r.key()).is_some_and(|t| t.is_subset_of(r)))
        .cloned()
        .collect()
}

/// Whether instance type `it` can carry a node with requirements `reqs` (its labels intersect;
/// provider labels it lacks count as absent).
fn type_matches(it: &InstanceType, reqs: &Requirements, provider_keys: &BTreeSet<String>) -> bool {
    reqs.iter().all(|r| match it.requirements.get(r.key()) {
        Some(t) => t.intersects(r),
        None => !provider_keys.contains(r.key()) || r.allows_absent(),
    })
}

fn provider_keys(pool: &NodePool) -> BTreeSet<String> {
    pool.instance_types
        .iter()
        .flat_map(|t| t.requirements.keys().map(str::to_string))
        .collect()
}

fn pool_accepts(pool: &NodePool, pod: &Pod, keys: &BTreeSet<String>) -> bool {
    let hard_taint = first_untolerated(&pool.taints, &pod.tolerations)
        .is_some_and(|t| t.effect != Effect::PreferNoSchedule);
    !hard_taint
        && pool
            .template_requirements()
            .compatible(&pod.strict_requirements(), &|k| {
                labels::is_well_known(k) || keys.contains(k)
            })
            .is_ok()
}

impl Model {
    /// Build groups of `pods` (each with its allowed pools) and every config they fit.
    ///
    /// `relaxed` builds the relaxation used for the lower bound: one config per (pool, type) at
    /// its cheapest offering under the template, and a group fits every type its own requirements
    /// allow (so groups of different requirements may share nodes, never raising the LP).
    fn new(
        snapshot: &ClusterSnapshot,
        pods: &[(usize, Vec<usize>)],
        bundles: &[Bundle],
        overheads: &[Resources],
        limits: BTreeMap<usize, (BTreeMap<String, i64>, Option<i64>)>,
        relaxed: bool,
    ) -> Self {
        let templates: Vec<Requirements> = snapshot
            .node_pools
            .iter()
            .map(NodePool::template_requirements)
            .collect();
        let keys: Vec<BTreeSet<String>> = snapshot.node_pools.iter().map(provider_keys).collect();
        // Classes are per pool; pods of one group share their pool set, so use the first pool's template.
        let mut class_ids: BTreeMap<Requirements, usize> = BTreeMap::new();
        class_ids.insert(Requirements::new(), 0);
        let mut classes: Vec<Requirements> = vec![Requirements::new()];
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for (p, pools) in pods {
            let pod = &snapshot.pods[*p];
            let strict = pod.strict_requirements();
            let class_reqs = pools
                .first()
                .map(|&pi| class_requirements(&templates[pi], &strict))
                .unwrap_or_default();
            let class = *class_ids.entry(class_reqs.clone()).or_insert_with(|| {
                classes.push(class_reqs.clone());
                classes.len() - 1
            });
            let mut ports = pod.host_ports.clone();
            ports.sort();
            let mut tols = pod.tolerations.clone();
            tols.sort();
            let key = format!(
                "{:?}|{pools:?}|{class}|{ports:?}|{tols:?}|{:?}|{:?}|{}",
                res_key(&pod.requests),
                pod.pod_anti_affinity,
                pod.labels,
                pod.namespace
            );
            match index.get(&key) {
                Some(&g) => groups[g].pods.push(*p),
                None => {
                    index.insert(key, groups.len());
                    groups.push(Group {
                        pods: vec![*p],
                        requests: pod.requests.clone(),
                        pools: pools.clone(),
                        class,
                        per_node: None,
                        conflicts: BTreeSet::new(),
                        reqs: strict.clone(),
                        bundle: false,
                        demand: 0,
                    });
                }
            }
        }
        for b in bundles {
            let class_reqs = class_requirements(&templates[b.pool], &b.requirements);
            let class = *class_ids.entry(class_reqs.clone()).or_insert_with(|| {
                classes.push(class_reqs.clone());
                classes.len() - 1
            });
            let requests = b.pods.iter().fold(Resources::new(), |acc, &p| {
                acc.plus(&snapshot.pods[p].requests)
            });
            groups.push(Group {
                pods: b.pods.clone(),
                requests,
                pools: vec![b.pool],
                class,
                per_node: Some(1),
                conflicts: BTreeSet::new(),
                reqs: b.requirements.clone(),
                bundle: true,
                demand: 1,
            });
        }
        for g in groups.iter_mut().filter(|g| !g.bundle) {
            g.demand = g.pods.len();
        }
        // Conflicts: host ports and hostname anti-affinity (both directions), over every pod of
        // a bundle and one pod of an ordinary group (its pods are identical).
        let n = groups.len();
        let members = |g: &Group| -> Vec<usize> {
            if g.bundle {
                g.pods.clone()
            } else {
                vec![g.pods[0]]
            }
        };
        for a in 0..n {
            for b in a..n {
                if a == b && groups[a].bundle {
                    continue;
                }
                let (ma, mb) = (members(&groups[a]), members(&groups[b]));
                let pair_conflicts = |pa: &Pod, pb: &Pod| {
                    let ports = pa
                        .host_ports
                        .iter()
                        .any(|x| pb.host_ports.iter().any(|y| x.conflicts(y)));
                    let anti = |o: &Pod, q: &Pod| {
                        o.pod_anti_affinity.iter().any(|t| {
                            selects(
                                o.term_selector(t),
                                &o.term_namespaces(t, &snapshot.namespaces),
                                q,
                            )
                        })
                    };
                    ports || anti(pa, pb) || anti(pb, pa)
                };
                let conflict = ma.iter().any(|&x| {
                    mb.iter()
                        .any(|&y| pair_conflicts(&snapshot.pods[x], &snapshot.pods[y]))
                });
                if conflict {
                    if a == b {
                        groups[a].per_node = Some(1);
                    } else {
                        groups[a].conflicts.insert(b);
                        groups[b].conflicts.insert(a);
                    }
                }
            }
        }
        // Configs: (pool, class, type) for every pool and class in use.
        let mut configs = Vec::new();
        let mut wanted: BTreeSet<(usize, usize)> = BTreeSet::new();
        for g in &groups {
            for &p in &g.pools {
                if !relaxed {
                    wanted.insert((p, g.class));
                }
                wanted.insert((p, 0));
            }
        }
        for &(p, class) in &wanted {
            let pool = &snapshot.node_pools[p];
            let reqs = templates[p].intersect(&classes[class]);
            for it in &pool.instance_types {
                if !type_matches(it, &reqs, &keys[p]) {
                    continue;
                }
                if let Some((lim, _)) = limits.get(&p) {
                    if lim.iter().any(|(k, v)| it.capacity.get(k) > *v) {
                        continue;
                    }
                }
                let Some(o) = it.cheapest_offering(&reqs) else {
                    continue;
                };
                let room = it.allocatable().minus(&overheads[p]);
                if room.cpu < 0 || room.memory < 0 || room.pods < 1 {
                    continue;
                }
                configs.push(Config {
                    pool: p,
                    class,
                    it: it.clone(),
                    price: o.price,
                    room,
                });
            }
        }
        // Drop dominated configs (another of the same pool and class is no dearer and has at least
        // as much room in every resource): they change neither the LP, the MILP nor Farley's θ.
        // In the relaxation, fits also depend on type labels, so only prune when no group has own
        // requirements there.
        if !relaxed
            || groups
                .iter()
                .all(|g| class_requirements(&templates[g.pools[0]], &g.reqs).is_empty())
        {
            configs = prune_dominated(configs);
        }
        let fits: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| {
                (0..configs.len())
                    .filter(|&k| {
                        let c = &configs[k];
                        let class_ok = if relaxed {
                            type_matches(
                                &c.it,
                                &templates[c.pool].intersect(&g.reqs),
                                &keys[c.pool],
                            )
                        } else {
                            g.class == 0 || g.class == c.class
                        };
                        g.pools.contains(&c.pool) && class_ok && g.requests.fits_in(&c.room)
                    })
                    .collect()
            })
            .collect();
        Model {
            groups,
            configs,
            fits,
            patterns: Vec::new(),
            seen: BTreeSet::new(),
            limits,
            lp_value: 0.0,
            cg_bound: 0.0,
            bound_rounds: true,
            lp_solution: Vec::new(),
        }
    }

    fn add_pattern(&mut self, p: Pattern) -> bool {
        if p.counts.is_empty() || self.seen.contains(&p) {
            return false;
        }
        self.seen.insert(p.clone());
        self.patterns.push(p);
        true
    }

    /// The most pods of group `g` alone that fit config `k`.
    fn single_count(&self, g: usize, k: usize) -> u32 {
        self.fit_count(g, &self.configs[k].room)
    }

    /// How many pods of group `g` fit in `room` (capped by the group's size and per-node limit).
    fn fit_count(&self, g: usize, room: &Resources) -> u32 {
        let grp = &self.groups[g];
        let r = &grp.requests;
        let mut n = i64::from(grp.most_per_node());
        for (need, have) in [
            (r.cpu, room.cpu),
            (r.memory, room.memory),
            (r.ephemeral_storage, room.ephemeral_storage),
            (r.pods, room.pods),
        ] {
            if need > 0 {
                n = n.min(have / need);
            }
        }
        for (name, need) in &r.extended {
            if *need > 0 {
                n = n.min(room.extended.get(name).copied().unwrap_or(0) / need);
            }
        }
        n.max(0) as u32
    }

    /// Seed patterns: each group alone on its cheapest-per-pod config.
    fn seed_single(&mut self) -> bool {
        for g in 0..self.groups.len() {
            if self.groups[g].demand == 0 {
                continue;
            }
            let mut best: Option<(f64, usize, u32)> = None;
            for &k in &self.fits[g] {
                let n = self.single_count(g, k);
                if n == 0 {
                    continue;
                }
                let per_pod = self.configs[k].price / f64::from(n);
                if best.is_none_or(|(b, _, _)| per_pod < b) {
                    best = Some((per_pod, k, n));
                }
            }
            let Some((_, k, n)) = best else { return false };
            self.add_pattern(Pattern {
                config: k,
                counts: vec![(g, n)],
            });
        }
        true
    }

    /// Greedy knapsack for config `k` under group values `value`; the best of a few orderings.
    fn price(&self, k: usize, value: &[f64]) -> Option<(f64, Pattern)> {
        let cfg = &self.configs[k];
        let room = &cfg.room;
        let cands: Vec<usize> = (0..self.groups.len())
            .filter(|&g| value[g] > 1e-12 && self.fits[g].binary_search(&k).is_ok())
            .collect();
        if cands.is_empty() {
            return None;
        }
        let size = |g: usize, mode: usize| -> f64 {
            let r = &self.groups[g].requests;
            let c = share(r.cpu, room.cpu);
            let m = share(r.memory, room.memory);
            let p = share(r.pods, room.pods);
            // Extended resources (GPUs): the largest share among them.
            let e = room
                .extended
                .iter()
                .map(|(name, cap)| share(r.extended.get(name).copied().unwrap_or(0), *cap))
                .fold(0.0, f64::max);
            match mode {
                0 => c.max(m).max(p).max(e),
                1 => c + m + p + e,
                2 => c,
                3 => m,
                _ => e,
            }
        };
        let modes = if room.extended.is_empty() { 4 } else { 5 };
        let mut best: Option<(f64, Pattern)> = None;
        for mode in 0..modes {
            let mut order = cands.clone();
            order.sort_by(|&a, &b| {
                (value[b] / size(b, mode).max(1e-12))
                    .total_cmp(&(value[a] / size(a, mode).max(1e-12)))
                    .then(a.cmp(&b))
            });
            let mut left = room.clone();
            let mut counts: Vec<(usize, u32)> = Vec::new();
            let mut total = 0.0;
            for g in order {
                if counts
                    .iter()
                    .any(|(h, _)| self.groups[g].conflicts.contains(h))
                {
                    continue;
                }
                let n = self.fit_count(g, &left);
                if n == 0 {
                    continue;
                }
                left = left.minus(&self.groups[g].requests.scaled(i64::from(n)));
                counts.push((g, n));
                total += value[g] * f64::from(n);
            }
            counts.sort_unstable();
            if best.as_ref().is_none_or(|(b, _)| total > *b) {
                best = Some((total, Pattern { config: k, counts }));
            }
        }
        best
    }

    /// The knapsack items of config `k` under `value`: (value, sizes as shares of the room per
    /// dimension, count bound), and the dimensions used (cpu, memory, pods, extended resources).
    fn items(&self, k: usize, value: &[f64]) -> Vec<(f64, Vec<f64>, f64)> {
        let room = &self.configs[k].room;
        let mut caps = vec![room.cpu as f64, room.memory as f64, room.pods as f64];
        let ext: Vec<&String> = room.extended.keys().collect();
        caps.extend(ext.iter().map(|n| room.extended[*n] as f64));
        (0..self.groups.len())
            .filter(|&g| value[g] > 0.0 && self.fits[g].binary_search(&k).is_ok())
            .map(|g| {
                let grp = &self.groups[g];
                let r = &grp.requests;
                let mut sizes = vec![r.cpu as f64, r.memory as f64, r.pods as f64];
                sizes.extend(
                    ext.iter()
                        .map(|n| r.extended.get(*n).copied().unwrap_or(0) as f64),
                );
                let shares = sizes
                    .iter()
                    .zip(&caps)
                    .map(|(s, c)| if *c > 0.0 { s / c } else { 0.0 })
                    .collect();
                (value[g], shares, f64::from(grp.most_per_node()))
            })
            .collect()
    }

    /// An upper bound on the value of any pattern of config `k`: the best fractional knapsack
    /// over a single dimension (each dimension's capacity is 1 after scaling).
    fn price_upper_bound(&self, k: usize, value: &[f64]) -> f64 {
        let items = self.items(k, value);
        let dims = items.first().map_or(0, |i| i.1.len());
        let mut best = f64::INFINITY;
        for dim in 0..dims {
            let mut total: f64 = items
                .iter()
                .filter(|i| i.1[dim] <= 0.0)
                .map(|i| i.0 * i.2)
                .sum();
            let mut sorted: Vec<&(f64, Vec<f64>, f64)> =
                items.iter().filter(|i| i.1[dim] > 0.0).collect();
            sorted.sort_by(|a, b| (b.0 / b.1[dim]).total_cmp(&(a.0 / a.1[dim])));
            let mut left = 1.0;
            for (v, s, u) in sorted {
                if left <= 0.0 {
                    break;
                }
                let take = (left / s[dim]).min(*u);
                total += v * take;
                left -= take * s[dim];
            }
            best = best.min(total);
        }
        if dims == 0 {
            0.0
        } else {
            best
        }
    }

    /// Capacity and per-candidate sizes of every resource dimension (cpu, memory, optionally
    /// ephemeral storage, pods, extended resources of the room).
    fn dimensions(
        &self,
        room: &Resources,
        cands: &[usize],
        with_storage: bool,
    ) -> Vec<(i64, Vec<i64>)> {
        let sizes = |f: &dyn Fn(&Resources) -> i64| {
            cands
                .iter()
                .map(|&g| f(&self.groups[g].requests))
                .collect::<Vec<i64>>()
        };
        let mut dims = vec![
            (room.cpu, sizes(&|r| r.cpu)),
            (room.memory, sizes(&|r| r.memory)),
        ];
        if with_storage {
            dims.push((room.ephemeral_storage, sizes(&|r| r.ephemeral_storage)));
        }
        dims.push((room.pods, sizes(&|r| r.pods)));
        for (name, cap) in &room.extended {
            dims.push((*cap, sizes(&|r| r.extended.get(name).copied().unwrap_or(0))));
        }
        dims
    }

    /// Solve the pricing problem of config `k` by depth-first branch and bound over pod counts
    /// (fast when a node holds few pods): the best pattern found within `max_nodes` search nodes,
    /// and whether the search finished (proving it the most valuable under `value`). Earlier
    /// incumbents worth more than `threshold` (the last few) come back as well: more columns
    /// from one search.
    fn search(
        &self,
        k: usize,
        value: &[f64],
        max_nodes: usize,
        threshold: f64,
        keep: usize,
    ) -> Searched {
        let room = &self.configs[k].room;
        let mut cands: Vec<usize> = (0..self.groups.len())
            .filter(|&g| value[g] > 1e-12 && self.fits[g].binary_search(&k).is_ok())
            .collect();
        let dims = self.dimensions(room, &cands, true);
        let caps: Vec<i64> = dims.iter().map(|(c, _)| *c).collect();
        let size_of = |i: usize| -> Vec<i64> { dims.iter().map(|(_, s)| s[i]).collect() };
        let mut items: Vec<(usize, f64, Vec<i64>, u32)> = cands
            .iter()
            .enumerate()
            .map(|(i, &g)| (g, value[g], size_of(i), self.groups[g].most_per_node()))
            .collect();
        let density = |it: &(usize, f64, Vec<i64>, u32)| {
            let worst =
                it.2.iter()
                    .zip(&caps)
                    .map(|(s, c)| *s as f64 / (*c).max(1) as f64)
                    .fold(0.0, f64::max);
            it.1 / worst.max(1e-12)
        };
        // Ties: the more valuable, then the smaller item first (so dominating items come first).
        let total = |it: &(usize, f64, Vec<i64>, u32)| -> f64 {
            it.2.iter()
                .zip(&caps)
                .map(|(s, c)| *s as f64 / (*c).max(1) as f64)
                .sum()
        };
        items.sort_by(|a, b| {
            density(b)
                .total_cmp(&density(a))
                .then(b.1.total_cmp(&a.1))
                .then(total(a).total_cmp(&total(b)))
                .then(a.0.cmp(&b.0))
        });
        cands = items.iter().map(|i| i.0).collect();
        let n = items.len();
        // A surrogate dimension: the knapsack LP's Lagrangian multipliers weigh every dimension
        // into one constraint `Σ w·size ≤ Σ w·left` that every pattern respects; its fractional
        // knapsack bounds the remaining items where two dimensions bind together.
        let shares: Vec<(f64, Vec<f64>, f64)> = items
            .iter()
            .map(|(_, v, sz, u)| {
                let share = sz
                    .iter()
                    .zip(&caps)
                    .map(|(s, c)| if *c > 0 { *s as f64 / *c as f64 } else { 0.0 })
                    .collect();
                (*v, share, f64::from(*u))
            })
            .collect();
        let (_, lambda) = knapsack_lagrangian(&shares);
        let weights: Vec<f64> = lambda
            .iter()
            .zip(&caps)
            .map(|(l, c)| if *c > 0 { l / *c as f64 } else { 0.0 })
            .collect();
        let surrogate: Vec<f64> = items
            .iter()
            .map(|(_, _, sz, _)| sz.iter().zip(&weights).map(|(s, w)| *s as f64 * w).sum())
            .collect();
        let mut by_surrogate: Vec<usize> = (0..n).collect();
        let sur_key = |i: usize| {
            if surrogate[i] > 0.0 {
                items[i].1 / surrogate[i]
            } else {
                f64::INFINITY
            }
        };
        by_surrogate.sort_by(|&a, &b| sur_key(b).total_cmp(&sur_key(a)).then(a.cmp(&b)));
        // Per dimension, suffix maxima of value per unit and suffix sums of the value of items
        // that need none of it: the bound of the remaining items in that dimension alone.
        // Per dimension, the items by value per unit of it (those needing none of it first).
        let nd = caps.len();
        let by_density: Vec<Vec<usize>> = (0..nd)
            .map(|d| {
                let mut order: Vec<usize> = (0..n).collect();
                let key = |i: usize| {
                    let (_, v, sz, _) = &items[i];
                    if sz[d] > 0 {
                        v / sz[d] as f64
                    } else {
                        f64::INFINITY
                    }
                };
                order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
                order
            })
            .collect();
        // Dominance: item `j` after `i` needs at least as much of every dimension, is worth no
        // more and conflicts with everything `i` does. While fewer than `i`'s count bound of `i`
        // are taken, a pattern with `j` is never better than the one with `i` in its place.
        let dominated: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                let (gi, vi, si, _) = &items[i];
                let a = &self.groups[*gi];
                (i + 1..n)
                    .filter(|&j| {
                        let (gj, vj, sj, _) = &items[j];
                        let b = &self.groups[*gj];
                        vi >= vj
                            && si.iter().zip(sj).all(|(x, y)| x <= y)
                            && !a.bundle
                            && !b.bundle
                            && !a.conflicts.contains(gj)
                            && !b.conflicts.contains(gi)
                            && a.conflicts.is_subset(&b.conflicts)
                    })
                    .collect()
            })
            .collect();
        struct Search<'a> {
            items: &'a [(usize, f64, Vec<i64>, u32)],
            dominated: &'a [Vec<usize>],
            /// Per item: how many chosen items (taken below their count bound) dominate it.
            banned: Vec<u32>,
            groups: &'a [Group],
            by_density: &'a [Vec<usize>],
            weights: &'a [f64],
            surrogate: &'a [f64],
            by_surrogate: &'a [usize],
            left: Vec<i64>,
            counts: Vec<u32>,
            value: f64,
            best: f64,
            best_counts: Vec<u32>,
            threshold: f64,
            /// The most valuable patterns above `threshold` seen so far (new incumbents and
            /// leaves), at most `keep`, by value descending.
            pool: Vec<(f64, Vec<u32>)>,
            keep: usize,
            /// Scratch for [`Search::bound`]: how many of each item still fit.
            fits: Vec<f64>,
            nodes: usize,
            max_nodes: usize,
        }
        impl Search<'_> {
            /// How many more pods of item `j` fit the room left (capped by its count bound).
            fn most(&self, j: usize) -> u32 {
                let (_, _, sz, u) = &self.items[j];
                let mut most = *u;
                for (s, l) in sz.iter().zip(&self.left) {
                    if *s > 0 {
                        most = most.min((*l / *s).max(0) as u32);
                    }
                }
                most
            }
            /// What the items from `i` on can add: the smallest of the fractional knapsacks on
            /// each dimension alone and on the surrogate dimension, each item capped by how many
            /// of it still fit whole (items that no longer fit drop out).
            fn bound(&mut self, i: usize) -> f64 {
                // Reused across search nodes (this runs at every one).
                let mut most = std::mem::take(&mut self.fits);
                most.clear();
                most.extend((0..self.items.len()).map(|j| {
                    if j < i || self.banned[j] > 0 {
                        0.0
                    } else {
                        f64::from(self.most(j))
                    }
                }));
                let fractional = |order: &[usize], mut left: f64, size: &dyn Fn(usize) -> f64| {
                    let mut total = 0.0;
                    for &j in order {
                        if most[j] <= 0.0 {
                            continue;
                        }
                        let v = self.items[j].1;
                        let s = size(j);
                        if s <= 0.0 {
                            total += v * most[j];
                            continue;
                        }
                        if left <= 0.0 {
                            break;
                        }
                        let take = (left / s).min(most[j]);
                        total += v * take;
                        left -= take * s;
                    }
                    total
                };
                let mut best = f64::INFINITY;
                if self.weights.iter().any(|w| *w > 0.0) {
                    let left: f64 = self
                        .left
                        .iter()
                        .zip(self.weights)
                        .map(|(l, w)| (*l).max(0) as f64 * w)
                        .sum();
                    best = fractional(self.by_surrogate, left, &|j| self.surrogate[j]);
                }
                for (d, order) in self.by_density.iter().enumerate() {
                    let left = self.left[d].max(0) as f64;
                    best = best.min(fractional(order, left, &|j| self.items[j].2[d] as f64));
                    if best <= 0.0 {
                        break;
                    }
                }
                self.fits = most;
                best
            }
            /// Keep the current pattern in the pool if it is among the `keep` most valuable.
            fn remember(&mut self) {
                if self.keep == 0 {
                    return;
                }
                if self.pool.len() == self.keep {
                    if self.pool.last().is_some_and(|(v, _)| *v >= self.value) {
                        return;
                    }
                    self.pool.pop();
                }
                let at = self.pool.partition_point(|(v, _)| *v >= self.value);
                self.pool.insert(at, (self.value, self.counts.clone()));
            }
            fn run(&mut self, mut i: usize) -> bool {
                self.nodes += 1;
                if self.nodes > self.max_nodes {
                    return false;
                }
                let incumbent = self.value > self.best;
                if incumbent {
                    self.best = self.value;
                    self.best_counts.clone_from(&self.counts);
                }
                // Items that no longer fit (or conflict with a chosen one) are skipped outright.
                let mut most = 0;
                while i < self.items.len() {
                    let g = self.items[i].0;
                    let blocked = (0..i).any(|j| {
                        self.counts[j] > 0 && self.groups[g].conflicts.contains(&self.items[j].0)
                    });
                    most = if blocked || self.banned[i] > 0 {
                        0
                    } else {
                        self.most(i)
                    };
                    if most > 0 {
                        break;
                    }
                    i += 1;
                }
                let leaf = i == self.items.len();
                if (incumbent || leaf) && self.value > self.threshold {
                    self.remember();
                }
                if leaf || self.value + self.bound(i) <= self.best + 1e-12 {
                    return true;
                }
                let (_, v, sz, cap) = &self.items[i];
                for c in (0..=most).rev() {
                    for (l, s) in self.left.iter_mut().zip(sz) {
                        *l -= *s * i64::from(c);
                    }
                    let ban = c < *cap;
                    if ban {
                        for &j in &self.dominated[i] {
                            self.banned[j] += 1;
                        }
                    }
                    self.counts[i] = c;
                    self.value += v * f64::from(c);
                    let ok = self.run(i + 1);
                    self.value -= v * f64::from(c);
                    self.counts[i] = 0;
                    if ban {
                        for &j in &self.dominated[i] {
                            self.banned[j] -= 1;
                        }
                    }
                    for (l, s) in self.left.iter_mut().zip(sz) {
                        *l += *s * i64::from(c);
                    }
                    if !ok {
                        return false;
                    }
                }
                true
            }
        }
        let mut search = Search {
            items: &items,
            dominated: &dominated,
            banned: vec![0; n],
            groups: &self.groups,
            by_density: &by_density,
            weights: &weights,
            surrogate: &surrogate,
            by_surrogate: &by_surrogate,
            left: caps.clone(),
            counts: vec![0; n],
            value: 0.0,
            best: 0.0,
            best_counts: vec![0; n],
            threshold,
            pool: Vec::new(),
            keep,
            fits: Vec::with_capacity(n),
            nodes: 0,
            max_nodes,
        };
        let proved = search.run(0);
        let pattern = |found: &[u32]| {
            let mut counts: Vec<(usize, u32)> = cands
                .iter()
                .zip(found)
                .filter(|(_, c)| **c > 0)
                .map(|(g, c)| (*g, *c))
                .collect();
            counts.sort_unstable();
            Pattern { config: k, counts }
        };
        Searched {
            value: search.best,
            pattern: pattern(&search.best_counts),
            earlier: search
                .pool
                .iter()
                .filter(|(_, c)| *c != search.best_counts)
                .map(|(_, c)| pattern(c))
                .collect(),
            proved,
        }
    }

    /// Solve the pricing problem of config `k` in HiGHS (a small MILP) within `time_limit`:
    /// an upper bound on the best pattern's value (HiGHS's dual bound, valid also when the time
    /// runs out), the value of the best pattern found and that pattern (empty if none), or `None`
    /// if HiGHS fails.
    fn exact_price(&self, k: usize, value: &[f64], time_limit: f64) -> Option<(f64, f64, Pattern)> {
        let room = &self.configs[k].room;
        let cands: Vec<usize> = (0..self.groups.len())
            .filter(|&g| value[g] > 1e-12 && self.fits[g].binary_search(&k).is_ok())
            .collect();
        if cands.is_empty() {
            return Some((
                0.0,
                0.0,
                Pattern {
                    config: k,
                    counts: Vec::new(),
                },
            ));
        }
        let limit = |g: usize| f64::from(self.groups[g].most_per_node());
        let mut vars = ProblemVariables::new();
        let a: Vec<Variable> = cands
            .iter()
            .map(|&g| vars.add(variable().integer().min(0).max(limit(g))))
            .collect();
        let objective: Expression = cands.iter().zip(&a).map(|(&g, v)| value[g] * *v).sum();
        let mut rows: Vec<Constraint> = Vec::new();
        let dims = self.dimensions(room, &cands, true);
        for (cap, sizes) in &dims {
            let e: Expression = sizes.iter().zip(&a).map(|(s, v)| *s as f64 * *v).sum();
            rows.push(e.leq(*cap as f64));
        }
        // Conflicting groups: binary indicators, at most one of each conflicting pair.
        let mut ind: BTreeMap<usize, Variable> = BTreeMap::new();
        for (i, &g) in cands.iter().enumerate() {
            if cands.iter().any(|h| self.groups[g].conflicts.contains(h)) {
                let y = vars.add(variable().binary());
                rows.push((Expression::from(a[i]) - limit(g) * y).leq(0.0));
                ind.insert(g, y);
            }
        }
        for (&g, &y) in &ind {
            for (&h, &z) in ind.range(g + 1..) {
                if self.groups[g].conflicts.contains(&h) {
                    rows.push((Expression::from(y) + z).leq(1.0));
                }
            }
        }
        let mut problem = vars.maximise(objective).using(highs);
        for r in rows {
            problem.add_constraint(r);
        }
        // HiGHS directly (good_lp drops the dual bound): quiet, one thread, the time limit.
        let mut model = problem.try_into_inner().ok()?;
        for (option, on) in [("output_flag", false), ("log_to_console", false)] {
            model.try_set_option(option, on).ok()?;
        }
        model.try_set_option("threads", 1).ok()?;
        model.try_set_option("time_limit", time_limit).ok()?;
        let solved = model.try_solve().ok()?;
        use ::highs::{HighsModelStatus as Status, HighsSolutionStatus};
        if !matches!(
            solved.status(),
            Status::Optimal | Status::ReachedTimeLimit | Status::ObjectiveBound
        ) {
            return None;
        }
        let dual_bound = solved.double_info_value(c"mip_dual_bound").ok()?;
        let mut counts: Vec<(usize, u32)> = Vec::new();
        let mut total = 0.0;
        if solved.primal_solution_status() == HighsSolutionStatus::Feasible {
            let solution = solved.get_solution();
            // The pod-count variables were added first: columns 0.. in `cands` order.
            for (&g, x) in cands.iter().zip(solution.columns()) {
                let n = x.round().max(0.0) as u32;
                if n > 0 {
                    counts.push((g, n));
                    total += value[g] * f64::from(n);
                }
            }
        }
        if !dual_bound.is_finite() {
            return None;
        }
        // A little slack for HiGHS's feasibility tolerances.
        let bound = dual_bound.max(total);
        Some((
            bound + (bound.abs() * 1e-6).max(1e-9),
            total,
            Pattern { config: k, counts },
        ))
    }

    /// Upper bounds from the exact one-dimensional bounded knapsack (integer counts) on each
    /// dimension whose capacity is small in units of the sizes' greatest common divisor; the
    /// fractional bound rounds away whole pods on small nodes, this does not.
    fn integer_upper_bound(&self, k: usize, value: &[f64]) -> f64 {
        const MAX_STATES: i64 = 5_000;
        let room = &self.configs[k].room;
        let cands: Vec<usize> = (0..self.groups.len())
            .filter(|&g| value[g] > 0.0 && self.fits[g].binary_search(&k).is_ok())
            .collect();
        let mut best = f64::INFINITY;
        let dims = self.dimensions(room, &cands, false);
        for (cap, weights) in dims {
            if cap <= 0 {
                continue;
            }
            let gcd = weights
                .iter()
                .filter(|w| **w > 0)
                .fold(0i64, |a, &b| gcd(a, b));
            if gcd == 0 {
                continue;
            }
            let slots = cap / gcd;
            if slots > MAX_STATES {
                continue;
            }
            let slots = slots as usize;
            let mut dp = vec![0.0f64; slots + 1];
            let mut free_value = 0.0;
            for (i, &g) in cands.iter().enumerate() {
                let count = self.groups[g].most_per_node() as usize;
                let w = weights[i] / gcd;
                if weights[i] <= 0 {
                    free_value += value[g] * count as f64;
                    continue;
                }
                // Binary splitting of the count into 0/1 items.
                let mut left = count;
                let mut chunk = 1usize;
                while left > 0 {
                    let take = chunk.min(left);
                    left -= take;
                    chunk *= 2;
                    let (wt, v) = (w as usize * take, value[g] * take as f64);
                    if wt > slots {
                        continue;
                    }
                    for c in (wt..=slots).rev() {
                        let cand = dp[c - wt] + v;
                        if cand > dp[c] {
                            dp[c] = cand;
                        }
                    }
                }
            }
            best = best.min(dp[slots] + free_value);
        }
        best
    }

    /// A tighter upper bound for config `k`: the Lagrangian dual of the multi-dimensional
    /// knapsack's LP relaxation (see [`knapsack_lagrangian`]), never above `start`.
    fn refined_upper_bound(&self, k: usize, value: &[f64], start: f64) -> f64 {
        knapsack_lagrangian(&self.items(k, value)).0.min(start)
    }

    /// Build the master problem over the current patterns.
    #[allow(clippy::type_complexity)]
    fn master(
        &self,
        integer: bool,
    ) -> (
        ProblemVariables,
        Vec<Variable>,
        Expression,
        Vec<Constraint>,
        Vec<Constraint>,
    ) {
        let mut vars = ProblemVariables::new();
        let x: Vec<Variable> = self
            .patterns
            .iter()
            .map(|_| {
                vars.add(if integer {
                    variable().integer().min(0)
                } else {
                    variable().min(0)
                })
            })
            .collect();
        let objective: Expression = self
            .patterns
            .iter()
            .zip(&x)
            .map(|(p, v)| self.configs[p.config].price * *v)
            .sum();
        let mut cover: Vec<Expression> = vec![Expression::from(0.0); self.groups.len()];
        for (p, v) in self.patterns.iter().zip(&x) {
            for &(g, n) in &p.counts {
                cover[g] += f64::from(n) * *v;
            }
        }
        let cover_rows: Vec<Constraint> = cover
            .into_iter()
            .enumerate()
            .map(|(g, e)| e.geq(self.groups[g].demand as f64))
            .collect();
        let mut limit_rows = Vec::new();
        for (&pool, (lim, nodes)) in &self.limits {
            for (name, left) in lim {
                let e: Expression = self
                    .patterns
                    .iter()
                    .zip(&x)
                    .filter(|(p, _)| self.configs[p.config].pool == pool)
                    .map(|(p, v)| self.configs[p.config].it.capacity.get(name) as f64 * *v)
                    .sum();
                limit_rows.push(e.leq(*left as f64));
            }
            if let Some(n) = nodes {
                let e: Expression = self
                    .patterns
                    .iter()
                    .zip(&x)
                    .filter(|(p, _)| self.configs[p.config].pool == pool)
                    .map(|(_, v)| Expression::from(*v))
                    .sum();
                limit_rows.push(e.leq(*n as f64));
            }
        }
        (vars, x, objective, cover_rows, limit_rows)
    }

    /// Column generation; returns (rounds, the last LP duals of the cover rows).
    fn generate(
        &mut self,
        max_rounds: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<(usize, Vec<f64>), String> {
        let mut duals = vec![0.0; self.groups.len()];
        for round in 0..max_rounds {
            if round > 0 && stop() {
                return Ok((round, duals));
            }
            let (vars, x, objective, cover, limits) = self.master(false);
            let mut problem = vars.minimise(objective).using(highs).set_threads(1);
            let cover_refs: Vec<_> = cover
                .into_iter()
                .map(|c| problem.add_constraint(c))
                .collect();
            let limit_refs: Vec<_> = limits
                .into_iter()
                .map(|c| problem.add_constraint(c))
                .collect();
            let mut sol = problem.solve().map_err(|e| format!("LP master: {e}"))?;
            self.lp_solution = x.iter().map(|v| sol.value(*v).max(0.0)).collect();
            self.lp_value = self.cost(&self.lp_solution);
            let d = sol.compute_dual();
            duals = cover_refs
                .iter()
                .map(|c| d.dual(c.clone()).max(0.0))
                .collect();
            // Limit duals are ≤ 0 for ≤ rows: they raise the cost of configs of that pool.
            let limit_duals: Vec<f64> = limit_refs
                .iter()
                .map(|c| d.dual(c.clone()).min(0.0))
                .collect();
            let mut penalty = vec![0.0; self.configs.len()];
            let mut row = 0;
            for (&pool, (lim, nodes)) in &self.limits {
                for name in lim.keys() {
                    for (k, cfg) in self.configs.iter().enumerate() {
                        if cfg.pool == pool {
                            penalty[k] -= limit_duals[row] * cfg.it.capacity.get(name) as f64;
                        }
                    }
                    row += 1;
                }
                if nodes.is_some() {
                    for (k, cfg) in self.configs.iter().enumerate() {
                        if cfg.pool == pool {
                            penalty[k] -= limit_duals[row];
                        }
                    }
                    row += 1;
                }
            }
            // What a pattern of each config must be worth to improve the LP.
            let costs: Vec<f64> = (self.configs.iter().zip(&penalty))
                .map(|(c, pen)| c.price + pen)
                .collect();
            let mut added = 0;
            // Greedy pricing of every config, then the search on the configs that bound
            // Farley's θ at these duals (without HiGHS): its patterns are columns too, and the
            // bound it proves on the way is kept.
            let mut found: Vec<Pattern> = Vec::new();
            for k in 0..self.configs.len() {
                if k % 64 == 63 && stop() {
                    break;
                }
                if let Some((_, pattern)) = self.price(k, &duals) {
                    found.push(pattern);
                }
            }
            if self.bound_rounds {
                let (lb, searched) = self.farley(&duals, self.cg_bound, false, stop);
                self.cg_bound = self.cg_bound.max(lb);
                found.extend(searched);
            }
            for p in found {
                let worth: f64 = p.counts.iter().map(|&(g, n)| duals[g] * f64::from(n)).sum();
                if worth > costs[p.config] * (1.0 + 1e-7) + 1e-9 && self.add_pattern(p) {
                    added += 1;
                }
            }
            if added == 0 && !stop() {
                // The greedy found nothing: price the most promising configs exactly.
                let mut promising: Vec<(f64, usize)> = costs
                    .iter()
                    .enumerate()
                    .map(|(k, cost)| (self.price_upper_bound(k, &duals) / cost.max(1e-12), k))
                    .filter(|(r, _)| *r > 1.0 + 1e-6)
                    .collect();
                promising.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                // When every promising config is priced exactly (and no limit adds a penalty),
                // the round also yields Farley's bound: θ = the largest exact value/price ratio.
                let mut theta: Option<f64> = self.limits.is_empty().then_some(1.0 + 1e-6);
                let improving = |value: f64, k: usize| value > costs[k] * (1.0 + 1e-6) + 1e-9;
                // Branch and bound on every promising config; its best pattern is a column even
                // when the search gives up before proving it optimal.
                let mut unproved: Vec<usize> = Vec::new();
                for (i, &(_, k)) in promising.iter().enumerate() {
                    if i % 16 == 15 && stop() {
                        theta = None;
                        break;
                    }
                    let found = self.search(
                        k,
                        &duals,
                        SEARCH_NODES,
                        costs[k] * (1.0 + 1e-6),
                        EARLIER_INCUMBENTS,
                    );
                    if improving(found.value, k) && self.add_pattern(found.pattern) {
                        added += 1;
                    }
                    for p in found.earlier {
                        if self.add_pattern(p) {
                            added += 1;
                        }
                    }
                    let price = self.configs[k].price;
                    if !found.proved {
                        unproved.push(k);
                    } else if price > 0.0 {
                        theta = theta.map(|t| t.max(found.value / price));
                    } else {
                        theta = None;
                    }
                }
                // HiGHS on the configs the search gave up on, only while nothing better turned
                // up (a found column ends the round; the next duals differ anyway).
                for k in unproved {
                    if stop() || added > 0 {
                        theta = None;
                        break;
                    }
                    let price = self.configs[k].price;
                    match self.exact_price(k, &duals, 0.2) {
                        Some((bound, found, pattern)) => {
                            theta = theta.filter(|_| price > 0.0).map(|t| t.max(bound / price));
                            if improving(found, k) && self.add_pattern(pattern) {
                                added += 1;
                            }
                        }
                        None => theta = None,
                    }
                }
                if let Some(t) = theta {
                    self.cg_bound = self.cg_bound.max(self.dual_value(&duals) / t);
                }
            }
            if added == 0 {
                return Ok((round + 1, duals));
            }
        }
        Ok((max_rounds, duals))
    }

    /// The cost of `counts` nodes of each pattern (in pattern order).
    fn cost(&self, counts: &[f64]) -> f64 {
        self.patterns
            .iter()
            .zip(counts)
            .map(|(p, n)| self.configs[p.config].price * n)
            .sum()
    }

    /// The LP dual objective of cover duals: `Σ demand·π`.
    fn dual_value(&self, duals: &[f64]) -> f64 {
        duals
            .iter()
            .zip(&self.groups)
            .map(|(d, g)| d * g.demand as f64)
            .sum()
    }

    /// Farley's lower bound from cover duals (limits ignored, which only lowers the LP): the duals
    /// scaled by θ = max over configs of (best pattern value bound / price) are feasible for the
    /// LP's dual, so `Σ n·π / θ` bounds the LP and every integer plan from below.
    ///
    /// Stops early (returning what it has, still valid) once the bound cannot exceed `floor`.
    fn farley_bound(&self, duals: &[f64], floor: f64, stop: &dyn Fn() -> bool) -> f64 {
        self.farley(duals, floor, true, stop).0
    }

    /// [`Model::farley_bound`], with HiGHS on the configs the search cannot prove only if
    /// `exact`; also returns the best pattern of every config it searched.
    fn farley(
        &self,
        duals: &[f64],
        floor: f64,
        exact: bool,
        stop: &dyn Fn() -> bool,
    ) -> (f64, Vec<Pattern>) {
        let mut searched = Vec::new();
        let total = self.dual_value(duals);
        if total <= 0.0 {
            return (0.0, searched);
        }
        let mut cheap: Vec<(f64, usize, f64)> = Vec::with_capacity(self.configs.len());
        for k in 0..self.configs.len() {
            let ub = self.price_upper_bound(k, duals);
            let price = self.configs[k].price;
            if price <= 0.0 {
                if ub > 0.0 {
                    return (0.0, searched);
                }
                continue;
            }
            cheap.push((ub / price, k, ub));
        }
        cheap.sort_by(|a, b| b.0.total_cmp(&a.0));
        // θ may end below 1 (duals from another relaxation, such as the fluid LP's, that no
        // integer pattern reaches): dividing by it then lifts the bound above their value.
        let mut theta: f64 = 0.0;
        for (i, (ratio, k, ub)) in cheap.into_iter().enumerate() {
            if ratio <= theta {
                break;
            }
            if i >= REFINED_CONFIGS {
                // Unrefined configs keep their (larger, still valid) single-dimension bound.
                theta = theta.max(ratio);
                break;
            }
            let mut refined = self
                .refined_upper_bound(k, duals, ub)
                .min(self.integer_upper_bound(k, duals));
            if refined / self.configs[k].price > theta && !stop() {
                // The final bound needs no columns; in-round searches keep their best few.
                let (threshold, keep) = if exact {
                    (f64::INFINITY, 0)
                } else {
                    (self.configs[k].price * (1.0 + 1e-6), EARLIER_INCUMBENTS)
                };
                let found = self.search(k, duals, SEARCH_NODES, threshold, keep);
                if found.proved {
                    refined = refined.min(found.value);
                } else if let Some((b, _, _)) =
                    exact.then(|| self.exact_price(k, duals, 0.1)).flatten()
                {
                    refined = refined.min(b);
                }
                searched.push(found.pattern);
                searched.extend(found.earlier);
            }
            theta = theta.max(refined / self.configs[k].price);
            if total / theta <= floor {
                break;
            }
        }
        if theta <= 1e-12 {
            return (0.0, searched);
        }
        (total / theta, searched)
    }

    /// The *fluid* LP: fractional node counts `y_k` per config and pods `x_gk` of each group on
    /// each config, every node's pods within its room in every dimension, and at most the
    /// single-group fit count `c_gk` of a group per node (`x_gk ≤ c_gk·y_k`, which captures most
    /// of the integrality of large pods). Every valid plan gives a feasible point (its node and
    /// pod counts), so the optimum bounds every plan from below; it is the pattern LP with the
    /// pricing knapsack relaxed, computed without column generation.
    ///
    /// Then, until `stop`, nothing is cut or [`CUT_ROUNDS`] rounds, *pattern cuts*: for every
    /// config the optimum uses, [`Model::separate`] looks for weights `w` and a bound `U_k` on
    /// `w·a` over every pattern `a` of that config such that the optimum's per-node mix breaks
    /// `Σ_g w_g·x_gk ≤ U_k·y_k`. Every plan satisfies that row (each of its nodes holds one
    /// pattern), so adding it keeps the LP a relaxation; HiGHS re-solves from its basis. The cuts
    /// lift the bound toward the pattern LP's, and the patterns found on the way seed column
    /// generation. Returns the last optimum HiGHS proved, or `None` if it proves none within
    /// `time_limit`.
    fn fluid(&self, time_limit: f64, stop: &dyn Fn() -> bool) -> Option<Fluid> {
        use ::highs::{HighsModelStatus, RowProblem, Sense};
        let mut problem = RowProblem::default();
        let used: BTreeSet<usize> = self.fits.iter().flatten().copied().collect();
        let y: BTreeMap<usize, ::highs::Col> = used
            .iter()
            .map(|&k| (k, problem.add_column(self.configs[k].price, 0.0..)))
            .collect();
        let mut xs: Vec<(usize, usize, ::highs::Col)> = Vec::new();
        // Per config: one row per dimension (shares of the room); the fit-count cuts.
        let mut dims: BTreeMap<usize, Vec<Vec<(::highs::Col, f64)>>> = BTreeMap::new();
        let mut caps: Vec<[(::highs::Col, f64); 2]> = Vec::new();
        let mut cover: Vec<Vec<(::highs::Col, f64)>> = vec![Vec::new(); self.groups.len()];
        for (g, grp) in self.groups.iter().enumerate() {
            let n = grp.demand as f64;
            for &k in &self.fits[g] {
                let c = self.single_count(g, k);
                if c == 0 {
                    continue;
                }
                let x = problem.add_column(0.0, 0.0..=n);
                xs.push((g, k, x));
                cover[g].push((x, 1.0));
                let room = &self.configs[k].room;
                let r = &grp.requests;
                let mut shares = vec![
                    share(r.cpu, room.cpu),
                    share(r.memory, room.memory),
                    share(r.ephemeral_storage, room.ephemeral_storage),
                    share(r.pods, room.pods),
                ];
                shares.extend(
                    room.extended
                        .iter()
                        .map(|(name, cap)| share(r.extended.get(name).copied().unwrap_or(0), *cap)),
                );
                let entry = dims
                    .entry(k)
                    .or_insert_with(|| vec![vec![(y[&k], -1.0)]; shares.len()]);
                for (row, s) in entry.iter_mut().zip(&shares) {
                    if *s > 0.0 {
                        row.push((x, *s));
                    }
                }
                let fractional = shares.iter().copied().fold(0.0, f64::max) * f64::from(c);
                if f64::from(c) < n && fractional < 1.0 - 1e-9 {
                    caps.push([(x, 1.0), (y[&k], -f64::from(c))]);
                }
            }
        }
        // The cover rows come first: rows 0..groups.
        for (g, row) in cover.into_iter().enumerate() {
            problem.add_row(self.groups[g].demand as f64.., row);
        }
        for rows in dims.into_values() {
            for row in rows {
                problem.add_row(..=0.0, row);
            }
        }
        for row in caps {
            problem.add_row(..=0.0, row);
        }
        let mut model = problem.try_optimise(Sense::Minimise).ok()?;
        for (option, on) in [("output_flag", false), ("log_to_console", false)] {
            model.try_set_option(option, on).ok()?;
        }
        model.try_set_option("threads", 1).ok()?;
        model.try_set_option("time_limit", time_limit).ok()?;
        let mut best: Option<Fluid> = None;
        let x_of: BTreeMap<(usize, usize), ::highs::Col> =
            xs.iter().map(|&(g, k, x)| ((g, k), x)).collect();
        let mut pools: BTreeMap<usize, Vec<Pattern>> = BTreeMap::new();
        for round in 0..=CUT_ROUNDS {
            let Ok(solved) = model.try_solve() else {
                break;
            };
            if solved.status() != HighsModelStatus::Optimal {
                break;
            }
            let solution = solved.get_solution();
            let columns = solution.columns();
            let value = solved.objective_value() * (1.0 - 1e-7);
            let duals: Vec<f64> = solution.dual_rows()[..self.groups.len()]
                .iter()
                .map(|d| d.max(0.0))
                .collect();
            let mut nodes: BTreeMap<usize, (f64, Vec<(usize, f64)>)> = y
                .iter()
                .map(|(&k, c)| (k, (columns[c.index()], Vec::new())))
                .filter(|(_, (n, _))| *n > 1e-9)
                .collect();
            for &(g, k, x) in &xs {
                let v = columns[x.index()];
                if v > 1e-9 {
                    if let Some((_, mix)) = nodes.get_mut(&k) {
                        mix.push((g, v));
                    }
                }
            }
            // Cuts at this optimum, for the configs it uses.
            let mut cuts: Vec<Vec<(::highs::Col, f64)>> = Vec::new();
            for (&k, (n, mix)) in &nodes {
                if round == CUT_ROUNDS || stop() {
                    break;
                }
                let per_node: Vec<(usize, f64)> = mix.iter().map(|&(g, x)| (g, x / n)).collect();
                let pool = pools.entry(k).or_default();
                let cut = self.separate(k, &per_node, pool);
                if let Some((w, most)) = cut {
                    let mut row: Vec<(::highs::Col, f64)> = w
                        .iter()
                        .filter(|(_, wg)| *wg > 0.0)
                        .filter_map(|&(g, wg)| x_of.get(&(g, k)).map(|&x| (x, wg)))
                        .collect();
                    row.push((y[&k], -most));
                    cuts.push(row);
                }
            }
            best = Some(Fluid {
                value,
                duals,
                nodes,
                patterns: Vec::new(),
            });
            if cuts.is_empty() {
                break;
            }
            model = solved.into();
            if cuts
                .into_iter()
                .any(|row| model.try_add_row(..=0.0, row).is_err())
            {
                break;
            }
        }
        // The patterns of every separation are columns for the pattern LP.
        best.map(|mut fluid| {
            fluid.patterns = pools.into_values().flatten().collect();
            fluid
        })
    }

    /// Separate the per-node mix `mix` (pods per group on one node of config `k`, fractional)
    /// from the patterns of `k`: a small column generation for the cheapest covering of `mix` by
    /// patterns (`min Σλ` s.t. `Σ λ_p·a_p ≥ mix`), priced by the branch-and-bound search and
    /// started from `patterns` (the config's patterns so far, which it extends). If the covering
    /// needs more than one node, its duals `w` give the cut `Σ_g w_g·x_gk ≤ U·y_k`, `U` an upper
    /// bound on `w·a` over every pattern `a` of `k` (the search's proved optimum, else its relaxed
    /// bounds): returned as (`w` per group, `U`) when the mix violates it.
    #[allow(clippy::type_complexity)]
    fn separate(
        &self,
        k: usize,
        mix: &[(usize, f64)],
        patterns: &mut Vec<Pattern>,
    ) -> Option<(Vec<(usize, f64)>, f64)> {
        let room = &self.configs[k].room;
        let mut seen: BTreeSet<Pattern> = patterns.iter().cloned().collect();
        for &(g, _) in mix {
            let n = self.fit_count(g, room);
            let single = Pattern {
                config: k,
                counts: vec![(g, n)],
            };
            if n > 0 && seen.insert(single.clone()) {
                patterns.push(single);
            }
        }
        for _ in 0..SEPARATION_ROUNDS {
            let mut vars = ProblemVariables::new();
            let lambda: Vec<Variable> = patterns
                .iter()
                .map(|_| vars.add(variable().min(0)))
                .collect();
            let objective: Expression = lambda.iter().map(|v| Expression::from(*v)).sum();
            let mut problem = vars.minimise(objective).using(highs).set_threads(1);
            let rows: Vec<_> = mix
                .iter()
                .map(|&(g, m)| {
                    let e: Expression = patterns
                        .iter()
                        .zip(&lambda)
                        .filter_map(|(p, v)| {
                            p.counts
                                .iter()
                                .find(|(h, _)| *h == g)
                                .map(|&(_, n)| f64::from(n) * *v)
                        })
                        .sum();
                    problem.add_constraint(e.geq(m))
                })
                .collect();
            let Ok(mut sol) = problem.solve() else {
                return None;
            };
            let opt: f64 = lambda.iter().map(|v| sol.value(*v)).sum();
            if opt <= 1.0 + 1e-6 {
                return None;
            }
            let d = sol.compute_dual();
            let w: Vec<(usize, f64)> = mix
                .iter()
                .zip(&rows)
                .map(|(&(g, _), r)| (g, d.dual(r.clone()).max(0.0)))
                .collect();
            let mut value = vec![0.0; self.groups.len()];
            for &(g, wg) in &w {
                value[g] = wg;
            }
            let found = self.search(k, &value, SEARCH_NODES, 1.0 + 1e-6, EARLIER_INCUMBENTS);
            let mut added = false;
            if found.value > 1.0 + 1e-6 {
                for p in std::iter::once(found.pattern.clone()).chain(found.earlier.iter().cloned())
                {
                    if seen.insert(p.clone()) {
                        patterns.push(p);
                        added = true;
                    }
                }
            }
            if added {
                continue;
            }
            let most = if found.proved {
                found.value
            } else {
                self.refined_upper_bound(k, &value, self.price_upper_bound(k, &value))
                    .min(self.integer_upper_bound(k, &value))
            };
            let most = most * (1.0 + 1e-9) + 1e-12;
            let weighed: f64 = mix.iter().zip(&w).map(|(&(_, m), &(_, wg))| m * wg).sum();
            return (weighed > most * (1.0 + 1e-6)).then_some((w, most));
        }
        None
    }

    fn seed_fluid(&mut self, fluid: &Fluid) {
        let mut patterns = Vec::new();
        for (&k, (nodes, mix)) in &fluid.nodes {
            let per_node: Vec<(usize, f64)> = mix.iter().map(|&(g, x)| (g, x / nodes)).collect();
            let big = &self.configs[k];
            for (k2, c) in self.configs.iter().enumerate() {
                if c.pool != big.pool || c.class != big.class || c.price > big.price {
                    continue;
                }
                let scale = [
                    (c.room.cpu, big.room.cpu),
                    (c.room.memory, big.room.memory),
                    (c.room.pods, big.room.pods),
                ]
                .iter()
                .map(|&(a, b)| if b > 0 { a as f64 / b as f64 } else { 1.0 })
                .fold(f64::INFINITY, f64::min)
                .min(1.0);
                let want: Vec<(usize, f64)> = per_node
                    .iter()
                    .filter(|(g, _)| self.fits[*g].binary_search(&k2).is_ok())
                    .map(|&(g, q)| (g, q * scale))
                    .collect();
                if let Some(p) = self.round_mix(k2, &want, &fluid.duals) {
                    patterns.push(p);
                }
            }
        }
        patterns.extend(fluid.patterns.iter().cloned());
        for p in patterns {
            self.add_pattern(p);
        }
    }

    /// A pattern of config `k` close to the fractional mix `want` (pods per group): counts rounded
    /// down, then one more pod of the groups with the largest fractional parts while it fits,
    /// then what room is left filled with the groups of most `value` per share of the room;
    /// groups conflicting with one already in are left out.
    fn round_mix(&self, k: usize, want: &[(usize, f64)], value: &[f64]) -> Option<Pattern> {
        let mut order: Vec<(usize, f64)> = want.to_vec();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut left = self.configs[k].room.clone();
        let mut counts: BTreeMap<usize, u32> = BTreeMap::new();
        for &(g, q) in &order {
            if counts.keys().any(|h| self.groups[g].conflicts.contains(h)) {
                continue;
            }
            let n = (q + 1e-9).floor().min(f64::from(self.fit_count(g, &left))) as u32;
            if n > 0 {
                left = left.minus(&self.groups[g].requests.scaled(i64::from(n)));
                counts.insert(g, n);
            }
        }
        let mut by_fraction: Vec<(usize, f64)> = order
            .iter()
            .map(|&(g, q)| (g, q - (q + 1e-9).floor()))
            .filter(|(_, f)| *f > 1e-6)
            .collect();
        by_fraction.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (g, _) in by_fraction {
            let have = counts.get(&g).copied().unwrap_or(0);
            if (have == 0 && counts.keys().any(|h| self.groups[g].conflicts.contains(h)))
                || have >= self.groups[g].most_per_node()
                || !self.groups[g].requests.fits_in(&left)
            {
                continue;
            }
            left = left.minus(&self.groups[g].requests);
            *counts.entry(g).or_default() += 1;
        }
        let room = &self.configs[k].room;
        let mut fill: Vec<(f64, usize)> = self
            .fits
            .iter()
            .enumerate()
            .filter(|(g, fits)| value[*g] > 0.0 && fits.binary_search(&k).is_ok())
            .map(|(g, _)| {
                let r = &self.groups[g].requests;
                let worst = share(r.cpu, room.cpu)
                    .max(share(r.memory, room.memory))
                    .max(share(r.pods, room.pods));
                (value[g] / worst.max(1e-12), g)
            })
            .collect();
        fill.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, g) in fill {
            let have = counts.get(&g).copied().unwrap_or(0);
            if have == 0 && counts.keys().any(|h| self.groups[g].conflicts.contains(h)) {
                continue;
            }
            let n = self
                .fit_count(g, &left)
                .min(self.groups[g].most_per_node().saturating_sub(have));
            if n > 0 {
                left = left.minus(&self.groups[g].requests.scaled(i64::from(n)));
                *counts.entry(g).or_default() += n;
            }
        }
        (!counts.is_empty()).then(|| Pattern {
            config: k,
            counts: counts.into_iter().collect(),
        })
    }

    /// The model of the pods `left` (per group): the patterns found so far, cut down to what is
    /// left, are its first columns, with a single-group pattern for every group left. `None` if
    /// some group left fits nowhere.
    fn remainder(&self, left: &[usize]) -> Option<Model> {
        let mut sub = Model {
            groups: self.groups.clone(),
            configs: self.configs.clone(),
            fits: self.fits.clone(),
            patterns: Vec::new(),
            seen: BTreeSet::new(),
            limits: BTreeMap::new(),
            lp_value: 0.0,
            cg_bound: 0.0,
            // Its rounds stay cheap: the remainder's own bound is of no use.
            bound_rounds: false,
            lp_solution: Vec::new(),
        };
        for (g, l) in sub.groups.iter_mut().zip(left) {
            g.demand = *l;
        }
        for p in &self.patterns {
            let counts: Vec<(usize, u32)> = p
                .counts
                .iter()
                .map(|&(g, n)| (g, n.min(u32::try_from(left[g]).unwrap_or(u32::MAX))))
                .filter(|(_, n)| *n > 0)
                .collect();
            if !counts.is_empty() {
                sub.add_pattern(Pattern {
                    config: p.config,
                    counts,
                });
            }
        }
        sub.seed_single().then_some(sub)
    }

    /// An integer plan by diving: fix every whole node of the LP, or else round up its largest
    /// fractional node, re-solve the LP of what is left with a few rounds of column generation,
    /// and repeat until every pod is placed. Once `stop` fires, an integer master of what is
    /// left (within `time_limit`, started from its LP rounded up) finishes the plan. Returns
    /// (pattern, count) pairs, or `None` under NodePool limits (what is left would need them
    /// split) or when a step fails.
    fn dive_plan(
        &self,
        rounds: usize,
        stop: &dyn Fn() -> bool,
        time_limit: f64,
        gap: f64,
    ) -> Option<Vec<(Pattern, u32)>> {
        if !self.limits.is_empty() || self.lp_solution.is_empty() {
            return None;
        }
        let mut plan: Vec<(Pattern, u32)> = Vec::new();
        let mut left: Vec<usize> = self.groups.iter().map(|g| g.demand).collect();
        let mut lp: Vec<(Pattern, f64)> = self
            .patterns
            .iter()
            .cloned()
            .zip(self.lp_solution.iter().copied())
            .collect();
        let mut model: Option<Model> = None;
        loop {
            let mut fix: Vec<(Pattern, u32)> = lp
                .iter()
                .filter(|(_, x)| *x >= 1.0 - 1e-9)
                .map(|(p, x)| (p.clone(), (x + 1e-9).floor() as u32))
                .collect();
            let finish = stop();
            if finish {
                // Out of time: an integer master of what is left, from its LP rounded up (which
                // covers it).
                let sub = model.as_ref().unwrap_or(self);
                let warm: Vec<f64> = (0..sub.patterns.len())
                    .map(|i| {
                        sub.lp_solution
                            .get(i)
                            .map_or(0.0, |x| (x - 1e-9).ceil().max(0.0))
                    })
                    .collect();
                let counts = sub.solve_integer(&warm, time_limit, gap).ok()?;
                fix = sub
                    .patterns
                    .iter()
                    .cloned()
                    .zip(counts)
                    .filter(|(_, c)| *c > 0)
                    .collect();
            } else if fix.is_empty() {
                let largest = lp
                    .iter()
                    .filter(|(_, x)| *x > 1e-9)
                    .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
                fix.push((largest.0.clone(), 1));
            }
            for (p, n) in fix {
                let mut counts: Vec<(usize, u32)> = Vec::new();
                for _ in 0..n {
                    counts.clear();
                    for &(g, c) in &p.counts {
                        let c = c.min(u32::try_from(left[g]).unwrap_or(u32::MAX));
                        if c > 0 {
                            left[g] -= c as usize;
                            counts.push((g, c));
                        }
                    }
                    if counts.is_empty() {
                        break;
                    }
                    let cut = Pattern {
                        config: p.config,
                        counts: std::mem::take(&mut counts),
                    };
                    match plan.iter_mut().find(|(q, _)| *q == cut) {
                        Some((_, m)) => *m += 1,
                        None => plan.push((cut, 1)),
                    }
                }
            }
            if left.iter().all(|l| *l == 0) {
                return Some(plan);
            }
            if finish {
                return None;
            }
            let base = model.as_ref().unwrap_or(self);
            let mut sub = base.remainder(&left)?;
            sub.generate(rounds, stop).ok()?;
            lp = sub
                .patterns
                .iter()
                .cloned()
                .zip(sub.lp_solution.iter().copied())
                .collect();
            model = Some(sub);
        }
    }

    /// Solve the integer master; returns pattern counts.
    fn solve_integer(&self, warm: &[f64], time_limit: f64, gap: f64) -> Result<Vec<u32>, String> {
        let (vars, x, objective, cover, limits) = self.master(true);
        let mut problem = vars
            .minimise(objective)
            .using(highs)
            .set_threads(1)
            .set_time_limit(time_limit)
            .set_mip_rel_gap(gap as f32)
            .map_err(|e| format!("MIP gap: {e}"))?;
        for c in cover.into_iter().chain(limits) {
            problem.add_constraint(c);
        }
        let problem = problem.with_initial_solution(x.iter().copied().zip(warm.iter().copied()));
        let sol = problem
            .solve()
            .map_err(|e| format!("integer master: {e}"))?;
        Ok(x.iter()
            .map(|v| sol.value(*v).round().max(0.0) as u32)
            .collect())
    }
}

/// `need / cap` as a share of a node's room (0 when nothing is needed).
fn share(need: i64, cap: i64) -> f64 {
    if need <= 0 {
        0.0
    } else {
        need as f64 / cap.max(1) as f64
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// Pod groups of a model with the pods each pool set allows.
/// What decides which NodePools accept a pod.
type PodKey = (Requirements, Vec<crate::taints::Toleration>);

/// Which NodePools accept which pods, computed once per distinct (requirements, tolerations).
struct PoolIndex<'a> {
    snapshot: &'a ClusterSnapshot,
    keys: Vec<BTreeSet<String>>,
    cache: std::cell::RefCell<BTreeMap<PodKey, Vec<usize>>>,
}

impl<'a> PoolIndex<'a> {
    fn new(snapshot: &'a ClusterSnapshot) -> Self {
        PoolIndex {
            snapshot,
            keys: snapshot.node_pools.iter().map(provider_keys).collect(),
            cache: Default::default(),
        }
    }

    fn pools_for(&self, pod: &Pod) -> Vec<usize> {
        let key = (pod.strict_requirements(), pod.tolerations.clone());
        if let Some(v) = self.cache.borrow().get(&key) {
            return v.clone();
        }
        let v: Vec<usize> = self
            .snapshot
            .node_pools
            .iter()
            .enumerate()
            .filter(|(i, p)| pool_accepts(p, pod, &self.keys[*i]))
            .map(|(i, _)| i)
            .collect();
        self.cache.borrow_mut().insert(key, v.clone());
        v
    }
}

/// Per-pool overhead that certainly runs on every node (daemonsets without node constraints).
fn certain_overhead(snapshot: &ClusterSnapshot, pool: &NodePool) -> Resources {
    let mut r = Resources::new();
    for ds in &snapshot.daemonsets {
        let unconstrained = ds.node_selector.is_empty()
            && ds.required_node_affinity.is_empty()
            && ds.volume_requirements.is_empty();
        if unconstrained
            && first_untolerated(&pool.taints, &ds.tolerations)
                .is_none_or(|t| t.effect == Effect::PreferNoSchedule)
        {
            r.add_assign(&ds.requests);
        }
    }
    r
}

/// The LP (Farley) lower bound over every pod the plan places on new nodes, when no existing
/// node has room; 0 otherwise.
pub(super) fn pattern_bound(
    snapshot: &ClusterSnapshot,
    results: &SchedulingResults,
    max_rounds: usize,
    stop: &dyn Fn() -> bool,
) -> f64 {
    let has_room = snapshot
        .free_capacity()
        .iter()
        .any(|(_, free)| free.cpu > 0 && free.memory > 0 && free.pods > 0);
    if has_room {
        return 0.0;
    }
    let index = PoolIndex::new(snapshot);
    let pods: Vec<(usize, Vec<usize>)> = results
        .new_nodeclaims
        .iter()
        .flat_map(|c| c.pods.iter())
        .map(|&p| (p, index.pools_for(&snapshot.pods[p])))
        .collect();
    if pods.is_empty() || pods.iter().any(|(_, pools)| pools.is_empty()) {
        return 0.0;
    }
    let overheads: Vec<Resources> = snapshot
        .node_pools
        .iter()
        .map(|p| certain_overhead(snapshot, p))
        .collect();
    let mut model = Model::new(snapshot, &pods, &[], &overheads, BTreeMap::new(), true);
    // Conflicts and per-node limits only tighten the real problem; drop them for the bound's pricing
    // upper bound (it already ignores them) but keep them in the patterns (still valid columns).
    if model.fits.iter().any(Vec::is_empty) || !model.seed_single() {
        return 0.0;
    }
    let fluid = model.fluid(30.0, stop).map_or(0.0, |f| f.value);
    let farley = match model.generate(max_rounds, stop) {
        Ok((_, duals)) => model.farley_bound(&duals, fluid.max(model.cg_bound), stop),
        Err(_) => 0.0,
    };
    fluid.max(farley).max(model.cg_bound)
}

impl Milp {
    fn fallback(
        &self,
        snapshot: &ClusterSnapshot,
        ffd: SchedulingResults,
        stats: PackStats,
        why: String,
    ) -> PackResult {
        self.fallback_with(None, snapshot, ffd, stats, why)
    }

    fn fallback_with(
        &self,
        model_lb: Option<f64>,
        snapshot: &ClusterSnapshot,
        ffd: SchedulingResults,
        stats: PackStats,
        why: String,
    ) -> PackResult {
        let lb = self.bound(snapshot, &ffd, model_lb);
        PackResult {
            lower_bound_per_hour: lb,
            results: ffd,
            packer: "ffd",
            fallback: Some(why),
            stats,
        }
    }

    /// The plan's lower bound: the per-unit bound, and the LP bound from the MILP's model when it
    /// is a relaxation, else from a relaxed model built for the purpose.
    fn bound(
        &self,
        snapshot: &ClusterSnapshot,
        results: &SchedulingResults,
        model_lb: Option<f64>,
    ) -> f64 {
        let simple = lower_bound_per_hour(snapshot, results);
        simple.max(model_lb.unwrap_or_else(|| {
            pattern_bound(
                snapshot,
                results,
                self.max_rounds.min(BOUND_ROUNDS),
                &|| false,
            )
        }))
    }
}

/// Whether the MILP's own model is also a relaxation of every valid plan (so its duals give the
/// lower bound): no bundles, no requirement classes, each pod's pool is the only one it could
/// use, and the daemonset overhead is the one every node certainly carries.
fn model_is_relaxation(
    snapshot: &ClusterSnapshot,
    model: &Model,
    free: &[(usize, Vec<usize>)],
    overheads: &[Resources],
) -> bool {
    let index = PoolIndex::new(snapshot);
    model.groups.iter().all(|g| !g.bundle && g.class == 0)
        && free
            .iter()
            .all(|(p, pools)| index.pools_for(&snapshot.pods[*p]) == *pools)
        && free
            .iter()
            .flat_map(|(_, pools)| pools.iter())
            .all(|&p| overheads[p] == certain_overhead(snapshot, &snapshot.node_pools[p]))
}

impl Packer for Milp {
    fn name(&self) -> &'static str {
        "milp"
    }

    fn pack(&self, snapshot: &ClusterSnapshot) -> PackResult {
        let scale = (snapshot.pending().len() as f64 / 1000.0).clamp(1.0, 5.0);
        let run = Run {
            started: self.now(),
            budget: self.budget_secs * scale,
            time_limit: self.time_limit_secs * scale,
        };
        self.pack_timed(snapshot, &run)
    }
}

/// Time accounting of one `pack` call.
struct Run {
    started: f64,
    budget: f64,
    time_limit: f64,
}

impl Milp {
    fn now(&self) -> f64 {
        self.clock.as_ref().map_or(0.0, |c| (c.0)())
    }

    /// Fraction of the budget used since the run started (0 without a clock).
    fn elapsed_fraction(&self, run: &Run) -> f64 {
        match &self.clock {
            Some(c) if run.budget > 0.0 => ((c.0)() - run.started) / run.budget,
            _ => 0.0,
        }
    }

    fn pack_timed(&self, snapshot: &ClusterSnapshot, run: &Run) -> PackResult {
        let ffd = schedule(snapshot, &self.options);
        let mut stats = PackStats {
            ffd_cost: ffd.cost_per_hour(),
            ..Default::default()
        };
        if ffd.new_nodeclaims.is_empty() {
            return PackResult {
                lower_bound_per_hour: 0.0,
                results: ffd,
                packer: "ffd",
                fallback: None,
                stats,
            };
        }
        let pool_index: BTreeMap<&str, usize> = snapshot
            .node_pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        // Movable pods become groups; the constrained pods of each FFD NodeClaim become a bundle.
        let mut free: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut bundles: Vec<Bundle> = Vec::new();
        for c in &ffd.new_nodeclaims {
            let pool = pool_index[c.nodepool.as_str()];
            let (movable, fixed): (Vec<usize>, Vec<usize>) = c
                .pods
                .iter()
                .partition(|&&p| is_free(snapshot, &snapshot.pods[p]));
            free.extend(movable.iter().map(|&p| (p, vec![pool])));
            if !fixed.is_empty() {
                stats.fixed_pods += fixed.len();
                let mut requirements = c.requirements.clone();
                requirements.remove(labels::INSTANCE_TYPE);
                requirements.remove(labels::CAPACITY_TYPE);
                requirements.add_all(&snapshot.node_pools[pool].template_requirements());
                bundles.push(Bundle {
                    pods: fixed,
                    pool,
                    requirements,
                    hostname: c.hostname.clone(),
                });
            }
        }
        if free.is_empty() && bundles.iter().all(|b| b.pods.is_empty()) {
            return self.fallback(snapshot, ffd, stats, "nothing to pack".into());
        }
        // Limits left for the new NodeClaims after the existing nodes.
        let remaining = snapshot.remaining_limits();
        let limits: BTreeMap<usize, (BTreeMap<String, i64>, Option<i64>)> = snapshot
            .node_pools
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.limits.resources.is_empty() || p.limits.nodes.is_some())
            .map(|(i, p)| (i, remaining[&p.name].clone()))
            .collect();
        let overheads: Vec<Resources> = snapshot
            .node_pools
            .iter()
            .map(|p| {
                daemon_overhead(
                    &snapshot.daemonsets,
                    p,
                    &p.template_requirements(),
                    &provider_keys(p),
                )
            })
            .collect();
        let mut model = Model::new(snapshot, &free, &bundles, &overheads, limits, false);
        stats.groups = model.groups.len();
        if model.fits.iter().any(Vec::is_empty) {
            return self.fallback(
                snapshot,
                ffd,
                stats,
                "a pod group fits no instance type of its NodePool".into(),
            );
        }
        // Warm start: every FFD NodeClaim as a pattern.
        let mut group_of: BTreeMap<usize, usize> = BTreeMap::new();
        for (g, grp) in model.groups.iter().enumerate() {
            for &p in &grp.pods {
                group_of.insert(p, g);
            }
        }
        let mut warm_patterns: Vec<Pattern> = Vec::new();
        for c in &ffd.new_nodeclaims {
            let pool = pool_index[c.nodepool.as_str()];
            let mut counts: BTreeMap<usize, u32> = BTreeMap::new();
            for p in &c.pods {
                let g = group_of[p];
                if model.groups[g].bundle {
                    counts.insert(g, 1);
                } else {
                    *counts.entry(g).or_default() += 1;
                }
            }
            let classes: BTreeSet<usize> = counts
                .keys()
                .map(|&g| model.groups[g].class)
                .filter(|&c| c != 0)
                .collect();
            if classes.len() > 1 {
                continue;
            }
            let class = classes.iter().next().copied().unwrap_or(0);
            let k = model.configs.iter().position(|cfg| {
                cfg.pool == pool && cfg.class == class && cfg.it.name == c.cheapest.instance_type
            });
            if let Some(k) = k {
                let pattern = Pattern {
                    config: k,
                    counts: counts.into_iter().collect(),
                };
                model.add_pattern(pattern.clone());
                warm_patterns.push(pattern);
            }
        }
        if !model.seed_single() {
            return self.fallback(snapshot, ffd, stats, "no single-group pattern fits".into());
        }
        let fluid = model.fluid(run.budget.max(0.1), &|| self.elapsed_fraction(run) > 0.4);
        if let Some(f) = &fluid {
            model.seed_fluid(f);
        }
        let cg_stop = || self.elapsed_fraction(run) > 0.65;
        let (rounds, duals) = match model.generate(self.max_rounds, &cg_stop) {
            Ok(r) => r,
            Err(e) => return self.fallback(snapshot, ffd, stats, e),
        };
        // The LP bound comes from this model when it is a relaxation of every valid plan.
        let model_lb = (snapshot.nodes.is_empty()
            && model_is_relaxation(snapshot, &model, &free, &overheads))
        .then(|| {
            let floor = fluid.as_ref().map_or(0.0, |f| f.value).max(model.cg_bound);
            let farley = model.farley_bound(&duals, floor, &|| self.elapsed_fraction(run) > 0.7);
            farley.max(floor)
        });
        stats.rounds = rounds;
        stats.columns = model.patterns.len();
        stats.lp_cost = model.lp_value;
        let mut warm = vec![0.0; model.patterns.len()];
        for wp in &warm_patterns {
            if let Some(i) = model.patterns.iter().position(|p| p == wp) {
                warm[i] += 1.0;
            }
        }
        // Diving first (fix the LP's whole nodes, re-solve what is left), then the integer
        // master over every pattern; the cheaper plan is kept.
        let dive = model.dive_plan(
            DIVE_ROUNDS,
            &|| self.elapsed_fraction(run) > 0.9,
            (run.time_limit * 0.05).max(0.05),
            self.mip_gap,
        );
        let left = match &self.clock {
            Some(_) => (run.budget * (1.0 - self.elapsed_fraction(run))).clamp(0.2, run.time_limit),
            None => run.time_limit,
        };
        // The dive's plan as counts of the model's patterns; the integer master starts from the
        // cheaper of it and the FFD plan, and the dive's plan stands unless the master beats it.
        let from_dive: Option<Vec<u32>> = dive.map(|plan| {
            for (p, _) in &plan {
                model.add_pattern(p.clone());
            }
            let mut counts = vec![0; model.patterns.len()];
            for (p, c) in &plan {
                if let Some(i) = model.patterns.iter().position(|q| q == p) {
                    counts[i] += c;
                }
            }
            counts
        });
        warm.resize(model.patterns.len(), 0.0);
        let whole = |counts: &[u32]| counts.iter().map(|&c| f64::from(c)).collect::<Vec<f64>>();
        if let Some(d) = &from_dive {
            if model.cost(&whole(d)) < model.cost(&warm) {
                warm = whole(d);
            }
        }
        let mut counts = match model.solve_integer(&warm, left, self.mip_gap) {
            Ok(c) => c,
            Err(e) => return self.fallback_with(model_lb, snapshot, ffd, stats, e),
        };
        if let Some(d) = from_dive {
            if model.cost(&whole(&d)) <= model.cost(&whole(&counts)) + 1e-9 {
                stats.residual = true;
                counts = d;
            }
        }
        // Assign pods to the chosen nodes and replay them through the scheduler's checks.
        let kept: Vec<NewNodeClaim> = bundles
            .iter()
            .map(|b| {
                let original = ffd.new_nodeclaims.iter().find(|c| c.hostname == b.hostname);
                let mut k = original
                    .cloned()
                    .unwrap_or_else(|| ffd.new_nodeclaims[0].clone());
                k.pods = b.pods.clone();
                k
            })
            .collect();
        let mut replay = Replay::new(snapshot, &self.options, &ffd.existing, &kept);
        let mut queues: Vec<std::collections::VecDeque<usize>> = model
            .groups
            .iter()
            .map(|g| g.pods.iter().copied().collect())
            .collect();
        let mut bundle_used = vec![false; model.groups.len()];
        for (pi, &m) in counts.iter().enumerate() {
            let pattern = &model.patterns[pi];
            let pool = &snapshot.node_pools[model.configs[pattern.config].pool].name;
            for _ in 0..m {
                let mut bundle: Option<usize> = None;
                let mut chosen = Vec::new();
                for &(g, n) in &pattern.counts {
                    if model.groups[g].bundle {
                        if !bundle_used[g] {
                            bundle_used[g] = true;
                            bundle = Some(g);
                        }
                        continue;
                    }
                    for _ in 0..n {
                        if let Some(p) = queues[g].pop_front() {
                            chosen.push(p);
                        }
                    }
                }
                if chosen.is_empty() && bundle.is_none() {
                    continue;
                }
                let claim = match bundle {
                    Some(g) => {
                        queues[g].clear();
                        let b = &bundles[g - (model.groups.len() - bundles.len())];
                        replay.open_with(&b.hostname, pool, b.requirements.clone(), b.pods.clone())
                    }
                    None => replay.open(pool),
                };
                let claim = match claim {
                    Ok(c) => c,
                    Err(e) => return self.fallback_with(model_lb, snapshot, ffd, stats, e),
                };
                // Largest pods first, as the scheduler would add them.
                chosen.sort_by(|a, b| {
                    larger_first(&snapshot.pods[*a].requests, &snapshot.pods[*b].requests)
                        .then(a.cmp(b))
                });
                for p in chosen {
                    if let Err(e) = replay.add(claim, p) {
                        return self.fallback_with(
                            model_lb,
                            snapshot,
                            ffd,
                            stats,
                            format!(
                                "replaying the MILP plan: pod {}: {e}",
                                snapshot.pods[p].key()
                            ),
                        );
                    }
                }
            }
        }
        if queues.iter().any(|q| !q.is_empty()) {
            return self.fallback_with(
                model_lb,
                snapshot,
                ffd,
                stats,
                "the integer master left pods uncovered".into(),
            );
        }
        let rebuilt = match replay.finish() {
            Ok(r) => r,
            Err(e) => return self.fallback_with(model_lb, snapshot, ffd, stats, e),
        };
        let mut results = ffd.clone();
        results.new_nodeclaims = rebuilt;
        if let Err(v) = validate(snapshot, &results) {
            let first = v.first().map(ToString::to_string).unwrap_or_default();
            return self.fallback_with(
                model_lb,
                snapshot,
                ffd,
                stats,
                format!("the MILP plan failed validation: {first}"),
            );
        }
        if results.cost_per_hour() >= ffd.cost_per_hour() - 1e-9 {
            return self.fallback_with(
                model_lb,
                snapshot,
                ffd,
                stats,
                "the MILP plan is not cheaper than FFD".into(),
            );
        }
        let lb = self.bound(snapshot, &results, model_lb);
        PackResult {
            lower_bound_per_hour: lb,
            results,
            packer: "milp",
            fallback: None,
            stats,
        }
    }
}

/// The outcome of a pricing search: the best pattern found, its value, and whether the search
/// proved it optimal.
struct Searched {
    value: f64,
    pattern: Pattern,
    /// Earlier incumbents above the search's threshold.
    earlier: Vec<Pattern>,
    proved: bool,
}

/// The Lagrangian dual of a multi-dimensional knapsack's LP relaxation over `items` (value,
/// sizes as shares of each dimension's capacity, count bound): `L(λ) = Σλ + Σ u·max(0, v − λ·s)`,
/// minimized by projected subgradient steps from the best single-dimension bound. Any `λ ≥ 0`
/// gives a valid upper bound on every pattern's value; returns the best bound found and its `λ`
/// (the weights of a surrogate dimension `λ·s ≤ Σλ` that every pattern respects).
fn knapsack_lagrangian(items: &[(f64, Vec<f64>, f64)]) -> (f64, Vec<f64>) {
    let Some(dims) = items.first().map(|i| i.1.len()) else {
        return (0.0, Vec::new());
    };
    let eval = |l: &[f64]| -> (f64, Vec<f64>) {
        let mut total: f64 = l.iter().sum();
        let mut grad = vec![1.0; dims];
        for (v, s, u) in items {
            let reduced = v - l.iter().zip(s).map(|(a, b)| a * b).sum::<f64>();
            if reduced > 0.0 {
                total += u * reduced;
                for (g, si) in grad.iter_mut().zip(s) {
                    *g -= u * si;
                }
            }
        }
        (total, grad)
    };
    // Start from the best single-dimension bound: λ = its critical value/size ratio on that
    // dimension (where L equals the fractional knapsack value), 0 elsewhere.
    let mut best = (f64::INFINITY, vec![0.0; dims]);
    for dim in 0..dims {
        let mut sorted: Vec<&(f64, Vec<f64>, f64)> =
            items.iter().filter(|i| i.1[dim] > 0.0).collect();
        sorted.sort_by(|a, b| (b.0 / b.1[dim]).total_cmp(&(a.0 / a.1[dim])));
        let mut left = 1.0;
        let mut critical = 0.0;
        for (v, sz, u) in sorted {
            critical = v / sz[dim];
            let take = (left / sz[dim]).min(*u);
            left -= take * sz[dim];
            if left <= 1e-12 {
                break;
            }
            critical = 0.0;
        }
        let mut l = vec![0.0; dims];
        l[dim] = critical;
        let (val, _) = eval(&l);
        if val < best.0 {
            best = (val, l);
        }
    }
    let mut lambda = best.1.clone();
    let mut step = lambda.iter().copied().fold(0.0, f64::max).max(1e-9) * 0.5;
    for _ in 0..30 {
        let (val, grad) = eval(&lambda);
        if val < best.0 {
            best = (val, lambda.clone());
        }
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if norm < 1e-12 {
            break;
        }
        for (l, g) in lambda.iter_mut().zip(&grad) {
            *l = (*l - step * g / norm).max(0.0);
        }
        step *= 0.9;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use proptest::prelude::*;

    const GPU: &str = "nvidia.com/gpu";

    /// The most valuable pattern of config `k` under `value`, by enumerating every count vector.
    fn enumerate(model: &Model, k: usize, value: &[f64]) -> f64 {
        fn go(
            model: &Model,
            cands: &[usize],
            value: &[f64],
            left: &Resources,
            chosen: &mut Vec<usize>,
        ) -> f64 {
            let Some((&g, rest)) = cands.split_first() else {
                return 0.0;
            };
            let mut best = go(model, rest, value, left, chosen);
            if chosen.iter().any(|h| model.groups[g].conflicts.contains(h)) {
                return best;
            }
            chosen.push(g);
            for n in 1..=model.groups[g].most_per_node() {
                let need = model.groups[g].requests.scaled(i64::from(n));
                if !covers(left, &need) {
                    break;
                }
                let with =
                    value[g] * f64::from(n) + go(model, rest, value, &left.minus(&need), chosen);
                best = best.max(with);
            }
            chosen.pop();
            best
        }
        let cands: Vec<usize> = (0..model.groups.len())
            .filter(|&g| model.fits[g].binary_search(&k).is_ok())
            .collect();
        go(
            model,
            &cands,
            value,
            &model.configs[k].room,
            &mut Vec::new(),
        )
    }

    /// The value of `pattern` under `value`, and whether it fits its config's room.
    fn worth(model: &Model, pattern: &Pattern, value: &[f64]) -> (f64, bool) {
        let mut used = Resources::default();
        let mut total = 0.0;
        for &(g, n) in &pattern.counts {
            used.add_assign(&model.groups[g].requests.scaled(i64::from(n)));
            total += value[g] * f64::from(n);
        }
        (total, covers(&model.configs[pattern.config].room, &used))
    }

    fn arb_case() -> impl Strategy<Value = (ClusterSnapshot, Vec<f64>)> {
        let types = prop::collection::vec((1i64..4, 1i64..4, 0i64..3), 1..4);
        let shapes =
            prop::collection::vec((1i64..8, 1i64..8, 0i64..2, 1usize..5, any::<bool>()), 1..5);
        let duals = prop::collection::vec(0.0f64..1.0, 5);
        (types, shapes, duals).prop_map(|(types, shapes, duals)| {
            let types = types
                .into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, gpu))| {
                    let b = instance_type(&format!("t{i}"))
                        .cpu(&(cpu * 2).to_string())
                        .memory(&format!("{}Gi", mem * 4))
                        .price(cpu as f64 * 0.1)
                        .spot_price(cpu as f64 * 0.1);
                    if gpu > 0 {
                        b.resource(GPU, &gpu.to_string())
                    } else {
                        b
                    }
                    .build()
                })
                .collect();
            let mut pods = Vec::new();
            for (s, (cpu, mem, gpu, count, port)) in shapes.into_iter().enumerate() {
                for i in 0..count {
                    let b = pod(&format!("s{s}-{i}"))
                        .cpu(&format!("{}m", cpu * 250))
                        .memory(&format!("{}Mi", mem * 512));
                    let b = if gpu > 0 { b.resource(GPU, "1") } else { b };
                    pods.push(
                        if port {
                            b.host_port(9000 + s as i32)
                        } else {
                            b
                        }
                        .build(),
                    );
                }
            }
            let s = ClusterSnapshot {
                node_pools: vec![nodepool("default", types)],
                pods,
                ..Default::default()
            };
            (s, duals)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Pricing: the branch-and-bound search finds the enumerated optimum, HiGHS's bound is at
        /// or above it and its pattern at or below it, and every cheap bound stays above it.
        #[test]
        fn pricing_agrees_with_enumeration((s, duals) in arb_case()) {
            let pods: Vec<(usize, Vec<usize>)> = (0..s.pods.len()).map(|p| (p, vec![0])).collect();
            let model = Model::new(&s, &pods, &[], &[Resources::default()], BTreeMap::new(), false);
            let value: Vec<f64> = (0..model.groups.len()).map(|g| duals[g % duals.len()]).collect();
            for k in 0..model.configs.len() {
                let best = enumerate(&model, k, &value);
                let found = model.search(k, &value, 1_000_000, f64::INFINITY, 0);
                prop_assert!(found.proved);
                prop_assert!((found.value - best).abs() < 1e-9, "search {} vs {best}", found.value);
                let (v, fits) = worth(&model, &found.pattern, &value);
                prop_assert!(fits && (v - found.value).abs() < 1e-9);
                for bound in [
                    model.price_upper_bound(k, &value),
                    model.refined_upper_bound(k, &value, f64::INFINITY),
                    model.integer_upper_bound(k, &value),
                ] {
                    prop_assert!(bound >= best - 1e-9, "bound {bound} below {best}");
                }
                if let Some((_, greedy)) = model.price(k, &value) {
                    let (v, fits) = worth(&model, &greedy, &value);
                    prop_assert!(fits && v <= best + 1e-9);
                }
                let (bound, v, pattern) = model.exact_price(k, &value, 10.0).expect("HiGHS solves a tiny knapsack");
                let (w, fits) = worth(&model, &pattern, &value);
                prop_assert!(fits && (w - v).abs() < 1e-9);
                prop_assert!(bound >= best - 1e-9 && v <= best + 1e-9, "HiGHS {v} ≤ {bound} vs {best}");
            }
        }

        /// Pattern cuts keep the fluid LP a relaxation: with cuts its optimum is at least the
        /// plain fluid optimum and at most the pattern LP over any set of patterns (which every
        /// integer plan is a point of), and every pattern its separation found fits its config.
        #[test]
        fn fluid_cuts_stay_below_the_pattern_lp((s, _) in arb_case()) {
            let pods: Vec<(usize, Vec<usize>)> = (0..s.pods.len()).map(|p| (p, vec![0])).collect();
            let mut model = Model::new(&s, &pods, &[], &[Resources::default()], BTreeMap::new(), false);
            prop_assume!(model.fits.iter().all(|f| !f.is_empty()));
            prop_assert!(model.seed_single());
            let plain = model.fluid(10.0, &|| true).expect("the fluid LP solves").value;
            let cut = model.fluid(10.0, &|| false).expect("the fluid LP solves");
            prop_assert!(cut.value >= plain - 1e-9, "cuts lowered the bound: {} < {plain}", cut.value);
            let zero = vec![0.0; model.groups.len()];
            for p in &cut.patterns {
                prop_assert!(worth(&model, p, &zero).1, "pattern {p:?} does not fit");
            }
            model.generate(50, &|| false).expect("the LP master solves");
            prop_assert!(
                cut.value <= model.lp_value * (1.0 + 1e-6) + 1e-9,
                "fluid with cuts {} above the pattern LP {}", cut.value, model.lp_value
            );
            let counts = model.solve_integer(&[], 10.0, 0.0).expect("the integer master solves");
            let cost: f64 = model.patterns.iter().zip(&counts)
                .map(|(p, c)| model.configs[p.config].price * f64::from(*c)).sum();
            prop_assert!(cut.value <= cost * (1.0 + 1e-6) + 1e-9, "fluid with cuts {} above a plan {cost}", cut.value);
        }

        /// Diving, run to the end or cut short at once (the integer master finishes), covers
        /// every pod with patterns that fit, and costs no less than the bound column generation
        /// proved.
        #[test]
        fn diving_covers_every_pod_with_fitting_patterns((s, _) in arb_case(), cut in any::<bool>()) {
            let pods: Vec<(usize, Vec<usize>)> = (0..s.pods.len()).map(|p| (p, vec![0])).collect();
            let mut model = Model::new(&s, &pods, &[], &[Resources::default()], BTreeMap::new(), false);
            prop_assume!(model.fits.iter().all(|f| !f.is_empty()));
            prop_assert!(model.seed_single());
            model.generate(50, &|| false).expect("the LP master solves");
            let plan = model.dive_plan(DIVE_ROUNDS, &|| cut, 10.0, 0.0).expect("a plan");
            let mut covered = vec![0usize; model.groups.len()];
            let mut cost = 0.0;
            for (pattern, n) in &plan {
                prop_assert!(*n > 0 && worth(&model, pattern, &covered.iter().map(|_| 0.0).collect::<Vec<_>>()).1);
                for &(g, c) in &pattern.counts {
                    prop_assert!(c <= model.groups[g].most_per_node());
                    covered[g] += c as usize * *n as usize;
                }
                cost += model.configs[pattern.config].price * f64::from(*n);
            }
            for (g, grp) in model.groups.iter().enumerate() {
                prop_assert!(covered[g] >= grp.demand, "group {g}: {} of {}", covered[g], grp.demand);
            }
            prop_assert!(cost >= model.cg_bound - 1e-9, "plan {cost} below the bound {}", model.cg_bound);
        }
    }
}
