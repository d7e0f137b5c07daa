//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): only the leader runs
//! the controllers; a standby takes over when the leader's lease expires (duration + grace).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use super::health::Health;

/// What runs while this replica leads: started on election, stopped on losing the lease.
pub trait Leading {
    /// Stops it and waits until it has stopped.
    fn stop(self) -> impl Future<Output = ()>;
}

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Lease name.
    pub lease: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// Lease duration in seconds.
    pub duration_secs: u64,
    /// Grace period in seconds before the lease is renewed.
    pub grace_secs: u64,
}

impl LeaderElection {
    /// Karpenter-like defaults: lease `karpenter-leader-election`, 15 s duration, 5 s grace.
    #[must_use]
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaderElection {
            lease: "karpenter-leader-election".into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration_secs: 15,
            grace_secs: 5,
        }
    }
}

/// Runs `start` whenever this replica becomes leader and stops the operator when it loses the
/// lease, until `shutdown` resolves (then the lease is released).
///
/// # Errors
/// A message when the lease manager cannot be built.
pub async fn run_elected<S, F, L>(
    client: Client,
    election: LeaderElection,
    health: Arc<Health>,
    start: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String>
where
    S: Fn() -> F,
    F: Future<Output = L>,
    L: Leading,
{
    let manager = LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.duration_secs)
        .with_grace(election.grace_secs)
        .build()
        .await
        .map_err(|e| format!("building the lease manager: {e}"))?;
    let (mut leading, task) = manager.watch().await;
    // A standby is ready: it serves probes and waits.
    health.ready.store(true, Ordering::SeqCst);
    let mut running: Option<L> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let is_leader = *leading.borrow_and_update();
        health.leader.store(is_leader, Ordering::SeqCst);
        match (is_leader, running.is_some()) {
            (true, false) => {
                info!(identity = %election.identity, "became leader; starting controllers");
                running = Some(start().await);
            }
            (false, true) => {
                warn!(identity = %election.identity, "lost leadership; stopping controllers");
                if let Some(op) = running.take() {
                    op.stop().await;
                }
            }
            _ => {}
        }
        tokio::select! {
            () = &mut shutdown => break,
            changed = leading.changed() => {
                if changed.is_err() {
                    warn!("lease manager stopped");
                    break;
                }
            }
        }
    }
    if let Some(op) = running.take() {
        op.stop().await;
    }
    health.leader.store(false, Ordering::SeqCst);
    // Dropping the receiver makes the manager release the lease.
    drop(leading);
    if let Ok(Ok(manager)) = task.await {
        let _ = manager.release().await;
    }
    Ok(())
}
