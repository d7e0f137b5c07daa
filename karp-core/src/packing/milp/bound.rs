//! The LP lower bound outside a packing run, and when the MILP's own model gives it.

use std::collections::{BTreeMap, BTreeSet};

use super::budget::{Effort, WorkLimits, BOUND_FLUID_SECS};
use super::model::{pool_accepts, provider_keys, Model};
use crate::cluster::{ClusterSnapshot, NodePool};
use crate::pod::Pod;
use crate::requirements::Requirements;
use crate::resources::Resources;
use crate::scheduling::SchedulingResults;
use crate::taints::{first_untolerated, Effect};

/// Pod groups of a model with the pods each pool set allows.
/// What decides which NodePools accept a pod.
pub(super) type PodKey = (Requirements, Vec<crate::taints::Toleration>);

/// Which NodePools accept which pods, computed once per distinct (requirements, tolerations).
pub(super) struct PoolIndex<'a> {
    pub(super) snapshot: &'a ClusterSnapshot,
    pub(super) keys: Vec<BTreeSet<String>>,
    pub(super) cache: std::cell::RefCell<BTreeMap<PodKey, Vec<usize>>>,
}

impl<'a> PoolIndex<'a> {
    pub(super) fn new(snapshot: &'a ClusterSnapshot) -> Self {
        PoolIndex {
            snapshot,
            keys: snapshot.node_pools.iter().map(provider_keys).collect(),
            cache: Default::default(),
        }
    }

    pub(super) fn pools_for(&self, pod: &Pod) -> Vec<usize> {
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
pub(super) fn certain_overhead(snapshot: &ClusterSnapshot, pool: &NodePool) -> Resources {
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
/// node has room; 0 otherwise. Its HiGHS calls have time limits, or `work`'s limits when given.
pub(in crate::packing) fn pattern_bound(
    snapshot: &ClusterSnapshot,
    results: &SchedulingResults,
    max_rounds: usize,
    stop: &dyn Fn() -> bool,
    work: Option<WorkLimits>,
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
    model.work = work;
    // Conflicts and per-node limits only tighten the real problem; drop them for the bound's pricing
    // upper bound (it already ignores them) but keep them in the patterns (still valid columns).
    if model.fits.iter().any(Vec::is_empty) || !model.seed_single() {
        return 0.0;
    }
    let limit = Effort::of(work, BOUND_FLUID_SECS, |w| {
        Effort::Iterations(w.lp_iterations)
    });
    let fluid = model.fluid(limit, stop).map_or(0.0, |f| f.value);
    let farley = match model.generate(max_rounds, stop) {
        Ok((_, duals)) => model.farley_bound(&duals, fluid.max(model.cg_bound), stop),
        Err(_) => 0.0,
    };
    fluid.max(farley).max(model.cg_bound)
}

/// Whether the MILP's own model is also a relaxation of every valid plan (so its duals give the
/// lower bound): no bundles, no requirement classes, each pod's pool is the only one it could
/// use, and the daemonset overhead is the one every node certainly carries.
pub(super) fn model_is_relaxation(
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
