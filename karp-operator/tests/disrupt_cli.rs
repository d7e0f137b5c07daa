//! `karp disrupt` end to end: the built binary on manifest files.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn karp(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_karp"))
        .args(args)
        .output()
        .expect("run karp");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("disrupt_cli")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CATALOG: &str = r#"{"instance_types": [
  {"name": "m5.large", "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"},
   "overhead": {"cpu": "0", "memory": "0"},
   "offerings": [{"zone": "us-east-1a", "capacity_type": "on-demand", "price": 0.096, "available": true}]}]}"#;

const POOL: &str = r#"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec: {amiSelectorTerms: [{alias: al2023@latest}]}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  disruption: {consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 5m, budgets: [{nodes: "100%"}]}
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
"#;

fn node(name: &str, extra_labels: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Node
metadata:
  name: {name}
  creationTimestamp: "2026-12-01T08:00:00Z"
  labels:
    karpenter.sh/nodepool: default
    karpenter.sh/capacity-type: on-demand
    node.kubernetes.io/instance-type: m5.large
    topology.kubernetes.io/zone: us-east-1a
{extra_labels}
spec: {{providerID: "aws:///us-east-1a/i-{name}"}}
status: {{allocatable: {{cpu: "2", memory: 8Gi, pods: "29"}}}}
"#
    )
}

fn pod(name: &str, node: &str, extra_meta: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
{extra_meta}
spec:
  nodeName: {node}
  containers: [{{name: c, resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}}}]
status: {{phase: Running, startTime: "2026-12-01T09:00:00Z", conditions: [{{type: Ready, status: "True"}}]}}
"#
    )
}

/// node-a (a NodeClaim behind it) and node-b (a Node standing in for its claim) each run one web
/// pod; node-c carries do-not-disrupt.
fn cluster(dir: &Path, claim_status: &str) -> (PathBuf, PathBuf) {
    let mut text = POOL.to_string();
    text.push_str(&node("node-a", ""));
    text.push_str(&node("node-b", "    karpenter.sh/initialized: \"true\""));
    text.push_str(&node("node-c", "    karpenter.sh/initialized: \"true\""));
    text = text.replacen(
        "  name: node-c\n",
        "  name: node-c\n  annotations: {karpenter.sh/do-not-disrupt: \"true\"}\n",
        1,
    );
    text.push_str(&format!(
        r#"---
apiVersion: karpenter.sh/v1
kind: NodeClaim
metadata: {{name: default-a, creationTimestamp: "2026-12-01T08:00:00Z"}}
spec:
  nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}
  expireAfter: 720h
status:
  providerID: "aws:///us-east-1a/i-node-a"
  nodeName: node-a
{claim_status}
"#
    ));
    text.push_str(&pod("web-a", "node-a", ""));
    text.push_str(&pod("web-b", "node-b", ""));
    let manifests = dir.join("cluster.yaml");
    std::fs::write(&manifests, text).unwrap();
    let catalog = dir.join("catalog.json");
    std::fs::write(&catalog, CATALOG).unwrap();
    (manifests, catalog)
}

const INITIALIZED: &str = r#"  lastPodEventTime: "2026-12-01T09:00:00Z"
  conditions:
  - {type: Initialized, status: "True", reason: Initialized, lastTransitionTime: "2026-12-01T08:01:00Z"}"#;

fn run(manifests: &Path, catalog: &Path, extra: &[&str]) -> Run {
    let m = manifests.to_str().unwrap();
    let c = catalog.to_str().unwrap();
    let mut args = vec![
        "disrupt",
        "-f",
        m,
        "--catalog",
        c,
        "--now",
        "2026-12-01T12:00:00Z",
    ];
    args.extend_from_slice(extra);
    karp(&args)
}

fn json(r: &Run) -> Value {
    assert_eq!(r.code, 0, "karp disrupt failed: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

#[test]
fn disrupt_consolidates_two_nodes_onto_a_third_and_explains_the_rest() {
    let dir = scratch("consolidate");
    let (m, c) = cluster(&dir, INITIALIZED);
    let out = json(&run(&m, &c, &[]));
    let cmds = out["commands"].as_array().unwrap();
    assert_eq!(cmds.len(), 1, "{out:#}");
    let cmd = &cmds[0];
    // node-c may not be disrupted but may receive pods: both web pods fit there.
    assert_eq!(cmd["method"], "multi-node");
    assert_eq!(cmd["reason"], "Underutilized");
    assert_eq!(cmd["decision"], "delete");
    assert_eq!(cmd["candidates"], serde_json::json!(["node-a", "node-b"]));
    assert_eq!(
        cmd["moves"],
        serde_json::json!([
            {"pod": "default/web-a", "from": "node-a", "to": "node-c"},
            {"pod": "default/web-b", "from": "node-b", "to": "node-c"}
        ])
    );
    assert_eq!(cmd["replacements"], serde_json::json!([]));
    assert_eq!(cmd["at"], "2026-12-01T12:00:15Z");
    assert!((cmd["savings_per_hour"].as_f64().unwrap() - 0.192).abs() < 1e-9);
    let reasons: Vec<(String, String)> = out["not_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().into(),
                n["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [(
            "node-c".to_string(),
            "Disruption is blocked with the \"karpenter.sh/do-not-disrupt\" annotation".to_string()
        )]
    );
    let budgets = out["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 3);
    assert!(budgets.iter().all(|b| b["allowed"] == 3), "{budgets:?}");
    assert!((out["cost"]["before_per_hour"].as_f64().unwrap() - 0.288).abs() < 1e-9);
    assert!((out["cost"]["after_per_hour"].as_f64().unwrap() - 0.096).abs() < 1e-9);
    assert!(out["cost"]["lower_bound_per_hour"].as_f64().unwrap() <= 0.096 + 1e-9);
    assert_eq!(out["solver"]["name"], "karpenter");

    let table = run(&m, &c, &["-o", "table"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table
            .stdout
            .contains("multi-node (Underutilized): delete node-a, node-b"),
        "{}",
        table.stdout
    );
}

#[test]
fn disrupt_honours_pdbs_and_uninitialized_claims() {
    let dir = scratch("pdb");
    let (m, c) = cluster(&dir, INITIALIZED);
    let pdb = "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec: {minAvailable: 2, selector: {matchLabels: {app: web}}}\n";
    let mut text = std::fs::read_to_string(&m).unwrap();
    text.push_str(pdb);
    std::fs::write(&m, text).unwrap();
    // Two healthy web pods, minAvailable 2: no eviction allowed (computed, no status).
    let out = json(&run(&m, &c, &[]));
    assert_eq!(out["commands"], serde_json::json!([]), "{out:#}");
    assert!(
        out["not_candidates"]
            .to_string()
            .contains("PDB \\\"default/web\\\" prevents pod evictions"),
        "{out:#}"
    );

    let (m, c) = cluster(&scratch("uninitialized"), "  conditions: []");
    let out = json(&run(&m, &c, &[]));
    let a = out["not_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-a")
        .cloned();
    assert_eq!(a.unwrap()["reason"], "Node isn't initialized");
}

#[test]
fn disrupt_rejects_invalid_input_with_exit_2_naming_file_object_and_field() {
    let dir = scratch("invalid");
    let (m, c) = cluster(&dir, "  lastPodEventTime: yesterday");
    let r = run(&m, &c, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for f in [
        "cluster.yaml",
        "NodeClaim default-a",
        "status.lastPodEventTime",
    ] {
        assert!(r.stderr.contains(f), "stderr lacks {f:?}: {}", r.stderr);
    }
    assert!(!r.stderr.contains("panicked"));
    let (m, c) = cluster(&dir, INITIALIZED);
    let r = karp(&[
        "disrupt",
        "-f",
        m.to_str().unwrap(),
        "--catalog",
        c.to_str().unwrap(),
        "--now",
        "noon",
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--now"), "{}", r.stderr);
    let r = run(&m, &c, &["--feature-gates", "Teleport=true"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("unknown feature gate \"Teleport\""),
        "{}",
        r.stderr
    );
    let r = run(&m, &c, &["--feature-gates", "SpotToSpotConsolidation=true"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn disrupt_until_stable_waits_for_consolidate_after_windows() {
    let dir = scratch("until-stable");
    // node-a's claim saw a pod event at 11:58: its 5m window opens at 12:03.
    let status = INITIALIZED.replace("09:00:00Z", "11:58:00Z");
    let (m, c) = cluster(&dir, &status);
    let one = json(&run(&m, &c, &[]));
    assert_eq!(one["commands"].as_array().unwrap().len(), 1, "{one:#}");
    assert_eq!(
        one["commands"][0]["candidates"],
        serde_json::json!(["node-b"])
    );
    let out = json(&run(&m, &c, &["--until-stable"]));
    let cmds = out["commands"].as_array().unwrap();
    assert_eq!(cmds.len(), 2, "{out:#}");
    assert_eq!(cmds[0]["candidates"], serde_json::json!(["node-b"]));
    assert_eq!(cmds[0]["at"], "2026-12-01T12:00:15Z");
    // node-c received web-b at 12:00:15, so it is no destination before 12:05:15.
    assert_eq!(cmds[1]["candidates"], serde_json::json!(["node-a"]));
    assert_eq!(cmds[1]["moves"][0]["to"], "node-c");
    assert_eq!(cmds[1]["at"], "2026-12-01T12:05:30Z");
    assert!((out["cost"]["before_per_hour"].as_f64().unwrap() - 0.288).abs() < 1e-9);
    assert!((out["cost"]["after_per_hour"].as_f64().unwrap() - 0.096).abs() < 1e-9);
    assert_eq!(
        out["not_candidates"][0]["node"], "node-c",
        "the last pass explains what is left"
    );
}

const SIZES: &str = r#"{"instance_types": [
  {"name": "small", "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"},
   "overhead": {"cpu": "0", "memory": "0"},
   "offerings": [{"zone": "us-east-1a", "capacity_type": "on-demand", "price": 0.1}]},
  {"name": "large", "capacity": {"cpu": "8", "memory": "32Gi", "pods": "29"},
   "overhead": {"cpu": "0", "memory": "0"},
   "offerings": [{"zone": "us-east-1a", "capacity_type": "on-demand", "price": 0.4}]}]}"#;

/// One `large` node running two 1.5-CPU pods: only two `small` nodes are cheaper.
fn splittable(dir: &Path, pool_annotations: &str) -> (PathBuf, PathBuf) {
    let mut text = POOL.replacen(
        "metadata: {name: default}\nspec:\n  disruption",
        &format!("metadata: {{name: default{pool_annotations}}}\nspec:\n  disruption"),
        1,
    );
    text.push_str(
        &node("node-a", "    karpenter.sh/initialized: \"true\"")
            .replace("m5.large", "large")
            .replace("cpu: \"2\", memory: 8Gi", "cpu: \"8\", memory: 32Gi"),
    );
    for p in ["web-a", "web-b"] {
        text.push_str(&pod(p, "node-a", "").replace("cpu: 500m", "cpu: 1500m"));
    }
    let manifests = dir.join("cluster.yaml");
    std::fs::write(&manifests, text).unwrap();
    let catalog = dir.join("catalog.json");
    std::fs::write(&catalog, SIZES).unwrap();
    (manifests, catalog)
}

#[test]
fn disrupt_global_mode_splits_a_node_karpenter_mode_keeps() {
    let dir = scratch("global");
    let (m, c) = splittable(&dir, "");
    let k = json(&run(&m, &c, &[]));
    assert_eq!(k["commands"], serde_json::json!([]), "{k:#}");
    let g = json(&run(&m, &c, &["--mode", "global"]));
    let cmd = &g["commands"][0];
    assert_eq!(cmd["method"], "global", "{g:#}");
    assert_eq!(cmd["decision"], "replace");
    assert_eq!(cmd["candidates"], serde_json::json!(["node-a"]));
    let types: Vec<&str> = cmd["replacements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instance_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["small", "small"]);
    assert!((cmd["savings_per_hour"].as_f64().unwrap() - 0.2).abs() < 1e-9);
    let bound = cmd["lower_bound_per_hour"].as_f64().unwrap();
    assert!(bound > 0.0 && bound <= 0.2 + 1e-9, "{bound}");
    assert_eq!(g["solver"]["name"], "global");
    assert!((g["cost"]["after_per_hour"].as_f64().unwrap() - 0.2).abs() < 1e-9);
    // The threshold: 0.25 $/h is more than the move saves.
    let t = json(&run(&m, &c, &["--mode", "global", "--min-savings", "0.25"]));
    assert_eq!(t["commands"], serde_json::json!([]));
    assert!(t["not_candidates"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("below the savings threshold"));
    // The pool's annotations override the flags.
    let (m, c) = splittable(
        &scratch("global-annotated"),
        ", annotations: {karp.dev/consolidation-mode: global, karp.dev/consolidation-min-savings: \"1%\"}",
    );
    let a = json(&run(&m, &c, &["--min-savings", "0.25"]));
    assert_eq!(a["commands"][0]["method"], "global", "{a:#}");
}

#[test]
fn disrupt_rejects_bad_thresholds_and_modes_with_exit_2() {
    let dir = scratch("bad-threshold");
    let (m, c) = splittable(&dir, "");
    let r = run(&m, &c, &["--mode", "global", "--min-savings", "cheap"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--min-savings"), "{}", r.stderr);
    let r = run(&m, &c, &["--mode", "global", "--global-balanced-k", "5"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--global-balanced-k"), "{}", r.stderr);
    let ok = run(&m, &c, &["--mode", "global", "--global-balanced-k", "off"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let (m, c) = splittable(
        &scratch("bad-annotation"),
        ", annotations: {karp.dev/consolidation-mode: greedy}",
    );
    let r = run(&m, &c, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for f in [
        "cluster.yaml",
        "NodePool default",
        "karp.dev/consolidation-mode",
        "greedy",
    ] {
        assert!(r.stderr.contains(f), "stderr lacks {f:?}: {}", r.stderr);
    }
}

/// The drift reasons of a command, as `(node, reason, since)`.
fn drift_of(cmd: &Value) -> Vec<(String, String, String)> {
    cmd["drift"]
        .as_array()
        .unwrap_or_else(|| panic!("no drift in {cmd:#}"))
        .iter()
        .map(|d| {
            (
                d["node"].as_str().unwrap().into(),
                d["reason"].as_str().unwrap().into(),
                d["since"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn disrupt_drifts_nodes_whose_requirements_changed_or_whose_type_left_the_catalog() {
    // The NodePool now asks for spot; the nodes run on demand.
    let dir = scratch("drift-requirements");
    let (m, c) = cluster(&dir, INITIALIZED);
    let text = std::fs::read_to_string(&m).unwrap().replacen(
        "    spec:\n      nodeClassRef:",
        "    spec:\n      requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [spot]}]\n      nodeClassRef:",
        1,
    );
    std::fs::write(&m, text).unwrap();
    let out = json(&run(&m, &c, &[]));
    let cmd = &out["commands"][0];
    assert_eq!(cmd["method"], "drift", "{out:#}");
    assert_eq!(cmd["reason"], "Drifted");
    // Both drifted at --now; the name breaks the tie. web-a fits on another node.
    assert_eq!(cmd["candidates"], serde_json::json!(["node-a"]));
    assert_eq!(
        drift_of(cmd),
        [(
            "node-a".to_string(),
            "RequirementsDrifted".to_string(),
            "2026-12-01T12:00:00Z".to_string()
        )]
    );
    let table = run(&m, &c, &["-o", "table"]);
    assert!(
        table
            .stdout
            .contains("node-a drifted: RequirementsDrifted since 2026-12-01T12:00:00Z"),
        "{}",
        table.stdout
    );

    // The pool is unchanged but the catalog no longer has m5.large.
    let dir = scratch("drift-catalog");
    let (m, c) = cluster(&dir, INITIALIZED);
    std::fs::write(
        &c,
        CATALOG
            .replace("m5.large", "m6i.large")
            .replace("0.096", "0.0864"),
    )
    .unwrap();
    let out = json(&run(&m, &c, &[]));
    let cmd = &out["commands"][0];
    assert_eq!(cmd["method"], "drift", "{out:#}");
    assert_eq!(
        drift_of(cmd),
        [(
            "node-a".to_string(),
            "InstanceTypeNotFound".to_string(),
            "2026-12-01T12:00:00Z".to_string()
        )]
    );
}

/// The consolidation cluster with a Balanced pool (`threshold`: extra disruption fields) and
/// node-c a candidate whose only pod is pinned and cheap to evict: deleting node-a and node-b
/// saves 2/3 of the pool's cost for 4/5 of its disruption (score 0.83).
fn balanced_cluster(dir: &Path, threshold: &str) -> (PathBuf, PathBuf) {
    let (m, c) = cluster(dir, INITIALIZED);
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replacen(
            "consolidationPolicy: WhenEmptyOrUnderutilized,",
            &format!("consolidationPolicy: Balanced,{threshold}"),
            1,
        )
        .replacen(
            "  name: node-c\n  annotations: {karpenter.sh/do-not-disrupt: \"true\"}\n",
            "  name: node-c\n",
            1,
        )
        + &pod(
            "web-c",
            "node-c",
            "  annotations: {karpenter.sh/do-not-disrupt: \"true\", controller.kubernetes.io/pod-deletion-cost: \"-1000000000\"}",
        );
    std::fs::write(&m, text).unwrap();
    (m, c)
}

#[test]
fn disrupt_balanced_pool_takes_only_moves_whose_savings_justify_the_disruption() {
    // k = 2 (the default): 0.83 ≥ 0.5, the same move as WhenEmptyOrUnderutilized.
    let (m, c) = balanced_cluster(&scratch("balanced-k2"), "");
    let out = json(&run(&m, &c, &[]));
    let cmd = &out["commands"][0];
    assert_eq!(cmd["method"], "multi-node", "{out:#}");
    assert_eq!(cmd["candidates"], serde_json::json!(["node-a", "node-b"]));

    // k = 1: 0.83 < 1, and single-node's one-node moves score 0.83 too.
    let (m, c) = balanced_cluster(&scratch("balanced-k1"), " consolidationThreshold: 1,");
    let out = json(&run(&m, &c, &[]));
    assert_eq!(out["commands"], serde_json::json!([]), "{out:#}");
    let reason = |node: &str| {
        out["not_candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .map(|n| n["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{node} not listed: {out:#}"))
    };
    let rejected =
        "score 0.83 < threshold 1.00 (consolidationThreshold: 1, savings 33.3%, disruption 40.0%)";
    assert_eq!(reason("node-a"), rejected);
    assert_eq!(reason("node-b"), rejected);
    assert_eq!(
        reason("node-c"),
        "Pod \"default/web-c\" has \"karpenter.sh/do-not-disrupt\" annotation"
    );

    // Out of Karpenter's range, or without Balanced: exit 2 naming the field.
    for (threshold, policy) in [
        (" consolidationThreshold: 4,", "Balanced"),
        (" consolidationThreshold: 2,", "WhenEmpty"),
    ] {
        let dir = scratch("balanced-invalid");
        let (m, c) = balanced_cluster(&dir, threshold);
        let text = std::fs::read_to_string(&m).unwrap().replacen(
            "consolidationPolicy: Balanced",
            &format!("consolidationPolicy: {policy}"),
            1,
        );
        std::fs::write(&m, text).unwrap();
        let r = run(&m, &c, &[]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        for f in [
            "cluster.yaml",
            "NodePool default",
            "spec.disruption.consolidationThreshold",
        ] {
            assert!(r.stderr.contains(f), "stderr lacks {f:?}: {}", r.stderr);
        }
    }
}

#[test]
fn disrupt_without_managed_nodes_prints_plain_zero_costs() {
    let dir = scratch("no-nodes");
    let m = dir.join("pool.yaml");
    std::fs::write(&m, POOL).unwrap();
    let c = dir.join("catalog.json");
    std::fs::write(&c, CATALOG).unwrap();
    let r = run(&m, &c, &[]);
    assert!(!r.stdout.contains("-0"), "{}", r.stdout);
    assert_eq!(json(&r)["commands"], serde_json::json!([]));
    let t = run(&m, &c, &["-o", "table"]);
    assert!(t.stdout.contains("$0.0000/h before"), "{}", t.stdout);
}

#[test]
fn disrupt_replaces_drifted_nodes_of_a_static_pool_one_for_one() {
    // The drift-requirements cluster with the pool static at three replicas.
    let dir = scratch("static-drift");
    let (m, c) = cluster(&dir, INITIALIZED);
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replacen(
            "    spec:\n      nodeClassRef:",
            "    spec:\n      requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}, {key: node.kubernetes.io/instance-type, operator: NotIn, values: [m5.large]}]\n      nodeClassRef:",
            1,
        )
        .replacen("spec:\n  disruption:", "spec:\n  replicas: 3\n  disruption:", 1);
    std::fs::write(&m, text).unwrap();
    std::fs::write(
        &c,
        CATALOG.replace(
            "]}]}",
            r#"]}, {"name": "m6i.large", "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"}, "overhead": {"cpu": "0", "memory": "0"}, "offerings": [{"zone": "us-east-1a", "capacity_type": "on-demand", "price": 0.0864, "available": true}]}]}"#,
        ),
    )
    .unwrap();
    let out = json(&run(&m, &c, &[]));
    let cmd = &out["commands"][0];
    assert_eq!(cmd["method"], "static-drift", "{out:#}");
    assert_eq!(cmd["decision"], "replace");
    assert_eq!(cmd["candidates"], serde_json::json!(["node-a", "node-b"]));
    let replacements = cmd["replacements"].as_array().unwrap();
    assert_eq!(replacements.len(), 2, "one for one: {cmd:#}");
    for r in replacements {
        assert_eq!(r["instance_type"], "m6i.large", "{r:#}");
    }
    // Without the drift, nothing is consolidated in a static pool, even the empty node-c.
    let text = std::fs::read_to_string(&m).unwrap().replace(
        ", {key: node.kubernetes.io/instance-type, operator: NotIn, values: [m5.large]}",
        "",
    );
    std::fs::write(&m, text).unwrap();
    let out = json(&run(&m, &c, &[]));
    assert_eq!(out["commands"], serde_json::json!([]), "{out:#}");
    let why: Vec<&str> = out["not_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["reason"].as_str().unwrap())
        .collect();
    assert!(
        why.iter().any(|r| r.contains("is static (spec.replicas)")),
        "{why:?}"
    );
}
