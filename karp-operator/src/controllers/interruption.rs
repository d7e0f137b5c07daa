//! Interruption (queue mode): EventBridge messages about EC2 instances (spot interruption
//! warnings, rebalance recommendations, scheduled changes, state changes) read from SQS by
//! karp-aws. As Karpenter does, the controller records an Event on the NodeClaim and its Node for
//! every message about a karp instance, marks interrupted spot offerings unavailable, and
//! replaces the nodes that must drain by deleting their NodeClaims (the termination controller
//! then cordons, drains through the Eviction API and terminates). Rebalance recommendations only
//! record an Event unless [`InterruptionOptions::drain_on_rebalance`] is set (Node Termination
//! Handler's `enableRebalanceDraining`).
//!
//! Metrics: `karpenter_interruption_received_messages_total{message_type}` (Karpenter's kinds,
//! `SpotInterruptionKind`, `RebalanceRecommendationKind`, `ScheduledChangeKind`,
//! `StateChangeKind`, plus `Unparsable` for messages karp cannot read),
//! `karpenter_interruption_deleted_messages_total`,
//! `karpenter_interruption_actions_performed_total{action_type,nodepool}`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use karp_aws::interruption::{
    InterruptionAction, InterruptionEvent, InterruptionKind, InterruptionQueue,
};
use karp_aws::provider::instance_id;
use karp_aws::{AwsClients, AwsCloudProvider};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use tracing::{info, info_span, warn, Instrument};

use super::writes::{delete_ignoring_404, kube_err};
use super::{Events, OperatorError};
use crate::api::nodeclaim::NodeClaim;
use crate::runtime::health::Health;
use crate::runtime::metrics::Metrics;

/// Received messages, by Karpenter's message kind.
pub const RECEIVED: &str = "karpenter_interruption_received_messages_total";
/// Messages deleted from the queue (handled, unparsable, or about no karp instance).
pub const DELETED: &str = "karpenter_interruption_deleted_messages_total";
/// Actions taken on NodeClaims, by action and NodePool.
pub const ACTIONS: &str = "karpenter_interruption_actions_performed_total";

/// How the interruption controller behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptionOptions {
    /// The SQS queue, by name or URL.
    pub queue: String,
    /// Drain nodes on rebalance recommendations too (default: an Event only, as Karpenter).
    pub drain_on_rebalance: bool,
}

/// An Event about an interruption, as Karpenter words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// Reason.
    pub reason: &'static str,
    /// Message.
    pub message: &'static str,
}

/// Karpenter's Event for a message kind (`None`: nothing worth an Event).
#[must_use]
pub fn notice(kind: &InterruptionKind) -> Notice {
    let (type_, reason, message) = match kind {
        InterruptionKind::SpotInterruption => (
            "Warning",
            "SpotInterrupted",
            "Spot interruption warning was triggered",
        ),
        InterruptionKind::RebalanceRecommendation => (
            "Normal",
            "SpotRebalanceRecommendation",
            "Spot rebalance recommendation was triggered",
        ),
        InterruptionKind::ScheduledChange => (
            "Warning",
            "InstanceUnhealthy",
            "An unhealthy warning was triggered for the instance",
        ),
        InterruptionKind::StateChange(s) if s == "stopping" || s == "stopped" => {
            ("Warning", "InstanceStopping", "Instance is stopping")
        }
        InterruptionKind::StateChange(_) => {
            ("Warning", "InstanceTerminating", "Instance is terminating")
        }
    };
    Notice {
        type_,
        reason,
        message,
    }
}

/// Karpenter's name of a message kind (the `message_type` metric label).
#[must_use]
pub fn kind_label(kind: &InterruptionKind) -> &'static str {
    match kind {
        InterruptionKind::SpotInterruption => "SpotInterruptionKind",
        InterruptionKind::RebalanceRecommendation => "RebalanceRecommendationKind",
        InterruptionKind::ScheduledChange => "ScheduledChangeKind",
        InterruptionKind::StateChange(_) => "StateChangeKind",
    }
}

/// What one interruption event asks karp to do.
#[derive(Debug, Clone, PartialEq)]
pub enum InterruptionStep {
    /// A spot interruption: the offering is unavailable for a while.
    MarkUnavailable {
        /// Instance type.
        instance_type: String,
        /// Zone.
        zone: String,
    },
    /// Record an Event on the NodeClaim and on its Node (when registered).
    Notify {
        /// The NodeClaim.
        claim: ObjectReference,
        /// Its Node.
        node: Option<ObjectReference>,
        /// What to say.
        notice: Notice,
        /// The claim's NodePool (metric label).
        nodepool: String,
        /// Whether the claim is replaced (`CordonAndDrain`) or not (`NoAction`).
        action: InterruptionAction,
    },
    /// Replace the node: delete its NodeClaim (the node drains, its pods are placed again).
    DeleteClaim {
        /// The NodeClaim.
        claim: ObjectReference,
        /// Its Node.
        node: Option<ObjectReference>,
    },
}

/// The action for `event` under `drain_on_rebalance`.
#[must_use]
pub fn action_for(event: &InterruptionEvent, drain_on_rebalance: bool) -> InterruptionAction {
    if drain_on_rebalance && event.kind == InterruptionKind::RebalanceRecommendation {
        InterruptionAction::CordonAndDrain
    } else {
        event.action()
    }
}

/// The steps for `event` given the NodeClaims and Nodes (pure): claims are matched to the
/// event's instances by provider ID; instances without a claim are not karp's and get nothing.
#[must_use]
pub fn plan_event(
    event: &InterruptionEvent,
    claims: &[NodeClaim],
    nodes: &[Node],
    drain_on_rebalance: bool,
) -> Vec<InterruptionStep> {
    let action = action_for(event, drain_on_rebalance);
    let mut steps = Vec::new();
    for id in &event.instance_ids {
        let Some(claim) = claims
            .iter()
            .find(|c| c.provider_id().and_then(instance_id) == Some(id.as_str()))
        else {
            continue;
        };
        let node = nodes
            .iter()
            .find(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.provider_id.as_deref())
                    .and_then(instance_id)
                    == Some(id.as_str())
            })
            .map(|n| n.object_ref(&()));
        let labels = claim.metadata.labels.clone().unwrap_or_default();
        steps.push(InterruptionStep::Notify {
            claim: claim.object_ref(&()),
            node: node.clone(),
            notice: notice(&event.kind),
            nodepool: labels
                .get(karp_core::labels::NODEPOOL)
                .cloned()
                .unwrap_or_default(),
            action,
        });
        if event.kind == InterruptionKind::SpotInterruption {
            if let (Some(t), Some(z)) = (
                labels.get(karp_core::labels::INSTANCE_TYPE),
                labels.get(karp_core::labels::ZONE),
            ) {
                steps.push(InterruptionStep::MarkUnavailable {
                    instance_type: t.clone(),
                    zone: z.clone(),
                });
            }
        }
        if action == InterruptionAction::CordonAndDrain
            && claim.metadata.deletion_timestamp.is_none()
        {
            steps.push(InterruptionStep::DeleteClaim {
                claim: claim.object_ref(&()),
                node,
            });
        }
    }
    steps
}

/// Marks a spot offering (instance type, zone) unavailable.
pub type MarkUnavailable = Box<dyn Fn(&str, &str) + Send + Sync>;

/// What [`handle_event`] works with.
pub struct InterruptionContext {
    /// NodeClaims.
    pub claims: Api<NodeClaim>,
    /// Nodes.
    pub nodes: Api<Node>,
    /// Where Events go.
    pub events: Events,
    /// Where the counters go.
    pub metrics: Arc<Metrics>,
    /// Drain on rebalance recommendations.
    pub drain_on_rebalance: bool,
    /// Marks a spot offering (type, zone) unavailable.
    pub mark_unavailable: MarkUnavailable,
}

impl std::fmt::Debug for InterruptionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterruptionContext")
            .field("drain_on_rebalance", &self.drain_on_rebalance)
            .finish_non_exhaustive()
    }
}

/// Handles one parsed event: lists the NodeClaims and Nodes, plans, and acts.
///
/// # Errors
/// [`OperatorError`] when the NodeClaims or Nodes cannot be listed or a claim cannot be deleted;
/// the message must then stay in the queue (it comes back after its visibility timeout).
pub async fn handle_event(
    ctx: &InterruptionContext,
    event: &InterruptionEvent,
) -> Result<(), OperatorError> {
    ctx.metrics
        .inc(RECEIVED, &[("message_type", kind_label(&event.kind))]);
    let claims = ctx
        .claims
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_err("list NodeClaims", e))?
        .items;
    let nodes = ctx
        .nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_err("list Nodes", e))?
        .items;
    for step in plan_event(event, &claims, &nodes, ctx.drain_on_rebalance) {
        match step {
            InterruptionStep::MarkUnavailable {
                instance_type,
                zone,
            } => (ctx.mark_unavailable)(&instance_type, &zone),
            InterruptionStep::Notify {
                claim,
                node,
                notice,
                nodepool,
                action,
            } => {
                let action = match action {
                    InterruptionAction::CordonAndDrain => "CordonAndDrain",
                    InterruptionAction::NoAction => "NoAction",
                };
                ctx.metrics.inc(
                    ACTIONS,
                    &[("action_type", action), ("nodepool", nodepool.as_str())],
                );
                for r in std::iter::once(&claim).chain(node.as_ref()) {
                    ctx.events
                        .publish(r, notice.type_, notice.reason, notice.message)
                        .await;
                }
            }
            InterruptionStep::DeleteClaim { claim, node } => {
                let name = claim.name.clone().unwrap_or_default();
                info!(nodeclaim = %name, kind = ?event.kind, "interruption: replacing the node");
                delete_ignoring_404(&ctx.claims, &name, "delete NodeClaim").await?;
                ctx.events
                    .publish(
                        &claim,
                        "Warning",
                        "TerminatingOnInterruption",
                        "Interruption triggered termination for the NodeClaim",
                    )
                    .await;
                if let Some(n) = &node {
                    ctx.events
                        .publish(
                            n,
                            "Warning",
                            "TerminatingOnInterruption",
                            "Interruption triggered termination for the Node",
                        )
                        .await;
                }
            }
        }
    }
    Ok(())
}

/// How long to wait before trying again to open the queue or receive from it.
const QUEUE_RETRY: Duration = Duration::from_secs(5);

/// Handles interruption messages until the process ends, while this replica leads (see the
/// module docs for what each message does). A message is deleted from the queue once handled,
/// when karp cannot parse it (counted as `Unparsable`, logged) or when it is about no karp
/// instance; a message whose handling failed stays and is retried. A queue that cannot be opened
/// is retried every few seconds, so a start before the queue exists only delays interruption
/// handling.
pub async fn run_interruption(
    client: Client,
    clients: AwsClients,
    options: InterruptionOptions,
    provider: Arc<AwsCloudProvider>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let queue = loop {
        match InterruptionQueue::open(&clients, &options.queue).await {
            Ok(q) => break q,
            Err(e) => {
                warn!(error = %e, queue = %options.queue, "interruption queue unavailable; retrying");
                tokio::time::sleep(QUEUE_RETRY).await;
            }
        }
    };
    info!(queue = %queue.url(), drain_on_rebalance = options.drain_on_rebalance, "watching the interruption queue");
    let ctx = InterruptionContext {
        claims: Api::all(client.clone()),
        nodes: Api::all(client.clone()),
        events: Events::new(client, "interruption"),
        metrics,
        drain_on_rebalance: options.drain_on_rebalance,
        mark_unavailable: Box::new(move |t: &str, z: &str| provider.mark_spot_interrupted(t, z)),
    };
    loop {
        if !health.leader.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let received = match queue.receive(20).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "receiving interruption messages failed");
                tokio::time::sleep(QUEUE_RETRY).await;
                continue;
            }
        };
        for m in received {
            let handled = match &m.event {
                Ok(ev) => {
                    let span = info_span!("interruption", event = %ev.id, kind = kind_label(&ev.kind), instances = ?ev.instance_ids);
                    match handle_event(&ctx, ev).instrument(span).await {
                        Ok(()) => true,
                        Err(e) => {
                            warn!(error = %e, event = %ev.id, "interruption not handled; the message stays queued");
                            false
                        }
                    }
                }
                Err(e) => {
                    ctx.metrics.inc(RECEIVED, &[("message_type", "Unparsable")]);
                    warn!(error = %e, "deleting an interruption message karp cannot read");
                    true
                }
            };
            if handled {
                match queue.delete(&m.receipt_handle).await {
                    Ok(()) => ctx.metrics.inc(DELETED, &[]),
                    Err(e) => warn!(error = %e, "deleting an interruption message failed"),
                }
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, provider_id: &str) -> NodeClaim {
        let mut c = NodeClaim::default();
        c.metadata.name = Some(name.into());
        c.metadata.labels = Some(
            [
                (karp_core::labels::INSTANCE_TYPE, "m5.large"),
                (karp_core::labels::ZONE, "us-east-1a"),
                (karp_core::labels::NODEPOOL, "default"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        c.status = Some(crate::api::nodeclaim::NodeClaimStatus {
            provider_id: Some(provider_id.into()),
            ..Default::default()
        });
        c
    }

    fn node(name: &str, provider_id: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            provider_id: Some(provider_id.into()),
            ..Default::default()
        });
        n
    }

    fn event(kind: InterruptionKind, ids: &[&str]) -> InterruptionEvent {
        InterruptionEvent {
            kind,
            instance_ids: ids.iter().map(|s| (*s).to_string()).collect(),
            zone: None,
            id: "e1".into(),
        }
    }

    /// The steps without their object references: (kind, claim name, node name).
    fn shape(steps: &[InterruptionStep]) -> Vec<(String, String, String)> {
        let name = |r: &ObjectReference| r.name.clone().unwrap_or_default();
        steps
            .iter()
            .map(|s| match s {
                InterruptionStep::MarkUnavailable {
                    instance_type,
                    zone,
                } => ("mark".into(), instance_type.clone(), zone.clone()),
                InterruptionStep::Notify {
                    claim,
                    node,
                    notice,
                    ..
                } => (
                    format!("notify {}", notice.reason),
                    name(claim),
                    node.as_ref().map(name).unwrap_or_default(),
                ),
                InterruptionStep::DeleteClaim { claim, node } => (
                    "delete".into(),
                    name(claim),
                    node.as_ref().map(name).unwrap_or_default(),
                ),
            })
            .collect()
    }

    fn s(a: &str, b: &str, c: &str) -> (String, String, String) {
        (a.into(), b.into(), c.into())
    }

    #[test]
    fn a_spot_interruption_notifies_marks_the_offering_and_replaces_only_karps_node() {
        let claims = [
            claim("c1", "aws:///us-east-1a/i-1"),
            claim("c2", "aws:///us-east-1a/i-2"),
        ];
        let nodes = [node("n1", "aws:///us-east-1a/i-1")];
        let steps = plan_event(
            &event(InterruptionKind::SpotInterruption, &["i-1", "i-9"]),
            &claims,
            &nodes,
            false,
        );
        assert_eq!(
            shape(&steps),
            [
                s("notify SpotInterrupted", "c1", "n1"),
                s("mark", "m5.large", "us-east-1a"),
                s("delete", "c1", "n1"),
            ]
        );
    }

    #[test]
    fn instance_ids_match_whole_not_by_suffix() {
        let claims = [claim("c1", "aws:///us-east-1a/i-11")];
        let steps = plan_event(
            &event(InterruptionKind::SpotInterruption, &["i-1"]),
            &claims,
            &[],
            false,
        );
        assert!(steps.is_empty(), "{steps:?}");
    }

    #[test]
    fn a_rebalance_recommendation_only_records_unless_draining_is_enabled() {
        let claims = [claim("c1", "aws:///us-east-1a/i-1")];
        let rebalance = event(InterruptionKind::RebalanceRecommendation, &["i-1"]);
        assert_eq!(
            shape(&plan_event(&rebalance, &claims, &[], false)),
            [s("notify SpotRebalanceRecommendation", "c1", "")]
        );
        assert_eq!(
            shape(&plan_event(&rebalance, &claims, &[], true)),
            [
                s("notify SpotRebalanceRecommendation", "c1", ""),
                s("delete", "c1", "")
            ]
        );
    }

    #[test]
    fn state_changes_and_scheduled_changes_use_karpenters_reasons() {
        let claims = [claim("c1", "aws:///us-east-1a/i-1")];
        for (kind, reason, deletes) in [
            (
                InterruptionKind::StateChange("stopping".into()),
                "InstanceStopping",
                true,
            ),
            (
                InterruptionKind::StateChange("terminated".into()),
                "InstanceTerminating",
                true,
            ),
            (
                InterruptionKind::StateChange("running".into()),
                "InstanceTerminating",
                false,
            ),
            (InterruptionKind::ScheduledChange, "InstanceUnhealthy", true),
        ] {
            let steps = plan_event(&event(kind.clone(), &["i-1"]), &claims, &[], false);
            let mut want = vec![s(&format!("notify {reason}"), "c1", "")];
            if deletes {
                want.push(s("delete", "c1", ""));
            }
            assert_eq!(shape(&steps), want, "{kind:?}");
        }
    }

    #[test]
    fn a_claim_already_deleting_is_notified_but_not_deleted_again() {
        let mut c = claim("c1", "aws:///us-east-1a/i-1");
        c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let steps = plan_event(
            &event(InterruptionKind::ScheduledChange, &["i-1"]),
            &[c],
            &[],
            false,
        );
        assert_eq!(shape(&steps), [s("notify InstanceUnhealthy", "c1", "")]);
    }
}
