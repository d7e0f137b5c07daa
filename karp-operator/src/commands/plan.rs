//! `karp plan`: manifests in, a provisioning plan out.
//!
//! [`plan_paths`] reads manifests from files and folders, [`plan_documents`] from text (what fuzz
//! targets call); both convert them ([`crate::convert`]), run the scheduler and return a [`Plan`]
//! whose [`PlanOutput`] serializes to the JSON contract of DESIGN.md.
//!
//! ```
//! use karp_operator::providers::aws::CatalogSource;
//! use karp_operator::commands::plan::{plan_documents, Solver};
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
//! kind: Pod
//! metadata: {name: web}
//! spec: {containers: [{name: web, resources: {requests: {cpu: "1", memory: 1Gi}}}]}
//! "#;
//! let plan = plan_documents("inline.yaml", yaml, &CatalogSource::Builtin, Solver::Ffd).unwrap();
//! assert_eq!(plan.output.nodeclaims.len(), 1);
//! assert_eq!(plan.output.nodeclaims[0].pods, ["default/web"]);
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use karp_core::cluster::ClusterSnapshot;
use karp_core::packing::{Clock, Ffd, Milp, PackResult, Packer};
use karp_core::scheduling::{NewNodeClaim, SchedulerOptions, SchedulingResults};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::convert::manifests::{load_paths, parse_text, LoadError, Manifests};
use crate::convert::{build_snapshot, BuildOptions, ConvertError};
use crate::providers::aws::{AwsCatalog, CatalogSource};

/// The packing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Solver {
    /// Karpenter-faithful first-fit decreasing.
    #[default]
    Ffd,
    /// The MILP packer (not available yet).
    Milp,
}

impl Solver {
    /// The name used on the command line and in the output.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Solver::Ffd => "ffd",
            Solver::Milp => "milp",
        }
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Reading the manifests failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Converting them failed.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The catalog file could not be read.
    #[error("{path}: cannot read catalog file")]
    ReadCatalog {
        /// The path.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The plan broke a scheduling rule (a bug in the scheduler; found by the independent validator).
    #[error("the plan failed validation (this is a bug in karp):\n  {}", violations.join("\n  "))]
    InvalidPlan {
        /// Every violation.
        violations: Vec<String>,
    },
}

impl PlanError {
    /// The process exit status for this error: 3 for an invalid plan (a bug), 2 for bad input.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            PlanError::InvalidPlan { .. } => 3,
            _ => 2,
        }
    }
}

/// One requirement of a NodeClaim, as in a Kubernetes node selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequirementOutput {
    /// Label key.
    pub key: String,
    /// Operator (In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte).
    pub operator: String,
    /// Values (empty for Exists / DoesNotExist).
    pub values: Vec<String>,
    /// Karpenter's `minValues`, only when set.
    #[serde(rename = "minValues", default, skip_serializing_if = "Option::is_none")]
    pub min_values: Option<usize>,
}

/// A NodeClaim to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeClaimOutput {
    /// NodePool name.
    pub nodepool: String,
    /// Instance type of the cheapest available offering the requirements allow.
    pub instance_type: String,
    /// Its zone.
    pub zone: String,
    /// Its capacity type.
    pub capacity_type: String,
    /// Its price, USD per hour.
    pub price: f64,
    /// Every instance type option, cheapest first.
    pub instance_types: Vec<String>,
    /// The NodeClaim's requirements.
    pub requirements: Vec<RequirementOutput>,
    /// Pods placed on it, `namespace/name`.
    pub pods: Vec<String>,
}

/// Pods placed on an existing node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistingOutput {
    /// Node name.
    pub node: String,
    /// Pods, `namespace/name`.
    pub pods: Vec<String>,
}

/// A pod that fits nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnschedulableOutput {
    /// `namespace/name`.
    pub pod: String,
    /// Why.
    pub reason: String,
}

/// Costs of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostOutput {
    /// Sum of the NodeClaims' prices, USD per hour.
    pub total_per_hour: f64,
    /// A lower bound on the new-node cost of any valid plan for the same pods.
    pub lower_bound_per_hour: f64,
}

/// Which solver made the plan and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolverOutput {
    /// `ffd` or `milp`.
    pub name: String,
    /// Wall-clock milliseconds of the scheduling pass.
    pub millis: u64,
    /// Why the MILP kept the FFD plan, when it did (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// The plan in the JSON shape of DESIGN.md ("Plan output").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanOutput {
    /// NodeClaims to create.
    pub nodeclaims: Vec<NodeClaimOutput>,
    /// Pending pods placed on existing nodes.
    pub existing: Vec<ExistingOutput>,
    /// Pods that fit nowhere.
    pub unschedulable: Vec<UnschedulableOutput>,
    /// Costs.
    pub cost: CostOutput,
    /// Solver.
    pub solver: SolverOutput,
}

/// A plan with what it was made from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The output for people and programs.
    pub output: PlanOutput,
    /// Warnings about the input (skipped kinds, deprecated fields), one line each.
    pub warnings: Vec<String>,
    /// The snapshot the plan was made against.
    pub snapshot: ClusterSnapshot,
    /// The scheduler's raw results.
    pub results: SchedulingResults,
}

impl Plan {
    /// Check the plan with the independent validator of karp-core.
    ///
    /// # Errors
    /// [`PlanError::InvalidPlan`] listing every violation.
    pub fn validate(&self) -> Result<(), PlanError> {
        validated(&self.snapshot, &self.results)
    }
}

/// Plan from manifest files and folders, with the built-in catalog or a catalog file.
///
/// # Errors
/// [`PlanError`]: bad input (exit 2), or in debug builds a plan that fails validation (exit 3).
pub fn plan_paths(
    paths: &[PathBuf],
    catalog: Option<&Path>,
    solver: Solver,
) -> Result<Plan, PlanError> {
    let catalog = catalog_source(catalog)?;
    let manifests = load_paths(paths)?;
    plan_manifests(manifests, &catalog, solver)
}

/// Plan from the text of one manifest file (YAML or JSON) named `file` in messages.
///
/// # Errors
/// As [`plan_paths`].
pub fn plan_documents(
    file: &str,
    text: &str,
    catalog: &CatalogSource,
    solver: Solver,
) -> Result<Plan, PlanError> {
    plan_manifests(parse_text(file, text)?, catalog, solver)
}

/// Plan from loaded manifests.
///
/// # Errors
/// As [`plan_paths`].
pub fn plan_manifests(
    manifests: Manifests,
    catalog: &CatalogSource,
    solver: Solver,
) -> Result<Plan, PlanError> {
    let converted = {
        let objects = manifests.cluster_objects()?;
        let mut types = AwsCatalog::from_manifests(&manifests, catalog);
        build_snapshot(&objects, &mut types, &BuildOptions::default())?
    };
    let Manifests {
        objects,
        mut warnings,
    } = manifests;
    // The parsed manifests are not needed any more: freed now, their memory serves the solve's
    // allocations (otherwise fresh pages, which the kernel must zero on first touch).
    drop(objects);
    warnings.extend(converted.warnings);
    let snapshot = converted.snapshot;
    let started = Instant::now();
    let packed = match solver {
        Solver::Ffd => Ffd {
            options: SchedulerOptions::default(),
        }
        .pack(&snapshot),
        Solver::Milp => {
            let clock = Clock(Arc::new(move || started.elapsed().as_secs_f64()));
            Milp::default().with_clock(clock).pack(&snapshot)
        }
    };
    let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let output = render_output(&snapshot, &packed, solver, millis);
    let results = packed.results;
    let plan = Plan {
        output,
        warnings,
        snapshot,
        results,
    };
    if cfg!(debug_assertions) {
        plan.validate()?;
    }
    Ok(plan)
}

/// A new NodeClaim as printed (`pods` are indices into `snapshot`).
#[must_use]
pub fn nodeclaim_output(snapshot: &ClusterSnapshot, c: &NewNodeClaim) -> NodeClaimOutput {
    NodeClaimOutput {
        nodepool: c.nodepool.clone(),
        instance_type: c.cheapest.instance_type.clone(),
        zone: c.cheapest.zone.clone(),
        capacity_type: c.cheapest.capacity_type.clone(),
        price: c.cheapest.price,
        instance_types: c.instance_types.iter().map(|t| t.name.clone()).collect(),
        requirements: c
            .requirements
            .to_node_selector()
            .into_iter()
            .map(|r| RequirementOutput {
                key: r.key,
                operator: r.operator.as_str().to_string(),
                values: r.values,
                min_values: r.min_values,
            })
            .collect(),
        pods: c.pods.iter().map(|&i| snapshot.pods[i].key()).collect(),
    }
}

fn render_output(
    snapshot: &ClusterSnapshot,
    packed: &PackResult,
    solver: Solver,
    millis: u64,
) -> PlanOutput {
    let results = &packed.results;
    let key = |i: &usize| snapshot.pods[*i].key();
    let nodeclaims = results
        .new_nodeclaims
        .iter()
        .map(|c| nodeclaim_output(snapshot, c))
        .collect();
    PlanOutput {
        nodeclaims,
        existing: results
            .existing
            .iter()
            .map(|e| ExistingOutput {
                node: e.node.clone(),
                pods: e.pods.iter().map(key).collect(),
            })
            .collect(),
        unschedulable: results
            .unschedulable
            .iter()
            .map(|u| UnschedulableOutput {
                pod: key(&u.pod),
                reason: u.reason.clone(),
            })
            .collect(),
        cost: CostOutput {
            total_per_hour: results.cost_per_hour(),
            lower_bound_per_hour: packed.lower_bound_per_hour,
        },
        solver: SolverOutput {
            name: solver.name().to_string(),
            millis,
            fallback: packed.fallback.clone(),
        },
    }
}

pub(crate) fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// The plan as a readable summary for people (`-o table`).
#[must_use]
pub fn render_table(p: &PlanOutput) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "NodeClaims to create: {}", p.nodeclaims.len());
    if !p.nodeclaims.is_empty() {
        let rows: Vec<Vec<String>> = p
            .nodeclaims
            .iter()
            .map(|c| {
                vec![
                    c.nodepool.clone(),
                    c.instance_type.clone(),
                    c.zone.clone(),
                    c.capacity_type.clone(),
                    format!("${:.4}", c.price),
                    c.pods.len().to_string(),
                    c.instance_types.len().to_string(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "NODEPOOL",
                "INSTANCE TYPE",
                "ZONE",
                "CAPACITY TYPE",
                "PRICE/HOUR",
                "PODS",
                "OPTIONS",
            ],
            &rows,
        );
    }
    let placed: usize = p.existing.iter().map(|e| e.pods.len()).sum();
    let _ = writeln!(out, "\nPods placed on existing nodes: {placed}");
    if !p.existing.is_empty() {
        let rows: Vec<Vec<String>> = p
            .existing
            .iter()
            .map(|e| vec![e.node.clone(), e.pods.len().to_string(), e.pods.join(", ")])
            .collect();
        table(&mut out, &["NODE", "PODS", "NAMES"], &rows);
    }
    let _ = writeln!(out, "\nUnschedulable pods: {}", p.unschedulable.len());
    if !p.unschedulable.is_empty() {
        let rows: Vec<Vec<String>> = p
            .unschedulable
            .iter()
            .map(|u| vec![u.pod.clone(), u.reason.clone()])
            .collect();
        table(&mut out, &["POD", "REASON"], &rows);
    }
    let _ = writeln!(
        out,
        "\nTotal cost: ${:.4}/hour (lower bound ${:.4}/hour); solver {} in {} ms",
        p.cost.total_per_hour, p.cost.lower_bound_per_hour, p.solver.name, p.solver.millis
    );
    if let Some(why) = &p.solver.fallback {
        let _ = writeln!(out, "The MILP kept the FFD plan: {why}.");
    }
    out
}

/// The catalog `--catalog` names (`None`: the built-in one), read from its file.
///
/// # Errors
/// [`PlanError::ReadCatalog`] when the file cannot be read.
pub fn catalog_source(path: Option<&Path>) -> Result<CatalogSource, PlanError> {
    Ok(match path {
        None => CatalogSource::Builtin,
        Some(p) => CatalogSource::File {
            name: p.display().to_string(),
            json: std::fs::read_to_string(p).map_err(|source| PlanError::ReadCatalog {
                path: p.display().to_string(),
                source,
            })?,
        },
    })
}

/// The independent validator on a placement, its violations as [`PlanError::InvalidPlan`].
///
/// # Errors
/// [`PlanError::InvalidPlan`] listing every violation.
pub fn validated(snapshot: &ClusterSnapshot, results: &SchedulingResults) -> Result<(), PlanError> {
    karp_core::validation::validate(snapshot, results).map_err(|v| PlanError::InvalidPlan {
        violations: v.into_iter().map(|v| v.0).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = concat!(
        include_str!("../../../examples/seed/ec2nodeclass.yaml"),
        "---\n",
        include_str!("../../../examples/seed/nodepool.yaml"),
        "---\n",
        include_str!("../../../examples/workloads/cache.yaml"),
    );

    fn run(text: &str) -> Result<Plan, PlanError> {
        plan_documents("fuzz.yaml", text, &CatalogSource::Builtin, Solver::Ffd)
    }

    #[test]
    fn odd_documents_are_errors_or_empty_plans_never_panics() {
        let cases = [
            "",
            "---",
            "---\n---\n",
            "[]",
            "42",
            "~",
            "kind: List\napiVersion: v1\nitems: 3",
            "{kind: List, apiVersion: v1, items: [1]}",
            "apiVersion: v1\nkind: Pod",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: 7",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, resources: {requests: {cpu: -1}}}]}",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, resources: {requests: {memory: 1e400}}}]}",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}], topologySpreadConstraints: [{maxSkew: 0, topologyKey: k, whenUnsatisfiable: DoNotSchedule}]}",
            "a: &a [*a]",
            "? [a]\n: b",
            "\t",
            "apiVersion: 7\nkind: Pod",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: -3, selector: {}, template: {spec: {containers: []}}}",
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {parallelism: 2147483647, completions: 0, template: {spec: {containers: []}}}",
            "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: p}\nspec: {limits: {cpu: '1e99999'}}",
            "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: p}\nspec: {template: {spec: {requirements: [{key: a, operator: In, values: [x], minValues: 99}]}}}",
        ];
        for c in cases {
            match run(c) {
                Ok(p) => assert!(p.output.nodeclaims.is_empty(), "{c:?}"),
                Err(e) => assert_eq!(e.exit_code(), 2, "{c:?}: {e}"),
            }
        }
    }

    #[test]
    fn plan_output_matches_the_scheduler_results() {
        let plan = run(EXAMPLE).unwrap();
        assert!(plan.output.unschedulable.is_empty());
        assert_eq!(
            plan.output.nodeclaims.len(),
            plan.results.new_nodeclaims.len()
        );
        let pods: usize = plan.output.nodeclaims.iter().map(|c| c.pods.len()).sum();
        assert_eq!(pods, 3);
        plan.validate().unwrap();
        let json = serde_json::to_value(&plan.output).unwrap();
        let back: PlanOutput = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan.output);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn truncated_or_spliced_manifests_never_panic(cut in 0usize..EXAMPLE.len(), len in 0usize..40, junk in "[ -~\n]{0,12}") {
            let mut text = EXAMPLE.as_bytes().to_vec();
            let end = (cut + len).min(text.len());
            text.splice(cut..end, junk.bytes());
            let text = String::from_utf8_lossy(&text);
            if let Err(e) = run(&text) {
                prop_assert_eq!(e.exit_code(), 2);
            }
        }
    }
}
