//! The fluid LP (fractional nodes and pods, whole-pod fit counts), its pattern cuts and their
//! separation, and the seed columns it gives column generation.

use std::collections::{BTreeMap, BTreeSet};

use good_lp::solvers::{DualValues, SolutionWithDual};
use good_lp::{highs, variable, Expression, ProblemVariables, Solution, SolverModel, Variable};

use super::budget::Effort;
use super::model::{share, Model, Pattern};
use super::search::{EARLIER_INCUMBENTS, SEARCH_NODES};

/// Rounds of pattern cuts on the fluid LP.
pub(super) const CUT_ROUNDS: usize = 20;

/// Column-generation rounds of one cut separation.
pub(super) const SEPARATION_ROUNDS: usize = 30;

/// The optimum of the fluid LP ([`Model::fluid`]).
pub(super) struct Fluid {
    /// Its value: a lower bound on the cost of every plan of the model's pods.
    pub(super) value: f64,
    /// Cover duals (per group).
    pub(super) duals: Vec<f64>,
    /// Per config used: fractional node count and pods per group on those nodes.
    pub(super) nodes: Nodes,
    /// Patterns found separating its per-node mixes (columns for the pattern LP).
    pub(super) patterns: Vec<Pattern>,
}

/// Per config used: fractional node count and pods per group on those nodes.
pub(super) type Nodes = BTreeMap<usize, (f64, Vec<(usize, f64)>)>;

/// A HiGHS column.
type Col = ::highs::Col;
/// A sparse row of the fluid LP: (column, coefficient) pairs.
type Row = Vec<(Col, f64)>;

/// The columns of the fluid LP.
struct FluidColumns {
    /// Node count per config used.
    y: BTreeMap<usize, Col>,
    /// Pods of group `g` on config `k`, as (g, k, column).
    xs: Vec<(usize, usize, Col)>,
    /// The same, by (g, k).
    x_of: BTreeMap<(usize, usize), Col>,
}

impl FluidColumns {
    /// The optimum of a solved fluid LP (no separation patterns yet): its value (shaded by a
    /// relative 1e-7 for HiGHS's tolerances), the cover rows' duals, and per config used its
    /// node count and pods per group.
    fn optimum(&self, solved: &::highs::SolvedModel, groups: usize) -> Fluid {
        let solution = solved.get_solution();
        let columns = solution.columns();
        let value = solved.objective_value() * (1.0 - 1e-7);
        let duals: Vec<f64> = solution.dual_rows()[..groups]
            .iter()
            .map(|d| d.max(0.0))
            .collect();
        let mut nodes: Nodes = self
            .y
            .iter()
            .map(|(&k, c)| (k, (columns[c.index()], Vec::new())))
            .filter(|(_, (n, _))| *n > 1e-9)
            .collect();
        for &(g, k, x) in &self.xs {
            let v = columns[x.index()];
            if v > 1e-9 {
                if let Some((_, mix)) = nodes.get_mut(&k) {
                    mix.push((g, v));
                }
            }
        }
        Fluid {
            value,
            duals,
            nodes,
            patterns: Vec::new(),
        }
    }
}

impl Model {
    /// The *fluid* LP: fractional node counts `y_k` per config and pods `x_gk` of each group on
    /// each config, every node's pods within its room in every dimension, and at most the
    /// single-group fit count `c_gk` of a group per node (`x_gk ≤ c_gk·y_k`, which captures most
    /// of the integrality of large pods). Every valid plan gives a feasible point (its node and
    /// pod counts), so the optimum bounds every plan from below; it is the pattern LP with the
    /// pricing knapsack relaxed, computed without column generation.
    ///
    /// Then, until `stop`, nothing is cut or [`CUT_ROUNDS`] rounds, *pattern cuts*: for every
    /// config the optimum uses, [`Model::separate`] looks for weights `w` and a bound `U_k` on
    /// `w·a` over every pattern `a` of that config such that the optimum's per-node mix breaks
    /// `Σ_g w_g·x_gk ≤ U_k·y_k`. Every plan satisfies that row (each of its nodes holds one
    /// pattern), so adding it keeps the LP a relaxation; HiGHS re-solves from its basis. The cuts
    /// lift the bound toward the pattern LP's, and the patterns found on the way seed column
    /// generation. Returns the last optimum HiGHS proved, or `None` if it proves none within
    /// `limit` (seconds, or simplex iterations of each solve).
    pub(super) fn fluid(&self, limit: impl Into<Effort>, stop: &dyn Fn() -> bool) -> Option<Fluid> {
        use ::highs::{HighsModelStatus, Sense};
        let (problem, lp) = self.fluid_lp();
        let mut model = problem.try_optimise(Sense::Minimise).ok()?;
        limit.into().configure(&mut model)?;
        let mut best: Option<Fluid> = None;
        let mut pools: BTreeMap<usize, Vec<Pattern>> = BTreeMap::new();
        for round in 0..=CUT_ROUNDS {
            let Ok(solved) = model.try_solve() else {
                break;
            };
            if solved.status() != HighsModelStatus::Optimal {
                break;
            }
            let optimum = lp.optimum(&solved, self.groups.len());
            let cuts = if round == CUT_ROUNDS {
                Vec::new()
            } else {
                self.pattern_cuts(&lp, &optimum.nodes, &mut pools, stop)
            };
            best = Some(optimum);
            if cuts.is_empty() {
                break;
            }
            model = solved.into();
            if cuts
                .into_iter()
                .any(|row| model.try_add_row(..=0.0, row).is_err())
            {
                break;
            }
        }
        // The patterns of every separation are columns for the pattern LP.
        best.map(|mut fluid| {
            fluid.patterns = pools.into_values().flatten().collect();
            fluid
        })
    }

    /// The fluid LP's rows and columns ([`Model::fluid`]): the cover rows first (rows
    /// `0..groups`), then per config one row per dimension, then the fit-count cuts.
    fn fluid_lp(&self) -> (::highs::RowProblem, FluidColumns) {
        let mut problem = ::highs::RowProblem::default();
        let used: BTreeSet<usize> = self.fits.iter().flatten().copied().collect();
        let y: BTreeMap<usize, Col> = used
            .iter()
            .map(|&k| (k, problem.add_column(self.configs[k].price, 0.0..)))
            .collect();
        let mut xs: Vec<(usize, usize, Col)> = Vec::new();
        // Per config: one row per dimension (shares of the room); the fit-count cuts.
        let mut dims: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
        let mut caps: Vec<[(Col, f64); 2]> = Vec::new();
        let mut cover: Vec<Row> = vec![Vec::new(); self.groups.len()];
        for (g, grp) in self.groups.iter().enumerate() {
            let n = grp.demand as f64;
            for &k in &self.fits[g] {
                let c = self.single_count(g, k);
                if c == 0 {
                    continue;
                }
                let x = problem.add_column(0.0, 0.0..=n);
                xs.push((g, k, x));
                cover[g].push((x, 1.0));
                let shares = self.room_shares(g, k);
                let entry = dims
                    .entry(k)
                    .or_insert_with(|| vec![vec![(y[&k], -1.0)]; shares.len()]);
                for (row, s) in entry.iter_mut().zip(&shares) {
                    if *s > 0.0 {
                        row.push((x, *s));
                    }
                }
                let fractional = shares.iter().copied().fold(0.0, f64::max) * f64::from(c);
                if f64::from(c) < n && fractional < 1.0 - 1e-9 {
                    caps.push([(x, 1.0), (y[&k], -f64::from(c))]);
                }
            }
        }
        for (g, row) in cover.into_iter().enumerate() {
            problem.add_row(self.groups[g].demand as f64.., row);
        }
        for rows in dims.into_values() {
            for row in rows {
                problem.add_row(..=0.0, row);
            }
        }
        for row in caps {
            problem.add_row(..=0.0, row);
        }
        let x_of = xs.iter().map(|&(g, k, x)| ((g, k), x)).collect();
        (problem, FluidColumns { y, xs, x_of })
    }

    /// A pod of group `g` as shares of config `k`'s room: cpu, memory, ephemeral storage, pods,
    /// then the room's extended resources.
    fn room_shares(&self, g: usize, k: usize) -> Vec<f64> {
        let room = &self.configs[k].room;
        let r = &self.groups[g].requests;
        let mut shares = vec![
            share(r.cpu, room.cpu),
            share(r.memory, room.memory),
            share(r.ephemeral_storage, room.ephemeral_storage),
            share(r.pods, room.pods),
        ];
        shares.extend(
            room.extended
                .iter()
                .map(|(name, cap)| share(r.extended.get(name).copied().unwrap_or(0), *cap)),
        );
        shares
    }

    /// Pattern cuts at a fluid optimum, for the configs it uses (`nodes`), until `stop`:
    /// [`Model::separate`] on each config's per-node mix, starting from and extending that
    /// config's patterns in `pools`.
    fn pattern_cuts(
        &self,
        lp: &FluidColumns,
        nodes: &Nodes,
        pools: &mut BTreeMap<usize, Vec<Pattern>>,
        stop: &dyn Fn() -> bool,
    ) -> Vec<Row> {
        let mut cuts: Vec<Row> = Vec::new();
        for (&k, (n, mix)) in nodes {
            if stop() {
                break;
            }
            let per_node: Vec<(usize, f64)> = mix.iter().map(|&(g, x)| (g, x / n)).collect();
            let pool = pools.entry(k).or_default();
            let cut = self.separate(k, &per_node, pool);
            if let Some((w, most)) = cut {
                let mut row: Row = w
                    .iter()
                    .filter(|(_, wg)| *wg > 0.0)
                    .filter_map(|&(g, wg)| lp.x_of.get(&(g, k)).map(|&x| (x, wg)))
                    .collect();
                row.push((lp.y[&k], -most));
                cuts.push(row);
            }
        }
        cuts
    }

    /// Separate the per-node mix `mix` (pods per group on one node of config `k`, fractional)
    /// from the patterns of `k`: a small column generation for the cheapest covering of `mix` by
    /// patterns (`min Σλ` s.t. `Σ λ_p·a_p ≥ mix`), priced by the branch-and-bound search and
    /// started from `patterns` (the config's patterns so far, which it extends). If the covering
    /// needs more than one node, its duals `w` give the cut `Σ_g w_g·x_gk ≤ U·y_k`, `U` an upper
    /// bound on `w·a` over every pattern `a` of `k` (the search's proved optimum, else its relaxed
    /// bounds): returned as (`w` per group, `U`) when the mix violates it.
    #[allow(clippy::type_complexity)]
    pub(super) fn separate(
        &self,
        k: usize,
        mix: &[(usize, f64)],
        patterns: &mut Vec<Pattern>,
    ) -> Option<(Vec<(usize, f64)>, f64)> {
        let room = &self.configs[k].room;
        let mut seen: BTreeSet<Pattern> = patterns.iter().cloned().collect();
        for &(g, _) in mix {
            let n = self.fit_count(g, room);
            let single = Pattern {
                config: k,
                counts: vec![(g, n)],
            };
            if n > 0 && seen.insert(single.clone()) {
                patterns.push(single);
            }
        }
        for _ in 0..SEPARATION_ROUNDS {
            let mut vars = ProblemVariables::new();
            let lambda: Vec<Variable> = patterns
                .iter()
                .map(|_| vars.add(variable().min(0)))
                .collect();
            let objective: Expression = lambda.iter().map(|v| Expression::from(*v)).sum();
            let mut problem = vars.minimise(objective).using(highs).set_threads(1);
            let rows: Vec<_> = mix
                .iter()
                .map(|&(g, m)| {
                    let e: Expression = patterns
                        .iter()
                        .zip(&lambda)
                        .filter_map(|(p, v)| {
                            p.counts
                                .iter()
                                .find(|(h, _)| *h == g)
                                .map(|&(_, n)| f64::from(n) * *v)
                        })
                        .sum();
                    problem.add_constraint(e.geq(m))
                })
                .collect();
            let Ok(mut sol) = problem.solve() else {
                return None;
            };
            let opt: f64 = lambda.iter().map(|v| sol.value(*v)).sum();
            if opt <= 1.0 + 1e-6 {
                return None;
            }
            let d = sol.compute_dual();
            let w: Vec<(usize, f64)> = mix
                .iter()
                .zip(&rows)
                .map(|(&(g, _), r)| (g, d.dual(r.clone()).max(0.0)))
                .collect();
            let mut value = vec![0.0; self.groups.len()];
            for &(g, wg) in &w {
                value[g] = wg;
            }
            let found = self.search(k, &value, SEARCH_NODES, 1.0 + 1e-6, EARLIER_INCUMBENTS);
            let mut added = false;
            if found.value > 1.0 + 1e-6 {
                for p in std::iter::once(found.pattern.clone()).chain(found.earlier.iter().cloned())
                {
                    if seen.insert(p.clone()) {
                        patterns.push(p);
                        added = true;
                    }
                }
            }
            if added {
                continue;
            }
            let most = if found.proved {
                found.value
            } else {
                self.refined_upper_bound(k, &value, self.price_upper_bound(k, &value))
                    .min(self.integer_upper_bound(k, &value))
            };
            let most = most * (1.0 + 1e-9) + 1e-12;
            let weighed: f64 = mix.iter().zip(&w).map(|(&(_, m), &(_, wg))| m * wg).sum();
            return (weighed > most * (1.0 + 1e-6)).then_some((w, most));
        }
        None
    }

    pub(super) fn seed_fluid(&mut self, fluid: &Fluid) {
        let mut patterns = Vec::new();
        for (&k, (nodes, mix)) in &fluid.nodes {
            let per_node: Vec<(usize, f64)> = mix.iter().map(|&(g, x)| (g, x / nodes)).collect();
            let big = &self.configs[k];
            for (k2, c) in self.configs.iter().enumerate() {
                if c.pool != big.pool || c.class != big.class || c.price > big.price {
                    continue;
                }
                let scale = [
                    (c.room.cpu, big.room.cpu),
                    (c.room.memory, big.room.memory),
                    (c.room.pods, big.room.pods),
                ]
                .iter()
                .map(|&(a, b)| if b > 0 { a as f64 / b as f64 } else { 1.0 })
                .fold(f64::INFINITY, f64::min)
                .min(1.0);
                let want: Vec<(usize, f64)> = per_node
                    .iter()
                    .filter(|(g, _)| self.fits[*g].binary_search(&k2).is_ok())
                    .map(|&(g, q)| (g, q * scale))
                    .collect();
                if let Some(p) = self.round_mix(k2, &want, &fluid.duals) {
                    patterns.push(p);
                }
            }
        }
        patterns.extend(fluid.patterns.iter().cloned());
        for p in patterns {
            self.add_pattern(p);
        }
    }

    /// A pattern of config `k` close to the fractional mix `want` (pods per group): counts rounded
    /// down, then one more pod of the groups with the largest fractional parts while it fits,
    /// then what room is left filled with the groups of most `value` per share of the room;
    /// groups conflicting with one already in are left out.
    pub(super) fn round_mix(
        &self,
        k: usize,
        want: &[(usize, f64)],
        value: &[f64],
    ) -> Option<Pattern> {
        let mut order: Vec<(usize, f64)> = want.to_vec();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut left = self.configs[k].room.clone();
        let mut counts: BTreeMap<usize, u32> = BTreeMap::new();
        for &(g, q) in &order {
            if counts.keys().any(|h| self.groups[g].conflicts.contains(h)) {
                continue;
            }
            let n = (q + 1e-9).floor().min(f64::from(self.fit_count(g, &left))) as u32;
            if n > 0 {
                left = left.minus(&self.groups[g].requests.scaled(i64::from(n)));
                counts.insert(g, n);
            }
        }
        let mut by_fraction: Vec<(usize, f64)> = order
            .iter()
            .map(|&(g, q)| (g, q - (q + 1e-9).floor()))
            .filter(|(_, f)| *f > 1e-6)
            .collect();
        by_fraction.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (g, _) in by_fraction {
            let have = counts.get(&g).copied().unwrap_or(0);
            if (have == 0 && counts.keys().any(|h| self.groups[g].conflicts.contains(h)))
                || have >= self.groups[g].most_per_node()
                || !self.groups[g].requests.fits_in(&left)
            {
                continue;
            }
            left = left.minus(&self.groups[g].requests);
            *counts.entry(g).or_default() += 1;
        }
        let room = &self.configs[k].room;
        let mut fill: Vec<(f64, usize)> = self
            .fits
            .iter()
            .enumerate()
            .filter(|(g, fits)| value[*g] > 0.0 && fits.binary_search(&k).is_ok())
            .map(|(g, _)| {
                let r = &self.groups[g].requests;
                let worst = share(r.cpu, room.cpu)
                    .max(share(r.memory, room.memory))
                    .max(share(r.pods, room.pods));
                (value[g] / worst.max(1e-12), g)
            })
            .collect();
        fill.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, g) in fill {
            let have = counts.get(&g).copied().unwrap_or(0);
            if have == 0 && counts.keys().any(|h| self.groups[g].conflicts.contains(h)) {
                continue;
            }
            let n = self
                .fit_count(g, &left)
                .min(self.groups[g].most_per_node().saturating_sub(have));
            if n > 0 {
                left = left.minus(&self.groups[g].requests.scaled(i64::from(n)));
                *counts.entry(g).or_default() += n;
            }
        }
        (!counts.is_empty()).then(|| Pattern {
            config: k,
            counts: counts.into_iter().collect(),
        })
    }
}
