//! Run scheduling passes of Karpenter's benchmark workload (for profilers):
//! `cargo run --release -p karp-benches --example schedule_once -- 5000 [REPEATS]`.
//! With REPEATS (default 1) the pass runs that many times on the same snapshot and the median
//! time is printed.

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let repeats: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let snapshot = karp_benches::karpenter_benchmark(n, 42);
    let mut times = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats {
        let start = std::time::Instant::now();
        let r = karp_core::scheduling::schedule(
            &snapshot,
            &karp_core::scheduling::SchedulerOptions::default(),
        );
        times.push(start.elapsed().as_secs_f64());
        last = Some(r);
    }
    times.sort_by(f64::total_cmp);
    let secs = times[times.len() / 2];
    let r = last.expect("at least one pass");
    println!(
        "pods={n} nodes={} unschedulable={} attempts={} secs={secs:.4} pods_per_sec={:.0}",
        r.new_nodeclaims.len(),
        r.unschedulable.len(),
        r.stats.attempts,
        n as f64 / secs
    );
}
