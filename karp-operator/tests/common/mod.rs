//! Scenarios shared by the end-to-end tests of both clouds.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use karp_operator::api::nodeclaim::NodeClaim;
use karp_operator::controllers::{Operator, OperatorError};
use karp_operator::embedded::ClusterControl;
use karp_operator::runtime::health::Health;
use karp_operator::runtime::leader::{run_elected, LeaderElection};
use kube::api::{Api, ListParams};

/// The EC2NodeClass and NodePool `default` for a moto account seeded by
/// `karp_aws::moto::seed_cluster` for `cluster` (on-demand m5.large / m5.xlarge).
#[allow(dead_code)] // not every test binary uses every scenario
pub fn aws_pool(cluster: &str) -> String {
    format!(
        r"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {{name: default}}
spec:
  role: KarpenterNodeRole-{cluster}
  amiSelectorTerms: [{{alias: al2023@latest}}]
  subnetSelectorTerms: [{{tags: {{karpenter.sh/discovery: {cluster}}}}}]
  securityGroupSelectorTerms: [{{tags: {{karpenter.sh/discovery: {cluster}}}}}]
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: default}}
spec:
  template:
    spec:
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}
      requirements:
        - {{key: node.kubernetes.io/instance-type, operator: In, values: [m5.large, m5.xlarge]}}
        - {{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}}
"
    )
}

/// A Deployment of `replicas` pods of `cpu` CPU and 1Gi labelled `app=<name>`.
#[allow(dead_code)] // not every test binary uses every scenario
pub fn deployment(name: &str, replicas: u32, cpu: &str) -> String {
    format!(
        r"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: c
          image: pause
          resources: {{requests: {{cpu: '{cpu}', memory: 1Gi}}}}
"
    )
}

async fn all_running(client: &kube::Client, app: &str, n: usize) -> bool {
    let pods = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    pods.len() == n
        && pods.iter().all(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
}

async fn wait_running(client: &kube::Client, app: &str, n: usize) {
    let start = Instant::now();
    while !all_running(client, app, n).await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{app}: pods never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[allow(dead_code)] // not every test binary uses every scenario
/// Two operator replicas elect one leader through a Lease in namespace `karp` (which must
/// exist); the leader provisions; when it stops, the standby takes over within seconds and
/// provisions. `apply` applies YAML; `start(identity)` starts an operator replica.
pub async fn two_replicas_fail_over<A, S, F>(client: kube::Client, apply: A, start: S)
where
    A: Fn(&str),
    S: Fn(&'static str) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Operator, OperatorError>> + Send,
{
    let mut replicas = Vec::new();
    for id in ["replica-a", "replica-b"] {
        let health = Arc::new(Health::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = Arc::clone(&health);
        let mut election = LeaderElection::new("karp", id);
        election.duration_secs = 3;
        election.grace_secs = 1;
        election.renew_deadline = Duration::from_secs(2);
        let c = client.clone();
        let start = start.clone();
        let task = tokio::spawn(async move {
            run_elected(c, election, h, move || start(id), async {
                let _ = rx.await;
            })
            .await
        });
        replicas.push((health, tx, task));
    }
    let leaders = |r: &Vec<(Arc<Health>, _, _)>| -> Vec<usize> {
        r.iter()
            .enumerate()
            .filter(|(_, (h, _, _))| h.leader.load(Ordering::SeqCst))
            .map(|(i, _)| i)
            .collect()
    };
    let t0 = Instant::now();
    while leaders(&replicas).len() != 1 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no leader elected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = leaders(&replicas)[0];
    for _ in 0..10 {
        assert!(leaders(&replicas).len() <= 1, "two leaders at once");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    apply(&deployment("one", 2, "1"));
    wait_running(&client, "one", 2).await;

    let (health, tx, task) = replicas.remove(first);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    assert!(!health.leader.load(Ordering::SeqCst));
    let failover = Instant::now();
    while !replicas[0].0.leader.load(Ordering::SeqCst) {
        assert!(
            failover.elapsed() < Duration::from_secs(15),
            "standby never took over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    apply(&deployment("two", 2, "1"));
    wait_running(&client, "two", 2).await;
    let (_, tx, task) = replicas.remove(0);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

/// Every NodeClaim.
#[allow(dead_code)]
pub async fn all_claims(client: &kube::Client) -> Vec<NodeClaim> {
    Api::<NodeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// Advances the operator's clock `step` every 200 ms of real time until `done` holds, checking
/// `invariant` at every step; panics after `timeout` of real time.
#[allow(dead_code)]
pub async fn advance_until<F, Fut, I, IFut>(
    cluster: &ClusterControl,
    step: Duration,
    timeout: Duration,
    what: &str,
    mut done: F,
    mut invariant: I,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
    I: FnMut() -> IFut,
    IFut: Future<Output = ()>,
{
    let start = Instant::now();
    loop {
        invariant().await;
        if done().await {
            return;
        }
        if start.elapsed() > timeout {
            for c in all_claims(&cluster.client).await {
                let conditions: Vec<String> = c
                    .status
                    .as_ref()
                    .map(|s| {
                        s.conditions
                            .iter()
                            .map(|x| format!("{}={}({})", x.type_, x.status, x.reason))
                            .collect()
                    })
                    .unwrap_or_default();
                eprintln!(
                    "claim {:?} deleting={} node={:?} {conditions:?}",
                    c.metadata.name,
                    c.metadata.deletion_timestamp.is_some(),
                    c.status.as_ref().and_then(|s| s.node_name.clone()),
                );
            }
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        cluster.clock().advance(step);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Advances the clock in 5 s steps until the NodeClaims stay the same, all initialized and none
/// deleting, for 20 steps (longer than `consolidateAfter`, the validation delay and a poll),
/// checking `invariant` at every step.
#[allow(dead_code)]
pub async fn settle<I, IFut>(cluster: &ClusterControl, invariant: I)
where
    I: FnMut() -> IFut,
    IFut: Future<Output = ()>,
{
    let client = cluster.client.clone();
    let stable = std::sync::Mutex::new((Vec::<String>::new(), 0usize));
    advance_until(
        cluster,
        Duration::from_secs(5),
        Duration::from_secs(150),
        "a stable cluster",
        || async {
            let cs = all_claims(&client).await;
            let settled = cs
                .iter()
                .all(|c| c.metadata.deletion_timestamp.is_none() && c.is_true("Initialized"));
            let mut names: Vec<String> =
                cs.iter().filter_map(|c| c.metadata.name.clone()).collect();
            names.sort();
            let mut st = stable.lock().unwrap();
            if settled && st.0 == names {
                st.1 += 1;
            } else {
                *st = (names, 0);
            }
            st.1 >= 20
        },
        invariant,
    )
    .await;
}

/// Nodes carrying `karpenter.sh/disrupted` and not being deleted.
#[allow(dead_code)]
pub async fn tainted_nodes(client: &kube::Client) -> Vec<String> {
    Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|n| {
            n.metadata.deletion_timestamp.is_none()
                && n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == "karpenter.sh/disrupted"))
        })
        .filter_map(|n| n.metadata.name)
        .collect()
}

/// `pool` (YAML with a 100 % budget) and a Deployment `big` of four 1.5-CPU pods; scaled to one,
/// the clock advanced until a command has tainted a candidate; the operator stopped there and
/// started again: the marks are rolled back (no node tainted, no `DisruptionReason` left on a
/// live claim), and the cluster then settles with the pod running. The caller checks that
/// every instance has a claim.
#[allow(dead_code)]
pub async fn restart_mid_command(cluster: &mut ClusterControl, pool: &str) {
    let client = cluster.client.clone();
    cluster.apply_yaml(pool).unwrap();
    cluster.apply_yaml(&deployment("big", 4, "1500m")).unwrap();
    wait_running(&client, "big", 4).await;
    let scaled = serde_json::json!({"spec": {"replicas": 1}});
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "default")
        .patch(
            "big",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(scaled),
        )
        .await
        .unwrap();
    // Advance until a candidate is tainted (a command in progress), then stop.
    let start = Instant::now();
    let mut marked = Vec::new();
    while marked.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no command started"
        );
        cluster.clock().advance(Duration::from_secs(5));
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            marked = tainted_nodes(&client).await;
            if !marked.is_empty() {
                break;
            }
        }
    }
    cluster.stop_operator().await;
    cluster.restart_operator().await.unwrap();
    // The rollback untaints the nodes and clears the claims' condition in separate writes:
    // both must be done within the deadline.
    let t0 = Instant::now();
    loop {
        let marked = tainted_nodes(&client).await;
        let keeping: Vec<Option<String>> = all_claims(&client)
            .await
            .into_iter()
            .filter(|c| {
                c.condition("DisruptionReason").is_some() && c.metadata.deletion_timestamp.is_none()
            })
            .map(|c| c.metadata.name)
            .collect();
        if marked.is_empty() && keeping.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the marks were not rolled back: tainted {marked:?}, DisruptionReason kept by {keeping:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Replacements are ordinary claims; later passes consolidate again.
    settle(cluster, || async {}).await;
    assert!(tainted_nodes(&client).await.is_empty());
    wait_running(&client, "big", 1).await;
}

/// Logs to the test's output, filtered by `RUST_LOG` (once per test binary).
#[allow(dead_code)] // not every test binary logs
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// `reason: message` of the core/v1 Events about the object `name` (of `kind` when given), as
/// `kubectl describe` finds them.
#[allow(dead_code)] // not every test binary reads events
pub async fn described_events(
    client: &kube::Client,
    kind: Option<&str>,
    name: &str,
) -> Vec<String> {
    kube::Api::<k8s_openapi::api::core::v1::Event>::all(client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && kind.is_none_or(|k| e.involved_object.kind.as_deref() == Some(k))
        })
        .filter_map(|e| Some(format!("{}: {}", e.reason?, e.message.unwrap_or_default())))
        .collect()
}
