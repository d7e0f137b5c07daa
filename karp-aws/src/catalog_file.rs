//! The JSON catalog file (`karp plan --catalog FILE`, written by `karp catalog`):
//!
//! ```json
//! {"instance_types": [
//!   {"name": "m5.large",
//!    "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"},
//!    "overhead": {"cpu": "100m", "memory": "10Mi"},
//!    "labels": {"kubernetes.io/arch": "amd64"},
//!    "offerings": [{"zone": "us-east-1a", "capacity_type": "on-demand", "price": 0.096, "available": true}]}]}
//! ```
//!
//! - Quantities are Kubernetes quantity strings; plain JSON numbers are accepted too. `cpu` and `memory`
//!   capacity are required; `pods` defaults to 110 (the kubelet default); other names (e.g.
//!   `ephemeral-storage`, `nvidia.com/gpu`) are optional.
//! - `overhead` is optional. When absent it is computed with the AWS formula of [`crate::allocatable`]
//!   from the given capacity, assuming: the capacity is already what the kubelet reports (no VM-memory
//!   or Graviton deduction), ENI data is unknown so the `pods` capacity stands in for the ENI-limited
//!   pod count (kube-reserved memory = 11 × pods + 255 MiB), kube-reserved CPU uses the capacity's
//!   millicores, the settings' `kubeReserved` / `systemReserved` / `evictionHard` apply, and the
//!   ephemeral-storage overhead (1Gi + 10 %) is added only when ephemeral-storage capacity is given.
//! - `labels` are merged over defaults: `kubernetes.io/arch` = `amd64`, `kubernetes.io/os` = `linux`;
//!   `node.kubernetes.io/instance-type` is always the entry name.
//! - `available` defaults to true. Entries are returned sorted by name (names must be unique),
//!   offerings sorted by zone then capacity type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::allocatable::{self, AllocatableError, NodeClassSettings, ResourceAmounts};
use crate::catalog::{labels, CatalogEntry, CatalogOffering};
use crate::quantity;

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;

/// Why a catalog file could not be read. Entry errors name the entry's index, its name and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogFileError {
    /// Not JSON, or not the expected shape (serde's message has the line and column).
    #[error("catalog file is not valid: {source}")]
    Json {
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// An entry field has an invalid value.
    #[error("instance_types[{index}] ({name:?}).{field}: {reason}")]
    Field {
        /// Index in `instance_types`.
        index: usize,
        /// The entry's name.
        name: String,
        /// The field path inside the entry, e.g. `capacity.cpu`.
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// Two entries have the same name.
    #[error("instance_types[{index}] ({name:?}): duplicate name")]
    Duplicate {
        /// Index of the second entry.
        index: usize,
        /// The name.
        name: String,
    },
    /// The settings used for default overheads are invalid.
    #[error("settings for default overheads: {0}")]
    Settings(#[from] AllocatableError),
}

#[derive(Debug, Serialize, Deserialize)]
struct FileJson {
    instance_types: Vec<EntryJson>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryJson {
    name: String,
    capacity: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    overhead: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    offerings: Vec<OfferingJson>,
}

#[derive(Debug, Serialize, Deserialize)]
struct OfferingJson {
    zone: String,
    capacity_type: String,
    price: f64,
    #[serde(default = "yes")]
    available: bool,
}

fn yes() -> bool {
    true
}

fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_amounts(
    map: &BTreeMap<String, Value>,
    what: &str,
    field_err: &dyn Fn(String, String) -> CatalogFileError,
) -> Result<ResourceAmounts, CatalogFileError> {
    let mut out = ResourceAmounts::default();
    for (k, v) in map {
        let field = format!("{what}.{k}");
        let text = quantity_text(v).ok_or_else(|| {
            field_err(field.clone(), "expected a quantity string or number".into())
        })?;
        let parsed = if k == "cpu" {
            quantity::parse_milli(&text)
        } else {
            quantity::parse_value(&text)
        };
        let n = parsed.map_err(|e| field_err(field.clone(), e.to_string()))?;
        if n < 0 {
            return Err(field_err(
                field,
                format!("must not be negative, got {text:?}"),
            ));
        }
        match k.as_str() {
            "cpu" => out.cpu_millis = n,
            "memory" => out.memory_bytes = n,
            "pods" => out.pods = n,
            "ephemeral-storage" => out.ephemeral_storage_bytes = n,
            other => {
                if n != 0 {
                    out.extended.insert(other.to_string(), n);
                }
            }
        }
    }
    Ok(out)
}

/// The default overhead of a catalog-file entry without `overhead` (see the module docs).
///
/// # Errors
/// [`AllocatableError`] when a kubelet quantity in `settings` is invalid.
pub fn default_overhead(
    capacity: &ResourceAmounts,
    settings: &NodeClassSettings,
) -> Result<ResourceAmounts, AllocatableError> {
    let k = &settings.kubelet;
    let mut overhead = ResourceAmounts {
        cpu_millis: allocatable::kube_reserved_cpu_millis(capacity.cpu_millis),
        memory_bytes: (11 * capacity.pods + 255) * MIB,
        ..Default::default()
    };
    let has_storage = capacity.ephemeral_storage_bytes > 0;
    if has_storage {
        overhead.ephemeral_storage_bytes = GIB;
    }
    let parse = |field: &'static str, name: &str, v: &str| -> Result<i64, AllocatableError> {
        let r = if name == "cpu" {
            quantity::parse_milli(v)
        } else {
            quantity::parse_value(v)
        };
        r.map_err(|e| AllocatableError::InvalidQuantity {
            field,
            key: name.to_string(),
            reason: e.to_string(),
        })
    };
    let set = |a: &mut ResourceAmounts, name: &str, v: i64, add: bool| {
        let slot = match name {
            "cpu" => &mut a.cpu_millis,
            "memory" => &mut a.memory_bytes,
            "pods" => &mut a.pods,
            "ephemeral-storage" => &mut a.ephemeral_storage_bytes,
            other => a.extended.entry(other.to_string()).or_insert(0),
        };
        if add {
            *slot += v;
        } else {
            *slot = v;
        }
    };
    for (name, v) in &k.kube_reserved {
        let n = parse("kubeReserved", name, v)?;
        set(&mut overhead, name, n, false);
    }
    for (name, v) in &k.system_reserved {
        let n = parse("systemReserved", name, v)?;
        set(&mut overhead, name, n, true);
    }
    // Eviction threshold: 100Mi / 10 % of the volume, replaced by evictionHard (percentages of capacity).
    let mut memory_eviction = 100 * MIB;
    if let Some(v) = k.eviction_hard.get("memory.available") {
        memory_eviction = allocatable::eviction_signal(
            "evictionHard",
            "memory.available",
            v,
            capacity.memory_bytes,
        )?;
    }
    overhead.memory_bytes += memory_eviction;
    if has_storage {
        let storage = capacity.ephemeral_storage_bytes;
        let mut storage_eviction = (storage as f64 / 100.0 * 10.0).ceil() as i64;
        if let Some(v) = k.eviction_hard.get("nodefs.available") {
            storage_eviction =
                allocatable::eviction_signal("evictionHard", "nodefs.available", v, storage)?;
        }
        overhead.ephemeral_storage_bytes += storage_eviction;
    }
    overhead.extended.retain(|_, v| *v != 0);
    Ok(overhead)
}

/// Parses a catalog file.
///
/// # Errors
/// [`CatalogFileError`] naming the entry index, its name and the field.
pub fn parse(
    json: &str,
    settings: &NodeClassSettings,
) -> Result<Vec<CatalogEntry>, CatalogFileError> {
    settings.validate()?;
    let file: FileJson =
        serde_json::from_str(json).map_err(|source| CatalogFileError::Json { source })?;
    let mut out: Vec<CatalogEntry> = Vec::with_capacity(file.instance_types.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, e) in file.instance_types.into_iter().enumerate() {
        let name = e.name.clone();
        let field_err = |field: String, reason: String| CatalogFileError::Field {
            index,
            name: name.clone(),
            field,
            reason,
        };
        if name.trim().is_empty() {
            return Err(field_err("name".into(), "must not be empty".into()));
        }
        if seen.insert(name.clone(), index).is_some() {
            return Err(CatalogFileError::Duplicate { index, name });
        }
        let mut capacity = parse_amounts(&e.capacity, "capacity", &field_err)?;
        for required in ["cpu", "memory"] {
            if !e.capacity.contains_key(required) {
                return Err(field_err(format!("capacity.{required}"), "required".into()));
            }
        }
        if !e.capacity.contains_key("pods") {
            capacity.pods = 110;
        }
        let overhead = match &e.overhead {
            Some(map) => parse_amounts(map, "overhead", &field_err)?,
            None => default_overhead(&capacity, settings)?,
        };
        let mut labels_out = BTreeMap::from([
            (labels::ARCH.to_string(), "amd64".to_string()),
            (labels::OS.to_string(), "linux".to_string()),
        ]);
        for (k, v) in e.labels {
            if k == labels::ZONE || k == labels::CAPACITY_TYPE {
                return Err(field_err(
                    format!("labels.{k}"),
                    "comes from the offerings; remove it".into(),
                ));
            }
            labels_out.insert(k, v);
        }
        labels_out.insert(labels::INSTANCE_TYPE.to_string(), name.clone());
        let mut offerings = Vec::with_capacity(e.offerings.len());
        for (i, o) in e.offerings.into_iter().enumerate() {
            if o.zone.is_empty() {
                return Err(field_err(
                    format!("offerings[{i}].zone"),
                    "must not be empty".into(),
                ));
            }
            if o.capacity_type != "spot"
                && o.capacity_type != "on-demand"
                && o.capacity_type != "reserved"
            {
                return Err(field_err(
                    format!("offerings[{i}].capacity_type"),
                    format!(
                        "expected spot, on-demand or reserved, got {:?}",
                        o.capacity_type
                    ),
                ));
            }
            if !o.price.is_finite() || o.price < 0.0 {
                return Err(field_err(
                    format!("offerings[{i}].price"),
                    format!("invalid price {}", o.price),
                ));
            }
            offerings.push(CatalogOffering {
                zone: o.zone,
                capacity_type: o.capacity_type,
                price: o.price,
                available: o.available,
            });
        }
        offerings.sort_by(|a, b| (&a.zone, &a.capacity_type).cmp(&(&b.zone, &b.capacity_type)));
        out.push(CatalogEntry {
            name,
            labels: labels_out,
            capacity,
            overhead,
            offerings,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn amounts_json(a: &ResourceAmounts) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    m.insert(
        "cpu".to_string(),
        Value::String(quantity::format_milli(a.cpu_millis)),
    );
    m.insert(
        "memory".to_string(),
        Value::String(quantity::format_bytes(a.memory_bytes)),
    );
    m.insert("pods".to_string(), Value::String(a.pods.to_string()));
    if a.ephemeral_storage_bytes != 0 {
        m.insert(
            "ephemeral-storage".to_string(),
            Value::String(quantity::format_bytes(a.ephemeral_storage_bytes)),
        );
    }
    for (k, v) in &a.extended {
        m.insert(k.clone(), Value::String(v.to_string()));
    }
    m
}

/// Writes entries in the catalog file format (pretty JSON, sorted by name, overheads always written).
pub fn to_json(entries: &[CatalogEntry]) -> String {
    let mut sorted: Vec<&CatalogEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let file = FileJson {
        instance_types: sorted
            .into_iter()
            .map(|e| EntryJson {
                name: e.name.clone(),
                capacity: amounts_json(&e.capacity),
                overhead: Some(amounts_json(&e.overhead)),
                labels: e.labels.clone(),
                offerings: e
                    .offerings
                    .iter()
                    .map(|o| OfferingJson {
                        zone: o.zone.clone(),
                        capacity_type: o.capacity_type.clone(),
                        price: o.price,
                        available: o.available,
                    })
                    .collect(),
            })
            .collect(),
    };
    // Serializing plain maps, strings and finite floats cannot fail; fall back to an empty catalog.
    serde_json::to_string_pretty(&file).unwrap_or_else(|_| "{\"instance_types\": []}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::builtin_catalog;

    const DESIGN_EXAMPLE: &str = r#"{"instance_types": [
      {"name": "m5.large",
       "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"},
       "overhead": {"cpu": "100m", "memory": "10Mi"},
       "labels": {"kubernetes.io/arch": "amd64"},
       "offerings": [{"zone": "us-east-1a", "capacity_type": "on-demand", "price": 0.096, "available": true}]}]}"#;

    fn settings() -> NodeClassSettings {
        NodeClassSettings::default()
    }

    #[test]
    fn design_example_parses() {
        let c = parse(DESIGN_EXAMPLE, &settings()).unwrap();
        assert_eq!(c.len(), 1);
        let e = &c[0];
        assert_eq!(e.capacity.cpu_millis, 2000);
        assert_eq!(e.capacity.memory_bytes, 8 * GIB);
        assert_eq!(e.capacity.pods, 29);
        assert_eq!(e.overhead.cpu_millis, 100);
        assert_eq!(e.overhead.memory_bytes, 10 * MIB);
        assert_eq!(e.labels[labels::INSTANCE_TYPE], "m5.large");
        assert_eq!(e.labels[labels::OS], "linux");
        assert_eq!(e.offerings[0].price, 0.096);
    }

    #[test]
    fn absent_overhead_uses_the_aws_formula_with_pods_as_max_pods() {
        let json = r#"{"instance_types": [{"name": "x.large", "capacity": {"cpu": 2, "memory": "8Gi", "pods": 29, "ephemeral-storage": "20Gi", "nvidia.com/gpu": 1}, "labels": {"kubernetes.io/arch": "arm64"}}]}"#;
        let e = &parse(json, &settings()).unwrap()[0];
        assert_eq!(e.overhead.cpu_millis, 70);
        // 11 * 29 + 255 = 574Mi kube-reserved + 100Mi eviction
        assert_eq!(e.overhead.memory_bytes, 674 * MIB);
        assert_eq!(e.overhead.ephemeral_storage_bytes, 3 * GIB);
        assert_eq!(e.capacity.extended["nvidia.com/gpu"], 1);
        assert_eq!(e.labels[labels::ARCH], "arm64");
        // without ephemeral-storage capacity there is no ephemeral overhead; pods default to 110
        let json =
            r#"{"instance_types": [{"name": "y", "capacity": {"cpu": "500m", "memory": "1Gi"}}]}"#;
        let e = &parse(json, &settings()).unwrap()[0];
        assert_eq!(e.capacity.pods, 110);
        assert_eq!(e.overhead.ephemeral_storage_bytes, 0);
        assert_eq!(e.overhead.cpu_millis, 30);
        assert_eq!(e.overhead.memory_bytes, (11 * 110 + 255 + 100) * MIB);
    }

    #[test]
    fn absent_overhead_honours_kubelet_overrides() {
        let mut s = settings();
        s.kubelet
            .kube_reserved
            .insert("memory".into(), "1Gi".into());
        s.kubelet
            .system_reserved
            .insert("cpu".into(), "100m".into());
        s.kubelet
            .eviction_hard
            .insert("memory.available".into(), "10%".into());
        let json = r#"{"instance_types": [{"name": "x", "capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"}}]}"#;
        let e = &parse(json, &s).unwrap()[0];
        assert_eq!(e.overhead.cpu_millis, 170);
        // 1Gi + 10% of 8Gi (858993459.2 -> 858993460)
        assert_eq!(e.overhead.memory_bytes, GIB + 858_993_460);
    }

    #[test]
    fn builtin_catalog_round_trips_through_the_file_format() {
        let builtin = builtin_catalog(&settings()).unwrap();
        let text = to_json(&builtin);
        let back = parse(&text, &settings()).unwrap();
        assert_eq!(back, builtin);
        assert_eq!(to_json(&back), text);
    }

    #[test]
    fn errors_name_entry_and_field() {
        let cases = [
            (
                r#"{"instance_types": [{"name": "a", "capacity": {"cpu": "x", "memory": "1Gi"}}]}"#,
                "instance_types[0] (\"a\").capacity.cpu:",
            ),
            (
                r#"{"instance_types": [{"name": "a", "capacity": {"cpu": "1", "memory": "1Gi"}}, {"name": "b", "capacity": {"cpu": "1"}}]}"#,
                "instance_types[1] (\"b\").capacity.memory: required",
            ),
            (
                r#"{"instance_types": [{"name": "a", "capacity": {"cpu": true, "memory": "1Gi"}}]}"#,
                "instance_types[0] (\"a\").capacity.cpu: expected a quantity",
            ),
            (
                r#"{"instance_types": [{"name": "a", "capacity": {"cpu": "1", "memory": "1Gi"}, "overhead": {"memory": "-1"}}]}"#,
                "instance_types[0] (\"a\").overhead.memory: must not be negative",
            ),
            (
                r#"{"instance_types": [{"name": "a", "capacity": {"cpu": "1", "memory": "1Gi"}, "offerings": [{"zone": "z", "capacity_type": "cheap", "price": 1}]}]}"#,
                "instance_types[0] (\"a\").offerings[0].capacity_type:",
            ),
            (
                r#"{"instance_types": [{"name": "a", "capacity": {"cpu": "1", "memory": "1Gi"}, "labels": {"topology.kubernetes.io/zone": "z"}}]}"#,
                "instance_types[0] (\"a\").labels.topology.kubernetes.io/zone:",
            ),
            (
                r#"{"instance_types": [{"name": "a", "capacity": {"cpu": "1", "memory": "1Gi"}}, {"name": "a", "capacity": {"cpu": "1", "memory": "1Gi"}}]}"#,
                "instance_types[1] (\"a\"): duplicate name",
            ),
            (
                r#"{"instance_types": [{"capacity": {}}]}"#,
                "catalog file is not valid: missing field `name`",
            ),
            (r#"{"instance_types": 3}"#, "catalog file is not valid:"),
        ];
        for (json, want) in cases {
            let e = parse(json, &settings()).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e:?} should start with {want:?}");
        }
    }

    #[test]
    fn output_is_sorted_and_deterministic() {
        let json = r#"{"instance_types": [
          {"name": "b", "capacity": {"cpu": "1", "memory": "1Gi"}, "offerings": [{"zone": "z2", "capacity_type": "spot", "price": 1}, {"zone": "z1", "capacity_type": "spot", "price": 2}]},
          {"name": "a", "capacity": {"cpu": "1", "memory": "1Gi"}}]}"#;
        let c = parse(json, &settings()).unwrap();
        assert_eq!(c[0].name, "a");
        assert_eq!(c[1].offerings[0].zone, "z1");
        assert!(c[1].offerings[0].available);
    }
}
