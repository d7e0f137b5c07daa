//! Topology rules of newly placed pods: DoNotSchedule topology spread, required pod affinity,
//! required pod anti-affinity (the pod's own and every other pod's, bound pods included).

use std::collections::{BTreeMap, BTreeSet};

use super::{tolerated, PlanNode, Violation};
use crate::cluster::ClusterSnapshot;
use crate::labels;
use crate::pod::{
    InclusionPolicy, Pod, PodAffinityTerm, TopologySpreadConstraint, WhenUnsatisfiable,
};

/// The plan's nodes and where each pod runs.
struct Plan<'a> {
    snapshot: &'a ClusterSnapshot,
    nodes: &'a [PlanNode],
    /// The node (index into `nodes`) of every pod on one.
    pod_node: BTreeMap<usize, usize>,
    /// The pods on a node that carry required anti-affinity, with their node (the only ones
    /// whose terms can forbid another pod's domain).
    anti: Vec<(usize, usize)>,
}

/// Check every topology rule of every pod newly placed on `nodes`, node by node.
pub(super) fn check_topology(
    snapshot: &ClusterSnapshot,
    nodes: &[PlanNode],
    v: &mut Vec<Violation>,
) {
    let mut pod_node: BTreeMap<usize, usize> = BTreeMap::new();
    for (ni, n) in nodes.iter().enumerate() {
        for &p in &n.pods {
            pod_node.insert(p, ni);
        }
    }
    let anti = pod_node
        .iter()
        .filter(|(&q, _)| !snapshot.pods[q].pod_anti_affinity.is_empty())
        .map(|(&q, &ni)| (q, ni))
        .collect();
    let plan = Plan {
        snapshot,
        nodes,
        pod_node,
        anti,
    };
    for n in nodes {
        for &p in &n.new_pods {
            let pod = &snapshot.pods[p];
            for tsc in pod
                .topology_spread
                .iter()
                .filter(|t| t.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule)
            {
                plan.check_spread(n, pod, tsc, v);
            }
            for term in &pod.pod_affinity {
                plan.check_pod_affinity(n, p, term, v);
            }
            for term in &pod.pod_anti_affinity {
                plan.check_pod_anti_affinity(n, p, term, v);
            }
            plan.check_others_anti_affinity(n, p, v);
        }
    }
}

impl Plan<'_> {
    /// The domains of `key` a pod may use: every value the NodePools' instance types or the
    /// existing nodes offer, within the pod's own requirements.
    fn universe(&self, key: &str, pod: &Pod) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for pool in &self.snapshot.node_pools {
            let t = pool.template_requirements();
            for it in &pool.instance_types {
                let r = t.intersect(&it.requirements);
                if let Some(req) = r.get(key) {
                    out.extend(req.values().into_iter().map(String::from));
                }
            }
        }
        for n in &self.snapshot.nodes {
            if let Some(v) = n.labels.get(key) {
                out.insert(v.clone());
            }
        }
        let strict = pod.strict_requirements();
        out.retain(|d| strict.get(key).is_none_or(|r| r.has(d)));
        out
    }

    /// A DoNotSchedule spread constraint of `pod` on node `n`: the node is pinned to one domain,
    /// whose count of matching pods exceeds the smallest domain's by at most `maxSkew` (plus
    /// the new pods there that do not own the constraint).
    fn check_spread(
        &self,
        n: &PlanNode,
        pod: &Pod,
        tsc: &TopologySpreadConstraint,
        v: &mut Vec<Violation>,
    ) {
        let pods = &self.snapshot.pods;
        let Some(sel) = pod.spread_selector(tsc) else {
            return;
        };
        let key = tsc.topology_key.as_str();
        let Some(d) = n.pinned(key) else {
            v.push(Violation(format!(
                "pod {} has a spread constraint on {key} but its node is not pinned to one domain",
                pod.key()
            )));
            return;
        };
        let honors = |node: &PlanNode| {
            (tsc.node_affinity_policy == InclusionPolicy::Ignore || pod.node_matches(&node.labels))
                && (tsc.node_taints_policy == InclusionPolicy::Ignore
                    || tolerated(pod, &node.taints).is_none())
        };
        let mut counts: BTreeMap<&str, i32> = BTreeMap::new();
        let mut slack = 0;
        for m in self.nodes {
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
            let dom = self.universe(key, pod);
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
            v.push(Violation(format!(
                "pod {} violates spread on {key}: domain {d} has {c}, min {min}, maxSkew {}",
                pod.key(),
                tsc.max_skew
            )));
        }
    }

    /// A required pod affinity term of pod `p` on node `n`: the node is pinned to one domain of
    /// the term's key holding a matching pod, or the pod matches its own term and starts the
    /// group there (only one such start per group).
    fn check_pod_affinity(
        &self,
        n: &PlanNode,
        p: usize,
        term: &PodAffinityTerm,
        v: &mut Vec<Violation>,
    ) {
        let pods = &self.snapshot.pods;
        let pod = &pods[p];
        let Some(sel) = pod.term_selector(term) else {
            return;
        };
        let ns = pod.term_namespaces(term, &self.snapshot.namespaces);
        let key = term.topology_key.as_str();
        let Some(d) = n.pinned(key) else {
            v.push(Violation(format!(
                "pod {} has pod affinity on {key} but its node is not pinned to one domain",
                pod.key()
            )));
            return;
        };
        let matching: Vec<(usize, Option<&str>)> = self
            .pod_node
            .iter()
            .filter(|(q, _)| {
                **q != p && ns.contains(&pods[**q].namespace) && sel.matches(&pods[**q].labels)
            })
            .map(|(q, ni)| (*q, self.nodes[*ni].pinned(key)))
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
                v.push(Violation(format!(
                    "pod {} started a second {key} domain {d} for its pod affinity group",
                    pod.key()
                )));
            }
        }
        if !joined && !bootstrap {
            v.push(Violation(format!(
                "pod {} violates pod affinity on {key}: no matching pod in {d}",
                pod.key()
            )));
        }
    }

    /// A required pod anti-affinity term of pod `p` on node `n`: no matching pod shares a
    /// possible domain of the term's key.
    fn check_pod_anti_affinity(
        &self,
        n: &PlanNode,
        p: usize,
        term: &PodAffinityTerm,
        v: &mut Vec<Violation>,
    ) {
        let pods = &self.snapshot.pods;
        let pod = &pods[p];
        let Some(sel) = pod.term_selector(term) else {
            return;
        };
        let ns = pod.term_namespaces(term, &self.snapshot.namespaces);
        let key = term.topology_key.as_str();
        let Some(mine) = n.domain(key) else { return };
        for (&q, &ni) in &self.pod_node {
            if q != p && ns.contains(&pods[q].namespace) && sel.matches(&pods[q].labels) {
                if let Some(theirs) = self.nodes[ni].domain(key) {
                    if !mine.is_disjoint(theirs) {
                        v.push(Violation(format!(
                            "pod {} violates pod anti-affinity on {key} with pod {}",
                            pod.key(),
                            pods[q].key()
                        )));
                    }
                }
            }
        }
    }

    /// Required anti-affinity of every other pod, seen from pod `p` on node `n`: `p` shares no
    /// possible domain with a pod whose term selects it.
    fn check_others_anti_affinity(&self, n: &PlanNode, p: usize, v: &mut Vec<Violation>) {
        let pods = &self.snapshot.pods;
        let pod = &pods[p];
        for &(q, ni) in &self.anti {
            if q == p {
                continue;
            }
            let other = &pods[q];
            for term in &other.pod_anti_affinity {
                let Some(sel) = other.term_selector(term) else {
                    continue;
                };
                let ns = other.term_namespaces(term, &self.snapshot.namespaces);
                if !(ns.contains(&pod.namespace) && sel.matches(&pod.labels)) {
                    continue;
                }
                let key = term.topology_key.as_str();
                if let (Some(a), Some(b)) = (n.domain(key), self.nodes[ni].domain(key)) {
                    if !a.is_disjoint(b) {
                        v.push(Violation(format!(
                            "pod {} lands in a domain of {key} that pod {}'s anti-affinity forbids",
                            pod.key(),
                            other.key()
                        )));
                    }
                }
            }
        }
    }
}
