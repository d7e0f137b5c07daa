//! # karp-core
//!
//! The pure heart of karp, a Kubernetes node autoscaler API-compatible with Karpenter v1: label
//! requirements, instance types and offerings, the scheduling simulation that decides which
//! NodeClaims to create for pending pods, and an independent validator for its plans.
//!
//! Nothing here performs IO, reads the clock or depends on an async runtime; the same snapshot
//! always gives the same plan.
//!
//! ```
//! use karp_core::cluster::ClusterSnapshot;
//! use karp_core::scheduling::{schedule, SchedulerOptions};
//! use karp_core::testing::{instance_type, nodepool, pod};
//! use karp_core::validation::validate;
//!
//! // Two instance types, one NodePool, four pending pods.
//! let types = vec![
//!     instance_type("m5.large").cpu("2").memory("8Gi").pods(29).price(0.096).build(),
//!     instance_type("m5.xlarge").cpu("4").memory("16Gi").pods(58).price(0.192).build(),
//! ];
//! let snapshot = ClusterSnapshot {
//!     node_pools: vec![nodepool("default", types)],
//!     pods: (0..4).map(|i| pod(&format!("web-{i}")).cpu("500m").memory("1Gi").build()).collect(),
//!     ..Default::default()
//! };
//! let results = schedule(&snapshot, &SchedulerOptions::default());
//! assert!(results.unschedulable.is_empty());
//! assert_eq!(results.new_nodeclaims.len(), 1);
//! // Every plan passes the independent validator.
//! validate(&snapshot, &results).unwrap();
//! ```

pub mod cloud;
pub mod cluster;
pub mod labels;
pub mod packing;
pub mod pod;
pub mod requirements;
pub mod resources;
pub mod scheduling;
pub mod taints;
pub mod validation;

#[cfg(feature = "testing")]
pub mod testing;
