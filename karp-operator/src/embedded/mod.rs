//! The embedded cluster: karp-apiserver (the Kubernetes API in-process), karp-sim (simulated
//! cloud, kubelet, kube-scheduler and workload controllers) and the real operator, wired together.
//! It is what `karp cluster` and `karp demo` run and what the end-to-end tests stand on.
//!
//! ```
//! use std::time::Duration;
//! use karp_operator::embedded::{EmbeddedCluster, EmbeddedOptions};
//! use karp_operator::api::nodeclaim::NodeClaim;
//! use kube::api::{Api, ListParams};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cluster = EmbeddedCluster::start(EmbeddedOptions::fast()).await.unwrap();
//! cluster.apply_yaml(include_str!("../../../examples/seed/ec2nodeclass.yaml")).unwrap();
//! cluster.apply_yaml(include_str!("../../../examples/seed/nodepool.yaml")).unwrap();
//! cluster.apply_yaml(include_str!("../../../examples/workloads/inflate.yaml")).unwrap();
//! // The real controllers plan NodeClaims for the pending pods and launch them.
//! let claims: Api<NodeClaim> = Api::all(cluster.client.clone());
//! let mut launched = 0;
//! for _ in 0..200 {
//!     let list = claims.list(&ListParams::default()).await.unwrap().items;
//!     launched = list.iter().filter(|c| c.provider_id().is_some()).count();
//!     if launched > 0 {
//!         break;
//!     }
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//! }
//! assert!(launched > 0);
//! cluster.shutdown().await;
//! # });
//! ```

pub mod aws;
pub mod faults;

use std::sync::Arc;
use std::time::Duration;

use karp_apiserver::ApiServer;
use karp_aws::nodeclass::{
    Ami, Condition, EC2NodeClass, EC2NodeClassStatus, NodeSelectorRequirement, SecurityGroup,
    Subnet,
};
use karp_core::cloud::{CloudProvider, InstanceType};
use karp_sim::{
    KubeletOptions, SchedulerOptions, SimCloud, SimCloudOptions, SimCluster, SimOptions,
};
use kube::Client;

use crate::controllers::{Operator, OperatorError, OperatorSettings};
use crate::providers::NodeClassResolver;
use crate::runtime::metrics::Metrics;

/// Node class resolution in the simulated cloud: every node class is Ready, with one subnet per
/// zone of the catalog, one security group and an AMI per architecture.
#[derive(Debug, Default)]
pub struct SimNodeClassResolver {
    zones: Vec<String>,
    resolves: std::sync::atomic::AtomicUsize,
}

impl SimNodeClassResolver {
    /// A resolver offering `zones`.
    #[must_use]
    pub fn new(zones: Vec<String>) -> Self {
        SimNodeClassResolver {
            zones,
            resolves: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How many resolutions were asked for (what a cloud's API calls would be).
    #[must_use]
    pub fn resolves(&self) -> usize {
        self.resolves.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn condition(type_: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(type_.into()),
        message: Some(String::new()),
        ..Condition::default()
    }
}

#[async_trait::async_trait]
impl NodeClassResolver for SimNodeClassResolver {
    fn node_class_label(&self) -> &'static str {
        crate::providers::aws::NODE_CLASS_LABEL
    }

    async fn resolve(&self, node_class: &EC2NodeClass) -> Result<EC2NodeClassStatus, String> {
        self.resolves
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = node_class.spec.settings() {
            let mut s = EC2NodeClassStatus::default();
            for t in [
                "SubnetsReady",
                "SecurityGroupsReady",
                "InstanceProfileReady",
            ] {
                s.conditions.push(condition(t));
            }
            for t in ["AMIsReady", "Ready"] {
                s.conditions.push(Condition {
                    type_: t.into(),
                    status: "False".into(),
                    reason: Some("InvalidSpec".into()),
                    message: Some(e.to_string()),
                    ..Condition::default()
                });
            }
            return Ok(s);
        }
        let ami = |arch: &str, id: &str| Ami {
            id: id.into(),
            name: Some(format!("sim-{arch}")),
            deprecated: false,
            requirements: vec![NodeSelectorRequirement {
                key: "kubernetes.io/arch".into(),
                operator: "In".into(),
                values: vec![arch.into()],
            }],
        };
        Ok(EC2NodeClassStatus {
            subnets: self
                .zones
                .iter()
                .enumerate()
                .map(|(i, z)| Subnet {
                    id: format!("subnet-sim{i:04}"),
                    zone: z.clone(),
                    zone_id: None,
                })
                .collect(),
            security_groups: vec![SecurityGroup {
                id: "sg-sim0001".into(),
                name: Some("karp-sim-nodes".into()),
            }],
            amis: vec![
                ami("amd64", "ami-sim00amd64"),
                ami("arm64", "ami-sim00arm64"),
            ],
            instance_profile: node_class
                .spec
                .instance_profile
                .clone()
                .or_else(|| node_class.spec.role.clone().map(|r| format!("sim_{r}"))),
            conditions: [
                "SubnetsReady",
                "SecurityGroupsReady",
                "AMIsReady",
                "InstanceProfileReady",
                "Ready",
            ]
            .into_iter()
            .map(condition)
            .collect(),
            ..EC2NodeClassStatus::default()
        })
    }

    async fn delete(&self, _node_class: &EC2NodeClass) -> Result<(), String> {
        Ok(())
    }
}

/// Timing of the embedded cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Operator settings.
    pub operator: OperatorSettings,
    /// Simulator settings.
    pub sim: SimOptions,
    /// Whether [`EmbeddedCluster::start`] starts an operator (tests of leader election start
    /// their own replicas with [`EmbeddedCluster::new_operator`]).
    pub start_operator: bool,
    /// Faults on the operator's connection to the API server (soak tests).
    pub api_faults: Option<faults::ApiFaults>,
}

impl EmbeddedOptions {
    /// The simulators' options, writing timestamps from the operator's clock (so a test that
    /// advances it sees pod start times and conditions on the same time line).
    #[must_use]
    pub fn sim_options(&self) -> SimOptions {
        let clock = self.operator.clock.clone();
        self.sim
            .clone()
            .clock(karp_sim::SimClock::from_fn(move || clock.now()))
    }

    /// Quick timings for tests and the demo: 200 ms batch idle window, nodes Ready in 300 ms.
    #[must_use]
    pub fn fast() -> Self {
        let mut operator = OperatorSettings::default();
        operator.batch.idle = Duration::from_millis(200);
        operator.batch.max = Duration::from_secs(2);
        operator.batch.poll = Duration::from_millis(50);
        operator.resync = Duration::from_millis(500);
        operator.gc_grace = Duration::from_secs(2);
        operator.provision_retry = Duration::from_secs(1);
        operator.sync_timeout = Duration::from_secs(30);
        operator.cloud_drift_period = Duration::from_secs(2);
        let sim = SimOptions::default()
            .kubelet(
                KubeletOptions::default()
                    .poll_interval(Duration::from_millis(50))
                    .ready_delay(Duration::from_millis(300))
                    .startup_taint_delay(Duration::from_millis(100))
                    .pod_start_delay(Duration::from_millis(100)),
            )
            .scheduler(SchedulerOptions::default());
        EmbeddedOptions {
            operator,
            sim,
            start_operator: true,
            api_faults: None,
        }
    }
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            operator: OperatorSettings::default(),
            sim: SimOptions::default(),
            start_operator: true,
            api_faults: None,
        }
    }
}

/// The built-in AWS us-east-1 catalog as core instance types (default node-class settings).
///
/// # Errors
/// A message if the embedded catalog cannot be built (never expected).
pub fn builtin_instance_types() -> Result<Vec<Arc<InstanceType>>, String> {
    let entries = karp_aws::catalog::builtin_catalog(&karp_aws::NodeClassSettings::default())
        .map_err(|e| e.to_string())?;
    Ok(entries
        .iter()
        .map(|e| Arc::new(e.to_instance_type()))
        .collect())
}

/// What every embedded cluster shares, whatever its cloud: the API server, the simulators, the
/// operator, and how to start operator replicas. The cluster types dereference to it.
pub struct ClusterControl {
    /// The API server.
    pub server: ApiServer,
    /// A client of it.
    pub client: Client,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    cloud: Arc<dyn CloudProvider>,
    resolver: Arc<dyn NodeClassResolver>,
    sim: Option<SimCluster>,
    operator: Option<Operator>,
    options: EmbeddedOptions,
    /// The faults injected on the operator's connection (when `api_faults` is set).
    pub api_faults: Arc<faults::ApiFaultState>,
}

impl std::fmt::Debug for ClusterControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterControl").finish_non_exhaustive()
    }
}

impl ClusterControl {
    /// Wires a running API server and simulators to a cloud; starts the operator unless
    /// `options.start_operator` is false.
    ///
    /// # Errors
    /// A message when the operator's caches do not sync.
    pub async fn start(
        server: ApiServer,
        client: Client,
        cloud: Arc<dyn CloudProvider>,
        resolver: Arc<dyn NodeClassResolver>,
        sim: SimCluster,
        options: EmbeddedOptions,
    ) -> Result<Self, String> {
        let mut control = ClusterControl {
            server,
            client,
            metrics: Arc::new(Metrics::new()),
            cloud,
            resolver,
            sim: Some(sim),
            operator: None,
            options,
            api_faults: Arc::default(),
        };
        if control.options.start_operator {
            control
                .restart_operator()
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(control)
    }

    /// Starts another operator instance on this cluster (a replica), with its own identity.
    ///
    /// # Errors
    /// [`OperatorError`] when its caches do not sync.
    pub async fn new_operator(&self, identity: &str) -> Result<Operator, OperatorError> {
        let mut settings = self.options.operator.clone();
        settings.identity = identity.to_string();
        let client = match self.options.api_faults {
            Some(f) => Client::new(
                faults::FaultyApi::new(self.server.clone(), f, Arc::clone(&self.api_faults)),
                "default",
            ),
            None => self.client.clone(),
        };
        Operator::start(
            client,
            Arc::clone(&self.cloud),
            Arc::clone(&self.resolver),
            Arc::clone(&self.metrics),
            settings,
        )
        .await
    }

    /// The cloud provider the operator provisions on.
    #[must_use]
    pub fn cloud(&self) -> &Arc<dyn CloudProvider> {
        &self.cloud
    }

    /// The clock of the operator's disruption decisions (shared by every operator started on
    /// this cluster, across restarts): tests and the demo advance it instead of waiting out
    /// `consolidateAfter`, `expireAfter`, budget windows and the validation delay.
    #[must_use]
    pub fn clock(&self) -> &crate::runtime::clock::Clock {
        &self.options.operator.clock
    }

    /// Stops the operator (simulating a crash or a lost leadership); the cluster keeps running.
    pub async fn stop_operator(&mut self) {
        if let Some(op) = self.operator.take() {
            op.stop().await;
        }
    }

    /// Starts the operator (again, after [`ClusterControl::stop_operator`]).
    ///
    /// # Errors
    /// [`OperatorError`] when its caches do not sync.
    pub async fn restart_operator(&mut self) -> Result<(), OperatorError> {
        if self.operator.is_some() {
            return Ok(());
        }
        let identity = self.options.operator.identity.clone();
        self.operator = Some(self.new_operator(&identity).await?);
        Ok(())
    }

    /// Applies manifests (multi-document YAML) to the API server, as `kubectl apply` would.
    ///
    /// # Errors
    /// The API server's message for the first object it refused.
    pub fn apply_yaml(&self, yaml: &str) -> Result<usize, String> {
        self.server
            .apply_yaml(yaml)
            .map(|v| v.len())
            .map_err(|e| e.message)
    }

    /// Stops the operator and the simulators.
    pub async fn stop(&mut self) {
        self.stop_operator().await;
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
    }
}

/// A running embedded cluster on the simulated cloud (dereferences to [`ClusterControl`]).
pub struct EmbeddedCluster {
    /// The simulated cloud.
    pub cloud: Arc<SimCloud>,
    /// The simulated cloud's node class resolver.
    pub resolver: Arc<SimNodeClassResolver>,
    control: ClusterControl,
}

impl std::ops::Deref for EmbeddedCluster {
    type Target = ClusterControl;
    fn deref(&self) -> &ClusterControl {
        &self.control
    }
}

impl std::ops::DerefMut for EmbeddedCluster {
    fn deref_mut(&mut self) -> &mut ClusterControl {
        &mut self.control
    }
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster").finish_non_exhaustive()
    }
}

/// Installs karp's CRDs into an API server.
///
/// # Errors
/// A message naming the CRD that was refused.
pub fn install_crds(server: &ApiServer) -> Result<(), String> {
    for crd in crate::api::crds::all() {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        server
            .apply(crd)
            .map_err(|e| format!("installing CRD {name}: {}", e.message))?;
    }
    Ok(())
}

impl EmbeddedCluster {
    /// Starts the API server (CRDs installed), the simulators and the operator.
    ///
    /// # Errors
    /// A message when the catalog or the CRDs cannot be set up.
    pub async fn start(options: EmbeddedOptions) -> Result<Self, String> {
        let server = ApiServer::new();
        install_crds(&server)?;
        let client = Client::new(server.clone(), "default");
        let types = builtin_instance_types()?;
        let mut zones: Vec<String> = types
            .iter()
            .flat_map(|t| t.offerings.iter().map(|o| o.zone.clone()))
            .collect();
        zones.sort();
        zones.dedup();
        let cloud = Arc::new(SimCloud::new(types, SimCloudOptions::default()));
        let sim = SimCluster::start(client.clone(), Arc::clone(&cloud), options.sim_options());
        let dyn_cloud: Arc<dyn CloudProvider> = cloud.clone();
        let resolver = Arc::new(SimNodeClassResolver::new(zones));
        let control = ClusterControl::start(
            server,
            client,
            dyn_cloud,
            Arc::clone(&resolver) as Arc<dyn NodeClassResolver>,
            sim,
            options,
        )
        .await?;
        Ok(EmbeddedCluster {
            cloud,
            resolver,
            control,
        })
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        self.control.stop().await;
    }
}
