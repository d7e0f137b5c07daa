//! Provisioning: pending pods → NodeClaims.
//!
//! [`plan`] is the pure decision (cluster objects in, NodeClaims out), through the snapshot
//! builder `karp plan` uses and karp-core's scheduler; [`Provisioner::run`] batches (the window closes after 1 s
//! without new pending pods, or 10 s after it opened) and creates the claims.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use karp_core::cloud::InstanceType;
use karp_core::labels;
use karp_core::packing::flexibility::{limit_options, DEFAULT_PRICE_MARGIN, MIN_SPOT_OPTIONS};
use karp_core::packing::{Clock, Ffd, Milp, PackResult, Packer};
use karp_core::scheduling::{NewNodeClaim, SchedulerOptions};
use kube::api::{Api, PostParams};
use kube::Resource;
use tracing::{debug, info, info_span, warn, Instrument};

use super::{Context, LiveObjects, OperatorError};
use crate::api::nodeclaim::{NodeClaim, NodeClaimSpec, ResourceRequirements};
use crate::api::nodepool::{NodePool, KARP_HASH_VERSION, NODEPOOL_HASH, NODEPOOL_HASH_VERSION};
pub use crate::commands::plan::Solver;
use crate::convert::nodeclaim::{quantities, requirement_specs, taint_spec};
use crate::convert::{build_snapshot, BuildOptions, ConvertError, TypesByNodeClass};

/// Whether a pod is waiting for capacity: not bound, not terminating, and marked Unschedulable by
/// the kube-scheduler (Karpenter's definition of provisionable).
#[must_use]
pub fn is_provisionable(p: &Pod) -> bool {
    if p.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let spec = p.spec.as_ref();
    if spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
    {
        return false;
    }
    let status = p.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return false;
    }
    status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
}

/// The cloud's instance types of every node class the NodePools use (a class whose types the
/// cloud cannot list is left out, with a debug line).
pub async fn instance_types(
    ctx: &Context,
    objects: &LiveObjects,
) -> BTreeMap<String, Vec<Arc<InstanceType>>> {
    let mut types = BTreeMap::new();
    for np in &objects.nodepools {
        let Some(class) = np
            .spec
            .template
            .spec
            .node_class_ref
            .as_ref()
            .map(|r| r.name.clone())
        else {
            continue;
        };
        if types.contains_key(&class) {
            continue;
        }
        let pool = np.metadata.name.clone().unwrap_or_default();
        match ctx.cloud.instance_types(&pool, Some(&class)).await {
            Ok(t) => {
                types.insert(class, t);
            }
            Err(e) => debug!(nodepool = %pool, error = %e, "no instance types"),
        }
    }
    types
}

/// Whether a DaemonSet owns the pod.
pub(crate) fn is_daemonset_pod(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet")
}

/// Whether a pod is bound to a node.
fn is_bound(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// How each batch is packed.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverSettings {
    /// The packer.
    pub solver: Solver,
    /// The MILP's wall-clock budget per 1 000 pending pods (scaled linearly up to 5 000 pods;
    /// at least this much), in seconds; when it runs out the batch keeps the best plan found,
    /// FFD's at worst.
    pub budget_secs: f64,
    /// MILP claims may launch on instance types up to this fraction dearer than the chosen one
    /// ([`limit_options`]).
    pub price_margin: f64,
    /// ... and keep at least this many options when they launch on spot.
    pub min_spot_options: usize,
}

impl Default for SolverSettings {
    fn default() -> Self {
        SolverSettings {
            solver: Solver::Milp,
            budget_secs: 1.5,
            price_margin: DEFAULT_PRICE_MARGIN,
            min_spot_options: MIN_SPOT_OPTIONS,
        }
    }
}

impl SolverSettings {
    /// Pack `snapshot` with the configured packer (the MILP under its wall-clock budget).
    #[must_use]
    pub fn pack(&self, snapshot: &karp_core::cluster::ClusterSnapshot) -> PackResult {
        match self.solver {
            Solver::Ffd => Ffd {
                options: SchedulerOptions::default(),
            }
            .pack(snapshot),
            Solver::Milp => {
                let started = Instant::now();
                let clock = Clock(Arc::new(move || started.elapsed().as_secs_f64()));
                let mut milp = Milp::default().with_clock(clock);
                milp.budget_secs = self.budget_secs;
                milp.time_limit_secs = self.budget_secs;
                milp.pack(snapshot)
            }
        }
    }
}

/// NodeClaim creates in flight at once.
const CONCURRENT_CREATES: usize = 16;

/// Event writes in flight at once.
const CONCURRENT_EVENTS: usize = 32;

/// The provisioner's decision.
#[derive(Debug, Clone, Default)]
pub struct ProvisionPlan {
    /// NodeClaims to create (names left to `generateName`).
    pub nodeclaims: Vec<NodeClaim>,
    /// For each planned claim, the pods (`namespace/name`) it is for.
    pub pods_per_claim: Vec<Vec<String>>,
    /// Pending pods placed on existing capacity (a node or an in-flight claim, by snapshot
    /// node name): they are nominated there too.
    pub pods_per_existing: Vec<(String, Vec<String>)>,
    /// Pods that fit nowhere, with the reason.
    pub unschedulable: Vec<(String, String)>,
    /// Provisionable pods considered.
    pub pending: usize,
    /// Cluster objects left out of the plan because they do not convert.
    pub skipped: Vec<ConvertError>,
    /// The packer whose plan was kept (`ffd`, `milp`).
    pub packer: &'static str,
    /// Why the MILP's plan was not kept, when it was not.
    pub fallback: Option<String>,
    /// USD per hour of the new claims at their chosen offerings.
    pub cost_per_hour: f64,
    /// No plan placing the same pods costs less per hour (new claims only).
    pub lower_bound_per_hour: f64,
}

/// Decides which NodeClaims to create for the provisionable pods: the live objects go through
/// the same snapshot builder as `karp plan` (bound pods and the pods the kube-scheduler marked
/// unschedulable; in-flight NodeClaims as coming capacity), objects that do not convert are
/// skipped (listed in [`ProvisionPlan::skipped`]), and karp-core's scheduler decides.
///
/// # Errors
/// [`ConvertError`] only when the instance-type source itself fails.
pub fn plan(
    objects: &LiveObjects,
    types: BTreeMap<String, Vec<Arc<InstanceType>>>,
    node_class_label: &str,
    solver: &SolverSettings,
    nominations: &BTreeMap<String, String>,
) -> Result<ProvisionPlan, ConvertError> {
    let input = objects.cluster_objects(|p| is_bound(p) || is_provisionable(p));
    let pending = objects
        .pods
        .iter()
        .filter(|p| is_provisionable(p) && !is_daemonset_pod(p))
        .count();
    let options = BuildOptions { skip_invalid: true };
    let converted = build_snapshot(&input, &mut TypesByNodeClass(types), &options)?;
    let mut snapshot = converted.snapshot.clone();
    nominate(&mut snapshot, nominations);
    let snapshot = &snapshot;
    let packed = solver.pack(snapshot);
    let results = &packed.results;
    let pod_name = |i: usize| {
        let p = &snapshot.pods[i];
        format!("{}/{}", p.namespace, p.name)
    };
    let mut out = ProvisionPlan {
        pending,
        skipped: converted.skipped.clone(),
        packer: packed.packer,
        fallback: packed.fallback.clone(),
        cost_per_hour: results
            .new_nodeclaims
            .iter()
            .map(|c| c.cheapest.price)
            .sum(),
        lower_bound_per_hour: packed.lower_bound_per_hour,
        ..ProvisionPlan::default()
    };
    for u in &results.unschedulable {
        out.unschedulable.push((pod_name(u.pod), u.reason.clone()));
    }
    for e in &results.existing {
        let pods: Vec<String> = e
            .pods
            .iter()
            .filter(|&&i| snapshot.pods[i].node_name.is_none())
            .map(|&i| pod_name(i))
            .collect();
        if !pods.is_empty() {
            out.pods_per_existing.push((e.node.clone(), pods));
        }
    }
    for c in &results.new_nodeclaims {
        let Some(np) = objects
            .nodepools
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(c.nodepool.as_str()))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        else {
            continue;
        };
        let pool = snapshot.node_pools.iter().find(|p| p.name == c.nodepool);
        // A MILP claim launches on types close to its chosen price (Karpenter's FFD claims keep
        // every option, as Karpenter's do).
        let limited;
        let c = if packed.packer == "milp" {
            limited = limit_options(c, solver.price_margin, solver.min_spot_options);
            &limited
        } else {
            c
        };
        let claim = claim_object(c, np, pool, node_class_label);
        out.nodeclaims.push(claim);
        out.pods_per_claim
            .push(c.pods.iter().map(|&i| pod_name(i)).collect());
    }
    Ok(out)
}

/// Counts each nominated pending pod on the in-flight NodeClaim it was planned onto (the
/// snapshot's node named after the claim), so a later pass neither plans it again nor fills
/// that claim with other pods. Without this, a pass re-packing pending pods first-fit onto
/// in-flight claims sized for another assignment (the MILP's) would leave pods over and launch
/// duplicate capacity.
pub fn nominate(
    snapshot: &mut karp_core::cluster::ClusterSnapshot,
    nominations: &BTreeMap<String, String>,
) {
    if nominations.is_empty() {
        return;
    }
    let in_flight: BTreeSet<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| !n.initialized)
        .map(|n| n.name.as_str())
        .collect();
    let mut bound: Vec<(usize, String)> = Vec::new();
    for (i, p) in snapshot.pods.iter().enumerate() {
        if p.node_name.is_some() {
            continue;
        }
        if let Some(claim) = nominations.get(&p.key()) {
            if in_flight.contains(claim.as_str()) {
                bound.push((i, claim.clone()));
            }
        }
    }
    for (i, claim) in bound {
        snapshot.pods[i].node_name = Some(claim);
    }
}

/// The NodeClaim object for a scheduler's new claim `c` of NodePool `np` (`pool`: the pool as
/// the scheduler saw it, for its startup taints): the template's labels and annotations, karp's
/// NodePool hash, the requirements with every instance-type option, the requests, taints, node
/// class, `expireAfter` and `terminationGracePeriod`; the name is left to `generateName`.
#[must_use]
pub fn claim_object(
    c: &NewNodeClaim,
    np: &NodePool,
    pool: Option<&karp_core::cluster::NodePool>,
    node_class_label: &str,
) -> NodeClaim {
    let t = &np.spec.template;
    let mut labels = t.metadata.labels.clone();
    labels.insert(labels::NODEPOOL.into(), c.nodepool.clone());
    if let Some(r) = &t.spec.node_class_ref {
        labels.insert(node_class_label.to_string(), r.name.clone());
    }
    let mut requirements = c.requirements.clone();
    // The scheduler's view keeps every option; the claim carries them as requirements.
    if requirements.get(labels::INSTANCE_TYPE).is_none() {
        requirements.add(karp_core::requirements::Requirement::in_values(
            labels::INSTANCE_TYPE,
            c.instance_types.iter().map(|it| it.name.clone()),
        ));
    }
    let owner = OwnerReference {
        api_version: "karpenter.sh/v1".into(),
        kind: "NodePool".into(),
        name: c.nodepool.clone(),
        uid: np.metadata.uid.clone().unwrap_or_default(),
        block_owner_deletion: Some(true),
        controller: None,
    };
    NodeClaim {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", c.nodepool)),
            labels: Some(labels),
            annotations: Some({
                let mut a = t.metadata.annotations.clone();
                a.insert(NODEPOOL_HASH.into(), np.spec.template_hash());
                a.insert(NODEPOOL_HASH_VERSION.into(), KARP_HASH_VERSION.into());
                a
            }),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: NodeClaimSpec {
            requirements: requirement_specs(&requirements),
            resources: Some(ResourceRequirements {
                requests: quantities(&c.requests),
            }),
            taints: c.taints.iter().map(taint_spec).collect(),
            startup_taints: pool
                .map(|p| p.startup_taints.iter().map(taint_spec).collect())
                .unwrap_or_default(),
            node_class_ref: t.spec.node_class_ref.clone(),
            expire_after: np.spec.expire_after().map(str::to_string),
            termination_grace_period: t
                .spec
                .termination_grace_period
                .as_ref()
                .map(|s| s.0.clone()),
        },
        ..NodeClaim::default()
    }
}

/// A pending pod planned onto a NodeClaim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nomination {
    /// The NodeClaim.
    pub claim: String,
    /// When it was planned.
    pub at: Instant,
}

/// How long a nomination keeps its node from disruption after the claim is initialized
/// (Karpenter: twice the batch's maximum window, at least 10 s): the kube-scheduler binds the
/// pods meanwhile.
pub const NOMINATION_TTL: Duration = Duration::from_secs(20);

/// Keeps the nominations whose pod still waits for capacity and whose claim exists and is not
/// being deleted; returns the live claims, each with its snapshot node (the claim while in
/// flight, its Node once registered) and whether it is initialized.
fn prune_nominations(
    ctx: &Context,
    objects: &LiveObjects,
) -> (
    BTreeMap<String, Nomination>,
    BTreeMap<String, (String, bool)>,
) {
    let pending = ctx.stores.provisionable_pods();
    let live: BTreeMap<String, (String, bool)> = objects
        .nodeclaims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| {
            let name = c.metadata.name.clone()?;
            let node = c
                .status
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| name.clone());
            Some((name, (node, c.is_true("Initialized"))))
        })
        .collect();
    let mut n = ctx
        .nominations
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    n.retain(|pod, nom| pending.contains(pod) && live.contains_key(&nom.claim));
    (n.clone(), live)
}

/// Nominates the pending pods a plan placed on existing capacity to that capacity's NodeClaim
/// (an in-flight claim's snapshot node is the claim; a registered node maps to its claim), as
/// Karpenter nominates the nodes its scheduling simulations place pods on: after a restart the
/// first pass re-creates the nominations of pods still on their way.
fn nominate_existing(ctx: &Context, plan: &ProvisionPlan) {
    if plan.pods_per_existing.is_empty() {
        return;
    }
    let claims = ctx.stores.nodeclaims.state();
    let claim_of = |node: &str| -> Option<String> {
        claims
            .iter()
            .find(|c| {
                c.metadata.name.as_deref() == Some(node)
                    || c.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
            })
            .and_then(|c| c.metadata.name.clone())
    };
    let now = Instant::now();
    let mut n = ctx
        .nominations
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (node, pods) in &plan.pods_per_existing {
        let Some(claim) = claim_of(node) else {
            continue;
        };
        for pod in pods {
            n.entry(pod.clone()).or_insert_with(|| Nomination {
                claim: claim.clone(),
                at: now,
            });
        }
    }
}

/// The nominations the provisioner counts, as pod → the snapshot node standing for its claim:
/// those whose claim is not initialized yet (once it is, the kube-scheduler has had its chance
/// and a pod still pending is planned afresh).
fn live_nominations(ctx: &Context, objects: &LiveObjects) -> BTreeMap<String, String> {
    let (noms, live) = prune_nominations(ctx, objects);
    noms.into_iter()
        .filter_map(|(pod, nom)| {
            let (node, initialized) = live.get(&nom.claim)?;
            (!initialized).then(|| (pod, node.clone()))
        })
        .collect()
}

/// Node names disruption must not take: nodes with pending pods nominated to them, while their
/// claim is not initialized or for [`NOMINATION_TTL`] after the nomination.
pub fn nominated_nodes(ctx: &Context, objects: &LiveObjects) -> BTreeSet<String> {
    let (noms, live) = prune_nominations(ctx, objects);
    noms.values()
        .filter_map(|nom| {
            let (node, initialized) = live.get(&nom.claim)?;
            (!initialized || nom.at.elapsed() < NOMINATION_TTL).then(|| node.clone())
        })
        .collect()
}

/// The batch's figures: `karp_provisioning_cost_per_hour{solver}` and
/// `karp_provisioning_lower_bound_per_hour{solver}` (gauges, the last batch that planned
/// claims), `karp_provisioning_batches_total{solver}`, and
/// `karp_provisioning_solver_fallbacks_total{reason}` when the MILP's plan was not kept
/// (`no-improvement`: FFD's was as cheap; `budget`: the budget ran out first; `model`: the
/// MILP could not model or replay the batch).
fn record_batch(ctx: &Context, plan: &ProvisionPlan, took: Duration) {
    let m = &ctx.metrics;
    let solver = plan.packer;
    m.set(
        "karp_provisioning_cost_per_hour",
        &[("solver", solver)],
        plan.cost_per_hour,
    );
    m.set(
        "karp_provisioning_lower_bound_per_hour",
        &[("solver", solver)],
        plan.lower_bound_per_hour,
    );
    m.inc("karp_provisioning_batches_total", &[("solver", solver)]);
    if ctx.settings.solver.solver == Solver::Milp {
        if let Some(why) = &plan.fallback {
            let reason = if why.contains("not cheaper") {
                "no-improvement"
            } else if took.as_secs_f64() >= ctx.settings.solver.budget_secs {
                "budget"
            } else {
                "model"
            };
            m.inc(
                "karp_provisioning_solver_fallbacks_total",
                &[("reason", reason)],
            );
        }
    }
}

/// The provisioning loop.
#[derive(Debug, Clone, Copy)]
pub struct BatchWindow {
    /// The window closes after this long without a new pending pod.
    pub idle: Duration,
    /// ... or this long after it opened.
    pub max: Duration,
    /// How often the pending set is checked.
    pub poll: Duration,
}

impl Default for BatchWindow {
    fn default() -> Self {
        BatchWindow {
            idle: Duration::from_secs(1),
            max: Duration::from_secs(10),
            poll: Duration::from_millis(100),
        }
    }
}

/// Runs provisioning until `ctx.shutdown` fires.
pub struct Provisioner;

impl Provisioner {
    /// Loop: wait for provisionable pods, batch, plan, create NodeClaims.
    pub async fn run(ctx: Arc<Context>, window: BatchWindow) {
        let mut handled: BTreeSet<String> = BTreeSet::new();
        let mut last_pass = Instant::now();
        loop {
            if ctx.is_shutdown() {
                return;
            }
            let pending = ctx.stores.provisionable_pods();
            // Pods that are no longer pending leave the handled set (so they are planned again if
            // they come back, e.g. after their node went away).
            handled.retain(|p| pending.contains(p));
            // Pods still pending after a pass are planned again now and then (a node class may have
            // become ready, a limit may have been raised, a launch may have failed).
            if !pending.is_empty() && last_pass.elapsed() >= ctx.settings.provision_retry {
                handled.clear();
            }
            let fresh: BTreeSet<String> = pending.difference(&handled).cloned().collect();
            if fresh.is_empty() {
                tokio::time::sleep(window.poll).await;
                continue;
            }
            // Batch window.
            let opened = Instant::now();
            let mut last_change = Instant::now();
            let mut seen = pending.clone();
            loop {
                tokio::time::sleep(window.poll).await;
                let now_pending = ctx.stores.provisionable_pods();
                if now_pending != seen {
                    seen = now_pending;
                    last_change = Instant::now();
                }
                if last_change.elapsed() >= window.idle || opened.elapsed() >= window.max {
                    break;
                }
            }
            let span = info_span!("provision", pending = seen.len());
            last_pass = Instant::now();
            match Self::provision_once(&ctx).instrument(span).await {
                Ok(()) => {
                    handled.extend(seen);
                }
                Err(e) => {
                    warn!(error = %e, "provisioning failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One provisioning pass over the current cluster state.
    ///
    /// # Errors
    /// [`OperatorError`] when the cluster state cannot be converted or the API fails.
    pub async fn provision_once(ctx: &Context) -> Result<(), OperatorError> {
        let objects = ctx.stores.objects();
        let types = instance_types(ctx, &objects).await;
        let started = Instant::now();
        let label = ctx.resolver.node_class_label().to_string();
        let solver = ctx.settings.solver.clone();
        let nominations = live_nominations(ctx, &objects);
        let (plan, objects) = tokio::task::spawn_blocking(move || {
            let p = plan(&objects, types, &label, &solver, &nominations);
            (p, objects)
        })
        .await
        .map_err(|e| OperatorError::Convert(format!("the planner stopped: {e}")))?;
        let plan = plan.map_err(|e| OperatorError::Convert(e.to_string()))?;
        let millis = started.elapsed().as_millis();
        if !plan.nodeclaims.is_empty() {
            info!(
                solver = plan.packer,
                fallback = plan.fallback.as_deref().unwrap_or(""),
                claims = plan.nodeclaims.len(),
                cost_per_hour = plan.cost_per_hour,
                lower_bound_per_hour = plan.lower_bound_per_hour,
                millis,
                "batch planned"
            );
            record_batch(ctx, &plan, started.elapsed());
        }
        for skipped in &plan.skipped {
            warn!(error = %skipped, "object left out of provisioning: it does not convert");
            if let Some(object) = skipped.object() {
                let api_version = match object.kind.as_str() {
                    "NodePool" | "NodeClaim" => "karpenter.sh/v1",
                    "DaemonSet" => "apps/v1",
                    _ => "v1",
                };
                let reference = k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some(api_version.to_string()),
                    kind: Some(object.kind.clone()),
                    namespace: object.namespace.clone(),
                    name: Some(object.name.clone()),
                    ..Default::default()
                };
                ctx.events
                    .publish(
                        &reference,
                        "Warning",
                        "FailedConversion",
                        &skipped.to_string(),
                    )
                    .await;
            }
        }
        ctx.metrics
            .observe_scheduling(started.elapsed().as_secs_f64());
        for (pod, reason) in &plan.unschedulable {
            debug!(%pod, %reason, "unschedulable");
        }
        nominate_existing(ctx, &plan);
        let api: Api<NodeClaim> = Api::all(ctx.client.clone());
        // The claims are created in parallel, as Karpenter does; their nominations are recorded
        // as each create returns, so a failed create does not lose the others'.
        type Created<'p> = Result<(NodeClaim, &'p Vec<String>), OperatorError>;
        let mut creates: Vec<futures::future::BoxFuture<'_, Created<'_>>> = Vec::new();
        for (claim, pods) in plan.nodeclaims.iter().zip(&plan.pods_per_claim) {
            let api = api.clone();
            creates.push(Box::pin(async move {
                let created = api
                    .create(&PostParams::default(), claim)
                    .await
                    .map_err(|e| OperatorError::Kube("create NodeClaim", e.to_string()))?;
                let name = created.meta().name.clone().unwrap_or_default();
                ctx.metrics.inc(
                    "karpenter_nodeclaims_created_total",
                    &[
                        ("nodepool", created.nodepool().unwrap_or_default()),
                        ("reason", "provisioning"),
                    ],
                );
                info!(nodeclaim = %name, pods = pods.len(), "created NodeClaim");
                let mut n = ctx
                    .nominations
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for pod in pods {
                    n.insert(
                        pod.clone(),
                        Nomination {
                            claim: name.clone(),
                            at: Instant::now(),
                        },
                    );
                }
                Ok((created, pods))
            }));
        }
        let results: Vec<Created<'_>> = futures::stream::iter(creates)
            .buffer_unordered(CONCURRENT_CREATES)
            .collect()
            .await;
        let mut created = Vec::new();
        let mut failed = None;
        for r in results {
            match r {
                Ok(c) => created.push(c),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        // Then the events, also in parallel: the claim's Nominated event, and each pod's
        // (Karpenter's Nominated event on the pod says where it is going).
        let pod_refs = objects.pod_refs(plan.pods_per_claim.iter().flatten());
        let mut events: Vec<futures::future::BoxFuture<'_, ()>> = Vec::new();
        for (claim, pods) in &created {
            let name = claim.meta().name.clone().unwrap_or_default();
            let note = format!("planned for {} pod(s): {}", pods.len(), pods.join(", "));
            events.push(Box::pin(async move {
                ctx.events
                    .publish_nodeclaim(claim, "Normal", "Nominated", &note)
                    .await;
            }));
            for pod in pods.iter() {
                let Some(reference) = pod_refs.get(pod) else {
                    continue;
                };
                let note = format!("Pod should schedule on: nodeclaim/{name}");
                events.push(Box::pin(async move {
                    ctx.events
                        .publish(reference, "Normal", "Nominated", &note)
                        .await;
                }));
            }
        }
        futures::stream::iter(events)
            .buffer_unordered(CONCURRENT_EVENTS)
            .collect::<Vec<()>>()
            .await;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karp_core::cluster::{ClusterSnapshot, Node};
    use karp_core::pod::Pod;
    use karp_core::resources::Resources;

    fn pending(name: &str) -> Pod {
        Pod {
            namespace: "default".into(),
            name: name.into(),
            ..Pod::default()
        }
    }

    #[test]
    fn nominated_pods_count_on_their_in_flight_claim_only() {
        let mut flight = Node::new("claim-a", BTreeMap::new(), Resources::default());
        flight.initialized = false;
        let mut ready = Node::new("node-b", BTreeMap::new(), Resources::default());
        ready.initialized = true;
        let mut snapshot = ClusterSnapshot {
            nodes: vec![flight, ready],
            pods: vec![pending("a"), pending("b"), pending("c"), pending("d")],
            ..ClusterSnapshot::default()
        };
        let nominations = BTreeMap::from([
            ("default/a".to_string(), "claim-a".to_string()),
            // An initialized node or a claim that is gone holds nothing.
            ("default/b".to_string(), "node-b".to_string()),
            ("default/c".to_string(), "claim-gone".to_string()),
        ]);
        nominate(&mut snapshot, &nominations);
        let bound: Vec<Option<&str>> = snapshot
            .pods
            .iter()
            .map(|p| p.node_name.as_deref())
            .collect();
        assert_eq!(bound, [Some("claim-a"), None, None, None]);
    }
}
