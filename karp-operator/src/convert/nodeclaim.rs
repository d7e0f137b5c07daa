//! NodeClaims ↔ karp-core: resource quantities as Kubernetes writes them, requirements, taints
//! and the labels a claim's node will carry. Used by the provisioner (claims it creates), the
//! lifecycle (launch requests) and status (NodePool resources).

use std::collections::BTreeMap;

use karp_core::requirements::{Operator, Requirements};
use karp_core::resources::{Quantity, Resources};
use karp_core::taints::Taint;

use crate::api::nodeclaim::NodeClaim;
use crate::api::nodepool::{FlexString, NodeSelectorRequirementWithMinValues, TaintSpec};

/// Quantities of a resource vector as Kubernetes writes them (`1930m`, `6903Mi`, `29`).
#[must_use]
pub fn quantities(r: &Resources) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let bytes = |b: i64| {
        if b % (1 << 20) == 0 {
            format!("{}Mi", b >> 20)
        } else if b % 1024 == 0 {
            format!("{}Ki", b >> 10)
        } else {
            b.to_string()
        }
    };
    if r.cpu != 0 {
        m.insert(
            "cpu".into(),
            if r.cpu % 1000 == 0 {
                (r.cpu / 1000).to_string()
            } else {
                format!("{}m", r.cpu)
            },
        );
    }
    if r.memory != 0 {
        m.insert("memory".into(), bytes(r.memory));
    }
    if r.ephemeral_storage != 0 {
        m.insert("ephemeral-storage".into(), bytes(r.ephemeral_storage));
    }
    if r.pods != 0 {
        m.insert("pods".into(), r.pods.to_string());
    }
    for (k, v) in &r.extended {
        m.insert(k.clone(), v.to_string());
    }
    m
}

/// Parses a quantity map (status.allocatable, spec.resources.requests); invalid entries are skipped.
#[must_use]
pub fn parse_quantities(m: &BTreeMap<String, String>) -> Resources {
    let mut r = Resources::new();
    for (k, v) in m {
        if let Ok(q) = v.parse::<Quantity>() {
            r.set(k, &q);
        }
    }
    r
}

/// A core taint as a NodeClaim spec entry.
#[must_use]
pub fn taint_spec(t: &Taint) -> TaintSpec {
    TaintSpec {
        key: t.key.clone(),
        value: (!t.value.is_empty()).then(|| t.value.clone()),
        effect: t.effect.as_str().to_string(),
    }
}

/// Requirements as NodeClaim spec entries.
#[must_use]
pub fn requirement_specs(reqs: &Requirements) -> Vec<NodeSelectorRequirementWithMinValues> {
    reqs.to_node_selector()
        .into_iter()
        .map(|r| NodeSelectorRequirementWithMinValues {
            key: r.key,
            operator: r.operator.as_str().to_string(),
            values: r.values.into_iter().map(FlexString).collect(),
            min_values: r.min_values.and_then(|n| i64::try_from(n).ok()),
        })
        .collect()
}

/// The labels a NodeClaim's node will have: its own labels plus every single-valued `In`
/// requirement.
#[must_use]
pub fn claim_labels(claim: &NodeClaim) -> BTreeMap<String, String> {
    let mut l = claim.metadata.labels.clone().unwrap_or_default();
    for r in &claim.spec.requirements {
        if r.operator == "In" && r.values.len() == 1 {
            l.entry(r.key.clone())
                .or_insert_with(|| r.values[0].0.clone());
        }
    }
    l
}

fn taints_of(specs: &[TaintSpec]) -> Vec<Taint> {
    specs
        .iter()
        .filter_map(|t| {
            karp_core::taints::Effect::parse(&t.effect)
                .map(|e| Taint::new(t.key.clone(), t.value.clone().unwrap_or_default(), e))
        })
        .collect()
}

/// Claim taints (template taints) as core taints.
#[must_use]
pub fn claim_taints(claim: &NodeClaim) -> Vec<Taint> {
    taints_of(&claim.spec.taints)
}

/// Claim startup taints as core taints.
#[must_use]
pub fn claim_startup_taints(claim: &NodeClaim) -> Vec<Taint> {
    taints_of(&claim.spec.startup_taints)
}

/// Requirements of a NodeClaim spec, parsed (entries that do not parse are dropped).
#[must_use]
pub fn claim_requirements(claim: &NodeClaim) -> Requirements {
    let mut reqs = Requirements::new();
    for r in &claim.spec.requirements {
        let Ok(op) = Operator::parse(&r.operator) else {
            continue;
        };
        let nsr = karp_core::requirements::NodeSelectorRequirement {
            key: r.key.clone(),
            operator: op,
            values: r.values.iter().map(|v| v.0.clone()).collect(),
            min_values: r.min_values.and_then(|n| usize::try_from(n).ok()),
        };
        if let Ok(req) = karp_core::requirements::Requirement::from_node_selector(&nsr) {
            reqs.add(req);
        }
    }
    reqs
}
