//! AWS provider pieces of karp that need no IO and no AWS SDK.
//!
//! - [`catalog`]: the built-in us-east-1 instance-type catalog ([`catalog::builtin_catalog`]) with every
//!   well-known label Karpenter's AWS provider sets, capacity, overhead and offerings.
//! - [`allocatable`]: Karpenter's AWS capacity / overhead formula (max pods from ENIs, VM memory
//!   overhead, kube-reserved, system-reserved, eviction thresholds), driven by [`allocatable::NodeClassSettings`].
//! - [`nodeclass`]: serde types for `karpenter.k8s.aws/v1` `EC2NodeClass` and the derivation of
//!   allocatable settings from its spec.
//! - [`catalog_file`]: the JSON catalog file format (`karp plan --catalog`), reader and writer.
//!
//! Everything here is deterministic: maps are `BTreeMap`s and catalogs are sorted by name.
//!
//! ```
//! use karp_aws::allocatable::NodeClassSettings;
//! use karp_aws::catalog::builtin_catalog;
//!
//! let catalog = builtin_catalog(&NodeClassSettings::default()).unwrap();
//! let m5 = catalog.iter().find(|e| e.name == "m5.large").unwrap();
//! assert_eq!(m5.capacity.pods, 29);
//! assert_eq!(m5.capacity.cpu_millis - m5.overhead.cpu_millis, 1930);
//! ```

pub mod allocatable;
pub mod catalog;
pub mod catalog_file;
pub mod nodeclass;
mod quantity;

pub use allocatable::{AmiFamily, KubeletSettings, NodeClassSettings, ResourceAmounts};
pub use catalog::{builtin_catalog, CatalogEntry, CatalogOffering};
