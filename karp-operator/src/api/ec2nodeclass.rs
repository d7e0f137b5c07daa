//! `karpenter.k8s.aws/v1` EC2NodeClass as the Kubernetes API serves it (the AWS provider's node
//! class; its spec and status types live in karp-aws, which has no Kubernetes dependency).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::cluster_resource;

cluster_resource!(
    EC2NodeClassObject,
    "karpenter.k8s.aws",
    "EC2NodeClass",
    "ec2nodeclasses"
);

/// `karpenter.k8s.aws/v1` EC2NodeClass as the API serves it (karp-aws's spec and status types
/// with Kubernetes metadata).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassObject {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: karp_aws::nodeclass::EC2NodeClassSpec,
    /// Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<karp_aws::nodeclass::EC2NodeClassStatus>,
}

impl EC2NodeClassObject {
    /// The karp-aws view (name and spec).
    #[must_use]
    pub fn to_nodeclass(&self) -> karp_aws::nodeclass::EC2NodeClass {
        karp_aws::nodeclass::EC2NodeClass {
            api_version: Some("karpenter.k8s.aws/v1".into()),
            kind: Some("EC2NodeClass".into()),
            metadata: karp_aws::nodeclass::ObjectMetadata {
                name: self.metadata.name.clone(),
                labels: self.metadata.labels.clone().unwrap_or_default(),
                annotations: self.metadata.annotations.clone().unwrap_or_default(),
            },
            spec: self.spec.clone(),
            status: self.status.clone(),
        }
    }
}
