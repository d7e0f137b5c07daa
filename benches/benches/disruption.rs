//! Decision time of one disruption pass on fragmented clusters made from the trace samples.
//!
//! Run with `cargo bench -p karp-benches --bench disruption`. Each size is a cluster of that many
//! nodes provisioned by FFD for a sample of the Alibaba v2017 batch trace on the built-in
//! us-east-1 catalog (on-demand pool, seed 42), with 40 % of its pods kept
//! ([`karp_benches::disruption`]); one `plan` per iteration, in `karpenter` mode and in `global`
//! mode with the default savings threshold. Before timing, each size prints the cluster and the
//! command of one run on stderr. The large sizes (1 000 and 5 000 nodes in both workloads) are
//! measured by the `disrupt-compare` harness (`docs/disrupt.md`).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use karp_benches::aws::{aws_instance_types, CapacityType};
use karp_benches::disruption::{now, Fragmented, Size};
use karp_benches::traces::Traces;
use karp_benches::Workload;
use karp_core::disruption::{plan, DisruptionOptions, Mode};

fn disruption(c: &mut Criterion) {
    let traces = Traces::embedded().expect("embedded trace samples parse");
    let types = aws_instance_types();
    let mut group = c.benchmark_group("disruption");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for &n in &[100usize, 1000] {
        let cluster = Fragmented::new(
            Workload::AlibabaV2017,
            CapacityType::OnDemand,
            Size::Nodes(n),
        )
        .build(&traces, &types);
        group.throughput(Throughput::Elements(n as u64));
        for mode in [Mode::Karpenter, Mode::Global] {
            let options = DisruptionOptions::default().mode(mode);
            let out = plan(&cluster.input, now(), &options);
            eprintln!(
                "{} nodes={} pods={} cost={:.2} command={}",
                mode.as_str(),
                cluster.nodes(),
                cluster.pods(),
                cluster.cost_per_hour(),
                out.commands.first().map_or_else(
                    || "none".to_string(),
                    |c| format!("{} of {} nodes", c.method.as_str(), c.candidates.len())
                )
            );
            group.bench_with_input(
                BenchmarkId::new(mode.as_str(), n),
                &cluster.input,
                |b, input| b.iter(|| plan(input, now(), &options)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, disruption);
criterion_main!(benches);
