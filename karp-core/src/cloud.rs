//! Instance types, offerings and the cloud-provider contract.
//!
//! An [`InstanceType`] offers a set of labels (its requirements), a capacity, an overhead
//! (kube-reserved + system-reserved + eviction threshold) and priced [`Offering`]s per zone and
//! capacity type. [`CloudProvider`] is what a cloud implements for the operator; the scheduler
//! itself only needs instance types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

use crate::labels;
use crate::requirements::{Requirement, Requirements};
use crate::resources::Resources;

/// Where and how an instance type can be bought.
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    /// Availability zone.
    pub zone: String,
    /// `spot`, `on-demand` or `reserved`.
    pub capacity_type: String,
    /// USD per hour.
    pub price: f64,
    /// Whether it can be launched now (false while an insufficient-capacity error is cached).
    pub available: bool,
    /// For a `reserved` offering: the capacity reservation behind it and how many more
    /// instances it takes. The scheduler plans at most that many NodeClaims on it per pass.
    pub reservation: Option<ReservedCapacity>,
}

/// A capacity reservation an offering launches into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedCapacity {
    /// The reservation's id (`cr-…`).
    pub id: String,
    /// Instances it can still take.
    pub available: u32,
}

impl Offering {
    /// An available offering.
    #[must_use]
    pub fn new(zone: impl Into<String>, capacity_type: impl Into<String>, price: f64) -> Self {
        Offering {
            zone: zone.into(),
            capacity_type: capacity_type.into(),
            price,
            available: true,
            reservation: None,
        }
    }

    /// A `reserved` offering in `zone` backed by reservation `id` with room for `available`
    /// more instances (unavailable when it has none).
    #[must_use]
    pub fn reserved(
        zone: impl Into<String>,
        price: f64,
        id: impl Into<String>,
        available: u32,
    ) -> Self {
        Offering {
            zone: zone.into(),
            capacity_type: labels::CAPACITY_RESERVED.to_string(),
            price,
            available: available > 0,
            reservation: Some(ReservedCapacity {
                id: id.into(),
                available,
            }),
        }
    }

    /// Whether the offering's zone and capacity type satisfy `reqs`.
    #[must_use]
    pub fn compatible(&self, reqs: &Requirements) -> bool {
        reqs.get(labels::ZONE).is_none_or(|r| r.has(&self.zone))
            && reqs
                .get(labels::CAPACITY_TYPE)
                .is_none_or(|r| r.has(&self.capacity_type))
    }
}

/// An instance type as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    /// Name (`m5.large`).
    pub name: String,
    /// The labels it offers as requirements, including zone and capacity type from its offerings.
    pub requirements: Requirements,
    /// Raw capacity.
    pub capacity: Resources,
    /// Reserved for the system (kube-reserved + system-reserved + eviction threshold).
    pub overhead: Resources,
    /// Offerings.
    pub offerings: Vec<Offering>,
    allocatable: Resources,
}

impl InstanceType {
    /// Build an instance type. `labels` are the labels it offers; `node.kubernetes.io/instance-type`,
    /// `kubernetes.io/arch` (default amd64) and `kubernetes.io/os` (default linux) are filled in,
    /// and zone / capacity type come from the offerings.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        labels: &BTreeMap<String, String>,
        capacity: Resources,
        overhead: Resources,
        offerings: Vec<Offering>,
    ) -> Self {
        let name = name.into();
        let mut reqs = Requirements::new();
        for (k, v) in labels {
            reqs.add(Requirement::in_values(k.clone(), [v.clone()]));
        }
        if !reqs.has_key(labels::INSTANCE_TYPE) {
            reqs.add(Requirement::in_values(
                labels::INSTANCE_TYPE,
                [name.clone()],
            ));
        }
        if !reqs.has_key(labels::ARCH) {
            reqs.add(Requirement::in_values(labels::ARCH, ["amd64"]));
        }
        if !reqs.has_key(labels::OS) {
            reqs.add(Requirement::in_values(labels::OS, ["linux"]));
        }
        let zones: BTreeSet<String> = offerings.iter().map(|o| o.zone.clone()).collect();
        let cts: BTreeSet<String> = offerings.iter().map(|o| o.capacity_type.clone()).collect();
        reqs.remove(labels::ZONE);
        reqs.remove(labels::CAPACITY_TYPE);
        reqs.add(Requirement::in_values(labels::ZONE, zones));
        reqs.add(Requirement::in_values(labels::CAPACITY_TYPE, cts));
        let allocatable = capacity.minus(&overhead);
        InstanceType {
            name,
            requirements: reqs,
            capacity,
            overhead,
            offerings,
            allocatable,
        }
    }

    /// Capacity minus overhead.
    #[must_use]
    pub fn allocatable(&self) -> &Resources {
        &self.allocatable
    }

    /// The cheapest available offering whose zone and capacity type satisfy `reqs`.
    #[must_use]
    pub fn cheapest_offering(&self, reqs: &Requirements) -> Option<&Offering> {
        self.offerings
            .iter()
            .filter(|o| o.available && o.compatible(reqs))
            .min_by(|a, b| {
                a.price
                    .total_cmp(&b.price)
                    .then_with(|| a.zone.cmp(&b.zone))
                    .then_with(|| a.capacity_type.cmp(&b.capacity_type))
            })
    }

    /// The single value of a label this type offers, if it offers exactly one.
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        self.requirements
            .get(key)
            .and_then(Requirement::single_value)
    }
}

/// What a launch request asks the cloud for (a NodeClaim's spec).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LaunchRequest {
    /// NodeClaim name.
    pub nodeclaim: String,
    /// NodePool name.
    pub nodepool: String,
    /// Node class name.
    pub node_class: Option<String>,
    /// Requirements the instance must satisfy (instance types, zones, capacity types...).
    pub requirements: Requirements,
    /// Resources the pods need.
    pub requests: Resources,
    /// Labels the node registers with (NodePool template labels and single-valued requirements).
    pub labels: BTreeMap<String, String>,
    /// Taints the node registers with (the NodePool template's taints).
    pub taints: Vec<crate::taints::Taint>,
    /// Startup taints the node also registers with; a daemon removes them once it is ready.
    pub startup_taints: Vec<crate::taints::Taint>,
}

/// A launched instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Provider ID (`aws:///us-east-1a/i-0123`).
    pub provider_id: String,
    /// NodeClaim name it was launched for, from its tags.
    pub nodeclaim: Option<String>,
    /// Instance type name.
    pub instance_type: String,
    /// Zone.
    pub zone: String,
    /// Capacity type.
    pub capacity_type: String,
    /// Labels the node will get from the instance.
    pub labels: BTreeMap<String, String>,
}

/// An offering that could not be launched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnavailableOffering {
    /// Instance type.
    pub instance_type: String,
    /// Zone.
    pub zone: String,
    /// Capacity type.
    pub capacity_type: String,
}

/// Errors a cloud provider returns; the core branches on the variant, never on text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// The instance does not exist (any more).
    #[error("instance {provider_id} not found")]
    NotFound {
        /// The instance.
        provider_id: String,
    },
    /// No capacity for the requested offerings.
    #[error("insufficient capacity for {} offering(s)", offerings.len())]
    InsufficientCapacity {
        /// The offerings that failed.
        offerings: Vec<UnavailableOffering>,
    },
    /// The node class is not resolved yet.
    #[error("node class {name} is not ready: {reason}")]
    NodeClassNotReady {
        /// Node class name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Any other failure of the cloud API.
    #[error("cloud provider call {operation} failed: {message}")]
    Api {
        /// Which call.
        operation: String,
        /// What the API said.
        message: String,
        /// Whether retrying may help.
        retryable: bool,
    },
}

impl CloudError {
    /// Whether this is [`CloudError::NotFound`].
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, CloudError::NotFound { .. })
    }

    /// Whether this is [`CloudError::InsufficientCapacity`].
    #[must_use]
    pub fn is_insufficient_capacity(&self) -> bool {
        matches!(self, CloudError::InsufficientCapacity { .. })
    }

    /// Whether this is [`CloudError::NodeClassNotReady`].
    #[must_use]
    pub fn is_node_class_not_ready(&self) -> bool {
        matches!(self, CloudError::NodeClassNotReady { .. })
    }
}

/// What a cloud implements so the operator can launch and remove nodes (Karpenter's
/// `CloudProvider`). Implementations must be idempotent where noted.
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// A short name (`aws`, `fake`).
    fn name(&self) -> &str;

    /// Launch one instance satisfying the request.
    ///
    /// # Errors
    /// [`CloudError::InsufficientCapacity`] when no offering could be launched,
    /// [`CloudError::NodeClassNotReady`] when the node class is not resolved.
    async fn create(&self, request: &LaunchRequest) -> Result<Instance, CloudError>;

    /// Terminate an instance. Idempotent: returns [`CloudError::NotFound`] once it is gone.
    ///
    /// # Errors
    /// [`CloudError::NotFound`] when it no longer exists.
    async fn delete(&self, provider_id: &str) -> Result<(), CloudError>;

    /// Look up one instance.
    ///
    /// # Errors
    /// [`CloudError::NotFound`] when it does not exist.
    async fn get(&self, provider_id: &str) -> Result<Instance, CloudError>;

    /// Every instance this cluster owns.
    ///
    /// # Errors
    /// [`CloudError::Api`] when listing fails.
    async fn list(&self) -> Result<Vec<Instance>, CloudError>;

    /// The instance launched for the NodeClaim `nodeclaim` (tagged with it), if any: what a
    /// launch adopts after a restart between the launch and the status write. Providers should
    /// look it up by tag rather than list every instance; the default lists.
    ///
    /// # Errors
    /// [`CloudError::Api`] when the lookup fails.
    async fn find_by_nodeclaim(&self, nodeclaim: &str) -> Result<Option<Instance>, CloudError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .find(|i| i.nodeclaim.as_deref() == Some(nodeclaim)))
    }

    /// The instance types a node pool can use (with its node class applied).
    ///
    /// # Errors
    /// [`CloudError::NodeClassNotReady`] when the node class cannot be resolved.
    async fn instance_types(
        &self,
        nodepool: &str,
        node_class: Option<&str>,
    ) -> Result<Vec<Arc<InstanceType>>, CloudError>;

    /// Why an instance drifted from its node class, if it did.
    ///
    /// # Errors
    /// [`CloudError::Api`] when the check fails.
    async fn is_drifted(&self, instance: &Instance) -> Result<Option<String>, CloudError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_type_offers_zone_and_capacity_type_from_offerings() {
        let it = InstanceType::new(
            "m5.large",
            &BTreeMap::new(),
            Resources::from_pairs([("cpu", "2"), ("memory", "8Gi"), ("pods", "29")]).unwrap(),
            Resources::from_pairs([("cpu", "100m")]).unwrap(),
            vec![
                Offering::new("a", "spot", 0.03),
                Offering::new("b", "on-demand", 0.096),
            ],
        );
        assert_eq!(
            it.requirements.get(labels::ZONE).unwrap().values(),
            vec!["a", "b"]
        );
        assert_eq!(it.label(labels::ARCH), Some("amd64"));
        assert_eq!(it.allocatable().cpu, 1900);
        let od =
            Requirements::from_iter([Requirement::in_values(labels::CAPACITY_TYPE, ["on-demand"])]);
        assert_eq!(it.cheapest_offering(&od).unwrap().zone, "b");
        assert_eq!(
            it.cheapest_offering(&Requirements::new()).unwrap().price,
            0.03
        );
    }
}
