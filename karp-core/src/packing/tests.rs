//! Packer tests: the MILP never costs more than FFD, honours what it models, and the bound holds.

use super::*;
use crate::labels::{HOSTNAME, ZONE};
use crate::testing::*;
use crate::validation::validate;

fn check(snapshot: &ClusterSnapshot, r: &PackResult) {
    if let Err(v) = validate(snapshot, &r.results) {
        panic!("{} plan failed validation: {v:?}", r.packer);
    }
    let cost = r.results.cost_per_hour();
    assert!(
        r.lower_bound_per_hour <= cost + 1e-9,
        "bound {} above cost {cost}",
        r.lower_bound_per_hour
    );
}

/// The MILP packer with work limits instead of time limits: its plans do not depend on timing.
fn deterministic() -> Milp {
    Milp::default().with_work_limits(WorkLimits::default())
}

/// FFD and the deterministic MILP (whose plan the callers compare with expected values), both
/// checked; the default, time-limited MILP is checked too (valid and no dearer than FFD, which
/// holds whatever the timing).
fn both(snapshot: &ClusterSnapshot) -> (PackResult, PackResult) {
    let f = Ffd::default().pack(snapshot);
    let m = deterministic().pack(snapshot);
    let timed = Milp::default().pack(snapshot);
    check(snapshot, &f);
    for r in [&m, &timed] {
        check(snapshot, r);
        assert!(r.results.cost_per_hour() <= f.results.cost_per_hour() + 1e-9);
        assert_eq!(r.results.unschedulable.len(), f.results.unschedulable.len());
    }
    (f, m)
}

/// Small nodes are cheaper per CPU than the large one FFD grows into.
fn small_is_cheaper() -> Vec<std::sync::Arc<crate::cloud::InstanceType>> {
    vec![
        instance_type("small")
            .cpu("2")
            .memory("8Gi")
            .price(0.10)
            .spot_price(0.10)
            .build(),
        instance_type("large")
            .cpu("8")
            .memory("32Gi")
            .price(0.50)
            .spot_price(0.50)
            .build(),
    ]
}

#[test]
fn milp_splits_the_large_node_ffd_picks_into_cheaper_small_ones() {
    let s = ClusterSnapshot {
        node_pools: vec![nodepool("default", small_is_cheaper())],
        pods: (0..8)
            .map(|i| pod(&format!("p{i}")).cpu("1").memory("1Gi").build())
            .collect(),
        ..Default::default()
    };
    let (f, m) = both(&s);
    assert!(
        (f.results.cost_per_hour() - 0.5).abs() < 1e-9,
        "{}",
        f.results.cost_per_hour()
    );
    assert_eq!(m.packer, "milp", "{:?}", m.fallback);
    assert!(
        (m.results.cost_per_hour() - 0.4).abs() < 1e-9,
        "{}",
        m.results.cost_per_hour()
    );
    assert_eq!(m.results.new_nodeclaims.len(), 4);
    // 8 CPU of demand at 0.05 per CPU: the bound is tight here.
    assert!(
        (m.lower_bound_per_hour - 0.4).abs() < 1e-6,
        "{}",
        m.lower_bound_per_hour
    );
}

#[test]
fn milp_honours_hostname_anti_affinity_and_host_ports() {
    let mut pods: Vec<_> = (0..4)
        .map(|i| {
            pod(&format!("a{i}"))
                .cpu("100m")
                .label("app", "a")
                .anti_affinity(HOSTNAME, &[("app", "a")])
                .build()
        })
        .collect();
    pods.extend((0..3).map(|i| pod(&format!("h{i}")).cpu("100m").host_port(9100).build()));
    pods.extend((0..8).map(|i| pod(&format!("p{i}")).cpu("1").build()));
    let s = ClusterSnapshot {
        node_pools: vec![nodepool("default", small_is_cheaper())],
        pods,
        ..Default::default()
    };
    let (_, m) = both(&s);
    assert!(m.results.new_nodeclaims.len() >= 4);
}

#[test]
fn pods_with_zonal_spread_keep_their_ffd_nodeclaims() {
    let mut pods: Vec<_> = (0..3)
        .map(|i| {
            pod(&format!("z{i}"))
                .cpu("1")
                .label("app", "z")
                .spread(ZONE, 1, &[("app", "z")])
                .build()
        })
        .collect();
    pods.extend((0..8).map(|i| pod(&format!("p{i}")).cpu("1").build()));
    let s = ClusterSnapshot {
        node_pools: vec![nodepool("default", small_is_cheaper())],
        pods,
        ..Default::default()
    };
    let (_, m) = both(&s);
    assert!(m.stats.fixed_pods >= 3);
}

#[test]
fn milp_respects_nodepool_limits() {
    let mut pool = nodepool("default", small_is_cheaper());
    pool.limits.nodes = Some(2);
    let s = ClusterSnapshot {
        node_pools: vec![pool],
        pods: (0..8)
            .map(|i| pod(&format!("p{i}")).cpu("1").build())
            .collect(),
        ..Default::default()
    };
    let (_, m) = both(&s);
    assert!(m.results.new_nodeclaims.len() <= 2);
}

#[test]
fn milp_keeps_pods_on_their_weighted_pool() {
    let mut high = nodepool(
        "high",
        vec![instance_type("big")
            .cpu("8")
            .memory("32Gi")
            .price(0.5)
            .spot_price(0.5)
            .build()],
    );
    high.weight = 10;
    let low = nodepool("low", small_is_cheaper());
    let s = ClusterSnapshot {
        node_pools: vec![high, low],
        pods: (0..8)
            .map(|i| pod(&format!("p{i}")).cpu("1").build())
            .collect(),
        ..Default::default()
    };
    let (_, m) = both(&s);
    assert!(m
        .results
        .new_nodeclaims
        .iter()
        .all(|c| c.nodepool == "high"));
}

/// Three shapes of movable pods, pods with hostname anti-affinity and host ports (modelled),
/// zonally spread pods (kept together as bundles), two NodePools and a daemonset.
fn varied_snapshot() -> ClusterSnapshot {
    let mut pods: Vec<_> = (0..150)
        .map(|i| {
            let (cpu, memory) = [("250m", "512Mi"), ("1", "3Gi"), ("1500m", "1Gi")][i % 3];
            pod(&format!("p{i}")).cpu(cpu).memory(memory).build()
        })
        .collect();
    pods.extend((0..5).map(|i| {
        pod(&format!("a{i}"))
            .cpu("500m")
            .label("app", "a")
            .anti_affinity(HOSTNAME, &[("app", "a")])
            .build()
    }));
    pods.extend((0..4).map(|i| pod(&format!("h{i}")).cpu("300m").host_port(9100).build()));
    pods.extend((0..6).map(|i| {
        pod(&format!("z{i}"))
            .cpu("750m")
            .label("app", "z")
            .spread(ZONE, 1, &[("app", "z")])
            .build()
    }));
    let mut spare = nodepool(
        "spare",
        vec![instance_type("medium")
            .cpu("4")
            .memory("16Gi")
            .price(0.19)
            .spot_price(0.19)
            .build()],
    );
    spare.weight = 0;
    ClusterSnapshot {
        node_pools: vec![nodepool("default", small_is_cheaper()), spare],
        pods,
        daemonsets: vec![pod("ds").cpu("100m").memory("128Mi").build()],
        ..Default::default()
    }
}

#[test]
fn two_runs_with_work_limits_give_byte_identical_plans() {
    let s = varied_snapshot();
    let first = deterministic().pack(&s);
    check(&s, &first);
    assert_eq!(first.packer, "milp", "{:?}", first.fallback);
    // Non-trivial: many groups and columns, bundles, FFD beaten.
    assert!(first.stats.groups >= 4 && first.stats.fixed_pods > 0 && first.stats.columns > 20);
    assert!(first.results.cost_per_hour() < first.stats.ffd_cost - 1e-9);
    let again = deterministic().pack(&s);
    assert_eq!(format!("{again:?}"), format!("{first:?}"));
    assert_eq!(
        again.lower_bound_per_hour.to_bits(),
        first.lower_bound_per_hour.to_bits()
    );
    assert_eq!(again.stats.lp_cost.to_bits(), first.stats.lp_cost.to_bits());
}

#[test]
fn empty_plans_need_no_solver() {
    let s = ClusterSnapshot {
        node_pools: vec![nodepool("default", small_is_cheaper())],
        ..Default::default()
    };
    let m = Milp::default().pack(&s);
    assert!(m.results.new_nodeclaims.is_empty());
    assert_eq!(m.lower_bound_per_hour, 0.0);
}

/// Every pod fills a node of either type in one dimension or the other: the per-unit bound
/// (cheapest $/CPU and $/GiB charged separately) is a quarter of the cost; the fluid LP, which
/// keeps each node's CPU and memory together and counts whole pods per node, is exact.
#[test]
fn fluid_bound_couples_resources_and_counts_whole_pods() {
    let types = vec![
        instance_type("cpu-heavy")
            .cpu("4")
            .memory("4Gi")
            .price(0.40)
            .spot_price(0.40)
            .build(),
        instance_type("mem-heavy")
            .cpu("1")
            .memory("16Gi")
            .price(0.40)
            .spot_price(0.40)
            .build(),
    ];
    let s = ClusterSnapshot {
        node_pools: vec![nodepool("default", types)],
        pods: (0..8)
            .map(|i| pod(&format!("p{i}")).cpu("1").memory("3Gi").build())
            .collect(),
        ..Default::default()
    };
    let (f, m) = both(&s);
    assert!((f.results.cost_per_hour() - 3.2).abs() < 1e-9);
    let per_unit = lower_bound_per_hour(&s, &f.results);
    assert!((per_unit - 0.8).abs() < 1e-9, "{per_unit}");
    for bound in [m.lower_bound_per_hour, lower_bound(&s, &f.results)] {
        assert!((bound - 3.2).abs() < 1e-6, "{bound}");
    }
}

/// `count` random instance types of 2^`cpu_exp` CPUs, 2–8 GiB per CPU and 5–15 cents per CPU
/// hour, spot at the on-demand price.
fn arb_instance_types(
    cpu_exp: std::ops::Range<u32>,
    count: std::ops::Range<usize>,
) -> impl proptest::strategy::Strategy<Value = Vec<std::sync::Arc<crate::cloud::InstanceType>>> {
    use proptest::prelude::*;
    prop::collection::vec((cpu_exp, 1u32..5, 50u32..150), count).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (cpu_exp, mem_ratio, cents))| {
                let cpu = 1i64 << cpu_exp;
                let mem = cpu * i64::from(mem_ratio) * 2;
                let price = f64::from(cents) / 1000.0 * cpu as f64;
                instance_type(&format!("t{i}"))
                    .cpu(&cpu.to_string())
                    .memory(&format!("{mem}Gi"))
                    .price(price)
                    .spot_price(price)
                    .build()
            })
            .collect()
    })
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_types() -> impl Strategy<Value = Vec<std::sync::Arc<crate::cloud::InstanceType>>> {
        arb_instance_types(1..5, 2..6)
    }

    fn arb_pods() -> impl Strategy<Value = Vec<crate::pod::Pod>> {
        prop::collection::vec((1u32..16, 1u32..16, 0u8..10), 1..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, kind))| {
                    let b = pod(&format!("p{i}"))
                        .cpu(&format!("{}m", cpu * 250))
                        .memory(&format!("{}Mi", mem * 512));
                    match kind {
                        0 => b.label("app", "x").anti_affinity(HOSTNAME, &[("app", "x")]),
                        1 => b.host_port(8080),
                        2 => b.label("app", "s").spread(ZONE, 1, &[("app", "s")]),
                        _ => b,
                    }
                    .build()
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn bound_le_milp_le_ffd(types in arb_types(), pods in arb_pods(), limit in prop::option::of(3i64..12)) {
            let mut pool = nodepool("default", types);
            pool.limits.nodes = limit;
            let s = ClusterSnapshot { node_pools: vec![pool], pods, daemonsets: vec![pod("ds").cpu("100m").build()], ..Default::default() };
            let (f, m) = both(&s);
            prop_assert!(f.lower_bound_per_hour <= f.results.cost_per_hour() + 1e-9);
            prop_assert!(m.lower_bound_per_hour <= m.results.cost_per_hour() + 1e-9);
        }
    }
}

/// Five request shapes, twelve pods each, on three instance types.
fn small_mix() -> ClusterSnapshot {
    let types = vec![
        instance_type("c")
            .cpu("4")
            .memory("8Gi")
            .price(0.17)
            .spot_price(0.17)
            .build(),
        instance_type("m")
            .cpu("4")
            .memory("16Gi")
            .price(0.192)
            .spot_price(0.192)
            .build(),
        instance_type("r")
            .cpu("8")
            .memory("64Gi")
            .price(0.504)
            .spot_price(0.504)
            .build(),
    ];
    let shapes = [
        ("700m", "1536Mi"),
        ("1300m", "3Gi"),
        ("300m", "5Gi"),
        ("1900m", "1Gi"),
        ("900m", "2560Mi"),
    ];
    let pods = (0..60)
        .map(|i| {
            let (cpu, mem) = shapes[i % shapes.len()];
            pod(&format!("p{i}")).cpu(cpu).memory(mem).build()
        })
        .collect();
    ClusterSnapshot {
        node_pools: vec![nodepool("default", types)],
        pods,
        ..Default::default()
    }
}

#[test]
fn a_small_mix_is_packed_exactly_with_a_proven_bound() {
    let s = small_mix();
    let (f, m) = both(&s);
    let heuristic = Milp {
        exact_patterns: 0,
        ..deterministic()
    }
    .pack(&s);
    check(&s, &heuristic);
    let cost = m.results.cost_per_hour();
    eprintln!(
        "ffd {:.4} heuristic {:.4} (bound {:.4}) exact {cost:.4} (bound {:.4}) {:?}",
        f.results.cost_per_hour(),
        heuristic.results.cost_per_hour(),
        heuristic.lower_bound_per_hour,
        m.lower_bound_per_hour,
        m.stats
    );
    assert!(m.stats.exact && m.stats.optimal, "{:?}", m.stats);
    assert!((m.lower_bound_per_hour - cost).abs() < 1e-9);
    assert!(cost <= heuristic.results.cost_per_hour() + 1e-9);
    assert!(heuristic.lower_bound_per_hour <= cost + 1e-9);
}

/// The cheapest plan for `pods` on new nodes of `types` (each node the cheapest type whose
/// allocatable, less `overhead`, holds its pods), by trying every partition of the pods into
/// nodes; pods whose hostname anti-affinity selects each other, or that want the same host
/// port, never share a node. `None` when some pod fits no type. Tiny inputs only.
fn brute_force(
    types: &[std::sync::Arc<crate::cloud::InstanceType>],
    pods: &[crate::pod::Pod],
    overhead: &crate::resources::Resources,
) -> Option<f64> {
    use crate::resources::Resources;
    fn node_price(
        types: &[std::sync::Arc<crate::cloud::InstanceType>],
        sum: &Resources,
        overhead: &Resources,
    ) -> Option<f64> {
        types
            .iter()
            .filter(|t| sum.plus(overhead).fits_in(t.allocatable()))
            .filter_map(|t| t.offerings.iter().map(|o| o.price).min_by(f64::total_cmp))
            .min_by(f64::total_cmp)
    }
    fn clash(a: &crate::pod::Pod, b: &crate::pod::Pod) -> bool {
        let anti = |o: &crate::pod::Pod, q: &crate::pod::Pod| {
            !o.pod_anti_affinity.is_empty() && o.labels == q.labels
        };
        anti(a, b) || anti(b, a) || a.host_ports.iter().any(|x| b.host_ports.contains(x))
    }
    fn go(
        i: usize,
        blocks: &mut Vec<Vec<usize>>,
        types: &[std::sync::Arc<crate::cloud::InstanceType>],
        pods: &[crate::pod::Pod],
        overhead: &Resources,
        best: &mut Option<f64>,
    ) {
        if i == pods.len() {
            let cost: Option<f64> = blocks
                .iter()
                .map(|b| {
                    let sum = b
                        .iter()
                        .fold(Resources::new(), |acc, &p| acc.plus(&pods[p].requests));
                    node_price(types, &sum, overhead)
                })
                .sum();
            if let Some(c) = cost {
                if best.is_none_or(|b| c < b) {
                    *best = Some(c);
                }
            }
            return;
        }
        for b in 0..blocks.len() {
            if blocks[b].iter().any(|&q| clash(&pods[q], &pods[i])) {
                continue;
            }
            blocks[b].push(i);
            go(i + 1, blocks, types, pods, overhead, best);
            blocks[b].pop();
        }
        blocks.push(vec![i]);
        go(i + 1, blocks, types, pods, overhead, best);
        blocks.pop();
    }
    let mut best = None;
    go(0, &mut Vec::new(), types, pods, overhead, &mut best);
    best
}

mod exact_properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_types() -> impl Strategy<Value = Vec<std::sync::Arc<crate::cloud::InstanceType>>> {
        arb_instance_types(1..4, 1..4)
    }

    fn arb_pods() -> impl Strategy<Value = Vec<crate::pod::Pod>> {
        prop::collection::vec((1u32..12, 1u32..12, 0u8..8), 1..8).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, kind))| {
                    let b = pod(&format!("p{i}"))
                        .cpu(&format!("{}m", cpu * 250))
                        .memory(&format!("{}Mi", mem * 768));
                    match kind {
                        0 => b.label("app", "x").anti_affinity(HOSTNAME, &[("app", "x")]),
                        1 => b.host_port(8080),
                        _ => b,
                    }
                    .build()
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// On tiny problems the MILP's plan is the cheapest partition of the pods into nodes,
        /// and its bound proves it.
        #[test]
        fn exact_packings_match_brute_force(
            types in arb_types(),
            pods in arb_pods(),
            daemonset in prop::option::of(1u32..4),
        ) {
            let daemonsets: Vec<crate::pod::Pod> = daemonset
                .map(|c| pod("ds").cpu(&format!("{}m", c * 100)).build())
                .into_iter()
                .collect();
            let overhead = daemonsets
                .iter()
                .fold(crate::resources::Resources::new(), |acc, d| acc.plus(&d.requests));
            let best = brute_force(&types, &pods, &overhead);
            prop_assume!(best.is_some());
            let best = best.unwrap_or_default();
            let s = ClusterSnapshot {
                node_pools: vec![nodepool("default", types)],
                pods,
                daemonsets,
                ..Default::default()
            };
            for milp in [deterministic(), Milp::default()] {
                let r = milp.pack(&s);
                check(&s, &r);
                prop_assert!(r.results.unschedulable.is_empty());
                let cost = r.results.cost_per_hour();
                prop_assert!((cost - best).abs() < 1e-9, "milp {} brute force {}: {:?}", cost, best, r.fallback);
                prop_assert!((r.lower_bound_per_hour - best).abs() < 1e-9,
                    "bound {} brute force {}", r.lower_bound_per_hour, best);
            }
        }
    }
}
