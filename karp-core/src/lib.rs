//! # karp-core
//!
//! The pure heart of karp, a Kubernetes node autoscaler API-compatible with Karpenter v1: label
//! requirements, instance types and offerings, the scheduling simulation that decides which
//! NodeClaims to create for pending pods, and an independent validator for its plans.
//!
//! Nothing here performs IO or depends on an async runtime, and nothing reads the clock itself:
//! the MILP packer's time budget runs on a `packing::Clock` the caller injects.
//!
//! # Determinism
//! The scheduler ([`schedule`](scheduling::schedule), [`Ffd`](packing::Ffd)) and the validator
//! always give the same result for the same snapshot. The MILP packer (feature `milp`) always
//! returns a valid plan that costs no more than the FFD plan, but by default its HiGHS calls have
//! wall-clock time limits (and, with a clock, its phases stop at shares of a time budget), so
//! *which* plan it returns within that, and its lower bound, can depend on timing and machine
//! load. With `Milp::work_limits` set and no clock, every limit is a count (rounds, search
//! nodes, branch-and-bound nodes, simplex iterations) and two runs give byte-identical results.
//! [`lower_bound`](packing::lower_bound) keeps its time limits: always a valid bound, but on large
//! snapshots its value can depend on timing.
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
pub mod disruption;
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
