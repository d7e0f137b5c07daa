//! Run packers side by side on one snapshot and tabulate cost, bound, nodes and time.
//!
//! ```no_run
//! use karp_benches::aws::{aws_instance_types, CapacityType};
//! use karp_benches::compare::{run_case, Case};
//! use karp_benches::{Rng, Workload};
//! use karp_core::packing::{Ffd, Packer};
//!
//! let traces = karp_benches::traces::Traces::embedded().unwrap();
//! let case = Case { workload: Workload::AlibabaV2017, capacity: CapacityType::OnDemand, pods: 100 };
//! let snapshot = case.snapshot(&traces, aws_instance_types(), 42);
//! let packers: Vec<Box<dyn Packer>> = vec![Box::new(Ffd::default())];
//! let rows = run_case(&case, &snapshot, &packers);
//! println!("{}", karp_benches::compare::table(&rows));
//! ```

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use karp_core::cloud::InstanceType;
use karp_core::cluster::ClusterSnapshot;
use karp_core::packing::{PackStats, Packer};

use crate::aws::{self, CapacityType};
use crate::traces::Traces;
use crate::{Rng, Workload};

/// One benchmark case: a workload, a capacity-type variant of the NodePool, a pod count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// The workload.
    pub workload: Workload,
    /// The NodePool's capacity type.
    pub capacity: CapacityType,
    /// Pending pods.
    pub pods: usize,
}

impl Case {
    /// The case's snapshot over `types` (one AWS-style NodePool, no nodes), pods drawn with `seed`.
    #[must_use]
    pub fn snapshot(
        &self,
        traces: &Traces,
        types: Vec<Arc<InstanceType>>,
        seed: u64,
    ) -> ClusterSnapshot {
        let pods = self.workload.pods(self.pods, traces, &mut Rng::new(seed));
        aws::snapshot(pods, self.capacity, self.workload.gpu(), types)
    }
}

/// One packer's result on one case.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Workload name.
    pub workload: String,
    /// `on-demand` or `spot`.
    pub capacity: String,
    /// Pending pods in the snapshot.
    pub pods: usize,
    /// The packer that was run (`ffd`, `milp`).
    pub packer: String,
    /// The packer whose plan was returned (`ffd` when the MILP fell back).
    pub plan_from: String,
    /// Hourly cost of the new NodeClaims, USD.
    pub cost: f64,
    /// The packer's own lower bound, USD per hour.
    pub own_lower_bound: f64,
    /// The best lower bound of all packers on this case, USD per hour.
    pub lower_bound: f64,
    /// `cost / lower_bound` (infinite when the bound is 0 and the cost is not).
    pub ratio: f64,
    /// New NodeClaims.
    pub nodes: usize,
    /// Pods left unschedulable.
    pub unschedulable: usize,
    /// Wall-clock time of `Packer::pack`, milliseconds.
    pub millis: f64,
    /// Why the MILP plan was not used, if it was not.
    pub fallback: Option<String>,
    /// The packer's counters.
    pub stats: PackStats,
}

/// Run every packer on `snapshot` (timing `pack` with [`Instant`]) and fill in the shared bound.
#[must_use]
pub fn run_case(case: &Case, snapshot: &ClusterSnapshot, packers: &[Box<dyn Packer>]) -> Vec<Row> {
    let mut rows: Vec<Row> = packers
        .iter()
        .map(|p| {
            let start = Instant::now();
            let r = p.pack(snapshot);
            let millis = start.elapsed().as_secs_f64() * 1000.0;
            Row {
                workload: case.workload.name().to_string(),
                capacity: case.capacity.as_str().to_string(),
                pods: snapshot.pending().len(),
                packer: p.name().to_string(),
                plan_from: r.packer.to_string(),
                cost: r.results.cost_per_hour(),
                own_lower_bound: r.lower_bound_per_hour,
                lower_bound: 0.0,
                ratio: 0.0,
                nodes: r.results.new_nodeclaims.len(),
                unschedulable: r.results.unschedulable.len(),
                millis,
                fallback: r.fallback,
                stats: r.stats,
            }
        })
        .collect();
    let bound = rows.iter().map(|r| r.own_lower_bound).fold(0.0, f64::max);
    for r in &mut rows {
        r.lower_bound = bound;
        r.ratio = if bound > 0.0 {
            r.cost / bound
        } else if r.cost > 0.0 {
            f64::INFINITY
        } else {
            1.0
        };
    }
    rows
}

/// The rows as a fixed-width text table (one line per row, a header first).
#[must_use]
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:<9} {:>5} {:<6} {:>10} {:>10} {:>7} {:>6} {:>5} {:>9}  fallback",
        "workload",
        "capacity",
        "pods",
        "packer",
        "cost $/h",
        "bound $/h",
        "ratio",
        "nodes",
        "unsch",
        "ms"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<18} {:<9} {:>5} {:<6} {:>10.3} {:>10.3} {:>7.4} {:>6} {:>5} {:>9.1}  {}",
            r.workload,
            r.capacity,
            r.pods,
            r.packer,
            r.cost,
            r.lower_bound,
            r.ratio,
            r.nodes,
            r.unschedulable,
            r.millis,
            r.fallback.as_deref().unwrap_or("-"),
        );
    }
    out
}
