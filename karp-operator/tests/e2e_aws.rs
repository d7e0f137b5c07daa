//! End to end on the embedded cluster with karp-aws on moto_server: real EC2 API calls through
//! the SDK, simulated kubelets registering a Node per EC2 instance, the real controllers.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use karp_aws::moto::MotoServer;
use karp_aws::{AwsClients, AwsSettings};
use karp_operator::api::nodeclaim::NodeClaim;
use karp_operator::controllers::interruption::InterruptionOptions;
use karp_operator::embedded::aws::EmbeddedAwsCluster;
use karp_operator::embedded::EmbeddedOptions;
use kube::api::{Api, DeleteParams, ListParams};

const CLUSTER: &str = "e2eaws";

mod common;

fn manifests() -> String {
    common::aws_pool(CLUSTER)
        + "---\n"
        + r"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: c
          image: pause
          resources: {requests: {cpu: '1', memory: 1Gi}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: web}}
"
}

/// moto_server with its account seeded for [`CLUSTER`] (`seed` varies the addresses), the
/// settings of karp-aws on it and its clients.
async fn seeded_moto(seed: u8) -> (MotoServer, AwsSettings, AwsClients) {
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut settings = AwsSettings::for_moto("us-east-1", CLUSTER, &moto.url());
    settings.ssm_parameter_prefix = format!("/karp-test/{CLUSTER}");
    let clients = AwsClients::load(&settings).await;
    karp_aws::moto::seed_cluster(&clients, &settings, seed)
        .await
        .unwrap();
    (moto, settings, clients)
}

/// Instances in moto tagged with `claim` that are not terminated.
async fn live_instances_of(clients: &AwsClients, claim: &str) -> usize {
    running_instances(clients)
        .await
        .iter()
        .filter(|(_, owner)| owner.as_deref() == Some(claim))
        .count()
}

fn running(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

async fn wait<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ec2_instances_on_moto_become_nodes_and_are_removed_with_their_claims() {
    let (_moto, mut settings, clients) = seeded_moto(31).await;
    settings.cluster_endpoint = "https://api.example".into();
    let mut cluster = EmbeddedAwsCluster::start(EmbeddedOptions::fast(), settings)
        .await
        .unwrap();
    let client = cluster.client.clone();
    cluster.apply_yaml(&manifests()).unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait("3 running pods on EC2 nodes", || async {
        let p = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        p.len() == 3 && p.iter().all(running)
    })
    .await;
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let cs = claims.list(&ListParams::default()).await.unwrap().items;
    assert!(!cs.is_empty());
    for c in &cs {
        let name = c.metadata.name.clone().unwrap();
        // Pods may be bound before karp marks the claim initialized (as on a real cluster).
        wait(&format!("{name} initialized"), || async {
            claims
                .get(&name)
                .await
                .is_ok_and(|c| c.is_true("Initialized"))
        })
        .await;
        let pid = c.provider_id().unwrap();
        assert!(pid.starts_with("aws:///us-east-1"), "{pid}");
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let node = nodes
            .iter()
            .find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(pid))
            .expect("a node per claim");
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("karpenter.sh/nodepool").map(String::as_str),
            Some("default")
        );
        assert_eq!(
            labels.get("karpenter.sh/initialized").map(String::as_str),
            Some("true")
        );
        let t = labels.get("node.kubernetes.io/instance-type").unwrap();
        assert!(t == "m5.large" || t == "m5.xlarge", "{t}");
    }
    // The instances are real EC2 instances in moto, tagged with their claims.
    let id = cs[0]
        .provider_id()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let described = clients
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let inst = &described.reservations()[0].instances()[0];
    assert_eq!(
        karp_aws::describe::tag(inst.tags(), "karpenter.sh/nodeclaim"),
        cs[0].metadata.name.as_deref()
    );

    // Deleting a claim drains its node and terminates its instance; the pods run again.
    let victim = cs[0].metadata.name.clone().unwrap();
    claims
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    wait("the claim gone and the pods running again", || async {
        let gone = claims.get_opt(&victim).await.unwrap().is_none();
        let p = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        gone && p.len() == 3 && p.iter().all(running)
    })
    .await;
    let state = clients
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string());
    assert!(
        matches!(state.as_deref(), Some("terminated" | "shutting-down")),
        "{state:?}"
    );

    // Restart mid-launch: the operator dies after CreateFleet returned but before it wrote the
    // claim's status; on restart it adopts the instance (no second launch), and an instance whose
    // claim never reached the API is garbage-collected.
    cluster.stop_operator().await;
    let claim: NodeClaim = serde_yaml::from_str(
        r"
apiVersion: karpenter.sh/v1
kind: NodeClaim
metadata:
  name: default-crash
  labels: {karpenter.sh/nodepool: default}
spec:
  nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
  requirements:
    - {key: node.kubernetes.io/instance-type, operator: In, values: [m5.large]}
    - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
",
    )
    .unwrap();
    let created = claims
        .create(&kube::api::PostParams::default(), &claim)
        .await
        .unwrap();
    let mut request = karp_operator::controllers::lifecycle::launch_request(&created);
    let adopted = karp_core::cloud::CloudProvider::create(cluster.provider.as_ref(), &request)
        .await
        .unwrap();
    request.nodeclaim = "never-created".into();
    let orphan = karp_core::cloud::CloudProvider::create(cluster.provider.as_ref(), &request)
        .await
        .unwrap();
    cluster.restart_operator().await.unwrap();
    wait(
        "the crashed claim to register with its instance",
        || async {
            claims.get("default-crash").await.is_ok_and(|c| {
                c.is_true("Registered") && c.provider_id() == Some(adopted.provider_id.as_str())
            })
        },
    )
    .await;
    assert_eq!(
        live_instances_of(&clients, "default-crash").await,
        1,
        "no second launch"
    );
    wait("the orphan instance to be terminated", || async {
        live_instances_of(&clients, "never-created").await == 0
    })
    .await;
    let _ = orphan;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_karp_aws_elect_one_leader_and_fail_over() {
    let (_moto, settings, _clients) = seeded_moto(32).await;
    let mut options = EmbeddedOptions::fast();
    options.start_operator = false;
    let cluster = std::sync::Arc::new(EmbeddedAwsCluster::start(options, settings).await.unwrap());
    cluster
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: karp}\n")
        .unwrap();
    // The node class and pool only (the Deployments come from the shared scenario).
    let pool: String = manifests()
        .split("\n---\n")
        .take(2)
        .collect::<Vec<_>>()
        .join("\n---\n");
    cluster.apply_yaml(&pool).unwrap();
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
async fn a_shrinking_deployment_on_karp_aws_is_consolidated_onto_a_cheaper_instance() {
    common::trace();
    let (_moto, settings, clients) = seeded_moto(33).await;
    let cluster = EmbeddedAwsCluster::start(EmbeddedOptions::fast(), settings)
        .await
        .unwrap();
    let client = cluster.client.clone();
    let pool = common::aws_pool(CLUSTER)
        + "  disruption: {consolidateAfter: 30s, budgets: [{nodes: '100%'}]}\n";
    cluster.apply_yaml(&pool).unwrap();
    cluster
        .apply_yaml(&common::deployment("shrinky", 4, "1500m"))
        .unwrap();
    cluster
        .apply_yaml(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: shrinky, namespace: default}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: shrinky}}\n",
        )
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running_shrinky = || async {
        pods.list(&ListParams::default().labels("app=shrinky"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| running(p) && p.metadata.deletion_timestamp.is_none())
            .count()
    };
    wait("4 running pods", || async { running_shrinky().await == 4 }).await;
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let before = claims.list(&ListParams::default()).await.unwrap().items;
    assert!(before.len() >= 2, "{} claims", before.len());
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "default")
        .patch(
            "shrinky",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    // Advance the operator's clock past consolidateAfter and the validation delay, step by
    // step, until one m5.large is left (the PDB allows the one eviction the move needs; a
    // minAvailable: 1 budget would block it, as in Karpenter).
    let start = Instant::now();
    loop {
        let cs = claims.list(&ListParams::default()).await.unwrap().items;
        let n = running_shrinky().await;
        let types: Vec<String> = cs
            .iter()
            .filter_map(|c| {
                c.metadata
                    .labels
                    .as_ref()?
                    .get("node.kubernetes.io/instance-type")
                    .cloned()
            })
            .collect();
        if cs.len() == 1 && types == ["m5.large"] && cs[0].is_true("Initialized") && n == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not consolidated: {types:?}, {n} running"
        );
        cluster.clock().advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every instance karp launched is tracked by the claim left or terminated.
    let left = claims.list(&ListParams::default()).await.unwrap().items;
    let name = left[0].metadata.name.clone().unwrap();
    for c in &before {
        let n = c.metadata.name.clone().unwrap();
        if n != name {
            wait(&format!("{n}'s instance terminated"), || async {
                live_instances_of(&clients, &n).await == 0
            })
            .await;
        }
    }
    assert_eq!(live_instances_of(&clients, &name).await, 1);
    assert!(
        cluster.metrics.counter(
            "karpenter_voluntary_disruption_decisions_total",
            &[
                ("decision", "delete"),
                ("reason", "empty"),
                ("consolidation_type", "empty")
            ]
        ) + cluster.metrics.counter(
            "karpenter_voluntary_disruption_decisions_total",
            &[
                ("decision", "replace"),
                ("reason", "underutilized"),
                ("consolidation_type", "single")
            ]
        ) >= 1.0
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_restart_mid_command_on_karp_aws_leaves_no_tainted_node_and_no_orphan_instance()
{
    let (_moto, settings, clients) = seeded_moto(34).await;
    let mut cluster = EmbeddedAwsCluster::start(EmbeddedOptions::fast(), settings)
        .await
        .unwrap();
    let pool = common::aws_pool(CLUSTER)
        + "  disruption: {consolidateAfter: 30s, budgets: [{nodes: '100%'}]}\n";
    common::restart_mid_command(&mut cluster, &pool).await;
    // Every live EC2 instance is some claim's (garbage collection has had its grace).
    let claims: Vec<String> = common::all_claims(&cluster.client)
        .await
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    for (id, owner) in running_instances(&clients).await {
        assert!(
            owner.as_ref().is_some_and(|o| claims.contains(o)),
            "instance {id} ({owner:?}) is no claim's"
        );
    }
    cluster.shutdown().await;
}

/// The trace sample on karp-aws + moto with `solver`, on on-demand c5/m5 (2–16 vCPU); the
/// cluster's cost per hour (each claim at its launched offering's price in karp-aws's catalog)
/// once every pod runs.
async fn trace_on_moto(
    solver: karp_operator::controllers::provisioner::Solver,
    seed: u8,
) -> (f64, usize) {
    let (_moto, settings, _clients) = seeded_moto(seed).await;
    let mut options = EmbeddedOptions::fast();
    options.operator.solver.solver = solver;
    options.operator.disruption.enabled = false;
    let cluster = EmbeddedAwsCluster::start(options, settings).await.unwrap();
    let pool = common::aws_pool(CLUSTER).replace(
        "{key: node.kubernetes.io/instance-type, operator: In, values: [m5.large, m5.xlarge]}",
        "{key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m]}\n        - {key: karpenter.k8s.aws/instance-cpu, operator: In, values: ['2', '4', '8', '16']}\n        - {key: kubernetes.io/arch, operator: In, values: [amd64]}",
    );
    assert!(pool.contains("instance-category"));
    let trace = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/alibaba-v2017-60.yaml"),
    )
    .unwrap();
    // All 60 pods pending before the pool exists, so both solvers plan them as one batch (on a
    // loaded machine the workload controllers may otherwise spread them over several).
    cluster.apply_yaml(&trace).unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    wait("60 trace pods created", || async {
        pods.list(&ListParams::default()).await.unwrap().items.len() == 60
    })
    .await;
    cluster.apply_yaml(&pool).unwrap();
    wait("60 trace pods running on EC2 nodes", || async {
        let p = pods.list(&ListParams::default()).await.unwrap().items;
        p.len() == 60 && p.iter().all(running)
    })
    .await;
    let types = karp_core::cloud::CloudProvider::instance_types(
        cluster.provider.as_ref(),
        "default",
        Some("default"),
    )
    .await
    .unwrap();
    let claims = common::all_claims(&cluster.client).await;
    let mut total = 0.0;
    for c in &claims {
        let l = c.metadata.labels.clone().unwrap_or_default();
        let it = types
            .iter()
            .find(|t| t.name == l["node.kubernetes.io/instance-type"])
            .expect("launched type in the catalog");
        let price = it
            .offerings
            .iter()
            .find(|o| {
                o.zone == l["topology.kubernetes.io/zone"]
                    && o.capacity_type == l["karpenter.sh/capacity-type"]
            })
            .map(|o| o.price)
            .expect("launched offering priced");
        total += price;
    }
    let n = claims.len();
    eprintln!(
        "{solver:?}: batches {} planned {:?} bound {:?} fallbacks {}",
        cluster
            .metrics
            .counter("karp_provisioning_batches_total", &[("solver", "milp")]),
        cluster
            .metrics
            .gauge("karp_provisioning_cost_per_hour", &[("solver", "milp")]),
        cluster.metrics.gauge(
            "karp_provisioning_lower_bound_per_hour",
            &[("solver", "milp")]
        ),
        cluster.metrics.counter(
            "karp_provisioning_solver_fallbacks_total",
            &[("reason", "budget")]
        ),
    );
    cluster.shutdown().await;
    (total, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn milp_on_karp_aws_provisions_the_trace_sample_for_less_than_ffd() {
    use karp_operator::controllers::provisioner::Solver;
    let (ffd, ffd_nodes) = trace_on_moto(Solver::Ffd, 35).await;
    let (milp, milp_nodes) = trace_on_moto(Solver::Milp, 36).await;
    eprintln!(
        "moto: ffd ${ffd:.4}/h on {ffd_nodes} nodes, milp ${milp:.4}/h on {milp_nodes} nodes"
    );
    assert!(milp < ffd - 1e-9, "milp ${milp:.4}/h ≥ ffd ${ffd:.4}/h");
}

// ---- the fault-injection soak --------------------------------------------------------------

fn soak_deployment(name: &str, replicas: u32, cpu: &str, pinned: bool) -> String {
    let d = common::deployment(name, replicas, cpu);
    if pinned {
        d.replace(
            &format!("    metadata: {{labels: {{app: {name}}}}}"),
            &format!(
                "    metadata: {{labels: {{app: {name}}}, annotations: {{karpenter.sh/do-not-disrupt: 'true'}}}}"
            ),
        )
    } else {
        d
    }
}

/// Uids of the pods `selector` selects, in list order.
async fn uids_of(pods: &Api<Pod>, selector: &str) -> Vec<String> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect()
}

/// Running EC2 instances in moto (by id) with their `karpenter.sh/nodeclaim` tag.
async fn running_instances(clients: &AwsClients) -> Vec<(String, Option<String>)> {
    clients
        .ec2
        .describe_instances()
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                Some("terminated" | "shutting-down")
            )
        })
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                karp_aws::describe::tag(i.tags(), "karpenter.sh/nodeclaim").map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_with_faults_leaks_nothing_and_keeps_every_budget() {
    common::trace();
    use karp_operator::embedded::faults::ApiFaults;
    let rounds: usize = std::env::var("KARP_SOAK_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let moto = MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
    let proxy = karp_aws::moto::faults::FaultProxy::start(
        &moto.url(),
        karp_aws::moto::faults::FaultPlan {
            throttle: 0.05,
            lose_create_fleet: 0.2,
            insufficient_capacity: 0.1,
            describe_lag: Duration::from_secs(3),
            seed: 11,
        },
    )
    .await
    .unwrap();
    let mut direct = AwsSettings::for_moto("us-east-1", CLUSTER, &moto.url());
    direct.ssm_parameter_prefix = format!("/karp-test/{CLUSTER}");
    let clients = AwsClients::load(&direct).await;
    karp_aws::moto::seed_cluster(&clients, &direct, 37)
        .await
        .unwrap();
    let mut faulty = direct.clone();
    faulty.endpoint_url = Some(proxy.url().to_string());
    let mut options = EmbeddedOptions::fast();
    options.api_faults = Some(ApiFaults::default());
    let mut cluster = EmbeddedAwsCluster::start(options, faulty).await.unwrap();
    let client = cluster.client.clone();
    let pool = common::aws_pool(CLUSTER).replace(
        "{key: node.kubernetes.io/instance-type, operator: In, values: [m5.large, m5.xlarge]}",
        "{key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m]}\n        - {key: karpenter.k8s.aws/instance-cpu, operator: In, values: ['2', '4', '8', '16']}\n        - {key: kubernetes.io/arch, operator: In, values: [amd64]}",
    ) + "  disruption: {consolidateAfter: 30s, budgets: [{nodes: '30%'}]}\n";
    cluster.apply_yaml(&pool).unwrap();
    for (app, field) in [("web", "maxUnavailable: 1"), ("api", "minAvailable: 50%")] {
        cluster
            .apply_yaml(&format!(
                "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: {app}, namespace: default}}\nspec:\n  {field}\n  selector: {{matchLabels: {{app: {app}}}}}\n"
            ))
            .unwrap();
    }
    cluster
        .apply_yaml(&soak_deployment("pinned", 3, "500m", true))
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut restarts = 0;
    let mut step = 0u64;
    // Scale up through 200+ pods, down, up again; the operator restarts every few seconds and the
    // clock runs ahead so consolidation acts on every scale-down.
    let phases: Vec<[u32; 3]> =
        std::iter::repeat_n([[80, 70, 60], [15, 10, 5], [40, 30, 20]], rounds)
            .flatten()
            .collect();
    for (i, sizes) in phases.iter().enumerate() {
        if (i + 1).is_multiple_of(3) {
            // Drift: a template label changes the pool's hash, so every node drifts and is
            // replaced within the budget (those holding do-not-disrupt pods stay).
            let drifted = pool.replacen(
                "  template:\n    spec:",
                &format!("  template:\n    metadata: {{labels: {{soak-phase: '{i}'}}}}\n    spec:"),
                1,
            );
            assert_ne!(drifted, pool);
            cluster.apply_yaml(&drifted).unwrap();
        }
        for (app, n) in ["web", "api", "batch"].iter().zip(sizes) {
            cluster
                .apply_yaml(&soak_deployment(app, *n, "250m", false))
                .unwrap();
        }
        let want: u32 = sizes.iter().sum::<u32>() + 3;
        let t0 = Instant::now();
        loop {
            step += 1;
            cluster.clock().advance(Duration::from_secs(5));
            if step.is_multiple_of(30) {
                cluster.stop_operator().await;
                cluster.restart_operator().await.unwrap();
                restarts += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let p = pods.list(&ListParams::default()).await.unwrap().items;
            let up = p.len() == want as usize && p.iter().all(running);
            if up && t0.elapsed() > Duration::from_secs(10) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "phase {sizes:?}: {} of {want} pods, {} running",
                p.len(),
                p.iter().filter(|x| running(x)).count()
            );
        }
    }
    let pinned_uids = uids_of(&pods, "app=pinned").await;
    // Faults off: the cluster must settle with nothing leaked.
    proxy.set_enabled(false);
    cluster.api_faults.set_enabled(false);
    common::settle(&cluster, || async {}).await;
    let claims = || async { common::all_claims(&client).await };
    let t0 = Instant::now();
    loop {
        let cs = claims().await;
        let ids: Vec<String> = cs
            .iter()
            .filter_map(|c| {
                c.provider_id()
                    .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            })
            .collect();
        let running_now = running_instances(&clients).await;
        let leaked: Vec<&(String, Option<String>)> = running_now
            .iter()
            .filter(|(id, _)| !ids.contains(id))
            .collect();
        if leaked.is_empty() && running_now.len() == cs.len() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "leaked instances: {leaked:?}; {} running for {} claims",
            running_now.len(),
            cs.len()
        );
        cluster.clock().advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every claim has a node; every pod runs; the pinned pods were never evicted or replaced.
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for c in claims().await {
        let pid = c.provider_id().expect("launched");
        assert!(
            nodes
                .iter()
                .any(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(pid)),
            "{pid} has no node"
        );
    }
    let all = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(all.iter().all(running), "not every pod runs");
    let now_pinned = uids_of(&pods, "app=pinned").await;
    assert_eq!(now_pinned, pinned_uids, "a do-not-disrupt pod was replaced");
    let evictions = cluster.server.evictions();
    let pinned_evicted = evictions
        .iter()
        .filter(|e| e.allowed && e.pod.starts_with("pinned-"))
        .count();
    assert_eq!(pinned_evicted, 0, "do-not-disrupt pods evicted");
    // Budgets apply to running pods (kube-apiserver evicts Pending, finished and terminating pods
    // without consulting them).
    for e in evictions.iter().filter(|e| e.allowed && e.budgets_apply) {
        let app = e.pod.split('-').next().unwrap_or_default();
        if app == "web" || app == "api" {
            assert_eq!(e.pdb.as_deref(), Some(app), "{e:?} bypassed its PDB");
        }
    }
    let launched = clients
        .ec2
        .describe_instances()
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum::<usize>();
    let m = &cluster.metrics;
    eprintln!(
        "soak ({rounds} round(s), {} phases, {step} clock steps of 5 s, {restarts} operator restarts): EC2 faults [{}]; API faults [{}]; instances launched {launched}, running at the end {}, claims {}; evictions allowed {}, refused {}; disruption decisions {} (drift {}); leaked 0, duplicates surviving 0, PDB bypasses 0, do-not-disrupt evictions 0",
        phases.len(),
        proxy.counts().summary(),
        cluster.api_faults.summary(),
        running_instances(&clients).await.len(),
        claims().await.len(),
        evictions.iter().filter(|e| e.allowed).count(),
        evictions.iter().filter(|e| !e.allowed).count(),
        m.render()
            .lines()
            .filter(|l| l.starts_with("karpenter_voluntary_disruption_decisions_total{"))
            .map(|l| l.rsplit(' ').next().unwrap_or("0").parse::<f64>().unwrap_or(0.0))
            .sum::<f64>(),
        m.counter(
            "karpenter_voluntary_disruption_decisions_total",
            &[("decision", "replace"), ("reason", "drifted"), ("consolidation_type", "")]
        ) + m.counter(
            "karpenter_voluntary_disruption_decisions_total",
            &[("decision", "delete"), ("reason", "drifted"), ("consolidation_type", "")]
        )
    );
    cluster.shutdown().await;
}

/// Creates the SQS queue `name`; returns its URL.
async fn create_queue(clients: &AwsClients, name: &str) -> String {
    clients
        .sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

/// Sends one raw message body to the interruption queue.
async fn send_message(clients: &AwsClients, url: &str, body: &str) {
    clients
        .sqs
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// An EventBridge message of `detail_type` about `instance` (in the shape AWS delivers).
fn ec2_message(detail_type: &str, instance: &str, zone: &str, extra: &str) -> String {
    format!(
        r#"{{"version":"0","id":"{instance}-{n}","detail-type":"{detail_type}","source":"aws.ec2","account":"123456789012","time":"2026-12-07T00:00:00Z","region":"us-east-1","resources":["arn:aws:ec2:{zone}:instance/{instance}"],"detail":{{"instance-id":"{instance}"{extra}}}}}"#,
        n = detail_type.len()
    )
}

/// `reason: message` of the Events recorded about `name` (a NodeClaim or Node).
async fn event_reasons(client: &kube::Client, name: &str) -> Vec<String> {
    common::described_events(client, None, name).await
}

/// A launched NodeClaim that is not being deleted.
async fn a_live_claim(claims: &Api<NodeClaim>) -> NodeClaim {
    claims
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|c| c.provider_id().is_some() && c.metadata.deletion_timestamp.is_none())
        .unwrap()
}

/// The instance ID of a claim.
fn instance_of(c: &NodeClaim) -> String {
    c.provider_id()
        .and_then(karp_aws::provider::instance_id)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interruption_messages_on_moto_sqs_replace_nodes_within_the_warning_and_record_events() {
    common::trace();
    let (_moto, settings, clients) = seeded_moto(41).await;
    let url = create_queue(&clients, "karp-interruption").await;
    let mut cluster = EmbeddedAwsCluster::start(EmbeddedOptions::fast(), settings)
        .await
        .unwrap();
    cluster.handle_interruptions(InterruptionOptions {
        queue: "karp-interruption".into(),
        drain_on_rebalance: false,
    });
    let client = cluster.client.clone();
    // Spot and on-demand allowed: karp launches spot (cheaper). Consolidation is off and drift
    // may disrupt no node (moto launches spot fleet instances with the VPC's default security
    // group instead of the launch template's, which karp rightly sees as SecurityGroupDrift), so
    // every claim that goes away went because of a message.
    cluster
        .apply_yaml(
            &manifests()
                .replace("values: [on-demand]", "values: [spot, on-demand]")
                .replace(
                    "metadata: {name: default}\nspec:\n  template:",
                    "metadata: {name: default}\nspec:\n  disruption:\n    consolidateAfter: Never\n    budgets: [{nodes: '0', reasons: [Drifted]}]\n  template:",
                ),
        )
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let all_running = || async {
        let p = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        p.len() == 3 && p.iter().all(running)
    };
    wait("3 running pods on EC2 spot nodes", all_running).await;
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let launched = claims.list(&ListParams::default()).await.unwrap().items;
    let victim = launched
        .iter()
        .find(|c| c.provider_id().is_some())
        .unwrap()
        .clone();
    let victim_name = victim.metadata.name.clone().unwrap();
    let labels = victim.metadata.labels.clone().unwrap_or_default();
    let (itype, zone, ctype) = (
        labels["node.kubernetes.io/instance-type"].clone(),
        labels["topology.kubernetes.io/zone"].clone(),
        labels["karpenter.sh/capacity-type"].clone(),
    );
    assert_eq!(ctype, "spot", "the cheapest offering is spot");
    let id = instance_of(&victim);

    // A malformed message, one about an instance that is not karp's, and a rebalance
    // recommendation: all deleted from the queue; the recommendation is an Event only.
    send_message(&clients, &url, "not an EventBridge message").await;
    send_message(
        &clients,
        &url,
        &ec2_message(
            "EC2 Spot Instance Interruption Warning",
            "i-0123456789abcdef0",
            &zone,
            r#","instance-action":"terminate""#,
        ),
    )
    .await;
    send_message(
        &clients,
        &url,
        &ec2_message("EC2 Instance Rebalance Recommendation", &id, &zone, ""),
    )
    .await;
    wait("the rebalance recommendation recorded", || async {
        event_reasons(&client, &victim_name)
            .await
            .iter()
            .any(|r| r.starts_with("SpotRebalanceRecommendation:"))
    })
    .await;
    wait("the three messages deleted", || async {
        cluster
            .metrics
            .counter("karpenter_interruption_deleted_messages_total", &[])
            >= 3.0
    })
    .await;
    assert_eq!(
        cluster.metrics.counter(
            "karpenter_interruption_received_messages_total",
            &[("message_type", "Unparsable")]
        ),
        1.0
    );
    assert!(
        claims
            .get(&victim_name)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none(),
        "a rebalance recommendation does not drain by default"
    );

    // The spot interruption warning: the offering is marked unavailable, the claim replaced and
    // the pods running elsewhere well within the two-minute warning.
    let warned = Instant::now();
    send_message(
        &clients,
        &url,
        &ec2_message(
            "EC2 Spot Instance Interruption Warning",
            &id,
            &zone,
            r#","instance-action":"terminate""#,
        ),
    )
    .await;
    wait(
        "the interrupted claim gone and the pods running elsewhere",
        || async {
            let gone = claims.get_opt(&victim_name).await.unwrap().is_none();
            gone && all_running().await
        },
    )
    .await;
    let took = warned.elapsed();
    assert!(took < Duration::from_secs(120), "replaced in {took:?}");
    assert!(cluster.provider.unavailable_offerings().is_unavailable(
        &itype,
        &zone,
        "spot",
        std::time::Instant::now()
    ));
    for c in claims.list(&ListParams::default()).await.unwrap().items {
        let l = c.metadata.labels.clone().unwrap_or_default();
        assert!(
            !(l.get("node.kubernetes.io/instance-type") == Some(&itype)
                && l.get("topology.kubernetes.io/zone") == Some(&zone)
                && l.get("karpenter.sh/capacity-type").map(String::as_str) == Some("spot")
                && c.metadata.name.as_deref() != Some(victim_name.as_str())),
            "no new claim on the interrupted offering: {:?}",
            c.metadata.name
        );
    }
    let reasons = event_reasons(&client, &victim_name).await;
    for want in ["SpotInterrupted", "TerminatingOnInterruption"] {
        assert!(
            reasons.iter().any(|r| r.starts_with(&format!("{want}:"))),
            "{want} in {reasons:?}"
        );
    }

    // With draining on rebalance enabled, a recommendation replaces the node; a state change to
    // `stopping` and an EC2 scheduled change do too, with Karpenter's reasons.
    // (A second queue: the first handler's long poll may still take a message as it stops.)
    let url = create_queue(&clients, "karp-interruption-drain").await;
    cluster.handle_interruptions(InterruptionOptions {
        queue: url.clone(),
        drain_on_rebalance: true,
    });
    for (detail_type, extra, reason) in [
        (
            "EC2 Instance Rebalance Recommendation",
            "",
            "SpotRebalanceRecommendation",
        ),
        (
            "EC2 Instance State-change Notification",
            r#","state":"stopping""#,
            "InstanceStopping",
        ),
        (
            "EC2 Instance State-change Notification",
            r#","state":"terminated""#,
            "InstanceTerminating",
        ),
    ] {
        let c = a_live_claim(&claims).await;
        let name = c.metadata.name.clone().unwrap();
        send_message(
            &clients,
            &url,
            &ec2_message(detail_type, &instance_of(&c), &zone, extra),
        )
        .await;
        wait(&format!("{name} replaced after {reason}"), || async {
            claims.get_opt(&name).await.unwrap().is_none() && all_running().await
        })
        .await;
        let reasons = event_reasons(&client, &name).await;
        assert!(
            reasons.iter().any(|r| r.starts_with(&format!("{reason}:"))),
            "{reason} in {reasons:?}"
        );
    }
    let c = a_live_claim(&claims).await;
    let name = c.metadata.name.clone().unwrap();
    let health = format!(
        r#"{{"version":"0","id":"h1","detail-type":"AWS Health Event","source":"aws.health","account":"123456789012","time":"2026-12-07T00:00:00Z","region":"us-east-1","resources":[],"detail":{{"service":"EC2","eventTypeCode":"AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED","eventTypeCategory":"scheduledChange","affectedEntities":[{{"entityValue":"{}"}}]}}}}"#,
        instance_of(&c)
    );
    send_message(&clients, &url, &health).await;
    wait(
        &format!("{name} replaced after a scheduled change"),
        || async { claims.get_opt(&name).await.unwrap().is_none() && all_running().await },
    )
    .await;
    assert!(event_reasons(&client, &name)
        .await
        .iter()
        .any(|r| r.starts_with("InstanceUnhealthy:")));
    // Every message was deleted: the queue is empty.
    let attrs = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    let left = attrs
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .cloned();
    assert_eq!(left.as_deref(), Some("0"));
    cluster.shutdown().await;
}
