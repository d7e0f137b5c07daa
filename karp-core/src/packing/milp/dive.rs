//! Integer plans: diving (fix the LP's whole nodes, re-solve the remainder) and the integer master.

use std::collections::{BTreeMap, BTreeSet};

use ::highs::HighsSolutionStatus;
use good_lp::{highs, SolverModel};

use super::budget::Effort;
use super::model::{Model, Pattern};

/// Column-generation rounds per diving step.
pub(super) const DIVE_ROUNDS: usize = 2;

impl Model {
    /// The model of the pods `left` (per group): the patterns found so far, cut down to what is
    /// left, are its first columns, with a single-group pattern for every group left. `None` if
    /// some group left fits nowhere.
    pub(super) fn remainder(&self, left: &[usize]) -> Option<Model> {
        let mut sub = Model {
            groups: self.groups.clone(),
            configs: self.configs.clone(),
            fits: self.fits.clone(),
            patterns: Vec::new(),
            seen: BTreeSet::new(),
            limits: BTreeMap::new(),
            lp_value: 0.0,
            cg_bound: 0.0,
            // Its rounds stay cheap: the remainder's own bound is of no use.
            bound_rounds: false,
            lp_solution: Vec::new(),
            work: self.work,
        };
        for (g, l) in sub.groups.iter_mut().zip(left) {
            g.demand = *l;
        }
        for p in &self.patterns {
            let counts: Vec<(usize, u32)> = p
                .counts
                .iter()
                .map(|&(g, n)| (g, n.min(u32::try_from(left[g]).unwrap_or(u32::MAX))))
                .filter(|(_, n)| *n > 0)
                .collect();
            if !counts.is_empty() {
                sub.add_pattern(Pattern {
                    config: p.config,
                    counts,
                });
            }
        }
        sub.seed_single().then_some(sub)
    }

    /// An integer plan by diving: fix every whole node of the LP, or else round up its largest
    /// fractional node, re-solve the LP of what is left with a few rounds of column generation,
    /// and repeat until every pod is placed. Once `stop` fires, an integer master of what is
    /// left (within `limit`, started from its LP rounded up) finishes the plan. Returns
    /// (pattern, count) pairs, or `None` under NodePool limits (what is left would need them
    /// split) or when a step fails.
    pub(super) fn dive_plan(
        &self,
        rounds: usize,
        stop: &dyn Fn() -> bool,
        limit: impl Into<Effort>,
        gap: f64,
    ) -> Option<Vec<(Pattern, u32)>> {
        let limit = limit.into();
        if !self.limits.is_empty() || self.lp_solution.is_empty() {
            return None;
        }
        let mut plan: Vec<(Pattern, u32)> = Vec::new();
        let mut left: Vec<usize> = self.groups.iter().map(|g| g.demand).collect();
        let mut lp: Vec<(Pattern, f64)> = self
            .patterns
            .iter()
            .cloned()
            .zip(self.lp_solution.iter().copied())
            .collect();
        let mut model: Option<Model> = None;
        loop {
            let mut fix: Vec<(Pattern, u32)> = lp
                .iter()
                .filter(|(_, x)| *x >= 1.0 - 1e-9)
                .map(|(p, x)| (p.clone(), (x + 1e-9).floor() as u32))
                .collect();
            let finish = stop();
            if finish {
                // Out of time: an integer master of what is left, from its LP rounded up (which
                // covers it).
                let sub = model.as_ref().unwrap_or(self);
                let warm: Vec<f64> = (0..sub.patterns.len())
                    .map(|i| {
                        sub.lp_solution
                            .get(i)
                            .map_or(0.0, |x| (x - 1e-9).ceil().max(0.0))
                    })
                    .collect();
                let counts = sub.solve_integer(&warm, limit, gap).ok()?;
                fix = sub
                    .patterns
                    .iter()
                    .cloned()
                    .zip(counts)
                    .filter(|(_, c)| *c > 0)
                    .collect();
            } else if fix.is_empty() {
                let largest = lp
                    .iter()
                    .filter(|(_, x)| *x > 1e-9)
                    .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
                fix.push((largest.0.clone(), 1));
            }
            for (p, n) in fix {
                let mut counts: Vec<(usize, u32)> = Vec::new();
                for _ in 0..n {
                    counts.clear();
                    for &(g, c) in &p.counts {
                        let c = c.min(u32::try_from(left[g]).unwrap_or(u32::MAX));
                        if c > 0 {
                            left[g] -= c as usize;
                            counts.push((g, c));
                        }
                    }
                    if counts.is_empty() {
                        break;
                    }
                    let cut = Pattern {
                        config: p.config,
                        counts: std::mem::take(&mut counts),
                    };
                    match plan.iter_mut().find(|(q, _)| *q == cut) {
                        Some((_, m)) => *m += 1,
                        None => plan.push((cut, 1)),
                    }
                }
            }
            if left.iter().all(|l| *l == 0) {
                return Some(plan);
            }
            if finish {
                return None;
            }
            let base = model.as_ref().unwrap_or(self);
            let mut sub = base.remainder(&left)?;
            sub.generate(rounds, stop).ok()?;
            lp = sub
                .patterns
                .iter()
                .cloned()
                .zip(sub.lp_solution.iter().copied())
                .collect();
            model = Some(sub);
        }
    }

    /// Solve the integer master within `limit` (seconds, or branch-and-bound nodes) and the
    /// relative gap `gap`, from the pattern counts `warm`; returns pattern counts.
    pub(super) fn solve_integer(
        &self,
        warm: &[f64],
        limit: impl Into<Effort>,
        gap: f64,
    ) -> Result<Vec<u32>, String> {
        let solved = self.integer_master(Some(warm), limit.into(), gap, "integer master")?;
        Ok(pattern_counts(&solved))
    }

    /// The integer master over the model's patterns, solved by HiGHS within `limit` and the
    /// relative gap `gap`, from the pattern counts `warm` if given (then without presolve, see
    /// [`warm_start`]); `what` names it in errors. Fails unless HiGHS returns a feasible
    /// solution.
    pub(super) fn integer_master(
        &self,
        warm: Option<&[f64]>,
        limit: Effort,
        gap: f64,
        what: &str,
    ) -> Result<::highs::SolvedModel, String> {
        let (vars, _, objective, cover, limits) = self.master(true);
        let mut problem = vars.minimise(objective).using(highs);
        for c in cover.into_iter().chain(limits) {
            problem.add_constraint(c);
        }
        let mut model = problem
            .try_into_inner()
            .map_err(|e| format!("{what}: {e}"))?;
        limit
            .configure(&mut model)
            .ok_or_else(|| format!("{what}: setting HiGHS options"))?;
        model
            .try_set_option("mip_rel_gap", gap)
            .map_err(|e| format!("{what}: mip_rel_gap: {e:?}"))?;
        if gap == 0.0 {
            // Optimal then means within 1e-9 $/h, not HiGHS's default 1e-6.
            model
                .try_set_option("mip_abs_gap", 1e-9)
                .map_err(|e| format!("{what}: mip_abs_gap: {e:?}"))?;
        }
        if let Some(warm) = warm {
            warm_start(&mut model, warm).map_err(|e| format!("{what}: {e}"))?;
        }
        let solved = model.try_solve().map_err(|e| format!("{what}: {e:?}"))?;
        if solved.primal_solution_status() != HighsSolutionStatus::Feasible {
            return Err(format!("{what}: no solution ({:?})", solved.status()));
        }
        Ok(solved)
    }
}

/// Pattern counts of a solved integer master, in pattern (column) order.
pub(super) fn pattern_counts(solved: &::highs::SolvedModel) -> Vec<u32> {
    solved
        .get_solution()
        .columns()
        .iter()
        .map(|v| v.round().max(0.0) as u32)
        .collect()
}

/// Start `model`'s branch and bound from the column values `warm` (none when empty), with
/// presolve off.
///
/// HiGHS 1.16 maps a MIP start into its presolved space without the objective of the columns
/// presolve removed: a start that uses them then counts as objective 0 there, and the search
/// stops at once, reporting the start optimal with a dual bound of 0. Without presolve the start
/// keeps its value and branch and bound improves on it.
fn warm_start(model: &mut ::highs::Model, warm: &[f64]) -> Result<(), String> {
    if warm.is_empty() {
        return Ok(());
    }
    model
        .try_set_option("presolve", "off")
        .map_err(|e| format!("presolve: {e:?}"))?;
    model
        .try_set_solution(Some(warm), None, None, None)
        .map_err(|e| format!("warm start: {e:?}"))
}

impl Model {
    /// A plan of (pattern, count) pairs as counts of the model's patterns, adding the patterns
    /// it lacks.
    pub(super) fn counts_of(&mut self, plan: &[(Pattern, u32)]) -> Vec<u32> {
        for (p, _) in plan {
            self.add_pattern(p.clone());
        }
        let mut counts = vec![0; self.patterns.len()];
        for (p, c) in plan {
            if let Some(i) = self.patterns.iter().position(|q| q == p) {
                counts[i] += c;
            }
        }
        counts
    }
}
