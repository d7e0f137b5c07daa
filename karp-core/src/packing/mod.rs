//! Packers and cost bounds.
//!
//! A [`Packer`] turns a snapshot into a plan. [`Ffd`] is Karpenter's first-fit-decreasing
//! scheduler as is; `Milp` (feature `milp`) re-packs what it can model with a pattern
//! (column-generation) formulation solved by HiGHS, and falls back to the FFD plan whenever it
//! cannot prove a plan at least as cheap. `Milp`'s plan depends on its time limits unless its
//! `work_limits` are set (see its documentation and the crate's `Determinism` section).
//!
//! [`lower_bound_per_hour`] bounds the hourly cost of the new nodes of *any* valid plan that
//! schedules the same pods. For each resource (CPU, memory) every pod is charged the cheapest
//! price per unit among the instance types and offerings it could run on (the NodePools it
//! tolerates and whose requirements it is compatible with); free capacity on existing nodes is
//! assumed to absorb the most expensive demand first (a fractional knapsack), and the bound is the
//! larger of the two resources. Packing constraints only make real plans dearer.

#[cfg(feature = "milp")]
pub mod flexibility;
#[cfg(feature = "milp")]
mod milp;

#[cfg(feature = "milp")]
pub use milp::{Clock, Milp, WorkLimits, EXACT_MAX_PATTERNS, EXACT_MAX_VISITS};

use crate::cluster::ClusterSnapshot;
use crate::labels;
use crate::pod::Pod;
use crate::scheduling::{schedule, SchedulerOptions, SchedulingResults};
use crate::taints::first_untolerated;

/// Counters of a packing run (the operator and benches report them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackStats {
    /// Pod groups (identical requests and constraints) the MILP modelled.
    pub groups: usize,
    /// Patterns (columns) generated.
    pub columns: usize,
    /// Column-generation rounds.
    pub rounds: usize,
    /// Pods left on their FFD NodeClaims because the MILP does not model their constraints.
    pub fixed_pods: usize,
    /// Cost of the FFD plan the MILP started from.
    pub ffd_cost: f64,
    /// Value of the last LP master of column generation (over the generated patterns).
    pub lp_cost: f64,
    /// Whether the MILP's plan came from diving (residual rounding that fixes the LP's whole
    /// nodes, or its largest fractional one, and re-solves the rest, repeatedly) rather than the
    /// integer master over every pattern.
    pub residual: bool,
    /// Whether the problem was small enough for the exact integer master over every maximal
    /// pattern (then `columns` counts them; see `EXACT_MAX_PATTERNS`).
    pub exact: bool,
    /// Whether the exact integer master proved its plan optimal.
    pub optimal: bool,
}

/// A packed plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PackResult {
    /// The plan.
    pub results: SchedulingResults,
    /// No valid plan that places the same pods costs less per hour.
    pub lower_bound_per_hour: f64,
    /// The packer that produced the plan (`ffd`, or `milp` when its plan was kept).
    pub packer: &'static str,
    /// Why the MILP plan was not used, when it was not.
    pub fallback: Option<String>,
    /// Counters.
    pub stats: PackStats,
}

/// Something that packs pending pods onto nodes.
pub trait Packer {
    /// Short name (`ffd`, `milp`).
    fn name(&self) -> &'static str;
    /// Plan the snapshot's pending pods.
    fn pack(&self, snapshot: &ClusterSnapshot) -> PackResult;
}

/// Karpenter's first-fit-decreasing scheduler.
#[derive(Debug, Clone, Default)]
pub struct Ffd {
    /// Scheduler options.
    pub options: SchedulerOptions,
}

impl Packer for Ffd {
    fn name(&self) -> &'static str {
        "ffd"
    }

    fn pack(&self, snapshot: &ClusterSnapshot) -> PackResult {
        let results = schedule(snapshot, &self.options);
        // The quick per-unit bound; the MILP packer computes the LP bound.
        let lower_bound_per_hour = lower_bound_per_hour(snapshot, &results);
        let stats = PackStats {
            ffd_cost: results.cost_per_hour(),
            ..Default::default()
        };
        PackResult {
            results,
            lower_bound_per_hour,
            packer: "ffd",
            fallback: None,
            stats,
        }
    }
}

/// The best lower bound karp can compute for a plan: the larger of the per-unit price bound
/// ([`lower_bound_per_hour`]) and, with the `milp` feature, the LP bounds of the MILP's
/// formulation: the fluid LP (fractional nodes, CPU and memory kept together per node, whole-pod
/// fit counts, pattern cuts) and Farley's bound on the pattern LP (valid when no existing node
/// has room).
///
/// # Caveats
/// The LP bounds' HiGHS calls have wall-clock time limits (the fluid LP 30 s, each exact pricing
/// 0.1 s): the value is always a valid bound, but on large snapshots it can depend on timing.
#[must_use]
pub fn lower_bound(snapshot: &ClusterSnapshot, results: &SchedulingResults) -> f64 {
    let simple = lower_bound_per_hour(snapshot, results);
    #[cfg(feature = "milp")]
    {
        simple.max(milp::pattern_bound(
            snapshot,
            results,
            milp::BOUND_ROUNDS,
            &|| false,
            None,
        ))
    }
    #[cfg(not(feature = "milp"))]
    {
        simple
    }
}

/// Cheapest price per millicore and per byte among the offerings `pod` could use.
fn unit_prices(snapshot: &ClusterSnapshot, pod: &Pod) -> (f64, f64) {
    let strict = pod.strict_requirements();
    let mut per_cpu = f64::INFINITY;
    let mut per_mem = f64::INFINITY;
    for pool in &snapshot.node_pools {
        if first_untolerated(&pool.taints, &pod.tolerations)
            .is_some_and(|t| t.effect != crate::taints::Effect::PreferNoSchedule)
        {
            continue;
        }
        let template = pool.template_requirements();
        let known = |k: &str| {
            labels::is_well_known(k)
                || pool
                    .instance_types
                    .iter()
                    .any(|t| t.requirements.has_key(k))
        };
        if template.compatible(&strict, &known).is_err() {
            continue;
        }
        let reqs = template.intersect(&strict);
        for it in &pool.instance_types {
            if !it.requirements.intersects(&reqs) {
                continue;
            }
            let Some(o) = it.cheapest_offering(&reqs) else {
                continue;
            };
            let a = it.allocatable();
            if a.cpu > 0 {
                per_cpu = per_cpu.min(o.price / a.cpu as f64);
            }
            if a.memory > 0 {
                per_mem = per_mem.min(o.price / a.memory as f64);
            }
        }
    }
    (per_cpu, per_mem)
}

/// Charge `demand` units at `price` each, after `free` units of the priciest demand are absorbed.
fn knapsack(mut items: Vec<(f64, f64)>, mut free: f64) -> f64 {
    items.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut total = 0.0;
    for (price, mut amount) in items {
        let absorbed = free.min(amount);
        free -= absorbed;
        amount -= absorbed;
        if price.is_finite() {
            total += price * amount;
        }
    }
    total
}

/// A lower bound on the hourly cost of the new NodeClaims of any valid plan that places the same
/// pods as `results` (never above the cost of a valid plan).
#[must_use]
pub fn lower_bound_per_hour(snapshot: &ClusterSnapshot, results: &SchedulingResults) -> f64 {
    if results.new_nodeclaims.is_empty() {
        return 0.0;
    }
    let placed = results
        .new_nodeclaims
        .iter()
        .flat_map(|c| c.pods.iter())
        .chain(results.existing.iter().flat_map(|e| e.pods.iter()));
    let mut cpu_items = Vec::new();
    let mut mem_items = Vec::new();
    // Pods with the same requirements and tolerations have the same unit prices.
    let mut cache: std::collections::BTreeMap<
        (
            crate::requirements::Requirements,
            Vec<crate::taints::Toleration>,
        ),
        (f64, f64),
    > = std::collections::BTreeMap::new();
    for &p in placed {
        let pod = &snapshot.pods[p];
        let key = (pod.strict_requirements(), pod.tolerations.clone());
        let (per_cpu, per_mem) = *cache
            .entry(key)
            .or_insert_with(|| unit_prices(snapshot, pod));
        cpu_items.push((per_cpu, pod.requests.cpu as f64));
        mem_items.push((per_mem, pod.requests.memory as f64));
    }
    let mut free_cpu = 0.0;
    let mut free_mem = 0.0;
    for (_, f) in snapshot.free_capacity() {
        free_cpu += f.cpu.max(0) as f64;
        free_mem += f.memory.max(0) as f64;
    }
    knapsack(cpu_items, free_cpu).max(knapsack(mem_items, free_mem))
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn knapsack_absorbs_the_priciest_demand_first() {
        assert_eq!(knapsack(vec![(1.0, 10.0), (3.0, 5.0)], 5.0), 10.0);
        assert_eq!(knapsack(vec![(1.0, 10.0)], 20.0), 0.0);
    }
}

#[cfg(all(test, feature = "milp"))]
mod tests;
