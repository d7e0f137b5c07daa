//! `karp disrupt`: the disruption dry run. Manifests (as `karp plan` reads them, plus
//! NodeClaims) in, the commands karp would start now out, in the JSON contract of DESIGN.md.
//!
//! `--mode karpenter` is Karpenter v1.14's methods, `--mode global` karp's global consolidator
//! (both through [`karp_core::disruption::plan`]); `--until-stable` repeats passes with
//! [`karp_core::disruption::plan_until_stable`].
//!
//! ```
//! use karp_operator::providers::aws::CatalogSource;
//! use karp_operator::commands::disrupt::{disrupt_documents, DisruptOptions};
//! use karp_core::disruption::Timestamp;
//!
//! let yaml = r#"
//! apiVersion: karpenter.k8s.aws/v1
//! kind: EC2NodeClass
//! metadata: {name: default}
//! spec: {amiSelectorTerms: [{alias: al2023@latest}]}
//! ---
//! apiVersion: karpenter.sh/v1
//! kind: NodePool
//! metadata: {name: default}
//! spec:
//!   template:
//!     spec:
//!       nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
//! ---
//! apiVersion: v1
//! kind: Node
//! metadata:
//!   name: node-1
//!   creationTimestamp: "2026-12-01T10:00:00Z"
//!   labels:
//!     karpenter.sh/nodepool: default
//!     karpenter.sh/initialized: "true"
//!     karpenter.sh/capacity-type: on-demand
//!     node.kubernetes.io/instance-type: m5.large
//!     topology.kubernetes.io/zone: us-east-1a
//! status: {allocatable: {cpu: 1930m, memory: 7Gi, pods: "29"}}
//! "#;
//! let options = DisruptOptions { now: "2026-12-01T12:00:00Z".parse().unwrap(), ..Default::default() };
//! let out = disrupt_documents("inline.yaml", yaml, &CatalogSource::Builtin, &options).unwrap();
//! assert_eq!(out.output.commands[0].method, "emptiness");
//! assert_eq!(out.output.commands[0].candidates, ["node-1"]);
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use karp_core::disruption::stable::Pass;
use karp_core::disruption::{
    lower_bound_per_hour, plan, plan_until_stable, Allowed, DisruptionInput, DisruptionOptions,
    DisruptionPlan, Justification, Method, Mode, SavingsThreshold, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::commands::plan::{
    catalog_source, nodeclaim_output, table, validated, NodeClaimOutput, PlanError,
};
use crate::convert::disruption::disruption_input;
use crate::convert::manifests::{load_paths, parse_text, Manifests, Object};
use crate::convert::{build_snapshot, BuildOptions, Input};
use crate::providers::aws::{AwsCatalog, CatalogSource};

/// `--until-stable` stops after this many passes even if windows are left.
pub const MAX_PASSES: usize = 10_000;

/// Options of a dry run (flags already parsed).
#[derive(Debug, Clone, Default)]
pub struct DisruptOptions {
    /// The time every age and window is measured at.
    pub now: Timestamp,
    /// The `SpotToSpotConsolidation` feature gate.
    pub spot_to_spot_consolidation: bool,
    /// `--mode` (pools may override it with `karp.dev/consolidation-mode`).
    pub mode: Mode,
    /// `--min-savings` for `global` pools (pools may override it with
    /// `karp.dev/consolidation-min-savings`).
    pub min_savings: SavingsThreshold,
    /// `--global-balanced-k`: how `global` moves justify their disruption.
    pub justification: Justification,
    /// `--until-stable`: repeat passes as a running operator would.
    pub until_stable: bool,
}

/// A pod move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveOutput {
    /// `namespace/name`.
    pub pod: String,
    /// The candidate it leaves.
    pub from: String,
    /// An existing node, `replacement-<i>`, or null when it would stay pending (expiration).
    pub to: Option<String>,
}

/// One command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// `emptiness`, `drift`, `expiration`, `multi-node` or `single-node`.
    pub method: String,
    /// `Empty`, `Drifted`, `Expired` or `Underutilized`.
    pub reason: String,
    /// `delete` or `replace`.
    pub decision: String,
    /// Nodes it removes.
    pub candidates: Vec<String>,
    /// NodeClaims it launches, as in `karp plan`.
    pub replacements: Vec<NodeClaimOutput>,
    /// Where the pods go.
    pub moves: Vec<MoveOutput>,
    /// USD per hour saved (rounded to micro-dollars).
    pub savings_per_hour: f64,
    /// When it starts (RFC 3339).
    pub at: String,
    /// A lower bound on the hourly cost of the cluster that remains (as `cost.lower_bound_per_hour`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_bound_per_hour: Option<f64>,
    /// Why each candidate of a drift command drifted (absent for other methods).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftOutput>,
}

/// Why a node drifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftOutput {
    /// Node name.
    pub node: String,
    /// `NodePoolDrifted`, `RequirementsDrifted`, `InstanceTypeNotFound`, or the `Drifted`
    /// condition's reason.
    pub reason: String,
    /// Since when (RFC 3339).
    pub since: String,
}

/// A managed node in no command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotCandidateOutput {
    /// Node name.
    pub node: String,
    /// Why, worded like Karpenter's events.
    pub reason: String,
}

/// A pool's budget for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetOutput {
    /// NodePool.
    pub nodepool: String,
    /// `Empty`, `Drifted` or `Underutilized`.
    pub reason: String,
    /// Disruptions allowed now; null when no budget limits the reason.
    pub allowed: Option<usize>,
    /// Why the pool allows nothing, when one of its budgets is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Costs, USD per hour rounded to micro-dollars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisruptCostOutput {
    /// Every node not being deleted, USD per hour.
    pub before_per_hour: f64,
    /// Once every printed command completed.
    pub after_per_hour: f64,
    /// A lower bound on any cluster running the same pods: unmanaged nodes plus karp's best
    /// bound (per-unit prices, LP bounds) on placing every pod of the managed nodes on new nodes.
    pub lower_bound_per_hour: f64,
}

/// The planner and its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisruptSolverOutput {
    /// `karpenter` or `global` (`--mode`).
    pub name: String,
    /// Wall-clock milliseconds of the passes.
    pub millis: u64,
}

/// The dry run in the JSON shape of DESIGN.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisruptOutput {
    /// Commands to start now.
    pub commands: Vec<CommandOutput>,
    /// Every managed node in no command, with why.
    pub not_candidates: Vec<NotCandidateOutput>,
    /// Budgets per pool and reason at `--now`.
    pub budgets: Vec<BudgetOutput>,
    /// Costs.
    pub cost: DisruptCostOutput,
    /// Planner.
    pub solver: DisruptSolverOutput,
}

/// A dry run with what it was made from.
#[derive(Debug, Clone)]
pub struct Disrupt {
    /// The output.
    pub output: DisruptOutput,
    /// Warnings about the input.
    pub warnings: Vec<String>,
    /// The planner's input.
    pub input: DisruptionInput,
    /// The first pass's result.
    pub plan: DisruptionPlan,
    /// Every pass (one without `--until-stable`): what it ran on and decided.
    pub passes: Vec<Pass>,
}

/// Dry run from manifest files and folders.
///
/// # Errors
/// [`PlanError`]: bad input (exit 2), or a command that fails validation (exit 3, a bug).
pub fn disrupt_paths(
    paths: &[PathBuf],
    catalog: Option<&Path>,
    options: &DisruptOptions,
) -> Result<Disrupt, PlanError> {
    let catalog = catalog_source(catalog)?;
    disrupt_manifests(load_paths(paths)?, &catalog, options)
}

/// Dry run from the text of one manifest file named `file` in messages.
///
/// # Errors
/// As [`disrupt_paths`].
pub fn disrupt_documents(
    file: &str,
    text: &str,
    catalog: &CatalogSource,
    options: &DisruptOptions,
) -> Result<Disrupt, PlanError> {
    disrupt_manifests(parse_text(file, text)?, catalog, options)
}

/// Dry run from loaded manifests.
///
/// # Errors
/// As [`disrupt_paths`].
pub fn disrupt_manifests(
    manifests: Manifests,
    catalog: &CatalogSource,
    options: &DisruptOptions,
) -> Result<Disrupt, PlanError> {
    let objects = manifests.cluster_objects()?;
    let pdbs: Vec<_> = manifests
        .objects
        .iter()
        .filter_map(|l| match &l.object {
            Object::PodDisruptionBudget(p) => Some(Input {
                origin: l.origin.clone(),
                object: Arc::new((**p).clone()),
            }),
            _ => None,
        })
        .collect();
    let mut types = AwsCatalog::from_manifests(&manifests, catalog);
    let converted = build_snapshot(&objects, &mut types, &BuildOptions::default())?;
    let mut warnings = manifests.warnings.clone();
    warnings.extend(converted.warnings.iter().cloned());
    let input = disruption_input(&objects, &pdbs, converted, options.now)?;
    let started = Instant::now();
    let core_options = DisruptionOptions::default()
        .spot_to_spot(options.spot_to_spot_consolidation)
        .mode(options.mode)
        .min_savings(options.min_savings)
        .justification(options.justification);
    let passes = if options.until_stable {
        plan_until_stable(&input, options.now, &core_options, MAX_PASSES)
    } else {
        vec![Pass {
            at: options.now,
            plan: plan(&input, options.now, &core_options),
            input: input.clone(),
        }]
    };
    let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    for c in passes.iter().flat_map(|p| &p.plan.commands) {
        if let Some(sim) = &c.simulation {
            validated(&sim.snapshot, &sim.results)?;
        }
    }
    let plans: Vec<&DisruptionPlan> = passes.iter().map(|p| &p.plan).collect();
    let output = render(&input, &plans, options.mode, millis);
    let plan = passes
        .first()
        .map(|p| p.plan.clone())
        .unwrap_or_else(|| plan(&input, options.now, &core_options));
    Ok(Disrupt {
        output,
        warnings,
        input,
        plan,
        passes,
    })
}

/// Dollars per hour rounded to micro-dollars, so sums print without float noise.
/// (An empty sum of `f64` is `-0.0`; adding `0.0` prints it as `0`.)
fn money(x: f64) -> f64 {
    (x * 1e6).round() / 1e6 + 0.0
}

/// The output of passes: every pass's commands, the first pass's budgets and cost before, the
/// last pass's non-candidates and cost after.
fn render(
    input: &DisruptionInput,
    passes: &[&DisruptionPlan],
    mode: Mode,
    millis: u64,
) -> DisruptOutput {
    let empty = DisruptionPlan {
        commands: Vec::new(),
        not_candidates: Vec::new(),
        budgets: Vec::new(),
        cost: karp_core::disruption::CostSummary {
            before_per_hour: 0.0,
            after_per_hour: 0.0,
        },
    };
    let first = passes.first().copied().unwrap_or(&empty);
    let last = passes.last().copied().unwrap_or(&empty);
    let bound = money(lower_bound_per_hour(input));
    let commands = passes
        .iter()
        .flat_map(|p| &p.commands)
        .map(|c| CommandOutput {
            method: c.method.as_str().to_string(),
            reason: c.reason.as_str().to_string(),
            decision: c.decision.as_str().to_string(),
            candidates: c.candidates.clone(),
            // Pod indices of replacements refer to the simulation's snapshot; a command without
            // one (static drift) replaces with NodeClaims that carry no pods.
            replacements: {
                let snapshot = c
                    .simulation
                    .as_ref()
                    .map_or(&input.snapshot, |s| &s.snapshot);
                c.replacements
                    .iter()
                    .map(|r| nodeclaim_output(snapshot, r))
                    .collect()
            },
            moves: c
                .moves
                .iter()
                .map(|m| MoveOutput {
                    pod: m.pod.clone(),
                    from: m.from.clone(),
                    to: m.to.clone(),
                })
                .collect(),
            savings_per_hour: money(c.savings_per_hour),
            at: c.at.to_string(),
            lower_bound_per_hour: Some(bound),
            drift: if c.method == Method::Drift {
                c.candidates
                    .iter()
                    .filter_map(|n| {
                        let d = input.nodes.get(n)?.drifted.as_ref()?;
                        Some(DriftOutput {
                            node: n.clone(),
                            reason: d.reason.clone(),
                            since: d.since.to_string(),
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            },
        })
        .collect();
    DisruptOutput {
        commands,
        not_candidates: last
            .not_candidates
            .iter()
            .map(|n| NotCandidateOutput {
                node: n.node.clone(),
                reason: n.reason.clone(),
            })
            .collect(),
        budgets: first
            .budgets
            .iter()
            .map(|b| BudgetOutput {
                nodepool: b.nodepool.clone(),
                reason: b.reason.as_str().to_string(),
                allowed: match b.allowed {
                    Allowed::Nodes(n) => Some(n),
                    Allowed::Unlimited => None,
                },
                error: b.error.clone(),
            })
            .collect(),
        cost: DisruptCostOutput {
            before_per_hour: money(first.cost.before_per_hour),
            after_per_hour: money(last.cost.after_per_hour),
            lower_bound_per_hour: bound.min(money(last.cost.after_per_hour)),
        },
        solver: DisruptSolverOutput {
            name: mode.as_str().into(),
            millis,
        },
    }
}

/// The dry run as a readable summary (`-o table`).
#[must_use]
pub fn render_table(o: &DisruptOutput) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Commands: {}", o.commands.len());
    for c in &o.commands {
        let _ = writeln!(
            out,
            "{} ({}): {} {} at {}, saves ${:.4}/h",
            c.method,
            c.reason,
            c.decision,
            c.candidates.join(", "),
            c.at,
            c.savings_per_hour
        );
        for d in &c.drift {
            let _ = writeln!(out, "  {} drifted: {} since {}", d.node, d.reason, d.since);
        }
        for r in &c.replacements {
            let _ = writeln!(
                out,
                "  launch {} {} {} ${:.4}/h",
                r.instance_type, r.zone, r.capacity_type, r.price
            );
        }
        let rows: Vec<Vec<String>> = c
            .moves
            .iter()
            .map(|m| {
                vec![
                    m.pod.clone(),
                    m.from.clone(),
                    m.to.clone().unwrap_or_else(|| "(pending)".into()),
                ]
            })
            .collect();
        if !rows.is_empty() {
            table(&mut out, &["POD", "FROM", "TO"], &rows);
        }
    }
    if !o.not_candidates.is_empty() {
        let _ = writeln!(out, "Not disrupted:");
        let rows: Vec<Vec<String>> = o
            .not_candidates
            .iter()
            .map(|n| vec![n.node.clone(), n.reason.clone()])
            .collect();
        table(&mut out, &["NODE", "REASON"], &rows);
    }
    let _ = writeln!(
        out,
        "Cost: ${:.4}/h before, ${:.4}/h after (lower bound ${:.4}/h)",
        o.cost.before_per_hour, o.cost.after_per_hour, o.cost.lower_bound_per_hour
    );
    out
}
