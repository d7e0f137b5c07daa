//! What bounds a packing run: the time budget and how its phases share it, the time limits of
//! the HiGHS calls, and the deterministic work limits that replace both.

/// How the phases of a packing run share its time budget (`Milp::budget_secs`, scaled by the
/// pod count), enforced only when a clock is given. The phases run in this order; each share is
/// the fraction of the budget elapsed since the run started at which that phase stops (it
/// finishes the step it is in). The integer master over every pattern, which comes last, gets
/// what is left of the budget ([`MIN_MASTER_SECS`] at least, `Milp::time_limit_secs` at most).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Phases {
    /// Pattern cuts on the fluid LP (the fluid LP itself is always solved once).
    pub(super) cuts: f64,
    /// Column generation of the pattern LP.
    pub(super) column_generation: f64,
    /// Farley's lower bound from the last LP duals (when the model is a relaxation).
    pub(super) farley: f64,
    /// Diving; when it stops, an integer master of what it left finishes its plan within
    /// `dive_finish` of the integer master's time limit.
    pub(super) dive: f64,
    /// The share of `Milp::time_limit_secs` (scaled) that the integer master finishing a dive
    /// gets ([`MIN_DIVE_FINISH_SECS`] at least).
    pub(super) dive_finish: f64,
}

/// The phases of every packing run.
pub(super) const PHASES: Phases = Phases {
    cuts: 0.4,
    column_generation: 0.65,
    farley: 0.7,
    dive: 0.9,
    dive_finish: 0.05,
};

/// Pending pods per unit of the budget and time limits: both scale linearly with the pod count
/// above this many pods.
pub(super) const PODS_PER_BUDGET: f64 = 1000.0;
/// The largest factor the pod count scales the budget and time limits by.
pub(super) const MAX_BUDGET_SCALE: f64 = 5.0;
/// The least time the integer master over every pattern gets, even once the budget is spent:
/// enough for HiGHS to load the model and return the warm start.
pub(super) const MIN_MASTER_SECS: f64 = 0.2;
/// The least time the integer master that finishes a dive gets.
pub(super) const MIN_DIVE_FINISH_SECS: f64 = 0.05;
/// The least time limit of the fluid LP (the budget otherwise): it is the first bound and the
/// seed of column generation.
pub(super) const MIN_FLUID_SECS: f64 = 0.1;
/// Time limit of the fluid LP of the bound computed outside a packing run (no budget there).
pub(super) const BOUND_FLUID_SECS: f64 = 30.0;
/// Time limit of one exact (HiGHS) pricing in a column-generation round: its dual bound still
/// counts when it runs out.
pub(super) const ROUND_PRICING_SECS: f64 = 0.2;
/// Time limit of one exact (HiGHS) pricing in Farley's final bound.
pub(super) const FARLEY_PRICING_SECS: f64 = 0.1;

/// Deterministic limits on the HiGHS calls of the MILP packer, replacing their wall-clock time
/// limits (see `Milp::work_limits`).
///
/// # Guarantees
/// With these set and no clock, every step of a run is bounded by a count (rounds, search nodes,
/// branch-and-bound nodes, simplex iterations) rather than by time, HiGHS runs on one thread, and
/// two runs on the same snapshot give the same plan, bound and stats.
///
/// # Caveats
/// A run may take longer than the time limits would have allowed on a large snapshot, or stop
/// earlier on a small one: the counts are not tuned to match the time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkLimits {
    /// Branch-and-bound nodes of each integer master (over every pattern, and the one that
    /// finishes a dive) (HiGHS `mip_max_nodes`).
    pub master_nodes: u32,
    /// Branch-and-bound nodes of each exact pricing problem (HiGHS `mip_max_nodes`).
    pub pricing_nodes: u32,
    /// Simplex iterations of each solve of the fluid LP (HiGHS `simplex_iteration_limit`).
    pub lp_iterations: u32,
}

impl Default for WorkLimits {
    fn default() -> Self {
        WorkLimits {
            master_nodes: 1_000,
            pricing_nodes: 500,
            lp_iterations: 200_000,
        }
    }
}

/// What stops one HiGHS call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Effort {
    /// A wall-clock time limit, in seconds.
    Seconds(f64),
    /// At most this many branch-and-bound nodes (a MIP), no time limit.
    Nodes(u32),
    /// At most this many simplex iterations (an LP), no time limit.
    Iterations(u32),
}

impl From<f64> for Effort {
    fn from(seconds: f64) -> Self {
        Effort::Seconds(seconds)
    }
}

impl Effort {
    /// `Seconds(seconds)` without work limits, else the limit `pick` chooses from them.
    pub(super) fn of(
        work: Option<WorkLimits>,
        seconds: f64,
        pick: impl Fn(&WorkLimits) -> Effort,
    ) -> Effort {
        work.as_ref().map_or(Effort::Seconds(seconds), pick)
    }

    /// The HiGHS option that sets this limit, and its value.
    pub(super) fn option(self) -> (&'static str, HighsValue) {
        match self {
            Effort::Seconds(s) => ("time_limit", HighsValue::Float(s)),
            Effort::Nodes(n) => ("mip_max_nodes", HighsValue::Int(clamp_int(n))),
            Effort::Iterations(n) => ("simplex_iteration_limit", HighsValue::Int(clamp_int(n))),
        }
    }

    /// Make `model` quiet and single-threaded, and set this limit.
    pub(super) fn configure(self, model: &mut ::highs::Model) -> Option<()> {
        for (option, on) in [("output_flag", false), ("log_to_console", false)] {
            model.try_set_option(option, on).ok()?;
        }
        model.try_set_option("threads", 1).ok()?;
        match self.option() {
            (name, HighsValue::Float(v)) => model.try_set_option(name, v).ok(),
            (name, HighsValue::Int(v)) => model.try_set_option(name, v).ok(),
        }
    }
}

/// The value of a HiGHS option this crate sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum HighsValue {
    /// A float option.
    Float(f64),
    /// An integer option.
    Int(i32),
}

/// HiGHS integer options are 32-bit.
fn clamp_int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
