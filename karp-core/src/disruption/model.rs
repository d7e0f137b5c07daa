//! What disruption planning reads besides the [`ClusterSnapshot`]: NodeClaim facts of managed
//! nodes, pod metadata, PodDisruptionBudgets and NodePool disruption settings.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster::ClusterSnapshot;
use crate::pod::LabelSelector;

use super::time::Timestamp;

/// `karpenter.sh/do-not-disrupt`.
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";

/// Why nodes are disrupted; budgets are per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Emptiness.
    Empty,
    /// Drift.
    Drifted,
    /// Single- and multi-node consolidation.
    Underutilized,
    /// `expireAfter` reached (never budgeted).
    Expired,
}

impl Reason {
    /// The name Karpenter uses (`Empty`, `Drifted`, `Underutilized`, `Expired`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Empty => "Empty",
            Reason::Drifted => "Drifted",
            Reason::Underutilized => "Underutilized",
            Reason::Expired => "Expired",
        }
    }

    /// The reasons budgets apply to, in output order.
    pub const BUDGETED: [Reason; 3] = [Reason::Empty, Reason::Drifted, Reason::Underutilized];
}

/// Karpenter's default `spec.disruption.consolidationThreshold` (k) of a `Balanced` pool.
pub const DEFAULT_CONSOLIDATION_THRESHOLD: u32 = 2;

/// The values Karpenter's CRD accepts for `spec.disruption.consolidationThreshold`.
pub const CONSOLIDATION_THRESHOLD_RANGE: std::ops::RangeInclusive<u32> = 1..=3;

/// `spec.disruption.consolidationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsolidationPolicy {
    /// Only empty nodes are consolidated.
    WhenEmpty,
    /// Empty and underutilized nodes (Karpenter's default).
    #[default]
    WhenEmptyOrUnderutilized,
    /// Karpenter 1.14's `Balanced`: as `WhenEmptyOrUnderutilized`, but a consolidation move is
    /// taken only when its share of the pool's cost saved is at least `1/k` of its share of the
    /// pool's disruption cost (see [`balanced`](super::balanced)).
    Balanced {
        /// `spec.disruption.consolidationThreshold` (k, 1..=3, default 2).
        consolidation_threshold: u32,
    },
}

impl ConsolidationPolicy {
    /// `Balanced` with Karpenter's default threshold (k = 2).
    #[must_use]
    pub fn balanced() -> Self {
        ConsolidationPolicy::Balanced {
            consolidation_threshold: DEFAULT_CONSOLIDATION_THRESHOLD,
        }
    }

    /// Whether non-empty (underutilized) nodes may be consolidated.
    #[must_use]
    pub fn consolidates_underutilized(self) -> bool {
        !matches!(self, ConsolidationPolicy::WhenEmpty)
    }

    /// The threshold k of a `Balanced` pool (`None` for the other policies).
    #[must_use]
    pub fn balanced_threshold(self) -> Option<u32> {
        match self {
            ConsolidationPolicy::Balanced {
                consolidation_threshold,
            } => Some(consolidation_threshold),
            _ => None,
        }
    }
}

/// `spec.disruption.consolidateAfter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsolidateAfter {
    /// Consolidation (including emptiness) is disabled.
    Never,
    /// Wait this long after the last pod event (Karpenter's default: 0s).
    After(Duration),
}

impl Default for ConsolidateAfter {
    fn default() -> Self {
        ConsolidateAfter::After(Duration::ZERO)
    }
}

/// One entry of `spec.disruption.budgets`, as written (validated when budgets are computed, so an
/// invalid budget can fail closed as Karpenter's does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// `nodes`: a count (`"5"`) or a percentage (`"10%"`).
    pub nodes: String,
    /// `reasons`; empty means every reason.
    pub reasons: Vec<Reason>,
    /// `schedule`: a cron expression in UTC; with `duration` it limits when the budget applies.
    pub schedule: Option<String>,
    /// `duration`: how long the budget applies after each schedule activation.
    pub duration: Option<Duration>,
}

impl Budget {
    /// An always-active budget for every reason.
    #[must_use]
    pub fn nodes(nodes: &str) -> Self {
        Budget {
            nodes: nodes.to_string(),
            reasons: Vec::new(),
            schedule: None,
            duration: None,
        }
    }

    /// Restrict to `reasons`.
    #[must_use]
    pub fn reasons(mut self, reasons: &[Reason]) -> Self {
        self.reasons = reasons.to_vec();
        self
    }

    /// Apply only during `duration` after each activation of `schedule`.
    #[must_use]
    pub fn during(mut self, schedule: &str, duration: Duration) -> Self {
        self.schedule = Some(schedule.to_string());
        self.duration = Some(duration);
        self
    }
}

/// Which consolidator plans a NodePool's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub enum Mode {
    /// Karpenter v1.14's multi-node and single-node consolidation, exactly.
    #[default]
    Karpenter,
    /// karp's global consolidator (N → M moves chosen together), with a savings threshold.
    Global,
}

impl Mode {
    /// `karpenter` or `global`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Karpenter => "karpenter",
            Mode::Global => "global",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "karpenter" => Ok(Mode::Karpenter),
            "global" => Ok(Mode::Global),
            other => Err(format!(
                "unknown consolidation mode {other:?} (expected karpenter or global)"
            )),
        }
    }
}

/// The least a `global`-mode consolidation must save per hour: the larger of an absolute amount
/// and a fraction of the hourly cost of the NodePools it touches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SavingsThreshold {
    /// USD per hour.
    pub per_hour: f64,
    /// Fraction (0.01 = 1 %) of the touched NodePools' hourly cost.
    pub fraction: f64,
}

impl SavingsThreshold {
    /// No threshold: any strictly positive saving counts.
    pub const ZERO: SavingsThreshold = SavingsThreshold {
        per_hour: 0.0,
        fraction: 0.0,
    };

    /// The default: one cent per hour, no fraction.
    pub const DEFAULT: SavingsThreshold = SavingsThreshold {
        per_hour: 0.01,
        fraction: 0.0,
    };

    /// The savings required of a move touching pools that cost `pools_cost` per hour.
    #[must_use]
    pub fn required(&self, pools_cost: f64) -> f64 {
        self.per_hour.max(self.fraction * pools_cost)
    }

    /// Parse `DOLLARS`, `PERCENT%` or both separated by a comma (`0.05`, `2%`, `0.05,2%`); what
    /// is not given is zero.
    ///
    /// # Errors
    /// A message saying what is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = SavingsThreshold::ZERO;
        let mut seen = (false, false);
        for part in text.split(',').map(str::trim) {
            let (number, percent) = match part.strip_suffix('%') {
                Some(n) => (n.trim(), true),
                None => (part, false),
            };
            let v: f64 = number
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    format!(
                        "{part:?} is not a non-negative number of dollars per hour or a percentage"
                    )
                })?;
            let slot = if percent { &mut seen.1 } else { &mut seen.0 };
            if std::mem::replace(slot, true) {
                return Err(format!("{text:?} gives the same kind of threshold twice"));
            }
            if percent {
                if v > 100.0 {
                    return Err(format!("{part:?} is more than 100%"));
                }
                out.fraction = v / 100.0;
            } else {
                out.per_hour = v;
            }
        }
        Ok(out)
    }
}

impl Default for SavingsThreshold {
    fn default() -> Self {
        SavingsThreshold::DEFAULT
    }
}

impl std::fmt::Display for SavingsThreshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${}/h", self.per_hour)?;
        if self.fraction > 0.0 {
            write!(f, " or {}% of the pools' cost", self.fraction * 100.0)?;
        }
        Ok(())
    }
}

/// A NodePool's `spec.disruption`, plus karp's per-pool annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct DisruptionSettings {
    /// `consolidationPolicy`.
    pub consolidation_policy: ConsolidationPolicy,
    /// `consolidateAfter`.
    pub consolidate_after: ConsolidateAfter,
    /// `budgets` (Karpenter's default is one budget of `10%`).
    pub budgets: Vec<Budget>,
    /// `karp.dev/consolidation-mode`: overrides the pass's mode for this pool.
    pub mode: Option<Mode>,
    /// `karp.dev/consolidation-min-savings`: overrides the pass's threshold for this pool.
    pub min_savings: Option<SavingsThreshold>,
}

impl Default for DisruptionSettings {
    fn default() -> Self {
        DisruptionSettings {
            consolidation_policy: ConsolidationPolicy::default(),
            consolidate_after: ConsolidateAfter::default(),
            budgets: vec![Budget::nodes("10%")],
            mode: None,
            min_savings: None,
        }
    }
}

/// The offering a node runs on (from its NodeClaim or its labels and the catalog).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeOffering {
    /// Instance type.
    pub instance_type: String,
    /// Zone.
    pub zone: String,
    /// `spot`, `on-demand` or `reserved`.
    pub capacity_type: String,
    /// USD per hour.
    pub price: f64,
}

/// A node's drift, as the NodeClaim's `Drifted` condition reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The condition's reason (`NodePoolDrifted`, `RequirementsDrifted`, `AMIDrift`, ...).
    pub reason: String,
    /// When the node became drifted (the condition's last transition).
    pub since: Timestamp,
}

/// What disruption knows about one managed node (its NodeClaim, or the Node standing in for it).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeClaimFacts {
    /// The NodePool it belongs to.
    pub nodepool: String,
    /// NodeClaim name, if there is one.
    pub nodeclaim: Option<String>,
    /// Whether it is initialized.
    pub initialized: bool,
    /// Whether its Node is Ready.
    pub ready: bool,
    /// Creation time (expiration counts from here).
    pub created: Timestamp,
    /// When it became initialized.
    pub initialized_at: Option<Timestamp>,
    /// `status.lastPodEventTime`.
    pub last_pod_event: Option<Timestamp>,
    /// Being deleted or marked for deletion by another command.
    pub deleting: bool,
    /// Nominated for a pending pod by a recent provisioning pass.
    pub nominated: bool,
    /// The Node or NodeClaim carries `karpenter.sh/do-not-disrupt: "true"`.
    pub do_not_disrupt: bool,
    /// The offering, when known (consolidation needs it; emptiness and drift do not).
    pub offering: Option<NodeOffering>,
    /// `spec.expireAfter` (`None`: Never).
    pub expire_after: Option<Duration>,
    /// `spec.terminationGracePeriod`.
    pub termination_grace_period: Option<Duration>,
    /// Drift, when the node is drifted.
    pub drifted: Option<Drift>,
}

impl NodeClaimFacts {
    /// An initialized, Ready node of `nodepool` created and initialized at `created`.
    #[must_use]
    pub fn new(nodepool: &str, created: Timestamp) -> Self {
        NodeClaimFacts {
            nodepool: nodepool.to_string(),
            nodeclaim: None,
            initialized: true,
            ready: true,
            created,
            initialized_at: Some(created),
            last_pod_event: None,
            deleting: false,
            nominated: false,
            do_not_disrupt: false,
            offering: None,
            expire_after: None,
            termination_grace_period: None,
            drifted: None,
        }
    }
}

/// Pod metadata disruption needs (the scheduler's [`Pod`](crate::pod::Pod) has the rest).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFacts {
    /// The `karpenter.sh/do-not-disrupt` annotation value, if present.
    pub do_not_disrupt: Option<String>,
    /// `controller.kubernetes.io/pod-deletion-cost` (0 when absent or invalid).
    pub deletion_cost: i32,
    /// Kind of the controlling owner (`DaemonSet`, `StatefulSet`, `ReplicaSet`, `Job`, ...).
    pub owner_kind: Option<String>,
    /// A static (mirror) pod.
    pub mirror: bool,
    /// Phase Succeeded or Failed.
    pub terminal: bool,
    /// Has a deletionTimestamp.
    pub terminating: bool,
    /// `status.startTime`.
    pub start_time: Option<Timestamp>,
}

/// A PodDisruptionBudget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDisruptionBudget {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pods it selects (in its namespace).
    pub selector: LabelSelector,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i32,
}

/// Everything one disruption pass reads.
#[derive(Debug, Clone, Default)]
pub struct DisruptionInput {
    /// The cluster as the scheduler sees it (nodes, bound and pending pods, pools, daemonsets).
    pub snapshot: ClusterSnapshot,
    /// Managed nodes by node name; nodes absent here are not karp-managed.
    pub nodes: BTreeMap<String, NodeClaimFacts>,
    /// Pod metadata by `namespace/name`; absent pods have default facts.
    pub pods: BTreeMap<String, PodFacts>,
    /// PodDisruptionBudgets.
    pub pdbs: Vec<PodDisruptionBudget>,
    /// Disruption settings per NodePool name; absent pools use the defaults.
    pub pools: BTreeMap<String, DisruptionSettings>,
}
