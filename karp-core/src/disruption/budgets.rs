//! NodePool disruption budgets: how many nodes of a pool each reason may disrupt now.
//!
//! As Karpenter computes them: a budget applies to a reason when its `reasons` is empty or names
//! it, and is active when it has no schedule or `now` lies within `duration` after an activation
//! of its schedule (UTC). Its `nodes` is a count, or a percentage of the pool's initialized
//! managed nodes rounded up. The smallest active budget wins; no active budget means unlimited.
//! Nodes of the pool that are being deleted or are NotReady are subtracted (each once, floored at
//! zero). A pool with an invalid budget allows nothing, for every reason. Expiration ignores
//! budgets.

use std::collections::BTreeMap;

use super::cron::{CronError, Schedule};
use super::model::{Budget, DisruptionInput, DisruptionSettings, Reason};
use super::time::Timestamp;

/// A budget that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// `nodes` is neither a count nor a percentage of at most 100.
    #[error("budget nodes {value:?} is neither a count nor a percentage (0-100%)")]
    Nodes {
        /// The value.
        value: String,
    },
    /// The schedule does not parse.
    #[error("budget schedule")]
    Schedule(#[source] CronError),
    /// Only one of `schedule` and `duration` is set.
    #[error("budget schedule and duration must be set together")]
    ScheduleWithoutDuration,
}

/// Allowed disruptions: a count, or unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Allowed {
    /// At most this many nodes.
    Nodes(usize),
    /// No active budget limits this reason.
    Unlimited,
}

impl Allowed {
    /// Whether at least one more node may be disrupted.
    #[must_use]
    pub fn any(self) -> bool {
        self != Allowed::Nodes(0)
    }

    /// Use one disruption.
    pub fn take(&mut self) {
        if let Allowed::Nodes(n) = self {
            *n = n.saturating_sub(1);
        }
    }

    /// As a number (`None`: unlimited).
    #[must_use]
    pub fn count(self) -> Option<usize> {
        match self {
            Allowed::Nodes(n) => Some(n),
            Allowed::Unlimited => None,
        }
    }
}

/// The budget of one pool and reason, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    /// NodePool.
    pub nodepool: String,
    /// Reason.
    pub reason: Reason,
    /// Allowed now, after subtracting deleting and NotReady nodes.
    pub allowed: Allowed,
    /// Why the pool allows nothing, when one of its budgets is invalid.
    pub error: Option<String>,
}

fn parse_nodes(value: &str, total: usize) -> Result<usize, BudgetError> {
    let err = || BudgetError::Nodes {
        value: value.to_string(),
    };
    if let Some(p) = value.strip_suffix('%') {
        let pct: usize = p.parse().map_err(|_| err())?;
        if pct > 100 || p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        Ok((total * pct).div_ceil(100))
    } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse().map_err(|_| err())
    } else {
        Err(err())
    }
}

/// Whether `budget` is active at `now`.
///
/// # Errors
/// [`BudgetError`] when its schedule is invalid or set without a duration.
pub fn is_active(budget: &Budget, now: Timestamp) -> Result<bool, BudgetError> {
    match (&budget.schedule, budget.duration) {
        (None, None) => Ok(true),
        (Some(s), Some(d)) => {
            let schedule: Schedule = s.parse().map_err(BudgetError::Schedule)?;
            Ok(schedule.is_active(now, d))
        }
        _ => Err(BudgetError::ScheduleWithoutDuration),
    }
}

/// The disruptions `settings` allow for `reason` at `now` in a pool of `total` nodes, before
/// subtracting disrupting nodes. Every budget is validated, active or not, so that an invalid
/// budget fails the whole pool closed.
///
/// # Errors
/// The first [`BudgetError`] of the pool's budgets.
pub fn allowed_by_budgets(
    settings: &DisruptionSettings,
    total: usize,
    reason: Reason,
    now: Timestamp,
) -> Result<Allowed, BudgetError> {
    let mut allowed = Allowed::Unlimited;
    for b in &settings.budgets {
        let n = parse_nodes(&b.nodes, total)?;
        let active = is_active(b, now)?;
        if active && (b.reasons.is_empty() || b.reasons.contains(&reason)) {
            allowed = allowed.min(Allowed::Nodes(n));
        }
    }
    Ok(allowed)
}

/// Budgets of every NodePool of the snapshot for every budgeted reason, in (pool, reason) order.
#[must_use]
pub fn compute(input: &DisruptionInput, now: Timestamp) -> Vec<BudgetStatus> {
    let mut total: BTreeMap<&str, usize> = BTreeMap::new();
    let mut disrupting: BTreeMap<&str, usize> = BTreeMap::new();
    let snapshot_deleting: BTreeMap<&str, bool> = input
        .snapshot
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.deleting))
        .collect();
    for (name, f) in &input.nodes {
        if !f.initialized {
            continue;
        }
        *total.entry(f.nodepool.as_str()).or_default() += 1;
        let deleting = f.deleting
            || snapshot_deleting
                .get(name.as_str())
                .copied()
                .unwrap_or(false);
        if deleting || !f.ready {
            *disrupting.entry(f.nodepool.as_str()).or_default() += 1;
        }
    }
    let default = DisruptionSettings::default();
    let mut pools: Vec<&str> = input
        .snapshot
        .node_pools
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    pools.sort_unstable();
    pools.dedup();
    let mut out = Vec::new();
    for pool in pools {
        let settings = input.pools.get(pool).unwrap_or(&default);
        let n = total.get(pool).copied().unwrap_or(0);
        let busy = disrupting.get(pool).copied().unwrap_or(0);
        for reason in Reason::BUDGETED {
            let (allowed, error) = match allowed_by_budgets(settings, n, reason, now) {
                Ok(Allowed::Nodes(a)) => (Allowed::Nodes(a.saturating_sub(busy)), None),
                Ok(Allowed::Unlimited) => (Allowed::Unlimited, None),
                Err(e) => (Allowed::Nodes(0), Some(error_chain(&e))),
            };
            out.push(BudgetStatus {
                nodepool: pool.to_string(),
                reason,
                allowed,
                error,
            });
        }
    }
    out
}

/// An error and its sources, joined with `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(budgets: Vec<Budget>) -> DisruptionSettings {
        DisruptionSettings {
            budgets,
            ..DisruptionSettings::default()
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_utc(2026, 12, 1, 12, 0, 0)
    }

    #[test]
    fn percentages_round_up() {
        let s = settings(vec![Budget::nodes("10%")]);
        assert_eq!(
            allowed_by_budgets(&s, 11, Reason::Empty, now()),
            Ok(Allowed::Nodes(2))
        );
        assert_eq!(
            allowed_by_budgets(&s, 10, Reason::Empty, now()),
            Ok(Allowed::Nodes(1))
        );
        assert_eq!(
            allowed_by_budgets(&s, 0, Reason::Empty, now()),
            Ok(Allowed::Nodes(0))
        );
        let s = settings(vec![Budget::nodes("0%")]);
        assert_eq!(
            allowed_by_budgets(&s, 50, Reason::Drifted, now()),
            Ok(Allowed::Nodes(0))
        );
    }

    #[test]
    fn smallest_active_budget_for_the_reason_wins() {
        let s = settings(vec![
            Budget::nodes("5"),
            Budget::nodes("1").reasons(&[Reason::Drifted]),
            Budget::nodes("0").during("0 0 * * *", Duration::from_secs(3600)),
        ]);
        assert_eq!(
            allowed_by_budgets(&s, 20, Reason::Empty, now()),
            Ok(Allowed::Nodes(5))
        );
        assert_eq!(
            allowed_by_budgets(&s, 20, Reason::Drifted, now()),
            Ok(Allowed::Nodes(1))
        );
        let midnight = Timestamp::from_utc(2026, 12, 2, 0, 30, 0);
        assert_eq!(
            allowed_by_budgets(&s, 20, Reason::Empty, midnight),
            Ok(Allowed::Nodes(0))
        );
        let only_drift = settings(vec![Budget::nodes("1").reasons(&[Reason::Drifted])]);
        assert_eq!(
            allowed_by_budgets(&only_drift, 20, Reason::Underutilized, now()),
            Ok(Allowed::Unlimited)
        );
    }

    #[test]
    fn invalid_budgets_are_errors() {
        for b in [
            Budget::nodes("101%"),
            Budget::nodes("-1"),
            Budget::nodes("ten"),
            Budget::nodes("1").during("61 * * * *", Duration::from_secs(60)),
            Budget {
                schedule: Some("@daily".into()),
                ..Budget::nodes("1")
            },
        ] {
            assert!(
                allowed_by_budgets(&settings(vec![b.clone()]), 10, Reason::Empty, now()).is_err(),
                "{b:?}"
            );
        }
    }
}
