//! Replay a trace's arrivals and departures through provisioning and disruption, in simulated
//! time (the `replay` harness; see `docs/replay.md`).
//!
//! [`arrivals`] reads the start and end times of the trace samples (v2017 tasks: `create_s`,
//! `end_s`, each task's pods arriving and leaving together; GPU v2023 pods: `creation_s`,
//! `deletion_s`) and keeps a deterministic fraction of them. A [`Run`] then plays them in steps
//! of trace time. At each step, in this order:
//!
//! 1. pods whose end time has passed leave (pending or running);
//! 2. pods that arrived since the last step become pending;
//! 3. the pending pods are provisioned with the run's [`Packer`] on the cluster as it is: pods
//!    the plan places on existing nodes are bound there, every new NodeClaim becomes a node at
//!    once ([`launched_node`], initialized now) with its pods bound; pods placed nowhere stay
//!    pending for the next step;
//! 4. one disruption pass ([`plan`]) in the run's [`Mode`] (default savings threshold for
//!    `global`); its command, if any, is [`apply`]'d at once (the 15 s validation delay and the
//!    drain are not modelled).
//!
//! Cost is charged per step: the hourly price of the nodes after the step times the step's
//! length. A step where nothing arrived or left, no pod is pending and the previous pass did
//! nothing skips provisioning and disruption: the cluster is the same and the pass would find
//! the same (no `consolidateAfter` windows or budget schedules are set), which keeps long idle
//! stretches of the GPU trace cheap.
//!
//! ```no_run
//! use karp_benches::aws::{aws_instance_types, CapacityType};
//! use karp_benches::replay::{arrivals, Run, Trace, TraceWindow};
//! use karp_benches::traces::Traces;
//! use karp_core::disruption::Mode;
//! use karp_core::packing::Ffd;
//!
//! let traces = Traces::embedded().unwrap();
//! let window = TraceWindow { start: 0, end: 3600, fraction: 0.05, max_pods_per_task: 20, seed: 42 };
//! let events = arrivals(Trace::V2017, &window).unwrap();
//! let mut run = Run::new("ffd/karpenter", Box::new(Ffd::default()), Mode::Karpenter,
//!     karp_benches::aws::nodepool(CapacityType::OnDemand, false, aws_instance_types()));
//! let mut next = 0;
//! for t in (0..=3600).step_by(60) {
//!     next = run.step(t, 60, &events, next);
//! }
//! println!("{}", run.summary(3600).cost);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use karp_core::cluster::NodePool;
use karp_core::disruption::stable::launched_node;
use karp_core::disruption::{
    apply, plan, DisruptionInput, DisruptionOptions, Mode, NodeClaimFacts, NodeOffering, PodFacts,
    Timestamp,
};
use karp_core::packing::Packer;
use karp_core::pod::Pod;
use karp_core::testing::pod;

use crate::disruption::{cost_per_hour, now};
use crate::traces::{TraceError, GPU_V2023_SAMPLE, V2017_SAMPLE};
use crate::Rng;

/// Which trace to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// Alibaba v2017 batch tasks (17 h of trace time).
    V2017,
    /// Alibaba GPU v2023 pods (about 150 days of trace time).
    GpuV2023,
}

impl Trace {
    /// `alibaba-v2017` or `alibaba-gpu-v2023`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Trace::V2017 => "alibaba-v2017",
            Trace::GpuV2023 => "alibaba-gpu-v2023",
        }
    }

    /// Whether its pods ask for GPUs.
    #[must_use]
    pub fn gpu(self) -> bool {
        self == Trace::GpuV2023
    }
}

impl std::str::FromStr for Trace {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Trace::V2017, Trace::GpuV2023]
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown trace {s:?} (alibaba-v2017, alibaba-gpu-v2023)"))
    }
}

/// What part of a trace to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceWindow {
    /// Trace seconds: pods arriving before are ignored.
    pub start: i64,
    /// Trace seconds: pods arriving at or after are ignored.
    pub end: i64,
    /// Fraction of the tasks (v2017) or pods (GPU) kept, drawn with `seed`.
    pub fraction: f64,
    /// At most this many pods of one v2017 task.
    pub max_pods_per_task: u64,
    /// Seed of the draw.
    pub seed: u64,
}

/// One pod of the trace and its lifetime, in trace seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// The pod (pending, no node).
    pub pod: Pod,
    /// When it is created.
    pub arrive: i64,
    /// When it goes away.
    pub depart: i64,
}

fn cell<'a>(file: &str, line: usize, cells: &[&'a str], i: usize) -> Result<&'a str, TraceError> {
    cells.get(i).copied().ok_or_else(|| TraceError {
        file: file.to_string(),
        line: Some(line),
        reason: format!("expected at least {} cells, found {}", i + 1, cells.len()),
    })
}

fn int(file: &str, line: usize, cells: &[&str], i: usize) -> Result<i64, TraceError> {
    let c = cell(file, line, cells, i)?;
    c.parse().map_err(|_| TraceError {
        file: file.to_string(),
        line: Some(line),
        reason: format!("column {}: not an integer: {c:?}", i + 1),
    })
}

/// The pods of the embedded sample of `trace` arriving inside `window`, sorted by arrival time
/// (then name). A pod whose end time is unknown or not after its arrival lives one second.
///
/// # Errors
/// [`TraceError`] when the sample lacks a column or a cell is not an integer.
pub fn arrivals(trace: Trace, window: &TraceWindow) -> Result<Vec<Arrival>, TraceError> {
    let mut rng = Rng::new(window.seed);
    let mut out = Vec::new();
    let keep = |rng: &mut Rng, t: i64| {
        let drawn = rng.unit() < window.fraction;
        drawn && t >= window.start && t < window.end
    };
    match trace {
        Trace::V2017 => {
            let file = "alibaba_v2017_batch_tasks_sample.csv";
            let cols = [
                "task_id",
                "instances",
                "cpu_millicores",
                "memory_mib_est",
                "create_s",
                "end_s",
            ];
            for (line, c) in crate::traces::rows(file, V2017_SAMPLE, &cols)? {
                let arrive = int(file, line, &c, 4)?;
                if !keep(&mut rng, arrive) {
                    continue;
                }
                let instances = int(file, line, &c, 1)?.max(0) as u64;
                let (cpu, mem) = (int(file, line, &c, 2)?, int(file, line, &c, 3)?);
                if cpu <= 0 && mem <= 0 {
                    continue;
                }
                let depart = int(file, line, &c, 5)?.max(arrive + 1);
                for i in 0..instances.min(window.max_pods_per_task) {
                    let p = pod(&format!("{}-{i}", c[0]))
                        .cpu(&format!("{cpu}m"))
                        .memory(&format!("{mem}Mi"))
                        .build();
                    out.push(Arrival {
                        pod: p,
                        arrive,
                        depart,
                    });
                }
            }
        }
        Trace::GpuV2023 => {
            let file = "alibaba_gpu_v2023_pods_sample.csv";
            let cols = [
                "pod_id",
                "cpu_millicores",
                "memory_mib",
                "gpu_count",
                "creation_s",
                "deletion_s",
            ];
            for (line, c) in crate::traces::rows(file, GPU_V2023_SAMPLE, &cols)? {
                let arrive = int(file, line, &c, 4)?;
                if !keep(&mut rng, arrive) {
                    continue;
                }
                let (cpu, mem, gpu) = (
                    int(file, line, &c, 1)?,
                    int(file, line, &c, 2)?,
                    int(file, line, &c, 3)?,
                );
                if cpu <= 0 && mem <= 0 {
                    continue;
                }
                let depart = c[5].parse::<i64>().unwrap_or(arrive + 1).max(arrive + 1);
                let mut b = pod(c[0])
                    .cpu(&format!("{cpu}m"))
                    .memory(&format!("{mem}Mi"));
                if gpu > 0 {
                    b = b.resource(crate::aws::NVIDIA_GPU, &gpu.to_string());
                }
                out.push(Arrival {
                    pod: b.build(),
                    arrive,
                    depart,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        a.arrive
            .cmp(&b.arrive)
            .then_with(|| a.pod.name.cmp(&b.pod.name))
    });
    Ok(out)
}

/// One point of a run's time series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Trace seconds.
    pub t: i64,
    /// Hourly cost of the nodes after the step.
    pub cost_per_hour: f64,
    /// Pods pending after the step.
    pub pending: usize,
    /// Nodes after the step.
    pub nodes: usize,
}

/// What a run reports at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The run's name.
    pub name: String,
    /// Node-hours cost, USD.
    pub cost: f64,
    /// Pods moved by disruption commands.
    pub moves: usize,
    /// Disruption commands applied.
    pub commands: usize,
    /// Nodes launched (provisioning and replacements).
    pub launched: usize,
    /// Median pending time of the placed pods, seconds.
    pub p50_pending: i64,
    /// 99th percentile pending time of the placed pods, seconds.
    pub p99_pending: i64,
    /// Pods that left before they were placed.
    pub never_placed: usize,
    /// Wall time spent in the run's steps, seconds.
    pub wall_secs: f64,
}

/// One provisioning × disruption combination played over a trace.
pub struct Run {
    /// Name in tables and plots (`ffd/karpenter`, ...).
    pub name: String,
    packer: Box<dyn Packer>,
    options: DisruptionOptions,
    input: DisruptionInput,
    /// Pending pods by key: the pod and its arrival time.
    pending: BTreeMap<String, (Pod, i64)>,
    /// Departure time of every pod that arrived, by key.
    departs: BTreeMap<String, i64>,
    last_acted: bool,
    next_node: usize,
    cost: f64,
    moves: usize,
    commands: usize,
    launched: usize,
    waits: Vec<i64>,
    never_placed: usize,
    wall_secs: f64,
    /// The time series, one point per step.
    pub series: Vec<Point>,
}

impl Run {
    /// A run on an empty cluster with one NodePool.
    #[must_use]
    pub fn new(name: &str, packer: Box<dyn Packer>, mode: Mode, pool: NodePool) -> Self {
        let mut input = DisruptionInput::default();
        input.snapshot.node_pools = vec![pool];
        Run {
            name: name.to_string(),
            packer,
            options: DisruptionOptions::default().mode(mode),
            input,
            pending: BTreeMap::new(),
            departs: BTreeMap::new(),
            last_acted: false,
            next_node: 0,
            cost: 0.0,
            moves: 0,
            commands: 0,
            launched: 0,
            waits: Vec::new(),
            never_placed: 0,
            wall_secs: 0.0,
            series: Vec::new(),
        }
    }

    /// Turn the `SpotToSpotConsolidation` gate on or off.
    #[must_use]
    pub fn spot_to_spot(mut self, on: bool) -> Self {
        self.options = self.options.spot_to_spot(on);
        self
    }

    fn at(t: i64) -> Timestamp {
        // Trace times start slightly before 0 (v2017: -1078 s); shift by a day.
        now().plus(Duration::from_secs((t + 86_400).max(0) as u64))
    }

    /// Play the step ending at trace time `t` (length `step` seconds): `events[next..]` are the
    /// arrivals not yet seen; returns the index of the first arrival after `t`.
    pub fn step(&mut self, t: i64, step: i64, events: &[Arrival], next: usize) -> usize {
        let started = std::time::Instant::now();
        let ts = Self::at(t);
        // 1. departures.
        let gone: Vec<String> = self
            .departs
            .iter()
            .filter(|(_, &d)| d <= t)
            .map(|(k, _)| k.clone())
            .collect();
        let changed_by_departures = !gone.is_empty();
        for k in &gone {
            self.departs.remove(k);
            if self.pending.remove(k).is_some() {
                self.never_placed += 1;
            }
            self.input.pods.remove(k);
        }
        if changed_by_departures {
            let gone: std::collections::BTreeSet<&String> = gone.iter().collect();
            self.input
                .snapshot
                .pods
                .retain(|p| !gone.contains(&p.key()));
        }
        // 2. arrivals.
        let mut i = next;
        while i < events.len() && events[i].arrive <= t {
            let e = &events[i];
            if e.depart > t {
                self.pending.insert(e.pod.key(), (e.pod.clone(), e.arrive));
                self.departs.insert(e.pod.key(), e.depart);
            }
            i += 1;
        }
        let idle = !changed_by_departures && self.pending.is_empty() && !self.last_acted;
        if !idle {
            self.provision(t, ts);
            self.disrupt(ts);
        }
        let cost = cost_per_hour(&self.input);
        self.cost += cost * step as f64 / 3600.0;
        self.series.push(Point {
            t,
            cost_per_hour: cost,
            pending: self.pending.len(),
            nodes: self.input.snapshot.nodes.len(),
        });
        self.wall_secs += started.elapsed().as_secs_f64();
        i
    }

    /// Step 3: pack the pending pods and bind them.
    fn provision(&mut self, t: i64, ts: Timestamp) {
        if self.pending.is_empty() {
            return;
        }
        let mut snapshot = self.input.snapshot.clone();
        let first = snapshot.pods.len();
        let keys: Vec<String> = self.pending.keys().cloned().collect();
        snapshot
            .pods
            .extend(self.pending.values().map(|(p, _)| p.clone()));
        let r = self.packer.pack(&snapshot).results;
        let mut placed: BTreeMap<usize, String> = BTreeMap::new();
        for e in &r.existing {
            for &p in &e.pods {
                placed.insert(p, e.node.clone());
            }
        }
        for claim in &r.new_nodeclaims {
            let name = format!("node-{:06}", self.next_node);
            self.next_node += 1;
            self.launched += 1;
            self.input.snapshot.nodes.push(launched_node(claim, &name));
            let mut facts = NodeClaimFacts::new(&claim.nodepool, ts);
            facts.offering = Some(NodeOffering {
                instance_type: claim.cheapest.instance_type.clone(),
                zone: claim.cheapest.zone.clone(),
                capacity_type: claim.cheapest.capacity_type.clone(),
                price: claim.cheapest.price,
            });
            self.input.nodes.insert(name.clone(), facts);
            for &p in &claim.pods {
                placed.insert(p, name.clone());
            }
        }
        for (idx, node) in placed {
            let Some(key) = idx.checked_sub(first).and_then(|k| keys.get(k)) else {
                continue; // a bound pod the packer reported again
            };
            let Some((mut p, arrived)) = self.pending.remove(key) else {
                continue;
            };
            self.waits.push(t - arrived);
            p.node_name = Some(node);
            self.input.pods.insert(
                p.key(),
                PodFacts {
                    owner_kind: Some("ReplicaSet".into()),
                    start_time: Some(ts),
                    ..PodFacts::default()
                },
            );
            self.input.snapshot.pods.push(p);
        }
    }

    /// Step 4: one disruption pass, its command applied at once.
    fn disrupt(&mut self, ts: Timestamp) {
        let out = plan(&self.input, ts, &self.options);
        self.last_acted = false;
        let Some(command) = out.commands.first() else {
            return;
        };
        self.last_acted = true;
        self.commands += 1;
        self.moves += command.moves.len();
        self.launched += command.replacements.len();
        let base = self.next_node;
        self.next_node += command.replacements.len();
        let name = |i: usize| format!("node-{:06}", base + i);
        self.input = apply(&self.input, command, ts, &name);
    }

    /// The run's figures; `horizon` is the trace time at which pods still pending stop waiting
    /// (they are counted with their wait so far).
    #[must_use]
    pub fn summary(&self, horizon: i64) -> Summary {
        let mut waits = self.waits.clone();
        waits.extend(self.pending.values().map(|(_, a)| horizon - a));
        waits.sort_unstable();
        let pct = |q: f64| -> i64 {
            if waits.is_empty() {
                return 0;
            }
            let i = ((waits.len() as f64 * q).ceil() as usize).clamp(1, waits.len()) - 1;
            waits[i]
        };
        Summary {
            name: self.name.clone(),
            cost: self.cost,
            moves: self.moves,
            commands: self.commands,
            launched: self.launched,
            p50_pending: pct(0.5),
            p99_pending: pct(0.99),
            never_placed: self.never_placed,
            wall_secs: self.wall_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_samples_have_arrival_and_departure_times() {
        let w = TraceWindow {
            start: 0,
            end: 600,
            fraction: 1.0,
            max_pods_per_task: 2,
            seed: 1,
        };
        let v = arrivals(Trace::V2017, &w).unwrap();
        assert!(!v.is_empty());
        assert!(v
            .iter()
            .all(|a| (0..600).contains(&a.arrive) && a.depart > a.arrive));
        assert!(v.windows(2).all(|p| p[0].arrive <= p[1].arrive));
        let g = arrivals(
            Trace::GpuV2023,
            &TraceWindow {
                end: 1_000_000,
                ..w
            },
        )
        .unwrap();
        assert!(!g.is_empty());
    }
}
