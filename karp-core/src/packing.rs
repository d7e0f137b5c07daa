//! Cost bounds for plans.
//!
//! [`lower_bound_per_hour`] is a bound on the hourly cost of the new nodes of *any* valid plan
//! that schedules the same pods: whatever the packing, the new nodes must supply at least the
//! demand that the free capacity of existing nodes cannot, and no instance type supplies a unit of
//! CPU or memory cheaper than the cheapest price per unit in the catalog.

use crate::cluster::ClusterSnapshot;
use crate::scheduling::SchedulingResults;

/// A lower bound on the hourly cost of the new NodeClaims of any valid plan that places the same
/// pods as `results` (never above the cost of a valid plan).
#[must_use]
pub fn lower_bound_per_hour(snapshot: &ClusterSnapshot, results: &SchedulingResults) -> f64 {
    if results.new_nodeclaims.is_empty() {
        return 0.0;
    }
    // Demand of every pod the plan schedules, and free capacity on existing nodes.
    let mut demand = crate::resources::Resources::new();
    for p in results.new_nodeclaims.iter().flat_map(|c| c.pods.iter()).chain(results.existing.iter().flat_map(|e| e.pods.iter())) {
        demand.add_assign(&snapshot.pods[*p].requests);
    }
    let mut free = crate::resources::Resources::new();
    for n in snapshot.nodes.iter().filter(|n| !n.deleting) {
        let used = snapshot
            .pods
            .iter()
            .filter(|p| p.node_name.as_deref() == Some(n.name.as_str()))
            .fold(crate::resources::Resources::new(), |acc, p| acc.plus(&p.requests));
        let f = n.allocatable.minus(&used);
        free.cpu += f.cpu.max(0);
        free.memory += f.memory.max(0);
    }
    // Cheapest price per millicore and per byte over every type any pool may launch.
    let mut per_cpu = f64::INFINITY;
    let mut per_mem = f64::INFINITY;
    for pool in &snapshot.node_pools {
        for it in &pool.instance_types {
            let Some(o) = it.offerings.iter().filter(|o| o.available).min_by(|a, b| a.price.total_cmp(&b.price)) else {
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
    let need_cpu = (demand.cpu - free.cpu).max(0) as f64;
    let need_mem = (demand.memory - free.memory).max(0) as f64;
    let mut bound: f64 = 0.0;
    if per_cpu.is_finite() {
        bound = bound.max(need_cpu * per_cpu);
    }
    if per_mem.is_finite() {
        bound = bound.max(need_mem * per_mem);
    }
    bound
}
