//! The formulation: pod groups, configs (an instance type of a NodePool under a requirement
//! class), patterns, and the [`Model`] that holds them, with the helpers every algorithm shares.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::budget::WorkLimits;
use crate::cloud::InstanceType;
use crate::cluster::{ClusterSnapshot, NodePool};
use crate::labels;
use crate::pod::{LabelSelector, NamespaceSet, Pod};
use crate::requirements::Requirements;
use crate::resources::Resources;
use crate::taints::{first_untolerated, Effect};

/// Pods with identical requests and modelled constraints.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) pods: Vec<usize>,
    pub(super) requests: Resources,
    /// NodePools (indices into the snapshot) the group may use.
    pub(super) pools: Vec<usize>,
    /// Requirement class (0 = nothing beyond the pool's template).
    pub(super) class: usize,
    /// At most this many per node (host ports or self anti-affinity), if limited.
    pub(super) per_node: Option<u32>,
    /// Groups it may not share a node with.
    pub(super) conflicts: BTreeSet<usize>,
    /// The pods' strict requirements.
    pub(super) reqs: Requirements,
    /// A bundle: the constrained pods of one FFD NodeClaim, placed together exactly once.
    pub(super) bundle: bool,
    /// How many times the group must be covered: its pod count, 1 for a bundle.
    pub(super) demand: usize,
}

impl Group {
    /// The most pods of the group one node may hold: its demand, or less under a per-node limit.
    pub(super) fn most_per_node(&self) -> u32 {
        let demand = u32::try_from(self.demand).unwrap_or(u32::MAX);
        self.per_node.map_or(demand, |l| l.min(demand))
    }
}

/// An instance type of a NodePool under a requirement class.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) pool: usize,
    pub(super) class: usize,
    pub(super) it: Arc<InstanceType>,
    pub(super) price: f64,
    /// Allocatable minus daemonset overhead.
    pub(super) room: Resources,
}

/// Whether `a` has at least as much of every resource as `b`.
pub(super) fn covers(a: &Resources, b: &Resources) -> bool {
    b.fits_in(a)
        && b.extended
            .iter()
            .all(|(k, v)| a.extended.get(k).copied().unwrap_or(0) >= *v)
}

/// Keep only configs no other config of the same pool and class dominates (cheaper or equal and
/// with at least as much room); ties keep the first by price then name.
pub(super) fn prune_dominated(mut configs: Vec<Config>) -> Vec<Config> {
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
pub(super) struct Bundle {
    pub(super) pods: Vec<usize>,
    pub(super) pool: usize,
    pub(super) requirements: Requirements,
    /// The FFD NodeClaim it comes from (hostname).
    pub(super) hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Pattern {
    pub(super) config: usize,
    pub(super) counts: Vec<(usize, u32)>,
}

/// The formulation: groups, configs, patterns.
pub(super) struct Model {
    pub(super) groups: Vec<Group>,
    pub(super) configs: Vec<Config>,
    /// Configs each group fits on.
    pub(super) fits: Vec<Vec<usize>>,
    pub(super) patterns: Vec<Pattern>,
    pub(super) seen: BTreeSet<Pattern>,
    /// Per pool: remaining resource limits and node count (None: unlimited).
    pub(super) limits: Limits,
    /// Objective of the last LP master (over the patterns generated so far).
    pub(super) lp_value: f64,
    /// The best Farley bound column generation proved on the way (0 if none).
    pub(super) cg_bound: f64,
    /// Whether every column-generation round also searches the configs that bound Farley's θ
    /// (more columns and a bound, at the cost of the searches).
    pub(super) bound_rounds: bool,
    /// Pattern counts of the last LP master (patterns added since count 0).
    pub(super) lp_solution: Vec<f64>,
    /// Work limits that replace the time limits of exact pricing (none: time limits).
    pub(super) work: Option<WorkLimits>,
}

pub(super) fn res_key(r: &Resources) -> (i64, i64, i64, i64, Vec<(String, i64)>) {
    (
        r.cpu,
        r.memory,
        r.ephemeral_storage,
        r.pods,
        r.extended.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    )
}

/// Whether a selector of `owner` matches `pod` (namespace rules applied).
pub(super) fn selects(sel: Option<LabelSelector>, ns: &NamespaceSet, pod: &Pod) -> bool {
    sel.is_some_and(|s| ns.contains(&pod.namespace) && s.matches(&pod.labels))
}

/// The pods of `snapshot` with any pod-topology term (spread, pod affinity or anti-affinity,
/// required or preferred): the only ones whose terms can count or target another pod. Most
/// snapshots have few, so [`is_free`] looks at these instead of every pod.
pub(super) fn topology_pods(snapshot: &ClusterSnapshot) -> Vec<&Pod> {
    snapshot
        .pods
        .iter()
        .filter(|o| {
            !o.topology_spread.is_empty()
                || !o.pod_affinity.is_empty()
                || !o.preferred_pod_affinity.is_empty()
                || !o.pod_anti_affinity.is_empty()
                || !o.preferred_pod_anti_affinity.is_empty()
        })
        .collect()
}

/// Whether the MILP can move this pod freely (see the module docs); `topology` is
/// [`topology_pods`] of `snapshot`.
pub(super) fn is_free(snapshot: &ClusterSnapshot, topology: &[&Pod], pod: &Pod) -> bool {
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
    !topology.iter().any(|o| {
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
pub(super) fn class_requirements(template: &Requirements, pod: &Requirements) -> Requirements {
    pod.iter()
        .filter(|r| !template.get(r.key()).is_some_and(|t| t.is_subset_of(r)))
        .cloned()
        .collect()
}

/// Whether instance type `it` can carry a node with requirements `reqs` (its labels intersect;
/// provider labels it lacks count as absent).
pub(super) fn type_matches(
    it: &InstanceType,
    reqs: &Requirements,
    provider_keys: &BTreeSet<String>,
) -> bool {
    reqs.iter().all(|r| match it.requirements.get(r.key()) {
        Some(t) => t.intersects(r),
        None => !provider_keys.contains(r.key()) || r.allows_absent(),
    })
}

pub(super) fn provider_keys(pool: &NodePool) -> BTreeSet<String> {
    pool.instance_types
        .iter()
        .flat_map(|t| t.requirements.keys().map(str::to_string))
        .collect()
}

pub(super) fn pool_accepts(pool: &NodePool, pod: &Pod, keys: &BTreeSet<String>) -> bool {
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
    pub(super) fn new(
        snapshot: &ClusterSnapshot,
        pods: &[(usize, Vec<usize>)],
        bundles: &[Bundle],
        overheads: &[Resources],
        limits: Limits,
        relaxed: bool,
    ) -> Self {
        let pools = PoolTerms {
            templates: snapshot
                .node_pools
                .iter()
                .map(NodePool::template_requirements)
                .collect(),
            keys: snapshot.node_pools.iter().map(provider_keys).collect(),
        };
        let (mut groups, classes) = group_pods(snapshot, pods, bundles, &pools.templates);
        mark_conflicts(snapshot, &mut groups);
        let mut configs = configs_of(
            snapshot, &groups, &classes, &pools, overheads, &limits, relaxed,
        );
        // Drop dominated configs (another of the same pool and class is no dearer and has at least
        // as much room in every resource): they change neither the LP, the MILP nor Farley's θ.
        // In the relaxation, fits also depend on type labels, so only prune when no group has own
        // requirements there.
        if !relaxed
            || groups
                .iter()
                .all(|g| class_requirements(&pools.templates[g.pools[0]], &g.reqs).is_empty())
        {
            configs = prune_dominated(configs);
        }
        let fits = fits_of(&groups, &configs, &pools, relaxed);
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
            work: None,
        }
    }

    pub(super) fn add_pattern(&mut self, p: Pattern) -> bool {
        if p.counts.is_empty() || self.seen.contains(&p) {
            return false;
        }
        self.seen.insert(p.clone());
        self.patterns.push(p);
        true
    }

    /// The most pods of group `g` alone that fit config `k`.
    pub(super) fn single_count(&self, g: usize, k: usize) -> u32 {
        self.fit_count(g, &self.configs[k].room)
    }

    /// How many pods of group `g` fit in `room` (capped by the group's size and per-node limit).
    pub(super) fn fit_count(&self, g: usize, room: &Resources) -> u32 {
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
    pub(super) fn seed_single(&mut self) -> bool {
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

    /// The cost of `counts` nodes of each pattern (in pattern order).
    pub(super) fn cost(&self, counts: &[f64]) -> f64 {
        self.patterns
            .iter()
            .zip(counts)
            .map(|(p, n)| self.configs[p.config].price * n)
            .sum()
    }

    /// The LP dual objective of cover duals: `Σ demand·π`.
    pub(super) fn dual_value(&self, duals: &[f64]) -> f64 {
        duals
            .iter()
            .zip(&self.groups)
            .map(|(d, g)| d * g.demand as f64)
            .sum()
    }
}

/// `need / cap` as a share of a node's room (0 when nothing is needed).
pub(super) fn share(need: i64, cap: i64) -> f64 {
    if need <= 0 {
        0.0
    } else {
        need as f64 / cap.max(1) as f64
    }
}

/// Per pool: remaining resource limits and node count (None: unlimited), for the NodePools that
/// have limits.
pub(super) type Limits = BTreeMap<usize, (BTreeMap<String, i64>, Option<i64>)>;

/// Per NodePool (by index): its template requirements and the label keys its instance types
/// define.
struct PoolTerms {
    templates: Vec<Requirements>,
    keys: Vec<BTreeSet<String>>,
}

/// A requirement class of a pod under `template`: its id, registering it in `classes` (by
/// `ids`) when new.
fn class_id(
    ids: &mut BTreeMap<Requirements, usize>,
    classes: &mut Vec<Requirements>,
    reqs: Requirements,
) -> usize {
    *ids.entry(reqs.clone()).or_insert_with(|| {
        classes.push(reqs);
        classes.len() - 1
    })
}

/// The groups of `pods` (identical requests, pools, class, host ports, tolerations,
/// anti-affinity, labels, namespace), then one group per bundle, with their demands; and the
/// requirement classes (0 = nothing beyond the pool's template).
fn group_pods(
    snapshot: &ClusterSnapshot,
    pods: &[(usize, Vec<usize>)],
    bundles: &[Bundle],
    templates: &[Requirements],
) -> (Vec<Group>, Vec<Requirements>) {
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
        let class = class_id(&mut class_ids, &mut classes, class_reqs);
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
        let class = class_id(&mut class_ids, &mut classes, class_reqs);
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
    (groups, classes)
}

/// Whether pods `pa` and `pb` may not share a node: conflicting host ports, or hostname
/// anti-affinity of either that selects the other.
fn pods_conflict(snapshot: &ClusterSnapshot, pa: &Pod, pb: &Pod) -> bool {
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
}

/// Conflicts: host ports and hostname anti-affinity (both directions), over every pod of a
/// bundle and one pod of an ordinary group (its pods are identical). A group in conflict with
/// itself gets one pod per node.
fn mark_conflicts(snapshot: &ClusterSnapshot, groups: &mut [Group]) {
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
            let conflict = ma.iter().any(|&x| {
                mb.iter()
                    .any(|&y| pods_conflict(snapshot, &snapshot.pods[x], &snapshot.pods[y]))
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
}

/// Configs: (pool, class, type) for every pool and class in use (only class 0 when
/// `relaxed`), priced at the cheapest offering the class allows, with room for at least one pod
/// after the daemonset overhead and within the pool's limits.
fn configs_of(
    snapshot: &ClusterSnapshot,
    groups: &[Group],
    classes: &[Requirements],
    pools: &PoolTerms,
    overheads: &[Resources],
    limits: &Limits,
    relaxed: bool,
) -> Vec<Config> {
    let mut configs = Vec::new();
    let mut wanted: BTreeSet<(usize, usize)> = BTreeSet::new();
    for g in groups {
        for &p in &g.pools {
            if !relaxed {
                wanted.insert((p, g.class));
            }
            wanted.insert((p, 0));
        }
    }
    for &(p, class) in &wanted {
        let pool = &snapshot.node_pools[p];
        let reqs = pools.templates[p].intersect(&classes[class]);
        for it in &pool.instance_types {
            if !type_matches(it, &reqs, &pools.keys[p]) {
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
    configs
}

/// Per group, the configs it fits: its pools, its class (or, `relaxed`, the types its own
/// requirements allow), and room for one of its pods.
fn fits_of(
    groups: &[Group],
    configs: &[Config],
    pools: &PoolTerms,
    relaxed: bool,
) -> Vec<Vec<usize>> {
    groups
        .iter()
        .map(|g| {
            (0..configs.len())
                .filter(|&k| {
                    let c = &configs[k];
                    let class_ok = if relaxed {
                        type_matches(
                            &c.it,
                            &pools.templates[c.pool].intersect(&g.reqs),
                            &pools.keys[c.pool],
                        )
                    } else {
                        g.class == 0 || g.class == c.class
                    };
                    g.pools.contains(&c.pool) && class_ok && g.requests.fits_in(&c.room)
                })
                .collect()
        })
        .collect()
}
