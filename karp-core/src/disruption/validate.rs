//! Validation of a command after Karpenter's 15 s delay ([`CONSOLIDATION_TTL`]), on a fresh
//! input: the cluster may have changed while the command waited (pods bound or deleted, a new
//! do-not-disrupt pod, a PDB tightened, a budget window closed).
//!
//! - **Emptiness** keeps the still-valid subset: each proposed node must still be a candidate,
//!   empty, consolidatable at `now` and within its pool's `Empty` budget (taken one by one); it
//!   fails only when no node is left.
//! - **Consolidation** (single- and multi-node) is all or nothing: every proposed node must still
//!   be a candidate that consolidation may take, the `Underutilized` budgets must allow them all,
//!   and a new simulation of the same nodes must give the same decision — a delete stays a delete,
//!   a replacement stays exactly one node whose instance-type options include the command's.
//! - **Global** moves are re-simulated the way the global consolidator tries them (scheduler
//!   first, then the MILP packer when the options have one): the pods must still fit, on no more
//!   replacements than the command had, still saving the pools' threshold; the command carries
//!   the re-simulated replacements.
//! - **Drift** and **expiration** are not validated (Karpenter executes them at once).
//!
//! [`CONSOLIDATION_TTL`]: super::CONSOLIDATION_TTL

use std::collections::{BTreeMap, BTreeSet};

use super::budgets::{self, Allowed};
use super::candidates::{self, Candidate};
use super::consolidation::{compute, Outcome};
use super::methods::Pass;
use super::model::{DisruptionInput, Reason};
use super::time::Timestamp;
use super::{Command, Decision, DisruptionOptions, Method};
use crate::scheduling::SchedulingCache;

/// Why a command no longer holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Invalid {
    /// Proposed nodes that failed validation (Karpenter counts them in
    /// `karpenter_voluntary_disruption_failed_validations_total`; empty when the failure was the
    /// re-simulation, which Karpenter does not count).
    pub failed: Vec<String>,
    /// Worded for a person and for the `ConsolidationRejected` event.
    pub reason: String,
}

/// The outcome of validating one command.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The command to execute (for emptiness, possibly a subset of the proposed nodes).
    pub command: Command,
    /// Proposed nodes dropped from it, with the reason.
    pub dropped: BTreeMap<String, String>,
}

/// Validate `command` against `input` at `now` (see the module docs).
///
/// # Errors
/// [`Invalid`] when the command no longer holds.
pub fn validate(
    input: &DisruptionInput,
    now: Timestamp,
    options: &DisruptionOptions,
    command: &Command,
) -> Result<Validated, Invalid> {
    let (all, rejected) = candidates::evaluate(input, now);
    let by_name: BTreeMap<&str, &Candidate> = all.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut budgets: BTreeMap<(String, Reason), Allowed> = budgets::compute(input, now)
        .into_iter()
        .map(|b| ((b.nodepool, b.reason), b.allowed))
        .collect();
    let why_not = |name: &str| -> String {
        rejected
            .get(name)
            .cloned()
            .unwrap_or_else(|| "Node is no longer a disruption candidate".to_string())
    };
    let pass = Pass {
        input,
        now,
        options,
        candidates: &all,
        budgets: budgets.clone(),
        reasons: BTreeMap::new(),
        scope: None,
        cache: SchedulingCache::default(),
        pending_claims: None,
        aimed: false,
    };
    match command.method {
        Method::Drift | Method::StaticDrift | Method::Expiration => Ok(Validated {
            command: command.clone(),
            dropped: BTreeMap::new(),
        }),
        Method::Emptiness => {
            let mut kept: Vec<&Candidate> = Vec::new();
            let mut dropped = BTreeMap::new();
            for name in &command.candidates {
                let Some(c) = by_name.get(name.as_str()) else {
                    dropped.insert(name.clone(), why_not(name));
                    continue;
                };
                if !c.empty {
                    dropped.insert(name.clone(), "Node is no longer empty".to_string());
                    continue;
                }
                if let Some(b) = c.consolidation_blocker(now, true) {
                    dropped.insert(name.clone(), b);
                    continue;
                }
                let allowed = budgets
                    .entry((c.facts.nodepool.clone(), Reason::Empty))
                    .or_insert(Allowed::Unlimited);
                if !allowed.any() {
                    dropped.insert(
                        name.clone(),
                        "No allowed disruptions for disruption reason Empty due to blocking budget"
                            .to_string(),
                    );
                    continue;
                }
                allowed.take();
                kept.push(c);
            }
            if kept.is_empty() {
                return Err(Invalid {
                    failed: command.candidates.clone(),
                    reason: format!(
                        "no proposed node is still empty and disruptable ({})",
                        describe(&dropped)
                    ),
                });
            }
            let validated = pass.command(Method::Emptiness, Reason::Empty, &kept, None, now);
            Ok(Validated {
                command: validated,
                dropped,
            })
        }
        Method::MultiNode | Method::SingleNode | Method::Global => {
            let mut nodes: Vec<&Candidate> = Vec::new();
            let mut dropped = BTreeMap::new();
            for name in &command.candidates {
                match by_name.get(name.as_str()) {
                    None => {
                        dropped.insert(name.clone(), why_not(name));
                    }
                    Some(c) => match c.consolidation_blocker(now, false) {
                        Some(b) => {
                            dropped.insert(name.clone(), b);
                        }
                        None => nodes.push(c),
                    },
                }
            }
            if !dropped.is_empty() {
                return Err(Invalid {
                    failed: command.candidates.clone(),
                    reason: format!("candidates changed: {}", describe(&dropped)),
                });
            }
            for c in &nodes {
                let reason = if command.method == Method::Global && c.empty {
                    Reason::Empty
                } else {
                    Reason::Underutilized
                };
                let allowed = budgets
                    .entry((c.facts.nodepool.clone(), reason))
                    .or_insert(Allowed::Unlimited);
                if !allowed.any() {
                    return Err(Invalid {
                        failed: command.candidates.clone(),
                        reason: format!(
                            "No allowed disruptions for disruption reason {} due to blocking budget (node {})",
                            reason.as_str(),
                            c.name
                        ),
                    });
                }
                allowed.take();
            }
            let validated = if command.method == Method::Global {
                revalidate_global(&pass, &nodes, command)?
            } else {
                revalidate_karpenter(&pass, &nodes, command)?
            };
            Ok(Validated {
                command: validated,
                dropped,
            })
        }
    }
}

fn describe(dropped: &BTreeMap<String, String>) -> String {
    dropped
        .iter()
        .map(|(n, r)| format!("{n}: {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn churn(reason: impl Into<String>) -> Invalid {
    Invalid {
        failed: Vec::new(),
        reason: reason.into(),
    }
}

/// Karpenter's rule: same decision; one replacement whose options include the command's.
fn revalidate_karpenter(
    pass: &Pass<'_>,
    nodes: &[&Candidate],
    command: &Command,
) -> Result<Command, Invalid> {
    let outcome = compute(
        pass.input,
        nodes,
        pass.now,
        &pass.options.scheduler,
        pass.options.spot_to_spot_consolidation,
        None,
    );
    let sim = match (outcome, command.decision) {
        (Outcome::NoOp(why), _) => return Err(churn(why)),
        (Outcome::Delete(sim), Decision::Delete) => sim,
        (Outcome::Delete(_), Decision::Replace) => {
            // Deleting is cheaper still; Karpenter rejects the stale command and plans again.
            return Err(churn(
                "the candidates can now be deleted without a replacement",
            ));
        }
        (Outcome::Replace(_), Decision::Delete) => {
            return Err(churn(
                "the candidates' pods no longer fit on existing nodes",
            ))
        }
        (Outcome::Replace(sim), Decision::Replace) => {
            let fresh: BTreeSet<&str> = sim.results.new_nodeclaims[0]
                .instance_types
                .iter()
                .map(|it| it.name.as_str())
                .collect();
            let original = &command.replacements[0];
            if let Some(gone) = original
                .instance_types
                .iter()
                .find(|it| !fresh.contains(it.name.as_str()))
            {
                return Err(churn(format!(
                    "the replacement may no longer be a {}",
                    gone.name
                )));
            }
            sim
        }
    };
    let mut out = command.clone();
    out.moves = sim.moves(&nodes.iter().map(|c| c.name.as_str()).collect());
    out.simulation = Some(sim);
    // The replacements stay the command's (a subset of what the cluster allows now).
    if out.decision == Decision::Replace {
        if let Some(s) = out.simulation.as_mut() {
            s.results.new_nodeclaims.clone_from(&command.replacements);
        }
    }
    Ok(out)
}

/// The global rule: the pods still fit, on no more replacements, still saving the threshold.
fn revalidate_global(
    pass: &Pass<'_>,
    nodes: &[&Candidate],
    command: &Command,
) -> Result<Command, Invalid> {
    #[cfg_attr(not(feature = "milp"), allow(unused_mut))]
    let mut trial = pass.trial(nodes, None);
    #[cfg(feature = "milp")]
    if trial
        .as_ref()
        .is_none_or(|t| t.sim.results.new_nodeclaims.len() > command.replacements.len())
    {
        if let Some(milp) = &pass.options.milp {
            let mut milp = milp.clone();
            milp.options = pass.options.scheduler.clone();
            if let Some(t) = pass.trial(nodes, Some(&milp)) {
                trial = Some(t);
            }
        }
    }
    let Some(t) = trial else {
        return Err(churn(
            "the candidates' pods no longer fit on existing nodes and cheaper replacements",
        ));
    };
    if t.sim.results.new_nodeclaims.len() > command.replacements.len() {
        return Err(churn(format!(
            "the move now needs {} replacements (the command had {})",
            t.sim.results.new_nodeclaims.len(),
            command.replacements.len()
        )));
    }
    let names: Vec<&str> = nodes.iter().map(|c| c.name.as_str()).collect();
    let required = pass.required_savings(&names);
    if t.savings < required - 1e-9 {
        return Err(churn(format!(
            "the move would now save ${:.4}/h, below the savings threshold ${required:.4}/h",
            t.savings
        )));
    }
    let reason = command.reason;
    Ok(pass.command(Method::Global, reason, &t.nodes, Some(t.sim), command.at))
}
