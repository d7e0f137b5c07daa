//! The steps of a packing run around the algorithms: which pods the MILP may move (and which stay
//! together as bundles), the NodePools' limits and overheads, the warm start from the FFD plan,
//! and the replay of the chosen pattern counts through the scheduler's own checks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::model::{is_free, provider_keys, topology_pods, Bundle, Limits, Model, Pattern};
use crate::cluster::ClusterSnapshot;
use crate::labels;
use crate::resources::Resources;
use crate::scheduling::larger_first;
use crate::scheduling::replay::Replay;
use crate::scheduling::{daemon_overhead, NewNodeClaim, SchedulerOptions, SchedulingResults};

/// NodePool indices by name.
fn pool_index(snapshot: &ClusterSnapshot) -> BTreeMap<&str, usize> {
    snapshot
        .node_pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect()
}

/// The pods of the FFD plan the MILP may move (with the one NodePool each may use), and per
/// FFD NodeClaim the constrained pods that stay together as a bundle; counts the latter in
/// `fixed_pods`.
pub(super) fn split_ffd(
    snapshot: &ClusterSnapshot,
    ffd: &SchedulingResults,
    fixed_pods: &mut usize,
) -> (Vec<(usize, Vec<usize>)>, Vec<Bundle>) {
    let pool_index = pool_index(snapshot);
    let topology = topology_pods(snapshot);
    let mut free: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut bundles: Vec<Bundle> = Vec::new();
    for c in &ffd.new_nodeclaims {
        let pool = pool_index[c.nodepool.as_str()];
        let (movable, fixed): (Vec<usize>, Vec<usize>) = c
            .pods
            .iter()
            .partition(|&&p| is_free(snapshot, &topology, &snapshot.pods[p]));
        free.extend(movable.iter().map(|&p| (p, vec![pool])));
        if !fixed.is_empty() {
            *fixed_pods += fixed.len();
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
    (free, bundles)
}

/// Limits left for the new NodeClaims after the existing nodes, for the NodePools that have
/// limits.
pub(super) fn remaining_limits(snapshot: &ClusterSnapshot) -> Limits {
    let remaining = snapshot.remaining_limits();
    snapshot
        .node_pools
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.limits.resources.is_empty() || p.limits.nodes.is_some())
        .map(|(i, p)| (i, remaining[&p.name].clone()))
        .collect()
}

/// Per NodePool, the daemonset overhead of its nodes (as the scheduler computes it).
pub(super) fn overheads(snapshot: &ClusterSnapshot) -> Vec<Resources> {
    snapshot
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
        .collect()
}

impl Model {
    /// Warm start: every FFD NodeClaim whose pods fall in at most one requirement class, as a
    /// pattern of its instance type (added to the model). Returns them, one per NodeClaim.
    pub(super) fn warm_start(
        &mut self,
        snapshot: &ClusterSnapshot,
        ffd: &SchedulingResults,
    ) -> Vec<Pattern> {
        let pool_index = pool_index(snapshot);
        let mut group_of: BTreeMap<usize, usize> = BTreeMap::new();
        for (g, grp) in self.groups.iter().enumerate() {
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
                if self.groups[g].bundle {
                    counts.insert(g, 1);
                } else {
                    *counts.entry(g).or_default() += 1;
                }
            }
            let classes: BTreeSet<usize> = counts
                .keys()
                .map(|&g| self.groups[g].class)
                .filter(|&c| c != 0)
                .collect();
            if classes.len() > 1 {
                continue;
            }
            let class = classes.iter().next().copied().unwrap_or(0);
            let k = self.configs.iter().position(|cfg| {
                cfg.pool == pool && cfg.class == class && cfg.it.name == c.cheapest.instance_type
            });
            if let Some(k) = k {
                let pattern = Pattern {
                    config: k,
                    counts: counts.into_iter().collect(),
                };
                self.add_pattern(pattern.clone());
                warm_patterns.push(pattern);
            }
        }
        warm_patterns
    }
}

/// Assign pods to the nodes of `counts` (per pattern of `model`) and replay them through the
/// scheduler's checks, the bundles' FFD NodeClaims kept: the new NodeClaims of the plan, or
/// why it cannot be built.
pub(super) fn replay_plan(
    snapshot: &ClusterSnapshot,
    options: &SchedulerOptions,
    ffd: &SchedulingResults,
    model: &Model,
    bundles: &[Bundle],
    counts: &[u32],
) -> Result<Vec<NewNodeClaim>, String> {
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
    let mut replay = Replay::new(snapshot, options, &ffd.existing, &kept);
    let mut queues: Vec<VecDeque<usize>> = model
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
            }?;
            add_largest_first(snapshot, &mut replay, claim, chosen)?;
        }
    }
    if queues.iter().any(|q| !q.is_empty()) {
        return Err("the integer master left pods uncovered".into());
    }
    replay.finish()
}

/// Add `chosen` to the replayed NodeClaim `claim`, largest pods first, as the scheduler would.
fn add_largest_first(
    snapshot: &ClusterSnapshot,
    replay: &mut Replay<'_>,
    claim: usize,
    mut chosen: Vec<usize>,
) -> Result<(), String> {
    chosen.sort_by(|a, b| {
        larger_first(&snapshot.pods[*a].requests, &snapshot.pods[*b].requests).then(a.cmp(b))
    });
    for p in chosen {
        replay.add(claim, p).map_err(|e| {
            format!(
                "replaying the MILP plan: pod {}: {e}",
                snapshot.pods[p].key()
            )
        })?;
    }
    Ok(())
}
