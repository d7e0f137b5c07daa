//! The Kubernetes API types karp serves and reads: Karpenter's v1 CRDs (NodePool, NodeClaim,
//! EC2NodeClass) as serde types with `kube::Resource`, and their CustomResourceDefinitions.
//!
//! These are wire types only: conversion to karp-core's model is in [`crate::convert`].

pub mod crds;
pub mod duration;
pub mod ec2nodeclass;
pub mod nodeclaim;
pub mod nodepool;

/// Implements `kube::Resource` for a cluster-scoped `<group>/v1` type with a `metadata` field.
macro_rules! cluster_resource {
    ($t:ty, $group:expr, $kind:expr, $plural:expr) => {
        impl kube::Resource for $t {
            type DynamicType = ();
            type Scope = ::kube::core::ClusterResourceScope;
            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub(crate) use cluster_resource;

cluster_resource!(nodepool::NodePool, "karpenter.sh", "NodePool", "nodepools");

/// RFC 3339 time in UTC with seconds, as Kubernetes writes it.
#[must_use]
pub fn rfc3339(t: std::time::SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
