//! The embedded cluster on karp-aws: the same API server, scheduler and workload controllers,
//! with EC2 (moto_server, or any endpoint) as the cloud. A kubelet per EC2 instance registers its
//! Node, learning instances from `AwsCloudProvider::list` through [`AwsInstances`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use karp_aws::provider::catalog_entries;
use karp_aws::unavailable::UnavailableOfferings;
use karp_aws::{AwsCloudProvider, NodeClassSettings};
use karp_core::cloud::{CloudProvider, InstanceType};
use karp_sim::cloud::{private_ip, InstanceState, SimInstance};
use karp_sim::InstanceSource;
use kube::api::Api;
use kube::Client;
use tracing::debug;

use crate::api::nodeclaim::NodeClaim;
use crate::controllers::lifecycle::launch_request;

/// EC2 instances seen through karp-aws, as the simulated kubelet wants them. A background task
/// ([`AwsInstances::run`]) refreshes the view; instances that disappear are kept as terminated.
pub struct AwsInstances {
    provider: Arc<AwsCloudProvider>,
    client: Client,
    region: String,
    state: Mutex<BTreeMap<String, SimInstance>>,
}

impl std::fmt::Debug for AwsInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsInstances").finish_non_exhaustive()
    }
}

impl AwsInstances {
    /// A view over `provider`'s instances; NodeClaims are read through `client`.
    #[must_use]
    pub fn new(provider: Arc<AwsCloudProvider>, client: Client) -> Self {
        let region = provider.settings().region.clone();
        AwsInstances {
            provider,
            client,
            region,
            state: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SimInstance>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn refresh(&self) {
        let Ok(running) = self.provider.list().await else {
            return;
        };
        let entries = catalog_entries(
            &self.provider.account_catalog(),
            self.provider.prices(),
            &NodeClassSettings::default(),
            &self.region,
            None,
            &UnavailableOfferings::new(),
            std::time::Instant::now(),
        )
        .unwrap_or_default();
        let types: BTreeMap<&str, Arc<InstanceType>> = entries
            .iter()
            .map(|e| (e.name.as_str(), Arc::new(e.to_instance_type())))
            .collect();
        let claims: Api<NodeClaim> = Api::all(self.client.clone());
        let mut fresh = Vec::new();
        for inst in &running {
            if self.lock().contains_key(&inst.provider_id) {
                continue;
            }
            let Some(it) = types.get(inst.instance_type.as_str()) else {
                debug!(instance_type = %inst.instance_type, "instance type not in the catalog");
                continue;
            };
            // The kubelet registers with the labels and taints of the NodeClaim's user data.
            let Some(claim) = inst.nodeclaim.as_ref() else {
                continue;
            };
            let Ok(Some(claim)) = claims.get_opt(claim).await else {
                continue;
            };
            fresh.push((inst.clone(), Arc::clone(it), launch_request(&claim)));
        }
        let mut state = self.lock();
        for (instance, instance_type, request) in fresh {
            let index = state.len() as u64 + 1;
            state.insert(
                instance.provider_id.clone(),
                SimInstance {
                    instance,
                    instance_type,
                    request,
                    private_ip: private_ip(index),
                    index,
                    launched_at: tokio::time::Instant::now(),
                    state: InstanceState::Running,
                },
            );
        }
        for (pid, inst) in state.iter_mut() {
            if !running.iter().any(|r| &r.provider_id == pid) {
                inst.state = InstanceState::Terminated;
            }
        }
    }

    /// Refreshes every `every` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            self.refresh().await;
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

impl InstanceSource for AwsInstances {
    fn region(&self) -> &str {
        &self.region
    }

    fn instances(&self) -> Vec<SimInstance> {
        self.lock().values().cloned().collect()
    }
}

/// The embedded cluster with karp-aws as the cloud (dereferences to
/// [`crate::embedded::ClusterControl`]).
pub struct EmbeddedAwsCluster {
    /// The EC2 provider.
    pub provider: Arc<AwsCloudProvider>,
    control: crate::embedded::ClusterControl,
    stop_refresh: Option<tokio::sync::oneshot::Sender<()>>,
    interruption: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for EmbeddedAwsCluster {
    type Target = crate::embedded::ClusterControl;
    fn deref(&self) -> &crate::embedded::ClusterControl {
        &self.control
    }
}

impl std::ops::DerefMut for EmbeddedAwsCluster {
    fn deref_mut(&mut self) -> &mut crate::embedded::ClusterControl {
        &mut self.control
    }
}

impl std::fmt::Debug for EmbeddedAwsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedAwsCluster").finish_non_exhaustive()
    }
}

impl EmbeddedAwsCluster {
    /// Starts the API server (CRDs installed), loads the EC2 catalog from `settings`' endpoint,
    /// and starts the kubelets (one per EC2 instance), scheduler, workload controllers and the
    /// operator on karp-aws.
    ///
    /// # Errors
    /// A message when the CRDs or the EC2 catalog cannot be loaded.
    pub async fn start(
        options: crate::embedded::EmbeddedOptions,
        settings: karp_aws::AwsSettings,
    ) -> Result<Self, String> {
        let server = karp_apiserver::ApiServer::new();
        crate::embedded::install_crds(&server)?;
        let client = Client::new(server.clone(), "default");
        let clients = karp_aws::AwsClients::load(&settings).await;
        let provider = Arc::new(AwsCloudProvider::new(clients, settings));
        provider
            .refresh_instance_types()
            .await
            .map_err(|e| e.to_string())?;
        provider.refresh_prices().await.map_err(|e| e.to_string())?;
        let instances = Arc::new(AwsInstances::new(Arc::clone(&provider), client.clone()));
        let (stop_refresh, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            Arc::clone(&instances).run(Duration::from_millis(200), async {
                let _ = stopped.await;
            }),
        );
        let sim = karp_sim::SimCluster::start(client.clone(), instances, options.sim_options());
        let cloud: Arc<dyn CloudProvider> = provider.clone();
        let resolver = Arc::new(crate::providers::aws::AwsNodeClassResolver::new(
            Arc::clone(&provider),
        ));
        let control =
            crate::embedded::ClusterControl::start(server, client, cloud, resolver, sim, options)
                .await?;
        Ok(EmbeddedAwsCluster {
            provider,
            control,
            stop_refresh: Some(stop_refresh),
            interruption: None,
        })
    }

    /// Starts handling the interruption queue (queue mode, as `karp run --interruption-queue`)
    /// on this cluster's EC2 endpoint, replacing a handler started before. The queue may be
    /// created after this call: the handler retries until it opens.
    pub fn handle_interruptions(
        &mut self,
        options: crate::controllers::interruption::InterruptionOptions,
    ) {
        if let Some(old) = self.interruption.take() {
            old.abort();
        }
        let clients = self.provider.clients().clone();
        let health = Arc::new(crate::runtime::health::Health::default());
        health
            .leader
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.interruption = Some(tokio::spawn(
            crate::controllers::interruption::run_interruption(
                self.control.client.clone(),
                clients,
                options,
                Arc::clone(&self.provider),
                Arc::clone(&self.control.metrics),
                health,
            ),
        ));
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.interruption.take() {
            task.abort();
        }
        self.control.stop().await;
        if let Some(tx) = self.stop_refresh.take() {
            let _ = tx.send(());
        }
    }
}
