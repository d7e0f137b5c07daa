//! An independent validator for scheduling plans.
//!
//! It re-derives every node a plan would create (labels from the NodePool template, the chosen
//! instance type and offering) and checks, from first principles rather than through the
//! scheduler's own data structures: each pending pod is placed once; capacity (pods plus
//! daemonset overhead on every listed instance type); node selectors and required node affinity;
//! taints; host ports; NodePool limits; and topology (DoNotSchedule spread, required pod affinity
//! and anti-affinity, including anti-affinity of bound pods).

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{ClusterSnapshot, NodePool};
use crate::labels;
use crate::pod::{InclusionPolicy, Pod, WhenUnsatisfiable};
use crate::resources::Resources;
use crate::scheduling::SchedulingResults;
use crate::taints::{Effect, Taint};

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
    let mut err = |s: String| v.push(Violation(s));
    let pods = &snapshot.pods;
    let pools: BTreeMap<&str, &NodePool> = snapshot
        .node_pools
        .iter()
        .map(|p| (p.name.as_str(), p))
        .collect();

    // 1. Every pending pod exactly once; bound pods never.
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
            err(format!(
                "pending pod {} appears {n} times in the plan",
                p.key()
            ));
        }
        if p.node_name.is_some() && n != 0 {
            err(format!("bound pod {} was placed again", p.key()));
        }
    }
    for u in &results.unschedulable {
        if u.reason.trim().is_empty() {
            err(format!(
                "unschedulable pod {} has no reason",
                pods[u.pod].key()
            ));
        }
    }

    // 2. Build plan nodes.
    let mut nodes: Vec<PlanNode> = Vec::new();
    let by_name: BTreeMap<&str, usize> = snapshot
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut node_index: BTreeMap<String, usize> = BTreeMap::new();
    for n in &snapshot.nodes {
        let domains = n
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), [v.clone()].into_iter().collect()))
            .collect();
        let bound: Vec<usize> = (0..pods.len())
            .filter(|&i| pods[i].node_name.as_deref() == Some(n.name.as_str()))
            .collect();
        node_index.insert(n.name.clone(), nodes.len());
        nodes.push(PlanNode {
            name: n.name.clone(),
            labels: n.labels.clone(),
            taints: n.taints.clone(),
            domains,
            pods: bound,
            new_pods: vec![],
        });
    }
    for e in &results.existing {
        let Some(&i) = node_index.get(&e.node) else {
            err(format!("plan places pods on unknown node {}", e.node));
            continue;
        };
        let sn = &snapshot.nodes[by_name[e.node.as_str()]];
        if sn.deleting {
            err(format!("plan places pods on deleting node {}", e.node));
        }
        nodes[i].pods.extend(e.pods.iter().copied());
        nodes[i].new_pods.extend(e.pods.iter().copied());
        let used = nodes[i]
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
            err(format!(
                "node {} is over capacity in {}: {} needed, {} allocatable",
                e.node,
                over.join(", "),
                used.describe(),
                sn.allocatable.describe()
            ));
        }
    }
    let usage_before = snapshot.nodepool_usage();
    let mut pool_usage: BTreeMap<String, (Resources, i64)> = usage_before.clone();
    for c in &results.new_nodeclaims {
        let Some(pool) = pools.get(c.nodepool.as_str()) else {
            err(format!(
                "nodeclaim {} uses unknown nodepool {}",
                c.hostname, c.nodepool
            ));
            continue;
        };
        if c.instance_types.is_empty() {
            err(format!(
                "nodeclaim {} has no instance type options",
                c.hostname
            ));
            continue;
        }
        let Some(chosen) = c
            .instance_types
            .iter()
            .find(|t| t.name == c.cheapest.instance_type)
        else {
            err(format!(
                "nodeclaim {}: chosen type {} is not among its options",
                c.hostname, c.cheapest.instance_type
            ));
            continue;
        };
        if c.instance_types[0].name != chosen.name {
            err(format!(
                "nodeclaim {}: options are not ordered cheapest first",
                c.hostname
            ));
        }
        // Labels of the node the launch is expected to produce.
        let mut node_labels: BTreeMap<String, String> = BTreeMap::new();
        for r in chosen.requirements.iter() {
            if let Some(v) = r.single_value() {
                node_labels.insert(r.key().into(), v.into());
            }
        }
        for (k, val) in &pool.labels {
            if c.labels.get(k) != Some(val) {
                err(format!(
                    "nodeclaim {}: template label {k}={val} is missing",
                    c.hostname
                ));
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
            err(format!(
                "nodeclaim {}: node labels violate nodepool {} requirements",
                c.hostname, pool.name
            ));
        }
        let offering_ok = chosen.offerings.iter().any(|o| {
            o.available
                && o.zone == c.cheapest.zone
                && o.capacity_type == c.cheapest.capacity_type
                && (o.price - c.cheapest.price).abs() < 1e-9
        });
        if !offering_ok {
            err(format!(
                "nodeclaim {}: offering {}/{} of {} does not exist",
                c.hostname, c.cheapest.zone, c.cheapest.capacity_type, chosen.name
            ));
        }
        // Daemonset overhead, derived independently.
        let mut overhead = Resources::new();
        for ds in &snapshot.daemonsets {
            if tolerated(ds, &pool.taints).is_none() && ds.node_matches(&node_labels) {
                overhead.add_assign(&ds.requests);
            }
        }
        let mut total = c
            .pods
            .iter()
            .fold(overhead, |a, &p| a.plus(&pods[p].requests));
        total.pods = total.pods.max(0);
        for it in &c.instance_types {
            if !total.fits_in(it.allocatable()) {
                err(format!(
                    "nodeclaim {}: {} does not fit instance type {} ({})",
                    c.hostname,
                    total.describe(),
                    it.name,
                    it.allocatable().describe()
                ));
            }
            if !it.requirements.intersects(&c.requirements) {
                err(format!(
                    "nodeclaim {}: option {} violates its requirements",
                    c.hostname, it.name
                ));
            }
        }
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
        let e = pool_usage.entry(pool.name.clone()).or_default();
        e.0.add_assign(&chosen.capacity);
        e.1 += 1;
        nodes.push(PlanNode {
            name: c.hostname.clone(),
            labels: node_labels,
            taints: pool.taints.clone(),
            domains,
            pods: c.pods.clone(),
            new_pods: c.pods.clone(),
        });
    }
    // Limits.
    for pool in &snapshot.node_pools {
        let (used, count) = pool_usage.get(&pool.name).cloned().unwrap_or_default();
        let before = usage_before.get(&pool.name).cloned().unwrap_or_default();
        for (k, lim) in &pool.limits.resources {
            if used.get(k) > *lim && used.get(k) > before.0.get(k) {
                err(format!("nodepool {} exceeds its {k} limit", pool.name));
            }
        }
        if let Some(n) = pool.limits.nodes {
            if count > n && count > before.1 {
                err(format!("nodepool {} exceeds its nodes limit", pool.name));
            }
        }
    }

    // 3. Per-node rules for newly placed pods.
    let mut pod_node: BTreeMap<usize, usize> = BTreeMap::new();
    for (ni, n) in nodes.iter().enumerate() {
        for &p in &n.pods {
            pod_node.insert(p, ni);
        }
    }
    for n in &nodes {
        let mut ports = Vec::new();
        for &p in &n.pods {
            for hp in &pods[p].host_ports {
                if ports.iter().any(|u: &crate::pod::HostPort| u.conflicts(hp)) {
                    err(format!(
                        "host port {} conflicts on node {}",
                        hp.port, n.name
                    ));
                }
                ports.push(hp.clone());
            }
        }
        for &p in &n.new_pods {
            let pod = &pods[p];
            if !pod.node_matches(&n.labels) {
                err(format!(
                    "pod {} does not match the labels of node {}",
                    pod.key(),
                    n.name
                ));
            }
            if let Some(t) = tolerated(pod, &n.taints) {
                err(format!(
                    "pod {} does not tolerate taint {t} of node {}",
                    pod.key(),
                    n.name
                ));
            }
        }
    }

    // 4. Topology.
    let universe = |key: &str, pod: &Pod| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for pool in &snapshot.node_pools {
            let t = pool.template_requirements();
            for it in &pool.instance_types {
                let r = t.intersect(&it.requirements);
                if let Some(req) = r.get(key) {
                    out.extend(req.values().into_iter().map(String::from));
                }
            }
        }
        for n in &snapshot.nodes {
            if let Some(v) = n.labels.get(key) {
                out.insert(v.clone());
            }
        }
        let strict = pod.strict_requirements();
        out.retain(|d| strict.get(key).is_none_or(|r| r.has(d)));
        out
    };
    for n in &nodes {
        for &p in &n.new_pods {
            let pod = &pods[p];
            for tsc in pod
                .topology_spread
                .iter()
                .filter(|t| t.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule)
            {
                let Some(sel) = pod.spread_selector(tsc) else {
                    continue;
                };
                let key = tsc.topology_key.as_str();
                let Some(d) = n.pinned(key) else {
                    err(format!("pod {} has a spread constraint on {key} but its node is not pinned to one domain", pod.key()));
                    continue;
                };
                let honors = |node: &PlanNode| {
                    (tsc.node_affinity_policy == InclusionPolicy::Ignore
                        || pod.node_matches(&node.labels))
                        && (tsc.node_taints_policy == InclusionPolicy::Ignore
                            || tolerated(pod, &node.taints).is_none())
                };
                let mut counts: BTreeMap<&str, i32> = BTreeMap::new();
                let mut slack = 0;
                for m in &nodes {
                    let Some(md) = m.pinned(key) else { continue };
                    if !honors(m) {
                        continue;
                    }
                    for &q in &m.pods {
                        let qp = &pods[q];
                        if qp.namespace == pod.namespace && sel.matches(&qp.labels) {
                            *counts.entry(md).or_default() += 1;
                            let owner = qp.topology_spread.iter().any(|t| {
                                t.topology_key == key && qp.spread_selector(t) == Some(sel.clone())
                            });
                            if md == d && qp.node_name.is_none() && !owner {
                                slack += 1;
                            }
                        }
                    }
                }
                let min = if key == labels::HOSTNAME {
                    0
                } else {
                    let dom = universe(key, pod);
                    let min = dom
                        .iter()
                        .map(|x| counts.get(x.as_str()).copied().unwrap_or(0))
                        .min()
                        .unwrap_or(0);
                    if tsc.min_domains.is_some_and(|m| (dom.len() as i32) < m) {
                        0
                    } else {
                        min
                    }
                };
                let c = counts.get(d).copied().unwrap_or(0);
                if c - min > tsc.max_skew + slack {
                    err(format!("pod {} violates spread on {key}: domain {d} has {c}, min {min}, maxSkew {}", pod.key(), tsc.max_skew));
                }
            }
            for term in &pod.pod_affinity {
                let Some(sel) = pod.term_selector(term) else {
                    continue;
                };
                let ns = pod.term_namespaces(term, &snapshot.namespaces);
                let key = term.topology_key.as_str();
                let Some(d) = n.pinned(key) else {
                    err(format!(
                        "pod {} has pod affinity on {key} but its node is not pinned to one domain",
                        pod.key()
                    ));
                    continue;
                };
                let matching: Vec<(usize, Option<&str>)> = pod_node
                    .iter()
                    .filter(|(q, _)| {
                        **q != p
                            && ns.contains(&pods[**q].namespace)
                            && sel.matches(&pods[**q].labels)
                    })
                    .map(|(q, ni)| (*q, nodes[*ni].pinned(key)))
                    .collect();
                let joined = matching.iter().any(|(_, md)| *md == Some(d));
                // A pod matching its own affinity may start a group where no matching pod exists yet.
                let bootstrap = sel.matches(&pod.labels) && ns.contains(&pod.namespace);
                if bootstrap && !joined {
                    // ...but only once: other new pods of the same group must not be elsewhere
                    // unless matching pods already ran there.
                    // Two new owners of the same term, each alone in a different domain.
                    let alone = |q: usize, dq: Option<&str>| {
                        !matching
                            .iter()
                            .any(|(r, mr)| *r != q && *mr == dq && dq.is_some())
                    };
                    let split = matching.iter().any(|(q, md)| {
                        pods[*q].node_name.is_none()
                            && pods[*q].pod_affinity.contains(term)
                            && *md != Some(d)
                            && alone(*q, *md)
                    });
                    if split {
                        err(format!(
                            "pod {} started a second {key} domain {d} for its pod affinity group",
                            pod.key()
                        ));
                    }
                }
                if !joined && !bootstrap {
                    err(format!(
                        "pod {} violates pod affinity on {key}: no matching pod in {d}",
                        pod.key()
                    ));
                }
            }
            for term in &pod.pod_anti_affinity {
                let Some(sel) = pod.term_selector(term) else {
                    continue;
                };
                let ns = pod.term_namespaces(term, &snapshot.namespaces);
                let key = term.topology_key.as_str();
                let Some(mine) = n.domain(key) else { continue };
                for (&q, &ni) in &pod_node {
                    if q != p && ns.contains(&pods[q].namespace) && sel.matches(&pods[q].labels) {
                        if let Some(theirs) = nodes[ni].domain(key) {
                            if !mine.is_disjoint(theirs) {
                                err(format!(
                                    "pod {} violates pod anti-affinity on {key} with pod {}",
                                    pod.key(),
                                    pods[q].key()
                                ));
                            }
                        }
                    }
                }
            }
            // Required anti-affinity of every other pod, seen from this pod.
            for (&q, &ni) in &pod_node {
                if q == p {
                    continue;
                }
                let other = &pods[q];
                for term in &other.pod_anti_affinity {
                    let Some(sel) = other.term_selector(term) else {
                        continue;
                    };
                    let ns = other.term_namespaces(term, &snapshot.namespaces);
                    if !(ns.contains(&pod.namespace) && sel.matches(&pod.labels)) {
                        continue;
                    }
                    let key = term.topology_key.as_str();
                    if let (Some(a), Some(b)) = (n.domain(key), nodes[ni].domain(key)) {
                        if !a.is_disjoint(b) {
                            err(format!("pod {} lands in a domain of {key} that pod {}'s anti-affinity forbids", pod.key(), other.key()));
                        }
                    }
                }
            }
        }
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(v)
    }
}
