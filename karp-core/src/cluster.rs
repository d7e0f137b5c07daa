//! The immutable cluster snapshot the scheduler plans against.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cloud::InstanceType;
use crate::labels;
use crate::pod::Pod;
use crate::requirements::{Requirement, Requirements};
use crate::resources::Resources;
use crate::taints::Taint;

/// NodePool `limits`: resource totals and a node count the pool may not exceed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Resource limits; only resources named here are limited (`None`: unlimited).
    pub resources: BTreeMap<String, i64>,
    /// `nodes` limit.
    pub nodes: Option<i64>,
}

/// A NodePool as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePool {
    /// Name.
    pub name: String,
    /// Higher weights are tried first.
    pub weight: i32,
    /// `spec.template.spec.requirements`.
    pub requirements: Requirements,
    /// `spec.template.metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.template.spec.taints`.
    pub taints: Vec<Taint>,
    /// `spec.template.spec.startupTaints` (ignored for placement).
    pub startup_taints: Vec<Taint>,
    /// `spec.limits`.
    pub limits: Limits,
    /// Node class name (`spec.template.spec.nodeClassRef.name`).
    pub node_class: Option<String>,
    /// The instance types this pool can launch (node class already applied).
    pub instance_types: Vec<Arc<InstanceType>>,
    /// `spec.replicas`: a static pool keeps exactly this many nodes whatever the pods need
    /// (Karpenter's static capacity). The scheduler never opens a NodeClaim of a static pool for
    /// pending pods (its nodes are destinations like any other), and consolidation leaves its
    /// nodes alone; drift replaces them one for one ([`crate::disruption`]'s static drift).
    pub replicas: Option<u64>,
}

impl NodePool {
    /// A pool with defaults (weight 0, no requirements, no limits).
    #[must_use]
    pub fn new(name: impl Into<String>, instance_types: Vec<Arc<InstanceType>>) -> Self {
        NodePool {
            name: name.into(),
            weight: 0,
            requirements: Requirements::new(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            startup_taints: Vec::new(),
            limits: Limits::default(),
            node_class: None,
            instance_types,
            replicas: None,
        }
    }

    /// Whether the pool is static (`spec.replicas` set).
    #[must_use]
    pub fn is_static(&self) -> bool {
        self.replicas.is_some()
    }

    /// The template requirements: spec requirements, template labels as `In`, and the pool label.
    #[must_use]
    pub fn template_requirements(&self) -> Requirements {
        let mut r = self.requirements.clone();
        for (k, v) in &self.labels {
            r.add(Requirement::in_values(k.clone(), [v.clone()]));
        }
        r.add(Requirement::in_values(
            labels::NODEPOOL,
            [self.name.clone()],
        ));
        r
    }
}

/// An existing node, or an in-flight NodeClaim that has no node yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node (or NodeClaim) name; also its hostname.
    pub name: String,
    /// Labels (for an in-flight claim: the labels it will have).
    pub labels: BTreeMap<String, String>,
    /// Taints (startup taints excluded).
    pub taints: Vec<Taint>,
    /// Allocatable resources.
    pub allocatable: Resources,
    /// Capacity (counts against NodePool limits).
    pub capacity: Resources,
    /// Whether the node is initialized (initialized nodes are tried first).
    pub initialized: bool,
    /// Whether the node is being deleted (no new pods).
    pub deleting: bool,
    /// USD per hour, when known.
    pub price: Option<f64>,
}

impl Node {
    /// An initialized node.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        labels: BTreeMap<String, String>,
        allocatable: Resources,
    ) -> Self {
        let name = name.into();
        let mut labels = labels;
        labels
            .entry(labels::HOSTNAME.to_string())
            .or_insert_with(|| name.clone());
        Node {
            name,
            labels,
            taints: Vec::new(),
            capacity: allocatable.clone(),
            allocatable,
            initialized: true,
            deleting: false,
            price: None,
        }
    }

    /// The NodePool it belongs to, from its label.
    #[must_use]
    pub fn nodepool(&self) -> Option<&str> {
        self.labels.get(labels::NODEPOOL).map(String::as_str)
    }
}

/// Everything the scheduler needs, captured at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSnapshot {
    /// NodePools.
    pub node_pools: Vec<NodePool>,
    /// Existing nodes and in-flight NodeClaims.
    pub nodes: Vec<Node>,
    /// Pods: bound ones (`node_name` set) use capacity and count for topology; the rest are pending.
    pub pods: Vec<Pod>,
    /// DaemonSet pod templates (their requests are overhead on new nodes they would run on).
    pub daemonsets: Vec<Pod>,
    /// Namespace labels, for affinity `namespaceSelector`.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl ClusterSnapshot {
    /// Indices of pods without a node.
    #[must_use]
    pub fn pending(&self) -> Vec<usize> {
        (0..self.pods.len())
            .filter(|&i| self.pods[i].node_name.is_none())
            .collect()
    }

    /// Every node that is not being deleted, with what its bound pods leave of its allocatable.
    #[must_use]
    pub fn free_capacity(&self) -> Vec<(&Node, Resources)> {
        let mut used: BTreeMap<&str, Resources> = BTreeMap::new();
        for p in &self.pods {
            if let Some(n) = &p.node_name {
                used.entry(n.as_str()).or_default().add_assign(&p.requests);
            }
        }
        self.nodes
            .iter()
            .filter(|n| !n.deleting)
            .map(|n| {
                (
                    n,
                    n.allocatable
                        .minus(used.get(n.name.as_str()).unwrap_or(&Resources::new())),
                )
            })
            .collect()
    }

    /// Per NodePool (by name), what its `limits` leave after its existing nodes: the remaining
    /// amount of every limited resource, and of nodes when `limits.nodes` is set.
    #[must_use]
    pub fn remaining_limits(&self) -> BTreeMap<String, (BTreeMap<String, i64>, Option<i64>)> {
        let usage = self.nodepool_usage();
        self.node_pools
            .iter()
            .map(|p| {
                let (used, count) = usage.get(&p.name).cloned().unwrap_or_default();
                let res = p
                    .limits
                    .resources
                    .iter()
                    .map(|(k, v)| (k.clone(), v - used.get(k)))
                    .collect();
                (p.name.clone(), (res, p.limits.nodes.map(|n| n - count)))
            })
            .collect()
    }

    /// Per NodePool, the resources and node count already in use (sum of capacity of its nodes,
    /// as Karpenter accounts limits).
    #[must_use]
    pub fn nodepool_usage(&self) -> BTreeMap<String, (Resources, i64)> {
        let mut out: BTreeMap<String, (Resources, i64)> = BTreeMap::new();
        for n in &self.nodes {
            if let Some(p) = n.nodepool() {
                let e = out.entry(p.to_string()).or_default();
                e.0.add_assign(&n.capacity);
                e.1 += 1;
            }
        }
        out
    }
}
