//! The disruption controller: Karpenter v1's consolidation, drift and emptiness in the running
//! operator, deciding with karp-core's planner and acting through [`orchestration`].
//!
//! One pass at a time: roll back marks no command holds ([`orchestration::cleanup`]); build the
//! planner's input from the live caches with the provisioner's snapshot builder (nodes held by a
//! command in progress count as deleting, so they are neither candidates again nor destinations,
//! and they consume their pools' budgets); run [`karp_core::disruption::plan`]. A consolidation
//! or emptiness command waits the validation delay (Karpenter: 15 s, on the operator's
//! [`Clock`](crate::runtime::clock::Clock)), is validated on a fresh input
//! ([`karp_core::disruption::validate`]) and then started; drift starts at once. The next pass
//! follows at once after a command started, [`DisruptionControl::poll`] (10 s) after a pass that
//! did nothing. Expired nodes are left to the [`expiration`](super::expiration) controller.
//!
//! The consolidator is `--consolidation-mode` (`karpenter` or `global`) for pools without the
//! `karp.dev/consolidation-mode` annotation; `--feature-gates SpotToSpotConsolidation=true`
//! allows spot-to-spot replacements.
//!
//! Events (Karpenter 1.14's reasons): `DisruptionBlocked` on the Node and NodeClaim of a managed
//! node that may not be disrupted and on a NodePool whose budget allows nothing, `Unconsolidatable`
//! when consolidation found nothing to do with a node, `ConsolidationCandidate` when a command
//! waits for validation, `ConsolidationApproved` / `ConsolidationRejected` after it, and the
//! orchestration's `DisruptionLaunching`, `DisruptionWaitingReadiness`, `DisruptionTerminating`.
//! Each message is published again only when it changes. Metrics: see
//! [`record_pass`] and [`orchestration`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use karp_core::disruption::{
    balanced, candidates, plan, validate, Command, DisruptionInput, DisruptionOptions,
    DisruptionPlan, Method, Mode, Reason, Timestamp,
};
use tracing::{debug, info, info_span, warn, Instrument};

use super::drift::live_input;
use super::orchestration::{self, consolidation_type, Finished, Queue};
use super::provisioner::instance_types;
use super::{Context, LiveObjects};

/// Settings of the disruption controller (Karpenter's defaults).
#[derive(Debug, Clone)]
pub struct DisruptionControl {
    /// Whether the controller runs.
    pub enabled: bool,
    /// The consolidator of pools without a `karp.dev/consolidation-mode` annotation.
    pub mode: Mode,
    /// The `SpotToSpotConsolidation` feature gate.
    pub spot_to_spot: bool,
    /// Wait after a pass that started nothing (Karpenter: 10 s).
    pub poll: Duration,
    /// Consolidation and emptiness commands are validated again after this (Karpenter: 15 s).
    pub validation_delay: Duration,
    /// How often a command checks its replacements.
    pub replacement_poll: Duration,
    /// Replacement wait, lower clamp (Karpenter: 10 min).
    pub replacement_timeout_min: Duration,
    /// Replacement wait, upper clamp (Karpenter: 1 h).
    pub replacement_timeout_max: Duration,
}

impl Default for DisruptionControl {
    fn default() -> Self {
        DisruptionControl {
            enabled: true,
            mode: Mode::Karpenter,
            spot_to_spot: false,
            poll: Duration::from_secs(10),
            validation_delay: karp_core::disruption::CONSOLIDATION_TTL,
            replacement_poll: Duration::from_secs(1),
            replacement_timeout_min: Duration::from_secs(600),
            replacement_timeout_max: Duration::from_secs(3600),
        }
    }
}

/// Parse Karpenter's `--feature-gates` value (`Name=true,Other=false`) into gate → value.
///
/// # Errors
/// A message naming the malformed entry.
pub fn parse_feature_gates(gates: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut out = BTreeMap::new();
    for entry in gates.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, value) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not Name=true|false"))?;
        let value = match value.trim() {
            "true" => true,
            "false" => false,
            v => return Err(format!("{}: {v:?} is not true or false", name.trim())),
        };
        out.insert(name.trim().to_string(), value);
    }
    Ok(out)
}

/// Whether `--feature-gates` turns `SpotToSpotConsolidation` on. Gates karp does not act on are
/// accepted, as Karpenter's other gates do not change disruption.
///
/// # Errors
/// A message naming the malformed entry.
pub fn spot_to_spot_gate(gates: &str) -> Result<bool, String> {
    Ok(parse_feature_gates(gates)?
        .get("SpotToSpotConsolidation")
        .copied()
        .unwrap_or(false))
}

/// `reason` label values (Karpenter lowercases them).
fn reason_label(r: Reason) -> String {
    r.as_str().to_lowercase()
}

fn is_consolidation(m: Method) -> bool {
    matches!(
        m,
        Method::Emptiness | Method::SingleNode | Method::MultiNode | Method::Global
    )
}

/// What one pass read: the objects and the planner's input at `now`.
struct Read {
    objects: LiveObjects,
    input: Arc<DisruptionInput>,
    now: Timestamp,
}

async fn read(ctx: &Context, queue: &Queue) -> Option<Read> {
    let objects = ctx.stores.objects();
    let types = instance_types(ctx, &objects).await;
    let now = Timestamp::from(ctx.settings.clock.now());
    let mut input = match live_input(&objects, types, now) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "disruption skipped: the cluster does not convert");
            return None;
        }
    };
    for node in queue.nodes() {
        if let Some(f) = input.nodes.get_mut(&node) {
            f.deleting = true;
        }
        if let Some(n) = input.snapshot.nodes.iter_mut().find(|n| n.name == node) {
            n.deleting = true;
        }
    }
    // Nodes pending pods were planned onto are not candidates (Karpenter's nomination).
    for node in super::provisioner::nominated_nodes(ctx, &objects) {
        if let Some(f) = input.nodes.get_mut(&node) {
            f.nominated = true;
        }
    }
    let coming = queue.replacements();
    for claim in objects
        .nodeclaims
        .iter()
        .filter(|c| c.metadata.name.as_ref().is_some_and(|n| coming.contains(n)))
    {
        let node = claim.status.as_ref().and_then(|s| s.node_name.as_ref());
        if let Some(f) = node.and_then(|n| input.nodes.get_mut(n)) {
            f.nominated = true;
        }
    }
    Some(Read {
        objects,
        input: Arc::new(input),
        now,
    })
}

fn options(ctx: &Context) -> DisruptionOptions {
    let c = &ctx.settings.disruption;
    let mut options = DisruptionOptions::default()
        .mode(c.mode)
        .spot_to_spot(c.spot_to_spot);
    options.targets = ctx.targets.clone();
    options
}

/// The pass's decision and the candidate facts behind its events and metrics.
struct Decided {
    plan: DisruptionPlan,
    rejected: BTreeMap<String, String>,
    eligible: BTreeMap<&'static str, usize>,
    consuming: BTreeMap<String, usize>,
    pool_nodes: BTreeMap<String, usize>,
}

fn decide(input: &DisruptionInput, now: Timestamp, options: &DisruptionOptions) -> Decided {
    let plan = plan(input, now, options);
    let (all, rejected) = candidates::evaluate(input, now);
    let mut eligible = BTreeMap::from([("empty", 0), ("drifted", 0), ("underutilized", 0)]);
    for c in &all {
        if c.empty && c.consolidation_blocker(now, true).is_none() {
            *eligible.entry("empty").or_default() += 1;
        }
        if c.facts.drifted.is_some() {
            *eligible.entry("drifted").or_default() += 1;
        }
        if c.consolidation_blocker(now, false).is_none() {
            *eligible.entry("underutilized").or_default() += 1;
        }
    }
    let mut consuming = BTreeMap::new();
    let mut pool_nodes = BTreeMap::new();
    for f in input.nodes.values().filter(|f| f.initialized) {
        *pool_nodes.entry(f.nodepool.clone()).or_default() += 1;
        if f.deleting || !f.ready {
            *consuming.entry(f.nodepool.clone()).or_default() += 1;
        }
    }
    Decided {
        plan,
        rejected,
        eligible,
        consuming,
        pool_nodes,
    }
}

/// Sets the pass's gauges: `karpenter_voluntary_disruption_eligible_nodes{reason}`,
/// `karpenter_nodepools_allowed_disruptions{nodepool,reason}` (the budget's allowance before the
/// nodes already disrupting are subtracted; a reason no budget limits reports the pool's node
/// count) and `karpenter_nodepools_nodes_consuming_budgets{nodepool,reason}` (NotReady or
/// deleting nodes).
/// Counter of disruption passes decided (`karp_disruption_passes_total`, no labels).
pub const PASSES_TOTAL: &str = "karp_disruption_passes_total";

fn record_pass(ctx: &Context, d: &Decided) {
    let m = &ctx.metrics;
    // Passes decided (acting or not): how callers such as `karp demo` know the planner has
    // seen a cluster state, whatever the machine's speed.
    m.inc(PASSES_TOTAL, &[]);
    for (reason, n) in &d.eligible {
        #[allow(clippy::cast_precision_loss)]
        m.set(
            "karpenter_voluntary_disruption_eligible_nodes",
            &[("reason", reason)],
            *n as f64,
        );
    }
    for b in &d.plan.budgets {
        let consuming = d.consuming.get(&b.nodepool).copied().unwrap_or(0);
        let nodes = d.pool_nodes.get(&b.nodepool).copied().unwrap_or(0);
        let allowed = b.allowed.count().map_or(nodes, |a| a + consuming);
        let labels = [
            ("nodepool", b.nodepool.as_str()),
            ("reason", b.reason.as_str()),
        ];
        #[allow(clippy::cast_precision_loss)]
        {
            m.set(
                "karpenter_nodepools_allowed_disruptions",
                &labels,
                allowed as f64,
            );
            m.set(
                "karpenter_nodepools_nodes_consuming_budgets",
                &labels,
                consuming as f64,
            );
        }
    }
}

/// Events published, by (object, kind), so each message is published once per change.
#[derive(Debug, Default)]
struct Published(BTreeMap<(String, &'static str), String>);

impl Published {
    fn fresh(&mut self, object: &str, kind: &'static str, message: &str) -> bool {
        let key = (object.to_string(), kind);
        if self.0.get(&key).map(String::as_str) == Some(message) {
            return false;
        }
        self.0.insert(key, message.to_string());
        true
    }
}

/// Publishes `reason` with `message` on the node and its NodeClaim.
async fn publish_on_node(
    ctx: &Context,
    objects: &LiveObjects,
    node: &str,
    reason: &str,
    message: &str,
) {
    debug!(%node, reason, message, "disruption event");
    ctx.events
        .publish(&objects.node_ref(node), "Normal", reason, message)
        .await;
    let names = [node.to_string()];
    if let Some(claim) = orchestration::targets(&names, objects)
        .first()
        .and_then(|t| t.claim.clone())
        .and_then(|c| {
            objects
                .nodeclaims
                .iter()
                .find(|x| x.metadata.name.as_deref() == Some(c.as_str()))
        })
    {
        ctx.events
            .publish_nodeclaim(claim, "Normal", reason, message)
            .await;
    }
}

/// Reasons the planner notes that are not worth an event (nothing blocks the node).
fn is_quiet(reason: &str) -> bool {
    reason.starts_with("Not evaluated") || reason.starts_with("No disruption method applies")
}

async fn publish_pass_events(
    ctx: &Context,
    objects: &LiveObjects,
    d: &Decided,
    published: &mut Published,
) {
    for (node, why) in &d.rejected {
        if published.fresh(node, "DisruptionBlocked", why) {
            publish_on_node(ctx, objects, node, "DisruptionBlocked", why).await;
        }
    }
    for nc in &d.plan.not_candidates {
        if d.rejected.contains_key(&nc.node) || is_quiet(&nc.reason) {
            continue;
        }
        let kind = if nc.reason.contains("blocking budget")
            || nc.reason.contains("do-not-disrupt")
            || nc.reason.contains("PDB")
        {
            "DisruptionBlocked"
        } else {
            "Unconsolidatable"
        };
        if published.fresh(&nc.node, kind, &nc.reason) {
            publish_on_node(ctx, objects, &nc.node, kind, &nc.reason).await;
        }
    }
    for b in &d.plan.budgets {
        let nodes = d.pool_nodes.get(&b.nodepool).copied().unwrap_or(0);
        if nodes == 0 || b.allowed.any() {
            continue;
        }
        let message = format!(
            "No allowed disruptions for disruption reason {} due to blocking budget",
            b.reason.as_str()
        );
        let key = format!("nodepool/{}/{}", b.nodepool, b.reason.as_str());
        if published.fresh(&key, "DisruptionBlocked", &message) {
            let reference = objects.nodepool_ref(&b.nodepool);
            ctx.events
                .publish(&reference, "Normal", "DisruptionBlocked", &message)
                .await;
        }
    }
}

fn describe(c: &Command) -> String {
    format!(
        "{} {} of {} node(s) ({}), {} replacement(s), saving ${:.4}/h",
        c.method.as_str(),
        c.decision.as_str(),
        c.candidates.len(),
        c.candidates.join(", "),
        c.replacements.len(),
        c.savings_per_hour
    )
}

fn count_moves(ctx: &Context, c: &Command, objects: &LiveObjects, decision: &str) {
    let pools: BTreeSet<String> = orchestration::targets(&c.candidates, objects)
        .into_iter()
        .map(|t| t.nodepool)
        .collect();
    for pool in pools {
        let policy = objects
            .nodepools
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(pool.as_str()))
            .and_then(|p| p.spec.disruption.as_ref())
            .and_then(|d| d.consolidation_policy.clone())
            .unwrap_or_else(|| "WhenEmptyOrUnderutilized".into());
        ctx.metrics.inc(
            "karpenter_consolidation_moves_total",
            &[
                ("decision", decision),
                ("nodepool", &pool),
                ("policy", &policy),
            ],
        );
    }
}

/// Scores `command` for each `Balanced` pool it takes nodes from (Karpenter 1.14's score, on
/// `input` at `now`), records them in `karpenter_consolidation_score{decision,nodepool,policy}`
/// and returns their messages.
fn record_scores(
    ctx: &Context,
    input: &DisruptionInput,
    now: Timestamp,
    command: &Command,
    decision: &str,
) -> Vec<String> {
    let (all, _) = candidates::evaluate(input, now);
    let totals = balanced::pool_totals(&all);
    let chosen: Vec<&candidates::Candidate> = all
        .iter()
        .filter(|c| command.candidates.contains(&c.name))
        .collect();
    if chosen.is_empty() {
        return Vec::new();
    }
    balanced::evaluate(&totals, &chosen, command.savings_per_hour, None)
        .into_iter()
        .map(|(pool, score)| {
            ctx.metrics.observe_in(
                "karpenter_consolidation_score",
                &[
                    ("decision", decision),
                    ("nodepool", &pool),
                    ("policy", "Balanced"),
                ],
                crate::runtime::metrics::SCORE_BUCKETS,
                score.score,
            );
            format!("NodePool {pool:?}: {}", score.message())
        })
        .collect()
}

/// Waits the validation delay and validates `command` on a fresh read; the command to start.
async fn validated(
    ctx: &Context,
    queue: &Queue,
    command: Command,
    objects: &LiveObjects,
) -> Option<(Command, Read)> {
    let control = &ctx.settings.disruption;
    let message = describe(&command);
    for node in &command.candidates {
        publish_on_node(ctx, objects, node, "ConsolidationCandidate", &message).await;
    }
    tokio::select! {
        () = ctx.shutdown_requested() => return None,
        () = ctx.settings.clock.sleep(control.validation_delay) => {}
    }
    let fresh = read(ctx, queue).await?;
    let opts = options(ctx);
    let input = Arc::clone(&fresh.input);
    let now = fresh.now;
    let proposed = command.clone();
    let outcome = tokio::task::spawn_blocking(move || validate(&input, now, &opts, &proposed))
        .await
        .ok()?;
    match outcome {
        Ok(v) => {
            for (node, why) in &v.dropped {
                debug!(%node, reason = %why, "dropped from the command at validation");
            }
            let mut message = describe(&v.command);
            let scores = record_scores(ctx, &fresh.input, fresh.now, &v.command, "approved");
            if !scores.is_empty() {
                message = format!("{message}; {}", scores.join("; "));
            }
            for node in &v.command.candidates {
                publish_on_node(ctx, &fresh.objects, node, "ConsolidationApproved", &message).await;
            }
            count_moves(ctx, &v.command, &fresh.objects, "approved");
            Some((v.command, fresh))
        }
        Err(e) => {
            info!(reason = %e, command = %message, "abandoning consolidation attempt due to pod churn, command is no longer valid");
            record_scores(ctx, &fresh.input, fresh.now, &command, "rejected");
            for _ in &e.failed {
                ctx.metrics.inc(
                    "karpenter_voluntary_disruption_failed_validations_total",
                    &[("consolidation_type", consolidation_type(command.method))],
                );
            }
            for node in &command.candidates {
                publish_on_node(
                    ctx,
                    &fresh.objects,
                    node,
                    "ConsolidationRejected",
                    &format!("{message}: {e}"),
                )
                .await;
            }
            count_moves(ctx, &command, &fresh.objects, "rejected");
            None
        }
    }
}

/// One pass; whether a command was started (or validation failed, so the next pass runs at
/// once).
async fn pass(ctx: &Arc<Context>, queue: &Arc<Queue>, published: &mut Published) -> bool {
    orchestration::cleanup(ctx, queue).await;
    let started = Instant::now();
    let Some(r) = read(ctx, queue).await else {
        return false;
    };
    let opts = options(ctx);
    let input = Arc::clone(&r.input);
    let now = r.now;
    let Ok(d) = tokio::task::spawn_blocking(move || decide(&input, now, &opts)).await else {
        warn!("the disruption planner panicked");
        return false;
    };
    record_pass(ctx, &d);
    publish_pass_events(ctx, &r.objects, &d, published).await;
    let Some(command) = d.plan.commands.into_iter().next() else {
        return false;
    };
    if command.method == Method::Expiration {
        debug!(nodes = ?command.candidates, "expired nodes are left to the expiration controller");
        return false;
    }
    let (command, r) = if is_consolidation(command.method) {
        match validated(ctx, queue, command.clone(), &r.objects).await {
            Some(x) => x,
            None => {
                observe(ctx, &command, started);
                return !ctx.is_shutdown();
            }
        }
    } else {
        (command, r)
    };
    observe(ctx, &command, started);
    let span = info_span!(
        "command",
        method = command.method.as_str(),
        decision = command.decision.as_str(),
        nodes = command.candidates.len()
    );
    let begun = orchestration::start(ctx, queue, &command, &r.objects, &r.input)
        .instrument(span.clone())
        .await;
    match begun {
        Ok(s) => {
            info!(parent: &span, command = %describe(&command), "disrupting node(s)");
            ctx.metrics.inc(
                "karpenter_voluntary_disruption_decisions_total",
                &[
                    ("decision", command.decision.as_str()),
                    ("reason", &reason_label(command.reason)),
                    ("consolidation_type", consolidation_type(command.method)),
                ],
            );
            let (ctx, queue) = (Arc::clone(ctx), Arc::clone(queue));
            tokio::spawn(
                async move {
                    match orchestration::finish(&ctx, &queue, &command, s).await {
                        Finished::Terminated => info!("disruption command done"),
                        Finished::RolledBack(why) => {
                            info!(reason = %why, "disruption command rolled back")
                        }
                    }
                }
                .instrument(span),
            );
            true
        }
        Err(e) => {
            warn!(error = %e, command = %describe(&command), "starting the disruption command failed");
            false
        }
    }
}

fn observe(ctx: &Context, command: &Command, started: Instant) {
    ctx.metrics.observe(
        "karpenter_voluntary_disruption_decision_evaluation_duration_seconds",
        &[
            ("reason", &reason_label(command.reason)),
            ("consolidation_type", consolidation_type(command.method)),
        ],
        started.elapsed().as_secs_f64(),
    );
}

/// Runs disruption passes until shutdown (idle when disabled).
pub async fn run(ctx: Arc<Context>) {
    if !ctx.settings.disruption.enabled {
        ctx.shutdown_requested().await;
        return;
    }
    let queue = Arc::new(Queue::default());
    let mut published = Published::default();
    // Let provisioning plan the pending pods first (its nominations are in memory: after a
    // restart the first batch re-creates them), so a node pods are on their way to is not taken
    // as empty.
    tokio::select! {
        () = ctx.shutdown_requested() => return,
        () = tokio::time::sleep(ctx.settings.batch.max) => {}
    }
    loop {
        if ctx.is_shutdown() {
            return;
        }
        let acted = pass(&ctx, &queue, &mut published)
            .instrument(info_span!("disruption"))
            .await;
        if acted {
            continue;
        }
        tokio::select! {
            () = ctx.shutdown_requested() => return,
            () = ctx.settings.clock.sleep(ctx.settings.disruption.poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_gates_parse_like_karpenters() {
        assert_eq!(spot_to_spot_gate(""), Ok(false));
        assert_eq!(spot_to_spot_gate("SpotToSpotConsolidation=true"), Ok(true));
        assert_eq!(
            spot_to_spot_gate("NodeRepair=true, SpotToSpotConsolidation=false"),
            Ok(false)
        );
        assert!(spot_to_spot_gate("SpotToSpotConsolidation").is_err());
        assert!(spot_to_spot_gate("SpotToSpotConsolidation=yes").is_err());
    }

    #[test]
    fn an_event_is_published_again_only_when_its_message_changes() {
        let mut p = Published::default();
        assert!(p.fresh("node-a", "DisruptionBlocked", "PDB"));
        assert!(!p.fresh("node-a", "DisruptionBlocked", "PDB"));
        assert!(p.fresh("node-a", "Unconsolidatable", "PDB"));
        assert!(p.fresh("node-a", "DisruptionBlocked", "budget"));
    }
}
