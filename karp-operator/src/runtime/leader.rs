//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): only the leader runs
//! the controllers; a standby takes over when the leader's lease expires (duration + grace).
//!
//! A leader that cannot confirm its lease for the renew deadline (shorter than the lease
//! duration, as client-go's leader election) steps down: it stops its controllers and
//! [`run_elected`] returns an error, so `karp run` exits and is restarted. A leader cut off from
//! the API server therefore stops acting before a standby can take over, and its stale caches
//! never race the new leader (garbage collection of "orphan" instances above all).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::time::Instant;
use tracing::{info, warn};

use super::health::Health;

/// What runs while this replica leads: started on election, stopped on losing the lease.
pub trait Leading {
    /// Stops it and waits until it has stopped.
    fn stop(self) -> impl Future<Output = ()>;

    /// Its tasks that stopped unexpectedly (empty while healthy); a leader with a failed task
    /// steps down so the process restarts.
    fn failed(&self) -> Vec<String>;
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
    /// A leader that has not confirmed its lease for this long steps down (client-go: 10 s of a
    /// 15 s lease). Must be below `duration_secs`, so it stops before a standby may take over.
    pub renew_deadline: std::time::Duration,
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
            renew_deadline: std::time::Duration::from_secs(10),
        }
    }
}

/// What the renew-deadline watchdog concludes from one look at the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseCheck {
    /// The Lease names this replica: leadership confirmed now.
    Confirmed,
    /// The Lease names another holder: this replica lost it.
    Lost,
    /// The Lease could not be read (API server unreachable, timeout).
    Unknown,
}

/// Whether a leader must step down (pure): it lost the lease, or it has not confirmed it within
/// the renew deadline.
#[must_use]
pub fn must_step_down(
    check: LeaseCheck,
    since_confirmed: std::time::Duration,
    deadline: std::time::Duration,
) -> bool {
    match check {
        LeaseCheck::Lost => true,
        LeaseCheck::Confirmed => false,
        LeaseCheck::Unknown => since_confirmed >= deadline,
    }
}

async fn check_lease(
    api: &Api<Lease>,
    election: &LeaderElection,
    timeout: std::time::Duration,
) -> LeaseCheck {
    match tokio::time::timeout(timeout, api.get(&election.lease)).await {
        Ok(Ok(lease)) => {
            let holder = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref());
            if holder == Some(election.identity.as_str()) {
                LeaseCheck::Confirmed
            } else {
                LeaseCheck::Lost
            }
        }
        _ => LeaseCheck::Unknown,
    }
}

/// Runs `start` whenever this replica becomes leader and stops the operator when it loses the
/// lease, until `shutdown` resolves (then the lease is released).
///
/// # Errors
/// A message when the lease manager cannot be built, the controllers cannot start (a cache does
/// not sync), a controller task stops unexpectedly, or the lease is not confirmed within the
/// renew deadline; in each case this replica has stepped down and `karp run` exits.
pub async fn run_elected<S, F, L, E>(
    client: Client,
    election: LeaderElection,
    health: Arc<Health>,
    start: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String>
where
    S: Fn() -> F,
    F: Future<Output = Result<L, E>>,
    L: Leading,
    E: std::fmt::Display,
{
    let client_for_checks = client.clone();
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
    let leases: Api<Lease> = Api::namespaced(client_for_checks, &election.namespace);
    // Never later than the lease itself: a standby may take over once it expires.
    let deadline = election
        .renew_deadline
        .min(std::time::Duration::from_secs(election.duration_secs));
    let check_every = (deadline / 4).max(std::time::Duration::from_millis(100));
    let mut watchdog = tokio::time::interval(check_every);
    let mut confirmed = Instant::now();
    let mut stepped_down: Option<String> = None;
    // The Lease names another holder while the manager still says this replica leads: stop
    // acting until the manager's view changes.
    let mut demoted = false;
    loop {
        let is_leader = *leading.borrow_and_update() && !demoted;
        health.leader.store(is_leader, Ordering::SeqCst);
        match (is_leader, running.is_some()) {
            (true, false) => {
                info!(identity = %election.identity, "became leader; starting controllers");
                match start().await {
                    Ok(op) => running = Some(op),
                    Err(e) => {
                        stepped_down = Some(format!("starting the controllers: {e}"));
                        break;
                    }
                }
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
                confirmed = Instant::now();
                demoted = false;
            }
            _ = watchdog.tick(), if running.is_some() => {
                let check = check_lease(&leases, &election, check_every).await;
                if check == LeaseCheck::Confirmed {
                    confirmed = Instant::now();
                }
                if check == LeaseCheck::Lost {
                    warn!(identity = %election.identity, "the Lease names another holder; stopping controllers");
                    demoted = true;
                    continue;
                }
                if must_step_down(check, confirmed.elapsed(), deadline) {
                    warn!(identity = %election.identity, check = ?check, "lease not confirmed within the renew deadline; stepping down");
                    stepped_down = Some(format!(
                        "lease {} not confirmed within the renew deadline of {deadline:?}",
                        election.lease
                    ));
                    break;
                }
                let failed = running.as_ref().map(Leading::failed).unwrap_or_default();
                if !failed.is_empty() {
                    stepped_down = Some(format!("controller tasks stopped: {}", failed.join(", ")));
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
    if let Some(why) = stepped_down {
        // The manager may be stuck on an unreachable API server: do not wait for it.
        task.abort();
        health.ready.store(false, Ordering::SeqCst);
        health.alive.store(false, Ordering::SeqCst);
        return Err(format!("{why}; stepped down"));
    }
    if let Ok(Ok(manager)) = task.await {
        let _ = manager.release().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_leader_steps_down_when_it_loses_the_lease_or_cannot_confirm_it_in_time() {
        let deadline = Duration::from_secs(10);
        assert!(!must_step_down(
            LeaseCheck::Confirmed,
            Duration::from_secs(60),
            deadline
        ));
        assert!(must_step_down(LeaseCheck::Lost, Duration::ZERO, deadline));
        assert!(!must_step_down(
            LeaseCheck::Unknown,
            Duration::from_secs(9),
            deadline
        ));
        assert!(must_step_down(
            LeaseCheck::Unknown,
            Duration::from_secs(10),
            deadline
        ));
    }
}
