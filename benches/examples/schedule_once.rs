//! Run one scheduling pass of Karpenter's benchmark workload (for profilers):
//! `cargo run --release -p karp-benches --example schedule_once -- 5000`.

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let snapshot = karp_benches::karpenter_benchmark(n, 42);
    let start = std::time::Instant::now();
    let r = karp_core::scheduling::schedule(
        &snapshot,
        &karp_core::scheduling::SchedulerOptions::default(),
    );
    let secs = start.elapsed().as_secs_f64();
    println!(
        "pods={n} nodes={} unschedulable={} secs={secs:.3} pods_per_sec={:.0}",
        r.new_nodeclaims.len(),
        r.unschedulable.len(),
        n as f64 / secs
    );
}
