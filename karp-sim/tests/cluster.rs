//! The simulators against the in-process API server (`karp-apiserver`) through `kube::Client`,
//! the way karp's operator runs on them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use karp_apiserver::ApiServer;
use karp_core::cloud::{CloudProvider, LaunchRequest};
use karp_core::labels;
use karp_core::requirements::{Requirement, Requirements};
use karp_core::taints::{Effect, Taint};
use karp_core::testing::instance_type;
use karp_sim::node::ready_status;
use karp_sim::{KubeletOptions, SimCloud, SimCloudOptions, SimCluster, SimOptions};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cloud() -> Arc<SimCloud> {
    let it = instance_type("m5.xlarge")
        .cpu("4")
        .memory("16Gi")
        .pods(58)
        .overhead("cpu", "80m")
        .overhead("memory", "893Mi")
        .zones(["us-east-1a", "us-east-1b"])
        .price(0.192)
        .build();
    Arc::new(SimCloud::new(vec![it], SimCloudOptions::default()))
}

fn options(ready_delay: Duration) -> SimOptions {
    SimOptions::default().kubelet(
        KubeletOptions::default()
            .poll_interval(Duration::from_millis(50))
            .ready_delay(ready_delay)
            .startup_taint_delay(Duration::from_millis(100))
            .pod_start_delay(Duration::from_millis(50)),
    )
}

fn deployment(name: &str, replicas: i32, cpu: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                    "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}]},
            },
        },
    }))
    .unwrap()
}

async fn pods_of(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    let mut pods = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items;
    pods.sort_by_key(ResourceExt::name_any);
    pods
}

fn unschedulable_message(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
        .and_then(|c| c.message.clone())
}

fn is_running(p: &Pod) -> bool {
    let st = p.status.as_ref();
    st.and_then(|s| s.phase.as_deref()) == Some("Running")
        && st.and_then(|s| s.pod_ip.as_ref()).is_some()
        && st
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn taint_keys(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| ts.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default()
}

/// What karp's registration does: drop `karpenter.sh/unregistered`, add a label; JSON patch with
/// a resourceVersion test, retried on conflict.
async fn register_like_karp(nodes: &Api<Node>, name: &str) {
    loop {
        let n = nodes.get(name).await.unwrap();
        let kept: Vec<_> = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.key != "karpenter.sh/unregistered")
            .collect();
        let patch = json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": n.metadata.resource_version},
            {"op": "replace", "path": "/spec/taints", "value": kept},
            {"op": "add", "path": "/metadata/labels/karpenter.sh~1registered", "value": "true"},
        ]);
        let patch = Patch::Json::<()>(serde_json::from_value(patch).unwrap());
        match nodes.patch(name, &PatchParams::default(), &patch).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => continue,
            Err(e) => panic!("register: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_goes_from_unschedulable_to_running_on_a_launched_node_and_back() {
    let server = ApiServer::new();
    let client = Client::new(server.clone(), "default");
    let cloud = cloud();
    let sim = SimCluster::start(
        client.clone(),
        Arc::clone(&cloud),
        options(Duration::from_secs(1)),
    );
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());

    // No nodes: three pending pods marked Unschedulable.
    deploys
        .create(&PostParams::default(), &deployment("web", 3, "500m"))
        .await
        .unwrap();
    let pending = eventually("3 unschedulable pods", || async {
        let ps = pods_of(&pods, "web").await;
        (ps.len() == 3 && ps.iter().all(|p| unschedulable_message(p).is_some())).then_some(ps)
    })
    .await;
    assert_eq!(
        unschedulable_message(&pending[0]).unwrap(),
        "0/0 nodes are available: no nodes available to schedule pods."
    );
    let rs_list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rs_list.len(), 1);
    let rs = &rs_list[0];
    assert!(rs.name_any().starts_with("web-") && rs.name_any().len() == "web-".len() + 10);
    let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Deployment", "web", Some(true))
    );
    for p in &pending {
        let o = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str()),
            ("ReplicaSet", rs.name_any().as_str())
        );
        assert!(p.name_any().starts_with(&format!("{}-", rs.name_any())));
    }

    // Launch an instance the way karp would: a Node registers, not ready, with the taints.
    let request = LaunchRequest {
        nodeclaim: "default-abcde".into(),
        nodepool: "default".into(),
        requirements: Requirements::from_iter([Requirement::in_values(
            labels::ZONE,
            ["us-east-1b"],
        )]),
        labels: BTreeMap::from([(labels::NODEPOOL.to_string(), "default".to_string())]),
        startup_taints: vec![Taint::new(
            "example.com/agent-not-ready",
            "",
            Effect::NoSchedule,
        )],
        ..LaunchRequest::default()
    };
    let instance = cloud.create(&request).await.unwrap();
    let node_name = cloud.node_name_of(&instance.provider_id).unwrap();
    let node = eventually("the node to register", || async {
        nodes.get_opt(&node_name).await.unwrap()
    })
    .await;
    assert_eq!(ready_status(&node), Some("False"));
    assert_eq!(
        node.spec.as_ref().unwrap().provider_id.as_deref(),
        Some(instance.provider_id.as_str())
    );
    let l = node.labels();
    assert_eq!(l[labels::INSTANCE_TYPE], "m5.xlarge");
    assert_eq!(l[labels::ZONE], "us-east-1b");
    assert_eq!(l[labels::REGION], "us-east-1");
    assert_eq!(l[labels::CAPACITY_TYPE], "spot");
    assert_eq!(l[labels::HOSTNAME], node_name);
    assert_eq!(l[labels::NODEPOOL], "default");
    assert_eq!(l[labels::ARCH], "amd64");
    assert_eq!(
        taint_keys(&node),
        vec![
            "example.com/agent-not-ready".to_string(),
            "karpenter.sh/unregistered".to_string()
        ]
    );
    let status = node.status.as_ref().unwrap();
    assert_eq!(status.capacity.as_ref().unwrap()["cpu"].0, "4");
    assert_eq!(status.allocatable.as_ref().unwrap()["cpu"].0, "3920m");
    assert_eq!(status.allocatable.as_ref().unwrap()["pods"].0, "58");
    // Not ready and tainted: the pods stay unschedulable, with the reason updated.
    let msg = eventually("the reason to mention the node", || async {
        let ps = pods_of(&pods, "web").await;
        unschedulable_message(&ps[0]).filter(|m| m.starts_with("0/1 nodes"))
    })
    .await;
    assert!(
        msg == "0/1 nodes are available: 1 node(s) were not ready."
            || msg.contains("untolerated taint"),
        "{msg}"
    );

    // karp registers the node; the kubelet makes it Ready and removes the startup taint without
    // undoing karp's changes.
    register_like_karp(&nodes, &node_name).await;
    let node = eventually("the node to be ready without startup taints", || async {
        let n = nodes.get(&node_name).await.unwrap();
        (ready_status(&n) == Some("True") && taint_keys(&n).is_empty()).then_some(n)
    })
    .await;
    assert_eq!(
        node.labels()
            .get("karpenter.sh/registered")
            .map(String::as_str),
        Some("true")
    );

    // The scheduler binds the pods, the kubelet runs them.
    let running = eventually("3 running pods", || async {
        let ps = pods_of(&pods, "web").await;
        (ps.len() == 3 && ps.iter().all(is_running)).then_some(ps)
    })
    .await;
    for p in &running {
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some(node_name.as_str())
        );
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.host_ip.as_deref(), Some("10.0.0.1"));
        assert!(st.start_time.is_some());
    }
    eventually("deployment status to show 3 ready replicas", || async {
        let d = deploys.get("web").await.unwrap();
        let st = d.status.unwrap_or_default();
        (st.ready_replicas == Some(3) && st.available_replicas == Some(3) && st.replicas == Some(3))
            .then_some(())
    })
    .await;

    // A deleted pod is recreated.
    let victim = running[0].name_any();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the replacement pod to run", || async {
        let ps = pods_of(&pods, "web").await;
        (ps.len() == 3 && ps.iter().all(|p| p.name_any() != victim) && ps.iter().all(is_running))
            .then_some(())
    })
    .await;

    // Scaling down to 1 deletes two pods.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    eventually("one pod left", || async {
        let ps = pods_of(&pods, "web").await;
        (ps.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        pods_of(&pods, "web").await.len(),
        1,
        "scale-down must not overshoot"
    );

    // The instance goes away: the kubelet stops, the Node stays (karp deletes it).
    cloud.delete(&instance.provider_id).await.unwrap();
    eventually("the node status to be unknown", || async {
        let n = nodes.get(&node_name).await.unwrap();
        (ready_status(&n) == Some("Unknown")).then_some(())
    })
    .await;

    // karp deletes the Node: its pods are garbage-collected and replaced by pending ones.
    let old = pods_of(&pods, "web").await[0].name_any();
    nodes
        .delete(&node_name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the orphaned pod to be replaced by an unschedulable one",
        || async {
            let ps = pods_of(&pods, "web").await;
            (ps.len() == 1
                && ps[0].name_any() != old
                && unschedulable_message(&ps[0]).as_deref()
                    == Some("0/0 nodes are available: no nodes available to schedule pods."))
            .then_some(())
        },
    )
    .await;
    assert_eq!(cloud.stats().creates, 1);

    tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_creates_a_new_replicaset_and_scales_the_old_one_to_zero() {
    let server = ApiServer::new();
    let client = Client::new(server.clone(), "default");
    let sim = SimCluster::start(client.clone(), cloud(), options(Duration::ZERO));
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    deploys
        .create(&PostParams::default(), &deployment("api", 2, "100m"))
        .await
        .unwrap();
    let first = eventually("two pods", || async {
        let ps = pods_of(&pods, "api").await;
        (ps.len() == 2).then_some(ps)
    })
    .await;
    let old_rs = first[0].metadata.owner_references.as_ref().unwrap()[0]
        .name
        .clone();
    deploys
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.28",
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}}}})),
        )
        .await
        .unwrap();
    eventually("the new replicaset to own both pods", || async {
        let ps = pods_of(&pods, "api").await;
        let owners: Vec<String> = ps
            .iter()
            .map(|p| {
                p.metadata.owner_references.as_ref().unwrap()[0]
                    .name
                    .clone()
            })
            .collect();
        (ps.len() == 2 && owners.iter().all(|o| *o != old_rs)).then_some(())
    })
    .await;
    let old = rss.get(&old_rs).await.unwrap();
    assert_eq!(old.spec.replicas, Some(0));
    assert_eq!(
        rss.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_keep_their_names_and_jobs_run_parallelism_pods() {
    let server = ApiServer::new();
    let client = Client::new(server.clone(), "default");
    let sim = SimCluster::start(client.clone(), cloud(), options(Duration::ZERO));
    let stss: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres"}]}}},
    }))
    .unwrap();
    stss.create(&PostParams::default(), &sts).await.unwrap();
    let names = eventually("db-0 and db-1", || async {
        let ps = pods_of(&pods, "db").await;
        let names: Vec<String> = ps.iter().map(ResourceExt::name_any).collect();
        (names == ["db-0", "db-1"]).then_some(ps)
    })
    .await;
    let uid0 = names[0].metadata.uid.clone();
    assert_eq!(
        names[0].spec.as_ref().unwrap().hostname.as_deref(),
        Some("db-0")
    );
    pods.delete("db-0", &DeleteParams::default()).await.unwrap();
    eventually("db-0 to come back as a new pod", || async {
        let p = pods.get_opt("db-0").await.unwrap()?;
        (p.metadata.uid != uid0).then_some(())
    })
    .await;
    stss.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("db-1 to be removed", || async {
        let ps = pods_of(&pods, "db").await;
        (ps.len() == 1 && ps[0].name_any() == "db-0").then_some(())
    })
    .await;

    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "batch"},
        "spec": {"parallelism": 2, "template": {"metadata": {"labels": {"app": "batch"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox"}]}}},
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let job_pods = eventually("two job pods", || async {
        let ps = pods_of(&pods, "batch").await;
        (ps.len() == 2).then_some(ps)
    })
    .await;
    for p in &job_pods {
        assert_eq!(p.labels()["batch.kubernetes.io/job-name"], "batch");
        assert_eq!(
            p.spec.as_ref().unwrap().restart_policy.as_deref(),
            Some("Never")
        );
    }
    eventually("job status active 2", || async {
        let j = jobs.get("batch").await.unwrap();
        (j.status.and_then(|s| s.active) == Some(2)).then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_anti_affinity_spreads_replicas_over_ready_nodes() {
    let server = ApiServer::new();
    let client = Client::new(server.clone(), "default");
    let cloud = cloud();
    let sim = SimCluster::start(client.clone(), Arc::clone(&cloud), options(Duration::ZERO));
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut names = Vec::new();
    for i in 0..2 {
        let inst = cloud
            .create(&LaunchRequest {
                nodeclaim: format!("nc-{i}"),
                ..LaunchRequest::default()
            })
            .await
            .unwrap();
        let name = cloud.node_name_of(&inst.provider_id).unwrap();
        eventually("node", || async { nodes.get_opt(&name).await.unwrap() }).await;
        register_like_karp(&nodes, &name).await;
        names.push(name);
    }
    let mut d = deployment("spread", 3, "100m");
    d.spec.template.spec.as_mut().unwrap().affinity = Some(
        serde_json::from_value(json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "spread"}}}]}}))
        .unwrap(),
    );
    Api::<Deployment>::default_namespaced(client.clone())
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let ps = eventually("two bound pods and one unschedulable", || async {
        let ps = pods_of(&pods, "spread").await;
        let bound = ps
            .iter()
            .filter(|p| p.spec.as_ref().unwrap().node_name.is_some())
            .count();
        let unsched = ps
            .iter()
            .filter(|p| unschedulable_message(p).is_some())
            .count();
        (ps.len() == 3 && bound == 2 && unsched == 1).then_some(ps)
    })
    .await;
    let mut used: Vec<String> = ps
        .iter()
        .filter_map(|p| p.spec.as_ref().unwrap().node_name.clone())
        .collect();
    used.sort();
    assert_eq!(used, names);
    let msg = ps.iter().find_map(unschedulable_message).unwrap();
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    );
    sim.shutdown().await;
}
