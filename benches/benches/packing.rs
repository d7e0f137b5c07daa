//! Solve time of the packers on a trace sample with the AWS catalog.
//!
//! Run with `cargo bench -p karp-benches --bench packing`. Each size packs a sample of the
//! Alibaba v2017 batch trace (embedded sample, seed 42) onto the built-in us-east-1 catalog with an
//! on-demand NodePool, with FFD (Karpenter's scheduler plus the lower bound) and with the MILP
//! (default settings: 1.5 s time limit on the integer master). Before timing, each size prints
//! the cost, bound and fallback of one run on stderr.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use karp_benches::aws::{aws_instance_types, CapacityType};
use karp_benches::compare::Case;
use karp_benches::traces::Traces;
use karp_benches::Workload;
use std::sync::Arc;
use std::time::Instant;

use karp_core::packing::{Clock, Ffd, Milp, Packer};

fn packing(c: &mut Criterion) {
    let traces = Traces::embedded().expect("embedded trace samples parse");
    let types = aws_instance_types();
    let mut group = c.benchmark_group("packing");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    let epoch = Instant::now();
    let packers: [(&str, Box<dyn Packer>); 2] = [
        ("ffd", Box::new(Ffd::default())),
        (
            "milp",
            Box::new(
                Milp::default().with_clock(Clock(Arc::new(move || epoch.elapsed().as_secs_f64()))),
            ),
        ),
    ];
    for &n in &[100usize, 1000, 5000] {
        let case = Case {
            workload: Workload::AlibabaV2017,
            capacity: CapacityType::OnDemand,
            pods: n,
        };
        let snapshot = case.snapshot(&traces, types.clone(), 42);
        group.throughput(Throughput::Elements(n as u64));
        for (name, packer) in &packers {
            let r = packer.pack(&snapshot);
            eprintln!(
                "{name} pods={n} cost={:.3} bound={:.3} nodes={} plan_from={} fallback={}",
                r.results.cost_per_hour(),
                r.lower_bound_per_hour,
                r.results.new_nodeclaims.len(),
                r.packer,
                r.fallback.as_deref().unwrap_or("-")
            );
            group.bench_with_input(BenchmarkId::new(*name, n), &snapshot, |b, s| {
                b.iter(|| packer.pack(s))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, packing);
criterion_main!(benches);
