//! `karpenter.sh/v1` NodeClaim: its serde types (status and conditions included), Karpenter's
//! well-known finalizer, taint, label and annotation names.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::cluster_resource;
use super::nodepool::{NodeClassReference, NodeSelectorRequirementWithMinValues, TaintSpec};

/// Karpenter's finalizer on NodeClaims and Nodes.
pub const TERMINATION_FINALIZER: &str = "karpenter.sh/termination";
/// The taint nodes register with until karp has synced them.
pub const UNREGISTERED_TAINT: &str = "karpenter.sh/unregistered";
/// The taint karp puts on nodes it is draining.
pub const DISRUPTED_TAINT: &str = "karpenter.sh/disrupted";
/// Label: the node was registered by karp.
pub const REGISTERED_LABEL: &str = "karpenter.sh/registered";
/// Label: the node is initialized.
pub const INITIALIZED_LABEL: &str = "karpenter.sh/initialized";
/// Annotation that blocks voluntary disruption of a pod or node.
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";

cluster_resource!(NodeClaim, "karpenter.sh", "NodeClaim", "nodeclaims");

/// `karpenter.sh/v1` NodeClaim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaim {
    /// `karpenter.sh/v1`.
    #[serde(default = "nodeclaim_api_version")]
    pub api_version: String,
    /// `NodeClaim`.
    #[serde(default = "nodeclaim_kind")]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: NodeClaimSpec,
    /// Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeClaimStatus>,
}

impl Default for NodeClaim {
    fn default() -> Self {
        NodeClaim {
            api_version: nodeclaim_api_version(),
            kind: nodeclaim_kind(),
            metadata: ObjectMeta::default(),
            spec: NodeClaimSpec::default(),
            status: None,
        }
    }
}

fn nodeclaim_api_version() -> String {
    "karpenter.sh/v1".into()
}

fn nodeclaim_kind() -> String {
    "NodeClaim".into()
}

/// NodeClaim spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimSpec {
    /// Requirements the instance satisfies.
    #[serde(default)]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// Resource requests of the pods planned onto it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<TaintSpec>,
    /// Startup taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_taints: Vec<TaintSpec>,
    /// Node class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_class_ref: Option<NodeClassReference>,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<String>,
    /// Termination grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period: Option<String>,
}

/// `spec.resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// Requests.
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
}

/// NodeClaim status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimStatus {
    /// The cloud's id of the instance.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// The node's name once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Image id.
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Capacity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, String>,
    /// Allocatable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When a pod last bound to, or went terminal or started terminating on, the node
    /// (RFC 3339); `consolidateAfter` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pod_event_time: Option<String>,
}

/// A status condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True / False / Unknown.
    pub status: String,
    /// Reason (CamelCase).
    #[serde(default)]
    pub reason: String,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// Last transition.
    #[serde(default)]
    pub last_transition_time: String,
    /// Generation observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl NodeClaim {
    /// The condition of `type_`, if set.
    #[must_use]
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
    }

    /// Whether condition `type_` is True.
    #[must_use]
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// The provider ID, once launched.
    #[must_use]
    pub fn provider_id(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .filter(|p| !p.is_empty())
    }

    /// The node pool it belongs to.
    #[must_use]
    pub fn nodepool(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(karp_core::labels::NODEPOOL))
            .map(String::as_str)
    }
}

/// Sets a condition in a list (keeping `lastTransitionTime` when the status does not change).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let status = if status { "True" } else { "False" };
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now.to_string();
        }
        c.status = status.to_string();
        c.reason = reason.to_string();
        c.message = message.to_string();
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: now.to_string(),
            observed_generation: None,
        });
        conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    }
}

/// `claim`'s conditions with `type_` True with `(reason, message)`, or without `type_` when that
/// is `None`; `None` when the list would not change (the condition is already True with that
/// reason, or already absent).
#[must_use]
pub fn conditions_with(
    claim: &NodeClaim,
    type_: &str,
    reason: Option<(&str, &str)>,
    now: &str,
) -> Option<Vec<Condition>> {
    let current = claim.condition(type_);
    let mut conditions = claim.status.clone().unwrap_or_default().conditions;
    match (reason, current) {
        (Some((r, _)), Some(c)) if c.status == "True" && c.reason == r => None,
        (Some((r, m)), _) => {
            set_condition(&mut conditions, type_, true, r, m, now);
            Some(conditions)
        }
        (None, None) => None,
        (None, Some(_)) => {
            conditions.retain(|c| c.type_ != type_);
            Some(conditions)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_transition_times() {
        let mut c = Vec::new();
        set_condition(&mut c, "Launched", true, "Launched", "", "t1");
        set_condition(&mut c, "Launched", true, "Launched", "again", "t2");
        assert_eq!(c[0].last_transition_time, "t1");
        set_condition(&mut c, "Launched", false, "Failed", "", "t3");
        assert_eq!(c[0].last_transition_time, "t3");
        set_condition(&mut c, "Initialized", false, "NotReady", "", "t4");
        assert_eq!(c[0].type_, "Initialized");
    }
}
