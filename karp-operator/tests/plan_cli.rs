//! `karp plan` end to end: the built binary on manifest files, as users and outside tests run it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Output of one run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "karp plan failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Assert exit status 2 with every fragment in stderr, and no panic.
    fn assert_input_error(&self, fragments: &[&str]) {
        assert_eq!(self.code, 2, "expected exit 2, stderr: {}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        for f in fragments {
            assert!(
                self.stderr.contains(f),
                "stderr lacks {f:?}: {}",
                self.stderr
            );
        }
    }
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

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A fresh folder for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plan_cli")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const NODECLASS: &str = r#"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: default
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: KarpenterNodeRole
"#;

const NODEPOOL: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: default
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
"#;

/// The catalog of DESIGN.md.
const DESIGN_CATALOG: &str = r#"{"instance_types": [
  {"name": "m5.large",
   "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"},
   "overhead": {"cpu": "100m", "memory": "10Mi"},
   "labels": {"kubernetes.io/arch": "amd64"},
   "offerings": [{"zone": "us-east-1a", "capacity_type": "on-demand", "price": 0.096, "available": true}]}]}"#;

/// Two types: `small` has 1900m allocatable CPU, `big` 3900m.
const TWO_TYPES: &str = r#"{"instance_types": [
  {"name": "small", "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"}, "overhead": {"cpu": "100m", "memory": "100Mi"},
   "offerings": [{"zone": "z1", "capacity_type": "on-demand", "price": 0.1}]},
  {"name": "big", "capacity": {"cpu": "4", "memory": "16Gi", "pods": "58"}, "overhead": {"cpu": "100m", "memory": "100Mi"},
   "offerings": [{"zone": "z1", "capacity_type": "on-demand", "price": 0.2}]}]}"#;

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn pod_names(plan: &Value) -> BTreeSet<String> {
    plan["nodeclaims"]
        .as_array()
        .unwrap()
        .iter()
        .chain(plan["existing"].as_array().unwrap())
        .flat_map(|c| c["pods"].as_array().unwrap())
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_examples_plan_cleanly_with_exactly_the_contract_shape() {
    let plan = karp(&["plan", "-f", examples().to_str().unwrap()]).json();
    assert_eq!(
        keys(&plan),
        BTreeSet::from(["nodeclaims", "existing", "unschedulable", "cost", "solver"])
    );
    assert_eq!(
        plan["unschedulable"],
        Value::Array(vec![]),
        "every example pod schedules"
    );
    let claims = plan["nodeclaims"].as_array().unwrap();
    assert!(!claims.is_empty());
    let mut total = 0.0;
    for c in claims {
        assert_eq!(
            keys(c),
            BTreeSet::from([
                "nodepool",
                "instance_type",
                "zone",
                "capacity_type",
                "price",
                "instance_types",
                "requirements",
                "pods"
            ])
        );
        assert_eq!(c["nodepool"], "karpenter-nodepool");
        assert_eq!(c["capacity_type"], "spot");
        assert_eq!(
            c["instance_types"][0], c["instance_type"],
            "options are cheapest first"
        );
        for r in c["requirements"].as_array().unwrap() {
            let k = keys(r);
            assert!(
                k == BTreeSet::from(["key", "operator", "values"])
                    || k == BTreeSet::from(["key", "operator", "values", "minValues"]),
                "{r}"
            );
        }
        total += c["price"].as_f64().unwrap();
    }
    assert_eq!(
        keys(&plan["cost"]),
        BTreeSet::from(["total_per_hour", "lower_bound_per_hour"])
    );
    assert!((plan["cost"]["total_per_hour"].as_f64().unwrap() - total).abs() < 1e-9);
    assert!(plan["cost"]["lower_bound_per_hour"].as_f64().unwrap() <= total + 1e-9);
    assert_eq!(keys(&plan["solver"]), BTreeSet::from(["name", "millis"]));
    assert_eq!(plan["solver"]["name"], "ffd");
    let pods = pod_names(&plan);
    assert_eq!(pods.len(), 10 + 6 + 3, "{pods:?}");
    assert!(
        pods.contains("default/inflate-9")
            && pods.contains("shop/web-5")
            && pods.contains("shop/cache-2")
    );
}

#[test]
fn the_table_output_summarizes_the_plan_for_people() {
    let run = karp(&["plan", "-f", examples().to_str().unwrap(), "-o", "table"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for s in [
        "NodeClaims to create:",
        "INSTANCE TYPE",
        "karpenter-nodepool",
        "spot",
        "Unschedulable pods: 0",
        "Total cost: $",
    ] {
        assert!(run.stdout.contains(s), "table lacks {s:?}:\n{}", run.stdout);
    }
}

#[test]
fn malformed_yaml_exits_2_naming_the_file_and_document() {
    let dir = scratch("malformed_yaml");
    let f = write(&dir, "bad.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\nkind: Pod\nmetadata: {name: [unclosed\n");
    karp(&["plan", "-f", &f]).assert_input_error(&["bad.yaml: document 2: malformed YAML", "line"]);
}

#[test]
fn an_unknown_operator_exits_2_naming_the_object_and_field() {
    let dir = scratch("unknown_operator");
    let pool = NODEPOOL.replace("      nodeClassRef", "      requirements: [{key: karpenter.sh/capacity-type, operator: Maybe, values: [spot]}]\n      nodeClassRef");
    let f = write(&dir, "pool.yaml", &format!("{NODECLASS}---{pool}"));
    karp(&["plan", "-f", &f]).assert_input_error(&[
        "pool.yaml: NodePool default: spec.template.spec.requirements[0].operator: unknown operator \"Maybe\"",
    ]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: team}\nspec:\n  containers: [{name: a}]\n  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        - topologyKey: kubernetes.io/hostname\n          labelSelector: {matchExpressions: [{key: app, operator: Equals, values: [x]}]}\n";
    let f = write(&dir, "pod.yaml", pod);
    karp(&["plan", "-f", &f]).assert_input_error(&[
        "pod.yaml: Pod team/p: spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator",
    ]);
}

#[test]
fn a_bad_quantity_exits_2_naming_file_object_and_field() {
    let dir = scratch("bad_quantity");
    let deploy = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          resources: {requests: {cpu: abc}}
"#;
    let f = write(&dir, "deploy.yaml", deploy);
    karp(&["plan", "-f", &f]).assert_input_error(&[
        "deploy.yaml: Deployment default/web: spec.template.spec.containers[0].resources.requests.cpu: quantity \"abc\" has no valid number",
    ]);
}

#[test]
fn a_type_error_exits_2_with_the_serde_field_path() {
    let dir = scratch("type_error");
    let f = write(&dir, "d.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: prod}\nspec: {replicas: lots, selector: {}, template: {}}\n");
    karp(&["plan", "-f", &f])
        .assert_input_error(&["d.yaml: Deployment prod/web: spec.replicas: invalid type"]);
}

#[test]
fn a_nodepool_with_a_missing_node_class_exits_2() {
    let dir = scratch("missing_nodeclass");
    let f = write(&dir, "pool.yaml", NODEPOOL);
    karp(&["plan", "-f", &f]).assert_input_error(&[
        "pool.yaml: NodePool default: spec.template.spec.nodeClassRef.name",
        "\"default\"",
    ]);
    // A catalog file does not change that: the node class still gives the kubelet settings.
    let cat = write(&dir, "cat.json", DESIGN_CATALOG);
    karp(&["plan", "-f", &f, "--catalog", &cat])
        .assert_input_error(&["spec.template.spec.nodeClassRef.name"]);
}

#[test]
fn a_missing_path_exits_2() {
    karp(&["plan", "-f", "does-not-exist.yaml"])
        .assert_input_error(&["does-not-exist.yaml: cannot read"]);
}

#[test]
fn a_catalog_file_with_errors_exits_2_naming_entry_and_field() {
    let dir = scratch("bad_catalog");
    let f = write(&dir, "all.yaml", &format!("{NODECLASS}---{NODEPOOL}"));
    let cat = write(
        &dir,
        "cat.json",
        r#"{"instance_types": [{"name": "x", "capacity": {"cpu": "two", "memory": "1Gi"}, "offerings": []}]}"#,
    );
    karp(&["plan", "-f", &f, "--catalog", &cat]).assert_input_error(&[
        "cat.json",
        "instance_types[0]",
        "capacity.cpu",
    ]);
    let cat = write(&dir, "broken.json", "{not json");
    karp(&["plan", "-f", &f, "--catalog", &cat]).assert_input_error(&["broken.json"]);
    karp(&["plan", "-f", &f, "--catalog", "nope.json"])
        .assert_input_error(&["nope.json: cannot read catalog file"]);
}

#[test]
fn an_invalid_taint_effect_exits_2() {
    let dir = scratch("taint_effect");
    let pool = NODEPOOL.replace(
        "      nodeClassRef",
        "      taints: [{key: dedicated, value: gpu, effect: Sometimes}]\n      nodeClassRef",
    );
    let f = write(&dir, "pool.yaml", &format!("{NODECLASS}---{pool}"));
    karp(&["plan", "-f", &f]).assert_input_error(&[
        "NodePool default: spec.template.spec.taints[0].effect: invalid taint effect \"Sometimes\"",
    ]);
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {taints: [{key: k, effect: Never}]}\nstatus: {allocatable: {cpu: '4'}}\n";
    let f = write(&dir, "node.yaml", node);
    karp(&["plan", "-f", &f]).assert_input_error(&["node.yaml: Node n1: spec.taints[0].effect"]);
}

#[test]
fn the_milp_solver_is_never_dearer_than_ffd_and_schedules_the_same_pods() {
    let ex = examples();
    let ffd = karp(&["plan", "-f", ex.to_str().unwrap()]).json();
    let milp = karp(&["plan", "-f", ex.to_str().unwrap(), "--solver", "milp"]).json();
    assert_eq!(milp["solver"]["name"], "milp");
    let cost = |p: &serde_json::Value| p["cost"]["total_per_hour"].as_f64().unwrap();
    assert!(
        cost(&milp) <= cost(&ffd) + 1e-9,
        "milp {} > ffd {}",
        cost(&milp),
        cost(&ffd)
    );
    assert!(milp["cost"]["lower_bound_per_hour"].as_f64().unwrap() <= cost(&milp) + 1e-9);
    let pods = |p: &serde_json::Value| {
        let mut v: Vec<String> = p["nodeclaims"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| {
                c["pods"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(pods(&milp), pods(&ffd));
}

/// benches/manifests/small-mix: 60 pods of five shapes on three instance types, small enough
/// for the MILP's exact integer master, which proves its plan optimal (bound = cost).
#[test]
fn the_milp_proves_a_small_mix_optimal() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/manifests/small-mix");
    let dir = dir.to_str().unwrap();
    let ffd = karp(&["plan", "-f", dir, "--solver", "ffd"]).json();
    let milp = karp(&["plan", "-f", dir, "--solver", "milp"]).json();
    let cost = |p: &Value| p["cost"]["total_per_hour"].as_f64().unwrap();
    let bound = |p: &Value| p["cost"]["lower_bound_per_hour"].as_f64().unwrap();
    assert_eq!(milp["solver"]["name"], "milp");
    assert_eq!(pod_names(&milp), pod_names(&ffd));
    assert_eq!(pod_names(&milp).len(), 60);
    assert!(
        cost(&milp) < cost(&ffd),
        "{} vs {}",
        cost(&milp),
        cost(&ffd)
    );
    assert!(
        (bound(&milp) - cost(&milp)).abs() < 1e-9,
        "bound {} cost {}",
        bound(&milp),
        cost(&milp)
    );
    assert!(bound(&ffd) <= cost(&milp) + 1e-9);
}

#[test]
fn helm_rendered_namespaces_on_cluster_scoped_objects_are_accepted() {
    let dir = scratch("helm_namespace");
    let text = format!(
        "{}---{}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: apps}}\nspec: {{containers: [{{name: a, resources: {{requests: {{cpu: 100m}}}}}}]}}\n",
        NODECLASS.replace("  name: default\n", "  name: default\n  namespace: karpenter\n"),
        NODEPOOL.replace("  name: default\n", "  name: default\n  namespace: karpenter\n"),
    );
    let f = write(&dir, "helm.yaml", &text);
    let run = karp(&["plan", "-f", &f]);
    let plan = run.json();
    assert_eq!(plan["nodeclaims"][0]["nodepool"], "default");
    assert_eq!(plan["nodeclaims"][0]["pods"][0], "apps/p");
}

#[test]
fn the_pre_v1_expire_after_is_honoured_with_a_warning_naming_the_v1_field() {
    let dir = scratch("pre_v1_expire");
    let pool = format!(
        "{NODEPOOL}  disruption:\n    consolidationPolicy: WhenEmpty\n    expireAfter: 720h\n"
    );
    let f = write(&dir, "pool.yaml", &format!("{NODECLASS}---{pool}"));
    let run = karp(&["plan", "-f", &f]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("warning:") && run.stderr.contains("spec.template.spec.expireAfter"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("spec.disruption.expireAfter"),
        "{}",
        run.stderr
    );
}

#[test]
fn skipped_kinds_are_warned_about() {
    let dir = scratch("skipped_kinds");
    let f = write(
        &dir,
        "misc.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: web}\n",
    );
    let run = karp(&["plan", "-f", &f]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("skipping ConfigMap cfg"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("skipping Service web/svc"),
        "{}",
        run.stderr
    );
}

#[test]
fn workloads_expand_to_owner_index_names() {
    let dir = scratch("expansion");
    let workloads = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 3
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: a, resources: {requests: {cpu: 100m}}}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: data}
spec:
  replicas: 2
  selector: {matchLabels: {app: db}}
  serviceName: db
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: a, resources: {requests: {cpu: 100m}}}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: a}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: etl}
spec:
  parallelism: 4
  completions: 2
  template: {spec: {restartPolicy: Never, containers: [{name: a, resources: {requests: {cpu: 100m}}}]}}
"#;
    let f = write(
        &dir,
        "w.yaml",
        &format!("{NODECLASS}---{NODEPOOL}---{workloads}"),
    );
    let plan = karp(&["plan", "-f", &f]).json();
    let expected: BTreeSet<String> = [
        "default/api-0",
        "default/api-1",
        "default/api-2",
        "data/db-0",
        "data/db-1",
        "default/rs-0",
        "default/etl-0",
        "default/etl-1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(pod_names(&plan), expected);
}

#[test]
fn a_catalog_file_replaces_the_builtin_catalog() {
    let dir = scratch("design_catalog");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0}\nspec: {containers: [{name: a, resources: {requests: {cpu: 500m, memory: 1Gi}}}]}\n";
    let f = write(
        &dir,
        "all.yaml",
        &format!("{NODECLASS}---{NODEPOOL}---\n{pod}"),
    );
    let cat = write(&dir, "catalog.json", DESIGN_CATALOG);
    let plan = karp(&["plan", "-f", &f, "--catalog", &cat]).json();
    let c = &plan["nodeclaims"][0];
    assert_eq!(c["instance_type"], "m5.large");
    assert_eq!(c["zone"], "us-east-1a");
    assert_eq!(c["capacity_type"], "on-demand");
    assert_eq!(c["price"], 0.096);
    assert_eq!(c["instance_types"], serde_json::json!(["m5.large"]));
    assert_eq!(c["pods"], serde_json::json!(["default/web-0"]));
    assert_eq!(plan["cost"]["total_per_hour"], 0.096);
}

#[test]
fn daemonset_overhead_moves_a_pod_to_a_bigger_type() {
    let dir = scratch("daemonset_overhead");
    let cat = write(&dir, "catalog.json", TWO_TYPES);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, resources: {requests: {cpu: 1800m}}}]}\n";
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: a, resources: {requests: {cpu: 200m}}}]}\n";
    let without = write(
        &dir,
        "without.yaml",
        &format!("{NODECLASS}---{NODEPOOL}---\n{pod}"),
    );
    let plan = karp(&["plan", "-f", &without, "--catalog", &cat]).json();
    assert_eq!(plan["nodeclaims"][0]["instance_type"], "small");
    let with = write(
        &dir,
        "with.yaml",
        &format!("{NODECLASS}---{NODEPOOL}---\n{pod}---\n{ds}"),
    );
    let plan = karp(&["plan", "-f", &with, "--catalog", &cat]).json();
    assert_eq!(plan["nodeclaims"][0]["instance_type"], "big");
    assert_eq!(
        plan["nodeclaims"][0]["pods"],
        serde_json::json!(["default/p"]),
        "daemonset pods are not planned"
    );
}

#[test]
fn bound_pods_and_nodes_use_existing_capacity() {
    let dir = scratch("existing");
    let nodes = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels: {kubernetes.io/arch: amd64, failure-domain.beta.kubernetes.io/zone: z1}
status:
  capacity: {cpu: "4", memory: 16Gi, pods: "110"}
  allocatable: {cpu: 3900m, memory: 15Gi, pods: "110"}
---
apiVersion: v1
kind: Node
metadata: {name: node-0-cordoned}
spec: {unschedulable: true}
status: {allocatable: {cpu: "64", memory: 256Gi, pods: "110"}}
---
apiVersion: v1
kind: Pod
metadata: {name: api-bound}
spec:
  nodeName: node-1
  containers: [{name: a, resources: {requests: {cpu: "2", memory: 1Gi}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-0}
spec:
  nodeSelector: {topology.kubernetes.io/zone: z1}
  containers: [{name: a, resources: {requests: {cpu: "1", memory: 1Gi}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1}
spec:
  containers: [{name: a, resources: {requests: {cpu: "1500m", memory: 1Gi}}}]
"#;
    let f = write(
        &dir,
        "cluster.yaml",
        &format!("{NODECLASS}---{NODEPOOL}---{nodes}"),
    );
    let cat = write(&dir, "catalog.json", TWO_TYPES);
    let plan = karp(&["plan", "-f", &f, "--catalog", &cat]).json();
    // api-1 (bigger, placed first) fits beside the bound pod; api-0 then needs a new node.
    assert_eq!(
        plan["existing"],
        serde_json::json!([{"node": "node-1", "pods": ["default/api-1"]}])
    );
    assert_eq!(plan["nodeclaims"].as_array().unwrap().len(), 1);
    assert_eq!(
        plan["nodeclaims"][0]["pods"],
        serde_json::json!(["default/api-0"])
    );
}

#[test]
fn json_files_and_lists_are_read_like_yaml() {
    let dir = scratch("json_list");
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            serde_yaml::from_str::<Value>(NODECLASS).unwrap(),
            serde_yaml::from_str::<Value>(NODEPOOL).unwrap(),
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"},
             "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": 0.5}}}]}}
        ]
    });
    write(&dir, "list.json", &list.to_string());
    write(&dir, "notes.txt", "not a manifest, ignored in folders");
    let plan = karp(&["plan", "-f", dir.to_str().unwrap()]).json();
    assert_eq!(
        plan["nodeclaims"][0]["pods"],
        serde_json::json!(["default/j"])
    );
}

#[test]
fn pods_that_fit_nowhere_are_listed_with_a_reason() {
    let dir = scratch("unschedulable");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: huge}\nspec: {containers: [{name: a, resources: {requests: {cpu: '64'}}}]}\n";
    let f = write(
        &dir,
        "all.yaml",
        &format!("{NODECLASS}---{NODEPOOL}---\n{pod}"),
    );
    let cat = write(&dir, "catalog.json", TWO_TYPES);
    let plan = karp(&["plan", "-f", &f, "--catalog", &cat]).json();
    assert_eq!(plan["unschedulable"][0]["pod"], "default/huge");
    assert!(!plan["unschedulable"][0]["reason"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(plan["cost"]["total_per_hour"], 0.0);
}
