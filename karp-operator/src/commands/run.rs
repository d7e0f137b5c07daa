//! `karp run`: the operator against a real cluster (kubeconfig or in-cluster config) and EC2
//! (karp-aws), with leader election, the metrics / health endpoints, periodic catalog and price
//! refreshes, and the interruption queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use karp_aws::{AwsClients, AwsCloudProvider, AwsSettings};
use karp_core::cloud::CloudProvider;
use kube::Client;

use crate::controllers::interruption::{run_interruption, InterruptionOptions};
use crate::controllers::{Operator, OperatorError, OperatorSettings};
use crate::providers::aws::AwsNodeClassResolver;
use crate::providers::NodeClassResolver;
use crate::runtime::health::{serve, Health};
use crate::runtime::leader::{run_elected, LeaderElection};
use crate::runtime::metrics::Metrics;

/// Options of `karp run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Kubeconfig file; in-cluster / default config when absent.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// AWS settings.
    pub aws: AwsSettings,
    /// The interruption queue and how to handle it (off when `None`).
    pub interruption: Option<InterruptionOptions>,
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
    /// The controllers could not start (a cache did not sync) or one of their tasks stopped.
    #[error("controllers: {0}")]
    StartControllers(String),
}

/// A Kubernetes client from `kubeconfig`, else the in-cluster / default configuration.
///
/// # Errors
/// [`RunError::KubeConfig`] when no configuration can be loaded.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, RunError> {
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

/// How often a replica without leader election checks its controller tasks.
const TASK_CHECK: Duration = Duration::from_secs(1);

/// Runs started controllers (no leader election) until `shutdown`, or until one of their tasks
/// stops unexpectedly (then health fails and `karp run` exits, to be restarted).
async fn run_unelected(
    started: Result<Operator, OperatorError>,
    health: &Health,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let op = started.map_err(|e| RunError::StartControllers(e.to_string()))?;
    health.leader.store(true, Ordering::SeqCst);
    health.ready.store(true, Ordering::SeqCst);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut check = tokio::time::interval(TASK_CHECK);
    let failed = loop {
        tokio::select! {
            () = &mut shutdown => break Vec::new(),
            _ = check.tick() => {
                let failed = op.failed();
                if !failed.is_empty() {
                    break failed;
                }
            }
        }
    };
    op.stop().await;
    if failed.is_empty() {
        return Ok(());
    }
    health.alive.store(false, Ordering::SeqCst);
    health.ready.store(false, Ordering::SeqCst);
    Err(RunError::StartControllers(format!(
        "controller tasks stopped: {}",
        failed.join(", ")
    )))
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
    if let Some(interruption) = &options.interruption {
        tokio::spawn(run_interruption(
            client.clone(),
            clients.clone(),
            interruption.clone(),
            Arc::clone(&provider),
            Arc::clone(&metrics),
            Arc::clone(&health),
        ));
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
        None => run_unelected(start().await, &health, shutdown).await,
    };
    let _ = stop_refresh.send(());
    result
}
