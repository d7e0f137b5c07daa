//! Scenario tests modelled on Karpenter's scheduling suite. Every plan passes the validator.

use std::collections::BTreeMap;

use super::*;
use crate::cluster::{ClusterSnapshot, Node};
use crate::labels::{ARCH, CAPACITY_TYPE, HOSTNAME, INSTANCE_TYPE, ZONE};
use crate::pod::{LabelSelector, PodAffinityTerm};
use crate::requirements::Operator;
use crate::taints::{Effect, Toleration};
use crate::testing::*;
use crate::validation::validate;

fn run_with(snapshot: &ClusterSnapshot, options: &SchedulerOptions) -> SchedulingResults {
    let r = schedule(snapshot, options);
    if let Err(v) = validate(snapshot, &r) {
        panic!("plan failed validation: {v:?}\nplan: {r:#?}");
    }
    let lb = crate::packing::lower_bound_per_hour(snapshot, &r);
    assert!(
        lb <= r.cost_per_hour() + 1e-9,
        "lower bound {lb} above cost {}",
        r.cost_per_hour()
    );
    r
}

fn run(snapshot: &ClusterSnapshot) -> SchedulingResults {
    run_with(snapshot, &SchedulerOptions::default())
}

/// Sizes 2, 4, 8, 16 CPU with 4 GiB per CPU, priced by size.
fn sized_types() -> Vec<std::sync::Arc<crate::cloud::InstanceType>> {
    [2, 4, 8, 16]
        .iter()
        .map(|&c| {
            instance_type(&format!("m.{c}x"))
                .cpu(&c.to_string())
                .memory(&format!("{}Gi", c * 4))
                .price(0.05 * f64::from(c))
                .build()
        })
        .collect()
}

fn snapshot(
    types: Vec<std::sync::Arc<crate::cloud::InstanceType>>,
    pods: Vec<crate::pod::Pod>,
) -> ClusterSnapshot {
    ClusterSnapshot {
        node_pools: vec![nodepool("default", types)],
        pods,
        ..Default::default()
    }
}

fn pods(prefix: &str, n: usize, f: impl Fn(PodBuilder) -> PodBuilder) -> Vec<crate::pod::Pod> {
    (0..n)
        .map(|i| f(pod(&format!("{prefix}-{i}"))).build())
        .collect()
}

fn zone_of(c: &NewNodeClaim) -> &str {
    c.requirements
        .get(ZONE)
        .and_then(|r| r.single_value())
        .unwrap_or(&c.cheapest.zone)
}

fn zone_counts(r: &SchedulingResults) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in &r.new_nodeclaims {
        *m.entry(zone_of(c).to_string()).or_default() += c.pods.len();
    }
    m
}

// ---------------------------------------------------------------- binpacking

#[test]
fn packs_pods_onto_one_node_when_they_fit() {
    let s = snapshot(sized_types(), pods("p", 10, |p| p.cpu("1").memory("1Gi")));
    let r = run(&s);
    assert_eq!(r.new_nodeclaims.len(), 1);
    assert_eq!(r.new_nodeclaims[0].pods.len(), 10);
    assert_eq!(r.new_nodeclaims[0].cheapest.instance_type, "m.16x");
}

#[test]
fn keeps_every_instance_type_that_still_fits_cheapest_first() {
    let s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("3").memory("1Gi")));
    let r = run(&s);
    let names: Vec<&str> = r.new_nodeclaims[0]
        .instance_types
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["m.4x", "m.8x", "m.16x"]);
    let it = r.new_nodeclaims[0].requirements.get(INSTANCE_TYPE).unwrap();
    assert_eq!(it.values(), vec!["m.16x", "m.4x", "m.8x"]);
}

#[test]
fn opens_new_nodes_when_pods_do_not_fit_together() {
    let types = vec![instance_type("m.4x").cpu("4").memory("16Gi").build()];
    let s = snapshot(types, pods("p", 3, |p| p.cpu("3")));
    let r = run(&s);
    assert_eq!(r.new_nodeclaims.len(), 3);
}

#[test]
fn pods_are_packed_largest_first() {
    let types = vec![instance_type("m.4x").cpu("4").memory("16Gi").build()];
    let mut ps = pods("small", 4, |p| p.cpu("1"));
    ps.extend(pods("big", 2, |p| p.cpu("3")));
    let r = run(&snapshot(types, ps));
    // FFD: each big pod gets a node, small pods fill the remaining 1 CPU of each, then one more node.
    assert_eq!(r.new_nodeclaims.len(), 3);
}

#[test]
fn pod_too_large_for_every_type_gets_a_reason_naming_its_requests() {
    let s = snapshot(sized_types(), pods("huge", 1, |p| p.cpu("64")));
    let r = run(&s);
    assert_eq!(r.unschedulable.len(), 1);
    let reason = &r.unschedulable[0].reason;
    assert!(reason.contains("nodepool \"default\""), "{reason}");
    assert!(
        reason.contains("no instance type has enough resources") && reason.contains("cpu=64"),
        "{reason}"
    );
}

#[test]
fn extended_resources_select_types_that_have_them() {
    let mut types = sized_types();
    types.push(
        instance_type("g.4x")
            .cpu("4")
            .memory("16Gi")
            .resource("nvidia.com/gpu", "1")
            .price(1.0)
            .build(),
    );
    let r = run(&snapshot(
        types,
        pods("gpu", 1, |p| p.cpu("1").resource("nvidia.com/gpu", "1")),
    ));
    assert_eq!(r.new_nodeclaims[0].cheapest.instance_type, "g.4x");
}

#[test]
fn pod_slots_limit_packing() {
    let types = vec![instance_type("tiny-pods")
        .cpu("16")
        .memory("64Gi")
        .pods(3)
        .build()];
    let r = run(&snapshot(types, pods("p", 7, |p| p.cpu("100m"))));
    assert_eq!(r.new_nodeclaims.len(), 3);
}

// ---------------------------------------------------------------- requirements and fallback

#[test]
fn required_node_affinity_falls_back_to_the_next_term() {
    let s = snapshot(
        sized_types(),
        pods("p", 1, |p| {
            p.cpu("1")
                .required_term(vec![req(ZONE, Operator::In, &["nowhere"])])
                .required_term(vec![req(ZONE, Operator::In, &["test-zone-2"])])
        }),
    );
    let r = run(&s);
    assert_eq!(zone_of(&r.new_nodeclaims[0]), "test-zone-2");
}

#[test]
fn satisfiable_preferred_node_affinity_is_honoured() {
    let s = snapshot(
        sized_types(),
        pods("p", 1, |p| {
            p.cpu("1")
                .preferred_term(10, vec![req(ZONE, Operator::In, &["test-zone-3"])])
        }),
    );
    let r = run(&s);
    assert_eq!(zone_of(&r.new_nodeclaims[0]), "test-zone-3");
}

#[test]
fn heaviest_preference_wins_and_unsatisfiable_ones_are_relaxed() {
    let s = snapshot(
        sized_types(),
        pods("p", 1, |p| {
            p.cpu("1")
                .preferred_term(1, vec![req(ZONE, Operator::In, &["test-zone-1"])])
                .preferred_term(50, vec![req(ZONE, Operator::In, &["nowhere"])])
        }),
    );
    let r = run(&s);
    assert!(r.unschedulable.is_empty());
    assert_eq!(zone_of(&r.new_nodeclaims[0]), "test-zone-1");
    assert!(r.stats.relaxations >= 1);
}

#[test]
fn ignore_preference_policy_drops_preferences() {
    let s = snapshot(
        sized_types(),
        pods("p", 1, |p| {
            p.cpu("1")
                .preferred_term(10, vec![req(ZONE, Operator::In, &["test-zone-3"])])
        }),
    );
    let r = run_with(
        &s,
        &SchedulerOptions {
            preference_policy: PreferencePolicy::Ignore,
            ..Default::default()
        },
    );
    assert_eq!(r.stats.relaxations, 0);
    assert!(r.new_nodeclaims[0]
        .requirements
        .get(ZONE)
        .is_none_or(|z| z.single_value().is_none()));
}

#[test]
fn custom_labels_must_come_from_the_nodepool() {
    let s = snapshot(
        sized_types(),
        pods("p", 1, |p| p.cpu("1").node_selector("team", "a")),
    );
    let r = run(&s);
    assert!(
        r.unschedulable[0]
            .reason
            .contains("no node pool or instance type sets label \"team\""),
        "{}",
        r.unschedulable[0].reason
    );
    let mut s2 = s.clone();
    s2.node_pools[0].labels.insert("team".into(), "a".into());
    let r = run(&s2);
    assert!(r.unschedulable.is_empty());
    assert_eq!(r.new_nodeclaims[0].labels["team"], "a");
}

#[test]
fn custom_label_requirements_of_the_pool_become_node_labels() {
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    s.node_pools[0]
        .requirements
        .add(req("example.com/team", Operator::In, &["a", "b"]));
    s.node_pools[0]
        .requirements
        .add(req("example.com/tier", Operator::Exists, &[]));
    s.node_pools[0]
        .requirements
        .add(req("example.com/gen", Operator::Gt, &["3"]));
    let r = run(&s);
    let labels = &r.new_nodeclaims[0].labels;
    assert_eq!(labels["example.com/team"], "a");
    assert_eq!(labels["example.com/gen"], "4");
    assert!(labels.contains_key("example.com/tier"));
    // A pod selecting the other value narrows the claim to it.
    s.pods = pods("p", 1, |p| {
        p.cpu("1").node_selector("example.com/team", "b")
    });
    assert_eq!(run(&s).new_nodeclaims[0].labels["example.com/team"], "b");
}

#[test]
fn not_in_and_does_not_exist_on_undefined_labels_are_fine() {
    let s = snapshot(
        sized_types(),
        pods("p", 1, |p| {
            p.cpu("1").required_term(vec![
                req("team", Operator::NotIn, &["x"]),
                req("gpu", Operator::DoesNotExist, &[]),
            ])
        }),
    );
    assert!(run(&s).unschedulable.is_empty());
}

#[test]
fn architecture_requirements_select_matching_types() {
    let types = vec![
        instance_type("amd")
            .cpu("4")
            .arch("amd64")
            .price(0.1)
            .build(),
        instance_type("arm")
            .cpu("4")
            .arch("arm64")
            .price(0.2)
            .build(),
    ];
    let r = run(&snapshot(
        types,
        pods("p", 1, |p| p.cpu("1").node_selector(ARCH, "arm64")),
    ));
    assert_eq!(r.new_nodeclaims[0].cheapest.instance_type, "arm");
}

#[test]
fn gt_and_lt_requirements_filter_numeric_labels() {
    let types: Vec<_> = [2, 4, 8]
        .iter()
        .map(|c| {
            instance_type(&format!("c{c}"))
                .cpu(&c.to_string())
                .label("example.com/cpu", &c.to_string())
                .price(f64::from(*c))
                .build()
        })
        .collect();
    let r = run(&snapshot(
        types,
        pods("p", 1, |p| {
            p.cpu("1")
                .required_term(vec![req("example.com/cpu", Operator::Gt, &["3"])])
        }),
    ));
    assert_eq!(r.new_nodeclaims[0].cheapest.instance_type, "c4");
}

#[test]
fn volume_zones_pin_the_node() {
    let r = run(&snapshot(
        sized_types(),
        pods("db", 1, |p| p.cpu("1").volume_zone("test-zone-3")),
    ));
    assert_eq!(zone_of(&r.new_nodeclaims[0]), "test-zone-3");
}

// ---------------------------------------------------------------- capacity types and offerings

#[test]
fn cheapest_offering_is_spot_unless_the_pool_requires_on_demand() {
    let s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    let r = run(&s);
    assert_eq!(r.new_nodeclaims[0].cheapest.capacity_type, "spot");
    let mut s2 = s.clone();
    s2.node_pools[0]
        .requirements
        .add(req(CAPACITY_TYPE, Operator::In, &["on-demand"]));
    let r = run(&s2);
    assert_eq!(r.new_nodeclaims[0].cheapest.capacity_type, "on-demand");
    assert_eq!(
        r.new_nodeclaims[0]
            .requirements
            .get(CAPACITY_TYPE)
            .unwrap()
            .values(),
        vec!["on-demand"]
    );
}

#[test]
fn pods_can_select_a_capacity_type() {
    let s = snapshot(
        sized_types(),
        pods("p", 1, |p| {
            p.cpu("1").node_selector(CAPACITY_TYPE, "on-demand")
        }),
    );
    assert_eq!(
        run(&s).new_nodeclaims[0].cheapest.capacity_type,
        "on-demand"
    );
}

#[test]
fn unavailable_offerings_are_not_chosen() {
    use crate::cloud::Offering;
    let mut spot = Offering::new("test-zone-1", "spot", 0.01);
    spot.available = false;
    let types = vec![instance_type("only")
        .cpu("4")
        .offerings(vec![spot, Offering::new("test-zone-1", "on-demand", 0.1)])
        .build()];
    let r = run(&snapshot(types, pods("p", 1, |p| p.cpu("1"))));
    assert_eq!(r.new_nodeclaims[0].cheapest.capacity_type, "on-demand");
}

#[test]
fn zone_restricted_pool_only_uses_its_zones() {
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    s.node_pools[0]
        .requirements
        .add(req(ZONE, Operator::In, &["test-zone-2"]));
    assert_eq!(run(&s).new_nodeclaims[0].cheapest.zone, "test-zone-2");
}

#[test]
fn options_are_truncated_but_keep_the_cheapest() {
    let s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    let r = run_with(
        &s,
        &SchedulerOptions {
            max_instance_types: 2,
            ..Default::default()
        },
    );
    let names: Vec<&str> = r.new_nodeclaims[0]
        .instance_types
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["m.2x", "m.4x"]);
}

#[test]
fn min_values_that_cannot_be_met_make_pods_unschedulable() {
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("10")));
    s.node_pools[0]
        .requirements
        .add(req(INSTANCE_TYPE, Operator::Exists, &[]).with_min_values(2));
    let r = run(&s);
    assert!(
        r.unschedulable[0].reason.contains("minValues"),
        "{}",
        r.unschedulable[0].reason
    );
    // Smaller pods leave enough types.
    s.pods = pods("p", 1, |p| p.cpu("1"));
    assert!(run(&s).unschedulable.is_empty());
}

#[test]
fn min_values_survive_truncation_or_fail() {
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    s.node_pools[0]
        .requirements
        .add(req(INSTANCE_TYPE, Operator::Exists, &[]).with_min_values(3));
    let r = run_with(
        &s,
        &SchedulerOptions {
            max_instance_types: 2,
            ..Default::default()
        },
    );
    assert!(
        r.unschedulable[0].reason.contains("truncating"),
        "{}",
        r.unschedulable[0].reason
    );
}

// ---------------------------------------------------------------- weights and pools

#[test]
fn higher_weight_pools_are_tried_first() {
    let mut low = nodepool("low", sized_types());
    low.weight = 1;
    let mut high = nodepool("high", sized_types());
    high.weight = 50;
    let s = ClusterSnapshot {
        node_pools: vec![low, high],
        pods: pods("p", 1, |p| p.cpu("1")),
        ..Default::default()
    };
    assert_eq!(run(&s).new_nodeclaims[0].nodepool, "high");
}

#[test]
fn pods_fall_back_to_a_lower_weight_pool_they_tolerate() {
    let mut high = nodepool("high", sized_types());
    high.weight = 50;
    high.taints
        .push(taint("dedicated", "gpu", Effect::NoSchedule));
    let low = nodepool("low", sized_types());
    let s = ClusterSnapshot {
        node_pools: vec![low, high],
        pods: pods("p", 1, |p| p.cpu("1")),
        ..Default::default()
    };
    assert_eq!(run(&s).new_nodeclaims[0].nodepool, "low");
}

#[test]
fn no_nodepool_means_a_clear_reason() {
    let s = ClusterSnapshot {
        pods: pods("p", 1, |p| p.cpu("1")),
        ..Default::default()
    };
    assert!(run(&s).unschedulable[0].reason.contains("no NodePool"));
}

#[test]
fn pods_pinned_to_a_nodepool_by_label_use_it() {
    let a = nodepool("a", sized_types());
    let b = nodepool("b", sized_types());
    let s = ClusterSnapshot {
        node_pools: vec![a, b],
        pods: pods("p", 2, |p| {
            p.cpu("1")
                .required_term(vec![req(crate::labels::NODEPOOL, Operator::In, &["b"])])
        }),
        ..Default::default()
    };
    let r = run(&s);
    assert!(r.new_nodeclaims.iter().all(|c| c.nodepool == "b"));
}

// ---------------------------------------------------------------- taints

#[test]
fn taints_require_tolerations() {
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    s.node_pools[0]
        .taints
        .push(taint("dedicated", "web", Effect::NoSchedule));
    let r = run(&s);
    assert!(
        r.unschedulable[0]
            .reason
            .contains("did not tolerate taint dedicated=web:NoSchedule"),
        "{}",
        r.unschedulable[0].reason
    );
    s.pods = pods("p", 1, |p| {
        p.cpu("1").toleration(Toleration::equal(
            "dedicated",
            "web",
            Some(Effect::NoSchedule),
        ))
    });
    let r = run(&s);
    assert!(r.unschedulable.is_empty());
    assert_eq!(r.new_nodeclaims[0].taints.len(), 1);
}

#[test]
fn startup_taints_do_not_block_placement() {
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    s.node_pools[0].startup_taints.push(taint(
        "node.cilium.io/agent-not-ready",
        "",
        Effect::NoExecute,
    ));
    assert!(run(&s).unschedulable.is_empty());
}

#[test]
fn prefer_no_schedule_is_tolerated_as_the_last_relaxation() {
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    s.node_pools[0]
        .taints
        .push(taint("soft", "", Effect::PreferNoSchedule));
    let r = run(&s);
    assert!(r.unschedulable.is_empty());
    assert_eq!(r.stats.relaxations, 1);
}

#[test]
fn existing_node_taints_are_respected() {
    let it = instance_type("m.4x").cpu("4").memory("16Gi").build();
    let mut n = node_from("tainted", &it, "test-zone-1", "default", "spot");
    n.taints.push(taint("maintenance", "", Effect::NoSchedule));
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    s.nodes.push(n);
    let r = run(&s);
    assert!(r.existing.is_empty());
    assert_eq!(r.new_nodeclaims.len(), 1);
}

// ---------------------------------------------------------------- host ports

#[test]
fn host_ports_conflict_within_a_node() {
    let r = run(&snapshot(
        sized_types(),
        pods("p", 3, |p| p.cpu("100m").host_port(8080)),
    ));
    assert_eq!(r.new_nodeclaims.len(), 3);
    let r = run(&snapshot(
        sized_types(),
        (0..3)
            .map(|i| pod(&format!("p{i}")).cpu("100m").host_port(8080 + i))
            .map(PodBuilder::build)
            .collect(),
    ));
    assert_eq!(r.new_nodeclaims.len(), 1);
}

#[test]
fn host_ports_of_bound_pods_block_existing_nodes() {
    let it = instance_type("m.4x").cpu("4").memory("16Gi").build();
    let mut s = snapshot(
        sized_types(),
        pods("p", 1, |p| p.cpu("100m").host_port(443)),
    );
    s.nodes
        .push(node_from("n1", &it, "test-zone-1", "default", "spot"));
    s.pods.push(pod("bound").host_port(443).node("n1").build());
    let r = run(&s);
    assert!(r.existing.is_empty());
    assert_eq!(r.new_nodeclaims.len(), 1);
}

// ---------------------------------------------------------------- existing and in-flight nodes

#[test]
fn existing_and_in_flight_nodes_are_used_before_new_ones() {
    let it = instance_type("m.4x").cpu("4").memory("16Gi").build();
    let mut s = snapshot(sized_types(), pods("p", 5, |p| p.cpu("1")));
    let mut inflight = node_from("inflight", &it, "test-zone-1", "default", "spot");
    inflight.initialized = false;
    s.nodes.push(inflight);
    s.nodes
        .push(node_from("ready", &it, "test-zone-2", "default", "spot"));
    s.pods.push(pod("bound").cpu("2").node("ready").build());
    let r = run(&s);
    assert!(r.new_nodeclaims.is_empty(), "{r:#?}");
    // Initialized nodes first: 2 CPU free on "ready", the rest on the in-flight node.
    let by: BTreeMap<&str, usize> = r
        .existing
        .iter()
        .map(|e| (e.node.as_str(), e.pods.len()))
        .collect();
    assert_eq!(by["ready"], 2);
    assert_eq!(by["inflight"], 3);
}

#[test]
fn nodes_over_committed_by_bound_pods_still_take_pods_that_need_other_resources() {
    let it = instance_type("m.2x").cpu("2").memory("8Gi").build();
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.memory("1Gi")));
    s.nodes
        .push(node_from("n1", &it, "test-zone-1", "default", "spot"));
    s.pods.push(
        pod("odd")
            .resource("example.com/foo", "1")
            .node("n1")
            .build(),
    );
    let r = run(&s);
    assert_eq!(r.existing.len(), 1);
}

#[test]
fn deleting_nodes_receive_no_pods() {
    let it = instance_type("m.4x").cpu("4").memory("16Gi").build();
    let mut n = node_from("going", &it, "test-zone-1", "default", "spot");
    n.deleting = true;
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    s.nodes.push(n);
    assert!(run(&s).existing.is_empty());
}

#[test]
fn node_selectors_apply_to_existing_nodes() {
    let it = instance_type("m.4x").cpu("4").memory("16Gi").build();
    let mut s = snapshot(
        sized_types(),
        pods("p", 1, |p| p.cpu("1").node_selector(ZONE, "test-zone-2")),
    );
    s.nodes
        .push(node_from("n1", &it, "test-zone-1", "default", "spot"));
    let r = run(&s);
    assert!(r.existing.is_empty());
    assert_eq!(zone_of(&r.new_nodeclaims[0]), "test-zone-2");
}

// ---------------------------------------------------------------- daemonsets

#[test]
fn daemonset_overhead_is_added_to_new_nodes() {
    let types = vec![
        instance_type("m.2x")
            .cpu("2")
            .memory("8Gi")
            .price(0.1)
            .build(),
        instance_type("m.4x")
            .cpu("4")
            .memory("16Gi")
            .price(0.2)
            .build(),
    ];
    let mut s = snapshot(types, pods("p", 1, |p| p.cpu("1500m")));
    s.daemonsets.push(pod("ds").cpu("1").build());
    let r = run(&s);
    assert_eq!(r.new_nodeclaims[0].cheapest.instance_type, "m.4x");
    assert_eq!(r.new_nodeclaims[0].daemon_overhead.cpu, 1000);
}

#[test]
fn daemonsets_that_do_not_tolerate_the_pool_add_no_overhead() {
    let types = vec![
        instance_type("m.2x")
            .cpu("2")
            .memory("8Gi")
            .price(0.1)
            .build(),
        instance_type("m.4x")
            .cpu("4")
            .memory("16Gi")
            .price(0.2)
            .build(),
    ];
    let mut s = snapshot(
        types,
        pods("p", 1, |p| {
            p.cpu("1500m").toleration(Toleration::exists("dedicated"))
        }),
    );
    s.node_pools[0]
        .taints
        .push(taint("dedicated", "x", Effect::NoSchedule));
    s.daemonsets.push(pod("ds").cpu("1").build());
    s.daemonsets.push(
        pod("ds-other-arch")
            .cpu("1")
            .toleration(Toleration::exists(""))
            .node_selector(ARCH, "s390x")
            .build(),
    );
    let r = run(&s);
    assert_eq!(r.new_nodeclaims[0].cheapest.instance_type, "m.2x");
}

// ---------------------------------------------------------------- limits

#[test]
fn nodepool_cpu_limits_stop_new_nodes() {
    let types = vec![instance_type("m.4x").cpu("4").memory("16Gi").build()];
    let mut s = snapshot(types, pods("p", 3, |p| p.cpu("3")));
    s.node_pools[0].limits.resources.insert("cpu".into(), 8000);
    let r = run(&s);
    assert_eq!(r.new_nodeclaims.len(), 2);
    assert_eq!(r.unschedulable.len(), 1);
    assert!(
        r.unschedulable[0].reason.contains("limits"),
        "{}",
        r.unschedulable[0].reason
    );
}

#[test]
fn limits_subtract_the_largest_option() {
    // A 1-CPU pod could use a 2- or 16-CPU type; the limit accounting assumes the largest.
    let mut s = snapshot(sized_types(), pods("p", 2, |p| p.cpu("1").host_port(80)));
    s.node_pools[0]
        .limits
        .resources
        .insert("cpu".into(), 20_000);
    let r = run(&s);
    assert_eq!(r.new_nodeclaims.len(), 2);
    // The second claim had only 4 CPU of limit left: its options stop at 4 CPU.
    let max_second = r.new_nodeclaims[1]
        .instance_types
        .iter()
        .map(|t| t.capacity.cpu)
        .max()
        .unwrap();
    assert_eq!(max_second, 4000);
}

#[test]
fn node_count_limits_include_existing_nodes() {
    let it = instance_type("m.2x").cpu("2").memory("8Gi").build();
    let mut s = snapshot(vec![it.clone()], pods("p", 3, |p| p.cpu("1500m")));
    s.node_pools[0].limits.nodes = Some(2);
    s.nodes
        .push(node_from("n1", &it, "test-zone-1", "default", "spot"));
    s.pods.push(pod("bound").cpu("1").node("n1").build());
    let r = run(&s);
    assert_eq!(r.new_nodeclaims.len(), 1);
    assert_eq!(r.unschedulable.len(), 2);
    assert!(r.unschedulable[0].reason.contains("limit of nodes"));
}

// ---------------------------------------------------------------- topology spread

#[test]
fn zonal_spread_balances_across_zones() {
    let r = run(&snapshot(
        sized_types(),
        pods("web", 6, |p| {
            p.cpu("1")
                .label("app", "web")
                .spread(ZONE, 1, &[("app", "web")])
        }),
    ));
    let counts = zone_counts(&r);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{counts:?}"
    );
}

#[test]
fn zonal_spread_counts_existing_pods() {
    let it = instance_type("m.4x").cpu("4").memory("16Gi").build();
    let mut s = snapshot(
        sized_types(),
        pods("web", 4, |p| {
            p.cpu("3")
                .label("app", "web")
                .spread(ZONE, 1, &[("app", "web")])
        }),
    );
    s.nodes
        .push(node_from("full", &it, "test-zone-1", "default", "spot"));
    for i in 0..2 {
        s.pods.push(
            pod(&format!("old-{i}"))
                .cpu("1500m")
                .label("app", "web")
                .node("full")
                .build(),
        );
    }
    let r = run(&s);
    let counts = zone_counts(&r);
    assert_eq!(counts.get("test-zone-1"), None, "{counts:?}");
    assert_eq!(counts["test-zone-2"], 2);
    assert_eq!(counts["test-zone-3"], 2);
}

#[test]
fn spread_respects_the_pods_own_zone_requirements() {
    let r = run(&snapshot(
        sized_types(),
        pods("web", 4, |p| {
            p.cpu("1")
                .label("app", "web")
                .spread(ZONE, 1, &[("app", "web")])
                .required_term(vec![req(
                    ZONE,
                    Operator::In,
                    &["test-zone-1", "test-zone-2"],
                )])
        }),
    ));
    let counts = zone_counts(&r);
    assert_eq!(counts.len(), 2);
    assert_eq!(counts["test-zone-1"], 2);
}

#[test]
fn hostname_spread_puts_one_pod_per_node() {
    let r = run(&snapshot(
        sized_types(),
        pods("web", 4, |p| {
            p.cpu("100m")
                .label("app", "web")
                .spread(HOSTNAME, 1, &[("app", "web")])
        }),
    ));
    assert_eq!(r.new_nodeclaims.len(), 4);
}

#[test]
fn hostname_spread_max_skew_allows_several_per_node() {
    let r = run(&snapshot(
        sized_types(),
        pods("web", 4, |p| {
            p.cpu("100m")
                .label("app", "web")
                .spread(HOSTNAME, 2, &[("app", "web")])
        }),
    ));
    assert_eq!(r.new_nodeclaims.len(), 2);
}

#[test]
fn min_domains_limits_pods_per_domain_when_domains_are_missing() {
    let r = run(&snapshot(
        sized_types(),
        pods("web", 5, |p| {
            p.cpu("100m")
                .label("app", "web")
                .spread_min_domains(ZONE, 1, 5, &[("app", "web")])
        }),
    ));
    // Only 3 zones exist, fewer than minDomains 5: global min is 0, so at most maxSkew (1) per zone.
    assert_eq!(r.unschedulable.len(), 2);
    assert!(
        r.unschedulable[0]
            .reason
            .contains("topology spread constraint on topology.kubernetes.io/zone"),
        "{}",
        r.unschedulable[0].reason
    );
    assert_eq!(
        zone_counts(&r).values().copied().collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
}

#[test]
fn spread_only_counts_matching_pods() {
    let mut ps = pods("web", 3, |p| {
        p.cpu("100m")
            .label("app", "web")
            .spread(ZONE, 1, &[("app", "web")])
    });
    ps.extend(pods("other", 3, |p| p.cpu("100m").label("app", "other")));
    let r = run(&snapshot(sized_types(), ps));
    assert!(r.unschedulable.is_empty());
}

#[test]
fn schedule_anyway_spread_is_relaxed_when_it_cannot_be_met() {
    let mut s = snapshot(
        sized_types(),
        pods("web", 3, |p| {
            p.cpu("100m")
                .label("app", "web")
                .spread_soft(HOSTNAME, 1, &[("app", "web")])
        }),
    );
    s.node_pools[0].limits.nodes = Some(1);
    let r = run(&s);
    assert!(r.unschedulable.is_empty(), "{r:#?}");
    assert_eq!(r.new_nodeclaims.len(), 1);
}

#[test]
fn match_label_keys_split_spread_groups_by_revision() {
    let mk = |name: &str, rev: &str| {
        let mut t = crate::pod::TopologySpreadConstraint::new(
            HOSTNAME,
            1,
            LabelSelector::labels([("app", "web")]),
        );
        t.match_label_keys = vec!["rev".into()];
        pod(name)
            .cpu("100m")
            .label("app", "web")
            .label("rev", rev)
            .spread_constraint(t)
            .build()
    };
    let ps = vec![mk("a1", "1"), mk("a2", "1"), mk("b1", "2"), mk("b2", "2")];
    let r = run(&snapshot(sized_types(), ps));
    // Each revision spreads on its own: two nodes hold one of each.
    assert_eq!(r.new_nodeclaims.len(), 2);
}

fn policy_snapshot(
    affinity: crate::pod::InclusionPolicy,
    taints: crate::pod::InclusionPolicy,
    tainted: bool,
) -> ClusterSnapshot {
    let mut types = sized_types();
    types.push(
        instance_type("arm.16x")
            .cpu("16")
            .memory("64Gi")
            .arch("arm64")
            .price(0.7)
            .build(),
    );
    let it = instance_type("m.4x").cpu("4").memory("16Gi").build();
    let mk = |i: usize| {
        let mut t = crate::pod::TopologySpreadConstraint::new(
            ZONE,
            1,
            LabelSelector::labels([("app", "web")]),
        );
        t.node_affinity_policy = affinity;
        t.node_taints_policy = taints;
        let mut b = pod(&format!("web-{i}"))
            .cpu("100m")
            .label("app", "web")
            .spread_constraint(t);
        if !tainted {
            b = b.required_term(vec![req(ARCH, Operator::In, &["arm64"])]);
        }
        b.build()
    };
    let mut s = snapshot(types, (0..3).map(mk).collect());
    let mut n = node_from("old", &it, "test-zone-1", "default", "spot");
    if tainted {
        n.taints.push(taint("maintenance", "", Effect::NoSchedule));
    }
    s.nodes.push(n);
    for i in 0..2 {
        s.pods.push(
            pod(&format!("old-{i}"))
                .cpu("100m")
                .label("app", "web")
                .toleration(Toleration::exists("maintenance"))
                .node("old")
                .build(),
        );
    }
    s
}

#[test]
fn node_taints_policy_honor_ignores_pods_on_untolerated_nodes() {
    use crate::pod::InclusionPolicy::{Honor, Ignore};
    let r = run(&policy_snapshot(Honor, Ignore, true));
    assert!(
        !zone_counts(&r).contains_key("test-zone-1"),
        "{:?}",
        zone_counts(&r)
    );
    let r = run(&policy_snapshot(Honor, Honor, true));
    assert_eq!(
        zone_counts(&r).get("test-zone-1"),
        Some(&1),
        "{:?}",
        zone_counts(&r)
    );
}

#[test]
fn node_affinity_policy_honor_ignores_pods_on_nodes_the_pod_cannot_use() {
    use crate::pod::InclusionPolicy::{Honor, Ignore};
    let r = run(&policy_snapshot(Honor, Ignore, false));
    assert_eq!(
        zone_counts(&r).get("test-zone-1"),
        Some(&1),
        "{:?}",
        zone_counts(&r)
    );
    let r = run(&policy_snapshot(Ignore, Ignore, false));
    assert!(
        !zone_counts(&r).contains_key("test-zone-1"),
        "{:?}",
        zone_counts(&r)
    );
}

// ---------------------------------------------------------------- pod affinity

#[test]
fn zonal_affinity_follows_existing_pods() {
    let it = instance_type("m.4x").cpu("4").memory("16Gi").build();
    let mut s = snapshot(
        sized_types(),
        pods("app", 3, |p| p.cpu("1").affinity(ZONE, &[("app", "db")])),
    );
    s.nodes
        .push(node_from("dbnode", &it, "test-zone-2", "default", "spot"));
    s.pods
        .push(pod("db").cpu("4").label("app", "db").node("dbnode").build());
    let r = run(&s);
    assert!(r.unschedulable.is_empty());
    assert!(r.new_nodeclaims.iter().all(|c| zone_of(c) == "test-zone-2"));
}

#[test]
fn affinity_without_matching_pods_is_unschedulable() {
    let r = run(&snapshot(
        sized_types(),
        pods("app", 1, |p| p.cpu("1").affinity(ZONE, &[("app", "db")])),
    ));
    assert!(
        r.unschedulable[0]
            .reason
            .contains("pod affinity on topology.kubernetes.io/zone"),
        "{}",
        r.unschedulable[0].reason
    );
}

#[test]
fn self_affinity_keeps_a_group_in_one_zone() {
    let r = run(&snapshot(
        sized_types(),
        pods("cache", 6, |p| {
            p.cpu("6")
                .label("app", "cache")
                .affinity(ZONE, &[("app", "cache")])
        }),
    ));
    assert!(r.unschedulable.is_empty());
    assert_eq!(zone_counts(&r).len(), 1);
    assert!(r.new_nodeclaims.len() >= 3);
}

#[test]
fn affinity_waits_for_pending_pods_it_depends_on() {
    // The dependent pod is larger, so it is tried first and must be retried after the db pod.
    let mut ps = pods("app", 1, |p| {
        p.cpu("2").affinity(HOSTNAME, &[("app", "db")])
    });
    ps.extend(pods("db", 1, |p| p.cpu("1").label("app", "db")));
    let r = run(&snapshot(sized_types(), ps));
    assert!(r.unschedulable.is_empty(), "{r:#?}");
    assert_eq!(r.new_nodeclaims.len(), 1);
}

#[test]
fn preferred_affinity_is_relaxed_when_unsatisfiable() {
    let r = run(&snapshot(
        sized_types(),
        pods("app", 1, |p| {
            p.cpu("1")
                .preferred_affinity(10, ZONE, &[("app", "missing")])
        }),
    ));
    assert!(r.unschedulable.is_empty());
}

// ---------------------------------------------------------------- anti-affinity

#[test]
fn hostname_anti_affinity_gives_each_pod_its_own_node() {
    let r = run(&snapshot(
        sized_types(),
        pods("web", 5, |p| {
            p.cpu("100m")
                .label("app", "web")
                .anti_affinity(HOSTNAME, &[("app", "web")])
        }),
    ));
    assert_eq!(r.new_nodeclaims.len(), 5);
}

#[test]
fn zonal_anti_affinity_allows_one_pod_per_zone() {
    let r = run(&snapshot(
        sized_types(),
        pods("web", 4, |p| {
            p.cpu("100m")
                .label("app", "web")
                .anti_affinity(ZONE, &[("app", "web")])
        }),
    ));
    assert_eq!(r.new_nodeclaims.len(), 3);
    assert_eq!(r.unschedulable.len(), 1);
    assert!(
        r.unschedulable[0].reason.contains("anti-affinity"),
        "{}",
        r.unschedulable[0].reason
    );
}

#[test]
fn anti_affinity_of_bound_pods_is_symmetric() {
    let it = instance_type("m.16x").cpu("16").memory("64Gi").build();
    let mut s = snapshot(
        sized_types(),
        pods("web", 2, |p| p.cpu("100m").label("app", "web")),
    );
    s.nodes
        .push(node_from("n1", &it, "test-zone-1", "default", "spot"));
    s.pods.push(
        pod("loner")
            .cpu("100m")
            .anti_affinity(ZONE, &[("app", "web")])
            .node("n1")
            .build(),
    );
    let r = run(&s);
    assert!(r.existing.is_empty());
    assert!(
        r.new_nodeclaims.iter().all(|c| zone_of(c) != "test-zone-1"),
        "{r:#?}"
    );
}

#[test]
fn anti_affinity_avoids_domains_of_existing_matching_pods() {
    let it = instance_type("m.16x").cpu("16").memory("64Gi").build();
    let mut s = snapshot(
        sized_types(),
        pods("web", 1, |p| {
            p.cpu("100m").anti_affinity(ZONE, &[("app", "db")])
        }),
    );
    s.nodes
        .push(node_from("n1", &it, "test-zone-1", "default", "spot"));
    s.pods
        .push(pod("db").cpu("100m").label("app", "db").node("n1").build());
    let r = run(&s);
    assert!(r.existing.is_empty());
    assert_ne!(zone_of(&r.new_nodeclaims[0]), "test-zone-1");
}

#[test]
fn anti_affinity_namespace_selector_covers_other_namespaces() {
    let it = instance_type("m.16x").cpu("16").memory("64Gi").build();
    let term = PodAffinityTerm {
        namespace_selector: Some(LabelSelector::labels([("team", "data")])),
        ..PodAffinityTerm::new(HOSTNAME, [("app", "db")])
    };
    let mut p = pod("web").cpu("100m").build();
    p.pod_anti_affinity.push(term);
    let mut s = snapshot(sized_types(), vec![p]);
    s.namespaces.insert(
        "data".into(),
        [("team".to_string(), "data".to_string())].into(),
    );
    s.nodes
        .push(node_from("n1", &it, "test-zone-1", "default", "spot"));
    s.pods.push(
        pod("db")
            .namespace("data")
            .cpu("100m")
            .label("app", "db")
            .node("n1")
            .build(),
    );
    let r = run(&s);
    assert!(r.existing.is_empty());
    // Without the selector the term only looks at its own namespace, so n1 is fine.
    let mut s2 = s.clone();
    s2.pods[0].pod_anti_affinity[0].namespace_selector = None;
    assert_eq!(run(&s2).existing.len(), 1);
}

#[test]
fn preferred_anti_affinity_is_relaxed_when_unsatisfiable() {
    let mut s = snapshot(
        sized_types(),
        pods("web", 3, |p| {
            p.cpu("100m").label("app", "web").preferred_anti_affinity(
                10,
                HOSTNAME,
                &[("app", "web")],
            )
        }),
    );
    s.node_pools[0].limits.nodes = Some(2);
    let r = run(&s);
    assert!(r.unschedulable.is_empty());
    assert_eq!(r.new_nodeclaims.len(), 2);
}

// ---------------------------------------------------------------- whole-plan properties

#[test]
fn same_snapshot_gives_the_same_plan() {
    let mut ps = pods("web", 20, |p| {
        p.cpu("700m")
            .label("app", "web")
            .spread(ZONE, 1, &[("app", "web")])
    });
    ps.extend(pods("batch", 30, |p| p.cpu("300m").memory("2Gi")));
    let s = snapshot(sized_types(), ps);
    assert_eq!(run(&s), run(&s));
}

#[test]
fn inflight_claims_stay_open_for_later_pods() {
    let mut ps = pods("big", 1, |p| p.cpu("12"));
    ps.extend(pods("small", 8, |p| p.cpu("500m")));
    let r = run(&snapshot(sized_types(), ps));
    assert_eq!(r.new_nodeclaims.len(), 1);
    assert_eq!(r.new_nodeclaims[0].cheapest.instance_type, "m.16x");
}

#[test]
fn node_objects_ignore_snapshot_nodes_field_order() {
    let it = instance_type("m.4x").cpu("4").memory("16Gi").build();
    let mut s = snapshot(sized_types(), pods("p", 1, |p| p.cpu("1")));
    s.nodes = vec![
        node_from("b", &it, "test-zone-1", "default", "spot"),
        node_from("a", &it, "test-zone-1", "default", "spot"),
    ];
    assert_eq!(run(&s).existing[0].node, "a");
    let _unused: Option<Node> = None;
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_pod(i: usize) -> impl Strategy<Value = crate::pod::Pod> {
        (1u32..40, 1u32..40, 0usize..8, 0usize..3).prop_map(move |(cpu, mem, kind, app)| {
            let app = ["a", "b", "c"][app];
            let b = pod(&format!("p{i}"))
                .cpu(&format!("{}m", cpu * 100))
                .memory(&format!("{}Mi", mem * 256))
                .label("app", app);
            match kind {
                0 => b.spread(ZONE, 1, &[("app", app)]),
                1 => b.spread(HOSTNAME, 1, &[("app", app)]),
                2 => b.anti_affinity(HOSTNAME, &[("app", app)]),
                3 => b.affinity(ZONE, &[("app", app)]),
                4 => b.host_port(8000 + (cpu % 3) as i32),
                5 => b.node_selector(ZONE, "test-zone-2"),
                6 => b.preferred_term(5, vec![req(ZONE, Operator::In, &["test-zone-3"])]),
                _ => b,
            }
            .build()
        })
    }

    fn arb_pods() -> impl Strategy<Value = Vec<crate::pod::Pod>> {
        (1usize..30).prop_flat_map(|n| (0..n).map(arb_pod).collect::<Vec<_>>())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_plan_passes_the_validator_and_explains_failures(ps in arb_pods(), limit in prop::option::of(1i64..6)) {
            let mut s = snapshot(sized_types(), ps);
            s.node_pools[0].limits.nodes = limit;
            s.daemonsets.push(pod("ds").cpu("100m").build());
            let r = run(&s);
            for u in &r.unschedulable {
                prop_assert!(!u.reason.is_empty());
            }
        }

        /// A pass through a shared [`SchedulingCache`] decides exactly as an uncached one, also
        /// after the cache saw other pools, DaemonSets and nodes (entries are checked, not trusted).
        #[test]
        fn cached_passes_decide_as_uncached(
            ps in arb_pods(),
            bound in 0usize..30,
            nodes in 1usize..4,
            zone in 1usize..4,
        ) {
            let types = sized_types();
            let mut s = snapshot(types.clone(), ps);
            s.nodes = (0..nodes)
                .map(|i| node_from(&format!("n{i}"), &types[3], &format!("test-zone-{zone}"), "default", "on-demand"))
                .collect();
            for (i, p) in s.pods.iter_mut().take(bound).enumerate() {
                p.node_name = Some(format!("n{}", i % nodes));
            }
            let mut variants = vec![s.clone()];
            let mut v = s.clone();
            v.node_pools[0]
                .requirements
                .add(req(CAPACITY_TYPE, Operator::In, &["on-demand"]));
            variants.push(v);
            let mut v = s.clone();
            v.daemonsets.push(pod("ds").cpu("500m").build());
            variants.push(v);
            let mut v = s.clone();
            v.nodes[0].labels.insert(ZONE.into(), "test-zone-9".into());
            v.nodes[0].taints.push(taint("dedicated", "x", Effect::NoSchedule));
            variants.push(v);
            let mut v = s.clone();
            v.nodes.remove(0);
            for p in &mut v.pods {
                if p.node_name.as_deref() == Some("n0") {
                    p.node_name = None;
                }
            }
            variants.push(v);
            variants.push(s);
            let cache = SchedulingCache::default();
            let options = SchedulerOptions::default();
            for v in &variants {
                prop_assert_eq!(schedule_cached(v, &options, &cache), schedule(v, &options));
            }
        }
    }
}

#[test]
fn a_capacity_reservation_takes_at_most_its_available_count_of_claims_per_pass() {
    use crate::cloud::Offering;
    // One m.large per pod (1500m of 2 CPU); a reservation with room for two in zone a.
    let it = instance_type("m.large")
        .cpu("2")
        .memory("8Gi")
        .offerings(vec![
            Offering::reserved("test-zone-1", 0.000_000_01, "cr-1", 2),
            Offering::new("test-zone-1", "on-demand", 0.1),
            Offering::new("test-zone-2", "on-demand", 0.1),
        ])
        .build();
    let pods: Vec<Pod> = (0..3)
        .map(|i| pod(&format!("p{i}")).cpu("1500m").memory("1Gi").build())
        .collect();
    let s = snapshot(vec![it.clone()], pods);
    let r = schedule(&s, &SchedulerOptions::default());
    assert!(validate(&s, &r).is_ok());
    let types: Vec<&str> = r
        .new_nodeclaims
        .iter()
        .map(|c| c.cheapest.capacity_type.as_str())
        .collect();
    assert_eq!(types, ["reserved", "reserved", "on-demand"]);
    // Reserved capacity is priced near zero: the plan costs one on-demand node.
    assert!(
        (r.cost_per_hour() - 0.1).abs() < 1e-6,
        "{}",
        r.cost_per_hour()
    );
    // A full reservation is not planned on at all.
    let full = instance_type("m.large")
        .cpu("2")
        .memory("8Gi")
        .offerings(vec![
            Offering::reserved("test-zone-1", 0.000_000_01, "cr-1", 0),
            Offering::new("test-zone-1", "on-demand", 0.1),
        ])
        .build();
    let s = snapshot(vec![full], vec![pod("p").cpu("1").build()]);
    let r = schedule(&s, &SchedulerOptions::default());
    assert_eq!(r.new_nodeclaims[0].cheapest.capacity_type, "on-demand");
}
