//! An independent validator for scheduling plans.
//!
//! It re-derives every node a plan would create (labels from the NodePool template, the chosen
//! instance type and offering) and checks, from first principles rather than through the
//! scheduler's own data structures: each pending pod is placed once; capacity (pods plus
//! daemonset overhead on every listed instance type); node selectors and required node affinity;
//! taints; host ports; NodePool limits; and topology (DoNotSchedule spread, required pod affinity
//! and anti-affinity, including anti-affinity of bound pods).
//!
//! [`validate`] runs one check per rule, in this order: placement, existing nodes, new
//! NodeClaims and NodePool limits (module `nodes`), host ports and node selection per node,
//! then topology per newly placed pod (module `topology`).

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::ClusterSnapshot;
use crate::pod::{HostPort, Pod};
use crate::scheduling::SchedulingResults;
use crate::taints::{Effect, Taint};

mod nodes;
mod topology;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node of the plan: existing, or a NodeClaim as it would launch.
struct PlanNode {
    name: String,
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    /// Possible values per topology key (a single value when pinned).
    domains: BTreeMap<String, BTreeSet<String>>,
    pods: Vec<usize>,
    new_pods: Vec<usize>,
}

impl PlanNode {
    fn domain(&self, key: &str) -> Option<&BTreeSet<String>> {
        self.domains.get(key)
    }
    fn pinned(&self, key: &str) -> Option<&str> {
        self.domains
            .get(key)
            .filter(|s| s.len() == 1)
            .and_then(|s| s.iter().next())
            .map(String::as_str)
    }
}

fn hard_taints(taints: &[Taint]) -> impl Iterator<Item = &Taint> {
    taints
        .iter()
        .filter(|t| t.effect != Effect::PreferNoSchedule)
}

fn tolerated(pod: &Pod, taints: &[Taint]) -> Option<String> {
    hard_taints(taints)
        .find(|t| !pod.tolerations.iter().any(|tol| tol.tolerates(t)))
        .map(ToString::to_string)
}

/// Validate `results` against `snapshot`.
///
/// # Errors
/// Every [`Violation`] found.
pub fn validate(
    snapshot: &ClusterSnapshot,
    results: &SchedulingResults,
) -> Result<(), Vec<Violation>> {
    let mut v: Vec<Violation> = Vec::new();
    check_placement(snapshot, results, &mut v);
    let mut plan = nodes::existing_nodes(snapshot);
    nodes::check_existing(snapshot, results, &mut plan, &mut v);
    let usage_before = snapshot.nodepool_usage();
    let mut pool_usage = usage_before.clone();
    for c in &results.new_nodeclaims {
        if let Some(node) = nodes::check_nodeclaim(snapshot, c, &mut pool_usage, &mut v) {
            plan.push(node);
        }
    }
    nodes::check_limits(snapshot, &pool_usage, &usage_before, &mut v);
    for n in &plan {
        check_host_ports(snapshot, n, &mut v);
        check_node_selection(snapshot, n, &mut v);
    }
    topology::check_topology(snapshot, &plan, &mut v);
    if v.is_empty() {
        Ok(())
    } else {
        Err(v)
    }
}

/// Every pending pod is placed (or reported unschedulable, with a reason) exactly once; bound
/// pods never.
fn check_placement(
    snapshot: &ClusterSnapshot,
    results: &SchedulingResults,
    v: &mut Vec<Violation>,
) {
    let pods = &snapshot.pods;
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let placed = results
        .new_nodeclaims
        .iter()
        .flat_map(|c| c.pods.iter())
        .chain(results.existing.iter().flat_map(|e| e.pods.iter()))
        .chain(results.unschedulable.iter().map(|u| &u.pod));
    for &p in placed {
        *seen.entry(p).or_default() += 1;
    }
    for (i, p) in pods.iter().enumerate() {
        let n = seen.get(&i).copied().unwrap_or(0);
        if p.node_name.is_none() && n != 1 {
            v.push(Violation(format!(
                "pending pod {} appears {n} times in the plan",
                p.key()
            )));
        }
        if p.node_name.is_some() && n != 0 {
            v.push(Violation(format!("bound pod {} was placed again", p.key())));
        }
    }
    for u in &results.unschedulable {
        if u.reason.trim().is_empty() {
            v.push(Violation(format!(
                "unschedulable pod {} has no reason",
                pods[u.pod].key()
            )));
        }
    }
}

/// No two pods of node `n` use conflicting host ports.
fn check_host_ports(snapshot: &ClusterSnapshot, n: &PlanNode, v: &mut Vec<Violation>) {
    let mut ports: Vec<HostPort> = Vec::new();
    for &p in &n.pods {
        for hp in &snapshot.pods[p].host_ports {
            if ports.iter().any(|u| u.conflicts(hp)) {
                v.push(Violation(format!(
                    "host port {} conflicts on node {}",
                    hp.port, n.name
                )));
            }
            ports.push(hp.clone());
        }
    }
}

/// Every pod newly placed on node `n` matches its labels (node selector, required node
/// affinity) and tolerates its hard taints.
fn check_node_selection(snapshot: &ClusterSnapshot, n: &PlanNode, v: &mut Vec<Violation>) {
    for &p in &n.new_pods {
        let pod = &snapshot.pods[p];
        if !pod.node_matches(&n.labels) {
            v.push(Violation(format!(
                "pod {} does not match the labels of node {}",
                pod.key(),
                n.name
            )));
        }
        if let Some(t) = tolerated(pod, &n.taints) {
            v.push(Violation(format!(
                "pod {} does not tolerate taint {t} of node {}",
                pod.key(),
                n.name
            )));
        }
    }
}
