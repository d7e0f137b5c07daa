//! `karp run`: the operator against a real cluster (kubeconfig or in-cluster config) and EC2
//! (karp-aws), with leader election, the metrics / health endpoints, periodic catalog and price
//! refreshes, and the interruption queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use karp_aws::interruption::{InterruptionAction, InterruptionKind, InterruptionQueue};
use karp_aws::{AwsClients, AwsCloudProvider, AwsSettings};
use karp_core::cloud::CloudProvider;
use kube::api::{Api, DeleteParams, ListParams};
use kube::Client;
use tracing::{info, warn};

use crate::operator::leader::{run_elected, LeaderElection};
use crate::operator::metrics::Metrics;
use crate::operator::objects::NodeClaim;
use crate::operator::serve::{serve, Health};
use crate::operator::{NodeClassResolver, Operator, OperatorSettings};

/// Node class resolution through karp-aws.
#[derive(Debug, Clone)]
pub struct AwsNodeClassResolver {
    provider: Arc<AwsCloudProvider>,
}

impl AwsNodeClassResolver {
    /// Wraps a provider.
    #[must_use]
    pub fn new(provider: Arc<AwsCloudProvider>) -> Self {
        AwsNodeClassResolver { provider }
    }
}

#[async_trait::async_trait]
impl NodeClassResolver for AwsNodeClassResolver {
    async fn resolve(
        &self,
        node_class: &karp_aws::nodeclass::EC2NodeClass,
    ) -> Result<karp_aws::nodeclass::EC2NodeClassStatus, String> {
        self.provider
            .resolve_node_class(node_class)
            .await
            .map_err(|e| e.to_string())
    }

    async fn delete(&self, node_class: &karp_aws::nodeclass::EC2NodeClass) -> Result<(), String> {
        self.provider
            .delete_node_class(node_class)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Options of `karp run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Kubeconfig file; in-cluster / default config when absent.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// AWS settings.
    pub aws: AwsSettings,
    /// Interruption queue name or URL.
    pub interruption_queue: Option<String>,
    /// Address of /metrics, /healthz, /readyz.
    pub metrics_addr: String,
    /// Leader election (None: run at once).
    pub leader_election: Option<LeaderElection>,
    /// Operator timing.
    pub settings: OperatorSettings,
}

/// Errors of `karp run`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The Kubernetes client could not be configured.
    #[error("configuring the Kubernetes client: {0}")]
    KubeConfig(String),
    /// The metrics address could not be bound.
    #[error("binding {addr}: {reason}")]
    BindMetrics {
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    LeaderElection(String),
}

async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, RunError> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| RunError::KubeConfig(format!("{}: {e}", p.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| RunError::KubeConfig(format!("{}: {e}", p.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::KubeConfig(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| RunError::KubeConfig(e.to_string()))
}

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

/// Runs the operator until `shutdown`.
///
/// # Errors
/// [`RunError`] when the client, the endpoints or leader election cannot start.
pub async fn run(
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let client = client(options.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(&options.metrics_addr)
        .await
        .map_err(|e| RunError::BindMetrics {
            addr: options.metrics_addr.clone(),
            reason: e.to_string(),
        })?;
    tokio::spawn(serve(listener, Arc::clone(&metrics), Arc::clone(&health)));

    let clients = AwsClients::load(&options.aws).await;
    let provider = Arc::new(AwsCloudProvider::new(clients.clone(), options.aws.clone()));
    let (stop_refresh, refresh_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&provider).refresh_periodically(
        Duration::from_secs(3600),
        Duration::from_secs(12 * 3600),
        async {
            let _ = refresh_stopped.await;
        },
    ));
    if let Some(q) = &options.interruption_queue {
        match InterruptionQueue::open(&clients, q).await {
            Ok(queue) => {
                tokio::spawn(run_interruption(
                    client.clone(),
                    queue,
                    Arc::clone(&provider),
                    Arc::clone(&health),
                ));
            }
            Err(e) => warn!(error = %e, queue = %q, "interruption queue unavailable"),
        }
    }
    let cloud: Arc<dyn CloudProvider> = provider.clone();
    let resolver: Arc<dyn NodeClassResolver> =
        Arc::new(AwsNodeClassResolver::new(Arc::clone(&provider)));
    let start = {
        let client = client.clone();
        let metrics = Arc::clone(&metrics);
        let settings = options.settings.clone();
        move || {
            Operator::start(
                client.clone(),
                Arc::clone(&cloud),
                Arc::clone(&resolver),
                Arc::clone(&metrics),
                settings.clone(),
            )
        }
    };
    let result = match options.leader_election {
        Some(le) => run_elected(client, le, Arc::clone(&health), start, shutdown)
            .await
            .map_err(RunError::LeaderElection),
        None => {
            let op = start().await;
            health.leader.store(true, Ordering::SeqCst);
            health.ready.store(true, Ordering::SeqCst);
            shutdown.await;
            op.stop().await;
            Ok(())
        }
    };
    let _ = stop_refresh.send(());
    result
}
