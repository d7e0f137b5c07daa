//! Scenario tests, one rule each, named after Karpenter's disruption suites.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cloud::InstanceType;
use crate::labels;
use crate::pod::{LabelSelector, Pod};
use crate::testing::{instance_type, node_from, nodepool, pod};
use crate::validation::validate;

fn now() -> Timestamp {
    Timestamp::from_utc(2026, 12, 1, 12, 0, 0)
}

fn hours_ago(h: u64) -> Timestamp {
    now().minus(Duration::from_secs(h * 3600))
}

/// A cluster under construction: one pool `default` over `types`.
#[derive(Debug, Clone)]
struct Fixture {
    input: DisruptionInput,
    types: Vec<Arc<InstanceType>>,
}

impl Fixture {
    fn new(types: Vec<Arc<InstanceType>>) -> Self {
        let mut input = DisruptionInput::default();
        input.snapshot.node_pools = vec![nodepool("default", types.clone())];
        Fixture { input, types }
    }

    fn ty(&self, name: &str) -> Arc<InstanceType> {
        self.types
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no type {name}"))
    }

    /// A managed, initialized node of `ty` in test-zone-1, created two hours ago.
    fn node(&mut self, name: &str, ty: &str, ct: &str) -> &mut NodeClaimFacts {
        let it = self.ty(ty);
        let price = it
            .offerings
            .iter()
            .find(|o| o.zone == "test-zone-1" && o.capacity_type == ct)
            .map(|o| o.price)
            .unwrap_or_else(|| panic!("{ty} has no {ct} offering"));
        let mut n = node_from(name, &it, "test-zone-1", "default", ct);
        n.price = Some(price);
        self.input.snapshot.nodes.push(n);
        let mut f = NodeClaimFacts::new("default", hours_ago(2));
        f.offering = Some(NodeOffering {
            instance_type: ty.into(),
            zone: "test-zone-1".into(),
            capacity_type: ct.into(),
            price,
        });
        self.input.nodes.insert(name.into(), f);
        self.input
            .nodes
            .get_mut(name)
            .unwrap_or_else(|| unreachable!())
    }

    fn facts(&mut self, node: &str) -> &mut NodeClaimFacts {
        self.input
            .nodes
            .get_mut(node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    /// A running pod bound to `node`.
    fn pod(&mut self, p: Pod, node: &str) -> &mut PodFacts {
        let mut p = p;
        p.node_name = Some(node.into());
        let key = p.key();
        self.input.snapshot.pods.push(p);
        let f = self.input.pods.entry(key).or_default();
        f.start_time = Some(hours_ago(1));
        f.owner_kind = Some("ReplicaSet".into());
        f
    }

    fn settings(&mut self) -> &mut DisruptionSettings {
        self.input.pools.entry("default".into()).or_default()
    }

    fn plan(&self) -> DisruptionPlan {
        self.plan_with(&DisruptionOptions::default())
    }

    fn plan_with(&self, options: &DisruptionOptions) -> DisruptionPlan {
        let out = plan(&self.input, now(), options);
        check_commands(&self.input, &out);
        out
    }
}

/// Every command's placement passes the independent validator; consolidation and drift never
/// leave a running pod pending, and moves only target existing, non-candidate nodes or
/// replacements.
fn check_commands(input: &DisruptionInput, out: &DisruptionPlan) {
    for c in &out.commands {
        if let Some(sim) = &c.simulation {
            if let Err(v) = validate(&sim.snapshot, &sim.results) {
                panic!("command {:?} fails validation: {v:?}", c.candidates);
            }
            if c.method != Method::Expiration {
                assert_eq!(sim.running_pod_failure(), None);
            }
        }
        for m in &c.moves {
            let to =
                m.to.as_deref()
                    .unwrap_or_else(|| panic!("{} left pending", m.pod));
            assert!(
                !c.candidates.iter().any(|n| n == to),
                "{} moves onto a candidate",
                m.pod
            );
            if let Some(i) = to.strip_prefix("replacement-") {
                assert!(i.parse::<usize>().is_ok_and(|i| i < c.replacements.len()));
            } else {
                let node = input.snapshot.nodes.iter().find(|n| n.name == to);
                assert!(
                    node.is_some_and(|n| n.initialized),
                    "{} moves to {to}",
                    m.pod
                );
            }
        }
    }
    // Every managed node is in a command or listed with a reason.
    for name in input.nodes.keys() {
        let in_cmd = out.commands.iter().any(|c| c.candidates.contains(name));
        let listed = out.not_candidates.iter().any(|n| &n.node == name);
        assert!(
            in_cmd != listed,
            "{name}: in a command {in_cmd}, listed {listed}"
        );
    }
}

fn reason_of(out: &DisruptionPlan, node: &str) -> String {
    out.not_candidates
        .iter()
        .find(|n| n.node == node)
        .map(|n| n.reason.clone())
        .unwrap_or_else(|| panic!("{node} is not listed"))
}

/// One on-demand-only type (no cheaper spot replacement exists).
fn two_cpu() -> Vec<Arc<InstanceType>> {
    vec![instance_type("m.large")
        .cpu("2")
        .memory("8Gi")
        .price(0.1)
        .capacity_types(["on-demand"])
        .build()]
}

fn web(name: &str, cpu: &str) -> Pod {
    pod(name)
        .cpu(cpu)
        .memory("256Mi")
        .label("app", "web")
        .build()
}

// ---- emptiness -------------------------------------------------------------------------------

#[test]
fn emptiness_deletes_every_empty_node_within_the_empty_budget() {
    let mut f = Fixture::new(two_cpu());
    for n in ["node-a", "node-b", "node-c"] {
        f.node(n, "m.large", "on-demand");
    }
    f.pod(web("busy", "1"), "node-c");
    f.settings().budgets = vec![Budget::nodes("1").reasons(&[Reason::Empty])];
    let out = f.plan();
    assert_eq!(out.commands.len(), 1);
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.reason, c.decision),
        (Method::Emptiness, Reason::Empty, Decision::Delete)
    );
    // Equal savings ratios: the name breaks the tie.
    assert_eq!(c.candidates, ["node-a"]);
    assert_eq!(c.at, now().plus(CONSOLIDATION_TTL));
    assert!((c.savings_per_hour - 0.1).abs() < 1e-9);
    assert!(reason_of(&out, "node-b").contains("due to blocking budget"));
    assert!((out.cost.before_per_hour - 0.3).abs() < 1e-9);
    assert!((out.cost.after_per_hour - 0.2).abs() < 1e-9);
}

#[test]
fn daemonset_terminating_and_negative_cost_pods_leave_a_node_empty() {
    let mut f = Fixture::new(two_cpu());
    f.node("node-a", "m.large", "on-demand");
    f.pod(web("ds", "100m"), "node-a").owner_kind = Some("DaemonSet".into());
    f.pod(web("leaving", "100m"), "node-a").terminating = true;
    let mut cheap = web("cheap", "100m");
    cheap.priority = -100_000_000;
    f.pod(cheap, "node-a");
    let out = f.plan();
    assert_eq!(out.commands[0].method, Method::Emptiness);
    assert_eq!(out.commands[0].candidates, ["node-a"]);
}

#[test]
fn consolidate_after_never_disables_emptiness() {
    let mut f = Fixture::new(two_cpu());
    f.node("node-a", "m.large", "on-demand");
    f.settings().consolidate_after = ConsolidateAfter::Never;
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert_eq!(
        reason_of(&out, "node-a"),
        "NodePool \"default\" has consolidation disabled"
    );
}

#[test]
fn consolidate_after_counts_from_the_last_pod_event() {
    let mut f = Fixture::new(two_cpu());
    f.node("node-a", "m.large", "on-demand").last_pod_event =
        Some(now().minus(Duration::from_secs(60)));
    f.settings().consolidate_after = ConsolidateAfter::After(Duration::from_secs(300));
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert!(reason_of(&out, "node-a")
        .starts_with("Node is not consolidatable until 2026-12-01T12:04:00Z"));
    f.facts("node-a").last_pod_event = Some(now().minus(Duration::from_secs(301)));
    assert_eq!(f.plan().commands.len(), 1);
}

// ---- budgets ---------------------------------------------------------------------------------

#[test]
fn budget_percentages_round_up_and_subtract_deleting_and_not_ready_nodes() {
    let mut f = Fixture::new(two_cpu());
    for i in 0..5 {
        f.node(&format!("node-{i}"), "m.large", "on-demand");
    }
    f.facts("node-3").deleting = true;
    f.facts("node-4").ready = false;
    // ceil(5 × 50 %) = 3, minus one deleting and one NotReady node.
    f.settings().budgets = vec![Budget::nodes("50%")];
    let out = f.plan();
    let allowed = |r: Reason| {
        out.budgets
            .iter()
            .find(|b| b.reason == r)
            .map(|b| b.allowed)
            .unwrap_or_else(|| panic!("{r:?}"))
    };
    assert_eq!(allowed(Reason::Empty), Allowed::Nodes(1));
    assert_eq!(out.commands[0].candidates.len(), 1);
    assert_eq!(
        reason_of(&out, "node-3"),
        "Node is deleting or marked for deletion"
    );
}

#[test]
fn budget_schedules_apply_only_inside_their_window() {
    let mut f = Fixture::new(two_cpu());
    f.node("node-a", "m.large", "on-demand");
    // No disruption during business hours (from 09:00 for 8 hours); now is 12:00.
    f.settings().budgets = vec![
        Budget::nodes("10"),
        Budget::nodes("0").during("0 9 * * *", Duration::from_secs(8 * 3600)),
    ];
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert!(reason_of(&out, "node-a").contains("due to blocking budget"));
    f.settings().budgets[1] = Budget::nodes("0").during("0 13 * * *", Duration::from_secs(3600));
    assert_eq!(f.plan().commands.len(), 1);
}

#[test]
fn an_invalid_budget_blocks_every_reason_of_its_pool() {
    let mut f = Fixture::new(two_cpu());
    f.node("node-a", "m.large", "on-demand");
    f.settings().budgets = vec![
        Budget::nodes("10"),
        Budget::nodes("1").during("not a cron", Duration::from_secs(60)),
    ];
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert!(out
        .budgets
        .iter()
        .all(|b| b.allowed == Allowed::Nodes(0) && b.error.is_some()));
}

// ---- candidates ------------------------------------------------------------------------------

#[test]
fn node_do_not_disrupt_blocks_everything_but_expiration() {
    let mut f = Fixture::new(two_cpu());
    f.node("node-a", "m.large", "on-demand").do_not_disrupt = true;
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert_eq!(
        reason_of(&out, "node-a"),
        "Disruption is blocked with the \"karpenter.sh/do-not-disrupt\" annotation"
    );
    f.facts("node-a").expire_after = Some(Duration::from_secs(3600));
    let out = f.plan();
    assert_eq!(out.commands[0].method, Method::Expiration);
    assert_eq!(out.commands[0].at, now());
}

#[test]
fn pod_do_not_disrupt_blocks_when_true_or_while_its_duration_runs() {
    let blocked = |value: &str, started_hours_ago: u64, terminal: bool| {
        let mut f = Fixture::new(two_cpu());
        f.node("node-a", "m.large", "on-demand");
        f.node("node-b", "m.large", "on-demand");
        f.pod(web("keep", "500m"), "node-b");
        let pf = f.pod(web("x", "500m"), "node-a");
        pf.do_not_disrupt = Some(value.into());
        pf.start_time = Some(hours_ago(started_hours_ago));
        pf.terminal = terminal;
        let out = f.plan();
        out.commands
            .iter()
            .all(|c| !c.candidates.contains(&"node-a".to_string()))
    };
    assert!(blocked("true", 1, false));
    assert!(blocked("2h", 1, false));
    assert!(!blocked("30m", 1, false), "the duration has run out");
    assert!(
        !blocked("yes please", 1, false),
        "an unparsable value does not block"
    );
    assert!(!blocked("true", 1, true), "a terminal pod does not block");
}

#[test]
fn daemonset_and_mirror_pods_with_do_not_disrupt_block() {
    for (owner, mirror) in [(Some("DaemonSet"), false), (None, true)] {
        let mut f = Fixture::new(two_cpu());
        f.node("node-a", "m.large", "on-demand");
        let pf = f.pod(web("agent", "100m"), "node-a");
        pf.owner_kind = owner.map(str::to_string);
        pf.mirror = mirror;
        pf.do_not_disrupt = Some("true".into());
        let out = f.plan();
        assert!(out.commands.is_empty(), "{owner:?} {mirror}");
        assert_eq!(
            reason_of(&out, "node-a"),
            "Pod \"default/agent\" has \"karpenter.sh/do-not-disrupt\" annotation"
        );
    }
}

fn pdb(name: &str, allowed: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        namespace: "default".into(),
        name: name.into(),
        selector: LabelSelector::labels([("app", "web")]),
        disruptions_allowed: allowed,
    }
}

/// node-a holds one web pod that could move to node-b (which is not disruptable itself).
fn movable() -> Fixture {
    let mut f = Fixture::new(two_cpu());
    f.node("node-a", "m.large", "on-demand");
    f.node("node-b", "m.large", "on-demand").do_not_disrupt = true;
    f.pod(web("a", "500m"), "node-a");
    f.pod(pod("other").cpu("500m").build(), "node-b");
    f
}

#[test]
fn a_pdb_allowing_no_eviction_blocks_consolidation() {
    let mut f = movable();
    f.input.pdbs = vec![pdb("web", 0)];
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert_eq!(
        reason_of(&out, "node-a"),
        "PDB \"default/web\" prevents pod evictions"
    );
    f.input.pdbs = vec![pdb("web", 1)];
    let out = f.plan();
    assert_eq!(out.commands[0].candidates, ["node-a"]);
}

#[test]
fn several_pdbs_on_one_pod_block_and_mirror_pods_are_exempt() {
    let mut f = movable();
    f.input.pdbs = vec![pdb("web", 5), pdb("web-2", 5)];
    let out = f.plan();
    assert!(reason_of(&out, "node-a").contains("selected by multiple PDBs"));
    f.input.pdbs = vec![pdb("web", 0)];
    f.input
        .pods
        .get_mut("default/a")
        .unwrap_or_else(|| unreachable!())
        .mirror = true;
    // A mirror pod is not reschedulable: node-a is empty and goes.
    assert_eq!(f.plan().commands[0].candidates, ["node-a"]);
}

#[test]
fn termination_grace_period_lets_drift_pass_pod_blockers_but_not_consolidation() {
    let mut f = movable();
    f.input.pdbs = vec![pdb("web", 0)];
    f.facts("node-a").drifted = Some(Drift {
        reason: "NodePoolDrifted".into(),
        since: hours_ago(1),
    });
    let out = f.plan();
    assert!(
        out.commands.is_empty(),
        "without terminationGracePeriod the PDB blocks drift"
    );
    f.facts("node-a").termination_grace_period = Some(Duration::from_secs(600));
    let out = f.plan();
    assert_eq!(out.commands[0].method, Method::Drift);
    assert_eq!(out.commands[0].candidates, ["node-a"]);
    // Not drifted: consolidation is still blocked by the PDB.
    f.facts("node-a").drifted = None;
    assert!(f.plan().commands.is_empty());
}

#[test]
fn uninitialized_and_nominated_nodes_are_not_candidates() {
    let mut f = movable();
    f.facts("node-a").initialized = false;
    f.facts("node-b").nominated = true;
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert_eq!(reason_of(&out, "node-a"), "Node isn't initialized");
    assert_eq!(reason_of(&out, "node-b"), "Nominated for a pending pod");
}

// ---- drift -----------------------------------------------------------------------------------

#[test]
fn drift_deletes_empty_drifted_nodes_first_then_replaces_the_earliest_drifted() {
    let mut f = Fixture::new(two_cpu());
    for n in ["node-a", "node-b", "node-c"] {
        f.node(n, "m.large", "on-demand");
    }
    f.pod(web("a", "1500m"), "node-a");
    f.pod(web("b", "1500m"), "node-b");
    f.pod(web("c", "1500m"), "node-c");
    f.facts("node-a").drifted = Some(Drift {
        reason: "AMIDrift".into(),
        since: hours_ago(1),
    });
    f.facts("node-b").drifted = Some(Drift {
        reason: "AMIDrift".into(),
        since: hours_ago(2),
    });
    let out = f.plan();
    let c = &out.commands[0];
    assert_eq!((c.method, c.decision), (Method::Drift, Decision::Replace));
    assert_eq!(c.candidates, ["node-b"]);
    assert_eq!(c.replacements.len(), 1);
    assert_eq!(c.moves[0].to.as_deref(), Some("replacement-0"));
    assert_eq!(c.at, now());
    // An empty drifted node goes first, without simulation.
    f.node("node-d", "m.large", "on-demand").drifted = Some(Drift {
        reason: "AMIDrift".into(),
        since: now(),
    });
    let out = f.plan();
    // node-d is empty, so emptiness (first method) takes it.
    assert_eq!(out.commands[0].method, Method::Emptiness);
    f.settings().consolidate_after = ConsolidateAfter::Never;
    let out = f.plan();
    assert_eq!(
        (
            out.commands[0].method,
            out.commands[0].candidates.as_slice()
        ),
        (Method::Drift, ["node-d".to_string()].as_slice())
    );
}

#[test]
fn drift_respects_the_drifted_budget() {
    let mut f = movable();
    f.facts("node-a").drifted = Some(Drift {
        reason: "NodePoolDrifted".into(),
        since: hours_ago(1),
    });
    f.settings().budgets = vec![Budget::nodes("0").reasons(&[Reason::Drifted])];
    let out = f.plan();
    assert_ne!(out.commands.first().map(|c| c.method), Some(Method::Drift));
}

// ---- consolidation ---------------------------------------------------------------------------

#[test]
fn single_node_consolidation_deletes_a_node_whose_pods_fit_elsewhere() {
    let out = movable().plan();
    let c = &out.commands[0];
    // node-b may not be disrupted, so multi-node has one candidate and single-node acts.
    assert_eq!(
        (c.method, c.decision),
        (Method::SingleNode, Decision::Delete)
    );
    assert_eq!(c.candidates, ["node-a"]);
    assert_eq!(
        c.moves,
        vec![Move {
            pod: "default/a".into(),
            from: "node-a".into(),
            to: Some("node-b".into())
        }]
    );
    assert!(reason_of(&out, "node-b").contains("do-not-disrupt"));
}

#[test]
fn consolidation_waits_while_pending_pods_need_more_than_one_new_node() {
    // Two pending pods that each need a node of their own: any consolidation simulation would
    // create at least two NodeClaims, which Karpenter refuses, so none is run.
    let mut f = movable();
    for name in ["big-1", "big-2"] {
        f.input
            .snapshot
            .pods
            .push(pod(name).cpu("1800m").memory("256Mi").build());
    }
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert_eq!(
        reason_of(&out, "node-a"),
        "Can't consolidate while pending pods need 2 new nodes (a move may create at most one)"
    );
    // A pending pod that fits on the kept node does not hold consolidation up.
    let mut f = movable();
    f.input
        .snapshot
        .pods
        .push(pod("small").cpu("200m").memory("256Mi").build());
    let out = f.plan();
    assert_eq!(out.commands[0].candidates, ["node-a"]);
    assert_eq!(out.commands[0].decision, Decision::Delete);
}

#[test]
fn consolidation_never_moves_pods_onto_nodes_inside_consolidate_after_or_uninitialized() {
    let mut f = movable();
    f.facts("node-b").last_pod_event = Some(now());
    f.settings().consolidate_after = ConsolidateAfter::After(Duration::from_secs(600));
    let out = f.plan();
    // node-a may not move its pod to node-b (inside its window); a replacement is not cheaper.
    assert!(out.commands.is_empty());
    assert_eq!(
        reason_of(&out, "node-a"),
        "Can't replace with a cheaper node"
    );
}

#[test]
fn consolidation_respects_anti_affinity() {
    let mut f = Fixture::new(two_cpu());
    f.node("node-a", "m.large", "on-demand");
    f.node("node-b", "m.large", "on-demand");
    let spread = |n: &str| {
        pod(n)
            .cpu("500m")
            .label("app", "db")
            .anti_affinity(labels::HOSTNAME, &[("app", "db")])
            .build()
    };
    f.pod(spread("db-0"), "node-a");
    f.pod(spread("db-1"), "node-b");
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert_eq!(
        reason_of(&out, "node-a"),
        "Can't replace with a cheaper node"
    );
}

fn sized_types() -> Vec<Arc<InstanceType>> {
    vec![
        instance_type("small")
            .cpu("2")
            .memory("8Gi")
            .price(0.1)
            .build(),
        instance_type("large")
            .cpu("8")
            .memory("32Gi")
            .price(0.4)
            .build(),
    ]
}

#[test]
fn single_node_replacement_must_be_strictly_cheaper_and_on_demand_goes_to_spot() {
    let mut f = Fixture::new(sized_types());
    f.node("node-a", "large", "on-demand");
    f.pod(web("a", "1"), "node-a");
    let out = f.plan();
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.decision),
        (Method::SingleNode, Decision::Replace)
    );
    let r = &c.replacements[0];
    assert_eq!(
        (
            r.cheapest.instance_type.as_str(),
            r.cheapest.capacity_type.as_str()
        ),
        ("small", "spot")
    );
    let ct = r
        .requirements
        .get(labels::CAPACITY_TYPE)
        .map(|r| r.values());
    assert_eq!(ct, Some(vec!["spot"]), "pinned to spot");
    assert!((c.savings_per_hour - (0.4 - 0.06)).abs() < 1e-9);
    // Only on-demand offered: replacing small with small is not cheaper.
    let od = vec![instance_type("small")
        .cpu("2")
        .memory("8Gi")
        .price(0.1)
        .capacity_types(["on-demand"])
        .build()];
    let mut f = Fixture::new(od);
    f.node("node-a", "small", "on-demand");
    f.pod(web("a", "1"), "node-a");
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert_eq!(
        reason_of(&out, "node-a"),
        "Can't replace with a cheaper node"
    );
}

#[test]
fn multi_node_consolidation_replaces_several_nodes_with_one_cheaper_node() {
    let mut f = Fixture::new(sized_types());
    f.settings().budgets = vec![Budget::nodes("100%")];
    for n in ["node-a", "node-b", "node-c"] {
        f.node(n, "large", "on-demand");
        f.pod(web(&format!("{n}-pod"), "500m"), n);
    }
    let out = f.plan();
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.decision),
        (Method::MultiNode, Decision::Replace)
    );
    assert_eq!(c.candidates, ["node-a", "node-b", "node-c"]);
    assert_eq!(c.replacements.len(), 1);
    assert_eq!(c.replacements[0].cheapest.instance_type, "small");
    assert_eq!(c.moves.len(), 3);
    assert!(c
        .moves
        .iter()
        .all(|m| m.to.as_deref() == Some("replacement-0")));
}

#[test]
fn multi_node_consolidation_rejects_a_replacement_by_a_candidates_own_type() {
    let mut f = Fixture::new(two_cpu());
    f.settings().budgets = vec![Budget::nodes("100%")];
    for n in ["node-a", "node-b", "node-c"] {
        f.node(n, "m.large", "on-demand");
        f.pod(web(&format!("{n}-pod"), "500m"), n);
    }
    // All three fit on one m.large, but that is one of their own types: the largest valid
    // prefix deletes two and moves their pods onto the third.
    let out = f.plan();
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.decision),
        (Method::MultiNode, Decision::Delete)
    );
    assert_eq!(c.candidates, ["node-a", "node-b"]);
    assert!(c.moves.iter().all(|m| m.to.as_deref() == Some("node-c")));
}

#[test]
fn multi_node_consolidation_stays_within_the_underutilized_budget() {
    let mut f = Fixture::new(two_cpu());
    for n in ["node-a", "node-b", "node-c"] {
        f.node(n, "m.large", "on-demand");
        f.pod(web(&format!("{n}-pod"), "500m"), n);
    }
    f.settings().budgets = vec![Budget::nodes("1").reasons(&[Reason::Underutilized])];
    let out = f.plan();
    assert_eq!(out.commands[0].method, Method::SingleNode);
    assert_eq!(out.commands[0].candidates.len(), 1);
}

#[test]
fn when_empty_policy_leaves_underutilized_nodes_alone() {
    let mut f = movable();
    f.settings().consolidation_policy = ConsolidationPolicy::WhenEmpty;
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert_eq!(
        reason_of(&out, "node-a"),
        "NodePool \"default\" has non-empty consolidation disabled"
    );
}

// ---- spot to spot ----------------------------------------------------------------------------

/// `n` spot-capable types cheaper than `big`, and a spot node of `big` holding a small pod.
fn spot_cluster(cheaper: usize) -> Fixture {
    let mut types: Vec<Arc<InstanceType>> = (0..cheaper)
        .map(|i| {
            instance_type(&format!("c{i:02}"))
                .cpu("2")
                .memory("8Gi")
                .price(0.1 + 0.001 * i as f64)
                .build()
        })
        .collect();
    types.push(
        instance_type("big")
            .cpu("16")
            .memory("64Gi")
            .price(1.0)
            .build(),
    );
    let mut f = Fixture::new(types);
    f.node("node-a", "big", "spot");
    f.pod(web("a", "1"), "node-a");
    f
}

#[test]
fn spot_to_spot_consolidation_is_off_by_default() {
    let out = spot_cluster(20).plan();
    assert!(out.commands.is_empty());
    assert_eq!(
        reason_of(&out, "node-a"),
        "SpotToSpotConsolidation is disabled, can't replace a spot node with a spot node"
    );
}

#[test]
fn spot_to_spot_needs_fifteen_cheaper_types_and_launches_the_fifteen_cheapest() {
    let gate = DisruptionOptions::default().spot_to_spot(true);
    let out = spot_cluster(10).plan_with(&gate);
    assert!(out.commands.is_empty());
    assert!(reason_of(&out, "node-a").contains("requires 15 cheaper instance type options than the current candidate to consolidate, got 10"));
    let out = spot_cluster(20).plan_with(&gate);
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.decision),
        (Method::SingleNode, Decision::Replace)
    );
    let r = &c.replacements[0];
    assert_eq!(r.instance_types.len(), 15);
    assert_eq!(r.instance_types[0].name, "c00");
    assert_eq!(r.cheapest.capacity_type, "spot");
}

// ---- expiration ------------------------------------------------------------------------------

#[test]
fn expiration_is_forceful_ignoring_budgets_and_pod_blockers() {
    let mut f = movable();
    f.input.pdbs = vec![pdb("web", 0)];
    f.settings().budgets = vec![Budget::nodes("0")];
    f.facts("node-a").expire_after = Some(Duration::from_secs(3600));
    let out = f.plan();
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.reason, c.decision),
        (Method::Expiration, Reason::Expired, Decision::Delete)
    );
    assert_eq!(c.candidates, ["node-a"]);
    assert_eq!(c.moves[0].to.as_deref(), Some("node-b"));
}

// ---- determinism and the validator -----------------------------------------------------------

#[test]
fn plans_are_deterministic() {
    let mut f = Fixture::new(sized_types());
    for i in 0..6 {
        let n = format!("node-{i}");
        f.node(&n, if i % 2 == 0 { "large" } else { "small" }, "on-demand");
        f.pod(web(&format!("p{i}"), "300m"), &n);
    }
    let a = f.plan();
    let b = f.plan();
    assert_eq!(a.commands[0].candidates, b.commands[0].candidates);
    assert_eq!(a.commands[0].moves, b.commands[0].moves);
    assert_eq!(a.not_candidates, b.not_candidates);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn cluster() -> impl Strategy<Value = Fixture> {
        // Mostly non-empty, rarely drifted nodes, so consolidation methods get exercised.
        let node = (
            0usize..2,
            proptest::bool::weighted(0.1),
            proptest::collection::vec((1u32..8, 0usize..3), 1..4),
        );
        (
            proptest::collection::vec(node, 1..6),
            any::<bool>(),
            0usize..3,
        )
            .prop_map(|(nodes, spot, budget)| {
                let mut f = Fixture::new(sized_types());
                for (i, (ty, drifted, pods)) in nodes.into_iter().enumerate() {
                    let name = format!("node-{i}");
                    let ct = if spot && i % 2 == 0 {
                        "spot"
                    } else {
                        "on-demand"
                    };
                    f.node(&name, ["small", "large"][ty], ct).drifted = drifted.then(|| Drift {
                        reason: "NodePoolDrifted".into(),
                        since: hours_ago(1),
                    });
                    for (j, (cpu, kind)) in pods.into_iter().enumerate() {
                        let mut p = pod(&format!("{name}-{j}"))
                            .cpu(&format!("{}m", cpu * 100))
                            .label("app", "web");
                        if kind == 1 {
                            p = p.spread(labels::ZONE, 1, &[("app", "web")]);
                        } else if kind == 2 {
                            p = p.anti_affinity(labels::HOSTNAME, &[("app", "web")]);
                        }
                        f.pod(p.build(), &name);
                    }
                }
                f.settings().budgets = vec![Budget::nodes(["1", "50%", "100%"][budget])];
                f
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every command of every pass passes the validator (see `check_commands`), for both
        /// settings of the spot-to-spot gate, and savings are positive for consolidation.
        #[test]
        fn every_command_passes_the_validator(f in cluster(), gate in any::<bool>()) {
            let out = f.plan_with(&DisruptionOptions::default().spot_to_spot(gate));
            for c in &out.commands {
                if matches!(c.method, Method::MultiNode | Method::SingleNode | Method::Emptiness) {
                    prop_assert!(c.savings_per_hour > 0.0, "{:?} saves {}", c.method, c.savings_per_hour);
                }
            }
        }
    }
}

#[path = "tests_global.rs"]
mod global;

// ---- balanced (Karpenter 1.14's balanced_scoring_test cases) ---------------------------------

/// Move `node` (already added with [`Fixture::node`]) into pool `pool`, creating the pool over
/// the fixture's types when needed.
fn move_to_pool(f: &mut Fixture, node: &str, pool: &str) {
    if !f.input.snapshot.node_pools.iter().any(|p| p.name == pool) {
        let types = f.types.clone();
        f.input.snapshot.node_pools.push(nodepool(pool, types));
    }
    f.facts(node).nodepool = pool.into();
    for n in &mut f.input.snapshot.nodes {
        if n.name == node {
            n.labels.insert(labels::NODEPOOL.into(), pool.into());
        }
    }
}

/// The Balanced scores of the pools of `nodes` for a move saving `savings`.
fn balanced_scores(
    input: &DisruptionInput,
    nodes: &[&str],
    savings: f64,
) -> Vec<(String, balanced::Score)> {
    let (all, _) = candidates::evaluate(input, now());
    let chosen: Vec<&candidates::Candidate> = all
        .iter()
        .filter(|c| nodes.contains(&c.name.as_str()))
        .collect();
    balanced::evaluate(&balanced::pool_totals(&all), &chosen, savings, None)
}

#[test]
fn balanced_deletes_one_of_ten_equal_nodes_with_a_score_of_one() {
    let mut f = Fixture::new(two_cpu());
    for i in 0..10 {
        let n = format!("node-{i}");
        f.node(&n, "m.large", "on-demand");
        f.pod(web(&format!("web-{i}"), "500m"), &n);
    }
    f.settings().consolidation_policy = ConsolidationPolicy::balanced();
    // One node at a time, so multi-node consolidation has nothing to batch.
    f.settings().budgets = vec![Budget::nodes("1").reasons(&[Reason::Underutilized])];
    let out = f.plan();
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.decision),
        (Method::SingleNode, Decision::Delete)
    );
    assert_eq!(c.candidates, ["node-0"]);
    // savings 10 % of the pool's cost, disruption 2 of 20: score 1.0 ≥ 0.5.
    let scores = balanced_scores(&f.input, &["node-0"], c.savings_per_hour);
    assert_eq!(scores.len(), 1);
    let (pool, s) = &scores[0];
    assert_eq!(pool, "default");
    assert!((s.score - 1.0).abs() < 1e-9, "{s:?}");
    assert!((s.savings_fraction - 0.1).abs() < 1e-9);
    assert!((s.disruption_fraction - 0.1).abs() < 1e-9);
    assert!(s.approved);
}

/// Four 4-CPU nodes at $1/h; node-a's three 500m pods fit a 2-CPU node at $0.60/h spot, the
/// others are full. Replacing node-a saves 10 % of the pool's cost for 25 % of its disruption.
fn marginal_replace(policy: ConsolidationPolicy) -> Fixture {
    let types = vec![
        instance_type("big")
            .cpu("4")
            .memory("16Gi")
            .price(1.0)
            .capacity_types(["on-demand"])
            .build(),
        instance_type("small")
            .cpu("2")
            .memory("8Gi")
            .price(0.7)
            .spot_price(0.6)
            .build(),
    ];
    let mut f = Fixture::new(types);
    f.node("node-a", "big", "on-demand");
    for i in 0..3 {
        f.pod(web(&format!("a-{i}"), "500m"), "node-a");
    }
    for n in ["node-b", "node-c", "node-d"] {
        f.node(n, "big", "on-demand");
        for i in 0..3 {
            f.pod(web(&format!("{n}-{i}"), "1200m"), n);
        }
    }
    f.settings().consolidation_policy = policy;
    f
}

#[test]
fn balanced_rejects_a_marginal_replace_that_when_empty_or_underutilized_takes() {
    let out = marginal_replace(ConsolidationPolicy::WhenEmptyOrUnderutilized).plan();
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.decision, c.candidates.as_slice()),
        (
            Method::SingleNode,
            Decision::Replace,
            ["node-a".to_string()].as_slice()
        )
    );
    assert!((c.savings_per_hour - 0.4).abs() < 1e-9);

    let out = marginal_replace(ConsolidationPolicy::balanced()).plan();
    assert!(out.commands.is_empty(), "{:?}", out.commands);
    assert_eq!(
        reason_of(&out, "node-a"),
        "score 0.40 < threshold 0.50 (consolidationThreshold: 2, savings 10.0%, disruption 25.0%)"
    );
    // Single-node went on to the next candidates: node-b's pods could move to node-a and a small
    // node, the same marginal move.
    assert_eq!(reason_of(&out, "node-b"), reason_of(&out, "node-a"));

    // k = 3 lowers the bar to 1/3: the same move is taken.
    let out = marginal_replace(ConsolidationPolicy::Balanced {
        consolidation_threshold: 3,
    })
    .plan();
    assert_eq!(out.commands[0].candidates, ["node-a"]);
    assert_eq!(out.commands[0].decision, Decision::Replace);
}

/// Pool `bal` (Balanced): b-0 runs six 250m pods, b-1..b-3 one do-not-disrupt pod each. Pool
/// `default`: d-0 runs one pod, d-1 one do-not-disrupt pod. Every pod fits elsewhere.
fn cross_pool(k: u32) -> Fixture {
    let mut f = Fixture::new(two_cpu());
    for n in ["b-0", "b-1", "b-2", "b-3", "d-0", "d-1"] {
        f.node(n, "m.large", "on-demand");
    }
    for i in 0..6 {
        f.pod(web(&format!("b0-{i}"), "250m"), "b-0");
    }
    for n in ["b-1", "b-2", "b-3", "d-1"] {
        f.pod(web(&format!("{n}-pinned"), "250m"), n).do_not_disrupt = Some("true".into());
    }
    f.pod(web("d0-pod", "250m"), "d-0");
    for n in ["b-0", "b-1", "b-2", "b-3"] {
        move_to_pool(&mut f, n, "bal");
    }
    f.settings().budgets = vec![Budget::nodes("100%")];
    let bal = f.input.pools.entry("bal".into()).or_default();
    bal.budgets = vec![Budget::nodes("100%")];
    bal.consolidation_policy = ConsolidationPolicy::Balanced {
        consolidation_threshold: k,
    };
    f
}

#[test]
fn balanced_attributes_a_cross_pool_moves_savings_by_price_share() {
    // Deleting b-0 and d-0 saves $0.20/h; b-0's pool is credited half (its share of the
    // candidates' price): savings 0.1/0.4 = 25 %, disruption 7/13 ≈ 53.8 %, score ≈ 0.46.
    let f = cross_pool(2);
    let scores = balanced_scores(&f.input, &["b-0", "d-0"], 0.2);
    assert_eq!(scores.len(), 1, "only the Balanced pool scores: {scores:?}");
    let (pool, s) = &scores[0];
    assert_eq!(pool, "bal");
    assert!((s.savings_fraction - 0.25).abs() < 1e-9, "{s:?}");
    assert!((s.disruption_fraction - 7.0 / 13.0).abs() < 1e-9, "{s:?}");
    assert!((s.score - 3.25 / 7.0).abs() < 1e-9, "{s:?}");
    assert!(!s.approved);
    // Rejected as a batch, so multi-node finds nothing and single-node takes d-0 alone (its
    // pool does not score).
    let out = f.plan();
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.decision),
        (Method::SingleNode, Decision::Delete)
    );
    assert_eq!(c.candidates, ["d-0"]);

    // With k = 3 (threshold 1/3) the pool approves the batch.
    let out = cross_pool(3).plan();
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.decision),
        (Method::MultiNode, Decision::Delete)
    );
    assert_eq!(c.candidates, ["b-0", "d-0"]);
}

#[test]
fn balanced_never_approves_a_move_without_savings() {
    let zero = |policy| {
        let mut types = two_cpu();
        types.push(
            instance_type("m.free")
                .cpu("2")
                .memory("8Gi")
                .price(0.0)
                .capacity_types(["on-demand"])
                .build(),
        );
        let mut f = Fixture::new(types);
        f.node("node-a", "m.large", "on-demand");
        f.pod(web("pinned", "500m"), "node-a").do_not_disrupt = Some("true".into());
        f.node("node-z", "m.free", "on-demand");
        f.pod(web("z", "500m"), "node-z");
        f.settings().consolidation_policy = policy;
        f.plan()
    };
    // WhenEmptyOrUnderutilized deletes the free node: its pod fits on node-a.
    let out = zero(ConsolidationPolicy::WhenEmptyOrUnderutilized);
    assert_eq!(out.commands[0].candidates, ["node-z"]);
    assert_eq!(out.commands[0].decision, Decision::Delete);
    // Balanced does not: the move saves nothing.
    let out = zero(ConsolidationPolicy::balanced());
    assert!(out.commands.is_empty(), "{:?}", out.commands);
    assert!(
        reason_of(&out, "node-z")
            .starts_with("score 0.00 < threshold 0.50 (consolidationThreshold: 2, savings 0.0%"),
        "{}",
        reason_of(&out, "node-z")
    );
}

#[test]
fn balanced_pools_still_delete_empty_nodes() {
    let mut f = Fixture::new(two_cpu());
    f.node("node-a", "m.large", "on-demand");
    f.node("node-b", "m.large", "on-demand");
    f.pod(web("busy", "1"), "node-b");
    f.settings().consolidation_policy = ConsolidationPolicy::balanced();
    let out = f.plan();
    assert_eq!(out.commands[0].method, Method::Emptiness);
    assert_eq!(out.commands[0].candidates, ["node-a"]);
}

// ---- validation after the 15 s delay -----------------------------------------------------------

fn validate_at(f: &Fixture, c: &Command) -> Result<Validated, Invalid> {
    super::validate(
        &f.input,
        now().plus(CONSOLIDATION_TTL),
        &DisruptionOptions::default(),
        c,
    )
}

#[test]
fn emptiness_validation_keeps_the_nodes_still_empty_and_within_budget() {
    let mut f = Fixture::new(two_cpu());
    for n in ["node-a", "node-b", "node-c"] {
        f.node(n, "m.large", "on-demand");
    }
    f.settings().budgets = vec![Budget::nodes("100%")];
    let out = f.plan();
    let c = &out.commands[0];
    assert_eq!(c.candidates, ["node-a", "node-b", "node-c"]);
    // Unchanged: the same command.
    let v = validate_at(&f, c).unwrap();
    assert_eq!(v.command.candidates, c.candidates);
    assert!(v.dropped.is_empty());
    // A pod bound to node-b, a do-not-disrupt annotation on node-c: node-a alone goes on.
    f.pod(web("late", "1"), "node-b");
    f.facts("node-c").do_not_disrupt = true;
    let v = validate_at(&f, c).unwrap();
    assert_eq!(v.command.candidates, ["node-a"]);
    assert_eq!(v.dropped["node-b"], "Node is no longer empty");
    assert!(
        v.dropped["node-c"].contains("do-not-disrupt"),
        "{:?}",
        v.dropped
    );
    // A budget of 0 for Empty: nothing is left, and every proposed node counts as failed.
    f.settings().budgets = vec![Budget::nodes("0").reasons(&[Reason::Empty])];
    let e = validate_at(&f, c).unwrap_err();
    assert_eq!(e.failed, c.candidates);
}

#[test]
fn consolidation_validation_is_all_or_nothing_and_resimulates() {
    let mut f = movable();
    let out = f.plan();
    let c = out.commands[0].clone();
    assert_eq!(
        (c.method, c.decision, c.candidates.as_slice()),
        (
            Method::SingleNode,
            Decision::Delete,
            ["node-a".to_string()].as_slice()
        )
    );
    assert!(validate_at(&f, &c).is_ok());
    // A PDB now allows no eviction: the candidate is blocked, the command fails validation.
    let mut blocked = f.clone();
    blocked.input.pdbs = vec![pdb("web", 0)];
    let e = validate_at(&blocked, &c).unwrap_err();
    assert_eq!(e.failed, ["node-a"]);
    assert!(e.reason.contains("PDB"), "{}", e.reason);
    // node-b filled up meanwhile: the pod no longer fits, the re-simulation rejects the delete
    // (not counted as a failed validation, as in Karpenter).
    let mut full = f.clone();
    full.pod(pod("filler").cpu("1200m").build(), "node-b");
    let e = validate_at(&full, &c).unwrap_err();
    assert!(e.failed.is_empty(), "{e:?}");
    // A pod with do-not-disrupt appeared on the candidate.
    f.pod(web("pinned", "100m"), "node-a").do_not_disrupt = Some("true".into());
    assert!(validate_at(&f, &c).is_err());
}

#[test]
fn replacement_validation_requires_the_commands_instance_types_to_still_fit() {
    let mut f = Fixture::new(sized_types());
    f.node("node-a", "large", "on-demand");
    f.pod(web("a", "1"), "node-a");
    let c = f.plan().commands[0].clone();
    assert_eq!(c.decision, Decision::Replace);
    let v = validate_at(&f, &c).unwrap();
    assert_eq!(
        v.command.replacements[0].cheapest.instance_type,
        c.replacements[0].cheapest.instance_type
    );
    // The pod grew past what a small node holds: the replacement options changed.
    let mut grown = web("a", "3");
    grown.node_name = Some("node-a".into());
    f.input.snapshot.pods[0] = grown;
    let e = validate_at(&f, &c).unwrap_err();
    assert!(e.failed.is_empty());
}

// ---- static pools (spec.replicas) ------------------------------------------------------------

/// Three m.large nodes of a static pool of `replicas`, with a pod each; `node-a` and `node-b`
/// drifted (node-b first).
fn static_pool(replicas: u64) -> Fixture {
    let mut f = Fixture::new(two_cpu());
    f.input.snapshot.node_pools[0].replicas = Some(replicas);
    for (n, p) in [("node-a", "a"), ("node-b", "b"), ("node-c", "c")] {
        f.node(n, "m.large", "on-demand");
        f.pod(web(p, "500m"), n);
    }
    f.facts("node-a").drifted = Some(Drift {
        reason: "AMIDrift".into(),
        since: hours_ago(1),
    });
    f.facts("node-b").drifted = Some(Drift {
        reason: "AMIDrift".into(),
        since: hours_ago(2),
    });
    f
}

#[test]
fn static_pool_nodes_are_never_consolidated_even_when_empty() {
    let mut f = static_pool(3);
    for n in ["node-a", "node-b"] {
        f.facts(n).drifted = None;
    }
    f.node("node-d", "m.large", "on-demand");
    let out = f.plan();
    assert!(out.commands.is_empty(), "{:?}", out.commands);
    for n in ["node-a", "node-d"] {
        assert!(
            reason_of(&out, n).contains("is static (spec.replicas)"),
            "{n}: {}",
            reason_of(&out, n)
        );
    }
    // The same nodes in a dynamic pool: the empty one goes.
    f.input.snapshot.node_pools[0].replicas = None;
    assert_eq!(f.plan().commands[0].candidates, ["node-d"]);
}

#[test]
fn static_drift_replaces_drifted_nodes_one_for_one_within_the_drifted_budget() {
    let mut f = static_pool(3);
    f.settings().budgets = vec![Budget::nodes("1").reasons(&[Reason::Drifted])];
    let out = f.plan();
    let c = &out.commands[0];
    assert_eq!(
        (c.method, c.decision, c.reason),
        (Method::StaticDrift, Decision::Replace, Reason::Drifted)
    );
    assert_eq!(c.candidates, ["node-b"], "earliest drifted first");
    assert_eq!(c.replacements.len(), 1);
    let r = &c.replacements[0];
    assert_eq!(r.nodepool, "default");
    assert!(r.pods.is_empty(), "a static replica carries no pods");
    assert_eq!(r.cheapest.instance_type, "m.large");
    assert!(
        reason_of(&out, "node-a").contains("blocking budget"),
        "{}",
        reason_of(&out, "node-a")
    );
    // A larger budget takes both in one command.
    f.settings().budgets = vec![Budget::nodes("2")];
    let out = f.plan();
    assert_eq!(out.commands[0].candidates, ["node-a", "node-b"]);
    assert_eq!(out.commands[0].replacements.len(), 2);
}

#[test]
fn static_drift_needs_room_under_limits_nodes_and_waits_for_a_scale_down() {
    let mut f = static_pool(3);
    f.settings().budgets = vec![Budget::nodes("100%")];
    f.input.snapshot.node_pools[0].limits.nodes = Some(4);
    let out = f.plan();
    assert_eq!(out.commands[0].candidates, ["node-b"], "one slot of room");
    assert!(reason_of(&out, "node-a").contains("node limit"));
    f.input.snapshot.node_pools[0].limits.nodes = Some(3);
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert!(reason_of(&out, "node-b").contains("node limit"));
    // More nodes than replicas: the pool is scaling down, drift waits.
    f.input.snapshot.node_pools[0].limits.nodes = None;
    f.input.snapshot.node_pools[0].replicas = Some(2);
    let out = f.plan();
    assert!(out.commands.is_empty());
    assert!(reason_of(&out, "node-b").contains("scaling down to 2"));
}

#[test]
fn static_pools_open_no_nodeclaim_for_pending_pods() {
    let mut f = static_pool(3);
    // 1600m fits on no existing node (1500m free each), only on a new one.
    let mut p = web("pending", "1600m");
    p.node_name = None;
    f.input.snapshot.pods.push(p.clone());
    let results = crate::scheduling::schedule(&f.input.snapshot, &Default::default());
    assert!(results.new_nodeclaims.is_empty());
    assert_eq!(results.unschedulable.len(), 1);
    // A dynamic pool next to it launches for the pod.
    let mut dynamic = nodepool("dynamic", f.types.clone());
    dynamic.weight = 0;
    f.input.snapshot.node_pools.push(dynamic);
    let results = crate::scheduling::schedule(&f.input.snapshot, &Default::default());
    assert_eq!(results.new_nodeclaims.len(), 1);
    assert_eq!(results.new_nodeclaims[0].nodepool, "dynamic");
    let _ = p;
}
