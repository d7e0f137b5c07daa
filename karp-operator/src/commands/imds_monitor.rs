//! `karp imds-monitor`: node-local interruption handling, as AWS Node Termination Handler's IMDS
//! mode does it. An agent on every node (the chart's optional DaemonSet) polls the instance
//! metadata service every 2 s; on a spot interruption notice, a scheduled maintenance event or
//! (when enabled) a rebalance recommendation it taints and cordons its node, drains it through the
//! Eviction API (PodDisruptionBudgets respected, DaemonSet and mirror pods left alone) and records
//! an Event on the Node. A scheduled event EC2 cancels takes the taint off and uncordons the node
//! again (unless it was unschedulable before). No queue and no NodeClaim are needed: it works on
//! any node, karp-managed or not.
//!
//! What to do is decided by [`decide`] (pure) from the notices and the [`MonitorState`]; the
//! executor in [`run_monitor`] carries the actions out.
//!
//! ```
//! use karp_aws::imds::{ImdsNotices, SpotAction};
//! use karp_operator::commands::imds_monitor::{decide, MonitorAction, MonitorOptions, MonitorState};
//!
//! let options = MonitorOptions::for_node("ip-10-0-0-1.ec2.internal");
//! let mut state = MonitorState::default();
//! let notices = ImdsNotices {
//!     spot: Some(SpotAction { action: "terminate".into(), time: "2026-12-07T08:22:00Z".into() }),
//!     ..ImdsNotices::default()
//! };
//! let actions = decide(&mut state, &notices, &options);
//! assert!(matches!(actions[1], MonitorAction::Cordon { .. }));
//! assert_eq!(actions.last(), Some(&MonitorAction::Drain));
//! // The same notice at the next poll: only the drain goes on.
//! assert_eq!(decide(&mut state, &notices, &options), [MonitorAction::Drain]);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use karp_aws::imds::{ImdsNotices, ImdsPoller};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::controllers::termination::{is_mirror, is_terminal};
use crate::controllers::Events;

/// The kinds of notice the monitor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NoticeKind {
    /// `spot/instance-action`.
    SpotInterruption,
    /// `events/maintenance/scheduled`.
    ScheduledMaintenance,
    /// `events/recommendations/rebalance`.
    RebalanceRecommendation,
}

impl NoticeKind {
    /// The taint the monitor puts on the node for this kind (value: the notice).
    #[must_use]
    pub fn taint_key(self) -> &'static str {
        match self {
            NoticeKind::SpotInterruption => "karp.dev/spot-itn",
            NoticeKind::ScheduledMaintenance => "karp.dev/scheduled-maintenance",
            NoticeKind::RebalanceRecommendation => "karp.dev/rebalance-recommendation",
        }
    }
}

/// How the monitor behaves (the flags of `karp imds-monitor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorOptions {
    /// The node this agent runs on.
    pub node_name: String,
    /// Drain on spot interruption notices (default on).
    pub drain_on_spot: bool,
    /// Drain on scheduled maintenance events (default on).
    pub drain_on_scheduled: bool,
    /// Drain on rebalance recommendations (default off).
    pub drain_on_rebalance: bool,
    /// Taint and cordon, without draining, on rebalance recommendations (default off).
    pub cordon_on_rebalance: bool,
    /// Log what would be done; write nothing.
    pub dry_run: bool,
    /// Grace period of evicted pods in seconds (`None`: each pod's own).
    pub grace_period: Option<i64>,
    /// Effect of the monitor's taints (`NoSchedule`, `PreferNoSchedule` or `NoExecute`).
    pub taint_effect: String,
    /// How often IMDS is read.
    pub poll: Duration,
}

impl MonitorOptions {
    /// The defaults (Node Termination Handler's) for `node_name`.
    #[must_use]
    pub fn for_node(node_name: &str) -> Self {
        MonitorOptions {
            node_name: node_name.to_string(),
            drain_on_spot: true,
            drain_on_scheduled: true,
            drain_on_rebalance: false,
            cordon_on_rebalance: false,
            dry_run: false,
            grace_period: None,
            taint_effect: "NoSchedule".into(),
            poll: Duration::from_secs(2),
        }
    }
}

/// What the monitor remembers between polls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorState {
    /// Notices already acted on (`spot:<action>:<time>`, `scheduled:<id>`, `rebalance:<time>`).
    seen: BTreeSet<String>,
    /// The monitor's taints on the node: kind → taint value.
    taints: BTreeMap<NoticeKind, String>,
    /// The scheduled event the scheduled-maintenance taint is for.
    scheduled_event: Option<String>,
    /// Whether the node is being drained.
    draining: bool,
}

impl MonitorState {
    /// Whether the node is being drained.
    #[must_use]
    pub fn draining(&self) -> bool {
        self.draining
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorAction {
    /// Record an Event on the node.
    Record {
        /// `Normal` or `Warning`.
        type_: &'static str,
        /// Reason.
        reason: &'static str,
        /// Message.
        message: String,
    },
    /// Put the kind's taint on the node and cordon it.
    Cordon {
        /// Which notice.
        kind: NoticeKind,
        /// Taint value.
        value: String,
    },
    /// Take the kind's taint off; uncordon when it was the monitor's last taint and the node was
    /// schedulable before.
    Uncordon {
        /// Which notice.
        kind: NoticeKind,
    },
    /// Evict the pods that must go (once per poll while draining).
    Drain,
}

/// A taint value from free text: label-value characters only, at most 63.
fn taint_value(text: &str) -> String {
    let v: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Taints and cordons for `kind` unless its taint already says `value`; starts a drain when
/// `drain`.
fn cordon(
    state: &mut MonitorState,
    actions: &mut Vec<MonitorAction>,
    kind: NoticeKind,
    value: String,
    drain: bool,
) {
    if state.taints.get(&kind) != Some(&value) {
        state.taints.insert(kind, value.clone());
        actions.push(MonitorAction::Cordon { kind, value });
    }
    state.draining |= drain;
}

/// Decides what to do about one poll's notices (pure), updating `state`.
#[must_use]
pub fn decide(
    state: &mut MonitorState,
    notices: &ImdsNotices,
    options: &MonitorOptions,
) -> Vec<MonitorAction> {
    let mut actions = Vec::new();
    if let Some(spot) = &notices.spot {
        if state
            .seen
            .insert(format!("spot:{}:{}", spot.action, spot.time))
        {
            actions.push(MonitorAction::Record {
                type_: "Warning",
                reason: "SpotInterruption",
                message: format!(
                    "Spot interruption notice: EC2 will {} the instance at {}",
                    spot.action, spot.time
                ),
            });
            if options.drain_on_spot {
                cordon(
                    state,
                    &mut actions,
                    NoticeKind::SpotInterruption,
                    taint_value(&format!("{}-{}", spot.action, spot.time)),
                    true,
                );
            }
        }
    }
    let mut scheduled: Vec<_> = notices.scheduled.iter().collect();
    scheduled.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    for e in scheduled {
        let key = format!("scheduled:{}", e.event_id);
        if e.is_canceled() {
            if state.scheduled_event.as_deref() == Some(e.event_id.as_str()) {
                state.scheduled_event = None;
                state.taints.remove(&NoticeKind::ScheduledMaintenance);
                actions.push(MonitorAction::Record {
                    type_: "Normal",
                    reason: "ScheduledEventCanceled",
                    message: format!("EC2 canceled scheduled event {} ({})", e.event_id, e.code),
                });
                actions.push(MonitorAction::Uncordon {
                    kind: NoticeKind::ScheduledMaintenance,
                });
                // Nothing else keeps the node draining.
                if state.taints.is_empty() {
                    state.draining = false;
                }
            }
            state.seen.insert(key);
            continue;
        }
        if e.is_completed() || !state.seen.insert(key) {
            continue;
        }
        actions.push(MonitorAction::Record {
            type_: "Warning",
            reason: "ScheduledEvent",
            message: format!(
                "EC2 scheduled {} ({}) from {}{}: {}",
                e.code,
                e.event_id,
                e.not_before,
                e.not_after
                    .as_deref()
                    .map(|a| format!(" to {a}"))
                    .unwrap_or_default(),
                e.description
            ),
        });
        if options.drain_on_scheduled && state.scheduled_event.is_none() {
            state.scheduled_event = Some(e.event_id.clone());
            cordon(
                state,
                &mut actions,
                NoticeKind::ScheduledMaintenance,
                taint_value(&e.event_id),
                true,
            );
        }
    }
    if let Some(r) = &notices.rebalance {
        if state.seen.insert(format!("rebalance:{}", r.notice_time)) {
            actions.push(MonitorAction::Record {
                type_: "Normal",
                reason: "RebalanceRecommendation",
                message: format!(
                    "EC2 rebalance recommendation at {}: elevated risk of interruption",
                    r.notice_time
                ),
            });
            if options.drain_on_rebalance || options.cordon_on_rebalance {
                cordon(
                    state,
                    &mut actions,
                    NoticeKind::RebalanceRecommendation,
                    taint_value(&r.notice_time),
                    options.drain_on_rebalance,
                );
            }
        }
    }
    if state.draining {
        actions.push(MonitorAction::Drain);
    }
    actions
}

/// Whether a pod on the node must be evicted for a drain: not finished, not a mirror pod, not a
/// DaemonSet's (it would come right back, and it serves the node until the end), not already
/// terminating.
#[must_use]
pub fn must_evict(p: &Pod) -> bool {
    !is_terminal(p)
        && !is_mirror(p)
        && !crate::controllers::provisioner::is_daemonset_pod(p)
        && p.metadata.deletion_timestamp.is_none()
}

/// Errors of `karp imds-monitor`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// The Kubernetes client could not be configured.
    #[error("configuring the Kubernetes client: {0}")]
    KubeConfig(String),
    /// The node named by `--node-name` does not exist.
    #[error("--node-name {0}: no such Node in the cluster")]
    NodeNotFound(String),
    /// The node named by `--node-name` cannot be read (API server unreachable, forbidden).
    #[error("--node-name {node}: reading the Node: {reason}")]
    ReadNode {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
}

/// Carries out the actions on the node.
struct Executor {
    nodes: Api<Node>,
    client: Client,
    events: Events,
    options: MonitorOptions,
    /// Whether the node was unschedulable before the monitor's first cordon.
    was_unschedulable: Option<bool>,
    /// Whether the current drain was reported done.
    drained: bool,
}

impl Executor {
    async fn node(&self) -> Option<Node> {
        match self.nodes.get(&self.options.node_name).await {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(error = %e, "reading the Node failed");
                None
            }
        }
    }

    async fn patch_node(&self, patch: serde_json::Value, what: &str) -> bool {
        match self
            .nodes
            .patch(
                &self.options.node_name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e, "{what} failed");
                false
            }
        }
    }

    /// Makes the node carry exactly the monitor's taints of `state` (others' taints untouched)
    /// and be cordoned while it has any; once it has none, uncordons it if the monitor cordoned
    /// it. Level-triggered: a write that failed (API unreachable at the notice or at the
    /// cancellation) is made again at the next poll.
    async fn ensure_marks(&mut self, state: &MonitorState) {
        if self.options.dry_run {
            return;
        }
        let ours = |key: &str| {
            [
                NoticeKind::SpotInterruption,
                NoticeKind::ScheduledMaintenance,
                NoticeKind::RebalanceRecommendation,
            ]
            .iter()
            .any(|k| k.taint_key() == key)
        };
        if state.taints.is_empty() && self.was_unschedulable.is_none() {
            return; // nothing of ours to put on or take off
        }
        let Some(n) = self.node().await else { return };
        let spec = n.spec.unwrap_or_default();
        let current = spec.taints.unwrap_or_default();
        let effect = self.options.taint_effect.clone();
        let mut wanted: Vec<Taint> = current.iter().filter(|t| !ours(&t.key)).cloned().collect();
        wanted.extend(state.taints.iter().map(|(k, v)| Taint {
            key: k.taint_key().into(),
            value: Some(v.clone()),
            effect: effect.clone(),
            time_added: None,
        }));
        let same =
            |a: &Taint, b: &Taint| a.key == b.key && a.value == b.value && a.effect == b.effect;
        let taints_ok = wanted.len() == current.len()
            && wanted.iter().all(|w| current.iter().any(|c| same(w, c)));
        let cordoned = spec.unschedulable.unwrap_or(false);
        if state.taints.is_empty() {
            // Uncordon only what the monitor cordoned.
            let uncordon = self.was_unschedulable == Some(false) && cordoned;
            if taints_ok && !uncordon {
                self.was_unschedulable = None;
                return;
            }
            let mut patch = json!({"spec": {"taints": wanted}});
            if uncordon {
                patch["spec"]["unschedulable"] = json!(false);
            }
            if self.patch_node(patch, "uncordoning the node").await {
                self.was_unschedulable = None;
                info!("taints removed; node uncordoned");
            }
            return;
        }
        if taints_ok && cordoned {
            return;
        }
        self.was_unschedulable.get_or_insert(cordoned);
        self.patch_node(
            json!({"spec": {"unschedulable": true, "taints": wanted}}),
            "cordoning the node",
        )
        .await;
    }

    async fn act(&mut self, action: &MonitorAction, state: &mut MonitorState) {
        if self.options.dry_run {
            if *action != MonitorAction::Drain || !self.drained {
                info!(?action, "dry run: not acting");
            }
            self.drained = *action == MonitorAction::Drain;
            return;
        }
        match action {
            MonitorAction::Record {
                type_,
                reason,
                message,
            } => {
                info!(reason, message = %message, "notice");
                if let Some(n) = self.node().await {
                    self.events
                        .publish(&n.object_ref(&()), type_, reason, message)
                        .await;
                }
            }
            MonitorAction::Cordon { kind, value } => {
                self.drained = false;
                self.ensure_marks(state).await;
                info!(taint = kind.taint_key(), value = %value, "tainted and cordoned");
            }
            MonitorAction::Uncordon { kind } => {
                self.ensure_marks(state).await;
                info!(taint = kind.taint_key(), "notice canceled");
            }
            MonitorAction::Drain => self.drain_wave(state).await,
        }
    }

    /// Evicts every pod that must go; PodDisruptionBudgets that allow no eviction now are
    /// retried at the next poll.
    async fn drain_wave(&mut self, state: &MonitorState) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = match pods
            .list(
                &ListParams::default().fields(&format!("spec.nodeName={}", self.options.node_name)),
            )
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                warn!(error = %e, "listing the node's pods failed");
                return;
            }
        };
        let mut left: Vec<&Pod> = list.iter().filter(|p| must_evict(p)).collect();
        left.sort_by(|a, b| {
            (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
                .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
        });
        if left.is_empty() {
            if !self.drained && state.draining() {
                self.drained = true;
                info!("drained");
            }
            return;
        }
        let params = EvictParams {
            delete_options: Some(DeleteParams {
                grace_period_seconds: self
                    .options
                    .grace_period
                    .and_then(|g| u32::try_from(g).ok()),
                ..DeleteParams::default()
            }),
            ..EvictParams::default()
        };
        for p in left {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match api.evict(&name, &params).await {
                Ok(_) => info!(pod = %format!("{ns}/{name}"), "evicted"),
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    debug!(pod = %format!("{ns}/{name}"), "eviction blocked by a PodDisruptionBudget; retrying");
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => warn!(pod = %format!("{ns}/{name}"), error = %e, "eviction failed"),
            }
        }
    }
}

/// Polls IMDS and acts on the node until `shutdown`.
///
/// # Errors
/// [`MonitorError::NodeNotFound`] when the node does not exist (a wrong `--node-name`),
/// [`MonitorError::ReadNode`] when it cannot be read at start.
pub async fn run_monitor(
    client: Client,
    mut poller: ImdsPoller,
    options: MonitorOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), MonitorError> {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.get(&options.node_name).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(MonitorError::NodeNotFound(options.node_name.clone()));
        }
        Err(e) => {
            return Err(MonitorError::ReadNode {
                node: options.node_name.clone(),
                reason: e.to_string(),
            })
        }
    }
    let span = info_span!("imds_monitor", node = %options.node_name, dry_run = options.dry_run);
    let mut executor = Executor {
        nodes,
        events: Events::reporting_as(client.clone(), "karp-imds-monitor", &options.node_name),
        client,
        options: options.clone(),
        was_unschedulable: None,
        drained: false,
    };
    let mut state = MonitorState::default();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut failing = false;
    async {
        info!(poll = ?options.poll, "watching the instance metadata service");
        loop {
            let actions = match poller.poll().await {
                Ok(notices) => {
                    if failing {
                        info!("IMDS answers again");
                        failing = false;
                    }
                    decide(&mut state, &notices, &options)
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "IMDS poll failed; retrying every poll");
                        failing = true;
                    }
                    // A drain in progress goes on while IMDS is away.
                    if state.draining() {
                        vec![MonitorAction::Drain]
                    } else {
                        Vec::new()
                    }
                }
            };
            for a in &actions {
                executor.act(a, &mut state).await;
            }
            // A cordon or uncordon that failed (API unreachable) is made again.
            if !actions.iter().any(|a| {
                matches!(
                    a,
                    MonitorAction::Cordon { .. } | MonitorAction::Uncordon { .. }
                )
            }) {
                executor.ensure_marks(&state).await;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(options.poll) => {}
            }
        }
    }
    .instrument(span)
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use karp_aws::imds::{Rebalance, ScheduledEvent, SpotAction};

    fn opts() -> MonitorOptions {
        MonitorOptions::for_node("n1")
    }

    fn spot() -> ImdsNotices {
        ImdsNotices {
            spot: Some(SpotAction {
                action: "terminate".into(),
                time: "2026-12-07T08:22:00Z".into(),
            }),
            ..ImdsNotices::default()
        }
    }

    fn scheduled(id: &str, state: &str) -> ScheduledEvent {
        ScheduledEvent {
            code: "system-reboot".into(),
            event_id: id.into(),
            state: state.into(),
            not_before: "21 Jan 2027 09:00:43 GMT".into(),
            not_after: None,
            description: "scheduled reboot".into(),
        }
    }

    fn kinds(actions: &[MonitorAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                MonitorAction::Record { reason, .. } => format!("record {reason}"),
                MonitorAction::Cordon { kind, value } => format!("cordon {kind:?} {value}"),
                MonitorAction::Uncordon { kind } => format!("uncordon {kind:?}"),
                MonitorAction::Drain => "drain".into(),
            })
            .collect()
    }

    #[test]
    fn a_spot_notice_cordons_and_drains_once() {
        let mut s = MonitorState::default();
        assert_eq!(
            kinds(&decide(&mut s, &spot(), &opts())),
            [
                "record SpotInterruption",
                "cordon SpotInterruption terminate-2026-12-07T08-22-00Z",
                "drain"
            ]
        );
        assert_eq!(kinds(&decide(&mut s, &spot(), &opts())), ["drain"]);
        // The notice gone (the instance about to go): the drain goes on.
        assert_eq!(
            kinds(&decide(&mut s, &ImdsNotices::default(), &opts())),
            ["drain"]
        );
    }

    #[test]
    fn kinds_switched_off_only_record() {
        let mut o = opts();
        o.drain_on_spot = false;
        o.drain_on_scheduled = false;
        let mut s = MonitorState::default();
        let mut n = spot();
        n.scheduled = vec![scheduled("instance-event-1", "active")];
        n.rebalance = Some(Rebalance {
            notice_time: "2026-12-07T08:17:00Z".into(),
        });
        assert_eq!(
            kinds(&decide(&mut s, &n, &o)),
            [
                "record SpotInterruption",
                "record ScheduledEvent",
                "record RebalanceRecommendation"
            ]
        );
        assert!(!s.draining());
    }

    #[test]
    fn rebalance_recommendations_drain_or_cordon_only_when_enabled() {
        let n = ImdsNotices {
            rebalance: Some(Rebalance {
                notice_time: "2026-12-07T08:17:00Z".into(),
            }),
            ..ImdsNotices::default()
        };
        let mut o = opts();
        o.cordon_on_rebalance = true;
        let mut s = MonitorState::default();
        assert_eq!(
            kinds(&decide(&mut s, &n, &o)),
            [
                "record RebalanceRecommendation",
                "cordon RebalanceRecommendation 2026-12-07T08-17-00Z"
            ]
        );
        o.drain_on_rebalance = true;
        let mut s = MonitorState::default();
        assert_eq!(
            kinds(&decide(&mut s, &n, &o)),
            [
                "record RebalanceRecommendation",
                "cordon RebalanceRecommendation 2026-12-07T08-17-00Z",
                "drain"
            ]
        );
    }

    #[test]
    fn a_canceled_scheduled_event_uncordons_and_stops_the_drain() {
        let mut s = MonitorState::default();
        let active = ImdsNotices {
            scheduled: vec![scheduled("instance-event-1", "active")],
            ..ImdsNotices::default()
        };
        assert_eq!(
            kinds(&decide(&mut s, &active, &opts())),
            [
                "record ScheduledEvent",
                "cordon ScheduledMaintenance instance-event-1",
                "drain"
            ]
        );
        let canceled = ImdsNotices {
            scheduled: vec![scheduled("instance-event-1", "canceled")],
            ..ImdsNotices::default()
        };
        assert_eq!(
            kinds(&decide(&mut s, &canceled, &opts())),
            [
                "record ScheduledEventCanceled",
                "uncordon ScheduledMaintenance"
            ]
        );
        assert!(!s.draining());
        assert!(decide(&mut s, &canceled, &opts()).is_empty());
    }

    #[test]
    fn a_canceled_event_keeps_a_spot_drain_going() {
        let mut s = MonitorState::default();
        let mut n = spot();
        n.scheduled = vec![scheduled("instance-event-1", "active")];
        let _ = decide(&mut s, &n, &opts());
        n.scheduled = vec![scheduled("instance-event-1", "canceled")];
        assert_eq!(
            kinds(&decide(&mut s, &n, &opts())),
            [
                "record ScheduledEventCanceled",
                "uncordon ScheduledMaintenance",
                "drain"
            ]
        );
    }

    #[test]
    fn completed_and_unknown_canceled_events_do_nothing() {
        let mut s = MonitorState::default();
        let n = ImdsNotices {
            scheduled: vec![
                scheduled("instance-event-2", "completed"),
                scheduled("instance-event-3", "canceled"),
            ],
            ..ImdsNotices::default()
        };
        assert!(decide(&mut s, &n, &opts()).is_empty());
    }

    #[test]
    fn taint_values_are_valid_label_values() {
        assert_eq!(taint_value("2026-12-07T08:22:00Z"), "2026-12-07T08-22-00Z");
        let long = taint_value(&"x".repeat(100));
        assert_eq!(long.len(), 63);
        assert_eq!(taint_value(":a:"), "a");
    }

    #[test]
    fn drains_skip_daemonset_mirror_finished_and_terminating_pods() {
        let pod = |f: &dyn Fn(&mut Pod)| {
            let mut p = Pod::default();
            f(&mut p);
            p
        };
        assert!(must_evict(&pod(&|_| {})));
        assert!(!must_evict(&pod(&|p| {
            p.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    kind: "DaemonSet".into(),
                    ..Default::default()
                },
            ]);
        })));
        assert!(!must_evict(&pod(&|p| {
            p.metadata.annotations =
                Some([("kubernetes.io/config.mirror".to_string(), "x".to_string())].into());
        })));
        assert!(!must_evict(&pod(&|p| {
            p.status = Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some("Succeeded".into()),
                ..Default::default()
            });
        })));
    }
}
