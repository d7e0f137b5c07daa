//! Passes until nothing is left to do: [`apply`] a command to the planner's input as if it
//! completed, and [`plan_until_stable`], which repeats passes as a running operator would.
//!
//! After a pass that acted, the clock advances by the 15 s validation delay and the next pass
//! runs on the cluster with the command completed: candidates gone, replacements initialized and
//! running the pods the command moved there (with the DaemonSet pods that would run on them),
//! moved pods counting as pod events on the nodes that received them. After a pass that did
//! nothing, the clock jumps to the next moment a window opens: a node's `consolidateAfter`
//! elapsing, a pod's `karpenter.sh/do-not-disrupt` duration ending, or a budget schedule starting
//! or ending (budget schedules only within [`BUDGET_HORIZON`] of the last command, since a cron
//! schedule always has a next activation). It stops when no window is left, or after
//! `max_passes` passes. Expiration is not waited for (`expireAfter` is usually weeks), and
//! replacements get no `expireAfter`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::Node;
use crate::labels;
use crate::scheduling::NewNodeClaim;
use crate::taints::first_untolerated;

use super::candidates::{consolidatable_at, do_not_disrupt_blocks};
use super::cron::Schedule;
use super::methods::CONSOLIDATION_TTL;
use super::model::{
    DisruptionInput, DisruptionSettings, Mode, NodeClaimFacts, NodeOffering, PodFacts,
};
use super::time::{parse_go_duration, Timestamp};
use super::{cluster_cost, plan, Command, DisruptionOptions, DisruptionPlan};

/// Budget schedules are waited for only this long after the last command (or the start).
pub const BUDGET_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// The Node a NodeClaim launches as: the labels of its cheapest offering's instance type, its
/// template labels, zone, capacity type and NodePool; its taints; the type's allocatable.
#[must_use]
pub fn launched_node(claim: &NewNodeClaim, name: &str) -> Node {
    let it = claim
        .instance_types
        .iter()
        .find(|t| t.name == claim.cheapest.instance_type)
        .or_else(|| claim.instance_types.first());
    let mut node_labels: BTreeMap<String, String> = BTreeMap::new();
    if let Some(it) = it {
        for r in it.requirements.iter() {
            if let Some(v) = r.single_value() {
                node_labels.insert(r.key().to_string(), v.to_string());
            }
        }
    }
    node_labels.extend(claim.labels.clone());
    node_labels.insert(
        labels::INSTANCE_TYPE.into(),
        claim.cheapest.instance_type.clone(),
    );
    node_labels.insert(labels::ZONE.into(), claim.cheapest.zone.clone());
    node_labels.insert(
        labels::CAPACITY_TYPE.into(),
        claim.cheapest.capacity_type.clone(),
    );
    node_labels.insert(labels::NODEPOOL.into(), claim.nodepool.clone());
    node_labels.insert(labels::HOSTNAME.into(), name.to_string());
    let allocatable = it.map(|t| t.allocatable().clone()).unwrap_or_default();
    let mut node = Node::new(name, node_labels, allocatable);
    if let Some(it) = it {
        node.capacity = it.capacity.clone();
    }
    node.taints = claim.taints.clone();
    node.price = Some(claim.cheapest.price);
    node
}

/// The input after `command` completed at `at`: its candidates and the pods that leave with them
/// gone, its replacements running as nodes named by `name` (replacement index → node name), and
/// its moves done. Pods a move sends nowhere (forceful expiration) are pending.
#[must_use]
pub fn apply(
    input: &DisruptionInput,
    command: &Command,
    at: Timestamp,
    name: &dyn Fn(usize) -> String,
) -> DisruptionInput {
    let mut out = input.clone();
    let removed: BTreeSet<&str> = command.candidates.iter().map(String::as_str).collect();
    let replacement = |to: &str| -> String {
        to.strip_prefix("replacement-")
            .and_then(|i| i.parse::<usize>().ok())
            .map_or_else(|| to.to_string(), name)
    };
    let moves: BTreeMap<&str, Option<String>> = command
        .moves
        .iter()
        .map(|m| (m.pod.as_str(), m.to.as_deref().map(replacement)))
        .collect();
    out.snapshot
        .nodes
        .retain(|n| !removed.contains(n.name.as_str()));
    out.nodes.retain(|n, _| !removed.contains(n.as_str()));
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut gone: Vec<String> = Vec::new();
    out.snapshot.pods.retain_mut(|p| {
        let Some(from) = p.node_name.as_deref() else {
            return true;
        };
        if !removed.contains(from) {
            return true;
        }
        match moves.get(p.key().as_str()) {
            Some(to) => {
                p.node_name.clone_from(to);
                if let Some(t) = to {
                    touched.insert(t.clone());
                }
                true
            }
            None => {
                gone.push(p.key());
                false
            }
        }
    });
    for key in gone {
        out.pods.remove(&key);
    }
    for (i, claim) in command.replacements.iter().enumerate() {
        let node_name = name(i);
        let node = launched_node(claim, &node_name);
        for ds in &input.snapshot.daemonsets {
            let tolerated = first_untolerated(&node.taints, &ds.tolerations).is_none();
            if tolerated && ds.node_matches(&node.labels) {
                let mut pod = ds.clone();
                pod.name = format!("{}-{node_name}", ds.name);
                pod.node_name = Some(node_name.clone());
                out.pods.insert(
                    pod.key(),
                    PodFacts {
                        owner_kind: Some("DaemonSet".into()),
                        start_time: Some(at),
                        ..PodFacts::default()
                    },
                );
                out.snapshot.pods.push(pod);
            }
        }
        let mut facts = NodeClaimFacts::new(&claim.nodepool, at);
        facts.offering = Some(NodeOffering {
            instance_type: claim.cheapest.instance_type.clone(),
            zone: claim.cheapest.zone.clone(),
            capacity_type: claim.cheapest.capacity_type.clone(),
            price: claim.cheapest.price,
        });
        out.nodes.insert(node_name, facts);
        out.snapshot.nodes.push(node);
    }
    for n in &touched {
        if let Some(f) = out.nodes.get_mut(n) {
            f.last_pod_event = Some(at);
        }
    }
    out
}

/// One pass of [`plan_until_stable`].
#[derive(Debug, Clone)]
pub struct Pass {
    /// When it ran.
    pub at: Timestamp,
    /// What it decided.
    pub plan: DisruptionPlan,
    /// The input it ran on.
    pub input: DisruptionInput,
}

/// Passes from `now` until no window is left (see the module docs): every pass that acted, then
/// the last pass (which did not). Replacement nodes are named `new-<pass>-<i>`.
///
/// When some pool is in `global` mode, the sequence with every pool in `karpenter` mode is
/// played too, and the one ending cheaper is returned (the global one on a tie): a pass's best
/// command is not always the first step of the cheapest sequence, and this keeps the promise
/// that `global` never ends dearer than `karpenter`.
#[must_use]
pub fn plan_until_stable(
    input: &DisruptionInput,
    now: Timestamp,
    options: &DisruptionOptions,
    max_passes: usize,
) -> Vec<Pass> {
    let global =
        options.mode == Mode::Global || input.pools.values().any(|s| s.mode == Some(Mode::Global));
    let played = play(input, now, options, max_passes);
    if !global {
        return played;
    }
    let mut karpenter_input = input.clone();
    for s in karpenter_input.pools.values_mut() {
        s.mode = None;
    }
    let karpenter = play(
        &karpenter_input,
        now,
        &options.clone().mode(Mode::Karpenter),
        max_passes,
    );
    let end = |passes: &[Pass]| {
        passes
            .last()
            .map_or(f64::INFINITY, |p| cluster_cost(&p.input))
    };
    if end(&karpenter) < end(&played) - 1e-9 {
        karpenter
    } else {
        played
    }
}

/// The passes of one sequence (see [`plan_until_stable`]).
fn play(
    input: &DisruptionInput,
    now: Timestamp,
    options: &DisruptionOptions,
    max_passes: usize,
) -> Vec<Pass> {
    let mut passes = Vec::new();
    let mut state = input.clone();
    let mut t = now;
    let mut last_command = now;
    for index in 0..max_passes.max(1) {
        let p = plan(&state, t, options);
        let Some(command) = p.commands.first() else {
            let next = next_window(&state, t, last_command.plus(BUDGET_HORIZON));
            match next {
                Some(n) if index + 1 < max_passes => {
                    t = n;
                    continue;
                }
                _ => {
                    passes.push(Pass {
                        at: t,
                        plan: p,
                        input: state,
                    });
                    break;
                }
            }
        };
        let name = |i: usize| format!("new-{index}-{i}");
        let next = apply(&state, command, command.at.max(t), &name);
        passes.push(Pass {
            at: t,
            plan: p,
            input: std::mem::replace(&mut state, next),
        });
        t = t.plus(CONSOLIDATION_TTL);
        last_command = t;
    }
    passes
}

/// The first moment after `t` when a window opens for some managed node: `consolidateAfter`
/// elapsing, a pod's do-not-disrupt duration ending, or (before `budget_horizon`) a scheduled
/// budget starting or ending.
fn next_window(
    input: &DisruptionInput,
    t: Timestamp,
    budget_horizon: Timestamp,
) -> Option<Timestamp> {
    let default = DisruptionSettings::default();
    let mut times: Vec<Timestamp> = Vec::new();
    for f in input.nodes.values() {
        let settings = input.pools.get(&f.nodepool).unwrap_or(&default);
        times.extend(consolidatable_at(f, settings));
    }
    let managed: BTreeSet<&str> = input.nodes.keys().map(String::as_str).collect();
    for p in &input.snapshot.pods {
        if !p.node_name.as_deref().is_some_and(|n| managed.contains(n)) {
            continue;
        }
        let Some(facts) = input.pods.get(&p.key()) else {
            continue;
        };
        if !do_not_disrupt_blocks(facts, t) {
            continue;
        }
        let ends = facts
            .do_not_disrupt
            .as_deref()
            .and_then(|v| parse_go_duration(v).ok())
            .zip(facts.start_time)
            .map(|(d, s)| s.plus(d));
        times.extend(ends);
    }
    for settings in input.pools.values() {
        for b in &settings.budgets {
            let (Some(text), Some(d)) = (&b.schedule, b.duration) else {
                continue;
            };
            let Ok(schedule) = text.parse::<Schedule>() else {
                continue;
            };
            times.extend(
                [
                    schedule.next_after(t),
                    schedule.next_after(t.minus(d)).map(|s| s.plus(d)),
                ]
                .into_iter()
                .flatten()
                .filter(|&x| x <= budget_horizon),
            );
        }
    }
    times.into_iter().filter(|&x| x > t).min()
}
