//! `karp disrupt` on arbitrary manifest text: never panics, every command's simulation passes the
//! independent validator, and every managed node is in exactly one command or listed as not a
//! candidate.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use karp_core::disruption::{Justification, Method, Mode, SavingsThreshold, Timestamp};
use karp_operator::commands::disrupt::{disrupt_documents, render_table, Disrupt, DisruptOptions};
use karp_operator::commands::plan::PlanError;
use libfuzzer_sys::fuzz_target;

#[path = "common/catalog.rs"]
mod catalog;
#[path = "common/skip.rs"]
mod skip;

use catalog::catalog;
use skip::input;

/// The fixed `--now` (the prefix's nodes are four hours old, its claim's last pod event three).
const NOW: &str = "2026-12-01T12:00:00Z";

/// Prepended when bit 0 of the first byte is set: a pool (consolidation after 1m, every budget
/// reason limited to 50 %), an on-demand `m5.large` node-a backed by a NodeClaim and a spot
/// `c6g.xlarge` node-b standing in for its own claim, both initialized and empty, so the rest of
/// the input (pods bound to them, PDBs, more nodes) reaches the planner.
const PREFIX: &str = r#"apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec: {amiSelectorTerms: [{alias: al2023@latest}]}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 1m
    budgets: [{nodes: "50%"}]
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot, on-demand]}
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  creationTimestamp: "2026-12-01T08:00:00Z"
  labels:
    kubernetes.io/hostname: node-a
    kubernetes.io/arch: amd64
    karpenter.sh/nodepool: default
    karpenter.sh/initialized: "true"
    karpenter.sh/capacity-type: on-demand
    node.kubernetes.io/instance-type: m5.large
    topology.kubernetes.io/zone: us-east-1a
spec: {providerID: "aws:///us-east-1a/i-node-a"}
status: {allocatable: {cpu: 1900m, memory: 7Gi, pods: "29"}}
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  creationTimestamp: "2026-12-01T08:00:00Z"
  labels:
    kubernetes.io/hostname: node-b
    kubernetes.io/arch: arm64
    karpenter.sh/nodepool: default
    karpenter.sh/initialized: "true"
    karpenter.sh/capacity-type: spot
    node.kubernetes.io/instance-type: c6g.xlarge
    topology.kubernetes.io/zone: us-east-1b
spec: {providerID: "aws:///us-east-1b/i-node-b"}
status: {allocatable: {cpu: 3920m, memory: 7Gi, pods: "58"}}
---
apiVersion: karpenter.sh/v1
kind: NodeClaim
metadata:
  name: default-a
  creationTimestamp: "2026-12-01T08:00:00Z"
  labels: {karpenter.sh/nodepool: default}
spec:
  nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
  expireAfter: 720h
status:
  providerID: "aws:///us-east-1a/i-node-a"
  nodeName: node-a
  lastPodEventTime: "2026-12-01T09:00:00Z"
  conditions:
  - {type: Initialized, status: "True", reason: Initialized, lastTransitionTime: "2026-12-01T08:01:00Z"}
---
"#;

/// The properties of a dry run that returned `Ok`: every pass's plan on the input it ran on
/// (see [`check_plan`]), and the output.
fn check(d: &Disrupt) {
    check_plan(&d.input, &d.plan);
    for p in &d.passes {
        check_plan(&p.input, &p.plan);
    }
    let o = &d.output;
    if d.passes.len() <= 1 {
        assert_eq!(o.commands.len(), d.plan.commands.len());
    }
    assert_eq!(
        o.not_candidates.len(),
        d.passes
            .last()
            .map_or(&d.plan, |p| &p.plan)
            .not_candidates
            .len()
    );
    for x in [
        o.cost.before_per_hour,
        o.cost.after_per_hour,
        o.cost.lower_bound_per_hour,
    ] {
        assert!(x.is_finite(), "cost {:?}", o.cost);
    }
    let _ = render_table(o);
}

/// The properties of one pass's plan (the same as `check_commands` in
/// `karp-core/src/disruption/tests.rs`, on the operator's input).
fn check_plan(
    input: &karp_core::disruption::DisruptionInput,
    plan: &karp_core::disruption::DisruptionPlan,
) {
    for c in &plan.commands {
        let who = || format!("{} command on {:?}", c.method.as_str(), c.candidates);
        if let Some(sim) = &c.simulation {
            if let Err(v) = karp_core::validation::validate(&sim.snapshot, &sim.results) {
                panic!("{} fails validation: {v:?}", who());
            }
            if c.method != Method::Expiration {
                if let Some(f) = sim.running_pod_failure() {
                    panic!("{} leaves a running pod pending: {f}", who());
                }
            }
        }
        assert!(!c.candidates.is_empty(), "{} has no candidates", who());
        for n in &c.candidates {
            assert!(input.nodes.contains_key(n), "{}: {n} is not managed", who());
        }
        for m in &c.moves {
            let Some(to) = m.to.as_deref() else {
                assert_eq!(
                    c.method,
                    Method::Expiration,
                    "{}: {} left pending",
                    who(),
                    m.pod
                );
                continue;
            };
            assert!(
                !c.candidates.iter().any(|n| n == to),
                "{}: {} moves onto a candidate",
                who(),
                m.pod
            );
            if let Some(i) = to.strip_prefix("replacement-") {
                assert!(
                    i.parse::<usize>().is_ok_and(|i| i < c.replacements.len()),
                    "{}: {} moves to {to}, {} replacements",
                    who(),
                    m.pod,
                    c.replacements.len()
                );
            } else {
                let node = input.snapshot.nodes.iter().find(|n| n.name == to);
                assert!(
                    node.is_some_and(|n| n.initialized),
                    "{}: {} moves to {to}, not an initialized node",
                    who(),
                    m.pod
                );
            }
        }
        assert!(
            c.savings_per_hour.is_finite(),
            "{} saves {}",
            who(),
            c.savings_per_hour
        );
        if matches!(c.method, Method::MultiNode | Method::SingleNode) {
            assert!(
                c.savings_per_hour > 0.0,
                "{} saves {}",
                who(),
                c.savings_per_hour
            );
        }
    }
    // Every managed node is in exactly one command or listed once with a reason.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &plan.commands {
        for n in &c.candidates {
            *seen.entry(n).or_default() += 1;
        }
    }
    for n in &plan.not_candidates {
        assert!(
            input.nodes.contains_key(&n.node),
            "not_candidates lists unmanaged {}",
            n.node
        );
        *seen.entry(&n.node).or_default() += 1;
    }
    for name in input.nodes.keys() {
        let times = seen.get(name.as_str()).copied().unwrap_or(0);
        assert_eq!(
            times, 1,
            "managed node {name} is in {times} commands / not_candidates entries"
        );
    }
}

/// `KARP_FUZZ_DEBUG` set: print each run's outcome to stderr (for checking seeds by hand).
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("KARP_FUZZ_DEBUG").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((first, text)) = input(data, PREFIX) else {
        return;
    };
    let global = first & 16 == 16;
    let options = DisruptOptions {
        now: NOW.parse::<Timestamp>().expect("NOW parses"),
        spot_to_spot_consolidation: first & 4 == 4,
        // Bit 4: `--mode global --min-savings 0 --global-balanced-k off` (else `--mode
        // karpenter`; a NodePool can still ask for the global consolidator with
        // `karp.dev/consolidation-mode`); bit 6: `--until-stable`.
        mode: if global {
            Mode::Global
        } else {
            Mode::Karpenter
        },
        min_savings: if global {
            SavingsThreshold::ZERO
        } else {
            SavingsThreshold::DEFAULT
        },
        justification: if global {
            Justification::Off
        } else {
            Justification::default()
        },
        until_stable: first & 64 == 64,
    };
    let result = disrupt_documents("fuzz.yaml", &text, catalog(), &options);
    if debug() {
        match &result {
            Ok(d) => eprintln!(
                "ok: {} managed nodes, commands {:?}, not candidates {:?}, warnings {:?}",
                d.input.nodes.len(),
                d.output
                    .commands
                    .iter()
                    .map(|c| format!("{} {} {:?}", c.method, c.decision, c.candidates))
                    .collect::<Vec<_>>(),
                d.output
                    .not_candidates
                    .iter()
                    .map(|n| format!("{}: {}", n.node, n.reason))
                    .collect::<Vec<_>>(),
                d.warnings
            ),
            Err(e) => eprintln!("error: {e}"),
        }
    }
    match result {
        Ok(d) => check(&d),
        // disrupt_documents runs the validator on every command's simulation itself.
        Err(e @ PlanError::InvalidPlan { .. }) => panic!("disrupt_documents: {e}"),
        Err(_) => {}
    }
});
