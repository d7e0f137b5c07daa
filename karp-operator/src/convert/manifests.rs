//! Reading Kubernetes manifests the way `kubectl apply -f` does.
//!
//! Paths are files or folders (searched recursively for `.yaml`, `.yml` and `.json` files, in sorted
//! order); `-` reads standard input. A file holds one or more YAML documents, or a JSON object (or a
//! stream of them); a `List` (any kind ending in `List` with `items`) is expanded. Every object of a
//! kind karp plans with is deserialized into its typed form ([`Object`]), keeping where it came from
//! ([`ObjectRef`]) so later errors can name the file, the object and the field. Other kinds are
//! skipped with a warning.
//!
//! ```
//! use karp_operator::convert::manifests::{parse_text, Object};
//!
//! let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
//! let m = parse_text("inline.yaml", yaml).unwrap();
//! assert!(matches!(m.objects[0].object, Object::Namespace(_)));
//! assert_eq!(m.warnings.len(), 1); // the ConfigMap is skipped
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use karp_aws::nodeclass::EC2NodeClass;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::api::nodeclaim::NodeClaim;
use crate::api::nodepool::NodePool;
use crate::convert::workloads::Workload;
pub use crate::convert::ObjectRef;
use crate::convert::{ClusterObjects, ConvertError, Input, PodSource};

/// A typed object of a kind `karp plan` uses.
#[derive(Debug, Clone)]
pub enum Object {
    /// `karpenter.sh/v1` NodePool.
    NodePool(Arc<NodePool>),
    /// `karpenter.k8s.aws/v1` EC2NodeClass.
    EC2NodeClass(Box<EC2NodeClass>),
    /// `v1` Pod.
    Pod(Arc<Pod>),
    /// `apps/v1` Deployment.
    Deployment(Box<Deployment>),
    /// `apps/v1` ReplicaSet.
    ReplicaSet(Box<ReplicaSet>),
    /// `apps/v1` StatefulSet.
    StatefulSet(Box<StatefulSet>),
    /// `batch/v1` Job.
    Job(Box<Job>),
    /// `apps/v1` DaemonSet.
    DaemonSet(Arc<DaemonSet>),
    /// `v1` Node.
    Node(Arc<Node>),
    /// `policy/v1` PodDisruptionBudget (kept; not used by planning yet).
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    /// `v1` Namespace.
    Namespace(Arc<Namespace>),
    /// `karpenter.sh/v1` NodeClaim (used by `karp disrupt`).
    NodeClaim(Arc<NodeClaim>),
    /// `v1` PersistentVolume (its node affinity constrains pods using it).
    PersistentVolume(Arc<PersistentVolume>),
    /// `v1` PersistentVolumeClaim (links pods to volumes).
    PersistentVolumeClaim(Arc<PersistentVolumeClaim>),
}

/// One loaded object and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// File, kind, namespace and name.
    pub origin: ObjectRef,
    /// The typed object.
    pub object: Object,
}

/// Everything read from the inputs, in input order, plus warnings for people.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// The objects.
    pub objects: Vec<Loaded>,
    /// Warnings (skipped kinds, deprecated fields), one line each.
    pub warnings: Vec<String>,
}

/// Why manifests could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A path could not be read (missing, unreadable, not UTF-8).
    #[error("{path}: cannot read")]
    ReadPath {
        /// The path.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A folder contained no manifest files.
    #[error("{path}: no .yaml, .yml or .json files found")]
    EmptyFolder {
        /// The folder.
        path: String,
    },
    /// A YAML document is malformed.
    #[error("{file}: document {document}: malformed YAML")]
    ParseYaml {
        /// The file.
        file: String,
        /// 1-based document index.
        document: usize,
        /// The parser's error (with line and column).
        #[source]
        source: serde_yaml::Error,
    },
    /// A JSON value is malformed.
    #[error("{file}: malformed JSON")]
    ParseJson {
        /// The file.
        file: String,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A document is not a Kubernetes object (no mapping, no apiVersion / kind).
    #[error("{file}: document {document}: {reason}")]
    NotAnObject {
        /// The file.
        file: String,
        /// 1-based document index.
        document: usize,
        /// What is wrong.
        reason: String,
    },
    /// An object's field has the wrong type or is missing.
    #[error("{object}: {field}: {reason}")]
    DeserializeObject {
        /// The object.
        object: Box<ObjectRef>,
        /// Field path, e.g. `spec.template.spec.containers[0].name`.
        field: String,
        /// What serde said.
        reason: String,
    },
}

impl Manifests {
    /// The objects as the snapshot builder takes them, in input order (workloads stay among the
    /// pods where they appear, so expanded replicas keep the input's order). EC2NodeClasses are
    /// the provider's ([`crate::providers::aws::AwsCatalog`]); PodDisruptionBudgets are not
    /// used by planning.
    ///
    /// # Errors
    /// [`ConvertError::DuplicateObject`] when two objects have the same kind, namespace and name.
    pub fn cluster_objects(&self) -> Result<ClusterObjects, ConvertError> {
        let mut seen: BTreeMap<(&str, Option<&str>, &str), String> = BTreeMap::new();
        for l in &self.objects {
            let o = &l.origin;
            if o.name.is_empty() {
                continue; // generateName pods
            }
            let first = o.file.clone().unwrap_or_default();
            if let Some(first) = seen.insert((&o.kind, o.namespace.as_deref(), &o.name), first) {
                return Err(ConvertError::DuplicateObject {
                    object: Box::new(o.clone()),
                    first,
                });
            }
        }
        let mut out = ClusterObjects::default();
        for l in &self.objects {
            let origin = l.origin.clone();
            let workload = |w: Workload| Input {
                origin: l.origin.clone(),
                object: PodSource::Workload(Arc::new(w)),
            };
            match &l.object {
                Object::Pod(p) => out.pods.push(Input {
                    origin,
                    object: PodSource::Pod(Arc::clone(p)),
                }),
                Object::Deployment(d) => out.pods.push(workload(Workload::Deployment(d.clone()))),
                Object::ReplicaSet(r) => out.pods.push(workload(Workload::ReplicaSet(r.clone()))),
                Object::StatefulSet(s) => {
                    out.pods.push(workload(Workload::StatefulSet(s.clone())));
                }
                Object::Job(j) => out.pods.push(workload(Workload::Job(j.clone()))),
                Object::Node(n) => out.nodes.push(Input {
                    origin,
                    object: Arc::clone(n),
                }),
                Object::NodeClaim(c) => out.nodeclaims.push(Input {
                    origin,
                    object: Arc::clone(c),
                }),
                Object::NodePool(n) => out.nodepools.push(Input {
                    origin,
                    object: Arc::clone(n),
                }),
                Object::DaemonSet(d) => out.daemonsets.push(Input {
                    origin,
                    object: Arc::clone(d),
                }),
                Object::Namespace(n) => out.namespaces.push(Input {
                    origin,
                    object: Arc::clone(n),
                }),
                Object::PersistentVolume(v) => out.volumes.push(Input {
                    origin,
                    object: Arc::clone(v),
                }),
                Object::PersistentVolumeClaim(c) => {
                    out.volume_claims.push(Input {
                        origin,
                        object: Arc::clone(c),
                    });
                }
                Object::EC2NodeClass(_) | Object::PodDisruptionBudget(_) => {}
            }
        }
        Ok(out)
    }
}

/// Read every path (files, folders recursively, `-` for standard input).
///
/// # Errors
/// [`LoadError`] naming the path, document or object and field.
pub fn load_paths(paths: &[PathBuf]) -> Result<Manifests, LoadError> {
    let mut out = Manifests::default();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| LoadError::ReadPath {
                    path: "-".into(),
                    source,
                })?;
            parse_into(&mut out, "<stdin>", &text, false)?;
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|source| LoadError::ReadPath {
            path: p.display().to_string(),
            source,
        })?;
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            collect_folder(p, &mut files)?;
            files.sort();
            if files.is_empty() {
                return Err(LoadError::EmptyFolder {
                    path: p.display().to_string(),
                });
            }
            files
        } else {
            vec![p.clone()]
        };
        for f in files {
            let name = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|source| LoadError::ReadPath {
                path: name.clone(),
                source,
            })?;
            parse_into(&mut out, &name, &text, is_json(&f))?;
        }
    }
    Ok(out)
}

fn is_json(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

fn collect_folder(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let read_err = |source| LoadError::ReadPath {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let ty = entry.file_type().map_err(read_err)?;
        if ty.is_dir() || (ty.is_symlink() && path.is_dir()) {
            collect_folder(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["yaml", "yml", "json"].contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Parse the text of one file (YAML, which includes JSON) named `file` in messages.
///
/// # Errors
/// [`LoadError`] naming the file, document or object and field.
pub fn parse_text(file: &str, text: &str) -> Result<Manifests, LoadError> {
    let mut out = Manifests::default();
    parse_into(&mut out, file, text, false)?;
    Ok(out)
}

fn parse_into(out: &mut Manifests, file: &str, text: &str, json: bool) -> Result<(), LoadError> {
    if json {
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            let v = v.map_err(|source| LoadError::ParseJson {
                file: file.to_string(),
                source,
            })?;
            add_document(out, file, i + 1, v)?;
        }
        return Ok(());
    }
    // Merge keys (`<<`) need serde_yaml's own tree; without any, documents go straight into
    // JSON values (a third of the reading time on large files).
    let merges = text.contains("<<");
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let yaml_err = |source| LoadError::ParseYaml {
            file: file.to_string(),
            document,
            source,
        };
        let v = if merges {
            let mut y = serde_yaml::Value::deserialize(doc).map_err(yaml_err)?;
            y.apply_merge().map_err(yaml_err)?;
            serde_json::to_value(&y).map_err(|e| LoadError::NotAnObject {
                file: file.to_string(),
                document,
                reason: format!("cannot be represented as a Kubernetes object: {e}"),
            })?
        } else {
            Value::deserialize(doc).map_err(yaml_err)?
        };
        add_document(out, file, document, v)?;
    }
    Ok(())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// The kinds karp reads, with their API group and whether they are namespaced.
fn known_kind(group: &str, kind: &str) -> Option<bool> {
    Some(match (group, kind) {
        ("karpenter.sh", "NodePool" | "NodeClaim") | ("karpenter.k8s.aws", "EC2NodeClass") => false,
        ("", "Node" | "Namespace" | "PersistentVolume") => false,
        ("", "Pod" | "PersistentVolumeClaim")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job")
        | ("policy", "PodDisruptionBudget") => true,
        _ => return None,
    })
}

fn add_document(
    out: &mut Manifests,
    file: &str,
    document: usize,
    v: Value,
) -> Result<(), LoadError> {
    let not_object = |reason: &str| LoadError::NotAnObject {
        file: file.to_string(),
        document,
        reason: reason.to_string(),
    };
    if v.is_null() {
        return Ok(()); // an empty document (only comments, or a trailing `---`)
    }
    let Value::Object(map) = &v else {
        return Err(not_object(
            "expected a Kubernetes object (a mapping with apiVersion and kind)",
        ));
    };
    let kind = match map.get("kind") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        Some(_) => return Err(not_object("kind: expected a non-empty string")),
        None => return Err(not_object("kind: required")),
    };
    if kind.ends_with("List") {
        if let Some(items) = map.get("items") {
            let Value::Array(items) = items else {
                return Err(not_object("items: expected a list"));
            };
            for item in items {
                add_document(out, file, document, item.clone())?;
            }
            return Ok(());
        }
    }
    let api_version = match map.get("apiVersion") {
        Some(Value::String(a)) if !a.is_empty() => a.clone(),
        Some(_) => return Err(not_object("apiVersion: expected a non-empty string")),
        None => return Err(not_object("apiVersion: required")),
    };
    let (group, version) = api_version
        .rsplit_once('/')
        .unwrap_or(("", api_version.as_str()));
    let name = str_at(&v, &["metadata", "name"])
        .unwrap_or_default()
        .to_string();
    let Some(namespaced) = known_kind(group, &kind) else {
        let ns = str_at(&v, &["metadata", "namespace"])
            .map(|n| format!("{n}/"))
            .unwrap_or_default();
        out.warnings.push(format!(
            "{file}: skipping {kind} {ns}{name} ({api_version}): kind not used by karp plan"
        ));
        return Ok(());
    };
    let namespace = namespaced.then(|| {
        str_at(&v, &["metadata", "namespace"])
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string()
    });
    let origin = ObjectRef {
        file: Some(file.to_string()),
        kind: kind.clone(),
        namespace,
        name,
    };
    if version != "v1" {
        if group.starts_with("karpenter.") && version.starts_with("v1beta") {
            out.warnings.push(format!(
                "{origin}: apiVersion {api_version} is read with the {group}/v1 schema"
            ));
        } else {
            out.warnings.push(format!("{origin}: skipping: apiVersion {api_version} is not supported (expected {group}/v1)"));
            return Ok(());
        }
    }
    if origin.name.is_empty()
        && !(kind == "Pod" && str_at(&v, &["metadata", "generateName"]).is_some())
    {
        return Err(LoadError::DeserializeObject {
            object: Box::new(origin),
            field: "metadata.name".into(),
            reason: "required".into(),
        });
    }
    // The typed k8s-openapi deserializers check apiVersion and kind; normalize the version we accept.
    let mut v = v;
    if let Value::Object(m) = &mut v {
        let canonical = if group.is_empty() {
            "v1".to_string()
        } else {
            format!("{group}/v1")
        };
        m.insert("apiVersion".into(), Value::String(canonical));
    }
    let object = match kind.as_str() {
        "NodePool" => Object::NodePool(Arc::new(typed(&origin, v)?)),
        "EC2NodeClass" => Object::EC2NodeClass(Box::new(typed(&origin, v)?)),
        "Pod" => Object::Pod(Arc::new(typed(&origin, v)?)),
        "Deployment" => Object::Deployment(Box::new(typed(&origin, v)?)),
        "ReplicaSet" => Object::ReplicaSet(Box::new(typed(&origin, v)?)),
        "StatefulSet" => Object::StatefulSet(Box::new(typed(&origin, v)?)),
        "Job" => Object::Job(Box::new(typed(&origin, v)?)),
        "DaemonSet" => Object::DaemonSet(Arc::new(typed(&origin, v)?)),
        "Node" => Object::Node(Arc::new(typed(&origin, v)?)),
        "PodDisruptionBudget" => Object::PodDisruptionBudget(Box::new(typed(&origin, v)?)),
        "Namespace" => Object::Namespace(Arc::new(typed(&origin, v)?)),
        "NodeClaim" => Object::NodeClaim(Arc::new(typed(&origin, v)?)),
        "PersistentVolume" => Object::PersistentVolume(Arc::new(typed(&origin, v)?)),
        "PersistentVolumeClaim" => Object::PersistentVolumeClaim(Arc::new(typed(&origin, v)?)),
        _ => unreachable!("known_kind covers exactly these kinds"),
    };
    if let Object::NodePool(np) = &object {
        if np
            .spec
            .disruption
            .as_ref()
            .is_some_and(|d| d.expire_after.is_some())
        {
            out.warnings.push(format!(
                "{origin}: spec.disruption.expireAfter is the pre-v1 location; karp honours it as spec.template.spec.expireAfter, please move it there"
            ));
        }
    }
    out.objects.push(Loaded { origin, object });
    Ok(())
}

fn typed<T: DeserializeOwned>(origin: &ObjectRef, v: Value) -> Result<T, LoadError> {
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let field = e.path().to_string();
        LoadError::DeserializeObject {
            object: Box::new(origin.clone()),
            field,
            reason: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_multi_documents_are_expanded() {
        let text = r#"
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Namespace, metadata: {name: a}}
  - {apiVersion: v1, kind: Namespace, metadata: {name: b}}
---
# only a comment
---
apiVersion: v1
kind: Namespace
metadata: {name: c}
"#;
        let m = parse_text("x.yaml", text).unwrap();
        let names: Vec<&str> = m.objects.iter().map(|o| o.origin.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn merge_keys_are_applied_and_plain_files_read_the_same() {
        let merged = r#"
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: &labels {app: web, tier: front}
  labels:
    <<: *labels
    extra: "1"
spec: {containers: [{name: c, image: pause}]}
"#;
        let plain = r#"
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {app: web, tier: front}
  labels: {app: web, tier: front, extra: "1"}
spec: {containers: [{name: c, image: pause}]}
"#;
        let labels = |text: &str| {
            let m = parse_text("x.yaml", text).unwrap();
            let pod = m
                .objects
                .iter()
                .find_map(|o| match &o.object {
                    Object::Pod(p) => Some(p.clone()),
                    _ => None,
                })
                .expect("a pod");
            pod.metadata.labels.clone().unwrap_or_default()
        };
        assert_eq!(labels(merged), labels(plain));
        assert_eq!(labels(plain).len(), 3);
    }

    #[test]
    fn cluster_scoped_objects_ignore_a_namespace() {
        let text = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, namespace: karpenter}\n";
        let m = parse_text("x.yaml", text).unwrap();
        assert_eq!(m.objects[0].origin.namespace, None);
        assert_eq!(m.objects[0].origin.to_string(), "x.yaml: Node n1");
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: many\n  selector: {}\n  template: {spec: {containers: []}}\n";
        let e = parse_text("d.yaml", text).unwrap_err().to_string();
        assert!(
            e.starts_with("d.yaml: Deployment default/web: spec.replicas: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn documents_without_kind_are_errors() {
        let e = parse_text("v.yaml", "foo: bar\n").unwrap_err().to_string();
        assert_eq!(e, "v.yaml: document 1: kind: required");
        let e = parse_text("v.yaml", "- a\n- b\n").unwrap_err().to_string();
        assert!(e.contains("expected a Kubernetes object"), "{e}");
    }
}
