//! The cloud-specific side of the operator, behind traits the generic code uses:
//!
//! - [`NodeClassResolver`]: resolves node classes (their status) and cleans up after them, and
//!   names the label that ties a node to its node class;
//! - [`crate::convert::InstanceTypeSource`]: the instance types a NodePool can launch (for `karp
//!   plan` a catalog, [`aws::AwsCatalog`]; for the operator the cloud provider's live offerings).
//!
//! karp ships one cloud, AWS ([`aws`]); the embedded cluster's simulated cloud imitates it. A new
//! cloud adds a module here, a `karp_core::cloud::CloudProvider` implementation in its own crate,
//! and its node-class API type in [`crate::api`].

pub mod aws;

/// How the operator resolves node classes (EC2NodeClass status) for its cloud.
#[async_trait::async_trait]
pub trait NodeClassResolver: Send + Sync {
    /// The label each NodeClaim (and its node) carries naming its node class
    /// (`karpenter.k8s.aws/ec2nodeclass` on AWS).
    fn node_class_label(&self) -> &'static str;

    /// Resolves a node class, returning the status to write (with conditions).
    ///
    /// # Errors
    /// A message when the cloud could not be asked (the status is left as it is).
    async fn resolve(
        &self,
        node_class: &karp_aws::nodeclass::EC2NodeClass,
    ) -> Result<karp_aws::nodeclass::EC2NodeClassStatus, String>;

    /// Cleans up what the cloud created for a deleted node class.
    ///
    /// # Errors
    /// A message when cleanup failed (retried).
    async fn delete(&self, node_class: &karp_aws::nodeclass::EC2NodeClass) -> Result<(), String>;
}
