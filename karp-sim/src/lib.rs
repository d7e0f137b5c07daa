//! # karp-sim
//!
//! The simulated parts of karp's embedded cluster: what a real cloud and a real cluster would do
//! around the karp operator, so `karp demo` and the end-to-end tests run without AWS or a
//! Kubernetes control plane.
//!
//! - [`cloud::SimCloud`]: an in-memory cloud implementing karp-core's `CloudProvider`.
//! - [`kubelet::Kubelet`]: registers a Node for every running instance, marks it Ready, removes
//!   startup taints, runs the pods bound to it, and stops when its instance is terminated.
//! - [`scheduler::Scheduler`]: binds pending pods to nodes that fit (kube-scheduler filters and a
//!   bin-packing score) and marks the rest `PodScheduled=False/Unschedulable`.
//! - [`workloads::WorkloadControllers`]: Deployments, ReplicaSets, StatefulSets and Jobs create
//!   their pods; pods of deleted nodes are garbage-collected.
//!
//! Everything talks to the API server through `kube::Client` only, like on a real cluster.
//! [`SimCluster`] starts all loops at once and stops them.

mod cache;
pub mod clock;
pub mod cloud;
pub mod fit;
pub mod kubelet;
pub mod node;
pub mod scheduler;
pub mod view;
pub mod workloads;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use clock::SimClock;
pub use cloud::{SimCloud, SimCloudOptions};
pub use kubelet::{run_kubelet, InstanceSource, Kubelet, KubeletOptions};
pub use scheduler::{run_scheduler, Scheduler, SchedulerOptions};
pub use workloads::{run_workload_controllers, WorkloadControllers, WorkloadOptions};

/// Options of every simulator [`SimCluster::start`] runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimOptions {
    /// The kubelet.
    pub kubelet: KubeletOptions,
    /// The scheduler.
    pub scheduler: SchedulerOptions,
    /// The workload controllers.
    pub workloads: WorkloadOptions,
}

impl SimOptions {
    /// Set the kubelet's options.
    #[must_use]
    pub fn kubelet(mut self, o: KubeletOptions) -> Self {
        self.kubelet = o;
        self
    }
    /// Set the scheduler's options.
    #[must_use]
    pub fn scheduler(mut self, o: SchedulerOptions) -> Self {
        self.scheduler = o;
        self
    }
    /// Set the workload controllers' options.
    #[must_use]
    pub fn workloads(mut self, o: WorkloadOptions) -> Self {
        self.workloads = o;
        self
    }
    /// Write timestamps from `clock` in the kubelet, the scheduler and the workload controllers.
    #[must_use]
    pub fn clock(mut self, clock: SimClock) -> Self {
        self.kubelet.clock = clock.clone();
        self.scheduler.clock = clock.clone();
        self.workloads.clock = clock;
        self
    }
}

/// The kubelet, scheduler and workload controllers running as tokio tasks.
///
/// ```no_run
/// # async fn demo(client: kube::Client, cloud: std::sync::Arc<karp_sim::SimCloud>) {
/// let sim = karp_sim::SimCluster::start(client, cloud, karp_sim::SimOptions::default());
/// // ... run the operator ...
/// sim.shutdown().await;
/// # }
/// ```
#[derive(Debug)]
pub struct SimCluster {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A future that completes when `rx` sees `true` (or its sender is dropped).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl SimCluster {
    /// Spawn the kubelet of `cloud`, the scheduler and the workload controllers on the current
    /// tokio runtime.
    #[must_use]
    pub fn start<S: InstanceSource + 'static>(
        client: kube::Client,
        cloud: Arc<S>,
        options: SimOptions,
    ) -> Self {
        let (stop, rx) = watch::channel(false);
        // One Node and one Pod watch for the three, as kube's controllers share informers.
        let caches = cache::NodePodCaches::start(&client);
        let mut kubelet = Kubelet::new(client.clone(), cloud, options.kubelet);
        let mut scheduler = Scheduler::new(client.clone(), options.scheduler);
        let (k, s) = (caches.clone(), caches.clone());
        let (k_stop, s_stop) = (stopped(rx.clone()), stopped(rx.clone()));
        let tasks = vec![
            tokio::spawn(async move { cache::run_node_pod_loop(&mut kubelet, &k, k_stop).await }),
            tokio::spawn(async move { cache::run_node_pod_loop(&mut scheduler, &s, s_stop).await }),
            tokio::spawn(
                WorkloadControllers::new(client, options.workloads).run_shared(caches, stopped(rx)),
            ),
        ];
        SimCluster { stop, tasks }
    }

    /// Stop every loop and wait for them to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
