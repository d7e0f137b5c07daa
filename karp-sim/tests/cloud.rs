//! SimCloud: instance selection, fault injection, lifecycle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use karp_core::cloud::{CloudError, CloudProvider, InstanceType, LaunchRequest, Offering};
use karp_core::labels;
use karp_core::requirements::{Requirement, Requirements};
use karp_core::resources::Resources;
use karp_core::testing::instance_type;
use karp_sim::cloud::{instance_id, node_name, private_ip, select_offering, InstanceState};
use karp_sim::{SimCloud, SimCloudOptions};

fn catalog() -> Vec<Arc<InstanceType>> {
    vec![
        instance_type("small")
            .cpu("2")
            .memory("4Gi")
            .zones(["us-east-1a", "us-east-1b"])
            .price(0.10)
            .spot_price(0.04)
            .build(),
        instance_type("large")
            .cpu("8")
            .memory("32Gi")
            .zones(["us-east-1a", "us-east-1b"])
            .price(0.40)
            .spot_price(0.15)
            .arch("arm64")
            .build(),
    ]
}

fn request(reqs: Vec<Requirement>) -> LaunchRequest {
    LaunchRequest {
        nodeclaim: "default-abc".into(),
        nodepool: "default".into(),
        requirements: reqs.into_iter().collect::<Requirements>(),
        ..LaunchRequest::default()
    }
}

fn cloud() -> SimCloud {
    SimCloud::new(catalog(), SimCloudOptions::default())
}

#[tokio::test]
async fn create_prefers_the_cheapest_spot_offering() {
    let c = cloud();
    let i = c.create(&request(vec![])).await.unwrap();
    assert_eq!(
        (
            i.instance_type.as_str(),
            i.zone.as_str(),
            i.capacity_type.as_str()
        ),
        ("small", "us-east-1a", "spot")
    );
    assert_eq!(i.nodeclaim.as_deref(), Some("default-abc"));
    assert_eq!(i.labels[labels::REGION], "us-east-1");
    assert_eq!(i.labels[labels::INSTANCE_TYPE], "small");
    assert_eq!(i.labels[labels::ZONE], "us-east-1a");
    assert_eq!(i.labels[labels::CAPACITY_TYPE], "spot");
    assert_eq!(
        i.provider_id,
        format!("sim:///us-east-1a/{}", instance_id(1))
    );
}

#[tokio::test]
async fn create_honours_zone_capacity_type_and_label_requirements() {
    let c = cloud();
    let i = c
        .create(&request(vec![
            Requirement::in_values(labels::ZONE, ["us-east-1b"]),
            Requirement::in_values(labels::CAPACITY_TYPE, ["on-demand"]),
        ]))
        .await
        .unwrap();
    assert_eq!(
        (i.zone.as_str(), i.capacity_type.as_str()),
        ("us-east-1b", "on-demand")
    );
    let arm = c
        .create(&request(vec![Requirement::in_values(
            labels::ARCH,
            ["arm64"],
        )]))
        .await
        .unwrap();
    assert_eq!(arm.instance_type, "large");
}

#[tokio::test]
async fn create_skips_types_too_small_for_the_requests() {
    let c = cloud();
    let mut r = request(vec![]);
    r.requests = Resources::from_pairs([("cpu", "3")]).unwrap();
    assert_eq!(c.create(&r).await.unwrap().instance_type, "large");
    r.requests = Resources::from_pairs([("cpu", "64")]).unwrap();
    let e = c.create(&r).await.unwrap_err();
    assert_eq!(e, CloudError::InsufficientCapacity { offerings: vec![] });
}

#[tokio::test]
async fn injected_insufficient_capacity_moves_the_launch_and_marks_the_offering_unavailable() {
    let c = cloud();
    c.inject_insufficient_capacity("small", "us-east-1a", "spot");
    let i = c.create(&request(vec![])).await.unwrap();
    assert_eq!(
        (
            i.instance_type.as_str(),
            i.zone.as_str(),
            i.capacity_type.as_str()
        ),
        ("small", "us-east-1b", "spot")
    );
    let types = c.instance_types("default", None).await.unwrap();
    let small = types.iter().find(|t| t.name == "small").unwrap();
    let unavailable: Vec<(&str, &str)> = small
        .offerings
        .iter()
        .filter(|o| !o.available)
        .map(|o| (o.zone.as_str(), o.capacity_type.as_str()))
        .collect();
    assert_eq!(unavailable, vec![("us-east-1a", "spot")]);
    // Only the failing offering allowed: the launch fails and names it.
    let e = c
        .create(&request(vec![
            Requirement::in_values(labels::INSTANCE_TYPE, ["small"]),
            Requirement::in_values(labels::ZONE, ["us-east-1a"]),
            Requirement::in_values(labels::CAPACITY_TYPE, ["spot"]),
        ]))
        .await
        .unwrap_err();
    match e {
        CloudError::InsufficientCapacity { offerings } => {
            assert_eq!(offerings.len(), 1);
            assert_eq!(offerings[0].instance_type, "small");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn insufficient_capacity_expires_after_the_ttl() {
    let c = SimCloud::new(
        catalog(),
        SimCloudOptions::default().ice_ttl(Duration::from_secs(60)),
    );
    c.inject_insufficient_capacity("small", "us-east-1a", "spot");
    tokio::time::advance(Duration::from_secs(59)).await;
    let types = c.instance_types("default", None).await.unwrap();
    assert!(types[0].offerings.iter().any(|o| !o.available));
    tokio::time::advance(Duration::from_secs(2)).await;
    let types = c.instance_types("default", None).await.unwrap();
    assert!(types
        .iter()
        .all(|t| t.offerings.iter().all(|o| o.available)));
    let i = c.create(&request(vec![])).await.unwrap();
    assert_eq!(i.zone, "us-east-1a");
}

#[tokio::test]
async fn fail_next_create_returns_the_queued_error_once() {
    let c = cloud();
    c.fail_next_create(CloudError::NodeClassNotReady {
        name: "default".into(),
        reason: "x".into(),
    });
    assert!(c
        .create(&request(vec![]))
        .await
        .unwrap_err()
        .is_node_class_not_ready());
    assert!(c.create(&request(vec![])).await.is_ok());
    let s = c.stats();
    assert_eq!((s.create_calls, s.creates), (2, 1));
}

#[tokio::test]
async fn delete_is_idempotent_and_terminated_instances_disappear() {
    let c = cloud();
    let a = c.create(&request(vec![])).await.unwrap();
    let b = c.create(&request(vec![])).await.unwrap();
    let listed: Vec<String> = c
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.provider_id)
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    assert_eq!(listed.len(), 2);
    c.delete(&a.provider_id).await.unwrap();
    assert!(c.delete(&a.provider_id).await.unwrap_err().is_not_found());
    assert!(c.get(&a.provider_id).await.unwrap_err().is_not_found());
    assert_eq!(c.get(&b.provider_id).await.unwrap(), b);
    assert_eq!(c.list().await.unwrap(), vec![b.clone()]);
    // The kubelet still sees the terminated one.
    let all = c.instances();
    assert_eq!(all.len(), 2);
    assert_eq!(
        c.instance(&a.provider_id).unwrap().state,
        InstanceState::Terminated
    );
    assert_eq!(c.running_instances().len(), 1);
    let s = c.stats();
    assert_eq!((s.delete_calls, s.deletes), (2, 1));
    assert!(c.is_drifted(&b).await.unwrap().is_none());
}

#[tokio::test]
async fn running_instances_keep_their_type_and_launch_request() {
    let c = cloud();
    let mut r = request(vec![]);
    r.labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
    let i = c.create(&r).await.unwrap();
    let sims = c.running_instances();
    assert_eq!(sims.len(), 1);
    assert_eq!(sims[0].instance, i);
    assert_eq!(sims[0].instance_type.name, "small");
    assert_eq!(sims[0].request, r);
    assert_eq!(sims[0].private_ip, private_ip(1));
    assert_eq!(
        c.node_name_of(&i.provider_id).unwrap(),
        "ip-10-0-0-1.us-east-1.compute.internal"
    );
}

#[test]
fn ids_names_and_ips_are_deterministic() {
    assert_eq!(instance_id(1), instance_id(1));
    assert_ne!(instance_id(1), instance_id(2));
    assert_eq!(instance_id(7).len(), 2 + 16);
    assert!(instance_id(7)[2..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(private_ip(258).to_string(), "10.0.1.2");
    assert_eq!(
        node_name(private_ip(1), "eu-west-1"),
        "ip-10-0-0-1.eu-west-1.compute.internal"
    );
}

#[test]
fn selection_breaks_price_ties_by_type_then_zone() {
    let mk = |name: &str| {
        Arc::new(InstanceType::new(
            name,
            &BTreeMap::new(),
            Resources::from_pairs([("cpu", "2"), ("pods", "10")]).unwrap(),
            Resources::new(),
            vec![
                Offering::new("z2", "on-demand", 0.1),
                Offering::new("z1", "on-demand", 0.1),
            ],
        ))
    };
    let types = vec![mk("b"), mk("a")];
    let (it, o) = select_offering(&types, &request(vec![]), &|_, _| false).unwrap();
    assert_eq!((it.name.as_str(), o.zone.as_str()), ("a", "z1"));
}
