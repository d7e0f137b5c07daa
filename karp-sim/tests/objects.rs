//! Node objects the kubelet registers, and the workload controllers' pure helpers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Taint as K8sTaint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use karp_core::cloud::{CloudProvider, LaunchRequest};
use karp_core::taints::{Effect, Taint};
use karp_core::testing::instance_type;
use karp_sim::node::{
    node_conditions, node_object, ready_status, removable_startup_taints, without_startup_taints,
    Readiness,
};
use karp_sim::workloads::{sort_for_deletion, template_hash};
use karp_sim::{SimCloud, SimCloudOptions};
use serde_json::json;

#[tokio::test]
async fn node_object_carries_labels_taints_capacity_and_provider_id() {
    let it = instance_type("m5.large")
        .cpu("2")
        .memory("8Gi")
        .pods(29)
        .resource("nvidia.com/gpu", "1")
        .overhead("cpu", "70m")
        .overhead("memory", "574Mi")
        .label("karpenter.k8s.aws/instance-family", "m5")
        .zones(["us-east-1a"])
        .build();
    let cloud = SimCloud::new(vec![it], SimCloudOptions::default());
    let req = LaunchRequest {
        nodeclaim: "default-x".into(),
        nodepool: "default".into(),
        labels: BTreeMap::from([("karpenter.sh/nodepool".to_string(), "default".to_string())]),
        taints: vec![Taint::new("dedicated", "web", Effect::NoSchedule)],
        startup_taints: vec![Taint::new("example.com/init", "", Effect::NoSchedule)],
        ..LaunchRequest::default()
    };
    let inst = cloud.create(&req).await.unwrap();
    let sim = cloud.instance(&inst.provider_id).unwrap();
    let now = Time(Timestamp::UNIX_EPOCH);
    let node = node_object(&sim, "us-east-1", &now);
    let name = node.metadata.name.clone().unwrap();
    assert_eq!(name, "ip-10-0-0-1.us-east-1.compute.internal");
    let labels = node.metadata.labels.clone().unwrap();
    for (k, v) in [
        ("node.kubernetes.io/instance-type", "m5.large"),
        ("topology.kubernetes.io/zone", "us-east-1a"),
        ("topology.kubernetes.io/region", "us-east-1"),
        ("karpenter.sh/capacity-type", "spot"),
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/os", "linux"),
        ("karpenter.k8s.aws/instance-family", "m5"),
        ("karpenter.sh/nodepool", "default"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    let spec = node.spec.clone().unwrap();
    assert_eq!(spec.provider_id.as_deref(), Some(inst.provider_id.as_str()));
    let taints: Vec<(String, String)> = spec
        .taints
        .unwrap()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect();
    assert_eq!(
        taints,
        vec![
            ("dedicated".to_string(), "NoSchedule".to_string()),
            ("example.com/init".to_string(), "NoSchedule".to_string()),
            (
                "karpenter.sh/unregistered".to_string(),
                "NoExecute".to_string()
            ),
        ]
    );
    let status = node.status.clone().unwrap();
    let cap = status.capacity.unwrap();
    let alloc = status.allocatable.unwrap();
    assert_eq!(cap["cpu"].0, "2");
    assert_eq!(cap["memory"].0, "8Gi");
    assert_eq!(cap["pods"].0, "29");
    assert_eq!(cap["nvidia.com/gpu"].0, "1");
    assert_eq!(alloc["cpu"].0, "1930m");
    assert_eq!(alloc["memory"].0, "7618Mi");
    assert_eq!(ready_status(&node), Some("False"));
    assert_eq!(status.node_info.unwrap().architecture, "amd64");
    assert_eq!(removable_startup_taints(&sim), req.startup_taints);
}

#[test]
fn startup_taint_removal_keeps_every_other_taint() {
    let t = |k: &str, e: &str| K8sTaint {
        key: k.into(),
        effect: e.into(),
        ..K8sTaint::default()
    };
    let current = vec![
        t("a", "NoSchedule"),
        t("init", "NoSchedule"),
        t("init", "NoExecute"),
    ];
    let startup = vec![Taint::new("init", "", Effect::NoSchedule)];
    assert_eq!(
        without_startup_taints(&current, &startup).unwrap(),
        vec![t("a", "NoSchedule"), t("init", "NoExecute")]
    );
    assert_eq!(
        without_startup_taints(&[t("a", "NoSchedule")], &startup),
        None
    );
}

#[test]
fn conditions_report_readiness_and_unknown() {
    let now = Time(Timestamp::UNIX_EPOCH);
    let ready = node_conditions(Readiness::Ready, &now);
    let r = ready.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (r.status.as_str(), r.reason.as_deref()),
        ("True", Some("KubeletReady"))
    );
    let unknown = node_conditions(Readiness::Unknown, &now);
    assert!(unknown.iter().all(|c| c.status == "Unknown"));
    assert!(unknown
        .iter()
        .all(|c| c.reason.as_deref() == Some("NodeStatusUnknown")));
}

#[test]
fn template_hash_is_stable_ten_characters_and_changes_with_the_template() {
    let t1: PodTemplateSpec = serde_json::from_value(json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}))
    .unwrap();
    let mut t2 = t1.clone();
    t2.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
    let h1 = template_hash(&t1);
    assert_eq!(h1, template_hash(&t1.clone()));
    assert_eq!(h1.len(), 10);
    assert!(h1
        .chars()
        .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    assert_ne!(h1, template_hash(&t2));
}

#[test]
fn scale_down_removes_unbound_then_newest_pods_first() {
    let p = |name: &str, ts: &str, node: Option<&str>| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": ts},
            "spec": {"containers": [], "nodeName": node},
        }))
        .unwrap()
    };
    let pods = [
        p("old", "2024-01-01T00:00:00Z", Some("n")),
        p("new", "2024-01-03T00:00:00Z", Some("n")),
        p("pending", "2024-01-01T00:00:00Z", None),
        p("mid", "2024-01-02T00:00:00Z", Some("n")),
    ];
    let mut refs: Vec<&Pod> = pods.iter().collect();
    sort_for_deletion(&mut refs);
    let names: Vec<&str> = refs
        .iter()
        .map(|p| p.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, vec!["pending", "new", "mid", "old"]);
}
