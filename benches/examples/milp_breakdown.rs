//! Where the MILP packer's time goes, measured from the outside (for `docs/solver.md`):
//! `cargo run --release -p karp-benches --example milp_breakdown -- alibaba-v2017 on-demand 1000`.
//!
//! Prints the time of Karpenter's scheduler alone (the MILP's FFD start), of the lower bound alone
//! (`karp_core::packing::lower_bound` on the FFD plan: per-unit bound plus the pattern LP bound by
//! column generation), and of `Milp::pack` with a near-zero and with the default integer-master
//! time limit, with the packer's counters.

use std::time::Instant;

use karp_benches::aws::{aws_instance_types, CapacityType};
use karp_benches::compare::Case;
use karp_benches::traces::Traces;
use karp_benches::Workload;
use karp_core::packing::{lower_bound, Milp, Packer};
use karp_core::scheduling::{schedule, SchedulerOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let workload: Workload = args
        .next()
        .unwrap_or_else(|| "alibaba-v2017".into())
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let capacity: CapacityType = args
        .next()
        .unwrap_or_else(|| "on-demand".into())
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let traces = Traces::load(Traces::dir_from_env().as_deref()).unwrap_or_else(|e| panic!("{e}"));
    let case = Case {
        workload,
        capacity,
        pods,
    };
    let snapshot = case.snapshot(&traces, aws_instance_types(), 42);

    let t = Instant::now();
    let ffd = schedule(&snapshot, &SchedulerOptions::default());
    let schedule_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let bound = lower_bound(&snapshot, &ffd);
    let bound_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{workload} {capacity} {pods}: ffd schedule {schedule_ms:.1} ms (cost {:.3}, {} nodes), lower_bound {bound_ms:.1} ms ({bound:.3})",
        ffd.cost_per_hour(),
        ffd.new_nodeclaims.len()
    );
    for limit in [0.001, Milp::default().time_limit_secs, 10.0] {
        let milp = Milp {
            time_limit_secs: limit,
            ..Milp::default()
        };
        let t = Instant::now();
        let r = milp.pack(&snapshot);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "  milp time_limit {limit} s: {ms:.1} ms, cost {:.3}, nodes {}, bound {:.3}, plan from {}, fallback {}, {:?}",
            r.results.cost_per_hour(),
            r.results.new_nodeclaims.len(),
            r.lower_bound_per_hour,
            r.packer,
            r.fallback.as_deref().unwrap_or("-"),
            r.stats
        );
    }
}
