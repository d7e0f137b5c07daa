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
use karp_core::cloud::{CloudError, Instance, LaunchRequest};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::Resource;
use serde_json::json;
use tracing::{info, info_span, warn, Instrument};

use super::objects::{
    rfc3339, set_condition, NodeClaim, INITIALIZED_LABEL, REGISTERED_LABEL, TERMINATION_FINALIZER,
    UNREGISTERED_TAINT,
};
use super::provisioner::{
    claim_labels, claim_requirements, claim_startup_taints, claim_taints, parse_quantities,
    quantities,
};
use super::{Context, OperatorError};

fn kube_err(op: &'static str, e: kube::Error) -> OperatorError {
    OperatorError::Kube(op, e.to_string())
}

/// Merge-patch a NodeClaim's status subresource.
async fn patch_claim_status<S: serde::Serialize>(
    api: &Api<NodeClaim>,
    name: &str,
    status: &S,
) -> Result<(), OperatorError> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map(|_| ())
    .map_err(|e| kube_err("NodeClaim status", e))
}

/// Whether an API error is a 404.
fn is_404(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Adds `finalizer` to an object's list with a merge patch (no-op when present).
pub async fn add_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), OperatorError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut list = obj.meta().finalizers.clone().unwrap_or_default();
    if list.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    list.push(finalizer.to_string());
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": list, "resourceVersion": obj.meta().resource_version}})),
    )
    .await
    .map(|_| ())
    .map_err(|e| kube_err("add finalizer", e))
}

/// Removes `finalizer` from an object's list (no-op when absent or the object is gone).
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
) -> Result<(), OperatorError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = obj.meta().finalizers.clone().unwrap_or_default();
    if !list.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let kept: Vec<String> = list.into_iter().filter(|f| f != finalizer).collect();
    let name = obj.meta().name.clone().unwrap_or_default();
    match api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": kept, "resourceVersion": obj.meta().resource_version}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_404(&e) => Ok(()),
        Err(e) => Err(kube_err("remove finalizer", e)),
    }
}

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
        .list()
        .await
        .map_err(|e| OperatorError::Cloud(e.to_string()))?
        .into_iter()
        .find(|i| i.nodeclaim.as_deref() == Some(name.as_str()));
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
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_404(&e) => {}
                    Err(e) => return Err(kube_err("delete NodeClaim", e)),
                }
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
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(e) if is_404(&e) => {}
                        Err(e) => return Err(kube_err("delete NodeClaim", e)),
                    }
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
    if let Some(it) = it {
        for r in it.requirements.iter() {
            if let Some(v) = r.single_value() {
                labels
                    .entry(r.key().to_string())
                    .or_insert_with(|| v.to_string());
            }
        }
    }
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": labels}})),
    )
    .await
    .map_err(|e| kube_err("label NodeClaim", e))?;
    let now = rfc3339(SystemTime::now());
    let mut status = claim.status.clone().unwrap_or_default();
    status.provider_id = Some(instance.provider_id.clone());
    if let Some(it) = it {
        status.capacity = quantities(&it.capacity);
        status.allocatable = quantities(it.allocatable());
    }
    set_condition(
        &mut status.conditions,
        "Launched",
        true,
        "Launched",
        "",
        &now,
    );
    set_condition(
        &mut status.conditions,
        "Registered",
        false,
        "NotRegistered",
        "Node not registered with cluster",
        &now,
    );
    set_condition(
        &mut status.conditions,
        "Initialized",
        false,
        "NotInitialized",
        "Node not initialized",
        &now,
    );
    set_condition(
        &mut status.conditions,
        "Ready",
        false,
        "NotReady",
        "Node not ready",
        &now,
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

async fn finalize(ctx: &Context, claim: &NodeClaim) -> Result<Action, OperatorError> {
    let claims: Api<NodeClaim> = Api::all(ctx.client.clone());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = claim.metadata.name.clone().unwrap_or_default();
    if !claim
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TERMINATION_FINALIZER)
    {
        return Ok(Action::await_change());
    }
    // 1. The node drains and goes first (its finalizer is the termination controller's).
    let node = claim
        .provider_id()
        .and_then(|p| ctx.stores.node_by_provider_id(p));
    if let Some(node) = node {
        if node.metadata.deletion_timestamp.is_none() {
            let n = node.metadata.name.clone().unwrap_or_default();
            match nodes.delete(&n, &DeleteParams::default()).await {
                Ok(_) => info!(nodeclaim = %name, node = %n, "deleting node"),
                Err(e) if is_404(&e) => {}
                Err(e) => return Err(kube_err("delete Node", e)),
            }
        }
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    // 2. The instance, until the cloud says NotFound.
    let provider_id = match claim.provider_id() {
        Some(p) => Some(p.to_string()),
        None => ctx
            .cloud
            .list()
            .await
            .map_err(|e| OperatorError::Cloud(e.to_string()))?
            .into_iter()
            .find(|i| i.nodeclaim.as_deref() == Some(name.as_str()))
            .map(|i| i.provider_id),
    };
    if let Some(p) = provider_id {
        match ctx.cloud.delete(&p).await {
            Ok(()) => return Ok(Action::requeue(Duration::from_millis(500))),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(OperatorError::Cloud(e.to_string())),
        }
    }
    remove_finalizer(&claims, claim, TERMINATION_FINALIZER).await?;
    ctx.metrics.inc(
        "karpenter_nodeclaims_terminated_total",
        &[("nodepool", claim.nodepool().unwrap_or_default())],
    );
    info!(nodeclaim = %name, "terminated");
    Ok(Action::await_change())
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
        let Some(provider_id) = claim.provider_id() else {
            return launch(&ctx, &claim).await;
        };
        let node = ctx.stores.node_by_provider_id(provider_id);
        if !claim.is_true("Registered") {
            return match node {
                Some(node) => register(&ctx, &claim, &node).await,
                None => {
                    let launched = age(claim.metadata.creation_timestamp.as_ref());
                    if launched > ctx.settings.registration_ttl {
                        warn!(nodeclaim = %name, "not registered in time; deleting");
                        ctx.events
                            .publish_nodeclaim(
                                &claim,
                                "Warning",
                                "RegistrationTimeout",
                                "the node did not register in time",
                            )
                            .await;
                        match api.delete(&name, &DeleteParams::default()).await {
                            Ok(_) => {}
                            Err(e) if is_404(&e) => {}
                            Err(e) => return Err(kube_err("delete NodeClaim", e)),
                        }
                        return Ok(Action::await_change());
                    }
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            };
        }
        match node {
            Some(node) if !claim.is_true("Initialized") => initialize(&ctx, &claim, &node).await,
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
