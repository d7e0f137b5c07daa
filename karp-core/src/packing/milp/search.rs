//! The branch-and-bound pricing search over pod counts of one config.

use super::model::{Group, Model, Pattern};
use super::pricing::knapsack_lagrangian;

/// Patterns above its threshold a pricing search keeps besides its best (extra columns).
pub(super) const EARLIER_INCUMBENTS: usize = 4;

/// Search nodes the branch-and-bound pricing may visit before HiGHS takes over.
pub(super) const SEARCH_NODES: usize = 3_000;

/// The outcome of a pricing search: the best pattern found, its value, and whether the search
/// proved it optimal.
pub(super) struct Searched {
    pub(super) value: f64,
    pub(super) pattern: Pattern,
    /// Earlier incumbents above the search's threshold.
    pub(super) earlier: Vec<Pattern>,
    pub(super) proved: bool,
}

/// A knapsack item of the search: its group, value, size per dimension and count bound.
type Item = (usize, f64, Vec<i64>, u32);

impl Model {
    /// Solve the pricing problem of config `k` by depth-first branch and bound over pod counts
    /// (fast when a node holds few pods): the best pattern found within `max_nodes` search nodes,
    /// and whether the search finished (proving it the most valuable under `value`). Earlier
    /// incumbents worth more than `threshold` (the last few) come back as well: more columns
    /// from one search.
    pub(super) fn search(
        &self,
        k: usize,
        value: &[f64],
        max_nodes: usize,
        threshold: f64,
        keep: usize,
    ) -> Searched {
        let (caps, items) = self.search_items(k, value);
        let cands: Vec<usize> = items.iter().map(|i| i.0).collect();
        let n = items.len();
        let orders = Orders::new(&items, &caps);
        let dominated = self.dominated(&items);
        let mut search = Search {
            items: &items,
            dominated: &dominated,
            banned: vec![0; n],
            groups: &self.groups,
            by_density: &orders.by_density,
            weights: &orders.weights,
            surrogate: &orders.surrogate,
            by_surrogate: &orders.by_surrogate,
            left: caps.clone(),
            counts: vec![0; n],
            value: 0.0,
            best: 0.0,
            best_counts: vec![0; n],
            threshold,
            pool: Vec::new(),
            keep,
            fits: Vec::with_capacity(n),
            nodes: 0,
            max_nodes,
        };
        let proved = search.run(0);
        let pattern = |found: &[u32]| {
            let mut counts: Vec<(usize, u32)> = cands
                .iter()
                .zip(found)
                .filter(|(_, c)| **c > 0)
                .map(|(g, c)| (*g, *c))
                .collect();
            counts.sort_unstable();
            Pattern { config: k, counts }
        };
        Searched {
            value: search.best,
            pattern: pattern(&search.best_counts),
            earlier: search
                .pool
                .iter()
                .filter(|(_, c)| *c != search.best_counts)
                .map(|(_, c)| pattern(c))
                .collect(),
            proved,
        }
    }

    /// The capacity of config `k`'s room per dimension, and the search's items: the groups
    /// worth something under `value` that fit `k`, by value per share of their scarcest
    /// dimension (ties: the more valuable, then the smaller item first, so that dominating items
    /// come first, then the group).
    fn search_items(&self, k: usize, value: &[f64]) -> (Vec<i64>, Vec<Item>) {
        let room = &self.configs[k].room;
        let cands: Vec<usize> = (0..self.groups.len())
            .filter(|&g| value[g] > 1e-12 && self.fits[g].binary_search(&k).is_ok())
            .collect();
        let dims = self.dimensions(room, &cands, true);
        let caps: Vec<i64> = dims.iter().map(|(c, _)| *c).collect();
        let size_of = |i: usize| -> Vec<i64> { dims.iter().map(|(_, s)| s[i]).collect() };
        let mut items: Vec<Item> = cands
            .iter()
            .enumerate()
            .map(|(i, &g)| (g, value[g], size_of(i), self.groups[g].most_per_node()))
            .collect();
        let density = |it: &Item| {
            let worst =
                it.2.iter()
                    .zip(&caps)
                    .map(|(s, c)| *s as f64 / (*c).max(1) as f64)
                    .fold(0.0, f64::max);
            it.1 / worst.max(1e-12)
        };
        let total = |it: &Item| -> f64 {
            it.2.iter()
                .zip(&caps)
                .map(|(s, c)| *s as f64 / (*c).max(1) as f64)
                .sum()
        };
        items.sort_by(|a, b| {
            density(b)
                .total_cmp(&density(a))
                .then(b.1.total_cmp(&a.1))
                .then(total(a).total_cmp(&total(b)))
                .then(a.0.cmp(&b.0))
        });
        (caps, items)
    }

    /// Dominance: item `j` after `i` needs at least as much of every dimension, is worth no
    /// more and conflicts with everything `i` does. While fewer than `i`'s count bound of `i`
    /// are taken, a pattern with `j` is never better than the one with `i` in its place.
    /// Returns, per item, the later items it dominates.
    fn dominated(&self, items: &[Item]) -> Vec<Vec<usize>> {
        let n = items.len();
        (0..n)
            .map(|i| {
                let (gi, vi, si, _) = &items[i];
                let a = &self.groups[*gi];
                (i + 1..n)
                    .filter(|&j| {
                        let (gj, vj, sj, _) = &items[j];
                        let b = &self.groups[*gj];
                        vi >= vj
                            && si.iter().zip(sj).all(|(x, y)| x <= y)
                            && !a.bundle
                            && !b.bundle
                            && !a.conflicts.contains(gj)
                            && !b.conflicts.contains(gi)
                            && a.conflicts.is_subset(&b.conflicts)
                    })
                    .collect()
            })
            .collect()
    }
}

/// The orders in which the search's bounds take the items.
struct Orders {
    /// Weight of each dimension in the surrogate dimension.
    weights: Vec<f64>,
    /// Each item's size in the surrogate dimension.
    surrogate: Vec<f64>,
    /// The items by value per unit of the surrogate dimension.
    by_surrogate: Vec<usize>,
    /// Per dimension, the items by value per unit of it (those needing none of it first).
    by_density: Vec<Vec<usize>>,
}

impl Orders {
    /// A surrogate dimension: the knapsack LP's Lagrangian multipliers weigh every dimension
    /// into one constraint `Σ w·size ≤ Σ w·left` that every pattern respects; its fractional
    /// knapsack bounds the remaining items where two dimensions bind together. And per
    /// dimension, the items by value per unit of it: the bound of the remaining items in that
    /// dimension alone.
    fn new(items: &[Item], caps: &[i64]) -> Self {
        let n = items.len();
        let shares: Vec<(f64, Vec<f64>, f64)> = items
            .iter()
            .map(|(_, v, sz, u)| {
                let share = sz
                    .iter()
                    .zip(caps)
                    .map(|(s, c)| if *c > 0 { *s as f64 / *c as f64 } else { 0.0 })
                    .collect();
                (*v, share, f64::from(*u))
            })
            .collect();
        let (_, lambda) = knapsack_lagrangian(&shares);
        let weights: Vec<f64> = lambda
            .iter()
            .zip(caps)
            .map(|(l, c)| if *c > 0 { l / *c as f64 } else { 0.0 })
            .collect();
        let surrogate: Vec<f64> = items
            .iter()
            .map(|(_, _, sz, _)| sz.iter().zip(&weights).map(|(s, w)| *s as f64 * w).sum())
            .collect();
        let mut by_surrogate: Vec<usize> = (0..n).collect();
        let sur_key = |i: usize| {
            if surrogate[i] > 0.0 {
                items[i].1 / surrogate[i]
            } else {
                f64::INFINITY
            }
        };
        by_surrogate.sort_by(|&a, &b| sur_key(b).total_cmp(&sur_key(a)).then(a.cmp(&b)));
        let by_density: Vec<Vec<usize>> = (0..caps.len())
            .map(|d| {
                let mut order: Vec<usize> = (0..n).collect();
                let key = |i: usize| {
                    let (_, v, sz, _) = &items[i];
                    if sz[d] > 0 {
                        v / sz[d] as f64
                    } else {
                        f64::INFINITY
                    }
                };
                order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
                order
            })
            .collect();
        Orders {
            weights,
            surrogate,
            by_surrogate,
            by_density,
        }
    }
}

/// The state of one depth-first branch and bound over the items' counts.
struct Search<'a> {
    items: &'a [Item],
    dominated: &'a [Vec<usize>],
    /// Per item: how many chosen items (taken below their count bound) dominate it.
    banned: Vec<u32>,
    groups: &'a [Group],
    by_density: &'a [Vec<usize>],
    weights: &'a [f64],
    surrogate: &'a [f64],
    by_surrogate: &'a [usize],
    left: Vec<i64>,
    counts: Vec<u32>,
    value: f64,
    best: f64,
    best_counts: Vec<u32>,
    threshold: f64,
    /// The most valuable patterns above `threshold` seen so far (new incumbents and
    /// leaves), at most `keep`, by value descending.
    pool: Vec<(f64, Vec<u32>)>,
    keep: usize,
    /// Scratch for [`Search::bound`]: how many of each item still fit.
    fits: Vec<f64>,
    nodes: usize,
    max_nodes: usize,
}

impl Search<'_> {
    /// How many more pods of item `j` fit the room left (capped by its count bound).
    fn most(&self, j: usize) -> u32 {
        let (_, _, sz, u) = &self.items[j];
        let mut most = *u;
        for (s, l) in sz.iter().zip(&self.left) {
            if *s > 0 {
                most = most.min((*l / *s).max(0) as u32);
            }
        }
        most
    }

    /// What the items from `i` on can add: the smallest of the fractional knapsacks on
    /// each dimension alone and on the surrogate dimension, each item capped by how many
    /// of it still fit whole (items that no longer fit drop out).
    fn bound(&mut self, i: usize) -> f64 {
        // Reused across search nodes (this runs at every one).
        let mut most = std::mem::take(&mut self.fits);
        most.clear();
        most.extend((0..self.items.len()).map(|j| {
            if j < i || self.banned[j] > 0 {
                0.0
            } else {
                f64::from(self.most(j))
            }
        }));
        let fractional = |order: &[usize], mut left: f64, size: &dyn Fn(usize) -> f64| {
            let mut total = 0.0;
            for &j in order {
                if most[j] <= 0.0 {
                    continue;
                }
                let v = self.items[j].1;
                let s = size(j);
                if s <= 0.0 {
                    total += v * most[j];
                    continue;
                }
                if left <= 0.0 {
                    break;
                }
                let take = (left / s).min(most[j]);
                total += v * take;
                left -= take * s;
            }
            total
        };
        let mut best = f64::INFINITY;
        if self.weights.iter().any(|w| *w > 0.0) {
            let left: f64 = self
                .left
                .iter()
                .zip(self.weights)
                .map(|(l, w)| (*l).max(0) as f64 * w)
                .sum();
            best = fractional(self.by_surrogate, left, &|j| self.surrogate[j]);
        }
        for (d, order) in self.by_density.iter().enumerate() {
            let left = self.left[d].max(0) as f64;
            best = best.min(fractional(order, left, &|j| self.items[j].2[d] as f64));
            if best <= 0.0 {
                break;
            }
        }
        self.fits = most;
        best
    }

    /// Keep the current pattern in the pool if it is among the `keep` most valuable.
    fn remember(&mut self) {
        if self.keep == 0 {
            return;
        }
        if self.pool.len() == self.keep {
            if self.pool.last().is_some_and(|(v, _)| *v >= self.value) {
                return;
            }
            self.pool.pop();
        }
        let at = self.pool.partition_point(|(v, _)| *v >= self.value);
        self.pool.insert(at, (self.value, self.counts.clone()));
    }

    /// Visit the search node that decides the count of item `i` (or of the first later item
    /// that still fits); `false` once the node budget is spent.
    fn run(&mut self, mut i: usize) -> bool {
        self.nodes += 1;
        if self.nodes > self.max_nodes {
            return false;
        }
        let incumbent = self.value > self.best;
        if incumbent {
            self.best = self.value;
            self.best_counts.clone_from(&self.counts);
        }
        // Items that no longer fit (or conflict with a chosen one) are skipped outright.
        let mut most = 0;
        while i < self.items.len() {
            let g = self.items[i].0;
            let blocked = (0..i)
                .any(|j| self.counts[j] > 0 && self.groups[g].conflicts.contains(&self.items[j].0));
            most = if blocked || self.banned[i] > 0 {
                0
            } else {
                self.most(i)
            };
            if most > 0 {
                break;
            }
            i += 1;
        }
        let leaf = i == self.items.len();
        if (incumbent || leaf) && self.value > self.threshold {
            self.remember();
        }
        if leaf || self.value + self.bound(i) <= self.best + 1e-12 {
            return true;
        }
        let (_, v, sz, cap) = &self.items[i];
        for c in (0..=most).rev() {
            for (l, s) in self.left.iter_mut().zip(sz) {
                *l -= *s * i64::from(c);
            }
            let ban = c < *cap;
            if ban {
                for &j in &self.dominated[i] {
                    self.banned[j] += 1;
                }
            }
            self.counts[i] = c;
            self.value += v * f64::from(c);
            let ok = self.run(i + 1);
            self.value -= v * f64::from(c);
            self.counts[i] = 0;
            if ban {
                for &j in &self.dominated[i] {
                    self.banned[j] -= 1;
                }
            }
            for (l, s) in self.left.iter_mut().zip(sz) {
                *l += *s * i64::from(c);
            }
            if !ok {
                return false;
            }
        }
        true
    }
}
