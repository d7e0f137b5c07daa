//! Kubernetes writes every controller uses: finalizers, NodeClaim status patches, deletes that
//! treat "already gone" as done, and the error for a failed call.

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Resource;
use serde_json::json;

use super::OperatorError;
use crate::api::nodeclaim::NodeClaim;

/// An [`OperatorError`] for a failed API call `op`.
pub fn kube_err(op: &'static str, e: kube::Error) -> OperatorError {
    OperatorError::Kube(op, e.to_string())
}

/// Merge-patch a NodeClaim's status subresource.
pub async fn patch_claim_status<S: serde::Serialize>(
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

/// Replace a NodeClaim's condition list with a status merge patch that carries the
/// `resourceVersion` the list was computed from, so a concurrent write of another condition is
/// never lost (the API server answers 409 and the caller computes again).
pub async fn patch_claim_conditions(
    api: &Api<NodeClaim>,
    name: &str,
    resource_version: Option<&str>,
    conditions: &[crate::api::nodeclaim::Condition],
) -> Result<(), OperatorError> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"resourceVersion": resource_version},
            "status": {"conditions": conditions},
        })),
    )
    .await
    .map(|_| ())
    .map_err(|e| kube_err("NodeClaim conditions", e))
}

/// Whether an API error is a 404.
pub fn is_404(e: &kube::Error) -> bool {
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

/// Deletes `name`; an object that is already gone counts as deleted.
///
/// # Errors
/// [`OperatorError::Kube`] naming `op` when the API refuses for another reason.
pub async fn delete_ignoring_404<K>(
    api: &Api<K>,
    name: &str,
    op: &'static str,
) -> Result<(), OperatorError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_404(&e) => Ok(()),
        Err(e) => Err(kube_err(op, e)),
    }
}
