//! The resource registry: built-in kinds and the kinds CustomResourceDefinitions register.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::cel::{CompileError, SharedValidator, Validator};

/// Where a scalable kind keeps its replica counts and selector (JSON paths like `.spec.replicas`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// An additional printer column (CRDs) for Table output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

/// One servable resource (a group/version/plural).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// Extra subresources served by handlers (`binding`, `eviction`).
    pub extra_subresources: Vec<(&'static str, &'static str)>,
    /// The CRD that registered the resource (its `metadata.name`), or None for built-ins.
    pub crd: Option<String>,
    pub printer_columns: Vec<PrinterColumn>,
    /// The openAPIV3Schema of a CRD version (for defaults).
    pub schema: Option<Value>,
    /// The compiled `x-kubernetes-validations` rules of that schema, if it has any.
    pub validator: Option<SharedValidator>,
}

impl ResourceDef {
    /// `group/version` (or `version` for core).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key: objects are shared across versions of a group/plural (and events.k8s.io
    /// Events are core Events, see [`crate::events`]).
    pub fn store_key(&self) -> (String, String) {
        if crate::events::is_events_v1(self) {
            return (String::new(), "events".into());
        }
        (self.group.clone(), self.plural.clone())
    }

    /// The apiVersion objects of this resource are stored with.
    pub fn storage_api_version(&self) -> String {
        if crate::events::is_events_v1(self) {
            return "v1".into();
        }
        self.api_version()
    }
}

/// Built-in kinds: (group, version, plural, kind, namespaced, short names, status, scale, categories).
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
    bool,
    &'static [&'static str],
);

const BUILTINS: &[Builtin] = &[
    (
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        true,
        false,
        &[],
    ),
    ("", "v1", "nodes", "Node", false, &["no"], true, false, &[]),
    (
        "",
        "v1",
        "pods",
        "Pod",
        true,
        &["po"],
        true,
        false,
        &["all"],
    ),
    (
        "",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        false,
        false,
        &[],
    ),
    (
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        true,
        &["cm"],
        false,
        false,
        &[],
    ),
    ("", "v1", "secrets", "Secret", true, &[], false, false, &[]),
    (
        "",
        "v1",
        "services",
        "Service",
        true,
        &["svc"],
        true,
        false,
        &["all"],
    ),
    (
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        false,
        &[],
    ),
    (
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        &["pv"],
        true,
        false,
        &[],
    ),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        true,
        false,
        &[],
    ),
    (
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        true,
        true,
        &["all"],
    ),
    (
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        true,
        true,
        &["all"],
    ),
    (
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        &["sts"],
        true,
        true,
        &["all"],
    ),
    (
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        &["ds"],
        true,
        false,
        &["all"],
    ),
    (
        "batch",
        "v1",
        "jobs",
        "Job",
        true,
        &[],
        true,
        false,
        &["all"],
    ),
    (
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        true,
        &["cj"],
        true,
        false,
        &["all"],
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        true,
        false,
        &[],
    ),
    (
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        &[],
        false,
        false,
        &[],
    ),
    (
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        false,
        false,
        &[],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        false,
        &["api-extensions"],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        false,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        false,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        &[],
        false,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        false,
        false,
        &[],
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        false,
        &["pc"],
        false,
        false,
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
        &["sc"],
        false,
        false,
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "csinodes",
        "CSINode",
        false,
        &[],
        false,
        false,
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "csidrivers",
        "CSIDriver",
        false,
        &[],
        false,
        false,
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "VolumeAttachment",
        false,
        &[],
        true,
        false,
        &[],
    ),
];

/// The order groups are listed in discovery (built-ins first, then CRD groups by name).
const BUILTIN_GROUPS: &[&str] = &[
    "apps",
    "events.k8s.io",
    "batch",
    "policy",
    "coordination.k8s.io",
    "apiextensions.k8s.io",
    "rbac.authorization.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
];

/// Resource definitions by (group, version, plural).
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    defs: BTreeMap<(String, String, String), ResourceDef>,
    /// Preferred (storage) version per CRD group, by CRD name.
    crd_preferred: BTreeMap<String, (String, String)>,
}

impl Registry {
    pub fn builtin() -> Self {
        let mut defs = BTreeMap::new();
        for &(group, version, plural, kind, namespaced, short, status, scale, cats) in BUILTINS {
            let extra: Vec<(&str, &str)> = if plural == "pods" {
                vec![("binding", "Binding"), ("eviction", "Eviction")]
            } else {
                Vec::new()
            };
            let scale = scale.then(|| ScalePaths {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: Some(".spec.selector".into()),
            });
            let def = ResourceDef {
                group: group.into(),
                version: version.into(),
                plural: plural.into(),
                singular: kind.to_lowercase(),
                kind: kind.into(),
                namespaced,
                short_names: short.iter().map(|s| s.to_string()).collect(),
                categories: cats.iter().map(|s| s.to_string()).collect(),
                status,
                scale,
                extra_subresources: extra,
                crd: None,
                printer_columns: Vec::new(),
                schema: None,
                validator: None,
            };
            defs.insert((group.into(), version.into(), plural.into()), def);
        }
        Registry {
            defs,
            crd_preferred: BTreeMap::new(),
        }
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// Finds a resource by apiVersion and kind.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceDef> {
        let (group, version) = split_api_version(api_version);
        self.defs
            .values()
            .find(|d| d.group == group && d.version == version && d.kind == kind)
    }

    /// Every definition, sorted by group, version, plural.
    pub fn all(&self) -> impl Iterator<Item = &ResourceDef> {
        self.defs.values()
    }

    /// Groups (with their versions, preferred first) in discovery order; "" is the core group.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in self.defs.values() {
            let vs = groups.entry(d.group.clone()).or_default();
            if !vs.contains(&d.version) {
                vs.push(d.version.clone());
            }
        }
        for (_, (group, preferred)) in self.crd_preferred.iter() {
            if let Some(vs) = groups.get_mut(group) {
                if let Some(i) = vs.iter().position(|v| v == preferred) {
                    let v = vs.remove(i);
                    vs.insert(0, v);
                }
            }
        }
        let mut out = Vec::new();
        for g in std::iter::once("").chain(BUILTIN_GROUPS.iter().copied()) {
            if let Some(vs) = groups.remove(g) {
                out.push((g.to_string(), vs));
            }
        }
        out.extend(groups);
        out
    }

    /// Registers the resources a CRD object defines (replacing what it registered before),
    /// compiling the CEL rules of each served version's schema once.
    ///
    /// # Errors
    /// The CRD is unusable or collides with a built-in, or rules do not compile; nothing is
    /// registered then (and what the CRD registered before is gone).
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), CrdRejected> {
        let Some(name) = crd.pointer("/metadata/name").and_then(Value::as_str) else {
            return Err(CrdRejected::Unusable);
        };
        self.unregister_crd(name);
        let defs = crd_defs(crd).ok_or(CrdRejected::Unusable)??;
        if defs.iter().any(|d| {
            self.defs
                .get(&(d.group.clone(), d.version.clone(), d.plural.clone()))
                .is_some_and(|e| e.crd.is_none())
        }) {
            return Err(CrdRejected::Unusable);
        }
        if let Some(storage) = storage_version(crd) {
            if let Some(first) = defs.first() {
                self.crd_preferred
                    .insert(name.to_string(), (first.group.clone(), storage));
            }
        }
        for d in defs {
            self.defs
                .insert((d.group.clone(), d.version.clone(), d.plural.clone()), d);
        }
        Ok(())
    }

    /// Removes every resource the CRD `name` registered; returns the removed storage keys.
    pub fn unregister_crd(&mut self, name: &str) -> Vec<(String, String)> {
        let mut keys = Vec::new();
        self.defs.retain(|_, d| {
            if d.crd.as_deref() == Some(name) {
                if !keys.contains(&d.store_key()) {
                    keys.push(d.store_key());
                }
                false
            } else {
                true
            }
        });
        self.crd_preferred.remove(name);
        keys
    }
}

/// Why a CRD could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CrdRejected {
    /// Group, names or served versions are missing, or it would redefine a built-in resource.
    Unusable,
    /// `x-kubernetes-validations` rules that do not compile.
    Rules(Vec<CompileError>),
}

impl From<Vec<CompileError>> for CrdRejected {
    fn from(errors: Vec<CompileError>) -> Self {
        CrdRejected::Rules(errors)
    }
}

/// Splits `group/version` (`v1` is the core group).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

fn storage_version(crd: &Value) -> Option<String> {
    let versions = crd.pointer("/spec/versions")?.as_array()?;
    versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or_else(|| versions.first())
        .and_then(|v| v.get("name")?.as_str().map(str::to_string))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The resource definitions of a CRD's served versions (None: the CRD is unusable), or the
/// compile errors of their rules.
fn crd_defs(crd: &Value) -> Option<Result<Vec<ResourceDef>, Vec<CompileError>>> {
    let name = crd.pointer("/metadata/name")?.as_str()?;
    let spec = crd.get("spec")?;
    let group = spec.get("group")?.as_str()?;
    let names = spec.get("names")?;
    let plural = names.get("plural")?.as_str()?;
    let kind = names.get("kind")?.as_str()?;
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return None;
    }
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, v) in spec.get("versions")?.as_array()?.iter().enumerate() {
        let Some(version) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let sub = v.get("subresources");
        let status = sub
            .and_then(|s| s.get("status"))
            .is_some_and(|s| !s.is_null());
        let scale = sub
            .and_then(|s| s.get("scale"))
            .filter(|s| s.is_object())
            .map(|s| ScalePaths {
                spec_replicas: s
                    .get("specReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".spec.replicas")
                    .to_string(),
                status_replicas: s
                    .get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".status.replicas")
                    .to_string(),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| {
                        Some(PrinterColumn {
                            name: c.get("name")?.as_str()?.to_string(),
                            type_: c
                                .get("type")
                                .and_then(Value::as_str)
                                .unwrap_or("string")
                                .to_string(),
                            json_path: c.get("jsonPath")?.as_str()?.to_string(),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            description: c
                                .get("description")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let validator = match schema
            .as_ref()
            .map(|s| Validator::compile(s, &format!("spec.versions[{i}].schema.openAPIV3Schema")))
        {
            Some(Ok(Some(validator))) => {
                tracing::debug!(
                    crd = name,
                    version,
                    rules = validator.rule_count(),
                    "CEL rules compiled"
                );
                Some(SharedValidator(std::sync::Arc::new(validator)))
            }
            Some(Ok(None)) | None => None,
            Some(Err(e)) => {
                errors.extend(e);
                None
            }
        };
        out.push(ResourceDef {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: singular.clone(),
            kind: kind.into(),
            namespaced,
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            status,
            scale,
            extra_subresources: Vec::new(),
            crd: Some(name.to_string()),
            printer_columns,
            schema,
            validator,
        });
    }
    if !errors.is_empty() {
        return Some(Err(errors));
    }
    (!out.is_empty()).then_some(Ok(out))
}

/// The status the server writes on an accepted CRD.
pub(crate) fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let stored: Vec<String> = storage_version(crd).into_iter().collect();
    json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now}
        ],
        "storedVersions": stored,
    })
}

/// Fills `default:` values of an openAPIV3Schema into `obj` (objects and arrays, recursively).
///
/// As kube-apiserver's structural defaulting, a `null` in a field that is not `nullable: true`
/// takes the field's default, or is dropped when it has none (clients that serialize absent
/// optionals as `null` are read as if they had left the field out; validation rules then see no
/// field, not a null).
pub(crate) fn apply_defaults(obj: &mut Value, schema: &Value) {
    match obj {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    let nullable = sub.get("nullable").and_then(Value::as_bool) == Some(true);
                    if !nullable && map.get(k).is_some_and(Value::is_null) {
                        map.remove(k);
                    }
                    if !map.contains_key(k) {
                        if let Some(d) = sub.get("default") {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(k) {
                        apply_defaults(child, sub);
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                if extra.get("nullable").and_then(Value::as_bool) != Some(true) {
                    map.retain(|_, v| !v.is_null());
                }
                for v in map.values_mut() {
                    apply_defaults(v, extra);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for i in items {
                    apply_defaults(i, sub);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Cluster",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                              "default": {}, "properties": {"size": {"type": "integer", "default": 3}}}}}}},
                         {"name": "v1beta1", "served": false}]}})
    }

    #[test]
    fn nulls_of_non_nullable_fields_take_the_default_or_go() {
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "integer", "default": 3},
            "b": {"type": "integer"},
            "c": {"type": "string", "nullable": true},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "l": {"type": "array", "items": {"type": "object", "properties": {"minValues": {"type": "integer"}}}}}});
        let mut o = json!({"a": null, "b": null, "c": null, "m": {"x": null, "y": "1"},
                           "l": [{"minValues": null}, {"minValues": 2}]});
        apply_defaults(&mut o, &schema);
        assert_eq!(
            o,
            json!({"a": 3, "c": null, "m": {"y": "1"}, "l": [{}, {"minValues": 2}]})
        );
    }

    #[test]
    fn a_crd_registers_its_served_versions_and_unregisters() {
        let mut r = Registry::builtin();
        assert_eq!(r.register_crd(&crd()), Ok(()));
        let d = r.get("example.com", "v1", "widgets").unwrap();
        assert!(!d.namespaced && d.status && d.scale.is_none());
        assert_eq!(d.short_names, vec!["wd"]);
        assert!(r.get("example.com", "v1beta1", "widgets").is_none());
        assert!(r.groups().iter().any(|(g, _)| g == "example.com"));
        assert_eq!(
            r.unregister_crd("widgets.example.com"),
            vec![("example.com".to_string(), "widgets".to_string())]
        );
        assert!(r.get("example.com", "v1", "widgets").is_none());
    }

    #[test]
    fn a_crd_cannot_shadow_a_builtin() {
        let mut r = Registry::builtin();
        let bad = json!({"metadata": {"name": "pods"}, "spec": {"group": "", "names": {"plural": "pods", "kind": "Pod"},
            "versions": [{"name": "v1", "served": true}]}});
        assert_eq!(r.register_crd(&bad), Err(CrdRejected::Unusable));
    }

    #[test]
    fn schema_defaults_fill_missing_fields() {
        let c = crd();
        let schema = c
            .pointer("/spec/versions/0/schema/openAPIV3Schema")
            .unwrap();
        let mut obj = json!({"metadata": {"name": "w"}});
        apply_defaults(&mut obj, schema);
        assert_eq!(obj["spec"]["size"], 3);
    }
}
