//! Compare packers on benchmark workloads: cost, ratio to the lower bound, nodes, solve time.
//!
//! ```text
//! cargo run --release -p karp-benches --bin solver-compare -- \
//!     [--pods 1000,5000] [--workloads uniform-small,mixed,bimodal,alibaba-v2017,alibaba-gpu-v2023]
//!     [--capacity on-demand,spot] [--packers ffd,milp] [--seed 42] [--json out.json] [--stats]
//!     [--data-dir DIR | --full-traces] [--time-limit SECS] [--budget SECS] [--mip-gap GAP] [--max-rounds N]
//! ```
//!
//! Traces come from the samples embedded from `benches/data/`, or from the full files in
//! `--data-dir DIR`, `$KARP_DATA_DIR`, or (`--full-traces`) `../shared/data` next to the workspace.

use karp_benches::args::{list, one, or_usage};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use karp_benches::aws::{aws_instance_types, CapacityType};
use karp_benches::compare::{run_case, table, Case, Row};
use karp_benches::traces::{Traces, DATA_DIR_ENV};
use karp_benches::Workload;
use karp_core::packing::{Ffd, Milp, Packer};

const USAGE: &str = "usage: solver-compare [--pods 1000,5000] [--workloads NAME,...] \
[--capacity on-demand,spot] [--packers ffd,milp] [--seed N] [--json FILE] [--stats] \
[--data-dir DIR | --full-traces] [--time-limit SECS] [--mip-gap GAP] [--max-rounds N]
workloads: uniform-small, mixed, bimodal, alibaba-v2017, alibaba-gpu-v2023";

/// Parsed command line.
struct Args {
    pods: Vec<usize>,
    workloads: Vec<Workload>,
    capacities: Vec<CapacityType>,
    packers: Vec<String>,
    seed: u64,
    json: Option<PathBuf>,
    stats: bool,
    data_dir: Option<PathBuf>,
    milp: Milp,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        pods: vec![1000, 5000],
        workloads: Workload::ALL.to_vec(),
        capacities: CapacityType::ALL.to_vec(),
        packers: vec!["ffd".into(), "milp".into()],
        seed: 42,
        json: None,
        stats: false,
        data_dir: std::env::var_os(DATA_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        milp: Milp::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--pods" => a.pods = list(&flag, &value()?)?,
            "--workloads" => a.workloads = list(&flag, &value()?)?,
            "--capacity" => a.capacities = list(&flag, &value()?)?,
            "--packers" => a.packers = list(&flag, &value()?)?,
            "--seed" => a.seed = one(&flag, &value()?)?,
            "--json" => a.json = Some(PathBuf::from(value()?)),
            "--stats" => a.stats = true,
            "--data-dir" => a.data_dir = Some(PathBuf::from(value()?)),
            "--full-traces" => {
                a.data_dir = Some(a.data_dir.take().unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
                }));
            }
            "--time-limit" => a.milp.time_limit_secs = one(&flag, &value()?)?,
            "--budget" => a.milp.budget_secs = one(&flag, &value()?)?,
            "--mip-gap" => a.milp.mip_gap = one(&flag, &value()?)?,
            "--max-rounds" => a.milp.max_rounds = one(&flag, &value()?)?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for p in &a.packers {
        if p != "ffd" && p != "milp" {
            return Err(format!("--packers: unknown packer {p:?} (ffd, milp)"));
        }
    }
    Ok(a)
}

fn json_row(r: &Row) -> serde_json::Value {
    serde_json::json!({
        "workload": r.workload,
        "capacity_type": r.capacity,
        "pods": r.pods,
        "packer": r.packer,
        "plan_from": r.plan_from,
        "cost_per_hour": r.cost,
        "lower_bound_per_hour": r.lower_bound,
        "own_lower_bound_per_hour": r.own_lower_bound,
        "ratio": if r.ratio.is_finite() { serde_json::json!(r.ratio) } else { serde_json::Value::Null },
        "nodes": r.nodes,
        "unschedulable": r.unschedulable,
        "millis": r.millis,
        "fallback": r.fallback,
        "stats": {
            "groups": r.stats.groups,
            "columns": r.stats.columns,
            "rounds": r.stats.rounds,
            "fixed_pods": r.stats.fixed_pods,
            "ffd_cost": r.stats.ffd_cost,
            "lp_cost": r.stats.lp_cost,
            "residual": r.stats.residual,
        },
    })
}

fn main() -> ExitCode {
    let args = match or_usage("solver-compare", USAGE, parse_args()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let traces = match Traces::load(args.data_dir.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("solver-compare: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "traces: {} ({} v2017 tasks, {} GPU pods); seed {}; milp time limit {} s, gap {}, max rounds {}",
        traces.source,
        traces.v2017.len(),
        traces.gpu_v2023.len(),
        args.seed,
        args.milp.time_limit_secs,
        args.milp.mip_gap,
        args.milp.max_rounds
    );
    let types = aws_instance_types();
    let epoch = std::time::Instant::now();
    let packers: Vec<Box<dyn Packer>> = args
        .packers
        .iter()
        .map(|p| -> Box<dyn Packer> {
            if p == "ffd" {
                Box::new(Ffd::default())
            } else {
                Box::new(args.milp.clone().with_clock(karp_core::packing::Clock(
                    std::sync::Arc::new(move || epoch.elapsed().as_secs_f64()),
                )))
            }
        })
        .collect();
    let mut rows = Vec::new();
    let mut header_done = false;
    for &workload in &args.workloads {
        for &capacity in &args.capacities {
            for &pods in &args.pods {
                let case = Case {
                    workload,
                    capacity,
                    pods,
                };
                let snapshot = case.snapshot(&traces, types.clone(), args.seed);
                let case_rows = run_case(&case, &snapshot, &packers);
                let text = table(&case_rows);
                let mut lines = text.lines();
                let header = lines.next().unwrap_or_default();
                if !header_done {
                    println!("{header}");
                    header_done = true;
                }
                for (line, r) in lines.zip(&case_rows) {
                    println!("{line}");
                    if args.stats {
                        let s = &r.stats;
                        println!(
                            "    stats: plan from {}, groups {}, columns {}, rounds {}, fixed pods {}, ffd cost {:.3}, lp {:.3}, dive {}, own bound {:.3}",
                            r.plan_from, s.groups, s.columns, s.rounds, s.fixed_pods, s.ffd_cost, s.lp_cost, s.residual, r.own_lower_bound
                        );
                    }
                }
                let _ = std::io::stdout().flush();
                rows.extend(case_rows);
            }
        }
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "seed": args.seed,
            "traces": traces.source,
            "milp": {
                "time_limit_secs": args.milp.time_limit_secs,
                "mip_gap": args.milp.mip_gap,
                "max_rounds": args.milp.max_rounds,
            },
            "rows": rows.iter().map(json_row).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("solver-compare: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
