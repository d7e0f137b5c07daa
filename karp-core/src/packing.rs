//! Cost bounds for plans.
//!
//! [`lower_bound_per_hour`] bounds the hourly cost of the new nodes of *any* valid plan that
//! schedules the same pods. For each resource (CPU, memory) every pod is charged the cheapest
//! price per unit among the instance types and offerings it could run on (the NodePools it
//! tolerates and whose requirements it is compatible with); free capacity on existing nodes is
//! assumed to absorb the most expensive demand first (a fractional knapsack), and the bound is the
//! larger of the two resources. Packing constraints only make real plans dearer.

use crate::cluster::ClusterSnapshot;
use crate::labels;
use crate::pod::Pod;
use crate::scheduling::SchedulingResults;
use crate::taints::first_untolerated;

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
    for &p in placed {
        let pod = &snapshot.pods[p];
        let (per_cpu, per_mem) = unit_prices(snapshot, pod);
        cpu_items.push((per_cpu, pod.requests.cpu as f64));
        mem_items.push((per_mem, pod.requests.memory as f64));
    }
    let mut free_cpu = 0.0;
    let mut free_mem = 0.0;
    for n in snapshot.nodes.iter().filter(|n| !n.deleting) {
        let used = snapshot
            .pods
            .iter()
            .filter(|p| p.node_name.as_deref() == Some(n.name.as_str()))
            .fold(crate::resources::Resources::new(), |acc, p| {
                acc.plus(&p.requests)
            });
        let f = n.allocatable.minus(&used);
        free_cpu += f.cpu.max(0) as f64;
        free_mem += f.memory.max(0) as f64;
    }
    knapsack(cpu_items, free_cpu).max(knapsack(mem_items, free_mem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knapsack_absorbs_the_priciest_demand_first() {
        assert_eq!(knapsack(vec![(1.0, 10.0), (3.0, 5.0)], 5.0), 10.0);
        assert_eq!(knapsack(vec![(1.0, 10.0)], 20.0), 0.0);
    }
}
