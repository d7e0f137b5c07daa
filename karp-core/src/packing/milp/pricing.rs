//! Pricing: the greedy knapsack, exact pricing in HiGHS, and the upper bounds on a pattern's value
//! (fractional, integer one-dimensional, and the knapsack LP's Lagrangian dual).

use std::collections::BTreeMap;

use good_lp::{highs, variable, Constraint, Expression, ProblemVariables, SolverModel, Variable};

use super::budget::Effort;
use super::model::{share, Model, Pattern};
use crate::resources::Resources;

impl Model {
    /// The limit of one exact pricing: `seconds`, or the model's work limit.
    pub(super) fn pricing_effort(&self, seconds: f64) -> Effort {
        Effort::of(self.work, seconds, |w| Effort::Nodes(w.pricing_nodes))
    }

    /// Greedy knapsack for config `k` under group values `value`; the best of a few orderings.
    pub(super) fn price(&self, k: usize, value: &[f64]) -> Option<(f64, Pattern)> {
        let cfg = &self.configs[k];
        let room = &cfg.room;
        let cands: Vec<usize> = (0..self.groups.len())
            .filter(|&g| value[g] > 1e-12 && self.fits[g].binary_search(&k).is_ok())
            .collect();
        if cands.is_empty() {
            return None;
        }
        let size = |g: usize, mode: usize| -> f64 {
            let r = &self.groups[g].requests;
            let c = share(r.cpu, room.cpu);
            let m = share(r.memory, room.memory);
            let p = share(r.pods, room.pods);
            // Extended resources (GPUs): the largest share among them.
            let e = room
                .extended
                .iter()
                .map(|(name, cap)| share(r.extended.get(name).copied().unwrap_or(0), *cap))
                .fold(0.0, f64::max);
            match mode {
                0 => c.max(m).max(p).max(e),
                1 => c + m + p + e,
                2 => c,
                3 => m,
                _ => e,
            }
        };
        let modes = if room.extended.is_empty() { 4 } else { 5 };
        let mut best: Option<(f64, Pattern)> = None;
        for mode in 0..modes {
            let mut order = cands.clone();
            order.sort_by(|&a, &b| {
                (value[b] / size(b, mode).max(1e-12))
                    .total_cmp(&(value[a] / size(a, mode).max(1e-12)))
                    .then(a.cmp(&b))
            });
            let mut left = room.clone();
            let mut counts: Vec<(usize, u32)> = Vec::new();
            let mut total = 0.0;
            for g in order {
                if counts
                    .iter()
                    .any(|(h, _)| self.groups[g].conflicts.contains(h))
                {
                    continue;
                }
                let n = self.fit_count(g, &left);
                if n == 0 {
                    continue;
                }
                left = left.minus(&self.groups[g].requests.scaled(i64::from(n)));
                counts.push((g, n));
                total += value[g] * f64::from(n);
            }
            counts.sort_unstable();
            if best.as_ref().is_none_or(|(b, _)| total > *b) {
                best = Some((total, Pattern { config: k, counts }));
            }
        }
        best
    }

    /// The knapsack items of config `k` under `value`: (value, sizes as shares of the room per
    /// dimension, count bound), and the dimensions used (cpu, memory, pods, extended resources).
    pub(super) fn items(&self, k: usize, value: &[f64]) -> Vec<(f64, Vec<f64>, f64)> {
        let room = &self.configs[k].room;
        let mut caps = vec![room.cpu as f64, room.memory as f64, room.pods as f64];
        let ext: Vec<&String> = room.extended.keys().collect();
        caps.extend(ext.iter().map(|n| room.extended[*n] as f64));
        (0..self.groups.len())
            .filter(|&g| value[g] > 0.0 && self.fits[g].binary_search(&k).is_ok())
            .map(|g| {
                let grp = &self.groups[g];
                let r = &grp.requests;
                let mut sizes = vec![r.cpu as f64, r.memory as f64, r.pods as f64];
                sizes.extend(
                    ext.iter()
                        .map(|n| r.extended.get(*n).copied().unwrap_or(0) as f64),
                );
                let shares = sizes
                    .iter()
                    .zip(&caps)
                    .map(|(s, c)| if *c > 0.0 { s / c } else { 0.0 })
                    .collect();
                (value[g], shares, f64::from(grp.most_per_node()))
            })
            .collect()
    }

    /// An upper bound on the value of any pattern of config `k`: the best fractional knapsack
    /// over a single dimension (each dimension's capacity is 1 after scaling).
    pub(super) fn price_upper_bound(&self, k: usize, value: &[f64]) -> f64 {
        let items = self.items(k, value);
        let dims = items.first().map_or(0, |i| i.1.len());
        let mut best = f64::INFINITY;
        for dim in 0..dims {
            let mut total: f64 = items
                .iter()
                .filter(|i| i.1[dim] <= 0.0)
                .map(|i| i.0 * i.2)
                .sum();
            let mut sorted: Vec<&(f64, Vec<f64>, f64)> =
                items.iter().filter(|i| i.1[dim] > 0.0).collect();
            sorted.sort_by(|a, b| (b.0 / b.1[dim]).total_cmp(&(a.0 / a.1[dim])));
            let mut left = 1.0;
            for (v, s, u) in sorted {
                if left <= 0.0 {
                    break;
                }
                let take = (left / s[dim]).min(*u);
                total += v * take;
                left -= take * s[dim];
            }
            best = best.min(total);
        }
        if dims == 0 {
            0.0
        } else {
            best
        }
    }

    /// Capacity and per-candidate sizes of every resource dimension (cpu, memory, optionally
    /// ephemeral storage, pods, extended resources of the room).
    pub(super) fn dimensions(
        &self,
        room: &Resources,
        cands: &[usize],
        with_storage: bool,
    ) -> Vec<(i64, Vec<i64>)> {
        let sizes = |f: &dyn Fn(&Resources) -> i64| {
            cands
                .iter()
                .map(|&g| f(&self.groups[g].requests))
                .collect::<Vec<i64>>()
        };
        let mut dims = vec![
            (room.cpu, sizes(&|r| r.cpu)),
            (room.memory, sizes(&|r| r.memory)),
        ];
        if with_storage {
            dims.push((room.ephemeral_storage, sizes(&|r| r.ephemeral_storage)));
        }
        dims.push((room.pods, sizes(&|r| r.pods)));
        for (name, cap) in &room.extended {
            dims.push((*cap, sizes(&|r| r.extended.get(name).copied().unwrap_or(0))));
        }
        dims
    }

    /// Solve the pricing problem of config `k` in HiGHS (a small MILP) within `effort` (seconds,
    /// or branch-and-bound nodes): an upper bound on the best pattern's value (HiGHS's dual
    /// bound, valid also when the limit is reached), the value of the best pattern found and
    /// that pattern (empty if none), or `None` if HiGHS fails.
    pub(super) fn exact_price(
        &self,
        k: usize,
        value: &[f64],
        effort: impl Into<Effort>,
    ) -> Option<(f64, f64, Pattern)> {
        let room = &self.configs[k].room;
        let cands: Vec<usize> = (0..self.groups.len())
            .filter(|&g| value[g] > 1e-12 && self.fits[g].binary_search(&k).is_ok())
            .collect();
        if cands.is_empty() {
            return Some((
                0.0,
                0.0,
                Pattern {
                    config: k,
                    counts: Vec::new(),
                },
            ));
        }
        let limit = |g: usize| f64::from(self.groups[g].most_per_node());
        let mut vars = ProblemVariables::new();
        let a: Vec<Variable> = cands
            .iter()
            .map(|&g| vars.add(variable().integer().min(0).max(limit(g))))
            .collect();
        let objective: Expression = cands.iter().zip(&a).map(|(&g, v)| value[g] * *v).sum();
        let mut rows: Vec<Constraint> = Vec::new();
        let dims = self.dimensions(room, &cands, true);
        for (cap, sizes) in &dims {
            let e: Expression = sizes.iter().zip(&a).map(|(s, v)| *s as f64 * *v).sum();
            rows.push(e.leq(*cap as f64));
        }
        // Conflicting groups: binary indicators, at most one of each conflicting pair.
        let mut ind: BTreeMap<usize, Variable> = BTreeMap::new();
        for (i, &g) in cands.iter().enumerate() {
            if cands.iter().any(|h| self.groups[g].conflicts.contains(h)) {
                let y = vars.add(variable().binary());
                rows.push((Expression::from(a[i]) - limit(g) * y).leq(0.0));
                ind.insert(g, y);
            }
        }
        for (&g, &y) in &ind {
            for (&h, &z) in ind.range(g + 1..) {
                if self.groups[g].conflicts.contains(&h) {
                    rows.push((Expression::from(y) + z).leq(1.0));
                }
            }
        }
        let mut problem = vars.maximise(objective).using(highs);
        for r in rows {
            problem.add_constraint(r);
        }
        // HiGHS directly (good_lp drops the dual bound): quiet, one thread, the effort's limit.
        let mut model = problem.try_into_inner().ok()?;
        effort.into().configure(&mut model)?;
        let solved = model.try_solve().ok()?;
        use ::highs::{HighsModelStatus as Status, HighsSolutionStatus};
        // A node limit ends with `ReachedSolutionLimit`; its dual bound is as valid.
        if !matches!(
            solved.status(),
            Status::Optimal
                | Status::ReachedTimeLimit
                | Status::ReachedSolutionLimit
                | Status::ObjectiveBound
        ) {
            return None;
        }
        let dual_bound = solved.double_info_value(c"mip_dual_bound").ok()?;
        let mut counts: Vec<(usize, u32)> = Vec::new();
        let mut total = 0.0;
        if solved.primal_solution_status() == HighsSolutionStatus::Feasible {
            let solution = solved.get_solution();
            // The pod-count variables were added first: columns 0.. in `cands` order.
            for (&g, x) in cands.iter().zip(solution.columns()) {
                let n = x.round().max(0.0) as u32;
                if n > 0 {
                    counts.push((g, n));
                    total += value[g] * f64::from(n);
                }
            }
        }
        if !dual_bound.is_finite() {
            return None;
        }
        // A little slack for HiGHS's feasibility tolerances.
        let bound = dual_bound.max(total);
        Some((
            bound + (bound.abs() * 1e-6).max(1e-9),
            total,
            Pattern { config: k, counts },
        ))
    }

    /// Upper bounds from the exact one-dimensional bounded knapsack (integer counts) on each
    /// dimension whose capacity is small in units of the sizes' greatest common divisor; the
    /// fractional bound rounds away whole pods on small nodes, this does not.
    pub(super) fn integer_upper_bound(&self, k: usize, value: &[f64]) -> f64 {
        const MAX_STATES: i64 = 5_000;
        let room = &self.configs[k].room;
        let cands: Vec<usize> = (0..self.groups.len())
            .filter(|&g| value[g] > 0.0 && self.fits[g].binary_search(&k).is_ok())
            .collect();
        let mut best = f64::INFINITY;
        let dims = self.dimensions(room, &cands, false);
        for (cap, weights) in dims {
            if cap <= 0 {
                continue;
            }
            let gcd = weights
                .iter()
                .filter(|w| **w > 0)
                .fold(0i64, |a, &b| gcd(a, b));
            if gcd == 0 {
                continue;
            }
            let slots = cap / gcd;
            if slots > MAX_STATES {
                continue;
            }
            let slots = slots as usize;
            let mut dp = vec![0.0f64; slots + 1];
            let mut free_value = 0.0;
            for (i, &g) in cands.iter().enumerate() {
                let count = self.groups[g].most_per_node() as usize;
                let w = weights[i] / gcd;
                if weights[i] <= 0 {
                    free_value += value[g] * count as f64;
                    continue;
                }
                // Binary splitting of the count into 0/1 items.
                let mut left = count;
                let mut chunk = 1usize;
                while left > 0 {
                    let take = chunk.min(left);
                    left -= take;
                    chunk *= 2;
                    let (wt, v) = (w as usize * take, value[g] * take as f64);
                    if wt > slots {
                        continue;
                    }
                    for c in (wt..=slots).rev() {
                        let cand = dp[c - wt] + v;
                        if cand > dp[c] {
                            dp[c] = cand;
                        }
                    }
                }
            }
            best = best.min(dp[slots] + free_value);
        }
        best
    }

    /// A tighter upper bound for config `k`: the Lagrangian dual of the multi-dimensional
    /// knapsack's LP relaxation (see [`knapsack_lagrangian`]), never above `start`.
    pub(super) fn refined_upper_bound(&self, k: usize, value: &[f64], start: f64) -> f64 {
        knapsack_lagrangian(&self.items(k, value)).0.min(start)
    }
}

pub(super) fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// The Lagrangian dual of a multi-dimensional knapsack's LP relaxation over `items` (value,
/// sizes as shares of each dimension's capacity, count bound): `L(λ) = Σλ + Σ u·max(0, v − λ·s)`,
/// minimized by projected subgradient steps from the best single-dimension bound. Any `λ ≥ 0`
/// gives a valid upper bound on every pattern's value; returns the best bound found and its `λ`
/// (the weights of a surrogate dimension `λ·s ≤ Σλ` that every pattern respects).
pub(super) fn knapsack_lagrangian(items: &[(f64, Vec<f64>, f64)]) -> (f64, Vec<f64>) {
    let Some(dims) = items.first().map(|i| i.1.len()) else {
        return (0.0, Vec::new());
    };
    let eval = |l: &[f64]| -> (f64, Vec<f64>) {
        let mut total: f64 = l.iter().sum();
        let mut grad = vec![1.0; dims];
        for (v, s, u) in items {
            let reduced = v - l.iter().zip(s).map(|(a, b)| a * b).sum::<f64>();
            if reduced > 0.0 {
                total += u * reduced;
                for (g, si) in grad.iter_mut().zip(s) {
                    *g -= u * si;
                }
            }
        }
        (total, grad)
    };
    // Start from the best single-dimension bound: λ = its critical value/size ratio on that
    // dimension (where L equals the fractional knapsack value), 0 elsewhere.
    let mut best = (f64::INFINITY, vec![0.0; dims]);
    for dim in 0..dims {
        let mut sorted: Vec<&(f64, Vec<f64>, f64)> =
            items.iter().filter(|i| i.1[dim] > 0.0).collect();
        sorted.sort_by(|a, b| (b.0 / b.1[dim]).total_cmp(&(a.0 / a.1[dim])));
        let mut left = 1.0;
        let mut critical = 0.0;
        for (v, sz, u) in sorted {
            critical = v / sz[dim];
            let take = (left / sz[dim]).min(*u);
            left -= take * sz[dim];
            if left <= 1e-12 {
                break;
            }
            critical = 0.0;
        }
        let mut l = vec![0.0; dims];
        l[dim] = critical;
        let (val, _) = eval(&l);
        if val < best.0 {
            best = (val, l);
        }
    }
    let mut lambda = best.1.clone();
    let mut step = lambda.iter().copied().fold(0.0, f64::max).max(1e-9) * 0.5;
    for _ in 0..30 {
        let (val, grad) = eval(&lambda);
        if val < best.0 {
            best = (val, lambda.clone());
        }
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if norm < 1e-12 {
            break;
        }
        for (l, g) in lambda.iter_mut().zip(&grad) {
            *l = (*l - step * g / norm).max(0.0);
        }
        step *= 0.9;
    }
    best
}
