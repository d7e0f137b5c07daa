//! Replay a trace through provisioning (ffd | milp) and disruption (karpenter | global), all four
//! combinations side by side; see `docs/replay.md`.
//!
//! ```text
//! cargo run --release -p karp-benches --bin replay -- \
//!     [--trace alibaba-v2017|alibaba-gpu-v2023] [--capacity on-demand|spot] [--start S] [--hours H]
//!     [--step SECS] [--fraction F] [--max-pods-per-task N] [--seed N] [--packers ffd,milp]
//!     [--modes karpenter,global] [--svg replay.svg] [--no-progress]
//! ```

use karp_benches::args::{list, one, or_usage};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use karp_benches::aws::{aws_instance_types, nodepool, CapacityType};
use karp_benches::replay::{arrivals, Run, Summary, Trace, TraceWindow};
use karp_core::disruption::Mode;
use karp_core::packing::{Ffd, Milp, Packer, WorkLimits};

const USAGE: &str = "usage: replay [--trace alibaba-v2017|alibaba-gpu-v2023] \
[--capacity on-demand|spot] [--start SECS] [--hours H] [--step SECS] [--fraction F] \
[--max-pods-per-task N] [--seed N] [--packers ffd,milp] [--modes karpenter,global] \
[--svg FILE] [--no-progress]";

/// Parsed command line.
struct Args {
    trace: Trace,
    capacity: CapacityType,
    window: TraceWindow,
    step: i64,
    packers: Vec<String>,
    modes: Vec<Mode>,
    svg: PathBuf,
    progress: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        trace: Trace::V2017,
        capacity: CapacityType::OnDemand,
        window: TraceWindow {
            start: 0,
            end: 0,
            fraction: 0.05,
            max_pods_per_task: 20,
            seed: 42,
        },
        step: 60,
        packers: vec!["ffd".into(), "milp".into()],
        modes: vec![Mode::Karpenter, Mode::Global],
        svg: PathBuf::from("replay.svg"),
        progress: true,
    };
    let mut hours = 2.0f64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--trace" => a.trace = one(&flag, &value()?)?,
            "--capacity" => a.capacity = one(&flag, &value()?)?,
            "--start" => a.window.start = one(&flag, &value()?)?,
            "--hours" => hours = one(&flag, &value()?)?,
            "--step" => a.step = one(&flag, &value()?)?,
            "--fraction" => a.window.fraction = one(&flag, &value()?)?,
            "--max-pods-per-task" => a.window.max_pods_per_task = one(&flag, &value()?)?,
            "--seed" => a.window.seed = one(&flag, &value()?)?,
            "--packers" => a.packers = list(&flag, &value()?)?,
            "--modes" => a.modes = list(&flag, &value()?)?,
            "--svg" => a.svg = PathBuf::from(value()?),
            "--no-progress" => a.progress = false,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.step <= 0 {
        return Err("--step must be positive".into());
    }
    for p in &a.packers {
        if p != "ffd" && p != "milp" {
            return Err(format!("--packers: unknown packer {p:?} (ffd, milp)"));
        }
    }
    a.window.end = a.window.start + (hours * 3600.0).round() as i64;
    Ok(a)
}

/// A packer by name: FFD, or the MILP with deterministic work limits (no wall-clock limit
/// decides its plan, so runs repeat exactly).
fn packer(name: &str) -> Box<dyn Packer> {
    match name {
        "milp" => Box::new(Milp::default().with_work_limits(WorkLimits::default())),
        _ => Box::new(Ffd::default()),
    }
}

/// A one-line progress bar on stderr, redrawn when the percentage changes.
struct Progress {
    total: usize,
    done: usize,
    shown: Option<usize>,
    start: Instant,
    on: bool,
}

impl Progress {
    fn new(total: usize, on: bool) -> Self {
        Progress {
            total: total.max(1),
            done: 0,
            shown: None,
            start: Instant::now(),
            on,
        }
    }

    fn tick(&mut self, what: &str) {
        self.done += 1;
        let pct = self.done * 100 / self.total;
        if !self.on || self.shown == Some(pct) {
            return;
        }
        self.shown = Some(pct);
        let width = 40;
        let filled = pct * width / 100;
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = elapsed / self.done as f64 * (self.total - self.done) as f64;
        eprint!(
            "\r[{}{}] {pct:>3}% {}/{} {elapsed:.0}s eta {eta:.0}s {what:<40}",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.done,
            self.total
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}

fn table(rows: &[Summary]) -> String {
    let mut out = format!(
        "{:<16} {:>11} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7} {:>8}\n",
        "run", "cost $", "commands", "moves", "launched", "p50 pend", "p99 pend", "lost", "wall s"
    );
    for r in rows {
        out += &format!(
            "{:<16} {:>11.2} {:>9} {:>7} {:>9} {:>8}s {:>8}s {:>7} {:>8.1}\n",
            r.name,
            r.cost,
            r.commands,
            r.moves,
            r.launched,
            r.p50_pending,
            r.p99_pending,
            r.never_placed,
            r.wall_secs
        );
    }
    out
}

fn main() -> ExitCode {
    let args = match or_usage("replay", USAGE, parse_args()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let events = match arrivals(args.trace, &args.window) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("replay: {e}");
            return ExitCode::from(2);
        }
    };
    let types = aws_instance_types();
    let pool = nodepool(args.capacity, args.trace.gpu(), types);
    let mut runs: Vec<Run> = Vec::new();
    for p in &args.packers {
        for &m in &args.modes {
            let name = format!("{p}/{}", m.as_str());
            runs.push(
                Run::new(&name, packer(p), m, pool.clone())
                    .spot_to_spot(args.capacity == CapacityType::Spot),
            );
        }
    }
    let horizon = args.window.end;
    let steps: Vec<i64> = (args.window.start..=horizon)
        .step_by(args.step as usize)
        .collect();
    println!(
        "replay {} ({}), trace seconds {}..{} in steps of {} s, {} pods (fraction {}, at most {} per task, seed {})",
        args.trace.name(),
        args.capacity.as_str(),
        args.window.start,
        horizon,
        args.step,
        events.len(),
        args.window.fraction,
        args.window.max_pods_per_task,
        args.window.seed
    );
    let mut progress = Progress::new(steps.len() * runs.len(), args.progress);
    let mut next = vec![0usize; runs.len()];
    for &t in &steps {
        for (run, n) in runs.iter_mut().zip(next.iter_mut()) {
            *n = run.step(t, args.step, &events, *n);
            let nodes = run.series.last().map_or(0, |p| p.nodes);
            progress.tick(&format!("t={t}s {} nodes={nodes}", run.name));
        }
    }
    progress.finish();
    let rows: Vec<Summary> = runs.iter().map(|r| r.summary(horizon)).collect();
    print!("{}", table(&rows));
    let series: Vec<(&str, &[karp_benches::replay::Point])> = runs
        .iter()
        .map(|r| (r.name.as_str(), r.series.as_slice()))
        .collect();
    match karp_benches::plot::write_svg(&args.svg, args.trace.name(), &series) {
        Ok(()) => println!("plot: {}", args.svg.display()),
        Err(e) => {
            eprintln!("replay: writing {}: {e}", args.svg.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
