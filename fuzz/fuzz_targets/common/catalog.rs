//! The fuzz catalog, shared by the `plan` and `disrupt` targets (each includes this file with
//! `#[path = "common/catalog.rs"] mod catalog;`).

use std::sync::OnceLock;

use karp_operator::providers::aws::CatalogSource;

/// A small catalog in the DESIGN.md "Catalog file" format, so every run is fast. It offers the
/// labels the examples' NodePool selects on (instance category / cpu, arch), three zones, spot and
/// on-demand, an unavailable offering, a GPU type and one type with the default (AWS formula)
/// overhead.
pub const CATALOG: &str = r#"{"instance_types": [
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

/// [`CATALOG`] as a catalog source, built once.
pub fn catalog() -> &'static CatalogSource {
    static C: OnceLock<CatalogSource> = OnceLock::new();
    C.get_or_init(|| CatalogSource::File {
        name: "fuzz-catalog.json".into(),
        json: CATALOG.into(),
    })
}
