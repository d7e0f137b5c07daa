//! Interruption (queue mode): EventBridge messages about EC2 instances (spot interruption
//! warnings, rebalance recommendations, scheduled changes, state changes) read from SQS by
//! karp-aws; the controller marks interrupted spot offerings unavailable and replaces the nodes
//! that must drain by deleting their NodeClaims.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use karp_aws::interruption::{
    InterruptionAction, InterruptionEvent, InterruptionKind, InterruptionQueue,
};
use karp_aws::{AwsClients, AwsCloudProvider};
use kube::api::{Api, ListParams};
use kube::Client;
use tracing::{info, warn};

use super::writes::{delete_ignoring_404, kube_err};
use super::OperatorError;
use crate::api::nodeclaim::NodeClaim;
use crate::runtime::health::Health;

/// What one interruption event asks karp to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterruptionStep {
    /// A spot interruption: the offering is unavailable for a while.
    MarkUnavailable {
        /// Instance type.
        instance_type: String,
        /// Zone.
        zone: String,
    },
    /// Replace the node: delete its NodeClaim (the node drains, its pods are placed again).
    DeleteClaim(String),
}

/// The steps for `event` given the NodeClaims (pure): claims are matched to the event's
/// instances by provider ID; instances without a claim are not karp's.
#[must_use]
pub fn plan_event(event: &InterruptionEvent, claims: &[NodeClaim]) -> Vec<InterruptionStep> {
    let mut steps = Vec::new();
    for id in &event.instance_ids {
        let suffix = format!("/{id}");
        let Some(claim) = claims
            .iter()
            .find(|c| c.provider_id().is_some_and(|p| p.ends_with(&suffix)))
        else {
            continue;
        };
        if event.kind == InterruptionKind::SpotInterruption {
            let labels = claim.metadata.labels.clone().unwrap_or_default();
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
        if event.action() == InterruptionAction::CordonAndDrain
            && claim.metadata.deletion_timestamp.is_none()
        {
            steps.push(InterruptionStep::DeleteClaim(
                claim.metadata.name.clone().unwrap_or_default(),
            ));
        }
    }
    steps
}

/// Handles one parsed event: lists the NodeClaims, plans, and acts.
///
/// # Errors
/// [`OperatorError`] when the NodeClaims cannot be listed or a claim cannot be deleted; the
/// message must then stay in the queue (it comes back after its visibility timeout).
pub async fn handle_event(
    claims: &Api<NodeClaim>,
    event: &InterruptionEvent,
    mark_unavailable: &(dyn Fn(&str, &str) + Send + Sync),
) -> Result<(), OperatorError> {
    let list = claims
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_err("list NodeClaims", e))?
        .items;
    for step in plan_event(event, &list) {
        match step {
            InterruptionStep::MarkUnavailable {
                instance_type,
                zone,
            } => mark_unavailable(&instance_type, &zone),
            InterruptionStep::DeleteClaim(name) => {
                info!(nodeclaim = %name, kind = ?event.kind, "interruption: replacing the node");
                delete_ignoring_404(claims, &name, "delete NodeClaim").await?;
            }
        }
    }
    Ok(())
}

/// How long to wait before trying again to open the queue or receive from it.
const QUEUE_RETRY: Duration = Duration::from_secs(5);

/// Handles interruption messages until the process ends, while this replica leads: spot
/// interruptions mark their offering unavailable; drain-worthy events delete the instance's
/// NodeClaim. A message is deleted from the queue once handled (or when karp cannot parse it);
/// a message whose handling failed stays and is retried. A queue that cannot be opened is
/// retried every few seconds, so a start before the queue exists only delays interruption
/// handling.
pub async fn run_interruption(
    client: Client,
    clients: AwsClients,
    queue_name: String,
    provider: Arc<AwsCloudProvider>,
    health: Arc<Health>,
) {
    let claims: Api<NodeClaim> = Api::all(client);
    let queue = loop {
        match InterruptionQueue::open(&clients, &queue_name).await {
            Ok(q) => break q,
            Err(e) => {
                warn!(error = %e, queue = %queue_name, "interruption queue unavailable; retrying");
                tokio::time::sleep(QUEUE_RETRY).await;
            }
        }
    };
    let mark = move |t: &str, z: &str| provider.mark_spot_interrupted(t, z);
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
                Ok(ev) => match handle_event(&claims, ev, &mark).await {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(error = %e, event = %ev.id, "interruption not handled; the message stays queued");
                        false
                    }
                },
                Err(e) => {
                    warn!(error = %e, "dropping an interruption message karp does not understand");
                    true
                }
            };
            if handled {
                if let Err(e) = queue.delete(&m.receipt_handle).await {
                    warn!(error = %e, "deleting an interruption message failed");
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
                (
                    karp_core::labels::INSTANCE_TYPE.to_string(),
                    "m5.large".to_string(),
                ),
                (
                    karp_core::labels::ZONE.to_string(),
                    "us-east-1a".to_string(),
                ),
            ]
            .into(),
        );
        c.status = Some(crate::api::nodeclaim::NodeClaimStatus {
            provider_id: Some(provider_id.into()),
            ..Default::default()
        });
        c
    }

    fn event(kind: InterruptionKind, ids: &[&str]) -> InterruptionEvent {
        InterruptionEvent {
            kind,
            instance_ids: ids.iter().map(|s| (*s).to_string()).collect(),
            zone: None,
            id: "e1".into(),
        }
    }

    #[test]
    fn a_spot_interruption_marks_the_offering_and_replaces_only_karps_node() {
        let claims = [
            claim("c1", "aws:///us-east-1a/i-1"),
            claim("c2", "aws:///us-east-1a/i-2"),
        ];
        let steps = plan_event(
            &event(InterruptionKind::SpotInterruption, &["i-1", "i-9"]),
            &claims,
        );
        assert_eq!(
            steps,
            [
                InterruptionStep::MarkUnavailable {
                    instance_type: "m5.large".into(),
                    zone: "us-east-1a".into()
                },
                InterruptionStep::DeleteClaim("c1".into())
            ]
        );
    }

    #[test]
    fn a_rebalance_recommendation_only_records() {
        let claims = [claim("c1", "aws:///us-east-1a/i-1")];
        let steps = plan_event(
            &event(InterruptionKind::RebalanceRecommendation, &["i-1"]),
            &claims,
        );
        assert!(steps.is_empty());
        let stopping = plan_event(
            &event(InterruptionKind::StateChange("stopping".into()), &["i-1"]),
            &claims,
        );
        assert_eq!(stopping, [InterruptionStep::DeleteClaim("c1".into())]);
    }
}
