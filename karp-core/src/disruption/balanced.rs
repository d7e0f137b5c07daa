//! Karpenter 1.14's `Balanced` consolidation policy: score a consolidation move by the share of
//! its pool's cost it saves against the share of its pool's disruption it causes.
//!
//! For each NodePool, the totals come from every candidate of the pool whose price is known and
//! positive (candidates blocked by do-not-disrupt pods or PDBs included: they are part of the
//! pool): the total cost is the sum of their prices, the total disruption cost the sum of their
//! disruption costs (`1 + Σ max(0, eviction cost)` of reschedulable pods).
//!
//! A move (the candidates of one multi- or single-node consolidation command) is scored per
//! `Balanced` pool it takes nodes from:
//!
//! - the pool's disruption is the number of its candidates in the move plus the positive eviction
//!   costs of their reschedulable pods;
//! - the pool's savings are the move's savings (candidates' prices minus the replacements'
//!   cheapest prices), times the pool's share of the candidates' price when the move spans
//!   several pools;
//! - `score = (savings / total cost) / (disruption / total disruption cost)`, approved when
//!   `score ≥ 1/k` (k = `consolidationThreshold`, default 2). No savings (or a pool without a
//!   priced node) is never approved; a pool whose total disruption cost is zero approves any move
//!   that saves something.
//!
//! The move is taken only when every `Balanced` pool in it approves; pools with other policies do
//! not score. Emptiness, drift and expiration are not scored.
//!
//! ```
//! use karp_core::disruption::balanced::{score_move, PoolTotals};
//!
//! // Ten equal nodes of one pool with one pod each; deleting one saves a tenth of the cost
//! // for a tenth of the disruption.
//! let totals = PoolTotals { cost: 1.0, disruption_cost: 20.0 };
//! let s = score_move(0.1, 2.0, totals, 2);
//! assert!((s.score - 1.0).abs() < 1e-9 && s.approved);
//! ```

use std::collections::BTreeMap;

use super::candidates::Candidate;
use super::simulate::Simulation;

/// A NodePool's totals, the denominators of its scores.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PoolTotals {
    /// Σ price of its priced candidates (USD per hour).
    pub cost: f64,
    /// Σ disruption cost of those candidates.
    pub disruption_cost: f64,
}

/// The score of a move for one pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// `savings_fraction / disruption_fraction` (`+∞` when the pool's disruption total is 0).
    pub score: f64,
    /// Savings / the pool's total cost.
    pub savings_fraction: f64,
    /// Move disruption / the pool's total disruption cost.
    pub disruption_fraction: f64,
    /// `1/k`.
    pub threshold: f64,
    /// k (`consolidationThreshold`).
    pub consolidation_threshold: u32,
    /// Whether the move may go ahead for this pool.
    pub approved: bool,
}

impl Score {
    /// Karpenter's event message for the decision (`ConsolidationApproved` /
    /// `ConsolidationRejected`).
    #[must_use]
    pub fn message(&self) -> String {
        let op = if self.approved { ">=" } else { "<" };
        format!(
            "score {:.2} {op} threshold {:.2} (consolidationThreshold: {}, savings {:.1}%, disruption {:.1}%)",
            self.score,
            self.threshold,
            self.consolidation_threshold,
            self.savings_fraction * 100.0,
            self.disruption_fraction * 100.0
        )
    }
}

/// The score of a pool for a move saving `savings` (USD per hour) with disruption cost
/// `disruption`, against the pool's `totals`, with threshold `k`.
#[must_use]
pub fn score_move(savings: f64, disruption: f64, totals: PoolTotals, k: u32) -> Score {
    let threshold = 1.0 / f64::from(k.max(1));
    let mut s = Score {
        score: 0.0,
        savings_fraction: 0.0,
        disruption_fraction: 0.0,
        threshold,
        consolidation_threshold: k,
        approved: false,
    };
    if totals.cost <= 0.0 {
        return s;
    }
    s.savings_fraction = savings / totals.cost;
    if savings <= 0.0 {
        return s;
    }
    if totals.disruption_cost <= 0.0 {
        s.score = f64::INFINITY;
        s.approved = true;
        return s;
    }
    s.disruption_fraction = disruption / totals.disruption_cost;
    s.score = s.savings_fraction / s.disruption_fraction;
    s.approved = s.score >= threshold;
    s
}

/// The price Balanced counts for a candidate: its offering's, when known and positive.
fn priced(c: &Candidate) -> Option<f64> {
    c.price().filter(|p| *p > 0.0)
}

/// Totals per NodePool name from `candidates` (every candidate of the pass).
#[must_use]
pub fn pool_totals(candidates: &[Candidate]) -> BTreeMap<String, PoolTotals> {
    let mut out: BTreeMap<String, PoolTotals> = BTreeMap::new();
    for c in candidates {
        let Some(price) = priced(c) else { continue };
        let t = out.entry(c.facts.nodepool.clone()).or_default();
        t.cost += price;
        t.disruption_cost += c.disruption_cost;
    }
    out
}

/// A consolidation move's estimated savings: the candidates' prices minus the replacements'
/// cheapest prices (Karpenter's `EstimatedSavings`).
#[must_use]
pub fn estimated_savings(candidates: &[&Candidate], sim: &Simulation) -> f64 {
    let before: f64 = candidates.iter().filter_map(|c| c.price()).sum();
    let after: f64 = sim
        .results
        .new_nodeclaims
        .iter()
        .map(|r| r.cheapest.price)
        .sum();
    before - after
}

/// The score of every `Balanced` pool that `candidates` take nodes from, in pool-name order
/// (every pool, with `default_k` for the others, when it is given).
#[must_use]
pub fn evaluate(
    totals: &BTreeMap<String, PoolTotals>,
    candidates: &[&Candidate],
    savings: f64,
    default_k: Option<u32>,
) -> Vec<(String, Score)> {
    let mut by_pool: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for &c in candidates {
        by_pool
            .entry(c.facts.nodepool.as_str())
            .or_default()
            .push(c);
    }
    let all_cost: f64 = candidates.iter().filter_map(|c| priced(c)).sum();
    let mut out = Vec::new();
    for (pool, cs) in &by_pool {
        let Some(k) = cs[0]
            .settings
            .consolidation_policy
            .balanced_threshold()
            .or(default_k)
        else {
            continue;
        };
        let disruption: f64 = cs.iter().map(|c| c.disruption_cost).sum();
        let pool_cost: f64 = cs.iter().filter_map(|c| priced(c)).sum();
        let pool_savings = if by_pool.len() > 1 && all_cost > 0.0 {
            savings * (pool_cost / all_cost)
        } else {
            savings
        };
        let t = totals.get(*pool).copied().unwrap_or_default();
        out.push((pool.to_string(), score_move(pool_savings, disruption, t, k)));
    }
    out
}

/// Whether every `Balanced` pool approves the move; else the first rejection, worded like
/// Karpenter's `ConsolidationRejected` event (prefixed with the pool when the move spans pools).
///
/// # Errors
/// The rejection message.
pub fn approve(
    totals: &BTreeMap<String, PoolTotals>,
    candidates: &[&Candidate],
    savings: f64,
) -> Result<(), String> {
    approve_with(totals, candidates, savings, None)
}

/// [`approve`], scoring pools that are not `Balanced` with `default_k` when it is given (the
/// global consolidator justifies every move this way).
///
/// # Errors
/// The rejection message.
pub fn approve_with(
    totals: &BTreeMap<String, PoolTotals>,
    candidates: &[&Candidate],
    savings: f64,
    default_k: Option<u32>,
) -> Result<(), String> {
    let spans_pools = candidates
        .iter()
        .any(|c| c.facts.nodepool != candidates[0].facts.nodepool);
    match evaluate(totals, candidates, savings, default_k)
        .into_iter()
        .find(|(_, s)| !s.approved)
    {
        None => Ok(()),
        Some((pool, s)) if spans_pools => Err(format!("NodePool {pool:?}: {}", s.message())),
        Some((_, s)) => Err(s.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(cost: f64, disruption_cost: f64) -> PoolTotals {
        PoolTotals {
            cost,
            disruption_cost,
        }
    }

    #[test]
    fn scores_follow_karpenters_table() {
        let t = totals(100.0, 100.0);
        let cases = [
            // (savings, disruption, score, approved)
            (20.0, 5.0, 4.0, true),
            (10.0, 10.0, 1.0, true),
            (5.0, 50.0, 0.1, false),
            (0.0, 10.0, 0.0, false),
            (-5.0, 10.0, 0.0, false),
        ];
        for (savings, disruption, score, approved) in cases {
            let s = score_move(savings, disruption, t, 2);
            assert!(
                (s.score - score).abs() < 1e-9,
                "{savings}/{disruption}: {s:?}"
            );
            assert_eq!(s.approved, approved, "{savings}/{disruption}: {s:?}");
        }
    }

    #[test]
    fn a_pool_without_disruption_approves_any_saving_move_and_one_without_cost_none() {
        let s = score_move(10.0, 0.0, totals(100.0, 0.0), 2);
        assert!(s.approved && s.score.is_infinite());
        assert!(!score_move(0.0, 0.0, totals(100.0, 0.0), 2).approved);
        assert!(!score_move(10.0, 1.0, totals(0.0, 10.0), 2).approved);
    }

    #[test]
    fn the_threshold_is_one_over_k() {
        // A uniform-pool replace saving half a node: score 0.5.
        let t = totals(48.4, 80.0);
        let s = |k| score_move(2.42, 8.0, t, k);
        assert!(!s(1).approved);
        assert!(s(2).approved);
        assert!(s(3).approved);
        // The design's marginal move: 0.42 < 0.5.
        let marginal = score_move(2.42, 8.0, totals(58.08, 80.0), 2);
        assert!(!marginal.approved);
        assert_eq!(
            marginal.message(),
            "score 0.42 < threshold 0.50 (consolidationThreshold: 2, savings 4.2%, disruption 10.0%)"
        );
        assert!(score_move(2.42, 8.0, totals(58.08, 80.0), 3).approved);
    }
}
