//! The executor of disruption commands, as Karpenter's orchestration queue: mark the candidates
//! (taint `karpenter.sh/disrupted:NoSchedule` on the Node, `DisruptionReason` on the NodeClaim),
//! create the replacements, wait until every replacement is initialized, then delete the
//! candidates (the termination controller drains them through the Eviction API). The command
//! stays in the [`Queue`] until the candidates' nodes are gone: its candidates count as deleting
//! and its replacements as nominated, so the next passes neither pick them nor find a
//! replacement empty while the evicted pods are on their way to it.
//!
//! - A replacement that disappears (insufficient capacity, liveness timeout) or a wait longer
//!   than [`replacement_timeout`] (Karpenter: 80 ms per queued candidate, clamped to
//!   10 min – 1 h) rolls the command back: the candidates are untainted and lose
//!   `DisruptionReason`. Replacements already created are **kept**, as Karpenter keeps them:
//!   deleting a replacement that is about to become Ready would waste the launch, and an unused
//!   one is an empty node that emptiness removes on a later pass; every one is a tracked NodeClaim.
//! - Nothing about a command is persisted: after a restart, [`stale_marks`] finds candidates
//!   tainted by a command this process does not hold and [`cleanup`] rolls them back (the
//!   disruption loop runs it before every pass), so no candidate stays tainted and every
//!   replacement is an ordinary NodeClaim.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Taint};
use karp_core::disruption::{Command, Decision, Method};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::json;
use tracing::{debug, info, warn};

use super::provisioner::claim_object;
use super::writes::{delete_ignoring_404, is_404, kube_err, patch_claim_conditions};
use super::{Context, LiveObjects, OperatorError};
use crate::api::nodeclaim::{conditions_with, NodeClaim, DISRUPTED_TAINT};
use crate::api::rfc3339;

/// The NodeClaim condition naming why a candidate is being disrupted.
pub const DISRUPTION_REASON: &str = "DisruptionReason";

/// Karpenter's per-candidate share of the replacement wait.
pub const TIMEOUT_PER_QUEUED: Duration = Duration::from_millis(80);

/// How long replacements may take to initialize: 80 ms per candidate node queued (in every
/// command in progress), clamped to `[min, max]` (Karpenter: 10 min and 1 h).
#[must_use]
pub fn replacement_timeout(queued: usize, min: Duration, max: Duration) -> Duration {
    let per = TIMEOUT_PER_QUEUED.saturating_mul(u32::try_from(queued).unwrap_or(u32::MAX));
    per.clamp(min, max.max(min))
}

/// `consolidation_type` label value of a method (`""` for drift and expiration).
#[must_use]
pub fn consolidation_type(m: Method) -> &'static str {
    match m {
        Method::Emptiness => "empty",
        Method::SingleNode => "single",
        Method::MultiNode => "multi",
        Method::Global => "global",
        Method::Drift | Method::StaticDrift | Method::Expiration => "",
    }
}

/// One command in progress: its candidate nodes and replacement NodeClaims.
#[derive(Debug, Clone, Default)]
struct Held {
    candidates: Vec<String>,
    replacements: Vec<String>,
}

/// The commands in progress, by id: their candidates count as deleting (they are neither
/// candidates again nor destinations, and they consume budgets) and their replacements as
/// nominated (not emptied while the candidates' pods are on their way) until the candidates'
/// nodes are gone.
#[derive(Debug, Default)]
pub struct Queue {
    commands: Mutex<BTreeMap<u64, Held>>,
    next: AtomicU64,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Held>> {
        self.commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds candidate `nodes` under a new command id.
    pub fn insert(&self, nodes: Vec<String>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        self.lock().insert(
            id,
            Held {
                candidates: nodes,
                replacements: Vec::new(),
            },
        );
        id
    }

    /// Sets a command's candidates (those that were marked) and replacements (claim names).
    pub fn update(&self, id: u64, candidates: Vec<String>, replacements: Vec<String>) {
        if let Some(h) = self.lock().get_mut(&id) {
            h.candidates = candidates;
            h.replacements = replacements;
        }
    }

    /// Releases a command.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Every candidate node held by a command in progress.
    #[must_use]
    pub fn nodes(&self) -> BTreeSet<String> {
        self.lock()
            .values()
            .flat_map(|h| h.candidates.iter().cloned())
            .collect()
    }

    /// Every replacement NodeClaim of a command in progress.
    #[must_use]
    pub fn replacements(&self) -> BTreeSet<String> {
        self.lock()
            .values()
            .flat_map(|h| h.replacements.iter().cloned())
            .collect()
    }
}

/// `taints` with the disrupted taint added (`on`) or removed; `None` when already so.
#[must_use]
pub fn taints_with_disrupted(taints: &[Taint], on: bool) -> Option<Vec<Taint>> {
    let has = taints
        .iter()
        .any(|t| t.key == DISRUPTED_TAINT && t.effect == "NoSchedule" && t.value.is_none());
    let other: Vec<Taint> = taints
        .iter()
        .filter(|t| t.key != DISRUPTED_TAINT)
        .cloned()
        .collect();
    match (on, has) {
        (true, true) if other.len() + 1 == taints.len() => None,
        (false, false) if other.len() == taints.len() => None,
        (true, _) => {
            let mut out = other;
            out.push(Taint {
                key: DISRUPTED_TAINT.into(),
                value: None,
                effect: "NoSchedule".into(),
                time_added: None,
            });
            Some(out)
        }
        (false, _) => Some(other),
    }
}

fn node_taints(n: &Node) -> &[Taint] {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// Managed nodes carrying the disrupted taint (or whose claim carries `DisruptionReason`) that
/// no command in progress holds and that are not being deleted: a command that did not finish
/// (a restart, a failed step) left them marked.
#[must_use]
pub fn stale_marks(objects: &LiveObjects, held: &BTreeSet<String>) -> Vec<String> {
    let claims: BTreeMap<&str, &NodeClaim> = objects
        .nodeclaims
        .iter()
        .filter_map(|c| Some((c.provider_id()?, c.as_ref())))
        .collect();
    let mut out = Vec::new();
    for n in &objects.nodes {
        let Some(name) = n.metadata.name.as_deref() else {
            continue;
        };
        if held.contains(name) || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let claim = n
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(|id| claims.get(id).copied());
        if claim.is_some_and(|c| c.metadata.deletion_timestamp.is_some()) {
            continue;
        }
        let tainted = node_taints(n).iter().any(|t| t.key == DISRUPTED_TAINT);
        let conditioned = claim.is_some_and(|c| c.condition(DISRUPTION_REASON).is_some());
        let managed = n
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(karp_core::labels::NODEPOOL));
        if managed && (tainted || conditioned) {
            out.push(name.to_string());
        }
    }
    out
}

/// Sets or removes the disrupted taint on node `name`, with the `resourceVersion` it was read
/// at (re-read and retried on a conflict).
async fn mark_node(api: &Api<Node>, name: &str, on: bool) -> Result<(), OperatorError> {
    for _ in 0..3 {
        let node = match api.get(name).await {
            Ok(n) => n,
            Err(e) if is_404(&e) && !on => return Ok(()),
            Err(e) => return Err(kube_err("get Node", e)),
        };
        if on && node.metadata.deletion_timestamp.is_some() {
            return Err(OperatorError::Kube(
                "taint Node",
                format!("node {name} is being deleted"),
            ));
        }
        let Some(taints) = taints_with_disrupted(node_taints(&node), on) else {
            return Ok(());
        };
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": taints},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(kube_err("taint Node", e)),
        }
    }
    Err(OperatorError::Kube(
        "taint Node",
        format!("node {name} kept changing"),
    ))
}

/// Sets (`reason`) or clears the claim's `DisruptionReason` condition.
async fn mark_claim(
    api: &Api<NodeClaim>,
    name: &str,
    reason: Option<&str>,
    now: &str,
) -> Result<(), OperatorError> {
    for _ in 0..3 {
        let claim = match api.get(name).await {
            Ok(c) => c,
            Err(e) if is_404(&e) && reason.is_none() => return Ok(()),
            Err(e) => return Err(kube_err("get NodeClaim", e)),
        };
        let Some(conditions) =
            conditions_with(&claim, DISRUPTION_REASON, reason.map(|r| (r, r)), now)
        else {
            return Ok(());
        };
        let rv = claim.metadata.resource_version.as_deref();
        match patch_claim_conditions(api, name, rv, &conditions).await {
            Ok(()) => return Ok(()),
            Err(OperatorError::Kube(_, m)) if m.contains("409") || m.contains("onflict") => {}
            Err(e) => return Err(e),
        }
    }
    Err(OperatorError::Kube(
        "NodeClaim conditions",
        format!("nodeclaim {name} kept changing"),
    ))
}

/// One candidate of a command: its node and the claim standing behind it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Node name.
    pub node: String,
    /// NodeClaim name (absent for a Node without one).
    pub claim: Option<String>,
    /// NodePool.
    pub nodepool: String,
    /// Capacity type label.
    pub capacity_type: String,
}

/// The targets behind candidate node `names`, from the live objects.
#[must_use]
pub fn targets(names: &[String], objects: &LiveObjects) -> Vec<Target> {
    let claims: BTreeMap<&str, &NodeClaim> = objects
        .nodeclaims
        .iter()
        .filter_map(|c| Some((c.provider_id()?, c.as_ref())))
        .collect();
    names
        .iter()
        .map(|name| {
            let node = objects
                .nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(name.as_str()));
            let label = |k: &str| {
                node.and_then(|n| n.metadata.labels.as_ref())
                    .and_then(|l| l.get(k).cloned())
                    .unwrap_or_default()
            };
            let claim = node
                .and_then(|n| n.spec.as_ref())
                .and_then(|s| s.provider_id.as_deref())
                .and_then(|id| claims.get(id))
                .and_then(|c| c.metadata.name.clone());
            Target {
                node: name.clone(),
                claim,
                nodepool: label(karp_core::labels::NODEPOOL),
                capacity_type: label(karp_core::labels::CAPACITY_TYPE),
            }
        })
        .collect()
}

/// Rolls back the marks of `nodes` (untaint, clear `DisruptionReason`); failures are logged and
/// retried by the next [`cleanup`].
pub async fn unmark(ctx: &Context, objects: &LiveObjects, nodes: &[String]) {
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let claim_api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let now = rfc3339(ctx.settings.clock.now());
    for t in targets(nodes, objects) {
        if let Err(e) = mark_node(&node_api, &t.node, false).await {
            warn!(node = %t.node, error = %e, "removing the disrupted taint failed");
        }
        if let Some(c) = &t.claim {
            if let Err(e) = mark_claim(&claim_api, c, None, &now).await {
                warn!(nodeclaim = %c, error = %e, "clearing DisruptionReason failed");
            }
        }
    }
}

/// Rolls back every stale mark (see [`stale_marks`]).
pub async fn cleanup(ctx: &Context, queue: &Queue) {
    let objects = ctx.stores.objects();
    let stale = stale_marks(&objects, &queue.nodes());
    if stale.is_empty() {
        return;
    }
    info!(nodes = ?stale, "rolling back disruption marks no command holds");
    unmark(ctx, &objects, &stale).await;
}

/// A command that started: its candidates are marked and its replacements created.
#[derive(Debug)]
pub struct Started {
    /// Queue id.
    pub id: u64,
    /// The candidates that were marked.
    pub targets: Vec<Target>,
    /// Names of the replacement NodeClaims created.
    pub replacements: Vec<String>,
    /// When it started.
    pub at: Instant,
}

/// Marks the candidates and creates the replacements (Karpenter's `StartCommand`). A command
/// with replacements aborts (and rolls back) when a candidate cannot be marked; a delete-only
/// command goes on with the candidates that were marked.
///
/// # Errors
/// [`OperatorError`] when nothing could be started (the marks made are rolled back).
pub async fn start(
    ctx: &Context,
    queue: &Queue,
    command: &Command,
    objects: &LiveObjects,
    input: &karp_core::disruption::DisruptionInput,
) -> Result<Started, OperatorError> {
    let all = targets(&command.candidates, objects);
    let id = queue.insert(command.candidates.clone());
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let claim_api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let reason = command.reason.as_str();
    let now = rfc3339(ctx.settings.clock.now());
    let mut marked = Vec::new();
    let mut failure = None;
    for t in &all {
        let result = async {
            mark_node(&node_api, &t.node, true).await?;
            if let Some(c) = &t.claim {
                mark_claim(&claim_api, c, Some(reason), &now).await?;
            }
            Ok::<(), OperatorError>(())
        }
        .await;
        match result {
            Ok(()) => marked.push(t.clone()),
            Err(e) => {
                warn!(node = %t.node, error = %e, "marking the candidate failed");
                failure = Some(e);
            }
        }
    }
    let abort = |e: OperatorError| async {
        let names: Vec<String> = all.iter().map(|t| t.node.clone()).collect();
        unmark(ctx, objects, &names).await;
        queue.remove(id);
        Err(e)
    };
    if let Some(e) = failure {
        if command.decision == Decision::Replace || marked.is_empty() {
            return abort(e).await;
        }
    }
    let mut replacements = Vec::new();
    for r in &command.replacements {
        let Some(np) = objects
            .nodepools
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(r.nodepool.as_str()))
        else {
            return abort(OperatorError::Convert(format!(
                "NodePool {} of a replacement is gone",
                r.nodepool
            )))
            .await;
        };
        let view = input
            .snapshot
            .node_pools
            .iter()
            .find(|p| p.name == r.nodepool);
        let object = claim_object(r, np, view, ctx.resolver.node_class_label());
        match claim_api.create(&PostParams::default(), &object).await {
            Ok(created) => {
                let name = created.meta().name.clone().unwrap_or_default();
                ctx.metrics.inc(
                    "karpenter_nodeclaims_created_total",
                    &[
                        ("nodepool", r.nodepool.as_str()),
                        ("reason", &reason.to_lowercase()),
                    ],
                );
                ctx.events
                    .publish_nodeclaim(
                        &created,
                        "Normal",
                        "DisruptionLaunching",
                        &format!("Launching NodeClaim: {reason}"),
                    )
                    .await;
                info!(nodeclaim = %name, instance_type = %r.cheapest.instance_type, "replacement created");
                replacements.push(name);
            }
            Err(e) => {
                // Replacements already created stay (see the module docs).
                return abort(kube_err("create NodeClaim", e)).await;
            }
        }
    }
    // Candidates that could not be marked leave the command.
    let kept: Vec<String> = marked.iter().map(|t| t.node.clone()).collect();
    queue.update(id, kept, replacements.clone());
    Ok(Started {
        id,
        targets: marked,
        replacements,
        at: Instant::now(),
    })
}

/// How a started command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Replacements initialized (if any) and the candidates deleted.
    Terminated,
    /// Rolled back, and why.
    RolledBack(String),
}

/// Waits for the replacements and deletes the candidates, or rolls back (see the module docs).
pub async fn finish(ctx: &Context, queue: &Queue, command: &Command, started: Started) -> Finished {
    let claim_api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let control = &ctx.settings.disruption;
    let reason = command.reason.as_str();
    let mut waiting_noted: BTreeSet<String> = BTreeSet::new();
    let outcome = loop {
        if ctx.is_shutdown() {
            // The next process's cleanup rolls the marks back.
            return Finished::RolledBack("the operator is stopping".into());
        }
        let timeout = replacement_timeout(
            queue.nodes().len(),
            control.replacement_timeout_min,
            control.replacement_timeout_max,
        );
        let mut pending = false;
        let mut gone = None;
        for name in &started.replacements {
            match claim_api.get(name).await {
                Ok(c) if c.is_true("Initialized") => {}
                Ok(c) => {
                    pending = true;
                    if c.metadata.deletion_timestamp.is_some() {
                        gone = Some(format!("replacement {name} is being deleted"));
                    } else if waiting_noted.insert(name.clone()) {
                        ctx.events
                            .publish_nodeclaim(
                                &c,
                                "Normal",
                                "DisruptionWaitingReadiness",
                                "Waiting on readiness to continue disruption",
                            )
                            .await;
                    }
                }
                Err(e) if is_404(&e) => gone = Some(format!("replacement {name} was deleted")),
                Err(e) => {
                    debug!(nodeclaim = %name, error = %e, "reading the replacement failed");
                    pending = true;
                }
            }
        }
        if let Some(why) = gone {
            break Finished::RolledBack(why);
        }
        if !pending {
            break Finished::Terminated;
        }
        if started.at.elapsed() >= timeout {
            break Finished::RolledBack(format!("replacements not initialized within {timeout:?}"));
        }
        tokio::select! {
            () = ctx.shutdown_requested() => {}
            () = tokio::time::sleep(control.replacement_poll) => {}
        }
    };
    let objects = ctx.stores.objects();
    match &outcome {
        Finished::Terminated => {
            for t in &started.targets {
                let deleted = match &t.claim {
                    Some(c) => delete_ignoring_404(&claim_api, c, "delete NodeClaim").await,
                    None => delete_ignoring_404(&node_api, &t.node, "delete Node").await,
                };
                if let Err(e) = deleted {
                    warn!(node = %t.node, error = %e, "deleting the candidate failed; rolling back");
                    unmark(ctx, &objects, std::slice::from_ref(&t.node)).await;
                    continue;
                }
                ctx.metrics.inc(
                    "karpenter_nodeclaims_disrupted_total",
                    &[
                        ("reason", &reason.to_lowercase()),
                        ("nodepool", &t.nodepool),
                        ("capacity_type", &t.capacity_type),
                    ],
                );
                let node_ref = objects.node_ref(&t.node);
                ctx.events
                    .publish(
                        &node_ref,
                        "Normal",
                        "DisruptionTerminating",
                        &format!("Disrupting Node: {reason}"),
                    )
                    .await;
                if let Some(c) = objects
                    .nodeclaims
                    .iter()
                    .find(|c| c.metadata.name.as_ref() == t.claim.as_ref())
                {
                    ctx.events
                        .publish_nodeclaim(
                            c,
                            "Normal",
                            "DisruptionTerminating",
                            &format!("Disrupting NodeClaim: {reason}"),
                        )
                        .await;
                }
                info!(node = %t.node, reason, "candidate deleted");
            }
            // The command holds its replacements until the candidates are gone, so the pods
            // on their way do not find them empty.
            let deadline = Instant::now()
                + replacement_timeout(
                    queue.nodes().len(),
                    control.replacement_timeout_min,
                    control.replacement_timeout_max,
                );
            while Instant::now() < deadline && !ctx.is_shutdown() {
                let nodes = ctx.stores.objects().nodes;
                let left = started.targets.iter().any(|t| {
                    nodes
                        .iter()
                        .any(|n| n.metadata.name.as_deref() == Some(t.node.as_str()))
                });
                if !left {
                    break;
                }
                tokio::select! {
                    () = ctx.shutdown_requested() => {}
                    () = tokio::time::sleep(control.replacement_poll) => {}
                }
            }
        }
        Finished::RolledBack(why) => {
            warn!(reason = %why, nodes = ?command.candidates, "failed terminating nodes while executing a disruption command; rolled back");
            let uninitialized = started
                .replacements
                .iter()
                .filter(|r| {
                    !objects
                        .nodeclaims
                        .iter()
                        .any(|c| c.metadata.name.as_ref() == Some(*r) && c.is_true("Initialized"))
                })
                .count();
            for _ in 0..uninitialized {
                ctx.metrics.inc(
                    "karpenter_voluntary_disruption_queue_failures_total",
                    &[
                        ("decision", command.decision.as_str()),
                        ("reason", &reason.to_lowercase()),
                        ("consolidation_type", consolidation_type(command.method)),
                    ],
                );
            }
            let names: Vec<String> = started.targets.iter().map(|t| t.node.clone()).collect();
            unmark(ctx, &objects, &names).await;
        }
    }
    queue.remove(started.id);
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn the_replacement_timeout_is_80ms_per_queued_candidate_clamped() {
        let (min, max) = (Duration::from_secs(600), Duration::from_secs(3600));
        assert_eq!(replacement_timeout(1, min, max), min);
        assert_eq!(replacement_timeout(7_500, min, max), min);
        assert_eq!(
            replacement_timeout(10_000, min, max),
            Duration::from_secs(800)
        );
        assert_eq!(replacement_timeout(1_000_000, min, max), max);
    }

    #[test]
    fn the_disrupted_taint_is_added_once_and_removed_with_variants() {
        let other = taint("dedicated", "NoSchedule");
        assert_eq!(
            taints_with_disrupted(std::slice::from_ref(&other), true),
            Some(vec![other.clone(), taint(DISRUPTED_TAINT, "NoSchedule")])
        );
        let marked = vec![other.clone(), taint(DISRUPTED_TAINT, "NoSchedule")];
        assert_eq!(taints_with_disrupted(&marked, true), None);
        assert_eq!(
            taints_with_disrupted(&marked, false),
            Some(vec![other.clone()])
        );
        // A variant of the key (another effect) is replaced by the exact taint.
        let variant = vec![taint(DISRUPTED_TAINT, "NoExecute")];
        assert_eq!(
            taints_with_disrupted(&variant, true),
            Some(vec![taint(DISRUPTED_TAINT, "NoSchedule")])
        );
        assert_eq!(taints_with_disrupted(&variant, false), Some(vec![]));
        assert_eq!(
            taints_with_disrupted(std::slice::from_ref(&other), false),
            None
        );
    }

    fn node(name: &str, tainted: bool, deleting: bool, managed: bool) -> Arc<Node> {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        if managed {
            n.metadata.labels = Some(
                [(
                    karp_core::labels::NODEPOOL.to_string(),
                    "default".to_string(),
                )]
                .into(),
            );
        }
        if deleting {
            n.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        let mut spec = k8s_openapi::api::core::v1::NodeSpec::default();
        if tainted {
            spec.taints = Some(vec![taint(DISRUPTED_TAINT, "NoSchedule")]);
        }
        n.spec = Some(spec);
        Arc::new(n)
    }

    #[test]
    fn stale_marks_are_tainted_managed_nodes_no_command_holds_and_not_deleting() {
        let objects = LiveObjects {
            nodes: vec![
                node("held", true, false, true),
                node("stale", true, false, true),
                node("deleting", true, true, true),
                node("clean", false, false, true),
                node("unmanaged", true, false, false),
            ],
            ..LiveObjects::default()
        };
        let held: BTreeSet<String> = ["held".to_string()].into();
        assert_eq!(stale_marks(&objects, &held), ["stale"]);
    }
}
