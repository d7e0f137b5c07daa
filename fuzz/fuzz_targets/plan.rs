//! `karp plan` on arbitrary manifest text: never panics, and every plan it returns passes the
//! independent validator.
#![no_main]

use std::sync::OnceLock;

use karp_operator::providers::aws::CatalogSource;
use karp_operator::commands::plan::{plan_documents, PlanError, Solver};
use libfuzzer_sys::fuzz_target;

/// A small catalog in the DESIGN.md "Catalog file" format, so every run is fast. It offers the
/// labels the examples' NodePool selects on (instance category / cpu, arch), three zones, spot and
/// on-demand, an unavailable offering, a GPU type and one type with the default (AWS formula)
/// overhead.
const CATALOG: &str = r#"{"instance_types": [
  {"name": "m5.large",
   "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"},
   "overhead": {"cpu": "100m", "memory": "10Mi"},
   "labels": {"kubernetes.io/arch": "amd64", "karpenter.k8s.aws/instance-category": "m", "karpenter.k8s.aws/instance-cpu": "2"},
   "offerings": [{"zone": "us-east-1a", "capacity_type": "on-demand", "price": 0.096, "available": true},
                 {"zone": "us-east-1a", "capacity_type": "spot", "price": 0.035},
                 {"zone": "us-east-1b", "capacity_type": "spot", "price": 0.037, "available": false}]},
  {"name": "c6g.xlarge",
   "capacity": {"cpu": "4", "memory": "8Gi", "pods": "58", "ephemeral-storage": "20Gi"},
   "labels": {"kubernetes.io/arch": "arm64", "karpenter.k8s.aws/instance-category": "c", "karpenter.k8s.aws/instance-cpu": "4"},
   "offerings": [{"zone": "us-east-1a", "capacity_type": "spot", "price": 0.05},
                 {"zone": "us-east-1b", "capacity_type": "spot", "price": 0.051},
                 {"zone": "us-east-1c", "capacity_type": "on-demand", "price": 0.136}]},
  {"name": "r5.2xlarge",
   "capacity": {"cpu": "8", "memory": "64Gi", "pods": "58"},
   "overhead": {"cpu": "200m", "memory": "1Gi"},
   "labels": {"karpenter.k8s.aws/instance-category": "r", "karpenter.k8s.aws/instance-cpu": "8"},
   "offerings": [{"zone": "us-east-1a", "capacity_type": "on-demand", "price": 0.504},
                 {"zone": "us-east-1b", "capacity_type": "spot", "price": 0.14},
                 {"zone": "us-east-1c", "capacity_type": "spot", "price": 0.15}]},
  {"name": "m6i.4xlarge",
   "capacity": {"cpu": "16", "memory": "64Gi", "pods": "234"},
   "overhead": {"cpu": "300m", "memory": "2Gi"},
   "labels": {"karpenter.k8s.aws/instance-category": "m", "karpenter.k8s.aws/instance-cpu": "16"},
   "offerings": [{"zone": "us-east-1a", "capacity_type": "spot", "price": 0.3},
                 {"zone": "us-east-1b", "capacity_type": "on-demand", "price": 0.768},
                 {"zone": "us-east-1c", "capacity_type": "spot", "price": 0.31}]},
  {"name": "g4dn.xlarge",
   "capacity": {"cpu": "4", "memory": "16Gi", "pods": "29", "nvidia.com/gpu": "1"},
   "overhead": {"cpu": "100m", "memory": "500Mi"},
   "labels": {"karpenter.k8s.aws/instance-category": "g", "karpenter.k8s.aws/instance-cpu": "4", "karpenter.k8s.aws/instance-gpu-count": "1"},
   "offerings": [{"zone": "us-east-1b", "capacity_type": "on-demand", "price": 0.526},
                 {"zone": "us-east-1c", "capacity_type": "spot", "price": 0.2}]}]}"#;

/// Prepended to half the inputs (odd first byte) so the rest is planned against a pool.
const PREFIX: &str = r#"apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec: {amiSelectorTerms: [{alias: al2023@latest}]}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot, on-demand]}
---
"#;

/// Workload sizes above this are skipped: expanding `replicas: 2000000000` is slow by design,
/// not a bug the fuzzer should keep finding.
const MAX_COUNT: i64 = 200;

fn catalog() -> &'static CatalogSource {
    static C: OnceLock<CatalogSource> = OnceLock::new();
    C.get_or_init(|| CatalogSource::File { name: "fuzz-catalog.json".into(), json: CATALOG.into() })
}

/// Whether some `replicas` / `parallelism` / `completions` field asks for more than `MAX_COUNT`.
fn too_many_pods(v: &serde_yaml::Value, depth: usize) -> bool {
    if depth > 64 {
        return true;
    }
    match v {
        serde_yaml::Value::Mapping(m) => m.iter().any(|(k, v)| {
            let counted = matches!(k.as_str(), Some("replicas" | "parallelism" | "completions"));
            (counted && v.as_i64().is_none_or(|n| n > MAX_COUNT) && !v.is_null()) || too_many_pods(v, depth + 1)
        }),
        serde_yaml::Value::Sequence(s) => s.iter().any(|v| too_many_pods(v, depth + 1)),
        serde_yaml::Value::Tagged(t) => too_many_pods(&t.value, depth + 1),
        _ => false,
    }
}

fn skip(text: &str) -> bool {
    use serde::Deserialize as _;
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(v) => {
                if too_many_pods(&v, 0) {
                    return true;
                }
            }
            // Unparsable text is rejected by karp too; let it through to exercise the errors.
            Err(_) => return false,
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(rest);
    if skip(&body) {
        return;
    }
    let text = if first & 1 == 1 { format!("{PREFIX}{body}") } else { body.into_owned() };
    match plan_documents("fuzz.yaml", &text, catalog(), Solver::Ffd) {
        Ok(plan) => {
            if let Err(e) = plan.validate() {
                panic!("plan_documents returned a plan that fails validation: {e}");
            }
        }
        // Debug-assertion builds (cargo fuzz's default) validate inside plan_documents.
        Err(e @ PlanError::InvalidPlan { .. }) => panic!("plan_documents: {e}"),
        Err(_) => {}
    }
});
