//! karp's AWS provider: the EC2 implementation of karp-core's cloud-provider trait, and the pure
//! pieces it is built from.
//!
//! Pure (no IO):
//! - [`catalog`]: the built-in us-east-1 instance-type catalog ([`catalog::builtin_catalog`]) with every
//!   well-known label Karpenter's AWS provider sets, capacity, overhead and offerings.
//! - [`allocatable`]: Karpenter's AWS capacity / overhead formula (max pods from ENIs, VM memory
//!   overhead, kube-reserved, system-reserved, eviction thresholds), driven by [`allocatable::NodeClassSettings`].
//! - [`nodeclass`]: serde types for `karpenter.k8s.aws/v1` `EC2NodeClass` and the derivation of
//!   allocatable settings from its spec.
//! - [`catalog_file`]: the JSON catalog file format (`karp plan --catalog`), reader and writer.
//! - [`describe`]: EC2 API shapes → catalog facts; [`userdata`]: node bootstrap per AMI family;
//!   [`error`]: error codes.
//!
//! Pure decisions next to the SDK calls that carry them out (each module's pure functions are
//! the ones without `async`):
//! - [`launch`]: the launch plan (capacity type, overrides, template data, tags) and the
//!   CreateFleet outcome are pure; `ensure_launch_template` and the CreateFleet request call EC2.
//! - [`resolve`]: selector terms → filters, AMI aliases → SSM parameter names and status
//!   conditions are pure; `resolve_node_class` and the instance-profile functions call EC2, SSM
//!   and IAM.
//!
//! With IO (aws-sdk-ec2 / ssm / pricing through [`sdk::AwsClients`]):
//! - [`provider::AwsCloudProvider`]: instance types and offerings from DescribeInstanceTypes /
//!   DescribeInstanceTypeOfferings, prices ([`pricing`]), node class resolution, CreateFleet
//!   launches, batched DescribeInstances / TerminateInstances ([`batcher`]), the
//!   insufficient-capacity cache ([`unavailable`]) and drift.
//!
//! With the `test-support` feature, [`moto`] starts and seeds a moto_server (the EC2 API
//! emulator) for tests and the embedded cluster.
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
pub mod batcher;
pub mod catalog;
pub mod catalog_file;
pub mod describe;
pub mod error;
pub mod imds;
#[cfg(feature = "test-support")]
pub mod imds_emulator;
pub mod interruption;
pub mod launch;
#[cfg(feature = "test-support")]
pub mod moto;
pub mod nodeclass;
pub mod pricing;
pub mod provider;
mod quantity;
pub mod resolve;
pub mod sdk;
pub mod unavailable;
pub mod userdata;

pub use allocatable::{AmiFamily, KubeletSettings, NodeClassSettings, ResourceAmounts};
pub use catalog::{builtin_catalog, CatalogEntry, CatalogOffering};
pub use provider::AwsCloudProvider;
pub use sdk::{AwsClients, AwsSettings};
