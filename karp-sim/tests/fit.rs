//! The simulated scheduler's pure decisions: tolerations, node affinity, resources, host ports,
//! pod (anti-)affinity, spread, bin-packing, messages.

use k8s_openapi::api::core::v1::{Node, Pod};
use karp_core::taints::{Effect, Taint, Toleration};
use karp_sim::fit::{untolerated_taint, ClusterState, Decision};
use karp_sim::scheduler::{plan, reports_unschedulable, unschedulable_patch};
use karp_sim::view::{NodeView, PodView};
use serde_json::{json, Value};

fn node(name: &str, cpu: &str, labels: Value, taints: Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "10"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))
    .unwrap()
}

fn pod(name: &str, spec: Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": spec,
    }))
    .unwrap()
}

fn decide(nodes: &[Node], p: &Pod) -> Decision {
    let state = ClusterState::new(nodes.iter().map(NodeView::from_node).collect(), []);
    state.decide(&PodView::from_pod(p))
}

fn bind(n: &str) -> Decision {
    Decision::Bind(n.to_string())
}

#[test]
fn prefer_no_schedule_taints_are_ignored_and_others_need_tolerations() {
    let taints = vec![
        Taint::new("soft", "", Effect::PreferNoSchedule),
        Taint::new("hard", "x", Effect::NoSchedule),
    ];
    assert_eq!(untolerated_taint(&taints, &[]).unwrap().key, "hard");
    assert!(untolerated_taint(&taints, &[Toleration::exists("hard")]).is_none());
    assert!(untolerated_taint(&taints, &[Toleration::exists("")]).is_none());
    assert!(untolerated_taint(&taints, &[Toleration::equal("hard", "y", None)]).is_some());
}

#[test]
fn taints_from_manifests_follow_toleration_semantics() {
    let n = node(
        "n1",
        "2",
        json!({}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    );
    let plain = pod("p", json!({}));
    match decide(std::slice::from_ref(&n), &plain) {
        Decision::Unschedulable(m) => assert_eq!(
            m,
            "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}."
        ),
        d => panic!("{d:?}"),
    }
    let tolerant = pod(
        "p",
        json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}),
    );
    assert_eq!(decide(std::slice::from_ref(&n), &tolerant), bind("n1"));
    let wrong_effect = pod(
        "p",
        json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]}),
    );
    assert!(matches!(
        decide(std::slice::from_ref(&n), &wrong_effect),
        Decision::Unschedulable(_)
    ));
    let everything = pod("p", json!({"tolerations": [{"operator": "Exists"}]}));
    assert_eq!(decide(&[n], &everything), bind("n1"));
}

#[test]
fn node_selector_and_required_affinity_operators() {
    let nodes = vec![
        node("a", "2", json!({"zone": "z1", "gen": "5"}), json!([])),
        node(
            "b",
            "2",
            json!({"zone": "z2", "gen": "7", "gpu": "yes"}),
            json!([]),
        ),
    ];
    let with_terms = |terms: Value| {
        pod(
            "p",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
        )
    };
    assert_eq!(
        decide(&nodes, &pod("p", json!({"nodeSelector": {"zone": "z2"}}))),
        bind("b")
    );
    let cases = [
        (
            json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]),
            "a",
        ),
        (
            json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z1"]}]}]),
            "b",
        ),
        (
            json!([{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]),
            "b",
        ),
        (
            json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}]),
            "a",
        ),
        (
            json!([{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["6"]}]}]),
            "b",
        ),
        (
            json!([{"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["6"]}]}]),
            "a",
        ),
        (
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]),
            "b",
        ),
    ];
    for (terms, want) in cases {
        assert_eq!(
            decide(&nodes, &with_terms(terms.clone())),
            bind(want),
            "{terms}"
        );
    }
    // Expressions in one term are AND-ed; terms are OR-ed.
    let and = json!([{"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["z1"]},
        {"key": "gpu", "operator": "Exists"}]}]);
    match decide(&nodes, &with_terms(and)) {
        Decision::Unschedulable(m) => assert!(
            m.contains("2 node(s) didn't match Pod's node affinity/selector"),
            "{m}"
        ),
        d => panic!("{d:?}"),
    }
    let or = json!([
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["nowhere"]}]},
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]}]);
    assert_eq!(decide(&nodes, &with_terms(or)), bind("b"));
    // An invalid operator makes the pod unschedulable with a message, never a panic.
    let bad =
        json!([{"matchExpressions": [{"key": "zone", "operator": "Near", "values": ["z1"]}]}]);
    assert!(
        matches!(decide(&nodes, &with_terms(bad)), Decision::Unschedulable(m) if m.contains("Near"))
    );
}

#[test]
fn effective_requests_take_init_containers_and_overhead_into_account() {
    let p = pod(
        "p",
        json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "300m"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "100Mi"}}}],
            "overhead": {"cpu": "50m"},
        }),
    );
    let v = PodView::from_pod(&p);
    assert_eq!(v.requests.cpu, 1050);
    assert_eq!(v.requests.memory, 1 << 30);
    assert_eq!(v.requests.pods, 1);
}

#[test]
fn resources_count_bound_pods_and_report_what_is_insufficient() {
    let n = node("n", "1", json!({}), json!([]));
    let big = pod(
        "big",
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "800m"}}}]}),
    );
    let mut bound = big.clone();
    bound.metadata.name = Some("bound".into());
    bound.spec.as_mut().unwrap().node_name = Some("n".into());
    let out = plan(&[n], &[bound, big]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].decision,
        Decision::Unschedulable("0/1 nodes are available: 1 Insufficient cpu.".into())
    );
}

#[test]
fn too_many_pods_and_extended_resources() {
    let mut n = node("n", "4", json!({}), json!([]));
    n.status
        .as_mut()
        .unwrap()
        .allocatable
        .as_mut()
        .unwrap()
        .insert(
            "pods".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
        );
    let gpu = pod(
        "g",
        json!({"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}),
    );
    match decide(std::slice::from_ref(&n), &gpu) {
        Decision::Unschedulable(m) => assert!(m.contains("Insufficient nvidia.com/gpu"), "{m}"),
        d => panic!("{d:?}"),
    }
    let a = pod("a", json!({}));
    let b = pod("b", json!({}));
    let out = plan(&[n], &[a, b]);
    assert_eq!(out[0].decision, bind("n"));
    assert_eq!(
        out[1].decision,
        Decision::Unschedulable("0/1 nodes are available: 1 Too many pods.".into())
    );
}

#[test]
fn host_ports_conflict_on_the_same_node() {
    let n = node("n", "4", json!({}), json!([]));
    let hp = |name: &str| {
        pod(
            name,
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        )
    };
    let out = plan(&[n], &[hp("a"), hp("b")]);
    assert_eq!(out[0].decision, bind("n"));
    assert!(matches!(&out[1].decision, Decision::Unschedulable(m) if m.contains("free ports")));
}

#[test]
fn bin_packing_prefers_the_fullest_node_and_breaks_ties_by_name() {
    let nodes = vec![
        node("b", "4", json!({}), json!([])),
        node("a", "4", json!({}), json!([])),
        node("c", "2", json!({}), json!([])),
    ];
    assert_eq!(decide(&nodes, &pod("p", json!({}))), bind("c"));
    let nodes = vec![
        node("b", "4", json!({}), json!([])),
        node("a", "4", json!({}), json!([])),
    ];
    assert_eq!(decide(&nodes, &pod("p", json!({}))), bind("a"));
}

#[test]
fn nodes_not_ready_cordoned_or_deleting_are_skipped() {
    let mut not_ready = node("a", "4", json!({}), json!([]));
    not_ready
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()[0]
        .status = "False".into();
    let mut cordoned = node("b", "4", json!({}), json!([]));
    cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
    match decide(&[not_ready, cordoned], &pod("p", json!({}))) {
        Decision::Unschedulable(m) => assert_eq!(
            m,
            "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
        ),
        d => panic!("{d:?}"),
    }
    assert_eq!(
        decide(&[], &pod("p", json!({}))),
        Decision::Unschedulable(
            "0/0 nodes are available: no nodes available to schedule pods.".into()
        )
    );
}

#[test]
fn required_anti_affinity_on_hostname_keeps_matching_pods_apart() {
    let nodes = vec![
        node("a", "4", json!({"kubernetes.io/hostname": "a"}), json!([])),
        node("b", "4", json!({"kubernetes.io/hostname": "b"}), json!([])),
    ];
    let anti = |name: &str| {
        pod(
            name,
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]}}}),
        )
    };
    let out = plan(&nodes, &[anti("p1"), anti("p2"), anti("p3")]);
    assert_eq!(out[0].decision, bind("a"));
    assert_eq!(out[1].decision, bind("b"));
    assert_eq!(
        out[2].decision,
        Decision::Unschedulable(
            "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.".into()
        )
    );
    // Symmetry: a plain pod matching an existing pod's anti-affinity is kept away too.
    let mut existing = anti("e");
    existing.spec.as_mut().unwrap().node_name = Some("a".into());
    let out = plan(&nodes, &[existing, pod("plain", json!({}))]);
    assert_eq!(out[0].decision, bind("b"));
}

#[test]
fn required_pod_affinity_follows_matching_pods() {
    let nodes = vec![
        node("a", "4", json!({"zone": "z1"}), json!([])),
        node("b", "4", json!({"zone": "z2"}), json!([])),
    ];
    let mut db: Pod = pod("db", json!({}));
    db.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
    db.spec.as_mut().unwrap().node_name = Some("b".into());
    let follower = pod(
        "f",
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "db"}}}]}}}),
    );
    let out = plan(&nodes, &[db, follower.clone()]);
    assert_eq!(out[0].decision, bind("b"));
    // No matching pod anywhere and the pod does not match itself: unschedulable.
    let out = plan(&nodes, &[follower]);
    assert!(matches!(&out[0].decision, Decision::Unschedulable(m) if m.contains("pod affinity")));
}

#[test]
fn zone_spread_with_do_not_schedule_balances_pods() {
    let nodes = vec![
        node("a", "8", json!({"zone": "z1"}), json!([])),
        node("b", "1", json!({"zone": "z2"}), json!([])),
    ];
    let spread = |name: &str| {
        pod(
            name,
            json!({"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        )
    };
    let out = plan(&nodes, &[spread("p1"), spread("p2"), spread("p3")]);
    // Bin-packing alone would put p1 on b (less room) and the rest on a; spread alternates.
    let got: Vec<Decision> = out.into_iter().map(|d| d.decision).collect();
    assert_eq!(got[0], bind("b"));
    assert_eq!(got[1], bind("a"));
    // Both zones hold one pod: either is within the skew, bin-packing picks the fuller node.
    assert_eq!(got[2], bind("b"));
}

#[test]
fn unschedulable_patch_replaces_only_the_pod_scheduled_condition() {
    let mut p = pod("p", json!({}));
    p.status = Some(
        serde_json::from_value(json!({"conditions": [
        {"type": "Other", "status": "True"},
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "old"}]}))
        .unwrap(),
    );
    assert!(reports_unschedulable(&p, "old"));
    assert!(!reports_unschedulable(&p, "new"));
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    );
    let patch = unschedulable_patch(&p, "new", &now);
    let conds = patch["status"]["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 2);
    assert_eq!(conds[0]["type"], "Other");
    assert_eq!(conds[1]["reason"], "Unschedulable");
    assert_eq!(conds[1]["message"], "new");
}

#[test]
fn pods_are_planned_in_priority_then_creation_order_and_other_schedulers_are_left_alone() {
    let n = node("n", "1", json!({}), json!([]));
    let big = |name: &str, prio: i32, ts: &str| {
        let mut p = pod(
            name,
            json!({"priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": "600m"}}}]}),
        );
        p.metadata.creation_timestamp = Some(serde_json::from_value(json!(ts)).unwrap());
        p
    };
    let mut other = big("other", 100, "2024-01-01T00:00:00Z");
    other.spec.as_mut().unwrap().scheduler_name = Some("custom".into());
    let out = plan(
        &[n],
        &[
            big("old", 0, "2024-01-01T00:00:00Z"),
            big("new-important", 10, "2024-01-02T00:00:00Z"),
            other,
        ],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].name.as_str(), &out[0].decision),
        ("new-important", &bind("n"))
    );
    assert!(matches!(out[1].decision, Decision::Unschedulable(_)));
}
