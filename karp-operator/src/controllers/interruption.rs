//! Interruption (queue mode): EventBridge messages about EC2 instances (spot interruption
//! warnings, rebalance recommendations, scheduled changes, state changes) read from SQS by
//! karp-aws; the controller marks interrupted spot offerings unavailable and replaces the nodes
//! that must drain by deleting their NodeClaims.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use karp_aws::interruption::{InterruptionAction, InterruptionKind, InterruptionQueue};
use karp_aws::AwsCloudProvider;
use kube::api::{Api, DeleteParams, ListParams};
use kube::Client;
use tracing::{info, warn};

use crate::api::nodeclaim::NodeClaim;
use crate::runtime::health::Health;

/// Handles interruption messages until `shutdown`: spot interruptions mark their offering
/// unavailable; drain-worthy events delete the instance's NodeClaim (its node drains and the pods
/// are placed again); every handled or unparseable message is deleted from the queue.
pub async fn run_interruption(
    client: Client,
    queue: InterruptionQueue,
    provider: Arc<AwsCloudProvider>,
    health: Arc<Health>,
) {
    let claims: Api<NodeClaim> = Api::all(client);
    loop {
        if !health.leader.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let received = match queue.receive(20).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "receiving interruption messages failed");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        for m in received {
            match &m.event {
                Ok(ev) => {
                    let list = claims
                        .list(&ListParams::default())
                        .await
                        .map(|l| l.items)
                        .unwrap_or_default();
                    for id in &ev.instance_ids {
                        let Some(claim) = list.iter().find(|c| {
                            c.provider_id()
                                .is_some_and(|p| p.ends_with(&format!("/{id}")))
                        }) else {
                            continue;
                        };
                        if ev.kind == InterruptionKind::SpotInterruption {
                            let labels = claim.metadata.labels.clone().unwrap_or_default();
                            if let (Some(t), Some(z)) = (
                                labels.get(karp_core::labels::INSTANCE_TYPE),
                                labels.get(karp_core::labels::ZONE),
                            ) {
                                provider.mark_spot_interrupted(t, z);
                            }
                        }
                        if ev.action() == InterruptionAction::CordonAndDrain {
                            let name = claim.metadata.name.clone().unwrap_or_default();
                            info!(nodeclaim = %name, kind = ?ev.kind, "interruption: replacing the node");
                            let _ = claims.delete(&name, &DeleteParams::default()).await;
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "dropping an interruption message karp does not understand")
                }
            }
            if let Err(e) = queue.delete(&m.receipt_handle).await {
                warn!(error = %e, "deleting an interruption message failed");
            }
        }
    }
}
