//! Workload generators for karp's benchmarks.
//!
//! - [`karpenter_benchmark`]: Karpenter's own scheduling benchmark (below).
//! - [`Workload`]: the solver benchmark workloads: [`synthetic`] shapes and samples of public
//!   [`traces`], packed onto the built-in AWS catalog ([`aws`]) by the `solver-compare` harness
//!   ([`compare`]) and the `packing` criterion bench. See `docs/solver.md`.
//! - [`disruption`]: fragmented clusters made from the traces, for the disruption planner's
//!   `disruption` criterion bench and the `disrupt-compare` harness. See `docs/disrupt.md`.
//! - [`replay`]: a trace's arrivals and departures through provisioning and disruption in
//!   simulated time, for the `replay` harness, with its [`plot`]. See `docs/replay.md`.
//!
//! [`karpenter_benchmark`] reproduces the workload of Karpenter's scheduling benchmark
//! (`pkg/controllers/provisioning/scheduling/scheduling_benchmark_test.go`): 400 synthetic instance
//! types and a mix of plain, zonal-spread, hostname-spread, zonal self-affinity and hostname
//! anti-affinity pods.
//!
//! ```
//! let snapshot = karp_benches::karpenter_benchmark(100, 42);
//! assert_eq!(snapshot.pods.len(), 100);
//! assert_eq!(snapshot.node_pools[0].instance_types.len(), 400);
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use karp_core::cloud::{InstanceType, Offering};
use karp_core::cluster::{ClusterSnapshot, NodePool};
use karp_core::labels::{HOSTNAME, ZONE};
use karp_core::pod::Pod;
use karp_core::resources::Resources;
use karp_core::testing::pod;

pub mod args;
pub mod aws;
pub mod compare;
pub mod disruption;
pub mod plot;
pub mod replay;
pub mod synthetic;
pub mod traces;

use synthetic::Shape;
use traces::Traces;

/// A small deterministic generator (SplitMix64), so workloads are identical across runs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Karpenter's `fake.InstanceTypes(n)`: type `i` has `i+1` vCPU, `2(i+1)` GiB, `10(i+1)` pods,
/// spot offerings in zones 1–2 and on-demand in zones 1–3, priced `0.1·vCPU + 0.1·GiB`, with
/// 100m / 10Mi overhead.
#[must_use]
pub fn fake_instance_types(n: usize) -> Vec<Arc<InstanceType>> {
    (0..n)
        .map(|i| {
            let cpus = (i + 1) as i64;
            let mut capacity = Resources::new();
            capacity.cpu = cpus * 1000;
            capacity.memory = 2 * cpus * (1 << 30);
            capacity.pods = 10 * cpus;
            capacity.ephemeral_storage = 100 << 30;
            let mut overhead = Resources::new();
            overhead.cpu = 100;
            overhead.memory = 10 << 20;
            let price = 0.1 * cpus as f64 + 0.1 * (2 * cpus) as f64;
            let mut offerings = Vec::new();
            for z in ["test-zone-1", "test-zone-2"] {
                offerings.push(Offering::new(z, "spot", price));
            }
            for z in ["test-zone-1", "test-zone-2", "test-zone-3"] {
                offerings.push(Offering::new(z, "on-demand", price));
            }
            Arc::new(InstanceType::new(
                format!("fake-it-{i}"),
                &Default::default(),
                capacity,
                overhead,
                offerings,
            ))
        })
        .collect()
}

const LABEL_VALUES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
const CPU_MILLIS: [&str; 5] = ["100m", "250m", "500m", "1000m", "1500m"];
const MEMORY_MI: [&str; 6] = ["100Mi", "256Mi", "512Mi", "1024Mi", "2048Mi", "4096Mi"];

/// One pod of Karpenter's benchmark mix, before it is built (so the same draws give core pods
/// for the benches and Kubernetes manifests for `karp plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixPod {
    /// Name (`pod-<kind>-<i>`).
    pub name: String,
    /// 0 plain, 1 zonal spread, 2 hostname spread, 3 zonal self-affinity, 4 hostname
    /// anti-affinity.
    pub kind: usize,
    /// CPU request.
    pub cpu: &'static str,
    /// Memory request.
    pub memory: &'static str,
    /// The pod's own label value (`my-label`, or `my-affinity` for kind 3).
    pub own: &'static str,
    /// The value its spread constraint selects (kinds 1 and 2).
    pub selects: &'static str,
}

/// The five-way mix of [`diverse_pods`], as specs.
#[must_use]
pub fn mix_specs(count: usize, rng: &mut Rng) -> Vec<MixPod> {
    let per = count / 5;
    let mut out = Vec::with_capacity(count);
    let next = |rng: &mut Rng, kind: usize, i: usize| -> MixPod {
        let cpu = CPU_MILLIS[rng.below(CPU_MILLIS.len())];
        let memory = MEMORY_MI[rng.below(MEMORY_MI.len())];
        let (own, selects) = match kind {
            1 | 2 => (LABEL_VALUES[rng.below(7)], LABEL_VALUES[rng.below(7)]),
            4 => ("nginx", ""),
            _ => (LABEL_VALUES[rng.below(7)], ""),
        };
        MixPod {
            name: format!("pod-{kind}-{i}"),
            kind,
            cpu,
            memory,
            own,
            selects,
        }
    };
    for kind in 0..5 {
        for i in 0..per {
            out.push(next(rng, kind, i));
        }
    }
    for i in out.len()..count {
        out.push(next(rng, 0, i));
    }
    out
}

/// The five-way pod mix: plain, zonal spread, hostname spread, zonal self-affinity, hostname
/// anti-affinity (all sharing `app=nginx`), remainder plain.
#[must_use]
pub fn diverse_pods(count: usize, rng: &mut Rng) -> Vec<Pod> {
    mix_specs(count, rng)
        .into_iter()
        .map(|m| {
            let b = pod(&m.name).cpu(m.cpu).memory(m.memory);
            match m.kind {
                1 | 2 => {
                    let key = if m.kind == 1 { ZONE } else { HOSTNAME };
                    b.label("my-label", m.own)
                        .spread(key, 1, &[("my-label", m.selects)])
                }
                3 => b
                    .label("my-affinity", m.own)
                    .affinity(ZONE, &[("my-affinity", m.own)]),
                4 => b
                    .label("app", "nginx")
                    .anti_affinity(HOSTNAME, &[("app", "nginx")]),
                _ => b.label("my-label", m.own),
            }
            .build()
        })
        .collect()
}

/// The mix as Kubernetes Pod manifests (multi-document YAML, namespace `default`), for timing
/// `karp plan` on the path users take.
#[must_use]
pub fn mix_manifests(count: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(count * 400);
    for m in mix_specs(count, &mut rng) {
        let (labels, extra) = match m.kind {
            1 | 2 => (
                format!("my-label: {}", m.own),
                format!(
                    "  topologySpreadConstraints: [{{maxSkew: 1, topologyKey: {}, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{my-label: {}}}}}}}]\n",
                    if m.kind == 1 { ZONE } else { HOSTNAME },
                    m.selects
                ),
            ),
            3 => (
                format!("my-affinity: {}", m.own),
                format!(
                    "  affinity: {{podAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: [{{topologyKey: {ZONE}, labelSelector: {{matchLabels: {{my-affinity: {}}}}}}}]}}}}\n",
                    m.own
                ),
            ),
            4 => (
                "app: nginx".to_string(),
                format!(
                    "  affinity: {{podAntiAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: [{{topologyKey: {HOSTNAME}, labelSelector: {{matchLabels: {{app: nginx}}}}}}]}}}}\n"
                ),
            ),
            _ => (format!("my-label: {}", m.own), String::new()),
        };
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: default, labels: {{{labels}}}}}\nspec:\n  containers: [{{name: c, image: pause, resources: {{requests: {{cpu: {}, memory: {}}}}}}}]\n{extra}",
            m.name, m.cpu, m.memory
        ));
    }
    out
}

/// The whole benchmark snapshot: one NodePool over 400 fake types, `pods` pending pods.
#[must_use]
pub fn karpenter_benchmark(pods: usize, seed: u64) -> ClusterSnapshot {
    let mut rng = Rng::new(seed);
    ClusterSnapshot {
        node_pools: vec![NodePool::new("default", fake_instance_types(400))],
        pods: diverse_pods(pods, &mut rng),
        ..Default::default()
    }
}

/// A solver benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// A synthetic shape.
    Synthetic(Shape),
    /// Pods of the Alibaba v2017 batch-task trace ([`Traces::sample_v2017`]).
    AlibabaV2017,
    /// Pods of the Alibaba GPU v2023 trace ([`Traces::sample_gpu_v2023`]).
    AlibabaGpuV2023,
}

impl Workload {
    /// Every workload: the synthetic shapes, then the traces.
    pub const ALL: [Workload; 5] = [
        Workload::Synthetic(Shape::UniformSmall),
        Workload::Synthetic(Shape::Mixed),
        Workload::Synthetic(Shape::Bimodal),
        Workload::AlibabaV2017,
        Workload::AlibabaGpuV2023,
    ];

    /// The name used on the command line and in tables.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Workload::Synthetic(s) => s.name(),
            Workload::AlibabaV2017 => "alibaba-v2017",
            Workload::AlibabaGpuV2023 => "alibaba-gpu-v2023",
        }
    }

    /// Whether the workload asks for GPUs (its NodePool then allows the `g` and `p` categories).
    #[must_use]
    pub fn gpu(self) -> bool {
        matches!(self, Workload::AlibabaGpuV2023)
    }

    /// `count` pending pods of this workload.
    #[must_use]
    pub fn pods(self, count: usize, traces: &Traces, rng: &mut Rng) -> Vec<Pod> {
        match self {
            Workload::Synthetic(s) => s.pods(count, rng),
            Workload::AlibabaV2017 => traces.sample_v2017(count, rng),
            Workload::AlibabaGpuV2023 => traces.sample_gpu_v2023(count, rng),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?} (one of {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_as_manifests_is_the_mix_as_pods() {
        let pods = diverse_pods(25, &mut Rng::new(42));
        let yaml = mix_manifests(25, 42);
        let docs: Vec<&str> = yaml.split("---\n").filter(|d| !d.is_empty()).collect();
        assert_eq!(docs.len(), pods.len());
        for (doc, p) in docs.iter().zip(&pods) {
            assert!(doc.contains(&format!("name: {},", p.name)), "{doc}");
            // Every constraint of the core pod appears in its manifest.
            assert_eq!(
                doc.contains("topologySpreadConstraints"),
                !p.topology_spread.is_empty(),
                "{doc}"
            );
            assert_eq!(
                doc.contains("podAntiAffinity"),
                p.name.starts_with("pod-4-")
            );
            assert_eq!(doc.contains("podAffinity:"), p.name.starts_with("pod-3-"));
        }
    }
}
