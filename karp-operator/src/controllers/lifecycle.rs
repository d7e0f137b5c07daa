//! The NodeClaim lifecycle (a kube-runtime `Controller` on NodeClaims, also woken by Nodes):
//! finalizer → launch → registration → initialization, liveness, and deletion.
//!
//! Each step is idempotent: a launch first looks for an instance already tagged with the claim
//! (a crash between CreateFleet and the status write must not launch twice); registration and
//! initialization are patches that converge.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use karp_core::cloud::{CloudError, Instance, InstanceType, LaunchRequest};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use tracing::{info, info_span, warn, Instrument};

use super::writes::{
    add_finalizer, delete_ignoring_404, kube_err, patch_claim_status, remove_finalizer,
};
use super::{Context, OperatorError};
use crate::api::nodeclaim::{
    set_condition, NodeClaim, NodeClaimStatus, INITIALIZED_LABEL, REGISTERED_LABEL,
    TERMINATION_FINALIZER, UNREGISTERED_TAINT,
};
use crate::api::rfc3339;
use crate::convert::nodeclaim::{
    claim_labels, claim_requirements, claim_startup_taints, claim_taints, parse_quantities,
    quantities,
};

/// The launch request of a claim.
#[must_use]
pub fn launch_request(claim: &NodeClaim) -> LaunchRequest {
    LaunchRequest {
        nodeclaim: claim.metadata.name.clone().unwrap_or_default(),
        nodepool: claim.nodepool().unwrap_or_default().to_string(),
        node_class: claim.spec.node_class_ref.as_ref().map(|r| r.name.clone()),
        requirements: claim_requirements(claim),
        requests: parse_quantities(&claim.spec.resources.clone().unwrap_or_default().requests),
        labels: claim.metadata.labels.clone().unwrap_or_default(),
        taints: claim_taints(claim),
        startup_taints: claim_startup_taints(claim),
    }
}

/// The labels a launched claim gets: the instance's, its type, zone and capacity type, and every
/// single-valued requirement of its instance type.
#[must_use]
pub fn launched_labels(instance: &Instance, it: Option<&InstanceType>) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = instance.labels.clone();
    labels.insert(
        karp_core::labels::INSTANCE_TYPE.into(),
        instance.instance_type.clone(),
    );
    labels.insert(karp_core::labels::ZONE.into(), instance.zone.clone());
    labels.insert(
        karp_core::labels::CAPACITY_TYPE.into(),
        instance.capacity_type.clone(),
    );
    for r in it.iter().flat_map(|it| it.requirements.iter()) {
        if let Some(v) = r.single_value() {
            labels
                .entry(r.key().to_string())
                .or_insert_with(|| v.to_string());
        }
    }
    labels
}

/// The status a launched claim gets: its provider ID, capacity and allocatable from its instance
/// type, `Launched` true and the later conditions false, at `now`.
#[must_use]
pub fn launched_status(
    claim: &NodeClaim,
    instance: &Instance,
    it: Option<&InstanceType>,
    now: &str,
) -> NodeClaimStatus {
    let mut status = claim.status.clone().unwrap_or_default();
    status.provider_id = Some(instance.provider_id.clone());
    if let Some(it) = it {
        status.capacity = quantities(&it.capacity);
        status.allocatable = quantities(it.allocatable());
    }
    let c = &mut status.conditions;
    set_condition(c, "Launched", true, "Launched", "", now);
    let pending = [
        (
            "Registered",
            "NotRegistered",
            "Node not registered with cluster",
        ),
        ("Initialized", "NotInitialized", "Node not initialized"),
        ("Ready", "NotReady", "Node not ready"),
    ];
    for (type_, reason, message) in pending {
        set_condition(c, type_, false, reason, message, now);
    }
    status
}

/// What a live (not deleted) claim needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStep {
    /// No instance recorded: launch (or adopt one tagged with the claim).
    Launch,
    /// The node with its provider ID appeared: register it.
    Register,
    /// Launched, no node yet, still within the registration TTL.
    AwaitRegistration,
    /// No node within the registration TTL: delete the claim (its pods are planned again).
    RegistrationTimeout,
    /// Registered, not yet initialized: check the node.
    Initialize,
    /// Nothing to do until something changes.
    Idle,
}

/// The next step of a live claim from the claim, whether its node exists, and how long ago it
/// was created (pure).
#[must_use]
pub fn claim_step(
    claim: &NodeClaim,
    has_node: bool,
    age: Duration,
    registration_ttl: Duration,
) -> ClaimStep {
    if claim.provider_id().is_none() {
        return ClaimStep::Launch;
    }
    match (claim.is_true("Registered"), has_node) {
        (false, true) => ClaimStep::Register,
        (false, false) if age > registration_ttl => ClaimStep::RegistrationTimeout,
        (false, false) => ClaimStep::AwaitRegistration,
        (true, true) if !claim.is_true("Initialized") => ClaimStep::Initialize,
        (true, _) => ClaimStep::Idle,
    }
}

fn age(ts: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Duration {
    ts.and_then(|t| {
        let d = Timestamp::now().duration_since(t.0);
        Duration::try_from(d).ok()
    })
    .unwrap_or_default()
}

async fn launch(ctx: &Context, claim: &NodeClaim) -> Result<Action, OperatorError> {
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let name = claim.metadata.name.clone().unwrap_or_default();
    // Adopt an instance launched for this claim before a restart.
    let existing = ctx
        .cloud
        .find_by_nodeclaim(&name)
        .await
        .map_err(|e| OperatorError::Cloud(e.to_string()))?;
    let instance: Instance = match existing {
        Some(i) => {
            info!(nodeclaim = %name, provider_id = %i.provider_id, "adopting instance launched before a restart");
            i
        }
        None => match ctx.cloud.create(&launch_request(claim)).await {
            Ok(i) => i,
            Err(
                e
                @ (CloudError::InsufficientCapacity { .. } | CloudError::NodeClassNotReady { .. }),
            ) => {
                let reason = if e.is_insufficient_capacity() {
                    "InsufficientCapacityError"
                } else {
                    "NodeClassNotReady"
                };
                warn!(nodeclaim = %name, error = %e, "launch failed; deleting the NodeClaim so its pods are planned again");
                ctx.metrics.inc(
                    "karpenter_cloudprovider_errors_total",
                    &[("error", reason), ("method", "Create")],
                );
                ctx.events
                    .publish_nodeclaim(claim, "Warning", reason, &e.to_string())
                    .await;
                delete_ignoring_404(&api, &name, "delete NodeClaim").await?;
                return Ok(Action::await_change());
            }
            Err(e) => {
                ctx.metrics.inc(
                    "karpenter_cloudprovider_errors_total",
                    &[("error", "Api"), ("method", "Create")],
                );
                // Liveness: a claim that could not launch for too long is deleted; its pods are
                // planned again.
                if age(claim.metadata.creation_timestamp.as_ref()) > ctx.settings.launch_ttl {
                    warn!(nodeclaim = %name, error = %e, "not launched in time; deleting");
                    ctx.events
                        .publish_nodeclaim(claim, "Warning", "LaunchTimeout", &e.to_string())
                        .await;
                    delete_ignoring_404(&api, &name, "delete NodeClaim").await?;
                    return Ok(Action::await_change());
                }
                let now = rfc3339(SystemTime::now());
                let mut conditions = claim.status.clone().unwrap_or_default().conditions;
                set_condition(
                    &mut conditions,
                    "Launched",
                    false,
                    "LaunchFailed",
                    &e.to_string(),
                    &now,
                );
                let _ = api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"conditions": conditions}})),
                    )
                    .await;
                return Err(OperatorError::Cloud(e.to_string()));
            }
        },
    };
    // Capacity and allocatable from the instance type.
    let types = ctx
        .cloud
        .instance_types(
            claim.nodepool().unwrap_or_default(),
            claim.spec.node_class_ref.as_ref().map(|r| r.name.as_str()),
        )
        .await
        .unwrap_or_default();
    let it = types.iter().find(|t| t.name == instance.instance_type);
    let labels = launched_labels(&instance, it.map(AsRef::as_ref));
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": labels}})),
    )
    .await
    .map_err(|e| kube_err("label NodeClaim", e))?;
    let status = launched_status(
        claim,
        &instance,
        it.map(AsRef::as_ref),
        &rfc3339(SystemTime::now()),
    );
    patch_claim_status(&api, &name, &status).await?;
    ctx.metrics.inc(
        "karpenter_nodeclaims_launched_total",
        &[("nodepool", claim.nodepool().unwrap_or_default())],
    );
    ctx.events
        .publish_nodeclaim(
            claim,
            "Normal",
            "Launched",
            &format!(
                "launched {} {} in {} ({})",
                instance.capacity_type, instance.instance_type, instance.zone, instance.provider_id
            ),
        )
        .await;
    Ok(Action::requeue(Duration::from_millis(500)))
}

async fn register(ctx: &Context, claim: &NodeClaim, node: &Node) -> Result<Action, OperatorError> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let claims: Api<NodeClaim> = Api::all(ctx.client.clone());
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let mut labels = claim_labels(claim);
    labels.insert(REGISTERED_LABEL.into(), "true".into());
    // Taints: drop the unregistered taint, make sure the claim's taints are there.
    let mut taints: Vec<k8s_openapi::api::core::v1::Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != UNREGISTERED_TAINT)
        .collect();
    for t in claim_taints(claim) {
        if !taints
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect.as_str())
        {
            taints.push(k8s_openapi::api::core::v1::Taint {
                key: t.key.clone(),
                value: (!t.value.is_empty()).then(|| t.value.clone()),
                effect: t.effect.as_str().to_string(),
                time_added: None,
            });
        }
    }
    let mut finalizers = node.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == TERMINATION_FINALIZER) {
        finalizers.push(TERMINATION_FINALIZER.into());
    }
    let owner = json!([{
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "name": claim_name,
        "uid": claim.metadata.uid.clone().unwrap_or_default(),
        "blockOwnerDeletion": true
    }]);
    nodes
        .patch(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": labels, "finalizers": finalizers, "ownerReferences": owner},
                "spec": {"taints": taints}
            })),
        )
        .await
        .map_err(|e| kube_err("register Node", e))?;
    let now = rfc3339(SystemTime::now());
    let mut status = claim.status.clone().unwrap_or_default();
    status.node_name = Some(node_name.clone());
    set_condition(
        &mut status.conditions,
        "Registered",
        true,
        "Registered",
        "",
        &now,
    );
    patch_claim_status(&claims, &claim_name, &status).await?;
    ctx.metrics.inc(
        "karpenter_nodes_created_total",
        &[("nodepool", claim.nodepool().unwrap_or_default())],
    );
    info!(nodeclaim = %claim_name, node = %node_name, "registered");
    Ok(Action::requeue(Duration::from_millis(500)))
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn initialize(
    ctx: &Context,
    claim: &NodeClaim,
    node: &Node,
) -> Result<Action, OperatorError> {
    if !node_ready(node) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let startup = claim_startup_taints(claim);
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if taints.iter().any(|t| {
        t.key == UNREGISTERED_TAINT
            || startup
                .iter()
                .any(|s| s.key == t.key && s.effect.as_str() == t.effect)
    }) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Extended resources the claim asked for must be registered by their device plugins.
    let requested = parse_quantities(&claim.spec.resources.clone().unwrap_or_default().requests);
    let alloc: BTreeMap<String, String> = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let allocatable = parse_quantities(&alloc);
    if requested
        .extended
        .keys()
        .any(|k| allocatable.extended.get(k).copied().unwrap_or(0) <= 0)
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let claims: Api<NodeClaim> = Api::all(ctx.client.clone());
    let node_name = node.metadata.name.clone().unwrap_or_default();
    nodes
        .patch(
            &node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {INITIALIZED_LABEL: "true"}}})),
        )
        .await
        .map_err(|e| kube_err("label Node", e))?;
    let now = rfc3339(SystemTime::now());
    let mut status = claim.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        "Initialized",
        true,
        "Initialized",
        "",
        &now,
    );
    set_condition(&mut status.conditions, "Ready", true, "Ready", "", &now);
    let name = claim.metadata.name.clone().unwrap_or_default();
    patch_claim_status(&claims, &name, &status).await?;
    info!(nodeclaim = %name, node = %node_name, "initialized");
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// What a deleted NodeClaim's finalizer does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalizeStep {
    /// Not karp's finalizer (or already removed).
    Ignore,
    /// Its node is still there and not deleting: delete it (the node drains first).
    DeleteNode(String),
    /// Its node is draining (termination marks the claim `Drained` when done).
    AwaitDrain,
    /// Terminate the instance (by provider ID; `None`: look it up by the claim's tag, for a
    /// launch whose status write was lost) until the cloud says it is gone.
    TerminateInstance(Option<String>),
    /// The instance is gone and the node still there: record it (condition
    /// `InstanceTerminated`), so node termination removes the node's finalizer.
    MarkInstanceTerminated,
    /// Wait for the node to go.
    AwaitNodeGone,
    /// The instance and the node are gone: remove the finalizer.
    RemoveFinalizer,
}

/// The next finalization step of a deleted claim from the claim, its node and whether the cloud
/// has said the instance is gone (pure).
///
/// The claim's finalizer is the one owner of instance deletion, in Karpenter's order: node
/// termination drains the node and marks the claim `Drained`; this terminates the instance and
/// marks the claim `InstanceTerminated`; node termination then removes the node's finalizer;
/// the claim goes last.
#[must_use]
pub fn finalize_step(claim: &NodeClaim, node: Option<&Node>, instance_gone: bool) -> FinalizeStep {
    let ours = claim
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TERMINATION_FINALIZER);
    if claim.metadata.deletion_timestamp.is_none() || !ours {
        return FinalizeStep::Ignore;
    }
    if let Some(node) = node {
        if node.metadata.deletion_timestamp.is_none() {
            return FinalizeStep::DeleteNode(node.metadata.name.clone().unwrap_or_default());
        }
        if !claim.is_true("Drained") {
            return FinalizeStep::AwaitDrain;
        }
    }
    if !instance_gone && !claim.is_true("InstanceTerminated") {
        return FinalizeStep::TerminateInstance(claim.provider_id().map(str::to_string));
    }
    match node {
        Some(_) if !claim.is_true("InstanceTerminated") => FinalizeStep::MarkInstanceTerminated,
        Some(_) => FinalizeStep::AwaitNodeGone,
        None => FinalizeStep::RemoveFinalizer,
    }
}

async fn finalize(ctx: &Context, claim: &NodeClaim) -> Result<Action, OperatorError> {
    let claims: Api<NodeClaim> = Api::all(ctx.client.clone());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = claim.metadata.name.clone().unwrap_or_default();
    let node = claim
        .provider_id()
        .and_then(|p| ctx.stores.node_by_provider_id(p));
    let mut step = finalize_step(claim, node.as_deref(), false);
    // Only the cloud can say the instance is gone: ask it, then decide again.
    if let FinalizeStep::TerminateInstance(provider_id) = &step {
        let provider_id = match provider_id {
            Some(p) => Some(p.clone()),
            None => ctx
                .cloud
                .find_by_nodeclaim(&name)
                .await
                .map_err(|e| OperatorError::Cloud(e.to_string()))?
                .map(|i| i.provider_id),
        };
        let gone = match provider_id {
            None => true,
            Some(p) => match ctx.cloud.delete(&p).await {
                Ok(()) => false,
                Err(e) if e.is_not_found() => true,
                Err(e) => return Err(OperatorError::Cloud(e.to_string())),
            },
        };
        if !gone {
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        step = finalize_step(claim, node.as_deref(), true);
    }
    match step {
        FinalizeStep::Ignore => Ok(Action::await_change()),
        FinalizeStep::DeleteNode(n) => {
            delete_ignoring_404(&nodes, &n, "delete Node").await?;
            info!(nodeclaim = %name, node = %n, "deleting node");
            Ok(Action::requeue(Duration::from_millis(500)))
        }
        FinalizeStep::AwaitDrain
        | FinalizeStep::TerminateInstance(_)
        | FinalizeStep::AwaitNodeGone => Ok(Action::requeue(Duration::from_millis(500))),
        FinalizeStep::MarkInstanceTerminated => {
            let mut status = claim.status.clone().unwrap_or_default();
            set_condition(
                &mut status.conditions,
                "InstanceTerminated",
                true,
                "InstanceTerminated",
                "",
                &rfc3339(SystemTime::now()),
            );
            patch_claim_status(&claims, &name, &status).await?;
            info!(nodeclaim = %name, "instance terminated");
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        FinalizeStep::RemoveFinalizer => {
            remove_finalizer(&claims, claim, TERMINATION_FINALIZER).await?;
            ctx.metrics.inc(
                "karpenter_nodeclaims_terminated_total",
                &[("nodepool", claim.nodepool().unwrap_or_default())],
            );
            info!(nodeclaim = %name, "terminated");
            Ok(Action::await_change())
        }
    }
}

/// Reconciles one NodeClaim.
///
/// # Errors
/// [`OperatorError`] for failed API or cloud calls (retried with back-off).
pub async fn reconcile(claim: Arc<NodeClaim>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    let name = claim.metadata.name.clone().unwrap_or_default();
    let span = info_span!("reconcile_nodeclaim", nodeclaim = %name);
    async move {
        if claim.metadata.deletion_timestamp.is_some() {
            return finalize(&ctx, &claim).await;
        }
        let api: Api<NodeClaim> = Api::all(ctx.client.clone());
        add_finalizer(&api, &claim, TERMINATION_FINALIZER).await?;
        let node = claim
            .provider_id()
            .and_then(|p| ctx.stores.node_by_provider_id(p));
        let age = age(claim.metadata.creation_timestamp.as_ref());
        let step = claim_step(&claim, node.is_some(), age, ctx.settings.registration_ttl);
        match (step, node) {
            (ClaimStep::Launch, _) => launch(&ctx, &claim).await,
            (ClaimStep::Register, Some(node)) => register(&ctx, &claim, &node).await,
            (ClaimStep::Initialize, Some(node)) => initialize(&ctx, &claim, &node).await,
            (ClaimStep::RegistrationTimeout, _) => {
                warn!(nodeclaim = %name, "not registered in time; deleting");
                ctx.events
                    .publish_nodeclaim(
                        &claim,
                        "Warning",
                        "RegistrationTimeout",
                        "the node did not register in time",
                    )
                    .await;
                delete_ignoring_404(&api, &name, "delete NodeClaim").await?;
                Ok(Action::await_change())
            }
            (ClaimStep::AwaitRegistration, _) => Ok(Action::requeue(Duration::from_secs(1))),
            _ => Ok(Action::requeue(Duration::from_secs(60))),
        }
    }
    .instrument(span)
    .await
}

fn error_policy(_claim: Arc<NodeClaim>, err: &OperatorError, _ctx: Arc<Context>) -> Action {
    warn!(error = %err, "NodeClaim reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the NodeClaim controller until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let claims: Api<NodeClaim> = Api::all(ctx.client.clone());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let stores = ctx.stores.clone();
    let shutdown_ctx = Arc::clone(&ctx);
    Controller::new(claims, watcher::Config::default())
        .watches(nodes, watcher::Config::default(), move |node: Node| {
            node.spec
                .as_ref()
                .and_then(|s| s.provider_id.clone())
                .and_then(|p| stores.nodeclaim_by_provider_id(&p))
                .and_then(|c| c.metadata.name.clone())
                .map(|n| ObjectRef::<NodeClaim>::new(&n))
        })
        .graceful_shutdown_on(async move { shutdown_ctx.shutdown_requested().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn deleted_claim(provider_id: Option<&str>, drained: bool) -> NodeClaim {
        let mut c = NodeClaim::default();
        c.metadata.name = Some("c1".into());
        c.metadata.finalizers = Some(vec![TERMINATION_FINALIZER.into()]);
        c.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let mut status = crate::api::nodeclaim::NodeClaimStatus {
            provider_id: provider_id.map(str::to_string),
            ..Default::default()
        };
        if drained {
            set_condition(&mut status.conditions, "Drained", true, "Drained", "", "t");
        }
        c.status = Some(status);
        c
    }

    fn node(deleting: bool) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        if deleting {
            n.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }
        n
    }

    #[test]
    fn the_claims_finalizer_deletes_the_node_waits_for_its_drain_then_owns_the_instance() {
        let c = deleted_claim(Some("aws:///z/i-1"), false);
        assert_eq!(
            finalize_step(&c, Some(&node(false)), false),
            FinalizeStep::DeleteNode("n1".into())
        );
        assert_eq!(
            finalize_step(&c, Some(&node(true)), false),
            FinalizeStep::AwaitDrain
        );
        let drained = deleted_claim(Some("aws:///z/i-1"), true);
        assert_eq!(
            finalize_step(&drained, Some(&node(true)), false),
            FinalizeStep::TerminateInstance(Some("aws:///z/i-1".into()))
        );
        assert_eq!(
            finalize_step(&drained, Some(&node(true)), true),
            FinalizeStep::MarkInstanceTerminated
        );
        let mut terminated = drained.clone();
        let status = terminated.status.as_mut().unwrap();
        set_condition(
            &mut status.conditions,
            "InstanceTerminated",
            true,
            "InstanceTerminated",
            "",
            "t",
        );
        assert_eq!(
            finalize_step(&terminated, Some(&node(true)), false),
            FinalizeStep::AwaitNodeGone
        );
        assert_eq!(
            finalize_step(&terminated, None, false),
            FinalizeStep::RemoveFinalizer
        );
    }

    #[test]
    fn a_claim_without_a_node_terminates_its_instance_found_by_tag_when_unrecorded() {
        let c = deleted_claim(None, false);
        assert_eq!(
            finalize_step(&c, None, false),
            FinalizeStep::TerminateInstance(None)
        );
        assert_eq!(finalize_step(&c, None, true), FinalizeStep::RemoveFinalizer);
    }

    #[test]
    fn a_live_claim_launches_registers_times_out_and_initializes_in_order() {
        let ttl = Duration::from_secs(900);
        let mut c = NodeClaim::default();
        assert_eq!(
            claim_step(&c, false, Duration::ZERO, ttl),
            ClaimStep::Launch
        );
        let instance = Instance {
            provider_id: "aws:///z/i-1".into(),
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: "spot".into(),
            nodeclaim: None,
            labels: BTreeMap::new(),
        };
        c.status = Some(launched_status(&c, &instance, None, "t"));
        assert!(c.is_true("Launched") && !c.is_true("Registered"));
        assert_eq!(
            claim_step(&c, false, Duration::from_secs(5), ttl),
            ClaimStep::AwaitRegistration
        );
        assert_eq!(
            claim_step(&c, false, Duration::from_secs(901), ttl),
            ClaimStep::RegistrationTimeout
        );
        assert_eq!(
            claim_step(&c, true, Duration::from_secs(901), ttl),
            ClaimStep::Register
        );
        let status = c.status.as_mut().unwrap();
        set_condition(
            &mut status.conditions,
            "Registered",
            true,
            "Registered",
            "",
            "t",
        );
        assert_eq!(
            claim_step(&c, true, Duration::ZERO, ttl),
            ClaimStep::Initialize
        );
        assert_eq!(claim_step(&c, false, Duration::ZERO, ttl), ClaimStep::Idle);
        let status = c.status.as_mut().unwrap();
        set_condition(
            &mut status.conditions,
            "Initialized",
            true,
            "Initialized",
            "",
            "t",
        );
        assert_eq!(claim_step(&c, true, Duration::ZERO, ttl), ClaimStep::Idle);
        let labels = launched_labels(&instance, None);
        assert_eq!(labels[karp_core::labels::CAPACITY_TYPE], "spot");
        assert_eq!(labels[karp_core::labels::INSTANCE_TYPE], "m5.large");
    }

    #[test]
    fn live_claims_and_foreign_finalizers_are_ignored() {
        let mut live = deleted_claim(None, false);
        live.metadata.deletion_timestamp = None;
        assert_eq!(finalize_step(&live, None, false), FinalizeStep::Ignore);
        let mut foreign = deleted_claim(None, false);
        foreign.metadata.finalizers = Some(vec!["other".into()]);
        assert_eq!(finalize_step(&foreign, None, false), FinalizeStep::Ignore);
    }
}
