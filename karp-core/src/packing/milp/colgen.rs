//! Column generation: the LP master over the patterns, the pricing rounds that add columns, and
//! Farley's lower bound from the master's duals.

use good_lp::solvers::{DualValues, SolutionWithDual};
use good_lp::{
    highs, variable, Constraint, Expression, ProblemVariables, Solution, SolverModel, Variable,
};

use super::budget::{FARLEY_PRICING_SECS, ROUND_PRICING_SECS};
use super::model::{Model, Pattern};
use super::search::{EARLIER_INCUMBENTS, SEARCH_NODES};

/// Configs whose pricing bound Farley's bound refines (the most promising ones).
pub(super) const REFINED_CONFIGS: usize = 400;

impl Model {
    /// Build the master problem over the current patterns.
    #[allow(clippy::type_complexity)]
    pub(super) fn master(
        &self,
        integer: bool,
    ) -> (
        ProblemVariables,
        Vec<Variable>,
        Expression,
        Vec<Constraint>,
        Vec<Constraint>,
    ) {
        let mut vars = ProblemVariables::new();
        let x: Vec<Variable> = self
            .patterns
            .iter()
            .map(|_| {
                vars.add(if integer {
                    variable().integer().min(0)
                } else {
                    variable().min(0)
                })
            })
            .collect();
        let objective: Expression = self
            .patterns
            .iter()
            .zip(&x)
            .map(|(p, v)| self.configs[p.config].price * *v)
            .sum();
        let mut cover: Vec<Expression> = vec![Expression::from(0.0); self.groups.len()];
        for (p, v) in self.patterns.iter().zip(&x) {
            for &(g, n) in &p.counts {
                cover[g] += f64::from(n) * *v;
            }
        }
        let cover_rows: Vec<Constraint> = cover
            .into_iter()
            .enumerate()
            .map(|(g, e)| e.geq(self.groups[g].demand as f64))
            .collect();
        let mut limit_rows = Vec::new();
        for (&pool, (lim, nodes)) in &self.limits {
            for (name, left) in lim {
                let e: Expression = self
                    .patterns
                    .iter()
                    .zip(&x)
                    .filter(|(p, _)| self.configs[p.config].pool == pool)
                    .map(|(p, v)| self.configs[p.config].it.capacity.get(name) as f64 * *v)
                    .sum();
                limit_rows.push(e.leq(*left as f64));
            }
            if let Some(n) = nodes {
                let e: Expression = self
                    .patterns
                    .iter()
                    .zip(&x)
                    .filter(|(p, _)| self.configs[p.config].pool == pool)
                    .map(|(_, v)| Expression::from(*v))
                    .sum();
                limit_rows.push(e.leq(*n as f64));
            }
        }
        (vars, x, objective, cover_rows, limit_rows)
    }

    /// Column generation; returns (rounds, the last LP duals of the cover rows).
    ///
    /// Every round solves the LP master, then adds the improving patterns of the cheap pricing
    /// ([`Model::price_round`]); only when it finds none, those of exact pricing
    /// ([`Model::exact_round`]). It ends when a round adds nothing, `stop` fires or after
    /// `max_rounds` rounds.
    pub(super) fn generate(
        &mut self,
        max_rounds: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<(usize, Vec<f64>), String> {
        let mut duals = vec![0.0; self.groups.len()];
        for round in 0..max_rounds {
            if round > 0 && stop() {
                return Ok((round, duals));
            }
            let costs;
            (duals, costs) = self.solve_master()?;
            let mut added = self.price_round(&duals, &costs, stop);
            if added == 0 && !stop() {
                added += self.exact_round(&duals, &costs, stop);
            }
            if added == 0 {
                return Ok((round + 1, duals));
            }
        }
        Ok((max_rounds, duals))
    }

    /// Solve the LP master over the current patterns (keeping its solution and value): the
    /// duals of the cover rows, and per config what a pattern must be worth to improve the LP
    /// (its price plus the penalty of the NodePool limits' duals).
    fn solve_master(&mut self) -> Result<(Vec<f64>, Vec<f64>), String> {
        let (vars, x, objective, cover, limits) = self.master(false);
        let mut problem = vars.minimise(objective).using(highs).set_threads(1);
        let cover_refs: Vec<_> = cover
            .into_iter()
            .map(|c| problem.add_constraint(c))
            .collect();
        let limit_refs: Vec<_> = limits
            .into_iter()
            .map(|c| problem.add_constraint(c))
            .collect();
        let mut sol = problem.solve().map_err(|e| format!("LP master: {e}"))?;
        self.lp_solution = x.iter().map(|v| sol.value(*v).max(0.0)).collect();
        self.lp_value = self.cost(&self.lp_solution);
        let d = sol.compute_dual();
        let duals = cover_refs
            .iter()
            .map(|c| d.dual(c.clone()).max(0.0))
            .collect();
        // Limit duals are ≤ 0 for ≤ rows: they raise the cost of configs of that pool.
        let limit_duals: Vec<f64> = limit_refs
            .iter()
            .map(|c| d.dual(c.clone()).min(0.0))
            .collect();
        let mut penalty = vec![0.0; self.configs.len()];
        let mut row = 0;
        for (&pool, (lim, nodes)) in &self.limits {
            for name in lim.keys() {
                for (k, cfg) in self.configs.iter().enumerate() {
                    if cfg.pool == pool {
                        penalty[k] -= limit_duals[row] * cfg.it.capacity.get(name) as f64;
                    }
                }
                row += 1;
            }
            if nodes.is_some() {
                for (k, cfg) in self.configs.iter().enumerate() {
                    if cfg.pool == pool {
                        penalty[k] -= limit_duals[row];
                    }
                }
                row += 1;
            }
        }
        // What a pattern of each config must be worth to improve the LP.
        let costs: Vec<f64> = (self.configs.iter().zip(&penalty))
            .map(|(c, pen)| c.price + pen)
            .collect();
        Ok((duals, costs))
    }

    /// Greedy pricing of every config, then the search on the configs that bound Farley's θ at
    /// these duals (without HiGHS): its patterns are columns too, and the bound it proves on
    /// the way is kept. Returns how many improving patterns it added.
    fn price_round(&mut self, duals: &[f64], costs: &[f64], stop: &dyn Fn() -> bool) -> usize {
        let mut added = 0;
        let mut found: Vec<Pattern> = Vec::new();
        for k in 0..self.configs.len() {
            if k % 64 == 63 && stop() {
                break;
            }
            if let Some((_, pattern)) = self.price(k, duals) {
                found.push(pattern);
            }
        }
        if self.bound_rounds {
            let (lb, searched) = self.farley(duals, self.cg_bound, false, stop);
            self.cg_bound = self.cg_bound.max(lb);
            found.extend(searched);
        }
        for p in found {
            let worth: f64 = p.counts.iter().map(|&(g, n)| duals[g] * f64::from(n)).sum();
            if worth > costs[p.config] * (1.0 + 1e-7) + 1e-9 && self.add_pattern(p) {
                added += 1;
            }
        }
        added
    }

    /// The greedy found nothing: price the most promising configs exactly, by the
    /// branch-and-bound search, then HiGHS on the configs it gave up on. When every promising
    /// config is priced exactly (and no limit adds a penalty), the round also yields Farley's
    /// bound: θ = the largest exact value/price ratio. Returns how many patterns it added.
    fn exact_round(&mut self, duals: &[f64], costs: &[f64], stop: &dyn Fn() -> bool) -> usize {
        let mut added = 0;
        let mut promising: Vec<(f64, usize)> = costs
            .iter()
            .enumerate()
            .map(|(k, cost)| (self.price_upper_bound(k, duals) / cost.max(1e-12), k))
            .filter(|(r, _)| *r > 1.0 + 1e-6)
            .collect();
        promising.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut theta: Option<f64> = self.limits.is_empty().then_some(1.0 + 1e-6);
        let improving = |value: f64, k: usize| value > costs[k] * (1.0 + 1e-6) + 1e-9;
        // Branch and bound on every promising config; its best pattern is a column even
        // when the search gives up before proving it optimal.
        let mut unproved: Vec<usize> = Vec::new();
        for (i, &(_, k)) in promising.iter().enumerate() {
            if i % 16 == 15 && stop() {
                theta = None;
                break;
            }
            let found = self.search(
                k,
                duals,
                SEARCH_NODES,
                costs[k] * (1.0 + 1e-6),
                EARLIER_INCUMBENTS,
            );
            if improving(found.value, k) && self.add_pattern(found.pattern) {
                added += 1;
            }
            for p in found.earlier {
                if self.add_pattern(p) {
                    added += 1;
                }
            }
            let price = self.configs[k].price;
            if !found.proved {
                unproved.push(k);
            } else if price > 0.0 {
                theta = theta.map(|t| t.max(found.value / price));
            } else {
                theta = None;
            }
        }
        // HiGHS on the configs the search gave up on, only while nothing better turned
        // up (a found column ends the round; the next duals differ anyway).
        for k in unproved {
            if stop() || added > 0 {
                theta = None;
                break;
            }
            let price = self.configs[k].price;
            match self.exact_price(k, duals, self.pricing_effort(ROUND_PRICING_SECS)) {
                Some((bound, found, pattern)) => {
                    theta = theta.filter(|_| price > 0.0).map(|t| t.max(bound / price));
                    if improving(found, k) && self.add_pattern(pattern) {
                        added += 1;
                    }
                }
                None => theta = None,
            }
        }
        if let Some(t) = theta {
            self.cg_bound = self.cg_bound.max(self.dual_value(duals) / t);
        }
        added
    }

    /// Farley's lower bound from cover duals (limits ignored, which only lowers the LP): the duals
    /// scaled by θ = max over configs of (best pattern value bound / price) are feasible for the
    /// LP's dual, so `Σ n·π / θ` bounds the LP and every integer plan from below.
    ///
    /// Stops early (returning what it has, still valid) once the bound cannot exceed `floor`.
    pub(super) fn farley_bound(&self, duals: &[f64], floor: f64, stop: &dyn Fn() -> bool) -> f64 {
        self.farley(duals, floor, true, stop).0
    }

    /// [`Model::farley_bound`], with HiGHS on the configs the search cannot prove only if
    /// `exact`; also returns the best pattern of every config it searched.
    pub(super) fn farley(
        &self,
        duals: &[f64],
        floor: f64,
        exact: bool,
        stop: &dyn Fn() -> bool,
    ) -> (f64, Vec<Pattern>) {
        let mut searched = Vec::new();
        let total = self.dual_value(duals);
        if total <= 0.0 {
            return (0.0, searched);
        }
        let mut cheap: Vec<(f64, usize, f64)> = Vec::with_capacity(self.configs.len());
        for k in 0..self.configs.len() {
            let ub = self.price_upper_bound(k, duals);
            let price = self.configs[k].price;
            if price <= 0.0 {
                if ub > 0.0 {
                    return (0.0, searched);
                }
                continue;
            }
            cheap.push((ub / price, k, ub));
        }
        cheap.sort_by(|a, b| b.0.total_cmp(&a.0));
        // θ may end below 1 (duals from another relaxation, such as the fluid LP's, that no
        // integer pattern reaches): dividing by it then lifts the bound above their value.
        let mut theta: f64 = 0.0;
        for (i, (ratio, k, ub)) in cheap.into_iter().enumerate() {
            if ratio <= theta {
                break;
            }
            if i >= REFINED_CONFIGS {
                // Unrefined configs keep their (larger, still valid) single-dimension bound.
                theta = theta.max(ratio);
                break;
            }
            let mut refined = self
                .refined_upper_bound(k, duals, ub)
                .min(self.integer_upper_bound(k, duals));
            if refined / self.configs[k].price > theta && !stop() {
                // The final bound needs no columns; in-round searches keep their best few.
                let (threshold, keep) = if exact {
                    (f64::INFINITY, 0)
                } else {
                    (self.configs[k].price * (1.0 + 1e-6), EARLIER_INCUMBENTS)
                };
                let found = self.search(k, duals, SEARCH_NODES, threshold, keep);
                if found.proved {
                    refined = refined.min(found.value);
                } else if let Some((b, _, _)) = exact
                    .then(|| self.exact_price(k, duals, self.pricing_effort(FARLEY_PRICING_SECS)))
                    .flatten()
                {
                    refined = refined.min(b);
                }
                searched.push(found.pattern);
                searched.extend(found.earlier);
            }
            theta = theta.max(refined / self.configs[k].price);
            if total / theta <= floor {
                break;
            }
        }
        if theta <= 1e-12 {
            return (0.0, searched);
        }
        (total / theta, searched)
    }
}
