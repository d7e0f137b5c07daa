//! The `karp` command line (clap). Only this module parses flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::plan::{plan_paths, render_table, Solver};

/// karp: a Kubernetes node autoscaler API-compatible with Karpenter v1.
#[derive(Debug, Parser)]
#[command(name = "karp", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan which nodes to launch for the pending pods in Kubernetes manifests (no cluster needed).
    Plan(PlanArgs),
}

/// Arguments of `karp plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Manifest files or folders (searched recursively for .yaml, .yml, .json); `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Instance-type catalog file (JSON); default: the built-in AWS us-east-1 catalog.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Packing solver.
    #[arg(long, value_enum, default_value_t = SolverArg::Ffd)]
    pub solver: SolverArg,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

/// `--solver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SolverArg {
    /// Karpenter-faithful first-fit decreasing.
    Ffd,
    /// Mixed-integer programming packer.
    Milp,
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The JSON plan (the stable contract).
    Json,
    /// A readable summary.
    Table,
}

/// Render an error with its sources, `a: b: c`.
#[must_use]
pub fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Run `karp plan`, printing the plan on stdout and warnings / errors on stderr.
pub fn run_plan(args: &PlanArgs) -> ExitCode {
    let solver = match args.solver {
        SolverArg::Ffd => Solver::Ffd,
        SolverArg::Milp => Solver::Milp,
    };
    let result = plan_paths(&args.paths, args.catalog.as_deref(), solver);
    let plan = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            return ExitCode::from(e.exit_code());
        }
    };
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    let text = match args.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&plan.output) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("error: cannot serialize the plan: {e}");
                return ExitCode::from(1);
            }
        },
        OutputFormat::Table => render_table(&plan.output),
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Parse the command line and run it.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Plan(args) => run_plan(args),
    }
}
