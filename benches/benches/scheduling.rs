//! Karpenter's scheduling benchmark on karp's scheduler: pods per second and nodes per pass.
//!
//! Run with `cargo bench -p karp-benches --bench scheduling`. Each size prints the number of
//! NodeClaims and pods scheduled once; criterion reports throughput in pods (elements) per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use karp_core::scheduling::{schedule, SchedulerOptions};

fn scheduling(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduling");
    group.sample_size(10);
    let options = SchedulerOptions::default();
    for &n in &[1usize, 50, 100, 500, 1000, 2000, 5000, 10000, 20000] {
        let snapshot = karp_benches::karpenter_benchmark(n, 42);
        let first = schedule(&snapshot, &options);
        let scheduled: usize = first.new_nodeclaims.iter().map(|c| c.pods.len()).sum();
        eprintln!(
            "pods={n} scheduled={scheduled} nodes={} unschedulable={}",
            first.new_nodeclaims.len(),
            first.unschedulable.len()
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &snapshot, |b, s| {
            b.iter(|| schedule(s, &options))
        });
    }
    group.finish();
}

criterion_group!(benches, scheduling);
criterion_main!(benches);
