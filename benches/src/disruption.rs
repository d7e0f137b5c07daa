//! Fragmented clusters for the disruption benchmarks, made from the trace samples.
//!
//! A [`Fragmented`] recipe provisions a trace's pods for their peak with karp-core's FFD scheduler
//! (Karpenter's provisioning scheduler) on the real EC2 catalog ([`crate::aws`]), one NodePool of
//! one capacity type, turns the plan into a [`DisruptionInput`] (a node per NodeClaim, launched
//! on its cheapest offering by [`launched_node`], initialized [`INITIALIZED_AGO`] before
//! [`now`], every pod bound and owned by a ReplicaSet), then removes pods at random with a fixed
//! seed, keeping [`KEEP_FRACTION`] of them, so the nodes are left fragmented.
//!
//! Large clusters are provisioned in blocks of [`Fragmented::block_pods`] pods (one scheduler
//! run each, like provisioning batches arriving over time), each block a fresh draw from the
//! trace, so a sample smaller than the cluster is repeated with other draws. Pod names carry
//! the block (`b<k>-<trace name>`), node names are `node-<i>` in launch order.
//!
//! The v2017 batch pods are small (0.6 vCPU, 2.5 GiB on average); with the whole catalog FFD
//! packs a hundred of them onto one large node. The recipe caps the instance size at
//! [`V2017_MAX_INSTANCE_CPU`] vCPU by default, so a peak node holds about 25 pods and the kept
//! cluster has about ten pods per node (the issue's 1 000 nodes / 10 000 pods shape).
//!
//! ```no_run
//! use karp_benches::aws::{aws_instance_types, CapacityType};
//! use karp_benches::disruption::{Fragmented, Size};
//! use karp_benches::traces::Traces;
//! use karp_benches::Workload;
//!
//! let traces = Traces::embedded().unwrap();
//! let cluster = Fragmented::new(Workload::AlibabaV2017, CapacityType::OnDemand, Size::Nodes(100))
//!     .build(&traces, &aws_instance_types());
//! println!("{} nodes, {} pods, ${:.2}/h", cluster.nodes(), cluster.pods(), cluster.cost_per_hour());
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use karp_core::cloud::InstanceType;
use karp_core::disruption::stable::launched_node;
use karp_core::disruption::{DisruptionInput, NodeClaimFacts, NodeOffering, PodFacts, Timestamp};
use karp_core::requirements::{Operator, Requirement};
use karp_core::scheduling::{schedule, SchedulerOptions};

use crate::aws::{self, CapacityType};
use crate::traces::Traces;
use crate::{Rng, Workload};

/// The fraction of the peak's pods a fragmented cluster keeps.
pub const KEEP_FRACTION: f64 = 0.4;

/// Largest instance (vCPU) of the v2017 pools by default (see the module docs).
pub const V2017_MAX_INSTANCE_CPU: u32 = 16;

/// Pods per provisioning block by default.
pub const BLOCK_PODS: usize = 2_000;

/// How long before [`now`] the nodes were created and the pods started (far beyond any
/// `consolidateAfter`, so every node is a candidate).
pub const INITIALIZED_AGO: Duration = Duration::from_secs(30 * 24 * 3600);

/// `karpenter.k8s.aws/instance-cpu`.
const INSTANCE_CPU: &str = "karpenter.k8s.aws/instance-cpu";

/// The moment the benchmarks plan at.
#[must_use]
pub fn now() -> Timestamp {
    Timestamp::from_utc(2026, 1, 1, 0, 0, 0)
}

/// How big the cluster is at its peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Provision until exactly this many nodes (the last block's surplus nodes and their pods
    /// are dropped).
    Nodes(usize),
    /// Provision exactly this many pods.
    PeakPods(usize),
}

/// The recipe of a fragmented cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragmented {
    /// A trace workload ([`Workload::AlibabaV2017`] or [`Workload::AlibabaGpuV2023`]).
    pub workload: Workload,
    /// The NodePool's capacity type.
    pub capacity: CapacityType,
    /// Size at the peak.
    pub size: Size,
    /// Fraction of the pods kept ([`KEEP_FRACTION`]).
    pub keep: f64,
    /// Seed of the trace draws and of the removal.
    pub seed: u64,
    /// Largest instance type allowed, in vCPU (`karpenter.k8s.aws/instance-cpu Lte`), if any.
    pub max_instance_cpu: Option<u32>,
    /// Pods per provisioning block.
    pub block_pods: usize,
}

/// A fragmented cluster and how it was made.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The planner's input: nodes, bound pods, facts.
    pub input: DisruptionInput,
    /// Pods at the peak.
    pub peak_pods: usize,
    /// Hourly cost at the peak (the same nodes: removing pods frees no node).
    pub peak_cost: f64,
}

impl Cluster {
    /// Nodes.
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.input.snapshot.nodes.len()
    }

    /// Pods (kept).
    #[must_use]
    pub fn pods(&self) -> usize {
        self.input.snapshot.pods.len()
    }

    /// Hourly cost of the managed nodes (their offerings' prices).
    #[must_use]
    pub fn cost_per_hour(&self) -> f64 {
        cost_per_hour(&self.input)
    }
}

/// Hourly cost of an input's managed nodes (their offerings' prices).
#[must_use]
pub fn cost_per_hour(input: &DisruptionInput) -> f64 {
    input
        .nodes
        .values()
        .filter_map(|f| f.offering.as_ref().map(|o| o.price))
        .sum()
}

impl Fragmented {
    /// The default recipe for `workload` on a `capacity` pool: keep 40 %, seed 42, v2017 pools
    /// capped at [`V2017_MAX_INSTANCE_CPU`] vCPU, blocks of [`BLOCK_PODS`] pods.
    #[must_use]
    pub fn new(workload: Workload, capacity: CapacityType, size: Size) -> Self {
        Fragmented {
            workload,
            capacity,
            size,
            keep: KEEP_FRACTION,
            seed: 42,
            max_instance_cpu: (workload == Workload::AlibabaV2017)
                .then_some(V2017_MAX_INSTANCE_CPU),
            block_pods: BLOCK_PODS,
        }
    }

    /// Use `seed`.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Provision in blocks of `pods` pods.
    #[must_use]
    pub fn block_pods(mut self, pods: usize) -> Self {
        self.block_pods = pods.max(1);
        self
    }

    /// Build the cluster over `types` (the catalog, e.g. [`aws::aws_instance_types`]).
    ///
    /// # Panics
    /// If a block's pods cannot be provisioned at all (no node launched for a non-empty
    /// block), which would loop forever otherwise.
    #[must_use]
    pub fn build(&self, traces: &Traces, types: &[Arc<InstanceType>]) -> Cluster {
        let mut pool = aws::nodepool(self.capacity, self.workload.gpu(), types.to_vec());
        if let Some(cpu) = self.max_instance_cpu {
            let cap = Requirement::new(INSTANCE_CPU, Operator::Lte, [cpu.to_string()])
                .unwrap_or_else(|e| unreachable!("a valid Lte requirement: {e}"));
            pool.requirements.add(cap);
        }
        let mut input = DisruptionInput::default();
        input.snapshot.node_pools = vec![pool];
        let started = now().minus(INITIALIZED_AGO);
        let mut rng = Rng::new(self.seed);
        let mut block = 0usize;
        loop {
            let (nodes_now, pods_now) = (input.snapshot.nodes.len(), input.snapshot.pods.len());
            let want = match self.size {
                Size::Nodes(n) if nodes_now >= n => break,
                Size::PeakPods(p) if pods_now >= p => break,
                Size::Nodes(_) => self.block_pods,
                Size::PeakPods(p) => self.block_pods.min(p - pods_now),
            };
            let mut draw = Rng::new(rng.next_u64());
            let mut pods = self.workload.pods(want, traces, &mut draw);
            for p in &mut pods {
                p.name = format!("b{block}-{}", p.name);
            }
            let snapshot = karp_core::cluster::ClusterSnapshot {
                node_pools: input.snapshot.node_pools.clone(),
                pods,
                ..Default::default()
            };
            let results = schedule(&snapshot, &SchedulerOptions::default());
            assert!(
                !results.new_nodeclaims.is_empty(),
                "block {block}: no pod of {} could be provisioned",
                self.workload
            );
            let mut pods = snapshot.pods;
            for claim in &results.new_nodeclaims {
                if let Size::Nodes(n) = self.size {
                    if input.snapshot.nodes.len() >= n {
                        break;
                    }
                }
                let name = format!("node-{:05}", input.snapshot.nodes.len());
                input.snapshot.nodes.push(launched_node(claim, &name));
                let mut facts = NodeClaimFacts::new(&claim.nodepool, started);
                facts.offering = Some(NodeOffering {
                    instance_type: claim.cheapest.instance_type.clone(),
                    zone: claim.cheapest.zone.clone(),
                    capacity_type: claim.cheapest.capacity_type.clone(),
                    price: claim.cheapest.price,
                });
                input.nodes.insert(name.clone(), facts);
                for &i in &claim.pods {
                    pods[i].node_name = Some(name.clone());
                }
            }
            // Pods left pending (unschedulable, or on dropped surplus nodes) are not part of
            // the cluster.
            input
                .snapshot
                .pods
                .extend(pods.into_iter().filter(|p| p.node_name.is_some()));
            block += 1;
        }
        let peak_pods = input.snapshot.pods.len();
        let peak_cost = cost_per_hour(&input);
        let keep = (peak_pods as f64 * self.keep).round() as usize;
        let mut order: Vec<usize> = (0..peak_pods).collect();
        for k in 0..keep.min(peak_pods) {
            let j = k + rng.below(peak_pods - k);
            order.swap(k, j);
        }
        let mut kept: Vec<usize> = order[..keep.min(peak_pods)].to_vec();
        kept.sort_unstable();
        let all = std::mem::take(&mut input.snapshot.pods);
        let mut slots: Vec<Option<_>> = all.into_iter().map(Some).collect();
        input.snapshot.pods = kept.into_iter().filter_map(|i| slots[i].take()).collect();
        input.pods = input
            .snapshot
            .pods
            .iter()
            .map(|p| {
                let facts = PodFacts {
                    owner_kind: Some("ReplicaSet".into()),
                    start_time: Some(started),
                    ..PodFacts::default()
                };
                (p.key(), facts)
            })
            .collect::<BTreeMap<_, _>>();
        Cluster {
            input,
            peak_pods,
            peak_cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karp_core::resources::Resources;

    fn small(workload: Workload, capacity: CapacityType) -> Cluster {
        let traces = Traces::embedded().unwrap();
        Fragmented::new(workload, capacity, Size::Nodes(12))
            .block_pods(120)
            .build(&traces, &aws::aws_instance_types())
    }

    /// Every pod is bound to a node that exists, and no node is over its allocatable.
    fn assert_valid(c: &Cluster) {
        let nodes: BTreeMap<&str, &karp_core::cluster::Node> = c
            .input
            .snapshot
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n))
            .collect();
        let mut used: BTreeMap<&str, Resources> = BTreeMap::new();
        for p in &c.input.snapshot.pods {
            let n = p.node_name.as_deref().expect("every pod is bound");
            assert!(nodes.contains_key(n), "{} is bound to missing {n}", p.key());
            used.entry(n).or_default().add_assign(&p.requests);
            assert!(c.input.pods.contains_key(&p.key()));
        }
        for (n, u) in used {
            let node = nodes[n];
            assert!(u.fits_in(&node.allocatable), "{n} is over its allocatable");
        }
        for n in &c.input.snapshot.nodes {
            let f = &c.input.nodes[&n.name];
            assert_eq!(f.offering.as_ref().map(|o| o.price), n.price);
        }
    }

    #[test]
    fn a_fragmented_v2017_cluster_is_valid_and_keeps_forty_percent() {
        let c = small(Workload::AlibabaV2017, CapacityType::OnDemand);
        assert_eq!(c.nodes(), 12);
        assert_valid(&c);
        let expected = (c.peak_pods as f64 * KEEP_FRACTION).round() as usize;
        assert_eq!(c.pods(), expected);
        assert!(c.cost_per_hour() > 0.0);
    }

    #[test]
    fn a_fragmented_gpu_spot_cluster_is_valid() {
        let c = small(Workload::AlibabaGpuV2023, CapacityType::Spot);
        assert_eq!(c.nodes(), 12);
        assert_valid(&c);
        assert!(c.input.nodes.values().all(|f| f
            .offering
            .as_ref()
            .is_some_and(|o| o.capacity_type == "spot")));
    }

    #[test]
    fn the_same_recipe_gives_the_same_cluster() {
        let a = small(Workload::AlibabaV2017, CapacityType::Spot);
        let b = small(Workload::AlibabaV2017, CapacityType::Spot);
        assert_eq!(a.input.snapshot.pods, b.input.snapshot.pods);
        assert_eq!(a.input.nodes, b.input.nodes);
    }
}
