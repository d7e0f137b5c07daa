//! Exact small packings: when every maximal pattern of a model can be listed, the integer
//! master over all of them *is* the packing problem, and HiGHS's branch and bound proves its
//! optimum (or a bound on it) instead of the column-generation heuristics guessing.
//!
//! A problem is *small* when its maximal patterns number at most `Milp::exact_patterns`
//! ([`EXACT_MAX_PATTERNS`] by default) and
//! listing them visits at most [`EXACT_MAX_VISITS`] partial patterns. A pattern is maximal
//! when no further pod of any group it may hold still fits (within the group's demand, its
//! per-node limit and its conflicts); with covering rows (`≥ demand`) some optimal plan uses
//! only maximal patterns, since a node's price does not depend on what it holds.

use highs::HighsModelStatus;

use super::budget::Effort;
use super::dive::pattern_counts;
use super::model::{Model, Pattern};
use crate::resources::Resources;

/// The most maximal patterns a model may have for the exact integer master by default
/// (`Milp::exact_patterns`).
pub const EXACT_MAX_PATTERNS: usize = 4_000;
/// The most partial patterns listing them may visit (the search stops and the problem is not
/// small beyond this).
pub const EXACT_MAX_VISITS: usize = 400_000;

/// The exact integer master's answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ExactPlan {
    /// Pattern counts, in the model's pattern order.
    pub(super) counts: Vec<u32>,
    /// HiGHS's proven lower bound on the integer master's optimum.
    pub(super) bound: f64,
    /// Whether the optimum was proven (the bound meets the plan's cost).
    pub(super) optimal: bool,
}

/// The depth-first listing of one config's maximal patterns.
struct Listing<'a> {
    model: &'a Model,
    config: usize,
    /// Groups that fit the config and have pods, in group order.
    groups: Vec<usize>,
    counts: Vec<u32>,
    out: Vec<Pattern>,
    visits: usize,
    cap: usize,
}

impl Listing<'_> {
    /// Whether group `g` conflicts with a group the partial pattern already holds.
    fn blocked(&self, g: usize) -> bool {
        self.model.groups[g].conflicts.iter().any(|&h| {
            h != g
                && self
                    .groups
                    .binary_search(&h)
                    .is_ok_and(|i| self.counts[i] > 0)
        })
    }

    /// Whether one more pod of some group would still fit `room`.
    fn extendable(&self, room: &Resources) -> bool {
        self.groups.iter().enumerate().any(|(i, &g)| {
            self.counts[i] < self.model.groups[g].most_per_node()
                && !self.blocked(g)
                && self.model.fit_count(g, room) > 0
        })
    }

    /// List from group index `i` with `room` left; false once a limit is passed.
    fn go(&mut self, i: usize, room: &Resources) -> bool {
        self.visits += 1;
        if self.visits > EXACT_MAX_VISITS {
            return false;
        }
        if i == self.groups.len() {
            if self.counts.iter().any(|&c| c > 0) && !self.extendable(room) {
                let counts = self
                    .groups
                    .iter()
                    .zip(&self.counts)
                    .filter(|(_, &c)| c > 0)
                    .map(|(&g, &c)| (g, c))
                    .collect();
                self.out.push(Pattern {
                    config: self.config,
                    counts,
                });
                if self.out.len() > self.cap {
                    return false;
                }
            }
            return true;
        }
        let g = self.groups[i];
        let most = if self.blocked(g) {
            0
        } else {
            self.model.fit_count(g, room)
        };
        let requests = &self.model.groups[g].requests;
        for c in (0..=most).rev() {
            self.counts[i] = c;
            let left = room.minus(&requests.scaled(i64::from(c)));
            if !self.go(i + 1, &left) {
                self.counts[i] = 0;
                return false;
            }
        }
        self.counts[i] = 0;
        true
    }
}

impl Model {
    /// Every maximal pattern of every config, or `None` when there are more than `cap` or the
    /// listing passes [`EXACT_MAX_VISITS`].
    pub(super) fn all_patterns(&self, cap: usize) -> Option<Vec<Pattern>> {
        let mut all = Vec::new();
        let mut visits = 0;
        for config in 0..self.configs.len() {
            let groups: Vec<usize> = (0..self.groups.len())
                .filter(|&g| self.groups[g].demand > 0 && self.fits[g].contains(&config))
                .collect();
            if groups.is_empty() {
                continue;
            }
            let mut listing = Listing {
                model: self,
                config,
                counts: vec![0; groups.len()],
                groups,
                out: Vec::new(),
                visits,
                cap: cap.checked_sub(all.len())?,
            };
            if !listing.go(0, &self.configs[config].room) {
                return None;
            }
            visits = listing.visits;
            all.append(&mut listing.out);
        }
        Some(all)
    }

    /// Solve the integer master over the model's patterns to optimality (relative gap 0)
    /// within `limit`; the counts, HiGHS's dual bound and whether the optimum was proven.
    ///
    /// It starts from nothing, so that HiGHS presolves (a warm start turns presolve off, see
    /// `dive::warm_start`): on every pattern, presolve is worth more than the start, and the
    /// caller keeps the FFD plan when this one is not cheaper.
    pub(super) fn solve_exact(&self, limit: Effort) -> Result<ExactPlan, String> {
        let solved = self.integer_master(None, limit, 0.0, "exact master")?;
        let counts = pattern_counts(&solved);
        let optimal = solved.status() == HighsModelStatus::Optimal;
        let value = self.cost(&counts.iter().map(|&c| f64::from(c)).collect::<Vec<_>>());
        let bound = if optimal {
            value
        } else {
            solved
                .double_info_value(c"mip_dual_bound")
                .ok()
                .filter(|b| b.is_finite())
                .unwrap_or(0.0)
                .min(value)
        };
        Ok(ExactPlan {
            counts,
            bound,
            optimal,
        })
    }
}
