//! Kubernetes objects → karp-core's [`ClusterSnapshot`](karp_core::cluster::ClusterSnapshot), once,
//! at the edge.
//!
//! One builder serves every caller: `karp plan` (objects read from manifests by [`manifests`]),
//! the provisioner and the disruption planner (objects from the operator's caches). It takes typed
//! objects ([`ClusterObjects`]) and an [`InstanceTypeSource`] from the cloud provider's side, and
//! returns the snapshot with every object converted exactly once:
//!
//! - [`pod`]: pods and pod templates (requests, affinity, spread, tolerations, volumes);
//! - [`workloads`]: Deployments, ReplicaSets, StatefulSets and Jobs expanded to their replicas;
//! - [`node`]: Nodes as existing capacity; [`nodeclaim`]: NodeClaims (in flight, or behind a node);
//! - [`nodepool`]: NodePools with Karpenter's field validation.
//!
//! Every error names the object (and the file it came from, when it came from one) and the field.

pub mod disruption;
pub mod manifests;
pub mod node;
pub mod nodeclaim;
pub mod nodepool;
pub mod pod;
pub mod snapshot;
pub mod workloads;

use std::fmt::{self, Display};

pub use snapshot::{
    build_snapshot, BuildOptions, ClusterObjects, Converted, Input, InstanceTypeSource, PodSource,
    TypesByNodeClass,
};

/// Where an object came from: the file it was read from (none for live cluster objects), its
/// kind, namespace (for namespaced kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The file as named on the command line (or the folder entry found under it); `None` for an
    /// object read from the API server.
    pub file: Option<String>,
    /// The object's kind (`Deployment`).
    pub kind: String,
    /// Namespace for namespaced kinds (`default` when the manifest leaves it out); `None` for
    /// cluster-scoped kinds, whatever the manifest says.
    pub namespace: Option<String>,
    /// `metadata.name` (empty when missing).
    pub name: String,
}

impl ObjectRef {
    /// An object read from the API server (no file).
    #[must_use]
    pub fn live(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        ObjectRef {
            file: None,
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    /// The reference of a typed API object read from the API server.
    #[must_use]
    pub fn of<K: kube::Resource<DynamicType = ()>>(object: &K) -> Self {
        let meta = object.meta();
        Self::live(
            &K::kind(&()),
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Why cluster objects (from manifests or the API server) could not be converted into a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// A field has a value karp (or Kubernetes) does not accept.
    #[error("{object}: {field}: {reason}")]
    ConvertField {
        /// The object.
        object: Box<ObjectRef>,
        /// Field path, e.g. `spec.template.spec.containers[0].resources.requests.cpu`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A NodePool references an EC2NodeClass that is not in the input.
    #[error("{nodepool}: spec.template.spec.nodeClassRef.name: EC2NodeClass {name:?} is not in the input")]
    ResolveNodeClass {
        /// The NodePool.
        nodepool: Box<ObjectRef>,
        /// The missing node class.
        name: String,
    },
    /// The instance-type catalog could not be built for a node class.
    #[error("{nodeclass}: {reason}")]
    BuildCatalog {
        /// The EC2NodeClass whose settings were used.
        nodeclass: Box<ObjectRef>,
        /// What failed.
        reason: String,
    },
    /// The `--catalog` file is invalid.
    #[error("{file}: {reason}")]
    ParseCatalogFile {
        /// The catalog file.
        file: String,
        /// What is wrong (entry index, name and field).
        reason: String,
    },
    /// Two objects (or two expanded pods) have the same identity.
    #[error("{object}: defined twice (also in {first})")]
    DuplicateObject {
        /// The second definition.
        object: Box<ObjectRef>,
        /// Where the first one was.
        first: String,
    },
}

impl ConvertError {
    /// The object the error is about, when it is about one.
    #[must_use]
    pub fn object(&self) -> Option<&ObjectRef> {
        match self {
            ConvertError::ConvertField { object, .. }
            | ConvertError::DuplicateObject { object, .. } => Some(object),
            ConvertError::ResolveNodeClass { nodepool, .. } => Some(nodepool),
            ConvertError::BuildCatalog { nodeclass, .. } => Some(nodeclass),
            ConvertError::ParseCatalogFile { .. } => None,
        }
    }
}

pub(crate) fn field_err(
    object: &ObjectRef,
    field: impl Into<String>,
    reason: impl Display,
) -> ConvertError {
    ConvertError::ConvertField {
        object: Box::new(object.clone()),
        field: field.into(),
        reason: reason.to_string(),
    }
}
