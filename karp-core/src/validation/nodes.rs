//! The nodes of a plan: existing nodes with the pods the plan adds, and each new NodeClaim as it
//! would launch (labels, offering, capacity), with the NodePool limits they use.

use std::collections::{BTreeMap, BTreeSet};

use super::{tolerated, PlanNode, Violation};
use crate::cloud::InstanceType;
use crate::cluster::{ClusterSnapshot, NodePool};
use crate::labels;
use crate::resources::Resources;
use crate::scheduling::{NewNodeClaim, SchedulingResults};

/// Per NodePool: resources and node count in use.
type Usage = BTreeMap<String, (Resources, i64)>;

/// The snapshot's nodes with the pods bound to them.
pub(super) fn existing_nodes(snapshot: &ClusterSnapshot) -> Vec<PlanNode> {
    let pods = &snapshot.pods;
    snapshot
        .nodes
        .iter()
        .map(|n| {
            let domains = n
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), [v.clone()].into_iter().collect()))
                .collect();
            let bound: Vec<usize> = (0..pods.len())
                .filter(|&i| pods[i].node_name.as_deref() == Some(n.name.as_str()))
                .collect();
            PlanNode {
                name: n.name.clone(),
                labels: n.labels.clone(),
                taints: n.taints.clone(),
                domains,
                pods: bound,
                new_pods: vec![],
            }
        })
        .collect()
}

/// The plan's pods on existing nodes (`plan`, in snapshot order): the node exists and is not
/// being deleted, and has room for them in the resources they request. Adds them to `plan`.
pub(super) fn check_existing(
    snapshot: &ClusterSnapshot,
    results: &SchedulingResults,
    plan: &mut [PlanNode],
    v: &mut Vec<Violation>,
) {
    let pods = &snapshot.pods;
    let node_index: BTreeMap<&str, usize> = snapshot
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    for e in &results.existing {
        let Some(&i) = node_index.get(e.node.as_str()) else {
            v.push(Violation(format!(
                "plan places pods on unknown node {}",
                e.node
            )));
            continue;
        };
        let sn = &snapshot.nodes[i];
        if sn.deleting {
            v.push(Violation(format!(
                "plan places pods on deleting node {}",
                e.node
            )));
        }
        let node = &mut plan[i];
        node.pods.extend(e.pods.iter().copied());
        node.new_pods.extend(e.pods.iter().copied());
        let used = node
            .pods
            .iter()
            .fold(Resources::new(), |a, &p| a.plus(&pods[p].requests));
        // Like kube-scheduler, a new pod only needs room in the resources it requests; a node
        // already over-committed in others (by bound pods) is not the plan's doing.
        let requested: BTreeSet<String> = e
            .pods
            .iter()
            .flat_map(|&p| pods[p].requests.iter().map(|(k, _)| k.to_string()))
            .collect();
        let over: Vec<String> = used
            .exceeding(&sn.allocatable)
            .into_iter()
            .filter(|r| requested.contains(r))
            .collect();
        if !over.is_empty() {
            v.push(Violation(format!(
                "node {} is over capacity in {}: {} needed, {} allocatable",
                e.node,
                over.join(", "),
                used.describe(),
                sn.allocatable.describe()
            )));
        }
    }
}

/// One new NodeClaim: its NodePool exists, its options hold the chosen type cheapest first, the
/// node it launches has the template's labels and meets the NodePool's requirements, the chosen
/// offering exists, and its pods plus daemonset overhead fit every option. Counts it in
/// `usage` and returns the node it launches, unless it cannot be derived.
pub(super) fn check_nodeclaim(
    snapshot: &ClusterSnapshot,
    c: &NewNodeClaim,
    usage: &mut Usage,
    v: &mut Vec<Violation>,
) -> Option<PlanNode> {
    let (pool, chosen) = nodeclaim_pool_and_type(snapshot, c, v)?;
    let node_labels = node_labels(pool, c, chosen, v);
    check_offering(c, chosen, v);
    check_nodeclaim_fit(snapshot, pool, c, &node_labels, v);
    let mut domains: BTreeMap<String, BTreeSet<String>> = node_labels
        .iter()
        .map(|(k, val)| (k.clone(), [val.clone()].into_iter().collect()))
        .collect();
    // Zones stay open unless the requirements pin them.
    for key in [labels::ZONE, labels::CAPACITY_TYPE] {
        if let Some(r) = c.requirements.get(key) {
            if r.len().is_some_and(|n| n > 1) {
                domains.insert(
                    key.into(),
                    r.values().into_iter().map(String::from).collect(),
                );
            }
        }
    }
    let e = usage.entry(pool.name.clone()).or_default();
    e.0.add_assign(&chosen.capacity);
    e.1 += 1;
    Some(PlanNode {
        name: c.hostname.clone(),
        labels: node_labels,
        taints: pool.taints.clone(),
        domains,
        pods: c.pods.clone(),
        new_pods: c.pods.clone(),
    })
}

/// The NodeClaim's NodePool and chosen instance type (which must be among its options, the
/// first of them); `None` when either cannot be found.
fn nodeclaim_pool_and_type<'a>(
    snapshot: &'a ClusterSnapshot,
    c: &'a NewNodeClaim,
    v: &mut Vec<Violation>,
) -> Option<(&'a NodePool, &'a InstanceType)> {
    // The last NodePool of that name, as a map by name would give.
    let Some(pool) = snapshot.node_pools.iter().rfind(|p| p.name == c.nodepool) else {
        v.push(Violation(format!(
            "nodeclaim {} uses unknown nodepool {}",
            c.hostname, c.nodepool
        )));
        return None;
    };
    if c.instance_types.is_empty() {
        v.push(Violation(format!(
            "nodeclaim {} has no instance type options",
            c.hostname
        )));
        return None;
    }
    let Some(chosen) = c
        .instance_types
        .iter()
        .find(|t| t.name == c.cheapest.instance_type)
    else {
        v.push(Violation(format!(
            "nodeclaim {}: chosen type {} is not among its options",
            c.hostname, c.cheapest.instance_type
        )));
        return None;
    };
    if c.instance_types[0].name != chosen.name {
        v.push(Violation(format!(
            "nodeclaim {}: options are not ordered cheapest first",
            c.hostname
        )));
    }
    Some((pool, chosen))
}

/// The labels of the node the launch is expected to produce (instance type, NodeClaim labels,
/// the template's single-valued requirements, NodePool, offering, hostname); checks that the
/// template's labels are there and that they meet the NodePool's requirements.
fn node_labels(
    pool: &NodePool,
    c: &NewNodeClaim,
    chosen: &InstanceType,
    v: &mut Vec<Violation>,
) -> BTreeMap<String, String> {
    let mut node_labels: BTreeMap<String, String> = BTreeMap::new();
    for r in chosen.requirements.iter() {
        if let Some(val) = r.single_value() {
            node_labels.insert(r.key().into(), val.into());
        }
    }
    for (k, val) in &pool.labels {
        if c.labels.get(k) != Some(val) {
            v.push(Violation(format!(
                "nodeclaim {}: template label {k}={val} is missing",
                c.hostname
            )));
        }
    }
    for (k, val) in &c.labels {
        node_labels.insert(k.clone(), val.clone());
    }
    for r in pool.requirements.iter() {
        if let Some(val) = r.single_value() {
            node_labels
                .entry(r.key().into())
                .or_insert_with(|| val.into());
        }
    }
    node_labels.insert(labels::NODEPOOL.into(), pool.name.clone());
    node_labels.insert(labels::ZONE.into(), c.cheapest.zone.clone());
    node_labels.insert(
        labels::CAPACITY_TYPE.into(),
        c.cheapest.capacity_type.clone(),
    );
    node_labels.insert(labels::HOSTNAME.into(), c.hostname.clone());
    if !pool.requirements.matches_labels(&node_labels) {
        v.push(Violation(format!(
            "nodeclaim {}: node labels violate nodepool {} requirements",
            c.hostname, pool.name
        )));
    }
    node_labels
}

/// The chosen offering (zone, capacity type, price) exists and is available.
fn check_offering(c: &NewNodeClaim, chosen: &InstanceType, v: &mut Vec<Violation>) {
    let offering_ok = chosen.offerings.iter().any(|o| {
        o.available
            && o.zone == c.cheapest.zone
            && o.capacity_type == c.cheapest.capacity_type
            && (o.price - c.cheapest.price).abs() < 1e-9
    });
    if !offering_ok {
        v.push(Violation(format!(
            "nodeclaim {}: offering {}/{} of {} does not exist",
            c.hostname, c.cheapest.zone, c.cheapest.capacity_type, chosen.name
        )));
    }
}

/// The NodeClaim's pods plus the daemonset overhead (derived independently from the node's
/// labels and the pool's taints) fit every option, and every option meets its requirements.
fn check_nodeclaim_fit(
    snapshot: &ClusterSnapshot,
    pool: &NodePool,
    c: &NewNodeClaim,
    node_labels: &BTreeMap<String, String>,
    v: &mut Vec<Violation>,
) {
    let mut overhead = Resources::new();
    for ds in &snapshot.daemonsets {
        if tolerated(ds, &pool.taints).is_none() && ds.node_matches(node_labels) {
            overhead.add_assign(&ds.requests);
        }
    }
    let mut total = c
        .pods
        .iter()
        .fold(overhead, |a, &p| a.plus(&snapshot.pods[p].requests));
    total.pods = total.pods.max(0);
    for it in &c.instance_types {
        if !total.fits_in(it.allocatable()) {
            v.push(Violation(format!(
                "nodeclaim {}: {} does not fit instance type {} ({})",
                c.hostname,
                total.describe(),
                it.name,
                it.allocatable().describe()
            )));
        }
        if !it.requirements.intersects(&c.requirements) {
            v.push(Violation(format!(
                "nodeclaim {}: option {} violates its requirements",
                c.hostname, it.name
            )));
        }
    }
}

/// No NodePool exceeds a limit (resources or nodes) it did not already exceed before the plan.
pub(super) fn check_limits(
    snapshot: &ClusterSnapshot,
    usage: &Usage,
    usage_before: &Usage,
    v: &mut Vec<Violation>,
) {
    for pool in &snapshot.node_pools {
        let (used, count) = usage.get(&pool.name).cloned().unwrap_or_default();
        let before = usage_before.get(&pool.name).cloned().unwrap_or_default();
        for (k, lim) in &pool.limits.resources {
            if used.get(k) > *lim && used.get(k) > before.0.get(k) {
                v.push(Violation(format!(
                    "nodepool {} exceeds its {k} limit",
                    pool.name
                )));
            }
        }
        if let Some(n) = pool.limits.nodes {
            if count > n && count > before.1 {
                v.push(Violation(format!(
                    "nodepool {} exceeds its nodes limit",
                    pool.name
                )));
            }
        }
    }
}
