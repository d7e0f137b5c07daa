//! The built-in AWS us-east-1 catalog as karp-core instance types, and Karpenter-style NodePools
//! over it.
//!
//! The catalog is `karp_aws::builtin_catalog` with the default EC2NodeClass settings (AL2023,
//! Karpenter's allocatable formula), converted by `CatalogEntry::to_instance_type`
//! exactly as `karp plan` does without `--catalog`. Every pool gets the whole catalog; its
//! requirements select the instance categories, architectures and capacity type.
//!
//! ```
//! use karp_benches::aws::{aws_instance_types, nodepool, CapacityType};
//!
//! let types = aws_instance_types();
//! let pool = nodepool(CapacityType::Spot, false, types);
//! assert_eq!(pool.name, "spot");
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use karp_aws::{builtin_catalog, NodeClassSettings};
use karp_core::cloud::InstanceType;
use karp_core::cluster::{ClusterSnapshot, NodePool};
use karp_core::labels;
use karp_core::pod::Pod;
use karp_core::requirements::Requirement;

/// The extended resource of NVIDIA GPUs.
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";

/// `karpenter.k8s.aws/instance-category`.
pub const INSTANCE_CATEGORY: &str = "karpenter.k8s.aws/instance-category";

/// Instance categories of the general-purpose pools (compute, general, memory optimized).
pub const CPU_CATEGORIES: [&str; 3] = ["c", "m", "r"];

/// Instance categories of the GPU pools: the general ones plus `g` and `p` (NVIDIA GPUs).
pub const GPU_CATEGORIES: [&str; 5] = ["c", "m", "r", "g", "p"];

/// The capacity type a benchmark NodePool allows (`karpenter.sh/capacity-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CapacityType {
    /// `on-demand` only.
    OnDemand,
    /// `spot` only.
    Spot,
}

impl CapacityType {
    /// Both variants, on-demand first.
    pub const ALL: [CapacityType; 2] = [CapacityType::OnDemand, CapacityType::Spot];

    /// The label value (`on-demand`, `spot`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::OnDemand => labels::CAPACITY_ON_DEMAND,
            CapacityType::Spot => labels::CAPACITY_SPOT,
        }
    }
}

impl fmt::Display for CapacityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CapacityType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CapacityType::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown capacity type {s:?} (on-demand, spot)"))
    }
}

/// The built-in us-east-1 catalog (default `NodeClassSettings`) as karp-core instance types,
/// sorted by name.
///
/// # Panics
/// Only if the catalog embedded in karp-aws is corrupt (its own tests parse it).
#[must_use]
pub fn aws_instance_types() -> Vec<Arc<InstanceType>> {
    let catalog = builtin_catalog(&NodeClassSettings::default())
        .unwrap_or_else(|e| panic!("karp-aws built-in catalog: {e}"));
    catalog
        .iter()
        .map(|e| Arc::new(e.to_instance_type()))
        .collect()
}

/// A NodePool named after its capacity type over `types`, requiring that capacity type,
/// `kubernetes.io/arch In [amd64, arm64]` and instance categories [`CPU_CATEGORIES`] (or
/// [`GPU_CATEGORIES`] when `gpu`).
#[must_use]
pub fn nodepool(capacity: CapacityType, gpu: bool, types: Vec<Arc<InstanceType>>) -> NodePool {
    let mut pool = NodePool::new(capacity.as_str(), types);
    pool.requirements.add(Requirement::in_values(
        labels::CAPACITY_TYPE,
        [capacity.as_str()],
    ));
    pool.requirements
        .add(Requirement::in_values(labels::ARCH, ["amd64", "arm64"]));
    let categories: &[&str] = if gpu {
        &GPU_CATEGORIES
    } else {
        &CPU_CATEGORIES
    };
    pool.requirements.add(Requirement::in_values(
        INSTANCE_CATEGORY,
        categories.iter().copied(),
    ));
    pool
}

/// A snapshot with one such NodePool, no nodes, and `pods` pending.
#[must_use]
pub fn snapshot(
    pods: Vec<Pod>,
    capacity: CapacityType,
    gpu: bool,
    types: Vec<Arc<InstanceType>>,
) -> ClusterSnapshot {
    ClusterSnapshot {
        node_pools: vec![nodepool(capacity, gpu, types)],
        pods,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_has_gpu_types_with_nvidia_gpus() {
        let types = aws_instance_types();
        assert!(types.len() > 500);
        let gpu = types.iter().find(|t| t.name == "g5.xlarge").unwrap();
        assert_eq!(gpu.capacity.extended.get(NVIDIA_GPU), Some(&1));
    }

    #[test]
    fn capacity_types_round_trip_through_their_names() {
        for c in CapacityType::ALL {
            assert_eq!(c.as_str().parse::<CapacityType>().unwrap(), c);
        }
        assert!("reserved".parse::<CapacityType>().is_err());
    }
}
