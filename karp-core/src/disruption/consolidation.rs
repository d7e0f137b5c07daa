//! Whether a set of candidates can be deleted, or replaced by one strictly cheaper node
//! (Karpenter's `computeConsolidation`), and the price rules of replacements.

use std::collections::BTreeSet;

use crate::cloud::InstanceType;
use crate::labels;
use crate::requirements::Requirement;
use crate::scheduling::{ChosenOffering, NewNodeClaim, SchedulerOptions, SchedulingCache};

use super::candidates::Candidate;
use super::model::DisruptionInput;
use super::simulate::{simulate_with, Placement, Simulation};
use super::time::Timestamp;

/// Single-node spot-to-spot consolidation needs at least this many cheaper instance types, and
/// sends only the cheapest this many (more when `minValues` needs them).
pub const MIN_SPOT_TO_SPOT_TYPES: usize = 15;

/// What consolidating a set of candidates would do.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Their pods fit on the remaining nodes.
    Delete(Simulation),
    /// One cheaper node takes their pods (the replacement is `simulation.results.new_nodeclaims[0]`,
    /// already narrowed to cheaper types and pinned as launched).
    Replace(Simulation),
    /// Nothing can be done, and why (worded like Karpenter's `Unconsolidatable` events).
    NoOp(String),
}

/// The price an instance type may launch at under `claim`'s requirements, in the worst case:
/// the most expensive available compatible offering of the capacity type a launch would use
/// (reserved before spot before on-demand).
#[must_use]
pub fn worst_launch_price(it: &InstanceType, claim: &NewNodeClaim) -> Option<f64> {
    let offers: Vec<_> = it
        .offerings
        .iter()
        .filter(|o| o.available && o.compatible(&claim.requirements))
        .collect();
    for ct in [labels::CAPACITY_RESERVED, labels::CAPACITY_SPOT] {
        let prices = offers
            .iter()
            .filter(|o| o.capacity_type == ct)
            .map(|o| o.price);
        if let Some(max) = prices.reduce(f64::max) {
            return Some(max);
        }
    }
    offers.iter().map(|o| o.price).reduce(f64::max)
}

/// Keep the instance type options satisfying `keep`, then re-derive the claim's instance-type
/// requirement (keeping its `minValues`) and its cheapest offering.
///
/// # Errors
/// A message when a `minValues` requirement is no longer satisfied.
pub(crate) fn narrow(
    claim: &NewNodeClaim,
    keep: impl Fn(&InstanceType) -> bool,
) -> Result<NewNodeClaim, String> {
    let mut c = claim.clone();
    c.instance_types
        .retain(|it| keep(it) && it.cheapest_offering(&c.requirements).is_some());
    let price = |it: &InstanceType| {
        it.cheapest_offering(&c.requirements)
            .map_or(f64::INFINITY, |o| o.price)
    };
    let mut types = c.instance_types.clone();
    types.sort_by(|a, b| {
        price(a)
            .total_cmp(&price(b))
            .then_with(|| a.name.cmp(&b.name))
    });
    c.instance_types = types;
    check_min_values(&c, c.instance_types.len())?;
    let min = claim
        .requirements
        .get(labels::INSTANCE_TYPE)
        .and_then(Requirement::min_values);
    let mut req = Requirement::in_values(
        labels::INSTANCE_TYPE,
        c.instance_types.iter().map(|t| t.name.clone()),
    );
    if let Some(m) = min {
        req = req.with_min_values(m);
    }
    c.requirements.remove(labels::INSTANCE_TYPE);
    c.requirements.add(req);
    if let Some((it, o)) = c
        .instance_types
        .iter()
        .filter_map(|it| it.cheapest_offering(&c.requirements).map(|o| (it, o)))
        .min_by(|a, b| {
            a.1.price
                .total_cmp(&b.1.price)
                .then_with(|| a.0.name.cmp(&b.0.name))
        })
    {
        c.cheapest = ChosenOffering {
            instance_type: it.name.clone(),
            zone: o.zone.clone(),
            capacity_type: o.capacity_type.clone(),
            price: o.price,
        };
    }
    Ok(c)
}

/// Whether the first `n` options satisfy every `minValues` requirement of the claim.
fn check_min_values(c: &NewNodeClaim, n: usize) -> Result<(), String> {
    for r in c.requirements.iter() {
        let Some(min) = r.min_values() else { continue };
        let values: BTreeSet<&str> = c.instance_types[..n.min(c.instance_types.len())]
            .iter()
            .filter_map(|it| it.requirements.get(r.key()))
            .flat_map(|tr| tr.values())
            .filter(|v| r.has(v))
            .collect();
        if values.len() < min {
            return Err(format!(
                "minValues requirement on {} needs {min} distinct values, only {} remain",
                r.key(),
                values.len()
            ));
        }
    }
    Ok(())
}

/// Keep only options whose worst-case launch price is strictly below `max_price`.
///
/// # Errors
/// A message when `minValues` can no longer be met.
pub fn filter_by_price(claim: &NewNodeClaim, max_price: f64) -> Result<NewNodeClaim, String> {
    narrow(claim, |it| {
        worst_launch_price(it, claim).is_some_and(|p| p < max_price)
    })
}

/// Pin a claim to spot capacity.
fn pin_spot(claim: &NewNodeClaim) -> Result<NewNodeClaim, String> {
    let mut c = claim.clone();
    c.requirements.add(Requirement::in_values(
        labels::CAPACITY_TYPE,
        [labels::CAPACITY_SPOT],
    ));
    narrow(&c, |_| true)
}

fn allows(claim: &NewNodeClaim, ct: &str) -> bool {
    claim
        .requirements
        .get(labels::CAPACITY_TYPE)
        .is_none_or(|r| r.has(ct))
}

/// Karpenter's consolidation decision for `candidates` (all must have a known offering).
#[must_use]
pub fn compute(
    input: &DisruptionInput,
    candidates: &[&Candidate],
    now: Timestamp,
    scheduler: &SchedulerOptions,
    spot_to_spot: bool,
    cache: Option<&SchedulingCache>,
) -> Outcome {
    let placement = Placement {
        cache,
        ..Placement::default()
    };
    let mut sim = simulate_with(input, candidates, now, scheduler, placement);
    if let Some(f) = sim.running_pod_failure() {
        return Outcome::NoOp(f);
    }
    match sim.results.new_nodeclaims.len() {
        0 => return Outcome::Delete(sim),
        1 => {}
        n => return Outcome::NoOp(format!("Can't remove without creating {n} candidates")),
    }
    let price: f64 = candidates.iter().filter_map(|c| c.price()).sum();
    let all_spot = candidates.iter().all(|c| {
        c.facts
            .offering
            .as_ref()
            .is_some_and(|o| o.capacity_type == labels::CAPACITY_SPOT)
    });
    let claim = &sim.results.new_nodeclaims[0];
    let replacement = if all_spot && allows(claim, labels::CAPACITY_SPOT) {
        match spot_to_spot_replacement(claim, candidates.len(), price, spot_to_spot) {
            Ok(c) => c,
            Err(e) => return Outcome::NoOp(e),
        }
    } else {
        let filtered = match filter_by_price(claim, price) {
            Ok(c) if c.instance_types.is_empty() => {
                return Outcome::NoOp("Can't replace with a cheaper node".to_string())
            }
            Ok(c) => c,
            Err(e) => return Outcome::NoOp(format!("Filtering by price: {e}")),
        };
        // On-demand → spot: launching on-demand instead could cost more than the candidates.
        if allows(&filtered, labels::CAPACITY_SPOT) && allows(&filtered, labels::CAPACITY_ON_DEMAND)
        {
            match pin_spot(&filtered) {
                Ok(c) if !c.instance_types.is_empty() => c,
                Ok(_) => return Outcome::NoOp("Can't replace with a cheaper node".to_string()),
                Err(e) => return Outcome::NoOp(format!("Filtering by price: {e}")),
            }
        } else {
            filtered
        }
    };
    sim.results.new_nodeclaims[0] = replacement;
    Outcome::Replace(sim)
}

/// Spot → spot: only behind the `SpotToSpotConsolidation` gate; single-node needs at least 15
/// cheaper types and launches from the 15 cheapest.
fn spot_to_spot_replacement(
    claim: &NewNodeClaim,
    candidates: usize,
    price: f64,
    gate: bool,
) -> Result<NewNodeClaim, String> {
    if !gate {
        return Err(
            "SpotToSpotConsolidation is disabled, can't replace a spot node with a spot node"
                .to_string(),
        );
    }
    let pinned = pin_spot(claim).map_err(|e| format!("Filtering by price: {e}"))?;
    let mut c = filter_by_price(&pinned, price).map_err(|e| format!("Filtering by price: {e}"))?;
    if c.instance_types.is_empty() {
        return Err("Can't replace with a cheaper node".to_string());
    }
    if candidates > 1 {
        return Ok(c);
    }
    if c.instance_types.len() < MIN_SPOT_TO_SPOT_TYPES {
        return Err(format!(
            "SpotToSpotConsolidation requires {MIN_SPOT_TO_SPOT_TYPES} cheaper instance type options than the current candidate to consolidate, got {}",
            c.instance_types.len()
        ));
    }
    let needed = (1..=c.instance_types.len())
        .find(|&n| check_min_values(&c, n).is_ok())
        .unwrap_or(c.instance_types.len());
    let keep: BTreeSet<String> = c.instance_types[..needed.max(MIN_SPOT_TO_SPOT_TYPES)]
        .iter()
        .map(|t| t.name.clone())
        .collect();
    c = narrow(&c, |it| keep.contains(&it.name))?;
    Ok(c)
}

/// Multi-node: when the replacement could be one of the candidates' own types, keep only options
/// cheaper than the cheapest such candidate (else deleting the others is the better command).
///
/// # Errors
/// A message when `minValues` can no longer be met.
pub fn filter_out_same_type(
    claim: &NewNodeClaim,
    candidates: &[&Candidate],
) -> Result<NewNodeClaim, String> {
    let mut max_price = f64::INFINITY;
    for it in &claim.instance_types {
        for c in candidates {
            if let Some(o) = &c.facts.offering {
                if o.instance_type == it.name {
                    max_price = max_price.min(o.price);
                }
            }
        }
    }
    filter_by_price(claim, max_price)
}
