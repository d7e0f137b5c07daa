//! End to end on the embedded cluster with the simulated cloud: the real operator (kube-runtime
//! controllers over `kube::Client`) against karp-apiserver, with karp-sim's kubelet, scheduler and
//! workload controllers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use karp_core::cloud::{CloudProvider, LaunchRequest};
use karp_operator::api::nodeclaim::NodeClaim;
use karp_operator::embedded::{EmbeddedCluster, EmbeddedOptions};

mod common;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

fn seed() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed");
    let mut s = String::new();
    for f in ["ec2nodeclass.yaml", "nodepool.yaml"] {
        s.push_str(&std::fs::read_to_string(dir.join(f)).unwrap());
        s.push_str("\n---\n");
    }
    s
}

use common::deployment;

/// The EC2NodeClass of examples/seed (the first document of [`seed`]).
fn seed_node_class() -> String {
    seed()
        .split("\n---\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

async fn app_pods(client: &kube::Client, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn running(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

async fn dump(client: &kube::Client) {
    for p in Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        eprintln!(
            "pod {:?} node={:?} status={}",
            p.metadata.name,
            p.spec.as_ref().and_then(|s| s.node_name.clone()),
            serde_json::to_string(&p.status).unwrap()
        );
    }
    for c in claims(client).await {
        eprintln!(
            "claim {:?} {}",
            c.metadata.name,
            serde_json::to_string(&c.status).unwrap()
        );
    }
    for n in Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        eprintln!(
            "node {:?} labels={:?} spec={} conditions={}",
            n.metadata.name,
            n.metadata.labels,
            serde_json::to_string(&n.spec).unwrap(),
            serde_json::to_string(&n.status.as_ref().and_then(|s| s.conditions.clone())).unwrap()
        );
    }
}

async fn claims(client: &kube::Client) -> Vec<NodeClaim> {
    Api::<NodeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// Every node's bound pods fit its allocatable (an independent capacity check).
async fn assert_capacity(client: &kube::Client) {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    for n in &nodes.items {
        let name = n.metadata.name.clone().unwrap();
        let alloc = n.status.as_ref().unwrap().allocatable.clone().unwrap();
        let cpu: karp_core::resources::Quantity = alloc["cpu"].0.parse().unwrap();
        let mut used = 0i64;
        for p in pods
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
        {
            for c in &p.spec.as_ref().unwrap().containers {
                if let Some(r) = c.resources.as_ref().and_then(|r| r.requests.as_ref()) {
                    if let Some(q) = r.get("cpu") {
                        let q: karp_core::resources::Quantity = q.0.parse().unwrap();
                        used += q.millis_ceil();
                    }
                }
            }
        }
        assert!(
            used <= cpu.millis_ceil(),
            "{name}: {used}m requested > {cpu} allocatable"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_pods_get_nodes_and_a_deleted_nodeclaim_drains_through_its_pdb() {
    common::trace();
    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    let client = cluster.client.clone();
    cluster.apply_yaml(&seed()).unwrap();
    cluster.apply_yaml(&deployment("web", 6, "1500m")).unwrap();
    cluster
        .apply_yaml(
            r"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: web}}
",
        )
        .unwrap();

    // Pending pods → NodeClaims → instances → Nodes registered and initialized → pods running.
    let start = Instant::now();
    loop {
        let pods = app_pods(&client, "web").await;
        if pods.len() == 6 && pods.iter().all(running) {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            dump(&client).await;
            panic!("timed out waiting for 6 running web pods");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cs = claims(&client).await;
    assert!(!cs.is_empty());
    for c in &cs {
        for cond in ["Launched", "Registered", "Initialized", "Ready"] {
            wait_for(
                &format!("{cond} on {:?}", c.metadata.name),
                Duration::from_secs(20),
                || async {
                    Api::<NodeClaim>::all(client.clone())
                        .get(c.metadata.name.as_deref().unwrap())
                        .await
                        .is_ok_and(|c| c.is_true(cond))
                },
            )
            .await;
        }
        assert_eq!(c.nodepool(), Some("karpenter-nodepool"));
        assert!(c
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "karpenter.sh/termination"));
        // The pods that bound to its node are pod events (`consolidateAfter` counts from them).
        wait_for(
            &format!("lastPodEventTime on {:?}", c.metadata.name),
            Duration::from_secs(10),
            || async {
                Api::<NodeClaim>::all(client.clone())
                    .get(c.metadata.name.as_deref().unwrap())
                    .await
                    .is_ok_and(|c| {
                        c.status
                            .as_ref()
                            .and_then(|s| s.last_pod_event_time.as_deref())
                            .is_some_and(|t| t.parse::<karp_core::disruption::Timestamp>().is_ok())
                    })
            },
        )
        .await;
    }
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), cs.len());
    for n in &nodes.items {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("karpenter.sh/nodepool").map(String::as_str),
            Some("karpenter-nodepool")
        );
        assert_eq!(
            labels.get("karpenter.sh/registered").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            labels.get("karpenter.sh/capacity-type").map(String::as_str),
            Some("spot")
        );
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(
            !taints.iter().any(|t| t.key == "karpenter.sh/unregistered"),
            "{taints:?}"
        );
    }
    assert_capacity(&client).await;
    // No extra claims were made for pods already covered by in-flight claims.
    let created = cluster.cloud.stats().creates;
    assert_eq!(created as usize, cs.len());

    // Delete the NodeClaim with the most web pods: its node drains (one pod at a time, as the
    // PDB allows), the pods land elsewhere (on new capacity if needed), the instance goes.
    let pods = app_pods(&client, "web").await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods {
        *per_node
            .entry(p.spec.as_ref().unwrap().node_name.clone().unwrap())
            .or_default() += 1;
    }
    let (victim_node, _) = per_node.iter().max_by_key(|(_, n)| **n).unwrap();
    let victim = cs
        .iter()
        .find(|c| c.status.as_ref().and_then(|s| s.node_name.as_ref()) == Some(victim_node))
        .or_else(|| cs.first())
        .unwrap()
        .clone();
    let victim_name = victim.metadata.name.clone().unwrap();
    let victim_provider = victim.provider_id().unwrap().to_string();
    Api::<NodeClaim>::all(client.clone())
        .delete(&victim_name, &DeleteParams::default())
        .await
        .unwrap();
    let max_unavailable = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    wait_for(
        "the drained pods running elsewhere",
        Duration::from_secs(60),
        || async {
            let pods = app_pods(&client, "web").await;
            let unavailable = 6usize.saturating_sub(pods.iter().filter(|p| running(p)).count());
            max_unavailable.fetch_max(unavailable, std::sync::atomic::Ordering::SeqCst);
            let gone = Api::<NodeClaim>::all(client.clone())
                .get_opt(&victim_name)
                .await
                .unwrap()
                .is_none();
            gone && pods.len() == 6
                && pods.iter().all(running)
                && pods.iter().all(|p| {
                    p.spec.as_ref().unwrap().node_name.as_deref() != Some(victim_node.as_str())
                })
        },
    )
    .await;
    let max_unavailable = max_unavailable.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        max_unavailable <= 2,
        "PDB allows 1 unavailable; saw {max_unavailable}"
    );
    assert!(cluster
        .cloud
        .get(&victim_provider)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(Api::<Node>::all(client.clone())
        .get_opt(victim_node)
        .await
        .unwrap()
        .is_none());
    assert_capacity(&client).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_launch_adopts_the_instance_and_orphans_are_collected() {
    common::trace();
    let mut cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    let client = cluster.client.clone();
    cluster.apply_yaml(&seed()).unwrap();
    cluster.stop_operator().await;

    // The operator "crashed" after CreateFleet returned but before it wrote the NodeClaim status.
    let claim: NodeClaim = serde_yaml::from_str(
        r"
apiVersion: karpenter.sh/v1
kind: NodeClaim
metadata:
  name: karpenter-nodepool-crash
  labels: {karpenter.sh/nodepool: karpenter-nodepool}
spec:
  nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: karpenter-nodeclass-al2023}
  requirements:
    - {key: node.kubernetes.io/instance-type, operator: In, values: [m5.xlarge]}
    - {key: karpenter.sh/capacity-type, operator: In, values: [spot]}
",
    )
    .unwrap();
    Api::<NodeClaim>::all(client.clone())
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    let launched = cluster
        .cloud
        .create(&LaunchRequest {
            nodeclaim: "karpenter-nodepool-crash".into(),
            nodepool: "karpenter-nodepool".into(),
            node_class: Some("karpenter-nodeclass-al2023".into()),
            requirements: karp_operator::convert::nodeclaim::claim_requirements(&claim),
            labels: BTreeMap::from([(
                "karpenter.sh/nodepool".to_string(),
                "karpenter-nodepool".to_string(),
            )]),
            ..LaunchRequest::default()
        })
        .await
        .unwrap();
    // And an instance whose NodeClaim never made it to the API: a leak to collect.
    let orphan = cluster
        .cloud
        .create(&LaunchRequest {
            nodeclaim: "never-created".into(),
            nodepool: "karpenter-nodepool".into(),
            ..LaunchRequest::default()
        })
        .await
        .unwrap();
    let creates_before = cluster.cloud.stats().creates;

    cluster.restart_operator().await.unwrap();
    wait_for(
        "the crashed claim to register",
        Duration::from_secs(30),
        || async {
            Api::<NodeClaim>::all(client.clone())
                .get("karpenter-nodepool-crash")
                .await
                .is_ok_and(|c| {
                    c.is_true("Registered")
                        && c.provider_id() == Some(launched.provider_id.as_str())
                })
        },
    )
    .await;
    assert_eq!(
        cluster.cloud.stats().creates,
        creates_before,
        "no second launch"
    );
    wait_for(
        "the orphan instance to be collected",
        Duration::from_secs(30),
        || async { cluster.cloud.get(&orphan.provider_id).await.is_err() },
    )
    .await;
    // The adopted instance is still there and owned.
    assert!(cluster.cloud.get(&launched.provider_id).await.is_ok());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_elect_one_leader_and_fail_over() {
    let mut options = EmbeddedOptions::fast();
    options.start_operator = false;
    let cluster = std::sync::Arc::new(EmbeddedCluster::start(options).await.unwrap());
    cluster
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: karp}\n")
        .unwrap();
    cluster.apply_yaml(&seed()).unwrap();
    let c = std::sync::Arc::clone(&cluster);
    common::two_replicas_fail_over(
        cluster.client.clone(),
        |y: &str| {
            cluster.apply_yaml(y).unwrap();
        },
        move |id| {
            let c = std::sync::Arc::clone(&c);
            async move { c.new_operator(id).await }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insufficient_capacity_deletes_the_claim_and_replans() {
    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    let client = cluster.client.clone();
    cluster
        .cloud
        .fail_next_create(karp_core::cloud::CloudError::InsufficientCapacity {
            offerings: Vec::new(),
        });
    cluster.apply_yaml(&seed()).unwrap();
    cluster.apply_yaml(&deployment("ice", 2, "1")).unwrap();
    wait_for(
        "pods running after a failed launch",
        Duration::from_secs(30),
        || async {
            let pods = app_pods(&client, "ice").await;
            pods.len() == 2 && pods.iter().all(running)
        },
    )
    .await;
    let stats = cluster.cloud.stats();
    assert_eq!(stats.create_calls, stats.creates + 1, "{stats:?}");
    // The failed claim is gone; the surviving ones all launched.
    for c in claims(&client).await {
        assert!(c.provider_id().is_some(), "{:?}", c.metadata.name);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_unconvertible_pod_is_skipped_with_an_event_and_the_rest_still_get_nodes() {
    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    let client = cluster.client.clone();
    cluster.apply_yaml(&seed()).unwrap();
    // Kubernetes accepts this quantity; karp cannot plan with it.
    cluster
        .apply_yaml(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: huge, namespace: default, labels: {app: huge}}
spec:
  containers: [{name: c, image: pause, resources: {requests: {cpu: "1e30"}}}]
"#,
        )
        .unwrap();
    cluster.apply_yaml(&deployment("web", 3, "500m")).unwrap();
    wait_for("3 running web pods", Duration::from_secs(60), || async {
        let pods = app_pods(&client, "web").await;
        pods.len() == 3 && pods.iter().all(running)
    })
    .await;
    wait_for(
        "a FailedConversion event naming the pod",
        Duration::from_secs(20),
        || async {
            Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items.iter().any(|e| {
                        e.reason.as_deref() == Some("FailedConversion")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("huge")
                            && e.note
                                .as_deref()
                                .is_some_and(|n| n.contains("requests.cpu"))
                    })
                })
                .unwrap_or(false)
        },
    )
    .await;
    assert!(!app_pods(&client, "huge").await.iter().any(running));
    cluster.shutdown().await;
}

/// A `kube::Client` transport that fails every request once `cut` is set (a network partition
/// between this replica and the API server).
#[derive(Clone)]
struct Partition {
    inner: kube::Client,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl tower::Service<http::Request<kube::client::Body>> for Partition {
    type Response = http::Response<kube::client::Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let inner = self.inner.clone();
        let cut = std::sync::Arc::clone(&self.cut);
        Box::pin(async move {
            if cut.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("partitioned from the API server".into());
            }
            inner.send(req).await.map_err(Into::into)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_the_api_server_stops_acting_within_the_lease() {
    use karp_operator::runtime::health::Health;
    use karp_operator::runtime::leader::{run_elected, LeaderElection};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut options = EmbeddedOptions::fast();
    options.start_operator = false;
    let cluster = Arc::new(EmbeddedCluster::start(options).await.unwrap());
    cluster
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: karp}\n")
        .unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let client = kube::Client::new(
        Partition {
            inner: cluster.client.clone(),
            cut: Arc::clone(&cut),
        },
        "default",
    );
    let health = Arc::new(Health::default());
    let mut election = LeaderElection::new("karp", "partitioned");
    election.duration_secs = 3;
    election.grace_secs = 1;
    election.renew_deadline = Duration::from_secs(2);
    let contexts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, ctxs) = (Arc::clone(&cluster), Arc::clone(&contexts));
    let h = Arc::clone(&health);
    let task = tokio::spawn(async move {
        run_elected(
            client,
            election,
            h,
            move || {
                let (c, ctxs) = (Arc::clone(&c), Arc::clone(&ctxs));
                async move {
                    let op = c.new_operator("partitioned").await?;
                    ctxs.lock().unwrap().push(Arc::clone(&op.ctx));
                    Ok::<_, karp_operator::controllers::OperatorError>(op)
                }
            },
            std::future::pending(),
        )
        .await
    });
    wait_for("leadership", Duration::from_secs(20), || async {
        health.leader.load(Ordering::SeqCst)
    })
    .await;
    cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run_elected returns after stepping down")
        .unwrap();
    let stopped_after = cut_at.elapsed();
    assert!(
        result.is_err(),
        "stepping down is an error, so `karp run` exits"
    );
    assert!(
        stopped_after < Duration::from_secs(3),
        "stopped {stopped_after:?} after the cut; the lease lasts 3 s"
    );
    assert!(!health.leader.load(Ordering::SeqCst));
    assert!(contexts.lock().unwrap().iter().all(|c| c.is_shutdown()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_fails_the_start_with_a_clear_error_instead_of_hanging() {
    use karp_operator::controllers::{Operator, OperatorError, OperatorSettings};
    use std::sync::Arc;

    // An API server without karp's CRDs: the NodePool cache can never list.
    let server = karp_apiserver::ApiServer::new();
    let client = kube::Client::new(server.clone(), "default");
    let types = karp_operator::embedded::builtin_instance_types().unwrap();
    let cloud = Arc::new(karp_sim::SimCloud::new(
        types,
        karp_sim::SimCloudOptions::default(),
    ));
    let resolver = Arc::new(karp_operator::embedded::SimNodeClassResolver::new(vec![
        "us-east-1a".into(),
    ]));
    let settings = OperatorSettings {
        sync_timeout: Duration::from_secs(2),
        ..OperatorSettings::default()
    };
    let started = Instant::now();
    let result = Operator::start(
        client,
        cloud,
        resolver,
        Arc::new(karp_operator::runtime::metrics::Metrics::new()),
        settings,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    match result {
        Err(e @ OperatorError::SyncCache { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("nodepools") && msg.contains("CustomResourceDefinition"),
                "{msg}"
            );
        }
        other => panic!("expected a sync error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_cluster_with_five_node_classes_makes_no_repeated_calls_or_writes() {
    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    let client = cluster.client.clone();
    let mut yaml = String::new();
    for i in 0..5 {
        yaml.push_str(&format!(
            r"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {{name: class-{i}}}
spec:
  role: KarpenterNodeRole
  amiSelectorTerms: [{{alias: al2023@latest}}]
  subnetSelectorTerms: [{{tags: {{karpenter.sh/discovery: karp}}}}]
  securityGroupSelectorTerms: [{{tags: {{karpenter.sh/discovery: karp}}}}]
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: pool-{i}}}
spec:
  template:
    spec:
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: class-{i}}}
      requirements: []
---
"
        ));
    }
    cluster.apply_yaml(&yaml).unwrap();
    let pools: Api<karp_operator::api::nodepool::NodePool> = Api::all(client.clone());
    let versions = || async {
        let mut v: Vec<(String, String)> = pools
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.resource_version.clone().unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    wait_for("5 ready NodePools", Duration::from_secs(20), || async {
        pools
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
            })
            .count()
            == 5
    })
    .await;
    // Idle: resync runs every 500 ms in these settings, 10 times in this window.
    let before = versions().await;
    let resolves_before = cluster.resolver.resolves();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        versions().await,
        before,
        "NodePool status rewritten while nothing changed"
    );
    assert_eq!(
        cluster.resolver.resolves(),
        resolves_before,
        "node classes resolved again while nothing changed"
    );
    assert!(
        resolves_before <= 10,
        "{resolves_before} resolutions for 5 node classes"
    );
    cluster.shutdown().await;
}

/// Waits until claim `name` is `Drifted=True` with `reason`.
async fn wait_drifted(api: &Api<NodeClaim>, name: &str, reason: &str) {
    wait_for(
        &format!("{name} drifted ({reason})"),
        Duration::from_secs(30),
        || async {
            api.get(name).await.is_ok_and(|c| {
                c.condition("Drifted")
                    .is_some_and(|d| d.status == "True" && d.reason == reason)
            })
        },
    )
    .await;
}

/// An embedded cluster running `seed` and a Deployment `app` of `replicas` pods requesting
/// `cpu` each, returned once they all run.
async fn running_app(seed: &str, app: &str, replicas: u32, cpu: &str) -> EmbeddedCluster {
    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    cluster.apply_yaml(seed).unwrap();
    cluster.apply_yaml(&deployment(app, replicas, cpu)).unwrap();
    let client = cluster.client.clone();
    wait_for(
        &format!("{replicas} running {app} pods"),
        Duration::from_secs(60),
        || async {
            let pods = app_pods(&client, app).await;
            pods.len() == replicas as usize && pods.iter().all(running)
        },
    )
    .await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_become_consolidatable_after_consolidate_after_from_their_last_pod_event() {
    let seed = seed().replace("consolidateAfter: 1m", "consolidateAfter: 3s");
    assert!(seed.contains("consolidateAfter: 3s"));
    let cluster = running_app(&seed, "quiet", 2, "500m").await;
    let client = cluster.client.clone();
    let api = Api::<NodeClaim>::all(client.clone());
    for c in claims(&client).await {
        let name = c.metadata.name.clone().unwrap();
        wait_for(
            &format!("Consolidatable on {name}"),
            Duration::from_secs(20),
            || async {
                api.get(&name)
                    .await
                    .is_ok_and(|c| c.is_true("Consolidatable"))
            },
        )
        .await;
        let c = api.get(&name).await.unwrap();
        let t = |s: &str| s.parse::<karp_core::disruption::Timestamp>().unwrap();
        let event = t(c
            .status
            .as_ref()
            .and_then(|s| s.last_pod_event_time.as_deref())
            .expect("a pod event was recorded"));
        let since = t(&c.condition("Consolidatable").unwrap().last_transition_time);
        // The condition waited out consolidateAfter (3 s, second-resolution timestamps).
        assert!(
            since.0 - event.0 >= 2_000,
            "{name}: event {event:?}, consolidatable {since:?}"
        );
        // The lifecycle conditions are all still there.
        for cond in ["Launched", "Registered", "Initialized"] {
            assert!(c.is_true(cond), "{name} lost {cond}");
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_claims_are_deleted_and_their_pods_run_elsewhere() {
    let seed = seed().replace("expireAfter: Never", "expireAfter: 10s");
    assert!(seed.contains("expireAfter: 10s"));
    let cluster = running_app(&seed, "aging", 2, "500m").await;
    let client = cluster.client.clone();
    let old: Vec<String> = claims(&client)
        .await
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert!(!old.is_empty());
    // Replacements live on: the pool's template no longer expires (claims copy it at creation).
    Api::<karp_operator::api::nodepool::NodePool>::all(client.clone())
        .patch(
            "karpenter-nodepool",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "spec": {"template": {"spec": {"expireAfter": "Never"}}}
            })),
        )
        .await
        .unwrap();
    wait_for(
        "the expired claims deleted",
        Duration::from_secs(60),
        || async {
            let now: Vec<String> = claims(&client)
                .await
                .iter()
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            old.iter().all(|o| !now.contains(o))
        },
    )
    .await;
    wait_for(
        "the pods running on new nodes",
        Duration::from_secs(60),
        || async {
            let pods = app_pods(&client, "aging").await;
            let cs = claims(&client).await;
            let nodes: Vec<String> = cs
                .iter()
                .filter_map(|c| c.status.as_ref().and_then(|s| s.node_name.clone()))
                .collect();
            pods.len() == 2
                && pods.iter().all(running)
                && pods.iter().all(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_some_and(|n| nodes.contains(n))
                })
        },
    )
    .await;
    for c in claims(&client).await {
        assert!(!old.contains(c.metadata.name.as_ref().unwrap()));
        assert_eq!(c.spec.expire_after.as_deref(), Some("Never"));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requirement_change_marks_the_claims_it_excludes_drifted() {
    use karp_operator::api::nodepool::{
        FlexString, NodePool, NodeSelectorRequirementWithMinValues,
    };
    let cluster = running_app(&seed(), "drifty", 1, "500m").await;
    let client = cluster.client.clone();
    let claims_api = Api::<NodeClaim>::all(client.clone());
    let cs = claims(&client).await;
    let name = cs[0].metadata.name.clone().unwrap();
    wait_for("the claim registered", Duration::from_secs(20), || async {
        claims_api
            .get(&name)
            .await
            .is_ok_and(|c| c.is_true("Initialized"))
    })
    .await;
    // Not drifted while the pool still allows it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let c = claims_api.get(&name).await.unwrap();
    assert!(
        c.condition("Drifted").is_none(),
        "{:?}",
        c.condition("Drifted")
    );
    let node = c.status.as_ref().and_then(|s| s.node_name.clone()).unwrap();
    let ty = Api::<Node>::all(client.clone())
        .get(&node)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
        .get("node.kubernetes.io/instance-type")
        .cloned()
        .unwrap();
    let pools = Api::<NodePool>::all(client.clone());
    let mut np = pools.get("karpenter-nodepool").await.unwrap();
    np.spec
        .template
        .spec
        .requirements
        .push(NodeSelectorRequirementWithMinValues {
            key: "node.kubernetes.io/instance-type".into(),
            operator: "NotIn".into(),
            values: vec![FlexString(ty.clone())],
            min_values: None,
        });
    pools
        .replace("karpenter-nodepool", &PostParams::default(), &np)
        .await
        .unwrap();
    wait_drifted(&claims_api, &name, "RequirementsDrifted").await;
    let c = claims_api.get(&name).await.unwrap();
    for cond in ["Launched", "Registered", "Initialized"] {
        assert!(c.is_true(cond), "{name} lost {cond}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_label_change_drifts_the_claims_by_the_nodepool_hash() {
    use karp_operator::api::nodepool::NodePool;
    let cluster = running_app(&seed(), "hashed", 1, "500m").await;
    let client = cluster.client.clone();
    let claims_api = Api::<NodeClaim>::all(client.clone());
    let pools = Api::<NodePool>::all(client.clone());
    let name = claims(&client).await[0].metadata.name.clone().unwrap();
    let hash = |a: Option<&BTreeMap<String, String>>| {
        a.and_then(|a| a.get("karpenter.sh/nodepool-hash")).cloned()
    };
    // The pool and the claim carry the same karp hash; the claim is not drifted.
    wait_for(
        "the pool's hash stamped",
        Duration::from_secs(20),
        || async {
            let np = pools.get("karpenter-nodepool").await.unwrap();
            let c = claims_api.get(&name).await.unwrap();
            hash(np.metadata.annotations.as_ref()).is_some()
                && hash(np.metadata.annotations.as_ref()) == hash(c.metadata.annotations.as_ref())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(claims_api
        .get(&name)
        .await
        .unwrap()
        .condition("Drifted")
        .is_none());
    pools
        .patch(
            "karpenter-nodepool",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "spec": {"template": {"metadata": {"labels": {"team": "payments"}}}}
            })),
        )
        .await
        .unwrap();
    wait_drifted(&claims_api, &name, "NodePoolDrifted").await;
    cluster.shutdown().await;
}

// ---- disruption controller ------------------------------------------------------------------

/// An on-demand NodePool `od` (c/m families, 2 to 16 vCPUs) consolidating after 30 s, with
/// `budgets` (YAML list) and extra `disruption` fields.
fn od_pool(budgets: &str) -> String {
    let class = seed_node_class();
    format!(
        r#"{class}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: od}}
spec:
  template:
    spec:
      requirements:
        - {{key: karpenter.k8s.aws/instance-category, operator: In, values: ["c", "m"]}}
        - {{key: karpenter.k8s.aws/instance-cpu, operator: In, values: ["2", "4", "8", "16"]}}
        - {{key: kubernetes.io/arch, operator: In, values: ["amd64"]}}
        - {{key: karpenter.sh/capacity-type, operator: In, values: ["on-demand"]}}
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: karpenter-nodeclass-al2023}}
      expireAfter: Never
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 30s
    budgets: {budgets}
"#
    )
}

/// A Deployment of `replicas` pods of `cpu`, at most one per node (required anti-affinity).
fn spread_deployment(name: &str, replicas: u32, cpu: &str) -> String {
    let affinity = format!(
        "    spec:\n      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            - labelSelector: {{matchLabels: {{app: {name}}}}}\n              topologyKey: kubernetes.io/hostname\n"
    );
    let d = deployment(name, replicas, cpu).replacen("    spec:\n", &affinity, 1);
    assert!(d.contains("podAntiAffinity"));
    d
}

/// Merge-patches NodePool `name`.
async fn patch_pool(client: &kube::Client, name: &str, patch: serde_json::Value) {
    Api::<karp_operator::api::nodepool::NodePool>::all(client.clone())
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .unwrap();
}

fn pdb_yaml(app: &str, field: &str, value: u32) -> String {
    format!(
        r"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: {app}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  {field}: {value}
"
    )
}

async fn scale(client: &kube::Client, name: &str, replicas: u32) {
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "default")
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// The cost per hour of the cluster's launched NodeClaims.
async fn cost(cluster: &EmbeddedCluster) -> f64 {
    karp_operator::commands::demo::progress(cluster)
        .await
        .cost_per_hour
}

/// Node names of the live NodeClaims.
async fn claim_nodes(client: &kube::Client) -> Vec<String> {
    let mut v: Vec<String> = claims(client)
        .await
        .iter()
        .filter_map(|c| c.status.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    v.sort();
    v
}

async fn running_count(client: &kube::Client, app: &str) -> usize {
    app_pods(client, app)
        .await
        .iter()
        .filter(|p| running(p) && p.metadata.deletion_timestamp.is_none())
        .count()
}

use common::{advance_until, settle};

/// Waits up to a minute until `n` pods of `app` run (and none is terminating); `what` names the
/// wait in the timeout message.
async fn wait_running(client: &kube::Client, app: &str, n: usize, what: &str) {
    wait_for(what, Duration::from_secs(60), || async {
        running_count(client, app).await == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shrinking_cluster_is_consolidated_with_pods_running_throughout_and_pdbs_kept() {
    shrink(karp_core::disruption::Mode::Karpenter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_mode_ends_at_most_as_expensive_as_karpenter_mode() {
    let karpenter = shrink(karp_core::disruption::Mode::Karpenter).await;
    let global = shrink(karp_core::disruption::Mode::Global).await;
    eprintln!("end cost: karpenter ${karpenter:.4}/h, global ${global:.4}/h");
    assert!(
        global <= karpenter + 1e-9,
        "global {global} > karpenter {karpenter}"
    );
}

/// The shrinking scenario under `mode`; the cost per hour it ends at.
async fn shrink(mode: karp_core::disruption::Mode) -> f64 {
    common::trace();
    let mut options = EmbeddedOptions::fast();
    options.operator.disruption.mode = mode;
    let cluster = EmbeddedCluster::start(options).await.unwrap();
    let client = cluster.client.clone();
    cluster.apply_yaml(&od_pool("[{nodes: '100%'}]")).unwrap();
    cluster
        .apply_yaml(&spread_deployment("spread", 4, "500m"))
        .unwrap();
    cluster.apply_yaml(&deployment("big", 4, "1500m")).unwrap();
    cluster
        .apply_yaml(&pdb_yaml("spread", "maxUnavailable", 1))
        .unwrap();
    cluster
        .apply_yaml(&pdb_yaml("big", "minAvailable", 1))
        .unwrap();
    wait_for("every pod running", Duration::from_secs(60), || async {
        running_count(&client, "spread").await == 4 && running_count(&client, "big").await == 4
    })
    .await;
    assert_capacity(&client).await;
    let before_nodes = claim_nodes(&client).await;
    let peak = cost(&cluster).await;
    assert!(before_nodes.len() >= 4, "{before_nodes:?}");
    let provisioned = |c: &EmbeddedCluster| {
        c.metrics.counter(
            "karpenter_nodeclaims_created_total",
            &[("nodepool", "od"), ("reason", "provisioning")],
        )
    };
    let provisioned_before = provisioned(&cluster);

    scale(&client, "spread", 2).await;
    scale(&client, "big", 2).await;
    wait_for("the scale-down", Duration::from_secs(30), || async {
        app_pods(&client, "spread").await.len() == 2 && app_pods(&client, "big").await.len() == 2
    })
    .await;
    let shrunk = cost(&cluster).await;
    assert!(
        (shrunk - peak).abs() < 1e-9,
        "nothing is disrupted before consolidateAfter"
    );

    let min_running = std::sync::Mutex::new((usize::MAX, usize::MAX));
    settle(&cluster, || async {
        let s = running_count(&client, "spread").await;
        let b = running_count(&client, "big").await;
        let mut m = min_running.lock().unwrap();
        *m = (m.0.min(s), m.1.min(b));
    })
    .await;
    let (min_spread, min_big) = *min_running.lock().unwrap();
    assert!(
        min_spread >= 1,
        "spread dropped to {min_spread} running (PDB maxUnavailable 1)"
    );
    assert!(
        min_big >= 1,
        "big dropped to {min_big} running (PDB minAvailable 1)"
    );
    assert_capacity(&client).await;
    let end = cost(&cluster).await;
    assert!(end < shrunk, "cost {shrunk} → {end}");
    // Two spread pods need two nodes (anti-affinity), and two nodes hold everything.
    assert_eq!(claim_nodes(&client).await.len(), 2);
    assert_eq!(running_count(&client, "spread").await, 2);
    assert_eq!(running_count(&client, "big").await, 2);
    // The pods evicted from candidates landed on the replacements: provisioning launched
    // nothing. (A global move with several replacements can be placed differently by the
    // kube-scheduler than planned; a pod left without room then gets a node from provisioning
    // and a later pass removes what became redundant: see docs/disrupt.md.)
    if mode == karp_core::disruption::Mode::Karpenter {
        assert_eq!(
            provisioned(&cluster),
            provisioned_before,
            "duplicate capacity"
        );
    }
    // Every eviction of a budgeted pod went through its budget; refusals are recorded.
    let evictions = cluster.server.evictions();
    let allowed = evictions.iter().filter(|e| e.allowed).count();
    let refused = evictions.iter().filter(|e| !e.allowed).count();
    eprintln!("evictions allowed {allowed}, refused {refused}; cost ${peak:.4}/h → ${end:.4}/h");
    for line in cluster.metrics.render().lines() {
        if line.starts_with("karpenter_voluntary_disruption_decisions_total") {
            eprintln!("{line}");
        }
    }
    if std::env::var_os("KARP_E2E_DUMP").is_some() {
        for c in claims(&client).await {
            eprintln!(
                "claim {:?} {:?} node {:?}",
                c.metadata.name,
                c.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("node.kubernetes.io/instance-type")),
                c.status.as_ref().and_then(|s| s.node_name.clone())
            );
        }
        for app in ["spread", "big"] {
            for p in app_pods(&client, app).await {
                eprintln!(
                    "pod {:?} on {:?}",
                    p.metadata.name,
                    p.spec.and_then(|s| s.node_name)
                );
            }
        }
    }
    // Budgets decide every eviction of a running pod (kube-apiserver evicts Pending, finished and
    // terminating pods without consulting them).
    for e in evictions.iter().filter(|e| e.budgets_apply) {
        assert!(
            e.pdb.as_deref() == Some(e.pod.split('-').next().unwrap_or_default()),
            "{e:?}"
        );
    }
    // No candidate is left tainted.
    assert!(common::tainted_nodes(&client).await.is_empty());
    cluster.shutdown().await;
    end
}

async fn nodes_of(client: &kube::Client, app: &str) -> Vec<String> {
    let mut v: Vec<String> = app_pods(client, app)
        .await
        .into_iter()
        .filter_map(|p| p.spec.and_then(|s| s.node_name))
        .collect();
    v.sort();
    v
}

/// `spread` pods on `n` nodes of pool `od` with `budgets`, all running.
async fn spread_cluster(budgets: &str, n: u32) -> EmbeddedCluster {
    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    cluster.apply_yaml(&od_pool(budgets)).unwrap();
    cluster
        .apply_yaml(&spread_deployment("spread", n, "500m"))
        .unwrap();
    let client = cluster.client.clone();
    wait_for("spread pods running", Duration::from_secs(60), || async {
        running_count(&client, "spread").await == n as usize
    })
    .await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zero_budget_blocks_all_and_do_not_disrupt_pods_and_nodes_are_never_touched() {
    let cluster = spread_cluster("[{nodes: '0'}]", 3).await;
    let client = cluster.client.clone();
    let all = claim_nodes(&client).await;
    assert_eq!(all.len(), 3);
    scale(&client, "spread", 1).await;
    wait_for("the scale-down", Duration::from_secs(30), || async {
        app_pods(&client, "spread").await.len() == 1
    })
    .await;
    // Two empty nodes, but the budget allows nothing: they stay however long we wait.
    settle(&cluster, || async {}).await;
    assert_eq!(claim_nodes(&client).await, all);
    let allowed = cluster.metrics.gauge(
        "karpenter_nodepools_allowed_disruptions",
        &[("nodepool", "od"), ("reason", "Empty")],
    );
    assert_eq!(allowed, Some(0.0));
    let recorded = events(&client).await;
    assert!(
        recorded
            .iter()
            .any(|(reason, object, note)| reason == "DisruptionBlocked"
                && object == "NodePool/od"
                && note.contains(
                    "No allowed disruptions for disruption reason Empty due to blocking budget"
                )),
        "{recorded:?}"
    );

    // The budget opens; one empty node carries do-not-disrupt, the pod too.
    let busy = nodes_of(&client, "spread").await;
    let empty: Vec<&String> = all.iter().filter(|n| !busy.contains(n)).collect();
    let pinned_node = empty[0].clone();
    Api::<Node>::all(client.clone())
        .patch(
            &pinned_node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}
            })),
        )
        .await
        .unwrap();
    let pod = app_pods(&client, "spread").await.remove(0);
    Api::<Pod>::namespaced(client.clone(), "default")
        .patch(
            pod.metadata.name.as_deref().unwrap(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}
            })),
        )
        .await
        .unwrap();
    patch_pool(
        &client,
        "od",
        serde_json::json!({
            "spec": {"disruption": {"budgets": [{"nodes": "100%"}]}}
        }),
    )
    .await;
    settle(&cluster, || async {}).await;
    let mut left = claim_nodes(&client).await;
    left.sort();
    let mut want = vec![pinned_node.clone(), busy[0].clone()];
    want.sort();
    assert_eq!(left, want, "only the unprotected empty node goes");
    assert_eq!(running_count(&client, "spread").await, 1);
    assert_eq!(
        nodes_of(&client, "spread").await,
        busy,
        "the pinned pod never moved"
    );
    assert!(cluster.server.evictions().is_empty());
    let recorded = events(&client).await;
    assert!(
        recorded
            .iter()
            .any(|(reason, object, note)| reason == "DisruptionBlocked"
                && object == &format!("Node/{pinned_node}")
                && note.contains("do-not-disrupt")),
        "{:?}",
        recorded
            .iter()
            .filter(|e| e.1.contains(&pinned_node))
            .collect::<Vec<_>>()
    );
    cluster.shutdown().await;
}

/// Every event as (reason, kind/name of the object, note).
async fn events(client: &kube::Client) -> Vec<(String, String, String)> {
    Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            let r = e.regarding.unwrap_or_default();
            (
                e.reason.unwrap_or_default(),
                format!(
                    "{}/{}",
                    r.kind.unwrap_or_default(),
                    r.name.unwrap_or_default()
                ),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replacement_not_initialized_in_time_rolls_the_command_back_and_keeps_it_tracked() {
    common::trace();
    let mut options = EmbeddedOptions::fast();
    // Replacements become Ready after 300 ms: a 50 ms wait always times out.
    options.operator.disruption.replacement_timeout_min = Duration::from_millis(50);
    options.operator.disruption.replacement_timeout_max = Duration::from_millis(50);
    options.operator.disruption.replacement_poll = Duration::from_millis(10);
    let cluster = EmbeddedCluster::start(options).await.unwrap();
    let client = cluster.client.clone();
    cluster.apply_yaml(&od_pool("[{nodes: '100%'}]")).unwrap();
    cluster.apply_yaml(&deployment("big", 4, "1500m")).unwrap();
    wait_for("big running", Duration::from_secs(60), || async {
        running_count(&client, "big").await == 4
    })
    .await;
    let before: Vec<String> = claims(&client)
        .await
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    scale(&client, "big", 1).await;
    advance_until(
        &cluster,
        Duration::from_secs(5),
        Duration::from_secs(60),
        "a rolled-back command",
        || async {
            cluster.metrics.counter(
                "karpenter_voluntary_disruption_queue_failures_total",
                &[
                    ("decision", "replace"),
                    ("reason", "underutilized"),
                    ("consolidation_type", "single"),
                ],
            ) >= 1.0
        },
        || async {},
    )
    .await;
    // Stop consolidating, then check what the rollback left.
    patch_pool(
        &client,
        "od",
        serde_json::json!({
            "spec": {"disruption": {"budgets": [{"nodes": "0"}]}}
        }),
    )
    .await;
    wait_for("no node tainted", Duration::from_secs(20), || async {
        common::tainted_nodes(&client).await.is_empty()
    })
    .await;
    // The candidates are still there (rolled back, not deleted) and the replacement is an
    // ordinary claim with its instance.
    let now = claims(&client).await;
    let names: Vec<String> = now.iter().filter_map(|c| c.metadata.name.clone()).collect();
    assert!(
        names.iter().any(|n| !before.contains(n)),
        "a replacement exists: {names:?}"
    );
    wait_for("every claim launched", Duration::from_secs(20), || async {
        claims(&client)
            .await
            .iter()
            .all(|c| c.provider_id().is_some())
    })
    .await;
    let ids: Vec<String> = claims(&client)
        .await
        .iter()
        .filter_map(|c| c.provider_id().map(str::to_string))
        .collect();
    for i in cluster.cloud.running_instances() {
        let id = &i.instance.provider_id;
        assert!(ids.contains(id), "orphan instance {id}");
    }
    assert_eq!(running_count(&client, "big").await, 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requirement_change_drifts_every_node_and_replaces_them_one_at_a_time() {
    let cluster = spread_cluster(
        "[{nodes: '1', reasons: [Drifted]}, {nodes: '0', reasons: [Empty, Underutilized]}]",
        3,
    )
    .await;
    let client = cluster.client.clone();
    let family = |c: &NodeClaim| {
        c.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("karpenter.k8s.aws/instance-category").cloned())
            .unwrap_or_default()
    };
    let old: Vec<String> = claims(&client)
        .await
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let first = family(&claims(&client).await[0]);
    let other = if first == "c" { "m" } else { "c" };
    patch_pool(&client, "od", serde_json::json!({"spec": {"template": {"spec": {"requirements": [
                {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": [other]},
                {"key": "karpenter.k8s.aws/instance-cpu", "operator": "In", "values": ["2", "4", "8", "16"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
            ]}}}})).await;
    let most_disrupting = std::sync::Mutex::new(0usize);
    let fewest_running = std::sync::Mutex::new(usize::MAX);
    advance_until(
        &cluster,
        Duration::from_secs(5),
        Duration::from_secs(150),
        "every drifted node replaced",
        || async {
            let cs = claims(&client).await;
            cs.len() == 3
                && cs.iter().all(|c| {
                    !old.contains(c.metadata.name.as_ref().unwrap())
                        && c.is_true("Initialized")
                        && family(c) == other
                })
                && running_count(&client, "spread").await == 3
        },
        || async {
            let nodes = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await
                .unwrap()
                .items;
            let disrupting = nodes
                .iter()
                .filter(|n| {
                    n.metadata.deletion_timestamp.is_some()
                        || n.spec
                            .as_ref()
                            .and_then(|s| s.taints.as_ref())
                            .is_some_and(|t| t.iter().any(|t| t.key == "karpenter.sh/disrupted"))
                })
                .count();
            {
                let mut m = most_disrupting.lock().unwrap();
                *m = (*m).max(disrupting);
            }
            let r = running_count(&client, "spread").await;
            let mut f = fewest_running.lock().unwrap();
            *f = (*f).min(r);
        },
    )
    .await;
    assert_eq!(
        *most_disrupting.lock().unwrap(),
        1,
        "the Drifted budget is one node"
    );
    assert!(*fewest_running.lock().unwrap() >= 2);
    assert!(
        cluster.metrics.counter(
            "karpenter_voluntary_disruption_decisions_total",
            &[
                ("decision", "replace"),
                ("reason", "drifted"),
                ("consolidation_type", "")
            ]
        ) >= 3.0
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_restart_in_the_middle_of_a_command_leaves_no_tainted_node_and_no_orphan() {
    let mut cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    common::restart_mid_command(&mut cluster, &od_pool("[{nodes: '100%'}]")).await;
    let ids: Vec<String> = claims(&cluster.client)
        .await
        .iter()
        .filter_map(|c| c.provider_id().map(str::to_string))
        .collect();
    for i in cluster.cloud.running_instances() {
        let id = &i.instance.provider_id;
        assert!(ids.contains(id), "orphan instance {id}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cron_budget_window_blocks_while_it_is_open_and_releases_when_it_closes() {
    // Disruptions blocked during minutes 0-7 of every 10 (UTC), allowed in 8-9.
    let cluster = spread_cluster("[{nodes: '0', schedule: '*/10 * * * *', duration: 8m}]", 3).await;
    let client = cluster.client.clone();
    scale(&client, "spread", 1).await;
    wait_for("the scale-down", Duration::from_secs(30), || async {
        app_pods(&client, "spread").await.len() == 1
    })
    .await;
    let secs = |c: &karp_operator::runtime::clock::Clock| {
        c.now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // To 30 s into the next blocked window.
    let now = secs(cluster.clock());
    let to = (now / 600 + 1) * 600 + 30;
    cluster.clock().advance(Duration::from_secs(to - now));
    // Six minutes inside the window: nothing goes.
    for _ in 0..72 {
        cluster.clock().advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        claims(&client).await.len(),
        3,
        "disrupted inside the blocked window"
    );
    assert_eq!(
        cluster.metrics.gauge(
            "karpenter_nodepools_allowed_disruptions",
            &[("nodepool", "od"), ("reason", "Empty")]
        ),
        Some(0.0)
    );
    // Advance into the open minutes; the empty nodes go there (and only there).
    let now = secs(cluster.clock());
    let open = (now / 600) * 600 + 8 * 60 + 5;
    cluster.clock().advance(Duration::from_secs(open - now));
    let mut gone_at = None;
    for _ in 0..60 {
        let live = claims(&client)
            .await
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .count();
        if live < 3 && gone_at.is_none() {
            gone_at = Some(secs(cluster.clock()) % 600);
        }
        if live == 1 {
            break;
        }
        cluster.clock().advance(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at = gone_at.expect("the empty nodes were deleted in the open minutes");
    assert!(
        (480..600).contains(&at),
        "deleted at second {at} of the 10-minute cycle"
    );
    wait_for("one node left", Duration::from_secs(30), || async {
        claims(&client).await.len() == 1
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cloud_provider_drift_reason_drifts_the_claim_and_it_is_replaced() {
    let cluster = spread_cluster("[{nodes: '100%'}]", 2).await;
    let client = cluster.client.clone();
    let victim = claims(&client).await.remove(0);
    let name = victim.metadata.name.clone().unwrap();
    cluster
        .cloud
        .mark_drifted(victim.provider_id().unwrap(), "AMIDrift");
    let api = Api::<NodeClaim>::all(client.clone());
    wait_for("Drifted=AMIDrift", Duration::from_secs(20), || async {
        api.get(&name).await.is_ok_and(|c| {
            c.condition("Drifted")
                .is_some_and(|d| d.status == "True" && d.reason == "AMIDrift")
        }) || api.get_opt(&name).await.ok().flatten().is_none()
    })
    .await;
    advance_until(
        &cluster,
        Duration::from_secs(5),
        Duration::from_secs(90),
        "the drifted claim replaced",
        || async {
            let cs = claims(&client).await;
            cs.len() == 2
                && cs.iter().all(|c| {
                    c.metadata.name.as_deref() != Some(name.as_str()) && c.is_true("Initialized")
                })
                && running_count(&client, "spread").await == 2
        },
        || async {},
    )
    .await;
    assert!(
        cluster.metrics.counter(
            "karpenter_voluntary_disruption_decisions_total",
            &[
                ("decision", "replace"),
                ("reason", "drifted"),
                ("consolidation_type", "")
            ]
        ) >= 1.0
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_balanced_pool_scores_its_moves() {
    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    let pool = od_pool("[{nodes: '100%'}]").replace(
        "consolidationPolicy: WhenEmptyOrUnderutilized",
        "consolidationPolicy: Balanced",
    );
    assert!(pool.contains("Balanced"));
    cluster.apply_yaml(&pool).unwrap();
    cluster
        .apply_yaml(&spread_deployment("spread", 3, "500m"))
        .unwrap();
    let client = cluster.client.clone();
    wait_for("spread running", Duration::from_secs(60), || async {
        running_count(&client, "spread").await == 3
    })
    .await;
    scale(&client, "spread", 1).await;
    settle(&cluster, || async {}).await;
    assert_eq!(claims(&client).await.len(), 1);
    let text = cluster.metrics.render();
    assert!(
        text.contains("karpenter_consolidation_score_count{decision=\"approved\",nodepool=\"od\",policy=\"Balanced\"}"),
        "{text}"
    );
    let approved = events(&client).await;
    assert!(
        approved
            .iter()
            .any(|(r, _, note)| r == "ConsolidationApproved"
                && note.contains("consolidationThreshold: 2")),
        "{approved:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_do_not_disrupt_duration_runs_from_the_pod_start_on_the_shared_clock() {
    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    let client = cluster.client.clone();
    cluster.apply_yaml(&od_pool("[{nodes: '100%'}]")).unwrap();
    // The kubelet stamps pod start times from the same clock: an hour ahead of wall time.
    cluster.clock().advance(Duration::from_secs(3600));
    let pinned = deployment("pinned", 4, "1500m").replace(
        "    metadata: {labels: {app: pinned}}",
        "    metadata: {labels: {app: pinned}, annotations: {karpenter.sh/do-not-disrupt: 10m}}",
    );
    assert!(pinned.contains("do-not-disrupt: 10m"));
    cluster.apply_yaml(&pinned).unwrap();
    wait_for("pinned running", Duration::from_secs(60), || async {
        running_count(&client, "pinned").await == 4
    })
    .await;
    let pod = app_pods(&client, "pinned").await.remove(0);
    let start = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap();
    let start = std::time::SystemTime::from(start.0);
    let ahead = start
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        ahead > Duration::from_secs(3000),
        "startTime on the clock: {ahead:?} ahead"
    );
    scale(&client, "pinned", 1).await;
    wait_for("the scale-down", Duration::from_secs(30), || async {
        app_pods(&client, "pinned").await.len() == 1
    })
    .await;
    let node = nodes_of(&client, "pinned").await.remove(0);
    // Five minutes: the pod's 10m window still runs, its node stays.
    for _ in 0..60 {
        cluster.clock().advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(claim_nodes(&client).await.contains(&node));
    assert_eq!(
        nodes_of(&client, "pinned").await,
        std::slice::from_ref(&node)
    );
    let blocked = events(&client).await;
    assert!(
        blocked
            .iter()
            .any(|(_, o, note)| o == &format!("Node/{node}") && note.contains("do-not-disrupt")),
        "{blocked:?}"
    );
    cluster.clock().advance(Duration::from_secs(360));
    settle(&cluster, || async {}).await;
    let recorded = events(&client).await;
    let last = recorded
        .iter()
        .rfind(|(r, o, _)| o == &format!("Node/{node}") && r != "Nominated")
        .cloned();
    // Past the window the node is an ordinary candidate again, and underutilized: replaced.
    assert!(
        !claim_nodes(&client).await.contains(&node),
        "{node} kept; last event {last:?}"
    );
    assert_eq!(running_count(&client, "pinned").await, 1);
    cluster.shutdown().await;
}

// ---- the MILP packer in the operator -------------------------------------------------------------

fn trace_sample() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/alibaba-v2017-60.yaml"),
    )
    .unwrap()
}

/// The trace sample on pool `od` provisioned with `solver`; the cluster once every pod runs.
async fn provisioned_with(
    solver: karp_operator::controllers::provisioner::Solver,
    prepare: impl FnOnce(&EmbeddedCluster),
) -> EmbeddedCluster {
    let mut options = EmbeddedOptions::fast();
    options.operator.solver.solver = solver;
    // Consolidation would blur the comparison of what provisioning launched.
    options.operator.disruption.enabled = false;
    let cluster = EmbeddedCluster::start(options).await.unwrap();
    prepare(&cluster);
    // All 60 pods pending before the pool exists, so both solvers plan them as one batch (on a
    // loaded machine the workload controllers may otherwise spread them over several).
    cluster.apply_yaml(&trace_sample()).unwrap();
    let client = cluster.client.clone();
    wait_for("60 trace pods created", Duration::from_secs(30), || async {
        Api::<Pod>::namespaced(client.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            == 60
    })
    .await;
    cluster.apply_yaml(&od_pool("[{nodes: '100%'}]")).unwrap();
    wait_for("60 trace pods running", Duration::from_secs(90), || async {
        let pods = Api::<Pod>::namespaced(client.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        pods.len() == 60 && pods.iter().all(running)
    })
    .await;
    wait_for(
        "every claim initialized",
        Duration::from_secs(30),
        || async {
            claims(&client)
                .await
                .iter()
                .all(|c| c.is_true("Initialized"))
        },
    )
    .await;
    cluster
}

/// Independent check of every node's bound pods against its allocatable (CPU and memory) and of
/// every pod's placement against its node's taints.
async fn assert_placements(client: &kube::Client) {
    assert_capacity(client).await;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for n in &nodes {
        let name = n.metadata.name.clone().unwrap();
        let alloc = n.status.as_ref().unwrap().allocatable.clone().unwrap();
        let mem: karp_core::resources::Quantity = alloc["memory"].0.parse().unwrap();
        let mut used = 0i64;
        for p in pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
        {
            for c in &p.spec.as_ref().unwrap().containers {
                if let Some(q) = c
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("memory"))
                {
                    let q: karp_core::resources::Quantity = q.0.parse().unwrap();
                    used += q.millis_ceil() / 1000;
                }
            }
        }
        assert!(
            used <= mem.millis_ceil() / 1000,
            "{name}: {used} bytes requested > {mem} allocatable"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn milp_provisions_a_trace_sample_for_less_than_ffd_and_records_its_bound() {
    use karp_operator::controllers::provisioner::Solver;
    let ffd = provisioned_with(Solver::Ffd, |_| {}).await;
    assert_placements(&ffd.client).await;
    let ffd_cost = cost(&ffd).await;
    ffd.shutdown().await;
    let milp = provisioned_with(Solver::Milp, |_| {}).await;
    assert_placements(&milp.client).await;
    let milp_cost = cost(&milp).await;
    eprintln!("trace sample: ffd ${ffd_cost:.4}/h, milp ${milp_cost:.4}/h");
    assert!(
        milp_cost < ffd_cost * 0.95,
        "milp ${milp_cost:.4}/h is not clearly below ffd ${ffd_cost:.4}/h"
    );
    let m = &milp.metrics;
    assert!(m.counter("karp_provisioning_batches_total", &[("solver", "milp")]) >= 1.0);
    let planned = m
        .gauge("karp_provisioning_cost_per_hour", &[("solver", "milp")])
        .expect("batch cost recorded");
    let bound = m
        .gauge(
            "karp_provisioning_lower_bound_per_hour",
            &[("solver", "milp")],
        )
        .expect("batch bound recorded");
    // The gauges hold the last batch that planned claims: the first (all 60 pods), or a later
    // one for pods the kube-scheduler placed elsewhere than planned, whose bound may be 0 when
    // in-flight capacity could hold them.
    assert!(
        planned > 0.0 && (0.0..=planned + 1e-9).contains(&bound),
        "bound {bound} outside [0, cost {planned}]"
    );
    milp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_milp_claim_whose_chosen_offering_is_short_launches_on_a_fallback_type_within_the_margin()
{
    use karp_operator::controllers::provisioner::Solver;
    let catalog = karp_operator::embedded::builtin_instance_types().unwrap();
    // Every offering of the cheapest compute-optimized types (which the plans of this sample
    // choose) is short at launch, but still listed as available, so plans keep choosing them.
    let favoured = ["c6a.4xlarge", "c6a.2xlarge", "c6a.xlarge", "c6a.large"];
    let cluster = provisioned_with(Solver::Milp, |c| {
        for t in favoured {
            let it = catalog.iter().find(|i| i.name == t).unwrap();
            for o in &it.offerings {
                c.cloud.inject_shortage(t, &o.zone, &o.capacity_type);
            }
        }
    })
    .await;
    assert_placements(&cluster.client).await;
    let price_of = |t: &str, ct: &str| {
        catalog
            .iter()
            .find(|i| i.name == t)
            .and_then(|i| {
                i.offerings
                    .iter()
                    .filter(|o| o.capacity_type == ct)
                    .map(|o| o.price)
                    .reduce(f64::min)
            })
            .unwrap_or(f64::INFINITY)
    };
    let mut fell_back = 0;
    for c in claims(&cluster.client).await {
        let labels = c.metadata.labels.clone().unwrap_or_default();
        let launched = labels["node.kubernetes.io/instance-type"].clone();
        let ct = labels["karpenter.sh/capacity-type"].clone();
        let options: Vec<String> = c
            .spec
            .requirements
            .iter()
            .find(|r| r.key == "node.kubernetes.io/instance-type")
            .map(|r| r.values.iter().map(|v| v.0.clone()).collect())
            .unwrap_or_default();
        assert!(
            !favoured.contains(&launched.as_str()),
            "{launched} was short"
        );
        assert!(options.contains(&launched));
        // The planned (cheapest) option, short or not, and the launched one within 10 %.
        let planned = options
            .iter()
            .map(|t| price_of(t, &ct))
            .fold(f64::INFINITY, f64::min);
        let paid = price_of(&launched, &ct);
        assert!(
            paid <= planned * 1.10 + 1e-9,
            "{launched} at {paid} > 110 % of the planned {planned}"
        );
        // The claim's chosen (cheapest) option was short: it launched on a fallback.
        let chosen = options
            .iter()
            .min_by(|a, b| price_of(a, &ct).total_cmp(&price_of(b, &ct)).then(a.cmp(b)));
        if chosen.is_some_and(|t| favoured.contains(&t.as_str())) {
            fell_back += 1;
        }
    }
    assert!(fell_back >= 1, "no claim's chosen offering was short");
    cluster.shutdown().await;
}

/// A pod owned by a DaemonSet, bound to `node` (the sim has no DaemonSet controller).
fn daemon_pod(node: &str) -> String {
    format!(
        r"
apiVersion: v1
kind: Pod
metadata:
  name: agent-{node}
  namespace: default
  labels: {{app: agent}}
  ownerReferences: [{{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: 5f0c1e4e-0000-4000-8000-000000000001, controller: true}}]
spec:
  nodeName: {node}
  tolerations: [{{operator: Exists}}]
  containers: [{{name: c, image: pause, resources: {{requests: {{cpu: 10m}}}}}}]
"
    )
}

/// The node's taint keys and whether it is unschedulable.
async fn node_marks(client: &kube::Client, name: &str) -> (Vec<String>, bool) {
    let n = Api::<Node>::all(client.clone()).get(name).await.unwrap();
    let spec = n.spec.unwrap_or_default();
    (
        spec.taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.key)
            .collect(),
        spec.unschedulable.unwrap_or(false),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_imds_monitor_drains_its_node_through_the_pdb_and_uncordons_a_canceled_event() {
    use karp_aws::imds::ImdsPoller;
    use karp_aws::imds_emulator::ImdsEmulator;
    use karp_operator::commands::imds_monitor::{run_monitor, MonitorOptions};

    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    // Budgets of 0: karp itself moves nothing; every eviction is the monitor's.
    cluster.apply_yaml(&od_pool("[{nodes: '0'}]")).unwrap();
    cluster.apply_yaml(&deployment("web", 4, "500m")).unwrap();
    cluster
        .apply_yaml(&pdb_yaml("web", "maxUnavailable", 1))
        .unwrap();
    let client = cluster.client.clone();
    wait_for("4 running web pods", Duration::from_secs(60), || async {
        let pods = app_pods(&client, "web").await;
        pods.len() == 4 && pods.iter().all(running)
    })
    .await;
    // The node with the most web pods is the monitored one.
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in app_pods(&client, "web").await {
        *per_node
            .entry(p.spec.unwrap().node_name.unwrap())
            .or_default() += 1;
    }
    let node = per_node
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(n, _)| n.clone())
        .unwrap();
    cluster.apply_yaml(&daemon_pod(&node)).unwrap();

    let imds = ImdsEmulator::start().await.unwrap();
    let poller = ImdsPoller::new(Some(imds.url()), Duration::from_secs(21_600)).unwrap();
    let missing = run_monitor(
        client.clone(),
        ImdsPoller::new(Some(imds.url()), Duration::from_secs(60)).unwrap(),
        MonitorOptions::for_node("no-such-node"),
        std::future::pending(),
    )
    .await;
    assert!(
        matches!(
            missing,
            Err(karp_operator::commands::imds_monitor::MonitorError::NodeNotFound(_))
        ),
        "{missing:?}"
    );
    let mut options = MonitorOptions::for_node(&node);
    options.poll = Duration::from_millis(200);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor = tokio::spawn(run_monitor(client.clone(), poller, options, async {
        let _ = stopped.await;
    }));

    // A scheduled maintenance event cordons and taints the node; EC2 canceling it undoes both.
    imds.set_scheduled_events(Some(
        r#"[{"Code": "system-reboot", "EventId": "instance-event-1", "State": "active",
             "NotBefore": "21 Jan 2027 09:00:43 GMT", "Description": "scheduled reboot"}]"#,
    ));
    wait_for(
        "the node cordoned for maintenance",
        Duration::from_secs(20),
        || async {
            let (taints, unschedulable) = node_marks(&client, &node).await;
            unschedulable && taints.iter().any(|t| t == "karp.dev/scheduled-maintenance")
        },
    )
    .await;
    imds.set_scheduled_events(Some(
        r#"[{"Code": "system-reboot", "EventId": "instance-event-1", "State": "canceled",
             "NotBefore": "21 Jan 2027 09:00:43 GMT", "Description": "Canceled - scheduled reboot"}]"#,
    ));
    wait_for("the node uncordoned", Duration::from_secs(20), || async {
        let (taints, unschedulable) = node_marks(&client, &node).await;
        !unschedulable && !taints.iter().any(|t| t.starts_with("karp.dev/"))
    })
    .await;
    wait_running(&client, "web", 4, "every web pod running again").await;

    // A rebalance recommendation is an Event only by default: nothing is cordoned.
    imds.set_rebalance(Some(r#"{"noticeTime": "2026-12-07T08:17:00Z"}"#));
    wait_for(
        "the rebalance recorded",
        Duration::from_secs(20),
        || async {
            common::described_events(&client, Some("Node"), &node)
                .await
                .iter()
                .any(|r| r.starts_with("RebalanceRecommendation:"))
        },
    )
    .await;
    let (taints, unschedulable) = node_marks(&client, &node).await;
    assert!(
        !unschedulable && !taints.iter().any(|t| t.starts_with("karp.dev/")),
        "{taints:?}"
    );

    // A spot interruption notice: cordoned, tainted, drained one pod at a time (the PDB allows
    // one unavailable), the DaemonSet pod left alone, the pods running elsewhere.
    imds.set_spot_action(Some(
        r#"{"action": "terminate", "time": "2026-12-07T08:22:00Z"}"#,
    ));
    let start = Instant::now();
    let mut fewest = 4;
    loop {
        let pods = app_pods(&client, "web").await;
        let up = pods
            .iter()
            .filter(|p| running(p) && p.metadata.deletion_timestamp.is_none())
            .count();
        fewest = fewest.min(up);
        let on_node = pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
            .count();
        if on_node == 0 && up == 4 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "drain not done: {on_node} web pods on {node}, {up} up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fewest >= 3,
        "the PDB allows one unavailable pod, saw {fewest} up"
    );
    let (taints, unschedulable) = node_marks(&client, &node).await;
    assert!(
        unschedulable && taints.iter().any(|t| t == "karp.dev/spot-itn"),
        "{taints:?}"
    );
    let agent = Api::<Pod>::namespaced(client.clone(), "default")
        .get(&format!("agent-{node}"))
        .await
        .unwrap();
    assert!(
        agent.metadata.deletion_timestamp.is_none(),
        "DaemonSet pods stay"
    );
    let reasons = common::described_events(&client, Some("Node"), &node).await;
    for want in [
        "ScheduledEvent",
        "ScheduledEventCanceled",
        "SpotInterruption",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(&format!("{want}:"))),
            "{want} in {reasons:?}"
        );
    }
    let _ = stop.send(());
    monitor.await.unwrap().unwrap();
    cluster.shutdown().await;
}

/// A static NodePool of `replicas` on-demand 2–4 CPU nodes (room for one more under
/// `limits.nodes`), one drift at a time.
fn static_pool(replicas: u32) -> String {
    let class = seed_node_class();
    format!(
        r#"{class}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: fixed}}
spec:
  replicas: {replicas}
  limits: {{nodes: {limit}}}
  template:
    spec:
      requirements:
        - {{key: karpenter.k8s.aws/instance-category, operator: In, values: ["c", "m"]}}
        - {{key: karpenter.k8s.aws/instance-cpu, operator: In, values: ["2", "4"]}}
        - {{key: kubernetes.io/arch, operator: In, values: ["amd64"]}}
        - {{key: karpenter.sh/capacity-type, operator: In, values: ["on-demand"]}}
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: karpenter-nodeclass-al2023}}
      expireAfter: Never
  disruption:
    consolidateAfter: 0s
    budgets: [{{nodes: "1"}}]
"#,
        limit = replicas + 1
    )
}

/// `kubectl scale nodepool NAME --replicas=N`: a merge patch of the scale subresource.
async fn scale_pool(
    pools: &Api<karp_operator::api::nodepool::NodePool>,
    name: &str,
    replicas: u32,
) {
    pools
        .patch_scale(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// The live (not deleting) NodeClaims of `pool` that have launched.
async fn pool_claims(client: &kube::Client, pool: &str) -> Vec<NodeClaim> {
    claims(client)
        .await
        .into_iter()
        .filter(|c| c.nodepool() == Some(pool) && c.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_static_nodepool_keeps_its_replicas_follows_kubectl_scale_and_replaces_drift_one_for_one()
{
    let cluster = EmbeddedCluster::start(EmbeddedOptions::fast())
        .await
        .unwrap();
    let client = cluster.client.clone();
    cluster.apply_yaml(&static_pool(3)).unwrap();
    wait_for(
        "3 initialized static nodes",
        Duration::from_secs(60),
        || async {
            let cs = pool_claims(&client, "fixed").await;
            cs.len() == 3 && cs.iter().all(|c| c.is_true("Initialized"))
        },
    )
    .await;
    // Pods land on the static nodes; karp launches nothing for them, and removes nothing empty.
    cluster.apply_yaml(&deployment("web", 3, "500m")).unwrap();
    wait_running(&client, "web", 3, "3 running web pods").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        claims(&client).await.len(),
        3,
        "no claim for pods, none removed"
    );

    // `kubectl scale nodepool fixed --replicas=1`: the scale subresource; the pods move onto
    // the node that stays.
    let pools: Api<karp_operator::api::nodepool::NodePool> = Api::all(client.clone());
    scale_pool(&pools, "fixed", 1).await;
    wait_for("one static node left", Duration::from_secs(60), || async {
        claims(&client).await.len() == 1
    })
    .await;
    wait_running(&client, "web", 3, "the web pods running again").await;
    let scale = pools.get_scale("fixed").await.unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    scale_pool(&pools, "fixed", 2).await;
    wait_for("two static nodes", Duration::from_secs(60), || async {
        let cs = pool_claims(&client, "fixed").await;
        cs.len() == 2 && cs.iter().all(|c| c.is_true("Initialized"))
    })
    .await;

    // A template change drifts both; static drift replaces them one at a time (budget 1), never
    // above limits.nodes (3), and ends with exactly two nodes of the new template.
    let before: Vec<String> = pool_claims(&client, "fixed")
        .await
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    patch_pool(
        &client,
        "fixed",
        serde_json::json!({"spec": {"template": {"metadata": {"labels": {"generation": "two"}}}}}),
    )
    .await;
    let start = Instant::now();
    let mut most = 0;
    loop {
        let all = claims(&client).await;
        most = most.max(all.len());
        let live = pool_claims(&client, "fixed").await;
        let replaced = live.len() == 2
            && all.len() == 2
            && live.iter().all(|c| {
                c.is_true("Initialized")
                    && !before.contains(c.metadata.name.as_ref().unwrap())
                    && c.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("generation"))
                        .map(String::as_str)
                        == Some("two")
            });
        if replaced {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "static drift not done: {:?}",
            all.iter().map(|c| &c.metadata.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most <= 3, "limits.nodes is 3, saw {most} claims");
    wait_running(&client, "web", 3, "the web pods running").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_imds_monitor_cordons_and_uncordons_once_the_api_server_answers_again() {
    use karp_aws::imds::ImdsPoller;
    use karp_aws::imds_emulator::ImdsEmulator;
    use karp_operator::commands::imds_monitor::{run_monitor, MonitorOptions};
    use karp_operator::embedded::faults::{ApiFaultState, ApiFaults, FaultyApi};

    let cluster = running_app(&seed(), "web", 1, "500m").await;
    let node = app_pods(&cluster.client, "web").await[0]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap();
    // The monitor's API connection fails every request while the switch is on.
    let faults = std::sync::Arc::new(ApiFaultState::default());
    faults.set_enabled(false);
    let every_request_fails = ApiFaults {
        server_errors: 1.0,
        conflicts: 0.0,
        dropped_watches: 0.0,
        seed: 1,
    };
    let client = kube::Client::new(
        FaultyApi::new(
            cluster.server.clone(),
            every_request_fails,
            std::sync::Arc::clone(&faults),
        ),
        "default",
    );
    let imds = ImdsEmulator::start().await.unwrap();
    let poller = ImdsPoller::new(Some(imds.url()), Duration::from_secs(21_600)).unwrap();
    let mut options = MonitorOptions::for_node(&node);
    options.poll = Duration::from_millis(100);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor = tokio::spawn(run_monitor(client, poller, options, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    faults.set_enabled(true);
    let event = |state: &str| {
        format!(
            r#"[{{"Code": "system-reboot", "EventId": "instance-event-9", "State": "{state}", "NotBefore": "21 Jan 2027 09:00:43 GMT", "Description": "scheduled reboot"}}]"#
        )
    };
    imds.set_scheduled_events(Some(&event("active")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (taints, unschedulable) = node_marks(&cluster.client, &node).await;
    assert!(
        !unschedulable && !taints.iter().any(|t| t.starts_with("karp.dev/")),
        "no write got through: {taints:?}"
    );
    faults.set_enabled(false);
    wait_for(
        "the node cordoned and tainted after the outage",
        Duration::from_secs(10),
        || async {
            let (taints, unschedulable) = node_marks(&cluster.client, &node).await;
            unschedulable && taints.iter().any(|t| t == "karp.dev/scheduled-maintenance")
        },
    )
    .await;
    // The cancellation arrives during another outage: the node is uncordoned once it is over.
    faults.set_enabled(true);
    imds.set_scheduled_events(Some(&event("canceled")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(node_marks(&cluster.client, &node).await.1, "still cordoned");
    faults.set_enabled(false);
    wait_for(
        "the node uncordoned after the outage",
        Duration::from_secs(10),
        || async {
            let (taints, unschedulable) = node_marks(&cluster.client, &node).await;
            !unschedulable && !taints.iter().any(|t| t.starts_with("karp.dev/"))
        },
    )
    .await;
    let _ = stop.send(());
    monitor.await.unwrap().unwrap();
    cluster.shutdown().await;
}
