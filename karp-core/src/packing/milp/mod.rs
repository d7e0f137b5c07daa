//! The MILP packer: a pattern (cutting-stock) formulation over pod groups and instance types,
//! solved by column generation and an integer master problem in HiGHS.
//!
//! 1. Run the FFD scheduler. Pods whose constraints the MILP does not model (topology spread,
//!    pod affinity, anti-affinity other than on hostname, preferences, pods other pods' topology
//!    selects) keep their FFD NodeClaims; the other pods on those NodeClaims may move, and the
//!    kept NodeClaims' instance types are recomputed for what stays.
//! 2. The other pods form *groups* (same requests, requirements, tolerations, host ports,
//!    hostname anti-affinity, NodePool). A *pattern* is an instance type of a NodePool plus a
//!    count per group that fits its allocatable minus the daemonset overhead, respecting host
//!    ports and hostname anti-affinity (conflicting groups never share a node).
//! 3. Column generation: the LP master covers every group's demand at least once, within the
//!    NodePools' limits; a greedy multi-dimensional knapsack prices new patterns from the duals.
//! 4. Diving: fix the LP's whole nodes (or round up its largest fractional one), re-solve the
//!    pods left with a few rounds of column generation, repeat; a small integer master finishes
//!    when the time runs out. The integer master over every pattern (warm-started from the
//!    cheaper of the FFD plan and the dive's, with a time limit and a gap) picks pattern counts
//!    too; the cheaper of the two is kept (the dive's on a tie). Pods are assigned to the chosen
//!    nodes and replayed through the scheduler's own checks; the plan is validated. If anything
//!    fails, or the plan is not cheaper, FFD stands.
//!
//! Column generation starts from the *fluid* LP (fractional nodes of each config, fractional pods
//! of each group on them, whole-pod fit counts as cuts), tightened by *pattern cuts*: per config,
//! a small column generation tries to cover the fluid optimum's per-node mix with whole patterns;
//! when it cannot with one node, its duals give a row every plan satisfies and the optimum breaks.
//! The patterns found there, and the per-node mixes rounded, seed the pattern LP. The lower
//! bound is the larger of the fluid LP's optimum (with its cuts) and Farley's bound on the LP
//! relaxation of the pattern formulation, both over every pod the plan places (topology ignored,
//! every compatible NodePool allowed), valid whenever no existing node has free capacity;
//! otherwise the per-unit price bound.
//!
//! Modules, in the order a run uses them: `run` (what may move, warm start, replay), `model`
//! (the formulation), `fluid` (fluid LP, pattern cuts), `colgen` (column generation, Farley's
//! bound) with `pricing` and `search` (its pricing problems), `dive` (diving, integer master),
//! `bound` (the bound outside a run) and `budget` (the time budget's phases, time limits and the
//! deterministic work limits).

mod bound;
mod budget;
mod colgen;
mod dive;
mod exact;
mod fluid;
mod model;
mod pricing;
mod run;
mod search;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use super::{lower_bound_per_hour, PackResult, PackStats, Packer};
use crate::cluster::ClusterSnapshot;
use crate::scheduling::{schedule, NewNodeClaim, SchedulerOptions, SchedulingResults};
use crate::validation::validate;

pub(super) use bound::pattern_bound;
pub use budget::WorkLimits;
pub use exact::{EXACT_MAX_PATTERNS, EXACT_MAX_VISITS};

use bound::model_is_relaxation;
use budget::{
    Effort, MAX_BUDGET_SCALE, MIN_DIVE_FINISH_SECS, MIN_FLUID_SECS, MIN_MASTER_SECS, PHASES,
    PODS_PER_BUDGET,
};
use dive::DIVE_ROUNDS;
use model::{Model, Pattern};

/// Column-generation rounds of the lower bound computed outside a packing run.
pub(super) const BOUND_ROUNDS: usize = 60;

/// A monotonic clock in seconds, injected so that the core never reads the time itself.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> f64 + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The MILP packer.
///
/// It starts from the FFD plan and keeps it unless it finds a valid plan that is cheaper (see
/// the [module documentation](crate::packing)).
///
/// # Guarantees
/// Whatever the limits and the timing, the plan it returns passed the scheduler's own checks
/// and the independent validator, costs no more than the FFD plan (it *is* the FFD plan when
/// anything fails), and its lower bound is valid.
///
/// # Caveats: time limits and determinism
/// By default every HiGHS call has a wall-clock time limit (the integer master
/// `time_limit_secs`, each exact pricing 0.1–0.2 s, the fluid LP the budget), and with a
/// [`Clock`] the phases stop at shares of `budget_secs`. How far a solve gets within its limit
/// depends on the machine and its load, so *which* valid plan comes back, and its lower bound,
/// can differ between two runs on the same snapshot. Without a clock only the HiGHS time limits
/// are time-dependent; on small snapshots they are rarely reached.
///
/// For byte-identical results, set `work_limits` (see [`Milp::with_work_limits`]) and no clock:
/// every HiGHS time limit is replaced by a node or iteration limit, and the run is bounded by
/// counts alone (`max_rounds`, the pricing search's node limit, the dive's rounds).
///
/// ```
/// use karp_core::cluster::ClusterSnapshot;
/// use karp_core::packing::{Milp, Packer, WorkLimits};
/// use karp_core::testing::{instance_type, nodepool, pod};
///
/// let types = vec![
///     instance_type("small").cpu("2").memory("8Gi").price(0.10).spot_price(0.10).build(),
///     instance_type("large").cpu("8").memory("32Gi").price(0.50).spot_price(0.50).build(),
/// ];
/// let snapshot = ClusterSnapshot {
///     node_pools: vec![nodepool("default", types)],
///     pods: (0..8).map(|i| pod(&format!("p{i}")).cpu("1").memory("1Gi").build()).collect(),
///     ..Default::default()
/// };
/// let milp = Milp::default().with_work_limits(WorkLimits::default());
/// let first = milp.pack(&snapshot);
/// assert_eq!(first, milp.pack(&snapshot));
/// assert!(first.results.cost_per_hour() < 0.5);
/// ```
#[derive(Debug, Clone)]
pub struct Milp {
    /// Scheduler options (also used for the FFD start).
    pub options: SchedulerOptions,
    /// Time limit of the integer master, in seconds per 1 000 pending pods (scaled like
    /// `budget_secs`); unused with `work_limits`.
    pub time_limit_secs: f64,
    /// Relative MIP gap at which the integer master stops.
    pub mip_gap: f64,
    /// Maximum column-generation rounds.
    pub max_rounds: usize,
    /// Wall-clock budget of the whole run per 1 000 pending pods (scaled linearly between 1 000
    /// and 5 000 pods, never below this value), in seconds, enforced when a [`Clock`] is given:
    /// pattern cuts on the fluid LP stop at 40 % of it, column generation at 65 %, Farley's
    /// bound at 70 %, diving at 90 % (then an integer master of what it left gets 5 % of
    /// `time_limit_secs`, at least 0.05 s), and the integer master over every pattern gets what
    /// is left (at least 0.2 s, at most `time_limit_secs`). Without `work_limits` the fluid LP's
    /// time limit is the budget too (at least 0.1 s).
    pub budget_secs: f64,
    /// The clock for `budget_secs`; without one only the round and time (or work) limits apply.
    pub clock: Option<Clock>,
    /// Deterministic work limits replacing every HiGHS time limit (none: time limits). With
    /// them and no clock, the same snapshot always gives the same [`PackResult`].
    pub work_limits: Option<WorkLimits>,
    /// Problems with at most this many maximal patterns (and whose listing visits at most
    /// [`EXACT_MAX_VISITS`] partial patterns) are solved exactly: the integer master over every
    /// maximal pattern, to a relative gap of 0, replaces column generation and diving (see
    /// [`PackStats::exact`](super::PackStats::exact)). 0 turns this off.
    pub exact_patterns: usize,
}

impl Default for Milp {
    fn default() -> Self {
        Milp {
            options: SchedulerOptions::default(),
            time_limit_secs: 1.5,
            mip_gap: 0.002,
            max_rounds: 400,
            budget_secs: 1.5,
            clock: None,
            work_limits: None,
            exact_patterns: EXACT_MAX_PATTERNS,
        }
    }
}

impl Milp {
    /// Use `clock` to enforce `budget_secs`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Replace every HiGHS time limit by `limits`: with no clock, the run is deterministic.
    #[must_use]
    pub fn with_work_limits(mut self, limits: WorkLimits) -> Self {
        self.work_limits = Some(limits);
        self
    }
}

impl Packer for Milp {
    fn name(&self) -> &'static str {
        "milp"
    }

    fn pack(&self, snapshot: &ClusterSnapshot) -> PackResult {
        // Static pools (`spec.replicas`) launch nothing for pods: their nodes stay destinations.
        if snapshot
            .node_pools
            .iter()
            .any(crate::cluster::NodePool::is_static)
        {
            let mut dynamic = snapshot.clone();
            dynamic.node_pools.retain(|p| !p.is_static());
            return self.pack(&dynamic);
        }
        let scale =
            (snapshot.pending().len() as f64 / PODS_PER_BUDGET).clamp(1.0, MAX_BUDGET_SCALE);
        let run = Run {
            started: self.now(),
            budget: self.budget_secs * scale,
            time_limit: self.time_limit_secs * scale,
        };
        self.pack_timed(snapshot, &run)
    }
}

/// Time accounting of one `pack` call.
struct Run {
    started: f64,
    budget: f64,
    time_limit: f64,
}

/// A problem small enough for [`Milp::pack_exact`]: its model, every maximal pattern, and
/// whether the model is a relaxation of every valid plan.
struct Small {
    model: Model,
    all: Vec<Pattern>,
    relaxation: bool,
}

/// What the LP phases leave: the fluid LP's value (0 if it failed), and column generation's
/// rounds and last cover duals.
struct Relaxed {
    fluid_value: f64,
    rounds: usize,
    duals: Vec<f64>,
}

impl Milp {
    fn now(&self) -> f64 {
        self.clock.as_ref().map_or(0.0, |c| (c.0)())
    }

    /// Fraction of the budget used since the run started (0 without a clock).
    fn elapsed_fraction(&self, run: &Run) -> f64 {
        match &self.clock {
            Some(c) if run.budget > 0.0 => ((c.0)() - run.started) / run.budget,
            _ => 0.0,
        }
    }

    /// Whether the run has used more than `share` of its budget (never without a clock).
    fn past(&self, run: &Run, share: f64) -> bool {
        self.elapsed_fraction(run) > share
    }

    /// `seconds`, or the work limit `pick` chooses when `work_limits` are set.
    fn effort(&self, seconds: f64, pick: impl Fn(&WorkLimits) -> Effort) -> Effort {
        Effort::of(self.work_limits, seconds, pick)
    }

    /// One packing run: FFD, the model of what the MILP may move, the LP phases, the integer
    /// phases, and the replay and validation of the plan, in that order; any failure keeps FFD.
    fn pack_timed(&self, snapshot: &ClusterSnapshot, run: &Run) -> PackResult {
        let ffd = schedule(snapshot, &self.options);
        let mut stats = PackStats {
            ffd_cost: ffd.cost_per_hour(),
            ..Default::default()
        };
        if ffd.new_nodeclaims.is_empty() {
            return PackResult {
                lower_bound_per_hour: 0.0,
                results: ffd,
                packer: "ffd",
                fallback: None,
                stats,
            };
        }
        // Movable pods become groups; the constrained pods of each FFD NodeClaim become a bundle.
        let (free, bundles) = run::split_ffd(snapshot, &ffd, &mut stats.fixed_pods);
        if free.is_empty() && bundles.iter().all(|b| b.pods.is_empty()) {
            return self.fallback(snapshot, ffd, stats, "nothing to pack".into());
        }
        let limits = run::remaining_limits(snapshot);
        let overheads = run::overheads(snapshot);
        let mut model = Model::new(snapshot, &free, &bundles, &overheads, limits, false);
        model.work = self.work_limits;
        stats.groups = model.groups.len();
        if model.fits.iter().any(Vec::is_empty) {
            return self.fallback(
                snapshot,
                ffd,
                stats,
                "a pod group fits no instance type of its NodePool".into(),
            );
        }
        let warm_patterns = model.warm_start(snapshot, &ffd);
        let relaxation =
            snapshot.nodes.is_empty() && model_is_relaxation(snapshot, &model, &free, &overheads);
        let all = (self.exact_patterns > 0)
            .then(|| model.all_patterns(self.exact_patterns))
            .flatten();
        if let Some(all) = all {
            let small = Small {
                model,
                all,
                relaxation,
            };
            return self.pack_exact(snapshot, ffd, stats, small, &bundles, run);
        }
        if !model.seed_single() {
            return self.fallback(snapshot, ffd, stats, "no single-group pattern fits".into());
        }
        let relaxed = match self.relax(&mut model, run) {
            Ok(r) => r,
            Err(e) => return self.fallback(snapshot, ffd, stats, e),
        };
        // The LP bound comes from this model when it is a relaxation of every valid plan.
        let model_lb = relaxation.then(|| self.model_bound(&model, &relaxed, run));
        stats.rounds = relaxed.rounds;
        stats.columns = model.patterns.len();
        stats.lp_cost = model.lp_value;
        let counts = match self.integer_plan(&mut model, run, &warm_patterns, &mut stats) {
            Ok(c) => c,
            Err(e) => return self.fallback_with(model_lb, snapshot, ffd, stats, e),
        };
        match run::replay_plan(snapshot, &self.options, &ffd, &model, &bundles, &counts) {
            Ok(rebuilt) => self.conclude(model_lb, snapshot, ffd, stats, rebuilt),
            Err(e) => self.fallback_with(model_lb, snapshot, ffd, stats, e),
        }
    }

    /// A small problem solved exactly: the integer master over every maximal pattern, with a
    /// relative gap of 0 within the rest of the budget (or `master_nodes` under work limits).
    /// Its dual bound is the plan's bound when the model is a relaxation; the FFD plan stands
    /// when this one is not cheaper.
    fn pack_exact(
        &self,
        snapshot: &ClusterSnapshot,
        ffd: SchedulingResults,
        mut stats: PackStats,
        small: Small,
        bundles: &[model::Bundle],
        run: &Run,
    ) -> PackResult {
        let Small {
            mut model,
            all,
            relaxation,
        } = small;
        stats.exact = true;
        for p in all {
            model.add_pattern(p);
        }
        stats.columns = model.patterns.len();
        let left = match &self.clock {
            Some(_) => (run.budget * (1.0 - self.elapsed_fraction(run))).max(MIN_MASTER_SECS),
            None => run.time_limit,
        };
        let limit = self.effort(left, |w| Effort::Nodes(w.master_nodes));
        let exact = match model.solve_exact(limit) {
            Ok(e) => e,
            Err(e) => return self.fallback(snapshot, ffd, stats, e),
        };
        stats.optimal = exact.optimal;
        // Without a dual bound (HiGHS stopped before its root LP), the relaxed model's bound.
        let model_lb = relaxation
            .then_some(exact.bound)
            .filter(|b| exact.optimal || *b > 0.0);
        match run::replay_plan(
            snapshot,
            &self.options,
            &ffd,
            &model,
            bundles,
            &exact.counts,
        ) {
            Ok(rebuilt) => self.conclude(model_lb, snapshot, ffd, stats, rebuilt),
            Err(e) => self.fallback_with(model_lb, snapshot, ffd, stats, e),
        }
    }

    /// The LP phases: the fluid LP and its pattern cuts (until [`budget::Phases::cuts`]), whose
    /// optimum and patterns seed column generation (until
    /// [`budget::Phases::column_generation`]).
    fn relax(&self, model: &mut Model, run: &Run) -> Result<Relaxed, String> {
        let limit = self.effort(run.budget.max(MIN_FLUID_SECS), |w| {
            Effort::Iterations(w.lp_iterations)
        });
        let fluid = model.fluid(limit, &|| self.past(run, PHASES.cuts));
        if let Some(f) = &fluid {
            model.seed_fluid(f);
        }
        let (rounds, duals) = model.generate(self.max_rounds, &|| {
            self.past(run, PHASES.column_generation)
        })?;
        Ok(Relaxed {
            fluid_value: fluid.as_ref().map_or(0.0, |f| f.value),
            rounds,
            duals,
        })
    }

    /// The LP bound from the model (when it is a relaxation): the larger of the fluid LP's
    /// value, the bound column generation proved, and Farley's bound from the last duals
    /// (until [`budget::Phases::farley`]).
    fn model_bound(&self, model: &Model, relaxed: &Relaxed, run: &Run) -> f64 {
        let floor = relaxed.fluid_value.max(model.cg_bound);
        let farley = model.farley_bound(&relaxed.duals, floor, &|| self.past(run, PHASES.farley));
        farley.max(floor)
    }

    /// The integer phases: diving first (fix the LP's whole nodes, re-solve what is left, until
    /// [`budget::Phases::dive`]), then the integer master over every pattern, started from the
    /// cheaper of the FFD plan (`warm_patterns`) and the dive's. The cheaper plan is kept, the
    /// dive's on a tie (then `stats.residual` is set). Returns pattern counts.
    fn integer_plan(
        &self,
        model: &mut Model,
        run: &Run,
        warm_patterns: &[Pattern],
        stats: &mut PackStats,
    ) -> Result<Vec<u32>, String> {
        let mut warm = vec![0.0; model.patterns.len()];
        for wp in warm_patterns {
            if let Some(i) = model.patterns.iter().position(|p| p == wp) {
                warm[i] += 1.0;
            }
        }
        let finish = self.effort(
            (run.time_limit * PHASES.dive_finish).max(MIN_DIVE_FINISH_SECS),
            |w| Effort::Nodes(w.master_nodes),
        );
        let dive = model.dive_plan(
            DIVE_ROUNDS,
            &|| self.past(run, PHASES.dive),
            finish,
            self.mip_gap,
        );
        let left = match &self.clock {
            Some(_) => (run.budget * (1.0 - self.elapsed_fraction(run)))
                .clamp(MIN_MASTER_SECS, run.time_limit),
            None => run.time_limit,
        };
        // The dive's plan as counts of the model's patterns; the integer master starts from the
        // cheaper of it and the FFD plan, and the dive's plan stands unless the master beats it.
        let from_dive: Option<Vec<u32>> = dive.map(|plan| model.counts_of(&plan));
        warm.resize(model.patterns.len(), 0.0);
        let whole = |counts: &[u32]| counts.iter().map(|&c| f64::from(c)).collect::<Vec<f64>>();
        if let Some(d) = &from_dive {
            if model.cost(&whole(d)) < model.cost(&warm) {
                warm = whole(d);
            }
        }
        let limit = self.effort(left, |w| Effort::Nodes(w.master_nodes));
        let mut counts = model.solve_integer(&warm, limit, self.mip_gap)?;
        if let Some(d) = from_dive {
            if model.cost(&whole(&d)) <= model.cost(&whole(&counts)) + 1e-9 {
                stats.residual = true;
                counts = d;
            }
        }
        Ok(counts)
    }

    /// The MILP's plan (FFD's with `rebuilt` as its new NodeClaims) if it passes the validator
    /// and is cheaper than FFD; FFD otherwise.
    fn conclude(
        &self,
        model_lb: Option<f64>,
        snapshot: &ClusterSnapshot,
        ffd: SchedulingResults,
        stats: PackStats,
        rebuilt: Vec<NewNodeClaim>,
    ) -> PackResult {
        let mut results = ffd.clone();
        results.new_nodeclaims = rebuilt;
        if let Err(v) = validate(snapshot, &results) {
            let first = v.first().map(ToString::to_string).unwrap_or_default();
            return self.fallback_with(
                model_lb,
                snapshot,
                ffd,
                stats,
                format!("the MILP plan failed validation: {first}"),
            );
        }
        if results.cost_per_hour() >= ffd.cost_per_hour() - 1e-9 {
            return self.fallback_with(
                model_lb,
                snapshot,
                ffd,
                stats,
                "the MILP plan is not cheaper than FFD".into(),
            );
        }
        let lb = self.bound(snapshot, &results, model_lb);
        PackResult {
            lower_bound_per_hour: lb,
            results,
            packer: "milp",
            fallback: None,
            stats,
        }
    }

    fn fallback(
        &self,
        snapshot: &ClusterSnapshot,
        ffd: SchedulingResults,
        stats: PackStats,
        why: String,
    ) -> PackResult {
        self.fallback_with(None, snapshot, ffd, stats, why)
    }

    fn fallback_with(
        &self,
        model_lb: Option<f64>,
        snapshot: &ClusterSnapshot,
        ffd: SchedulingResults,
        stats: PackStats,
        why: String,
    ) -> PackResult {
        let lb = self.bound(snapshot, &ffd, model_lb);
        PackResult {
            lower_bound_per_hour: lb,
            results: ffd,
            packer: "ffd",
            fallback: Some(why),
            stats,
        }
    }

    /// The plan's lower bound: the per-unit bound, and the LP bound from the MILP's model when it
    /// is a relaxation, else from a relaxed model built for the purpose.
    fn bound(
        &self,
        snapshot: &ClusterSnapshot,
        results: &SchedulingResults,
        model_lb: Option<f64>,
    ) -> f64 {
        let simple = lower_bound_per_hour(snapshot, results);
        // A proven optimum sums the same prices in another order: keep the bound at the cost.
        let model_lb = model_lb.map(|b| clamp_to_cost(b, results.cost_per_hour()));
        simple.max(model_lb.unwrap_or_else(|| {
            pattern_bound(
                snapshot,
                results,
                self.max_rounds.min(BOUND_ROUNDS),
                &|| false,
                self.work_limits,
            )
        }))
    }
}

/// `bound`, or `cost` when the bound exceeds it by rounding only (1e-9 relative).
fn clamp_to_cost(bound: f64, cost: f64) -> f64 {
    if bound > cost && bound <= cost * (1.0 + 1e-9) {
        cost
    } else {
        bound
    }
}
