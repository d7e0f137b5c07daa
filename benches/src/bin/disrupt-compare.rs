//! Disruption planning on fragmented clusters made from the trace samples: decision time of one
//! pass per mode, and the cost reached by passes until stable next to the lower bound.
//!
//! ```text
//! cargo run --release -p karp-benches --bin disrupt-compare -- \
//!     [--nodes 1000,5000] [--cost-pods 300] [--workloads alibaba-v2017,alibaba-gpu-v2023]
//!     [--capacity on-demand,spot] [--modes karpenter,global] [--seed 42] [--max-passes 500]
//!     [--skip-timing] [--skip-cost] [--profile] [--global-balanced-k 1|2|3|off]
//! ```
//!
//! Timing: for each workload, capacity type and `--nodes` size, a cluster of that many nodes
//! ([`Fragmented`], 40 % of the peak's pods kept) and the wall time of one `plan` per mode
//! (`global` with the default savings threshold). `--profile` adds, per case, the time of the
//! building blocks of a pass (candidates, one scheduling simulation, the lower bound).
//!
//! Cost: for each workload and capacity type, a cluster of `--cost-pods` kept pods, and
//! `plan_until_stable` per mode (`global` with threshold zero, the `SpotToSpotConsolidation`
//! gate on for spot pools): start cost, end cost per mode, the start's lower bound, ratios,
//! passes that acted, nodes disrupted, pods moved and wall time.

use karp_benches::args::{list, one, or_usage};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use karp_benches::aws::{aws_instance_types, CapacityType};
use karp_benches::disruption::{cost_per_hour, now, Cluster, Fragmented, Size, KEEP_FRACTION};
use karp_benches::traces::Traces;
use karp_benches::Workload;
use karp_core::disruption::{
    lower_bound_per_hour, plan, plan_until_stable, repacked_per_hour, DisruptionOptions,
    Justification, Mode, SavingsThreshold,
};

const USAGE: &str = "usage: disrupt-compare [--nodes 1000,5000] [--cost-pods N] \
[--workloads alibaba-v2017,alibaba-gpu-v2023] [--capacity on-demand,spot] \
[--modes karpenter,global] [--seed N] [--max-passes N] [--skip-timing] [--skip-cost] [--profile] [--global-balanced-k 1|2|3|off]";

/// Parsed command line.
struct Args {
    nodes: Vec<usize>,
    cost_pods: usize,
    workloads: Vec<Workload>,
    capacities: Vec<CapacityType>,
    modes: Vec<Mode>,
    seed: u64,
    max_passes: usize,
    timing: bool,
    cost: bool,
    profile: bool,
    justification: Justification,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        nodes: vec![1000, 5000],
        cost_pods: 300,
        workloads: vec![Workload::AlibabaV2017, Workload::AlibabaGpuV2023],
        capacities: CapacityType::ALL.to_vec(),
        modes: vec![Mode::Karpenter, Mode::Global],
        seed: 42,
        max_passes: 500,
        timing: true,
        cost: true,
        profile: false,
        justification: Justification::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => a.nodes = list(&flag, &value()?)?,
            "--cost-pods" => a.cost_pods = one(&flag, &value()?)?,
            "--workloads" => a.workloads = list(&flag, &value()?)?,
            "--capacity" => a.capacities = list(&flag, &value()?)?,
            "--modes" => a.modes = list(&flag, &value()?)?,
            "--seed" => a.seed = one(&flag, &value()?)?,
            "--max-passes" => a.max_passes = one(&flag, &value()?)?,
            "--skip-timing" => a.timing = false,
            "--skip-cost" => a.cost = false,
            "--profile" => a.profile = true,
            "--global-balanced-k" => a.justification = Justification::parse(&value()?)?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for w in &a.workloads {
        if !matches!(w, Workload::AlibabaV2017 | Workload::AlibabaGpuV2023) {
            return Err(format!("--workloads: {w} is not a trace workload"));
        }
    }
    Ok(a)
}

/// The options of a mode: `global` with `threshold`; the spot-to-spot gate on for spot pools.
fn options(mode: Mode, capacity: CapacityType, threshold: SavingsThreshold) -> DisruptionOptions {
    DisruptionOptions::default()
        .mode(mode)
        .min_savings(threshold)
        .spot_to_spot(capacity == CapacityType::Spot)
}

/// The cost runs' options: threshold zero and, for `global`, the `--justification` given.
fn cost_options(mode: Mode, capacity: CapacityType, j: Justification) -> DisruptionOptions {
    options(mode, capacity, SavingsThreshold::ZERO).justification(j)
}

fn millis(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Time the building blocks of one pass (see the module docs).
fn profile(cluster: &Cluster) {
    use karp_core::disruption::candidates;
    use karp_core::disruption::simulate;
    let input = &cluster.input;
    let t = Instant::now();
    let (cands, _) = candidates::evaluate(input, now());
    eprintln!(
        "    profile: candidates::evaluate {:.1} ms ({} candidates)",
        millis(t),
        cands.len()
    );
    let mut ordered: Vec<&candidates::Candidate> = cands.iter().collect();
    candidates::sort_by_savings_ratio(&mut ordered);
    let budget = cands.len().div_ceil(10);
    for k in [1usize, 10, 100, budget] {
        if ordered.len() < k {
            break;
        }
        let t = Instant::now();
        let sim = simulate::simulate(
            input,
            &ordered[..k],
            now(),
            &karp_core::scheduling::SchedulerOptions::default(),
        );
        let cold = millis(t);
        // The same simulation through a SchedulingCache another simulation of the pass filled
        // (a pass's simulations all share one).
        let cache = karp_core::scheduling::SchedulingCache::default();
        let placement = simulate::Placement {
            cache: Some(&cache),
            ..simulate::Placement::default()
        };
        let options = karp_core::scheduling::SchedulerOptions::default();
        let _ = simulate::simulate_with(input, &ordered[..1], now(), &options, placement);
        let t = Instant::now();
        let cached = simulate::simulate_with(input, &ordered[..k], now(), &options, placement);
        let warm = millis(t);
        assert_eq!(cached.results, sim.results, "the cache changed a decision");
        eprintln!(
            "    profile: one FFD simulation of {k} candidate(s) {cold:.1} ms, {warm:.1} ms with a warm cache ({:.1}x) ({} pods to move, {} new claims)",
            cold / warm.max(1e-9),
            sim.was_running.len(),
            sim.results.new_nodeclaims.len()
        );
    }
    let t = Instant::now();
    let bound = lower_bound_per_hour(input);
    eprintln!(
        "    profile: lower_bound_per_hour {:.1} ms (${bound:.2}/h)",
        millis(t)
    );
}

fn timing(args: &Args, traces: &Traces, types: &[std::sync::Arc<karp_core::cloud::InstanceType>]) {
    println!("## decision time of one pass (default threshold for global)");
    print!(
        "{:<18} {:<9} {:>6} {:>7} {:>10} {:>8}",
        "workload", "capacity", "nodes", "pods", "cost $/h", "build s"
    );
    for m in &args.modes {
        print!(" {:>14} {:>16}", format!("{} ms", m.as_str()), "command");
    }
    println!();
    for &w in &args.workloads {
        for &c in &args.capacities {
            for &n in &args.nodes {
                let t = Instant::now();
                let cluster = Fragmented::new(w, c, Size::Nodes(n))
                    .seed(args.seed)
                    .build(traces, types);
                let build = t.elapsed().as_secs_f64();
                print!(
                    "{:<18} {:<9} {:>6} {:>7} {:>10.2} {:>8.1}",
                    w.name(),
                    c.as_str(),
                    cluster.nodes(),
                    cluster.pods(),
                    cluster.cost_per_hour(),
                    build
                );
                let _ = std::io::stdout().flush();
                for &m in &args.modes {
                    let opts = options(m, c, SavingsThreshold::DEFAULT);
                    let t = Instant::now();
                    let out = plan(&cluster.input, now(), &opts);
                    let ms = millis(t);
                    let what = out.commands.first().map_or_else(
                        || "none".to_string(),
                        |c| format!("{} {}n", c.method.as_str(), c.candidates.len()),
                    );
                    print!(" {ms:>14.1} {what:>16}");
                    let _ = std::io::stdout().flush();
                }
                println!();
                if args.profile {
                    profile(&cluster);
                }
            }
        }
    }
}

/// One mode's run until stable.
struct Run {
    end: f64,
    passes: usize,
    nodes_disrupted: usize,
    pods_moved: usize,
    secs: f64,
}

fn until_stable(cluster: &Cluster, opts: &DisruptionOptions, max_passes: usize) -> Run {
    let t = Instant::now();
    let passes = plan_until_stable(&cluster.input, now(), opts, max_passes);
    let secs = t.elapsed().as_secs_f64();
    let mut run = Run {
        end: cost_per_hour(&cluster.input),
        passes: 0,
        nodes_disrupted: 0,
        pods_moved: 0,
        secs,
    };
    for p in &passes {
        for c in &p.plan.commands {
            run.passes += 1;
            run.nodes_disrupted += c.candidates.len();
            run.pods_moved += c.moves.len();
        }
    }
    if let Some(last) = passes.last() {
        // The last pass ran on the final state (it acted only when max_passes cut it short).
        run.end = last.plan.cost.after_per_hour;
    }
    run
}

fn cost(args: &Args, traces: &Traces, types: &[std::sync::Arc<karp_core::cloud::InstanceType>]) {
    println!(
        "## cost until stable ({} kept pods of a peak of {}; global threshold zero, justification {:?}; spot-to-spot on for spot)",
        args.cost_pods,
        (args.cost_pods as f64 / KEEP_FRACTION).round(),
        args.justification
    );
    println!(
        "{:<18} {:<9} {:>5} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7}  {:<32} {:<32}",
        "workload",
        "capacity",
        "nodes",
        "pods",
        "start $/h",
        "bound $/h",
        "milp $/h",
        "karp $/h",
        "glob $/h",
        "k/bound",
        "g/bound",
        "g/k",
        "karpenter passes/nodes/moves/s",
        "global passes/nodes/moves/s"
    );
    for &w in &args.workloads {
        for &c in &args.capacities {
            let peak = (args.cost_pods as f64 / KEEP_FRACTION).round() as usize;
            let cluster = Fragmented::new(w, c, Size::PeakPods(peak))
                .seed(args.seed)
                .build(traces, types);
            let start = cluster.cost_per_hour();
            let bound = lower_bound_per_hour(&cluster.input);
            let scratch = DisruptionOptions::default()
                .milp
                .map_or(f64::NAN, |m| repacked_per_hour(&cluster.input, &m));
            let k = until_stable(
                &cluster,
                &cost_options(Mode::Karpenter, c, args.justification),
                args.max_passes,
            );
            let g = until_stable(
                &cluster,
                &cost_options(Mode::Global, c, args.justification),
                args.max_passes,
            );
            let stats = |r: &Run| {
                format!(
                    "{}/{}/{}/{:.1}",
                    r.passes, r.nodes_disrupted, r.pods_moved, r.secs
                )
            };
            println!(
                "{:<18} {:<9} {:>5} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7.3} {:>7.3} {:>7.3}  {:<32} {:<32}",
                w.name(),
                c.as_str(),
                cluster.nodes(),
                cluster.pods(),
                start,
                bound,
                scratch,
                k.end,
                g.end,
                k.end / bound,
                g.end / bound,
                g.end / k.end,
                stats(&k),
                stats(&g)
            );
            let _ = std::io::stdout().flush();
        }
    }
}

fn main() -> ExitCode {
    let args = match or_usage("disrupt-compare", USAGE, parse_args()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let traces = match Traces::embedded() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("disrupt-compare: {e}");
            return ExitCode::from(2);
        }
    };
    let types = aws_instance_types();
    if args.timing {
        timing(&args, &traces, &types);
    }
    if args.cost {
        cost(&args, &traces, &types);
    }
    ExitCode::SUCCESS
}
